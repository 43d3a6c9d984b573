//! Persistence against real stores: the local backend and a real S3-compatible server
//! (moto) on 127.0.0.1. Encryption at rest, tamper detection, outages, restart drain,
//! retention with an injected clock, legal holds, tombstones, key rotation and
//! destruction, recording off.
//!
//! Longer than 600 lines on purpose: the scenarios share the moto and local-store
//! harness and the stored-call fixtures (put_call, present) defined here.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use earshot::call::CallId;
use earshot::config::{StorageBackend, StorageConfig};
use earshot::store::objects::{sweep, CallRef, StorageError, Store, SweepCache, SweepOptions};
use earshot::store::retention::{CampaignPolicy, KindDays, Policies, TenantPolicy};
use earshot_loadtest::audio::Audio;
use earshot_loadtest::{pcm, ws};

use crate::common::*;
use crate::s3::{Moto, ACCESS_KEY, BUCKET, SECRET_KEY};

#[derive(Clone, Copy, Debug)]
enum Backend {
    Local,
    S3,
}

/// A 1 kHz tone at 16 kHz: its bytes must never be found at rest.
fn tone(n: usize) -> Vec<i16> {
    (0..n).map(|i| ((i as f64 * 2.0 * std::f64::consts::PI * 1000.0 / 16000.0).sin() * 12000.0) as i16).collect()
}

fn le_bytes(s: &[i16]) -> Vec<u8> {
    s.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn start_server(backend: Backend, moto: Option<&Moto>, extra: &str) -> TestServer {
    let env: Vec<(String, String)> = match backend {
        Backend::Local => vec![],
        Backend::S3 => moto.expect("moto").server_env(),
    };
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TestServer::start_with(extra, &env)
}

fn send_pcm(server: &TestServer, tenant: &str, audio: &Audio, meta: serde_json::Value) {
    let script = pcm::render(audio, meta);
    let report = rt().block_on(async {
        let url = format!("{}/fork/pcm/{tenant}", server.ws());
        let mut conn = ws::connect(&url, &[("authorization".into(), format!("Bearer {SECRET}"))], None).await.unwrap();
        pcm::send(&mut conn, &script, 8.0).await.unwrap()
    });
    assert_eq!(report.closing.code, Some(1000), "{:?}", report.closing);
}

fn wait_uploaded(server: &TestServer, id: CallId, limit: Duration) {
    let store = server.store();
    let t0 = Instant::now();
    while !store.is_uploaded(id) {
        assert!(t0.elapsed() < limit, "call {id} not uploaded within {limit:?}; log:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn at_rest_is_encrypted(backend: Backend) {
    let moto = matches!(backend, Backend::S3).then(Moto::start);
    let server = start_server(backend, moto.as_ref(), "");
    let t = tone(16000 * 3);
    let audio = Audio { sample_rate: 16000, channels: vec![t.clone(), t.iter().map(|s| s / 2).collect()] };
    send_pcm(&server, TENANT, &audio, serde_json::json!({"campaign": "confidential-campaign", "rep": "alice-rep-id"}));
    let m = server.wait_call(TENANT, "confidential-campaign", Duration::from_secs(15));
    wait_uploaded(&server, m.call_id, Duration::from_secs(20));
    let reader = server.store();
    // Read back through Earshot: sample-exact.
    let rec = reader.audio(m.call_id).unwrap();
    assert_eq!(rec.channel(0)[..t.len()], t[..]);
    assert_eq!(reader.manifest(m.call_id).unwrap().campaign.as_deref(), Some("confidential-campaign"));
    assert!(reader.text(m.call_id, "scorecard.json").unwrap().contains("\"score\""));
    // What is at rest reveals nothing.
    let store = reader.store().clone();
    let objects = rt().block_on(store.list_all()).unwrap();
    let call_objects: Vec<_> = objects.iter().filter(|(p, _)| p.as_ref().contains(&m.call_id.to_string())).collect();
    let names: HashSet<&str> = call_objects.iter().filter_map(|(p, _)| p.filename()).collect();
    assert!(
        ["audio.wav", "manifest.json", "hints.json", "scorecard.json"].iter().all(|n| names.contains(n)),
        "{names:?}"
    );
    let needle = le_bytes(&t[4000..4032]);
    for (path, _) in &objects {
        let raw = rt().block_on(store.raw(path)).unwrap();
        // Markers (subject index, tombstones) are empty: their keyed-hash names are all.
        assert!(raw.is_empty() || raw.starts_with(earshot::store::crypt::MAGIC), "{path}: not encrypted");
        for secret in [&b"RIFF"[..], b"WAVE", b"confidential-campaign", b"alice-rep-id", b"\"score\"", &needle] {
            assert!(!contains(&raw, secret), "{path} reveals {:?}", String::from_utf8_lossy(secret));
        }
    }
    // Nothing plain is left on the local disk either (the spool is empty again).
    for entry in walk(&server.data_dir()) {
        if entry.to_string_lossy().contains(".keys") {
            continue;
        }
        let raw = std::fs::read(&entry).unwrap();
        assert!(!contains(&raw, b"RIFF") && !contains(&raw, &needle), "{} holds plain audio", entry.display());
    }
    // Tampering, truncation and reordering are detected with a clear error.
    let call = CallRef { tenant: TENANT.into(), call_id: m.call_id };
    let path = call.object("audio.wav");
    let good = rt().block_on(store.raw(&path)).unwrap();
    let chunk = 64 * 1024 + 16;
    let mut flipped = good.clone();
    flipped[earshot::store::crypt::HEADER_LEN + 1000] ^= 0x40;
    let mut swapped = good.clone();
    let (a, b) = (earshot::store::crypt::HEADER_LEN, earshot::store::crypt::HEADER_LEN + chunk);
    let first = good[a..b].to_vec();
    swapped.copy_within(b..b + chunk, a);
    swapped[b..b + chunk].copy_from_slice(&first);
    for (what, bad) in
        [("tampered", flipped), ("truncated", good[..good.len() - chunk].to_vec()), ("reordered", swapped)]
    {
        rt().block_on(store.put_raw(&path, bad)).unwrap();
        let err = reader.audio(m.call_id).unwrap_err().to_string();
        assert!(err.contains("authentication") || err.contains("truncated"), "{what}: {err}");
    }
    rt().block_on(store.put_raw(&path, good)).unwrap();
    assert_eq!(reader.audio(m.call_id).unwrap().channel(0)[..t.len()], t[..]);
    // Ranged reads decrypt only what is asked for.
    let wav = reader.file(m.call_id, "audio.wav").unwrap();
    let (part, total) = rt().block_on(store.get_range(&call, "audio.wav", 100_000..100_500)).unwrap();
    assert_eq!(total as usize, wav.len());
    assert_eq!(part, wav[100_000..100_500]);
    let metrics = server.metrics();
    assert!(metric(&metrics, "earshot_uploads_total", &["outcome=\"ok\""]) >= 1.0);
    assert!(metric(&metrics, "earshot_upload_bytes_total", &[]) > 100_000.0);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn local_store_is_encrypted_at_rest_and_detects_tampering() {
    at_rest_is_encrypted(Backend::Local);
}

#[test]
fn s3_store_is_encrypted_at_rest_and_detects_tampering() {
    at_rest_is_encrypted(Backend::S3);
}

#[test]
fn s3_outage_loses_nothing_and_a_restart_drains_the_spool() {
    let mut moto = Moto::start();
    let mut server = start_server(Backend::S3, Some(&moto), "");
    let (audio, _) = two_party_call(16000, 1.0);
    // The store goes away before the call ends: its upload fails and is retried.
    moto.stop();
    send_pcm(&server, TENANT, &audio, serde_json::json!({"campaign": "outage"}));
    let m = server.wait_call(TENANT, "outage", Duration::from_secs(15));
    let t0 = Instant::now();
    while metric(&server.metrics(), "earshot_uploads_total", &["outcome=\"failed\""]) < 2.0 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no failed upload attempts; log:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    // Meanwhile the call is still readable, from the spool.
    assert_eq!(server.audio(m.call_id).channel(0)[..audio.channels[0].len()], audio.channels[0][..]);
    assert!(metric(&server.metrics(), "earshot_spool_bytes", &[]) > 0.0);
    moto.restart();
    wait_uploaded(&server, m.call_id, Duration::from_secs(30));
    assert_eq!(server.audio(m.call_id).channel(0)[..audio.channels[0].len()], audio.channels[0][..]);

    // A full spool survives Earshot's restart and drains when the store is back.
    let failed = metric(&server.metrics(), "earshot_uploads_total", &["outcome=\"failed\""]);
    moto.stop();
    send_pcm(&server, TENANT, &audio, serde_json::json!({"campaign": "spooled-1"}));
    send_pcm(&server, TENANT, &audio, serde_json::json!({"campaign": "spooled-2"}));
    let a = server.wait_call(TENANT, "spooled-1", Duration::from_secs(15));
    let b = server.wait_call(TENANT, "spooled-2", Duration::from_secs(15));
    // Both were tried against the dead store (and failed) before Earshot dies.
    wait_metric(server.addr, "earshot_uploads_total", &["outcome=\"failed\""], failed + 2.0, Duration::from_secs(60));
    server.kill9();
    moto.restart();
    server.restart();
    for id in [a.call_id, b.call_id] {
        wait_uploaded(&server, id, Duration::from_secs(30));
        assert_eq!(server.audio(id).channel(1)[..audio.channels[1].len()], audio.channels[1][..]);
    }
    assert!(server.log().contains("uploaded"), "{}", server.log());
}

#[test]
fn recording_off_for_a_campaign_writes_no_audio_but_keeps_the_rest() {
    // The extra TOML extends the last tenant of the base config ("norec", recording off).
    let server = start_server(Backend::Local, None, "[tenants.campaigns.loud]\nrecording = true\n");
    let (audio, _) = two_party_call(8000, 1.0);
    send_pcm(&server, "norec", &audio, serde_json::json!({"campaign": "quiet"}));
    send_pcm(&server, "norec", &audio, serde_json::json!({"campaign": "loud"}));
    let quiet = server.wait_call("norec", "quiet", Duration::from_secs(15));
    let loud = server.wait_call("norec", "loud", Duration::from_secs(15));
    wait_uploaded(&server, quiet.call_id, Duration::from_secs(20));
    wait_uploaded(&server, loud.call_id, Duration::from_secs(20));
    let store = server.store();
    assert!(!quiet.recording && loud.recording);
    assert!(matches!(store.audio(quiet.call_id), Err(StorageError::NoObject(..))));
    assert!(store.text(quiet.call_id, "scorecard.json").is_ok() && store.text(quiet.call_id, "hints.json").is_ok());
    assert!(store.audio(loud.call_id).is_ok());
    let names: Vec<String> = rt()
        .block_on(store.store().list_objects("norec"))
        .unwrap()
        .remove(&quiet.call_id)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(!names.iter().any(|n| n == "audio.wav"), "{names:?}");
}

// ---- retention, holds, tombstones, keys: the library against both real stores ----

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T09:00:00Z").unwrap().with_timezone(&Utc)
}

struct Fixture {
    store: Store,
    _dir: tempfile::TempDir,
    _moto: Option<Moto>,
}

fn fixture(backend: Backend) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StorageConfig { dir: dir.path().join("data"), ..StorageConfig::default() };
    let moto = match backend {
        Backend::Local => None,
        Backend::S3 => {
            let m = Moto::start();
            cfg.backend = StorageBackend::S3;
            cfg.s3 = Some(earshot::config::S3Config {
                bucket: BUCKET.into(),
                endpoint: Some(m.endpoint()),
                region: "us-east-1".into(),
                access_key_id: Some(ACCESS_KEY.into()),
                secret_access_key: Some(SECRET_KEY.into()),
                virtual_hosted: false,
                allow_http: true,
            });
            Some(m)
        }
    };
    let store = Store::open(&cfg).unwrap();
    store.keys().ensure_tenants(["d7", "d30", "d90", "d365", "camp", "held"]).unwrap();
    Fixture { store, _dir: dir, _moto: moto }
}

pub(crate) async fn put_call(store: &Store, tenant: &str, at: DateTime<Utc>, campaign: Option<&str>) -> CallRef {
    let call = CallRef { tenant: tenant.into(), call_id: CallId::new_at(at) };
    for name in ["audio.wav", "transcript.json", "hints.json"] {
        store
            .put_encrypted(tenant, &call.object(name), format!("{name} of {}", call.call_id).as_bytes())
            .await
            .unwrap();
    }
    let manifest = serde_json::json!({ "campaign": campaign });
    store.put_encrypted(tenant, &call.object("manifest.json"), manifest.to_string().as_bytes()).await.unwrap();
    call
}

pub(crate) async fn present(store: &Store, call: &CallRef) -> Vec<String> {
    let mut v: Vec<String> = store
        .list_objects(&call.tenant)
        .await
        .unwrap()
        .remove(&call.call_id)
        .unwrap_or_default()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    v.sort();
    v
}

fn policies() -> Policies {
    let mut p = Policies::new();
    for (t, d) in [("d7", 7), ("d30", 30), ("d90", 90), ("d365", 365), ("held", 7)] {
        p.insert(t.into(), TenantPolicy::days(d));
    }
    let mut camp = TenantPolicy::days(30);
    camp.campaigns.insert("short".into(), CampaignPolicy { days: Some(7), kinds: KindDays::default() });
    camp.campaigns.insert(
        "long".into(),
        CampaignPolicy { days: Some(365), kinds: KindDays { transcript: None, coaching: Some(30) } },
    );
    p.insert("camp".into(), camp);
    p
}

fn retention_exactly_when_due(backend: Backend) {
    let f = fixture(backend);
    let store = &f.store;
    rt().block_on(async {
        let mut calls = Vec::new();
        for (t, d) in [("d7", 7i64), ("d30", 30), ("d90", 90), ("d365", 365)] {
            calls.push((put_call(store, t, t0(), None).await, d));
        }
        let short = put_call(store, "camp", t0(), Some("short")).await;
        let long = put_call(store, "camp", t0(), Some("long")).await;
        let plain = put_call(store, "camp", t0(), None).await;
        calls.push((short.clone(), 7));
        calls.push((plain.clone(), 30));
        calls.sort_by_key(|(_, d)| *d);
        let policies = policies();
        let mut cache = SweepCache::default();
        let opts = SweepOptions::default();
        let all = vec!["audio.wav", "hints.json", "manifest.json", "transcript.json"];
        let mut days: Vec<i64> = calls.iter().map(|(_, d)| *d).collect();
        days.dedup();
        for day in days {
            if day == 365 {
                // By now the 365-day campaign has lost only its coaching data (30 days).
                assert_eq!(present(store, &long).await, vec!["audio.wav", "manifest.json", "transcript.json"]);
            }
            let due = t0() + chrono::Duration::days(day);
            sweep(store, &policies, due - chrono::Duration::seconds(1), &opts, &mut cache).await.unwrap();
            for (call, _) in calls.iter().filter(|(_, d)| *d == day) {
                assert_eq!(present(store, call).await, all, "{} ({day} days): kept until due", call.tenant);
                assert!(!store.is_tombstoned(call).await.unwrap());
            }
            sweep(store, &policies, due, &opts, &mut cache).await.unwrap();
            for (call, _) in calls.iter().filter(|(_, d)| *d == day) {
                assert!(present(store, call).await.is_empty(), "{} ({day} days): deleted when due", call.tenant);
                assert!(store.is_tombstoned(call).await.unwrap(), "a deleted call leaves a tombstone");
            }
        }
        assert!(present(store, &long).await.is_empty());
        assert!(present(store, &short).await.is_empty() && present(store, &plain).await.is_empty());
    });
}

#[test]
fn local_retention_deletes_each_plan_exactly_when_due() {
    retention_exactly_when_due(Backend::Local);
}

#[test]
fn s3_retention_deletes_each_plan_exactly_when_due() {
    retention_exactly_when_due(Backend::S3);
}

fn holds_crashes_and_tombstones(backend: Backend) {
    let f = fixture(backend);
    let store = &f.store;
    rt().block_on(async {
        let policies = policies();
        let opts = SweepOptions::default();
        let mut cache = SweepCache::default();
        let late = t0() + chrono::Duration::days(100);
        // A held call survives until released, then goes at the next sweep.
        let held = put_call(store, "held", t0(), None).await;
        store.hold(&held, "litigation 2026-17", chrono::Utc::now()).await.unwrap();
        let (_, r) = sweep(store, &policies, late, &opts, &mut cache).await.unwrap();
        assert_eq!(r.held, 1);
        assert_eq!(present(store, &held).await.len(), 4);
        assert!(store.release(&held).await.unwrap());
        sweep(store, &policies, late, &opts, &mut cache).await.unwrap();
        assert!(present(store, &held).await.is_empty());
        // A tenant-wide hold keeps everything too.
        let mut tenant_hold = policies.clone();
        tenant_hold.get_mut("d7").unwrap().hold = true;
        let c = put_call(store, "d7", t0(), None).await;
        let (_, r) = sweep(store, &tenant_hold, late, &opts, &mut cache).await.unwrap();
        assert_eq!((r.held, present(store, &c).await.len()), (1, 4));
        // A sweep that dies midway is finished by the next, without double work or misses.
        let mut victims = vec![c];
        for _ in 0..4 {
            victims.push(put_call(store, "d7", t0(), None).await);
        }
        let cut = SweepOptions { max_deletes: Some(7), ..SweepOptions::default() };
        let (_, first) = sweep(store, &policies, late, &cut, &mut SweepCache::default()).await.unwrap();
        assert_eq!(first.objects_deleted, 7);
        let (plan, second) = sweep(store, &policies, late, &opts, &mut SweepCache::default()).await.unwrap();
        assert_eq!(second.objects_deleted, 20 - 7, "{plan:?}");
        for v in &victims {
            assert!(present(store, v).await.is_empty());
        }
        let (plan, third) = sweep(store, &policies, late, &opts, &mut cache).await.unwrap();
        assert!(plan.actions.is_empty() && third.objects_deleted == 0);
    });
    // A late upload retry of a deleted call does not bring it back.
    let gone = rt().block_on(async {
        let call = put_call(store, "d7", t0(), None).await;
        sweep(
            store,
            &policies(),
            t0() + chrono::Duration::days(8),
            &SweepOptions::default(),
            &mut SweepCache::default(),
        )
        .await
        .unwrap();
        call
    });
    let dir = store.spool().call_dir(&gone.tenant, gone.call_id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("audio.wav"), b"RIFF late copy").unwrap();
    std::fs::write(dir.join("manifest.json"), b"{}").unwrap();
    let out = rt().block_on(earshot::store::uploader::upload_call(store, &gone, &dir)).unwrap();
    assert!(matches!(out, earshot::store::uploader::Uploaded::Erased));
    assert!(!dir.exists(), "the spooled copy is dropped");
    assert!(rt().block_on(present(store, &gone)).is_empty(), "nothing deleted comes back");
}

#[test]
fn local_holds_crashed_sweeps_and_tombstones() {
    holds_crashes_and_tombstones(Backend::Local);
}

#[test]
fn s3_holds_crashed_sweeps_and_tombstones() {
    holds_crashes_and_tombstones(Backend::S3);
}

fn key_rotation_and_destruction(backend: Backend) {
    let f = fixture(backend);
    let store = &f.store;
    rt().block_on(async {
        let old = put_call(store, "d30", t0(), None).await;
        let other = put_call(store, "d90", t0(), None).await;
        let v = store.keys().update(|k| k.rotate("d30")).unwrap();
        assert_eq!(v, 2);
        let new = put_call(store, "d30", t0(), None).await;
        let header = |c: &CallRef| {
            let s = store.clone();
            let p = c.object("audio.wav");
            async move { earshot::store::crypt::Header::parse(&s.raw(&p).await.unwrap()).unwrap().kek_version }
        };
        assert_eq!((header(&old).await, header(&new).await), (1, 2));
        for c in [&old, &new] {
            let got = store.get(c, "audio.wav").await.unwrap();
            assert_eq!(got, format!("audio.wav of {}", c.call_id).into_bytes());
        }
        // Crypto-shredding: the tenant's keys destroyed, its data is unreadable, clearly.
        store.keys().update(|k| k.destroy_tenant("d30")).unwrap();
        for c in [&old, &new] {
            let err = store.get(c, "audio.wav").await.unwrap_err().to_string();
            assert!(err.contains("destroyed"), "{err}");
        }
        assert!(store.get(&other, "audio.wav").await.is_ok(), "other tenants are untouched");
    });
}

#[test]
fn local_key_rotation_and_destruction() {
    key_rotation_and_destruction(Backend::Local);
}

#[test]
fn s3_key_rotation_and_destruction() {
    key_rotation_and_destruction(Backend::S3);
}

#[test]
fn retention_and_keys_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("earshot.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\ndir = \"{}\"\n\n[[tenants]]\nid = \"d7\"\nfork_secret = \"{SECRET}\"\nretention_days = 7\n\n[[tenants]]\nid = \"keep\"\nfork_secret = \"{SECRET}\"\n",
            data.display()
        ),
    )
    .unwrap();
    let store = Store::open(&StorageConfig { dir: data.clone(), ..StorageConfig::default() }).unwrap();
    store.keys().ensure_tenants(["d7", "keep"]).unwrap();
    let now = Utc::now();
    let (old, young, kept) = rt().block_on(async {
        (
            put_call(&store, "d7", now - chrono::Duration::days(10), None).await,
            put_call(&store, "d7", now - chrono::Duration::days(1), None).await,
            put_call(&store, "keep", now - chrono::Duration::days(900), None).await,
        )
    });
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_earshot"))
            .args(args)
            .arg("-c")
            .arg(&config)
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{args:?}: {text}");
        text
    };
    let at = (now + chrono::Duration::days(7)).format("%Y-%m-%d").to_string();
    let plan = run(&["retention", "plan", "--at", &at]);
    assert!(plan.contains(&format!("would delete d7 {}", old.call_id)), "{plan}");
    assert!(plan.contains(&young.call_id.to_string()), "due by then: {plan}");
    assert!(plan.contains("tenant keep: no retention_days"), "{plan}");
    assert_eq!(rt().block_on(present(&store, &old)).len(), 4, "plan deletes nothing");
    let swept = run(&["retention", "sweep"]);
    assert!(
        swept.contains(&format!("deleted d7 {}", old.call_id)) && !swept.contains(&young.call_id.to_string()),
        "{swept}"
    );
    assert!(rt().block_on(present(&store, &old)).is_empty());
    assert_eq!(rt().block_on(present(&store, &young)).len(), 4);
    assert_eq!(rt().block_on(present(&store, &kept)).len(), 4);
    let rotated = run(&["keys", "rotate", "--tenant", "d7"]);
    assert!(rotated.contains("key version 2"), "{rotated}");
    let listed = run(&["keys", "list"]);
    assert!(listed.contains("d7: active 2, versions [1, 2]"), "{listed}");
    assert!(!listed.contains(
        &earshot::store::crypt::Keyring::parse(&std::fs::read_to_string(data.join(".keys/keyring.toml")).unwrap())
            .unwrap()
            .tenants["d7"]
            .keys["1"]
    ));
    assert!(rt().block_on(store.get(&young, "audio.wav")).is_ok(), "old version still reads");
}

#[test]
fn the_server_sweeps_on_its_own_and_picks_up_retention_edits_without_a_restart() {
    // No retention at first: an old call stays. Sweeps every second.
    let server = TestServer::start_with("", &[("EARSHOT__STORAGE__SWEEP_INTERVAL", "1s")]);
    let config_text = std::fs::read_to_string(&server.config_path).unwrap();
    let store = server.store();
    let old = rt().block_on(put_call(store.store(), TENANT, Utc::now() - chrono::Duration::days(10), None));
    let young = rt().block_on(put_call(store.store(), TENANT, Utc::now() - chrono::Duration::days(2), None));
    // Two whole sweeps ran after the calls were stored (the counter moves at the end of
    // each round), and the old call is still whole.
    let sweeps = || metric(&server.metrics(), "earshot_retention_sweeps_total", &["outcome=\"ok\""]);
    let (before, t) = (sweeps(), Instant::now());
    while sweeps() < before + 2.0 {
        assert!(t.elapsed() < Duration::from_secs(30), "no sweep ran; log:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(rt().block_on(present(store.store(), &old)).len(), 4);
    // The plan becomes 7 days: the next sweep deletes the old call.
    let edited = config_text.replacen("rep_track = \"inbound\"\n", "rep_track = \"inbound\"\nretention_days = 7\n", 1);
    std::fs::write(&server.config_path, edited).unwrap();
    let t0 = Instant::now();
    while !rt().block_on(present(store.store(), &old)).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(90), "not swept; log:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(rt().block_on(present(store.store(), &young)).len(), 4, "not due yet");
    let metrics = server.metrics();
    assert!(metric(&metrics, "earshot_retention_deleted_objects_total", &[]) >= 4.0, "{metrics}");
    // It was found 3 days late (the plan was just set): overdue once, then 0 again.
    let t1 = Instant::now();
    while metric(&server.metrics(), "earshot_retention_calls_overdue", &[]) != 0.0 {
        assert!(t1.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_keyring_from_the_environment_is_used_read_only() {
    let mut ring = earshot::store::crypt::Keyring::default();
    ring.ensure_tombstone_key();
    ring.ensure_tenant(TENANT);
    // Missing a configured tenant's key: a clear error at start, nothing written.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_earshot"))
        .args(["serve", "--config"])
        .arg({
            let dir = tempfile::tempdir().unwrap().keep();
            let p = dir.join("c.toml");
            std::fs::write(&p, format!("[http]\nlisten = \"127.0.0.1:0\"\n[storage]\ndir = \"{}\"\n[[tenants]]\nid = \"{TENANT}\"\nfork_secret = \"{SECRET}\"\n[[tenants]]\nid = \"norec\"\nfork_secret = \"{SECRET}\"\n", dir.join("data").display())).unwrap();
            p
        })
        .env("EARSHOT_KEYRING", ring.to_toml())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("EARSHOT_KEYRING") && err.contains("read-only"), "{err}");
    // Complete: calls are stored with it; no keyring file appears beside the data.
    ring.ensure_tenant("norec");
    let text = ring.to_toml();
    let server = TestServer::start_with("", &[("EARSHOT_KEYRING", text.as_str())]);
    let (audio, _) = two_party_call(8000, 1.0);
    send_pcm(&server, TENANT, &audio, serde_json::json!({"campaign": "env-keys"}));
    let reader_cfg = {
        let keyfile = server.dir.path().join("ring.toml");
        std::fs::write(&keyfile, &text).unwrap();
        StorageConfig { dir: server.data_dir(), keyring: Some(keyfile), ..StorageConfig::default() }
    };
    let reader = earshot::store::objects::StoreReader::open(&reader_cfg).unwrap();
    let t0 = Instant::now();
    let id = loop {
        if let Some(id) = reader.list_calls(TENANT).first() {
            break *id;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "{}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    let m = reader.manifest(id).unwrap();
    while !reader.is_uploaded(m.call_id) {
        assert!(t0.elapsed() < Duration::from_secs(20), "{}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(reader.audio(m.call_id).unwrap().channel(0)[..audio.channels[0].len()], audio.channels[0][..]);
    assert!(!server.data_dir().join(".keys").exists());
}

#[test]
fn erasure_reaches_calls_still_in_the_spool() {
    let f = fixture(Backend::Local);
    let store = &f.store;
    let id = CallId::new_at(Utc::now());
    let call = CallRef { tenant: "d7".into(), call_id: id };
    let dir = store.spool().call_dir("d7", id);
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = format!(
        r#"{{"version":1,"tenant":"d7","call_id":"{id}","source":"pcm","participants":[{{"role":"customer","phone_e164":"+15554443333"}}],"source_ids":{{}},"started_at":"{}","layout":"stereo","channels":["rep","customer"],"sample_rate":8000,"recording":true,"stats":{{"frames_received":0,"frames_reordered":0,"frames_gap_filled":0,"frames_dropped":0,"samples_gap_filled":0,"dtmf_events":0}},"dtmf":[]}}"#,
        Utc::now().to_rfc3339()
    );
    std::fs::write(dir.join("manifest.json"), manifest).unwrap();
    std::fs::write(dir.join("audio.wav"), b"RIFF spooled").unwrap();
    let receipt =
        rt().block_on(earshot::store::privacy::erase_subject(store, "d7", "+1 555 444 3333", Utc::now())).unwrap();
    assert_eq!(receipt.erased.len(), 1, "{receipt:?}");
    assert_eq!(receipt.erased[0].spooled_files, 2);
    assert!(!dir.exists(), "the spooled copy is gone");
    assert!(rt().block_on(store.is_tombstoned(&call)).unwrap(), "and cannot come back");
}

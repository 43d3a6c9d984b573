//! Several nodes: two `earshot` processes sharing a real `redis-server` and a real
//! S3-compatible store (moto), all on free loopback ports.
//!
//! Longer than 600 lines on purpose: every scenario needs the same two-node harness
//! (redis-server, moto, shared keyring, node start and kill); it stays with them.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use earshot::live::token::TokenRole;
use earshot_loadtest::audio::Audio;
use earshot_loadtest::{pcm, ws};
use serde_json::Value;

use crate::common::{metric, require_tool, rt, wait_metric, TestServer, SECRET, TENANT};
use crate::live::{live, live_config, next_json, tok, types, SIGNING};
use crate::s3::Moto;

/// A real Redis on a free loopback port, without persistence (a restart is empty).
struct Redis {
    child: Option<Child>,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        require_tool("redis-server");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut r = Redis { child: None, port };
        r.restart();
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn restart(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(10), "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Cluster {
    redis: Redis,
    _moto: Moto,
    dir: tempfile::TempDir,
    a: TestServer,
    b: TestServer,
}

fn node(name: &str, redis: &Redis, moto: &Moto, keyring: &Path, extra: &str) -> TestServer {
    let extra = format!(
        "[redis]\nurl = \"{}\"\nnode_id = \"{name}\"\nregistry_ttl = \"2s\"\nheartbeat = \"500ms\"\nlock_lease = \"5s\"\n{extra}",
        redis.url()
    );
    let mut env = moto.server_env();
    env.push(("EARSHOT__STORAGE__KEYRING".into(), keyring.display().to_string()));
    env.push(("EARSHOT__TENANTS__ACME__SIGNING_SECRET".into(), SIGNING.into()));
    env.push(("EARSHOT__STORAGE__SWEEP_INTERVAL".into(), "1s".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TestServer::start_with(&extra, &env)
}

fn wait_redis_up(s: &TestServer) {
    let t0 = Instant::now();
    while metric(&s.metrics(), "earshot_cluster_redis_up", &[]) < 1.0 {
        assert!(t0.elapsed() < Duration::from_secs(15), "node never reached Redis; log:\n{}", s.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cluster(extra: &str) -> Cluster {
    let redis = Redis::start();
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    // One keyring for both nodes (in production: a Secret mounted on every node).
    let keyring = dir.path().join("keyring.toml");
    let a = node("node-a", &redis, &moto, &keyring, extra);
    let b = node("node-b", &redis, &moto, &keyring, extra);
    wait_redis_up(&a);
    wait_redis_up(&b);
    Cluster { redis, _moto: moto, dir, a, b }
}

impl Cluster {
    fn tokens(&self) -> earshot::config::Config {
        live_config(self.dir.path(), "")
    }
}

fn tone(secs: f64, hz: f64) -> Vec<i16> {
    (0..(secs * 16000.0) as usize)
        .map(|i| ((i as f64 * hz * std::f64::consts::TAU / 16000.0).sin() * 8000.0) as i16)
        .collect()
}

/// Streams a stereo PCM call to `addr` in real time on its own thread.
fn fork_call(addr: SocketAddr, campaign: &str, secs: f64) -> std::thread::JoinHandle<Option<u64>> {
    let audio = Audio { sample_rate: 16000, channels: vec![tone(secs, 300.0), tone(secs, 500.0)] };
    let script = pcm::render(&audio, serde_json::json!({ "campaign": campaign, "rep": "alex" }));
    std::thread::spawn(move || {
        rt().block_on(async move {
            let url = format!("ws://{addr}/fork/pcm/{TENANT}");
            let mut conn =
                ws::connect(&url, &[("authorization".into(), format!("Bearer {SECRET}"))], None).await.ok()?;
            pcm::send(&mut conn, &script, 1.0).await.ok().map(|r| r.media_sent)
        })
    })
}

fn get(addr: SocketAddr, path: &str, token: &str) -> (u16, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let req = ureq::http::Request::builder()
        .method("GET")
        .uri(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {token}"));
    let resp = agent.run(req.body(()).unwrap()).unwrap();
    let status = resp.status().as_u16();
    let mut out = Vec::new();
    resp.into_body().into_reader().read_to_end(&mut out).unwrap();
    (status, out)
}

/// The next message that is not the connection's `hello`.
async fn next_msg(ws: &mut crate::live::LiveWs, wait: Duration) -> Option<Value> {
    loop {
        let m = next_json(ws, wait).await?;
        if m["type"] != "hello" {
            return Some(m);
        }
    }
}

/// Messages until `call.ended` (or 20 s of nothing).
async fn until_ended(ws: &mut crate::live::LiveWs) -> Vec<Value> {
    let mut out = Vec::new();
    let t0 = Instant::now();
    while let Some(m) = next_json(ws, Duration::from_secs(20).saturating_sub(t0.elapsed())).await {
        let end = m["type"] == "call.ended";
        out.push(m);
        if end {
            break;
        }
    }
    out
}

fn of_call<'a>(msgs: &'a [Value], id: &str) -> Vec<&'a Value> {
    msgs.iter().filter(|m| m["call_id"] == id).collect()
}

#[test]
fn a_call_on_node_a_is_live_on_node_b_in_order_with_the_same_seq_and_stored_data_is_read_through_b() {
    let c = cluster("");
    let cfg = c.tokens();
    let manager = tok(&cfg, TENANT, "boss", TokenRole::Manager);
    let (a_addr, b_addr) = (c.a.addr, c.b.addr);
    let (on_a, on_b) = rt().block_on(async {
        let mut wa = live(a_addr, &manager, None).await;
        let mut wb = live(b_addr, &manager, None).await;
        let call = fork_call(a_addr, "cross-node", 4.0);
        let (ra, rb) = tokio::join!(until_ended(&mut wa), until_ended(&mut wb));
        assert!(call.join().unwrap().is_some());
        (ra, rb)
    });
    let id = on_a.iter().find(|m| m["type"] == "call.started").expect("started on A")["call_id"]
        .as_str()
        .unwrap()
        .to_string();
    let a_events = of_call(&on_a, &id);
    let b_events = of_call(&on_b, &id);
    let key = |v: &[&Value]| {
        v.iter().map(|m| (m["seq"].as_u64().unwrap(), m["type"].as_str().unwrap().to_string())).collect::<Vec<_>>()
    };
    assert!(b_events.last().is_some_and(|m| m["type"] == "call.ended"), "B saw {:?}", types(&on_b));
    assert_eq!(key(&b_events), key(&a_events), "node B sees node A's events, in order, with the same seq");
    let seqs: Vec<u64> = key(&b_events).iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(b_events, a_events, "identical envelopes");
    // The stored call, through node B's admin API (shared S3 store, shared keyring).
    let admin = tok(&cfg, TENANT, "root", TokenRole::Admin);
    let t0 = Instant::now();
    loop {
        let (s, body) = get(b_addr, &format!("/v1/calls/{id}"), &admin);
        if s == 200 && serde_json::from_slice::<Value>(&body).is_ok_and(|m| m["outcome"].is_string()) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "call not readable on B: {s} {}",
            String::from_utf8_lossy(&body)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (s, wav) = get(b_addr, &format!("/v1/calls/{id}/recording"), &admin);
    assert_eq!(s, 200);
    assert!(wav.len() > 4 * 16000 * 2 * 2 - 16000, "about 4 s of stereo 16-bit audio: {} bytes", wav.len());
    let mb = c.b.metrics();
    assert!(metric(&mb, "earshot_cluster_events_total", &["result=\"received\""]) >= a_events.len() as f64);
    assert_eq!(metric(&mb, "earshot_cluster_events_total", &["result=\"bad\""]), 0.0);
    let ma = c.a.metrics();
    assert!(metric(&ma, "earshot_cluster_events_total", &["result=\"published\""]) >= a_events.len() as f64);
}

#[test]
fn redis_restarted_mid_call_loses_nothing_and_remote_clients_get_a_snapshot_then_live_events() {
    let mut c = cluster("");
    let cfg = c.tokens();
    let manager = tok(&cfg, TENANT, "boss", TokenRole::Manager);
    let (a_addr, b_addr) = (c.a.addr, c.b.addr);
    let secs = 12.0;
    let runtime = rt();
    let mut wb = runtime.block_on(live(b_addr, &manager, None));
    let call = fork_call(a_addr, "redis-outage", secs);
    // Live on B first.
    let first = runtime.block_on(next_msg(&mut wb, Duration::from_secs(10))).expect("call.started on B");
    assert_eq!(first["type"], "call.started");
    let id = first["call_id"].as_str().unwrap().to_string();
    let mut last_before = 1;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1500) {
        if let Some(m) = runtime.block_on(next_msg(&mut wb, Duration::from_millis(300))) {
            last_before = m["seq"].as_u64().unwrap_or(last_before);
        }
    }
    // Redis goes away until node A has failed to publish a few events, then comes back empty.
    c.redis.stop();
    wait_metric(a_addr, "earshot_cluster_events_total", &["result=\"unpublished\""], 3.0, Duration::from_secs(15));
    c.redis.restart();
    let after = runtime.block_on(until_ended(&mut wb));
    let snap = after
        .iter()
        .position(|m| m["type"] == "snapshot" && m["call_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no snapshot on B: {:?}", types(&after)));
    let snap_seq = after[snap]["last_seq"].as_u64().unwrap();
    assert!(snap_seq > last_before, "the snapshot covers what was missed ({snap_seq} > {last_before})");
    let live_after: Vec<u64> =
        after[snap + 1..].iter().filter(|m| m["call_id"] == id.as_str()).filter_map(|m| m["seq"].as_u64()).collect();
    assert!(!live_after.is_empty() && live_after[0] > snap_seq, "live events after the snapshot: {:?}", types(&after));
    assert!(live_after.windows(2).all(|w| w[1] == w[0] + 1), "in order, no gap: {live_after:?}");
    assert!(
        after.last().is_some_and(|m| m["type"] == "call.ended" && m["outcome"] == "completed"),
        "not node_lost: {:?}",
        after.last()
    );
    let sent = call.join().unwrap().expect("the fork itself never noticed");
    // Node A's recording is complete (Redis is not on the media path).
    let m = c.a.wait_call(TENANT, "redis-outage", Duration::from_secs(20));
    assert_eq!(m.outcome.as_deref(), Some("completed"));
    let rec = c.a.audio(m.call_id);
    assert_eq!(rec.frames() as u64, (secs * 16000.0) as u64, "every sample recorded ({sent} frames sent)");
    let ma = c.a.metrics();
    assert!(metric(&ma, "earshot_cluster_events_total", &["result=\"unpublished\""]) > 0.0, "the outage was counted");
    assert!(metric(&ma, "earshot_cluster_snapshots_total", &["direction=\"sent\""]) > 0.0);
    assert!(metric(&c.b.metrics(), "earshot_cluster_snapshots_total", &["direction=\"applied\""]) > 0.0);
}

#[test]
fn a_killed_node_s_calls_end_as_node_lost_elsewhere_and_its_spool_recovers_the_recording() {
    let mut c = cluster("");
    let cfg = c.tokens();
    let manager = tok(&cfg, TENANT, "boss", TokenRole::Manager);
    let (a_addr, b_addr) = (c.a.addr, c.b.addr);
    let runtime = rt();
    let mut wb = runtime.block_on(live(b_addr, &manager, None));
    let _call = fork_call(a_addr, "killed", 30.0);
    let first = runtime.block_on(next_msg(&mut wb, Duration::from_secs(10))).expect("call.started on B");
    assert_eq!(first["type"], "call.started");
    let id = first["call_id"].as_str().unwrap().to_string();
    // The team view on node B lists node A's call (the registry).
    let (s, body) = get(b_addr, "/v1/live/calls", &manager);
    assert_eq!(s, 200);
    let listed: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(listed, serde_json::json!({ "calls": [{ "call_id": id, "node": "node-a" }], "source": "registry" }));
    // Node A has written 2 s of the call (stereo 16-bit at 16 kHz) before it dies.
    wait_metric(a_addr, "earshot_recorded_bytes_total", &[], 2.0 * 16000.0 * 4.0, Duration::from_secs(15));
    c.a.kill9();
    let killed = Instant::now();
    let ended = loop {
        let m = runtime
            .block_on(next_msg(&mut wb, Duration::from_secs(20)))
            .unwrap_or_else(|| panic!("no call.ended on B; log:\n{}", c.b.log()));
        if m["type"] == "call.ended" && m["call_id"] == id.as_str() {
            break m;
        }
    };
    assert_eq!(ended["outcome"], "node_lost", "{ended}");
    assert!(killed.elapsed() < Duration::from_secs(10), "within about two registry TTLs: {:?}", killed.elapsed());
    assert_eq!(metric(&c.b.metrics(), "earshot_cluster_calls_lost_total", &[]), 1.0);
    let (_, body) = get(b_addr, "/v1/live/calls", &manager);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["calls"],
        serde_json::json!([]),
        "expired from the registry"
    );
    // A manager connecting to B later sees it ended too.
    let mut late = runtime.block_on(live(b_addr, &manager, None));
    let snap = runtime.block_on(next_msg(&mut late, Duration::from_secs(5))).expect("snapshot");
    assert!(
        snap["events"].as_array().unwrap().iter().any(|e| e["type"] == "call.ended" && e["outcome"] == "node_lost"),
        "{snap}"
    );
    // Node A comes back: the call in its spool is recovered and uploaded.
    c.a.restart();
    let m = c.a.wait_call(TENANT, "killed", Duration::from_secs(30));
    assert_eq!(m.call_id.to_string(), id);
    assert_eq!(m.outcome.as_deref(), Some("recovered_after_crash"));
    assert!(c.a.audio(m.call_id).frames() >= 16000, "the audio before the crash is there");
}

#[test]
fn two_whip_legs_of_one_call_on_different_nodes_become_one_call_on_the_owner() {
    let c = cluster("[whip]\nice_ip = \"127.0.0.1\"\n");
    let cfg = c.tokens();
    let publisher = earshot::live::token::issue(
        &cfg,
        TENANT,
        "alex",
        TokenRole::Publisher,
        Duration::from_secs(600),
        Some("call-77".into()),
    )
    .unwrap();
    let rep_audio = Audio { sample_rate: 16000, channels: vec![tone(1.0, 300.0)] };
    let cust_audio = Audio { sample_rate: 16000, channels: vec![tone(1.0, 700.0)] };
    let rep_script = Arc::new(earshot_loadtest::whip::render(&rep_audio).unwrap());
    let cust_script = Arc::new(earshot_loadtest::whip::render(&cust_audio).unwrap());
    let opts = |base: SocketAddr, party: &str| earshot_loadtest::whip::WhipOptions {
        base: format!("http://{base}"),
        token: publisher.clone(),
        call: "call-77".into(),
        party: party.into(),
        campaign: Some("two-nodes".into()),
    };
    let (rep, cust) = rt().block_on(async {
        let (up_tx, up_rx) = tokio::sync::oneshot::channel();
        let o1 = opts(c.a.addr, "rep");
        let rep = tokio::spawn(async move {
            earshot_loadtest::whip::publish(&o1, rep_script, Duration::from_secs(5), move || {
                let _ = up_tx.send(());
            })
            .await
        });
        up_rx.await.expect("rep leg connected on A");
        // The customer's leg reaches node B, which does not own the call.
        let o2 = opts(c.b.addr, "customer");
        let cust = earshot_loadtest::whip::publish(&o2, cust_script, Duration::from_secs(3), || {}).await;
        (rep.await.unwrap(), cust)
    });
    let (rep, cust) = (rep.expect("rep leg"), cust.expect("customer leg"));
    assert_eq!((rep.redirects, cust.redirects), (0, 1), "the customer's leg was redirected to node A");
    assert_eq!(cust.delete_status, Some(200), "its session lives on node A");
    let m = c.a.wait_call(TENANT, "two-nodes", Duration::from_secs(30));
    let calls: Vec<_> =
        c.a.manifests(TENANT).into_iter().filter(|m| m.campaign.as_deref() == Some("two-nodes")).collect();
    assert_eq!(calls.len(), 1, "one call");
    let rec = c.a.audio(m.call_id);
    assert_eq!(rec.channels, 2);
    let energy = |ch: usize| rec.channel(ch).iter().map(|&s| (s as f64).powi(2)).sum::<f64>();
    assert!(energy(0) > 0.0 && energy(1) > 0.0, "both parties recorded");
    assert_eq!(metric(&c.b.metrics(), "earshot_cluster_redirects_total", &[]), 1.0);
    assert_eq!(metric(&c.b.metrics(), "earshot_whip_sessions_total", &["result=\"created\""]), 0.0);
}

#[test]
fn with_two_sweepers_each_expired_call_is_deleted_exactly_once() {
    let redis = Redis::start();
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("keyring.toml");
    // The calls are put while no node sweeps; then two nodes with a 7-day plan sweep every second.
    let seed = node("seed", &redis, &moto, &keyring, "");
    let store = seed.store();
    let old: Vec<_> = (0..6)
        .map(|i| {
            rt().block_on(crate::storage::put_call(
                store.store(),
                TENANT,
                chrono::Utc::now() - chrono::Duration::days(10 + i),
                None,
            ))
        })
        .collect();
    drop(seed);
    let env_extra: PathBuf = keyring.clone();
    let mk = |name: &str| {
        let mut env = moto.server_env();
        env.push(("EARSHOT__STORAGE__KEYRING".into(), env_extra.display().to_string()));
        env.push(("EARSHOT__STORAGE__SWEEP_INTERVAL".into(), "1s".into()));
        env.push(("EARSHOT__TENANTS__ACME__RETENTION_DAYS".into(), "7".into()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let extra = format!("[redis]\nurl = \"{}\"\nnode_id = \"{name}\"\nregistry_ttl = \"2s\"\nheartbeat = \"500ms\"\nlock_lease = \"5s\"\n", redis.url());
        TestServer::start_with(&extra, &env)
    };
    let a = mk("sweeper-a");
    let b = mk("sweeper-b");
    let t0 = Instant::now();
    loop {
        let left: usize = old.iter().map(|c| rt().block_on(crate::storage::present(store.store(), c)).len()).sum();
        if left == 0 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{left} objects left; logs:\n{}\n{}", a.log(), b.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let two more whole rounds run on both nodes (their sweep counters say so), then
    // nothing may have been deleted twice.
    let rounds = |m: &str| {
        metric(m, "earshot_retention_sweeps_total", &[])
            + metric(m, "earshot_cluster_locks_total", &["result=\"busy\""])
    };
    let (ra, rb) = (rounds(&a.metrics()), rounds(&b.metrics()));
    let t1 = Instant::now();
    while rounds(&a.metrics()) < ra + 2.0 || rounds(&b.metrics()) < rb + 2.0 {
        assert!(t1.elapsed() < Duration::from_secs(30), "sweeps stopped; logs:\n{}\n{}", a.log(), b.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ma, mb) = (a.metrics(), b.metrics());
    let deleted = metric(&ma, "earshot_retention_deleted_objects_total", &[])
        + metric(&mb, "earshot_retention_deleted_objects_total", &[]);
    assert_eq!(deleted, 24.0, "6 calls × 4 objects, each deleted once");
    let acquired = metric(&ma, "earshot_cluster_locks_total", &["result=\"acquired\""])
        + metric(&mb, "earshot_cluster_locks_total", &["result=\"acquired\""]);
    let busy = metric(&ma, "earshot_cluster_locks_total", &["result=\"busy\""])
        + metric(&mb, "earshot_cluster_locks_total", &["result=\"busy\""]);
    assert!(acquired >= 2.0 && busy >= 1.0, "both nodes competed for the lock: acquired {acquired}, busy {busy}");
}

fn sip_listener(s: &TestServer) -> SocketAddr {
    let t0 = Instant::now();
    loop {
        let log = s.log();
        if let Some(a) = log.lines().find(|l| l.contains("SIP listening")).and_then(|l| l.split("addr=").nth(1)) {
            return a.split_whitespace().next().unwrap().parse().unwrap();
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no SIP listener; log:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_re_invite_for_a_dialog_another_node_owns_is_refused_naming_that_node() {
    use crate::sip::{raw_invite, udp_request, GOOD_SDP};
    let extra = format!(
        "[sip]\nlisten = \"127.0.0.1:0\"\nrtp_ports = [30000, 39999]\nrtp_timeout = \"6s\"\n\n[[tenants]]\nid = \"sipco\"\nfork_secret = \"{SECRET}\"\n[tenants.sip]\nallow = [\"127.0.0.1\"]\n"
    );
    let c = cluster(&extra);
    let (sip_a, sip_b) = (sip_listener(&c.a), sip_listener(&c.b));
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = sock.local_addr().unwrap();
    let (code, ok) =
        udp_request(&sock, sip_a, &raw_invite(me, sip_a, "xnode-1", "application/sdp", GOOD_SDP, None, "")).unwrap();
    assert_eq!(code, 200, "{ok}");
    let to_tag = ok
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("to:"))
        .and_then(|l| l.split(";tag=").nth(1))
        .expect("To tag")
        .trim()
        .to_string();
    let reinvite = |to: SocketAddr, call_id: &str, n: u32| {
        format!(
            "INVITE sip:sipco@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-re{n}\r\nFrom: <sip:srs@{me}>;tag=t-xnode-1\r\nTo: <sip:sipco@{to}>;tag={to_tag}\r\nCall-ID: {call_id}\r\nCSeq: {} INVITE\r\nContact: <sip:srs@{me}>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{GOOD_SDP}",
            n + 1,
            GOOD_SDP.len()
        )
    };
    // The dialog lives on node A; the dispatcher wrongly sends its re-INVITE to node B.
    let t0 = Instant::now();
    let mut n = 1;
    let answer = loop {
        let (code, text) =
            udp_request(&sock, sip_b, reinvite(sip_b, "xnode-1", n).as_bytes()).expect("an answer from B");
        assert_eq!(code, 481, "{text}");
        if text.contains("node-a") || t0.elapsed() > Duration::from_secs(5) {
            break text;
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(answer.contains("Warning: 399 earshot \"dialog owned by node node-a (http://"), "{answer}");
    // A dialog nobody owns is just unknown.
    let (code, text) = udp_request(&sock, sip_b, reinvite(sip_b, "nobody-has-it", 99).as_bytes()).unwrap();
    assert_eq!(code, 481);
    assert!(text.contains("no such call here"), "{text}");
    // On node A, the same re-INVITE is answered by the call.
    let (code, text) = udp_request(&sock, sip_a, reinvite(sip_a, "xnode-1", 100).as_bytes()).unwrap();
    assert_eq!(code, 200, "{text}");
}

#[test]
fn a_reader_whose_connection_drops_reads_on_from_the_last_entry_and_misses_nothing() {
    let c = cluster("");
    let cfg = c.tokens();
    let manager = tok(&cfg, TENANT, "boss", TokenRole::Manager);
    let runtime = rt();
    let mut wb = runtime.block_on(live(c.b.addr, &manager, None));
    let call = fork_call(c.a.addr, "hiccup", 6.0);
    let first = runtime.block_on(next_msg(&mut wb, Duration::from_secs(10))).expect("call.started on B");
    assert_eq!(first["type"], "call.started");
    // Events flow from A to B before the cut (the first metrics event, ~2 s in).
    let mut msgs = vec![first];
    while msgs.len() < 2 {
        msgs.push(runtime.block_on(next_msg(&mut wb, Duration::from_secs(10))).expect("events on B before the cut"));
    }
    // Cut node B's stream reader (only it: Redis keeps its data and node A publishes on).
    let list = Command::new("redis-cli").args(["-p", &c.redis.port.to_string(), "CLIENT", "LIST"]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout).to_string();
    let id = list
        .lines()
        .find(|l| l.contains("name=earshot-reader-node-b"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|f| f.strip_prefix("id="))
        .unwrap_or_else(|| panic!("no reader in {list}"))
        .to_string();
    let killed = Command::new("redis-cli")
        .args(["-p", &c.redis.port.to_string(), "CLIENT", "KILL", "ID", &id])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&killed.stdout).trim(), "1");
    msgs.extend(runtime.block_on(until_ended(&mut wb)));
    assert!(call.join().unwrap().is_some());
    let seqs: Vec<u64> = msgs.iter().filter_map(|m| m["seq"].as_u64()).collect();
    assert!(msgs.last().is_some_and(|m| m["type"] == "call.ended"), "{:?}", types(&msgs));
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "every event once, in order: {:?}", types(&msgs));
    assert!(msgs.iter().all(|m| m["type"] != "snapshot"), "no snapshot was needed: {:?}", types(&msgs));
    assert!(metric(&c.b.metrics(), "earshot_cluster_reconnects_total", &[]) >= 1.0);
}

#[test]
fn an_export_whose_builder_died_is_finished_by_one_other_node_after_its_lease() {
    let c = cluster("");
    let cfg = c.tokens();
    let admin = tok(&cfg, TENANT, "root", TokenRole::Admin);
    let reader = c.a.store();
    let call = rt().block_on(crate::storage::put_call(
        reader.store(),
        TENANT,
        chrono::Utc::now() - chrono::Duration::days(1),
        None,
    ));
    // A node started this export, holds its lock, and died: the record says running.
    let id = "0123456789abcdef0123456789abcdef";
    let rec = serde_json::json!({
        "id": id, "tenant": TENANT, "scope": "tenant", "state": "running", "done": 0, "total": 1,
        "created_at": chrono::Utc::now().to_rfc3339(), "calls": [call.call_id.to_string()],
    });
    let locked_at = Instant::now();
    let lock = Command::new("redis-cli")
        .args([
            "-p",
            &c.redis.port.to_string(),
            "SET",
            &format!("earshot:lock:export:{id}"),
            "node-gone:x",
            "PX",
            "3000",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&lock.stdout).trim(), "OK");
    rt().block_on(reader.store().put_meta(TENANT, &format!("exports/{TENANT}/{id}.json"), rec.to_string().as_bytes()))
        .unwrap();
    let t0 = Instant::now();
    let state = |addr| {
        let (s, body) = get(addr, &format!("/v1/exports/{id}"), &admin);
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice::<Value>(&body).unwrap()
    };
    // A whole retention round (which resumes dead exports) ran while the lease held: the
    // export must still be running. The sweep counter moves at the end of each round, ok
    // or failed.
    let sweeps =
        || [&c.a, &c.b].iter().map(|n| metric(&n.metrics(), "earshot_retention_sweeps_total", &[])).sum::<f64>();
    let before = sweeps();
    while sweeps() < before + 1.0 {
        assert!(t0.elapsed() < Duration::from_secs(20), "no retention round ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    let running = state(c.b.addr)["state"].clone();
    assert!(locked_at.elapsed() < Duration::from_secs(3), "the round came too late to prove anything; rerun");
    assert_eq!(running, "running", "not taken while its lease holds");
    let done = loop {
        let v = state(c.b.addr);
        if v["state"] == "done" {
            break v;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "not finished: {v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(locked_at.elapsed() >= Duration::from_secs(3), "only after the lease ran out");
    assert_eq!(done["summary"]["calls"], 1, "{done}");
    let resumed = [&c.a, &c.b].iter().filter(|n| n.log().contains("resuming an export")).count();
    assert_eq!(resumed, 1, "exactly one node finished it");
    // Its link works on either node.
    let url = done["download_url"].as_str().unwrap().to_string();
    let (s, zip) = get(c.a.addr, &url, "none");
    assert_eq!((s, &zip[..2]), (200, &b"PK"[..]));
}

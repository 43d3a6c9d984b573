//! Process-level behaviour: crash recovery, graceful drain, TLS, metrics, config check.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use earshot_loadtest::{pcm, twilio, ws};

use crate::common::*;

fn media_msg(track: &str, chunk: usize, sample: u8) -> String {
    let payload = base64::engine::general_purpose::STANDARD.encode([sample; 160]);
    serde_json::json!({"event": "media", "media": {"track": track, "chunk": chunk.to_string(),
        "timestamp": ((chunk - 1) * 20).to_string(), "payload": payload}})
    .to_string()
}

fn start_msg(campaign: &str) -> String {
    serde_json::json!({"event": "start", "start": {"streamSid": "MZk", "callSid": "CAk",
        "tracks": ["inbound", "outbound"], "customParameters": {"token": SECRET, "campaign": campaign},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
    .to_string()
}

#[test]
fn kill_9_mid_call_then_restart_recovers_a_playable_recording() {
    let mut server = TestServer::start();
    let url = format!("{}/fork/twilio/{TENANT}", server.ws());
    let rt = rt();
    // Stream at real-time pace for ~3 s, then kill -9 the server mid-call.
    // The connection stays open across the kill (dropping it would end the call first).
    let (sent_frames, _conn) = rt.block_on(async {
        let mut conn = ws::connect(&url, &[], None).await.unwrap();
        conn.send(Message::Text(start_msg("crash").into())).await.unwrap();
        let t0 = tokio::time::Instant::now();
        let mut chunk = 0;
        while t0.elapsed() < Duration::from_millis(3000) {
            chunk += 1;
            conn.feed(Message::Text(media_msg("inbound", chunk, 0x20).into())).await.unwrap();
            conn.feed(Message::Text(media_msg("outbound", chunk, 0xA0).into())).await.unwrap();
            conn.flush().await.unwrap();
            tokio::time::sleep_until(t0 + Duration::from_millis(20 * chunk as u64)).await;
        }
        (chunk, conn)
    });
    // Let the frames in flight land, then SIGKILL.
    std::thread::sleep(Duration::from_millis(100));
    server.kill9();
    server.restart();
    let m = server.wait_call(TENANT, "crash", Duration::from_secs(10));
    assert_eq!(m.outcome.as_deref(), Some("recovered_after_crash"));
    assert!(server.log().contains("recovered a call left open by a crash"));
    let rec = server.audio(m.call_id);
    let sent_ms = sent_frames as u64 * 20;
    let got_ms = rec.duration_ms();
    assert!(got_ms <= sent_ms + 20, "recorded {got_ms} ms > sent {sent_ms} ms");
    assert!(sent_ms - got_ms <= 1100, "lost {} ms of {sent_ms} ms", sent_ms - got_ms);
    assert_eq!(m.audio.as_ref().unwrap().duration_ms, got_ms);
    // Content intact: left is the inbound track's constant, right the outbound's.
    let l = rec.channel(0);
    assert!(l.iter().all(|&s| s == earshot::media::g711::decode_ulaw(0x20)));
    // No in-flight marker is left behind; a second restart changes nothing.
    assert!(std::fs::read_dir(server.data_dir().join(".spool/.inflight")).unwrap().next().is_none());
    let metrics = server.metrics();
    assert_eq!(metric(&metrics, "earshot_recovered_calls_total", &[]), 1.0);
}

#[test]
fn sigterm_drains_then_closes_open_calls_as_shutdown_and_exits() {
    let mut server = TestServer::start(); // drain_timeout = 2s
    let url = format!("{}/fork/twilio/{TENANT}", server.ws());
    let rt = rt();
    let mut conn = rt.block_on(async {
        let mut conn = ws::connect(&url, &[], None).await.unwrap();
        conn.send(Message::Text(start_msg("drain").into())).await.unwrap();
        for c in 1..=25 {
            conn.feed(Message::Text(media_msg("inbound", c, 0x30).into())).await.unwrap();
            conn.feed(Message::Text(media_msg("outbound", c, 0xB0).into())).await.unwrap();
        }
        conn.flush().await.unwrap();
        conn
    });
    // Wait for the call to be open.
    let t0 = Instant::now();
    while metric(&server.metrics(), "earshot_calls_active", &["source=\"twilio\""]) < 1.0 {
        assert!(t0.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(20));
    }
    let addr = server.addr;
    server.sigterm();
    // Draining once /readyz says so: then new forks are refused and the open call still
    // accepts audio.
    let t0 = Instant::now();
    while http_get(addr, "/readyz").0 != 503 {
        assert!(t0.elapsed() < Duration::from_secs(5), "never started draining");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(http_get(addr, "/healthz").0, 200);
    let refused = rt.block_on(ws::connect(&url, &[], None));
    assert!(refused.is_err(), "a new fork must be refused while draining");
    let code = rt.block_on(async {
        for c in 26..=50 {
            conn.feed(Message::Text(media_msg("inbound", c, 0x30).into())).await.unwrap();
            conn.feed(Message::Text(media_msg("outbound", c, 0xB0).into())).await.unwrap();
        }
        conn.flush().await.unwrap();
        ws::await_close(&mut conn, Duration::from_secs(6)).await
    });
    assert_eq!(code.code, Some(1001), "{code:?}");
    let (status, took) = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(6), "took {took:?}");
    let m = server.manifests(TENANT).into_iter().find(|m| m.campaign.as_deref() == Some("drain")).unwrap();
    assert_eq!(m.outcome.as_deref(), Some("shutdown"));
    assert_eq!(server.audio(m.call_id).frames(), 50 * 160, "audio sent during the drain is kept");
}

#[test]
fn metrics_match_what_was_sent_and_pass_promtool() {
    require_tool("promtool");
    let server = TestServer::start();
    let (audio, _) = two_party_call(8000, 1.0);
    let mut params = BTreeMap::new();
    params.insert("token".to_string(), SECRET.to_string());
    params.insert("campaign".to_string(), "metrics".to_string());
    let script =
        twilio::render(&audio, &twilio::TwilioOptions { custom_parameters: params, ..Default::default() }).unwrap();
    let pscript = pcm::render(&audio, serde_json::json!({"campaign": "metrics-pcm"}));
    rt().block_on(async {
        let mut c = ws::connect(&format!("{}/fork/twilio/{TENANT}", server.ws()), &[], None).await.unwrap();
        twilio::send(&mut c, &script, 8.0).await.unwrap();
        let mut c = ws::connect(
            &format!("{}/fork/pcm/{TENANT}", server.ws()),
            &[("authorization".into(), format!("Bearer {SECRET}"))],
            None,
        )
        .await
        .unwrap();
        pcm::send(&mut c, &pscript, 8.0).await.unwrap();
    });
    let mt = server.wait_call(TENANT, "metrics", Duration::from_secs(10));
    let mp = server.wait_call(TENANT, "metrics-pcm", Duration::from_secs(10));
    let text = server.metrics();
    let m = |name: &str, labels: &[&str]| metric(&text, name, labels);
    assert_eq!(m("earshot_media_frames_received_total", &["source=\"twilio\""]), script.media_messages as f64);
    assert_eq!(m("earshot_media_frames_received_total", &["source=\"pcm\""]), pscript.frames.len() as f64);
    assert_eq!(m("earshot_calls_started_total", &[]), 2.0);
    assert_eq!(m("earshot_calls_ended_total", &["outcome=\"completed\""]), 2.0);
    assert_eq!(m("earshot_calls_active", &[]), 0.0);
    assert_eq!(m("earshot_media_frames_dropped_total", &[]), 0.0);
    let bytes: u64 = [&mt, &mp].iter().map(|m| m.audio.as_ref().unwrap().bytes - 44).sum();
    assert_eq!(m("earshot_recorded_bytes_total", &[]), bytes as f64);
    assert_eq!(m("earshot_ws_connections_total", &[]), 2.0);
    assert_eq!(m("earshot_events_published_total", &["type=\"call.ended\""]), 2.0);
    assert!(text.contains("process_resident_memory_bytes"));
    // Every metric the shipped dashboards query exists in a live scrape.
    for dash in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/dashboards")).unwrap() {
        let body = std::fs::read_to_string(dash.unwrap().path()).unwrap();
        let mut names: Vec<&str> = Vec::new();
        for prefix in ["earshot_", "process_"] {
            let mut rest = body.as_str();
            while let Some(i) = rest.find(prefix) {
                let tail = &rest[i..];
                let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
                names.push(&tail[..end]);
                rest = &tail[end..];
            }
        }
        assert!(!names.is_empty());
        for n in names {
            assert!(text.contains(n), "dashboard queries {n}, which /metrics does not export");
        }
    }
    // promtool's linter on a live scrape.
    let path = server.dir.path().join("scrape.txt");
    std::fs::write(&path, &text).unwrap();
    let out =
        Command::new("sh").arg("-c").arg(format!("promtool check metrics < {}", path.display())).output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tls_is_served_natively_when_configured() {
    require_tool("openssl");
    require_tool("curl");
    let certdir = tempfile::tempdir().unwrap();
    let (cert, key) = (certdir.path().join("cert.pem"), certdir.path().join("key.pem"));
    let st = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(st.status.success());
    let server = TestServer::start_with(
        &format!("[http.tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\n", cert.display(), key.display()),
        &[],
    );
    let url = format!("https://{}/healthz", server.addr);
    let out = Command::new("curl").args(["-sk", "--max-time", "5", &url]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    // A websocket upgrade over TLS is answered 101.
    let url = format!("https://{}/fork/twilio/{TENANT}", server.addr);
    let out = Command::new("curl")
        .args([
            "-sk",
            "-i",
            "--http1.1",
            "--max-time",
            "2",
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: websocket",
            "-H",
            "Sec-WebSocket-Version: 13",
            "-H",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            &url,
        ])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // Plain HTTP on the TLS port is not served.
    assert_ne!(std::panic::catch_unwind(|| http_get(server.addr, "/healthz").0).unwrap_or(0), 200);
}

#[test]
fn config_check_names_the_offending_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[recorder]\nring_seconds = \"ten\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_earshot")).args(["config", "check"]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("recorder.ring_seconds"), "{err}");
    // The shipped config is valid, and env overrides apply by tenant id.
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/earshot.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_earshot"))
        .args(["config", "check", shipped])
        .env("EARSHOT__HTTP__LISTEN", "127.0.0.1:18080")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("127.0.0.1:18080"));
    let out = Command::new(env!("CARGO_BIN_EXE_earshot"))
        .args(["config", "check", shipped])
        .env("EARSHOT__TENANTS__DEMO__REP_TRACK", "sideways")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rep_track"));
}

#[test]
fn demo_secret_on_a_public_address_is_refused() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/earshot.toml");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_earshot"))
        .args(["serve", "--config", shipped])
        .env("EARSHOT__HTTP__LISTEN", "0.0.0.0:0")
        .env("EARSHOT__STORAGE__DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-demo-secrets"));
}

#[test]
fn full_disk_ends_the_call_as_storage_error_and_keeps_what_fitted() {
    let server = TestServer::start_on_small_disk("1m");
    // 16 kHz stereo PCM = 64 KB/s: the 1 MiB disk fills after ~15 s of audio.
    let (audio, _) = two_party_call(16000, 1.0);
    let long = earshot_loadtest::audio::Audio {
        sample_rate: 16000,
        channels: audio.channels.iter().map(|c| c.iter().copied().cycle().take(16000 * 40).collect()).collect(),
    };
    let script = pcm::render(&long, serde_json::json!({"campaign": "disk-full"}));
    let url = format!("{}/fork/pcm/{TENANT}", server.ws());
    let report = rt().block_on(async {
        let mut c = ws::connect(&url, &[("authorization".into(), format!("Bearer {SECRET}"))], None).await.unwrap();
        pcm::send(&mut c, &script, 10.0).await.unwrap()
    });
    assert!(report.closed_early, "the server must end the call when storage fails");
    assert_eq!(report.closing.code, Some(1011), "{:?}", report.closing);
    let t0 = Instant::now();
    let text = loop {
        let text = server.metrics();
        if metric(&text, "earshot_calls_ended_total", &["outcome=\"storage_error\""]) >= 1.0
            || t0.elapsed() > Duration::from_secs(5)
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(metric(&text, "earshot_calls_ended_total", &["outcome=\"storage_error\""]), 1.0);
    assert!(metric(&text, "earshot_errors_total", &["stage=\"recorder\"", "code=\"io\""]) >= 1.0);
    // The process is fine: it still answers, and says it is not ready (storage full).
    assert_eq!(server.http_get("/healthz").0, 200);
    assert_eq!(server.http_get("/readyz").0, 503);
    // What fitted on the disk is a readable recording.
    let store = server.store();
    let id = store.list_calls(TENANT)[0];
    let len = store.file(id, "audio.wav").unwrap().len();
    assert!(len > 512 * 1024, "kept {len} bytes");
}

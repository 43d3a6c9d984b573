//! WebRTC ingest over WHIP: headless Chromium publishes into the real server (ICE,
//! DTLS-SRTP, Opus), inside a network namespace that has only loopback; and every
//! bad-input answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use earshot::config::Config;
use earshot::events::EventBody;
use earshot::server::token::{self, TokenRole};
use earshot::server::{ServeOptions, Server};
use earshot::store::StoreReader;
use serde_json::Value;

use crate::common::*;
use crate::live::{live_config, whisper_hub};

fn whip_config(dir: &std::path::Path, whip: &str) -> Config {
    live_config(dir, &format!("[whip]\nice_ip = \"127.0.0.1\"\n{whip}\n"))
}

fn publisher(config: &Config, call: &str) -> String {
    token::issue(config, TENANT, "alex", TokenRole::Publisher, Duration::from_secs(600), Some(call.to_string())).unwrap()
}

/// Runs `f` on a thread in a fresh network namespace with only `lo` up: the server,
/// its media sockets and the browser it spawns all live there, so no packet can leave
/// loopback. Needs root (CI runs as root).
fn in_private_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    require_tool("ip");
    std::thread::spawn(move || {
        // Namespaces are per thread: this one, and every thread and process it starts.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare(CLONE_NEWNET) failed (needs root): {}", std::io::Error::last_os_error());
        let st = std::process::Command::new("ip").args(["link", "set", "lo", "up"]).status().unwrap();
        assert!(st.success());
        let links = std::process::Command::new("ip").args(["-o", "link"]).output().unwrap();
        let links = String::from_utf8_lossy(&links.stdout).to_string();
        assert_eq!(links.lines().count(), 1, "only loopback: {links}");
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Node + playwright-core driving Chromium through `tests/browser/whip.mjs`.
async fn browser(base: &str, token: &str, call: &str, mode: &str, wav: &std::path::Path, seconds: u32) -> Value {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(dir.join("node_modules/playwright-core").exists(), "playwright-core missing: run scripts/install-test-deps.sh");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("node")
            .arg(dir.join("whip.mjs"))
            .env("BASE", base)
            .env("TOKEN", token)
            .env("CALL", call)
            .env("MODE", mode)
            .env("WAV", wav)
            .env("SECONDS", seconds.to_string())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("browser in time")
    .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "whip.mjs failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|_| panic!("summary: {stdout}"));
    assert!(v["errors"].as_array().unwrap().is_empty(), "{v:#}");
    v
}

/// Speech as a 48 kHz WAV (Chromium's fake microphone loops it), with a second of
/// silence after it.
fn speech_wav(dir: &std::path::Path, text: &str) -> (std::path::PathBuf, Vec<i16>) {
    let mut s = speech("en-us", text, 48_000);
    s.extend(std::iter::repeat_n(0, 48_000));
    let path = dir.join("mic.wav");
    let spec = hound::WavSpec { channels: 1, sample_rate: 48_000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    for x in &s {
        w.write_sample(*x).unwrap();
    }
    w.finalize().unwrap();
    (path, s)
}

fn wait_manifest(data: &std::path::Path, limit: Duration) -> earshot::manifest::Manifest {
    let store = StoreReader::new(data);
    let t0 = Instant::now();
    loop {
        if let Some(id) = store.list_calls(TENANT).first() {
            if let Ok(m) = store.manifest(*id) {
                if m.outcome.is_some() {
                    return m;
                }
            }
        }
        assert!(t0.elapsed() < limit, "no finished call stored");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn rms(x: &[i16]) -> f64 {
    (x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len().max(1) as f64).sqrt()
}

#[test]
fn chromium_publishes_a_microphone_over_whip_recorded_and_transcribed() {
    require_tool("node");
    require_tool("chromium");
    let dir = tempfile::tempdir().unwrap();
    let (wav, _) = speech_wav(dir.path(), "Thank you for taking my call today. I would like to talk about your order.");
    let config = whip_config(dir.path(), "");
    let data = dir.path().join("data");
    let token = publisher(&config, "web-call-1");
    let dpath = dir.path().to_path_buf();
    let (summary, finals, metrics) = in_private_netns(move || {
        rt().block_on(async move {
            let metrics = earshot::metrics::Metrics::new();
            let hub = whisper_hub(&dpath, &metrics);
            let opts = ServeOptions { recogniser: Some((Arc::new(hub), Default::default())), metrics: Some(metrics.clone()), ..Default::default() };
            let server = Server::start(config, opts).await.unwrap();
            let mut bus = server.app.subscribe();
            let base = format!("http://{}", server.local_addr);
            let summary = browser(&base, &token, "web-call-1", "single", &wav, 10).await;
            // The call ends with the session; its last words are transcribed after.
            let mut finals = Vec::new();
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(60) {
                match tokio::time::timeout(Duration::from_secs(5), bus.recv()).await {
                    Ok(Ok(e)) => match &e.body {
                        EventBody::TranscriptFinal(t) => finals.push(t.text.to_lowercase()),
                        EventBody::CallEnded(_) => {}
                        _ => {}
                    },
                    Ok(Err(_)) => {}
                    Err(_) => break,
                }
            }
            let text = server.app.metrics.render();
            server.drain(std::future::pending()).await;
            (summary, finals, text)
        })
    });
    // Recorded: stereo 16 kHz, rep channel carrying the speech, the customer silent,
    // as long as the browser published (±100 ms).
    let m = wait_manifest(&data, Duration::from_secs(30));
    assert_eq!(m.outcome.as_deref(), Some("completed"));
    assert_eq!(m.source_ids.get("external_call_id").map(String::as_str), Some("web-call-1"));
    assert_eq!(m.rep_id.as_deref(), Some("alex"));
    assert_eq!(m.campaign.as_deref(), Some("whip-test"));
    let audio = m.audio.as_ref().expect("audio");
    assert_eq!((audio.sample_rate, audio.channels), (16_000, 2));
    let published = summary["published_ms"].as_f64().unwrap();
    let diff = audio.duration_ms as f64 - published;
    assert!(diff.abs() <= 100.0, "recording {} ms, published {published:.0} ms", audio.duration_ms);
    let store = StoreReader::new(&data);
    let rec = store.audio(m.call_id).unwrap();
    let rep: Vec<i16> = rec.samples.iter().step_by(2).copied().collect();
    let customer: Vec<i16> = rec.samples.iter().skip(1).step_by(2).copied().collect();
    assert!(rms(&rep) > 300.0, "rep rms {}", rms(&rep));
    assert_eq!(rms(&customer), 0.0);
    // Transcribed by the local Whisper: the words the fake microphone spoke.
    let all = finals.join(" ");
    assert!(all.contains("thank you") || all.contains("order"), "transcript: {all:?}");
    assert_eq!(metric(&metrics, "earshot_whip_sessions_total", &["result=\"created\""]), 1.0);
    assert_eq!(metric(&metrics, "earshot_whip_session_ends_total", &["reason=\"deleted\""]), 1.0);
    assert!(metric(&metrics, "earshot_whip_packets_total", &["result=\"received\""]) > 400.0, "{metrics}");
    assert_eq!(metric(&metrics, "earshot_whip_packets_total", &["result=\"decode_error\""]), 0.0);
    assert_eq!(metric(&metrics, "earshot_whip_sessions_active", &[]), 0.0);
}

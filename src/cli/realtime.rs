//! `earshot transcribe FILE --realtime`: plays a recording into an in-process server
//! exactly as a live fork would (websocket, decoder, resampler, rings, ASR scheduler and
//! worker pool, event bus), at real-time pace, optionally as many concurrent calls, and
//! reports every transcript event with its timing plus a summary. The harness behind
//! the ASR benchmarks (BENCHMARKS.md) and a quick check for users.
//!
//! Timings: a call's clock starts when its `call.started` event arrives (the first media
//! follows within milliseconds). A final's latency is measured from the end of the voiced
//! audio (the event's `end_ms` less the policy's 150 ms tail) to the event's arrival.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use earshot::asr::engine::Model;
use earshot::asr::hub::{AsrHub, AsrSettings};
use earshot::asr::stream_policy::PolicySettings;
use earshot::call::CallId;
use earshot::config::Config;
use earshot::events::EventBody;
use earshot::server::{ServeOptions, Server};
use earshot_loadtest::audio::Audio;
use earshot_loadtest::{pcm, twilio, ws};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Raw 16-bit PCM fork at the file's own rate.
    Pcm,
    /// Twilio Media Streams: 8 kHz µ-law, as a phone call arrives.
    Twilio,
}

#[derive(Debug, Clone)]
pub struct RealtimeOptions {
    pub file: PathBuf,
    pub model: PathBuf,
    pub language: String,
    pub format: Format,
    pub concurrent: usize,
    pub workers: usize,
    pub policy: PolicySettings,
    pub max_lag: Duration,
    pub speed: f64,
    /// Call i plays the recording rotated by i × this (default: its length / calls): all
    /// calls run at once for the whole time, but their turns fall at different moments
    /// (real calls do not turn in lockstep; identical calls would all want a final at
    /// the same instant).
    pub stagger: Option<Duration>,
}

/// One transcript event as printed.
#[derive(Debug, Clone, Serialize)]
pub struct TimedEvent {
    pub call: usize,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub channel: earshot::call::Role,
    pub utterance_id: String,
    pub text: String,
    pub stable: String,
    pub start_ms: u64,
    pub end_ms: u64,
    /// Since the call started.
    pub wall_ms: u64,
    /// Finals: end of voiced audio → event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub untranscribed: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub calls: usize,
    pub audio_seconds: f64,
    pub finals: usize,
    pub partials: usize,
    pub final_latency_ms_p50: u64,
    pub final_latency_ms_p95: u64,
    pub final_latency_ms_max: u64,
    /// Gaps between consecutive partials of one utterance.
    pub partial_gap_ms_p50: u64,
    pub partial_gap_ms_p95: u64,
    pub shed_seconds: f64,
    pub recogniser_dropped_seconds: f64,
    pub max_degrade_level: i64,
    pub wall_seconds: f64,
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

pub async fn run(opts: RealtimeOptions, mut on_event: impl FnMut(&TimedEvent)) -> anyhow::Result<Summary> {
    let audio = Audio::load_wav(&opts.file)?;
    let model = Arc::new(Model::load(&opts.model)?);
    let dir = std::env::temp_dir().join(format!("earshot-transcribe-{}", CallId::new_at(chrono::Utc::now())));
    std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    let secret = format!("transcribe-{}", CallId::new_at(chrono::Utc::now()));
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[storage]\ndir = \"{}\"\n[[tenants]]\nid = \"transcribe\"\nfork_secret = \"{secret}\"\n",
        dir.display()
    );
    let config = Config::from_toml_with_env(&text, &dir.join("config.toml"), std::iter::empty())?;
    let metrics = earshot::metrics::Metrics::new();
    let mut settings = AsrSettings::new(opts.workers.max(1), &opts.language);
    settings.policy = opts.policy;
    settings.overload.max_lag_ms = opts.max_lag.as_millis() as u64;
    let tail_ms = opts.policy.tail_ms;
    let hub = AsrHub::start(vec![model], settings, earshot::store::spool::StoreLayout::new(&dir), metrics.clone())?;
    let server = Server::start(
        config,
        ServeOptions {
            recogniser: Some((Arc::new(hub), Default::default())),
            metrics: Some(metrics.clone()),
            ..Default::default()
        },
    )
    .await?;
    let mut rx = server.app.subscribe();
    let t0 = Instant::now();
    let mut senders = Vec::new();
    let stagger =
        opts.stagger.unwrap_or_else(|| Duration::from_secs_f64(audio.duration_secs() / opts.concurrent.max(1) as f64));
    for i in 0..opts.concurrent.max(1) {
        let addr = server.local_addr;
        let (secret, format, speed) = (secret.clone(), opts.format, opts.speed);
        let shift = (stagger.as_secs_f64() * i as f64 * audio.sample_rate as f64) as usize;
        let audio = rotated(&audio, shift);
        senders.push(tokio::spawn(async move {
            let campaign = format!("transcribe-{i}");
            match format {
                Format::Pcm => {
                    let script = pcm::render(&audio, serde_json::json!({ "campaign": campaign }));
                    let url = format!("ws://{addr}/fork/pcm/transcribe");
                    let mut c =
                        ws::connect(&url, &[("authorization".into(), format!("Bearer {secret}"))], None).await?;
                    pcm::send(&mut c, &script, speed).await.map(|_| ())
                }
                Format::Twilio => {
                    let mut o = twilio::TwilioOptions::default();
                    o.custom_parameters.insert("token".into(), secret);
                    o.custom_parameters.insert("campaign".into(), campaign);
                    o.stream_sid = format!("MZ{i:032}");
                    o.call_sid = format!("CA{i:032}");
                    let script = twilio::render(&audio, &o)?;
                    let url = format!("ws://{addr}/fork/twilio/transcribe");
                    let mut c = ws::connect(&url, &[], None).await?;
                    twilio::send(&mut c, &script, speed).await.map(|_| ())
                }
            }
        }));
    }
    let n_calls = opts.concurrent.max(1);
    let mut calls: HashMap<CallId, (usize, Instant)> = HashMap::new();
    let mut ended = 0;
    let mut latencies = Vec::new();
    let mut gaps = Vec::new();
    let mut last_partial: HashMap<(CallId, String), Instant> = HashMap::new();
    let (mut finals, mut partials) = (0, 0);
    let mut max_level = 0;
    let limit = Duration::from_secs_f64(audio.duration_secs() / opts.speed.max(0.01) + 120.0);
    // The call has ended when its fork closes; its transcript is done when the hub has
    // written it (the last final is published before that).
    let mut done_calls = 0;
    while done_calls < n_calls {
        max_level = max_level.max(metrics.asr_degrade_level.get());
        let e = match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            Ok(Ok(e)) => e,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                tracing::warn!(missed = n, "event bus lagged: some events not timed");
                continue;
            }
            Ok(Err(_)) => break,
            Err(_) => {
                anyhow::ensure!(t0.elapsed() < limit, "timed out waiting for transcripts");
                if ended == n_calls {
                    done_calls = calls.keys().filter(|id| transcript_written(&dir, id)).count();
                }
                continue;
            }
        };
        let now = Instant::now();
        match &e.body {
            EventBody::CallStarted(_) => {
                let i = calls.len();
                calls.insert(e.call_id, (i, now));
            }
            EventBody::CallEnded(_) => ended += 1,
            EventBody::TranscriptPartial(t) | EventBody::TranscriptFinal(t) => {
                let Some(&(call, started)) = calls.get(&e.call_id) else { continue };
                let wall_ms = now.duration_since(started).as_millis() as u64;
                let is_final = matches!(e.body, EventBody::TranscriptFinal(_));
                let key = (e.call_id, t.utterance_id.clone());
                let latency_ms = if is_final && t.untranscribed.is_none() {
                    finals += 1;
                    last_partial.remove(&key);
                    let l = wall_ms.saturating_sub(t.end_ms.saturating_sub(tail_ms));
                    latencies.push(l);
                    Some(l)
                } else {
                    if !is_final {
                        partials += 1;
                        if let Some(prev) = last_partial.insert(key, now) {
                            gaps.push(now.duration_since(prev).as_millis() as u64);
                        }
                    }
                    None
                };
                on_event(&TimedEvent {
                    call,
                    kind: e.type_name(),
                    channel: t.channel,
                    utterance_id: t.utterance_id.clone(),
                    text: t.text.clone(),
                    stable: t.stable.clone(),
                    start_ms: t.start_ms,
                    end_ms: t.end_ms,
                    wall_ms,
                    latency_ms,
                    untranscribed: t.untranscribed.clone(),
                });
            }
            _ => {}
        }
        if ended == n_calls {
            done_calls = calls.keys().filter(|id| transcript_written(&dir, id)).count();
        }
    }
    for s in senders {
        s.await.context("sender task")??;
    }
    let summary = Summary {
        kind: "summary",
        calls: n_calls,
        audio_seconds: audio.duration_secs() * n_calls as f64,
        finals,
        partials,
        final_latency_ms_p50: pct(&mut latencies, 0.5),
        final_latency_ms_p95: pct(&mut latencies, 0.95),
        final_latency_ms_max: latencies.iter().copied().max().unwrap_or(0),
        partial_gap_ms_p50: pct(&mut gaps, 0.5),
        partial_gap_ms_p95: pct(&mut gaps, 0.95),
        shed_seconds: metrics.asr_shed_seconds.get(),
        recogniser_dropped_seconds: ["behind", "ring_full"]
            .iter()
            .filter_map(|r| metrics.recogniser_dropped_seconds.get_metric_with_label_values(&[r]).ok())
            .map(|c| c.get())
            .sum(),
        max_degrade_level: max_level,
        wall_seconds: t0.elapsed().as_secs_f64(),
    };
    server.drain(std::future::pending()).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(summary)
}

fn rotated(audio: &Audio, shift: usize) -> Audio {
    let n = audio.frames().max(1);
    let shift = shift % n;
    Audio {
        sample_rate: audio.sample_rate,
        channels: audio.channels.iter().map(|c| c[shift..].iter().chain(&c[..shift]).copied().collect()).collect(),
    }
}

fn transcript_written(dir: &std::path::Path, id: &CallId) -> bool {
    // The hub here writes straight into `dir`, laid out like a spool.
    earshot::store::objects::spool_calls(&earshot::store::spool::StoreLayout::new(dir), None)
        .into_iter()
        .any(|(c, d)| c.call_id == *id && d.join("transcript.json").exists())
}

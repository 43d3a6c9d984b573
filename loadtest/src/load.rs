//! The load runner: N concurrent synthetic calls with a ramp, at real-time pace, while
//! sampling the server's CPU/RSS and metrics. Writes a JSON result and a Markdown summary.
//!
//! This file is the run loop; what a run is (`args`), the calls (`calls`), the server's
//! side (`metrics`), the result (`result`) and the SLO check (`slo`) are submodules.

mod args;
mod calls;
mod metrics;
mod result;
mod slo;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use self::args::format_name;
pub use self::args::{parse_mix, RunArgs, Scenario};
use self::calls::{Codes, Counters, Script};
pub use self::metrics::metric_sum;
pub use self::result::SloResult;
pub use self::result::{summary, RunResult, ServerUsage};
pub use self::slo::{check_slo, parse_slo};
use crate::audio::Audio;
use crate::cli::Format;
use crate::{pcm, proc_stats, siprec, twilio, whip, ws};

fn tile(audio: &Audio, secs: f64) -> Audio {
    let want = (secs * audio.sample_rate as f64) as usize;
    let channels = audio.channels.iter().map(|c| c.iter().copied().cycle().take(want).collect()).collect();
    Audio { sample_rate: audio.sample_rate, channels }
}

pub async fn run(mut args: RunArgs) -> anyhow::Result<RunResult> {
    if let Some(path) = args.scenario.clone() {
        args.apply_scenario(&path)?;
    }
    let wav = args.wav.clone().context("--wav (or a scenario with `wav`) is required")?;
    let audio = tile(&Audio::load_wav(&wav)?, args.duration);
    let counters = Arc::new(Counters::default());
    let codes: Arc<Codes> = Default::default();
    let base = args.url.trim_end_matches('/').to_string();
    // 500 SIPREC calls are 1,500 sockets here (and 2,000 in the server).
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let deal = match &args.mix {
        Some(m) => parse_mix(m)?,
        None => vec![args.format],
    };
    let mut kinds: Vec<Format> = Vec::new();
    for f in &deal {
        if !kinds.iter().any(|k| format_name(*k) == format_name(*f)) {
            kinds.push(*f);
        }
    }
    let mut scripts: BTreeMap<&'static str, Arc<Script>> = BTreeMap::new();
    for f in &kinds {
        let script = calls::render(*f, &audio, &args)?;
        scripts.insert(format_name(*f), Arc::new(script));
    }
    let mut per_format: BTreeMap<String, u64> = BTreeMap::new();
    let thresholds = args.slo.as_deref().map(parse_slo).transpose()?;
    anyhow::ensure!(
        args.live == 0 || args.live_token.is_some(),
        "--live needs --live-token (a manager token of the tenant)"
    );
    let live_stats = Arc::new(std::sync::Mutex::new(crate::live::LiveStats::default()));
    let watchers: Vec<tokio::task::JoinHandle<()>> = (0..args.live)
        .map(|_| {
            tokio::spawn(crate::live::watch(
                base.clone(),
                args.live_token.clone().unwrap_or_default(),
                live_stats.clone(),
            ))
        })
        .collect();
    let baseline = args.server_pid.and_then(proc_stats::sample);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.calls);
    let gap = if args.calls > 1 { args.ramp / (args.calls - 1) as f64 } else { 0.0 };
    let pid = args.server_pid;
    let full_at = Duration::from_secs_f64(args.ramp + 2.0);
    let full_until = Duration::from_secs_f64(args.ramp + args.duration - 2.0);
    let sampler = metrics::spawn_sampler(pid, started, full_until, counters.clone());
    for i in 0..args.calls {
        let due = started + Duration::from_secs_f64(gap * i as f64);
        tokio::time::sleep_until(due.into()).await;
        let counters = counters.clone();
        let codes = codes.clone();
        let fmt = deal[i % deal.len()];
        *per_format.entry(format_name(fmt).to_string()).or_default() += 1;
        let script = scripts[format_name(fmt)].clone();
        let base = base.clone();
        let tenant = args.tenant.clone();
        let token = match fmt {
            Format::Whip => args.publisher_token.clone().unwrap_or_else(|| args.token.clone()),
            _ => args.token.clone(),
        };
        let sip = args.sip;
        let duration = Duration::from_secs_f64(args.duration);
        tasks.push(tokio::spawn(async move {
            match &*script {
                Script::Siprec(s) => {
                    let o = siprec::SiprecOptions {
                        server: sip,
                        user: tenant,
                        tenant_header: None,
                        campaign: Some("loadtest".into()),
                        rep_aor: format!("sip:rep-{i}@agents.example.com"),
                        customer_aor: format!("sip:+1555{i:07}@pstn.example.com"),
                        speed: 1.0,
                    };
                    calls::siprec_call(&o, s.clone(), &counters, &codes).await;
                }
                Script::Whip(s) => {
                    let o = whip::WhipOptions {
                        base: base.replace("ws://", "http://"),
                        token,
                        call: format!("load-{}-{i}", std::process::id()),
                        party: "rep".into(),
                        campaign: Some("loadtest".into()),
                    };
                    calls::whip_call(&o, s.clone(), duration, &counters, &codes).await;
                }
                Script::Twilio(s) => {
                    if let Some(mut c) =
                        calls::ws_open(ws::connect(&format!("{base}/fork/twilio/{tenant}"), &[], None).await, &counters)
                    {
                        calls::ws_done(twilio::send(&mut c, s, 1.0).await, &counters, &codes);
                    }
                }
                Script::Pcm(s) => {
                    let auth = [("authorization".to_string(), format!("Bearer {token}"))];
                    if let Some(mut c) =
                        calls::ws_open(ws::connect(&format!("{base}/fork/pcm"), &auth, None).await, &counters)
                    {
                        calls::ws_done(pcm::send(&mut c, s, 1.0).await, &counters, &codes);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let samples = sampler.await.unwrap_or_default();
    // Give the server a moment to finalise the last recordings before scraping.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for w in &watchers {
        w.abort();
    }
    let live = (args.live > 0).then(|| live_stats.lock().unwrap_or_else(|e| e.into_inner()).result(args.live));
    let text = metrics::scrape(&base).await.unwrap_or_default();
    let server_metrics = metrics::server_metrics(&text, &kinds);
    let server = metrics::server_usage(baseline, &samples, full_at, full_until, args.calls);
    let c = &counters;
    let result = RunResult {
        format: if kinds.len() == 1 { format_name(kinds[0]).to_string() } else { "mixed".to_string() },
        mix: per_format,
        calls: args.calls,
        duration_s: args.duration,
        ramp_s: args.ramp,
        connected: c.connected.load(Ordering::Relaxed),
        connect_errors: c.connect_errors.load(Ordering::Relaxed),
        media_errors: c.media_errors.load(Ordering::Relaxed),
        closed_early: c.closed_early.load(Ordering::Relaxed),
        completed: c.completed.load(Ordering::Relaxed),
        frames_sent: c.frames_sent.load(Ordering::Relaxed),
        sender_max_lag_ms: c.max_lag_ms.load(Ordering::Relaxed),
        server,
        server_metrics,
        close_codes: codes.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        live,
        slo: None,
    };
    let mut result = result;
    if let Some(t) = &thresholds {
        let missed = check_slo(t, &result);
        result.slo = Some(SloResult { passed: missed.is_empty(), missed });
    }
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&result)?)
            .with_context(|| format!("writing {}", out.display()))?;
        std::fs::write(out.with_extension("md"), summary(&result))?;
    }
    Ok(result)
}

//! The load runner: N concurrent synthetic calls with a ramp, at real-time pace, while
//! sampling the server's CPU/RSS and metrics. Writes a JSON result and a Markdown summary.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::audio::Audio;
use crate::cli::Format;
use crate::proc_stats::{self, ProcSample};
use crate::{pcm, siprec, twilio, whip, ws};

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Server base URL, e.g. ws://127.0.0.1:8080 (forks connect here; metrics are read
    /// from it for every format).
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    pub url: String,
    /// SIPREC: the server's SIP address (UDP).
    #[arg(long, default_value = "127.0.0.1:5060")]
    pub sip: std::net::SocketAddr,
    #[arg(long, value_enum, default_value = "twilio")]
    pub format: Format,
    /// Concurrent calls.
    #[arg(long, default_value_t = 10)]
    pub calls: usize,
    /// Seconds over which calls are started.
    #[arg(long, default_value_t = 10.0)]
    pub ramp: f64,
    /// Seconds each call streams (the WAV is looped to fill it).
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Mono or stereo WAV (or the scenario's).
    #[arg(long)]
    pub wav: Option<PathBuf>,
    /// A scenario file (`loadtest/scenarios/*.toml`): calls, ramp, duration, wav, mix,
    /// live, slo; what it sets overrides the command line.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    #[arg(long, default_value = "demo")]
    pub tenant: String,
    #[arg(long, default_value = "demo")]
    pub token: String,
    /// PID of the server, to sample its CPU and RSS.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Where to write the JSON result (a .md summary is written beside it).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A mix of ingest paths instead of `--format`: `twilio=2,pcm=1,siprec=1,whip=1`
    /// (calls are dealt round-robin by weight).
    #[arg(long)]
    pub mix: Option<String>,
    /// Publisher token for the WHIP calls of a mix (default: `--token`).
    #[arg(long)]
    pub publisher_token: Option<String>,
    /// Overlay clients to attach to `/live` for the whole run (needs `--live-token`).
    #[arg(long, default_value_t = 0)]
    pub live: usize,
    /// A manager (or admin) token of the tenant for the overlay clients.
    #[arg(long)]
    pub live_token: Option<String>,
    /// Fail (exit 1) if any call saw an error or the server dropped recording audio, and
    /// if a threshold is missed: `--slo "live_hint_p95_ms=2000,rss_per_call_kb=512"`.
    /// Maxima: connect_errors, media_errors, closed_early, sender_max_lag_ms,
    /// frames_dropped, rss_per_call_kb, cpu_cores, live_connect_errors,
    /// live_delivery_p95_ms, live_final_p95_ms, live_hint_p95_ms; minima: completed_min,
    /// live_messages_min.
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    pub slo: Option<String>,
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Twilio => "twilio",
        Format::Pcm => "pcm",
        Format::Siprec => "siprec",
        Format::Whip => "whip",
    }
}

/// `twilio=2,pcm=1` → the order calls are dealt in (weights expanded).
pub fn parse_mix(spec: &str) -> anyhow::Result<Vec<Format>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, w) = part.split_once('=').unwrap_or((part, "1"));
        let f = match name.trim() {
            "twilio" => Format::Twilio,
            "pcm" => Format::Pcm,
            "siprec" => Format::Siprec,
            "whip" => Format::Whip,
            other => anyhow::bail!("--mix: unknown ingest path {other:?} (twilio, pcm, siprec, whip)"),
        };
        let w: usize = w.trim().parse().with_context(|| format!("--mix {part:?}: the weight is not a whole number"))?;
        anyhow::ensure!(w <= 100, "--mix {part:?}: weights up to 100");
        out.extend(std::iter::repeat_n(f, w));
    }
    anyhow::ensure!(!out.is_empty(), "--mix: no ingest path with a weight above 0");
    Ok(out)
}

/// A scenario file (`loadtest/scenarios/*.toml`): what a run is, kept with the repository.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub calls: Option<usize>,
    pub ramp: Option<f64>,
    pub duration: Option<f64>,
    /// Relative to the scenario file.
    pub wav: Option<PathBuf>,
    pub mix: Option<String>,
    pub live: Option<usize>,
    pub slo: Option<String>,
}

impl RunArgs {
    /// Fills what a scenario file sets (the command line's `--scenario`).
    pub fn apply_scenario(&mut self, path: &std::path::Path) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let s: Scenario = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        if let Some(v) = s.calls {
            self.calls = v;
        }
        if let Some(v) = s.ramp {
            self.ramp = v;
        }
        if let Some(v) = s.duration {
            self.duration = v;
        }
        if let Some(v) = s.wav {
            self.wav = Some(path.parent().unwrap_or(std::path::Path::new(".")).join(v));
        }
        if let Some(m) = s.mix {
            parse_mix(&m)?;
            self.mix = Some(m);
        }
        if let Some(v) = s.live {
            self.live = v;
        }
        if let Some(v) = s.slo {
            parse_slo(&v)?;
            self.slo = Some(v);
        }
        Ok(())
    }
}

const SLO_KEYS: [&str; 13] = [
    "connect_errors",
    "media_errors",
    "closed_early",
    "sender_max_lag_ms",
    "frames_dropped",
    "rss_per_call_kb",
    "cpu_cores",
    "live_connect_errors",
    "live_delivery_p95_ms",
    "live_final_p95_ms",
    "live_hint_p95_ms",
    "completed_min",
    "live_messages_min",
];

/// `key=value,…` → thresholds; an unknown key or a bad number is an error.
pub fn parse_slo(spec: &str) -> anyhow::Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').with_context(|| format!("--slo {part:?}: expected key=value"))?;
        let (k, v) = (k.trim(), v.trim());
        anyhow::ensure!(SLO_KEYS.contains(&k), "--slo: unknown key {k:?} (known: {})", SLO_KEYS.join(", "));
        let v: f64 = v.parse().with_context(|| format!("--slo {k}: {v:?} is not a number"))?;
        out.push((k.to_string(), v));
    }
    Ok(out)
}

/// What missed the thresholds (and the built-in "clean" check).
pub fn check_slo(thresholds: &[(String, f64)], r: &RunResult) -> Vec<String> {
    let mut missed = Vec::new();
    if !r.clean() {
        missed.push("not clean: a call saw an error, closed early or lost recording audio".to_string());
    }
    let live = r.live.clone().unwrap_or_default();
    for (k, limit) in thresholds {
        let value: Option<f64> = match k.as_str() {
            "connect_errors" => Some(r.connect_errors as f64),
            "media_errors" => Some(r.media_errors as f64),
            "closed_early" => Some(r.closed_early as f64),
            "sender_max_lag_ms" => Some(r.sender_max_lag_ms as f64),
            "frames_dropped" => r.server_metrics.get("frames_dropped").copied(),
            "rss_per_call_kb" => r.server.as_ref().map(|s| s.rss_per_call_kb),
            "cpu_cores" => r.server.as_ref().map(|s| s.cpu_cores_at_full_load),
            "live_connect_errors" => Some(live.connect_errors as f64),
            "live_delivery_p95_ms" => live.delivery_p95_ms,
            "live_final_p95_ms" => live.final_latency_p95_ms,
            "live_hint_p95_ms" => live.hint_latency_p95_ms,
            "completed_min" => Some(r.completed as f64),
            "live_messages_min" => Some(live.messages as f64),
            _ => None,
        };
        match value {
            None => missed.push(format!("{k}: not measured in this run")),
            Some(v) if k.ends_with("_min") && v < *limit => missed.push(format!("{k}: {v} < {limit}")),
            Some(v) if !k.ends_with("_min") && v > *limit => missed.push(format!("{k}: {v} > {limit}")),
            Some(_) => {}
        }
    }
    missed
}

#[derive(Debug, Clone, Serialize)]
pub struct SloResult {
    pub passed: bool,
    pub missed: Vec<String>,
}

#[derive(Debug, Default)]
struct Counters {
    connected: AtomicU64,
    connect_errors: AtomicU64,
    media_errors: AtomicU64,
    closed_early: AtomicU64,
    completed: AtomicU64,
    frames_sent: AtomicU64,
    active: AtomicU64,
    max_lag_ms: AtomicU64,
}

#[derive(Debug, Serialize)]
pub struct RunResult {
    pub format: String,
    /// Calls per ingest path.
    pub mix: BTreeMap<String, u64>,
    pub calls: usize,
    pub duration_s: f64,
    pub ramp_s: f64,
    pub connected: u64,
    pub connect_errors: u64,
    pub media_errors: u64,
    pub closed_early: u64,
    pub completed: u64,
    pub frames_sent: u64,
    pub sender_max_lag_ms: u64,
    pub server: Option<ServerUsage>,
    pub server_metrics: BTreeMap<String, f64>,
    pub close_codes: BTreeMap<String, u64>,
    /// The overlay clients' view (`--live`).
    pub live: Option<crate::live::LiveResult>,
    /// `--slo`: whether every threshold held.
    pub slo: Option<SloResult>,
}

#[derive(Debug, Serialize)]
pub struct ServerUsage {
    pub baseline_rss_mb: f64,
    pub peak_rss_mb: f64,
    pub rss_per_call_kb: f64,
    /// Average CPU (cores) while all calls were active.
    pub cpu_cores_at_full_load: f64,
    pub cpu_ms_per_call_second: f64,
    pub threads: u64,
    pub fds_at_peak: u64,
}

async fn scrape(base: &str) -> Option<String> {
    let hostport = base.trim_start_matches("ws://").trim_start_matches("http://").split('/').next()?.to_string();
    let mut s =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(&hostport)).await.ok()?.ok()?;
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {hostport}\r\n\r\n").as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// Sums every series of `name` whose labels contain all of `must`.
pub fn metric_sum(text: &str, name: &str, must: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' ')))
        .filter(|l| must.iter().all(|m| l.contains(m)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

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
    enum Script {
        Twilio(twilio::TwilioScript),
        Pcm(pcm::PcmScript),
        Siprec(Arc<siprec::SiprecScript>),
        Whip(Arc<whip::WhipScript>),
    }
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
        let script = match f {
            Format::Twilio => {
                let mut params = BTreeMap::new();
                params.insert("token".to_string(), args.token.clone());
                params.insert("campaign".to_string(), "loadtest".to_string());
                Script::Twilio(twilio::render(
                    &audio,
                    &twilio::TwilioOptions { custom_parameters: params, ..Default::default() },
                )?)
            }
            Format::Pcm => {
                Script::Pcm(pcm::render(&audio, serde_json::json!({"tenant": args.tenant, "campaign": "loadtest"})))
            }
            Format::Siprec => Script::Siprec(Arc::new(siprec::render(&audio)?)),
            Format::Whip => Script::Whip(Arc::new(whip::render(&audio)?)),
        };
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
    let sampler_counters = counters.clone();
    let pid = args.server_pid;
    let full_at = Duration::from_secs_f64(args.ramp + 2.0);
    let full_until = Duration::from_secs_f64(args.ramp + args.duration - 2.0);
    let sampler = tokio::spawn(async move {
        let mut samples: Vec<(Duration, ProcSample)> = Vec::new();
        let mut last_print = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = started.elapsed();
            if let Some(s) = pid.and_then(proc_stats::sample) {
                samples.push((now, s));
            }
            if last_print.elapsed() >= Duration::from_secs(5) {
                last_print = Instant::now();
                let c = &sampler_counters;
                let (rss, cores) = match samples.len() {
                    n if n >= 6 => (
                        samples[n - 1].1.rss_bytes as f64 / 1e6,
                        proc_stats::cores_between(&samples[n - 6].1, &samples[n - 1].1),
                    ),
                    n if n >= 1 => (samples[n - 1].1.rss_bytes as f64 / 1e6, 0.0),
                    _ => (0.0, 0.0),
                };
                eprintln!(
                    "[{:>5.0}s] active {:>5} connected {:>5} completed {:>5} frames {:>9} errors {}/{} server rss {:.0} MB cpu {:.2} cores",
                    now.as_secs_f64(),
                    c.active.load(Ordering::Relaxed),
                    c.connected.load(Ordering::Relaxed),
                    c.completed.load(Ordering::Relaxed),
                    c.frames_sent.load(Ordering::Relaxed),
                    c.connect_errors.load(Ordering::Relaxed),
                    c.media_errors.load(Ordering::Relaxed),
                    rss,
                    cores,
                );
            }
            if now > full_until + Duration::from_secs(60) {
                break;
            }
            if sampler_counters.active.load(Ordering::Relaxed) == 0 && now > full_until {
                break;
            }
        }
        samples
    });
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
                    siprec_call(&o, s.clone(), &counters, &codes).await;
                }
                Script::Whip(s) => {
                    let o = whip::WhipOptions {
                        base: base.replace("ws://", "http://"),
                        token,
                        call: format!("load-{}-{i}", std::process::id()),
                        party: "rep".into(),
                        campaign: Some("loadtest".into()),
                    };
                    whip_call(&o, s.clone(), duration, &counters, &codes).await;
                }
                Script::Twilio(s) => {
                    if let Some(mut c) =
                        ws_open(ws::connect(&format!("{base}/fork/twilio/{tenant}"), &[], None).await, &counters)
                    {
                        ws_done(twilio::send(&mut c, s, 1.0).await, &counters, &codes);
                    }
                }
                Script::Pcm(s) => {
                    let auth = [("authorization".to_string(), format!("Bearer {token}"))];
                    if let Some(mut c) = ws_open(ws::connect(&format!("{base}/fork/pcm"), &auth, None).await, &counters)
                    {
                        ws_done(pcm::send(&mut c, s, 1.0).await, &counters, &codes);
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
    let text = scrape(&base).await.unwrap_or_default();
    let mut server_metrics = BTreeMap::new();
    let sources: Vec<String> = kinds.iter().map(|f| format!("source=\"{}\"", format_name(*f))).collect();
    let by_source = |name: &str, extra: &[&str]| -> f64 {
        sources
            .iter()
            .map(|src| {
                let mut must: Vec<&str> = vec![src.as_str()];
                must.extend_from_slice(extra);
                metric_sum(&text, name, &must)
            })
            .sum()
    };
    server_metrics.insert("frames_received".into(), by_source("earshot_media_frames_received_total", &[]));
    server_metrics.insert("frames_dropped".into(), by_source("earshot_media_frames_dropped_total", &[]));
    server_metrics.insert("frames_gap_filled".into(), by_source("earshot_media_frames_gap_filled_total", &[]));
    server_metrics.insert("recorder_errors".into(), metric_sum(&text, "earshot_errors_total", &["stage=\"recorder\""]));
    server_metrics.insert(
        "calls_storage_error".into(),
        metric_sum(&text, "earshot_calls_ended_total", &["outcome=\"storage_error\""]),
    );
    server_metrics.insert("calls_completed".into(), by_source("earshot_calls_ended_total", &["outcome=\"completed\""]));
    if kinds.iter().any(|k| matches!(k, Format::Siprec)) {
        for r in ["received", "lost", "late", "duplicate", "reordered", "wrong_source", "malformed"] {
            server_metrics.insert(
                format!("rtp_{r}"),
                metric_sum(&text, "earshot_rtp_packets_total", &[&format!("result=\"{r}\"")]),
            );
        }
        server_metrics.insert("rtp_timeouts".into(), metric_sum(&text, "earshot_rtp_timeouts_total", &[]));
    }
    if kinds.iter().any(|k| matches!(k, Format::Whip)) {
        for r in ["received", "late", "duplicate", "reordered", "decode_error", "queue_full"] {
            server_metrics.insert(
                format!("whip_{r}"),
                metric_sum(&text, "earshot_whip_packets_total", &[&format!("result=\"{r}\"")]),
            );
        }
        server_metrics
            .insert("whip_created".into(), metric_sum(&text, "earshot_whip_sessions_total", &["result=\"created\""]));
        server_metrics.insert(
            "whip_deleted".into(),
            metric_sum(&text, "earshot_whip_session_ends_total", &["reason=\"deleted\""]),
        );
    }
    server_metrics.insert("recorded_bytes".into(), metric_sum(&text, "earshot_recorded_bytes_total", &[]));
    server_metrics.insert("ring_fill_p_gt_0_5".into(), {
        let count = metric_sum(&text, "earshot_ring_fill_ratio_count", &[]);
        let le05 = metric_sum(&text, "earshot_ring_fill_ratio_bucket", &["le=\"0.5\""]);
        count - le05
    });
    let server = baseline.and_then(|b| {
        let full: Vec<&(Duration, ProcSample)> =
            samples.iter().filter(|(t, _)| *t >= full_at && *t <= full_until).collect();
        let first = full.first()?;
        let last = full.last()?;
        let peak = samples.iter().map(|(_, s)| s.rss_bytes).max().unwrap_or(0);
        let cores = proc_stats::cores_between(&first.1, &last.1);
        Some(ServerUsage {
            baseline_rss_mb: b.rss_bytes as f64 / 1e6,
            peak_rss_mb: peak as f64 / 1e6,
            rss_per_call_kb: (peak.saturating_sub(b.rss_bytes)) as f64 / 1024.0 / args.calls.max(1) as f64,
            cpu_cores_at_full_load: cores,
            cpu_ms_per_call_second: cores * 1000.0 / args.calls.max(1) as f64,
            threads: last.1.threads,
            fds_at_peak: full.iter().map(|(_, s)| s.fds).max().unwrap_or(0),
        })
    });
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

type Codes = std::sync::Mutex<BTreeMap<String, u64>>;

fn count_code(codes: &Codes, key: String) {
    *codes.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default() += 1;
}

/// A websocket fork connected (counted as active), or its failure counted.
fn ws_open(conn: anyhow::Result<ws::Ws>, counters: &Counters) -> Option<ws::Ws> {
    let Ok(conn) = conn else {
        counters.connect_errors.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    counters.connected.fetch_add(1, Ordering::Relaxed);
    counters.active.fetch_add(1, Ordering::Relaxed);
    Some(conn)
}

/// A websocket fork call is over: counts its outcome and close code.
fn ws_done(res: anyhow::Result<twilio::SendReport>, counters: &Counters, codes: &Codes) {
    counters.active.fetch_sub(1, Ordering::Relaxed);
    match res {
        Ok(r) => {
            counters.frames_sent.fetch_add(r.media_sent, Ordering::Relaxed);
            counters.max_lag_ms.fetch_max(r.max_lag_ms, Ordering::Relaxed);
            if r.closed_early {
                counters.closed_early.fetch_add(1, Ordering::Relaxed);
            } else {
                counters.completed.fetch_add(1, Ordering::Relaxed);
            }
            count_code(codes, r.closing.code.map_or("none".to_string(), |c| c.to_string()));
        }
        Err(_) => {
            counters.media_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One SIPREC call: counts its outcome; the "close code" is how it ended.
async fn siprec_call(o: &siprec::SiprecOptions, script: Arc<siprec::SiprecScript>, counters: &Counters, codes: &Codes) {
    counters.active.fetch_add(1, Ordering::Relaxed);
    let r = siprec::call_observed(o, script, || {
        counters.connected.fetch_add(1, Ordering::Relaxed);
    })
    .await;
    counters.active.fetch_sub(1, Ordering::Relaxed);
    let key = match &r {
        Ok(rep) => {
            counters.frames_sent.fetch_add(rep.packets_sent, Ordering::Relaxed);
            counters.max_lag_ms.fetch_max(rep.max_lag_ms, Ordering::Relaxed);
            if rep.ended_by_server {
                counters.closed_early.fetch_add(1, Ordering::Relaxed);
            } else {
                counters.completed.fetch_add(1, Ordering::Relaxed);
            }
            rep.bye_status.map_or("server BYE".to_string(), |c| format!("BYE {c}"))
        }
        Err(siprec::SiprecError::Refused(why)) => {
            counters.connect_errors.fetch_add(1, Ordering::Relaxed);
            why.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
        }
        Err(e) => {
            counters.media_errors.fetch_add(1, Ordering::Relaxed);
            e.to_string()
        }
    };
    count_code(codes, key);
}

/// One WHIP publisher: counts its outcome; the "close code" is how it ended.
async fn whip_call(
    o: &whip::WhipOptions,
    script: Arc<whip::WhipScript>,
    duration: Duration,
    counters: &Counters,
    codes: &Codes,
) {
    counters.active.fetch_add(1, Ordering::Relaxed);
    let r = whip::publish(o, script, duration, || {
        counters.connected.fetch_add(1, Ordering::Relaxed);
    })
    .await;
    counters.active.fetch_sub(1, Ordering::Relaxed);
    let key = match &r {
        Ok(rep) => {
            counters.frames_sent.fetch_add(rep.packets_sent, Ordering::Relaxed);
            counters.max_lag_ms.fetch_max(rep.max_lag_ms, Ordering::Relaxed);
            if rep.ended_early {
                counters.closed_early.fetch_add(1, Ordering::Relaxed);
            } else {
                counters.completed.fetch_add(1, Ordering::Relaxed);
            }
            rep.delete_status.map_or("DELETE failed".to_string(), |c| format!("DELETE {c}"))
        }
        Err(whip::WhipError::Refused(why)) => {
            counters.connect_errors.fetch_add(1, Ordering::Relaxed);
            why.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
        }
        Err(e) => {
            counters.media_errors.fetch_add(1, Ordering::Relaxed);
            e.to_string()
        }
    };
    count_code(codes, key);
}

pub fn summary(r: &RunResult) -> String {
    let mut s = format!(
        "| metric | value |\n|---|---|\n| format | {} |\n| concurrent calls | {} |\n| call duration | {:.0} s (ramp {:.0} s) |\n| connected / completed / closed early | {} / {} / {} |\n| connect errors / media errors | {} / {} |\n| frames sent / received by server | {} / {} |\n| frames dropped / gap-filled (server) | {} / {} |\n| recorder errors / storage_error calls | {} / {} |\n| sender max lag behind real time | {} ms |\n",
        r.format, r.calls, r.duration_s, r.ramp_s, r.connected, r.completed, r.closed_early, r.connect_errors, r.media_errors,
        r.frames_sent, r.server_metrics.get("frames_received").copied().unwrap_or(0.0),
        r.server_metrics.get("frames_dropped").copied().unwrap_or(0.0),
        r.server_metrics.get("frames_gap_filled").copied().unwrap_or(0.0),
        r.server_metrics.get("recorder_errors").copied().unwrap_or(0.0),
        r.server_metrics.get("calls_storage_error").copied().unwrap_or(0.0),
        r.sender_max_lag_ms,
    );
    if let Some(u) = &r.server {
        s.push_str(&format!(
            "| server RSS baseline / peak | {:.1} MB / {:.1} MB |\n| server RSS per call | {:.0} KiB |\n| server CPU at full load | {:.2} cores ({:.3} ms CPU per call-second) |\n| server threads / fds at peak | {} / {} |\n",
            u.baseline_rss_mb, u.peak_rss_mb, u.rss_per_call_kb, u.cpu_cores_at_full_load, u.cpu_ms_per_call_second, u.threads, u.fds_at_peak
        ));
    }
    if let Some(l) = &r.live {
        let ms = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.1} ms"));
        s.push_str(&format!(
            "| overlay clients connected / errors | {} / {} |
| live messages received | {} |
| event delivery p50 / p95 | {} / {} |
| transcript final after the words, p50 / p95 | {} / {} |
| hint after the trigger words, p50 / p95 | {} / {} |
",
            l.connected,
            l.connect_errors,
            l.messages,
            ms(l.delivery_p50_ms),
            ms(l.delivery_p95_ms),
            ms(l.final_latency_p50_ms),
            ms(l.final_latency_p95_ms),
            ms(l.hint_latency_p50_ms),
            ms(l.hint_latency_p95_ms)
        ));
    }
    if let Some(slo) = &r.slo {
        s.push_str(&format!(
            "| SLO | {} |\n",
            if slo.passed { "met".to_string() } else { format!("**missed**: {}", slo.missed.join("; ")) }
        ));
    }
    s
}

impl RunResult {
    /// True when every call completed and the server lost nothing.
    pub fn clean(&self) -> bool {
        let m = |k: &str| self.server_metrics.get(k).copied().unwrap_or(0.0);
        self.connect_errors == 0
            && self.media_errors == 0
            && self.closed_early == 0
            && self.completed as usize == self.calls
            && m("recorder_errors") == 0.0
            && m("calls_storage_error") == 0.0
            && m("frames_dropped") == 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_slos_and_the_shipped_scenarios_parse() {
        let m = parse_mix("twilio=2, pcm=1,whip").unwrap();
        assert_eq!(m.iter().map(|f| format_name(*f)).collect::<Vec<_>>(), ["twilio", "twilio", "pcm", "whip"]);
        assert!(parse_mix("fax=1").unwrap_err().to_string().contains("unknown ingest path"));
        assert!(parse_mix("pcm=0").is_err());
        assert!(parse_slo("completed_min=3, live_hint_p95_ms=2000").unwrap().len() == 2);
        assert!(parse_slo("live_hint_p95_ms=fast").is_err());
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            #[derive(clap::Parser)]
            struct W {
                #[command(flatten)]
                a: RunArgs,
            }
            let mut args = <W as clap::Parser>::parse_from(["run"]).a;
            args.apply_scenario(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            assert!(args.calls > 0 && args.duration > 0.0, "{}", path.display());
            n += 1;
        }
        assert!(n >= 3);
    }
}

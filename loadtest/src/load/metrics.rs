//! The server's side of a run: its CPU and RSS sampled from /proc (with the progress
//! line), and its Prometheus metrics scraped at the end.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::args::format_name;
use super::calls::Counters;
use super::result::ServerUsage;
use crate::cli::Format;
use crate::proc_stats::{self, ProcSample};

/// Samples the server process every second and prints progress every five, until the
/// calls are done (or a minute past their planned end).
pub(super) fn spawn_sampler(
    pid: Option<u32>,
    started: Instant,
    full_until: Duration,
    counters: Arc<Counters>,
) -> tokio::task::JoinHandle<Vec<(Duration, ProcSample)>> {
    tokio::spawn(async move {
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
                let c = &counters;
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
            if counters.active.load(Ordering::Relaxed) == 0 && now > full_until {
                break;
            }
        }
        samples
    })
}

pub(super) async fn scrape(base: &str) -> Option<String> {
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

/// What the result keeps of the server's metrics text (media counters for the ingest
/// paths used, plus RTP/WHIP detail when those paths ran).
pub(super) fn server_metrics(text: &str, kinds: &[Format]) -> BTreeMap<String, f64> {
    let mut server_metrics = BTreeMap::new();
    let sources: Vec<String> = kinds.iter().map(|f| format!("source=\"{}\"", format_name(*f))).collect();
    let by_source = |name: &str, extra: &[&str]| -> f64 {
        sources
            .iter()
            .map(|src| {
                let mut must: Vec<&str> = vec![src.as_str()];
                must.extend_from_slice(extra);
                metric_sum(text, name, &must)
            })
            .sum()
    };
    server_metrics.insert("frames_received".into(), by_source("earshot_media_frames_received_total", &[]));
    server_metrics.insert("frames_dropped".into(), by_source("earshot_media_frames_dropped_total", &[]));
    server_metrics.insert("frames_gap_filled".into(), by_source("earshot_media_frames_gap_filled_total", &[]));
    server_metrics.insert("recorder_errors".into(), metric_sum(text, "earshot_errors_total", &["stage=\"recorder\""]));
    server_metrics.insert(
        "calls_storage_error".into(),
        metric_sum(text, "earshot_calls_ended_total", &["outcome=\"storage_error\""]),
    );
    server_metrics.insert("calls_completed".into(), by_source("earshot_calls_ended_total", &["outcome=\"completed\""]));
    if kinds.iter().any(|k| matches!(k, Format::Siprec)) {
        for r in ["received", "lost", "late", "duplicate", "reordered", "wrong_source", "malformed"] {
            server_metrics.insert(
                format!("rtp_{r}"),
                metric_sum(text, "earshot_rtp_packets_total", &[&format!("result=\"{r}\"")]),
            );
        }
        server_metrics.insert("rtp_timeouts".into(), metric_sum(text, "earshot_rtp_timeouts_total", &[]));
    }
    if kinds.iter().any(|k| matches!(k, Format::Whip)) {
        for r in ["received", "late", "duplicate", "reordered", "decode_error", "queue_full"] {
            server_metrics.insert(
                format!("whip_{r}"),
                metric_sum(text, "earshot_whip_packets_total", &[&format!("result=\"{r}\"")]),
            );
        }
        server_metrics
            .insert("whip_created".into(), metric_sum(text, "earshot_whip_sessions_total", &["result=\"created\""]));
        server_metrics.insert(
            "whip_deleted".into(),
            metric_sum(text, "earshot_whip_session_ends_total", &["reason=\"deleted\""]),
        );
    }
    server_metrics.insert("recorded_bytes".into(), metric_sum(text, "earshot_recorded_bytes_total", &[]));
    server_metrics.insert("ring_fill_p_gt_0_5".into(), {
        let count = metric_sum(text, "earshot_ring_fill_ratio_count", &[]);
        let le05 = metric_sum(text, "earshot_ring_fill_ratio_bucket", &["le=\"0.5\""]);
        count - le05
    });
    server_metrics
}

/// CPU and memory while every call was active (between `full_at` and `full_until`).
pub(super) fn server_usage(
    baseline: Option<ProcSample>,
    samples: &[(Duration, ProcSample)],
    full_at: Duration,
    full_until: Duration,
    calls: usize,
) -> Option<ServerUsage> {
    baseline.and_then(|b| {
        let full: Vec<&(Duration, ProcSample)> =
            samples.iter().filter(|(t, _)| *t >= full_at && *t <= full_until).collect();
        let first = full.first()?;
        let last = full.last()?;
        let peak = samples.iter().map(|(_, s)| s.rss_bytes).max().unwrap_or(0);
        let cores = proc_stats::cores_between(&first.1, &last.1);
        Some(ServerUsage {
            baseline_rss_mb: b.rss_bytes as f64 / 1e6,
            peak_rss_mb: peak as f64 / 1e6,
            rss_per_call_kb: (peak.saturating_sub(b.rss_bytes)) as f64 / 1024.0 / calls.max(1) as f64,
            cpu_cores_at_full_load: cores,
            cpu_ms_per_call_second: cores * 1000.0 / calls.max(1) as f64,
            threads: last.1.threads,
            fds_at_peak: full.iter().map(|(_, s)| s.fds).max().unwrap_or(0),
        })
    })
}

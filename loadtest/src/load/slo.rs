//! `--slo`: the thresholds a run must meet, and which of them a result missed.

use anyhow::Context;

use super::result::RunResult;

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

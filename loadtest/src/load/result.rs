//! What a run measured (`RunResult`, written as JSON) and its Markdown summary.

use std::collections::BTreeMap;

use serde::Serialize;

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

/// What `--slo` thresholds the run missed.
#[derive(Debug, Clone, Serialize)]
pub struct SloResult {
    pub passed: bool,
    pub missed: Vec<String>,
}

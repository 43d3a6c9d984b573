//! Overlay clients for load runs: each holds a `/live` websocket (a manager token sees
//! every call of the tenant) and measures what a rep's overlay would: delivery delay
//! (event `wall_ts` → received), and, on the call's own timeline, how long after the
//! words ended a `transcript.final` and a `hint` arrived (`end_ms` / `trigger.end_ms`
//! against the call's origin, `wall_ts - offset_ms`). Same clock on one machine.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::ws;

#[derive(Debug, Default)]
pub struct LiveStats {
    pub connected: u64,
    pub connect_errors: u64,
    pub messages: u64,
    pub by_type: BTreeMap<String, u64>,
    delivery_ms: Vec<f64>,
    final_ms: Vec<f64>,
    hint_ms: Vec<f64>,
}

/// What the overlay clients saw (in the run's JSON result).
#[derive(Debug, Clone, Serialize, Default)]
pub struct LiveResult {
    pub clients: usize,
    pub connected: u64,
    pub connect_errors: u64,
    pub messages: u64,
    pub by_type: BTreeMap<String, u64>,
    pub delivery_p50_ms: Option<f64>,
    pub delivery_p95_ms: Option<f64>,
    pub final_latency_p50_ms: Option<f64>,
    pub final_latency_p95_ms: Option<f64>,
    pub hint_latency_p50_ms: Option<f64>,
    pub hint_latency_p95_ms: Option<f64>,
}

/// The `q` quantile (nearest rank) of `v`.
pub fn quantile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let i = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
    Some((s[i] * 10.0).round() / 10.0)
}

impl LiveStats {
    /// Takes one message as received at `now`.
    pub fn observe(&mut self, text: &str, now: chrono::DateTime<chrono::Utc>) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else { return };
        let kind = v["type"].as_str().unwrap_or("?").to_string();
        self.messages += 1;
        *self.by_type.entry(kind.clone()).or_default() += 1;
        let Some(wall) = v["wall_ts"].as_str().and_then(|w| chrono::DateTime::parse_from_rfc3339(w).ok()) else {
            return;
        };
        let wall = wall.with_timezone(&chrono::Utc);
        let ms = |d: chrono::TimeDelta| d.num_microseconds().unwrap_or(0) as f64 / 1000.0;
        self.delivery_ms.push(ms(now - wall).max(0.0));
        let origin = wall - chrono::TimeDelta::milliseconds(v["offset_ms"].as_i64().unwrap_or(0));
        let spoken_end = match kind.as_str() {
            "transcript.final" => v["end_ms"].as_i64().map(|e| (e, &mut self.final_ms)),
            "hint" => v["trigger"]["end_ms"].as_i64().map(|e| (e, &mut self.hint_ms)),
            _ => None,
        };
        if let Some((end, into)) = spoken_end {
            into.push(ms(now - (origin + chrono::TimeDelta::milliseconds(end))).max(0.0));
        }
    }

    pub fn result(&self, clients: usize) -> LiveResult {
        LiveResult {
            clients,
            connected: self.connected,
            connect_errors: self.connect_errors,
            messages: self.messages,
            by_type: self.by_type.clone(),
            delivery_p50_ms: quantile(&self.delivery_ms, 0.5),
            delivery_p95_ms: quantile(&self.delivery_ms, 0.95),
            final_latency_p50_ms: quantile(&self.final_ms, 0.5),
            final_latency_p95_ms: quantile(&self.final_ms, 0.95),
            hint_latency_p50_ms: quantile(&self.hint_ms, 0.5),
            hint_latency_p95_ms: quantile(&self.hint_ms, 0.95),
        }
    }
}

/// One overlay client on `{base}/live` until aborted.
pub async fn watch(base: String, token: String, stats: Arc<Mutex<LiveStats>>) {
    let url = format!("{}/live?token={token}", base.trim_end_matches('/'));
    let mut c = match ws::connect(&url, &[], None).await {
        Ok(c) => {
            stats.lock().unwrap_or_else(|e| e.into_inner()).connected += 1;
            c
        }
        Err(_) => {
            stats.lock().unwrap_or_else(|e| e.into_inner()).connect_errors += 1;
            return;
        }
    };
    while let Some(Ok(m)) = c.next().await {
        if let Message::Text(t) = m {
            stats.lock().unwrap_or_else(|e| e.into_inner()).observe(t.as_str(), chrono::Utc::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_are_measured_on_the_call_timeline() {
        let mut s = LiveStats::default();
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-23T10:00:10.000Z").unwrap().with_timezone(&chrono::Utc);
        // A final stamped at 10:00:09.900, 9.9 s into the call, for words ending at 9.0 s.
        s.observe(
            r#"{"type":"transcript.final","wall_ts":"2026-11-23T10:00:09.900Z","offset_ms":9900,"end_ms":9000}"#,
            now,
        );
        s.observe(
            r#"{"type":"hint","wall_ts":"2026-11-23T10:00:09.950Z","offset_ms":9950,"trigger":{"end_ms":8500}}"#,
            now,
        );
        s.observe(r#"{"type":"hello"}"#, now);
        s.observe("not json", now);
        let r = s.result(1);
        assert_eq!(r.messages, 3);
        assert_eq!(r.final_latency_p50_ms, Some(1000.0));
        assert_eq!(r.hint_latency_p50_ms, Some(1500.0));
        assert_eq!(r.delivery_p95_ms, Some(100.0));
        assert_eq!(r.by_type["hello"], 1);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), Some(2.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}

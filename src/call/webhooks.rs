//! Post-call webhooks: `call.ended` and `scorecard` POSTed as JSON to the tenant's
//! `webhook_url`, signed, retried with exponential back-off, never on the call path.
//!
//! Signature (Stripe-style, replay-safe): header
//! `Earshot-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(webhook_secret, "<t>.<body>")>`.
//! Receivers recompute it, compare in constant time, reject a `t` older than 5 minutes,
//! and drop repeats of `Earshot-Delivery` (one id per delivery, the same on every retry).

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::{mpsc, Semaphore};

use crate::config::WebhooksConfig;
use crate::events::Event;
use crate::metrics::Metrics;

/// Concurrent HTTP requests, all tenants together.
const MAX_CONCURRENT_REQUESTS: usize = 8;

/// `t=<t>,v1=<hex>` for `body` at unix time `t`.
pub fn signature(secret: &str, t: u64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let sig: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={sig}")
}

/// Checks a signature header as a receiver should (used by tests and documented).
pub fn verify_signature(secret: &str, header: &str, body: &[u8], now: u64, tolerance: Duration) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", x)) => t = x.parse::<u64>().ok(),
            Some(("v1", x)) => v1 = Some(x.to_string()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return false };
    if now.abs_diff(t) > tolerance.as_secs() {
        return false;
    }
    let expected = signature(secret, t, body);
    let expected = expected.rsplit_once("v1=").map_or("", |(_, s)| s);
    use subtle::ConstantTimeEq;
    bool::from(expected.as_bytes().ct_eq(v1.as_bytes()))
}

struct Delivery {
    url: String,
    secret: String,
    event_type: &'static str,
    id: String,
    body: Vec<u8>,
}

#[derive(Clone)]
pub struct Webhooks {
    tx: mpsc::Sender<Delivery>,
    metrics: Metrics,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Webhooks {
    /// Starts the dispatcher on the current tokio runtime.
    pub fn start(cfg: WebhooksConfig, metrics: Metrics, tasks: &crate::shutdown::Tasks) -> Webhooks {
        let (tx, mut rx) = mpsc::channel::<Delivery>(cfg.queue);
        let m = metrics.clone();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(cfg.timeout))
            .http_status_as_error(false)
            .user_agent(concat!("earshot/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        // Deliveries in progress (incl. waiting to retry) are bounded by the queue size.
        let pending = Arc::new(Semaphore::new(cfg.queue));
        let requests = Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS));
        let jobs = tasks.clone();
        tasks.spawn_background(async move {
            while let Some(d) = rx.recv().await {
                let Ok(permit) = pending.clone().acquire_owned().await else { break };
                let (agent, requests, m, cfg) = (agent.clone(), requests.clone(), m.clone(), cfg.clone());
                jobs.spawn(async move {
                    deliver(agent, requests, m, cfg, d).await;
                    drop(permit);
                });
            }
        });
        Webhooks { tx, metrics }
    }

    /// Queues `event` for the tenant's endpoint. Never waits; a full queue drops (counted).
    pub fn enqueue(&self, url: &str, secret: &str, event: &Event) {
        let Ok(body) = serde_json::to_vec(event) else { return };
        let d = Delivery {
            url: url.to_string(),
            secret: secret.to_string(),
            event_type: event.type_name(),
            id: uuid::Uuid::new_v4().to_string(),
            body,
        };
        if self.tx.try_send(d).is_err() {
            self.metrics.webhook_deliveries.with_label_values(&["dropped"]).inc();
            tracing::warn!(call_id = %event.call_id, "webhook queue full: delivery dropped");
        }
    }
}

async fn deliver(agent: ureq::Agent, requests: Arc<Semaphore>, m: Metrics, cfg: WebhooksConfig, d: Delivery) {
    let d = Arc::new(d);
    let mut backoff = cfg.backoff;
    for attempt in 1..=cfg.max_attempts {
        let result = {
            let _slot = requests.acquire().await;
            let (agent, d) = (agent.clone(), d.clone());
            tokio::task::spawn_blocking(move || {
                let sig = signature(&d.secret, unix_now(), &d.body);
                agent
                    .post(&d.url)
                    .header("content-type", "application/json")
                    .header("earshot-event", d.event_type)
                    .header("earshot-delivery", &d.id)
                    .header("earshot-attempt", attempt.to_string())
                    .header("earshot-signature", sig)
                    .send(&d.body[..])
                    .map(|r| r.status().as_u16())
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
        };
        match result {
            Ok(status) if (200..300).contains(&status) => {
                m.webhook_deliveries.with_label_values(&["delivered"]).inc();
                tracing::debug!(url = %d.url, event = d.event_type, attempt, "webhook delivered");
                return;
            }
            other => {
                let why = match other {
                    Ok(status) => format!("HTTP {status}"),
                    Err(e) => e,
                };
                if attempt == cfg.max_attempts {
                    m.webhook_deliveries.with_label_values(&["failed"]).inc();
                    tracing::warn!(url = %d.url, event = d.event_type, attempts = attempt, error = %why, "webhook failed: giving up");
                    return;
                }
                m.webhook_deliveries.with_label_values(&["retried"]).inc();
                tracing::info!(url = %d.url, event = d.event_type, attempt, error = %why, retry_in = ?backoff, "webhook attempt failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(600));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_expire() {
        let body = br#"{"type":"call.ended"}"#;
        let h = signature("whsec-0123456789abcdef", 1_700_000_000, body);
        assert!(h.starts_with("t=1700000000,v1="));
        let tol = Duration::from_secs(300);
        assert!(verify_signature("whsec-0123456789abcdef", &h, body, 1_700_000_100, tol));
        assert!(!verify_signature("whsec-0123456789abcdef", &h, body, 1_700_000_400, tol), "too old: replay");
        assert!(!verify_signature("other-secret-0123456789", &h, body, 1_700_000_000, tol));
        assert!(!verify_signature("whsec-0123456789abcdef", &h, b"{}", 1_700_000_000, tol));
        assert!(!verify_signature("whsec-0123456789abcdef", "garbage", body, 1_700_000_000, tol));
    }
}

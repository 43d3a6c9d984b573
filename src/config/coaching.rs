//! Configuration of the live side: the `/live` websocket hub, coaching and post-call
//! webhooks. Tenant-level keys (`signing_secret`, `playbook`, `webhook_url`,
//! `webhook_secret`, `live_max_connections`) live on `TenantConfig`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A missing key takes its value from `LiveConfig::default()`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveConfig {
    /// Messages queued for one websocket client; a client further behind gets `lagged`
    /// and a snapshot instead of the events it missed.
    pub client_queue: usize,
    /// Events kept per call for clients that resume with their last `seq`.
    pub replay_events: usize,
    /// How long an ended call stays resumable (and visible in snapshots).
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Server pings this often; a client silent for three periods is dropped.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Open `/live` connections per tenant (a tenant may set `live_max_connections`).
    pub max_connections_per_tenant: usize,
    /// Cadence of `metrics` events during a call (also how often deadlines are checked).
    #[serde(with = "humantime_serde")]
    pub metrics_interval: Duration,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            client_queue: 512,
            replay_events: 1000,
            linger: Duration::from_secs(600),
            heartbeat: Duration::from_secs(15),
            max_connections_per_tenant: 200,
            metrics_interval: Duration::from_secs(2),
        }
    }
}

/// A missing key takes its value from `WebhooksConfig::default()`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Deliveries waiting or retrying, all tenants together; more are dropped (counted).
    pub queue: usize,
    /// Attempts per delivery (the first one included).
    pub max_attempts: u32,
    /// Wait before the first retry; doubles after each failure (capped at 10 min).
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// Per-attempt timeout.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self { queue: 1000, max_attempts: 6, backoff: Duration::from_secs(2), timeout: Duration::from_secs(10) }
    }
}

/// `https://…`, or `http://` to a loopback host (tests, a collector on the same machine).
pub fn webhook_url_ok(url: &str) -> bool {
    if url.starts_with("https://") && url.len() > "https://".len() {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = if let Some(h) = host.strip_prefix('[') {
        h.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_need_https_except_on_loopback() {
        assert!(webhook_url_ok("https://crm.example.com/hooks/earshot"));
        assert!(webhook_url_ok("http://127.0.0.1:9000/x"));
        assert!(webhook_url_ok("http://[::1]:9000/x"));
        assert!(webhook_url_ok("http://localhost/x"));
        assert!(!webhook_url_ok("http://crm.example.com/x"));
        assert!(!webhook_url_ok("http://127.0.0.1.evil.com/x"));
        assert!(!webhook_url_ok("ftp://127.0.0.1/"));
        assert!(!webhook_url_ok("https://"));
    }
}

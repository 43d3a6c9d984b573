//! Configuration of the live side: the `/live` websocket hub, coaching and post-call
//! webhooks. Tenant-level keys (`signing_secret`, `playbook`, `webhook_url`,
//! `webhook_secret`, `live_max_connections`) live on `TenantConfig`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveConfig {
    /// Messages queued for one websocket client; a client further behind gets `lagged`
    /// and a snapshot instead of the events it missed.
    #[serde(default = "default_client_queue")]
    pub client_queue: usize,
    /// Events kept per call for clients that resume with their last `seq`.
    #[serde(default = "default_replay_events")]
    pub replay_events: usize,
    /// How long an ended call stays resumable (and visible in snapshots).
    #[serde(default = "default_linger", with = "humantime_serde")]
    pub linger: Duration,
    /// Server pings this often; a client silent for three periods is dropped.
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Open `/live` connections per tenant (a tenant may set `live_max_connections`).
    #[serde(default = "default_max_connections")]
    pub max_connections_per_tenant: usize,
    /// Cadence of `metrics` events during a call (also how often deadlines are checked).
    #[serde(default = "default_metrics_interval", with = "humantime_serde")]
    pub metrics_interval: Duration,
}

fn default_client_queue() -> usize {
    512
}
fn default_replay_events() -> usize {
    1000
}
fn default_linger() -> Duration {
    Duration::from_secs(600)
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(15)
}
fn default_max_connections() -> usize {
    200
}
fn default_metrics_interval() -> Duration {
    Duration::from_secs(2)
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            client_queue: default_client_queue(),
            replay_events: default_replay_events(),
            linger: default_linger(),
            heartbeat: default_heartbeat(),
            max_connections_per_tenant: default_max_connections(),
            metrics_interval: default_metrics_interval(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Deliveries waiting or retrying, all tenants together; more are dropped (counted).
    #[serde(default = "default_webhook_queue")]
    pub queue: usize,
    /// Attempts per delivery (the first one included).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Wait before the first retry; doubles after each failure (capped at 10 min).
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub backoff: Duration,
    /// Per-attempt timeout.
    #[serde(default = "default_webhook_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_webhook_queue() -> usize {
    1000
}
fn default_attempts() -> u32 {
    6
}
fn default_backoff() -> Duration {
    Duration::from_secs(2)
}
fn default_webhook_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            queue: default_webhook_queue(),
            max_attempts: default_attempts(),
            backoff: default_backoff(),
            timeout: default_webhook_timeout(),
        }
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

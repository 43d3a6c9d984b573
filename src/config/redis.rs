//! `[redis]`: several Earshot nodes sharing one Redis for live-event fan-out, the call
//! registry (TTL heartbeats) and job locks. Absent: one node, everything in process.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{invalid, ConfigError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://` for TLS).
    pub url: String,
    /// This node's name in the registry and on the event stream; default: the host
    /// name. Must be unique in the cluster.
    #[serde(default)]
    pub node_id: Option<String>,
    /// Base URL other nodes send clients to (WHIP redirects), e.g.
    /// `https://earshot-2.internal:8080`; default: `http.public_url`, else the
    /// listener's address.
    #[serde(default)]
    pub advertise_url: Option<String>,
    /// Prefix of every key Earshot uses (several deployments may share a Redis).
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// Entries the event stream keeps (approximate trim): how far a node that lost
    /// Redis for a while can catch up before it needs snapshots instead.
    #[serde(default = "default_maxlen")]
    pub stream_maxlen: u64,
    /// A call's registry entry lives this long without a heartbeat; a node that dies
    /// loses its calls (`node_lost`) after about this long.
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub registry_ttl: Duration,
    /// How often registry entries are refreshed and remote calls checked.
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Lease of a job lock (retention sweep, export): renewed while the job runs; a
    /// node that dies mid-job lets another take over after it.
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub lock_lease: Duration,
    /// Events waiting to be published; beyond, they are counted as dropped and the
    /// node's calls are resent as snapshots.
    #[serde(default = "default_queue")]
    pub publish_queue: usize,
    /// Connect and command timeout.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_prefix() -> String {
    "earshot".into()
}
fn default_maxlen() -> u64 {
    100_000
}
fn default_ttl() -> Duration {
    Duration::from_secs(15)
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(5)
}
fn default_lease() -> Duration {
    Duration::from_secs(60)
}
fn default_queue() -> usize {
    10_000
}
fn default_timeout() -> Duration {
    Duration::from_secs(2)
}

impl RedisConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.url.starts_with("redis://") || self.url.starts_with("rediss://") || self.url.starts_with("unix://")) {
            return Err(invalid("redis.url", "must start with redis://, rediss:// or unix://"));
        }
        if let Some(n) = &self.node_id {
            if n.is_empty() || n.len() > 64 || !n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                return Err(invalid("redis.node_id", "1-64 characters of A-Z a-z 0-9 - _ ."));
            }
        }
        if let Some(u) = &self.advertise_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) || u.contains(['?', '#', ' ']) {
                return Err(invalid("redis.advertise_url", "must be an http(s):// base URL without query"));
            }
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains([' ', '{', '}']) {
            return Err(invalid("redis.key_prefix", "must be non-empty, without spaces or braces"));
        }
        if self.stream_maxlen < 1000 {
            return Err(invalid("redis.stream_maxlen", "must be at least 1000"));
        }
        if self.heartbeat < Duration::from_millis(100) || self.registry_ttl < self.heartbeat * 2 {
            return Err(invalid(
                "redis.registry_ttl",
                "heartbeat must be at least 100ms and registry_ttl at least twice the heartbeat",
            ));
        }
        if self.lock_lease < Duration::from_secs(1) {
            return Err(invalid("redis.lock_lease", "must be at least 1s"));
        }
        if self.publish_queue == 0 {
            return Err(invalid("redis.publish_queue", "must be at least 1"));
        }
        if self.timeout < Duration::from_millis(100) {
            return Err(invalid("redis.timeout", "must be at least 100ms"));
        }
        Ok(())
    }

    /// This node's id: configured, or the host name (sanitised).
    pub fn node(&self) -> String {
        if let Some(n) = &self.node_id {
            return n.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host: String =
            host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).take(64).collect();
        if host.is_empty() {
            "earshot".into()
        } else {
            host
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Result<RedisConfig, String> {
        let c: RedisConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn defaults_and_checks() {
        let c = cfg("url = \"redis://127.0.0.1:6379\"").unwrap();
        assert_eq!(
            (c.registry_ttl, c.heartbeat, c.stream_maxlen),
            (Duration::from_secs(15), Duration::from_secs(5), 100_000)
        );
        assert!(!c.node().is_empty());
        assert!(cfg("url = \"http://x\"").unwrap_err().contains("redis.url"));
        assert!(cfg("url = \"redis://x\"\nnode_id = \"a b\"").unwrap_err().contains("redis.node_id"));
        assert!(cfg("url = \"redis://x\"\nheartbeat = \"10s\"\nregistry_ttl = \"15s\"")
            .unwrap_err()
            .contains("registry_ttl"));
        assert!(cfg("url = \"redis://x\"\nadvertise_url = \"ftp://x\"").unwrap_err().contains("advertise_url"));
        assert!(cfg("url = \"redis://x\"\nbogus = 1").is_err());
    }
}

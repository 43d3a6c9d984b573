//! `[whip]`: WebRTC ingest over WHIP (RFC 9725) on the HTTP listener, and where its
//! ICE/DTLS-SRTP media sockets live.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{invalid, ConfigError};

/// A missing key takes its value from `WhipConfig::default()`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WhipConfig {
    /// Address the media sockets bind to. A specific address gives exactly one host
    /// candidate; `0.0.0.0` gives one per interface.
    pub ice_ip: IpAddr,
    /// UDP ports for media, `[first, last]`: one per session. `[0, 0]`: any free port.
    pub ice_ports: [u16; 2],
    /// Public addresses advertised instead of the bound one (1:1 NAT, cloud VMs).
    pub advertised_ips: Vec<IpAddr>,
    /// Concurrent WHIP sessions (also bounded by `limits.max_calls`); beyond: `503`.
    pub max_sessions: usize,
    /// A session whose ICE + DTLS do not complete within this is reaped (`ice_timeout`).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// A session that sends no audio for this long is ended (`media_timeout`).
    #[serde(with = "humantime_serde")]
    pub media_timeout: Duration,
    /// Playout delay of the jitter buffer.
    #[serde(with = "humantime_serde")]
    pub jitter_delay: Duration,
    /// `Access-Control-Allow-Origin` for browser pages calling `/whip` (`*` or one origin).
    pub allow_origin: String,
}

impl Default for WhipConfig {
    fn default() -> Self {
        Self {
            ice_ip: IpAddr::from([127, 0, 0, 1]),
            ice_ports: [0, 0],
            advertised_ips: Vec::new(),
            max_sessions: 500,
            connect_timeout: Duration::from_secs(15),
            media_timeout: Duration::from_secs(20),
            jitter_delay: Duration::from_millis(80),
            allow_origin: "*".into(),
        }
    }
}

impl WhipConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let [lo, hi] = self.ice_ports;
        if !(lo == 0 && hi == 0) && (lo < 1024 || lo > hi) {
            return Err(invalid(
                "whip.ice_ports",
                "must be [first, last] with 1024 <= first <= last, or [0, 0] for any free port",
            ));
        }
        if self.max_sessions == 0 {
            return Err(invalid("whip.max_sessions", "must be at least 1"));
        }
        if self.connect_timeout < Duration::from_secs(1) || self.media_timeout < Duration::from_secs(1) {
            return Err(invalid("whip.connect_timeout", "connect_timeout and media_timeout must be at least 1s"));
        }
        if self.jitter_delay < Duration::from_millis(20) || self.jitter_delay > Duration::from_secs(2) {
            return Err(invalid("whip.jitter_delay", "must be between 20ms and 2s"));
        }
        if self.allow_origin.is_empty() || self.allow_origin.contains(['\r', '\n', ',']) {
            return Err(invalid("whip.allow_origin", "must be \"*\" or one origin (https://dialer.example.com)"));
        }
        Ok(())
    }
}

//! `[whip]`: WebRTC ingest over WHIP (RFC 9725) on the HTTP listener, and where its
//! ICE/DTLS-SRTP media sockets live.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{invalid, ConfigError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhipConfig {
    /// Address the media sockets bind to. A specific address gives exactly one host
    /// candidate; `0.0.0.0` gives one per interface.
    #[serde(default = "default_ice_ip")]
    pub ice_ip: IpAddr,
    /// UDP ports for media, `[first, last]`: one per session. `[0, 0]`: any free port.
    #[serde(default = "default_ports")]
    pub ice_ports: [u16; 2],
    /// Public addresses advertised instead of the bound one (1:1 NAT, cloud VMs).
    #[serde(default)]
    pub advertised_ips: Vec<IpAddr>,
    /// Concurrent WHIP sessions (also bounded by `limits.max_calls`); beyond: `503`.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// A session whose ICE + DTLS do not complete within this is reaped (`ice_timeout`).
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// A session that sends no audio for this long is ended (`media_timeout`).
    #[serde(default = "default_media_timeout", with = "humantime_serde")]
    pub media_timeout: Duration,
    /// Playout delay of the jitter buffer.
    #[serde(default = "default_jitter_delay", with = "humantime_serde")]
    pub jitter_delay: Duration,
    /// `Access-Control-Allow-Origin` for browser pages calling `/whip` (`*` or one origin).
    #[serde(default = "default_origin")]
    pub allow_origin: String,
}

fn default_ice_ip() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}
fn default_ports() -> [u16; 2] {
    [0, 0]
}
fn default_max_sessions() -> usize {
    500
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(15)
}
fn default_media_timeout() -> Duration {
    Duration::from_secs(20)
}
fn default_jitter_delay() -> Duration {
    Duration::from_millis(80)
}
fn default_origin() -> String {
    "*".into()
}

impl Default for WhipConfig {
    fn default() -> Self {
        Self {
            ice_ip: default_ice_ip(),
            ice_ports: default_ports(),
            advertised_ips: Vec::new(),
            max_sessions: default_max_sessions(),
            connect_timeout: default_connect_timeout(),
            media_timeout: default_media_timeout(),
            jitter_delay: default_jitter_delay(),
            allow_origin: default_origin(),
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

//! The process's own sections: `[http]` (the listener and its TLS), `[media]` (frame
//! reordering and gaps), `[limits]`, `[shutdown]`, `[events]` and `[log]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A missing key takes its value from `HttpConfig::default()`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the one HTTP(S) listener.
    pub listen: SocketAddr,
    /// Serve HTTPS/WSS natively with this certificate and key (PEM).
    pub tls: Option<TlsConfig>,
    /// Public base URL as seen by senders (e.g. `wss://earshot.example.com`), used to
    /// check `X-Twilio-Signature` behind a proxy. Without it, the Host header is used.
    pub public_url: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { listen: "127.0.0.1:8080".parse().expect("valid literal"), tls: None, public_url: None }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// A missing key takes its value from `MediaConfig::default()`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Frames a track may run ahead of a missing frame before the gap is filled.
    pub reorder_window_frames: usize,
    /// How far one channel may run ahead of the other before the lagging one is padded.
    #[serde(with = "humantime_serde")]
    pub max_channel_skew: Duration,
    /// Longest gap filled with silence in one go (larger jumps are treated as a discontinuity).
    #[serde(with = "humantime_serde")]
    pub max_gap: Duration,
    /// A fork connection with no frame for this long is closed (`timeout`).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            reorder_window_frames: 10,
            max_channel_skew: Duration::from_millis(1000),
            max_gap: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
        }
    }
}

/// A missing key takes its value from `LimitsConfig::default()`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Concurrent calls; a fork beyond it is closed with 1013 (try again later).
    pub max_calls: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self { max_calls: 2000 }
    }
}

/// A missing key takes its value from `ShutdownConfig::default()`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// On SIGTERM/SIGINT: how long in-flight calls may go on before they are closed
    /// (`shutdown`) and their recordings finalised.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { drain_timeout: Duration::from_secs(30) }
    }
}

/// A missing key takes its value from `EventsConfig::default()`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Capacity of the in-process event bus; a subscriber further behind is told it lagged.
    pub bus_capacity: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self { bus_capacity: 4096 }
    }
}

/// A missing key takes its value from `LogConfig::default()`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `earshot=debug` (RUST_LOG wins when set).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into() }
    }
}

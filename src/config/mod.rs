//! Configuration: one TOML file, every key overridable by `EARSHOT__SECTION__KEY`
//! (tenants by id: `EARSHOT__TENANTS__<ID>__KEY`), every secret also readable from a
//! file (`<key>_file`). Loading is pure given the file text and the environment, so it
//! is unit-tested without touching the process environment.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use toml::{Table, Value};

use crate::call::is_valid_tenant_id;

mod coaching;
pub use coaching::{webhook_url_ok, LiveConfig, WebhooksConfig};
mod sip;
pub use sip::{RepStream, RtpSource, SipConfig, SipTransport, TenantSip};
mod whip;
pub use whip::WhipConfig;
mod redis;
pub use self::redis::RedisConfig;

pub const ENV_PREFIX: &str = "EARSHOT__";
/// Keys that hold secrets: they also accept `<key>_file`, and env values for them are
/// always taken as strings.
pub const SECRET_KEYS: &[&str] =
    &["fork_secret", "twilio_auth_token", "signing_secret", "webhook_secret", "secret_access_key"];
/// The well-known secret of the shipped demo tenant.
pub const DEMO_SECRET: &str = "demo";
/// The well-known token signing secret of the shipped demo tenant.
pub const DEMO_SIGNING_SECRET: &str = "demo-signing-secret-do-not-use-in-production";

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: TOML syntax error: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("key `{key}`: cannot read secret file {path}: {source}")]
    SecretFile { key: String, path: PathBuf, source: std::io::Error },
    #[error("key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub recorder: RecorderConfig,
    #[serde(default)]
    pub media: MediaConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    #[serde(default)]
    pub events: EventsConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub asr: AsrConfig,
    #[serde(default)]
    pub live: LiveConfig,
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    /// The SIP/SIPREC listener; absent: none.
    #[serde(default)]
    pub sip: Option<SipConfig>,
    /// WebRTC ingest (`POST /whip`); absent: `/whip` answers 404.
    #[serde(default)]
    pub whip: Option<WhipConfig>,
    /// Several nodes: event fan-out, call registry and job locks in Redis; absent: one
    /// node, everything in process.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsrConfig {
    /// Transcribe calls live with Whisper on this machine (off: media-only).
    #[serde(default)]
    pub enabled: bool,
    /// A model name (`tiny.en`, `base.en-q5_1`: the file `earshot model fetch NAME`
    /// puts in `model_dir`) or a path to a ggml file.
    #[serde(default = "default_model")]
    pub model: String,
    /// Where model names are looked up (and `earshot model fetch` puts them).
    #[serde(default = "default_model_dir")]
    pub model_dir: PathBuf,
    /// Inference threads; 0 = one per core.
    #[serde(default)]
    pub workers: usize,
    #[serde(default = "default_language")]
    pub language: String,
    /// Re-decode cadence while someone speaks (partials).
    #[serde(default = "default_step", with = "humantime_serde")]
    pub step: Duration,
    /// Silence that ends an utterance (final).
    #[serde(default = "default_endpoint", with = "humantime_serde")]
    pub endpoint: Duration,
    /// Overload: the most a channel's transcript may fall behind the live audio. At a
    /// quarter of it partials slow down, at half they stop, at all of it the oldest
    /// untranscribed speech is shed (counted, marked); recovery is automatic.
    #[serde(default = "default_max_lag", with = "humantime_serde")]
    pub max_lag: Duration,
    /// Post-call refinement: when the pool is idle, transcribe each finished call's
    /// recording again (whole channels, beam search) and replace `transcript.json`,
    /// keeping the live one as `transcript.live.json`. Tenants may override.
    #[serde(default)]
    pub refine: bool,
    /// Model for refinement (name or path); default: the call's live model.
    #[serde(default)]
    pub refine_model: Option<String>,
    #[serde(default = "default_refine_beam")]
    pub refine_beam: u32,
}

fn default_refine_beam() -> u32 {
    5
}

fn default_model() -> String {
    "tiny.en".into()
}
fn default_model_dir() -> PathBuf {
    PathBuf::from("models")
}
fn default_max_lag() -> Duration {
    Duration::from_secs(6)
}

/// A model setting is a name (no `/`, not ending in `.bin`) in `dir`, or a path.
pub fn model_path(model: &str, dir: &Path) -> PathBuf {
    if model.contains('/') || model.ends_with(".bin") {
        PathBuf::from(model)
    } else {
        dir.join(format!("ggml-{model}.bin"))
    }
}

impl AsrConfig {
    /// The ggml file for `model` (the tenant's, or the default).
    pub fn model_path_for(&self, model: Option<&str>) -> PathBuf {
        model_path(model.unwrap_or(&self.model), &self.model_dir)
    }
}
fn default_language() -> String {
    "en".into()
}
fn default_step() -> Duration {
    Duration::from_secs(1)
}
fn default_endpoint() -> Duration {
    Duration::from_millis(400)
}

impl Default for AsrConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            model: default_model(),
            model_dir: default_model_dir(),
            workers: 0,
            language: default_language(),
            step: default_step(),
            endpoint: default_endpoint(),
            max_lag: default_max_lag(),
            refine: false,
            refine_model: None,
            refine_beam: default_refine_beam(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the one HTTP(S) listener.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Serve HTTPS/WSS natively with this certificate and key (PEM).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Public base URL as seen by senders (e.g. `wss://earshot.example.com`), used to
    /// check `X-Twilio-Signature` behind a proxy. Without it, the Host header is used.
    #[serde(default)]
    pub public_url: Option<String>,
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:8080".parse().expect("valid literal")
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { listen: default_listen(), tls: None, public_url: None }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Local folder: the spool (calls being written or waiting for upload) and, with the
    /// local backend, the store itself.
    #[serde(default = "default_storage_dir")]
    pub dir: PathBuf,
    /// Where recordings are spooled until uploaded (default `<dir>/.spool`). The only
    /// place plain audio exists.
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// `local` (objects under `dir`) or `s3` (any S3-compatible store, see `[storage.s3]`).
    #[serde(default)]
    pub backend: StorageBackend,
    #[serde(default)]
    pub s3: Option<S3Config>,
    /// The keyring of tenant key-encryption keys (default `<dir>/.keys/keyring.toml`;
    /// in production keep it off the data volume and its backups). Created if missing.
    #[serde(default)]
    pub keyring: Option<PathBuf>,
    /// Longest wait between upload retries while the store is unavailable.
    #[serde(default = "default_upload_backoff_max", with = "humantime_serde")]
    pub upload_backoff_max: Duration,
    /// How often the retention sweeper runs.
    #[serde(default = "default_sweep_interval", with = "humantime_serde")]
    pub sweep_interval: Duration,
}

fn default_storage_dir() -> PathBuf {
    PathBuf::from("./data")
}
fn default_upload_backoff_max() -> Duration {
    Duration::from_secs(60)
}
fn default_sweep_interval() -> Duration {
    Duration::from_secs(3600)
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            dir: default_storage_dir(),
            spool_dir: None,
            backend: StorageBackend::Local,
            s3: None,
            keyring: None,
            upload_backoff_max: default_upload_backoff_max(),
            sweep_interval: default_sweep_interval(),
        }
    }
}

impl StorageConfig {
    pub fn spool_dir(&self) -> PathBuf {
        self.spool_dir.clone().unwrap_or_else(|| self.dir.join(".spool"))
    }

    pub fn keyring_path(&self) -> PathBuf {
        self.keyring.clone().unwrap_or_else(|| self.dir.join(".keys").join("keyring.toml"))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    #[default]
    Local,
    S3,
}

/// An S3-compatible object store (AWS S3, MinIO, Ceph RGW, moto…).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// e.g. `https://minio.internal:9000`; unset: AWS for `region`.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    /// Unset: taken from the standard AWS environment (`AWS_ACCESS_KEY_ID`, …).
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// `bucket.host` URLs instead of `host/bucket` (path style suits MinIO and most
    /// self-hosted stores).
    #[serde(default)]
    pub virtual_hosted: bool,
    /// Allow a plain-http endpoint (tests, or a store on loopback).
    #[serde(default)]
    pub allow_http: bool,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// Per-campaign settings of a tenant (`[tenants.campaigns.NAME]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignConfig {
    /// Record this campaign's audio, instead of the tenant's `recording`.
    #[serde(default)]
    pub recording: Option<bool>,
    #[serde(default)]
    pub retention_days: Option<u32>,
    #[serde(default)]
    pub retention_transcript_days: Option<u32>,
    #[serde(default)]
    pub retention_coaching_days: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecorderConfig {
    /// Seconds of audio the recorder's ring holds before a stalled disk ends the call
    /// as `storage_error` (at least 10).
    #[serde(default = "default_ring_seconds")]
    pub ring_seconds: u32,
    /// How often the WAV header is fixed up: what a `kill -9` can lose at most.
    #[serde(default = "default_checkpoint", with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// Recorder OS threads (disk writes never run on the async runtime).
    #[serde(default = "default_recorder_threads")]
    pub threads: usize,
    /// Also `fdatasync` at each checkpoint (survives power loss, costs IOPS).
    #[serde(default)]
    pub fsync: bool,
}

fn default_ring_seconds() -> u32 {
    10
}
fn default_checkpoint() -> Duration {
    Duration::from_secs(1)
}
fn default_recorder_threads() -> usize {
    1
}

impl Default for RecorderConfig {
    fn default() -> Self {
        Self {
            ring_seconds: default_ring_seconds(),
            checkpoint_interval: default_checkpoint(),
            threads: default_recorder_threads(),
            fsync: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// Frames a track may run ahead of a missing frame before the gap is filled.
    #[serde(default = "default_reorder_window")]
    pub reorder_window_frames: usize,
    /// How far one channel may run ahead of the other before the lagging one is padded.
    #[serde(default = "default_max_skew", with = "humantime_serde")]
    pub max_channel_skew: Duration,
    /// Longest gap filled with silence in one go (larger jumps are treated as a discontinuity).
    #[serde(default = "default_max_gap", with = "humantime_serde")]
    pub max_gap: Duration,
    /// A fork connection with no frame for this long is closed (`timeout`).
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
}

fn default_reorder_window() -> usize {
    10
}
fn default_max_skew() -> Duration {
    Duration::from_millis(1000)
}
fn default_max_gap() -> Duration {
    Duration::from_secs(5)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(15)
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            reorder_window_frames: default_reorder_window(),
            max_channel_skew: default_max_skew(),
            max_gap: default_max_gap(),
            idle_timeout: default_idle_timeout(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Concurrent calls; a fork beyond it is closed with 1013 (try again later).
    #[serde(default = "default_max_calls")]
    pub max_calls: usize,
}

fn default_max_calls() -> usize {
    2000
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self { max_calls: default_max_calls() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// On SIGTERM/SIGINT: how long in-flight calls may go on before they are closed
    /// (`shutdown`) and their recordings finalised.
    #[serde(default = "default_drain", with = "humantime_serde")]
    pub drain_timeout: Duration,
}

fn default_drain() -> Duration {
    Duration::from_secs(30)
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { drain_timeout: default_drain() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Capacity of the in-process event bus; a subscriber further behind is told it lagged.
    #[serde(default = "default_bus_capacity")]
    pub bus_capacity: usize,
}

fn default_bus_capacity() -> usize {
    4096
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self { bus_capacity: default_bus_capacity() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `earshot=debug` (RUST_LOG wins when set).
    #[serde(default = "default_log_level")]
    pub level: String,
}

fn default_log_level() -> String {
    "info".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: default_log_level() }
    }
}

/// Which Twilio track carries the rep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RepTrack {
    Inbound,
    Outbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelSide {
    Left,
    Right,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Shared secret machine forks (Twilio `token` parameter, PCM Bearer/Basic) present.
    #[serde(default)]
    pub fork_secret: Option<String>,
    /// Twilio account auth token: lets `/fork/twilio/{tenant}` accept `X-Twilio-Signature`.
    #[serde(default)]
    pub twilio_auth_token: Option<String>,
    /// Which Twilio track is the rep (the other is the customer). A stream may override
    /// it with the `rep_track` custom parameter.
    #[serde(default = "default_rep_track")]
    pub rep_track: RepTrack,
    /// Which channel of a stereo PCM fork is the rep, unless its metadata says.
    #[serde(default = "default_rep_channel")]
    pub pcm_rep_channel: ChannelSide,
    /// Record audio at all. Off: calls are still accepted (later: transcribed), no audio is written.
    #[serde(default = "default_true")]
    pub recording: bool,
    /// This tenant's Whisper model (name or path), instead of `asr.model`.
    #[serde(default)]
    pub asr_model: Option<String>,
    /// This tenant's language (`en`, `de`, …, or `auto` to detect; needs a multilingual
    /// model for anything but English), instead of `asr.language`.
    #[serde(default)]
    pub asr_language: Option<String>,
    /// Post-call refinement for this tenant, instead of `asr.refine`.
    #[serde(default)]
    pub asr_refine: Option<bool>,
    /// Signs this tenant's tokens (JWT HS256, `kid` = tenant id): live overlay, WHIP
    /// publishers, admin. No secret: no token of this tenant is accepted.
    #[serde(default)]
    pub signing_secret: Option<String>,
    /// Coaching playbook (TOML; relative paths are taken from the config file's folder).
    /// Re-read when the file changes: the next call uses the new version.
    #[serde(default)]
    pub playbook: Option<PathBuf>,
    /// Where `call.ended` and `scorecard` are POSTed after each call (https, or http to loopback).
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// HMAC-SHA256 key of the `Earshot-Signature` header on webhook requests.
    #[serde(default)]
    pub webhook_secret: Option<String>,
    /// Open `/live` connections for this tenant, instead of `live.max_connections_per_tenant`.
    #[serde(default)]
    pub live_max_connections: Option<usize>,
    /// The retention plan: days a call's audio is kept (7, 30, 90, 365 or any number).
    /// Unset: kept until deleted by hand (a warning at start-up).
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// Transcripts' retention, if not the audio's.
    #[serde(default)]
    pub retention_transcript_days: Option<u32>,
    /// Hints' and scorecards' retention, if not the audio's.
    #[serde(default)]
    pub retention_coaching_days: Option<u32>,
    /// Legal hold on every call of the tenant: nothing is deleted while set.
    #[serde(default)]
    pub legal_hold: bool,
    /// Per-campaign recording and retention overrides.
    #[serde(default)]
    pub campaigns: BTreeMap<String, CampaignConfig>,
    /// Mask card numbers (and `redact_patterns`) in the live events overlays see too,
    /// not only in what is stored (always masked).
    #[serde(default = "default_true")]
    pub redact_live: bool,
    /// More to mask, as regular expressions (e.g. national id numbers).
    #[serde(default)]
    pub redact_patterns: Vec<String>,
    /// Also silence, in the stored recording, the utterances in which something was
    /// masked (the channel that said it, for the span of that final).
    #[serde(default)]
    pub redact_audio: bool,
    /// Who may fork SIP/SIPREC calls for this tenant, and how streams map to channels.
    #[serde(default)]
    pub sip: TenantSip,
}

impl TenantConfig {
    /// Whether a call of `campaign` records audio.
    pub fn recording_for(&self, campaign: Option<&str>) -> bool {
        campaign.and_then(|c| self.campaigns.get(c)).and_then(|c| c.recording).unwrap_or(self.recording)
    }

    /// The tenant's retention policy, if it has a plan.
    pub fn retention_policy(&self) -> Option<crate::store::retention::TenantPolicy> {
        use crate::store::retention::{CampaignPolicy, KindDays, TenantPolicy};
        Some(TenantPolicy {
            days: self.retention_days?,
            kinds: KindDays { transcript: self.retention_transcript_days, coaching: self.retention_coaching_days },
            campaigns: self
                .campaigns
                .iter()
                .map(|(name, c)| {
                    let kinds =
                        KindDays { transcript: c.retention_transcript_days, coaching: c.retention_coaching_days };
                    (name.clone(), CampaignPolicy { days: c.retention_days, kinds })
                })
                .collect(),
            hold: self.legal_hold,
        })
    }
}

fn default_rep_track() -> RepTrack {
    RepTrack::Inbound
}
fn default_rep_channel() -> ChannelSide {
    ChannelSide::Left
}
fn default_true() -> bool {
    true
}

impl Config {
    /// Reads, overrides from the process environment and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::from_toml_with_env(&text, path, std::env::vars())
    }

    /// Pure core of `load`: file text plus an environment.
    pub fn from_toml_with_env(
        text: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Syntax { path: path.to_path_buf(), message: e.to_string() })?;
        let mut env: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
        env.sort();
        for (var, value) in env {
            apply_env_override(&mut table, &var, &value)?;
        }
        let base_dir = path.parent().unwrap_or(Path::new("."));
        resolve_secret_files(&mut table, "", base_dir)?;
        let mut config: Config = serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
            let key = e.path().to_string();
            invalid(if key == "." { "(root)".into() } else { key }, e.into_inner().to_string())
        })?;
        for t in &mut config.tenants {
            if let Some(p) = t.playbook.as_mut().filter(|p| p.is_relative()) {
                *p = base_dir.join(&*p);
            }
        }
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.recorder.ring_seconds < 10 {
            return Err(invalid(
                "recorder.ring_seconds",
                "must be at least 10 (seconds of audio the recorder buffers)",
            ));
        }
        if self.recorder.threads == 0 || self.recorder.threads > 64 {
            return Err(invalid("recorder.threads", "must be between 1 and 64"));
        }
        if self.recorder.checkpoint_interval < Duration::from_millis(50)
            || self.recorder.checkpoint_interval > Duration::from_secs(10)
        {
            return Err(invalid("recorder.checkpoint_interval", "must be between 50ms and 10s"));
        }
        if self.media.reorder_window_frames > 500 {
            return Err(invalid("media.reorder_window_frames", "must be at most 500 frames"));
        }
        if self.media.idle_timeout < Duration::from_millis(100) {
            return Err(invalid("media.idle_timeout", "must be at least 100ms"));
        }
        if self.asr.step < Duration::from_millis(200) || self.asr.step > Duration::from_secs(10) {
            return Err(invalid("asr.step", "must be between 200ms and 10s"));
        }
        if self.asr.endpoint < Duration::from_millis(100) || self.asr.endpoint > Duration::from_secs(5) {
            return Err(invalid("asr.endpoint", "must be between 100ms and 5s"));
        }
        let lang_ok =
            |l: &str| l == "auto" || ((2..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_lowercase()));
        if !lang_ok(&self.asr.language) {
            return Err(invalid("asr.language", "must be a Whisper language code (en, de, es, …) or \"auto\""));
        }
        for t in &self.tenants {
            t.sip.validate(&t.id)?;
            if let Some(l) = &t.asr_language {
                if !lang_ok(l) {
                    return Err(invalid(
                        format!("tenants.{}.asr_language", t.id),
                        "must be a Whisper language code (en, de, es, …) or \"auto\"",
                    ));
                }
            }
        }
        if !(1..=8).contains(&self.asr.refine_beam) {
            return Err(invalid("asr.refine_beam", "must be between 1 and 8"));
        }
        if self.asr.max_lag < Duration::from_secs(2) || self.asr.max_lag > Duration::from_secs(120) {
            return Err(invalid("asr.max_lag", "must be between 2s and 120s"));
        }
        if self.live.client_queue < 8 || self.live.replay_events < 16 {
            return Err(invalid("live.client_queue", "client_queue must be at least 8 and replay_events at least 16"));
        }
        if self.live.metrics_interval < Duration::from_millis(20) || self.live.heartbeat < Duration::from_secs(1) {
            return Err(invalid(
                "live.metrics_interval",
                "metrics_interval must be at least 20ms and heartbeat at least 1s",
            ));
        }
        if let Some(sip) = &self.sip {
            sip.validate()?;
        }
        if let Some(redis) = &self.redis {
            redis.validate()?;
        }
        if let Some(whip) = &self.whip {
            whip.validate()?;
        }
        if self.webhooks.max_attempts == 0 || self.webhooks.queue == 0 {
            return Err(invalid("webhooks.max_attempts", "max_attempts and queue must be at least 1"));
        }
        if self.storage.backend == StorageBackend::S3 {
            let Some(s3) = &self.storage.s3 else {
                return Err(invalid(
                    "storage.s3",
                    "backend = \"s3\" needs a [storage.s3] section with at least bucket",
                ));
            };
            if s3.bucket.is_empty() {
                return Err(invalid("storage.s3.bucket", "must not be empty"));
            }
            if let Some(e) = &s3.endpoint {
                if e.starts_with("http://") && !s3.allow_http {
                    return Err(invalid(
                        "storage.s3.endpoint",
                        "is plain http: set allow_http = true to accept that (loopback or tests only)",
                    ));
                }
                if !(e.starts_with("http://") || e.starts_with("https://")) {
                    return Err(invalid(
                        "storage.s3.endpoint",
                        "must start with https:// (or http:// with allow_http)",
                    ));
                }
            }
            if s3.access_key_id.is_some() != s3.secret_access_key.is_some() {
                return Err(invalid("storage.s3.secret_access_key", "access_key_id and secret_access_key go together"));
            }
        }
        if self.storage.sweep_interval < Duration::from_secs(1)
            || self.storage.upload_backoff_max < Duration::from_millis(100)
        {
            return Err(invalid(
                "storage.sweep_interval",
                "sweep_interval must be at least 1s and upload_backoff_max at least 100ms",
            ));
        }
        if self.limits.max_calls == 0 {
            return Err(invalid("limits.max_calls", "must be at least 1"));
        }
        if self.events.bus_capacity < 16 {
            return Err(invalid("events.bus_capacity", "must be at least 16"));
        }
        if let Some(url) = &self.http.public_url {
            if !(url.starts_with("ws://")
                || url.starts_with("wss://")
                || url.starts_with("http://")
                || url.starts_with("https://"))
            {
                return Err(invalid("http.public_url", "must start with ws://, wss://, http:// or https://"));
            }
        }
        let mut seen = BTreeSet::new();
        for (i, t) in self.tenants.iter().enumerate() {
            let key = format!("tenants[{i}]");
            if !is_valid_tenant_id(&t.id) {
                return Err(invalid(
                    format!("{key}.id"),
                    format!("{:?} is not a valid tenant id (1-64 of a-z, 0-9, '-', '_')", t.id),
                ));
            }
            if !seen.insert(t.id.as_str()) {
                return Err(invalid(format!("{key}.id"), format!("duplicate tenant id {:?}", t.id)));
            }
            if t.fork_secret.as_deref().is_none_or(str::is_empty) && t.twilio_auth_token.is_none() {
                return Err(invalid(
                    format!("{key}.fork_secret"),
                    format!(
                        "tenant {:?} has neither fork_secret nor twilio_auth_token: no fork could authenticate",
                        t.id
                    ),
                ));
            }
            if let Some(s) = &t.fork_secret {
                if s != DEMO_SECRET && s.len() < 16 {
                    return Err(invalid(format!("{key}.fork_secret"), "must be at least 16 characters"));
                }
            }
            if let Some(s) = &t.signing_secret {
                if s.len() < 32 {
                    return Err(invalid(
                        format!("{key}.signing_secret"),
                        "must be at least 32 characters (it signs HS256 tokens)",
                    ));
                }
            }
            match (&t.webhook_url, &t.webhook_secret) {
                (Some(url), _) if !webhook_url_ok(url) => {
                    return Err(invalid(
                        format!("{key}.webhook_url"),
                        "must be https:// (or http:// to a loopback address)",
                    ));
                }
                (Some(_), None) => {
                    return Err(invalid(
                        format!("{key}.webhook_secret"),
                        "a webhook_url needs a webhook_secret (requests are signed)",
                    ));
                }
                (_, Some(s)) if s.len() < 16 => {
                    return Err(invalid(format!("{key}.webhook_secret"), "must be at least 16 characters"));
                }
                _ => {}
            }
            let days_ok = |d: Option<u32>| d.is_none_or(|d| (1..=3650).contains(&d));
            for (k, d) in [
                ("retention_days", t.retention_days),
                ("retention_transcript_days", t.retention_transcript_days),
                ("retention_coaching_days", t.retention_coaching_days),
            ] {
                if !days_ok(d) {
                    return Err(invalid(format!("{key}.{k}"), "must be between 1 and 3650 days"));
                }
            }
            for (name, c) in &t.campaigns {
                for (k, d) in [
                    ("retention_days", c.retention_days),
                    ("retention_transcript_days", c.retention_transcript_days),
                    ("retention_coaching_days", c.retention_coaching_days),
                ] {
                    if !days_ok(d) {
                        return Err(invalid(format!("{key}.campaigns.{name}.{k}"), "must be between 1 and 3650 days"));
                    }
                }
                if t.retention_days.is_none()
                    && (c.retention_days.is_some()
                        || c.retention_transcript_days.is_some()
                        || c.retention_coaching_days.is_some())
                {
                    return Err(invalid(
                        format!("{key}.campaigns.{name}"),
                        "a campaign's retention needs the tenant's retention_days (the plan) too",
                    ));
                }
            }
            if let Err(e) = crate::call::redact::Redactor::new(&t.redact_patterns) {
                return Err(invalid(format!("{key}.redact_patterns"), format!("not a valid regular expression: {e}")));
            }
            if t.live_max_connections == Some(0) {
                return Err(invalid(format!("{key}.live_max_connections"), "must be at least 1"));
            }
        }
        Ok(())
    }

    /// Retention policies of the tenants that have a plan.
    pub fn retention_policies(&self) -> crate::store::retention::Policies {
        self.tenants.iter().filter_map(|t| Some((t.id.clone(), t.retention_policy()?))).collect()
    }

    pub fn tenant(&self, id: &str) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| t.id == id)
    }

    /// Tenants still using the well-known demo secret.
    pub fn demo_secret_tenants(&self) -> Vec<&str> {
        self.tenants
            .iter()
            .filter(|t| {
                t.fork_secret.as_deref() == Some(DEMO_SECRET)
                    || t.signing_secret.as_deref() == Some(DEMO_SIGNING_SECRET)
            })
            .map(|t| t.id.as_str())
            .collect()
    }
}

fn env_value(key: &str, raw: &str) -> Value {
    let base = key.strip_suffix("_file").unwrap_or(key);
    if SECRET_KEYS.contains(&base) {
        return Value::String(raw.to_string());
    }
    // TOML literals (numbers, booleans, arrays, quoted strings) are taken as such;
    // anything else is a plain string.
    match format!("v = {raw}").parse::<Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| Value::String(raw.to_string())),
        Err(_) => Value::String(raw.to_string()),
    }
}

fn apply_env_override(table: &mut Table, var: &str, raw: &str) -> Result<(), ConfigError> {
    let env_err = |message: String| ConfigError::Env { var: var.to_string(), message };
    let path: Vec<String> = var[ENV_PREFIX.len()..].split("__").map(str::to_ascii_lowercase).collect();
    if path.iter().any(String::is_empty) {
        return Err(env_err("empty key segment (use double underscores only between levels)".into()));
    }
    let (mut cursor, rest): (&mut Table, &[String]) = if path[0] == "tenants" {
        if path.len() < 3 {
            return Err(env_err("tenant overrides are EARSHOT__TENANTS__<ID>__<KEY>".into()));
        }
        let wanted = &path[1];
        let tenants = table.entry("tenants").or_insert_with(|| Value::Array(Vec::new()));
        let Value::Array(list) = tenants else {
            return Err(env_err("`tenants` in the file is not a list".into()));
        };
        // Env names cannot hold '-': match it as '_'.
        let norm = |s: &str| s.replace('-', "_");
        let idx =
            list.iter().position(|t| t.get("id").and_then(Value::as_str).is_some_and(|id| norm(id) == norm(wanted)));
        let idx = match idx {
            Some(i) => i,
            None => {
                let mut t = Table::new();
                t.insert("id".into(), Value::String(wanted.clone()));
                list.push(Value::Table(t));
                list.len() - 1
            }
        };
        let Value::Table(t) = &mut list[idx] else {
            return Err(env_err("tenant entry is not a table".into()));
        };
        (t, &path[2..])
    } else {
        (table, &path[..])
    };
    for (i, seg) in rest.iter().enumerate() {
        if i + 1 == rest.len() {
            cursor.insert(seg.clone(), env_value(seg, raw));
            return Ok(());
        }
        let next = cursor.entry(seg.clone()).or_insert_with(|| Value::Table(Table::new()));
        cursor = match next {
            Value::Table(t) => t,
            _ => return Err(env_err(format!("`{seg}` is not a section"))),
        };
    }
    Ok(())
}

/// Replaces every `<secret>_file = "path"` by `<secret> = <file contents, trimmed>`.
fn resolve_secret_files(table: &mut Table, prefix: &str, base_dir: &Path) -> Result<(), ConfigError> {
    let keys: Vec<String> = table.keys().cloned().collect();
    for key in keys {
        let full = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        if let Some(base) = key.strip_suffix("_file").filter(|b| SECRET_KEYS.contains(b)) {
            let Some(Value::String(p)) = table.get(&key) else {
                return Err(invalid(full, "must be a path string"));
            };
            if table.contains_key(base) {
                return Err(invalid(full, format!("give either `{base}` or `{key}`, not both")));
            }
            let path = base_dir.join(p);
            let secret = std::fs::read_to_string(&path).map_err(|source| ConfigError::SecretFile {
                key: full.clone(),
                path: path.clone(),
                source,
            })?;
            table.remove(&key);
            table.insert(base.to_string(), Value::String(secret.trim_end_matches(['\n', '\r']).to_string()));
            continue;
        }
        match table.get_mut(&key) {
            Some(Value::Table(t)) => resolve_secret_files(t, &full, base_dir)?,
            Some(Value::Array(list)) => {
                for (i, item) in list.iter_mut().enumerate() {
                    if let Value::Table(t) = item {
                        resolve_secret_files(t, &format!("{full}[{i}]"), base_dir)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_setting_is_a_name_or_a_path() {
        assert_eq!(model_path("base.en", Path::new("m")), PathBuf::from("m/ggml-base.en.bin"));
        assert_eq!(model_path("/x/y.bin", Path::new("m")), PathBuf::from("/x/y.bin"));
        assert_eq!(model_path("my-model.bin", Path::new("m")), PathBuf::from("my-model.bin"));
    }

    const BASE: &str = r#"
[http]
listen = "127.0.0.1:8080"

[[tenants]]
id = "demo"
fork_secret = "demo"

[[tenants]]
id = "acme-sales"
fork_secret = "0123456789abcdef0123"
"#;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(
            text,
            Path::new("/nonexistent/earshot.toml"),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_fill_in() {
        let c = load(BASE, &[]).unwrap();
        assert_eq!(c.storage.dir, PathBuf::from("./data"));
        assert_eq!(c.recorder.ring_seconds, 10);
        assert_eq!(c.tenants[0].rep_track, RepTrack::Inbound);
        assert!(c.tenants[1].recording);
        assert_eq!(c.demo_secret_tenants(), vec!["demo"]);
    }

    #[test]
    fn env_overrides_sections_and_tenants_by_id() {
        let c = load(
            BASE,
            &[
                ("EARSHOT__HTTP__LISTEN", "127.0.0.1:18080"),
                ("EARSHOT__STORAGE__DIR", "/var/lib/earshot"),
                ("EARSHOT__RECORDER__RING_SECONDS", "20"),
                ("EARSHOT__SHUTDOWN__DRAIN_TIMEOUT", "5s"),
                ("EARSHOT__TENANTS__ACME_SALES__RECORDING", "false"),
                ("EARSHOT__TENANTS__DEMO__FORK_SECRET", "12345678901234567890"),
                ("EARSHOT__TENANTS__NEWCO__FORK_SECRET", "abcdefabcdefabcdef"),
                ("OTHER_VAR", "ignored"),
            ],
        )
        .unwrap();
        assert_eq!(c.http.listen.port(), 18080);
        assert_eq!(c.storage.dir, PathBuf::from("/var/lib/earshot"));
        assert_eq!(c.recorder.ring_seconds, 20);
        assert_eq!(c.shutdown.drain_timeout, Duration::from_secs(5));
        assert!(!c.tenant("acme-sales").unwrap().recording);
        // A numeric-looking secret stays a string.
        assert_eq!(c.tenant("demo").unwrap().fork_secret.as_deref(), Some("12345678901234567890"));
        assert!(c.tenant("newco").is_some());
    }

    #[test]
    fn errors_name_the_offending_key() {
        let e = load("[http]\nlisten = 5\n", &[]).unwrap_err().to_string();
        assert!(e.contains("http.listen"), "{e}");
        let e = load("[http]\nlisen = \"x\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("lisen"), "{e}");
        let e = load(&format!("{BASE}\n[[tenants]]\nid = \"demo\"\nfork_secret = \"demo\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("tenants[2].id") && e.contains("duplicate"), "{e}");
        let e = load("[[tenants]]\nid = \"x\"\nfork_secret = \"demo\"\nrep_track = \"sideways\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("tenants[0].rep_track"), "{e}");
        let e = load("[recorder]\nring_seconds = 3\n", &[]).unwrap_err().to_string();
        assert!(e.contains("recorder.ring_seconds") && e.contains("at least 10"), "{e}");
        let e = load("[shutdown]\ndrain_timeout = \"soon\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("shutdown.drain_timeout"), "{e}");
        let e = load("[[tenants]]\nid = \"x\"\nfork_secret = \"short\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("tenants[0].fork_secret") && e.contains("16"), "{e}");
        let e = load("[[tenants]]\nid = \"Bad/Id\"\nfork_secret = \"demo\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("tenants[0].id"), "{e}");
        let e = load("[http\n", &[]).unwrap_err().to_string();
        assert!(e.contains("syntax"), "{e}");
        let e = load(BASE, &[("EARSHOT__HTTP____LISTEN", "x")]).unwrap_err().to_string();
        assert!(e.contains("EARSHOT__HTTP____LISTEN"), "{e}");
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret.txt"), "from-a-file-0123456789\n").unwrap();
        let cfg_path = dir.path().join("earshot.toml");
        let text = "[[tenants]]\nid = \"acme\"\nfork_secret_file = \"secret.txt\"\n";
        let c = Config::from_toml_with_env(text, &cfg_path, std::iter::empty()).unwrap();
        assert_eq!(c.tenants[0].fork_secret.as_deref(), Some("from-a-file-0123456789"));
        // Via env too, by tenant id.
        let c = Config::from_toml_with_env(
            "[[tenants]]\nid = \"acme\"\nfork_secret = \"demo\"\n",
            &cfg_path,
            [(
                "EARSHOT__TENANTS__ACME__TWILIO_AUTH_TOKEN_FILE".to_string(),
                dir.path().join("secret.txt").display().to_string(),
            )],
        )
        .unwrap();
        assert_eq!(c.tenants[0].twilio_auth_token.as_deref(), Some("from-a-file-0123456789"));
        let e = Config::from_toml_with_env(
            "[[tenants]]\nid = \"a\"\nfork_secret_file = \"missing\"\n",
            &cfg_path,
            std::iter::empty(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("tenants[0].fork_secret_file"), "{e}");
    }

    #[test]
    fn shipped_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/earshot.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let c = Config::from_toml_with_env(&text, &path, std::iter::empty()).unwrap();
        assert_eq!(c.demo_secret_tenants(), vec!["demo"]);
        assert!(c.http.listen.ip().is_loopback());
    }
}

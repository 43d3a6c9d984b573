//! Configuration: one TOML file, every key overridable by `EARSHOT__SECTION__KEY`
//! (tenants by id: `EARSHOT__TENANTS__<ID>__KEY`), every secret also readable from a
//! file (`<key>_file`). Loading is pure given the file text and the environment, so it
//! is unit-tested without touching the process environment.
//!
//! This module is the `Config` root; each section lives in its own file (`server`,
//! `storage`, `asr`, `tenant`, `coaching`, `sip`, `whip`, `redis`), reading the file
//! and the environment in `load`, and the cross-field checks in `validate`. A section
//! whose keys all have defaults is `#[serde(default)]`: a missing key takes its value
//! from the section's `impl Default`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

mod asr;
pub use asr::{model_path, AsrConfig};
mod coaching;
pub use coaching::{webhook_url_ok, LiveConfig, WebhooksConfig};
mod load;
mod redis;
pub use self::redis::RedisConfig;
mod server;
pub use server::{EventsConfig, HttpConfig, LimitsConfig, LogConfig, MediaConfig, ShutdownConfig, TlsConfig};
mod sip;
pub use sip::{RepStream, RtpSource, SipConfig, SipTransport, TenantSip};
mod storage;
pub use storage::{RecorderConfig, S3Config, StorageBackend, StorageConfig};
mod tenant;
pub use tenant::{CampaignConfig, ChannelSide, RepTrack, TenantConfig};
mod validate;
mod whip;
pub use whip::WhipConfig;

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

impl Config {
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

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

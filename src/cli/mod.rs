//! The `earshot` command line: the top-level clap types, and the helpers the command
//! groups share (config path, runtimes, the store and the operator audit log).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use earshot::config::Config;

pub mod calls;
pub mod config;
pub mod keys;
pub mod model;
pub mod privacy;
#[cfg(feature = "asr")]
pub mod realtime;
pub mod retention;
pub mod serve;
pub mod token;
#[cfg(feature = "asr")]
pub mod transcribe;

#[derive(Parser)]
#[command(name = "earshot", version, about = "Self-hosted real-time telephony sidecar")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the server (HTTP/WSS listener, fork endpoints, recorder).
    Serve {
        /// Config file (default: config/earshot.toml in the working directory).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Allow the demo tenant's well-known secret on a non-loopback address.
        #[arg(long)]
        allow_demo_secrets: bool,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: config::ConfigCommand,
    },
    /// Stream a WAV file into a running server as a fork, at real-time pace.
    Replay(earshot_loadtest::cli::ReplayArgs),
    /// Run a WAV file through the live transcription path; print events as JSON lines.
    #[cfg(feature = "asr")]
    Transcribe(transcribe::TranscribeArgs),
    /// Encryption keys: list versions, rotate, destroy (crypto-shredding).
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Erase every call of a data subject (phone number, email or participant id).
    Erase {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        subject: String,
    },
    /// Export a subject's calls (or the whole tenant's) as a ZIP, decrypted.
    Export {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        tenant: String,
        /// Without it: every call of the tenant.
        #[arg(long)]
        subject: Option<String>,
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Put a call under legal hold, or release it (a pending erasure then runs).
    Hold {
        #[arg(long, short)]
        config: Option<PathBuf>,
        call_id: String,
        #[arg(long, required_unless_present = "release")]
        reason: Option<String>,
        #[arg(long)]
        release: bool,
    },
    /// Print a tenant's audit log (JSON lines).
    Audit {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        tenant: String,
        /// RFC 3339 time or YYYY-MM-DD (default: 90 days ago).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        action: Option<String>,
    },
    /// Retention: what is due for deletion, and deleting it.
    Retention {
        #[command(subcommand)]
        command: retention::RetentionCommand,
    },
    /// Whisper models: import and check.
    Model {
        #[command(subcommand)]
        command: model::ModelCommand,
    },
    /// Read stored calls back.
    Calls {
        #[command(subcommand)]
        command: calls::CallsCommand,
    },
    /// Tokens for the live overlay, WHIP publishers and admins.
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
    },
}

pub fn default_config_path(p: Option<PathBuf>) -> PathBuf {
    p.unwrap_or_else(|| PathBuf::from("config/earshot.toml"))
}

pub fn tokio_main<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?.block_on(f)
}

/// Runs storage work from the synchronous CLI.
pub fn run_async<T>(
    f: impl std::future::Future<Output = Result<T, earshot::store::objects::StorageError>>,
) -> anyhow::Result<T> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(f)?)
}

pub fn open_store(config: Option<PathBuf>) -> anyhow::Result<(Config, earshot::store::objects::Store)> {
    let c = Config::load(&default_config_path(config))?;
    let store = earshot::store::objects::Store::open(&c.storage)?;
    Ok((c, store))
}

/// An audit entry for an operator's action from the command line.
pub async fn operator_audit(
    store: &earshot::store::objects::Store,
    tenant: &str,
    action: &str,
    target: Option<String>,
    detail: serde_json::Value,
) -> Result<(), earshot::store::objects::StorageError> {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let e = earshot::store::privacy::AuditEntry {
        at: chrono::Utc::now(),
        tenant: tenant.into(),
        actor: format!("operator:{user}"),
        action: action.into(),
        target,
        addr: Some("cli".into()),
        detail,
    };
    earshot::store::privacy::audit(store, &e).await
}

pub fn parse_at(s: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .with_context(|| format!("{s:?}: not an RFC 3339 time or YYYY-MM-DD date"))?;
    Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
}

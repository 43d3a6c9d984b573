//! `[storage]` (the spool, the local or S3 object store, the keyring, upload and sweep
//! cadence) and `[recorder]` (the recorder threads that write the spool).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A missing key takes its value from `StorageConfig::default()`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Local folder: the spool (calls being written or waiting for upload) and, with the
    /// local backend, the store itself.
    pub dir: PathBuf,
    /// Where recordings are spooled until uploaded (default `<dir>/.spool`). The only
    /// place plain audio exists.
    pub spool_dir: Option<PathBuf>,
    /// `local` (objects under `dir`) or `s3` (any S3-compatible store, see `[storage.s3]`).
    pub backend: StorageBackend,
    pub s3: Option<S3Config>,
    /// The keyring of tenant key-encryption keys (default `<dir>/.keys/keyring.toml`;
    /// in production keep it off the data volume and its backups). Created if missing.
    pub keyring: Option<PathBuf>,
    /// Longest wait between upload retries while the store is unavailable.
    #[serde(with = "humantime_serde")]
    pub upload_backoff_max: Duration,
    /// How often the retention sweeper runs.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("./data"),
            spool_dir: None,
            backend: StorageBackend::Local,
            s3: None,
            keyring: None,
            upload_backoff_max: Duration::from_secs(60),
            sweep_interval: Duration::from_secs(3600),
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

/// A missing key takes its value from `RecorderConfig::default()`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecorderConfig {
    /// Seconds of audio the recorder's ring holds before a stalled disk ends the call
    /// as `storage_error` (at least 10).
    pub ring_seconds: u32,
    /// How often the WAV header is fixed up: what a `kill -9` can lose at most.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// Recorder OS threads (disk writes never run on the async runtime).
    pub threads: usize,
    /// Also `fdatasync` at each checkpoint (survives power loss, costs IOPS).
    pub fsync: bool,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        Self { ring_seconds: 10, checkpoint_interval: Duration::from_secs(1), threads: 1, fsync: false }
    }
}

//! Where calls live on disk, and the reader tests and tools use to get them back.
//!
//! Layout under the storage root: `<tenant>/<yyyy>/<mm>/<dd>/<call_id>/` holding
//! `audio.wav` and `manifest.json` (later `transcript.json`, `hints.json`,
//! `scorecard.json`). Calls being written have a marker in `.inflight/` so a restart
//! after a crash finds them without walking the whole tree. Read recordings through
//! `StoreReader`, never by opening files: encryption at rest will change the bytes.

use std::path::{Path, PathBuf};

use chrono::{Datelike, Utc};
use thiserror::Error;

use crate::call::CallId;
use crate::store::manifest::{AudioInfo, Manifest};
use crate::store::wav;

pub const AUDIO_FILE: &str = "audio.wav";
pub const INFLIGHT_DIR: &str = ".inflight";

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("call {0} not found")]
    NotFound(CallId),
    #[error("call {0} has no recording")]
    NoRecording(CallId),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

#[derive(Debug, Clone)]
pub struct StoreLayout {
    root: PathBuf,
}

impl StoreLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<tenant>/<yyyy>/<mm>/<dd>/<call_id>` relative to the root (date from the UUIDv7).
    pub fn relative_call_dir(tenant: &str, call_id: CallId) -> PathBuf {
        let at = call_id.created_at().unwrap_or_else(Utc::now);
        PathBuf::from(tenant)
            .join(format!("{:04}", at.year()))
            .join(format!("{:02}", at.month()))
            .join(format!("{:02}", at.day()))
            .join(call_id.to_string())
    }

    pub fn call_dir(&self, tenant: &str, call_id: CallId) -> PathBuf {
        self.root.join(Self::relative_call_dir(tenant, call_id))
    }

    pub fn inflight_dir(&self) -> PathBuf {
        self.root.join(INFLIGHT_DIR)
    }

    pub fn inflight_marker(&self, call_id: CallId) -> PathBuf {
        self.inflight_dir().join(call_id.to_string())
    }

    /// True when a probe file can be created and removed under the root.
    pub fn is_writable(&self) -> bool {
        let probe = self.root.join(format!(".probe-{}", std::process::id()));
        let ok = std::fs::write(&probe, b"ok").is_ok();
        let _ = std::fs::remove_file(&probe);
        ok
    }
}

/// Decoded audio of a stored call.
#[derive(Debug, Clone)]
pub struct Recording {
    pub sample_rate: u32,
    pub channels: u16,
    /// Interleaved samples.
    pub samples: Vec<i16>,
}

impl Recording {
    pub fn frames(&self) -> usize {
        self.samples.len() / self.channels.max(1) as usize
    }

    pub fn duration_ms(&self) -> u64 {
        self.frames() as u64 * 1000 / self.sample_rate.max(1) as u64
    }

    pub fn channel(&self, ch: usize) -> Vec<i16> {
        self.samples.iter().skip(ch).step_by(self.channels.max(1) as usize).copied().collect()
    }
}

#[cfg(feature = "server")]
pub use crate::store::objects::StoreReader;

/// A call found open after a crash and closed again.
#[derive(Debug, Clone)]
pub struct RecoveredCall {
    pub call_id: CallId,
    pub source: crate::call::Source,
    pub dir: PathBuf,
    pub audio_bytes: Option<u64>,
}

/// Closes every call left open by a crash: repairs its WAV header, marks its manifest
/// `recovered_after_crash`, removes its in-flight marker. Blocking IO: run at start-up.
pub fn recover_inflight(layout: &StoreLayout) -> Vec<Result<RecoveredCall, StoreError>> {
    let dir = layout.inflight_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let marker = entry.path();
        let Some(call_id) = entry.file_name().to_str().and_then(CallId::parse) else {
            continue;
        };
        out.push(recover_one(layout, call_id, &marker));
    }
    out
}

fn recover_one(layout: &StoreLayout, call_id: CallId, marker: &Path) -> Result<RecoveredCall, StoreError> {
    let rel = std::fs::read_to_string(marker).map_err(io_err(marker))?;
    let rel = rel.trim();
    if rel.is_empty() || rel.contains("..") {
        return Err(StoreError::Corrupt { path: marker.to_path_buf(), detail: "bad marker".into() });
    }
    let dir = layout.root().join(rel);
    let mut manifest = Manifest::read_from_dir(&dir)
        .map_err(|e| StoreError::Corrupt { path: dir.join("manifest.json"), detail: e.to_string() })?;
    let audio_path = dir.join(AUDIO_FILE);
    let mut audio_bytes = None;
    let mut ended_at = manifest.started_at;
    if audio_path.exists() {
        let repaired = wav::repair(&audio_path).map_err(io_err(&audio_path))?;
        let frames = repaired.data_bytes / (2 * repaired.channels as u64);
        let duration_ms = frames * 1000 / repaired.sample_rate.max(1) as u64;
        ended_at = manifest.started_at + chrono::Duration::milliseconds(duration_ms as i64);
        manifest.audio = Some(AudioInfo {
            file: AUDIO_FILE.into(),
            format: "wav/pcm_s16le".into(),
            sample_rate: repaired.sample_rate,
            channels: repaired.channels,
            frames,
            duration_ms,
            bytes: repaired.data_bytes + wav::HEADER_LEN,
        });
        audio_bytes = Some(repaired.data_bytes);
    }
    if manifest.outcome.is_none() {
        manifest.ended_at = Some(ended_at);
        manifest.outcome = Some("recovered_after_crash".into());
    }
    manifest.write_to_dir(&dir).map_err(io_err(&dir))?;
    std::fs::remove_file(marker).map_err(io_err(marker))?;
    Ok(RecoveredCall { call_id, source: manifest.source, dir, audio_bytes })
}

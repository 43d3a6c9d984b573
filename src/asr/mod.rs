//! Speech recognition: Whisper models (import, validation, loading). The model-file
//! work is pure Rust; running whisper.cpp needs the `asr` feature.

#[cfg(feature = "asr")]
pub mod engine;
#[cfg(feature = "asr")]
pub mod file_stream;
pub mod guard;
pub mod hypothesis;
pub mod mel;
pub mod model;
pub mod overload;
pub mod stream_policy;
pub mod vad;

// The runtime: the hub, its scheduler and whisper worker threads, the transcript file,
// and post-call refinement.
#[cfg(all(feature = "asr", feature = "server"))]
pub mod hub;
#[cfg(all(feature = "asr", feature = "server"))]
pub mod refine;
#[cfg(all(feature = "asr", feature = "server"))]
mod scheduler;
#[cfg(all(feature = "asr", feature = "server"))]
pub mod settings;
#[cfg(all(feature = "asr", feature = "server"))]
mod transcript_file;
#[cfg(all(feature = "asr", feature = "server"))]
mod workers;

use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Format(String),
    #[error("{path}: {detail}")]
    InFile { path: PathBuf, detail: String },
    #[error("{path}: whisper.cpp could not load it: {detail}")]
    Load { path: PathBuf, detail: String },
    #[error("transcription failed: {0}")]
    Inference(String),
    #[error("decode aborted")]
    Aborted,
}

impl ModelError {
    /// Names the file a format error was found in.
    pub fn in_file(self, path: &Path) -> ModelError {
        match self {
            ModelError::Format(detail) => ModelError::InFile { path: path.to_path_buf(), detail },
            other => other,
        }
    }
}

/// Checks a ggml model file completely before it is handed to whisper.cpp.
pub fn check_model_file(path: &Path) -> Result<model::ggml::GgmlSummary, ModelError> {
    let buf = std::fs::read(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })?;
    model::ggml::check(&buf).map_err(|e| e.in_file(path))
}

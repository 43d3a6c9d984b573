//! What can go wrong reading or writing the store (object store, keyring, spool).

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::call::CallId;
use crate::store::crypt::CryptError;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("call {0} not found")]
    NotFound(CallId),
    #[error("call {0} has no {1}")]
    NoObject(CallId, String),
    #[error("call {0} was deleted (tombstone)")]
    Erased(CallId),
    #[error("{path}: {detail}")]
    Crypt { path: String, detail: CryptError },
    #[error("object store: {0}")]
    Backend(#[from] object_store::Error),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("keyring {path}: {detail}")]
    Keyring { path: PathBuf, detail: String },
    #[error("{0}: corrupt: {1}")]
    Corrupt(String, String),
    #[error("storage config: {0}")]
    Config(String),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io { path: path.to_path_buf(), source }
}

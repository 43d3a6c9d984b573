//! Store: where a call's audio and text live. The spool layout and crash recovery, the
//! WAV format and the recorder threads that write it, the manifest, encryption at rest,
//! the object store (local or S3) and the uploader that fills it, the retention plan
//! and its sweeper, and the privacy jobs (erasure, export, holds, audit).

pub mod crypt;
pub mod manifest;
pub mod retention;
pub mod spool;
pub mod wav;

#[cfg(feature = "server")]
pub mod error;
#[cfg(feature = "server")]
pub mod holds;
#[cfg(feature = "server")]
pub mod keyring;
#[cfg(feature = "server")]
pub mod objects;
#[cfg(feature = "server")]
pub mod privacy;
#[cfg(feature = "server")]
pub mod reader;
#[cfg(feature = "server")]
pub mod recorder;
#[cfg(feature = "server")]
pub mod sweep;
#[cfg(feature = "server")]
pub mod sweeper;
#[cfg(feature = "server")]
pub mod uploader;

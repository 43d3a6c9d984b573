//! Recording: the WAV format (pure std IO) and, with the `server` feature, the recorder
//! threads that drain per-call rings to disk.

#[cfg(feature = "server")]
pub mod pool;
pub mod wav;

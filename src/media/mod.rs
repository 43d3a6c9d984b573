//! Media cores: codecs, reordering, channel alignment, and (with `server`) resampling
//! and the recogniser feed. Pure except where noted.

pub mod channel_aligner;
pub mod g711;
pub mod jitter;
#[cfg(feature = "server")]
pub mod recogniser;
#[cfg(feature = "server")]
pub mod recogniser_feed;
pub mod reorder_buffer;
pub mod rtp;

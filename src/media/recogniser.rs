//! The seam the speech recogniser plugs into: when a call starts, a registered
//! `RecogniserHub` receives one `RecogniserTap` (16 kHz mono f32 SPSC ring) per channel.
//! The call's task feeds the rings and never waits on them; audio the recogniser is too
//! late for is skipped and counted. With no hub registered, no ring is created and no
//! audio is decoded for it (media-only deployments).

use std::sync::Arc;

use crate::call::owner::CallHandle;
use crate::call::CallInfo;
use crate::media::recogniser_feed::{FeedDrops, RecogniserTap};

pub trait RecogniserHub: Send + Sync + 'static {
    /// A call started: `taps[i]` carries channel `i` of `call.layout` (rep, customer).
    /// Transcript updates and voice edges go to the call's `owner`, which numbers them in
    /// the call's own `seq`; the recogniser keeps the handle until the call's last words
    /// are transcribed and saved (the scorecard waits for that).
    fn attach(&self, call: &CallInfo, taps: Vec<RecogniserTap>, drops: Arc<FeedDrops>, owner: CallHandle);

    /// Shutdown: wait (blocking, at most `limit`) until every ended call's last words
    /// are transcribed and saved.
    fn drain(&self, limit: std::time::Duration) {
        let _ = limit;
    }
}

/// Ring sizing for recogniser feeds.
#[derive(Debug, Clone, Copy)]
pub struct FeedSettings {
    /// Capacity of each channel's ring.
    pub ring_seconds: f32,
    /// The tap skips audio older than this when it reads (live transcription wants the newest).
    pub max_lag_seconds: f32,
}

impl Default for FeedSettings {
    fn default() -> Self {
        Self { ring_seconds: 30.0, max_lag_seconds: 20.0 }
    }
}

//! What the WHIP endpoint and its calls share: the session and call tables, the
//! messages sessions send their call, and why a session ended.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize};
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::call::Outcome;
use crate::media::rtp::RtpHeader;

/// The call's sample rate: Opus is decoded straight to what the recogniser takes.
pub const RATE: u32 = 16_000;

/// WHIP's shared state: sessions by id, calls by (tenant, call key).
#[derive(Default)]
pub struct WhipState {
    pub(crate) sessions: Mutex<HashMap<String, SessionEntry>>,
    pub(crate) calls: Mutex<HashMap<(String, String), CallEntry>>,
    pub(crate) active: AtomicUsize,
    pub(crate) next_port: AtomicU32,
}

pub(crate) struct SessionEntry {
    pub tenant: String,
    pub stop: CancellationToken,
}

/// A call some sessions publish into. Changed only under `WhipState::calls`.
pub(crate) struct CallEntry {
    pub tx: mpsc::Sender<CallMsg>,
    /// Channels (rep, customer) a live session fills.
    pub taken: [bool; 2],
    /// Sessions joined and not yet left; the call ends when this reaches 0.
    pub legs: usize,
    /// Stops every session of the call (the call task ends it on a storage failure).
    pub stop: CancellationToken,
}

pub enum CallMsg {
    /// A decoded frame of channel `ch` (0 = rep, 1 = customer) that arrived at `at`.
    Frame { ch: usize, header: RtpHeader, samples: Vec<i16>, at: Instant },
    /// A session's ICE and DTLS completed: the call records from now on.
    Connected,
    /// A session ended (or never started).
    Left { channels: Vec<usize>, end: LegEnd },
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegEnd {
    Deleted,
    MediaTimeout,
    IceTimeout,
    IceFailed,
    DtlsFailed,
    /// The peer closed or went away after connecting.
    Closed,
    Shutdown,
    /// Refused or failed before it was answered (counted by the refusal).
    Failed,
}

impl LegEnd {
    pub fn label(&self) -> &'static str {
        match self {
            LegEnd::Deleted => "deleted",
            LegEnd::MediaTimeout => "media_timeout",
            LegEnd::IceTimeout => "ice_timeout",
            LegEnd::IceFailed => "ice_failed",
            LegEnd::DtlsFailed => "dtls_failed",
            LegEnd::Closed => "closed",
            LegEnd::Shutdown => "shutdown",
            LegEnd::Failed => "closed",
        }
    }

    pub fn outcome(&self) -> Outcome {
        match self {
            LegEnd::Deleted | LegEnd::Closed | LegEnd::Failed => Outcome::Completed,
            LegEnd::MediaTimeout | LegEnd::IceTimeout => Outcome::Timeout,
            LegEnd::IceFailed => Outcome::ClientError("ice_failed"),
            LegEnd::DtlsFailed => Outcome::ClientError("dtls_failed"),
            LegEnd::Shutdown => Outcome::Shutdown,
        }
    }
}

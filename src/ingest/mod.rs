//! Ingest: every way a call's audio reaches Earshot, each protocol in its own folder
//! with its pure core (parsing, message order, authentication checks: bytes in,
//! decisions out) beside its IO shell (the websocket, SIP or WebRTC endpoint that owns
//! the connection). Everything after ingest is protocol-agnostic: a `CallInfo` and
//! timestamped audio in the call's fixed layout, handed to `call::session`.

pub mod error;
mod lenient;
pub mod pcm;
pub mod sip;
pub mod twilio;
pub mod whip;

#[cfg(feature = "server")]
pub mod fork;
#[cfg(feature = "server")]
pub mod fork_auth;

pub use error::{close_code, IngestError, MAX_FRAME_BYTES};

//! Twilio (and Telnyx) Media Streams: the message parser and order checks, the
//! per-track reorder and alignment, the signature check, and the websocket endpoint.

pub mod protocol;
pub mod signature;
pub mod tracks;

#[cfg(feature = "server")]
pub mod socket;

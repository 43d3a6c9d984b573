//! WHIP (RFC 9725) from browsers: what a session asks for (pure), the HTTP endpoint
//! with ICE/DTLS-SRTP from the `webrtc` crate, and the call that joins a call key's
//! sessions into one stereo call.

pub mod request;

#[cfg(feature = "server")]
pub mod call;
#[cfg(feature = "server")]
pub mod endpoint;
#[cfg(feature = "server")]
pub mod registry;
#[cfg(feature = "server")]
mod session;

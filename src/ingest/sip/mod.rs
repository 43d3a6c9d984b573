//! SIP and SIPREC ingest cores (pure): what Earshot accepts, how bodies are read,
//! and how offered streams map to channels. The transport, transaction and dialog
//! layers come from `rsipstack`; `listener`, `call`, `media` and `rtp_receiver` are the
//! IO shell.

pub mod digest;
pub mod invite;
pub mod multipart;
#[cfg(feature = "sip-msg")]
pub mod request;
pub mod rsmeta;
pub mod sdp;

#[cfg(feature = "server")]
pub mod call;
#[cfg(feature = "server")]
mod decoders;
#[cfg(feature = "server")]
pub mod dialog;
#[cfg(feature = "server")]
pub mod listener;
#[cfg(feature = "server")]
mod media;

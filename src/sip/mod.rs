//! SIP and SIPREC ingest cores (pure): what Earshot accepts, how bodies are read,
//! and how offered streams map to channels. The transport, transaction and dialog
//! layers come from `rsipstack` (see `server::sip`).

pub mod invite;
pub mod multipart;
pub mod rsmeta;
pub mod sdp;

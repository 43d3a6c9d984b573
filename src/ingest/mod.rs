//! Ingest protocol cores: what each fork speaks, parsed and checked without IO.

pub mod error;
mod lenient;
pub mod pcm_fork;
pub mod twilio_media;
pub mod twilio_signature;
pub mod twilio_stream;

pub use error::{close_code, IngestError, MAX_FRAME_BYTES};

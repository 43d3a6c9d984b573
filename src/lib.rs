//! Earshot: a self-hosted, real-time telephony sidecar.
//!
//! Layers: pure protocol and policy cores (`ingest`, `media`, `config`, `events`,
//! `manifest`, `store`, `recorder::wav`) that take bytes and time in and give decisions
//! out; and, with the `server` feature, the IO edge (`server`, `recorder::pool`,
//! `metrics`) that owns sockets, threads and files.

pub mod asr;
pub mod call;
pub mod coach;
pub mod crypt;
pub mod config;
pub mod events;
pub mod ingest;
pub mod live_protocol;
pub mod manifest;
pub mod media;
pub mod recorder;
pub mod retention;
pub mod store;

#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod storage;

/// Entry points for fuzz targets: thin, always compiled, never panicking.
pub mod fuzzing {
    /// Twilio Media Streams text frame.
    pub fn twilio_message(data: &[u8]) {
        if let Ok(text) = std::str::from_utf8(data) {
            let mut s = crate::ingest::twilio_stream::TwilioStream::new();
            if let Ok(crate::ingest::twilio_stream::TwilioMessage::Media { payload, .. }) = s.on_text(text) {
                let mut out = Vec::new();
                let _ = crate::ingest::twilio_stream::decode_payload(&payload, &mut out);
            }
        }
    }

    /// PCM fork metadata frame followed by binary data.
    pub fn pcm_fork(data: &[u8]) {
        let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
        if let Ok(text) = std::str::from_utf8(&data[..split]) {
            if let Ok(meta) = crate::ingest::pcm_fork::parse_metadata(text) {
                let mut framer = crate::ingest::pcm_fork::PcmFramer::new(meta.channels, meta.rep_channel == Some(1));
                let mut out = Vec::new();
                for chunk in data[split..].chunks(7) {
                    framer.push(chunk, &mut out);
                }
            }
        }
    }

    /// `/live` resume query and client text frame.
    pub fn live_client(data: &[u8]) {
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = crate::live_protocol::parse_resume(text);
            let _ = crate::live_protocol::parse_client_message(text);
        }
    }

    /// Coaching playbook text, every campaign resolved, and its phrases run over the
    /// same text as if it were a transcript.
    pub fn playbook(data: &[u8]) {
        if let Ok(text) = std::str::from_utf8(data) {
            let words = crate::coach::text::words(text);
            for line in text.lines().take(16) {
                if let Some(p) = crate::coach::text::Phrase::new(line) {
                    let _ = p.find_all(&words);
                }
            }
            if let Ok(file) = crate::coach::PlaybookFile::parse(text) {
                let _ = file.resolve(None);
                for name in file.campaigns.keys() {
                    let _ = file.resolve(Some(name));
                }
            }
        }
    }

    /// Configuration file text.
    pub fn config(data: &[u8]) {
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = crate::config::Config::from_toml_with_env(text, std::path::Path::new("fuzz.toml"), std::iter::empty());
        }
    }
}

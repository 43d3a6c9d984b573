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
pub mod redact;
pub mod retention;
pub mod sip;
pub mod store;

#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod storage;
#[cfg(feature = "server")]
pub mod privacy;

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

    /// A stored object as read back from a store (S3 answers are not trusted): header,
    /// layout and every chunk, with a fixed keyring; and keyring text.
    pub fn stored_object(data: &[u8]) {
        use crate::crypt::{decrypt, Header, Key, Keyring, Layout, TenantKeys};
        let mut ring = Keyring::default();
        ring.tenants.insert("t".into(), TenantKeys { active: 1, keys: [("1".to_string(), Key([7u8; 32]).to_base64())].into(), destroyed: vec![] });
        let _ = decrypt(&ring, "t", "t/x", data);
        if let Ok(h) = Header::parse(data) {
            if let Ok(l) = Layout::of(data.len() as u64, h.chunk_size) {
                for i in 0..l.chunks.min(64) {
                    let _ = l.chunk_range(i);
                }
                let _ = l.chunks_for(3..l.plain_len.saturating_add(5));
            }
        }
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = Keyring::parse(text);
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

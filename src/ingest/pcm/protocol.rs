//! Raw PCM websocket fork in the style of jambonz `listen` and FreeSWITCH
//! `mod_audio_fork`: one JSON metadata text frame, then binary frames of interleaved
//! 16-bit little-endian samples. Pure: metadata parsing and frame reassembly.

use serde::Deserialize;
use serde_json::Value;

use crate::call::Participant;
use crate::ingest::error::IngestError;

/// Subprotocol jambonz asks for.
pub const JAMBONZ_SUBPROTOCOL: &str = "audio.jambonz.org";

#[derive(Debug, Clone, PartialEq)]
pub struct PcmMetadata {
    pub tenant: Option<String>,
    pub external_call_id: Option<String>,
    pub campaign: Option<String>,
    pub rep: Option<String>,
    pub sample_rate: u32,
    pub channels: u8,
    /// Which source channel carries the rep (stereo only); `None` = tenant default.
    pub rep_channel: Option<u8>,
    pub participants: Vec<Participant>,
}

#[derive(Deserialize)]
struct RawMeta {
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default, alias = "callId", alias = "callSid", alias = "call_sid", alias = "uuid")]
    call_id: Option<Value>,
    #[serde(default)]
    campaign: Option<String>,
    #[serde(default)]
    rep: Option<String>,
    #[serde(default, alias = "sampleRate")]
    sample_rate: Option<Value>,
    #[serde(default)]
    channels: Option<Value>,
    #[serde(default, alias = "mixType")]
    mix_type: Option<String>,
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default, alias = "repChannel")]
    rep_channel: Option<Value>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub fn parse_metadata(text: &str) -> Result<PcmMetadata, IngestError> {
    let raw: RawMeta = serde_json::from_str(text).map_err(|e| IngestError::MalformedJson(e.to_string()))?;
    let sample_rate = match &raw.sample_rate {
        None => return Err(IngestError::MissingField("sample_rate")),
        Some(v) => {
            as_u64(v).ok_or_else(|| IngestError::InvalidField { field: "sample_rate", detail: v.to_string() })?
        }
    };
    if !(8000..=48000).contains(&sample_rate) {
        return Err(IngestError::SampleRateOutOfRange(sample_rate.min(u32::MAX as u64) as u32));
    }
    let channels = match (&raw.channels, raw.mix_type.as_deref()) {
        (Some(v), _) => {
            as_u64(v).ok_or_else(|| IngestError::InvalidField { field: "channels", detail: v.to_string() })?
        }
        (None, Some("stereo")) => 2,
        (None, Some("mono" | "mixed")) | (None, None) => 1,
        (None, Some(other)) => {
            return Err(IngestError::InvalidField { field: "mixType", detail: format!("{other:?}") })
        }
    };
    if !(1..=2).contains(&channels) {
        return Err(IngestError::InvalidField { field: "channels", detail: format!("{channels} (1 or 2)") });
    }
    if let Some(enc) = &raw.encoding {
        let e = enc.to_ascii_lowercase();
        if !matches!(e.as_str(), "l16" | "audio/l16" | "linear16" | "pcm_s16le" | "s16le") {
            return Err(IngestError::UnsupportedMediaFormat(format!("encoding {enc:?} (only L16 little-endian)")));
        }
    }
    let rep_channel = match &raw.rep_channel {
        None => None,
        Some(Value::String(s)) if s == "left" => Some(0),
        Some(Value::String(s)) if s == "right" => Some(1),
        Some(v) => match as_u64(v) {
            Some(c @ 0..=1) => Some(c as u8),
            _ => return Err(IngestError::InvalidField { field: "rep_channel", detail: v.to_string() }),
        },
    };
    let mut participants = Vec::new();
    for (who, role) in [(&raw.from, "from"), (&raw.to, "to")] {
        if let Some(addr) = who {
            let phone = addr.starts_with('+').then(|| addr.clone());
            participants.push(Participant {
                role: None,
                id: Some(format!("{role}:{addr}")),
                aor: (!addr.starts_with('+')).then(|| addr.clone()),
                phone_e164: phone,
                display_name: None,
            });
        }
    }
    Ok(PcmMetadata {
        tenant: raw.tenant,
        external_call_id: raw.call_id.as_ref().and_then(as_string),
        campaign: raw.campaign,
        rep: raw.rep,
        sample_rate: sample_rate as u32,
        channels: channels as u8,
        rep_channel,
        participants,
    })
}

/// Reassembles whole interleaved sample frames from binary websocket frames of any
/// length (a sender may split a sample across frames), optionally swapping the two
/// channels so that the rep ends up on the left.
#[derive(Debug)]
pub struct PcmFramer {
    frame_bytes: usize,
    swap: bool,
    carry: Vec<u8>,
}

impl PcmFramer {
    pub fn new(channels: u8, swap_channels: bool) -> Self {
        Self { frame_bytes: 2 * channels as usize, swap: swap_channels && channels == 2, carry: Vec::new() }
    }

    /// Appends the whole frames contained in `carry + data` to `out` (L16LE bytes).
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        if self.carry.is_empty() {
            let whole = data.len() - data.len() % self.frame_bytes;
            out.extend_from_slice(&data[..whole]);
            self.carry.extend_from_slice(&data[whole..]);
        } else {
            self.carry.extend_from_slice(data);
            let whole = self.carry.len() - self.carry.len() % self.frame_bytes;
            out.extend(self.carry.drain(..whole));
        }
        if self.swap {
            for f in out[start..].chunks_exact_mut(4) {
                f.swap(0, 2);
                f.swap(1, 3);
            }
        }
    }

    /// Bytes of an incomplete frame still held.
    pub fn pending(&self) -> usize {
        self.carry.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_native_metadata() {
        let m = parse_metadata(r#"{"tenant":"acme","call_id":"abc","campaign":"c1","rep":"bob","sample_rate":16000,"channels":2,"encoding":"L16","rep_channel":1}"#).unwrap();
        assert_eq!(m.tenant.as_deref(), Some("acme"));
        assert_eq!(m.external_call_id.as_deref(), Some("abc"));
        assert_eq!((m.sample_rate, m.channels, m.rep_channel), (16000, 2, Some(1)));
    }

    #[test]
    fn parses_jambonz_spelling() {
        let m = parse_metadata(r#"{"callSid":"CA9","from":"+15551230000","to":"sip:bob@x","sampleRate":8000,"mixType":"stereo","custom":{"a":1}}"#).unwrap();
        assert_eq!(m.channels, 2);
        assert_eq!(m.sample_rate, 8000);
        assert_eq!(m.external_call_id.as_deref(), Some("CA9"));
        assert_eq!(m.participants[0].phone_e164.as_deref(), Some("+15551230000"));
        assert_eq!(m.participants[1].aor.as_deref(), Some("sip:bob@x"));
        let m = parse_metadata(r#"{"sampleRate":"8000","mixType":"mixed"}"#).unwrap();
        assert_eq!(m.channels, 1);
    }

    #[test]
    fn rejects_bad_metadata_specifically() {
        let cases = [
            ("nope", "malformed_json"),
            (r#"{"channels":1}"#, "missing_field"),
            (r#"{"sample_rate":4000}"#, "sample_rate_out_of_range"),
            (r#"{"sample_rate":96000}"#, "sample_rate_out_of_range"),
            (r#"{"sample_rate":"fast"}"#, "invalid_field"),
            (r#"{"sample_rate":8000,"channels":3}"#, "invalid_field"),
            (r#"{"sample_rate":8000,"encoding":"opus"}"#, "unsupported_media_format"),
            (r#"{"sample_rate":8000,"mixType":"quad"}"#, "invalid_field"),
            (r#"{"sample_rate":8000,"rep_channel":7}"#, "invalid_field"),
        ];
        for (text, code) in cases {
            assert_eq!(parse_metadata(text).unwrap_err().code(), code, "{text}");
        }
    }

    #[test]
    fn framer_keeps_split_samples_and_swaps_channels() {
        let mut f = PcmFramer::new(2, true);
        let mut out = vec![];
        // frames: (L=1,R=2), (L=3,R=4), split oddly
        let bytes = [1u8, 0, 2, 0, 3, 0, 4, 0];
        f.push(&bytes[..3], &mut out);
        assert!(out.is_empty());
        assert_eq!(f.pending(), 3);
        f.push(&bytes[3..], &mut out);
        assert_eq!(out, vec![2, 0, 1, 0, 4, 0, 3, 0]);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn mono_framer_passes_through() {
        let mut f = PcmFramer::new(1, true);
        let mut out = vec![];
        f.push(&[1, 2, 3], &mut out);
        assert_eq!(out, vec![1, 2]);
        f.push(&[4], &mut out);
        assert_eq!(out, vec![1, 2, 3, 4]);
    }
}

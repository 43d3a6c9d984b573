//! The Twilio Media Streams wire format (also spoken by Telnyx and others): parsing and
//! the per-stream message order. Pure: text in, typed messages or an `IngestError` out.
//!
//! Messages: `connected`, `start`, `media`, `dtmf`, `mark`, `stop`. Twilio writes
//! `sequenceNumber`, `chunk` and `timestamp` as JSON strings; numbers are accepted too.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;

use crate::call::SampleEncoding;
use crate::ingest::error::IngestError;
use crate::ingest::lenient::opt_u64_lenient;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    Inbound,
    Outbound,
}

impl Track {
    fn parse(s: &str) -> Option<Track> {
        match s {
            "inbound" | "inbound_track" => Some(Track::Inbound),
            "outbound" | "outbound_track" => Some(Track::Outbound),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Track::Inbound => "inbound",
            Track::Outbound => "outbound",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StartInfo {
    pub stream_sid: Option<String>,
    pub call_sid: Option<String>,
    pub account_sid: Option<String>,
    /// Tracks the stream will carry, in the order declared.
    pub tracks: Vec<Track>,
    pub custom_parameters: BTreeMap<String, String>,
    pub encoding: SampleEncoding,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TwilioMessage<'a> {
    Connected,
    Start(StartInfo),
    Media { track: Track, chunk: u64, timestamp_ms: Option<u64>, payload: Cow<'a, str> },
    Dtmf { track: Option<Track>, digit: String },
    Mark { name: String },
    Stop,
}

#[derive(Deserialize)]
struct RawMessage<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, borrow)]
    start: Option<RawStart<'a>>,
    #[serde(default, borrow)]
    media: Option<RawMedia<'a>>,
    #[serde(default)]
    dtmf: Option<RawDtmf>,
    #[serde(default)]
    mark: Option<RawMark>,
    #[serde(default, rename = "streamSid", alias = "stream_id")]
    stream_sid: Option<String>,
}

#[derive(Deserialize)]
struct RawStart<'a> {
    #[serde(default, rename = "streamSid", alias = "stream_id")]
    stream_sid: Option<String>,
    #[serde(default, rename = "callSid", alias = "call_sid", alias = "call_control_id")]
    call_sid: Option<String>,
    #[serde(default, rename = "accountSid", alias = "account_sid")]
    account_sid: Option<String>,
    #[serde(default, borrow)]
    tracks: Option<Vec<Cow<'a, str>>>,
    #[serde(default, rename = "customParameters", alias = "custom_parameters")]
    custom_parameters: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, rename = "mediaFormat", alias = "media_format")]
    media_format: Option<RawMediaFormat>,
}

#[derive(Deserialize)]
struct RawMediaFormat {
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default, rename = "sampleRate", alias = "sample_rate", deserialize_with = "opt_u64_lenient")]
    sample_rate: Option<u64>,
    #[serde(default, deserialize_with = "opt_u64_lenient")]
    channels: Option<u64>,
}

#[derive(Deserialize)]
struct RawMedia<'a> {
    #[serde(default, borrow)]
    track: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "opt_u64_lenient")]
    chunk: Option<u64>,
    #[serde(default, deserialize_with = "opt_u64_lenient")]
    timestamp: Option<u64>,
    #[serde(borrow)]
    payload: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawDtmf {
    #[serde(default)]
    track: Option<String>,
    #[serde(default)]
    digit: Option<String>,
}

#[derive(Deserialize)]
struct RawMark {
    #[serde(default)]
    name: Option<String>,
}

/// Parses one text frame. Ordering rules are `TwilioStream`'s job.
pub fn parse_message(text: &str) -> Result<TwilioMessage<'_>, IngestError> {
    let raw: RawMessage<'_> = serde_json::from_str(text).map_err(|e| IngestError::MalformedJson(e.to_string()))?;
    match raw.event.as_ref() {
        "connected" => Ok(TwilioMessage::Connected),
        "start" => {
            let start = raw.start.ok_or(IngestError::MissingField("start"))?;
            parse_start(start, raw.stream_sid).map(TwilioMessage::Start)
        }
        "media" => {
            let media = raw.media.ok_or(IngestError::MissingField("media"))?;
            let track = match media.track.as_deref() {
                // Single-track streams may omit it.
                None => Track::Inbound,
                Some(t) => Track::parse(t)
                    .ok_or_else(|| IngestError::InvalidField { field: "media.track", detail: format!("{t:?}") })?,
            };
            let chunk = media.chunk.ok_or(IngestError::MissingField("media.chunk"))?;
            let payload = media.payload.ok_or(IngestError::MissingField("media.payload"))?;
            Ok(TwilioMessage::Media { track, chunk, timestamp_ms: media.timestamp, payload })
        }
        "dtmf" => {
            let dtmf = raw.dtmf.ok_or(IngestError::MissingField("dtmf"))?;
            let digit = dtmf.digit.ok_or(IngestError::MissingField("dtmf.digit"))?;
            if digit.chars().count() != 1 {
                return Err(IngestError::InvalidField { field: "dtmf.digit", detail: format!("{digit:?}") });
            }
            Ok(TwilioMessage::Dtmf { track: dtmf.track.as_deref().and_then(Track::parse), digit })
        }
        "mark" => Ok(TwilioMessage::Mark { name: raw.mark.and_then(|m| m.name).unwrap_or_default() }),
        "stop" => Ok(TwilioMessage::Stop),
        other => Err(IngestError::UnknownEvent(truncate(other, 40))),
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

fn parse_start(start: RawStart<'_>, outer_sid: Option<String>) -> Result<StartInfo, IngestError> {
    let fmt = start.media_format.ok_or_else(|| IngestError::UnsupportedMediaFormat("missing mediaFormat".into()))?;
    let enc_name = fmt.encoding.unwrap_or_default();
    let encoding = match enc_name.to_ascii_lowercase().as_str() {
        "audio/x-mulaw" | "pcmu" | "mulaw" | "audio/pcmu" => SampleEncoding::Mulaw,
        "audio/x-alaw" | "pcma" | "alaw" | "audio/pcma" => SampleEncoding::Alaw,
        _ => return Err(IngestError::UnsupportedMediaFormat(format!("encoding {enc_name:?}"))),
    };
    match fmt.sample_rate {
        Some(8000) => {}
        Some(r) => return Err(IngestError::UnsupportedMediaFormat(format!("sampleRate {r} (G.711 is 8000)"))),
        None => return Err(IngestError::UnsupportedMediaFormat("missing sampleRate".into())),
    }
    if let Some(ch) = fmt.channels {
        if ch != 1 {
            return Err(IngestError::UnsupportedMediaFormat(format!("channels {ch} (each track is mono)")));
        }
    }
    let mut tracks = Vec::new();
    match start.tracks {
        None => tracks.push(Track::Inbound),
        Some(list) => {
            for t in list {
                let track = match t.as_ref() {
                    "both_tracks" => {
                        tracks.extend([Track::Inbound, Track::Outbound]);
                        continue;
                    }
                    other => Track::parse(other).ok_or_else(|| IngestError::InvalidField {
                        field: "start.tracks",
                        detail: format!("{other:?}"),
                    })?,
                };
                if !tracks.contains(&track) {
                    tracks.push(track);
                }
            }
            if tracks.is_empty() {
                return Err(IngestError::InvalidField { field: "start.tracks", detail: "empty".into() });
            }
        }
    }
    let custom_parameters = start
        .custom_parameters
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })
        .collect();
    Ok(StartInfo {
        stream_sid: start.stream_sid.or(outer_sid),
        call_sid: start.call_sid,
        account_sid: start.account_sid,
        tracks,
        custom_parameters,
        encoding,
    })
}

/// Decodes a media payload into `out` (cleared first).
pub fn decode_payload(payload: &str, out: &mut Vec<u8>) -> Result<(), IngestError> {
    out.clear();
    base64::engine::general_purpose::STANDARD
        .decode_vec(payload.as_bytes(), out)
        .map_err(|_| IngestError::BadBase64)?;
    if out.is_empty() {
        return Err(IngestError::InvalidField { field: "media.payload", detail: "empty".into() });
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitStart,
    Streaming,
    Stopped,
}

/// Enforces the message order of one stream: `connected`? `start` (`media`|`dtmf`|`mark`)* `stop`.
#[derive(Debug)]
pub struct TwilioStream {
    phase: Phase,
}

impl Default for TwilioStream {
    fn default() -> Self {
        Self::new()
    }
}

impl TwilioStream {
    pub fn new() -> Self {
        Self { phase: Phase::AwaitStart }
    }

    pub fn started(&self) -> bool {
        self.phase != Phase::AwaitStart
    }

    /// Parses `text` and checks it is allowed now.
    pub fn on_text<'a>(&mut self, text: &'a str) -> Result<TwilioMessage<'a>, IngestError> {
        let msg = parse_message(text)?;
        match (&msg, self.phase) {
            (TwilioMessage::Connected, Phase::AwaitStart) => {}
            (TwilioMessage::Connected, _) => {}
            (TwilioMessage::Start(_), Phase::AwaitStart) => self.phase = Phase::Streaming,
            (TwilioMessage::Start(_), _) => return Err(IngestError::DuplicateStart),
            (TwilioMessage::Media { .. }, Phase::AwaitStart) => return Err(IngestError::BeforeStart("media")),
            (TwilioMessage::Dtmf { .. }, Phase::AwaitStart) => return Err(IngestError::BeforeStart("dtmf")),
            (TwilioMessage::Stop, _) => self.phase = Phase::Stopped,
            _ => {}
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: &str = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound","outbound"],"customParameters":{"token":"s3cret","campaign":"spring","rep":"alice"},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"streamSid":"MZ1"}"#;

    #[test]
    fn parses_twilio_start_with_string_numbers() {
        let msg = parse_message(START).unwrap();
        let TwilioMessage::Start(s) = msg else { panic!() };
        assert_eq!(s.tracks, vec![Track::Inbound, Track::Outbound]);
        assert_eq!(s.custom_parameters["token"], "s3cret");
        assert_eq!(s.call_sid.as_deref(), Some("CA1"));
        assert_eq!(s.encoding, SampleEncoding::Mulaw);
    }

    #[test]
    fn parses_media_with_strings_or_numbers() {
        let m = parse_message(r#"{"event":"media","sequenceNumber":"4","media":{"track":"outbound","chunk":"2","timestamp":"20","payload":"/w=="},"streamSid":"MZ1"}"#).unwrap();
        assert_eq!(
            m,
            TwilioMessage::Media { track: Track::Outbound, chunk: 2, timestamp_ms: Some(20), payload: "/w==".into() }
        );
        let m =
            parse_message(r#"{"event":"media","media":{"track":"inbound","chunk":3,"timestamp":40,"payload":"/w=="}}"#)
                .unwrap();
        assert!(matches!(m, TwilioMessage::Media { chunk: 3, timestamp_ms: Some(40), .. }));
    }

    #[test]
    fn accepts_telnyx_spelling() {
        let m = parse_message(r#"{"event":"start","start":{"call_control_id":"v3:x","media_format":{"encoding":"PCMA","sample_rate":8000,"channels":1}},"stream_id":"s1"}"#).unwrap();
        let TwilioMessage::Start(s) = m else { panic!() };
        assert_eq!(s.encoding, SampleEncoding::Alaw);
        assert_eq!(s.stream_sid.as_deref(), Some("s1"));
        assert_eq!(s.tracks, vec![Track::Inbound]);
    }

    #[test]
    fn rejects_each_bad_input_with_a_specific_error() {
        let cases: &[(&str, &str)] = &[
            ("{not json", "malformed_json"),
            (r#"{"event":"party"}"#, "unknown_event"),
            (r#"{"event":"start"}"#, "missing_field"),
            (r#"{"event":"start","start":{"tracks":["inbound"]}}"#, "unsupported_media_format"),
            (
                r#"{"event":"start","start":{"mediaFormat":{"encoding":"audio/l16","sampleRate":8000}}}"#,
                "unsupported_media_format",
            ),
            (
                r#"{"event":"start","start":{"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":16000}}}"#,
                "unsupported_media_format",
            ),
            (r#"{"event":"media","media":{"track":"sideways","chunk":"1","payload":""}}"#, "invalid_field"),
            (r#"{"event":"media","media":{"track":"inbound","chunk":"-1","payload":""}}"#, "malformed_json"),
            (r#"{"event":"media","media":{"track":"inbound","payload":"/w=="}}"#, "missing_field"),
        ];
        for (text, code) in cases {
            let err = parse_message(text).unwrap_err();
            assert_eq!(err.code(), *code, "{text}: {err}");
        }
    }

    #[test]
    fn bad_base64_is_rejected() {
        let mut out = vec![];
        assert_eq!(decode_payload("!!!", &mut out), Err(IngestError::BadBase64));
        decode_payload("/w==", &mut out).unwrap();
        assert_eq!(out, vec![0xFF]);
    }

    #[test]
    fn order_is_enforced() {
        let mut s = TwilioStream::new();
        let media = r#"{"event":"media","media":{"track":"inbound","chunk":"1","payload":"/w=="}}"#;
        assert_eq!(s.on_text(media).unwrap_err(), IngestError::BeforeStart("media"));
        s.on_text(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#).unwrap();
        s.on_text(START).unwrap();
        s.on_text(media).unwrap();
        assert_eq!(s.on_text(START).unwrap_err(), IngestError::DuplicateStart);
        s.on_text(r#"{"event":"stop","stop":{}}"#).unwrap();
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x2545F4914F6CDD1Du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 200) as usize;
            let base = START.as_bytes();
            let mut bytes: Vec<u8> = base[..len.min(base.len())].to_vec();
            if !bytes.is_empty() {
                let i = (seed >> 8) as usize % bytes.len();
                bytes[i] = (seed >> 16) as u8;
            }
            if let Ok(text) = std::str::from_utf8(&bytes) {
                let _ = TwilioStream::new().on_text(text);
            }
        }
    }
}

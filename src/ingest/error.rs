//! Why an ingest connection is refused or ended, and how that is said on the wire.
//!
//! Every variant maps to a websocket close code (RFC 6455 §7.4 where one fits, 4xxx
//! otherwise), a human-readable reason, and a stable code used in the manifest
//! (`client_error:<code>`) and the `earshot_errors_total{code}` metric.

use thiserror::Error;

/// Close codes used by the fork endpoints (documented in docs/forks.md).
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Application-defined: no frame within the idle timeout.
    pub const IDLE_TIMEOUT: u16 = 4408;
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IngestError {
    #[error("authentication failed: {0}")]
    Unauthorized(&'static str),
    #[error("unknown tenant")]
    UnknownTenant,
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("unknown event {0:?}")]
    UnknownEvent(String),
    #[error("missing field {0}")]
    MissingField(&'static str),
    #[error("invalid value for {field}: {detail}")]
    InvalidField { field: &'static str, detail: String },
    #[error("bad base64 payload")]
    BadBase64,
    #[error("unsupported media format: {0}")]
    UnsupportedMediaFormat(String),
    #[error("sample rate {0} Hz out of range (8000-48000)")]
    SampleRateOutOfRange(u32),
    #[error("binary frame before metadata")]
    BinaryBeforeMetadata,
    #[error("{0} before start")]
    BeforeStart(&'static str),
    #[error("second start on one stream")]
    DuplicateStart,
    #[error("frame of {0} bytes exceeds the 64 KiB limit")]
    FrameTooLarge(usize),
    #[error("unexpected frame type: {0}")]
    UnexpectedFrame(&'static str),
    #[error("no frame for {0} s")]
    IdleTimeout(u64),
    #[error("too many concurrent calls")]
    Overloaded,
    #[error("storage unavailable: cannot open a recording")]
    StorageUnavailable,
}

impl IngestError {
    /// Websocket close code.
    pub fn close_code(&self) -> u16 {
        use close_code::*;
        match self {
            IngestError::Unauthorized(_) | IngestError::UnknownTenant => POLICY_VIOLATION,
            IngestError::MalformedJson(_)
            | IngestError::BadBase64
            | IngestError::MissingField(_)
            | IngestError::InvalidField { .. }
            | IngestError::SampleRateOutOfRange(_) => INVALID_PAYLOAD,
            IngestError::UnknownEvent(_)
            | IngestError::UnsupportedMediaFormat(_)
            | IngestError::BinaryBeforeMetadata
            | IngestError::UnexpectedFrame(_) => UNSUPPORTED_DATA,
            IngestError::BeforeStart(_) | IngestError::DuplicateStart => PROTOCOL_ERROR,
            IngestError::FrameTooLarge(_) => MESSAGE_TOO_BIG,
            IngestError::IdleTimeout(_) => IDLE_TIMEOUT,
            IngestError::Overloaded => TRY_AGAIN_LATER,
            IngestError::StorageUnavailable => INTERNAL_ERROR,
        }
    }

    /// Stable machine code (manifest outcome suffix and metric label).
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::Unauthorized(_) => "unauthorized",
            IngestError::UnknownTenant => "unknown_tenant",
            IngestError::MalformedJson(_) => "malformed_json",
            IngestError::UnknownEvent(_) => "unknown_event",
            IngestError::MissingField(_) => "missing_field",
            IngestError::InvalidField { .. } => "invalid_field",
            IngestError::BadBase64 => "bad_base64",
            IngestError::UnsupportedMediaFormat(_) => "unsupported_media_format",
            IngestError::SampleRateOutOfRange(_) => "sample_rate_out_of_range",
            IngestError::BinaryBeforeMetadata => "binary_before_metadata",
            IngestError::BeforeStart(_) => "before_start",
            IngestError::DuplicateStart => "duplicate_start",
            IngestError::FrameTooLarge(_) => "frame_too_large",
            IngestError::UnexpectedFrame(_) => "unexpected_frame",
            IngestError::IdleTimeout(_) => "idle_timeout",
            IngestError::Overloaded => "overloaded",
            IngestError::StorageUnavailable => "storage_unavailable",
        }
    }

    /// Close reason: at most 123 bytes as RFC 6455 allows.
    pub fn close_reason(&self) -> String {
        let mut s = format!("{}: {}", self.code(), self);
        if s.len() > 123 {
            let mut cut = 120;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            s.push_str("...");
        }
        s
    }

    /// All codes, so metrics can pre-register their label sets at zero.
    pub const CODES: [&'static str; 19] = [
        "unauthorized",
        "unknown_tenant",
        "malformed_json",
        "unknown_event",
        "missing_field",
        "invalid_field",
        "bad_base64",
        "unsupported_media_format",
        "sample_rate_out_of_range",
        "binary_before_metadata",
        "before_start",
        "duplicate_start",
        "frame_too_large",
        "unexpected_frame",
        "idle_timeout",
        "overloaded",
        "storage_unavailable",
        "connection_lost",
        "ws_protocol_error",
    ];
}

/// Largest websocket message a fork may send.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reason_fits_in_a_close_frame() {
        let e = IngestError::MalformedJson("é".repeat(200));
        assert!(e.close_reason().len() <= 123);
        assert_eq!(e.close_code(), 1007);
    }

    #[test]
    fn every_code_is_listed_for_metrics() {
        let samples = [
            IngestError::Unauthorized("x"),
            IngestError::UnknownTenant,
            IngestError::MalformedJson(String::new()),
            IngestError::UnknownEvent(String::new()),
            IngestError::MissingField("x"),
            IngestError::InvalidField { field: "x", detail: String::new() },
            IngestError::BadBase64,
            IngestError::UnsupportedMediaFormat(String::new()),
            IngestError::SampleRateOutOfRange(1),
            IngestError::BinaryBeforeMetadata,
            IngestError::BeforeStart("media"),
            IngestError::DuplicateStart,
            IngestError::FrameTooLarge(1),
            IngestError::UnexpectedFrame("x"),
            IngestError::IdleTimeout(1),
            IngestError::Overloaded,
            IngestError::StorageUnavailable,
        ];
        for e in samples {
            assert!(IngestError::CODES.contains(&e.code()), "{}", e.code());
        }
    }
}

//! Call identity and the protocol-agnostic description of a call that every ingest
//! produces (see docs/contracts.md).

pub mod redact;

// The IO side: the ingest task's handle, the call's owner task, and what runs after it.
#[cfg(feature = "server")]
pub mod owner;
#[cfg(feature = "server")]
pub mod postcall;
#[cfg(feature = "server")]
pub mod session;
#[cfg(feature = "server")]
pub mod webhooks;

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Earshot's own id for a call: a UUIDv7, so its timestamp gives the storage date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallId(pub Uuid);

impl CallId {
    pub fn new_at(now: DateTime<Utc>) -> Self {
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, now.timestamp() as u64, now.timestamp_subsec_nanos());
        CallId(Uuid::new_v7(ts))
    }

    /// The UTC instant encoded in the id (millisecond precision).
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        let (secs, nanos) = self.0.get_timestamp()?.to_unix();
        Utc.timestamp_opt(secs as i64, nanos).single()
    }

    pub fn parse(s: &str) -> Option<Self> {
        let id = Uuid::parse_str(s).ok()?;
        (id.get_version_num() == 7).then_some(CallId(id))
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Which ingest a call came from. Also a metric label: keep the set small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Twilio,
    Pcm,
    Sip,
    Siprec,
    Whip,
}

impl Source {
    pub const ALL: [Source; 5] = [Source::Twilio, Source::Pcm, Source::Sip, Source::Siprec, Source::Whip];

    pub fn as_str(&self) -> &'static str {
        match self {
            Source::Twilio => "twilio",
            Source::Pcm => "pcm",
            Source::Sip => "sip",
            Source::Siprec => "siprec",
            Source::Whip => "whip",
        }
    }
}

/// Role of a channel or participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Rep,
    Customer,
    Other,
}

/// Channel layout, fixed at call start: stereo is always rep left, customer right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// One channel (the source declared mono or a mixed signal).
    Mono,
    /// Two channels: index 0 = rep, index 1 = customer.
    Stereo,
}

impl Layout {
    pub fn channels(&self) -> usize {
        match self {
            Layout::Mono => 1,
            Layout::Stereo => 2,
        }
    }

    pub fn roles(&self) -> Vec<Role> {
        match self {
            Layout::Mono => vec![Role::Other],
            Layout::Stereo => vec![Role::Rep, Role::Customer],
        }
    }
}

/// Sample encoding of the audio a call's recorder ring carries (the source's own, so
/// the ring stays small; the recorder thread decodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SampleEncoding {
    Mulaw,
    Alaw,
    /// 16-bit signed little-endian linear PCM.
    L16,
}

impl SampleEncoding {
    pub fn bytes_per_sample(&self) -> usize {
        match self {
            SampleEncoding::Mulaw | SampleEncoding::Alaw => 1,
            SampleEncoding::L16 => 2,
        }
    }

    pub fn silence(&self) -> u8 {
        match self {
            SampleEncoding::Mulaw => crate::media::g711::ULAW_SILENCE,
            SampleEncoding::Alaw => crate::media::g711::ALAW_SILENCE,
            SampleEncoding::L16 => 0,
        }
    }
}

/// A participant as the source described it, normalised.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Participant {
    pub role: Option<Role>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_e164: Option<String>,
}

/// Everything known about a call when it starts; produced by an ingest.
#[derive(Debug, Clone)]
pub struct CallInfo {
    pub call_id: CallId,
    pub tenant: String,
    pub campaign: Option<String>,
    pub rep_id: Option<String>,
    pub source: Source,
    pub source_ids: BTreeMap<String, String>,
    pub participants: Vec<Participant>,
    pub layout: Layout,
    pub sample_rate: u32,
    pub encoding: SampleEncoding,
    pub started_at: DateTime<Utc>,
}

/// How a call ended, as written in the manifest (`outcome`) and counted in metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    /// The client sent something we reject; the code says what.
    ClientError(&'static str),
    Timeout,
    Shutdown,
    StorageError,
    RecoveredAfterCrash,
    /// The call task ended without saying how (a bug); the audio is still kept.
    InternalError,
}

impl Outcome {
    /// The manifest form, e.g. `client_error:bad_base64`.
    pub fn manifest_str(&self) -> String {
        match self {
            Outcome::ClientError(code) => format!("client_error:{code}"),
            other => other.label().to_string(),
        }
    }

    /// Low-cardinality metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::ClientError(_) => "client_error",
            Outcome::Timeout => "timeout",
            Outcome::Shutdown => "shutdown",
            Outcome::StorageError => "storage_error",
            Outcome::RecoveredAfterCrash => "recovered_after_crash",
            Outcome::InternalError => "internal_error",
        }
    }

    pub const LABELS: [&'static str; 7] = [
        "completed",
        "client_error",
        "timeout",
        "shutdown",
        "storage_error",
        "recovered_after_crash",
        "internal_error",
    ];
}

/// Tenant ids become storage path components and metric-free identifiers: keep them tame.
pub fn is_valid_tenant_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !id.starts_with(['-', '_'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_id_is_v7_and_carries_its_time() {
        let now = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
        let id = CallId::new_at(now);
        assert_eq!(id.0.get_version_num(), 7);
        assert_eq!(id.created_at().unwrap(), now);
        assert_eq!(CallId::parse(&id.to_string()), Some(id));
        assert_eq!(CallId::parse("not-a-uuid"), None);
        assert_eq!(CallId::parse(&Uuid::nil().to_string()), None);
    }

    #[test]
    fn tenant_ids_are_path_safe() {
        assert!(is_valid_tenant_id("demo"));
        assert!(is_valid_tenant_id("acme-sales_2"));
        for bad in ["", "../x", "Demo", "a/b", "-x", "a b", &"x".repeat(65)] {
            assert!(!is_valid_tenant_id(bad), "{bad}");
        }
    }

    #[test]
    fn outcome_strings() {
        assert_eq!(Outcome::ClientError("bad_base64").manifest_str(), "client_error:bad_base64");
        assert_eq!(Outcome::RecoveredAfterCrash.manifest_str(), "recovered_after_crash");
    }
}

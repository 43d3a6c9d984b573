//! The event envelope shared by the in-process bus, the live websocket and (later) Redis:
//! `{ v, type, tenant, call_id, seq, wall_ts, offset_ms, ...payload }`. `seq` comes from
//! one counter per call, owned by the call's task. Schema: schemas/event.schema.json.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};

pub mod coaching;

use crate::call::{CallId, Layout, Participant, Role, Source};
use crate::store::manifest::MediaStats;
use coaching::{ChecklistPayload, HintPayload, MetricsPayload, ScorecardPayload};

pub const ENVELOPE_VERSION: u8 = 1;

fn rfc3339<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub v: u8,
    pub tenant: String,
    pub call_id: CallId,
    pub seq: u64,
    #[serde(serialize_with = "rfc3339")]
    pub wall_ts: DateTime<Utc>,
    pub offset_ms: u64,
    #[serde(flatten)]
    pub body: EventBody,
}

impl Event {
    pub fn type_name(&self) -> &'static str {
        self.body.type_name()
    }
}

/// Event payloads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type")]
pub enum EventBody {
    #[serde(rename = "call.started")]
    CallStarted(CallStartedPayload),
    #[serde(rename = "call.ended")]
    CallEnded(CallEndedPayload),
    #[serde(rename = "transcript.partial")]
    TranscriptPartial(TranscriptPayload),
    #[serde(rename = "transcript.final")]
    TranscriptFinal(TranscriptPayload),
    #[serde(rename = "hint")]
    Hint(HintPayload),
    #[serde(rename = "metrics")]
    Metrics(MetricsPayload),
    #[serde(rename = "checklist")]
    Checklist(ChecklistPayload),
    #[serde(rename = "scorecard")]
    Scorecard(Box<ScorecardPayload>),
}

/// `transcript.partial` / `transcript.final`: `stable` never changes again within an
/// utterance; a final replaces the partials of its `utterance_id`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TranscriptPayload {
    pub channel: Role,
    pub utterance_id: String,
    pub text: String,
    pub stable: String,
    pub unstable: String,
    pub start_ms: u64,
    pub end_ms: u64,
    /// Set on a `transcript.final` that marks speech left untranscribed (`asr_overload`:
    /// the recognition pool was too far behind and shed this audio; the recording has it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untranscribed: Option<String>,
    /// Each word with its place in the channel (ms) and probability: the stable words
    /// then the unstable ones on a partial, all of them on a final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub words: Option<Vec<crate::asr::hypothesis::Word>>,
}

impl EventBody {
    pub fn type_name(&self) -> &'static str {
        match self {
            EventBody::CallStarted(_) => "call.started",
            EventBody::CallEnded(_) => "call.ended",
            EventBody::TranscriptPartial(_) => "transcript.partial",
            EventBody::TranscriptFinal(_) => "transcript.final",
            EventBody::Hint(_) => "hint",
            EventBody::Metrics(_) => "metrics",
            EventBody::Checklist(_) => "checklist",
            EventBody::Scorecard(_) => "scorecard",
        }
    }

    pub const TYPE_NAMES: [&'static str; 8] = [
        "call.started",
        "call.ended",
        "transcript.partial",
        "transcript.final",
        "hint",
        "metrics",
        "checklist",
        "scorecard",
    ];
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CallStartedPayload {
    pub source: Source,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rep_id: Option<String>,
    pub layout: Layout,
    pub channels: Vec<Role>,
    pub sample_rate: u32,
    pub recording: bool,
    pub source_ids: BTreeMap<String, String>,
    pub participants: Vec<Participant>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CallEndedPayload {
    /// Manifest form, e.g. `completed` or `client_error:bad_base64`.
    pub outcome: String,
    pub duration_ms: u64,
    pub stats: MediaStats,
}

/// Per-call event numbering, owned by the call's task.
#[derive(Debug)]
pub struct EventSequencer {
    tenant: String,
    call_id: CallId,
    started_at: DateTime<Utc>,
    next_seq: u64,
}

impl EventSequencer {
    pub fn new(tenant: String, call_id: CallId, started_at: DateTime<Utc>) -> Self {
        Self { tenant, call_id, started_at, next_seq: 1 }
    }

    /// Stamps `body` with the next `seq` and the given wall time.
    pub fn stamp(&mut self, now: DateTime<Utc>, body: EventBody) -> Event {
        let seq = self.next_seq;
        self.next_seq += 1;
        Event {
            v: ENVELOPE_VERSION,
            tenant: self.tenant.clone(),
            call_id: self.call_id,
            seq,
            wall_ts: now,
            offset_ms: (now - self.started_at).num_milliseconds().max(0) as u64,
            body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_is_flat_with_type_and_seq_counts_up() {
        let t0 = Utc::now();
        let id = CallId::new_at(t0);
        let mut seqr = EventSequencer::new("demo".into(), id, t0);
        let e1 = seqr.stamp(
            t0,
            EventBody::CallEnded(CallEndedPayload {
                outcome: "completed".into(),
                duration_ms: 5,
                stats: MediaStats::default(),
            }),
        );
        let e2 = seqr.stamp(t0 + chrono::Duration::milliseconds(1500), e1.body.clone());
        assert_eq!((e1.seq, e2.seq), (1, 2));
        assert_eq!(e2.offset_ms, 1500);
        let json: serde_json::Value = serde_json::to_value(&e1).unwrap();
        assert_eq!(json["type"], "call.ended");
        assert_eq!(json["v"], 1);
        assert_eq!(json["outcome"], "completed");
        assert!(json["wall_ts"].as_str().unwrap().ends_with('Z'));
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back.seq, 1);
    }
}

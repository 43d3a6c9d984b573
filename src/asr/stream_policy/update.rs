//! What a channel's policy tells the call: transcript updates (with word timings), and
//! the pool's load levels it obeys.

use crate::asr::hypothesis::{join, Word};
use crate::call::Role;
use crate::events::{EventBody, TranscriptPayload};

#[derive(Debug, Clone, PartialEq)]
pub enum TranscriptUpdate {
    /// `stable` words never change again; `unstable` ones may.
    Partial {
        utterance: u64,
        stable: Vec<Word>,
        unstable: Vec<Word>,
        start_ms: u64,
        end_ms: u64,
    },
    Final {
        utterance: u64,
        words: Vec<Word>,
        start_ms: u64,
        end_ms: u64,
    },
    /// Speech that was not transcribed: the pool was overloaded and this audio was shed.
    /// Sent as a `transcript.final` with empty text and `untranscribed` set.
    Gap {
        utterance: u64,
        start_ms: u64,
        end_ms: u64,
    },
}

/// How far the pool is behind, as steps of degradation (see `asr::overload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Degrade {
    #[default]
    Normal = 0,
    /// Partials at twice the step.
    LongStep = 1,
    /// Finals only.
    FinalsOnly = 2,
    /// Finals only, and audio too far behind is dropped unheard.
    Shed = 3,
}

impl TranscriptUpdate {
    /// The final's (or partial's whole) text.
    pub fn text(&self) -> String {
        match self {
            TranscriptUpdate::Partial { stable, unstable, .. } => {
                format!("{} {}", join(stable), join(unstable)).trim().to_string()
            }
            TranscriptUpdate::Final { words, .. } => join(words),
            TranscriptUpdate::Gap { .. } => String::new(),
        }
    }

    /// The event payload for channel `role`; utterance ids read `<channel>-<n>`.
    pub fn to_payload(&self, role: Role) -> TranscriptPayload {
        let channel = match role {
            Role::Rep => "rep",
            Role::Customer => "customer",
            Role::Other => "other",
        };
        match self {
            TranscriptUpdate::Partial { utterance, stable, unstable, start_ms, end_ms } => TranscriptPayload {
                channel: role,
                utterance_id: format!("{channel}-{utterance}"),
                text: self.text(),
                stable: join(stable),
                unstable: join(unstable),
                start_ms: *start_ms,
                end_ms: *end_ms,
                untranscribed: None,
                words: Some(stable.iter().chain(unstable).cloned().collect()),
            },
            TranscriptUpdate::Final { utterance, words, start_ms, end_ms } => TranscriptPayload {
                channel: role,
                utterance_id: format!("{channel}-{utterance}"),
                text: join(words),
                stable: join(words),
                unstable: String::new(),
                start_ms: *start_ms,
                end_ms: *end_ms,
                untranscribed: None,
                words: Some(words.clone()),
            },
            TranscriptUpdate::Gap { utterance, start_ms, end_ms } => TranscriptPayload {
                channel: role,
                utterance_id: format!("{channel}-{utterance}"),
                text: String::new(),
                stable: String::new(),
                unstable: String::new(),
                start_ms: *start_ms,
                end_ms: *end_ms,
                untranscribed: Some("asr_overload".into()),
                words: None,
            },
        }
    }

    /// As an event body (`transcript.partial` / `transcript.final`).
    pub fn to_event(&self, role: Role) -> EventBody {
        match self {
            TranscriptUpdate::Partial { .. } => EventBody::TranscriptPartial(self.to_payload(role)),
            TranscriptUpdate::Final { .. } | TranscriptUpdate::Gap { .. } => {
                EventBody::TranscriptFinal(self.to_payload(role))
            }
        }
    }
}

//! What the coach publishes (the payloads of `hint`, `metrics`, `checklist` and
//! `scorecard`; schema in schemas/event.schema.json).

use serde::{Deserialize, Serialize};

use crate::call::Role;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TriggerSpan {
    pub channel: Role,
    pub utterance_id: String,
    /// The utterance text the rule saw (stable words of a partial, or the final).
    pub text: String,
    /// The words that matched.
    pub matched: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HintPayload {
    /// Unique within the call.
    pub id: String,
    /// The playbook rule (or `metric.*`) that fired.
    pub rule: String,
    pub kind: String,
    pub severity: Severity,
    pub title: String,
    pub body: String,
    /// Why it fired, in words.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<TriggerSpan>,
    /// When it was created (ms into the call).
    pub created_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MetricsPayload {
    pub at_ms: u64,
    pub rep_talk_ms: u64,
    pub customer_talk_ms: u64,
    /// Rep share of talk time (0–1); absent before anyone spoke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub talk_ratio: Option<f64>,
    /// The rep's current uninterrupted turn (0 when the rep does not hold the floor).
    pub rep_monologue_ms: u64,
    pub longest_rep_monologue_ms: u64,
    pub longest_customer_story_ms: u64,
    /// Average pause before the rep answers the customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patience_ms: Option<u64>,
    /// Times the rep started talking over the customer.
    pub interruptions: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rep_wpm: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_wpm: Option<f64>,
    /// Current silence on both channels.
    pub dead_air_ms: u64,
    pub longest_dead_air_ms: u64,
    pub rep_questions: u32,
    pub rep_fillers: u32,
    pub rep_words: u64,
    pub customer_words: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemStatus {
    Pending,
    Done,
    /// A required phrase said after its deadline.
    Late,
    Missed,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChecklistItem {
    pub id: String,
    pub label: String,
    /// `checklist` or `required`.
    pub kind: String,
    pub status: ItemStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChecklistPayload {
    pub items: Vec<ChecklistItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScorePart {
    pub name: String,
    pub weight: f64,
    /// 0–1.
    pub value: f64,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScorecardPayload {
    /// 0–100, the weighted mean of the parts that apply to this call.
    pub score: f64,
    pub parts: Vec<ScorePart>,
    pub metrics: MetricsPayload,
    pub checklist: Vec<ChecklistItem>,
    pub hints: Vec<HintPayload>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Info,
    Warning,
    Critical,
}

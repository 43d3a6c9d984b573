//! Live coaching: a pure engine that turns transcript events, per-channel voice
//! activity and time into conversation metrics, hints, a live checklist and, at the
//! end, a scorecard. No IO and no clock of its own: every input carries its time in
//! milliseconds from the call's start, so scripted timelines test it exactly.
//!
//! It acts on the *stable* words of partials (they never change again), not only on
//! finals, which is what brings a hint within a second or two of the words. Every hint
//! says why it fired (`reason`, and the transcript span for phrase rules).

mod checklist;
mod phrases;
pub mod playbook;
#[cfg(feature = "server")]
pub mod playbooks;
mod scorecard;
mod talk;
mod talk_rules;
pub mod text;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::call::Role;
pub use crate::events::coaching::{
    ChecklistItem, ChecklistPayload, HintPayload, ItemStatus, MetricsPayload, ScorePart, ScorecardPayload, TriggerSpan,
};
use crate::events::TranscriptPayload;
use checklist::RequiredState;
pub use playbook::{Playbook, PlaybookError, PlaybookFile, Severity, Speaker};
use talk::ChannelState;

/// A speaker starts or stops (from the recogniser's voice-activity detector).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Voice {
    Start(u64),
    End(u64),
}

/// What the engine asks to publish.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // short-lived, drained right after each input
pub enum CoachOutput {
    Hint(HintPayload),
    Checklist(ChecklistPayload),
}

/// Hints kept for the scorecard.
const MAX_HINTS: usize = 1_000;
/// Utterances in progress tracked at once (older ones are forgotten).
const MAX_OPEN_UTTERANCES: usize = 64;

#[derive(Debug)]
struct Utt {
    fired: HashMap<String, usize>,
    seen_at: u64,
}

pub struct Coach {
    pb: Arc<Playbook>,
    ch: [ChannelState; 2],
    floor: Option<usize>,
    utts: HashMap<String, Utt>,
    last_fired: HashMap<String, u64>,
    hints: Vec<HintPayload>,
    next_hint: u64,
    required: Vec<RequiredState>,
    checklist: Vec<Option<u64>>,
    interruptions: u32,
    recent_interruptions: VecDeque<u64>,
    patience: (u64, u64),
    questions: u32,
    fillers: u32,
    rep_pace: VecDeque<(u64, u64)>,
    longest_dead_air: u64,
    silence_hinted: Option<u64>,
    monologue_hinted: Option<u64>,
    ever_spoke: bool,
    ended: bool,
}

fn idx(role: Role) -> Option<usize> {
    match role {
        Role::Rep => Some(0),
        Role::Customer => Some(1),
        Role::Other => None,
    }
}

fn secs(ms: u64) -> String {
    format!("{:.0} s", ms as f64 / 1000.0)
}

impl Coach {
    pub fn new(pb: Arc<Playbook>) -> Self {
        Self {
            required: pb.required.iter().map(|_| RequiredState { status: ItemStatus::Pending, at_ms: None }).collect(),
            checklist: vec![None; pb.checklist.len()],
            pb,
            ch: Default::default(),
            floor: None,
            utts: HashMap::new(),
            last_fired: HashMap::new(),
            hints: Vec::new(),
            next_hint: 1,
            interruptions: 0,
            recent_interruptions: VecDeque::new(),
            patience: (0, 0),
            questions: 0,
            fillers: 0,
            rep_pace: VecDeque::new(),
            longest_dead_air: 0,
            silence_hinted: None,
            monologue_hinted: None,
            ever_spoke: false,
            ended: false,
        }
    }

    pub fn playbook(&self) -> &Playbook {
        &self.pb
    }

    /// Hints so far (in creation order).
    pub fn hints(&self) -> &[HintPayload] {
        &self.hints
    }

    // ---- transcripts -----------------------------------------------------------

    /// A `transcript.partial` (its stable words) or `transcript.final`.
    pub fn on_transcript(&mut self, p: &TranscriptPayload, is_final: bool, now: u64, out: &mut Vec<CoachOutput>) {
        if p.untranscribed.is_some() {
            self.utts.remove(&p.utterance_id);
            return;
        }
        let text = if is_final { p.text.as_str() } else { p.stable.as_str() };
        let words = text::words(text);
        if words.is_empty() && !is_final {
            return;
        }
        if !self.utts.contains_key(&p.utterance_id) && self.utts.len() >= MAX_OPEN_UTTERANCES {
            if let Some(oldest) = self.utts.iter().min_by_key(|(_, u)| u.seen_at).map(|(k, _)| k.clone()) {
                self.utts.remove(&oldest);
            }
        }
        let mut fired = self.utts.remove(&p.utterance_id).map(|u| u.fired).unwrap_or_default();
        self.match_phrases(p, text, &words, &mut fired, now, out);
        if self.match_checklist(p, &words) {
            out.push(CoachOutput::Checklist(self.checklist_payload()));
        }
        if is_final {
            self.count_final(p, &words, now, out);
        } else {
            self.utts.insert(p.utterance_id.clone(), Utt { fired, seen_at: now });
        }
    }

    // ---- time ------------------------------------------------------------------

    /// Deadlines and threshold hints that depend on time passing.
    pub fn tick(&mut self, now: u64, out: &mut Vec<CoachOutput>) {
        self.settle_floor(now);
        self.check_monologue(now, out);
        self.check_dead_air(now, out);
        self.check_talk_ratio(now, out);
        // Required phrases past their deadline.
        self.check_deadlines(now, false, out);
    }

    fn cooled(&mut self, rule: &str, cooldown: u64, now: u64) -> bool {
        match self.last_fired.get(rule) {
            Some(&last) if cooldown > 0 && now < last + cooldown => false,
            _ => {
                self.last_fired.insert(rule.to_string(), now);
                true
            }
        }
    }

    fn hint(&mut self, mut h: HintPayload, out: &mut Vec<CoachOutput>) {
        h.id = format!("h{}", self.next_hint);
        self.next_hint += 1;
        if self.hints.len() < MAX_HINTS {
            self.hints.push(h.clone());
        }
        out.push(CoachOutput::Hint(h));
    }

    /// The call is over: open speech is closed, pending requirements are missed, and the
    /// scorecard is computed. Later calls return the same scorecard and publish nothing.
    pub fn finish(&mut self, now: u64, out: &mut Vec<CoachOutput>) -> ScorecardPayload {
        if !self.ended {
            self.ended = true;
            for role in [Role::Rep, Role::Customer] {
                self.on_voice(role, Voice::End(now), out);
            }
            self.tick_floor_only(now);
            self.check_deadlines(now, true, out);
        }
        self.scorecard(now)
    }
}

#[cfg(test)]
mod tests;

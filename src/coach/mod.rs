//! Live coaching: a pure engine that turns transcript events, per-channel voice
//! activity and time into conversation metrics, hints, a live checklist and, at the
//! end, a scorecard. No IO and no clock of its own: every input carries its time in
//! milliseconds from the call's start, so scripted timelines test it exactly.
//!
//! It acts on the *stable* words of partials (they never change again), not only on
//! finals, which is what brings a hint within a second or two of the words. Every hint
//! says why it fired (`reason`, and the transcript span for phrase rules).

pub mod playbook;
#[cfg(feature = "server")]
pub mod playbooks;
mod scorecard;
pub mod text;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::call::Role;
pub use crate::events::coaching::{
    ChecklistItem, ChecklistPayload, HintPayload, ItemStatus, MetricsPayload, ScorePart, ScorecardPayload, TriggerSpan,
};
use crate::events::TranscriptPayload;
use playbook::PhraseRule;
pub use playbook::{Playbook, PlaybookError, PlaybookFile, Severity, Speaker};
use text::Phrase;

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

/// Shorter speech by the other party does not take the floor ("uh-huh").
const BACKCHANNEL_MS: u64 = 1_000;
/// A pause this long ends a turn even if nobody else speaks.
const TURN_GAP_MS: u64 = 3_000;
/// Rep speech starting this long into the customer's speech is an interruption.
const INTERRUPT_AFTER_MS: u64 = 300;
/// Longest pause still counted as the rep's "patience" (longer is dead air).
const MAX_PATIENCE_MS: u64 = 10_000;
/// Hints kept for the scorecard.
const MAX_HINTS: usize = 1_000;
/// Utterances in progress tracked at once (older ones are forgotten).
const MAX_OPEN_UTTERANCES: usize = 64;

#[derive(Debug, Default, Clone)]
struct ChannelState {
    speaking_since: Option<u64>,
    last_end: Option<u64>,
    talk_ms: u64,
    /// The turn this speaker holds (floor), and where it started.
    turn_start: Option<u64>,
    longest_turn_ms: u64,
    words: u64,
    speech_ms: u64,
}

impl ChannelState {
    fn talk_at(&self, now: u64) -> u64 {
        self.talk_ms + self.speaking_since.map_or(0, |s| now.saturating_sub(s))
    }

    /// Length of the turn it holds, up to `now`.
    fn turn_len(&self, now: u64) -> u64 {
        let Some(start) = self.turn_start else {
            return 0;
        };
        let end = if self.speaking_since.is_some() { now } else { self.last_end.unwrap_or(start) };
        end.saturating_sub(start)
    }
}

#[derive(Debug)]
struct Utt {
    fired: HashMap<String, usize>,
    seen_at: u64,
}

#[derive(Debug, Clone)]
struct RequiredState {
    status: ItemStatus,
    at_ms: Option<u64>,
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

    // ---- voice activity --------------------------------------------------------

    /// A channel starts or stops speaking. Out-of-order or repeated edges are ignored.
    pub fn on_voice(&mut self, role: Role, edge: Voice, out: &mut Vec<CoachOutput>) {
        let Some(i) = idx(role) else { return };
        let other = 1 - i;
        match edge {
            Voice::Start(t) => {
                if self.ch[i].speaking_since.is_some() {
                    return;
                }
                self.note_silence_end(t);
                self.ever_spoke = true;
                if i == 0 {
                    if let Some(since) = self.ch[1].speaking_since {
                        if t >= since + INTERRUPT_AFTER_MS {
                            self.interruptions += 1;
                            self.recent_interruptions.push_back(t);
                            self.check_interruptions(t, out);
                        }
                    } else if self.floor == Some(1) {
                        if let Some(end) = self.ch[1].last_end {
                            let gap = t.saturating_sub(end);
                            if gap <= MAX_PATIENCE_MS {
                                self.patience.0 += gap;
                                self.patience.1 += 1;
                            }
                        }
                    }
                }
                // A long pause ends the speaker's own turn.
                if self.floor == Some(i) && self.ch[i].last_end.is_some_and(|e| t.saturating_sub(e) > TURN_GAP_MS) {
                    self.close_turn(i, t);
                    self.floor = None;
                }
                self.ch[i].speaking_since = Some(t);
                let _ = other;
            }
            Voice::End(t) => {
                let Some(since) = self.ch[i].speaking_since.take() else {
                    return;
                };
                let t = t.max(since);
                self.ch[i].talk_ms += t - since;
                self.ch[i].last_end = Some(t);
                if t - since >= BACKCHANNEL_MS {
                    self.take_floor(i, since, t);
                }
                self.update_turn_records(t);
            }
        }
    }

    fn take_floor(&mut self, i: usize, since: u64, now: u64) {
        if self.floor == Some(i) {
            if self.ch[i].turn_start.is_none() {
                self.ch[i].turn_start = Some(since);
            }
            return;
        }
        if let Some(prev) = self.floor {
            self.close_turn(prev, now);
        }
        self.floor = Some(i);
        self.ch[i].turn_start = Some(since);
    }

    fn close_turn(&mut self, i: usize, now: u64) {
        let len = self.ch[i].turn_len(now);
        let c = &mut self.ch[i];
        c.longest_turn_ms = c.longest_turn_ms.max(len);
        c.turn_start = None;
    }

    fn update_turn_records(&mut self, now: u64) {
        for i in 0..2 {
            let len = self.ch[i].turn_len(now);
            self.ch[i].longest_turn_ms = self.ch[i].longest_turn_ms.max(len);
        }
    }

    fn silence_start(&self) -> Option<u64> {
        if self.ch.iter().any(|c| c.speaking_since.is_some()) {
            return None;
        }
        Some(self.ch.iter().filter_map(|c| c.last_end).max().unwrap_or(0))
    }

    fn note_silence_end(&mut self, t: u64) {
        if let Some(s) = self.silence_start() {
            self.longest_dead_air = self.longest_dead_air.max(t.saturating_sub(s));
        }
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
        let span = |matched: &[String]| TriggerSpan {
            channel: p.channel,
            utterance_id: p.utterance_id.clone(),
            text: text.to_string(),
            matched: matched.join(" "),
            start_ms: p.start_ms,
            end_ms: p.end_ms,
        };
        // Phrase triggers and forbidden phrases: each new occurrence in this utterance.
        let pb = self.pb.clone();
        for (rule, default_cooldown) in
            pb.triggers.iter().map(|r| (r, pb.thresholds.cooldown_ms)).chain(pb.forbidden.iter().map(|r| (r, 0)))
        {
            if !rule.channel.hears(p.channel) {
                continue;
            }
            let matches = find(&rule.phrases, &words);
            let before = fired.get(&rule.id).copied().unwrap_or(0);
            if matches.len() > before {
                fired.insert(rule.id.clone(), matches.len());
                let (phrase, (a, b)) = &matches[before];
                let cooldown = rule.cooldown_ms.unwrap_or(default_cooldown);
                if self.cooled(&rule.id, cooldown, now) {
                    let who = role_name(p.channel);
                    let reason = format!(
                        "{who} said \"{}\" (phrase \"{}\" of rule {})",
                        words[*a..*b].join(" "),
                        phrase.source,
                        rule.id
                    );
                    self.hint(rule_hint(rule, reason, Some(span(&words[*a..*b])), now), out);
                }
            }
        }
        // Required phrases and the checklist.
        let mut changed = false;
        for (k, rule) in pb.required.iter().enumerate() {
            let st = &mut self.required[k];
            if matches!(st.status, ItemStatus::Done | ItemStatus::Late) || !rule.channel.hears(p.channel) {
                continue;
            }
            if text::first_match(&rule.phrases, &words).is_some() {
                st.at_ms = Some(p.start_ms);
                st.status = if p.start_ms <= rule.within_ms { ItemStatus::Done } else { ItemStatus::Late };
                changed = true;
            }
        }
        for (k, rule) in pb.checklist.iter().enumerate() {
            if self.checklist[k].is_none()
                && rule.channel.hears(p.channel)
                && text::first_match(&rule.phrases, &words).is_some()
            {
                self.checklist[k] = Some(p.start_ms);
                changed = true;
            }
        }
        if changed {
            out.push(CoachOutput::Checklist(self.checklist_payload()));
        }
        if is_final {
            if let Some(i) = idx(p.channel) {
                let c = &mut self.ch[i];
                c.words += words.len() as u64;
                let dur = p.end_ms.saturating_sub(p.start_ms);
                c.speech_ms += dur;
                if i == 0 {
                    self.questions += p.text.matches('?').count() as u32;
                    self.fillers += text::count_matches(&pb.fillers, &words) as u32;
                    self.rep_pace.push_back((words.len() as u64, dur));
                    while self.rep_pace.len() > 3 {
                        self.rep_pace.pop_front();
                    }
                    self.check_pace(now, out);
                }
            }
        } else {
            self.utts.insert(p.utterance_id.clone(), Utt { fired, seen_at: now });
        }
    }

    // ---- time ------------------------------------------------------------------

    /// Deadlines and threshold hints that depend on time passing.
    pub fn tick(&mut self, now: u64, out: &mut Vec<CoachOutput>) {
        for i in 0..2 {
            if let Some(since) = self.ch[i].speaking_since {
                if now.saturating_sub(since) >= BACKCHANNEL_MS {
                    self.take_floor(i, since, now);
                }
            }
        }
        self.update_turn_records(now);
        let t = self.pb.thresholds;
        // Monologue.
        if self.floor == Some(0) {
            let len = self.ch[0].turn_len(now);
            let start = self.ch[0].turn_start;
            if len >= t.monologue_ms
                && self.monologue_hinted != start
                && self.cooled("metric.monologue", t.cooldown_ms, now)
            {
                self.monologue_hinted = start;
                let reason = format!(
                    "the rep has been talking for {} without the customer taking the floor (limit {})",
                    secs(len),
                    secs(t.monologue_ms)
                );
                self.hint(
                    metric_hint(
                        "metric.monologue",
                        "monologue",
                        Severity::Warning,
                        "Monologue",
                        "Pause and ask the customer a question.",
                        reason,
                        now,
                    ),
                    out,
                );
            }
        }
        // Dead air (only once the call got going: ringing and hold are not the rep's).
        if let Some(s) = self.silence_start() {
            let len = now.saturating_sub(s);
            self.longest_dead_air = self.longest_dead_air.max(len);
            if self.ever_spoke
                && len >= t.dead_air_ms
                && self.silence_hinted != Some(s)
                && self.cooled("metric.dead_air", t.cooldown_ms, now)
            {
                self.silence_hinted = Some(s);
                let reason = format!("nobody has spoken for {} (limit {})", secs(len), secs(t.dead_air_ms));
                self.hint(
                    metric_hint(
                        "metric.dead_air",
                        "dead_air",
                        Severity::Info,
                        "Long silence",
                        "Check in with the customer or summarise where you are.",
                        reason,
                        now,
                    ),
                    out,
                );
            }
        }
        // Talk ratio.
        let (rep, cust) = (self.ch[0].talk_at(now), self.ch[1].talk_at(now));
        if rep + cust >= t.talk_ratio_after_ms {
            let share = rep as f64 / (rep + cust) as f64;
            if share > t.talk_ratio_max && self.cooled("metric.talk_ratio", t.cooldown_ms, now) {
                let reason = format!(
                    "rep share of talk time is {:.0}% (target at most {:.0}%)",
                    share * 100.0,
                    t.talk_ratio_max * 100.0
                );
                self.hint(
                    metric_hint(
                        "metric.talk_ratio",
                        "talk_ratio",
                        Severity::Warning,
                        "You are doing most of the talking",
                        "Ask an open question and let the customer speak.",
                        reason,
                        now,
                    ),
                    out,
                );
            } else if share < t.talk_ratio_min && self.cooled("metric.talk_ratio", t.cooldown_ms, now) {
                let reason = format!(
                    "rep share of talk time is {:.0}% (target at least {:.0}%)",
                    share * 100.0,
                    t.talk_ratio_min * 100.0
                );
                self.hint(
                    metric_hint(
                        "metric.talk_ratio",
                        "talk_ratio",
                        Severity::Info,
                        "Take the lead",
                        "Summarise and propose a next step.",
                        reason,
                        now,
                    ),
                    out,
                );
            }
        }
        // Required phrases past their deadline.
        self.check_deadlines(now, false, out);
    }

    fn check_deadlines(&mut self, now: u64, ending: bool, out: &mut Vec<CoachOutput>) {
        let pb = self.pb.clone();
        let grace = pb.thresholds.decision_grace_ms;
        let mut changed = false;
        for (k, rule) in pb.required.iter().enumerate() {
            if self.required[k].status != ItemStatus::Pending || !(ending || now >= rule.within_ms + grace) {
                continue;
            }
            self.required[k].status = ItemStatus::Missed;
            changed = true;
            let reason = if ending && now < rule.within_ms {
                format!(
                    "the call ended after {} without the {} phrase (due within {})",
                    secs(now),
                    rule.id,
                    secs(rule.within_ms)
                )
            } else {
                format!("none of the {} phrases was said within the first {}", rule.id, secs(rule.within_ms))
            };
            let hint = HintPayload {
                id: String::new(),
                rule: rule.id.clone(),
                kind: "compliance.missed".into(),
                severity: rule.severity,
                title: rule.title.clone(),
                body: rule.body.clone(),
                reason,
                trigger: None,
                created_ms: now,
            };
            self.hint(hint, out);
        }
        if changed {
            out.push(CoachOutput::Checklist(self.checklist_payload()));
        }
    }

    fn check_interruptions(&mut self, now: u64, out: &mut Vec<CoachOutput>) {
        let t = self.pb.thresholds;
        while self.recent_interruptions.front().is_some_and(|&x| now.saturating_sub(x) > t.interruption_window_ms) {
            self.recent_interruptions.pop_front();
        }
        let n = self.recent_interruptions.len() as u32;
        if n >= t.interruptions && self.cooled("metric.interruptions", t.cooldown_ms, now) {
            let reason = format!(
                "the rep started talking over the customer {n} times in the last {}",
                secs(t.interruption_window_ms)
            );
            self.hint(
                metric_hint(
                    "metric.interruptions",
                    "interruption",
                    Severity::Warning,
                    "Let the customer finish",
                    "Wait for a pause before you answer.",
                    reason,
                    now,
                ),
                out,
            );
            self.recent_interruptions.clear();
        }
    }

    fn check_pace(&mut self, now: u64, out: &mut Vec<CoachOutput>) {
        let (w, d) = self.rep_pace.iter().fold((0, 0), |(w, d), (a, b)| (w + a, d + b));
        if w < 15 || d < 4_000 {
            return;
        }
        let wpm = w as f64 * 60_000.0 / d as f64;
        let t = self.pb.thresholds;
        if wpm > t.fast_wpm && self.cooled("metric.pace", t.cooldown_ms, now) {
            let reason = format!("the rep's last sentences ran at {wpm:.0} words per minute (limit {:.0})", t.fast_wpm);
            self.hint(
                metric_hint(
                    "metric.pace",
                    "pace",
                    Severity::Info,
                    "Slow down",
                    "You are speaking fast; slow down and pause.",
                    reason,
                    now,
                ),
                out,
            );
        }
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

    // ---- views -----------------------------------------------------------------

    pub fn metrics(&self, now: u64) -> MetricsPayload {
        let (rep, cust) = (&self.ch[0], &self.ch[1]);
        let (rt, ct) = (rep.talk_at(now), cust.talk_at(now));
        let wpm = |c: &ChannelState| {
            (c.speech_ms >= 2_000).then(|| (c.words as f64 * 60_000.0 / c.speech_ms as f64 * 10.0).round() / 10.0)
        };
        let current_silence = self.silence_start().map_or(0, |s| now.saturating_sub(s));
        MetricsPayload {
            at_ms: now,
            rep_talk_ms: rt,
            customer_talk_ms: ct,
            talk_ratio: (rt + ct > 0).then(|| (rt as f64 / (rt + ct) as f64 * 1000.0).round() / 1000.0),
            rep_monologue_ms: if self.floor == Some(0) { rep.turn_len(now) } else { 0 },
            longest_rep_monologue_ms: rep.longest_turn_ms.max(if self.floor == Some(0) {
                rep.turn_len(now)
            } else {
                0
            }),
            longest_customer_story_ms: cust.longest_turn_ms.max(if self.floor == Some(1) {
                cust.turn_len(now)
            } else {
                0
            }),
            patience_ms: (self.patience.1 > 0).then(|| self.patience.0 / self.patience.1),
            interruptions: self.interruptions,
            rep_wpm: wpm(rep),
            customer_wpm: wpm(cust),
            dead_air_ms: current_silence,
            longest_dead_air_ms: self.longest_dead_air.max(current_silence),
            rep_questions: self.questions,
            rep_fillers: self.fillers,
            rep_words: rep.words,
            customer_words: cust.words,
        }
    }

    pub fn checklist_payload(&self) -> ChecklistPayload {
        let mut items: Vec<ChecklistItem> = self
            .pb
            .required
            .iter()
            .zip(&self.required)
            .map(|(r, s)| ChecklistItem {
                id: r.id.clone(),
                label: r.label.clone(),
                kind: "required".into(),
                status: s.status,
                at_ms: s.at_ms,
                due_ms: Some(r.within_ms),
                weight: None,
            })
            .collect();
        items.extend(self.pb.checklist.iter().zip(&self.checklist).map(|(r, at)| ChecklistItem {
            id: r.id.clone(),
            label: r.label.clone(),
            kind: "checklist".into(),
            status: if at.is_some() { ItemStatus::Done } else { ItemStatus::Pending },
            at_ms: *at,
            due_ms: None,
            weight: Some(r.weight),
        }));
        ChecklistPayload { items }
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

    fn tick_floor_only(&mut self, now: u64) {
        self.update_turn_records(now);
        if let Some(s) = self.silence_start() {
            self.longest_dead_air = self.longest_dead_air.max(now.saturating_sub(s));
        }
    }
}

fn find<'a>(phrases: &'a [Phrase], words: &[String]) -> Vec<(&'a Phrase, (usize, usize))> {
    let mut all: Vec<(&Phrase, (usize, usize))> =
        phrases.iter().flat_map(|p| p.find_all(words).into_iter().map(move |m| (p, m))).collect();
    all.sort_by_key(|(_, m)| *m);
    // Overlapping matches of different variants count once.
    let mut out: Vec<(&Phrase, (usize, usize))> = Vec::new();
    for m in all {
        if out.last().is_none_or(|l| m.1 .0 >= l.1 .1) {
            out.push(m);
        }
    }
    out
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Rep => "rep",
        Role::Customer => "customer",
        Role::Other => "speaker",
    }
}

fn rule_hint(rule: &PhraseRule, reason: String, trigger: Option<TriggerSpan>, now: u64) -> HintPayload {
    HintPayload {
        id: String::new(),
        rule: rule.id.clone(),
        kind: rule.kind.clone(),
        severity: rule.severity,
        title: rule.title.clone(),
        body: rule.body.clone(),
        reason,
        trigger,
        created_ms: now,
    }
}

fn metric_hint(
    rule: &str,
    kind: &str,
    severity: Severity,
    title: &str,
    body: &str,
    reason: String,
    now: u64,
) -> HintPayload {
    HintPayload {
        id: String::new(),
        rule: rule.into(),
        kind: kind.into(),
        severity,
        title: title.into(),
        body: body.into(),
        reason,
        trigger: None,
        created_ms: now,
    }
}

#[cfg(test)]
mod tests;

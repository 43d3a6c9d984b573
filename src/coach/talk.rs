//! Voice activity and the conversation it makes: who holds the floor, turns, talk
//! time, dead air and patience, and the `metrics` view built from them.

use crate::call::Role;
use crate::coach::{idx, Coach, CoachOutput, MetricsPayload, Voice};

/// Shorter speech by the other party does not take the floor ("uh-huh").
const BACKCHANNEL_MS: u64 = 1_000;
/// A pause this long ends a turn even if nobody else speaks.
const TURN_GAP_MS: u64 = 3_000;
/// Rep speech starting this long into the customer's speech is an interruption.
const INTERRUPT_AFTER_MS: u64 = 300;
/// Longest pause still counted as the rep's "patience" (longer is dead air).
const MAX_PATIENCE_MS: u64 = 10_000;

#[derive(Debug, Default, Clone)]
pub(super) struct ChannelState {
    pub(super) speaking_since: Option<u64>,
    pub(super) last_end: Option<u64>,
    pub(super) talk_ms: u64,
    /// The turn this speaker holds (floor), and where it started.
    pub(super) turn_start: Option<u64>,
    pub(super) longest_turn_ms: u64,
    pub(super) words: u64,
    pub(super) speech_ms: u64,
}

impl ChannelState {
    pub(super) fn talk_at(&self, now: u64) -> u64 {
        self.talk_ms + self.speaking_since.map_or(0, |s| now.saturating_sub(s))
    }

    /// Length of the turn it holds, up to `now`.
    pub(super) fn turn_len(&self, now: u64) -> u64 {
        let Some(start) = self.turn_start else {
            return 0;
        };
        let end = if self.speaking_since.is_some() { now } else { self.last_end.unwrap_or(start) };
        end.saturating_sub(start)
    }
}

impl Coach {
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

    pub(super) fn silence_start(&self) -> Option<u64> {
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

    /// Lets a channel that has spoken long enough take the floor, and keeps the turn
    /// records up to `now`.
    pub(super) fn settle_floor(&mut self, now: u64) {
        for i in 0..2 {
            if let Some(since) = self.ch[i].speaking_since {
                if now.saturating_sub(since) >= BACKCHANNEL_MS {
                    self.take_floor(i, since, now);
                }
            }
        }
        self.update_turn_records(now);
    }

    pub(super) fn tick_floor_only(&mut self, now: u64) {
        self.update_turn_records(now);
        if let Some(s) = self.silence_start() {
            self.longest_dead_air = self.longest_dead_air.max(now.saturating_sub(s));
        }
    }

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
}

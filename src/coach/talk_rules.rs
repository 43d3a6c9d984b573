//! Talk-metric rules: the hints that fire when a conversation metric crosses its
//! playbook threshold (monologue, dead air, talk ratio, interruptions, pace), and the
//! per-final counts (words, questions, fillers, pace) they read.

use crate::coach::{idx, secs, text, Coach, CoachOutput, HintPayload, Severity, TranscriptPayload};

impl Coach {
    /// A final's words, speech time and, for the rep, questions, fillers and pace.
    pub(super) fn count_final(
        &mut self,
        p: &TranscriptPayload,
        words: &[String],
        now: u64,
        out: &mut Vec<CoachOutput>,
    ) {
        if let Some(i) = idx(p.channel) {
            let c = &mut self.ch[i];
            c.words += words.len() as u64;
            let dur = p.end_ms.saturating_sub(p.start_ms);
            c.speech_ms += dur;
            if i == 0 {
                self.questions += p.text.matches('?').count() as u32;
                self.fillers += text::count_matches(&self.pb.fillers, words) as u32;
                self.rep_pace.push_back((words.len() as u64, dur));
                while self.rep_pace.len() > 3 {
                    self.rep_pace.pop_front();
                }
                self.check_pace(now, out);
            }
        }
    }

    pub(super) fn check_monologue(&mut self, now: u64, out: &mut Vec<CoachOutput>) {
        let t = self.pb.thresholds;
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
    }

    /// Dead air (only once the call got going: ringing and hold are not the rep's).
    pub(super) fn check_dead_air(&mut self, now: u64, out: &mut Vec<CoachOutput>) {
        let t = self.pb.thresholds;
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
    }

    pub(super) fn check_talk_ratio(&mut self, now: u64, out: &mut Vec<CoachOutput>) {
        let t = self.pb.thresholds;
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
    }

    pub(super) fn check_interruptions(&mut self, now: u64, out: &mut Vec<CoachOutput>) {
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

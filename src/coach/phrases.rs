//! Phrase rules: playbook triggers and forbidden phrases, matched on a transcript's
//! words, each new occurrence in an utterance a hint that quotes its span.

use std::collections::HashMap;

use crate::call::Role;
use crate::coach::playbook::PhraseRule;
use crate::coach::text::{self, Phrase};
use crate::coach::{Coach, CoachOutput, HintPayload, TranscriptPayload, TriggerSpan};

impl Coach {
    /// Phrase triggers and forbidden phrases: each new occurrence in this utterance.
    /// `fired` counts, per rule, the occurrences already hinted in it.
    pub(super) fn match_phrases(
        &mut self,
        p: &TranscriptPayload,
        text: &str,
        words: &[String],
        fired: &mut HashMap<String, usize>,
        now: u64,
        out: &mut Vec<CoachOutput>,
    ) {
        // Where the matched words were said: their own times when the transcript carries
        // word timings that line up with its text, else the utterance's span.
        let times = word_times(p, words);
        let span = |(a, b): (usize, usize)| {
            let (start_ms, end_ms) = match &times {
                Some(t) => (t[a].0, t[b - 1].1),
                None => (p.start_ms, p.end_ms),
            };
            TriggerSpan {
                channel: p.channel,
                utterance_id: p.utterance_id.clone(),
                text: text.to_string(),
                matched: words[a..b].join(" "),
                start_ms,
                end_ms,
            }
        };
        let pb = self.pb.clone();
        for (rule, default_cooldown) in
            pb.triggers.iter().map(|r| (r, pb.thresholds.cooldown_ms)).chain(pb.forbidden.iter().map(|r| (r, 0)))
        {
            if !rule.channel.hears(p.channel) {
                continue;
            }
            let matches = find(&rule.phrases, words);
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
                    self.hint(rule_hint(rule, reason, Some(span((*a, *b))), now), out);
                }
            }
        }
    }
}

/// Start and end (ms) of each of `words` (the normalised words of the text the rules
/// saw: a partial's stable words are the first of its timed words); `None` when the
/// timed words do not spell those words (no timings, or the text was changed).
fn word_times(p: &TranscriptPayload, words: &[String]) -> Option<Vec<(u64, u64)>> {
    let mut out = Vec::with_capacity(words.len());
    for w in p.words.as_ref()? {
        for part in text::words(&w.text) {
            if out.len() == words.len() {
                return Some(out);
            }
            if part != words[out.len()] {
                return None;
            }
            out.push((w.start_ms, w.end_ms));
        }
    }
    (out.len() == words.len()).then_some(out)
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

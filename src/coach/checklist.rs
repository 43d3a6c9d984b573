//! Required phrases (compliance, each due within a time) and the checklist: matched
//! on a transcript's words, missed at their deadline, and the checklist view.

use crate::coach::{secs, text, ChecklistItem, ChecklistPayload, Coach, CoachOutput, HintPayload, ItemStatus};
use crate::events::TranscriptPayload;

#[derive(Debug, Clone)]
pub(super) struct RequiredState {
    pub(super) status: ItemStatus,
    pub(super) at_ms: Option<u64>,
}

impl Coach {
    /// Required phrases and the checklist items this transcript says; whether any
    /// changed.
    pub(super) fn match_checklist(&mut self, p: &TranscriptPayload, words: &[String]) -> bool {
        let pb = self.pb.clone();
        let mut changed = false;
        for (k, rule) in pb.required.iter().enumerate() {
            let st = &mut self.required[k];
            if matches!(st.status, ItemStatus::Done | ItemStatus::Late) || !rule.channel.hears(p.channel) {
                continue;
            }
            if text::first_match(&rule.phrases, words).is_some() {
                st.at_ms = Some(p.start_ms);
                st.status = if p.start_ms <= rule.within_ms { ItemStatus::Done } else { ItemStatus::Late };
                changed = true;
            }
        }
        for (k, rule) in pb.checklist.iter().enumerate() {
            if self.checklist[k].is_none()
                && rule.channel.hears(p.channel)
                && text::first_match(&rule.phrases, words).is_some()
            {
                self.checklist[k] = Some(p.start_ms);
                changed = true;
            }
        }
        changed
    }

    pub(super) fn check_deadlines(&mut self, now: u64, ending: bool, out: &mut Vec<CoachOutput>) {
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
}

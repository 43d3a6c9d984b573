//! The end-of-call scorecard: a weighted mean of the parts that apply to the call
//! (checklist, compliance, talk ratio, monologue, patience), each with its reason.

use crate::coach::{secs, Coach, ItemStatus, ScorePart, ScorecardPayload};

impl Coach {
    pub(super) fn scorecard(&self, now: u64) -> ScorecardPayload {
        let m = self.metrics(now);
        let t = self.pb.thresholds;
        let w = self.pb.score;
        let mut parts = Vec::new();
        let total_weight: f64 = self.pb.checklist.iter().map(|c| c.weight).sum();
        if total_weight > 0.0 {
            let done: f64 = self
                .pb
                .checklist
                .iter()
                .zip(&self.checklist)
                .filter(|(_, at)| at.is_some())
                .map(|(c, _)| c.weight)
                .sum::<f64>()
                // An empty f64 sum is -0.0; printed it reads "-0 %".
                + 0.0;
            let n = self.checklist.iter().filter(|a| a.is_some()).count();
            parts.push(ScorePart {
                name: "checklist".into(),
                weight: w.checklist,
                value: done / total_weight,
                reason: format!("{n} of {} checklist items done", self.checklist.len()),
            });
        }
        if !self.pb.required.is_empty() || !self.pb.forbidden.is_empty() {
            let on_time = self.required.iter().filter(|s| s.status == ItemStatus::Done).count();
            let forbidden_hits = self.hints.iter().filter(|h| h.kind == "compliance.forbidden").count();
            let req = if self.required.is_empty() { 1.0 } else { on_time as f64 / self.required.len() as f64 };
            parts.push(ScorePart {
                name: "compliance".into(),
                weight: w.compliance,
                value: (req - 0.5 * forbidden_hits as f64).max(0.0),
                reason: format!(
                    "{on_time} of {} required phrases on time, {forbidden_hits} forbidden phrase(s)",
                    self.required.len()
                ),
            });
        }
        if let Some(r) = m.talk_ratio.filter(|_| m.rep_talk_ms + m.customer_talk_ms >= 10_000) {
            let off = if r > t.talk_ratio_max {
                r - t.talk_ratio_max
            } else if r < t.talk_ratio_min {
                t.talk_ratio_min - r
            } else {
                0.0
            };
            parts.push(ScorePart {
                name: "talk_ratio".into(),
                weight: w.talk_ratio,
                value: (1.0 - off / 0.35_f64).clamp(0.0, 1.0),
                reason: format!(
                    "rep talked {:.0}% of the time (target {:.0}–{:.0}%)",
                    r * 100.0,
                    t.talk_ratio_min * 100.0,
                    t.talk_ratio_max * 100.0
                ),
            });
        }
        if m.rep_talk_ms > 0 {
            let longest = m.longest_rep_monologue_ms;
            parts.push(ScorePart {
                name: "monologue".into(),
                weight: w.monologue,
                value: if longest <= t.monologue_ms { 1.0 } else { t.monologue_ms as f64 / longest as f64 },
                reason: format!("longest rep monologue {} (limit {})", secs(longest), secs(t.monologue_ms)),
            });
        }
        if let Some(p) = m.patience_ms {
            parts.push(ScorePart {
                name: "patience".into(),
                weight: w.patience,
                value: (p as f64 / 600.0).min(1.0),
                reason: format!("the rep waited {p} ms on average before answering (aim for 600 ms or more)"),
            });
        }
        let wsum: f64 = parts.iter().map(|p| p.weight).sum();
        let score = if wsum > 0.0 { parts.iter().map(|p| p.weight * p.value).sum::<f64>() / wsum * 100.0 } else { 0.0 };
        ScorecardPayload {
            score: (score * 10.0).round() / 10.0,
            parts,
            metrics: m,
            checklist: self.checklist_payload().items,
            hints: self.hints.clone(),
        }
    }
}

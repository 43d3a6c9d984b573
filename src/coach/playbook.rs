//! The tenant playbook (TOML): thresholds of the metric hints, phrase triggers
//! (competitors, objections, keywords), required phrases with deadlines, forbidden
//! phrases, a checklist and the scorecard's weights; `[campaigns.NAME]` overrides any
//! of them for one campaign (rules replaced or added by `id`, removed with `disable`).
//! Parsing is pure; the server re-reads the file when it changes (next call).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::call::Role;
use crate::coach::text::Phrase;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PlaybookError {
    #[error("{0}")]
    Syntax(String),
    #[error("`{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> PlaybookError {
    PlaybookError::Invalid { key: key.into(), message: message.into() }
}

pub use crate::events::coaching::Severity;

/// Which speaker a rule listens to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    Rep,
    Customer,
    Any,
}

impl Speaker {
    pub fn hears(self, role: Role) -> bool {
        match self {
            Speaker::Any => true,
            Speaker::Rep => role == Role::Rep,
            Speaker::Customer => role == Role::Customer,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdsFile {
    /// A rep turn longer than this → "monologue" hint.
    #[serde(default, with = "humantime_serde")]
    pub monologue: Option<Duration>,
    /// Rep pace over their recent sentences above this → "too fast".
    pub fast_wpm: Option<f64>,
    /// Nobody speaking this long (after the call got going) → "dead air".
    #[serde(default, with = "humantime_serde")]
    pub dead_air: Option<Duration>,
    /// Rep share of talk time above this (after `talk_ratio_after` of talk) → hint.
    pub talk_ratio_max: Option<f64>,
    /// Rep share below this → hint (0 = never).
    pub talk_ratio_min: Option<f64>,
    #[serde(default, with = "humantime_serde")]
    pub talk_ratio_after: Option<Duration>,
    /// This many interruptions within `interruption_window` → hint.
    pub interruptions: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub interruption_window: Option<Duration>,
    /// Default minimum time between two hints of one rule.
    #[serde(default, with = "humantime_serde")]
    pub cooldown: Option<Duration>,
    /// How long after a required phrase's deadline to wait for late transcripts before
    /// alerting.
    #[serde(default, with = "humantime_serde")]
    pub decision_grace: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub monologue_ms: u64,
    pub fast_wpm: f64,
    pub dead_air_ms: u64,
    pub talk_ratio_max: f64,
    pub talk_ratio_min: f64,
    pub talk_ratio_after_ms: u64,
    pub interruptions: u32,
    pub interruption_window_ms: u64,
    pub cooldown_ms: u64,
    pub decision_grace_ms: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            monologue_ms: 60_000,
            fast_wpm: 190.0,
            dead_air_ms: 10_000,
            talk_ratio_max: 0.65,
            talk_ratio_min: 0.0,
            talk_ratio_after_ms: 60_000,
            interruptions: 3,
            interruption_window_ms: 120_000,
            cooldown_ms: 60_000,
            decision_grace_ms: 2_000,
        }
    }
}

fn ms(d: Option<Duration>) -> Option<u64> {
    d.map(|d| d.as_millis() as u64)
}

impl Thresholds {
    fn apply(&mut self, f: &ThresholdsFile) {
        let t = self;
        t.monologue_ms = ms(f.monologue).unwrap_or(t.monologue_ms);
        t.fast_wpm = f.fast_wpm.unwrap_or(t.fast_wpm);
        t.dead_air_ms = ms(f.dead_air).unwrap_or(t.dead_air_ms);
        t.talk_ratio_max = f.talk_ratio_max.unwrap_or(t.talk_ratio_max);
        t.talk_ratio_min = f.talk_ratio_min.unwrap_or(t.talk_ratio_min);
        t.talk_ratio_after_ms = ms(f.talk_ratio_after).unwrap_or(t.talk_ratio_after_ms);
        t.interruptions = f.interruptions.unwrap_or(t.interruptions);
        t.interruption_window_ms = ms(f.interruption_window).unwrap_or(t.interruption_window_ms);
        t.cooldown_ms = ms(f.cooldown).unwrap_or(t.cooldown_ms);
        t.decision_grace_ms = ms(f.decision_grace).unwrap_or(t.decision_grace_ms);
    }
}

fn default_any() -> Speaker {
    Speaker::Any
}
fn default_rep() -> Speaker {
    Speaker::Rep
}
fn default_weight() -> f64 {
    1.0
}
fn default_critical() -> Severity {
    Severity::Critical
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerFile {
    pub id: String,
    /// `competitor`, `objection`, `keyword` or anything the overlay should group by.
    #[serde(default = "default_kind")]
    pub kind: String,
    #[serde(default = "default_any")]
    pub channel: Speaker,
    pub phrases: Vec<String>,
    #[serde(default)]
    pub severity: Severity,
    pub title: String,
    #[serde(default)]
    pub body: String,
    #[serde(default, with = "humantime_serde")]
    pub cooldown: Option<Duration>,
}

fn default_kind() -> String {
    "keyword".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequiredFile {
    pub id: String,
    #[serde(default = "default_rep")]
    pub channel: Speaker,
    pub phrases: Vec<String>,
    /// Must be said within this much of the call's start.
    #[serde(with = "humantime_serde")]
    pub within: Duration,
    #[serde(default = "default_critical")]
    pub severity: Severity,
    /// Checklist label.
    pub label: String,
    pub title: String,
    #[serde(default)]
    pub body: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForbiddenFile {
    pub id: String,
    #[serde(default = "default_rep")]
    pub channel: Speaker,
    pub phrases: Vec<String>,
    #[serde(default = "default_critical")]
    pub severity: Severity,
    pub title: String,
    #[serde(default)]
    pub body: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecklistFile {
    pub id: String,
    pub label: String,
    #[serde(default = "default_rep")]
    pub channel: Speaker,
    pub phrases: Vec<String>,
    #[serde(default = "default_weight")]
    pub weight: f64,
}

/// Weights of the scorecard's parts (any scale; normalised).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScoreWeights {
    #[serde(default = "w_checklist")]
    pub checklist: f64,
    #[serde(default = "w_compliance")]
    pub compliance: f64,
    #[serde(default = "w_talk_ratio")]
    pub talk_ratio: f64,
    #[serde(default = "w_monologue")]
    pub monologue: f64,
    #[serde(default = "w_patience")]
    pub patience: f64,
}
fn w_checklist() -> f64 {
    40.0
}
fn w_compliance() -> f64 {
    30.0
}
fn w_talk_ratio() -> f64 {
    15.0
}
fn w_monologue() -> f64 {
    10.0
}
fn w_patience() -> f64 {
    5.0
}
impl Default for ScoreWeights {
    fn default() -> Self {
        Self {
            checklist: w_checklist(),
            compliance: w_compliance(),
            talk_ratio: w_talk_ratio(),
            monologue: w_monologue(),
            patience: w_patience(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    #[serde(default)]
    pub thresholds: ThresholdsFile,
    /// Rep filler words/phrases counted in the metrics (default: um, uh, erm, …).
    #[serde(default)]
    pub fillers: Option<Vec<String>>,
    #[serde(default)]
    pub triggers: Vec<TriggerFile>,
    #[serde(default)]
    pub required: Vec<RequiredFile>,
    #[serde(default)]
    pub forbidden: Vec<ForbiddenFile>,
    #[serde(default)]
    pub checklist: Vec<ChecklistFile>,
    #[serde(default)]
    pub score: Option<ScoreWeights>,
    /// (Campaign overrides only) rule ids of the base playbook to drop.
    #[serde(default)]
    pub disable: Vec<String>,
}

/// A playbook file: the base rules at the top level, overrides in `[campaigns.NAME]`.
#[derive(Debug, Clone, Default)]
pub struct PlaybookFile {
    pub base: RulesFile,
    pub campaigns: BTreeMap<String, RulesFile>,
}

pub const DEFAULT_FILLERS: &[&str] =
    &["um", "uh", "erm", "uhm", "hmm", "you know", "i mean", "kind of", "sort of", "basically"];

/// A compiled rule that listens for phrases.
#[derive(Debug, Clone)]
pub struct PhraseRule {
    pub id: String,
    pub kind: String,
    pub channel: Speaker,
    pub phrases: Vec<Phrase>,
    pub severity: Severity,
    pub title: String,
    pub body: String,
    pub cooldown_ms: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct RequiredRule {
    pub id: String,
    pub channel: Speaker,
    pub phrases: Vec<Phrase>,
    pub within_ms: u64,
    pub severity: Severity,
    pub label: String,
    pub title: String,
    pub body: String,
}

#[derive(Debug, Clone)]
pub struct ChecklistRule {
    pub id: String,
    pub label: String,
    pub channel: Speaker,
    pub phrases: Vec<Phrase>,
    pub weight: f64,
}

/// A playbook resolved for one campaign, ready for the engine.
#[derive(Debug, Clone)]
pub struct Playbook {
    pub thresholds: Thresholds,
    pub fillers: Vec<Phrase>,
    pub triggers: Vec<PhraseRule>,
    pub required: Vec<RequiredRule>,
    pub forbidden: Vec<PhraseRule>,
    pub checklist: Vec<ChecklistRule>,
    pub score: ScoreWeights,
}

impl Default for Playbook {
    fn default() -> Self {
        Self {
            thresholds: Thresholds::default(),
            fillers: DEFAULT_FILLERS.iter().filter_map(|f| Phrase::new(f)).collect(),
            triggers: Vec::new(),
            required: Vec::new(),
            forbidden: Vec::new(),
            checklist: Vec::new(),
            score: ScoreWeights::default(),
        }
    }
}

fn compile(key: &str, phrases: &[String]) -> Result<Vec<Phrase>, PlaybookError> {
    if phrases.is_empty() {
        return Err(invalid(format!("{key}.phrases"), "needs at least one phrase"));
    }
    phrases
        .iter()
        .map(|p| Phrase::new(p).ok_or_else(|| invalid(format!("{key}.phrases"), format!("{p:?} has no words"))))
        .collect()
}

fn merge_by_id<T: Clone>(base: &mut Vec<T>, over: &[T], id: impl Fn(&T) -> &str) {
    for o in over {
        match base.iter_mut().find(|b| id(b) == id(o)) {
            Some(b) => *b = o.clone(),
            None => base.push(o.clone()),
        }
    }
}

impl PlaybookFile {
    pub fn parse(text: &str) -> Result<PlaybookFile, PlaybookError> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| PlaybookError::Syntax(e.to_string()))?;
        fn de<T: serde::de::DeserializeOwned>(v: toml::Value, prefix: &str) -> Result<T, PlaybookError> {
            serde_path_to_error::deserialize(v).map_err(|e| {
                let key = e.path().to_string();
                let key = if key == "." { String::new() } else { key };
                let full = format!("{prefix}{key}");
                invalid(
                    if full.is_empty() { "(root)".into() } else { full.trim_end_matches('.').to_string() },
                    e.into_inner().to_string(),
                )
            })
        }
        let campaigns = match table.remove("campaigns") {
            None => BTreeMap::new(),
            Some(toml::Value::Table(t)) => {
                let mut out = BTreeMap::new();
                for (name, v) in t {
                    out.insert(name.clone(), de::<RulesFile>(v, &format!("campaigns.{name}."))?);
                }
                out
            }
            Some(_) => return Err(invalid("campaigns", "must be a table of campaign names")),
        };
        let file = PlaybookFile { base: de(toml::Value::Table(table), "")?, campaigns };
        // Every campaign must resolve: errors surface at load, not at a call.
        file.resolve(None)?;
        for name in file.campaigns.keys() {
            file.resolve(Some(name)).map_err(|e| match e {
                PlaybookError::Invalid { key, message } => invalid(format!("campaigns.{name}: {key}"), message),
                other => other,
            })?;
        }
        Ok(file)
    }

    /// The rules for a call of `campaign` (the base rules when it has no override).
    pub fn resolve(&self, campaign: Option<&str>) -> Result<Playbook, PlaybookError> {
        let mut rules = self.base.clone();
        let mut thresholds = Thresholds::default();
        thresholds.apply(&self.base.thresholds);
        if let Some(over) = campaign.and_then(|c| self.campaigns.get(c)) {
            thresholds.apply(&over.thresholds);
            if over.fillers.is_some() {
                rules.fillers = over.fillers.clone();
            }
            if over.score.is_some() {
                rules.score = over.score;
            }
            merge_by_id(&mut rules.triggers, &over.triggers, |r| &r.id);
            merge_by_id(&mut rules.required, &over.required, |r| &r.id);
            merge_by_id(&mut rules.forbidden, &over.forbidden, |r| &r.id);
            merge_by_id(&mut rules.checklist, &over.checklist, |r| &r.id);
            let off: BTreeSet<&str> = over.disable.iter().map(String::as_str).collect();
            rules.triggers.retain(|r| !off.contains(r.id.as_str()));
            rules.required.retain(|r| !off.contains(r.id.as_str()));
            rules.forbidden.retain(|r| !off.contains(r.id.as_str()));
            rules.checklist.retain(|r| !off.contains(r.id.as_str()));
        }
        let t = &thresholds;
        if !(0.0..=1.0).contains(&t.talk_ratio_max)
            || !(0.0..=1.0).contains(&t.talk_ratio_min)
            || t.talk_ratio_min > t.talk_ratio_max
        {
            return Err(invalid("thresholds.talk_ratio_max", "talk ratios are shares between 0 and 1, min ≤ max"));
        }
        if t.fast_wpm <= 0.0 || t.monologue_ms == 0 || t.dead_air_ms == 0 || t.interruptions == 0 {
            return Err(invalid("thresholds", "fast_wpm, monologue, dead_air and interruptions must be positive"));
        }
        let mut ids = BTreeSet::new();
        let mut unique = |id: &str, key: &str| -> Result<(), PlaybookError> {
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                return Err(invalid(format!("{key}.id"), format!("{id:?}: use letters, digits, '-', '_', '.'")));
            }
            if !ids.insert(id.to_string()) {
                return Err(invalid(format!("{key}.id"), format!("duplicate rule id {id:?}")));
            }
            Ok(())
        };
        let mut triggers = Vec::new();
        for (i, r) in rules.triggers.iter().enumerate() {
            let key = format!("triggers[{i}]");
            unique(&r.id, &key)?;
            triggers.push(PhraseRule {
                id: r.id.clone(),
                kind: r.kind.clone(),
                channel: r.channel,
                phrases: compile(&key, &r.phrases)?,
                severity: r.severity,
                title: r.title.clone(),
                body: r.body.clone(),
                cooldown_ms: ms(r.cooldown),
            });
        }
        let mut required = Vec::new();
        for (i, r) in rules.required.iter().enumerate() {
            let key = format!("required[{i}]");
            unique(&r.id, &key)?;
            if r.within.is_zero() {
                return Err(invalid(format!("{key}.within"), "must be more than 0s"));
            }
            required.push(RequiredRule {
                id: r.id.clone(),
                channel: r.channel,
                phrases: compile(&key, &r.phrases)?,
                within_ms: r.within.as_millis() as u64,
                severity: r.severity,
                label: r.label.clone(),
                title: r.title.clone(),
                body: r.body.clone(),
            });
        }
        let mut forbidden = Vec::new();
        for (i, r) in rules.forbidden.iter().enumerate() {
            let key = format!("forbidden[{i}]");
            unique(&r.id, &key)?;
            forbidden.push(PhraseRule {
                id: r.id.clone(),
                kind: "compliance.forbidden".into(),
                channel: r.channel,
                phrases: compile(&key, &r.phrases)?,
                severity: r.severity,
                title: r.title.clone(),
                body: r.body.clone(),
                cooldown_ms: Some(0),
            });
        }
        let mut checklist = Vec::new();
        for (i, r) in rules.checklist.iter().enumerate() {
            let key = format!("checklist[{i}]");
            unique(&r.id, &key)?;
            if !(r.weight >= 0.0 && r.weight.is_finite()) {
                return Err(invalid(format!("{key}.weight"), "must be a number ≥ 0"));
            }
            checklist.push(ChecklistRule {
                id: r.id.clone(),
                label: r.label.clone(),
                channel: r.channel,
                phrases: compile(&key, &r.phrases)?,
                weight: r.weight,
            });
        }
        let fillers = match &rules.fillers {
            Some(f) => f.iter().filter_map(|p| Phrase::new(p)).collect(),
            None => Playbook::default().fillers,
        };
        let score = rules.score.unwrap_or_default();
        let parts = [score.checklist, score.compliance, score.talk_ratio, score.monologue, score.patience];
        if parts.iter().any(|w| !(w.is_finite() && *w >= 0.0)) || parts.iter().sum::<f64>() <= 0.0 {
            return Err(invalid("score", "weights must be ≥ 0 and not all 0"));
        }
        Ok(Playbook { thresholds, fillers, triggers, required, forbidden, checklist, score })
    }
}

#[cfg(test)]
mod tests;

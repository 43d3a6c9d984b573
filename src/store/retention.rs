//! Retention: which stored objects are due for deletion (pure; no IO, no clock).
//!
//! `plan(now, calls, policies, holds)` is the whole decision. The sweeper feeds it
//! what the store holds and carries out what it returns; tests feed it anything.
//! Rules:
//! - A call's audio expires `days` after the call started: the tenant's plan
//!   (7/30/90/365 or any number of days), or its campaign's override.
//! - Other kinds (transcript, coaching) follow the audio unless the tenant or the
//!   campaign names a retention for that kind.
//! - The manifest goes with the last part of the call; then the call leaves a tombstone.
//! - A hold (legal hold on the call, or on the whole tenant) keeps everything.
//! - A tenant without a policy keeps everything (counted, never guessed).

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;

use crate::call::CallId;

/// What a stored file is, for retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Audio,
    Transcript,
    Coaching,
    Manifest,
}

impl Kind {
    pub fn of(file: &str) -> Kind {
        match file {
            "manifest.json" => Kind::Manifest,
            f if f.starts_with("transcript") => Kind::Transcript,
            "hints.json" | "scorecard.json" => Kind::Coaching,
            _ => Kind::Audio,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Audio => "audio",
            Kind::Transcript => "transcript",
            Kind::Coaching => "coaching",
            Kind::Manifest => "manifest",
        }
    }
}

/// Days per data kind; unset kinds follow the audio.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindDays {
    pub transcript: Option<u32>,
    pub coaching: Option<u32>,
}

impl KindDays {
    fn get(&self, k: Kind) -> Option<u32> {
        match k {
            Kind::Transcript => self.transcript,
            Kind::Coaching => self.coaching,
            Kind::Audio | Kind::Manifest => None,
        }
    }

    fn all(&self) -> impl Iterator<Item = u32> + '_ {
        [self.transcript, self.coaching].into_iter().flatten()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CampaignPolicy {
    pub days: Option<u32>,
    pub kinds: KindDays,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPolicy {
    /// The plan: days the audio is kept.
    pub days: u32,
    pub kinds: KindDays,
    pub campaigns: BTreeMap<String, CampaignPolicy>,
    /// Legal hold on every call of the tenant.
    pub hold: bool,
}

impl TenantPolicy {
    pub fn days(days: u32) -> Self {
        TenantPolicy { days, kinds: KindDays::default(), campaigns: BTreeMap::new(), hold: false }
    }

    /// Days a kind of data of a call in `campaign` is kept.
    pub fn days_for(&self, campaign: Option<&str>, kind: Kind) -> u32 {
        let c = campaign.and_then(|c| self.campaigns.get(c));
        let audio = c.and_then(|c| c.days).unwrap_or(self.days);
        c.and_then(|c| c.kinds.get(kind)).or_else(|| self.kinds.get(kind)).unwrap_or(audio)
    }

    /// The shortest retention anything of this tenant can have: calls younger than
    /// this need no closer look.
    pub fn min_days(&self) -> u32 {
        std::iter::once(self.days)
            .chain(self.kinds.all())
            .chain(self.campaigns.values().flat_map(|c| c.days.into_iter().chain(c.kinds.all())))
            .min()
            .unwrap_or(self.days)
    }
}

pub type Policies = BTreeMap<String, TenantPolicy>;

/// One stored call as the sweeper found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCall {
    pub tenant: String,
    pub call_id: CallId,
    pub started_at: DateTime<Utc>,
    pub campaign: Option<String>,
    /// File name and stored size.
    pub objects: Vec<(String, u64)>,
}

/// Objects of one call to delete now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub tenant: String,
    pub call_id: CallId,
    /// File names, the manifest (if any) last.
    pub delete: Vec<String>,
    /// Everything of the call goes: leave a tombstone first.
    pub whole_call: bool,
    pub bytes: u64,
    /// When the oldest of these objects fell due.
    pub due_since: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Calls kept only because of a hold.
    pub held: usize,
    /// Calls of tenants with no policy (kept).
    pub no_policy: usize,
}

/// When a kind of data of a call expires.
pub fn expiry(policy: &TenantPolicy, call: &StoredCall, kind: Kind) -> DateTime<Utc> {
    let days = |k| Duration::days(i64::from(policy.days_for(call.campaign.as_deref(), k)));
    match kind {
        // The record of the call lasts as long as any part of it.
        Kind::Manifest => {
            call.started_at + [Kind::Audio, Kind::Transcript, Kind::Coaching].into_iter().map(days).max().unwrap()
        }
        k => call.started_at + days(k),
    }
}

pub fn plan(now: DateTime<Utc>, calls: &[StoredCall], policies: &Policies, holds: &HashSet<(String, CallId)>) -> Plan {
    let mut out = Plan::default();
    for call in calls {
        let Some(policy) = policies.get(&call.tenant) else {
            out.no_policy += 1;
            continue;
        };
        let mut due: Vec<(&str, u64, DateTime<Utc>)> = call
            .objects
            .iter()
            .map(|(name, bytes)| (name.as_str(), *bytes, expiry(policy, call, Kind::of(name))))
            .filter(|(_, _, at)| *at <= now)
            .collect();
        if due.is_empty() {
            continue;
        }
        if policy.hold || holds.contains(&(call.tenant.clone(), call.call_id)) {
            out.held += 1;
            continue;
        }
        let whole_call = due.len() == call.objects.len() || expiry(policy, call, Kind::Manifest) <= now;
        due.sort_by_key(|(name, _, _)| (Kind::of(name) == Kind::Manifest, *name));
        out.actions.push(Action {
            tenant: call.tenant.clone(),
            call_id: call.call_id,
            bytes: due.iter().map(|d| d.1).sum(),
            due_since: due.iter().map(|d| d.2).min().unwrap(),
            delete: due.into_iter().map(|d| d.0.to_string()).collect(),
            whole_call,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn call(tenant: &str, started: DateTime<Utc>, campaign: Option<&str>) -> StoredCall {
        StoredCall {
            tenant: tenant.into(),
            call_id: CallId::new_at(started),
            started_at: started,
            campaign: campaign.map(str::to_string),
            objects: ["audio.wav", "manifest.json", "transcript.json", "hints.json"]
                .iter()
                .map(|n| (n.to_string(), 10))
                .collect(),
        }
    }

    #[test]
    fn each_plan_deletes_exactly_when_due() {
        let mut policies = Policies::new();
        for (t, d) in [("d7", 7), ("d30", 30), ("d90", 90), ("d365", 365)] {
            policies.insert(t.into(), TenantPolicy::days(d));
        }
        for (t, d) in [("d7", 7i64), ("d30", 30), ("d90", 90), ("d365", 365)] {
            let calls = vec![call(t, t0(), None)];
            let due = t0() + Duration::days(d);
            let before = plan(due - Duration::seconds(1), &calls, &policies, &HashSet::new());
            assert!(before.actions.is_empty(), "{t}: nothing before expiry");
            let at = plan(due, &calls, &policies, &HashSet::new());
            assert_eq!(at.actions.len(), 1, "{t}: deleted at expiry");
            assert!(at.actions[0].whole_call);
            assert_eq!(at.actions[0].delete.last().unwrap(), "manifest.json", "the manifest goes last");
        }
    }

    #[test]
    fn campaign_and_kind_overrides() {
        let mut p = TenantPolicy::days(30);
        p.kinds.transcript = Some(90);
        p.campaigns.insert("sales".into(), CampaignPolicy { days: Some(7), kinds: KindDays::default() });
        p.campaigns.insert(
            "legal".into(),
            CampaignPolicy { days: Some(365), kinds: KindDays { transcript: None, coaching: Some(30) } },
        );
        assert_eq!(p.min_days(), 7);
        let policies = Policies::from([("t".to_string(), p)]);
        let sales = call("t", t0(), Some("sales"));
        let legal = call("t", t0(), Some("legal"));
        let plain = call("t", t0(), None);
        let calls = vec![sales.clone(), legal.clone(), plain.clone()];
        let at = |d: i64| plan(t0() + Duration::days(d), &calls, &policies, &HashSet::new());
        // day 7: the sales call's audio and coaching, its transcript stays (90, tenant-wide)
        let p7 = at(7);
        assert_eq!(p7.actions.len(), 1);
        assert_eq!(p7.actions[0].call_id, sales.call_id);
        assert_eq!(p7.actions[0].delete, vec!["audio.wav", "hints.json"]);
        assert!(!p7.actions[0].whole_call);
        // day 30: plain call's audio + hints, legal call's hints (coaching 30)
        let p30 = at(30);
        let by = |id| p30.actions.iter().find(|a| a.call_id == id).map(|a| a.delete.clone());
        assert_eq!(by(plain.call_id).unwrap(), vec!["audio.wav", "hints.json"]);
        assert_eq!(by(legal.call_id).unwrap(), vec!["hints.json"]);
        // day 90: transcripts of sales and plain go, and with them the whole call
        let p90 = at(90);
        assert!(p90.actions.iter().filter(|a| a.call_id != legal.call_id).all(|a| a.whole_call));
        assert!(p90.actions.iter().all(|a| a.call_id != legal.call_id || !a.whole_call));
        let p365 = at(365);
        assert!(p365.actions.iter().any(|a| a.call_id == legal.call_id && a.whole_call));
    }

    #[test]
    fn holds_keep_calls_and_unknown_tenants_are_kept() {
        let mut policies = Policies::from([("t".to_string(), TenantPolicy::days(7))]);
        let c = call("t", t0(), None);
        let stray = call("gone", t0(), None);
        let late = t0() + Duration::days(100);
        let holds = HashSet::from([("t".to_string(), c.call_id)]);
        let p = plan(late, &[c.clone(), stray], &policies, &holds);
        assert!(p.actions.is_empty());
        assert_eq!((p.held, p.no_policy), (1, 1));
        // released: goes at the next sweep
        assert_eq!(plan(late, std::slice::from_ref(&c), &policies, &HashSet::new()).actions.len(), 1);
        policies.get_mut("t").unwrap().hold = true;
        assert_eq!(plan(late, &[c], &policies, &HashSet::new()).held, 1);
    }

    /// xorshift: enough randomness for a property test without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn property_never_early_never_missed() {
        let mut rng = Rng(0x9e3779b97f4a7c15);
        let files = ["audio.wav", "manifest.json", "transcript.json", "transcript.txt", "hints.json", "scorecard.json"];
        let day_choices = [1u32, 7, 30, 90, 365, 45];
        for _case in 0..300 {
            let mut policies = Policies::new();
            for t in ["a", "b", "c"] {
                let mut p = TenantPolicy::days(day_choices[rng.below(6) as usize]);
                if rng.below(2) == 0 {
                    p.kinds.transcript = Some(day_choices[rng.below(6) as usize]);
                }
                if rng.below(3) == 0 {
                    p.kinds.coaching = Some(day_choices[rng.below(6) as usize]);
                }
                for camp in ["x", "y"] {
                    if rng.below(2) == 0 {
                        let kinds = KindDays {
                            transcript: (rng.below(2) == 0).then(|| day_choices[rng.below(6) as usize]),
                            coaching: None,
                        };
                        p.campaigns.insert(
                            camp.into(),
                            CampaignPolicy {
                                days: (rng.below(3) > 0).then(|| day_choices[rng.below(6) as usize]),
                                kinds,
                            },
                        );
                    }
                }
                p.hold = rng.below(10) == 0;
                policies.insert(t.into(), p);
            }
            let mut calls = Vec::new();
            let mut holds = HashSet::new();
            for _ in 0..20 {
                let tenant = ["a", "b", "c", "z"][rng.below(4) as usize];
                let started = t0() + Duration::seconds(rng.below(400 * 86_400) as i64);
                let campaign = [None, Some("x"), Some("y"), Some("w")][rng.below(4) as usize].map(str::to_string);
                let mut objects = Vec::new();
                for f in files {
                    if rng.below(4) > 0 {
                        objects.push((f.to_string(), rng.below(1000)));
                    }
                }
                let c = StoredCall {
                    tenant: tenant.into(),
                    call_id: CallId::new_at(started),
                    started_at: started,
                    campaign,
                    objects,
                };
                if rng.below(8) == 0 {
                    holds.insert((c.tenant.clone(), c.call_id));
                }
                calls.push(c);
            }
            let now = t0() + Duration::seconds(rng.below(800 * 86_400) as i64);
            let p = plan(now, &calls, &policies, &holds);
            for c in &calls {
                let action = p.actions.iter().find(|a| a.call_id == c.call_id);
                let Some(policy) = policies.get(&c.tenant) else {
                    assert!(action.is_none(), "no policy: kept");
                    continue;
                };
                let held = policy.hold || holds.contains(&(c.tenant.clone(), c.call_id));
                for (name, _) in &c.objects {
                    let exp = expiry(policy, c, Kind::of(name));
                    let deleted = action.is_some_and(|a| a.delete.contains(name));
                    assert!(!deleted || exp <= now, "never before expiry: {name}");
                    assert!(!deleted || !held, "never while held");
                    assert_eq!(deleted, exp <= now && !held, "everything expired and not held goes: {name}");
                }
                if let Some(a) = action {
                    assert_eq!(
                        a.whole_call,
                        a.delete.len() == c.objects.len() || expiry(policy, c, Kind::Manifest) <= now
                    );
                    if a.delete.iter().any(|n| n == "manifest.json") {
                        assert_eq!(a.delete.last().unwrap(), "manifest.json");
                    }
                }
            }
        }
    }
}

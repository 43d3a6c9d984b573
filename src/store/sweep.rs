//! The retention sweep: reads what the store holds, plans with `store::retention::plan`
//! and carries the plan out (tombstones, deletions). `store::sweeper` runs it on a timer.

use std::collections::{BTreeMap, BTreeSet};

use crate::call::CallId;
use crate::store::objects::{CallRef, StorageError, Store};

/// What one retention sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub calls_seen: usize,
    pub calls_deleted: usize,
    pub objects_deleted: usize,
    pub bytes_deleted: u64,
    pub held: usize,
    /// Calls that were due more than `overdue_after` before this sweep.
    pub overdue: usize,
    /// Calls skipped because their manifest could not be read (upload in progress,
    /// or keys destroyed).
    pub unreadable: usize,
    pub errors: usize,
    /// Tenants something was deleted of.
    pub tenants_touched: BTreeSet<String>,
}

/// Options of a sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// Only plan (`earshot retention plan`): nothing is deleted.
    pub dry_run: bool,
    /// Stop after this many object deletions (tests: a sweep that crashes midway).
    pub max_deletes: Option<usize>,
    /// A call due longer ago than this counts as overdue.
    pub overdue_after: chrono::Duration,
}

impl Default for SweepOptions {
    fn default() -> Self {
        SweepOptions { dry_run: false, max_deletes: None, overdue_after: chrono::Duration::days(1) }
    }
}

/// What retention reads of a manifest.
#[derive(serde::Deserialize)]
struct CampaignOf {
    #[serde(default)]
    campaign: Option<String>,
}

/// Remembers calls' campaigns between sweeps, so a manifest is decrypted once.
#[derive(Default)]
pub struct SweepCache {
    campaigns: std::collections::HashMap<CallId, Option<String>>,
}

/// Reads what the store holds, plans with [`crate::store::retention::plan`] and carries it
/// out: tombstone first when a whole call goes, then its objects, the manifest last.
/// Idempotent: a sweep cut short is finished by the next one, which plans again from
/// what is left.
pub async fn sweep(
    store: &Store,
    policies: &crate::store::retention::Policies,
    now: chrono::DateTime<chrono::Utc>,
    opts: &SweepOptions,
    cache: &mut SweepCache,
) -> Result<(crate::store::retention::Plan, SweepReport), StorageError> {
    use crate::store::retention::{plan, StoredCall};
    let mut report = SweepReport::default();
    let holds = store.holds().await?;
    // A tenant-wide hold set through the admin API counts like the config's `legal_hold`.
    let mut policies = policies.clone();
    for (tenant, p) in policies.iter_mut() {
        if !p.hold && store.tenant_hold(tenant).await? {
            p.hold = true;
        }
    }
    let policies = &policies;
    let mut calls = Vec::new();
    for (tenant, policy) in policies {
        let horizon = now - chrono::Duration::days(i64::from(policy.min_days()));
        for (call_id, objects) in store.list_objects(tenant).await? {
            report.calls_seen += 1;
            let Some(started_at) = call_id.created_at() else { continue };
            if started_at > horizon {
                continue;
            }
            let call = CallRef { tenant: tenant.clone(), call_id };
            let campaign = match cache.campaigns.get(&call_id) {
                Some(c) => c.clone(),
                None if !objects.iter().any(|(n, _)| n == "manifest.json") => {
                    report.unreadable += 1;
                    continue;
                }
                None => match store.get_object(tenant, &call.object("manifest.json")).await {
                    Ok(Some(b)) => match serde_json::from_slice::<CampaignOf>(&b) {
                        Ok(m) => {
                            cache.campaigns.insert(call_id, m.campaign.clone());
                            m.campaign
                        }
                        Err(_) => {
                            report.unreadable += 1;
                            continue;
                        }
                    },
                    Ok(None) | Err(_) => {
                        report.unreadable += 1;
                        continue;
                    }
                },
            };
            calls.push(StoredCall { tenant: tenant.clone(), call_id, started_at, campaign, objects });
        }
    }
    let planned = plan(now, &calls, policies, &holds);
    report.held = planned.held;
    report.overdue = planned.actions.iter().filter(|a| a.due_since + opts.overdue_after < now).count();
    if opts.dry_run {
        return Ok((planned, report));
    }
    let mut budget = opts.max_deletes.unwrap_or(usize::MAX);
    'actions: for a in &planned.actions {
        let call = CallRef { tenant: a.tenant.clone(), call_id: a.call_id };
        if a.whole_call {
            if let Err(e) = store.tombstone(&call).await {
                tracing::error!(call_id = %a.call_id, error = %e, "retention: tombstone");
                report.errors += 1;
                continue;
            }
        }
        let sizes: BTreeMap<&str, u64> = calls
            .iter()
            .find(|c| c.call_id == a.call_id)
            .map(|c| c.objects.iter().map(|(n, b)| (n.as_str(), *b)).collect())
            .unwrap_or_default();
        for name in &a.delete {
            if budget == 0 {
                break 'actions;
            }
            budget -= 1;
            match store.delete(&call, name).await {
                Ok(()) => {
                    report.objects_deleted += 1;
                    report.tenants_touched.insert(a.tenant.clone());
                    report.bytes_deleted += sizes.get(name.as_str()).copied().unwrap_or(0);
                }
                Err(e) => {
                    tracing::error!(call_id = %a.call_id, file = %name, error = %e, "retention: delete");
                    report.errors += 1;
                    continue 'actions;
                }
            }
        }
        if a.whole_call {
            report.calls_deleted += 1;
            cache.campaigns.remove(&a.call_id);
        }
    }
    Ok((planned, report))
}

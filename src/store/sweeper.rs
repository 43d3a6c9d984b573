//! The retention sweeper: every `storage.sweep_interval` (one node at a time with
//! Redis), due tenant deletions, audit-log and export expiry, then the retention plan
//! carried out against the store.

use std::sync::Arc;

use crate::app::Records;
use crate::config::Config;

/// Runs retention every `storage.sweep_interval`. Policies are re-read from the config
/// file before each sweep (an invalid edit is logged and the last good policies stay).
pub fn spawn_sweeper(app: Arc<Records>, path: Option<std::path::PathBuf>) {
    let store = app.store.clone();
    let metrics = app.metrics.clone();
    let mut policies = app.config.retention_policies();
    let every = app.config.storage.sweep_interval;
    let tenants: Vec<String> = app.config.tenants.iter().map(|t| t.id.clone()).collect();
    app.tasks.clone().spawn_background(async move {
        let mut cache = crate::store::objects::SweepCache::default();
        let mut iv = tokio::time::interval(every);
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            iv.tick().await;
            // Several nodes: one sweep at a time, cluster-wide.
            let lease = match &app.cluster {
                Some(c) => match c.try_lock("retention").await {
                    Some(g) => Some(g),
                    None => continue,
                },
                None => None,
            };
            if let Some(p) = &path {
                let p2 = p.clone();
                match tokio::task::spawn_blocking(move || Config::load(&p2)).await {
                    Ok(Ok(c)) => policies = c.retention_policies(),
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "retention: config reload failed; keeping the last good policies")
                    }
                    Err(_) => {}
                }
            }
            // A lease lost mid-round (Redis gone, or renewal too late): another node may
            // have taken over, so the round stops before its next destructive step.
            let lost = || lease.as_ref().is_some_and(|g: &crate::cluster::node::LockGuard| g.is_lost());
            let t0 = std::time::Instant::now();
            let opts = crate::store::objects::SweepOptions {
                overdue_after: chrono::Duration::from_std(every * 2).unwrap_or(chrono::Duration::days(1)),
                ..Default::default()
            };
            let now = app.now();
            // Tenant deletions whose grace period has ended.
            match crate::store::privacy::run_due_tenant_deletions(&store, now).await {
                Ok(done) => {
                    for t in done {
                        tracing::warn!(tenant = %t, "tenant deleted: its data and keys are gone; its calls are refused");
                        app.deleted_tenants.write().unwrap_or_else(|e| e.into_inner()).insert(t.clone());
                        crate::admin::audit_system(&app, &t, "tenant.deleted", None, serde_json::Value::Null).await;
                    }
                }
                Err(e) => tracing::error!(error = %e, "tenant deletion failed; retried at the next interval"),
            }
            // The audit log keeps at most 90 days.
            if lost() {
                continue;
            }
            for t in &tenants {
                if let Err(e) =
                    crate::store::privacy::sweep_audit(&store, t, now, crate::store::privacy::AUDIT_RETENTION_DAYS)
                        .await
                {
                    tracing::error!(tenant = %t, error = %e, "audit log retention");
                }
                // Expired export archives (decrypted data, even if encrypted at rest) go.
                if let Err(e) = crate::store::privacy::sweep_exports(&store, t, now).await {
                    tracing::error!(tenant = %t, error = %e, "expired exports");
                }
                // Exports whose builder died are finished here.
                crate::admin::resume_exports(&app, t).await;
            }
            if lost() {
                continue;
            }
            match crate::store::objects::sweep(&store, &policies, now, &opts, &mut cache).await {
                Ok((_, r)) => {
                    metrics.retention_sweeps.with_label_values(&["ok"]).inc();
                    metrics.retention_deleted_objects.inc_by(r.objects_deleted as u64);
                    metrics.retention_deleted_bytes.inc_by(r.bytes_deleted);
                    metrics.retention_overdue.set((r.overdue + r.errors) as i64);
                    if r.objects_deleted > 0 || r.errors > 0 {
                        tracing::info!(
                            calls = r.calls_deleted,
                            objects = r.objects_deleted,
                            bytes = r.bytes_deleted,
                            held = r.held,
                            errors = r.errors,
                            "retention sweep"
                        );
                        for t in &r.tenants_touched {
                            crate::admin::audit_system(&app, t, "retention.sweep", None, serde_json::json!({ "objects_deleted": r.objects_deleted, "calls_deleted": r.calls_deleted })).await;
                        }
                    }
                }
                Err(e) => {
                    metrics.retention_sweeps.with_label_values(&["failed"]).inc();
                    tracing::error!(error = %e, "retention sweep failed; retried at the next interval");
                }
            }
            metrics.retention_sweep_seconds.observe(t0.elapsed().as_secs_f64());
        }
    });
}

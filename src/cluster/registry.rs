//! The call registry in Redis: this node's entries (call, its source ids), the
//! heartbeat that refreshes them and its claims and ends remote calls whose owner is
//! gone (`node_lost`), and the registry look-ups.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::time::Instant;

use crate::call::CallId;
use crate::cluster::node::{lock, ms, Cluster};
use crate::cluster::record::Entry;

impl Cluster {
    pub(super) fn register(&self, p: &mut redis::Pipeline, tenant: &str, id: &CallId, sources: &[(String, String)]) {
        let entry = self.entry(Some(id));
        let ttl = ms(self.cfg.registry_ttl);
        p.cmd("SET").arg(self.keys.call(tenant, id)).arg(&entry).arg("PX").arg(ttl).ignore();
        p.cmd("SADD").arg(self.keys.calls(tenant)).arg(id.to_string()).ignore();
        for (name, value) in sources {
            p.cmd("SET").arg(self.keys.source(name, value)).arg(&entry).arg("PX").arg(ttl).ignore();
        }
    }

    pub(super) async fn heartbeat(self: Arc<Self>) {
        let mut iv = tokio::time::interval(self.cfg.heartbeat);
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut suspects: HashSet<(String, CallId)> = HashSet::new();
        loop {
            tokio::select! {
                _ = iv.tick() => {}
                _ = self.stop.cancelled() => return,
            }
            let Some(mut conn) = self.conn().await else { continue };
            let mut p = redis::pipe();
            let local = lock(&self.local).clone();
            let claims = lock(&self.claims).clone();
            for (id, (tenant, sources)) in &local {
                self.register(&mut p, tenant, id, sources);
            }
            for (tenant, key) in &claims {
                p.cmd("SET")
                    .arg(self.keys.claim(tenant, key))
                    .arg(self.entry(None))
                    .arg("PX")
                    .arg(ms(self.cfg.registry_ttl))
                    .ignore();
            }
            // (A pipeline must not be empty; PING keeps `redis_up` honest when idle.)
            p.cmd("PING").ignore();
            if let Err(e) = p.query_async::<()>(&mut conn).await {
                self.broken(&e).await;
                continue;
            }
            if Instant::now() < *lock(&self.grace_until) {
                suspects.clear();
                continue;
            }
            let remote = self.live.remote_live_calls();
            if remote.is_empty() {
                suspects.clear();
                continue;
            }
            let mut p = redis::pipe();
            for (tenant, id, _) in &remote {
                p.cmd("EXISTS").arg(self.keys.call(tenant, id));
            }
            let exists: Vec<i64> = match p.query_async(&mut conn).await {
                Ok(v) => v,
                Err(e) => {
                    self.broken(&e).await;
                    continue;
                }
            };
            let mut next = HashSet::new();
            for ((tenant, id, owner), n) in remote.into_iter().zip(exists) {
                if n > 0 {
                    continue;
                }
                let k = (tenant, id);
                if suspects.contains(&k) {
                    if self.live.end_remote(&k.0, id, "node_lost") {
                        self.metrics.cluster_calls_lost.inc();
                        tracing::warn!(tenant = %k.0, call_id = %id, owner = %owner, "cluster: the node that owned this call is gone (registry entry expired): node_lost");
                    }
                } else {
                    next.insert(k);
                }
            }
            suspects = next;
        }
    }

    /// The node that owns the live call with this source id (`sip_call_id`, …), when
    /// it is another node.
    pub async fn owner_of_source(&self, name: &str, value: &str) -> Option<Entry> {
        let mut conn = self.conn().await?;
        let v: Option<String> =
            redis::cmd("GET").arg(self.keys.source(name, value)).query_async(&mut conn).await.ok()?;
        v.and_then(|v| serde_json::from_str::<Entry>(&v).ok()).filter(|e| e.node != self.node)
    }

    /// Live calls of `tenant` across the cluster, from the registry: (call id, entry).
    pub async fn live_calls(&self, tenant: &str) -> Option<Vec<Entry>> {
        let mut conn = self.conn().await?;
        let ids: Vec<String> = redis::cmd("SMEMBERS").arg(self.keys.calls(tenant)).query_async(&mut conn).await.ok()?;
        if ids.is_empty() {
            return Some(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|i| format!("{}:call:{tenant}:{i}", self.cfg.key_prefix)).collect();
        let vals: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut conn).await.ok()?;
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (id, v) in ids.into_iter().zip(vals) {
            match v.and_then(|v| serde_json::from_str::<Entry>(&v).ok()) {
                Some(e) => out.push(e),
                None => gone.push(id),
            }
        }
        if !gone.is_empty() {
            let _ = redis::cmd("SREM").arg(self.keys.calls(tenant)).arg(gone).query_async::<i64>(&mut conn).await;
        }
        Some(out)
    }
}

//! Claims (WHIP call keys) and job locks (retention sweep, export): `SET NX PX` with
//! a lease, renewed while held, released only by their holder.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::cluster::node::{lock, ms, Cluster};
use crate::cluster::record::{Entry, RELEASE_LOCK, RENEW_LOCK};

/// What a claim of an external call key found.
#[derive(Debug, PartialEq)]
pub enum Claim {
    /// This node holds it (now or already).
    Mine,
    /// Another node does: send the client there.
    Owned(Entry),
    /// Redis cannot be asked: serve locally (degraded).
    Unavailable,
}

impl Cluster {
    /// Claims an external call key (WHIP call key) for this node, or says who has it.
    pub async fn claim(&self, tenant: &str, key: &str) -> Claim {
        let Some(mut conn) = self.conn().await else { return Claim::Unavailable };
        let k = self.keys.claim(tenant, key);
        let set: Result<Option<String>, _> = redis::cmd("SET")
            .arg(&k)
            .arg(self.entry(None))
            .arg("NX")
            .arg("PX")
            .arg(ms(self.cfg.registry_ttl))
            .query_async(&mut conn)
            .await;
        match set {
            Ok(Some(_)) => {
                lock(&self.claims).insert((tenant.to_string(), key.to_string()));
                return Claim::Mine;
            }
            Ok(None) => {}
            Err(e) => {
                self.broken(&e).await;
                return Claim::Unavailable;
            }
        }
        let got: Result<Option<String>, _> = redis::cmd("GET").arg(&k).query_async(&mut conn).await;
        match got {
            Ok(Some(v)) => match serde_json::from_str::<Entry>(&v) {
                Ok(e) if e.node == self.node => {
                    lock(&self.claims).insert((tenant.to_string(), key.to_string()));
                    Claim::Mine
                }
                Ok(e) => Claim::Owned(e),
                Err(_) => Claim::Unavailable,
            },
            // Expired between the two commands: try once more next time.
            Ok(None) => Claim::Unavailable,
            Err(e) => {
                self.broken(&e).await;
                Claim::Unavailable
            }
        }
    }

    /// Gives a claimed key back (the call ended here).
    pub fn release(self: &Arc<Self>, tenant: &str, key: &str) {
        if !lock(&self.claims).remove(&(tenant.to_string(), key.to_string())) {
            return;
        }
        let me = self.clone();
        let k = self.keys.claim(tenant, key);
        self.tasks.spawn(async move {
            if let Some(mut conn) = me.conn().await {
                let _ =
                    redis::Script::new(RELEASE_LOCK).key(k).arg(me.entry(None)).invoke_async::<i64>(&mut conn).await;
            }
        });
    }

    /// Takes a job lock for one lease, renewed while the guard lives. `None` when
    /// another node holds it or Redis is unavailable (then the job waits: running it
    /// twice is what the lock prevents).
    pub async fn try_lock(self: &Arc<Self>, name: &str) -> Option<LockGuard> {
        let Some(mut conn) = self.conn().await else {
            self.metrics.cluster_locks.with_label_values(&["unavailable"]).inc();
            return None;
        };
        let token = format!("{}:{}", self.node, uuid::Uuid::new_v4());
        let key = self.keys.lock(name);
        let lease = ms(self.cfg.lock_lease);
        let set: Result<Option<String>, _> =
            redis::cmd("SET").arg(&key).arg(&token).arg("NX").arg("PX").arg(lease).query_async(&mut conn).await;
        match set {
            Ok(Some(_)) => {}
            Ok(None) => {
                self.metrics.cluster_locks.with_label_values(&["busy"]).inc();
                return None;
            }
            Err(e) => {
                self.metrics.cluster_locks.with_label_values(&["unavailable"]).inc();
                self.broken(&e).await;
                return None;
            }
        }
        self.metrics.cluster_locks.with_label_values(&["acquired"]).inc();
        let lost = CancellationToken::new();
        let done = CancellationToken::new();
        let me = self.clone();
        let (k2, t2, lost2, done2) = (key.clone(), token.clone(), lost.clone(), done.clone());
        self.tasks.spawn(async move {
            let every = me.cfg.lock_lease / 3;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = done2.cancelled() => break,
                }
                let ok = match me.conn().await {
                    Some(mut c) => {
                        redis::Script::new(RENEW_LOCK)
                            .key(&k2)
                            .arg(&t2)
                            .arg(lease)
                            .invoke_async::<i64>(&mut c)
                            .await
                            .unwrap_or(0)
                            == 1
                    }
                    None => false,
                };
                if !ok {
                    me.metrics.cluster_locks.with_label_values(&["lost"]).inc();
                    tracing::error!(lock = %k2, "cluster: job lock lease could not be renewed; the job stops before its next step (another node may take over)");
                    lost2.cancel();
                    return;
                }
            }
            if let Some(mut c) = me.conn().await {
                let _ = redis::Script::new(RELEASE_LOCK).key(&k2).arg(&t2).invoke_async::<i64>(&mut c).await;
            }
        });
        Some(LockGuard { lost, done })
    }
}

/// A held job lock. Dropping it releases the lock; `lost()` fires if the lease could
/// not be renewed (another node may take over: stop at the next safe point).
pub struct LockGuard {
    lost: CancellationToken,
    done: CancellationToken,
}

impl LockGuard {
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.done.cancel();
    }
}

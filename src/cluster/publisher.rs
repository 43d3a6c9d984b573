//! The publisher task: this node's live events, in order and in batches, onto the
//! stream; registry entries written and removed with `call.started` / `call.ended`,
//! and snapshots of every local call after events were lost or another node said hello.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cluster::node::{lock, Cluster, Kind, Out};
use crate::cluster::record::Record;

/// Records the publisher writes per round trip.
const BATCH: usize = 256;

impl Cluster {
    pub(super) async fn publisher(self: Arc<Self>, mut rx: mpsc::Receiver<Out>) {
        let mut last_fail: Option<Instant> = None;
        loop {
            let first = tokio::select! {
                m = rx.recv() => match m { Some(m) => m, None => return },
                _ = self.stop.cancelled() => return,
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let events = batch.iter().filter(|m| matches!(m, Out::Event { .. })).count() as u64;
            let resync = self.needs_resync.load(Ordering::Acquire) || batch.iter().any(|m| matches!(m, Out::Resync));
            // While Redis is down, try at most once a second; meanwhile count and move on.
            let conn =
                if last_fail.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) { None } else { self.conn().await };
            let Some(mut conn) = conn else {
                last_fail = Some(Instant::now());
                self.metrics.cluster_events.with_label_values(&["unpublished"]).inc_by(events);
                if events > 0 {
                    self.needs_resync.store(true, Ordering::Release);
                }
                continue;
            };
            let mut p = redis::pipe();
            let mut snapshots = 0;
            if resync {
                // Snapshots first: the batch's events are in them too (the hub was
                // updated before they were queued); readers skip what they cover.
                self.needs_resync.store(false, Ordering::Release);
                for (id, (tenant, sources)) in lock(&self.local).iter() {
                    self.register(&mut p, tenant, id, sources);
                }
                for s in self.live.local_snapshots() {
                    if let Ok(text) = serde_json::to_string(&s) {
                        self.xadd(&mut p, &Record::Snapshot { node: self.node.clone(), snapshot: text });
                        snapshots += 1;
                    }
                }
            }
            for m in &batch {
                let Out::Event { tenant, call_id, json, kind, sources } = m else { continue };
                if *kind == Kind::Started {
                    self.register(&mut p, tenant, call_id, sources);
                }
                self.xadd(&mut p, &Record::Event { node: self.node.clone(), event: json.as_str().to_string() });
                if *kind == Kind::Ended {
                    p.cmd("DEL").arg(self.keys.call(tenant, call_id)).ignore();
                    p.cmd("SREM").arg(self.keys.calls(tenant)).arg(call_id.to_string()).ignore();
                    for (name, value) in sources {
                        p.cmd("DEL").arg(self.keys.source(name, value)).ignore();
                    }
                }
            }
            if events == 0 && snapshots == 0 && lock(&self.local).is_empty() {
                continue;
            }
            match p.query_async::<()>(&mut conn).await {
                Ok(()) => {
                    last_fail = None;
                    self.metrics.cluster_events.with_label_values(&["published"]).inc_by(events);
                    self.metrics.cluster_snapshots.with_label_values(&["sent"]).inc_by(snapshots);
                }
                Err(e) => {
                    last_fail = Some(Instant::now());
                    self.metrics.cluster_events.with_label_values(&["unpublished"]).inc_by(events);
                    self.needs_resync.store(true, Ordering::Release);
                    self.broken(&e).await;
                }
            }
        }
    }
}

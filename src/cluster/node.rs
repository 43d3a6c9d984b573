//! Several nodes, one Redis — the IO part (the pure part is `crate::cluster::record`).
//!
//! - **Publisher** (one task): this node's live events, in order, onto the stream;
//!   `call.started` first writes the call's registry entry, `call.ended` removes it.
//!   The media path only ever does a `try_send` into its bounded queue. When Redis is
//!   down or the queue is full the events are counted (`unpublished`, `dropped`) and,
//!   once Redis is back, every call this node owns is sent as a snapshot.
//! - **Reader** (one task, its own connection): other nodes' records into the local
//!   hub. It says hello on every (re)connect so owners resend their calls, and reads
//!   on from the last id it saw, so a hiccup loses nothing the stream still holds.
//! - **Heartbeat** (one task): refreshes this node's registry entries and claims, and
//!   ends remote calls whose entry has expired (`node_lost`; two misses in a row).
//! - **Claims** (WHIP call keys) and **job locks** (retention sweep, export) are
//!   `SET NX PX` with a lease, renewed while held, released only by their holder.
//!
//! This file is the handle, its shared connection and the event hand-off; the tasks
//! and the claim and lock calls live beside it (`publisher`, `reader`, `registry`,
//! `locks`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use axum::extract::ws::Utf8Bytes;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::call::CallId;
use crate::clock::Clock;
pub use crate::cluster::locks::{Claim, LockGuard};
use crate::cluster::record::{Entry, Keys, Record};
use crate::config::RedisConfig;
use crate::events::{Event, EventBody};
use crate::live::hub::LiveHub;
use crate::metrics::Metrics;

/// A call's source ids: (`sip_call_id`, value), …
pub(super) type Sources = Vec<(String, String)>;

pub(super) enum Out {
    Event {
        tenant: String,
        call_id: CallId,
        json: Utf8Bytes,
        kind: Kind,
        sources: Vec<(String, String)>,
    },
    /// Another node said hello: send snapshots of our calls.
    Resync,
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Kind {
    Started,
    Ended,
    Other,
}

pub struct Cluster {
    pub(super) cfg: RedisConfig,
    pub node: String,
    /// This node's advertised base URL.
    pub url: String,
    pub(super) keys: Keys,
    pub(super) client: redis::Client,
    pub(super) metrics: Metrics,
    pub(super) clock: Clock,
    /// Where its tasks run (tracked for shutdown).
    pub(super) tasks: crate::shutdown::Tasks,
    pub(super) live: Arc<LiveHub>,
    pub(super) tx: mpsc::Sender<Out>,
    pub(super) conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// Calls this node owns: id → (tenant, source ids).
    pub(super) local: Mutex<HashMap<CallId, (String, Sources)>>,
    /// Keys this node has claimed: (tenant, key).
    pub(super) claims: Mutex<HashSet<(String, String)>>,
    /// No `node_lost` verdicts before this (just (re)connected: owners re-register).
    pub(super) grace_until: Mutex<Instant>,
    /// Set when events could not be published; cleared when snapshots went out.
    pub(super) needs_resync: AtomicBool,
    pub(super) stop: CancellationToken,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Cluster {
    /// Starts the tasks. Redis need not be up: the node serves its own calls and
    /// connects when it can.
    pub fn start(
        cfg: RedisConfig,
        url: String,
        live: Arc<LiveHub>,
        metrics: Metrics,
        clock: Clock,
        tasks: crate::shutdown::Tasks,
    ) -> Result<Arc<Cluster>, redis::RedisError> {
        let client = redis::Client::open(cfg.url.as_str())?;
        let (tx, rx) = mpsc::channel(cfg.publish_queue);
        let c = Arc::new(Cluster {
            node: cfg.node(),
            url: url.trim_end_matches('/').to_string(),
            keys: Keys::new(&cfg.key_prefix),
            client,
            metrics,
            clock,
            tasks,
            live,
            tx,
            conn: tokio::sync::Mutex::new(None),
            local: Mutex::new(HashMap::new()),
            claims: Mutex::new(HashSet::new()),
            grace_until: Mutex::new(Instant::now() + cfg.registry_ttl),
            needs_resync: AtomicBool::new(false),
            stop: CancellationToken::new(),
            cfg,
        });
        c.tasks.spawn(c.clone().publisher(rx));
        c.tasks.spawn(c.clone().reader());
        c.tasks.spawn(c.clone().heartbeat());
        tracing::info!(node = %c.node, url = %c.url, "cluster: events, registry and locks in Redis");
        Ok(c)
    }

    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    /// Waits (bounded) until the publish queue is empty: the last `call.ended`s out.
    pub async fn flush(&self, limit: Duration) {
        let t0 = Instant::now();
        while self.tx.capacity() < self.tx.max_capacity() && t0.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Offers one of this node's events to the other nodes. Never waits.
    pub fn offer(&self, event: &Event, json: Utf8Bytes) {
        let kind = match &event.body {
            EventBody::CallStarted(p) => {
                let sources = p.source_ids.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                lock(&self.local).insert(event.call_id, (event.tenant.clone(), sources));
                Kind::Started
            }
            EventBody::CallEnded(_) => Kind::Ended,
            _ => Kind::Other,
        };
        let sources = match kind {
            Kind::Started => lock(&self.local).get(&event.call_id).map(|l| l.1.clone()).unwrap_or_default(),
            Kind::Ended => lock(&self.local).remove(&event.call_id).map(|l| l.1).unwrap_or_default(),
            Kind::Other => Vec::new(),
        };
        let out = Out::Event { tenant: event.tenant.clone(), call_id: event.call_id, json, kind, sources };
        if self.tx.try_send(out).is_err() {
            self.metrics.cluster_events.with_label_values(&["dropped"]).inc();
            self.needs_resync.store(true, Ordering::Release);
        }
    }

    pub(super) fn conn_config(&self, response: Option<Duration>) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new().set_connection_timeout(Some(self.cfg.timeout)).set_response_timeout(response)
    }

    /// The shared command connection, (re)connecting when there is none.
    pub(super) async fn conn(&self) -> Option<MultiplexedConnection> {
        let mut g = self.conn.lock().await;
        if let Some(c) = g.as_ref() {
            return Some(c.clone());
        }
        match self.client.get_multiplexed_async_connection_with_config(&self.conn_config(Some(self.cfg.timeout))).await
        {
            Ok(mut c) => {
                let _ = redis::cmd("CLIENT")
                    .arg("SETNAME")
                    .arg(format!("earshot-{}", self.node))
                    .query_async::<()>(&mut c)
                    .await;
                *g = Some(c.clone());
                self.metrics.cluster_redis_up.set(1);
                Some(c)
            }
            Err(e) => {
                tracing::debug!(error = %e, "cluster: Redis unavailable");
                self.metrics.cluster_redis_up.set(0);
                None
            }
        }
    }

    pub(super) async fn broken(&self, e: &redis::RedisError) {
        tracing::warn!(error = %e, "cluster: Redis command failed; serving local calls only until it is back");
        *self.conn.lock().await = None;
        self.metrics.cluster_redis_up.set(0);
    }

    pub(super) fn entry(&self, call_id: Option<&CallId>) -> String {
        let e = Entry { node: self.node.clone(), url: self.url.clone(), call_id: call_id.map(|c| c.to_string()) };
        serde_json::to_string(&e).unwrap_or_default()
    }

    pub(super) fn xadd(&self, p: &mut redis::Pipeline, r: &Record) {
        let c = p.cmd("XADD").arg(self.keys.stream()).arg("MAXLEN").arg("~").arg(self.cfg.stream_maxlen).arg("*");
        for (f, v) in r.fields() {
            c.arg(f).arg(v);
        }
        c.ignore();
    }
}

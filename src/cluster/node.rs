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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use axum::extract::ws::Utf8Bytes;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::call::CallId;
use crate::clock::Clock;
use crate::cluster::record::{Entry, Keys, Record, Snapshot, StreamId, RELEASE_LOCK, RENEW_LOCK};
use crate::config::RedisConfig;
use crate::events::{Event, EventBody};
use crate::live::hub::LiveHub;
use crate::metrics::Metrics;

/// A call's source ids: (`sip_call_id`, value), …
type Sources = Vec<(String, String)>;

/// Records the publisher writes per round trip.
const BATCH: usize = 256;
/// Entries the reader takes per `XREAD`.
const READ_COUNT: usize = 512;
/// How long an `XREAD` waits for new entries.
const READ_BLOCK: Duration = Duration::from_secs(2);

enum Out {
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
enum Kind {
    Started,
    Ended,
    Other,
}

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

pub struct Cluster {
    cfg: RedisConfig,
    pub node: String,
    /// This node's advertised base URL.
    pub url: String,
    keys: Keys,
    client: redis::Client,
    metrics: Metrics,
    clock: Clock,
    live: Arc<LiveHub>,
    tx: mpsc::Sender<Out>,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// Calls this node owns: id → (tenant, source ids).
    local: Mutex<HashMap<CallId, (String, Sources)>>,
    /// Keys this node has claimed: (tenant, key).
    claims: Mutex<HashSet<(String, String)>>,
    /// No `node_lost` verdicts before this (just (re)connected: owners re-register).
    grace_until: Mutex<Instant>,
    /// Set when events could not be published; cleared when snapshots went out.
    needs_resync: AtomicBool,
    stop: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn ms(d: Duration) -> u64 {
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
        tokio::spawn(c.clone().publisher(rx));
        tokio::spawn(c.clone().reader());
        tokio::spawn(c.clone().heartbeat());
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

    fn conn_config(&self, response: Option<Duration>) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new().set_connection_timeout(Some(self.cfg.timeout)).set_response_timeout(response)
    }

    /// The shared command connection, (re)connecting when there is none.
    async fn conn(&self) -> Option<MultiplexedConnection> {
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

    async fn broken(&self, e: &redis::RedisError) {
        tracing::warn!(error = %e, "cluster: Redis command failed; serving local calls only until it is back");
        *self.conn.lock().await = None;
        self.metrics.cluster_redis_up.set(0);
    }

    fn entry(&self, call_id: Option<&CallId>) -> String {
        let e = Entry { node: self.node.clone(), url: self.url.clone(), call_id: call_id.map(|c| c.to_string()) };
        serde_json::to_string(&e).unwrap_or_default()
    }

    fn xadd(&self, p: &mut redis::Pipeline, r: &Record) {
        let c = p.cmd("XADD").arg(self.keys.stream()).arg("MAXLEN").arg("~").arg(self.cfg.stream_maxlen).arg("*");
        for (f, v) in r.fields() {
            c.arg(f).arg(v);
        }
        c.ignore();
    }

    fn register(&self, p: &mut redis::Pipeline, tenant: &str, id: &CallId, sources: &[(String, String)]) {
        let entry = self.entry(Some(id));
        let ttl = ms(self.cfg.registry_ttl);
        p.cmd("SET").arg(self.keys.call(tenant, id)).arg(&entry).arg("PX").arg(ttl).ignore();
        p.cmd("SADD").arg(self.keys.calls(tenant)).arg(id.to_string()).ignore();
        for (name, value) in sources {
            p.cmd("SET").arg(self.keys.source(name, value)).arg(&entry).arg("PX").arg(ttl).ignore();
        }
    }

    async fn publisher(self: Arc<Self>, mut rx: mpsc::Receiver<Out>) {
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

    async fn reader(self: Arc<Self>) {
        let mut last: Option<StreamId> = None;
        let mut backoff = Duration::from_millis(200);
        let response = Some(READ_BLOCK + self.cfg.timeout);
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            let conn = self.client.get_multiplexed_async_connection_with_config(&self.conn_config(response)).await;
            let mut conn = match conn {
                Ok(c) => c,
                Err(_) => {
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.stop.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            backoff = Duration::from_millis(200);
            let _ = redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg(format!("earshot-reader-{}", self.node))
                .query_async::<()>(&mut conn)
                .await;
            // Hello: owners answer with snapshots of their calls (after this id).
            let hello: Result<String, _> = {
                let mut c = redis::cmd("XADD");
                c.arg(self.keys.stream()).arg("MAXLEN").arg("~").arg(self.cfg.stream_maxlen).arg("*");
                for (f, v) in (Record::Hello { node: self.node.clone() }).fields() {
                    c.arg(f).arg(v);
                }
                c.query_async(&mut conn).await
            };
            let hello = match hello.map(|h| h.parse::<StreamId>()) {
                Ok(Ok(h)) => h,
                _ => continue,
            };
            last = Some(match last {
                // Redis restarted empty (ids went back): read everything there is.
                Some(l) if hello < l => StreamId(0, 0),
                Some(l) => l,
                None => hello,
            });
            if let Some(l) = last {
                if l != hello {
                    self.metrics.cluster_reconnects.inc();
                    tracing::info!(from = %l, "cluster: reconnected to Redis; reading on from the last entry seen");
                }
            }
            *lock(&self.grace_until) = Instant::now() + self.cfg.heartbeat * 2;
            self.metrics.cluster_redis_up.set(1);
            loop {
                let from = last.unwrap_or_default().to_string();
                let mut cmd = redis::cmd("XREAD");
                cmd.arg("COUNT")
                    .arg(READ_COUNT)
                    .arg("BLOCK")
                    .arg(ms(READ_BLOCK))
                    .arg("STREAMS")
                    .arg(self.keys.stream())
                    .arg(&from);
                let read = cmd.query_async::<Value>(&mut conn);
                let v = tokio::select! {
                    v = read => v,
                    _ = self.stop.cancelled() => return,
                };
                match v {
                    Ok(v) => {
                        for (id, fields) in stream_entries(v) {
                            if let Ok(id) = id.parse::<StreamId>() {
                                last = Some(id);
                            }
                            self.handle(fields);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cluster: event stream read failed; reconnecting");
                        self.metrics.cluster_redis_up.set(0);
                        break;
                    }
                }
            }
        }
    }

    fn handle(&self, fields: Vec<(String, Vec<u8>)>) {
        let record = match Record::parse(fields.iter().map(|(f, v)| (f.as_str(), v.as_slice()))) {
            Ok(r) => r,
            Err(e) => {
                self.metrics.cluster_events.with_label_values(&["bad"]).inc();
                tracing::warn!(error = %e, "cluster: unreadable stream entry skipped");
                return;
            }
        };
        if record.node() == self.node {
            return;
        }
        match record {
            Record::Event { node, event } => match serde_json::from_str::<Event>(&event) {
                Ok(ev) => {
                    let delay = ((self.clock)() - ev.wall_ts).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
                    if self.live.publish_remote(&ev, &node) {
                        self.metrics.cluster_events.with_label_values(&["received"]).inc();
                        self.metrics.cluster_event_delay_seconds.observe(delay);
                    } else {
                        self.metrics.cluster_events.with_label_values(&["duplicate"]).inc();
                    }
                }
                Err(e) => {
                    self.metrics.cluster_events.with_label_values(&["bad"]).inc();
                    tracing::warn!(error = %e, node = %node, "cluster: unreadable event skipped");
                }
            },
            Record::Snapshot { node, snapshot } => match Snapshot::parse(&snapshot) {
                Ok(s) => {
                    if self.live.apply_snapshot(&s, &node) {
                        self.metrics.cluster_snapshots.with_label_values(&["applied"]).inc();
                    }
                }
                Err(e) => {
                    self.metrics.cluster_events.with_label_values(&["bad"]).inc();
                    tracing::warn!(error = %e, node = %node, "cluster: unreadable snapshot skipped");
                }
            },
            Record::Hello { node } => {
                tracing::debug!(node = %node, "cluster: a node said hello; sending snapshots");
                let _ = self.tx.try_send(Out::Resync);
            }
        }
    }

    async fn heartbeat(self: Arc<Self>) {
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

    /// The node that owns the live call with this source id (`sip_call_id`, …), when
    /// it is another node.
    pub async fn owner_of_source(&self, name: &str, value: &str) -> Option<Entry> {
        let mut conn = self.conn().await?;
        let v: Option<String> =
            redis::cmd("GET").arg(self.keys.source(name, value)).query_async(&mut conn).await.ok()?;
        v.and_then(|v| serde_json::from_str::<Entry>(&v).ok()).filter(|e| e.node != self.node)
    }

    /// Gives a claimed key back (the call ended here).
    pub fn release(self: &Arc<Self>, tenant: &str, key: &str) {
        if !lock(&self.claims).remove(&(tenant.to_string(), key.to_string())) {
            return;
        }
        let me = self.clone();
        let k = self.keys.claim(tenant, key);
        tokio::spawn(async move {
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
        tokio::spawn(async move {
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

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn bytes(v: Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.into_bytes(),
        _ => Vec::new(),
    }
}

/// A stream entry: its id and field/value pairs.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// `XREAD` reply → entries in stream order (RESP2 arrays or RESP3 maps).
fn stream_entries(v: Value) -> Vec<StreamEntry> {
    let streams: Vec<Value> = match v {
        Value::Array(a) => {
            a.into_iter().filter_map(|s| if let Value::Array(mut kv) = s { kv.pop() } else { None }).collect()
        }
        Value::Map(m) => m.into_iter().map(|(_, v)| v).collect(),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for s in streams {
        let Value::Array(entries) = s else { continue };
        for e in entries {
            let Value::Array(mut pair) = e else { continue };
            if pair.len() != 2 {
                continue;
            }
            let fields = pair.pop().unwrap_or(Value::Nil);
            let Some(id) = pair.pop().as_ref().and_then(text) else { continue };
            let flat = match fields {
                Value::Array(f) => f,
                Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
                _ => Vec::new(),
            };
            let mut it = flat.into_iter();
            let mut kv = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                if let Some(k) = text(&k) {
                    kv.push((k, bytes(v)));
                }
            }
            out.push((id, kv));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xread_replies_in_both_protocols() {
        let bs = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry = |id: &str| {
            Value::Array(vec![bs(id), Value::Array(vec![bs("n"), bs("a"), bs("k"), bs("h"), bs("d"), bs("")])])
        };
        let resp2 =
            Value::Array(vec![Value::Array(vec![bs("es:events"), Value::Array(vec![entry("1-0"), entry("1-1")])])]);
        let got = stream_entries(resp2);
        assert_eq!(got.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(), ["1-0", "1-1"]);
        assert_eq!(got[0].1[1], ("k".to_string(), b"h".to_vec()));
        let resp3 = Value::Map(vec![(bs("es:events"), Value::Array(vec![entry("2-0")]))]);
        assert_eq!(stream_entries(resp3).len(), 1);
        assert!(stream_entries(Value::Nil).is_empty());
    }
}

//! The live hub behind `/live`: per-call replay buffers and snapshots, per-client
//! bounded queues, visibility by token, resume by `seq`.
//!
//! Publishing never waits: an event is serialised once and offered to each watching
//! client's queue with `try_send`. A client whose queue is full is marked *lagged*
//! and gets nothing more until its writer has sent what was queued, then `lagged`
//! and a fresh snapshot of every call it watches (taken under the same lock that
//! re-enables it, so nothing falls between the snapshot and the next event).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;

use crate::call::CallId;
use crate::clock::Clock;
use crate::config::LiveConfig;
use crate::events::{Event, EventBody};
use crate::live::token::Principal;
use crate::metrics::Metrics;

/// Finals, hints kept per call for snapshots (older ones are in the stored transcript).
const SNAPSHOT_FINALS: usize = 300;
const SNAPSHOT_HINTS: usize = 200;

#[derive(Default)]
struct CallLive {
    rep_id: Option<String>,
    replay: VecDeque<(u64, Utf8Bytes)>,
    started: Option<Utf8Bytes>,
    finals: VecDeque<Utf8Bytes>,
    /// Latest partial per channel, with its utterance id.
    partials: BTreeMap<String, (String, Utf8Bytes)>,
    hints: VecDeque<Utf8Bytes>,
    metrics: Option<Utf8Bytes>,
    checklist: Option<Utf8Bytes>,
    ended: Option<Utf8Bytes>,
    scorecard: Option<Utf8Bytes>,
    last_seq: u64,
    ended_at: Option<Instant>,
    /// The node that owns the call when it is not this one (events come over Redis).
    owner: Option<String>,
    /// Wall time of `call.started` (to stamp a `node_lost` end).
    started_wall: Option<chrono::DateTime<chrono::Utc>>,
}

/// Updates a call's state with one event (`replay`: how many events to keep for resume).
fn record(call: &mut CallLive, event: &Event, json: &Utf8Bytes, replay: usize) {
    call.last_seq = call.last_seq.max(event.seq);
    if replay > 0 {
        call.replay.push_back((event.seq, json.clone()));
        while call.replay.len() > replay {
            call.replay.pop_front();
        }
    }
    match &event.body {
        EventBody::CallStarted(p) => {
            call.rep_id = p.rep_id.clone();
            call.started = Some(json.clone());
            call.started_wall = Some(event.wall_ts);
        }
        EventBody::TranscriptPartial(p) => {
            call.partials.insert(format!("{:?}", p.channel), (p.utterance_id.clone(), json.clone()));
        }
        EventBody::TranscriptFinal(p) => {
            let key = format!("{:?}", p.channel);
            if call.partials.get(&key).is_some_and(|(u, _)| *u == p.utterance_id) {
                call.partials.remove(&key);
            }
            call.finals.push_back(json.clone());
            if call.finals.len() > SNAPSHOT_FINALS {
                call.finals.pop_front();
            }
        }
        EventBody::Hint(_) => {
            call.hints.push_back(json.clone());
            if call.hints.len() > SNAPSHOT_HINTS {
                call.hints.pop_front();
            }
        }
        EventBody::Metrics(_) => call.metrics = Some(json.clone()),
        EventBody::Checklist(_) => call.checklist = Some(json.clone()),
        EventBody::CallEnded(_) => {
            call.ended = Some(json.clone());
            call.ended_at = Some(Instant::now());
        }
        EventBody::Scorecard(_) => call.scorecard = Some(json.clone()),
    }
}

impl CallLive {
    /// The events that make up the call's state, oldest kinds first.
    fn parts(&self) -> Vec<&str> {
        let mut parts: Vec<&str> = Vec::new();
        parts.extend(self.started.iter().map(|s| s.as_str()));
        parts.extend(self.finals.iter().map(|s| s.as_str()));
        parts.extend(self.partials.values().map(|(_, s)| s.as_str()));
        parts.extend(self.hints.iter().map(|s| s.as_str()));
        for s in [&self.checklist, &self.metrics, &self.ended, &self.scorecard].into_iter().flatten() {
            parts.push(s.as_str());
        }
        parts
    }

    fn snapshot(&self, tenant: &str, call_id: &str) -> Utf8Bytes {
        let parts = self.parts();
        let head =
            serde_json::json!({ "type": "snapshot", "tenant": tenant, "call_id": call_id, "last_seq": self.last_seq });
        let head = head.to_string();
        let mut out = String::with_capacity(head.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>() + 16);
        out.push_str(&head[..head.len() - 1]);
        out.push_str(",\"events\":[");
        out.push_str(&parts.join(","));
        out.push_str("]}");
        Utf8Bytes::from(out)
    }
}

/// One connected client.
pub struct Client {
    pub id: u64,
    pub principal: Principal,
    tx: mpsc::Sender<Utf8Bytes>,
    lagged: AtomicBool,
}

impl Client {
    pub fn is_lagged(&self) -> bool {
        self.lagged.load(Ordering::Acquire)
    }
}

#[derive(Default)]
struct TenantLive {
    calls: HashMap<CallId, CallLive>,
    clients: Vec<Arc<Client>>,
}

pub struct LiveHub {
    cfg: LiveConfig,
    metrics: Metrics,
    /// The wall clock (`call.ended` for a call whose node was lost).
    clock: Clock,
    tenants: Mutex<HashMap<String, Arc<Mutex<TenantLive>>>>,
    connections: Mutex<HashMap<String, usize>>,
    next_client: AtomicU64,
    pub open: AtomicUsize,
}

/// A reserved connection slot of a tenant; released on drop.
pub struct Reservation {
    hub: Arc<LiveHub>,
    tenant: String,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut c = self.hub.connections.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = c.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
        }
    }
}

/// What a (re)connecting client gets first, and its queue.
pub struct Connected {
    pub client: Arc<Client>,
    pub initial: Vec<Utf8Bytes>,
    pub rx: mpsc::Receiver<Utf8Bytes>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LiveHub {
    pub fn new(cfg: LiveConfig, metrics: Metrics, clock: Clock) -> Arc<Self> {
        Arc::new(Self {
            cfg,
            metrics,
            clock,
            tenants: Mutex::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
            next_client: AtomicU64::new(1),
            open: AtomicUsize::new(0),
        })
    }

    fn tenant(&self, id: &str) -> Arc<Mutex<TenantLive>> {
        lock(&self.tenants).entry(id.to_string()).or_default().clone()
    }

    /// Takes one of the tenant's `limit` connection slots.
    pub fn reserve(self: &Arc<Self>, tenant: &str, limit: usize) -> Option<Reservation> {
        let mut c = lock(&self.connections);
        let n = c.entry(tenant.to_string()).or_default();
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Reservation { hub: self.clone(), tenant: tenant.to_string() })
    }

    /// Records the event and offers it to every client allowed to see it. Never waits.
    /// Returns the event's JSON (what other nodes get).
    pub fn publish(&self, event: &Event) -> Option<Utf8Bytes> {
        self.publish_as(event, None)
    }

    /// An event of a call another node owns (from Redis). Events at or below the
    /// call's last `seq` are duplicates (a snapshot already covered them) and are
    /// ignored. Returns whether it was new.
    pub fn publish_remote(&self, event: &Event, owner: &str) -> bool {
        self.publish_as(event, Some(owner)).is_some()
    }

    fn publish_as(&self, event: &Event, owner: Option<&str>) -> Option<Utf8Bytes> {
        let json = Utf8Bytes::from(serde_json::to_string(event).ok()?);
        let tenant = self.tenant(&event.tenant);
        let mut t = lock(&tenant);
        let call = t.calls.entry(event.call_id).or_default();
        if owner.is_some() && call.last_seq >= event.seq {
            return None;
        }
        call.owner = owner.map(str::to_string);
        record(call, event, &json, self.cfg.replay_events);
        let rep = call.rep_id.clone();
        let call_id = event.call_id.to_string();
        t.clients.retain(|c| !c.tx.is_closed());
        for c in &t.clients {
            if c.is_lagged() || !c.principal.may_watch(&event.tenant, &call_id, rep.as_deref()) {
                continue;
            }
            if let Err(mpsc::error::TrySendError::Full(_)) = c.tx.try_send(json.clone()) {
                c.lagged.store(true, Ordering::Release);
                self.metrics.live_lagged.inc();
            }
        }
        Some(json)
    }

    /// Replaces what this node has of a remote call by its owner's snapshot, and sends
    /// the snapshot to every client watching it, unless nothing was missed. Returns
    /// whether it was applied.
    pub fn apply_snapshot(&self, snap: &crate::cluster::record::Snapshot, owner: &str) -> bool {
        let tenant = self.tenant(&snap.tenant);
        let mut t = lock(&tenant);
        if t.calls.get(&snap.call_id).is_some_and(|c| c.last_seq >= snap.last_seq && c.owner.as_deref() == Some(owner))
        {
            return false;
        }
        let mut call = CallLive { owner: Some(owner.to_string()), ..Default::default() };
        for raw in &snap.events {
            let Ok(event) = serde_json::from_str::<Event>(raw.get()) else { continue };
            if event.tenant != snap.tenant || event.call_id != snap.call_id {
                continue;
            }
            record(&mut call, &event, &Utf8Bytes::from(raw.get().to_string()), 0);
        }
        call.replay.clear();
        call.last_seq = snap.last_seq;
        let sid = snap.call_id.to_string();
        let msg = call.snapshot(&snap.tenant, &sid);
        let rep = call.rep_id.clone();
        t.calls.insert(snap.call_id, call);
        t.clients.retain(|c| !c.tx.is_closed());
        for c in &t.clients {
            if c.is_lagged() || !c.principal.may_watch(&snap.tenant, &sid, rep.as_deref()) {
                continue;
            }
            if let Err(mpsc::error::TrySendError::Full(_)) = c.tx.try_send(msg.clone()) {
                c.lagged.store(true, Ordering::Release);
                self.metrics.live_lagged.inc();
            }
        }
        true
    }

    /// Snapshots of the calls this node owns (live and lingering), for other nodes.
    pub fn local_snapshots(&self) -> Vec<crate::cluster::record::Snapshot> {
        let all: Vec<(String, Arc<Mutex<TenantLive>>)> =
            lock(&self.tenants).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut out = Vec::new();
        for (tenant, t) in all {
            let t = lock(&t);
            for (id, call) in t.calls.iter().filter(|(_, c)| c.owner.is_none()) {
                let events = call
                    .parts()
                    .into_iter()
                    .filter_map(|p| serde_json::value::RawValue::from_string(p.to_string()).ok())
                    .collect();
                out.push(crate::cluster::record::Snapshot {
                    tenant: tenant.clone(),
                    call_id: *id,
                    last_seq: call.last_seq,
                    events,
                });
            }
        }
        out
    }

    /// Calls of `tenant` that have not ended, with their owner (`None`: this node).
    pub fn live_calls(&self, tenant: &str) -> Vec<(CallId, Option<String>)> {
        let t = self.tenant(tenant);
        let t = lock(&t);
        let mut out: Vec<(CallId, Option<String>)> = t
            .calls
            .iter()
            .filter(|(_, c)| c.ended.is_none() && c.started.is_some())
            .map(|(id, c)| (*id, c.owner.clone()))
            .collect();
        out.sort();
        out
    }

    /// Calls other nodes own that have not ended: (tenant, call, owner).
    pub fn remote_live_calls(&self) -> Vec<(String, CallId, String)> {
        let all: Vec<(String, Arc<Mutex<TenantLive>>)> =
            lock(&self.tenants).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut out = Vec::new();
        for (tenant, t) in all {
            let t = lock(&t);
            for (id, call) in &t.calls {
                if let (Some(owner), None) = (&call.owner, &call.ended) {
                    out.push((tenant.clone(), *id, owner.clone()));
                }
            }
        }
        out
    }

    /// Ends a remote call whose owner is gone (its registry entry expired): a
    /// `call.ended` with `outcome` numbered after the last event seen.
    pub fn end_remote(&self, tenant: &str, call_id: CallId, outcome: &str) -> bool {
        let (owner, seq, started) = {
            let t = self.tenant(tenant);
            let t = lock(&t);
            match t.calls.get(&call_id) {
                Some(c) if c.ended.is_none() => match &c.owner {
                    Some(o) => (o.clone(), c.last_seq + 1, c.started_wall),
                    None => return false,
                },
                _ => return false,
            }
        };
        let now = (self.clock)();
        let offset = started.map_or(0, |s| (now - s).num_milliseconds().max(0) as u64);
        let event = Event {
            v: crate::events::ENVELOPE_VERSION,
            tenant: tenant.to_string(),
            call_id,
            seq,
            wall_ts: now,
            offset_ms: offset,
            body: EventBody::CallEnded(crate::events::CallEndedPayload {
                outcome: outcome.to_string(),
                duration_ms: offset,
                stats: Default::default(),
            }),
        };
        self.publish_remote(&event, &owner)
    }

    /// Registers a client. `resume` maps calls to the last `seq` the client has: it
    /// gets exactly the events after it when the replay buffer still holds them, else
    /// a snapshot. Other calls it may watch come as snapshots.
    pub fn connect(&self, principal: Principal, resume: &HashMap<CallId, u64>) -> Connected {
        let (tx, rx) = mpsc::channel(self.cfg.client_queue);
        let client = Arc::new(Client {
            id: self.next_client.fetch_add(1, Ordering::Relaxed),
            principal,
            tx,
            lagged: AtomicBool::new(false),
        });
        let tenant = self.tenant(&client.principal.tenant);
        let mut t = lock(&tenant);
        self.sweep_locked(&mut t);
        let mut initial = Vec::new();
        let mut ids: Vec<&CallId> = t.calls.keys().collect();
        ids.sort();
        for id in ids {
            let call = &t.calls[id];
            let sid = id.to_string();
            if !client.principal.may_watch(&client.principal.tenant, &sid, call.rep_id.as_deref()) {
                continue;
            }
            match resume.get(id) {
                Some(&have) if have >= call.last_seq => {
                    self.metrics.live_resumes.with_label_values(&["current"]).inc();
                }
                Some(&have) if call.replay.front().is_some_and(|(first, _)| *first <= have + 1) => {
                    self.metrics.live_resumes.with_label_values(&["replay"]).inc();
                    initial.extend(call.replay.iter().filter(|(s, _)| *s > have).map(|(_, j)| j.clone()));
                }
                other => {
                    if other.is_some() {
                        self.metrics.live_resumes.with_label_values(&["snapshot"]).inc();
                    }
                    initial.push(call.snapshot(&client.principal.tenant, &sid));
                }
            }
        }
        t.clients.push(client.clone());
        self.open.fetch_add(1, Ordering::Relaxed);
        self.metrics.live_connections.inc();
        Connected { client, initial, rx }
    }

    /// For a lagged client whose queue has been sent: snapshots of every call it
    /// watches, and the client is live again (atomically with the snapshots).
    pub fn resync(&self, client: &Client) -> Vec<Utf8Bytes> {
        let tenant = self.tenant(&client.principal.tenant);
        let t = lock(&tenant);
        let mut out = Vec::new();
        let mut ids: Vec<&CallId> = t.calls.keys().collect();
        ids.sort();
        for id in ids {
            let call = &t.calls[id];
            let sid = id.to_string();
            if client.principal.may_watch(&client.principal.tenant, &sid, call.rep_id.as_deref()) {
                out.push(call.snapshot(&client.principal.tenant, &sid));
            }
        }
        client.lagged.store(false, Ordering::Release);
        out
    }

    pub fn disconnect(&self, client: &Arc<Client>) {
        let tenant = self.tenant(&client.principal.tenant);
        lock(&tenant).clients.retain(|c| c.id != client.id);
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.metrics.live_connections.dec();
    }

    fn sweep_locked(&self, t: &mut TenantLive) {
        let linger = self.cfg.linger;
        t.calls.retain(|_, c| c.ended_at.is_none_or(|e| e.elapsed() < linger));
    }

    /// Forgets calls that ended more than `linger` ago.
    pub fn sweep(&self) {
        let all: Vec<Arc<Mutex<TenantLive>>> = lock(&self.tenants).values().cloned().collect();
        for t in all {
            self.sweep_locked(&mut lock(&t));
        }
    }

    pub fn heartbeat(&self) -> Duration {
        self.cfg.heartbeat
    }

    /// Calls the hub holds for `tenant` (live and lingering).
    pub fn call_count(&self, tenant: &str) -> usize {
        lock(&self.tenant(tenant)).calls.len()
    }
}

#[cfg(test)]
mod tests;

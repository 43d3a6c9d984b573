//! Unit tests of the live hub: subscriptions, fan-out, snapshots and remote calls.

use super::*;
use crate::call::{Layout, Role, Source};
use crate::events::{CallStartedPayload, EventSequencer};
use crate::live::token::{Claims, TokenRole};

fn principal(tenant: &str, sub: &str, role: TokenRole) -> Principal {
    Principal { tenant: tenant.into(), claims: Claims { sub: sub.into(), role, exp: u64::MAX, iat: 0, call: None } }
}

fn hub(queue: usize, replay: usize) -> Arc<LiveHub> {
    LiveHub::new(
        LiveConfig { client_queue: queue, replay_events: replay, ..LiveConfig::default() },
        Metrics::new(),
        crate::clock::system(),
    )
}

fn started(rep: &str) -> EventBody {
    EventBody::CallStarted(CallStartedPayload {
        source: Source::Pcm,
        campaign: None,
        rep_id: Some(rep.into()),
        layout: Layout::Stereo,
        channels: vec![Role::Rep, Role::Customer],
        sample_rate: 8000,
        recording: false,
        source_ids: Default::default(),
        participants: vec![],
    })
}

fn metrics(i: u64) -> EventBody {
    EventBody::Metrics(crate::coach::MetricsPayload { at_ms: i, ..Default::default() })
}

fn seq_of(m: &Utf8Bytes) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(m.as_str()).ok()?["seq"].as_u64()
}

#[test]
fn visibility_by_tenant_rep_and_role() {
    let h = hub(64, 100);
    let now = chrono::Utc::now();
    let id = CallId::new_at(now);
    let mut alex = h.connect(principal("acme", "alex", TokenRole::Rep), &HashMap::new());
    let mut bob = h.connect(principal("acme", "bob", TokenRole::Rep), &HashMap::new());
    let mut boss = h.connect(principal("acme", "boss", TokenRole::Manager), &HashMap::new());
    let mut other = h.connect(principal("globex", "boss", TokenRole::Manager), &HashMap::new());
    let mut s = EventSequencer::new("acme".into(), id, now);
    h.publish(&s.stamp(now, started("alex")));
    h.publish(&s.stamp(now, metrics(1)));
    assert_eq!(seq_of(&alex.rx.try_recv().unwrap()), Some(1));
    assert_eq!(seq_of(&alex.rx.try_recv().unwrap()), Some(2));
    assert_eq!(seq_of(&boss.rx.try_recv().unwrap()), Some(1));
    assert!(bob.rx.try_recv().is_err());
    assert!(other.rx.try_recv().is_err());
    // A late joiner gets a snapshot of what it may see, and nothing else.
    let late = h.connect(principal("acme", "alex", TokenRole::Rep), &HashMap::new());
    assert_eq!(late.initial.len(), 1);
    assert!(
        late.initial[0].as_str().contains("\"type\":\"snapshot\"")
            && late.initial[0].as_str().contains("\"last_seq\":2")
    );
    assert!(h.connect(principal("acme", "bob", TokenRole::Rep), &HashMap::new()).initial.is_empty());
    assert!(h.connect(principal("globex", "x", TokenRole::Manager), &HashMap::new()).initial.is_empty());
}

#[test]
fn resume_replays_exactly_or_snapshots_when_the_buffer_moved_on() {
    let h = hub(64, 20);
    let now = chrono::Utc::now();
    let id = CallId::new_at(now);
    let mut s = EventSequencer::new("acme".into(), id, now);
    h.publish(&s.stamp(now, started("alex")));
    for i in 0..29 {
        h.publish(&s.stamp(now, metrics(i)));
    }
    // 30 events; the buffer holds seq 11..=30.
    let p = || principal("acme", "boss", TokenRole::Manager);
    let r = h.connect(p(), &HashMap::from([(id, 25)]));
    assert_eq!(r.initial.iter().map(|m| seq_of(m).unwrap()).collect::<Vec<_>>(), (26..=30).collect::<Vec<_>>());
    let r = h.connect(p(), &HashMap::from([(id, 10)]));
    assert_eq!(
        r.initial.iter().map(|m| seq_of(m).unwrap()).collect::<Vec<_>>(),
        (11..=30).collect::<Vec<_>>(),
        "exactly at the edge"
    );
    let r = h.connect(p(), &HashMap::from([(id, 9)]));
    assert_eq!(r.initial.len(), 1);
    assert!(r.initial[0].as_str().contains("\"type\":\"snapshot\""));
    let r = h.connect(p(), &HashMap::from([(id, 30)]));
    assert!(r.initial.is_empty(), "already current");
}

#[test]
fn overflow_marks_lagged_and_resync_resumes_delivery_without_a_gap() {
    let h = hub(8, 100);
    let now = chrono::Utc::now();
    let id = CallId::new_at(now);
    let mut s = EventSequencer::new("acme".into(), id, now);
    let mut c = h.connect(principal("acme", "boss", TokenRole::Manager), &HashMap::new());
    h.publish(&s.stamp(now, started("alex")));
    for i in 0..20 {
        h.publish(&s.stamp(now, metrics(i)));
    }
    assert!(c.client.is_lagged());
    let queued: Vec<u64> = std::iter::from_fn(|| c.rx.try_recv().ok()).map(|m| seq_of(&m).unwrap()).collect();
    assert_eq!(queued, (1..=8).collect::<Vec<_>>(), "what fitted, in order");
    let snaps = h.resync(&c.client);
    assert!(!c.client.is_lagged());
    assert_eq!(snaps.len(), 1);
    assert!(snaps[0].as_str().contains("\"last_seq\":21"));
    h.publish(&s.stamp(now, metrics(99)));
    assert_eq!(seq_of(&c.rx.try_recv().unwrap()), Some(22), "live again right after the snapshot");
    h.disconnect(&c.client);
    assert_eq!(h.open.load(Ordering::Relaxed), 0);
}

#[test]
fn remote_events_dedupe_by_seq_snapshots_replace_state_and_lost_owners_end_calls() {
    let owner_hub = hub(64, 100);
    let h = hub(64, 100);
    let now = chrono::Utc::now();
    let id = CallId::new_at(now);
    let mut s = EventSequencer::new("acme".into(), id, now);
    let mut c = h.connect(principal("acme", "boss", TokenRole::Manager), &HashMap::new());
    let e1 = s.stamp(now, started("alex"));
    let e2 = s.stamp(now, metrics(1));
    owner_hub.publish(&e1);
    owner_hub.publish(&e2);
    assert!(h.publish_remote(&e1, "node-a"));
    assert!(!h.publish_remote(&e1, "node-a"), "a duplicate is dropped");
    assert_eq!(seq_of(&c.rx.try_recv().unwrap()), Some(1));
    assert!(c.rx.try_recv().is_err());
    assert_eq!(h.remote_live_calls(), vec![("acme".to_string(), id, "node-a".to_string())]);
    assert!(owner_hub.remote_live_calls().is_empty(), "the owner's calls are local");
    // The owner missed publishing 2..=4: its snapshot replaces B's state.
    for i in 2..5 {
        owner_hub.publish(&s.stamp(now, metrics(i)));
    }
    let snaps = owner_hub.local_snapshots();
    assert_eq!((snaps.len(), snaps[0].last_seq), (1, 5));
    assert!(h.apply_snapshot(&snaps[0], "node-a"));
    assert!(!h.apply_snapshot(&snaps[0], "node-a"), "nothing new: not applied twice");
    let m = c.rx.try_recv().unwrap();
    assert!(m.as_str().contains("\"type\":\"snapshot\"") && m.as_str().contains("\"last_seq\":5"), "{}", m.as_str());
    assert!(!h.publish_remote(&e2, "node-a"), "covered by the snapshot");
    assert!(h.publish_remote(&s.stamp(now, metrics(9)), "node-a"));
    assert_eq!(seq_of(&c.rx.try_recv().unwrap()), Some(6));
    // The owner is gone: the call ends as node_lost, numbered after the last event.
    assert!(h.end_remote("acme", id, "node_lost"));
    let end: serde_json::Value = serde_json::from_str(c.rx.try_recv().unwrap().as_str()).unwrap();
    assert_eq!(
        (end["type"].as_str(), end["outcome"].as_str(), end["seq"].as_u64()),
        (Some("call.ended"), Some("node_lost"), Some(7))
    );
    assert!(!h.end_remote("acme", id, "node_lost"), "once");
    assert!(h.remote_live_calls().is_empty());
    assert!(!owner_hub.end_remote("acme", id, "node_lost"), "never a local call");
}

#[test]
fn ended_calls_linger_then_go() {
    let h = LiveHub::new(
        LiveConfig { linger: Duration::from_millis(0), ..LiveConfig::default() },
        Metrics::new(),
        crate::clock::system(),
    );
    let now = chrono::Utc::now();
    let id = CallId::new_at(now);
    let mut s = EventSequencer::new("acme".into(), id, now);
    h.publish(&s.stamp(now, started("alex")));
    assert_eq!(h.call_count("acme"), 1);
    h.publish(&s.stamp(
        now,
        EventBody::CallEnded(crate::events::CallEndedPayload {
            outcome: "completed".into(),
            duration_ms: 1,
            stats: Default::default(),
        }),
    ));
    h.sweep();
    assert_eq!(h.call_count("acme"), 0);
}

//! Several nodes, one Redis — the pure part: key names, the records on the event
//! stream, registry entries, stream ids and the lock scripts. The IO (connections,
//! tasks) is in `cluster::node`.
//!
//! One Redis stream carries every node's live events. A stream, not pub/sub: entries
//! are kept (trimmed to `redis.stream_maxlen`), so a node whose connection dropped
//! reads on from the last id it saw and loses nothing; each node appends its calls'
//! events from one task, so a call's events are in `seq` order in the stream. When a
//! node cannot publish (Redis down, queue full) or a reader cannot catch up (trimmed,
//! Redis restarted empty), owners send a *snapshot* of each of their calls and
//! readers replace what they had.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::call::CallId;

/// Key names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_string() }
    }
    /// The event stream every node appends to and reads.
    pub fn stream(&self) -> String {
        format!("{}:events", self.prefix)
    }
    /// A live call's registry entry (string, with a TTL).
    pub fn call(&self, tenant: &str, call_id: &CallId) -> String {
        format!("{}:call:{tenant}:{call_id}", self.prefix)
    }
    /// The ids of a tenant's registered calls (a set; members whose entry expired are
    /// removed by whoever lists them).
    pub fn calls(&self, tenant: &str) -> String {
        format!("{}:calls:{tenant}", self.prefix)
    }
    /// An external call key claimed by one node (WHIP call key, SIP Call-ID).
    pub fn claim(&self, tenant: &str, key: &str) -> String {
        format!("{}:claim:{tenant}:{key}", self.prefix)
    }
    /// A live call's source id (`sip_call_id`, `call_sid`, …) → its owner's entry.
    pub fn source(&self, name: &str, value: &str) -> String {
        format!("{}:src:{name}:{value}", self.prefix)
    }
    /// A job lock.
    pub fn lock(&self, name: &str) -> String {
        format!("{}:lock:{name}", self.prefix)
    }
}

/// Who owns a live call or a claimed key: the value of a registry entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub node: String,
    /// The node's advertised base URL (where redirected clients go).
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
}

#[derive(Debug, Error, PartialEq)]
#[non_exhaustive]
pub enum RecordError {
    #[error("stream entry has no field `{0}`")]
    Missing(&'static str),
    #[error("stream entry kind {0:?} is unknown")]
    Kind(String),
    #[error("stream entry field `{0}` is not UTF-8")]
    Utf8(&'static str),
    #[error("stream entry snapshot: {0}")]
    Snapshot(String),
}

/// A call's state as its owner has it, for nodes that missed events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub tenant: String,
    pub call_id: CallId,
    pub last_seq: u64,
    /// The events that make up the call's state (started, finals, latest partials,
    /// hints, checklist, metrics, ended, scorecard), as JSON envelopes.
    pub events: Vec<Box<serde_json::value::RawValue>>,
}

/// One entry of the event stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A live event (the envelope JSON, exactly as the owner's hub has it).
    Event { node: String, event: String },
    /// A call's state, sent after the owner could not publish for a while or when a
    /// node says hello.
    Snapshot { node: String, snapshot: String },
    /// A node (re)joined: owners answer with snapshots of their live calls.
    Hello { node: String },
}

impl Record {
    pub fn node(&self) -> &str {
        match self {
            Record::Event { node, .. } | Record::Snapshot { node, .. } | Record::Hello { node } => node,
        }
    }

    /// Field/value pairs for `XADD`.
    pub fn fields(&self) -> [(&'static str, &str); 3] {
        match self {
            Record::Event { node, event } => [("n", node), ("k", "e"), ("d", event)],
            Record::Snapshot { node, snapshot } => [("n", node), ("k", "s"), ("d", snapshot)],
            Record::Hello { node } => [("n", node), ("k", "h"), ("d", "")],
        }
    }

    /// Reads an entry's field/value pairs (unknown fields are ignored).
    pub fn parse<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Result<Record, RecordError> {
        let (mut n, mut k, mut d) = (None, None, None);
        for (f, v) in pairs {
            let text = |name: &'static str| std::str::from_utf8(v).map_err(|_| RecordError::Utf8(name));
            match f {
                "n" => n = Some(text("n")?.to_string()),
                "k" => k = Some(text("k")?.to_string()),
                "d" => d = Some(text("d")?.to_string()),
                _ => {}
            }
        }
        let node = n.filter(|n| !n.is_empty()).ok_or(RecordError::Missing("n"))?;
        match k.ok_or(RecordError::Missing("k"))?.as_str() {
            "e" => Ok(Record::Event { node, event: d.ok_or(RecordError::Missing("d"))? }),
            "s" => Ok(Record::Snapshot { node, snapshot: d.ok_or(RecordError::Missing("d"))? }),
            "h" => Ok(Record::Hello { node }),
            other => Err(RecordError::Kind(other.chars().take(16).collect())),
        }
    }
}

impl Snapshot {
    pub fn parse(text: &str) -> Result<Snapshot, RecordError> {
        serde_json::from_str(text).map_err(|e| RecordError::Snapshot(e.to_string()))
    }
}

/// A stream entry id, `<ms>-<n>`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct StreamId(pub u64, pub u64);

impl FromStr for StreamId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (a, b) = s.split_once('-').ok_or(())?;
        Ok(StreamId(a.parse().map_err(|_| ())?, b.parse().map_err(|_| ())?))
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// Renews a lock only while we still hold it: `KEYS[1]` lock, `ARGV[1]` our token,
/// `ARGV[2]` lease in ms. Returns 1 when renewed.
pub const RENEW_LOCK: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
/// Releases a lock only while we still hold it: `KEYS[1]` lock, `ARGV[1]` our token.
pub const RELEASE_LOCK: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_entries_are_named() {
        for r in [
            Record::Event { node: "a".into(), event: "{\"seq\":1}".into() },
            Record::Snapshot { node: "b".into(), snapshot: "{}".into() },
            Record::Hello { node: "c".into() },
        ] {
            let f = r.fields();
            let back = Record::parse(f.iter().map(|(k, v)| (*k, v.as_bytes()))).unwrap();
            assert_eq!(back, r);
            assert_eq!(back.node(), r.node());
        }
        assert_eq!(Record::parse([("k", &b"e"[..])]), Err(RecordError::Missing("n")));
        assert_eq!(Record::parse([("n", &b"a"[..]), ("k", &b"e"[..])]), Err(RecordError::Missing("d")));
        assert_eq!(Record::parse([("n", &b"a"[..]), ("k", &b"zz"[..])]), Err(RecordError::Kind("zz".into())));
        assert_eq!(Record::parse([("n", &b"\xff"[..])]), Err(RecordError::Utf8("n")));
        assert!(matches!(Snapshot::parse("{"), Err(RecordError::Snapshot(_))));
    }

    #[test]
    fn stream_ids_order_like_redis() {
        let a: StreamId = "1700000000000-0".parse().unwrap();
        let b: StreamId = "1700000000000-12".parse().unwrap();
        let c: StreamId = "1700000000001-0".parse().unwrap();
        assert!(a < b && b < c);
        assert_eq!(b.to_string(), "1700000000000-12");
        assert!("x".parse::<StreamId>().is_err());
        assert!("1-".parse::<StreamId>().is_err());
    }

    #[test]
    fn snapshot_keeps_event_json_verbatim() {
        let id = CallId::new_at(chrono::Utc::now());
        let text = format!("{{\"tenant\":\"acme\",\"call_id\":\"{id}\",\"last_seq\":7,\"events\":[{{\"seq\":1,\"type\":\"call.started\"}}]}}");
        let s = Snapshot::parse(&text).unwrap();
        assert_eq!((s.tenant.as_str(), s.call_id, s.last_seq), ("acme", id, 7));
        assert_eq!(s.events[0].get(), "{\"seq\":1,\"type\":\"call.started\"}");
        let k = Keys::new("es");
        assert_eq!(k.call("acme", &id), format!("es:call:acme:{id}"));
        assert_eq!(k.claim("acme", "whip:c1"), "es:claim:acme:whip:c1");
    }
}

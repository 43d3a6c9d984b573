//! The reader task: other nodes' stream records into the local hub, on its own
//! connection; says hello on every (re)connect and reads on from the last id it saw.
//! Also the `XREAD` reply parsing.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tokio::time::Instant;

use crate::cluster::node::{lock, ms, Cluster, Out};
use crate::cluster::record::{Record, Snapshot, StreamId};
use crate::events::Event;

/// Entries the reader takes per `XREAD`.
const READ_COUNT: usize = 512;
/// How long an `XREAD` waits for new entries.
const READ_BLOCK: Duration = Duration::from_secs(2);

impl Cluster {
    pub(super) async fn reader(self: Arc<Self>) {
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

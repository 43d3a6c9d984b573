//! What `/live` clients send, parsed without IO (the websocket edge is `live::socket`):
//! the `resume` query and client text frames. Both face the network: bounded, never panic.

use std::collections::HashMap;

use crate::call::CallId;

/// Most calls a client may resume at once.
pub const MAX_RESUME_CALLS: usize = 1000;

/// `resume=<call_id>:<seq>[,<call_id>:<seq>…]`.
pub fn parse_resume(s: &str) -> Result<HashMap<CallId, u64>, String> {
    let mut out = HashMap::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        if out.len() >= MAX_RESUME_CALLS {
            return Err(format!("at most {MAX_RESUME_CALLS} calls"));
        }
        let (id, seq) = part.split_once(':').ok_or_else(|| format!("{:?} is not <call_id>:<seq>", truncate(part)))?;
        let id = CallId::parse(id).ok_or_else(|| format!("{:?} is not a call id", truncate(id)))?;
        let seq: u64 = seq.parse().map_err(|_| format!("{:?} is not a sequence number", truncate(seq)))?;
        out.insert(id, seq);
    }
    Ok(out)
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A client text frame.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientMessage {
    Ping,
}

/// `{"type":"ping"}`; anything else is an error the server answers with `bad_message`.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, &'static str> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|_| "not JSON")?;
    match v.get("type").and_then(|t| t.as_str()) {
        Some("ping") => Ok(ClientMessage::Ping),
        _ => Err("expected {\"type\":\"ping\"}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_lists_parse_and_reject_garbage() {
        let id = CallId::new_at(chrono::Utc::now());
        let r = parse_resume(&format!("{id}:42")).unwrap();
        assert_eq!(r[&id], 42);
        assert!(parse_resume("").unwrap().is_empty());
        assert!(parse_resume("nope").unwrap_err().contains("not <call_id>:<seq>"));
        assert!(parse_resume(&format!("{id}:x")).unwrap_err().contains("sequence"));
        assert!(parse_resume("abc:1").unwrap_err().contains("call id"));
        let many: Vec<String> = (0..1001).map(|i| format!("{}:{i}", CallId::new_at(chrono::Utc::now()))).collect();
        assert!(parse_resume(&many.join(",")).is_err());
        assert!(parse_resume(&"é".repeat(500)).unwrap_err().len() < 200, "errors quote at most a short prefix");
    }

    #[test]
    fn client_messages() {
        assert_eq!(parse_client_message(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping));
        assert!(parse_client_message(r#"{"type":"subscribe"}"#).is_err());
        assert!(parse_client_message("{").is_err());
    }
}

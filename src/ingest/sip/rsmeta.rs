//! SIPREC recording metadata (`application/rs-metadata+xml`, RFC 7865): who the
//! participants are and which stream each one sends. Reads both the RFC form
//! (`participant_id`, `nameID aor=`, `participantstreamassoc`) and the older draft
//! form (`id`, `<aor>`, `<send>` inside `<participant>`) that some SBCs still send;
//! unknown elements are skipped. Pure.

use quick_xml::events::Event;
use quick_xml::Reader;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MetadataError {
    #[error("rs-metadata is not well-formed XML: {0}")]
    Xml(String),
    #[error("rs-metadata root element is `{0}`, not `recording`")]
    NotRecording(String),
    #[error("rs-metadata is nested deeper than {0} elements")]
    TooDeep(usize),
}

const MAX_DEPTH: usize = 32;
const MAX_ITEMS: usize = 64;
const MAX_TEXT: usize = 512;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaParticipant {
    pub id: String,
    /// Address of record, as sent (`sip:alice@example.com`).
    pub aor: Option<String>,
    pub name: Option<String>,
    /// Stream ids this participant sends.
    pub sends: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaStream {
    pub id: String,
    /// The SDP `a=label` this stream is.
    pub label: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordingMetadata {
    pub session_id: Option<String>,
    pub sip_session_id: Option<String>,
    pub participants: Vec<MetaParticipant>,
    pub streams: Vec<MetaStream>,
}

impl RecordingMetadata {
    /// The participant who sends the stream with SDP label `label`.
    pub fn sender_of_label(&self, label: &str) -> Option<&MetaParticipant> {
        let stream = self.streams.iter().find(|s| s.label.as_deref() == Some(label))?;
        self.participants.iter().find(|p| p.sends.contains(&stream.id))
    }

    /// Merges an update (a re-INVITE's metadata, RFC 7866 §9.2): known ids are
    /// updated, new ones added.
    pub fn merge(&mut self, update: RecordingMetadata) {
        if update.session_id.is_some() {
            self.session_id = update.session_id;
        }
        if update.sip_session_id.is_some() {
            self.sip_session_id = update.sip_session_id;
        }
        for p in update.participants {
            let full = self.participants.len() >= MAX_ITEMS;
            match self.participants.iter_mut().find(|q| q.id == p.id) {
                Some(q) => {
                    if p.aor.is_some() {
                        q.aor = p.aor;
                    }
                    if p.name.is_some() {
                        q.name = p.name;
                    }
                    for s in p.sends {
                        if !q.sends.contains(&s) {
                            q.sends.push(s);
                        }
                    }
                }
                None if !full => self.participants.push(p),
                None => {}
            }
        }
        for s in update.streams {
            let full = self.streams.len() >= MAX_ITEMS;
            match self.streams.iter_mut().find(|t| t.id == s.id) {
                Some(t) if s.label.is_some() => t.label = s.label,
                Some(_) => {}
                None if !full => self.streams.push(s),
                None => {}
            }
        }
    }
}

fn attr(e: &quick_xml::events::BytesStart<'_>, names: &[&str]) -> Option<String> {
    e.attributes().flatten().find_map(|a| {
        let key = a.key.local_name();
        let key = std::str::from_utf8(key.as_ref()).ok()?;
        if names.contains(&key) {
            a.unescape_value().ok().map(|v| v.trim().chars().take(MAX_TEXT).collect())
        } else {
            None
        }
    })
}

/// Reads a metadata document.
pub fn parse(xml: &[u8]) -> Result<RecordingMetadata, MetadataError> {
    let mut reader = Reader::from_reader(xml);
    reader.config_mut().trim_text(false);
    let mut meta = RecordingMetadata::default();
    let mut stack: Vec<String> = Vec::new();
    // What the current element's text goes into.
    let mut text = String::new();
    // participant_id of the current <participantstreamassoc>.
    let mut assoc: Option<String> = None;
    let mut buf = Vec::new();
    let mut root_seen = false;
    loop {
        let ev = reader.read_event_into(&mut buf).map_err(|e| MetadataError::Xml(e.to_string()))?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(ev, Event::Empty(_));
                let name = String::from_utf8_lossy(e.local_name().as_ref()).to_ascii_lowercase();
                if !root_seen {
                    if name != "recording" {
                        return Err(MetadataError::NotRecording(name.chars().take(40).collect()));
                    }
                    root_seen = true;
                }
                match name.as_str() {
                    "session" if stack.len() == 1 => {
                        meta.session_id = attr(e, &["session_id", "id"]).or(meta.session_id.take())
                    }
                    "participant" if stack.len() == 1 && meta.participants.len() < MAX_ITEMS => {
                        let id = attr(e, &["participant_id", "id"])
                            .unwrap_or_else(|| format!("#{}", meta.participants.len()));
                        meta.participants.push(MetaParticipant { id, ..Default::default() });
                    }
                    "nameid" if stack.last().is_some_and(|p| p == "participant") => {
                        if let (Some(aor), Some(p)) = (attr(e, &["aor"]), meta.participants.last_mut()) {
                            p.aor = Some(aor);
                        }
                    }
                    "stream" if stack.len() == 1 && meta.streams.len() < MAX_ITEMS => {
                        let id = attr(e, &["stream_id", "id"]).unwrap_or_else(|| format!("#{}", meta.streams.len()));
                        meta.streams.push(MetaStream { id, label: None });
                    }
                    "participantstreamassoc" if stack.len() == 1 => assoc = attr(e, &["participant_id", "id"]),
                    _ => {}
                }
                if !empty {
                    if stack.len() == MAX_DEPTH {
                        return Err(MetadataError::TooDeep(MAX_DEPTH));
                    }
                    stack.push(name);
                    text.clear();
                }
            }
            Event::Text(t) => {
                if let Ok(s) = t.decode() {
                    if text.len() + s.len() <= MAX_TEXT {
                        text.push_str(&s);
                    }
                }
            }
            Event::CData(t) if text.len() + t.len() <= MAX_TEXT => text.push_str(&String::from_utf8_lossy(&t)),
            Event::CData(_) => {}
            Event::GeneralRef(r) => {
                let ch = match &*r {
                    b"amp" => "&",
                    b"lt" => "<",
                    b"gt" => ">",
                    b"quot" => "\"",
                    b"apos" => "'",
                    _ => "",
                };
                text.push_str(ch);
            }
            Event::End(_) => {
                let Some(name) = stack.pop() else { break };
                let parent = stack.last().map(String::as_str);
                let value = text.trim().to_string();
                text.clear();
                match (name.as_str(), parent) {
                    ("sipsessionid", Some("session")) if !value.is_empty() => meta.sip_session_id = Some(value),
                    ("name", Some("nameid" | "participant")) if !value.is_empty() => {
                        if let Some(p) = meta.participants.last_mut() {
                            p.name = Some(value);
                        }
                    }
                    ("aor", Some("participant")) if !value.is_empty() => {
                        if let Some(p) = meta.participants.last_mut() {
                            p.aor = Some(value);
                        }
                    }
                    ("send", Some("participant")) if !value.is_empty() => {
                        if let Some(p) = meta.participants.last_mut().filter(|p| p.sends.len() < MAX_ITEMS) {
                            p.sends.push(value);
                        }
                    }
                    ("send", Some("participantstreamassoc")) if !value.is_empty() => {
                        if let Some(id) = &assoc {
                            if let Some(p) =
                                meta.participants.iter_mut().find(|p| &p.id == id).filter(|p| p.sends.len() < MAX_ITEMS)
                            {
                                p.sends.push(value);
                            }
                        }
                    }
                    ("label", Some("stream")) if !value.is_empty() => {
                        if let Some(s) = meta.streams.last_mut() {
                            s.label = Some(value);
                        }
                    }
                    ("participantstreamassoc", _) => assoc = None,
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !root_seen {
        return Err(MetadataError::NotRecording(String::new()));
    }
    // Associations may come before their participants: resolve late ones.
    Ok(meta)
}

/// Fixtures shared with the other SIP cores' tests.
#[cfg(test)]
pub(crate) mod tests_support {
    pub use super::tests::RFC;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7865 §A.1-style metadata, with an unknown element and an extension.
    pub const RFC: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns='urn:ietf:params:xml:ns:recording:1'>
  <datamode>complete</datamode>
  <session session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <sipSessionID>ab30317f1a784dc48ff824d0d3715d86;remote=47755a9de7794ba387653f2099600ef2</sipSessionID>
  </session>
  <participant participant_id="srfBElmCRp2QB23b7Mpk0w==">
    <nameID aor="sip:bob@biloxi.example.com"><name xml:lang="en">Bob &amp; Co</name></nameID>
  </participant>
  <participant participant_id="zSfPoSvdSDCmU3A3TRDxAw==">
    <nameID aor="sip:alice@agents.example.com"><name>Alice</name></nameID>
    <vendor:extension xmlns:vendor="urn:x">ignored</vendor:extension>
  </participant>
  <stream stream_id="UAAMm5GRQKSCMVvLyl4rFw==" session_id="hVpd7YQgRW2nD22h7q60JQ=="><label>96</label></stream>
  <stream stream_id="i1Pz3to5hGk8fuXl+PbwCw==" session_id="hVpd7YQgRW2nD22h7q60JQ=="><label>97</label></stream>
  <participantstreamassoc participant_id="srfBElmCRp2QB23b7Mpk0w==">
    <send>i1Pz3to5hGk8fuXl+PbwCw==</send><recv>UAAMm5GRQKSCMVvLyl4rFw==</recv>
  </participantstreamassoc>
  <participantstreamassoc participant_id="zSfPoSvdSDCmU3A3TRDxAw==">
    <send>UAAMm5GRQKSCMVvLyl4rFw==</send><recv>i1Pz3to5hGk8fuXl+PbwCw==</recv>
  </participantstreamassoc>
</recording>"#;

    #[test]
    fn reads_rfc_metadata() {
        let m = parse(RFC.as_bytes()).unwrap();
        assert_eq!(m.session_id.as_deref(), Some("hVpd7YQgRW2nD22h7q60JQ=="));
        assert!(m.sip_session_id.as_deref().unwrap().starts_with("ab30317f"));
        assert_eq!(m.participants.len(), 2);
        assert_eq!(m.participants[0].name.as_deref(), Some("Bob & Co"));
        let alice = m.sender_of_label("96").unwrap();
        assert_eq!(alice.aor.as_deref(), Some("sip:alice@agents.example.com"));
        assert_eq!(m.sender_of_label("97").unwrap().aor.as_deref(), Some("sip:bob@biloxi.example.com"));
        assert_eq!(m.sender_of_label("98"), None);
    }

    #[test]
    fn reads_the_older_draft_form() {
        let xml = r#"<recording xmlns="urn:ietf:params:xml:ns:recording">
          <participant id="p1"><aor>sip:100@pbx</aor><name>Agent 100</name><send>s1</send></participant>
          <participant id="p2"><aor>tel:+15551234567</aor><send>s2</send></participant>
          <stream id="s1"><label>1</label></stream><stream id="s2"><label>2</label></stream>
        </recording>"#;
        let m = parse(xml.as_bytes()).unwrap();
        assert_eq!(m.sender_of_label("1").unwrap().aor.as_deref(), Some("sip:100@pbx"));
        assert_eq!(m.sender_of_label("2").unwrap().aor.as_deref(), Some("tel:+15551234567"));
    }

    #[test]
    fn merge_updates_and_adds() {
        let mut m = parse(RFC.as_bytes()).unwrap();
        let upd = parse(br#"<recording><participant participant_id="new"><nameID aor="sip:carol@x"/></participant>
            <participant participant_id="zSfPoSvdSDCmU3A3TRDxAw=="><nameID aor="sip:alice@agents.example.com"><name>Alice B</name></nameID></participant></recording>"#).unwrap();
        m.merge(upd);
        assert_eq!(m.participants.len(), 3);
        assert_eq!(m.participants[1].name.as_deref(), Some("Alice B"));
        assert_eq!(m.participants[1].sends.len(), 1);
    }

    #[test]
    fn bad_documents_are_refused() {
        assert!(matches!(parse(b"<recording><participant></recording>"), Err(MetadataError::Xml(_))));
        assert_eq!(parse(b"<html/>"), Err(MetadataError::NotRecording("html".into())));
        assert_eq!(parse(b""), Err(MetadataError::NotRecording(String::new())));
        let deep = format!("<recording>{}{}</recording>", "<a>".repeat(40), "</a>".repeat(40));
        assert_eq!(parse(deep.as_bytes()), Err(MetadataError::TooDeep(MAX_DEPTH)));
    }
}

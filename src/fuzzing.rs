//! Entry points for fuzz targets: thin, always compiled, never panicking. Each
//! `fuzz/fuzz_targets/*.rs` is a three-line wrapper around one of these.

/// Twilio Media Streams text frame.
pub fn twilio_message(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let mut s = crate::ingest::twilio::protocol::TwilioStream::new();
        if let Ok(crate::ingest::twilio::protocol::TwilioMessage::Media { payload, .. }) = s.on_text(text) {
            let mut out = Vec::new();
            let _ = crate::ingest::twilio::protocol::decode_payload(&payload, &mut out);
        }
    }
}

/// PCM fork metadata frame followed by binary data.
pub fn pcm_fork(data: &[u8]) {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    if let Ok(text) = std::str::from_utf8(&data[..split]) {
        if let Ok(meta) = crate::ingest::pcm::protocol::parse_metadata(text) {
            let mut framer = crate::ingest::pcm::protocol::PcmFramer::new(meta.channels, meta.rep_channel == Some(1));
            let mut out = Vec::new();
            for chunk in data[split..].chunks(7) {
                framer.push(chunk, &mut out);
            }
        }
    }
}

/// `/live` resume query and client text frame.
pub fn live_client(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::live::protocol::parse_resume(text);
        let _ = crate::live::protocol::parse_client_message(text);
    }
}

/// A stored object as read back from a store (S3 answers are not trusted): header,
/// layout and every chunk, with a fixed keyring; and keyring text.
pub fn stored_object(data: &[u8]) {
    use crate::store::crypt::{decrypt, Header, Key, Keyring, Layout, TenantKeys};
    let mut ring = Keyring::default();
    ring.tenants.insert(
        "t".into(),
        TenantKeys { active: 1, keys: [("1".to_string(), Key([7u8; 32]).to_base64())].into(), destroyed: vec![] },
    );
    let _ = decrypt(&ring, "t", "t/x", data);
    if let Ok(h) = Header::parse(data) {
        if let Ok(l) = Layout::of(data.len() as u64, h.chunk_size) {
            for i in 0..l.chunks.min(64) {
                let _ = l.chunk_range(i);
            }
            let _ = l.chunks_for(3..l.plain_len.saturating_add(5));
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Keyring::parse(text);
    }
}

/// Coaching playbook text, every campaign resolved, and its phrases run over the
/// same text as if it were a transcript.
pub fn playbook(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let words = crate::coach::text::words(text);
        for line in text.lines().take(16) {
            if let Some(p) = crate::coach::text::Phrase::new(line) {
                let _ = p.find_all(&words);
            }
        }
        if let Ok(file) = crate::coach::PlaybookFile::parse(text) {
            let _ = file.resolve(None);
            for name in file.campaigns.keys() {
                let _ = file.resolve(Some(name));
            }
        }
    }
}

/// Configuration file text.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::Config::from_toml_with_env(text, std::path::Path::new("fuzz.toml"), std::iter::empty());
    }
}

/// A SIP INVITE body as Earshot reads it: Content-Type (first line) then body,
/// through the multipart splitter, SDP parser, rs-metadata parser, the stream
/// mapping and the SDP answer.
pub fn sip_body(data: &[u8]) {
    use crate::ingest::sip::{invite, sdp};
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let ct = std::str::from_utf8(&data[..split]).ok();
    let body = data.get(split + 1..).unwrap_or(&[]);
    let _ = crate::ingest::sip::rsmeta::parse(body);
    if let Some(b) = ct.and_then(crate::ingest::sip::multipart::boundary) {
        let _ = crate::ingest::sip::multipart::split(body, &b);
    }
    if let Ok(offer) = invite::read_body(ct, body) {
        let rules = crate::config::TenantSip { rep_aors: vec!["*@a*".into()], ..Default::default() };
        if let Ok(plan) = invite::plan(&offer, &rules, None) {
            let answers: Vec<sdp::AnswerStream> = (0..offer.sdp.media.len())
                .map(|i| match plan.streams.iter().find(|s| s.section == i) {
                    Some(s) => sdp::AnswerStream::Accept {
                        port: 20000,
                        codec: s.codec,
                        pt: s.pt,
                        dtmf_pt: s.dtmf_pt,
                        crypto: s.srtp.clone(),
                    },
                    None => sdp::AnswerStream::Reject,
                })
                .collect();
            let a = sdp::answer(&offer.sdp, &answers, std::net::IpAddr::from([127, 0, 0, 1]), 1, 1);
            assert!(sdp::parse(a.as_bytes()).is_ok(), "our own answer must parse");
        }
    }
}

/// A SIP datagram as the listener gets it: rsipstack's parser, then what Earshot
/// reads from a request (headers by full and compact name, Via source), then the
/// INVITE body path of `sip_body` with the Content-Type the headers give.
#[cfg(feature = "sip-msg")]
pub fn sip_message(data: &[u8]) {
    use rsipstack::sip::SipMessage;
    let Ok(SipMessage::Request(req)) = SipMessage::try_from(data) else { return };
    let facts = crate::ingest::sip::request::invite_facts(&req, "X-Earshot-Tenant");
    static TENANTS: std::sync::OnceLock<Vec<crate::config::TenantConfig>> = std::sync::OnceLock::new();
    let tenants = TENANTS.get_or_init(|| {
        ["id = \"a\"\n[sip]\nallow = [\"10.0.0.0/8\"]\n", "id = \"b\"\n[sip]\nusers = [\"b\"]\n"]
            .iter()
            .map(|t| toml::from_str(t).expect("fuzz tenant"))
            .collect()
    });
    if let Some(src) = facts.source {
        let _ = crate::ingest::sip::invite::resolve_tenant(
            tenants,
            src.ip(),
            facts.user.as_deref(),
            facts.tenant.as_deref(),
        );
    }
    if let Ok(offer) = crate::ingest::sip::invite::read_body(facts.content_type.as_deref(), &req.body) {
        let rules = crate::config::TenantSip { rep_aors: vec!["*@a*".into()], ..Default::default() };
        let _ = crate::ingest::sip::invite::plan(&offer, &rules, facts.rep.as_deref());
    }
}

/// The multipart splitter alone: first line the boundary, the rest the body.
pub fn multipart(data: &[u8]) {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let Ok(boundary) = std::str::from_utf8(&data[..split]) else { return };
    if let Ok(parts) = crate::ingest::sip::multipart::split(data.get(split + 1..).unwrap_or(&[]), boundary.trim()) {
        for p in parts {
            assert!(p.body.len() <= data.len());
        }
    }
}

/// SDP offer parsing and our answer (codec choice, SDES keys): the answer must
/// always parse and keep the offer's sections in order.
pub fn sdp(data: &[u8]) {
    use crate::ingest::sip::sdp;
    let Ok(offer) = sdp::parse(data) else { return };
    let answers: Vec<sdp::AnswerStream> = offer
        .media
        .iter()
        .enumerate()
        .map(|(i, m)| match m.choose_codec() {
            Some((codec, pt)) if m.kind == "audio" => sdp::AnswerStream::Accept {
                port: 20000 + 2 * i as u16,
                codec,
                pt,
                dtmf_pt: m.telephone_event(),
                crypto: m.sdes(),
            },
            _ => sdp::AnswerStream::Reject,
        })
        .collect();
    let a = sdp::answer(&offer, &answers, std::net::IpAddr::from([127, 0, 0, 1]), 1, 1);
    let parsed = sdp::parse(a.as_bytes()).expect("our own answer must parse");
    assert_eq!(parsed.media.len(), offer.media.len());
    for m in &offer.media {
        if let Some(k) = m.sdes() {
            assert_eq!(sdp::SdesKey::parse(&k.attribute()), Some(k), "an SDES key round-trips");
        }
    }
}

/// rs-metadata XML alone.
pub fn rs_metadata(data: &[u8]) {
    if let Ok(mut m) = crate::ingest::sip::rsmeta::parse(data) {
        for s in m.streams.clone() {
            if let Some(l) = &s.label {
                let _ = m.sender_of_label(l);
            }
        }
        let again = m.clone();
        m.merge(again);
    }
}

/// One RTP packet: header, extension, padding, and a DTMF event.
pub fn rtp_packet(data: &[u8]) {
    if let Ok((h, payload)) = crate::media::rtp::parse(data) {
        assert!(payload.len() <= data.len());
        let _ = crate::media::rtp::telephone_event(payload);
        let mut out = Vec::new();
        crate::media::rtp::write(&h, payload, &mut out);
        let (h2, p2) = crate::media::rtp::parse(&out).expect("what we write parses");
        assert_eq!((h2, p2), (h, payload));
    }
}

/// RTP packets (length-prefixed) through the parser and a jitter buffer, with
/// arrival times from the data: nothing may panic and output keeps in step.
pub fn rtp_stream(data: &[u8]) {
    use crate::media::jitter::{JitterBuffer, JitterConfig};
    let mut jb = JitterBuffer::new(JitterConfig { max_packets: 64, ..JitterConfig::for_rate(8000, 60) });
    let mut now: i64 = 0;
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(rest[0]).min(rest.len() - 2);
        now += i64::from(rest[1]) * 8;
        let pkt = &rest[2..2 + len];
        rest = &rest[2 + len..];
        if let Ok((h, payload)) = crate::media::rtp::parse(pkt) {
            let _ = crate::media::rtp::telephone_event(payload);
            let mut samples = Vec::new();
            crate::media::g711::decode_ulaw_into(payload, &mut samples);
            jb.push(now, &h, &samples);
        }
        jb.pull(now, &mut out);
        assert_eq!(out.len() as i64, jb.position().max(0));
    }
    jb.pull_to(now + 10_000, &mut out);
    assert_eq!(out.len() as i64, jb.position());
}

#[cfg(test)]
mod tests {
    /// Every network-parser fuzz entry point takes its committed seed without panicking
    /// (CI fuzzes from these; a seed that trips an invariant would fail every run).
    #[test]
    fn fuzz_entry_points_take_their_seeds() {
        crate::fuzzing::sdp(include_bytes!("../fuzz/seeds/sdp/offer"));
        crate::fuzzing::multipart(include_bytes!("../fuzz/seeds/multipart/two"));
        crate::fuzzing::rs_metadata(include_bytes!("../fuzz/seeds/rs_metadata/rfc"));
        crate::fuzzing::rtp_packet(include_bytes!("../fuzz/seeds/rtp_packet/pcmu"));
        #[cfg(feature = "sip-msg")]
        crate::fuzzing::sip_message(include_bytes!("../fuzz/seeds/sip_message/invite"));
    }
}

//! What Earshot does with an INVITE, decided without sockets: which tenant it is
//! for and whether the sender may fork to it, what the body offers (SIPREC
//! multipart or plain SDP), and which offered stream lands on which channel.

use std::net::{IpAddr, SocketAddr};

use thiserror::Error;

use crate::call::{Layout, Participant, Role};
use crate::config::{RepStream, TenantConfig, TenantSip};
use crate::ingest::sip::rsmeta::RecordingMetadata;
use crate::ingest::sip::sdp::{Codec, SessionDescription};
use crate::ingest::sip::{multipart, rsmeta, sdp};

/// A refusal, with the SIP status it is answered with.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Refusal {
    #[error("403 {0}")]
    Forbidden(&'static str),
    #[error("400 {0}")]
    BadRequest(String),
    #[error("415 {0}")]
    UnsupportedMediaType(String),
    #[error("488 {0}")]
    NotAcceptableHere(String),
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Forbidden(_) => 403,
            Refusal::BadRequest(_) => 400,
            Refusal::UnsupportedMediaType(_) => 415,
            Refusal::NotAcceptableHere(_) => 488,
        }
    }
    /// Metric label.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Forbidden(_) => "forbidden",
            Refusal::BadRequest(_) => "bad_request",
            Refusal::UnsupportedMediaType(_) => "unsupported_media",
            Refusal::NotAcceptableHere(_) => "not_acceptable",
        }
    }
    /// Text for a `Warning`/reason phrase: one line, bounded.
    pub fn reason(&self) -> String {
        let s = match self {
            Refusal::Forbidden(s) => s.to_string(),
            Refusal::BadRequest(s) | Refusal::UnsupportedMediaType(s) | Refusal::NotAcceptableHere(s) => s.clone(),
        };
        s.chars().filter(|c| !c.is_control() && *c != '"').take(120).collect()
    }
}

/// Finds the tenant an INVITE is for and checks that `source` may fork for it.
/// Order: the configured tenant header, the request-URI user part (a tenant id or
/// one of its `sip.users`), else the one tenant whose allow-list holds `source`.
pub fn resolve_tenant<'a>(
    tenants: &'a [TenantConfig],
    source: IpAddr,
    request_user: Option<&str>,
    tenant_header: Option<&str>,
) -> Result<&'a TenantConfig, Refusal> {
    let by_name =
        |name: &str| tenants.iter().find(|t| t.id == name || t.sip.users.iter().any(|u| u.eq_ignore_ascii_case(name)));
    let named = tenant_header
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .and_then(by_name)
        .or_else(|| request_user.and_then(by_name));
    let tenant = match named {
        Some(t) => t,
        None => {
            let mut allowed = tenants.iter().filter(|t| t.sip.allows(source));
            match (allowed.next(), allowed.next()) {
                (Some(t), None) => t,
                (Some(_), Some(_)) => {
                    return Err(Refusal::Forbidden(
                        "several tenants allow this source: name one (request-URI user or tenant header)",
                    ))
                }
                (None, _) => return Err(Refusal::Forbidden("source address not allowed")),
            }
        }
    };
    if !tenant.sip.allows(source) {
        return Err(Refusal::Forbidden("source address not allowed"));
    }
    Ok(tenant)
}

/// What an INVITE body offers.
#[derive(Debug, Clone)]
pub struct Offer {
    pub sdp: SessionDescription,
    pub metadata: Option<RecordingMetadata>,
}

/// Reads an INVITE (or re-INVITE) body. SIPREC bodies are `multipart/mixed`; a
/// missing or broken metadata part is tolerated (streams then map by order).
pub fn read_body(content_type: Option<&str>, body: &[u8]) -> Result<Offer, Refusal> {
    if body.is_empty() {
        return Err(Refusal::NotAcceptableHere("an offer is required in the INVITE (no SDP body)".into()));
    }
    let ct = content_type.map(multipart::media_type).unwrap_or_else(|| "application/sdp".into());
    match ct.as_str() {
        "application/sdp" => {
            let sdp = sdp::parse(body).map_err(|e| Refusal::BadRequest(e.to_string()))?;
            Ok(Offer { sdp, metadata: None })
        }
        "multipart/mixed" => {
            let boundary = content_type
                .and_then(multipart::boundary)
                .ok_or(Refusal::BadRequest("multipart body without boundary".into()))?;
            let parts = multipart::split(body, &boundary).map_err(|e| Refusal::BadRequest(e.to_string()))?;
            let sdp_part = parts
                .iter()
                .find(|p| p.content_type.as_deref() == Some("application/sdp"))
                .or_else(|| parts.iter().find(|p| p.body.starts_with(b"v=0")))
                .ok_or(Refusal::NotAcceptableHere("multipart body without an application/sdp part".into()))?;
            let sdp = sdp::parse(sdp_part.body).map_err(|e| Refusal::BadRequest(e.to_string()))?;
            let metadata = parts
                .iter()
                .find(|p| p.content_type.as_deref() == Some("application/rs-metadata+xml"))
                .and_then(|p| match rsmeta::parse(p.body) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        tracing::warn!(error = %e, "SIPREC metadata unreadable: streams map by order");
                        None
                    }
                });
            Ok(Offer { sdp, metadata })
        }
        other => Err(Refusal::UnsupportedMediaType(format!(
            "body type {other} (expected application/sdp or multipart/mixed)"
        ))),
    }
}

/// One offered audio stream we take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPlan {
    /// Index of its `m=` section in the offer.
    pub section: usize,
    pub channel: usize,
    pub role: Role,
    pub codec: Codec,
    pub pt: u8,
    pub dtmf_pt: Option<u8>,
    /// Where its RTP should come from (None: port 0 or no address: latch).
    pub remote: Option<SocketAddr>,
    pub label: Option<String>,
    /// SRTP with this SDES key (RTP/SAVP offers).
    pub srtp: Option<sdp::SdesKey>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CallPlan {
    pub layout: Layout,
    pub streams: Vec<StreamPlan>,
    pub participants: Vec<Participant>,
    /// The rep's id when the metadata or headers name one.
    pub rep_id: Option<String>,
}

/// `*`-glob match, case-insensitive, over an AOR without scheme and parameters.
pub fn aor_matches(pattern: &str, aor: &str) -> bool {
    let p = normalize_aor(pattern);
    let a = normalize_aor(aor);
    glob(p.as_bytes(), a.as_bytes())
}

fn normalize_aor(s: &str) -> String {
    let s = s.trim().trim_start_matches('<').trim_end_matches('>');
    let lower = s.to_ascii_lowercase();
    let s = ["sips:", "sip:", "tel:"].iter().find_map(|p| lower.strip_prefix(p)).unwrap_or(&lower);
    s.split([';', '?', '>']).next().unwrap_or("").to_string()
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    // Iterative glob with one backtrack point (linear in practice, bounded inputs).
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// Decides which offered streams are recorded on which channel. `rep_hint` is a
/// rep id from a header (plain forks); it names the rep but not a stream.
pub fn plan(offer: &Offer, rules: &TenantSip, rep_hint: Option<&str>) -> Result<CallPlan, Refusal> {
    let sdp = &offer.sdp;
    let mut candidates = Vec::new();
    let mut srtp_only = false;
    for (i, m) in sdp.media.iter().enumerate() {
        if m.kind != "audio" || m.port == 0 {
            continue;
        }
        let srtp = if m.is_srtp() {
            let usable = ["RTP/SAVP", "RTP/SAVPF"].iter().any(|p| m.proto.eq_ignore_ascii_case(p));
            match m.sdes().filter(|_| usable) {
                Some(k) => Some(k),
                None => {
                    srtp_only = true; // DTLS-SRTP, MKI, or a suite we do not have
                    continue;
                }
            }
        } else if m.proto.eq_ignore_ascii_case("RTP/AVP") || m.proto.eq_ignore_ascii_case("RTP/AVPF") {
            None
        } else {
            continue;
        };
        let Some((codec, pt)) = m.choose_codec() else { continue };
        let remote = m.remote_ip(sdp).filter(|ip| !ip.is_unspecified()).map(|ip| SocketAddr::new(ip, m.port));
        candidates.push(StreamPlan {
            section: i,
            channel: 0,
            role: Role::Other,
            codec,
            pt,
            dtmf_pt: m.telephone_event(),
            remote,
            label: m.label.clone(),
            srtp,
        });
        if candidates.len() == 2 {
            break;
        }
    }
    if candidates.is_empty() {
        let why = if srtp_only {
            "SRTP is accepted only with SDES keys (a=crypto AES_CM_128_HMAC_SHA1_80 or _32, no MKI) over RTP/SAVP"
        } else {
            "no acceptable audio stream: Earshot records PCMU, PCMA or Opus over RTP/AVP (or RTP/SAVP with SDES keys)"
        };
        return Err(Refusal::NotAcceptableHere(why.into()));
    }
    // Who sends each stream, from the metadata.
    let senders: Vec<Option<&rsmeta::MetaParticipant>> = candidates
        .iter()
        .map(|c| offer.metadata.as_ref().zip(c.label.as_deref()).and_then(|(m, l)| m.sender_of_label(l)))
        .collect();
    let is_rep = |p: Option<&rsmeta::MetaParticipant>| {
        p.and_then(|p| p.aor.as_deref()).is_some_and(|aor| rules.rep_aors.iter().any(|pat| aor_matches(pat, aor)))
    };
    let mut participants = Vec::new();
    let layout = if candidates.len() == 1 { Layout::Mono } else { Layout::Stereo };
    let rep_index = if layout == Layout::Stereo {
        let by_aor: Vec<usize> = (0..2).filter(|&i| is_rep(senders[i])).collect();
        if by_aor.len() == 1 {
            by_aor[0]
        } else if let (Some(m), Some(a), Some(b)) = (offer.metadata.as_ref(), senders[0], senders[1]) {
            // Metadata order: the participant listed first (or second) is the rep.
            let pos =
                |p: &rsmeta::MetaParticipant| m.participants.iter().position(|q| q.id == p.id).unwrap_or(usize::MAX);
            let first = if pos(a) <= pos(b) { 0 } else { 1 };
            if rules.rep_stream == RepStream::First {
                first
            } else {
                1 - first
            }
        } else {
            usize::from(rules.rep_stream == RepStream::Second)
        }
    } else {
        0
    };
    for (i, c) in candidates.iter_mut().enumerate() {
        if layout == Layout::Stereo {
            let rep = i == rep_index;
            c.channel = usize::from(!rep);
            c.role = if rep { Role::Rep } else { Role::Customer };
        }
        if let Some(p) = senders[i] {
            participants.push(Participant {
                role: Some(c.role),
                id: Some(p.id.clone()),
                display_name: p.name.clone(),
                aor: p.aor.clone(),
                phone_e164: p.aor.as_deref().and_then(e164_of),
            });
        }
    }
    let rep_aor = candidates
        .iter()
        .zip(&senders)
        .find(|(c, _)| c.role == Role::Rep)
        .and_then(|(_, s)| s.and_then(|p| p.aor.clone()));
    let rep_id = rep_hint.map(str::to_string).or(rep_aor);
    candidates.sort_by_key(|c| c.channel);
    Ok(CallPlan { layout, streams: candidates, participants, rep_id })
}

/// `+15551234567` from `tel:+15551234567` or `sip:+15551234567@host`.
fn e164_of(aor: &str) -> Option<String> {
    let user = normalize_aor(aor);
    let user = user.split('@').next()?;
    let digits = user.strip_prefix('+')?;
    (7..=15).contains(&digits.len()).then_some(())?;
    digits.bytes().all(|b| b.is_ascii_digit()).then(|| format!("+{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str, allow: &[&str], rep_aors: &[&str]) -> TenantConfig {
        let mut toml = format!("id = \"{id}\"\nfork_secret = \"0123456789abcdef\"\n[sip]\nallow = [");
        toml.push_str(&allow.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(","));
        toml.push_str("]\nrep_aors = [");
        toml.push_str(&rep_aors.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(","));
        toml.push_str("]\n");
        toml::from_str(&toml).unwrap()
    }

    #[test]
    fn tenant_from_header_user_or_source() {
        let ts = vec![tenant("acme", &["10.0.0.0/8"], &[]), tenant("globex", &["192.168.1.5/32", "::1"], &[])];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(resolve_tenant(&ts, ip("10.1.2.3"), None, None).unwrap().id, "acme");
        assert_eq!(resolve_tenant(&ts, ip("192.168.1.5"), Some("globex"), None).unwrap().id, "globex");
        assert_eq!(resolve_tenant(&ts, ip("::1"), None, Some("globex")).unwrap().id, "globex");
        assert_eq!(
            resolve_tenant(&ts, ip("10.1.2.3"), Some("globex"), None).unwrap_err(),
            Refusal::Forbidden("source address not allowed")
        );
        assert_eq!(
            resolve_tenant(&ts, ip("8.8.8.8"), None, None).unwrap_err(),
            Refusal::Forbidden("source address not allowed")
        );
        // IPv4-mapped IPv6 sources match IPv4 allow-lists.
        assert_eq!(resolve_tenant(&ts, ip("::ffff:10.0.0.1"), None, None).unwrap().id, "acme");
    }

    #[test]
    fn aor_patterns() {
        assert!(aor_matches("*@agents.example.com", "sip:Alice@Agents.Example.com;transport=tcp"));
        assert!(aor_matches("sip:1*@pbx", "<sip:1001@pbx>"));
        assert!(!aor_matches("*@agents.example.com", "sip:bob@biloxi.example.com"));
        assert!(aor_matches("*", "tel:+1555"));
        assert_eq!(e164_of("tel:+15551234567"), Some("+15551234567".into()));
        assert_eq!(e164_of("sip:+442071234567@sbc;user=phone"), Some("+442071234567".into()));
        assert_eq!(e164_of("sip:alice@x"), None);
    }

    const SDP2: &str = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 6000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=label:96\r\na=sendonly\r\nm=audio 6002 RTP/AVP 8\r\na=label:97\r\na=sendonly\r\n";

    fn siprec_body(sdp: &str, xml: &str) -> Vec<u8> {
        format!("--XX\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n--XX\r\nContent-Type: application/rs-metadata+xml\r\n\r\n{xml}\r\n--XX--\r\n").into_bytes()
    }

    #[test]
    fn siprec_streams_map_by_rep_aor() {
        let body = siprec_body(SDP2, crate::ingest::sip::rsmeta::tests_support::RFC);
        let offer = read_body(Some("multipart/mixed;boundary=XX"), &body).unwrap();
        let t = tenant("acme", &["127.0.0.1"], &["*@agents.example.com"]);
        let plan = plan(&offer, &t.sip, None).unwrap();
        assert_eq!(plan.layout, Layout::Stereo);
        // Label 96 is sent by alice (the rep): channel 0.
        assert_eq!(
            (plan.streams[0].label.as_deref(), plan.streams[0].role, plan.streams[0].codec),
            (Some("96"), Role::Rep, Codec::Pcmu)
        );
        assert_eq!(plan.streams[0].dtmf_pt, Some(101));
        assert_eq!(plan.streams[0].remote, Some("127.0.0.1:6000".parse().unwrap()));
        assert_eq!(
            (plan.streams[1].label.as_deref(), plan.streams[1].role, plan.streams[1].codec),
            (Some("97"), Role::Customer, Codec::Pcma)
        );
        assert_eq!(plan.rep_id.as_deref(), Some("sip:alice@agents.example.com"));
        // The rep sending the second offered stream is still the rep.
        let swapped = SDP2
            .replace("a=label:96", "a=label:XX")
            .replace("a=label:97", "a=label:96")
            .replace("a=label:XX", "a=label:97");
        let body = siprec_body(&swapped, crate::ingest::sip::rsmeta::tests_support::RFC);
        let p2 = super::plan(&read_body(Some("multipart/mixed;boundary=XX"), &body).unwrap(), &t.sip, None).unwrap();
        assert_eq!((p2.streams[0].section, p2.streams[0].role), (1, Role::Rep));
        assert_eq!(p2.rep_id.as_deref(), Some("sip:alice@agents.example.com"));
        assert_eq!(plan.participants.len(), 2);
        assert!(plan
            .participants
            .iter()
            .any(|p| p.role == Some(Role::Customer) && p.aor.as_deref() == Some("sip:bob@biloxi.example.com")));
    }

    #[test]
    fn without_rep_aors_metadata_order_decides_and_without_metadata_stream_order() {
        let body = siprec_body(SDP2, crate::ingest::sip::rsmeta::tests_support::RFC);
        let offer = read_body(Some("multipart/mixed; boundary=\"XX\""), &body).unwrap();
        let mut t = tenant("acme", &["127.0.0.1"], &[]);
        // Bob is listed first in the metadata and sends label 97.
        let p = plan(&offer, &t.sip, None).unwrap();
        assert_eq!((p.streams[0].label.as_deref(), p.streams[0].role), (Some("97"), Role::Rep));
        t.sip.rep_stream = RepStream::Second;
        let p = plan(&offer, &t.sip, None).unwrap();
        assert_eq!(p.streams[0].label.as_deref(), Some("96"));
        // No metadata: offer order.
        let offer = read_body(Some("application/sdp"), SDP2.as_bytes()).unwrap();
        let p = plan(&offer, &t.sip, Some("agent-7")).unwrap();
        assert_eq!((p.streams[0].section, p.streams[0].role), (1, Role::Rep));
        assert_eq!(p.rep_id.as_deref(), Some("agent-7"));
        t.sip.rep_stream = RepStream::First;
        let p = plan(&offer, &t.sip, None).unwrap();
        assert_eq!(p.streams[0].section, 0);
    }

    #[test]
    fn broken_metadata_falls_back_and_one_stream_is_mono() {
        let body =
            siprec_body("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 7000 RTP/AVP 0\r\n", "<recording><oops></recording>");
        let offer = read_body(Some("multipart/mixed;boundary=XX"), &body).unwrap();
        assert!(offer.metadata.is_none());
        let p = plan(&offer, &TenantSip::default(), None).unwrap();
        assert_eq!(p.layout, Layout::Mono);
        assert_eq!(p.streams[0].role, Role::Other);
    }

    #[test]
    fn refusals() {
        let t = TenantSip::default();
        assert_eq!(read_body(Some("application/sdp"), b"").unwrap_err().status(), 488);
        assert_eq!(read_body(Some("text/plain"), b"hi").unwrap_err().status(), 415);
        assert_eq!(read_body(Some("application/sdp"), b"garbage").unwrap_err().status(), 400);
        assert_eq!(read_body(Some("multipart/mixed"), b"--x\r\n").unwrap_err().status(), 400);
        let g722 =
            read_body(None, b"v=0\r\nc=IN IP4 1.1.1.1\r\nm=audio 5000 RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\n").unwrap();
        assert_eq!(plan(&g722, &t, None).unwrap_err().status(), 488);
        // Opus (dynamic PT, 48 kHz clock) is taken.
        let opus =
            read_body(None, b"v=0\r\nc=IN IP4 1.1.1.1\r\nm=audio 5000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n")
                .unwrap();
        assert_eq!(
            (plan(&opus, &t, None).unwrap().streams[0].codec, plan(&opus, &t, None).unwrap().streams[0].pt),
            (Codec::Opus, 111)
        );
        // SRTP without a usable SDES key (DTLS-SRTP, a bad key): 488 saying why.
        let srtp = read_body(
            None,
            b"v=0\r\nc=IN IP4 1.1.1.1\r\nm=audio 5000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\r\n",
        )
        .unwrap();
        assert!(plan(&srtp, &t, None).unwrap_err().reason().contains("SDES"));
        let dtls = read_body(
            None,
            b"v=0\r\nc=IN IP4 1.1.1.1\r\nm=audio 5000 UDP/TLS/RTP/SAVP 0\r\na=fingerprint:sha-256 AB\r\n",
        )
        .unwrap();
        assert_eq!(plan(&dtls, &t, None).unwrap_err().status(), 488);
        // With a usable key the stream is taken, keyed.
        let sdes = read_body(None, b"v=0\r\nc=IN IP4 1.1.1.1\r\nm=audio 5000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n").unwrap();
        let p = plan(&sdes, &t, None).unwrap();
        assert_eq!(p.streams[0].srtp.as_ref().map(|k| k.tag.as_str()), Some("1"));
    }
}

//! What Earshot reads from a SIP request that rsipstack parsed: the headers admission
//! and call setup look at, by full or compact name, and where the request came from.
//! No IO; shared by the server and the `sip_message` fuzz target (feature `sip-msg`).

use std::net::SocketAddr;

use rsipstack::sip::{HasHeaders, Headers, HeadersExt, Request};
use rsipstack::transport::connection::SipConnection;

/// The value of the first header called `name` (or its RFC 3261 compact form), trimmed.
pub fn header(req: &Request, name: &str) -> Option<String> {
    header_in(req.headers(), name)
}

/// [`header`] over any message's headers (a response's too).
pub fn header_in(headers: &Headers, name: &str) -> Option<String> {
    let compact = match name.to_ascii_lowercase().as_str() {
        "content-type" => Some("c"),
        "session-expires" => Some("x"),
        "supported" => Some("k"),
        "call-id" => Some("i"),
        "from" => Some("f"),
        "to" => Some("t"),
        "contact" => Some("m"),
        _ => None,
    };
    headers
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name) || compact.is_some_and(|c| h.name().eq_ignore_ascii_case(c)))
        .map(|h| h.value().trim().to_string())
}

/// The address a request came from (Via `received`/`rport`, RFC 3581).
pub fn source_of(req: &Request) -> Option<SocketAddr> {
    let via = req.via_header().ok()?;
    let (_, hp) = SipConnection::parse_target_from_via(via).ok()?;
    let ip = match hp.host {
        rsipstack::sip::Host::IpAddr(ip) => ip,
        _ => return None,
    };
    Some(SocketAddr::new(ip, hp.port.map(|p| p.value()).unwrap_or(5060)))
}

/// Everything an INVITE's headers tell Earshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InviteFacts {
    pub call_id: Option<String>,
    pub source: Option<SocketAddr>,
    /// Request-URI user part (may name the tenant).
    pub user: Option<String>,
    /// The configured tenant header (`X-Earshot-Tenant` by default).
    pub tenant: Option<String>,
    /// RFC 4028 session interval, seconds.
    pub session_expires: Option<u64>,
    pub supports_timer: bool,
    pub requires_siprec: bool,
    pub content_type: Option<String>,
    pub campaign: Option<String>,
    pub rep: Option<String>,
    pub external_call_id: Option<String>,
}

pub fn invite_facts(req: &Request, tenant_header: &str) -> InviteFacts {
    InviteFacts {
        call_id: req.call_id_header().ok().map(|c| c.value().to_string()),
        source: source_of(req),
        user: req.uri.auth.as_ref().map(|a| a.user.clone()),
        tenant: header(req, tenant_header),
        session_expires: header(req, "Session-Expires").and_then(|v| v.split(';').next()?.trim().parse().ok()),
        supports_timer: header(req, "Supported")
            .is_some_and(|s| s.to_ascii_lowercase().split(',').any(|t| t.trim() == "timer")),
        requires_siprec: header(req, "Require")
            .is_some_and(|r| r.to_ascii_lowercase().split(',').any(|t| t.trim() == "siprec")),
        content_type: header(req, "Content-Type"),
        campaign: header(req, "X-Earshot-Campaign"),
        rep: header(req, "X-Earshot-Rep"),
        external_call_id: header(req, "X-Earshot-Call-Id"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Request {
        match rsipstack::sip::SipMessage::try_from(text.as_bytes()).expect("parses") {
            rsipstack::sip::SipMessage::Request(r) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    #[test]
    fn facts_come_from_full_and_compact_headers() {
        let r = parse(
            "INVITE sip:sipco@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.7:5070;branch=z9hG4bK-1;rport=6000;received=192.0.2.1\r\nFrom: <sip:srs@10.0.0.7>;tag=a\r\nTo: <sip:sipco@127.0.0.1>\r\ni: abc@host\r\nCSeq: 1 INVITE\r\nx: 1800;refresher=uac\r\nk: replaces, timer\r\nRequire: siprec\r\nc: application/sdp\r\nX-Earshot-Tenant: acme\r\nx-earshot-campaign: spring\r\nX-Earshot-Rep: alex\r\nContent-Length: 0\r\n\r\n",
        );
        let f = invite_facts(&r, "X-Earshot-Tenant");
        assert_eq!(f.call_id.as_deref(), Some("abc@host"));
        assert_eq!(f.source, Some("192.0.2.1:6000".parse().unwrap()));
        assert_eq!(f.user.as_deref(), Some("sipco"));
        assert_eq!(f.tenant.as_deref(), Some("acme"));
        assert_eq!(f.session_expires, Some(1800));
        assert!(f.supports_timer && f.requires_siprec);
        assert_eq!(f.content_type.as_deref(), Some("application/sdp"));
        assert_eq!((f.campaign.as_deref(), f.rep.as_deref()), (Some("spring"), Some("alex")));
        // "timers" is not "timer".
        let r = parse("OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.7;branch=z9hG4bK-2\r\nCall-ID: q\r\nCSeq: 1 OPTIONS\r\nSupported: timers\r\nContent-Length: 0\r\n\r\n");
        let f = invite_facts(&r, "X-Earshot-Tenant");
        assert!(!f.supports_timer && !f.requires_siprec);
        assert_eq!(f.source, Some("10.0.0.7:5060".parse().unwrap()));
    }

    #[test]
    fn the_fuzz_entry_point_takes_a_full_invite() {
        crate::fuzzing::sip_message(b"INVITE sip:b@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.7;branch=z9hG4bK-3\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID: z\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: 60\r\n\r\nv=0\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n");
        crate::fuzzing::sip_message(b"\xff\xfe garbage");
    }
}

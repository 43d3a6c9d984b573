//! SDP offer/answer (RFC 4566 / 3264) as a recording server needs it: read each
//! audio stream of an offer, pick a codec we decode, and answer `recvonly` on our
//! own ports. Pure.

use std::net::IpAddr;

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SdpError {
    #[error("SDP is not UTF-8")]
    NotUtf8,
    #[error("SDP line {line}: {why}")]
    BadLine { line: usize, why: &'static str },
    #[error("SDP has no media sections")]
    NoMedia,
    #[error("SDP has more than {0} media sections")]
    TooManyMedia(usize),
}

/// Most `m=` sections read (a SIPREC offer has one per recorded stream).
pub const MAX_MEDIA: usize = 16;

/// Codecs Earshot decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Pcmu,
    Pcma,
    /// RFC 7587: dynamic payload type, RTP clock 48 kHz, `opus/48000/2` in SDP.
    Opus,
}

impl Codec {
    pub fn name(&self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::Opus => "opus",
        }
    }
    /// The RTP clock rate.
    pub fn clock_rate(&self) -> u32 {
        match self {
            Codec::Opus => 48_000,
            _ => 8000,
        }
    }
    /// The `a=rtpmap` encoding (with the channel count Opus always names).
    pub fn rtpmap(&self) -> String {
        match self {
            Codec::Opus => "opus/48000/2".into(),
            c => format!("{}/{}", c.name(), c.clock_rate()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    pub pt: u8,
    pub name: String,
    pub rate: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    pub kind: String,
    pub port: u16,
    pub proto: String,
    pub formats: Vec<String>,
    pub rtpmaps: Vec<RtpMap>,
    pub label: Option<String>,
    pub direction: Direction,
    pub connection: Option<IpAddr>,
    /// `a=crypto` lines (SDES), kept for the answer logic.
    pub crypto: Vec<String>,
    pub ptime: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    pub connection: Option<IpAddr>,
    pub direction: Direction,
    pub media: Vec<MediaSection>,
}

impl MediaSection {
    /// Where this stream's RTP comes from, as the offer says.
    pub fn remote_ip(&self, sdp: &SessionDescription) -> Option<IpAddr> {
        self.connection.or(sdp.connection)
    }

    fn rtpmap(&self, pt: u8) -> Option<&RtpMap> {
        self.rtpmaps.iter().find(|m| m.pt == pt)
    }

    /// The first offered format we decode, in the offer's order of preference.
    pub fn choose_codec(&self) -> Option<(Codec, u8)> {
        for f in &self.formats {
            let Ok(pt) = f.parse::<u8>() else { continue };
            let codec = match self.rtpmap(pt) {
                Some(m) if m.name.eq_ignore_ascii_case("PCMU") && m.rate == 8000 => Codec::Pcmu,
                Some(m) if m.name.eq_ignore_ascii_case("PCMA") && m.rate == 8000 => Codec::Pcma,
                Some(m) if m.name.eq_ignore_ascii_case("opus") && m.rate == 48_000 => Codec::Opus,
                Some(_) => continue,
                None if pt == 0 => Codec::Pcmu,
                None if pt == 8 => Codec::Pcma,
                None => continue,
            };
            return Some((codec, pt));
        }
        None
    }

    /// The `telephone-event/8000` payload type, if offered.
    pub fn telephone_event(&self) -> Option<u8> {
        self.rtpmaps.iter().find(|m| m.name.eq_ignore_ascii_case("telephone-event") && m.rate == 8000).map(|m| m.pt)
    }

    pub fn is_srtp(&self) -> bool {
        self.proto.to_ascii_uppercase().contains("SAVP")
    }

    /// The first offered SDES key (RFC 4568) Earshot can use: a supported suite, one
    /// inline key of 16 + 14 bytes, no MKI, no session parameters.
    pub fn sdes(&self) -> Option<SdesKey> {
        self.crypto.iter().find_map(|c| SdesKey::parse(c))
    }
}

/// SRTP crypto suites Earshot accepts (the two every SBC offers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpSuite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
}

impl SrtpSuite {
    pub fn name(&self) -> &'static str {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }
}

/// One `a=crypto` offer: the tag to answer with, the suite, the master key and salt.
#[derive(Clone, PartialEq, Eq)]
pub struct SdesKey {
    pub tag: String,
    pub suite: SrtpSuite,
    pub key: [u8; 16],
    pub salt: [u8; 14],
}

impl std::fmt::Debug for SdesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material (it decrypts the call).
        f.debug_struct("SdesKey").field("tag", &self.tag).field("suite", &self.suite).finish_non_exhaustive()
    }
}

impl SdesKey {
    /// `<tag> <suite> inline:<base64 key||salt>[|lifetime]` (the value after `crypto:`).
    pub fn parse(value: &str) -> Option<SdesKey> {
        use base64::Engine;
        let mut it = value.split_whitespace();
        let tag = it.next()?;
        if tag.is_empty() || tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let suite = match it.next()? {
            "AES_CM_128_HMAC_SHA1_80" => SrtpSuite::AesCm128HmacSha1_80,
            "AES_CM_128_HMAC_SHA1_32" => SrtpSuite::AesCm128HmacSha1_32,
            _ => return None,
        };
        let params = it.next()?;
        if it.next().is_some() || params.contains(';') {
            return None; // session parameters (UNENCRYPTED_SRTP, KDR, …) or several keys
        }
        let inline = params.strip_prefix("inline:")?;
        let mut parts = inline.split('|');
        let material = base64::engine::general_purpose::STANDARD.decode(parts.next()?).ok()?;
        // A lifetime may follow; an MKI (`n:len`) we do not support.
        if parts.any(|p| p.contains(':')) {
            return None;
        }
        if material.len() != 30 {
            return None;
        }
        let mut key = [0u8; 16];
        let mut salt = [0u8; 14];
        key.copy_from_slice(&material[..16]);
        salt.copy_from_slice(&material[16..]);
        Some(SdesKey { tag: tag.to_string(), suite, key, salt })
    }

    /// The `a=crypto` value for this key.
    pub fn attribute(&self) -> String {
        use base64::Engine;
        let mut material = self.key.to_vec();
        material.extend_from_slice(&self.salt);
        format!(
            "{} {} inline:{}",
            self.tag,
            self.suite.name(),
            base64::engine::general_purpose::STANDARD.encode(material)
        )
    }
}

fn direction(attr: &str) -> Option<Direction> {
    Some(match attr {
        "sendrecv" => Direction::SendRecv,
        "sendonly" => Direction::SendOnly,
        "recvonly" => Direction::RecvOnly,
        "inactive" => Direction::Inactive,
        _ => return None,
    })
}

fn connection(value: &str) -> Option<IpAddr> {
    // c=IN IP4 192.0.2.1[/ttl]
    let mut it = value.split_whitespace();
    let (_net, _kind, addr) = (it.next()?, it.next()?, it.next()?);
    addr.split('/').next()?.parse().ok()
}

/// Reads an SDP body. Tolerates bare LF, trailing spaces and unknown lines.
pub fn parse(body: &[u8]) -> Result<SessionDescription, SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
    let mut sdp = SessionDescription { connection: None, direction: Direction::SendRecv, media: Vec::new() };
    let mut seen_v = false;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim_end();
        if line.is_empty() {
            continue;
        }
        let bytes = line.as_bytes();
        if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_lowercase() {
            return Err(SdpError::BadLine { line: line_no, why: "not a `x=value` line" });
        }
        let value = &line[2..];
        match bytes[0] {
            b'v' => {
                if value.trim() != "0" {
                    return Err(SdpError::BadLine { line: line_no, why: "version must be 0" });
                }
                seen_v = true;
            }
            b'c' => {
                let ip = connection(value).ok_or(SdpError::BadLine { line: line_no, why: "bad connection address" })?;
                match sdp.media.last_mut() {
                    Some(m) => m.connection = Some(ip),
                    None => sdp.connection = Some(ip),
                }
            }
            b'm' => {
                if sdp.media.len() == MAX_MEDIA {
                    return Err(SdpError::TooManyMedia(MAX_MEDIA));
                }
                let mut it = value.split_whitespace();
                let kind =
                    it.next().ok_or(SdpError::BadLine { line: line_no, why: "media line without media type" })?;
                let port = it
                    .next()
                    .and_then(|p| p.split('/').next())
                    .and_then(|p| p.parse::<u16>().ok())
                    .ok_or(SdpError::BadLine { line: line_no, why: "media line without a valid port" })?;
                let proto = it.next().ok_or(SdpError::BadLine { line: line_no, why: "media line without protocol" })?;
                let formats: Vec<String> = it.take(64).map(str::to_string).collect();
                sdp.media.push(MediaSection {
                    kind: kind.to_ascii_lowercase(),
                    port,
                    proto: proto.to_string(),
                    formats,
                    rtpmaps: Vec::new(),
                    label: None,
                    direction: sdp.direction,
                    connection: None,
                    crypto: Vec::new(),
                    ptime: None,
                });
            }
            b'a' => {
                let (name, arg) = match value.split_once(':') {
                    Some((n, a)) => (n, Some(a.trim())),
                    None => (value, None),
                };
                let Some(m) = sdp.media.last_mut() else {
                    if let Some(d) = direction(name) {
                        sdp.direction = d;
                    }
                    continue;
                };
                match (name, arg) {
                    ("rtpmap", Some(a)) => {
                        let bad = SdpError::BadLine { line: line_no, why: "bad rtpmap" };
                        let (pt, enc) = a.split_once(char::is_whitespace).ok_or(bad.clone())?;
                        let pt = pt.parse::<u8>().map_err(|_| bad.clone())?;
                        let mut enc = enc.trim().split('/');
                        let name = enc.next().filter(|n| !n.is_empty()).ok_or(bad.clone())?;
                        let rate = enc.next().and_then(|r| r.parse::<u32>().ok()).ok_or(bad)?;
                        if m.rtpmaps.len() < 64 {
                            m.rtpmaps.push(RtpMap { pt, name: name.to_string(), rate });
                        }
                    }
                    ("label", Some(a)) => m.label = Some(a.to_string()),
                    ("crypto", Some(a)) if m.crypto.len() < 8 => m.crypto.push(a.to_string()),
                    ("ptime", Some(a)) => m.ptime = a.parse().ok(),
                    (d, None) => {
                        if let Some(d) = direction(d) {
                            m.direction = d;
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if !seen_v && sdp.media.is_empty() {
        return Err(SdpError::NoMedia);
    }
    if sdp.media.is_empty() {
        return Err(SdpError::NoMedia);
    }
    Ok(sdp)
}

/// Our side of one offered stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerStream {
    /// Accepted: our RTP port and the chosen payload types; with SRTP, our own key
    /// (SDES answers carry one, even though we send nothing).
    Accept { port: u16, codec: Codec, pt: u8, dtmf_pt: Option<u8>, crypto: Option<SdesKey> },
    /// Refused (port 0), echoing the offer's first format as RFC 3264 asks.
    Reject,
}

/// Builds the answer: one `m=` per offered section, in order, `recvonly`.
pub fn answer(
    offer: &SessionDescription,
    streams: &[AnswerStream],
    local_ip: IpAddr,
    session_id: u64,
    version: u64,
) -> String {
    let ip_kind = if local_ip.is_ipv4() { "IP4" } else { "IP6" };
    let mut s = format!(
        "v=0\r\no=earshot {session_id} {version} IN {ip_kind} {local_ip}\r\ns=earshot\r\nc=IN {ip_kind} {local_ip}\r\nt=0 0\r\n"
    );
    for (m, a) in offer.media.iter().zip(streams) {
        match a {
            AnswerStream::Accept { port, codec, pt, dtmf_pt, crypto } => {
                let mut fmts = pt.to_string();
                if let Some(d) = dtmf_pt {
                    fmts.push_str(&format!(" {d}"));
                }
                s.push_str(&format!("m=audio {port} {} {fmts}\r\n", m.proto));
                s.push_str(&format!("a=rtpmap:{pt} {}\r\n", codec.rtpmap()));
                if let Some(d) = dtmf_pt {
                    s.push_str(&format!("a=rtpmap:{d} telephone-event/8000\r\n"));
                }
                if let Some(l) = &m.label {
                    s.push_str(&format!("a=label:{l}\r\n"));
                }
                if let Some(c) = crypto {
                    s.push_str(&format!("a=crypto:{}\r\n", c.attribute()));
                }
                s.push_str(&format!("a=rtcp:{}\r\n", port + 1));
                s.push_str("a=recvonly\r\n");
            }
            AnswerStream::Reject => {
                let first = m.formats.first().map(String::as_str).unwrap_or("0");
                s.push_str(&format!("m={} 0 {} {first}\r\n", m.kind, m.proto));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=SBC 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n\
m=audio 6000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=label:1\r\na=sendonly\r\n\
m=audio 6002 RTP/AVP 0\r\nc=IN IP4 10.0.0.6\r\na=label:2\r\na=sendonly\r\n\
m=video 6004 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";

    #[test]
    fn reads_a_siprec_offer() {
        let sdp = parse(OFFER.as_bytes()).unwrap();
        assert_eq!(sdp.media.len(), 3);
        let m = &sdp.media[0];
        assert_eq!((m.port, m.label.as_deref(), m.direction), (6000, Some("1"), Direction::SendOnly));
        assert_eq!(m.choose_codec(), Some((Codec::Pcma, 8)));
        assert_eq!(m.telephone_event(), Some(101));
        assert_eq!(m.remote_ip(&sdp), Some("10.0.0.5".parse().unwrap()));
        let m2 = &sdp.media[1];
        assert_eq!(m2.choose_codec(), Some((Codec::Pcmu, 0)), "static payload type without rtpmap");
        assert_eq!(m2.remote_ip(&sdp), Some("10.0.0.6".parse().unwrap()));
        assert_eq!(sdp.media[2].choose_codec(), None);
    }

    #[test]
    fn answers_recvonly_in_order_and_rejects_with_port_zero() {
        let sdp = parse(OFFER.as_bytes()).unwrap();
        let streams = [
            AnswerStream::Accept { port: 20000, codec: Codec::Pcma, pt: 8, dtmf_pt: Some(101), crypto: None },
            AnswerStream::Accept { port: 20002, codec: Codec::Pcmu, pt: 0, dtmf_pt: None, crypto: None },
            AnswerStream::Reject,
        ];
        let a = answer(&sdp, &streams, "127.0.0.1".parse().unwrap(), 7, 1);
        let back = parse(a.as_bytes()).unwrap();
        assert_eq!(back.media.len(), 3);
        assert_eq!(back.media[0].port, 20000);
        assert_eq!(back.media[0].direction, Direction::RecvOnly);
        assert_eq!(back.media[0].label.as_deref(), Some("1"));
        assert_eq!(back.media[0].formats, vec!["8", "101"]);
        assert_eq!(back.media[1].choose_codec(), Some((Codec::Pcmu, 0)));
        assert_eq!((back.media[2].kind.as_str(), back.media[2].port), ("video", 0));
        assert!(a.contains("c=IN IP4 127.0.0.1\r\n"));
    }

    #[test]
    fn bare_lf_and_session_level_direction() {
        let sdp = parse(
            b"v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\na=sendonly\nm=audio 4000 RTP/AVP 0\n",
        )
        .unwrap();
        assert_eq!(sdp.media[0].direction, Direction::SendOnly);
        assert_eq!(sdp.media[0].port, 4000);
    }

    #[test]
    fn bad_sdp_is_refused_with_the_line() {
        assert_eq!(parse(b"v=0\r\nhello\r\n"), Err(SdpError::BadLine { line: 2, why: "not a `x=value` line" }));
        assert_eq!(
            parse(b"v=0\r\nm=audio x RTP/AVP 0\r\n"),
            Err(SdpError::BadLine { line: 2, why: "media line without a valid port" })
        );
        assert_eq!(parse(b"v=0\r\ns=-\r\n"), Err(SdpError::NoMedia));
        assert_eq!(parse(&[0xff, 0xfe]), Err(SdpError::NotUtf8));
        assert!(matches!(
            parse(b"v=0\r\nm=audio 1 RTP/AVP 0\r\na=rtpmap:zz PCMU/8000\r\n"),
            Err(SdpError::BadLine { line: 3, .. })
        ));
    }

    #[test]
    fn srtp_offer_is_recognised() {
        let sdp = parse(
            b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:abc\r\n",
        )
        .unwrap();
        assert!(sdp.media[0].is_srtp());
        assert_eq!(sdp.media[0].crypto.len(), 1);
        assert_eq!(sdp.media[0].sdes(), None, "inline:abc is not 30 bytes of key and salt");
    }

    #[test]
    fn sdes_keys_parse_and_round_trip() {
        // RFC 4568 §4 example key (30 bytes).
        const K: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
        let k = SdesKey::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{K}|2^20")).expect("usable");
        assert_eq!((k.tag.as_str(), k.suite), ("1", SrtpSuite::AesCm128HmacSha1_80));
        assert_eq!(k.attribute(), format!("1 AES_CM_128_HMAC_SHA1_80 inline:{K}"));
        assert!(!format!("{k:?}").contains(K) && !format!("{k:?}").contains("key:"), "keys stay out of logs");
        assert_eq!(
            SdesKey::parse(&format!("2 AES_CM_128_HMAC_SHA1_32 inline:{K}")).unwrap().suite,
            SrtpSuite::AesCm128HmacSha1_32
        );
        for bad in [
            format!("1 AES_256_CM_HMAC_SHA1_80 inline:{K}"), // suite we do not have
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{K}|2^20|1:4"), // MKI
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{K} UNENCRYPTED_SRTP"),
            format!("x AES_CM_128_HMAC_SHA1_80 inline:{K}"),
            "1 AES_CM_128_HMAC_SHA1_80 inline:!!!".to_string(),
            "1 AES_CM_128_HMAC_SHA1_80".to_string(),
        ] {
            assert_eq!(SdesKey::parse(&bad), None, "{bad}");
        }
        // The first usable line wins; the answer carries our key with its tag.
        let sdp = parse(format!("v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/SAVP 0\r\na=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{K}\r\na=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{K}\r\n").as_bytes()).unwrap();
        let offered = sdp.media[0].sdes().unwrap();
        assert_eq!(offered.tag, "2");
        let ours = SdesKey { key: [7; 16], ..offered.clone() };
        let a = answer(
            &sdp,
            &[AnswerStream::Accept { port: 20000, codec: Codec::Pcmu, pt: 0, dtmf_pt: None, crypto: Some(ours) }],
            "127.0.0.1".parse().unwrap(),
            1,
            1,
        );
        assert!(
            a.contains("m=audio 20000 RTP/SAVP 0")
                && a.contains("a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:BwcHBwcHBwcHBwcHBwcHB"),
            "{a}"
        );
    }
}

//! A SIPREC client (RFC 7866) with its own RTP senders, as an SBC forks a call to a
//! recording server: INVITE with a multipart SDP + rs-metadata body (two `sendonly`
//! PCMU streams, labelled, the rep first), ACK, both streams at real-time pace from
//! their own UDP ports, BYE. UDP only; one socket for SIP and one per stream.
//!
//! It is a load generator, not a SIP stack: it speaks exactly this dialogue, retransmits
//! requests on the RFC 3261 timer (500 ms doubling), answers the server's in-dialog
//! requests (BYE, OPTIONS) and re-ACKs a retransmitted 200.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::audio::{encode_ulaw, Audio};

pub const PTIME_MS: u64 = 20;
const SAMPLES_PER_PACKET: usize = 160;

#[derive(Debug, thiserror::Error)]
pub enum SiprecError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer to {0} after retransmissions")]
    NoAnswer(&'static str),
    #[error("INVITE refused: {0}")]
    Refused(String),
    #[error("unreadable answer: {0}")]
    BadAnswer(String),
}

/// Both parties' audio as PCMU payloads, 20 ms each (rendered once, shared by calls).
#[derive(Debug, Clone)]
pub struct SiprecScript {
    /// `[rep, customer]`, each a list of 160-byte payloads.
    pub streams: [Vec<Vec<u8>>; 2],
}

/// Renders a stereo (left = rep, right = customer) or mono (both streams) recording;
/// resampled to 8 kHz when needed.
pub fn render(audio: &Audio) -> anyhow::Result<SiprecScript> {
    let audio = if audio.sample_rate == 8000 { audio.clone() } else { audio.resampled(8000)? };
    let ch = |i: usize| -> Vec<Vec<u8>> {
        let c = &audio.channels[i.min(audio.channels.len() - 1)];
        c.chunks(SAMPLES_PER_PACKET)
            .map(|p| {
                let mut v: Vec<u8> = p.iter().map(|s| encode_ulaw(*s)).collect();
                v.resize(SAMPLES_PER_PACKET, 0xff); // µ-law silence
                v
            })
            .collect()
    };
    Ok(SiprecScript { streams: [ch(0), ch(1)] })
}

#[derive(Debug, Clone)]
pub struct SiprecOptions {
    /// The recording server's SIP address (UDP).
    pub server: SocketAddr,
    /// Request-URI user part (selects the tenant when the server is set up that way).
    pub user: String,
    /// `X-Earshot-Tenant` header, when set.
    pub tenant_header: Option<String>,
    pub campaign: Option<String>,
    /// The rep's address of record (`sip:alex@agents.example.com`).
    pub rep_aor: String,
    pub customer_aor: String,
    /// Playback speed: 1 = real time.
    pub speed: f64,
}

#[derive(Debug, Default, Clone)]
pub struct SiprecReport {
    pub packets_sent: u64,
    /// Time from the INVITE to its 200.
    pub setup: Duration,
    /// How far the sender fell behind its schedule, worst case.
    pub max_lag_ms: u64,
    /// The server ended the call with a BYE before the audio ran out.
    pub ended_by_server: bool,
    /// Status of the answer to our BYE (None: the server hung up first).
    pub bye_status: Option<u16>,
}

/// A fresh random number for tags, branches, SSRCs (std's per-instance hasher keys).
fn rnd() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

fn branch() -> String {
    format!("z9hG4bK-{:016x}", rnd())
}

fn metadata(o: &SiprecOptions, call_id: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>complete</datamode>
  <session session_id="{call_id}"><sipSessionID>{call_id}</sipSessionID></session>
  <participant participant_id="p-rep"><nameID aor="{rep}"><name>Rep</name></nameID></participant>
  <participant participant_id="p-cust"><nameID aor="{cust}"><name>Customer</name></nameID></participant>
  <stream stream_id="s-rep" session_id="{call_id}"><label>1</label></stream>
  <stream stream_id="s-cust" session_id="{call_id}"><label>2</label></stream>
  <participantstreamassoc participant_id="p-rep"><send>s-rep</send><recv>s-cust</recv></participantstreamassoc>
  <participantstreamassoc participant_id="p-cust"><send>s-cust</send><recv>s-rep</recv></participantstreamassoc>
</recording>"#,
        rep = o.rep_aor,
        cust = o.customer_aor
    )
}

fn sdp(ip: std::net::IpAddr, ports: [u16; 2]) -> String {
    let fam = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let mut s = format!("v=0\r\no=earshot-loadtest 1 1 IN {fam} {ip}\r\ns=-\r\nc=IN {fam} {ip}\r\nt=0 0\r\n");
    for (i, p) in ports.iter().enumerate() {
        s.push_str(&format!(
            "m=audio {p} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=label:{}\r\na=sendonly\r\n",
            i + 1
        ));
    }
    s
}

/// A parsed SIP message: the start line, headers (name lower-cased) and body.
struct Msg {
    start: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Msg {
    fn parse(data: &[u8]) -> Option<Msg> {
        let text = std::str::from_utf8(data).ok()?;
        let (head, body) = text.split_once("\r\n\r\n").or_else(|| text.split_once("\n\n"))?;
        let mut lines = head.lines();
        let start = lines.next()?.trim().to_string();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Some(Msg { start, headers, body: body.to_string() })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Status code of a response.
    fn status(&self) -> Option<u16> {
        self.start.strip_prefix("SIP/2.0 ")?.split(' ').next()?.parse().ok()
    }

    /// CSeq number and method.
    fn cseq(&self) -> Option<(u32, String)> {
        let (n, m) = self.header("cseq")?.split_once(' ')?;
        Some((n.trim().parse().ok()?, m.trim().to_string()))
    }
}

struct Dialog {
    sock: UdpSocket,
    server: SocketAddr,
    local: SocketAddr,
    call_id: String,
    from_tag: String,
    request_uri: String,
    to_header: String,
}

impl Dialog {
    fn request(
        &self,
        method: &str,
        cseq: u32,
        branch: &str,
        extra: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> String {
        let mut m = format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:loadtest@{local}>;tag={tag}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContact: <sip:loadtest@{local}>\r\nUser-Agent: earshot-loadtest\r\n{extra}",
            ruri = self.request_uri,
            local = self.local,
            tag = self.from_tag,
            to = self.to_header,
            cid = self.call_id,
        );
        if let Some(ct) = content_type {
            m.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        m.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        m
    }

    /// Sends `msg` and waits for its final response, retransmitting on the RFC 3261
    /// schedule (T1 = 500 ms, doubling, capped at 4 s; 32 s in all). Requests from the
    /// server that arrive meanwhile are kept in `requests`.
    async fn transaction(
        &self,
        method: &'static str,
        cseq: u32,
        msg: &str,
        requests: &mut Vec<Msg>,
    ) -> Result<Msg, SiprecError> {
        let deadline = Instant::now() + Duration::from_secs(32);
        let mut interval = Duration::from_millis(500);
        let mut provisional = false;
        let mut buf = vec![0u8; 65_536];
        loop {
            if !provisional {
                self.sock.send_to(msg.as_bytes(), self.server).await?;
            }
            let until = (Instant::now() + interval).min(deadline);
            loop {
                let r = tokio::time::timeout_at(until, self.sock.recv_from(&mut buf)).await;
                let Ok(r) = r else { break };
                let (n, _) = r?;
                let Some(m) = Msg::parse(&buf[..n]) else { continue };
                match m.status() {
                    Some(code) if m.cseq().is_some_and(|(c, meth)| c == cseq && meth == method) => {
                        if code < 200 {
                            provisional = true; // stop retransmitting (INVITE); wait on
                            continue;
                        }
                        return Ok(m);
                    }
                    Some(_) => {} // a stray response
                    None => requests.push(m),
                }
            }
            if Instant::now() >= deadline {
                return Err(SiprecError::NoAnswer(method));
            }
            interval = (interval * 2).min(Duration::from_secs(4));
        }
    }

    /// Answers a request from the server (200 to BYE/OPTIONS, 481 otherwise).
    async fn answer(&self, m: &Msg) {
        let code = match m.start.split(' ').next() {
            Some("BYE" | "OPTIONS") => "200 OK",
            Some("ACK") => return,
            _ => "481 Call/Transaction Does Not Exist",
        };
        let mut r = format!("SIP/2.0 {code}\r\n");
        for h in ["via", "from", "to", "call-id", "cseq"] {
            for (k, v) in m.headers.iter().filter(|(k, _)| k == h) {
                r.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        r.push_str("Content-Length: 0\r\n\r\n");
        let _ = self.sock.send_to(r.as_bytes(), self.server).await;
    }
}

/// The RTP ports of each `m=audio` line of an SDP answer.
fn answer_ports(sdp: &str) -> Vec<u16> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("m=audio "))
        .filter_map(|r| r.split(' ').next()?.parse().ok())
        .collect()
}

/// Binds a UDP socket on `ip` for RTP.
async fn rtp_socket(ip: std::net::IpAddr) -> std::io::Result<UdpSocket> {
    UdpSocket::bind(SocketAddr::new(ip, 0)).await
}

/// One SIPREC call: set up, stream the script at `speed`, hang up.
pub async fn call(o: &SiprecOptions, script: Arc<SiprecScript>) -> Result<SiprecReport, SiprecError> {
    call_observed(o, script, || {}).await
}

/// [`call`], with `answered` run once the server has accepted the call (200 OK).
pub async fn call_observed(
    o: &SiprecOptions,
    script: Arc<SiprecScript>,
    answered: impl FnOnce(),
) -> Result<SiprecReport, SiprecError> {
    let ip = if o.server.ip().is_loopback() {
        o.server.ip()
    } else if o.server.is_ipv4() {
        "0.0.0.0".parse().expect("ip")
    } else {
        "::".parse().expect("ip")
    };
    let sock = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
    let local = sock.local_addr()?;
    let rtp = [rtp_socket(ip).await?, rtp_socket(ip).await?];
    let rtp_ports = [rtp[0].local_addr()?.port(), rtp[1].local_addr()?.port()];
    let call_id = format!("{:016x}{:016x}@earshot-loadtest", rnd(), rnd());
    let mut d = Dialog {
        sock,
        server: o.server,
        local,
        from_tag: format!("{:08x}", rnd() as u32),
        request_uri: format!("sip:{}@{}", o.user, o.server),
        to_header: format!("<sip:{}@{}>", o.user, o.server),
        call_id: call_id.clone(),
    };
    let boundary = "earshot-siprec-boundary";
    let body = format!(
        "--{boundary}\r\nContent-Type: application/sdp\r\n\r\n{}\r\n--{boundary}\r\nContent-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n{}\r\n--{boundary}--\r\n",
        sdp(local.ip(), rtp_ports),
        metadata(o, &call_id)
    );
    let mut extra = String::from("Require: siprec\r\nSupported: timer\r\n");
    if let Some(t) = &o.tenant_header {
        extra.push_str(&format!("X-Earshot-Tenant: {t}\r\n"));
    }
    if let Some(c) = &o.campaign {
        extra.push_str(&format!("X-Earshot-Campaign: {c}\r\n"));
    }
    let invite_branch = branch();
    let invite =
        d.request("INVITE", 1, &invite_branch, &extra, Some(&format!("multipart/mixed;boundary={boundary}")), &body);
    let t0 = Instant::now();
    let answer = d.transaction("INVITE", 1, &invite, &mut Vec::new()).await?;
    let setup = t0.elapsed();
    let code = answer.status().unwrap_or(0);
    if !(200..300).contains(&code) {
        // ACK the failure (same branch: it is part of the INVITE transaction).
        let ack = d.request("ACK", 1, &invite_branch, "", None, "");
        let _ = d.sock.send_to(ack.as_bytes(), o.server).await;
        let warning = answer.header("warning").unwrap_or("");
        return Err(SiprecError::Refused(format!("{} {warning}", answer.start)));
    }
    if let Some(to) = answer.header("to") {
        d.to_header = to.to_string();
    }
    if let Some(uri) = answer.header("contact").and_then(|c| Some(c.split_once('<')?.1.split_once('>')?.0.to_string()))
    {
        d.request_uri = uri;
    }
    let ports = answer_ports(&answer.body);
    if ports.len() != 2 || ports.contains(&0) {
        return Err(SiprecError::BadAnswer(format!("want two accepted streams, got ports {ports:?}")));
    }
    let ack = d.request("ACK", 1, &branch(), "", None, "");
    d.sock.send_to(ack.as_bytes(), o.server).await?;
    answered();
    let dest = [SocketAddr::new(o.server.ip(), ports[0]), SocketAddr::new(o.server.ip(), ports[1])];

    // Media, while answering whatever the server sends.
    let mut report = SiprecReport { setup, ..Default::default() };
    let ssrc = [rnd() as u32, rnd() as u32];
    let ts0 = [rnd() as u32, rnd() as u32];
    let seq0 = [rnd() as u16, rnd() as u16];
    let tick = Duration::from_secs_f64(PTIME_MS as f64 / 1000.0 / o.speed.max(0.001));
    let n = script.streams[0].len().max(script.streams[1].len());
    let start = Instant::now();
    let mut pkt = Vec::with_capacity(12 + SAMPLES_PER_PACKET);
    let mut buf = vec![0u8; 65_536];
    let mut k = 0usize;
    while k < n {
        let due = start + tick * k as u32;
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {
                let lag = Instant::now().saturating_duration_since(due).as_millis() as u64;
                report.max_lag_ms = report.max_lag_ms.max(lag);
                for s in 0..2 {
                    let Some(payload) = script.streams[s].get(k) else { continue };
                    pkt.clear();
                    pkt.push(0x80);
                    pkt.push(if k == 0 { 0x80 } else { 0 }); // marker on the first, PT 0
                    pkt.extend_from_slice(&seq0[s].wrapping_add(k as u16).to_be_bytes());
                    pkt.extend_from_slice(&ts0[s].wrapping_add((k * SAMPLES_PER_PACKET) as u32).to_be_bytes());
                    pkt.extend_from_slice(&ssrc[s].to_be_bytes());
                    pkt.extend_from_slice(payload);
                    rtp[s].send_to(&pkt, dest[s]).await?;
                    report.packets_sent += 1;
                }
                k += 1;
            }
            r = d.sock.recv_from(&mut buf) => {
                let (len, _) = r?;
                let Some(m) = Msg::parse(&buf[..len]) else { continue };
                if m.status().is_some() {
                    if m.cseq().is_some_and(|(c, meth)| c == 1 && meth == "INVITE") {
                        d.sock.send_to(ack.as_bytes(), o.server).await?; // our ACK was lost
                    }
                    continue;
                }
                d.answer(&m).await;
                if m.start.starts_with("BYE ") {
                    report.ended_by_server = true;
                    return Ok(report);
                }
            }
        }
    }
    let bye = d.request("BYE", 2, &branch(), "", None, "");
    let mut requests = Vec::new();
    let r = d.transaction("BYE", 2, &bye, &mut requests).await?;
    for m in &requests {
        d.answer(m).await;
    }
    report.bye_status = r.status();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_makes_full_pcmu_packets_per_channel() {
        let a = Audio { sample_rate: 8000, channels: vec![vec![0; 400], vec![1000; 400]] };
        let s = render(&a).unwrap();
        assert_eq!(s.streams[0].len(), 3);
        assert!(s.streams.iter().flatten().all(|p| p.len() == 160));
        assert_ne!(s.streams[0][0], s.streams[1][0]);
        assert_eq!(s.streams[1][2][100], 0xff, "the last packet is padded with silence");
    }

    #[test]
    fn messages_and_answers_parse() {
        let m = Msg::parse(b"SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\nTo: <sip:a@b>;tag=x\r\nContent-Length: 10\r\n\r\nv=0\r\nm=audio 20000 RTP/AVP 0\r\nm=audio 20002 RTP/AVP 0\r\n").unwrap();
        assert_eq!(m.status(), Some(200));
        assert_eq!(m.cseq(), Some((1, "INVITE".into())));
        assert_eq!(m.header("to"), Some("<sip:a@b>;tag=x"));
        assert_eq!(answer_ports(&m.body), vec![20000, 20002]);
        assert!(Msg::parse(b"garbage").is_none());
        let s = sdp("127.0.0.1".parse().unwrap(), [4000, 4002]);
        assert!(s.contains("m=audio 4000 RTP/AVP 0") && s.contains("a=label:2") && s.contains("c=IN IP4 127.0.0.1"));
    }
}

//! SIP and SIPREC ingest against a real SIP peer (`sipp`, Debian `sip-tester`): sipp is
//! the SBC's recording client and streams one party's audio (`rtp_stream`); the test's
//! own RTP sender streams the other party into the second stream.
//!
//! Just over 600 lines on purpose: besides its own tests it is the SIP harness (sipp
//! scenarios, raw requests, the RTP sender) that `sip_admission` and `sip_media` share.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use earshot::call::{Role, Source};
use earshot::media::rtp::RtpHeader;
use earshot::media::{g711, rtp};

use crate::common::*;

pub(crate) const SIP_TENANT: &str = "sipco";

pub(crate) fn sip_server(extra: &str) -> (TestServer, SocketAddr) {
    sip_server_with(extra, "")
}

/// `extra` goes in `[sip]`, `tenant_extra` at the end of the tenant's `[tenants.sip]`.
pub(crate) fn sip_server_with(extra: &str, tenant_extra: &str) -> (TestServer, SocketAddr) {
    require_tool("sipp");
    let server = TestServer::start_with(
        &format!(
            r#"
[sip]
listen = "127.0.0.1:0"
rtp_ports = [30000, 39999]
rtp_timeout = "3s"
{extra}

[[tenants]]
id = "{SIP_TENANT}"
fork_secret = "{SECRET}"
[tenants.sip]
allow = ["127.0.0.1"]
rep_aors = ["*@agents.example.com"]
{tenant_extra}
"#
        ),
        &[],
    );
    let t0 = Instant::now();
    let addr = loop {
        let log = server.log();
        if let Some(a) = log.lines().find(|l| l.contains("SIP listening")).and_then(|l| l.split("addr=").nth(1)) {
            break a.split_whitespace().next().unwrap().parse().unwrap();
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no SIP listener; log:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    };
    (server, addr)
}

pub(crate) fn free_udp() -> UdpSocket {
    // An even port, as RTP wants (sipp's media port must be even too).
    loop {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        if s.local_addr().unwrap().port() % 2 == 0 {
            return s;
        }
    }
}

/// An even port free for UDP and TCP both (sipp's `-p` is a TCP port with `-t t1`).
pub(crate) fn free_port() -> u16 {
    loop {
        let p = free_udp().local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// 8 kHz µ-law WAV of `samples` (for sipp's `rtp_stream`).
pub(crate) fn ulaw_wav(dir: &Path, name: &str, samples: &[i16]) -> PathBuf {
    let lin = dir.join(format!("{name}.lin.wav"));
    let spec =
        hound::WavSpec { channels: 1, sample_rate: 8000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(&lin, spec).unwrap();
    for &s in samples {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
    let out = dir.join(format!("{name}.ulaw.wav"));
    let st = Command::new("sox")
        .arg(&lin)
        .args(["-r", "8000", "-c", "1", "-e", "mu-law", "-b", "8"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    out
}

pub const METADATA: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns='urn:ietf:params:xml:ns:recording:1'>
  <datamode>complete</datamode>
  <session session_id="sess-1"><sipSessionID>abc</sipSessionID></session>
  <participant participant_id="p-cust"><nameID aor="sip:+15551230000@carrier.example.net"><name>Casey Customer</name></nameID></participant>
  <participant participant_id="p-rep"><nameID aor="sip:alex@agents.example.com"><name>Alex Rep</name></nameID></participant>
  <stream stream_id="s-1" session_id="sess-1"><label>1</label></stream>
  <stream stream_id="s-2" session_id="sess-1"><label>2</label></stream>
  <participantstreamassoc participant_id="p-cust"><send>s-1</send><recv>s-2</recv></participantstreamassoc>
  <participantstreamassoc participant_id="p-rep"><send>s-2</send><recv>s-1</recv></participantstreamassoc>
</recording>"#;

pub(crate) struct Scenario {
    /// Port our own sender uses for the second stream (declared in the offer).
    pub(crate) second_port: u16,
    pub(crate) wav: PathBuf,
    pub(crate) pause_ms: u32,
    pub(crate) bare_lf: bool,
    pub(crate) labels: bool,
    pub(crate) metadata: bool,
    pub(crate) campaign: String,
    /// A re-INVITE halfway that moves the second stream to this port.
    pub(crate) reinvite_port: Option<u16>,
    /// The test's sender reorders, drops and duplicates packets.
    pub(crate) mess: bool,
    /// Digest credentials sipp answers the server's 401 with.
    pub(crate) auth: Option<(String, String)>,
}

impl Scenario {
    fn sdp(&self, second: u16, version: u32) -> String {
        let label = |n: u32| if self.labels { format!("a=label:{n}\n") } else { String::new() };
        format!(
            "v=0\no=sbc 1 {version} IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio [media_port] RTP/AVP 0 101\na=rtpmap:0 PCMU/8000\na=rtpmap:101 telephone-event/8000\n{}a=sendonly\nm=audio {second} RTP/AVP 0\na=rtpmap:0 PCMU/8000\n{}a=sendonly\n",
            label(1),
            label(2)
        )
    }

    fn body(&self, second: u16, version: u32) -> (String, String) {
        if self.metadata {
            let body = format!(
                "--foobar\nContent-Type: application/sdp\n\n{}\n--foobar\nContent-Type: application/rs-metadata+xml\nContent-Disposition: recording-session\n\n{METADATA}\n--foobar--\n",
                self.sdp(second, version)
            );
            ("multipart/mixed;boundary=foobar".into(), body)
        } else {
            ("application/sdp".into(), self.sdp(second, version))
        }
    }

    /// sipp XML: INVITE, ACK, stream the WAV, (re-INVITE), BYE.
    fn xml(&self) -> String {
        let (ct, body) = self.body(self.second_port, 1);
        let invite = |cseq: u32, auth: &str| {
            format!(
                "INVITE sip:{SIP_TENANT}@[remote_ip]:[remote_port] SIP/2.0\n\
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
From: <sip:srs@[local_ip]>;tag=[call_number]\n\
To: <sip:{SIP_TENANT}@[remote_ip]:[remote_port]>\n\
Call-ID: [call_id]\n\
CSeq: {cseq} INVITE\n\
{auth}\
Contact: <sip:srs@[local_ip]:[local_port];transport=[transport]>\n\
Max-Forwards: 70\n\
{}X-Earshot-Campaign: {}\n\
Content-Type: {ct}\n\
Content-Length: [len]\n\n{body}",
                // A SIPREC client requires siprec; a plain fork names the rep in a header.
                if self.metadata { "Require: siprec\n" } else { "X-Earshot-Rep: agent-7\n" },
                self.campaign
            )
        };
        let in_dialog = |method: &str, cseq: u32| {
            format!(
                "{method} [next_url] SIP/2.0\n\
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
From: <sip:srs@[local_ip]>;tag=[call_number]\n\
[last_To:]\n\
Call-ID: [call_id]\n\
CSeq: {cseq} {method}\n\
Contact: <sip:srs@[local_ip]:[local_port];transport=[transport]>\n\
Max-Forwards: 70\n"
            )
        };
        let ack = |cseq: u32| format!("{}Content-Length: 0\n\n", in_dialog("ACK", cseq));
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<scenario name=\"siprec\">\n");
        let crlf = |s: String| if self.bare_lf { s } else { s.replace('\n', "\r\n") };
        x.push_str(&format!("<send retrans=\"500\"><![CDATA[\n{}\n]]></send>\n", crlf(invite(1, ""))));
        x.push_str("<recv response=\"100\" optional=\"true\"/>\n");
        let mut invite_cseq = 1;
        if let Some((user, password)) = &self.auth {
            // 401, the ACK of the INVITE transaction (its branch: message 0), then the
            // INVITE again with credentials.
            x.push_str("<recv response=\"401\" auth=\"true\"/>\n");
            let ack401 = format!(
                "ACK sip:{SIP_TENANT}@[remote_ip]:[remote_port] SIP/2.0\n\
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-3]\n\
From: <sip:srs@[local_ip]>;tag=[call_number]\n\
[last_To:]\n\
Call-ID: [call_id]\n\
CSeq: 1 ACK\n\
Max-Forwards: 70\n\
Content-Length: 0\n\n"
            );
            x.push_str(&format!("<send><![CDATA[\n{}\n]]></send>\n", crlf(ack401)));
            invite_cseq = 2;
            let with_auth = invite(2, &format!("[authentication username={user} password={password}]\n"));
            x.push_str(&format!("<send retrans=\"500\"><![CDATA[\n{}\n]]></send>\n", crlf(with_auth)));
            x.push_str("<recv response=\"100\" optional=\"true\"/>\n");
        }
        x.push_str("<recv response=\"200\" rrs=\"true\"/>\n");
        x.push_str(&format!("<send><![CDATA[\n{}\n]]></send>\n", crlf(ack(invite_cseq))));
        x.push_str(&format!("<nop><action><exec rtp_stream=\"{},1,0\"/></action></nop>\n", self.wav.display()));
        let mut cseq = invite_cseq + 1;
        if let Some(p) = self.reinvite_port {
            x.push_str(&format!("<pause milliseconds=\"{}\"/>\n", self.pause_ms / 2));
            let (ct, body) = self.body(p, 2);
            let re = format!("{}Content-Type: {ct}\nContent-Length: [len]\n\n{body}", in_dialog("INVITE", cseq));
            x.push_str(&format!("<send retrans=\"500\"><![CDATA[\n{}\n]]></send>\n", crlf(re)));
            x.push_str("<recv response=\"100\" optional=\"true\"/>\n<recv response=\"200\"/>\n");
            x.push_str(&format!("<send><![CDATA[\n{}\n]]></send>\n", crlf(ack(cseq))));
            x.push_str(&format!("<pause milliseconds=\"{}\"/>\n", self.pause_ms / 2));
            cseq += 1;
        } else {
            x.push_str(&format!("<pause milliseconds=\"{}\"/>\n", self.pause_ms));
        }
        let bye = format!("{}Content-Length: 0\n\n", in_dialog("BYE", cseq));
        x.push_str(&format!("<send retrans=\"500\"><![CDATA[\n{}\n]]></send>\n", crlf(bye)));
        x.push_str("<recv response=\"200\" crlf=\"true\"/>\n</scenario>\n");
        x
    }
}

pub(crate) fn run_sipp(dir: &Path, sc: &Scenario, target: SocketAddr, tcp: bool) -> (Child, PathBuf) {
    let xml = dir.join(format!("{}.xml", sc.campaign));
    std::fs::write(&xml, sc.xml()).unwrap();
    let trace = dir.join(format!("{}.msg", sc.campaign));
    let child = Command::new("sipp")
        .arg("-sf")
        .arg(&xml)
        .args(["-m", "1", "-timeout", "40s", "-timeout_error", "-nostdin", "-i", "127.0.0.1", "-mi", "127.0.0.1"])
        .args(["-p", &free_port().to_string(), "-mp", &free_port().to_string()])
        .args(["-t", if tcp { "t1" } else { "u1" }])
        .arg("-trace_err")
        .arg("-error_file")
        .arg(dir.join("sipp-errors.log"))
        .arg("-trace_msg")
        .arg("-message_file")
        .arg(&trace)
        .arg(target.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp runs");
    (child, trace)
}

/// The local RTP ports of each `200 OK` answer sipp received, in order.
pub(crate) fn answered_ports(trace: &Path) -> Vec<Vec<u16>> {
    let text = std::fs::read_to_string(trace).unwrap_or_default();
    text.split("SIP/2.0 200 OK")
        .skip(1)
        .filter(|m| m.contains("application/sdp"))
        .map(|m| {
            let m = m.split("----------").next().unwrap_or("");
            m.lines()
                .filter_map(|l| l.trim().strip_prefix("m=audio "))
                .filter_map(|r| r.split(' ').next()?.parse().ok())
                .collect()
        })
        .collect()
}

/// Sends `samples` as 20 ms PCMU packets in real time to `to` from `sock`; with `mess`,
/// neighbours are swapped every 10 packets, every 25th is dropped, every 30th doubled.
pub(crate) fn send_rtp(sock: &UdpSocket, to: SocketAddr, samples: &[i16], start_seq: u16, mess: bool) -> usize {
    let mut pkts = Vec::new();
    for (i, chunk) in samples.chunks(160).enumerate() {
        let mut payload = Vec::new();
        g711::encode_ulaw_into(chunk, &mut payload);
        let h = RtpHeader {
            marker: i == 0,
            payload_type: 0,
            seq: start_seq.wrapping_add(i as u16),
            timestamp: 12345 + i as u32 * 160,
            ssrc: 0xfeed,
        };
        let mut buf = Vec::new();
        rtp::write(&h, &payload, &mut buf);
        pkts.push(buf);
    }
    let t0 = Instant::now();
    let mut order: Vec<usize> = (0..pkts.len()).collect();
    if mess {
        // Swap neighbours every 10 packets, drop every 25th, duplicate every 30th.
        for i in (5..order.len().saturating_sub(1)).step_by(10) {
            order.swap(i, i + 1);
        }
    }
    let mut sent = 0;
    for (k, &i) in order.iter().enumerate() {
        let due = t0 + Duration::from_millis(20 * k as u64);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        if mess && i % 25 == 24 {
            continue;
        }
        sock.send_to(&pkts[i], to).unwrap();
        sent += 1;
        if mess && i % 30 == 29 {
            sock.send_to(&pkts[i], to).unwrap();
        }
    }
    sent
}

pub(crate) fn energy_ms(ch: &[i16]) -> u64 {
    // Milliseconds (10 ms windows) whose RMS is above ~-40 dBFS.
    ch.chunks(80)
        .filter(|w| (w.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / w.len() as f64).sqrt() > 300.0)
        .count() as u64
        * 10
}

pub(crate) fn channel(rec: &earshot::store::spool::Recording, c: usize) -> Vec<i16> {
    rec.samples.iter().skip(c).step_by(rec.channels as usize).copied().collect()
}

pub(crate) struct Outcome {
    pub(crate) manifest: earshot::store::manifest::Manifest,
    pub(crate) rec: earshot::store::spool::Recording,
    pub(crate) rep_sent_ms: u64,
    pub(crate) cust_ms: u64,
}

pub(crate) fn siprec_call(
    server: &TestServer,
    sip: SocketAddr,
    tcp: bool,
    tweak: impl FnOnce(&mut Scenario),
) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let cust = speech("en-gb+f3", "Hi Alex, we already use Globex for this, thanks.", 8000);
    let rep = speech("en-us", "Hello, this is Alex from Acme. This call is recorded.", 8000);
    let wav = ulaw_wav(dir.path(), "cust", &cust);
    let sender = free_udp();
    let mut sc = Scenario {
        second_port: sender.local_addr().unwrap().port(),
        wav,
        pause_ms: 5000,
        bare_lf: false,
        labels: true,
        metadata: true,
        campaign: {
            // Unique per call in this process: a test that makes two calls must find each one's
            // own manifest (a time-derived name could repeat).
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            format!("c{}-{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
        },
        reinvite_port: None,
        mess: false,
        auth: None,
    };
    tweak(&mut sc);
    let second_sender = sc.reinvite_port.map(|p| UdpSocket::bind(("127.0.0.1", p)).unwrap());
    let (mut child, mut trace) = run_sipp(dir.path(), &sc, sip, tcp);
    let t0 = Instant::now();
    let mut binds = 0;
    let ports = loop {
        if let Some(p) = answered_ports(&trace).first().filter(|p| p.len() == 2) {
            break p.clone();
        }
        if let Ok(Some(st)) = child.try_wait() {
            // 254: sipp could not bind its ports (another test took them between our check
            // and its start): again with fresh ones, before any INVITE was sent.
            if st.code() == Some(254) && binds < 3 && answered_ports(&trace).is_empty() {
                binds += 1;
                (child, trace) = run_sipp(dir.path(), &sc, sip, tcp);
                continue;
            }
            panic!(
                "sipp exited early ({st}); log:\n{}\ntrace:\n{}",
                server.log(),
                std::fs::read_to_string(&trace).unwrap_or_default()
            );
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let err =
                child.wait_with_output().map(|o| String::from_utf8_lossy(&o.stderr).to_string()).unwrap_or_default();
            let errors = std::fs::read_to_string(trace.with_file_name("sipp-errors.log")).unwrap_or_default();
            panic!(
                "no 200 OK with two streams; sipp: {err}\n{errors}\ntrace:\n{}\nlog:\n{}",
                std::fs::read_to_string(&trace).unwrap_or_default(),
                server.log()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let to = SocketAddr::from(([127, 0, 0, 1], ports[1]));
    let rep_sent_ms = energy_ms(&rep);
    match &second_sender {
        None => {
            send_rtp(&sender, to, &rep, 65500, sc.mess);
        }
        Some(moved) => {
            // First half from the first port, the rest from the port the re-INVITE names.
            let half = (sc.pause_ms as usize / 2) * 8;
            let (a, b) = rep.split_at(half.min(rep.len()));
            send_rtp(&sender, to, a, 100, false);
            let t1 = Instant::now();
            while answered_ports(&trace).len() < 2 {
                assert!(t1.elapsed() < Duration::from_secs(10), "no answer to the re-INVITE; log:\n{}", server.log());
                std::thread::sleep(Duration::from_millis(10));
            }
            send_rtp(moved, to, b, 100 + (a.len() / 160) as u16, false);
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sipp failed: {}\n{}\nserver log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    let manifest = server.wait_call(SIP_TENANT, &sc.campaign, Duration::from_secs(20));
    let rec = server.audio(manifest.call_id);
    Outcome { manifest, rec, rep_sent_ms, cust_ms: energy_ms(&cust) }
}

pub(crate) fn assert_two_parties(o: &Outcome, pause_ms: u64) {
    let m = &o.manifest;
    assert_eq!(m.outcome.as_deref(), Some("completed"), "{m:?}");
    assert_eq!(m.channels, vec![Role::Rep, Role::Customer]);
    assert_eq!((o.rec.sample_rate, o.rec.channels), (8000, 2));
    let dur = o.rec.duration_ms();
    assert!(dur + 300 >= pause_ms && dur <= pause_ms + 1500, "recording lasts {dur} ms for a {pause_ms} ms call");
    let rep = energy_ms(&channel(&o.rec, 0));
    let cust = energy_ms(&channel(&o.rec, 1));
    // Each channel carries its own party's speech (µ-law round trips keep the energy).
    assert!(
        rep.abs_diff(o.rep_sent_ms) <= o.rep_sent_ms / 10 + 40,
        "rep channel has {rep} ms of speech, {} ms were sent",
        o.rep_sent_ms
    );
    assert!(
        cust.abs_diff(o.cust_ms) <= o.cust_ms / 10 + 40,
        "customer channel has {cust} ms of speech, the WAV has {}",
        o.cust_ms
    );
}

#[test]
fn siprec_over_udp_records_both_parties_on_their_channels_with_metadata() {
    let (server, sip) = sip_server("");
    let o = siprec_call(&server, sip, false, |_| {});
    assert_two_parties(&o, 5000);
    let m = &o.manifest;
    assert_eq!(m.source, Source::Siprec);
    assert_eq!(m.rep_id.as_deref(), Some("sip:alex@agents.example.com"));
    let rep = m.participants.iter().find(|p| p.role == Some(Role::Rep)).expect("rep participant");
    assert_eq!(rep.display_name.as_deref(), Some("Alex Rep"));
    let cust = m.participants.iter().find(|p| p.role == Some(Role::Customer)).expect("customer participant");
    assert_eq!(cust.phone_e164.as_deref(), Some("+15551230000"));
    assert_eq!(m.source_ids.get("siprec_session_id").map(String::as_str), Some("sess-1"));
    assert!(m.source_ids.contains_key("sip_call_id"));
    let metrics = server.metrics();
    assert!(metric(&metrics, "earshot_sip_requests_total", &["method=\"INVITE\""]) >= 1.0);
    assert!(metric(&metrics, "earshot_sip_responses_total", &["code=\"200\""]) >= 2.0, "200 to INVITE and BYE");
    assert!(metric(&metrics, "earshot_rtp_packets_total", &["result=\"received\""]) > 200.0);
}

#[test]
fn siprec_over_tcp_records_both_parties() {
    let (server, sip) = sip_server("");
    let o = siprec_call(&server, sip, true, |_| {});
    assert_two_parties(&o, 5000);
    assert_eq!(o.manifest.source, Source::Siprec);
}

#[test]
fn bare_lf_bodies_missing_labels_and_missing_metadata_fall_back_to_stream_order() {
    let (server, sip) = sip_server("");
    // Bare LF, no labels: metadata cannot map streams, so the first stream is the rep
    // (tenant default `rep_stream = "first"`): sipp's customer audio lands left.
    let o = siprec_call(&server, sip, false, |s| {
        s.bare_lf = true;
        s.labels = false;
    });
    let left = energy_ms(&channel(&o.rec, 0));
    let right = energy_ms(&channel(&o.rec, 1));
    assert!(
        left.abs_diff(o.cust_ms) <= o.cust_ms / 10 + 40 && right.abs_diff(o.rep_sent_ms) <= o.rep_sent_ms / 10 + 40,
        "left {left} right {right}"
    );
    // No metadata at all: a plain SIP fork.
    let o = siprec_call(&server, sip, false, |s| s.metadata = false);
    assert_eq!(o.manifest.source, Source::Sip);
    assert!(o.manifest.participants.is_empty());
    assert_eq!(o.manifest.rep_id.as_deref(), Some("agent-7"));
    assert_eq!(o.rec.channels, 2);
}

#[test]
fn a_re_invite_moving_the_second_stream_keeps_the_recording_whole() {
    let (server, sip) = sip_server("");
    let moved = free_port();
    let o = siprec_call(&server, sip, false, |s| s.reinvite_port = Some(moved));
    assert_two_parties(&o, 5000);
    let metrics = server.metrics();
    assert_eq!(metric(&metrics, "earshot_rtp_packets_total", &["result=\"wrong_source\""]), 0.0);
}

#[test]
fn loss_reordering_and_duplicates_keep_the_recording_aligned_and_are_counted() {
    let (server, sip) = sip_server("");
    let o = siprec_call(&server, sip, false, |s| s.mess = true);
    let m = &o.manifest;
    assert_eq!(m.outcome.as_deref(), Some("completed"));
    assert!(
        m.stats.frames_reordered > 0 && m.stats.frames_gap_filled > 0 && m.stats.frames_dropped > 0,
        "{:?}",
        m.stats
    );
    let dur = o.rec.duration_ms();
    assert!((4700..=6500).contains(&dur), "recording lasts {dur} ms");
    let metrics = server.metrics();
    for r in ["reordered", "lost", "duplicate"] {
        assert!(metric(&metrics, "earshot_rtp_packets_total", &[&format!("result=\"{r}\"")]) > 0.0, "{r} not counted");
    }
}

/// Sends one request over UDP and returns the final status code (None: no answer).
pub(crate) fn udp_request(sock: &UdpSocket, to: SocketAddr, msg: &[u8]) -> Option<(u16, String)> {
    sock.send_to(msg, to).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        let code: u16 = text.split_whitespace().nth(1)?.parse().ok()?;
        if code >= 200 {
            return Some((code, text));
        }
    }
}

pub(crate) fn raw_invite(
    local: SocketAddr,
    to: SocketAddr,
    call_id: &str,
    content_type: &str,
    body: &str,
    content_length: Option<usize>,
    extra: &str,
) -> Vec<u8> {
    let len = content_length.unwrap_or(body.len());
    format!(
        "INVITE sip:{SIP_TENANT}@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id}\r\nFrom: <sip:srs@{local}>;tag=t-{call_id}\r\nTo: <sip:{SIP_TENANT}@{to}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:srs@{local}>\r\nMax-Forwards: 70\r\n{extra}Content-Type: {content_type}\r\nContent-Length: {len}\r\n\r\n{body}"
    )
    .into_bytes()
}

pub(crate) const GOOD_SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=sendonly\r\n";

#[test]
fn the_loadtest_siprec_client_records_concurrent_calls_with_nothing_lost() {
    // The load generator's own SIPREC UAC (used by the 500-call benchmark) against the
    // real server: three calls at once, each with both parties on the right channels,
    // every RTP packet received.
    use earshot_loadtest::siprec;
    // A 1 s playout delay: on a loaded 2-core CI machine the sender itself can stall past
    // the default 80 ms (packets then count as late); this test is about nothing lost.
    let (server, sip) = sip_server("jitter_delay = \"1s\"\n");
    let rep = speech("en-us", "Hello, this is Alex from Acme.", 8000);
    let cust = speech("en-gb+f3", "Hi Alex, we use Globex.", 8000);
    let len = rep.len().max(cust.len()) + 4000;
    let (mut left, mut right) = (rep.clone(), vec![0i16; 4000]);
    left.resize(len, 0);
    right.extend_from_slice(&cust);
    right.resize(len, 0);
    let audio = earshot_loadtest::audio::Audio { sample_rate: 8000, channels: vec![left, right] };
    let script = std::sync::Arc::new(siprec::render(&audio).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let reports: Vec<_> = rt.block_on(async {
        let calls = (0..3).map(|i| {
            let o = siprec::SiprecOptions {
                server: sip,
                user: SIP_TENANT.into(),
                tenant_header: None,
                campaign: Some(format!("lt{i}")),
                rep_aor: format!("sip:rep{i}@agents.example.com"),
                customer_aor: "sip:+15551230000@pstn.example.com".into(),
                speed: 1.0,
            };
            let script = script.clone();
            tokio::spawn(async move { siprec::call(&o, script).await })
        });
        futures_util::future::join_all(calls).await.into_iter().map(|r| r.unwrap().expect("call")).collect()
    });
    let sent: u64 = reports.iter().map(|r| r.packets_sent).sum();
    for (i, r) in reports.iter().enumerate() {
        assert_eq!(r.bye_status, Some(200), "{r:?}");
        let m = server.wait_call(SIP_TENANT, &format!("lt{i}"), Duration::from_secs(20));
        assert_eq!(m.outcome.as_deref(), Some("completed"), "{m:?}");
        assert_eq!(m.source, Source::Siprec);
        assert_eq!(m.rep_id.as_deref(), Some(format!("sip:rep{i}@agents.example.com").as_str()));
        let rec = server.audio(m.call_id);
        let (l, r) = (energy_ms(&channel(&rec, 0)), energy_ms(&channel(&rec, 1)));
        let (want_l, want_r) = (energy_ms(&rep), energy_ms(&cust));
        assert!(
            l.abs_diff(want_l) <= want_l / 10 + 40 && r.abs_diff(want_r) <= want_r / 10 + 40,
            "call {i}: left {l} ms (want {want_l}), right {r} ms (want {want_r})"
        );
    }
    let metrics = server.metrics();
    let rtp: Vec<String> =
        metrics.lines().filter(|l| l.starts_with("earshot_rtp_packets_total")).map(String::from).collect();
    assert_eq!(metric(&metrics, "earshot_rtp_packets_total", &["result=\"received\""]), sent as f64, "{rtp:?}");
    for r in ["lost", "late", "duplicate", "wrong_source", "malformed"] {
        assert_eq!(metric(&metrics, "earshot_rtp_packets_total", &[&format!("result=\"{r}\"")]), 0.0, "{r}");
    }
}

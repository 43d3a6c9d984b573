//! SIP media beyond plain PCMU: SRTP with SDES keys, Opus beside PCMU, and a call that
//! goes silent and is ended with our own BYE.

use crate::common::*;
use crate::sip::*;
use earshot::media::rtp::RtpHeader;
use earshot::media::{g711, rtp};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_call_that_goes_silent_is_ended_with_our_own_bye() {
    // No RTP at all after the ACK: the RTP timeout (3 s here) ends the call, and the
    // server hangs up with a BYE so the SBC stops forking; sipp answers it 200.
    let (server, sip) = sip_server("");
    let dir = tempfile::tempdir().unwrap();
    let sdp = GOOD_SDP.replace("\r\n", "\n");
    let xml = format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="silent">
<send retrans="500"><![CDATA[
INVITE sip:{SIP_TENANT}@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:srs@[local_ip]>;tag=[call_number]
To: <sip:{SIP_TENANT}@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:srs@[local_ip]:[local_port];transport=[transport]>
Max-Forwards: 70
X-Earshot-Campaign: silent
Content-Type: application/sdp
Content-Length: [len]

{sdp}
]]></send>
<recv response="100" optional="true"/>
<recv response="200" rrs="true"/>
<send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:srs@[local_ip]>;tag=[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
<recv request="BYE" timeout="15000"/>
<send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
</scenario>
"#
    );
    let path = dir.path().join("silent.xml");
    std::fs::write(&path, xml).unwrap();
    let out = Command::new("sipp")
        .arg("-sf")
        .arg(&path)
        .args(["-m", "1", "-timeout", "30s", "-timeout_error", "-nostdin", "-i", "127.0.0.1"])
        .args(["-p", &free_port().to_string(), "-t", "u1"])
        .arg(sip.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("sipp runs");
    assert!(
        out.status.success(),
        "sipp did not get our BYE: {}\n{}\nlog:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    let m = server.wait_call(SIP_TENANT, "silent", Duration::from_secs(20));
    assert_eq!(m.outcome.as_deref(), Some("timeout"), "{m:?}");
    assert!(server.log_shows("sent BYE", Duration::from_secs(10)), "{}", server.log());
    assert!(server.log().contains("answer=Some(200)"), "{}", server.log());
    assert_eq!(metric(&server.metrics(), "earshot_rtp_timeouts_total", &[]), 1.0);
}

#[test]
fn an_srtp_fork_with_sdes_keys_is_decrypted_and_recorded() {
    // Many SBCs encrypt recording forks: RTP/SAVP with a=crypto keys (RFC 4568). Both
    // streams are encrypted by a real SRTP implementation (webrtc-srtp) with their own
    // keys; packets under a wrong key are counted and dropped, the rest recorded.
    use base64::Engine;
    use webrtc_srtp::context::Context;
    use webrtc_srtp::protection_profile::ProtectionProfile;
    let (server, sip) = sip_server("");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = sock.local_addr().unwrap();
    let senders = [free_udp(), free_udp()];
    let keys: [[u8; 30]; 2] = [std::array::from_fn(|i| i as u8 + 1), std::array::from_fn(|i| 200 - i as u8)];
    let b64 = |k: &[u8]| base64::engine::general_purpose::STANDARD.encode(k);
    let sdp = format!(
        "v=0\r\no=sbc 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {} RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\na=sendonly\r\n\
m=audio {} RTP/SAVP 0\r\na=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{}\r\na=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{}\r\na=sendonly\r\n",
        senders[0].local_addr().unwrap().port(),
        b64(&keys[0]),
        senders[1].local_addr().unwrap().port(),
        b64(&[9u8; 46]),
        b64(&keys[1]),
    );
    let (code, ok) = udp_request(
        &sock,
        sip,
        &raw_invite(
            me,
            sip,
            "srtp1",
            "application/sdp",
            &sdp,
            None,
            "X-Earshot-Campaign: srtp\r\nX-Earshot-Rep: agent-7\r\n",
        ),
    )
    .unwrap();
    assert_eq!(code, 200, "{ok}");
    assert!(ok.contains("m=audio") && ok.contains("RTP/SAVP 0"), "{ok}");
    let cryptos: Vec<&str> = ok.lines().filter(|l| l.starts_with("a=crypto:")).collect();
    assert_eq!(cryptos.len(), 2, "{ok}");
    assert!(
        cryptos[0].starts_with("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:")
            && cryptos[1].starts_with("a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:"),
        "{ok}"
    );
    assert!(!ok.contains(&b64(&keys[0])) && !ok.contains(&b64(&keys[1])), "the answer carries our own keys");
    let ports: Vec<u16> = ok
        .lines()
        .filter_map(|l| l.trim().strip_prefix("m=audio "))
        .filter_map(|r| r.split(' ').next()?.parse().ok())
        .collect();
    let to = ok.lines().find(|l| l.to_ascii_lowercase().starts_with("to:")).unwrap().to_string();
    let ack = format!("ACK sip:{SIP_TENANT}@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-srtp-ack\r\nFrom: <sip:srs@{me}>;tag=t-srtp1\r\n{to}\r\nCall-ID: srtp1\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
    sock.send_to(ack.as_bytes(), sip).unwrap();
    let rep = speech("en-us", "Hello, this is Alex from Acme.", 8000);
    let cust = speech("en-gb+f3", "Hi Alex, we use Globex.", 8000);
    let profiles = [ProtectionProfile::Aes128CmHmacSha1_80, ProtectionProfile::Aes128CmHmacSha1_32];
    let mut ctx: Vec<Context> =
        (0..2).map(|i| Context::new(&keys[i][..16], &keys[i][16..], profiles[i], None, None).unwrap()).collect();
    let mut wrong = Context::new(&[5u8; 16], &[6u8; 14], ProtectionProfile::Aes128CmHmacSha1_32, None, None).unwrap();
    let dest = [SocketAddr::from(([127, 0, 0, 1], ports[0])), SocketAddr::from(([127, 0, 0, 1], ports[1]))];
    let n = rep.len().max(cust.len()) / 160 + 1;
    let t0 = Instant::now();
    for k in 0..n {
        for (i, samples) in [&rep, &cust].into_iter().enumerate() {
            let chunk: Vec<i16> = (0..160).map(|j| samples.get(k * 160 + j).copied().unwrap_or(0)).collect();
            let mut payload = Vec::new();
            g711::encode_ulaw_into(&chunk, &mut payload);
            let h = RtpHeader {
                marker: k == 0,
                payload_type: 0,
                seq: 1000 + k as u16,
                timestamp: 5000 + k as u32 * 160,
                ssrc: 0xabc0 + i as u32,
            };
            let mut plain = Vec::new();
            rtp::write(&h, &payload, &mut plain);
            if i == 1 && k % 50 == 10 {
                // An attacker's (or a stale key's) packet: fails authentication.
                let forged = wrong.encrypt_rtp(&plain).unwrap();
                senders[i].send_to(&forged, dest[i]).unwrap();
            }
            let enc = ctx[i].encrypt_rtp(&plain).unwrap();
            senders[i].send_to(&enc, dest[i]).unwrap();
        }
        let due = t0 + Duration::from_millis(20 * (k as u64 + 1));
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    let bye = format!("BYE sip:earshot@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-srtp-bye\r\nFrom: <sip:srs@{me}>;tag=t-srtp1\r\n{to}\r\nCall-ID: srtp1\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(udp_request(&sock, sip, bye.as_bytes()).map(|r| r.0), Some(200));
    let m = server.wait_call(SIP_TENANT, "srtp", Duration::from_secs(20));
    assert_eq!(m.outcome.as_deref(), Some("completed"), "{m:?}");
    let rec = server.audio(m.call_id);
    let (l, r) = (energy_ms(&channel(&rec, 0)), energy_ms(&channel(&rec, 1)));
    let (want_l, want_r) = (energy_ms(&rep), energy_ms(&cust));
    assert!(
        l.abs_diff(want_l) <= want_l / 10 + 40 && r.abs_diff(want_r) <= want_r / 10 + 40,
        "left {l} ms (want {want_l}), right {r} ms (want {want_r})"
    );
    let metrics = server.metrics();
    let forged = (0..n).filter(|k| k % 50 == 10).count() as f64;
    assert_eq!(metric(&metrics, "earshot_rtp_packets_total", &["result=\"srtp_failed\""]), forged);
    assert_eq!(metric(&metrics, "earshot_rtp_packets_total", &["result=\"received\""]), 2.0 * n as f64);
}

#[test]
fn an_opus_stream_beside_a_pcmu_stream_is_decoded_into_the_recording() {
    // WebRTC-facing SBCs fork Opus (RFC 7587: dynamic PT, 48 kHz RTP clock). The rep's
    // stream is Opus from a real libopus encoder, the customer's PCMU: both channels
    // carry their party, time-aligned.
    let (server, sip) = sip_server("");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = sock.local_addr().unwrap();
    let senders = [free_udp(), free_udp()];
    let sdp = format!(
        "v=0\r\no=sbc 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {} RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1\r\na=sendonly\r\n\
m=audio {} RTP/AVP 0\r\na=sendonly\r\n",
        senders[0].local_addr().unwrap().port(),
        senders[1].local_addr().unwrap().port(),
    );
    let (code, ok) = udp_request(
        &sock,
        sip,
        &raw_invite(me, sip, "opus1", "application/sdp", &sdp, None, "X-Earshot-Campaign: opus\r\n"),
    )
    .unwrap();
    assert_eq!(code, 200, "{ok}");
    assert!(ok.contains("a=rtpmap:111 opus/48000/2"), "{ok}");
    let ports: Vec<u16> = ok
        .lines()
        .filter_map(|l| l.trim().strip_prefix("m=audio "))
        .filter_map(|r| r.split(' ').next()?.parse().ok())
        .collect();
    let to = ok.lines().find(|l| l.to_ascii_lowercase().starts_with("to:")).unwrap().to_string();
    let ack = format!("ACK sip:{SIP_TENANT}@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-opus-ack\r\nFrom: <sip:srs@{me}>;tag=t-opus1\r\n{to}\r\nCall-ID: opus1\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
    sock.send_to(ack.as_bytes(), sip).unwrap();
    let text = "Hello, this is Alex from Acme.";
    let rep48 = speech("en-us", text, 48000);
    let rep8 = speech("en-us", text, 8000);
    let cust = speech("en-gb+f3", "Hi Alex, we use Globex.", 8000);
    let mut enc = opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    let dest = [SocketAddr::from(([127, 0, 0, 1], ports[0])), SocketAddr::from(([127, 0, 0, 1], ports[1]))];
    let n = (rep8.len().max(cust.len())) / 160 + 1;
    let ts0: u32 = u32::MAX - 960 * 20; // wraps after 20 packets
    let t0 = Instant::now();
    for k in 0..n {
        let frame: Vec<i16> = (0..960).map(|j| rep48.get(k * 960 + j).copied().unwrap_or(0)).collect();
        let payload = enc.encode_vec(&frame, 1500).unwrap();
        let mut pkt = Vec::new();
        rtp::write(
            &RtpHeader {
                marker: k == 0,
                payload_type: 111,
                seq: k as u16,
                timestamp: ts0.wrapping_add(k as u32 * 960),
                ssrc: 0x0f05,
            },
            &payload,
            &mut pkt,
        );
        senders[0].send_to(&pkt, dest[0]).unwrap();
        let chunk: Vec<i16> = (0..160).map(|j| cust.get(k * 160 + j).copied().unwrap_or(0)).collect();
        let mut ulaw = Vec::new();
        g711::encode_ulaw_into(&chunk, &mut ulaw);
        let mut pkt = Vec::new();
        rtp::write(
            &RtpHeader {
                marker: k == 0,
                payload_type: 0,
                seq: 500 + k as u16,
                timestamp: 9000 + k as u32 * 160,
                ssrc: 0xc057,
            },
            &ulaw,
            &mut pkt,
        );
        senders[1].send_to(&pkt, dest[1]).unwrap();
        let due = t0 + Duration::from_millis(20 * (k as u64 + 1));
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    let bye = format!("BYE sip:earshot@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-opus-bye\r\nFrom: <sip:srs@{me}>;tag=t-opus1\r\n{to}\r\nCall-ID: opus1\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(udp_request(&sock, sip, bye.as_bytes()).map(|r| r.0), Some(200));
    let m = server.wait_call(SIP_TENANT, "opus", Duration::from_secs(20));
    assert_eq!(m.outcome.as_deref(), Some("completed"), "{m:?}");
    let rec = server.audio(m.call_id);
    assert_eq!(rec.sample_rate, 8000);
    let dur = rec.duration_ms();
    // The recording runs on the call's timeline (from the answer), as for G.711 calls.
    assert!(
        dur + 300 >= n as u64 * 20 && dur <= n as u64 * 20 + 1500,
        "recording lasts {dur} ms for {} ms sent",
        n * 20
    );
    let (l, r) = (energy_ms(&channel(&rec, 0)), energy_ms(&channel(&rec, 1)));
    let (want_l, want_r) = (energy_ms(&rep8), energy_ms(&cust));
    assert!(l.abs_diff(want_l) <= want_l / 6 + 60, "Opus channel: {l} ms of speech, want {want_l}");
    assert!(r.abs_diff(want_r) <= want_r / 10 + 40, "PCMU channel: {r} ms, want {want_r}");
    let metrics = server.metrics();
    assert_eq!(metric(&metrics, "earshot_rtp_packets_total", &["result=\"received\""]), 2.0 * n as f64);
    assert_eq!(
        metric(&metrics, "earshot_rtp_packets_total", &["result=\"late\""])
            + metric(&metrics, "earshot_rtp_packets_total", &["result=\"lost\""]),
        0.0,
        "the timestamp wrap is seamless"
    );
}

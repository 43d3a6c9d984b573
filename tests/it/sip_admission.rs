//! SIP: who may send and what is refused — malformed requests, the call limit, digest
//! authentication, and SIP over TLS from a real TLS client.

use crate::common::*;
use crate::sip::*;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn malformed_sip_is_refused_or_dropped_without_touching_a_good_call() {
    let (server, sip) = sip_server("");
    let addr = server.addr;
    let bad = std::thread::spawn(move || {
        // The good call is under way first.
        wait_metric(addr, "earshot_calls_active", &[], 1.0, Duration::from_secs(20));
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let me = sock.local_addr().unwrap();
        let mut seen = Vec::new();
        // Garbage, a truncated request, a huge header: dropped (no answer) or 4xx.
        for (name, msg) in [
            ("garbage", b"\x00\x01hello there\r\n\r\n".to_vec()),
            ("truncated", raw_invite(me, sip, "trunc", "application/sdp", GOOD_SDP, None, "")[..90].to_vec()),
            (
                "huge header",
                raw_invite(
                    me,
                    sip,
                    "huge",
                    "application/sdp",
                    GOOD_SDP,
                    None,
                    &format!("X-Big: {}\r\n", "a".repeat(60_000)),
                ),
            ),
        ] {
            let r = udp_request(&sock, sip, &msg);
            assert!(r.as_ref().is_none_or(|(c, _)| (400..500).contains(c)), "{name}: {r:?}");
            seen.push((name, r.map(|(c, _)| c)));
        }
        // A wrong Content-Length (some SBCs send one) is tolerated: the datagram bounds
        // the body. The call it starts ends on the RTP timeout.
        let r = udp_request(&sock, sip, &raw_invite(me, sip, "badlen", "application/sdp", GOOD_SDP, Some(9999), ""))
            .unwrap();
        assert_eq!(r.0, 200, "{}", r.1);
        // Well-formed SIP with a bad body: specific answers with a reason.
        let r = udp_request(
            &sock,
            sip,
            &raw_invite(me, sip, "badsdp", "application/sdp", "v=0\r\nthis is not sdp\r\n", None, ""),
        )
        .unwrap();
        assert_eq!(r.0, 400, "{}", r.1);
        assert!(r.1.contains("Warning: 399 earshot"), "{}", r.1);
        let r = udp_request(
            &sock,
            sip,
            &raw_invite(
                me,
                sip,
                "g722",
                "application/sdp",
                &GOOD_SDP.replace("RTP/AVP 0", "RTP/AVP 9\r\na=rtpmap:9 G722/8000"),
                None,
                "",
            ),
        )
        .unwrap();
        assert_eq!(r.0, 488, "{}", r.1);
        let r = udp_request(&sock, sip, &raw_invite(me, sip, "text", "text/plain", "hello", None, "")).unwrap();
        assert_eq!(r.0, 415, "{}", r.1);
        let r = udp_request(
            &sock,
            sip,
            &raw_invite(me, sip, "tenant", "application/sdp", GOOD_SDP, None, "X-Earshot-Tenant: acme\r\n"),
        )
        .unwrap();
        assert_eq!(r.0, 403, "a tenant whose allow-list does not hold the source: {}", r.1);
        // SBCs ping recorders with OPTIONS.
        let opts = format!("OPTIONS sip:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-o1\r\nFrom: <sip:p@{me}>;tag=o\r\nTo: <sip:{sip}>\r\nCall-ID: opt1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(udp_request(&sock, sip, opts.as_bytes()).map(|r| r.0), Some(200));
        // BYE for a call that does not exist.
        let bye = format!("BYE sip:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-b1\r\nFrom: <sip:p@{me}>;tag=b\r\nTo: <sip:{sip}>;tag=x\r\nCall-ID: nosuch\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(udp_request(&sock, sip, bye.as_bytes()).map(|r| r.0), Some(481));
        seen
    });
    let o = siprec_call(&server, sip, false, |_| {});
    let seen = bad.join().expect("bad-input thread");
    assert_two_parties(&o, 5000);
    assert!(server.log_shows("SIP INVITE refused", Duration::from_secs(10)), "{seen:?}");
}

#[test]
fn invites_past_the_call_limit_get_503_with_retry_after() {
    let (server, sip) = sip_server("max_calls = 1");
    let addr = server.addr;
    let flood = std::thread::spawn(move || {
        // The one call allowed is under way first.
        wait_metric(addr, "earshot_calls_active", &[], 1.0, Duration::from_secs(20));
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let me = sock.local_addr().unwrap();
        (0..5)
            .map(|i| {
                udp_request(
                    &sock,
                    sip,
                    &raw_invite(me, sip, &format!("flood{i}"), "application/sdp", GOOD_SDP, None, ""),
                )
                .unwrap()
            })
            .collect::<Vec<_>>()
    });
    let o = siprec_call(&server, sip, false, |_| {});
    for (code, text) in flood.join().unwrap() {
        assert_eq!(code, 503, "{text}");
        assert!(text.contains("Retry-After: 5"), "{text}");
    }
    assert_two_parties(&o, 5000);
    assert!(metric(&server.metrics(), "earshot_sip_responses_total", &["code=\"503\""]) >= 5.0);
}

#[test]
fn a_tenant_with_digest_auth_challenges_invites_and_records_the_authenticated_call() {
    let (server, sip) =
        sip_server_with("", "[tenants.sip.digest]\nuser = \"sbc\"\npassword = \"correct-horse-battery\"\n");
    // No credentials: 401 with a challenge; wrong ones: 401 again, counted.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = sock.local_addr().unwrap();
    let (code, text) =
        udp_request(&sock, sip, &raw_invite(me, sip, "noauth", "application/sdp", GOOD_SDP, None, "")).unwrap();
    assert_eq!(code, 401, "{text}");
    let www = text.lines().find(|l| l.to_ascii_lowercase().starts_with("www-authenticate:")).expect("a challenge");
    assert!(www.contains("Digest realm=\"earshot\"") && www.contains("qop=\"auth\""), "{www}");
    let bad =
        "Authorization: Digest username=\"sbc\", realm=\"earshot\", nonce=\"1.00\", uri=\"sip:x\", response=\"00\"\r\n";
    let (code, _) =
        udp_request(&sock, sip, &raw_invite(me, sip, "badauth", "application/sdp", GOOD_SDP, None, bad)).unwrap();
    assert_eq!(code, 401);
    // sipp answers the challenge (MD5, qop=auth) and the call goes through.
    let o = siprec_call(&server, sip, false, |s| s.auth = Some(("sbc".into(), "correct-horse-battery".into())));
    assert_two_parties(&o, 5000);
    assert_eq!(o.manifest.outcome.as_deref(), Some("completed"));
    let metrics = server.metrics();
    assert!(metric(&metrics, "earshot_sip_responses_total", &["code=\"401\""]) >= 3.0);
    assert_eq!(
        metric(&metrics, "earshot_errors_total", &["code=\"digest_failed\""]),
        1.0,
        "only the wrong credentials count as a failure"
    );
    assert!(server.log_shows("failed digest authentication", Duration::from_secs(10)));
}

/// Sends one SIP message over TLS with OpenSSL's client and returns the first response.
fn tls_request(addr: SocketAddr, msg: &str) -> String {
    use std::io::{Read, Write};
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-quiet", "-verify_quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl runs");
    child.stdin.as_mut().unwrap().write_all(msg.as_bytes()).unwrap();
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut b = [0u8; 4096];
        while let Ok(n) = out.read(&mut b) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&b[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            // A final response (skip 100 Trying).
            if let Some(pos) = text.find("\r\n\r\n") {
                if !text[..pos].starts_with("SIP/2.0 100") {
                    let _ = tx.send(text);
                    return;
                }
                buf.drain(..pos + 4);
            }
        }
    });
    let r = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    r
}

#[test]
fn sip_over_tls_answers_options_and_invites_from_a_real_tls_client() {
    require_tool("openssl");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let st = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let (server, _) = sip_server(&format!(
        "[sip.tls]\nlisten = \"127.0.0.1:0\"\ncert_path = {:?}\nkey_path = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    ));
    assert!(server.log_shows("SIP listening (tls)", Duration::from_secs(10)), "{}", server.log());
    let log = server.log();
    let tls: SocketAddr = log
        .lines()
        .find(|l| l.contains("SIP listening (tls)"))
        .and_then(|l| l.split("addr=").nth(1))
        .and_then(|a| a.split_whitespace().next()?.parse().ok())
        .expect("tls address");
    let opts = format!("OPTIONS sip:{tls};transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-tls1\r\nFrom: <sip:p@127.0.0.1>;tag=o\r\nTo: <sip:{tls}>\r\nCall-ID: tls-opt\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
    let r = tls_request(tls, &opts);
    assert!(r.starts_with("SIP/2.0 200"), "OPTIONS over TLS: {r:?}\n{}", server.log());
    let inv = raw_invite(
        "127.0.0.1:5999".parse().unwrap(),
        tls,
        "tls-inv",
        "application/sdp",
        GOOD_SDP,
        None,
        "X-Earshot-Campaign: tls\r\n",
    );
    let inv = String::from_utf8(inv).unwrap().replace("SIP/2.0/UDP", "SIP/2.0/TLS");
    let r = tls_request(tls, &inv);
    assert!(r.starts_with("SIP/2.0 200"), "INVITE over TLS: {r:?}\n{}", server.log());
    assert!(r.contains("m=audio"), "{r}");
    // No RTP follows: the call ends on the RTP timeout, recorded as such.
    let m = server.wait_call(SIP_TENANT, "tls", Duration::from_secs(20));
    assert_eq!(m.outcome.as_deref(), Some("timeout"));
}

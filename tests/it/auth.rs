//! Who may push a call: Twilio signatures, Bearer/Basic secrets, tenant resolution on
//! `/fork/pcm`, and the concurrent-call limit.

use std::time::Duration;

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use earshot_loadtest::{pcm, ws};

use crate::common::*;

const TWILIO_TOKEN: &str = "twilio-auth-token-for-tests";

fn start(campaign: &str, token: Option<&str>) -> String {
    let mut params = serde_json::json!({"campaign": campaign});
    if let Some(t) = token {
        params["token"] = t.into();
    }
    serde_json::json!({"event": "start", "start": {"streamSid": "MZa", "callSid": "CAa", "tracks": ["inbound"],
        "customParameters": params, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
    .to_string()
}

async fn short_twilio_call(
    url: &str,
    headers: &[(String, String)],
    campaign: &str,
    token: Option<&str>,
) -> Option<u16> {
    use base64::Engine;
    let payload = base64::engine::general_purpose::STANDARD.encode([0xFFu8; 160]);
    let mut c = ws::connect(url, headers, None).await.unwrap();
    let mut msgs = vec![start(campaign, token)];
    for chunk in 1..=5 {
        msgs.push(format!(r#"{{"event":"media","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{}","payload":"{payload}"}}}}"#, (chunk - 1) * 20));
    }
    msgs.push(r#"{"event":"dtmf","dtmf":{"track":"inbound_track","digit":"7"}}"#.into());
    msgs.push(r#"{"event":"stop","stop":{}}"#.into());
    for m in msgs {
        // A refused connection is closed by the server at once: sending may fail then.
        if c.send(Message::Text(m.into())).await.is_err() {
            break;
        }
    }
    ws::await_close(&mut c, Duration::from_secs(5)).await.code
}

#[test]
fn twilio_fork_accepts_a_valid_signature_or_bearer_and_refuses_a_bad_one() {
    let server = TestServer::start_with(
        &format!("[[tenants]]\nid = \"tw\"\nfork_secret = \"{SECRET}\"\ntwilio_auth_token = \"{TWILIO_TOKEN}\"\n"),
        &[],
    );
    let url = format!("{}/fork/twilio/tw", server.ws());
    // Twilio signs the wss:// URL it dialled (TLS terminated in front of us here).
    let signed = format!("wss://{}/fork/twilio/tw", server.addr);
    let sig = earshot::ingest::twilio::signature::compute(TWILIO_TOKEN, &signed);
    let rt = rt();
    let code = rt.block_on(short_twilio_call(&url, &[("x-twilio-signature".into(), sig)], "signed", None));
    assert_eq!(code, Some(1000));
    let m = server.wait_call("tw", "signed", Duration::from_secs(5));
    assert_eq!(m.outcome.as_deref(), Some("completed"));
    assert_eq!(m.dtmf.len(), 1);
    assert_eq!(m.dtmf[0].digit, "7");
    assert_eq!(m.stats.dtmf_events, 1);
    assert_eq!(server.audio(m.call_id).frames(), 5 * 160);

    let bad = earshot::ingest::twilio::signature::compute("some-other-token", &signed);
    let code = rt.block_on(short_twilio_call(&url, &[("x-twilio-signature".into(), bad)], "badsig", None));
    assert_eq!(code, Some(1008));

    let bearer = vec![("authorization".to_string(), format!("Bearer {SECRET}"))];
    assert_eq!(rt.block_on(short_twilio_call(&url, &bearer, "bearer", None)), Some(1000));
    let wrong = vec![("authorization".to_string(), "Bearer nope".to_string())];
    assert_eq!(rt.block_on(short_twilio_call(&url, &wrong, "wrongbearer", None)), Some(1008));
    // Unknown tenant: the same answer as a bad secret.
    let other = format!("{}/fork/twilio/nosuchtenant", server.ws());
    assert_eq!(rt.block_on(short_twilio_call(&other, &[], "unknown", Some(SECRET))), Some(1008));
    let names: Vec<_> = server.manifests("tw").into_iter().filter_map(|m| m.campaign).collect();
    assert!(!names.iter().any(|c| c == "badsig" || c == "wrongbearer"), "{names:?}");
}

#[test]
fn pcm_fork_finds_the_tenant_in_metadata_or_basic_user() {
    let server = TestServer::start();
    let (audio, _) = two_party_call(8000, 1.0);
    let rt = rt();
    let send = |meta: serde_json::Value, auth: String| {
        let script = pcm::render(&audio, meta);
        let url = format!("{}/fork/pcm", server.ws());
        rt.block_on(async move {
            let mut c = ws::connect(&url, &[("authorization".into(), auth)], None).await.unwrap();
            pcm::send(&mut c, &script, 32.0).await.unwrap().closing.code
        })
    };
    use base64::Engine;
    let basic = |user: &str, pw: &str| {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}")))
    };
    assert_eq!(
        send(serde_json::json!({"tenant": TENANT, "campaign": "meta-tenant"}), format!("Bearer {SECRET}")),
        Some(1000)
    );
    assert_eq!(send(serde_json::json!({"campaign": "basic-user"}), basic(TENANT, SECRET)), Some(1000));
    assert_eq!(send(serde_json::json!({"campaign": "no-tenant"}), format!("Bearer {SECRET}")), Some(1007));
    assert_eq!(send(serde_json::json!({"campaign": "bad-pw"}), basic(TENANT, "wrong")), Some(1008));
    server.wait_call(TENANT, "meta-tenant", Duration::from_secs(5));
    server.wait_call(TENANT, "basic-user", Duration::from_secs(5));
}

#[test]
fn calls_over_the_limit_are_told_to_try_again_later() {
    let server = TestServer::start_with("", &[("EARSHOT__LIMITS__MAX_CALLS", "1")]);
    let url = format!("{}/fork/twilio/{TENANT}", server.ws());
    let rt = rt();
    rt.block_on(async {
        let mut first = ws::connect(&url, &[], None).await.unwrap();
        first.send(Message::Text(start("first", Some(SECRET)).into())).await.unwrap();
        // Wait until the first call holds its slot.
        for _ in 0..100 {
            if metric(&server.metrics(), "earshot_calls_active", &[]) >= 1.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut second = ws::connect(&url, &[], None).await.unwrap();
        second.send(Message::Text(start("second", Some(SECRET)).into())).await.unwrap();
        assert_eq!(ws::await_close(&mut second, Duration::from_secs(5)).await.code, Some(1013));
        first.send(Message::Text(r#"{"event":"stop"}"#.into())).await.unwrap();
        assert_eq!(ws::await_close(&mut first, Duration::from_secs(5)).await.code, Some(1000));
        // The slot is free again once the first call's recording is finalised.
        for _ in 0..100 {
            if metric(&server.metrics(), "earshot_calls_active", &[]) == 0.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut third = ws::connect(&url, &[], None).await.unwrap();
        third.send(Message::Text(start("third", Some(SECRET)).into())).await.unwrap();
        third.send(Message::Text(r#"{"event":"stop"}"#.into())).await.unwrap();
        assert_eq!(ws::await_close(&mut third, Duration::from_secs(5)).await.code, Some(1000));
    });
    assert_eq!(metric(&server.metrics(), "earshot_errors_total", &["code=\"overloaded\""]), 1.0);
}

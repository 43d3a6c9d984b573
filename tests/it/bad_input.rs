//! Every kind of bad fork input gets its specific close code, never disturbs another
//! call running at the same time, and keeps the audio received before it.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use earshot_loadtest::audio::Audio;
use earshot_loadtest::{twilio, ws};

use crate::common::*;

#[derive(Debug, Clone, Copy)]
enum Bad {
    TwMalformedJson,
    TwUnknownEvent,
    TwBadBase64,
    TwWrongMediaFormat,
    TwMissingMediaFormat,
    TwFrameTooLarge,
    TwIdle,
    TwSecondStart,
    TwBinaryFrame,
    TwBadToken,
    TwMediaBeforeStart,
    PcmBinaryBeforeMetadata,
    PcmSampleRateOutOfRange,
    PcmMalformedMetadata,
    PcmNoAuth,
    PcmFrameTooLarge,
    PcmUnknownTextEvent,
}

struct Expect {
    close: u16,
    /// Manifest outcome when a call had started (audio before the error is kept).
    outcome: Option<&'static str>,
}

fn expect(b: Bad) -> Expect {
    use Bad::*;
    let e = |close, outcome| Expect { close, outcome };
    match b {
        TwMalformedJson => e(1007, Some("client_error:malformed_json")),
        TwUnknownEvent => e(1003, Some("client_error:unknown_event")),
        TwBadBase64 => e(1007, Some("client_error:bad_base64")),
        TwWrongMediaFormat => e(1003, None),
        TwMissingMediaFormat => e(1003, None),
        TwFrameTooLarge => e(1009, Some("client_error:frame_too_large")),
        TwIdle => e(4408, Some("timeout")),
        TwSecondStart => e(1002, Some("client_error:duplicate_start")),
        TwBinaryFrame => e(1003, Some("client_error:unexpected_frame")),
        TwBadToken => e(1008, None),
        TwMediaBeforeStart => e(1002, None),
        PcmBinaryBeforeMetadata => e(1003, None),
        PcmSampleRateOutOfRange => e(1007, None),
        PcmMalformedMetadata => e(1007, None),
        PcmNoAuth => e(1008, None),
        PcmFrameTooLarge => e(1009, Some("client_error:frame_too_large")),
        PcmUnknownTextEvent => e(1003, Some("client_error:unknown_event")),
    }
}

fn start_msg(campaign: &str, token: &str, encoding: &str) -> String {
    let fmt = if encoding.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::json!({"encoding": encoding, "sampleRate": 8000, "channels": 1})
    };
    let mut start = serde_json::json!({
        "streamSid": "MZbad", "callSid": "CAbad", "tracks": ["inbound", "outbound"],
        "customParameters": {"token": token, "campaign": campaign},
    });
    if !fmt.is_null() {
        start["mediaFormat"] = fmt;
    }
    serde_json::json!({"event": "start", "sequenceNumber": "1", "start": start, "streamSid": "MZbad"}).to_string()
}

fn media_msg(track: &str, chunk: usize) -> String {
    let payload = base64::engine::general_purpose::STANDARD.encode([0x55u8; 160]);
    serde_json::json!({"event": "media", "media": {"track": track, "chunk": chunk.to_string(),
        "timestamp": ((chunk - 1) * 20).to_string(), "payload": payload}, "streamSid": "MZbad"})
    .to_string()
}

const FRAMES_BEFORE_ERROR: usize = 10;

async fn run_case(base: &str, b: Bad) -> Option<u16> {
    use Bad::*;
    let campaign = format!("{b:?}");
    let twilio_url = format!("{base}/fork/twilio/{TENANT}");
    let pcm_url = format!("{base}/fork/pcm/{TENANT}");
    let auth = vec![("authorization".to_string(), format!("Bearer {SECRET}"))];
    let text = |s: String| Message::Text(s.into());
    let mut conn = match b {
        PcmNoAuth => ws::connect(&pcm_url, &[], None).await.unwrap(),
        p if format!("{p:?}").starts_with("Pcm") => ws::connect(&pcm_url, &auth, None).await.unwrap(),
        _ => ws::connect(&twilio_url, &[], None).await.unwrap(),
    };
    let is_twilio = format!("{b:?}").starts_with("Tw");
    let good_start = matches!(
        b,
        TwMalformedJson | TwUnknownEvent | TwBadBase64 | TwFrameTooLarge | TwIdle | TwSecondStart | TwBinaryFrame
    );
    if is_twilio && good_start {
        conn.send(text(start_msg(&campaign, SECRET, "audio/x-mulaw"))).await.unwrap();
        for c in 1..=FRAMES_BEFORE_ERROR {
            conn.feed(text(media_msg("inbound", c))).await.unwrap();
            conn.feed(text(media_msg("outbound", c))).await.unwrap();
        }
        conn.flush().await.unwrap();
    }
    let pcm_meta = serde_json::json!({"campaign": campaign, "sample_rate": 8000, "channels": 2}).to_string();
    let pcm_started = matches!(b, PcmFrameTooLarge | PcmUnknownTextEvent);
    if pcm_started {
        conn.send(text(pcm_meta.clone())).await.unwrap();
        for _ in 0..FRAMES_BEFORE_ERROR {
            conn.send(Message::Binary(vec![1u8; 640].into())).await.unwrap();
        }
    }
    let bad = match b {
        TwMalformedJson => text("{\"event\": \"media\", oops".into()),
        TwUnknownEvent => text(r#"{"event":"party","streamSid":"MZbad"}"#.into()),
        TwBadBase64 => text(r#"{"event":"media","media":{"track":"inbound","chunk":"11","timestamp":"200","payload":"@@not base64@@"}}"#.into()),
        TwWrongMediaFormat => text(start_msg(&campaign, SECRET, "audio/opus")),
        TwMissingMediaFormat => text(start_msg(&campaign, SECRET, "")),
        TwFrameTooLarge | PcmFrameTooLarge => text(format!("{{\"event\":\"mark\",\"pad\":\"{}\"}}", "x".repeat(70 * 1024))),
        TwIdle => Message::Ping(vec![].into()), // pings do not count as media: still idle
        TwSecondStart => text(start_msg(&campaign, SECRET, "audio/x-mulaw")),
        TwBinaryFrame => Message::Binary(vec![0u8; 160].into()),
        TwBadToken => text(start_msg(&campaign, "wrong-secret", "audio/x-mulaw")),
        TwMediaBeforeStart => text(media_msg("inbound", 1)),
        PcmBinaryBeforeMetadata => Message::Binary(vec![0u8; 640].into()),
        PcmSampleRateOutOfRange => text(r#"{"sample_rate": 96000, "channels": 1}"#.into()),
        PcmMalformedMetadata => text("not json at all".into()),
        PcmNoAuth => text(pcm_meta),
        PcmUnknownTextEvent => text(r#"{"event":"dance"}"#.into()),
    };
    conn.send(bad).await.unwrap();
    ws::await_close(&mut conn, Duration::from_secs(8)).await.code
}

#[test]
fn each_bad_input_gets_its_close_code_keeps_audio_and_spares_other_calls() {
    let server = TestServer::start();
    let base = server.ws();
    // A good call at real-time pace runs the whole time.
    let (audio, _) = two_party_call(8000, 1.0);
    let long = Audio {
        sample_rate: 8000,
        channels: audio.channels.iter().map(|c| c.iter().copied().cycle().take(8000 * 14).collect()).collect(),
    };
    let mut params = BTreeMap::new();
    params.insert("token".to_string(), SECRET.to_string());
    params.insert("campaign".to_string(), "good-neighbour".to_string());
    let script =
        twilio::render(&long, &twilio::TwilioOptions { custom_parameters: params, ..Default::default() }).unwrap();
    let rt = rt();
    let good_url = format!("{base}/fork/twilio/{TENANT}");
    let good = rt.spawn(async move {
        let mut conn = ws::connect(&good_url, &[], None).await.unwrap();
        twilio::send(&mut conn, &script, 1.0).await.unwrap()
    });
    use Bad::*;
    let cases = [
        TwMalformedJson,
        TwUnknownEvent,
        TwBadBase64,
        TwWrongMediaFormat,
        TwMissingMediaFormat,
        TwFrameTooLarge,
        TwSecondStart,
        TwBinaryFrame,
        TwBadToken,
        TwMediaBeforeStart,
        PcmBinaryBeforeMetadata,
        PcmSampleRateOutOfRange,
        PcmMalformedMetadata,
        PcmNoAuth,
        PcmFrameTooLarge,
        PcmUnknownTextEvent,
        TwIdle,
    ];
    for b in cases {
        let code = rt.block_on(run_case(&base, b));
        let e = expect(b);
        assert_eq!(code, Some(e.close), "{b:?}: close code; log:\n{}", server.log());
        let campaign = format!("{b:?}");
        match e.outcome {
            Some(outcome) => {
                let m = server.wait_call(TENANT, &campaign, Duration::from_secs(10));
                assert_eq!(m.outcome.as_deref(), Some(outcome), "{b:?}");
                let rec = server.audio(m.call_id);
                // Everything received before the error is in the recording: 10 Twilio frames
                // per track, or 10 PCM frames of 160 stereo samples.
                let want = FRAMES_BEFORE_ERROR * 160;
                assert_eq!(rec.frames(), want, "{b:?}: frames kept");
            }
            None => {
                assert!(
                    server.manifests(TENANT).iter().all(|m| m.campaign.as_deref() != Some(campaign.as_str())),
                    "{b:?}: no call may start"
                );
            }
        }
    }
    let report = rt.block_on(good).unwrap();
    assert_eq!(report.closing.code, Some(1000), "the concurrent good call was disturbed: {:?}", report.closing);
    assert!(!report.closed_early);
    let m = server.wait_call(TENANT, "good-neighbour", Duration::from_secs(10));
    assert_eq!(m.outcome.as_deref(), Some("completed"));
    assert_eq!(server.audio(m.call_id).frames(), 8000 * 14);
    // Server still healthy, errors counted by code.
    assert_eq!(server.http_get("/healthz").0, 200);
    let metrics = server.metrics();
    for code in [
        "malformed_json",
        "unknown_event",
        "bad_base64",
        "unsupported_media_format",
        "frame_too_large",
        "idle_timeout",
        "duplicate_start",
        "unexpected_frame",
        "unauthorized",
        "before_start",
        "binary_before_metadata",
        "sample_rate_out_of_range",
    ] {
        let n = metric(&metrics, "earshot_errors_total", &[&format!("code=\"{code}\""), "stage=\"ingest\""]);
        assert!(n >= 1.0, "earshot_errors_total{{code={code}}} = {n}");
    }
}

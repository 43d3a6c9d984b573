//! Good-path forks: recordings come back complete, aligned and sample-exact.

use std::collections::BTreeMap;
use std::time::Duration;

use earshot::media::g711::decode_ulaw;
use earshot_loadtest::audio::{encode_ulaw, Audio};
use earshot_loadtest::{pcm, twilio, ws};

use crate::common::*;

fn twilio_params(campaign: &str) -> BTreeMap<String, String> {
    let mut p = BTreeMap::new();
    p.insert("token".into(), SECRET.into());
    p.insert("campaign".into(), campaign.into());
    p.insert("rep".into(), "alice".into());
    p
}

#[test]
fn twilio_two_track_call_with_shuffled_frames_is_recorded_aligned_and_exact() {
    let server = TestServer::start();
    let (audio, marker) = two_party_call(8000, 2.0);
    let opts = twilio::TwilioOptions {
        custom_parameters: twilio_params("shuffled"),
        rep_track: "inbound",
        shuffle_window: 8, // 4 frames per track, inside the 10-frame reorder window
        seed: 7,
        ..Default::default()
    };
    let script = twilio::render(&audio, &opts).unwrap();
    let report = rt().block_on(async {
        let mut conn = ws::connect(&format!("{}/fork/twilio/{TENANT}", server.ws()), &[], None).await.unwrap();
        twilio::send(&mut conn, &script, 4.0).await.unwrap()
    });
    assert_eq!(report.closing.code, Some(1000), "{:?}", report.closing);
    let m = server.wait_call(TENANT, "shuffled", Duration::from_secs(10));
    assert_eq!(m.outcome.as_deref(), Some("completed"));
    assert_eq!(m.rep_id.as_deref(), Some("alice"));
    assert_eq!(m.source_ids.get("twilio_call_sid").map(String::as_str), Some(opts.call_sid.as_str()));
    assert!(m.stats.frames_reordered > 0, "the shuffle must have reordered frames: {:?}", m.stats);
    assert_eq!(m.stats.frames_gap_filled, 0);
    assert_eq!(m.stats.frames_received, script.media_messages as u64);

    let rec = server.audio(m.call_id);
    assert_eq!((rec.channels, rec.sample_rate), (2, 8000));
    let sent_ms = script.ticks.len() as i64 * 20;
    assert!((rec.duration_ms() as i64 - sent_ms).abs() <= 40, "recorded {} ms, sent {sent_ms} ms", rec.duration_ms());

    // Decoded samples equal what was sent, channel by channel (rep left).
    for ch in 0..2 {
        let expected: Vec<i16> = audio.channels[ch].iter().map(|&s| decode_ulaw(encode_ulaw(s))).collect();
        let got = rec.channel(ch);
        assert_eq!(&got[..expected.len()], &expected[..], "channel {ch} differs");
    }
    // The marker lands on the same sample in both channels (±1 frame = 160 samples).
    let l = onset(&rec.channel(0), marker - 100, 30000).unwrap();
    let r = onset(&rec.channel(1), marker - 100, 30000).unwrap();
    assert!(l.abs_diff(r) <= 160, "marker at {l} vs {r}");
    assert!(l.abs_diff(marker) <= 160, "marker at {l}, sent at {marker}");
}

#[test]
fn twilio_single_track_stream_is_recorded_mono() {
    let server = TestServer::start();
    let (audio, _) = two_party_call(8000, 1.0);
    let mono = Audio { sample_rate: 8000, channels: vec![audio.channels[0].clone()] };
    let script = twilio::render(
        &mono,
        &twilio::TwilioOptions { custom_parameters: twilio_params("mono"), ..Default::default() },
    )
    .unwrap();
    let report = rt().block_on(async {
        let mut conn = ws::connect(&format!("{}/fork/twilio/{TENANT}", server.ws()), &[], None).await.unwrap();
        twilio::send(&mut conn, &script, 8.0).await.unwrap()
    });
    assert_eq!(report.closing.code, Some(1000));
    let m = server.wait_call(TENANT, "mono", Duration::from_secs(10));
    let rec = server.audio(m.call_id);
    assert_eq!(rec.channels, 1);
    let expected: Vec<i16> = mono.channels[0].iter().map(|&s| decode_ulaw(encode_ulaw(s))).collect();
    assert_eq!(&rec.samples[..expected.len()], &expected[..]);
}

fn pcm_roundtrip(rate: u32, stereo: bool, rep_channel: u8, campaign: &str) {
    let server = TestServer::start();
    let (audio, marker) = two_party_call(rate, 1.5);
    let audio = if stereo { audio } else { Audio { sample_rate: rate, channels: vec![audio.channels[0].clone()] } };
    // If the sender says the rep is on the right, swap what it sends.
    let sent = if stereo && rep_channel == 1 {
        Audio { sample_rate: rate, channels: vec![audio.channels[1].clone(), audio.channels[0].clone()] }
    } else {
        audio.clone()
    };
    let meta = serde_json::json!({
        "callSid": format!("ext-{campaign}"),
        "campaign": campaign,
        "rep": "bob",
        "repChannel": rep_channel,
        "from": "+15551230000",
    });
    let script = pcm::render(&sent, meta);
    let report = rt().block_on(async {
        let url = format!("{}/fork/pcm/{TENANT}", server.ws());
        let mut conn =
            ws::connect(&url, &[("authorization".into(), format!("Bearer {SECRET}"))], Some("audio.jambonz.org"))
                .await
                .unwrap();
        pcm::send(&mut conn, &script, 4.0).await.unwrap()
    });
    assert_eq!(report.closing.code, Some(1000), "{:?}", report.closing);
    let m = server.wait_call(TENANT, campaign, Duration::from_secs(10));
    assert_eq!(m.outcome.as_deref(), Some("completed"));
    assert_eq!(m.source_ids.get("pcm_call_id").map(String::as_str), Some(format!("ext-{campaign}").as_str()));
    assert_eq!(m.participants.iter().find_map(|p| p.phone_e164.clone()).as_deref(), Some("+15551230000"));
    let rec = server.audio(m.call_id);
    assert_eq!(rec.sample_rate, rate);
    assert_eq!(rec.channels as usize, audio.channels.len());
    let sent_ms = audio.frames() as i64 * 1000 / rate as i64;
    assert!((rec.duration_ms() as i64 - sent_ms).abs() <= 40);
    for (ch, expected) in audio.channels.iter().enumerate() {
        assert_eq!(&rec.channel(ch)[..], &expected[..], "channel {ch}");
    }
    if stereo {
        let l = onset(&rec.channel(0), marker - 100, 30000).unwrap();
        let r = onset(&rec.channel(1), marker - 100, 30000).unwrap();
        assert!(l.abs_diff(r) <= rate as usize / 50, "marker {l} vs {r}");
    }
}

#[test]
fn pcm_stereo_fork_at_16khz_is_recorded_exactly() {
    pcm_roundtrip(16000, true, 0, "pcm16k");
}

#[test]
fn pcm_stereo_fork_with_rep_on_the_right_lands_rep_left() {
    pcm_roundtrip(16000, true, 1, "pcm16k-swapped");
}

#[test]
fn pcm_mono_fork_at_8khz_is_recorded_exactly() {
    pcm_roundtrip(8000, false, 0, "pcm8k-mono");
}

#[test]
fn tenant_with_recording_off_gets_a_manifest_but_no_audio() {
    let server = TestServer::start();
    let (audio, _) = two_party_call(8000, 1.0);
    let script = pcm::render(&audio, serde_json::json!({"campaign": "norec"}));
    rt().block_on(async {
        let url = format!("{}/fork/pcm/norec", server.ws());
        let mut conn = ws::connect(&url, &[("authorization".into(), format!("Bearer {SECRET}"))], None).await.unwrap();
        pcm::send(&mut conn, &script, 16.0).await.unwrap()
    });
    let m = server.wait_call("norec", "norec", Duration::from_secs(10));
    assert!(!m.recording);
    assert!(m.audio.is_none());
    assert!(matches!(server.store().audio(m.call_id), Err(earshot::store::objects::StorageError::NoObject(..))));
}

//! Twilio Media Streams sender: `connected`, `start`, paced `media` for one or two
//! tracks (20 ms µ-law frames, numbers as JSON strings, as Twilio sends them), `stop`.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use futures_util::SinkExt;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::audio::{encode_ulaw, Audio};
use crate::ws::{self, Closing};

pub const FRAME_MS: u64 = 20;
const FRAME_SAMPLES: usize = 160;

#[derive(Debug, Clone)]
pub struct TwilioOptions {
    pub stream_sid: String,
    pub call_sid: String,
    /// Sent in `start.customParameters` (Twilio's way to carry `token`, `campaign`, `rep`).
    pub custom_parameters: BTreeMap<String, String>,
    /// Which Twilio track carries the audio's channel 0 (the rep).
    pub rep_track: &'static str,
    /// Shuffle media messages within windows of this many messages (0 = in order).
    pub shuffle_window: usize,
    pub seed: u64,
}

impl Default for TwilioOptions {
    fn default() -> Self {
        Self {
            stream_sid: "MZ00000000000000000000000000000000".into(),
            call_sid: "CA00000000000000000000000000000000".into(),
            custom_parameters: BTreeMap::new(),
            rep_track: "inbound",
            shuffle_window: 0,
            seed: 1,
        }
    }
}

/// A whole stream, rendered once (a load test shares it between many calls).
#[derive(Debug, Clone)]
pub struct TwilioScript {
    pub connected: Utf8Bytes,
    pub start: Utf8Bytes,
    /// Media messages grouped per 20 ms tick, in the order they are sent.
    pub ticks: Vec<Vec<Utf8Bytes>>,
    pub stop: Utf8Bytes,
    pub media_messages: usize,
}

pub fn render(audio: &Audio, opts: &TwilioOptions) -> anyhow::Result<TwilioScript> {
    let audio = audio.resampled(8000)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let other = if opts.rep_track == "inbound" { "outbound" } else { "inbound" };
    let tracks: Vec<&str> = if audio.channels.len() == 2 { vec![opts.rep_track, other] } else { vec!["inbound"] };
    let mut params = opts.custom_parameters.clone();
    if tracks.len() == 2 {
        params.entry("rep_track".into()).or_insert_with(|| opts.rep_track.to_string());
    }
    let mut seq = 1u64;
    let connected = serde_json::json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}).to_string();
    seq += 1;
    let start = serde_json::json!({
        "event": "start",
        "sequenceNumber": seq.to_string(),
        "start": {
            "accountSid": "AC00000000000000000000000000000000",
            "streamSid": opts.stream_sid,
            "callSid": opts.call_sid,
            "tracks": tracks,
            "customParameters": params,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
        "streamSid": opts.stream_sid,
    })
    .to_string();
    let n_frames = audio.frames().div_ceil(FRAME_SAMPLES);
    let mut flat: Vec<String> = Vec::with_capacity(n_frames * tracks.len());
    for f in 0..n_frames {
        for (ch, track) in tracks.iter().enumerate() {
            seq += 1;
            let samples = &audio.channels[ch];
            let mut payload: Vec<u8> =
                samples.iter().skip(f * FRAME_SAMPLES).take(FRAME_SAMPLES).map(|&s| encode_ulaw(s)).collect();
            payload.resize(FRAME_SAMPLES, 0xFF);
            flat.push(
                serde_json::json!({
                    "event": "media",
                    "sequenceNumber": seq.to_string(),
                    "media": {
                        "track": track,
                        "chunk": (f + 1).to_string(),
                        "timestamp": (f as u64 * FRAME_MS).to_string(),
                        "payload": b64.encode(&payload),
                    },
                    "streamSid": opts.stream_sid,
                })
                .to_string(),
            );
        }
    }
    if opts.shuffle_window > 1 {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(opts.seed);
        for w in flat.chunks_mut(opts.shuffle_window) {
            w.shuffle(&mut rng);
        }
    }
    let media_messages = flat.len();
    let per_tick = tracks.len();
    let mut ticks = Vec::with_capacity(n_frames);
    let mut it = flat.into_iter().map(Utf8Bytes::from);
    loop {
        let tick: Vec<Utf8Bytes> = it.by_ref().take(per_tick).collect();
        if tick.is_empty() {
            break;
        }
        ticks.push(tick);
    }
    seq += 1;
    let stop = serde_json::json!({
        "event": "stop",
        "sequenceNumber": seq.to_string(),
        "stop": {"accountSid": "AC00000000000000000000000000000000", "callSid": opts.call_sid},
        "streamSid": opts.stream_sid,
    })
    .to_string();
    Ok(TwilioScript { connected: connected.into(), start: start.into(), ticks, stop: stop.into(), media_messages })
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SendReport {
    pub media_sent: u64,
    pub closing: Closing,
    /// The server closed before we finished sending.
    pub closed_early: bool,
    /// Worst lateness of a send tick behind its real-time schedule (sender overloaded).
    pub max_lag_ms: u64,
}

/// Streams `script` over `ws` at real-time pace × `speed`, then `stop`, then waits for close.
pub async fn send(ws: &mut ws::Ws, script: &TwilioScript, speed: f64) -> anyhow::Result<SendReport> {
    let mut report = SendReport::default();
    ws.feed(Message::Text(script.connected.clone())).await?;
    ws.send(Message::Text(script.start.clone())).await?;
    let tick = Duration::from_secs_f64(FRAME_MS as f64 / 1000.0 / speed.max(0.001));
    let t0 = tokio::time::Instant::now();
    for (k, msgs) in script.ticks.iter().enumerate() {
        if let Some(c) = ws::poll_close(ws) {
            report.closing = c;
            report.closed_early = true;
            return Ok(report);
        }
        for m in msgs {
            ws.feed(Message::Text(m.clone())).await?;
            report.media_sent += 1;
        }
        ws.flush().await?;
        let due = t0 + tick * (k as u32 + 1);
        let now = tokio::time::Instant::now();
        if now > due {
            report.max_lag_ms = report.max_lag_ms.max((now - due).as_millis() as u64);
        }
        tokio::time::sleep_until(due).await;
    }
    ws.send(Message::Text(script.stop.clone())).await?;
    report.closing = ws::await_close(ws, Duration::from_secs(10)).await;
    Ok(report)
}

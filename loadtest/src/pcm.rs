//! Raw PCM fork sender (jambonz `listen` / mod_audio_fork style): a JSON metadata text
//! frame, then 20 ms binary frames of interleaved 16-bit little-endian samples.

use std::time::Duration;

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::audio::Audio;
use crate::twilio::SendReport;
use crate::ws;

pub const FRAME_MS: u64 = 20;

#[derive(Debug, Clone)]
pub struct PcmScript {
    pub metadata: String,
    pub frames: Vec<Bytes>,
}

/// `metadata` gets `sample_rate` and `channels` filled in from the audio.
pub fn render(audio: &Audio, mut metadata: serde_json::Value) -> PcmScript {
    metadata["sample_rate"] = audio.sample_rate.into();
    metadata["channels"] = audio.channels.len().into();
    let per_frame = (audio.sample_rate as u64 * FRAME_MS / 1000) as usize;
    let n = audio.frames();
    let mut frames = Vec::new();
    let mut i = 0;
    while i < n {
        let end = (i + per_frame).min(n);
        let mut buf = Vec::with_capacity((end - i) * 2 * audio.channels.len());
        for f in i..end {
            for ch in &audio.channels {
                buf.extend_from_slice(&ch[f].to_le_bytes());
            }
        }
        frames.push(Bytes::from(buf));
        i = end;
    }
    PcmScript { metadata: metadata.to_string(), frames }
}

pub async fn send(ws: &mut ws::Ws, script: &PcmScript, speed: f64) -> anyhow::Result<SendReport> {
    let mut report = SendReport::default();
    ws.send(Message::Text(script.metadata.clone().into())).await?;
    let tick = Duration::from_secs_f64(FRAME_MS as f64 / 1000.0 / speed.max(0.001));
    let t0 = tokio::time::Instant::now();
    for (k, frame) in script.frames.iter().enumerate() {
        if let Some(c) = ws::poll_close(ws) {
            report.closing = c;
            report.closed_early = true;
            return Ok(report);
        }
        ws.send(Message::Binary(frame.clone())).await?;
        report.media_sent += 1;
        tokio::time::sleep_until(t0 + tick * (k as u32 + 1)).await;
    }
    ws.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "done".into() }))).await?;
    report.closing = ws::await_close(ws, Duration::from_secs(10)).await;
    Ok(report)
}

//! Runs a whole recording through the live streaming policy, channel by channel, with
//! decodes done inline: what `earshot transcribe FILE` prints, and the harness tests
//! and benchmarks use. Offsets are exact (the policy's sample clock); `decode_ms` is the
//! wall time each decode took on this machine.

use std::time::Instant;

use serde::Serialize;

use super::engine::Model;
use super::stream_policy::{PolicySettings, StreamPolicy, TranscriptUpdate};
use super::ModelError;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TranscriptLine {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub channel: String,
    pub utterance_id: String,
    pub text: String,
    pub stable: String,
    pub unstable: String,
    pub start_ms: u64,
    pub end_ms: u64,
    /// Audio position (ms) when the decode that produced this line was requested.
    pub at_ms: u64,
    pub decode_ms: u64,
}

/// `channels[i]` is 16 kHz mono audio of channel `names[i]`.
pub fn transcribe_channels(
    model: &Model,
    channels: &[Vec<f32>],
    names: &[&str],
    settings: PolicySettings,
    language: &str,
) -> Result<Vec<TranscriptLine>, ModelError> {
    let mut state = model.new_state()?;
    let mut out = Vec::new();
    for (ch, audio) in channels.iter().enumerate() {
        let name = names.get(ch).copied().unwrap_or("other");
        let mut policy = StreamPolicy::new(settings);
        let mut queue = Vec::new();
        let step = 320;
        let mut pos = 0;
        loop {
            if pos < audio.len() {
                let end = (pos + step).min(audio.len());
                queue.extend(policy.push_audio(&audio[pos..end]));
                pos = end;
            } else {
                queue.extend(policy.flush());
            }
            while let Some(req) = (!queue.is_empty()).then(|| queue.remove(0)) {
                let t0 = Instant::now();
                let slice = &audio[req.start as usize..(req.end as usize).min(audio.len())];
                let text = model.decode_utterance(&mut state, slice, &req.prompt, language)?;
                let decode_ms = t0.elapsed().as_millis() as u64;
                let (update, next) = policy.on_result(&req, &text);
                queue.extend(next);
                let at_ms = policy.position() * 1000 / 16000;
                if let Some(u) = update {
                    out.push(line(name, u, at_ms, decode_ms));
                }
            }
            if pos >= audio.len() {
                break;
            }
        }
    }
    Ok(out)
}

fn line(channel: &str, u: TranscriptUpdate, at_ms: u64, decode_ms: u64) -> TranscriptLine {
    match u {
        TranscriptUpdate::Partial { utterance, stable, unstable, start_ms, end_ms } => TranscriptLine {
            kind: "transcript.partial",
            channel: channel.to_string(),
            utterance_id: format!("{channel}-{utterance}"),
            text: format!("{stable} {unstable}").trim().to_string(),
            stable,
            unstable,
            start_ms,
            end_ms,
            at_ms,
            decode_ms,
        },
        TranscriptUpdate::Final { utterance, text, start_ms, end_ms } => TranscriptLine {
            kind: "transcript.final",
            channel: channel.to_string(),
            utterance_id: format!("{channel}-{utterance}"),
            stable: text.clone(),
            text,
            unstable: String::new(),
            start_ms,
            end_ms,
            at_ms,
            decode_ms,
        },
    }
}

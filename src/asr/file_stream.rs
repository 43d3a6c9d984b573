//! Runs a whole recording through the live streaming policy, channel by channel, with
//! decodes done inline: what `earshot transcribe FILE` prints, and the harness tests
//! and benchmarks use. Offsets are exact (the policy's sample clock); `decode_ms` is the
//! wall time each decode took on this machine.

use std::time::Instant;

use serde::Serialize;

use crate::asr::engine::Model;
use crate::asr::stream_policy::{PolicySettings, StreamPolicy};
use crate::asr::ModelError;
use crate::call::Role;
use crate::events::TranscriptPayload;

/// One printed line: the event type and payload, plus where in the audio the decode
/// was requested and how long it took.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TranscriptLine {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(flatten)]
    pub payload: TranscriptPayload,
    pub at_ms: u64,
    pub decode_ms: u64,
}

/// `channels[i]` is 16 kHz mono audio of channel `roles[i]`.
pub fn transcribe_channels(
    model: &Model,
    channels: &[Vec<f32>],
    roles: &[Role],
    settings: PolicySettings,
    language: &str,
) -> Result<Vec<TranscriptLine>, ModelError> {
    let mut state = model.new_state()?;
    let mut out = Vec::new();
    for (ch, audio) in channels.iter().enumerate() {
        let role = roles.get(ch).copied().unwrap_or(Role::Other);
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
            for u in policy.take_updates() {
                let at_ms = policy.position() * 1000 / 16000;
                out.push(TranscriptLine {
                    kind: u.to_event(role).type_name(),
                    payload: u.to_payload(role),
                    at_ms,
                    decode_ms: 0,
                });
            }
            while let Some(req) = (!queue.is_empty()).then(|| queue.remove(0)) {
                let t0 = Instant::now();
                let slice = &audio[req.start as usize..(req.end as usize).min(audio.len())];
                let hyp = model.decode_window(&mut state, slice, &req.prompt, language, None)?;
                let decode_ms = t0.elapsed().as_millis() as u64;
                let (updates, next) = policy.on_result(&req, &hyp);
                queue.extend(next);
                let at_ms = policy.position() * 1000 / 16000;
                for u in updates {
                    let kind = u.to_event(role).type_name();
                    out.push(TranscriptLine { kind, payload: u.to_payload(role), at_ms, decode_ms });
                }
            }
            if pos >= audio.len() {
                break;
            }
        }
    }
    Ok(out)
}

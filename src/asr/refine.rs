//! Post-call refinement (optional per tenant): when the ASR pool has nothing live to do,
//! a finished call's recording is transcribed again offline, whole channel at once with
//! beam search (better than live, greedy, utterance-by-utterance decoding), and replaces
//! `transcript.json`; the live one is kept as `transcript.live.json`. A refinement gives
//! way to live work at once (whisper.cpp's abort callback) and is retried later.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde::Serialize;

use crate::asr::engine::Model;
use crate::asr::{guard, ModelError};
use crate::call::{CallId, Role};

#[derive(Debug, Clone)]
pub struct RefineTask {
    pub call_id: CallId,
    pub tenant: String,
    pub dir: PathBuf,
    pub roles: Vec<Role>,
    pub model: usize,
    pub model_name: String,
    pub language: String,
    pub attempts: u32,
    /// Where the live pass heard speech (channel, start ms, end ms), finals and shed
    /// gaps: refinement decodes these regions, merged into chunks of up to 28 s, so
    /// offsets stay right and silence is never decoded.
    pub spans: Vec<(Role, u64, u64)>,
    /// Keeps the call in the spool (not uploaded) until the refinement is done.
    pub seal: Option<crate::store::uploader::Seal>,
    /// Masks card numbers and the tenant's patterns in the refined text.
    pub redactor: std::sync::Arc<crate::call::redact::Redactor>,
}

/// Merges sorted spans into decode windows of at most `max_ms` (a longer span is kept whole).
fn chunks(mut spans: Vec<(u64, u64)>, max_ms: u64) -> Vec<(u64, u64)> {
    spans.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (a, b) in spans {
        match out.last_mut() {
            Some(last) if b.max(last.1) - last.0 <= max_ms => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

#[derive(Debug, Clone, Serialize)]
struct Segment {
    channel: Role,
    utterance_id: String,
    text: String,
    start_ms: u64,
    end_ms: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io { path: path.to_path_buf(), source }
}

/// Reads the call's recording, transcribes each channel, writes the refined transcript.
pub fn refine(
    task: &RefineTask,
    model: &Model,
    state: &mut whisper_rs::WhisperState,
    beam_size: u32,
    abort: &AtomicBool,
) -> Result<usize, ModelError> {
    let wav = task.dir.join("audio.wav");
    let audio = earshot_loadtest::audio::Audio::load_wav(&wav)
        .and_then(|a| a.resampled(16000))
        .map_err(|e| ModelError::InFile { path: wav.clone(), detail: e.to_string() })?;
    let mut segments = Vec::new();
    for (ch, samples) in audio.channels.iter().enumerate() {
        let role = task.roles.get(ch).copied().unwrap_or(Role::Other);
        let pcm: Vec<f32> = samples.iter().map(|&s| s as f32 / 32768.0).collect();
        let name = match role {
            Role::Rep => "rep",
            Role::Customer => "customer",
            Role::Other => "other",
        };
        let spans = task.spans.iter().filter(|(r, _, _)| *r == role).map(|&(_, a, b)| (a, b)).collect();
        let mut n = 0;
        for (a, b) in chunks(spans, 28_000) {
            // A little context each side; whisper.cpp wants at least a second.
            let from = (a.saturating_sub(200) * 16) as usize;
            let to = (((b + 300) * 16) as usize).max(from + 16_000).min(pcm.len());
            if from >= to {
                continue;
            }
            let offset = from as u64 / 16;
            for seg in model.transcribe_with(state, &pcm[from..to], &task.language, Some(beam_size), Some(abort))? {
                let text = guard::clean(&seg.text);
                if text.is_empty() || seg.no_speech_prob > 0.8 {
                    continue;
                }
                n += 1;
                segments.push(Segment {
                    channel: role,
                    utterance_id: format!("{name}-r{n}"),
                    text,
                    start_ms: offset + seg.start_ms,
                    end_ms: (offset + seg.end_ms).min(b + 300),
                });
            }
        }
    }
    segments.sort_by_key(|s| (s.start_ms, s.end_ms));
    for s in &mut segments {
        if let std::borrow::Cow::Owned(m) = task.redactor.apply(&s.text) {
            s.text = m;
        }
    }
    let json = serde_json::json!({
        "version": 1,
        "call_id": task.call_id,
        "tenant": task.tenant,
        "source": "refined",
        "refined": { "model": task.model_name, "beam_size": beam_size },
        "segments": segments,
    });
    let txt: String = segments
        .iter()
        .map(|s| {
            let who = match s.channel {
                Role::Rep => "Rep",
                Role::Customer => "Customer",
                Role::Other => "Speaker",
            };
            format!("[{:02}:{:04.1}] {who}: {}\n", s.start_ms / 60_000, (s.start_ms % 60_000) as f64 / 1000.0, s.text)
        })
        .collect();
    let txt_path = task.dir.join("transcript.txt");
    std::fs::write(&txt_path, txt).map_err(io(&txt_path))?;
    // The text first: once the refined transcript.json exists, both are complete.
    let live = task.dir.join("transcript.json");
    let kept = task.dir.join("transcript.live.json");
    if live.exists() && !kept.exists() {
        // A copy, so there is always a transcript.json for readers.
        std::fs::copy(&live, &kept).map_err(io(&kept))?;
    }
    let tmp = task.dir.join("transcript.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&json).expect("plain data")).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &live).map_err(io(&live))?;
    Ok(segments.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_merge_into_bounded_windows() {
        assert_eq!(chunks(vec![(5_000, 7_000), (0, 2_000), (9_000, 12_000)], 28_000), vec![(0, 12_000)]);
        assert_eq!(
            chunks(vec![(0, 20_000), (25_000, 30_000), (31_000, 40_000)], 28_000),
            vec![(0, 20_000), (25_000, 40_000)]
        );
        assert_eq!(chunks(vec![(0, 40_000)], 28_000), vec![(0, 40_000)]);
        assert!(chunks(vec![], 28_000).is_empty());
    }
}

//! whisper.cpp through whisper-rs: one loaded model shared by worker threads, one
//! `WhisperState` per worker. Callers run this on dedicated OS threads, never on the
//! async runtime.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use whisper_rs::{
    DtwMode, DtwModelPreset, DtwParameters, FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters,
    WhisperState,
};

use crate::asr::hypothesis::{Hypothesis, Word};
use crate::asr::{check_model_file, ModelError};

static LOGGING: Once = Once::new();

unsafe extern "C" fn abort_if_set(data: *mut std::ffi::c_void) -> bool {
    // SAFETY: `data` is the `&AtomicBool` passed in `decode_utterance`, alive for the call.
    let flag = unsafe { &*(data as *const AtomicBool) };
    flag.load(Ordering::Relaxed)
}

/// Runs one whisper.cpp inference; with `abort`, stops when another thread sets it.
fn run_full(
    state: &mut WhisperState,
    mut params: FullParams<'_, '_>,
    audio: &[f32],
    abort: Option<&AtomicBool>,
) -> Result<(), ModelError> {
    if let Some(flag) = abort {
        // SAFETY: the callback only reads the flag, which outlives `state.full` (borrowed
        // for this whole call); whisper.cpp calls it on this thread.
        unsafe {
            params.set_abort_callback(Some(abort_if_set));
            params.set_abort_callback_user_data(flag as *const AtomicBool as *mut std::ffi::c_void);
        }
    }
    let r = state.full(params, audio);
    if abort.is_some_and(|f| f.load(Ordering::Relaxed)) {
        return Err(ModelError::Aborted);
    }
    r.map_err(|e| ModelError::Inference(e.to_string()))
}

pub struct Model {
    ctx: WhisperContext,
    path: PathBuf,
}

/// The smallest encoder context a live decode gets (frames; 50 per second): measured on
/// real speech, shorter contexts make tiny/base decoders repeat and invent endings.
pub const MIN_AUDIO_CTX: i32 = 256;

/// The longest a word is taken to last (its start is not aligned, only its end).
const MAX_WORD_MS: u64 = 700;

fn push_word(words: &mut Vec<Word>, bytes: Vec<u8>, mut w: Word) {
    w.text = String::from_utf8_lossy(&bytes).trim().to_string();
    if !w.text.is_empty() {
        words.push(w);
    }
}

/// The alignment heads of the standard Whisper sizes (by their layer counts).
fn dtw_preset(h: &crate::asr::model::ggml::HParams) -> Option<DtwModelPreset> {
    let en = h.n_vocab < 51865;
    Some(match (h.n_audio_layer, h.n_text_layer) {
        (4, 4) if en => DtwModelPreset::TinyEn,
        (4, 4) => DtwModelPreset::Tiny,
        (6, 6) if en => DtwModelPreset::BaseEn,
        (6, 6) => DtwModelPreset::Base,
        (12, 12) if en => DtwModelPreset::SmallEn,
        (12, 12) => DtwModelPreset::Small,
        (24, 24) if en => DtwModelPreset::MediumEn,
        (24, 24) => DtwModelPreset::Medium,
        (32, 4) => DtwModelPreset::LargeV3Turbo,
        (32, 32) if h.n_mels == 128 => DtwModelPreset::LargeV3,
        (32, 32) => DtwModelPreset::LargeV2,
        _ => return None,
    })
}

/// A transcribed segment, times in ms from the start of the audio passed in.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start_ms: u64,
    pub end_ms: u64,
    pub text: String,
    pub no_speech_prob: f32,
}

impl Model {
    /// Validates the file, then loads it (whisper.cpp's own log goes to `tracing`).
    pub fn load(path: &Path) -> Result<Model, ModelError> {
        let summary = check_model_file(path)?;
        LOGGING.call_once(whisper_rs::install_logging_hooks);
        let mut params = WhisperContextParameters::default();
        if let Some(preset) = dtw_preset(&summary.hparams) {
            // Word times from the cross-attention alignment (DTW) rather than from
            // timestamp-token probabilities, which collapse to the window's end.
            params.dtw_parameters(DtwParameters {
                mode: DtwMode::ModelPreset { model_preset: preset },
                ..DtwParameters::default()
            });
        }
        let ctx = WhisperContext::new_with_params(path, params)
            .map_err(|e| ModelError::Load { path: path.to_path_buf(), detail: e.to_string() })?;
        Ok(Model { ctx, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the model knows languages other than English (and `auto` detection).
    pub fn is_multilingual(&self) -> bool {
        self.ctx.is_multilingual()
    }

    /// Greedy decoding on one thread (measured: two threads per inference collapse under
    /// contention), quiet.
    fn greedy_params(language: &str) -> FullParams<'_, '_> {
        Self::params(SamplingStrategy::Greedy { best_of: 1 }, language)
    }

    fn params(strategy: SamplingStrategy, language: &str) -> FullParams<'_, '_> {
        let mut params = FullParams::new(strategy);
        params.set_n_threads(1);
        params.set_language(Some(language));
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_special(false);
        params.set_print_timestamps(false);
        params
    }

    pub fn new_state(&self) -> Result<WhisperState, ModelError> {
        self.ctx.create_state().map_err(|e| ModelError::Inference(e.to_string()))
    }

    /// Decodes one window of a live channel (16 kHz mono) as a single segment with
    /// token times, the encoder's audio context trimmed to the audio (whisper.cpp: 50
    /// encoder frames per second) but never below `MIN_AUDIO_CTX` (very small contexts
    /// make the decoder repeat itself). `prompt`: the channel's committed text before the
    /// window. Greedy: a beam of 3 on windows with context cost a single call on one
    /// worker its lag budget (measured), and the window's context does what the beam did.
    /// `abort`: when another thread sets it, the decode stops early (whisper.cpp checks
    /// between graph steps) and `ModelError::Aborted` comes back.
    pub fn decode_window(
        &self,
        state: &mut WhisperState,
        audio: &[f32],
        prompt: &str,
        language: &str,
        abort: Option<&AtomicBool>,
    ) -> Result<Hypothesis, ModelError> {
        let secs = audio.len() as f32 / 16000.0;
        let audio_ctx = ((secs * 64.0).ceil() as i32 + 64).clamp(MIN_AUDIO_CTX, 1500);
        let mut params = Self::greedy_params(language);
        params.set_audio_ctx(audio_ctx);
        params.set_single_segment(true);
        params.set_no_context(true);
        params.set_suppress_blank(true);
        params.set_suppress_nst(true);
        params.set_token_timestamps(true);
        // Live decodes must take a bounded time. whisper.cpp retries a decode that fails
        // its quality checks at higher temperatures, five times by default (measured
        // here: 4-9 s for one 2 s utterance), and keeps the most random one when all
        // fail. No retries: the policy judges the result itself (no-speech probability,
        // log-probability, compression). And no more tokens than speech can hold (about
        // 3 words, 4-5 tokens, per second; a looping decoder stops there).
        params.set_temperature_inc(0.0);
        params.set_max_tokens((secs * 8.0).ceil() as i32 + 8);
        if !prompt.trim().is_empty() {
            params.set_initial_prompt(prompt.trim());
        }
        // whisper.cpp wants at least 1 s; pad short windows with silence.
        let mut padded;
        let input = if audio.len() < 16000 {
            padded = audio.to_vec();
            padded.resize(16000 + 1600, 0.0);
            &padded[..]
        } else {
            audio
        };
        run_full(state, params, input, abort)?;
        let eot = self.ctx.token_eot();
        let audio_ms = (audio.len() as u64 * 1000 / 16000).max(1);
        let mut hyp = Hypothesis { no_speech: 0.0, ..Hypothesis::default() };
        let (mut logprob, mut tokens) = (0.0f32, 0usize);
        for seg in state.as_iter() {
            hyp.no_speech = hyp.no_speech.max(seg.no_speech_probability());
            // Words from tokens: a token starting with a space starts a word; punctuation
            // joins the word before. With alignment heads (DTW) a token's aligned time
            // is where it ends (measured on jfk.wav and on speech at known offsets); a
            // word starts where the one before ended, and lasts at most `MAX_WORD_MS`.
            let mut parts: Vec<(Vec<u8>, u64, f32)> = Vec::new();
            for i in 0..seg.n_tokens() {
                let Some(tok) = seg.get_token(i) else { continue };
                let data = tok.token_data();
                if data.id >= eot {
                    continue; // timestamps and other special tokens
                }
                let at = |t: i64| (t.max(0) as u64 * 10).min(audio_ms);
                let end = if data.t_dtw >= 0 { at(data.t_dtw) } else { at(data.t1) };
                let bytes = tok.to_bytes().map_err(|e| ModelError::Inference(e.to_string()))?;
                logprob += data.plog;
                tokens += 1;
                let punct = bytes.iter().all(|b| b.is_ascii_punctuation());
                match parts.last_mut() {
                    Some(last) if bytes.first() != Some(&b' ') || punct => {
                        last.0.extend_from_slice(bytes);
                        if !punct {
                            last.1 = end.max(last.1);
                        }
                        last.2 = last.2.min(data.p);
                    }
                    _ => parts.push((bytes.to_vec(), end, data.p)),
                }
            }
            let mut prev_end = 0;
            for (bytes, end, p) in parts {
                let end = end.max(prev_end);
                let start = prev_end.max(end.saturating_sub(MAX_WORD_MS));
                push_word(&mut hyp.words, bytes, Word { text: String::new(), start_ms: start, end_ms: end, p });
                prev_end = end;
            }
        }
        hyp.avg_logprob = if tokens > 0 { logprob / tokens as f32 } else { 0.0 };
        Ok(hyp)
    }

    /// Offline transcription of 16 kHz mono audio with greedy decoding on one thread.
    pub fn transcribe(
        &self,
        state: &mut WhisperState,
        audio: &[f32],
        language: &str,
    ) -> Result<Vec<Segment>, ModelError> {
        self.transcribe_with(state, audio, language, None, None)
    }

    /// Offline transcription; `beam_size` for beam search (post-call refinement), and an
    /// abort flag (a refinement gives way to live work).
    pub fn transcribe_with(
        &self,
        state: &mut WhisperState,
        audio: &[f32],
        language: &str,
        beam_size: Option<u32>,
        abort: Option<&AtomicBool>,
    ) -> Result<Vec<Segment>, ModelError> {
        let params = match beam_size {
            Some(b) => Self::params(SamplingStrategy::BeamSearch { beam_size: b as i32, patience: -1.0 }, language),
            None => Self::greedy_params(language),
        };
        run_full(state, params, audio, abort)?;
        let mut out = Vec::new();
        for seg in state.as_iter() {
            let text = seg.to_str_lossy().map_err(|e| ModelError::Inference(e.to_string()))?.trim().to_string();
            out.push(Segment {
                start_ms: (seg.start_timestamp().max(0) as u64) * 10,
                end_ms: (seg.end_timestamp().max(0) as u64) * 10,
                text,
                no_speech_prob: seg.no_speech_probability(),
            });
        }
        Ok(out)
    }
}

//! whisper.cpp through whisper-rs: one loaded model shared by worker threads, one
//! `WhisperState` per worker. Callers run this on dedicated OS threads, never on the
//! async runtime.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState};

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
        check_model_file(path)?;
        LOGGING.call_once(whisper_rs::install_logging_hooks);
        let ctx = WhisperContext::new_with_params(path, WhisperContextParameters::default())
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

    /// Decodes one utterance (16 kHz mono) as a single segment, with the encoder's audio
    /// context trimmed to the audio (whisper.cpp: 50 encoder frames per second; below
    /// ~64 per second the audio is cut off and the decoder loops). Returns "" when
    /// Whisper itself judges it not speech.
    /// `abort`: when another thread sets it, the decode stops early (whisper.cpp checks
    /// between graph steps) and `ModelError::Aborted` comes back.
    pub fn decode_utterance(
        &self,
        state: &mut WhisperState,
        audio: &[f32],
        prompt: &str,
        language: &str,
        retry: bool,
        abort: Option<&AtomicBool>,
    ) -> Result<String, ModelError> {
        let secs = audio.len() as f32 / 16000.0;
        let audio_ctx = ((secs * 64.0).ceil() as i32 + 64).min(1500);
        // Finals at normal load: a small beam (deterministic, and better than greedy on
        // hard audio); everything else greedy.
        let mut params = if retry {
            Self::params(SamplingStrategy::BeamSearch { beam_size: 3, patience: -1.0 }, language)
        } else {
            Self::greedy_params(language)
        };
        params.set_audio_ctx(audio_ctx);
        params.set_single_segment(true);
        params.set_no_context(true);
        params.set_suppress_blank(true);
        params.set_suppress_nst(true);
        // Live decodes must take a bounded time. whisper.cpp retries a decode that fails
        // its quality checks (log-probability, compression) at higher temperatures, five
        // times by default (measured here: 4-9 s for one 2 s utterance), and when every
        // retry fails it keeps the most random one (seen here: "Under the" for "Hi Alex,
        // we already use another vendor"). No retries: finals get a beam of 3 instead.
        // And no more tokens than speech can hold (about 3 words, 4-5 tokens, per
        // second; a looping decoder stops there).
        params.set_temperature_inc(0.0);
        params.set_max_tokens((secs * 8.0).ceil() as i32 + 8);
        if !prompt.trim().is_empty() {
            params.set_initial_prompt(prompt.trim());
        }
        // whisper.cpp wants at least 1 s; pad short utterances with silence.
        let mut padded;
        let input = if audio.len() < 16000 {
            padded = audio.to_vec();
            padded.resize(16000 + 1600, 0.0);
            &padded[..]
        } else {
            audio
        };
        run_full(state, params, input, abort)?;
        let mut text = String::new();
        for seg in state.as_iter() {
            if seg.no_speech_probability() > 0.8 {
                continue;
            }
            text.push_str(&seg.to_str_lossy().map_err(|e| ModelError::Inference(e.to_string()))?);
        }
        Ok(text.trim().to_string())
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

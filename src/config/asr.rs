//! `[asr]`: live transcription with Whisper on this machine and post-call refinement,
//! and how a model setting (a name or a path) becomes a ggml file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A missing key takes its value from `AsrConfig::default()`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AsrConfig {
    /// Transcribe calls live with Whisper on this machine (off: media-only).
    pub enabled: bool,
    /// A model name (`tiny.en`, `base.en-q5_1`: the file `earshot model fetch NAME`
    /// puts in `model_dir`) or a path to a ggml file.
    pub model: String,
    /// Where model names are looked up (and `earshot model fetch` puts them).
    pub model_dir: PathBuf,
    /// Inference threads; 0 = one per core.
    pub workers: usize,
    pub language: String,
    /// Re-decode cadence while someone speaks (partials).
    #[serde(with = "humantime_serde")]
    pub step: Duration,
    /// Silence that ends an utterance (final).
    #[serde(with = "humantime_serde")]
    pub endpoint: Duration,
    /// Overload: the most a channel's transcript may fall behind the live audio. At a
    /// quarter of it partials slow down, at half they stop, at all of it the oldest
    /// untranscribed speech is shed (counted, marked); recovery is automatic.
    #[serde(with = "humantime_serde")]
    pub max_lag: Duration,
    /// Post-call refinement: when the pool is idle, transcribe each finished call's
    /// recording again (whole channels, beam search) and replace `transcript.json`,
    /// keeping the live one as `transcript.live.json`. Tenants may override.
    pub refine: bool,
    /// Model for refinement (name or path); default: the call's live model.
    pub refine_model: Option<String>,
    pub refine_beam: u32,
}

impl Default for AsrConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            model: "tiny.en-q8_0".into(),
            model_dir: PathBuf::from("models"),
            workers: 0,
            language: "en".into(),
            step: Duration::from_secs(1),
            endpoint: Duration::from_millis(400),
            max_lag: Duration::from_secs(6),
            refine: false,
            refine_model: None,
            refine_beam: 5,
        }
    }
}

/// A model setting is a name (no `/`, not ending in `.bin`) in `dir`, or a path.
pub fn model_path(model: &str, dir: &Path) -> PathBuf {
    if model.contains('/') || model.ends_with(".bin") {
        PathBuf::from(model)
    } else {
        dir.join(format!("ggml-{model}.bin"))
    }
}

impl AsrConfig {
    /// The ggml file for `model` (the tenant's, or the default).
    pub fn model_path_for(&self, model: Option<&str>) -> PathBuf {
        model_path(model.unwrap_or(&self.model), &self.model_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_setting_is_a_name_or_a_path() {
        assert_eq!(model_path("base.en", Path::new("m")), PathBuf::from("m/ggml-base.en.bin"));
        assert_eq!(model_path("/x/y.bin", Path::new("m")), PathBuf::from("/x/y.bin"));
        assert_eq!(model_path("my-model.bin", Path::new("m")), PathBuf::from("my-model.bin"));
    }
}

//! What one decode of a window says: its words with times, and Whisper's own judgement
//! of it (no-speech probability, mean log-probability). Pure: the engine fills it from
//! whisper.cpp's token data; the streaming policy and the tests read it.

use serde::{Deserialize, Serialize};

/// One word with its place in the audio (ms from the start of the decoded window, or
/// from the start of the channel once the policy has placed it) and its probability
/// (the lowest of its tokens').
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Word {
    #[serde(rename = "w")]
    pub text: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub p: f32,
}

impl Word {
    pub fn new(text: &str, start_ms: u64, end_ms: u64) -> Word {
        Word { text: text.to_string(), start_ms, end_ms, p: 1.0 }
    }

    /// The word as compared across hypotheses: lower case, letters, digits and apostrophes.
    pub fn norm(&self) -> String {
        norm(&self.text)
    }

    /// The same word moved by `offset_ms`.
    pub fn shifted(&self, offset_ms: u64) -> Word {
        Word { start_ms: self.start_ms + offset_ms, end_ms: self.end_ms + offset_ms, ..self.clone() }
    }
}

/// Lower case, letters, digits and apostrophes ("Globex," == "globex").
pub fn norm(w: &str) -> String {
    w.chars().filter(|c| c.is_alphanumeric() || *c == '\'').flat_map(char::to_lowercase).collect()
}

/// One decode's result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Hypothesis {
    pub words: Vec<Word>,
    /// Whisper's probability that the window holds no speech.
    pub no_speech: f32,
    /// Mean log-probability of the text tokens (0 when there are none).
    pub avg_logprob: f32,
}

impl Hypothesis {
    /// The words joined by spaces.
    pub fn text(&self) -> String {
        join(&self.words)
    }

    /// A hypothesis from plain text spread evenly over `[start_ms, end_ms)` (tests, and
    /// decoders without token times).
    pub fn from_text(text: &str, start_ms: u64, end_ms: u64) -> Hypothesis {
        let ws: Vec<&str> = text.split_whitespace().collect();
        let n = ws.len().max(1) as u64;
        let span = end_ms.saturating_sub(start_ms);
        let words = ws
            .iter()
            .enumerate()
            .map(|(i, w)| Word::new(w, start_ms + span * i as u64 / n, start_ms + span * (i as u64 + 1) / n))
            .collect();
        Hypothesis { words, no_speech: 0.0, avg_logprob: -0.2 }
    }

    /// Whisper's own test for a decode of silence: likely no speech and an unsure text
    /// (openai/whisper's `no_speech_threshold` 0.6 with `logprob_threshold` -1).
    pub fn is_silence(&self) -> bool {
        self.no_speech > 0.6 && self.avg_logprob < -1.0
    }

    /// zlib compression ratio of the text: a decoder loop compresses very well.
    pub fn compression_ratio(&self) -> f32 {
        compression_ratio(&self.text())
    }
}

pub fn join(words: &[Word]) -> String {
    words.iter().map(|w| w.text.as_str()).collect::<Vec<_>>().join(" ")
}

/// Bytes of text over its zlib-compressed bytes: openai/whisper's test for a decoder
/// loop (it drops decodes above 2.4).
pub fn compression_ratio(text: &str) -> f32 {
    use std::io::Write as _;
    if text.is_empty() {
        return 1.0;
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let packed = z.write_all(text.as_bytes()).and_then(|()| z.finish()).map_or(text.len(), |v| v.len());
    text.len() as f32 / packed.max(1) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_compress_far_better_than_speech() {
        let speech = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";
        let looped = "I'm sorry. I'm sorry. I'm sorry. I'm sorry. I'm sorry. I'm sorry. I'm sorry. I'm sorry.";
        assert!(compression_ratio(speech) < 1.8, "{}", compression_ratio(speech));
        assert!(compression_ratio(looped) > 2.4, "{}", compression_ratio(looped));
    }

    #[test]
    fn text_spreads_words_over_the_span() {
        let h = Hypothesis::from_text("a b c d", 1000, 2000);
        assert_eq!(h.words[0], Word::new("a", 1000, 1250));
        assert_eq!(h.words[3].end_ms, 2000);
        assert_eq!(h.text(), "a b c d");
        assert_eq!(norm("Globex,"), "globex");
    }
}

//! Guards against Whisper's known failure modes on live audio: text it invents for
//! silence or noise, and decoder loops that repeat a phrase. Pure.

use crate::asr::hypothesis::{Hypothesis, Word};

/// Phrases tiny/base models emit on non-speech (lower-cased, trimmed of punctuation).
const HALLUCINATIONS: &[&str] = &[
    "you",
    "thank you",
    "thanks for watching",
    "thank you for watching",
    "please subscribe",
    "bye",
    "blank_audio",
    "music",
    "silence",
    "applause",
    "laughter",
    "inaudible",
];

fn bare(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace() || *c == '_')
        .collect::<String>()
        .to_lowercase()
        .trim()
        .to_string()
}

/// The words of a decode to keep, with their times: the words `clean` keeps of its
/// text (a loop cut down to one pass); none when Whisper itself judges the window
/// silent, or when what is left still compresses like a loop.
pub fn clean_hypothesis(h: &Hypothesis) -> Vec<Word> {
    if h.words.is_empty() || h.is_silence() {
        return Vec::new();
    }
    let kept = clean(&h.text());
    // `clean` drops words and phrases, never changes one: match what it kept, in order.
    let mut out = Vec::new();
    let mut it = h.words.iter();
    for k in kept.split_whitespace() {
        for w in it.by_ref() {
            if w.text == k {
                out.push(w.clone());
                break;
            }
        }
    }
    if crate::asr::hypothesis::compression_ratio(&crate::asr::hypothesis::join(&out)) > 2.4 {
        return Vec::new();
    }
    out
}

/// Returns the text to keep ("" for none).
pub fn clean(text: &str) -> String {
    let mut t = text.trim().to_string();
    // Bracketed/parenthesised annotations: [BLANK_AUDIO], (music), *sigh*.
    for (open, close) in [('[', ']'), ('(', ')'), ('*', '*')] {
        while let Some(a) = t.find(open) {
            let Some(b) = t[a + 1..].find(close) else { break };
            t.replace_range(a..a + 1 + b + 1, " ");
        }
    }
    let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
    if HALLUCINATIONS.contains(&bare(&t).as_str()) {
        return String::new();
    }
    drop_restart(&collapse_loops(&t))
}

/// Drops a tail that restarts the utterance: after the last full stop, the first
/// 2+ words of the text again ("Ask what you can do for your country. Ask what you").
/// Greedy decoding without temperature fallback does this when the audio ends
/// mid-breath; nobody says the first words of a sentence again and stops.
fn drop_restart(text: &str) -> String {
    let Some(cut) = text.trim_end().rfind(['.', '?', '!']) else { return text.to_string() };
    let (head, tail) = text.split_at(cut + 1);
    let tail_words: Vec<String> = tail.split_whitespace().map(bare).collect();
    let head_words: Vec<String> = head.split_whitespace().map(bare).collect();
    let n = tail_words.len();
    if n >= 2 && head_words.len() > n && head_words[..n] == tail_words[..] {
        return head.trim_end().to_string();
    }
    text.to_string()
}

/// Cuts a phrase of 1-24 words repeated more than twice in a row down to one; a phrase
/// of 4+ words is cut already at its first repeat (people rarely say that twice; Whisper
/// does when an utterance is cut mid-word, or repeats a whole short sentence).
fn collapse_loops(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let norm: Vec<String> = words.iter().map(|w| bare(w)).collect();
    let mut out: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let mut skipped = false;
        for n in 1..=24.min(words.len() - i) {
            let mut reps = 1;
            while i + (reps + 1) * n <= words.len() && norm[i..i + n] == norm[i + reps * n..i + (reps + 1) * n] {
                reps += 1;
            }
            if reps > 2 || (reps == 2 && n >= 4) {
                out.extend(&words[i..i + n]);
                i += reps * n;
                skipped = true;
                break;
            }
        }
        if !skipped {
            out.push(words[i]);
            i += 1;
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypotheses_keep_the_times_of_the_words_kept() {
        let h = Hypothesis::from_text("[BLANK_AUDIO] I think I think I think I think we should", 0, 1100);
        let kept = clean_hypothesis(&h);
        let texts: Vec<&str> = kept.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(texts, ["I", "think", "we", "should"]);
        assert_eq!(kept[0].start_ms, 100);
        assert_eq!(kept[2].start_ms, 900, "'we' keeps its own time");
        let silent = Hypothesis { no_speech: 0.9, avg_logprob: -1.5, ..Hypothesis::from_text("Okay.", 0, 500) };
        assert!(clean_hypothesis(&silent).is_empty());
        // A loop is cut down to its first pass, keeping that pass's times.
        let looped = Hypothesis::from_text(&"Ask what you can do for your country. ".repeat(4), 0, 8000);
        let kept = clean_hypothesis(&looped);
        assert_eq!(crate::asr::hypothesis::join(&kept), "Ask what you can do for your country.");
        assert_eq!(kept[0].start_ms, 0);
    }

    #[test]
    fn silence_hallucinations_are_dropped() {
        for t in [" Thank you.", "you", "[BLANK_AUDIO]", "(music)", " Thanks for watching!", "*sigh*"] {
            assert_eq!(clean(t), "", "{t}");
        }
        assert_eq!(clean("Thank you for calling Acme."), "Thank you for calling Acme.");
    }

    #[test]
    fn repeated_phrases_are_collapsed_but_real_repeats_kept() {
        assert_eq!(clean("I think I think I think I think we should"), "I think we should");
        assert_eq!(clean("no no"), "no no");
        assert_eq!(clean("the the the the the"), "the");
        assert_eq!(
            clean("As what you can do for your... As what you can do for your..."),
            "As what you can do for your..."
        );
        assert_eq!(clean("we can we can do it"), "we can we can do it");
        assert_eq!(
            clean("Do you have a minute to talk about your phone system? Do you have a minute to talk about your phone system?"),
            "Do you have a minute to talk about your phone system?"
        );
    }

    #[test]
    fn a_restarted_sentence_at_the_end_is_dropped() {
        assert_eq!(
            clean("ask what you can do for your country. Ask what you"),
            "ask what you can do for your country."
        );
        assert_eq!(clean("What matters most to you. What matters most"), "What matters most to you.");
        // Not a restart: different words, or a tail as long as the sentence.
        assert_eq!(clean("Do it. Do it"), "Do it. Do it");
        assert_eq!(clean("Call me at nine. Nine works"), "Call me at nine. Nine works");
        assert_eq!(clean("Yes. Yes it is"), "Yes. Yes it is");
    }
}

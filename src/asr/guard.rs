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
    if squeezed(&out) {
        return Vec::new();
    }
    drop_squeezed_repeat(&mut out);
    drop_squeezed_restart(&mut out);
    if crate::asr::hypothesis::compression_ratio(&crate::asr::hypothesis::join(&out)) > 2.4 {
        return Vec::new();
    }
    out
}

/// All of it in almost no time (under 40 ms a word, 150 ms in all: "the[37560-37560]
/// sound.[37560-37560]"): the alignment found no audio for any of it.
fn squeezed(words: &[Word]) -> bool {
    let (Some(first), Some(last)) = (words.first(), words.last()) else { return false };
    let span = last.end_ms.saturating_sub(first.start_ms);
    span <= SQUEEZED_MS && span < 40 * words.len() as u64
}

/// Whether `tail` says the first words of `original` again (its last word possibly cut
/// short) in almost no time: Whisper invents such copies in the padding after a short
/// clip, and the alignment squeezes them against the end of the audio. A person saying
/// words again takes the time to say them.
fn squeezed_copy(original: &[Word], tail: &[Word]) -> bool {
    let Some(last) = tail.len().checked_sub(1) else { return false };
    let same = original.len() >= tail.len()
        && original.iter().zip(tail).enumerate().all(|(i, (o, t))| {
            let (o, t) = (o.norm(), t.norm());
            if i == last {
                !t.is_empty() && o.starts_with(&t)
            } else {
                o == t
            }
        });
    same && tail[last].end_ms.saturating_sub(tail[0].start_ms) <= SQUEEZED_MS
}

/// Drops a tail after the last sentence end that starts that sentence again in almost
/// no time ("Something is terribly wrong. Something[33520-33520]").
fn drop_squeezed_restart(words: &mut Vec<Word>) {
    let ends = |w: &Word| w.text.ends_with(['.', '?', '!']);
    let Some(last_end) = words.iter().rposition(ends) else { return };
    let start = words[..last_end].iter().rposition(ends).map_or(0, |i| i + 1);
    let (sentence, tail) = (&words[start..=last_end], &words[last_end + 1..]);
    if tail.len() < sentence.len() && squeezed_copy(sentence, tail) {
        words.truncate(last_end + 1);
    }
}

/// Longest time an invented copy of words may take.
const SQUEEZED_MS: u64 = 150;

/// Drops a tail that repeats the 2+ words before it in almost no time: "Montreal Force
/// Tyliner! Montreal[36160-36160] Force[36160-36160] Tyliner![36160-36240]".
fn drop_squeezed_repeat(words: &mut Vec<Word>) {
    for n in (2..=(words.len() / 2).min(12)).rev() {
        let at = words.len() - n;
        if squeezed_copy(&words[at - n..at], &words[at..]) {
            words.truncate(at);
            return;
        }
    }
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
    fn a_repeat_squeezed_against_the_end_of_the_audio_is_dropped() {
        let hyp = |ws: &[(&str, u64, u64)]| Hypothesis {
            words: ws.iter().map(|(w, a, b)| Word::new(w, *a, *b)).collect(),
            no_speech: 0.0,
            avg_logprob: -0.3,
        };
        let texts = |ws: Vec<Word>| ws.iter().map(|w| w.text.clone()).collect::<Vec<_>>().join(" ");
        let squeezed = hyp(&[
            ("Montreal", 34920, 35500),
            ("Force", 35500, 35820),
            ("Liner!", 35820, 36160),
            ("Montreal", 36160, 36160),
            ("Force", 36160, 36160),
            ("Lin", 36240, 36240),
        ]);
        assert_eq!(texts(clean_hypothesis(&squeezed)), "Montreal Force Liner!");
        // Said twice, taking the time to say it: kept.
        let said = hyp(&[("no", 0, 200), ("way", 200, 500), ("no", 700, 900), ("way", 900, 1200)]);
        assert_eq!(texts(clean_hypothesis(&said)), "no way no way");
        // The sentence started again in no time after its full stop: dropped.
        let restart = hyp(&[
            ("Something", 31340, 32040),
            ("is", 32060, 32640),
            ("terribly", 32640, 33120),
            ("wrong.", 33120, 33520),
            ("Something", 33520, 33520),
        ]);
        assert_eq!(texts(clean_hypothesis(&restart)), "Something is terribly wrong.");
        let again = hyp(&[("Do", 0, 200), ("it.", 200, 500), ("Do", 900, 1100)]);
        assert_eq!(texts(clean_hypothesis(&again)), "Do it. Do", "said again, in its own time");
        // Nothing of it heard (every word aligned to one instant): no text.
        assert!(clean_hypothesis(&hyp(&[("the", 37560, 37560), ("sound.", 37560, 37560)])).is_empty());
        assert_eq!(texts(clean_hypothesis(&hyp(&[("Yes.", 1000, 1180)]))), "Yes.");
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

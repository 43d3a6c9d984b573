//! The text side of a channel's streaming policy: which words of a decoded window are
//! new, which of them are committed (stable), and which become finals. Times are ms
//! from the start of the channel. Pure.
//!
//! - A word is new when it lies after everything already finalised or committed (by
//!   its midpoint: token times are rough), and it does not merely repeat the last words
//!   already taken (the window's context audio is decoded again each time).
//! - A new word is committed when it ends at least `Guard::edge_ms` before the window's
//!   end (a word cut by the window edge is never committed) and either the previous
//!   hypothesis agreed on it or it ends `Guard::alone_ms` before the edge (the decoder
//!   heard what follows it, as a final's decode would).
//! - A final is the committed words plus the rest of the final decode; a final that
//!   repeats the previous one is dropped.

use std::collections::VecDeque;

use crate::asr::hypothesis::{join, Word};

/// When a decoded word may be committed (ms before the window's end).
#[derive(Debug, Clone, Copy)]
pub(super) struct Guard {
    /// Never closer to the edge than this (a word cut by the edge is never committed).
    pub edge_ms: u64,
    /// This far from the edge, one hypothesis is enough: the decoder heard the word
    /// and what follows it, as a final's decode would.
    pub alone_ms: u64,
}

/// Finalised words kept for the prompt and for recognising repeats.
const KEEP_FINALS: usize = 80;
/// How far before the end of the last word taken a word after the anchor may still
/// lie (aligned times move by about this much between decodes).
const ANCHOR_SLACK_MS: u64 = 300;
/// Characters of finalised text given to the decoder as its prompt.
const PROMPT_CHARS: usize = 200;

#[derive(Debug, Default)]
pub(super) struct Words {
    finals: VecDeque<Word>,
    last_final: Vec<String>,
    /// Everything before this (ms) is finalised.
    pub(super) done_ms: u64,
    /// Stable words of the open utterance, in order.
    pub(super) committed: Vec<Word>,
    /// The unstable rest of the latest hypothesis.
    pub(super) unstable: Vec<Word>,
}

fn ends_sentence(w: &Word) -> bool {
    let t = w.text.trim_end_matches(['"', '\'', ')']);
    t.ends_with(['.', '?', '!']) && !t.ends_with("...")
}

impl Words {
    /// The end of the last word taken (finalised or committed), ms.
    fn taken_ms(&self) -> u64 {
        self.committed.last().map_or(self.done_ms, |w| w.end_ms.max(self.done_ms))
    }

    /// The words of `hyp` (already in channel time) that are new: after `floor_ms`,
    /// and after the last words taken (finalised or committed). Those are found by
    /// their text near their time (token times are rough, a short word's by a few
    /// hundred ms); by time alone when the text does not match.
    pub(super) fn fresh(&self, hyp: &[Word], floor_ms: u64) -> Vec<Word> {
        let hyp: Vec<Word> = hyp.iter().filter(|w| (w.start_ms + w.end_ms) / 2 > floor_ms).cloned().collect();
        let taken: Vec<&Word> = self.finals.iter().chain(self.committed.iter()).collect();
        if let Some(i) = anchor(&taken, &hyp) {
            // Even after the anchor, nothing that lies well inside what was taken: a
            // context sentence heard differently the second time is not new speech.
            let floor = self.taken_ms().saturating_sub(ANCHOR_SLACK_MS);
            return hyp[i..].iter().filter(|w| (w.start_ms + w.end_ms) / 2 > floor).cloned().collect();
        }
        let floor = floor_ms.max(self.taken_ms());
        let new: Vec<Word> = hyp.into_iter().filter(|w| (w.start_ms + w.end_ms) / 2 > floor).collect();
        let taken: Vec<Word> = taken.into_iter().cloned().collect();
        drop_overlap(&taken, new)
    }

    /// A partial hypothesis of the window ending at `window_end_ms`: commits what it can;
    /// returns the newly committed words.
    pub(super) fn partial(&mut self, hyp: &[Word], floor_ms: u64, window_end_ms: u64, guard: Guard) -> Vec<Word> {
        let new = self.fresh(hyp, floor_ms);
        let agreed = new.iter().zip(&self.unstable).take_while(|(a, b)| a.norm() == b.norm()).count();
        let mut n = 0;
        while n < new.len() {
            let w = &new[n];
            let clear = w.end_ms + guard.edge_ms <= window_end_ms;
            let heard_out = w.end_ms + guard.alone_ms <= window_end_ms;
            if clear && (n < agreed || heard_out) {
                n += 1;
            } else {
                break;
            }
        }
        self.committed.extend(new[..n].iter().cloned());
        self.unstable = new[n..].to_vec();
        new[..n].to_vec()
    }

    /// Committed words up to a sentence end that more words follow (the sentence is
    /// over): they become a final now.
    pub(super) fn take_sentence(&mut self) -> Option<Vec<Word>> {
        let i = self.committed.iter().position(ends_sentence)?;
        if i + 1 >= self.committed.len() && self.unstable.is_empty() {
            return None;
        }
        let sentence: Vec<Word> = self.committed.drain(..=i).collect();
        let end = sentence.last().map_or(self.done_ms, |w| w.end_ms);
        self.record_final(sentence, end)
    }

    /// The final of the open utterance: the committed words, then the final decode's
    /// new words (`hyp`, channel time); everything up to `end_ms` is then finalised.
    /// None when nothing is left (or it only repeats the previous final).
    pub(super) fn finish(&mut self, hyp: &[Word], floor_ms: u64, end_ms: u64) -> Option<Vec<Word>> {
        let mut all = std::mem::take(&mut self.committed);
        let rest = self.fresh(hyp, floor_ms.max(all.last().map_or(0, |w| w.end_ms)));
        // `fresh` compares with the committed words, which were just taken out.
        let rest = drop_overlap(&all, rest);
        all.extend(rest);
        self.unstable.clear();
        self.record_final(all, end_ms)
    }

    fn record_final(&mut self, words: Vec<Word>, end_ms: u64) -> Option<Vec<Word>> {
        self.done_ms = self.done_ms.max(end_ms).max(words.last().map_or(0, |w| w.end_ms));
        if words.is_empty() {
            return None;
        }
        let normed: Vec<String> = words.iter().map(Word::norm).collect();
        let tail: Vec<String> =
            self.finals.iter().skip(self.finals.len().saturating_sub(normed.len())).map(Word::norm).collect();
        if normed == self.last_final || (normed.len() >= 3 && tail == normed) {
            return None; // the previous final again: Whisper repeating itself
        }
        self.last_final = normed;
        self.finals.extend(words.iter().cloned());
        while self.finals.len() > KEEP_FINALS {
            self.finals.pop_front();
        }
        Some(words)
    }

    /// The decoder's prompt for a window starting at `start_ms`: the last finalised
    /// text before it (text inside the window would make the decoder skip its audio).
    pub(super) fn prompt(&self, start_ms: u64) -> String {
        let text = join(&self.finals.iter().filter(|w| w.end_ms <= start_ms + 150).cloned().collect::<Vec<_>>());
        let cut = text.len().saturating_sub(PROMPT_CHARS);
        let cut = (cut..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
        match text[cut..].find(' ') {
            Some(sp) if cut > 0 => text[cut + sp + 1..].to_string(),
            _ => text[cut..].to_string(),
        }
    }
}

/// Where the new words of `hyp` begin: just after the last 1-3 words of `taken`, found
/// in `hyp` by text, ending within a second of where they ended (the nearest such
/// place; longer matches first).
fn anchor(taken: &[&Word], hyp: &[Word]) -> Option<usize> {
    let last_end = taken.last()?.end_ms;
    for m in (1..=3.min(taken.len())).rev() {
        let tail: Vec<String> = taken[taken.len() - m..].iter().map(|w| w.norm()).collect();
        let best = (0..hyp.len().saturating_sub(m - 1))
            .filter(|&j| hyp[j..j + m].iter().map(Word::norm).eq(tail.iter().cloned()))
            .map(|j| (hyp[j + m - 1].end_ms.abs_diff(last_end), j + m))
            .filter(|&(d, _)| d <= 1000)
            .min();
        if let Some((_, i)) = best {
            return Some(i);
        }
    }
    None
}

/// `rest` without a leading repeat of the last words of `taken`.
fn drop_overlap(taken: &[Word], mut rest: Vec<Word>) -> Vec<Word> {
    for k in (1..=5.min(rest.len()).min(taken.len())).rev() {
        let a: Vec<String> = taken[taken.len() - k..].iter().map(Word::norm).collect();
        let b: Vec<String> = rest[..k].iter().map(Word::norm).collect();
        if a == b && rest[0].start_ms < taken[taken.len() - 1].end_ms + 1000 {
            rest.drain(..k);
            break;
        }
    }
    rest
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Agreement always needed (no word is far enough from the edge to go alone).
    const G: Guard = Guard { edge_ms: 400, alone_ms: 10_000 };

    fn w(t: &str, s: u64, e: u64) -> Word {
        Word::new(t, s, e)
    }

    #[test]
    fn a_word_ending_at_the_window_edge_is_not_committed() {
        let mut ws = Words::default();
        let hyp = vec![w("ask", 100, 400), w("not", 500, 800), w("what", 900, 1150)];
        // Twice the same hypothesis, window ends at 1300: "what" ends 150 ms before the
        // edge (guard 400), so only the first two are committed.
        ws.partial(&hyp, 0, 1300, G);
        assert!(ws.committed.is_empty(), "no agreement yet and too close to the edge");
        ws.partial(&hyp, 0, 1300, G);
        assert_eq!(join(&ws.committed), "ask not");
        assert_eq!(join(&ws.unstable), "what");
    }

    #[test]
    fn a_word_with_a_second_of_speech_after_it_is_committed_on_one_hypothesis() {
        let mut ws = Words::default();
        let guard = Guard { edge_ms: 400, alone_ms: 1000 };
        let hyp = [w("your", 100, 400), w("call", 500, 900), w("is", 1000, 1300), w("now", 1400, 1800)];
        let got = ws.partial(&hyp, 0, 2000, guard);
        assert_eq!(join(&got), "your call", "1 s or more before the edge: heard out, committed alone");
        assert_eq!(join(&ws.unstable), "is now", "closer to the edge: waits for agreement");
        let got = ws.partial(
            &[w("your", 100, 400), w("call", 500, 900), w("is", 1000, 1300), w("now", 1400, 1800)],
            0,
            2200,
            guard,
        );
        assert_eq!(join(&got), "is now", "agreed, and clear of the edge guard");
    }

    #[test]
    fn commits_need_agreement_and_stop_at_the_first_disagreement() {
        let mut ws = Words::default();
        ws.partial(&[w("as", 100, 400), w("not", 500, 800), w("what", 900, 1100)], 0, 3000, G);
        assert!(ws.committed.is_empty(), "one hypothesis commits nothing, however far from the edge");
        ws.partial(&[w("ask", 100, 400), w("not", 500, 800), w("what", 900, 1100)], 0, 3000, G);
        assert!(ws.committed.is_empty(), "'as' then 'ask': no agreement on the first word");
        ws.partial(&[w("ask", 100, 400), w("not", 500, 800), w("what", 900, 1100)], 0, 3000, G);
        assert_eq!(join(&ws.committed), "ask not what");
    }

    #[test]
    fn context_words_decoded_again_are_not_taken_twice() {
        let mut ws = Words::default();
        ws.finish(
            &[
                w("And", 0, 200),
                w("so", 200, 400),
                w("my", 400, 500),
                w("fellow", 500, 900),
                w("Americans,", 900, 1900),
            ],
            0,
            2000,
        );
        // The next window starts at the first word: the old words come back with
        // slightly different times; one ends just after the finalised boundary.
        let hyp = [
            w("And", 0, 250),
            w("so", 250, 400),
            w("my", 400, 500),
            w("fellow", 600, 1000),
            w("Americans,", 1000, 2100),
            w("ask", 3300, 3600),
            w("not", 4000, 4300),
        ];
        let new = ws.fresh(&hyp, 0);
        assert_eq!(join(&new), "ask not");
        let hyp2 = [w("Americans,", 1950, 2080), w("ask", 3300, 3600)];
        assert_eq!(join(&ws.fresh(&hyp2, 0)), "ask", "a repeat straddling the boundary is recognised by its words");
    }

    #[test]
    fn a_context_sentence_heard_differently_again_is_not_new() {
        let mut ws = Words::default();
        ws.finish(
            &[
                w("Something", 0, 500),
                w("thing", 500, 700),
                w("is", 700, 900),
                w("terribly", 900, 1400),
                w("wrong.", 1400, 1900),
            ],
            0,
            1900,
        );
        // The next window hears the same sentence as "Something is terribly wrong." and
        // then new words: only those are new.
        let hyp = [
            w("Something", 0, 600),
            w("is", 600, 900),
            w("terribly", 900, 1400),
            w("wrong.", 1400, 1850),
            w("Please", 2400, 2800),
            w("hold.", 2800, 3200),
        ];
        assert_eq!(join(&ws.fresh(&hyp, 0)), "Please hold.");
        // Anchored on an earlier "wrong": the words after it that lie inside the final are dropped.
        let hyp = [
            w("wrong", 300, 500),
            w("is", 600, 900),
            w("terribly", 900, 1400),
            w("bad.", 1400, 1850),
            w("Please", 2400, 2800),
        ];
        assert_eq!(join(&ws.fresh(&hyp, 0)), "Please");
    }

    #[test]
    fn a_repeated_final_is_suppressed() {
        let mut ws = Words::default();
        let s = [w("That", 0, 200), w("is", 200, 300), w("not", 300, 500), w("valid.", 500, 900)];
        assert!(ws.finish(&s, 0, 1000).is_some());
        let again: Vec<Word> = s.iter().map(|x| x.shifted(1200)).collect();
        assert_eq!(ws.finish(&again, 0, 2200), None);
        assert_eq!(ws.done_ms, 2200, "the repeated audio still counts as done");
        assert!(ws.finish(&[w("Please", 2300, 2600), w("hold.", 2600, 2900)], 0, 3000).is_some());
    }

    #[test]
    fn finals_keep_committed_words_and_add_the_rest() {
        let mut ws = Words::default();
        let h = [w("Hi", 0, 300), w("Alex,", 300, 700), w("we", 800, 900)];
        ws.partial(&h, 0, 1200, G);
        ws.partial(&h, 0, 1200, G);
        assert_eq!(join(&ws.committed), "Hi Alex,");
        // The final decode hears "Hi Alex" slightly differently; committed words stay.
        let f =
            [w("Hi", 0, 300), w("Alex.", 300, 700), w("we", 800, 900), w("use", 900, 1100), w("Globex.", 1100, 1600)];
        let fin = ws.finish(&f, 0, 1700).unwrap();
        assert_eq!(join(&fin), "Hi Alex, we use Globex.");
        assert!(ws.committed.is_empty() && ws.unstable.is_empty());
    }

    #[test]
    fn a_finished_sentence_becomes_a_final_when_the_next_one_starts() {
        let mut ws = Words::default();
        let h = [w("Thanks.", 0, 500), w("So", 700, 800), w("about", 800, 1000), w("pricing", 1000, 1400)];
        ws.partial(&h, 0, 3000, G);
        ws.partial(&h, 0, 3000, G);
        let s = ws.take_sentence().unwrap();
        assert_eq!(join(&s), "Thanks.");
        assert_eq!(join(&ws.committed), "So about pricing");
        assert_eq!(ws.done_ms, 500);
        assert_eq!(ws.take_sentence(), None);
    }

    #[test]
    fn the_prompt_is_finalised_text_before_the_window() {
        let mut ws = Words::default();
        ws.finish(&[w("one", 0, 100), w("two.", 100, 200)], 0, 300);
        ws.finish(&[w("three", 400, 500)], 0, 600);
        assert_eq!(ws.prompt(300), "one two.");
        assert_eq!(ws.prompt(10_000), "one two. three");
    }
}

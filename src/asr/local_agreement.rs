//! LocalAgreement-2: a word becomes stable once two consecutive hypotheses of the same
//! utterance agree on it (and on everything before it). Stable words never change
//! again, so the coach can act on them before the utterance is final. Pure.

/// Normalised form used to compare words across hypotheses ("Globex," == "globex").
fn norm(w: &str) -> String {
    w.chars().filter(|c| c.is_alphanumeric() || *c == '\'').flat_map(char::to_lowercase).collect()
}

#[derive(Debug, Default, Clone)]
pub struct LocalAgreement {
    committed: Vec<String>,
    previous: Vec<String>,
}

/// What one new hypothesis changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    /// Words that became stable with this hypothesis (may be empty).
    pub newly_stable: Vec<String>,
    /// Everything stable so far in this utterance.
    pub stable: Vec<String>,
    /// The rest of the latest hypothesis, which may still change.
    pub unstable: Vec<String>,
}

impl LocalAgreement {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the latest full hypothesis of the utterance (re-decoded from its start).
    pub fn update(&mut self, hypothesis: &str) -> Agreement {
        let words: Vec<String> = hypothesis.split_whitespace().map(str::to_string).collect();
        let n = self.committed.len();
        // Both hypotheses must agree with what is already committed before anything
        // after it can be committed; committed words are kept regardless.
        let keeps_prefix = |h: &[String]| h.len() >= n && self.committed.iter().zip(h).all(|(a, b)| norm(a) == norm(b));
        let mut newly = Vec::new();
        if keeps_prefix(&words) && keeps_prefix(&self.previous) {
            let mut i = n;
            while i < words.len() && i < self.previous.len() && norm(&words[i]) == norm(&self.previous[i]) {
                newly.push(words[i].clone());
                i += 1;
            }
        }
        self.committed.extend(newly.iter().cloned());
        let unstable = words.iter().skip(self.committed.len()).cloned().collect();
        self.previous = words;
        Agreement { newly_stable: newly, stable: self.committed.clone(), unstable }
    }

    /// The utterance ended: the final hypothesis wins entirely.
    pub fn finish(&mut self, final_text: &str) -> Vec<String> {
        let words: Vec<String> = final_text.split_whitespace().map(str::to_string).collect();
        self.committed.clear();
        self.previous.clear();
        words
    }

    pub fn stable(&self) -> &[String] {
        &self.committed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_become_stable_when_two_hypotheses_agree() {
        let mut la = LocalAgreement::new();
        let a = la.update("we already");
        assert!(a.newly_stable.is_empty());
        assert_eq!(a.unstable, vec!["we", "already"]);
        let b = la.update("we already use Globe");
        assert_eq!(b.newly_stable, vec!["we", "already"]);
        assert_eq!(b.unstable, vec!["use", "Globe"]);
        let c = la.update("we already use Globex, and");
        assert_eq!(c.newly_stable, vec!["use"]);
        assert_eq!(c.stable, vec!["we", "already", "use"]);
        assert_eq!(c.unstable, vec!["Globex,", "and"]);
    }

    #[test]
    fn punctuation_and_case_do_not_block_agreement() {
        let mut la = LocalAgreement::new();
        la.update("Hello, this is");
        let b = la.update("hello this is Alex");
        assert_eq!(b.stable.len(), 3);
    }

    #[test]
    fn stable_words_never_change_even_if_a_later_hypothesis_disagrees() {
        let mut la = LocalAgreement::new();
        la.update("the price is high");
        la.update("the price is high today");
        let c = la.update("a prize is high today");
        assert!(c.newly_stable.is_empty());
        assert_eq!(c.stable, vec!["the", "price", "is", "high"]);
    }

    #[test]
    fn agreement_needs_both_hypotheses_to_keep_the_committed_prefix() {
        let mut la = LocalAgreement::new();
        la.update("a b");
        la.update("a x"); // commits "a"
        la.update("z b c"); // disagrees with "a": nothing
        let d = la.update("a b c"); // previous ("z b c") did not keep "a": nothing yet
        assert!(d.newly_stable.is_empty(), "{d:?}");
        let e = la.update("a b c d");
        assert_eq!(e.newly_stable, vec!["b", "c"]);
    }

    #[test]
    fn finish_returns_the_final_text_and_resets() {
        let mut la = LocalAgreement::new();
        la.update("one two");
        la.update("one two three");
        assert_eq!(la.finish("one two three four"), vec!["one", "two", "three", "four"]);
        assert!(la.stable().is_empty());
    }
}

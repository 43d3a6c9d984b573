//! Words and phrases: how the coach reads transcripts. Lower case, punctuation
//! stripped (apostrophes inside words kept). A phrase matches a run of words when the
//! letters agree with the spaces removed, so "globex" also matches "Globe X" and
//! "this call is recorded" matches "this call is recorded." A trailing `*` makes
//! the last word a prefix ("guarantee*" matches "guaranteed").

/// Transcript text as lower-case words.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || c == '-' || c == '/')
        .filter_map(|w| {
            let w: String = w
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'' || *c == '’')
                .map(|c| if c == '’' { '\'' } else { c })
                .flat_map(char::to_lowercase)
                .collect();
            let w = w.trim_matches('\'').to_string();
            (!w.is_empty()).then_some(w)
        })
        .collect()
}

/// A compiled phrase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phrase {
    /// The phrase as written in the playbook (for explanations).
    pub source: String,
    /// Its letters with spaces removed.
    joined: String,
    prefix: bool,
}

impl Phrase {
    /// `None` when the phrase has no letters or digits.
    pub fn new(source: &str) -> Option<Phrase> {
        let trimmed = source.trim();
        let prefix = trimmed.ends_with('*');
        let joined: String = words(trimmed.trim_end_matches('*')).concat();
        (!joined.is_empty()).then(|| Phrase { source: trimmed.to_string(), joined, prefix })
    }

    /// Each match in `words` as (first word, one past the last word), leftmost first,
    /// not overlapping.
    pub fn find_all(&self, words: &[String]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < words.len() {
            match self.match_at(words, i) {
                Some(end) => {
                    out.push((i, end));
                    i = end;
                }
                None => i += 1,
            }
        }
        out
    }

    fn match_at(&self, words: &[String], start: usize) -> Option<usize> {
        let target = self.joined.as_str();
        let mut pos = 0;
        for (j, w) in words.iter().enumerate().skip(start) {
            let rest = &target[pos..];
            if self.prefix && w.len() >= rest.len() && w.starts_with(rest) {
                return Some(j + 1);
            }
            if !rest.starts_with(w.as_str()) {
                return None;
            }
            pos += w.len();
            if pos == target.len() {
                return Some(j + 1);
            }
        }
        None
    }
}

/// Whether any of `phrases` occurs in `words`; the first match (phrase, span).
pub fn first_match<'a>(phrases: &'a [Phrase], words: &[String]) -> Option<(&'a Phrase, (usize, usize))> {
    phrases.iter().filter_map(|p| p.find_all(words).first().map(|m| (p, *m))).min_by_key(|(_, m)| m.0)
}

/// Number of non-overlapping matches of any of `phrases`.
pub fn count_matches(phrases: &[Phrase], words: &[String]) -> usize {
    phrases.iter().map(|p| p.find_all(words).len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        words(s)
    }

    #[test]
    fn words_are_lowercase_without_punctuation() {
        assert_eq!(w("Hello, World! It's   Globex-Corp."), vec!["hello", "world", "it's", "globex", "corp"]);
        assert_eq!(w("  ...  "), Vec::<String>::new());
        assert_eq!(w("We’re 100% sure?"), vec!["we're", "100", "sure"]);
    }

    #[test]
    fn phrases_match_across_spacing_and_prefixes() {
        let globex = Phrase::new("Globex").unwrap();
        assert_eq!(globex.find_all(&w("we use globex today")), vec![(2, 3)]);
        assert_eq!(globex.find_all(&w("we use Globe X today")), vec![(2, 4)]);
        assert!(globex.find_all(&w("globexes are great")).is_empty(), "whole words only");
        assert!(globex.find_all(&w("globe")).is_empty(), "a partial phrase is no match");
        let rec = Phrase::new("this call is recorded").unwrap();
        assert_eq!(rec.find_all(&w("Hi, this call is recorded.")), vec![(1, 5)]);
        let g = Phrase::new("guarantee*").unwrap();
        assert_eq!(g.find_all(&w("I guaranteed it, guarantee!")), vec![(1, 2), (3, 4)]);
        assert!(g.find_all(&w("guard")).is_empty());
        assert!(Phrase::new(" ?! ").is_none());
        assert_eq!(count_matches(&[globex.clone(), g], &w("globex guarantee globex")), 3);
        let both = [rec, globex];
        let (p, span) = first_match(&both, &w("globex then this call is recorded")).unwrap();
        assert_eq!((p.source.as_str(), span), ("Globex", (0, 1)));
    }
}

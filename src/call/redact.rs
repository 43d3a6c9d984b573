//! Redaction (pure): payment card numbers and configured patterns are masked in text
//! before it is stored or shown.
//!
//! A card number is 13–19 digits that pass the Luhn check, written as digits (with
//! spaces or dashes: "4242 4242 4242 4242") or spoken as words ("four two four two …",
//! "oh" for zero), or mixed — recognisers write both. In text every run of 13 or more
//! digits is masked, Luhn-valid or not: recognisers garble long digit strings
//! ("4242-420-4242-4242424242"), and a card number misheard by one digit is still a
//! card number. Shorter runs (phone numbers, amounts) are left alone — except in a
//! sentence that talks about a card ("card", "visa", "cvv", "expiry", …), where every
//! number of three digits or more is masked: a recogniser may break a spoken card
//! number into short pieces ("4240, 42242, counts for 242"). Keyed digits (DTMF)
//! are masked when they form a Luhn-valid card number.

use std::borrow::Cow;

pub const CARD_MASK: &str = "[card number]";
pub const PATTERN_MASK: &str = "[redacted]";

/// Words that make the numbers around them card data.
const CARD_CONTEXT: [&str; 12] = [
    "card",
    "credit",
    "debit",
    "visa",
    "mastercard",
    "amex",
    "american express",
    "cvv",
    "cvc",
    "security code",
    "expiry",
    "expiration",
];

pub fn luhn(digits: &[u8]) -> bool {
    if digits.is_empty() {
        return false;
    }
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(*d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum % 10 == 0
}

fn word_digit(w: &str) -> Option<u8> {
    Some(match w {
        "zero" | "oh" | "o" => 0,
        "one" => 1,
        "two" => 2,
        "three" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        "seven" => 7,
        "eight" => 8,
        "nine" | "niner" => 9,
        _ => return None,
    })
}

/// Digits a token stands for (`None`: not a number token).
fn token_digits(tok: &str) -> Option<Vec<u8>> {
    let t = tok.trim_matches(|c: char| !c.is_alphanumeric());
    if t.is_empty() {
        return None;
    }
    if t.chars().all(|c| c.is_ascii_digit() || c == '.') && t.chars().any(|c| c.is_ascii_digit()) {
        return Some(t.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect());
    }
    word_digit(&t.to_lowercase()).map(|d| vec![d])
}

/// Masks card numbers; returns the text and how many were masked.
pub fn mask_cards(text: &str) -> (Cow<'_, str>, usize) {
    mask_runs(text, 13)
}

/// Masks number runs of `min_digits` or more (3 in a sentence about a card).
fn mask_runs(text: &str, min_digits: usize) -> (Cow<'_, str>, usize) {
    // Tokens with their byte spans.
    let mut toks: Vec<(usize, usize, Option<Vec<u8>>)> = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices().chain(std::iter::once((text.len(), ' '))) {
        let sep = c.is_whitespace() || c == ',' || c == '-' || c == '/';
        match (start, sep) {
            (None, false) => start = Some(i),
            (Some(s), true) => {
                toks.push((s, i, token_digits(&text[s..i])));
                start = None;
            }
            _ => {}
        }
    }
    let lower = text.to_lowercase();
    let card_context = CARD_CONTEXT.iter().any(|w| lower.contains(w));
    let min_digits = if card_context { 3 } else { min_digits };
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        if toks[i].2.is_none() {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < toks.len() && toks[j].2.is_some() {
            j += 1;
        }
        // Tokens i..j are all numbers. 13 digits or more: a card number (Luhn-valid),
        // a misheard one, or another long number — masked whole.
        let total: usize = toks[i..j].iter().map(|t| t.2.as_ref().map_or(0, Vec::len)).sum();
        if total >= min_digits {
            spans.push((toks[i].0, toks[j - 1].1));
        }
        i = j;
    }
    if spans.is_empty() {
        return (Cow::Borrowed(text), 0);
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (s, e) in &spans {
        out.push_str(&text[at..*s]);
        out.push_str(CARD_MASK);
        at = *e;
    }
    out.push_str(&text[at..]);
    (Cow::Owned(out), spans.len())
}

/// A tenant's redaction pattern that is not a valid regular expression.
#[derive(Debug, thiserror::Error)]
#[error("{pattern:?}: {source}")]
pub struct BadPattern {
    pub pattern: String,
    #[source]
    pub source: regex::Error,
}

/// Card numbers plus a tenant's own patterns (regular expressions).
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    patterns: Vec<regex::Regex>,
}

impl Redactor {
    /// Compiles the patterns; an invalid one is an error naming it.
    pub fn new(patterns: &[String]) -> Result<Redactor, BadPattern> {
        let patterns = patterns
            .iter()
            .map(|p| {
                regex::RegexBuilder::new(p)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|source| BadPattern { pattern: p.clone(), source })
            })
            .collect::<Result<_, _>>()?;
        Ok(Redactor { patterns })
    }

    pub fn apply<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let (mut out, _) = mask_cards(text);
        for p in &self.patterns {
            if let Cow::Owned(s) = p.replace_all(&out, PATTERN_MASK) {
                out = Cow::Owned(s);
            }
        }
        out
    }

    /// For a partial transcript, where a card number is still being spoken: runs of 8
    /// digits or more are masked too (a phone number shows again in the final).
    pub fn apply_partial<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match mask_runs(text, 8).0 {
            Cow::Borrowed(_) => self.apply(text),
            Cow::Owned(s) => Cow::Owned(self.apply(&s).into_owned()),
        }
    }

    /// Redacts every string in a JSON value (never numbers: timestamps stay intact).
    pub fn apply_json(&self, v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) => {
                if let Cow::Owned(r) = self.apply(s) {
                    *s = r;
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| self.apply_json(x)),
            serde_json::Value::Object(o) => o.values_mut().for_each(|x| self.apply_json(x)),
            _ => {}
        }
    }
}

/// Which keyed digits (DTMF, in order) belong to a card number: those are masked.
pub fn dtmf_card_mask(digits: &[&str]) -> Vec<bool> {
    let vals: Vec<Option<u8>> = digits.iter().map(|d| d.parse::<u8>().ok().filter(|v| *v <= 9)).collect();
    let mut mask = vec![false; digits.len()];
    let mut i = 0;
    while i < vals.len() {
        let mut best = None;
        let mut run = Vec::new();
        for (e, v) in vals.iter().enumerate().skip(i) {
            let Some(v) = v else { break };
            run.push(*v);
            if run.len() > 19 {
                break;
            }
            if run.len() >= 13 && luhn(&run) {
                best = Some(e);
            }
        }
        match best {
            Some(e) => {
                mask[i..=e].iter_mut().for_each(|m| *m = true);
                i = e + 1;
            }
            None => i += 1,
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_words_and_mixtures_are_masked() {
        for said in [
            "my card is 4242 4242 4242 4242 thanks",
            "my card is 4242-4242-4242-4242 thanks",
            "my card is 4242424242424242. thanks",
            "my card is four two four two four two four two four two four two four two four two thanks",
            "my card is 4242, 4242, 4242, four two four two thanks",
            "my card is five five five five five five five five five five five five four four four four thanks",
        ] {
            let (out, n) = mask_cards(said);
            assert_eq!(n, 1, "{said}");
            assert!(out.starts_with("my card is [card number]") && out.ends_with("thanks"), "{said} → {out}");
            assert!(!out.contains("4242") && !out.contains("four two"), "{out}");
        }
    }

    #[test]
    fn other_numbers_are_left_alone() {
        for text in
            ["call me on +1 555 123 4567", "it costs 1200 dollars for 12 seats", "one two three", "ref 12-34-56", ""]
        {
            assert_eq!(mask_cards(text), (Cow::Borrowed(text), 0), "{text}");
        }
        // Long runs are masked even when Luhn fails (a misheard card).
        assert_eq!(mask_cards("it is 4242- Otto-420-4242-4242-4242424242 ok").0, "it is 4242- Otto-[card number] ok");
        assert_eq!(mask_cards("order 4242 4242 4242 4241 failed").0, "order [card number] failed");
        assert!(luhn(&[4, 2, 4, 2, 4, 2, 4, 2, 4, 2, 4, 2, 4, 2, 4, 2]));
    }

    #[test]
    fn a_card_broken_into_pieces_is_masked_when_the_sentence_is_about_a_card() {
        let (out, n) = mask_cards("My card number is 4240, 42242, counts for 242, 422.");
        assert_eq!(n, 2, "{out}");
        assert!(!out.chars().any(|c| c.is_ascii_digit()), "{out}");
        assert_eq!(mask_cards("the expiry is 0 4 2 7 and the cvv 123").1, 2);
        // Without such a word, short numbers stay.
        assert_eq!(mask_cards("we have 242 seats in 4240 rooms").1, 0);
    }

    #[test]
    fn partials_mask_a_card_still_being_spoken() {
        let r = Redactor::default();
        assert_eq!(r.apply_partial("My Carter number is 4 9 27 3815 064"), "My Carter number is [card number]");
        assert_eq!(r.apply("My Carter number is 4 9 27 3815 064"), "My Carter number is 4 9 27 3815 064");
        assert_eq!(r.apply_partial("room 1234 at 5"), "room 1234 at 5");
    }

    #[test]
    fn patterns_and_json() {
        let r = Redactor::new(&[r"\b\d{3}-\d{2}-\d{4}\b".to_string()]).unwrap();
        assert_eq!(r.apply("ssn 123-45-6789 and 4242 4242 4242 4242"), "ssn [redacted] and [card number]");
        let mut v = serde_json::json!({ "ts": 4242424242424242u64, "text": "4242 4242 4242 4242", "list": ["x 4242424242424242"] });
        r.apply_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({ "ts": 4242424242424242u64, "text": "[card number]", "list": ["x [card number]"] })
        );
        assert!(Redactor::new(&["(".to_string()]).unwrap_err().to_string().contains("\"(\""));
    }

    #[test]
    fn keyed_card_digits_are_found() {
        let keyed: Vec<String> = "1#4242424242424242#".chars().map(|c| c.to_string()).collect();
        let refs: Vec<&str> = keyed.iter().map(String::as_str).collect();
        let m = dtmf_card_mask(&refs);
        assert_eq!(m.iter().filter(|x| **x).count(), 16);
        assert!(!m[0] && !m[1] && m[2] && m[17] && !m[18]);
    }
}

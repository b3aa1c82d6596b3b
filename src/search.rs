//! Keyword matching for `search`: text is cut into tokens (runs of Unicode letters and digits,
//! lower-cased); a keyword word matches when its tokens occur in a row.

/// Cuts `text` into lower-case tokens of letters and digits.
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    each_token(text, |token| {
        out.push(token.to_owned());
        true
    });
    out
}

/// The words of a keyword, each as its tokens.
#[derive(Debug, Clone)]
pub struct Matcher {
    words: Vec<Vec<String>>,
}

impl Matcher {
    /// Splits `keyword` on whitespace; words without tokens are dropped.
    pub fn new(keyword: &str) -> Matcher {
        let words = keyword
            .split_whitespace()
            .map(tokens)
            .filter(|t| !t.is_empty())
            .collect();
        Matcher { words }
    }

    /// A matcher of one word given as its tokens (already cut and lower-cased): a phrase.
    pub fn phrase(tokens: &[String]) -> Matcher {
        Matcher {
            words: vec![tokens.to_vec()],
        }
    }

    /// True when no word has a token: such a keyword matches nothing.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// True when any word occurs in `text` as a whole token or as a phrase.
    ///
    /// Streams through `text` once, keeping only the last few tokens (as many as the longest
    /// word has) in reused buffers: no allocation per token, and an ASCII fast path.
    pub fn matches(&self, text: &str) -> bool {
        let longest = self.words.iter().map(Vec::len).max().unwrap_or(0);
        if longest == 0 {
            return false;
        }
        let mut recent: std::collections::VecDeque<String> =
            std::collections::VecDeque::with_capacity(longest);
        !each_token(text, |token| {
            let mut slot = if recent.len() == longest {
                recent.pop_front().unwrap_or_default()
            } else {
                String::new()
            };
            slot.clear();
            slot.push_str(token);
            recent.push_back(slot);
            let found = self.words.iter().any(|word| {
                recent.len() >= word.len()
                    && recent
                        .iter()
                        .skip(recent.len() - word.len())
                        .zip(word)
                        .all(|(seen, wanted)| seen == wanted)
            });
            !found
        })
    }
}

/// Calls `each` with every token of `text`, in order, through one reused buffer (no
/// allocation per token, an ASCII fast path), until it returns false; true when it never did.
pub fn each_token(text: &str, mut each: impl FnMut(&str) -> bool) -> bool {
    let mut current = String::new();
    for c in text.chars() {
        if c.is_ascii() {
            if c.is_ascii_alphanumeric() {
                current.push(c.to_ascii_lowercase());
                continue;
            }
        } else if c.is_alphanumeric() {
            current.extend(c.to_lowercase());
            continue;
        }
        if !current.is_empty() {
            if !each(&current) {
                return false;
            }
            current.clear();
        }
    }
    current.is_empty() || each(&current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_letter_and_digit_runs_without_case() {
        assert_eq!(tokens("Hello, wörld-42!"), vec!["hello", "wörld", "42"]);
        assert_eq!(tokens("  ,, "), Vec::<String>::new());
    }

    #[test]
    fn a_word_matches_whole_tokens_only() {
        let m = Matcher::new("cat");
        assert!(m.matches("the Cat sat"));
        assert!(!m.matches("concatenate"));
    }

    #[test]
    fn a_word_of_several_tokens_is_a_phrase() {
        let m = Matcher::new("new-york");
        assert!(m.matches("I love New York."));
        assert!(!m.matches("York is new"));
    }

    #[test]
    fn streaming_matches_agree_with_the_token_list() {
        let texts = [
            "",
            "a",
            "New  York, new-york!",
            "ÀÉ straße İstanbul 42x",
            "x y z x y",
        ];
        let words = [
            "new york", "york", "straße", "istanbul", "i", "42x", "x y", "y z x", "q",
        ];
        for text in texts {
            let all = tokens(text);
            for word in words {
                let wanted = tokens(word);
                let by_list =
                    !wanted.is_empty() && all.windows(wanted.len()).any(|w| w == wanted.as_slice());
                let m = Matcher::new(&word.replace(' ', "-"));
                assert_eq!(m.matches(text), by_list, "{word:?} in {text:?}");
            }
        }
    }

    #[test]
    fn quotes_are_separators_and_empty_keywords_match_nothing() {
        assert!(Matcher::new("\"hello\"").matches("hello there"));
        assert!(Matcher::new("\"\" ...").is_empty());
        assert!(!Matcher::new("").matches("anything"));
    }
}

//! Keyword matching for `search`: text is cut into tokens (runs of Unicode letters and digits,
//! lower-cased); a keyword word matches when its tokens occur in a row.

/// Cuts `text` into lower-case tokens of letters and digits.
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() {
            current.extend(c.to_lowercase());
        } else if !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
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

    /// True when no word has a token: such a keyword matches nothing.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// True when any word occurs in `text` as a whole token or as a phrase.
    pub fn matches(&self, text: &str) -> bool {
        if self.is_empty() {
            return false;
        }
        let haystack = tokens(text);
        self.words.iter().any(|word| {
            haystack
                .windows(word.len())
                .any(|window| window == word.as_slice())
        })
    }
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
    fn quotes_are_separators_and_empty_keywords_match_nothing() {
        assert!(Matcher::new("\"hello\"").matches("hello there"));
        assert!(Matcher::new("\"\" ...").is_empty());
        assert!(!Matcher::new("").matches("anything"));
    }
}

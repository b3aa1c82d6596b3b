//! Message-level search beyond the trait: [`MessageQuery`] in, [`MessageHit`]s out, ranked
//! by BM25. This module holds the query's parts (words and quoted phrases), the score and the
//! snippet; the store gathers the docs (`store/searching.rs`).

use chrono::{DateTime, Utc};

use crate::message::ChatMessage;

use crate::search::each_token;

/// Results [`MessageQuery::new`] asks for.
pub const MESSAGE_LIMIT_DEFAULT: usize = 20;
/// BM25's term-frequency saturation.
pub const BM25_K1: f32 = 1.2;
/// BM25's length normalisation.
pub const BM25_B: f32 = 0.75;

/// A message-level search ([`crate::LogStore::search_messages`]). Words are OR-ed; a quoted
/// phrase (or a word of several tokens, such as `new-york`) must appear as written, its
/// tokens in a row. Case is ignored; tokens are cut as the trait's `search` cuts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageQuery {
    /// The words and `"quoted phrases"` to find.
    pub text: String,
    /// Most hits returned (default 20).
    pub limit: usize,
    /// Only this session's messages.
    pub session: Option<String>,
    /// Only messages of sessions with this agent alias.
    pub agent_alias: Option<String>,
    /// Only messages appended at this time or later.
    pub from_time: Option<DateTime<Utc>>,
    /// Only messages appended at this time or earlier.
    pub to_time: Option<DateTime<Utc>>,
}

impl MessageQuery {
    /// A query for `text` over every session, returning at most 20 hits.
    pub fn new(text: impl Into<String>) -> MessageQuery {
        MessageQuery {
            text: text.into(),
            limit: MESSAGE_LIMIT_DEFAULT,
            session: None,
            agent_alias: None,
            from_time: None,
            to_time: None,
        }
    }
}

/// One message found by [`crate::LogStore::search_messages`].
#[derive(Debug, Clone, PartialEq)]
pub struct MessageHit {
    /// The session holding it.
    pub session: String,
    /// Its position in the session's `load`.
    pub index: usize,
    /// When it was appended.
    pub created_at: DateTime<Utc>,
    /// The message.
    pub message: ChatMessage,
    /// Its BM25 score: higher is a better match.
    pub score: f32,
    /// The first matching words in their context (whole words; `…` where the text was cut).
    pub snippet: String,
}

/// One part of a query: a word (one token) or a phrase (tokens in a row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    /// Its tokens, lower-cased.
    pub tokens: Vec<String>,
}

impl Clause {
    /// True for a phrase, which the index cannot confirm alone: the text is read.
    pub fn is_phrase(&self) -> bool {
        self.tokens.len() > 1
    }

    /// True when the tokens occur in a row in `text`.
    pub fn occurs_in(&self, text: &str) -> bool {
        crate::search::Matcher::phrase(&self.tokens).matches(text)
    }
}

/// The clauses of a query's text: each `"quoted phrase"` (an unclosed quote runs to the end),
/// and each whitespace-separated word outside quotes; clauses without tokens are dropped, and
/// repeated ones kept once.
pub fn clauses(text: &str) -> Vec<Clause> {
    let mut out: Vec<Clause> = Vec::new();
    let mut push = |tokens: Vec<String>| {
        if !tokens.is_empty() && !out.iter().any(|c| c.tokens == tokens) {
            out.push(Clause { tokens });
        }
    };
    for (i, part) in text.split('"').enumerate() {
        if i % 2 == 1 {
            push(crate::search::tokens(part));
        } else {
            for word in part.split_whitespace() {
                push(crate::search::tokens(word));
            }
        }
    }
    out
}

/// What BM25 needs of the whole collection.
#[derive(Debug, Clone, Copy)]
pub struct Collection {
    /// Messages searched.
    pub docs: u64,
    /// Their mean length in tokens.
    pub mean_length: f32,
}

impl Collection {
    /// The inverse document frequency of a token held by `df` of the docs.
    pub fn idf(&self, df: u64) -> f32 {
        let n = self.docs as f32;
        let df = df as f32;
        (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
    }

    /// A token's part of a doc's score: `idf` weighted by its frequency `tf` in a doc of
    /// `length` tokens.
    pub fn weight(&self, idf: f32, tf: u32, length: u32) -> f32 {
        let tf = tf as f32;
        let norm = 1.0 - BM25_B + BM25_B * length as f32 / self.mean_length.max(1.0);
        idf * tf * (BM25_K1 + 1.0) / (tf + BM25_K1 * norm)
    }
}

/// Words of context a snippet keeps before its first match.
const BEFORE: usize = 8;
/// Words it keeps from its first match on.
const AFTER: usize = 16;

/// The first place in `text` where a clause occurs, in context: up to 8 words before and 16
/// from it, on whitespace-normalised text, with `…` where it was cut.
pub fn snippet(text: &str, clauses: &[Clause]) -> String {
    // Token spans (byte offsets into `text`) with their lower-cased tokens, read only as far
    // as the snippet needs: the first match and the words after it.
    let mut spans: Vec<(usize, usize, String)> = Vec::new();
    let mut first: Option<usize> = None;
    let longest = clauses.iter().map(|c| c.tokens.len()).max().unwrap_or(0);
    let mut offset = 0;
    for piece in text.split_inclusive(|c: char| !c.is_alphanumeric()) {
        // Done once the context after the earliest match is read and no clause still to end
        // could start before it.
        if first.is_some_and(|f| spans.len() >= f + AFTER && spans.len() >= f + longest) {
            break;
        }
        let word_end = piece
            .char_indices()
            .find(|(_, c)| !c.is_alphanumeric())
            .map_or(piece.len(), |(i, _)| i);
        if word_end > 0 {
            let mut lower = String::new();
            each_token(&piece[..word_end], |t| {
                lower.push_str(t);
                true
            });
            spans.push((offset, offset + word_end, lower));
            let end = spans.len();
            let starts = clauses.iter().filter_map(|c| {
                let n = c.tokens.len();
                (n <= end
                    && c.tokens
                        .iter()
                        .zip(&spans[end - n..])
                        .all(|(t, s)| *t == s.2))
                .then(|| end - n)
            });
            if let Some(start) = starts.min() {
                first = Some(first.map_or(start, |f| f.min(start)));
            }
        }
        offset += piece.len();
    }
    let Some(first) = first else {
        return String::new();
    };
    let from = first.saturating_sub(BEFORE);
    let to = (first + AFTER).min(spans.len()) - 1;
    let (start, end) = (spans[from].0, spans[to].1);
    let mut out = String::new();
    if from > 0 {
        out.push('…');
    }
    out.push_str(
        &text[start..end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    );
    if text[end..].chars().any(char::is_alphanumeric) {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clauses_are_words_and_quoted_phrases() {
        let parts =
            |t: &str| -> Vec<Vec<String>> { clauses(t).into_iter().map(|c| c.tokens).collect() };
        assert_eq!(parts("Order 42"), vec![vec!["order"], vec!["42"]]);
        assert_eq!(
            parts("\"New York\" paris"),
            vec![vec!["new", "york"], vec!["paris"]]
        );
        assert_eq!(parts("new-york NEW-york"), vec![vec!["new", "york"]]);
        assert_eq!(
            parts("\"unclosed phrase here"),
            vec![vec!["unclosed", "phrase", "here"]]
        );
        assert!(parts(" \"\" ,, ").is_empty());
    }

    #[test]
    fn bm25_prefers_rarer_terms_and_shorter_docs() {
        let c = Collection {
            docs: 100,
            mean_length: 10.0,
        };
        assert!(c.idf(1) > c.idf(50));
        assert!(c.weight(1.0, 1, 5) > c.weight(1.0, 1, 50));
        assert!(c.weight(1.0, 3, 10) > c.weight(1.0, 1, 10));
    }

    #[test]
    fn a_snippet_shows_the_first_match_in_context() {
        let text = "one two three four five six seven eight nine ten eleven Zygo twelve";
        let c = clauses("zygo");
        assert_eq!(
            snippet(text, &c),
            "…four five six seven eight nine ten eleven Zygo twelve"
        );
        assert_eq!(
            snippet("a  New\nYork b", &clauses("\"new york\"")),
            "a New York b"
        );
        assert_eq!(snippet("nothing here", &c), "");
        // The earliest match is shown, whichever clause it is of.
        let both = clauses("york \"new york\"");
        assert_eq!(snippet("in new york", &both), "in new york");
        assert_eq!(snippet("x new york", &both[..1]), "x new york");
    }

    #[test]
    fn a_phrase_is_confirmed_on_its_own_tokens() {
        // "İ" lower-cases to "i" and a combining dot: the token keeps both.
        let c = clauses("\"İstanbul airport\"");
        assert!(c[0].occurs_in("to İSTANBUL Airport today"));
        assert!(!c[0].occurs_in("airport İstanbul"));
        assert_eq!(snippet("fly İstanbul airport", &c), "fly İstanbul airport");
    }
}

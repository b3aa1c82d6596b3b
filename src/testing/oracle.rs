//! Search by brute force over the [`Model`]: what `search` and `search_messages` must answer,
//! written as plainly as SEMANTICS.md and `docs/DESIGN.md` ("Search") state it, with no index.

use std::collections::{BTreeMap, BTreeSet};

use crate::search::tokens;

use super::model::Model;

/// True when `phrase` (tokens) occurs in a row in `text`'s tokens.
fn occurs(text: &[String], phrase: &[String]) -> bool {
    !phrase.is_empty() && text.windows(phrase.len()).any(|w| w == phrase)
}

/// A session as the oracle sees it: its key, its name and its messages' contents.
pub type OracleSession = (String, Option<String>, Vec<String>);

/// The model's live, unarchived sessions, as the oracle sees them.
fn searched(model: &Model) -> Vec<OracleSession> {
    model
        .sessions
        .iter()
        .filter(|(_, s)| !s.archived)
        .map(|(key, s)| {
            let texts = s.messages.iter().map(|m| m.content.clone()).collect();
            (key.clone(), s.name.clone(), texts)
        })
        .collect()
}

/// The keys of `sessions` whose key, name or a message holds a word of `keyword` (a word of
/// several tokens as a phrase).
pub fn search_sessions_in(sessions: &[OracleSession], keyword: &str) -> BTreeSet<String> {
    let words: Vec<Vec<String>> = keyword.split_whitespace().map(tokens).collect();
    let hit = |text: &str| {
        let t = tokens(text);
        words.iter().any(|w| occurs(&t, w))
    };
    sessions
        .iter()
        .filter(|(key, name, texts)| {
            hit(key) || name.as_deref().is_some_and(hit) || texts.iter().any(|t| hit(t))
        })
        .map(|(key, _, _)| key.clone())
        .collect()
}

/// Every message of `sessions` that `text` finds, with its BM25 score (k1 1.2, b 0.75), by
/// (session, position).
pub fn search_messages_in(
    sessions: &[OracleSession],
    text: &str,
) -> BTreeMap<(String, usize), f32> {
    let mut clauses: Vec<Vec<String>> = Vec::new();
    for (i, part) in text.split('"').enumerate() {
        let parts: Vec<Vec<String>> = if i % 2 == 1 {
            vec![tokens(part)]
        } else {
            part.split_whitespace().map(tokens).collect()
        };
        for p in parts {
            if !p.is_empty() && !clauses.contains(&p) {
                clauses.push(p);
            }
        }
    }
    let docs: Vec<((String, usize), Vec<String>)> = sessions
        .iter()
        .flat_map(|(key, _, texts)| {
            texts
                .iter()
                .enumerate()
                .map(move |(i, t)| ((key.clone(), i), tokens(t)))
        })
        .collect();
    let n = docs.len() as f32;
    let mean = docs.iter().map(|d| d.1.len()).sum::<usize>() as f32 / n.max(1.0);
    let df = |t: &String| docs.iter().filter(|d| d.1.contains(t)).count() as f32;
    let mut out = BTreeMap::new();
    for (at, toks) in &docs {
        let matched: Vec<&Vec<String>> = clauses.iter().filter(|c| occurs(toks, c)).collect();
        if matched.is_empty() {
            continue;
        }
        let mut score = 0f32;
        for t in matched.into_iter().flatten() {
            let tf = toks.iter().filter(|x| *x == t).count() as f32;
            let d = df(t);
            let idf = (1.0 + (n - d + 0.5) / (d + 0.5)).ln();
            let norm = 0.25 + 0.75 * toks.len() as f32 / mean.max(1.0);
            score += idf * tf * 2.2 / (tf + 1.2 * norm);
        }
        out.insert(at.clone(), score);
    }
    out
}

/// Asserts that `hits` (from `search_messages` with no limit that binds) are what the oracle
/// finds in `sessions`, with its scores, best first.
pub fn assert_hits(
    hits: &[crate::MessageHit],
    sessions: &[OracleSession],
    query: &str,
    when: &str,
) {
    let wanted = search_messages_in(sessions, query);
    let got: BTreeMap<(String, usize), f32> = hits
        .iter()
        .map(|h| ((h.session.clone(), h.index), h.score))
        .collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        wanted.keys().collect::<Vec<_>>(),
        "search_messages {query:?} {when}"
    );
    for (at, score) in &wanted {
        let close = (got[at] - score).abs() <= 1e-3 * score.abs().max(1.0);
        assert!(
            close,
            "score of {at:?} for {query:?} {when}: {} against {score}",
            got[at]
        );
    }
    assert!(
        hits.windows(2).all(|w| w[0].score >= w[1].score),
        "ranked {when}"
    );
}

/// Asserts that `store` answers `query` as the model does, with both searches.
pub fn assert_searches(store: &crate::LogStore, model: &Model, query: &str, when: &str) {
    use crate::SessionBackend;
    let sessions = searched(model);
    let found: BTreeSet<String> = store
        .search(&crate::SessionQuery {
            keyword: Some(query.to_owned()),
            limit: Some(usize::MAX),
        })
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(
        found,
        search_sessions_in(&sessions, query),
        "search {query:?} {when}"
    );
    let hits = store
        .search_messages(&crate::MessageQuery {
            limit: usize::MAX,
            ..crate::MessageQuery::new(query)
        })
        .expect("search_messages");
    assert_hits(&hits, &sessions, query, when);
}

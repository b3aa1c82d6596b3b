//! `sessionlog search`: the best-matching messages with snippets, or (`--sessions`) the
//! sessions the trait's search finds.

use std::io::Write;

use serde_json::json;
use sessionlog::{LogStore, MessageQuery};

use super::CliResult;

/// `search`: the sessions whose messages, key or name hold any of `words`.
pub fn search(store: &LogStore, words: &[String], limit: usize, json: bool) -> CliResult {
    // Read errors fail the command: an empty answer would read as "no match".
    for meta in store.search_sessions(&words.join(" "), limit)? {
        if json {
            outln!(
                "{}",
                json!({
                    "key": meta.key, "name": meta.name, "messages": meta.message_count,
                    "last_activity": meta.last_activity.to_rfc3339()
                })
            );
        } else {
            outln!(
                "{}\t{}\t{}",
                meta.key,
                meta.message_count,
                meta.last_activity.to_rfc3339()
            );
        }
    }
    Ok(())
}

/// `search` without `--sessions`: the best-matching messages, with snippets.
pub fn search_messages(store: &LogStore, query: &MessageQuery, json: bool) -> CliResult {
    for hit in store.search_messages(query)? {
        if json {
            outln!(
                "{}",
                json!({
                    "session": hit.session, "index": hit.index,
                    "created_at": hit.created_at.to_rfc3339(), "role": hit.message.role,
                    "content": hit.message.content, "score": hit.score, "snippet": hit.snippet
                })
            );
        } else {
            outln!(
                "{}\t{}\t{:.3}\t{}",
                hit.session,
                hit.index,
                hit.score,
                hit.snippet
            );
        }
    }
    Ok(())
}

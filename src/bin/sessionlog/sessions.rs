//! `sessionlog ls`, `archive`, `unarchive` and `stats`: which sessions a store holds, archived
//! or not, and their live and dead bytes.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use serde_json::json;
use sessionlog::{ListQuery, LogStore, Options, SessionBackend, SessionMetadata};

use super::{existing, open_store, CliResult};

/// Sessions per page when the archived ones are listed.
const PAGE: usize = 1000;

/// The archived sessions, most recent activity first.
fn archived(store: &LogStore) -> CliResult<Vec<SessionMetadata>> {
    let mut rows = Vec::new();
    let mut query = ListQuery {
        archived: Some(true),
        limit: PAGE,
        ..ListQuery::default()
    };
    loop {
        let page = store.list_page(&query)?;
        rows.extend(page.sessions);
        match page.next {
            Some(next) => query.cursor = Some(next),
            None => return Ok(rows),
        }
    }
}

/// The session `key`, or every session of the store when it is `None`: those listed, then the
/// archived ones.
pub(crate) fn session_keys(store: &LogStore, key: Option<String>) -> CliResult<Vec<String>> {
    Ok(match key {
        Some(key) if store.session_exists(&key) || store.is_archived(&key) => vec![key],
        Some(key) => return Err(format!("no session {key:?} in the store").into()),
        None => {
            let mut keys = store.list_sessions();
            keys.extend(archived(store)?.into_iter().map(|meta| meta.key));
            keys
        }
    })
}

/// `ls`: prints the sessions (the archived ones with `archived`): a table, or one JSON object
/// a line.
pub(crate) fn print_sessions(store: &LogStore, json: bool, archived_only: bool) -> CliResult {
    if !json {
        outln!(
            "{:<28} {:<22} {:>5}  {:<20} {:<20} {:<8} ALIAS",
            "KEY",
            "NAME",
            "MSGS",
            "CREATED",
            "LAST ACTIVITY",
            "STATE"
        );
    }
    let rows = if archived_only {
        archived(store)?
    } else {
        store.list_sessions_with_metadata()
    };
    for meta in rows {
        let state = store
            .get_session_state(&meta.key)
            .ok()
            .flatten()
            .map(|s| s.state)
            .unwrap_or_default();
        if json {
            outln!(
                "{}",
                json!({
                    "key": meta.key, "name": meta.name, "messages": meta.message_count,
                    "created_at": meta.created_at.to_rfc3339(),
                    "last_activity": meta.last_activity.to_rfc3339(),
                    "state": state, "agent_alias": meta.agent_alias, "channel_id": meta.channel_id,
                    "room_id": meta.room_id, "sender_id": meta.sender_id,
                })
            );
        } else {
            outln!(
                "{:<28} {:<22} {:>5}  {:<20} {:<20} {:<8} {}",
                meta.key,
                meta.name.unwrap_or_default(),
                meta.message_count,
                meta.created_at.format("%Y-%m-%d %H:%M:%S"),
                meta.last_activity.format("%Y-%m-%d %H:%M:%S"),
                state,
                meta.agent_alias.unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// `archive` (`archived`) or `unarchive`: exit status 1 when the store has no such session.
pub(crate) fn set_archived(
    dir: &Path,
    key: &str,
    archived: bool,
    options: &Options,
) -> CliResult<ExitCode> {
    let store = existing(dir, |d| open_store(d, options))?;
    let found = if archived {
        store.archive_session(key)?
    } else {
        store.unarchive_session(key)?
    };
    store.close()?;
    let what = if archived { "archived" } else { "unarchived" };
    if found {
        outln!("{what} {key}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("sessionlog: no session {key:?} in {}", dir.display());
        Ok(ExitCode::from(1))
    }
}

/// `stats`: each session's messages and live and dead bytes, and the totals.
pub(crate) fn stats(store: &LogStore, json: bool) -> CliResult {
    let rows = store.stats();
    let (mut messages, mut live, mut dead) = (0, 0, 0);
    if !json {
        outln!(
            "{:<32} {:>8} {:>12} {:>12}",
            "KEY",
            "MSGS",
            "LIVE BYTES",
            "DEAD BYTES"
        );
    }
    for row in &rows {
        messages += row.messages;
        live += row.live_bytes;
        dead += row.dead_bytes;
        if json {
            outln!(
                "{}",
                json!({
                    "key": row.key, "messages": row.messages, "live_bytes": row.live_bytes,
                    "dead_bytes": row.dead_bytes
                })
            );
        } else {
            outln!(
                "{:<32} {:>8} {:>12} {:>12}",
                row.key,
                row.messages,
                row.live_bytes,
                row.dead_bytes
            );
        }
    }
    if json {
        outln!(
            "{}",
            json!({"total": {
                "sessions": rows.len(), "messages": messages, "live_bytes": live,
                "dead_bytes": dead, "compaction_would_reclaim": dead
            }})
        );
    } else {
        outln!(
            "{} sessions, {messages} messages, {live} bytes live, {dead} bytes dead \
             (compaction would reclaim them)",
            rows.len()
        );
    }
    Ok(())
}

//! `sessionlog import`: moving the histories agents keep today into a store.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, Utc};
#[cfg(feature = "sqlite")]
use sessionlog::SessionBackend;
use sessionlog::{ChatMessage, LogStore, Options};

use super::{progress, CliResult};

/// A message to import, with the time it was written.
type Timed = (ChatMessage, DateTime<Utc>);

/// Imports a folder of `<key>.jsonl` files, one `{"role","content"}` object a line. Each
/// file's messages take the file's modification time. A line that does not parse stops that
/// file's import (reported with file and line); a session that already holds the file's first
/// messages gets only the rest, so importing twice adds nothing.
pub fn import_jsonl(dir: &Path, from: &Path, options: &Options) -> CliResult<ExitCode> {
    if !from.is_dir() {
        return Err(format!("{} is not a folder", from.display()).into());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(from)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("{} holds no .jsonl file: nothing to import", from.display()).into());
    }
    let store = open_for_import(dir, options)?;
    let mut failed = false;
    let bar = progress(files.len(), "importing");
    for path in files {
        bar.inc(1);
        let Some(key) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            eprintln!("{}: the file name is not UTF-8; skipped", path.display());
            failed = true;
            continue;
        };
        // Through a checked conversion: chrono's `From<SystemTime>` panics on a time past its
        // range, which some file systems let a file's modification time hold.
        let modified = match std::fs::metadata(&path).and_then(|m| m.modified()) {
            Ok(modified) => modified,
            Err(e) => {
                eprintln!("{}: {e}; this file was not imported", path.display());
                failed = true;
                continue;
            }
        };
        let modified = match modified.duration_since(std::time::UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_micros()).ok(),
            Err(before) => i64::try_from(before.duration().as_micros())
                .ok()
                .map(|m| -m),
        }
        .and_then(chrono::DateTime::from_timestamp_micros)
        .unwrap_or_default();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("{}: {e}; this file was not imported", path.display());
                failed = true;
                continue;
            }
        };
        let mut messages = Vec::new();
        let mut bad = None;
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<ChatMessage>(line) {
                Ok(m) => messages.push(m),
                Err(e) => {
                    bad = Some(format!("{}:{}: {e}", path.display(), n + 1));
                    break;
                }
            }
        }
        if let Some(bad) = bad {
            eprintln!("{bad}; this file was not imported");
            failed = true;
            continue;
        }
        let timed: Vec<Timed> = messages.into_iter().map(|m| (m, modified)).collect();
        failed |= !append_new(&store, &key, &timed, &path.display().to_string())?;
    }
    finish(store, &bar, failed)
}

/// Opens the store to import into, creating it if missing. Its writes are not synced one by
/// one (`Durability::Never`): the close at the end syncs them all, and an import cut short
/// (a crash, a power loss) is simply run again, since a session that holds the first messages
/// of its source gets only the rest.
fn open_for_import(dir: &Path, options: &Options) -> CliResult<LogStore> {
    let options = Options {
        durability: sessionlog::Durability::Never,
        ..options.clone()
    };
    Ok(crate::open_store(dir, &options)?)
}

/// Closes the store after an import: exit status 1 if anything was not imported.
fn finish(store: LogStore, bar: &indicatif::ProgressBar, failed: bool) -> CliResult<ExitCode> {
    bar.finish_and_clear();
    store.close()?;
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Appends to session `key` the messages of `messages` it does not hold yet: the session
/// must hold a prefix of them (then only the rest is appended, so a second import adds
/// nothing). Returns false, appending nothing, when it holds something else.
fn append_new(store: &LogStore, key: &str, messages: &[Timed], source: &str) -> CliResult<bool> {
    // Read errors stop the import: a session read as empty would get every message again.
    let existing: Vec<ChatMessage> = store
        .read_messages(key)
        .map_err(|e| format!("{source}: reading session {key:?} back: {e}"))?
        .into_iter()
        .map(|m| m.message)
        .collect();
    let holds_prefix =
        existing.len() <= messages.len() && existing.iter().zip(messages).all(|(a, (b, _))| a == b);
    if !holds_prefix {
        eprintln!("{source}: session {key:?} already holds other messages; it was not imported");
        return Ok(false);
    }
    let new = &messages[existing.len()..];
    for (done, (message, at)) in new.iter().enumerate() {
        match store.append_at(key, message, *at) {
            Ok(()) => {}
            // This session's own fault: the others are still imported.
            Err(
                e @ (sessionlog::Error::InvalidKey { .. }
                | sessionlog::Error::RecordTooLarge { .. }),
            ) => {
                eprintln!(
                    "{source}: session {key:?}: {e}; {done} of its {} new message(s) imported, \
                     the rest not",
                    new.len()
                );
                return Ok(false);
            }
            Err(e) => return Err(format!("{source}: session {key:?}: {e}").into()),
        }
    }
    outln!(
        "{key}: {} message(s) imported, {} already there",
        new.len(),
        existing.len()
    );
    Ok(true)
}

/// A time as SQLite stores agree to write it: RFC 3339, or SQLite's own `YYYY-MM-DD
/// HH:MM:SS[.fff]` (UTC).
#[cfg(feature = "sqlite")]
fn parse_sqlite_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.to_utc());
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

/// The `session_metadata` columns the SQLite import reads, in `SqliteMetadata`'s order.
#[cfg(feature = "sqlite")]
const METADATA_COLUMNS: [&str; 7] = [
    "name",
    "agent_alias",
    "channel_id",
    "room_id",
    "sender_id",
    "state",
    "turn_id",
];

/// Imports the SQLite layout agents use today: `sessions(id, session_key, role, content,
/// created_at)` and `session_metadata(session_key, name, agent_alias, channel_id, room_id,
/// sender_id, state, turn_id, ...)`; metadata columns a database lacks are skipped. Each
/// message keeps its `created_at`; names, aliases, routing context and state are set where
/// they differ from what the store holds, so importing twice adds nothing. The database is
/// opened read-only. A row whose time does not parse stops that session's import.
#[cfg(feature = "sqlite")]
pub fn import_sqlite(dir: &Path, from: &Path, options: &Options) -> CliResult<ExitCode> {
    use rusqlite::{Connection, OpenFlags};

    if !from.is_file() {
        return Err(format!("{} is not a file", from.display()).into());
    }
    let conn = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let metadata_sql = metadata_sql(&conn)?;
    let keys_sql = if metadata_sql.is_some() {
        "SELECT session_key FROM sessions UNION SELECT session_key FROM session_metadata ORDER BY 1"
    } else {
        "SELECT DISTINCT session_key FROM sessions ORDER BY 1"
    };
    // A key that is not text (NULL, a number) is reported and skipped.
    let cells: Vec<rusqlite::types::Value> = conn
        .prepare(keys_sql)?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let mut failed = false;
    let mut keys = Vec::with_capacity(cells.len());
    for cell in cells {
        match cell {
            rusqlite::types::Value::Text(key) => keys.push(key),
            other => {
                eprintln!(
                    "{}: a session_key of {other:?} is not text; its rows were not imported",
                    from.display()
                );
                failed = true;
            }
        }
    }
    let store = open_for_import(dir, options)?;
    let mut source = SqliteSource {
        conn: &conn,
        from,
        messages: conn.prepare(
            "SELECT id, role, content, created_at FROM sessions WHERE session_key = ?1 ORDER BY id",
        )?,
        metadata_sql,
    };
    let bar = progress(keys.len(), "importing");
    for key in keys {
        bar.inc(1);
        failed |= !source.import_session(&store, &key)?;
    }
    finish(store, &bar, failed)
}

/// The query of a session's row of `session_metadata` (`NULL` for the columns of
/// `METADATA_COLUMNS` it lacks); `None` when the database has no such table.
#[cfg(feature = "sqlite")]
fn metadata_sql(conn: &rusqlite::Connection) -> CliResult<Option<String>> {
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('session_metadata')")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    if columns.is_empty() {
        return Ok(None);
    }
    let select: Vec<&str> = METADATA_COLUMNS
        .iter()
        .map(|c| {
            if columns.iter().any(|have| have == c) {
                *c
            } else {
                "NULL"
            }
        })
        .collect();
    Ok(Some(format!(
        "SELECT {} FROM session_metadata WHERE session_key = ?1",
        select.join(", ")
    )))
}

/// The SQLite database being imported, with its queries.
#[cfg(feature = "sqlite")]
struct SqliteSource<'a> {
    conn: &'a rusqlite::Connection,
    /// The database's path, for the messages about it.
    from: &'a Path,
    /// A session's rows of `sessions`, in order.
    messages: rusqlite::Statement<'a>,
    /// See `metadata_sql`.
    metadata_sql: Option<String>,
}

#[cfg(feature = "sqlite")]
impl SqliteSource<'_> {
    /// Imports session `key`: its messages, then its metadata. Returns false when it was not
    /// imported (the reason printed).
    fn import_session(&mut self, store: &LogStore, key: &str) -> CliResult<bool> {
        let Some(messages) = self.read_messages(key)? else {
            return Ok(false);
        };
        if !append_new(store, key, &messages, &self.from.display().to_string())? {
            return Ok(false);
        }
        match self.read_metadata(key) {
            Ok(Some(metadata)) => metadata.apply(store, key)?,
            Ok(None) => {}
            Err(e) => {
                eprintln!(
                    "{}: the session_metadata row of session {key:?}: {e}; its messages were \
                     imported, its metadata not",
                    self.from.display()
                );
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Session `key`'s messages with their times; `None`, reported, when a row's time does
    /// not parse.
    fn read_messages(&mut self, key: &str) -> CliResult<Option<Vec<Timed>>> {
        let rows: Vec<rusqlite::Result<(i64, String, String, String)>> = self
            .messages
            .query_map([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect();
        // A cell of another type (a NULL content, a time stored as a number) skips the
        // session, reported: the others are still imported.
        let rows = match rows.into_iter().collect::<rusqlite::Result<Vec<_>>>() {
            Ok(rows) => rows,
            Err(e) => {
                eprintln!(
                    "{}: a sessions row of session {key:?}: {e}; the session was not imported",
                    self.from.display()
                );
                return Ok(None);
            }
        };
        let mut messages = Vec::with_capacity(rows.len());
        for (id, role, content, created_at) in rows {
            let Some(at) = parse_sqlite_time(&created_at) else {
                eprintln!(
                    "{}: sessions row {id}: created_at {created_at:?} is not a time; session \
                     {key:?} was not imported",
                    self.from.display()
                );
                return Ok(None);
            };
            messages.push((ChatMessage::new(role, content), at));
        }
        Ok(Some(messages))
    }

    /// Session `key`'s row of `session_metadata`, if the database has that table and row.
    fn read_metadata(&self, key: &str) -> CliResult<Option<SqliteMetadata>> {
        use rusqlite::OptionalExtension;

        let Some(sql) = &self.metadata_sql else {
            return Ok(None);
        };
        let row = self
            .conn
            .query_row(sql, [key], |r| {
                Ok(SqliteMetadata {
                    name: r.get(0)?,
                    agent_alias: r.get(1)?,
                    channel_id: r.get(2)?,
                    room_id: r.get(3)?,
                    sender_id: r.get(4)?,
                    state: r.get(5)?,
                    turn_id: r.get(6)?,
                })
            })
            .optional()?;
        Ok(row)
    }
}

/// A session's row of `session_metadata` (the columns of `METADATA_COLUMNS`).
#[cfg(feature = "sqlite")]
struct SqliteMetadata {
    name: Option<String>,
    agent_alias: Option<String>,
    channel_id: Option<String>,
    room_id: Option<String>,
    sender_id: Option<String>,
    state: Option<String>,
    turn_id: Option<String>,
}

#[cfg(feature = "sqlite")]
impl SqliteMetadata {
    /// Sets on session `key` the name, alias, routing context and state that differ from
    /// what the store holds; what it holds already is not written again.
    fn apply(self, store: &LogStore, key: &str) -> CliResult {
        use sessionlog::SessionContext;

        // The name and alias setters leave the routing fields alone, so one read serves all.
        let held = store.get_session_metadata(key);
        let held = held.as_ref();
        if let Some(name) = differs(&self.name, held.and_then(|m| m.name.as_ref())) {
            store.set_session_name(key, &name)?;
        }
        if let Some(alias) = differs(&self.agent_alias, held.and_then(|m| m.agent_alias.as_ref())) {
            store.set_session_agent_alias(key, &alias)?;
        }
        let context = (
            differs(&self.channel_id, held.and_then(|m| m.channel_id.as_ref())),
            differs(&self.room_id, held.and_then(|m| m.room_id.as_ref())),
            differs(&self.sender_id, held.and_then(|m| m.sender_id.as_ref())),
        );
        if context != (None, None, None) {
            store.set_session_context(
                key,
                SessionContext {
                    channel_id: context.0.as_deref(),
                    room_id: context.1.as_deref(),
                    sender_id: context.2.as_deref(),
                },
            )?;
        }
        if let Some(state) = present(&self.state) {
            let held = store.get_session_state(key)?;
            let same = held
                .as_ref()
                .is_some_and(|h| h.state == state && h.turn_id == self.turn_id);
            if !same {
                store.set_session_state(key, &state, self.turn_id.as_deref())?;
            }
        }
        Ok(())
    }
}

/// A metadata value, unless it is missing or blank.
#[cfg(feature = "sqlite")]
fn present(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .filter(|v| !v.trim().is_empty())
        .map(str::to_owned)
}

/// A metadata value, unless it is missing, blank, or what the store holds (`stored`).
#[cfg(feature = "sqlite")]
fn differs(value: &Option<String>, stored: Option<&String>) -> Option<String> {
    // Both sides trimmed: the store keeps a name as given and trims a context.
    present(value).filter(|v| stored.map(|s| s.trim()) != Some(v.trim()))
}

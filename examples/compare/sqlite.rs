//! The SQLite store as agent runtimes run it today: a `sessions` table with an index on
//! `(session_key, id)`, a `session_metadata` table, an FTS5 index over key and content kept in
//! step by triggers, WAL mode. Written for this comparison from that description.

use std::path::Path;

use chrono::Utc;
use parking_lot::Mutex;
use rusqlite::{params, Connection};
use sessionlog::{ChatMessage, SessionBackend, SessionMetadata, SessionQuery};

/// One connection behind a mutex, as the agent runtimes share it.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_key TEXT NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_sessions_key ON sessions(session_key, id);
CREATE TABLE IF NOT EXISTS session_metadata (
    session_key TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    last_activity TEXT NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0,
    name TEXT,
    agent_alias TEXT,
    channel_id TEXT,
    room_id TEXT,
    sender_id TEXT,
    state TEXT NOT NULL DEFAULT 'idle',
    turn_id TEXT,
    turn_started_at TEXT
);
CREATE VIRTUAL TABLE IF NOT EXISTS sessions_fts USING fts5(
    session_key, content, content='sessions', content_rowid='id'
);
CREATE TRIGGER IF NOT EXISTS sessions_ai AFTER INSERT ON sessions BEGIN
    INSERT INTO sessions_fts(rowid, session_key, content)
    VALUES (new.id, new.session_key, new.content);
END;
CREATE TRIGGER IF NOT EXISTS sessions_ad AFTER DELETE ON sessions BEGIN
    INSERT INTO sessions_fts(sessions_fts, rowid, session_key, content)
    VALUES ('delete', old.id, old.session_key, old.content);
END;
CREATE TRIGGER IF NOT EXISTS sessions_au AFTER UPDATE ON sessions BEGIN
    INSERT INTO sessions_fts(sessions_fts, rowid, session_key, content)
    VALUES ('delete', old.id, old.session_key, old.content);
    INSERT INTO sessions_fts(rowid, session_key, content)
    VALUES (new.id, new.session_key, new.content);
END;
";

impl SqliteStore {
    /// Opens `dir/sessions.db` with `synchronous=FULL` (`full`) or `NORMAL`.
    pub fn open(dir: &Path, full: bool) -> rusqlite::Result<SqliteStore> {
        std::fs::create_dir_all(dir).ok();
        let conn = Connection::open(dir.join("sessions.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", if full { "FULL" } else { "NORMAL" })?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    /// Appends many messages in one transaction (to build large stores quickly; not timed).
    pub fn bulk_append(&self, key: &str, messages: &[ChatMessage]) -> rusqlite::Result<()> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        for m in messages {
            append_in(&tx, key, m)?;
        }
        tx.commit()
    }
}

fn append_in(conn: &Connection, key: &str, message: &ChatMessage) -> rusqlite::Result<()> {
    let now = Utc::now().to_rfc3339();
    conn.execute(
        "INSERT INTO sessions (session_key, role, content, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![key, message.role, message.content, now],
    )?;
    conn.execute(
        "INSERT INTO session_metadata (session_key, created_at, last_activity, message_count)
         VALUES (?1, ?2, ?2, 1)
         ON CONFLICT(session_key) DO UPDATE SET
            last_activity = excluded.last_activity,
            message_count = message_count + 1",
        params![key, now],
    )?;
    Ok(())
}

fn io(e: rusqlite::Error) -> std::io::Error {
    std::io::Error::other(e)
}

fn parse_time(text: &str) -> chrono::DateTime<Utc> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

impl SessionBackend for SqliteStore {
    fn load(&self, session_key: &str) -> Vec<ChatMessage> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare_cached("SELECT role, content FROM sessions WHERE session_key = ?1 ORDER BY id")
            .unwrap();
        stmt.query_map([session_key], |row| {
            Ok(ChatMessage {
                role: row.get(0)?,
                content: row.get(1)?,
            })
        })
        .unwrap()
        .filter_map(Result::ok)
        .collect()
    }

    fn append(&self, session_key: &str, message: &ChatMessage) -> std::io::Result<()> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction().map_err(io)?;
        append_in(&tx, session_key, message).map_err(io)?;
        tx.commit().map_err(io)
    }

    fn remove_last(&self, session_key: &str) -> std::io::Result<bool> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction().map_err(io)?;
        let removed = tx
            .execute(
                "DELETE FROM sessions WHERE id = \
                 (SELECT MAX(id) FROM sessions WHERE session_key = ?1)",
                [session_key],
            )
            .map_err(io)?;
        tx.execute(
            "UPDATE session_metadata SET message_count = message_count - ?2 WHERE session_key = ?1",
            params![session_key, removed as i64],
        )
        .map_err(io)?;
        tx.commit().map_err(io)?;
        Ok(removed > 0)
    }

    fn update_last(&self, session_key: &str, message: &ChatMessage) -> std::io::Result<bool> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction().map_err(io)?;
        let updated = tx
            .execute(
                "UPDATE sessions SET role = ?2, content = ?3
                 WHERE id = (SELECT MAX(id) FROM sessions WHERE session_key = ?1)",
                params![session_key, message.role, message.content],
            )
            .map_err(io)?;
        tx.execute(
            "UPDATE session_metadata SET last_activity = ?2 WHERE session_key = ?1",
            params![session_key, Utc::now().to_rfc3339()],
        )
        .map_err(io)?;
        tx.commit().map_err(io)?;
        Ok(updated > 0)
    }

    fn list_sessions(&self) -> Vec<String> {
        self.list_sessions_with_metadata()
            .into_iter()
            .map(|m| m.key)
            .collect()
    }

    fn list_sessions_with_metadata(&self) -> Vec<SessionMetadata> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT session_key, name, created_at, last_activity, message_count, agent_alias,
                        channel_id, room_id, sender_id
                 FROM session_metadata ORDER BY last_activity DESC, session_key",
            )
            .unwrap();
        stmt.query_map([], |row| {
            Ok(SessionMetadata {
                key: row.get(0)?,
                name: row.get(1)?,
                created_at: parse_time(&row.get::<_, String>(2)?),
                last_activity: parse_time(&row.get::<_, String>(3)?),
                message_count: row.get::<_, i64>(4)? as usize,
                agent_alias: row.get(5)?,
                channel_id: row.get(6)?,
                room_id: row.get(7)?,
                sender_id: row.get(8)?,
            })
        })
        .unwrap()
        .filter_map(Result::ok)
        .collect()
    }

    fn search(&self, query: &SessionQuery) -> Vec<SessionMetadata> {
        self.search_sessions(query)
    }
}

impl SqliteStore {
    /// The best `limit` messages holding `word`, as FTS5 ranks them (BM25), with a snippet:
    /// what `search_messages` answers. Returns (session, content, snippet) rows.
    pub fn search_ranked(&self, word: &str, limit: usize) -> Vec<(String, String, String)> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT session_key, content, snippet(sessions_fts, 1, '', '', '…', 24)
                 FROM sessions_fts WHERE sessions_fts MATCH ?1 ORDER BY rank LIMIT ?2",
            )
            .unwrap();
        let phrase = format!("\"{}\"", word.replace('"', ""));
        stmt.query_map(params![phrase, limit as i64], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .unwrap()
        .filter_map(Result::ok)
        .collect()
    }

    fn search_sessions(&self, query: &SessionQuery) -> Vec<SessionMetadata> {
        let Some(keyword) = &query.keyword else {
            return self.list_sessions_with_metadata();
        };
        // The same answer as the contract asks: matching sessions, most recent activity first,
        // at most `limit` of them.
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT m.session_key, m.message_count FROM session_metadata m
                 WHERE m.session_key IN
                     (SELECT session_key FROM sessions_fts WHERE sessions_fts MATCH ?1)
                 ORDER BY m.last_activity DESC LIMIT ?2",
            )
            .unwrap();
        let phrase = format!("\"{}\"", keyword.replace('"', ""));
        let limit = query.limit.unwrap_or(50) as i64;
        stmt.query_map(params![phrase, limit], |row| {
            Ok(SessionMetadata {
                key: row.get(0)?,
                name: None,
                created_at: Utc::now(),
                last_activity: Utc::now(),
                message_count: row.get::<_, i64>(1)? as usize,
                agent_alias: None,
                channel_id: None,
                room_id: None,
                sender_id: None,
            })
        })
        .unwrap()
        .filter_map(Result::ok)
        .collect()
    }
}

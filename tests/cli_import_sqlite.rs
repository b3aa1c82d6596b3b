//! `sessionlog import --from-sqlite`: the SQLite layout agents use today, built here with
//! rusqlite, moves into a store with every message's time and each session's name, alias,
//! routing context and state; a bad row stops only its session; a second import adds nothing;
//! the database is only read.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use rusqlite::{params, Connection};
use sessionlog::{ChatMessage, EventFilter, LogStore, SessionBackend};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sessionlog"))
        .args(args)
        .output()
        .unwrap()
}

fn build_database(path: &Path) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE sessions (id INTEGER PRIMARY KEY AUTOINCREMENT, session_key TEXT NOT NULL,
             role TEXT NOT NULL, content TEXT NOT NULL, created_at TEXT NOT NULL);
         CREATE TABLE session_metadata (session_key TEXT PRIMARY KEY, created_at TEXT NOT NULL,
             last_activity TEXT NOT NULL, message_count INTEGER NOT NULL DEFAULT 0, name TEXT,
             agent_alias TEXT, channel_id TEXT, sender_id TEXT,
             state TEXT NOT NULL DEFAULT 'idle', turn_id TEXT);",
    )
    .unwrap();
    let rows = [
        (
            "telegram:42",
            "user",
            "find a cabin",
            "2025-03-01T10:00:00Z",
        ),
        ("discord/7", "user", "status?", "2025-03-01 11:00:00"),
        (
            "telegram:42",
            "assistant",
            "three are free",
            "2025-03-01T10:00:05.250Z",
        ),
        ("broken", "user", "fine", "2025-03-01T09:00:00Z"),
        ("broken", "user", "bad time", "yesterday"),
    ];
    for (key, role, content, at) in rows {
        conn.execute(
            "INSERT INTO sessions (session_key, role, content, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![key, role, content, at],
        )
        .unwrap();
    }
    conn.execute(
        "INSERT INTO session_metadata (session_key, created_at, last_activity, message_count,
             name, agent_alias, channel_id, sender_id, state, turn_id)
         VALUES ('telegram:42', '2025-03-01T10:00:00Z', '2025-03-01T10:00:05Z', 2,
             'trip', 'planner', 'telegram.main', '42', 'running', 'turn-9')",
        [],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO session_metadata (session_key, created_at, last_activity, name)
         VALUES ('metadata-only', '2025-03-01T08:00:00Z', '2025-03-01T08:00:00Z', ' empty ')",
        [],
    )
    .unwrap();
}

#[test]
fn a_sqlite_database_moves_in_with_times_and_metadata_once() {
    let source = tempfile::tempdir().unwrap();
    let db = source.path().join("sessions.db");
    build_database(&db);
    let db_before = std::fs::read(&db).unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let args = [
        "import",
        store_dir.path().to_str().unwrap(),
        "--from-sqlite",
        db.to_str().unwrap(),
    ];

    let first = run(&args);
    assert_eq!(first.status.code(), Some(1), "the bad row is a failure");
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(
        stderr.contains("row 5") && stderr.contains("\"broken\""),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        stdout.contains("telegram:42: 2 message(s) imported"),
        "{stdout}"
    );

    let store = LogStore::open(store_dir.path()).unwrap();
    assert!(
        !store.session_exists("broken"),
        "a bad row stops its session"
    );
    let messages = store.load_with_timestamps("telegram:42");
    assert_eq!(
        messages
            .iter()
            .map(|m| m.message.clone())
            .collect::<Vec<_>>(),
        vec![
            user("find a cabin"),
            ChatMessage::assistant("three are free")
        ]
    );
    let times: Vec<String> = messages
        .iter()
        .map(|m| m.created_at.unwrap().to_rfc3339())
        .collect();
    assert_eq!(
        times,
        ["2025-03-01T10:00:00+00:00", "2025-03-01T10:00:05.250+00:00"]
    );
    let meta = store.get_session_metadata("telegram:42").unwrap();
    assert_eq!(meta.name.as_deref(), Some("trip"));
    assert_eq!(meta.agent_alias.as_deref(), Some("planner"));
    assert_eq!(meta.channel_id.as_deref(), Some("telegram.main"));
    assert_eq!(meta.sender_id.as_deref(), Some("42"));
    assert_eq!(meta.room_id, None, "a column the database lacks is skipped");
    let state = store.get_session_state("telegram:42").unwrap().unwrap();
    assert_eq!(
        (state.state.as_str(), state.turn_id.as_deref()),
        ("running", Some("turn-9"))
    );
    let discord = store.load_with_timestamps("discord/7");
    assert_eq!(
        discord[0].created_at.unwrap().to_rfc3339(),
        "2025-03-01T11:00:00+00:00",
        "SQLite's own time format"
    );
    assert_eq!(
        store.get_session_name("metadata-only").unwrap().as_deref(),
        Some(" empty "),
        "a name as the database holds it (and, spaces and all, not written again below)"
    );
    let events = store.events(EventFilter::all()).unwrap().count();
    drop(store);

    let second = run(&args);
    assert_eq!(second.status.code(), Some(1), "the bad row is still bad");
    assert!(String::from_utf8_lossy(&second.stdout)
        .contains("telegram:42: 0 message(s) imported, 2 already there"));
    let store = LogStore::open(store_dir.path()).unwrap();
    assert_eq!(
        store.events(EventFilter::all()).unwrap().count(),
        events,
        "a second import writes nothing"
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        db_before,
        "the database is only read"
    );
}

#[test]
fn import_needs_exactly_one_source() {
    let store_dir = tempfile::tempdir().unwrap();
    let d = store_dir.path().to_str().unwrap();
    assert_eq!(run(&["import", d]).status.code(), Some(2));
    assert_eq!(
        run(&["import", d, "--from-jsonl", "a", "--from-sqlite", "b"])
            .status
            .code(),
        Some(2)
    );
    let missing = run(&["import", d, "--from-sqlite", "/nonexistent/db.sqlite"]);
    assert_eq!(missing.status.code(), Some(2));
}

/// Cells of another type than the layout's (a NULL content, a time stored as a number, a NULL
/// key) skip their session, reported by name, with exit status 1: every other session is
/// imported.
#[test]
fn a_cell_of_another_type_skips_only_its_session() {
    let source = tempfile::tempdir().unwrap();
    let db = source.path().join("agents.db");
    let conn = Connection::open(&db).unwrap();
    // No constraints: what a loosely kept database may hold.
    conn.execute_batch(
        "CREATE TABLE sessions (id INTEGER PRIMARY KEY AUTOINCREMENT, session_key TEXT,
             role TEXT, content TEXT, created_at TEXT);",
    )
    .unwrap();
    let rows: [(Option<&str>, &str, Option<&str>, rusqlite::types::Value); 4] = [
        (
            Some("good"),
            "user",
            Some("kept"),
            "2025-03-01T10:00:00Z".to_string().into(),
        ),
        (
            Some("null content"),
            "assistant",
            None,
            "2025-03-01T10:00:01Z".to_string().into(),
        ),
        (
            Some("number time"),
            "user",
            Some("x"),
            1_700_000_000i64.into(),
        ),
        (
            None,
            "user",
            Some("no key"),
            "2025-03-01T10:00:02Z".to_string().into(),
        ),
    ];
    for (key, role, content, at) in rows {
        conn.execute(
            "INSERT INTO sessions (session_key, role, content, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![key, role, content, at],
        )
        .unwrap();
    }
    drop(conn);
    let store_dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "import",
        store_dir.path().to_str().unwrap(),
        "--from-sqlite",
        db.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"null content\""), "{err}");
    assert!(err.contains("\"number time\""), "{err}");
    assert!(err.contains("Null"), "{err}");
    let store = LogStore::open(store_dir.path()).unwrap();
    assert_eq!(store.load("good"), vec![user("kept")]);
    assert!(!store.session_exists("null content"));
    assert!(!store.session_exists("number time"));
}

//! `list_page`: filtered pages of the live sessions, most recent activity first, with a cursor
//! that walks all of them exactly once while nothing changes.

mod common;

use common::*;
use sessionlog::{Error, ListQuery, LogStore, SessionBackend, SessionContext};

fn build(store: &LogStore) {
    for i in 0..30 {
        let key = format!("s{i:02}");
        store.append(&key, &user("hello")).unwrap();
        store
            .set_session_agent_alias(&key, if i % 3 == 0 { "planner" } else { "coder" })
            .unwrap();
        store
            .set_session_context(
                &key,
                SessionContext {
                    channel_id: Some(if i % 2 == 0 {
                        "telegram.main"
                    } else {
                        "discord.x"
                    }),
                    room_id: None,
                    sender_id: Some(&format!("u{}", i % 5)),
                },
            )
            .unwrap();
        if i % 4 == 0 {
            store.set_session_state(&key, "running", Some("t")).unwrap();
        }
        store.set_session_name(&key, &format!("trip {i}")).unwrap();
    }
    store.delete_session("s05").unwrap();
}

fn all_pages(store: &LogStore, mut query: ListQuery) -> Vec<String> {
    let mut keys = Vec::new();
    loop {
        let page = store.list_page(&query).unwrap();
        let limit = if query.limit == 0 { 50 } else { query.limit };
        assert!(page.sessions.len() <= limit);
        keys.extend(page.sessions.into_iter().map(|m| m.key));
        match page.next {
            Some(next) => query.cursor = Some(next),
            None => return keys,
        }
    }
}

#[test]
fn pages_walk_every_session_once_in_activity_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fast(dir.path());
    build(&store);
    let expected = store.list_sessions();
    assert_eq!(expected.len(), 29);
    for limit in [1, 7, 29, 100] {
        let query = ListQuery {
            limit,
            ..ListQuery::default()
        };
        assert_eq!(all_pages(&store, query), expected, "limit {limit}");
    }
    // The same after a reopen (checkpoint) and after a replay.
    drop(store);
    let store = open_fast(dir.path());
    assert!(store.recovery_report().from_checkpoint);
    assert_eq!(all_pages(&store, ListQuery::default()), expected);
    // Without the checkpoint the clean close wrote, open has to replay every segment.
    drop(store);
    std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
    let store = open_fast(dir.path());
    let report = store.recovery_report();
    assert!(!report.from_checkpoint, "{report:?}");
    assert!(report.findings.is_empty(), "{report:?}");
    assert_eq!(store.list_sessions(), expected);
    for limit in [1, 7, 29, 100] {
        let query = ListQuery {
            limit,
            ..ListQuery::default()
        };
        assert_eq!(
            all_pages(&store, query),
            expected,
            "replayed, limit {limit}"
        );
    }
}

#[test]
fn every_filter_selects_what_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fast(dir.path());
    build(&store);
    let metadata = store.list_sessions_with_metadata();
    let check = |query: ListQuery, keep: &dyn Fn(&sessionlog::SessionMetadata) -> bool| {
        let expected: Vec<String> = metadata
            .iter()
            .filter(|m| keep(m))
            .map(|m| m.key.clone())
            .collect();
        assert!(!expected.is_empty());
        let got = all_pages(
            &store,
            ListQuery {
                limit: 4,
                ..query.clone()
            },
        );
        assert_eq!(got, expected, "{query:?}");
    };
    check(
        ListQuery {
            agent_alias: Some("planner".into()),
            ..ListQuery::default()
        },
        &|m| m.agent_alias.as_deref() == Some("planner"),
    );
    check(
        ListQuery {
            channel_id: Some("discord.x".into()),
            sender_id: Some("u1".into()),
            ..ListQuery::default()
        },
        &|m| m.channel_id.as_deref() == Some("discord.x") && m.sender_id.as_deref() == Some("u1"),
    );
    check(
        ListQuery {
            state: Some("running".into()),
            ..ListQuery::default()
        },
        &|m| store.get_session_state(&m.key).unwrap().unwrap().state == "running",
    );
    check(
        ListQuery {
            name_prefix: Some("trip 1".into()),
            ..ListQuery::default()
        },
        &|m| m.name.as_deref().is_some_and(|n| n.starts_with("trip 1")),
    );
    assert!(store
        .list_page(&ListQuery {
            room_id: Some("none".into()),
            ..ListQuery::default()
        })
        .unwrap()
        .sessions
        .is_empty());
}

#[test]
fn the_activity_window_and_fresh_activity_reorder_the_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fast(dir.path());
    build(&store);
    let metadata = store.list_sessions_with_metadata();
    let middle = metadata[10].last_activity;
    let since = all_pages(
        &store,
        ListQuery {
            active_since: Some(middle),
            limit: 3,
            ..ListQuery::default()
        },
    );
    let expected: Vec<String> = metadata
        .iter()
        .filter(|m| m.last_activity >= middle)
        .map(|m| m.key.clone())
        .collect();
    assert_eq!(since, expected);
    let before = all_pages(
        &store,
        ListQuery {
            active_before: Some(middle),
            limit: 3,
            ..ListQuery::default()
        },
    );
    let expected: Vec<String> = metadata
        .iter()
        .filter(|m| m.last_activity < middle)
        .map(|m| m.key.clone())
        .collect();
    assert_eq!(before, expected);
    // An append moves a session to the front.
    store.append("s00", &user("again")).unwrap();
    let first = store.list_page(&ListQuery::default()).unwrap();
    assert_eq!(first.sessions[0].key, "s00");
}

#[test]
fn a_cursor_the_store_did_not_give_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fast(dir.path());
    build(&store);
    let bad = ListQuery {
        cursor: Some("not a cursor".into()),
        ..ListQuery::default()
    };
    assert!(matches!(
        store.list_page(&bad),
        Err(Error::InvalidCursor { .. })
    ));
}

//! Metadata and attribution behave as SEMANTICS.md says: existence, metadata rows, the four
//! setters (which all create a session), context merging, state and running/stuck lists.

mod common;

use std::time::Duration;

use common::*;
use sessionlog::{SessionBackend, SessionContext};

#[test]
fn every_setter_creates_the_session_with_last_activity_equal_to_created_at() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.set_session_name("a", "name").unwrap();
    store.set_session_agent_alias("b", "alias").unwrap();
    store
        .set_session_context(
            "c",
            SessionContext {
                channel_id: Some("discord.x"),
                ..Default::default()
            },
        )
        .unwrap();
    store.set_session_state("d", "running", Some("t")).unwrap();
    for key in ["a", "b", "c", "d"] {
        assert!(store.session_exists(key), "{key}");
        let meta = store.get_session_metadata(key).unwrap();
        assert_eq!(meta.message_count, 0);
        assert_eq!(meta.last_activity, meta.created_at, "{key}");
    }
}

#[test]
fn setters_never_change_last_activity() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("k", &user("x")).unwrap();
    let activity = store.get_session_metadata("k").unwrap().last_activity;
    std::thread::sleep(Duration::from_millis(2));
    store.set_session_name("k", "n").unwrap();
    store.set_session_agent_alias("k", "a").unwrap();
    store
        .set_session_context(
            "k",
            SessionContext {
                room_id: Some("r"),
                ..Default::default()
            },
        )
        .unwrap();
    store.set_session_state("k", "running", None).unwrap();
    assert_eq!(
        store.get_session_metadata("k").unwrap().last_activity,
        activity
    );
}

#[test]
fn empty_name_and_alias_clear_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.get_session_name("k").unwrap(), None);
    assert_eq!(store.get_session_agent_alias("k").unwrap(), None);
    store.set_session_name("k", "n").unwrap();
    store.set_session_agent_alias("k", "a").unwrap();
    assert_eq!(store.get_session_name("k").unwrap().as_deref(), Some("n"));
    assert_eq!(
        store.get_session_agent_alias("k").unwrap().as_deref(),
        Some("a")
    );
    store.set_session_name("k", "").unwrap();
    store.set_session_agent_alias("k", "").unwrap();
    assert_eq!(store.get_session_name("k").unwrap(), None);
    assert_eq!(store.get_session_agent_alias("k").unwrap(), None);
    let meta = store.get_session_metadata("k").unwrap();
    assert_eq!((meta.name, meta.agent_alias), (None, None));
}

#[test]
fn context_is_additive_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .set_session_context(
            "k",
            SessionContext {
                channel_id: Some(" discord.clamps "),
                room_id: Some("room-1"),
                sender_id: None,
            },
        )
        .unwrap();
    store
        .set_session_context(
            "k",
            SessionContext {
                channel_id: None,
                room_id: Some("   "),
                sender_id: Some("bob"),
            },
        )
        .unwrap();
    let meta = store.get_session_metadata("k").unwrap();
    assert_eq!(meta.channel_id.as_deref(), Some("discord.clamps"));
    assert_eq!(
        meta.room_id.as_deref(),
        Some("room-1"),
        "blank keeps the stored value"
    );
    assert_eq!(meta.sender_id.as_deref(), Some("bob"));
    drop(store);
    let meta = open(dir.path()).get_session_metadata("k").unwrap();
    assert_eq!(meta.channel_id.as_deref(), Some("discord.clamps"));
    assert_eq!(meta.room_id.as_deref(), Some("room-1"));
}

#[test]
fn metadata_of_a_missing_session_is_none_and_of_an_empty_one_is_zero() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(store.get_session_metadata("nope").is_none());
    assert!(store.get_session_state("nope").unwrap().is_none());
    store.append("k", &user("x")).unwrap();
    store.remove_last("k").unwrap();
    let meta = store.get_session_metadata("k").unwrap();
    assert_eq!(meta.message_count, 0);
    assert!(store.session_exists("k"));
}

#[test]
fn get_session_metadata_equals_the_listed_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, "a", "x", 3);
    store.set_session_name("a", "n").unwrap();
    store
        .set_session_context(
            "b",
            SessionContext {
                sender_id: Some("s"),
                ..Default::default()
            },
        )
        .unwrap();
    for row in store.list_sessions_with_metadata() {
        let single = store.get_session_metadata(&row.key).unwrap();
        assert_eq!(format!("{row:?}"), format!("{single:?}"));
        assert_eq!(row.message_count, store.load(&row.key).len());
    }
}

#[test]
fn state_records_turn_and_start_time_only_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .set_session_state("k", "running", Some("turn-1"))
        .unwrap();
    let first = store.get_session_state("k").unwrap().unwrap();
    assert_eq!(first.state, "running");
    assert_eq!(first.turn_id.as_deref(), Some("turn-1"));
    let started = first.turn_started_at.expect("set while running");
    std::thread::sleep(Duration::from_millis(2));
    store
        .set_session_state("k", "running", Some("turn-2"))
        .unwrap();
    let second = store.get_session_state("k").unwrap().unwrap();
    assert!(
        second.turn_started_at.unwrap() > started,
        "set again on each running call"
    );
    store
        .set_session_state("k", "error", Some("turn-2"))
        .unwrap();
    let error = store.get_session_state("k").unwrap().unwrap();
    assert_eq!(error.state, "error");
    assert_eq!(error.turn_id.as_deref(), Some("turn-2"));
    assert_eq!(error.turn_started_at, None);
    store.set_session_state("k", "idle", None).unwrap();
    assert_eq!(store.get_session_state("k").unwrap().unwrap().turn_id, None);
}

#[test]
fn running_sessions_are_listed_newest_first_and_stuck_ones_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.set_session_state("old", "running", None).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    store.set_session_state("mid", "running", None).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    store.set_session_state("new", "running", None).unwrap();
    store.set_session_state("idle", "idle", None).unwrap();
    store.set_session_state("was", "running", None).unwrap();
    store.set_session_state("was", "idle", None).unwrap();
    let running: Vec<String> = store
        .list_running_sessions()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(running, ["new", "mid", "old"]);
    std::thread::sleep(Duration::from_millis(5));
    let stuck: Vec<String> = store
        .list_stuck_sessions(0)
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(stuck, ["old", "mid", "new"]);
    assert!(store.list_stuck_sessions(3600).is_empty());
}

#[test]
fn metadata_survives_reopen_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.set_session_name("k", "name").unwrap();
    store.set_session_agent_alias("k", "alias").unwrap();
    store
        .set_session_context(
            "k",
            SessionContext {
                channel_id: Some("c"),
                room_id: Some("r"),
                sender_id: Some("s"),
            },
        )
        .unwrap();
    store.set_session_state("k", "running", Some("t")).unwrap();
    fill(&store, "k", "m", 2);
    let before = observe(&store);
    drop(store);
    assert_eq!(observe(&open(dir.path())), before);
}

/// An empty or over-long key is a missing session to every call that cannot create one.
#[test]
fn calls_that_cannot_create_a_session_treat_an_invalid_key_as_missing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("k", &user("x")).unwrap();
    let long = "k".repeat(1025);
    for key in ["", long.as_str()] {
        assert!(!store.session_exists(key));
        assert!(store.load(key).is_empty());
        assert!(store.load_with_timestamps(key).is_empty());
        assert!(store.get_session_metadata(key).is_none());
        assert_eq!(store.get_session_name(key).unwrap(), None);
        assert_eq!(store.get_session_agent_alias(key).unwrap(), None);
        assert!(store.get_session_state(key).unwrap().is_none());
        assert!(!store.update_last(key, &user("y")).unwrap());
        assert!(!store.remove_last(key).unwrap());
        assert_eq!(store.clear_messages(key).unwrap(), 0);
        assert!(!store.delete_session(key).unwrap());
        store.compact(key).unwrap();
    }
    assert_eq!(store.list_sessions(), ["k"]);
}

/// A context with every field `None` keeps every stored value and `last_activity`; on a
/// missing session it creates it, as every setter does.
#[test]
fn a_context_with_no_field_changes_nothing_but_creates_a_missing_session() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let context = SessionContext {
        channel_id: Some("c"),
        room_id: Some("r"),
        sender_id: Some("s"),
    };
    store.set_session_context("k", context).unwrap();
    let before = store.get_session_metadata("k").unwrap();
    std::thread::sleep(Duration::from_millis(2));
    store
        .set_session_context("k", SessionContext::default())
        .unwrap();
    let after = store.get_session_metadata("k").unwrap();
    assert_eq!(format!("{after:?}"), format!("{before:?}"));
    store
        .set_session_context("new", SessionContext::default())
        .unwrap();
    let new = store.get_session_metadata("new").unwrap();
    assert_eq!(new.last_activity, new.created_at);
}

/// After reopening (sessions read from the checkpoint, none touched yet), each session's
/// metadata still equals its row in the list, field by field.
#[test]
fn get_session_metadata_equals_the_listed_row_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, "a", "x", 3);
    store.set_session_name("a", "n").unwrap();
    store.set_session_agent_alias("b", "alias").unwrap();
    store.set_session_state("c", "running", Some("t")).unwrap();
    store.close().unwrap();
    let store = open(dir.path());
    let rows = store.list_sessions_with_metadata();
    assert_eq!(rows.len(), 3);
    for row in rows {
        let single = store.get_session_metadata(&row.key).unwrap();
        assert_eq!(format!("{row:?}"), format!("{single:?}"));
        assert_eq!(row.message_count, store.load(&row.key).len());
    }
}

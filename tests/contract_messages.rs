//! The message methods of the trait behave as SEMANTICS.md says: append, load, timestamps,
//! update_last, remove_last, clear_messages, delete_session and compact.

mod common;

use std::time::Duration;

use common::*;
use sessionlog::{ChatMessage, SessionBackend};

#[test]
fn append_then_load_returns_messages_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(store.load("k").is_empty());
    store.append("k", &ChatMessage::system("s")).unwrap();
    store.append("k", &ChatMessage::user("u")).unwrap();
    store.append("k", &ChatMessage::assistant("a")).unwrap();
    store.append("k", &ChatMessage::tool("t")).unwrap();
    let expected = vec![
        ChatMessage::system("s"),
        ChatMessage::user("u"),
        ChatMessage::assistant("a"),
        ChatMessage::tool("t"),
    ];
    assert_eq!(store.load("k"), expected);
    drop(store);
    assert_eq!(open(dir.path()).load("k"), expected);
}

#[test]
fn chat_message_serialises_as_role_and_content() {
    let json = serde_json::to_string(&ChatMessage::user("hi")).unwrap();
    assert_eq!(json, r#"{"role":"user","content":"hi"}"#);
    let back: ChatMessage = serde_json::from_str(&json).unwrap();
    assert_eq!(back, ChatMessage::user("hi"));
}

#[test]
fn append_creates_the_session_with_fresh_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(!store.session_exists("k"));
    store.append("k", &user("hello")).unwrap();
    let meta = store.get_session_metadata("k").unwrap();
    assert_eq!(meta.message_count, 1);
    assert_eq!(meta.name, None);
    assert_eq!(meta.agent_alias, None);
    assert_eq!(meta.channel_id, None);
    let state = store.get_session_state("k").unwrap().unwrap();
    assert_eq!(state.state, "idle");
    assert_eq!(state.turn_id, None);
    assert_eq!(state.turn_started_at, None);
    let stamped = store.load_with_timestamps("k");
    assert_eq!(stamped[0].created_at, Some(meta.created_at));
    assert_eq!(meta.last_activity, meta.created_at);
}

#[test]
fn timestamps_are_append_times_and_survive_update_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("k", &user("a")).unwrap();
    std::thread::sleep(Duration::from_millis(2));
    store.append("k", &ChatMessage::assistant("")).unwrap();
    let before = store.load_with_timestamps("k");
    assert!(before.iter().all(|m| m.created_at.is_some()));
    assert!(before[0].created_at < before[1].created_at);
    std::thread::sleep(Duration::from_millis(2));
    assert!(store
        .update_last("k", &ChatMessage::assistant("done"))
        .unwrap());
    let after = store.load_with_timestamps("k");
    assert_eq!(
        after[1].created_at, before[1].created_at,
        "update_last keeps the time"
    );
    assert_eq!(after[1].message, ChatMessage::assistant("done"));
    let meta = store.get_session_metadata("k").unwrap();
    assert!(meta.last_activity > before[1].created_at.unwrap());
    drop(store);
    let store = open(dir.path());
    let reopened = store.load_with_timestamps("k");
    assert_eq!(
        reopened.iter().map(|m| m.created_at).collect::<Vec<_>>(),
        after.iter().map(|m| m.created_at).collect::<Vec<_>>()
    );
    assert_eq!(
        store.get_session_metadata("k").unwrap().last_activity,
        meta.last_activity
    );
    assert_eq!(
        store.get_session_metadata("k").unwrap().created_at,
        meta.created_at
    );
}

#[test]
fn update_last_replaces_role_and_content_without_changing_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("k", &user("q")).unwrap();
    store.append("k", &ChatMessage::assistant("par")).unwrap();
    assert!(store
        .update_last("k", &ChatMessage::tool("partial answer"))
        .unwrap());
    assert_eq!(
        store.load("k"),
        vec![user("q"), ChatMessage::tool("partial answer")]
    );
    assert_eq!(store.get_session_metadata("k").unwrap().message_count, 2);
}

#[test]
fn update_last_on_an_empty_or_missing_session_is_false_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(!store.update_last("missing", &user("x")).unwrap());
    assert!(!store.session_exists("missing"));
    store.set_session_name("empty", "n").unwrap();
    let files = snapshot_files(dir.path());
    assert!(!store.update_last("empty", &user("x")).unwrap());
    assert_eq!(snapshot_files(dir.path()), files, "nothing written");
    assert!(store.load("empty").is_empty());
}

#[test]
fn remove_last_drops_the_last_message_and_keeps_last_activity() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("k", &user("a")).unwrap();
    store.append("k", &user("b")).unwrap();
    let activity = store.get_session_metadata("k").unwrap().last_activity;
    std::thread::sleep(Duration::from_millis(2));
    assert!(store.remove_last("k").unwrap());
    assert_eq!(store.load("k"), vec![user("a")]);
    let meta = store.get_session_metadata("k").unwrap();
    assert_eq!(meta.last_activity, activity);
    assert_eq!(meta.message_count, 1);
    assert!(store.remove_last("k").unwrap());
    let files = snapshot_files(dir.path());
    assert!(!store.remove_last("k").unwrap());
    assert!(!store.remove_last("missing").unwrap());
    assert_eq!(snapshot_files(dir.path()), files, "nothing written");
    assert!(store.session_exists("k"), "an empty session still exists");
}

#[test]
fn clear_keeps_the_session_and_its_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.set_session_name("k", "name").unwrap();
    store.set_session_agent_alias("k", "alias").unwrap();
    store.set_session_state("k", "error", Some("t1")).unwrap();
    fill(&store, "k", "m", 3);
    let before = store.get_session_metadata("k").unwrap();
    std::thread::sleep(Duration::from_millis(2));
    assert_eq!(store.clear_messages("k").unwrap(), 3);
    let after = store.get_session_metadata("k").unwrap();
    assert!(store.load("k").is_empty());
    assert_eq!(after.message_count, 0);
    assert_eq!(after.created_at, before.created_at);
    assert_eq!(after.name.as_deref(), Some("name"));
    assert_eq!(after.agent_alias.as_deref(), Some("alias"));
    assert_eq!(
        store.get_session_state("k").unwrap().unwrap().state,
        "error"
    );
    assert!(
        after.last_activity > before.last_activity,
        "set when the count was > 0"
    );
    std::thread::sleep(Duration::from_millis(2));
    assert_eq!(store.clear_messages("k").unwrap(), 0);
    assert_eq!(
        store.get_session_metadata("k").unwrap().last_activity,
        after.last_activity,
        "unchanged when there was nothing to clear"
    );
    assert_eq!(store.clear_messages("missing").unwrap(), 0);
    assert!(!store.session_exists("missing"));
}

#[test]
fn delete_removes_everything_and_a_new_append_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.set_session_name("k", "old").unwrap();
    store.set_session_agent_alias("k", "a").unwrap();
    fill(&store, "k", "m", 2);
    let old = store.get_session_metadata("k").unwrap();
    assert!(store.delete_session("k").unwrap());
    assert!(!store.session_exists("k"));
    assert!(store.load("k").is_empty());
    assert!(store.get_session_metadata("k").is_none());
    assert_eq!(store.get_session_name("k").unwrap(), None);
    assert_eq!(store.get_session_agent_alias("k").unwrap(), None);
    assert!(store.get_session_state("k").unwrap().is_none());
    assert!(!store.list_sessions().contains(&"k".to_string()));
    assert!(!store.delete_session("k").unwrap());
    std::thread::sleep(Duration::from_millis(2));
    store.append("k", &user("new")).unwrap();
    let new = store.get_session_metadata("k").unwrap();
    assert!(new.created_at > old.created_at);
    assert_eq!(new.name, None);
    assert_eq!(new.agent_alias, None);
    assert_eq!(store.load("k"), vec![user("new")]);
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.load("k"), vec![user("new")]);
    assert_eq!(store.get_session_metadata("k").unwrap().name, None);
}

#[test]
fn delete_of_a_session_without_messages_is_true() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.set_session_state("k", "idle", None).unwrap();
    assert!(store.delete_session("k").unwrap());
    assert!(!store.session_exists("k"));
}

#[test]
fn compact_changes_no_read_and_shrinks_the_files() {
    let dir = tempfile::tempdir().unwrap();
    // Automatic compaction off: this test measures what compact() itself reclaims.
    let options = sessionlog::Options {
        durability: sessionlog::Durability::Never,
        auto_compact: false,
        ..Default::default()
    };
    let store = sessionlog::LogStore::open_with(dir.path(), options).unwrap();
    store.set_session_name("k", "n").unwrap();
    store.append("k", &user("q")).unwrap();
    store.append("k", &ChatMessage::assistant("")).unwrap();
    let mut reply = String::new();
    for i in 0..200 {
        reply.push_str(&format!("token{i} "));
        store
            .update_last("k", &ChatMessage::assistant(reply.clone()))
            .unwrap();
    }
    store.append("other", &user("x")).unwrap();
    let before = observe(&store);
    let size = |dir: &std::path::Path| -> u64 {
        segments(dir)
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum()
    };
    let size_before = size(dir.path());
    store.compact("k").unwrap();
    assert_eq!(observe(&store), before);
    assert!(size(dir.path()) * 10 < size_before, "dead bytes reclaimed");
    store.append("k", &user("after")).unwrap();
    store.compact("missing").unwrap();
    let after = observe(&store);
    drop(store);
    let store = open(dir.path());
    assert_eq!(observe(&store), after);
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
}

#[test]
fn a_16_mib_message_is_accepted_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let big = "x".repeat(16 << 20);
    store
        .append("k", &ChatMessage::assistant(big.clone()))
        .unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.load("k")[0].content.len(), big.len());
}

//! Undo: `undo_clear` and `restore_session` bring back what the last clear or delete removed,
//! across reopens (replayed or from the checkpoint) and compactions, for as long as
//! `tombstone_retention` says; after it, the bytes are gone from the folder.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use sessionlog::{
    ChatMessage, Durability, Error, EventFilter, EventKind, LogStore, Options, SessionBackend,
};

fn with_retention(dir: &Path, retention: Duration) -> LogStore {
    LogStore::open_with(
        dir,
        Options {
            tombstone_retention: retention,
            ..Options::with_durability(Durability::Never)
        },
    )
    .unwrap()
}

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

fn holds(dir: &Path, marker: &[u8]) -> bool {
    snapshot_files(dir)
        .iter()
        .any(|(_, bytes)| bytes.windows(marker.len()).any(|w| w == marker))
}

#[test]
fn undo_clear_puts_the_messages_back_before_newer_ones_across_reopens_and_background_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        tombstone_retention: DAY,
        compaction_dead_bytes_min: 1,
        ..Options::with_durability(Durability::Never)
    };
    let store = LogStore::open_with(dir.path(), options.clone()).unwrap();
    fill(&store, "k", "old", 3);
    assert_eq!(store.clear_messages("k").unwrap(), 3);
    store.append("k", &user("new")).unwrap();
    // Enough dead bytes for the background to compact: it keeps what undo may need.
    for i in 0..30 {
        store.update_last("k", &user(&format!("new {i}"))).unwrap();
    }
    store.update_last("k", &user("new")).unwrap();
    store.wait_for_compactions();
    assert!(segments(dir.path()).len() == 1 && store.dead_bytes("k") < 200);
    // Through a checkpointed reopen and a replayed one.
    drop(store);
    let store = LogStore::open_with(dir.path(), options.clone()).unwrap();
    assert!(store.recovery_report().from_checkpoint);
    drop(store);
    std::fs::remove_file(dir.path().join("CHECKPOINT")).ok();
    let store = LogStore::open_with(dir.path(), options.clone()).unwrap();
    assert_eq!(store.load("k"), vec![user("new")]);
    assert_eq!(store.undo_clear("k").unwrap(), 3);
    let expected = vec![user("old 0"), user("old 1"), user("old 2"), user("new")];
    assert_eq!(store.load("k"), expected);
    assert_eq!(store.undo_clear("k").unwrap(), 0, "nothing left to undo");
    drop(store);
    let store = LogStore::open_with(dir.path(), options).unwrap();
    assert_eq!(store.load("k"), expected);
    let kinds: Vec<EventKind> = store
        .events(EventFilter::session("k"))
        .unwrap()
        .map(|e| e.unwrap().kind)
        .collect();
    assert!(kinds.contains(&EventKind::UndoClear), "{kinds:?}");
    assert!(store.verify().unwrap().is_sound());
}

/// `compact` holds only what is live (the contract): what a clear removed is gone from the
/// session's segments, and undo has nothing to bring back.
#[test]
fn an_explicit_compaction_holds_only_what_is_live() {
    let dir = tempfile::tempdir().unwrap();
    let store = with_retention(dir.path(), DAY);
    fill(&store, "k", "secret", 3);
    store.clear_messages("k").unwrap();
    store.append("k", &user("new")).unwrap();
    store.compact("k").unwrap();
    assert!(!holds(dir.path(), b"secret"));
    assert_eq!(store.undo_clear("k").unwrap(), 0);
    assert_eq!(store.load("k"), vec![user("new")]);
}

#[test]
fn after_the_retention_a_clear_cannot_be_undone_and_compaction_drops_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = with_retention(dir.path(), Duration::from_millis(50));
    fill(&store, "k", "secret", 3);
    store.append("other", &user("kept")).unwrap();
    store.clear_messages("k").unwrap();
    assert!(holds(dir.path(), b"secret"), "kept while it can be undone");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(store.undo_clear("k").unwrap(), 0);
    store.append("k", &user("after")).unwrap();
    store.compact_session("k").unwrap();
    assert!(!holds(dir.path(), b"secret"), "gone after compaction");
    assert_eq!(store.load("k"), vec![user("after")]);
}

#[test]
fn restore_session_brings_back_a_deleted_session_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let store = with_retention(dir.path(), DAY);
    fill(&store, "k", "m", 4);
    store.set_session_name("k", "trip").unwrap();
    store.delete_session("k").unwrap();
    assert!(!store.session_exists("k"));
    assert!(store.list_sessions().is_empty());
    assert!(store.load("k").is_empty());
    // Across a checkpointed reopen and a replayed one.
    drop(store);
    let store = with_retention(dir.path(), DAY);
    assert!(!store.session_exists("k"));
    drop(store);
    std::fs::remove_file(dir.path().join("CHECKPOINT")).ok();
    let store = with_retention(dir.path(), DAY);
    assert!(store.restore_session("k").unwrap());
    assert_eq!(store.load("k").len(), 4);
    assert_eq!(
        store.get_session_name("k").unwrap().as_deref(),
        Some("trip")
    );
    assert!(
        !store.restore_session("k").unwrap(),
        "nothing left to restore"
    );
    store.append("k", &user("goes on")).unwrap();
    drop(store);
    let store = with_retention(dir.path(), DAY);
    assert_eq!(store.load("k").len(), 5);
    let kinds: Vec<EventKind> = store
        .events(EventFilter::session("k"))
        .unwrap()
        .map(|e| e.unwrap().kind)
        .collect();
    assert!(kinds.contains(&EventKind::Delete) && kinds.contains(&EventKind::Restore));
    assert!(store.verify().unwrap().is_sound());
}

#[test]
fn a_key_used_again_is_not_restored_over() {
    let dir = tempfile::tempdir().unwrap();
    let store = with_retention(dir.path(), DAY);
    fill(&store, "k", "old", 2);
    store.delete_session("k").unwrap();
    store.append("k", &user("new life")).unwrap();
    assert!(matches!(
        store.restore_session("k"),
        Err(Error::SessionExists { key }) if key == "k"
    ));
    assert_eq!(store.load("k"), vec![user("new life")]);
    // Deleting the new one makes the newest delete the one to restore.
    store.delete_session("k").unwrap();
    assert!(store.restore_session("k").unwrap());
    assert_eq!(store.load("k"), vec![user("new life")]);
    assert!(!store.restore_session("never").unwrap());
    assert!(!store.restore_session("").unwrap());
}

#[test]
fn cleanup_stale_can_be_undone_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = with_retention(dir.path(), DAY);
    fill(&store, "idle", "m", 2);
    std::thread::sleep(Duration::from_millis(2));
    assert_eq!(store.cleanup_stale(0).unwrap(), 1);
    assert!(store.restore_session("idle").unwrap());
    assert_eq!(store.load("idle").len(), 2);
}

#[test]
fn after_the_retention_a_deleted_session_is_gone_from_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let store = with_retention(dir.path(), Duration::from_millis(50));
    fill(&store, "k", "secret", 3);
    store.append("other", &user("kept")).unwrap();
    store.delete_session("k").unwrap();
    assert!(
        holds(dir.path(), b"secret"),
        "kept while it can be restored"
    );
    // The background sweep reclaims it (once a second).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while holds(dir.path(), b"secret") {
        assert!(std::time::Instant::now() < deadline, "never reclaimed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!store.restore_session("k").unwrap());
    drop(store);
    let store = with_retention(dir.path(), Duration::from_millis(50));
    assert!(!store.session_exists("k"));
    assert_eq!(store.load("other"), vec![user("kept")]);
}

#[test]
fn an_expired_tombstone_found_at_open_is_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(
        dir.path(),
        Options {
            auto_compact: false, // no background sweep
            ..Options::with_durability(Durability::Never)
        },
    )
    .unwrap();
    fill(&store, "k", "secret", 2);
    store.delete_session("k").unwrap();
    drop(store);
    assert!(holds(dir.path(), b"secret"));
    std::thread::sleep(Duration::from_millis(60));
    let store = with_retention(dir.path(), Duration::from_millis(50));
    assert!(!holds(dir.path(), b"secret"), "reclaimed by open");
    assert!(!store.restore_session("k").unwrap());
    assert_eq!(store.load("k"), Vec::<ChatMessage>::new());
}

#[test]
fn a_slot_a_failed_write_left_does_not_block_a_restore() {
    let dir = tempfile::tempdir().unwrap();
    let store = with_retention(dir.path(), DAY);
    fill(&store, "k", "m", 2);
    store.delete_session("k").unwrap();
    // A conditional append that fails leaves an unused entry for the key behind.
    assert!(store.append_expected("k", &user("x"), 7).is_err());
    assert!(!store.session_exists("k"));
    assert!(store.restore_session("k").unwrap());
    assert_eq!(store.load("k").len(), 2);
}

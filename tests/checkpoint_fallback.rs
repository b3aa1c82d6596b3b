//! A clean close writes a checkpoint of the projection that the next open uses instead of
//! replaying; the checkpoint is ignored (with a full replay that gives the same answers)
//! whenever it is damaged or stale, and it is removed before the first write after it.

mod common;

use common::*;
use sessionlog::{ChatMessage, Finding, LogStore, SessionBackend};

fn build(dir: &std::path::Path) -> String {
    let store = open(dir);
    fill(&store, "a", "alpha", 5);
    fill(&store, "b", "beta", 3);
    store.set_session_name("a", "named").unwrap();
    store
        .update_last("b", &ChatMessage::assistant("edited"))
        .unwrap();
    store.set_session_state("b", "running", Some("t")).unwrap();
    let seen = observe(&store);
    store.close().unwrap();
    seen
}

fn ignored(store: &LogStore) -> bool {
    store
        .recovery_report()
        .findings
        .iter()
        .any(|f| matches!(f, Finding::CheckpointIgnored { .. }))
}

#[test]
fn a_clean_close_lets_the_next_open_skip_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let seen = build(dir.path());
    assert!(dir.path().join("CHECKPOINT").exists());
    let store = open(dir.path());
    assert!(store.recovery_report().from_checkpoint);
    assert!(store.recovery_report().is_clean());
    assert_eq!(observe(&store), seen);
    assert!(
        dir.path().join("CHECKPOINT").exists(),
        "still true while nothing is written"
    );
    // The first write removes it; the store keeps working, and the next replay agrees.
    store.append("a", &user("more")).unwrap();
    assert!(
        !dir.path().join("CHECKPOINT").exists(),
        "removed before the first write"
    );
    let later = observe(&store);
    std::mem::forget(store); // no clean close: no checkpoint
    std::fs::remove_file(dir.path().join("LOCK")).ok();
    let store = open(dir.path());
    assert!(!store.recovery_report().from_checkpoint);
    assert_eq!(observe(&store), later);
}

#[test]
fn a_damaged_checkpoint_is_ignored_and_the_replay_answers_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let seen = build(dir.path());
    let path = dir.path().join("CHECKPOINT");
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let store = open(dir.path());
    assert!(!store.recovery_report().from_checkpoint);
    assert!(ignored(&store));
    assert_eq!(observe(&store), seen);
}

#[test]
fn a_segment_changed_after_the_close_makes_the_checkpoint_stale() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let seg = segments(dir.path())
        .into_iter()
        .find(|p| {
            std::fs::read(p)
                .unwrap()
                .windows(7)
                .any(|w| w == b"alpha 2")
        })
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.windows(7).position(|w| w == b"alpha 2").unwrap();
    bytes[at] ^= 0x01; // same length, damaged
    std::fs::write(&seg, &bytes).unwrap();
    let store = open(dir.path());
    assert!(!store.recovery_report().from_checkpoint);
    assert!(ignored(&store));
    assert!(
        store.recovery_report().has_damage(),
        "the replay finds the damage"
    );
    assert_eq!(store.load("a").len(), 2);
}

#[test]
fn a_segment_added_or_removed_after_the_close_makes_the_checkpoint_stale() {
    for remove in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path());
        let files = segments(dir.path());
        if remove {
            std::fs::remove_file(&files[0]).unwrap();
        } else {
            let copy = dir.path().join("00000000000000aa-00000001.seg");
            std::fs::copy(&files[0], copy).unwrap();
        }
        let store = open(dir.path());
        assert!(!store.recovery_report().from_checkpoint, "remove {remove}");
        assert!(ignored(&store));
    }
}

#[test]
fn a_read_only_session_leaves_the_checkpoint_usable() {
    let dir = tempfile::tempdir().unwrap();
    let seen = build(dir.path());
    for _ in 0..3 {
        let store = open(dir.path());
        assert!(store.recovery_report().from_checkpoint);
        assert_eq!(observe(&store), seen);
    }
}

#[test]
fn a_compaction_after_a_checkpoint_open_removes_it_first() {
    let dir = tempfile::tempdir().unwrap();
    let seen = build(dir.path());
    let store = open(dir.path());
    store.compact("a").unwrap();
    assert!(!dir.path().join("CHECKPOINT").exists());
    std::mem::forget(store); // a crash: the next open must replay, and agree
    std::fs::remove_file(dir.path().join("LOCK")).ok();
    let store = open(dir.path());
    assert!(!store.recovery_report().from_checkpoint);
    assert_eq!(observe(&store), seen);
}

/// Writes `bytes` over the file at `path` (the same file, as `cp` does), then puts its
/// modification time back: what the checkpoint recorded of it still holds but its change time.
fn overwrite_keeping_mtime(path: &std::path::Path, bytes: &[u8]) {
    let modified = std::fs::metadata(path).unwrap().modified().unwrap();
    std::fs::write(path, bytes).unwrap();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(modified).unwrap();
    assert_eq!(
        std::fs::metadata(path).unwrap().modified().unwrap(),
        modified
    );
}

#[test]
fn another_sessions_segment_of_the_same_length_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, "alice", "a", 2);
    fill(&store, "carol", "c", 2);
    store.close().unwrap();
    let [alice, carol] = &segments(dir.path())[..] else {
        panic!("one segment each");
    };
    let carols = std::fs::read(carol).unwrap();
    assert_eq!(std::fs::metadata(alice).unwrap().len(), carols.len() as u64);
    overwrite_keeping_mtime(alice, &carols);
    let store = open(dir.path());
    assert!(ignored(&store), "{:?}", store.recovery_report());
    let alices = store.load("alice");
    assert!(
        alices.iter().all(|m| !m.content.starts_with('c')),
        "carol's messages served as alice's: {alices:?}"
    );
    assert!(store.recovery_report().has_damage());
    assert_eq!(store.load("carol").len(), 2);
}

#[test]
fn a_flipped_byte_in_a_name_record_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, "a", "alpha", 2);
    store.set_session_name("a", "Zebra").unwrap();
    fill(&store, "a", "after", 1);
    store.close().unwrap();
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.windows(5).position(|w| w == b"Zebra").unwrap();
    bytes[at] = b'Y';
    overwrite_keeping_mtime(&seg, &bytes);
    let store = open(dir.path());
    assert!(ignored(&store), "{:?}", store.recovery_report());
    assert!(store.recovery_report().has_damage());
    let name = store.get_session_metadata("a").unwrap().name;
    assert_ne!(name.as_deref(), Some("Yebra"));
}

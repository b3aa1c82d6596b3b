//! A clean close writes a checkpoint of the projection that the next open uses instead of
//! replaying; the checkpoint is ignored (with a full replay that gives the same answers)
//! whenever it is damaged or its files are not the folder's, and it is removed before the first
//! write after it. (A session's files changed in place are caught at its first read or write:
//! `checkpoint_first_touch.rs`.)

mod common;

use common::*;
use sessionlog::{ChatMessage, EncryptionKey, Finding, LogStore, Options, SessionBackend};

fn build(dir: &std::path::Path) -> String {
    filled(open(dir))
}

/// Writes the sessions [`build`] writes to `store`, and closes it; returns what it held.
fn filled(store: LogStore) -> String {
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
    // The first write marks it running first; after a crash the next open replays only the
    // session written since, and agrees with a full replay.
    store.append("a", &user("more")).unwrap();
    assert!(
        dir.path().join("CHECKPOINT.running").exists(),
        "marked before the first write"
    );
    let later = observe(&store);
    std::mem::forget(store); // no clean close
    std::fs::remove_file(dir.path().join("LOCK")).ok();
    let store = open(dir.path());
    let report = store.recovery_report();
    assert!(report.from_checkpoint && report.is_clean(), "{report:?}");
    assert_eq!(report.replayed_sessions, 1);
    assert_eq!(observe(&store), later);
    drop(store);
    std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
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
fn a_compaction_after_a_checkpoint_open_marks_it_running_first() {
    let dir = tempfile::tempdir().unwrap();
    let seen = build(dir.path());
    let store = open(dir.path());
    store.compact("a").unwrap();
    assert!(dir.path().join("CHECKPOINT.running").exists());
    std::mem::forget(store); // a crash: the next open must replay that session, and agree
    std::fs::remove_file(dir.path().join("LOCK")).ok();
    let store = open(dir.path());
    let report = store.recovery_report();
    assert!(report.from_checkpoint && report.is_clean(), "{report:?}");
    assert_eq!(report.replayed_sessions, 1);
    assert_eq!(observe(&store), seen);
}

#[test]
fn a_huge_sparse_checkpoint_is_ignored_without_reading_it_into_memory() {
    // Plain, and encrypted (a sealed checkpoint is opened whole).
    for encryption in [None, Some(EncryptionKey::from_bytes([9; 32]))] {
        let options = Options {
            encryption,
            ..Options::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let seen = filled(LogStore::open_with(dir.path(), options.clone()).unwrap());
        // 8 GiB of nothing: reading it into a buffer of its length would take that much
        // memory.
        let file = std::fs::File::options()
            .write(true)
            .open(dir.path().join("CHECKPOINT"))
            .unwrap();
        file.set_len(8 << 30).unwrap();
        drop(file);
        let store = LogStore::open_with(dir.path(), options).unwrap();
        assert!(!store.recovery_report().from_checkpoint);
        assert!(ignored(&store));
        assert_eq!(observe(&store), seen);
    }
    // The process never held the file's length (other tests in it hold far less than this).
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let peak_kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(peak_kb < 2 << 20, "peak resident memory {peak_kb} kB");
}

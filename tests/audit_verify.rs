//! `verify` reads every record of every history, the archive included, and names each
//! problem's session, file and offset.

mod common;

use common::*;
use sessionlog::{Durability, LogStore, Options, SessionBackend};

fn keep_history() -> Options {
    Options {
        keep_history: true,
        auto_compact: false,
        ..Options::with_durability(Durability::Never)
    }
}

#[test]
fn a_sound_store_verifies_clean_and_counts_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), keep_history()).unwrap();
    fill(&store, "a", "m", 10);
    fill(&store, "b", "m", 5);
    store.compact_session("a").unwrap();
    store.delete_session("b").unwrap();
    let report = store.verify().unwrap();
    assert!(report.is_sound(), "{:?}", report.problems);
    assert_eq!(report.sessions, 2);
    // 10 + 5 appends, one compaction, one delete.
    assert_eq!(report.events, 17);
}

#[test]
fn a_flipped_byte_in_an_old_record_is_named_with_its_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fast(dir.path());
    fill(&store, "a", "message", 10);
    fill(&store, "b", "message", 3);
    drop(store);
    let path = segments(dir.path())[0].clone();
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(9).position(|w| w == b"message 4").unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();

    let store = LogStore::open_read_only(dir.path()).unwrap();
    let report = store.verify().unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    let problem = &report.problems[0];
    assert_eq!(problem.session.as_deref(), Some("a"));
    assert_eq!(problem.path, path);
    assert!(problem.offset > 0 && (problem.offset as usize) < at);
    assert!(problem.reason.contains("checksum"), "{}", problem.reason);
    assert!(problem.to_string().contains("session \"a\""));
    // Verify changed nothing.
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn damage_in_the_archive_is_found_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), keep_history()).unwrap();
    fill(&store, "a", "message", 10);
    store.compact_session("a").unwrap();
    drop(store);
    let archived = segments(&dir.path().join("archive"))[0].clone();
    let mut bytes = std::fs::read(&archived).unwrap();
    let at = bytes.windows(9).position(|w| w == b"message 2").unwrap();
    bytes[at] ^= 1;
    std::fs::write(&archived, &bytes).unwrap();
    let store = LogStore::open_with(dir.path(), keep_history()).unwrap();
    assert_eq!(store.load("a").len(), 10, "the live generation is intact");
    let report = store.verify().unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].path, archived);
}

//! Open from the checkpoint reads every session's metadata but no session's message locations:
//! a session's are read back from the checkpoint at its first read or write, and under
//! `Options::memory_budget` dropped again and read back at the next use, without changing any
//! answer. Locations the checkpoint no longer holds soundly are replayed from the segments,
//! never served wrong.

mod common;

use std::path::Path;

use sessionlog::{
    ChatMessage, Durability, Finding, LogStore, Options, SessionBackend, SessionMetadata,
};

const SESSIONS: usize = 40;
const MESSAGES: usize = 12;

fn key(i: usize) -> String {
    format!("sender-{i:02}")
}

fn options(budget: Option<u64>) -> Options {
    Options {
        memory_budget: budget,
        ..Options::with_durability(Durability::Never)
    }
}

/// A store of `SESSIONS` sessions of `MESSAGES` messages each (the first session cleared, its
/// messages kept for `undo_clear`, then two new ones), closed cleanly; returns what each
/// session holds.
fn build(dir: &Path) -> Vec<Vec<ChatMessage>> {
    let store = LogStore::open_with(dir, options(None)).unwrap();
    let mut expected = Vec::new();
    for i in 0..SESSIONS {
        let messages: Vec<ChatMessage> = (0..MESSAGES)
            .map(|m| ChatMessage::user(format!("message {m} of session {i}")))
            .collect();
        for message in &messages {
            store.append(&key(i), message).unwrap();
        }
        store
            .set_session_name(&key(i), &format!("name {i}"))
            .unwrap();
        expected.push(messages);
    }
    store.clear_messages(&key(0)).unwrap();
    let after_clear = vec![ChatMessage::user("one"), ChatMessage::assistant("two")];
    for message in &after_clear {
        store.append(&key(0), message).unwrap();
    }
    let cleared = std::mem::replace(&mut expected[0], after_clear);
    store.close().unwrap();
    expected.push(cleared);
    expected
}

/// Every session of `expected` but `skip` holds what it says.
fn check_all(store: &LogStore, expected: &[Vec<ChatMessage>], skip: Option<usize>, when: &str) {
    for (i, messages) in expected.iter().enumerate() {
        if Some(i) != skip {
            assert_eq!(&store.load(&key(i)), messages, "{when}, session {i}");
        }
    }
}

fn listing(store: &LogStore) -> Vec<(String, usize, Option<String>)> {
    let mut rows: Vec<_> = store
        .list_sessions_with_metadata()
        .into_iter()
        .map(|m: SessionMetadata| (m.key, m.message_count, m.name))
        .collect();
    rows.sort();
    rows
}

fn expected_listing(expected: &[Vec<ChatMessage>]) -> Vec<(String, usize, Option<String>)> {
    (0..SESSIONS)
        .map(|i| (key(i), expected[i].len(), Some(format!("name {i}"))))
        .collect()
}

#[test]
fn open_lists_every_session_without_reading_any_session_locations() {
    let dir = tempfile::tempdir().unwrap();
    let expected = build(dir.path());
    let store = LogStore::open_with(dir.path(), options(None)).unwrap();
    assert_eq!(listing(&store), expected_listing(&expected));
    assert_eq!(store.stats().len(), SESSIONS);
    assert_eq!(store.health().locations_read_back, 0);
    assert_eq!(store.load(&key(5)), expected[5]);
    assert_eq!(store.health().locations_read_back, 1);
    assert_eq!(store.load(&key(5)), expected[5]);
    assert_eq!(store.load_tail(&key(6), 3), expected[6][MESSAGES - 3..]);
    assert_eq!(store.health().locations_read_back, 2);
}

#[test]
fn the_memory_budget_parks_and_reads_back_without_changing_any_answer() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = build(dir.path());
    let cleared = expected.pop().unwrap();
    // About three sessions' locations (12 messages, 24 bytes each).
    let store = LogStore::open_with(dir.path(), options(Some(1_000))).unwrap();
    for round in 0..3 {
        check_all(&store, &expected, None, &format!("round {round}"));
    }
    let health = store.health();
    assert!(health.locations_parked >= 2 * SESSIONS as u64, "{health:?}");
    assert!(
        health.locations_read_back >= 3 * SESSIONS as u64 - 3,
        "{health:?}"
    );
    assert_eq!(listing(&store), expected_listing(&expected));
    // A change of metadata leaves the locations as the checkpoint holds them: still dropped
    // and read back (each session is read back again in the next round).
    for i in 0..SESSIONS {
        store.set_session_state(&key(i), "idle", None).unwrap();
    }
    let before = store.health().locations_read_back;
    check_all(&store, &expected, None, "after the state changes");
    let read_back = store.health().locations_read_back - before;
    assert!(read_back >= SESSIONS as u64 - 3, "{read_back}");
    // Writes to sessions read back, and an undo of a clear whose kept messages were parked.
    for i in (1..SESSIONS).step_by(7) {
        let message = ChatMessage::assistant(format!("later in {i}"));
        store.append(&key(i), &message).unwrap();
        expected[i].push(message);
        check_all(&store, &expected, None, &format!("after the write to {i}"));
    }
    assert_eq!(store.undo_clear(&key(0)).unwrap(), MESSAGES);
    let mut restored = cleared;
    restored.append(&mut expected[0]);
    expected[0] = restored;
    assert_eq!(store.load(&key(0)), expected[0]);
    store.close().unwrap();
    // The next checkpoint copied the parked sessions' locations from this one.
    let store = LogStore::open_with(dir.path(), options(None)).unwrap();
    assert!(store.recovery_report().findings.is_empty());
    check_all(&store, &expected, None, "reopened");
}

/// [`build`], then every byte of the checkpoint's location section (after the 32-byte header
/// and the body) flipped; returns what each live session holds.
fn build_with_damaged_locations(dir: &Path) -> Vec<Vec<ChatMessage>> {
    let mut expected = build(dir);
    expected.pop();
    let path = dir.join("CHECKPOINT");
    let mut bytes = std::fs::read(&path).unwrap();
    let body_len = u64::from_le_bytes(bytes[12..20].try_into().unwrap());
    let start = 32 + body_len as usize;
    assert!(start < bytes.len());
    for b in &mut bytes[start..] {
        *b ^= 0x20;
    }
    std::fs::write(&path, &bytes).unwrap();
    expected
}

#[test]
fn damaged_locations_in_the_checkpoint_are_replayed_from_the_segments_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = build_with_damaged_locations(dir.path());
    let store = LogStore::open_with(dir.path(), options(None)).unwrap();
    // The metadata is sound: open and listing need no locations.
    assert_eq!(listing(&store), expected_listing(&expected));
    check_all(&store, &expected, None, "damaged locations");
    let replayed = store
        .recovery_report()
        .findings
        .iter()
        .filter(|f| {
            matches!(f, Finding::CheckpointIgnored { reason }
                if reason.contains("replayed from its files"))
        })
        .count();
    assert_eq!(replayed, SESSIONS);
    assert_eq!(store.health().locations_read_back, 0);
    let message = ChatMessage::user("still writable");
    store.append(&key(3), &message).unwrap();
    expected[3].push(message);
    store.close().unwrap();
    let store = LogStore::open_with(dir.path(), options(None)).unwrap();
    check_all(&store, &expected, None, "reopened");
}

#[test]
fn a_checkpoint_taken_before_damaged_locations_are_touched_replays_them_from_the_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = build_with_damaged_locations(dir.path());
    let store = LogStore::open_with(dir.path(), options(None)).unwrap();
    let message = ChatMessage::user("one more");
    store.append(&key(3), &message).unwrap();
    expected[3].push(message);
    // Every other session is still parked in the damaged checkpoint.
    store.checkpoint().unwrap();
    store.close().unwrap();
    let store = LogStore::open_with(dir.path(), options(None)).unwrap();
    check_all(&store, &expected, None, "reopened");
}

#[test]
fn an_erasure_reads_back_every_parked_session_before_the_checkpoint_goes() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = build(dir.path());
    expected.pop();
    // No checkpoint but those this test asks for (an erasure makes one due at once).
    let only_asked = Options {
        checkpoint_bytes: 0,
        checkpoint_interval: None,
        ..options(Some(1_000))
    };
    let store = LogStore::open_with(dir.path(), only_asked).unwrap();
    assert_eq!(store.load(&key(1)), expected[1]);
    store.erase_session(&key(2)).unwrap();
    assert!(!dir.path().join("CHECKPOINT").exists());
    assert_eq!(store.health().locations_read_back as usize, SESSIONS);
    // The removed checkpoint is closed too: no handle keeps its bytes.
    #[cfg(target_os = "linux")]
    assert_eq!(open_checkpoints(dir.path()), Vec::<String>::new());
    // Nothing is parked any more: until the next checkpoint, the budget drops nothing.
    check_all(&store, &expected, Some(2), "after the erasure");
    assert_eq!(store.health().locations_parked, 0);
    assert!(store.load(&key(2)).is_empty());
    // Once a checkpoint holds them again, it does.
    store.checkpoint().unwrap();
    check_all(&store, &expected, Some(2), "after the next checkpoint");
    assert!(store.health().locations_parked > 0);
    store.close().unwrap();
    let store = LogStore::open_with(dir.path(), options(None)).unwrap();
    assert_eq!(store.list_sessions().len(), SESSIONS - 1);
    check_all(&store, &expected, Some(2), "reopened");
}

/// The checkpoint files this process holds open under `dir`, removed or not.
#[cfg(target_os = "linux")]
fn open_checkpoints(dir: &Path) -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .filter(|target| {
            target.starts_with(&*dir.to_string_lossy()) && target.contains("CHECKPOINT")
        })
        .collect()
}

#[test]
#[cfg(target_os = "linux")]
fn a_checkpoint_taken_while_the_store_runs_becomes_the_file_parked_locations_are_read_from() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = build(dir.path());
    expected.pop();
    let store = LogStore::open_with(dir.path(), options(Some(1_000))).unwrap();
    assert_eq!(store.load(&key(1)), expected[1]);
    assert_eq!(open_checkpoints(dir.path()).len(), 1);
    let message = ChatMessage::user("after open");
    store.append(&key(4), &message).unwrap();
    expected[4].push(message);
    store.checkpoint().unwrap();
    // The replaced checkpoint is closed: every parked session reads from the new one.
    let open = open_checkpoints(dir.path());
    assert_eq!(open.len(), 1, "{open:?}");
    assert!(!open[0].ends_with("(deleted)"), "{open:?}");
    check_all(&store, &expected, None, "after the checkpoint");
    check_all(&store, &expected, None, "again");
    assert!(store.health().locations_parked > 0);
}

#[test]
fn a_checkpoint_of_format_7_written_by_the_previous_build_is_read_and_marked_running() {
    use sessionlog::testing::Model;
    let dir = common::fixture_copy("checkpoint-v7-store");
    let checkpoint = dir.path().join("CHECKPOINT");
    assert_eq!(
        std::fs::read(&checkpoint).unwrap()[8..12],
        7u32.to_le_bytes()
    );
    let replayed = Model::observe(&LogStore::open_read_only(dir.path()).unwrap());
    {
        let store = LogStore::open(dir.path()).unwrap();
        let report = store.recovery_report();
        assert!(report.from_checkpoint && report.is_clean(), "{report:?}");
        assert_eq!(Model::observe(&store), replayed);
        // Its locations were in its body: none is read from a block.
        assert_eq!(store.health().locations_read_back, 0);
        // A build of version 7 knows the running marker: the checkpoint is marked, not removed.
        store
            .append("telegram_alice", &ChatMessage::user("more"))
            .unwrap();
        assert!(checkpoint.exists());
        assert!(dir.path().join("CHECKPOINT.running").exists());
        std::mem::forget(store); // a crash
        std::fs::remove_file(dir.path().join("LOCK")).ok();
    }
    let store = LogStore::open(dir.path()).unwrap();
    let report = store.recovery_report().clone();
    // (The fixture's files are copies, their change times new: every session is replayed.)
    assert!(report.from_checkpoint && report.is_clean(), "{report:?}");
    assert_eq!(store.load("telegram_alice").len(), 4);
    assert_eq!(store.list_sessions().len(), 3);
    store.close().unwrap();
    // The close wrote version 8.
    assert_eq!(
        std::fs::read(&checkpoint).unwrap()[8..12],
        8u32.to_le_bytes()
    );
}

#[test]
fn an_erasure_that_writes_nothing_makes_a_checkpoint_due_and_the_budget_then_drops_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = build(dir.path());
    expected.pop();
    // A deleted session whose retention passes while the store is closed: the next open
    // erases it, and writes nothing.
    let short = Options {
        tombstone_retention: std::time::Duration::from_millis(50),
        ..options(None)
    };
    let store = LogStore::open_with(dir.path(), short.clone()).unwrap();
    assert!(store.delete_session(&key(2)).unwrap());
    store.close().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    // By time only, and nothing is written: the erasure alone makes one due.
    let by_time = Options {
        checkpoint_bytes: 0,
        checkpoint_interval: Some(std::time::Duration::from_millis(100)),
        memory_budget: Some(1_000),
        ..short
    };
    let store = LogStore::open_with(dir.path(), by_time).unwrap();
    assert!(store.load(&key(2)).is_empty());
    // Until then the budget drops nothing (the locations were read back for the erasure);
    // once the checkpoint holds them, it does.
    let started = std::time::Instant::now();
    while store.health().locations_parked == 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "no checkpoint after the erasure"
        );
        check_all(&store, &expected, Some(2), "after the erasure");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(dir.path().join("CHECKPOINT").exists());
    check_all(&store, &expected, Some(2), "after the erasure's checkpoint");
}

#[test]
fn a_checkpoint_replays_a_session_whose_block_and_files_both_changed() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = build_with_damaged_locations(dir.path());
    // While the store is closed, session 5's last record (its name) is cut short as well: its
    // block cannot be read, and its files no longer end where the checkpoint says.
    let segment = common::segment_holding(dir.path(), b"of session 5");
    let bytes = std::fs::read(&segment).unwrap();
    std::fs::write(&segment, &bytes[..bytes.len() - 5]).unwrap();
    let store = LogStore::open_with(dir.path(), options(None)).unwrap();
    let message = ChatMessage::user("one more");
    store.append(&key(3), &message).unwrap();
    expected[3].push(message);
    // Session 5 untouched since open: a full checkpoint (the clean close's one gone from the
    // folder, so not a delta of session 3 alone; its block is read through the store's open
    // handle) checks its files as a first touch would, and replays it from them, instead of
    // failing on its block.
    std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
    store.checkpoint().unwrap();
    let cut = store.recovery_report().findings.iter().any(
        |f| matches!(f, Finding::ChangedWhileClosed { key: changed, .. } if changed == &key(5)),
    );
    assert!(cut, "{:?}", store.recovery_report().findings);
    check_all(&store, &expected, None, "after the checkpoint");
    store.close().unwrap();
    let store = LogStore::open_with(dir.path(), options(None)).unwrap();
    check_all(&store, &expected, None, "reopened");
}

//! Compaction keeps every read the same and reclaims space: automatically in the background
//! once dead bytes pile up, for deleted sessions at once, and into `archive/` instead of
//! removal with `keep_history`.

mod common;

use std::path::Path;

use common::*;
use sessionlog::{ChatMessage, Durability, LogStore, Options, SessionBackend};

fn folder_bytes(dir: &Path) -> u64 {
    snapshot_files(dir)
        .iter()
        .map(|(_, b)| b.len() as u64)
        .sum()
}

#[test]
fn streaming_a_reply_through_a_thousand_updates_does_not_pile_up_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        LogStore::open_with(dir.path(), Options::with_durability(Durability::Never)).unwrap();
    store.append("k", &user("question")).unwrap();
    store.append("k", &ChatMessage::assistant("")).unwrap();
    let reply: String = (0..4096)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    for step in 1..=1000 {
        let upto = reply.len() * step / 1000;
        store
            .update_last("k", &ChatMessage::assistant(&reply[..upto]))
            .unwrap();
    }
    store.wait_for_compactions();
    let on_disk = folder_bytes(dir.path());
    assert!(
        on_disk < 400_000,
        "{on_disk} bytes on disk for a 4 KiB reply"
    );
    assert_eq!(store.load("k")[1].content, reply);
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.load("k")[1].content, reply);
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
}

#[test]
fn background_compaction_keeps_reads_and_readers_going() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        durability: Durability::Never,
        compaction_dead_bytes_min: 1024,
        ..Options::default()
    };
    let store = std::sync::Arc::new(LogStore::open_with(dir.path(), options).unwrap());
    fill(&store, "k", "base", 20);
    let reader = {
        let store = store.clone();
        std::thread::spawn(move || {
            for _ in 0..300 {
                let messages = store.load("k");
                assert!(
                    messages.len() >= 20 && messages.len() <= 21,
                    "{}",
                    messages.len()
                );
                assert_eq!(messages[0], user("base 0"));
            }
        })
    };
    store.append("k", &ChatMessage::assistant("")).unwrap();
    for i in 0..500 {
        store
            .update_last(
                "k",
                &ChatMessage::assistant(format!("partial {i} {}", "w".repeat(50))),
            )
            .unwrap();
    }
    reader.join().unwrap();
    store.wait_for_compactions();
    assert!(store.dead_bytes("k") < 64 << 10);
    let seen = observe(&store);
    drop(store);
    assert_eq!(observe(&open(dir.path())), seen);
}

/// A store without undo (`tombstone_retention` zero): a delete reclaims at once.
fn no_undo(dir: &Path) -> LogStore {
    LogStore::open_with(
        dir,
        Options {
            tombstone_retention: std::time::Duration::ZERO,
            ..Options::default()
        },
    )
    .unwrap()
}

#[test]
fn without_undo_a_delete_reclaims_the_files_and_the_session_never_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = no_undo(dir.path());
    fill(&store, "gone", "secret", 10);
    fill(&store, "kept", "x", 2);
    let before = segments(dir.path()).len();
    assert!(store.delete_session("gone").unwrap());
    assert_eq!(
        segments(dir.path()).len(),
        before - 1,
        "the session's segment is removed"
    );
    let marker = b"secret";
    let leftover = snapshot_files(dir.path())
        .into_iter()
        .any(|(_, bytes)| bytes.windows(marker.len()).any(|w| w == marker));
    assert!(!leftover, "no byte of the deleted messages is left");
    drop(store);
    let store = no_undo(dir.path());
    assert!(!store.session_exists("gone"));
    assert_eq!(store.list_sessions(), ["kept"]);
    store.append("gone", &user("new life")).unwrap();
    assert_eq!(store.load("gone"), vec![user("new life")]);
}

#[test]
fn without_undo_cleanup_stale_reclaims_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = no_undo(dir.path());
    for i in 0..5 {
        fill(&store, &format!("old{i}"), "m", 3);
    }
    std::thread::sleep(std::time::Duration::from_millis(2));
    assert_eq!(store.cleanup_stale(0).unwrap(), 5);
    assert!(segments(dir.path()).is_empty());
    drop(store);
    assert!(no_undo(dir.path()).list_sessions().is_empty());
}

#[test]
fn sequence_numbers_are_not_reused_after_the_newest_session_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = no_undo(dir.path());
    fill(&store, "a", "m", 3);
    fill(&store, "b", "m", 3);
    store.delete_session("b").unwrap(); // b held the highest sequence numbers
    drop(store);
    // The floor in LOCK says where numbering goes on.
    let lock = std::fs::read(dir.path().join("LOCK")).unwrap();
    assert_eq!(&lock[..8], b"SLFLOOR\0");
    let floor = u64::from_le_bytes(lock[8..16].try_into().unwrap());
    assert!(
        floor >= 8,
        "3 + 3 appends and a delete were numbered below {floor}"
    );
}

#[test]
fn keep_history_archives_what_compaction_replaces_but_not_deleted_sessions() {
    for keep_history in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            keep_history,
            auto_compact: false,
            tombstone_retention: std::time::Duration::ZERO,
            ..Options::default()
        };
        let store = LogStore::open_with(dir.path(), options.clone()).unwrap();
        fill(&store, "k", "m", 5);
        store.update_last("k", &user("changed")).unwrap();
        store.remove_last("k").unwrap();
        store.set_session_name("k", "n").unwrap();
        let before = observe(&store);
        let written: Vec<_> = segments(dir.path())
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        store.compact("k").unwrap();
        assert_eq!(observe(&store), before);
        fill(&store, "d", "doomed", 2);
        store.delete_session("d").unwrap();
        let archive = dir.path().join("archive");
        let archived: Vec<Vec<u8>> = if archive.is_dir() {
            snapshot_files(&archive)
                .into_iter()
                .map(|(_, b)| b)
                .collect()
        } else {
            Vec::new()
        };
        if keep_history {
            for bytes in &written {
                assert!(
                    archived.contains(bytes),
                    "every retired segment is archived whole"
                );
            }
            // A deleted session past its undo window (zero here) is erased, archive
            // included: erasure wins over history.
            assert!(!archived
                .iter()
                .any(|b| b.windows(6).any(|w| w == b"doomed")));
        } else {
            assert!(archived.is_empty());
        }
        drop(store);
        let store = LogStore::open_with(dir.path(), options).unwrap();
        assert_eq!(observe(&store), before);
        assert!(
            store.recovery_report().is_clean(),
            "{:?}",
            store.recovery_report()
        );
    }
}

#[test]
fn a_compaction_interrupted_after_its_rename_is_finished_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        auto_compact: false,
        ..Options::default()
    };
    let store = LogStore::open_with(dir.path(), options.clone()).unwrap();
    fill(&store, "k", "m", 5);
    store.update_last("k", &user("final")).unwrap();
    let old: Vec<_> = segments(dir.path())
        .iter()
        .map(|p| (p.clone(), std::fs::read(p).unwrap()))
        .collect();
    store.compact("k").unwrap();
    let seen = observe(&store);
    drop(store);
    // Put the old generation back, as if the crash came before its removal, and leave a
    // stray temporary file too.
    for (path, bytes) in &old {
        std::fs::write(path, bytes).unwrap();
    }
    std::fs::write(
        dir.path().join("0000000000000001-00000009.seg.tmp"),
        b"half",
    )
    .unwrap();
    let store = LogStore::open_with(dir.path(), options).unwrap();
    assert_eq!(observe(&store), seen);
    for (path, _) in &old {
        assert!(!path.exists(), "{} retired", path.display());
    }
    assert!(!dir
        .path()
        .join("0000000000000001-00000009.seg.tmp")
        .exists());
    let findings = format!("{:?}", store.recovery_report());
    assert!(findings.contains("CompactionFinished") && findings.contains("TempFileRemoved"));
}

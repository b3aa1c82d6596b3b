//! A record cut short at the end of a session's newest segment (a crash mid-write) is cut off
//! on open, at every possible byte offset: everything before it is kept, the cut bytes are saved
//! to a side file, and the store keeps working.

mod common;

use common::*;
use sessionlog::{ChatMessage, Finding, LogStore, SessionBackend};

/// Builds a store with two sessions and returns (dir, the segment holding "k", the length of
/// that segment before its last record, its full length).
fn store_with_last_record() -> (tempfile::TempDir, std::path::PathBuf, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fast(dir.path());
    store.append("other", &user("neighbour")).unwrap();
    store.append("k", &user("first")).unwrap();
    store
        .append("k", &ChatMessage::assistant("second"))
        .unwrap();
    let seg = segments(dir.path())
        .into_iter()
        .find(|p| std::fs::read(p).unwrap().windows(6).any(|w| w == b"second"))
        .unwrap();
    let before = std::fs::metadata(&seg).unwrap().len();
    store
        .append("k", &ChatMessage::assistant("the torn one"))
        .unwrap();
    let after = std::fs::metadata(&seg).unwrap().len();
    drop(store);
    (dir, seg, before, after)
}

#[test]
fn a_torn_last_record_is_cut_at_every_byte_offset() {
    let (template, seg, start, end) = store_with_last_record();
    let full = std::fs::read(&seg).unwrap();
    let name = seg.file_name().unwrap().to_owned();
    for cut in start..end {
        let dir = tempfile::tempdir().unwrap();
        for (path, bytes) in snapshot_files(template.path()) {
            if path.ends_with("CHECKPOINT") {
                continue; // the copies are newer than it: open would replay anyway
            }
            let target = dir.path().join(path.strip_prefix(template.path()).unwrap());
            std::fs::write(target, bytes).unwrap();
        }
        let seg = dir.path().join(&name);
        std::fs::write(&seg, &full[..cut as usize]).unwrap();
        let store = open(dir.path());
        assert_eq!(
            store.load("k"),
            vec![user("first"), ChatMessage::assistant("second")],
            "cut at {cut}"
        );
        assert_eq!(store.load("other"), vec![user("neighbour")]);
        let report = store.recovery_report();
        if cut > start {
            assert!(!report.has_damage(), "cut at {cut}: {report:?}");
            let [Finding::TornTail {
                offset,
                bytes,
                saved_to,
                ..
            }] = report.findings.as_slice()
            else {
                panic!("cut at {cut}: {report:?}");
            };
            assert_eq!(*offset, start);
            assert_eq!(*bytes, cut - start);
            assert_eq!(
                std::fs::read(saved_to).unwrap(),
                &full[start as usize..cut as usize]
            );
        } else {
            assert!(report.is_clean(), "{report:?}");
        }
        assert_eq!(
            std::fs::metadata(&seg).unwrap().len(),
            start,
            "the cut is on disk"
        );
        store.append("k", &user("after")).unwrap();
        drop(store);
        let store = open(dir.path());
        assert!(
            store.recovery_report().is_clean(),
            "{:?}",
            store.recovery_report()
        );
        assert_eq!(store.load("k").len(), 3);
        assert_eq!(store.load("k")[2], user("after"));
    }
}

#[test]
fn zero_fill_after_the_last_record_is_a_torn_tail() {
    let (dir, seg, _, end) = store_with_last_record();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[0; 4096]);
    std::fs::write(&seg, &bytes).unwrap();
    let store = open(dir.path());
    assert_eq!(store.load("k").len(), 3);
    assert!(!store.recovery_report().has_damage());
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), end);
}

#[test]
fn a_last_record_whose_tail_is_zeroed_is_a_torn_tail() {
    // A crash can extend the file's size before its data reaches the disk.
    let (dir, seg, start, end) = store_with_last_record();
    let mut bytes = std::fs::read(&seg).unwrap();
    for b in &mut bytes[(end as usize - 5)..] {
        *b = 0;
    }
    std::fs::write(&seg, &bytes).unwrap();
    let store = open(dir.path());
    assert_eq!(store.load("k").len(), 2);
    assert!(!store.recovery_report().has_damage());
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), start);
}

#[test]
fn a_segment_whose_header_was_never_completed_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fast(dir.path());
    store.append("k", &user("x")).unwrap();
    drop(store);
    let seg = segments(dir.path()).pop().unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    // A crash while creating a second session's first segment: header cut short.
    let partial = dir.path().join("00000000000000ff-00000001.seg");
    std::fs::write(&partial, &bytes[..10]).unwrap();
    let empty = dir.path().join("00000000000000fe-00000001.seg");
    std::fs::write(&empty, b"").unwrap();
    let store = open(dir.path());
    assert_eq!(store.list_sessions(), ["k"]);
    assert!(!partial.exists() && !empty.exists());
    let torn: Vec<_> = store
        .recovery_report()
        .findings
        .iter()
        .filter(|f| matches!(f, Finding::TornTail { .. }))
        .collect();
    assert_eq!(torn.len(), 2, "{:?}", store.recovery_report());
    // The ten bytes are kept in a side file.
    let kept = snapshot_files(dir.path()).into_iter().any(|(p, b)| {
        p.to_string_lossy()
            .contains("00000000000000ff-00000001.seg.torn")
            && b == bytes[..10]
    });
    assert!(kept);
    store.append("new", &user("y")).unwrap();
    drop(store);
    let store: LogStore = open(dir.path());
    assert_eq!(store.load("new"), vec![user("y")]);
}

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
        // The torn bytes say which record they began (its number, in the header's first 20
        // bytes): the anchored last one, so the tear explains where the session now ends.
        // Fewer bytes cannot say so, and the session ends before its anchored point.
        let says_which = cut - start >= 20;
        if cut > start {
            assert!(!report.has_damage(), "cut at {cut}: {report:?}");
            let (
                Some(Finding::TornTail {
                    offset,
                    bytes,
                    saved_to,
                    ..
                }),
                rest,
            ) = (report.findings.first(), &report.findings[1..])
            else {
                panic!("cut at {cut}: {report:?}");
            };
            if says_which {
                assert!(rest.is_empty(), "cut at {cut}: {report:?}");
            } else {
                assert!(
                    matches!(rest, [Finding::RolledBack { .. }]),
                    "cut at {cut}: {report:?}"
                );
            }
            assert_eq!(*offset, start);
            assert_eq!(*bytes, cut - start);
            assert_eq!(
                std::fs::read(saved_to).unwrap(),
                &full[start as usize..cut as usize]
            );
            assert_eq!(
                store.verify().unwrap().is_sound(),
                says_which,
                "cut at {cut}"
            );
        } else {
            // Cut exactly at the record's start, the file is as an older copy of it would be:
            // nothing is torn, but the record was there when the store closed, and the anchor
            // log says so.
            assert!(!report.has_damage(), "{report:?}");
            let [Finding::RolledBack {
                key: Some(key),
                anchored_seq,
                found_seq,
                ..
            }] = report.findings.as_slice()
            else {
                panic!("cut at {cut}: {report:?}");
            };
            assert_eq!((key.as_str(), *anchored_seq), ("k", found_seq + 1));
            assert!(!store.verify().unwrap().is_sound());
        }
        assert_eq!(
            std::fs::metadata(&seg).unwrap().len(),
            start,
            "the cut is on disk"
        );
        drop(store);
        {
            // A torn tail that explains the session's end was reported once: the next open
            // finds nothing to say. Anything else stays a rollback until the session passes
            // its anchored point.
            let store = open(dir.path());
            let report = store.recovery_report();
            let explained = cut > start && says_which;
            assert_eq!(
                report.is_clean(),
                explained,
                "cut at {cut}, reopened: {report:?}"
            );
            assert_eq!(
                report.has_rollback(),
                !explained,
                "cut at {cut}: {report:?}"
            );
            assert_eq!(
                store.verify().unwrap().is_sound(),
                explained,
                "cut at {cut}"
            );
        }
        let store = open(dir.path());
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

/// A tail of 3 MiB (more than one copy buffer) is saved whole, byte for byte, to its side file.
#[test]
fn a_long_torn_tail_is_saved_whole() {
    let (dir, seg, _, end) = store_with_last_record();
    let tail: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8 | 1).collect();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&tail);
    std::fs::write(&seg, &bytes).unwrap();
    let store = open(dir.path());
    assert_eq!(store.load("k").len(), 3);
    let saved = store
        .recovery_report()
        .findings
        .iter()
        .find_map(|f| match f {
            Finding::TornTail {
                saved_to, bytes, ..
            } => Some((saved_to.clone(), *bytes)),
            _ => None,
        })
        .expect("a torn tail");
    assert_eq!(saved.1, tail.len() as u64);
    assert_eq!(std::fs::read(&saved.0).unwrap(), tail);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), end);
}

/// A newest segment extended (sparse) far past its records: more than any unfinished append
/// leaves, so it is damage. The file is set aside whole (a rename: nothing copied, nothing read
/// into memory), the session keeps every record, and it takes appends again.
#[test]
fn a_segment_extended_far_past_its_records_is_set_aside_whole() {
    let (dir, seg, _, end) = store_with_last_record();
    let extended = end + (8 << 30);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(extended)
        .unwrap();
    let store = open(dir.path());
    assert_eq!(store.load("k").len(), 3);
    let report = store.recovery_report();
    let quarantined = report
        .findings
        .iter()
        .find_map(|f| match f {
            Finding::Damaged {
                path,
                offset,
                quarantined,
                ..
            } if *path == seg && *offset == end => Some(quarantined.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no damage reported: {report:?}"));
    let kept = quarantined
        .iter()
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() == extended))
        .unwrap_or_else(|| panic!("the extended file, whole, among {quarantined:?}"));
    assert!(kept.starts_with(dir.path().join("quarantine")));
    // Nothing was copied to a side file.
    assert!(!report
        .findings
        .iter()
        .any(|f| matches!(f, Finding::TornTail { .. })));
    let side_files = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".torn-")
        })
        .count();
    assert_eq!(side_files, 0);
    store.append("k", &user("after")).unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.load("k").len(), 4);
    assert!(!store.recovery_report().has_damage());
}

/// The erasure log extended far past its records: no crash leaves that, and the log is the
/// store's authority on erasure, so a writable open stops with `Error::Corrupt` and changes
/// nothing; a read-only open still reads the store.
#[test]
fn an_erasure_log_extended_far_past_its_records_stops_a_writable_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fast(dir.path());
    store.append("gone", &user("secret")).unwrap();
    store.append("kept", &user("hello")).unwrap();
    store.erase_session("gone").unwrap();
    store.close().unwrap();
    let erased = dir.path().join("ERASED");
    let len = std::fs::metadata(&erased).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&erased)
        .unwrap();
    file.set_len(len + (64 << 20)).unwrap();
    drop(file);
    let before = std::fs::metadata(&erased).unwrap().len();
    match LogStore::open(dir.path()) {
        Err(sessionlog::Error::Corrupt { path, offset, .. }) => {
            assert_eq!((path, offset), (erased.clone(), len));
        }
        other => panic!("expected Error::Corrupt, got {:?}", other.map(|_| ())),
    }
    assert_eq!(std::fs::metadata(&erased).unwrap().len(), before);
    let reader = LogStore::open_read_only(dir.path()).unwrap();
    assert_eq!(reader.load("kept").len(), 1);
    assert!(reader.load("gone").is_empty());
}

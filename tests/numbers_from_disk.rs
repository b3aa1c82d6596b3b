//! Values read from disk are checked before they are trusted, even when their checksum is
//! right: a checkpoint holding a key no session may have, or a sequence number near the end of
//! the range, is not used (open replays); a `LOCK` sequence floor beyond the format's range is
//! reported and not used. Either way nothing acknowledged is lost and numbers do not wrap.

mod common;

use std::path::Path;

use common::*;
use sessionlog::{Finding, LogStore, SessionBackend};

const MARKER: &str = "KEYMARKER";

/// A closed store whose session `MARKER` holds three messages, with its checkpoint.
fn store_with_checkpoint(dir: &Path) {
    let store = open(dir);
    for text in ["one", "two", "three"] {
        store.append(MARKER, &user(text)).unwrap();
    }
    store.close().unwrap();
    assert!(dir.join("CHECKPOINT").exists());
}

/// Rewrites the checkpoint's body with `edit`, then its length and CRC, so that only the rules
/// about its values can refuse it.
fn edit_checkpoint(dir: &Path, edit: impl FnOnce(&mut Vec<u8>)) {
    let path = dir.join("CHECKPOINT");
    let bytes = std::fs::read(&path).unwrap();
    let (header, body) = bytes.split_at(24);
    let mut body = body.to_vec();
    edit(&mut body);
    let mut out = header[..12].to_vec();
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast_hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    std::fs::write(&path, out).unwrap();
}

fn assert_replayed_whole(store: &LogStore) {
    let report = store.recovery_report();
    assert!(!report.from_checkpoint, "{report:?}");
    assert!(
        report
            .findings
            .iter()
            .any(|f| matches!(f, Finding::CheckpointIgnored { .. })),
        "{report:?}"
    );
    assert_eq!(store.list_sessions(), vec![MARKER.to_string()]);
    assert_eq!(store.load(MARKER).len(), 3);
    // Numbered on from the floor the store reserved (2^20 past its first number), far from the
    // end of the range.
    assert!(store.last_seq() < 1 << 22, "last_seq {}", store.last_seq());
}

#[test]
fn a_checkpoint_holding_a_key_no_session_may_have_is_not_used() {
    for long in [2000, 0] {
        let dir = tempfile::tempdir().unwrap();
        store_with_checkpoint(dir.path());
        edit_checkpoint(dir.path(), |body| {
            let mut stored = (MARKER.len() as u64).to_le_bytes().to_vec();
            stored.extend_from_slice(MARKER.as_bytes());
            let at = body
                .windows(stored.len())
                .position(|w| w == stored.as_slice())
                .expect("the key in the checkpoint");
            let mut bad = (long as u64).to_le_bytes().to_vec();
            bad.extend(std::iter::repeat_n(b'x', long));
            body.splice(at..at + stored.len(), bad);
        });
        let store = open(dir.path());
        assert_replayed_whole(&store);
        assert!(store.delete_session(MARKER).unwrap());
        assert!(!store.session_exists(MARKER));
    }
}

#[test]
fn a_checkpoint_holding_a_sequence_number_near_the_end_of_the_range_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    store_with_checkpoint(dir.path());
    // The body starts with the next sequence number.
    edit_checkpoint(dir.path(), |body| {
        body[..8].copy_from_slice(&(u64::MAX - 1).to_le_bytes());
    });
    let store = open(dir.path());
    assert_replayed_whole(&store);
    store.append(MARKER, &user("four")).unwrap();
    store.close().unwrap();
    std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
    let store = open(dir.path());
    assert_eq!(store.load(MARKER).len(), 4);
    assert!(store.recovery_report().is_clean());
}

#[test]
fn a_lock_floor_beyond_the_range_is_reported_and_not_used() {
    let dir = tempfile::tempdir().unwrap();
    store_with_checkpoint(dir.path());
    std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
    let floor = u64::MAX - 5;
    let mut lock = b"SLFLOOR\0".to_vec();
    lock.extend_from_slice(&floor.to_le_bytes());
    let crc = crc32fast_hash(&lock);
    lock.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(dir.path().join("LOCK"), &lock).unwrap();
    let store = open(dir.path());
    let report = store.recovery_report();
    assert!(
        report.findings.iter().any(|f| matches!(f,
            Finding::SequenceFloorIgnored { floor: f, .. } if *f == floor)),
        "{report:?}"
    );
    assert!(store.last_seq() < 100, "last_seq {}", store.last_seq());
    store.append(MARKER, &user("four")).unwrap();
    store.close().unwrap();
    std::fs::remove_file(dir.path().join("CHECKPOINT")).unwrap();
    let store = open(dir.path());
    assert_eq!(store.load(MARKER).len(), 4, "{:?}", store.recovery_report());
}

/// A checkpoint (whole, its CRC right) whose session's records end short of where its newest
/// segment does, the files as it recorded them: the next append would go over the last record.
/// The first touch finds the session's end where the checkpoint does not say, and replays it:
/// the append goes after every record, and nothing is written over.
#[test]
fn a_checkpoint_whose_session_ends_short_of_its_segment_gets_nothing_written_over() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for text in ["one", "two", "three"] {
        store.append("a", &user(text)).unwrap();
    }
    store.close().unwrap();
    let segment = segments(dir.path()).remove(0);
    let kept = std::fs::read(&segment).unwrap();
    let len = (kept.len() as u64).to_le_bytes();
    let path = dir.path().join("CHECKPOINT");
    let mut checkpoint = std::fs::read(&path).unwrap();
    // The session's entry comes after the table of files, which records the same length: the
    // last match is the entry's.
    let at = (checkpoint.windows(8))
        .rposition(|w| w == len)
        .expect("the entry records the segment's length");
    let short = (kept.len() as u64 - 10).to_le_bytes();
    checkpoint[at..at + 8].copy_from_slice(&short);
    let body_len = u64::from_le_bytes(checkpoint[12..20].try_into().unwrap()) as usize;
    let crc = crc32fast_hash(&checkpoint[32..32 + body_len]);
    checkpoint[20..24].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &checkpoint).unwrap();
    let store = open(dir.path());
    let appended = store.append("a", &user("four"));
    let now = std::fs::read(&segment).unwrap();
    assert!(now.len() >= kept.len(), "{appended:?}");
    assert!(
        now[..kept.len()] == kept[..],
        "the last record was written over ({appended:?})"
    );
    appended.unwrap();
    let texts: Vec<String> = (store.load("a").into_iter()).map(|m| m.content).collect();
    assert_eq!(texts, ["one", "two", "three", "four"]);
}

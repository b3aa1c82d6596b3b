//! Damage that is not a torn tail is never skipped in silence and never deleted: the session
//! opens up to its last good record, the bad file is kept byte for byte in quarantine, every
//! other session is intact, and the report names the file and offset. Files that are not ours
//! are left alone; a segment of an unknown version stops open without a change.

mod common;

use common::*;
use sessionlog::{ChatMessage, Error, Finding, LogStore, SessionBackend};

fn build(dir: &std::path::Path) -> std::path::PathBuf {
    let store = open_fast(dir);
    store.append("before", &user("neighbour 1")).unwrap();
    for i in 0..5 {
        store.append("k", &user(&format!("message {i}"))).unwrap();
    }
    store.set_session_name("k", "named").unwrap();
    store.append("after", &user("neighbour 2")).unwrap();
    drop(store);
    segments(dir)
        .into_iter()
        .find(|p| {
            std::fs::read(p)
                .unwrap()
                .windows(9)
                .any(|w| w == b"message 0")
        })
        .unwrap()
}

fn offset_of(bytes: &[u8], needle: &[u8]) -> usize {
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
}

#[test]
fn a_flipped_byte_in_an_earlier_record_is_reported_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let seg = build(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = offset_of(&bytes, b"message 2");
    bytes[at] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();

    let store = open(dir.path());
    assert_eq!(
        store.load("k"),
        vec![user("message 0"), user("message 1")],
        "open up to the last good record"
    );
    assert_eq!(
        store.get_session_name("k").unwrap(),
        None,
        "later records are not applied"
    );
    assert_eq!(store.load("before"), vec![user("neighbour 1")]);
    assert_eq!(store.load("after"), vec![user("neighbour 2")]);
    let report = store.recovery_report();
    assert!(report.has_damage());
    let Some(Finding::Damaged {
        key,
        path,
        offset,
        quarantined,
        ..
    }) = report
        .findings
        .iter()
        .find(|f| matches!(f, Finding::Damaged { .. }))
    else {
        panic!("{report:?}");
    };
    assert_eq!(key.as_deref(), Some("k"));
    assert_eq!(path, &seg);
    assert!(*offset > 0 && (*offset as usize) < at);
    // The damaged file is kept byte for byte.
    assert_eq!(quarantined.len(), 1);
    assert_eq!(std::fs::read(&quarantined[0]).unwrap(), bytes);

    // The session is usable again, and the next open is clean and agrees.
    store
        .append("k", &ChatMessage::assistant("resumed"))
        .unwrap();
    let seen = observe(&store);
    drop(store);
    let store = open(dir.path());
    assert!(
        !store.recovery_report().has_damage(),
        "{:?}",
        store.recovery_report()
    );
    assert_eq!(observe(&store), seen);
    assert_eq!(store.load("k").len(), 3);
}

#[test]
fn every_flipped_byte_of_a_segment_is_detected_without_panic() {
    let dir = tempfile::tempdir().unwrap();
    let seg = build(dir.path());
    let good = std::fs::read(&seg).unwrap();
    let name = seg.file_name().unwrap().to_owned();
    let template = snapshot_files(dir.path());
    for i in 0..good.len() {
        let work = tempfile::tempdir().unwrap();
        for (path, bytes) in &template {
            std::fs::write(
                work.path().join(path.strip_prefix(dir.path()).unwrap()),
                bytes,
            )
            .unwrap();
        }
        let mut bad = good.clone();
        bad[i] ^= 0x20;
        std::fs::write(work.path().join(&name), &bad).unwrap();
        match LogStore::open(work.path()) {
            Ok(store) => {
                // Found at open, or (from the checkpoint) at the session's first read.
                let loaded = store.load("k");
                assert!(
                    !store.recovery_report().is_clean(),
                    "flip at {i} went unnoticed"
                );
                assert!(loaded.len() <= 5, "flip at {i}");
                for (j, m) in loaded.iter().enumerate() {
                    assert_eq!(m, &user(&format!("message {j}")), "flip at {i}");
                }
                assert_eq!(store.load("before"), vec![user("neighbour 1")]);
                assert_eq!(store.load("after"), vec![user("neighbour 2")]);
            }
            // A flipped version byte fails the header's checksum: damage, not a new version.
            Err(e) => panic!("flip at {i}: {e}"),
        }
        // No byte of the original damaged file was lost: it is kept whole (in quarantine), or,
        // when the flip made the last record look torn, as the cut segment plus its side file.
        let files = snapshot_files(work.path());
        let whole = files.iter().any(|(_, b)| *b == bad);
        let split = files.iter().any(|(p, side)| {
            p.to_string_lossy().contains(".torn-")
                && files
                    .iter()
                    .any(|(_, seg)| [seg.as_slice(), side].concat() == bad)
        });
        assert!(whole || split, "flip at {i}: damaged bytes not kept");
    }
}

#[test]
fn files_that_are_not_ours_are_reported_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let junk = [
        ("notes.txt", b"hello".to_vec()),
        ("0000000000000001-00000001.seg.bak", vec![1, 2, 3]),
        ("zzzz.seg", vec![0; 100]),
        ("empty", Vec::new()),
    ];
    for (name, bytes) in &junk {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    std::fs::create_dir(dir.path().join("some-folder")).unwrap();
    let store = open(dir.path());
    assert_eq!(store.load("k").len(), 5);
    let unknown = store
        .recovery_report()
        .findings
        .iter()
        .filter(|f| matches!(f, Finding::UnknownFile { .. }))
        .count();
    assert_eq!(unknown, junk.len() + 1);
    for (name, bytes) in &junk {
        assert_eq!(&std::fs::read(dir.path().join(name)).unwrap(), bytes);
    }
}

#[test]
fn a_segment_of_an_unknown_version_stops_open_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let seg = build(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    // A sound header of version 6: the key "k" is one byte, so the CRC is at 36..40.
    bytes[8] = 6;
    let crc = crc32fast_hash(&bytes[..36]);
    bytes[36..40].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&seg, &bytes).unwrap();
    // Things open would otherwise repair: a torn tail in another session, a stray temp file.
    let other = segments(dir.path())
        .into_iter()
        .find(|p| {
            std::fs::read(p)
                .unwrap()
                .windows(11)
                .any(|w| w == b"neighbour 2")
        })
        .unwrap();
    let mut other_bytes = std::fs::read(&other).unwrap();
    other_bytes.extend_from_slice(&[1, 2, 3]);
    std::fs::write(&other, &other_bytes).unwrap();
    std::fs::write(dir.path().join("0000000000000009-00000002.seg.tmp"), b"x").unwrap();
    let before = snapshot_files(dir.path());
    let result = LogStore::open(dir.path());
    assert!(
        matches!(
            result,
            Err(Error::UnsupportedVersion {
                found: 6,
                supported: 5,
                ..
            })
        ),
        "{:?}",
        result.err()
    );
    assert_eq!(snapshot_files(dir.path()), before);
    // Versions 3 and 5 are an encrypted store's: without a key they are refused the same way.
    for sealed in [3, 5] {
        bytes[8] = sealed;
        let crc = crc32fast_hash(&bytes[..36]);
        bytes[36..40].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&seg, &bytes).unwrap();
        let before = snapshot_files(dir.path());
        let result = LogStore::open(dir.path());
        assert!(
            matches!(result, Err(Error::KeyRequired { .. })),
            "version {sealed}: {:?}",
            result.err()
        );
        assert_eq!(snapshot_files(dir.path()), before);
    }
}

#[test]
fn a_missing_middle_segment_is_damage_not_a_silent_skip() {
    let dir = tempfile::tempdir().unwrap();
    let options = sessionlog::Options {
        segment_bytes_max: 4096,
        durability: sessionlog::Durability::Never,
        ..Default::default()
    };
    let store = LogStore::open_with(dir.path(), options).unwrap();
    for i in 0..40 {
        store
            .append("k", &user(&format!("{i:03} {}", "p".repeat(300))))
            .unwrap();
    }
    drop(store);
    let files = segments(dir.path());
    assert!(files.len() >= 3);
    std::fs::remove_file(&files[1]).unwrap();
    let store = open(dir.path());
    assert!(store.recovery_report().has_damage());
    let loaded = store.load("k");
    assert!(!loaded.is_empty() && loaded.len() < 40);
    for (i, m) in loaded.iter().enumerate() {
        assert!(m.content.starts_with(&format!("{i:03} ")));
    }
}

#[test]
fn a_session_without_a_readable_header_is_quarantined_whole() {
    let dir = tempfile::tempdir().unwrap();
    let seg = build(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[0] = b'X'; // bad magic
    std::fs::write(&seg, &bytes).unwrap();
    let store = open(dir.path());
    assert!(!store.session_exists("k"));
    assert_eq!(store.load("before"), vec![user("neighbour 1")]);
    assert!(store.recovery_report().has_damage());
    assert!(!seg.exists());
    let kept = snapshot_files(dir.path())
        .into_iter()
        .any(|(_, b)| b == bytes);
    assert!(kept);
}

#[test]
fn a_link_to_another_sessions_segment_after_a_sessions_own_is_damage_not_an_unfinished_fork() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_fast(dir.path());
    fill(&store, "a", "a's own", 3);
    fill(&store, "b", "b's own", 2);
    drop(store);
    // A hard link to b's segment under the name a's next segment would have (a backup tool
    // that links files, a hand's mistake): the newest file of a names another session, as a
    // fork's links do, but a has history of its own below it.
    let a_segment = segment_holding(dir.path(), b"a's own 0");
    let b_segment = segment_holding(dir.path(), b"b's own 0");
    let name = a_segment.file_name().unwrap().to_str().unwrap().to_owned();
    let next = format!("{}00000002.seg", &name[..17]);
    std::fs::hard_link(&b_segment, dir.path().join(&next)).unwrap();
    let a_bytes = std::fs::read(&a_segment).unwrap();
    let store = open_fast(dir.path());
    assert_eq!(store.load("b").len(), 2);
    // a's own segment is never removed as a fork's leftovers: it is kept, in place or set
    // aside in quarantine, byte for byte, and the damage is reported.
    let kept = dir.path().join("quarantine").join(&name);
    let kept = if a_segment.exists() {
        a_segment.clone()
    } else {
        kept
    };
    assert_eq!(
        std::fs::read(&kept).unwrap(),
        a_bytes,
        "a's own segment is kept"
    );
    let findings = &store.recovery_report().findings;
    assert!(
        findings
            .iter()
            .any(|f| matches!(f, Finding::Damaged { .. })),
        "the foreign file is reported as damage: {findings:?}"
    );
    assert!(
        !findings
            .iter()
            .any(|f| matches!(f, Finding::Unfinished { .. })),
        "not taken for an unfinished fork: {findings:?}"
    );
    assert!(b_segment.exists());
}

/// Fails the test once the store has looked up more names than a store of a few files needs.
#[derive(Debug, Default)]
struct LookupBudget(std::sync::atomic::AtomicU64);

impl common::hooked::Hooks for LookupBudget {
    fn looking_up(&self, path: &std::path::Path) {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert!(
            n < 100_000,
            "more than 100,000 look-ups, the last of {path:?}"
        );
    }
}

#[test]
fn a_segment_name_with_a_huge_number_costs_open_no_walk_up_to_it() {
    use sessionlog::fs::{FileSystem, OpenMode};
    use std::sync::Arc;
    let sim = sessionlog::testing::SimFs::new();
    let store = LogStore::open_with_fs(
        SIM_DIR,
        small_segments(sessionlog::Durability::Always),
        Arc::new(sim.clone()),
    )
    .unwrap();
    fill(&store, "k", "message", 3);
    drop(store);
    // Garbage under the highest number a segment's name can hold, in session 1's name.
    let path = std::path::Path::new(SIM_DIR).join("0000000000000001-fffffffe.seg");
    let file = sim.open(&path, OpenMode::CreateNew).unwrap();
    file.write_at(&[0x77; 300], 0).unwrap();
    file.sync().unwrap();
    sim.sync_dir(std::path::Path::new(SIM_DIR)).unwrap();
    let hooked = common::hooked::Hooked::new(&sim, LookupBudget::default());
    let options = small_segments(sessionlog::Durability::Always);
    let store = LogStore::open_with_fs(SIM_DIR, options, Arc::new(hooked)).unwrap();
    assert_eq!(store.load("k").len(), 3);
    let findings = &store.recovery_report().findings;
    assert!(
        findings
            .iter()
            .any(|f| matches!(f, Finding::Damaged { quarantined, .. } if !quarantined.is_empty())),
        "the garbage is quarantined: {findings:?}"
    );
}

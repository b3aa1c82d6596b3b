//! After an open from the checkpoint, a session's files are checked against what it recorded
//! of them the first time the session is read or written, not at open (which then does no work
//! per file): a session whose files changed while the store was closed (a byte, their length,
//! another session's file copied over one) is replayed from its files at that first touch,
//! reported, and never served as the checkpoint recorded it.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;
use sessionlog::{Finding, LogStore, SessionBackend};

/// True when the store reported that `key`'s files changed while it was closed.
fn changed(store: &LogStore, key: &str) -> bool {
    store
        .recovery_report()
        .findings
        .iter()
        .any(|f| matches!(f, Finding::ChangedWhileClosed { key: k, .. } if k == key))
}

/// Flips a bit of `text` in the segment that holds it (same length, damaged), as a plain
/// write does: the file's modification time moves.
fn damage_message(dir: &Path, text: &[u8]) {
    let seg = segment_holding(dir, text);
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.windows(text.len()).position(|w| w == text).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
}

/// Writes `bytes` over the file at `path` (the same file, as `cp` does), then puts its
/// modification time back: what the checkpoint recorded of it still holds but its change time.
fn overwrite_keeping_mtime(path: &Path, bytes: &[u8]) {
    let modified = std::fs::metadata(path).unwrap().modified().unwrap();
    std::fs::write(path, bytes).unwrap();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(modified).unwrap();
    assert_eq!(
        std::fs::metadata(path).unwrap().modified().unwrap(),
        modified
    );
}

/// Opens the store from its checkpoint, checks that the answers equal those of a full replay
/// (the checkpoint removed), and returns them.
fn checkpoint_agrees_with_a_replay(dir: &Path) -> String {
    let from_checkpoint = {
        let store = open(dir);
        assert!(store.recovery_report().from_checkpoint);
        observe(&store)
    };
    std::fs::remove_file(dir.join("CHECKPOINT")).unwrap();
    let store = open(dir);
    assert!(!store.recovery_report().from_checkpoint);
    assert_eq!(observe(&store), from_checkpoint);
    from_checkpoint
}

/// Two sessions, `a` (5 messages) and `b` (3), closed cleanly.
fn build(dir: &Path) {
    let store = open(dir);
    fill(&store, "a", "alpha", 5);
    fill(&store, "b", "beta", 3);
    store.close().unwrap();
}

#[test]
fn a_byte_changed_while_closed_is_found_at_the_first_read_not_at_open() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    damage_message(dir.path(), b"alpha 2");
    let store = open(dir.path());
    assert!(store.recovery_report().from_checkpoint);
    assert!(
        store.recovery_report().is_clean(),
        "open examines no file: {:?}",
        store.recovery_report()
    );
    // Listing answers from the checkpoint; the other session's files are as recorded.
    assert_eq!(store.list_sessions_with_metadata().len(), 2);
    assert_eq!(store.load("b").len(), 3);
    assert!(store.recovery_report().is_clean());
    // The first read of `a` finds the change, replays it, and serves what is sound.
    let early = store.recovery_report();
    let messages = store.load("a");
    assert_eq!(
        messages
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>(),
        ["alpha 0", "alpha 1"]
    );
    assert!(changed(&store, "a"), "{:?}", store.recovery_report());
    assert!(!changed(&store, "b"));
    assert!(store.recovery_report().has_damage());
    assert!(early.is_clean(), "a report taken earlier stays as it was");
    assert!(
        dir.path().join("CHECKPOINT.running").exists(),
        "the checkpoint no longer describes the folder: marked before the repair"
    );
    assert_eq!(store.get_session_metadata("a").unwrap().message_count, 2);
    store.close().unwrap();
    let seen = checkpoint_agrees_with_a_replay(dir.path());
    assert!(seen.contains("alpha 1") && !seen.contains("alpha 2"));
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
    assert!(store.recovery_report().from_checkpoint);
    let alices = store.load("alice");
    assert!(
        alices.iter().all(|m| !m.content.starts_with('c')),
        "carol's messages served as alice's: {alices:?}"
    );
    assert!(changed(&store, "alice"), "{:?}", store.recovery_report());
    assert!(store.recovery_report().has_damage());
    assert_eq!(store.load("carol").len(), 2);
    assert!(!changed(&store, "carol"));
    store.close().unwrap();
    checkpoint_agrees_with_a_replay(dir.path());
}

#[test]
fn a_flipped_byte_in_a_name_record_is_noticed_at_the_first_read() {
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
    assert!(store.recovery_report().is_clean());
    assert_eq!(store.load("a").len(), 2, "the messages before the damage");
    assert!(changed(&store, "a"));
    assert!(store.recovery_report().has_damage());
    // The name record is damage: the session ends before it, as it was before the name.
    assert_eq!(store.get_session_metadata("a").unwrap().name, None);
}

#[test]
fn a_segment_cut_or_grown_while_closed_is_replayed_at_the_first_write() {
    for grown in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        fill(&store, "a", "alpha", 4);
        fill(&store, "b", "beta", 1);
        store.sync().unwrap();
        let seg = segment_holding(dir.path(), b"alpha 3");
        let four = std::fs::metadata(&seg).unwrap().len();
        store.append("a", &user("alpha 4")).unwrap();
        store.close().unwrap();
        let file = std::fs::File::options().append(true).open(&seg).unwrap();
        if grown {
            use std::io::Write;
            (&file).write_all(&[0xAB; 100]).unwrap();
        } else {
            file.set_len(four).unwrap(); // at a record's end: the last message is gone
        }
        drop(file);
        let store = open(dir.path());
        assert!(store.recovery_report().is_clean());
        store.append("a", &user("after")).unwrap();
        assert!(changed(&store, "a"), "grown {grown}");
        // Cut, the session ends before the record its anchor at the last close names.
        assert_eq!(
            store.recovery_report().has_rollback(),
            !grown,
            "grown {grown}: {:?}",
            store.recovery_report()
        );
        let contents: Vec<String> = store.load("a").into_iter().map(|m| m.content).collect();
        let kept = if grown { 5 } else { 4 };
        assert_eq!(contents.len(), kept + 1, "grown {grown}: {contents:?}");
        assert_eq!(contents.last().map(String::as_str), Some("after"));
        if grown {
            // The bytes past the last record are cut off and kept in a side file.
            assert!(store
                .recovery_report()
                .findings
                .iter()
                .any(|f| matches!(f, Finding::TornTail { bytes: 100, .. })));
        }
        store.close().unwrap();
        let seen = checkpoint_agrees_with_a_replay(dir.path());
        assert!(seen.contains("after"));
    }
}

#[test]
fn a_change_stays_caught_across_an_open_that_never_touched_the_session() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    damage_message(dir.path(), b"alpha 2");
    {
        // Only `b` is written: the close writes a new checkpoint, which must not record the
        // changed file of `a` as it is now.
        let store = open(dir.path());
        store.append("b", &user("beta 3")).unwrap();
        store.close().unwrap();
    }
    let store = open(dir.path());
    assert!(store.recovery_report().from_checkpoint);
    assert!(store.recovery_report().is_clean());
    assert_eq!(store.load("a").len(), 2);
    assert!(changed(&store, "a"));
    assert!(store.recovery_report().has_damage());
    assert_eq!(store.load("b").len(), 4);
}

#[test]
fn a_shared_segment_whose_change_time_moved_with_a_link_is_not_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, "a", "alpha", 3);
    store.fork_session("a", "f", None).unwrap();
    fill(&store, "f", "fork", 1);
    let forked = store.load("f");
    store.close().unwrap();
    let shared = segments(dir.path())
        .into_iter()
        .map(|p| std::fs::metadata(p).unwrap())
        .find(|m| m.nlink() > 1)
        .expect("a segment shared by the source and the fork");
    let store = open(dir.path());
    assert!(store.recovery_report().from_checkpoint);
    // Compacting the source removes its names of the segments the fork links to: their change
    // time moves, their bytes do not.
    std::thread::sleep(std::time::Duration::from_millis(20));
    store.compact("a").unwrap();
    let now = segments(dir.path())
        .into_iter()
        .map(|p| std::fs::metadata(p).unwrap())
        .find(|m| m.ino() == shared.ino())
        .expect("the fork keeps its name of the shared segment");
    assert_eq!(now.nlink(), 1);
    assert_ne!(
        (now.ctime(), now.ctime_nsec()),
        (shared.ctime(), shared.ctime_nsec()),
        "the shared segment's change time moved: the fork's claim fails"
    );
    assert_eq!(store.load("f"), forked);
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    store.close().unwrap();
    checkpoint_agrees_with_a_replay(dir.path());
}

#[test]
fn verify_checks_sessions_nobody_read_since_open_against_their_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store, "a", "alpha", 2);
    store.close().unwrap();
    let seg = segment_holding(dir.path(), b"alpha 1");
    let older = std::fs::read(&seg).unwrap();
    let store = open(dir.path());
    fill(&store, "a", "later", 2);
    store.close().unwrap();
    std::fs::write(&seg, &older).unwrap(); // restored from an older copy
    let store = open(dir.path());
    assert!(store.recovery_report().from_checkpoint);
    let report = store.verify().unwrap();
    assert!(!report.is_sound(), "{report:?}");
    assert!(store.recovery_report().has_rollback());
    assert_eq!(store.load("a").len(), 2);
}

#[test]
fn a_session_with_nothing_sound_is_gone_at_its_first_touch_and_its_key_starts_anew() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let seg = segment_holding(dir.path(), b"alpha 0");
    let id = seg.file_name().unwrap().to_str().unwrap()[..16].to_owned();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[0] ^= 0xFF; // the header's magic
    std::fs::write(&seg, &bytes).unwrap();
    let store = open(dir.path());
    assert!(
        store.list_sessions().contains(&"a".to_string()),
        "listing answers from the checkpoint"
    );
    assert!(store.load("a").is_empty());
    assert!(changed(&store, "a"));
    assert!(store.recovery_report().has_damage());
    assert!(!store.session_exists("a"));
    assert!(!seg.exists(), "kept aside in quarantine/");
    store.append("a", &user("anew")).unwrap();
    assert_eq!(store.load("a"), vec![user("anew")]);
    let new_id = segment_holding(dir.path(), b"anew");
    assert!(
        !new_id
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(&id),
        "a new session, under a new id"
    );
    store.close().unwrap();
    checkpoint_agrees_with_a_replay(dir.path());
}

/// A store on `sim` with session `a` (3 messages), closed; then its segment's bytes copied in
/// as a new file and renamed over it, the name made durable but the bytes still only in the
/// page cache. Returns the segment's path.
fn copied_back_while_closed(sim: &sessionlog::testing::SimFs) -> std::path::PathBuf {
    use sessionlog::fs::{FileSystem, OpenMode};
    let store = open_sim(sim).unwrap();
    fill(&store, "a", "alpha", 3);
    store.close().unwrap();
    let (seg, bytes) = sim
        .files()
        .into_iter()
        .find(|(p, _)| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let copy = seg.with_extension("copy");
    let file = sim.open(&copy, OpenMode::CreateNew).unwrap();
    file.write_at(&bytes, 0).unwrap();
    drop(file);
    sim.rename(&copy, &seg).unwrap();
    sim.sync_dir(Path::new(SIM_DIR)).unwrap();
    seg
}

fn open_sim(sim: &sessionlog::testing::SimFs) -> sessionlog::Result<LogStore> {
    let fs = std::sync::Arc::new(sim.clone());
    LogStore::open_with_fs(SIM_DIR, sessionlog::Options::default(), fs)
}

#[test]
fn a_file_copied_back_while_closed_is_made_durable_before_a_checkpoint_vouches_for_it() {
    let sim = sessionlog::testing::SimFs::new();
    let open_sim = || open_sim(&sim);
    copied_back_while_closed(&sim);
    let store = open_sim().unwrap();
    assert_eq!(store.load("a").len(), 3);
    assert!(
        store.recovery_report().is_clean(),
        "the same records: nothing to report"
    );
    store.append("b", &user("beta")).unwrap();
    store.close().unwrap();
    sim.crash(None);
    let store = open_sim().unwrap();
    assert_eq!(store.load("a").len(), 3);
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
}

/// The same file copied back as above, and the sync that would make it durable at the first
/// touch fails: the store stops writing (`Error::Poisoned`), since a sync retried after a
/// failure can report success for pages the kernel dropped, and a checkpoint must not vouch
/// for them.
#[test]
fn a_failed_sync_of_a_file_copied_back_while_closed_poisons_the_store() {
    use sessionlog::Error;
    let sim = sessionlog::testing::SimFs::new();
    let seg = copied_back_while_closed(&sim);
    let store = open_sim(&sim).unwrap();
    sim.fail_next_sync(&seg);
    let _ = store.load("a");
    assert!(store.health().poisoned, "{:?}", store.health());
    let refused = store.append("b", &user("beta")).unwrap_err();
    let refused = refused.get_ref().and_then(|e| e.downcast_ref::<Error>());
    assert!(matches!(refused, Some(Error::Poisoned)), "{refused:?}");
}

#[test]
fn a_session_whose_file_was_emptied_while_closed_is_reported_under_its_key() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let seg = segment_holding(dir.path(), b"alpha 0");
    std::fs::File::options()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(0)
        .unwrap();
    let store = open(dir.path());
    assert!(store.load("a").is_empty());
    assert!(changed(&store, "a"));
    let rolled: Vec<_> = store
        .recovery_report()
        .findings
        .iter()
        .filter_map(|f| match f {
            Finding::RolledBack { key, .. } => Some(key.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        rolled,
        vec![Some("a".to_string())],
        "{:?}",
        store.recovery_report()
    );
}

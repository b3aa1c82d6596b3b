//! Deletion means gone: once what a delete, clear or cleanup removed is past its undo window,
//! no byte of it is left anywhere in the folder (segments, archive, quarantine, side files,
//! checkpoint), `keep_history` or not; `erase_session` does it at once.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use sessionlog::{ChatMessage, Durability, LogStore, Options, SessionBackend};

const MARKER: &[u8] = b"MARKER-7f3a9c";

fn marker(i: usize) -> ChatMessage {
    ChatMessage::user(format!("{} {i}", std::str::from_utf8(MARKER).unwrap()))
}

fn holds_marker(dir: &Path) -> Vec<std::path::PathBuf> {
    snapshot_files(dir)
        .into_iter()
        .filter(|(_, bytes)| bytes.windows(MARKER.len()).any(|w| w == MARKER))
        .map(|(path, _)| path)
        .collect()
}

/// True when a file of `fs` holds `what`.
fn sim_holds(fs: &sessionlog::testing::SimFs, what: &[u8]) -> bool {
    fs.files()
        .iter()
        .any(|(_, bytes)| bytes.windows(what.len()).any(|w| w == what))
}

/// A store `setup` makes on a new simulated file system, whose power is cut after `n` more
/// mutations while it erases `k`; then the store opened again in "/s" after the crash.
fn erase_cut_after(
    n: u64,
    options: &Options,
    setup: impl Fn(&sessionlog::testing::SimFs) -> LogStore,
) -> (sessionlog::testing::SimFs, LogStore) {
    let fs = sessionlog::testing::SimFs::new();
    let store = setup(&fs);
    fs.cut_power_after(n);
    let _ = store.erase_session("k");
    drop(store);
    fs.crash(None);
    let reopened = std::sync::Arc::new(fs.clone());
    let store = LogStore::open_with_fs("/s", options.clone(), reopened).unwrap();
    (fs, store)
}

/// A session with history in the archive: written, compacted, written again.
fn write_secret(store: &LogStore, key: &str) {
    for i in 0..5 {
        store.append(key, &marker(i)).unwrap();
    }
    store.update_last(key, &marker(99)).unwrap();
    store.compact_session(key).unwrap();
    store.append(key, &marker(100)).unwrap();
    store.append("bystander", &user("stays")).unwrap();
}

#[test]
fn a_delete_past_its_undo_window_leaves_no_byte_even_with_keep_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_retaining(Duration::ZERO)).unwrap();
    write_secret(&store, "secret");
    assert!(!holds_marker(dir.path()).is_empty());
    store.delete_session("secret").unwrap();
    assert_eq!(holds_marker(dir.path()), Vec::<std::path::PathBuf>::new());
    drop(store);
    // Not in the checkpoint either, and not after a reopen.
    assert!(holds_marker(dir.path()).is_empty());
    let store = LogStore::open_with(dir.path(), keep_history_retaining(Duration::ZERO)).unwrap();
    assert_eq!(store.load("bystander"), vec![user("stays")]);
}

#[test]
fn cleanup_stale_past_its_undo_window_leaves_no_byte() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(
        dir.path(),
        keep_history_retaining(Duration::from_millis(30)),
    )
    .unwrap();
    write_secret(&store, "secret");
    std::thread::sleep(Duration::from_millis(5));
    store.append("bystander", &user("fresh")).unwrap();
    assert!(store.cleanup_stale(0).unwrap() >= 1);
    std::thread::sleep(Duration::from_millis(60));
    // The next sweep (here: the next delete) reclaims it.
    store.append("other", &user("x")).unwrap();
    store.delete_session("other").unwrap();
    assert!(
        holds_marker(dir.path()).is_empty(),
        "{:?}",
        holds_marker(dir.path())
    );
}

#[test]
fn a_clear_past_its_undo_window_is_gone_after_the_next_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(
        dir.path(),
        keep_history_retaining(Duration::from_millis(30)),
    )
    .unwrap();
    for i in 0..3 {
        store.append("k", &marker(i)).unwrap();
    }
    store.clear_messages("k").unwrap();
    store.append("k", &user("after")).unwrap();
    std::thread::sleep(Duration::from_millis(60));
    store.compact_session("k").unwrap();
    // Erasure wins over history: the replaced segments are not archived, and the session's
    // archive goes with them.
    assert!(
        holds_marker(dir.path()).is_empty(),
        "{:?}",
        holds_marker(dir.path())
    );
    assert_eq!(store.load("k"), vec![user("after")]);
}

#[test]
fn erase_session_removes_every_trace_at_once_whatever_the_undo_window() {
    for retention in [Duration::from_secs(86_400), Duration::ZERO] {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open_with(dir.path(), keep_history_retaining(retention)).unwrap();
        write_secret(&store, "secret");
        // An earlier session of the key, deleted (and, with an undo window, still restorable).
        store.delete_session("secret").unwrap();
        write_secret(&store, "secret");
        let archived: Vec<_> = snapshot_files(&dir.path().join("archive"))
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert!(!archived.is_empty(), "{retention:?}");
        let removed = store.erase_session("secret").unwrap();
        assert!(
            removed.iter().any(|p| p.parent() == Some(dir.path())),
            "the live session's segments are listed ({retention:?}): {removed:?}"
        );
        // Every archived file of the key's sessions is gone, and listed (with no undo window,
        // the delete's own reclaim removed the live session's).
        for path in &archived {
            assert!(!path.exists(), "{path:?}");
            assert!(
                removed.contains(path),
                "{retention:?}: {path:?} in {removed:?}"
            );
        }
        assert!(
            holds_marker(dir.path()).is_empty(),
            "{:?}",
            holds_marker(dir.path())
        );
        assert!(!store.session_exists("secret"));
        assert!(!store.restore_session("secret").unwrap());
        assert_eq!(store.load("bystander").len(), 2);
        drop(store);
        assert!(holds_marker(dir.path()).is_empty());
    }
}

/// A compaction retires the segments it replaced after it lets go of the session (and, with an
/// event reader open, only once the reader is done): an erasure meanwhile takes them too, so
/// that no byte of them outlives it, and a crash then leaves nothing of the session behind.
#[test]
fn erase_session_takes_the_segments_a_compaction_has_not_retired_yet() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), Options::default()).unwrap();
    for i in 0..5 {
        store.append("secret", &marker(i)).unwrap();
    }
    store.append("bystander", &user("stays")).unwrap();
    let reader = store.events(sessionlog::EventFilter::default()).unwrap();
    store.compact_session("secret").unwrap();
    // The generation holds the markers, and so does the segment it replaced, kept for the
    // reader.
    assert!(
        holds_marker(dir.path()).len() >= 2,
        "{:?}",
        holds_marker(dir.path())
    );
    store.erase_session("secret").unwrap();
    assert!(
        holds_marker(dir.path()).is_empty(),
        "{:?}",
        holds_marker(dir.path())
    );
    // A crash now (the reader never done): the next open finds nothing of the session.
    std::mem::forget(reader);
    std::mem::forget(store);
    std::fs::remove_file(dir.path().join("LOCK")).ok();
    let store = LogStore::open(dir.path()).unwrap();
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    assert!(!store.session_exists("secret"));
    assert_eq!(store.load("bystander").len(), 1);
    assert!(holds_marker(dir.path()).is_empty());
}

#[test]
fn erasing_a_forked_source_leaves_the_fork_whole_and_no_other_byte() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), keep_history_retaining(Duration::ZERO)).unwrap();
    for i in 0..3 {
        store.append("src", &user(&format!("shared {i}"))).unwrap();
    }
    store.fork_session("src", "fork", None).unwrap();
    for i in 0..3 {
        store.append("src", &marker(i)).unwrap();
    }
    store.erase_session("src").unwrap();
    assert!(
        holds_marker(dir.path()).is_empty(),
        "{:?}",
        holds_marker(dir.path())
    );
    assert_eq!(store.load("fork").len(), 3);
    drop(store);
    let store = LogStore::open_with(dir.path(), keep_history_retaining(Duration::ZERO)).unwrap();
    assert_eq!(store.load("fork").len(), 3);
}

/// A compaction that erases cleared messages (with `keep_history`) is cut by a power loss at
/// every file operation. Whether the cut came before its rename (the old generation stays,
/// and the next compaction erases) or after it (open finishes it, erasing instead of
/// archiving, as its header says), no byte of the cleared messages is left, archive included.
#[test]
fn an_erasing_compaction_cut_by_power_loss_never_archives_what_it_erased() {
    use sessionlog::testing::SimFs;
    use std::sync::Arc;
    let options = Options {
        keep_history: true,
        auto_compact: false,
        tombstone_retention: Duration::from_millis(1),
        ..Options::default()
    };
    let setup = |fs: &SimFs| {
        let store = LogStore::open_with_fs("/s", options.clone(), Arc::new(fs.clone())).unwrap();
        for i in 0..3 {
            store.append("k", &marker(i)).unwrap();
        }
        store.clear_messages("k").unwrap();
        store.append("k", &user("after")).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        store
    };
    let total = {
        let fs = SimFs::new();
        let store = setup(&fs);
        let before = fs.mutations();
        store.compact_session("k").unwrap();
        fs.mutations() - before
    };
    let holds = |fs: &SimFs| {
        fs.files()
            .iter()
            .any(|(_, bytes)| bytes.windows(MARKER.len()).any(|w| w == MARKER))
    };
    for n in 0..=total {
        let fs = SimFs::new();
        let store = setup(&fs);
        fs.cut_power_after(n);
        let _ = store.compact_session("k");
        drop(store);
        fs.crash(None);
        let store = LogStore::open_with_fs("/s", options.clone(), Arc::new(fs.clone())).unwrap();
        assert_eq!(store.load("k"), vec![user("after")], "cut after {n}");
        // The clear is past its window: what is left of it goes with the next compaction.
        store.compact_session("k").unwrap();
        assert!(!holds(&fs), "cut after {n}: the cleared messages survive");
        // Whichever step the cut hit, the erasure is in the log exactly once.
        let erasures = store
            .events(sessionlog::EventFilter::all())
            .unwrap()
            .filter(|e| {
                matches!(
                    e.as_ref().unwrap().kind,
                    sessionlog::EventKind::Erased {
                        whole_session: false,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(erasures, 1, "cut after {n}");
    }
}

/// `erase_session` cut by a power loss at every file operation, with and without `Always`.
/// Wherever the cut fell, once the erasure log holds the erasure the session is gone for good
/// at the next open: not restorable, no byte of its messages left (the log is the authority,
/// even where the delete record or the unlinks were lost). Before the erasure was logged, the
/// session is live or restorable, whole.
#[test]
fn an_erasure_cut_by_power_loss_is_finished_once_it_is_logged() {
    for durability in [Durability::Always, Durability::Never] {
        erasure_cut_by_power_loss(Options {
            tombstone_retention: Duration::from_secs(3600),
            ..Options::with_durability(durability)
        });
    }
}

fn erasure_cut_by_power_loss(options: Options) {
    use sessionlog::testing::SimFs;
    use std::sync::Arc;
    let mode = options.durability;
    let setup = |fs: &SimFs| {
        let store = LogStore::open_with_fs("/s", options.clone(), Arc::new(fs.clone())).unwrap();
        for i in 0..3 {
            store.append("k", &marker(i)).unwrap();
        }
        store.append("other", &user("stays")).unwrap();
        store.sync().unwrap();
        store
    };
    let total = {
        let fs = SimFs::new();
        let store = setup(&fs);
        let before = fs.mutations();
        store.erase_session("k").unwrap();
        fs.mutations() - before
    };
    let holds = |fs: &SimFs| sim_holds(fs, MARKER);
    let mut logged = 0;
    for n in 0..=total {
        let (fs, store) = erase_cut_after(n, &options, setup);
        let context = format!("{mode:?}, cut after {n} of {total}");
        assert_eq!(store.load("other"), vec![user("stays")], "{context}");
        let erased = store
            .events(sessionlog::EventFilter::all())
            .unwrap()
            .any(|e| {
                matches!(
                    e.unwrap().kind,
                    sessionlog::EventKind::Erased {
                        whole_session: true,
                        ..
                    }
                )
            });
        if erased {
            logged += 1;
            assert!(!store.session_exists("k"), "{context}");
            assert!(!store.restore_session("k").unwrap(), "{context}: restored");
            assert!(store.load("k").is_empty(), "{context}");
            assert!(!holds(&fs), "{context}: the erased messages survive");
        } else {
            let left = store.load("k").len();
            let restored = !store.session_exists("k") && store.restore_session("k").unwrap();
            assert!(
                left == 3 || (restored && store.load("k").len() == 3),
                "{context}: {left} messages, not whole"
            );
        }
    }
    assert!(
        logged > 0,
        "{mode:?}: no cut fell after the erasure was logged"
    );
}

/// `erase_session` also erases the key's earlier sessions whose files are only in `archive/`
/// or `quarantine/` (here one of id 4, made in another store and kept in this one's archive):
/// each is logged in the erasure log before its files go. A power cut anywhere in it: once the
/// log holds that erasure, the open after the cut finishes it, and no byte of it is left.
#[test]
fn an_erasure_of_a_keys_archived_session_cut_by_power_loss_is_finished_once_it_is_logged() {
    use sessionlog::fs::{write_new_file, FileSystem};
    use sessionlog::testing::SimFs;
    use sessionlog::{EventFilter, EventKind};
    use std::sync::Arc;
    const EARLIER: &[u8] = b"EARLIER-SESSION-5d1e";
    const EARLIER_ID: u64 = 4;
    let options = Options {
        keep_history: true,
        ..sweep_options(Durability::Always)
    };
    // The earlier session: the fourth of another store, so its header names id 4.
    let earlier = {
        let fs = SimFs::new();
        let store = LogStore::open_with_fs("/o", options.clone(), Arc::new(fs.clone())).unwrap();
        for key in ["a", "b", "c"] {
            store.append(key, &user("filler")).unwrap();
        }
        let text = std::str::from_utf8(EARLIER).unwrap();
        store.append("k", &ChatMessage::user(text)).unwrap();
        store.close().unwrap();
        let name = format!("/o/{EARLIER_ID:016x}-00000001.seg");
        let files = fs.files();
        files
            .into_iter()
            .find(|(p, _)| p.to_str() == Some(name.as_str()))
            .unwrap()
            .1
    };
    let setup = |fs: &SimFs| {
        let store = LogStore::open_with_fs("/s", options.clone(), Arc::new(fs.clone())).unwrap();
        store.append("k", &marker(0)).unwrap();
        store.append("other", &user("stays")).unwrap();
        store.close().unwrap();
        fs.create_dir_all(Path::new("/s/archive")).unwrap();
        fs.sync_dir(Path::new("/s")).unwrap();
        let kept = format!("/s/archive/{EARLIER_ID:016x}-00000001.seg");
        write_new_file(fs, Path::new(&kept), &earlier).unwrap();
        LogStore::open_with_fs("/s", options.clone(), Arc::new(fs.clone())).unwrap()
    };
    let total = {
        let fs = SimFs::new();
        let store = setup(&fs);
        let before = fs.mutations();
        store.erase_session("k").unwrap();
        assert!(!sim_holds(&fs, EARLIER), "erased at once");
        fs.mutations() - before
    };
    let mut logged = 0;
    for n in 0..=total {
        let (fs, store) = erase_cut_after(n, &options, setup);
        let context = format!("cut after {n} of {total}");
        assert_eq!(store.load("other"), vec![user("stays")], "{context}");
        let erased = store.events(EventFilter::all()).unwrap().any(|e| {
            matches!(
                e.unwrap().kind,
                EventKind::Erased {
                    session_id: EARLIER_ID,
                    whole_session: true,
                }
            )
        });
        if erased {
            logged += 1;
            assert!(
                !sim_holds(&fs, EARLIER),
                "{context}: the earlier session survives"
            );
        }
        // Whatever the cut left, erasing again (the caller saw an error) erases it all.
        store.erase_session("k").unwrap();
        assert!(!sim_holds(&fs, EARLIER), "{context}: erased again");
        assert!(!sim_holds(&fs, MARKER), "{context}: erased again");
    }
    assert!(logged > 0, "no cut fell after the erasure was logged");
}

/// A compaction that failed before its rename removes its output, best effort: one it could
/// not remove (left for a replaying open) holds the session's messages, and goes with an
/// erasure of the session.
#[test]
fn erase_session_removes_a_compactions_output_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), Options::default()).unwrap();
    store.append("k", &marker(0)).unwrap();
    store.append("other", &user("stays")).unwrap();
    let (seg, bytes) = snapshot_files(dir.path())
        .into_iter()
        .find(|(_, bytes)| bytes.windows(MARKER.len()).any(|w| w == MARKER))
        .unwrap();
    // What a failed compaction of session `k` left: its next segment's temporary file.
    let name = seg.file_name().unwrap().to_str().unwrap();
    let left = dir.path().join(format!("{}-00000002.seg.tmp", &name[..16]));
    std::fs::write(&left, &bytes).unwrap();
    let removed = store.erase_session("k").unwrap();
    assert!(removed.contains(&left), "{removed:?}");
    assert!(
        holds_marker(dir.path()).is_empty(),
        "{:?}",
        holds_marker(dir.path())
    );
    assert_eq!(store.load("other"), vec![user("stays")]);
}

/// An erasure finds a session's side files from one listing of the store's folder, kept
/// between erasures: a repair at a session's first touch that saves a torn tail to a new side
/// file makes the next erasure look again, so the side file goes with the session.
#[test]
fn a_side_file_saved_after_an_earlier_erasure_goes_with_its_session() {
    const TORN: &[u8] = b"TORN-TAIL-4b1d";
    let dir = tempfile::tempdir().unwrap();
    let options = || Options {
        tombstone_retention: Duration::ZERO,
        ..Options::default()
    };
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    store.append("a", &user("kept")).unwrap();
    store.append("b", &user("erased first")).unwrap();
    store.close().unwrap();
    // Bytes appended to a's segment while the store was closed: a torn tail to its next open.
    let seg = segment_holding(dir.path(), b"kept");
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
        file.write_all(TORN).unwrap();
    }
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    // An erasure of another session lists the folder: no side file yet.
    store.erase_session("b").unwrap();
    // a's first touch cuts the tail and saves it to a side file.
    assert_eq!(store.load("a"), vec![user("kept")]);
    let side: Vec<_> = snapshot_files(dir.path())
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().contains(".torn-"))
        .collect();
    assert_eq!(side.len(), 1, "{side:?}");
    let removed = store.erase_session("a").unwrap();
    assert!(!side[0].0.exists(), "{:?}", side[0].0);
    // With no undo window the delete's own reclaim removed it: the erasure says so.
    assert!(removed.contains(&side[0].0), "{removed:?}");
    let left: Vec<_> = snapshot_files(dir.path())
        .into_iter()
        .filter(|(_, bytes)| bytes.windows(TORN.len()).any(|w| w == TORN))
        .map(|(p, _)| p)
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

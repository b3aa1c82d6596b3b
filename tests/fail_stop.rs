//! Fail-stop, and only where it is due: a failed write or sync of data stops every later write
//! (`Error::Poisoned`, the disk may not hold what it was given); a file that cannot be opened,
//! or a compaction that fails before its new generation is in force, fails that one call and
//! the store goes on. A poisoned store changes no file, not even to reclaim a tombstone.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::SIM_DIR;
use sessionlog::fs::FileSystem;
use sessionlog::testing::{FaultyFs, FsOp, SimFs, EIO};
use sessionlog::{ChatMessage, Durability, Error, LogStore, Options, SessionBackend};

/// Linux's `EMFILE`: the process has too many files open.
const EMFILE: i32 = 24;

fn is_poisoned(store: &LogStore) -> bool {
    matches!(
        store.append("probe", &ChatMessage::user("probe")),
        Err(e) if matches!(e.get_ref().and_then(|e| e.downcast_ref::<Error>()), Some(Error::Poisoned))
    )
}

fn texts(store: &LogStore, key: &str) -> Vec<String> {
    store.load(key).into_iter().map(|m| m.content).collect()
}

/// A session's segment cannot be opened (too many open files): the append fails, nothing is
/// written, and the next append to it succeeds. A failed write or sync still poisons.
#[test]
fn a_segment_that_cannot_be_opened_fails_that_append_only() {
    let options = Options {
        open_files_max: 1,
        ..Options::with_durability(Durability::Always)
    };
    let mut opens = 0;
    for n in 0.. {
        let sim = SimFs::new();
        let fs = FaultyFs::new(Arc::new(sim.clone()));
        let store = LogStore::open_with_fs(SIM_DIR, options.clone(), Arc::new(fs.clone())).unwrap();
        store.append("a", &ChatMessage::user("a1")).unwrap();
        store.append("b", &ChatMessage::user("b1")).unwrap();
        fs.fail_at(n, EMFILE);
        let result = store.append("b", &ChatMessage::user("b2"));
        let Some(failed) = fs.failed() else {
            result.unwrap();
            break;
        };
        assert!(
            result.is_err(),
            "step {n} ({failed:?}) failed but the append succeeded"
        );
        let expected: Vec<String> = match failed {
            FsOp::Open => {
                opens += 1;
                assert!(!is_poisoned(&store), "step {n}: an open poisoned the store");
                store.append("b", &ChatMessage::user("b3")).unwrap();
                vec!["b1".into(), "b3".into()]
            }
            FsOp::Write | FsOp::Sync | FsOp::SyncDir => {
                assert!(
                    is_poisoned(&store),
                    "step {n}: a failed {failed:?} did not poison"
                );
                vec!["b1".into()]
            }
            other => panic!("step {n}: an append does no {other:?}"),
        };
        assert_eq!(texts(&store, "b"), expected, "step {n}");
        drop(store);
        let store = LogStore::open_with_fs(SIM_DIR, options.clone(), Arc::new(sim)).unwrap();
        let after = texts(&store, "b");
        assert!(
            after == expected || (failed != FsOp::Open && after == ["b1", "b2"]),
            "step {n}: {after:?} after reopen"
        );
        assert_eq!(texts(&store, "a"), ["a1"]);
    }
    assert!(opens > 0, "no step opened a file");
}

/// A compaction fails at each of its steps in turn. Before its rename, the store goes on
/// writing; from the rename's folder sync on, it is poisoned. Either way every message is
/// there, in memory and after a reopen.
#[test]
fn a_compaction_that_fails_before_its_rename_leaves_the_store_writing() {
    let options = Options {
        compaction_dead_bytes_min: u64::MAX,
        ..Options::with_durability(Durability::Always)
    };
    let mut renamed = false;
    let mut before_rename = 0;
    for n in 0.. {
        let sim = SimFs::new();
        let fs = FaultyFs::new(Arc::new(sim.clone()));
        let store = LogStore::open_with_fs(SIM_DIR, options.clone(), Arc::new(fs.clone())).unwrap();
        for i in 0..5 {
            store
                .append("a", &ChatMessage::user(format!("m{i}")))
                .unwrap();
        }
        store.remove_last("a").unwrap();
        let expected = texts(&store, "a");
        fs.fail_at(n, EIO);
        let result = store.compact_session("a");
        let Some(failed) = fs.failed() else {
            result.unwrap();
            break;
        };
        assert!(result.is_err(), "step {n} ({failed:?})");
        renamed |= failed == FsOp::SyncDir || failed == FsOp::Remove;
        assert_eq!(texts(&store, "a"), expected, "step {n} ({failed:?})");
        let poisoned = is_poisoned(&store);
        if renamed {
            assert!(poisoned, "step {n} ({failed:?}): in force, not poisoned");
        } else {
            before_rename += 1;
            assert!(
                !poisoned,
                "step {n} ({failed:?}): poisoned before the rename"
            );
            store.append("a", &ChatMessage::user("after")).unwrap();
            store.compact_session("a").unwrap();
        }
        let mut now = expected.clone();
        if !renamed {
            now.push("after".into());
        }
        assert_eq!(texts(&store, "a"), now, "step {n}");
        drop(store);
        let store = LogStore::open_with_fs(SIM_DIR, options.clone(), Arc::new(sim)).unwrap();
        assert_eq!(texts(&store, "a"), now, "step {n} after reopen");
    }
    assert!(
        renamed && before_rename > 2,
        "{before_rename} steps before the rename"
    );
}

/// Once poisoned, the store's background sweep leaves a tombstone past its retention alone:
/// no file removed, nothing logged. The next open reclaims it.
#[test]
fn a_poisoned_store_reclaims_no_tombstone() {
    let options = Options {
        tombstone_retention: Duration::from_millis(100),
        ..Options::with_durability(Durability::Always)
    };
    let sim = SimFs::new();
    let fs = FaultyFs::new(Arc::new(sim.clone()));
    let store = LogStore::open_with_fs(SIM_DIR, options.clone(), Arc::new(fs.clone())).unwrap();
    store.append("old", &ChatMessage::user("bye")).unwrap();
    store.append("x", &ChatMessage::user("x1")).unwrap();
    assert!(store.delete_session("old").unwrap());
    let files = |sim: &SimFs| {
        let mut names: Vec<String> = sim
            .list(Path::new(SIM_DIR))
            .unwrap()
            .into_iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = files(&sim);
    assert!(before.iter().filter(|n| n.ends_with(".seg")).count() >= 2);
    // "x"'s segment is open: the next operation is the append's write.
    fs.fail_at(0, EIO);
    assert!(store.append("x", &ChatMessage::user("x2")).is_err());
    assert_eq!(fs.failed(), Some(FsOp::Write));
    assert!(is_poisoned(&store));
    // Past the retention, and past a background sweep (every second).
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(files(&sim), before, "the poisoned store changed the folder");
    drop(store);
    let store = LogStore::open_with_fs(SIM_DIR, options, Arc::new(sim.clone())).unwrap();
    assert!(!store.session_exists("old"));
    assert!(store.restore_session("old").is_ok_and(|restored| !restored));
    assert_eq!(texts(&store, "x"), ["x1"]);
}

/// A store under `Never` on `sim` with `sessions` sessions written and not yet synced.
fn unsynced_sessions(sim: &SimFs, sessions: usize) -> LogStore {
    let options = Options {
        auto_compact: false,
        ..Options::with_durability(Durability::Never)
    };
    let store = LogStore::open_with_fs(SIM_DIR, options, Arc::new(sim.clone())).unwrap();
    for i in 0..sessions {
        store
            .append(&format!("s{i}"), &ChatMessage::user("lost"))
            .unwrap();
    }
    store
}

#[test]
fn a_failed_write_back_another_process_heard_of_first_still_fails_the_flush() {
    let sim = SimFs::new();
    // Enough sessions that the flush syncs the whole file system at once.
    let store = unsynced_sessions(&sim, 100);
    // The write-back fails, and another process's `syncfs` is told first: a handle opened
    // now would hear nothing.
    sim.fail_write_back(true);
    let err = store.sync().unwrap_err();
    assert!(err.to_string().contains("syncing the file system"), "{err}");
    assert!(
        is_poisoned(&store),
        "the disk does not hold what it was given"
    );
}

#[test]
fn a_store_poisoned_by_a_failed_write_still_syncs_what_it_acknowledged() {
    let sim = SimFs::new();
    let fs = FaultyFs::new(Arc::new(sim.clone()));
    let options = Options {
        auto_compact: false,
        ..Options::with_durability(Durability::Never)
    };
    let store = LogStore::open_with_fs(SIM_DIR, options.clone(), Arc::new(fs.clone())).unwrap();
    store
        .append("k", &ChatMessage::user("acknowledged"))
        .unwrap();
    fs.fail_at(0, EIO);
    assert!(store.append("k", &ChatMessage::user("refused")).is_err());
    assert!(is_poisoned(&store));
    // The write that failed was never acknowledged; the one before it was, and a sync still
    // makes it durable.
    store.sync().unwrap();
    sim.cut_power_after(0);
    drop(store);
    sim.crash(None);
    let store = LogStore::open_with_fs(SIM_DIR, options, Arc::new(sim.clone())).unwrap();
    assert_eq!(store.load("k"), vec![ChatMessage::user("acknowledged")]);
}

#[test]
fn a_failed_write_back_fails_the_flush_of_a_few_files() {
    let sim = SimFs::new();
    // Few enough sessions that the flush syncs file by file.
    let store = unsynced_sessions(&sim, 3);
    sim.fail_write_back(false);
    let err = store.sync().unwrap_err();
    assert!(err.to_string().contains("syncing"), "{err}");
    assert!(
        is_poisoned(&store),
        "the disk does not hold what it was given"
    );
}

/// The close's last sync of the sequence floor (in `LOCK`) fails: `close` reports it, the
/// store stops, and the drop that follows does not try again (a sync retried after a failed
/// one can report success for what the kernel dropped) nor write a checkpoint that would
/// vouch for it. The next open replays, and holds every message.
#[test]
fn a_failed_sync_of_the_floor_at_close_stops_the_store_and_leaves_no_checkpoint() {
    let sim = SimFs::new();
    let open = || LogStore::open_with_fs(SIM_DIR, Options::default(), Arc::new(sim.clone()));
    let store = open().unwrap();
    store.append("k", &ChatMessage::user("one")).unwrap();
    sim.fail_next_sync(&Path::new(SIM_DIR).join("LOCK"));
    assert!(store.close().is_err());
    let store = open().unwrap();
    assert!(
        !store.recovery_report().from_checkpoint,
        "a checkpoint was written after the failed sync"
    );
    assert_eq!(store.load("k"), vec![ChatMessage::user("one")]);
}

/// After a compaction's rename, the folder sync fails, and the look at the files that decides
/// what the failure means fails too (a `stat` error, which `exists` reads as absent). The
/// compaction may be in force, so the store stops writing: an append after it would go to a
/// segment the new generation replaced, and be lost at the next open.
#[test]
fn a_compaction_whose_rename_cannot_be_ruled_out_stops_the_store() {
    use common::hooked::{Hooked, Hooks};
    use sessionlog::fs::FileStat;
    use std::sync::Mutex;

    /// Once armed: the next folder sync fails, and so does every look at the compaction's
    /// new segment (number 2 of session 1).
    #[derive(Debug, Default)]
    struct BlindAfterRename(Mutex<bool>);
    impl BlindAfterRename {
        fn blind(&self, path: &Path) -> bool {
            *self.0.lock().unwrap() && path.ends_with("0000000000000001-00000002.seg")
        }
    }
    impl Hooks for BlindAfterRename {
        fn sync_dir(&self, dir: &Path, sim: &SimFs) -> std::io::Result<()> {
            if *self.0.lock().unwrap() {
                return Err(std::io::Error::from_raw_os_error(EIO));
            }
            sim.sync_dir(dir)
        }
        fn exists(&self, path: &Path, sim: &SimFs) -> bool {
            !self.blind(path) && sim.exists(path)
        }
        fn stat(&self, path: &Path, sim: &SimFs) -> std::io::Result<FileStat> {
            if self.blind(path) {
                return Err(std::io::Error::from_raw_os_error(EIO));
            }
            sim.stat(path)
        }
    }

    let options = Options {
        compaction_dead_bytes_min: u64::MAX,
        ..Options::with_durability(Durability::Always)
    };
    let fs = Hooked::new(&SimFs::new(), BlindAfterRename::default());
    let store = LogStore::open_with_fs(SIM_DIR, options.clone(), Arc::new(fs.clone())).unwrap();
    for i in 0..3 {
        store
            .append("a", &ChatMessage::user(format!("m{i}")))
            .unwrap();
    }
    *fs.hooks.0.lock().unwrap() = true;
    assert!(store.compact_session("a").is_err());
    *fs.hooks.0.lock().unwrap() = false;
    let mut acknowledged = texts(&store, "a");
    if store.append("a", &ChatMessage::user("after")).is_ok() {
        acknowledged.push("after".into());
    } else {
        assert!(is_poisoned(&store));
    }
    // The process is killed: what it wrote stays in the page cache, and the next open
    // replays.
    let killed = fs.sim.snapshot();
    std::mem::forget(store);
    let store = LogStore::open_with_fs(SIM_DIR, options, Arc::new(killed)).unwrap();
    assert!(!store.recovery_report().from_checkpoint);
    assert_eq!(texts(&store, "a"), acknowledged);
}

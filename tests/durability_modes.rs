//! Each durability mode keeps what it promises across a clean close and reopen, the interval
//! flusher runs (it alone makes writes durable: a power loss after it ran, without any sync or
//! close, keeps them), and a failed write poisons the store until it is reopened.

mod common;

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::hooked::{Hooked, Hooks};
use common::*;
use sessionlog::fs::{FileHandle, FileSystem};
use sessionlog::testing::SimFs;
use sessionlog::{ChatMessage, Durability, Error, LogStore, Options, SessionBackend};

#[test]
fn every_mode_keeps_writes_across_close_and_reopen() {
    for durability in [
        Durability::Always,
        Durability::Interval(Duration::from_millis(5)),
        Durability::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open_with(dir.path(), Options::with_durability(durability)).unwrap();
        fill(&store, "k", "m", 20);
        store.update_last("k", &user("last")).unwrap();
        if let Durability::Interval(_) = durability {
            std::thread::sleep(Duration::from_millis(30)); // let the flusher run at least once
        }
        store.sync().unwrap();
        store.close().unwrap();
        let store = open(dir.path());
        assert_eq!(store.load("k").len(), 20, "{durability:?}");
        assert_eq!(store.load("k")[19], user("last"));
    }
}

/// What a [`Watched`] file system saw made durable.
#[derive(Debug, Default)]
struct Durable {
    /// Each synced file's length when its latest sync began: at least that much of it is
    /// durable.
    synced: HashMap<PathBuf, u64>,
    /// Names a folder sync made durable.
    named: HashSet<PathBuf>,
}

/// Notes what the store makes durable.
#[derive(Debug, Default)]
struct Watch(Mutex<Durable>);

impl Hooks for Watch {
    fn sync(&self, path: &Path, file: &dyn FileHandle) -> io::Result<()> {
        // Taken before the sync, so that a write racing with it is not counted as synced.
        let len = file.size()?;
        file.sync()?;
        let mut durable = self.0.lock().unwrap();
        let synced = durable.synced.entry(path.to_owned()).or_default();
        *synced = (*synced).max(len);
        Ok(())
    }
    fn sync_dir(&self, dir: &Path, sim: &SimFs) -> io::Result<()> {
        // Listed before the sync: these names are durable once it returns.
        let names = sim.list(dir)?;
        sim.sync_dir(dir)?;
        let mut durable = self.0.lock().unwrap();
        durable
            .named
            .extend(names.into_iter().map(|entry| dir.join(entry.name)));
        Ok(())
    }
}

/// A [`SimFs`] that notes what the store makes durable, so that a test can wait for the
/// flusher without calling `sync` itself.
type Watched = Hooked<Watch>;

impl Hooked<Watch> {
    /// The segment files in `dir` whose name or bytes are not all durable yet.
    fn segments_not_durable(&self, dir: &Path) -> Vec<PathBuf> {
        let segments: Vec<(PathBuf, Vec<u8>)> = self
            .sim
            .files()
            .into_iter()
            .filter(|(p, _)| p.parent() == Some(dir) && p.extension().is_some_and(|e| e == "seg"))
            .collect();
        assert!(!segments.is_empty(), "the store wrote no segment");
        let durable = self.hooks.0.lock().unwrap();
        segments
            .into_iter()
            .filter(|(p, bytes)| {
                !durable.named.contains(p) || durable.synced.get(p) != Some(&(bytes.len() as u64))
            })
            .map(|(p, _)| p)
            .collect()
    }

    /// True if any segment file was synced.
    fn any_segment_synced(&self) -> bool {
        let durable = self.hooks.0.lock().unwrap();
        durable
            .synced
            .keys()
            .any(|p| p.extension().is_some_and(|e| e == "seg"))
    }
}

/// Options for the power-loss tests below: no background compaction, so that only the
/// flusher (if any) touches the file system once the calls return.
fn power_loss_options(durability: Durability) -> Options {
    Options {
        auto_compact: false,
        ..Options::with_durability(durability)
    }
}

/// Writes 20 messages (the last one updated) to session `k`, as
/// `every_mode_keeps_writes_across_close_and_reopen` does; returns what the session holds.
fn write_some(store: &LogStore) -> Vec<ChatMessage> {
    fill(store, "k", "m", 20);
    store.update_last("k", &user("last")).unwrap();
    let expected = store.load("k");
    assert_eq!(expected.len(), 20);
    expected
}

/// Cuts the power with `store` still open (so that closing it can sync nothing), drops it,
/// loses everything not durable and opens the store again.
fn lose_power(sim: &SimFs, store: LogStore) -> LogStore {
    sim.cut_power_after(0);
    drop(store);
    sim.crash(None);
    LogStore::open_with_fs(SIM_DIR, Options::default(), Arc::new(sim.clone()))
        .expect("the store opens after a power loss")
}

#[test]
fn the_interval_flusher_alone_makes_writes_durable() {
    let sim = SimFs::new();
    let watched = Watched::new(&sim, Watch::default());
    let store = LogStore::open_with_fs(
        SIM_DIR,
        power_loss_options(Durability::Interval(Duration::from_millis(5))),
        Arc::new(watched.clone()),
    )
    .unwrap();
    let expected = write_some(&store);
    // No sync, no close: wait (generously, in small steps) until every segment's name and
    // bytes were made durable, which only the flusher can have done.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pending = watched.segments_not_durable(Path::new(SIM_DIR));
        if pending.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the flusher did not make {pending:?} durable within 10 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let store = lose_power(&sim, store);
    assert_eq!(store.load("k"), expected);
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
}

#[test]
fn before_the_flusher_runs_or_without_one_a_power_loss_takes_every_write() {
    for durability in [
        // The first flush is an hour away.
        Durability::Interval(Duration::from_secs(3600)),
        Durability::Never,
    ] {
        let sim = SimFs::new();
        let watched = Watched::new(&sim, Watch::default());
        let store = LogStore::open_with_fs(
            SIM_DIR,
            power_loss_options(durability),
            Arc::new(watched.clone()),
        )
        .unwrap();
        write_some(&store);
        // Nothing made the writes durable: the power loss takes them all, which is why the
        // test above has the flusher to thank for what it kept.
        assert!(!watched.any_segment_synced(), "{durability:?}");
        let store = lose_power(&sim, store);
        assert!(!store.session_exists("k"), "{durability:?}");
        assert!(store.load("k").is_empty(), "{durability:?}");
    }
}

#[test]
fn a_failed_write_poisons_the_store_until_reopen() {
    use sessionlog::testing::{FaultyFs, FsOp, EIO};
    let sim = SimFs::new();
    let faulty = FaultyFs::new(Arc::new(sim.clone()));
    let options = Options::with_durability(Durability::Always);
    let store = LogStore::open_with_fs(SIM_DIR, options.clone(), Arc::new(faulty.clone())).unwrap();
    store.append("existing", &user("x")).unwrap();
    // The segment is open: the next operation is the append's write.
    faulty.fail_at(0, EIO);
    let err = store.append("existing", &user("lost")).unwrap_err();
    assert_eq!(faulty.failed(), Some(FsOp::Write));
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<Error>());
    assert!(matches!(inner, Some(Error::Io { .. })), "{err:?}");
    // Every later write is refused, even where the disk would accept it.
    let err = store.append("existing", &user("z")).unwrap_err();
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<Error>());
    assert!(matches!(inner, Some(Error::Poisoned)), "{err:?}");
    assert!(store.set_session_name("existing", "n").is_err());
    assert!(store.append("new", &user("y")).is_err());
    // Reads still work.
    assert_eq!(store.load("existing"), vec![user("x")]);
    drop(store);
    let store = LogStore::open_with_fs(SIM_DIR, options, Arc::new(sim)).unwrap();
    assert_eq!(store.load("existing"), vec![user("x")]);
    assert!(!store.session_exists("new"));
    store.append("existing", &user("after reopen")).unwrap();
}

/// A segment that cannot be created (here, the folder is gone) writes nothing: the append
/// fails, and the store takes writes again once the folder is back.
#[test]
fn a_segment_that_cannot_be_created_fails_that_append_only() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    let store = open(&dir);
    store.append("existing", &user("x")).unwrap();
    let moved = root.path().join("moved");
    std::fs::rename(&dir, &moved).unwrap();
    let err = store.append("new", &user("y")).unwrap_err();
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<Error>());
    assert!(matches!(inner, Some(Error::Io { .. })), "{err:?}");
    assert!(!store.session_exists("new"));
    std::fs::rename(&moved, &dir).unwrap();
    store.append("existing", &user("z")).unwrap();
    store.append("new", &user("y again")).unwrap();
    drop(store);
    let store = open(&dir);
    assert_eq!(store.load("existing"), vec![user("x"), user("z")]);
    assert_eq!(store.load("new"), vec![user("y again")]);
}

#[test]
fn errors_convert_to_io_errors_with_fitting_kinds_and_the_original_as_source() {
    use std::io::ErrorKind;
    let cases = [
        (Error::Poisoned, ErrorKind::Other),
        (
            Error::RecordTooLarge { len: 2, max: 1 },
            ErrorKind::InvalidInput,
        ),
        (
            Error::InvalidKey {
                len: 0,
                reason: "empty",
            },
            ErrorKind::InvalidInput,
        ),
        (
            Error::Corrupt {
                path: "p".into(),
                offset: 1,
                reason: "r".into(),
            },
            ErrorKind::InvalidData,
        ),
        (
            Error::ChecksumMismatch {
                path: "p".into(),
                offset: 1,
                expected: 1,
                actual: 2,
            },
            ErrorKind::InvalidData,
        ),
        (
            Error::UnsupportedVersion {
                path: "p".into(),
                found: 9,
                supported: 1,
            },
            ErrorKind::Unsupported,
        ),
        (Error::Locked { path: "p".into() }, ErrorKind::ResourceBusy),
    ];
    for (error, kind) in cases {
        let text = error.to_string();
        let io: std::io::Error = error.into();
        assert_eq!(io.kind(), kind, "{text}");
        let source = io
            .get_ref()
            .and_then(|e| e.downcast_ref::<Error>())
            .unwrap();
        assert_eq!(source.to_string(), text);
    }
    let io: std::io::Error = Error::Io {
        context: "c".into(),
        source: std::io::Error::from(ErrorKind::StorageFull),
    }
    .into();
    assert_eq!(io.kind(), ErrorKind::StorageFull);
}

/// A clean close costs what is dirty at once, not a sync per file: with many sessions written
/// under `Never`, it makes them durable with one sync of the file system (where there is one),
/// and a power loss right after the close keeps every session.
#[test]
fn a_clean_close_of_many_sessions_syncs_the_file_system_once() {
    let sim = SimFs::new();
    let options = Options::with_durability(Durability::Never);
    let store = LogStore::open_with_fs(SIM_DIR, options.clone(), Arc::new(sim.clone())).unwrap();
    let sessions = 300;
    for s in 0..sessions {
        store.append(&format!("user_{s}"), &user("hello")).unwrap();
    }
    let before = sim.mutations();
    store.close().unwrap();
    let closing = sim.mutations() - before;
    assert!(
        closing < 40,
        "{closing} file-system operations to close {sessions} sessions"
    );
    sim.crash(None);
    let store = LogStore::open_with_fs(SIM_DIR, options, Arc::new(sim.clone())).unwrap();
    assert_eq!(store.list_sessions().len(), sessions);
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
}

/// Counts the syncs of the checkpoint's temporary file: one per checkpoint written.
#[derive(Debug, Default)]
struct CheckpointWrites(Mutex<usize>);

impl Hooks for CheckpointWrites {
    fn sync(&self, path: &Path, file: &dyn FileHandle) -> io::Result<()> {
        if path.ends_with("CHECKPOINT.tmp") {
            *self.0.lock().unwrap() += 1;
        }
        file.sync()
    }
}

#[test]
fn close_shuts_the_store_down_once_and_its_drop_does_nothing_more() {
    let sim = SimFs::new();
    let fs = Hooked::new(&sim, CheckpointWrites::default());
    let options = Options::with_durability(Durability::Never);
    let store = LogStore::open_with_fs(SIM_DIR, options.clone(), Arc::new(fs.clone())).unwrap();
    for s in 0..20 {
        store.append(&format!("user_{s}"), &user("hello")).unwrap();
    }
    let before = sim.mutations();
    store.close().unwrap();
    assert_eq!(*fs.hooks.0.lock().unwrap(), 1, "one checkpoint written");
    let closing = sim.mutations() - before;
    // Dropped without `close`: the same work, once.
    let store = LogStore::open_with_fs(SIM_DIR, options, Arc::new(fs.clone())).unwrap();
    store.append("user_0", &user("again")).unwrap();
    let before = sim.mutations();
    drop(store);
    assert_eq!(*fs.hooks.0.lock().unwrap(), 2);
    assert!(sim.mutations() - before <= closing + 4);
}

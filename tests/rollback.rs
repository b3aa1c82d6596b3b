//! A rollback does not go unnoticed: a session whose files are restored to an older copy is
//! reported at open (`Finding::RolledBack`) and fails `verify`, in plain and encrypted stores;
//! the root hash tells a whole folder rolled back to an older copy (`LogStore::holds_root`,
//! `sessionlog verify --root`). Deletes, erasures, compaction and forks are no rollback.

mod common;

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::hooked::{Hooked, Hooks};
use common::*;
use sessionlog::fs::{FileHandle, FileSystem};
use sessionlog::testing::SimFs;
use sessionlog::{Durability, EncryptionKey, Finding, LogStore, Options, SessionBackend};

fn options(encrypted: bool) -> Options {
    Options {
        encryption: encrypted.then(|| EncryptionKey::from_bytes([7; 32])),
        ..Options::default()
    }
}

/// Every file of the session whose segments hold `key`'s records (the lowest id first: the
/// sessions are made in order, so `nth` picks the nth made).
fn session_files(dir: &Path, nth: usize) -> Vec<PathBuf> {
    let segs = segments(dir);
    let mut ids: Vec<String> = segs
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap()[..16].to_owned())
        .collect();
    ids.dedup();
    segs.into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(&ids[nth])
        })
        .collect()
}

/// The store's report once every session was read: after an open from the checkpoint, a
/// session's files are checked (and, if they changed, replayed) at its first read.
fn touched(store: &LogStore) -> &sessionlog::RecoveryReport {
    for key in store.list_sessions() {
        store.load(&key);
    }
    store.recovery_report()
}

fn rolled_back(store: &LogStore) -> Vec<(Option<String>, u64, u64)> {
    touched(store)
        .findings
        .iter()
        .filter_map(|f| match f {
            Finding::RolledBack {
                key,
                anchored_seq,
                found_seq,
                ..
            } => Some((key.clone(), *anchored_seq, *found_seq)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_session_restored_to_an_older_copy_is_reported_and_fails_verify() {
    for encrypted in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open_with(dir.path(), options(encrypted)).unwrap();
        fill(&store, "alice", "a", 3);
        fill(&store, "bob", "b", 2);
        store.close().unwrap();
        let backup: Vec<(PathBuf, Vec<u8>)> = session_files(dir.path(), 0)
            .into_iter()
            .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
            .collect();
        let store = LogStore::open_with(dir.path(), options(encrypted)).unwrap();
        assert!(rolled_back(&store).is_empty());
        fill(&store, "alice", "later", 2);
        let anchored = store.last_seq();
        store.close().unwrap();
        for (path, bytes) in &backup {
            std::fs::write(path, bytes).unwrap();
        }
        for read_only in [true, false] {
            let store = if read_only {
                LogStore::open_read_only_with(dir.path(), options(encrypted)).unwrap()
            } else {
                LogStore::open_with(dir.path(), options(encrypted)).unwrap()
            };
            let found = rolled_back(&store);
            assert_eq!(found.len(), 1, "encrypted {encrypted}: {found:?}");
            let (key, at, now) = &found[0];
            assert_eq!(key.as_deref(), Some("alice"));
            assert_eq!(*at, anchored);
            assert!(now < at);
            assert!(store.recovery_report().has_rollback());
            assert!(!store.recovery_report().has_damage());
            // Served as the files hold it; verify names it.
            assert_eq!(store.load("alice").len(), 3);
            let report = store.verify().unwrap();
            assert!(!report.is_sound());
            assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
            assert_eq!(report.problems[0].session.as_deref(), Some("alice"));
            assert_eq!(store.load("bob").len(), 2);
        }
        if !encrypted {
            // The command words it.
            let (ok, out) = cli(&["verify", dir.path().to_str().unwrap()]);
            assert!(!ok);
            assert!(out.contains("rolled back: session \"alice\""), "{out}");
            assert!(!out.contains("RolledBack {"), "{out}");
        }
        // Still reported after a close: the anchored point never comes down.
        let store = LogStore::open_with(dir.path(), options(encrypted)).unwrap();
        assert_eq!(rolled_back(&store).len(), 1);
        drop(store);
        // A rollback made on purpose: without the anchor log nothing is reported.
        std::fs::remove_file(dir.path().join("ANCHORS")).unwrap();
        let store = LogStore::open_with(dir.path(), options(encrypted)).unwrap();
        assert!(rolled_back(&store).is_empty());
        assert!(store.verify().unwrap().is_sound());
    }
}

#[test]
fn a_session_whose_files_are_all_gone_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open(dir.path());
    fill(&store, "alice", "a", 2);
    fill(&store, "bob", "b", 2);
    store.close().unwrap();
    for path in session_files(dir.path(), 1) {
        std::fs::remove_file(path).unwrap();
    }
    let store = common::open(dir.path());
    let found = rolled_back(&store);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].0.as_deref(), found[0].2), (None, 0));
    assert!(!store.verify().unwrap().is_sound());
}

#[test]
fn deletes_erasures_compaction_and_forks_are_no_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        tombstone_retention: Duration::ZERO,
        ..Options::default()
    };
    let open = || LogStore::open_with(dir.path(), opts.clone()).unwrap();
    let store = open();
    for key in ["a", "b", "c", "d", "e"] {
        fill(&store, key, key, 3);
    }
    store.close().unwrap();
    let store = open();
    store.delete_session("a").unwrap();
    store.erase_session("b").unwrap();
    store.clear_messages("c").unwrap();
    store.compact("c").unwrap();
    store.fork_session("d", "d2", None).unwrap();
    store.remove_last("e").unwrap();
    store.compact("e").unwrap();
    store.close().unwrap();
    let store = open();
    assert!(
        rolled_back(&store).is_empty(),
        "{:?}",
        store.recovery_report()
    );
    assert!(store.verify().unwrap().is_sound());
    store.delete_session("d").unwrap();
    fill(&store, "a", "again", 1);
    store.close().unwrap();
    let store = open();
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    assert!(store.verify().unwrap().is_sound());
}

fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sessionlog"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn copy_folder(from: &Path, to: &Path) {
    for (path, bytes) in snapshot_files(from) {
        let target = to.join(path.strip_prefix(from).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
    }
}

#[test]
fn the_root_hash_tells_a_whole_folder_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open(dir.path());
    fill(&store, "alice", "a", 2);
    let early = store.root_hash().unwrap();
    assert_eq!(early.len(), 64);
    assert_eq!(
        store.root_hash().unwrap(),
        early,
        "nothing changed: same root"
    );
    store.close().unwrap();
    let backup = tempfile::tempdir().unwrap();
    copy_folder(dir.path(), backup.path());
    let store = common::open(dir.path());
    fill(&store, "alice", "later", 1);
    let late = store.root_hash().unwrap();
    assert_ne!(late, early);
    assert!(store.holds_root(&early).unwrap() && store.holds_root(&late.to_uppercase()).unwrap());
    store.close().unwrap();

    // The command prints the root as of the last anchor, and checks a kept one.
    let path = dir.path().to_str().unwrap();
    let (ok, out) = cli(&["verify", path, "--root"]);
    assert!(ok, "{out}");
    assert!(out.contains(&format!("root {late}")), "{out}");
    let (ok, out) = cli(&["verify", path, "--root", &late]);
    assert!(ok, "{out}");

    // The whole folder put back as the backup holds it: every file consistent, nothing for
    // open to notice, but the later root is not in its history.
    std::fs::remove_dir_all(dir.path()).unwrap();
    std::fs::create_dir(dir.path()).unwrap();
    copy_folder(backup.path(), dir.path());
    let store = common::open(dir.path());
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    assert!(store.holds_root(&early).unwrap());
    assert!(!store.holds_root(&late).unwrap());
    drop(store);
    let (ok, out) = cli(&["verify", path, "--root", &late]);
    assert!(!ok, "{out}");
    assert!(out.contains("not in the store's history"), "{out}");
    let (ok, out) = cli(&["verify", path, "--root", &early]);
    assert!(ok, "{out}");
}

/// Holds every segment sync while closed, and notes whether the anchor log was written
/// meanwhile.
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    closed: bool,
    /// A segment sync is waiting at the gate.
    holding: bool,
    /// The anchor log was written while a segment sync was held.
    anchored_meanwhile: bool,
    /// The held sync fails once let through (the disk failed to write the bytes back).
    fail_held: bool,
}

impl Gate {
    fn set(&self, f: impl FnOnce(&mut GateState)) {
        f(&mut self.state.lock().unwrap());
        self.changed.notify_all();
    }

    /// Waits (at most `limit`) until `until` holds; returns whether it does.
    fn wait(&self, limit: Duration, until: impl Fn(&GateState) -> bool) -> bool {
        let guard = self.state.lock().unwrap();
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, limit, |g| !until(g))
            .unwrap();
        until(&guard)
    }
}

impl Hooks for Gate {
    fn write(&self, path: &Path) {
        if path.ends_with("ANCHORS") {
            self.set(|g| g.anchored_meanwhile |= g.holding);
        }
    }
    fn sync(&self, path: &Path, file: &dyn FileHandle) -> io::Result<()> {
        if path.extension().is_some_and(|e| e == "seg") {
            let mut g = self.state.lock().unwrap();
            if g.closed {
                g.holding = true;
                self.changed.notify_all();
                g = self.changed.wait_while(g, |g| g.closed).unwrap();
                g.holding = false;
                if g.fail_held {
                    return Err(io::Error::from_raw_os_error(5)); // EIO
                }
            }
        }
        file.sync()
    }
}

/// Options under which only `sync` and `root_hash` flush.
fn never() -> Options {
    Options {
        auto_compact: false,
        ..Options::with_durability(Durability::Never)
    }
}

/// A store in `dir` on a gated file system.
fn gated_store(dir: &str) -> (Hooked<Gate>, LogStore) {
    let fs = Hooked::new(&SimFs::new(), Gate::default());
    let store = LogStore::open_with_fs(dir, never(), Arc::new(fs.clone())).unwrap();
    (fs, store)
}

#[test]
fn a_root_vouches_only_for_records_on_disk_while_another_flush_syncs() {
    let dir = "/gated";
    let (fs, store) = gated_store(dir);
    let gate = &fs.hooks;
    store.append("k", &user("synced by another flush")).unwrap();
    gate.set(|g| g.closed = true);
    let root = std::thread::scope(|s| {
        // A flush takes the segment to sync and is held at its sync.
        let flusher = s.spawn(|| store.sync());
        assert!(gate.wait(Duration::from_secs(60), |g| g.holding));
        let anchorer = s.spawn(|| store.root_hash());
        // The root must wait for that sync: it vouches for the record.
        let early = gate.wait(Duration::from_millis(500), |g| g.anchored_meanwhile)
            || anchorer.is_finished();
        // Opened before asserting, so that a failure does not leave the flush held.
        gate.set(|g| g.closed = false);
        assert!(
            !early,
            "an anchor was written before the record it names was synced"
        );
        flusher.join().unwrap().unwrap();
        anchorer.join().unwrap().unwrap()
    });
    // What the root names survives a power cut at once.
    fs.sim.cut_power_after(0);
    drop(store);
    fs.sim.crash(None);
    let store = LogStore::open_with_fs(dir, never(), Arc::new(fs.sim.clone())).unwrap();
    assert!(
        rolled_back(&store).is_empty(),
        "{:?}",
        store.recovery_report()
    );
    assert!(store.holds_root(&root).unwrap());
    assert_eq!(store.load("k"), vec![user("synced by another flush")]);
}

#[test]
fn an_anchor_whose_sync_failed_is_replaced_not_chained_over() {
    let sim = SimFs::new();
    let dir = "/failing";
    let options = Options::with_durability(Durability::Always);
    let store = LogStore::open_with_fs(dir, options.clone(), Arc::new(sim.clone())).unwrap();
    store.append("k", &user("one")).unwrap();
    let first = store.root_hash().unwrap();
    store.append("k", &user("two")).unwrap();
    // The disk fails to write the next anchor back: the file shows it, the disk lacks it.
    sim.fail_next_sync(&Path::new(dir).join("ANCHORS"));
    let err = store.root_hash().unwrap_err();
    assert!(err.to_string().contains("ANCHORS"), "{err}");
    let second = store.root_hash().unwrap();
    assert_ne!(second, first);
    // What a root names is on disk once it is handed out.
    sim.cut_power_after(0);
    drop(store);
    sim.crash(None);
    let store = LogStore::open_with_fs(dir, options, Arc::new(sim.clone())).unwrap();
    assert!(
        store.recovery_report().findings.is_empty(),
        "{:?}",
        store.recovery_report()
    );
    assert!(store.holds_root(&first).unwrap());
    assert!(store.holds_root(&second).unwrap());
    assert_eq!(store.verify().unwrap().problems, vec![]);
}

#[test]
fn a_session_quarantined_whole_is_reported_once_not_as_a_rollback_later() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("k", &user(&"first ".repeat(200))).unwrap();
    store.append("k", &user("second")).unwrap();
    store.append("other", &user("neighbour")).unwrap();
    drop(store); // a clean close anchors both sessions
                 // A flipped byte in k's first record: the whole session goes to quarantine.
    let seg = session_files(dir.path(), 0).remove(0);
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();
    let store = open(dir.path());
    let report = touched(&store);
    assert!(report.has_damage(), "{report:?}");
    assert!(!report.has_rollback(), "{report:?}");
    assert_eq!(store.load("k"), vec![]);
    drop(store);
    for _ in 0..2 {
        let store = open(dir.path());
        let report = touched(&store);
        assert!(!report.has_rollback(), "reopened: {report:?}");
        assert_eq!(store.load("other"), vec![user("neighbour")]);
    }
}

#[test]
fn no_root_is_handed_out_when_the_flush_it_waited_for_failed() {
    let (fs, store) = gated_store("/failing-flush");
    let gate = &fs.hooks;
    store.append("k", &user("never written back")).unwrap();
    gate.set(|g| {
        g.closed = true;
        g.fail_held = true;
    });
    let (flushed, rooted) = std::thread::scope(|s| {
        // A flush takes the segment to sync; its sync will fail.
        let flusher = s.spawn(|| store.sync());
        assert!(gate.wait(Duration::from_secs(60), |g| g.holding));
        let anchorer = s.spawn(|| store.root_hash());
        // Give the root's own flush time to queue behind the held one (it must wait).
        gate.wait(Duration::from_millis(200), |g| g.anchored_meanwhile);
        gate.set(|g| g.closed = false);
        (flusher.join().unwrap(), anchorer.join().unwrap())
    });
    assert!(flushed.is_err());
    // The record the root would name is not on disk: no root, whichever call came second.
    let err = rooted.unwrap_err();
    assert!(matches!(err, sessionlog::Error::Poisoned), "{err}");
    assert!(!gate.state.lock().unwrap().anchored_meanwhile);
}

#[test]
fn a_copy_taken_mid_write_is_a_rollback_not_just_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("k", &user("one")).unwrap();
    store.append("k", &user("two")).unwrap();
    let seg = session_files(dir.path(), 0).remove(0);
    let copied = std::fs::read(&seg).unwrap();
    store
        .append("k", &user("three, being written as the copy was taken"))
        .unwrap();
    store.append("k", &user("four")).unwrap();
    drop(store); // anchors k at "four"
                 // The copy: the segment as it was, with the first 30 bytes of the next record.
    let now = std::fs::read(&seg).unwrap();
    std::fs::write(&seg, &now[..copied.len() + 30]).unwrap();
    // A reader, which leaves the torn bytes in place, says so too.
    let reader = LogStore::open_read_only(dir.path()).unwrap();
    let report = reader.recovery_report();
    assert!(report.has_rollback(), "read-only: {report:?}");
    assert!(!reader.verify().unwrap().is_sound());
    drop(reader);
    for reopened in [false, true] {
        let store = open(dir.path());
        let report = touched(&store);
        assert!(report.has_rollback(), "reopened {reopened}: {report:?}");
        assert_eq!(store.load("k"), vec![user("one"), user("two")]);
        assert!(!store.verify().unwrap().is_sound());
    }
}

/// Fails the next folder sync once armed.
#[derive(Debug, Default)]
struct FailDirSync(Mutex<bool>);

impl Hooks for FailDirSync {
    fn sync_dir(&self, dir: &Path, sim: &SimFs) -> io::Result<()> {
        if std::mem::take(&mut *self.0.lock().unwrap()) {
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        sim.sync_dir(dir)
    }
}

#[test]
fn a_root_is_durable_even_when_the_anchor_log_was_created_by_a_failed_call() {
    let fs = Hooked::new(&SimFs::new(), FailDirSync::default());
    let dir = "/first-anchor";
    let store = LogStore::open_with_fs(dir, Options::default(), Arc::new(fs.clone())).unwrap();
    store.append("k", &user("one")).unwrap();
    store.sync().unwrap(); // the new segment's folder entry: no folder sync left to do
                           // The first anchor creates ANCHORS; the folder sync that makes its name durable fails.
    *fs.hooks.0.lock().unwrap() = true;
    assert!(store.root_hash().is_err());
    let root = store.root_hash().unwrap();
    fs.sim.cut_power_after(0);
    drop(store);
    fs.sim.crash(None);
    let store = LogStore::open_with_fs(dir, Options::default(), Arc::new(fs.sim.clone())).unwrap();
    assert!(
        store.holds_root(&root).unwrap(),
        "the anchor log's name was lost"
    );
}

#[test]
fn a_torn_anchored_record_cut_by_an_open_that_never_closed_is_not_a_rollback_later() {
    let sim = SimFs::new();
    let dir = "/killed";
    let store = LogStore::open_with_fs(dir, Options::default(), Arc::new(sim.clone())).unwrap();
    store.append("k", &user("one")).unwrap();
    store.append("k", &user("two, torn at rest")).unwrap();
    drop(store); // anchors k at "two"
    let (seg, bytes) = sim
        .files()
        .into_iter()
        .find(|(p, _)| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    sim.put_file(&seg, &bytes[..bytes.len() - 10]);
    let store = LogStore::open_with_fs(dir, Options::default(), Arc::new(sim.clone())).unwrap();
    let report = touched(&store);
    assert!(
        report
            .findings
            .iter()
            .any(|f| matches!(f, Finding::TornTail { .. })),
        "{report:?}"
    );
    assert!(!report.has_rollback(), "{report:?}");
    // The process ends before any anchor records where k now ends.
    sim.cut_power_after(0);
    drop(store);
    sim.crash(None);
    let store = LogStore::open_with_fs(dir, Options::default(), Arc::new(sim.clone())).unwrap();
    let report = touched(&store);
    assert!(!report.has_rollback(), "{report:?}");
    assert_eq!(store.load("k"), vec![user("one")]);
    assert!(store.verify().unwrap().is_sound());
}

#[test]
fn a_store_closed_many_times_reads_its_anchors_from_the_last_full_one_and_still_tells_a_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let mut backup: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    // 100 sessions anchored at each close: 4.8 KB an anchor, a full anchor every 64 KiB.
    for round in 0..30 {
        let store = LogStore::open_with(dir.path(), never()).unwrap();
        for i in 0..100 {
            store
                .append(&format!("s{i:03}"), &user(&format!("round {round}")))
                .unwrap();
        }
        store.close().unwrap();
        if round == 20 {
            backup = (session_files(dir.path(), 0).into_iter())
                .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
                .collect();
        }
    }
    let lock = std::fs::read(dir.path().join("LOCK")).unwrap();
    assert_eq!(
        lock.get(96..104),
        Some(&b"SLANFULL"[..]),
        "LOCK names a full anchor"
    );
    // The first anchor's bytes, far before it, garbled: a read from the full anchor never
    // sees them.
    let anchors = dir.path().join("ANCHORS");
    let mut bytes = std::fs::read(&anchors).unwrap();
    bytes[100..200].fill(0xAA);
    std::fs::write(&anchors, &bytes).unwrap();
    for (path, bytes) in &backup {
        std::fs::write(path, bytes).unwrap();
    }
    let store = LogStore::open_with(dir.path(), never()).unwrap();
    let found = rolled_back(&store);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0.as_deref(), Some("s000"));
    assert!(
        !store.recovery_report().has_damage(),
        "the anchors before the full one were read: {:?}",
        store.recovery_report().findings
    );
    // `verify` reads the whole log: it names the damage open did not see.
    let problems = store.verify().unwrap().problems;
    let in_log = |p: &sessionlog::Problem| p.session.is_none() && p.path.ends_with("ANCHORS");
    assert_eq!(
        problems.iter().filter(|p| in_log(p)).count(),
        1,
        "{problems:?}"
    );
    drop(store);
    // Without LOCK's name for it, the whole log is read: its damage is reported, and the
    // rollback still told.
    let mut lock = lock;
    lock[96..104].fill(0);
    std::fs::write(dir.path().join("LOCK"), &lock).unwrap();
    let store = LogStore::open_with(dir.path(), never()).unwrap();
    assert_eq!(rolled_back(&store).len(), 1);
    assert!(store.recovery_report().has_damage());
}

/// A killed writer's records may be only in the page cache when the next process opens the
/// store and replays them. The first root that process hands out vouches for them, so they
/// are made durable first: a power loss after it keeps them, is no rollback, and the folder
/// still holds the root.
#[test]
fn a_root_after_replaying_a_killed_writers_unsynced_records_survives_a_power_loss() {
    let sim = SimFs::new();
    let dir = "/killed-writer";
    let writer = LogStore::open_with_fs(dir, never(), Arc::new(sim.clone())).unwrap();
    writer.append("k", &user("one")).unwrap();
    writer.sync().unwrap();
    writer
        .append("k", &user("two, never synced by its writer"))
        .unwrap();
    // Killed: its writes stay in the page cache, its lock goes with it.
    let killed = sim.snapshot();
    sim.cut_power_after(0);
    drop(writer);
    let store = LogStore::open_with_fs(dir, never(), Arc::new(killed.clone())).unwrap();
    assert!(!store.recovery_report().from_checkpoint);
    let root = store.root_hash().unwrap();
    killed.cut_power_after(0);
    drop(store);
    killed.crash(None);
    let store = LogStore::open_with_fs(dir, never(), Arc::new(killed.clone())).unwrap();
    let report = touched(&store);
    assert!(!report.has_rollback(), "{report:?}");
    assert_eq!(
        store.load("k"),
        vec![user("one"), user("two, never synced by its writer")]
    );
    assert!(store.holds_root(&root).unwrap());
}

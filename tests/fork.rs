//! `fork_session`: a new session with the source's history, sharing its bytes (hard links)
//! instead of copying them; the two diverge freely, and compacting or deleting the source
//! never breaks the fork, through reopens and power loss.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sessionlog::testing::SimFs;
use sessionlog::{
    ChatMessage, Durability, Error, EventFilter, EventKind, LogStore, Options, SessionBackend,
};

/// Bytes on disk of the folder's files, each inode counted once.
fn unique_bytes(dir: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path);
            } else if seen.insert(meta.ino()) {
                total += meta.len();
            }
        }
    }
    total
}

/// The files among `files` that hold `marker`.
fn holding(files: Vec<(std::path::PathBuf, Vec<u8>)>, marker: &str) -> Vec<std::path::PathBuf> {
    files
        .into_iter()
        .filter(|(_, bytes)| bytes.windows(marker.len()).any(|w| w == marker.as_bytes()))
        .map(|(path, _)| path)
        .collect()
}

fn no_undo() -> Options {
    Options {
        tombstone_retention: Duration::ZERO,
        ..Options::with_durability(Durability::Never)
    }
}

#[test]
fn a_fork_shares_the_sources_bytes_and_then_diverges() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), no_undo()).unwrap();
    for i in 0..2000 {
        store
            .append("src", &user(&format!("{i} {}", "x".repeat(500))))
            .unwrap();
    }
    store.set_session_name("src", "long talk").unwrap();
    let before = unique_bytes(dir.path());
    store.fork_session("src", "fork", None).unwrap();
    let grew = unique_bytes(dir.path()) - before;
    assert!(grew < 1000, "a fork of 1 MB wrote {grew} bytes");
    assert_eq!(store.load("fork"), store.load("src"));
    assert_eq!(
        store.get_session_name("fork").unwrap().as_deref(),
        Some("long talk")
    );
    let (origin, at) = store.fork_origin("fork").unwrap();
    assert_eq!(origin, "src");
    assert_eq!(store.fork_origin("src"), None);
    // They diverge.
    store.append("fork", &user("only in the fork")).unwrap();
    store.append("src", &user("only in the source")).unwrap();
    store
        .update_last("fork", &ChatMessage::assistant("edited fork"))
        .unwrap();
    assert_eq!(store.load("fork").len(), 2001);
    assert_eq!(store.load("src").len(), 2001);
    assert_eq!(
        store.load("fork")[2000],
        ChatMessage::assistant("edited fork")
    );
    assert_eq!(store.load("src")[2000], user("only in the source"));
    // The log: the fork begins with a Fork event, after the source's event `at`.
    let events: Vec<_> = store
        .events(EventFilter::session("fork"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(matches!(
        &events[0].kind,
        EventKind::Fork { source, at_seq, messages: 2000 } if source == "src" && *at_seq == at
    ));
    let fork_view = (store.load("fork"), store.load("src"));
    drop(store);
    // Reopened from the checkpoint, and replayed.
    for replay in [false, true] {
        if replay {
            std::fs::remove_file(dir.path().join("CHECKPOINT")).ok();
        }
        let store = LogStore::open_with(dir.path(), no_undo()).unwrap();
        assert_eq!((store.load("fork"), store.load("src")), fork_view);
        assert_eq!(store.fork_origin("fork").unwrap().0, "src");
        let report = store.verify().unwrap();
        assert!(report.is_sound(), "{:?}", report.problems);
    }
}

#[test]
fn compacting_or_deleting_the_source_never_breaks_the_fork() {
    for keep_history in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            keep_history,
            ..no_undo()
        };
        let store = LogStore::open_with(dir.path(), options.clone()).unwrap();
        fill(&store, "src", "m", 20);
        store.update_last("src", &user("edited")).unwrap();
        store.fork_session("src", "fork", None).unwrap();
        let expected = store.load("fork");
        store.compact_session("src").unwrap();
        store.append("src", &user("more")).unwrap();
        assert_eq!(store.load("fork"), expected);
        store.delete_session("src").unwrap();
        assert_eq!(store.load("fork"), expected);
        drop(store);
        let store = LogStore::open_with(dir.path(), options.clone()).unwrap();
        assert!(!store.session_exists("src"));
        assert_eq!(store.load("fork"), expected);
        // The fork compacts into its own bytes, and still reads the same.
        store.compact_session("fork").unwrap();
        assert_eq!(store.load("fork"), expected);
        drop(store);
        let store = LogStore::open_with(dir.path(), options).unwrap();
        assert_eq!(store.load("fork"), expected);
        assert!(
            store.recovery_report().is_clean(),
            "{:?}",
            store.recovery_report()
        );
        assert!(store.verify().unwrap().is_sound());
    }
}

#[test]
fn a_fork_from_the_past_and_a_fork_of_a_fork() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), no_undo()).unwrap();
    let mut seqs = Vec::new();
    for i in 0..10 {
        store.append("src", &user(&format!("m {i}"))).unwrap();
        seqs.push(store.last_seq());
    }
    store.fork_session("src", "past", Some(seqs[4])).unwrap();
    assert_eq!(store.load("past").len(), 5);
    assert_eq!(
        store.fork_origin("past"),
        Some(("src".to_string(), seqs[4]))
    );
    store.append("past", &user("branch")).unwrap();
    store.fork_session("past", "grandchild", None).unwrap();
    store.append("grandchild", &user("leaf")).unwrap();
    let mut expected = store.load("past");
    expected.push(user("leaf"));
    assert_eq!(store.load("grandchild"), expected);
    assert_eq!(store.load("src").len(), 10);
    drop(store);
    std::fs::remove_file(dir.path().join("CHECKPOINT")).ok();
    let store = LogStore::open_with(dir.path(), no_undo()).unwrap();
    assert_eq!(store.load("past").len(), 6);
    assert_eq!(store.load("grandchild"), expected);
    assert_eq!(store.load("src").len(), 10);
    let report = store.verify().unwrap();
    assert!(report.is_sound(), "{:?}", report.problems);
}

#[test]
fn a_fork_refuses_what_it_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), no_undo()).unwrap();
    fill(&store, "src", "m", 3);
    fill(&store, "taken", "m", 1);
    assert!(matches!(
        store.fork_session("src", "taken", None),
        Err(Error::SessionExists { .. })
    ));
    assert!(matches!(
        store.fork_session("missing", "new", None),
        Err(Error::SessionNotFound { .. })
    ));
    assert!(matches!(
        store.fork_session("src", "", None),
        Err(Error::InvalidKey { .. })
    ));
    let early = store.last_seq() - 3;
    store.compact_session("src").unwrap();
    assert!(matches!(
        store.fork_session("src", "old", Some(early)),
        Err(Error::HistoryCompacted { .. })
    ));
    assert!(!store.session_exists("new") && !store.session_exists("old"));
}

/// Power is cut at every file operation of a fork (with `Durability::Always`): after the
/// reopen the source is intact and the fork is either whole or absent.
#[test]
fn a_power_cut_during_a_fork_leaves_it_whole_or_absent() {
    let options = Options {
        auto_compact: false,
        ..Options::default()
    };
    let setup = |fs: &SimFs| {
        let store = LogStore::open_with_fs("/s", options.clone(), Arc::new(fs.clone())).unwrap();
        for i in 0..5 {
            store.append("src", &user(&format!("m {i}"))).unwrap();
        }
        store
    };
    let total = {
        let fs = SimFs::new();
        let store = setup(&fs);
        let before = fs.mutations();
        store.fork_session("src", "fork", None).unwrap();
        fs.mutations() - before
    };
    assert!(total >= 4, "{total}");
    for n in 0..=total {
        for torn in [None, Some(7)] {
            let fs = SimFs::new();
            let store = setup(&fs);
            fs.cut_power_after(n);
            let forked = store.fork_session("src", "fork", None).is_ok();
            drop(store);
            fs.crash(torn);
            let store = LogStore::open_with_fs("/s", options.clone(), Arc::new(fs.clone()))
                .unwrap_or_else(|e| panic!("cut after {n}: {e}"));
            assert_eq!(store.load("src").len(), 5, "cut after {n}");
            let fork = store.load("fork");
            assert!(
                fork.is_empty() || fork.len() == 5,
                "cut after {n}: {fork:?}"
            );
            if !fork.is_empty() {
                assert_eq!(store.fork_origin("fork").unwrap().0, "src", "cut after {n}");
            }
            assert!(store.verify().unwrap().is_sound(), "cut after {n}");
            if forked {
                assert_eq!(fork.len(), 5, "an acknowledged fork survives");
            }
            store.append("src", &user("after")).unwrap();
            store.append("fork", &user("after")).unwrap();
        }
    }
}

#[test]
fn a_fork_of_a_compacted_source_reads_whole_and_keeps_its_origin_through_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), no_undo()).unwrap();
    fill(&store, "src", "m", 6);
    store.update_last("src", &user("edited")).unwrap();
    store.compact_session("src").unwrap();
    store.fork_session("src", "fork", None).unwrap();
    store.append("fork", &user("mine")).unwrap();
    // The audit readers follow the fork's shared, compacted history.
    let all: Vec<_> = store.events(EventFilter::all()).unwrap().collect();
    assert!(all.iter().all(Result::is_ok));
    let at = store.last_seq();
    assert_eq!(
        store.load_at("fork", at).unwrap().unwrap().messages.len(),
        7
    );
    assert!(store.verify().unwrap().is_sound());
    // The fork compacts, and a replay still knows where it came from.
    store.compact_session("fork").unwrap();
    drop(store);
    std::fs::remove_file(dir.path().join("CHECKPOINT")).ok();
    let store = LogStore::open_with(dir.path(), no_undo()).unwrap();
    assert_eq!(store.fork_origin("fork").unwrap().0, "src");
    assert_eq!(store.load("fork").len(), 7);
}

#[test]
fn a_replayed_fork_has_none_of_the_sources_undo_state_and_the_source_never_writes_shared_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        tombstone_retention: Duration::from_secs(3600),
        ..Options::with_durability(Durability::Never)
    };
    let store = LogStore::open_with(dir.path(), options.clone()).unwrap();
    fill(&store, "src", "old", 3);
    store.clear_messages("src").unwrap();
    fill(&store, "src", "new", 2);
    store.fork_session("src", "fork", None).unwrap();
    drop(store);
    std::fs::remove_file(dir.path().join("CHECKPOINT")).ok();
    let shared: Vec<(std::path::PathBuf, Vec<u8>)> = snapshot_files(dir.path())
        .into_iter()
        .filter(|(p, _)| std::fs::metadata(p).unwrap().nlink() > 1)
        .collect();
    assert!(!shared.is_empty());
    let store = LogStore::open_with(dir.path(), options).unwrap();
    assert_eq!(
        store.undo_clear("fork").unwrap(),
        0,
        "the source's clear is not the fork's"
    );
    // After a reopen (no `sealed` flag on disk), the source still writes elsewhere.
    store.append("src", &user("after reopen")).unwrap();
    store.sync().unwrap();
    for (path, bytes) in &shared {
        assert_eq!(&std::fs::read(path).unwrap(), bytes, "{}", path.display());
    }
    assert_eq!(
        store.undo_clear("src").unwrap(),
        3,
        "the source keeps its own"
    );
}

#[test]
fn a_fork_of_a_fork_cannot_reach_before_the_fork() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), no_undo()).unwrap();
    fill(&store, "src", "m", 3);
    let early = store.last_seq() - 1;
    store.fork_session("src", "child", None).unwrap();
    store.append("child", &user("x")).unwrap();
    assert!(matches!(
        store.fork_session("child", "grandchild", Some(early)),
        Err(Error::SessionNotFound { .. })
    ));
    assert!(!store.session_exists("grandchild"));
}

/// A fork from the past links the segment that holds its fork point, and with it the source's
/// records written after that point. Once the source is deleted past its undo window (or
/// erased), none of those later bytes may stay on disk under the fork's names: the fork keeps
/// its own history, and no file holds what only the source had.
#[test]
fn deleting_or_erasing_the_source_leaves_none_of_its_later_bytes_under_a_fork() {
    const LATER: &str = "LATER-ONLY-IN-THE-SOURCE";
    // Reopened before the delete: the fork is then known only from the checkpoint's entry.
    for (erase, reopen) in [(false, false), (true, false), (false, true), (true, true)] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open_with(dir.path(), no_undo()).unwrap();
        store.append("src", &user("shared one")).unwrap();
        store.append("src", &user("shared two")).unwrap();
        let at = store.last_seq();
        for i in 0..3 {
            store.append("src", &user(&format!("{LATER} {i}"))).unwrap();
        }
        store.fork_session("src", "fork", Some(at)).unwrap();
        store.append("fork", &user("the fork's own")).unwrap();
        if reopen {
            store.close().unwrap();
            store = LogStore::open_with(dir.path(), no_undo()).unwrap();
            assert!(store.health().sessions_cold > 0);
        }
        if erase {
            store.erase_session("src").unwrap();
        } else {
            assert!(store.delete_session("src").unwrap());
        }
        let fork: Vec<String> = store.load("fork").into_iter().map(|m| m.content).collect();
        assert_eq!(
            fork,
            ["shared one", "shared two", "the fork's own"],
            "erase {erase}, reopened {reopen}"
        );
        let holding = holding(snapshot_files(dir.path()), LATER);
        assert!(
            holding.is_empty(),
            "erase {erase}, reopened {reopen}: the source's later bytes in {holding:?}"
        );
        drop(store);
        let store = LogStore::open_with(dir.path(), no_undo()).unwrap();
        let fork: Vec<String> = store.load("fork").into_iter().map(|m| m.content).collect();
        assert_eq!(
            fork,
            ["shared one", "shared two", "the fork's own"],
            "erase {erase}, reopened {reopen}"
        );
        assert!(!store.session_exists("src"));
    }
}

/// A delete whose undo window passed while the store was down (a crash, no checkpoint): the
/// open that reclaims it detaches the fork first, as the running store does.
#[test]
fn a_reclaim_that_open_carries_out_leaves_none_of_the_sources_later_bytes_under_a_fork() {
    use sessionlog::testing::SimFs;
    const LATER: &str = "LATER-ONLY-IN-THE-SOURCE";
    let sim = SimFs::new();
    let options = Options {
        tombstone_retention: Duration::from_millis(300),
        ..Options::default()
    };
    let open = || {
        LogStore::open_with_fs("/store", options.clone(), std::sync::Arc::new(sim.clone())).unwrap()
    };
    let store = open();
    store.append("src", &user("shared one")).unwrap();
    let at = store.last_seq();
    for i in 0..3 {
        store.append("src", &user(&format!("{LATER} {i}"))).unwrap();
    }
    store.fork_session("src", "fork", Some(at)).unwrap();
    assert!(store.delete_session("src").unwrap());
    // The power goes: no clean close, no checkpoint; open replays.
    sim.cut_power_after(0);
    drop(store);
    sim.crash(None);
    std::thread::sleep(Duration::from_millis(400));
    let store = open();
    assert!(!store.recovery_report().from_checkpoint);
    assert!(
        !store.restore_session("src").unwrap(),
        "past its undo window"
    );
    let fork: Vec<String> = store.load("fork").into_iter().map(|m| m.content).collect();
    assert_eq!(fork, ["shared one"]);
    let holding = holding(sim.files(), LATER);
    assert!(
        holding.is_empty(),
        "the source's later bytes in {holding:?}"
    );
}

/// With `keep_history`, compacting a fork puts its shared segments (links to the source's,
/// records past the fork point included) in `archive/` under the fork's id. When the source is
/// deleted past its undo window, or its cleared messages erased, those names go with it, also
/// when the source's own compaction had archived the segment first: erasure wins over the
/// fork's history. The fork's own replaced segments stay archived, the fork reads whole before
/// and after a reopen, and an unrelated fork is left as it was.
#[test]
fn a_compacted_forks_archive_keeps_none_of_an_erased_sources_later_bytes() {
    const LATER: &str = "LATER-ONLY-IN-THE-SOURCE";
    const OWN: &str = "THE-FORKS-OWN";
    let cases = [
        // (source compacted first, fork compacted, source cleared rather than deleted)
        (false, true, false),
        (false, true, true),
        (false, false, true),
        (true, true, true),
        (true, true, false),
    ];
    for (compact_source, compact_fork, clear) in cases {
        let context = format!(
            "source compacted {compact_source}, fork compacted {compact_fork}, cleared {clear}"
        );
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            keep_history: true,
            ..no_undo()
        };
        let store = LogStore::open_with(dir.path(), options.clone()).unwrap();
        store.append("src", &user("shared")).unwrap();
        let at = store.last_seq();
        store.append("src", &user(&format!("{LATER} 1"))).unwrap();
        store.fork_session("src", "fork", Some(at)).unwrap();
        store.append("fork", &user(OWN)).unwrap();
        // A fork of another session, which nothing here may touch.
        store.append("other", &user("other's")).unwrap();
        store.fork_session("other", "bystander", None).unwrap();
        let bystander_files = |dir: &Path| -> Vec<String> {
            let mut names: Vec<String> = segments(dir)
                .iter()
                .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
                .filter(|name| name.starts_with("0000000000000004-"))
                .collect();
            names.sort();
            names
        };
        let bystander_before = bystander_files(dir.path());
        assert!(!bystander_before.is_empty());
        if compact_source {
            store.compact_session("src").unwrap();
        }
        if compact_fork {
            store.compact_session("fork").unwrap();
            assert!(
                !holding(snapshot_files(&dir.path().join("archive")), LATER).is_empty(),
                "{context}: the fork's archive holds the shared segment"
            );
        }
        if clear {
            store.clear_messages("src").unwrap();
            store.compact_session("src").unwrap();
        } else {
            assert!(store.delete_session("src").unwrap());
        }
        let fork = |store: &LogStore| -> Vec<String> {
            store.load("fork").into_iter().map(|m| m.content).collect()
        };
        assert_eq!(fork(&store), ["shared", OWN], "{context}");
        let held = holding(snapshot_files(dir.path()), LATER);
        assert!(held.is_empty(), "{context}: the source's bytes in {held:?}");
        let archived = holding(snapshot_files(&dir.path().join("archive")), OWN);
        assert!(
            !archived.is_empty(),
            "{context}: the fork's own history went"
        );
        assert_eq!(bystander_files(dir.path()), bystander_before, "{context}");
        store.close().unwrap();
        let store = LogStore::open_with(dir.path(), options).unwrap();
        assert_eq!(fork(&store), ["shared", OWN], "{context}");
        assert!(store.verify().unwrap().is_sound(), "{context}");
    }
}

/// A fault (EIO or ENOSPC) at any file-system operation of a fork: once the store is closed
/// (cleanly, if it still can) and opened again, the fork is whole or absent, the source reads
/// whole, and a fork that is absent left no segment under its id: its links to the source's
/// segments, made before its first record, went with it. (A torn write of its first record
/// leaves a side file, as any torn tail does.)
#[test]
fn a_fault_anywhere_in_a_fork_leaves_it_whole_or_gone_with_its_links() {
    use sessionlog::testing::{FaultyFs, EIO, ENOSPC};
    let options = sweep_options(Durability::Always);
    let build = |fs: Arc<FaultyFs>| {
        let store = LogStore::open_with_fs(SIM_DIR, options.clone(), Arc::clone(&fs) as _);
        let store = store.unwrap();
        store.append("src", &user("one")).unwrap();
        let at = store.last_seq();
        store.append("src", &user("two")).unwrap();
        // Closed and opened again: the fork is the first write since a clean open.
        store.close().unwrap();
        let store = LogStore::open_with_fs(SIM_DIR, options.clone(), fs).unwrap();
        (store, at)
    };
    let steps = {
        let fs = Arc::new(FaultyFs::new(Arc::new(SimFs::new())));
        let (store, at) = build(Arc::clone(&fs));
        let before = fs.count();
        store.fork_session("src", "fork", Some(at)).unwrap();
        fs.count() - before
    };
    assert!(steps > 3, "{steps} steps");
    for n in 0..steps {
        for errno in [EIO, ENOSPC] {
            let context = format!("fault {errno} at step {n} of {steps}");
            let sim = SimFs::new();
            let fs = Arc::new(FaultyFs::new(Arc::new(sim.clone())));
            let (store, at) = build(Arc::clone(&fs));
            fs.fail_at(n, errno);
            let forked = store.fork_session("src", "fork", Some(at)).is_ok();
            let _ = store.close();
            for round in 0..2 {
                let context = format!("{context}, open {round}");
                let store = LogStore::open_with_fs(SIM_DIR, options.clone(), Arc::new(sim.clone()))
                    .unwrap_or_else(|e| panic!("{context}: {e}"));
                assert_eq!(
                    store.load("src"),
                    vec![user("one"), user("two")],
                    "{context}"
                );
                let fork = store.load("fork");
                if forked {
                    assert_eq!(fork, vec![user("one")], "{context}");
                } else if store.session_exists("fork") {
                    assert_eq!(fork, vec![user("one")], "{context}: not whole");
                } else {
                    // The source is session 1, the fork would have been session 2.
                    let left: Vec<_> = sim
                        .files()
                        .into_iter()
                        .map(|(path, _)| path)
                        .filter(|p| {
                            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                            name.starts_with("0000000000000002-") && name.ends_with(".seg")
                        })
                        .collect();
                    assert!(
                        left.is_empty(),
                        "{context}: the absent fork's files {left:?}"
                    );
                }
                store
                    .close()
                    .unwrap_or_else(|e| panic!("{context}: close: {e}"));
            }
        }
    }
}

/// The files of `sim` that hold `what`.
fn files_holding(sim: &SimFs, what: &[u8]) -> Vec<std::path::PathBuf> {
    sim.files()
        .into_iter()
        .filter(|(_, bytes)| bytes.windows(what.len()).any(|w| w == what))
        .map(|(path, _)| path)
        .collect()
}

/// What [`AtCompactionOutput`] runs.
type Action = Box<dyn FnOnce(&Path) + Send>;

/// Runs the action set last at the next write of a compaction's output (a `.seg.tmp`), once,
/// given that file's path.
#[derive(Default)]
struct AtCompactionOutput {
    action: parking_lot::Mutex<Option<Action>>,
}

impl std::fmt::Debug for AtCompactionOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AtCompactionOutput")
    }
}

impl common::hooked::Hooks for AtCompactionOutput {
    fn write(&self, path: &Path) {
        if !path.to_string_lossy().ends_with(".seg.tmp") {
            return;
        }
        let action = self.action.lock().take();
        if let Some(action) = action {
            action(path);
        }
    }
}

/// What removes a session's bytes first gives the forks that share them their own copy; a
/// fork made while it does so (here: while one of them is copied) must not link the segments
/// about to go. It waits for the removal and shares only what is left:
/// - a compaction that erases cleared messages, with a fork of the source made meanwhile;
/// - a delete with no undo window, with a fork made meanwhile of a fork not copied yet (from
///   the past, so it shares the source's later records).
#[test]
fn a_fork_made_while_forks_are_detached_for_an_erasure_shares_none_of_the_erased_bytes() {
    const SECRET: &[u8] = b"ERASED-SECRET-7f3a";
    for delete in [false, true] {
        let options = Options {
            durability: Durability::Never,
            tombstone_retention: Duration::ZERO,
            ..Options::default()
        };
        let sim = SimFs::new();
        let fs = common::hooked::Hooked::new(&sim, AtCompactionOutput::default());
        let store = LogStore::open_with_fs("/s", options, Arc::new(fs.clone())).unwrap();
        let store = Arc::new(store);
        let secret = ChatMessage::user(std::str::from_utf8(SECRET).unwrap());
        store.append("s", &user("before the forks")).unwrap();
        let at = store.last_seq();
        store.append("s", &secret).unwrap();
        // From the past: the forks' links hold the secret record too. Session ids 2 and 3.
        store.fork_session("s", "first", Some(at)).unwrap();
        store.fork_session("s", "other", Some(at)).unwrap();
        let expected = if delete {
            vec![user("before the forks")]
        } else {
            assert_eq!(store.clear_messages("s").unwrap(), 2);
            store.append("s", &user("kept")).unwrap();
            vec![user("kept")]
        };
        // The fork made during the first copy: it waits (up to a second, here) for the
        // erasure to end.
        let (done, made) = std::sync::mpsc::channel();
        let forker = Arc::clone(&store);
        let thread = Arc::new(parking_lot::Mutex::new(None));
        let slot = Arc::clone(&thread);
        *fs.hooks.action.lock() = Some(Box::new(move |output: &Path| {
            let copying_first = output.to_string_lossy().contains("0000000000000002-");
            let source = match (delete, copying_first) {
                (false, _) => "s",
                (true, true) => "other",
                (true, false) => "first",
            };
            let handle = std::thread::spawn(move || {
                let forked = forker.fork_session(source, "second", None);
                let _ = done.send(());
                forked
            });
            let _ = made.recv_timeout(Duration::from_secs(1));
            *slot.lock() = Some(handle);
        }));
        if delete {
            assert!(store.delete_session("s").unwrap());
        } else {
            store.compact_session("s").unwrap();
        }
        assert!(
            fs.hooks.action.lock().is_none(),
            "no compaction ran the fork"
        );
        let handle = thread.lock().take().unwrap();
        handle.join().unwrap().unwrap();
        assert_eq!(store.load("second"), expected, "delete: {delete}");
        for fork in ["first", "other"] {
            assert_eq!(store.load(fork), vec![user("before the forks")]);
        }
        let holding = files_holding(&sim, SECRET);
        assert!(holding.is_empty(), "delete: {delete}: {holding:?}");
    }
}

/// Threads that fork, delete (no undo window), erase, clear and compact, append and load the
/// same few keys at once: nothing waits forever (a fork and a removal of bytes wait for each
/// other only through one gate), no call fails but with the errors these races allow, and the
/// store reopens to the same sessions, sound.
#[test]
fn forks_and_erasures_racing_on_the_same_keys_neither_deadlock_nor_damage() {
    const KEYS: usize = 5;
    const THREADS: u64 = 4;
    const OPS: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let options = || Options {
        durability: Durability::Never,
        tombstone_retention: Duration::ZERO,
        ..Options::default()
    };
    let store = Arc::new(LogStore::open_with(dir.path(), options()).unwrap());
    let (finished, all_finished) = std::sync::mpsc::channel();
    let mut threads = Vec::new();
    for t in 0..THREADS {
        let store = Arc::clone(&store);
        let finished = finished.clone();
        threads.push(std::thread::spawn(move || {
            let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ (t + 1).wrapping_mul(0x2545_f491);
            let mut next = move |n: usize| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % n as u64) as usize
            };
            let mut outcome = Ok(());
            for i in 0..OPS {
                let key = format!("k{}", next(KEYS));
                let other = format!("k{}", next(KEYS));
                let io = |e: std::io::Error| match e.into_inner() {
                    Some(inner) => match inner.downcast::<Error>() {
                        Ok(ours) => *ours,
                        Err(other) => panic!("not the store's error: {other}"),
                    },
                    None => panic!("an I/O error without the store's"),
                };
                let done: Result<(), Error> = match next(7) {
                    0 | 1 => store
                        .append(&key, &user(&format!("t{t} op{i}")))
                        .map_err(io),
                    2 => store.fork_session(&key, &other, None),
                    3 => store.delete_session(&key).map(drop).map_err(io),
                    4 => store.erase_session(&key).map(drop),
                    5 => store
                        .clear_messages(&key)
                        .map_err(io)
                        .and_then(|_| store.compact_session(&key)),
                    _ => {
                        let _ = store.load(&key);
                        Ok(())
                    }
                };
                match done {
                    Ok(())
                    | Err(Error::SessionExists { .. })
                    | Err(Error::SessionNotFound { .. }) => {}
                    Err(e) => {
                        outcome = Err(format!("thread {t}, op {i}: {e}"));
                        break;
                    }
                }
            }
            let _ = finished.send(outcome);
        }));
    }
    for _ in 0..THREADS {
        let outcome = all_finished
            .recv_timeout(Duration::from_secs(120))
            .expect("a thread still runs after two minutes: a deadlock");
        outcome.unwrap();
    }
    // Each has sent its outcome: done, its handle on the store about to go.
    for thread in threads {
        thread.join().unwrap();
    }
    let before: Vec<_> = (0..KEYS).map(|k| store.load(&format!("k{k}"))).collect();
    let report = store.verify().unwrap();
    assert!(report.is_sound(), "{:?}", report.problems);
    Arc::into_inner(store).unwrap().close().unwrap();
    let store = LogStore::open_with(dir.path(), options()).unwrap();
    let after: Vec<_> = (0..KEYS).map(|k| store.load(&format!("k{k}"))).collect();
    assert_eq!(before, after);
    assert!(store.verify().unwrap().is_sound());
}

/// Fails every look at how many names a file of session id 2 has.
#[derive(Debug)]
struct NoLinkCountOfSession2;

impl common::hooked::Hooks for NoLinkCountOfSession2 {
    fn link_count(&self, path: &Path, sim: &SimFs) -> std::io::Result<u64> {
        if path.to_string_lossy().contains("/0000000000000002-") {
            return Err(std::io::Error::other("injected"));
        }
        sessionlog::fs::FileSystem::link_count(sim, path)
    }
}

/// A fork whose first record cannot be written (here: the look at its segment's names fails)
/// after the source's segments were linked under its id: the store stops, and the next open
/// takes the links away, so an erasure of the source leaves none of its bytes.
#[test]
fn a_fork_whose_record_fails_after_its_links_leaves_no_link_to_outlive_an_erasure() {
    const SECRET: &[u8] = b"SOURCE-SECRET-41c9";
    let options = Options {
        tombstone_retention: Duration::ZERO,
        ..Options::default()
    };
    let sim = SimFs::new();
    let fs = common::hooked::Hooked::new(&sim, NoLinkCountOfSession2);
    let store = LogStore::open_with_fs("/s", options.clone(), Arc::new(fs)).unwrap();
    store
        .append(
            "s",
            &ChatMessage::user(std::str::from_utf8(SECRET).unwrap()),
        )
        .unwrap();
    assert!(store.fork_session("s", "f", None).is_err());
    assert!(!store.session_exists("f"));
    // Whatever this store still does, the links go with the next open.
    let _ = store.erase_session("s");
    drop(store);
    let store = LogStore::open_with_fs("/s", options, Arc::new(sim.clone())).unwrap();
    store.erase_session("s").unwrap();
    assert!(!store.session_exists("f"));
    let holding = files_holding(&sim, SECRET);
    assert!(holding.is_empty(), "{holding:?}");
}

/// Once armed, fails every sync of a compaction's output (a `.seg.tmp`).
#[derive(Debug, Default)]
struct FailCompactionSyncs {
    armed: std::sync::atomic::AtomicBool,
}

impl common::hooked::Hooks for FailCompactionSyncs {
    fn sync(&self, path: &Path, file: &dyn sessionlog::fs::FileHandle) -> std::io::Result<()> {
        if self.armed.load(Ordering::SeqCst) && path.to_string_lossy().ends_with(".seg.tmp") {
            return Err(std::io::Error::other("injected"));
        }
        file.sync()
    }
}

/// A delete with no undo window gives the session's forks their own copy before it writes
/// anything: when that fails (a full disk, say), the delete fails alone, the session and its
/// fork are as they were, and the store goes on; the same delete goes through once the disk
/// does.
#[test]
fn a_delete_whose_forks_cannot_get_their_own_copy_fails_alone() {
    let options = Options {
        tombstone_retention: Duration::ZERO,
        ..Options::default()
    };
    let sim = SimFs::new();
    let fs = common::hooked::Hooked::new(&sim, FailCompactionSyncs::default());
    let store = LogStore::open_with_fs("/s", options.clone(), Arc::new(fs.clone())).unwrap();
    store.append("s", &user("shared")).unwrap();
    let at = store.last_seq();
    store.append("s", &user("the source's own")).unwrap();
    store.fork_session("s", "f", Some(at)).unwrap();
    fs.hooks.armed.store(true, Ordering::SeqCst);
    assert!(store.delete_session("s").is_err());
    assert_eq!(
        store.load("s"),
        vec![user("shared"), user("the source's own")]
    );
    assert_eq!(store.load("f"), vec![user("shared")]);
    store.append("other", &user("the store goes on")).unwrap();
    fs.hooks.armed.store(false, Ordering::SeqCst);
    assert!(store.delete_session("s").unwrap());
    assert!(!store.session_exists("s"));
    assert_eq!(store.load("f"), vec![user("shared")]);
    drop(store);
    let store = LogStore::open_with_fs("/s", options, Arc::new(sim.clone())).unwrap();
    assert!(!store.session_exists("s"));
    assert_eq!(store.load("f"), vec![user("shared")]);
    assert!(store.verify().unwrap().is_sound());
}

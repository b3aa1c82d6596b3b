//! A power loss at any point of a workload loses no call that returned `Ok` under
//! `Durability::Always`, invents nothing, and leaves a store that opens. The sweep cuts the
//! power after every possible number of file-system operations, with and without a torn last
//! write, through the simulated file system of the `fault-injection` feature. The window of
//! ids `append_once` checks comes through every cut as the messages do. The workloads take
//! checkpoints while the store runs, full ones and deltas, so the sweep cuts the power inside
//! each step of writing one, and opens from one after every later cut.

mod common;

use std::sync::Arc;

use common::{run_until_error, sweep_options, SIM_DIR};
use sessionlog::testing::{Model, Op, SimFs, KEYS};
use sessionlog::{Durability, Finding, LogStore, Options};

/// A workload that touches every kind of mutation, rolls segments over, compacts, deletes and
/// recreates, and reopens.
fn workload() -> Vec<Op> {
    let mut ops = Vec::new();
    for i in 0..6 {
        ops.push(Op::Append(
            i % 3,
            format!("hello {i} {}", "x".repeat(200 * (i % 4))),
        ));
    }
    ops.extend([
        // A checkpoint taken while the store runs: every cut inside it, and every cut after
        // it (an open from it, replaying only what changed since).
        Op::Checkpoint,
        Op::Name(0, "first".into()),
        Op::Alias(1, "agent".into()),
        Op::Context(2, Some(" discord.x ".into()), Some("bob".into())),
        Op::State(0, true),
        Op::Append(0, "".into()),
        Op::UpdateLast(0, "streamed 1".into()),
        Op::UpdateLast(0, "streamed 1 2".into()),
        Op::State(0, false),
        // The next one records only what changed since that one: a delta, started and
        // appended to (`checkpoint/delta.rs`), every cut inside it too.
        Op::Checkpoint,
        Op::AppendBatch(
            2,
            vec!["tool call".into(), "x".repeat(900), "tool result".into()],
        ),
        Op::RemoveLast(1),
        // A second delta, appended to the first.
        Op::Checkpoint,
        Op::Compact(0),
        Op::Append(0, "after compaction".into()),
        Op::AppendOnce(2, "once a".into(), "m-a".into()),
        Op::AppendOnce(2, "once a".into(), "m-a".into()),
        Op::Archive(2),
        Op::Archive(0),
        Op::Reopen,
        Op::AppendOnce(2, "once b".into(), "m-b".into()),
        Op::Clear(2),
        Op::Append(2, "after clear".into()),
        Op::UndoClear(2),
        Op::Compact(2),
        Op::AppendOnce(2, "once a again".into(), "m-a".into()),
        Op::Unarchive(0),
        Op::Delete(1),
        Op::Restore(1),
        Op::Fork(1, 4),
        Op::Append(4, "in the fork".into()),
        Op::Delete(1),
        Op::Append(1, "recreated".into()),
        Op::Append(3, "x".repeat(3000)),
        Op::Append(3, "y".repeat(3000)),
        Op::Append(4, "unicode ü".into()),
        Op::Checkpoint,
        Op::Name(4, String::new()),
        Op::Compact(3),
        // A delta appended to the one before (the reopen's clean close wrote a full
        // checkpoint, which the delta before this one follows).
        Op::Checkpoint,
        Op::Delete(4),
        Op::Reopen,
        Op::UpdateLast(3, "last".into()),
        Op::Erase(1),
        Op::Append(0, "the end".into()),
    ]);
    ops
}

/// A workload of forks, forks of forks, deletes reclaimed at once (no undo window) and
/// erasures, over segments that roll over at nearly every message: the directory operations
/// a reordering disk may keep in any subset.
fn fork_and_erase_workload() -> Vec<Op> {
    let big = |c: &str| c.repeat(1500);
    vec![
        Op::Append(0, big("a")),
        Op::Append(0, big("b")),
        Op::Append(0, big("c")),
        Op::Fork(0, 1),
        Op::Append(1, big("d")),
        Op::Append(1, "small".into()),
        Op::Fork(1, 2),
        Op::Append(2, big("e")),
        Op::Append(0, big("f")),
        Op::Delete(0),
        Op::Append(2, "after the source went".into()),
        Op::Fork(2, 3),
        Op::Checkpoint,
        Op::Compact(1),
        Op::Erase(2),
        Op::Append(3, big("g")),
        Op::Delete(3),
        Op::Append(4, big("h")),
        Op::Fork(4, 0),
        Op::Reopen,
        Op::Erase(4),
        Op::Append(0, "last".into()),
        Op::Delete(0),
    ]
}

/// [`sweep_options`] reclaiming a deleted session at once.
fn reclaiming_at_once() -> Options {
    Options {
        tombstone_retention: std::time::Duration::ZERO,
        ..sweep_options(Durability::Always)
    }
}

/// Runs `ops` until the first error. Returns the model of every acknowledged call, the model
/// after each of them, and the call that failed (if any); the store is closed.
fn run(fs: &SimFs, options: &Options, ops: &[Op]) -> (Model, Vec<Model>, Option<Op>) {
    let run = run_until_error(Arc::new(fs.clone()), options, ops);
    (run.acked, run.history, run.failed)
}

/// How the power goes off: keeping each file's synced bytes and up to this many bytes of its
/// last write, or as a disk that writes back in any order would, with this seed
/// ([`SimFs::crash_reordering`]).
#[derive(Debug, Clone, Copy)]
enum Cut {
    Torn(Option<usize>),
    Reordered(u64),
}

impl Cut {
    /// Loses the power of `fs` this way.
    fn apply(self, fs: &SimFs) {
        match self {
            Cut::Torn(torn) => fs.crash(torn),
            Cut::Reordered(seed) => fs.crash_reordering(seed),
        }
    }
}

/// Loses power the `cut` way and opens the store again, which must report no damage.
fn reopen_after_crash(fs: &SimFs, options: &Options, cut: Cut, context: &str) -> LogStore {
    cut.apply(fs);
    let store = LogStore::open_with_fs(SIM_DIR, options.clone(), Arc::new(fs.clone()))
        .unwrap_or_else(|e| panic!("{context}: the store must open after a crash: {e}"));
    let damaged = store
        .recovery_report()
        .findings
        .iter()
        .any(|f| matches!(f, Finding::Damaged { .. } | Finding::RolledBack { .. }));
    assert!(
        !damaged,
        "{context}: a crash is not damage: {:?}",
        store.recovery_report()
    );
    store
}

#[test]
fn no_acknowledged_write_is_lost_at_any_power_cut() {
    let (options, ops) = (sweep_options(Durability::Always), workload());
    let total = total_mutations(&options, &ops);
    assert!(
        total > 50,
        "the workload exercises the file system ({total} mutations)"
    );
    for torn in [None, Some(1), Some(13)] {
        for n in 0..=total {
            check_cut(&options, &ops, n, total, Cut::Torn(torn));
        }
    }
}

/// Seeds per power cut of the reordering sweep: with the workload's ~400 cut points, well over
/// 10,000 crashes per run. `SESSIONLOG_REORDER_SEEDS=N` runs more.
fn reorder_seeds() -> u64 {
    std::env::var("SESSIONLOG_REORDER_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(26)
}

#[test]
fn no_acknowledged_write_is_lost_when_the_disk_reorders() {
    let options = sweep_options(Durability::Always);
    let ops = workload();
    let total = total_mutations(&options, &ops);
    let seeds = reorder_seeds();
    for n in 0..=total {
        for seed in 0..seeds {
            let cut = Cut::Reordered(n * 1_000_003 + seed);
            check_cut(&options, &ops, n, total, cut);
        }
    }
    eprintln!("{} reordered power cuts", (total + 1) * seeds);
}

#[test]
fn forks_deletes_and_erasures_survive_a_disk_that_reorders() {
    let options = reclaiming_at_once();
    let ops = fork_and_erase_workload();
    let total = total_mutations(&options, &ops);
    let seeds = reorder_seeds();
    for n in 0..=total {
        check_cut(&options, &ops, n, total, Cut::Torn(None));
        for seed in 0..seeds {
            let cut = Cut::Reordered(n * 1_000_003 + seed);
            check_cut(&options, &ops, n, total, cut);
        }
    }
    eprintln!("{} reordered power cuts", (total + 1) * seeds);
}

fn total_mutations(options: &Options, ops: &[Op]) -> u64 {
    let fs = SimFs::new();
    let (_, _, failed) = run(&fs, options, ops);
    assert_eq!(failed, None, "the workload runs cleanly without faults");
    fs.mutations()
}

/// Cuts the power after `n` mutations of `ops` (under `Durability::Always`), then checks that
/// the store holds every acknowledged call (and perhaps the one in flight), remembers every
/// acknowledged id, and takes writes again.
fn check_cut(options: &Options, ops: &[Op], n: u64, total: u64, cut: Cut) {
    let fs = SimFs::new();
    fs.cut_power_after(n);
    let (acked, _, in_flight) = run(&fs, options, ops);
    let context = format!("power cut after {n} of {total} mutations in {in_flight:?}, {cut:?}");
    let store = reopen_after_crash(&fs, options, cut, &context);
    let seen = Model::observe(&store);
    let mut with_in_flight = acked.clone();
    if let Some(op) = &in_flight {
        with_in_flight.apply(op);
    }
    assert!(
        seen == acked || seen == with_in_flight,
        "{context}: in flight {in_flight:?}\nseen  {seen:?}\nacked {acked:?}"
    );
    // The window of ids came through too: every id of the state it recovered to is a
    // duplicate, and an id in flight that did not land is written now.
    let now = if seen == acked {
        &acked
    } else {
        &with_in_flight
    };
    let message = sessionlog::ChatMessage::user("again");
    for (key, ids) in &now.ids {
        for id in ids {
            let wrote = store.append_once(key, &message, id).unwrap();
            assert!(
                !wrote,
                "{context}: {key:?} forgot the acknowledged id {id:?}"
            );
        }
    }
    if let Some(Op::AppendOnce(k, _, id)) = &in_flight {
        let key = KEYS[*k];
        if !now.ids.get(key).is_some_and(|ids| ids.contains(id)) {
            let wrote = store.append_once(key, &message, id).unwrap();
            assert!(wrote, "{context}: the id in flight did not land");
        }
    }
    // And the recovered store takes writes again, which survive another reopen.
    drop(store);
    let store = reopen_after_crash(&fs, options, Cut::Torn(None), &context);
    let key = KEYS[0];
    sessionlog::SessionBackend::append(&store, key, &sessionlog::ChatMessage::user("z")).unwrap();
    let expected = Model::observe(&store);
    drop(store);
    assert_eq!(
        Model::observe(&reopen_after_crash(&fs, options, Cut::Torn(None), &context)),
        expected
    );
}

#[test]
fn without_sync_a_crash_leaves_each_session_at_some_earlier_state() {
    for durability in [
        Durability::Never,
        Durability::Interval(std::time::Duration::from_secs(3600)),
    ] {
        let total = total_mutations(&sweep_options(durability), &workload());
        for n in (0..=total).step_by(3) {
            check_earlier_state(durability, n, total, Cut::Torn(Some(5)));
        }
    }
}

#[test]
fn without_sync_a_disk_that_reorders_leaves_each_session_at_some_earlier_state() {
    let durability = Durability::Never;
    let total = total_mutations(&sweep_options(durability), &workload());
    for n in 0..=total {
        for seed in 0..4 {
            check_earlier_state(durability, n, total, Cut::Reordered(n * 7_919 + seed));
        }
    }
}

/// Cuts the power after `n` mutations of the workload under `durability`, then checks that
/// each session is as it was after some acknowledged call, or gone (never synced).
fn check_earlier_state(durability: Durability, n: u64, total: u64, cut: Cut) {
    let fs = SimFs::new();
    fs.cut_power_after(n);
    let (_, history, _) = run(&fs, &sweep_options(durability), &workload());
    let context = format!("{durability:?}: power cut after {n} of {total}, {cut:?}");
    let options = sweep_options(Durability::Always);
    let store = match cut {
        Cut::Torn(_) => reopen_after_crash(&fs, &options, cut, &context),
        Cut::Reordered(_) => {
            // Unsynced writes kept out of order can leave a hole before records that
            // survived: open reports that as damage and keeps the session up to the hole,
            // quarantining the rest, which is still an earlier state.
            cut.apply(&fs);
            LogStore::open_with_fs(SIM_DIR, options, Arc::new(fs.clone()))
                .unwrap_or_else(|e| panic!("{context}: the store must open after a crash: {e}"))
        }
    };
    let seen = Model::observe(&store);
    // Sessions are independent files: each must be as it was at some point.
    for key in KEYS {
        let now = seen.sessions.get(*key);
        let possible = history.iter().any(|m| m.sessions.get(*key) == now) || now.is_none();
        assert!(
            possible,
            "{context}: {key:?} is {now:?}, never a state it had"
        );
    }
}

/// Opens the store in [`SIM_DIR`] on `fs` and appends round `r`'s message to each of 100
/// sessions (`Durability::Never`: the close makes them durable).
fn anchored_round(fs: &SimFs, r: usize) -> LogStore {
    let options = Options::with_durability(Durability::Never);
    let store = LogStore::open_with_fs(SIM_DIR, options, Arc::new(fs.clone())).unwrap();
    for i in 0..100 {
        let message = sessionlog::ChatMessage::user(format!("round {r}"));
        sessionlog::SessionBackend::append(&store, &format!("s{i:03}"), &message).unwrap();
    }
    store
}

/// True when `LOCK` on `fs` names a full anchor of the anchor log.
fn names_a_full_anchor(fs: &SimFs) -> bool {
    let lock = fs
        .files()
        .into_iter()
        .find(|(path, _)| path.ends_with("LOCK"));
    lock.is_some_and(|(_, bytes)| bytes.get(96..104) == Some(&b"SLANFULL"[..]))
}

/// A power cut at every step of the close that writes the anchor log's first full anchor
/// (and names it in `LOCK`), with and without a torn last write: the store opens with no
/// damage and no rollback reported, each session holds the rounds closed before and perhaps
/// the one cut, all of it if the close returned, and the closes after it anchor on from what
/// open found (`verify` finds the whole log sound).
#[test]
fn a_power_cut_anywhere_in_a_close_that_writes_a_full_anchor_is_no_damage() {
    let base = SimFs::new();
    // 100 sessions anchored at each close, about 5 KB an anchor: the first full one comes
    // once the log passes 64 KiB.
    let mut r = 0;
    let before = loop {
        let before = base.snapshot();
        anchored_round(&base, r).close().unwrap();
        if names_a_full_anchor(&base) {
            break before;
        }
        r += 1;
        assert!(r < 40, "no full anchor after {r} closes");
    };
    let steps = {
        let fs = before.snapshot();
        let store = anchored_round(&fs, r);
        let from = fs.mutations();
        store.close().unwrap();
        fs.mutations() - from
    };
    assert!(steps > 5, "the close takes {steps} steps");
    let user = |k: usize| sessionlog::ChatMessage::user(format!("round {k}"));
    let with_cut: Vec<_> = (0..=r).map(user).collect();
    for n in 0..=steps {
        for torn in [None, Some(7)] {
            let context =
                format!("power cut after {n} of the close's {steps} steps, torn {torn:?}");
            let fs = before.snapshot();
            let store = anchored_round(&fs, r);
            fs.cut_power_after(n);
            let closed = store.close().is_ok();
            fs.crash(torn);
            let options = Options::with_durability(Durability::Never);
            let open = || LogStore::open_with_fs(SIM_DIR, options.clone(), Arc::new(fs.clone()));
            let store = open().unwrap_or_else(|e| panic!("{context}: {e}"));
            let report = store.recovery_report();
            assert!(
                !report.has_damage() && !report.has_rollback(),
                "{context}: {report:?}"
            );
            for i in 0..100 {
                let got = sessionlog::SessionBackend::load(&store, &format!("s{i:03}"));
                let whole = got == with_cut;
                assert!(
                    whole || (!closed && got == with_cut[..r]),
                    "{context}: s{i:03} {got:?}"
                );
            }
            // The next rounds anchor on from the log as open found it.
            store.close().unwrap();
            for next in [r + 1, r + 2] {
                anchored_round(&fs, next).close().unwrap();
                let report = open().unwrap().recovery_report().clone();
                assert!(
                    !report.has_damage() && !report.has_rollback(),
                    "{context}: {report:?}"
                );
            }
            let store = open().unwrap();
            let verified = store.verify().unwrap();
            assert!(verified.is_sound(), "{context}: {:?}", verified.problems);
        }
    }
}

/// The simulated disk these sweeps run on: a file whose bytes and name were synced, in a folder
/// whose own entry never was, is lost with the folder at a power cut (plain or reordering), as
/// on a real disk; once the folder's entry is synced too, it survives.
#[test]
fn the_simulated_disk_loses_a_synced_file_in_a_folder_whose_entry_was_not_synced() {
    use sessionlog::fs::{write_new_file, FileSystem};
    use std::path::Path;
    let folder_synced = |sync_folder: bool| {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        fs.sync_dir(Path::new("/")).unwrap();
        fs.create_dir_all(Path::new("/d/sub")).unwrap();
        // The file's bytes and its name in /d/sub are durable; /d/sub's name in /d is not,
        // unless synced here.
        write_new_file(&fs, Path::new("/d/sub/f"), b"bytes").unwrap();
        if sync_folder {
            fs.sync_dir(Path::new("/d")).unwrap();
        }
        fs
    };
    let fs = folder_synced(false);
    fs.crash(None);
    assert!(!fs.is_dir(Path::new("/d/sub")));
    assert!(!fs.exists(Path::new("/d/sub/f")));
    for seed in 0..16 {
        // The folder's creation may survive a reordering disk, unsynced: then so does the
        // file, never without it.
        let fs = folder_synced(false);
        fs.crash_reordering(seed);
        let file = fs.exists(Path::new("/d/sub/f"));
        assert_eq!(file, fs.is_dir(Path::new("/d/sub")), "seed {seed}");
    }
    let fs = folder_synced(true);
    fs.crash(None);
    assert!(fs.exists(Path::new("/d/sub/f")));
}

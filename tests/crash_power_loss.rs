//! A power loss at any point of a workload loses no call that returned `Ok` under
//! `Durability::Always`, invents nothing, and leaves a store that opens. The sweep cuts the
//! power after every possible number of file-system operations, with and without a torn last
//! write, through the simulated file system of the `fault-injection` feature. The window of
//! ids `append_once` checks comes through every cut as the messages do.

mod common;

use std::sync::Arc;

use common::{run_until_error, sweep_options, SIM_DIR};
use sessionlog::testing::{Model, Op, SimFs, KEYS};
use sessionlog::{Durability, Finding, LogStore};

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
        Op::Name(0, "first".into()),
        Op::Alias(1, "agent".into()),
        Op::Context(2, Some(" discord.x ".into()), Some("bob".into())),
        Op::State(0, true),
        Op::Append(0, "".into()),
        Op::UpdateLast(0, "streamed 1".into()),
        Op::UpdateLast(0, "streamed 1 2".into()),
        Op::State(0, false),
        Op::AppendBatch(
            2,
            vec!["tool call".into(), "x".repeat(900), "tool result".into()],
        ),
        Op::RemoveLast(1),
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
        Op::Name(4, String::new()),
        Op::Compact(3),
        Op::Delete(4),
        Op::Reopen,
        Op::UpdateLast(3, "last".into()),
        Op::Erase(1),
        Op::Append(0, "the end".into()),
    ]);
    ops
}

/// Runs `ops` until the first error. Returns the model of every acknowledged call, the model
/// after each of them, and the call that failed (if any); the store is closed.
fn run(fs: &SimFs, durability: Durability, ops: &[Op]) -> (Model, Vec<Model>, Option<Op>) {
    let run = run_until_error(Arc::new(fs.clone()), &sweep_options(durability), ops);
    (run.acked, run.history, run.failed)
}

fn reopen_after_crash(fs: &SimFs, torn: Option<usize>, context: &str) -> LogStore {
    fs.crash(torn);
    let store = LogStore::open_with_fs(
        SIM_DIR,
        sweep_options(Durability::Always),
        Arc::new(fs.clone()),
    )
    .unwrap_or_else(|e| panic!("{context}: the store must open after a crash: {e}"));
    let damaged = store
        .recovery_report()
        .findings
        .iter()
        .any(|f| matches!(f, Finding::Damaged { .. }));
    assert!(
        !damaged,
        "{context}: a crash is not damage: {:?}",
        store.recovery_report()
    );
    store
}

fn total_mutations(durability: Durability) -> u64 {
    let fs = SimFs::new();
    let (_, _, failed) = run(&fs, durability, &workload());
    assert_eq!(failed, None, "the workload runs cleanly without faults");
    fs.mutations()
}

#[test]
fn no_acknowledged_write_is_lost_at_any_power_cut() {
    let total = total_mutations(Durability::Always);
    assert!(
        total > 50,
        "the workload exercises the file system ({total} mutations)"
    );
    for torn in [None, Some(1), Some(13)] {
        for n in 0..=total {
            let fs = SimFs::new();
            fs.cut_power_after(n);
            let (acked, _, in_flight) = run(&fs, Durability::Always, &workload());
            let context = format!("power cut after {n} of {total} mutations, torn {torn:?}");
            let store = reopen_after_crash(&fs, torn, &context);
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
            let store = reopen_after_crash(&fs, None, &context);
            let key = KEYS[0];
            sessionlog::SessionBackend::append(&store, key, &sessionlog::ChatMessage::user("z"))
                .unwrap();
            let expected = Model::observe(&store);
            drop(store);
            assert_eq!(
                Model::observe(&reopen_after_crash(&fs, None, &context)),
                expected
            );
        }
    }
}

#[test]
fn without_sync_a_crash_leaves_each_session_at_some_earlier_state() {
    for durability in [
        Durability::Never,
        Durability::Interval(std::time::Duration::from_secs(3600)),
    ] {
        let total = total_mutations(durability);
        for n in (0..=total).step_by(3) {
            let fs = SimFs::new();
            fs.cut_power_after(n);
            let (_, history, _) = run(&fs, durability, &workload());
            let context = format!("{durability:?}: power cut after {n} of {total}");
            let store = reopen_after_crash(&fs, Some(5), &context);
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
    }
}

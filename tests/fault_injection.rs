//! An I/O error (EIO or ENOSPC) at any file-system operation of a workload: the failing call
//! reports it, a failed write or sync poisons the store, and a reopen (with or without a power
//! loss after the fault) shows every acknowledged call and nothing invented.

mod common;

use std::sync::Arc;

use common::{run_until_error, sweep_options, SIM_DIR};
use sessionlog::testing::{FaultyFs, FsOp, Model, Op, SimFs, EIO, ENOSPC};
use sessionlog::{
    ChatMessage, Durability, EncryptionKey, Error, LogStore, Options, SessionBackend,
};

/// The sweep's options, encrypted at rest: key files, the nonce epoch and crypto-erasure join the
/// operations a fault can hit.
fn encrypted() -> Options {
    Options {
        encryption: Some(EncryptionKey::from_bytes([3; 32])),
        ..sweep_options(Durability::Always)
    }
}

fn workload() -> Vec<Op> {
    let mut ops = vec![
        Op::Append(0, "one".into()),
        Op::Append(1, "two".into()),
        Op::Name(0, "n".into()),
        Op::Append(0, "x".repeat(2500)),
        Op::Append(0, "y".repeat(2500)),
        Op::UpdateLast(0, "updated".into()),
        Op::RemoveLast(1),
        Op::Context(1, Some("c".into()), None),
        Op::Compact(0),
        Op::Reopen,
        Op::State(2, true),
        Op::Clear(0),
        Op::Delete(1),
        Op::Append(1, "back".into()),
        Op::Alias(3, "a".into()),
        Op::AppendBatch(2, vec!["call".into(), "result".into()]),
        Op::Clear(2),
        Op::UndoClear(2),
        Op::Fork(2, 4),
        Op::Append(4, "forked".into()),
        Op::Delete(4),
        Op::Restore(4),
        Op::Erase(2),
    ];
    ops.push(Op::Append(4, "last".into()));
    ops
}

struct Outcome {
    acked: Model,
    failed: Option<Op>,
    poisoned_after: Option<bool>,
}

/// Runs `ops` until the first error; after a failed call (not an open), probes whether the
/// store now refuses writes as poisoned.
fn run(fs: &FaultyFs, ops: &[Op], options: &Options) -> Outcome {
    let run = run_until_error(Arc::new(fs.clone()), options, ops);
    let poisoned_after = run.store.map(|store| {
        let next = store.append("probe", &ChatMessage::user("after the fault"));
        matches!(
            next.as_ref()
                .err()
                .and_then(|e| e.get_ref())
                .and_then(|e| e.downcast_ref::<Error>()),
            Some(Error::Poisoned)
        )
    });
    Outcome {
        acked: run.acked,
        failed: run.failed,
        poisoned_after,
    }
}

fn without_probe(model: &Model) -> Model {
    let mut m = model.clone();
    m.sessions.remove("probe");
    m
}

#[test]
fn every_injected_fault_is_reported_and_loses_nothing_acknowledged() {
    sweep(&sweep_options(Durability::Always));
}

#[test]
fn every_injected_fault_in_an_encrypted_store_is_reported_and_loses_nothing_acknowledged() {
    sweep(&encrypted());
}

fn sweep(options: &Options) {
    let total = {
        let fs = FaultyFs::new(Arc::new(SimFs::new()));
        let outcome = run(&fs, &workload(), options);
        assert!(outcome.failed.is_none());
        fs.count()
    };
    assert!(total > 50, "{total} operations");
    let mut sync_faults = 0;
    for n in 0..total {
        for errno in [EIO, ENOSPC] {
            let sim = SimFs::new();
            let fs = FaultyFs::new(Arc::new(sim.clone()));
            fs.fail_at(n, errno);
            let outcome = run(&fs, &workload(), options);
            let context = format!("fault {errno} at operation {n} of {total}");
            let Some(failed) = outcome.failed else {
                // The fault hit an operation whose error the store may absorb (none today),
                // or a read the workload's calls do not report.
                continue;
            };
            let kind = fs.failed();
            // A compaction's failed write or sync of its temporary file (before its rename)
            // fails the compaction alone (an erase compacts the session's forks first):
            // tests/fail_stop.rs tells the two apart. What reopen shows is checked below for
            // every fault.
            if matches!(kind, Some(FsOp::Sync | FsOp::Write))
                && !matches!(failed, Op::Reopen | Op::Compact(_) | Op::Erase(_))
            {
                sync_faults += 1;
                assert_eq!(
                    outcome.poisoned_after,
                    Some(true),
                    "{context}: a failed {kind:?} in {failed:?} must poison the store"
                );
            }
            let mut with_failed = outcome.acked.clone();
            with_failed.apply(&failed);
            for crash in [false, true] {
                if crash {
                    sim.crash(None);
                }
                let store = LogStore::open_with_fs(SIM_DIR, options.clone(), Arc::new(sim.clone()))
                    .unwrap_or_else(|e| panic!("{context}, crash {crash}: reopen failed: {e}"));
                let seen = without_probe(&Model::observe(&store));
                assert!(
                    seen == outcome.acked || seen == with_failed,
                    "{context}, crash {crash}: failed {failed:?}\nseen  {seen:?}\nacked {:?}",
                    outcome.acked
                );
            }
        }
    }
    assert!(
        sync_faults > 10,
        "the sweep hit syncs and writes ({sync_faults})"
    );
}

/// The disk fills up (`ENOSPC`) at the write of an append: that call fails with a
/// storage-full error, later writes are refused with `Error::Poisoned` (reads go on), and once
/// space is back and the store reopened, every acknowledged write is there and writes work.
#[test]
fn a_full_disk_keeps_acknowledged_writes_and_takes_writes_again_after_reopen() {
    let sim = SimFs::new();
    let fs = FaultyFs::new(Arc::new(sim.clone()));
    let store = LogStore::open_with_fs(
        SIM_DIR,
        sweep_options(Durability::Always),
        Arc::new(fs.clone()),
    )
    .unwrap();
    for i in 0..20 {
        store
            .append("k", &ChatMessage::user(format!("{i}")))
            .unwrap();
    }
    // The next operation is the append's write (its segment is open already).
    fs.fail_at(0, ENOSPC);
    let full = store
        .append("k", &ChatMessage::user("does not fit"))
        .unwrap_err();
    assert_eq!(fs.failed(), Some(FsOp::Write));
    assert_eq!(full.kind(), std::io::ErrorKind::StorageFull, "{full}");
    let refused = store.append("k", &ChatMessage::user("later")).unwrap_err();
    let inner = refused.get_ref().and_then(|e| e.downcast_ref::<Error>());
    assert!(matches!(inner, Some(Error::Poisoned)), "{refused}");
    assert_eq!(store.load("k").len(), 20, "reads go on");
    drop(store);

    let store = LogStore::open_with_fs(
        SIM_DIR,
        sweep_options(Durability::Always),
        Arc::new(sim.clone()),
    )
    .unwrap();
    let messages = store.load("k");
    assert_eq!(messages.len(), 20, "the failed write left nothing");
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(m.content, i.to_string());
    }
    store.append("k", &ChatMessage::user("after")).unwrap();
    assert_eq!(store.load("k").last().unwrap().content, "after");
}

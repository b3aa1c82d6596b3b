//! Open replays sessions side by side (a few threads, each taking the next session): with
//! hundreds of sessions to replay, after a crash with a checkpoint taken while the store ran
//! and with none, the answers are those of a replay of every segment, and what open found is
//! reported in the order of the sessions, as one thread would have found it.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{cut_power, full_replay};
use sessionlog::testing::{Model, Op, SimFs};
use sessionlog::{ChatMessage, Durability, Finding, LogStore, Options, SessionBackend};

const DIR: &str = common::SIM_DIR;

/// Far more sessions than open hands each thread at a time.
const SESSIONS: usize = 300;

fn options(durability: Durability) -> Options {
    Options {
        segment_bytes_max: 4096,
        checkpoint_bytes: 0,
        checkpoint_interval: None,
        ..Options::with_durability(durability)
    }
}

fn open(fs: &SimFs, options: &Options) -> LogStore {
    LogStore::open_with_fs(DIR, options.clone(), Arc::new(fs.clone())).unwrap()
}

fn key(i: usize) -> String {
    format!("sender_{i:03}")
}

/// `SESSIONS` sessions of three messages each.
fn many_sessions(fs: &SimFs, options: &Options) -> LogStore {
    let store = open(fs, options);
    for i in 0..SESSIONS {
        for m in 0..3 {
            let text = format!("message {m} of {}", key(i));
            store.append(&key(i), &ChatMessage::user(text)).unwrap();
        }
    }
    store
}

#[test]
fn an_open_after_a_crash_that_replays_hundreds_of_sessions_agrees_with_a_full_replay() {
    let fs = SimFs::new();
    let options = options(Durability::Always);
    let store = many_sessions(&fs, &options);
    store.checkpoint().unwrap();
    // After it, every session changes, each in one of several ways.
    for i in 0..SESSIONS {
        let k = key(i);
        match i % 7 {
            0 => store.append(&k, &ChatMessage::user("after")).map(drop),
            1 => (store.update_last(&k, &ChatMessage::assistant("changed"))).map(drop),
            2 => store.remove_last(&k).map(drop),
            3 => store.clear_messages(&k).map(drop),
            4 => store.delete_session(&k).map(drop),
            5 => store.set_session_name(&k, "named after"),
            // Rolls over to new segments.
            _ => (0..40).try_for_each(|m| {
                let text = format!("{m} a message long enough to fill a segment soon");
                store.append(&k, &ChatMessage::user(text)).map(drop)
            }),
        }
        .unwrap();
    }
    store.append("new", &ChatMessage::user("born")).unwrap();
    let before = Model::observe(&store);
    cut_power(&fs, store);

    let store = open(&fs, &options);
    let report = store.recovery_report().clone();
    assert!(report.from_checkpoint, "{report:?}");
    assert_eq!(report.replayed_sessions, SESSIONS + 1, "{report:?}");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(Model::observe(&store), before);
    drop(store);
    assert_eq!(full_replay(&fs), before);
}

#[test]
fn torn_tails_in_hundreds_of_sessions_are_cut_and_reported_in_the_order_of_the_sessions() {
    let fs = SimFs::new();
    let options = options(Durability::Never);
    let store = many_sessions(&fs, &options);
    store.sync().unwrap();
    let synced = Model::observe(&store);
    // One more record each, never synced: the power goes with a few bytes of each written.
    for i in 0..SESSIONS {
        store.append(&key(i), &ChatMessage::user("torn")).unwrap();
    }
    fs.cut_power_after(0);
    drop(store);
    fs.crash(Some(9));

    let store = open(&fs, &options);
    let report = store.recovery_report().clone();
    assert!(
        !report.from_checkpoint,
        "no checkpoint was taken: {report:?}"
    );
    let torn: Vec<PathBuf> = (report.findings.iter())
        .filter_map(|f| match f {
            Finding::TornTail { path, .. } => Some(path.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(torn.len(), SESSIONS, "{report:?}");
    // Segment names begin with the session id in hex of a fixed width, and ids follow the
    // order the sessions were made in: sorted names are the sessions' order.
    let mut sorted = torn.clone();
    sorted.sort();
    assert_eq!(torn, sorted, "findings out of the sessions' order");
    assert_eq!(Model::observe(&store), synced);
    drop(store);
    assert_eq!(full_replay(&fs), synced);
}

/// The names of the files on `sim` that hold `marker`, sorted (a segment's name begins with
/// its session's id).
fn holding(sim: &SimFs, marker: &[u8]) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found: Vec<_> = (sim.files().into_iter())
        .filter(|(_, bytes)| bytes.windows(marker.len()).any(|w| w == marker))
        .collect();
    found.sort();
    found
}

#[test]
fn a_torn_tail_in_a_segment_a_fork_links_is_cut_once_and_both_agree_with_a_full_replay() {
    // The two share the segment's bytes (a link), so the source's replay, which cuts the tail,
    // and the fork's, which reads the segment, are one unit, replayed one after the other
    // (`recovery/job.rs`), beside the other sessions.
    let sim = SimFs::new();
    let options = options(Durability::Always);
    let store = open(&sim, &options);
    // Sessions enough to be replayed side by side; the fork's id comes after the source's.
    for i in 0..40 {
        let text = format!("message of {}", key(i));
        store.append(&key(i), &ChatMessage::user(text)).unwrap();
    }
    let say = |text: &str| store.append("source", &ChatMessage::user(text)).unwrap();
    say("first of the source");
    let before = holding(&sim, b"first of the source")[0].1.len();
    say("last of the source");
    let (path, bytes) = holding(&sim, b"last of the source").remove(0);
    store.fork_session("source", "fork", None).unwrap();
    let whole = Model::observe(&store);
    // The segment the fork links (the fork's name for it sorts after the source's) ends in
    // the first half of a copy of its last record: a torn tail, for the source.
    assert_eq!(holding(&sim, b"last of the source").len(), 2, "linked");
    let last = &bytes[before..];
    let torn = [&bytes[..], &last[..last.len() / 2]].concat();
    cut_power(&sim, store);
    sim.put_file(&path, &torn);

    let store = open(&sim, &options);
    let report = store.recovery_report().clone();
    let cut = (report.findings.iter())
        .filter(|f| matches!(f, Finding::TornTail { .. }))
        .count();
    assert_eq!(cut, 1, "{report:?}");
    assert!(!report.has_damage(), "{report:?}");
    assert_eq!(Model::observe(&store), whole);
    drop(store);
    assert_eq!(full_replay(&sim), whole);
}

/// A store of 40 sessions written and made durable, then left as a crash leaves it (no
/// checkpoint): every open of it replays them all, side by side. Returns it and its model.
fn forty_sessions_replayed_at_every_open(options: &Options) -> (SimFs, Model) {
    let fs = SimFs::new();
    let store = open(&fs, options);
    for i in 0..40 {
        for m in 0..2 {
            let text = format!("message {m} of {}", key(i));
            store.append(&key(i), &ChatMessage::user(text)).unwrap();
        }
    }
    let model = Model::observe(&store);
    cut_power(&fs, store);
    (fs, model)
}

/// Forks, deletes, clears and rewrites of the last message over the model's keys, with no
/// checkpoint and no clean close: each open after a cut replays every session.
fn workload() -> Vec<Op> {
    vec![
        Op::Append(0, "a".repeat(1500)),
        Op::Append(0, "b".repeat(1500)),
        Op::Append(1, "one".into()),
        Op::UpdateLast(1, "one, rewritten".into()),
        Op::Fork(0, 2),
        Op::Append(2, "in the fork".into()),
        Op::Append(0, "c".repeat(1500)),
        Op::RemoveLast(0),
        Op::Clear(1),
        Op::Append(1, "after the clear".into()),
        Op::Delete(2),
        Op::Append(3, "d".repeat(3000)),
        Op::Name(3, "named".into()),
        Op::Append(4, "last".into()),
    ]
}

#[test]
fn no_acknowledged_write_is_lost_at_any_power_cut_when_sessions_are_replayed_side_by_side() {
    let options = common::sweep_options(Durability::Always);
    let (base, forty) = forty_sessions_replayed_at_every_open(&options);
    let ops = workload();
    // With the forty sessions' model added (their keys are not the workload's).
    let with_forty = |model: &Model| {
        let mut model = model.clone();
        model.sessions.extend(forty.sessions.clone());
        model
    };
    let total = {
        let fs = base.snapshot();
        let before = fs.mutations();
        let run = common::run_until_error(Arc::new(fs.clone()), &options, &ops);
        assert_eq!(run.failed, None, "the workload runs cleanly without faults");
        fs.mutations() - before
    };
    assert!(total > 30, "{total} mutations");
    let mut replayed_all = 0;
    for n in 0..=total {
        for torn in [None, Some(13)] {
            let fs = base.snapshot();
            fs.cut_power_after(n);
            let run = common::run_until_error(Arc::new(fs.clone()), &options, &ops);
            drop(run.store);
            fs.crash(torn);
            let store = open(&fs, &options);
            let report = store.recovery_report().clone();
            let context = format!("power cut after {n} of {total}, torn {torn:?}");
            assert!(!report.has_damage(), "{context}: {report:?}");
            // (A cut late in the clean close leaves its checkpoint in place.)
            if !report.from_checkpoint {
                assert!(report.replayed_sessions >= 40, "{context}: {report:?}");
                replayed_all += 1;
            }
            let seen = Model::observe(&store);
            let acked = with_forty(&run.acked);
            let mut in_flight = run.acked.clone();
            if let Some(op) = &run.failed {
                in_flight.apply(op);
            }
            let in_flight = with_forty(&in_flight);
            assert!(
                seen == acked || seen == in_flight,
                "{context}: in flight {:?}\nseen  {seen:?}\nacked {acked:?}",
                run.failed
            );
            drop(store);
            assert_eq!(full_replay(&fs), seen, "{context}");
        }
    }
    assert!(
        replayed_all > total,
        "{replayed_all} of {} cuts replayed every session",
        2 * (total + 1)
    );
}

//! Incremental checkpoints: after a full checkpoint, a checkpoint taken while the store runs
//! appends to `CHECKPOINT.delta` only the sessions whose files moved since the checkpoint
//! before it; an open after a crash applies the deltas to the full checkpoint and replays only
//! what changed after the last one, with the answers of a replay of every segment.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{cut_power, full_replay};
use sessionlog::testing::{Model, SimFs};
use sessionlog::{ChatMessage, Durability, LogStore, Options, SessionBackend};

const DIR: &str = common::SIM_DIR;

fn options() -> Options {
    Options {
        segment_bytes_max: 4096,
        checkpoint_bytes: 0,
        checkpoint_interval: None,
        ..Options::with_durability(Durability::Always)
    }
}

fn open(fs: &SimFs) -> LogStore {
    LogStore::open_with_fs(DIR, options(), Arc::new(fs.clone())).unwrap()
}

/// After a crash: the store opens from its checkpoint and deltas, having replayed `replayed`
/// sessions, and answers `before`, as a replay of every segment does.
fn reopens_after_crash(fs: &SimFs, store: LogStore, before: &Model, replayed: usize) {
    cut_power(fs, store);
    opens_as(fs, before, replayed);
}

/// The store opens from its checkpoint and deltas, having replayed `replayed` sessions, and
/// answers `before`, as a replay of every segment does.
fn opens_as(fs: &SimFs, before: &Model, replayed: usize) {
    let store = open(fs);
    let report = store.recovery_report().clone();
    assert!(report.from_checkpoint && report.is_clean(), "{report:?}");
    assert_eq!(report.replayed_sessions, replayed);
    assert_eq!(Model::observe(&store), *before);
    drop(store);
    assert_eq!(full_replay(fs), *before);
}

fn path(name: &str) -> PathBuf {
    Path::new(DIR).join(name)
}

fn file(fs: &SimFs, name: &str) -> Option<Vec<u8>> {
    let path = path(name);
    fs.files()
        .into_iter()
        .find(|(p, _)| *p == path)
        .map(|(_, bytes)| bytes)
}

fn holds(bytes: &[u8], needle: &str) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn say(store: &LogStore, key: &str, text: &str) {
    store.append(key, &ChatMessage::user(text)).unwrap();
}

/// A store of 40 sessions (`key-00` to `key-39`) of 3 messages each, and a full checkpoint.
fn forty_sessions_checkpointed(fs: &SimFs) -> LogStore {
    let store = open(fs);
    for i in 0..40 {
        for m in 0..3 {
            say(&store, &format!("key-{i:02}"), &format!("message {m}"));
        }
    }
    store.checkpoint().unwrap();
    assert!(file(fs, "CHECKPOINT").is_some());
    assert!(file(fs, "CHECKPOINT.delta").is_none());
    store
}

#[test]
fn a_checkpoint_after_a_full_one_appends_only_the_sessions_written_since() {
    let fs = SimFs::new();
    let store = forty_sessions_checkpointed(&fs);
    let full = file(&fs, "CHECKPOINT").unwrap();
    // Appends (one session rolling over to new segments), a name, a delete, a new session.
    say(&store, "key-01", "after the checkpoint");
    for m in 0..30 {
        say(
            &store,
            "key-02",
            &format!("{m} a message long enough to roll over"),
        );
    }
    store.set_session_name("key-04", "named after").unwrap();
    assert!(store.delete_session("key-05").unwrap());
    say(&store, "key-new", "a new session");
    store.checkpoint().unwrap();
    // The full checkpoint is as it was; the delta holds the five sessions written, not the
    // others.
    assert_eq!(file(&fs, "CHECKPOINT").unwrap(), full);
    let delta = file(&fs, "CHECKPOINT.delta").unwrap();
    for key in ["key-01", "key-02", "key-04", "key-05", "key-new"] {
        assert!(holds(&delta, key), "{key}");
    }
    for i in (6..40).chain([0, 3]) {
        assert!(!holds(&delta, &format!("key-{i:02}")), "key-{i:02}");
    }
    assert!(
        delta.len() < full.len() / 2,
        "{} {}",
        delta.len(),
        full.len()
    );
    let before = Model::observe(&store);
    // Nothing was written after the delta: every session comes from the full checkpoint or
    // the delta, none is replayed.
    reopens_after_crash(&fs, store, &before, 0);
}

/// A full checkpoint, then a delta of `key-01`, `key-03` and `key-04`, then one of `key-01`
/// and `key-02`: the store, its answers, and the delta file.
fn two_deltas(fs: &SimFs) -> (LogStore, Model, Vec<u8>) {
    let store = forty_sessions_checkpointed(fs);
    for key in ["key-01", "key-03", "key-04"] {
        say(&store, key, "in the first delta");
    }
    store.checkpoint().unwrap();
    let one = file(fs, "CHECKPOINT.delta").unwrap();
    say(&store, "key-01", "in the second delta");
    say(&store, "key-02", "in the second delta");
    store.checkpoint().unwrap();
    let two = file(fs, "CHECKPOINT.delta").unwrap();
    assert!(two.len() > one.len() && two.starts_with(&one));
    let before = Model::observe(&store);
    (store, before, two)
}

#[test]
fn deltas_apply_in_order() {
    let fs = SimFs::new();
    let (store, before, _) = two_deltas(&fs);
    reopens_after_crash(&fs, store, &before, 0);
}

#[test]
fn a_delta_cut_short_is_left_out_and_the_ones_before_it_stand() {
    let fs = SimFs::new();
    let (store, before, two) = two_deltas(&fs);
    cut_power(&fs, store);
    // The second cut short, as a power cut inside its write would leave it: the first one
    // stands, and the two sessions written after it are replayed from where it left them
    // (without it, the four written after the full checkpoint would be).
    fs.put_file(&path("CHECKPOINT.delta"), &two[..two.len() - 7]);
    opens_as(&fs, &before, 2);
}

#[test]
fn a_full_checkpoint_takes_the_deltas_of_the_one_it_replaces_away() {
    let fs = SimFs::new();
    let store = forty_sessions_checkpointed(&fs);
    say(&store, "key-01", "in a delta");
    store.checkpoint().unwrap();
    assert!(file(&fs, "CHECKPOINT.delta").is_some());
    // A clean close writes a full checkpoint, and no delta is left beside it.
    store.close().unwrap();
    assert!(file(&fs, "CHECKPOINT.delta").is_none());
    assert!(file(&fs, "CHECKPOINT.running").is_none());
    // Opened from it, the store appends deltas to it.
    let store = open(&fs);
    say(&store, "key-03", "after the reopen");
    store.checkpoint().unwrap();
    let delta = file(&fs, "CHECKPOINT.delta").unwrap();
    assert!(holds(&delta, "key-03") && !holds(&delta, "key-01"));
    let before = Model::observe(&store);
    reopens_after_crash(&fs, store, &before, 0);
}

#[test]
fn deltas_grow_to_half_the_full_checkpoint_then_a_full_one_is_written() {
    let fs = SimFs::new();
    let store = open(&fs);
    // Enough sessions for a full checkpoint whose half is past the 64 KiB deltas always get.
    let sessions = 800;
    for i in 0..sessions {
        for m in 0..3 {
            say(&store, &format!("key-{i:03}"), &format!("message {m}"));
        }
    }
    store.checkpoint().unwrap();
    let mut full = file(&fs, "CHECKPOINT").unwrap();
    assert!(full.len() > 128 << 10, "{}", full.len());
    let mut fulls = 0;
    for round in 0..40 {
        // An eighth of the sessions each round.
        for i in (round % 8..sessions).step_by(8) {
            say(&store, &format!("key-{i:03}"), &format!("round {round}"));
        }
        store.checkpoint().unwrap();
        let now = file(&fs, "CHECKPOINT").unwrap();
        let delta = file(&fs, "CHECKPOINT.delta").map_or(0, |d| d.len());
        if now != full {
            fulls += 1;
            full = now;
            assert_eq!(
                delta, 0,
                "round {round}: a new full checkpoint's deltas start empty"
            );
        } else {
            // Deltas stop short of half the full checkpoint, by at most the last one.
            assert!(delta < full.len(), "round {round}: {delta} {}", full.len());
        }
    }
    assert!(fulls >= 2, "{fulls}");
    let before = Model::observe(&store);
    reopens_after_crash(&fs, store, &before, 0);
}

#[test]
fn an_erasure_takes_the_deltas_that_hold_the_erased_session_with_it() {
    const KEY: &str = "secret-key-5d1e";
    let fs = SimFs::new();
    let store = forty_sessions_checkpointed(&fs);
    say(&store, KEY, "hello");
    store.set_session_name(KEY, "a name to forget").unwrap();
    store.checkpoint().unwrap();
    assert!(holds(&file(&fs, "CHECKPOINT.delta").unwrap(), KEY));
    store.erase_session(KEY).unwrap();
    let holding: Vec<PathBuf> = (fs.files().into_iter())
        .filter(|(_, bytes)| holds(bytes, KEY) || holds(bytes, "a name to forget"))
        .map(|(path, _)| path)
        .collect();
    assert_eq!(holding, Vec::<PathBuf>::new());
    // The next checkpoint is a full one, without it.
    say(&store, "key-01", "after the erasure");
    store.checkpoint().unwrap();
    assert!(file(&fs, "CHECKPOINT.delta").is_none());
    let before = Model::observe(&store);
    cut_power(&fs, store);
    let store = open(&fs);
    assert_eq!(Model::observe(&store), before);
    assert!(!store.session_exists(KEY));
}

#[test]
fn an_encrypted_store_writes_only_full_checkpoints() {
    let fs = SimFs::new();
    let options = Options {
        encryption: Some(sessionlog::EncryptionKey::from_bytes([9; 32])),
        ..options()
    };
    let store = LogStore::open_with_fs(DIR, options.clone(), Arc::new(fs.clone())).unwrap();
    say(&store, "a", "one");
    store.checkpoint().unwrap();
    say(&store, "b", "two");
    store.checkpoint().unwrap();
    assert!(file(&fs, "CHECKPOINT.delta").is_none());
    let before = Model::observe(&store);
    cut_power(&fs, store);
    let store = LogStore::open_with_fs(DIR, options, Arc::new(fs.clone())).unwrap();
    assert_eq!(store.recovery_report().replayed_sessions, 0);
    assert_eq!(Model::observe(&store), before);
}

#[test]
fn a_fault_at_any_step_of_a_delta_fails_it_alone_or_stops_writes_and_loses_nothing() {
    use sessionlog::testing::{FaultyFs, FsOp, EIO};
    let mut faults = 0;
    for n in 0.. {
        let sim = SimFs::new();
        let faulty = FaultyFs::new(Arc::new(sim.clone()));
        let store = LogStore::open_with_fs(DIR, options(), Arc::new(faulty.clone())).unwrap();
        for i in 0..10 {
            say(&store, &format!("key-{i:02}"), "before the full checkpoint");
        }
        store.checkpoint().unwrap();
        let full = file(&sim, "CHECKPOINT").unwrap();
        say(&store, "key-01", "in the delta");
        let mut before = Model::observe(&store);
        faulty.fail_at(n, EIO);
        let taken = store.checkpoint();
        let Some(failed) = faulty.failed() else {
            taken.unwrap();
            assert!(file(&sim, "CHECKPOINT.delta").is_some());
            break; // past the delta's last step
        };
        faults += 1;
        assert!(taken.is_err(), "step {n} ({failed:?})");
        if store.health().poisoned {
            // Only a failed sync stops the store's writes.
            assert!(
                matches!(failed, FsOp::Sync | FsOp::SyncDir),
                "step {n} ({failed:?})"
            );
        } else {
            // The delta failed alone: writes go on, and the next checkpoint is a full one.
            say(&store, "key-02", "after the failed delta");
            store.checkpoint().unwrap();
            assert_ne!(file(&sim, "CHECKPOINT").unwrap(), full, "step {n}");
            assert!(file(&sim, "CHECKPOINT.delta").is_none(), "step {n}");
            before = Model::observe(&store);
        }
        cut_power(&sim, store);
        let store = open(&sim);
        assert_eq!(Model::observe(&store), before, "step {n} ({failed:?})");
        drop(store);
        assert_eq!(full_replay(&sim), before, "step {n}");
    }
    assert!(faults >= 3, "{faults}");
}

#[test]
fn a_delta_file_beside_a_clean_close_checkpoint_goes_at_a_writable_open() {
    let fs = SimFs::new();
    let store = forty_sessions_checkpointed(&fs);
    say(&store, "key-01", "in a delta");
    store.checkpoint().unwrap();
    let stale = file(&fs, "CHECKPOINT.delta").unwrap();
    store.close().unwrap();
    // As if the clean close could not remove it: it names the checkpoint before.
    fs.put_file(&path("CHECKPOINT.delta"), &stale);
    let reader = LogStore::open_read_only_with_fs(DIR, Arc::new(fs.clone())).unwrap();
    drop(reader);
    assert!(
        file(&fs, "CHECKPOINT.delta").is_some(),
        "a reader changes nothing"
    );
    let store = open(&fs);
    assert!(file(&fs, "CHECKPOINT.delta").is_none());
    assert_eq!(store.load("key-01").len(), 4);
}

#[test]
fn after_an_open_with_another_window_of_ids_the_first_checkpoint_is_a_full_one() {
    let fs = SimFs::new();
    let store = forty_sessions_checkpointed(&fs);
    store.close().unwrap();
    let full = file(&fs, "CHECKPOINT").unwrap();
    let options = Options {
        idempotency_window: options().idempotency_window + 1,
        ..options()
    };
    let store = LogStore::open_with_fs(DIR, options.clone(), Arc::new(fs.clone())).unwrap();
    say(&store, "key-01", "after the reopen");
    store.checkpoint().unwrap();
    // A delta written with this window would never apply to a checkpoint of the other one.
    assert!(file(&fs, "CHECKPOINT.delta").is_none());
    assert_ne!(file(&fs, "CHECKPOINT").unwrap(), full);
    say(&store, "key-02", "after the full checkpoint");
    store.checkpoint().unwrap();
    assert!(file(&fs, "CHECKPOINT.delta").is_some());
    let before = Model::observe(&store);
    cut_power(&fs, store);
    let store = LogStore::open_with_fs(DIR, options, Arc::new(fs.clone())).unwrap();
    assert_eq!(store.recovery_report().replayed_sessions, 0);
    assert_eq!(Model::observe(&store), before);
}

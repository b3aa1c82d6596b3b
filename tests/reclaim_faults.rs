//! A fault (EIO or ENOSPC) at any file-system operation of a reclaim, the step that removes a
//! deleted session's files for good once its undo window has passed (its forks first get their
//! own copy of what they share): whatever the call reports, once the store is closed and
//! opened again, no file holds a byte only the deleted session had, and the fork reads whole.
//! Checked for a delete with no undo window (reclaimed at once, and a write to the key after
//! the fault), for a sweep of an expired delete that another call sets off, and for an
//! `erase_session` tried again after its fault.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{sweep_options, user, SIM_DIR};
use sessionlog::testing::{FaultyFs, SimFs, EIO, ENOSPC};
use sessionlog::{Durability, LogStore, Options, SessionBackend};

/// Bytes only the source ever held: written after the point the fork was taken at.
const LATER: &str = "LATER-ONLY-IN-THE-SOURCE";

fn options(retention: Duration) -> Options {
    Options {
        tombstone_retention: retention,
        // Erasure wins over history: nothing of the session may stay in `archive/` either.
        keep_history: true,
        ..sweep_options(Durability::Always)
    }
}

/// How the deleted session's reclaim is set off.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    /// `delete_session` with no undo window; then a write to the key.
    DeleteAtOnce,
    /// A later delete of another session sweeps the expired one.
    Sweep,
    /// `erase_session`, and again after its fault.
    EraseTwice,
}

impl Trigger {
    fn retention(self) -> Duration {
        match self {
            Trigger::DeleteAtOnce => Duration::ZERO,
            Trigger::Sweep | Trigger::EraseTwice => Duration::from_millis(20),
        }
    }
}

/// The source with a fork from the past, so that the reclaim must give the fork its own copy
/// of the segment they share (that segment holds [`LATER`]).
fn build(fs: Arc<FaultyFs>, trigger: Trigger) -> LogStore {
    let store = LogStore::open_with_fs(SIM_DIR, options(trigger.retention()), fs).unwrap();
    store.append("src", &user("shared")).unwrap();
    let at = store.last_seq();
    store.append("src", &user(&format!("{LATER} 1"))).unwrap();
    store.fork_session("src", "fork", Some(at)).unwrap();
    store.append("fork", &user("the fork's own")).unwrap();
    store.append("other", &user("bystander")).unwrap();
    if let Trigger::Sweep = trigger {
        assert!(store.delete_session("src").unwrap());
        std::thread::sleep(trigger.retention() * 2);
    }
    store
}

/// The call the fault hits. An `erase_session` that returns `Ok` has removed every byte of the
/// session at once.
fn set_off(store: &LogStore, sim: &SimFs, trigger: Trigger, context: &str) {
    match trigger {
        Trigger::DeleteAtOnce => {
            let _ = store.delete_session("src");
            let _ = store.append("src", &user("after the fault"));
        }
        Trigger::Sweep => {
            let _ = store.delete_session("other");
        }
        Trigger::EraseTwice => {
            let erased = store.erase_session("src");
            if erased.is_ok() || store.erase_session("src").is_ok() {
                let holding = files_holding(sim, LATER);
                assert!(holding.is_empty(), "{context}: erased, yet {holding:?}");
            }
        }
    }
}

fn files_holding(sim: &SimFs, marker: &str) -> Vec<std::path::PathBuf> {
    sim.files()
        .into_iter()
        .filter(|(_, bytes)| bytes.windows(marker.len()).any(|w| w == marker.as_bytes()))
        .map(|(path, _)| path)
        .collect()
}

/// Opens the store on `sim` (no fault) and checks it: the fork whole, and [`LATER`] in no
/// file unless the source still holds it.
fn check(sim: &SimFs, trigger: Trigger, context: &str) {
    let store =
        LogStore::open_with_fs(SIM_DIR, options(trigger.retention()), Arc::new(sim.clone()))
            .unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
    if let Trigger::EraseTwice = trigger {
        // The caller tries again after an error (the store was poisoned, or the delete is
        // still within its undo window): it erases now.
        store
            .erase_session("src")
            .unwrap_or_else(|e| panic!("{context}: erase: {e}"));
    }
    let fork: Vec<String> = store.load("fork").into_iter().map(|m| m.content).collect();
    assert_eq!(fork, ["shared", "the fork's own"], "{context}");
    let source_holds_it = store
        .load("src")
        .iter()
        .any(|m| m.content.starts_with(LATER));
    if !source_holds_it {
        let holding = files_holding(sim, LATER);
        assert!(
            holding.is_empty(),
            "{context}: the deleted source's bytes remain in {holding:?}"
        );
    }
    store
        .close()
        .unwrap_or_else(|e| panic!("{context}: close: {e}"));
}

#[test]
fn a_fault_anywhere_in_a_reclaim_leaves_no_byte_of_the_deleted_session_after_a_reopen() {
    for trigger in [Trigger::DeleteAtOnce, Trigger::Sweep, Trigger::EraseTwice] {
        let steps = {
            let sim = SimFs::new();
            let fs = Arc::new(FaultyFs::new(Arc::new(sim.clone())));
            let store = build(Arc::clone(&fs), trigger);
            let before = fs.count();
            set_off(&store, &sim, trigger, "no fault");
            fs.count() - before
        };
        assert!(steps > 10, "{trigger:?}: {steps} steps");
        for n in 0..steps {
            for errno in [EIO, ENOSPC] {
                let context = format!("{trigger:?}, fault {errno} at step {n} of {steps}");
                let sim = SimFs::new();
                let fs = Arc::new(FaultyFs::new(Arc::new(sim.clone())));
                let store = build(Arc::clone(&fs), trigger);
                fs.fail_at(n, errno);
                set_off(&store, &sim, trigger, &context);
                // A clean close if the store allows one (it records what it holds in a
                // checkpoint the next open trusts); then two opens, the second after a
                // clean close.
                let _ = store.close();
                check(&sim, trigger, &context);
                check(&sim, trigger, &context);
            }
        }
    }
}

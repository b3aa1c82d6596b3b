//! The background threads: the interval flusher and the compactor, and the queue between the
//! write path and the compactor.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::health::Swallowed;

use super::compact::Compaction;
use super::Inner;

/// The queue of sessions to compact, and the signal that stops the background threads.
#[derive(Default)]
pub(super) struct Background {
    pub(super) state: Mutex<BackgroundState>,
    pub(super) wake: Condvar,
    /// Wakes the checkpointer: enough was written for a checkpoint, or the store stops.
    pub(super) checkpoint_due: Condvar,
    /// Wakes the shipper when the store stops (feature `replication`).
    #[cfg(feature = "replication")]
    pub(super) replicate_due: Condvar,
    /// The shipper and its status.
    #[cfg(feature = "replication")]
    pub(super) replica: super::replicating::Replica,
}

impl Background {
    /// Waits on `signal` for at most `timeout`, unless the store is stopping; true once it is.
    pub(super) fn wait_or_stop(&self, signal: &Condvar, timeout: Duration) -> bool {
        let mut state = self.state.lock();
        if !state.stop {
            signal.wait_for(&mut state, timeout);
        }
        state.stop
    }
}

#[derive(Default)]
pub(super) struct BackgroundState {
    pub(super) stop: bool,
    /// Sessions waiting for compaction, each at most once.
    pub(super) queue: VecDeque<String>,
    pub(super) queued: HashSet<String>,
    /// Compactions under way. A session leaves `queued` when its compaction starts, so writes
    /// made meanwhile can queue it again.
    pub(super) running: usize,
}

pub(super) fn spawn(
    name: &str,
    inner: &Arc<Inner>,
    work: impl FnOnce(&Inner) + Send + 'static,
) -> Result<JoinHandle<()>> {
    let inner = Arc::clone(inner);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || work(&inner))
        .map_err(|e| Error::io(format!("starting thread {name}"), e))
}

/// `Durability::Interval`: sync what is unsynced every `every`.
pub(super) fn flusher(inner: &Inner, every: Duration) {
    let background = &inner.background;
    loop {
        if background.wait_or_stop(&background.wake, every) {
            return;
        }
        if *inner.flushing.lock() {
            continue; // a flush failed: a reopen decides what is on disk
        }
        // A failure poisons the store, so the next write reports it.
        let flushed = inner.flush();
        inner
            .monitor
            .note(Swallowed::Background, "interval flush", None, flushed);
    }
}

/// How often the compactor looks for tombstones past their retention.
pub(super) const TOMBSTONE_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Compacts the sessions writers queued, one at a time, and reclaims tombstones past their
/// retention.
pub(super) fn compactor(inner: &Inner) {
    let background = &inner.background;
    let mut last_retention = Instant::now();
    loop {
        let key = {
            let mut state = background.state.lock();
            loop {
                if state.stop {
                    return;
                }
                if let Some(key) = state.queue.pop_front() {
                    state.queued.remove(&key);
                    state.running += 1;
                    break key;
                }
                let mut every = TOMBSTONE_SWEEP_EVERY;
                if inner.options.retention.is_set() {
                    every = every.min(inner.options.retention.check_every);
                }
                let idle = background.wake.wait_for(&mut state, every).timed_out();
                let retention_due = inner.options.retention.is_set()
                    && last_retention.elapsed() >= inner.options.retention.check_every;
                if idle && (retention_due || !inner.tombstones.lock().is_empty()) {
                    drop(state);
                    // A failure poisons the store, so the next write reports it.
                    if retention_due {
                        last_retention = Instant::now();
                        let applied = inner.apply_retention().map(drop);
                        let monitor = &inner.monitor;
                        monitor.note(Swallowed::Background, "retention", None, applied);
                    }
                    let swept = inner.sweep_tombstones();
                    let monitor = &inner.monitor;
                    monitor.note(Swallowed::Background, "tombstone sweep", None, swept);
                    state = background.state.lock();
                }
            }
        };
        // Logged and counted: a failed compaction of one session does not stop the store
        // unless its new generation was already in force (then it poisons it).
        let compacted = inner.compact_as(&key, Compaction::Background);
        let monitor = &inner.monitor;
        monitor.note(Swallowed::Background, "compaction", Some(&key), compacted);
        background.state.lock().running -= 1;
        background.wake.notify_all();
    }
}

impl Inner {
    pub(super) fn queue_compaction(&self, key: &str) {
        let mut state = self.background.state.lock();
        if state.queued.insert(key.to_owned()) {
            state.queue.push_back(key.to_owned());
            self.background.wake.notify_all();
        }
    }
}

impl super::LogStore {
    /// Waits until the background compactor has no queued work (for tests and tools).
    pub fn wait_for_compactions(&self) {
        let mut state = self.inner.background.state.lock();
        while (!state.queue.is_empty() || state.running > 0)
            && !state.stop
            && !self.threads.is_empty()
        {
            self.inner
                .background
                .wake
                .wait_for(&mut state, Duration::from_millis(10));
        }
    }
}

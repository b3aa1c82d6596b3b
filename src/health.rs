//! What the store could not do without a caller to tell: errors it swallowed because the API
//! that met them cannot return one (`SessionBackend::load` returns a `Vec`, a background
//! compaction has no caller), counted for [`crate::LogStore::health`] and logged as `tracing`
//! events of target `sessionlog`.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::error::Error;

/// The store's health, as [`crate::LogStore::health`] reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Reads that failed where the API could only answer empty: `load`,
    /// `load_with_timestamps` and `load_tail` returned `[]`, `search` passed over a session's
    /// messages. `read_messages` and `read_tail` return the same errors instead.
    pub read_errors: u64,
    /// Work of the background threads that failed: a compaction, a flush, retention, the sweep
    /// of tombstones, retirements deferred for readers.
    pub background_errors: u64,
    /// The most recent of those errors, with what the store was doing.
    pub last_error: Option<String>,
    /// A failed write or sync stopped the store's writes ([`crate::Error::Poisoned`]) until it
    /// is reopened.
    pub poisoned: bool,
    /// Sessions whose message locations were read back from the checkpoint: at their first
    /// read or write after open, and again after the memory budget dropped them
    /// ([`crate::Options::memory_budget`]).
    pub locations_read_back: u64,
    /// Sessions whose message locations the memory budget dropped, to be read back from the
    /// checkpoint at their next use.
    pub locations_parked: u64,
    /// Sessions the search index indexed (whole or from their first changed message), for a
    /// query or in the background (an index in use is kept caught up about once a second).
    pub sessions_indexed: u64,
    /// Sessions still cold: an open from a checkpoint written at a clean close leaves each
    /// live session in the checkpoint until its first read or write (a listing or a page
    /// reads it there); anything that walks every session's slot (a checkpoint, an anchor,
    /// `verify`, the search index's catch-up) decodes them all.
    pub sessions_cold: u64,
}

/// Where a swallowed error was met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Swallowed {
    /// A read behind an API that answers empty.
    Read,
    /// A background thread's work.
    Background,
}

/// The counters behind [`Health`].
#[derive(Debug, Default)]
pub(crate) struct Monitor {
    read_errors: AtomicU64,
    background_errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    read_back: AtomicU64,
    parked: AtomicU64,
    indexed: AtomicU64,
}

impl Monitor {
    /// Counts and logs `error`, met while doing `what` (for session `key`, if any).
    pub(crate) fn swallowed(&self, kind: Swallowed, what: &str, key: Option<&str>, error: &Error) {
        let counter = match kind {
            Swallowed::Read => &self.read_errors,
            Swallowed::Background => &self.background_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let text = match key {
            Some(key) => format!("{what} of session {key:?}: {error}"),
            None => format!("{what}: {error}"),
        };
        tracing::warn!(target: "sessionlog", kind = ?kind, "{text}");
        *self.last_error.lock() = Some(text);
    }

    /// Passes `result` on, counting and logging its error, if any, as swallowed.
    pub(crate) fn note<T>(
        &self,
        kind: Swallowed,
        what: &str,
        key: Option<&str>,
        result: Result<T, Error>,
    ) -> Option<T> {
        result
            .inspect_err(|e| self.swallowed(kind, what, key, e))
            .ok()
    }

    /// Counts a session's locations read back from the checkpoint.
    pub(crate) fn read_back(&self) {
        self.read_back.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a session the search index indexed.
    pub(crate) fn indexed(&self) {
        self.indexed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a session's locations dropped under the memory budget.
    pub(crate) fn parked(&self) {
        self.parked.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub(crate) fn health(&self, poisoned: bool) -> Health {
        Health {
            read_errors: self.read_errors.load(Ordering::Relaxed),
            background_errors: self.background_errors.load(Ordering::Relaxed),
            last_error: self.last_error.lock().clone(),
            poisoned,
            locations_read_back: self.read_back.load(Ordering::Relaxed),
            locations_parked: self.parked.load(Ordering::Relaxed),
            sessions_indexed: self.indexed.load(Ordering::Relaxed),
            sessions_cold: 0,
        }
    }
}

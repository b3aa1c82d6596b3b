//! [`LogStore`]: opening a folder, the write path, reads, background work, and the
//! [`SessionBackend`] implementation.
//!
//! Concurrency: the map from key to session is behind one `RwLock`, held only to find, add or
//! remove a session. Each session has a writer mutex (serialising its writers, I/O included)
//! and a projection behind an `RwLock` that a writer takes only to apply a record it has
//! written, so readers never see half of a mutation and writers of different sessions never
//! wait for each other's I/O. Lock order: a session's writer before the map or the session's
//! projection; the map lock is never held while waiting for a writer, and a projection lock is
//! never held while waiting for anything but another projection lock. The tombstones mutex
//! and the activity index's mutex come after a writer and the map, and are held only to read
//! or change themselves (and, for a sweep or a page, to read projections). The readers mutex
//! is held through a retirement's file operations, an erasure's log included (the checkpoint
//! state's mutex, then the erasure log's, each alone); the checkpoint state's mutex is held
//! through file operations (the marker, removing or putting a checkpoint in place) and, once a
//! checkpoint is in place, while the sessions it moved are pointed at it (each view's write
//! lock, then the residence mutex, which only tries views); nothing holding a view or the
//! residence mutex waits for it. A checkpoint being taken holds each session's locks in turn,
//! never two; the compactor
//! looks at the tombstones mutex while it holds the background state's. An anchor holds the
//! anchoring mutex while it reads every session's point (writers, one at a time) and then
//! flushes; a flush holds the flushing mutex through its syncs and takes only the unsynced
//! lists' mutex inside it. No writer takes either.

mod activity;
mod appender;
mod archive;
mod backend;
mod background;
mod checkpointing;
mod commit;
mod compact;
mod erase;
mod first_touch;
mod fork;
mod once;
mod open;
mod query;
mod replaced;
#[cfg(feature = "replication")]
mod replicating;
mod reservation;
mod residence;
mod retention;
mod retire;
mod root;
mod searcher;
mod searching;
mod session_map;
mod tombstones;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use chrono::Utc;
use parking_lot::{Mutex, RwLock};

use crate::backend::{SessionMetadata, SessionState, TimestampedMessage};
use crate::claim::Claim;
use crate::erasures::ErasureLog;
use crate::error::{Error, Result};
use crate::event::EventFilter;
use crate::feed::{Feed, Subscription};
use crate::fs::{FileHandle, FileSystem, LockGuard, StdFs};
use crate::health::{Health, Monitor, Swallowed};
use crate::history::{self, Events, SessionAt, VerifyReport};
use crate::index::query::{MessageHit, MessageQuery};
use crate::keyring::Keyring;
use crate::location::{MessageLoc, BATCH_MESSAGES_MAX};
use crate::message::ChatMessage;
use crate::options::Options;
use crate::projection::{SessionView, RUNNING_STATE};
use crate::record::{BatchMessage, Event};
use crate::report::{RecoveryReport, Reports};
use crate::segment::{key_len_ok, MAX_KEY_BYTES};

use appender::{Unsynced, Writer};
use background::Background;
use commit::Decision;
use query::timestamped;
#[cfg(feature = "replication")]
pub use replicating::{restore, restore_with_progress};
use residence::{Pinned, Residence};
pub use retention::RetentionReport;
use retire::{ReaderGuard, Readers};
use session_map::SessionMap;
use tombstones::Tombstones;

/// A session's size on disk, from [`crate::LogStore::stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStats {
    /// The session key.
    pub key: String,
    /// Live messages.
    pub messages: usize,
    /// Bytes of the records that hold the live messages.
    pub live_bytes: u64,
    /// Bytes of records a compaction would drop (superseded messages, metadata changes).
    pub dead_bytes: u64,
}

/// Results `search` returns when the query gives no limit.
pub const SEARCH_LIMIT_DEFAULT: usize = 50;

/// An event-sourced store of agent sessions in one folder. See the crate documentation.
///
/// `LogStore` is `Send + Sync`; share it with an `Arc`. Dropping it stops the background
/// threads (the flusher syncs what it still holds) and releases the folder's lock;
/// [`crate::LogStore::close`] does the same and reports a failed final sync.
pub struct LogStore {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
    /// A shutdown (`close`, or the drop) finished: the drop after `close` has nothing to do.
    shut: bool,
}

struct Inner {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    options: Options,
    sessions: RwLock<SessionMap>,
    /// Sequence numbers, store-wide, and the subscribers of committed events.
    feed: Feed,
    /// The next new session's id (its segment files' prefix).
    next_id: AtomicU64,
    /// Set by a failed write or sync: every later write is refused.
    poisoned: AtomicBool,
    /// Sequence numbers below this one are reserved durably (the `LOCK` floor); see
    /// `reservation.rs`.
    reserved: AtomicU64,
    /// Held while the floor is raised.
    reserving: Mutex<()>,
    /// Held while an anchor is appended (`root.rs`).
    anchoring: Mutex<root::Anchoring>,
    /// The first sequence number this run could hand out: a record of a number at or above it
    /// found in a session's files at its first touch was not written for that session.
    first_seq: u64,
    /// The sessions whose end open's findings (or a session's replay at its first touch,
    /// `first_touch.rs`) explain (damage, a fork cut short, a torn anchored record): no
    /// rollback to report for them, and the next anchor records where those behind their
    /// anchor now end.
    explained: Mutex<std::collections::HashSet<u64>>,
    /// Errors swallowed where no caller could be told.
    monitor: Monitor,
    /// Append handles cached in writers, at most `options.open_files_max`.
    open_files: AtomicUsize,
    /// What `Interval` and `Never` writes left unsynced.
    unsynced: Mutex<Unsynced>,
    /// A handle on the lock file, opened at open, through which the whole file system is
    /// synced: it hears of every write-back failure since open, even one another process's
    /// `syncfs` reported first. `None` in a read-only store.
    file_system: Option<Box<dyn FileHandle>>,
    /// Held by a flush from taking the unsynced lists until their syncs are done, so a flush
    /// returns only once every write before it is durable, even one another flush took; true
    /// once a flush failed (no later one can say the writes it took are on disk).
    flushing: Mutex<bool>,
    /// Work for the background threads, and their stop signal.
    background: Background,
    /// What open found, and what the first read or write of a session found since.
    report: Reports,
    /// What the store knows of the checkpoint on disk (`checkpointing.rs`).
    checkpoint: Mutex<checkpointing::CheckpointState>,
    /// The checkpoint open read still describes the segments exactly: nothing changed since.
    /// Read without a lock by every write; once false, false for good, set so under
    /// `checkpoint`.
    checkpoint_exact: AtomicBool,
    /// Held while a checkpoint is written: one at a time.
    checkpointing: Mutex<()>,
    /// Bytes written to segments since the last checkpoint.
    written_since_checkpoint: AtomicU64,
    /// Opened with `open_read_only`: no lock, no background work, every write refused.
    read_only: bool,
    /// Live sessions, for `Options::sessions_max`.
    live_sessions: AtomicUsize,
    /// Some session in the store may be a fork (one was at open, or was made or replayed
    /// since): until then, looking for forks before a reclaim or an erasure need not walk
    /// every session. Never set back.
    forks_seen: AtomicBool,
    /// Held for writing by a fork while it is made, and for reading by whatever removes a
    /// session's bytes (a reclaim, `erase_session`, a compaction that erases cleared
    /// messages) from before it looks for forks until its files are gone: a fork made in
    /// between would link segments about to be removed and keep their bytes under its names.
    /// Always taken before any session's writer lock; `read_recursive` where the thread may
    /// hold it already (a delete's commit, a tombstone's reclaim), `read` (which lets a
    /// waiting fork go first) where it cannot.
    fork_gate: RwLock<()>,
    /// See [`Inner::traces_in_folder`]: by session id, the names of its traces in the
    /// store's folder; `None` until the folder is listed for them, and again whenever new
    /// ones may have been made.
    traces: Mutex<Option<std::collections::HashMap<u64, Vec<String>>>>,
    /// Live sessions by last activity, most recent first, ties by key: what `list_page`
    /// walks. Built on first use (so open does not pay for it), kept up to date after.
    activity: Mutex<Option<activity::ActivityIndex>>,
    /// Deleted sessions that `restore_session` can still bring back, by key (the latest
    /// delete of each), until `tombstone_retention` has passed.
    tombstones: Mutex<Tombstones>,
    /// Open event readers, and the segments retired while they were open: those are
    /// removed (or archived) once the last reader is gone, so a reader never finds a file
    /// gone from under it.
    readers: Mutex<Readers>,
    /// Held for the store's lifetime; dropping it releases the folder. `None` when read-only.
    _lock: Option<Box<dyn LockGuard>>,
    /// An encrypted store's keys (`Options::encryption`).
    keys: Option<Keyring>,
    /// The erasure log, as open left it and every erasure since; the lock orders its appends.
    erasure_log: Mutex<ErasureLog>,
    /// The sessions whose locations were read back from the checkpoint, for the memory
    /// budget (`residence.rs`).
    residence: Mutex<Residence>,
    /// The search index, once a query loaded it (`searching.rs`).
    search: Mutex<Option<searcher::Searcher>>,
    /// Changes to sessions' views (a write applied, a compaction, a fork, a replay at first
    /// touch): the index compares sessions with what it holds only when this moved.
    changes: AtomicU64,
    /// The search index is in use (its files were there at open, or a query loaded it): the
    /// checkpointer's thread keeps it caught up (`searching.rs`).
    index_in_use: AtomicBool,
}

/// One session: its writer and its projection.
struct Slot {
    session_id: u64,
    key: String,
    /// What the checkpoint open read claims of the session's files, until the first read or
    /// write of the session checks it (`first_touch.rs`). Taken before `writer` and `view`.
    claim: Mutex<Option<Box<Claim>>>,
    writer: Mutex<Writer>,
    view: RwLock<SessionView>,
    /// Calls using the session's message locations: while there are any, they stay in
    /// memory (`residence.rs`).
    pins: AtomicUsize,
}

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

// The message below names the limit.
const _: () = assert!(MAX_KEY_BYTES == 1024);

/// Checks a key that may create a session.
fn check_key(key: &str) -> Result<()> {
    let reason = if key_len_ok(key.len()) {
        return Ok(());
    } else if key.is_empty() {
        "a key must not be empty"
    } else {
        "a key must be at most 1024 bytes"
    };
    Err(Error::InvalidKey {
        len: key.len(),
        reason,
    })
}

/// The locations of every message a session still holds: live ones and those kept for
/// `undo_clear`.
fn every_loc(view: &SessionView) -> Vec<MessageLoc> {
    view.messages.iter().chain(&view.cleared).copied().collect()
}

/// The messages of a batch as its record holds them; `None` for an empty batch (which writes
/// nothing), [`Error::BatchTooLarge`] beyond [`BATCH_MESSAGES_MAX`].
fn batch(messages: &[ChatMessage]) -> Result<Option<Vec<BatchMessage<'_>>>> {
    if messages.len() > BATCH_MESSAGES_MAX {
        return Err(Error::BatchTooLarge {
            len: messages.len(),
            max: BATCH_MESSAGES_MAX,
        });
    }
    Ok((!messages.is_empty()).then(|| {
        messages
            .iter()
            .map(|m| BatchMessage {
                role: &m.role,
                content: &m.content,
            })
            .collect()
    }))
}

fn trimmed(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

impl LogStore {
    /// Opens (creating it if missing) the store in `dir` with default [`Options`].
    pub fn open(dir: impl AsRef<Path>) -> Result<LogStore> {
        LogStore::open_with(dir, Options::default())
    }

    /// Opens (creating it if missing) the store in `dir`.
    ///
    /// Takes the folder's lock ([`Error::Locked`] if another store holds it), replays every
    /// segment and repairs what a crash left; [`crate::LogStore::recovery_report`] says what it
    /// found.
    pub fn open_with(dir: impl AsRef<Path>, options: Options) -> Result<LogStore> {
        LogStore::open_with_fs(dir, options, Arc::new(StdFs))
    }

    /// Opens the store in `dir` through another file system (see [`crate::fs`]): the seam
    /// the crash and fault tests use.
    pub fn open_with_fs(
        dir: impl AsRef<Path>,
        options: Options,
        fs: Arc<dyn FileSystem>,
    ) -> Result<LogStore> {
        LogStore::open_mode(dir.as_ref(), options, fs, false)
    }

    /// Opens the store in `dir` to read it, possibly while another process writes it: takes
    /// no lock and never changes a byte. Every segment is replayed and checked; what open
    /// would repair (a torn tail, damage) is reported in [`crate::LogStore::recovery_report`] and
    /// left
    /// as it is, and reading stops at the last complete record. Every write fails with
    /// [`Error::ReadOnly`]. The view is the folder as it was at open, except a session whose
    /// files the writer replaced since (a compaction, a delete, an erasure): a read that finds
    /// them gone reads the session again from its files. A file removed while open reads the
    /// folder makes open read it again (`docs/RECOVERY.md`).
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<LogStore> {
        LogStore::open_read_only_with_fs(dir, Arc::new(StdFs))
    }

    /// [`crate::LogStore::open_read_only`] through another file system.
    pub fn open_read_only_with_fs(
        dir: impl AsRef<Path>,
        fs: Arc<dyn FileSystem>,
    ) -> Result<LogStore> {
        LogStore::read_only_mode(dir.as_ref(), Options::default(), fs)
    }

    /// [`crate::LogStore::open_read_only`] with options: those that matter to a reader are
    /// [`Options::encryption`] (the key of an encrypted store) and the limits.
    pub fn open_read_only_with(dir: impl AsRef<Path>, options: Options) -> Result<LogStore> {
        LogStore::read_only_mode(dir.as_ref(), options, Arc::new(StdFs))
    }

    /// What open found: torn tails cut off, damage quarantined, unknown files left alone.
    ///
    /// After an open from the checkpoint, a session's files are checked against it the first
    /// time the session is read or written, not at open (so open costs no work per file): what
    /// that finds ([`crate::Finding::ChangedWhileClosed`], and the damage a replay of the
    /// session finds) is added here then. A reference taken earlier keeps the report as it was.
    pub fn recovery_report(&self) -> &RecoveryReport {
        self.inner.report.newest()
    }

    /// The store's folder.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// The last `n` messages of a session (fewer if it has fewer; `[]` if it is missing), read
    /// at a cost that depends on `n`, not on the session's length. Returns `[]` on a read
    /// error; [`crate::LogStore::read_tail`] reports it instead.
    pub fn load_tail(&self, session_key: &str, n: usize) -> Vec<ChatMessage> {
        let tail = |len: usize| len.saturating_sub(n)..len;
        let read = self.inner.read(session_key, tail, query::message);
        self.inner
            .monitor
            .note(Swallowed::Read, "load_tail", Some(session_key), read)
            .unwrap_or_default()
    }

    /// Errors the store met where it could not return them (a failed read behind `load`, a
    /// background compaction that failed), and whether a failed write stopped its writes.
    /// Each such error is also logged as a `tracing` event (target `sessionlog`, level WARN).
    pub fn health(&self) -> Health {
        Health {
            sessions_cold: self.inner.sessions.read().cold_count() as u64,
            ..self
                .inner
                .monitor
                .health(self.inner.poisoned.load(Ordering::SeqCst))
        }
    }

    /// Like [`crate::SessionBackend::load_with_timestamps`], but a read error (a file removed or
    /// damaged behind the store's back) is returned instead of an empty history.
    pub fn read_messages(&self, session_key: &str) -> Result<Vec<TimestampedMessage>> {
        self.inner.read(session_key, |len| 0..len, timestamped)
    }

    /// Like [`crate::LogStore::load_tail`], with times, and with read errors returned.
    pub fn read_tail(&self, session_key: &str, n: usize) -> Result<Vec<TimestampedMessage>> {
        self.inner
            .read(session_key, |len| len.saturating_sub(n)..len, timestamped)
    }

    /// Rewrites a session's segments into one that holds only its live state; every read
    /// returns the same afterwards. `Ok(())` for a missing session.
    pub fn compact_session(&self, session_key: &str) -> Result<()> {
        self.inner.compact(session_key)
    }

    /// Appends a message stamped with the given time instead of now: for importing histories
    /// kept elsewhere. Otherwise exactly [`crate::SessionBackend::append`] (the session's
    /// `last_activity` becomes that time).
    pub fn append_at(
        &self,
        session_key: &str,
        message: &ChatMessage,
        at: chrono::DateTime<Utc>,
    ) -> Result<()> {
        let event = Event::Append {
            role: &message.role,
            content: &message.content,
        };
        let at = Some(at.timestamp_micros());
        let write = |_: Option<&SessionView>| Decision::Write(());
        (self.inner).commit_at(session_key, true, &event, at, write, &mut Vec::new())
    }

    /// Appends several messages as one record: after a crash the session holds all of them or
    /// none. This is how an agent stores a tool call with its results, or a question with its
    /// answer, so that no crash leaves half a turn that a model provider would reject. An empty
    /// slice writes nothing. At most [`crate::BATCH_MESSAGES_MAX`] messages
    /// ([`Error::BatchTooLarge`]), and the whole record at most
    /// [`Options::record_bytes_max`] ([`Error::RecordTooLarge`]).
    pub fn append_batch(&self, session_key: &str, messages: &[ChatMessage]) -> Result<()> {
        let Some(messages) = batch(messages)? else {
            return Ok(());
        };
        let event = Event::AppendBatch { messages };
        self.inner
            .commit(session_key, true, &event, |_| Decision::Write(()))
    }

    /// Puts back the messages the last [`crate::SessionBackend::clear_messages`] of the session
    /// removed, in front of any appended since, and returns how many. `Ok(0)` when there is
    /// nothing to undo: no clear, already undone, or older than
    /// [`Options::tombstone_retention`] (then it is gone for good).
    pub fn undo_clear(&self, session_key: &str) -> Result<usize> {
        let retention = self.inner.options.tombstone_retention;
        self.inner
            .commit(session_key, false, &Event::UndoClear, |view| match view {
                Some(v) if !v.cleared.is_empty() && v.clear_undoable(retention) => {
                    Decision::Write(v.cleared.len())
                }
                _ => Decision::Skip(0),
            })
    }

    /// Erases the session `key` at once, whatever [`Options::tombstone_retention`] says: its
    /// live session (after writing its delete record), its restorable tombstone, and every
    /// archived, quarantined or side file of its sessions, durably. Every live fork in the
    /// store is compacted first (their segments shared by hard links are removed, never
    /// archived), so that forks keep their own copy and nothing of the session's remains in a
    /// shared file; deleted forks of this session are erased with it. Returns the files it
    /// removed. The session can no longer be
    /// restored.
    pub fn erase_session(&self, session_key: &str) -> Result<Vec<PathBuf>> {
        self.inner.erase(session_key)
    }

    /// Brings back the session the last [`crate::SessionBackend::delete_session`] (or
    /// `cleanup_stale`) of this key removed, with its messages and metadata as they were.
    /// `Ok(false)` when there is nothing to restore: never deleted, or deleted longer ago than
    /// [`Options::tombstone_retention`] (then it is gone for good).
    /// [`Error::SessionExists`] when the key was used again since the delete.
    pub fn restore_session(&self, session_key: &str) -> Result<bool> {
        self.inner.restore(session_key)
    }

    /// Forks `source` into a new session `target` whose history is the source's as it was
    /// right after event `at_seq` (or now), sharing the source's bytes instead of copying
    /// them: the target's first segments are hard links to the source's, so a fork of a long
    /// session writes a few hundred bytes. The two then diverge freely; compacting or deleting
    /// the source never breaks the fork (the shared bytes stay while either names them).
    /// The fork's metadata is the source's then; [`crate::LogStore::fork_origin`] names its source.
    ///
    /// Fails with [`Error::SessionExists`] if `target` exists, [`Error::SessionNotFound`] if
    /// `source` does not (or did not at `at_seq`), and [`Error::HistoryCompacted`] if the
    /// source's state at `at_seq` was compacted away. The fork is seen (by `session_exists`,
    /// listings, `load`) only once its first record is written: one that fails leaves no
    /// session behind.
    pub fn fork_session(&self, source: &str, target: &str, at_seq: Option<u64>) -> Result<()> {
        self.inner.fork(source, target, at_seq)
    }

    /// The session `key` was forked from, and the source's last event it shares; `None` for
    /// a session that is not a fork (or does not exist).
    pub fn fork_origin(&self, session_key: &str) -> Option<(String, u64)> {
        self.inner
            .with_view(session_key, |view| view.fork_origin.clone())
            .flatten()
    }

    /// Appends a message only if the session exists, in one step: `Ok(false)`, writing nothing,
    /// when it does not. Checking [`crate::SessionBackend::session_exists`] and then appending
    /// leaves
    /// a window in which a delete lets the append bring the session back; this does not.
    pub fn append_if_exists(&self, session_key: &str, message: &ChatMessage) -> Result<bool> {
        let event = Event::Append {
            role: &message.role,
            content: &message.content,
        };
        self.inner
            .commit(session_key, false, &event, |view| match view {
                Some(_) => Decision::Write(true),
                None => Decision::Skip(false),
            })
    }

    /// How many sessions are in the map (see [`crate::testing::sessions_in_memory`]).
    #[cfg(feature = "fault-injection")]
    pub(crate) fn sessions_in_memory(&self) -> usize {
        self.inner.sessions.read().len()
    }

    /// Appends a message only if the session holds exactly `expected_len` messages (0 for a
    /// missing session, which the append then creates): optimistic concurrency for writers
    /// that read a history, think, and append. Otherwise fails with [`Error::Conflict`] and
    /// writes nothing.
    pub fn append_expected(
        &self,
        session_key: &str,
        message: &ChatMessage,
        expected_len: usize,
    ) -> Result<()> {
        let event = Event::Append {
            role: &message.role,
            content: &message.content,
        };
        self.inner.commit(session_key, true, &event, |view| {
            let actual = view.map_or(0, |v| v.messages.len());
            if actual == expected_len {
                Decision::Write(Ok(()))
            } else {
                Decision::Skip(Err(Error::Conflict {
                    expected: expected_len,
                    actual,
                }))
            }
        })?
    }

    /// Every event the log holds that `filter` admits, in commit order (by sequence number),
    /// each with its time, session and what it did, including what an `update_last` or
    /// `remove_last` replaced.
    ///
    /// The events are those committed when this is called; later writes are not returned.
    /// The log is read as the iterator advances: memory depends on the number of sessions
    /// and their live messages, not on the log's size. A session's history starts at its
    /// first record, or, where a compaction replaced it without
    /// [`Options::keep_history`], at that compaction ([`crate::EventKind::Restated`] messages, then
    /// [`crate::EventKind::Compaction`]). Deleted sessions' events remain only with `keep_history`.
    /// While the iterator lives, compaction leaves the files it replaces in place; they are
    /// retired when it is dropped.
    ///
    /// A damaged record ends the iteration with its error (see [`crate::LogStore::verify`]).
    pub fn events(&self, filter: EventFilter) -> Result<Events> {
        let guard = self.reader_guard();
        // Below every number still being written: those records may not be on disk yet.
        let cut = self.inner.feed.committed_below().saturating_sub(1);
        self.events_from(filter, cut, guard)
    }

    fn events_from(&self, filter: EventFilter, cut: u64, guard: ReaderGuard) -> Result<Events> {
        let inner = &self.inner;
        let keys = inner.keys.as_ref();
        let mut events = Events::new(Arc::clone(&inner.fs), &inner.dir, filter, cut, keys)?;
        events.hold(Box::new(guard));
        Ok(events)
    }

    /// The session `key` as it was right after event `seq` (whichever session it belonged
    /// to): its metadata, state and messages. `Ok(None)` if the session did not exist then
    /// (not yet created, or deleted). Fails with [`Error::HistoryCompacted`] when that state
    /// is no longer in the log: a compaction without [`Options::keep_history`] replaced it.
    pub fn load_at(&self, session_key: &str, seq: u64) -> Result<Option<SessionAt>> {
        let _guard = self.reader_guard();
        history::load_at(
            Arc::clone(&self.inner.fs),
            &self.inner.dir,
            session_key,
            seq,
            self.inner.keys.as_ref(),
        )
    }

    /// Reads every record of every session's history (the folder's segments and, with
    /// [`Options::keep_history`], `archive/`), checking each checksum, each link of the hash
    /// chain (`docs/FORMAT.md`) and that each event can follow the ones before it, and reports
    /// each problem with its session, file and offset.
    /// Writes nothing itself (a compaction that ran meanwhile retires the segments it
    /// replaced when this returns). `Err` only when the folder cannot be listed.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.verify_with_progress(|_, _| {})
    }

    /// [`crate::LogStore::verify`], calling `progress(sessions_done, sessions_total)` as it goes
    /// (for
    /// a progress bar).
    pub fn verify_with_progress(&self, progress: impl FnMut(usize, usize)) -> Result<VerifyReport> {
        // Each session is checked against its anchor as the store holds it: the files of
        // those not read or written since open are checked against the checkpoint first.
        let unchecked = if self.inner.read_only {
            Vec::new()
        } else {
            self.inner.settle_all()?
        };
        let _guard = self.reader_guard();
        let keys = self.inner.keys.as_ref();
        let mut report = history::verify(
            Arc::clone(&self.inner.fs),
            &self.inner.dir,
            keys,
            self.inner.read_only,
            progress,
        )?;
        report
            .problems
            .extend(unchecked.into_iter().map(|(slot, e)| history::Problem {
                session: Some(slot.key.clone()),
                path: self.inner.dir.clone(),
                offset: 0,
                reason: format!("its files could not be checked against the checkpoint: {e}"),
            }));
        let behind = self.anchor_problems(&report.problems)?;
        report.problems.extend(behind);
        Ok(report)
    }

    /// Every event after `after_seq` (0: from the start), then every new event as it commits,
    /// each exactly once and in sequence-number order, with [`crate::Delivery::CaughtUp`] between
    /// the events read from the log and the live ones: what a live dashboard needs.
    ///
    /// Events committed before this call come from the log, as [`crate::LogStore::events`] returns
    /// them; later ones are handed over by the writers that commit them. A write that fails
    /// produces no event live (if its bytes reached the disk before the failure, a later
    /// catch-up may still read it: the store is poisoned then, and a reopen decides). Live
    /// events wait for every lower sequence number to commit, so a long compaction delays
    /// them. An event whose description cannot be built is delivered as
    /// [`crate::Delivery::Missed`].
    pub fn subscribe(&self, after_seq: u64) -> Result<Subscription> {
        // The guard comes first: no segment may be retired between the registration and the
        // catch-up's listing of the folder, or events in between would be missed.
        let guard = self.reader_guard();
        let (live_from, live) = self.inner.feed.register(after_seq.saturating_add(1));
        let filter = EventFilter {
            from_seq: Some(after_seq.saturating_add(1)),
            to_seq: Some(live_from.saturating_sub(1)),
            ..EventFilter::all()
        };
        let cut = live_from.saturating_sub(1);
        let catch_up = self.events_from(filter, cut, guard)?;
        Ok(Subscription::new(catch_up, live_from, live))
    }

    /// Messages that hold the words of `query`, best match first (BM25), at most
    /// `query.limit`: each with its session, its position in `load`, the message and a
    /// snippet. Words are OR-ed; a `"quoted phrase"` (or a word of several tokens, such as
    /// `new-york`) must appear as written. Archived and deleted sessions are left out, as
    /// from the trait's `search`.
    ///
    /// Answered from the search index (`index/` in the store's folder), which first catches
    /// up with every write acknowledged before the call: only what changed since the last
    /// query is read. A damaged index is rebuilt from the log and reported
    /// ([`Finding::IndexRebuilt`](crate::Finding)); its answers are never used.
    pub fn search_messages(&self, query: &MessageQuery) -> Result<Vec<MessageHit>> {
        self.inner.search_messages(query)
    }

    /// What [`crate::SessionBackend::search`] finds for `keyword` (at most `limit` sessions),
    /// with read errors returned instead of left out.
    pub fn search_sessions(&self, keyword: &str, limit: usize) -> Result<Vec<SessionMetadata>> {
        self.inner.search_sessions(keyword, limit)
    }

    /// Builds the search index again from every session, replacing its files (what
    /// `sessionlog reindex` does). Never needed for correct answers: the index catches up by
    /// itself and is rebuilt when damaged; this gives back the space of an index grown
    /// through many changes at once.
    pub fn reindex(&self) -> Result<()> {
        self.inner.rebuild_index()
    }

    /// The highest sequence number handed out so far (0 for an empty store).
    pub fn last_seq(&self) -> u64 {
        self.inner.feed.next_seq().saturating_sub(1)
    }

    fn reader_guard(&self) -> ReaderGuard {
        self.inner.readers.lock().open += 1;
        ReaderGuard(Arc::downgrade(&self.inner))
    }

    /// Applies [`Options::retention`] now: deletes the sessions inactive for longer than
    /// `max_age`, drops the oldest messages beyond `max_messages`, and brings the store under
    /// `disk_budget`; never touches a `running` session. Each removal is a `Trim` or
    /// `Expire` event in the log, naming its rule ([`crate::EventKind::Trimmed`],
    /// [`crate::EventKind::Expired`]), so a reader of the log can tell retention from loss.
    /// The background does the same every [`crate::Retention::check_every`] (with
    /// `auto_compact`).
    pub fn apply_retention(&self) -> Result<RetentionReport> {
        self.inner.apply_retention()
    }

    /// Bytes on disk of a session's records that a compaction would drop (0 for a missing
    /// session).
    pub fn dead_bytes(&self, session_key: &str) -> u64 {
        self.inner
            .with_view(session_key, SessionView::dead_bytes)
            .unwrap_or(0)
    }

    /// Syncs every write not yet on disk (useful with [`crate::Durability::Never`] or
    /// [`crate::Durability::Interval`]); a failure poisons the store.
    pub fn sync(&self) -> Result<()> {
        if self.inner.read_only {
            return Ok(());
        }
        self.inner.flush()
    }

    /// Writes a checkpoint of the store now, as the background thread does every
    /// [`Options::checkpoint_bytes`] written: everything written before the call is synced,
    /// and an open after a crash replays only the sessions written after it (the others come
    /// from the checkpoint). After a full checkpoint, it is a delta of the sessions written
    /// since the last one (see `docs/FORMAT.md`, "Incremental checkpoints"), so that it costs
    /// what changed. Fails with [`Error::ReadOnly`] in a read-only store.
    pub fn checkpoint(&self) -> Result<()> {
        self.inner.write_checkpoint(true).map(drop)
    }

    /// Stops the background threads, syncs what is still unsynced, writes the checkpoint that
    /// lets the next open skip the replay, and releases the folder.
    pub fn close(mut self) -> Result<()> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<()> {
        if self.shut {
            return Ok(());
        }
        let result = self.shut_down_once();
        // A failed shutdown is tried again by the drop (it returns `Poisoned` at once if a
        // failed write stopped the store).
        self.shut = result.is_ok();
        result
    }

    fn shut_down_once(&mut self) -> Result<()> {
        {
            let mut state = self.inner.background.state.lock();
            state.stop = true;
            self.inner.background.wake.notify_all();
            self.inner.background.checkpoint_due.notify_all();
            #[cfg(feature = "replication")]
            self.inner.background.replicate_due.notify_all();
        }
        for thread in self.threads.drain(..) {
            // A panicked background thread has nothing left to report here.
            let _ = thread.join();
        }
        if self.inner.read_only {
            return Ok(()); // nothing was written
        }
        if self.inner.poisoned.load(Ordering::SeqCst) {
            return Err(Error::Poisoned);
        }
        // The search index's unsaved part, so the next process need not index it again.
        // Derived data: a failure costs the next query a catch-up, never the close.
        let saved = self.inner.save_index();
        let monitor = &self.inner.monitor;
        monitor.note(
            Swallowed::Background,
            "saving the search index",
            None,
            saved,
        );
        if self.inner.checkpoint_exact.load(Ordering::SeqCst) {
            // Nothing changed since open: the checkpoint still holds. A folder open had to
            // list is stamped, so that the next open need not (it can fail alone).
            let stamped = self.inner.stamp_unchanged();
            (self.inner.monitor).note(Swallowed::Background, "stamping the folder", None, stamped);
            return Ok(());
        }
        // Segments retired while readers were open go now: the checkpoint must not list them
        // (a reader that outlives the store may then fail to read them).
        let deferred = std::mem::take(&mut self.inner.readers.lock().deferred);
        self.inner.retire_now(&deferred)?;
        // Everything written is made durable, then described in a checkpoint that lets the
        // next open skip the replay.
        self.inner.flush()?;
        if self.inner.reserved.load(Ordering::SeqCst) > 0 {
            // No number is handed out any more: the floor comes down to the next one, so that
            // the next open finds no gap (the numbers reserved past it were never used).
            // Synced: a floor above the records after a clean close would log a gap.
            // A failure stops the store: the drop would close again, and a sync retried after
            // a failed one can report success for what the kernel dropped.
            let floor = crate::layout::write_seq_floor(
                &*self.inner.fs,
                &self.inner.dir,
                self.inner.feed.next_seq(),
            );
            self.inner.poison(floor)?;
        }
        // Where every session has reached, kept outside its own files (`root.rs`).
        self.inner.anchor()?;
        if self.inner.write_checkpoint(false)? {
            // Spares the next open a listing of the folder; it can fail alone.
            let stamped = self.inner.stamp_folder();
            self.inner
                .monitor
                .note(Swallowed::Background, "stamping the folder", None, stamped);
        }
        Ok(())
    }
}

impl Drop for LogStore {
    fn drop(&mut self) {
        // A failed final sync poisons the store, which is being dropped anyway; `close`
        // reports the error to callers who need it.
        let _ = self.shut_down();
    }
}

impl Inner {
    /// The session under `key`, its files checked against the checkpoint if this is their
    /// first read or write since open (`first_touch.rs`), its message locations in memory
    /// and kept there while the call holds it (`residence.rs`): for anything that reads or
    /// writes the session's bytes or locations.
    fn slot(&self, key: &str) -> Result<Option<Pinned>> {
        let Some(slot) = self.settled(key)? else {
            return Ok(None);
        };
        let slot = Pinned::new(slot);
        self.unpark(&slot)?;
        Ok(Some(slot))
    }

    /// The session under `key`, its files checked against the checkpoint if this is their
    /// first read or write since open; its locations may be parked: for its metadata.
    fn settled(&self, key: &str) -> Result<Option<Arc<Slot>>> {
        let Some(slot) = self.lookup(key)? else {
            return Ok(None);
        };
        if self.settle_claim(&slot)? {
            Ok(Some(slot))
        } else {
            Ok(None) // nothing of it was sound: gone from the map
        }
    }

    /// A new session's slot under `key` (or the one made meanwhile), pinned.
    fn create_slot(&self, key: &str) -> Result<Pinned> {
        Ok(Pinned::new(self.slot_or_new(key)?))
    }

    /// `f` of a live session's view, its files checked first if this is the session's first
    /// touch since open. A check that could not be made (the store stopped by a failed
    /// repair, a file that cannot be examined) leaves the projection's answer, what the store
    /// itself last wrote; the check is made again at the next touch.
    fn with_view<T>(&self, key: &str, f: impl FnOnce(&SessionView) -> T) -> Option<T> {
        let slot = match self.settled(key) {
            Ok(slot) => slot?,
            Err(_) => self.lookup(key).ok()??,
        };
        let view = slot.view.read();
        view.is_live().then(|| f(&view))
    }

    fn running(&self) -> Vec<(SessionMetadata, SessionState)> {
        self.live_views(|view| {
            (view.state == RUNNING_STATE).then(|| (view.metadata(), view.session_state()))
        })
    }
}

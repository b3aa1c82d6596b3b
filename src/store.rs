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
//! is held through a retirement's file operations and nests no other lock; the compactor
//! looks at the tombstones mutex while it holds the background state's.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::{Bound, Range};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::Utc;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::backend::{
    SessionBackend, SessionContext, SessionMetadata, SessionQuery, SessionState, TimestampedMessage,
};
use crate::checkpoint;
use crate::cipher::{DataKey, SEAL_OVERHEAD};
use crate::compaction::{self, Generation, Retire};
use crate::erasures::Erasure;
use crate::error::{Error, Result};
use crate::feed::{Delivery, Feed, Subscription};
use crate::fs::{context, sync_dir, FileHandle, FileSystem, LockGuard, OpenMode, StdFs};
use crate::history::{self, EventFilter, EventKind, Events, LogEvent, SessionAt, VerifyReport};
use crate::keyring::{self, Keyring};
use crate::layout;
use crate::layout::LOCK_FILE;
use crate::listing::{self, ListQuery, Page, PAGE_LIMIT_DEFAULT};
use crate::location::{MessageLoc, RecordLoc, BATCH_MESSAGES_MAX};
use crate::message::ChatMessage;
use crate::options::{Durability, Options, RetentionRule};
use crate::projection::{to_time, within_retention, SessionView, RUNNING_STATE};
use crate::record::{
    begin_record, chain_start, encode_event, encode_frame, encode_record, record_hash, seal_record,
    BatchMessage, Event, Hash,
};
use crate::recovery::{self, Finding, RecoveryReport, ReplayedSession};
use crate::search::Matcher;
use crate::segment::{
    self, SegmentFiles, SegmentHeader, SegmentKind, StoredMessage, MAX_KEY_BYTES,
};

/// A session's size on disk, from [`LogStore::stats`].
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
/// [`LogStore::close`] does the same and reports a failed final sync.
pub struct LogStore {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
}

struct Inner {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    options: Options,
    sessions: RwLock<HashMap<String, Arc<Slot>>>,
    /// Sequence numbers, store-wide, and the subscribers of committed events.
    feed: Feed,
    /// The next new session's id (its segment files' prefix).
    next_id: AtomicU64,
    /// Set by a failed write or sync: every later write is refused.
    poisoned: AtomicBool,
    /// Append handles cached in writers, at most `options.open_files_max`.
    open_files: AtomicUsize,
    /// What `Interval` and `Never` writes left unsynced.
    unsynced: Mutex<Unsynced>,
    /// Work for the background threads, and their stop signal.
    background: Background,
    report: RecoveryReport,
    /// Open replayed the segments (rather than reading a checkpoint): what it read may be a
    /// crashed process's unsynced writes, so the checkpoint at close must sync every segment.
    replayed: bool,
    /// The checkpoint this store opened from is still on disk, describing the segments
    /// exactly; the first change to a segment removes it.
    checkpoint_on_disk: Mutex<bool>,
    /// Opened with `open_read_only`: no lock, no background work, every write refused.
    read_only: bool,
    /// Live sessions, for `Options::sessions_max`.
    live_sessions: AtomicUsize,
    /// Live sessions by last activity, most recent first, ties by key: what `list_page`
    /// walks. Built on first use (so open does not pay for it), kept up to date after.
    activity: Mutex<Option<ActivityIndex>>,
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
    erasure_log: Mutex<recovery::ErasureLog>,
}

/// One session: its writer and its projection.
struct Slot {
    session_id: u64,
    key: String,
    writer: Mutex<Writer>,
    view: RwLock<SessionView>,
}

/// Where a session's next record goes. Only the holder of the mutex writes to the session.
struct Writer {
    /// First segment in force (0: none yet).
    oldest: u32,
    /// Segment being appended to (0: none yet).
    newest: u32,
    /// Its length: the offset of the next record.
    newest_len: u64,
    /// Its header's length.
    header_len: u64,
    /// Cached handle to the newest segment.
    file: Option<Box<dyn FileHandle>>,
    /// The session was deleted and left the map: a writer holding a stale handle to it must
    /// look the key up again.
    retired: bool,
    /// The flush epoch and segment under which this session's newest segment was last
    /// listed as unsynced.
    listed: Option<(u64, u32)>,
    /// The hash of the session's last record: the `prev` of its next one.
    head: Hash,
    /// Its files were reclaimed: nothing may be written to it, or restored, again.
    reclaimed: bool,
    /// A fork shares the newest segment: the next record starts a new one.
    sealed: bool,
    /// The newest segment was checked for other names (a fork's links) since open.
    links_checked: bool,
    /// The format version of the newest segment. Records go only into a segment of this
    /// build's version, so the first write after opening an older store starts a new one.
    newest_version: u32,
}

impl Writer {
    /// Appends go to `number`, a generation just put in force in place of every segment
    /// before it.
    fn install_generation(&mut self, number: u32, generation: &Generation, version: u32) {
        self.oldest = number;
        self.newest = number;
        self.newest_len = generation.len;
        self.header_len = generation.header_len;
        self.head = generation.head;
        self.newest_version = version;
        self.sealed = false;
        self.links_checked = true;
    }

    fn empty(key: &str) -> Writer {
        Writer {
            oldest: 0,
            newest: 0,
            newest_len: 0,
            header_len: 0,
            file: None,
            retired: false,
            listed: None,
            head: chain_start(key),
            reclaimed: false,
            sealed: false,
            links_checked: false,
            newest_version: segment::FORMAT_VERSION,
        }
    }
}

/// Segments written to since the last flush, by (session id, segment number), and whether the
/// folder gained a segment. A flush takes the lists and starts a new epoch in one step, so a
/// write either lands in the taken list (and was complete before the flush syncs it) or is
/// listed again for the next flush.
#[derive(Default)]
struct Unsynced {
    epoch: u64,
    segments: Vec<(u64, u32)>,
    dir: bool,
}

/// What a fork shares of its source: the state, where in the source's segments it ends
/// (segment number, byte length), the hash of its last record, and its last sequence number.
struct Shared {
    view: SessionView,
    segment: u32,
    end: u64,
    head: Hash,
    seq: u64,
}

/// Live sessions ordered by (last activity, most recent first; key).
type ActivityIndex = BTreeMap<(Reverse<i64>, String), Arc<Slot>>;

/// Deleted sessions that can still be restored: the latest delete of each key, also ordered
/// by the time of the delete, so that a sweep looks only at the expired ones.
#[derive(Default)]
struct Tombstones {
    by_key: HashMap<String, (i64, Arc<Slot>)>,
    by_time: BTreeSet<(i64, String)>,
}

impl Tombstones {
    /// Makes `slot` the key's tombstone; returns the one it displaces.
    fn insert(&mut self, slot: Arc<Slot>, deleted_at: i64) -> Option<Arc<Slot>> {
        let key = slot.key.clone();
        let old = self.by_key.insert(key.clone(), (deleted_at, slot));
        if let Some((at, _)) = &old {
            self.by_time.remove(&(*at, key.clone()));
        }
        self.by_time.insert((deleted_at, key));
        old.map(|(_, slot)| slot)
    }

    fn get(&self, key: &str) -> Option<&Arc<Slot>> {
        self.by_key.get(key).map(|(_, slot)| slot)
    }

    /// Removes `slot` if it is still its key's tombstone.
    fn take(&mut self, slot: &Arc<Slot>) -> bool {
        match self.by_key.get(&slot.key) {
            Some((at, held)) if Arc::ptr_eq(held, slot) => {
                self.by_time.remove(&(*at, slot.key.clone()));
                self.by_key.remove(&slot.key);
                true
            }
            _ => false,
        }
    }

    /// Removes and returns the tombstones deleted before `cutoff` (µs since the epoch).
    fn take_older_than(&mut self, cutoff: i64) -> Vec<Arc<Slot>> {
        let mut out = Vec::new();
        while let Some((at, key)) = self.by_time.first().cloned() {
            if at >= cutoff {
                break;
            }
            self.by_time.pop_first();
            if let Some((_, slot)) = self.by_key.remove(&key) {
                out.push(slot);
            }
        }
        out
    }

    /// The tombstone deleted first.
    fn oldest(&self) -> Option<Arc<Slot>> {
        let (_, key) = self.by_time.first()?;
        self.get(key).cloned()
    }

    fn slots(&self) -> impl Iterator<Item = &Arc<Slot>> {
        self.by_key.values().map(|(_, slot)| slot)
    }

    fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// See [`Inner::readers`].
#[derive(Default)]
struct Readers {
    open: usize,
    /// `(session id, from, below)`: segments `from..below` of the session, no longer in force.
    deferred: Vec<Retirement>,
}

/// Files that go once no event reader is open.
#[derive(Debug, Clone, Copy)]
enum Retirement {
    /// Segments `from..below` of a session, retired as the options say (compaction).
    Replaced(u64, u32, u32),
    /// Every file of a deleted session past its undo window: its segments `from..below`, and
    /// its archived, quarantined and side files (erasure wins over history); in an encrypted
    /// store its data key first.
    Reclaimed(u64, u32, u32),
    /// The segments `from..below` a compaction replaced when it dropped cleared messages
    /// past their undo window, and the session's archived, quarantined and side files (the
    /// session lives on in the new generation, under the same key).
    Erased(u64, u32, u32),
    /// Segments `from..below` of a session, removed (never archived): a fork's links to a
    /// session being erased.
    Unlinked(u64, u32, u32),
}

/// Held by an event reader; its drop retires what was deferred while readers were open. It
/// does not keep the store open: once the store is closed it has nothing to do.
struct ReaderGuard(Weak<Inner>);

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        // Held through the retirement, so that a new reader waits for the folder to settle.
        let mut readers = inner.readers.lock();
        readers.open -= 1;
        if readers.open > 0 {
            return;
        }
        let deferred = std::mem::take(&mut readers.deferred);
        // A failure poisons the store (the next write reports it) and leaves the old
        // segments beside the newer generation or the delete record: open retires them.
        let _ = inner.retire_now(&deferred);
    }
}

/// What [`LogStore::apply_retention`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Sessions deleted, and by which rule.
    pub expired: Vec<(String, RetentionRule)>,
    /// Sessions whose oldest messages were dropped, and how many.
    pub trimmed: Vec<(String, usize)>,
    /// Restorable deleted sessions reclaimed for good to meet the disk budget.
    pub reclaimed: usize,
}

/// The queue of sessions to compact, and the signal that stops the background threads.
#[derive(Default)]
struct Background {
    state: Mutex<BackgroundState>,
    wake: Condvar,
}

#[derive(Default)]
struct BackgroundState {
    stop: bool,
    /// Sessions waiting for compaction, each at most once.
    queue: VecDeque<String>,
    queued: HashSet<String>,
    /// Compactions under way. A session leaves `queued` when its compaction starts, so writes
    /// made meanwhile can queue it again.
    running: usize,
}

enum Decision<R> {
    /// Write the record, then return the value.
    Write(R),
    /// Write nothing and return the value.
    Skip(R),
}

impl<R> Decision<R> {
    fn into_value(self) -> R {
        match self {
            Decision::Write(value) | Decision::Skip(value) => value,
        }
    }
}

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// Checks a key that may create a session.
fn check_key(key: &str) -> Result<()> {
    let reason = if key.is_empty() {
        "a key must not be empty"
    } else if key.len() > MAX_KEY_BYTES {
        "a key must be at most 1024 bytes"
    } else {
        return Ok(());
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

fn trimmed(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

fn retire_mode(options: &Options) -> Retire {
    if options.keep_history {
        Retire::Archive
    } else {
        Retire::Remove
    }
}

impl LogStore {
    /// Opens (creating it if missing) the store in `dir` with default [`Options`].
    pub fn open(dir: impl AsRef<Path>) -> Result<LogStore> {
        LogStore::open_with(dir, Options::default())
    }

    /// Opens (creating it if missing) the store in `dir`.
    ///
    /// Takes the folder's lock ([`Error::Locked`] if another store holds it), replays every
    /// segment and repairs what a crash left; [`LogStore::recovery_report`] says what it found.
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
    /// would repair (a torn tail, damage) is reported in [`LogStore::recovery_report`] and left
    /// as it is, and reading stops at the last complete record. Every write fails with
    /// [`Error::ReadOnly`]. The view is the folder as it was at open.
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<LogStore> {
        LogStore::open_read_only_with_fs(dir, Arc::new(StdFs))
    }

    /// [`LogStore::open_read_only`] through another file system.
    pub fn open_read_only_with_fs(
        dir: impl AsRef<Path>,
        fs: Arc<dyn FileSystem>,
    ) -> Result<LogStore> {
        LogStore::read_only_mode(dir.as_ref(), Options::default(), fs)
    }

    /// [`LogStore::open_read_only`] with options: those that matter to a reader are
    /// [`Options::encryption`] (the key of an encrypted store) and the limits.
    pub fn open_read_only_with(dir: impl AsRef<Path>, options: Options) -> Result<LogStore> {
        LogStore::read_only_mode(dir.as_ref(), options, Arc::new(StdFs))
    }

    fn read_only_mode(dir: &Path, options: Options, fs: Arc<dyn FileSystem>) -> Result<LogStore> {
        let options = Options {
            auto_compact: false,
            ..options
        };
        LogStore::open_mode(dir, options, fs, true)
    }

    fn open_mode(
        dir: &Path,
        options: Options,
        fs: Arc<dyn FileSystem>,
        read_only: bool,
    ) -> Result<LogStore> {
        options.validate()?;
        let dir = dir.to_path_buf();
        if !fs.is_dir(&dir) {
            if read_only {
                return Err(context("opening", &dir)(
                    std::io::ErrorKind::NotFound.into(),
                ));
            }
            fs.create_dir_all(&dir).map_err(context("creating", &dir))?;
            // The new folder's entry must be durable before anything in it is.
            sync_dir(&*fs, crate::fs::parent(&dir))?;
        }
        let mode = fs.folder_mode(&dir).map_err(context("examining", &dir))?;
        if mode & 0o022 != 0 && !options.allow_shared_folder {
            // Another user who may write to the folder could replace or remove segments.
            return Err(Error::InsecureFolder { path: dir, mode });
        }
        let lock = if read_only {
            None
        } else {
            let lock_path = dir.join(LOCK_FILE);
            // A lock held for a moment is waited for: a child process this process starts
            // holds a copy of the lock's descriptor between its fork and its exec, so a
            // store dropped and opened again meanwhile would find its own lock still held.
            let mut waited = Duration::ZERO;
            let lock = loop {
                match fs.lock(&lock_path) {
                    Ok(lock) => break lock,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if waited >= LOCK_WAIT_MAX {
                            return Err(Error::Locked {
                                path: lock_path.clone(),
                            });
                        }
                        std::thread::sleep(LOCK_RETRY_EVERY);
                        waited += LOCK_RETRY_EVERY;
                    }
                    Err(e) => return Err(context("locking", &lock_path)(e)),
                }
            };
            Some(lock)
        };
        let folder = recovery::list_folder(&*fs, &dir)?;
        let mut keys = open_keyring(&fs, &dir, &options, read_only, &folder.names)?;
        let mut report = RecoveryReport::default();
        let mut erased = recovery::ErasureLog::open(&*fs, &dir, &mut report)?;
        let from_checkpoint = if read_only {
            None // a reader checks every record
        } else {
            checkpoint::load(&*fs, &dir, &folder.names, &mut report, keys.as_ref())?
        };
        let replayed = match from_checkpoint {
            Some(mut from_checkpoint) => {
                report.from_checkpoint = true;
                // (Replay repairs the erasure log itself, once every header is read.)
                erased.repair(&*fs, &dir, &mut report)?;
                from_checkpoint.report = folder.report;
                from_checkpoint
            }
            None => recovery::replay(
                &*fs,
                &dir,
                folder,
                options.keep_history,
                !read_only,
                options.tombstone_retention,
                (keys.as_ref(), &mut erased),
            )?,
        };
        if let (Some(keys), false) = (keys.as_mut(), read_only) {
            // Every header was read and nothing sealed yet: the repairs below are the first
            // seals of this open.
            keys.start_writing()?;
        }
        let checkpoint_on_disk = report.from_checkpoint;
        if !checkpoint_on_disk && !read_only {
            // A stale or damaged checkpoint goes at once. One that was used stays until the
            // first change to the segments (see `Inner::forget_checkpoint`), so that a store
            // opened only to read neither pays for its removal nor rewrites it at close.
            checkpoint::remove(&*fs, &dir)?;
        }
        report.findings.extend(replayed.report.findings);
        // Erasures have sequence numbers too (the erasure log's).
        let mut next_seq = replayed.next_seq.max(erased.max_seq + 1);
        let mut replayed_sessions = replayed.sessions;
        let mut sessions: HashMap<String, Arc<Slot>> =
            HashMap::with_capacity(replayed_sessions.len());
        // Newest session first: when a power loss left two sessions with one key, the newer
        // one is the real one (a key gets a new session only after its old one is deleted).
        replayed_sessions.sort_by_key(|s| Reverse(s.session_id));
        for session in replayed_sessions {
            let twin = sessions.contains_key(&session.view.key);
            let slot = match (twin, session.damage.is_some(), read_only) {
                (false, false, _) => slot_from(session),
                (false, true, false) => repair(
                    (&*fs, &dir, keys.as_ref()),
                    session,
                    &mut next_seq,
                    &mut report,
                    options.tombstone_retention,
                )?,
                (false, true, true) => {
                    // Read-only: the session as far as it is sound, the damage left in place.
                    let mut session = session;
                    if let Some((path, offset, reason)) = session.damage.take() {
                        report.findings.push(Finding::Damaged {
                            key: Some(session.view.key.clone()),
                            path,
                            offset,
                            reason,
                            quarantined: Vec::new(),
                        });
                    }
                    slot_from(session)
                }
                (true, _, false) => {
                    restore_delete(
                        (&*fs, &dir, keys.as_ref()),
                        session,
                        (&mut next_seq, &mut erased),
                        &mut report,
                    )?;
                    continue;
                }
                (true, _, true) => continue, // the older twin is deleted (see above)
            };
            sessions.insert(slot.key.clone(), Arc::new(slot));
        }
        let live_sessions = sessions
            .values()
            .filter(|slot| slot.view.read().is_live())
            .count();
        // The latest delete of each key can be restored; older ones are reclaimed below.
        let mut replayed_tombstones = replayed.tombstones;
        replayed_tombstones.sort_by_key(|s| Reverse(s.session_id));
        let mut tombstones = Tombstones::default();
        let mut displaced = Vec::new();
        for session in replayed_tombstones {
            let deleted_at = session.view.deleted_at;
            let slot = Arc::new(slot_from(session));
            slot.writer.lock().retired = true;
            if tombstones.get(&slot.key).is_some() {
                displaced.push(slot);
            } else {
                tombstones.insert(slot, deleted_at);
            }
        }
        let inner = Arc::new(Inner {
            fs,
            dir,
            options,
            sessions: RwLock::new(sessions),
            feed: Feed::new(next_seq),
            next_id: AtomicU64::new(replayed.next_id.max(erased.next_id)),
            poisoned: AtomicBool::new(false),
            open_files: AtomicUsize::new(0),
            unsynced: Mutex::new(Unsynced::default()),
            background: Background::default(),
            replayed: !report.from_checkpoint,
            checkpoint_on_disk: Mutex::new(checkpoint_on_disk),
            read_only,
            readers: Mutex::new(Readers::default()),
            tombstones: Mutex::new(tombstones),
            activity: Mutex::new(None),
            live_sessions: AtomicUsize::new(live_sessions),
            report,
            _lock: lock,
            keys,
            erasure_log: Mutex::new(erased),
        });
        if !read_only {
            for slot in displaced {
                inner.reclaim_tombstone(&slot)?;
            }
            inner.sweep_tombstones()?;
        }
        let mut threads = Vec::new();
        if let Durability::Interval(every) = inner.options.durability {
            threads.push(spawn("sessionlog-flusher", &inner, move |inner| {
                flusher(inner, every)
            })?);
        }
        if inner.options.auto_compact {
            threads.push(spawn("sessionlog-compactor", &inner, compactor)?);
        }
        Ok(LogStore { inner, threads })
    }

    /// What open found: torn tails cut off, damage quarantined, unknown files left alone.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.report
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
    /// error; [`LogStore::read_tail`] reports it instead.
    pub fn load_tail(&self, session_key: &str, n: usize) -> Vec<ChatMessage> {
        self.read_tail(session_key, n)
            .map(|messages| messages.into_iter().map(|m| m.message).collect())
            .unwrap_or_default()
    }

    /// Like [`SessionBackend::load_with_timestamps`], but a read error (a file removed or
    /// damaged behind the store's back) is returned instead of an empty history.
    pub fn read_messages(&self, session_key: &str) -> Result<Vec<TimestampedMessage>> {
        self.inner.read(session_key, |len| 0..len).map(timestamped)
    }

    /// Like [`LogStore::load_tail`], with times, and with read errors returned.
    pub fn read_tail(&self, session_key: &str, n: usize) -> Result<Vec<TimestampedMessage>> {
        self.inner
            .read(session_key, |len| len.saturating_sub(n)..len)
            .map(timestamped)
    }

    /// Rewrites a session's segments into one that holds only its live state; every read
    /// returns the same afterwards. `Ok(())` for a missing session.
    pub fn compact_session(&self, session_key: &str) -> Result<()> {
        self.inner.compact(session_key)
    }

    /// Appends a message stamped with the given time instead of now: for importing histories
    /// kept elsewhere. Otherwise exactly [`SessionBackend::append`] (the session's
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
        self.inner
            .commit_at(session_key, true, &event, at, |_| Decision::Write(()))
    }

    /// Appends several messages as one record: after a crash the session holds all of them or
    /// none. This is how an agent stores a tool call with its results, or a question with its
    /// answer, so that no crash leaves half a turn that a model provider would reject. An empty
    /// slice writes nothing. At most [`crate::BATCH_MESSAGES_MAX`] messages
    /// ([`Error::BatchTooLarge`]), and the whole record at most
    /// [`Options::record_bytes_max`] ([`Error::RecordTooLarge`]).
    pub fn append_batch(&self, session_key: &str, messages: &[ChatMessage]) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        if messages.len() > BATCH_MESSAGES_MAX {
            return Err(Error::BatchTooLarge {
                len: messages.len(),
                max: BATCH_MESSAGES_MAX,
            });
        }
        let event = Event::AppendBatch {
            messages: messages
                .iter()
                .map(|m| BatchMessage {
                    role: &m.role,
                    content: &m.content,
                })
                .collect(),
        };
        self.inner
            .commit(session_key, true, &event, |_| Decision::Write(()))
    }

    /// Puts back the messages the last [`SessionBackend::clear_messages`] of the session
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
    /// shared file; deleted forks of this session are erased with it. Returns the files it removed. The session can no longer be
    /// restored.
    pub fn erase_session(&self, session_key: &str) -> Result<Vec<PathBuf>> {
        self.inner.erase(session_key)
    }

    /// Brings back the session the last [`SessionBackend::delete_session`] (or
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
    /// The fork's metadata is the source's then; [`LogStore::fork_origin`] names its source.
    ///
    /// Fails with [`Error::SessionExists`] if `target` exists, [`Error::SessionNotFound`] if
    /// `source` does not (or did not at `at_seq`), and [`Error::HistoryCompacted`] if the
    /// source's state at `at_seq` was compacted away.
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
    /// when it does not. Checking [`SessionBackend::session_exists`] and then appending leaves
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
    /// A damaged record ends the iteration with its error (see [`LogStore::verify`]).
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

    /// [`LogStore::verify`], calling `progress(sessions_done, sessions_total)` as it goes (for
    /// a progress bar).
    pub fn verify_with_progress(&self, progress: impl FnMut(usize, usize)) -> Result<VerifyReport> {
        let _guard = self.reader_guard();
        let keys = self.inner.keys.as_ref();
        history::verify(Arc::clone(&self.inner.fs), &self.inner.dir, keys, progress)
    }

    /// Every event after `after_seq` (0: from the start), then every new event as it commits,
    /// each exactly once and in sequence-number order, with [`crate::Delivery::CaughtUp`] between
    /// the events read from the log and the live ones: what a live dashboard needs.
    ///
    /// Events committed before this call come from the log, as [`LogStore::events`] returns
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

    /// One page of the live sessions that `query` admits, most recent activity first (ties by
    /// key), with a cursor for the next page. The cost is that of the sessions returned and
    /// of those the filters skip on the way, not of every session: the store keeps its
    /// sessions ordered by activity. Pages are consistent as they go: a session whose
    /// activity changes between two pages moves to the front, so it may be seen twice or
    /// (if it moved past the cursor) not at all; a cursor never fails because of writes.
    /// [`Error::InvalidCursor`] for a cursor this store did not give.
    pub fn list_page(&self, query: &ListQuery) -> Result<Page> {
        let limit = if query.limit == 0 {
            PAGE_LIMIT_DEFAULT
        } else {
            query.limit
        };
        let start = match &query.cursor {
            Some(cursor) => {
                let (at, key) =
                    listing::decode_cursor(cursor).ok_or_else(|| Error::InvalidCursor {
                        cursor: cursor.clone(),
                    })?;
                Bound::Excluded((Reverse(at), key))
            }
            None => match query.active_before {
                // Before `t`: from the most recent activity at `t` minus one microsecond.
                Some(before) => Bound::Included((
                    Reverse(before.timestamp_micros().saturating_sub(1)),
                    String::new(),
                )),
                None => Bound::Unbounded,
            },
        };
        let since = query.active_since.map(|t| t.timestamp_micros());
        let before = query.active_before.map(|t| t.timestamp_micros());
        let activity = self.inner.activity_index();
        let mut sessions = Vec::with_capacity(limit.min(1024));
        let mut last = None;
        let mut more = false;
        for ((Reverse(at), key), slot) in activity.range((start, Bound::Unbounded)) {
            if since.is_some_and(|since| *at < since) {
                break; // older than the window: so is everything after
            }
            if before.is_some_and(|before| *at >= before) {
                continue;
            }
            let view = slot.view.read();
            if !view.is_live() || !query.admits(&view) {
                continue;
            }
            if sessions.len() == limit {
                more = true;
                break;
            }
            sessions.push(view.metadata());
            last = Some((*at, key.clone()));
        }
        let next = match (more, last) {
            (true, Some((at, key))) => Some(listing::encode_cursor(at, &key)),
            _ => None,
        };
        Ok(Page { sessions, next })
    }

    /// Every live session's size on disk, most recent activity first.
    pub fn stats(&self) -> Vec<SessionStats> {
        self.inner.live_views(|view| {
            Some(SessionStats {
                key: view.key.clone(),
                messages: view.messages.len(),
                live_bytes: view.live_bytes,
                dead_bytes: view.dead_bytes(),
            })
        })
    }

    /// Bytes on disk of a session's records that a compaction would drop (0 for a missing
    /// session).
    pub fn dead_bytes(&self, session_key: &str) -> u64 {
        self.inner
            .with_view(session_key, SessionView::dead_bytes)
            .unwrap_or(0)
    }

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

    /// Syncs every write not yet on disk (useful with [`Durability::Never`] or
    /// [`Durability::Interval`]); a failure poisons the store.
    pub fn sync(&self) -> Result<()> {
        if self.inner.read_only {
            return Ok(());
        }
        self.inner.flush()
    }

    /// Stops the background threads, syncs what is still unsynced, writes the checkpoint that
    /// lets the next open skip the replay, and releases the folder.
    pub fn close(mut self) -> Result<()> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<()> {
        {
            let mut state = self.inner.background.state.lock();
            state.stop = true;
            self.inner.background.wake.notify_all();
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
        if *self.inner.checkpoint_on_disk.lock() {
            return Ok(()); // nothing changed since open: the checkpoint still holds
        }
        // Segments retired while readers were open go now: the checkpoint must not list them
        // (a reader that outlives the store may then fail to read them).
        let deferred = std::mem::take(&mut self.inner.readers.lock().deferred);
        self.inner.retire_now(&deferred)?;
        // Everything written is made durable, then described in a checkpoint that lets the
        // next open skip the replay.
        self.inner.flush()?;
        self.inner.write_checkpoint()
    }
}

impl Drop for LogStore {
    fn drop(&mut self) {
        // A failed final sync poisons the store, which is being dropped anyway; `close`
        // reports the error to callers who need it.
        let _ = self.shut_down();
    }
}

fn spawn(
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
fn flusher(inner: &Inner, every: Duration) {
    let background = &inner.background;
    loop {
        {
            let mut state = background.state.lock();
            if !state.stop {
                background.wake.wait_for(&mut state, every);
            }
            if state.stop {
                return;
            }
        }
        // A failure poisons the store, so the next write reports it.
        let _ = inner.flush();
    }
}

/// How long open waits for a lock another holder may release at once.
const LOCK_WAIT_MAX: Duration = Duration::from_millis(200);
/// How often it tries again meanwhile.
const LOCK_RETRY_EVERY: Duration = Duration::from_millis(10);

/// How often the compactor looks for tombstones past their retention.
const TOMBSTONE_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Compacts the sessions writers queued, one at a time, and reclaims tombstones past their
/// retention.
fn compactor(inner: &Inner) {
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
                        let _ = inner.apply_retention();
                    }
                    let _ = inner.sweep_tombstones();
                    state = background.state.lock();
                }
            }
        };
        // A failure poisons the store, so the next write reports it.
        let _ = inner.compact_as(&key, false, false);
        background.state.lock().running -= 1;
        background.wake.notify_all();
    }
}

fn timestamped(messages: Vec<StoredMessage>) -> Vec<TimestampedMessage> {
    messages
        .into_iter()
        .map(|m| TimestampedMessage {
            message: m.message,
            created_at: Some(to_time(m.created_at)),
        })
        .collect()
}

fn slot_from(session: ReplayedSession) -> Slot {
    let sealed = session.newest_version == segment::SEALED_VERSION;
    let header_len = segment::header_len(&session.view.key, sealed);
    Slot {
        session_id: session.session_id,
        key: session.view.key.clone(),
        writer: Mutex::new(Writer {
            oldest: session.oldest,
            newest: session.newest,
            newest_len: session.newest_len,
            header_len,
            head: session.head,
            newest_version: session.newest_version,
            ..Writer::empty(&session.view.key)
        }),
        view: RwLock::new(session.view),
    }
}

/// The keys of an encrypted store: checks `options.encryption` against the folder, and sets
/// up encryption for a new, empty store (`names`: the folder's segment files).
fn open_keyring(
    fs: &Arc<dyn FileSystem>,
    dir: &Path,
    options: &Options,
    read_only: bool,
    names: &[String],
) -> Result<Option<Keyring>> {
    let encrypted = keyring::is_encrypted(&**fs, dir);
    match (&options.encryption, encrypted) {
        (None, false) => Ok(None),
        (None, true) => Err(Error::KeyRequired {
            path: dir.to_path_buf(),
        }),
        (Some(key), true) => Keyring::open(Arc::clone(fs), dir, key, false).map(Some),
        (Some(key), false) => {
            let holds_data = !names.is_empty()
                || [layout::ARCHIVE_DIR, layout::QUARANTINE_DIR]
                    .iter()
                    .any(|folder| fs.is_dir(&dir.join(folder)));
            if holds_data || read_only {
                return Err(Error::NotEncrypted {
                    path: dir.to_path_buf(),
                });
            }
            Keyring::open(Arc::clone(fs), dir, key, true).map(Some)
        }
    }
}

/// Rewrites a damaged session's good prefix as a new generation and moves its old segments,
/// damage included, into quarantine.
fn repair(
    (fs, dir, keys): (&dyn FileSystem, &Path, Option<&Keyring>),
    mut session: ReplayedSession,
    next_seq: &mut u64,
    report: &mut RecoveryReport,
    retention: Duration,
) -> Result<Slot> {
    let (path, offset, reason) = session.damage.take().unwrap_or_default();
    let number = session
        .highest
        .checked_add(1)
        .ok_or_else(|| Error::Corrupt {
            path: path.clone(),
            offset,
            reason: "segment numbers exhausted".into(),
        })?;
    let key = keyring::data_key(keys, session.session_id)?;
    let locs = every_loc(&session.view);
    let source = SegmentFiles::open(fs, dir, session.session_id, &locs, key.clone())?;
    let seq = *next_seq;
    *next_seq += 1;
    let generation = compaction::write_generation(
        fs,
        dir,
        (session.session_id, number, SegmentKind::Recovered),
        &session.view,
        &source,
        key.as_deref(),
        || ((seq, now_micros()), ()),
        session.head,
        {
            let within = session.view.clear_undoable(retention);
            (within, session.view.cleared_by.is_some() && !within)
        },
    )?
    .0;
    drop(source);
    let quarantined = compaction::retire(
        fs,
        dir,
        session.session_id,
        session.oldest,
        number,
        Retire::Quarantine,
    )?;
    report.findings.push(Finding::Damaged {
        key: Some(session.view.key.clone()),
        path,
        offset,
        reason,
        quarantined,
    });
    session
        .view
        .install_compacted(generation.messages, generation.cleared);
    session.view.last_seq = session.view.last_seq.max(seq);
    session.oldest = number;
    session.newest = number;
    session.newest_len = generation.len;
    session.head = generation.head;
    session.newest_version = segment::version_for(keys.is_some());
    Ok(slot_from(session))
}

/// Writes the delete record a power loss lost for an older session whose key a newer session
/// now holds (only possible without `Durability::Always`).
fn restore_delete(
    (fs, dir, keys): (&dyn FileSystem, &Path, Option<&Keyring>),
    session: ReplayedSession,
    (next_seq, erased): (&mut u64, &mut recovery::ErasureLog),
    report: &mut RecoveryReport,
) -> Result<()> {
    let key = session.view.key.clone();
    if let Some((path, offset, reason)) = session.damage {
        let quarantined = compaction::retire(
            fs,
            dir,
            session.session_id,
            session.oldest,
            session.highest.saturating_add(1),
            Retire::Quarantine,
        )?;
        report.findings.push(Finding::Damaged {
            key: Some(key),
            path,
            offset,
            reason,
            quarantined,
        });
        return Ok(());
    }
    let path = layout::segment_path(dir, session.session_id, session.newest);
    let mut frame = Vec::new();
    if session.newest_version >= 2 {
        let key = keyring::data_key(keys, session.session_id)?;
        encode_record(
            *next_seq,
            now_micros(),
            &session.head,
            &Event::Delete,
            &mut frame,
            key.as_deref(),
        );
    } else {
        // The segment has the version 1 layout: its records have no chain link.
        let payload = encode_event(&Event::Delete);
        encode_frame(*next_seq, now_micros(), None, &payload, &mut frame);
    }
    *next_seq += 1;
    let file = fs
        .open(&path, OpenMode::Write)
        .map_err(context("opening", &path))?;
    file.write_at(&frame, session.newest_len)
        .map_err(context("writing", &path))?;
    // The delete must be durable before the newer session is served alone.
    file.sync().map_err(context("syncing", &path))?;
    drop(file);
    // Then its files go, as a reclaim does: the sequence floor first, and the erasure logged.
    layout::write_seq_floor(fs, dir, *next_seq)?;
    erased.log(fs, dir, session.session_id, next_seq)?;
    compaction::erase_session_files(
        fs,
        dir,
        keys,
        session.session_id,
        (session.oldest, session.highest.saturating_add(1)),
    )?;
    report.findings.push(Finding::DeleteRestored { key, path });
    Ok(())
}

impl Inner {
    fn slot(&self, key: &str) -> Option<Arc<Slot>> {
        self.sessions.read().get(key).cloned()
    }

    fn create_slot(&self, key: &str) -> Arc<Slot> {
        let mut sessions = self.sessions.write();
        let slot = sessions.entry(key.to_owned()).or_insert_with(|| {
            Arc::new(Slot {
                session_id: self.next_id.fetch_add(1, Ordering::SeqCst),
                key: key.to_owned(),
                writer: Mutex::new(Writer::empty(key)),
                view: RwLock::new(SessionView::new(key)),
            })
        });
        Arc::clone(slot)
    }

    /// Refuses a new session once the store holds `sessions_max` live ones (concurrent
    /// creations can pass it by the number of writers racing).
    fn check_room(&self) -> Result<()> {
        let max = self.options.sessions_max;
        if self.live_sessions.load(Ordering::SeqCst) >= max {
            return Err(Error::TooManySessions { max });
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<()> {
        if self.read_only {
            Err(Error::ReadOnly)
        } else if self.poisoned.load(Ordering::SeqCst) {
            Err(Error::Poisoned)
        } else {
            Ok(())
        }
    }

    fn poison<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.poisoned.store(true, Ordering::SeqCst);
        }
        result
    }

    /// Writes `event` to session `key` when `decide` (given the live session, if any) says so.
    /// `creates`: the event creates a missing session (and the key must be valid).
    fn commit<R>(
        &self,
        key: &str,
        creates: bool,
        event: &Event<'_>,
        decide: impl Fn(Option<&SessionView>) -> Decision<R>,
    ) -> Result<R> {
        self.commit_at(key, creates, event, None, decide)
    }

    /// [`Inner::commit`] with the record's time given (`None`: now).
    fn commit_at<R>(
        &self,
        key: &str,
        creates: bool,
        event: &Event<'_>,
        at: Option<i64>,
        decide: impl Fn(Option<&SessionView>) -> Decision<R>,
    ) -> Result<R> {
        if creates {
            check_key(key)?;
        } else if check_key(key).is_err() {
            return Ok(decide(None).into_value());
        }
        let mut record = Vec::new();
        let payload_len = begin_record(event, &mut record, self.keys.is_some());
        let too_large = |len: usize| -> Result<()> {
            if len > self.options.record_bytes_max {
                Err(Error::RecordTooLarge {
                    len,
                    max: self.options.record_bytes_max,
                })
            } else {
                Ok(())
            }
        };
        if creates {
            // Checked before a session is created for it.
            too_large(payload_len)?;
        }
        loop {
            let slot = match self.slot(key) {
                Some(slot) => slot,
                None if creates => {
                    self.check_writable()?;
                    self.check_room()?;
                    self.create_slot(key)
                }
                None => return Ok(decide(None).into_value()),
            };
            let mut writer = slot.writer.lock();
            if writer.retired {
                continue; // deleted since the lookup: look the key up again
            }
            let (decision, metadata_len, last, before) = {
                let view = slot.view.read();
                let decision = decide(view.is_live().then_some(&*view));
                let last = view.messages.last().copied();
                (
                    decision,
                    view.snapshot_len_after(event),
                    last,
                    view.messages.len(),
                )
            };
            let value = match decision {
                Decision::Skip(value) => return Ok(value),
                Decision::Write(value) => value,
            };
            too_large(payload_len)?;
            // A compaction writes all metadata in one record, which must fit too (sealed, in
            // an encrypted store).
            let seal = if self.keys.is_some() {
                SEAL_OVERHEAD
            } else {
                0
            };
            too_large(metadata_len + seal)?;
            let ts = at.unwrap_or_else(now_micros);
            let compact =
                self.write_event(&slot, &mut writer, event, &mut record, ts, (last, before))?;
            if matches!(event, Event::Delete | Event::Expire { .. }) {
                let displaced = self.entomb(&slot, &mut writer)?;
                drop(writer);
                if let Some(older) = displaced {
                    // Only the latest delete of a key can be restored.
                    self.reclaim_tombstone(&older)?;
                }
                self.sweep_tombstones()?;
            } else if compact {
                self.queue_compaction(key);
            }
            return Ok(value);
        }
    }

    /// Writes `event` (begun in `record`) to a session whose writer lock the caller holds,
    /// applies it to the projection and hands it to subscribers. `(last, before)`: the
    /// session's last message and length before the event. Returns whether the session now
    /// holds enough dead bytes to compact.
    fn write_event(
        &self,
        slot: &Arc<Slot>,
        writer: &mut Writer,
        event: &Event<'_>,
        record: &mut [u8],
        ts: i64,
        (last, before): (Option<MessageLoc>, usize),
    ) -> Result<bool> {
        self.check_writable()?;
        let key = self.write_key(slot, writer)?;
        let ticket = self.feed.take();
        seal_record(record, ticket.seq(), ts, &writer.head, key.as_deref());
        self.forget_checkpoint()?;
        let at = self.write_record(slot, writer, record, ticket.seq())?;
        writer.head = record_hash(record);
        let (applied, compact, before_entry, after_entry) = {
            let mut view = slot.view.write();
            let before_entry = view.is_live().then_some(view.last_activity);
            let applied = view.apply(ts, event, at);
            let after_entry = view.is_live().then_some(view.last_activity);
            // Cleared messages a compaction would keep (within the retention) are neither
            // dead nor free to copy; past it, they are dead.
            let retained = if view.clear_undoable(self.options.tombstone_retention) {
                view.cleared_bytes()
            } else {
                0
            };
            let dead = view
                .bytes_written
                .saturating_sub(view.live_bytes)
                .saturating_sub(retained);
            let compact = self.options.auto_compact
                && dead >= self.options.compaction_dead_bytes_min
                && dead >= view.live_bytes + retained;
            (applied, compact, before_entry, after_entry)
        };
        match (before_entry, after_entry) {
            (None, Some(_)) => {
                self.live_sessions.fetch_add(1, Ordering::SeqCst);
            }
            (Some(_), None) => {
                // Saturating: a miscount must never turn into a store that refuses every new
                // session.
                let _ = self
                    .live_sessions
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                        Some(n.saturating_sub(1))
                    });
            }
            _ => {}
        }
        if before_entry != after_entry {
            self.reindex(slot, before_entry, after_entry);
        }
        if let Err(reason) = applied {
            // The caller checked the event against the view, so this is a bug; stop writing.
            return self.poison(Err(Error::Corrupt {
                path: layout::segment_path(&self.dir, slot.session_id, at.segment),
                offset: at.offset,
                reason: format!("record does not apply to the session: {reason}"),
            }));
        }
        // A subscriber is told what an update_last or remove_last replaced: read it while
        // this writer's lock keeps compaction from moving it. A failure to read it costs
        // the subscriber the description, never the write.
        let published = ticket.wanted().then(|| {
            let seq = ticket.seq();
            match history::event_kind(event, before, || self.read_one(slot, last)) {
                Ok(kind) => Delivery::Event(LogEvent {
                    seq,
                    time: to_time(ts),
                    session: slot.key.clone(),
                    kind,
                }),
                Err(e) => Delivery::Missed {
                    seq,
                    reason: e.to_string(),
                },
            }
        });
        ticket.commit(published);
        Ok(compact)
    }

    /// The activity index, built from the live sessions if this is its first use.
    fn activity_index(&self) -> parking_lot::MappedMutexGuard<'_, ActivityIndex> {
        parking_lot::MutexGuard::map(self.activity.lock(), |index| {
            // Built under the index's lock, so no write can move a session in between.
            index.get_or_insert_with(|| {
                self.sessions
                    .read()
                    .values()
                    .filter_map(|slot| {
                        let view = slot.view.read();
                        view.is_live().then(|| {
                            (
                                (Reverse(view.last_activity), slot.key.clone()),
                                Arc::clone(slot),
                            )
                        })
                    })
                    .collect()
            })
        })
    }

    /// Moves a session in the activity index from `before` to `after` (its last activity
    /// while live; `None` while not live).
    fn reindex(&self, slot: &Arc<Slot>, before: Option<i64>, after: Option<i64>) {
        let mut index = self.activity.lock();
        let Some(activity) = index.as_mut() else {
            return; // not built yet: it will be built from the projections
        };
        if let Some(at) = before {
            activity.remove(&(Reverse(at), slot.key.clone()));
        }
        if let Some(at) = after {
            activity.insert((Reverse(at), slot.key.clone()), Arc::clone(slot));
        }
    }

    /// After a session's delete record: takes it out of the map and keeps it as the key's
    /// tombstone, restorable for `tombstone_retention` (or reclaims it at once when that is
    /// zero). Returns the key's previous tombstone, which the caller reclaims once it has
    /// released this writer.
    fn entomb(&self, slot: &Arc<Slot>, w: &mut Writer) -> Result<Option<Arc<Slot>>> {
        if self.options.tombstone_retention.is_zero() {
            return self.reclaim(slot, w).map(|_| None);
        }
        w.retired = true;
        self.release_file(w);
        self.unmap(slot);
        let deleted_at = slot.view.read().deleted_at;
        Ok(self.tombstones.lock().insert(Arc::clone(slot), deleted_at))
    }

    fn fork(&self, source: &str, target: &str, at_seq: Option<u64>) -> Result<()> {
        self.check_writable()?;
        check_key(target)?;
        let not_found = || Error::SessionNotFound {
            key: source.to_owned(),
        };
        let exists = || Error::SessionExists {
            key: target.to_owned(),
        };
        if source == target || self.with_view(target, |_| ()).is_some() {
            return Err(exists());
        }
        let src = self.slot(source).ok_or_else(not_found)?;
        let mut sw = src.writer.lock();
        if sw.retired || sw.newest == 0 || !src.view.read().is_live() {
            return Err(not_found());
        }
        // The state to share, where in the source's segments it ends, and the hash of its
        // last record (the fork's first record links to it).
        let live_seq = src.view.read().last_seq;
        let shared = match at_seq {
            Some(seq) if seq < live_seq => self.fold_until(&src, &sw, seq)?,
            _ => Shared {
                view: src.view.read().clone(),
                segment: sw.newest,
                end: sw.newest_len,
                head: sw.head,
                seq: live_seq,
            },
        };
        if shared.segment == sw.newest {
            // The shared segments never change again: the source's next record starts a
            // new one.
            sw.sealed = true;
        }
        // The shared bytes must be on disk before another session depends on them.
        let synced = self.with_file(&src, &mut sw, |file| file.sync());
        self.poison(synced)?;
        self.forget_checkpoint()?;
        if shared.segment >= u32::MAX - 1 {
            return Err(Error::InvalidOptions {
                reason: "segment numbers exhausted; compact the source first".into(),
            });
        }
        self.check_room()?;
        let tgt = self.create_slot(target);
        // A new slot's writer is free; one that is not belongs to a concurrent writer of the
        // key, which then owns it.
        let Some(mut tw) = tgt.writer.try_lock() else {
            return Err(exists());
        };
        if tw.retired || tw.newest != 0 || tgt.view.read().exists {
            return Err(exists());
        }
        if self.keys.is_some() {
            // Encrypted: the fork gets its own copy, under its own data key, so that erasing
            // either session never leaves its bytes readable through the other's files.
            let copied = self.copy_fork(&src, &tgt, &mut tw, source, shared);
            drop(sw);
            return self.poison(copied);
        }
        let linked = {
            // No reader may list the folder while the fork is half made.
            let _readers = self.readers.lock();
            self.share_segments(&src, &sw, &tgt, &mut tw, &shared)
        };
        self.poison(linked)?;
        drop(sw);
        {
            let mut view = tgt.view.write();
            *view = SessionView {
                key: target.to_owned(),
                cleared: Vec::new(),
                cleared_by: None,
                ..shared.view
            };
            // Nothing shared is dead weight of the fork's.
            view.bytes_written = view.live_bytes;
        }
        // The fork is live from here on (its view was installed whole, not by an event).
        self.live_sessions.fetch_add(1, Ordering::SeqCst);
        let event = Event::Fork {
            source,
            at_seq: shared.seq,
        };
        let mut record = Vec::new();
        begin_record(&event, &mut record, false);
        let (last, before) = {
            let view = tgt.view.read();
            (view.messages.last().copied(), view.messages.len())
        };
        self.write_event(
            &tgt,
            &mut tw,
            &event,
            &mut record,
            now_micros(),
            (last, before),
        )?;
        Ok(())
    }

    /// Writes the fork `tgt` (whose writer lock the caller holds, as the source's) of `source`
    /// as it was at `shared`: one compacted generation of the shared state, sealed under the
    /// fork's new data key, whose snapshot names the origin.
    fn copy_fork(
        &self,
        src: &Slot,
        tgt: &Arc<Slot>,
        tw: &mut Writer,
        source: &str,
        shared: Shared,
    ) -> Result<()> {
        let keys = self.keys.as_ref().ok_or(Error::Poisoned)?;
        let key = keys.create_key(tgt.session_id)?;
        let now = now_micros();
        let mut view = SessionView {
            key: tgt.key.clone(),
            cleared: Vec::new(),
            cleared_by: None,
            fork_origin: Some((source.to_owned(), shared.seq)),
            created_at: now,
            last_activity: now,
            ..shared.view
        };
        let source_files = self.segment_files(src, &view.messages)?;
        let (generation, ticket) = compaction::write_generation(
            &*self.fs,
            &self.dir,
            (tgt.session_id, 1, SegmentKind::Compacted),
            &view,
            &source_files,
            Some(&key),
            || {
                let ticket = self.feed.take();
                ((ticket.seq(), now), ticket)
            },
            chain_start(&tgt.key),
            (false, false),
        )?;
        let messages = view.messages.len();
        tw.install_generation(1, &generation, self.segment_version());
        view.install_compacted(generation.messages, Vec::new());
        view.last_seq = ticket.seq();
        *tgt.view.write() = view;
        self.live_sessions.fetch_add(1, Ordering::SeqCst);
        self.reindex(tgt, None, Some(now));
        let seq = ticket.seq();
        ticket.commit(Some(Delivery::Event(LogEvent {
            seq,
            time: to_time(now),
            session: tgt.key.clone(),
            kind: EventKind::Fork {
                source: source.to_owned(),
                at_seq: shared.seq,
                messages,
            },
        })));
        Ok(())
    }

    /// Links the source's segments up to the shared one under the target's names, and
    /// creates the target's forked segment after them.
    fn share_segments(
        &self,
        src: &Slot,
        sw: &Writer,
        tgt: &Slot,
        tw: &mut Writer,
        shared: &Shared,
    ) -> Result<()> {
        for number in sw.oldest..=shared.segment {
            let from = layout::segment_path(&self.dir, src.session_id, number);
            let to = layout::segment_path(&self.dir, tgt.session_id, number);
            self.fs
                .hard_link(&from, &to)
                .map_err(context("linking", &to))?;
        }
        let number = shared
            .segment
            .checked_add(1)
            .ok_or_else(|| Error::InvalidOptions {
                reason: "segment numbers exhausted; compact the source first".into(),
            })?;
        let (file, header_len) =
            self.create_segment(tgt, number, SegmentKind::Forked, shared.end)?;
        tw.oldest = sw.oldest;
        tw.newest = number;
        tw.newest_len = header_len;
        tw.header_len = header_len;
        tw.head = shared.head;
        tw.newest_version = self.segment_version();
        self.cache_file(tw, file);
        // The links and the forked segment are durable only with the folder's entries.
        sync_dir(&*self.fs, &self.dir)
    }

    /// The source's state right after event `seq`, read from its segments in force.
    fn fold_until(&self, src: &Slot, sw: &Writer, seq: u64) -> Result<Shared> {
        let mut view = SessionView::new(&src.key);
        let mut last: Option<(u32, u64, u32)> = None;
        let mut headers = Vec::new();
        let key = self.data_key(src.session_id)?;
        for number in sw.oldest..=sw.newest {
            let path = layout::segment_path(&self.dir, src.session_id, number);
            let bytes = crate::fs::read_all(&*self.fs, &path)?;
            let corrupt = |reason: String| Error::Corrupt {
                path: path.clone(),
                offset: 0,
                reason,
            };
            let (header, header_len) = segment::decode_header(&bytes, key.as_deref())
                .map_err(|e| corrupt(format!("{e:?}")))?;
            headers.push((number, header.kind, header.prev_len, bytes, header_len));
        }
        let cuts: HashMap<u32, u64> = headers
            .iter()
            .filter(|(_, kind, ..)| *kind == SegmentKind::Forked)
            .filter_map(|(number, _, prev_len, ..)| Some((number.checked_sub(1)?, *prev_len)))
            .collect();
        let base_first = headers.first().is_some_and(|(_, kind, ..)| {
            matches!(kind, SegmentKind::Compacted | SegmentKind::Recovered)
        });
        let mut snapshot_seq = None;
        let mut stopped = false;
        let mut scratch = Vec::new(); // an encrypted store's opened payload
        for (number, _, _, bytes, header_len) in &headers {
            let cut = cuts.get(number).copied();
            let end = segment::scan_records(bytes, *header_len, |offset, frame, len| {
                let payload = crate::record::open_payload(&frame, key.as_deref(), &mut scratch)?;
                let event = crate::record::decode_event(payload)?;
                if matches!(event, Event::Snapshot(_)) && snapshot_seq.is_none() {
                    snapshot_seq = Some(frame.seq);
                }
                if stopped || cut.is_some_and(|cut| offset >= cut) {
                    return Ok(());
                }
                if frame.seq > seq {
                    stopped = true;
                    return Ok(());
                }
                let at = RecordLoc {
                    seq: frame.seq,
                    segment: *number,
                    offset,
                    len,
                };
                view.apply(frame.ts_micros, &event, at)?;
                last = Some((*number, offset, len));
                Ok(())
            });
            if let segment::ScanEnd::Damage { offset, reason } = end {
                return Err(Error::Corrupt {
                    path: layout::segment_path(&self.dir, src.session_id, *number),
                    offset,
                    reason,
                });
            }
        }
        if base_first && snapshot_seq.is_none_or(|s| s > seq) {
            return Err(Error::HistoryCompacted {
                key: src.key.clone(),
                available_from: snapshot_seq.unwrap_or(0),
            });
        }
        // A source that is itself a fork did not exist before its own Fork record.
        let before_own_fork = src.view.read().fork_origin.is_some() && view.fork_origin.is_none();
        let Some((segment, offset, len)) = last.filter(|_| view.is_live() && !before_own_fork)
        else {
            return Err(Error::SessionNotFound {
                key: src.key.clone(),
            });
        };
        let bytes = &headers
            .iter()
            .find(|(number, ..)| *number == segment)
            .map(|(.., bytes, _)| bytes)
            .ok_or_else(|| Error::SessionNotFound {
                key: src.key.clone(),
            })?;
        let end = offset + u64::from(len);
        let record = bytes.get(offset as usize..end as usize).unwrap_or_default();
        let last_seq = view.last_seq;
        Ok(Shared {
            view,
            segment,
            end,
            head: record_hash(record),
            seq: last_seq,
        })
    }

    fn erase(&self, key: &str) -> Result<Vec<PathBuf>> {
        self.check_writable()?;
        if check_key(key).is_err() {
            return Ok(Vec::new());
        }
        // Forks of it get their own copy of what they share (nested forks share the same
        // files: every fork is compacted).
        let forks: Vec<String> =
            self.live_views(|view| view.fork_origin.as_ref().map(|_| view.key.clone()));
        for fork in forks {
            // The links it drops go at once and are never archived: they are this session's
            // bytes under another name.
            self.compact_as(&fork, true, false)?;
        }
        // Deleted forks of it would keep its bytes through their links: they go for good.
        let dead_forks: Vec<Arc<Slot>> = {
            let tombstones = self.tombstones.lock();
            tombstones
                .slots()
                .filter(|slot| {
                    slot.view
                        .read()
                        .fork_origin
                        .as_ref()
                        .is_some_and(|(source, _)| source == key)
                })
                .cloned()
                .collect()
        };
        for slot in dead_forks {
            if self.tombstones.lock().take(&slot) {
                self.reclaim_tombstone(&slot)?;
            }
        }
        // The live session: its delete record first, so that a crash leaves it deleted. Its
        // files are listed now: with a zero retention the delete reclaims them at once.
        let live_files: Vec<PathBuf> = match self.slot(key) {
            Some(slot) => {
                let w = slot.writer.lock();
                (w.oldest.max(1)..=w.newest)
                    .map(|n| layout::segment_path(&self.dir, slot.session_id, n))
                    .collect()
            }
            None => Vec::new(),
        };
        self.commit(key, false, &Event::Delete, |view| match view {
            Some(_) => Decision::Write(()),
            None => Decision::Skip(()),
        })?;
        let mut gone = Vec::new();
        let tombstone = {
            let mut tombstones = self.tombstones.lock();
            let slot = tombstones.get(key).cloned();
            slot.filter(|slot| tombstones.take(slot))
        };
        if let Some(slot) = tombstone {
            // Reclaimed as any expired tombstone is: an erasure is never deferred for readers.
            gone.extend(self.reclaim_tombstone(&slot)?);
        }
        // Earlier sessions of the key, kept in the archive or quarantine.
        let mut earlier: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
        for folder in [layout::ARCHIVE_DIR, layout::QUARANTINE_DIR] {
            let folder = self.dir.join(folder);
            if !self.fs.is_dir(&folder) {
                continue;
            }
            for entry in self.fs.list(&folder).map_err(context("listing", &folder))? {
                let path = folder.join(&entry.name);
                let segment_name = entry
                    .name
                    .to_str()
                    .and_then(|name| layout::parse_segment_name(name, layout::SEGMENT_SUFFIX));
                let Some((id, _)) = segment_name else {
                    continue;
                };
                let header =
                    crate::fs::read_prefix(&*self.fs, &path, segment::HEADER_BYTES_MAX as u64)
                        .ok()
                        .and_then(|bytes| {
                            let data_key = self.data_key(id).ok().flatten();
                            segment::decode_header(&bytes, data_key.as_deref()).ok()
                        });
                // Files naming the key: its earlier sessions' and, under a fork's name, shared
                // ones. Only these files go, not the rest of another session's archive.
                if header.is_some_and(|(h, _)| h.key == key) {
                    earlier.entry(id).or_default().push(path);
                }
            }
        }
        // Ids the store still uses (live sessions and tombstones, of any key: a fork's files
        // name its source's key, and a restore may race this erasure): their files here go,
        // but their keys and their place in the log are theirs.
        let mut in_use: HashSet<u64> = {
            let sessions = self.sessions.read();
            sessions.values().map(|slot| slot.session_id).collect()
        };
        in_use.extend(self.tombstones.lock().slots().map(|slot| slot.session_id));
        for (id, paths) in earlier {
            let erased_whole = !in_use.contains(&id);
            if erased_whole {
                // Logged before anything of it goes; then, encrypted, its data key goes
                // first, so that any other copy of its bytes is unreadable too.
                let logged = self.log_erasure(id, true);
                self.poison(logged)?;
                if let Some(keys) = &self.keys {
                    self.poison(keys.destroy_key(id))?;
                }
            }
            let mut folders = BTreeSet::new();
            for path in paths {
                self.fs
                    .remove_file(&path)
                    .map_err(context("removing", &path))?;
                folders.insert(crate::fs::parent(&path).to_path_buf());
                gone.push(path);
            }
            for folder in folders {
                // The removals are durable only with their folder's entries.
                let synced = sync_dir(&*self.fs, &folder);
                self.poison(synced)?;
            }
            if let (true, Some(keys)) = (erased_whole, &self.keys) {
                self.poison(keys.erased(id))?;
            }
        }
        // (Every removal above was synced by what made it.)
        for path in live_files {
            if !self.fs.exists(&path) && !gone.contains(&path) {
                gone.push(path);
            }
        }
        Ok(gone)
    }

    fn restore(&self, key: &str) -> Result<bool> {
        self.check_writable()?;
        if check_key(key).is_err() {
            return Ok(false);
        }
        self.sweep_tombstones()?;
        let Some(slot) = self.tombstones.lock().get(key).cloned() else {
            return Ok(false);
        };
        let mut w = slot.writer.lock();
        // Taken out of the tombstones under its writer's lock: a sweep or a displacing delete
        // can no longer reclaim it, and one that took it first left it reclaimed.
        if w.reclaimed || !self.tombstones.lock().take(&slot) {
            return Ok(false);
        }
        let deleted_at = slot.view.read().deleted_at;
        if !within_retention(self.options.tombstone_retention, deleted_at) {
            self.reclaim(&slot, &mut w)?;
            return Ok(false);
        }
        let put_back = |w: &mut Writer| -> Result<()> {
            // Still restorable, unless a newer delete of the key took its place meanwhile.
            let mut tombstones = self.tombstones.lock();
            match tombstones.insert(Arc::clone(&slot), deleted_at) {
                Some(newer) => {
                    let newer_at = newer.view.read().deleted_at;
                    tombstones.insert(newer, newer_at);
                    drop(tombstones);
                    self.reclaim(&slot, w).map(drop)
                }
                None => Ok(()),
            }
        };
        if let Err(e) = self.check_room() {
            put_back(&mut w)?;
            return Err(e);
        }
        {
            // Back in the map before the record is written, under this writer's lock: a
            // writer of the key waits for the restore, then finds the session live.
            let mut sessions = self.sessions.write();
            if let Some(held) = sessions.get(key) {
                // A slot a failed write created (never written to) may give way; a session
                // created since the delete may not.
                let unused = held.writer.try_lock().is_some_and(|mut other| {
                    let free = other.newest == 0 && !held.view.read().exists;
                    if free {
                        other.retired = true;
                    }
                    free
                });
                if !unused {
                    drop(sessions);
                    put_back(&mut w)?;
                    return Err(Error::SessionExists {
                        key: key.to_owned(),
                    });
                }
            }
            sessions.insert(key.to_owned(), Arc::clone(&slot));
        }
        let mut record = Vec::new();
        begin_record(&Event::Restore, &mut record, self.keys.is_some());
        let (last, before) = {
            let view = slot.view.read();
            (view.messages.last().copied(), view.messages.len())
        };
        let written = self.write_event(
            &slot,
            &mut w,
            &Event::Restore,
            &mut record,
            now_micros(),
            (last, before),
        );
        if let Err(e) = written {
            self.unmap(&slot);
            // The store is poisoned now; the tombstone stays for the next open to find.
            let _ = put_back(&mut w);
            return Err(e);
        }
        w.retired = false;
        Ok(true)
    }

    fn apply_retention(&self) -> Result<RetentionReport> {
        let rules = &self.options.retention;
        let mut report = RetentionReport::default();
        if self.read_only || !rules.is_set() {
            return Ok(report);
        }
        let now = now_micros();
        let live: Vec<Arc<Slot>> = self.live_slots();
        if let Some(max_age) = rules.max_age {
            let cutoff = now.saturating_sub(i64::try_from(max_age.as_micros()).unwrap_or(i64::MAX));
            for slot in &live {
                let stale = |v: &SessionView| v.last_activity < cutoff && v.state != RUNNING_STATE;
                if !stale(&slot.view.read()) {
                    continue;
                }
                let event = Event::Expire {
                    rule: RetentionRule::MaxAge.to_byte(),
                };
                // Checked again under the session's writer lock: it may have moved on.
                if self.commit(&slot.key, false, &event, |v| match v {
                    Some(v) if stale(v) => Decision::Write(true),
                    _ => Decision::Skip(false),
                })? {
                    report
                        .expired
                        .push((slot.key.clone(), RetentionRule::MaxAge));
                }
            }
        }
        if let Some(max) = rules.max_messages {
            for slot in &live {
                let excess = {
                    let view = slot.view.read();
                    if view.is_live() && view.state != RUNNING_STATE {
                        view.messages.len().saturating_sub(max)
                    } else {
                        0
                    }
                };
                if excess == 0 {
                    continue;
                }
                let event = Event::Trim {
                    count: excess as u64,
                    rule: RetentionRule::MaxMessages.to_byte(),
                };
                let trimmed = self.commit(&slot.key, false, &event, |v| match v {
                    Some(v)
                        if v.state != RUNNING_STATE
                            && v.messages.len().saturating_sub(max) == excess =>
                    {
                        Decision::Write(true)
                    }
                    _ => Decision::Skip(false),
                })?;
                if trimmed {
                    report.trimmed.push((slot.key.clone(), excess));
                }
            }
        }
        if let Some(budget) = rules.disk_budget {
            self.apply_disk_budget(budget, &mut report)?;
        }
        Ok(report)
    }

    /// Bytes of the records of every live and restorable session.
    fn session_bytes(&self) -> u64 {
        let live: u64 = self
            .sessions
            .read()
            .values()
            .map(|slot| slot.view.read().bytes_written)
            .sum();
        let tombstones: u64 = self
            .tombstones
            .lock()
            .slots()
            .map(|slot| slot.view.read().bytes_written)
            .sum();
        live + tombstones
    }

    fn apply_disk_budget(&self, budget: u64, report: &mut RetentionReport) -> Result<()> {
        // Counted once, then kept up to date as sessions go (writes meanwhile are not
        // counted until the next pass).
        let mut total = self.session_bytes();
        // Tombstones first, the oldest delete first: they are gone from the caller's view.
        while total > budget {
            let oldest = self.tombstones.lock().oldest();
            let Some(slot) = oldest else { break };
            if self.tombstones.lock().take(&slot) {
                total = total.saturating_sub(slot.view.read().bytes_written);
                self.reclaim_tombstone(&slot)?;
                report.reclaimed += 1;
            }
        }
        // Then the least recently active sessions, for good.
        while total > budget {
            let victim = {
                self.activity_index()
                    .values()
                    .rev()
                    .find(|slot| slot.view.read().state != RUNNING_STATE)
                    .cloned()
            };
            let Some(slot) = victim else { break };
            let event = Event::Expire {
                rule: RetentionRule::DiskBudget.to_byte(),
            };
            let expired = self.commit(&slot.key, false, &event, |v| match v {
                Some(v) if v.state != RUNNING_STATE => Decision::Write(true),
                _ => Decision::Skip(false),
            })?;
            if !expired {
                continue; // it became running, or went: look again
            }
            report
                .expired
                .push((slot.key.clone(), RetentionRule::DiskBudget));
            total = total.saturating_sub(slot.view.read().bytes_written);
            if self.tombstones.lock().take(&slot) {
                self.reclaim_tombstone(&slot)?;
            }
        }
        Ok(())
    }

    /// Takes a session out of the map if it is still the one its key names.
    fn unmap(&self, slot: &Arc<Slot>) {
        let mut sessions = self.sessions.write();
        if sessions
            .get(&slot.key)
            .is_some_and(|current| Arc::ptr_eq(current, slot))
        {
            sessions.remove(&slot.key);
        }
    }

    /// Reclaims the files of a tombstone the caller took out of `tombstones`, for good,
    /// unless a restore brought it back first (or it was reclaimed already).
    fn reclaim_tombstone(&self, slot: &Arc<Slot>) -> Result<Vec<PathBuf>> {
        let mut w = slot.writer.lock();
        if w.reclaimed || !w.retired || !slot.view.read().deleted {
            return Ok(Vec::new());
        }
        self.reclaim(slot, &mut w)
    }

    /// Reclaims every tombstone past the retention.
    fn sweep_tombstones(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        let retention =
            i64::try_from(self.options.tombstone_retention.as_micros()).unwrap_or(i64::MAX);
        let cutoff = now_micros().saturating_sub(retention);
        let expired = self.tombstones.lock().take_older_than(cutoff);
        for slot in expired {
            self.reclaim_tombstone(&slot)?;
        }
        Ok(())
    }

    /// Removes the checkpoint the store opened from, durably, before the first change to a
    /// segment would make it describe a folder that no longer exists.
    fn forget_checkpoint(&self) -> Result<()> {
        let mut on_disk = self.checkpoint_on_disk.lock();
        if *on_disk {
            let result = checkpoint::remove(&*self.fs, &self.dir);
            self.poison(result)?;
            *on_disk = false;
        }
        Ok(())
    }

    fn queue_compaction(&self, key: &str) {
        let mut state = self.background.state.lock();
        if state.queued.insert(key.to_owned()) {
            state.queue.push_back(key.to_owned());
            self.background.wake.notify_all();
        }
    }

    fn write_record(
        &self,
        slot: &Slot,
        writer: &mut Writer,
        record: &[u8],
        seq: u64,
    ) -> Result<RecordLoc> {
        let result = self.write_frame(slot, writer, record, seq);
        self.poison(result)
    }

    fn write_frame(
        &self,
        slot: &Slot,
        w: &mut Writer,
        frame: &[u8],
        seq: u64,
    ) -> Result<RecordLoc> {
        let frame_len = frame.len() as u64;
        let segment_full = w.newest_len > w.header_len
            && w.newest_len + frame_len > self.options.segment_bytes_max;
        if !w.links_checked && w.newest != 0 {
            // A segment a fork shares (found on open: `sealed` is not kept on disk) never
            // changes again.
            let path = layout::segment_path(&self.dir, slot.session_id, w.newest);
            let names = self
                .fs
                .link_count(&path)
                .map_err(context("examining", &path))?;
            w.sealed |= names > 1;
            w.links_checked = true;
        }
        let created =
            w.newest == 0 || segment_full || w.sealed || w.newest_version != self.segment_version();
        if created {
            self.start_segment(slot, w)?;
        }
        let offset = w.newest_len;
        let always = self.options.durability == Durability::Always;
        self.with_file(slot, w, |file| {
            file.write_at(frame, offset)?;
            if always {
                // The call returns only once its record is on disk.
                file.sync()?;
            }
            Ok(())
        })?;
        if always && created {
            // A new segment is durable only once the folder's entry for it is.
            sync_dir(&*self.fs, &self.dir)?;
        }
        w.newest_len += frame_len;
        if !always {
            let mut unsynced = self.unsynced.lock();
            let listing = Some((unsynced.epoch, w.newest));
            if w.listed != listing {
                w.listed = listing;
                unsynced.segments.push((slot.session_id, w.newest));
            }
        }
        Ok(RecordLoc {
            seq,
            segment: w.newest,
            offset,
            len: u32::try_from(frame.len()).map_err(|_| Error::RecordTooLarge {
                len: frame.len(),
                max: u32::MAX as usize,
            })?,
        })
    }

    /// Creates the session's next segment and makes it the one appended to.
    fn start_segment(&self, slot: &Slot, w: &mut Writer) -> Result<()> {
        let number = w
            .newest
            .checked_add(1)
            .ok_or_else(|| Error::InvalidOptions {
                reason: "segment numbers exhausted; compact the session".into(),
            })?;
        if w.newest != 0 && self.options.durability != Durability::Always {
            // Without this, a crash could keep the new segment but tear the old one's tail,
            // which open must then treat as damage rather than a torn tail.
            self.with_file(slot, w, |file| file.sync())?;
        }
        self.release_file(w);
        let prev_len = if w.newest == 0 { 0 } else { w.newest_len };
        let (file, header_len) = self.create_segment(slot, number, SegmentKind::Fresh, prev_len)?;
        w.newest = number;
        w.newest_len = header_len;
        w.header_len = header_len;
        w.newest_version = self.segment_version();
        w.sealed = false;
        w.links_checked = true;
        if w.oldest == 0 {
            w.oldest = number;
        }
        self.cache_file(w, file);
        self.unsynced.lock().dir = true;
        Ok(())
    }

    /// Creates segment `number` of a session with its header; returns its handle and the
    /// header's length.
    fn create_segment(
        &self,
        slot: &Slot,
        number: u32,
        kind: SegmentKind,
        prev_len: u64,
    ) -> Result<(Box<dyn FileHandle>, u64)> {
        let path = layout::segment_path(&self.dir, slot.session_id, number);
        // Made before the session's first segment (see `write_key`).
        let data_key = self.data_key(slot.session_id)?;
        let header = segment::encode_header(
            &SegmentHeader {
                version: self.segment_version(),
                kind,
                session_id: slot.session_id,
                segment: number,
                prev_len,
                key: slot.key.clone(),
            },
            data_key.as_deref(),
        );
        let file = self
            .fs
            .open(&path, OpenMode::CreateNew)
            .map_err(context("creating", &path))?;
        file.write_at(&header, 0)
            .map_err(context("writing", &path))?;
        Ok((file, header.len() as u64))
    }

    /// Runs `f` on the newest segment's handle, opening it (and caching it while the pool has
    /// room) if needed.
    fn with_file<T>(
        &self,
        slot: &Slot,
        w: &mut Writer,
        f: impl FnOnce(&dyn FileHandle) -> std::io::Result<T>,
    ) -> Result<T> {
        if let Some(file) = &w.file {
            return f(&**file).map_err(|e| {
                let path = layout::segment_path(&self.dir, slot.session_id, w.newest);
                context("writing", &path)(e)
            });
        }
        let path = layout::segment_path(&self.dir, slot.session_id, w.newest);
        let file = self
            .fs
            .open(&path, OpenMode::Write)
            .map_err(context("opening", &path))?;
        let out = f(&*file).map_err(context("writing", &path));
        self.cache_file(w, file);
        out
    }

    fn cache_file(&self, w: &mut Writer, file: Box<dyn FileHandle>) {
        if self.open_files.fetch_add(1, Ordering::SeqCst) < self.options.open_files_max {
            w.file = Some(file);
        } else {
            self.open_files.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn release_file(&self, w: &mut Writer) {
        if w.file.take().is_some() {
            self.open_files.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// After a session's delete record: takes it out of the map and reclaims its files
    /// (removes them, or moves them to `archive/` with `keep_history`).
    fn reclaim(&self, slot: &Arc<Slot>, w: &mut Writer) -> Result<Vec<PathBuf>> {
        w.retired = true;
        w.reclaimed = true;
        // The checkpoint lists the files about to go.
        self.forget_checkpoint()?;
        self.release_file(w);
        self.unmap(slot);
        // The files hold the highest sequence numbers handed out so far, perhaps: record that
        // they are used before removing them. Open finishes the reclaim if a crash stops it.
        // A deleted session past its undo window is erased, archive included: erasure wins
        // over `keep_history`.
        let result =
            layout::write_seq_floor(&*self.fs, &self.dir, self.feed.next_seq()).and_then(|()| {
                self.retire_as(Retirement::Reclaimed(
                    slot.session_id,
                    w.oldest,
                    w.newest.saturating_add(1),
                ))
            });
        self.poison(result)
    }

    /// Writes the projection to the checkpoint file (see `checkpoint.rs`). Called at close,
    /// once the background threads have stopped and every write is synced.
    fn write_checkpoint(&self) -> Result<()> {
        let names = recovery::list_folder(&*self.fs, &self.dir)?.names;
        // The checkpoint may only describe durable bytes. Segments this store wrote are synced
        // already, but what a replaying open read may be a crashed process's unsynced writes,
        // still only in the page cache: then sync every segment.
        let mut segments = Vec::with_capacity(names.len());
        for name in names {
            let path = self.dir.join(&name);
            if self.replayed {
                let file = self
                    .fs
                    .open(&path, OpenMode::Read)
                    .map_err(context("opening", &path))?;
                file.sync().map_err(context("syncing", &path))?;
            }
            let stat = self.fs.stat(&path).map_err(context("examining", &path))?;
            segments.push((name, stat));
        }
        let newest_segment_ns = segments
            .iter()
            .map(|(_, stat)| stat.modified_ns)
            .max()
            .unwrap_or(i64::MIN);
        // Live sessions and tombstones (restorable deleted sessions) alike.
        let mut slots: Vec<Arc<Slot>> = self.sessions.read().values().cloned().collect();
        slots.extend(self.tombstones.lock().slots().cloned());
        let mut held = Vec::with_capacity(slots.len());
        for slot in &slots {
            let w = slot.writer.lock();
            let tombstone = slot.view.read().deleted;
            if (!w.retired || tombstone) && w.newest != 0 {
                held.push((
                    slot,
                    w.oldest,
                    w.newest,
                    w.newest_len,
                    w.head,
                    w.newest_version,
                    slot.view.read(),
                ));
            }
        }
        let entries: Vec<checkpoint::Entry<'_>> = held
            .iter()
            .filter(|(.., view)| view.exists)
            .map(
                |(slot, oldest, newest, newest_len, head, newest_version, view)| {
                    checkpoint::Entry {
                        session_id: slot.session_id,
                        oldest: *oldest,
                        newest: *newest,
                        newest_len: *newest_len,
                        head: *head,
                        newest_version: *newest_version,
                        view,
                    }
                },
            )
            .collect();
        let bytes = checkpoint::encode(
            self.feed.next_seq(),
            self.next_id.load(Ordering::SeqCst),
            &segments,
            &entries,
        );
        let bytes = match &self.keys {
            // Names, aliases and context are as private as the records they came from.
            Some(keys) => keys.seal_blob(checkpoint::SEALED_AAD, &bytes),
            None => bytes,
        };
        checkpoint::write(&*self.fs, &self.dir, &bytes, newest_segment_ns)
    }

    /// Syncs every segment written since the last flush, then the folder if it gained files.
    fn flush(&self) -> Result<()> {
        let (segments, dir) = {
            let mut unsynced = self.unsynced.lock();
            unsynced.epoch += 1;
            (
                std::mem::take(&mut unsynced.segments),
                std::mem::take(&mut unsynced.dir),
            )
        };
        let result = self.sync_segments(&segments, dir);
        self.poison(result)
    }

    fn sync_segments(&self, segments: &[(u64, u32)], dir: bool) -> Result<()> {
        for &(session_id, number) in segments {
            let path = layout::segment_path(&self.dir, session_id, number);
            match self.fs.open(&path, OpenMode::Read) {
                // Interval/Never: this is where those writes become durable.
                Ok(file) => file.sync().map_err(context("syncing", &path))?,
                // Compacted or deleted since: compaction synced its output before removing
                // the old segments, and a deleted session's bytes no longer matter.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(context("opening", &path)(e)),
            }
        }
        if dir {
            // Segments created since the last flush are durable only with their entries.
            sync_dir(&*self.fs, &self.dir)?;
        }
        Ok(())
    }

    /// The format version of the segments this store writes.
    fn segment_version(&self) -> u32 {
        segment::version_for(self.keys.is_some())
    }

    /// Opens the segments of `slot` that `locs` point into, with the session's data key in
    /// an encrypted store.
    fn segment_files(&self, slot: &Slot, locs: &[MessageLoc]) -> Result<SegmentFiles> {
        let key = self.data_key(slot.session_id)?;
        SegmentFiles::open(&*self.fs, &self.dir, slot.session_id, locs, key)
    }

    /// Session `session_id`'s data key in an encrypted store; `None` in a plain one.
    fn data_key(&self, session_id: u64) -> Result<Option<Arc<DataKey>>> {
        keyring::data_key(self.keys.as_ref(), session_id)
    }

    /// The data key to seal a session's next record with (a new session gets its key, stored
    /// durably, before its first segment exists).
    fn write_key(&self, slot: &Slot, w: &Writer) -> Result<Option<Arc<DataKey>>> {
        let Some(keys) = &self.keys else {
            return Ok(None);
        };
        let key = if w.newest == 0 {
            keys.create_key(slot.session_id)
        } else {
            keys.data_key(slot.session_id)
        };
        self.poison(key).map(Some)
    }

    /// The message at `loc` of a session whose writer lock the caller holds.
    fn read_one(&self, slot: &Slot, loc: Option<MessageLoc>) -> Result<ChatMessage> {
        let loc = loc.ok_or_else(|| Error::Corrupt {
            path: self.dir.clone(),
            offset: 0,
            reason: "no last message to replace".into(),
        })?;
        let files = self.segment_files(slot, &[loc])?;
        let mut read = files.read_messages(&[loc])?;
        read.pop().map(|m| m.message).ok_or_else(|| Error::Corrupt {
            path: layout::segment_path(&self.dir, slot.session_id, loc.segment),
            offset: loc.offset(),
            reason: "message not found".into(),
        })
    }

    /// Reads the messages in `range(len)` of a live session.
    fn read(
        &self,
        key: &str,
        range: impl FnOnce(usize) -> Range<usize>,
    ) -> Result<Vec<StoredMessage>> {
        let Some(slot) = self.slot(key) else {
            return Ok(Vec::new());
        };
        let (locs, files) = {
            let view = slot.view.read();
            if !view.is_live() {
                return Ok(Vec::new());
            }
            let locs = view
                .messages
                .get(range(view.messages.len()))
                .unwrap_or_default()
                .to_vec();
            // Opened under the lock, so a compaction cannot remove the files first.
            let files = self.segment_files(&slot, &locs)?;
            (locs, files)
        };
        files.read_messages(&locs)
    }

    /// True when `found` holds for the content of any live message of the session; contents
    /// are borrowed from the read buffer, and reading stops at the first hit.
    fn any_message(&self, key: &str, found: impl Fn(&str) -> bool) -> Result<bool> {
        let Some(slot) = self.slot(key) else {
            return Ok(false);
        };
        let (locs, files) = {
            let view = slot.view.read();
            if !view.is_live() {
                return Ok(false);
            }
            let locs = view.messages.clone();
            // Opened under the lock, so a compaction cannot remove the files first.
            let files = self.segment_files(&slot, &locs)?;
            (locs, files)
        };
        let mut hit = false;
        files.visit_messages(&locs, |_, _, _, content| {
            hit = found(content);
            !hit
        })?;
        Ok(hit)
    }

    /// Rewrites a session as one new generation (see `compaction.rs`).
    /// An explicit compaction (`compact`, `compact_session`) holds only what is live, as the
    /// contract says: messages a clear removed are dropped even within their undo window, so
    /// `undo_clear` has nothing left to bring back. A background compaction keeps them.
    fn compact(&self, key: &str) -> Result<()> {
        self.compact_as(key, false, true)
    }

    /// [`Inner::compact`]; with `unlink`, the replaced segments are removed at once (never
    /// archived, not deferred for readers). Holds the session's
    /// writer lock throughout, so its writers wait; its readers and every other session go on.
    fn compact_as(&self, key: &str, unlink: bool, purge: bool) -> Result<()> {
        if check_key(key).is_err() {
            return Ok(());
        }
        let Some(slot) = self.slot(key) else {
            return Ok(());
        };
        let mut w = slot.writer.lock();
        let view = slot.view.read().clone();
        if w.retired || w.newest == 0 || !view.is_live() {
            return Ok(());
        }
        self.check_writable()?;
        let number = w
            .newest
            .checked_add(1)
            .ok_or_else(|| Error::InvalidOptions {
                reason: "segment numbers exhausted".into(),
            })?;
        if self.options.durability != Durability::Always {
            // The generation links to the last record of the segments it replaces, which
            // `keep_history` archives: they must hold that record after a crash.
            let synced = self.with_file(&slot, &mut w, |file| file.sync());
            self.poison(synced)?;
        }
        self.forget_checkpoint()?;
        let within = view.clear_undoable(self.options.tombstone_retention);
        let keep_cleared = within && !purge;
        // Cleared messages past their undo window go for good with this compaction: the
        // segments that held them are removed, and the session's archive with them (erasure
        // wins over history).
        let erasing = view.cleared_by.is_some() && !within;
        let (generation, (ticket, ts)) = {
            let source = self.segment_files(&slot, &every_loc(&view))?;
            self.poison(compaction::write_generation(
                &*self.fs,
                &self.dir,
                (slot.session_id, number, SegmentKind::Compacted),
                &view,
                &source,
                source.key(),
                || {
                    let ticket = self.feed.take();
                    let ts = now_micros();
                    ((ticket.seq(), ts), (ticket, ts))
                },
                w.head,
                (keep_cleared, erasing),
            ))?
        };
        self.release_file(&mut w);
        let oldest = w.oldest;
        w.install_generation(number, &generation, self.segment_version());
        {
            let mut view = slot.view.write();
            view.install_compacted(generation.messages, generation.cleared);
            view.last_seq = view.last_seq.max(ticket.seq());
        }
        let seq = ticket.seq();
        ticket.commit(Some(Delivery::Event(LogEvent {
            seq,
            time: to_time(ts),
            session: slot.key.clone(),
            kind: EventKind::Compaction {
                messages: view.messages.len(),
            },
        })));
        drop(w);
        let retirement = if erasing {
            Retirement::Erased(slot.session_id, oldest, number)
        } else if unlink {
            Retirement::Unlinked(slot.session_id, oldest, number)
        } else {
            Retirement::Replaced(slot.session_id, oldest, number)
        };
        let retired = self.retire_as(retirement).map(drop);
        self.poison(retired)
    }

    /// Records in the erasure log, durably, that session `session_id` (or, not
    /// `whole_session`, its history before its last compaction) is about to be erased, and
    /// hands the event to subscribers.
    fn log_erasure(&self, session_id: u64, whole_session: bool) -> Result<()> {
        let mut log = self.erasure_log.lock();
        let ticket = self.feed.take();
        let seq = ticket.seq();
        let ts = now_micros();
        let erasure = Erasure {
            seq,
            ts_micros: ts,
            session_id,
            whole_session,
        };
        log.record(&*self.fs, &self.dir, &erasure)?;
        ticket.commit(Some(Delivery::Event(LogEvent {
            seq,
            time: to_time(ts),
            session: String::new(),
            kind: EventKind::Erased {
                session_id,
                whole_session,
            },
        })));
        Ok(())
    }

    /// Carries out deferred retirements.
    fn retire_now(&self, deferred: &[Retirement]) -> Result<()> {
        for &retirement in deferred {
            let done = self.carry_out(retirement).map(drop);
            self.poison(done)?;
        }
        Ok(())
    }

    /// Removes (or archives) what `retirement` names, returning the paths it touched.
    fn carry_out(&self, retirement: Retirement) -> Result<Vec<PathBuf>> {
        match retirement {
            Retirement::Replaced(id, from, below) => compaction::retire(
                &*self.fs,
                &self.dir,
                id,
                from,
                below,
                retire_mode(&self.options),
            ),
            Retirement::Unlinked(id, from, below) => {
                compaction::retire(&*self.fs, &self.dir, id, from, below, Retire::Remove)
            }
            Retirement::Reclaimed(id, from, below) => {
                self.log_erasure(id, true)?;
                let keys = self.keys.as_ref();
                compaction::erase_session_files(&*self.fs, &self.dir, keys, id, (from, below))
            }
            Retirement::Erased(id, from, below) => {
                self.log_erasure(id, false)?;
                compaction::erase_session_files(&*self.fs, &self.dir, None, id, (from, below))
            }
        }
    }

    /// Carries out `retirement` now, or (a replacement, not an erasure) defers it while event
    /// readers are open; returns what it removed (nothing when deferred). An erasure is not
    /// deferred: it is meant to take effect at once, and a reader may then fail to read what
    /// it erased.
    fn retire_as(&self, retirement: Retirement) -> Result<Vec<PathBuf>> {
        // Held through the retirement, so that a reader cannot start in the middle of it and
        // list the folder half changed.
        let mut readers = self.readers.lock();
        if readers.open > 0 && matches!(retirement, Retirement::Replaced(..)) {
            readers.deferred.push(retirement);
            return Ok(Vec::new());
        }
        self.carry_out(retirement)
    }

    /// Every live session, most recent activity first, ties broken by key.
    fn live_slots(&self) -> Vec<Arc<Slot>> {
        let mut rows: Vec<(i64, Arc<Slot>)> = {
            let sessions = self.sessions.read();
            sessions
                .values()
                .filter_map(|slot| {
                    let view = slot.view.read();
                    view.is_live()
                        .then(|| (view.last_activity, Arc::clone(slot)))
                })
                .collect()
        };
        rows.sort_by(|(a, sa), (b, sb)| b.cmp(a).then_with(|| sa.key.cmp(&sb.key)));
        rows.into_iter().map(|(_, slot)| slot).collect()
    }

    /// `f` of every live session's view, in `live_slots` order.
    fn live_views<T>(&self, mut f: impl FnMut(&SessionView) -> Option<T>) -> Vec<T> {
        self.live_slots()
            .iter()
            .filter_map(|slot| {
                let view = slot.view.read();
                if view.is_live() {
                    f(&view)
                } else {
                    None
                }
            })
            .collect()
    }

    fn with_view<T>(&self, key: &str, f: impl FnOnce(&SessionView) -> T) -> Option<T> {
        let slot = self.slot(key)?;
        let view = slot.view.read();
        view.is_live().then(|| f(&view))
    }

    fn running(&self) -> Vec<(SessionMetadata, SessionState)> {
        self.live_views(|view| {
            (view.state == RUNNING_STATE).then(|| (view.metadata(), view.session_state()))
        })
    }
}

impl SessionBackend for LogStore {
    fn load(&self, session_key: &str) -> Vec<ChatMessage> {
        self.inner
            .read(session_key, |len| 0..len)
            .map(|messages| messages.into_iter().map(|m| m.message).collect())
            .unwrap_or_default()
    }

    fn load_with_timestamps(&self, session_key: &str) -> Vec<TimestampedMessage> {
        self.read_messages(session_key).unwrap_or_default()
    }

    fn append(&self, session_key: &str, message: &ChatMessage) -> std::io::Result<()> {
        let event = Event::Append {
            role: &message.role,
            content: &message.content,
        };
        Ok(self
            .inner
            .commit(session_key, true, &event, |_| Decision::Write(()))?)
    }

    fn remove_last(&self, session_key: &str) -> std::io::Result<bool> {
        Ok(self
            .inner
            .commit(session_key, false, &Event::RemoveLast, |view| match view {
                Some(v) if !v.messages.is_empty() => Decision::Write(true),
                _ => Decision::Skip(false),
            })?)
    }

    fn update_last(&self, session_key: &str, message: &ChatMessage) -> std::io::Result<bool> {
        let event = Event::UpdateLast {
            role: &message.role,
            content: &message.content,
        };
        Ok(self
            .inner
            .commit(session_key, false, &event, |view| match view {
                Some(v) if !v.messages.is_empty() => Decision::Write(true),
                _ => Decision::Skip(false),
            })?)
    }

    fn list_sessions(&self) -> Vec<String> {
        self.inner
            .live_slots()
            .iter()
            .map(|slot| slot.key.clone())
            .collect()
    }

    fn list_sessions_with_metadata(&self) -> Vec<SessionMetadata> {
        self.inner.live_views(|view| Some(view.metadata()))
    }

    fn compact(&self, session_key: &str) -> std::io::Result<()> {
        Ok(self.inner.compact(session_key)?)
    }

    fn cleanup_stale(&self, ttl_hours: u32) -> std::io::Result<usize> {
        let ttl = i64::from(ttl_hours).saturating_mul(3_600_000_000);
        let cutoff = now_micros().saturating_sub(ttl);
        let is_stale =
            |view: &SessionView| view.last_activity < cutoff && view.state != RUNNING_STATE;
        let candidates: Vec<String> = {
            let sessions = self.inner.sessions.read();
            sessions
                .values()
                .filter(|slot| {
                    let view = slot.view.read();
                    view.is_live() && is_stale(&view)
                })
                .map(|slot| slot.key.clone())
                .collect()
        };
        let mut deleted = 0;
        for key in candidates {
            // Checked again under the session's writer lock: it may have moved on since.
            let removed = self
                .inner
                .commit(&key, false, &Event::Delete, |view| match view {
                    Some(v) if is_stale(v) => Decision::Write(true),
                    _ => Decision::Skip(false),
                })?;
            deleted += usize::from(removed);
        }
        Ok(deleted)
    }

    fn search(&self, query: &SessionQuery) -> Vec<SessionMetadata> {
        let limit = query.limit.unwrap_or(SEARCH_LIMIT_DEFAULT);
        let rows = self
            .inner
            .live_views(|view| Some(view.metadata()))
            .into_iter();
        let Some(keyword) = &query.keyword else {
            return rows.take(limit).collect();
        };
        let matcher = Matcher::new(keyword);
        if matcher.is_empty() {
            return Vec::new();
        }
        rows.filter(|meta| {
            matcher.matches(&meta.key)
                || meta
                    .name
                    .as_deref()
                    .is_some_and(|name| matcher.matches(name))
                || self
                    .inner
                    .any_message(&meta.key, |content| matcher.matches(content))
                    .unwrap_or(false)
        })
        .take(limit)
        .collect()
    }

    fn clear_messages(&self, session_key: &str) -> std::io::Result<usize> {
        Ok(self
            .inner
            .commit(session_key, false, &Event::Clear, |view| match view {
                Some(v) if !v.messages.is_empty() => Decision::Write(v.messages.len()),
                _ => Decision::Skip(0),
            })?)
    }

    fn delete_session(&self, session_key: &str) -> std::io::Result<bool> {
        Ok(self
            .inner
            .commit(session_key, false, &Event::Delete, |view| match view {
                Some(_) => Decision::Write(true),
                None => Decision::Skip(false),
            })?)
    }

    fn session_exists(&self, session_key: &str) -> bool {
        self.inner.with_view(session_key, |_| ()).is_some()
    }

    fn set_session_name(&self, session_key: &str, name: &str) -> std::io::Result<()> {
        let event = Event::SetName {
            name: (!name.is_empty()).then_some(name),
        };
        Ok(self
            .inner
            .commit(session_key, true, &event, |_| Decision::Write(()))?)
    }

    fn get_session_name(&self, session_key: &str) -> std::io::Result<Option<String>> {
        Ok(self
            .inner
            .with_view(session_key, |v| v.name.clone())
            .flatten())
    }

    fn set_session_agent_alias(&self, session_key: &str, agent_alias: &str) -> std::io::Result<()> {
        let event = Event::SetAlias {
            alias: (!agent_alias.is_empty()).then_some(agent_alias),
        };
        Ok(self
            .inner
            .commit(session_key, true, &event, |_| Decision::Write(()))?)
    }

    fn get_session_agent_alias(&self, session_key: &str) -> std::io::Result<Option<String>> {
        Ok(self
            .inner
            .with_view(session_key, |v| v.agent_alias.clone())
            .flatten())
    }

    fn set_session_context(
        &self,
        session_key: &str,
        context: SessionContext<'_>,
    ) -> std::io::Result<()> {
        let event = Event::SetContext {
            channel_id: trimmed(context.channel_id),
            room_id: trimmed(context.room_id),
            sender_id: trimmed(context.sender_id),
        };
        let changes_nothing = matches!(
            event,
            Event::SetContext {
                channel_id: None,
                room_id: None,
                sender_id: None
            }
        );
        Ok(self.inner.commit(session_key, true, &event, |view| {
            if view.is_some() && changes_nothing {
                Decision::Skip(())
            } else {
                Decision::Write(())
            }
        })?)
    }

    fn get_session_metadata(&self, session_key: &str) -> Option<SessionMetadata> {
        self.inner.with_view(session_key, SessionView::metadata)
    }

    fn set_session_state(
        &self,
        session_key: &str,
        state: &str,
        turn_id: Option<&str>,
    ) -> std::io::Result<()> {
        let event = Event::SetState { state, turn_id };
        Ok(self
            .inner
            .commit(session_key, true, &event, |_| Decision::Write(()))?)
    }

    fn get_session_state(&self, session_key: &str) -> std::io::Result<Option<SessionState>> {
        Ok(self
            .inner
            .with_view(session_key, SessionView::session_state))
    }

    fn list_running_sessions(&self) -> Vec<SessionMetadata> {
        let mut rows = self.inner.running();
        rows.sort_by(|(a, sa), (b, sb)| {
            sb.turn_started_at
                .cmp(&sa.turn_started_at)
                .then_with(|| a.key.cmp(&b.key))
        });
        rows.into_iter().map(|(meta, _)| meta).collect()
    }

    fn list_stuck_sessions(&self, threshold_secs: u64) -> Vec<SessionMetadata> {
        let threshold = i64::try_from(threshold_secs.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
        let cutoff = to_time(now_micros().saturating_sub(threshold));
        let mut rows: Vec<_> = self
            .inner
            .running()
            .into_iter()
            .filter(|(_, state)| state.turn_started_at.is_some_and(|t| t < cutoff))
            .collect();
        rows.sort_by(|(a, sa), (b, sb)| {
            sa.turn_started_at
                .cmp(&sb.turn_started_at)
                .then_with(|| a.key.cmp(&b.key))
        });
        rows.into_iter().map(|(meta, _)| meta).collect()
    }
}

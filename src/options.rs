//! How a store is opened: durability and limits, each with its default.

use std::time::Duration;

use crate::cipher::EncryptionKey;
use crate::error::{Error, Result};
use crate::id_window::{IDEMPOTENCY_WINDOW_DEFAULT, IDEMPOTENCY_WINDOW_MAX};
use crate::record::PAYLOAD_BYTES_LIMIT;

/// Largest `segment_bytes_max`: offsets of records in a segment stay below 2^40 even with a
/// record of the format's largest size at the end.
const SEGMENT_BYTES_LIMIT: u64 = 512 << 30;

/// When a write is made durable (fdatasync'd) before the call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// The default. A write returns only after its record is on disk (`fdatasync`, plus a
    /// directory sync when it created a file). A crash or power loss loses nothing that was
    /// acknowledged; it may cut off a record whose call had not yet returned.
    ///
    /// Writers to one session are serialised and each syncs its own record; writers to
    /// different sessions sync their own files in parallel, and the file system commits
    /// concurrent syncs together.
    #[default]
    Always,
    /// Writes return once in the operating system's cache; a background thread syncs every
    /// file written to at this interval (and once more when the store is dropped). A crash of
    /// the process loses nothing; a power loss loses at most the writes of the last interval
    /// (plus the time a sync takes), and never corrupts what was synced before: a record cut
    /// short is cut off on open.
    Interval(Duration),
    /// Never sync: the operating system writes when it chooses. A process crash loses nothing;
    /// a power loss can lose any write since the kernel last flushed (on Linux typically up to
    /// 30 s), and can cut the tail of any segment. Open recovers to a consistent prefix of each
    /// session; damage in the middle of a segment is reported, never silently skipped.
    Never,
}

/// Settings for [`crate::LogStore::open_with`].
///
/// Build it with struct-update syntax so that new fields keep their defaults:
/// `Options { durability: Durability::Never, ..Options::default() }`.
///
/// (Retention rules are in [`Retention`].)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// When writes reach the disk. Default: [`Durability::Always`].
    pub durability: Durability,
    /// Largest payload of one record, in bytes (a message's role and content plus about 20
    /// bytes). Larger writes fail with [`Error::RecordTooLarge`] and write nothing. Default:
    /// 64 MiB. At most 1 GiB, the format's limit.
    pub record_bytes_max: usize,
    /// A session's segment is closed and a new one started once it holds this many bytes.
    /// A record larger than this gets a segment to itself. Default: 32 MiB. At least 4 KiB,
    /// at most 512 GiB (a message's location in memory keeps 40 bits of offset).
    pub segment_bytes_max: u64,
    /// Most file handles the store keeps open to append to session segments. A session whose
    /// writer finds the pool full opens and closes its file for each write instead. Default:
    /// 256.
    pub open_files_max: usize,
    /// Most live sessions the store holds; a write that would create one more fails with
    /// [`Error::TooManySessions`] and writes nothing. Default: no limit (`usize::MAX`).
    pub sessions_max: usize,
    /// Compact sessions in the background once their dead bytes (records superseded by
    /// `update_last`, `remove_last`, `clear_messages`, metadata changes) reach both
    /// [`Options::compaction_dead_bytes_min`] and the size of their live messages. Default:
    /// true.
    pub auto_compact: bool,
    /// The dead bytes a session must hold before automatic compaction considers it. Default:
    /// 64 KiB.
    pub compaction_dead_bytes_min: u64,
    /// Keep history for audit: compaction moves the segments it replaces into `archive/`
    /// instead of removing them, so every event ever written can still be read. A deleted
    /// session is the exception: once past [`Options::tombstone_retention`] it is erased,
    /// archive included (erasure wins over history). Default: false.
    pub keep_history: bool,
    /// Open a store whose folder users other than its owner may write to (group- or
    /// world-writable). Such a user could replace or remove its files, so open refuses it
    /// with [`Error::InsecureFolder`] unless this is set. Default: false.
    pub allow_shared_folder: bool,
    /// How long what `clear_messages`, `delete_session` and `cleanup_stale` removed can be
    /// brought back with [`crate::LogStore::undo_clear`] and
    /// [`crate::LogStore::restore_session`]. Until then its bytes stay on disk (a background
    /// compaction keeps cleared messages too; an explicit `compact` holds only what is live,
    /// as the contract says, and ends the undo of a clear); after it, the next compaction (for a
    /// clear) or the next
    /// sweep (for a delete: on open, on a delete, and about once a second by the background
    /// thread when `auto_compact` is on) removes them for good. `Duration::ZERO`: no undo,
    /// cleared messages go with the next compaction and deleted sessions are reclaimed at
    /// once: the setting for stores that must forget at once. Default: one day.
    pub tombstone_retention: Duration,
    /// Rules that remove old histories, in the background (with `auto_compact`) and on
    /// demand ([`crate::LogStore::apply_retention`]); every removal is an event in the log.
    /// Default: none.
    pub retention: Retention,
    /// Encrypt the store at rest with this key (see [`EncryptionKey`]): every record's
    /// payload is sealed with AES-256-GCM-SIV under a data key of each session's own, stored
    /// sealed under this key in `keys/`; the checkpoint is sealed under this key. Chosen when the
    /// store is created: a store created with a key must always be opened with it
    /// ([`Error::KeyRequired`], [`Error::WrongKey`]), and a key is refused for a store that
    /// holds unencrypted sessions ([`Error::NotEncrypted`]). The key is never written to
    /// disk. The session keys in segment headers are sealed too; times, sizes and sequence
    /// numbers are not. Default: none.
    pub encryption: Option<EncryptionKey>,
    /// How many of a session's last identified appends ([`crate::LogStore::append_once`],
    /// [`crate::LogStore::append_batch_once`]) it remembers the ids of: an id among them is a
    /// duplicate and writes nothing; an id older than that (the `window + 1`th back) is
    /// accepted again. The window is rebuilt from the log, so it survives reopen, compaction
    /// and crashes (an open with a smaller window keeps fewer, and a compaction under it
    /// forgets the rest); it costs at most about 70 bytes of memory per id it holds (264 KiB
    /// for a full window of 4,096). 0 remembers none (every
    /// `append_once` writes). Default: [`crate::IDEMPOTENCY_WINDOW_DEFAULT`] (4,096); at most
    /// [`crate::IDEMPOTENCY_WINDOW_MAX`].
    pub idempotency_window: usize,
    /// A background thread writes a checkpoint of the store (what a clean close writes) after
    /// this many bytes of records were written since the last one, so that an open after a
    /// crash replays only the sessions written since (each from where the checkpoint left
    /// it), not every segment. Each checkpoint first syncs what is unsynced, then writes the
    /// whole projection (about 25 bytes per message plus 150 per session). 0: only by time
    /// ([`Options::checkpoint_interval`]). Default: 64 MiB.
    pub checkpoint_bytes: u64,
    /// The background thread also writes a checkpoint this long after the last one if
    /// anything was written meanwhile. `None`: only by bytes. Default: 5 minutes.
    pub checkpoint_interval: Option<Duration>,
    /// Most bytes of message locations (24 per message) read back from the checkpoint to keep
    /// in memory. Open reads no session's locations, only its metadata; a session's are read
    /// from the checkpoint at its first read or write. Past this budget, those read longest
    /// ago whose messages have not changed since (a change of name, alias, context, state or
    /// archived flag changes none) are dropped again, to be read back at their next use; no
    /// answer changes. Locations whose messages changed since the checkpoint stay in memory
    /// until the store closes. An erasure reads every session's back (it removes the
    /// checkpoint they are read from), and the budget drops them again once the next
    /// checkpoint holds them (an erasure counts as a change: one is due at the next
    /// [`Options::checkpoint_interval`]). An encrypted store's checkpoint is opened whole, so
    /// this does not apply to it. `None`: no budget. Default: `None`.
    pub memory_budget: Option<u64>,
    /// Ship the log to object storage as it is written (feature `replication`; see
    /// [`crate::Replication`] and `docs/REPLICATION.md`): a background thread ships, every
    /// [`crate::Replication::interval`], what was written since its last batch, after making
    /// it durable (so under [`Durability::Never`] the store is synced at that interval). The
    /// store must be the only one shipping to that prefix: open fails with
    /// [`crate::Error::Fenced`] if another holds it. Default: `None`.
    #[cfg(feature = "replication")]
    pub replicate_to: Option<crate::Replication>,
}

/// Why a retention rule removed something: recorded in the log with each removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetentionRule {
    /// [`Retention::max_age`].
    MaxAge,
    /// [`Retention::max_messages`].
    MaxMessages,
    /// [`Retention::disk_budget`].
    DiskBudget,
}

impl RetentionRule {
    /// The byte the log stores for the rule.
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            RetentionRule::MaxAge => 0,
            RetentionRule::MaxMessages => 1,
            RetentionRule::DiskBudget => 2,
        }
    }

    /// The rule a stored byte names (an unknown byte reads as the disk budget, the
    /// strictest).
    pub(crate) fn from_byte(byte: u8) -> RetentionRule {
        match byte {
            0 => RetentionRule::MaxAge,
            1 => RetentionRule::MaxMessages,
            _ => RetentionRule::DiskBudget,
        }
    }
}

/// Retention rules ([`Options::retention`]). A session whose state is `running` is never
/// touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Delete sessions inactive for longer than this (they stay restorable for
    /// [`Options::tombstone_retention`]). Default: none.
    pub max_age: Option<Duration>,
    /// Keep at most this many messages per session; the oldest go first. Default: none.
    pub max_messages: Option<usize>,
    /// Keep the bytes of the store's sessions (live and restorable) under this: first
    /// tombstones go, oldest delete first, then the least recently active sessions, for
    /// good. The bytes counted are the records of each session since its last compaction:
    /// segment headers and `archive/` are not counted. Default: none.
    pub disk_budget: Option<u64>,
    /// How often the background applies the rules. Default: one minute.
    pub check_every: Duration,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            max_age: None,
            max_messages: None,
            disk_budget: None,
            check_every: Duration::from_secs(60),
        }
    }
}

impl Retention {
    /// True when any rule is set.
    pub fn is_set(&self) -> bool {
        self.max_age.is_some() || self.max_messages.is_some() || self.disk_budget.is_some()
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            durability: Durability::Always,
            record_bytes_max: 64 << 20,
            segment_bytes_max: 32 << 20,
            open_files_max: 256,
            sessions_max: usize::MAX,
            auto_compact: true,
            compaction_dead_bytes_min: 64 << 10,
            keep_history: false,
            allow_shared_folder: false,
            tombstone_retention: Duration::from_secs(24 * 60 * 60),
            retention: Retention::default(),
            encryption: None,
            idempotency_window: IDEMPOTENCY_WINDOW_DEFAULT,
            checkpoint_bytes: 64 << 20,
            checkpoint_interval: Some(Duration::from_secs(300)),
            memory_budget: None,
            #[cfg(feature = "replication")]
            replicate_to: None,
        }
    }
}

impl Options {
    /// Options with the given durability and every other field at its default.
    pub fn with_durability(durability: Durability) -> Options {
        Options {
            durability,
            ..Options::default()
        }
    }

    /// Refuses values the store cannot work with.
    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::InvalidOptions { reason });
        if self.record_bytes_max == 0 || self.record_bytes_max > PAYLOAD_BYTES_LIMIT as usize {
            return invalid(format!(
                "record_bytes_max must be 1..={PAYLOAD_BYTES_LIMIT}, got {}",
                self.record_bytes_max
            ));
        }
        if self.segment_bytes_max < 4096 || self.segment_bytes_max > SEGMENT_BYTES_LIMIT {
            return invalid(format!(
                "segment_bytes_max must be 4096..={SEGMENT_BYTES_LIMIT}, got {}",
                self.segment_bytes_max
            ));
        }
        if self.idempotency_window > IDEMPOTENCY_WINDOW_MAX {
            return invalid(format!(
                "idempotency_window must be at most {IDEMPOTENCY_WINDOW_MAX}, got {}",
                self.idempotency_window
            ));
        }
        if self
            .checkpoint_interval
            .is_some_and(|every| every.is_zero())
        {
            return invalid("checkpoint_interval must not be zero (None: only by bytes)".into());
        }
        if self.retention.check_every.is_zero() {
            return invalid("Retention::check_every must not be zero".into());
        }
        if let Durability::Interval(every) = self.durability {
            if every.is_zero() {
                return invalid("Durability::Interval needs a non-zero interval".into());
            }
        }
        Ok(())
    }
}

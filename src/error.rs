//! The one error type of the crate, and its conversion to [`std::io::Error`] at the trait
//! boundary.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in `sessionlog`.
///
/// Each variant says what happened; its documentation says what a caller can do about it.
/// `Display` never repeats the text of [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file operation failed. Retry after fixing the cause (disk full, permissions). A failed
    /// write or sync also poisons the store: see [`Error::Poisoned`].
    #[error("I/O error: {context}")]
    Io {
        /// What the store was doing, with the path involved.
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Bytes on disk do not form a valid record or segment. The store never deletes such bytes:
    /// open reports them in [`crate::LogStore::recovery_report`] and moves the file aside.
    #[error("corrupt data in {path} at offset {offset}: {reason}")]
    Corrupt {
        /// The file holding the bad bytes.
        path: PathBuf,
        /// Byte offset in that file of the first bad record.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A record's CRC32 does not match its bytes (flipped or torn bytes). Like
    /// [`Error::Corrupt`], the file is kept.
    #[error(
        "checksum mismatch in {path} at offset {offset}: stored {expected:#010x}, \
         computed {actual:#010x}"
    )]
    ChecksumMismatch {
        /// The file holding the record.
        path: PathBuf,
        /// Byte offset of the record in that file.
        offset: u64,
        /// The checksum stored in the record.
        expected: u32,
        /// The checksum of the bytes as read.
        actual: u32,
    },
    /// A segment was written by a format version this build cannot read (a newer sessionlog).
    /// Open the folder with the version that wrote it; nothing was changed.
    #[error("{path} has format version {found}; this build reads versions 1 to {supported}")]
    UnsupportedVersion {
        /// The segment file.
        path: PathBuf,
        /// The version stored in its header.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A record is larger than [`crate::Options::record_bytes_max`]. Nothing was written; raise
    /// the limit or split the message.
    #[error("record of {len} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// Encoded size of the record's payload.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// [`crate::LogStore::append_batch`] was given more messages than one record may hold
    /// ([`crate::BATCH_MESSAGES_MAX`]). Nothing was written; split the batch.
    #[error("batch of {len} messages exceeds the limit of {max}")]
    BatchTooLarge {
        /// Messages given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A session key is empty or longer than [`crate::MAX_KEY_BYTES`]. Nothing was written.
    #[error("invalid session key of {len} bytes: {reason}")]
    InvalidKey {
        /// Length of the key in bytes.
        len: usize,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A message or batch id given to [`crate::LogStore::append_once`] or
    /// [`crate::LogStore::append_batch_once`] is empty or longer than
    /// [`crate::MESSAGE_ID_MAX_BYTES`]. Nothing was written: give the channel's own id for the
    /// message (a hash of a longer one will do).
    #[error("invalid message id of {len} bytes: {reason}")]
    InvalidMessageId {
        /// Length of the id in bytes.
        len: usize,
        /// Why it was refused.
        reason: &'static str,
    },
    /// [`crate::Options`] hold a value the store cannot work with.
    #[error("invalid options: {reason}")]
    InvalidOptions {
        /// Which option, and why.
        reason: String,
    },
    /// Another [`crate::LogStore`], in this process or another, has the folder open (open
    /// waits up to 200 ms for a lock released at once). Close it (drop the store) first.
    #[error("{path} is locked by another open store")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The store's folder may be written by users other than its owner, who could replace or
    /// remove its files. Restrict it (`chmod go-w`), or set
    /// [`crate::Options::allow_shared_folder`]. Nothing was read or changed.
    #[error(
        "{path} may be written by other users (mode {mode:o}); refusing to open it: \
         `chmod go-w` it, or allow it (Options::allow_shared_folder)"
    )]
    InsecureFolder {
        /// The folder.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file or folder of the store's own (`LOCK`, `CHECKPOINT`, `ERASED`, a segment,
    /// `archive/`, `quarantine/`, `keys/`) is a symbolic link. The store never follows a link
    /// it did not make, so that nothing outside its folder is read, written or moved into:
    /// put the file or folder itself in the link's place (or remove the link). Nothing was
    /// changed through it.
    #[error("{path} is a symbolic link; sessionlog does not follow links inside its folder")]
    SymbolicLink {
        /// The link.
        path: PathBuf,
    },
    /// The store is encrypted and the key given ([`crate::Options::encryption`]) is not its
    /// key. Nothing was read or changed.
    #[error("{path}: the encryption key is not this store's key")]
    WrongKey {
        /// The store's key check file.
        path: PathBuf,
    },
    /// The store is encrypted and no key was given ([`crate::Options::encryption`]). Nothing
    /// was read or changed.
    #[error("{path} is an encrypted store: an encryption key is needed to open it")]
    KeyRequired {
        /// The store's folder.
        path: PathBuf,
    },
    /// An encryption key was given for a store that is not encrypted: one that holds
    /// unencrypted sessions (encryption is chosen when a store is created; export and import
    /// the sessions into a new encrypted store instead), or, for a read-only open, any folder
    /// that is not an encrypted store. Nothing was read or changed.
    #[error("{path} is not an encrypted store: encryption is chosen when a store is created")]
    NotEncrypted {
        /// The store's folder.
        path: PathBuf,
    },
    /// An earlier write or sync failed, so the disk may not hold what the store believed it
    /// wrote. Every write is refused, and no file is changed, until the store is dropped and
    /// opened again; reads still work. Reopening replays what is really on disk. (A file that
    /// could not be opened, or a compaction that failed before its new generation was in force,
    /// fails its own call only.)
    #[error("the store refuses writes after a failed write or sync; reopen it")]
    Poisoned,
    /// The store was opened with [`crate::LogStore::open_read_only`], which never changes a
    /// byte. Open it with [`crate::LogStore::open`] to write.
    #[error("the store was opened read-only")]
    ReadOnly,
    /// Creating a session would pass [`crate::Options::sessions_max`]. Nothing was written;
    /// delete sessions or raise the limit.
    #[error("the store holds its limit of {max} sessions")]
    TooManySessions {
        /// The limit.
        max: usize,
    },
    /// [`crate::LogStore::fork_session`] was asked to fork a session that does not exist (or
    /// did not yet exist at the sequence number given). Nothing was written.
    #[error("no session {key:?} to fork")]
    SessionNotFound {
        /// The key.
        key: String,
    },
    /// [`crate::LogStore::list_page`] was given a cursor it did not make.
    #[error("not a list_page cursor: {cursor:?}")]
    InvalidCursor {
        /// The cursor given.
        cursor: String,
    },
    /// [`crate::LogStore::restore_session`] found the key in use by a session created after
    /// the delete. Nothing was written; delete or rename that session first.
    #[error("session {key:?} exists again; it cannot be restored over")]
    SessionExists {
        /// The key.
        key: String,
    },
    /// [`crate::LogStore::append_expected`] found the session at another length than the
    /// caller expected: another writer moved it on. Nothing was written; reload and retry.
    #[error("session has {actual} messages, the caller expected {expected}")]
    Conflict {
        /// The length the caller expected.
        expected: usize,
        /// The session's length when the write was attempted.
        actual: usize,
    },
    /// A session has used every segment number its file names can carry (about four
    /// billion): nothing was written to it. Copy its messages to a new session (`sessionlog
    /// export`, then `import` under another key) and delete this one.
    #[error("session {key:?} has used every segment number")]
    SegmentsExhausted {
        /// The session key.
        key: String,
    },
    /// The events asked for are no longer in the log: a compaction replaced them (and
    /// [`crate::Options::keep_history`] was off when it ran), or a delete reclaimed them.
    /// What the log still holds starts at `available_from`.
    #[error("the history of session {key:?} before event {available_from} was compacted away")]
    HistoryCompacted {
        /// The session key.
        key: String,
        /// The first sequence number from which the session's state can be rebuilt.
        available_from: u64,
    },
    /// Object storage refused or failed a request of replication (`Options::replicate_to`,
    /// `sessionlog backup` and `restore`), or holds what a restore cannot use. The store
    /// keeps working and shipping tries again at its next interval; check the target's
    /// address, credentials (the `AWS_*` variables for `s3://`) and that it is reachable.
    #[error("replication to {target}: {reason}")]
    Replication {
        /// The target, as given.
        target: String,
        /// What failed.
        reason: String,
    },
    /// Another store ships to the same prefix: a newer generation took it over (a store
    /// restored from it), or it holds another store's backup. Nothing was shipped. Point this
    /// store at another prefix, or, if it is the one to keep, restore it afresh from the
    /// prefix's latest state.
    #[error("replication to {target} is fenced: {reason}")]
    Fenced {
        /// The target, as given.
        target: String,
        /// Which generation holds it, and this store's.
        reason: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with what the store was doing.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// True for an I/O error on a file that is not there (`NotFound`): what a reader beside a
    /// writer meets when the writer removed a file the reader had listed.
    pub(crate) fn is_file_gone(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    /// The [`io::ErrorKind`] this error maps to at the [`crate::SessionBackend`] boundary.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Error::Io { source, .. } => source.kind(),
            Error::Corrupt { .. } | Error::ChecksumMismatch { .. } => io::ErrorKind::InvalidData,
            Error::UnsupportedVersion { .. } => io::ErrorKind::Unsupported,
            Error::RecordTooLarge { .. }
            | Error::BatchTooLarge { .. }
            | Error::InvalidCursor { .. }
            | Error::TooManySessions { .. }
            | Error::InvalidKey { .. }
            | Error::InvalidMessageId { .. }
            | Error::InvalidOptions { .. } => io::ErrorKind::InvalidInput,
            Error::Locked { .. } => io::ErrorKind::ResourceBusy,
            Error::InsecureFolder { .. }
            | Error::SymbolicLink { .. }
            | Error::WrongKey { .. }
            | Error::KeyRequired { .. } => io::ErrorKind::PermissionDenied,
            Error::NotEncrypted { .. } => io::ErrorKind::InvalidInput,
            Error::Poisoned => io::ErrorKind::Other,
            Error::ReadOnly => io::ErrorKind::PermissionDenied,
            Error::Conflict { .. } | Error::SessionExists { .. } => io::ErrorKind::AlreadyExists,
            Error::SessionNotFound { .. } => io::ErrorKind::NotFound,
            Error::HistoryCompacted { .. } => io::ErrorKind::NotFound,
            Error::SegmentsExhausted { .. } => io::ErrorKind::Other,
            Error::Replication { .. } => io::ErrorKind::Other,
            Error::Fenced { .. } => io::ErrorKind::PermissionDenied,
        }
    }
}

impl From<Error> for io::Error {
    /// Keeps the original [`Error`] as the source, under a fitting [`io::ErrorKind`].
    fn from(error: Error) -> io::Error {
        io::Error::new(error.kind(), error)
    }
}

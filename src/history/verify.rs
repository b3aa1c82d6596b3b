//! [`crate::LogStore::verify`]: every record of every history checked, the archive included.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::fs::FileSystem;
use crate::keyring::{self, Keyring};

use super::cursor::{readable_histories, Cursor};

/// What [`crate::LogStore::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Sessions whose history was read (live ones, and deleted ones kept in `archive/`).
    pub sessions: usize,
    /// Events read and checked.
    pub events: u64,
    /// Hash-chain links checked: each record (of format version 2) against the hash of the
    /// record before it.
    pub links: u64,
    /// Every problem found: at most one per session, since a session's history cannot be
    /// read past its first bad record.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// True when nothing is wrong.
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One problem [`crate::LogStore::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The session, when its segment header could be read.
    pub session: Option<String>,
    /// The file holding the bad bytes (empty when unknown).
    pub path: PathBuf,
    /// Byte offset of the bad record or header in that file.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.session {
            Some(key) => write!(f, "session {key:?}: ")?,
            None => f.write_str("unknown session: ")?,
        }
        write!(
            f,
            "{} at offset {}: {}",
            self.path.display(),
            self.offset,
            self.reason
        )
    }
}

pub(super) fn problem(session: Option<String>, error: Error) -> Problem {
    match error {
        Error::Corrupt {
            path,
            offset,
            reason,
        } => Problem {
            session,
            path,
            offset,
            reason,
        },
        Error::ChecksumMismatch {
            path,
            offset,
            expected,
            actual,
        } => Problem {
            session,
            path,
            offset,
            reason: format!("checksum mismatch: stored {expected:#010x}, computed {actual:#010x}"),
        },
        other => Problem {
            session,
            path: PathBuf::new(),
            offset: 0,
            reason: other.to_string(),
        },
    }
}

/// Reads every record of every session's history (segments in the folder and in `archive/`),
/// checking each checksum, each hash-chain link, and that each event can follow the ones
/// before it. Calls `progress(done, total)` after each session.
pub(crate) fn verify(
    fs: Arc<dyn FileSystem>,
    dir: &Path,
    keys: Option<&Keyring>,
    mut progress: impl FnMut(usize, usize),
) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let histories = readable_histories(&*fs, dir, keys)?;
    let total = histories.len();
    for (id, segments) in histories {
        progress(report.sessions, total);
        report.sessions += 1;
        let key = match keyring::data_key(keys, id) {
            Ok(key) => key,
            Err(e) => {
                report.problems.push(problem(None, e));
                continue;
            }
        };
        let mut cursor = match Cursor::new(Arc::clone(&fs), id, key, segments) {
            Ok(cursor) => cursor,
            Err(e) => {
                report.problems.push(problem(None, e));
                continue;
            }
        };
        cursor.check_chain = true;
        loop {
            match cursor.next_event(u64::MAX) {
                Ok(Some(_)) => report.events += 1,
                Ok(None) => {
                    report.links += cursor.links;
                    break;
                }
                Err(e) => {
                    let key = Some(cursor.key().to_owned()).filter(|k| !k.is_empty());
                    report.problems.push(problem(key, e));
                    break;
                }
            }
        }
    }
    progress(report.sessions, total);
    Ok(report)
}

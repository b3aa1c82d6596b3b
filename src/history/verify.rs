//! [`crate::LogStore::verify`]: every record of every history checked, the archive included.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::fs::FileSystem;
use crate::keyring::{self, Keyring};
use crate::reader::SegmentRef;

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
///
/// `beside_writer`: the store is open read-only, and another process may be writing it. Its
/// compactions, deletes and erasures remove files this listed; a session whose file is gone
/// when it is read is listed and checked again (up to [`RECHECK_TRIES`] times), and one with no
/// file left is no longer there to check. A writable store holds its own compactions off while
/// this runs: a file gone there is a problem.
pub(crate) fn verify(
    fs: Arc<dyn FileSystem>,
    dir: &Path,
    keys: Option<&Keyring>,
    beside_writer: bool,
    mut progress: impl FnMut(usize, usize),
) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let histories = readable_histories(&*fs, dir, keys)?;
    let total = histories.len();
    for (id, mut segments) in histories {
        progress(report.sessions, total);
        let mut tries = 1;
        let found = loop {
            let mut checked = Checked::default();
            match check_history(&fs, id, keys, segments, &mut checked) {
                Err((_, e)) if beside_writer && e.is_file_gone() && tries < RECHECK_TRIES => {
                    tries += 1;
                    match readable_histories(&*fs, dir, keys)?.remove(&id) {
                        Some(now) => segments = now,
                        None => break None, // deleted or erased since the listing
                    }
                }
                found => break Some((checked, found.err())),
            }
        };
        let Some((checked, problem_found)) = found else {
            continue;
        };
        report.sessions += 1;
        report.events += checked.events;
        report.links += checked.links;
        if let Some((key, e)) = problem_found {
            report.problems.push(problem(key, e));
        }
    }
    progress(report.sessions, total);
    Ok(report)
}

/// How many times a session whose file a writer beside the store removed is checked.
const RECHECK_TRIES: u32 = 8;

/// What the check of one session's history counted.
#[derive(Default)]
struct Checked {
    events: u64,
    links: u64,
}

/// Checks every record of session `id`'s history in `segments`; the first problem, with the
/// session's key when its header was read.
fn check_history(
    fs: &Arc<dyn FileSystem>,
    id: u64,
    keys: Option<&Keyring>,
    segments: Vec<SegmentRef>,
    checked: &mut Checked,
) -> std::result::Result<(), (Option<String>, Error)> {
    let key = keyring::data_key(keys, id).map_err(|e| (None, e))?;
    let mut cursor = Cursor::new(Arc::clone(fs), id, key, segments).map_err(|e| (None, e))?;
    cursor.check_chain = true;
    loop {
        match cursor.next_event(u64::MAX) {
            Ok(Some(_)) => checked.events += 1,
            Ok(None) => {
                checked.links += cursor.links;
                return Ok(());
            }
            Err(e) => {
                let key = Some(cursor.key().to_owned()).filter(|k| !k.is_empty());
                return Err((key, e));
            }
        }
    }
}

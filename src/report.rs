//! What open found and did: the [`RecoveryReport`] and each [`Finding`] in it.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// What open found and did, in the order it happened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Every finding.
    pub findings: Vec<Finding>,
    /// True when open took the projection from a checkpoint instead of replaying every
    /// segment: the one written at the last clean close, or after a crash one taken while the
    /// store ran (then the sessions written since were replayed, see `replayed_sessions`).
    pub from_checkpoint: bool,
    /// How many sessions open replayed from their segment files: every one without a
    /// checkpoint, none after a clean close, and after a crash those whose files changed after
    /// the last checkpoint.
    pub replayed_sessions: usize,
}

impl RecoveryReport {
    /// True when open found nothing to repair or report: nothing was cut off, quarantined,
    /// finished or left unread. (An unused checkpoint or a rebuilt search index is not a
    /// problem: both are derived from the log, which lost nothing.)
    pub fn is_clean(&self) -> bool {
        self.findings.iter().all(|f| {
            matches!(
                f,
                Finding::CheckpointIgnored { .. } | Finding::IndexRebuilt { .. }
            )
        })
    }

    /// True when some session lost records to damage (see [`Finding::Damaged`]).
    pub fn has_damage(&self) -> bool {
        self.findings
            .iter()
            .any(|f| matches!(f, Finding::Damaged { .. }))
    }

    /// True when some session ends before the point its anchor recorded (see
    /// [`Finding::RolledBack`]).
    pub fn has_rollback(&self) -> bool {
        self.findings
            .iter()
            .any(|f| matches!(f, Finding::RolledBack { .. }))
    }
}

/// Open's report, and what was found after it: a session's files are checked against the
/// checkpoint the first time the session is read or written (see [`Finding::ChangedWhileClosed`]).
/// Findings wait in a list until the report is next asked for; then a new report, open's and
/// every finding since, is kept beside the earlier ones, so a reference to an earlier one stays
/// valid for as long as the store.
pub(crate) struct Reports {
    report: RecoveryReport,
    later: OnceLock<Box<Reports>>,
    /// Findings not yet in a report (used in the first report only).
    pending: Mutex<Vec<Finding>>,
}

impl Reports {
    /// Open's report.
    pub(crate) fn new(report: RecoveryReport) -> Reports {
        Reports {
            report,
            later: OnceLock::new(),
            pending: Mutex::new(Vec::new()),
        }
    }

    /// The newest report: open's findings and every one found since.
    pub(crate) fn newest(&self) -> &RecoveryReport {
        // A poisoned lock guards nothing a panic could have left half done.
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut at = self;
        while let Some(later) = at.later.get() {
            at = later;
        }
        if !pending.is_empty() {
            let mut report = at.report.clone();
            report.findings.append(&mut pending);
            // Set under the lock, where `at` has no later report yet.
            let _ = at.later.set(Box::new(Reports::new(report)));
            if let Some(later) = at.later.get() {
                at = later;
            }
        }
        &at.report
    }

    /// Adds findings made after open.
    pub(crate) fn add(&self, findings: Vec<Finding>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.extend(findings);
    }
}

impl Drop for Reports {
    fn drop(&mut self) {
        // One report at a time, not a recursion as deep as the chain.
        let mut next = self.later.take();
        while let Some(mut report) = next {
            next = report.later.take();
        }
    }
}

/// One thing open found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Finding {
    /// A record cut short at the end of a session's newest segment (a crash mid-write) was cut
    /// off. Its bytes are in `saved_to`.
    TornTail {
        /// The segment.
        path: PathBuf,
        /// Where the cut was made (the file's new length, or 0 if the file was removed
        /// because not even its header was complete).
        offset: u64,
        /// How many bytes were cut off.
        bytes: u64,
        /// The side file holding them.
        saved_to: PathBuf,
    },
    /// A bad record or segment that is not a torn tail. The session was opened up to its last
    /// good record; the files that held the damage were moved, unchanged, to `quarantined`.
    Damaged {
        /// The session, when any of its headers could be read.
        key: Option<String>,
        /// The file with the first bad bytes.
        path: PathBuf,
        /// Offset of the first bad byte's record.
        offset: u64,
        /// What is wrong.
        reason: String,
        /// Where the session's old segments are now.
        quarantined: Vec<PathBuf>,
    },
    /// A compaction had put its new generation in force but not yet retired the old
    /// segments; open finished it.
    CompactionFinished {
        /// The session.
        key: String,
        /// What was removed or moved to quarantine.
        retired: Vec<PathBuf>,
    },
    /// A compaction's unfinished output (never in force) was removed.
    TempFileRemoved {
        /// The file.
        path: PathBuf,
    },
    /// Two sessions held the same key because a power loss kept a new session's records but
    /// lost the older one's delete (only possible without [`crate::Durability::Always`]). The
    /// newer one is kept; open wrote the lost delete record for the older one.
    DeleteRestored {
        /// The key.
        key: String,
        /// The older session's newest segment, where the delete record was written.
        path: PathBuf,
    },
    /// A read-only open stopped at a record that is not complete: a crash left it torn, or
    /// the process writing the store is in the middle of it. Nothing was changed.
    Unfinished {
        /// The segment.
        path: PathBuf,
        /// Where the incomplete record starts.
        offset: u64,
        /// How many bytes follow it.
        bytes: u64,
    },
    /// A checkpoint of the projection was found but not used (open replayed every segment
    /// instead); it was removed.
    CheckpointIgnored {
        /// Why it was not used.
        reason: String,
    },
    /// An erasure a crash interrupted after it destroyed the session's data key (an encrypted
    /// store): open removed the session's files, which could no longer be read.
    ErasureFinished {
        /// The erased session's id.
        session_id: u64,
        /// What was removed.
        removed: Vec<PathBuf>,
    },
    /// The sequence floor in `LOCK` (below which numbers were used by records since removed)
    /// is whole but beyond the format's range, so the store never wrote it. It was not used:
    /// open numbered on from the records and the erasure log, and the next floor written
    /// replaces it.
    SequenceFloorIgnored {
        /// The `LOCK` file.
        path: PathBuf,
        /// The floor it holds.
        floor: u64,
    },
    /// A session ends before the point the anchor log (`ANCHORS`) recorded for it at an
    /// earlier clean close: its files were rolled back to an older copy (a restore from a
    /// backup, say), or removed. (A session open found damaged, or whose anchored last record
    /// it cut as a torn tail, is reported as that instead.) Nothing was changed; the session
    /// is served as its files hold it, and `verify` fails until it passes its anchored point
    /// again. If the rollback was deliberate, remove `ANCHORS` (the next clean close starts a
    /// new chain, with a new root hash).
    RolledBack {
        /// The session, when its files are there.
        key: Option<String>,
        /// The session's id (its files' prefix).
        session_id: u64,
        /// The sequence number of the session's last record at its anchor.
        anchored_seq: u64,
        /// The sequence number of its last record now (0: the session is gone).
        found_seq: u64,
    },
    /// A session's files changed while the store was closed: they no longer match what the
    /// checkpoint written at the last clean close recorded of them. Open took the projection
    /// from the checkpoint without examining each file; the change was found the first time
    /// the session was read or written, which replayed the session from its files first. The
    /// session is served as its files hold it (anything the replay found wrong in them is
    /// reported beside this, as open reports it), never as the checkpoint recorded it.
    ChangedWhileClosed {
        /// The session.
        key: String,
        /// The session's id (its files' prefix).
        session_id: u64,
    },
    /// The search index (`index/` in the store's folder, derived from the log) could not be
    /// read: it was rebuilt from the log, and answers were never taken from it. In a
    /// writable store the file that failed was renamed `<name>.damaged` (never removed);
    /// removing it, or the whole `index/` folder, is always safe.
    IndexRebuilt {
        /// The file that could not be read (or the index's folder).
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file or folder that is not part of the store. It was not touched.
    UnknownFile {
        /// The path.
        path: PathBuf,
    },
}

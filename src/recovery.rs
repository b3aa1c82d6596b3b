//! Open-time replay: list the folder, check every segment, rebuild every session's projection,
//! and deal with what a crash or damage left, without ever deleting a byte not understood.
//!
//! The rules (docs/FORMAT.md, "Recovery", has the full list):
//! - a record cut short at the end of a session's newest segment is cut off, after its bytes
//!   are saved to a side file `{segment}.torn-{offset}` next to it;
//! - a segment that a later compacted generation replaced is retired (a half-done compaction
//!   is finished);
//! - any other bad byte stops the session's replay there: the session keeps what came before,
//!   and the store moves its old segments, damage included, byte for byte into `quarantine/`;
//! - files that are not ours are reported and left alone.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cipher::DataKey;
use crate::compaction::{self, Retire};
use crate::erasures::Erasure;
use crate::error::{Error, Result};
use crate::fs::{
    context, free_name, parent, read_all, read_prefix, sync_dir, FileSystem, OpenMode,
};
use crate::keyring::{self, Keyring};
use crate::layout::{
    self, erased_path, kept_session_id, parse_segment_name, segment_path, ARCHIVE_DIR,
    CHECKPOINT_FILE, ERASED_FILE, ERASED_TORN_PREFIX, KEYS_DIR, LOCK_FILE, NUMBER_LIMIT,
    QUARANTINE_DIR, SEGMENT_SUFFIX, SEGMENT_TEMP_SUFFIX, TORN_INFIX,
};
use crate::location::RecordLoc;
use crate::projection::{within_retention, SessionView};
use crate::record::{chain_start, decode_event, open_payload, record_hash, Event, Hash};
use crate::segment::{
    self, decode_header, scan_records, HeaderError, ScanEnd, SegmentKind, FORMAT_VERSION,
    HEADER_BYTES_MAX, SEALED_VERSION,
};

/// What open found and did, in the order it happened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Every finding.
    pub findings: Vec<Finding>,
    /// True when open took the projection from the checkpoint written at the last clean
    /// close instead of replaying every segment.
    pub from_checkpoint: bool,
}

impl RecoveryReport {
    /// True when open found nothing to repair or report: nothing was cut off, quarantined,
    /// finished or left unread. (An unused checkpoint is not a problem: open replayed instead.)
    pub fn is_clean(&self) -> bool {
        self.findings
            .iter()
            .all(|f| matches!(f, Finding::CheckpointIgnored { .. }))
    }

    /// True when some session lost records to damage (see [`Finding::Damaged`]).
    pub fn has_damage(&self) -> bool {
        self.findings
            .iter()
            .any(|f| matches!(f, Finding::Damaged { .. }))
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
    /// A file or folder that is not part of the store. It was not touched.
    UnknownFile {
        /// The path.
        path: PathBuf,
    },
}

/// A session as replay left it.
pub(crate) struct ReplayedSession {
    pub session_id: u64,
    pub view: SessionView,
    /// First segment in force.
    pub oldest: u32,
    /// Segment to append to.
    pub newest: u32,
    /// Its length in bytes.
    pub newest_len: u64,
    /// Highest segment number any file of the session has.
    pub highest: u32,
    /// The hash of the session's last good record (the chain start if it has none): the
    /// `prev` of its next record.
    pub head: Hash,
    /// The format version of the segment to append to: records of this build's version go
    /// only into a segment of that version, so a version 1 segment is never appended to.
    pub newest_version: u32,
    /// The first damage, if any: (path, offset, reason).
    pub damage: Option<(PathBuf, u64, String)>,
}

/// Everything replay learned.
pub(crate) struct Replayed {
    /// Sessions that exist (live, possibly damaged).
    pub sessions: Vec<ReplayedSession>,
    /// Deleted sessions still within the tombstone retention (older ones are reclaimed).
    pub tombstones: Vec<ReplayedSession>,
    pub next_seq: u64,
    pub next_id: u64,
    pub report: RecoveryReport,
}

struct SegmentFile {
    number: u32,
    path: PathBuf,
    header: Result<(segment::SegmentHeader, usize), HeaderError>,
}

/// The erasure log (`ERASED`) as open found it: where the next record goes, the highest
/// sequence number in it, and the sessions whose erasure it holds.
pub(crate) struct ErasureLog {
    end: u64,
    /// The file's length: longer than `end` when a crash tore an append.
    file_len: u64,
    pub max_seq: u64,
    /// One more than the highest session id erased: a new session never takes an erased
    /// session's id, so each id in the log names one session.
    pub next_id: u64,
    erased: std::collections::HashSet<u64>,
    /// (session id, seq) of each logged erasure of a session's history by a compaction.
    histories: Vec<(u64, u64)>,
}

impl ErasureLog {
    /// Reads the log, changing nothing; a bad record with sound ones after it is reported as
    /// damage (and skipped).
    pub(crate) fn open(
        fs: &dyn FileSystem,
        dir: &Path,
        report: &mut RecoveryReport,
    ) -> Result<ErasureLog> {
        let log = crate::erasures::read(fs, dir)?;
        for &offset in &log.damaged {
            report.findings.push(Finding::Damaged {
                key: None,
                path: erased_path(dir),
                offset,
                reason: "erasure record fails its checksum; the records after it are read".into(),
                quarantined: Vec::new(),
            });
        }
        Ok(ErasureLog {
            end: log.good_len,
            file_len: log.file_len,
            max_seq: log.max_seq(),
            next_id: log
                .erasures
                .iter()
                .map(|e| e.session_id.saturating_add(1))
                .max()
                .unwrap_or(1),
            erased: log.erased_sessions(),
            histories: log
                .erasures
                .iter()
                .filter(|e| !e.whole_session)
                .map(|e| (e.session_id, e.seq))
                .collect(),
        })
    }

    /// A writable open, once it knows it will go on: saves what a crash left of an append to
    /// a side file and cuts it off, so that the next record follows the last sound one.
    pub(crate) fn repair(
        &mut self,
        fs: &dyn FileSystem,
        dir: &Path,
        report: &mut RecoveryReport,
    ) -> Result<()> {
        if self.file_len > self.end {
            let path = erased_path(dir);
            let (saved_to, bytes) = cut_tail(fs, &path, self.end, false)?;
            report.findings.push(Finding::TornTail {
                path,
                offset: self.end,
                bytes,
                saved_to,
            });
            self.file_len = self.end;
        }
        Ok(())
    }

    /// Logs the erasure of session `id` with the next sequence number, unless the log holds
    /// it already (an erasure a crash interrupted after it was logged).
    pub(crate) fn log(
        &mut self,
        fs: &dyn FileSystem,
        dir: &Path,
        id: u64,
        next_seq: &mut u64,
    ) -> Result<()> {
        if self.erased.contains(&id) {
            return Ok(());
        }
        self.append(fs, dir, id, true, next_seq)
    }

    /// Logs the erasure of session `id`'s history by the compaction whose snapshot has
    /// sequence number `snapshot_seq`, unless the log holds it already (the running store logs
    /// it after the snapshot, so with a greater sequence number).
    fn log_history(
        &mut self,
        fs: &dyn FileSystem,
        dir: &Path,
        (id, snapshot_seq): (u64, u64),
        next_seq: &mut u64,
    ) -> Result<()> {
        if self
            .histories
            .iter()
            .any(|&(logged, seq)| logged == id && seq > snapshot_seq)
        {
            return Ok(());
        }
        self.append(fs, dir, id, false, next_seq)
    }

    /// Logs an erasure with the next sequence number, which it then takes.
    fn append(
        &mut self,
        fs: &dyn FileSystem,
        dir: &Path,
        id: u64,
        whole_session: bool,
        next_seq: &mut u64,
    ) -> Result<()> {
        self.record(
            fs,
            dir,
            &Erasure {
                seq: *next_seq,
                ts_micros: chrono::Utc::now().timestamp_micros(),
                session_id: id,
                whole_session,
            },
        )?;
        *next_seq += 1;
        Ok(())
    }

    /// Appends `erasure` to the log, durably (open's erasures, and the running store's).
    pub(crate) fn record(
        &mut self,
        fs: &dyn FileSystem,
        dir: &Path,
        erasure: &Erasure,
    ) -> Result<()> {
        self.end = crate::erasures::append(fs, dir, self.end, erasure)?;
        self.max_seq = self.max_seq.max(erasure.seq);
        self.next_id = self.next_id.max(erasure.session_id.saturating_add(1));
        if erasure.whole_session {
            self.erased.insert(erasure.session_id);
        } else {
            self.histories.push((erasure.session_id, erasure.seq));
        }
        Ok(())
    }
}

/// What a listing of the store's folder found.
pub(crate) struct Folder {
    /// Segment numbers by session id.
    segments: BTreeMap<u64, Vec<u32>>,
    /// Compaction output that never reached its rename.
    temps: Vec<PathBuf>,
    /// The names of all segment and temporary files, sorted: what a checkpoint must match.
    pub names: Vec<String>,
    /// One more than the highest session id in a file name.
    next_id: u64,
    /// Files that are not ours.
    pub report: RecoveryReport,
}

/// Lists the store's folder without changing anything.
pub(crate) fn list_folder(fs: &dyn FileSystem, dir: &Path) -> Result<Folder> {
    let mut folder = Folder {
        segments: BTreeMap::new(),
        temps: Vec::new(),
        names: Vec::new(),
        next_id: 1,
        report: RecoveryReport::default(),
    };
    let entries = fs.list(dir).map_err(context("listing", dir))?;
    for entry in entries {
        let name = entry.name.to_str().unwrap_or_default();
        if [
            LOCK_FILE,
            QUARANTINE_DIR,
            ARCHIVE_DIR,
            CHECKPOINT_FILE,
            KEYS_DIR,
            ERASED_FILE,
        ]
        .contains(&name)
            || (name.starts_with(ERASED_TORN_PREFIX) && entry.is_file)
        {
            continue;
        }
        let ours = |suffix| {
            parse_segment_name(name, suffix).filter(|(id, _)| *id < NUMBER_LIMIT && entry.is_file)
        };
        if let Some((id, number)) = ours(SEGMENT_SUFFIX) {
            folder.next_id = folder.next_id.max(id + 1);
            folder.segments.entry(id).or_default().push(number);
            folder.names.push(name.to_owned());
            continue;
        }
        if let Some((id, _)) = ours(SEGMENT_TEMP_SUFFIX) {
            folder.next_id = folder.next_id.max(id + 1);
            folder.temps.push(dir.join(name));
            folder.names.push(name.to_owned());
            continue;
        }
        let side_file = name.split_once(TORN_INFIX).is_some_and(|(stem, _)| {
            parse_segment_name(&format!("{stem}{SEGMENT_SUFFIX}"), SEGMENT_SUFFIX).is_some()
        });
        if !(side_file && entry.is_file) {
            let path = dir.join(&entry.name);
            folder.report.findings.push(Finding::UnknownFile { path });
        }
    }
    folder.names.sort();
    // Archived and quarantined segments keep their session ids: a new session must not
    // reuse one, or its history would mix with theirs.
    for kept in [ARCHIVE_DIR, QUARANTINE_DIR] {
        let kept = dir.join(kept);
        if !fs.is_dir(&kept) {
            continue;
        }
        for entry in fs.list(&kept).map_err(context("listing", &kept))? {
            let name = entry.name.to_str().unwrap_or_default();
            if let Some(id) = kept_session_id(name) {
                folder.next_id = folder.next_id.max(id + 1);
            }
        }
    }
    Ok(folder)
}

/// How open replays: what the options and the kind of open ask of it.
pub(crate) struct ReplayOptions {
    /// Segments that are no longer in force go to `archive/` instead of being removed.
    pub keep_history: bool,
    /// Open may change the folder (a writer); a reader changes nothing.
    pub repair: bool,
    /// `Options::tombstone_retention`: deleted sessions younger than this stay restorable.
    pub retention: std::time::Duration,
}

/// Replays every session of a listed folder.
///
/// Nothing is changed until every segment header has been read: a segment of an unsupported
/// version stops open before any repair.
pub(crate) fn replay(
    fs: &dyn FileSystem,
    dir: &Path,
    folder: Folder,
    options: &ReplayOptions,
    keys: Option<&Keyring>,
    erased: &mut ErasureLog,
) -> Result<Replayed> {
    let ReplayOptions {
        keep_history,
        repair,
        retention,
    } = *options;
    // What happens to segments no longer in force; `None`: a read-only open changes nothing.
    let superseded = match (repair, keep_history) {
        (false, _) => None,
        (true, true) => Some(Retire::Archive),
        (true, false) => Some(Retire::Remove),
    };
    let Folder {
        segments: listed,
        temps,
        next_id,
        mut report,
        ..
    } = folder;
    let mut groups: BTreeMap<u64, Vec<SegmentFile>> = BTreeMap::new();
    // Each session's data key in an encrypted store (or why it cannot be had): its headers
    // seal the session key, its records their events.
    let mut data_keys: HashMap<u64, std::result::Result<Option<Arc<DataKey>>, String>> =
        HashMap::new();
    for (id, files) in listed {
        let data_key = keyring::data_key(keys, id).map_err(|e| e.to_string());
        let header_key = data_key.as_ref().ok().cloned().flatten();
        data_keys.insert(id, data_key);
        for number in files {
            let path = segment_path(dir, id, number);
            // Read one byte past the longest header: a header can only be cut short if the
            // whole file is shorter than that.
            let prefix = read_prefix(fs, &path, HEADER_BYTES_MAX as u64 + 1)?;
            let header = match decode_header(&prefix, header_key.as_deref()) {
                Err(HeaderError::Truncated) if prefix.len() > HEADER_BYTES_MAX => Err(
                    HeaderError::Corrupt("zero bytes where the header should be".into()),
                ),
                Err(HeaderError::UnsupportedVersion(found)) => {
                    return Err(Error::UnsupportedVersion {
                        path,
                        found,
                        supported: SEALED_VERSION,
                    })
                }
                Err(HeaderError::Sealed) if keys.is_none() => {
                    // Sealed records in a store opened without a key (its `keys/` gone?):
                    // refused before anything is changed, never taken for damage.
                    return Err(Error::KeyRequired {
                        path: dir.to_path_buf(),
                    });
                }
                Err(HeaderError::Sealed) => Err(HeaderError::Corrupt(
                    "the session's data key is missing: its segments cannot be read".into(),
                )),
                other => other,
            };
            groups.entry(id).or_default().push(SegmentFile {
                number,
                path,
                header,
            });
        }
    }
    if repair {
        // Every header was read (an unsupported version would have stopped open): changes
        // may begin.
        erased.repair(fs, dir, &mut report)?;
    }
    for path in temps.iter().filter(|_| repair) {
        // A compaction's output before its rename: never in force, and the generation it was
        // copied from is still in place.
        fs.remove_file(path).map_err(context("removing", path))?;
        report
            .findings
            .push(Finding::TempFileRemoved { path: path.clone() });
    }
    if repair && !temps.is_empty() {
        // Keeps removed temporary files from coming back after a crash.
        sync_dir(fs, dir)?;
    }
    // Erasures a crash interrupted after the data key went (an encrypted store): the files
    // cannot be read any more and were on their way out. Finished below, once the sequence
    // numbers in use are known; a read-only open only leaves them out.
    let mut unfinished = Vec::new();
    if let Some(keys) = keys {
        for id in keys.erasing()? {
            let files = groups.remove(&id).unwrap_or_default();
            let numbers = files.iter().map(|f| f.number);
            let range = (
                numbers.clone().min().unwrap_or(1),
                numbers.max().unwrap_or(0) + 1,
            );
            unfinished.push((id, range));
        }
    }
    let mut max_seq = 0u64;
    let mut pending = Vec::new();
    let mut sessions = Vec::new();
    let mut deleted = Vec::new();
    let mut tombstones = Vec::new();
    for (id, mut files) in groups {
        files.sort_by_key(|f| f.number);
        let key = data_keys.remove(&id).unwrap_or(Ok(None));
        let replayed = replay_session(
            fs,
            dir,
            (id, key),
            files,
            superseded,
            (&mut report, &mut pending),
            &mut max_seq,
        )?;
        match replayed {
            Outcome::Live(session) => sessions.push(*session),
            Outcome::Deleted(session, true)
                if within_retention(retention, session.view.deleted_at) =>
            {
                tombstones.push(*session);
            }
            Outcome::Deleted(session, _) => deleted.push((id, session.oldest, session.highest)),
            Outcome::Gone => {}
        }
    }
    let mut next_seq = (max_seq + 1)
        .max(layout::read_seq_floor(fs, dir))
        .max(erased.max_seq + 1);
    for finish in pending {
        // An erasing compaction a crash cut short: logged (once), then finished.
        erased.log_history(fs, dir, (finish.id, finish.snapshot_seq), &mut next_seq)?;
        let mut retired = compaction::erase_traces(fs, dir, finish.id)?;
        for number in finish.replaced {
            retired.extend(compaction::retire(
                fs,
                dir,
                finish.id,
                number,
                number + 1,
                Retire::Remove,
            )?);
        }
        report.findings.push(Finding::CompactionFinished {
            key: finish.key,
            retired,
        });
    }
    if superseded.is_some() {
        for (id, range) in unfinished {
            erased.log(fs, dir, id, &mut next_seq)?;
            let gone = compaction::erase_session_files(fs, dir, keys, id, range)?;
            report.findings.push(Finding::ErasureFinished {
                session_id: id,
                removed: gone,
            });
        }
    }
    if let (Some(_), false) = (superseded, deleted.is_empty()) {
        // A delete whose files a crash kept: finish reclaiming them, after recording that
        // their sequence numbers are used.
        layout::write_seq_floor(fs, dir, next_seq)?;
        // A deleted session is erased, whatever `keep_history` says.
        for (id, oldest, highest) in deleted {
            erased.log(fs, dir, id, &mut next_seq)?;
            let range = (oldest, highest.saturating_add(1));
            compaction::erase_session_files(fs, dir, keys, id, range)?;
        }
    }
    Ok(Replayed {
        sessions,
        tombstones,
        next_seq,
        next_id,
        report,
    })
}

enum Outcome {
    /// The session exists.
    Live(Box<ReplayedSession>),
    /// The session was deleted: restorable within the tombstone retention if it is whole
    /// (the flag), reclaimed otherwise.
    Deleted(Box<ReplayedSession>, bool),
    /// Nothing left in place (quarantined, or no record at all).
    Gone,
}

/// An erasing compaction a crash interrupted after its rename: its generation replayed soundly;
/// the segments it replaced are removed (with the session's archive) once the erasure is
/// logged, after every session was replayed.
struct ErasingFinish {
    id: u64,
    key: String,
    snapshot_seq: u64,
    replaced: Vec<u32>,
}

fn replay_session(
    fs: &dyn FileSystem,
    dir: &Path,
    (id, key): (u64, std::result::Result<Option<Arc<DataKey>>, String>),
    mut segments: Vec<SegmentFile>,
    superseded: Option<Retire>,
    (report, pending): (&mut RecoveryReport, &mut Vec<ErasingFinish>),
    max_seq: &mut u64,
) -> Result<Outcome> {
    let highest = segments.last().map_or(0, |s| s.number);
    if let Some(last) = segments.pop() {
        if last.header == Err(HeaderError::Truncated) {
            // A crash while the session's newest segment was being created: not even its
            // header is whole (or, read-only, a writer is creating it right now).
            if superseded.is_some() {
                let (saved_to, bytes) = cut_tail(fs, &last.path, 0, true)?;
                report.findings.push(Finding::TornTail {
                    path: last.path,
                    offset: 0,
                    bytes,
                    saved_to,
                });
            } else {
                let bytes = fs.stat(&last.path).map_or(0, |s| s.len);
                report.findings.push(Finding::Unfinished {
                    path: last.path,
                    offset: 0,
                    bytes,
                });
            }
        } else {
            segments.push(last);
        }
    }

    // The newest compacted (or recovered) generation replaces every segment below it. The
    // replaced segments are retired only once the generation has replayed cleanly.
    let base = segments.iter().rev().find_map(|s| match &s.header {
        Ok((h, _)) if matches!(h.kind, SegmentKind::Compacted | SegmentKind::Recovered) => {
            Some((s.number, h.kind, h.key.clone()))
        }
        _ => None,
    });
    let replaced: Vec<SegmentFile> = match &base {
        Some((base_number, ..)) => {
            let (below, rest): (Vec<_>, Vec<_>) =
                segments.into_iter().partition(|s| s.number < *base_number);
            segments = rest;
            below
        }
        None => Vec::new(),
    };

    let newest_number = segments.last().map(|s| s.number);
    let oldest = segments.first().map_or(0, |s| s.number);
    // A fork's segments below its (highest) forked segment are shared with its source: their
    // headers name the source, and of each segment just below a forked one only the first
    // `prev_len` bytes belong to the history (`docs/FORMAT.md`, "Forks").
    let forked_at = segments.iter().rev().find_map(|s| match &s.header {
        Ok((h, _)) if h.kind == SegmentKind::Forked => Some(s.number),
        _ => None,
    });
    let cuts: HashMap<u32, u64> = segments
        .iter()
        .filter_map(|s| match &s.header {
            Ok((h, _)) if h.kind == SegmentKind::Forked => {
                Some((s.number.checked_sub(1)?, h.prev_len))
            }
            _ => None,
        })
        .collect();
    let own_key = segments
        .iter()
        .rev()
        .find_map(|s| s.header.as_ref().ok().map(|(h, _)| h.key.clone()));
    let mut view: Option<SessionView> = own_key.as_deref().map(SessionView::new);
    // A fork a crash interrupted: links to the source's segments with no forked segment
    // after them, or a forked segment without its `Fork` record. Nothing of it was
    // acknowledged; its files are only extra names of the source's, and a header.
    let newest_foreign = segments
        .last()
        .and_then(|s| s.header.as_ref().ok())
        .is_some_and(|(h, _)| h.session_id != id);
    let mut fork_record_seen = false;
    // The sequence number of the base generation's snapshot.
    let mut base_snapshot_seq = None;
    let mut damage: Option<(PathBuf, u64, String)> = None;
    let mut newest = 0u32;
    let mut newest_len = 0u64;
    let mut newest_version = FORMAT_VERSION;
    let mut head: Option<Hash> = None;
    for (i, seg) in segments.iter().enumerate() {
        let expected = oldest.checked_add(u32::try_from(i).unwrap_or(u32::MAX));
        if expected != Some(seg.number) {
            damage = Some((
                seg.path.clone(),
                0,
                format!(
                    "segment {} of the session is missing",
                    expected.unwrap_or(0)
                ),
            ));
            break;
        }
        let (header, header_len) = match &seg.header {
            Ok(h) => h,
            Err(e) => {
                damage = Some((seg.path.clone(), 0, format!("bad segment header: {e:?}")));
                break;
            }
        };
        let inherited = forked_at.is_some_and(|f| seg.number < f);
        if (header.session_id != id && !inherited) || header.segment != seg.number {
            damage = Some((
                seg.path.clone(),
                0,
                format!(
                    "header names session {:x} segment {}, not the file's name",
                    header.session_id, header.segment
                ),
            ));
            break;
        }
        let view = view.get_or_insert_with(|| SessionView::new(&header.key));
        if view.key != header.key && !inherited {
            damage = Some((seg.path.clone(), 0, "header holds another key".into()));
            break;
        }
        if header.kind == SegmentKind::Fresh && i > 0 && header.prev_len != newest_len {
            let previous = segments.get(i - 1).map_or(&seg.path, |p| &p.path);
            damage = Some((
                previous.clone(),
                newest_len,
                format!(
                    "segment holds {newest_len} bytes, but the next one began when it held {}",
                    header.prev_len
                ),
            ));
            break;
        }
        let bytes = read_all(fs, &seg.path)?;
        let cut = cuts.get(&seg.number).copied();
        if cut.is_some_and(|cut| cut > bytes.len() as u64) {
            damage = Some((
                seg.path.clone(),
                bytes.len() as u64,
                "a fork shares more of this segment than it holds".into(),
            ));
            break;
        }
        let generation = matches!(header.kind, SegmentKind::Compacted | SegmentKind::Recovered);
        let forked_segment = header.kind == SegmentKind::Forked;
        let mut first_record = true;
        let mut snapshot_seen = false;
        let base_segment = i == 0 && generation;
        let mut last_record = None;
        let mut scratch = Vec::new(); // an encrypted store's opened payload
        let end = scan_records(&bytes, *header_len, |offset, frame, len| {
            if frame.seq >= NUMBER_LIMIT {
                return Err(format!("sequence number {} out of range", frame.seq));
            }
            segment::check_layout(header.version, &frame)?;
            *max_seq = (*max_seq).max(frame.seq);
            if cut.is_some_and(|cut| offset >= cut) {
                return Ok(()); // the source's, after the fork
            }
            let key = key.as_ref().map_err(Clone::clone)?;
            let payload = open_payload(&frame, key.as_deref(), &mut scratch)?;
            let event = decode_event(payload)?;
            let is_fork = matches!(event, Event::Fork { .. });
            if is_fork != (forked_segment && first_record) {
                return Err("a fork record must open a forked segment, and only that".into());
            }
            first_record = false;
            fork_record_seen |= is_fork;
            if matches!(event, Event::Snapshot(_)) {
                if !generation || snapshot_seen {
                    return Err("snapshot record outside a compacted generation's end".into());
                }
                snapshot_seen = true;
                if base_segment {
                    base_snapshot_seq = Some(frame.seq);
                }
            }
            let at = RecordLoc {
                seq: frame.seq,
                segment: seg.number,
                offset,
                len,
            };
            view.apply(frame.ts_micros, &event, at)?;
            last_record = Some((offset, len));
            Ok(())
        });
        // Only the last good record's hash is needed (the next record links to it); verify
        // checks the rest of the chain.
        if let Some((offset, len)) = last_record {
            let record = bytes.get(offset as usize..offset as usize + len as usize);
            head = record.map(record_hash);
        }
        newest = seg.number;
        newest_len = bytes.len() as u64;
        newest_version = header.version;
        let end = match (end, cut) {
            // Whatever lies past a fork's share of a segment is the source's business.
            (ScanEnd::TornTail { offset } | ScanEnd::Damage { offset, .. }, Some(cut))
                if offset >= cut =>
            {
                ScanEnd::Clean
            }
            (end, _) => end,
        };
        match end {
            // A generation is written whole (temporary file, sync, rename): one that ends
            // before its snapshot was cut short after the fact.
            ScanEnd::Clean | ScanEnd::TornTail { .. } if generation && !snapshot_seen => {
                damage = Some((
                    seg.path.clone(),
                    newest_len,
                    "compacted generation ends before its snapshot".into(),
                ));
            }
            ScanEnd::Clean => {}
            ScanEnd::TornTail { offset } if Some(seg.number) == newest_number => {
                let path = seg.path.clone();
                if superseded.is_some() {
                    let (saved_to, bytes) = cut_tail(fs, &seg.path, offset, false)?;
                    report.findings.push(Finding::TornTail {
                        path,
                        offset,
                        bytes,
                        saved_to,
                    });
                } else {
                    let bytes = newest_len - offset;
                    report.findings.push(Finding::Unfinished {
                        path,
                        offset,
                        bytes,
                    });
                }
                newest_len = offset;
            }
            ScanEnd::TornTail { offset } => {
                damage = Some((
                    seg.path.clone(),
                    offset,
                    "record cut short in a segment that is not the session's newest".into(),
                ));
            }
            ScanEnd::Damage { offset, reason } => {
                damage = Some((seg.path.clone(), offset, reason));
            }
        }
        if damage.is_some() {
            break;
        }
    }

    // Only extra names may go: a file naming another session with no other name of its own
    // is not a half-made fork's link, and is left to the damage rules.
    let only_links = segments.iter().all(|s| match &s.header {
        Ok((h, _)) if h.session_id != id => fs.link_count(&s.path).is_ok_and(|n| n > 1),
        _ => true,
    });
    let unfinished_fork =
        newest_foreign || (forked_at.is_some() && !fork_record_seen && damage.is_none());
    if unfinished_fork && only_links {
        let bytes = segments
            .last()
            .map_or(0, |s| fs.stat(&s.path).map_or(0, |st| st.len));
        let path = segments
            .last()
            .map(|s| s.path.clone())
            .unwrap_or_else(|| segment_path(dir, id, highest));
        if superseded.is_some() {
            // Removed durably: the half-made fork does not come back.
            compaction::retire(fs, dir, id, 1, highest + 1, Retire::Remove)?;
        }
        report.findings.push(Finding::Unfinished {
            path,
            offset: 0,
            bytes,
        });
        return Ok(Outcome::Gone);
    }
    let deleted = view.as_ref().is_some_and(|v| v.deleted);
    // A deleted session missing its first segments is a reclaim a crash interrupted: it is
    // never restorable, whatever the retention.
    let partial = segments.first().is_some_and(|first| {
        first.number != 1 && matches!(&first.header, Ok((h, _)) if h.kind == SegmentKind::Fresh)
    });
    // A session's history starts with segment 1 or with a compacted generation; a fresh
    // segment above 1 at the start means earlier segments are missing (a deleted session's
    // reclaim, interrupted, is the one exception: it removes the oldest first).
    if let (Some(first), true, None, false) = (segments.first(), partial, &damage, deleted) {
        damage = Some((
            first.path.clone(),
            0,
            format!(
                "segments 1 to {} of the session are missing",
                first.number - 1
            ),
        ));
        view = None; // nothing before the first record is known: keep none of it
    }

    // Finish the compaction a crash interrupted, now that its generation proved sound.
    if let (Some((_, kind, key)), Some(superseded)) = (base, superseded) {
        let mut retired = Vec::new();
        // A compacted generation that erased cleared messages (`prev_len` 1) removes what
        // it replaced, and the session's archive, instead of archiving it.
        let erasing = segments.first().is_some_and(|s| {
            matches!(&s.header, Ok((h, _)) if h.kind == SegmentKind::Compacted && h.prev_len == 1)
        });
        let replaced = match (erasing, &damage, base_snapshot_seq) {
            (true, None, Some(snapshot_seq)) => {
                // Logged and carried out by `replay` once the sequence numbers are known;
                // segments whose header is bad are kept (quarantined) below, as ever.
                let (sound, bad): (Vec<_>, Vec<_>) =
                    replaced.into_iter().partition(|s| s.header.is_ok());
                if !sound.is_empty() {
                    pending.push(ErasingFinish {
                        id,
                        key: key.clone(),
                        snapshot_seq,
                        replaced: sound.iter().map(|s| s.number).collect(),
                    });
                }
                bad
            }
            _ => replaced,
        };
        for s in &replaced {
            let how = match (&s.header, kind, &damage) {
                (Ok(_), SegmentKind::Compacted, None) => superseded,
                // Damage is kept, and so are the old copies when the new one is damaged.
                _ => Retire::Quarantine,
            };
            retired.extend(compaction::retire(
                fs,
                dir,
                id,
                s.number,
                s.number + 1,
                how,
            )?);
        }
        if !retired.is_empty() {
            report
                .findings
                .push(Finding::CompactionFinished { key, retired });
        }
    }

    let key = view.as_ref().map(|v| v.key.clone()).or_else(|| {
        segments
            .iter()
            .find_map(|s| s.header.as_ref().ok().map(|(h, _)| h.key.clone()))
    });
    let replayed = |mut view: SessionView, damage| {
        view.messages.shrink_to_fit();
        let head = head.unwrap_or_else(|| chain_start(&view.key));
        Box::new(ReplayedSession {
            session_id: id,
            view,
            oldest,
            newest,
            newest_len,
            highest,
            head,
            newest_version,
            damage,
        })
    };
    match (view, damage) {
        (Some(view), damage) if view.is_live() => Ok(Outcome::Live(replayed(view, damage))),
        (Some(view), None) if deleted => Ok(Outcome::Deleted(replayed(view, None), !partial)),
        (_, Some((path, offset, reason))) => {
            // Nothing live to keep: move every file of the session aside, unchanged.
            let quarantined = match superseded {
                Some(_) => compaction::retire(
                    fs,
                    dir,
                    id,
                    0,
                    highest.saturating_add(1),
                    Retire::Quarantine,
                )?,
                None => Vec::new(),
            };
            report.findings.push(Finding::Damaged {
                key,
                path,
                offset,
                reason,
                quarantined,
            });
            Ok(Outcome::Gone)
        }
        // Segments with headers but no record (a crash right after creating a session's first
        // segment): nothing to replay, nothing to lose; they stay and are never written to.
        _ => Ok(Outcome::Gone),
    }
}

/// Saves the bytes of `path` from `offset` to a side file next to it, makes that durable, then
/// cuts the segment there (or removes it, with `remove`), durably. Returns the side file and
/// how many bytes it holds.
pub(crate) fn cut_tail(
    fs: &dyn FileSystem,
    path: &Path,
    offset: u64,
    remove: bool,
) -> Result<(PathBuf, u64)> {
    let bytes = read_all(fs, path)?;
    let tail = bytes
        .get(usize::try_from(offset).unwrap_or(usize::MAX)..)
        .unwrap_or_default();
    let dir = parent(path);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("segment");
    let side = free_name(fs, dir, &format!("{name}.torn-{offset:016x}"));
    // The saved bytes (and their name) are durable before the segment loses them.
    crate::fs::write_new_file(fs, &side, tail)?;
    if remove {
        fs.remove_file(path).map_err(context("removing", path))?;
        // The removal must be durable before a new segment can take the name.
        sync_dir(fs, dir)?;
    } else {
        let segment = fs
            .open(path, OpenMode::Write)
            .map_err(context("opening", path))?;
        segment
            .set_len(offset)
            .map_err(context("truncating", path))?;
        // The cut must be durable before the next append, or a crash could leave new records
        // behind the torn bytes.
        segment.sync().map_err(context("syncing", path))?;
    }
    Ok((side, tail.len() as u64))
}

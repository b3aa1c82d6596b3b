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

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::compaction::{self, Retire, QUARANTINE_DIR};
use crate::error::{Error, Result};
use crate::fs::{free_name, sync_dir};
use crate::projection::{RecordLoc, SessionView};
use crate::record::decode_event;
use crate::segment::{
    self, decode_header, scan_records, HeaderError, ScanEnd, SegmentKind, FORMAT_VERSION,
    HEADER_BYTES_MAX, SEGMENT_SUFFIX, TEMP_SUFFIX, TORN_INFIX,
};

/// Name of the lock file in a store's folder.
pub const LOCK_FILE: &str = "LOCK";

/// What open found and did, in the order it happened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Every finding.
    pub findings: Vec<Finding>,
}

impl RecoveryReport {
    /// True when open found no damage: nothing was cut off, quarantined or left unread.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
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
    /// Segment to append to (0: none yet).
    pub newest: u32,
    /// Its length in bytes.
    pub newest_len: u64,
    /// Highest segment number any file of the session has.
    pub highest: u32,
    /// The first damage, if any: (path, offset, reason).
    pub damage: Option<(PathBuf, u64, String)>,
}

/// Everything replay learned.
pub(crate) struct Replayed {
    /// Sessions that exist (live or damaged; deleted ones are left out).
    pub sessions: Vec<ReplayedSession>,
    pub next_seq: u64,
    pub next_id: u64,
    pub report: RecoveryReport,
}

struct SegmentFile {
    number: u32,
    path: PathBuf,
    header: Result<(segment::SegmentHeader, usize), HeaderError>,
}

/// Replays every session in `dir`.
pub(crate) fn replay(dir: &Path) -> Result<Replayed> {
    let mut report = RecoveryReport::default();
    let mut groups: BTreeMap<u64, BTreeMap<u32, PathBuf>> = BTreeMap::new();
    let mut max_id = 0u64;
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    let mut temp_removed = false;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            report.findings.push(Finding::UnknownFile { path });
            continue;
        };
        if name == LOCK_FILE || name == QUARANTINE_DIR {
            continue;
        }
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if let Some((id, number)) = segment::parse_file_name(name, SEGMENT_SUFFIX) {
            if is_file {
                max_id = max_id.max(id);
                groups.entry(id).or_default().insert(number, path);
                continue;
            }
        }
        if let Some((id, _)) = segment::parse_file_name(name, TEMP_SUFFIX) {
            if is_file {
                // A compaction's output before its rename: never in force, and the old
                // generation it was copied from is still in place.
                max_id = max_id.max(id);
                std::fs::remove_file(&path)
                    .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
                temp_removed = true;
                report.findings.push(Finding::TempFileRemoved { path });
                continue;
            }
        }
        if let Some((stem, _)) = name.split_once(TORN_INFIX) {
            if is_file
                && segment::parse_file_name(&format!("{stem}{SEGMENT_SUFFIX}"), SEGMENT_SUFFIX)
                    .is_some()
            {
                continue;
            }
        }
        report.findings.push(Finding::UnknownFile { path });
    }
    if temp_removed {
        // Not needed for correctness; keeps removed temporary files from coming back.
        sync_dir(dir)?;
    }
    let mut max_seq = 0u64;
    let mut sessions = Vec::new();
    for (id, files) in groups {
        if let Some(session) = replay_session(dir, id, files, &mut report, &mut max_seq)? {
            sessions.push(session);
        }
    }
    Ok(Replayed {
        sessions,
        next_seq: max_seq + 1,
        next_id: max_id + 1,
        report,
    })
}

fn read_prefix(path: &Path, limit: usize) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(limit as u64).read_to_end(&mut bytes))
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    Ok(bytes)
}

fn replay_session(
    dir: &Path,
    id: u64,
    files: BTreeMap<u32, PathBuf>,
    report: &mut RecoveryReport,
    max_seq: &mut u64,
) -> Result<Option<ReplayedSession>> {
    let highest = files.keys().next_back().copied().unwrap_or(0);
    let mut segments = Vec::new();
    for (number, path) in files {
        let prefix = read_prefix(&path, HEADER_BYTES_MAX)?;
        let header = decode_header(&prefix);
        if let Err(HeaderError::UnsupportedVersion(found)) = header {
            return Err(Error::UnsupportedVersion {
                path,
                found,
                supported: FORMAT_VERSION,
            });
        }
        if header == Err(HeaderError::Truncated) && number == highest {
            // A crash while the segment was being created: not even its header is whole.
            let saved_to = cut_tail(&path, 0, true)?;
            let bytes = std::fs::metadata(&saved_to).map(|m| m.len()).unwrap_or(0);
            report.findings.push(Finding::TornTail {
                path,
                offset: 0,
                bytes,
                saved_to,
            });
            continue;
        }
        segments.push(SegmentFile {
            number,
            path,
            header,
        });
    }

    // The newest compacted (or recovered) generation replaces every segment below it.
    let base = segments.iter().rev().find_map(|s| match &s.header {
        Ok((h, _)) if h.kind != SegmentKind::Fresh => Some((s.number, h.kind, h.key.clone())),
        _ => None,
    });
    if let Some((base_number, kind, key)) = base {
        let superseded: Vec<&SegmentFile> =
            segments.iter().filter(|s| s.number < base_number).collect();
        if !superseded.is_empty() {
            let mut retired = Vec::new();
            for s in superseded {
                // A segment whose header cannot be read is kept, like all damage.
                let how = match (&s.header, kind) {
                    (Ok(_), SegmentKind::Compacted) => Retire::Remove,
                    _ => Retire::Quarantine,
                };
                retired.extend(compaction::retire(dir, id, s.number, s.number + 1, how)?);
            }
            report
                .findings
                .push(Finding::CompactionFinished { key, retired });
        }
        segments.retain(|s| s.number >= base_number);
    }

    let newest_number = segments.last().map(|s| s.number);
    let oldest = segments.first().map(|s| s.number).unwrap_or(0);
    let mut view: Option<SessionView> = None;
    let mut damage: Option<(PathBuf, u64, String)> = None;
    let mut newest = 0u32;
    let mut newest_len = 0u64;
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
        if header.session_id != id || header.segment != seg.number {
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
        if view.key != header.key {
            damage = Some((seg.path.clone(), 0, "header holds another key".into()));
            break;
        }
        let bytes = std::fs::read(&seg.path)
            .map_err(|e| Error::io(format!("reading {}", seg.path.display()), e))?;
        let end = scan_records(&bytes, *header_len, |offset, frame, len| {
            *max_seq = (*max_seq).max(frame.seq);
            let event = decode_event(frame.payload)?;
            let at = RecordLoc {
                segment: seg.number,
                offset,
                len,
            };
            view.apply(frame.ts_micros, &event, at)
        });
        newest = seg.number;
        newest_len = bytes.len() as u64;
        match end {
            ScanEnd::Clean => {}
            ScanEnd::TornTail { offset } if Some(seg.number) == newest_number => {
                let saved_to = cut_tail(&seg.path, offset, false)?;
                report.findings.push(Finding::TornTail {
                    path: seg.path.clone(),
                    offset,
                    bytes: newest_len - offset,
                    saved_to,
                });
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

    let key = view.as_ref().map(|v| v.key.clone()).or_else(|| {
        segments
            .iter()
            .find_map(|s| s.header.as_ref().ok().map(|(h, _)| h.key.clone()))
    });
    match view {
        Some(view) if view.is_live() => Ok(Some(ReplayedSession {
            session_id: id,
            view,
            oldest,
            newest,
            newest_len,
            highest,
            damage,
        })),
        _ => {
            if let Some((path, offset, reason)) = damage {
                // Nothing live to keep: move every file of the session aside, unchanged.
                let quarantined =
                    compaction::retire(dir, id, 0, highest.saturating_add(1), Retire::Quarantine)?;
                report.findings.push(Finding::Damaged {
                    key,
                    path,
                    offset,
                    reason,
                    quarantined,
                });
            }
            Ok(None)
        }
    }
}

/// Saves the bytes of `path` from `offset` to a side file next to it, makes that durable, then
/// cuts the segment there (or removes it, with `remove`), durably. Returns the side file.
fn cut_tail(path: &Path, offset: u64, remove: bool) -> Result<PathBuf> {
    let io = |what: &str, p: &Path| {
        let context = format!("{what} {}", p.display());
        move |e| Error::io(context, e)
    };
    let bytes = std::fs::read(path).map_err(io("reading", path))?;
    let tail = bytes
        .get(usize::try_from(offset).unwrap_or(usize::MAX)..)
        .unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("segment");
    let side = free_name(dir, &format!("{name}.torn-{offset:016x}"));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&side)
        .map_err(io("creating", &side))?;
    file.write_all(tail).map_err(io("writing", &side))?;
    // The saved bytes must be durable before the segment loses them.
    file.sync_all().map_err(io("syncing", &side))?;
    sync_dir(dir)?;
    if remove {
        std::fs::remove_file(path).map_err(io("removing", path))?;
    } else {
        let segment = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io("opening", path))?;
        segment.set_len(offset).map_err(io("truncating", path))?;
        // The cut must be durable before the next append, or a crash could leave new records
        // behind the torn bytes.
        segment.sync_all().map_err(io("syncing", path))?;
    }
    // Make the side file's entry (and a removal) durable.
    sync_dir(dir)?;
    Ok(side)
}

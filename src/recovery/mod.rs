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

mod folder;
mod job;
mod resume;
mod session;

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use crate::compaction::{self, Disposal};
use crate::erasures::{self, ErasureLog, InFolder};
use crate::error::Result;
use crate::fs::{context, sync_dir, FileSystem};
use crate::keyring::Keyring;
use crate::layout;
use crate::options::Options;
use crate::projection::SessionView;
use crate::record::Hash;
use crate::report::{Finding, RecoveryReport};
use crate::workers;

pub(crate) use folder::{list_folder, Folder};
use folder::{read_headers, Headers, SegmentFile, SessionKey};
use job::{units, Done, Ended, Job, Shared};
use resume::{known_header, skip_known_headers};
use session::{replay_session, ErasingFinish, Outcome, Replaying};

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

/// What is left to replay after an open from a checkpoint taken while the store ran: the
/// sessions whose files changed after it (written to, compacted, deleted, new), the rest
/// coming from the checkpoint.
#[derive(Default)]
pub(crate) struct Partial {
    /// The sessions to replay, by id.
    pub ids: BTreeSet<u64>,
    /// Those whose newest segment only grew (and gained roll-overs) since the checkpoint: the
    /// replay goes on from where the checkpoint left them.
    pub resume: HashMap<u64, ReplayedSession>,
    /// The highest sequence number the sessions not replayed hold.
    pub max_seq: u64,
    /// The checkpoint's next sequence number: numbers below it were handed out.
    pub next_seq: u64,
}

/// How open replays: what the options and the kind of open ask of it.
pub(crate) struct ReplayOptions {
    /// Segments that are no longer in force go to `archive/` instead of being removed.
    pub keep_history: bool,
    /// Open may change the folder (a writer); a reader changes nothing.
    pub repair: bool,
    /// `Options::idempotency_window`: the ids each session's window keeps.
    pub window: usize,
    /// The longest torn tail an unfinished append can leave (see [`torn_tail_max`]).
    pub torn_tail_max: u64,
}

/// The longest tail a crash can leave after a segment's last sound record: the appends not yet
/// synced, at most a segment's worth, plus one record. A longer "tail" (a file extended past
/// its records, a sparse or zero-filled region) is damage: the file is kept aside whole instead
/// of being copied to a side file.
pub(crate) fn torn_tail_max(segment_bytes_max: u64, record_bytes_max: usize) -> u64 {
    segment_bytes_max
        .saturating_add(record_bytes_max as u64)
        .saturating_add(64 << 10)
}

impl ReplayOptions {
    /// How a store opened with `options` replays; `repair`: it may change the folder.
    pub(crate) fn of(options: &Options, repair: bool) -> ReplayOptions {
        ReplayOptions {
            keep_history: options.keep_history,
            repair,
            window: options.idempotency_window,
            torn_tail_max: torn_tail_max(options.segment_bytes_max, options.record_bytes_max),
        }
    }

    /// What happens to segments no longer in force; `None`: a read-only open changes nothing.
    fn superseded(&self) -> Option<Disposal> {
        match (self.repair, self.keep_history) {
            (false, _) => None,
            (true, true) => Some(Disposal::Archive),
            (true, false) => Some(Disposal::Remove),
        }
    }
}

/// What the sessions' replays left for the end of open, once the sequence numbers in use are
/// known.
#[derive(Default)]
struct Leftovers {
    /// Erasing compactions a crash cut short after their rename.
    erasing: Vec<ErasingFinish>,
    /// Erasures a crash interrupted after the data key went: (session id, segments).
    unfinished: Vec<(u64, Range<u32>)>,
    /// Deleted sessions past their undo window, or not whole, and erased sessions with files
    /// left in `archive/` or `quarantine/` only: (session id, oldest, highest).
    deleted: Vec<(u64, u32, u32)>,
}

/// Replays every session of a listed folder, in stages: every header is read, then (a writer)
/// the erasure log's torn tail and a compaction's unfinished output go, then each session is
/// replayed, then what a crash left unfinished is finished.
///
/// Nothing is changed until every segment header has been read: a segment of an unsupported
/// version stops open before any repair. With `partial`, only the sessions it names are
/// replayed (the others come from a checkpoint), those it can resume from where the
/// checkpoint left them.
pub(crate) fn replay(
    fs: &dyn FileSystem,
    dir: &Path,
    folder: Folder,
    options: &ReplayOptions,
    keys: Option<&Keyring>,
    erased: &mut ErasureLog,
    partial: Option<Partial>,
) -> Result<Replayed> {
    let superseded = options.superseded();
    let mut listed = folder.segments();
    let Partial {
        ids: only,
        mut resume,
        max_seq: seen,
        next_seq: handed_out,
    } = partial.unwrap_or_else(|| Partial {
        ids: listed.keys().copied().collect(),
        ..Partial::default()
    });
    listed.retain(|id, _| only.contains(id));
    let mut skipped = skip_known_headers(&mut listed, &resume);
    let Folder {
        temps,
        next_id,
        kept_ids,
        mut report,
        ..
    } = folder;
    let Headers {
        sessions: mut groups,
        keys: mut data_keys,
    } = read_headers(fs, dir, listed, keys)?;
    // A session whose one listed file was its newest, taken out unread, is a session all the
    // same (its known header is put back by its replay, below).
    for id in skipped.keys() {
        groups.entry(*id).or_default();
    }
    if options.repair {
        // Every header was read (an unsupported version would have stopped open): changes
        // may begin.
        erased.repair(fs, dir, &mut report)?;
        remove_temps(fs, dir, &temps, &mut report)?;
    }
    let mut leftovers = Leftovers::default();
    // Erasures a crash interrupted after the data key went (an encrypted store): the files
    // cannot be read any more and were on their way out. Finished below, once the sequence
    // numbers in use are known; a read-only open only leaves them out.
    if let Some(keys) = keys {
        for id in keys.erasing()? {
            // The store logs an erasure before it writes the marker, and the marker before the
            // key goes: a marker with the key in place and no erasure logged is not the
            // store's, and erases nothing (a session's readable bytes are never removed on
            // an empty file's word).
            // (A reader leaves the session out, as before: the writer beside it may have logged
            // the erasure after the reader read the log, and be about to take the key.)
            if options.repair && keys.holds_key(id) && !erased.holds(id) {
                let path = layout::erasing_path(&dir.join(layout::KEYS_DIR), id);
                report.findings.push(Finding::UnknownFile { path });
                continue;
            }
            let mut files = groups.remove(&id).unwrap_or_default();
            if let (Some(base), true) = (resume.get(&id), skipped.contains_key(&id)) {
                files.push(known_header(base, dir));
            }
            leftovers.unfinished.push((id, numbers(&files)));
        }
    }
    // Erased sessions (the log says so) whose only files left are in `archive/` or
    // `quarantine/`: `erase_session` logs the erasure of each earlier session of its key kept
    // there before its files go, and a crash between the two left them. Finished as a reclaim
    // is, unless, encrypted, their data key is not there to read them by (then they are no
    // longer the store's to understand, and stay).
    for id in kept_ids {
        let readable = keys.is_none_or(|keys| keys.holds_key(id));
        let unfinished = leftovers.unfinished.iter().any(|&(u, _)| u == id);
        if erased.holds(id) && readable && !unfinished && !groups.contains_key(&id) {
            leftovers.deleted.push((id, 1, 0));
        }
    }
    let mut max_seq = seen;
    let mut sessions = Vec::with_capacity(groups.len());
    let mut tombstones = Vec::new();
    report.replayed_sessions = groups.len();
    let jobs: Vec<Job> = (groups.into_iter())
        .map(|(id, files)| Job {
            id,
            files,
            key: data_keys.remove(&id).unwrap_or(Ok(None)),
            erased: erased.holds(id),
            base: resume.remove(&id),
            all: skipped.remove(&id),
        })
        .collect();
    let shared = Shared {
        fs,
        dir,
        keys,
        superseded,
        window: options.window,
        torn_tail_max: options.torn_tail_max,
        failed: AtomicBool::new(false),
    };
    // Sessions run side by side, and what they found is taken in the sessions' order, as one
    // loop over them would have: each replay touches only its own files, but for those that
    // share files (a fork's links to its source's segments, a source cutting a torn tail off one
    // of them): those run one after another in the order of their ids, as one unit.
    let mut replayed: Vec<Done> = (workers::map(units(jobs), |unit| shared.replay_unit(unit)))
        .into_iter()
        .flatten()
        .collect();
    // (A unit of sessions that share files holds later ids than the units after it.)
    replayed.sort_by_key(|done| done.id);
    for done in replayed {
        report.findings.extend(done.findings);
        leftovers.erasing.extend(done.erasing);
        max_seq = max_seq.max(done.max_seq);
        // (Left unreplayed once another session's replay had failed: that failure is
        // returned.)
        let Some(outcome) = done.outcome else {
            continue;
        };
        match outcome? {
            Ended::Erased(range) => leftovers
                .deleted
                .push((done.id, range.start, range.end - 1)),
            Ended::Replayed(Outcome::Live(session)) => sessions.push(*session),
            // Restorable, or past its undo window: then the store's sweep at open reclaims it
            // as the running store does, its live forks detached first (they may share its
            // later bytes).
            Ended::Replayed(Outcome::Deleted(session, true)) => tombstones.push(*session),
            Ended::Replayed(Outcome::Deleted(session, _)) => {
                leftovers
                    .deleted
                    .push((done.id, session.oldest, session.highest));
            }
            Ended::Replayed(Outcome::Gone) => {}
        }
    }
    // One past the highest number on disk; the floor may be higher still (numbers reserved
    // that a crash took, or never handed out): they are skipped, and the gap logged.
    let found = (max_seq + 1).max(erased.max_seq + 1);
    let mut next_seq = found
        .max(layout::read_seq_floor(fs, dir, &mut report))
        .max(handed_out);
    let finishing = Finishing {
        fs,
        dir,
        keys,
        erased,
        found,
        next_seq: &mut next_seq,
        report: &mut report,
    };
    finishing.finish(leftovers, superseded.is_some())?;
    Ok(Replayed {
        sessions,
        tombstones,
        next_seq,
        next_id,
        report,
    })
}

/// What the replay of one session alone found.
pub(crate) struct Alone {
    /// The session, if it exists (possibly damaged: its `damage` says where); `None` when
    /// nothing of it is left in place or its files hold it deleted.
    pub live: Option<ReplayedSession>,
    /// The highest sequence number any of its records holds.
    pub max_seq: u64,
    /// What the replay found and did.
    pub report: RecoveryReport,
}

/// Replays one session, `id`, from its segments `numbers` alone, in a running store (the
/// first read or write of a session whose files changed after the checkpoint the store opened
/// from): every header is read, then the session is replayed as open replays it, repairing as
/// open does (a torn tail cut off and saved, a session with nothing sound quarantined) except a
/// live session's damage, which the caller rewrites. A session whose files hold it deleted is
/// quarantined whole: the store held it live, so its files are not what the store wrote.
pub(crate) fn replay_alone(
    fs: &dyn FileSystem,
    dir: &Path,
    id: u64,
    numbers: Vec<u32>,
    options: &ReplayOptions,
    keys: Option<&Keyring>,
) -> Result<Alone> {
    let (files, key) = session_headers(fs, dir, id, numbers, keys)?;
    let mut report = RecoveryReport::default();
    let mut max_seq = 0;
    // An erasing compaction a crash cut short cannot follow a clean close: none to finish.
    let mut erasing = Vec::new();
    let mut replaying = Replaying {
        fs,
        dir,
        id,
        key,
        superseded: options.superseded(),
        report: &mut report,
        erasing: &mut erasing,
        max_seq: &mut max_seq,
        window: options.window,
        torn_tail_max: options.torn_tail_max,
    };
    let live = match replay_session(&mut replaying, files)? {
        Outcome::Live(session) => Some(*session),
        Outcome::Deleted(session, _) => {
            let quarantined = match options.superseded() {
                Some(_) => compaction::retire(
                    fs,
                    dir,
                    id,
                    0,
                    session.highest.saturating_add(1),
                    Disposal::Quarantine,
                )?,
                None => Vec::new(),
            };
            report.findings.push(Finding::Damaged {
                key: Some(session.view.key.clone()),
                path: layout::segment_path(dir, id, session.newest),
                offset: 0,
                reason: "its files hold the session deleted, where the checkpoint held it live"
                    .into(),
                quarantined,
            });
            None
        }
        Outcome::Gone => None,
    };
    Ok(Alone {
        live,
        max_seq,
        report,
    })
}

/// Session `id`'s segments `numbers` with their headers, lowest first, and its data key.
fn session_headers(
    fs: &dyn FileSystem,
    dir: &Path,
    id: u64,
    numbers: Vec<u32>,
    keys: Option<&Keyring>,
) -> Result<(Vec<SegmentFile>, SessionKey)> {
    let listed = std::iter::once((id, numbers)).collect();
    let Headers {
        sessions: mut groups,
        keys: mut data_keys,
    } = read_headers(fs, dir, listed, keys)?;
    let mut files = groups.remove(&id).unwrap_or_default();
    files.sort_by_key(|f| f.number);
    Ok((files, data_keys.remove(&id).unwrap_or(Ok(None))))
}

/// The segment numbers from the lowest of `files` to the highest (empty when there are none).
fn numbers(files: &[SegmentFile]) -> Range<u32> {
    let numbers = files.iter().map(|f| f.number);
    numbers.clone().min().unwrap_or(1)..numbers.max().unwrap_or(0) + 1
}

/// Removes a compaction's output that never reached its rename: never in force, and the
/// generation it was copied from is still in place.
fn remove_temps(
    fs: &dyn FileSystem,
    dir: &Path,
    temps: &[PathBuf],
    report: &mut RecoveryReport,
) -> Result<()> {
    for path in temps {
        fs.remove_file(path).map_err(context("removing", path))?;
        report
            .findings
            .push(Finding::TempFileRemoved { path: path.clone() });
    }
    if !temps.is_empty() {
        // Keeps removed temporary files from coming back after a crash.
        sync_dir(fs, dir)?;
    }
    Ok(())
}

/// The last stage of replay: erasures and reclaims a crash cut short, each logged in the
/// erasure log (with the next sequence number) before it is carried out.
struct Finishing<'a> {
    fs: &'a dyn FileSystem,
    dir: &'a Path,
    keys: Option<&'a Keyring>,
    erased: &'a mut ErasureLog,
    /// One past the highest sequence number on disk.
    found: u64,
    next_seq: &'a mut u64,
    report: &'a mut RecoveryReport,
}

impl Finishing<'_> {
    /// Finishes every leftover; `writable`: the open may change the folder (else only the
    /// erasing compactions, which a read-only replay never leaves, are looked at).
    fn finish(mut self, leftovers: Leftovers, writable: bool) -> Result<()> {
        let (fs, dir) = (self.fs, self.dir);
        if writable {
            // Numbers reserved but found nowhere: the log says so before any is passed over.
            self.erased.log_gap(fs, dir, self.found, self.next_seq)?;
        }
        for finish in leftovers.erasing {
            // An erasing compaction a crash cut short: logged (once), then finished.
            let (id, snapshot_seq) = (finish.id, finish.snapshot_seq);
            self.erased
                .log_history(fs, dir, id, snapshot_seq, self.next_seq)?;
            let mut retired = erasures::erase_traces(fs, dir, finish.id, None, InFolder::Listed)?;
            for number in finish.replaced {
                retired.extend(compaction::retire(
                    fs,
                    dir,
                    finish.id,
                    number,
                    number + 1,
                    Disposal::Remove,
                )?);
            }
            self.report.findings.push(Finding::CompactionFinished {
                key: finish.key,
                retired,
            });
        }
        if !writable {
            return Ok(());
        }
        for (id, range) in leftovers.unfinished {
            self.erased.log(fs, dir, id, self.next_seq)?;
            let gone =
                erasures::erase_session_files(fs, dir, self.keys, id, range, InFolder::Listed)?;
            self.report.findings.push(Finding::ErasureFinished {
                session_id: id,
                removed: gone,
            });
        }
        self.reclaim(leftovers.deleted)
    }

    /// A delete whose files a crash kept: finish reclaiming them, after recording that their
    /// sequence numbers are used. A deleted session is erased, whatever `keep_history` says.
    fn reclaim(&mut self, deleted: Vec<(u64, u32, u32)>) -> Result<()> {
        if deleted.is_empty() {
            return Ok(());
        }
        let (fs, dir) = (self.fs, self.dir);
        layout::write_seq_floor(fs, dir, *self.next_seq)?;
        for (id, oldest, highest) in deleted {
            self.erased.log(fs, dir, id, self.next_seq)?;
            let range = oldest..highest.saturating_add(1);
            erasures::erase_session_files(fs, dir, self.keys, id, range, InFolder::Listed)?;
        }
        Ok(())
    }
}

//! One session's replay, in stages: drop a newest segment whose header a crash left torn;
//! find the generation in force and what it replaced; read every segment in force through the
//! projection (honouring a fork's cuts); then retire what a compaction left, and say what the
//! session is now (live, deleted, or gone to quarantine).

use std::path::{Path, PathBuf};

use crate::compaction::{self, Disposal};
use crate::error::Result;
use crate::fs::FileSystem;
use crate::layout::{segment_path, NUMBER_LIMIT};
use crate::location::RecordLoc;
use crate::projection::SessionView;
use crate::reader::{ForkCuts, ReadPolicy, Record, SegmentReader, SegmentRef};
use crate::record::{chain_start, decode_event, open_payload, record_hash, Event, Hash};
use crate::report::{Finding, RecoveryReport};
use crate::segment::{self, HeaderError, ScanEnd, SegmentHeader, SegmentKind};
use crate::torn_tail::cut_tail;

use super::folder::{SegmentFile, SessionKey};
use super::ReplayedSession;

/// What one session's replay works with: the folder, the session, and what it reports back.
pub(super) struct Replaying<'a> {
    pub fs: &'a dyn FileSystem,
    pub dir: &'a Path,
    /// The session id.
    pub id: u64,
    /// Its data key (encrypted store), or why it cannot be had.
    pub key: SessionKey,
    /// What happens to segments no longer in force; `None`: a read-only open changes nothing.
    pub superseded: Option<Disposal>,
    pub report: &'a mut RecoveryReport,
    /// Erasing compactions to finish once the sequence numbers in use are known.
    pub erasing: &'a mut Vec<ErasingFinish>,
    /// The highest sequence number any record holds.
    pub max_seq: &'a mut u64,
    /// The ids each session's window keeps.
    pub window: usize,
    /// The longest torn tail an unfinished append can leave.
    pub torn_tail_max: u64,
}

/// What a session's replay found it to be.
pub(super) enum Outcome {
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
pub(super) struct ErasingFinish {
    pub id: u64,
    pub key: String,
    pub snapshot_seq: u64,
    pub replaced: Vec<u32>,
}

/// The first damage of a session: (file, offset, what is wrong).
type Damage = (PathBuf, u64, String);

/// The generation in force when a compacted or recovered segment replaced every segment
/// below it: its number, kind and session key.
type Base = (u32, SegmentKind, String);

/// What reading the segments in force left.
pub(super) struct Scan {
    pub(super) view: Option<SessionView>,
    damage: Option<Damage>,
    /// The segment to append to, its length and format version.
    newest: u32,
    newest_len: u64,
    newest_version: u32,
    /// The hash of the last good record.
    head: Option<Hash>,
    /// A `Fork` record opened a forked segment.
    fork_record_seen: bool,
    /// The sequence number of the base generation's snapshot.
    base_snapshot_seq: Option<u64>,
    /// A resumed scan: the hash the next record read must link to (the last one the
    /// checkpoint holds).
    link: Option<Hash>,
}

/// Replays one session's segments (sorted by number).
pub(super) fn replay_session(
    r: &mut Replaying<'_>,
    mut segments: Vec<SegmentFile>,
) -> Result<Outcome> {
    let highest = segments.last().map_or(0, |s| s.number);
    drop_torn_newest(r, &mut segments)?;
    let (base, replaced) = split_base(&mut segments);
    let forks = ForkCuts::of(
        segments
            .iter()
            .map(|s| (s.number, s.header.as_ref().ok().map(|(h, _)| h))),
    );
    let own_key = segments
        .iter()
        .rev()
        .find_map(|s| s.header.as_ref().ok().map(|(h, _)| h.key.clone()));
    let start = Scan::new(own_key.map(|key| SessionView::with_window(&key, r.window)));
    let mut scan = read_segments(r, &segments, &forks, start, None)?;
    if unfinished_fork(r, &segments, &forks, &scan, highest)? {
        return Ok(Outcome::Gone);
    }
    let deleted = scan.view.as_ref().is_some_and(|v| v.deleted);
    // A deleted session missing its first segments is a reclaim a crash interrupted: it is
    // never restorable, whatever the retention.
    let partial = segments.first().is_some_and(|first| {
        first.number != 1 && matches!(&first.header, Ok((h, _)) if h.kind == SegmentKind::Fresh)
    });
    // A session's history starts with segment 1 or with a compacted generation; a fresh
    // segment above 1 at the start means earlier segments are missing (a deleted session's
    // reclaim, interrupted, is the one exception: it removes the oldest first).
    if let (Some(first), true, None, false) = (segments.first(), partial, &scan.damage, deleted) {
        scan.damage = Some((
            first.path.clone(),
            0,
            format!(
                "segments 1 to {} of the session are missing",
                first.number - 1
            ),
        ));
        scan.view = None; // nothing before the first record is known: keep none of it
    }
    if let (Some(base), Some(superseded)) = (base, r.superseded) {
        finish_compaction(r, base, replaced, &segments, &scan, superseded)?;
    }
    let oldest = segments.first().map_or(0, |s| s.number);
    outcome(r, oldest, &segments, scan, highest, deleted && !partial)
}

/// A crash while the session's newest segment was being created: not even its header is
/// whole (or, read-only, a writer is creating it right now). A writer saves and removes it.
fn drop_torn_newest(r: &mut Replaying<'_>, segments: &mut Vec<SegmentFile>) -> Result<()> {
    let Some(last) = segments.pop() else {
        return Ok(());
    };
    if last.header != Err(HeaderError::Truncated) {
        segments.push(last);
        return Ok(());
    }
    if r.superseded.is_some() {
        let (saved_to, bytes) = cut_tail(r.fs, &last.path, 0, true)?;
        r.report.findings.push(Finding::TornTail {
            path: last.path,
            offset: 0,
            bytes,
            saved_to,
        });
    } else {
        let bytes = r.fs.stat(&last.path).map_or(0, |s| s.len);
        r.report.findings.push(Finding::Unfinished {
            path: last.path,
            offset: 0,
            bytes,
        });
    }
    Ok(())
}

/// The newest compacted (or recovered) generation replaces every segment below it: keeps the
/// segments from it on in `segments`, and returns it and the ones it replaced (retired only
/// once the generation has replayed cleanly).
fn split_base(segments: &mut Vec<SegmentFile>) -> (Option<Base>, Vec<SegmentFile>) {
    let base = segments.iter().rev().find_map(|s| match &s.header {
        Ok((h, _)) if matches!(h.kind, SegmentKind::Compacted | SegmentKind::Recovered) => {
            Some((s.number, h.kind, h.key.clone()))
        }
        _ => None,
    });
    let Some((base_number, ..)) = &base else {
        return (None, Vec::new());
    };
    let (below, rest): (Vec<_>, Vec<_>) = std::mem::take(segments)
        .into_iter()
        .partition(|s| s.number < *base_number);
    *segments = rest;
    (base, below)
}

impl Scan {
    /// A scan that starts from `view` (`None`: from the first header's key).
    pub(super) fn new(view: Option<SessionView>) -> Scan {
        Scan {
            view,
            damage: None,
            newest: 0,
            newest_len: 0,
            newest_version: segment::FORMAT_VERSION,
            head: None,
            fork_record_seen: false,
            base_snapshot_seq: None,
            link: None,
        }
    }

    /// A scan that goes on from where a checkpoint left a session: its records up to byte
    /// `newest_len` of segment `newest` are already in `view`, the last of them hashing to
    /// `head`.
    pub(super) fn resumed(view: SessionView, newest: u32, newest_len: u64, head: Hash) -> Scan {
        Scan {
            newest,
            newest_len,
            head: Some(head),
            link: Some(head),
            // A fork's own record came before the checkpoint.
            fork_record_seen: true,
            ..Scan::new(Some(view))
        }
    }
}

/// Reads the segments in force, in order, through the session's projection (`scan`: where it
/// starts), up to the first damage; cuts (a writer) or reports (a reader) a torn tail of the
/// newest. `resume_at`: the first segment is read from this offset on, not from its header's
/// end (its records before it are in the scan's view already).
pub(super) fn read_segments(
    r: &mut Replaying<'_>,
    segments: &[SegmentFile],
    forks: &ForkCuts,
    mut scan: Scan,
    resume_at: Option<u64>,
) -> Result<Scan> {
    let oldest = segments.first().map_or(0, |s| s.number);
    let newest_number = segments.last().map(|s| s.number);
    for (i, seg) in segments.iter().enumerate() {
        let expected = oldest.checked_add(u32::try_from(i).unwrap_or(u32::MAX));
        let header = match check_header(r, seg, expected, forks, &mut scan) {
            Ok(header) => header,
            Err(damage) => {
                scan.damage = Some(damage);
                break;
            }
        };
        if header.kind == SegmentKind::Fresh && i > 0 && header.prev_len != scan.newest_len {
            let previous = segments.get(i - 1).map_or(&seg.path, |p| &p.path);
            scan.damage = Some((
                previous.clone(),
                scan.newest_len,
                format!(
                    "segment holds {} bytes, but the next one began when it held {}",
                    scan.newest_len, header.prev_len
                ),
            ));
            break;
        }
        let newest = Some(seg.number) == newest_number;
        let start = resume_at.filter(|_| i == 0);
        if let Some(damage) = read_segment(r, seg, start, newest, forks, &mut scan)? {
            scan.damage = Some(damage);
            break;
        }
    }
    Ok(scan)
}

/// The header of the `i`th segment in force (numbered `expected`), if it is sound and belongs
/// here: no gap before it, its session and number those of its name (a fork's inherited
/// segments name the source), and its key the session's.
fn check_header<'s>(
    r: &Replaying<'_>,
    seg: &'s SegmentFile,
    expected: Option<u32>,
    forks: &ForkCuts,
    scan: &mut Scan,
) -> std::result::Result<&'s SegmentHeader, Damage> {
    let damage = |offset, reason: String| (seg.path.clone(), offset, reason);
    if expected != Some(seg.number) {
        let missing = expected.unwrap_or(0);
        return Err(damage(
            0,
            format!("segment {missing} of the session is missing"),
        ));
    }
    let header = match &seg.header {
        Ok((h, _)) => h,
        Err(e) => return Err(damage(0, format!("bad segment header: {e:?}"))),
    };
    let inherited = forks.inherited(seg.number);
    if (header.session_id != r.id && !inherited) || header.segment != seg.number {
        return Err(damage(
            0,
            format!(
                "header names session {:x} segment {}, not the file's name",
                header.session_id, header.segment
            ),
        ));
    }
    let view = scan
        .view
        .get_or_insert_with(|| SessionView::with_window(&header.key, r.window));
    if view.key != header.key && !inherited {
        return Err(damage(0, "header holds another key".into()));
    }
    Ok(header)
}

/// Reads one segment's records through the projection; returns the damage that ends the
/// session's replay here, if any. `start`: where a resumed scan goes on in its first segment
/// (`None`: from the header's end); `newest`: the last segment in force.
fn read_segment(
    r: &mut Replaying<'_>,
    seg: &SegmentFile,
    start: Option<u64>,
    newest: bool,
    forks: &ForkCuts,
    scan: &mut Scan,
) -> Result<Option<Damage>> {
    let Ok((header, header_len)) = &seg.header else {
        return Ok(None); // never: checked before
    };
    let cut = forks.cut(seg.number);
    let segment = SegmentRef {
        number: seg.number,
        path: seg.path.clone(),
    };
    let policy = ReadPolicy {
        tail_max: r.torn_tail_max,
        ..ReadPolicy::SCAN
    };
    let first = scan.newest == 0;
    let records_from = *header_len as u64;
    let start = start.unwrap_or(records_from);
    let mut reader = SegmentReader::new(segment, start, cut, policy);
    let size = reader.file_len(r.fs)?;
    if cut.is_some_and(|cut| cut > size) {
        return Ok(Some((
            seg.path.clone(),
            size,
            "a fork shares more of this segment than it holds".into(),
        )));
    }
    let generation = matches!(header.kind, SegmentKind::Compacted | SegmentKind::Recovered);
    let forked_segment = header.kind == SegmentKind::Forked;
    // A resumed scan starts past the records a checkpoint holds: a fork's record, and a
    // generation's snapshot, among them.
    let mut first_record = start == records_from;
    let mut snapshot_seen = generation && start > records_from;
    // The last good record's bytes: only its hash is needed (the next record links to it);
    // verify checks the rest of the chain.
    let mut last_record = Vec::new();
    let mut scratch = Vec::new(); // an encrypted store's opened payload
    let mut link = scan.link.take();
    let Some(view) = scan.view.as_mut() else {
        return Ok(None); // never: the header check made it
    };
    let mut visit = |record: &Record<'_>| -> std::result::Result<(), String> {
        let frame = &record.frame;
        if frame.seq >= NUMBER_LIMIT {
            return Err(format!("sequence number {} out of range", frame.seq));
        }
        segment::check_layout(header.version, frame)?;
        *r.max_seq = (*r.max_seq).max(frame.seq);
        if record.shared {
            return Ok(()); // the source's, after the fork
        }
        if let (Some(expected), Some(prev)) = (link.take(), frame.prev) {
            if prev != expected {
                return Err(
                    "the first record after the checkpoint does not link to its last".into(),
                );
            }
        }
        let key = r.key.as_ref().map_err(Clone::clone)?;
        let payload = open_payload(frame, key.as_deref(), &mut scratch)?;
        let event = decode_event(payload)?;
        let is_fork = matches!(event, Event::Fork { .. });
        if is_fork != (forked_segment && first_record) {
            return Err("a fork record must open a forked segment, and only that".into());
        }
        first_record = false;
        // Only the session's own Fork record (in its highest forked segment) makes it a
        // fork: an inherited segment's is its source's.
        scan.fork_record_seen |= is_fork && forks.forked_at == Some(seg.number);
        if matches!(event, Event::Snapshot(_)) {
            if !generation || snapshot_seen {
                return Err("snapshot record outside a compacted generation's end".into());
            }
            snapshot_seen = true;
            if first && generation {
                scan.base_snapshot_seq = Some(frame.seq);
            }
        }
        let at = RecordLoc {
            seq: frame.seq,
            segment: seg.number,
            offset: record.offset,
            len: record.len,
        };
        view.apply(frame.ts_micros, &event, at)?;
        last_record.clear();
        last_record.extend_from_slice(record.bytes);
        Ok(())
    };
    let mut end = ScanEnd::Clean;
    while let Some(record) = reader.next(r.fs)? {
        if let Err(reason) = visit(&record) {
            // Whatever lies past a fork's share of a segment is the source's business.
            if !record.shared {
                end = ScanEnd::Damage {
                    offset: record.offset,
                    reason,
                };
            }
            break;
        }
    }
    if let Some(read_end) = reader.end() {
        end = read_end.scan_end();
    }
    scan.link = link;
    if !last_record.is_empty() {
        scan.head = Some(record_hash(&last_record));
    }
    scan.newest = seg.number;
    scan.newest_len = reader.size().unwrap_or(size);
    scan.newest_version = header.version;
    end_damage(r, seg, end, generation && !snapshot_seen, newest, scan)
}

/// What the end of a segment's records means: nothing wrong, a torn tail of the session's
/// newest segment (cut off or reported), or damage. `no_snapshot`: a compacted generation
/// ended before its snapshot.
fn end_damage(
    r: &mut Replaying<'_>,
    seg: &SegmentFile,
    end: ScanEnd,
    no_snapshot: bool,
    newest: bool,
    scan: &mut Scan,
) -> Result<Option<Damage>> {
    let damage = |offset, reason: &str| Some((seg.path.clone(), offset, reason.to_owned()));
    Ok(match end {
        // A generation is written whole (temporary file, sync, rename): one that ends
        // before its snapshot was cut short after the fact.
        ScanEnd::Clean | ScanEnd::TornTail { .. } if no_snapshot => damage(
            scan.newest_len,
            "compacted generation ends before its snapshot",
        ),
        ScanEnd::Clean => None,
        ScanEnd::TornTail { offset } if newest => {
            torn_newest(r, &seg.path, offset, scan.newest_len)?;
            scan.newest_len = offset;
            None
        }
        ScanEnd::TornTail { offset } => damage(
            offset,
            "record cut short in a segment that is not the session's newest",
        ),
        ScanEnd::Damage { offset, reason }
            if scan.newest_len.saturating_sub(offset) > r.torn_tail_max =>
        {
            damage(
                offset,
                &format!(
                    "{reason}, with {} bytes after it: more than an unfinished append leaves",
                    scan.newest_len.saturating_sub(offset)
                ),
            )
        }
        ScanEnd::Damage { offset, reason } => Some((seg.path.clone(), offset, reason)),
    })
}

/// A record cut short at `offset` of the session's newest segment (`len` bytes long): a
/// writer saves and cuts it off, a reader reports it.
fn torn_newest(r: &mut Replaying<'_>, path: &Path, offset: u64, len: u64) -> Result<()> {
    let path = path.to_path_buf();
    if r.superseded.is_some() {
        let (saved_to, bytes) = cut_tail(r.fs, &path, offset, false)?;
        r.report.findings.push(Finding::TornTail {
            path,
            offset,
            bytes,
            saved_to,
        });
    } else {
        r.report.findings.push(Finding::Unfinished {
            path,
            offset,
            bytes: len - offset,
        });
    }
    Ok(())
}

/// A fork a crash interrupted: links to the source's segments with no forked segment after
/// them, or a forked segment without its `Fork` record. Nothing of it was acknowledged; its
/// files are only extra names of the source's, and a header: a writer removes them (durably).
/// True when the session was such a fork.
fn unfinished_fork(
    r: &mut Replaying<'_>,
    segments: &[SegmentFile],
    forks: &ForkCuts,
    scan: &Scan,
    highest: u32,
) -> Result<bool> {
    let id = r.id;
    let newest_foreign = segments
        .last()
        .and_then(|s| s.header.as_ref().ok())
        .is_some_and(|(h, _)| h.session_id != id);
    // Only extra names may go: a file naming another session with no other name of its own
    // is not a half-made fork's link, and is left to the damage rules. A half-made fork has no
    // file of its own but its forked segment (made after the links), and no header unread but
    // its newest file's, which a crash may have cut short: any other file of the session is
    // history it wrote, never removed as a fork's leftovers.
    let newest = segments.last().map(|s| s.number);
    let only_links = segments.iter().all(|s| match &s.header {
        Ok((h, _)) if h.session_id != id => r.fs.link_count(&s.path).is_ok_and(|n| n > 1),
        Ok(_) => Some(s.number) == forks.forked_at,
        Err(_) => Some(s.number) == newest,
    });
    // A forked segment holding nothing past its header was made before its links were all
    // durable: a disk that reorders may have kept some of them and not others, so a gap among
    // the links is no damage then, only the fork's unfinished making.
    let forked_empty = forks
        .forked_at
        .and_then(|number| segments.iter().find(|s| s.number == number))
        .is_some_and(|s| match &s.header {
            Ok((h, header_len)) => {
                h.session_id == id
                    && r.fs
                        .stat(&s.path)
                        .is_ok_and(|st| st.len == *header_len as u64)
            }
            Err(_) => false,
        });
    let unfinished = newest_foreign
        || (forks.forked_at.is_some()
            && !scan.fork_record_seen
            && (scan.damage.is_none() || forked_empty));
    if !(unfinished && only_links) {
        return Ok(false);
    }
    let bytes = segments
        .last()
        .map_or(0, |s| r.fs.stat(&s.path).map_or(0, |st| st.len));
    let path = segments
        .last()
        .map(|s| s.path.clone())
        .unwrap_or_else(|| segment_path(r.dir, id, highest));
    if r.superseded.is_some() {
        // Removed durably: the half-made fork does not come back.
        compaction::retire(r.fs, r.dir, id, 1, highest + 1, Disposal::Remove)?;
    }
    r.report.findings.push(Finding::Unfinished {
        path,
        offset: 0,
        bytes,
    });
    Ok(true)
}

/// Finishes the compaction a crash interrupted, now that its generation proved sound: retires
/// what it replaced (damage, and the old copies when the new one is damaged, to quarantine).
/// A compacted generation that erased cleared messages (`prev_len` 1) removes what it
/// replaced, and the session's archive, instead: logged and carried out by `replay` once the
/// sequence numbers are known.
fn finish_compaction(
    r: &mut Replaying<'_>,
    (_, kind, key): Base,
    replaced: Vec<SegmentFile>,
    segments: &[SegmentFile],
    scan: &Scan,
    superseded: Disposal,
) -> Result<()> {
    let erasing = segments.first().is_some_and(
        |s| matches!(&s.header, Ok((h, _)) if h.kind == SegmentKind::Compacted && h.prev_len == 1),
    );
    let replaced = match (erasing, &scan.damage, scan.base_snapshot_seq) {
        (true, None, Some(snapshot_seq)) => {
            // Segments whose header is bad are kept (quarantined) below, as ever.
            let (sound, bad): (Vec<_>, Vec<_>) =
                replaced.into_iter().partition(|s| s.header.is_ok());
            if !sound.is_empty() {
                r.erasing.push(ErasingFinish {
                    id: r.id,
                    key: key.clone(),
                    snapshot_seq,
                    replaced: sound.iter().map(|s| s.number).collect(),
                });
            }
            bad
        }
        _ => replaced,
    };
    let mut retired = Vec::new();
    for s in &replaced {
        let how = match (&s.header, kind, &scan.damage) {
            (Ok(_), SegmentKind::Compacted, None) => superseded,
            _ => Disposal::Quarantine,
        };
        retired.extend(compaction::retire(
            r.fs,
            r.dir,
            r.id,
            s.number,
            s.number + 1,
            how,
        )?);
    }
    if !retired.is_empty() {
        r.report
            .findings
            .push(Finding::CompactionFinished { key, retired });
    }
    Ok(())
}

/// What the session is after its replay: live (damage and all, repaired by the store), deleted
/// (`restorable`: whole, so within the undo window it can come back), or gone: with damage
/// and nothing live, every file of the session moves aside unchanged (a writer); segments
/// with headers but no record (a crash right after creating a session's first segment) hold
/// nothing to replay or lose, and stay, never written to.
pub(super) fn outcome(
    r: &mut Replaying<'_>,
    oldest: u32,
    segments: &[SegmentFile],
    scan: Scan,
    highest: u32,
    restorable: bool,
) -> Result<Outcome> {
    let Scan {
        view,
        damage,
        newest,
        newest_len,
        newest_version,
        head,
        ..
    } = scan;
    let key = view.as_ref().map(|v| v.key.clone()).or_else(|| {
        segments
            .iter()
            .find_map(|s| s.header.as_ref().ok().map(|(h, _)| h.key.clone()))
    });
    let id = r.id;
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
        (Some(view), None) if view.deleted => {
            Ok(Outcome::Deleted(replayed(view, None), restorable))
        }
        (_, Some((path, offset, reason))) => {
            let quarantined = match r.superseded {
                Some(_) => compaction::retire(
                    r.fs,
                    r.dir,
                    id,
                    0,
                    highest.saturating_add(1),
                    Disposal::Quarantine,
                )?,
                None => Vec::new(),
            };
            r.report.findings.push(Finding::Damaged {
                key,
                path,
                offset,
                reason,
                quarantined,
            });
            Ok(Outcome::Gone)
        }
        _ => Ok(Outcome::Gone),
    }
}

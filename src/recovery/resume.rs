//! A session's replay that goes on from where a checkpoint taken while the store ran left it:
//! only the records written after the checkpoint are read, so an open after a crash costs what
//! was written since the last checkpoint, not everything the store holds.
//!
//! The caller has checked that the session's files below its newest segment are as the
//! checkpoint recorded them, and that the newest one only grew. Here the newest must still have
//! a sound header and every segment after it must be a fresh one (a roll-over): a compaction,
//! a fork or a recovery after the checkpoint rewrote more than a tail, and the session is
//! replayed whole instead.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::layout::segment_path;
use crate::reader::ForkCuts;
use crate::segment::{self, SegmentHeader, SegmentKind};

use super::folder::SegmentFile;
use super::session::{outcome, read_segments, Outcome, Replaying, Scan};
use super::ReplayedSession;

/// Replays the records of session `base` (as the checkpoint left it) written after the
/// checkpoint, from its segment files `segments` (every one of the session, sorted by number).
/// Returns the files back when the session cannot be resumed and must be replayed whole.
pub(super) fn resume_session(
    r: &mut Replaying<'_>,
    base: ReplayedSession,
    segments: Vec<SegmentFile>,
) -> crate::error::Result<Result<Outcome, Vec<SegmentFile>>> {
    let from = base.newest;
    let resumable = base.newest != 0
        && segments
            .iter()
            .any(|s| s.number == from && s.header.is_ok())
        && segments.iter().filter(|s| s.number > from).all(
            |s| matches!(&s.header, Ok((h, _)) if h.kind == SegmentKind::Fresh && h.session_id == r.id),
        );
    if !resumable {
        return Ok(Err(segments));
    }
    let highest = segments.last().map_or(from, |s| s.number);
    let tail: Vec<SegmentFile> = segments.into_iter().filter(|s| s.number >= from).collect();
    // Cuts apply to the segments a fork shares with its source, all below its own newest.
    let forks = ForkCuts::default();
    let scan = Scan::resumed(base.view, from, base.newest_len, base.head);
    let scan = read_segments(r, &tail, &forks, scan, Some(base.newest_len))?;
    let deleted = scan.view.as_ref().is_some_and(|v| v.deleted);
    // The checkpoint held the session whole, so a delete after it is restorable.
    outcome(r, base.oldest, &tail, scan, highest, deleted).map(Ok)
}

/// Takes out of `listed` the newest segment of each session to resume that held records when
/// the checkpoint was taken: its header is not read again (the checkpoint vouched for its bytes
/// up to `newest_len`; [`known_header`] puts it back as the checkpoint knows it). Returns
/// those sessions' full lists, for a whole replay if one cannot be resumed after all.
pub(super) fn skip_known_headers(
    listed: &mut BTreeMap<u64, Vec<u32>>,
    resume: &HashMap<u64, ReplayedSession>,
) -> HashMap<u64, Vec<u32>> {
    let mut skipped = HashMap::new();
    for (id, base) in resume {
        let Some(numbers) = listed.get_mut(id) else {
            continue;
        };
        let sealed = segment::is_sealed(base.newest_version);
        let holds_records = base.newest_len > segment::header_len(&base.view.key, sealed);
        if holds_records && numbers.contains(&base.newest) {
            skipped.insert(*id, numbers.clone());
            numbers.retain(|&n| n != base.newest);
        }
    }
    skipped
}

/// The newest segment of a session [`skip_known_headers`] took out, with the header the
/// checkpoint (`base`) knows of: its version and key, and its length. (Its kind does not
/// matter past its first record: no record after it may be a fork's or a snapshot.)
pub(super) fn known_header(base: &ReplayedSession, dir: &Path) -> SegmentFile {
    let sealed = segment::is_sealed(base.newest_version);
    let header = SegmentHeader {
        version: base.newest_version,
        kind: SegmentKind::Fresh,
        session_id: base.session_id,
        segment: base.newest,
        prev_len: 0,
        key: base.view.key.clone(),
    };
    let len = segment::header_len(&base.view.key, sealed) as usize;
    SegmentFile {
        number: base.newest,
        path: segment_path(dir, base.session_id, base.newest),
        header: Ok((header, len)),
    }
}

//! A session's replay that goes on from where a checkpoint taken while the store ran left it:
//! only the records written after the checkpoint are read, so an open after a crash costs what
//! was written since the last checkpoint, not everything the store holds.
//!
//! The caller has checked that the session's files below its newest segment are as the
//! checkpoint recorded them, and that the newest one only grew. Here the newest must still have
//! a sound header and every segment after it must be a fresh one (a roll-over): a compaction,
//! a fork or a recovery after the checkpoint rewrote more than a tail, and the session is
//! replayed whole instead.

use crate::reader::ForkCuts;
use crate::segment::SegmentKind;

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

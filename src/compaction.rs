//! Writing a new generation of a session: its live messages and a snapshot of its metadata,
//! in one new segment that replaces every lower-numbered one; and retiring the old segments.
//!
//! The protocol, in order (docs/FORMAT.md explains why each step is there):
//! 1. write the generation to `{name}.tmp` in the store's folder and fsync it;
//! 2. rename it to its final segment name and fsync the folder: from here on open replays the
//!    new generation and ignores every lower-numbered segment of the session;
//! 3. retire the old segments (remove them, move them to `archive/` or `quarantine/`) and
//!    fsync the folder. Open finishes this step if a crash interrupts it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cipher::DataKey;
use crate::error::{Error, Result};
use crate::fs::{
    context, free_name, move_aside, subfolder, sync_dir, FileHandle, FileSystem, OpenMode,
};
use crate::layout::{
    listed_segments, segment_name, segment_path, segment_temp_path, ARCHIVE_DIR, QUARANTINE_DIR,
};
use crate::location::MessageLoc;
use crate::projection::SessionView;
use crate::record::{encode_record, Event, Hash};
use crate::segment::{self, SegmentFiles, SegmentHeader, SegmentKind};

/// A generation written and in force.
pub struct Generation {
    /// Its length in bytes: where the next record goes.
    pub len: u64,
    /// Its header's length.
    pub header_len: u64,
    /// Where each live message now lies, in order.
    pub messages: Vec<MessageLoc>,
    /// Where each message kept for `undo_clear` now lies (empty when none were kept).
    pub cleared: Vec<MessageLoc>,
    /// The hash of its last record: the `prev` of the session's next one.
    pub head: Hash,
}

/// How many messages compaction reads from the old segments at a time.
const COPY_BATCH: usize = 256;
/// Bytes compaction buffers before each write.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// What a new generation does with the messages the session's last clear removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleared {
    /// Writes them first, followed by that clear (its own sequence number and time), so
    /// `undo_clear` still works.
    Keep,
    /// Drops them for good: there are none, or an explicit compaction holds only what is live.
    Drop,
    /// Drops them past their undo window. The generation's header says so (`prev_len` 1), so
    /// that an open finishing it after a crash erases what it replaces instead of archiving it.
    Erase,
}

impl Cleared {
    /// For `view`: kept within their undo window (`retention`) unless `explicit`, erased once
    /// past it.
    pub fn of(view: &SessionView, retention: Duration, explicit: bool) -> Cleared {
        let within = view.clear_undoable(retention);
        if within && !explicit {
            Cleared::Keep
        } else if view.cleared_by.is_some() && !within {
            Cleared::Erase
        } else {
            Cleared::Drop
        }
    }
}

/// A generation to write: whose, under which number and kind, what it holds, where its
/// messages are read from, and how it is sealed.
pub struct NewGeneration<'a> {
    /// The session id.
    pub session_id: u64,
    /// Its segment number.
    pub segment: u32,
    /// `Compacted` (a compaction, a fork's copy) or `Recovered` (open's repair).
    pub kind: SegmentKind,
    /// The live state it holds.
    pub view: &'a SessionView,
    /// Where its messages are read from.
    pub source: &'a SegmentFiles,
    /// An encrypted store's data key of the session.
    pub seal: Option<&'a DataKey>,
    /// The hash of the last record of what it replaces: its first record links to it, so the
    /// chain runs on through the compaction.
    pub replaced_head: Hash,
    /// What it does with the messages the last clear removed.
    pub cleared: Cleared,
}

/// Writes `new`'s live state and puts it in force (steps 1 and 2 above). `snapshot_at` gives
/// the sequence number and time of its snapshot record, once the messages are copied.
pub fn write_generation<T>(
    fs: &dyn FileSystem,
    dir: &Path,
    new: &NewGeneration<'_>,
    snapshot_at: impl FnOnce() -> ((u64, i64), T),
) -> Result<(Generation, T)> {
    let NewGeneration {
        session_id,
        segment,
        kind,
        view,
        source,
        seal,
        replaced_head,
        cleared: what_of_cleared,
    } = *new;
    let final_path = segment_path(dir, session_id, segment);
    let temp_path = segment_temp_path(dir, session_id, segment);
    let file = fs
        .open(&temp_path, OpenMode::Truncate)
        .map_err(context("creating", &temp_path))?;
    let mut buffer = segment::encode_header(
        &SegmentHeader {
            version: segment::version_for(seal.is_some()),
            kind,
            session_id,
            segment,
            prev_len: u64::from(what_of_cleared == Cleared::Erase),
            key: view.key.clone(),
        },
        seal,
    );
    let header_len = buffer.len() as u64;
    let mut written = 0u64; // bytes of the file already written out of the buffer
    let mut messages = Vec::with_capacity(view.messages.len());
    let mut head = replaced_head;
    let flush = |buffer: &mut Vec<u8>, written: &mut u64| -> Result<()> {
        file.write_at(buffer, *written)
            .map_err(context("writing", &temp_path))?;
        *written += buffer.len() as u64;
        buffer.clear();
        Ok(())
    };
    let copy = |locs: &[MessageLoc],
                out: &mut Vec<MessageLoc>,
                buffer: &mut Vec<u8>,
                written: &mut u64,
                head: &mut Hash|
     -> Result<()> {
        for batch in locs.chunks(COPY_BATCH) {
            for stored in source.read_messages(batch)? {
                let append = Event::Append {
                    role: &stored.message.role,
                    content: &stored.message.content,
                };
                let offset = *written + buffer.len() as u64;
                // The message keeps its sequence number and its append time.
                *head = encode_record(stored.seq, stored.created_at, head, &append, buffer, seal);
                let len = *written + buffer.len() as u64 - offset;
                let len = u32::try_from(len).map_err(|_| Error::RecordTooLarge {
                    len: usize::try_from(len).unwrap_or(usize::MAX),
                    max: u32::MAX as usize,
                })?;
                out.push(MessageLoc::single(segment, len, offset, stored.created_at));
                if buffer.len() >= WRITE_BUFFER_BYTES {
                    flush(buffer, written)?;
                }
            }
        }
        Ok(())
    };
    let mut cleared = Vec::new();
    if let (Cleared::Keep, Some((clear_seq, clear_ts))) = (what_of_cleared, view.cleared_by) {
        copy(
            &view.cleared,
            &mut cleared,
            &mut buffer,
            &mut written,
            &mut head,
        )?;
        head = encode_record(clear_seq, clear_ts, &head, &Event::Clear, &mut buffer, seal);
    }
    copy(
        &view.messages,
        &mut messages,
        &mut buffer,
        &mut written,
        &mut head,
    )?;
    let snapshot = Event::Snapshot(view.snapshot());
    // The snapshot's sequence number is taken only now, after the copy: until the generation
    // is in force, subscribers wait for every event after it.
    let ((snapshot_seq, snapshot_ts), taken) = snapshot_at();
    head = encode_record(
        snapshot_seq,
        snapshot_ts,
        &head,
        &snapshot,
        &mut buffer,
        seal,
    );
    flush(&mut buffer, &mut written)?;
    put_in_force(fs, file, &temp_path, &final_path)?;
    Ok((
        Generation {
            len: written,
            header_len,
            messages,
            cleared,
            head,
        },
        taken,
    ))
}

/// Puts a generation written whole to `temp_path` (through `file`) in force as `final_path`.
fn put_in_force(
    fs: &dyn FileSystem,
    file: Box<dyn FileHandle>,
    temp_path: &Path,
    final_path: &Path,
) -> Result<()> {
    // The generation must be wholly on disk before the rename can put it in force.
    file.sync().map_err(context("syncing", temp_path))?;
    drop(file);
    // The rename is the commit point: it replaces the old generation atomically.
    fs.rename(temp_path, final_path)
        .map_err(context("renaming", temp_path))?;
    // Make the rename durable before the old segments are retired.
    sync_dir(fs, crate::fs::parent(final_path))
}

/// What happens to segments that are no longer in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposal {
    /// Remove them: every live byte was rewritten (or the session was deleted).
    Remove,
    /// Move them into `archive/`, so that every event ever written can still be replayed.
    Archive,
    /// Move them into `quarantine/`: they hold damage, which is never deleted.
    Quarantine,
}

/// Ranges longer than this are not walked number by number: the folder is listed instead.
const RANGE_WALK_MAX: u32 = 4096;

/// The segment numbers of session `id` from `from` to below `below` that may exist, lowest
/// first: each number of a short range, or the session's listed segments in a long one (a
/// range's end may come from a file's name, so it may be as high as a name can say, and
/// looking each number up would take hours).
fn numbers_in(fs: &dyn FileSystem, dir: &Path, id: u64, from: u32, below: u32) -> Result<Vec<u32>> {
    // Segment numbers start at 1 (`layout::parse_segment_name`).
    let from = from.max(1);
    if below.saturating_sub(from) <= RANGE_WALK_MAX {
        return Ok((from..below).collect());
    }
    let mut numbers = listed_segments(fs, dir, id)?;
    numbers.retain(|number| (from..below).contains(number));
    Ok(numbers)
}

/// Retires the segments `from..below` of a session, lowest first, returning where each went.
///
/// Lowest first matters for deleted sessions: their delete record is in the newest segment,
/// so a crash part-way leaves that record in place and the session stays deleted.
pub fn retire(
    fs: &dyn FileSystem,
    dir: &Path,
    session_id: u64,
    from: u32,
    below: u32,
    how: Disposal,
) -> Result<Vec<PathBuf>> {
    retire_each(fs, dir, session_id, from..below, |_| how)
}

/// Retires the segments `from..below` of a fork that got its own copy of what it shared: a
/// segment whose header names another session (a hard link to its source's) is removed, being
/// that session's bytes under the fork's name; the fork's own go as `own` says (to `archive/`
/// with `keep_history`). A header that cannot be read counts as the fork's own.
pub fn retire_detached(
    fs: &dyn FileSystem,
    dir: &Path,
    session_id: u64,
    from: u32,
    below: u32,
    own: Disposal,
) -> Result<Vec<PathBuf>> {
    retire_each(fs, dir, session_id, from..below, |path| {
        let header = segment::read_header(fs, path, None)
            .ok()
            .and_then(|h| h.ok());
        match header {
            Some((h, _)) if h.session_id != session_id => Disposal::Remove,
            _ => own,
        }
    })
}

/// [`retire`], each segment as `how` says of it.
fn retire_each(
    fs: &dyn FileSystem,
    dir: &Path,
    session_id: u64,
    numbers: std::ops::Range<u32>,
    how: impl Fn(&Path) -> Disposal,
) -> Result<Vec<PathBuf>> {
    let mut done = Vec::new();
    for number in numbers_in(fs, dir, session_id, numbers.start, numbers.end)? {
        let path = segment_path(dir, session_id, number);
        // Only a segment file the store may have written: a folder or a symbolic link under a
        // segment's name is not the store's, and is left where it is.
        if !fs.exists(&path) || fs.is_dir(&path) || fs.is_symlink(&path) {
            continue;
        }
        let folder = match how(&path) {
            Disposal::Remove => {
                fs.remove_file(&path).map_err(context("removing", &path))?;
                done.push(path);
                continue;
            }
            Disposal::Archive => ARCHIVE_DIR,
            Disposal::Quarantine => QUARANTINE_DIR,
        };
        let folder = subfolder(fs, dir, folder)?;
        let target = free_name(fs, &folder, &segment_name(session_id, number));
        move_aside(fs, &path, &target)?;
        done.push(target);
    }
    if !done.is_empty() {
        // Makes the removals durable, so retired segments do not come back after a crash
        // (open would retire them again, but only after reading them).
        sync_dir(fs, dir)?;
    }
    Ok(done)
}

//! Writing a new generation of a session: its live messages and a snapshot of its metadata,
//! in one new segment that replaces every lower-numbered one.
//!
//! The protocol, in order (docs/FORMAT.md explains why each step is there):
//! 1. write the generation to `{name}.tmp` in the store's folder and fsync it;
//! 2. rename it to its final segment name and fsync the folder: from here on open replays the
//!    new generation and ignores every lower-numbered segment of the session;
//! 3. the caller retires the old segments (removes them, or moves them to `quarantine/`) and
//!    fsyncs the folder. Open finishes this step if a crash interrupts it.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fs::sync_dir;
use crate::projection::{MessageLoc, SessionView};
use crate::record::{encode_event, encode_frame, Event};
use crate::segment::{self, SegmentFiles, SegmentHeader, SegmentKind, TEMP_SUFFIX};

/// A generation written and in force.
pub struct Generation {
    /// Its length in bytes: where the next record goes.
    pub len: u64,
    /// Where each live message now lies, in order.
    pub messages: Vec<MessageLoc>,
    /// Size of all its records.
    pub bytes_written: u64,
}

/// How many messages compaction reads from the old segments at a time.
const COPY_BATCH: usize = 256;

/// Writes `view`'s live state as segment `segment` of session `session_id`, reading the
/// messages from `source`, and puts it in force (steps 1 and 2 above).
pub fn write_generation(
    dir: &Path,
    session_id: u64,
    segment: u32,
    kind: SegmentKind,
    view: &SessionView,
    source: &SegmentFiles,
    (snapshot_seq, snapshot_ts): (u64, i64),
) -> Result<Generation> {
    let final_path = segment::path(dir, session_id, segment);
    let temp_path = dir.join(format!(
        "{}{TEMP_SUFFIX}",
        segment::file_name(session_id, segment)
            .strip_suffix(segment::SEGMENT_SUFFIX)
            .unwrap_or_default()
    ));
    let io = |what: &str, path: &PathBuf| {
        let context = format!("{what} {}", path.display());
        move |e| Error::io(context, e)
    };
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp_path)
        .map_err(io("creating", &temp_path))?;
    let mut out = BufWriter::with_capacity(1 << 20, &file);
    let header = segment::encode_header(&SegmentHeader {
        kind,
        session_id,
        segment,
        key: view.key.clone(),
    });
    out.write_all(&header).map_err(io("writing", &temp_path))?;
    let mut len = header.len() as u64;
    let mut messages = Vec::with_capacity(view.messages.len());
    let mut frame = Vec::new();
    for batch in view.messages.chunks(COPY_BATCH) {
        for stored in source.read_messages(batch)? {
            frame.clear();
            let payload = encode_event(&Event::Append {
                role: &stored.message.role,
                content: &stored.message.content,
            });
            // The message keeps its sequence number and its append time.
            encode_frame(stored.seq, stored.created_at, &payload, &mut frame);
            out.write_all(&frame).map_err(io("writing", &temp_path))?;
            messages.push(MessageLoc {
                segment,
                len: u32::try_from(frame.len()).map_err(|_| Error::RecordTooLarge {
                    len: frame.len(),
                    max: u32::MAX as usize,
                })?,
                offset: len,
                created_at: stored.created_at,
            });
            len += frame.len() as u64;
        }
    }
    frame.clear();
    let payload = encode_event(&Event::Snapshot(view.snapshot()));
    encode_frame(snapshot_seq, snapshot_ts, &payload, &mut frame);
    out.write_all(&frame).map_err(io("writing", &temp_path))?;
    len += frame.len() as u64;
    out.flush().map_err(io("writing", &temp_path))?;
    drop(out);
    // The generation must be wholly on disk before the rename can put it in force.
    file.sync_all().map_err(io("syncing", &temp_path))?;
    drop(file);
    // The rename is the commit point: it replaces the old generation atomically.
    std::fs::rename(&temp_path, &final_path).map_err(io("renaming", &temp_path))?;
    // Make the rename durable before the old segments are retired.
    sync_dir(dir)?;
    let bytes_written = len - header.len() as u64;
    Ok(Generation {
        len,
        messages,
        bytes_written,
    })
}

/// What happens to the segments a generation replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retire {
    /// Remove them: compaction read and rewrote every live byte.
    Remove,
    /// Move them into `quarantine/`: they hold damage, which is never deleted.
    Quarantine,
}

/// Name of the folder where damaged segments are kept.
pub const QUARANTINE_DIR: &str = "quarantine";

/// Retires the segments `from..below` of a session (step 3), returning where each went.
pub fn retire(
    dir: &Path,
    session_id: u64,
    from: u32,
    below: u32,
    how: Retire,
) -> Result<Vec<PathBuf>> {
    let mut done = Vec::new();
    for number in from..below {
        let path = segment::path(dir, session_id, number);
        if !path.exists() {
            continue;
        }
        match how {
            Retire::Remove => {
                std::fs::remove_file(&path)
                    .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
                done.push(path);
            }
            Retire::Quarantine => {
                let quarantine = quarantine_dir(dir)?;
                let name = segment::file_name(session_id, number);
                let target = crate::fs::free_name(&quarantine, &name);
                crate::fs::move_aside(&path, &target)?;
                done.push(target);
            }
        }
    }
    // Not needed for correctness (open ignores and retires superseded segments), but it keeps
    // a crash from bringing back files that were already retired.
    sync_dir(dir)?;
    Ok(done)
}

/// The quarantine folder, created (durably) if missing.
pub fn quarantine_dir(dir: &Path) -> Result<PathBuf> {
    let quarantine = dir.join(QUARANTINE_DIR);
    if !quarantine.is_dir() {
        std::fs::create_dir(&quarantine)
            .map_err(|e| Error::io(format!("creating {}", quarantine.display()), e))?;
        // The new folder's entry must be durable before files are moved into it.
        sync_dir(dir)?;
    }
    Ok(quarantine)
}

/// Opens a segment to append to it.
pub fn open_for_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))
}

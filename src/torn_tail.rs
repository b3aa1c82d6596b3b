//! A torn tail: the bytes a crash left of an unfinished append, saved to a side file next to
//! their file and then cut off, so that the next append follows the last sound record and no
//! byte is deleted unread (a segment's `{name}.torn-{offset}`, the erasure log's
//! `ERASED.torn-{offset}`).

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::fs::{context, free_name, parent, sync_dir, FileSystem, OpenMode};
use crate::report::{Finding, RecoveryReport};

/// How much of the tail one read copies: the memory a cut costs, however long the tail.
const COPY_CHUNK: u64 = 1 << 20;

/// Saves the bytes of `path` from `offset` to a side file next to it, makes that durable, then
/// cuts the segment there (or removes it, with `remove`), durably. Returns the side file and
/// how many bytes it holds. The bytes are copied through a bounded buffer.
pub fn cut_tail(
    fs: &dyn FileSystem,
    path: &Path,
    offset: u64,
    remove: bool,
) -> Result<(PathBuf, u64)> {
    let source = fs
        .open(path, OpenMode::Read)
        .map_err(context("opening", path))?;
    let len = source.size().map_err(context("reading", path))?;
    let dir = parent(path);
    let side = free_name(fs, dir, &side_name(path, offset));
    let saved = fs
        .open(&side, OpenMode::CreateNew)
        .map_err(context("creating", &side))?;
    let tail = len.saturating_sub(offset);
    let mut buffer = vec![0; usize::try_from(tail.min(COPY_CHUNK)).unwrap_or(0)];
    let mut done = 0;
    while done < tail {
        let n = usize::try_from((tail - done).min(COPY_CHUNK)).unwrap_or(0);
        let bytes = &mut buffer[..n];
        source
            .read_at(bytes, offset + done)
            .map_err(context("reading", path))?;
        saved
            .write_at(bytes, done)
            .map_err(context("writing", &side))?;
        done += n as u64;
    }
    // The saved bytes (and their name) are durable before the segment loses them.
    saved.sync().map_err(context("syncing", &side))?;
    drop((source, saved));
    sync_dir(fs, dir)?;
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
    Ok((side, tail))
}

/// The name of the side file that holds the bytes cut from `path` at `offset` (unless one
/// of that name was there already: then [`free_name`] numbers it).
pub fn side_name(path: &Path, offset: u64) -> String {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("segment");
    format!("{name}.torn-{offset:016x}")
}

/// [`cut_tail`] for a log file (`ERASED`, `ANCHORS`) whose sound records end at `end`: the
/// bytes after them are saved aside and cut off, and reported as a torn tail.
pub fn cut_log_tail(
    fs: &dyn FileSystem,
    path: &Path,
    end: u64,
    report: &mut RecoveryReport,
) -> Result<()> {
    let (saved_to, bytes) = cut_tail(fs, path, end, false)?;
    report.findings.push(Finding::TornTail {
        path: path.to_path_buf(),
        offset: end,
        bytes,
        saved_to,
    });
    Ok(())
}

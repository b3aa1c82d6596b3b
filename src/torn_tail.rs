//! A torn tail: the bytes a crash left of an unfinished append, saved to a side file next to
//! their file and then cut off, so that the next append follows the last sound record and no
//! byte is deleted unread (a segment's `{name}.torn-{offset}`, the erasure log's
//! `ERASED.torn-{offset}`).

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::fs::{context, free_name, parent, read_all, sync_dir, FileSystem, OpenMode};

/// Saves the bytes of `path` from `offset` to a side file next to it, makes that durable, then
/// cuts the segment there (or removes it, with `remove`), durably. Returns the side file and
/// how many bytes it holds.
pub fn cut_tail(
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

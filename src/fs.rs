//! The few file-system steps whose order durability depends on, in one place.

use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result};

/// Makes the directory's entries durable: a created, renamed or removed file is not durable
/// until its directory is synced.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
}

/// Renames `from` to `to`, refusing to replace an existing file, and makes both directory
/// entries durable.
pub fn move_aside(from: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        return Err(Error::io(
            format!("moving {} aside", from.display()),
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} already exists", to.display()),
            ),
        ));
    }
    std::fs::rename(from, to).map_err(|e| {
        Error::io(
            format!("renaming {} to {}", from.display(), to.display()),
            e,
        )
    })?;
    // The rename is durable only once both directories are synced.
    for dir in [to.parent(), from.parent()].into_iter().flatten() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// A path in `dir` named `name`, or `name.1`, `name.2`, ... whichever does not exist yet.
pub fn free_name(dir: &Path, name: &str) -> std::path::PathBuf {
    let mut candidate = dir.join(name);
    let mut n = 0u32;
    while candidate.exists() {
        n += 1;
        candidate = dir.join(format!("{name}.{n}"));
    }
    candidate
}

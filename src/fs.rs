//! The one seam through which every file operation of the store passes.
//!
//! [`StdFs`] is the real file system. Tests put other implementations behind the same trait
//! (see the `testing` module, behind the `fault-injection` feature): one that keeps written and
//! durable bytes apart and can lose power at any point, one that fails the Nth operation. Faults
//! injected this way need no global state, so tests run in parallel.
//!
//! The helpers at the bottom are the few multi-step sequences whose order durability depends
//! on; each step says why it is there.

use std::ffi::OsString;
use std::fmt::Debug;
use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read an existing file.
    Read,
    /// Read and write an existing file.
    Write,
    /// Create a new file for reading and writing; fail if it exists.
    CreateNew,
    /// Create a file for reading and writing, emptying it if it exists.
    Truncate,
}

/// One entry of a folder listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name.
    pub name: OsString,
    /// True for a regular file.
    pub is_file: bool,
}

/// An open file. Reads and writes are positioned; there is no cursor.
pub trait FileHandle: Send + Sync + Debug {
    /// Fills `buf` from `offset`; an error if the file ends first.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the file's bytes and size durable (`fdatasync`).
    fn sync(&self) -> io::Result<()>;
    /// The file's length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Cuts or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes everything written to the file system that holds this file durable at once, as
    /// [`FileSystem::sync_file_system`] does, through this handle: Linux reports a failed
    /// write-back to each handle that was open when it happened, so a handle kept since
    /// before the writes hears of every failure, even one another process's `syncfs` saw
    /// first (a freshly opened one would not). Returns false where it cannot (the default),
    /// and the caller syncs file by file.
    fn sync_file_system(&self) -> io::Result<bool> {
        Ok(false)
    }
}

/// What `stat` says of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    /// Length in bytes.
    pub len: u64,
    /// Last modification, nanoseconds since the Unix epoch.
    pub modified_ns: i64,
}

/// A held lock; dropping it releases the lock.
pub trait LockGuard: Send + Sync + Debug {}

/// The file operations the store uses, and nothing else.
pub trait FileSystem: Send + Sync + Debug {
    /// Creates a folder and its parents. Folders it creates are open to their owner only
    /// (0700 on Unix), whatever the process umask.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// A folder's Unix permission bits. The default, for file systems without permissions,
    /// is 0700.
    fn folder_mode(&self, dir: &Path) -> io::Result<u32> {
        let _ = dir;
        Ok(0o700)
    }
    /// True if `path` is a folder.
    fn is_dir(&self, path: &Path) -> bool;
    /// True if something exists at `path`.
    fn exists(&self, path: &Path) -> bool;
    /// True if `path` is a symbolic link (which the store never follows). The default, for
    /// file systems without links, is false.
    fn is_symlink(&self, path: &Path) -> bool {
        let _ = path;
        false
    }
    /// A file's length and modification time.
    fn stat(&self, path: &Path) -> io::Result<FileStat>;
    /// [`FileSystem::stat`], with the file's status change time (`ctime`, nanoseconds since
    /// the Unix epoch) where the file system keeps one: every change to the file's bytes moves
    /// it, and no program can set it back, so it tells a file rewritten with its modification
    /// time restored. The default, for file systems without one, is `None`.
    fn stat_changed(&self, path: &Path) -> io::Result<(FileStat, Option<i64>)> {
        Ok((self.stat(path)?, None))
    }
    /// The entries of a folder, in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>>;
    /// Whether a folder's modification and change times ([`FileSystem::stat_changed`] of the
    /// folder) move whenever an entry is made, removed or renamed in it, on the same clock as
    /// a file's modification time: then a clean close stamps the store's folder and the next
    /// open need not list it (`docs/FORMAT.md`, "The folder stamp"). The default is false.
    fn folder_times_follow_entries(&self) -> bool {
        false
    }
    /// Opens a file. Files the store creates are readable and writable by their owner only
    /// (0600 on Unix), whatever the process umask. A symbolic link is not followed: opening
    /// one fails (`ELOOP` on Unix).
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FileHandle>>;
    /// Renames a file, replacing `to` if it exists. Atomic within one folder.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// How many names the file at `path` has (more than one: a fork shares it). The default,
    /// for file systems without hard links, is 1.
    fn link_count(&self, path: &Path) -> io::Result<u64> {
        let _ = path;
        Ok(1)
    }
    /// Gives the file at `from` a second name `to` (a hard link; `to` must not exist). Both
    /// names then reach the same bytes, which stay until the last name is removed.
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the folder's entries (created, renamed, removed files) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Makes everything written to the file system that holds `dir` durable at once, files'
    /// bytes and folders' entries alike, where the file system offers that and reports a
    /// failed write-back (Linux's `syncfs` from kernel 5.8): one call instead of a sync per
    /// file. Returns false where it does not, and the caller syncs file by file. The default
    /// returns false. A store syncs through [`FileHandle::sync_file_system`] on a handle it
    /// opened at open instead, which hears of write-back failures another process saw first.
    fn sync_file_system(&self, dir: &Path) -> io::Result<bool> {
        let _ = dir;
        Ok(false)
    }
    /// Takes an exclusive lock on `path` (creating it), or fails with
    /// [`io::ErrorKind::WouldBlock`] at once if it is held, by this process or another. Like
    /// [`FileSystem::open`], it does not follow a symbolic link.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>>;
}

/// The real file system (`std::fs`, `pread`/`pwrite`, `fdatasync`, `flock`). Every file is
/// opened with `O_NOFOLLOW`, so a link planted in place of one of the store's files fails the
/// open instead of sending a write outside the folder.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

#[derive(Debug)]
struct StdFile(File);

impl FileHandle for StdFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    #[cfg(target_os = "linux")]
    fn sync_file_system(&self) -> io::Result<bool> {
        if !syncfs_reports_errors() {
            return Ok(false);
        }
        rustix::fs::syncfs(&self.0)?;
        Ok(true)
    }
}

#[derive(Debug)]
struct StdLock(#[allow(dead_code)] File);

impl LockGuard for StdLock {}

impl FileSystem for StdFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut missing = Vec::new();
        let mut at = Some(path);
        while let Some(dir) = at.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            missing.push(dir);
            at = dir.parent();
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)?;
        // The umask may have taken bits from 0700; the folders we created get exactly 0700.
        for dir in missing {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }
    fn folder_mode(&self, dir: &Path) -> io::Result<u32> {
        Ok(std::fs::metadata(dir)?.permissions().mode() & 0o7777)
    }
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
    fn exists(&self, path: &Path) -> bool {
        path.symlink_metadata().is_ok()
    }
    fn is_symlink(&self, path: &Path) -> bool {
        path.symlink_metadata()
            .is_ok_and(|meta| meta.file_type().is_symlink())
    }
    fn stat(&self, path: &Path) -> io::Result<FileStat> {
        self.stat_changed(path).map(|(stat, _)| stat)
    }
    fn stat_changed(&self, path: &Path) -> io::Result<(FileStat, Option<i64>)> {
        // A link's own times and length, never its target's.
        let meta = std::fs::symlink_metadata(path)?;
        let modified = meta.modified()?;
        let modified_ns = match modified.duration_since(std::time::UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
            Err(before) => i64::try_from(before.duration().as_nanos()).map_or(i64::MIN, |n| -n),
        };
        #[cfg(unix)]
        let changed = {
            use std::os::unix::fs::MetadataExt;
            Some(
                meta.ctime()
                    .saturating_mul(1_000_000_000)
                    .saturating_add(meta.ctime_nsec()),
            )
        };
        #[cfg(not(unix))]
        let changed = None;
        let stat = FileStat {
            len: meta.len(),
            modified_ns,
        };
        Ok((stat, changed))
    }
    fn folder_times_follow_entries(&self) -> bool {
        // POSIX: making, removing or renaming an entry updates the folder's times.
        cfg!(unix)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let is_file = entry.file_type()?.is_file();
            out.push(DirEntry {
                name: entry.file_name(),
                is_file,
            });
        }
        Ok(out)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FileHandle>> {
        let mut options = OpenOptions::new();
        options
            .read(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW);
        match mode {
            OpenMode::Read => {}
            OpenMode::Write => {
                options.write(true);
            }
            OpenMode::CreateNew => {
                options.write(true).create_new(true);
            }
            OpenMode::Truncate => {
                options.write(true).create(true).truncate(true);
            }
        }
        let file = options.open(path)?;
        if matches!(mode, OpenMode::CreateNew | OpenMode::Truncate) {
            // The umask may have taken bits from 0600 (or the file existed with others).
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(Box::new(StdFile(file)))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::hard_link(from, to)
    }
    fn link_count(&self, path: &Path) -> io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(std::fs::symlink_metadata(path)?.nlink())
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    #[cfg(target_os = "linux")]
    fn sync_file_system(&self, dir: &Path) -> io::Result<bool> {
        StdFile(File::open(dir)?).sync_file_system()
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(StdLock(file))),
            Err(TryLockError::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

/// Attaches what the store was doing to an I/O error. The message is built only if there is
/// an error: this sits on the write path. A file that could not be opened because it is a
/// symbolic link is [`Error::SymbolicLink`].
pub fn context<'a>(what: &'a str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| {
        if source.raw_os_error() == Some(libc::ELOOP) {
            return Error::SymbolicLink {
                path: path.to_owned(),
            };
        }
        Error::io(format!("{what} {}", path.display()), source)
    }
}

/// Runs `attempt` again while it fails on a file that is gone ([`Error::is_file_gone`]), at
/// most `tries` times in all: a reader beside a writer meets that when the writer removes a
/// file the reader had listed (a compaction, a delete, an erasure). Between two attempts,
/// `again(made, error)` runs (to wait, or to read what replaced the file); an error it returns
/// ends the attempts.
pub(crate) fn retry_while_gone<T>(
    tries: u32,
    mut attempt: impl FnMut() -> Result<T>,
    mut again: impl FnMut(u32, Error) -> Result<()>,
) -> Result<T> {
    let mut made = 1;
    loop {
        match attempt() {
            Err(e) if e.is_file_gone() && made < tries => again(made, e)?,
            done => return done,
        }
        made += 1;
    }
}

/// The buffer a file's CRC is computed through before the file is read whole by a length it
/// states (`crc32_in_chunks`).
pub(crate) const CRC_CHUNK: usize = 256 << 10;

/// Fails with [`Error::SymbolicLink`] if `path` is a symbolic link: for the store's folders,
/// which are entered by path (`O_NOFOLLOW` guards only the last step of a file's path).
pub fn refuse_symlink(fs: &dyn FileSystem, path: &Path) -> Result<()> {
    if fs.is_symlink(path) {
        return Err(Error::SymbolicLink {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// Reads a whole file.
pub fn read_all(fs: &dyn FileSystem, path: &Path) -> Result<Vec<u8>> {
    read_prefix(fs, path, u64::MAX)
}

/// Reads a whole file that ends with the CRC-32 (little-endian) of every byte before it; the
/// CRC is checked through a fixed buffer before anything is allocated by the file's length, so
/// a damaged or foreign file costs none of its length in memory. `Ok(None)` when the CRC does
/// not match (or the file is shorter than one). A file longer than `max` bytes is
/// [`Error::Corrupt`] and not read at all: a crafted one (a sparse file whose CRC matches its
/// zeros) allocates nothing by its length.
pub(crate) fn read_crc_tailed(
    fs: &dyn FileSystem,
    path: &Path,
    max: u64,
) -> Result<Option<Vec<u8>>> {
    let file = fs
        .open(path, OpenMode::Read)
        .map_err(context("opening", path))?;
    let len = file.size().map_err(context("reading", path))?;
    if len > max {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            offset: max,
            reason: format!("{len} bytes long, above the {max} it may hold"),
        });
    }
    let Some(body) = len.checked_sub(4) else {
        return Ok(None);
    };
    let mut stored = [0u8; 4];
    file.read_at(&mut stored, body)
        .map_err(context("reading", path))?;
    let crc = crc32_in_chunks(&*file, 0, body, CRC_CHUNK).map_err(context("reading", path))?;
    if crc != u32::from_le_bytes(stored) {
        return Ok(None);
    }
    read_whole(&*file, path, len).map(Some)
}

/// The first `len` bytes of `file` (at `path`), in one buffer of that length.
fn read_whole(file: &dyn FileHandle, path: &Path, len: u64) -> Result<Vec<u8>> {
    let len = usize::try_from(len).map_err(|_| {
        context("reading", path)(io::Error::new(io::ErrorKind::OutOfMemory, "file too large"))
    })?;
    let mut bytes = vec![0; len];
    file.read_at(&mut bytes, 0)
        .map_err(context("reading", path))?;
    Ok(bytes)
}

/// The CRC-32 of the `len` bytes of `file` from `at`, read through a buffer of at most `chunk`
/// bytes: a length read from disk never sizes a buffer, and a sparse file of any length costs
/// none of its length in memory.
pub(crate) fn crc32_in_chunks(
    file: &dyn FileHandle,
    at: u64,
    len: u64,
    chunk: usize,
) -> io::Result<u32> {
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; chunk.min(usize::try_from(len).unwrap_or(usize::MAX))];
    let mut done = 0;
    while done < len {
        let n = buf
            .len()
            .min(usize::try_from(len - done).unwrap_or(usize::MAX));
        file.read_at(&mut buf[..n], at + done)?;
        hasher.update(&buf[..n]);
        done += n as u64;
    }
    Ok(hasher.finalize())
}

/// Reads at most `limit` bytes from the start of a file.
pub fn read_prefix(fs: &dyn FileSystem, path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = fs
        .open(path, OpenMode::Read)
        .map_err(context("opening", path))?;
    let len = file.size().map_err(context("reading", path))?.min(limit);
    read_whole(&*file, path, len)
}

/// True when the running kernel's `syncfs` reports a failed write-back (Linux 5.8 on): before
/// that, it could return success for data the kernel had dropped, and the store must never be
/// told a sync succeeded when it did not.
#[cfg(target_os = "linux")]
fn syncfs_reports_errors() -> bool {
    static REPORTS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *REPORTS.get_or_init(|| {
        let name = rustix::system::uname();
        let release = name.release().to_string_lossy();
        let mut parts = release
            .split(|c: char| !c.is_ascii_digit())
            .map(|p| p.parse::<u32>().ok());
        match (parts.next().flatten(), parts.next().flatten()) {
            (Some(major), Some(minor)) => (major, minor) >= (5, 8),
            _ => false,
        }
    })
}

/// How long [`written_after`] waits for the file system's clock.
const CLOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Writes the file at `path` with `write`, again every 2 ms, until its modification time is
/// past `ns` (the file system's clock has passed that moment), for at most 100 ms; false if
/// it did not get there (a clock too coarse to show it).
pub fn written_after(
    fs: &dyn FileSystem,
    path: &Path,
    ns: i64,
    mut write: impl FnMut() -> Result<()>,
) -> Result<bool> {
    let started = std::time::Instant::now();
    loop {
        write()?;
        if fs
            .stat(path)
            .map_err(context("examining", path))?
            .modified_ns
            > ns
        {
            return Ok(true);
        }
        if started.elapsed() > CLOCK_WAIT {
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Makes a folder's entries durable: a created, renamed or removed file is not durable until
/// its folder is synced.
pub fn sync_dir(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    fs.sync_dir(dir).map_err(context("syncing folder", dir))
}

/// Writes to a log file (`ERASED`, `ANCHORS`) with `write`, creating it if missing, then makes
/// what was written durable: the file synced, and its folder too when the file is new or
/// `first` (nothing in it is known durable yet: an earlier append that created it may have
/// failed before its folder sync; a new file's bytes count only once its name is durable).
pub fn append_durably(
    fs: &dyn FileSystem,
    path: &Path,
    first: bool,
    write: impl FnOnce(&dyn FileHandle) -> io::Result<()>,
) -> Result<()> {
    let created = !fs.exists(path);
    let mode = if created {
        OpenMode::CreateNew
    } else {
        OpenMode::Write
    };
    let file = fs.open(path, mode).map_err(context("opening", path))?;
    write(&*file).map_err(context("writing", path))?;
    file.sync().map_err(context("syncing", path))?;
    if created || first {
        sync_dir(fs, parent(path))?;
    }
    Ok(())
}

/// Writes a new file whole and durably: create, write, sync the file, sync its folder.
pub fn write_new_file(fs: &dyn FileSystem, path: &Path, bytes: &[u8]) -> Result<()> {
    let file = fs
        .open(path, OpenMode::CreateNew)
        .map_err(context("creating", path))?;
    file.write_at(bytes, 0).map_err(context("writing", path))?;
    // The file's bytes must be durable before anything relies on them.
    file.sync().map_err(context("syncing", path))?;
    // And so must its name.
    sync_dir(fs, parent(path))
}

/// Suffix of the temporary file [`replace_file`] writes before its rename.
pub const TEMP_SUFFIX: &str = ".tmp";

/// `{path}.tmp`: where [`replace_file`] writes `path`'s new bytes.
pub fn temp_path(path: &Path) -> std::path::PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(TEMP_SUFFIX);
    std::path::PathBuf::from(tmp)
}

/// Writes a small file whole and durably in place of any file of that name: to `{path}.tmp`,
/// synced, renamed, folder synced. A crash leaves the old file or the new one, never a part.
pub fn replace_file(fs: &dyn FileSystem, path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let file = fs
        .open(&tmp, OpenMode::Truncate)
        .map_err(context("creating", &tmp))?;
    file.write_at(bytes, 0).map_err(context("writing", &tmp))?;
    // The bytes must be on disk before the name points at them.
    file.sync().map_err(context("syncing", &tmp))?;
    drop(file);
    // The rename puts the whole file in place at once, never a part of it.
    fs.rename(&tmp, path).map_err(context("renaming", &tmp))?;
    // And it is durable only once the folder is synced.
    sync_dir(fs, parent(path))
}

/// Moves a file to `to`, which must not exist, and makes both folders' entries durable.
pub fn move_aside(fs: &dyn FileSystem, from: &Path, to: &Path) -> Result<()> {
    if fs.exists(to) {
        return Err(context("moving aside", from)(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} already exists", to.display()),
        )));
    }
    fs.rename(from, to).map_err(context("renaming", from))?;
    // The move is durable only once both folders' entries are.
    sync_dir(fs, parent(to))?;
    sync_dir(fs, parent(from))
}

/// A path in `dir` named `name`, or `name.1`, `name.2`, ... whichever does not exist yet.
pub fn free_name(fs: &dyn FileSystem, dir: &Path, name: &str) -> PathBuf {
    let mut candidate = dir.join(name);
    let mut n = 0u32;
    while fs.exists(&candidate) {
        n += 1;
        candidate = dir.join(format!("{name}.{n}"));
    }
    candidate
}

/// A subfolder of the store (`archive/`, `quarantine/`, `keys/`), created durably if missing.
pub fn subfolder(fs: &dyn FileSystem, dir: &Path, name: &str) -> Result<std::path::PathBuf> {
    let folder = dir.join(name);
    // Files moved into a linked folder would leave the store.
    refuse_symlink(fs, &folder)?;
    // One thread at a time: another thread (open's replays run side by side, a background
    // compaction beside a first touch) must not see the folder and move a file into it before
    // this one has made its entry durable.
    static MAKING: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
    let _making = MAKING.lock();
    if !fs.is_dir(&folder) {
        fs.create_dir_all(&folder)
            .map_err(context("creating", &folder))?;
        // The new folder's entry must be durable before files are moved into it.
        sync_dir(fs, dir)?;
    }
    Ok(folder)
}

/// The folder holding `path`.
pub fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// For the crate's tests: the real file system, counting what files opened through it read.
#[cfg(test)]
pub(crate) mod counted {
    use std::io;
    use std::path::Path;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::{DirEntry, FileHandle, FileStat, FileSystem, LockGuard, OpenMode, StdFs};

    #[derive(Debug, Default)]
    struct Counts {
        largest: AtomicUsize,
        total: AtomicU64,
        /// A read that would take the total past this panics (0: no limit).
        limit: u64,
    }

    /// [`StdFs`], noting the largest read and the bytes read in all.
    #[derive(Debug, Default, Clone)]
    pub(crate) struct CountedFs(Arc<Counts>);

    impl CountedFs {
        /// One that panics once its files have read more than `limit` bytes in all: a test
        /// of work that must stay bounded fails there instead of running on.
        pub(crate) fn limited(limit: u64) -> CountedFs {
            CountedFs(Arc::new(Counts {
                limit,
                ..Counts::default()
            }))
        }

        pub(crate) fn largest_read(&self) -> usize {
            self.0.largest.load(Ordering::SeqCst)
        }

        pub(crate) fn total_read(&self) -> u64 {
            self.0.total.load(Ordering::SeqCst)
        }
    }

    #[derive(Debug)]
    struct CountedFile(Box<dyn FileHandle>, Arc<Counts>);

    impl FileHandle for CountedFile {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            self.1.largest.fetch_max(buf.len(), Ordering::SeqCst);
            let total = self.1.total.fetch_add(buf.len() as u64, Ordering::SeqCst);
            let limit = self.1.limit;
            assert!(limit == 0 || total <= limit, "more than {limit} bytes read");
            self.0.read_at(buf, offset)
        }
        fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            self.0.write_at(buf, offset)
        }
        fn sync(&self) -> io::Result<()> {
            self.0.sync()
        }
        fn size(&self) -> io::Result<u64> {
            self.0.size()
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.0.set_len(len)
        }
    }

    impl FileSystem for CountedFs {
        fn create_dir_all(&self, path: &Path) -> io::Result<()> {
            StdFs.create_dir_all(path)
        }
        fn is_dir(&self, path: &Path) -> bool {
            StdFs.is_dir(path)
        }
        fn exists(&self, path: &Path) -> bool {
            StdFs.exists(path)
        }
        fn stat(&self, path: &Path) -> io::Result<FileStat> {
            StdFs.stat(path)
        }
        fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
            StdFs.list(dir)
        }
        fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FileHandle>> {
            let file = StdFs.open(path, mode)?;
            Ok(Box::new(CountedFile(file, Arc::clone(&self.0))))
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            StdFs.rename(from, to)
        }
        fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
            StdFs.hard_link(from, to)
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            StdFs.remove_file(path)
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            StdFs.sync_dir(dir)
        }
        fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
            StdFs.lock(path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_ending_with_its_crc_is_read_only_when_the_crc_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut bytes = b"the index state".to_vec();
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            read_crc_tailed(&StdFs, &path, u64::MAX).unwrap(),
            Some(bytes.clone())
        );
        bytes[3] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read_crc_tailed(&StdFs, &path, u64::MAX).unwrap(), None);
        std::fs::write(&path, [1, 2, 3]).unwrap();
        assert_eq!(read_crc_tailed(&StdFs, &path, u64::MAX).unwrap(), None);
        // A sparse file: zeros whose CRC is not the zeros at its end.
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(64 << 20).unwrap();
        assert_eq!(read_crc_tailed(&StdFs, &path, u64::MAX).unwrap(), None);
        // Longer than it may be: refused, however its CRC reads.
        assert!(matches!(
            read_crc_tailed(&StdFs, &path, (64 << 20) - 1),
            Err(Error::Corrupt { .. })
        ));
        std::fs::remove_file(&path).unwrap();
        assert!(read_crc_tailed(&StdFs, &path, u64::MAX).is_err());
    }
}

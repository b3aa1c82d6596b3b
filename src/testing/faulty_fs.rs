//! [`FaultyFs`]: a file system wrapper that fails its Nth operation with a given errno.

use std::io;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::fs::{DirEntry, FileHandle, FileStat, FileSystem, LockGuard, OpenMode};

/// Linux's `EIO`.
pub const EIO: i32 = 5;
/// Linux's `ENOSPC`.
pub const ENOSPC: i32 = 28;

/// The kinds of operation [`FaultyFs`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsOp {
    /// Opening (or creating) a file.
    Open,
    /// A positioned read.
    Read,
    /// A positioned write.
    Write,
    /// A file sync.
    Sync,
    /// A truncation.
    SetLen,
    /// A rename.
    Rename,
    /// A file removal.
    Remove,
    /// A folder sync.
    SyncDir,
    /// A folder listing or creation.
    Dir,
}

#[derive(Debug, Default)]
struct FaultState {
    count: u64,
    fail_at: Option<(u64, i32)>,
    failed: Option<FsOp>,
}

/// Wraps a file system and fails its Nth operation (counting from 0) with a given errno.
/// Cloning shares the counter.
#[derive(Debug, Clone)]
pub struct FaultyFs {
    inner: Arc<dyn FileSystem>,
    state: Arc<Mutex<FaultState>>,
}

impl FaultyFs {
    /// A wrapper that fails nothing until [`FaultyFs::fail_at`] is called.
    pub fn new(inner: Arc<dyn FileSystem>) -> FaultyFs {
        FaultyFs {
            inner,
            state: Arc::default(),
        }
    }

    /// Fails operation number `n` (counting from the operations done so far) with `errno`;
    /// the operation has no effect.
    pub fn fail_at(&self, n: u64, errno: i32) {
        let mut state = self.state.lock();
        state.fail_at = Some((state.count + n, errno));
        state.failed = None;
    }

    /// Operations counted so far.
    pub fn count(&self) -> u64 {
        self.state.lock().count
    }

    /// The kind of the operation that was failed, once it was.
    pub fn failed(&self) -> Option<FsOp> {
        self.state.lock().failed
    }

    fn step(&self, op: FsOp) -> io::Result<()> {
        let mut state = self.state.lock();
        let n = state.count;
        state.count += 1;
        match state.fail_at {
            Some((at, errno)) if at == n => {
                state.failed = Some(op);
                Err(io::Error::from_raw_os_error(errno))
            }
            _ => Ok(()),
        }
    }
}

#[derive(Debug)]
struct FaultyFile {
    fs: FaultyFs,
    inner: Box<dyn FileHandle>,
}

impl FileHandle for FaultyFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.fs.step(FsOp::Read)?;
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.fs.step(FsOp::Write)?;
        self.inner.write_at(buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        self.fs.step(FsOp::Sync)?;
        self.inner.sync()
    }
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.fs.step(FsOp::SetLen)?;
        self.inner.set_len(len)
    }
    fn sync_file_system(&self) -> io::Result<bool> {
        self.fs.step(FsOp::Sync)?;
        self.inner.sync_file_system()
    }
}

impl FileSystem for FaultyFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.step(FsOp::Dir)?;
        self.inner.create_dir_all(path)
    }
    fn folder_mode(&self, dir: &Path) -> io::Result<u32> {
        self.inner.folder_mode(dir)
    }
    fn is_dir(&self, path: &Path) -> bool {
        self.inner.is_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn stat(&self, path: &Path) -> io::Result<FileStat> {
        self.inner.stat(path)
    }
    fn stat_changed(&self, path: &Path) -> io::Result<(FileStat, Option<i64>)> {
        self.inner.stat_changed(path)
    }
    fn sync_file_system(&self, dir: &Path) -> io::Result<bool> {
        self.step(FsOp::Sync)?;
        self.inner.sync_file_system(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        self.step(FsOp::Dir)?;
        self.inner.list(dir)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FileHandle>> {
        self.step(FsOp::Open)?;
        let inner = self.inner.open(path, mode)?;
        Ok(Box::new(FaultyFile {
            fs: self.clone(),
            inner,
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.step(FsOp::Rename)?;
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.step(FsOp::Remove)?;
        self.inner.remove_file(path)
    }
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.step(FsOp::Rename)?;
        self.inner.hard_link(from, to)
    }
    fn link_count(&self, path: &Path) -> io::Result<u64> {
        self.inner.link_count(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.step(FsOp::SyncDir)?;
        self.inner.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        self.inner.lock(path)
    }
}

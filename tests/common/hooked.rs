//! [`Hooked`]: a [`SimFs`] whose file writes and syncs a test watches or holds.

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sessionlog::fs::{DirEntry, FileHandle, FileStat, FileSystem, LockGuard, OpenMode};
use sessionlog::testing::SimFs;

/// What a test does around a write or a sync; each default just lets it happen.
pub trait Hooks: Send + Sync + Debug + 'static {
    /// Before `path` is read.
    fn read(&self, path: &Path) {
        let _ = path;
    }
    /// Before `path` is written.
    fn write(&self, path: &Path) {
        let _ = path;
    }
    /// A sync of `file` (at `path`): the hook performs it.
    fn sync(&self, path: &Path, file: &dyn FileHandle) -> io::Result<()> {
        let _ = path;
        file.sync()
    }
    /// Before `path` is looked up.
    fn looking_up(&self, path: &Path) {
        let _ = path;
    }
    /// Whether `path` exists, as `sim` says unless the hook says otherwise (a lookup whose
    /// `stat` failed reads as absent).
    fn exists(&self, path: &Path, sim: &SimFs) -> bool {
        sim.exists(path)
    }
    /// The `stat` of `path` on `sim`: the hook performs it.
    fn stat(&self, path: &Path, sim: &SimFs) -> io::Result<FileStat> {
        sim.stat(path)
    }
    /// Before `path` is opened.
    fn opening(&self, path: &Path) {
        let _ = path;
    }
    /// After folder `dir` was listed, before the lister has the listing.
    fn listed(&self, dir: &Path) {
        let _ = dir;
    }
    /// A sync of folder `dir` on `sim`: the hook performs it.
    fn sync_dir(&self, dir: &Path, sim: &SimFs) -> io::Result<()> {
        sim.sync_dir(dir)
    }
    /// How many names `path` has on `sim`: the hook looks.
    fn link_count(&self, path: &Path, sim: &SimFs) -> io::Result<u64> {
        sim.link_count(path)
    }
}

/// A [`SimFs`] with [`Hooks`]. Cloning shares both.
#[derive(Debug)]
pub struct Hooked<H> {
    pub sim: SimFs,
    pub hooks: Arc<H>,
}

impl<H> Clone for Hooked<H> {
    fn clone(&self) -> Self {
        Hooked {
            sim: self.sim.clone(),
            hooks: Arc::clone(&self.hooks),
        }
    }
}

impl<H: Hooks> Hooked<H> {
    pub fn new(sim: &SimFs, hooks: H) -> Hooked<H> {
        Hooked {
            sim: sim.clone(),
            hooks: Arc::new(hooks),
        }
    }
}

#[derive(Debug)]
struct HookedFile<H> {
    inner: Box<dyn FileHandle>,
    path: PathBuf,
    hooks: Arc<H>,
}

impl<H: Hooks> FileHandle for HookedFile<H> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.hooks.read(&self.path);
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.hooks.write(&self.path);
        self.inner.write_at(buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        self.hooks.sync(&self.path, &*self.inner)
    }
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
}

impl<H: Hooks> FileSystem for Hooked<H> {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.sim.create_dir_all(path)
    }
    fn folder_mode(&self, dir: &Path) -> io::Result<u32> {
        self.sim.folder_mode(dir)
    }
    fn is_dir(&self, path: &Path) -> bool {
        self.sim.is_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.hooks.looking_up(path);
        self.hooks.exists(path, &self.sim)
    }
    fn stat(&self, path: &Path) -> io::Result<FileStat> {
        self.hooks.stat(path, &self.sim)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let listed = self.sim.list(dir);
        self.hooks.listed(dir);
        listed
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FileHandle>> {
        self.hooks.opening(path);
        Ok(Box::new(HookedFile {
            inner: self.sim.open(path, mode)?,
            path: path.to_owned(),
            hooks: Arc::clone(&self.hooks),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.sim.rename(from, to)
    }
    fn link_count(&self, path: &Path) -> io::Result<u64> {
        self.hooks.link_count(path, &self.sim)
    }
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.sim.hard_link(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.sim.remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.hooks.sync_dir(dir, &self.sim)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        self.sim.lock(path)
    }
}

//! [`SimFs`]: an in-memory file system that keeps written and durable bytes apart and can lose
//! power.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::fs::{DirEntry, FileHandle, FileStat, FileSystem, LockGuard, OpenMode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    File(u64),
    Dir,
}

#[derive(Debug, Default)]
struct Inode {
    /// The logical time of the last change (see `SimState::clock`).
    modified: u64,
    data: Vec<u8>,
    durable: Vec<u8>,
    /// The last write since the last sync: (offset, bytes).
    last_unsynced: Option<(u64, Vec<u8>)>,
}

#[derive(Debug, Default)]
struct SimState {
    names: BTreeMap<PathBuf, Node>,
    durable_names: BTreeMap<PathBuf, Node>,
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    locks: HashSet<PathBuf>,
    /// Mutating operations performed so far.
    mutations: u64,
    /// Power goes off once `mutations` reaches this.
    power_cut_at: Option<u64>,
    /// A logical clock for modification times: strictly increasing, so two changes never
    /// share a time.
    clock: u64,
}

/// An in-memory file system whose durable state is kept apart from what was written.
///
/// Cloning shares the state. Paths are absolute and virtual (`/store`); nothing touches the
/// real disk.
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<SimState>>,
}

fn power_off() -> io::Error {
    io::Error::other("simulated power loss: the power is off")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl SimState {
    fn check_power(&self) -> io::Result<()> {
        match self.power_cut_at {
            Some(at) if self.mutations >= at => Err(power_off()),
            _ => Ok(()),
        }
    }

    /// Counts a mutating operation, refusing it once the power is off.
    fn mutate(&mut self) -> io::Result<()> {
        self.check_power()?;
        self.mutations += 1;
        self.clock += 1;
        Ok(())
    }
}

impl SimFs {
    /// An empty file system with the folder `/` only.
    pub fn new() -> SimFs {
        let fs = SimFs::default();
        {
            let mut state = fs.state.lock();
            state.names.insert(PathBuf::from("/"), Node::Dir);
            state.durable_names.insert(PathBuf::from("/"), Node::Dir);
        }
        fs
    }

    /// Cuts the power once `n` more mutating operations (write, sync, create, rename, remove,
    /// truncate, folder sync) have been performed: every operation after that fails.
    pub fn cut_power_after(&self, n: u64) {
        let mut state = self.state.lock();
        state.power_cut_at = Some(state.mutations + n);
    }

    /// Mutating operations performed so far.
    pub fn mutations(&self) -> u64 {
        self.state.lock().mutations
    }

    /// True once the power is off.
    pub fn is_power_off(&self) -> bool {
        self.state.lock().check_power().is_err()
    }

    /// Loses power: every name and byte not made durable is dropped. With `torn_bytes`, each
    /// file keeps up to that many leading bytes of its last unsynced write, as a disk that
    /// wrote part of it would. Then the power comes back on and locks are released.
    pub fn crash(&self, torn_bytes: Option<usize>) {
        let mut state = self.state.lock();
        state.names = state.durable_names.clone();
        for inode in state.inodes.values_mut() {
            let mut data = inode.durable.clone();
            if let (Some(keep), Some((offset, bytes))) = (torn_bytes, &inode.last_unsynced) {
                let kept = bytes.get(..keep.min(bytes.len())).unwrap_or_default();
                let start = usize::try_from(*offset).unwrap_or(usize::MAX);
                if start <= data.len() && !kept.is_empty() {
                    let end = start + kept.len();
                    if data.len() < end {
                        data.resize(end, 0);
                    }
                    data[start..end].copy_from_slice(kept);
                }
            }
            inode.data = data.clone();
            inode.durable = data;
            inode.last_unsynced = None;
        }
        state.locks.clear();
        state.power_cut_at = None;
    }

    /// Every file and its current bytes, for tests that inspect or damage a store.
    pub fn files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let state = self.state.lock();
        state
            .names
            .iter()
            .filter_map(|(path, node)| match node {
                Node::File(id) => state
                    .inodes
                    .get(id)
                    .map(|inode| (path.clone(), inode.data.clone())),
                Node::Dir => None,
            })
            .collect()
    }

    /// Replaces a file's bytes, durably (as if damaged at rest), creating it and its folders
    /// if needed.
    pub fn put_file(&self, path: &Path, bytes: &[u8]) {
        let mut state = self.state.lock();
        for ancestor in path.ancestors().skip(1) {
            state.names.insert(ancestor.to_owned(), Node::Dir);
            state.durable_names.insert(ancestor.to_owned(), Node::Dir);
        }
        let id = match state.names.get(path) {
            Some(Node::File(id)) => *id,
            _ => {
                state.next_inode += 1;
                let id = state.next_inode;
                state.names.insert(path.to_owned(), Node::File(id));
                state.durable_names.insert(path.to_owned(), Node::File(id));
                id
            }
        };
        state.clock += 1;
        let clock = state.clock;
        let inode = state.inodes.entry(id).or_default();
        inode.data = bytes.to_vec();
        inode.durable = bytes.to_vec();
        inode.last_unsynced = None;
        inode.modified = clock;
    }
}

#[derive(Debug)]
struct SimFile {
    fs: SimFs,
    id: u64,
    writable: bool,
}

impl FileHandle for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let state = self.fs.state.lock();
        state.check_power()?;
        let inode = state.inodes.get(&self.id).ok_or_else(power_off)?;
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let bytes = inode
            .data
            .get(start..start + buf.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(bytes);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::from_raw_os_error(9)); // EBADF
        }
        let mut state = self.fs.state.lock();
        state.mutate()?;
        let clock = state.clock;
        let inode = state.inodes.get_mut(&self.id).ok_or_else(power_off)?;
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let end = start + buf.len();
        if inode.data.len() < end {
            inode.data.resize(end, 0);
        }
        inode.data[start..end].copy_from_slice(buf);
        inode.last_unsynced = Some((offset, buf.to_vec()));
        inode.modified = clock;
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut state = self.fs.state.lock();
        state.mutate()?;
        let inode = state.inodes.get_mut(&self.id).ok_or_else(power_off)?;
        inode.durable = inode.data.clone();
        inode.last_unsynced = None;
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        let state = self.fs.state.lock();
        state.check_power()?;
        Ok(state
            .inodes
            .get(&self.id)
            .map_or(0, |i| i.data.len() as u64))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.fs.state.lock();
        state.mutate()?;
        let clock = state.clock;
        let inode = state.inodes.get_mut(&self.id).ok_or_else(power_off)?;
        inode.data.resize(
            usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?,
            0,
        );
        inode.last_unsynced = None;
        inode.modified = clock;
        Ok(())
    }
}

#[derive(Debug)]
struct SimLock {
    fs: SimFs,
    path: PathBuf,
}

impl LockGuard for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.fs.state.lock().locks.remove(&self.path);
    }
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_owned)
}

impl FileSystem for SimFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.mutate()?;
        for ancestor in path.ancestors() {
            state.names.entry(ancestor.to_owned()).or_insert(Node::Dir);
        }
        Ok(())
    }

    fn is_dir(&self, path: &Path) -> bool {
        matches!(self.state.lock().names.get(path), Some(Node::Dir))
    }

    fn exists(&self, path: &Path) -> bool {
        self.state.lock().names.contains_key(path)
    }

    fn stat(&self, path: &Path) -> io::Result<FileStat> {
        let state = self.state.lock();
        state.check_power()?;
        match state.names.get(path) {
            Some(Node::File(id)) => {
                let inode = state.inodes.get(id).ok_or_else(|| not_found(path))?;
                Ok(FileStat {
                    len: inode.data.len() as u64,
                    modified_ns: i64::try_from(inode.modified).unwrap_or(i64::MAX),
                })
            }
            _ => Err(not_found(path)),
        }
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let state = self.state.lock();
        state.check_power()?;
        if !matches!(state.names.get(dir), Some(Node::Dir)) {
            return Err(not_found(dir));
        }
        Ok(state
            .names
            .iter()
            .filter(|(path, _)| path.parent() == Some(dir))
            .map(|(path, node)| DirEntry {
                name: path.file_name().map(OsString::from).unwrap_or_default(),
                is_file: matches!(node, Node::File(_)),
            })
            .collect())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FileHandle>> {
        let mut state = self.state.lock();
        let existing = state.names.get(path).copied();
        let id = match (mode, existing) {
            (_, Some(Node::Dir)) => return Err(io::ErrorKind::IsADirectory.into()),
            (OpenMode::Read | OpenMode::Write, None) => return Err(not_found(path)),
            (OpenMode::Read | OpenMode::Write, Some(Node::File(id))) => {
                state.check_power()?;
                id
            }
            (OpenMode::CreateNew, Some(_)) => return Err(io::ErrorKind::AlreadyExists.into()),
            (OpenMode::Truncate, Some(Node::File(id))) => {
                state.mutate()?;
                let clock = state.clock;
                let inode = state.inodes.entry(id).or_default();
                inode.data.clear();
                inode.last_unsynced = None;
                inode.modified = clock;
                id
            }
            (OpenMode::CreateNew | OpenMode::Truncate, None) => {
                state.mutate()?;
                if !matches!(state.names.get(&parent_of(path)), Some(Node::Dir)) {
                    return Err(not_found(&parent_of(path)));
                }
                state.next_inode += 1;
                let id = state.next_inode;
                let modified = state.clock;
                state.inodes.insert(
                    id,
                    Inode {
                        modified,
                        ..Inode::default()
                    },
                );
                state.names.insert(path.to_owned(), Node::File(id));
                id
            }
        };
        Ok(Box::new(SimFile {
            fs: self.clone(),
            id,
            writable: mode != OpenMode::Read,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.mutate()?;
        let node = state.names.remove(from).ok_or_else(|| not_found(from))?;
        state.names.insert(to.to_owned(), node);
        Ok(())
    }

    fn link_count(&self, path: &Path) -> io::Result<u64> {
        let state = self.state.lock();
        match state.names.get(path) {
            Some(Node::File(id)) => Ok(state
                .names
                .values()
                .filter(|node| **node == Node::File(*id))
                .count() as u64),
            _ => Err(not_found(path)),
        }
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.mutate()?;
        if state.names.contains_key(to) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        match state.names.get(from) {
            Some(Node::File(id)) => {
                let id = *id;
                state.names.insert(to.to_owned(), Node::File(id));
                Ok(())
            }
            Some(Node::Dir) => Err(io::ErrorKind::IsADirectory.into()),
            None => Err(not_found(from)),
        }
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.mutate()?;
        match state.names.get(path) {
            Some(Node::File(_)) => {
                state.names.remove(path);
                Ok(())
            }
            Some(Node::Dir) => Err(io::ErrorKind::IsADirectory.into()),
            None => Err(not_found(path)),
        }
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.mutate()?;
        let in_dir = |path: &Path| path.parent() == Some(dir);
        let current: Vec<(PathBuf, Node)> = state
            .names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, n)| (p.clone(), *n))
            .collect();
        state.durable_names.retain(|p, _| !in_dir(p));
        state.durable_names.extend(current);
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        {
            let mut state = self.state.lock();
            state.check_power()?;
            if !state.locks.insert(path.to_owned()) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
        // Like flock on a file opened with O_CREAT: the lock file exists afterwards.
        if !self.exists(path) {
            if let Err(e) = self.open(path, OpenMode::CreateNew) {
                self.state.lock().locks.remove(path);
                return Err(e);
            }
        }
        Ok(Box::new(SimLock {
            fs: self.clone(),
            path: path.to_owned(),
        }))
    }
}

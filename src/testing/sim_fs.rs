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

/// A change to a file's bytes not yet made durable by a sync.
#[derive(Debug, Clone)]
enum DataOp {
    Write { offset: usize, bytes: Vec<u8> },
    SetLen(usize),
}

impl DataOp {
    fn apply(&self, data: &mut Vec<u8>) {
        match self {
            DataOp::Write { offset, bytes } => {
                let end = offset + bytes.len();
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[*offset..end].copy_from_slice(bytes);
            }
            DataOp::SetLen(len) => data.resize(*len, 0),
        }
    }

    /// The 4 KiB pages the change touches (a length change: the page it ends in).
    fn pages(&self) -> std::ops::RangeInclusive<usize> {
        match self {
            DataOp::Write { offset, bytes } => {
                offset / PAGE..=(offset + bytes.len().max(1) - 1) / PAGE
            }
            DataOp::SetLen(len) => len / PAGE..=len / PAGE,
        }
    }
}

/// The unit in which a disk writes back a file's cached bytes.
const PAGE: usize = 4096;

#[derive(Debug, Default, Clone)]
struct Inode {
    /// The logical time of the last change (see `SimState::clock`).
    modified: u64,
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Every change since the last sync, oldest first.
    unsynced: Vec<DataOp>,
    /// Write-back failures that lost some of its changes, and how many of them a sync of it
    /// has reported (see [`SimFs::fail_write_back`]).
    write_back_errors: u64,
    write_back_errors_seen: u64,
}

impl Inode {
    /// Its bytes become durable as they now are.
    fn synced(&mut self) {
        self.durable = self.data.clone();
        self.unsynced.clear();
    }

    /// A sync: its changes since the last sync become durable (those a failed sync dropped
    /// stay readable but never reach the disk).
    fn written_back(&mut self) {
        for op in self.unsynced.drain(..) {
            op.apply(&mut self.durable);
        }
    }

    /// The last write since the last sync, unless a length change came after it.
    fn last_unsynced_write(&self) -> Option<(usize, &[u8])> {
        match self.unsynced.last()? {
            DataOp::Write { offset, bytes } => Some((*offset, bytes)),
            DataOp::SetLen(_) => None,
        }
    }
}

/// A change of names not yet made durable by syncing the folders it touched: each entry sets a
/// name to a node or removes it (`None`). A power loss keeps or drops the entries left as a
/// whole (a rename is atomic); a sync of a folder makes the entries in it durable.
#[derive(Debug, Clone)]
struct DirOp {
    effects: Vec<(PathBuf, Option<Node>)>,
}

#[derive(Debug, Default, Clone)]
struct SimState {
    names: BTreeMap<PathBuf, Node>,
    durable_names: BTreeMap<PathBuf, Node>,
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    locks: HashSet<PathBuf>,
    /// The name changes not yet durable, oldest first.
    unsynced_names: Vec<DirOp>,
    /// Mutating operations performed so far.
    mutations: u64,
    /// Power goes off once `mutations` reaches this.
    power_cut_at: Option<u64>,
    /// The file whose next sync fails (see [`SimFs::fail_next_sync`]).
    failing_sync: Option<u64>,
    /// Write-back failures of the whole file system so far (see [`SimFs::fail_write_back`]),
    /// and how many of them some `syncfs` has reported.
    write_back_errors: u64,
    write_back_errors_seen: u64,
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

    /// Changes names (see [`DirOp`]) and remembers the change until it is durable.
    fn change_names(&mut self, effects: Vec<(PathBuf, Option<Node>)>) {
        for (path, node) in &effects {
            match node {
                Some(node) => self.names.insert(path.clone(), *node),
                None => self.names.remove(path),
            };
        }
        self.unsynced_names.push(DirOp { effects });
    }

    /// Records a change to a file's bytes that a sync has not made durable yet.
    fn change_data(&mut self, id: u64, op: DataOp) -> io::Result<()> {
        let clock = self.clock;
        let inode = self.inodes.get_mut(&id).ok_or_else(power_off)?;
        op.apply(&mut inode.data);
        inode.unsynced.push(op);
        inode.modified = clock;
        Ok(())
    }

    /// Every name and byte becomes durable as it now is.
    fn make_all_durable(&mut self) {
        self.durable_names = self.names.clone();
        self.unsynced_names.clear();
        for inode in self.inodes.values_mut() {
            inode.synced();
        }
    }

    /// A sync of the whole file system: every name becomes durable, and every file's changes
    /// since its last sync.
    fn write_back_all(&mut self) {
        self.durable_names = self.names.clone();
        self.unsynced_names.clear();
        for inode in self.inodes.values_mut() {
            inode.written_back();
        }
    }

    /// After a power loss, the power comes back on: every name and byte is durable as it
    /// now is, and no lock is held.
    fn power_back_on(&mut self) {
        self.make_all_durable();
        self.locks.clear();
        self.power_cut_at = None;
        // A failure of write-back before the loss is no news to the next boot's handles.
        self.failing_sync = None;
        self.write_back_errors_seen = self.write_back_errors;
        for inode in self.inodes.values_mut() {
            inode.write_back_errors_seen = inode.write_back_errors;
        }
    }
}

/// A small seeded generator (splitmix64): the same seed makes the same power loss.
struct Coin(u64);

impl Coin {
    fn flip(&mut self) -> bool {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) & 1 == 1
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

    /// Another file system, holding a copy of this one's names and bytes (durable and not),
    /// its clock and its counts as they are now, and sharing nothing with it: a test that
    /// cuts the power at every step of one call builds the state before it once. No lock is
    /// held in the copy.
    pub fn snapshot(&self) -> SimFs {
        let mut state = self.state.lock().clone();
        state.locks.clear();
        SimFs {
            state: Arc::new(Mutex::new(state)),
        }
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

    /// Makes the next sync of the file now at `path` fail with `EIO`, as a disk whose
    /// write-back failed: the changes since the file's last sync stay readable, but no later
    /// sync writes them (Linux marks the pages clean after reporting the error), so a power
    /// loss takes them.
    pub fn fail_next_sync(&self, path: &Path) {
        let mut state = self.state.lock();
        state.failing_sync = match state.names.get(path) {
            Some(Node::File(id)) => Some(*id),
            _ => None,
        };
    }

    /// The disk fails to write back what is cached: every file's changes since its last sync
    /// are lost (they stay readable until a power loss). As Linux does, `syncfs` reports the
    /// failure once to each handle open now, and once to a handle opened later unless
    /// `seen_elsewhere` (another process's `syncfs` reported it first); a sync of a file that
    /// lost changes reports it once to each of its handles open now, and once to one opened
    /// later if no sync of the file has reported it yet.
    pub fn fail_write_back(&self, seen_elsewhere: bool) {
        let mut state = self.state.lock();
        for inode in state.inodes.values_mut() {
            if !inode.unsynced.is_empty() {
                inode.unsynced.clear();
                inode.write_back_errors += 1;
            }
        }
        state.write_back_errors += 1;
        if seen_elsewhere {
            state.write_back_errors_seen = state.write_back_errors;
        }
    }

    /// True once the power is off.
    pub fn is_power_off(&self) -> bool {
        self.state.lock().check_power().is_err()
    }

    /// Loses power: every name and byte not made durable is dropped (and every name in a folder
    /// whose own entry was not). With `torn_bytes`, each file keeps up to that many leading
    /// bytes of its last unsynced write, as a disk that wrote part of it would. Then the power
    /// comes back on and locks are released.
    pub fn crash(&self, torn_bytes: Option<usize>) {
        let mut state = self.state.lock();
        state.names = reachable(state.durable_names.clone());
        for inode in state.inodes.values_mut() {
            let mut data = inode.durable.clone();
            if let (Some(keep), Some((offset, bytes))) = (torn_bytes, inode.last_unsynced_write()) {
                let kept = bytes.get(..keep.min(bytes.len())).unwrap_or_default();
                if offset <= data.len() && !kept.is_empty() {
                    let torn = DataOp::Write {
                        offset,
                        bytes: kept.to_vec(),
                    };
                    torn.apply(&mut data);
                }
            }
            inode.data = data;
        }
        state.power_back_on();
    }

    /// Loses power as a disk that writes back in any order would: of the name changes not
    /// made durable (creates, renames, removals, hard links), a subset chosen by `seed`
    /// survives, each change whole; of each file's writes since its last sync, a subset
    /// survives too, where a surviving write keeps every earlier unsynced write to the same
    /// 4 KiB page. Names left in a folder that did not survive go with it. Then the power
    /// comes back on and locks are released.
    pub fn crash_reordering(&self, seed: u64) {
        let mut coin = Coin(seed);
        let mut state = self.state.lock();
        let mut names = state.durable_names.clone();
        for op in std::mem::take(&mut state.unsynced_names) {
            if coin.flip() {
                for (path, node) in op.effects {
                    match node {
                        Some(node) => names.insert(path, node),
                        None => names.remove(&path),
                    };
                }
            }
        }
        state.names = reachable(names);
        let mut ids: Vec<u64> = state.inodes.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(inode) = state.inodes.get_mut(&id) else {
                continue;
            };
            let mut forced = HashSet::new();
            let mut keep = vec![false; inode.unsynced.len()];
            for (i, op) in inode.unsynced.iter().enumerate().rev() {
                if coin.flip() || op.pages().any(|page| forced.contains(&page)) {
                    keep[i] = true;
                    forced.extend(op.pages());
                }
            }
            let mut data = inode.durable.clone();
            for (op, _) in inode.unsynced.iter().zip(keep).filter(|(_, k)| *k) {
                op.apply(&mut data);
            }
            inode.data = data;
        }
        state.power_back_on();
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
        inode.synced();
        inode.modified = clock;
    }
}

#[derive(Debug)]
struct SimFile {
    fs: SimFs,
    id: u64,
    writable: bool,
    /// The write-back failures this handle has heard of (see [`SimFs::fail_write_back`]):
    /// of the file system, and of its file.
    errors_heard: Mutex<u64>,
    file_errors_heard: Mutex<u64>,
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
        let offset = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let bytes = buf.to_vec();
        state.change_data(self.id, DataOp::Write { offset, bytes })
    }

    fn sync(&self) -> io::Result<()> {
        let mut state = self.fs.state.lock();
        state.mutate()?;
        let failing = state.failing_sync == Some(self.id);
        if failing {
            state.failing_sync = None;
        }
        let inode = state.inodes.get_mut(&self.id).ok_or_else(power_off)?;
        let mut heard = self.file_errors_heard.lock();
        if failing || inode.write_back_errors > *heard {
            if failing {
                inode.unsynced.clear();
                inode.write_back_errors += 1;
            }
            *heard = inode.write_back_errors;
            inode.write_back_errors_seen = inode.write_back_errors;
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        inode.written_back();
        Ok(())
    }

    fn sync_file_system(&self) -> io::Result<bool> {
        let mut state = self.fs.state.lock();
        state.mutate()?;
        let mut heard = self.errors_heard.lock();
        if state.write_back_errors > *heard {
            *heard = state.write_back_errors;
            state.write_back_errors_seen = state.write_back_errors;
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        state.write_back_all();
        Ok(true)
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
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        state.change_data(self.id, DataOp::SetLen(len))
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

/// The names of `names` a lookup from the root reaches: a name whose folder's own entry was
/// not made durable is lost with it, whatever was synced inside.
fn reachable(names: BTreeMap<PathBuf, Node>) -> BTreeMap<PathBuf, Node> {
    let mut kept = BTreeMap::new();
    // A folder sorts before the names inside it.
    for (path, node) in names {
        let root = path.parent().is_none();
        if root || matches!(kept.get(&parent_of(&path)), Some(Node::Dir)) {
            kept.insert(path, node);
        }
    }
    kept
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_owned)
}

impl FileSystem for SimFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.mutate()?;
        let mut created: Vec<(PathBuf, Option<Node>)> = path
            .ancestors()
            .filter(|a| !state.names.contains_key(*a))
            .map(|a| (a.to_owned(), Some(Node::Dir)))
            .collect();
        created.reverse();
        if !created.is_empty() {
            state.change_names(created);
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

    fn stat_changed(&self, path: &Path) -> io::Result<(FileStat, Option<i64>)> {
        // Nothing here sets a modification time back: it moves with every change, as a
        // change time does.
        let stat = self.stat(path)?;
        Ok((stat, Some(stat.modified_ns)))
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
                state.inodes.entry(id).or_default();
                state.change_data(id, DataOp::SetLen(0))?;
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
                state.change_names(vec![(path.to_owned(), Some(Node::File(id)))]);
                id
            }
        };
        // A new handle hears of failures no one has reported yet, as Linux's do.
        let errors_heard = Mutex::new(state.write_back_errors_seen);
        let file_errors_heard = Mutex::new(
            state
                .inodes
                .get(&id)
                .map_or(0, |inode| inode.write_back_errors_seen),
        );
        Ok(Box::new(SimFile {
            fs: self.clone(),
            id,
            writable: mode != OpenMode::Read,
            errors_heard,
            file_errors_heard,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.mutate()?;
        let node = *state.names.get(from).ok_or_else(|| not_found(from))?;
        if from != to {
            state.change_names(vec![(from.to_owned(), None), (to.to_owned(), Some(node))]);
        }
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
                state.change_names(vec![(to.to_owned(), Some(Node::File(id)))]);
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
                state.change_names(vec![(path.to_owned(), None)]);
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
        for op in &mut state.unsynced_names {
            op.effects.retain(|(p, _)| !in_dir(p));
        }
        state.unsynced_names.retain(|op| !op.effects.is_empty());
        Ok(())
    }

    fn sync_file_system(&self, _dir: &Path) -> io::Result<bool> {
        let mut state = self.state.lock();
        state.mutate()?;
        // Through a handle opened now.
        if state.write_back_errors > state.write_back_errors_seen {
            state.write_back_errors_seen = state.write_back_errors;
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        state.write_back_all();
        Ok(true)
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

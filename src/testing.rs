//! Test file systems and a reference model, behind the `fault-injection` feature.
//!
//! - [`SimFs`]: an in-memory file system that keeps written and durable bytes apart. It can cut
//!   the power after any number of operations, and [`SimFs::crash`] then drops everything not
//!   yet durable (optionally keeping a prefix of each file's last unsynced write).
//! - [`FaultyFs`]: wraps any file system and fails its Nth operation with an error such as
//!   `EIO` or `ENOSPC`.
//! - [`Model`] and [`Op`]: a plain in-memory model of SEMANTICS.md, and operations that run
//!   against both it and a store, for the crash sweeps, the property test and the fuzz targets.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::fs::{DirEntry, FileHandle, FileStat, FileSystem, LockGuard, OpenMode};
use crate::{ChatMessage, LogStore, SessionBackend, SessionContext};

/// Linux's `EIO`.
pub const EIO: i32 = 5;
/// Linux's `ENOSPC`.
pub const ENOSPC: i32 = 28;

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

/// One operation of a workload, run against a store and against the [`Model`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `append(key, user(text))`.
    Append(usize, String),
    /// `append_batch(key, [user(text), ...])`.
    AppendBatch(usize, Vec<String>),
    /// `update_last(key, assistant(text))`.
    UpdateLast(usize, String),
    /// `remove_last(key)`.
    RemoveLast(usize),
    /// `clear_messages(key)`.
    Clear(usize),
    /// `delete_session(key)`.
    Delete(usize),
    /// `set_session_name(key, name)`.
    Name(usize, String),
    /// `set_session_agent_alias(key, alias)`.
    Alias(usize, String),
    /// `set_session_context(key, { channel_id, sender_id })`.
    Context(usize, Option<String>, Option<String>),
    /// `set_session_state(key, running ? "running" : "idle", Some("turn"))`.
    State(usize, bool),
    /// `compact(key)`.
    Compact(usize),
    /// `undo_clear(key)`.
    UndoClear(usize),
    /// `restore_session(key)` (a refusal because the key is live again changes nothing).
    Restore(usize),
    /// `fork_session(from, to, None)` (refused when `to` exists or `from` does not).
    Fork(usize, usize),
    /// `erase_session(key)`.
    Erase(usize),
    /// Close the store and open it again.
    Reopen,
    /// Lose power (dropping everything not yet durable), then open the store again.
    PowerLoss,
}

/// The keys workloads use: similar-looking keys that must stay distinct.
pub const KEYS: &[&str] = &["a", "a.b", "a/b", "../x", "ü"];

/// What a session holds in the model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelSession {
    /// Live messages.
    pub messages: Vec<ChatMessage>,
    /// Name.
    pub name: Option<String>,
    /// Agent alias.
    pub alias: Option<String>,
    /// Channel.
    pub channel_id: Option<String>,
    /// Sender.
    pub sender_id: Option<String>,
    /// State and turn.
    pub state: (String, Option<String>),
}

/// A deleted session in the model: the session, its cleared messages, the key it was forked
/// from.
pub type ModelTombstone = (ModelSession, Option<Vec<ChatMessage>>, Option<String>);

/// The contract, as plainly as it can be written: a map of sessions. Two models are equal
/// when their sessions are: the undo state is not observable except through undo.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// Sessions by key.
    pub sessions: BTreeMap<String, ModelSession>,
    /// The messages the last clear of each live session removed (for `undo_clear`).
    pub cleared: BTreeMap<String, Vec<ChatMessage>>,
    /// The latest deleted session of each key, with its cleared messages and the key it was
    /// forked from (for `restore_session` and `erase_session`).
    pub tombstones: BTreeMap<String, ModelTombstone>,
    /// The key each live fork was forked from.
    pub fork_of: BTreeMap<String, String>,
}

impl PartialEq for Model {
    fn eq(&self, other: &Model) -> bool {
        self.sessions == other.sessions
    }
}

impl Eq for Model {}

fn new_session() -> ModelSession {
    ModelSession {
        state: ("idle".into(), None),
        ..ModelSession::default()
    }
}

fn trim(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

impl Model {
    /// Applies `op` as SEMANTICS.md says.
    pub fn apply(&mut self, op: &Op) {
        let key = |k: &usize| KEYS[*k % KEYS.len()].to_owned();
        // A call that creates a session creates a new one, not a fork.
        let created = match op {
            Op::Append(k, _)
            | Op::Name(k, _)
            | Op::Alias(k, _)
            | Op::Context(k, ..)
            | Op::State(k, _) => Some(k),
            Op::AppendBatch(k, texts) if !texts.is_empty() => Some(k),
            _ => None,
        };
        if let Some(k) = created.filter(|k| !self.sessions.contains_key(&key(k))) {
            self.fork_of.remove(&key(k));
        }
        match op {
            Op::Append(k, text) => self
                .sessions
                .entry(key(k))
                .or_insert_with(new_session)
                .messages
                .push(ChatMessage::user(text.clone())),
            Op::AppendBatch(k, texts) => {
                if !texts.is_empty() {
                    let session = self.sessions.entry(key(k)).or_insert_with(new_session);
                    session
                        .messages
                        .extend(texts.iter().map(|t| ChatMessage::user(t.clone())));
                }
            }
            Op::UpdateLast(k, text) => {
                if let Some(last) = self
                    .sessions
                    .get_mut(&key(k))
                    .and_then(|s| s.messages.last_mut())
                {
                    *last = ChatMessage::assistant(text.clone());
                }
            }
            Op::RemoveLast(k) => {
                if let Some(s) = self.sessions.get_mut(&key(k)) {
                    s.messages.pop();
                }
            }
            Op::Clear(k) => {
                if let Some(s) = self.sessions.get_mut(&key(k)) {
                    if !s.messages.is_empty() {
                        self.cleared.insert(key(k), std::mem::take(&mut s.messages));
                    }
                }
            }
            Op::UndoClear(k) => {
                if let Some(s) = self.sessions.get_mut(&key(k)) {
                    if let Some(mut restored) = self.cleared.remove(&key(k)) {
                        restored.append(&mut s.messages);
                        s.messages = restored;
                    }
                }
            }
            Op::Delete(k) => {
                if let Some(session) = self.sessions.remove(&key(k)) {
                    let cleared = self.cleared.remove(&key(k));
                    let origin = self.fork_of.remove(&key(k));
                    self.tombstones.insert(key(k), (session, cleared, origin));
                }
            }
            Op::Restore(k) => {
                if !self.sessions.contains_key(&key(k)) {
                    if let Some((session, cleared, origin)) = self.tombstones.remove(&key(k)) {
                        self.sessions.insert(key(k), session);
                        if let Some(cleared) = cleared {
                            self.cleared.insert(key(k), cleared);
                        }
                        if let Some(origin) = origin {
                            self.fork_of.insert(key(k), origin);
                        }
                    }
                }
            }
            Op::Erase(k) => {
                let k = key(k);
                self.sessions.remove(&k);
                self.cleared.remove(&k);
                self.fork_of.remove(&k);
                self.tombstones.remove(&k);
                // Deleted forks of it go too: they would keep its bytes.
                self.tombstones
                    .retain(|_, (_, _, origin)| origin.as_deref() != Some(k.as_str()));
            }
            Op::Fork(from, to) => {
                let (from, to) = (key(from), key(to));
                if from != to && !self.sessions.contains_key(&to) {
                    if let Some(source) = self.sessions.get(&from).cloned() {
                        self.sessions.insert(to.clone(), source);
                        self.cleared.remove(&to);
                        self.fork_of.insert(to, from);
                    }
                }
            }
            Op::Name(k, name) => {
                self.sessions.entry(key(k)).or_insert_with(new_session).name =
                    (!name.is_empty()).then(|| name.clone());
            }
            Op::Alias(k, alias) => {
                self.sessions
                    .entry(key(k))
                    .or_insert_with(new_session)
                    .alias = (!alias.is_empty()).then(|| alias.clone());
            }
            Op::Context(k, channel, sender) => {
                let s = self.sessions.entry(key(k)).or_insert_with(new_session);
                if let Some(c) = trim(channel) {
                    s.channel_id = Some(c);
                }
                if let Some(v) = trim(sender) {
                    s.sender_id = Some(v);
                }
            }
            Op::State(k, running) => {
                let state = if *running { "running" } else { "idle" };
                self.sessions
                    .entry(key(k))
                    .or_insert_with(new_session)
                    .state = (state.into(), Some("turn".into()));
            }
            // An explicit compaction holds only what is live: nothing left to undo.
            Op::Compact(k) => {
                self.cleared.remove(&key(k));
            }
            Op::Reopen | Op::PowerLoss => {}
        }
    }

    /// What `store` holds, in the model's terms.
    pub fn observe(store: &LogStore) -> Model {
        let mut sessions = BTreeMap::new();
        for meta in store.list_sessions_with_metadata() {
            let state = store
                .get_session_state(&meta.key)
                .ok()
                .flatten()
                .map(|s| (s.state, s.turn_id))
                .unwrap_or_default();
            let messages = store.load(&meta.key);
            sessions.insert(
                meta.key.clone(),
                ModelSession {
                    messages,
                    name: meta.name,
                    alias: meta.agent_alias,
                    channel_id: meta.channel_id,
                    sender_id: meta.sender_id,
                    state,
                },
            );
        }
        Model {
            sessions,
            ..Model::default()
        }
    }
}

/// Runs `op` against the store. `Reopen` and `PowerLoss` are handled by the caller (they need
/// the folder and options); here they do nothing.
pub fn run_op(store: &LogStore, op: &Op) -> io::Result<()> {
    let key = |k: &usize| KEYS[*k % KEYS.len()];
    match op {
        Op::Append(k, text) => store.append(key(k), &ChatMessage::user(text.clone())),
        Op::AppendBatch(k, texts) => {
            let messages: Vec<ChatMessage> =
                texts.iter().map(|t| ChatMessage::user(t.clone())).collect();
            Ok(store.append_batch(key(k), &messages)?)
        }
        Op::UpdateLast(k, text) => store
            .update_last(key(k), &ChatMessage::assistant(text.clone()))
            .map(drop),
        Op::RemoveLast(k) => store.remove_last(key(k)).map(drop),
        Op::Clear(k) => store.clear_messages(key(k)).map(drop),
        Op::Delete(k) => store.delete_session(key(k)).map(drop),
        Op::Name(k, name) => store.set_session_name(key(k), name),
        Op::Alias(k, alias) => store.set_session_agent_alias(key(k), alias),
        Op::Context(k, channel, sender) => store.set_session_context(
            key(k),
            SessionContext {
                channel_id: channel.as_deref(),
                room_id: None,
                sender_id: sender.as_deref(),
            },
        ),
        Op::State(k, running) => {
            let state = if *running { "running" } else { "idle" };
            store.set_session_state(key(k), state, Some("turn"))
        }
        Op::Compact(k) => store.compact(key(k)),
        Op::UndoClear(k) => store.undo_clear(key(k)).map(drop).map_err(Into::into),
        Op::Erase(k) => store.erase_session(key(k)).map(drop).map_err(Into::into),
        Op::Restore(k) => match store.restore_session(key(k)) {
            Ok(_) | Err(crate::Error::SessionExists { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        },
        Op::Fork(from, to) => match store.fork_session(key(from), key(to), None) {
            Ok(())
            | Err(crate::Error::SessionExists { .. } | crate::Error::SessionNotFound { .. }) => {
                Ok(())
            }
            Err(e) => Err(e.into()),
        },
        Op::Reopen | Op::PowerLoss => Ok(()),
    }
}

/// Decodes fuzzer bytes into a workload: each op takes two bytes.
pub fn ops_from_bytes(data: &[u8]) -> Vec<Op> {
    data.chunks(2)
        .map(|pair| {
            let a = pair.first().copied().unwrap_or(0);
            let b = pair.get(1).copied().unwrap_or(0);
            let k = usize::from(b % 5);
            let text = format!("t{}", b / 5);
            match a % 21 {
                0..=2 => Op::Append(k, text),
                3 => Op::AppendBatch(
                    k,
                    vec![text.clone(), format!("{text}'"), format!("{text}\"")],
                ),
                4 | 5 => Op::UpdateLast(k, text),
                6 => Op::RemoveLast(k),
                7 => Op::Clear(k),
                8 => Op::Delete(k),
                9 => Op::Name(k, if b % 2 == 0 { String::new() } else { text }),
                10 => Op::Alias(k, text),
                11 => Op::Context(k, Some(format!(" c{b} ")), (b % 3 == 0).then(|| "s".into())),
                12 => Op::State(k, b % 2 == 0),
                13 => Op::Compact(k),
                14 => Op::Reopen,
                15 => Op::PowerLoss,
                16 => Op::Fork(k, (k + 1 + usize::from(b / 5) % 4) % 5),
                17 => Op::UndoClear(k),
                18 => Op::Restore(k),
                19 => Op::Erase(k),
                _ => Op::Append(k, text),
            }
        })
        .collect()
}

/// The folder the drivers below use inside their [`SimFs`].
pub const FUZZ_DIR: &str = "/store";

fn fuzz_options() -> crate::Options {
    crate::Options {
        segment_bytes_max: 4096,
        compaction_dead_bytes_min: 512,
        ..crate::Options::default()
    }
}

/// Runs a workload against a store on a [`SimFs`] (with `Durability::Always`) and against the
/// [`Model`], and panics where they disagree: after every call, every reopen and every power
/// loss. The property test and the `ops_model` fuzz target drive it.
pub fn check_ops(ops: &[Op]) {
    check_ops_with(ops, fuzz_options());
}

/// [`check_ops`] on an encrypted store ([`crate::Options::encryption`]).
pub fn check_ops_encrypted(ops: &[Op]) {
    let options = crate::Options {
        encryption: Some(crate::EncryptionKey::from_bytes([0x5a; 32])),
        ..fuzz_options()
    };
    check_ops_with(ops, options);
}

fn check_ops_with(ops: &[Op], options: crate::Options) {
    let fs = SimFs::new();
    let open = || {
        LogStore::open_with_fs(FUZZ_DIR, options.clone(), Arc::new(fs.clone()))
            .expect("the store opens")
    };
    let mut store = open();
    let mut model = Model::default();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Reopen => {
                drop(store);
                store = open();
            }
            Op::PowerLoss => {
                drop(store);
                fs.crash(Some(i % 17));
                store = open();
                assert!(
                    !store.recovery_report().has_damage(),
                    "a power loss is not damage: {:?}",
                    store.recovery_report()
                );
            }
            _ => {
                run_op(&store, op).unwrap_or_else(|e| panic!("op {i} {op:?} failed: {e}"));
                model.apply(op);
            }
        }
        assert_eq!(Model::observe(&store), model, "after op {i} {op:?}");
    }
}

/// The `decode_record` fuzz target: decoding a record from arbitrary bytes never panics, and
/// whatever decodes re-encodes to the same bytes (a version 1 snapshot to the same bytes
/// followed by the fork fields it lacked).
pub fn fuzz_decode_record(data: &[u8]) {
    if let Ok((frame, used)) = crate::record::decode_frame(data) {
        let mut again = Vec::new();
        crate::record::encode_frame(
            frame.seq,
            frame.ts_micros,
            frame.prev.as_ref(),
            frame.payload,
            &mut again,
        );
        assert_eq!(&again[..], &data[..used]);
        if let Ok(event) = crate::record::decode_event(frame.payload) {
            let again = crate::record::encode_event(&event);
            if again != frame.payload {
                // Only a version 1 snapshot re-encodes differently: with the fork fields added.
                assert!(matches!(
                    event,
                    crate::record::Event::Snapshot(crate::record::Snapshot {
                        fork_source: None,
                        fork_at_seq: 0,
                        ..
                    })
                ));
                assert!(again.starts_with(frame.payload));
            }
        }
    }
    let _ = crate::record::decode_event(data);
}

/// The `ops_model` fuzz target: bytes to a workload, checked by [`check_ops`].
pub fn fuzz_ops(data: &[u8]) {
    check_ops(&ops_from_bytes(data));
}

/// The `ops_model_encrypted` fuzz target: the same workload on an encrypted store.
pub fn fuzz_ops_encrypted(data: &[u8]) {
    check_ops_encrypted(&ops_from_bytes(data));
}

/// The `open_folder` fuzz target: lays arbitrary bytes out as segment files and opens the
/// folder. Open must not panic; whatever it opens must answer consistently, take a write, and
/// reopen to the same state.
///
/// Layout of `data`: repeated `{ name: u8 | len: u16 le | bytes: [u8; len] }`; `name` picks the
/// session id (`name / 4`) and segment number (`name % 4 + 1`).
pub fn fuzz_open_folder(data: &[u8]) {
    let fs = SimFs::new();
    let mut rest = data;
    while let [name, a, b, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*a, *b])).min(tail.len());
        let (bytes, after) = tail.split_at(len);
        let file = crate::layout::segment_name(u64::from(*name / 4), u32::from(*name % 4) + 1);
        fs.put_file(&Path::new(FUZZ_DIR).join(file), bytes);
        rest = after;
    }
    fs.put_file(&Path::new(FUZZ_DIR).join("LOCK"), b"");
    let options = crate::Options {
        auto_compact: false,
        ..fuzz_options()
    };
    let open = || LogStore::open_with_fs(FUZZ_DIR, options.clone(), Arc::new(fs.clone()));
    let Ok(store) = open() else {
        return; // a typed error (an unsupported version) is a fine answer
    };
    let seen = Model::observe(&store);
    for (key, session) in &seen.sessions {
        let meta = store
            .get_session_metadata(key)
            .expect("listed sessions exist");
        assert_eq!(meta.message_count, session.messages.len());
        assert_eq!(store.load_tail(key, 2).len(), session.messages.len().min(2));
    }
    store
        .append("fuzz", &ChatMessage::user("after open"))
        .expect("a store that opened takes writes");
    let after = Model::observe(&store);
    drop(store);
    let store = open().expect("the store opens again");
    assert!(
        !store.recovery_report().has_damage(),
        "{:?}",
        store.recovery_report()
    );
    assert_eq!(Model::observe(&store), after);
}

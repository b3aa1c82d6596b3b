//! The live sessions of a checkpoint that an open after a clean close left in its file: each
//! entry checked whole when the body was read (`codec::decode_body`), then read again, its CRC
//! checked, and decoded the first time its session is asked for (`store/session_map.rs`), or
//! read in long reads of the body for a listing.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hashbrown::HashTable;

use crate::anchor::Point;
use crate::backend::SessionMetadata;
use crate::bytes::Reader;
use crate::error::{Error, Result};
use crate::parked::BlockFile;
use crate::projection::to_time;
use crate::record::Hash;
use crate::recovery::ReplayedSession;

use super::entry::{EntryRef, Locs, Section};

/// How much of a file's body is read at a time.
pub(super) const STREAM_CHUNK: usize = 256 << 10;

/// How much of a body a listing of cold sessions reads at a time: its buffer is held beside
/// the listing's answers.
const LISTING_CHUNK: usize = 64 << 10;

/// Where a live session's entry is in a checkpoint's body, with what open and a listing need
/// of it without reading it again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ColdEntry {
    /// Where its entry starts in the body, its length, and the CRC of its bytes as open read
    /// them (checked when it is read again).
    pub at: u64,
    pub len: u32,
    pub crc: u32,
    /// Where its locations start in the location section.
    pub block_at: u64,
    pub session_id: u64,
    pub last_seq: u64,
    pub last_activity: i64,
}

impl ColdEntry {
    /// Where the entry `e` is (`at` in the body, `len` bytes, which `bytes` begin with), for a
    /// session left cold.
    pub(super) fn of(
        e: &EntryRef<'_>,
        at: u64,
        len: usize,
        block_at: u64,
        bytes: &[u8],
    ) -> Option<ColdEntry> {
        Some(ColdEntry {
            at,
            len: u32::try_from(len).ok()?,
            crc: crc32fast::hash(bytes.get(..len)?),
            block_at,
            session_id: e.session_id,
            last_seq: e.last_seq,
            last_activity: e.last_activity,
        })
    }
}

/// The live sessions of a checkpoint that open left in its file (every entry checked whole
/// when it was read): each is read again and decoded the first time it is asked for.
pub(crate) struct Cold {
    version: u32,
    section_len: u64,
    file: Arc<BlockFile>,
    /// Where the body starts in the file.
    body_at: u64,
    window: usize,
    pub(crate) entries: Vec<ColdEntry>,
    /// Where the entries end in the body.
    end: u64,
    /// Each entry's session id and index, in order of id, if the entries are not in
    /// descending order of id (as a store writes them: then this is their order reversed).
    by_id: Option<Vec<(u64, u32)>>,
    /// Where the last [`Cold::find`] found its entry (in `by_id`, or among the entries):
    /// lookups in order of id (the anchors' check at open) each take one step from there.
    hint: AtomicUsize,
    /// The entries' keys and their index by key, shared with the `Cold` a checkpoint taken
    /// while the store runs moves them to ([`Cold::moved_to`]).
    keys: Arc<ColdKeys>,
    /// Some entry is a fork's (so a reclaim must look for forks among the sessions).
    pub(crate) has_forks: bool,
    /// For the anchors' check at open (then dropped): the chain heads of the entries whose
    /// anchored point has their number and another head, by index; every other entry's
    /// head is its anchored point's, or is not compared (its number differs).
    heads: Vec<(u32, Hash)>,
}

/// The keys of a checkpoint's live sessions, by entry index (an index stays its entry's for
/// the store's life: [`Cold::moved_to`] keeps them).
#[derive(Clone)]
pub(crate) struct ColdKeys {
    /// Every entry's key, one after another: one allocation, where a `Box<str>` each cost
    /// its 16-byte pointer and the allocator's rounding besides.
    bytes: String,
    /// Where each entry's key ends in `bytes` (it starts where the one before ends).
    ends: Vec<u32>,
    /// The entries' indices by key ([`Cold::index_keys`]): 4 bytes each and their keys kept
    /// once, in `bytes`, where a map of keys would hold each key again.
    by_key: HashTable<u32>,
    hasher: RandomState,
}

impl ColdKeys {
    /// The key of the entry at `index`.
    pub(crate) fn key(&self, index: usize) -> Option<&str> {
        let end = *self.ends.get(index)? as usize;
        let start = match index.checked_sub(1) {
            Some(before) => *self.ends.get(before)? as usize,
            None => 0,
        };
        self.bytes.get(start..end)
    }

    /// Adds the next entry's key; `None` (nothing added) past 4 GiB of keys.
    fn push(&mut self, key: &str) -> Option<()> {
        let end = u32::try_from(self.bytes.len().checked_add(key.len())?).ok()?;
        self.bytes.push_str(key);
        self.ends.push(end);
        Some(())
    }

    fn len(&self) -> usize {
        self.ends.len()
    }
}

impl Cold {
    /// None yet, of a checkpoint of `version` whose location section has `section_len` bytes,
    /// its body at `body_at` in `file`; room for `capacity`; each window keeps `window` ids.
    pub(super) fn new(
        version: u32,
        section_len: u64,
        file: &Arc<BlockFile>,
        body_at: u64,
        window: usize,
        capacity: usize,
    ) -> Cold {
        Cold {
            version,
            section_len,
            file: Arc::clone(file),
            body_at,
            window,
            entries: Vec::with_capacity(capacity),
            end: 0,
            by_id: None,
            hint: AtomicUsize::new(0),
            has_forks: false,
            keys: Arc::new(ColdKeys {
                bytes: String::new(),
                ends: Vec::with_capacity(capacity),
                by_key: HashTable::new(),
                hasher: RandomState::new(),
            }),
            heads: Vec::new(),
        }
    }

    /// Adds the entry of a session, with its key and chain head, and its point in the
    /// anchors if it has one; `None` (nothing added) past 4 GiB of keys, which makes the
    /// checkpoint unusable.
    pub(super) fn push(
        &mut self,
        entry: ColdEntry,
        key: &str,
        head: Hash,
        anchored: Option<&Point>,
    ) -> Option<()> {
        // (Never shared while open reads the checkpoint: no copy is made.)
        Arc::make_mut(&mut self.keys).push(key)?;
        if anchored.is_some_and(|p| p.last_seq == entry.last_seq && p.head != head) {
            self.heads.push((self.entries.len() as u32, head));
        }
        self.end = self.end.max(entry.at + u64::from(entry.len));
        self.entries.push(entry);
        Some(())
    }

    /// The same sessions, moved to the checkpoint of `version` in `file` (its body at
    /// `body_at`, its location section `section_len` bytes long): `placed` gives the new entry of each
    /// session it holds, by index; the others keep theirs (the caller moves only when every
    /// session still cold is among them).
    pub(crate) fn moved_to(
        &self,
        file: &Arc<BlockFile>,
        version: u32,
        body_at: u64,
        section_len: u64,
        placed: &[(u32, ColdEntry)],
    ) -> Cold {
        let mut entries = self.entries.clone();
        let mut end = 0;
        for (index, entry) in placed {
            if let Some(e) = entries.get_mut(*index as usize) {
                *e = *entry;
                end = end.max(entry.at + u64::from(entry.len));
            }
        }
        Cold {
            version,
            section_len,
            file: Arc::clone(file),
            body_at,
            window: self.window,
            entries,
            end,
            by_id: self.by_id.clone(),
            hint: AtomicUsize::new(0),
            has_forks: self.has_forks,
            keys: Arc::clone(&self.keys),
            heads: Vec::new(),
        }
    }

    /// With its index by id, once every entry is in.
    pub(super) fn sorted(mut self) -> Cold {
        let descending = (self.entries.windows(2)).all(|w| w[0].session_id > w[1].session_id);
        if !descending {
            let mut by_id: Vec<(u64, u32)> = (self.entries.iter().enumerate().rev())
                .map(|(i, e)| (e.session_id, i as u32))
                .collect();
            by_id.sort_unstable_by_key(|(id, _)| *id);
            self.by_id = Some(by_id);
        }
        self
    }

    /// The entry of session `id`, if it is among them, and its index.
    pub(crate) fn find(&self, id: u64) -> Option<(usize, &ColdEntry)> {
        let hint = self.hint.load(Ordering::Relaxed);
        let index = match &self.by_id {
            Some(by_id) => {
                let at = [hint, hint + 1]
                    .into_iter()
                    .find(|&at| by_id.get(at).is_some_and(|(at_id, _)| *at_id == id))
                    .or_else(|| by_id.binary_search_by_key(&id, |(id, _)| *id).ok())?;
                self.hint.store(at, Ordering::Relaxed);
                by_id.get(at)?.1 as usize
            }
            None => {
                // Newest first: the next id up is one entry back.
                let at = [hint, hint.wrapping_sub(1)]
                    .into_iter()
                    .find(|&at| self.entries.get(at).is_some_and(|e| e.session_id == id))
                    .or_else(|| {
                        (self.entries)
                            .binary_search_by(|e| id.cmp(&e.session_id))
                            .ok()
                    })?;
                self.hint.store(at, Ordering::Relaxed);
                at
            }
        };
        Some((index, self.entries.get(index)?))
    }

    /// Indexes the entries by key: false if two hold one key.
    pub(super) fn index_keys(&mut self) -> bool {
        let k = Arc::make_mut(&mut self.keys);
        // Open's build is done: the keys' spare room goes.
        k.bytes.shrink_to_fit();
        let mut by_key = HashTable::with_capacity(k.len());
        for i in 0..k.len() {
            let key = k.key(i).unwrap_or_default();
            let hash = k.hasher.hash_one(key);
            match by_key.entry(
                hash,
                |&j: &u32| k.key(j as usize) == Some(key),
                |&j: &u32| k.hasher.hash_one(k.key(j as usize).unwrap_or_default()),
            ) {
                hashbrown::hash_table::Entry::Occupied(_) => return false,
                hashbrown::hash_table::Entry::Vacant(v) => {
                    v.insert(i as u32);
                }
            }
        }
        k.by_key = by_key;
        true
    }

    /// The index of the entry of `key`, if one holds it.
    pub(crate) fn find_key(&self, key: &str) -> Option<usize> {
        let k = &self.keys;
        let hash = k.hasher.hash_one(key);
        let found = (k.by_key).find(hash, |&j| k.key(j as usize) == Some(key));
        found.map(|&j| j as usize)
    }

    /// Drops what only open's check of the anchors used: the chain heads. (The index by id
    /// stays: the anchor of a close or of `root_hash` finds the cold sessions by id too. A
    /// store's own checkpoints need none, their entries in descending order of id.)
    pub(crate) fn opened(&mut self) {
        self.heads = Vec::new();
    }

    /// The checkpoint file the entries are read from: an erasure closes it
    /// (`BlockFile::detach`), after which a cold session is replayed from its files.
    pub(crate) fn file(&self) -> &Arc<BlockFile> {
        &self.file
    }

    /// The key of the entry at `index`.
    pub(crate) fn key(&self, index: usize) -> Option<&str> {
        self.keys.key(index)
    }

    /// The entries' keys, shared: they hold no file open.
    pub(crate) fn keys(&self) -> &Arc<ColdKeys> {
        &self.keys
    }

    /// The chain head of the entry at `index` if it differs from its anchored point's at its
    /// number (while open holds them); `None`: its anchored point's, or one not compared.
    pub(crate) fn head(&self, index: usize) -> Option<Hash> {
        let at = (self.heads)
            .binary_search_by_key(&index, |(i, _)| *i as usize)
            .ok()?;
        self.heads.get(at).map(|(_, head)| *head)
    }

    /// The entry `e` as read again from the file, its CRC checked.
    fn read(&self, e: &ColdEntry) -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; e.len as usize];
        let at = self.body_at + e.at;
        self.file.read_at(&mut bytes, at, "session entry")?;
        if crc32fast::hash(&bytes) != e.crc {
            return Err(self.changed(e));
        }
        Ok(bytes)
    }

    fn missing(&self, index: usize) -> Error {
        Error::Corrupt {
            path: self.file.path().to_path_buf(),
            offset: 0,
            reason: format!("no session entry {index} among those open read"),
        }
    }

    pub(crate) fn changed(&self, e: &ColdEntry) -> Error {
        Error::Corrupt {
            path: self.file.path().to_path_buf(),
            offset: self.body_at + e.at,
            reason: "a session's entry in the checkpoint changed since open read it".into(),
        }
    }

    /// The session `e` records, read again and decoded, its locations parked in the file.
    pub(crate) fn session(&self, e: &ColdEntry) -> Result<ReplayedSession> {
        let bytes = self.read(e)?;
        self.parse(e, &bytes)?
            .session()
            .ok_or_else(|| self.changed(e))
    }

    fn parse<'b>(&'b self, e: &ColdEntry, bytes: &'b [u8]) -> Result<ColdRead<'b>> {
        let (entry, _) = self.parse_entry(e, bytes)?;
        Ok(ColdRead {
            cold: self,
            entry,
            block_at: e.block_at,
        })
    }

    /// The entry `e` as `bytes` hold it, and where its block ends in the location section.
    fn parse_entry<'b>(&self, e: &ColdEntry, bytes: &'b [u8]) -> Result<(EntryRef<'b>, u64)> {
        let mut block_end = e.block_at;
        let entry = EntryRef::parse(
            &mut Reader(bytes),
            self.version,
            &mut block_end,
            self.section_len,
        )
        .ok_or_else(|| self.changed(e))?;
        Ok((entry, block_end))
    }

    /// `f` of each of `entries` (indices, in order of where they are in the body), read
    /// again in long reads of the body: for a listing of many. `f` is called once for each,
    /// in that order; an entry that cannot be read again, or changed, is passed as its error.
    pub(crate) fn each(
        &self,
        entries: impl IntoIterator<Item = usize>,
        mut f: impl FnMut(usize, Result<ColdRead<'_>>),
    ) {
        let mut buf: Vec<u8> = Vec::new();
        // Where `buf` starts in the body.
        let mut buf_at = 0u64;
        for index in entries {
            let Some(e) = self.entries.get(index) else {
                // Never (the indices are the map's): still one answer for each index asked.
                f(index, Err(self.missing(index)));
                continue;
            };
            let end = e.at + u64::from(e.len);
            if e.at < buf_at || end > buf_at + buf.len() as u64 {
                // Read from this entry on, a chunk at a time (at least the entry).
                // (At least the entry, never past the last one's end.)
                let left = self.end.saturating_sub(e.at).max(u64::from(e.len));
                let len = (LISTING_CHUNK as u64).max(u64::from(e.len)).min(left);
                buf.resize(len as usize, 0);
                if let Err(err) = self.file.read_at(&mut buf, self.body_at + e.at, "body") {
                    buf.clear();
                    f(index, Err(err));
                    continue;
                }
                buf_at = e.at;
            }
            let from = (e.at - buf_at) as usize;
            let bytes = &buf[from..from + e.len as usize];
            if crc32fast::hash(bytes) != e.crc {
                f(index, Err(self.changed(e)));
                continue;
            }
            f(index, self.parse(e, bytes));
        }
    }
}

/// Reads cold sessions' entries and blocks as they are in the file, to be copied into a new
/// checkpoint without decoding them: in long reads of the body and of the location section,
/// which a checkpoint visits in the order they are in (newest session first).
pub(crate) struct Copier<'a> {
    cold: &'a Cold,
    entries: Window,
    blocks: Window,
}

/// Bytes of a file read ahead, from `at`.
#[derive(Default)]
struct Window {
    buf: Vec<u8>,
    at: u64,
}

impl Window {
    /// The `len` bytes at `at` of `file`, read with what follows them, a chunk at a time
    /// (more for a longer item), never past `end`.
    fn get(&mut self, file: &BlockFile, at: u64, len: usize, end: u64) -> Result<&[u8]> {
        let stop = at + len as u64;
        if at < self.at || stop > self.at + self.buf.len() as u64 {
            let n = (LISTING_CHUNK as u64)
                .min(end.saturating_sub(at))
                .max(len as u64);
            self.buf.resize(n as usize, 0);
            if let Err(e) = file.read_at(&mut self.buf, at, "body") {
                self.buf.clear();
                return Err(e);
            }
            self.at = at;
        }
        let from = (at - self.at) as usize;
        Ok(&self.buf[from..from + len])
    }
}

impl<'a> Copier<'a> {
    /// A copier of `cold`'s sessions.
    pub(crate) fn new(cold: &'a Cold) -> Copier<'a> {
        Copier {
            cold,
            entries: Window::default(),
            blocks: Window::default(),
        }
    }

    /// The entry `e` and its block, as they are in the file, their CRCs checked; `None` if
    /// they cannot be copied as they are into a checkpoint of `version` whose windows keep
    /// `window` ids (another version, or more ids than that: the session is decoded
    /// instead).
    pub(crate) fn next(
        &mut self,
        e: &ColdEntry,
        version: u32,
        window: usize,
    ) -> Result<Option<(&[u8], &[u8])>> {
        let cold = self.cold;
        if cold.version != version {
            return Ok(None);
        }
        let file = &*cold.file;
        let body_end = cold.body_at + cold.end;
        let entry = (self.entries).get(file, cold.body_at + e.at, e.len as usize, body_end)?;
        if crc32fast::hash(entry) != e.crc {
            return Err(cold.changed(e));
        }
        let (parsed, block_end) = cold.parse_entry(e, entry)?;
        let Locs::Section { crc, .. } = parsed.locs else {
            return Ok(None);
        };
        if parsed.id_count > window {
            return Ok(None);
        }
        let section = file.section_at();
        let len = (block_end - e.block_at) as usize;
        let block_at = section + e.block_at;
        let block = (self.blocks).get(file, block_at, len, section + cold.section_len)?;
        if crc32fast::hash(block) != crc {
            return Err(cold.changed(e));
        }
        Ok(Some((entry, block)))
    }
}

/// A cold session's entry as read again.
pub(crate) struct ColdRead<'a> {
    cold: &'a Cold,
    entry: EntryRef<'a>,
    block_at: u64,
}

impl ColdRead<'_> {
    /// The session it records, its locations parked in the file.
    pub(crate) fn session(&self) -> Option<ReplayedSession> {
        let section = Section::File(Arc::clone(&self.cold.file));
        self.entry
            .session(self.cold.window, self.block_at, &section)
    }

    /// Its segment files as its writer knows them: the oldest in force, the newest, and the
    /// newest one's length.
    #[cfg(feature = "replication")]
    pub(crate) fn files(&self) -> (u32, u32, u64) {
        let e = &self.entry;
        (e.oldest, e.newest, e.newest_len)
    }

    /// Its metadata as a listing gives it; `None` if it is archived (listings leave those
    /// out).
    pub(crate) fn metadata(&self) -> Option<SessionMetadata> {
        let e = &self.entry;
        if e.archived {
            return None;
        }
        let owned = |s: Option<&str>| s.map(str::to_owned);
        let [name, agent_alias, channel_id, room_id, sender_id] = e.strings;
        Some(SessionMetadata {
            key: e.key.to_owned(),
            name: owned(name),
            created_at: to_time(e.created_at),
            last_activity: to_time(e.last_activity),
            message_count: match e.locs {
                Locs::Inline(_, live, ..) => live,
                Locs::Section { counts, .. } => counts.0 as usize,
            },
            agent_alias: owned(agent_alias),
            channel_id: owned(channel_id),
            room_id: owned(room_id),
            sender_id: owned(sender_id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::VERSION_WRITTEN;
    use crate::fs::{FileSystem, OpenMode};

    /// An entry of session `id`, 10 bytes at the body's start.
    fn entry(id: u64) -> ColdEntry {
        ColdEntry {
            at: 0,
            len: 10,
            crc: 0,
            block_at: 0,
            session_id: id,
            last_seq: id,
            last_activity: 0,
        }
    }

    #[test]
    fn entries_in_any_order_of_id_are_found_by_id_and_by_key_after_open_and_after_a_move() {
        let fs = crate::testing::SimFs::new();
        let path = std::path::Path::new("/CHECKPOINT");
        let file = |fs: &crate::testing::SimFs| {
            let handle = fs.open(path, OpenMode::Truncate).unwrap();
            Arc::new(BlockFile::new(handle, path.to_path_buf(), 0))
        };
        for ids in [vec![9u64, 7, 4, 2], vec![2, 9, 4, 7], vec![4, 2, 7, 9]] {
            let mut cold = Cold::new(VERSION_WRITTEN, 0, &file(&fs), 0, 0, ids.len());
            for (i, &id) in ids.iter().enumerate() {
                let entry = ColdEntry {
                    at: i as u64 * 10,
                    ..entry(id)
                };
                cold.push(entry, &format!("k{id}/ü"), [0; 32], None)
                    .unwrap();
            }
            assert!(cold.index_keys());
            for (at, id) in ids.iter().enumerate() {
                let key = format!("k{id}/ü");
                assert_eq!((cold.key(at), cold.find_key(&key)), (Some(&*key), Some(at)));
            }
            assert_eq!(cold.find_key("k9"), None);
            let mut cold = cold.sorted();
            cold.opened();
            let moved = cold.moved_to(&file(&fs), VERSION_WRITTEN, 0, 0, &[]);
            for c in [&cold, &moved] {
                // In every order of lookup: each takes the hint first.
                for &id in ids.iter().chain(ids.iter().rev()) {
                    let (at, e) = c.find(id).unwrap_or_else(|| panic!("{id} in {ids:?}"));
                    assert_eq!((ids[at], e.session_id), (id, id));
                }
                assert!(c.find(5).is_none() && c.find(10).is_none());
                assert_eq!(c.find_key("k7/ü").map(|at| ids[at]), Some(7));
            }
        }
        // Two entries of one key make the checkpoint unusable.
        let mut cold = Cold::new(VERSION_WRITTEN, 0, &file(&fs), 0, 0, 2);
        for id in [2, 1] {
            cold.push(entry(id), "same", [0; 32], None).unwrap();
        }
        assert!(!cold.index_keys());
    }
}

//! Retiring and erasing files: segments a compaction replaced, a deleted session's files past
//! its undo window, `erase_session`; the erasure log's records; and the event readers that
//! defer a retirement until they are done.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use crate::compaction::{self, Retire};
use crate::erasures::Erasure;
use crate::error::Result;
use crate::event::{EventKind, LogEvent};
use crate::feed::Delivery;
use crate::fs::{context, sync_dir};
use crate::layout;
use crate::options::Options;
use crate::projection::to_time;
use crate::record::Event;
use crate::segment;

use super::appender::Writer;
use super::commit::Decision;
use super::compact::Compaction;
use super::{check_key, now_micros, Inner, Slot};

/// See [`Inner::readers`].
#[derive(Default)]
pub(super) struct Readers {
    pub(super) open: usize,
    /// `(session id, from, below)`: segments `from..below` of the session, no longer in force.
    pub(super) deferred: Vec<Retirement>,
}

/// Files that go once no event reader is open.
#[derive(Debug, Clone, Copy)]
pub(super) enum Retirement {
    /// Segments `from..below` of a session, retired as the options say (compaction).
    Replaced(u64, u32, u32),
    /// Every file of a deleted session past its undo window: its segments `from..below`, and
    /// its archived, quarantined and side files (erasure wins over history); in an encrypted
    /// store its data key first.
    Reclaimed(u64, u32, u32),
    /// The segments `from..below` a compaction replaced when it dropped cleared messages
    /// past their undo window, and the session's archived, quarantined and side files (the
    /// session lives on in the new generation, under the same key).
    Erased(u64, u32, u32),
    /// Segments `from..below` of a session, removed (never archived): a fork's links to a
    /// session being erased.
    Unlinked(u64, u32, u32),
}

/// Held by an event reader; its drop retires what was deferred while readers were open. It
/// does not keep the store open: once the store is closed it has nothing to do.
pub(super) struct ReaderGuard(pub(super) Weak<Inner>);

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        // Held through the retirement, so that a new reader waits for the folder to settle.
        let mut readers = inner.readers.lock();
        readers.open -= 1;
        if readers.open > 0 {
            return;
        }
        let deferred = std::mem::take(&mut readers.deferred);
        // A failure poisons the store (the next write reports it) and leaves the old
        // segments beside the newer generation or the delete record: open retires them.
        let _ = inner.retire_now(&deferred);
    }
}

pub(super) fn retire_mode(options: &Options) -> Retire {
    if options.keep_history {
        Retire::Archive
    } else {
        Retire::Remove
    }
}

impl Inner {
    /// `erase_session`: the session's forks get their own copy of what they share, its
    /// deleted forks go, then the session itself (its delete record first, so that a crash
    /// leaves it deleted) and every earlier session of its key kept in `archive/` or
    /// `quarantine/`. Returns every path removed.
    pub(super) fn erase(&self, key: &str) -> Result<Vec<PathBuf>> {
        self.check_writable()?;
        if check_key(key).is_err() {
            return Ok(Vec::new());
        }
        self.detach_forks(key)?;
        // Its files are listed now: with a zero retention the delete reclaims them at once.
        let live_files: Vec<PathBuf> = match self.slot(key) {
            Some(slot) => {
                let w = slot.writer.lock();
                (w.oldest.max(1)..=w.newest)
                    .map(|n| layout::segment_path(&self.dir, slot.session_id, n))
                    .collect()
            }
            None => Vec::new(),
        };
        self.commit(key, false, &Event::Delete, |view| match view {
            Some(_) => Decision::Write(()),
            None => Decision::Skip(()),
        })?;
        let mut gone = Vec::new();
        let tombstone = {
            let mut tombstones = self.tombstones.lock();
            let slot = tombstones.get(key).cloned();
            slot.filter(|slot| tombstones.take(slot))
        };
        if let Some(slot) = tombstone {
            // Reclaimed as any expired tombstone is: an erasure is never deferred for readers.
            gone.extend(self.reclaim_tombstone(&slot)?);
        }
        self.erase_earlier(key, &mut gone)?;
        // (Every removal above was synced by what made it.)
        for path in live_files {
            if !self.fs.exists(&path) && !gone.contains(&path) {
                gone.push(path);
            }
        }
        Ok(gone)
    }

    /// Before `key` is erased: its live forks get their own copy of what they share (nested
    /// forks share the same files: every fork is compacted), and its deleted forks, which
    /// would keep its bytes through their links, go for good.
    fn detach_forks(&self, key: &str) -> Result<()> {
        let forks: Vec<String> =
            self.live_views(|view| view.fork_origin.as_ref().map(|_| view.key.clone()));
        for fork in forks {
            // The links it drops go at once and are never archived: they are this session's
            // bytes under another name.
            self.compact_as(&fork, Compaction::Detach)?;
        }
        let dead_forks: Vec<Arc<Slot>> = {
            let tombstones = self.tombstones.lock();
            tombstones
                .slots()
                .filter(|slot| {
                    slot.view
                        .read()
                        .fork_origin
                        .as_ref()
                        .is_some_and(|(source, _)| source == key)
                })
                .cloned()
                .collect()
        };
        for slot in dead_forks {
            if self.tombstones.lock().take(&slot) {
                self.reclaim_tombstone(&slot)?;
            }
        }
        Ok(())
    }

    /// Files in `archive/` and `quarantine/` whose header names `key`, by session id: its
    /// earlier sessions' and, under a fork's name, shared ones. Only these files go, not the
    /// rest of another session's archive.
    fn kept_files_of(&self, key: &str) -> Result<BTreeMap<u64, Vec<PathBuf>>> {
        let mut earlier: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
        for folder in [layout::ARCHIVE_DIR, layout::QUARANTINE_DIR] {
            let folder = self.dir.join(folder);
            if !self.fs.is_dir(&folder) {
                continue;
            }
            for entry in self.fs.list(&folder).map_err(context("listing", &folder))? {
                let path = folder.join(&entry.name);
                let segment_name = entry
                    .name
                    .to_str()
                    .and_then(|name| layout::parse_segment_name(name, layout::SEGMENT_SUFFIX));
                let Some((id, _)) = segment_name else {
                    continue;
                };
                let header =
                    crate::fs::read_prefix(&*self.fs, &path, segment::HEADER_BYTES_MAX as u64)
                        .ok()
                        .and_then(|bytes| {
                            let data_key = self.data_key(id).ok().flatten();
                            segment::decode_header(&bytes, data_key.as_deref()).ok()
                        });
                if header.is_some_and(|(h, _)| h.key == key) {
                    earlier.entry(id).or_default().push(path);
                }
            }
        }
        Ok(earlier)
    }

    /// Erases the files of `key`'s earlier sessions kept in `archive/` or `quarantine/`,
    /// adding them to `gone`. A session no longer in use is logged in the erasure log first
    /// and, encrypted, loses its data key before its files.
    fn erase_earlier(&self, key: &str, gone: &mut Vec<PathBuf>) -> Result<()> {
        let earlier = self.kept_files_of(key)?;
        // Ids the store still uses (live sessions and tombstones, of any key: a fork's files
        // name its source's key, and a restore may race this erasure): their files here go,
        // but their keys and their place in the log are theirs.
        let mut in_use: HashSet<u64> = {
            let sessions = self.sessions.read();
            sessions.values().map(|slot| slot.session_id).collect()
        };
        in_use.extend(self.tombstones.lock().slots().map(|slot| slot.session_id));
        for (id, paths) in earlier {
            let erased_whole = !in_use.contains(&id);
            if erased_whole {
                // Logged before anything of it goes; then, encrypted, its data key goes
                // first, so that any other copy of its bytes is unreadable too.
                let logged = self.log_erasure(id, true);
                self.poison(logged)?;
                if let Some(keys) = &self.keys {
                    self.poison(keys.destroy_key(id))?;
                }
            }
            let mut folders = BTreeSet::new();
            for path in paths {
                self.fs
                    .remove_file(&path)
                    .map_err(context("removing", &path))?;
                folders.insert(crate::fs::parent(&path).to_path_buf());
                gone.push(path);
            }
            for folder in folders {
                // The removals are durable only with their folder's entries.
                let synced = sync_dir(&*self.fs, &folder);
                self.poison(synced)?;
            }
            if let (true, Some(keys)) = (erased_whole, &self.keys) {
                self.poison(keys.erased(id))?;
            }
        }
        Ok(())
    }

    /// Takes a session out of the map if it is still the one its key names.
    pub(super) fn unmap(&self, slot: &Arc<Slot>) {
        let mut sessions = self.sessions.write();
        if sessions
            .get(&slot.key)
            .is_some_and(|current| Arc::ptr_eq(current, slot))
        {
            sessions.remove(&slot.key);
        }
    }

    /// After a session's delete record: takes it out of the map and reclaims its files
    /// (removes them, or moves them to `archive/` with `keep_history`).
    pub(super) fn reclaim(&self, slot: &Arc<Slot>, w: &mut Writer) -> Result<Vec<PathBuf>> {
        w.retired = true;
        w.reclaimed = true;
        // The checkpoint lists the files about to go.
        self.forget_checkpoint()?;
        self.release_file(w);
        self.unmap(slot);
        // The files hold the highest sequence numbers handed out so far, perhaps: record that
        // they are used before removing them. Open finishes the reclaim if a crash stops it.
        // A deleted session past its undo window is erased, archive included: erasure wins
        // over `keep_history`.
        let result =
            layout::write_seq_floor(&*self.fs, &self.dir, self.feed.next_seq()).and_then(|()| {
                self.retire_as(Retirement::Reclaimed(
                    slot.session_id,
                    w.oldest,
                    w.newest.saturating_add(1),
                ))
            });
        self.poison(result)
    }

    /// Records in the erasure log, durably, that session `session_id` (or, not
    /// `whole_session`, its history before its last compaction) is about to be erased, and
    /// hands the event to subscribers.
    pub(super) fn log_erasure(&self, session_id: u64, whole_session: bool) -> Result<()> {
        let mut log = self.erasure_log.lock();
        let ticket = self.feed.take();
        let seq = ticket.seq();
        let ts = now_micros();
        let erasure = Erasure {
            seq,
            ts_micros: ts,
            session_id,
            whole_session,
        };
        log.record(&*self.fs, &self.dir, &erasure)?;
        ticket.commit(Some(Delivery::Event(LogEvent {
            seq,
            time: to_time(ts),
            session: String::new(),
            kind: EventKind::Erased {
                session_id,
                whole_session,
            },
        })));
        Ok(())
    }

    /// Carries out deferred retirements.
    pub(super) fn retire_now(&self, deferred: &[Retirement]) -> Result<()> {
        for &retirement in deferred {
            let done = self.carry_out(retirement).map(drop);
            self.poison(done)?;
        }
        Ok(())
    }

    /// Removes (or archives) what `retirement` names, returning the paths it touched.
    pub(super) fn carry_out(&self, retirement: Retirement) -> Result<Vec<PathBuf>> {
        match retirement {
            Retirement::Replaced(id, from, below) => compaction::retire(
                &*self.fs,
                &self.dir,
                id,
                from,
                below,
                retire_mode(&self.options),
            ),
            Retirement::Unlinked(id, from, below) => {
                compaction::retire(&*self.fs, &self.dir, id, from, below, Retire::Remove)
            }
            Retirement::Reclaimed(id, from, below) => {
                self.log_erasure(id, true)?;
                let keys = self.keys.as_ref();
                compaction::erase_session_files(&*self.fs, &self.dir, keys, id, from..below)
            }
            Retirement::Erased(id, from, below) => {
                self.log_erasure(id, false)?;
                compaction::erase_session_files(&*self.fs, &self.dir, None, id, from..below)
            }
        }
    }

    /// Carries out `retirement` now, or (a replacement, not an erasure) defers it while event
    /// readers are open; returns what it removed (nothing when deferred). An erasure is not
    /// deferred: it is meant to take effect at once, and a reader may then fail to read what
    /// it erased.
    pub(super) fn retire_as(&self, retirement: Retirement) -> Result<Vec<PathBuf>> {
        // Held through the retirement, so that a reader cannot start in the middle of it and
        // list the folder half changed.
        let mut readers = self.readers.lock();
        if readers.open > 0 && matches!(retirement, Retirement::Replaced(..)) {
            readers.deferred.push(retirement);
            return Ok(Vec::new());
        }
        self.carry_out(retirement)
    }
}

//! `erase_session`: a session erased at once, with every earlier session of its key kept in
//! `archive/` or `quarantine/`, after its forks get their own copy of what they share.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::error::Result;
use crate::fs::{context, sync_dir};
use crate::layout;
use crate::record::Event;
use crate::segment;

use super::commit::Decision;
use super::compact::Compaction;
use super::{check_key, Inner, Slot};

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
        // No fork is made from the forks' detaching until every file is gone (see
        // `Inner::fork_gate`; no caller holds it).
        let _gate = self.fork_gate.read();
        self.detach_forks(key, true)?;
        // With no undo window the delete reclaims the session at once: its removals count.
        let mut gone = Vec::new();
        self.commit_at(
            key,
            false,
            &Event::Delete,
            None,
            |view| match view {
                Some(_) => Decision::Write(()),
                None => Decision::Skip(()),
            },
            &mut gone,
        )?;
        let tombstone = {
            let mut tombstones = self.tombstones.lock();
            let slot = tombstones.get(key).cloned();
            slot.filter(|slot| tombstones.take(slot))
        };
        if let Some(slot) = tombstone {
            // Reclaimed as any expired tombstone is: an erasure is never deferred for readers.
            gone.extend(self.reclaim_tombstone(&slot)?);
        }
        // (Every removal above was synced by what made it, and is in `gone`.)
        self.erase_earlier(key, &mut gone)?;
        // The index's docs of the erased sessions go with them (merged out of its runs). It
        // holds keyed hashes, never words; a failure here is counted, and the next erasure or
        // `reindex` merges them out.
        let merged = self.erase_from_index();
        let monitor = &self.monitor;
        monitor.note(
            crate::health::Swallowed::Background,
            "erasing from the search index",
            Some(key),
            merged,
        );
        Ok(gone)
    }

    /// Before `key` is erased: its live forks get their own copy of what they share (and the
    /// forks of those, which share the same files; no other session is touched), and, with
    /// `dead_too`, its deleted
    /// forks, which would keep its bytes through their links, go for good. A fork names its
    /// source by key only, so this reaches the forks of every session that had `key`:
    /// compacting a live one changes nothing it holds, but a deleted one is reclaimed only for
    /// an explicit `erase_session` of the key.
    pub(super) fn detach_forks(&self, key: &str, dead_too: bool) -> Result<()> {
        // An erasure (`dead_too`) finds every fork or refuses, before it changes anything:
        // one left out would keep this session's bytes. A reclaim (its delete record already
        // written) goes on without a session it cannot read, counted in `health()`.
        // In a store that has never held a fork (the common case) no session is walked: a
        // walk reads every cold session's entry.
        let (forks, unread) = match self.forks_seen.load(Ordering::SeqCst) {
            true => self.each_live_view(|view| {
                let (source, _) = view.fork_origin.as_ref()?;
                Some((view.key.clone(), source.clone()))
            }),
            false => (Vec::new(), Vec::new()),
        };
        for (key, e) in unread {
            if dead_too {
                return Err(e);
            }
            let what = "looking for forks before a reclaim";
            (self.monitor).swallowed(crate::health::Swallowed::Read, what, Some(&key), &e);
        }
        for fork in forks_reaching(key, &forks) {
            // The links it drops go at once and are never archived: they are this session's
            // bytes under another name.
            self.compact_as(fork, Compaction::Detach)?;
        }
        if !dead_too {
            return Ok(());
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
                let data_key = self.data_key(id).ok().flatten();
                let header = segment::read_header(&*self.fs, &path, data_key.as_deref())
                    .ok()
                    .and_then(Result::ok);
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
        let mut in_use: HashSet<u64> = self.sessions.read().ids().collect();
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
                // A failure poisons the store, so that no clean close records the files as
                // they are: the next open finishes a logged erasure (of an id no longer in
                // use), and an erasure tried again finds the rest.
                let removed = self.fs.remove_file(&path);
                self.poison(removed.map_err(context("removing", &path)))?;
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
}

/// The live forks (`(key, source key)` of each) that may share `key`'s bytes: its forks, their
/// forks, and so on (a fork names its source by key, and a fork of a fork shares the files its
/// source shares), `key` itself left out.
fn forks_reaching<'a>(key: &str, forks: &'a [(String, String)]) -> Vec<&'a str> {
    let mut reached: HashSet<&str> = HashSet::from([key]);
    let mut order = Vec::new();
    let mut grew = true;
    while grew {
        grew = false;
        for (fork, source) in forks {
            if reached.contains(source.as_str()) && reached.insert(fork.as_str()) {
                order.push(fork.as_str());
                grew = true;
            }
        }
    }
    order
}

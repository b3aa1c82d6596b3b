//! Deleted sessions that can still be restored (`restore_session`), their sweep once the undo
//! window has passed, and the delete itself.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::projection::within_retention;
use crate::record::{begin_record, Event};

use super::appender::Writer;
use super::commit::Before;
use super::retire::Forks;
use super::session_map::Found;
use super::{check_key, now_micros, Inner, Slot};

/// Deleted sessions that can still be restored: the latest delete of each key, also ordered
/// by the time of the delete, so that a sweep looks only at the expired ones.
#[derive(Default)]
pub(super) struct Tombstones {
    pub(super) by_key: HashMap<String, (i64, Arc<Slot>)>,
    pub(super) by_time: BTreeSet<(i64, String)>,
}

impl Tombstones {
    /// Makes `slot` the key's tombstone; returns the one it displaces.
    pub(super) fn insert(&mut self, slot: Arc<Slot>, deleted_at: i64) -> Option<Arc<Slot>> {
        let key = slot.key.clone();
        let old = self.by_key.insert(key.clone(), (deleted_at, slot));
        if let Some((at, _)) = &old {
            self.by_time.remove(&(*at, key.clone()));
        }
        self.by_time.insert((deleted_at, key));
        old.map(|(_, slot)| slot)
    }

    pub(super) fn get(&self, key: &str) -> Option<&Arc<Slot>> {
        self.by_key.get(key).map(|(_, slot)| slot)
    }

    /// Removes `slot` if it is still its key's tombstone.
    pub(super) fn take(&mut self, slot: &Arc<Slot>) -> bool {
        match self.by_key.get(&slot.key) {
            Some((at, held)) if Arc::ptr_eq(held, slot) => {
                self.by_time.remove(&(*at, slot.key.clone()));
                self.by_key.remove(&slot.key);
                true
            }
            _ => false,
        }
    }

    /// Removes and returns the tombstones deleted before `cutoff` (µs since the epoch).
    pub(super) fn take_older_than(&mut self, cutoff: i64) -> Vec<Arc<Slot>> {
        let mut out = Vec::new();
        while let Some((at, key)) = self.by_time.first().cloned() {
            if at >= cutoff {
                break;
            }
            self.by_time.pop_first();
            if let Some((_, slot)) = self.by_key.remove(&key) {
                out.push(slot);
            }
        }
        out
    }

    /// The tombstone deleted first.
    pub(super) fn oldest(&self) -> Option<Arc<Slot>> {
        let (_, key) = self.by_time.first()?;
        self.get(key).cloned()
    }

    pub(super) fn slots(&self) -> impl Iterator<Item = &Arc<Slot>> {
        self.by_key.values().map(|(_, slot)| slot)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

impl Inner {
    /// After a session's delete record: takes it out of the map and keeps it as the key's
    /// tombstone, restorable for `tombstone_retention` (or reclaims it at once when that is
    /// zero, adding the files removed to `removed`). Returns the key's previous tombstone,
    /// which the caller reclaims once it has released this writer.
    pub(super) fn entomb(
        &self,
        slot: &Arc<Slot>,
        w: &mut Writer,
        removed: &mut Vec<PathBuf>,
    ) -> Result<Option<Arc<Slot>>> {
        if self.options.tombstone_retention.is_zero() {
            // (The caller, `Inner::commit_at`, detached the forks.)
            removed.extend(self.reclaim(slot, w, Forks::Detached)?);
            return Ok(None);
        }
        w.retired = true;
        self.release_file(w);
        self.unmap(slot);
        let deleted_at = slot.view.read().deleted_at;
        Ok(self.tombstones.lock().insert(Arc::clone(slot), deleted_at))
    }

    pub(super) fn restore(&self, key: &str) -> Result<bool> {
        self.check_writable()?;
        // A restore past its window reclaims (see `Inner::fork_gate`; no caller holds it).
        let _gate = self.fork_gate.read();
        if check_key(key).is_err() {
            return Ok(false);
        }
        self.sweep_tombstones()?;
        let Some(slot) = self.tombstones.lock().get(key).cloned() else {
            return Ok(false);
        };
        let mut w = slot.writer.lock();
        // Taken out of the tombstones under its writer's lock: a sweep or a displacing delete
        // can no longer reclaim it, and one that took it first left it reclaimed.
        if w.reclaimed || !self.tombstones.lock().take(&slot) {
            return Ok(false);
        }
        let deleted_at = slot.view.read().deleted_at;
        if !within_retention(self.options.tombstone_retention, deleted_at) {
            self.reclaim(&slot, &mut w, Forks::ToDetach)?;
            return Ok(false);
        }
        let put_back = |w: &mut Writer| -> Result<()> {
            // Still restorable, unless a newer delete of the key took its place meanwhile.
            let mut tombstones = self.tombstones.lock();
            match tombstones.insert(Arc::clone(&slot), deleted_at) {
                Some(newer) => {
                    let newer_at = newer.view.read().deleted_at;
                    tombstones.insert(newer, newer_at);
                    drop(tombstones);
                    self.reclaim(&slot, w, Forks::ToDetach).map(drop)
                }
                None => Ok(()),
            }
        };
        if let Err(e) = self.check_room() {
            put_back(&mut w)?;
            return Err(e);
        }
        {
            // Back in the map before the record is written, under this writer's lock: a
            // writer of the key waits for the restore, then finds the session live.
            let mut sessions = self.sessions.write();
            let held = match sessions.find(key) {
                Found::Missing => None,
                Found::Hot(held) => Some(Some(held)),
                Found::Cold => Some(None), // a live session the checkpoint holds
            };
            if let Some(held) = held {
                // A slot a failed write created (never written to) may give way; a session
                // created since the delete may not.
                let unused = held.is_some_and(|held| {
                    held.writer.try_lock().is_some_and(|mut other| {
                        let free = other.newest == 0 && !held.view.read().exists;
                        if free {
                            other.retired = true;
                        }
                        free
                    })
                });
                if !unused {
                    drop(sessions);
                    put_back(&mut w)?;
                    return Err(Error::SessionExists {
                        key: key.to_owned(),
                    });
                }
            }
            sessions.insert(Arc::clone(&slot));
        }
        let mut record = Vec::new();
        begin_record(&Event::Restore, &mut record, self.keys.is_some());
        let before = Before::of(&slot.view.read());
        let written = self.write_event(
            &slot,
            &mut w,
            &Event::Restore,
            &mut record,
            now_micros(),
            before,
        );
        if let Err(e) = written {
            self.unmap(&slot);
            // The store is poisoned now; the tombstone stays for the next open to find.
            let _ = put_back(&mut w);
            return Err(e);
        }
        w.retired = false;
        Ok(true)
    }

    /// Reclaims the files of a tombstone the caller took out of `tombstones`, for good,
    /// unless a restore brought it back first (or it was reclaimed already).
    pub(super) fn reclaim_tombstone(&self, slot: &Arc<Slot>) -> Result<Vec<PathBuf>> {
        let _gate = self.fork_gate.read_recursive();
        let due = |w: &Writer| !w.reclaimed && w.retired && slot.view.read().deleted;
        if !due(&slot.writer.lock()) {
            return Ok(Vec::new());
        }
        // The forks get their own copy before the writer lock is taken (see `Forks`). A
        // failure poisons the store, as one of the reclaim would: the caller has let go of
        // the tombstone.
        self.check_writable()?;
        let detached = self.detach_forks(&slot.key, false);
        self.poison(detached)?;
        let mut w = slot.writer.lock();
        if !due(&w) {
            return Ok(Vec::new());
        }
        self.reclaim(slot, &mut w, Forks::Detached)
    }

    /// Reclaims every tombstone past the retention.
    pub(super) fn sweep_tombstones(&self) -> Result<()> {
        if self.read_only || self.check_writable().is_err() {
            // A poisoned store reclaims nothing more; open sweeps what is past retention.
            return Ok(());
        }
        let retention =
            i64::try_from(self.options.tombstone_retention.as_micros()).unwrap_or(i64::MAX);
        let cutoff = now_micros().saturating_sub(retention);
        let expired = self.tombstones.lock().take_older_than(cutoff);
        for slot in expired {
            self.reclaim_tombstone(&slot)?;
        }
        Ok(())
    }
}

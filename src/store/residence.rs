//! Which sessions' message locations are in memory. Open leaves every session's locations in
//! the checkpoint (parked, `parked.rs`); the first call that reads or writes a session reads
//! them back ([`Inner::slot`]). Under [`crate::Options::memory_budget`], the locations read
//! back longest ago are dropped again while they are still what the checkpoint holds, so the
//! next touch reads them back: no answer changes.
//!
//! A call that reads a session's locations pins it ([`Pinned`]) for as long as it uses them;
//! a pinned session is never parked, so no call finds its locations gone half way.

use std::collections::VecDeque;
use std::ops::Deref;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::health::Swallowed;
use crate::parked::BlockFile;
use crate::projection::SessionView;
use crate::recovery::{self, ReplayOptions, ReplayedSession};
use crate::report::Finding;

use super::appender::Writer;
use super::{Inner, Slot};

/// True when a sound replay of a session (`s`) ends where its writer and view, as the
/// checkpoint left them, say it does: chain head, segments, length, last number, key.
pub(super) fn ends_as_recorded(s: &ReplayedSession, w: &Writer, view: &SessionView) -> bool {
    s.damage.is_none()
        && (s.head, s.oldest, s.newest, s.newest_len) == (w.head, w.oldest, w.newest, w.newest_len)
        && (s.view.last_seq, &s.view.key) == (view.last_seq, &view.key)
}

/// How long a replay of parked locations waits for the session's writer.
const WRITER_WAIT: Duration = Duration::from_secs(1);

/// A session a call uses: its locations stay in memory until the call drops it.
pub(super) struct Pinned(Arc<Slot>);

impl Pinned {
    /// Pins `slot`.
    pub(super) fn new(slot: Arc<Slot>) -> Pinned {
        slot.pins.fetch_add(1, Ordering::SeqCst);
        Pinned(slot)
    }
}

impl Deref for Pinned {
    type Target = Arc<Slot>;
    fn deref(&self) -> &Arc<Slot> {
        &self.0
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        self.0.pins.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The sessions whose locations were read back from the checkpoint, oldest first, with the
/// bytes each took then; only kept under a memory budget.
#[derive(Default)]
pub(super) struct Residence {
    read_back: VecDeque<(Weak<Slot>, u64)>,
    bytes: u64,
}

impl Residence {
    /// Counts `slot`'s locations, `len` bytes, as read back last.
    fn push(&mut self, slot: &Arc<Slot>, len: u64) {
        self.read_back.push_back((Arc::downgrade(slot), len));
        self.bytes += len;
    }
}

impl Inner {
    /// Reads back the locations of `slot` if they are parked, then parks others' if that
    /// passes the memory budget. `slot` must be pinned.
    pub(super) fn unpark(&self, slot: &Arc<Slot>) -> Result<()> {
        let Some(len) = self.unpark_one(slot)? else {
            return Ok(());
        };
        if self.options.memory_budget.is_none() {
            return Ok(());
        }
        self.residence.lock().push(slot, len);
        self.keep_budget();
        Ok(())
    }

    /// Parks the locations read back longest ago, while they pass the memory budget.
    pub(super) fn keep_budget(&self) {
        let Some(budget) = self.options.memory_budget else {
            return;
        };
        let mut residence = self.residence.lock();
        // Each entry is looked at once at most: pinned or busy ones go to the back.
        let mut tries = residence.read_back.len();
        while residence.bytes > budget && tries > 0 {
            tries -= 1;
            let Some((other, len)) = residence.read_back.pop_front() else {
                break;
            };
            residence.bytes -= len;
            let Some(other) = other.upgrade() else {
                continue; // gone from the store
            };
            let done = match other.view.try_write() {
                // Checked under the view's lock: a call pins before it reads the locations.
                Some(mut view) if other.pins.load(Ordering::SeqCst) == 0 => {
                    if view.park().is_some() {
                        self.monitor.parked();
                    }
                    // Parked, or changed since (never parked again); unless its block's file
                    // was detached by an erasure: the next checkpoint gives it one again.
                    view.image().is_none()
                }
                _ => false,
            };
            if !done {
                residence.push(&other, len);
            }
        }
    }

    /// Reads back the locations of `slot` if they are parked; returns how many bytes they
    /// take. Locations that cannot be read back from the checkpoint are replayed from the
    /// session's files, which must end where the checkpoint says (reported as
    /// [`Finding::CheckpointIgnored`]); if they do not, the read fails and the session stays
    /// parked.
    fn unpark_one(&self, slot: &Arc<Slot>) -> Result<Option<u64>> {
        if slot.view.read().parked().is_none() {
            return Ok(None);
        }
        let failed = {
            let mut view = slot.view.write();
            let Some(block) = view.parked().cloned() else {
                return Ok(None);
            };
            match block.read() {
                Ok((messages, cleared)) => {
                    view.unpark(messages, cleared);
                    self.monitor.read_back();
                    return Ok(Some(block.len()));
                }
                Err(e) => e,
            }
        };
        self.replay_parked(slot, failed).map(|()| None)
    }

    /// Replays a session whose parked locations could not be read back (`failed` says why)
    /// from its files, without changing them, and takes what the replay found if it ends
    /// where the checkpoint says the session ends.
    fn replay_parked(&self, slot: &Arc<Slot>, failed: Error) -> Result<()> {
        // Bounded: the caller may hold the session's writer (an erasure reads every session's
        // locations back); then the read fails as it came.
        let Some(w) = slot.writer.try_lock_for(WRITER_WAIT) else {
            return Err(failed);
        };
        let numbers: Vec<u32> = (w.oldest.max(1)..=w.newest).collect();
        let options = ReplayOptions::of(&self.options, false);
        let (fs, dir, keys) = (&*self.fs, &*self.dir, self.keys.as_ref());
        let look = recovery::replay_alone(fs, dir, slot.session_id, numbers, &options, keys)?;
        let mut view = slot.view.write();
        if view.parked().is_none() {
            return Ok(()); // read back meanwhile
        }
        match look.live {
            Some(s) if ends_as_recorded(&s, &w, &view) => {
                *view = s.view;
                self.report.add(vec![Finding::CheckpointIgnored {
                    reason: format!(
                        "{failed}; the session {:?} was replayed from its files instead",
                        slot.key
                    ),
                }]);
                Ok(())
            }
            _ => Err(failed),
        }
    }

    /// Reads back every session's parked locations and closes the checkpoint files they were
    /// read from: before an erasure removes the checkpoint, so that no open handle keeps its
    /// bytes (the erased session's metadata among them) on disk. The sessions keep their
    /// images, detached: the memory budget drops none of them until the next checkpoint (which
    /// an erasure makes due) holds their locations again. A session whose locations can be
    /// read back neither from the checkpoint nor from its files stays parked, to be replayed
    /// from its files at its next touch: the erasure is not refused for it, and the error is
    /// counted in [`crate::LogStore::health`]. So is a cold session whose entry can be read
    /// neither: it stays cold, and its next touch replays it from its files
    /// ([`Inner::replay_cold`]), the checkpoint's file closed.
    pub(super) fn unpark_all(&self) {
        // Cold sessions are warmed first: their locations are in the checkpoint too.
        let (mut slots, failed) = self.warm_every();
        let what = "reading a session back before an erasure";
        for (key, e) in &failed {
            (self.monitor).swallowed(Swallowed::Read, what, Some(key), e);
        }
        slots.extend(self.tombstones.lock().slots().cloned());
        // First, nothing more is parked in them (the budget, run by another call meanwhile,
        // would park again what is read back here); no checkpoint is put in place meanwhile,
        // so no other file comes. The file cold sessions are read from closes too, whether
        // some stay cold or a listing still holds it.
        let mut files: Vec<Arc<BlockFile>> = Vec::new();
        if let Some(cold) = self.sessions.read().cold() {
            files.push(Arc::clone(cold.file()));
        }
        for slot in &slots {
            if let Some(block) = slot.view.read().home.block() {
                if !files.iter().any(|f| Arc::ptr_eq(f, block.file())) {
                    files.push(Arc::clone(block.file()));
                }
            }
        }
        for file in &files {
            file.closing();
        }
        for slot in &slots {
            let _pin = Pinned::new(Arc::clone(slot));
            match self.unpark_one(slot) {
                Ok(Some(len)) if self.options.memory_budget.is_some() => {
                    self.residence.lock().push(slot, len);
                }
                Ok(_) => {}
                Err(e) => {
                    let what = "reading message locations back before an erasure";
                    self.monitor
                        .swallowed(Swallowed::Read, what, Some(&slot.key), &e);
                }
            }
        }
        for file in files {
            file.detach();
        }
    }
}

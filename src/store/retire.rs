//! Retiring files: segments a compaction replaced, a deleted session's files past its undo
//! window (erased, each erasure first recorded in the erasure log), and the event readers that
//! defer a retirement until they are done.

use std::path::PathBuf;
use std::sync::{Arc, Weak};

use crate::compaction::{self, Disposal};
use crate::erasures::{self, Erasure, InFolder, Logged};
use crate::error::Result;
use crate::event::EventKind;
use crate::health::Swallowed;
use crate::options::Options;
use crate::projection::SessionView;

use super::appender::Writer;
use super::{now_micros, Inner, Slot};

/// See [`Inner::readers`].
#[derive(Default)]
pub(super) struct Readers {
    pub(super) open: usize,
    /// `(session id, from, below)`: segments `from..below` of the session, no longer in force.
    pub(super) deferred: Vec<Retirement>,
}

/// Files that go once no event reader is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Segments `from..below` of a fork that got its own copy of a session being erased: its
    /// links to that session's segments removed (never archived), its own segments retired as
    /// the options say.
    Unlinked(u64, u32, u32),
}

/// Held by an event reader; its drop retires what was deferred while readers were open. It
/// does not keep the store open: once the store is closed it has nothing to do.
pub(super) struct ReaderGuard(pub(super) Weak<Inner>);

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            inner.reader_gone();
        }
    }
}

/// Where the segments a compaction replaced go: `archive/` with `keep_history`, else away.
pub(super) fn disposal(options: &Options) -> Disposal {
    if options.keep_history {
        Disposal::Archive
    } else {
        Disposal::Remove
    }
}

/// Whether a reclaim's caller gave the session's forks their own copy already.
///
/// A fork from the past shares the segment of its fork point, source records written after
/// that point included: a live one gets its own copy before the source's bytes go, so that
/// none of them outlives the source under its names. (A deleted fork keeps them until its own
/// reclaim: it may be a fork of a later session of the key, and restorable.) Callers do it
/// before they take the session's writer lock where they can: two sessions forked from each
/// other's keys (a key deleted and forked again) would otherwise each hold its writer and wait
/// for the other's. The fork gate, held from before the copy until the files are gone, keeps
/// new forks out meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Forks {
    /// Done by the caller, holding the fork gate, before it took the writer lock.
    Detached,
    /// To do under the writer lock (a restore that finds its tombstone expired).
    ToDetach,
}

impl Inner {
    /// An event reader (or the replication shipper) is done: the last one out retires what
    /// was deferred while readers were open.
    pub(super) fn reader_gone(&self) {
        // Held through the retirement, so that a new reader waits for the folder to settle.
        let mut readers = self.readers.lock();
        readers.open -= 1;
        if readers.open > 0 {
            return;
        }
        let deferred = std::mem::take(&mut readers.deferred);
        // A failure poisons the store (the next write reports it) and leaves the old
        // segments beside the newer generation or the delete record: open retires them.
        let retired = self.retire_now(&deferred);
        let monitor = &self.monitor;
        monitor.note(Swallowed::Background, "deferred retirement", None, retired);
    }

    /// Takes a session out of the map if it is still the one its key names.
    pub(super) fn unmap(&self, slot: &Arc<Slot>) {
        self.sessions.write().remove_if_same(slot);
    }

    /// Takes a slot this call made out of the map again when it never became a session (a
    /// refused `append_expected`, a write or fork that failed): a call that writes nothing
    /// leaves nothing behind, and nobody saw it, since a session is seen only once it
    /// exists. A writer waiting on its lock finds it retired and looks the key up again.
    pub(super) fn abandon(&self, slot: &Arc<Slot>, w: &mut Writer) {
        {
            let mut view = slot.view.write();
            if view.exists {
                return;
            }
            *view = SessionView::with_window(&slot.key, self.options.idempotency_window);
        }
        self.release_file(w);
        w.retired = true;
        self.unmap(slot);
    }

    /// After a session's delete record: takes it out of the map and reclaims its files
    /// (removes them, or moves them to `archive/` with `keep_history`). `forks` says whether
    /// the caller gave the session's forks their own copy already.
    pub(super) fn reclaim(
        &self,
        slot: &Arc<Slot>,
        w: &mut Writer,
        forks: Forks,
    ) -> Result<Vec<PathBuf>> {
        // A poisoned store changes no file: the next open finishes the reclaim.
        self.check_writable()?;
        // Any failure poisons the store, whatever it hit: the delete record is written and
        // the caller has let go of the tombstone, so nothing but an open would finish the
        // reclaim. A store that went on would write after the delete record (with no undo
        // window the slot is still mapped) or, at a clean close, record the session's files
        // as no session's, never to be erased.
        let reclaimed = self.reclaim_unchecked(slot, w, forks);
        self.poison(reclaimed)
    }

    /// [`Inner::reclaim`] without the poisoning.
    fn reclaim_unchecked(
        &self,
        slot: &Arc<Slot>,
        w: &mut Writer,
        forks: Forks,
    ) -> Result<Vec<PathBuf>> {
        debug_assert!(self.fork_gate.is_locked(), "a reclaim holds the fork gate");
        if forks == Forks::ToDetach {
            // See `Forks`: here, under the writer lock.
            self.detach_forks(&slot.key, false)?;
        }
        w.retired = true;
        w.reclaimed = true;
        // The checkpoint lists the files about to go.
        self.forget_checkpoint()?;
        self.release_file(w);
        self.unmap(slot);
        // The files hold the highest sequence numbers handed out so far, perhaps: the floor,
        // durably above them, records that they are used before they go. Open finishes the
        // reclaim if a crash stops it. A deleted session past its undo window is erased,
        // archive included: erasure wins over `keep_history`.
        // Every segment of the session's id goes, not only those in force: a compaction that
        // put a generation in force retires the segments it replaced after it lets go of the
        // writer, and a crash before it does would leave them, their data key gone, to the
        // next open. (Retirements hold the readers' lock, so the two never race.)
        self.reserve_seqs()?;
        self.retire_as(Retirement::Reclaimed(
            slot.session_id,
            1,
            w.newest.saturating_add(1),
        ))
    }

    /// Records in the erasure log, durably, that session `session_id` (or, not
    /// `whole_session`, its history before its last compaction) is about to be erased, and
    /// hands the event to subscribers.
    pub(super) fn log_erasure(&self, session_id: u64, whole_session: bool) -> Result<()> {
        self.drop_checkpoint_for_erasure()?;
        self.reserve_seqs()?;
        let mut log = self.erasure_log.lock();
        let ticket = self.feed.take();
        let seq = ticket.seq();
        let ts = now_micros();
        let what = if whole_session {
            Logged::Session(session_id)
        } else {
            Logged::History(session_id)
        };
        let erasure = Erasure {
            seq,
            ts_micros: ts,
            what,
        };
        log.record(&*self.fs, &self.dir, &erasure)?;
        let kind = EventKind::Erased {
            session_id,
            whole_session,
        };
        ticket.commit_event(ts, String::new(), kind);
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
        // A poisoned store removes, moves and logs nothing more: open redoes what is left.
        self.check_writable()?;
        match retirement {
            Retirement::Replaced(id, from, below) => compaction::retire(
                &*self.fs,
                &self.dir,
                id,
                from,
                below,
                disposal(&self.options),
            ),
            Retirement::Unlinked(id, from, below) => {
                let own = disposal(&self.options);
                compaction::retire_detached(&*self.fs, &self.dir, id, from, below, own)
            }
            Retirement::Reclaimed(id, from, below) | Retirement::Erased(id, from, below) => {
                // A whole session loses its data key too; one whose history before its
                // compaction goes keeps it.
                let whole = matches!(retirement, Retirement::Reclaimed(..));
                self.log_erasure(id, whole)?;
                let keys = self.keys.as_ref().filter(|_| whole);
                let traces = self.traces_in_folder(id)?;
                let in_folder = InFolder::Known(&traces);
                let (fs, dir) = (&*self.fs, &self.dir);
                erasures::erase_session_files(fs, dir, keys, id, from..below, in_folder)
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
        // A session's earlier generations still waiting for the readers go with an erasure of
        // it: kept, they would outlive it (or move to `archive/` with `keep_history`).
        let retirement = match retirement {
            Retirement::Erased(id, from, below)
            | Retirement::Unlinked(id, from, below)
            | Retirement::Reclaimed(id, from, below) => {
                let waiting = readers
                    .deferred
                    .extract_if(
                        ..,
                        |r| matches!(*r, Retirement::Replaced(of, ..) if of == id),
                    )
                    .filter_map(|r| match r {
                        Retirement::Replaced(_, first, _) => Some(first),
                        _ => None,
                    })
                    .min();
                let from = waiting.map_or(from, |first| first.min(from));
                match retirement {
                    Retirement::Erased(..) => Retirement::Erased(id, from, below),
                    Retirement::Unlinked(..) => Retirement::Unlinked(id, from, below),
                    _ => Retirement::Reclaimed(id, from, below),
                }
            }
            replaced => replaced,
        };
        self.carry_out(retirement)
    }
}

impl Inner {
    /// The names in the store's folder of session `id`'s traces besides its segments (side
    /// files of torn tails, a failed compaction's output), for its erasure. Found by one
    /// listing of the folder, kept until something that may make new ones runs
    /// ([`Inner::forget_traces`]): the folder holds every session's segments, and listing it
    /// at each erasure would make a delete cost what the store holds.
    pub(super) fn traces_in_folder(&self, id: u64) -> Result<Vec<String>> {
        let mut known = self.traces.lock();
        if known.is_none() {
            *known = Some(erasures::traces_by_session(&*self.fs, &self.dir)?);
        }
        Ok((known.as_mut())
            .and_then(|by_id| by_id.remove(&id))
            .unwrap_or_default())
    }

    /// Something may have made traces in the folder (a repair at a session's first touch
    /// saves torn tails; a compaction that failed may leave its output): the next erasure
    /// lists the folder again.
    pub(super) fn forget_traces(&self) {
        *self.traces.lock() = None;
    }
}

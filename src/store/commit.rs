//! The write pipeline: check, decide, number, write, apply, publish. Every mutation of a
//! session passes through [`Inner::commit`].

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::cipher::SEAL_OVERHEAD;
use crate::error::{Error, Result};
use crate::event::{self, LogEvent};
use crate::feed::Delivery;
use crate::layout;
use crate::location::MessageLoc;
use crate::projection::{to_time, SessionView};
use crate::record::{begin_record, record_hash, seal_record, Event};

use super::appender::Writer;
use super::{check_key, now_micros, Inner, Slot};

pub(super) enum Decision<R> {
    /// Write the record, then return the value.
    Write(R),
    /// Write nothing and return the value.
    Skip(R),
}

impl<R> Decision<R> {
    pub(super) fn into_value(self) -> R {
        match self {
            Decision::Write(value) | Decision::Skip(value) => value,
        }
    }
}

/// A session as it was before an event: its last message and its length, which the event's
/// [`EventKind`] reports on (what an `update_last` or `remove_last` replaced).
#[derive(Debug, Clone, Copy)]
pub(super) struct Before {
    last: Option<MessageLoc>,
    len: usize,
}

impl Before {
    pub(super) fn of(view: &SessionView) -> Before {
        Before {
            last: view.messages.last().copied(),
            len: view.messages.len(),
        }
    }
}

impl Inner {
    /// Refuses a new session once the store holds `sessions_max` live ones (concurrent
    /// creations can pass it by the number of writers racing).
    pub(super) fn check_room(&self) -> Result<()> {
        let max = self.options.sessions_max;
        if self.live_sessions.load(Ordering::SeqCst) >= max {
            return Err(Error::TooManySessions { max });
        }
        Ok(())
    }

    pub(super) fn check_writable(&self) -> Result<()> {
        if self.read_only {
            Err(Error::ReadOnly)
        } else if self.poisoned.load(Ordering::SeqCst) {
            Err(Error::Poisoned)
        } else {
            Ok(())
        }
    }

    pub(super) fn poison<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.poisoned.store(true, Ordering::SeqCst);
        }
        result
    }

    /// Writes `event` to session `key` when `decide` (given the live session, if any) says so.
    /// `creates`: the event creates a missing session (and the key must be valid).
    pub(super) fn commit<R>(
        &self,
        key: &str,
        creates: bool,
        event: &Event<'_>,
        decide: impl Fn(Option<&SessionView>) -> Decision<R>,
    ) -> Result<R> {
        self.commit_at(key, creates, event, None, decide, &mut Vec::new())
    }

    /// [`Inner::commit`] with the record's time given (`None`: now), adding to `removed` the
    /// files a delete removed at once: the session's own with no undo window, and those of
    /// the key's earlier deleted session it displaces as the one to restore.
    pub(super) fn commit_at<R>(
        &self,
        key: &str,
        creates: bool,
        event: &Event<'_>,
        at: Option<i64>,
        decide: impl Fn(Option<&SessionView>) -> Decision<R>,
        removed: &mut Vec<PathBuf>,
    ) -> Result<R> {
        // A delete may reclaim the session (no undo window) or the key's earlier one: no fork
        // may be made meanwhile (taken before the writer lock, see `Inner::fork_gate`).
        let deletes = matches!(event, Event::Delete | Event::Expire { .. });
        let _gate = deletes.then(|| self.fork_gate.read_recursive());
        if creates {
            check_key(key)?;
        } else if check_key(key).is_err() {
            return Ok(decide(None).into_value());
        }
        if deletes && self.options.tombstone_retention.is_zero() {
            // With no undo window the delete reclaims the session's files at once: its forks
            // get their own copy first, before its writer lock (see `Forks`). A failure fails
            // the delete with nothing written.
            self.detach_forks(key, false)?;
        }
        let mut record = Vec::new();
        let payload_len = begin_record(event, &mut record, self.keys.is_some());
        let too_large = |len: usize| -> Result<()> {
            if len > self.options.record_bytes_max {
                Err(Error::RecordTooLarge {
                    len,
                    max: self.options.record_bytes_max,
                })
            } else {
                Ok(())
            }
        };
        if creates {
            // Checked before a session is created for it.
            too_large(payload_len)?;
        }
        loop {
            let (slot, made) = match self.slot(key)? {
                Some(slot) => (slot, false),
                None if creates => {
                    self.check_writable()?;
                    self.check_room()?;
                    (self.create_slot(key)?, true)
                }
                None => return Ok(decide(None).into_value()),
            };
            let mut writer = slot.writer.lock();
            if writer.retired {
                continue; // deleted since the lookup: look the key up again
            }
            // A slot this call made and then wrote nothing to goes again.
            let abandon = |writer: &mut Writer| {
                if made {
                    self.abandon(&slot, writer);
                }
            };
            let (decision, metadata_len, before) = {
                let view = slot.view.read();
                let decision = decide(view.is_live().then_some(&*view));
                (decision, view.snapshot_len_after(event), Before::of(&view))
            };
            let value = match decision {
                Decision::Skip(value) => {
                    abandon(&mut writer);
                    return Ok(value);
                }
                Decision::Write(value) => value,
            };
            // A compaction writes all metadata in one record, which must fit too (sealed, in
            // an encrypted store).
            let seal = if self.keys.is_some() {
                SEAL_OVERHEAD
            } else {
                0
            };
            let ts = at.unwrap_or_else(now_micros);
            let written = too_large(payload_len)
                .and_then(|()| too_large(metadata_len + seal))
                .and_then(|()| {
                    self.write_event(&slot, &mut writer, event, &mut record, ts, before)
                });
            let compact = match written {
                Ok(compact) => compact,
                Err(e) => {
                    abandon(&mut writer);
                    return Err(e);
                }
            };
            if matches!(event, Event::Delete | Event::Expire { .. }) {
                let displaced = self.entomb(&slot, &mut writer, removed)?;
                drop(writer);
                if let Some(older) = displaced {
                    // Only the latest delete of a key can be restored.
                    removed.extend(self.reclaim_tombstone(&older)?);
                }
                self.sweep_tombstones()?;
            } else if compact {
                self.queue_compaction(key);
            }
            return Ok(value);
        }
    }

    /// A session's place among the live ones moved from `before` to `after` (its last activity
    /// while live, `None` while not): the live count and the activity index follow.
    pub(super) fn relist(&self, slot: &Arc<Slot>, before: Option<i64>, after: Option<i64>) {
        match (before.is_some(), after.is_some()) {
            (false, true) => {
                self.live_sessions.fetch_add(1, Ordering::SeqCst);
            }
            (true, false) => {
                // Saturating: a miscount must never turn into a store that refuses every new
                // session.
                let _ = self
                    .live_sessions
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                        Some(n.saturating_sub(1))
                    });
            }
            _ => {}
        }
        if before != after {
            self.reindex(slot, before, after);
        }
    }

    /// Writes `event` (begun in `record`) to a session whose writer lock the caller holds,
    /// applies it to the projection and hands it to subscribers. `before`: the
    /// session as it was before the event. Returns whether the session now
    /// holds enough dead bytes to compact.
    pub(super) fn write_event(
        &self,
        slot: &Arc<Slot>,
        writer: &mut Writer,
        event: &Event<'_>,
        record: &mut [u8],
        ts: i64,
        before: Before,
    ) -> Result<bool> {
        self.check_writable()?;
        let key = self.write_key(slot, writer)?;
        self.reserve_seqs()?;
        let ticket = self.feed.take();
        seal_record(record, ticket.seq(), ts, &writer.head, key.as_deref());
        self.forget_checkpoint()?;
        // A failed write or sync poisons the store inside; a file that could not be opened or
        // created fails this call only.
        let at = self.append_record(slot, writer, record, ticket.seq())?;
        writer.head = record_hash(record);
        let (applied, compact, before_entry, after_entry) = {
            let mut view = slot.view.write();
            let before_entry = view.is_live().then_some(view.last_activity);
            let applied = view.apply(ts, event, at);
            let after_entry = view.is_live().then_some(view.last_activity);
            // Cleared messages a compaction would keep (within the retention) are neither
            // dead nor free to copy; past it, they are dead.
            let retained = if view.clear_undoable(self.options.tombstone_retention) {
                view.cleared_bytes()
            } else {
                0
            };
            let dead = view
                .bytes_written
                .saturating_sub(view.live_bytes)
                .saturating_sub(retained);
            let compact = self.options.auto_compact
                && dead >= self.options.compaction_dead_bytes_min
                && dead >= view.live_bytes + retained;
            (applied, compact, before_entry, after_entry)
        };
        self.changed();
        self.relist(slot, before_entry, after_entry);
        if let Err(reason) = applied {
            // The caller checked the event against the view, so this is a bug; stop writing.
            return self.poison(Err(Error::Corrupt {
                path: layout::segment_path(&self.dir, slot.session_id, at.segment),
                offset: at.offset,
                reason: format!("record does not apply to the session: {reason}"),
            }));
        }
        // A subscriber is told what an update_last or remove_last replaced: read it while
        // this writer's lock keeps compaction from moving it. A failure to read it costs
        // the subscriber the description, never the write.
        let published = ticket.wanted().then(|| {
            let seq = ticket.seq();
            match event::event_kind(event, before.len, || self.read_one(slot, before.last)) {
                Ok(kind) => Delivery::Event(LogEvent {
                    seq,
                    time: to_time(ts),
                    session: slot.key.clone(),
                    kind,
                }),
                Err(e) => Delivery::Missed {
                    seq,
                    reason: e.to_string(),
                },
            }
        });
        ticket.commit(published);
        Ok(compact)
    }
}

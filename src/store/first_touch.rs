//! A session's first read or write after an open from the checkpoint: its files are checked
//! against what the checkpoint claims of them (`claim.rs`) and, if they changed while the store
//! was closed, the session is replayed from them, as a replaying open would have, before
//! anything of it is read or written. So open does no work per file, and no session is served
//! from a checkpoint its files no longer match.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::anchor::Anchors;
use crate::compaction::{self, Disposal};
use crate::error::{Error, Result};
use crate::event::EventKind;
use crate::fs::{context, sync_dir, OpenMode};
use crate::keyring;
use crate::layout::segment_path;
use crate::projection::SessionView;
use crate::recovery::{self, ReplayOptions, ReplayedSession};
use crate::report::Finding;

use super::appender::Writer;
use super::open::rewrite_damaged;
use super::residence::ends_as_recorded;
use super::session_map::{slot_from, writer_from, Found};
use super::{now_micros, Inner, Slot};

impl Inner {
    /// Checks the files of `slot` against the checkpoint's claim, the first time the session
    /// is read or written; replays the session if they changed. Returns false when the session
    /// is no longer in the store's map (nothing of it was sound: its next write starts a new
    /// session). The claim stays until a check or replay succeeds, so a session whose files
    /// cannot be examined is never served from the checkpoint alone.
    pub(super) fn settle_claim(&self, slot: &Arc<Slot>) -> Result<bool> {
        let mut claim = slot.claim.lock();
        let Some(held) = claim.as_deref() else {
            return Ok(true);
        };
        let key = || keyring::data_key(self.keys.as_ref(), slot.session_id);
        // A session whose records end elsewhere than its newest file's recorded end (a
        // checkpoint that says so, whole with its CRC right, would have the next record written
        // over others or past a hole) is replayed from its files.
        let ends_at = {
            let w = slot.writer.lock();
            held.ends_at(w.newest, w.newest_len)
        };
        let in_place = if ends_at && held.holds(&*self.fs, &self.dir, slot.session_id, key)? {
            true
        } else {
            self.replay_changed(slot, held.numbers())?
        };
        *claim = None;
        Ok(in_place)
    }

    /// The session cold under `key` whose entry in the checkpoint cannot be read again
    /// (`failed` says why: a failed read, or the file closed by an erasure), warmed from its
    /// files instead: only while they are as the checkpoint claims them and replay, with no
    /// finding, to the key, last number and activity its entry records; reported as
    /// [`Finding::CheckpointIgnored`]. Otherwise the call fails with `failed` (saying so), and
    /// the session stays cold. `None` if no session is under `key` (any more).
    pub(super) fn replay_cold(&self, key: &str, failed: Error) -> Result<Option<Arc<Slot>>> {
        let unserved = |failed: Error| match failed {
            Error::Corrupt {
                path,
                offset,
                reason,
            } => Error::Corrupt {
                path,
                offset,
                reason: format!(
                    "{reason}; the session {key:?} is not served until a reopen replays it \
                     from its files (they are not as the checkpoint recorded them either)"
                ),
            },
            other => other,
        };
        let (e, claim) = {
            let sessions = self.sessions.read();
            match sessions.find(key) {
                Found::Missing => return Ok(None),
                Found::Hot(slot) => return Ok(Some(Arc::clone(slot))),
                Found::Cold => {}
            }
            match sessions.cold_under(key) {
                Some((e, Some(claim))) => (e, claim),
                _ => return Err(unserved(failed)),
            }
        };
        let id = e.session_id;
        let (fs, dir, keys) = (&*self.fs, &*self.dir, self.keys.as_ref());
        let as_claimed = claim.holds(fs, dir, id, || keyring::data_key(keys, id));
        if !matches!(as_claimed, Ok(true)) {
            return Err(unserved(failed));
        }
        let options = ReplayOptions::of(&self.options, false);
        let Ok(alone) = recovery::replay_alone(fs, dir, id, claim.numbers(), &options, keys) else {
            return Err(unserved(failed));
        };
        let session = match alone.live {
            Some(s)
                if alone.report.findings.is_empty()
                    && alone.max_seq < self.first_seq
                    && s.damage.is_none()
                    && (s.view.key.as_str(), s.view.last_seq, s.view.last_activity)
                        == (key, e.last_seq, e.last_activity) =>
            {
                s
            }
            _ => return Err(unserved(failed)),
        };
        let placed = self.sessions.write().warm_with(slot_from(session, None));
        self.report.add(vec![Finding::CheckpointIgnored {
            reason: format!("{failed}; the session {key:?} was replayed from its files instead"),
        }]);
        Ok(placed)
    }

    /// Settles every live session's claim: for `verify`, which checks each session against
    /// its anchor from what the store holds of it. Returns the sessions whose files could not
    /// be checked, with why.
    pub(super) fn settle_all(&self) -> Result<Vec<(Arc<Slot>, crate::error::Error)>> {
        Ok(self
            .every_slot()?
            .into_iter()
            .filter_map(|slot| match self.settle_claim(&slot) {
                Ok(_) => None,
                Err(e) => Some((slot, e)),
            })
            .collect())
    }

    /// Replays a session whose files no longer match the checkpoint and puts what they hold in
    /// its place (`numbers`: its segment files at the checkpoint). Files that replay to what
    /// the checkpoint recorded (a change time moved by a link to a shared segment, say) change
    /// nothing and report nothing; otherwise the store reports
    /// [`Finding::ChangedWhileClosed`], with what the replay found, and repairs as open does.
    /// Returns whether the session is still in the store's map.
    fn replay_changed(&self, slot: &Arc<Slot>, mut numbers: Vec<u32>) -> Result<bool> {
        self.check_writable()?;
        // A file gone since the checkpoint is a missing segment to the replay, not an error.
        numbers.retain(|&n| self.fs.exists(&segment_path(&self.dir, slot.session_id, n)));
        // First a replay that changes nothing: it says whether the files differ at all, and
        // a failure here (a descriptor limit, say) fails this call alone.
        let options = ReplayOptions::of(&self.options, false);
        let (fs, dir, keys) = (&*self.fs, &*self.dir, self.keys.as_ref());
        let look =
            recovery::replay_alone(fs, dir, slot.session_id, numbers.clone(), &options, keys)?;
        if look.report.findings.is_empty() && self.holds_as_recorded(slot, look.live.as_ref()) {
            // The same records, in files that changed anyway (copied back in while the store
            // was closed, say): on disk before a checkpoint vouches for them again. A failure
            // stops the store: a sync retried after a failed one can report success for pages
            // the kernel dropped (a file that could not be opened stops it too).
            let synced = self.sync_files(slot.session_id, &numbers);
            self.poison(synced)?;
            return Ok(true);
        }
        // Every anchor, not only those known durable: no anchor this run appended names this
        // session (its point has not moved since open). Read without the anchor's lock, which
        // is taken before writers.
        let anchors = Anchors::read_latest(fs, dir, u64::MAX)?;
        // The checkpoint no longer describes the folder: it goes before anything changes.
        self.forget_checkpoint()?;
        self.reserve_seqs()?;
        // From here files change: a failure leaves them half repaired, and the store stops.
        let replayed = self.replay_into(slot, numbers);
        // The repair may have saved torn tails to side files.
        self.forget_traces();
        let (mut findings, in_place) = self.poison(replayed)?;
        findings.extend(self.rolled_back_alone(slot, &findings, &anchors));
        self.report.add(findings);
        Ok(in_place)
    }

    /// True when a replay found the session (`replayed`) where the checkpoint left it.
    fn holds_as_recorded(&self, slot: &Slot, replayed: Option<&ReplayedSession>) -> bool {
        let w = slot.writer.lock();
        let view = slot.view.read();
        replayed.is_some_and(|s| ends_as_recorded(s, &w, &view))
    }

    /// Replays the session of `slot` from its segment files `numbers`, repairing as open
    /// does, and puts what they hold in its place; returns what the replay found, and whether
    /// the session is still in the store's map.
    fn replay_into(&self, slot: &Arc<Slot>, numbers: Vec<u32>) -> Result<(Vec<Finding>, bool)> {
        let mut w = slot.writer.lock();
        let range = match (numbers.first(), numbers.last()) {
            (Some(&first), Some(&last)) => first..last.saturating_add(1),
            _ => 0..0,
        };
        let options = ReplayOptions::of(&self.options, true);
        let (fs, dir, keys) = (&*self.fs, &*self.dir, self.keys.as_ref());
        let alone = recovery::replay_alone(fs, dir, slot.session_id, numbers, &options, keys)?;
        let mut findings = vec![Finding::ChangedWhileClosed {
            key: slot.key.clone(),
            session_id: slot.session_id,
        }];
        findings.extend(alone.report.findings);
        // Files of the session moved aside whole, and the finding that says so.
        let quarantine = |from: u32, below: u32, number: u32, reason: &str| -> Result<Finding> {
            let id = slot.session_id;
            Ok(Finding::Damaged {
                key: Some(slot.key.clone()),
                path: segment_path(dir, id, number),
                offset: 0,
                reason: reason.into(),
                quarantined: compaction::retire(fs, dir, id, from, below, Disposal::Quarantine)?,
            })
        };
        let session = match alone.live {
            // Numbers handed out before open, but not to this session's records, or another
            // key: not bytes the store wrote for it. (Numbers from open on went to others.)
            Some(s) if alone.max_seq >= self.first_seq || s.view.key != slot.key => {
                let reason = if alone.max_seq >= self.first_seq {
                    "its records hold sequence numbers the store had not handed out when it closed"
                } else {
                    "its files hold another key under the session's id"
                };
                let below = s.highest.saturating_add(1);
                findings.push(quarantine(0, below, s.newest, reason)?);
                None
            }
            Some(mut s) if s.damage.is_some() => {
                let ticket = self.feed.take();
                let retention = self.options.tombstone_retention;
                let ts = now_micros();
                findings.push(rewrite_damaged(
                    fs,
                    dir,
                    keys,
                    retention,
                    &mut s,
                    ticket.seq(),
                )?);
                let kind = EventKind::Compaction {
                    messages: s.view.messages.len(),
                };
                ticket.commit_event(ts, slot.key.clone(), kind);
                Some(s)
            }
            Some(s) => Some(s),
            None => {
                // Nothing of it in force: what is left of its files goes aside.
                let reason = "no record of the session is sound";
                let found = quarantine(range.start, range.end, range.start, reason)?;
                if matches!(&found, Finding::Damaged { quarantined, .. } if !quarantined.is_empty())
                {
                    findings.push(found);
                }
                None
            }
        };
        if let Some(s) = &session {
            // What the session is served from is on disk before a checkpoint describes it:
            // bytes copied in while the store was closed may still be in the page cache only.
            let numbers: Vec<u32> = (s.oldest.max(1)..=s.newest).collect();
            self.sync_files(slot.session_id, &numbers)?;
        }
        let in_place = session.is_some();
        self.install(slot, &mut w, session);
        if !in_place {
            // Nothing is left of the session: its id, which anchors, archive and erasure log
            // know, is not used again; the next write to its key makes a new session.
            w.retired = true;
            self.unmap(slot);
        }
        Ok((findings, in_place))
    }

    /// Syncs the segments `numbers` of session `id` that exist, and the folder (their names
    /// may be new too).
    fn sync_files(&self, id: u64, numbers: &[u32]) -> Result<()> {
        for &number in numbers {
            let path = segment_path(&self.dir, id, number);
            if !self.fs.exists(&path) {
                continue;
            }
            let file = self
                .fs
                .open(&path, OpenMode::Read)
                .map_err(context("opening", &path))?;
            file.sync().map_err(context("syncing", &path))?;
        }
        sync_dir(&*self.fs, &self.dir)
    }

    /// Puts a replayed session (or, `None`, an empty one) in the place of what `slot` held.
    pub(super) fn install(
        &self,
        slot: &Arc<Slot>,
        w: &mut Writer,
        session: Option<ReplayedSession>,
    ) {
        self.release_file(w);
        let (writer, replayed) = match session {
            Some(session) => (writer_from(&session), session.view),
            None => (
                Writer::empty(&slot.key),
                SessionView::with_window(&slot.key, self.options.idempotency_window),
            ),
        };
        *w = writer;
        if replayed.fork_origin.is_some() {
            // Its files hold a fork the checkpoint did not: forks are looked for from now on.
            self.forks_seen.store(true, Ordering::SeqCst);
        }
        let (before, after) = {
            let mut view = slot.view.write();
            let before = view.is_live().then_some(view.last_activity);
            *view = replayed;
            (before, view.is_live().then_some(view.last_activity))
        };
        self.changed();
        self.relist(slot, before, after);
    }
}

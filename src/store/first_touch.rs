//! A session's first read or write after an open from the checkpoint: its files are checked
//! against what the checkpoint claims of them (`claim.rs`) and, if they changed while the store
//! was closed, the session is replayed from them, as a replaying open would have, before
//! anything of it is read or written. So open does no work per file, and no session is served
//! from a checkpoint its files no longer match.

use std::sync::Arc;

use crate::anchor::Anchors;
use crate::compaction::{self, Disposal};
use crate::error::Result;
use crate::keyring;
use crate::projection::SessionView;
use crate::recovery::{self, ReplayOptions, ReplayedSession};
use crate::report::Finding;

use super::appender::Writer;
use super::open::{rewrite_damaged, writer_from};
use super::{Inner, Slot};

impl Inner {
    /// Checks the files of `slot` against the checkpoint's claim, the first time the session
    /// is read or written; replays the session if they changed. The claim stays until a check
    /// or replay succeeds, so a session whose files cannot be examined is never served from
    /// the checkpoint alone.
    pub(super) fn settle_claim(&self, slot: &Arc<Slot>) -> Result<()> {
        let mut claim = slot.claim.lock();
        let Some(held) = claim.as_deref() else {
            return Ok(());
        };
        let key = keyring::data_key(self.keys.as_ref(), slot.session_id)?;
        if !held.holds(&*self.fs, &self.dir, slot.session_id, key.as_deref())? {
            let replayed = self.replay_changed(slot, held.numbers());
            // Files half repaired leave the store in no state to write on.
            self.poison(replayed)?;
        }
        *claim = None;
        Ok(())
    }

    /// Replays a session whose files no longer match the checkpoint and puts what they hold in
    /// its place (`numbers`: its segment files at the checkpoint). Files that replay to what
    /// the checkpoint recorded (a change time moved by a link to a shared segment, say) change
    /// nothing and report nothing; otherwise the store reports
    /// [`Finding::ChangedWhileClosed`], with what the replay found, and repairs as open does.
    fn replay_changed(&self, slot: &Arc<Slot>, numbers: Vec<u32>) -> Result<()> {
        self.check_writable()?;
        // The checkpoint no longer describes the folder: it goes before anything changes.
        self.forget_checkpoint()?;
        self.reserve_seqs()?;
        // Read before the session's writer is locked: an anchor locks the log, then writers.
        let durable_end = self.anchoring.lock().durable_end;
        let anchors = Anchors::read_until(&*self.fs, &self.dir, durable_end)?;
        let Some(mut findings) = self.replay_into(slot, numbers)? else {
            return Ok(());
        };
        findings.extend(self.rolled_back_alone(slot, &findings, &anchors));
        self.report.add(findings);
        Ok(())
    }

    /// Replays the session of `slot` from its segment files `numbers` and puts what they hold
    /// in its place; returns what the replay found, or `None` when they hold what the
    /// checkpoint recorded.
    fn replay_into(&self, slot: &Arc<Slot>, numbers: Vec<u32>) -> Result<Option<Vec<Finding>>> {
        let mut w = slot.writer.lock();
        let range = match (numbers.first(), numbers.last()) {
            (Some(&first), Some(&last)) => first..last.saturating_add(1),
            _ => 0..0,
        };
        let options = ReplayOptions::of(&self.options, true);
        let (fs, dir, keys) = (&*self.fs, &*self.dir, self.keys.as_ref());
        let alone = recovery::replay_alone(fs, dir, slot.session_id, numbers, &options, keys)?;
        let mut findings = alone.report.findings;
        let unchanged = alone.live.as_ref().is_some_and(|s| {
            s.damage.is_none()
                && (s.head, s.oldest, s.newest, s.newest_len)
                    == (w.head, w.oldest, w.newest, w.newest_len)
                && s.view.last_seq == slot.view.read().last_seq
        });
        if unchanged && findings.is_empty() {
            return Ok(None);
        }
        findings.insert(
            0,
            Finding::ChangedWhileClosed {
                key: slot.key.clone(),
                session_id: slot.session_id,
            },
        );
        let session = match alone.live {
            // Numbers the store never handed out: not bytes it wrote.
            Some(s) if alone.max_seq >= self.feed.next_seq() => {
                let quarantined = compaction::retire(
                    fs,
                    dir,
                    slot.session_id,
                    0,
                    s.highest.saturating_add(1),
                    Disposal::Quarantine,
                )?;
                findings.push(Finding::Damaged {
                    key: Some(slot.key.clone()),
                    path: crate::layout::segment_path(dir, slot.session_id, s.newest),
                    offset: 0,
                    reason: "its records hold sequence numbers the store never handed out".into(),
                    quarantined,
                });
                None
            }
            Some(mut s) if s.damage.is_some() => {
                let ticket = self.feed.take();
                let retention = self.options.tombstone_retention;
                findings.push(rewrite_damaged(
                    fs,
                    dir,
                    keys,
                    retention,
                    &mut s,
                    ticket.seq(),
                )?);
                Some(s)
            }
            Some(s) => Some(s),
            None => {
                // Nothing of it in force: what is left of its files goes aside, so that its
                // next write starts a new first segment.
                let quarantined = compaction::retire(
                    fs,
                    dir,
                    slot.session_id,
                    range.start,
                    range.end,
                    Disposal::Quarantine,
                )?;
                if !quarantined.is_empty() {
                    findings.push(Finding::Damaged {
                        key: Some(slot.key.clone()),
                        path: crate::layout::segment_path(dir, slot.session_id, range.start),
                        offset: 0,
                        reason: "no record of the session is sound".into(),
                        quarantined,
                    });
                }
                None
            }
        };
        self.install(slot, &mut w, session);
        Ok(Some(findings))
    }

    /// Puts a replayed session (or, `None`, an empty one) in the place of what `slot` held.
    fn install(&self, slot: &Arc<Slot>, w: &mut Writer, session: Option<ReplayedSession>) {
        self.release_file(w);
        let (writer, replayed) = match session {
            Some(session) => (writer_from(&session), session.view),
            None => (
                Writer::empty(&slot.key),
                SessionView::with_window(&slot.key, self.options.idempotency_window),
            ),
        };
        *w = writer;
        let (before, after) = {
            let mut view = slot.view.write();
            let before = view.is_live().then_some(view.last_activity);
            *view = replayed;
            (before, view.is_live().then_some(view.last_activity))
        };
        self.count_live(before.is_some(), after.is_some());
        if before != after {
            self.reindex(slot, before, after);
        }
    }
}

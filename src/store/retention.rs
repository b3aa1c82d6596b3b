//! Retention (`Options::retention`): maximum age, messages per session and a disk budget.

use std::sync::Arc;

use crate::error::Result;
use crate::options::RetentionRule;
use crate::projection::{SessionView, RUNNING_STATE};
use crate::record::Event;

use super::activity::Indexed;
use super::commit::Decision;
use super::{now_micros, Inner, Slot};

/// What [`crate::LogStore::apply_retention`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Sessions deleted, and by which rule.
    pub expired: Vec<(String, RetentionRule)>,
    /// Sessions whose oldest messages were dropped, and how many.
    pub trimmed: Vec<(String, usize)>,
    /// Restorable deleted sessions reclaimed for good to meet the disk budget.
    pub reclaimed: usize,
}

impl Inner {
    pub(super) fn apply_retention(&self) -> Result<RetentionReport> {
        let rules = &self.options.retention;
        let mut report = RetentionReport::default();
        if self.read_only || !rules.is_set() {
            return Ok(report);
        }
        let now = now_micros();
        // The sessions each rule applies to are chosen from a listing (a cold session is read
        // there and stays cold unless chosen), then checked again under their writer's lock
        // when the rule's record is written: they may have moved on.
        if let Some(max_age) = rules.max_age {
            let cutoff = now.saturating_sub(i64::try_from(max_age.as_micros()).unwrap_or(i64::MAX));
            let stale = |v: &SessionView| v.last_activity < cutoff && v.state != RUNNING_STATE;
            for key in self.live_views(|v| stale(v).then(|| v.key.clone())) {
                let event = Event::Expire {
                    rule: RetentionRule::MaxAge.to_byte(),
                };
                if self.commit(&key, false, &event, |v| match v {
                    Some(v) if stale(v) => Decision::Write(true),
                    _ => Decision::Skip(false),
                })? {
                    report.expired.push((key, RetentionRule::MaxAge));
                }
            }
        }
        if let Some(max) = rules.max_messages {
            let excess = |v: &SessionView| {
                let excess = v.message_count().saturating_sub(max);
                (v.state != RUNNING_STATE && excess > 0).then_some(excess)
            };
            for (key, excess) in self.live_views(|v| Some((v.key.clone(), excess(v)?))) {
                let event = Event::Trim {
                    count: excess as u64,
                    rule: RetentionRule::MaxMessages.to_byte(),
                };
                let trimmed = self.commit(&key, false, &event, |v| match v {
                    Some(v)
                        if v.state != RUNNING_STATE
                            && v.messages.len().saturating_sub(max) == excess =>
                    {
                        Decision::Write(true)
                    }
                    _ => Decision::Skip(false),
                })?;
                if trimmed {
                    report.trimmed.push((key, excess));
                }
            }
        }
        if let Some(budget) = rules.disk_budget {
            self.apply_disk_budget(budget, &mut report)?;
        }
        Ok(report)
    }

    /// Bytes of the records of every live and restorable session (a cold one's from its
    /// entry: it stays cold).
    pub(super) fn session_bytes(&self) -> u64 {
        let live: u64 = self.live_views(|v| Some(v.bytes_written)).iter().sum();
        let bytes = |slot: &Arc<Slot>| slot.view.read().bytes_written;
        let tombstones: u64 = self.tombstones.lock().slots().map(bytes).sum();
        live + tombstones
    }

    pub(super) fn apply_disk_budget(
        &self,
        budget: u64,
        report: &mut RetentionReport,
    ) -> Result<()> {
        // Counted once, then kept up to date as sessions go (writes meanwhile are not
        // counted until the next pass).
        let mut total = self.session_bytes();
        // Tombstones first, the oldest delete first: they are gone from the caller's view.
        while total > budget {
            let oldest = self.tombstones.lock().oldest();
            let Some(slot) = oldest else { break };
            if self.tombstones.lock().take(&slot) {
                total = total.saturating_sub(slot.view.read().bytes_written);
                self.reclaim_tombstone(&slot)?;
                report.reclaimed += 1;
            }
        }
        // Then the least recently active sessions, for good.
        while total > budget {
            let victim = {
                let index = self.activity_index()?;
                let mut least_recent = index.least_recent().filter_map(|(_, _, indexed)| {
                    let slot = match indexed {
                        Indexed::Hot(slot) => Arc::clone(slot),
                        Indexed::Cold(cold, i) => self.warmed(cold, i).ok()??,
                    };
                    let running = slot.view.read().state == RUNNING_STATE;
                    (!running).then_some(slot)
                });
                least_recent.next()
            };
            let Some(slot) = victim else { break };
            let event = Event::Expire {
                rule: RetentionRule::DiskBudget.to_byte(),
            };
            let expired = self.commit(&slot.key, false, &event, |v| match v {
                Some(v) if v.state != RUNNING_STATE => Decision::Write(true),
                _ => Decision::Skip(false),
            })?;
            if !expired {
                continue; // it became running, or went: look again
            }
            report
                .expired
                .push((slot.key.clone(), RetentionRule::DiskBudget));
            total = total.saturating_sub(slot.view.read().bytes_written);
            if self.tombstones.lock().take(&slot) {
                self.reclaim_tombstone(&slot)?;
            }
        }
        Ok(())
    }
}

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
        let cutoff = (rules.max_age)
            .map(|age| now.saturating_sub(i64::try_from(age.as_micros()).unwrap_or(i64::MAX)));
        let stale = |v: &SessionView| {
            cutoff.is_some_and(|cutoff| v.last_activity < cutoff) && v.state != RUNNING_STATE
        };
        let excess = |v: &SessionView| {
            let excess = v.message_count().saturating_sub(rules.max_messages?);
            (v.state != RUNNING_STATE && excess > 0).then_some(excess)
        };
        // The sessions each rule applies to are chosen from one listing (a cold session is
        // read there and stays cold unless chosen), which also counts the bytes the disk
        // budget starts from; each is checked again under its writer's lock when the rule's
        // record is written: it may have moved on (one expired first is trimmed no more).
        let mut live_bytes = 0u64;
        let chosen = self.live_views(|v| {
            live_bytes += v.bytes_written;
            let (stale, excess) = (stale(v), excess(v));
            (stale || excess.is_some()).then(|| (v.key.clone(), stale, excess))
        });
        for (key, ..) in chosen.iter().filter(|(_, stale, _)| *stale) {
            let event = Event::Expire {
                rule: RetentionRule::MaxAge.to_byte(),
            };
            if self.commit(key, false, &event, |v| match v {
                Some(v) if stale(v) => Decision::Write(true),
                _ => Decision::Skip(false),
            })? {
                report.expired.push((key.clone(), RetentionRule::MaxAge));
            }
        }
        for (key, _, excess) in &chosen {
            let (Some(excess), Some(max)) = (*excess, rules.max_messages) else {
                continue;
            };
            let event = Event::Trim {
                count: excess as u64,
                rule: RetentionRule::MaxMessages.to_byte(),
            };
            let trimmed = self.commit(key, false, &event, |v| match v {
                Some(v)
                    if v.state != RUNNING_STATE
                        && v.messages.len().saturating_sub(max) == excess =>
                {
                    Decision::Write(true)
                }
                _ => Decision::Skip(false),
            })?;
            if trimmed {
                report.trimmed.push((key.clone(), excess));
            }
        }
        if let Some(budget) = rules.disk_budget {
            // The listing's count, unless a rule above wrote: then counted again.
            let total = if report.expired.is_empty() && report.trimmed.is_empty() {
                live_bytes + self.tombstone_bytes()
            } else {
                self.session_bytes()
            };
            self.apply_disk_budget(budget, total, &mut report)?;
        }
        Ok(report)
    }

    /// Bytes of the records of every live and restorable session (a cold one's from its
    /// entry: it stays cold).
    pub(super) fn session_bytes(&self) -> u64 {
        let live: u64 = self.live_views(|v| Some(v.bytes_written)).iter().sum();
        live + self.tombstone_bytes()
    }

    /// Bytes of the records of every restorable session.
    fn tombstone_bytes(&self) -> u64 {
        let bytes = |slot: &Arc<Slot>| slot.view.read().bytes_written;
        self.tombstones.lock().slots().map(bytes).sum()
    }

    /// Removes sessions until the bytes of every live and restorable one, `total` when it
    /// begins, are within `budget`.
    pub(super) fn apply_disk_budget(
        &self,
        budget: u64,
        mut total: u64,
        report: &mut RetentionReport,
    ) -> Result<()> {
        // Kept up to date as sessions go (writes meanwhile are not counted until the next
        // pass).
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

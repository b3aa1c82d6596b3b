//! One session's replay as a job for open's threads: what the folder and the checkpoint said
//! of the session, the replay itself (resumed from the checkpoint, or whole), and what it
//! found, for [`super::replay`] to take back in the sessions' order. Sessions that may share
//! files (a fork's links to its source's segments) are one unit, replayed one after another.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::compaction::Disposal;
use crate::error::Result;
use crate::fs::FileSystem;
use crate::keyring::Keyring;
use crate::report::{Finding, RecoveryReport};

use super::folder::{SegmentFile, SessionKey};
use super::resume::{known_header, resume_session};
use super::session::{replay_session, ErasingFinish, Outcome, Replaying};
use super::{numbers, session_headers, ReplayedSession};

/// One session for [`super::replay`] to replay: its files, and what the folder and the checkpoint
/// said of it.
pub(super) struct Job {
    pub(super) id: u64,
    pub(super) files: Vec<SegmentFile>,
    /// Its data key (encrypted store), or why it cannot be had.
    pub(super) key: SessionKey,
    /// The erasure log names it.
    pub(super) erased: bool,
    /// Where the checkpoint left it, when only its tail needs reading.
    pub(super) base: Option<ReplayedSession>,
    /// Every segment of it, when its newest one's header was not read (see
    /// [`super::resume::skip_known_headers`]).
    pub(super) all: Option<Vec<u32>>,
}

/// The jobs as [`super::replay`] hands them to its threads, in the order of their first session:
/// each job alone, but all those whose files may be another's (a file whose header names
/// another session, or one whose header cannot be read) together, in the order of their ids.
pub(super) fn units(jobs: Vec<Job>) -> Vec<Vec<Job>> {
    let mut shared: BTreeSet<u64> = BTreeSet::new();
    for job in &jobs {
        for file in &job.files {
            match &file.header {
                Ok((header, _)) if header.session_id == job.id => {}
                Ok((header, _)) => {
                    shared.insert(job.id);
                    shared.insert(header.session_id);
                }
                Err(_) => {
                    shared.insert(job.id);
                }
            }
        }
    }
    let mut units: Vec<Vec<Job>> = Vec::with_capacity(jobs.len());
    // Where the unit of the sessions that share files is, once its first one is seen.
    let mut together: Option<usize> = None;
    for job in jobs {
        match together {
            Some(at) if shared.contains(&job.id) => match units.get_mut(at) {
                Some(unit) => unit.push(job),
                None => units.push(vec![job]), // never: `at` was a unit's index
            },
            None if shared.contains(&job.id) => {
                together = Some(units.len());
                units.push(vec![job]);
            }
            _ => units.push(vec![job]),
        }
    }
    units
}

/// How a [`Job`] ended, and what its replay found on the way.
pub(super) struct Done {
    pub(super) id: u64,
    /// `None`: not replayed, another session's replay having failed first.
    pub(super) outcome: Option<Result<Ended>>,
    pub(super) findings: Vec<Finding>,
    pub(super) erasing: Vec<ErasingFinish>,
    pub(super) max_seq: u64,
}

pub(super) enum Ended {
    /// Erased (the log says so): its segments, to be removed unread.
    Erased(Range<u32>),
    Replayed(Outcome),
}

/// What every session's replay shares.
pub(super) struct Shared<'a> {
    pub(super) fs: &'a dyn FileSystem,
    pub(super) dir: &'a Path,
    pub(super) keys: Option<&'a Keyring>,
    pub(super) superseded: Option<Disposal>,
    pub(super) window: usize,
    pub(super) torn_tail_max: u64,
    /// A session's replay failed: open fails, and no other session's replay begins (those
    /// under way end).
    pub(super) failed: AtomicBool,
}

impl Shared<'_> {
    /// The unit's sessions, one after another.
    pub(super) fn replay_unit(&self, unit: Vec<Job>) -> Vec<Done> {
        unit.into_iter().map(|job| self.replay(job)).collect()
    }

    fn replay(&self, job: Job) -> Done {
        if self.failed.load(Ordering::Relaxed) {
            return Done {
                id: job.id,
                outcome: None,
                findings: Vec::new(),
                erasing: Vec::new(),
                max_seq: 0,
            };
        }
        let Job {
            id,
            mut files,
            key,
            erased,
            base,
            all,
        } = job;
        if let (Some(base), Some(_)) = (&base, &all) {
            files.push(known_header(base, self.dir));
        }
        let mut report = RecoveryReport::default();
        let (mut erasing, mut max_seq) = (Vec::new(), 0);
        let key_readable = key.is_ok();
        let outcome = if erased && key_readable {
            // The erasure log is the authority: a session it says was erased goes, unread,
            // whatever of it a crash left (a disk that reorders may keep any of the removals
            // of its files, and not others, so what is left may look like damage). Files
            // sealed under a data key that is gone are bytes nobody can read, and not the
            // store's to remove: they are damage, kept aside.
            Ok(Ended::Erased(numbers(&files)))
        } else {
            files.sort_by_key(|f| f.number);
            let mut replaying = Replaying {
                fs: self.fs,
                dir: self.dir,
                id,
                key,
                superseded: self.superseded,
                report: &mut report,
                erasing: &mut erasing,
                max_seq: &mut max_seq,
                window: self.window,
                torn_tail_max: self.torn_tail_max,
            };
            self.replay_session(&mut replaying, base, all, files)
                .map(Ended::Replayed)
        };
        if outcome.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
        Done {
            id,
            outcome: Some(outcome),
            findings: report.findings,
            erasing,
            max_seq,
        }
    }

    /// Resumes the session from `base` if it can (its locations read back from the
    /// checkpoint first), or replays it whole.
    fn replay_session(
        &self,
        replaying: &mut Replaying<'_>,
        base: Option<ReplayedSession>,
        all: Option<Vec<u32>>,
        files: Vec<SegmentFile>,
    ) -> Result<Outcome> {
        let key_readable = replaying.key.is_ok();
        // A session whose data key cannot be had is replayed whole, as a replay of every
        // segment would (its headers do not open); so is one whose locations cannot be read
        // back.
        let base = base.filter(|_| key_readable).and_then(|mut base| {
            let read = base.view.read_back();
            read.then_some(base)
        });
        let resumed = match base {
            Some(base) => resume_session(replaying, base, files)?,
            None => Err(files),
        };
        match resumed {
            Ok(outcome) => Ok(outcome),
            Err(files) => {
                // Replayed whole: with every header read.
                let files = match all {
                    Some(all) => {
                        session_headers(self.fs, self.dir, replaying.id, all, self.keys)?.0
                    }
                    None => files,
                };
                replay_session(replaying, files)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::segment::{HeaderError, SegmentHeader, SegmentKind};

    /// A job for session `id` whose files' headers name the sessions `named` (`None`: a
    /// header that cannot be read).
    fn job(id: u64, named: &[Option<u64>]) -> Job {
        let files = (named.iter().enumerate())
            .map(|(at, named)| SegmentFile {
                number: at as u32 + 1,
                path: PathBuf::from(format!("{id}-{at}")),
                header: named
                    .map(|session_id| {
                        let header = SegmentHeader {
                            version: 1,
                            kind: SegmentKind::Fresh,
                            session_id,
                            segment: at as u32 + 1,
                            prev_len: 0,
                            key: format!("k{id}"),
                        };
                        (header, 0)
                    })
                    .ok_or(HeaderError::Truncated),
            })
            .collect();
        Job {
            id,
            files,
            key: Ok(None),
            erased: false,
            base: None,
            all: None,
        }
    }

    fn ids(units: &[Vec<Job>]) -> Vec<Vec<u64>> {
        (units.iter())
            .map(|unit| unit.iter().map(|job| job.id).collect())
            .collect()
    }

    #[test]
    fn sessions_that_may_share_files_are_one_unit_in_the_order_of_their_ids() {
        let jobs = vec![
            job(1, &[Some(1)]),
            job(2, &[Some(2), Some(2)]),
            // A fork of 2: its first file is a link to 2's.
            job(3, &[Some(2), Some(3)]),
            job(4, &[Some(4)]),
            // A header that cannot be read: whose the file is is not known.
            job(5, &[None]),
            job(6, &[Some(6)]),
            // A fork of the fork.
            job(7, &[Some(2), Some(3), Some(7)]),
        ];
        let units = units(jobs);
        assert_eq!(ids(&units), [vec![1], vec![2, 3, 5, 7], vec![4], vec![6]]);
    }

    #[test]
    fn sessions_that_share_nothing_are_a_unit_each() {
        let jobs = (1..=20).map(|id| job(id, &[Some(id), Some(id)])).collect();
        let units = units(jobs);
        assert_eq!(units.len(), 20);
        assert!(units.iter().all(|unit| unit.len() == 1));
    }
}

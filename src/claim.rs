//! What a checkpoint claims of one session's segment files, checked the first time the session's
//! bytes are read or written instead of at open, so that open does no work per file.
//!
//! A claim holds, for each of the session's segment files, the length, modification time and
//! change time (`ctime`) the checkpoint recorded, and when the checkpoint itself was written.
//! It holds when every file still shows them and was modified before the checkpoint; where the
//! file system keeps no change time (so a file rewritten with its length and modification time
//! put back would pass), each file's header must also be sound and name its segment number, and
//! the newest one the session: another session's file copied over it is caught there.
//! A claim that does not hold is no verdict: the session is replayed from its files, which says
//! what, if anything, changed (see `store/first_touch.rs`).

use std::collections::HashSet;
use std::io::ErrorKind;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use crate::cipher::DataKey;
use crate::error::{Error, Result};
use crate::fs::{context, FileStat, FileSystem};
use crate::layout::segment_path;
use crate::segment::read_header;

/// What a checkpoint records of a segment file: what `stat` said, and its change time
/// (`ctime`, where the file system keeps one): a file rewritten after the checkpoint with its
/// length and modification time put back still shows a later change time.
pub(crate) type SegmentStat = (FileStat, Option<i64>);

/// How a file is now against what a checkpoint recorded of it.
pub(crate) enum Compared {
    /// Its length or modification time differs, or it was modified after the checkpoint.
    Changed,
    /// Its change time moved: rewritten, with its length and modification time put back (its
    /// bytes may be another file's, say another session's segment of the same length).
    Rewritten,
    /// As recorded; `change_time_known`: both the record and the file system have a change
    /// time (without one, a rewrite with its times put back would pass).
    Same { change_time_known: bool },
}

/// Compares what `stat` says of a file `now` with what a checkpoint written at `written_ns`
/// recorded of it.
pub(crate) fn compare(recorded: &SegmentStat, now: &SegmentStat, written_ns: i64) -> Compared {
    let ((stat, changed), (stat_now, changed_now)) = (recorded, now);
    if stat_now != stat || stat_now.modified_ns >= written_ns {
        return Compared::Changed;
    }
    match (changed, changed_now) {
        (Some(then), Some(now)) if then != now => Compared::Rewritten,
        (Some(_), Some(_)) => Compared::Same {
            change_time_known: true,
        },
        _ => Compared::Same {
            change_time_known: false,
        },
    }
}

/// What the checkpoint recorded of a session's segment files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claim {
    /// When the checkpoint was written: its modification time.
    written_ns: i64,
    /// The files of every session the checkpoint holds, each as its segment number and what
    /// `stat` said of it (one allocation for all of them), and where this session's are.
    all: Arc<Vec<(u32, SegmentStat)>>,
    range: Range<usize>,
}

impl Claim {
    /// A claim of the files `all[range]` (segment number and recorded stat, lowest number
    /// first) by a checkpoint written at `written_ns`.
    pub(crate) fn new(
        written_ns: i64,
        all: Arc<Vec<(u32, SegmentStat)>>,
        range: Range<usize>,
    ) -> Claim {
        let range = range.start.min(all.len())..range.end.min(all.len());
        Claim {
            written_ns,
            all,
            range,
        }
    }

    /// The segment numbers the claim covers, lowest first.
    pub(crate) fn numbers(&self) -> Vec<u32> {
        self.files().iter().map(|(number, _)| *number).collect()
    }

    /// Each file's segment number and what the checkpoint recorded of it: what the next
    /// checkpoint records of a session nobody read or wrote, so that a change made while the
    /// store was closed is still caught after it.
    pub(crate) fn files(&self) -> &[(u32, SegmentStat)] {
        self.all.get(self.range.clone()).unwrap_or_default()
    }

    /// True when the newest file the claim covers is segment `newest`, recorded `newest_len`
    /// bytes long: where the session's records end (a claim of no file: true).
    pub(crate) fn ends_at(&self, newest: u32, newest_len: u64) -> bool {
        (self.files().last())
            .is_none_or(|(number, (stat, _))| *number == newest && stat.len == newest_len)
    }

    /// True when the files of session `id` in `dir` are as the checkpoint recorded them (see
    /// the module's comment); `key` gives the session's data key in an encrypted store, asked
    /// for only if the headers must be read. A file that is gone, or whose header does not
    /// decode, fails the claim; a failed `stat` or read is an error.
    pub(crate) fn holds(
        &self,
        fs: &dyn FileSystem,
        dir: &Path,
        id: u64,
        key: impl FnOnce() -> Result<Option<Arc<DataKey>>>,
    ) -> Result<bool> {
        let mut without_change_time = false;
        for (number, recorded) in self.files() {
            let path = segment_path(dir, id, *number);
            let now = match fs.stat_changed(&path) {
                Ok(found) => found,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(context("examining", &path)(e)),
            };
            match compare(recorded, &now, self.written_ns) {
                Compared::Same { change_time_known } => without_change_time |= !change_time_known,
                Compared::Changed | Compared::Rewritten => return Ok(false),
            }
        }
        if !without_change_time {
            return Ok(true);
        }
        let key = key()?;
        let newest = self.files().last().map(|(number, _)| *number);
        for (number, _) in self.files() {
            let path = segment_path(dir, id, *number);
            let header = match read_header(fs, &path, key.as_deref()) {
                Ok(Ok((header, _))) => header,
                Ok(Err(_)) => return Ok(false),
                Err(Error::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
                    return Ok(false)
                }
                Err(e) => return Err(e),
            };
            // Segments below a fork's own are the source's files, whose headers name it.
            if header.segment != *number || (Some(*number) == newest && header.session_id != id) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// What a checkpoint claims of each live session's files, by session id (ascending), each
/// taken once, by the session's slot. A session's [`Claim`] is made when it is taken: until
/// then it costs its id and where its files are among all the sessions' (16 bytes).
#[derive(Default)]
pub(crate) struct Claims {
    written_ns: i64,
    /// Every live session's files, each session's a run, in order of session id.
    /// (Behind an `Arc` as the `Vec` it was built in: no copy of it is made.)
    files: Option<Arc<Vec<(u32, SegmentStat)>>>,
    /// Each live session's id and its run in `files`; a taken one's run starts at `TAKEN`.
    runs: Vec<(u64, u32, u32)>,
    /// After a crash, the sessions whose files deltas of the checkpoint recorded, and when the
    /// last delta was written: what the claims of those compare with (`checkpoint/delta.rs`).
    later: Option<(i64, HashSet<u64>)>,
}

/// The start of a run whose claim was taken.
const TAKEN: u32 = u32::MAX;

impl Claims {
    /// The claims, by a checkpoint written at `written_ns`, of the sessions of `runs` (session
    /// id and where its files are in `files`, start and end, in order of id); `None` when
    /// `files` holds too many for the runs to name (never, short of four billion files).
    pub(crate) fn new(
        written_ns: i64,
        files: Vec<(u32, SegmentStat)>,
        runs: Vec<(u64, u32, u32)>,
    ) -> Option<Claims> {
        if files.len() >= TAKEN as usize {
            return None;
        }
        Some(Claims {
            written_ns,
            files: Some(Arc::new(files)),
            runs,
            later: None,
        })
    }

    /// These claims, those of the sessions `ids` made by deltas last written at `written_ns`.
    pub(crate) fn later_for(self, written_ns: i64, ids: HashSet<u64>) -> Claims {
        Claims {
            later: Some((written_ns, ids)),
            ..self
        }
    }

    /// The claim of session `id`, if there is one not taken yet.
    pub(crate) fn take(&mut self, id: u64) -> Option<Claim> {
        let claim = self.peek(id)?;
        let at = self.runs.binary_search_by_key(&id, |(id, ..)| *id).ok()?;
        if let Some((_, start, _)) = self.runs.get_mut(at) {
            *start = TAKEN;
        }
        Some(claim)
    }

    /// A copy of the claim of session `id`, if there is one not taken yet, which stays (a
    /// checkpoint records what it claims of a session left cold).
    pub(crate) fn peek(&self, id: u64) -> Option<Claim> {
        let at = self.runs.binary_search_by_key(&id, |(id, ..)| *id).ok()?;
        let &(_, start, end) = self.runs.get(at)?;
        if start == TAKEN {
            return None;
        }
        let written_ns = match &self.later {
            Some((later, ids)) if ids.contains(&id) => *later,
            _ => self.written_ns,
        };
        Some(Claim::new(
            written_ns,
            Arc::clone(self.files.as_ref()?),
            start as usize..end as usize,
        ))
    }

    /// Drops the claims of the sessions `gone` names.
    pub(crate) fn drop_if(&mut self, gone: impl Fn(u64) -> bool) {
        self.runs.retain(|(id, ..)| !gone(*id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::StdFs;
    use crate::layout::parse_segment_name;
    use crate::layout::SEGMENT_SUFFIX;
    use crate::{ChatMessage, LogStore, SessionBackend};

    /// The one segment of each of two sessions of a closed store: (session id, path).
    fn two_sessions(dir: &Path) -> [(u64, std::path::PathBuf); 2] {
        let store = LogStore::open(dir).unwrap();
        for key in ["alice", "carol"] {
            for text in ["one", "two"] {
                store.append(key, &ChatMessage::user(text)).unwrap();
            }
        }
        store.close().unwrap();
        let mut found: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                let path = e.unwrap().path();
                let name = path.file_name()?.to_str()?.to_owned();
                let (id, _) = parse_segment_name(&name, SEGMENT_SUFFIX)?;
                Some((id, path))
            })
            .collect();
        found.sort();
        [found.remove(0), found.remove(0)]
    }

    #[test]
    fn the_claims_of_sessions_a_delta_recorded_compare_with_the_deltas_time() {
        let stat = FileStat {
            len: 10,
            modified_ns: 150,
        };
        let files = vec![(1, (stat, None)), (1, (stat, None))];
        let claims = Claims::new(100, files, vec![(7, 0, 1), (8, 1, 2)]).unwrap();
        let claims = claims.later_for(200, HashSet::from([7]));
        // Written at 150: after the full checkpoint (100), before the delta (200).
        let now = (stat, None);
        let by_delta = claims.peek(7).unwrap();
        assert!(matches!(
            compare(&by_delta.files()[0].1, &now, by_delta.written_ns),
            Compared::Same { .. }
        ));
        let by_full = claims.peek(8).unwrap();
        assert!(matches!(
            compare(&by_full.files()[0].1, &now, by_full.written_ns),
            Compared::Changed
        ));
    }

    #[test]
    fn without_change_times_another_sessions_file_is_caught_by_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let [(alice, alices), (_, carols)] = two_sessions(dir.path());
        let fs = StdFs;
        // As recorded by a file system that keeps no change time.
        let claim_of = |path: &Path| {
            let stat = fs.stat(path).unwrap();
            Claim::new(i64::MAX, Arc::new(vec![(1, (stat, None))]), 0..1)
        };
        let claim = claim_of(&alices);
        assert!(claim.holds(&fs, dir.path(), alice, || Ok(None)).unwrap());
        // Carol's segment, of the same length, copied over Alice's with its time put back:
        // length and modification time still match.
        let bytes = std::fs::read(&carols).unwrap();
        assert_eq!(bytes.len() as u64, fs.stat(&alices).unwrap().len);
        let modified = std::fs::metadata(&alices).unwrap().modified().unwrap();
        std::fs::write(&alices, &bytes).unwrap();
        let file = std::fs::File::options().write(true).open(&alices).unwrap();
        file.set_modified(modified).unwrap();
        assert_eq!(fs.stat(&alices).unwrap(), claim_of(&alices).files()[0].1 .0);
        assert!(!claim.holds(&fs, dir.path(), alice, || Ok(None)).unwrap());
        // A file gone fails the claim; it is no error.
        std::fs::remove_file(&alices).unwrap();
        assert!(!claim.holds(&fs, dir.path(), alice, || Ok(None)).unwrap());
    }
}

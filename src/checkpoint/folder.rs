//! The folder against a checkpoint: after a clean close, the files must be exactly those it
//! records (the live sessions' are checked at their first touch, through their claims); after
//! a crash, every file is examined and the sessions whose files changed are named, for a
//! replay.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::claim::{compare, Claims, Compared, SegmentStat};
use crate::fs::FileSystem;
use crate::layout::{parse_segment_name, segment_name, SEGMENT_SUFFIX};
use crate::recovery::ReplayedSession;
use crate::workers;

/// A file a checkpoint records, by name: a segment's is kept as its session id and number
/// (parsed once, no copy of the name), any other's as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Recorded {
    Segment(u64, u32),
    Other(String),
}

impl Recorded {
    /// The file named `name`.
    pub(crate) fn of(name: &str) -> Recorded {
        match parse_segment_name(name, SEGMENT_SUFFIX) {
            Some((id, number)) => Recorded::Segment(id, number),
            None => Recorded::Other(name.to_owned()),
        }
    }

    /// Its name.
    pub(crate) fn name(&self) -> Cow<'_, str> {
        match self {
            Recorded::Segment(id, number) => Cow::Owned(segment_name(*id, *number)),
            Recorded::Other(name) => Cow::Borrowed(name),
        }
    }

    /// Its session id and segment number, if it is a segment.
    pub(super) fn segment(&self) -> Option<(u64, u32)> {
        match self {
            Recorded::Segment(id, number) => Some((*id, *number)),
            Recorded::Other(_) => None,
        }
    }

    /// How its name sorts against `name` (a segment's name sorts as its id, then number: they
    /// are fixed-width lowercase hex).
    fn cmp_name(&self, name: &str) -> Ordering {
        match (self, parse_segment_name(name, SEGMENT_SUFFIX)) {
            (Recorded::Segment(id, number), Some(other)) => (*id, *number).cmp(&other),
            _ => (*self.name()).cmp(name),
        }
    }
}

impl PartialOrd for Recorded {
    fn partial_cmp(&self, other: &Recorded) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Recorded {
    /// The order of their names.
    fn cmp(&self, other: &Recorded) -> Ordering {
        match (self, other) {
            (Recorded::Segment(a, m), Recorded::Segment(b, n)) => (a, m).cmp(&(b, n)),
            _ => self.name().cmp(&other.name()),
        }
    }
}

/// Checks that the folder's segment and temporary files are exactly those recorded, and
/// returns what the checkpoint claims of each live session's segment files (`live`): those are
/// checked the first time the session is read or written (`claim.rs`), so that open does no
/// work per file. Every other file it records (the deleted sessions kept for restore, files of
/// no session) is checked now: unchanged, and modified before the checkpoint.
pub(super) fn check_folder(
    fs: &dyn FileSystem,
    dir: &Path,
    checkpoint: &Path,
    recorded: Vec<(Recorded, SegmentStat)>,
    listed: Option<&[String]>,
    live: &[u64],
) -> std::result::Result<Claims, &'static str> {
    // `None`: the folder is as a clean close stamped it, holding exactly what this records.
    if let Some(listed) = listed {
        let same = recorded.len() == listed.len()
            && (recorded.iter().zip(listed)).all(|((a, _), b)| a.cmp_name(b).is_eq());
        if !same {
            return Err("the folder's segment files differ from those it records");
        }
    }
    let written = fs
        .stat(checkpoint)
        .map_err(|_| "it cannot be examined")?
        .modified_ns;
    // Both in order of session id: the live ones' files are found by walking `live` along.
    let mut live_at = 0;
    for (name, stat) in &recorded {
        if let Some((id, _)) = name.segment() {
            while live.get(live_at).is_some_and(|&l| l < id) {
                live_at += 1;
            }
            if live.get(live_at) == Some(&id) {
                continue;
            }
        }
        let now = fs
            .stat_changed(&dir.join(&*name.name()))
            .map_err(|_| "a segment cannot be examined")?;
        match compare(stat, &now, written) {
            Compared::Changed => return Err("a segment changed after it was written"),
            Compared::Rewritten => return Err("a segment was rewritten after it was written"),
            Compared::Same { .. } => {}
        }
    }
    claims_of(written, recorded, live)
}

/// After a crash: compares every segment file of the folder (`listed`) with what a checkpoint
/// taken while the store ran recorded (`recorded`, both sorted by name). Returns the claims of
/// the live sessions whose files did not change, and the sessions whose files did, by id: true
/// when only the newest segment grew (and newer ones appeared), so that a replay can go on
/// from where the checkpoint left the session. A file of no session the checkpoint holds, or
/// outside a session's segments, makes its session id one to replay. What deltas recorded
/// (`later`: when the delta file was last written, and the sessions they hold, see
/// `delta.rs`) is compared with that time, the rest with when the checkpoint was written.
pub(super) fn check_folder_after_crash(
    fs: &dyn FileSystem,
    dir: &Path,
    checkpoint: &Path,
    recorded: Vec<(Recorded, SegmentStat)>,
    listed: &[String],
    sessions: &[ReplayedSession],
    later: Option<(i64, HashSet<u64>)>,
) -> std::result::Result<(Claims, HashMap<u64, bool>), &'static str> {
    let written = fs
        .stat(checkpoint)
        .map_err(|_| "it cannot be examined")?
        .modified_ns;
    let written_of = |id: u64| match &later {
        Some((later, ids)) if ids.contains(&id) => *later,
        _ => written,
    };
    // Each session's segments in force: (oldest, newest, newest's length).
    let spans: HashMap<u64, (u32, u32, u64)> = sessions
        .iter()
        .map(|s| (s.session_id, (s.oldest, s.newest, s.newest_len)))
        .collect();
    // First what the names alone say, and which files must be examined: each is then looked
    // at (`stat`, side by side: one system call a file is most of an open after a crash),
    // and what it showed is taken in the names' order.
    let mut steps: Vec<Step> = Vec::new();
    let (mut old, mut new) = (recorded.iter().peekable(), listed.iter().peekable());
    loop {
        // A merge of the two sorted lists: each name recorded, listed, or both.
        let order = match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((a, _)), Some(b)) => a.cmp_name(b),
        };
        let next = match order {
            Ordering::Less => old.next().map(|(a, stat)| (a.clone(), Some(*stat), false)),
            Ordering::Greater => new.next().map(|b| (Recorded::of(b), None, true)),
            Ordering::Equal => new
                .next()
                .and(old.next())
                .map(|(a, stat)| (a.clone(), Some(*stat), true)),
        };
        let Some((name, then, now)) = next else {
            break; // never: the list peeked at has a next name
        };
        // Compaction output never renamed: the replay removes it.
        let Some((id, number)) = name.segment() else {
            continue;
        };
        let Some(&(oldest, newest, _)) = spans.get(&id) else {
            steps.push(Step::Mark(id, false));
            continue;
        };
        steps.push(match (then, now) {
            _ if number < oldest => Step::Mark(id, false),
            (None, _) if number > newest => Step::Mark(id, true),
            (Some(then), true) if number <= newest => Step::Examine {
                id,
                newest: number == newest,
                then,
                path: dir.join(&*name.name()),
            },
            _ => Step::Mark(id, false),
        });
    }
    let seen = workers::map(steps, |step| match step {
        Step::Mark(id, grown) => Ok(Seen::Mark(id, grown)),
        Step::Examine {
            id,
            newest,
            then,
            path,
        } => match fs.stat_changed(&path) {
            Ok(now) => Ok(Seen::Present {
                id,
                newest,
                then,
                now,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Seen::Mark(id, false)),
            Err(_) => Err("a segment cannot be examined"),
        },
    });
    let mut changed: HashMap<u64, bool> = HashMap::new();
    let mut mark = |id: u64, grown: bool| {
        let entry = changed.entry(id).or_insert(true);
        *entry &= grown;
    };
    // How many of each session's segments, `oldest` to `newest`, are there as recorded (or
    // grew): a session missing one is replayed, as a replay of everything would find it.
    let mut present: HashMap<u64, u32> = HashMap::new();
    // Sessions with a file that matched without a change time to compare (a file system that
    // keeps none): a rewrite with its times put back would pass, so such a session is not
    // resumed on the strength of its older files (kept, its claim reads their headers).
    let mut unsure: HashSet<u64> = HashSet::new();
    for seen in seen {
        let (id, newest, then, stat) = match seen? {
            Seen::Mark(id, grown) => {
                mark(id, grown);
                continue;
            }
            Seen::Present {
                id,
                newest,
                then,
                now,
            } => (id, newest, then, now),
        };
        let newest_len = spans.get(&id).map_or(0, |&(_, _, len)| len);
        *present.entry(id).or_default() += 1;
        match compare(&then, &stat, written_of(id)) {
            Compared::Same { change_time_known } => {
                if !change_time_known {
                    unsure.insert(id);
                }
            }
            Compared::Changed if newest && then.0.len == newest_len && stat.0.len >= newest_len => {
                mark(id, true)
            }
            Compared::Changed | Compared::Rewritten => mark(id, false),
        }
    }
    for (id, &(oldest, newest, _)) in &spans {
        let expected = newest.saturating_sub(oldest).saturating_add(1);
        if present.get(id).copied().unwrap_or(0) != expected {
            mark(*id, false);
        }
    }
    for id in unsure {
        if let Some(grown) = changed.get_mut(&id) {
            *grown = false;
        }
    }
    // The live sessions left: their files as recorded, checked again at first touch.
    let mut live: Vec<u64> = sessions
        .iter()
        .filter(|s| !s.view.deleted && !changed.contains_key(&s.session_id))
        .map(|s| s.session_id)
        .collect();
    live.sort_unstable();
    let claims = claims_of(written, recorded, &live)?;
    let claims = match later {
        Some((later, ids)) => claims.later_for(later, ids),
        None => claims,
    };
    Ok((claims, changed))
}

/// What a name in the folder or the checkpoint says of its session after a crash, before any
/// file is looked at: a verdict (its files changed; true: only by growing or by newer
/// segments), or a file to examine.
enum Step {
    Mark(u64, bool),
    /// A file the checkpoint recorded that is still listed, one of the session's segments in
    /// force (`newest`: its newest, which may have grown).
    Examine {
        id: u64,
        newest: bool,
        then: SegmentStat,
        path: PathBuf,
    },
}

/// A [`Step`] once its file was looked at: a verdict, or what `stat` says of it now.
enum Seen {
    Mark(u64, bool),
    Present {
        id: u64,
        newest: bool,
        then: SegmentStat,
        now: SegmentStat,
    },
}

/// The claims of the `live` sessions on their files, from what a checkpoint written at
/// `written` recorded of every file (sorted by name, so by session id and then segment
/// number: each session's files are one run).
fn claims_of(
    written: i64,
    recorded: Vec<(Recorded, SegmentStat)>,
    live: &[u64],
) -> std::result::Result<Claims, &'static str> {
    const TOO_MANY: &str = "it records more files than a claim can name";
    let mut runs: Vec<(u64, u32, u32)> = Vec::with_capacity(live.len());
    let mut too_many = false;
    // Both in order of session id.
    let mut live_at = 0;
    let mut count = 0usize;
    // Collected from `recorded`'s own allocation (std reuses a vector's buffer for a
    // `filter_map` into smaller items): a million files do not take a second list while
    // open holds the rest, and the list is shrunk to what it holds after.
    let mut files: Vec<(u32, SegmentStat)> = (recorded.into_iter())
        .filter_map(|(name, stat)| {
            let (id, number) = name.segment()?;
            while live.get(live_at).is_some_and(|&l| l < id) {
                live_at += 1;
            }
            if live.get(live_at) != Some(&id) {
                return None;
            }
            let (Ok(at), Ok(end)) = (u32::try_from(count), u32::try_from(count + 1)) else {
                too_many = true;
                return None;
            };
            match runs.last_mut() {
                Some((last, _, run_end)) if *last == id => *run_end = end,
                _ => runs.push((id, at, end)),
            }
            count += 1;
            Some((number, stat))
        })
        .collect();
    if too_many {
        return Err(TOO_MANY);
    }
    files.shrink_to_fit();
    Claims::new(written, files, runs).ok_or(TOO_MANY)
}

//! Incremental checkpoints: what changed since the full checkpoint (`CHECKPOINT`), appended
//! to `CHECKPOINT.delta` while the store runs, so that a checkpoint costs what changed, not
//! what the store holds, and can be taken often.
//!
//! Each record of the file is a whole checkpoint (the format of `codec.rs`, its own CRC
//! inside) that holds only the sessions whose files moved since the checkpoint before it, and
//! those sessions' segment files. The file's header names the full checkpoint the records
//! follow (its lengths, body CRC and next sequence number): records that follow another one
//! (a crash came after a new full checkpoint was put in place and before this file went) are
//! never applied. Deltas are read only by an open after a crash: a clean close writes a full
//! checkpoint and removes this file. A record cut short or damaged ends the file (the records
//! before it stand): whatever it would have said, the open examines every segment file and
//! replays the sessions whose files moved past what is recorded, as it does for a full
//! checkpoint taken while the store ran.
//!
//! ```text
//! // Format: { magic: [u8; 8] = "SLCKDLT\0" | version: u32 = 1 | base_body_len: u64
//! //           | base_body_crc: u32 | base_section_len: u64 | base_next_seq: u64
//! //           | header_crc: u32 | record* }
//! // record: { len: u64 | crc: u32 (of the checkpoint bytes) | checkpoint: [u8; len] }
//! ```

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::bytes::Reader;
use crate::error::Result;
use crate::fs::{context, sync_dir, written_after, FileSystem, OpenMode};
use crate::layout::CHECKPOINT_DELTA_FILE;

pub(crate) use super::codec::BaseId;
use super::codec::{decode_whole, Decoded};

const MAGIC: [u8; 8] = *b"SLCKDLT\0";
const VERSION: u32 = 1;
/// Magic, version, the base's identity, the header's CRC.
pub(crate) const HEADER_LEN: u64 = crate::layout::CHECKPOINT_DELTA_HEADER_LEN;
const _: () = assert!(HEADER_LEN == 8 + 4 + 8 + 4 + 8 + 8 + 4);
/// A record's length and CRC.
const RECORD_HEAD: u64 = 8 + 4;
/// How much of a delta file is read: records past it (a sparse or damaged file) are not, and
/// the open replays what changed since the last one it read instead. A store writes a full
/// checkpoint rather than a delta that would reach past it.
pub(crate) const DELTA_FILE_MAX: u64 = 1 << 30;

impl BaseId {
    fn header(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN as usize);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.body_len.to_le_bytes());
        out.extend_from_slice(&self.body_crc.to_le_bytes());
        out.extend_from_slice(&self.section_len.to_le_bytes());
        out.extend_from_slice(&self.next_seq.to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// The base a delta file's header names, if it is whole and of this version.
    fn of_header(bytes: &[u8]) -> Option<BaseId> {
        let (fields, crc) = bytes.split_at_checked(HEADER_LEN as usize - 4)?;
        if crc32fast::hash(fields).to_le_bytes() != *crc {
            return None;
        }
        let mut r = Reader(fields);
        if r.take(8)? != MAGIC || r.u32()? != VERSION {
            return None;
        }
        Some(BaseId {
            body_len: r.u64()?,
            body_crc: r.u32()?,
            section_len: r.u64()?,
            next_seq: r.u64()?,
        })
    }
}

/// A record [`append`] wrote, not yet synced.
pub(crate) struct Appended {
    file: Box<dyn crate::fs::FileHandle>,
    /// The file was started with it.
    fresh: bool,
    /// The file's length with it.
    pub len: u64,
}

impl Appended {
    /// Makes the record durable: the file, then (a new file) its name in the folder. A failure
    /// here must stop the store's writes (a sync retried after a failed one may report pages
    /// the disk dropped as written).
    pub(crate) fn sync(self, fs: &dyn FileSystem, dir: &Path) -> Result<()> {
        let path = dir.join(CHECKPOINT_DELTA_FILE);
        // The record vouches for the segments only once it is on disk whole.
        self.file.sync().map_err(context("syncing", &path))?;
        if self.fresh {
            // A new file's name is durable only once the folder is synced.
            sync_dir(fs, dir)?;
        }
        Ok(())
    }
}

/// Writes a record (`parts`: a checkpoint's bytes, in parts) at `at`, the file's length, or,
/// `at` 0, starts the file with it (emptying an older one, the header naming `base` first),
/// newer on disk than every segment it records (`newest_segment_ns`, see
/// `checkpoint::write_temp`); [`Appended::sync`] makes it durable. `None` when the file
/// system's clock could not show it newer: then the record is cut off again, and nothing was
/// added. A failure leaves bytes past `at` that the next record, or a full checkpoint, replaces.
pub(crate) fn append(
    fs: &dyn FileSystem,
    dir: &Path,
    base: &BaseId,
    at: u64,
    parts: &[&[u8]],
    newest_segment_ns: i64,
) -> Result<Option<Appended>> {
    let path = dir.join(CHECKPOINT_DELTA_FILE);
    let fresh = at == 0;
    let mode = if fresh {
        OpenMode::Truncate
    } else {
        OpenMode::Write
    };
    let file = fs.open(&path, mode).map_err(context("opening", &path))?;
    let len: usize = parts.iter().map(|part| part.len()).sum();
    let mut crc = crc32fast::Hasher::new();
    for part in parts {
        crc.update(part);
    }
    // A new file's header and first record are written together and synced once: a cut
    // anywhere in them leaves a header that does not check, or a record that does not, and
    // neither is applied.
    let mut head = if fresh { base.header() } else { Vec::new() };
    let record_at = at + head.len() as u64;
    head.extend_from_slice(&(len as u64).to_le_bytes());
    head.extend_from_slice(&crc.finalize().to_le_bytes());
    let newer = written_after(fs, &path, newest_segment_ns, || {
        let mut offset = at;
        for part in std::iter::once(&&head[..]).chain(parts) {
            file.write_at(part, offset)
                .map_err(context("writing", &path))?;
            offset += part.len() as u64;
        }
        Ok(())
    })?;
    if !newer {
        file.set_len(at).map_err(context("cutting", &path))?;
        return Ok(None);
    }
    Ok(Some(Appended {
        file,
        fresh,
        len: record_at + RECORD_HEAD + len as u64,
    }))
}

/// The length of the delta file with one more record of `record_len` bytes at `at` (0: the
/// file started with it).
pub(crate) fn len_with(at: u64, record_len: usize) -> u64 {
    at.max(HEADER_LEN)
        .saturating_add(RECORD_HEAD)
        .saturating_add(record_len as u64)
}

/// Removes the delta file, if there is one; returns whether there was. (Not synced: a delta
/// file a power cut brings back names the full checkpoint it followed, and is never applied to
/// another.)
pub(crate) fn remove(fs: &dyn FileSystem, dir: &Path) -> Result<bool> {
    let path = dir.join(CHECKPOINT_DELTA_FILE);
    let there = fs.exists(&path);
    if there {
        fs.remove_file(&path).map_err(context("removing", &path))?;
    }
    Ok(there)
}

/// What the deltas of a full checkpoint changed in it.
pub(crate) struct Applied {
    /// The sessions a delta recorded (their entries and files are the last delta's that has
    /// them).
    pub ids: HashSet<u64>,
    /// When the delta file was last written: what its records recorded of a file is compared
    /// with this, as the full checkpoint's is with its own.
    pub written_ns: i64,
}

/// Applies to `base` (decoded from the full checkpoint `base_id`) the records of the delta
/// file that follow it, in order, up to the first that is not whole or does not follow the
/// ones before (or, past [`DELTA_FILE_MAX`], is not read). `None` when there is no delta file
/// for it, or none of its records applies.
pub(super) fn apply(
    fs: &dyn FileSystem,
    dir: &Path,
    base_id: &BaseId,
    base: &mut Decoded,
    window: usize,
) -> Option<Applied> {
    let path = dir.join(CHECKPOINT_DELTA_FILE);
    let file = fs.open(&path, OpenMode::Read).ok()?;
    // Records are read only up to the limit: every read is bounded by it.
    let len = file.size().ok()?.min(DELTA_FILE_MAX);
    let mut head = [0u8; HEADER_LEN as usize];
    file.read_at(&mut head, 0).ok()?;
    if BaseId::of_header(&head)? != *base_id {
        return None;
    }
    let written_ns = fs.stat(&path).ok()?.modified_ns;
    let mut deltas: Vec<Decoded> = Vec::new();
    let mut at = HEADER_LEN;
    while at + RECORD_HEAD <= len {
        let mut record_head = [0u8; RECORD_HEAD as usize];
        if file.read_at(&mut record_head, at).is_err() {
            break;
        }
        let mut r = Reader(&record_head);
        let (Some(record_len), Some(crc)) = (r.u64(), r.u32()) else {
            break;
        };
        let Some(end) = (at + RECORD_HEAD)
            .checked_add(record_len)
            .filter(|&end| end <= len)
        else {
            break;
        };
        let Ok(size) = usize::try_from(record_len) else {
            break;
        };
        let mut bytes = vec![0u8; size];
        if file.read_at(&mut bytes, at + RECORD_HEAD).is_err() || crc32fast::hash(&bytes) != crc {
            break;
        }
        let Some(delta) = decode_whole(&bytes, window) else {
            break;
        };
        // Each follows the one before (the full checkpoint first), with its window of ids.
        let before = deltas.last().unwrap_or(base);
        let follows = delta.window == base.window
            && delta.next_seq >= before.next_seq
            && delta.next_id >= before.next_id;
        if !follows {
            break;
        }
        deltas.push(delta);
        at = end;
    }
    let ids = merge(base, deltas);
    (!ids.is_empty()).then_some(Applied { ids, written_ns })
}

/// Puts what `deltas` (in order) record in `base`, once: each session the last one of them
/// that records it holds, in place of the base's of the same id (and its segment files in
/// place of theirs), and the last one's numbers. A session of the base that no delta records
/// and whose key a live session of the deltas holds is left out (it left the store since, say
/// reclaimed or quarantined; two live sessions never hold one key): its files stay recorded as
/// files of no session, so an open after a crash replays them. Returns the sessions recorded.
fn merge(base: &mut Decoded, deltas: Vec<Decoded>) -> HashSet<u64> {
    let Some(last) = deltas.last() else {
        return HashSet::new();
    };
    (base.next_seq, base.next_id) = (last.next_seq, last.next_id);
    // The last word on each session, and on its files.
    let mut sessions = HashMap::new();
    let mut files = HashMap::new();
    for delta in deltas {
        base.window_full |= delta.window_full;
        let mut rows: HashMap<u64, Vec<_>> = HashMap::new();
        for (name, stat) in delta.segments {
            if let Some((id, _)) = name.segment() {
                rows.entry(id).or_default().push((name, stat));
            }
        }
        for session in delta.sessions {
            let id = session.session_id;
            files.insert(id, rows.remove(&id).unwrap_or_default());
            sessions.insert(id, session);
        }
    }
    let live_keys: HashSet<&str> = (sessions.values())
        .filter(|s| !s.view.deleted)
        .map(|s| s.view.key.as_str())
        .collect();
    base.sessions.retain(|s| {
        !sessions.contains_key(&s.session_id)
            && (s.view.deleted || !live_keys.contains(s.view.key.as_str()))
    });
    base.segments.retain(|(name, _)| match name.segment() {
        Some((id, _)) => !files.contains_key(&id),
        None => true,
    });
    base.segments.extend(files.into_values().flatten());
    base.segments.sort_by(|(a, _), (b, _)| a.cmp(b));
    let ids: HashSet<u64> = sessions.keys().copied().collect();
    base.sessions.extend(sessions.into_values());
    // Newest session first, as a full checkpoint holds them.
    base.sessions
        .sort_by_key(|s| std::cmp::Reverse(s.session_id));
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::StdFs;

    fn base(next_seq: u64) -> BaseId {
        BaseId {
            body_len: 100,
            body_crc: 0xdead_beef,
            section_len: 24,
            next_seq,
        }
    }

    #[test]
    fn a_header_names_its_base_and_any_damage_to_it_is_refused() {
        let header = base(7).header();
        assert_eq!(header.len() as u64, HEADER_LEN);
        assert_eq!(BaseId::of_header(&header), Some(base(7)));
        for at in 0..header.len() {
            let mut damaged = header.clone();
            damaged[at] ^= 0x10;
            assert_eq!(BaseId::of_header(&damaged), None, "{at}");
        }
        assert_eq!(BaseId::of_header(&header[..header.len() - 1]), None);
    }

    fn session(id: u64, key: &str, newest_len: u64) -> crate::recovery::ReplayedSession {
        crate::recovery::ReplayedSession {
            session_id: id,
            view: crate::projection::SessionView::new(key),
            oldest: 1,
            newest: 1,
            newest_len,
            highest: 1,
            head: [0; 32],
            newest_version: 1,
            damage: None,
        }
    }

    fn decoded(next_seq: u64, sessions: Vec<crate::recovery::ReplayedSession>) -> Decoded {
        let stat = (
            crate::fs::FileStat {
                len: 1,
                modified_ns: next_seq as i64,
            },
            None,
        );
        let segments = (sessions.iter())
            .map(|s| {
                let name = crate::layout::segment_name(s.session_id, 1);
                (super::super::folder::Recorded::of(&name), stat)
            })
            .collect();
        Decoded {
            version: super::super::VERSION_WRITTEN,
            next_seq,
            next_id: 10,
            window: 0,
            window_full: false,
            segments,
            sessions,
            id: base(next_seq),
        }
    }

    #[test]
    fn the_last_delta_that_records_a_session_has_the_last_word_and_a_key_taken_over_leaves() {
        // The full checkpoint: sessions 1 ("a"), 2 ("b"), 3 ("c").
        let mut full = decoded(
            5,
            vec![
                session(3, "c", 30),
                session(2, "b", 20),
                session(1, "a", 10),
            ],
        );
        // Session 1 grows twice; session 3 left the store (quarantined, say) and a new
        // session 4 took its key.
        let deltas = vec![
            decoded(6, vec![session(1, "a", 11)]),
            decoded(7, vec![session(4, "c", 40), session(1, "a", 12)]),
        ];
        let ids = merge(&mut full, deltas);
        assert_eq!(ids, HashSet::from([1, 4]));
        let held: Vec<(u64, u64)> = (full.sessions.iter())
            .map(|s| (s.session_id, s.newest_len))
            .collect();
        assert_eq!(held, [(4, 40), (2, 20), (1, 12)]);
        assert_eq!(full.next_seq, 7);
        // Session 1's file as the last delta recorded it; session 3's stays recorded, of no
        // session: an open after a crash replays it.
        let rows: Vec<u64> = (full.segments.iter())
            .filter_map(|(name, stat)| Some((name.segment()?.0, stat.0.modified_ns)))
            .map(|(id, written)| id * 10 + written as u64)
            .collect();
        assert_eq!(rows, [17, 25, 35, 47]);
    }

    #[test]
    fn the_deltas_of_another_checkpoint_are_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let fs = StdFs;
        let appended = append(&fs, dir.path(), &base(7), 0, &[], i64::MIN).unwrap();
        let appended = appended.expect("the clock shows it newer than nothing");
        assert_eq!(appended.len, HEADER_LEN + RECORD_HEAD);
        appended.sync(&fs, dir.path()).unwrap();
        let mut decoded = Decoded {
            version: super::super::VERSION_WRITTEN,
            next_seq: 8,
            next_id: 1,
            window: 0,
            window_full: false,
            segments: Vec::new(),
            sessions: Vec::new(),
            id: base(8),
        };
        assert!(apply(&fs, dir.path(), &base(8), &mut decoded, 0).is_none());
        assert!(remove(&fs, dir.path()).unwrap());
        assert!(!remove(&fs, dir.path()).unwrap());
    }
}

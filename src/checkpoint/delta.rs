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

use std::collections::HashSet;
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
pub(crate) const HEADER_LEN: u64 = 8 + 4 + 8 + 4 + 8 + 8 + 4;
/// A record's length and CRC.
const RECORD_HEAD: u64 = 8 + 4;
/// The longest delta file read: a longer one (a sparse or damaged file) is not read at all, and
/// the open replays what changed since the full checkpoint instead. A store starts a full
/// checkpoint long before its deltas reach this.
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

/// Appends a record (`parts`: a checkpoint's bytes, in parts) at `at`, the file's length, or,
/// `at` 0, starts the file with it (emptying an older one, the header naming `base` first),
/// durably; newer on disk than every segment it records (`newest_segment_ns`, see
/// `checkpoint::write_temp`). Returns the file's new length, or `None` when the file system's
/// clock could not show it newer: then the record is cut off again, and nothing was added.
pub(crate) fn append(
    fs: &dyn FileSystem,
    dir: &Path,
    base: &BaseId,
    at: u64,
    parts: &[&[u8]],
    newest_segment_ns: i64,
) -> Result<Option<u64>> {
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
    // A new file's header and first record go in one write: a cut anywhere in it leaves a
    // header that does not check, or a record that does not, and neither is applied.
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
    // The record vouches for the segments only once it is on disk whole.
    file.sync().map_err(context("syncing", &path))?;
    if fresh {
        // A new file's name is durable only once the folder is synced.
        sync_dir(fs, dir)?;
    }
    Ok(Some(record_at + RECORD_HEAD + len as u64))
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
/// file that follow it, in order, up to the first that is not whole. `None` when there is no
/// delta file for it, or none of its records applies.
pub(super) fn apply(
    fs: &dyn FileSystem,
    dir: &Path,
    base_id: &BaseId,
    base: &mut Decoded,
    window: usize,
) -> Option<Applied> {
    let path = dir.join(CHECKPOINT_DELTA_FILE);
    let file = fs.open(&path, OpenMode::Read).ok()?;
    let len = file.size().ok().filter(|&len| len <= DELTA_FILE_MAX)?;
    let mut head = [0u8; HEADER_LEN as usize];
    file.read_at(&mut head, 0).ok()?;
    if BaseId::of_header(&head)? != *base_id {
        return None;
    }
    let written_ns = fs.stat(&path).ok()?.modified_ns;
    let mut ids = HashSet::new();
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
        // Bounded by the file's length, itself bounded above.
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
        if !merge(base, delta, &mut ids) {
            break;
        }
        at = end;
    }
    (!ids.is_empty()).then_some(Applied { ids, written_ns })
}

/// Puts what `delta` records in `base`: its sessions in place of the base's of the same id
/// (and their segment files in place of theirs), its numbers where higher. False (and `base`
/// unchanged) if it was written with another window of ids or numbers below the base's.
fn merge(base: &mut Decoded, delta: Decoded, ids: &mut HashSet<u64>) -> bool {
    if delta.window != base.window || delta.next_seq < base.next_seq || delta.next_id < base.next_id
    {
        return false;
    }
    let recorded: HashSet<u64> = delta.sessions.iter().map(|s| s.session_id).collect();
    base.sessions.retain(|s| !recorded.contains(&s.session_id));
    base.sessions.extend(delta.sessions);
    // Newest session first, as a full checkpoint holds them.
    base.sessions
        .sort_by_key(|s| std::cmp::Reverse(s.session_id));
    base.segments.retain(|(name, _)| match name.segment() {
        Some((id, _)) => !recorded.contains(&id),
        None => true,
    });
    base.segments.extend(
        (delta.segments.into_iter())
            .filter(|(name, _)| name.segment().is_some_and(|(id, _)| recorded.contains(&id))),
    );
    base.segments.sort_by(|(a, _), (b, _)| a.cmp(b));
    base.next_seq = delta.next_seq;
    base.next_id = delta.next_id;
    base.window_full |= delta.window_full;
    ids.extend(recorded);
    true
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

    #[test]
    fn the_deltas_of_another_checkpoint_are_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let fs = StdFs;
        let len = append(&fs, dir.path(), &base(7), 0, &[], i64::MIN).unwrap();
        assert_eq!(len, Some(HEADER_LEN + RECORD_HEAD));
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

//! Every name in a store's folder, in one place: the files and folders a store holds, how a
//! segment's or a key file's name is made and parsed, and the limit on the numbers names carry.
//!
//! ```text
//! {dir}/LOCK                                  the lock, and the sequence floor (recovery)
//! {dir}/CHECKPOINT, CHECKPOINT.tmp            the projection at a clean close, or taken while
//!                                             the store ran
//! {dir}/CHECKPOINT.running                    segments changed after the checkpoint was written
//! {dir}/ERASED, ERASED.torn-{n}               the erasure log, and a torn tail cut off it
//! {dir}/ANCHORS, ANCHORS.torn-{n}             the anchor log, and a torn tail cut off it
//! {dir}/{id:016x}-{segment:08x}.seg           a session's segments
//! {dir}/{id:016x}-{segment:08x}.seg.tmp       a compaction's output before its rename
//! {dir}/{id:016x}-{segment:08x}.seg.torn-{n}  the bytes of a torn tail cut off on open
//! {dir}/archive/, {dir}/quarantine/           superseded (keep_history) and damaged segments
//! {dir}/keys/STORE, keys/{id:016x}.key        an encrypted store's key check and data keys
//! {dir}/keys/{id:016x}.erasing                an erasure a crash interrupted
//! {dir}/replica/STATE                         what replication shipped (replication/state.rs)
//! ```

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::fs::{context, read_prefix, FileSystem, OpenMode};
use crate::report::{Finding, RecoveryReport};

/// Name of the lock file in a store's folder. It also holds the sequence floor.
pub const LOCK_FILE: &str = "LOCK";
/// The checkpoint: the projection as it was at the last clean close.
pub const CHECKPOINT_FILE: &str = "CHECKPOINT";
/// Where the checkpoint is written before its rename.
pub const CHECKPOINT_TEMP_FILE: &str = "CHECKPOINT.tmp";
/// The running marker: present (empty) while segments may differ from what the checkpoint
/// describes, from a running store's first change until a clean close's checkpoint.
pub const CHECKPOINT_RUNNING_FILE: &str = "CHECKPOINT.running";
/// Incremental checkpoints: what changed since the checkpoint, appended while the store runs
/// (`checkpoint/delta.rs`); removed when a full checkpoint is put in place.
pub const CHECKPOINT_DELTA_FILE: &str = "CHECKPOINT.delta";
/// How many bytes its header takes, its records following (`docs/FORMAT.md`; the fields are
/// written by `checkpoint/delta.rs`, which checks that they add up to this).
pub const CHECKPOINT_DELTA_HEADER_LEN: u64 = 44;
/// The erasure log.
pub const ERASED_FILE: &str = "ERASED";
/// Prefix of the side file that keeps a record of the erasure log a crash cut short.
pub const ERASED_TORN_PREFIX: &str = "ERASED.torn-";
/// The anchor log: where each session had reached at the last clean close (`anchor/`).
pub const ANCHORS_FILE: &str = "ANCHORS";
/// Prefix of the side files of the anchor log's torn tails.
pub const ANCHORS_TORN_PREFIX: &str = "ANCHORS.torn-";
/// Folder where damaged segments are kept.
pub const QUARANTINE_DIR: &str = "quarantine";
/// Folder where superseded segments are kept with `Options::keep_history`.
pub const ARCHIVE_DIR: &str = "archive";
/// Folder of the store's replication state (feature `replication`).
pub const REPLICA_DIR: &str = "replica";
/// Folder of an encrypted store's key files.
pub const KEYS_DIR: &str = "keys";
/// The file in `keys/` that checks the store key and holds the nonce epoch.
pub const STORE_CHECK_FILE: &str = "STORE";
/// File-name suffix of a session's data key in `keys/`.
pub const KEY_SUFFIX: &str = ".key";
/// File-name suffix of the marker of an erasure a crash interrupted, in `keys/`.
pub const ERASING_SUFFIX: &str = ".erasing";
/// File-name suffix of segments.
pub const SEGMENT_SUFFIX: &str = ".seg";
/// File-name suffix of a compaction's output before it is renamed into place.
pub const SEGMENT_TEMP_SUFFIX: &str = ".seg.tmp";
/// Infix of the side file that keeps the bytes of a torn tail cut off on open.
pub const TORN_INFIX: &str = ".seg.torn-";

/// Session ids and sequence numbers at or above this are damage (or not ours): the store
/// never comes near them, and keeping them out leaves room to count up without overflow.
pub const NUMBER_LIMIT: u64 = 1 << 62;

/// The file name of a session's segment.
pub fn segment_name(session_id: u64, segment: u32) -> String {
    named(session_id, segment, SEGMENT_SUFFIX)
}

/// `{session_id:016x}-{segment:08x}{suffix}`: a segment's name, or its temporary one.
fn named(session_id: u64, segment: u32, suffix: &str) -> String {
    format!("{session_id:016x}-{segment:08x}{suffix}")
}

/// The path of a session's segment in `dir`.
pub fn segment_path(dir: &Path, session_id: u64, segment: u32) -> PathBuf {
    dir.join(segment_name(session_id, segment))
}

/// The temporary name of segment `segment` of a session while compaction writes it.
pub fn segment_temp_path(dir: &Path, session_id: u64, segment: u32) -> PathBuf {
    dir.join(named(session_id, segment, SEGMENT_TEMP_SUFFIX))
}

/// Parses `{session_id:016x}-{segment:08x}` (lowercase hex, exact widths) followed by `suffix`.
pub fn parse_segment_name(name: &str, suffix: &str) -> Option<(u64, u32)> {
    let stem = name.strip_suffix(suffix)?;
    let (id, segment) = stem.split_once('-')?;
    let id = parse_hex(id, 16)?;
    let number = u32::try_from(parse_hex(segment, 8)?).ok()?;
    // Segment numbers start at 1 and stop one short of the largest, so that `n + 1` and
    // `n - 1` of a listed number never overflow.
    if number == 0 || number == u32::MAX {
        return None;
    }
    Some((id, number))
}

/// The numbers of session `id`'s segment files in `dir` (regular files only), lowest first.
pub fn listed_segments(fs: &dyn FileSystem, dir: &Path, id: u64) -> Result<Vec<u32>> {
    let entries = fs.list(dir).map_err(context("listing", dir))?;
    let mut numbers: Vec<u32> = entries
        .iter()
        .filter(|e| e.is_file)
        .filter_map(|e| parse_segment_name(e.name.to_str()?, SEGMENT_SUFFIX))
        .filter(|&(listed, _)| listed == id)
        .map(|(_, number)| number)
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

/// The session id an archived or quarantined file's name starts with (`{id:016x}-…`), if
/// below [`NUMBER_LIMIT`].
pub fn kept_session_id(name: &str) -> Option<u64> {
    name.split_once('-')
        .filter(|(id, _)| id.len() == 16)
        .and_then(|(id, _)| u64::from_str_radix(id, 16).ok())
        .filter(|id| *id < NUMBER_LIMIT)
}

/// The path of session `session_id`'s data key in `keys_dir`.
pub fn key_path(keys_dir: &Path, session_id: u64) -> PathBuf {
    keys_dir.join(format!("{session_id:016x}{KEY_SUFFIX}"))
}

/// The path of session `session_id`'s erasure marker in `keys_dir`.
pub fn erasing_path(keys_dir: &Path, session_id: u64) -> PathBuf {
    keys_dir.join(format!("{session_id:016x}{ERASING_SUFFIX}"))
}

/// The session id in a `keys/` file name `{id:016x}{suffix}`.
pub fn parse_key_name(name: &str, suffix: &str) -> Option<u64> {
    parse_hex(name.strip_suffix(suffix)?, 16)
}

/// The path of the erasure log of the store in `dir`.
pub fn erased_path(dir: &Path) -> PathBuf {
    dir.join(ERASED_FILE)
}

/// `text` as a number if it is exactly `width` lowercase hexadecimal digits (what file names
/// hold: no sign, no other case, no other width).
pub fn parse_hex(text: &str, width: usize) -> Option<u64> {
    let digits =
        text.len() == width && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    digits.then(|| u64::from_str_radix(text, 16).ok()).flatten()
}

// Format of the LOCK file's content: { magic: [u8; 8] | seq_floor: u64 | crc32: u32 }, then
// from byte 32 the folder stamp (see `FolderStamp`), and from byte 96 the name of the anchor
// log's last full anchor (see `FullAnchor`).
const FLOOR_MAGIC: [u8; 8] = *b"SLFLOOR\0";
const FLOOR_LEN: usize = 8 + 8 + 4;

/// The sequence floor stored in the LOCK file: no record ever had a sequence number at or above
/// it when it was written. 0 if the file holds none (or a damaged one, which a crash during its
/// write can leave); 0 and a [`Finding::SequenceFloorIgnored`] in `report` if it holds a whole
/// one at or beyond [`NUMBER_LIMIT`], which no store writes.
pub(crate) fn read_seq_floor(fs: &dyn FileSystem, dir: &Path, report: &mut RecoveryReport) -> u64 {
    let Ok(bytes) = read_prefix(fs, &dir.join(LOCK_FILE), FLOOR_LEN as u64) else {
        return 0;
    };
    let (Some(magic), Some(floor), Some(crc)) =
        (bytes.get(0..8), bytes.get(8..16), bytes.get(16..20))
    else {
        return 0;
    };
    let stored = u32::from_le_bytes(crc.try_into().unwrap_or_default());
    if magic != FLOOR_MAGIC || stored != crc32fast::hash(bytes.get(..16).unwrap_or_default()) {
        return 0;
    }
    let floor = u64::from_le_bytes(floor.try_into().unwrap_or_default());
    if floor >= NUMBER_LIMIT {
        report.findings.push(Finding::SequenceFloorIgnored {
            path: dir.join(LOCK_FILE),
            floor,
        });
        return 0;
    }
    floor
}

/// Records durably that sequence numbers below `floor` are used, before records are removed
/// (a deleted session's files), so that a reopen never hands out their numbers again.
pub(crate) fn write_seq_floor(fs: &dyn FileSystem, dir: &Path, floor: u64) -> Result<()> {
    let path = dir.join(LOCK_FILE);
    let mut bytes = Vec::with_capacity(FLOOR_LEN);
    bytes.extend_from_slice(&FLOOR_MAGIC);
    bytes.extend_from_slice(&floor.to_le_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let file = fs
        .open(&path, OpenMode::Write)
        .map_err(context("opening", &path))?;
    file.write_at(&bytes, 0)
        .map_err(context("writing", &path))?;
    // The floor must be durable before the records it stands for are removed.
    file.sync().map_err(context("syncing", &path))
}

/// What a clean close saw of the store's folder and its checkpoint, once it had checked that
/// the folder held only the store's files and the segments the checkpoint records: an open
/// that finds the folder's times and the checkpoint as they were trusts the checkpoint's list
/// of segments and does not list the folder. It is kept in the `LOCK` file, after the floor,
/// because writing it there changes no entry of the folder (and so none of its times).
///
/// ```text
/// // Format, at byte 32 of LOCK: { magic: [u8; 8] = "SLSTAMP\0" | folder_mtime_ns: i64
/// //   | folder_ctime_ns: i64 | checkpoint_len: u64 | checkpoint_mtime_ns: i64
/// //   | checkpoint_ctime_ns: i64 | crc32: u32 }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FolderStamp {
    /// The folder's modification and change times (nanoseconds): any entry created, removed
    /// or renamed in it moves both, and no program can set the change time back.
    pub folder: (i64, i64),
    /// The checkpoint's length, modification time and change time.
    pub checkpoint: (u64, i64, i64),
}

const STAMP_MAGIC: [u8; 8] = *b"SLSTAMP\0";
const STAMP_AT: u64 = 32;
const STAMP_LEN: usize = 8 + 8 + 8 + 8 + 8 + 8 + 4;

impl FolderStamp {
    /// The stamp the `LOCK` file of `dir` holds, if a whole one.
    pub(crate) fn read(fs: &dyn FileSystem, dir: &Path) -> Option<FolderStamp> {
        let body = read_in_lock(fs, dir, STAMP_AT, &STAMP_MAGIC, STAMP_LEN)?;
        let field = |at: usize| Some(i64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?));
        Some(FolderStamp {
            folder: (field(8)?, field(16)?),
            checkpoint: (field(24)? as u64, field(32)?, field(40)?),
        })
    }

    /// Writes this stamp (`Some`), or a blank that matches nothing (`None`), into the `LOCK`
    /// file of `dir`. Not synced: a stamp lost with a power cut only makes the next open list
    /// the folder, and one that survives still matches only the folder it describes.
    pub(crate) fn write(stamp: Option<FolderStamp>, fs: &dyn FileSystem, dir: &Path) -> Result<()> {
        let Some(stamp) = stamp else {
            return write_in_lock(fs, dir, STAMP_AT, &[0; STAMP_LEN]);
        };
        let mut bytes = STAMP_MAGIC.to_vec();
        for value in [
            stamp.folder.0,
            stamp.folder.1,
            stamp.checkpoint.0 as i64,
            stamp.checkpoint.1,
            stamp.checkpoint.2,
        ] {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        write_in_lock(fs, dir, STAMP_AT, &with_crc(bytes))
    }

    /// The stamp of `dir` as it is now, with its checkpoint; `None` where the file system
    /// does not say that a folder's times follow its entries, keeps no change time, or the
    /// checkpoint is not there, and for a folder reached through a symbolic link (whose own
    /// times say nothing of the folder's entries).
    pub(crate) fn now(fs: &dyn FileSystem, dir: &Path) -> Option<FolderStamp> {
        if !fs.folder_times_follow_entries() || fs.is_symlink(dir) {
            return None;
        }
        let (folder, Some(changed)) = fs.stat_changed(dir).ok()? else {
            return None;
        };
        let (checkpoint, Some(checkpoint_changed)) =
            fs.stat_changed(&dir.join(CHECKPOINT_FILE)).ok()?
        else {
            return None;
        };
        Some(FolderStamp {
            folder: (folder.modified_ns, changed),
            checkpoint: (checkpoint.len, checkpoint.modified_ns, checkpoint_changed),
        })
    }
}

/// Where a reader of the anchor log may start (`anchor/`): from `at` to `end` is a full
/// anchor, a run of anchors that lists every session the anchors before it do, at the point
/// they fold to, so that a reader starting there folds to the points one starting at the
/// log's first byte would. `root` is the first anchor's root. Kept in `LOCK`, after the stamp,
/// because writing it there changes no entry of the folder. Advisory: a reader checks that
/// sound anchors, the first with that root, run linked from `at` to `end`, and reads the
/// whole log otherwise.
///
/// ```text
/// // Format, at byte 96 of LOCK: { magic: [u8; 8] = "SLANFULL" | at: u64 | end: u64
/// //   | root: [u8; 32] | crc32: u32 }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FullAnchor {
    pub at: u64,
    pub end: u64,
    pub root: [u8; 32],
}

const FULL_MAGIC: [u8; 8] = *b"SLANFULL";
const FULL_AT: u64 = 96;
const FULL_LEN: usize = 8 + 8 + 8 + 32 + 4;

impl FullAnchor {
    /// The full anchor `LOCK` names, if it holds a whole one.
    pub(crate) fn read(fs: &dyn FileSystem, dir: &Path) -> Option<FullAnchor> {
        let body = read_in_lock(fs, dir, FULL_AT, &FULL_MAGIC, FULL_LEN)?;
        let field = |at: usize| Some(u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?));
        Some(FullAnchor {
            at: field(8)?,
            end: field(16)?,
            root: body.get(24..56)?.try_into().ok()?,
        })
    }

    /// Names this full anchor in the `LOCK` file of `dir`. Not synced: one lost costs the
    /// next read of the log the whole log, and one that survives names an anchor that is
    /// there (it is written once the anchor is durable).
    pub(crate) fn write(&self, fs: &dyn FileSystem, dir: &Path) -> Result<()> {
        let mut bytes = FULL_MAGIC.to_vec();
        bytes.extend_from_slice(&self.at.to_le_bytes());
        bytes.extend_from_slice(&self.end.to_le_bytes());
        bytes.extend_from_slice(&self.root);
        write_in_lock(fs, dir, FULL_AT, &with_crc(bytes))
    }
}

/// The `len` bytes at `at` in the `LOCK` file of `dir` without their last four, if they
/// begin with `magic` and end with the CRC-32 of what comes before.
fn read_in_lock(
    fs: &dyn FileSystem,
    dir: &Path,
    at: u64,
    magic: &[u8; 8],
    len: usize,
) -> Option<Vec<u8>> {
    let bytes = read_prefix(fs, &dir.join(LOCK_FILE), at + len as u64).ok()?;
    let bytes = bytes.get(at as usize..)?;
    let (body, crc) = (bytes.get(..len - 4)?, bytes.get(len - 4..len)?);
    let whole = body.get(..8)? == magic && crc32fast::hash(body).to_le_bytes() == crc;
    whole.then(|| body.to_vec())
}

/// A hash of a folder's `names` (in the order listed), each with its length.
pub(crate) fn names_hash(names: &[String]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    for name in names {
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
    }
    *hasher.finalize().as_bytes()
}

/// `bytes` and their CRC-32 after them.
fn with_crc(mut bytes: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// Writes `bytes` at `at` in the `LOCK` file of `dir`, unsynced (the stamp and the full
/// anchor's name only spare work: see theirs).
fn write_in_lock(fs: &dyn FileSystem, dir: &Path, at: u64, bytes: &[u8]) -> Result<()> {
    let path = dir.join(LOCK_FILE);
    let file = fs
        .open(&path, OpenMode::Write)
        .map_err(context("opening", &path))?;
    file.write_at(bytes, at).map_err(context("writing", &path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_parse_only_when_exact() {
        let name = segment_name(0xdead, 3);
        assert_eq!(name, "000000000000dead-00000003.seg");
        assert_eq!(parse_segment_name(&name, SEGMENT_SUFFIX), Some((0xdead, 3)));
        assert_eq!(
            segment_temp_path(Path::new("d"), 0xdead, 3),
            Path::new("d/000000000000dead-00000003.seg.tmp")
        );
        for bad in [
            "000000000000DEAD-00000003.seg",
            "000000000000dead-00000000.seg",
            "000000000000dead-ffffffff.seg",
            "00000000000dead-00000003.seg",
            "+00000000000dead-00000003.seg",
            "000000000000dead-00000003.seg.bak",
            "000000000000dead_00000003.seg",
            "x.seg",
        ] {
            assert_eq!(parse_segment_name(bad, SEGMENT_SUFFIX), None, "{bad}");
        }
    }

    #[test]
    fn ids_parse_only_from_exact_key_names() {
        assert_eq!(
            parse_key_name("00000000000000ab.key", KEY_SUFFIX),
            Some(0xab)
        );
        assert_eq!(parse_key_name("00000000000000AB.key", KEY_SUFFIX), None);
        assert_eq!(parse_key_name("0000000000000ab.key", KEY_SUFFIX), None);
        assert_eq!(parse_key_name("00000000000000ab.key.tmp", KEY_SUFFIX), None);
    }

    #[test]
    fn kept_files_name_their_session() {
        assert_eq!(
            kept_session_id("00000000000000ab-00000001.seg.1"),
            Some(0xab)
        );
        assert_eq!(kept_session_id("4000000000000000-00000001.seg"), None);
        assert_eq!(kept_session_id("ab-00000001.seg"), None);
    }
}

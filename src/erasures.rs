//! Erasure: the removal of an erased session's files (data key, traces, segments), and the
//! erasure log, `ERASED`: one record for each erasure, so that the event log says that an
//! erasure happened (when, and which session id) once the erased events themselves are gone.
//! It says nothing of what was erased: no key, no message.
//!
//! ```text
//! // Format: { seq: u64 | ts_micros: i64 | session_id: u64 | kind: u32 | crc: u32 }
//! ```
//!
//! 32 bytes a record, little-endian; `crc` is the CRC-32 of the 28 bytes before it. `kind` 0: the
//! whole session was erased (a delete past its undo window, `erase_session`); 1: the session's
//! history before a compaction was erased (cleared messages past their undo window); 2: the
//! sequence numbers from `session_id` (here a sequence number) up to the record's own name no
//! event: open found them reserved but not on disk (a crash took what had them). `seq` is a
//! store-wide sequence number like any event's.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::compaction;
use crate::error::{Error, Result};
use crate::fs::{append_durably, context, sync_dir, FileSystem, OpenMode};
use crate::keyring::Keyring;
use crate::layout::{
    erased_path, kept_session_id, ARCHIVE_DIR, NUMBER_LIMIT, QUARANTINE_DIR, SEGMENT_TEMP_SUFFIX,
    TORN_INFIX,
};
use crate::report::{Finding, RecoveryReport};
use crate::segment;
use crate::torn_tail::cut_log_tail;

/// Bytes of one record.
pub const RECORD_LEN: usize = 32;

/// One record of the log: an erasure, or a gap in the sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Erasure {
    /// Its sequence number.
    pub seq: u64,
    /// When, µs since the epoch.
    pub ts_micros: i64,
    /// What it records.
    pub what: Logged,
}

/// What a record of the erasure log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logged {
    /// The whole session with this id was erased.
    Session(u64),
    /// The history of the session with this id before a compaction was erased.
    History(u64),
    /// The sequence numbers from this one up to the record's own name no event.
    Gap(u64),
}

impl Erasure {
    /// The session erased, whole (`true`) or its history (`false`); `None` for a gap.
    pub fn erased(&self) -> Option<(u64, bool)> {
        match self.what {
            Logged::Session(id) => Some((id, true)),
            Logged::History(id) => Some((id, false)),
            Logged::Gap(_) => None,
        }
    }
}

impl Erasure {
    fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0; RECORD_LEN];
        out[0..8].copy_from_slice(&self.seq.to_le_bytes());
        out[8..16].copy_from_slice(&self.ts_micros.to_le_bytes());
        let (field, kind): (u64, u32) = match self.what {
            Logged::Session(id) => (id, 0),
            Logged::History(id) => (id, 1),
            Logged::Gap(from) => (from, 2),
        };
        out[16..24].copy_from_slice(&field.to_le_bytes());
        out[24..28].copy_from_slice(&kind.to_le_bytes());
        let crc = crc32fast::hash(&out[..28]);
        out[28..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Erasure> {
        let bytes: &[u8; RECORD_LEN] = bytes.try_into().ok()?;
        let field = |at: usize| -> [u8; 8] {
            let mut out = [0; 8];
            out.copy_from_slice(&bytes[at..at + 8]);
            out
        };
        let mut tail = [0; 4];
        tail.copy_from_slice(&bytes[28..]);
        if crc32fast::hash(&bytes[..28]) != u32::from_le_bytes(tail) {
            return None;
        }
        let mut kind = [0; 4];
        kind.copy_from_slice(&bytes[24..28]);
        let seq = u64::from_le_bytes(field(0));
        let number = u64::from_le_bytes(field(16));
        // The store never comes near these numbers: a record holding one is not sound.
        if seq >= NUMBER_LIMIT || number >= NUMBER_LIMIT {
            return None;
        }
        let what = match u32::from_le_bytes(kind) {
            0 => Logged::Session(number),
            1 => Logged::History(number),
            // A gap ends just before the record that logs it.
            2 if number < seq => Logged::Gap(number),
            _ => return None,
        };
        Some(Erasure {
            seq,
            ts_micros: i64::from_le_bytes(field(8)),
            what,
        })
    }
}

/// What the log holds: its good records, where the next one goes, and the offsets of bad
/// records with good ones after them (damage, kept and skipped).
pub struct Log {
    /// The sound records, in the order written.
    pub erasures: Vec<Erasure>,
    /// Where the next record goes: the end of the last sound record. Bytes after it are what
    /// a crash left of an append (a record cut short, or whole but not sound).
    pub good_len: u64,
    /// The file's length.
    pub file_len: u64,
    /// Offsets of records that are not sound but have a sound record after them.
    pub damaged: Vec<u64>,
    /// How many more bad records with a sound one after them there are than `damaged` lists.
    pub damaged_more: u64,
}

impl Log {
    /// The highest sequence number in the log (0 if none).
    pub fn max_seq(&self) -> u64 {
        self.erasures.iter().map(|e| e.seq).max().unwrap_or(0)
    }

    /// Session ids whose whole-session erasure is logged.
    pub fn erased_sessions(&self) -> HashSet<u64> {
        self.erasures
            .iter()
            .filter_map(|e| match e.what {
                Logged::Session(id) => Some(id),
                _ => None,
            })
            .collect()
    }
}

/// The longest tail a crash can leave after the log's last sound record (one record cut short,
/// with room for a file system's zero fill of a page).
const TORN_TAIL_MAX: u64 = 64 << 10;

/// Most bad records [`read`] lists by offset; any more are only counted.
const DAMAGED_LISTED: usize = 64;

/// Reads the log of the store in `dir`: every sound record, skipping (and listing) bad ones
/// that have a sound one after them. It reads through a bounded buffer, so a log extended far
/// past its records (zero fill, a sparse file) costs time, never memory.
pub fn read(fs: &dyn FileSystem, dir: &Path) -> Result<Log> {
    let path = erased_path(dir);
    let mut log = Log {
        erasures: Vec::new(),
        good_len: 0,
        file_len: 0,
        damaged: Vec::new(),
        damaged_more: 0,
    };
    if !fs.exists(&path) {
        return Ok(log);
    }
    let file = fs
        .open(&path, OpenMode::Read)
        .map_err(context("opening", &path))?;
    log.file_len = file.size().map_err(context("reading", &path))?;
    let whole = log.file_len - log.file_len % RECORD_LEN as u64;
    // Bad records since the last sound one: damage if a sound one follows, else a torn append.
    let mut pending = Vec::new();
    let mut pending_more = 0u64;
    let chunk_len = usize::try_from(whole).map_or(RECORD_LEN << 15, |w| w.min(RECORD_LEN << 15));
    let mut chunk = vec![0; chunk_len];
    let mut at = 0;
    while at < whole {
        let n = usize::try_from(whole - at).map_or(chunk.len(), |left| left.min(chunk.len()));
        let bytes = &mut chunk[..n];
        file.read_at(bytes, at).map_err(context("reading", &path))?;
        for (i, record) in bytes.chunks_exact(RECORD_LEN).enumerate() {
            let offset = at + (i * RECORD_LEN) as u64;
            match Erasure::decode(record) {
                Some(erasure) => {
                    log.erasures.push(erasure);
                    log.good_len = offset + RECORD_LEN as u64;
                    let room = DAMAGED_LISTED.saturating_sub(log.damaged.len());
                    let listed = pending.len().min(room);
                    log.damaged_more += (pending.len() - listed) as u64 + pending_more;
                    log.damaged.extend(pending.drain(..).take(listed));
                    pending_more = 0;
                }
                None if log.damaged.len() + pending.len() < DAMAGED_LISTED => pending.push(offset),
                None => pending_more += 1,
            }
        }
        at += n as u64;
    }
    Ok(log)
}

/// Appends `erasure` to the log at `at` (the end of its good records) and syncs it; returns
/// the new end. Durable before the erasure starts, so that the log never misses one.
pub fn append(fs: &dyn FileSystem, dir: &Path, at: u64, erasure: &Erasure) -> Result<u64> {
    // The record must be on disk (and a new log's name) before the erased files start to go.
    append_durably(fs, &erased_path(dir), at == 0, |file| {
        file.write_at(&erasure.encode(), at)
    })?;
    Ok(at + RECORD_LEN as u64)
}

/// The erasure log (`ERASED`) as open found it: where the next record goes, the highest
/// sequence number in it, and the sessions whose erasure it holds.
pub(crate) struct ErasureLog {
    end: u64,
    /// The file's length: longer than `end` when a crash tore an append.
    file_len: u64,
    pub max_seq: u64,
    /// The highest sequence number of an erasure in it (a gap's left out): a checkpoint written
    /// before it may hold what was erased.
    pub last_erasure_seq: u64,
    /// One more than the highest session id erased: a new session never takes an erased
    /// session's id, so each id in the log names one session.
    pub next_id: u64,
    erased: std::collections::HashSet<u64>,
    /// (session id, seq) of each logged erasure of a session's history by a compaction.
    histories: Vec<(u64, u64)>,
}

impl ErasureLog {
    /// Reads the log, changing nothing; a bad record with sound ones after it is reported as
    /// damage (and skipped).
    pub(crate) fn open(
        fs: &dyn FileSystem,
        dir: &Path,
        report: &mut RecoveryReport,
    ) -> Result<ErasureLog> {
        let log = read(fs, dir)?;
        for (i, &offset) in log.damaged.iter().enumerate() {
            let mut reason =
                String::from("erasure record fails its checksum; the records after it are read");
            if i + 1 == log.damaged.len() && log.damaged_more > 0 {
                reason += &format!(" ({} more bad records are not listed)", log.damaged_more);
            }
            report.findings.push(Finding::Damaged {
                key: None,
                path: erased_path(dir),
                offset,
                reason,
                quarantined: Vec::new(),
            });
        }
        Ok(ErasureLog {
            end: log.good_len,
            file_len: log.file_len,
            max_seq: log.max_seq(),
            last_erasure_seq: log
                .erasures
                .iter()
                .filter(|e| e.erased().is_some())
                .map(|e| e.seq)
                .max()
                .unwrap_or(0),
            next_id: log
                .erasures
                .iter()
                .filter_map(|e| e.erased())
                .map(|(id, _)| id.saturating_add(1))
                .max()
                .unwrap_or(1),
            erased: log.erased_sessions(),
            histories: log
                .erasures
                .iter()
                .filter_map(|e| match e.what {
                    Logged::History(id) => Some((id, e.seq)),
                    _ => None,
                })
                .collect(),
        })
    }

    /// A writable open, once it knows it will go on: saves what a crash left of an append to
    /// a side file and cuts it off, so that the next record follows the last sound one.
    pub(crate) fn repair(
        &mut self,
        fs: &dyn FileSystem,
        dir: &Path,
        report: &mut RecoveryReport,
    ) -> Result<()> {
        if self.file_len > self.end {
            let path = erased_path(dir);
            let tail = self.file_len - self.end;
            if tail > TORN_TAIL_MAX {
                // No crash leaves this much (appends are synced one record at a time): the
                // file was extended or overwritten. It is the store's authority on erasure,
                // so it is neither cut nor set aside; open stops and says so.
                return Err(Error::Corrupt {
                    path,
                    offset: self.end,
                    reason: format!(
                        "{tail} bytes after the last sound erasure record, more than an \
                         unfinished append leaves; once you have checked what they hold, cut \
                         the file to {} bytes",
                        self.end
                    ),
                });
            }
            cut_log_tail(fs, &path, self.end, report)?;
            self.file_len = self.end;
        }
        Ok(())
    }

    /// Every session the log holds the erasure of.
    #[cfg(feature = "replication")]
    pub(crate) fn erased_ids(&self) -> std::collections::BTreeSet<u64> {
        self.erased.iter().copied().collect()
    }

    /// Every erasure of a session's history the log holds: (session id, sequence number).
    #[cfg(feature = "replication")]
    pub(crate) fn erased_histories(&self) -> Vec<(u64, u64)> {
        self.histories.clone()
    }

    /// True when the log holds the erasure of session `id` (whole).
    pub(crate) fn holds(&self, id: u64) -> bool {
        self.erased.contains(&id)
    }

    /// Logs the erasure of session `id` with the next sequence number, unless the log holds
    /// it already (an erasure a crash interrupted after it was logged).
    pub(crate) fn log(
        &mut self,
        fs: &dyn FileSystem,
        dir: &Path,
        id: u64,
        next_seq: &mut u64,
    ) -> Result<()> {
        if self.erased.contains(&id) {
            return Ok(());
        }
        self.append(fs, dir, id, true, next_seq)
    }

    /// Logs the erasure of session `id`'s history by the compaction whose snapshot has
    /// sequence number `snapshot_seq`, unless the log holds it already (the running store logs
    /// it after the snapshot, so with a greater sequence number).
    pub(crate) fn log_history(
        &mut self,
        fs: &dyn FileSystem,
        dir: &Path,
        id: u64,
        snapshot_seq: u64,
        next_seq: &mut u64,
    ) -> Result<()> {
        if self
            .histories
            .iter()
            .any(|&(logged, seq)| logged == id && seq > snapshot_seq)
        {
            return Ok(());
        }
        self.append(fs, dir, id, false, next_seq)
    }

    /// Logs an erasure with the next sequence number, which it then takes.
    fn append(
        &mut self,
        fs: &dyn FileSystem,
        dir: &Path,
        id: u64,
        whole_session: bool,
        next_seq: &mut u64,
    ) -> Result<()> {
        let what = if whole_session {
            Logged::Session(id)
        } else {
            Logged::History(id)
        };
        self.record_now(fs, dir, what, next_seq)
    }

    /// Appends a record of `what`, now, with the number `*next_seq`, and moves that on.
    fn record_now(
        &mut self,
        fs: &dyn FileSystem,
        dir: &Path,
        what: Logged,
        next_seq: &mut u64,
    ) -> Result<()> {
        let erasure = Erasure {
            seq: *next_seq,
            ts_micros: chrono::Utc::now().timestamp_micros(),
            what,
        };
        self.record(fs, dir, &erasure)?;
        *next_seq += 1;
        Ok(())
    }

    /// Logs that the sequence numbers from `found` (one past the highest on disk) up to
    /// `*next_seq` (the floor: none at or above it was handed out) name no event, with the
    /// number `*next_seq` itself, unless there is no such gap.
    pub(crate) fn log_gap(
        &mut self,
        fs: &dyn FileSystem,
        dir: &Path,
        found: u64,
        next_seq: &mut u64,
    ) -> Result<()> {
        if found >= *next_seq {
            return Ok(());
        }
        self.record_now(fs, dir, Logged::Gap(found), next_seq)
    }

    /// Appends `erasure` to the log, durably (open's erasures, and the running store's).
    pub(crate) fn record(
        &mut self,
        fs: &dyn FileSystem,
        dir: &Path,
        erasure: &Erasure,
    ) -> Result<()> {
        self.end = append(fs, dir, self.end, erasure)?;
        self.max_seq = self.max_seq.max(erasure.seq);
        if erasure.erased().is_some() {
            self.last_erasure_seq = self.last_erasure_seq.max(erasure.seq);
        }
        match erasure.what {
            Logged::Session(id) => {
                self.next_id = self.next_id.max(id.saturating_add(1));
                self.erased.insert(id);
            }
            Logged::History(id) => {
                self.next_id = self.next_id.max(id.saturating_add(1));
                self.histories.push((id, erasure.seq));
            }
            Logged::Gap(_) => {}
        }
        Ok(())
    }
}

/// Erases a deleted session's files: in an encrypted store its data key first (`keys`), which
/// makes every copy of its bytes unreadable at once; then its traces (archived, quarantined
/// and side files, and the other names of its `segments` kept in a fork's archive), then its
/// `segments`, oldest first. In this order a crash part way leaves a segment holding the
/// delete record (or, encrypted, the erasure's marker), from which open finishes the erasure;
/// the other order could strand an archive that nothing leads back to.
pub fn erase_session_files(
    fs: &dyn FileSystem,
    dir: &Path,
    keys: Option<&Keyring>,
    session_id: u64,
    segments: Range<u32>,
    in_folder: InFolder<'_>,
) -> Result<Vec<PathBuf>> {
    if let Some(keys) = keys {
        keys.destroy_key(session_id)?;
    }
    let mut gone = erase_traces(fs, dir, session_id, Some(segments.end), in_folder)?;
    gone.extend(compaction::retire(
        fs,
        dir,
        session_id,
        segments.start,
        segments.end,
        compaction::Disposal::Remove,
    )?);
    if let Some(keys) = keys {
        keys.erased(session_id)?;
    }
    Ok(gone)
}

/// Where an erasure finds a session's traces in the store's folder.
#[derive(Debug, Clone, Copy)]
pub enum InFolder<'a> {
    /// By listing the folder.
    Listed,
    /// Among these names, which the caller knows to be all the folder's traces of the
    /// session (from an earlier listing): the folder, which holds every session's
    /// segments, is not listed again.
    Known(&'a [String]),
}

/// A side file of a torn tail, or a compaction's output before its rename: in the store's
/// folder, a session's traces besides its segments.
pub fn is_trace(name: &str) -> bool {
    name.contains(TORN_INFIX) || name.ends_with(SEGMENT_TEMP_SUFFIX)
}

/// Every session's traces in the store's folder ([`is_trace`]), their names by session id,
/// from one listing: what [`InFolder::Known`] is given.
pub fn traces_by_session(fs: &dyn FileSystem, dir: &Path) -> Result<HashMap<u64, Vec<String>>> {
    let mut by_id: HashMap<u64, Vec<String>> = HashMap::new();
    for entry in fs.list(dir).map_err(context("listing", dir))? {
        let Some(name) = entry.name.to_str().filter(|_| entry.is_file) else {
            continue;
        };
        if let Some(id) = is_trace(name).then(|| kept_session_id(name)).flatten() {
            by_id.entry(id).or_default().push(name.to_owned());
        }
    }
    Ok(by_id)
}

/// Removes every trace of session `session_id` outside its segments: the side files of its
/// torn tails and the output of a compaction of it that failed and could not be removed then
/// (in the store's folder, found as `in_folder` says), and its archived and quarantined files.
/// With `links_below`, also the other names in `archive/` and `quarantine/` of its segments
/// below that number ([`is_link_to`]). Returns what it removed.
pub fn erase_traces(
    fs: &dyn FileSystem,
    dir: &Path,
    session_id: u64,
    links_below: Option<u32>,
    in_folder: InFolder<'_>,
) -> Result<Vec<PathBuf>> {
    let prefix = format!("{session_id:016x}-");
    // In the store's folder only side files and a compaction's output whose removal failed
    // (it holds the session's messages): its segments are retired on their own.
    let ours = |name: &str| name.starts_with(&prefix) && is_trace(name);
    let in_main = match in_folder {
        InFolder::Listed => chosen_in(fs, dir, |name, _| ours(name))?,
        InFolder::Known(names) => (names.iter())
            .filter(|name| ours(name))
            .map(|name| dir.join(name))
            .collect(),
    };
    let mut gone = remove_in(fs, dir, in_main)?;
    // Every file is chosen before any goes: a link is told by its link count, which the
    // session's own names removed here would lower.
    let kept = [dir.join(ARCHIVE_DIR), dir.join(QUARANTINE_DIR)];
    let chosen: Vec<Vec<PathBuf>> = (kept.iter())
        .map(|folder| {
            chosen_in(fs, folder, |name, path| {
                name.starts_with(&prefix)
                    || links_below
                        .is_some_and(|below| is_link_to(fs, name, path, session_id, below))
            })
        })
        .collect::<Result<_>>()?;
    for (folder, paths) in kept.iter().zip(chosen) {
        gone.extend(remove_in(fs, folder, paths)?);
    }
    Ok(gone)
}

/// Whether the file `name` at `path`, in `archive/` or `quarantine/`, is another name of a
/// segment of session `session_id` numbered below `below` (archived ones included): a fork's
/// shared segment (a hard link to its source's) that went there under the fork's id when the
/// fork was compacted with `keep_history`, or was quarantined. It holds the session's bytes,
/// records past the fork point included, and erasure wins over the fork's history. Told by a
/// link count above one and a header naming the session and such a segment; a header that
/// cannot be read says no. (An encrypted store's fork copies instead of linking.)
fn is_link_to(fs: &dyn FileSystem, name: &str, path: &Path, session_id: u64, below: u32) -> bool {
    // Any name under another id (a second file of a number is kept as `….seg.1`).
    if kept_session_id(name).is_none_or(|id| id == session_id)
        || !fs.link_count(path).is_ok_and(|n| n > 1)
    {
        return false;
    }
    let header = segment::read_header(fs, path, None)
        .ok()
        .and_then(Result::ok);
    header.is_some_and(|(h, _)| h.session_id == session_id && h.segment < below)
}

/// The files in `folder` that `chosen` picks (given each one's name and path); none when
/// there is no such folder.
fn chosen_in(
    fs: &dyn FileSystem,
    folder: &Path,
    mut chosen: impl FnMut(&str, &Path) -> bool,
) -> Result<Vec<PathBuf>> {
    if !fs.is_dir(folder) {
        return Ok(Vec::new());
    }
    let listed = fs.list(folder).map_err(context("listing", folder))?;
    Ok((listed.iter())
        .filter_map(|entry| entry.name.to_str().filter(|_| entry.is_file))
        .map(|name| (name, folder.join(name)))
        .filter(|(name, path)| chosen(name, path))
        .map(|(_, path)| path)
        .collect())
}

/// Removes `paths`, all in `folder` (one gone already is passed over), then syncs the folder
/// if it removed any: an erasure must not come back after a crash. Returns what it removed.
fn remove_in(fs: &dyn FileSystem, folder: &Path, paths: Vec<PathBuf>) -> Result<Vec<PathBuf>> {
    let mut gone = Vec::new();
    for path in paths {
        match fs.remove_file(&path) {
            Ok(()) => gone.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(context("removing", &path)(e)),
        }
    }
    if !gone.is_empty() {
        sync_dir(fs, folder)?;
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::read_all;

    #[test]
    fn a_bad_record_between_sound_ones_is_skipped_and_a_bad_tail_is_torn() {
        let fs = crate::fs::StdFs;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let record = |seq| Erasure {
            seq,
            ts_micros: 0,
            what: Logged::Session(seq),
        };
        let mut end = 0;
        for seq in 1..=3 {
            end = append(&fs, dir, end, &record(seq)).unwrap();
        }
        let mut bytes = read_all(&fs, &erased_path(dir)).unwrap();
        bytes[RECORD_LEN + 3] ^= 1; // the middle record
        bytes.extend_from_slice(&[7; RECORD_LEN + 5]); // a torn append after the last
        std::fs::write(erased_path(dir), &bytes).unwrap();
        let log = read(&fs, dir).unwrap();
        assert_eq!(log.erasures, vec![record(1), record(3)]);
        assert_eq!(log.damaged, vec![RECORD_LEN as u64]);
        assert_eq!(log.good_len, 3 * RECORD_LEN as u64);
        assert_eq!(log.file_len, bytes.len() as u64);
    }

    #[test]
    fn records_round_trip_and_any_flipped_bit_is_refused() {
        for what in [
            Logged::Session(0xabc),
            Logged::History(0xabc),
            Logged::Gap(7),
        ] {
            let e = Erasure {
                seq: 42,
                ts_micros: -7,
                what,
            };
            let bytes = e.encode();
            assert_eq!(Erasure::decode(&bytes), Some(e));
            for bit in 0..RECORD_LEN * 8 {
                let mut bad = bytes;
                bad[bit / 8] ^= 1 << (bit % 8);
                assert_eq!(Erasure::decode(&bad), None, "bit {bit}");
            }
        }
        assert_eq!(Erasure::decode(&[0; 31]), None);
        // Numbers the store never reaches make a record unsound, CRC or not.
        for (seq, session_id) in [(NUMBER_LIMIT, 1), (1, NUMBER_LIMIT), (u64::MAX, 1)] {
            let e = Erasure {
                seq,
                ts_micros: 0,
                what: Logged::Session(session_id),
            };
            assert_eq!(Erasure::decode(&e.encode()), None);
        }
        // A gap ends before the record that logs it.
        for from in [42, 43, 100] {
            let e = Erasure {
                seq: 42,
                ts_micros: 0,
                what: Logged::Gap(from),
            };
            assert_eq!(Erasure::decode(&e.encode()), None);
        }
    }
}

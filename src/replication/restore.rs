//! Restore: the batches of a prefix applied in order into a new folder, up to the point asked
//! for, each segment then cut after the last record at or before it; and, for a restore that
//! is to ship on, the prefix taken over under a new generation. Opening and verifying the
//! result is the caller's (`store/replicating.rs`).

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};

use super::batch::{self, Shipped, LOG_DIR};
use super::bucket::{Bucket, Created};
use super::shipper::{apply, gen_key, newest_generation};
use super::state::State;
use super::Replication;
use crate::error::{Error, Result};
use crate::fs::{context, subfolder, sync_dir, FileSystem, OpenMode};
use crate::keyring::Keyring;
use crate::layout::{segment_path, KEYS_DIR};
use crate::reader::{ReadPolicy, SegmentReader, SegmentRef};
use crate::record::{decode_event, open_payload, Event};
use crate::segment::{read_header, SegmentKind};

/// The point a restore rebuilds the store at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestorePoint {
    /// Everything the bucket holds.
    Latest,
    /// Right after the record with this sequence number.
    Seq(u64),
    /// Right after the last record written at or before this time.
    Time(DateTime<Utc>),
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RestoreReport {
    /// Batches read.
    pub batches: u64,
    /// Bytes of files written from them.
    pub bytes: u64,
    /// The highest sequence number the restored store holds records up to.
    pub seq: u64,
    /// Sessions in the restored store (live ones).
    pub sessions: usize,
    /// With `take_over`: the generation the restored store now ships under (0 otherwise).
    pub generation: u64,
}

/// What [`fetch`] left in the folder: the state of a store that shipped exactly it.
pub(crate) struct Fetched {
    pub state: State,
    pub batches: u64,
    pub bytes: u64,
}

/// Writes the batches of `from` into `dir` (which must be missing or empty) up to `point`,
/// then cuts each segment after the last record at or before it, its header opened with the
/// keys `keys` gives (an encrypted store's, once the batches put its key files in place).
/// `progress(done, total)` counts batches.
pub(crate) fn fetch(
    from: &Replication,
    fs: &dyn FileSystem,
    dir: &Path,
    point: RestorePoint,
    keys: &dyn Fn() -> Result<Option<Keyring>>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Fetched> {
    let bucket = Bucket::connect(from)?;
    let numbers: Vec<u64> = (bucket.list(LOG_DIR)?.iter())
        .filter_map(|(name, _)| batch::parse_key(name))
        .collect();
    if numbers.is_empty() {
        return Err(Error::Replication {
            target: from.url.clone(),
            reason: "the prefix holds no batch to restore".into(),
        });
    }
    let mut state = State {
        target: from.url.clone(),
        ..State::default()
    };
    let (mut batches, mut bytes) = (0, 0);
    let mut written = std::collections::BTreeSet::new();
    // For a time: once a shipment reaches it, the next one too (its ranges only): a record
    // stamped at or before the time may have been committed just after the capture that
    // reached it. The cut then keeps what is at or before the time.
    let mut reached_at: Option<u64> = None;
    let mut pending: Vec<String> = Vec::new();
    for &number in &numbers {
        let key = batch::key(number);
        let object = bucket.read(&key)?;
        let bad = |reason: String| Error::Replication {
            target: from.url.clone(),
            reason: format!("{key}: {reason}"),
        };
        let (header, data) = batch::decode(&object).map_err(bad)?;
        if header.number != number {
            return Err(bad(format!("it says it is batch {}", header.number)));
        }
        for (range, bytes_of) in header.ranges.iter().zip(&data) {
            write_range(fs, dir, &range.name, range.offset, range.fresh, bytes_of)?;
            written.insert(range.name.clone());
            bytes += range.len;
        }
        // Only the last batch of a shipment moves seq_end on: the others complete nothing.
        let completes = header.seq_end > state.seq_end;
        let reached = completes
            && match point {
                RestorePoint::Latest => false,
                RestorePoint::Seq(seq) => header.seq_end >= seq,
                RestorePoint::Time(time) => header.time_micros >= time.timestamp_micros(),
            };
        // Removals count once their shipment is complete (a split one names them in any of
        // its batches). The shipment that reaches the point (or follows it) may hold removals
        // made after it (a compaction's old segments): those files stay, and the cut decides
        // by their records.
        pending.extend(header.removed.iter().cloned());
        if completes && !reached && reached_at.is_none() {
            remove_all(fs, dir, &mut pending)?;
        }
        state.generation = state.generation.max(header.generation);
        apply(&mut state, &header);
        batches += 1;
        progress(batches, numbers.len() as u64);
        match (reached_at, point) {
            (Some(seq_end), _) if header.seq_end > seq_end => break,
            (Some(_), _) => {}
            (None, RestorePoint::Time(_)) if reached => reached_at = Some(header.seq_end),
            (None, _) if reached => break,
            (None, _) => {}
        }
    }
    if point == RestorePoint::Latest {
        remove_all(fs, dir, &mut pending)?;
    } else {
        let keys = keys()?;
        state.seq_end = cut(fs, dir, point, keys.as_ref(), state.seq_end)?;
    }
    // Each file once, then the names: the restore says done only once it is on disk.
    for name in &written {
        let path = dir.join(name);
        if fs.exists(&path) {
            let file = fs
                .open(&path, OpenMode::Read)
                .map_err(context("opening", &path))?;
            file.sync().map_err(context("syncing", &path))?;
        }
    }
    if fs.is_dir(&dir.join(KEYS_DIR)) {
        sync_dir(fs, &dir.join(KEYS_DIR))?;
    }
    sync_dir(fs, dir)?;
    Ok(Fetched {
        state,
        batches,
        bytes,
    })
}

/// Removes the files `names` names from `dir` (those there), and empties the list.
fn remove_all(fs: &dyn FileSystem, dir: &Path, names: &mut Vec<String>) -> Result<()> {
    for name in names.drain(..) {
        let path = dir.join(&name);
        if fs.exists(&path) {
            fs.remove_file(&path).map_err(context("removing", &path))?;
        }
    }
    Ok(())
}

/// Writes one range to its file in `dir`, emptying the file first if `fresh` (synced by the
/// caller once every batch is written).
fn write_range(
    fs: &dyn FileSystem,
    dir: &Path,
    name: &str,
    offset: u64,
    fresh: bool,
    bytes: &[u8],
) -> Result<()> {
    if Shipped::of(name).is_none() {
        // Checked by the decoder; a name outside the store is never joined to the folder.
        return Err(Error::InvalidOptions {
            reason: format!("a batch names {name:?}"),
        });
    }
    if name.starts_with(KEYS_DIR) {
        subfolder(fs, dir, KEYS_DIR)?;
    }
    let path = dir.join(name);
    let mode = if fresh || !fs.exists(&path) {
        OpenMode::Truncate
    } else {
        OpenMode::Write
    };
    let file = fs.open(&path, mode).map_err(context("creating", &path))?;
    file.write_at(bytes, offset)
        .map_err(context("writing", &path))
}

/// Whether a record of sequence number `seq` written at `micros` is at or before `point`.
fn within(point: RestorePoint, seq: u64, micros: i64) -> bool {
    match point {
        RestorePoint::Latest => true,
        RestorePoint::Seq(at) => seq <= at,
        RestorePoint::Time(at) => micros <= at.timestamp_micros(),
    }
}

/// One segment of a session being cut.
struct Piece {
    number: u32,
    path: std::path::PathBuf,
    kind: SegmentKind,
    header_len: u64,
}

/// Leaves in `dir` each session as it was at `point`: a fork made after it goes whole (it
/// did not exist); a generation written after it (a compaction's or a repair's) goes with
/// every segment above it, and the newest one left replaces the segments below it, as open
/// would; then each segment is cut after its last record at or before the point, and what
/// holds none goes (a session whose first segment holds none did not exist yet). Returns the
/// highest sequence number kept (at most `seq_end`).
fn cut(
    fs: &dyn FileSystem,
    dir: &Path,
    point: RestorePoint,
    keys: Option<&Keyring>,
    seq_end: u64,
) -> Result<u64> {
    let mut sessions: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    for entry in fs.list(dir).map_err(context("listing", dir))? {
        let name = entry.name.to_string_lossy();
        if let Some(Shipped::Segment { session_id, number }) = Shipped::of(&name) {
            sessions.entry(session_id).or_default().push(number);
        }
    }
    let mut highest = 0;
    for (id, mut numbers) in sessions {
        numbers.sort_unstable();
        let key = keys.map(|k| k.data_key(id)).transpose()?;
        let mut pieces = Vec::with_capacity(numbers.len());
        for number in numbers {
            let path = segment_path(dir, id, number);
            let (header, header_len) = match read_header(fs, &path, key.as_deref())? {
                Ok(read) => read,
                Err(e) => {
                    return Err(Error::Corrupt {
                        path,
                        offset: 0,
                        reason: format!("a restored segment's header does not decode: {e:?}"),
                    })
                }
            };
            pieces.push(Piece {
                number,
                path,
                kind: header.kind,
                header_len: header_len as u64,
            });
        }
        let remove = |piece: &Piece| -> Result<()> {
            fs.remove_file(&piece.path)
                .map_err(context("removing", &piece.path))
        };
        let remove_session = |pieces: &[Piece]| -> Result<()> {
            pieces.iter().try_for_each(remove)?;
            let key_file = crate::layout::key_path(&dir.join(KEYS_DIR), id);
            if fs.exists(&key_file) {
                fs.remove_file(&key_file)
                    .map_err(context("removing", &key_file))?;
            }
            Ok(())
        };
        // When each generation and fork came to be: a later one did not exist at the point.
        let mut first_late = None;
        for (i, piece) in pieces.iter().enumerate() {
            let since = match piece.kind {
                SegmentKind::Forked => first_record(fs, piece)?,
                SegmentKind::Compacted | SegmentKind::Recovered => {
                    snapshot_of(fs, piece, key.as_deref())?
                }
                SegmentKind::Fresh => continue,
            };
            if since.is_some_and(|(seq, micros)| !within(point, seq, micros)) {
                first_late = Some((i, piece.kind));
                break;
            }
        }
        match first_late {
            Some((_, SegmentKind::Forked)) => {
                remove_session(&pieces)?;
                continue;
            }
            Some((i, _)) => {
                pieces.drain(i..).try_for_each(|p| remove(&p))?;
            }
            None => {}
        }
        if let Some(base) = (pieces.iter())
            .rposition(|p| matches!(p.kind, SegmentKind::Compacted | SegmentKind::Recovered))
        {
            pieces.drain(..base).try_for_each(|p| remove(&p))?;
        }
        let mut ended = false;
        for (i, piece) in pieces.iter().enumerate() {
            if ended {
                remove(piece)?;
                continue;
            }
            let segment = SegmentRef {
                number: piece.number,
                path: piece.path.clone(),
            };
            let mut reader = SegmentReader::new(segment, piece.header_len, None, ReadPolicy::SCAN);
            let (mut end, mut kept) = (piece.header_len, 0);
            while let Some(record) = reader.next(fs)? {
                if !within(point, record.frame.seq, record.frame.ts_micros) {
                    ended = true;
                    break;
                }
                end = record.offset + u64::from(record.len);
                highest = highest.max(record.frame.seq);
                kept += 1;
            }
            drop(reader);
            if kept == 0 && ended && i == 0 {
                // Nothing of the session existed at the point.
                remove_session(&pieces)?;
                break;
            } else if kept == 0 && ended {
                remove(piece)?;
            } else if ended {
                let file = fs
                    .open(&piece.path, OpenMode::Write)
                    .map_err(context("opening", &piece.path))?;
                file.set_len(end).map_err(context("cutting", &piece.path))?;
                file.sync().map_err(context("syncing", &piece.path))?;
            }
        }
    }
    Ok(match point {
        RestorePoint::Seq(at) => at.min(seq_end),
        _ => highest.min(seq_end),
    })
}

/// The sequence number and time of a segment's first record.
fn first_record(fs: &dyn FileSystem, piece: &Piece) -> Result<Option<(u64, i64)>> {
    let segment = SegmentRef {
        number: piece.number,
        path: piece.path.clone(),
    };
    let mut reader = SegmentReader::new(segment, piece.header_len, None, ReadPolicy::SCAN);
    Ok(reader
        .next(fs)?
        .map(|record| (record.frame.seq, record.frame.ts_micros)))
}

/// When a generation was written: its snapshot record's sequence number and time (the
/// records before it are copies of older ones).
fn snapshot_of(
    fs: &dyn FileSystem,
    piece: &Piece,
    key: Option<&crate::cipher::DataKey>,
) -> Result<Option<(u64, i64)>> {
    let segment = SegmentRef {
        number: piece.number,
        path: piece.path.clone(),
    };
    let mut reader = SegmentReader::new(segment, piece.header_len, None, ReadPolicy::SCAN);
    let mut scratch = Vec::new();
    while let Some(record) = reader.next(fs)? {
        let payload =
            open_payload(&record.frame, key, &mut scratch).map_err(|reason| Error::Corrupt {
                path: piece.path.clone(),
                offset: record.offset,
                reason,
            })?;
        if matches!(decode_event(payload), Ok(Event::Snapshot(_))) {
            return Ok(Some((record.frame.seq, record.frame.ts_micros)));
        }
    }
    Ok(None)
}

/// Takes the prefix over for the store restored in `dir`: a new generation's marker, then a
/// batch of it after the last one read, both created only if absent, so a store still shipping
/// there (or another restore) makes this fail instead of both writing. The store's state then
/// names the new generation. Returns it.
pub(crate) fn take_over(
    from: &Replication,
    fs: &dyn FileSystem,
    dir: &Path,
    fetched: &Fetched,
) -> Result<u64> {
    let bucket = Bucket::connect(from)?;
    let refused = |reason: String| Error::Fenced {
        target: from.url.clone(),
        reason,
    };
    let newest = newest_generation(&bucket)?
        .unwrap_or(0)
        .max(fetched.state.generation);
    let generation = newest + 1;
    let mut writer = [0u8; 8];
    crate::cipher::random(&mut writer)?;
    let mut header = batch::Header {
        generation,
        writer: u64::from_le_bytes(writer),
        number: fetched.state.next_batch,
        seq_end: fetched.state.seq_end,
        time_micros: Utc::now().timestamp_micros(),
        ..batch::Header::default()
    };
    // The state first: once the batch below is in the bucket, the restored store must know
    // it ships under this generation, whatever crash comes.
    let mut state = fetched.state.clone();
    state.generation = generation;
    state.writer = header.writer;
    state.next_batch = header.number + 1;
    state.write(fs, dir)?;
    // The batch claims the number the old store would write next: from now on its batches
    // are refused. Then the marker, which refuses it at its next open.
    let bytes = batch::encode(&mut header, &[]);
    if bucket.create(&batch::key(header.number), bytes)? == Created::Exists {
        State::remove(fs, dir)?;
        return Err(refused(
            "the store that shipped here wrote a batch after the restore read the prefix: \
             stop it, then restore again"
                .into(),
        ));
    }
    if bucket.create(&gen_key(generation), Vec::new())? == Created::Exists {
        State::remove(fs, dir)?;
        return Err(refused(format!(
            "another restore took generation {generation} at the same moment"
        )));
    }
    Ok(generation)
}

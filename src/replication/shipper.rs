//! The shipper: takes up a prefix for a store (or refuses a prefix another store holds), then
//! ships, at each call, what the store's files gained since the last batch, and takes erased
//! sessions' bytes out of the bucket.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;

use super::batch::{self, Header, Range, DATA_BYTES_MAX, LOG_DIR, PREFIX_LEN};
use super::bucket::{Bucket, Created};
use super::state::State;
use super::{Replication, ReplicationStatus};
use crate::error::{Error, Result};
use crate::fs::{context, FileSystem, OpenMode};
use crate::layout::{parse_hex, KEYS_DIR, STORE_CHECK_FILE};

/// The folder of the generation markers.
pub(super) const GEN_DIR: &str = "gen";

/// The key of generation `g`'s marker.
pub(super) fn gen_key(generation: u64) -> String {
    format!("{GEN_DIR}/{generation:016x}")
}

/// A file of the store as the store saw it when it took a [`Capture`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CapturedFile {
    /// Its name in the folder (`keys/…` for a key file).
    pub name: String,
    /// How many of its bytes are written and durable; `None` for a sealed segment, whose
    /// length is its file's.
    pub len: Option<u64>,
}

/// What the store holds, taken at one moment: every record up to `seq_end` is in `files`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Capture {
    /// When it was taken (before `seq_end`), µs since the epoch.
    pub time_micros: i64,
    pub seq_end: u64,
    pub files: Vec<CapturedFile>,
    /// Every session the erasure log names.
    pub erased: BTreeSet<u64>,
    /// Every erasure of a session's history before its last compaction the log names, as
    /// (session id, the erasure's sequence number, the session's oldest segment in force now):
    /// its segments below that one hold the erased history.
    pub histories: Vec<(u64, u64, u32)>,
}

/// What a shipment must send (see `Shipper::wanted`).
#[derive(Default)]
struct Wanted {
    ranges: Vec<Range>,
    /// Sealed files and their final lengths: held whole once the shipment is done.
    sealed: Vec<(String, u64)>,
    removed: Vec<String>,
    /// A file of the capture was gone when read: the shipment cannot vouch for its seq_end.
    vanished: bool,
}

/// How a try at a shipment ended.
enum Shipped {
    Done,
    /// The next batch's number was taken.
    Taken(u64),
}

/// The most header bytes a batch is filled with (the reader takes up to
/// `batch::HEADER_BYTES_MAX`).
const HEADER_BUDGET: u64 = 8 << 20;

fn store_check_name() -> String {
    format!("{KEYS_DIR}/{STORE_CHECK_FILE}")
}

/// Ships one store's files to one prefix.
pub(crate) struct Shipper {
    bucket: Bucket,
    state: State,
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    status: ReplicationStatus,
    /// `keys/STORE` is written again by every open: it is shipped whole once a process.
    store_check_shipped: bool,
}

/// A random number for this process's batches (`Header::writer`).
fn draw_writer() -> Result<u64> {
    let mut bytes = [0u8; 8];
    crate::cipher::random(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

impl Shipper {
    /// Reaches the bucket of `replication` and takes up shipping for the store in `dir`: under
    /// the generation its state names, or generation 1 for a prefix no store has used. Fails
    /// with [`Error::Fenced`] when another store holds the prefix (a newer generation, or
    /// batches of a store this one is not).
    pub(crate) fn start(
        replication: &Replication,
        fs: Arc<dyn FileSystem>,
        dir: &Path,
    ) -> Result<Shipper> {
        let bucket = Bucket::connect(replication)?;
        let target = replication.url.clone();
        let fenced = |reason: String| Error::Fenced {
            target: target.clone(),
            reason,
        };
        let newest_gen = newest_generation(&bucket)?;
        let writer = draw_writer()?;
        let state = match State::read(&*fs, dir)?.filter(|s| s.target == target) {
            None => {
                if newest_gen.is_some() || !bucket.list(LOG_DIR)?.is_empty() {
                    return Err(fenced(format!(
                        "the prefix holds another store's batches (generation {}); restore \
                         from it, or ship this store to another prefix",
                        newest_gen.unwrap_or(0)
                    )));
                }
                let state = State {
                    target: target.clone(),
                    generation: 1,
                    writer,
                    next_batch: 1,
                    ..State::default()
                };
                // Durable before the marker: a store whose marker is in the bucket must know
                // its generation after any crash.
                state.write(&*fs, dir)?;
                if bucket.create(&gen_key(1), Vec::new())? == Created::Exists {
                    // The state just written names a generation another store holds: it
                    // goes, or this store would take that store's batches for its own.
                    State::remove(&*fs, dir)?;
                    return Err(fenced(
                        "another store took up the prefix at the same moment".into(),
                    ));
                }
                state
            }
            Some(mut state) => {
                if newest_gen.is_some_and(|g| g > state.generation) {
                    return Err(fenced(format!(
                        "generation {} (a store restored from it) took the prefix over; this \
                         store shipped under generation {}",
                        newest_gen.unwrap_or(0),
                        state.generation
                    )));
                }
                bucket.create(&gen_key(state.generation), Vec::new())?;
                catch_up(&bucket, &mut state, &fenced)?;
                state.writer = writer;
                state.write(&*fs, dir)?;
                state
            }
        };
        let status = ReplicationStatus {
            target: target.clone(),
            shipped_seq: state.seq_end,
            generation: state.generation,
            ..ReplicationStatus::default()
        };
        Ok(Shipper {
            bucket,
            state,
            fs,
            dir: dir.to_path_buf(),
            status,
            store_check_shipped: false,
        })
    }

    /// How shipping stands.
    pub(crate) fn status(&self) -> &ReplicationStatus {
        &self.status
    }

    /// Ships what `capture` holds that the bucket does not, then takes newly erased sessions
    /// out of the bucket. The status says how it went.
    pub(crate) fn ship(&mut self, capture: &Capture) -> Result<()> {
        if self.status.fenced {
            return Err(self.fenced_error());
        }
        let result = self
            .ship_batches(capture)
            .and_then(|()| self.scrub(capture));
        match &result {
            Ok(()) => {
                self.status.bytes_behind = 0;
                self.status.last_error = None;
                self.status.last_shipped_at = Some(Utc::now());
            }
            Err(e) => {
                self.status.last_error = Some(e.to_string());
                self.status.fenced |= matches!(e, Error::Fenced { .. });
            }
        }
        self.status.shipped_seq = self.state.seq_end;
        result
    }

    fn fenced_error(&self) -> Error {
        Error::Fenced {
            target: self.bucket.target.clone(),
            reason: format!(
                "another store shipped a batch this store (generation {}) did not",
                self.state.generation
            ),
        }
    }

    /// What `capture`'s files hold that the bucket lacks: the ranges, the sealed files they
    /// finish (with their lengths), and the files the bucket holds that are gone from the
    /// folder (an erased session's are not named: `scrub` takes them out).
    fn wanted(&self, capture: &Capture) -> Result<Wanted> {
        let mut wanted = Wanted::default();
        let mut present = HashSet::with_capacity(capture.files.len());
        for file in &capture.files {
            present.insert(file.name.as_str());
            let shipped = self.state.files.get(&file.name).copied();
            let store_check = file.name == store_check_name();
            let len = match file.len {
                Some(len) => len,
                None if self.state.whole.contains(&file.name) => continue,
                // A sealed file: its length is final. (Part of it may have been shipped while
                // it grew: the rest goes now.)
                None => match self.fs.stat(&self.dir.join(&file.name)) {
                    Ok(stat) => {
                        wanted.sealed.push((file.name.clone(), stat.len));
                        stat.len
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        // An erased session's files go at once; any other segment was in the
                        // capture. (A key file holds no record.)
                        let segment = match batch::Shipped::of(&file.name) {
                            Some(batch::Shipped::Segment { session_id, .. }) => {
                                !capture.erased.contains(&session_id)
                            }
                            _ => false,
                        };
                        wanted.vanished |= segment;
                        continue;
                    }
                    Err(e) => return Err(context("examining", &self.dir.join(&file.name))(e)),
                },
            };
            let shipped = shipped.unwrap_or(0);
            let range = |offset: u64, fresh: bool| Range {
                name: file.name.clone(),
                offset,
                len: len - offset,
                fresh,
                crc: 0,
            };
            if (store_check && !self.store_check_shipped) || len < shipped {
                // Written anew (an open's key check; a file cut shorter than it was shipped).
                wanted.ranges.push(range(0, true));
            } else if len > shipped {
                wanted.ranges.push(range(shipped, false));
            }
        }
        for name in self.state.files.keys() {
            let erased = batch::session_of(name).is_some_and(|id| capture.erased.contains(&id));
            // Not in the capture, and gone from the folder: a session between the map and
            // the tombstones at the capture's moment is neither, and keeps its files.
            if !present.contains(name.as_str()) && !erased && !self.fs.exists(&self.dir.join(name))
            {
                wanted.removed.push(name.clone());
            }
        }
        Ok(wanted)
    }

    fn ship_batches(&mut self, capture: &Capture) -> Result<()> {
        // A batch whose number another writer took is read: if it is this store's (a put
        // that succeeded though its answer was lost), the state takes it and the shipment is
        // worked out again; another generation's fences this store.
        for _ in 0..3 {
            match self.ship_batches_once(capture)? {
                Shipped::Done => return Ok(()),
                Shipped::Taken(number) => {
                    let header = read_header(&self.bucket, number)?;
                    let ours = header.generation == self.state.generation
                        && header.writer == self.state.writer;
                    if !ours {
                        self.status.fenced = true;
                        return Err(self.fenced_error());
                    }
                    apply(&mut self.state, &header);
                    self.state.write(&*self.fs, &self.dir)?;
                }
            }
        }
        Err(Error::Replication {
            target: self.bucket.target.clone(),
            reason: "the next batch's number stays taken by this store's own batches".into(),
        })
    }

    fn ship_batches_once(&mut self, capture: &Capture) -> Result<Shipped> {
        let mut wanted = self.wanted(capture)?;
        self.status.bytes_behind = wanted.ranges.iter().map(|r| r.len).sum();
        if wanted.ranges.is_empty()
            && wanted.removed.is_empty()
            && capture.seq_end <= self.state.seq_end
        {
            // Nothing to send; sealed files the bucket already holds to their end are whole.
            if self.mark_whole(&wanted.sealed) {
                self.state.write(&*self.fs, &self.dir)?;
            }
            return Ok(Shipped::Done);
        }
        // Ranges past what one batch carries are split; the batches before the last complete
        // nothing new (their seq_end is the one before).
        let mut pieces: Vec<Range> = Vec::new();
        for range in std::mem::take(&mut wanted.ranges) {
            let mut offset = range.offset;
            let end = range.offset + range.len;
            let mut fresh = range.fresh;
            while offset < end || (fresh && range.len == 0) {
                let len = (end - offset).min(DATA_BYTES_MAX);
                pieces.push(Range {
                    offset,
                    len,
                    fresh,
                    ..range.clone()
                });
                offset += len;
                fresh = false;
            }
        }
        let mut pieces = pieces.into_iter().peekable();
        let mut removed = std::mem::take(&mut wanted.removed).into_iter().peekable();
        loop {
            let mut header = Header {
                generation: self.state.generation,
                writer: self.state.writer,
                number: self.state.next_batch,
                seq_end: self.state.seq_end,
                time_micros: capture.time_micros,
                ..Header::default()
            };
            let mut data: Vec<Vec<u8>> = Vec::new();
            let (mut size, mut header_size) = (0, 0);
            while let Some(next) = pieces.peek() {
                let full = size + next.len > DATA_BYTES_MAX || header_size > HEADER_BUDGET;
                if !header.ranges.is_empty() && full {
                    break;
                }
                let Some(piece) = pieces.next() else { break };
                match self.read_range(&piece)? {
                    Some(bytes) => {
                        size += piece.len;
                        header_size += piece.name.len() as u64 + 41;
                        header.ranges.push(piece);
                        data.push(bytes);
                    }
                    // Gone since the capture: this shipment completes nothing new.
                    None => wanted.vanished = true,
                }
            }
            while header_size <= HEADER_BUDGET {
                let Some(name) = removed.next() else { break };
                header_size += name.len() as u64 + 8;
                header.removed.push(name);
            }
            let last = pieces.peek().is_none() && removed.peek().is_none();
            if last && !wanted.vanished {
                header.seq_end = capture.seq_end.max(self.state.seq_end);
            }
            let slices: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
            let bytes = batch::encode(&mut header, &slices);
            if self.bucket.create(&batch::key(header.number), bytes)? == Created::Exists {
                return Ok(Shipped::Taken(header.number));
            }
            apply(&mut self.state, &header);
            if header.ranges.iter().any(|r| r.name == store_check_name()) {
                self.store_check_shipped = true;
            }
            if last {
                self.mark_whole(&wanted.sealed);
            }
            // What the bucket holds, before the next batch goes: a restarted store goes on
            // from here (or from the bucket, if this write is lost).
            self.state.write(&*self.fs, &self.dir)?;
            self.status.batches += 1;
            if last {
                return Ok(Shipped::Done);
            }
        }
    }

    /// Notes the sealed files the bucket holds to their end (`sealed`: name, final length) as
    /// whole; true if any was not yet.
    fn mark_whole(&mut self, sealed: &[(String, u64)]) -> bool {
        let mut marked = false;
        for (name, len) in sealed {
            let shipped = self.state.files.get(name).copied().unwrap_or(0);
            if shipped == *len && self.state.whole.insert(name.clone()) {
                self.state.files.insert(name.clone(), shipped);
                marked = true;
            }
        }
        marked
    }

    /// The bytes of `range` of its file; `None` if the file is gone.
    fn read_range(&self, range: &Range) -> Result<Option<Vec<u8>>> {
        let path = self.dir.join(&range.name);
        let file = match self.fs.open(&path, OpenMode::Read) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(context("opening", &path)(e)),
        };
        let len = usize::try_from(range.len)
            .map_err(|_| context("reading", &path)(std::io::ErrorKind::OutOfMemory.into()))?;
        let mut bytes = vec![0; len];
        file.read_at(&mut bytes, range.offset)
            .map_err(context("reading", &path))?;
        Ok(Some(bytes))
    }

    /// Takes the bytes of every session erased since the last call out of the bucket: each
    /// batch that holds any is written again without them.
    fn scrub(&mut self, capture: &Capture) -> Result<()> {
        let erased: BTreeSet<u64> = capture
            .erased
            .difference(&self.state.scrubbed)
            .copied()
            .collect();
        // Erased histories: the segments below the generation in force (a whole erasure of
        // the session covers them too).
        let histories: std::collections::HashMap<u64, u32> = (capture.histories.iter())
            .filter(|(id, seq, _)| {
                !self.state.scrubbed_histories.contains(&(*id, *seq))
                    && !capture.erased.contains(id)
            })
            .map(|&(id, _, oldest)| (id, oldest))
            .collect();
        if erased.is_empty() && histories.is_empty() {
            return Ok(());
        }
        let touches = |name: &str| match batch::Shipped::of(name) {
            Some(batch::Shipped::Segment { session_id, number }) => {
                erased.contains(&session_id)
                    || histories
                        .get(&session_id)
                        .is_some_and(|&oldest| number < oldest)
            }
            shipped => shipped
                .and_then(batch::Shipped::session)
                .is_some_and(|id| erased.contains(&id)),
        };
        for (name, _) in self.bucket.list(LOG_DIR)? {
            let Some(number) = batch::parse_key(&name) else {
                continue;
            };
            let key = batch::key(number);
            let header = read_header(&self.bucket, number)?;
            let holds = header.ranges.iter().any(|r| touches(&r.name))
                || header.removed.iter().any(|n| touches(n));
            if !holds {
                continue;
            }
            let bytes = self.bucket.read(&key)?;
            let (mut header, data) =
                batch::decode(&bytes).map_err(|reason| self.bad(&key, reason))?;
            let kept: Vec<(Range, &[u8])> = (header.ranges.drain(..).zip(data))
                .filter(|(r, _)| !touches(&r.name))
                .collect();
            header.removed.retain(|n| !touches(n));
            let (ranges, data): (Vec<Range>, Vec<&[u8]>) = kept.into_iter().unzip();
            header.ranges = ranges;
            self.bucket
                .overwrite(&key, batch::encode(&mut header, &data))?;
        }
        self.state.files.retain(|name, _| !touches(name));
        self.state.whole.retain(|name| !touches(name));
        self.state.scrubbed.extend(erased);
        self.state
            .scrubbed_histories
            .extend((capture.histories.iter()).map(|&(id, seq, _)| (id, seq)));
        self.state.write(&*self.fs, &self.dir)
    }

    fn bad(&self, key: &str, reason: String) -> Error {
        Error::Replication {
            target: self.bucket.target.clone(),
            reason: format!("{key}: {reason}"),
        }
    }
}

/// Batch `number`'s header, read by itself (two ranged reads).
pub(super) fn read_header(bucket: &Bucket, number: u64) -> Result<Header> {
    let key = batch::key(number);
    let bad = |reason: String| Error::Replication {
        target: bucket.target.clone(),
        reason: format!("{key}: {reason}"),
    };
    let prefix = bucket.read_range(&key, 0..PREFIX_LEN as u64)?;
    let (len, crc) = batch::header_span(&prefix).map_err(bad)?;
    let start = PREFIX_LEN as u64;
    let bytes = bucket.read_range(&key, start..start + len)?;
    let header = batch::decode_header(&bytes, crc).map_err(bad)?;
    if header.number != number {
        return Err(bad(format!("it says it is batch {}", header.number)));
    }
    Ok(header)
}

/// The highest generation whose marker the bucket holds.
pub(super) fn newest_generation(bucket: &Bucket) -> Result<Option<u64>> {
    Ok((bucket.list(GEN_DIR)?.iter())
        .filter_map(|(name, _)| parse_hex(name, 16))
        .filter(|&g| g < crate::layout::NUMBER_LIMIT)
        .max())
}

/// What a batch adds to the state.
pub(super) fn apply(state: &mut State, header: &Header) {
    for range in &header.ranges {
        state
            .files
            .insert(range.name.clone(), range.offset + range.len);
    }
    for name in &header.removed {
        state.files.remove(name);
        state.whole.remove(name);
    }
    // Below `NUMBER_LIMIT` (a batch's key is): never overflows.
    state.next_batch = header.number.saturating_add(1);
    state.seq_end = state.seq_end.max(header.seq_end);
}

/// Reads the batches after the state's (shipped by this store before a crash lost the
/// state's replacement) into it; one of another generation fences it.
fn catch_up(bucket: &Bucket, state: &mut State, fenced: &dyn Fn(String) -> Error) -> Result<()> {
    for (name, _) in bucket.list(LOG_DIR)? {
        let Some(number) = batch::parse_key(&name) else {
            continue;
        };
        if number < state.next_batch {
            continue;
        }
        let header = read_header(bucket, number)?;
        if header.generation != state.generation {
            return Err(fenced(format!(
                "batch {number} is of generation {}; this store ships under generation {}",
                header.generation, state.generation
            )));
        }
        if header.writer != state.writer {
            // Not what this store's last shipping process sent before its state was replaced:
            // another process ships under this generation (a copy of this store's folder).
            return Err(fenced(format!(
                "batch {number} was shipped by another process under this store's generation \
                 {} (a copy of this store's folder?)",
                state.generation
            )));
        }
        apply(state, &header);
    }
    Ok(())
}

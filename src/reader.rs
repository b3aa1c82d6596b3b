//! Reading a session's records back from its segment files, one record at a time through a
//! bounded buffer: the one reader that open's replay, the audit cursor and a fork's fold all
//! use, so that they agree on where a segment's records end and on what a fork shares.
//!
//! A [`SegmentReader`] walks one segment from the end of its header. It yields each good
//! record, then says how the segment ended: cleanly, or at a bad record that is *torn* (no good
//! record starts after it: what a crash mid-write leaves) or damage (a good record follows).
//! Records at or past a fork's cut are marked [`Record::shared`]: they are the source's, written
//! after the fork, and bad bytes there are the source's business, not this session's.
//!
//! Memory: the buffer holds one read of [`ReadPolicy::chunk`] bytes, or one record when a record
//! is longer (a record's length is checked against its own check and the payload limit before
//! anything is allocated for it). Telling a torn tail from damage looks through the rest of the
//! file a window at a time too, so a long tail costs time, never memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fs::{context, FileHandle, FileSystem, OpenMode};
use crate::layout::ARCHIVE_DIR;
use crate::record::{check_frame, frame_fields, Frame, FrameError, HEADER_LEN};
use crate::segment::{ScanEnd, SegmentHeader, SegmentKind};

/// One segment of a session, in the store's folder or in `archive/`.
#[derive(Debug, Clone)]
pub(crate) struct SegmentRef {
    pub number: u32,
    pub path: PathBuf,
}

/// How a reader reads its files.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadPolicy {
    /// The smallest read it makes.
    pub chunk: usize,
    /// Keep the segment's file open between reads (open's replay); otherwise every read opens
    /// it again, so that a reader that waits between records (an audit cursor, one of many)
    /// holds no descriptor.
    pub keep_open: bool,
    /// A segment missing from the folder is looked for in `archive/`: a compaction may have
    /// moved it there since it was listed (the audit cursor).
    pub follow_archive: bool,
    /// A bad record with more than this many bytes after it is damage without a look for a
    /// good record after it: no crash leaves such a tail, so the look (which costs time
    /// through the whole rest of the file) could only say damage too.
    pub tail_max: u64,
}

impl ReadPolicy {
    /// Open's replay and a fork's fold: one pass over each file, which nothing moves meanwhile.
    pub const SCAN: ReadPolicy = ReadPolicy {
        chunk: 1 << 20,
        keep_open: true,
        follow_archive: false,
        tail_max: u64::MAX,
    };
    /// The audit cursor: many at once, each waiting between records, beside a running store.
    pub const AUDIT: ReadPolicy = ReadPolicy {
        chunk: 64 << 10,
        keep_open: false,
        follow_archive: true,
        tail_max: u64::MAX,
    };
}

/// Where a fork's history ends in the segments it shares with its source.
///
/// A fork's segments below its (highest) forked segment are shared with its source: their
/// headers name the source, and of each segment just below a forked one only the first
/// `prev_len` bytes belong to the fork's history (`docs/FORMAT.md`, "Forks").
#[derive(Debug, Clone, Default)]
pub(crate) struct ForkCuts {
    /// The number of the highest forked segment.
    pub forked_at: Option<u32>,
    /// Segment number -> how many bytes of that segment belong to this history.
    pub cuts: HashMap<u32, u64>,
}

impl ForkCuts {
    /// The cuts of a session's segments, from their numbers and headers (`None`: unreadable),
    /// in order.
    pub fn of<'h>(headers: impl IntoIterator<Item = (u32, Option<&'h SegmentHeader>)>) -> ForkCuts {
        let mut forks = ForkCuts::default();
        for (number, header) in headers {
            if let Some(header) = header.filter(|h| h.kind == SegmentKind::Forked) {
                forks.forked_at = Some(number);
                if let Some(below) = number.checked_sub(1) {
                    forks.cuts.insert(below, header.prev_len);
                }
            }
        }
        forks
    }

    /// Segment `number` is the source's, below the fork.
    pub fn inherited(&self, number: u32) -> bool {
        self.forked_at.is_some_and(|f| number < f)
    }

    /// How many bytes of segment `number` belong to this history (`None`: all).
    pub fn cut(&self, number: u32) -> Option<u64> {
        self.cuts.get(&number).copied()
    }
}

/// A good record.
pub(crate) struct Record<'a> {
    /// Its offset in the segment.
    pub offset: u64,
    /// Its length, header included.
    pub len: u32,
    /// Its decoded frame.
    pub frame: Frame<'a>,
    /// Its bytes.
    pub bytes: &'a [u8],
    /// It lies at or past the fork's cut: the source's, written after the fork.
    pub shared: bool,
}

/// How a segment's records ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SegmentEnd {
    /// Every byte was a good record (or what follows the fork's cut is the source's).
    Clean,
    /// A bad record at `offset`. `torn`: no good record starts after it, which is what a
    /// crash mid-write leaves (always so when the record runs past the end of the file).
    Bad {
        offset: u64,
        error: FrameError,
        torn: bool,
    },
}

impl SegmentEnd {
    /// As open's rules name it.
    pub fn scan_end(&self) -> ScanEnd {
        match self {
            SegmentEnd::Clean => ScanEnd::Clean,
            SegmentEnd::Bad {
                offset, torn: true, ..
            } => ScanEnd::TornTail { offset: *offset },
            SegmentEnd::Bad { offset, error, .. } => ScanEnd::Damage {
                offset: *offset,
                reason: error.to_string(),
            },
        }
    }
}

/// Reads one segment's records in order through a bounded buffer.
pub(crate) struct SegmentReader {
    segment: SegmentRef,
    policy: ReadPolicy,
    /// How many bytes of the segment belong to the history (a fork's cut), if not all.
    cut: Option<u64>,
    file: Option<Box<dyn FileHandle>>,
    /// The file's length as of the last read.
    size: Option<u64>,
    /// Offset of the next record.
    offset: u64,
    /// Bytes of the segment from `buffer_start`.
    buffer: Vec<u8>,
    buffer_start: u64,
    end: Option<SegmentEnd>,
}

impl SegmentReader {
    /// A reader of `segment`'s records from `start` (the end of its header); `cut`: the
    /// bytes of it that belong to the history, for a segment a fork shares.
    pub fn new(segment: SegmentRef, start: u64, cut: Option<u64>, policy: ReadPolicy) -> Self {
        SegmentReader {
            segment,
            policy,
            cut,
            file: None,
            size: None,
            offset: start,
            buffer: Vec::new(),
            buffer_start: start,
            end: None,
        }
    }

    /// The segment read.
    pub fn segment(&self) -> &SegmentRef {
        &self.segment
    }

    /// The file's length as of the last read, once anything was read.
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// The file's length now (opening it, and keeping it open if the policy says so).
    pub fn file_len(&mut self, fs: &dyn FileSystem) -> Result<u64> {
        let file = self.file(fs)?;
        let size = file.size().map_err(context("reading", &self.segment.path));
        if self.policy.keep_open {
            self.file = Some(file);
        }
        let size = size?;
        self.size = Some(size);
        Ok(size)
    }

    /// How the segment ended, once [`SegmentReader::next`] returned `None`.
    pub fn end(&self) -> Option<&SegmentEnd> {
        self.end.as_ref()
    }

    /// The next good record, or `None` at the end (see [`SegmentReader::end`]).
    pub fn next(&mut self, fs: &dyn FileSystem) -> Result<Option<Record<'_>>> {
        if self.end.is_some() {
            return Ok(None);
        }
        let mut want = self.policy.chunk;
        let (from, total, header_len) = loop {
            let from = usize::try_from(self.offset - self.buffer_start).unwrap_or(usize::MAX);
            let rest = self.buffer.get(from..).unwrap_or_default();
            let at_eof = self
                .size
                .is_some_and(|size| self.buffer_start + self.buffer.len() as u64 >= size);
            match check_frame(rest) {
                Ok((total, header_len)) => break (from, total, header_len),
                Err(_) if rest.is_empty() && at_eof => {
                    self.end = Some(SegmentEnd::Clean);
                    return Ok(None);
                }
                Err(FrameError::Truncated { needed, .. }) if !at_eof => {
                    want = want.max(usize::try_from(needed).unwrap_or(usize::MAX));
                    self.fill(fs, want)?;
                }
                Err(error) => return self.finish(fs, error),
            }
        };
        let offset = self.offset;
        let Ok(len) = u32::try_from(total) else {
            return self.finish(fs, FrameError::TooLarge { len: u32::MAX });
        };
        self.offset += u64::from(len);
        let bytes = &self.buffer[from..from + total];
        let frame =
            frame_fields(bytes, header_len).map_err(|e| e.at(&self.segment.path, offset))?;
        Ok(Some(Record {
            offset,
            len,
            frame,
            bytes,
            shared: self.cut.is_some_and(|cut| offset >= cut),
        }))
    }

    /// Reads at least `want` bytes (as far as the file goes) from the next record on.
    fn fill(&mut self, fs: &dyn FileSystem, want: usize) -> Result<()> {
        let file = self.file(fs)?;
        let size = file
            .size()
            .map_err(context("reading", &self.segment.path))?;
        let available = size.saturating_sub(self.offset);
        let len = usize::try_from(available).unwrap_or(usize::MAX).min(want);
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        buffer.resize(len, 0);
        let read = file
            .read_at(&mut buffer, self.offset)
            .map_err(context("reading", &self.segment.path));
        if self.policy.keep_open {
            self.file = Some(file);
        }
        read?;
        self.buffer = buffer;
        self.buffer_start = self.offset;
        self.size = Some(size);
        Ok(())
    }

    /// The segment's file: the one kept open, or opened now.
    fn file(&mut self, fs: &dyn FileSystem) -> Result<Box<dyn FileHandle>> {
        match self.file.take() {
            Some(file) => Ok(file),
            None => open_segment(fs, &self.segment.path, self.policy.follow_archive),
        }
    }

    /// Moves the reader back to `offset`, the start of a record it yielded, so that
    /// [`SegmentReader::next`] yields that record again.
    pub fn rewind(&mut self, offset: u64) {
        if offset < self.buffer_start {
            self.buffer.clear();
            self.buffer_start = offset;
        }
        self.offset = offset;
        self.end = None;
    }

    /// Ends the segment at a bad record: torn unless a good record starts after it, and of
    /// no concern past a fork's cut.
    fn finish(&mut self, fs: &dyn FileSystem, error: FrameError) -> Result<Option<Record<'_>>> {
        let offset = self.offset;
        self.end = Some(if self.cut.is_some_and(|cut| offset >= cut) {
            SegmentEnd::Clean
        } else {
            let torn = matches!(error, FrameError::Truncated { .. })
                || (self.file_len(fs)?.saturating_sub(offset) <= self.policy.tail_max
                    && !self.good_record_after(fs)?);
            SegmentEnd::Bad {
                offset,
                error,
                torn,
            }
        });
        Ok(None)
    }

    /// True if a good record starts anywhere after the first byte of the bad record at the
    /// reader's offset. Looks through the rest of the file a window at a time, so that a long
    /// tail (zero fill, a file extended past its records) costs time, never memory: a window
    /// holds one chunk plus a record header, or one candidate record whose length passed its
    /// own check (at most [`crate::record::PAYLOAD_BYTES_LIMIT`] and its header).
    ///
    /// Reads at most about three times the tail (each window once, and candidate records): a
    /// tail crafted with a length that passes its check every few bytes would otherwise cost
    /// time in the square of its length. Past that budget the look stops and answers true: a
    /// good record may follow, so the bad one is damage (set aside, never cut).
    fn good_record_after(&mut self, fs: &dyn FileSystem) -> Result<bool> {
        let file = self.file(fs)?;
        let path = &self.segment.path;
        let size = file.size().map_err(context("reading", path))?;
        let read = |at: u64, len: u64, out: &mut Vec<u8>| -> Result<u64> {
            let len = usize::try_from(len.min(size.saturating_sub(at))).unwrap_or(usize::MAX);
            out.clear();
            out.resize(len, 0);
            file.read_at(out, at).map_err(context("reading", path))?;
            Ok(len as u64)
        };
        let chunk = self.policy.chunk.max(1) as u64;
        let tail = size.saturating_sub(self.offset);
        let mut budget = tail
            .saturating_mul(3)
            .saturating_add(2 * (chunk + HEADER_LEN as u64));
        let mut window = Vec::new();
        let mut record = Vec::new();
        let mut start = self.offset + 1;
        let mut found = false;
        'windows: while start < size {
            budget = budget.saturating_sub(read(start, chunk + HEADER_LEN as u64, &mut window)?);
            let candidates = window.len().min(chunk as usize);
            for i in 0..candidates {
                match check_frame(&window[i..]) {
                    Ok(_) => found = true,
                    // A record longer than the window: read it whole where it starts, if the
                    // budget still holds it.
                    Err(FrameError::Truncated { needed, .. })
                        if needed > (window.len() - i) as u64
                            && needed <= size - (start + i as u64) =>
                    {
                        if needed > budget {
                            found = true;
                            break 'windows;
                        }
                        budget -= read(start + i as u64, needed, &mut record)?;
                        found = check_frame(&record).is_ok();
                    }
                    Err(_) => {}
                }
                if found {
                    break 'windows;
                }
            }
            start += chunk;
        }
        if self.policy.keep_open {
            self.file = Some(file);
        }
        Ok(found)
    }
}

/// Opens a segment to read it; with `follow_archive`, from `archive/` if a compaction moved
/// it there since it was listed.
pub(crate) fn open_segment(
    fs: &dyn FileSystem,
    path: &Path,
    follow_archive: bool,
) -> Result<Box<dyn FileHandle>> {
    match fs.open(path, OpenMode::Read) {
        Ok(file) => Ok(file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && follow_archive => {
            let moved = path
                .parent()
                .map(|dir| dir.join(ARCHIVE_DIR))
                .zip(path.file_name())
                .map(|(archive, name)| archive.join(name));
            match moved.map(|moved| fs.open(&moved, OpenMode::Read)) {
                Some(Ok(file)) => Ok(file),
                _ => Err(context("opening", path)(e)),
            }
        }
        Err(e) => Err(context("opening", path)(e)),
    }
}

/// The error a bad record means where it must not be (not a torn tail at the end of the
/// history): a checksum mismatch as such, a record cut short by the end of the file, anything
/// else as corrupt data.
pub(crate) fn bad_record_error(path: &Path, offset: u64, error: FrameError) -> Error {
    match error {
        FrameError::Truncated { needed, .. } => Error::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason: format!("segment ends inside a record of {needed} bytes"),
        },
        other => other.at(path, offset),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::StdFs;
    use crate::record::encode_frame;

    /// A file of `count` records (payloads of growing length) and the offset of each.
    fn records(dir: &Path, count: u64) -> (SegmentRef, Vec<u64>, Vec<u8>) {
        let mut bytes = Vec::new();
        let mut offsets = Vec::new();
        for seq in 1..=count {
            offsets.push(bytes.len() as u64);
            let payload = vec![b'x'; 10 * seq as usize];
            encode_frame(seq, 7, Some(&[0; 32]), &payload, &mut bytes);
        }
        let path = dir.join("segment");
        std::fs::write(&path, &bytes).unwrap();
        (SegmentRef { number: 1, path }, offsets, bytes)
    }

    /// Every record a reader yields (offset, seq, shared), and how the segment ended.
    fn read_all(reader: &mut SegmentReader) -> (Vec<(u64, u64, bool)>, SegmentEnd) {
        let mut seen = Vec::new();
        while let Some(record) = reader.next(&StdFs).unwrap() {
            seen.push((record.offset, record.frame.seq, record.shared));
        }
        (seen, reader.end().cloned().unwrap())
    }

    fn policy(chunk: usize) -> ReadPolicy {
        ReadPolicy {
            chunk,
            ..ReadPolicy::SCAN
        }
    }

    #[test]
    fn records_are_read_whole_whatever_the_chunk() {
        let tmp = tempfile::tempdir().unwrap();
        let (segment, offsets, _) = records(tmp.path(), 20);
        for chunk in [1, 7, 64, 1 << 20] {
            for keep_open in [true, false] {
                let policy = ReadPolicy {
                    keep_open,
                    ..policy(chunk)
                };
                let mut reader = SegmentReader::new(segment.clone(), 0, None, policy);
                let (seen, end) = read_all(&mut reader);
                let expected: Vec<_> = offsets
                    .iter()
                    .zip(1..)
                    .map(|(&offset, seq)| (offset, seq, false))
                    .collect();
                assert_eq!(seen, expected, "chunk {chunk}");
                assert_eq!(end, SegmentEnd::Clean);
            }
        }
    }

    #[test]
    fn a_record_whose_header_is_partly_written_is_a_torn_tail() {
        let tmp = tempfile::tempdir().unwrap();
        let (segment, offsets, mut bytes) = records(tmp.path(), 2);
        // Length and one byte of its CRC written, the rest zero.
        let second = offsets[1] as usize;
        for b in &mut bytes[second + 5..] {
            *b = 0;
        }
        std::fs::write(&segment.path, &bytes).unwrap();
        let mut reader = SegmentReader::new(segment, 0, None, policy(16));
        let (seen, end) = read_all(&mut reader);
        assert_eq!(seen.len(), 1);
        assert!(matches!(end, SegmentEnd::Bad { offset, torn: true, .. } if offset == offsets[1]));
        assert_eq!(end.scan_end(), ScanEnd::TornTail { offset: offsets[1] });
    }

    /// A tail whose every eighth byte starts a length that passes its check and reaches half
    /// the tail: each would be read whole, at a cost in the square of the tail's length. The
    /// look stops at its budget, and the bad record is damage (a good one may follow).
    #[test]
    fn a_crafted_tail_costs_the_look_for_a_good_record_a_bounded_read() {
        let tmp = tempfile::tempdir().unwrap();
        let (segment, offsets, mut bytes) = records(tmp.path(), 2);
        let second = offsets[1] as usize;
        bytes.truncate(second);
        let tail: usize = 1 << 20;
        let len = (tail / 2) as u32;
        let check = crc32fast::hash(&len.to_le_bytes()) ^ crate::record::LEN_CHECK_V2;
        while bytes.len() < second + tail {
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(&check.to_le_bytes());
        }
        std::fs::write(&segment.path, &bytes).unwrap();
        // Without the budget, about 16 GiB would be read.
        let fs = crate::fs::counted::CountedFs::limited(64 << 20);
        let mut reader = SegmentReader::new(segment, 0, None, policy(64 << 10));
        let mut seen = 0;
        while reader.next(&fs).unwrap().is_some() {
            seen += 1;
        }
        assert_eq!(seen, 1);
        let end = reader.end().cloned().unwrap();
        assert!(matches!(end, SegmentEnd::Bad { offset, torn: false, .. } if offset == offsets[1]));
        assert!(fs.total_read() < 8 << 20, "{} bytes read", fs.total_read());
    }

    #[test]
    fn a_bad_record_before_a_good_one_is_damage() {
        let tmp = tempfile::tempdir().unwrap();
        let (segment, _, mut bytes) = records(tmp.path(), 2);
        bytes[3] ^= 1;
        std::fs::write(&segment.path, &bytes).unwrap();
        let mut reader = SegmentReader::new(segment, 0, None, policy(16));
        let (seen, end) = read_all(&mut reader);
        assert!(seen.is_empty());
        assert!(matches!(
            end,
            SegmentEnd::Bad {
                offset: 0,
                torn: false,
                ..
            }
        ));
        assert!(matches!(end.scan_end(), ScanEnd::Damage { offset: 0, .. }));
    }

    #[test]
    fn a_long_bad_tail_is_torn_and_a_long_good_record_after_damage_is_found() {
        let tmp = tempfile::tempdir().unwrap();
        let (segment, _, mut bytes) = records(tmp.path(), 2);
        // Zero fill far longer than a window after the last good record: torn.
        bytes.extend(std::iter::repeat_n(0u8, 1000));
        std::fs::write(&segment.path, &bytes).unwrap();
        let mut reader = SegmentReader::new(segment.clone(), 0, None, policy(16));
        let (seen, end) = read_all(&mut reader);
        assert_eq!(seen.len(), 2);
        let tail = (bytes.len() - 1000) as u64;
        assert!(matches!(end, SegmentEnd::Bad { offset, torn: true, .. } if offset == tail));
        // A bad record, then a good one much longer than a window: damage.
        let mut bytes = Vec::new();
        encode_frame(1, 7, Some(&[0; 32]), b"first", &mut bytes);
        bytes[20] ^= 1; // the first record's CRC no longer matches
        encode_frame(2, 7, Some(&[0; 32]), &[b'y'; 3000], &mut bytes);
        std::fs::write(&segment.path, &bytes).unwrap();
        let mut reader = SegmentReader::new(segment, 0, None, policy(16));
        let (seen, end) = read_all(&mut reader);
        assert!(seen.is_empty());
        assert!(
            matches!(
                end,
                SegmentEnd::Bad {
                    offset: 0,
                    torn: false,
                    ..
                }
            ),
            "{end:?}"
        );
    }

    #[test]
    fn past_a_forks_cut_records_are_shared_and_bad_bytes_are_not_this_historys() {
        let tmp = tempfile::tempdir().unwrap();
        let (segment, offsets, mut bytes) = records(tmp.path(), 3);
        let cut = offsets[1];
        let mut reader = SegmentReader::new(segment.clone(), 0, Some(cut), policy(16));
        let (seen, end) = read_all(&mut reader);
        let shared: Vec<bool> = seen.iter().map(|(_, _, shared)| *shared).collect();
        assert_eq!(shared, [false, true, true]);
        assert_eq!(end, SegmentEnd::Clean);
        // Damage past the cut ends the history cleanly; before it, it is damage.
        bytes[offsets[1] as usize + 3] ^= 1;
        std::fs::write(&segment.path, &bytes).unwrap();
        let mut reader = SegmentReader::new(segment.clone(), 0, Some(cut), policy(16));
        assert_eq!(read_all(&mut reader).1, SegmentEnd::Clean);
        let mut reader = SegmentReader::new(segment, 0, None, policy(16));
        assert!(matches!(
            read_all(&mut reader).1,
            SegmentEnd::Bad { torn: false, .. }
        ));
    }

    #[test]
    fn a_rewound_reader_yields_the_record_again() {
        let tmp = tempfile::tempdir().unwrap();
        let (segment, offsets, _) = records(tmp.path(), 3);
        let mut reader = SegmentReader::new(segment, 0, None, policy(8));
        let first = reader.next(&StdFs).unwrap().unwrap().frame.seq;
        let second = reader.next(&StdFs).unwrap().unwrap().offset;
        assert_eq!((first, second), (1, offsets[1]));
        reader.rewind(offsets[1]);
        let again = reader.next(&StdFs).unwrap().unwrap();
        assert_eq!((again.offset, again.frame.seq), (offsets[1], 2));
        reader.rewind(0);
        assert_eq!(read_all(&mut reader).0.len(), 3);
    }
}

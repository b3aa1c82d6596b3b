//! Segment files: names, the header, scanning records, and reading live messages back.
//!
//! A session's records live in its own numbered segments, `{session_id:016x}-{segment:08x}.seg`.
//! The name carries only numbers, so no key can produce a path outside the folder or collide
//! with another; the key itself is stored in every segment header.
//!
//! ```text
//! // Format: { magic: [u8; 8] | version: u32 | kind: u8 | session_id: u64 | segment: u32
//! //           | prev_len: u64 | key_len: u16 | key: [u8; key_len] | header_crc: u32 }
//! // then records
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cipher::{DataKey, NONCE_LEN, SEAL_OVERHEAD};
use crate::error::{Error, Result};
use crate::fs::{context, FileHandle, FileSystem, OpenMode};
use crate::layout::segment_path;
use crate::location::MessageLoc;
use crate::message::ChatMessage;
use crate::record::{decode_event, decode_frame, open_payload, Event, Frame};

/// The first eight bytes of every segment.
pub const MAGIC: [u8; 8] = *b"SESSLOG\0";
/// The format version this build writes. Version 2: records carry a hash chain; version 4
/// adds the events `AppendOnce`, `AppendBatchOnce` and `SetArchived`, and the snapshot's
/// archived flag and window of ids (docs/FORMAT.md). A build that does not know them refuses
/// the segment as an unsupported version instead of taking its records for damage.
pub const FORMAT_VERSION: u32 = 4;
/// The format version of an encrypted store's segments: [`FORMAT_VERSION`]'s layout, with
/// every record's payload sealed, and the session key in the header sealed too
/// ([`crate::Options::encryption`]). A build that cannot decrypt refuses it as an unsupported
/// version instead of taking its records for damage. (Version 3 is version 2, sealed.)
pub const SEALED_VERSION: u32 = 5;
/// The oldest format version this build reads (version 1: records without the chain).
pub const FORMAT_VERSION_OLDEST: u32 = 1;
/// The newest format version this build reads.
pub const FORMAT_VERSION_NEWEST: u32 = SEALED_VERSION;
/// The version this build writes: [`SEALED_VERSION`] in an encrypted store, else
/// [`FORMAT_VERSION`].
pub fn version_for(sealed: bool) -> u32 {
    if sealed {
        SEALED_VERSION
    } else {
        FORMAT_VERSION
    }
}

/// True for the versions whose records and session key are sealed (3 and 5).
pub fn is_sealed(version: u32) -> bool {
    version == 3 || version == SEALED_VERSION
}

/// Most bytes a session key may have.
pub const MAX_KEY_BYTES: usize = 1024;

/// True for a key's length that a session may have (1 to [`MAX_KEY_BYTES`] bytes): the one
/// rule for keys given by a caller and keys read from disk.
pub fn key_len_ok(len: usize) -> bool {
    (1..=MAX_KEY_BYTES).contains(&len)
}

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + 8;
const KIND_OFFSET: usize = VERSION_OFFSET + 4;
const SESSION_ID_OFFSET: usize = KIND_OFFSET + 1;
const SEGMENT_OFFSET: usize = SESSION_ID_OFFSET + 8;
const PREV_LEN_OFFSET: usize = SEGMENT_OFFSET + 4;
const KEY_LEN_OFFSET: usize = PREV_LEN_OFFSET + 8;
const KEY_OFFSET: usize = KEY_LEN_OFFSET + 2;
const _: () = assert!(
    KEY_OFFSET == 35,
    "docs/FORMAT.md documents the key at offset 35"
);
/// Longest possible header: the fixed part, the longest key (sealed), the CRC.
pub const HEADER_BYTES_MAX: usize = KEY_OFFSET + MAX_KEY_BYTES + SEAL_OVERHEAD + 4;
const _: () = assert!(
    HEADER_BYTES_MAX == 1091,
    "docs/FORMAT.md documents the longest header"
);

/// What a segment's records mean relative to the session's lower-numbered segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentKind {
    /// 0: continues the segments before it.
    Fresh,
    /// 1: written by compaction; replaces every lower-numbered segment of the session.
    Compacted,
    /// 2: written by open to repair a damaged session; replaces every lower-numbered segment,
    /// which open moves to `quarantine/` instead of removing.
    Recovered,
    /// 3: the first segment of a fork: every lower-numbered segment is shared with the source
    /// (a hard link to the source's file, named for this session), and of the one just below
    /// only the first `prev_len` bytes belong to this session's history.
    Forked,
}

impl SegmentKind {
    fn to_byte(self) -> u8 {
        match self {
            SegmentKind::Fresh => 0,
            SegmentKind::Compacted => 1,
            SegmentKind::Recovered => 2,
            SegmentKind::Forked => 3,
        }
    }

    fn from_byte(byte: u8) -> Option<SegmentKind> {
        match byte {
            0 => Some(SegmentKind::Fresh),
            1 => Some(SegmentKind::Compacted),
            2 => Some(SegmentKind::Recovered),
            3 => Some(SegmentKind::Forked),
            _ => None,
        }
    }
}

/// A decoded segment header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The format version it was written in: its records' layout.
    pub version: u32,
    /// How the segment relates to the ones before it.
    pub kind: SegmentKind,
    /// The session the segment belongs to.
    pub session_id: u64,
    /// Its number within the session.
    pub segment: u32,
    /// For a fresh segment, the length of the session's previous segment when this one was
    /// started (0 for the first): replay checks it, so a sealed segment cut short at a record
    /// boundary is caught. 0 for compacted and recovered segments.
    pub prev_len: u64,
    /// The session key.
    pub key: String,
}

/// Why a segment header does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// The file ends inside the header, or the header is zero fill: a crash while the
    /// segment was being created.
    Truncated,
    /// A format version this build does not read.
    UnsupportedVersion(u32),
    /// A sound header of an encrypted store's segment (version 3), read without the
    /// session's data key: its session key cannot be opened.
    Sealed,
    /// Anything else: wrong magic, bad checksum, bad kind or key.
    Corrupt(String),
}

/// Reads and decodes the header of the segment at `path` (`key`: the session's data key, in an
/// encrypted store). Reads one byte past the longest header, so that a header counts as cut
/// short only when the whole file is shorter than it, or is zero bytes no longer than the
/// longest header; zero bytes where a longer file's header should be are damage
/// (`docs/FORMAT.md`, "Segment header"). The outer error is the read's.
pub fn read_header(
    fs: &dyn FileSystem,
    path: &Path,
    key: Option<&DataKey>,
) -> Result<std::result::Result<(SegmentHeader, usize), HeaderError>> {
    let prefix = crate::fs::read_prefix(fs, path, HEADER_BYTES_MAX as u64 + 1)?;
    Ok(match decode_header(&prefix, key) {
        Err(HeaderError::Truncated) if prefix.len() > HEADER_BYTES_MAX => Err(
            HeaderError::Corrupt("zero bytes where the header should be".into()),
        ),
        decoded => decoded,
    })
}

/// The length of the header of a segment of session `key`; `sealed`: of an encrypted store.
pub fn header_len(key: &str, sealed: bool) -> u64 {
    let seal = if sealed { SEAL_OVERHEAD } else { 0 };
    (KEY_OFFSET + key.len() + seal + 4) as u64
}

/// Encodes a segment header. With `seal` (the session's data key; the header's version must
/// be [`SEALED_VERSION`]) the session key is stored sealed, the bytes before it as associated
/// data.
pub fn encode_header(header: &SegmentHeader, seal: Option<&DataKey>) -> Vec<u8> {
    debug_assert_eq!(seal.is_some(), is_sealed(header.version));
    let stored_len = header_len(&header.key, seal.is_some()) as usize - KEY_OFFSET - 4;
    let key_len = u16::try_from(stored_len)
        .ok()
        .filter(|_| header.key.len() <= MAX_KEY_BYTES)
        .expect("keys are checked before a segment is created");
    let mut out = Vec::with_capacity(KEY_OFFSET + stored_len + 4);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&header.version.to_le_bytes());
    out.push(header.kind.to_byte());
    out.extend_from_slice(&header.session_id.to_le_bytes());
    out.extend_from_slice(&header.segment.to_le_bytes());
    out.extend_from_slice(&header.prev_len.to_le_bytes());
    out.extend_from_slice(&key_len.to_le_bytes());
    match seal {
        None => out.extend_from_slice(header.key.as_bytes()),
        Some(data_key) => {
            out.resize(KEY_OFFSET + stored_len, 0);
            let (fixed, sealed) = out.split_at_mut(KEY_OFFSET);
            sealed[NONCE_LEN..NONCE_LEN + header.key.len()].copy_from_slice(header.key.as_bytes());
            data_key.seal_payload(fixed, sealed);
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(decode_header(&out, seal), Ok((header.clone(), out.len())));
    out
}

fn field<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], HeaderError> {
    bytes
        .get(at..at + N)
        .and_then(|b| b.try_into().ok())
        .ok_or(HeaderError::Truncated)
}

/// Decodes the header at the start of a segment's bytes, returning it and its size.
///
/// The checksum is verified before any other field is trusted, the version included: a header
/// whose checksum fails is damage to that one segment, while a sound header of another version
/// was written by another sessionlog. (Every version keeps this header layout; see
/// docs/FORMAT.md.)
///
/// A version 3 header's session key is sealed: it is opened with `key`, the session's data key
/// ([`HeaderError::Sealed`] without one).
pub fn decode_header(
    bytes: &[u8],
    key: Option<&DataKey>,
) -> Result<(SegmentHeader, usize), HeaderError> {
    if bytes.iter().all(|b| *b == 0) {
        return Err(HeaderError::Truncated); // empty, or zero fill from a crash
    }
    let magic = bytes.get(..MAGIC.len()).unwrap_or(bytes);
    if MAGIC.get(..magic.len()) != Some(magic) {
        return Err(HeaderError::Corrupt(
            "not a sessionlog segment (bad magic)".into(),
        ));
    }
    let key_len = usize::from(u16::from_le_bytes(field(bytes, KEY_LEN_OFFSET)?));
    if key_len == 0 || key_len > MAX_KEY_BYTES + SEAL_OVERHEAD {
        return Err(HeaderError::Corrupt(format!("key length {key_len}")));
    }
    let crc_offset = KEY_OFFSET + key_len;
    let stored_crc = u32::from_le_bytes(field(bytes, crc_offset)?);
    let covered = bytes.get(..crc_offset).ok_or(HeaderError::Truncated)?;
    let actual_crc = crc32fast::hash(covered);
    if stored_crc != actual_crc {
        return Err(HeaderError::Corrupt(format!(
            "header checksum mismatch: stored {stored_crc:#010x}, computed {actual_crc:#010x}"
        )));
    }
    let version = u32::from_le_bytes(field(bytes, VERSION_OFFSET)?);
    if !(FORMAT_VERSION_OLDEST..=FORMAT_VERSION_NEWEST).contains(&version) {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    let [kind] = field::<1>(bytes, KIND_OFFSET)?;
    let kind = SegmentKind::from_byte(kind)
        .ok_or_else(|| HeaderError::Corrupt(format!("unknown segment kind {kind}")))?;
    let session_id = u64::from_le_bytes(field(bytes, SESSION_ID_OFFSET)?);
    let segment = u32::from_le_bytes(field(bytes, SEGMENT_OFFSET)?);
    let prev_len = u64::from_le_bytes(field(bytes, PREV_LEN_OFFSET)?);
    let key_bytes = covered.get(KEY_OFFSET..).ok_or(HeaderError::Truncated)?;
    let mut opened = Vec::new();
    let key_bytes = match (is_sealed(version), key) {
        (true, None) => return Err(HeaderError::Sealed),
        (true, Some(data_key)) => {
            let aad = covered.get(..KEY_OFFSET).ok_or(HeaderError::Truncated)?;
            data_key
                .open_payload(aad, key_bytes, &mut opened)
                .map_err(|e| HeaderError::Corrupt(format!("session key: {e}")))?
        }
        _ => key_bytes,
    };
    if !key_len_ok(key_bytes.len()) {
        return Err(HeaderError::Corrupt(format!(
            "key length {}",
            key_bytes.len()
        )));
    }
    let key = std::str::from_utf8(key_bytes)
        .map_err(|_| HeaderError::Corrupt("key is not UTF-8".into()))?
        .to_owned();
    let header = SegmentHeader {
        version,
        kind,
        session_id,
        segment,
        prev_len,
        key,
    };
    Ok((header, crc_offset + 4))
}

/// Checks that a record has the layout of its segment's format version: version 2 and 3
/// segments hold only records with a `prev` link, version 1 segments only records without.
pub fn check_layout(version: u32, frame: &Frame<'_>) -> Result<(), String> {
    if frame.prev.is_some() == (version >= 2) {
        Ok(())
    } else {
        Err(format!(
            "record layout does not match the segment's format version {version}"
        ))
    }
}

/// How a scan of a segment's records ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEnd {
    /// Every byte was a good record.
    Clean,
    /// A bad record with no good record after it: what a crash mid-write leaves (a record cut
    /// short, zero fill, a header or payload only partly written). Cut off on open, but only
    /// at the end of a session's newest segment.
    TornTail {
        /// Where the bad record starts.
        offset: u64,
    },
    /// A bad record followed by a good one: damage, never a crash.
    Damage {
        /// Where the bad record starts.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
}

/// A message read back from its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Sequence number of the record holding its current content.
    pub seq: u64,
    /// The message.
    pub message: ChatMessage,
    /// When it was appended, µs since the epoch.
    pub created_at: i64,
}

/// Open handles to the segments a read needs, taken while the projection is locked so that
/// a compaction cannot remove the files first (an open handle outlives the file's removal).
pub struct SegmentFiles {
    dir: PathBuf,
    session_id: u64,
    files: HashMap<u32, Box<dyn FileHandle>>,
    key: Option<Arc<DataKey>>,
}

/// Two records closer than this are read with one positioned read.
const READ_GAP_BYTES: u64 = 16 << 10;
/// Most bytes one positioned read covers when it merges records. Small enough that the one
/// buffer a read reuses stays in the allocator's heap instead of being mapped (and page-faulted
/// in) afresh for every call.
const READ_SPAN_BYTES: u64 = 256 << 10;

impl SegmentFiles {
    /// Opens every segment that `locs` point into; `key` opens the payloads of an encrypted
    /// store.
    pub fn open(
        fs: &dyn FileSystem,
        dir: &Path,
        session_id: u64,
        locs: &[MessageLoc],
        key: Option<Arc<DataKey>>,
    ) -> Result<SegmentFiles> {
        let mut files = HashMap::new();
        for loc in locs {
            if let std::collections::hash_map::Entry::Vacant(slot) = files.entry(loc.segment) {
                let path = segment_path(dir, session_id, loc.segment);
                let file = fs
                    .open(&path, OpenMode::Read)
                    .map_err(context("opening", &path))?;
                slot.insert(file);
            }
        }
        Ok(SegmentFiles {
            dir: dir.to_owned(),
            session_id,
            files,
            key,
        })
    }

    /// The data key the records are opened with (an encrypted store).
    pub fn key(&self) -> Option<&DataKey> {
        self.key.as_deref()
    }

    /// Reads the messages at `locs`, in order, merging neighbouring records into one read.
    /// Every record's checksum is verified again.
    pub fn read_messages(&self, locs: &[MessageLoc]) -> Result<Vec<StoredMessage>> {
        self.read_each(locs, |loc, seq, role, content| StoredMessage {
            seq,
            message: ChatMessage::new(role, content),
            created_at: loc.created_at,
        })
    }

    /// `make(loc, seq, role, content)` of the messages at `locs`, in order, read as
    /// [`SegmentFiles::visit_messages`] reads them: what a caller keeps of each message is
    /// built once, straight from the read buffer.
    pub fn read_each<T>(
        &self,
        locs: &[MessageLoc],
        mut make: impl FnMut(&MessageLoc, u64, &str, &str) -> T,
    ) -> Result<Vec<T>> {
        let mut out = Vec::with_capacity(locs.len());
        self.visit_messages(locs, |loc, seq, role, content| {
            out.push(make(loc, seq, role, content));
            true
        })?;
        Ok(out)
    }

    /// Calls `visit(loc, seq, role, content)` for the messages at `locs`, in order, with the
    /// strings borrowed from the read buffer (nothing is copied), until it returns false.
    pub fn visit_messages(
        &self,
        locs: &[MessageLoc],
        mut visit: impl FnMut(&MessageLoc, u64, &str, &str) -> bool,
    ) -> Result<()> {
        let mut buffer = Vec::new();
        let mut scratch = Vec::new(); // an encrypted store's opened payload
        let mut rest = locs;
        while let Some(first) = rest.first() {
            let start = first.offset();
            let mut end = start + u64::from(first.len);
            let mut last_offset = start;
            let mut run = 1;
            for next in rest.iter().skip(1) {
                if next.segment == first.segment && next.offset() == last_offset {
                    run += 1; // another message of the same batch record
                    continue;
                }
                let next_end = next.offset() + u64::from(next.len);
                if next.segment != first.segment
                    || next.offset() < end
                    || next.offset() - end > READ_GAP_BYTES
                    || next_end - start > READ_SPAN_BYTES
                {
                    break;
                }
                end = next_end;
                last_offset = next.offset();
                run += 1;
            }
            let (batch, later) = rest.split_at(run);
            let span = self.read_span(first.segment, start, end, &mut buffer)?;
            // The messages of one batch record share it: it is checked and decoded once.
            for record_locs in batch.chunk_by(|a, b| a.offset() == b.offset()) {
                let Some(loc) = record_locs.first() else {
                    continue;
                };
                let from = usize::try_from(loc.offset() - start).unwrap_or(usize::MAX);
                let record = span.get(from..).unwrap_or_default();
                let (seq, event) = self.decode_record(loc, record, &mut scratch)?;
                for loc in record_locs {
                    let Some((role, content)) = event.message(loc.index()) else {
                        return Err(Error::Corrupt {
                            path: segment_path(&self.dir, self.session_id, loc.segment),
                            offset: loc.offset(),
                            reason: format!(
                                "expected message {} of a record, found {event:?}",
                                loc.index()
                            ),
                        });
                    };
                    if !visit(loc, seq, role, content) {
                        return Ok(());
                    }
                }
            }
            rest = later;
        }
        Ok(())
    }

    /// Reads `start..end` of a segment into `bytes` (grown as needed, never shrunk) and
    /// returns the bytes read: what the buffer holds past them is an earlier span's.
    fn read_span<'b>(
        &self,
        segment: u32,
        start: u64,
        end: u64,
        bytes: &'b mut Vec<u8>,
    ) -> Result<&'b [u8]> {
        let path = segment_path(&self.dir, self.session_id, segment);
        let file = self.files.get(&segment).ok_or_else(|| Error::Corrupt {
            path: path.clone(),
            offset: start,
            reason: "segment was not opened for this read".into(),
        })?;
        let too_large = || Error::Corrupt {
            path: path.clone(),
            offset: start,
            reason: "a message's location reaches past its segment's end".into(),
        };
        // A single record longer than a span (up to the 1 GiB payload limit) is read whole; a
        // location from the checkpoint says how long, so that length must be in the file
        // before it sizes a buffer.
        if end - start > READ_SPAN_BYTES {
            let size = file.size().map_err(context("reading", &path))?;
            if end > size {
                return Err(too_large());
            }
        }
        let len = usize::try_from(end - start).map_err(|_| too_large())?;
        // Zeroed only where it grows: the reused part is overwritten by the read (zeroing it
        // again cost a fifth as much as reading it).
        if bytes.len() < len {
            bytes.resize(len, 0);
        }
        let span = bytes.get_mut(..len).ok_or_else(too_large)?;
        file.read_at(span, start)
            .map_err(context("reading", &path))?;
        Ok(span)
    }

    fn decode_record<'a>(
        &self,
        loc: &MessageLoc,
        record: &'a [u8],
        scratch: &'a mut Vec<u8>,
    ) -> Result<(u64, Event<'a>)> {
        let path = || segment_path(&self.dir, self.session_id, loc.segment);
        let corrupt = |reason: String| Error::Corrupt {
            path: path(),
            offset: loc.offset(),
            reason,
        };
        let (frame, _) = decode_frame(record).map_err(|e| e.at(&path(), loc.offset()))?;
        let payload = open_payload(&frame, self.key.as_deref(), scratch).map_err(corrupt)?;
        let event = decode_event(payload).map_err(corrupt)?;
        Ok((frame.seq, event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A location (from a checkpoint, say) whose length reaches far past its segment's end is
    /// refused before any buffer is sized by it.
    #[test]
    fn a_location_past_its_segments_end_sizes_no_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1, 1);
        std::fs::write(&path, [0u8; 100]).unwrap();
        let locs = [MessageLoc::single(1, u32::MAX, 40, 0)];
        let files = SegmentFiles::open(&crate::fs::StdFs, dir.path(), 1, &locs, None).unwrap();
        let read = files.read_messages(&locs);
        assert!(
            matches!(&read, Err(Error::Corrupt { reason, .. }) if reason.contains("past its segment")),
            "{:?}",
            read.err()
        );
    }

    /// The read buffer is reused from span to span and not cleared: a record is decoded from
    /// its own span's bytes only, never from what an earlier, longer span left past them.
    #[test]
    fn a_record_is_decoded_from_its_own_span_never_from_an_earlier_ones_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        let prev = [0u8; 32];
        let first = Event::Append {
            role: "user",
            content: "one",
        };
        let second = Event::Append {
            role: "user",
            content: "two",
        };
        crate::record::encode_record(1, 10, &prev, &first, &mut bytes, None);
        let first_len = bytes.len() as u32;
        crate::record::encode_record(2, 20, &prev, &second, &mut bytes, None);
        let second_len = bytes.len() as u32 - first_len;
        std::fs::write(segment_path(dir.path(), 1, 1), &bytes).unwrap();
        let one = MessageLoc::single(1, first_len, 0, 10);
        let two = MessageLoc::single(1, second_len, u64::from(first_len), 20);
        let files = SegmentFiles::open(&crate::fs::StdFs, dir.path(), 1, &[one], None).unwrap();
        let read = files.read_messages(&[one, two]).unwrap();
        let texts: Vec<&str> = read.iter().map(|m| m.message.content.as_str()).collect();
        assert_eq!(texts, ["one", "two"]);
        // The first record again, after the second (a new span, at the buffer's start), by
        // a location cut one byte short: the byte it leaves out is in the buffer from the
        // first span, and must not complete it.
        let cut = MessageLoc::single(1, first_len - 1, 0, 10);
        let read = files.read_messages(&[one, two, cut]);
        assert!(matches!(read, Err(Error::Corrupt { .. })), "{read:?}");
    }

    fn header() -> SegmentHeader {
        SegmentHeader {
            version: FORMAT_VERSION,
            kind: SegmentKind::Compacted,
            session_id: 0xabc,
            segment: 7,
            prev_len: 1234,
            key: "a/b".into(),
        }
    }

    #[test]
    fn a_sealed_header_hides_the_key_and_opens_only_with_its_data_key() {
        let key = DataKey::for_tests([4; 32]);
        let header = SegmentHeader {
            version: SEALED_VERSION,
            key: "telegram_+15551234567".into(),
            ..header()
        };
        let bytes = encode_header(&header, Some(&key));
        assert_eq!(bytes.len() as u64, header_len(&header.key, true));
        assert!(!bytes.windows(9).any(|w| w == b"telegram_"));
        assert_eq!(decode_header(&bytes, Some(&key)), Ok((header, bytes.len())));
        assert_eq!(decode_header(&bytes, None), Err(HeaderError::Sealed));
        let other = DataKey::for_tests([5; 32]);
        assert!(matches!(
            decode_header(&bytes, Some(&other)),
            Err(HeaderError::Corrupt(_))
        ));
        // The fields before the key are its associated data: a header given another kind
        // (CRC fixed up) does not open.
        let mut moved = bytes.clone();
        moved[KIND_OFFSET] = SegmentKind::Fresh.to_byte();
        let crc_at = moved.len() - 4;
        let crc = crc32fast::hash(&moved[..crc_at]);
        moved[crc_at..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            decode_header(&moved, Some(&key)),
            Err(HeaderError::Corrupt(_))
        ));
    }

    #[test]
    fn headers_round_trip_and_every_cut_is_truncated() {
        let bytes = encode_header(&header(), None);
        assert_eq!(decode_header(&bytes, None), Ok((header(), bytes.len())));
        for cut in 0..bytes.len() {
            assert_eq!(
                decode_header(&bytes[..cut], None),
                Err(HeaderError::Truncated),
                "{cut}"
            );
        }
    }

    #[test]
    fn header_damage_is_detected() {
        let bytes = encode_header(&header(), None);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(decode_header(&bad, None).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn a_sound_header_of_another_version_is_named() {
        let mut bytes = encode_header(&header(), None);
        bytes[VERSION_OFFSET] = 9;
        let crc_at = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..crc_at]);
        bytes[crc_at..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_header(&bytes, None),
            Err(HeaderError::UnsupportedVersion(9))
        );
    }

    #[test]
    fn a_flipped_version_byte_is_damage_not_a_new_version() {
        let mut bytes = encode_header(&header(), None);
        bytes[VERSION_OFFSET] ^= 0x02;
        assert!(matches!(
            decode_header(&bytes, None),
            Err(HeaderError::Corrupt(_))
        ));
    }

    #[test]
    fn an_out_of_range_key_length_is_damage_not_a_torn_header() {
        let mut bytes = encode_header(&header(), None);
        bytes[KEY_LEN_OFFSET + 1] = 0x80;
        assert!(matches!(
            decode_header(&bytes, None),
            Err(HeaderError::Corrupt(_))
        ));
    }
}

//! The wire format of one record: framing, checksums and the hash chain around a payload that
//! holds one event (`src/payload.rs`). Pure: no I/O.
//!
//! Every mutation of a session is one [`Event`], stored as one record:
//!
//! ```text
//! // Format: { len: u32 | len_check: u32 | crc: u32 | seq: u64 | ts_micros: i64
//! //           | prev: [u8; 32] | payload: [u8; len] }
//! ```
//!
//! All integers are little-endian. `len_check` is the CRC32 of the four bytes of `len`, XORed
//! with [`LEN_CHECK_V2`], so a damaged length is caught before it is trusted and the record
//! says which layout it has; `crc` is the CRC32 of every byte of the record except itself;
//! `prev` is the BLAKE3 hash of the session's previous record (the hash chain). Version 1
//! records (`len_check` without the XOR) have no `prev` field and a 28-byte header; they are
//! still read. The payload is the event, encoded by `src/payload.rs`.

use crate::cipher::{DataKey, NONCE_LEN, TAG_LEN};
use crate::error::Error;
use crate::payload::encode_event_into;
pub use crate::payload::{decode_event, encode_event, BatchMessage, Event, Snapshot};

/// Offset of the payload length (`u32`).
pub const LEN_OFFSET: usize = 0;
/// Offset of the check of the length bytes (`u32`).
pub const LEN_CRC_OFFSET: usize = LEN_OFFSET + 4;
/// Offset of the CRC32 of the whole record but this field (`u32`).
pub const CRC_OFFSET: usize = LEN_CRC_OFFSET + 4;
/// Offset of the store-wide sequence number (`u64`).
pub const SEQ_OFFSET: usize = CRC_OFFSET + 4;
/// Offset of the timestamp, microseconds since the Unix epoch, UTC (`i64`).
pub const TS_OFFSET: usize = SEQ_OFFSET + 8;
/// Size of a version 1 record header; the payload follows it.
pub const HEADER_LEN_V1: usize = TS_OFFSET + 8;
/// Offset of the hash of the session's previous record (`[u8; 32]`), version 2.
pub const PREV_OFFSET: usize = HEADER_LEN_V1;
/// Size of the record header this build writes (version 2); the payload follows it.
pub const HEADER_LEN: usize = PREV_OFFSET + HASH_LEN;
const _: () = assert!(
    HEADER_LEN_V1 == 28 && HEADER_LEN == 60,
    "docs/FORMAT.md documents 28- and 60-byte record headers"
);

/// XORed into the CRC32 of the length bytes to mark a version 2 record.
pub const LEN_CHECK_V2: u32 = 0x9E37_79B9;

/// Bytes of a BLAKE3 hash.
pub const HASH_LEN: usize = 32;
/// A BLAKE3 hash: of a record, or the start of a session's chain.
pub type Hash = [u8; HASH_LEN];

/// The hash of a whole record (header included), which the session's next record stores as
/// its `prev`.
pub fn record_hash(record: &[u8]) -> Hash {
    *blake3::hash(record).as_bytes()
}

/// The `prev` of a session's first record: a hash of its key, so that records cannot be moved
/// to another session unnoticed.
pub fn chain_start(key: &str) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"sessionlog chain start\0");
    hasher.update(key.as_bytes());
    *hasher.finalize().as_bytes()
}

/// Largest payload the format allows (1 GiB). A length above it is damage, whatever the options.
pub const PAYLOAD_BYTES_LIMIT: u32 = 1 << 30;

/// A record read back: its frame fields and its still-encoded payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Store-wide sequence number.
    pub seq: u64,
    /// When it was written, µs since the epoch, UTC.
    pub ts_micros: i64,
    /// The hash of the session's previous record; `None` for a version 1 record.
    pub prev: Option<Hash>,
    /// The record's header, as stored (a sealed payload's associated data comes from it).
    pub header: &'a [u8],
    /// The encoded [`Event`], or in an encrypted store the sealed one (see [`open_payload`]).
    pub payload: &'a [u8],
}

/// Why bytes do not decode as a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The buffer ends before the record does: `needed` bytes from the record's start, only
    /// `available` present. At the end of a file this is what a crash mid-write leaves.
    Truncated {
        /// Bytes the record needs.
        needed: u64,
        /// Bytes present.
        available: u64,
    },
    /// The length field fails its own check: the header is damaged (or is zero fill).
    BadLength,
    /// The length passes its CRC but exceeds [`PAYLOAD_BYTES_LIMIT`].
    TooLarge {
        /// The stored length.
        len: u32,
    },
    /// The record's CRC32 does not match its bytes.
    Checksum {
        /// The CRC stored in the record.
        expected: u32,
        /// The CRC of the bytes as read.
        actual: u32,
        /// Total size the record claims, header included.
        record_len: u64,
    },
}

impl FrameError {
    /// This error as the store reports it for a record at `offset` of `path`: a checksum
    /// mismatch as such, anything else as corrupt data.
    pub(crate) fn at(self, path: &std::path::Path, offset: u64) -> Error {
        match self {
            FrameError::Checksum {
                expected, actual, ..
            } => Error::ChecksumMismatch {
                path: path.to_owned(),
                offset,
                expected,
                actual,
            },
            other => Error::Corrupt {
                path: path.to_owned(),
                offset,
                reason: other.to_string(),
            },
        }
    }
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Truncated { needed, available } => {
                write!(
                    f,
                    "record cut short: needs {needed} bytes, {available} present"
                )
            }
            FrameError::BadLength => f.write_str("record length fails its checksum"),
            FrameError::TooLarge { len } => {
                write!(f, "record length {len} exceeds the format limit")
            }
            FrameError::Checksum {
                expected, actual, ..
            } => write!(
                f,
                "record checksum mismatch: stored {expected:#010x}, computed {actual:#010x}"
            ),
        }
    }
}

fn crc_of_len(len_bytes: [u8; 4]) -> u32 {
    crc32fast::hash(&len_bytes)
}

/// The `len_check` of a version 2 record of this length.
fn len_check(len_bytes: [u8; 4]) -> u32 {
    crc_of_len(len_bytes) ^ LEN_CHECK_V2
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let field: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(field))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let field: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(field))
}

/// The sequence number in the header `bytes` begin with, if its length check holds (either
/// version): what a torn record's first bytes say it was. `None` when too few bytes are there
/// or they are no record header.
pub(crate) fn header_seq(bytes: &[u8]) -> Option<u64> {
    let len = read_u32(bytes, LEN_OFFSET)?;
    let check = read_u32(bytes, LEN_CRC_OFFSET)?;
    let len_bytes = len.to_le_bytes();
    if check != len_check(len_bytes) && check != crc_of_len(len_bytes) {
        return None;
    }
    read_u64(bytes, SEQ_OFFSET)
}

/// Total size in bytes of a record with a payload of `payload_len` bytes.
pub fn record_len(payload_len: usize) -> u64 {
    (HEADER_LEN + payload_len) as u64
}

/// Appends a version 2 record of `event` to `out`, its sequence number, time, `prev` and CRC
/// not yet filled in ([`seal_record`] does that), and returns the payload's length. The event is
/// encoded straight
/// into the record: no intermediate copy. With `sealed` (an encrypted store), room for the
/// nonce and the tag is left around the encoded event. A payload over [`PAYLOAD_BYTES_LIMIT`] gets
/// a length
/// field that will not decode; callers refuse such records before sealing them.
pub fn begin_record(event: &Event<'_>, out: &mut Vec<u8>, sealed: bool) -> usize {
    let start = out.len();
    let nonce = if sealed { NONCE_LEN } else { 0 };
    out.resize(start + HEADER_LEN + nonce, 0);
    encode_event_into(event, out);
    if sealed {
        out.resize(out.len() + TAG_LEN, 0);
    }
    let payload_len = out.len() - start - HEADER_LEN;
    let len_bytes = u32::try_from(payload_len).unwrap_or(u32::MAX).to_le_bytes();
    let crc_bytes = len_check(len_bytes).to_le_bytes();
    if let Some(header) = out.get_mut(start..start + CRC_OFFSET) {
        header[..4].copy_from_slice(&len_bytes);
        header[4..].copy_from_slice(&crc_bytes);
    }
    payload_len
}

/// Fills in the sequence number, time, `prev` and CRC of the record that `record` holds (as
/// [`begin_record`] left it); with `key`, seals its payload first (begun with `sealed`), with
/// the header as associated data.
pub fn seal_record(
    record: &mut [u8],
    seq: u64,
    ts_micros: i64,
    prev: &Hash,
    key: Option<&DataKey>,
) {
    if let Some(fields) = record.get_mut(SEQ_OFFSET..HEADER_LEN) {
        fields[..8].copy_from_slice(&seq.to_le_bytes());
        fields[8..16].copy_from_slice(&ts_micros.to_le_bytes());
        fields[16..].copy_from_slice(prev);
    }
    if let Some(key) = key {
        let (header, payload) = record.split_at_mut(HEADER_LEN.min(record.len()));
        key.seal_payload(&sealed_aad(header), payload);
    }
    let crc = record_crc(record);
    if let Some(field) = record.get_mut(CRC_OFFSET..SEQ_OFFSET) {
        field.copy_from_slice(&crc.to_le_bytes());
    }
    debug_assert_eq!(
        decode_frame(record).map(|(frame, used)| (frame.seq, used)),
        Ok((seq, record.len())),
        "a record must decode as it was encoded"
    );
}

/// Appends the whole version 2 record of `event` to `out`, and returns its hash (the next
/// record's `prev`). With `key`, the payload is sealed.
pub fn encode_record(
    seq: u64,
    ts_micros: i64,
    prev: &Hash,
    event: &Event<'_>,
    out: &mut Vec<u8>,
    key: Option<&DataKey>,
) -> Hash {
    let start = out.len();
    begin_record(event, out, key.is_some());
    let record = out.get_mut(start..).unwrap_or_default();
    seal_record(record, seq, ts_micros, prev, key);
    record_hash(record)
}

/// Appends one framed record to `out`: version 2 with `prev`, version 1 without. The payload
/// must be at most [`PAYLOAD_BYTES_LIMIT`] bytes (the store checks its own, lower, limit
/// first).
pub fn encode_frame(
    seq: u64,
    ts_micros: i64,
    prev: Option<&Hash>,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|len| *len <= PAYLOAD_BYTES_LIMIT)
        .expect("payload length checked against record_bytes_max before framing");
    let start = out.len();
    let len_bytes = len.to_le_bytes();
    out.extend_from_slice(&len_bytes);
    let check = match prev {
        Some(_) => len_check(len_bytes),
        None => crc_of_len(len_bytes),
    };
    out.extend_from_slice(&check.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // the CRC, filled in below
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&ts_micros.to_le_bytes());
    if let Some(prev) = prev {
        out.extend_from_slice(prev);
    }
    out.extend_from_slice(payload);
    let crc = record_crc(&out[start..]);
    out[start + CRC_OFFSET..start + CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(
        decode_frame(&out[start..]).map(|(frame, used)| (frame.seq, used)),
        Ok((seq, out.len() - start)),
        "a record must decode as it was encoded"
    );
}

/// CRC32 of a whole record, skipping its CRC field.
fn record_crc(record: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(record.get(..CRC_OFFSET).unwrap_or_default());
    hasher.update(record.get(SEQ_OFFSET..).unwrap_or_default());
    hasher.finalize()
}

/// Decodes the record at the start of `bytes`, returning it and its size. Never panics, never
/// allocates, and never trusts a length it has not checked.
pub fn decode_frame(bytes: &[u8]) -> Result<(Frame<'_>, usize), FrameError> {
    let (total, header_len) = check_frame(bytes)?;
    Ok((frame_fields(&bytes[..total], header_len)?, total))
}

/// Checks the record at the start of `bytes` (its length, the length's check, and its CRC)
/// without decoding it; returns its total length and its header's length.
pub(crate) fn check_frame(bytes: &[u8]) -> Result<(usize, usize), FrameError> {
    let available = bytes.len() as u64;
    let truncated = |needed: u64| FrameError::Truncated { needed, available };
    let (Some(len), Some(check)) = (read_u32(bytes, LEN_OFFSET), read_u32(bytes, LEN_CRC_OFFSET))
    else {
        return Err(truncated(HEADER_LEN_V1 as u64));
    };
    let len_bytes = len.to_le_bytes();
    let header_len = if check == len_check(len_bytes) {
        HEADER_LEN
    } else if check == crc_of_len(len_bytes) {
        HEADER_LEN_V1
    } else {
        return Err(FrameError::BadLength);
    };
    if len > PAYLOAD_BYTES_LIMIT {
        return Err(FrameError::TooLarge { len });
    }
    let total = header_len + len as usize;
    let record = bytes.get(..total).ok_or(truncated(total as u64))?;
    let expected = read_u32(record, CRC_OFFSET).ok_or(FrameError::BadLength)?;
    let actual = record_crc(record);
    if expected != actual {
        return Err(FrameError::Checksum {
            expected,
            actual,
            record_len: total as u64,
        });
    }
    Ok((total, header_len))
}

/// The fields of `record`, a whole record that [`check_frame`] found sound, whose header is
/// `header_len` bytes long.
pub(crate) fn frame_fields(record: &[u8], header_len: usize) -> Result<Frame<'_>, FrameError> {
    let seq = read_u64(record, SEQ_OFFSET).ok_or(FrameError::BadLength)?;
    let ts = read_u64(record, TS_OFFSET).ok_or(FrameError::BadLength)?;
    let prev = match header_len {
        HEADER_LEN => Some(
            record
                .get(PREV_OFFSET..HEADER_LEN)
                .and_then(|b| b.try_into().ok())
                .ok_or(FrameError::BadLength)?,
        ),
        _ => None,
    };
    let (header, payload) = record.split_at(header_len.min(record.len()));
    Ok(Frame {
        seq,
        ts_micros: i64::from_le_bytes(ts.to_le_bytes()),
        prev,
        header,
        payload,
    })
}

/// The associated data of a sealed payload: the record's header without its CRC (bytes `0..8`
/// and `12..60`), so that the length, sequence number, time and `prev` are bound to it.
fn sealed_aad(header: &[u8]) -> [u8; HEADER_LEN - 4] {
    let mut aad = [0; HEADER_LEN - 4];
    if header.len() == HEADER_LEN {
        aad[..CRC_OFFSET].copy_from_slice(&header[..CRC_OFFSET]);
        aad[CRC_OFFSET..].copy_from_slice(&header[SEQ_OFFSET..]);
    }
    aad
}

/// The encoded event of a frame: its payload as stored, or, with `key` (an encrypted store),
/// the payload opened into `scratch`. A sealed payload that does not open (changed bytes, a
/// record moved from elsewhere, a record of another session) is an error, as is a version 1
/// record in an encrypted store.
pub fn open_payload<'a>(
    frame: &Frame<'a>,
    key: Option<&DataKey>,
    scratch: &'a mut Vec<u8>,
) -> Result<&'a [u8], String> {
    match key {
        None => Ok(frame.payload),
        Some(_) if frame.header.len() != HEADER_LEN => {
            Err("a version 1 record cannot be in an encrypted store".into())
        }
        Some(key) => key.open_payload(&sealed_aad(frame.header), frame.payload, scratch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PREV: Hash = [7; HASH_LEN];

    fn framed(seq: u64, ts: i64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(seq, ts, Some(&PREV), payload, &mut out);
        out
    }

    fn framed_v1(seq: u64, ts: i64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(seq, ts, None, payload, &mut out);
        out
    }

    #[test]
    fn zero_fill_is_not_a_record() {
        assert_eq!(decode_frame(&[0; 64]), Err(FrameError::BadLength));
    }

    #[test]
    fn frame_header_matches_the_documented_layout() {
        let bytes = framed(7, -1, b"abc");
        assert_eq!(bytes.len(), HEADER_LEN + 3);
        assert_eq!(&bytes[0..4], &3u32.to_le_bytes());
        assert_eq!(
            &bytes[4..8],
            &(crc32fast::hash(&3u32.to_le_bytes()) ^ 0x9E37_79B9).to_le_bytes()
        );
        let mut covered = bytes[..8].to_vec();
        covered.extend_from_slice(&bytes[12..]);
        assert_eq!(&bytes[8..12], &crc32fast::hash(&covered).to_le_bytes());
        assert_eq!(&bytes[12..20], &7u64.to_le_bytes());
        assert_eq!(&bytes[20..28], &(-1i64).to_le_bytes());
        assert_eq!(&bytes[28..60], &PREV);
        assert_eq!(&bytes[60..], b"abc");
    }

    #[test]
    fn version_1_records_still_decode_without_a_link() {
        let bytes = framed_v1(7, -1, b"abc");
        assert_eq!(bytes.len(), HEADER_LEN_V1 + 3);
        assert_eq!(
            &bytes[4..8],
            &crc32fast::hash(&3u32.to_le_bytes()).to_le_bytes()
        );
        assert_eq!(&bytes[28..], b"abc");
        let (frame, used) = decode_frame(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(
            frame,
            Frame {
                seq: 7,
                ts_micros: -1,
                prev: None,
                header: &bytes[..HEADER_LEN_V1],
                payload: b"abc"
            }
        );
    }

    #[test]
    fn the_chain_start_depends_on_the_key_and_a_hash_on_every_byte() {
        assert_ne!(chain_start("a"), chain_start("b"));
        let bytes = framed(1, 2, b"x");
        let mut other = bytes.clone();
        other[HEADER_LEN] ^= 1;
        assert_ne!(record_hash(&bytes), record_hash(&other));
        assert_eq!(record_hash(&bytes), *blake3::hash(&bytes).as_bytes());
    }

    #[test]
    fn a_record_built_in_place_equals_one_framed_from_its_payload() {
        let event = Event::UpdateLast {
            role: "assistant",
            content: "streamed",
        };
        let mut in_place = Vec::new();
        let hash = encode_record(9, -3, &PREV, &event, &mut in_place, None);
        assert_eq!(in_place, framed(9, -3, &encode_event(&event)));
        assert_eq!(hash, record_hash(&in_place));
    }

    #[test]
    fn a_sealed_record_opens_only_unchanged_under_its_own_key() {
        let key = DataKey::for_tests([1; 32]);
        let event = Event::Append {
            role: "user",
            content: "my card is 4111-1111",
        };
        let mut record = Vec::new();
        encode_record(5, 6, &PREV, &event, &mut record, Some(&key));
        assert_eq!(
            record.len(),
            HEADER_LEN + encode_event(&event).len() + crate::cipher::SEAL_OVERHEAD
        );
        assert!(
            !record.windows(4).any(|w| w == b"4111"),
            "plaintext on disk"
        );
        let mut scratch = Vec::new();
        let (frame, _) = decode_frame(&record).unwrap();
        let payload = open_payload(&frame, Some(&key), &mut scratch).unwrap();
        assert_eq!(decode_event(payload).unwrap(), event);
        // Another session's key.
        let other = DataKey::for_tests([2; 32]);
        assert!(open_payload(&frame, Some(&other), &mut Vec::new()).is_err());
        // The header is bound: a record given another sequence number, time or `prev`
        // (CRC fixed up) does not open.
        for field in [SEQ_OFFSET, TS_OFFSET, PREV_OFFSET] {
            let mut moved = record.clone();
            moved[field] ^= 1;
            let crc = record_crc(&moved);
            moved[CRC_OFFSET..SEQ_OFFSET].copy_from_slice(&crc.to_le_bytes());
            let (frame, _) = decode_frame(&moved).unwrap();
            assert!(
                open_payload(&frame, Some(&key), &mut Vec::new()).is_err(),
                "{field}"
            );
        }
        // Two seals of one event differ (fresh nonces).
        let mut again = Vec::new();
        encode_record(5, 6, &PREV, &event, &mut again, Some(&key));
        assert_ne!(again, record);
    }

    proptest! {
        #[test]
        fn frames_round_trip(
            seq: u64,
            ts: i64,
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let bytes = framed(seq, ts, &payload);
            let (frame, used) = decode_frame(&bytes).unwrap();
            prop_assert_eq!(used, bytes.len());
            let header = &bytes[..HEADER_LEN];
            let prev = Some(PREV);
            let expected = Frame { seq, ts_micros: ts, prev, header, payload: &payload };
            prop_assert_eq!(frame, expected);
            let bytes = framed_v1(seq, ts, &payload);
            let (frame, used) = decode_frame(&bytes).unwrap();
            prop_assert_eq!(used, bytes.len());
            let header = &bytes[..HEADER_LEN_V1];
            let expected = Frame { seq, ts_micros: ts, prev: None, header, payload: &payload };
            prop_assert_eq!(frame, expected);
        }

        #[test]
        fn every_cut_of_a_frame_is_truncated(
            payload in proptest::collection::vec(any::<u8>(), 0..100),
            cut in 0usize..128,
        ) {
            let bytes = framed(1, 2, &payload);
            let cut = cut % bytes.len();
            let decoded = decode_frame(&bytes[..cut]);
            let is_truncated = matches!(decoded, Err(FrameError::Truncated { .. }));
            prop_assert!(is_truncated);
        }

        #[test]
        fn every_flipped_bit_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 0..100),
            bit in 0usize..1280,
            v1: bool,
        ) {
            let mut bytes = if v1 { framed_v1(1, 2, &payload) } else { framed(1, 2, &payload) };
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_frame(&bytes).is_err());
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            if let Ok((frame, _)) = decode_frame(&bytes) {
                let _ = decode_event(frame.payload);
            }
            let _ = decode_event(&bytes);
        }

    }
}

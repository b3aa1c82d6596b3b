//! A batch: one object of the bucket, holding the bytes a store wrote to its files between two
//! shipments, as ranges of those files, and the files it removed meanwhile.
//!
//! ```text
//! // Format: { magic: [u8; 8] = "SLBATCH\0" | version: u32 = 1 | header_len: u64
//! //           | header_crc: u32 | header | data }
//! // header: { generation: u64 | writer: u64 | number: u64 | seq_end: u64 | time_micros: i64
//! //           | range_count: u32 | range_count × { name: str | offset: u64 | len: u64
//! //             | fresh: u8 | data_crc: u32 }
//! //           | removed_count: u32 | removed_count × name: str }
//! // data: the ranges' bytes, one after another, in the header's order
//! ```
//!
//! Integers are little-endian, a `str` is a u64 length and UTF-8 bytes. `seq_end`: every
//! record the store had written when the batch was taken (sequence number at or below it) is
//! in this batch or an earlier one. `fresh`: the file starts anew with this range (it was
//! rewritten shorter): a restore empties it first. A name is one the store's folder holds:
//! `{id:016x}-{n:08x}.seg`, `ERASED`, `keys/STORE` or `keys/{id:016x}.key`; a restore refuses
//! any other.

use crate::bytes::{Reader, Writer};
use crate::layout::{
    parse_key_name, parse_segment_name, ERASED_FILE, KEYS_DIR, KEY_SUFFIX, NUMBER_LIMIT,
    SEGMENT_SUFFIX, STORE_CHECK_FILE,
};

const MAGIC: [u8; 8] = *b"SLBATCH\0";
const VERSION: u32 = 1;
/// Magic, version, header length and CRC.
pub(super) const PREFIX_LEN: usize = 8 + 4 + 8 + 4;
/// The most data one batch carries: a shipment with more is split.
pub(super) const DATA_BYTES_MAX: u64 = 64 << 20;
/// The end of a range no store file reaches (segments stop at 512 GiB): a crafted batch
/// cannot make a restore write a sparse file of any size.
const FILE_BYTES_MAX: u64 = 1 << 40;
/// The largest header a reader accepts (a range takes at least 33 bytes: about 480,000).
pub(super) const HEADER_BYTES_MAX: u64 = 16 << 20;

/// One range of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Range {
    pub name: String,
    pub offset: u64,
    pub len: u64,
    pub fresh: bool,
    pub crc: u32,
}

/// A batch's header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Header {
    pub generation: u64,
    /// A random number the shipping process drew at its start: which process wrote it.
    pub writer: u64,
    pub number: u64,
    pub seq_end: u64,
    pub time_micros: i64,
    pub ranges: Vec<Range>,
    pub removed: Vec<String>,
}

/// What a name the bucket holds stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shipped {
    Segment { session_id: u64, number: u32 },
    Erased,
    StoreCheck,
    Key { session_id: u64 },
}

impl Shipped {
    /// The file a name stands for, if it is one the store ships.
    pub(super) fn of(name: &str) -> Option<Shipped> {
        if name == ERASED_FILE {
            return Some(Shipped::Erased);
        }
        if let Some(key) = name
            .strip_prefix(KEYS_DIR)
            .and_then(|rest| rest.strip_prefix('/'))
        {
            if key == STORE_CHECK_FILE {
                return Some(Shipped::StoreCheck);
            }
            let id = parse_key_name(key, KEY_SUFFIX).filter(|&id| id < NUMBER_LIMIT)?;
            return Some(Shipped::Key { session_id: id });
        }
        let (id, number) = parse_segment_name(name, SEGMENT_SUFFIX)?;
        (id < NUMBER_LIMIT).then_some(Shipped::Segment {
            session_id: id,
            number,
        })
    }

    /// The session whose file it is.
    pub(super) fn session(self) -> Option<u64> {
        match self {
            Shipped::Segment { session_id, .. } | Shipped::Key { session_id } => Some(session_id),
            Shipped::Erased | Shipped::StoreCheck => None,
        }
    }
}

/// The session a shipped name belongs to, if any.
pub(super) fn session_of(name: &str) -> Option<u64> {
    Shipped::of(name).and_then(Shipped::session)
}

/// Encodes a batch: the header (each range's CRC computed here) and `data`, the ranges'
/// bytes in order.
pub(super) fn encode(header: &mut Header, data: &[&[u8]]) -> Vec<u8> {
    for (range, bytes) in header.ranges.iter_mut().zip(data) {
        range.crc = crc32fast::hash(bytes);
    }
    let mut h = Writer::default();
    h.u64(header.generation);
    h.u64(header.writer);
    h.u64(header.number);
    h.u64(header.seq_end);
    h.i64(header.time_micros);
    h.u32(header.ranges.len() as u32);
    for range in &header.ranges {
        h.str(&range.name);
        h.u64(range.offset);
        h.u64(range.len);
        h.u8(u8::from(range.fresh));
        h.u32(range.crc);
    }
    h.u32(header.removed.len() as u32);
    for name in &header.removed {
        h.str(name);
    }
    let data_len: usize = data.iter().map(|d| d.len()).sum();
    let mut out = Vec::with_capacity(PREFIX_LEN + h.0.len() + data_len);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(h.0.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&h.0).to_le_bytes());
    out.extend_from_slice(&h.0);
    for bytes in data {
        out.extend_from_slice(bytes);
    }
    out
}

/// The header's length and CRC, from a batch's first [`PREFIX_LEN`] bytes.
pub(super) fn header_span(prefix: &[u8]) -> Result<(u64, u32), String> {
    let mut r = Reader(prefix);
    if r.take(8) != Some(&MAGIC[..]) {
        return Err("not a batch (its magic is wrong)".into());
    }
    match r.u32() {
        Some(VERSION) => {}
        Some(v) => {
            return Err(format!(
                "a batch of version {v}, which this build cannot read"
            ))
        }
        None => return Err("cut short".into()),
    }
    let (Some(len), Some(crc)) = (r.u64(), r.u32()) else {
        return Err("cut short".into());
    };
    if len > HEADER_BYTES_MAX {
        return Err(format!("its header claims {len} bytes"));
    }
    Ok((len, crc))
}

/// Decodes a header's bytes (`crc`: what the prefix says it is).
pub(super) fn decode_header(bytes: &[u8], crc: u32) -> Result<Header, String> {
    if crc32fast::hash(bytes) != crc {
        return Err("its header's checksum does not match".into());
    }
    let bad = || "its header does not decode".to_string();
    let mut r = Reader(bytes);
    let mut header = Header {
        generation: r.u64().ok_or_else(bad)?,
        writer: r.u64().ok_or_else(bad)?,
        number: r.u64().ok_or_else(bad)?,
        seq_end: r.u64().ok_or_else(bad)?,
        time_micros: r.i64().ok_or_else(bad)?,
        ..Header::default()
    };
    if [header.generation, header.number, header.seq_end]
        .iter()
        .any(|&n| n >= NUMBER_LIMIT)
    {
        return Err("its header holds a number beyond the format's range".into());
    }
    // A range takes at least 33 bytes, a removed name 8: counts the bytes cannot back fail.
    let ranges = r.count(33).ok_or_else(bad)?;
    header.ranges.reserve(ranges);
    for _ in 0..ranges {
        let range = Range {
            name: r.str_ref().map(str::to_owned).ok_or_else(bad)?,
            offset: r.u64().ok_or_else(bad)?,
            len: r.u64().ok_or_else(bad)?,
            fresh: r.flag().ok_or_else(bad)?,
            crc: r.u32().ok_or_else(bad)?,
        };
        if Shipped::of(&range.name).is_none() {
            return Err(format!("it names {:?}, which no store holds", range.name));
        }
        if range
            .offset
            .checked_add(range.len)
            .is_none_or(|end| end > FILE_BYTES_MAX)
        {
            return Err(format!("a range of {:?} ends past any file", range.name));
        }
        header.ranges.push(range);
    }
    let removed = r.count(8).ok_or_else(bad)?;
    for _ in 0..removed {
        let name = r.str_ref().map(str::to_owned).ok_or_else(bad)?;
        if Shipped::of(&name).is_none() {
            return Err(format!("it names {name:?}, which no store holds"));
        }
        header.removed.push(name);
    }
    if !r.is_empty() {
        return Err(bad());
    }
    Ok(header)
}

/// A whole batch, as read: its header and each range's bytes (CRC checked).
pub(super) fn decode(bytes: &[u8]) -> Result<(Header, Vec<&[u8]>), String> {
    let prefix = bytes.get(..PREFIX_LEN).ok_or("cut short")?;
    let (len, crc) = header_span(prefix)?;
    let end = PREFIX_LEN + usize::try_from(len).map_err(|_| "too long")?;
    let header = decode_header(bytes.get(PREFIX_LEN..end).ok_or("cut short")?, crc)?;
    let mut data = Vec::with_capacity(header.ranges.len());
    let mut at = end;
    for range in &header.ranges {
        let len = usize::try_from(range.len).map_err(|_| "too long")?;
        let bytes = at
            .checked_add(len)
            .and_then(|stop| bytes.get(at..stop))
            .ok_or_else(|| format!("the bytes of {:?} are cut short", range.name))?;
        if crc32fast::hash(bytes) != range.crc {
            return Err(format!(
                "the bytes of {:?} at {} do not match their checksum",
                range.name, range.offset
            ));
        }
        data.push(bytes);
        at += len;
    }
    if at != bytes.len() {
        return Err("bytes follow its last range".into());
    }
    Ok((header, data))
}

/// The key of batch `number` in the bucket.
pub(super) fn key(number: u64) -> String {
    format!("{LOG_DIR}/{number:016x}")
}

/// The folder of the batches.
pub(super) const LOG_DIR: &str = "log";

/// A batch's number from its name in [`LOG_DIR`].
pub(super) fn parse_key(name: &str) -> Option<u64> {
    crate::layout::parse_hex(name, 16).filter(|&n| n < NUMBER_LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_reads_back_and_any_flipped_byte_is_refused() {
        let mut header = Header {
            generation: 2,
            writer: 11,
            number: 7,
            seq_end: 99,
            time_micros: 5,
            ranges: vec![
                Range {
                    name: "0000000000000001-00000001.seg".into(),
                    offset: 0,
                    len: 3,
                    fresh: false,
                    crc: 0,
                },
                Range {
                    name: "keys/0000000000000001.key".into(),
                    offset: 0,
                    len: 2,
                    fresh: true,
                    crc: 0,
                },
            ],
            removed: vec!["ERASED".into()],
        };
        let bytes = encode(&mut header, &[b"abc", b"de"]);
        let (read, data) = decode(&bytes).unwrap();
        assert_eq!(read, header);
        assert_eq!(data, vec![&b"abc"[..], &b"de"[..]]);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "byte {i}");
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn names_outside_the_store_are_refused() {
        for name in [
            "../x.seg",
            "/etc/passwd",
            "keys/../../x",
            "LOCK",
            "CHECKPOINT",
            "0000000000000001-00000001.seg.tmp",
            "keys/0000000000000001.erasing",
            "4000000000000000-00000001.seg",
        ] {
            assert_eq!(Shipped::of(name), None, "{name}");
        }
        assert_eq!(
            Shipped::of("0000000000000002-00000003.seg"),
            Some(Shipped::Segment {
                session_id: 2,
                number: 3
            })
        );
    }
}

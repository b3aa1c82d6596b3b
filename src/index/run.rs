//! A run: one immutable file of the search index (`index/run-<number>.idx`), written whole
//! once and never changed; merged with others into a new run, then removed. `docs/FORMAT.md`,
//! "The search index", describes the bytes:
//!
//! ```text
//! postings   per term, in term order: (doc delta, term frequency) as LEB128 varints
//! docs       doc_count × 20 bytes: session id u64, position u32, version u32, length u32
//! terms      term_count × 24 bytes: hash u64, postings offset u64, count u32, crc u32
//! footer     40 bytes: magic "SLIXRUN1", version u32, doc_count u32, term_count u32,
//!            reserved u32, postings length u64, crc u32 (of docs, terms, footer), reserved u32
//! ```
//!
//! Open reads the footer, the docs and the terms (their CRC checked); a term's postings are
//! read when asked for, their own CRC checked first. Every count is checked against the file's
//! length before anything is allocated by it.

use std::path::{Path, PathBuf};

use crate::bytes::{Reader, Writer};
use crate::error::{Error, Result};
use crate::fs::{context, crc32_in_chunks, FileHandle, FileSystem, OpenMode, CRC_CHUNK};

/// First bytes of a run's footer.
pub const RUN_MAGIC: &[u8; 8] = b"SLIXRUN1";
/// The run format's version.
pub const RUN_VERSION: u32 = 1;
/// Bytes of the footer.
pub const FOOTER_BYTES: u64 = 40;
/// Bytes of a doc entry.
pub const DOC_BYTES: u64 = 20;
/// Bytes of a term entry.
pub const TERM_BYTES: u64 = 24;
/// The most bytes of tables (docs and terms) a run may hold, read whole when it is opened:
/// about 150 million messages' docs in one run.
pub const RUN_TABLES_MAX: u64 = 4 << 30;
/// Position of a session's doc of its key and name (no message has it).
pub const META_POSITION: u32 = u32::MAX;

/// One indexed text: a message of a session at a position, or the session's key and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Doc {
    /// The session's id.
    pub session: u64,
    /// The message's position in the session's live messages, or [`META_POSITION`].
    pub position: u32,
    /// Which indexing of that position this is: only the session's current version of a
    /// position counts (`coverage.rs`).
    pub version: u32,
    /// Tokens in the text.
    pub length: u32,
}

/// A term's postings in a run.
#[derive(Debug, Clone, Copy)]
pub struct TermEntry {
    /// The term's keyed hash.
    pub hash: u64,
    offset: u64,
    /// How many docs hold it.
    pub count: u32,
    crc: u32,
}

/// A posting: a run-local doc number and the term's frequency in it.
pub type Posting = (u32, u32);

/// An open run.
#[derive(Debug)]
pub struct Run {
    /// The run's number (its name).
    pub number: u64,
    path: PathBuf,
    file: Box<dyn FileHandle>,
    /// Its docs, by run-local number.
    pub docs: Vec<Doc>,
    terms: Vec<TermEntry>,
    postings_len: u64,
}

/// `index/run-<number as 16 hex digits>.idx`.
pub fn run_path(index_dir: &Path, number: u64) -> PathBuf {
    index_dir.join(format!("run-{number:016x}.idx"))
}

/// The most bytes a posting takes: the doc number's delta (a varint of at most 10 bytes) and
/// the term frequency (at most `u32::MAX`: 5 bytes).
const POSTING_BYTES_MAX: u64 = 15;

/// The length of a run's file name: `run-`, 16 hex digits, `.idx`.
pub const RUN_NAME_LEN: usize = 24;

/// The number of a run's file name.
pub fn parse_run_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("run-")?.strip_suffix(".idx")?;
    // Exactly as `run_path` writes it: 16 lowercase hex digits (`from_str_radix` alone would
    // take a sign and capitals, and so names the store never wrote), below the numbers' limit.
    let ours = hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let number = ours.then(|| u64::from_str_radix(hex, 16).ok())??;
    (number < RUN_NUMBER_LIMIT).then_some(number)
}

/// Run numbers are below this: no index ever takes that many, so a number at or above it (in
/// a name or a state) is not one the store wrote, and counting on from any number below it
/// cannot overflow.
pub const RUN_NUMBER_LIMIT: u64 = 1 << 62;

fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Writes a run's postings as they come (term by term, in term order), then its tables.
pub struct RunWriter {
    path: PathBuf,
    file: Box<dyn FileHandle>,
    buf: Vec<u8>,
    written: u64,
    terms: Vec<TermEntry>,
}

const WRITE_CHUNK: usize = 1 << 16;

impl RunWriter {
    /// Starts a run at `path` (a temporary name; the caller renames it into place).
    pub fn create(fs: &dyn FileSystem, path: &Path) -> Result<RunWriter> {
        let file = fs
            .open(path, OpenMode::Truncate)
            .map_err(context("creating", path))?;
        Ok(RunWriter {
            path: path.to_path_buf(),
            file,
            buf: Vec::with_capacity(WRITE_CHUNK * 2),
            written: 0,
            terms: Vec::new(),
        })
    }

    fn spill(&mut self, all: bool) -> Result<()> {
        if self.buf.len() >= WRITE_CHUNK || (all && !self.buf.is_empty()) {
            self.file
                .write_at(&self.buf, self.written)
                .map_err(context("writing", &self.path))?;
            self.written += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Adds a term's postings, sorted by doc number; terms come in increasing hash order.
    pub fn push_term(&mut self, hash: u64, postings: &[Posting]) -> Result<()> {
        if postings.is_empty() {
            return Ok(());
        }
        debug_assert!(self.terms.last().is_none_or(|t| t.hash < hash));
        let offset = self.written + self.buf.len() as u64;
        let start = self.buf.len();
        let mut previous = 0u32;
        for (i, &(doc, tf)) in postings.iter().enumerate() {
            let delta = if i == 0 { doc } else { doc - previous };
            push_varint(&mut self.buf, u64::from(delta));
            push_varint(&mut self.buf, u64::from(tf));
            previous = doc;
        }
        let crc = crc32fast::hash(&self.buf[start..]);
        self.terms.push(TermEntry {
            hash,
            offset,
            count: u32::try_from(postings.len()).unwrap_or(u32::MAX),
            crc,
        });
        self.spill(false)
    }

    /// Writes the docs, the terms and the footer, and syncs the file: a run is listed in the
    /// index's state only once its bytes are durable, so a power loss never leaves the state
    /// naming a run that is not all there (which would cost a rebuild).
    pub fn finish(mut self, docs: &[Doc]) -> Result<()> {
        self.spill(true)?;
        let postings_len = self.written;
        let mut w = Writer(Vec::with_capacity(
            docs.len() * DOC_BYTES as usize
                + self.terms.len() * TERM_BYTES as usize
                + FOOTER_BYTES as usize,
        ));
        for doc in docs {
            w.u64(doc.session);
            w.u32(doc.position);
            w.u32(doc.version);
            w.u32(doc.length);
        }
        for term in &self.terms {
            w.u64(term.hash);
            w.u64(term.offset);
            w.u32(term.count);
            w.u32(term.crc);
        }
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        w.0.extend_from_slice(RUN_MAGIC);
        w.u32(RUN_VERSION);
        w.u32(count(docs.len()));
        w.u32(count(self.terms.len()));
        w.u32(0);
        w.u64(postings_len);
        let crc = crc32fast::hash(&w.0);
        w.u32(crc);
        w.u32(0);
        let tables = w.0;
        self.file
            .write_at(&tables, postings_len)
            .map_err(context("writing", &self.path))?;
        self.file.sync().map_err(context("syncing", &self.path))
    }
}

impl Run {
    /// Opens the run `number` of `index_dir`, checking its footer and tables.
    pub fn open(fs: &dyn FileSystem, index_dir: &Path, number: u64) -> Result<Run> {
        let path = run_path(index_dir, number);
        let file = fs
            .open(&path, OpenMode::Read)
            .map_err(context("opening", &path))?;
        let size = file.size().map_err(context("reading", &path))?;
        let corrupt = |offset: u64, reason: &str| Error::Corrupt {
            path: path.clone(),
            offset,
            reason: reason.to_owned(),
        };
        if size < FOOTER_BYTES {
            return Err(corrupt(0, "shorter than a run's footer"));
        }
        let mut footer = [0u8; FOOTER_BYTES as usize];
        file.read_at(&mut footer, size - FOOTER_BYTES)
            .map_err(context("reading", &path))?;
        if &footer[..8] != RUN_MAGIC {
            return Err(corrupt(size - FOOTER_BYTES, "not a search index run"));
        }
        let mut f = Reader(&footer[8..]);
        let fields = (|| Some((f.u32()?, f.u32()?, f.u32()?, f.u32()?, f.u64()?)))();
        let Some((version, doc_count, term_count, _, postings_len)) = fields else {
            return Err(corrupt(size - FOOTER_BYTES, "a run's footer cut short"));
        };
        if version != RUN_VERSION {
            return Err(corrupt(size - FOOTER_BYTES, "unknown run version"));
        }
        let (doc_count, term_count) = (u64::from(doc_count), u64::from(term_count));
        let tables_len = doc_count * DOC_BYTES + term_count * TERM_BYTES;
        if tables_len > RUN_TABLES_MAX {
            // Read whole below: a crafted run (sparse, its CRC matching its zeros) must not
            // size that buffer. The index is rebuilt.
            return Err(corrupt(
                size - FOOTER_BYTES,
                "tables larger than a run may hold",
            ));
        }
        let expected = postings_len
            .checked_add(tables_len)
            .and_then(|n| n.checked_add(FOOTER_BYTES));
        if expected != Some(size) {
            return Err(corrupt(
                size - FOOTER_BYTES,
                "counts do not fit the file's length",
            ));
        }
        // The tables' CRC first, through a fixed buffer: counts that fit the file's length are
        // not yet bytes the file holds (a sparse file), and they size the buffer below.
        let checked = tables_len + FOOTER_BYTES - 8;
        let crc = crc32_in_chunks(&*file, postings_len, checked, CRC_CHUNK)
            .map_err(context("reading", &path))?;
        if Some(crc) != Reader(&footer[FOOTER_BYTES as usize - 8..]).u32() {
            return Err(corrupt(postings_len, "the run's tables fail their CRC"));
        }
        // Bounded by bytes the CRC just read (the footer is read already).
        let mut tables = vec![0u8; tables_len as usize];
        file.read_at(&mut tables, postings_len)
            .map_err(context("reading", &path))?;
        let mut r = Reader(&tables);
        let decoded = (|| {
            let docs = (0..doc_count)
                .map(|_| {
                    Some(Doc {
                        session: r.u64()?,
                        position: r.u32()?,
                        version: r.u32()?,
                        length: r.u32()?,
                    })
                })
                .collect::<Option<Vec<Doc>>>()?;
            let terms = (0..term_count)
                .map(|_| {
                    Some(TermEntry {
                        hash: r.u64()?,
                        offset: r.u64()?,
                        count: r.u32()?,
                        crc: r.u32()?,
                    })
                })
                .collect::<Option<Vec<TermEntry>>>()?;
            Some((docs, terms))
        })();
        let Some((docs, terms)) = decoded else {
            return Err(corrupt(postings_len, "the run's tables cut short"));
        };
        let ordered = terms
            .windows(2)
            .all(|w| w[0].hash < w[1].hash && w[0].offset < w[1].offset);
        // A term's postings are no longer than its count of postings can be written in, so
        // the buffer they are read into is bounded by docs already read (a posting names a
        // doc, at most once).
        let ends = terms.iter().skip(1).map(|t| t.offset).chain([postings_len]);
        let in_bounds = terms.iter().zip(ends).all(|(t, end)| {
            let span = end.saturating_sub(t.offset);
            t.offset < postings_len
                && u64::from(t.count) <= doc_count
                && span <= u64::from(t.count) * POSTING_BYTES_MAX
        });
        if !ordered || !in_bounds {
            return Err(corrupt(
                postings_len,
                "the run's terms are out of order or bounds",
            ));
        }
        Ok(Run {
            number,
            path,
            file,
            docs,
            terms,
            postings_len,
        })
    }

    /// The run's terms, in hash order.
    pub fn terms(&self) -> &[TermEntry] {
        &self.terms
    }

    /// The entry of a term, if the run holds it.
    pub fn term(&self, hash: u64) -> Option<&TermEntry> {
        self.terms
            .binary_search_by_key(&hash, |t| t.hash)
            .ok()
            .map(|i| &self.terms[i])
    }

    /// The postings of a term entry of this run, CRC checked.
    pub fn postings(&self, entry: &TermEntry) -> Result<Vec<Posting>> {
        let at = self
            .terms
            .binary_search_by_key(&entry.hash, |t| t.hash)
            .unwrap_or(self.terms.len());
        let end = self
            .terms
            .get(at + 1)
            .map_or(self.postings_len, |next| next.offset);
        let corrupt = |reason: &str| Error::Corrupt {
            path: self.path.clone(),
            offset: entry.offset,
            reason: reason.to_owned(),
        };
        // Offsets were checked increasing and below the postings' length at open.
        let mut bytes = vec![0u8; (end - entry.offset) as usize];
        self.file
            .read_at(&mut bytes, entry.offset)
            .map_err(context("reading", &self.path))?;
        if crc32fast::hash(&bytes) != entry.crc {
            return Err(corrupt("a term's postings fail their CRC"));
        }
        let mut out = Vec::with_capacity(entry.count as usize);
        let (mut at, mut doc) = (0usize, 0u64);
        for i in 0..entry.count {
            let delta =
                read_varint(&bytes, &mut at).ok_or_else(|| corrupt("postings cut short"))?;
            let tf = read_varint(&bytes, &mut at).ok_or_else(|| corrupt("postings cut short"))?;
            doc = if i == 0 {
                delta
            } else {
                doc.saturating_add(delta)
            };
            if doc >= self.docs.len() as u64 || tf == 0 || tf > u64::from(u32::MAX) {
                return Err(corrupt("a posting names no doc of the run"));
            }
            out.push((doc as u32, tf as u32));
        }
        Ok(out)
    }

    /// The run's bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.postings_len
            + self.docs.len() as u64 * DOC_BYTES
            + self.terms.len() as u64 * TERM_BYTES
            + FOOTER_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::StdFs;

    #[test]
    fn a_run_reads_back_what_was_written_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let fs = StdFs;
        let docs: Vec<Doc> = (0..300)
            .map(|i| Doc {
                session: 7 + u64::from(i % 3),
                position: i,
                version: 1,
                length: 10 + i,
            })
            .collect();
        let mut writer = RunWriter::create(&fs, &run_path(dir.path(), 5)).unwrap();
        let a: Vec<Posting> = (0..300).step_by(7).map(|d| (d, d % 5 + 1)).collect();
        writer.push_term(3, &a).unwrap();
        writer.push_term(9, &[(299, 200)]).unwrap();
        writer.finish(&docs).unwrap();
        let run = Run::open(&fs, dir.path(), 5).unwrap();
        assert_eq!(run.docs, docs);
        assert_eq!(run.postings(run.term(3).unwrap()).unwrap(), a);
        assert_eq!(
            run.postings(run.term(9).unwrap()).unwrap(),
            vec![(299, 200)]
        );
        assert!(run.term(4).is_none());
        assert_eq!(
            run.bytes(),
            std::fs::metadata(run_path(dir.path(), 5)).unwrap().len()
        );
        // A flipped byte in the postings fails that term's CRC; in the tables, the open.
        let path = run_path(dir.path(), 5);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[1] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let run = Run::open(&fs, dir.path(), 5).unwrap();
        assert!(run.postings(run.term(3).unwrap()).is_err());
        let at = bytes.len() - 50;
        bytes[at] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(Run::open(&fs, dir.path(), 5).is_err());
        std::fs::write(&path, &bytes[..30]).unwrap();
        assert!(Run::open(&fs, dir.path(), 5).is_err());
        assert_eq!(parse_run_name("run-0000000000000005.idx"), Some(5));
        assert_eq!(parse_run_name("run-5.idx"), None);
        // Only the name the store writes: no sign, no capitals.
        assert_eq!(parse_run_name("run-+00000000000000a.idx"), None);
        assert_eq!(parse_run_name("run-000000000000000A.idx"), None);
        assert_eq!(parse_run_name("run-000000000000000a.idx"), Some(10));
        // At or above the numbers' limit: not a name the store wrote.
        assert_eq!(parse_run_name("run-4000000000000000.idx"), None);
        assert_eq!(parse_run_name("run-ffffffffffffffff.idx"), None);
        assert_eq!(
            parse_run_name("run-3fffffffffffffff.idx"),
            Some(RUN_NUMBER_LIMIT - 1)
        );
    }

    /// Opens run 1 of a sparse file of the length a footer of `docs` and `terms` asks for, its
    /// tables all zeros (their CRC field zero too); with the largest read it made.
    fn open_sparse_run(docs: u32, terms: u32) -> (Result<Run>, usize) {
        let dir = tempfile::tempdir().unwrap();
        let path = run_path(dir.path(), 1);
        let size = u64::from(docs) * DOC_BYTES + u64::from(terms) * TERM_BYTES + FOOTER_BYTES;
        let mut footer = Writer(Vec::new());
        footer.0.extend_from_slice(RUN_MAGIC);
        footer.u32(RUN_VERSION);
        footer.u32(docs);
        footer.u32(terms);
        footer.u32(0);
        footer.u64(0);
        footer.u32(0);
        footer.u32(0);
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(size).unwrap();
        std::os::unix::fs::FileExt::write_at(&file, &footer.0, size - FOOTER_BYTES).unwrap();
        let fs = crate::fs::counted::CountedFs::default();
        let opened = Run::open(&fs, dir.path(), 1);
        (opened, fs.largest_read())
    }

    /// A footer whose counts ask for more tables than a run may hold, in a sparse file of the
    /// length they ask for (its CRC would match its zeros): refused before any read of them.
    #[test]
    fn a_run_whose_tables_exceed_the_limit_is_refused_unread() {
        let (opened, largest) = open_sparse_run(u32::MAX, u32::MAX);
        assert!(
            matches!(&opened, Err(Error::Corrupt { reason, .. }) if reason.contains("may hold")),
            "{:?}",
            opened.err()
        );
        assert!(
            largest <= FOOTER_BYTES as usize,
            "a read of {largest} bytes"
        );
    }

    /// A footer whose counts fit the file's length, in a sparse file of that length (64 MiB
    /// of tables): no read is sized by the counts before the tables' CRC holds.
    #[test]
    fn a_sparse_run_of_the_length_its_counts_ask_allocates_nothing_by_them() {
        let (opened, largest) = open_sparse_run(1 << 21, 1 << 21);
        assert!(
            matches!(&opened, Err(Error::Corrupt { reason, .. }) if reason.contains("CRC")),
            "{:?}",
            opened.err()
        );
        assert!(largest <= CRC_CHUNK, "a read of {largest} bytes");
    }

    /// A term whose postings would span more bytes than its count of postings can take.
    #[test]
    fn a_term_spanning_more_than_its_postings_can_take_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let fs = StdFs;
        let docs = [Doc {
            session: 1,
            position: 0,
            version: 1,
            length: 1,
        }];
        let mut writer = RunWriter::create(&fs, &run_path(dir.path(), 2)).unwrap();
        writer.push_term(3, &[(0, 1)]).unwrap();
        writer.finish(&docs).unwrap();
        assert!(Run::open(&fs, dir.path(), 2).is_ok());
        // The same tables after 64 more bytes of postings: the term's span grows past what
        // one posting can take, and the CRC of the tables still holds.
        let path = run_path(dir.path(), 2);
        let bytes = std::fs::read(&path).unwrap();
        let postings_len =
            u64::from_le_bytes(bytes[bytes.len() - 16..bytes.len() - 8].try_into().unwrap());
        let (postings, tables) = bytes.split_at(postings_len as usize);
        let mut grown = postings.to_vec();
        grown.extend_from_slice(&[0; 64]);
        let mut tail = tables.to_vec();
        let at = tail.len() - 16;
        tail[at..at + 8].copy_from_slice(&(postings_len + 64).to_le_bytes());
        let crc_at = tail.len() - 8;
        let crc = crc32fast::hash(&tail[..crc_at]);
        tail[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
        grown.extend_from_slice(&tail);
        std::fs::write(&path, &grown).unwrap();
        let opened = Run::open(&fs, dir.path(), 2);
        assert!(
            matches!(&opened, Err(Error::Corrupt { reason, .. }) if reason.contains("bounds")),
            "{:?}",
            opened.err()
        );
    }
}

//! A session's message locations as the checkpoint holds them, for a session whose own are not
//! in memory: open reads each session's metadata from the checkpoint but leaves its locations
//! on disk, and the first read or write of the session reads them (`store/residence.rs`); a
//! memory budget may drop them again while they are still what the checkpoint holds.
//!
//! A [`Block`] names one session's locations in the checkpoint's location section: where they
//! start, how many there are (live, then kept for `undo_clear`, 24 bytes each) and their CRC.
//! It holds the checkpoint file open, so a later checkpoint renamed over it (or an erasure that
//! removes it, which first reads every block back, see `store/checkpointing.rs`) does not
//! change what it reads.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::{Error, Result};
use crate::fs::{crc32_in_chunks, FileHandle};
use crate::location::MessageLoc;

/// Bytes of one message location in a checkpoint's location section.
pub(crate) const LOC_BYTES: usize = 24;
/// The buffer a large block's CRC is computed through before it is read whole.
const CHUNK: usize = 64 << 10;

/// The most bytes of locations one session's block may hold (about 44 million messages): a
/// longer block is not read, and the session is replayed from its files.
pub(crate) const BLOCK_BYTES_MAX: u64 = 1 << 30;

/// An open checkpoint file whose location section blocks are read from.
pub(crate) struct BlockFile {
    /// `None` once detached: closed, its blocks no longer read.
    file: RwLock<Option<Box<dyn FileHandle>>>,
    /// About to be detached: its blocks are still read, but nothing more is parked in it.
    closing: AtomicBool,
    path: PathBuf,
    /// Where the location section starts in the file.
    section: u64,
}

impl BlockFile {
    /// A checkpoint file opened as `file` (at `path`), whose location section starts at
    /// `section`.
    pub(crate) fn new(file: Box<dyn FileHandle>, path: PathBuf, section: u64) -> BlockFile {
        BlockFile {
            file: RwLock::new(Some(file)),
            closing: AtomicBool::new(false),
            path,
            section,
        }
    }

    /// Closes the file: before an erasure removes the checkpoint. Its blocks are no longer
    /// read; what they describe can still be matched (`Block`'s equality), so that a later
    /// checkpoint's copy takes their place.
    pub(crate) fn detach(&self) {
        self.closing();
        self.file.write().take();
    }

    /// Parks nothing more in the file (its blocks are still read): before it is detached.
    pub(crate) fn closing(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Where the location section starts in the file.
    pub(crate) fn section_at(&self) -> u64 {
        self.section
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Fills `buf` from `at` in the file (a cold session's entry in the body, read again at
    /// its first use: `checkpoint::Cold`); `what` names it in the error.
    pub(crate) fn read_at(&self, buf: &mut [u8], at: u64, what: &str) -> Result<()> {
        let damaged = |reason: String| Error::Corrupt {
            path: self.path.clone(),
            offset: at,
            reason: format!("the checkpoint's {what}: {reason}"),
        };
        let file = self.file.read();
        let Some(file) = file.as_deref() else {
            return Err(damaged("its checkpoint was removed (an erasure)".into()));
        };
        file.read_at(buf, at)
            .map_err(|e| damaged(format!("unreadable ({e})")))
    }
}

/// Where a checkpoint holds a session's message locations, as its view knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Home {
    /// In memory only: no checkpoint block the store reads holds them as they are.
    #[default]
    Memory,
    /// Not in memory (the view's lists are empty): the block holds them.
    Parked(Block),
    /// In memory, and still equal to the block (its image): a memory budget may park them.
    Image(Block),
}

impl Home {
    /// The block, parked or image.
    pub(crate) fn block(&self) -> Option<&Block> {
        match self {
            Home::Memory => None,
            Home::Parked(block) | Home::Image(block) => Some(block),
        }
    }
}

/// One session's message locations in a checkpoint's location section.
#[derive(Clone)]
pub struct Block {
    file: Arc<BlockFile>,
    /// From the start of the section.
    offset: u64,
    /// Bytes of the records of the messages kept for `undo_clear`.
    cleared_bytes: u64,
    messages: u32,
    cleared: u32,
    crc: u32,
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Block")
            .field("offset", &self.offset)
            .field("messages", &self.messages)
            .field("cleared", &self.cleared)
            .finish_non_exhaustive()
    }
}

/// The same block of the same file.
impl PartialEq for Block {
    fn eq(&self, other: &Block) -> bool {
        Arc::ptr_eq(&self.file, &other.file)
            && (self.offset, self.messages, self.cleared, self.crc)
                == (other.offset, other.messages, other.cleared, other.crc)
    }
}
impl Eq for Block {}

impl Block {
    /// The block at `offset` of `file`'s section, of `messages` live locations and `cleared`
    /// kept ones whose records take `cleared_bytes`, under `crc`.
    pub(crate) fn new(
        file: Arc<BlockFile>,
        offset: u64,
        (messages, cleared): (u32, u32),
        crc: u32,
        cleared_bytes: u64,
    ) -> Block {
        Block {
            file,
            offset,
            messages,
            cleared,
            crc,
            cleared_bytes,
        }
    }

    /// The same locations at `offset` of `file`'s section (a later checkpoint's copy).
    pub(crate) fn moved_to(&self, file: &Arc<BlockFile>, offset: u64) -> Block {
        Block {
            file: Arc::clone(file),
            offset,
            ..self.clone()
        }
    }

    /// The CRC-32 of its bytes.
    pub(crate) fn crc(&self) -> u32 {
        self.crc
    }

    /// Live messages it holds.
    pub(crate) fn messages(&self) -> usize {
        self.messages as usize
    }

    /// Bytes of the records of the messages it keeps for `undo_clear`.
    pub(crate) fn cleared_bytes(&self) -> u64 {
        self.cleared_bytes
    }

    /// The file it is read from, to detach it.
    pub(crate) fn file(&self) -> &Arc<BlockFile> {
        &self.file
    }

    /// Its file is open and not about to close (a detached file was marked closing first):
    /// locations may be parked in it.
    pub(crate) fn attached(&self) -> bool {
        !self.file.closing.load(Ordering::SeqCst)
    }

    /// Its length in bytes: the memory its locations take once read.
    pub(crate) fn len(&self) -> u64 {
        (u64::from(self.messages) + u64::from(self.cleared)) * LOC_BYTES as u64
    }

    /// Its bytes, once their CRC is right. A block larger than [`CHUNK`] is first checked
    /// through a fixed buffer, so a damaged count never makes a buffer of its size.
    pub(crate) fn bytes(&self) -> Result<Vec<u8>> {
        let f = &*self.file;
        let len = self.len();
        let at = f.section + self.offset;
        let damaged = |reason: &str| Error::Corrupt {
            path: f.path.clone(),
            offset: at,
            reason: format!("the checkpoint's message locations of a session: {reason}"),
        };
        if len > BLOCK_BYTES_MAX {
            // Read whole below: a crafted checkpoint (sparse, the CRC matching its zeros)
            // must not size that buffer. The session is replayed from its files instead.
            return Err(damaged("more than a checkpoint's block may hold"));
        }
        let whole = usize::try_from(len).map_err(|_| damaged("too many"))?;
        let file = f.file.read();
        let Some(file) = file.as_deref() else {
            return Err(damaged("its checkpoint was removed (an erasure)"));
        };
        let unreadable = |e: std::io::Error| damaged(&format!("unreadable ({e})"));
        if len > CHUNK as u64
            && crc32_in_chunks(file, at, len, CHUNK).map_err(unreadable)? != self.crc
        {
            return Err(damaged("CRC mismatch"));
        }
        let mut bytes = vec![0u8; whole];
        file.read_at(&mut bytes, at).map_err(unreadable)?;
        if crc32fast::hash(&bytes) != self.crc {
            return Err(damaged("CRC mismatch"));
        }
        Ok(bytes)
    }

    /// Its locations: the live messages', then those kept for `undo_clear`.
    pub(crate) fn read(&self) -> Result<(Vec<MessageLoc>, Vec<MessageLoc>)> {
        Ok(decode_locs(&self.bytes()?, self.messages()))
    }
}

/// The locations a block's `bytes` hold: the first `messages` are the live messages', the
/// rest those kept for `undo_clear`.
pub(crate) fn decode_locs(bytes: &[u8], messages: usize) -> (Vec<MessageLoc>, Vec<MessageLoc>) {
    let mut locs = bytes.chunks_exact(LOC_BYTES).map(decode_loc);
    let live = locs.by_ref().take(messages).collect();
    (live, locs.collect())
}

/// Appends the encoding of `loc` to `out`.
pub(crate) fn encode_loc(out: &mut Vec<u8>, loc: &MessageLoc) {
    out.extend_from_slice(&loc.segment.to_le_bytes());
    out.extend_from_slice(&loc.len.to_le_bytes());
    out.extend_from_slice(&loc.packed.to_le_bytes());
    out.extend_from_slice(&loc.created_at.to_le_bytes());
}

/// The location `bytes` (24 of them) encode.
fn decode_loc(bytes: &[u8]) -> MessageLoc {
    let word = |at: usize, n: usize| {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&bytes[at..at + n]);
        u64::from_le_bytes(b)
    };
    MessageLoc {
        segment: word(0, 4) as u32,
        len: word(4, 4) as u32,
        packed: word(8, 8),
        created_at: word(16, 8) as i64,
    }
}

//! Where a message or a record lies in a session's segments: the 24 bytes per live message
//! that are the projection's memory, and the position of a record being applied.

/// Where a live message's current content lies, and when the message was appended.
/// 24 bytes: this is the per-message memory of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLoc {
    /// Segment number within the session.
    pub segment: u32,
    /// Size of the record in bytes, header included.
    pub len: u32,
    /// The record's byte offset in the segment (bits 0..40) and, for a message of an
    /// `AppendBatch` record, its index in the batch (bits 40..52) and the batch's size minus
    /// one (bits 52..64). See [`MessageLoc::offset`].
    pub packed: u64,
    /// When the message was appended (µs since the epoch); `update_last` keeps it.
    pub created_at: i64,
}
const _: () = assert!(std::mem::size_of::<MessageLoc>() == 24);

/// Bits of [`MessageLoc::packed`] that hold the record's offset: segments are at most 1 TiB.
pub const OFFSET_BITS: u32 = 40;
/// Most messages one `append_batch` record holds.
pub const BATCH_MESSAGES_MAX: usize = 4096;
/// The bits of [`MessageLoc::packed`] that hold the offset.
pub const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;
const INDEX_BITS: u32 = 12;
const _: () = assert!(BATCH_MESSAGES_MAX == 1 << INDEX_BITS);

impl MessageLoc {
    /// A message that has its record to itself.
    pub fn single(segment: u32, len: u32, offset: u64, created_at: i64) -> MessageLoc {
        MessageLoc::in_batch(segment, len, offset, created_at, 0, 1)
    }

    /// Message `index` of a batch record of `count` messages (1 ..= `BATCH_MESSAGES_MAX`).
    pub fn in_batch(
        segment: u32,
        len: u32,
        offset: u64,
        created_at: i64,
        index: usize,
        count: usize,
    ) -> MessageLoc {
        debug_assert!(offset <= OFFSET_MASK && index < count && count <= BATCH_MESSAGES_MAX);
        let packed = (offset & OFFSET_MASK)
            | ((index as u64) << OFFSET_BITS)
            | ((count.saturating_sub(1) as u64) << (OFFSET_BITS + INDEX_BITS));
        MessageLoc {
            segment,
            len,
            packed,
            created_at,
        }
    }

    /// The byte offset of the record in its segment.
    pub fn offset(&self) -> u64 {
        self.packed & OFFSET_MASK
    }

    /// The message's index in its record (0 unless the record is a batch).
    pub fn index(&self) -> usize {
        ((self.packed >> OFFSET_BITS) & ((1 << INDEX_BITS) - 1)) as usize
    }

    /// How many messages its record holds.
    pub fn batch_len(&self) -> usize {
        (self.packed >> (OFFSET_BITS + INDEX_BITS)) as usize + 1
    }

    /// The bytes of its record this message accounts for: a batch's messages share theirs.
    pub fn weight(&self) -> u64 {
        u64::from(self.len) / self.batch_len() as u64
    }
}

/// Where a record being applied lies, and its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLoc {
    /// The record's sequence number.
    pub seq: u64,
    /// Segment number within the session.
    pub segment: u32,
    /// Byte offset of the record in the segment.
    pub offset: u64,
    /// Size of the record in bytes, header included.
    pub len: u32,
}

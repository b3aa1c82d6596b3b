//! The little-endian fields of the store's own files (the checkpoint, the search index's
//! state): a [`Writer`] that appends them, and a [`Reader`] that never reads past its bytes
//! (every read is `None` at the end) and never takes a count it read for more items than the
//! bytes left can hold.

/// Appends little-endian fields to a buffer.
#[derive(Default)]
pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u128(&mut self, v: u128) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// A string: its length as a u64, then its bytes.
    pub(crate) fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
    /// An optional string: 0, or 1 and the string.
    pub(crate) fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
            None => self.u8(0),
        }
    }
}

/// Reads little-endian fields off a byte slice; `None` past its end.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    pub(crate) fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    /// A byte that must be 0 or 1.
    pub(crate) fn flag(&mut self) -> Option<bool> {
        match self.u8()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
    /// A u64 length.
    pub(crate) fn len(&mut self) -> Option<usize> {
        usize::try_from(self.u64()?).ok()
    }
    /// A u32 count of items of at least `size` bytes each, refused when the bytes left cannot
    /// hold them: nothing is ever allocated by a count the bytes cannot back.
    pub(crate) fn count(&mut self, size: usize) -> Option<usize> {
        let n = self.u32()? as usize;
        (n.checked_mul(size)? <= self.0.len()).then_some(n)
    }
    /// A string, borrowed from the bytes (checked to be UTF-8).
    pub(crate) fn str_ref(&mut self) -> Option<&'a str> {
        let n = self.len()?;
        std::str::from_utf8(self.take(n)?).ok()
    }
    /// An optional string, borrowed from the bytes.
    pub(crate) fn opt_str_ref(&mut self) -> Option<Option<&'a str>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.str_ref()?)),
            _ => None,
        }
    }
    /// True once every byte was read.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_back_and_nothing_reads_past_the_end() {
        let mut w = Writer::default();
        w.u32(7);
        w.opt_str(Some("hé"));
        w.opt_str(None);
        w.u32(3);
        let mut r = Reader(&w.0);
        assert_eq!(r.u32(), Some(7));
        assert_eq!(r.opt_str_ref(), Some(Some("hé")));
        assert_eq!(r.opt_str_ref(), Some(None));
        assert_eq!(r.count(1), None, "three items cannot fit in no bytes");
        assert!(r.is_empty() && r.u8().is_none());
    }
}

//! A checkpoint's bytes: written once here, read once here (`docs/FORMAT.md`, "The
//! checkpoint").

use std::sync::Arc;

use crate::bytes::{Reader, Writer};
use crate::claim::SegmentStat;

use super::cold::{Cold, ColdEntry, STREAM_CHUNK};
pub(super) use super::entry::Section;
use super::entry::{EntryRef, SECTION_VERSION};
use super::folder::Recorded;
use crate::anchor::Anchored;
use crate::error::Result;
use crate::fs::FileStat;
use crate::parked::{encode_loc, BlockFile, LOC_BYTES};
use crate::projection::SessionView;
use crate::record::Hash;
use crate::recovery::ReplayedSession;

const MAGIC: [u8; 8] = *b"SLCKPT\0\0";
/// Version 2 added each session's chain head and newest segment's format version; version 3
/// the messages kept for undo, the tombstones and fork origins; version 4 the archived flag and
/// the window of recent ids; version 5 the size of the window it was written with; version 6
/// each segment's change time. Version 7 has the body of version 6; a store that writes it may
/// also leave the running marker beside it (`CHECKPOINT.running`: segments changed after the
/// checkpoint was written), which a store that reads only version 6 would not know of. Version 8
/// moves each session's message locations out of its entry into a section after the body
/// (the header gives that section's length), so open reads none of them.
pub(super) const VERSION: u32 = 8;
/// The oldest version read: versions 6 and 7 have one body, with the locations in it.
const VERSION_OLDEST: u32 = 6;

/// How a segment without a change time is recorded.
const NO_CHANGE_TIME: i64 = i64::MIN;
/// Magic, version, the body's length and CRC; from version 8, the location section's length.
const HEADER_LEN_OLD: usize = 8 + 4 + 8 + 4;
pub(super) const HEADER_LEN: usize = HEADER_LEN_OLD + 8;

/// One session as the checkpoint records it.
pub(crate) struct Entry<'a> {
    pub session_id: u64,
    pub oldest: u32,
    pub newest: u32,
    pub newest_len: u64,
    pub head: Hash,
    pub newest_version: u32,
    pub view: &'a SessionView,
}

/// The sessions of a checkpoint, encoded one at a time (each while its session's locks are
/// held, so that no lock is held across sessions).
#[derive(Default)]
pub(crate) struct Sessions {
    count: u64,
    bytes: Writer,
    /// The location section: each session's block, in the order of their entries.
    locations: Vec<u8>,
    /// Where the last session added went, until [`Sessions::take_last`].
    last: Option<Placed>,
}

/// Where a session's entry went among the entries, and its block in the location section.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placed {
    /// Where its entry starts among the entries, and its length.
    pub entry_at: u64,
    pub entry_len: usize,
    pub block_at: u64,
}

impl Sessions {
    /// Adds a session. A session whose locations are parked has them copied from the
    /// checkpoint that holds them, which fails if they cannot be read back whole.
    /// Returns where its locations start in the location section.
    pub(crate) fn add(&mut self, e: &Entry<'_>) -> Result<u64> {
        let v = e.view;
        let start = self.locations.len();
        let block_crc = match v.parked() {
            Some(block) => {
                // Checked against the block's CRC as it was read.
                self.locations.extend_from_slice(&block.bytes()?);
                block.crc()
            }
            None => {
                for m in v.messages.iter().chain(&v.cleared) {
                    encode_loc(&mut self.locations, m);
                }
                crc32fast::hash(&self.locations[start..])
            }
        };
        self.count += 1;
        let entry_at = self.bytes.0.len();
        let w = &mut self.bytes;
        let v = e.view;
        w.u64(e.session_id);
        w.u32(e.oldest);
        w.u32(e.newest);
        w.u64(e.newest_len);
        w.0.extend_from_slice(&e.head);
        w.u32(e.newest_version);
        w.u64(v.bytes_written);
        w.str(&v.key);
        w.i64(v.created_at);
        w.i64(v.last_activity);
        for s in [
            &v.name,
            &v.agent_alias,
            &v.channel_id,
            &v.room_id,
            &v.sender_id,
        ] {
            w.opt_str(s.as_deref());
        }
        w.str(&v.state);
        w.opt_str(v.turn_id.as_deref());
        match v.turn_started_at {
            Some(t) => {
                w.u8(1);
                w.i64(t);
            }
            None => w.u8(0),
        }
        let cleared = (self.locations.len() - start) / LOC_BYTES - v.message_count();
        w.u64(v.message_count() as u64);
        w.u64(cleared as u64);
        w.u64(v.live_bytes);
        w.u64(v.cleared_bytes());
        w.u32(block_crc);
        match v.cleared_by {
            Some((seq, ts)) => {
                w.u8(1);
                w.u64(seq);
                w.i64(ts);
            }
            None => w.u8(0),
        }
        w.u8(u8::from(v.deleted));
        w.i64(v.deleted_at);
        w.u64(v.last_seq);
        match &v.fork_origin {
            Some((source, at_seq)) => {
                w.u8(1);
                w.str(source);
                w.u64(*at_seq);
            }
            None => w.u8(0),
        }
        w.u8(u8::from(v.archived));
        w.u64(v.recent_ids.len() as u64);
        for digest in v.recent_ids.digests() {
            w.u128(digest);
        }
        self.last = Some(Placed {
            entry_at: entry_at as u64,
            entry_len: self.bytes.0.len() - entry_at,
            block_at: start as u64,
        });
        Ok(start as u64)
    }

    /// Adds a session as a checkpoint of this version recorded it: its entry's bytes and its
    /// block, copied (`Copier`). Returns where they went.
    pub(crate) fn add_copied(&mut self, entry: &[u8], block: &[u8]) -> Placed {
        let placed = Placed {
            entry_at: self.bytes.0.len() as u64,
            entry_len: entry.len(),
            block_at: self.locations.len() as u64,
        };
        self.bytes.0.extend_from_slice(entry);
        self.locations.extend_from_slice(block);
        self.count += 1;
        self.last = None;
        placed
    }

    /// No session was added.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The location section's length so far.
    pub(crate) fn section_len(&self) -> usize {
        self.locations.len()
    }

    /// The entries' length so far.
    pub(crate) fn entries_len(&self) -> usize {
        self.bytes.0.len()
    }

    /// Where the last session added went, with the CRC of its entry's bytes; `None` if none
    /// was added since the last call.
    pub(crate) fn take_last(&mut self) -> Option<(Placed, u32)> {
        let placed = self.last.take()?;
        let at = usize::try_from(placed.entry_at).ok()?;
        let bytes = self.bytes.0.get(at..at + placed.entry_len)?;
        Some((placed, crc32fast::hash(bytes)))
    }
}

/// Encodes a checkpoint of the given sessions and segment files (name, length, time), written
/// by a store whose windows keep `window` ids.
#[cfg(test)]
fn encode(
    next_seq: u64,
    next_id: u64,
    window: usize,
    segments: &[(String, SegmentStat)],
    sessions: &[Entry<'_>],
) -> Vec<u8> {
    let mut encoded = Sessions::default();
    for e in sessions {
        encoded.add(e).unwrap();
    }
    encode_with(next_seq, next_id, window, segments, encoded).joined()
}

/// A checkpoint's bytes as the encoder built them, in three parts written one after the
/// other (never joined into one copy, except to seal them): the header and the body up to the
/// sessions' entries, the entries, and the location section.
pub(crate) struct Encoded {
    head: Vec<u8>,
    entries: Vec<u8>,
    section: Vec<u8>,
}

impl Encoded {
    /// The parts, in the order they are in the file.
    pub(crate) fn parts(&self) -> [&[u8]; 3] {
        [&self.head, &self.entries, &self.section]
    }

    /// Which checkpoint it is, once written (see [`Decoded::id`]); `next_seq` as encoded.
    pub(crate) fn id(&self, next_seq: u64) -> Option<BaseId> {
        let header = Header::read(&self.head)?;
        Some(BaseId {
            body_len: header.body_len,
            body_crc: header.body_crc,
            section_len: header.section_len,
            next_seq,
        })
    }

    /// The file's length.
    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.entries.len() + self.section.len()
    }

    /// The parts joined: what an encrypted store seals whole.
    pub(crate) fn joined(&self) -> Vec<u8> {
        self.parts().concat()
    }
}

/// [`encode`] of sessions already encoded.
pub(crate) fn encode_with(
    next_seq: u64,
    next_id: u64,
    window: usize,
    segments: &[(String, SegmentStat)],
    sessions: Sessions,
) -> Encoded {
    let mut body = Writer(Vec::with_capacity(64 * segments.len() + 64));
    body.u64(next_seq);
    body.u64(next_id);
    body.u64(window as u64);
    body.u64(segments.len() as u64);
    for (name, (stat, changed)) in segments {
        body.str(name);
        body.u64(stat.len);
        body.i64(stat.modified_ns);
        body.i64(changed.unwrap_or(NO_CHANGE_TIME));
    }
    body.u64(sessions.count);
    let entries = sessions.bytes.0;
    let section = sessions.locations;
    let body_len = body.0.len() + entries.len();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&body.0);
    crc.update(&entries);
    let mut head = Vec::with_capacity(HEADER_LEN + body.0.len());
    head.extend_from_slice(&MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&(body_len as u64).to_le_bytes());
    head.extend_from_slice(&crc.finalize().to_le_bytes());
    head.extend_from_slice(&(section.len() as u64).to_le_bytes());
    head.extend_from_slice(&body.0);
    Encoded {
        head,
        entries,
        section,
    }
}

/// Which checkpoint a full one is, for the deltas that follow it (`delta.rs`): its header's
/// lengths and body CRC, and the next sequence number it records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BaseId {
    pub body_len: u64,
    pub body_crc: u32,
    pub section_len: u64,
    pub next_seq: u64,
}

impl BaseId {
    /// The length of the checkpoint file it is of (a plain store's).
    pub(crate) fn file_len(&self) -> u64 {
        (HEADER_LEN as u64)
            .saturating_add(self.body_len)
            .saturating_add(self.section_len)
    }
}

/// A decoded checkpoint.
pub(super) struct Decoded {
    /// Its format version.
    pub version: u32,
    pub next_seq: u64,
    pub next_id: u64,
    /// The size of the windows of ids it was written with.
    pub window: u64,
    /// Some session's window held that many ids, so a larger window may hold more of them.
    pub window_full: bool,
    pub segments: Vec<(Recorded, SegmentStat)>,
    pub sessions: Vec<ReplayedSession>,
    /// Which checkpoint it is, for the deltas that follow it.
    pub id: BaseId,
}

/// The fewest bytes a segment's entry takes (its name's length, its length and two times).
const SEGMENT_BYTES_MIN: usize = 32;
/// Fewer bytes than any session's entry takes (its fixed-width fields alone take more).
const SESSION_BYTES_MIN: usize = 128;

/// What a checkpoint's header says.
#[derive(Debug, Clone, Copy)]
pub(super) struct Header {
    pub version: u32,
    /// The header's own length (it grew in version 8).
    pub len: usize,
    pub body_len: u64,
    pub body_crc: u32,
    /// The location section's length (none before version 8).
    pub section_len: u64,
}

impl Header {
    /// The header `bytes` start with (at least [`HEADER_LEN`] of them, or the whole file), if
    /// it is of a version read here.
    pub(super) fn read(bytes: &[u8]) -> Option<Header> {
        let mut r = Reader(bytes.get(..HEADER_LEN_OLD)?);
        if r.take(8)? != MAGIC {
            return None;
        }
        let version = r.u32()?;
        if !(VERSION_OLDEST..=VERSION).contains(&version) {
            return None;
        }
        let (body_len, body_crc) = (r.u64()?, r.u32()?);
        let (len, section_len) = if version >= SECTION_VERSION {
            let mut r = Reader(bytes.get(HEADER_LEN_OLD..HEADER_LEN)?);
            (HEADER_LEN, r.u64()?)
        } else {
            (HEADER_LEN_OLD, 0)
        };
        Some(Header {
            version,
            len,
            body_len,
            body_crc,
            section_len,
        })
    }

    /// The whole file's length, if it can be one.
    pub(super) fn file_len(&self) -> Option<u64> {
        (self.len as u64)
            .checked_add(self.body_len)?
            .checked_add(self.section_len)
    }
}

/// Decodes a checkpoint held whole in `bytes` (an encrypted store's, once opened).
pub(super) fn decode_whole(bytes: &[u8], window: usize) -> Option<Decoded> {
    let h = Header::read(bytes)?;
    if h.file_len()? != bytes.len() as u64 {
        return None;
    }
    let body_end = h.len + usize::try_from(h.body_len).ok()?;
    decode(
        bytes.get(..body_end)?,
        window,
        Section::Bytes(bytes.get(body_end..)?),
    )
}

/// Decodes a checkpoint's header and body (`bytes`), its location section in `section`;
/// each session's window keeps `window` ids. Every session is decoded into its view.
pub(super) fn decode(bytes: &[u8], window: usize, section: Section<'_>) -> Option<Decoded> {
    let h = Header::read(bytes)?;
    let body = bytes.get(h.len..)?;
    decode_body(&h, Body::Bytes(body), window, section, None).map(|(d, _)| d)
}

/// Where a checkpoint's body is read from.
pub(super) enum Body<'a> {
    /// In memory, whole (an encrypted store's checkpoint, once opened).
    Bytes(&'a [u8]),
    /// In its file, from this offset on, through a bounded buffer.
    File(&'a BlockFile, u64),
}

/// A checkpoint's body read in order, through a buffer that holds what the field being read
/// needs (a file's body is never read whole into memory), its CRC computed on the way.
struct BodyStream<'a> {
    source: Body<'a>,
    /// The body's length.
    end: u64,
    /// Where the next unread byte is, from the body's start.
    pos: u64,
    /// From a file: the bytes read and not yet consumed begin at `buf[used]`, at `pos`.
    buf: Vec<u8>,
    used: usize,
    crc: crc32fast::Hasher,
}

/// How much a file's body is read at a time.
/// The longest entry read: one holds a session's metadata (which fits in one record) and its
/// window of ids (at most 1 MiB). A longer one makes the checkpoint unusable (open replays).
const ENTRY_MAX: usize = 64 << 20;
/// The longest file name a checkpoint records.
const NAME_MAX: usize = 4096;

impl<'a> BodyStream<'a> {
    fn new(source: Body<'a>, end: u64) -> BodyStream<'a> {
        BodyStream {
            source,
            end,
            pos: 0,
            buf: Vec::new(),
            used: 0,
            crc: crc32fast::Hasher::new(),
        }
    }

    /// The bytes from here on: at least `need` of them, unless the body ends first.
    fn ahead(&mut self, need: usize) -> Option<&[u8]> {
        match self.source {
            Body::Bytes(bytes) => bytes.get(usize::try_from(self.pos).ok()?..),
            Body::File(file, start) => {
                let have = self.buf.len() - self.used;
                if have < need {
                    self.buf.drain(..self.used);
                    self.used = 0;
                    let read_to = self.pos + have as u64;
                    let left = self.end - read_to;
                    let n = ((need - have).max(STREAM_CHUNK) as u64).min(left) as usize;
                    let old = self.buf.len();
                    self.buf.resize(old + n, 0);
                    file.read_at(&mut self.buf[old..], start + read_to, "body")
                        .ok()?;
                    self.crc.update(&self.buf[old..]);
                }
                self.buf.get(self.used..)
            }
        }
    }

    /// True once every byte of the body is in hand.
    fn all_in(&self) -> bool {
        match self.source {
            Body::Bytes(_) => true,
            Body::File(..) => self.pos + (self.buf.len() - self.used) as u64 == self.end,
        }
    }

    fn consume(&mut self, n: usize) {
        self.pos += n as u64;
        if let Body::File(..) = self.source {
            self.used += n;
        }
    }

    /// Reads one item of at most `max` bytes with `read` (`None` when the bytes in hand do
    /// not hold it whole): returns it and how many bytes it took.
    fn item<T>(
        &mut self,
        max: usize,
        mut read: impl FnMut(&mut Reader<'_>) -> Option<T>,
    ) -> Option<T> {
        let mut need = 64.min(max);
        loop {
            let (taken, item) = {
                let ahead = self.ahead(need)?;
                let mut r = Reader(ahead);
                match read(&mut r) {
                    Some(item) => (ahead.len() - r.0.len(), Some(item)),
                    None => (0, None),
                }
            };
            if let Some(item) = item {
                self.consume(taken);
                return Some(item);
            }
            // Not whole in the bytes in hand: more, up to its bound, unless the body ended.
            if self.all_in() || need >= max {
                return None;
            }
            need = need.saturating_mul(4).min(max);
        }
    }

    /// True when the whole body was read and its CRC is `crc`.
    fn finish(self, crc: u32) -> bool {
        self.pos == self.end
            && match self.source {
                Body::Bytes(_) => true, // checked before it was read
                Body::File(..) => self.crc.finalize() == crc,
            }
    }
}

/// Decodes a checkpoint's body from `body` (its header `h`; its location section in
/// `section`); each session's window keeps `window` ids. `lazy`: the live sessions are left
/// in the file, each entry checked whole now and listed in the [`Cold`] returned, to be read
/// again and decoded when it is first asked for (only with the section in the file), with the
/// chain heads that differ from their anchored points (`lazy`'s) at their numbers.
pub(super) fn decode_body(
    h: &Header,
    body: Body<'_>,
    window: usize,
    section: Section<'_>,
    lazy: Option<&Anchored>,
) -> Option<(Decoded, Option<Cold>)> {
    let version = h.version;
    if let Body::Bytes(bytes) = body {
        if bytes.len() as u64 != h.body_len || crc32fast::hash(bytes) != h.body_crc {
            return None;
        }
    }
    if let Section::Bytes(bytes) = &section {
        if bytes.len() as u64 != h.section_len {
            return None;
        }
    }
    let file = match (&section, lazy.is_some() && version >= SECTION_VERSION) {
        (Section::File(file), true) => Some(Arc::clone(file)),
        _ => None,
    };
    let body_at = match body {
        Body::File(_, start) => start,
        Body::Bytes(_) => 0,
    };
    let mut s = BodyStream::new(body, h.body_len);
    // Where the next session's block starts in the location section.
    let mut section_at: u64 = 0;
    let fixed = |r: &mut Reader<'_>| Some((r.u64()?, r.u64()?, r.u64()?, r.len()?));
    let (next_seq, next_id, recorded_window, segment_count) = s.item(32, fixed)?;
    let mut window_full = false;
    // Capacities by what the body can hold: each entry takes at least this many bytes.
    let body_len = usize::try_from(h.body_len).ok()?;
    let mut segments = Vec::with_capacity(segment_count.min(body_len / SEGMENT_BYTES_MIN));
    for _ in 0..segment_count {
        let segment = |r: &mut Reader<'_>| {
            let name = Recorded::of(r.str_ref()?);
            let len = r.u64()?;
            let modified_ns = r.i64()?;
            let changed = Some(r.i64()?).filter(|&c| c != NO_CHANGE_TIME);
            Some((name, (FileStat { len, modified_ns }, changed)))
        };
        segments.push(s.item(8 + NAME_MAX + 24, segment)?);
    }
    // How many files the list names for session `id` (it is in name order, or `check`
    // refuses it): a session's segments from `oldest` to `newest` are each among them, which
    // bounds every walk of that range by the bytes read.
    let files_of = |id: u64| {
        let from = segments.partition_point(|(r, _)| *r < Recorded::Segment(id, 0));
        let to = segments.partition_point(|(r, _)| *r <= Recorded::Segment(id, u32::MAX));
        to.saturating_sub(from) as u64
    };
    let session_count = s.item(8, |r| r.len())?;
    let capacity = session_count.min(body_len / SESSION_BYTES_MIN);
    let mut sessions = Vec::new();
    let mut cold = (file.as_ref())
        .map(|file| Cold::new(version, h.section_len, file, body_at, window, capacity));
    // The checkpoint lists sessions newest first: their anchored points are found walking
    // down.
    let mut anchored = lazy.map(Anchored::descending);
    for _ in 0..session_count {
        let at = s.pos;
        let block_at = section_at;
        let mut after = section_at;
        let (ids, decoded) = s.item(ENTRY_MAX, |r| {
            let start = r.0;
            after = section_at;
            let e = EntryRef::parse(r, version, &mut after, h.section_len)?;
            let first = e.oldest.max(1);
            let span = u64::from(e.newest.saturating_sub(first)) + u64::from(e.newest >= first);
            if span > files_of(e.session_id) {
                return None; // a range of segments the folder never held
            }
            let len = start.len() - r.0.len();
            let decoded = match &mut cold {
                Some(cold) if !e.deleted => {
                    let entry = ColdEntry::of(&e, at, len, block_at, start)?;
                    cold.has_forks |= e.fork_origin.is_some();
                    let point = anchored.as_mut().and_then(|a| a.get(entry.session_id));
                    cold.push(entry, e.key, e.head, point)?;
                    None
                }
                _ => Some(Box::new(e.session(window, block_at, &section)?)),
            };
            Some((e.id_count as u64, decoded))
        })?;
        section_at = after;
        window_full |= ids >= recorded_window && recorded_window > 0;
        if let Some(session) = decoded {
            sessions.push(*session);
        }
    }
    if !s.finish(h.body_crc) || section_at != h.section_len {
        return None;
    }
    let cold = cold.filter(|c| !c.entries.is_empty()).map(Cold::sorted);
    Some((
        Decoded {
            version,
            next_seq,
            next_id,
            window: recorded_window,
            window_full,
            segments,
            sessions,
            id: BaseId {
                body_len: h.body_len,
                body_crc: h.body_crc,
                section_len: h.section_len,
                next_seq,
            },
        },
        cold,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id_window::IDEMPOTENCY_WINDOW_DEFAULT;
    use crate::location::RecordLoc;
    use crate::record::Event;

    #[test]
    fn a_checkpoint_round_trips_and_any_damage_is_refused() {
        let mut view = SessionView::new("k/ü");
        let at = RecordLoc {
            seq: 1,
            segment: 1,
            offset: 40,
            len: 50,
        };
        view.apply(
            5,
            &Event::Append {
                role: "user",
                content: "x",
            },
            at,
        )
        .unwrap();
        view.apply(
            6,
            &Event::SetName { name: Some("n") },
            RecordLoc { offset: 90, ..at },
        )
        .unwrap();
        view.apply(
            7,
            &Event::SetState {
                state: "running",
                turn_id: None,
            },
            RecordLoc { offset: 130, ..at },
        )
        .unwrap();
        view.apply(
            8,
            &Event::AppendOnce {
                role: "user",
                content: "y",
                id: "m-1",
            },
            RecordLoc { offset: 170, ..at },
        )
        .unwrap();
        view.apply(
            9,
            &Event::SetArchived { archived: true },
            RecordLoc { offset: 230, ..at },
        )
        .unwrap();
        assert!(view.archived && view.recent_ids.len() == 1);
        let entry = Entry {
            session_id: 3,
            oldest: 1,
            newest: 1,
            newest_len: 170,
            head: [9; 32],
            newest_version: 1,
            view: &view,
        };
        let stat = FileStat {
            len: 170,
            modified_ns: 12,
        };
        let names = vec![
            (
                "0000000000000003-00000001.seg".to_string(),
                (stat, Some(-5)),
            ),
            ("0000000000000003-00000002.seg".to_string(), (stat, None)),
        ];
        let bytes = encode(9, 4, IDEMPOTENCY_WINDOW_DEFAULT, &names, &[entry]);
        let d = decode_whole(&bytes, IDEMPOTENCY_WINDOW_DEFAULT).unwrap();
        let read: Vec<_> = (d.segments.iter())
            .map(|(name, stat)| (name.name().into_owned(), *stat))
            .collect();
        assert_eq!((d.next_seq, d.next_id, &read), (9, 4, &names));
        assert!(matches!(d.segments[0].0, Recorded::Segment(3, 1)));
        assert_eq!(d.window, IDEMPOTENCY_WINDOW_DEFAULT as u64);
        assert!(!d.window_full);
        assert_eq!(d.sessions.len(), 1);
        assert_eq!(d.sessions[0].view, view);
        assert_eq!(d.sessions[0].newest_len, 170);
        assert_eq!(d.sessions[0].head, [9; 32]);
        assert_eq!(d.sessions[0].newest_version, 1);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x04;
            assert!(
                decode_whole(&bad, IDEMPOTENCY_WINDOW_DEFAULT).is_none(),
                "flip at {i}"
            );
        }
        for cut in 0..bytes.len() {
            assert!(
                decode_whole(&bytes[..cut], IDEMPOTENCY_WINDOW_DEFAULT).is_none(),
                "cut at {cut}"
            );
        }
        // A session whose segments from its oldest to its newest are more than the files
        // listed for it (a crafted checkpoint, its CRC right): refused, so that no walk of
        // that range (a close recording its files) takes billions of steps.
        for (oldest, newest, sound) in [
            (1, 2, true),
            (2, 2, true),
            (1, 3, false),
            (1, 1 << 28, false),
        ] {
            let entry = Entry {
                session_id: 3,
                oldest,
                newest,
                newest_len: 170,
                head: [9; 32],
                newest_version: 1,
                view: &view,
            };
            let bytes = encode(9, 4, IDEMPOTENCY_WINDOW_DEFAULT, &names, &[entry]);
            let decoded = decode_whole(&bytes, IDEMPOTENCY_WINDOW_DEFAULT);
            assert_eq!(decoded.is_some(), sound, "{oldest}..={newest}");
        }
    }
}

//! A checkpoint's bytes: written once here, read once here (`docs/FORMAT.md`, "The
//! checkpoint").

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::bytes::{Reader, Writer};
use crate::claim::SegmentStat;

use super::folder::Recorded;
use crate::backend::SessionMetadata;
use crate::error::Result;
use crate::fs::FileStat;
use crate::parked::{decode_locs, encode_loc, Block, BlockFile, Home, LOC_BYTES};
use crate::projection::{to_time, SessionView};
use crate::record::{Hash, HASH_LEN};
use crate::recovery::ReplayedSession;
use crate::segment::{FORMAT_VERSION_NEWEST, FORMAT_VERSION_OLDEST};

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
/// The first version with a location section.
const SECTION_VERSION: u32 = 8;

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
        Ok(start as u64)
    }

    /// The location section's length so far.
    pub(crate) fn section_len(&self) -> usize {
        self.locations.len()
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
    encode_with(next_seq, next_id, window, segments, encoded)
}

/// [`encode`] of sessions already encoded.
pub(crate) fn encode_with(
    next_seq: u64,
    next_id: u64,
    window: usize,
    segments: &[(String, SegmentStat)],
    sessions: Sessions,
) -> Vec<u8> {
    let mut body = Writer(Vec::with_capacity(
        sessions.bytes.0.len() + 64 * segments.len() + 64,
    ));
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
    body.0.extend_from_slice(&sessions.bytes.0);
    let section = sessions.locations;
    let mut out = Vec::with_capacity(HEADER_LEN + body.0.len() + section.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(body.0.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body.0).to_le_bytes());
    out.extend_from_slice(&(section.len() as u64).to_le_bytes());
    out.extend_from_slice(&body.0);
    out.extend_from_slice(&section);
    out
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
    /// The live sessions left in the bytes by a lazy decode ([`decode_as`]).
    pub cold: Vec<ColdEntry>,
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

/// Where a checkpoint's location section is read from.
pub(super) enum Section<'a> {
    /// In memory (an encrypted store's checkpoint is opened whole): every session's locations
    /// are decoded with its entry.
    Bytes(&'a [u8]),
    /// In the file: each session's locations are left there, parked.
    File(Arc<BlockFile>),
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
    decode_as(bytes, window, section, false)
}

/// [`decode`], leaving the live sessions' entries in `bytes` when `lazy` and the location
/// section is in the file: each is checked whole now, and listed in [`Decoded::cold`] with
/// where it starts, to be decoded when it is first asked for ([`Cold`]).
pub(super) fn decode_as(
    bytes: &[u8],
    window: usize,
    section: Section<'_>,
    lazy: bool,
) -> Option<Decoded> {
    let h = Header::read(bytes)?;
    let version = h.version;
    let body_len = usize::try_from(h.body_len).ok()?;
    let body = bytes.get(h.len..)?;
    if body.len() != body_len || crc32fast::hash(body) != h.body_crc {
        return None;
    }
    if let Section::Bytes(bytes) = &section {
        if bytes.len() as u64 != h.section_len {
            return None;
        }
    }
    let lazy = lazy && matches!(section, Section::File(_)) && version >= SECTION_VERSION;
    // Where the next session's block starts in the location section.
    let mut section_at: u64 = 0;
    let mut r = Reader(body);
    let next_seq = r.u64()?;
    let next_id = r.u64()?;
    let recorded_window = r.u64()?;
    let mut window_full = false;
    let segment_count = r.len()?;
    // Capacities by what the body can hold: each entry takes at least this many bytes.
    let mut segments = Vec::with_capacity(segment_count.min(body_len / SEGMENT_BYTES_MIN));
    for _ in 0..segment_count {
        let name = Recorded::of(r.str_ref()?);
        let len = r.u64()?;
        let modified_ns = r.i64()?;
        let changed = Some(r.i64()?).filter(|&c| c != NO_CHANGE_TIME);
        segments.push((name, (FileStat { len, modified_ns }, changed)));
    }
    let session_count = r.len()?;
    let capacity = session_count.min(body_len / SESSION_BYTES_MIN);
    let mut sessions = Vec::with_capacity(if lazy { 0 } else { capacity });
    let mut cold = Vec::with_capacity(if lazy { capacity } else { 0 });
    for _ in 0..session_count {
        let at = h.len + (body_len - r.0.len());
        let block_at = section_at;
        let e = EntryRef::parse(&mut r, version, &mut section_at, h.section_len)?;
        window_full |= e.id_count as u64 >= recorded_window && recorded_window > 0;
        if lazy && !e.deleted {
            cold.push(ColdEntry {
                at: at as u64,
                block_at,
                last_seq: e.last_seq,
                last_activity: e.last_activity,
            });
        } else {
            sessions.push(e.session(window, block_at, &section)?);
        }
    }
    if !r.is_empty() || section_at != h.section_len {
        return None;
    }
    Some(Decoded {
        version,
        next_seq,
        next_id,
        window: recorded_window,
        window_full,
        segments,
        sessions,
        cold,
    })
}

/// Where a live session's entry is in a checkpoint's bytes, and what open needs of it
/// without decoding it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ColdEntry {
    /// Where its entry starts, from the start of the checkpoint.
    pub at: u64,
    /// Where its locations start in the location section.
    pub block_at: u64,
    pub last_seq: u64,
    pub last_activity: i64,
}

/// The offsets, in a session's entry, of the fixed-width fields it begins with.
const ENTRY_ID_AT: usize = 0;
const ENTRY_NEWEST_AT: usize = 12;
const ENTRY_NEWEST_LEN_AT: usize = 16;
const ENTRY_HEAD_AT: usize = 24;
/// After the head: the newest segment's format version (4 bytes), then the bytes written.
const ENTRY_WRITTEN_AT: usize = ENTRY_HEAD_AT + HASH_LEN + 4;
const ENTRY_KEY_LEN_AT: usize = ENTRY_WRITTEN_AT + 8;
const ENTRY_KEY_AT: usize = ENTRY_KEY_LEN_AT + 8;

/// The live sessions of a checkpoint that open left in its bytes (every entry checked whole
/// when they were read): each is decoded the first time it is asked for.
pub(crate) struct Cold {
    /// The checkpoint's header and body, as read.
    bytes: Vec<u8>,
    version: u32,
    section_len: u64,
    file: Arc<BlockFile>,
    window: usize,
    pub(crate) entries: Vec<ColdEntry>,
    /// Each entry's session id and index, in order of id (the checkpoint writes the newest
    /// session first: this is its order reversed).
    by_id: Vec<(u64, u32)>,
    /// Where the last [`Cold::find`] found its entry in `by_id`: lookups in order of id (the
    /// anchors' check at open) each take one step from there.
    hint: AtomicUsize,
}

impl Cold {
    pub(super) fn new(
        bytes: Vec<u8>,
        file: Arc<BlockFile>,
        window: usize,
        d: &mut Decoded,
    ) -> Option<Cold> {
        let h = Header::read(&bytes)?;
        let mut cold = Cold {
            version: h.version,
            section_len: h.section_len,
            bytes,
            file,
            window,
            entries: std::mem::take(&mut d.cold),
            by_id: Vec::new(),
            hint: AtomicUsize::new(0),
        };
        let mut by_id: Vec<(u64, u32)> = (cold.entries.iter().enumerate().rev())
            .map(|(i, e)| (cold.session_id(e), i as u32))
            .collect();
        // Sorted already when the checkpoint is as a store writes it.
        by_id.sort_unstable_by_key(|(id, _)| *id);
        cold.by_id = by_id;
        Some(cold)
    }

    /// The entry of session `id`, if it is among them.
    pub(crate) fn find(&self, id: u64) -> Option<&ColdEntry> {
        let hint = self.hint.load(Ordering::Relaxed);
        let at = match self.by_id.get(hint) {
            Some(&(at_hint, _)) if at_hint == id => hint,
            _ => match self.by_id.get(hint + 1) {
                Some(&(next, _)) if next == id => hint + 1,
                _ => self.by_id.binary_search_by_key(&id, |(id, _)| *id).ok()?,
            },
        };
        self.hint.store(at, Ordering::Relaxed);
        let (_, index) = self.by_id.get(at)?;
        self.entries.get(*index as usize)
    }

    fn fixed(&self, e: &ColdEntry, at: usize, len: usize) -> &[u8] {
        let start = e.at as usize + at;
        self.bytes.get(start..start + len).unwrap_or(&[])
    }

    fn u64_at(&self, e: &ColdEntry, at: usize) -> u64 {
        self.fixed(e, at, 8)
            .try_into()
            .map_or(0, u64::from_le_bytes)
    }

    /// The session id of `e`.
    pub(crate) fn session_id(&self, e: &ColdEntry) -> u64 {
        self.u64_at(e, ENTRY_ID_AT)
    }

    /// The key of `e`.
    pub(crate) fn key(&self, e: &ColdEntry) -> &str {
        std::str::from_utf8(self.key_bytes(e)).unwrap_or_default()
    }

    /// The key of `e`, as bytes (checked as UTF-8 when the entry was read).
    pub(crate) fn key_bytes(&self, e: &ColdEntry) -> &[u8] {
        let len = usize::try_from(self.u64_at(e, ENTRY_KEY_LEN_AT)).unwrap_or(0);
        self.fixed(e, ENTRY_KEY_AT, len)
    }

    /// The metadata of `e` as a listing gives it; `None` if it is archived (listings leave
    /// those out).
    pub(crate) fn metadata(&self, e: &ColdEntry) -> Option<SessionMetadata> {
        let mut r = Reader(self.bytes.get(usize::try_from(e.at).ok()?..)?);
        let mut section_at = e.block_at;
        let e = EntryRef::parse(&mut r, self.version, &mut section_at, self.section_len)?;
        if e.archived {
            return None;
        }
        let owned = |s: Option<&str>| s.map(str::to_owned);
        let [name, agent_alias, channel_id, room_id, sender_id] = e.strings;
        Some(SessionMetadata {
            key: e.key.to_owned(),
            name: owned(name),
            created_at: to_time(e.created_at),
            last_activity: to_time(e.last_activity),
            message_count: match e.locs {
                Locs::Inline(_, live, ..) => live,
                Locs::Section { counts, .. } => counts.0 as usize,
            },
            agent_alias: owned(agent_alias),
            channel_id: owned(channel_id),
            room_id: owned(room_id),
            sender_id: owned(sender_id),
        })
    }

    /// The bytes of the records `e` wrote since its last compaction.
    pub(crate) fn bytes_written(&self, e: &ColdEntry) -> u64 {
        self.u64_at(e, ENTRY_WRITTEN_AT)
    }

    /// The chain head of `e`'s last record.
    pub(crate) fn head(&self, e: &ColdEntry) -> Hash {
        self.fixed(e, ENTRY_HEAD_AT, HASH_LEN)
            .try_into()
            .unwrap_or([0; HASH_LEN])
    }

    /// `e`'s newest segment and its length.
    pub(crate) fn newest(&self, e: &ColdEntry) -> (u32, u64) {
        let newest = self.fixed(e, ENTRY_NEWEST_AT, 4);
        (
            newest.try_into().map_or(0, u32::from_le_bytes),
            self.u64_at(e, ENTRY_NEWEST_LEN_AT),
        )
    }

    /// The session `e` records, decoded, its locations parked in the file.
    pub(crate) fn session(&self, e: &ColdEntry) -> Option<ReplayedSession> {
        let mut r = Reader(self.bytes.get(usize::try_from(e.at).ok()?..)?);
        let mut section_at = e.block_at;
        EntryRef::parse(&mut r, self.version, &mut section_at, self.section_len)?.session(
            self.window,
            e.block_at,
            &Section::File(Arc::clone(&self.file)),
        )
    }
}

/// A session's locations as its entry records them.
enum Locs<'a> {
    /// Before version 8: in the entry (live, then cleared).
    Inline(&'a [u8], usize, &'a [u8], usize),
    /// In the location section: the live and cleared counts, their bytes and the block's CRC.
    Section {
        counts: (u32, u32),
        live_bytes: u64,
        cleared_bytes: u64,
        crc: u32,
    },
}

/// One session's entry, its strings borrowed from the body.
struct EntryRef<'a> {
    session_id: u64,
    oldest: u32,
    newest: u32,
    newest_len: u64,
    head: Hash,
    newest_version: u32,
    bytes_written: u64,
    key: &'a str,
    created_at: i64,
    last_activity: i64,
    strings: [Option<&'a str>; 5],
    state: &'a str,
    turn_id: Option<&'a str>,
    turn_started_at: Option<i64>,
    locs: Locs<'a>,
    cleared_by: Option<(u64, i64)>,
    deleted: bool,
    deleted_at: i64,
    last_seq: u64,
    fork_origin: Option<(&'a str, u64)>,
    archived: bool,
    id_count: usize,
    ids: &'a [u8],
}

impl<'a> EntryRef<'a> {
    /// Reads one entry of a checkpoint of `version`, its block taken from `section_at` on
    /// (advanced past it) in a section of `section_len` bytes.
    fn parse(
        r: &mut Reader<'a>,
        version: u32,
        section_at: &mut u64,
        section_len: u64,
    ) -> Option<EntryRef<'a>> {
        let session_id = r.u64()?;
        let oldest = r.u32()?;
        let newest = r.u32()?;
        let newest_len = r.u64()?;
        let head: Hash = r.take(HASH_LEN)?.try_into().ok()?;
        let newest_version = r.u32()?;
        if !(FORMAT_VERSION_OLDEST..=FORMAT_VERSION_NEWEST).contains(&newest_version) {
            return None;
        }
        let bytes_written = r.u64()?;
        let key = r.str_ref()?;
        let created_at = r.i64()?;
        let last_activity = r.i64()?;
        let mut strings = [None; 5];
        for s in &mut strings {
            *s = r.opt_str_ref()?;
        }
        let state = r.str_ref()?;
        let turn_id = r.opt_str_ref()?;
        let turn_started_at = match r.u8()? {
            0 => None,
            1 => Some(r.i64()?),
            _ => return None,
        };
        let locs = if version < SECTION_VERSION {
            let mut locs = || -> Option<(&'a [u8], usize)> {
                let count = r.len()?;
                Some((r.take(count.checked_mul(LOC_BYTES)?)?, count))
            };
            let (live, live_count) = locs()?;
            let (cleared, cleared_count) = locs()?;
            Locs::Inline(live, live_count, cleared, cleared_count)
        } else {
            let counts = (u32::try_from(r.u64()?).ok()?, u32::try_from(r.u64()?).ok()?);
            let (live_bytes, cleared_bytes, crc) = (r.u64()?, r.u64()?, r.u32()?);
            let len = (u64::from(counts.0) + u64::from(counts.1)) * LOC_BYTES as u64;
            *section_at = section_at
                .checked_add(len)
                .filter(|&end| end <= section_len)?;
            Locs::Section {
                counts,
                live_bytes,
                cleared_bytes,
                crc,
            }
        };
        let cleared_by = match r.u8()? {
            0 => None,
            1 => Some((r.u64()?, r.i64()?)),
            _ => return None,
        };
        let deleted = r.flag()?;
        let deleted_at = r.i64()?;
        let last_seq = r.u64()?;
        let fork_origin = match r.u8()? {
            0 => None,
            1 => Some((r.str_ref()?, r.u64()?)),
            _ => return None,
        };
        let archived = r.flag()?;
        let id_count = r.len()?;
        let ids = r.take(id_count.checked_mul(16)?)?;
        Some(EntryRef {
            session_id,
            oldest,
            newest,
            newest_len,
            head,
            newest_version,
            bytes_written,
            key,
            created_at,
            last_activity,
            strings,
            state,
            turn_id,
            turn_started_at,
            locs,
            cleared_by,
            deleted,
            deleted_at,
            last_seq,
            fork_origin,
            archived,
            id_count,
            ids,
        })
    }

    /// The session this entry records, its block at `block_at` of `section`; each window
    /// keeps `window` ids.
    fn session(
        &self,
        window: usize,
        block_at: u64,
        section: &Section<'_>,
    ) -> Option<ReplayedSession> {
        let owned = |s: Option<&str>| s.map(str::to_owned);
        let [name, agent_alias, channel_id, room_id, sender_id] = self.strings;
        let mut view = SessionView {
            key: self.key.to_owned(),
            exists: true,
            created_at: self.created_at,
            last_activity: self.last_activity,
            name: owned(name),
            agent_alias: owned(agent_alias),
            channel_id: owned(channel_id),
            room_id: owned(room_id),
            sender_id: owned(sender_id),
            state: self.state.to_owned(),
            turn_id: owned(self.turn_id),
            turn_started_at: self.turn_started_at,
            ..SessionView::empty(window)
        };
        match self.locs {
            Locs::Inline(live, live_count, cleared, cleared_count) => {
                view.cleared = decode_locs(cleared, cleared_count).0;
                view.install_generation(decode_locs(live, live_count).0, self.bytes_written);
            }
            Locs::Section {
                counts,
                live_bytes,
                cleared_bytes,
                crc,
            } => match section {
                Section::File(file) => {
                    view.bytes_written = self.bytes_written;
                    view.live_bytes = live_bytes;
                    let block = Block::new(Arc::clone(file), block_at, counts, crc, cleared_bytes);
                    view.home = Home::Parked(block);
                }
                Section::Bytes(bytes) => {
                    let len = (u64::from(counts.0) + u64::from(counts.1)) * LOC_BYTES as u64;
                    let at = usize::try_from(block_at).ok()?;
                    let block = bytes.get(at..at.checked_add(usize::try_from(len).ok()?)?)?;
                    if crc32fast::hash(block) != crc {
                        return None;
                    }
                    let (messages, cleared) = decode_locs(block, counts.0 as usize);
                    view.cleared = cleared;
                    view.install_generation(messages, self.bytes_written);
                    if (view.live_bytes, view.cleared_bytes()) != (live_bytes, cleared_bytes) {
                        return None;
                    }
                }
            },
        }
        view.cleared_by = self.cleared_by;
        view.deleted = self.deleted;
        view.deleted_at = self.deleted_at;
        view.last_seq = self.last_seq;
        view.fork_origin = self.fork_origin.map(|(source, at)| (source.to_owned(), at));
        view.archived = self.archived;
        let digests: Vec<u128> = self
            .ids
            .chunks_exact(16)
            .map(|d| u128::from_le_bytes(d.try_into().unwrap_or([0; 16])))
            .collect();
        view.recent_ids.replace(&digests);
        Some(ReplayedSession {
            session_id: self.session_id,
            view,
            oldest: self.oldest,
            newest: self.newest,
            newest_len: self.newest_len,
            highest: self.newest,
            head: self.head,
            newest_version: self.newest_version,
            damage: None,
        })
    }
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
    }
}

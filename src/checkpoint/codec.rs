//! A checkpoint's bytes: written once here, read once here (`docs/FORMAT.md`, "The
//! checkpoint").

use std::sync::Arc;

use crate::bytes::{Reader, Writer};
use crate::claim::SegmentStat;
use crate::error::Result;
use crate::fs::FileStat;
use crate::location::MessageLoc;
use crate::parked::{decode_locs, encode_loc, Block, BlockFile, Home, LOC_BYTES};
use crate::projection::SessionView;
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
    pub segments: Vec<(String, SegmentStat)>,
    pub sessions: Vec<ReplayedSession>,
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
/// each session's window keeps `window` ids.
pub(super) fn decode(bytes: &[u8], window: usize, section: Section<'_>) -> Option<Decoded> {
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
        let name = r.str()?;
        let len = r.u64()?;
        let modified_ns = r.i64()?;
        let changed = Some(r.i64()?).filter(|&c| c != NO_CHANGE_TIME);
        segments.push((name, (FileStat { len, modified_ns }, changed)));
    }
    let session_count = r.len()?;
    let mut sessions = Vec::with_capacity(session_count.min(body_len / SESSION_BYTES_MIN));
    for _ in 0..session_count {
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
        let mut view = SessionView {
            key: r.str()?,
            exists: true,
            created_at: r.i64()?,
            last_activity: r.i64()?,
            name: r.opt_str()?,
            agent_alias: r.opt_str()?,
            channel_id: r.opt_str()?,
            room_id: r.opt_str()?,
            sender_id: r.opt_str()?,
            state: r.str()?,
            turn_id: r.opt_str()?,
            turn_started_at: match r.u8()? {
                0 => None,
                1 => Some(r.i64()?),
                _ => return None,
            },
            ..SessionView::empty(window)
        };
        if version < SECTION_VERSION {
            let mut locs = || -> Option<Vec<MessageLoc>> {
                let count = r.len()?;
                Some(decode_locs(r.take(count.checked_mul(LOC_BYTES)?)?, count).0)
            };
            let messages = locs()?;
            view.cleared = locs()?;
            view.install_generation(messages, bytes_written);
        } else {
            let counts = (u32::try_from(r.u64()?).ok()?, u32::try_from(r.u64()?).ok()?);
            let (live_bytes, cleared_bytes, crc) = (r.u64()?, r.u64()?, r.u32()?);
            let len = (u64::from(counts.0) + u64::from(counts.1)) * LOC_BYTES as u64;
            let offset = section_at;
            section_at = section_at
                .checked_add(len)
                .filter(|&end| end <= h.section_len)?;
            match &section {
                Section::File(file) => {
                    view.bytes_written = bytes_written;
                    view.live_bytes = live_bytes;
                    let block = Block::new(Arc::clone(file), offset, counts, crc, cleared_bytes);
                    view.home = Home::Parked(block);
                }
                Section::Bytes(bytes) => {
                    let at = usize::try_from(offset).ok()?;
                    let block = bytes.get(at..at.checked_add(usize::try_from(len).ok()?)?)?;
                    if crc32fast::hash(block) != crc {
                        return None;
                    }
                    let (messages, cleared) = decode_locs(block, counts.0 as usize);
                    view.cleared = cleared;
                    view.install_generation(messages, bytes_written);
                    if (view.live_bytes, view.cleared_bytes()) != (live_bytes, cleared_bytes) {
                        return None;
                    }
                }
            }
        }
        view.cleared_by = match r.u8()? {
            0 => None,
            1 => Some((r.u64()?, r.i64()?)),
            _ => return None,
        };
        view.deleted = r.flag()?;
        view.deleted_at = r.i64()?;
        view.last_seq = r.u64()?;
        view.fork_origin = match r.u8()? {
            0 => None,
            1 => Some((r.str()?, r.u64()?)),
            _ => return None,
        };
        view.archived = r.flag()?;
        let id_count = r.len()?;
        window_full |= id_count as u64 >= recorded_window && recorded_window > 0;
        let mut digests = Vec::with_capacity(id_count.min(body_len / 16));
        for _ in 0..id_count {
            digests.push(r.u128()?);
        }
        view.recent_ids.replace(&digests);
        sessions.push(ReplayedSession {
            session_id,
            view,
            oldest,
            newest,
            newest_len,
            highest: newest,
            head,
            newest_version,
            damage: None,
        });
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
    })
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
        assert_eq!((d.next_seq, d.next_id, &d.segments), (9, 4, &names));
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

//! One session's entry in a checkpoint's body, read without copying its strings
//! ([`EntryRef`]), and where the location section its block is in is read from
//! ([`Section`]): what the codec and the cold sessions share.

use std::sync::Arc;

use crate::bytes::Reader;
use crate::parked::{decode_locs, Block, BlockFile, Home, LOC_BYTES};
use crate::projection::SessionView;
use crate::record::{Hash, HASH_LEN};
use crate::recovery::ReplayedSession;
use crate::segment::{FORMAT_VERSION_NEWEST, FORMAT_VERSION_OLDEST};

/// The first version with a location section.
pub(super) const SECTION_VERSION: u32 = 8;

/// Where a checkpoint's location section is read from.
pub(super) enum Section<'a> {
    /// In memory (an encrypted store's checkpoint is opened whole): every session's locations
    /// are decoded with its entry.
    Bytes(&'a [u8]),
    /// In the file: each session's locations are left there, parked.
    File(Arc<BlockFile>),
}

/// A session's locations as its entry records them.
pub(super) enum Locs<'a> {
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
pub(super) struct EntryRef<'a> {
    pub(super) session_id: u64,
    pub(super) oldest: u32,
    pub(super) newest: u32,
    pub(super) newest_len: u64,
    pub(super) head: Hash,
    pub(super) newest_version: u32,
    pub(super) bytes_written: u64,
    pub(super) key: &'a str,
    pub(super) created_at: i64,
    pub(super) last_activity: i64,
    pub(super) strings: [Option<&'a str>; 5],
    pub(super) state: &'a str,
    pub(super) turn_id: Option<&'a str>,
    pub(super) turn_started_at: Option<i64>,
    pub(super) locs: Locs<'a>,
    pub(super) cleared_by: Option<(u64, i64)>,
    pub(super) deleted: bool,
    pub(super) deleted_at: i64,
    pub(super) last_seq: u64,
    pub(super) fork_origin: Option<(&'a str, u64)>,
    pub(super) archived: bool,
    pub(super) id_count: usize,
    pub(super) ids: &'a [u8],
}

impl<'a> EntryRef<'a> {
    /// Reads one entry of a checkpoint of `version`, its block taken from `section_at` on
    /// (advanced past it) in a section of `section_len` bytes.
    pub(super) fn parse(
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
    pub(super) fn session(
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

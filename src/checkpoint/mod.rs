//! The checkpoint: the whole projection, written at a clean close, and while the store runs
//! (`store/checkpointing.rs`), so that the next open can skip replaying every segment.
//!
//! It is trusted only when it is whole (magic, version, CRC). After a clean close the folder
//! must hold exactly the segment files it lists (checked by listing it, or, when the close
//! stamped it and its times did not move since, taken from the stamp: `layout::FolderStamp`), and open examines no live session's file:
//! what the checkpoint recorded of each (length, modification time, change time, which no
//! program can set back) becomes the session's [`Claim`], checked the first time the session is
//! read or written, which replays the session if its files changed after the checkpoint was
//! written (damaged, edited, cut, another file's bytes copied over one with its times put back).
//! The files of the deleted sessions it keeps for restore are checked at open: a change there
//! makes open fall back to the full replay, which reports the damage.
//!
//! Once segments change after it (the store writes after opening from it, or it was taken
//! while the store ran), the running marker is on disk beside it. An open that finds the marker
//! (the store never closed cleanly since) examines every segment file against the checkpoint,
//! and replays only the sessions whose files changed, each from where the checkpoint left it
//! when only its newest segment grew ([`Loaded::partial`]).
//!
//! Open reads the header, then the body (every session's metadata) once, in order, through a
//! bounded buffer, its CRC computed on the way, and leaves the location section (each session's
//! message locations) in the file: a session's are read at its first touch (`parked.rs`).
//! After a clean close it keeps no live session's entry either, only where it is ([`Cold`]):
//! the entry is read again at the session's first use. An encrypted store's checkpoint is
//! sealed whole, so it is opened whole and decoded whole.
//!
//! ```text
//! // Format: { magic: [u8; 8] = "SLCKPT\0\0" | version: u32 | body_len: u64 | body_crc: u32
//! //           | section_len: u64 | body | location section }
//! ```
//! docs/FORMAT.md describes the body and the section.

mod codec;
mod cold;
mod delta;
mod entry;
mod folder;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use crate::anchor::Anchored;
pub(crate) use crate::claim::Claims;
use crate::error::Result;
use crate::fs::{context, sync_dir, written_after, FileSystem, OpenMode};
use crate::keyring::Keyring;
use crate::layout::{CHECKPOINT_FILE, CHECKPOINT_TEMP_FILE, NUMBER_LIMIT};
use crate::parked::BlockFile;
use crate::recovery::{Partial, Replayed};
use crate::report::{Finding, RecoveryReport};
use crate::segment::key_len_ok;
use codec::{decode_body, decode_whole, Body, Decoded, Header, Section, HEADER_LEN};
pub(crate) use codec::{encode_with, Entry, Sessions};
pub(crate) use delta::{
    append as append_delta, len_with as delta_len_with, remove as remove_deltas, BaseId,
    DELTA_FILE_MAX,
};

/// Where the body starts in a plain checkpoint file of the version this build writes.
pub(crate) const BODY_AT: u64 = HEADER_LEN as u64;

/// The version of the checkpoints this build writes.
pub(crate) const VERSION_WRITTEN: u32 = codec::VERSION;
pub(crate) use cold::{Cold, ColdEntry, ColdKeys, ColdRead, Copier};
use folder::{check_folder, check_folder_after_crash};

/// Checks what a whole checkpoint (its CRC right) claims against the rules every store keeps,
/// so that a value the store would never have written is not trusted: numbers below the
/// format's limit, each session's sequence numbers below the next one, keys of a length a
/// session may have, one live session per key and one session per id, segment files in name
/// order. Returns the live sessions' ids, in ascending order.
fn check(d: &Decoded, mut cold: Option<&mut Cold>) -> std::result::Result<Vec<u64>, &'static str> {
    if d.next_seq >= NUMBER_LIMIT || d.next_id >= NUMBER_LIMIT {
        return Err("it holds a sequence number or session id beyond the format's range");
    }
    // The folder checks merge it with the listing, and claims are looked up in it by id.
    if d.segments.windows(2).any(|w| w[0].0.cmp(&w[1].0).is_ge()) {
        return Err("its segment files are not in order");
    }
    // The sessions left in the bytes (all live) indexed by key: the map of sessions takes the
    // index, and no two of them hold one key.
    if let Some(c) = cold.as_deref_mut() {
        if !c.index_keys() {
            return Err(TWO_HOLD_ONE_KEY);
        }
    }
    let cold = cold.as_deref();
    // Every session as (id, last sequence number, key, deleted): those decoded, then those
    // left in the bytes.
    let cold_entries = cold.map_or(&[][..], |c| c.entries.as_slice());
    let all = || {
        let decoded = d.sessions.iter().map(|s| {
            let v = &s.view;
            (s.session_id, v.last_seq, v.key.as_str(), v.deleted)
        });
        let left = cold.into_iter().flat_map(move |c| {
            (cold_entries.iter().enumerate())
                .map(move |(i, e)| (e.session_id, e.last_seq, c.key(i).unwrap_or(""), false))
        });
        decoded.chain(left)
    };
    // Written newest first: the sort only reverses them.
    let mut ids: Vec<u64> = all().map(|s| s.0).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) || ids.last().is_some_and(|&id| id >= d.next_id) {
        return Err("it holds a session id twice, or one not below the next");
    }
    for (_, last_seq, key, _) in all() {
        if last_seq >= d.next_seq {
            return Err("a session's last sequence number is not below the next");
        }
        if !key_len_ok(key.len()) {
            return Err("a session's key is empty or longer than any key may be");
        }
    }
    let mut live_keys = HashSet::new();
    for s in d.sessions.iter().filter(|s| !s.view.deleted) {
        let key = s.view.key.as_str();
        if !live_keys.insert(key) || cold.is_some_and(|c| c.find_key(key).is_some()) {
            return Err(TWO_HOLD_ONE_KEY);
        }
    }
    let mut live: Vec<u64> = all().filter(|s| !s.3).map(|s| s.0).collect();
    live.sort_unstable();
    Ok(live)
}

const TWO_HOLD_ONE_KEY: &str = "two sessions hold one key";

/// The associated data of an encrypted store's checkpoint, which is sealed whole under the
/// store key.
pub(crate) const SEALED_AAD: &[u8] = b"sessionlog checkpoint\0";

/// A sealed checkpoint's bytes; `None` when it cannot be read, or is longer than any a store
/// writes ([`SEALED_MAX`]: a sparse file, say), which is not read at all.
fn read_sealed(fs: &dyn FileSystem, path: &Path) -> Option<Vec<u8>> {
    let file = fs.open(path, OpenMode::Read).ok()?;
    let len = file.size().ok().filter(|&len| len <= SEALED_MAX)?;
    let mut sealed = vec![0; usize::try_from(len).ok()?];
    file.read_at(&mut sealed, 0).ok()?;
    Some(sealed)
}

/// The most bytes a sealed checkpoint may have (1 GiB): open reads
/// one whole, so it reads no more than this, and a store whose checkpoint would be larger
/// writes none (its opens replay).
pub(crate) const SEALED_MAX: u64 = 1 << 30;

/// The first version a build that knows the running marker wrote: an older checkpoint goes,
/// rather than being marked, before the segments change.
const MARKER_VERSION: u32 = 7;

/// How the store a checkpoint is of ended.
#[derive(Clone, Copy)]
pub(crate) enum Ended<'a> {
    /// At a clean close: the live sessions are left in the bytes. Of their chain heads, open
    /// keeps those that differ from their anchored point (`anchored`) at its number: the
    /// others pass the anchors' check.
    Clean(&'a Anchored),
    /// In a crash, while it ran: segments may have changed after the checkpoint was written.
    /// Every segment file is examined now, and the sessions whose files changed are left out
    /// and named in [`Loaded::partial`], for a replay.
    Running,
}

/// A checkpoint as open loaded it.
pub(crate) struct Loaded {
    /// The sessions it holds (after a crash, those whose files did not change since).
    pub replayed: Replayed,
    /// The live sessions left in its bytes, decoded when first asked for (after a clean
    /// close; every session is in `replayed` otherwise).
    pub cold: Option<Cold>,
    /// What it claims of each of those live sessions' files, checked at the session's first
    /// read or write.
    pub claims: Claims,
    /// After a crash (a checkpoint taken while the store ran): the sessions to replay.
    pub partial: Option<Partial>,
    /// It is of a version a build that knows nothing of the running marker reads as written
    /// at a clean close: it goes, rather than being marked, before the segments change.
    pub older_format: bool,
    /// A plain store's checkpoint of this version, written at a clean close: which one it is,
    /// for the deltas a running store appends after it (`delta.rs`).
    pub base: Option<BaseId>,
}

/// Loads the checkpoint if it is sound and matches the folder's segment files (`segments`,
/// sorted; `None`: a clean close stamped the folder as holding those it records, see
/// `layout::FolderStamp`), with what it claims of each live session's files (checked at the session's first
/// read or write). Without a usable checkpoint, returns `None` (the caller replays the
/// segments), and notes why in `report` if one was there. In an encrypted store the file is
/// opened with `keys` first. Each session's window of ids keeps `window` of them.
///
/// `ended`: how the store it is of ended (see [`Ended`]).
pub(crate) fn load(
    fs: &dyn FileSystem,
    dir: &Path,
    segments: Option<&[String]>,
    report: &mut RecoveryReport,
    keys: Option<&Keyring>,
    window: usize,
    ended: Ended<'_>,
) -> Result<Option<Loaded>> {
    let (running, lazy) = match ended {
        Ended::Clean(anchored) => (false, Some(anchored)),
        Ended::Running => (true, None),
    };
    let path = dir.join(CHECKPOINT_FILE);
    if !fs.exists(&path) {
        return Ok(None);
    }
    let mut cold = None;
    let decoded = match keys {
        // Sealed whole: it is opened whole (its length is the file's).
        Some(keys) => read_sealed(fs, &path)
            .and_then(|sealed| keys.open_blob(SEALED_AAD, &sealed))
            .and_then(|bytes| decode_whole(&bytes, window)),
        // After a clean close, the live sessions are left in the bytes, each decoded when it
        // is first asked for (`store/session_map.rs`); after a crash, every one is decoded.
        None => open_plain(fs, &path, window, lazy).map(|(d, left)| {
            cold = left;
            d
        }),
    };
    // After a crash, what the deltas that follow it recorded (a plain store's: an encrypted
    // store writes only full checkpoints).
    let mut applied = None;
    let decoded = decoded.map(|mut d| {
        if running && keys.is_none() {
            let id = d.id;
            applied = delta::apply(fs, dir, &id, &mut d, window);
        }
        d
    });
    let usable = match decoded {
        None => Err("damaged or of another version"),
        // A store whose windows were smaller kept fewer ids than this one keeps: where a
        // window was full, the segments may hold older ids that replay enters.
        Some(d) if d.window_full && d.window < window as u64 => {
            Err("it was written with a smaller idempotency_window")
        }
        Some(mut d) => check(&d, cold.as_mut()).and_then(|live| {
            let recorded = std::mem::take(&mut d.segments);
            let (claims, changed) = if running {
                // A folder marked running is always listed (a stamp is not taken for it).
                let listed = segments.ok_or("the folder was not listed")?;
                let (claims, changed) = check_folder_after_crash(
                    fs,
                    dir,
                    &path,
                    recorded,
                    listed,
                    &d.sessions,
                    applied.map(|a| (a.written_ns, a.ids)),
                )?;
                (claims, Some(changed))
            } else {
                (
                    check_folder(fs, dir, &path, recorded, segments, &live)?,
                    None,
                )
            };
            Ok((d, claims, changed))
        }),
    };
    let (d, claims, changed) = match usable {
        Ok(usable) => usable,
        Err(reason) => {
            report.findings.push(Finding::CheckpointIgnored {
                reason: reason.into(),
            });
            return Ok(None);
        }
    };
    // (Deltas written with another window of ids would not apply to it.)
    let follows = !running && keys.is_none() && d.version == VERSION_WRITTEN;
    let base = (follows && d.window == window as u64).then_some(d.id);
    let mut sessions = d.sessions;
    let partial = changed.map(|changed| {
        let mut partial = Partial {
            next_seq: d.next_seq,
            resume: HashMap::with_capacity(changed.len()),
            ..Partial::default()
        };
        for session in sessions.extract_if(.., |s| changed.contains_key(&s.session_id)) {
            // Its locations are read back by its replay (and one whose cannot be is replayed
            // whole).
            if changed.get(&session.session_id) == Some(&true) && !session.view.deleted {
                partial.resume.insert(session.session_id, session);
            }
        }
        partial.ids = changed.into_keys().collect();
        partial.max_seq = sessions.iter().map(|s| s.view.last_seq).max().unwrap_or(0);
        partial
    });
    // Few are deleted: only they move, with their locations read back now (their files were
    // checked now too).
    let mut tombstones: Vec<_> = sessions.extract_if(.., |s| s.view.deleted).collect();
    if !tombstones.iter_mut().all(|s| s.view.read_back()) {
        report.findings.push(Finding::CheckpointIgnored {
            reason: "the message locations of a deleted session cannot be read back".into(),
        });
        return Ok(None);
    }
    let replayed = Replayed {
        sessions,
        tombstones,
        next_seq: d.next_seq,
        next_id: d.next_id,
        report: RecoveryReport::default(),
    };
    Ok(Some(Loaded {
        replayed,
        cold,
        claims,
        partial,
        older_format: d.version < MARKER_VERSION,
        base,
    }))
}

/// A plain store's checkpoint: its header, whose lengths must add up to the file's, then its
/// body, read in order through a bounded buffer with its CRC computed on the way (a damaged
/// or sparse file of any length costs no memory of its length, nor any read error), and the
/// file, kept open: the location section is read from it, and, `lazy` (with the anchored
/// points, see [`Ended::Clean`]), the live sessions' entries again, each the first time it is
/// asked for ([`Cold`]).
fn open_plain(
    fs: &dyn FileSystem,
    path: &Path,
    window: usize,
    lazy: Option<&Anchored>,
) -> Option<(Decoded, Option<Cold>)> {
    let file = fs.open(path, OpenMode::Read).ok()?;
    let len = file.size().ok()?;
    let mut head = [0u8; HEADER_LEN];
    let head_len = HEADER_LEN.min(usize::try_from(len).ok()?);
    file.read_at(&mut head[..head_len], 0).ok()?;
    let h = Header::read(&head[..head_len])?;
    if h.file_len() != Some(len) {
        return None;
    }
    let body_at = h.len as u64;
    let file = Arc::new(BlockFile::new(file, path.to_owned(), body_at + h.body_len));
    let section = Section::File(Arc::clone(&file));
    decode_body(&h, Body::File(&file, body_at), window, section, lazy)
}

/// Removes the checkpoint, its deltas, and a temporary one a crash left, durably: once the
/// store writes, it no longer describes the folder; once it erases, what it holds of the erased
/// goes too. (The deltas first: a crash between the two leaves none without its checkpoint.)
pub(crate) fn remove(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    let mut removed = delta::remove(fs, dir)?;
    let path = dir.join(CHECKPOINT_FILE);
    if fs.exists(&path) {
        fs.remove_file(&path).map_err(context("removing", &path))?;
        removed = true;
    }
    removed |= discard_temp(fs, dir)?;
    if removed {
        // Gone for good before anything changes the segments.
        sync_dir(fs, dir)?;
    }
    Ok(())
}

/// Writes a checkpoint to its temporary file, durably (see [`put_in_place`] for the rest). The
/// checkpoint must be strictly newer than every segment it describes (`newest_segment_ns`), so
/// that a segment changed after it is recognised; on a file system whose clock is too coarse to
/// show that within a short wait, nothing is written (the next open replays instead): returns
/// false then.
pub(crate) fn write_temp(
    fs: &dyn FileSystem,
    dir: &Path,
    parts: &[&[u8]],
    newest_segment_ns: i64,
) -> Result<bool> {
    let temp = dir.join(CHECKPOINT_TEMP_FILE);
    let file = fs
        .open(&temp, OpenMode::Truncate)
        .map_err(context("creating", &temp))?;
    let newer = written_after(fs, &temp, newest_segment_ns, || {
        let mut at = 0u64;
        for part in parts {
            file.write_at(part, at).map_err(context("writing", &temp))?;
            at += part.len() as u64;
        }
        Ok(())
    })?;
    if !newer {
        drop(file);
        discard_temp(fs, dir)?;
        return Ok(false);
    }
    // Whole on disk before the rename makes it the checkpoint.
    file.sync().map_err(context("syncing", &temp))?;
    Ok(true)
}

/// Puts the checkpoint [`write_temp`] wrote in place: rename, folder sync.
pub(crate) fn put_in_place(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    let temp = dir.join(CHECKPOINT_TEMP_FILE);
    let path = dir.join(CHECKPOINT_FILE);
    fs.rename(&temp, &path)
        .map_err(context("renaming", &temp))?;
    // The rename is durable only once the folder is synced.
    sync_dir(fs, dir)
}

/// Removes a checkpoint's temporary file, if there is one; returns whether there was.
fn discard_temp(fs: &dyn FileSystem, dir: &Path) -> Result<bool> {
    let temp = dir.join(CHECKPOINT_TEMP_FILE);
    let there = fs.exists(&temp);
    if there {
        fs.remove_file(&temp).map_err(context("removing", &temp))?;
    }
    Ok(there)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::FileStat;

    #[test]
    fn a_checkpoint_whose_segment_files_are_out_of_order_is_refused() {
        let stat = (
            FileStat {
                len: 100,
                modified_ns: 1,
            },
            None,
        );
        let mut d = Decoded {
            version: 8,
            next_seq: 10,
            next_id: 3,
            window: 0,
            window_full: false,
            segments: vec![
                (folder::Recorded::of("0000000000000002-00000001.seg"), stat),
                (folder::Recorded::of("0000000000000001-00000001.seg"), stat),
            ],
            sessions: Vec::new(),
            id: BaseId {
                body_len: 0,
                body_crc: 0,
                section_len: 0,
                next_seq: 10,
            },
        };
        assert!(check(&d, None).is_err());
        d.segments.reverse();
        assert_eq!(check(&d, None), Ok(Vec::new()));
    }
}

//! The checkpoint: the whole projection, written at a clean close, and while the store runs
//! (`store/checkpointing.rs`), so that the next open can skip replaying every segment.
//!
//! It is trusted only when it is whole (magic, version, CRC). After a clean close the folder
//! must hold exactly the segment files it lists, and open examines no live session's file:
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
//! ```text
//! // Format: { magic: [u8; 8] = "SLCKPT\0\0" | version: u32 | body_len: u64 | body_crc: u32
//! //           | body }
//! ```
//! docs/FORMAT.md describes the body.

mod folder;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::claim::{Claim, SegmentStat};
use crate::error::Result;
use crate::fs::{context, read_all, sync_dir, FileStat, FileSystem, OpenMode};
use crate::keyring::Keyring;
use crate::layout::{CHECKPOINT_FILE, CHECKPOINT_TEMP_FILE, NUMBER_LIMIT};
use crate::location::MessageLoc;
use crate::projection::SessionView;
use crate::record::{Hash, HASH_LEN};
use crate::recovery::{Partial, Replayed, ReplayedSession};
use crate::report::{Finding, RecoveryReport};
use crate::segment::{key_len_ok, FORMAT_VERSION_NEWEST, FORMAT_VERSION_OLDEST};
use folder::{check_folder, check_folder_after_crash};

const MAGIC: [u8; 8] = *b"SLCKPT\0\0";
/// Version 2 added each session's chain head and newest segment's format version; version 3
/// the messages kept for undo, the tombstones and fork origins; version 4 the archived flag and
/// the window of recent ids; version 5 the size of the window it was written with; version 6
/// each segment's change time. Version 7 has the body of version 6; a store that writes it may
/// also leave the running marker beside it (`CHECKPOINT.running`: segments changed after the
/// checkpoint was written), which a store that reads only version 6 would not know of.
const VERSION: u32 = 7;
/// The oldest version read: the body has not changed since.
const VERSION_OLDEST: u32 = 6;

/// How a segment without a change time is recorded.
const NO_CHANGE_TIME: i64 = i64::MIN;
const HEADER_LEN: usize = 8 + 4 + 8 + 4;

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

#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u128(&mut self, v: u128) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
            None => self.u8(0),
        }
    }
}

/// The sessions of a checkpoint, encoded one at a time (each while its session's locks are
/// held, so that no lock is held across sessions).
#[derive(Default)]
pub(crate) struct Sessions {
    count: u64,
    bytes: Writer,
}

impl Sessions {
    /// Adds a session.
    pub(crate) fn add(&mut self, e: &Entry<'_>) {
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
        for list in [&v.messages, &v.cleared] {
            w.u64(list.len() as u64);
            for m in list {
                w.u32(m.segment);
                w.u32(m.len);
                w.u64(m.packed);
                w.i64(m.created_at);
            }
        }
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
        encoded.add(e);
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
    let mut out = Vec::with_capacity(HEADER_LEN + body.0.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(body.0.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body.0).to_le_bytes());
    out.extend_from_slice(&body.0);
    out
}

/// A cursor that never reads past its bytes: every read is `None` at the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn hash(&mut self) -> Option<Hash> {
        self.take(HASH_LEN)?.try_into().ok()
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u128(&mut self) -> Option<u128> {
        Some(u128::from_le_bytes(self.take(16)?.try_into().ok()?))
    }
    fn flag(&mut self) -> Option<bool> {
        match self.u8()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
    fn len(&mut self) -> Option<usize> {
        usize::try_from(self.u64()?).ok()
    }
    fn str(&mut self) -> Option<String> {
        let n = self.len()?;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn opt_str(&mut self) -> Option<Option<String>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.str()?)),
            _ => None,
        }
    }
}

/// A decoded checkpoint.
struct Decoded {
    /// Its format version.
    version: u32,
    next_seq: u64,
    next_id: u64,
    /// The size of the windows of ids it was written with.
    window: u64,
    /// Some session's window held that many ids, so a larger window may hold more of them.
    window_full: bool,
    segments: Vec<(String, SegmentStat)>,
    sessions: Vec<ReplayedSession>,
}

/// The fewest bytes a segment's entry takes (its name's length, its length and two times).
const SEGMENT_BYTES_MIN: usize = 32;
/// Fewer bytes than any session's entry takes (its fixed-width fields alone take more).
const SESSION_BYTES_MIN: usize = 128;

/// The body's length and CRC a checkpoint's header gives, if `bytes` start with a header of
/// this version.
fn header(bytes: &[u8]) -> Option<(u64, u32, u32)> {
    let mut header = Reader(bytes.get(..HEADER_LEN)?);
    if header.take(8)? != MAGIC {
        return None;
    }
    let version = header.u32()?;
    if !(VERSION_OLDEST..=VERSION).contains(&version) {
        return None;
    }
    Some((header.u64()?, header.u32()?, version))
}

/// Decodes a checkpoint; each session's window keeps `window` ids.
fn decode(bytes: &[u8], window: usize) -> Option<Decoded> {
    let (body_len, crc, version) = header(bytes)?;
    let body_len = usize::try_from(body_len).ok()?;
    let body = bytes.get(HEADER_LEN..)?;
    if body.len() != body_len || crc32fast::hash(body) != crc {
        return None;
    }
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
        let head = r.hash()?;
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
        let mut locs = || -> Option<Vec<MessageLoc>> {
            let count = r.len()?;
            let mut list = Vec::with_capacity(count.min(body_len / 24));
            for _ in 0..count {
                list.push(MessageLoc {
                    segment: r.u32()?,
                    len: r.u32()?,
                    packed: r.u64()?,
                    created_at: r.i64()?,
                });
            }
            Some(list)
        };
        let messages = locs()?;
        view.cleared = locs()?;
        view.install_generation(messages, bytes_written);
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
    if !r.0.is_empty() {
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

/// Checks what a whole checkpoint (its CRC right) claims against the rules every store keeps,
/// so that a value the store would never have written is not trusted: numbers below the
/// format's limit, each session's sequence numbers below the next one, keys of a length a
/// session may have, one live session per key and one session per id.
fn check(d: &Decoded) -> std::result::Result<(), &'static str> {
    if d.next_seq >= NUMBER_LIMIT || d.next_id >= NUMBER_LIMIT {
        return Err("it holds a sequence number or session id beyond the format's range");
    }
    let mut ids = HashSet::with_capacity(d.sessions.len());
    let mut live_keys = HashSet::with_capacity(d.sessions.len());
    for s in &d.sessions {
        if s.session_id >= d.next_id || !ids.insert(s.session_id) {
            return Err("it holds a session id twice, or one not below the next");
        }
        if s.view.last_seq >= d.next_seq {
            return Err("a session's last sequence number is not below the next");
        }
        if !key_len_ok(s.view.key.len()) {
            return Err("a session's key is empty or longer than any key may be");
        }
        if !s.view.deleted && !live_keys.insert(s.view.key.as_str()) {
            return Err("two sessions hold one key");
        }
    }
    Ok(())
}

/// The associated data of an encrypted store's checkpoint, which is sealed whole under the
/// store key.
pub(crate) const SEALED_AAD: &[u8] = b"sessionlog checkpoint\0";

/// What a checkpoint each live session's files are checked against, by session id.
pub(crate) type Claims = HashMap<u64, Claim>;

/// A checkpoint as open loaded it.
pub(crate) struct Loaded {
    /// The sessions it holds (after a crash, those whose files did not change since).
    pub replayed: Replayed,
    /// What it claims of each of those live sessions' files, checked at the session's first
    /// read or write.
    pub claims: Claims,
    /// After a crash (a checkpoint taken while the store ran): the sessions to replay.
    pub partial: Option<Partial>,
    /// It is of a version a build that knows nothing of the running marker reads as written
    /// at a clean close: it goes, rather than being marked, before the segments change.
    pub older_format: bool,
}

/// Loads the checkpoint if it is sound and matches the folder's segment files (`segments`,
/// sorted), with what it claims of each live session's files (checked at the session's first
/// read or write). Without a usable checkpoint, returns `None` (the caller replays the
/// segments), and notes why in `report` if one was there. In an encrypted store the file is
/// opened with `keys` first. Each session's window of ids keeps `window` of them.
///
/// `running`: segments may have changed after the checkpoint was written (the store crashed
/// while it ran). Then every segment file is examined now, and the sessions whose files
/// changed are left out and named in [`Loaded::partial`], for a replay.
pub(crate) fn load(
    fs: &dyn FileSystem,
    dir: &Path,
    segments: &[String],
    report: &mut RecoveryReport,
    keys: Option<&Keyring>,
    window: usize,
    running: bool,
) -> Result<Option<Loaded>> {
    let path = dir.join(CHECKPOINT_FILE);
    if !fs.exists(&path) {
        return Ok(None);
    }
    let bytes = match keys {
        // Sealed whole: it is opened whole (its length is the file's).
        Some(keys) => read_all(fs, &path)
            .ok()
            .and_then(|sealed| keys.open_blob(SEALED_AAD, &sealed)),
        None => read_checked(fs, &path),
    };
    let decoded = bytes.and_then(|bytes| decode(&bytes, window));
    let usable = match decoded {
        None => Err("damaged or of another version"),
        // A store whose windows were smaller kept fewer ids than this one keeps: where a
        // window was full, the segments may hold older ids that replay enters.
        Some(d) if d.window_full && d.window < window as u64 => {
            Err("it was written with a smaller idempotency_window")
        }
        Some(mut d) => check(&d).and_then(|()| {
            let recorded = std::mem::take(&mut d.segments);
            let (claims, changed) = if running {
                check_folder_after_crash(fs, dir, &path, recorded, segments, &d.sessions)?
            } else {
                let live: HashSet<u64> = d
                    .sessions
                    .iter()
                    .filter(|s| !s.view.deleted)
                    .map(|s| s.session_id)
                    .collect();
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
    let mut sessions = d.sessions;
    let partial = changed.map(|changed| {
        let mut partial = Partial {
            next_seq: d.next_seq,
            ..Partial::default()
        };
        for session in sessions.extract_if(.., |s| changed.contains_key(&s.session_id)) {
            if changed.get(&session.session_id) == Some(&true) && !session.view.deleted {
                partial.resume.insert(session.session_id, session);
            }
        }
        partial.ids = changed.into_keys().collect();
        partial.max_seq = sessions.iter().map(|s| s.view.last_seq).max().unwrap_or(0);
        partial
    });
    // Few are deleted: only they move.
    let tombstones = sessions.extract_if(.., |s| s.view.deleted).collect();
    let replayed = Replayed {
        sessions,
        tombstones,
        next_seq: d.next_seq,
        next_id: d.next_id,
        report: RecoveryReport::default(),
    };
    Ok(Some(Loaded {
        replayed,
        claims,
        partial,
        older_format: d.version < VERSION,
    }))
}

/// The bytes of a plain store's checkpoint, read only once its header matches the file's
/// length and its body's CRC is right, computed through a fixed buffer: a damaged or sparse
/// file of any length is refused without a buffer of that length (or any read error).
fn read_checked(fs: &dyn FileSystem, path: &Path) -> Option<Vec<u8>> {
    let file = fs.open(path, OpenMode::Read).ok()?;
    let len = file.size().ok()?;
    let mut head = [0u8; HEADER_LEN];
    file.read_at(&mut head, 0).ok()?;
    let (body_len, crc, _) = header(&head)?;
    if (HEADER_LEN as u64).checked_add(body_len) != Some(len) {
        return None;
    }
    let mut hasher = crc32fast::Hasher::new();
    let mut chunk = vec![0u8; READ_CHUNK.min(body_len as usize)];
    let mut at = HEADER_LEN as u64;
    while at < len {
        let n = chunk.len().min((len - at) as usize);
        file.read_at(&mut chunk[..n], at).ok()?;
        hasher.update(&chunk[..n]);
        at += n as u64;
    }
    if hasher.finalize() != crc {
        return None;
    }
    let mut bytes = vec![0u8; usize::try_from(len).ok()?];
    file.read_at(&mut bytes, 0).ok()?;
    Some(bytes)
}

/// The buffer a checkpoint's CRC is computed through before it is read whole.
const READ_CHUNK: usize = 256 << 10;

/// Removes the checkpoint, and a temporary one a crash left, durably: once the store writes,
/// it no longer describes the folder; once it erases, what it holds of the erased goes too.
pub(crate) fn remove(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    let path = dir.join(CHECKPOINT_FILE);
    let temp = dir.join(CHECKPOINT_TEMP_FILE);
    let mut removed = false;
    for path in [path, temp] {
        if fs.exists(&path) {
            fs.remove_file(&path).map_err(context("removing", &path))?;
            removed = true;
        }
    }
    if removed {
        // Gone for good before anything changes the segments.
        sync_dir(fs, dir)?;
    }
    Ok(())
}

/// How long `write` waits for the clock to move past the segments' modification times.
const CLOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Writes a checkpoint to its temporary file, durably (see [`put_in_place`] for the rest). The
/// checkpoint must be strictly newer than every segment it describes (`newest_segment_ns`), so
/// that a segment changed after it is recognised; on a file system whose clock is too coarse to
/// show that within a short wait, nothing is written (the next open replays instead): returns
/// false then.
pub(crate) fn write_temp(
    fs: &dyn FileSystem,
    dir: &Path,
    bytes: &[u8],
    newest_segment_ns: i64,
) -> Result<bool> {
    let temp = dir.join(CHECKPOINT_TEMP_FILE);
    let file = fs
        .open(&temp, OpenMode::Truncate)
        .map_err(context("creating", &temp))?;
    let started = std::time::Instant::now();
    loop {
        file.write_at(bytes, 0).map_err(context("writing", &temp))?;
        let written = fs.stat(&temp).map_err(context("examining", &temp))?;
        if written.modified_ns > newest_segment_ns {
            break;
        }
        if started.elapsed() > CLOCK_WAIT {
            drop(file);
            discard_temp(fs, dir)?;
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
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

/// Removes a checkpoint's temporary file, if there is one.
fn discard_temp(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    let temp = dir.join(CHECKPOINT_TEMP_FILE);
    if fs.exists(&temp) {
        fs.remove_file(&temp).map_err(context("removing", &temp))?;
    }
    Ok(())
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
        let d = decode(&bytes, IDEMPOTENCY_WINDOW_DEFAULT).unwrap();
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
                decode(&bad, IDEMPOTENCY_WINDOW_DEFAULT).is_none(),
                "flip at {i}"
            );
        }
        for cut in 0..bytes.len() {
            assert!(
                decode(&bytes[..cut], IDEMPOTENCY_WINDOW_DEFAULT).is_none(),
                "cut at {cut}"
            );
        }
    }
}

//! The checkpoint: the whole projection, written at a clean close so that the next open can
//! skip replaying every segment.
//!
//! It is trusted only when it is whole (magic, version, CRC) and the folder holds exactly the
//! segment files it lists. Open examines no live session's file: what the checkpoint recorded
//! of each (length, modification time, change time, which no program can set back) becomes the
//! session's [`Claim`], checked the first time the session is read or written, which replays
//! the session if its files changed after the checkpoint was written (damaged, edited, cut,
//! another file's bytes copied over one with its times put back). The files of the deleted
//! sessions it keeps for restore are checked at open: a change there makes open fall back to
//! the full replay, which reports the damage. The store removes the checkpoint (durably) just
//! before it first changes a segment.
//!
//! ```text
//! // Format: { magic: [u8; 8] = "SLCKPT\0\0" | version: u32 | body_len: u64 | body_crc: u32
//! //           | body }
//! ```
//! docs/FORMAT.md describes the body.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use crate::claim::{compare, Claim, Compared, SegmentStat};
use crate::error::Result;
use crate::fs::{context, read_all, sync_dir, FileStat, FileSystem, OpenMode};
use crate::keyring::Keyring;
use crate::layout::{
    parse_segment_name, CHECKPOINT_FILE, CHECKPOINT_TEMP_FILE, NUMBER_LIMIT, SEGMENT_SUFFIX,
};
use crate::location::MessageLoc;
use crate::projection::SessionView;
use crate::record::{Hash, HASH_LEN};
use crate::recovery::{Replayed, ReplayedSession};
use crate::report::{Finding, RecoveryReport};
use crate::segment::{key_len_ok, FORMAT_VERSION_NEWEST, FORMAT_VERSION_OLDEST};

const MAGIC: [u8; 8] = *b"SLCKPT\0\0";
/// Version 2 added each session's chain head and newest segment's format version; version 3
/// the messages kept for undo, the tombstones and fork origins; version 4 the archived flag and
/// the window of recent ids; version 5 the size of the window it was written with; version 6
/// each segment's change time.
const VERSION: u32 = 6;

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

/// Encodes a checkpoint of the given sessions and segment files (name, length, time), written
/// by a store whose windows keep `window` ids.
pub(crate) fn encode(
    next_seq: u64,
    next_id: u64,
    window: usize,
    segments: &[(String, SegmentStat)],
    sessions: &[Entry<'_>],
) -> Vec<u8> {
    let mut body = Writer(Vec::new());
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
    body.u64(sessions.len() as u64);
    for e in sessions {
        let v = e.view;
        body.u64(e.session_id);
        body.u32(e.oldest);
        body.u32(e.newest);
        body.u64(e.newest_len);
        body.0.extend_from_slice(&e.head);
        body.u32(e.newest_version);
        body.u64(v.bytes_written);
        body.str(&v.key);
        body.i64(v.created_at);
        body.i64(v.last_activity);
        for s in [
            &v.name,
            &v.agent_alias,
            &v.channel_id,
            &v.room_id,
            &v.sender_id,
        ] {
            body.opt_str(s.as_deref());
        }
        body.str(&v.state);
        body.opt_str(v.turn_id.as_deref());
        match v.turn_started_at {
            Some(t) => {
                body.u8(1);
                body.i64(t);
            }
            None => body.u8(0),
        }
        for list in [&v.messages, &v.cleared] {
            body.u64(list.len() as u64);
            for m in list {
                body.u32(m.segment);
                body.u32(m.len);
                body.u64(m.packed);
                body.i64(m.created_at);
            }
        }
        match v.cleared_by {
            Some((seq, ts)) => {
                body.u8(1);
                body.u64(seq);
                body.i64(ts);
            }
            None => body.u8(0),
        }
        body.u8(u8::from(v.deleted));
        body.i64(v.deleted_at);
        body.u64(v.last_seq);
        match &v.fork_origin {
            Some((source, at_seq)) => {
                body.u8(1);
                body.str(source);
                body.u64(*at_seq);
            }
            None => body.u8(0),
        }
        body.u8(u8::from(v.archived));
        body.u64(v.recent_ids.len() as u64);
        for digest in v.recent_ids.digests() {
            body.u128(digest);
        }
    }
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
fn header(bytes: &[u8]) -> Option<(u64, u32)> {
    let mut header = Reader(bytes.get(..HEADER_LEN)?);
    if header.take(8)? != MAGIC || header.u32()? != VERSION {
        return None;
    }
    Some((header.u64()?, header.u32()?))
}

/// Decodes a checkpoint; each session's window keeps `window` ids.
fn decode(bytes: &[u8], window: usize) -> Option<Decoded> {
    let (body_len, crc) = header(bytes)?;
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

/// Loads the checkpoint if it is sound and matches the folder's segment files (`segments`,
/// sorted), with what it claims of each live session's files (checked at the session's first
/// read or write). Without a usable checkpoint, returns `None` (the caller replays the
/// segments), and notes why in `report` if one was there. The caller removes it with [`remove`]
/// before the store takes a write. In an encrypted store the file is opened with `keys` first.
/// Each session's window of ids keeps `window` of them.
pub(crate) fn load(
    fs: &dyn FileSystem,
    dir: &Path,
    segments: &[String],
    report: &mut RecoveryReport,
    keys: Option<&Keyring>,
    window: usize,
) -> Result<Option<(Replayed, Claims)>> {
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
            let live: HashSet<u64> = d
                .sessions
                .iter()
                .filter(|s| !s.view.deleted)
                .map(|s| s.session_id)
                .collect();
            let recorded = std::mem::take(&mut d.segments);
            let claims = check_folder(fs, dir, &path, recorded, segments, &live)?;
            Ok((d, claims))
        }),
    };
    let (d, claims) = match usable {
        Ok(usable) => usable,
        Err(reason) => {
            report.findings.push(Finding::CheckpointIgnored {
                reason: reason.into(),
            });
            return Ok(None);
        }
    };
    // Few are deleted: only they move.
    let mut sessions = d.sessions;
    let tombstones = sessions.extract_if(.., |s| s.view.deleted).collect();
    let replayed = Replayed {
        sessions,
        tombstones,
        next_seq: d.next_seq,
        next_id: d.next_id,
        report: RecoveryReport::default(),
    };
    Ok(Some((replayed, claims)))
}

/// The bytes of a plain store's checkpoint, read only once its header matches the file's
/// length and its body's CRC is right, computed through a fixed buffer: a damaged or sparse
/// file of any length is refused without a buffer of that length (or any read error).
fn read_checked(fs: &dyn FileSystem, path: &Path) -> Option<Vec<u8>> {
    let file = fs.open(path, OpenMode::Read).ok()?;
    let len = file.size().ok()?;
    let mut head = [0u8; HEADER_LEN];
    file.read_at(&mut head, 0).ok()?;
    let (body_len, crc) = header(&head)?;
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

/// Removes the checkpoint, durably: once the store writes, it no longer describes the folder.
pub(crate) fn remove(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    let path = dir.join(CHECKPOINT_FILE);
    if fs.exists(&path) {
        fs.remove_file(&path).map_err(context("removing", &path))?;
        // Gone for good before anything changes the segments.
        sync_dir(fs, dir)?;
    }
    Ok(())
}

/// Checks that the folder's segment and temporary files are exactly those recorded, and
/// returns what the checkpoint claims of each live session's segment files (`live`): those are
/// checked the first time the session is read or written (`claim.rs`), so that open does no
/// work per file. Every other file it records (the deleted sessions kept for restore, files of
/// no session) is checked now: unchanged, and modified before the checkpoint.
fn check_folder(
    fs: &dyn FileSystem,
    dir: &Path,
    checkpoint: &Path,
    recorded: Vec<(String, SegmentStat)>,
    listed: &[String],
    live: &HashSet<u64>,
) -> std::result::Result<HashMap<u64, Claim>, &'static str> {
    if recorded.len() != listed.len() || recorded.iter().zip(listed).any(|((a, _), b)| a != b) {
        return Err("the folder's segment files differ from those it records");
    }
    let written = fs
        .stat(checkpoint)
        .map_err(|_| "it cannot be examined")?
        .modified_ns;
    // Sorted by name, so by session id and then segment number: each session's files are
    // one run of `files`.
    let mut files = Vec::with_capacity(recorded.len());
    let mut runs: Vec<(u64, std::ops::Range<usize>)> = Vec::with_capacity(live.len());
    for (name, stat) in recorded {
        match parse_segment_name(&name, SEGMENT_SUFFIX) {
            Some((id, number)) if live.contains(&id) => {
                match runs.last_mut() {
                    Some((last, run)) if *last == id => run.end += 1,
                    _ => runs.push((id, files.len()..files.len() + 1)),
                }
                files.push((number, stat));
            }
            _ => {
                let now = fs
                    .stat_changed(&dir.join(&name))
                    .map_err(|_| "a segment cannot be examined")?;
                match compare(&stat, &now, written) {
                    Compared::Changed => return Err("a segment changed after it was written"),
                    Compared::Rewritten => {
                        return Err("a segment was rewritten after it was written")
                    }
                    Compared::Same { .. } => {}
                }
            }
        }
    }
    let files: Arc<[(u32, SegmentStat)]> = Arc::from(files);
    Ok(runs
        .into_iter()
        .map(|(id, run)| (id, Claim::new(written, Arc::clone(&files), run)))
        .collect())
}

/// How long `write` waits for the clock to move past the segments' modification times.
const CLOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Writes a checkpoint durably: temporary file, sync, rename, folder sync. The checkpoint must
/// be strictly newer than every segment it describes (`newest_segment_ns`), so that a segment
/// changed after it is recognised; on a file system whose clock is too coarse to show that
/// within a short wait, no checkpoint is written (the next open replays instead).
pub(crate) fn write(
    fs: &dyn FileSystem,
    dir: &Path,
    bytes: &[u8],
    newest_segment_ns: i64,
) -> Result<()> {
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
            fs.remove_file(&temp).map_err(context("removing", &temp))?;
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    // Whole on disk before the rename makes it the checkpoint.
    file.sync().map_err(context("syncing", &temp))?;
    drop(file);
    let path = dir.join(CHECKPOINT_FILE);
    fs.rename(&temp, &path)
        .map_err(context("renaming", &temp))?;
    // The rename is durable only once the folder is synced.
    sync_dir(fs, dir)
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

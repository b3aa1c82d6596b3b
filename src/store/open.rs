//! Opening a store as named steps (folder, lock, keys, checkpoint or replay, repair, threads)
//! and the checkpoint written at close.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::anchor::{Anchored, Anchors};
use crate::checkpoint::{self, Claims, Cold, Loaded};
use crate::compaction::{self, Cleared, Disposal, NewGeneration};
use crate::erasures::{self, ErasureLog};
use crate::error::{Error, Result};
use crate::feed::Feed;
use crate::fs::{context, retry_while_gone, sync_dir, FileSystem, LockGuard, OpenMode};
use crate::health::Monitor;
use crate::keyring::{self, Keyring};
use crate::layout;
use crate::layout::LOCK_FILE;
use crate::options::{Durability, Options};
use crate::record::{encode_event, encode_frame, encode_record, Event};
use crate::recovery::{self, Partial, Replayed, ReplayedSession};
use crate::report::{Finding, RecoveryReport, Reports};
use crate::segment::{self, SegmentFiles, SegmentKind};

use super::appender::Unsynced;
use super::background::{compactor, flusher, spawn, Background};
use super::checkpointing::{checkpointer, CheckpointState};
use super::retire::Readers;
use super::root;
use super::session_map::{slot_from, SessionMap};
use super::tombstones::Tombstones;
use super::{every_loc, now_micros, Inner, LogStore, Slot};

impl LogStore {
    pub(crate) fn read_only_mode(
        dir: &Path,
        options: Options,
        fs: Arc<dyn FileSystem>,
    ) -> Result<LogStore> {
        let options = Options {
            auto_compact: false,
            ..options
        };
        // A writer beside the reader removed a file the reader had listed (a compaction
        // replaced a segment, an erasure or a sweep took a session): the folder is listed and
        // read again, which finds what replaced it.
        retry_while_gone(
            READ_ONLY_OPEN_TRIES,
            || LogStore::open_mode(dir, options.clone(), Arc::clone(&fs), true),
            |made, gone| {
                // A missing store is an error at once.
                if !fs.is_dir(dir) {
                    return Err(gone);
                }
                // A compaction removes what it replaced right after its rename: give it that
                // moment, longer each time.
                std::thread::sleep(Duration::from_millis(u64::from(made)));
                Ok(())
            },
        )
    }

    /// Opens the store in `dir`: the folder, its lock, the state on disk (from the checkpoint
    /// or a replay), the sessions (repaired where damaged), then the background threads.
    pub(super) fn open_mode(
        dir: &Path,
        options: Options,
        fs: Arc<dyn FileSystem>,
        read_only: bool,
    ) -> Result<LogStore> {
        options.validate()?;
        let dir = dir.to_path_buf();
        prepare_folder(&*fs, &dir, &options, read_only)?;
        let (lock, file_system) = if read_only {
            (None, None)
        } else {
            let lock = lock_folder(&*fs, &dir)?;
            // Opened before anything is written, so that it hears of every failed write-back.
            let path = dir.join(LOCK_FILE);
            let handle = fs.open(&path, OpenMode::Read);
            (Some(lock), Some(handle.map_err(context("opening", &path))?))
        };
        // Read before the segments: a writer beside a read-only open anchors only what it
        // wrote before, so the segments read next hold at least what these anchors record.
        // (From the last full anchor on: the same points, without the whole history.)
        let mut anchors = Anchors::read_latest(&*fs, &dir, u64::MAX)?;
        let mut state = OnDisk::load(&fs, &dir, &options, read_only, &anchors.points)?;
        anchors.report_damage(&dir, &mut state.report);
        let opening = Opening {
            fs: &*fs,
            dir: &dir,
            keys: state.keys.as_ref(),
            options: &options,
            read_only,
        };
        let sessions = opening.settle_sessions(
            state.sessions,
            &mut state.claims,
            &mut state.next_seq,
            &mut state.erased,
            &mut state.report,
        )?;
        // A session erased after the checkpoint open read was written (by this open: the older
        // of two under one key, an erasure a crash cut short; or by a run that crashed between
        // its erasure and the checkpoint's removal): nothing of it may outlive the erasure, and
        // the checkpoint may hold its key, name and context.
        let erased_since_checkpoint = state
            .checkpoint_seq
            .is_some_and(|seq| state.erased.last_erasure_seq >= seq);
        let (tombstones, displaced) = tombstones_from(state.tombstones);
        // A session that ends before the point its anchor records was rolled back.
        if !read_only {
            anchors.repair(&*fs, &dir, &mut state.report)?;
        }
        let mut points = root::points(
            sessions
                .values()
                .chain(tombstones.slots())
                .chain(&displaced),
        );
        if let Some(cold) = &state.cold {
            points.add_cold(cold);
        }
        let mut gone = root::erasing(state.keys.as_ref())?;
        if read_only {
            // A writer beside a read-only open may have erased a session since the log was
            // read (it logs the erasure before the files go): read again, after the segments.
            gone.extend(erasures::read(&*fs, &dir)?.erased_sessions());
        }
        let (explained, behind) = root::check_anchored(
            &anchors,
            &points,
            &state.report.findings,
            &dir,
            &*fs,
            |id| gone.contains(&id) || state.erased.holds(id),
        );
        state.report.findings.extend(behind);
        let anchoring = root::Anchoring {
            durable_end: anchors.end(),
            synced: false,
            full: anchors.full(),
        };
        drop(points);
        drop(anchors);
        // One look at each session held in memory: whether it is live, and whether it is a
        // fork (deleted ones too: a restore brings a fork back).
        let mut live_sessions = state.cold.as_ref().map_or(0, |cold| cold.entries.len());
        let mut forks_seen = state.cold.as_ref().is_some_and(|cold| cold.has_forks);
        for slot in sessions
            .values()
            .chain(tombstones.slots())
            .chain(&displaced)
        {
            let view = slot.view.read();
            live_sessions += usize::from(view.is_live());
            forks_seen |= view.fork_origin.is_some();
        }
        let sessions = SessionMap::new(sessions, state.cold.map(|cold| (cold, state.claims)));
        let report = state.report;
        let index_in_use = super::searching::index_exists(&*fs, &dir);
        let inner = Arc::new(Inner {
            fs,
            dir,
            options,
            sessions: RwLock::new(sessions),
            feed: Feed::new(state.next_seq),
            first_seq: state.next_seq,
            // An erased session's id is never taken again (the erasure log's ids).
            next_id: AtomicU64::new(state.next_id.max(state.erased.next_id)),
            poisoned: AtomicBool::new(false),
            // Nothing reserved yet: the first number taken raises the floor.
            reserved: AtomicU64::new(0),
            reserving: Mutex::new(()),
            anchoring: Mutex::new(anchoring),
            explained: Mutex::new(explained),
            monitor: Monitor::default(),
            open_files: AtomicUsize::new(0),
            unsynced: Mutex::new(Unsynced::default()),
            flushing: Mutex::new(false),
            file_system,
            background: Background::default(),
            checkpoint: Mutex::new(CheckpointState {
                marked: state.marked,
                unsynced_before_open: report.replayed_sessions > 0,
                older_format: state.older_format,
                base: state.base.map(super::checkpointing::Base::new),
                erasures: 0,
                erasing: 0,
                recorded: None,
                listed_as_recorded: state.listed_as_recorded,
            }),
            checkpoint_exact: AtomicBool::new(report.from_checkpoint && !state.after_crash),
            checkpointing: Mutex::new(()),
            written_since_checkpoint: AtomicU64::new(0),
            read_only,
            readers: Mutex::new(Readers::default()),
            tombstones: Mutex::new(tombstones),
            activity: Mutex::new(None),
            residence: Mutex::default(),
            search: Mutex::new(None),
            changes: AtomicU64::new(0),
            index_in_use: AtomicBool::new(index_in_use),
            live_sessions: AtomicUsize::new(live_sessions),
            forks_seen: AtomicBool::new(forks_seen),
            fork_gate: RwLock::new(()),
            traces: Mutex::new(None),
            report: Reports::new(report),
            _lock: lock,
            keys: state.keys,
            erasure_log: Mutex::new(state.erased),
        });
        if !read_only {
            if erased_since_checkpoint {
                // Every session's locations are read back from it first: then it goes.
                inner.drop_checkpoint_for_erasure()?;
            }
            for slot in displaced {
                inner.reclaim_tombstone(&slot)?;
            }
            inner.sweep_tombstones()?;
        }
        #[cfg(feature = "replication")]
        inner.start_replication()?;
        let threads = start_threads(&inner)?;
        Ok(LogStore {
            inner,
            threads,
            shut: false,
        })
    }
}

/// Creates the store's folder if missing (durably), and refuses one that others may write to.
fn prepare_folder(
    fs: &dyn FileSystem,
    dir: &Path,
    options: &Options,
    read_only: bool,
) -> Result<()> {
    if !fs.is_dir(dir) {
        if read_only {
            return Err(context("opening", dir)(std::io::ErrorKind::NotFound.into()));
        }
        fs.create_dir_all(dir).map_err(context("creating", dir))?;
        // The new folder's entry must be durable before anything in it is.
        sync_dir(fs, crate::fs::parent(dir))?;
    }
    let mode = fs.folder_mode(dir).map_err(context("examining", dir))?;
    if mode & 0o022 != 0 && !options.allow_shared_folder {
        // Another user who may write to the folder could replace or remove segments.
        return Err(Error::InsecureFolder {
            path: dir.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Takes the folder's lock, waiting a moment for a holder that may release it at once: a
/// child process this process starts holds a copy of the lock's descriptor between its fork
/// and its exec, so a store dropped and opened again meanwhile would find its own lock held.
fn lock_folder(fs: &dyn FileSystem, dir: &Path) -> Result<Box<dyn LockGuard>> {
    let lock_path = dir.join(LOCK_FILE);
    let mut waited = Duration::ZERO;
    loop {
        match fs.lock(&lock_path) {
            Ok(lock) => return Ok(lock),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if waited >= LOCK_WAIT_MAX {
                    return Err(Error::Locked { path: lock_path });
                }
                std::thread::sleep(LOCK_RETRY_EVERY);
                waited += LOCK_RETRY_EVERY;
            }
            Err(e) => return Err(context("locking", &lock_path)(e)),
        }
    }
}

/// What the folder holds, read at open: the keys, the erasure log, every session as the
/// checkpoint or a replay left it (the sessions that exist, and the restorable deleted ones),
/// the next sequence number and the next session id.
struct OnDisk {
    keys: Option<Keyring>,
    erased: ErasureLog,
    sessions: Vec<ReplayedSession>,
    /// The live sessions the checkpoint holds, left in its bytes until first asked for
    /// (after a clean close).
    cold: Option<Cold>,
    tombstones: Vec<ReplayedSession>,
    /// What the checkpoint claims of each live session's files, checked at the session's
    /// first read or write (none after a replay, which read every file).
    claims: Claims,
    next_seq: u64,
    next_id: u64,
    report: RecoveryReport,
    /// The running marker is on disk.
    marked: bool,
    /// Open took a checkpoint taken while the store ran, and replayed the sessions written
    /// after it.
    after_crash: bool,
    /// The checkpoint it read is of a version older builds read (see `CheckpointState`).
    older_format: bool,
    /// The clean close's checkpoint it used, which deltas may follow (see `CheckpointState`).
    base: Option<checkpoint::BaseId>,
    /// The next sequence number the checkpoint it used recorded (`None`: it used none).
    checkpoint_seq: Option<u64>,
    /// The folder's names as open listed them and found them to be those the clean close's
    /// checkpoint records (`layout::names_hash`); `None` when the folder was not listed (its
    /// stamp held) or the checkpoint was not a clean close's.
    listed_as_recorded: Option<crate::record::Hash>,
}

impl OnDisk {
    /// Lists the folder, checks the key, reads the erasure log, then loads the checkpoint if
    /// it matches the folder (never for a reader, which checks every record) or replays every
    /// segment. A writer then raises the nonce epoch (every header is read and nothing sealed
    /// yet) and removes a checkpoint it did not use.
    ///
    /// `anchored`: the anchor log's points, which open checks the sessions against (a cold
    /// session's chain head is kept only where it differs from its point).
    fn load(
        fs: &Arc<dyn FileSystem>,
        dir: &Path,
        options: &Options,
        read_only: bool,
        anchored: &Anchored,
    ) -> Result<OnDisk> {
        // Segments changed after the checkpoint was written, and the store never closed
        // cleanly: the checkpoint holds only the sessions whose files did not change since.
        let marked = fs.exists(&dir.join(layout::CHECKPOINT_RUNNING_FILE));
        // The folder as a clean close stamped it (no entry made, removed or renamed since):
        // its segment files are those the checkpoint records, and it is not listed. (The
        // keys' check needs the listing only for a key given to a store without keys.)
        let stamped = !read_only
            && !marked
            && (options.encryption.is_none() || keyring::is_encrypted(&**fs, dir))
            && layout::FolderStamp::read(&**fs, dir)
                .is_some_and(|stamp| layout::FolderStamp::now(&**fs, dir) == Some(stamp));
        let folder = if stamped {
            None
        } else {
            Some(recovery::list_folder(&**fs, dir)?)
        };
        let names = folder.as_ref().map_or(&[][..], |f| f.names.as_slice());
        let mut keys = open_keyring(fs, dir, options, read_only, names)?;
        let mut report = RecoveryReport::default();
        let mut erased = ErasureLog::open(&**fs, dir, &mut report)?;
        let loaded = if read_only {
            None
        } else {
            checkpoint::load(
                &**fs,
                dir,
                folder.as_ref().map(|f| f.names.as_slice()),
                &mut report,
                keys.as_ref(),
                options.idempotency_window,
                if marked {
                    checkpoint::Ended::Running
                } else {
                    checkpoint::Ended::Clean(anchored)
                },
            )?
        };
        let mut after_crash = false;
        let older_format = loaded.as_ref().is_some_and(|l| l.older_format);
        let base = loaded.as_ref().and_then(|l| l.base);
        // The first number the checkpoint had not handed out when it was written: an erasure
        // logged at or above it came after it.
        let checkpoint_seq = loaded.as_ref().map(|l| l.replayed.next_seq);
        let mut listed_as_recorded = None;
        let (replayed, claims, cold) = match loaded {
            Some(Loaded {
                replayed: mut from_checkpoint,
                claims,
                partial: None,
                cold,
                ..
            }) => {
                report.from_checkpoint = true;
                // (Replay repairs the erasure log itself, once every header is read.)
                erased.repair(&**fs, dir, &mut report)?;
                if !read_only {
                    // Deltas beside a clean close's checkpoint follow another one (a clean
                    // close removes them): they go, and nothing of what they hold lingers.
                    checkpoint::remove_deltas(&**fs, dir)?;
                }
                // The checkpoint was checked against the listing: they hold the same names.
                listed_as_recorded = folder.as_ref().map(|f| layout::names_hash(&f.names));
                from_checkpoint.report = folder.map(|f| f.report).unwrap_or_default();
                (from_checkpoint, claims, cold)
            }
            loaded => {
                // After a crash, the sessions whose files changed since the checkpoint (the
                // others come from it); without a usable checkpoint, every session.
                let (kept, claims, partial) = match loaded {
                    Some(Loaded {
                        replayed: kept,
                        claims,
                        partial: Some(partial),
                        ..
                    }) => {
                        let (kept, claims, partial) =
                            drop_erased(kept, claims, partial, &erased, keys.as_ref())?;
                        (Some(kept), claims, Some(partial))
                    }
                    _ => (None, Claims::default(), None),
                };
                let replaying = recovery::ReplayOptions::of(options, !read_only);
                let keys = keys.as_ref();
                let folder = match folder {
                    Some(folder) => folder,
                    None => recovery::list_folder(&**fs, dir)?,
                };
                let mut replayed =
                    recovery::replay(&**fs, dir, folder, &replaying, keys, &mut erased, partial)?;
                if let Some(mut kept) = kept {
                    report.from_checkpoint = true;
                    after_crash = true;
                    replayed.sessions.append(&mut kept.sessions);
                    replayed.tombstones.append(&mut kept.tombstones);
                    replayed.next_id = replayed.next_id.max(kept.next_id);
                }
                // (A checkpoint taken while the store ran is decoded whole.)
                (replayed, claims, None)
            }
        };
        if let (Some(keys), false) = (keys.as_mut(), read_only) {
            keys.start_writing()?;
        }
        if !report.from_checkpoint && !read_only {
            // A stale or damaged checkpoint goes at once. One that was used stays, marked
            // running from the first change to the segments on (see
            // `Inner::forget_checkpoint`), so that a store opened only to read neither pays for
            // its removal nor rewrites it at close.
            checkpoint::remove(&**fs, dir)?;
        }
        let Replayed {
            sessions,
            tombstones,
            next_seq,
            next_id,
            report: found,
        } = replayed;
        report.findings.extend(found.findings);
        report.replayed_sessions = found.replayed_sessions;
        // Deltas follow only a clean close's checkpoint that this open used.
        let base = base.filter(|_| report.from_checkpoint && !after_crash);
        Ok(OnDisk {
            // Erasures have sequence numbers too (the erasure log's).
            next_seq: next_seq.max(erased.max_seq + 1),
            next_id,
            keys,
            erased,
            sessions,
            cold,
            tombstones,
            claims,
            report,
            marked,
            after_crash,
            older_format,
            base,
            checkpoint_seq,
            listed_as_recorded,
        })
    }
}

/// After a crash: a session the checkpoint holds that was erased since (the erasure log or an
/// `.erasing` key marker names it) goes by the erasure, whatever is left of its files, which
/// the replay then removes: it leaves the sessions kept from the checkpoint and their claims,
/// and joins the sessions to replay.
fn drop_erased(
    mut kept: Replayed,
    mut claims: Claims,
    mut partial: Partial,
    erased: &ErasureLog,
    keys: Option<&Keyring>,
) -> Result<(Replayed, Claims, Partial)> {
    let erasing = root::erasing(keys)?;
    let gone = |id: u64| erased.holds(id) || erasing.contains(&id);
    let erased_ids: Vec<u64> = (kept.sessions.iter().chain(&kept.tombstones))
        .map(|s| s.session_id)
        .filter(|&id| gone(id))
        .collect();
    kept.sessions.retain(|s| !gone(s.session_id));
    kept.tombstones.retain(|s| !gone(s.session_id));
    claims.drop_if(gone);
    partial
        .ids
        .extend(erasing.iter().chain(&erased_ids).copied());
    Ok((kept, claims, partial))
}

/// What the steps of open after the load share: the folder, its keys, the options, and
/// whether this open may change anything.
struct Opening<'a> {
    fs: &'a dyn FileSystem,
    dir: &'a Path,
    keys: Option<&'a Keyring>,
    options: &'a Options,
    read_only: bool,
}

impl Opening<'_> {
    /// The sessions by key, newest first: a damaged one is repaired (a writer) or served as
    /// far as it is sound (a reader); when a power loss left two sessions with one key, the
    /// newer one is the real one (a key gets a new session only after its old one is deleted)
    /// and the older one's lost delete is written again.
    fn settle_sessions(
        &self,
        mut replayed: Vec<ReplayedSession>,
        claims: &mut Claims,
        next_seq: &mut u64,
        erased: &mut ErasureLog,
        report: &mut RecoveryReport,
    ) -> Result<HashMap<String, Arc<Slot>>> {
        let mut sessions: HashMap<String, Arc<Slot>> = HashMap::with_capacity(replayed.len());
        // Taken from the end, newest session id first; the list gives its memory back as it
        // empties (a large list is a mapping of its own: shrinking it returns pages), so the
        // decoded sessions and their slots are not both held whole.
        replayed.sort_by_key(|s| s.session_id);
        while let Some(mut session) = replayed.pop() {
            if replayed.capacity() > SHRINK_FROM && replayed.len() < replayed.capacity() / 8 * 7 {
                replayed.shrink_to_fit();
            }
            let twin = sessions.contains_key(&session.view.key);
            let slot = match (twin, session.damage.is_some(), self.read_only) {
                (false, false, _) => {
                    let claim = claims.take(session.session_id);
                    slot_from(session, claim)
                }
                (false, true, false) => self.repair(session, next_seq, report)?,
                (false, true, true) => {
                    // Read-only: the session as far as it is sound, the damage left in place.
                    if let Some((path, offset, reason)) = session.damage.take() {
                        report.findings.push(Finding::Damaged {
                            key: Some(session.view.key.clone()),
                            path,
                            offset,
                            reason,
                            quarantined: Vec::new(),
                        });
                    }
                    slot_from(session, None)
                }
                (true, _, false) => {
                    self.restore_delete(session, next_seq, erased, report)?;
                    continue;
                }
                (true, _, true) => continue, // the older twin is deleted (see above)
            };
            sessions.insert(slot.key.clone(), Arc::new(slot));
        }
        Ok(sessions)
    }

    /// Rewrites a damaged session's good prefix as a new generation and moves its old segments,
    /// damage included, into quarantine.
    fn repair(
        &self,
        mut session: ReplayedSession,
        next_seq: &mut u64,
        report: &mut RecoveryReport,
    ) -> Result<Slot> {
        let retention = self.options.tombstone_retention;
        let found = rewrite_damaged(
            self.fs,
            self.dir,
            self.keys,
            retention,
            &mut session,
            *next_seq,
        )?;
        *next_seq += 1;
        report.findings.push(found);
        Ok(slot_from(session, None))
    }

    /// Writes the delete record a power loss lost for an older session whose key a newer session
    /// now holds (only possible without `Durability::Always`).
    fn restore_delete(
        &self,
        session: ReplayedSession,
        next_seq: &mut u64,
        erased: &mut ErasureLog,
        report: &mut RecoveryReport,
    ) -> Result<()> {
        let (fs, dir, keys) = (self.fs, self.dir, self.keys);
        let key = session.view.key.clone();
        if let Some((path, offset, reason)) = session.damage {
            let quarantined = compaction::retire(
                fs,
                dir,
                session.session_id,
                session.oldest,
                session.highest.saturating_add(1),
                Disposal::Quarantine,
            )?;
            report.findings.push(Finding::Damaged {
                key: Some(key),
                path,
                offset,
                reason,
                quarantined,
            });
            return Ok(());
        }
        let path = layout::segment_path(dir, session.session_id, session.newest);
        let mut frame = Vec::new();
        if session.newest_version >= 2 {
            let key = keyring::data_key(keys, session.session_id)?;
            encode_record(
                *next_seq,
                now_micros(),
                &session.head,
                &Event::Delete,
                &mut frame,
                key.as_deref(),
            );
        } else {
            // The segment has the version 1 layout: its records have no chain link.
            let payload = encode_event(&Event::Delete);
            encode_frame(*next_seq, now_micros(), None, &payload, &mut frame);
        }
        *next_seq += 1;
        let file = fs
            .open(&path, OpenMode::Write)
            .map_err(context("opening", &path))?;
        if file.size().map_err(context("examining", &path))? != session.newest_len {
            // A checkpoint that does not match its files (whole, its CRC right) is the one way
            // there.
            return Err(super::appender::ends_elsewhere(&path, session.newest_len));
        }
        file.write_at(&frame, session.newest_len)
            .map_err(context("writing", &path))?;
        // The delete must be durable before the newer session is served alone.
        file.sync().map_err(context("syncing", &path))?;
        drop(file);
        // Then its files go, as a reclaim does: the sequence floor first, and the erasure logged.
        layout::write_seq_floor(fs, dir, *next_seq)?;
        erased.log(fs, dir, session.session_id, next_seq)?;
        erasures::erase_session_files(
            fs,
            dir,
            keys,
            session.session_id,
            session.oldest..session.highest.saturating_add(1),
            erasures::InFolder::Listed,
        )?;
        report.findings.push(Finding::DeleteRestored { key, path });
        Ok(())
    }
}

/// Rewrites the good prefix of a damaged session (its `damage` taken) as a new generation
/// whose first record takes sequence number `seq`, moves its old segments, damage included,
/// into quarantine, and leaves `session` as the new generation holds it. Returns the finding.
pub(super) fn rewrite_damaged(
    fs: &dyn FileSystem,
    dir: &Path,
    keys: Option<&Keyring>,
    retention: Duration,
    session: &mut ReplayedSession,
    seq: u64,
) -> Result<Finding> {
    let (path, offset, reason) = session.damage.take().unwrap_or_default();
    let number = session
        .highest
        .checked_add(1)
        .ok_or_else(|| Error::Corrupt {
            path: path.clone(),
            offset,
            reason: "segment numbers exhausted".into(),
        })?;
    let key = keyring::data_key(keys, session.session_id)?;
    let locs = every_loc(&session.view);
    let source = SegmentFiles::open(fs, dir, session.session_id, &locs, key.clone())?;
    let new = NewGeneration {
        session_id: session.session_id,
        segment: number,
        kind: SegmentKind::Recovered,
        view: &session.view,
        source: &source,
        seal: key.as_deref(),
        replaced_head: session.head,
        cleared: Cleared::of(&session.view, retention, false),
    };
    let generation = compaction::write_generation(fs, dir, &new, || ((seq, now_micros()), ()))?.0;
    drop(source);
    let quarantined = compaction::retire(
        fs,
        dir,
        session.session_id,
        session.oldest,
        number,
        Disposal::Quarantine,
    )?;
    let found = Finding::Damaged {
        key: Some(session.view.key.clone()),
        path,
        offset,
        reason,
        quarantined,
    };
    session
        .view
        .install_compacted(generation.messages, generation.cleared);
    session.view.last_seq = session.view.last_seq.max(seq);
    session.oldest = number;
    session.newest = number;
    session.newest_len = generation.len;
    session.head = generation.head;
    session.newest_version = segment::version_for(keys.is_some());
    Ok(found)
}

/// The restorable deleted sessions (the latest delete of each key, newest session first), and
/// the older deletes of a key they displace (reclaimed once the store is up).
fn tombstones_from(mut replayed: Vec<ReplayedSession>) -> (Tombstones, Vec<Arc<Slot>>) {
    replayed.sort_by_key(|s| Reverse(s.session_id));
    let mut tombstones = Tombstones::default();
    let mut displaced = Vec::new();
    for session in replayed {
        let deleted_at = session.view.deleted_at;
        let slot = Arc::new(slot_from(session, None));
        slot.writer.lock().retired = true;
        if tombstones.get(&slot.key).is_some() {
            displaced.push(slot);
        } else {
            tombstones.insert(slot, deleted_at);
        }
    }
    (tombstones, displaced)
}

/// Starts the flusher (`Durability::Interval`), the compactor (`auto_compact`) and the
/// checkpointer.
fn start_threads(inner: &Arc<Inner>) -> Result<Vec<JoinHandle<()>>> {
    let mut threads = Vec::new();
    if let Durability::Interval(every) = inner.options.durability {
        threads.push(spawn("sessionlog-flusher", inner, move |inner| {
            flusher(inner, every)
        })?);
    }
    if inner.options.auto_compact {
        threads.push(spawn("sessionlog-compactor", inner, compactor)?);
    }
    let checkpoints =
        inner.options.checkpoint_bytes > 0 || inner.options.checkpoint_interval.is_some();
    if checkpoints && !inner.read_only {
        threads.push(spawn("sessionlog-checkpointer", inner, checkpointer)?);
    }
    #[cfg(feature = "replication")]
    if let (Some(replication), false) = (&inner.options.replicate_to, inner.read_only) {
        let every = replication.interval;
        threads.push(spawn("sessionlog-replicator", inner, move |inner| {
            super::replicating::replicator(inner, every)
        })?);
    }
    Ok(threads)
}

/// How many times a read-only open lists and reads the folder before it reports a file that
/// vanished under it: each try fails only if a writer removed a file between the listing and
/// the reading, which a compaction does in well under a millisecond.
const READ_ONLY_OPEN_TRIES: u32 = 16;

/// The fewest sessions whose decoded list open shrinks as it moves them into slots.
const SHRINK_FROM: usize = 4096;

/// How long open waits for a lock another holder may release at once.
pub(super) const LOCK_WAIT_MAX: Duration = Duration::from_millis(200);

/// How often it tries again meanwhile.
pub(super) const LOCK_RETRY_EVERY: Duration = Duration::from_millis(10);

/// The keys of an encrypted store: checks `options.encryption` against the folder, and sets
/// up encryption for a new, empty store (`names`: the folder's segment files).
pub(super) fn open_keyring(
    fs: &Arc<dyn FileSystem>,
    dir: &Path,
    options: &Options,
    read_only: bool,
    names: &[String],
) -> Result<Option<Keyring>> {
    let encrypted = keyring::is_encrypted(&**fs, dir);
    match (&options.encryption, encrypted) {
        (None, false) => Ok(None),
        (None, true) => Err(Error::KeyRequired {
            path: dir.to_path_buf(),
        }),
        (Some(key), true) => Keyring::open(Arc::clone(fs), dir, key, false).map(Some),
        (Some(key), false) => {
            let holds_data = !names.is_empty()
                || [layout::ARCHIVE_DIR, layout::QUARANTINE_DIR]
                    .iter()
                    .any(|folder| fs.is_dir(&dir.join(folder)));
            if holds_data || read_only {
                return Err(Error::NotEncrypted {
                    path: dir.to_path_buf(),
                });
            }
            Keyring::open(Arc::clone(fs), dir, key, true).map(Some)
        }
    }
}

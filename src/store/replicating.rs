//! Replication from the store's side (feature `replication`): the shipper's thread, what the
//! store hands it at each interval (a capture of its files, taken so that every byte it names
//! is written and durable), the status, and a restore that opens and verifies what it rebuilt.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use super::retire::Retirement;
use super::{Inner, LogStore};
use crate::checkpoint::Cold;
use crate::error::{Error, Result};
use crate::fs::{FileSystem, StdFs};
use crate::keyring::Keyring;
use crate::layout::{
    segment_name, write_seq_floor, ERASED_FILE, KEYS_DIR, KEY_SUFFIX, STORE_CHECK_FILE,
};
use crate::options::{Durability, Options};
use crate::replication::restore::{fetch, take_over, Fetched};
use crate::replication::{
    Capture, CapturedFile, Replication, ReplicationStatus, RestorePoint, RestoreReport, Shipper,
};

/// The store's shipper, once it reached its bucket, and the last status (kept apart, so that
/// asking for it never waits for a request under way).
#[derive(Default)]
pub(super) struct Replica {
    shipper: Mutex<Option<Shipper>>,
    status: Mutex<Option<ReplicationStatus>>,
    /// The shipper counts as an open event reader (`Inner::readers`) while it ships: the
    /// segments a compaction replaces stay until a shipment has sent what they hold, and go
    /// once it has (without it, the last second of their records would be in no batch, and a
    /// restore to a point in that second would miss them).
    pinned: AtomicBool,
    /// Each session's oldest segment in force at the last capture: when a compaction moved it
    /// on, the segments it replaced are captured (to their end) while they are still there,
    /// even if its deferral came after the capture's look at the deferred list.
    oldest: Mutex<HashMap<u64, u32>>,
    /// The files of each cold session, read from its entry by the first capture that found it
    /// cold, by the entry's index: a session does not change while it is cold, so a capture
    /// names its files without warming it.
    cold: Mutex<Vec<Option<Files>>>,
}

/// A session's segment files, as its writer knows them.
#[derive(Clone, Copy)]
struct Files {
    oldest: u32,
    newest: u32,
    newest_len: u64,
}

impl Inner {
    /// At open: takes up shipping, if the options ask for it. A prefix another store holds
    /// fails the open ([`Error::Fenced`]); a bucket that cannot be reached does not: the
    /// thread tries again at each interval, and the status says why it waits.
    pub(super) fn start_replication(&self) -> Result<()> {
        let Some(replication) = self.options.replicate_to.as_ref() else {
            return Ok(());
        };
        if self.read_only {
            return Ok(());
        }
        replication.validate()?;
        // Pinned from the start, even while the bucket cannot be reached: what a compaction
        // replaces waits for a shipment (see `Replica::pinned`).
        self.pin();
        let taken = self.take_up(replication);
        if taken.is_err() {
            self.unpin();
        }
        taken
    }

    fn pin(&self) {
        if !self.background.replica.pinned.swap(true, Ordering::SeqCst) {
            self.readers.lock().open += 1;
        }
    }

    fn take_up(&self, replication: &Replication) -> Result<()> {
        let replica = &self.background.replica;
        match Shipper::start(replication, Arc::clone(&self.fs), &self.dir) {
            Ok(shipper) => {
                *replica.status.lock() = Some(shipper.status().clone());
                *replica.shipper.lock() = Some(shipper);
                self.pin();
                Ok(())
            }
            Err(e) => {
                let fenced = matches!(e, Error::Fenced { .. });
                *replica.status.lock() = Some(ReplicationStatus {
                    target: replication.url.clone(),
                    last_error: Some(e.to_string()),
                    fenced,
                    ..ReplicationStatus::default()
                });
                if fenced {
                    Err(e)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// One shipment: what was written since the last, made durable first.
    fn ship_once(&self) -> Result<ReplicationStatus> {
        self.ship_once_with(|| {})
    }

    /// [`Inner::ship_once`], calling `between` once the capture has looked at the sessions
    /// and before it reads the erasure log (a test makes an erasure land there).
    fn ship_once_with(&self, between: impl FnOnce()) -> Result<ReplicationStatus> {
        let Some(replication) = self.options.replicate_to.as_ref() else {
            return Err(Error::InvalidOptions {
                reason: "the store was opened without Options::replicate_to".into(),
            });
        };
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let replica = &self.background.replica;
        let mut shipper = replica.shipper.lock();
        if shipper.is_none() {
            let status = replica.status.lock().clone();
            if status.is_some_and(|s| s.fenced) {
                return Err(Error::Fenced {
                    target: replication.url.clone(),
                    reason: "another store holds the prefix".into(),
                });
            }
            drop(shipper);
            self.take_up(replication)?;
            shipper = replica.shipper.lock();
        }
        let Some(shipper) = shipper.as_mut() else {
            let status = replica.status.lock().clone().unwrap_or_default();
            return Err(Error::Replication {
                target: replication.url.clone(),
                reason: status.last_error.unwrap_or_default(),
            });
        };
        let (capture, replaced) = self.capture(between)?;
        let shipped = shipper.ship(&capture);
        let status = shipper.status().clone();
        *replica.status.lock() = Some(status.clone());
        if status.fenced {
            self.unpin();
        }
        shipped?;
        self.retire_shipped(&replaced)?;
        Ok(status)
    }

    /// Carries out the replacements whose segments the last shipment sent, unless another
    /// event reader is open (then a later shipment does, once that reader is gone).
    fn retire_shipped(&self, replaced: &[Retirement]) -> Result<()> {
        let mut readers = self.readers.lock();
        if readers.open != 1 || replaced.is_empty() {
            return Ok(());
        }
        let done: Vec<Retirement> = readers
            .deferred
            .extract_if(.., |r| replaced.contains(r))
            .collect();
        // Held through the retirement, as a reader's guard holds it.
        let retired = self.retire_now(&done);
        drop(readers);
        retired
    }

    /// The shipper stops counting as a reader; the last reader out carries out what waited.
    fn unpin(&self) {
        if self.background.replica.pinned.swap(false, Ordering::SeqCst) {
            self.reader_gone();
        }
    }

    /// What the store's files hold now: the sequence number every record up to which is
    /// written, then each session's segments (the newest one's length from its writer), the
    /// erasure log and the key files, all synced before they are named. `between` is called
    /// after the look at the sessions, before the erasure log is read.
    fn capture(&self, between: impl FnOnce()) -> Result<(Capture, Vec<Retirement>)> {
        let time_micros = super::now_micros();
        // Taken first: every record at or below it is in the lengths taken next.
        let seq_end = self.feed.committed_below().saturating_sub(1);

        // The sessions cold now are named as their entries record them, and stay cold; any
        // record at or below `seq_end` of theirs is there (a write warms a session first).
        let (mut slots, cold) = self.sessions.read().snapshot();
        let mut sessions = match &cold {
            Some((cold, indices)) => self.cold_files(cold, indices, &mut slots)?,
            None => {
                // None is cold any more: what was kept of them goes.
                *self.background.replica.cold.lock() = Vec::new();
                Vec::new()
            }
        };
        slots.extend(self.tombstones.lock().slots().cloned());
        for slot in &slots {
            let files = writer_files(slot);
            if !reclaimed(slot) {
                sessions.push((slot.session_id, files));
            }
        }
        let mut files = Vec::new();
        let mut oldest_seen = self.background.replica.oldest.lock();
        let previous = std::mem::take(&mut *oldest_seen);
        for &(id, session) in &sessions {
            if session.newest == 0 {
                continue;
            }
            // A compaction since the last capture: the segments it replaced, while they last.
            let before = previous.get(&id).copied().unwrap_or(session.oldest);
            oldest_seen.insert(id, session.oldest);
            for number in before.max(1)..session.oldest {
                files.push(CapturedFile {
                    name: segment_name(id, number),
                    len: None,
                });
            }
            self.name_in_force(&mut files, id, session);
        }
        drop(oldest_seen);
        between();
        // Segments a compaction replaced, kept for this shipment (see `Replica::pinned`):
        // looked at after the sessions, so a deferral made meanwhile is seen.
        let replaced: Vec<Retirement> = (self.readers.lock().deferred.iter())
            .filter(|r| matches!(r, Retirement::Replaced(..)))
            .copied()
            .collect();
        for retirement in &replaced {
            if let Retirement::Replaced(id, from, below) = *retirement {
                files.extend((from.max(1)..below).map(|number| CapturedFile {
                    name: segment_name(id, number),
                    len: None,
                }));
            }
        }
        let erased = {
            // Held so no erasure appends while its length is taken.
            let log = self.erasure_log.lock();
            let path = self.dir.join(ERASED_FILE);
            if let Ok(stat) = self.fs.stat(&path) {
                files.push(CapturedFile {
                    name: ERASED_FILE.into(),
                    len: Some(stat.len),
                });
            }
            (log.erased_ids(), log.erased_histories())
        };
        let (erased, histories) = erased;
        // Each erased history's session, with the generation in force now (a session cold
        // at the look above and warmed since may have been compacted).
        let by_id: HashMap<u64, &Arc<super::Slot>> = if histories.is_empty() {
            HashMap::new()
        } else {
            slots.iter().map(|s| (s.session_id, s)).collect()
        };
        let files_now = |id: u64| match by_id.get(&id) {
            Some(slot) => Some(writer_files(slot)),
            None => self.cold_files_now(cold.as_ref().map(|(c, _)| &**c), id),
        };
        let mut erased_histories = Vec::with_capacity(histories.len());
        for (id, seq) in histories {
            let Some(now) = files_now(id) else { continue };
            erased_histories.push((id, seq, now.oldest));
            // Compacted since the look (the erasure's own compaction, say): the shipper takes
            // the segments below `now.oldest` out of the bucket, so the generation in force
            // now ships in this batch too, or the bucket would hold none of the session until
            // the next shipment. (The look left each session's oldest segment in `oldest`.)
            let moved = match self.background.replica.oldest.lock().get_mut(&id) {
                Some(then) if now.newest != 0 && *then < now.oldest => {
                    *then = now.oldest;
                    true
                }
                _ => false,
            };
            if moved {
                self.name_in_force(&mut files, id, now);
            }
        }
        let histories = erased_histories;
        if self.keys.is_some() {
            let path = self.dir.join(KEYS_DIR).join(STORE_CHECK_FILE);
            if let Ok(stat) = self.fs.stat(&path) {
                files.push(CapturedFile {
                    name: format!("{KEYS_DIR}/{STORE_CHECK_FILE}"),
                    len: Some(stat.len),
                });
            }
        }
        if self.options.durability != Durability::Always {
            // What the capture names must be on disk before the bucket holds it: bytes a
            // power loss took back would be written again differently.
            self.flush()?;
        }
        // A segment named twice (a deferred replacement the sessions' look found too) once.
        files.sort_by(|a, b| a.name.cmp(&b.name));
        files.dedup_by(|a, b| a.name == b.name);
        let capture = Capture {
            time_micros,
            seq_end,
            files,
            erased,
            histories,
        };
        Ok((capture, replaced))
    }
}

impl Inner {
    /// The files of the sessions `indices` of `cold` (cold when the capture looked), as their
    /// entries record them (read the first time, then kept); one whose entry cannot be read
    /// again is warmed (from its files, if need be) and its slot put in `slots`. Fails if
    /// one can be read neither way: the capture cannot name its files.
    fn cold_files(
        &self,
        cold: &Cold,
        indices: &[u32],
        slots: &mut Vec<Arc<super::Slot>>,
    ) -> Result<Vec<(u64, Files)>> {
        let mut known = self.background.replica.cold.lock();
        known.resize(cold.entries.len(), None);
        let unread = (indices.iter().map(|&at| at as usize))
            .filter(|&at| known.get(at).is_some_and(Option::is_none));
        let unread: Vec<usize> = unread.collect();
        let mut warm = Vec::new();
        cold.each(unread, |at, read| match (read, known.get_mut(at)) {
            (Ok(read), Some(known)) => {
                let (oldest, newest, newest_len) = read.files();
                *known = Some(Files {
                    oldest,
                    newest,
                    newest_len,
                });
            }
            _ => warm.push(at),
        });
        let files = (indices.iter().map(|&at| at as usize))
            .filter_map(|at| Some((cold.entries.get(at)?.session_id, (*known.get(at)?)?)))
            .collect();
        drop(known);
        for at in warm {
            slots.extend(self.warmed(cold, at)?);
        }
        Ok(files)
    }

    /// The files in force now of session `id`, cold in `cold` when the capture looked: as
    /// its entry records them while it is still cold, else its slot's.
    fn cold_files_now(&self, cold: Option<&Cold>, id: u64) -> Option<Files> {
        let cold = cold?;
        let (at, _) = cold.find(id)?;
        let listed = self.sessions.read().listed(cold.key(at)?)?;
        match listed {
            Ok(slot) => (slot.session_id == id).then(|| writer_files(&slot)),
            Err(_) => self.background.replica.cold.lock().get(at).copied()?,
        }
    }

    /// Names session `id`'s segments in force (`files`): the sealed ones, the newest to its
    /// length, and its key file in an encrypted store.
    fn name_in_force(&self, captured: &mut Vec<CapturedFile>, id: u64, files: Files) {
        for number in files.oldest.max(1)..files.newest {
            captured.push(CapturedFile {
                name: segment_name(id, number),
                len: None,
            });
        }
        captured.push(CapturedFile {
            name: segment_name(id, files.newest),
            len: Some(files.newest_len),
        });
        if self.keys.is_some() {
            // Sealed like an old segment: looked at until the bucket holds it whole.
            captured.push(CapturedFile {
                name: format!("{KEYS_DIR}/{id:016x}{KEY_SUFFIX}"),
                len: None,
            });
        }
    }
}

/// A session's segment files, as its writer knows them now.
fn writer_files(slot: &super::Slot) -> Files {
    let writer = slot.writer.lock();
    Files {
        oldest: writer.oldest,
        newest: writer.newest,
        newest_len: writer.newest_len,
    }
}

/// The session's files are gone (a deleted session's, once reclaimed). A deleted one that can
/// still be restored keeps them, and they ship.
fn reclaimed(slot: &super::Slot) -> bool {
    slot.writer.lock().reclaimed
}

/// The shipper's thread: a shipment every interval, and a last one when the store closes
/// (unless the last attempt failed: a bucket that does not answer must not hold up the close).
pub(super) fn replicator(inner: &Inner, every: Duration) {
    let background = &inner.background;
    loop {
        let stopping = background.wait_or_stop(&background.replicate_due, every);
        let failing = (background.replica.status.lock().as_ref())
            .is_some_and(|s| s.last_error.is_some() || s.fenced);
        if stopping && failing {
            break;
        }
        if let Err(e) = inner.ship_once() {
            tracing::warn!(target: "sessionlog", error = %e, "replication");
        }
        if stopping {
            break;
        }
    }
    inner.unpin();
}

impl LogStore {
    /// How shipping to [`Options::replicate_to`] stands: what the bucket holds, how far
    /// behind it is, the last error. `None` when the store does not ship.
    pub fn replication_status(&self) -> Option<ReplicationStatus> {
        self.inner.background.replica.status.lock().clone()
    }

    /// Ships what was written since the last batch now, as the background thread does every
    /// [`Replication::interval`], and returns the status once it is in the bucket (for
    /// `sessionlog backup` and tests).
    pub fn ship_now(&self) -> Result<ReplicationStatus> {
        self.inner.ship_once()
    }
}

/// Rebuilds in `dir` (missing or empty) the store that shipped to `from`, as it was at
/// `point`, and verifies it (every record's checksum, every session's chain) before it
/// returns. `options` are those the store is opened with (its encryption key, for an encrypted
/// one). With `take_over` (only for [`RestorePoint::Latest`]), the restored store ships on to
/// the same prefix under a new generation, and the store that shipped there is fenced.
pub fn restore(
    from: &Replication,
    dir: impl AsRef<Path>,
    point: RestorePoint,
    options: &Options,
    take_over_prefix: bool,
) -> Result<RestoreReport> {
    restore_with_progress(from, dir, point, options, take_over_prefix, |_, _| {})
}

/// [`restore`], calling `progress(done, total)` as it reads the batches.
pub fn restore_with_progress(
    from: &Replication,
    dir: impl AsRef<Path>,
    point: RestorePoint,
    options: &Options,
    take_over_prefix: bool,
    progress: impl FnMut(u64, u64),
) -> Result<RestoreReport> {
    let dir = dir.as_ref();
    let fs: Arc<dyn FileSystem> = Arc::new(StdFs);
    if take_over_prefix && point != RestorePoint::Latest {
        return Err(Error::InvalidOptions {
            reason: "only a restore of the latest point can take the prefix over".into(),
        });
    }
    // Only a folder that is certainly absent or empty is restored into; a listing that fails
    // for another reason is an error, never taken for "absent".
    match fs.list(dir) {
        Ok(entries) if entries.is_empty() => {}
        Ok(_) => {
            return Err(Error::InvalidOptions {
                reason: format!("{} is not empty: restore into a new folder", dir.display()),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(crate::fs::context("listing", dir)(e)),
    }
    // The restore is built in a folder of its own beside `dir`, made here (it fails if the
    // name is taken), and put in place by a rename once it verifies: a restore that fails
    // removes that folder, which holds nothing but its own work, and never touches `dir`.
    let name = dir.file_name().ok_or_else(|| Error::InvalidOptions {
        reason: format!("{} names no folder to restore into", dir.display()),
    })?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    fs.create_dir_all(&parent)
        .map_err(crate::fs::context("creating", &parent))?;
    let building = parent.join(format!(
        ".{}.restoring-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    // The owner's alone from the start, as every folder of a store (0700, whatever the umask).
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&building)
        .map_err(crate::fs::context("creating", &building))?;
    let built = restore_into(from, Arc::clone(&fs), &building, point, options, progress).and_then(
        |fetched| {
            // Over `dir` if it is there (empty: a rename replaces an empty folder), then the
            // parent synced, so that the restored store's name is durable.
            std::fs::rename(&building, dir).map_err(crate::fs::context("renaming", &building))?;
            crate::fs::sync_dir(&*fs, &parent)?;
            Ok(fetched)
        },
    );
    let (fetched, sessions) = match built {
        Ok(built) => built,
        Err(e) => {
            // Best effort: the error says what failed either way.
            let _ = std::fs::remove_dir_all(&building);
            return Err(e);
        }
    };
    // In place and verified: a take-over that fails from here leaves the restored store (one
    // that wrote its replication state is finished by its first open with replication).
    let generation = if take_over_prefix {
        take_over(from, &*fs, dir, &fetched)?
    } else {
        0
    };
    Ok(RestoreReport {
        batches: fetched.batches,
        bytes: fetched.bytes,
        seq: fetched.state.seq_end,
        sessions,
        generation,
    })
}

/// Fetches and verifies the store of [`restore_with_progress`] in `dir`, a new folder: what
/// was fetched, and the live sessions.
fn restore_into(
    from: &Replication,
    fs: Arc<dyn FileSystem>,
    dir: &Path,
    point: RestorePoint,
    options: &Options,
    mut progress: impl FnMut(u64, u64),
) -> Result<(Fetched, usize)> {
    // The segments are cut by what their records say: an encrypted store's headers are
    // opened with their data keys, once the batches put the key files in place.
    let keys = || -> Result<Option<Keyring>> {
        match (&options.encryption, crate::keyring::is_encrypted(&*fs, dir)) {
            (Some(key), true) => Keyring::open(Arc::clone(&fs), dir, key, false).map(Some),
            (None, true) => Err(Error::KeyRequired {
                path: dir.to_path_buf(),
            }),
            _ => Ok(None),
        }
    };
    let fetched = fetch(from, &*fs, dir, point, &keys, &mut progress)?;
    // No sequence number at or below what the restored history reached is handed out again.
    let lock = dir.join(crate::layout::LOCK_FILE);
    fs.open(&lock, crate::fs::OpenMode::CreateNew)
        .map_err(crate::fs::context("creating", &lock))?;
    write_seq_floor(&*fs, dir, fetched.state.seq_end + 1)?;
    let opened = Options {
        replicate_to: None,
        ..options.clone()
    };
    let store = LogStore::open_with(dir, opened)?;
    let verified = store.verify()?;
    let sessions = crate::SessionBackend::list_sessions(&store).len();
    store.close()?;
    if !verified.is_sound() {
        return Err(Error::Replication {
            target: from.url.clone(),
            reason: format!(
                "the store restored in {} does not verify: {:?}",
                dir.display(),
                verified.problems.first()
            ),
        });
    }
    Ok((fetched, sessions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChatMessage, SessionBackend};
    use object_store::memory::InMemory;

    /// A history erasure that lands between a capture's look at the sessions and its read of
    /// the erasure log: the shipment takes the erased generation out of the bucket and ships
    /// the one in force now, so a restore taken right after it still holds the session.
    #[test]
    fn a_history_erased_during_a_capture_ships_the_generation_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let bucket: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
        let replication =
            Replication::with_store(bucket, "memory:///race").every(Duration::from_secs(3600));
        let options = Options {
            replicate_to: Some(replication.clone()),
            tombstone_retention: Duration::from_millis(1),
            ..Options::with_durability(Durability::Never)
        };
        let store = LogStore::open_with(dir.path(), options).unwrap();
        for i in 0..3 {
            let text = format!("cleared {i}");
            store.append("s", &ChatMessage::user(text)).unwrap();
        }
        store.append("other", &ChatMessage::user("kept")).unwrap();
        store.clear_messages("s").unwrap();
        store.append("s", &ChatMessage::user("after")).unwrap();
        store.ship_now().unwrap();
        let oldest = |store: &LogStore| {
            let listed = store.inner.sessions.read().listed("s");
            let Some(Ok(slot)) = listed else {
                panic!("the session is not warm")
            };
            writer_files(&slot).oldest
        };
        let before = oldest(&store);
        // Past the undo window: the compaction puts a generation without the cleared
        // messages in force, erases the one before and logs the erasure.
        std::thread::sleep(Duration::from_millis(20));
        let mut compacted = false;
        let status = store.inner.ship_once_with(|| {
            store.compact_session("s").unwrap();
            compacted = true;
        });
        assert!(compacted);
        assert!(oldest(&store) > before, "the compaction made no generation");
        status.unwrap();
        let restored = tempfile::tempdir().unwrap();
        let target = restored.path().join("restored");
        restore(
            &replication,
            &target,
            RestorePoint::Latest,
            &Options::default(),
            false,
        )
        .unwrap();
        let copy = LogStore::open_read_only(&target).unwrap();
        assert_eq!(copy.load("s"), vec![ChatMessage::user("after")]);
        assert_eq!(copy.load("other"), store.load("other"));
    }
}

//! The store's folder as open finds it: which files are segments of which session, which are
//! a compaction's unfinished output, which are not ours; and every segment's header, read
//! before anything is changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cipher::DataKey;
use crate::error::{Error, Result};
use crate::fs::{context, refuse_symlink, FileSystem};
use crate::keyring::{self, Keyring};
use crate::layout::{
    kept_session_id, parse_segment_name, segment_path, ANCHORS_FILE, ANCHORS_TORN_PREFIX,
    ARCHIVE_DIR, CHECKPOINT_FILE, CHECKPOINT_RUNNING_FILE, CHECKPOINT_TEMP_FILE, ERASED_FILE,
    ERASED_TORN_PREFIX, KEYS_DIR, LOCK_FILE, NUMBER_LIMIT, QUARANTINE_DIR, SEGMENT_SUFFIX,
    SEGMENT_TEMP_SUFFIX, TORN_INFIX,
};
use crate::report::{Finding, RecoveryReport};
use crate::segment::{read_header, HeaderError, SegmentHeader, FORMAT_VERSION_NEWEST};

/// What a listing of the store's folder found.
pub(crate) struct Folder {
    /// Compaction output that never reached its rename.
    pub(super) temps: Vec<PathBuf>,
    /// The names of all segment and temporary files, sorted: what a checkpoint must match.
    pub names: Vec<String>,
    /// One more than the highest session id in a file name.
    pub(super) next_id: u64,
    /// The session ids of the segments in `archive/` and `quarantine/`.
    pub(super) kept_ids: BTreeSet<u64>,
    /// Files that are not ours.
    pub report: RecoveryReport,
}

/// Lists the store's folder without changing anything.
pub(crate) fn list_folder(fs: &dyn FileSystem, dir: &Path) -> Result<Folder> {
    let mut folder = Folder {
        temps: Vec::new(),
        names: Vec::new(),
        next_id: 1,
        kept_ids: BTreeSet::new(),
        report: RecoveryReport::default(),
    };
    let entries = fs.list(dir).map_err(context("listing", dir))?;
    folder.names.reserve(entries.len());
    for entry in entries {
        let name = entry.name.to_str().unwrap_or_default();
        if [
            LOCK_FILE,
            QUARANTINE_DIR,
            ARCHIVE_DIR,
            CHECKPOINT_FILE,
            CHECKPOINT_TEMP_FILE,
            CHECKPOINT_RUNNING_FILE,
            crate::layout::CHECKPOINT_DELTA_FILE,
            KEYS_DIR,
            ERASED_FILE,
            ANCHORS_FILE,
            crate::index::INDEX_DIR,
            crate::layout::REPLICA_DIR,
        ]
        .contains(&name)
        {
            // The store's own names: never followed if they are links.
            refuse_symlink(fs, &dir.join(name))?;
            continue;
        }
        let side_file = [ERASED_TORN_PREFIX, ANCHORS_TORN_PREFIX]
            .iter()
            .any(|prefix| name.starts_with(prefix));
        if side_file && entry.is_file {
            continue;
        }
        let ours = |suffix| {
            parse_segment_name(name, suffix).filter(|(id, _)| *id < NUMBER_LIMIT && entry.is_file)
        };
        if let Some((id, _)) = ours(SEGMENT_SUFFIX) {
            folder.next_id = folder.next_id.max(id + 1);
            folder
                .names
                .push(entry.name.into_string().unwrap_or_default());
            continue;
        }
        if let Some((id, _)) = ours(SEGMENT_TEMP_SUFFIX) {
            folder.next_id = folder.next_id.max(id + 1);
            folder.temps.push(dir.join(name));
            folder.names.push(name.to_owned());
            continue;
        }
        let side_file = name.split_once(TORN_INFIX).is_some_and(|(stem, _)| {
            parse_segment_name(&format!("{stem}{SEGMENT_SUFFIX}"), SEGMENT_SUFFIX).is_some()
        });
        if !(side_file && entry.is_file) {
            let path = dir.join(&entry.name);
            folder.report.findings.push(Finding::UnknownFile { path });
        }
    }
    // Names are unique: an unstable sort gives the one order.
    folder.names.sort_unstable();
    // Archived and quarantined segments keep their session ids: a new session must not
    // reuse one, or its history would mix with theirs.
    for kept in [ARCHIVE_DIR, QUARANTINE_DIR] {
        let kept = dir.join(kept);
        if !fs.is_dir(&kept) {
            continue;
        }
        for entry in fs.list(&kept).map_err(context("listing", &kept))? {
            let name = entry.name.to_str().unwrap_or_default();
            if let Some(id) = kept_session_id(name) {
                folder.next_id = folder.next_id.max(id + 1);
                folder.kept_ids.insert(id);
            }
        }
    }
    Ok(folder)
}

impl Folder {
    /// The segment numbers of each session, by session id (a replay's work list).
    pub(super) fn segments(&self) -> BTreeMap<u64, Vec<u32>> {
        let mut segments: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        for name in &self.names {
            if let Some((id, number)) = parse_segment_name(name, SEGMENT_SUFFIX) {
                segments.entry(id).or_default().push(number);
            }
        }
        segments
    }
}

/// One segment file of a session, and its header as read (or why it could not be).
pub(super) struct SegmentFile {
    pub number: u32,
    pub path: PathBuf,
    pub header: std::result::Result<(SegmentHeader, usize), HeaderError>,
}

/// A session's data key in an encrypted store (`None` in a plain one), or why it cannot be had.
pub(super) type SessionKey = std::result::Result<Option<Arc<DataKey>>, String>;

/// Every listed segment with its header, by session, and each session's data key.
pub(super) struct Headers {
    pub sessions: BTreeMap<u64, Vec<SegmentFile>>,
    pub keys: HashMap<u64, SessionKey>,
}

/// Every listed segment's header, by session, and each session's data key: its headers seal
/// the session key, its records their events. Changes nothing; a segment of an unsupported
/// version, or sealed segments in a store opened without a key, stop open here.
pub(super) fn read_headers(
    fs: &dyn FileSystem,
    dir: &Path,
    listed: BTreeMap<u64, Vec<u32>>,
    keys: Option<&Keyring>,
) -> Result<Headers> {
    let mut groups: BTreeMap<u64, Vec<SegmentFile>> = BTreeMap::new();
    let mut data_keys = HashMap::new();
    for (id, files) in listed {
        let data_key = keyring::data_key(keys, id).map_err(|e| e.to_string());
        let header_key = data_key.as_ref().ok().cloned().flatten();
        data_keys.insert(id, data_key);
        for number in files {
            let path = segment_path(dir, id, number);
            let header = match read_header(fs, &path, header_key.as_deref())? {
                Err(HeaderError::UnsupportedVersion(found)) => {
                    return Err(Error::UnsupportedVersion {
                        path,
                        found,
                        supported: FORMAT_VERSION_NEWEST,
                    })
                }
                Err(HeaderError::Sealed) if keys.is_none() => {
                    // Sealed records in a store opened without a key (its `keys/` gone?):
                    // refused before anything is changed, never taken for damage.
                    return Err(Error::KeyRequired {
                        path: dir.to_path_buf(),
                    });
                }
                Err(HeaderError::Sealed) => Err(HeaderError::Corrupt(
                    "the session's data key is missing: its segments cannot be read".into(),
                )),
                other => other,
            };
            groups.entry(id).or_default().push(SegmentFile {
                number,
                path,
                header,
            });
        }
    }
    Ok(Headers {
        sessions: groups,
        keys: data_keys,
    })
}

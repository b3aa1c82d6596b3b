//! What a store has shipped, kept in its folder (`replica/STATE`): the target, the generation
//! it ships under, the next batch's number, how much of each file the bucket holds, and the
//! erased sessions already taken out of the bucket.
//!
//! ```text
//! // Format: { magic: [u8; 8] = "SLREPST\0" | version: u32 = 1 | body_len: u64 | body_crc: u32
//! //           | body }
//! // body: { target: str | generation: u64 | writer: u64 | next_batch: u64 | seq_end: u64
//! //         | file_count: u32 | file_count × { name: str | shipped: u64 | whole: u8 }
//! //         | scrubbed_count: u32 | scrubbed_count × session_id: u64
//! //         | history_count: u32 | history_count × { session_id: u64 | erasure_seq: u64 } }
//! ```
//!
//! It is replaced whole (written aside, synced, renamed, folder synced) after every batch. It
//! is what lets a restarted store go on where it stopped; if it lags the bucket (a crash after
//! a batch, before the replacement), the batches after it are read back from the bucket.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::bytes::{Reader, Writer};
use crate::error::{Error, Result};
use crate::fs::{read_crc_tailed, replace_file, subfolder, FileSystem};
use crate::layout::REPLICA_DIR;

/// The most bytes `replica/STATE` may hold (a name and a length per shipped file): a longer
/// one is not read.
const STATE_BYTES_MAX: u64 = 1 << 30;

const MAGIC: [u8; 8] = *b"SLREPST\0";
const VERSION: u32 = 1;
const STATE_FILE: &str = "STATE";

/// What the store has shipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct State {
    pub target: String,
    pub generation: u64,
    /// The `writer` of the process that last shipped (see `batch.rs`).
    pub writer: u64,
    pub next_batch: u64,
    /// Every record up to it is in the bucket.
    pub seq_end: u64,
    /// How many bytes of each file the bucket holds.
    pub files: BTreeMap<String, u64>,
    /// Sealed files the bucket holds whole: never looked at again.
    pub whole: BTreeSet<String>,
    /// Erased sessions whose bytes are out of the bucket.
    pub scrubbed: BTreeSet<u64>,
    /// Erasures of a session's history (session id, the erasure's sequence number) whose
    /// segments are out of the bucket.
    pub scrubbed_histories: BTreeSet<(u64, u64)>,
}

fn path(dir: &Path) -> PathBuf {
    dir.join(REPLICA_DIR).join(STATE_FILE)
}

impl State {
    /// The state in `dir`, if there is one. A damaged one is an error: it would make the
    /// store ship as a stranger to its own prefix, or ship again what the bucket holds.
    pub(crate) fn read(fs: &dyn FileSystem, dir: &Path) -> Result<Option<State>> {
        let path = path(dir);
        if !fs.exists(&path) {
            return Ok(None);
        }
        let damaged = |reason: &str| Error::Corrupt {
            path: path.clone(),
            offset: 0,
            reason: format!(
                "the replication state {reason}; remove it and restore the store from its \
                 prefix, or ship to a new prefix"
            ),
        };
        let bytes = read_crc_tailed(fs, &path, STATE_BYTES_MAX)?
            .ok_or_else(|| damaged("does not match its checksum"))?;
        let body = bytes
            .get(..bytes.len().saturating_sub(4))
            .unwrap_or_default();
        State::decode(body).ok_or_else(|| damaged("does not decode"))
    }

    fn decode(bytes: &[u8]) -> Option<Option<State>> {
        let mut r = Reader(bytes);
        if r.take(8)? != MAGIC || r.u32()? != VERSION {
            return None;
        }
        let mut state = State {
            target: r.str_ref().map(str::to_owned)?,
            generation: r.u64()?,
            writer: r.u64()?,
            next_batch: r.u64()?,
            seq_end: r.u64()?,
            ..State::default()
        };
        // Numbers the store hands out stay below the limit, as a batch's header must: one at or
        // above it is damage, and a next batch numbered there would be one no listing of the
        // bucket takes, shipped and never restored.
        let limit = crate::layout::NUMBER_LIMIT;
        if [state.generation, state.next_batch, state.seq_end]
            .iter()
            .any(|&n| n >= limit)
        {
            return None;
        }
        for _ in 0..r.count(17)? {
            let name = r.str_ref().map(str::to_owned)?;
            state.files.insert(name.clone(), r.u64()?);
            if r.flag()? {
                state.whole.insert(name);
            }
        }
        for _ in 0..r.count(8)? {
            state.scrubbed.insert(r.u64()?);
        }
        for _ in 0..r.count(16)? {
            state.scrubbed_histories.insert((r.u64()?, r.u64()?));
        }
        r.is_empty().then_some(Some(state))
    }

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.0.extend_from_slice(&MAGIC);
        w.u32(VERSION);
        w.str(&self.target);
        w.u64(self.generation);
        w.u64(self.writer);
        w.u64(self.next_batch);
        w.u64(self.seq_end);
        w.u32(self.files.len() as u32);
        for (name, shipped) in &self.files {
            w.str(name);
            w.u64(*shipped);
            w.u8(u8::from(self.whole.contains(name)));
        }
        w.u32(self.scrubbed.len() as u32);
        for id in &self.scrubbed {
            w.u64(*id);
        }
        w.u32(self.scrubbed_histories.len() as u32);
        for (id, seq) in &self.scrubbed_histories {
            w.u64(*id);
            w.u64(*seq);
        }
        let crc = crc32fast::hash(&w.0);
        w.u32(crc);
        w.0
    }

    /// Removes the state in `dir`, durably.
    pub(crate) fn remove(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
        let path = path(dir);
        if fs.exists(&path) {
            fs.remove_file(&path)
                .map_err(crate::fs::context("removing", &path))?;
            // Gone for good: a crash must not bring back a generation this store lost.
            crate::fs::sync_dir(fs, &dir.join(REPLICA_DIR))?;
        }
        Ok(())
    }

    /// Replaces the state in `dir` durably: a crash leaves the old one or this one.
    pub(crate) fn write(&self, fs: &dyn FileSystem, dir: &Path) -> Result<()> {
        subfolder(fs, dir, REPLICA_DIR)?;
        replace_file(fs, &path(dir), &self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_reads_back_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fs = crate::fs::StdFs;
        assert_eq!(State::read(&fs, dir.path()).unwrap(), None);
        let mut state = State {
            target: "memory:///x".into(),
            generation: 3,
            next_batch: 9,
            seq_end: 40,
            ..State::default()
        };
        state.files.insert("ERASED".into(), 12);
        state
            .files
            .insert("0000000000000001-00000001.seg".into(), 40);
        state.whole.insert("0000000000000001-00000001.seg".into());
        state.scrubbed.insert(5);
        state.scrubbed_histories.insert((6, 30));
        state.write(&fs, dir.path()).unwrap();
        assert_eq!(State::read(&fs, dir.path()).unwrap(), Some(state));
        let file = path(dir.path());
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&file, bytes).unwrap();
        assert!(State::read(&fs, dir.path()).is_err());
    }

    #[test]
    fn a_state_with_a_number_at_the_limit_or_longer_than_a_state_may_be_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fs = crate::fs::StdFs;
        let limit = crate::layout::NUMBER_LIMIT;
        for (generation, next_batch, seq_end) in [
            (limit, 1, 0),
            (1, limit, 0),
            (1, u64::MAX, 0),
            (1, 1, limit),
        ] {
            let state = State {
                target: "memory:///x".into(),
                generation,
                next_batch,
                seq_end,
                ..State::default()
            };
            state.write(&fs, dir.path()).unwrap();
            assert!(
                State::read(&fs, dir.path()).is_err(),
                "{generation} {next_batch} {seq_end}"
            );
        }
        // A sparse file of any length is refused without a read of it.
        let file = std::fs::File::create(path(dir.path())).unwrap();
        file.set_len(STATE_BYTES_MAX + 1).unwrap();
        let refused = State::read(&fs, dir.path()).unwrap_err();
        assert!(refused.to_string().contains("above"), "{refused}");
    }
}

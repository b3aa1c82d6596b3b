//! The search index: a projection of the log that finds the messages holding a word without
//! reading the others. Derived data, never the source of truth: it records what it covers of
//! each session (`coverage.rs`), catches up from the projection before every query, and can
//! be removed or rebuilt at any time (`index/` in the store's folder).
//!
//! It is a small log-structured merge of immutable runs (`run.rs`) and an in-memory delta:
//! indexing a session adds docs to the delta under a new version of the positions it
//! rewrites, and only a position's current version counts, so nothing is ever changed in a
//! run. The delta becomes a run when it grows or the store closes; small runs are merged into
//! larger ones, and a merge leaves out every doc no longer current (an erased session's
//! included). Terms are keyed hashes (`terms.rs`): no index file holds a word of any message.

pub mod coverage;
pub mod query;
pub mod run;
pub mod terms;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::fs::{context, parent, replace_file, sync_dir, FileSystem};
use crate::location::MessageLoc;

use coverage::{Coverage, State};
use run::{parse_run_name, run_path, Doc, Posting, Run, RunWriter, META_POSITION, RUN_NAME_LEN};
use terms::{doc_terms, TermKey};

/// The most bytes `index/STATE` may hold (a store of millions of sessions needs a few hundred
/// MB): a longer one is not read, and the index is rebuilt.
const STATE_BYTES_MAX: u64 = 1 << 30;

/// The index's folder in the store's.
pub const INDEX_DIR: &str = "index";
/// Its state file.
pub const STATE_FILE: &str = "STATE";
/// The delta becomes a run once it holds this many docs.
pub const DELTA_DOCS_MAX: usize = 16_384;

/// The index, as loaded: its state, its runs and what was indexed since the last run.
#[derive(Debug)]
pub struct SearchIndex {
    dir: PathBuf,
    key: TermKey,
    state: State,
    runs: Vec<Run>,
    delta_docs: Vec<Doc>,
    delta: HashMap<u64, Vec<Posting>>,
    /// The state changed since `STATE` was last written.
    dirty: bool,
}

/// A doc that holds a term, with the term's frequency in it.
pub type Hit = (Doc, u32);

impl SearchIndex {
    /// An empty index for `store_dir`, holding nothing yet.
    pub fn empty(store_dir: &Path, key: TermKey) -> SearchIndex {
        SearchIndex {
            dir: store_dir.join(INDEX_DIR),
            key,
            state: State {
                key_check: key.check(),
                next_run: 1,
                ..State::default()
            },
            runs: Vec::new(),
            delta_docs: Vec::new(),
            delta: HashMap::new(),
            dirty: true,
        }
    }

    /// An empty index for `store_dir` that replaces what its folder holds (a rebuild): its runs
    /// are numbered above every run file there, set-aside and temporary ones included. So no
    /// run's name is ever given to other bytes: a reader beside the store that read the old
    /// `STATE` finds the runs it names gone (and reads `STATE` again), never other runs under
    /// their names.
    /// Fails only if the folder exists and cannot be listed.
    pub fn fresh(fs: &dyn FileSystem, store_dir: &Path, key: TermKey) -> Result<SearchIndex> {
        let mut index = SearchIndex::empty(store_dir, key);
        // Its listing, and the removals and renames that follow it, must not go through a
        // link to another folder.
        crate::fs::refuse_symlink(fs, &index.dir)?;
        let entries = match fs.list(&index.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(context("listing", &index.dir)(e)),
        };
        let highest = entries
            .into_iter()
            .filter_map(|e| {
                let name = e.name.into_string().ok()?;
                // `run-<16 hex digits>.idx`, and whatever was added after it.
                let stem = name.get(..RUN_NAME_LEN)?;
                parse_run_name(stem)
            })
            .max()
            .unwrap_or(0);
        index.state.next_run = highest.saturating_add(1).max(1);
        Ok(index)
    }

    /// The index `store_dir/index` holds, or `Ok(None)` when there is none. A state or a run
    /// that cannot be read is an error: the caller rebuilds.
    pub fn open(
        fs: &dyn FileSystem,
        store_dir: &Path,
        key: TermKey,
    ) -> Result<Option<SearchIndex>> {
        let mut index = SearchIndex::empty(store_dir, key);
        let state_path = index.dir.join(STATE_FILE);
        crate::fs::refuse_symlink(fs, &index.dir)?;
        if !fs.is_dir(&index.dir) || !fs.exists(&state_path) {
            return Ok(None);
        }
        crate::fs::refuse_symlink(fs, &state_path)?;
        // Its CRC checked before it is read whole: a sparse `STATE` allocates nothing by its
        // length.
        let bytes =
            crate::fs::read_crc_tailed(fs, &state_path, STATE_BYTES_MAX)?.ok_or_else(|| {
                crate::error::Error::Corrupt {
                    path: state_path.clone(),
                    offset: 0,
                    reason: "the index state fails its CRC".into(),
                }
            })?;
        let corrupt = |reason: &str| crate::error::Error::Corrupt {
            path: state_path.clone(),
            offset: 0,
            reason: reason.to_owned(),
        };
        let state = State::decode(&bytes).ok_or_else(|| corrupt("not a whole index state"))?;
        if state.key_check != key.check() {
            return Err(corrupt("the index was made under another key"));
        }
        for number in &state.runs {
            crate::fs::refuse_symlink(fs, &run_path(&index.dir, *number))?;
            index.runs.push(Run::open(fs, &index.dir, *number)?);
        }
        index.state = state;
        index.dirty = false;
        Ok(Some(index))
    }

    /// Files in the index's folder that are its own but not part of it (a run written before
    /// a crash kept its state from naming it, a temporary file).
    pub fn strays(&self, fs: &dyn FileSystem) -> Vec<PathBuf> {
        // None through a link: they would be another folder's files.
        if crate::fs::refuse_symlink(fs, &self.dir).is_err() {
            return Vec::new();
        }
        let Ok(entries) = fs.list(&self.dir) else {
            return Vec::new();
        };
        entries
            .into_iter()
            .filter(|e| e.is_file)
            .filter_map(|e| e.name.into_string().ok())
            .filter(|name| {
                let run = name.strip_suffix(crate::fs::TEMP_SUFFIX).unwrap_or(name);
                match parse_run_name(run) {
                    Some(n) => {
                        name.ends_with(crate::fs::TEMP_SUFFIX) || !self.state.runs.contains(&n)
                    }
                    None => name == &format!("{STATE_FILE}{}", crate::fs::TEMP_SUFFIX),
                }
            })
            .map(|name| self.dir.join(name))
            .collect()
    }

    /// The index's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records that the index caught up to the store's `seq`.
    pub fn set_covered_seq(&mut self, seq: u64) {
        if self.state.covered_seq != seq {
            self.state.covered_seq = seq;
            self.dirty = true;
        }
    }

    /// What the index holds of session `id`.
    pub fn coverage(&self, id: u64) -> Option<&Coverage> {
        self.state.sessions.get(&id)
    }

    /// The ids of every session the index covers.
    pub fn covered_sessions(&self) -> Vec<u64> {
        self.state.sessions.keys().copied().collect()
    }

    /// Forgets session `id` (erased, or gone for good): its docs no longer count, and the next
    /// merge leaves them out.
    pub fn forget(&mut self, id: u64) {
        if let Some(cov) = self.state.sessions.get_mut(&id) {
            // Its version count is kept until a compaction has merged every old doc of it
            // away: a session that came back must never find an old doc current again.
            if !cov.is_gone() {
                cov.clear();
                self.dirty = true;
            }
        }
    }

    /// Indexes session `id` as of its event `last_seq`: keeps the first `keep` positions,
    /// indexes the texts `feed` gives (each a message's content, at `keep`, `keep + 1`, ...)
    /// and the key and name `meta`, and remembers where its first message and its last two lie.
    /// If `feed` fails, no doc of the session counts any more (it is indexed whole next time).
    pub fn index_session(
        &mut self,
        id: u64,
        last_seq: u64,
        keep: usize,
        meta: &[&str],
        (first, tail): (Option<MessageLoc>, &[MessageLoc]),
        feed: impl FnOnce(&mut dyn FnMut(&str)) -> Result<()>,
    ) -> Result<()> {
        let SearchIndex {
            key,
            state,
            delta_docs,
            delta,
            dirty,
            ..
        } = self;
        *dirty = true;
        let cov = state.sessions.entry(id).or_insert_with(|| Coverage {
            next_version: 1,
            ..Coverage::default()
        });
        let version = cov.next_version;
        if version == u32::MAX {
            // Never reused: an old doc would count as current again.
            return Err(crate::error::Error::Corrupt {
                path: self.dir.clone(),
                offset: 0,
                reason: "a session was indexed 2^32 times: run `reindex`".into(),
            });
        }
        cov.next_version = version + 1;
        cov.positions.truncate(keep);
        let mut add = |position: u32, texts: &[&str]| -> u32 {
            let (length, terms) = doc_terms(key, texts);
            let doc = delta_docs.len() as u32;
            delta_docs.push(Doc {
                session: id,
                position,
                version,
                length,
            });
            for (hash, tf) in terms {
                delta.entry(hash).or_default().push((doc, tf));
            }
            length
        };
        let mut position = keep as u32;
        let fed = feed(&mut |text| {
            let length = add(position, &[text]);
            cov.positions.push((version, length));
            position += 1;
        });
        if let Err(e) = fed {
            cov.clear(); // indexed whole next time, under a new version
            return Err(e);
        }
        cov.meta = (version, add(META_POSITION, meta));
        cov.tail = tail.to_vec();
        cov.first = first;
        cov.last_seq = last_seq;
        Ok(())
    }

    /// Records that session `id` is as indexed up to its event `last_seq` (an event that
    /// changed nothing indexed, or a session that is not live).
    pub fn touch(&mut self, id: u64, last_seq: u64) {
        if let Some(cov) = self.state.sessions.get_mut(&id) {
            if cov.last_seq != last_seq {
                cov.last_seq = last_seq;
                self.dirty = true;
            }
        }
    }

    fn current(&self, doc: &Doc) -> bool {
        self.state
            .sessions
            .get(&doc.session)
            .and_then(|cov| cov.version_at(doc.position))
            == Some(doc.version)
    }

    /// Every current doc holding the term `token`, with its frequency there.
    pub fn hits(&self, token: &str) -> Result<Vec<Hit>> {
        let hash = self.key.hash(token);
        let mut out = Vec::new();
        for run in &self.runs {
            if let Some(entry) = run.term(hash) {
                for (doc, tf) in run.postings(entry)? {
                    let doc = run.docs[doc as usize];
                    if self.current(&doc) {
                        out.push((doc, tf));
                    }
                }
            }
        }
        for &(doc, tf) in self.delta.get(&hash).into_iter().flatten() {
            let doc = self.delta_docs[doc as usize];
            if self.current(&doc) {
                out.push((doc, tf));
            }
        }
        Ok(out)
    }

    /// True when something is not yet on disk.
    pub fn unsaved(&self) -> bool {
        self.dirty || !self.delta_docs.is_empty()
    }

    /// True when the delta should become a run.
    pub fn delta_full(&self) -> bool {
        self.delta_docs.len() >= DELTA_DOCS_MAX
    }

    /// Writes the delta as a run, merges runs of similar size, and writes the state. Each step
    /// is durable before the next relies on it; a crash between them leaves the old state
    /// naming the old runs (a stray new run is removed at the next open). Nothing is given up
    /// in memory before what replaces it is written: a failed save leaves the index as whole
    /// as it was.
    pub fn save(&mut self, fs: &dyn FileSystem) -> Result<()> {
        crate::fs::subfolder(fs, parent(&self.dir), INDEX_DIR)?;
        if !self.delta_docs.is_empty() {
            let number = self.take_run_number();
            let mut delta: Vec<(&u64, &Vec<Posting>)> = self.delta.iter().collect();
            delta.sort_unstable_by_key(|t| *t.0);
            let run = write_run(fs, &self.dir, number, &self.delta_docs, |writer| {
                for (hash, postings) in &delta {
                    writer.push_term(**hash, postings)?;
                }
                Ok(())
            })?;
            self.runs.push(run);
            self.delta_docs.clear();
            self.delta.clear();
        }
        let mut retired = Vec::new();
        while self.runs.len() >= 2 {
            let n = self.runs.len();
            if self.runs[n - 1].bytes().saturating_mul(4) < self.runs[n - 2].bytes() {
                break;
            }
            let number = self.take_run_number();
            let merged = self.merge(fs, number, &self.runs[n - 2..])?;
            retired.extend(self.runs.drain(n - 2..).map(|r| r.number));
            self.runs.push(merged);
        }
        self.write_state(fs)?;
        self.remove_runs(fs, &retired);
        Ok(())
    }

    /// Merges every run into one holding only current docs (an erased session's docs go),
    /// after writing the delta; what an erasure asks of the index. Sessions forgotten then hold
    /// no doc anywhere, and are dropped from the state.
    pub fn compact(&mut self, fs: &dyn FileSystem) -> Result<()> {
        self.save(fs)?;
        if !self.runs.is_empty() {
            let number = self.take_run_number();
            let merged = self.merge(fs, number, &self.runs)?;
            let old: Vec<u64> = self.runs.iter().map(|r| r.number).collect();
            self.runs = vec![merged];
            self.state.sessions.retain(|_, cov| !cov.is_gone());
            self.write_state(fs)?;
            self.remove_runs(fs, &old);
        }
        Ok(())
    }

    fn take_run_number(&mut self) -> u64 {
        let number = self.state.next_run;
        // Below `RUN_NUMBER_LIMIT` (checked where it was read): never overflows.
        self.state.next_run = number.saturating_add(1);
        number
    }

    fn write_state(&mut self, fs: &dyn FileSystem) -> Result<()> {
        self.state.runs = self.runs.iter().map(|r| r.number).collect();
        // The state names the runs: written (synced, renamed, folder synced) only once they are
        // durable, so it never names a run that is not all there.
        replace_file(fs, &self.dir.join(STATE_FILE), &self.state.encode())?;
        self.dirty = false;
        Ok(())
    }

    fn remove_runs(&self, fs: &dyn FileSystem, numbers: &[u64]) {
        for number in numbers {
            // No longer named by the durable state: a failed removal leaves a stray run,
            // removed at the next open. Derived data, never the only copy of anything.
            let _ = fs.remove_file(&run_path(&self.dir, *number));
        }
    }

    /// Run `number` of the current docs of `runs`, term by term.
    fn merge(&self, fs: &dyn FileSystem, number: u64, runs: &[Run]) -> Result<Run> {
        // New doc numbers: the current docs of each run, in order.
        let mut docs = Vec::new();
        let renumber: Vec<Vec<Option<u32>>> = runs
            .iter()
            .map(|run| {
                run.docs
                    .iter()
                    .map(|doc| {
                        self.current(doc).then(|| {
                            docs.push(*doc);
                            (docs.len() - 1) as u32
                        })
                    })
                    .collect()
            })
            .collect();
        let mut hashes: Vec<u64> = runs
            .iter()
            .flat_map(|r| r.terms().iter().map(|t| t.hash))
            .collect();
        hashes.sort_unstable();
        hashes.dedup();
        write_run(fs, &self.dir, number, &docs, |writer| {
            let mut postings = Vec::new();
            for hash in hashes {
                postings.clear();
                for (run, numbers) in runs.iter().zip(&renumber) {
                    if let Some(entry) = run.term(hash) {
                        for (doc, tf) in run.postings(entry)? {
                            if let Some(new) = numbers[doc as usize] {
                                postings.push((new, tf));
                            }
                        }
                    }
                }
                writer.push_term(hash, &postings)?;
            }
            Ok(())
        })
    }
}

/// Writes run `number` of `dir` through `fill` (its terms in order) and `docs`, and opens it.
fn write_run(
    fs: &dyn FileSystem,
    dir: &Path,
    number: u64,
    docs: &[Doc],
    fill: impl FnOnce(&mut RunWriter) -> Result<()>,
) -> Result<Run> {
    let path = run_path(dir, number);
    let temp = crate::fs::temp_path(&path);
    let mut writer = RunWriter::create(fs, &temp)?;
    fill(&mut writer)?;
    writer.finish(docs)?;
    // The run's bytes were synced by `finish`; the rename gives it its name whole.
    fs.rename(&temp, &path)
        .map_err(context("renaming", &temp))?;
    // And its name must be durable before the state names it.
    sync_dir(fs, dir)?;
    Run::open(fs, dir, number)
}

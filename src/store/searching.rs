//! The search index in the store: loaded at the first query, caught up from the projection
//! before every query (so a query sees every acknowledged write), saved when its delta grows
//! and at close, and answering the trait's `search` and [`crate::LogStore::search_messages`].
//! Appends never wait for it: it reads what they wrote when a query comes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use crate::backend::SessionMetadata;
use crate::error::{Error, Result};
use crate::fs::retry_while_gone;
use crate::health::Swallowed;
use crate::index::query::{clauses, snippet, Clause, MessageHit, MessageQuery};
use crate::index::run::META_POSITION;
use crate::index::terms::{TermKey, TERM_KEY_CONTEXT};
use crate::index::{SearchIndex, INDEX_DIR};
use crate::projection::to_time;
use crate::report::Finding;
use crate::search::Matcher;
use crate::segment::StoredMessage;

use super::searcher::Searcher;
use super::Inner;

/// A doc of a session: its id and position.
type DocKey = (u64, u32);

/// True when the store in `dir` has a search index on disk (one stat: open stays lazy).
pub(super) fn index_exists(fs: &dyn crate::fs::FileSystem, dir: &std::path::Path) -> bool {
    fs.exists(&dir.join(INDEX_DIR).join(crate::index::STATE_FILE))
}

/// How many times a read-only store reads the index's files when a run named by `STATE` is gone
/// (a writer beside it saved its index meanwhile).
const INDEX_OPEN_TRIES: u32 = 8;

impl Inner {
    /// Keeps an index in use caught up with what was written, so that a query finds little
    /// left to do: called by the checkpointer's thread about once a second. Never waits for a
    /// query (one under way catches up itself), and does nothing while the index is unused.
    pub(super) fn index_in_background(&self) {
        if !self.index_in_use.load(Ordering::SeqCst) {
            return;
        }
        let Some(mut guard) = self.search.try_lock() else {
            return;
        };
        let searcher = match self.loaded(&mut guard) {
            Ok(searcher) => searcher,
            Err(e) => {
                let failed = Err::<(), _>(e);
                let what = "loading the search index";
                self.monitor.note(Swallowed::Background, what, None, failed);
                return;
            }
        };
        if searcher.scanned_at == Some(self.changes.load(Ordering::SeqCst)) {
            return;
        }
        let caught = self.catch_up_unless(searcher, || self.background.state.lock().stop);
        let monitor = &self.monitor;
        monitor.note(
            Swallowed::Background,
            "keeping the search index up",
            None,
            caught,
        );
    }

    /// The key the index hashes terms under: derived from the store key when encrypted.
    fn term_key(&self) -> TermKey {
        match &self.options.encryption {
            Some(key) => TermKey::secret(&key.derive(TERM_KEY_CONTEXT)),
            None => TermKey::PLAIN,
        }
    }

    /// Counts a change to some session's view, for the index's catch-up.
    pub(super) fn changed(&self) {
        self.changes.fetch_add(1, Ordering::SeqCst);
    }

    /// The searcher in `slot`, with the index loaded from its files if this is its first use.
    fn loaded<'s>(&self, slot: &'s mut Option<Searcher>) -> Result<&'s mut Searcher> {
        let searcher = match slot.take() {
            Some(searcher) => searcher,
            None => Searcher::new(self.load_index()?),
        };
        Ok(slot.insert(searcher))
    }

    /// The index as its files hold it, or a new empty one (reported, the failing file renamed
    /// aside) when they cannot be read. Fails only if the index's folder cannot be listed.
    fn load_index(&self) -> Result<SearchIndex> {
        let key = self.term_key();
        // A writer beside a read-only store saved its index between the reading of `STATE` and
        // of a run it named, and removed the run: the writer's work, not damage. `STATE` and
        // its runs are read again.
        let tries = if self.read_only { INDEX_OPEN_TRIES } else { 1 };
        let opened = retry_while_gone(
            tries,
            || SearchIndex::open(&*self.fs, &self.dir, key),
            |_, _| Ok(()),
        );
        let index = match opened {
            Ok(Some(index)) => index,
            // Nothing to tidy, but perhaps runs a crash left before their first state.
            Ok(None) => return SearchIndex::fresh(&*self.fs, &self.dir, key),
            Err(e) => {
                let index = SearchIndex::fresh(&*self.fs, &self.dir, key)?;
                let path = match &e {
                    Error::Corrupt { path, .. } | Error::ChecksumMismatch { path, .. } => {
                        path.clone()
                    }
                    _ => index.dir().join(crate::index::STATE_FILE),
                };
                if !self.read_only {
                    for bad in [path.clone(), index.dir().join(crate::index::STATE_FILE)] {
                        self.set_aside(&bad);
                    }
                }
                self.report.add(vec![Finding::IndexRebuilt {
                    path,
                    reason: e.to_string(),
                }]);
                index
            }
        };
        self.remove_strays(&index);
        Ok(index)
    }

    /// Removes the index's files that `index` does not name (a writable store): runs a save cut
    /// short or a rebuild replaced, temporary files. The index's own derived bytes, which
    /// nothing reads.
    fn remove_strays(&self, index: &SearchIndex) {
        if !self.read_only {
            for stray in index.strays(&*self.fs) {
                let _ = self.fs.remove_file(&stray);
            }
        }
    }

    /// Renames an index file that could not be read to `<name>.damaged`: its bytes are kept.
    fn set_aside(&self, path: &std::path::Path) {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return;
        };
        if dir.file_name() != Some(std::ffi::OsStr::new(INDEX_DIR)) || !self.fs.exists(path) {
            return;
        }
        let to = crate::fs::free_name(
            &*self.fs,
            dir,
            &format!("{}.damaged", name.to_string_lossy()),
        );
        let moved = crate::fs::move_aside(&*self.fs, path, &to);
        self.monitor.note(
            Swallowed::Read,
            "setting a damaged index file aside",
            None,
            moved,
        );
    }

    /// Calls `f` with the index, loaded if this is its first use and caught up.
    fn with_index<T>(&self, f: impl Fn(&mut Searcher) -> Result<T>) -> Result<T> {
        let mut guard = self.search.lock();
        self.index_in_use.store(true, Ordering::SeqCst);
        let searcher = self.loaded(&mut guard)?;
        self.catch_up(searcher)?;
        match f(searcher) {
            Err(Error::Corrupt { path, reason, .. }) if path.starts_with(searcher.index.dir()) => {
                // A run's postings failed their check: never an answer from it. The index
                // is rebuilt from the log, and the question asked again.
                if !self.read_only {
                    self.set_aside(&path);
                }
                self.report
                    .add(vec![Finding::IndexRebuilt { path, reason }]);
                let fresh = SearchIndex::fresh(&*self.fs, &self.dir, self.term_key())?;
                *searcher = Searcher::new(fresh);
                self.remove_strays(&searcher.index);
                self.catch_up(searcher)?;
                f(searcher)
            }
            other => other,
        }
    }

    /// The trait's `search` for a keyword, answered from the index: the sessions that hold a
    /// doc with every token of some word are candidates; each is confirmed on its text, most
    /// recent activity first, until `limit` are found.
    pub(super) fn search_sessions(
        &self,
        keyword: &str,
        limit: usize,
    ) -> Result<Vec<SessionMetadata>> {
        let matcher = Matcher::new(keyword);
        if matcher.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let words: Vec<Clause> = keyword
            .split_whitespace()
            .map(|w| Clause {
                tokens: crate::search::tokens(w),
            })
            .filter(|c| !c.tokens.is_empty())
            .collect();
        self.with_index(|searcher| {
            let mut candidates: HashMap<u64, Vec<u32>> = HashMap::new();
            for word in &words {
                for (session, position) in docs_with_all(&searcher.index, &word.tokens)? {
                    candidates.entry(session).or_default().push(position);
                }
            }
            let searcher = &*searcher;
            let mut rows: Vec<(i64, &str, u64, Vec<u32>)> = candidates
                .into_iter()
                .filter_map(|(id, mut positions)| {
                    let activity = searcher.activity(id)?;
                    positions.sort_unstable();
                    positions.dedup();
                    Some((activity, searcher.key(id)?, id, positions))
                })
                .collect();
            rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
            let mut out = Vec::new();
            for (_, key, id, positions) in rows {
                let found = self.confirm(key, id, &positions, &matcher);
                let found = (self.monitor)
                    .note(Swallowed::Read, "search", Some(key), found)
                    .flatten();
                if let Some(meta) = found {
                    out.push(meta);
                    if out.len() == limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    /// The metadata of session `id` under `key` when `matcher` matches its key, its name or
    /// the message at one of `positions`, read from its files.
    fn confirm(
        &self,
        key: &str,
        id: u64,
        positions: &[u32],
        matcher: &Matcher,
    ) -> Result<Option<SessionMetadata>> {
        let Some(pinned) = self.slot(key)? else {
            return Ok(None);
        };
        if pinned.session_id != id {
            return Ok(None); // erased since the catch-up
        }
        // Copied under the view's lock and read after it, so no writer waits for the read.
        self.reading(&pinned, || {
            let (metadata, locs, files) = {
                let view = pinned.view.read();
                if !view.is_live() || view.archived {
                    return Ok(None);
                }
                let by_meta = positions.last() == Some(&META_POSITION)
                    && (matcher.matches(&view.key)
                        || view.name.as_deref().is_some_and(|n| matcher.matches(n)));
                if by_meta {
                    return Ok(Some(view.metadata()));
                }
                let locs: Vec<_> = positions
                    .iter()
                    .filter_map(|p| view.messages.get(*p as usize).copied())
                    .collect();
                // Opened under the lock, so a compaction cannot remove the files first.
                let files = self.segment_files(&pinned, &locs)?;
                (view.metadata(), locs, files)
            };
            let mut hit = false;
            files.visit_messages(&locs, |_, _, _, content| {
                hit = matcher.matches(content);
                !hit
            })?;
            Ok(hit.then_some(metadata))
        })
    }

    /// [`crate::LogStore::search_messages`].
    pub(super) fn search_messages(&self, query: &MessageQuery) -> Result<Vec<MessageHit>> {
        let clauses = clauses(&query.text);
        if clauses.is_empty() || query.limit == 0 {
            return Ok(Vec::new());
        }
        self.with_index(|searcher| {
            let searcher = &*searcher;
            let searchable = &searcher.searchable;
            let collection = searcher.collection;
            if collection.docs == 0 {
                return Ok(Vec::new());
            }
            // The sessions the query's filters admit, decided once each.
            let filtered = query.session.is_some() || query.agent_alias.is_some();
            let mut decided: HashMap<u64, bool> = HashMap::new();
            let mut admitted = |id: u64| -> bool {
                if !filtered {
                    return true;
                }
                *decided.entry(id).or_insert_with(|| {
                    let Some(key) = searcher.key(id) else {
                        return false;
                    };
                    query.session.as_deref().is_none_or(|s| s == key)
                        && query.agent_alias.as_deref().is_none_or(|a| {
                            self.searched_view(searcher, id, |view| {
                                view.agent_alias.as_deref() == Some(a)
                            })
                            .unwrap_or(false)
                        })
                })
            };
            // Each token's current docs in searched sessions, by doc: (doc, frequency, length).
            let mut postings: HashMap<&str, Vec<(DocKey, u32, u32)>> = HashMap::new();
            for token in clauses.iter().flat_map(|c| &c.tokens) {
                if postings.contains_key(token.as_str()) {
                    continue;
                }
                let mut docs: Vec<(DocKey, u32, u32)> = searcher
                    .index
                    .hits(token)?
                    .into_iter()
                    .filter(|(d, _)| {
                        d.position != META_POSITION && searchable.contains_key(&d.session)
                    })
                    .map(|(d, tf)| ((d.session, d.position), tf, d.length))
                    .collect();
                docs.sort_unstable_by_key(|d| d.0);
                docs.dedup_by_key(|d| d.0);
                postings.insert(token, docs);
            }
            // Each clause's docs with their score; summed over clauses when there are several.
            let mut ranked: Vec<(DocKey, f32)> = Vec::new();
            let mut sums: HashMap<DocKey, f32> = HashMap::new();
            let mut texts: HashMap<DocKey, StoredMessage> = HashMap::new();
            for clause in &clauses {
                let lists: Vec<&Vec<(DocKey, u32, u32)>> = clause
                    .tokens
                    .iter()
                    .map(|t| &postings[t.as_str()])
                    .collect();
                let idfs: Vec<f32> = lists
                    .iter()
                    .map(|l| collection.idf(l.len() as u64))
                    .collect();
                let Some(shortest) = lists.iter().min_by_key(|l| l.len()) else {
                    continue;
                };
                let mut found: Vec<(DocKey, f32)> = Vec::new();
                for (at, &(doc, _, _)) in shortest.iter().enumerate() {
                    if !admitted(doc.0) {
                        continue;
                    }
                    // Summed in the clause's token order, as the documentation states it.
                    let mut score = 0f32;
                    let mut all = true;
                    for (list, idf) in lists.iter().zip(&idfs) {
                        let found = if std::ptr::eq(*list, *shortest) {
                            Ok(at)
                        } else {
                            list.binary_search_by_key(&doc, |d| d.0)
                        };
                        match found {
                            Ok(i) => score += collection.weight(*idf, list[i].1, list[i].2),
                            Err(_) => {
                                all = false;
                                break;
                            }
                        }
                    }
                    if all {
                        found.push((doc, score));
                    }
                }
                if clause.is_phrase() {
                    let docs: Vec<DocKey> = found.iter().map(|f| f.0).collect();
                    self.read_docs(searcher, &docs, &mut texts)?;
                    found.retain(|(doc, _)| {
                        texts
                            .get(doc)
                            .is_some_and(|m| clause.occurs_in(&m.message.content))
                    });
                }
                if clauses.len() == 1 {
                    ranked = found;
                } else {
                    for (doc, score) in found {
                        *sums.entry(doc).or_default() += score;
                    }
                }
            }
            if clauses.len() > 1 {
                ranked = sums.into_iter().collect();
            }
            let order = |a: &(DocKey, f32), b: &(DocKey, f32)| {
                b.1.total_cmp(&a.1)
                    .then_with(|| searcher.key(a.0 .0).cmp(&searcher.key(b.0 .0)))
                    .then_with(|| a.0 .1.cmp(&b.0 .1))
            };
            // Only the best are sorted: `limit` and a few more at a time (a hit whose session
            // changed since the catch-up is passed over), all at once under a time filter.
            let timed = query.from_time.is_some() || query.to_time.is_some();
            let step = query.limit.saturating_add(16);
            let mut out = Vec::new();
            let mut start = 0;
            while start < ranked.len() {
                let end = if timed {
                    ranked.len()
                } else {
                    start.saturating_add(step).min(ranked.len())
                };
                if end < ranked.len() {
                    ranked[start..].select_nth_unstable_by(end - start - 1, order);
                }
                ranked[start..end].sort_by(order);
                let mut next = start;
                while next < end {
                    // Only as many texts as hits are still wanted (at most 256 at a time).
                    let take = (query.limit - out.len()).clamp(1, 256).min(end - next);
                    let chunk = &ranked[next..next + take];
                    next += take;
                    let wanted: Vec<DocKey> = chunk.iter().map(|r| r.0).collect();
                    self.read_docs(searcher, &wanted, &mut texts)?;
                    for (doc, score) in chunk {
                        let Some(stored) = texts.get(doc) else {
                            continue; // changed since the catch-up
                        };
                        let at = to_time(stored.created_at);
                        if query.from_time.is_some_and(|t| at < t)
                            || query.to_time.is_some_and(|t| at > t)
                        {
                            continue;
                        }
                        out.push(MessageHit {
                            session: searcher.key(doc.0).unwrap_or_default().to_owned(),
                            index: doc.1 as usize,
                            created_at: at,
                            message: stored.message.clone(),
                            score: *score,
                            snippet: snippet(&stored.message.content, &clauses),
                        });
                        if out.len() == query.limit {
                            return Ok(out);
                        }
                    }
                }
                start = end;
            }
            Ok(out)
        })
    }

    /// Reads the messages of `docs` not yet in `texts` into it.
    fn read_docs(
        &self,
        searcher: &Searcher,
        docs: &[DocKey],
        texts: &mut HashMap<DocKey, StoredMessage>,
    ) -> Result<()> {
        let mut by_session: HashMap<u64, Vec<u32>> = HashMap::new();
        for doc in docs.iter().filter(|d| !texts.contains_key(d)) {
            by_session.entry(doc.0).or_default().push(doc.1);
        }
        for (id, mut positions) in by_session {
            let Some(key) = searcher.key(id) else {
                continue;
            };
            positions.sort_unstable();
            let Some(pinned) = self.slot(key)? else {
                continue;
            };
            if pinned.session_id != id {
                continue; // erased since the catch-up
            }
            let read = self.reading(&pinned, || {
                let (kept, locs, files) = {
                    let view = pinned.view.read();
                    let kept: Vec<u32> = positions
                        .iter()
                        .copied()
                        .filter(|p| (*p as usize) < view.messages.len())
                        .collect();
                    let locs: Vec<_> = kept.iter().map(|p| view.messages[*p as usize]).collect();
                    // Opened under the lock, so a compaction cannot remove the files first.
                    let files = self.segment_files(&pinned, &locs)?;
                    (kept, locs, files)
                };
                Ok((kept, files.read_messages(&locs)?))
            })?;
            for (position, stored) in read.0.into_iter().zip(read.1) {
                texts.insert((id, position), stored);
            }
        }
        Ok(())
    }

    /// Writes what the index holds in memory to its files (a writable store whose index was
    /// used): at close, so the next process starts from it.
    pub(super) fn save_index(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        match self.search.lock().as_mut() {
            Some(searcher) if searcher.index.unsaved() => {
                // Durable first: a crash must not take back a location the saved index holds.
                self.flush()?;
                searcher.index.save(&*self.fs)
            }
            _ => Ok(()),
        }
    }

    /// Drops the index's files and builds it again from every session.
    pub(super) fn rebuild_index(&self) -> Result<()> {
        self.check_writable()?;
        let mut guard = self.search.lock();
        self.index_in_use.store(true, Ordering::SeqCst);
        let index = SearchIndex::fresh(&*self.fs, &self.dir, self.term_key())?;
        // Every file of the old index is stray to the new one, which names none.
        for stray in index.strays(&*self.fs) {
            self.fs
                .remove_file(&stray)
                .map_err(crate::fs::context("removing", &stray))?;
        }
        let state = index.dir().join(crate::index::STATE_FILE);
        if self.fs.exists(&state) {
            self.fs
                .remove_file(&state)
                .map_err(crate::fs::context("removing", &state))?;
        }
        let mut searcher = Searcher::new(index);
        self.catch_up(&mut searcher)?;
        self.flush()?; // what the saved index covers is durable first
        searcher.index.compact(&*self.fs)?;
        *guard = Some(searcher);
        Ok(())
    }

    /// After an erasure: the index forgets every session the store no longer has and merges
    /// its runs, so no index file keeps a doc of the erased session.
    pub(super) fn erase_from_index(&self) -> Result<()> {
        let mut guard = self.search.lock();
        if guard.is_none() {
            let exists = self
                .fs
                .exists(&self.dir.join(INDEX_DIR).join(crate::index::STATE_FILE));
            if !exists {
                return Ok(());
            }
            *guard = Some(Searcher::new(self.load_index()?));
        }
        let Some(searcher) = guard.as_mut() else {
            return Ok(());
        };
        let ids = self.sessions.read().ids().collect();
        self.forget_gone(&mut searcher.index, ids);
        searcher.forget_scan();
        self.flush()?; // what the saved index covers is durable first
        searcher.index.compact(&*self.fs)?;
        // Erasure reaches every index byte: files left by an earlier rebuild, and those set
        // aside as damaged (which may hold the erased session's term hashes) go too.
        self.remove_strays(&searcher.index);
        let damaged: Vec<_> = self
            .fs
            .list(searcher.index.dir())
            .map_err(crate::fs::context("listing", searcher.index.dir()))?
            .into_iter()
            .filter(|e| e.is_file && e.name.to_string_lossy().contains(".damaged"))
            .map(|e| searcher.index.dir().join(e.name))
            .collect();
        for path in damaged {
            self.fs
                .remove_file(&path)
                .map_err(crate::fs::context("removing", &path))?;
        }
        Ok(())
    }
}

/// The docs that hold every one of `tokens` (a word's or a phrase's): candidates, which a
/// phrase must still be confirmed on.
fn docs_with_all(index: &SearchIndex, tokens: &[String]) -> Result<Vec<DocKey>> {
    if let [token] = tokens {
        let hits = index.hits(token)?;
        return Ok(hits
            .into_iter()
            .map(|(d, _)| (d.session, d.position))
            .collect());
    }
    let mut found: Option<HashSet<DocKey>> = None;
    for token in tokens {
        let docs: HashSet<DocKey> = index
            .hits(token)?
            .into_iter()
            .map(|(d, _)| (d.session, d.position))
            .collect();
        found = Some(match found {
            None => docs,
            Some(before) => before.intersection(&docs).copied().collect(),
        });
    }
    Ok(found.unwrap_or_default().into_iter().collect())
}

//! [`Model`]: the store's contract (SEMANTICS.md) as a plain in-memory map of sessions.

use std::collections::BTreeMap;

use crate::{ChatMessage, LogStore, SessionBackend};

use super::op::{key, state_name, user_messages, Op, TURN};

/// What a session holds in the model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelSession {
    /// Live messages.
    pub messages: Vec<ChatMessage>,
    /// Name.
    pub name: Option<String>,
    /// Agent alias.
    pub alias: Option<String>,
    /// Channel.
    pub channel_id: Option<String>,
    /// Sender.
    pub sender_id: Option<String>,
    /// State and turn.
    pub state: (String, Option<String>),
    /// Archived ([`crate::LogStore::archive_session`]).
    pub archived: bool,
}

/// A deleted session in the model: the session, its cleared messages, the key it was forked
/// from.
pub type ModelTombstone = (ModelSession, Option<Vec<ChatMessage>>, Option<String>);

/// The contract, as plainly as it can be written: a map of sessions. Two models are equal
/// when their sessions are: the undo state is not observable except through undo.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// Sessions by key.
    pub sessions: BTreeMap<String, ModelSession>,
    /// The messages the last clear of each live session removed (for `undo_clear`).
    pub cleared: BTreeMap<String, Vec<ChatMessage>>,
    /// The latest deleted session of each key, with its cleared messages and the key it was
    /// forked from (for `restore_session` and `erase_session`).
    pub tombstones: BTreeMap<String, ModelTombstone>,
    /// The key each live fork was forked from.
    pub fork_of: BTreeMap<String, String>,
    /// The ids of each live session's identified appends, oldest first (the model keeps them
    /// all: workloads stay far below the store's window).
    pub ids: BTreeMap<String, Vec<String>>,
    /// The ids of each deleted session, for `restore_session`.
    pub tombstone_ids: BTreeMap<String, Vec<String>>,
}

impl PartialEq for Model {
    fn eq(&self, other: &Model) -> bool {
        self.sessions == other.sessions
    }
}

impl Eq for Model {}

fn new_session() -> ModelSession {
    ModelSession {
        state: ("idle".into(), None),
        ..ModelSession::default()
    }
}

/// A name or alias as set: an empty one clears it.
fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

fn trim(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

impl Model {
    /// Applies `op` as SEMANTICS.md says.
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::Append(k, text) => self.append(key(*k), std::slice::from_ref(text)),
            Op::AppendOnce(k, text, id) => self.append_once(key(*k), text, id),
            Op::Archive(k) => self.set_archived(key(*k), true),
            Op::Unarchive(k) => self.set_archived(key(*k), false),
            Op::AppendBatch(k, texts) => self.append(key(*k), texts),
            Op::UpdateLast(k, text) => self.update_last(key(*k), text),
            Op::RemoveLast(k) => self.remove_last(key(*k)),
            Op::Clear(k) => self.clear(key(*k)),
            Op::UndoClear(k) => self.undo_clear(key(*k)),
            // An explicit compaction holds only what is live: nothing left to undo.
            Op::Compact(k) => {
                self.cleared.remove(key(*k));
            }
            Op::Delete(k) => self.delete(key(*k)),
            Op::Restore(k) => self.restore(key(*k)),
            Op::Erase(k) => self.erase(key(*k)),
            Op::Fork(from, to) => self.fork(key(*from), key(*to)),
            Op::Name(k, name) => self.session_or_new(key(*k)).name = non_empty(name),
            Op::Alias(k, alias) => self.session_or_new(key(*k)).alias = non_empty(alias),
            Op::Context(k, channel, sender) => self.set_context(key(*k), channel, sender),
            Op::State(k, running) => {
                self.session_or_new(key(*k)).state =
                    (state_name(*running).into(), Some(TURN.into()));
            }
            Op::Reopen | Op::PowerLoss | Op::Checkpoint | Op::Crash | Op::Search(_) => {}
        }
    }

    /// The live session `key`, created if there is none. A call that creates a session
    /// creates a new one, not a fork: a fork origin left for the key is forgotten.
    fn session_or_new(&mut self, key: &str) -> &mut ModelSession {
        if !self.sessions.contains_key(key) {
            self.fork_of.remove(key);
            self.ids.remove(key);
        }
        self.sessions
            .entry(key.to_owned())
            .or_insert_with(new_session)
    }

    /// Appends `texts` as user messages; an empty batch changes nothing (and creates no
    /// session).
    fn append(&mut self, key: &str, texts: &[String]) {
        if !texts.is_empty() {
            let session = self.session_or_new(key);
            session.messages.extend(user_messages(texts));
            session.archived = false;
        }
    }

    /// Appends `text` unless the live session holds an append with `id`.
    fn append_once(&mut self, key: &str, text: &str, id: &str) {
        let seen = self.sessions.contains_key(key)
            && self
                .ids
                .get(key)
                .is_some_and(|ids| ids.iter().any(|held| held == id));
        if !seen {
            self.append(key, &[text.to_owned()]);
            self.ids
                .entry(key.to_owned())
                .or_default()
                .push(id.to_owned());
        }
    }

    /// Archives or unarchives the live session `key`, if there is one.
    fn set_archived(&mut self, key: &str, archived: bool) {
        if let Some(session) = self.sessions.get_mut(key) {
            session.archived = archived;
        }
    }

    /// Replaces the last message, if any, with an assistant message.
    fn update_last(&mut self, key: &str, text: &str) {
        if let Some(last) = self
            .sessions
            .get_mut(key)
            .and_then(|s| s.messages.last_mut())
        {
            *last = ChatMessage::assistant(text.to_owned());
        }
    }

    /// Drops the last message, if any.
    fn remove_last(&mut self, key: &str) {
        if let Some(s) = self.sessions.get_mut(key) {
            s.messages.pop();
        }
    }

    /// Moves the live messages aside for `undo_clear`; clearing no messages keeps the
    /// earlier undo.
    fn clear(&mut self, key: &str) {
        if let Some(s) = self.sessions.get_mut(key) {
            if !s.messages.is_empty() {
                self.cleared
                    .insert(key.to_owned(), std::mem::take(&mut s.messages));
            }
        }
    }

    /// Puts the cleared messages back, before those appended since.
    fn undo_clear(&mut self, key: &str) {
        if let Some(s) = self.sessions.get_mut(key) {
            if let Some(mut restored) = self.cleared.remove(key) {
                restored.append(&mut s.messages);
                s.messages = restored;
            }
        }
    }

    /// Moves the session, its cleared messages and its fork origin to its tombstone.
    fn delete(&mut self, key: &str) {
        if let Some(session) = self.sessions.remove(key) {
            let cleared = self.cleared.remove(key);
            let origin = self.fork_of.remove(key);
            self.tombstones
                .insert(key.to_owned(), (session, cleared, origin));
            let ids = self.ids.remove(key).unwrap_or_default();
            self.tombstone_ids.insert(key.to_owned(), ids);
        }
    }

    /// Brings the deleted session back, unless the key is live again.
    fn restore(&mut self, key: &str) {
        if !self.sessions.contains_key(key) {
            if let Some((session, cleared, origin)) = self.tombstones.remove(key) {
                self.sessions.insert(key.to_owned(), session);
                if let Some(cleared) = cleared {
                    self.cleared.insert(key.to_owned(), cleared);
                }
                if let Some(origin) = origin {
                    self.fork_of.insert(key.to_owned(), origin);
                }
                if let Some(ids) = self.tombstone_ids.remove(key) {
                    self.ids.insert(key.to_owned(), ids);
                }
            }
        }
    }

    /// Forgets the key, live or deleted.
    fn erase(&mut self, key: &str) {
        self.sessions.remove(key);
        self.cleared.remove(key);
        self.fork_of.remove(key);
        self.tombstones.remove(key);
        self.ids.remove(key);
        self.tombstone_ids.remove(key);
        // Deleted forks of it go too: they would keep its bytes.
        let tombstones = &mut self.tombstones;
        tombstones.retain(|_, (_, _, origin)| origin.as_deref() != Some(key));
        self.tombstone_ids.retain(|k, _| tombstones.contains_key(k));
    }

    /// Copies the live session `from` to a new session `to` (refused when `to` is live or
    /// `from` is not).
    fn fork(&mut self, from: &str, to: &str) {
        if from != to && !self.sessions.contains_key(to) {
            if let Some(source) = self.sessions.get(from).cloned() {
                // A fork is not archived, and its window of ids starts empty.
                let fork = ModelSession {
                    archived: false,
                    ..source
                };
                self.sessions.insert(to.to_owned(), fork);
                self.cleared.remove(to);
                self.ids.remove(to);
                self.fork_of.insert(to.to_owned(), from.to_owned());
            }
        }
    }

    /// Sets the channel and the sender that are given; blank ones change nothing.
    fn set_context(&mut self, key: &str, channel: &Option<String>, sender: &Option<String>) {
        let s = self.session_or_new(key);
        if let Some(c) = trim(channel) {
            s.channel_id = Some(c);
        }
        if let Some(v) = trim(sender) {
            s.sender_id = Some(v);
        }
    }

    /// What `store` holds, in the model's terms: the sessions it lists and the archived ones.
    pub fn observe(store: &LogStore) -> Model {
        let mut sessions = BTreeMap::new();
        let archived = store
            .list_page(&crate::ListQuery {
                archived: Some(true),
                limit: usize::MAX,
                ..crate::ListQuery::default()
            })
            .expect("a page without a cursor")
            .sessions;
        let listed = store.list_sessions_with_metadata();
        for (meta, archived) in listed
            .into_iter()
            .map(|m| (m, false))
            .chain(archived.into_iter().map(|m| (m, true)))
        {
            let state = store
                .get_session_state(&meta.key)
                .ok()
                .flatten()
                .map(|s| (s.state, s.turn_id))
                .unwrap_or_default();
            let messages = store.load(&meta.key);
            sessions.insert(
                meta.key.clone(),
                ModelSession {
                    messages,
                    name: meta.name,
                    alias: meta.agent_alias,
                    channel_id: meta.channel_id,
                    sender_id: meta.sender_id,
                    state,
                    archived,
                },
            );
        }
        Model {
            sessions,
            ..Model::default()
        }
    }
}

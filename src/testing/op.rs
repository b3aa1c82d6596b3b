//! [`Op`]: one operation of a workload, how it runs against a store, and how fuzzer bytes
//! decode into a workload.

use std::io;

use crate::{ChatMessage, LogStore, SessionBackend, SessionContext};

/// One operation of a workload, run against a store and against the [`Model`](super::Model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `append(key, user(text))`.
    Append(usize, String),
    /// `append_batch(key, [user(text), ...])`.
    AppendBatch(usize, Vec<String>),
    /// `update_last(key, assistant(text))`.
    UpdateLast(usize, String),
    /// `remove_last(key)`.
    RemoveLast(usize),
    /// `clear_messages(key)`.
    Clear(usize),
    /// `delete_session(key)`.
    Delete(usize),
    /// `set_session_name(key, name)`.
    Name(usize, String),
    /// `set_session_agent_alias(key, alias)`.
    Alias(usize, String),
    /// `set_session_context(key, { channel_id, sender_id })`.
    Context(usize, Option<String>, Option<String>),
    /// `set_session_state(key, running ? "running" : "idle", Some("turn"))`.
    State(usize, bool),
    /// `compact(key)`.
    Compact(usize),
    /// `undo_clear(key)`.
    UndoClear(usize),
    /// `restore_session(key)` (a refusal because the key is live again changes nothing).
    Restore(usize),
    /// `fork_session(from, to, None)` (refused when `to` exists or `from` does not).
    Fork(usize, usize),
    /// `erase_session(key)`.
    Erase(usize),
    /// `append_once(key, user(text), id)`.
    AppendOnce(usize, String, String),
    /// `archive_session(key)`.
    Archive(usize),
    /// `unarchive_session(key)`.
    Unarchive(usize),
    /// Close the store and open it again.
    Reopen,
    /// Lose power (dropping everything not yet durable), then open the store again.
    PowerLoss,
    /// `checkpoint()`: a checkpoint taken while the store runs.
    Checkpoint,
    /// Lose power with the store still open (it never closes), then open it again: after a
    /// checkpoint, the open replays only what was written since.
    Crash,
    /// `search(keyword)` and `search_messages(text)`, compared with a brute-force scan of the
    /// model (every other time also after a reopen, with the index read cold from its files).
    Search(String),
}

/// The keys workloads use: similar-looking keys that must stay distinct.
pub const KEYS: &[&str] = &["a", "a.b", "a/b", "../x", "ü"];

/// The key an op's key number picks.
pub(super) fn key(k: usize) -> &'static str {
    KEYS[k % KEYS.len()]
}

/// The state [`Op::State`] sets.
pub(super) fn state_name(running: bool) -> &'static str {
    if running {
        "running"
    } else {
        "idle"
    }
}

/// The turn [`Op::State`] sets.
pub(super) const TURN: &str = "turn";

/// `texts` as user messages, the way [`Op::Append`] and [`Op::AppendBatch`] write them.
pub(super) fn user_messages(texts: &[String]) -> Vec<ChatMessage> {
    texts.iter().map(|t| ChatMessage::user(t.clone())).collect()
}

/// Runs `op` against the store. `Reopen`, `PowerLoss` and `Crash` are handled by the caller
/// (they need the folder and options); here they do nothing.
pub fn run_op(store: &LogStore, op: &Op) -> io::Result<()> {
    match op {
        Op::Append(k, text) => store.append(key(*k), &ChatMessage::user(text.clone())),
        Op::AppendBatch(k, texts) => Ok(store.append_batch(key(*k), &user_messages(texts))?),
        Op::UpdateLast(k, text) => store
            .update_last(key(*k), &ChatMessage::assistant(text.clone()))
            .map(drop),
        Op::RemoveLast(k) => store.remove_last(key(*k)).map(drop),
        Op::Clear(k) => store.clear_messages(key(*k)).map(drop),
        Op::Delete(k) => store.delete_session(key(*k)).map(drop),
        Op::Name(k, name) => store.set_session_name(key(*k), name),
        Op::Alias(k, alias) => store.set_session_agent_alias(key(*k), alias),
        Op::Context(k, channel, sender) => store.set_session_context(
            key(*k),
            SessionContext {
                channel_id: channel.as_deref(),
                room_id: None,
                sender_id: sender.as_deref(),
            },
        ),
        Op::State(k, running) => store.set_session_state(key(*k), state_name(*running), Some(TURN)),
        Op::Compact(k) => store.compact(key(*k)),
        Op::UndoClear(k) => store.undo_clear(key(*k)).map(drop).map_err(Into::into),
        Op::Erase(k) => store.erase_session(key(*k)).map(drop).map_err(Into::into),
        Op::Restore(k) => match store.restore_session(key(*k)) {
            Ok(_) | Err(crate::Error::SessionExists { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        },
        Op::Fork(from, to) => match store.fork_session(key(*from), key(*to), None) {
            Ok(())
            | Err(crate::Error::SessionExists { .. } | crate::Error::SessionNotFound { .. }) => {
                Ok(())
            }
            Err(e) => Err(e.into()),
        },
        Op::AppendOnce(k, text, id) => Ok(store
            .append_once(key(*k), &ChatMessage::user(text.clone()), id)
            .map(drop)?),
        Op::Archive(k) => Ok(store.archive_session(key(*k)).map(drop)?),
        Op::Unarchive(k) => Ok(store.unarchive_session(key(*k)).map(drop)?),
        Op::Checkpoint => Ok(store.checkpoint()?),
        Op::Reopen | Op::PowerLoss | Op::Crash | Op::Search(_) => Ok(()),
    }
}

/// Decodes fuzzer bytes into a workload: each op takes two bytes.
pub fn ops_from_bytes(data: &[u8]) -> Vec<Op> {
    data.chunks(2)
        .map(|pair| {
            let a = pair.first().copied().unwrap_or(0);
            let b = pair.get(1).copied().unwrap_or(0);
            let k = usize::from(b % 5);
            let text = format!("t{}", b / 5);
            match a % 24 {
                0..=2 => Op::Append(k, text),
                3 => Op::AppendBatch(
                    k,
                    vec![text.clone(), format!("{text}'"), format!("{text}\"")],
                ),
                4 | 5 => Op::UpdateLast(k, text),
                6 => Op::RemoveLast(k),
                7 => Op::Clear(k),
                8 => Op::Delete(k),
                9 => Op::Name(k, if b % 2 == 0 { String::new() } else { text }),
                10 => Op::Alias(k, text),
                11 => Op::Context(k, Some(format!(" c{b} ")), (b % 3 == 0).then(|| "s".into())),
                12 => Op::State(k, b % 2 == 0),
                13 => Op::Compact(k),
                14 if b % 4 == 0 => Op::Checkpoint,
                14 if b % 4 == 2 => Op::Search(text),
                14 => Op::Reopen,
                15 if b % 4 == 1 => Op::Crash,
                15 => Op::PowerLoss,
                16 => Op::Fork(k, (k + 1 + usize::from(b / 5) % 4) % 5),
                17 => Op::UndoClear(k),
                18 => Op::Restore(k),
                19 => Op::Erase(k),
                20 | 21 => Op::AppendOnce(k, text, format!("m{}", b % 8)),
                22 => Op::Archive(k),
                23 => Op::Unarchive(k),
                _ => Op::Append(k, text),
            }
        })
        .collect()
}

//! What the event log says: [`LogEvent`] and its [`EventKind`], made from a record's event,
//! and the [`EventFilter`] that picks events out. Shared by the audit reader (`history`) and
//! the live feed, so the write path does not import the audit module.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::Result;
use crate::message::ChatMessage;
use crate::options::RetentionRule;
use crate::record::{BatchMessage, Event};

/// Which events [`crate::LogStore::events`] returns. Every bound is inclusive; the default
/// returns every event the log holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this session's events.
    pub session: Option<String>,
    /// Only events with this sequence number or a later one.
    pub from_seq: Option<u64>,
    /// Only events with this sequence number or an earlier one.
    pub to_seq: Option<u64>,
    /// Only events written at this time or later.
    pub from_time: Option<DateTime<Utc>>,
    /// Only events written at this time or earlier.
    pub to_time: Option<DateTime<Utc>>,
}

impl EventFilter {
    /// Every event of every session.
    pub fn all() -> EventFilter {
        EventFilter::default()
    }

    /// Every event of one session.
    pub fn session(key: impl Into<String>) -> EventFilter {
        EventFilter {
            session: Some(key.into()),
            ..EventFilter::default()
        }
    }

    pub(crate) fn admits(&self, seq: u64, time: DateTime<Utc>) -> bool {
        self.from_seq.is_none_or(|from| seq >= from)
            && self.to_seq.is_none_or(|to| seq <= to)
            && self.from_time.is_none_or(|from| time >= from)
            && self.to_time.is_none_or(|to| time <= to)
    }
}

/// One event read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    /// Its store-wide sequence number: events are returned in this order.
    pub seq: u64,
    /// When it was written (for an imported message, the time it was given).
    pub time: DateTime<Utc>,
    /// The session it changed.
    pub session: String,
    /// What it did.
    pub kind: EventKind,
}

/// What an event did to its session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A message was appended.
    Append {
        /// The message.
        message: ChatMessage,
    },
    /// Several messages were appended at once, all or none ([`crate::LogStore::append_batch`]).
    AppendBatch {
        /// The messages, in order.
        messages: Vec<ChatMessage>,
    },
    /// The last message was replaced.
    UpdateLast {
        /// The message it replaced.
        old: ChatMessage,
        /// The new message.
        new: ChatMessage,
    },
    /// The last message was removed.
    RemoveLast {
        /// The message removed.
        removed: ChatMessage,
    },
    /// Every message was removed; the session stayed.
    Clear {
        /// How many messages were removed.
        removed: usize,
    },
    /// The session was deleted.
    Delete,
    /// The messages the last clear removed were put back
    /// ([`crate::LogStore::undo_clear`]).
    UndoClear,
    /// The deleted session was brought back ([`crate::LogStore::restore_session`]).
    Restore,
    /// The session began as a fork of `source` as it was after event `at_seq`, sharing its
    /// `messages` messages ([`crate::LogStore::fork_session`]).
    Fork {
        /// The source session's key.
        source: String,
        /// The source's last event the fork includes.
        at_seq: u64,
        /// Messages the fork began with.
        messages: usize,
    },
    /// A retention rule dropped the session's oldest messages.
    Trimmed {
        /// The rule.
        rule: RetentionRule,
        /// How many messages it dropped.
        removed: usize,
    },
    /// A retention rule deleted the session.
    Expired {
        /// The rule.
        rule: RetentionRule,
        /// How many messages the session held.
        removed: usize,
    },
    /// The name was set or cleared.
    Name {
        /// The new name.
        name: Option<String>,
    },
    /// The agent alias was set or cleared.
    Alias {
        /// The new alias.
        alias: Option<String>,
    },
    /// Routing context was set; a `None` field kept its value.
    Context {
        /// Channel reference.
        channel_id: Option<String>,
        /// Room or thread.
        room_id: Option<String>,
        /// Sender.
        sender_id: Option<String>,
    },
    /// The state was set.
    State {
        /// The new state.
        state: String,
        /// The turn id given with it.
        turn_id: Option<String>,
    },
    /// A compaction rewrote the session to its live state, `messages` messages long.
    Compaction {
        /// Live messages it kept.
        messages: usize,
    },
    /// A session's events were erased (its key and what it held are not in the log):
    /// `whole_session`, the session itself, deleted and past its undo window or erased by
    /// [`crate::LogStore::erase_session`]; otherwise its history before a compaction that
    /// dropped cleared messages past their undo window. The event's `session` is empty.
    Erased {
        /// The erased session's id (its segment files' prefix).
        session_id: u64,
        /// The whole session, or only its history before its compaction.
        whole_session: bool,
    },
    /// The sequence numbers `from..=to` name no event that can be read: they were reserved
    /// ahead of use (see `docs/FORMAT.md`, "Sequence numbers"), and the open after a crash
    /// found none of them on disk. A crash took the events that had them (records not yet
    /// synced under `Interval` or `Never`, or sent to `quarantine/` as damage), or they were
    /// never handed out. Such a number is never handed out again. The event's `session` is
    /// empty.
    Gap {
        /// The first number of the gap.
        from: u64,
        /// The last number of the gap.
        to: u64,
    },
    /// A message was appended under the caller's id for it
    /// ([`crate::LogStore::append_once`]).
    AppendOnce {
        /// The message.
        message: ChatMessage,
        /// The caller's id for it.
        message_id: String,
    },
    /// Several messages were appended at once under the caller's id for them
    /// ([`crate::LogStore::append_batch_once`]).
    AppendBatchOnce {
        /// The messages, in order.
        messages: Vec<ChatMessage>,
        /// The caller's id for the batch.
        batch_id: String,
    },
    /// The session was archived ([`crate::LogStore::archive_session`]).
    Archive,
    /// The session was brought back from the archive ([`crate::LogStore::unarchive_session`]).
    Unarchive,
    /// A live message as a compaction rewrote it, when the events that built it are no
    /// longer in the log (compacted without `keep_history`). It carries the sequence number
    /// and time of the event that gave the message its content.
    Restated {
        /// The message.
        message: ChatMessage,
    },
}

/// What `event` did, for a session that held `before` messages; `old` reads its last message
/// (called only for `UpdateLast` and `RemoveLast`).
pub(crate) fn event_kind(
    event: &Event<'_>,
    before: usize,
    old: impl FnOnce() -> Result<ChatMessage>,
) -> Result<EventKind> {
    let owned = |value: &Option<&str>| value.map(str::to_owned);
    let batch = |messages: &[BatchMessage<'_>]| -> Vec<ChatMessage> {
        messages
            .iter()
            .map(|m| ChatMessage::new(m.role, m.content))
            .collect()
    };
    Ok(match event {
        Event::Append { role, content } => EventKind::Append {
            message: ChatMessage::new(*role, *content),
        },
        Event::AppendBatch { messages } => EventKind::AppendBatch {
            messages: batch(messages),
        },
        Event::AppendOnce { role, content, id } => EventKind::AppendOnce {
            message: ChatMessage::new(*role, *content),
            message_id: (*id).to_owned(),
        },
        Event::AppendBatchOnce { messages, id } => EventKind::AppendBatchOnce {
            messages: batch(messages),
            batch_id: (*id).to_owned(),
        },
        Event::SetArchived { archived: true } => EventKind::Archive,
        Event::SetArchived { archived: false } => EventKind::Unarchive,
        Event::UpdateLast { role, content } => EventKind::UpdateLast {
            old: old()?,
            new: ChatMessage::new(*role, *content),
        },
        Event::RemoveLast => EventKind::RemoveLast { removed: old()? },
        Event::Clear => EventKind::Clear { removed: before },
        Event::Delete => EventKind::Delete,
        Event::SetName { name } => EventKind::Name { name: owned(name) },
        Event::SetAlias { alias } => EventKind::Alias {
            alias: owned(alias),
        },
        Event::SetContext {
            channel_id,
            room_id,
            sender_id,
        } => EventKind::Context {
            channel_id: owned(channel_id),
            room_id: owned(room_id),
            sender_id: owned(sender_id),
        },
        Event::SetState { state, turn_id } => EventKind::State {
            state: (*state).to_owned(),
            turn_id: owned(turn_id),
        },
        Event::UndoClear => EventKind::UndoClear,
        Event::Fork { source, at_seq } => EventKind::Fork {
            source: (*source).to_owned(),
            at_seq: *at_seq,
            messages: before,
        },
        Event::Trim { count, rule } => EventKind::Trimmed {
            rule: RetentionRule::from_byte(*rule),
            removed: usize::try_from(*count).unwrap_or(usize::MAX),
        },
        Event::Expire { rule } => EventKind::Expired {
            rule: RetentionRule::from_byte(*rule),
            removed: before,
        },
        Event::Restore => EventKind::Restore,
        Event::Snapshot(snapshot) => EventKind::Compaction {
            messages: usize::try_from(snapshot.message_count).unwrap_or(usize::MAX),
        },
    })
}

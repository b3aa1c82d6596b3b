//! The payload of a record: the [`Event`] it holds, and its bytes. The events are encoded with
//! bincode 2 (fixed-width little-endian integers); `docs/FORMAT.md` gives the bytes without
//! reference to the crate. This module is the only one that touches bincode. Pure: no I/O.

use serde::{Deserialize, Serialize};

/// One mutation of a session, as stored. Strings borrow from the record's bytes.
///
/// The variant order is part of the format (the payload starts with the variant's index as a
/// `u32`): new variants go at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event<'a> {
    /// 0: a message appended at the end.
    Append {
        /// The message's role.
        role: &'a str,
        /// The message's content.
        content: &'a str,
    },
    /// 1: the last message's role and content replaced.
    UpdateLast {
        /// The new role.
        role: &'a str,
        /// The new content.
        content: &'a str,
    },
    /// 2: the last message dropped.
    RemoveLast,
    /// 3: every message dropped; the session stays.
    Clear,
    /// 4: the session deleted. Nothing follows it in the session's segments.
    Delete,
    /// 5: the name set (`Some`) or cleared (`None`).
    SetName {
        /// The new name.
        #[serde(borrow)]
        name: Option<&'a str>,
    },
    /// 6: the agent alias set or cleared.
    SetAlias {
        /// The new alias.
        #[serde(borrow)]
        alias: Option<&'a str>,
    },
    /// 7: routing context; a `None` field keeps the stored value.
    SetContext {
        /// `<type>.<alias>` channel reference.
        #[serde(borrow)]
        channel_id: Option<&'a str>,
        /// Platform room or thread id.
        #[serde(borrow)]
        room_id: Option<&'a str>,
        /// Inbound sender id.
        #[serde(borrow)]
        sender_id: Option<&'a str>,
    },
    /// 8: the session state; `turn_started_at` becomes the record's time when the state is
    /// `running`, and is cleared otherwise.
    SetState {
        /// Free text: `idle`, `running`, `error`, ...
        state: &'a str,
        /// The turn, stored as given.
        #[serde(borrow)]
        turn_id: Option<&'a str>,
    },
    /// 9: the session's metadata at a compaction, written after its live messages.
    Snapshot(#[serde(borrow)] Snapshot<'a>),
    /// 10: several messages appended at once: all of them or none (one record).
    AppendBatch {
        /// The messages, in order (1 to 4096).
        #[serde(borrow)]
        messages: Vec<BatchMessage<'a>>,
    },
    /// 11: the messages the last `Clear` removed are put back, before any added since.
    UndoClear,
    /// 12: a deleted session is live again, as it was when deleted.
    Restore,
    /// 13: a retention rule dropped the session's oldest `count` messages.
    Trim {
        /// Messages dropped from the front.
        count: u64,
        /// The rule: 0 age, 1 messages per session, 2 disk budget.
        rule: u8,
    },
    /// 14: a retention rule deleted the session (as `Delete`, and restorable the same way).
    Expire {
        /// The rule: 0 age, 1 messages per session, 2 disk budget.
        rule: u8,
    },
    /// 15: the session was forked from another: the first record of a forked segment, after
    /// the history it shares with its source.
    Fork {
        /// The source session's key.
        source: &'a str,
        /// The source's last event the fork includes.
        at_seq: u64,
    },
    /// 16: a message appended under the caller's id for it ([`crate::LogStore::append_once`]):
    /// an `Append` that also enters the session's window of recent ids.
    AppendOnce {
        /// The message's role.
        role: &'a str,
        /// The message's content.
        content: &'a str,
        /// The caller's id for the message.
        id: &'a str,
    },
    /// 17: a batch appended under the caller's id for it
    /// ([`crate::LogStore::append_batch_once`]): an `AppendBatch` that also enters the window.
    AppendBatchOnce {
        /// The messages, in order (1 to 4096).
        #[serde(borrow)]
        messages: Vec<BatchMessage<'a>>,
        /// The caller's id for the batch.
        id: &'a str,
    },
    /// 18: the session archived (`true`: left out of listings and search) or brought back.
    SetArchived {
        /// Archived from now on.
        archived: bool,
    },
}

impl<'a> Event<'a> {
    /// The role and content of message `index` of a record that holds messages: an `Append`,
    /// `AppendOnce` or `UpdateLast` (index 0) or an `AppendBatch` or `AppendBatchOnce`. `None`
    /// for any other event.
    pub fn message(&self, index: usize) -> Option<(&'a str, &'a str)> {
        match self {
            Event::Append { role, content }
            | Event::AppendOnce { role, content, .. }
            | Event::UpdateLast { role, content }
                if index == 0 =>
            {
                Some((role, content))
            }
            Event::AppendBatch { messages } | Event::AppendBatchOnce { messages, .. } => {
                messages.get(index).map(|m| (m.role, m.content))
            }
            _ => None,
        }
    }
}

/// One message of an [`Event::AppendBatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMessage<'a> {
    /// The message's role.
    pub role: &'a str,
    /// The message's content.
    pub content: &'a str,
}

/// A session's metadata as written by compaction (see [`Event::Snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot<'a> {
    /// When the session was created, µs since the epoch.
    pub created_at: i64,
    /// Its last activity, µs since the epoch.
    pub last_activity: i64,
    /// Its name.
    #[serde(borrow)]
    pub name: Option<&'a str>,
    /// Its agent alias.
    #[serde(borrow)]
    pub agent_alias: Option<&'a str>,
    /// Its channel reference.
    #[serde(borrow)]
    pub channel_id: Option<&'a str>,
    /// Its room.
    #[serde(borrow)]
    pub room_id: Option<&'a str>,
    /// Its sender.
    #[serde(borrow)]
    pub sender_id: Option<&'a str>,
    /// Its state.
    pub state: &'a str,
    /// Its turn id.
    #[serde(borrow)]
    pub turn_id: Option<&'a str>,
    /// When its `running` state began, µs since the epoch.
    pub turn_started_at: Option<i64>,
    /// How many live messages precede this record in the segment; a check on replay.
    pub message_count: u64,
    /// For a fork: its source's key (the `Fork` record it replaced is gone).
    #[serde(borrow)]
    pub fork_source: Option<&'a str>,
    /// For a fork: the source's last event it shares (0 when `fork_source` is none).
    pub fork_at_seq: u64,
    /// The session is archived (format version 4).
    pub archived: bool,
    /// The digests of the ids of its last identified appends, oldest first (format version
    /// 4; docs/FORMAT.md gives the digest).
    pub recent_ids: Vec<u128>,
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
}

/// Appends the payload of `event` to `out`.
pub(crate) fn encode_event_into(event: &Event<'_>, out: &mut Vec<u8>) {
    // Encoding into a Vec cannot fail: every field is a plain integer, string or option.
    bincode::serde::encode_into_std_write(event, out, bincode_config())
        .expect("encoding an event into memory cannot fail");
}

/// Encodes an event as a record payload.
pub fn encode_event(event: &Event<'_>) -> Vec<u8> {
    // Encoding into a Vec cannot fail: every field is a plain integer, string or option.
    bincode::serde::encode_to_vec(event, bincode_config())
        .expect("encoding an event into memory cannot fail")
}

/// The `Snapshot` fields as format versions 1 to 3 wrote them: up to `message_count` (version
/// 1), then the fork's origin (versions 2 and 3). Version 4 added `archived` and `recent_ids`.
#[derive(Deserialize)]
struct SnapshotBefore4<'a> {
    created_at: i64,
    last_activity: i64,
    #[serde(borrow)]
    name: Option<&'a str>,
    #[serde(borrow)]
    agent_alias: Option<&'a str>,
    #[serde(borrow)]
    channel_id: Option<&'a str>,
    #[serde(borrow)]
    room_id: Option<&'a str>,
    #[serde(borrow)]
    sender_id: Option<&'a str>,
    state: &'a str,
    #[serde(borrow)]
    turn_id: Option<&'a str>,
    turn_started_at: Option<i64>,
    message_count: u64,
}

/// The fork's origin, as versions 2 and 3 wrote it after [`SnapshotBefore4`]'s fields.
#[derive(Deserialize)]
struct ForkFields<'a> {
    #[serde(borrow)]
    fork_source: Option<&'a str>,
    fork_at_seq: u64,
}

/// The tag of [`Event::Snapshot`].
const SNAPSHOT_TAG: [u8; 4] = 9u32.to_le_bytes();

/// Decodes a `Snapshot` payload of an older format version (tag 9, then the version 1 fields,
/// then for versions 2 and 3 the fork's origin): without the fields added since, which read
/// as "not archived" and "no ids".
fn decode_older_snapshot(payload: &[u8]) -> Option<Event<'_>> {
    let body = payload.strip_prefix(&SNAPSHOT_TAG)?;
    let config = bincode_config();
    let (s, used): (SnapshotBefore4<'_>, usize) =
        bincode::serde::borrow_decode_from_slice(body, config).ok()?;
    let rest = body.get(used..)?;
    let fork = if rest.is_empty() {
        ForkFields {
            fork_source: None,
            fork_at_seq: 0,
        }
    } else {
        let (fork, used): (ForkFields<'_>, usize) =
            bincode::serde::borrow_decode_from_slice(rest, config).ok()?;
        if used != rest.len() {
            return None;
        }
        fork
    };
    Some(Event::Snapshot(Snapshot {
        created_at: s.created_at,
        last_activity: s.last_activity,
        name: s.name,
        agent_alias: s.agent_alias,
        channel_id: s.channel_id,
        room_id: s.room_id,
        sender_id: s.sender_id,
        state: s.state,
        turn_id: s.turn_id,
        turn_started_at: s.turn_started_at,
        message_count: s.message_count,
        fork_source: fork.fork_source,
        fork_at_seq: fork.fork_at_seq,
        archived: false,
        recent_ids: Vec::new(),
    }))
}

/// Decodes a record payload. The whole payload must be one event; trailing bytes are an error.
/// A `Snapshot` written by an older format version decodes with the fields it lacks empty.
pub fn decode_event(payload: &[u8]) -> Result<Event<'_>, String> {
    let decoded: Result<(Event<'_>, usize), _> =
        bincode::serde::borrow_decode_from_slice(payload, bincode_config());
    let (event, used) = match decoded {
        Ok(decoded) => decoded,
        Err(e) => match decode_older_snapshot(payload) {
            Some(event) => (event, payload.len()),
            None => return Err(format!("payload does not decode: {e}")),
        },
    };
    if used != payload.len() {
        return Err(format!(
            "payload has {} bytes after its event",
            payload.len() - used
        ));
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn event_bytes_match_the_documented_layout() {
        // docs/FORMAT.md: tag u32, then string as u64 length + bytes.
        let bytes = encode_event(&Event::Append {
            role: "user",
            content: "hi",
        });
        let mut expected = vec![0, 0, 0, 0];
        expected.extend_from_slice(&4u64.to_le_bytes());
        expected.extend_from_slice(b"user");
        expected.extend_from_slice(&2u64.to_le_bytes());
        expected.extend_from_slice(b"hi");
        assert_eq!(bytes, expected);
        let bytes = encode_event(&Event::SetName { name: None });
        assert_eq!(bytes, vec![5, 0, 0, 0, 0]);
        let bytes = encode_event(&Event::AppendBatch {
            messages: vec![BatchMessage {
                role: "tool",
                content: "ok",
            }],
        });
        let mut expected = vec![10, 0, 0, 0];
        expected.extend_from_slice(&1u64.to_le_bytes());
        expected.extend_from_slice(&4u64.to_le_bytes());
        expected.extend_from_slice(b"tool");
        expected.extend_from_slice(&2u64.to_le_bytes());
        expected.extend_from_slice(b"ok");
        assert_eq!(bytes, expected);
        let bytes = encode_event(&Event::SetName { name: Some("n") });
        assert_eq!(bytes, vec![5, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, b'n']);
    }

    #[test]
    fn snapshots_of_older_versions_decode_with_the_new_fields_empty() {
        let fields = |tail: &[u8]| {
            let mut bytes = SNAPSHOT_TAG.to_vec();
            bytes.extend_from_slice(&5i64.to_le_bytes()); // created_at
            bytes.extend_from_slice(&6i64.to_le_bytes()); // last_activity
            bytes.extend_from_slice(&[0; 5]); // name .. sender_id: none
            bytes.extend_from_slice(&4u64.to_le_bytes());
            bytes.extend_from_slice(b"idle");
            bytes.extend_from_slice(&[0, 0]); // turn_id, turn_started_at: none
            bytes.extend_from_slice(&3u64.to_le_bytes()); // message_count
            bytes.extend_from_slice(tail);
            bytes
        };
        let expected = |fork_source, fork_at_seq| {
            Event::Snapshot(Snapshot {
                created_at: 5,
                last_activity: 6,
                name: None,
                agent_alias: None,
                channel_id: None,
                room_id: None,
                sender_id: None,
                state: "idle",
                turn_id: None,
                turn_started_at: None,
                message_count: 3,
                fork_source,
                fork_at_seq,
                archived: false,
                recent_ids: Vec::new(),
            })
        };
        assert_eq!(decode_event(&fields(&[])), Ok(expected(None, 0)));
        let mut fork = vec![1];
        fork.extend_from_slice(&1u64.to_le_bytes());
        fork.push(b's');
        fork.extend_from_slice(&9u64.to_le_bytes());
        assert_eq!(decode_event(&fields(&fork)), Ok(expected(Some("s"), 9)));
        // Version 4 adds the archived flag and the ids' digests.
        let mut now = fork.clone();
        now.push(1);
        now.extend_from_slice(&1u64.to_le_bytes());
        now.extend_from_slice(&7u128.to_le_bytes());
        let bytes = fields(&now);
        let Ok(Event::Snapshot(s)) = decode_event(&bytes) else {
            panic!("a version 4 snapshot decodes");
        };
        assert!(s.archived);
        assert_eq!(s.recent_ids, vec![7]);
        assert_eq!(encode_event(&Event::Snapshot(s)), fields(&now));
        // Anything else after the fork fields is refused.
        fork.push(2);
        assert!(decode_event(&fields(&fork)).is_err());
    }

    #[test]
    fn trailing_payload_bytes_are_refused() {
        let mut payload = encode_event(&Event::Clear);
        payload.push(0);
        assert!(decode_event(&payload).is_err());
    }

    proptest! {
        #[test]
        fn events_round_trip(
            role in ".{0,20}",
            content in ".{0,200}",
            name in proptest::option::of(".{0,10}"),
            n: u64,
            t: i64,
        ) {
            let events = [
                Event::Append { role: &role, content: &content },
                Event::UpdateLast { role: &role, content: &content },
                Event::RemoveLast,
                Event::Clear,
                Event::Delete,
                Event::SetName { name: name.as_deref() },
                Event::SetAlias { alias: name.as_deref() },
                Event::SetContext {
                    channel_id: name.as_deref(), room_id: None, sender_id: Some(&role),
                },
                Event::SetState { state: &role, turn_id: name.as_deref() },
                Event::Snapshot(Snapshot {
                    created_at: t, last_activity: t, name: name.as_deref(), agent_alias: None,
                    channel_id: Some(&content), room_id: None, sender_id: None, state: &role,
                    turn_id: None, turn_started_at: Some(t), message_count: n,
                    fork_source: name.as_deref(), fork_at_seq: n,
                    archived: n % 2 == 0, recent_ids: vec![u128::from(n), u128::MAX],
                }),
                Event::AppendBatch { messages: vec![
                    BatchMessage { role: &role, content: &content },
                    BatchMessage { role: &content, content: &role },
                ] },
                Event::AppendOnce { role: &role, content: &content, id: &content },
                Event::AppendBatchOnce {
                    messages: vec![BatchMessage { role: &role, content: &content }],
                    id: &role,
                },
                Event::SetArchived { archived: n % 2 == 1 },
            ];
            for event in events {
                let bytes = encode_event(&event);
                prop_assert_eq!(decode_event(&bytes), Ok(event));
            }
        }
    }
}

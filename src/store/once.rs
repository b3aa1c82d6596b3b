//! Exactly-once appends: [`LogStore::append_once`] and [`LogStore::append_batch_once`], which
//! write nothing for an id the session's window of recent ids holds (`crate::id_window`).

use crate::error::{Error, Result};
use crate::id_window::{id_digest, MESSAGE_ID_MAX_BYTES};
use crate::message::ChatMessage;
use crate::record::Event;

use super::commit::Decision;
use super::{batch, LogStore};

// The message below names the limit.
const _: () = assert!(MESSAGE_ID_MAX_BYTES == 1024);

/// Checks a caller's message or batch id.
fn check_id(id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        "an id must not be empty"
    } else if id.len() > MESSAGE_ID_MAX_BYTES {
        "an id must be at most 1024 bytes"
    } else {
        return Ok(());
    };
    Err(Error::InvalidMessageId {
        len: id.len(),
        reason,
    })
}

impl LogStore {
    /// Appends `message` exactly once per `message_id`: returns `Ok(true)` when it was written,
    /// `Ok(false)` (writing nothing) when this session already holds an append with this id
    /// among its last [`crate::Options::idempotency_window`] identified appends
    /// (`append_once` and `append_batch_once` calls that wrote). For channels that deliver a
    /// message again (a webhook retried, a gateway restarted mid-turn) and for retries of a
    /// write that timed out: give the channel's own id for the message.
    ///
    /// The check and the write are one step under the session's writer lock, so two
    /// concurrent calls with one id write once. The window is rebuilt from the log: it survives
    /// reopen, compaction and crashes (a write that was acknowledged is remembered; one cut
    /// off by a crash was never acknowledged and may be sent again). Ids older than the window
    /// are forgotten: with a window of 8, the 9th id back is accepted again. Removing or
    /// clearing the message does not forget its id; a fork starts with an empty window; a
    /// session deleted and created again starts a new one. An `append_once` to an archived
    /// session brings it back, like any append.
    ///
    /// [`crate::Error::InvalidMessageId`] for an empty id or one longer than
    /// [`crate::MESSAGE_ID_MAX_BYTES`]; otherwise the errors of
    /// [`crate::SessionBackend::append`].
    pub fn append_once(
        &self,
        session_key: &str,
        message: &ChatMessage,
        message_id: &str,
    ) -> Result<bool> {
        check_id(message_id)?;
        let event = Event::AppendOnce {
            role: &message.role,
            content: &message.content,
            id: message_id,
        };
        self.write_once(session_key, &event, message_id)
    }

    /// [`LogStore::append_once`] for a batch ([`LogStore::append_batch`]: all of its messages
    /// or none, in one record): `Ok(true)` when written, `Ok(false)` when the session's window
    /// holds `batch_id` (message and batch ids share the window). An empty slice writes
    /// nothing and returns `Ok(false)`.
    pub fn append_batch_once(
        &self,
        session_key: &str,
        messages: &[ChatMessage],
        batch_id: &str,
    ) -> Result<bool> {
        check_id(batch_id)?;
        let Some(messages) = batch(messages)? else {
            return Ok(false);
        };
        let event = Event::AppendBatchOnce {
            messages,
            id: batch_id,
        };
        self.write_once(session_key, &event, batch_id)
    }

    fn write_once(&self, session_key: &str, event: &Event<'_>, id: &str) -> Result<bool> {
        let digest = id_digest(id);
        self.inner.commit(session_key, true, event, |view| {
            if view.is_some_and(|v| v.recent_ids.contains(digest)) {
                Decision::Skip(false)
            } else {
                Decision::Write(true)
            }
        })
    }
}

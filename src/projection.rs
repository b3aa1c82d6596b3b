//! The in-memory state of one session: a pure fold of its events.
//!
//! [`SessionView::apply`] is the only place that decides what an event does. The store calls it
//! for each record it writes, and open calls it for each record it replays, so the projection
//! rebuilt on open answers every query exactly as the live one did. Message bytes are not kept
//! here: each live message is a [`MessageLoc`] pointing at the record that holds its content.

use chrono::{DateTime, Utc};

use crate::backend::{SessionMetadata, SessionState};
use crate::id_window::{id_digest, IdWindow};
use crate::location::{MessageLoc, RecordLoc, BATCH_MESSAGES_MAX, OFFSET_MASK};
use crate::parked::{Block, Home};
use crate::record::{Event, Snapshot};

/// The state a session is in when it is created.
pub const INITIAL_STATE: &str = "idle";
/// The state that marks a turn in progress.
pub const RUNNING_STATE: &str = "running";

/// True when something deleted or cleared at `deleted_at` (µs since the epoch) can still be
/// restored.
pub(crate) fn within_retention(retention: std::time::Duration, deleted_at: i64) -> bool {
    let age = chrono::Utc::now()
        .timestamp_micros()
        .saturating_sub(deleted_at);
    u128::try_from(age).unwrap_or(0) < retention.as_micros()
}

/// One session as its events left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    /// The session key, byte for byte.
    pub key: String,
    /// False until the first record of the session is applied.
    pub exists: bool,
    /// True once a `Delete` record was applied; nothing may follow it.
    pub deleted: bool,
    /// When the session was created, µs since the epoch.
    pub created_at: i64,
    /// Last activity, µs since the epoch.
    pub last_activity: i64,
    /// Human-readable name.
    pub name: Option<String>,
    /// Agent alias.
    pub agent_alias: Option<String>,
    /// Channel reference.
    pub channel_id: Option<String>,
    /// Room or thread.
    pub room_id: Option<String>,
    /// Sender.
    pub sender_id: Option<String>,
    /// State: `idle`, `running`, `error`, ...
    pub state: String,
    /// Turn id as given.
    pub turn_id: Option<String>,
    /// When the current `running` state began.
    pub turn_started_at: Option<i64>,
    /// The live messages, in order.
    pub messages: Vec<MessageLoc>,
    /// Bytes of all records applied since the last compaction (live and dead).
    pub bytes_written: u64,
    /// Bytes of the records holding the live messages.
    pub live_bytes: u64,
    /// The messages the last `Clear` removed, kept for `undo_clear` (until a compaction after
    /// the tombstone retention drops them).
    pub cleared: Vec<MessageLoc>,
    /// That `Clear`'s sequence number and time; `None` when there is nothing to undo.
    pub cleared_by: Option<(u64, i64)>,
    /// When the session was deleted (µs since the epoch), if it is.
    pub deleted_at: i64,
    /// The session it was forked from, and the source's last event it includes.
    pub fork_origin: Option<(String, u64)>,
    /// The sequence number of the last record applied.
    pub last_seq: u64,
    /// Archived: left out of listings and search until unarchived or appended to.
    pub archived: bool,
    /// The ids of its last identified appends, for `append_once`.
    pub recent_ids: IdWindow,
    /// Where a checkpoint holds the message locations: parked there (`messages` and `cleared`
    /// are empty meanwhile; only the store's first touch of the session reads them back, and
    /// nothing is applied to a parked view), or an image of what is in memory (anything that
    /// may change the locations forgets it), or nowhere the store reads.
    pub home: Home,
}

/// Converts stored microseconds to a time. Every stored time was checked by
/// [`SessionView::apply`], so the fallback is never taken.
pub fn to_time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

fn owned(value: Option<&str>) -> Option<String> {
    value.map(str::to_owned)
}

impl SessionView {
    /// A session that has no record yet, with a window of the default size (for tests).
    #[cfg(test)]
    pub fn new(key: &str) -> SessionView {
        SessionView::with_window(key, crate::id_window::IDEMPOTENCY_WINDOW_DEFAULT)
    }

    /// A session that has no record yet, whose window keeps `window` ids.
    pub fn with_window(key: &str, window: usize) -> SessionView {
        SessionView {
            key: key.to_owned(),
            state: INITIAL_STATE.to_owned(),
            ..SessionView::empty(window)
        }
    }

    /// [`SessionView::with_window`] with an empty key and state, for a decoder to fill in
    /// (it allocates nothing).
    pub(crate) fn empty(window: usize) -> SessionView {
        SessionView {
            key: String::new(),
            exists: false,
            deleted: false,
            created_at: 0,
            last_activity: 0,
            name: None,
            agent_alias: None,
            channel_id: None,
            room_id: None,
            sender_id: None,
            state: String::new(),
            turn_id: None,
            turn_started_at: None,
            messages: Vec::new(),
            bytes_written: 0,
            live_bytes: 0,
            cleared: Vec::new(),
            cleared_by: None,
            deleted_at: 0,
            fork_origin: None,
            last_seq: 0,
            archived: false,
            recent_ids: IdWindow::new(window),
            home: Home::Memory,
        }
    }

    /// Applies one event written at `ts` (µs) and stored at `at`. An error means the event
    /// cannot follow the session's history (the store never writes such a record), so the
    /// record is damage.
    pub fn apply(&mut self, ts: i64, event: &Event<'_>, at: RecordLoc) -> Result<(), String> {
        if self.parked().is_some() {
            // The store reads a session's locations back before it writes to it.
            return Err("event applied to a session whose message locations are parked".into());
        }
        match (self.deleted, event) {
            (true, Event::Restore) => {}
            (true, _) => return Err("record after the session's delete record".into()),
            (false, Event::Restore) => return Err("restore of a session that is live".into()),
            _ => {}
        }
        if DateTime::from_timestamp_micros(ts).is_none() {
            return Err(format!("timestamp {ts} is out of range"));
        }
        // Check first, so that a refused event leaves the view untouched.
        match event {
            Event::UpdateLast { .. } | Event::RemoveLast if self.messages.is_empty() => {
                return Err("update_last or remove_last on a session without messages".into());
            }
            Event::UndoClear if self.cleared.is_empty() => {
                return Err("undo of a clear that removed nothing".into());
            }
            Event::Trim { count, .. }
                if *count == 0
                    || usize::try_from(*count).map_or(true, |c| c > self.messages.len()) =>
            {
                return Err(format!(
                    "trim of {count} messages from a session of {}",
                    self.messages.len()
                ));
            }
            Event::AppendBatch { messages } | Event::AppendBatchOnce { messages, .. }
                if messages.is_empty() || messages.len() > BATCH_MESSAGES_MAX =>
            {
                return Err(format!("batch of {} messages", messages.len()));
            }
            _ if at.offset > OFFSET_MASK => {
                return Err(format!("record offset {} beyond 1 TiB", at.offset));
            }
            Event::Snapshot(snapshot) => self.check_snapshot(snapshot)?,
            _ => {}
        }
        let metadata_only = matches!(
            event,
            Event::SetName { .. }
                | Event::SetAlias { .. }
                | Event::SetContext { .. }
                | Event::SetState { .. }
                | Event::SetArchived { .. }
        );
        if !metadata_only {
            // The locations may change (and a deleted session is never parked: a restore
            // applies to it without reading anything back).
            self.home = Home::Memory;
        }
        if !self.exists {
            self.exists = true;
            self.created_at = ts;
            self.last_activity = ts;
        }
        self.last_seq = self.last_seq.max(at.seq);
        if !matches!(event, Event::Snapshot(_)) {
            // A compaction's snapshot is no dead weight: the next compaction writes one too.
            self.bytes_written += u64::from(at.len);
        }
        let here = MessageLoc::single(at.segment, at.len, at.offset, ts);
        match event {
            Event::AppendOnce { id, .. } | Event::AppendBatchOnce { id, .. } => {
                self.recent_ids.push(id_digest(id));
            }
            _ => {}
        }
        match event {
            Event::Append { .. } | Event::AppendOnce { .. } => {
                self.messages.push(here);
                self.live_bytes += u64::from(here.len);
                self.last_activity = ts;
                self.archived = false;
            }
            Event::AppendBatch { messages } | Event::AppendBatchOnce { messages, .. } => {
                self.archived = false;
                let count = messages.len();
                for index in 0..count {
                    let loc = MessageLoc::in_batch(at.segment, at.len, at.offset, ts, index, count);
                    self.live_bytes += loc.weight();
                    self.messages.push(loc);
                }
                self.last_activity = ts;
            }
            Event::UpdateLast { .. } => {
                if let Some(last) = self.messages.last_mut() {
                    self.live_bytes =
                        self.live_bytes.saturating_sub(last.weight()) + u64::from(here.len);
                    *last = MessageLoc {
                        created_at: last.created_at,
                        ..here
                    };
                }
                self.last_activity = ts;
            }
            Event::RemoveLast => {
                if let Some(last) = self.messages.pop() {
                    self.live_bytes = self.live_bytes.saturating_sub(last.weight());
                }
            }
            Event::Clear => {
                if !self.messages.is_empty() {
                    // Kept for undo_clear; what an earlier clear kept is dropped.
                    self.cleared = std::mem::take(&mut self.messages);
                    self.cleared_by = Some((at.seq, ts));
                    self.live_bytes = 0;
                    self.last_activity = ts;
                }
            }
            Event::UndoClear => {
                let mut restored = std::mem::take(&mut self.cleared);
                restored.append(&mut self.messages);
                self.messages = restored;
                self.live_bytes = self.messages.iter().map(MessageLoc::weight).sum();
                self.cleared_by = None;
                self.last_activity = ts;
            }
            Event::Delete | Event::Expire { .. } => {
                // The messages stay, for restore_session, until the session is reclaimed.
                self.deleted = true;
                self.deleted_at = ts;
            }
            Event::Trim { count, .. } => {
                let count = usize::try_from(*count)
                    .unwrap_or(usize::MAX)
                    .min(self.messages.len());
                self.messages.drain(..count);
                self.live_bytes = self.messages.iter().map(MessageLoc::weight).sum();
            }
            Event::Restore => self.deleted = false,
            Event::Fork { source, at_seq } => {
                self.begin_fork(source, *at_seq, ts);
                // Nothing of the shared bytes is dead.
                self.bytes_written = self.live_bytes + u64::from(at.len);
            }
            Event::SetArchived { archived } => self.archived = *archived,
            Event::SetName { name } => self.name = owned(*name),
            Event::SetAlias { alias } => self.agent_alias = owned(*alias),
            Event::SetContext {
                channel_id,
                room_id,
                sender_id,
            } => {
                for (stored, given) in [
                    (&mut self.channel_id, channel_id),
                    (&mut self.room_id, room_id),
                    (&mut self.sender_id, sender_id),
                ] {
                    if let Some(value) = given {
                        *stored = Some((*value).to_owned());
                    }
                }
            }
            Event::SetState { state, turn_id } => {
                self.state = (*state).to_owned();
                self.turn_id = owned(*turn_id);
                self.turn_started_at = (*state == RUNNING_STATE).then_some(ts);
            }
            Event::Snapshot(s) => {
                self.created_at = s.created_at;
                self.last_activity = s.last_activity;
                self.name = owned(s.name);
                self.agent_alias = owned(s.agent_alias);
                self.channel_id = owned(s.channel_id);
                self.room_id = owned(s.room_id);
                self.sender_id = owned(s.sender_id);
                self.state = s.state.to_owned();
                self.turn_id = owned(s.turn_id);
                self.turn_started_at = s.turn_started_at;
                self.fork_origin = s
                    .fork_source
                    .map(|source| (source.to_owned(), s.fork_at_seq));
                self.archived = s.archived;
                self.recent_ids.replace(&s.recent_ids);
            }
        }
        Ok(())
    }

    /// Makes this view (a source's, as it was after its event `at_seq`) the start of a fork of
    /// `source` at `ts`: the history it shares stays; none of the source's undo state, its
    /// archive flag or its window of ids (the fork's own appends fill its window).
    pub fn begin_fork(&mut self, source: &str, at_seq: u64, ts: i64) {
        self.fork_origin = Some((source.to_owned(), at_seq));
        self.created_at = ts;
        self.last_activity = ts;
        self.cleared.clear();
        self.cleared_by = None;
        self.archived = false;
        self.recent_ids.clear();
        self.home = Home::Memory;
    }

    fn check_snapshot(&self, s: &Snapshot<'_>) -> Result<(), String> {
        if usize::try_from(s.message_count).ok() != Some(self.messages.len()) {
            return Err(format!(
                "snapshot expects {} messages, {} precede it",
                s.message_count,
                self.messages.len()
            ));
        }
        for t in [Some(s.created_at), Some(s.last_activity), s.turn_started_at]
            .into_iter()
            .flatten()
        {
            if DateTime::from_timestamp_micros(t).is_none() {
                return Err(format!("snapshot time {t} is out of range"));
            }
        }
        Ok(())
    }

    /// The metadata as a compaction writes it, with the window of recent ids.
    pub fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            recent_ids: self.recent_ids.digests().collect(),
            ..self.metadata_snapshot()
        }
    }

    /// [`SessionView::snapshot`] without the ids (which it does not copy).
    fn metadata_snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            created_at: self.created_at,
            last_activity: self.last_activity,
            name: self.name.as_deref(),
            agent_alias: self.agent_alias.as_deref(),
            channel_id: self.channel_id.as_deref(),
            room_id: self.room_id.as_deref(),
            sender_id: self.sender_id.as_deref(),
            state: &self.state,
            turn_id: self.turn_id.as_deref(),
            turn_started_at: self.turn_started_at,
            message_count: self.message_count() as u64,
            fork_source: self.fork_origin.as_ref().map(|(source, _)| source.as_str()),
            fork_at_seq: self.fork_origin.as_ref().map_or(0, |(_, at)| *at),
            archived: self.archived,
            recent_ids: Vec::new(),
        }
    }

    /// The session's row in `list_sessions_with_metadata`.
    pub fn metadata(&self) -> SessionMetadata {
        SessionMetadata {
            key: self.key.clone(),
            name: self.name.clone(),
            created_at: to_time(self.created_at),
            last_activity: to_time(self.last_activity),
            message_count: self.message_count(),
            agent_alias: self.agent_alias.clone(),
            channel_id: self.channel_id.clone(),
            room_id: self.room_id.clone(),
            sender_id: self.sender_id.clone(),
        }
    }

    /// The session's state as `get_session_state` returns it.
    pub fn session_state(&self) -> SessionState {
        SessionState {
            state: self.state.clone(),
            turn_id: self.turn_id.clone(),
            turn_started_at: self.turn_started_at.map(to_time),
        }
    }

    /// The encoded size of the snapshot a compaction would write after `event`, without its
    /// ids (at most 16 bytes each, bounded by the window): every metadata string must fit in
    /// one record together.
    pub fn snapshot_len_after(&self, event: &Event<'_>) -> usize {
        let mut snapshot = self.metadata_snapshot();
        match event {
            Event::SetName { name } => snapshot.name = *name,
            Event::SetAlias { alias } => snapshot.agent_alias = *alias,
            Event::SetContext {
                channel_id,
                room_id,
                sender_id,
            } => {
                snapshot.channel_id = channel_id.or(snapshot.channel_id);
                snapshot.room_id = room_id.or(snapshot.room_id);
                snapshot.sender_id = sender_id.or(snapshot.sender_id);
            }
            Event::SetState { state, turn_id } => {
                snapshot.state = state;
                snapshot.turn_id = *turn_id;
            }
            _ => {}
        }
        // Fixed fields: tag 4, times 3 x 9, counts 2 x 8, the archived flag 1 and the ids'
        // count 8, strings' length prefixes and option tags; the window's ids, 16 bytes each,
        // with the one this event enters.
        let entered = usize::from(matches!(
            event,
            Event::AppendOnce { .. } | Event::AppendBatchOnce { .. }
        ));
        let ids = (self.recent_ids.len() + entered).min(self.recent_ids.cap());
        let strings = [
            snapshot.name,
            snapshot.agent_alias,
            snapshot.channel_id,
            snapshot.room_id,
            snapshot.sender_id,
            Some(snapshot.state),
            snapshot.turn_id,
            snapshot.fork_source,
        ];
        81 + 16 * ids
            + strings
                .iter()
                .map(|s| 9 + s.map_or(0, str::len))
                .sum::<usize>()
    }

    /// The last clear can still be undone: it is younger than `retention`.
    pub fn clear_undoable(&self, retention: std::time::Duration) -> bool {
        self.cleared_by
            .is_some_and(|(_, at)| within_retention(retention, at))
    }

    /// Bytes of the records of the messages kept for `undo_clear`.
    pub fn cleared_bytes(&self) -> u64 {
        match self.parked() {
            Some(block) => block.cleared_bytes(),
            None => self.cleared.iter().map(MessageLoc::weight).sum(),
        }
    }

    /// Its live messages, whether their locations are in memory or parked.
    pub fn message_count(&self) -> usize {
        self.parked().map_or(self.messages.len(), Block::messages)
    }

    /// The block its locations are parked in, if they are.
    pub(crate) fn parked(&self) -> Option<&Block> {
        match &self.home {
            Home::Parked(block) => Some(block),
            _ => None,
        }
    }

    /// The block its locations in memory are an image of, if any.
    pub(crate) fn image(&self) -> Option<&Block> {
        match &self.home {
            Home::Image(block) => Some(block),
            _ => None,
        }
    }

    /// Reads back the locations when they are parked, to be kept in memory for good
    /// (nothing holds the checkpoint file open for them any more); false if they cannot be.
    pub(crate) fn read_back(&mut self) -> bool {
        let Some(block) = self.parked() else {
            return true;
        };
        match block.read() {
            Ok((messages, cleared)) => {
                self.unpark(messages, cleared);
                self.home = Home::Memory;
                true
            }
            Err(_) => false,
        }
    }

    /// Puts back the locations the parked block holds, read from it, and keeps it as their
    /// image.
    pub(crate) fn unpark(&mut self, messages: Vec<MessageLoc>, cleared: Vec<MessageLoc>) {
        self.messages = messages;
        self.cleared = cleared;
        if let Home::Parked(block) = std::mem::take(&mut self.home) {
            self.home = Home::Image(block);
        }
    }

    /// Drops the locations in memory when they are still their image's and it can be read
    /// (returns how many bytes of the checkpoint's they were), to be read back from it at the
    /// next touch.
    pub(crate) fn park(&mut self) -> Option<u64> {
        let len = self.image().filter(|image| image.attached())?.len();
        if let Home::Image(block) = std::mem::take(&mut self.home) {
            self.home = Home::Parked(block);
        }
        self.messages = Vec::new();
        self.cleared = Vec::new();
        Some(len)
    }

    /// Bytes of records a compaction would drop (messages kept for `undo_clear` are not
    /// counted: a compaction within the retention keeps them).
    pub fn dead_bytes(&self) -> u64 {
        self.bytes_written
            .saturating_sub(self.live_bytes)
            .saturating_sub(self.cleared_bytes())
    }

    /// Installs the message locations of a generation a compaction just wrote, with the
    /// messages it kept for `undo_clear` (none if it dropped them): nothing in it is dead.
    pub fn install_compacted(&mut self, messages: Vec<MessageLoc>, cleared: Vec<MessageLoc>) {
        if cleared.is_empty() {
            self.cleared_by = None;
        }
        let written: u64 = messages
            .iter()
            .chain(&cleared)
            .map(MessageLoc::weight)
            .sum();
        self.cleared = cleared;
        self.install_generation(messages, written);
    }

    /// Installs message locations and the bytes written since the last compaction.
    pub fn install_generation(&mut self, messages: Vec<MessageLoc>, bytes_written: u64) {
        self.home = Home::Memory;
        self.live_bytes = messages.iter().map(MessageLoc::weight).sum();
        self.messages = messages;
        self.bytes_written = bytes_written;
    }

    /// True when the session is live (created and not deleted).
    pub fn is_live(&self) -> bool {
        self.exists && !self.deleted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: RecordLoc = RecordLoc {
        seq: 1,
        segment: 1,
        offset: 100,
        len: 40,
    };

    #[test]
    fn the_snapshot_bound_covers_a_full_window_of_ids() {
        let mut view = SessionView::with_window("k", 64);
        view.name = Some("a name".into());
        for i in 0..100 {
            view.recent_ids.push(id_digest(&i.to_string()));
        }
        let written = crate::payload::encode_event(&Event::Snapshot(view.snapshot())).len();
        let bound = view.snapshot_len_after(&Event::SetArchived { archived: true });
        assert!(written <= bound, "{written} bytes written, {bound} bound");
        let mut short = SessionView::with_window("k", 64);
        short.recent_ids.push(id_digest("a"));
        let written = crate::payload::encode_event(&Event::Snapshot(short.snapshot())).len();
        let once = Event::AppendOnce {
            role: "user",
            content: "c",
            id: "b",
        };
        assert!(written + 16 <= short.snapshot_len_after(&once));
    }

    #[test]
    fn update_last_keeps_the_append_time() {
        let mut view = SessionView::new("k");
        let append = Event::Append {
            role: "user",
            content: "a",
        };
        view.apply(10, &append, AT).unwrap();
        let update = Event::UpdateLast {
            role: "user",
            content: "b",
        };
        view.apply(20, &update, RecordLoc { offset: 140, ..AT })
            .unwrap();
        assert_eq!(view.messages.len(), 1);
        assert_eq!(view.messages[0].created_at, 10);
        assert_eq!(view.messages[0].offset(), 140);
        assert_eq!(view.last_activity, 20);
    }

    #[test]
    fn events_on_an_empty_session_that_need_a_message_are_refused() {
        let mut view = SessionView::new("k");
        assert!(view.apply(1, &Event::RemoveLast, AT).is_err());
        let mut view = SessionView::new("k");
        let update = Event::UpdateLast {
            role: "r",
            content: "c",
        };
        assert!(view.apply(1, &update, AT).is_err());
    }

    #[test]
    fn nothing_may_follow_a_delete() {
        let mut view = SessionView::new("k");
        view.apply(1, &Event::Delete, AT).unwrap();
        assert!(view.apply(2, &Event::Clear, AT).is_err());
    }

    #[test]
    fn a_snapshot_with_the_wrong_count_is_refused() {
        let view = SessionView::new("k");
        let mut snapshot = view.snapshot();
        snapshot.message_count = 3;
        let event = Event::Snapshot(snapshot.clone());
        assert!(view.clone().apply(1, &event, AT).is_err());
    }
}

//! Paged, filtered listing of sessions ([`crate::LogStore::list_page`]): the query and the
//! page. The store keeps its live sessions in an index ordered by last activity, so a page
//! costs what it returns (plus the sessions a filter skips), not the number of sessions.

use chrono::{DateTime, Utc};

use crate::backend::SessionMetadata;
use crate::projection::SessionView;

/// Sessions returned per page when the query gives no limit.
pub const PAGE_LIMIT_DEFAULT: usize = 50;

/// Which sessions [`crate::LogStore::list_page`] returns. Every filter given must hold; the
/// default lists every live session that is not archived, most recent activity first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Only sessions with this agent alias.
    pub agent_alias: Option<String>,
    /// Only sessions with this channel reference.
    pub channel_id: Option<String>,
    /// Only sessions with this room or thread.
    pub room_id: Option<String>,
    /// Only sessions with this sender.
    pub sender_id: Option<String>,
    /// Only sessions in this state (`idle`, `running`, ...).
    pub state: Option<String>,
    /// Only sessions whose name starts with this.
    pub name_prefix: Option<String>,
    /// Only sessions active at this time or later.
    pub active_since: Option<DateTime<Utc>>,
    /// Only sessions whose last activity is before this time.
    pub active_before: Option<DateTime<Utc>>,
    /// At most this many sessions (default [`PAGE_LIMIT_DEFAULT`]; 0 means the default).
    pub limit: usize,
    /// Where to go on: the `next` of the previous page.
    pub cursor: Option<String>,
    /// `Some(true)`: only archived sessions ([`crate::LogStore::archive_session`]); `None`
    /// (the default) or `Some(false)`: only sessions that are not archived.
    pub archived: Option<bool>,
}

/// One page of sessions from [`crate::LogStore::list_page`].
#[derive(Debug, Clone)]
pub struct Page {
    /// The sessions, most recent activity first, ties by key.
    pub sessions: Vec<SessionMetadata>,
    /// The cursor for the next page; `None` when this page is the last.
    pub next: Option<String>,
}

impl ListQuery {
    /// True when the session passes every filter but the activity window (which the index
    /// walk applies).
    pub(crate) fn admits(&self, view: &SessionView) -> bool {
        let equal = |wanted: &Option<String>, held: &Option<String>| {
            wanted.is_none() || wanted.as_deref() == held.as_deref()
        };
        view.archived == self.archived.unwrap_or(false)
            && equal(&self.agent_alias, &view.agent_alias)
            && equal(&self.channel_id, &view.channel_id)
            && equal(&self.room_id, &view.room_id)
            && equal(&self.sender_id, &view.sender_id)
            && self.state.as_deref().is_none_or(|s| s == view.state)
            && self
                .name_prefix
                .as_deref()
                .is_none_or(|prefix| view.name.as_deref().is_some_and(|n| n.starts_with(prefix)))
    }
}

/// A cursor: the position (last activity, key) of the last session of a page.
pub(crate) fn encode_cursor(last_activity: i64, key: &str) -> String {
    format!("{last_activity}:{key}")
}

/// The position a cursor names, or `None` if it is not one [`encode_cursor`] made.
pub(crate) fn decode_cursor(cursor: &str) -> Option<(i64, String)> {
    let (at, key) = cursor.split_once(':')?;
    Some((at.parse().ok()?, key.to_owned()))
}

//! Archive, apart from delete: [`LogStore::archive_session`] and
//! [`LogStore::unarchive_session`].

use crate::error::Result;
use crate::record::Event;

use super::commit::Decision;
use super::LogStore;

impl LogStore {
    /// Archives a session: it keeps everything and still answers `load`, the getters and
    /// [`LogStore::list_page`] with [`crate::ListQuery::archived`] `Some(true)`, but
    /// `list_sessions`, `list_sessions_with_metadata`, `search` and `list_page` leave it out
    /// by default. An append to it (any of the append methods) brings it back; so does
    /// [`LogStore::unarchive_session`]. The session's `last_activity` does not change.
    /// Archiving is an event in the log ([`crate::EventKind::Archive`]), kept through
    /// compaction, undo and restore; a fork of an archived session is not archived. An archived
    /// session is live: the agent attribution methods, `cleanup_stale` and retention treat it
    /// as any other.
    ///
    /// `Ok(false)` for a missing session; `Ok(true)` otherwise (writing nothing when it is
    /// archived already).
    pub fn archive_session(&self, session_key: &str) -> Result<bool> {
        self.set_archived(session_key, true)
    }

    /// Brings an archived session back into listings and search. `Ok(false)` for a missing
    /// session; `Ok(true)` otherwise (writing nothing when it is not archived).
    pub fn unarchive_session(&self, session_key: &str) -> Result<bool> {
        self.set_archived(session_key, false)
    }

    /// True when the session exists and is archived.
    pub fn is_archived(&self, session_key: &str) -> bool {
        self.inner
            .with_view(session_key, |view| view.archived)
            .unwrap_or(false)
    }

    fn set_archived(&self, session_key: &str, archived: bool) -> Result<bool> {
        let event = Event::SetArchived { archived };
        self.inner
            .commit(session_key, false, &event, |view| match view {
                None => Decision::Skip(false),
                Some(v) if v.archived == archived => Decision::Skip(true),
                Some(_) => Decision::Write(true),
            })
    }
}

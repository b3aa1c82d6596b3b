//! [`SessionBackend`] for [`LogStore`]: the trait agent runtimes call, on top of the engine.

use crate::backend::{
    SessionBackend, SessionContext, SessionMetadata, SessionQuery, SessionState, TimestampedMessage,
};
use crate::message::ChatMessage;
use crate::projection::{to_time, SessionView, RUNNING_STATE};
use crate::record::Event;

use crate::health::Swallowed;

use super::commit::Decision;
use super::query::message;
use super::{now_micros, trimmed, LogStore, SEARCH_LIMIT_DEFAULT};

/// Shows the folder, the mode and how many sessions the store holds: enough to tell stores
/// apart in a log line, and lets a struct holding one derive `Debug`.
impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("dir", &self.inner.dir)
            .field("read_only", &self.inner.read_only)
            .field("sessions", &self.inner.sessions.read().len())
            .finish_non_exhaustive()
    }
}

impl SessionBackend for LogStore {
    /// Returns `[]` if the session's files cannot be read; the error is counted in
    /// [`LogStore::health`] and logged ([`LogStore::read_messages`] returns it instead).
    fn load(&self, session_key: &str) -> Vec<ChatMessage> {
        let read = self.inner.read(session_key, |len| 0..len, message);
        self.inner
            .monitor
            .note(Swallowed::Read, "load", Some(session_key), read)
            .unwrap_or_default()
    }

    /// Returns `[]` if the session's files cannot be read; the error is counted in
    /// [`LogStore::health`] and logged ([`LogStore::read_messages`] returns it instead).
    fn load_with_timestamps(&self, session_key: &str) -> Vec<TimestampedMessage> {
        let read = self.read_messages(session_key);
        self.inner
            .monitor
            .note(
                Swallowed::Read,
                "load_with_timestamps",
                Some(session_key),
                read,
            )
            .unwrap_or_default()
    }

    fn append(&self, session_key: &str, message: &ChatMessage) -> std::io::Result<()> {
        let event = Event::Append {
            role: &message.role,
            content: &message.content,
        };
        Ok(self
            .inner
            .commit(session_key, true, &event, |_| Decision::Write(()))?)
    }

    fn remove_last(&self, session_key: &str) -> std::io::Result<bool> {
        Ok(self
            .inner
            .commit(session_key, false, &Event::RemoveLast, |view| match view {
                Some(v) if !v.messages.is_empty() => Decision::Write(true),
                _ => Decision::Skip(false),
            })?)
    }

    fn update_last(&self, session_key: &str, message: &ChatMessage) -> std::io::Result<bool> {
        let event = Event::UpdateLast {
            role: &message.role,
            content: &message.content,
        };
        Ok(self
            .inner
            .commit(session_key, false, &event, |view| match view {
                Some(v) if !v.messages.is_empty() => Decision::Write(true),
                _ => Decision::Skip(false),
            })?)
    }

    fn list_sessions(&self) -> Vec<String> {
        self.inner
            .live_views(|view| (!view.archived).then(|| view.key.clone()))
    }

    fn list_sessions_with_metadata(&self) -> Vec<SessionMetadata> {
        self.inner.live_metadata()
    }

    fn compact(&self, session_key: &str) -> std::io::Result<()> {
        Ok(self.inner.compact(session_key)?)
    }

    fn cleanup_stale(&self, ttl_hours: u32) -> std::io::Result<usize> {
        let ttl = i64::from(ttl_hours).saturating_mul(3_600_000_000);
        let cutoff = now_micros().saturating_sub(ttl);
        let is_stale =
            |view: &SessionView| view.last_activity < cutoff && view.state != RUNNING_STATE;
        let candidates: Vec<String> = self
            .inner
            .live_views(|view| is_stale(view).then(|| view.key.clone()));
        let mut deleted = 0;
        for key in candidates {
            // Checked again under the session's writer lock: it may have moved on since.
            let removed = self
                .inner
                .commit(&key, false, &Event::Delete, |view| match view {
                    Some(v) if is_stale(v) => Decision::Write(true),
                    _ => Decision::Skip(false),
                })?;
            deleted += usize::from(removed);
        }
        Ok(deleted)
    }

    fn search(&self, query: &SessionQuery) -> Vec<SessionMetadata> {
        let limit = query.limit.unwrap_or(SEARCH_LIMIT_DEFAULT);
        let Some(keyword) = &query.keyword else {
            return self.inner.live_metadata().into_iter().take(limit).collect();
        };
        let found = self.inner.search_sessions(keyword, limit);
        self.inner
            .monitor
            .note(Swallowed::Read, "search", None, found)
            .unwrap_or_default()
    }

    fn clear_messages(&self, session_key: &str) -> std::io::Result<usize> {
        Ok(self
            .inner
            .commit(session_key, false, &Event::Clear, |view| match view {
                Some(v) if !v.messages.is_empty() => Decision::Write(v.messages.len()),
                _ => Decision::Skip(0),
            })?)
    }

    fn delete_session(&self, session_key: &str) -> std::io::Result<bool> {
        Ok(self
            .inner
            .commit(session_key, false, &Event::Delete, |view| match view {
                Some(_) => Decision::Write(true),
                None => Decision::Skip(false),
            })?)
    }

    fn clear_agent_attribution(&self, agent_alias: &str) -> std::io::Result<usize> {
        Ok(self.reattribute(agent_alias, None)?)
    }

    fn rename_agent_attribution(&self, from: &str, to: &str) -> std::io::Result<usize> {
        // A rename onto the same alias is no special case: each matching session gets the
        // record an alias setter would write, and the count is of them (as the SQLite and
        // JSONL stores count the rows they matched).
        Ok(self.reattribute(from, (!to.is_empty()).then_some(to))?)
    }

    fn count_agent_attribution(&self, agent_alias: &str) -> std::io::Result<usize> {
        Ok(self.attributed_to(agent_alias).len())
    }

    fn session_exists(&self, session_key: &str) -> bool {
        self.inner.with_view(session_key, |_| ()).is_some()
    }

    fn set_session_name(&self, session_key: &str, name: &str) -> std::io::Result<()> {
        let name = (!name.is_empty()).then_some(name);
        self.set_metadata(session_key, &Event::SetName { name })
    }

    fn get_session_name(&self, session_key: &str) -> std::io::Result<Option<String>> {
        Ok(self
            .inner
            .with_view(session_key, |v| v.name.clone())
            .flatten())
    }

    fn set_session_agent_alias(&self, session_key: &str, agent_alias: &str) -> std::io::Result<()> {
        let alias = (!agent_alias.is_empty()).then_some(agent_alias);
        self.set_metadata(session_key, &Event::SetAlias { alias })
    }

    fn get_session_agent_alias(&self, session_key: &str) -> std::io::Result<Option<String>> {
        Ok(self
            .inner
            .with_view(session_key, |v| v.agent_alias.clone())
            .flatten())
    }

    fn set_session_context(
        &self,
        session_key: &str,
        context: SessionContext<'_>,
    ) -> std::io::Result<()> {
        let event = Event::SetContext {
            channel_id: trimmed(context.channel_id),
            room_id: trimmed(context.room_id),
            sender_id: trimmed(context.sender_id),
        };
        let changes_nothing = matches!(
            event,
            Event::SetContext {
                channel_id: None,
                room_id: None,
                sender_id: None
            }
        );
        Ok(self.inner.commit(session_key, true, &event, |view| {
            if view.is_some() && changes_nothing {
                Decision::Skip(())
            } else {
                Decision::Write(())
            }
        })?)
    }

    fn get_session_metadata(&self, session_key: &str) -> Option<SessionMetadata> {
        self.inner.with_view(session_key, SessionView::metadata)
    }

    fn set_session_state(
        &self,
        session_key: &str,
        state: &str,
        turn_id: Option<&str>,
    ) -> std::io::Result<()> {
        self.set_metadata(session_key, &Event::SetState { state, turn_id })
    }

    fn get_session_state(&self, session_key: &str) -> std::io::Result<Option<SessionState>> {
        Ok(self
            .inner
            .with_view(session_key, SessionView::session_state))
    }

    fn list_running_sessions(&self) -> Vec<SessionMetadata> {
        let mut rows = self.inner.running();
        rows.sort_by(|(a, sa), (b, sb)| {
            sb.turn_started_at
                .cmp(&sa.turn_started_at)
                .then_with(|| a.key.cmp(&b.key))
        });
        rows.into_iter().map(|(meta, _)| meta).collect()
    }

    fn list_stuck_sessions(&self, threshold_secs: u64) -> Vec<SessionMetadata> {
        let threshold = i64::try_from(threshold_secs.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
        let cutoff = to_time(now_micros().saturating_sub(threshold));
        let mut rows: Vec<_> = self
            .inner
            .running()
            .into_iter()
            .filter(|(_, state)| state.turn_started_at.is_some_and(|t| t < cutoff))
            .collect();
        rows.sort_by(|(a, sa), (b, sb)| {
            sa.turn_started_at
                .cmp(&sb.turn_started_at)
                .then_with(|| a.key.cmp(&b.key))
        });
        rows.into_iter().map(|(meta, _)| meta).collect()
    }
}

impl LogStore {
    /// The live sessions whose agent alias is `agent_alias`, byte for byte (none for an empty
    /// one).
    fn attributed_to(&self, agent_alias: &str) -> Vec<String> {
        if agent_alias.is_empty() {
            return Vec::new();
        }
        self.inner.live_views(|view| {
            (view.agent_alias.as_deref() == Some(agent_alias)).then(|| view.key.clone())
        })
    }

    /// Sets the alias of every live session attributed to `from` to `to` (`None` clears): the
    /// record the alias setter writes, one per session, each written only if the session is
    /// still attributed to `from` under its writer's lock. Returns how many changed. A crash
    /// part way leaves some sessions moved; `count_agent_attribution(from)` finds the rest.
    fn reattribute(&self, from: &str, to: Option<&str>) -> crate::Result<usize> {
        let event = Event::SetAlias { alias: to };
        let mut changed = 0;
        for key in self.attributed_to(from) {
            let moved = self.inner.commit(&key, false, &event, |view| match view {
                Some(view) if view.agent_alias.as_deref() == Some(from) => Decision::Write(true),
                _ => Decision::Skip(false),
            })?;
            changed += usize::from(moved);
        }
        Ok(changed)
    }

    /// Writes a metadata event (name, alias, state), creating the session if it is missing.
    fn set_metadata(&self, session_key: &str, event: &Event<'_>) -> std::io::Result<()> {
        Ok(self
            .inner
            .commit(session_key, true, event, |_| Decision::Write(()))?)
    }
}

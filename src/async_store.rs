//! [`AsyncLogStore`] (cargo feature `tokio`): the store for programs on a Tokio runtime.
//!
//! Every call runs the blocking store on Tokio's blocking pool (`spawn_blocking`), so no
//! runtime worker ever waits for a file operation or an `fdatasync`; the async methods take the
//! same arguments as their blocking twins and return the same types. A subscription is a
//! [`futures_core::Stream`] fed by a thread of its own.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::backend::{
    SessionBackend, SessionContext, SessionMetadata, SessionQuery, SessionState, TimestampedMessage,
};
use crate::error::Result;
use crate::feed::{Delivery, Subscription};
use crate::listing::{ListQuery, Page};
use crate::message::ChatMessage;
use crate::options::Options;
use crate::store::LogStore;

/// How long the subscription's thread waits for a live event before it looks whether the
/// stream was dropped.
const SUBSCRIPTION_POLL: Duration = Duration::from_millis(100);
/// How often `close` looks whether the other handles and calls are done.
const CLOSE_POLL: Duration = Duration::from_millis(1);
/// Deliveries a subscription's thread reads ahead of the stream's reader.
const SUBSCRIPTION_QUEUE: usize = 1024;

/// A [`LogStore`] for async code. Cheap to clone: clones share one store, which closes when
/// the last clone is dropped (or at [`AsyncLogStore::close`]).
#[derive(Clone, Debug)]
pub struct AsyncLogStore {
    store: Arc<LogStore>,
}

impl From<LogStore> for AsyncLogStore {
    fn from(store: LogStore) -> AsyncLogStore {
        AsyncLogStore {
            store: Arc::new(store),
        }
    }
}

impl AsyncLogStore {
    /// Opens (creating it if missing) the store in `dir` with default [`Options`]: see
    /// [`LogStore::open`].
    pub async fn open(dir: impl AsRef<Path>) -> Result<AsyncLogStore> {
        AsyncLogStore::open_with(dir, Options::default()).await
    }

    /// Opens the store in `dir` with `options`: see [`LogStore::open_with`].
    pub async fn open_with(dir: impl AsRef<Path>, options: Options) -> Result<AsyncLogStore> {
        let dir = dir.as_ref().to_path_buf();
        let store = blocking(move || LogStore::open_with(dir, options)).await?;
        Ok(AsyncLogStore::from(store))
    }

    /// The blocking store, for what has no async twin (audit reads, statistics). Calling it
    /// from a runtime worker blocks that worker.
    pub fn blocking(&self) -> &LogStore {
        &self.store
    }

    /// Runs `f` on the store on the blocking pool.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce(&LogStore) -> T + Send + 'static) -> T {
        let store = Arc::clone(&self.store);
        blocking(move || f(&store)).await
    }

    /// See [`SessionBackend::load`].
    pub async fn load(&self, session_key: &str) -> Vec<ChatMessage> {
        let key = session_key.to_owned();
        self.run(move |s| s.load(&key)).await
    }

    /// See [`SessionBackend::load_with_timestamps`].
    pub async fn load_with_timestamps(&self, session_key: &str) -> Vec<TimestampedMessage> {
        let key = session_key.to_owned();
        self.run(move |s| s.load_with_timestamps(&key)).await
    }

    /// See [`LogStore::load_tail`].
    pub async fn load_tail(&self, session_key: &str, n: usize) -> Vec<ChatMessage> {
        let key = session_key.to_owned();
        self.run(move |s| s.load_tail(&key, n)).await
    }

    /// See [`SessionBackend::append`].
    pub async fn append(&self, session_key: &str, message: &ChatMessage) -> std::io::Result<()> {
        let (key, message) = (session_key.to_owned(), message.clone());
        self.run(move |s| s.append(&key, &message)).await
    }

    /// See [`LogStore::append_batch`].
    pub async fn append_batch(&self, session_key: &str, messages: &[ChatMessage]) -> Result<()> {
        let (key, messages) = (session_key.to_owned(), messages.to_vec());
        self.run(move |s| s.append_batch(&key, &messages)).await
    }

    /// See [`LogStore::append_if_exists`].
    pub async fn append_if_exists(&self, session_key: &str, message: &ChatMessage) -> Result<bool> {
        let (key, message) = (session_key.to_owned(), message.clone());
        self.run(move |s| s.append_if_exists(&key, &message)).await
    }

    /// See [`LogStore::append_expected`].
    pub async fn append_expected(
        &self,
        session_key: &str,
        message: &ChatMessage,
        expected_len: usize,
    ) -> Result<()> {
        let (key, message) = (session_key.to_owned(), message.clone());
        self.run(move |s| s.append_expected(&key, &message, expected_len))
            .await
    }

    /// See [`LogStore::append_once`].
    pub async fn append_once(
        &self,
        session_key: &str,
        message: &ChatMessage,
        message_id: &str,
    ) -> Result<bool> {
        let (key, message, id) = (
            session_key.to_owned(),
            message.clone(),
            message_id.to_owned(),
        );
        self.run(move |s| s.append_once(&key, &message, &id)).await
    }

    /// See [`LogStore::append_batch_once`].
    pub async fn append_batch_once(
        &self,
        session_key: &str,
        messages: &[ChatMessage],
        batch_id: &str,
    ) -> Result<bool> {
        let (key, messages, id) = (
            session_key.to_owned(),
            messages.to_vec(),
            batch_id.to_owned(),
        );
        self.run(move |s| s.append_batch_once(&key, &messages, &id))
            .await
    }

    /// See [`LogStore::archive_session`].
    pub async fn archive_session(&self, session_key: &str) -> Result<bool> {
        let key = session_key.to_owned();
        self.run(move |s| s.archive_session(&key)).await
    }

    /// See [`LogStore::unarchive_session`].
    pub async fn unarchive_session(&self, session_key: &str) -> Result<bool> {
        let key = session_key.to_owned();
        self.run(move |s| s.unarchive_session(&key)).await
    }

    /// See [`SessionBackend::remove_last`].
    pub async fn remove_last(&self, session_key: &str) -> std::io::Result<bool> {
        let key = session_key.to_owned();
        self.run(move |s| s.remove_last(&key)).await
    }

    /// See [`SessionBackend::update_last`].
    pub async fn update_last(
        &self,
        session_key: &str,
        message: &ChatMessage,
    ) -> std::io::Result<bool> {
        let (key, message) = (session_key.to_owned(), message.clone());
        self.run(move |s| s.update_last(&key, &message)).await
    }

    /// See [`SessionBackend::list_sessions`].
    pub async fn list_sessions(&self) -> Vec<String> {
        self.run(|s| s.list_sessions()).await
    }

    /// See [`SessionBackend::list_sessions_with_metadata`].
    pub async fn list_sessions_with_metadata(&self) -> Vec<SessionMetadata> {
        self.run(|s| s.list_sessions_with_metadata()).await
    }

    /// See [`LogStore::list_page`].
    pub async fn list_page(&self, query: &ListQuery) -> Result<Page> {
        let query = query.clone();
        self.run(move |s| s.list_page(&query)).await
    }

    /// See [`SessionBackend::compact`].
    pub async fn compact(&self, session_key: &str) -> std::io::Result<()> {
        let key = session_key.to_owned();
        self.run(move |s| SessionBackend::compact(s, &key)).await
    }

    /// See [`SessionBackend::cleanup_stale`].
    pub async fn cleanup_stale(&self, ttl_hours: u32) -> std::io::Result<usize> {
        self.run(move |s| s.cleanup_stale(ttl_hours)).await
    }

    /// See [`SessionBackend::search`].
    pub async fn search(&self, query: &SessionQuery) -> Vec<SessionMetadata> {
        let query = query.clone();
        self.run(move |s| s.search(&query)).await
    }

    /// See [`SessionBackend::clear_messages`].
    pub async fn clear_messages(&self, session_key: &str) -> std::io::Result<usize> {
        let key = session_key.to_owned();
        self.run(move |s| s.clear_messages(&key)).await
    }

    /// See [`SessionBackend::delete_session`].
    pub async fn delete_session(&self, session_key: &str) -> std::io::Result<bool> {
        let key = session_key.to_owned();
        self.run(move |s| s.delete_session(&key)).await
    }

    /// See [`SessionBackend::clear_agent_attribution`].
    pub async fn clear_agent_attribution(&self, agent_alias: &str) -> std::io::Result<usize> {
        let alias = agent_alias.to_owned();
        self.run(move |s| s.clear_agent_attribution(&alias)).await
    }

    /// See [`SessionBackend::rename_agent_attribution`].
    pub async fn rename_agent_attribution(&self, from: &str, to: &str) -> std::io::Result<usize> {
        let (from, to) = (from.to_owned(), to.to_owned());
        self.run(move |s| s.rename_agent_attribution(&from, &to))
            .await
    }

    /// See [`SessionBackend::count_agent_attribution`].
    pub async fn count_agent_attribution(&self, agent_alias: &str) -> std::io::Result<usize> {
        let alias = agent_alias.to_owned();
        self.run(move |s| s.count_agent_attribution(&alias)).await
    }

    /// See [`SessionBackend::session_exists`].
    pub async fn session_exists(&self, session_key: &str) -> bool {
        let key = session_key.to_owned();
        self.run(move |s| s.session_exists(&key)).await
    }

    /// See [`SessionBackend::set_session_name`].
    pub async fn set_session_name(&self, session_key: &str, name: &str) -> std::io::Result<()> {
        let (key, name) = (session_key.to_owned(), name.to_owned());
        self.run(move |s| s.set_session_name(&key, &name)).await
    }

    /// See [`SessionBackend::get_session_name`].
    pub async fn get_session_name(&self, session_key: &str) -> std::io::Result<Option<String>> {
        let key = session_key.to_owned();
        self.run(move |s| s.get_session_name(&key)).await
    }

    /// See [`SessionBackend::set_session_agent_alias`].
    pub async fn set_session_agent_alias(
        &self,
        session_key: &str,
        agent_alias: &str,
    ) -> std::io::Result<()> {
        let (key, alias) = (session_key.to_owned(), agent_alias.to_owned());
        self.run(move |s| s.set_session_agent_alias(&key, &alias))
            .await
    }

    /// See [`SessionBackend::get_session_agent_alias`].
    pub async fn get_session_agent_alias(
        &self,
        session_key: &str,
    ) -> std::io::Result<Option<String>> {
        let key = session_key.to_owned();
        self.run(move |s| s.get_session_agent_alias(&key)).await
    }

    /// See [`SessionBackend::set_session_context`].
    pub async fn set_session_context(
        &self,
        session_key: &str,
        context: SessionContext<'_>,
    ) -> std::io::Result<()> {
        let key = session_key.to_owned();
        let owned = |field: Option<&str>| field.map(str::to_owned);
        let (channel, room, sender) = (
            owned(context.channel_id),
            owned(context.room_id),
            owned(context.sender_id),
        );
        self.run(move |s| {
            let context = SessionContext {
                channel_id: channel.as_deref(),
                room_id: room.as_deref(),
                sender_id: sender.as_deref(),
            };
            s.set_session_context(&key, context)
        })
        .await
    }

    /// See [`SessionBackend::get_session_metadata`].
    pub async fn get_session_metadata(&self, session_key: &str) -> Option<SessionMetadata> {
        let key = session_key.to_owned();
        self.run(move |s| s.get_session_metadata(&key)).await
    }

    /// See [`SessionBackend::set_session_state`].
    pub async fn set_session_state(
        &self,
        session_key: &str,
        state: &str,
        turn_id: Option<&str>,
    ) -> std::io::Result<()> {
        let (key, state) = (session_key.to_owned(), state.to_owned());
        let turn_id = turn_id.map(str::to_owned);
        self.run(move |s| s.set_session_state(&key, &state, turn_id.as_deref()))
            .await
    }

    /// See [`SessionBackend::get_session_state`].
    pub async fn get_session_state(
        &self,
        session_key: &str,
    ) -> std::io::Result<Option<SessionState>> {
        let key = session_key.to_owned();
        self.run(move |s| s.get_session_state(&key)).await
    }

    /// See [`SessionBackend::list_running_sessions`].
    pub async fn list_running_sessions(&self) -> Vec<SessionMetadata> {
        self.run(|s| s.list_running_sessions()).await
    }

    /// See [`SessionBackend::list_stuck_sessions`].
    pub async fn list_stuck_sessions(&self, threshold_secs: u64) -> Vec<SessionMetadata> {
        self.run(move |s| s.list_stuck_sessions(threshold_secs))
            .await
    }

    /// See [`LogStore::fork_session`].
    pub async fn fork_session(
        &self,
        source: &str,
        target: &str,
        at_seq: Option<u64>,
    ) -> Result<()> {
        let (source, target) = (source.to_owned(), target.to_owned());
        self.run(move |s| s.fork_session(&source, &target, at_seq))
            .await
    }

    /// See [`LogStore::subscribe`]: every event after `after_seq`, then
    /// [`Delivery::CaughtUp`], then each new event as it commits, as a stream. The stream ends
    /// when the store closes (after the events already queued), or after an error reading the
    /// log. Dropping it ends the subscription.
    pub async fn subscribe(&self, after_seq: u64) -> Result<DeliveryStream> {
        let subscription = self.run(move |s| s.subscribe(after_seq)).await?;
        let (sender, receiver) = mpsc::channel(SUBSCRIPTION_QUEUE);
        std::thread::Builder::new()
            .name("sessionlog-subscription".into())
            .spawn(move || forward(subscription, &sender))
            .map_err(|e| crate::Error::io("starting a subscription's thread", e))?;
        Ok(DeliveryStream { receiver })
    }

    /// Closes the store (see [`LogStore::close`]) once every other clone of this handle and
    /// every call still running on the blocking pool is done with it.
    pub async fn close(self) -> Result<()> {
        let mut store = self.store;
        loop {
            match Arc::try_unwrap(store) {
                Ok(store) => return blocking(move || store.close()).await,
                Err(shared) => {
                    store = shared;
                    tokio::time::sleep(CLOSE_POLL).await;
                }
            }
        }
    }
}

/// Runs `f` on Tokio's blocking pool and waits for it without holding a runtime worker. A
/// panic in `f` is raised again here, as a blocking call would have raised it.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        // Only when the runtime shuts down before the task ran; nothing can await it then.
        Err(error) => panic!("the runtime shut down under a store call: {error}"),
    }
}

/// The subscription's thread: hands each delivery to the stream until the store closes, the
/// log cannot be read, or the stream is dropped.
fn forward(mut subscription: Subscription, sender: &mpsc::Sender<Result<Delivery>>) {
    loop {
        match subscription.recv_timeout(SUBSCRIPTION_POLL) {
            Ok(Some(delivery)) => {
                if sender.blocking_send(Ok(delivery)).is_err() {
                    return; // the stream was dropped
                }
            }
            Ok(None) if subscription.is_closed() || sender.is_closed() => return,
            Ok(None) => {}
            Err(error) => {
                let _ = sender.blocking_send(Err(error));
                return;
            }
        }
    }
}

/// The deliveries of [`AsyncLogStore::subscribe`], in order, each exactly once.
pub struct DeliveryStream {
    receiver: mpsc::Receiver<Result<Delivery>>,
}

impl futures_core::Stream for DeliveryStream {
    type Item = Result<Delivery>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
    }
}

impl DeliveryStream {
    /// The next delivery; `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        self.receiver.recv().await
    }
}

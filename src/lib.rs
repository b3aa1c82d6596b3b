//! # sessionlog
//!
//! A crash-safe, event-sourced store for the conversation histories of AI agents.
//!
//! Every mutation of a session (append, update of the last message, removal, clear, delete,
//! name, agent alias, routing context, state) is one checksummed record appended to that
//! session's own segment files; nothing is updated in place. An in-memory projection, rebuilt
//! on open by replaying the records, answers every query; message bytes stay on disk and are
//! read back (and their checksums verified again) when asked for. Compaction rewrites a
//! session's segments to hold only what is live.
//!
//! [`LogStore`] implements [`SessionBackend`], the trait agent runtimes already use for their
//! JSONL and SQLite stores, with the behaviour of `shared/contract/SEMANTICS.md`.
//!
//! ```
//! use sessionlog::{ChatMessage, LogStore, SessionBackend};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = LogStore::open(dir.path())?;
//! store.append("telegram_42", &ChatMessage::user("hello"))?;
//! store.append("telegram_42", &ChatMessage::assistant(""))?;
//! store.update_last("telegram_42", &ChatMessage::assistant("hi! how can I help?"))?;
//! drop(store);
//!
//! let store = LogStore::open(dir.path())?;
//! assert_eq!(store.load("telegram_42").len(), 2);
//! let tail = store.load_tail("telegram_42", 1);
//! assert_eq!(tail, vec![ChatMessage::assistant("hi! how can I help?")]);
//! # Ok(())
//! # }
//! ```
//!
//! The on-disk format is described byte by byte in `docs/FORMAT.md`; the design in
//! `docs/DESIGN.md`.

mod anchor;
#[cfg(feature = "tokio")]
mod async_store;
mod backend;
mod bytes;
mod checkpoint;
mod cipher;
mod claim;
mod compaction;
mod erasures;
mod error;
mod event;
mod feed;
pub mod fs;
mod health;
mod history;
mod id_window;
mod index;
mod keyring;
mod layout;
mod listing;
mod location;
mod message;
mod options;
mod parked;
mod payload;
mod projection;
mod reader;
pub mod record;
mod recovery;
#[cfg(feature = "replication")]
pub mod replication;
mod report;
mod search;
mod segment;
mod store;
#[cfg(feature = "fault-injection")]
pub mod testing;
mod torn_tail;
mod workers;

#[cfg(feature = "tokio")]
pub use async_store::{AsyncLogStore, DeliveryStream};
pub use backend::{
    SessionBackend, SessionContext, SessionMetadata, SessionQuery, SessionState, TimestampedMessage,
};
pub use cipher::{DataKey, EncryptionKey};
pub use error::{Error, Result};
pub use event::{EventFilter, EventKind, LogEvent};
pub use feed::{Delivery, Subscription};
pub use health::Health;
pub use history::{Events, Problem, SessionAt, VerifyReport};
pub use id_window::{IDEMPOTENCY_WINDOW_DEFAULT, IDEMPOTENCY_WINDOW_MAX, MESSAGE_ID_MAX_BYTES};
pub use index::query::{MessageHit, MessageQuery, MESSAGE_LIMIT_DEFAULT};
pub use listing::{ListQuery, Page, PAGE_LIMIT_DEFAULT};
pub use location::BATCH_MESSAGES_MAX;
pub use message::ChatMessage;
pub use options::{Durability, Options, Retention, RetentionRule};
#[cfg(feature = "replication")]
pub use replication::{Replication, ReplicationStatus, RestorePoint, RestoreReport};
pub use report::{Finding, RecoveryReport};
pub use segment::{FORMAT_VERSION, MAX_KEY_BYTES, SEALED_VERSION};
#[cfg(feature = "replication")]
pub use store::{restore, restore_with_progress};
pub use store::{LogStore, RetentionReport, SessionStats, SEARCH_LIMIT_DEFAULT};

/// The README's Rust examples, compiled and run by `cargo test` as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeExamples;

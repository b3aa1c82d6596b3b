//! Replication: continuous backup of a store to object storage, and restore from it (feature
//! `replication`; `docs/REPLICATION.md`).
//!
//! A background thread ships what the store wrote since its last batch, at an interval, as one
//! object per batch: every byte of a segment once (a sealed segment's bytes in the batches
//! that found them, a growing segment's new bytes as appended ranges), the erasure log's
//! growth, and an encrypted store's key files (sealed under the store key, which never leaves
//! the process). A restore applies the batches in order, up to the point asked for, and cuts
//! each segment after the last record at or before that point.
//!
//! ```text
//! {prefix}/gen/{generation:016x}   empty; created (never overwritten) by the store that ships
//!                                  under that generation: a newer one fences the older
//! {prefix}/log/{batch:016x}        one batch (batch.rs): created, never overwritten, except
//!                                  to take an erased session's bytes out of it
//! ```

mod batch;
mod bucket;
pub(crate) mod restore;
mod shipper;
mod state;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

pub use restore::{RestorePoint, RestoreReport};
pub(crate) use shipper::{Capture, CapturedFile, Shipper};

/// Where and how often a store ships its log ([`crate::Options::replicate_to`]).
///
/// `url` names the target: `s3://bucket/prefix` (credentials, region and endpoint from the
/// usual `AWS_*` environment variables: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_REGION`, `AWS_ENDPOINT` and `AWS_ALLOW_HTTP` for an S3-protocol server of your own),
/// `file:///path/prefix` (a folder), or `memory:///prefix` (a new empty bucket each time it
/// is reached, for trials; [`Replication::with_store`] shares one in-memory bucket between a
/// store and its restore).
#[derive(Clone)]
pub struct Replication {
    /// The target, as parsed by [`Replication::to`].
    pub url: String,
    /// How often the background thread ships what was written since the last batch: the
    /// most a store loses if its disk dies. Default: 1 s.
    pub interval: Duration,
    /// A bucket given whole (tests, programs that build their own client).
    store: Option<Arc<dyn object_store::ObjectStore>>,
}

/// The default interval between batches.
pub const REPLICATION_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);

impl Replication {
    /// Ships to `url` (see [`Replication`]) every second. Fails with
    /// [`crate::Error::InvalidOptions`] for an address that does not parse or a scheme this
    /// build cannot reach; the bucket itself is first reached at open.
    pub fn to(url: &str) -> crate::Result<Replication> {
        bucket::check_url(url)?;
        Ok(Replication {
            url: url.to_owned(),
            interval: REPLICATION_INTERVAL_DEFAULT,
            store: None,
        })
    }

    /// Ships to `store`, under the path of `url` (its scheme only names the target in
    /// messages): for a bucket client built by the program, or one in-memory bucket shared by
    /// a store and its restore.
    pub fn with_store(store: Arc<dyn object_store::ObjectStore>, url: &str) -> Replication {
        Replication {
            url: url.to_owned(),
            interval: REPLICATION_INTERVAL_DEFAULT,
            store: Some(store),
        }
    }

    /// The same target, shipped every `interval`.
    pub fn every(self, interval: Duration) -> Replication {
        Replication { interval, ..self }
    }

    pub(crate) fn validate(&self) -> crate::Result<()> {
        if self.interval.is_zero() {
            return Err(crate::Error::InvalidOptions {
                reason: "Replication::interval must not be zero".into(),
            });
        }
        if self.store.is_none() {
            bucket::check_url(&self.url)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Replication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replication")
            .field("url", &self.url)
            .field("interval", &self.interval)
            .field("store_given", &self.store.is_some())
            .finish()
    }
}

impl PartialEq for Replication {
    fn eq(&self, other: &Replication) -> bool {
        let same_store = match (&self.store, &other.store) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        self.url == other.url && self.interval == other.interval && same_store
    }
}

impl Eq for Replication {}

/// How shipping stands ([`crate::LogStore::replication_status`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicationStatus {
    /// The target, as given.
    pub target: String,
    /// Every record up to this sequence number is in the bucket (0: none yet).
    pub shipped_seq: u64,
    /// Bytes the last attempt found written and not yet shipped (0 once it succeeded).
    pub bytes_behind: u64,
    /// When the last batch (or a check that found nothing new) succeeded.
    pub last_shipped_at: Option<DateTime<Utc>>,
    /// Batches this process shipped.
    pub batches: u64,
    /// The generation this store ships under.
    pub generation: u64,
    /// The last attempt's error, until one succeeds.
    pub last_error: Option<String>,
    /// Another store took the prefix over: shipping stopped for good.
    pub fenced: bool,
}

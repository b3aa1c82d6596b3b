//! The bucket: the few object storage requests replication makes, as blocking calls on a
//! runtime of its own (object_store is async; the store's threads are not), with every
//! failure an [`Error::Replication`] naming the target.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::aws::AmazonS3ConfigKey;
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientConfigKey, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};

use super::Replication;
use crate::error::{Error, Result};

/// How long one request may take, and how long its retries may go on: a bucket that does not
/// answer costs the shipper's thread this much per attempt, never a write.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY_TIMEOUT: Duration = Duration::from_secs(20);

/// The largest object replication reads whole: a batch is at most
/// `batch::DATA_BYTES_MAX` of data and its header.
pub(super) const OBJECT_BYTES_MAX: u64 = 80 << 20;

/// Whether a create-only put made the object or found one there.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Created {
    Made,
    Exists,
}

pub(super) struct Bucket {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    runtime: tokio::runtime::Runtime,
    /// The target as given, for messages.
    pub(super) target: String,
}

/// Checks that `url` parses and names a scheme this build reaches.
pub(super) fn check_url(url: &str) -> Result<()> {
    let parsed = parse(url)?;
    match parsed.scheme() {
        "s3" | "file" | "memory" => Ok(()),
        other => Err(Error::InvalidOptions {
            reason: format!(
                "replication target {url:?}: the scheme {other:?} is not one this build \
                 reaches (s3, file, memory)"
            ),
        }),
    }
}

fn parse(url: &str) -> Result<url::Url> {
    url::Url::parse(url).map_err(|e| Error::InvalidOptions {
        reason: format!("replication target {url:?} is not a URL: {e}"),
    })
}

impl Bucket {
    /// Reaches the target of `replication` (nothing is requested yet).
    pub(super) fn connect(replication: &Replication) -> Result<Bucket> {
        let target = replication.url.clone();
        let failed = |reason: String| Error::Replication {
            target: target.clone(),
            reason,
        };
        let url = parse(&target)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| failed(format!("starting its runtime: {e}")))?;
        let (store, prefix): (Arc<dyn ObjectStore>, ObjectPath) = match &replication.store {
            Some(store) => (Arc::clone(store), object_path(&target, url.path())?),
            None if url.scheme() == "s3" => {
                let retry = RetryConfig {
                    max_retries: 3,
                    retry_timeout: RETRY_TIMEOUT,
                    ..RetryConfig::default()
                };
                let mut builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(target.as_str())
                    .with_retry(retry);
                // Set on top of what the environment gave (`AWS_ALLOW_HTTP`, a proxy, ...),
                // which a whole new set of client options would drop; `AWS_TIMEOUT` wins.
                if std::env::var_os("AWS_TIMEOUT").is_none() {
                    let timeout = AmazonS3ConfigKey::Client(ClientConfigKey::Timeout);
                    builder =
                        builder.with_config(timeout, format!("{}s", REQUEST_TIMEOUT.as_secs()));
                }
                let store = builder.build().map_err(|e| failed(e.to_string()))?;
                (Arc::new(store), object_path(&target, url.path())?)
            }
            None => {
                check_url(&target)?;
                let (store, prefix) =
                    object_store::parse_url(&url).map_err(|e| failed(e.to_string()))?;
                (Arc::from(store), prefix)
            }
        };
        Ok(Bucket {
            store,
            prefix,
            runtime,
            target,
        })
    }

    fn path(&self, key: &str) -> ObjectPath {
        key.split('/')
            .fold(self.prefix.clone(), |path, part| path.join(part))
    }

    fn failed(&self, what: &str, key: &str, e: object_store::Error) -> Error {
        Error::Replication {
            target: self.target.clone(),
            reason: format!("{what} {key}: {e}"),
        }
    }

    /// Creates `key` unless an object of that name exists (which it leaves alone).
    pub(super) fn create(&self, key: &str, bytes: Vec<u8>) -> Result<Created> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let path = self.path(key);
        let put = self.store.put_opts(&path, bytes.into(), options);
        match self.runtime.block_on(put) {
            Ok(_) => Ok(Created::Made),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Created::Exists),
            Err(e) => Err(self.failed("creating", key, e)),
        }
    }

    /// Writes `key` whole, over any object of that name.
    pub(super) fn overwrite(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let path = self.path(key);
        let put = self.store.put(&path, PutPayload::from(bytes));
        self.runtime
            .block_on(put)
            .map(drop)
            .map_err(|e| self.failed("writing", key, e))
    }

    /// The bytes of `key`, read whole: refused past [`OBJECT_BYTES_MAX`] before anything is
    /// read, so an object nobody should have put there costs no memory of its size.
    pub(super) fn read(&self, key: &str) -> Result<Vec<u8>> {
        let path = self.path(key);
        self.runtime.block_on(async {
            let got = self
                .store
                .get(&path)
                .await
                .map_err(|e| self.failed("reading", key, e))?;
            if got.meta.size > OBJECT_BYTES_MAX {
                return Err(Error::Replication {
                    target: self.target.clone(),
                    reason: format!(
                        "{key} is {} bytes, more than any batch ({OBJECT_BYTES_MAX})",
                        got.meta.size
                    ),
                });
            }
            // Read up to the size it declared, no further: a server that sends more is not
            // believed (nor kept in memory).
            let declared = got.meta.size;
            let mut bytes = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
            let mut stream = got.into_stream();
            while let Some(chunk) = stream
                .try_next()
                .await
                .map_err(|e| self.failed("reading", key, e))?
            {
                if bytes.len() as u64 + chunk.len() as u64 > declared {
                    return Err(Error::Replication {
                        target: self.target.clone(),
                        reason: format!("{key} came longer than the {declared} bytes it declared"),
                    });
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(bytes)
        })
    }

    /// The bytes `range` of `key`.
    pub(super) fn read_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let path = self.path(key);
        let read = self.store.get_range(&path, range);
        self.runtime
            .block_on(read)
            .map(|bytes| bytes.to_vec())
            .map_err(|e| self.failed("reading", key, e))
    }

    /// The names (after `{folder}/`) and sizes of the objects in `folder`, sorted by name.
    pub(super) fn list(&self, folder: &str) -> Result<Vec<(String, u64)>> {
        let dir = self.path(folder);
        let listed = self.store.list(Some(&dir));
        let metas: Vec<object_store::ObjectMeta> = self
            .runtime
            .block_on(listed.try_collect())
            .map_err(|e| self.failed("listing", folder, e))?;
        let mut names: Vec<(String, u64)> = metas
            .into_iter()
            .filter_map(|meta| {
                let mut parts = meta.location.prefix_match(&dir)?;
                let name = parts.next()?.as_ref().to_owned();
                parts.next().is_none().then_some((name, meta.size))
            })
            .collect();
        names.sort();
        Ok(names)
    }
}

/// The prefix a URL's path names.
fn object_path(target: &str, path: &str) -> Result<ObjectPath> {
    ObjectPath::parse(path.trim_matches('/')).map_err(|e| Error::InvalidOptions {
        reason: format!("replication target {target:?}: its path is not a prefix: {e}"),
    })
}

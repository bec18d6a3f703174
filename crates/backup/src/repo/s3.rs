//! A repository in an S3 bucket (or any S3-protocol server), through `object_store`.
//!
//! [`Backend`]'s methods are synchronous (the repository's logic runs on plain threads: the
//! copy's pipeline, the pack-storing threads, the restore's readers), while `object_store` is
//! async. The backend owns a small tokio runtime, spawns each request on it and waits on a std
//! channel. It never calls `Runtime::block_on` on the caller's thread: callers may themselves be
//! on a runtime's threads (the node's blocking pool), where `block_on` panics.
//!
//! Every request is retried a bounded number of times with backoff (object stores fail
//! transiently, and a backup should not fail on one dropped connection); a PUT is atomic, so a
//! retried or interrupted store never leaves half an object under its key.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
// `ObjectStore`'s own methods, not `ObjectStoreExt`'s: the latter's futures are not `Send`, and
// each request is spawned on the backend's runtime.
use futures_util::StreamExt;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, ObjectStore, PutOptions, PutPayload, RetryConfig,
};

use super::backend::{Backend, ObjectInfo};

/// Settings of the S3 connection that do not come from the URL. Each one left `None` is taken
/// from the usual `AWS_*` environment variables (`AWS_ENDPOINT_URL`/`AWS_ENDPOINT`,
/// `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`), so that a
/// command line behaves like the AWS tools and a node can still be configured in its file.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// The server, e.g. `http://127.0.0.1:9000`; `None`: AWS itself (or `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Allow plain HTTP (a server on loopback); refused by default.
    pub allow_http: Option<bool>,
}

impl std::fmt::Debug for S3Settings {
    // The secret stays out of logs and error messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<hidden>"))
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// Requests retried at most this many times, within [`RETRY_TIMEOUT`] of the first attempt.
const MAX_RETRIES: usize = 5;
const RETRY_TIMEOUT: Duration = Duration::from_secs(60);
/// Worker threads of the backend's runtime: requests mostly wait on the network.
const RUNTIME_THREADS: usize = 2;

/// The objects of one repository: `s3://bucket/prefix/<key>`.
pub struct S3Backend {
    store: Arc<AmazonS3>,
    bucket: String,
    /// No leading or trailing `/`; empty for a repository at the bucket's root.
    prefix: String,
    /// `Some` until dropped; see [`Drop`].
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Backend").field("at", &self.url("")).finish()
    }
}

impl S3Backend {
    /// Connects to `bucket` (creating nothing; the bucket must exist), with the repository's
    /// objects under `prefix`.
    pub fn new(bucket: &str, prefix: &str, settings: &S3Settings) -> io::Result<Self> {
        // reqwest is built without a bundled TLS provider (no aws-lc-rs, no cmake): use ring,
        // as the DAG's TLS does. Installing twice is harmless; the first one stays.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("repo-s3")
            .enable_all()
            .build()?;
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(v) = &settings.endpoint {
            builder = builder.with_endpoint(v);
        }
        if let Some(v) = &settings.region {
            builder = builder.with_region(v);
        }
        if let Some(v) = &settings.access_key_id {
            builder = builder.with_access_key_id(v);
        }
        if let Some(v) = &settings.secret_access_key {
            builder = builder.with_secret_access_key(v);
        }
        let mut client = ClientOptions::new();
        if let Some(allow) = settings.allow_http {
            client = client.with_allow_http(allow);
        } else if let Ok(v) = std::env::var("AWS_ALLOW_HTTP") {
            client = client.with_allow_http(matches!(v.trim(), "1" | "true" | "TRUE" | "True"));
        }
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: MAX_RETRIES,
            retry_timeout: RETRY_TIMEOUT,
        };
        let builder = builder.with_client_options(client).with_retry(retry);
        // The HTTP client is made inside the runtime it will run on.
        let store = {
            let _entered = runtime.enter();
            builder.build()
        }
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("s3://{bucket}: {e}")))?;
        Ok(Self {
            store: Arc::new(store),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            runtime: Some(runtime),
        })
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The prefix of the repository's keys inside the bucket.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn path(&self, key: &str) -> ObjectPath {
        let key = key.trim_matches('/');
        match (self.prefix.is_empty(), key.is_empty()) {
            (true, _) => ObjectPath::from(key),
            (false, true) => ObjectPath::from(self.prefix.as_str()),
            (false, false) => ObjectPath::from(format!("{}/{key}", self.prefix)),
        }
    }

    fn url(&self, key: &str) -> String {
        let path = self.path(key);
        if path.as_ref().is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{path}", self.bucket)
        }
    }

    /// Runs one request on the backend's runtime and waits for it on this thread. Errors name
    /// the object (its URL) and keep `NotFound` apart.
    fn run<T: Send + 'static>(
        &self,
        op: &str,
        key: &str,
        request: impl Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> io::Result<T> {
        let Some(runtime) = &self.runtime else {
            return Err(io::Error::other(format!("{op} {}: the backend is closed", self.url(key))));
        };
        let (tx, rx) = mpsc::sync_channel(1);
        runtime.spawn(async move {
            // The waiting thread is gone only if it panicked: nothing to tell.
            let _ = tx.send(request.await);
        });
        match rx.recv() {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let kind = match e {
                    object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
                    object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. } => {
                        io::ErrorKind::PermissionDenied
                    }
                    _ => io::ErrorKind::Other,
                };
                Err(io::Error::new(kind, format!("{op} {}: {e}", self.url(key))))
            }
            Err(_) => Err(io::Error::other(format!(
                "{op} {}: the request was dropped (the runtime stopped)",
                self.url(key)
            ))),
        }
    }
}

impl Drop for S3Backend {
    /// Dropping a runtime waits for its threads, which panics on a runtime's own threads (where
    /// the last handle on a repository may be released); nothing of ours is in flight once the
    /// backend is dropped, so it is shut down without waiting.
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Backend for S3Backend {
    fn get(&self, key: &str) -> io::Result<Vec<u8>> {
        let (store, path) = (self.store.clone(), self.path(key));
        self.run("reading", key, async move {
            let r = store.get_opts(&path, GetOptions::default()).await?;
            r.bytes().await
        })
        .map(|b| b.to_vec())
    }

    fn get_range(&self, key: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let (store, path) = (self.store.clone(), self.path(key));
        let end = offset + len as u64;
        let data = self.run("reading", key, async move {
            let r = store.get_opts(&path, GetOptions::new().with_range(Some(offset..end))).await?;
            r.bytes().await
        })?;
        if data.len() != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "reading {}: {} bytes at {offset} asked, {} returned",
                    self.url(key),
                    len,
                    data.len()
                ),
            ));
        }
        Ok(data.to_vec())
    }

    fn put(&self, key: &str, data: &[u8]) -> io::Result<()> {
        let (store, path) = (self.store.clone(), self.path(key));
        // One PUT: atomic on every S3 server (the object appears whole or not at all), and
        // packs are tens of MiB, well under the single-PUT limit.
        let payload = PutPayload::from(bytes::Bytes::copy_from_slice(data));
        self.run("storing", key, async move {
            store.put_opts(&path, payload, PutOptions::default()).await
        })
        .map(|_| ())
    }

    fn list(&self, dir: &str) -> io::Result<Vec<ObjectInfo>> {
        let (store, path) = (self.store.clone(), self.path(dir));
        let listed =
            self.run("listing", dir, async move { store.list_with_delimiter(Some(&path)).await })?;
        Ok(listed
            .objects
            .into_iter()
            .filter_map(|o| {
                let name = o.location.filename()?.to_string();
                Some(ObjectInfo { name, size: o.size })
            })
            .collect())
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        // S3 answers a DELETE of a missing key with success; the contract says NotFound (a
        // set removed twice is reported), so look first. A concurrent remover may win between
        // the two: then both succeed, which is what removing means.
        let (store, path) = (self.store.clone(), self.path(key));
        self.run("removing", key, async move {
            store.get_opts(&path, GetOptions::new().with_head(true)).await?;
            let one = futures_util::stream::once(async move { Ok(path) }).boxed();
            let mut removed = store.delete_stream(one);
            while let Some(r) = removed.next().await {
                r?;
            }
            Ok(())
        })
    }

    fn exists(&self, key: &str) -> io::Result<bool> {
        let (store, path) = (self.store.clone(), self.path(key));
        let head = async move { store.get_opts(&path, GetOptions::new().with_head(true)).await };
        match self.run("checking", key, head) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn locate(&self, key: &str) -> PathBuf {
        PathBuf::from(self.url(key))
    }

    fn sync_dir(&self, _dir: &str) -> io::Result<()> {
        // Every PUT and DELETE is durable when it returns.
        Ok(())
    }

    fn read_ahead(&self) -> usize {
        // Each read is one ranged GET whose round trip dwarfs its transfer: 16 in flight
        // overlap them as restic's parallel pack downloads do.
        16
    }

    fn coalesce_bytes(&self) -> usize {
        // A file's consecutive chunks usually sit back to back in one pack: up to 4 MiB of them
        // per GET (64 MiB in flight at most with 16 reads).
        4 << 20
    }
}

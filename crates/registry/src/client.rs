//! [`Client`]: caches, one in-flight request per key, per-host limits and budgets around
//! [`crate::fetch`].

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::future::Shared;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use tracing::{Instrument as _, debug, debug_span};

use byoc_policy::reference::ImageRef;

use crate::auth::Credentials;
use crate::cache::{ByteLru, TtlMap, Weighed};
use crate::digest::Digest;
use crate::error::RegistryError;
use crate::fetch::{Fetcher, Target};

/// The default registry budget of one review.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(2);

/// How the client behaves. [`Default`] gives the documented defaults.
#[derive(Clone)]
pub struct ClientConfig {
    /// Registries (`host[:port]`) reached over plain HTTP; every other one over HTTPS.
    pub insecure_registries: Vec<String>,
    /// Pull credentials; anonymous where there are none.
    pub credentials: Credentials,
    /// The largest manifest or index read (default 4 MiB).
    pub max_manifest_bytes: usize,
    /// The largest blob (image configuration) read (default 4 MiB).
    pub max_blob_bytes: usize,
    /// Total bytes of content cached by digest (default 64 MiB).
    pub cache_bytes: usize,
    /// How long a tag → digest answer is reused (default 30 s; zero: never).
    pub tag_ttl: Duration,
    /// Tags remembered at most (default 10,000).
    pub max_tags: usize,
    /// Requests in flight per registry at most (default 8).
    pub per_host_concurrency: usize,
    /// The longest one fetch may take, whatever the callers' budgets (default 10 s): a
    /// fetch outlives a caller that gave up, so the next review finds it cached.
    pub request_timeout: Duration,
    /// TLS settings (roots); `None`: the system's roots with the ring provider.
    pub tls: Option<rustls::ClientConfig>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            insecure_registries: Vec::new(),
            credentials: Credentials::default(),
            max_manifest_bytes: 4 << 20,
            max_blob_bytes: 4 << 20,
            cache_bytes: 64 << 20,
            tag_ttl: Duration::from_secs(30),
            max_tags: 10_000,
            per_host_concurrency: 8,
            request_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("insecure_registries", &self.insecure_registries)
            .field("credentials", &self.credentials)
            .field("max_manifest_bytes", &self.max_manifest_bytes)
            .field("max_blob_bytes", &self.max_blob_bytes)
            .field("cache_bytes", &self.cache_bytes)
            .field("tag_ttl", &self.tag_ttl)
            .field("max_tags", &self.max_tags)
            .field("per_host_concurrency", &self.per_host_concurrency)
            .field("request_timeout", &self.request_timeout)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// The client cannot be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up HTTPS for registry lookups: {0}")]
pub struct BuildError(#[from] std::io::Error);

/// The time a review may spend on registry lookups, shared by all its lookups.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    deadline: Instant,
    total: Duration,
}

impl Budget {
    /// A budget of `total` from now.
    pub fn new(total: Duration) -> Self {
        Self {
            deadline: Instant::now() + total,
            total,
        }
    }

    /// When it runs out.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// What it was when it started (for messages).
    pub fn total(&self) -> Duration {
        self.total
    }
}

impl Default for Budget {
    /// [`DEFAULT_BUDGET`] from now.
    fn default() -> Self {
        Self::new(DEFAULT_BUDGET)
    }
}

/// A repository in a registry, as the API names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Repository {
    /// `host[:port]`, lowercase (`docker.io` for Docker Hub).
    pub registry: String,
    /// The path, such as `toolforge/heroku-runner`.
    pub path: String,
}

impl Repository {
    /// The repository of an image reference.
    pub fn of(image: &ImageRef) -> Self {
        Self {
            registry: image.registry(),
            path: image.path().to_owned(),
        }
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.path)
    }
}

/// Content fetched from a registry, verified against its digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// The content's digest (for a tag: the sha256 of the manifest served).
    pub digest: Digest,
    /// The `Content-Type` served, without parameters. For manifests it is the manifest's
    /// media type; for blobs registries send `application/octet-stream`, so the descriptor's
    /// media type is the one that counts.
    pub media_type: Option<String>,
    /// The raw bytes.
    pub bytes: Bytes,
}

/// Bookkeeping bytes per cached entry (key, digest, media type), counted against the bound.
const ENTRY_OVERHEAD: usize = 256;

impl Weighed for Fetched {
    fn weight(&self) -> usize {
        self.bytes.len() + ENTRY_OVERHEAD
    }
}

/// What the caches hold now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheStats {
    /// Manifests and blobs cached by digest.
    pub entries: usize,
    /// Their bytes, bookkeeping included.
    pub bytes: usize,
    /// Tags remembered (expired ones included until pushed out).
    pub tags: usize,
    /// Lookups answered from a cache since the client started.
    pub hits: u64,
    /// Lookups that were not (each joined or started a request).
    pub misses: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Tag,
    Manifest,
    Blob,
}

/// A lookup: what kind, where, and the tag or digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    kind: Kind,
    repository: Repository,
    reference: String,
}

type Flight = Shared<Pin<Box<dyn Future<Output = Result<Fetched, RegistryError>> + Send>>>;

/// A registry client: cheap to clone, one per process.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    fetcher: Arc<Fetcher>,
    config: ClientConfig,
    content: Mutex<ByteLru<Key, Fetched>>,
    tags: Mutex<TtlMap<Key, Digest>>,
    flights: Mutex<HashMap<Key, Flight>>,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Per-host semaphores kept when no request uses them, at most.
const IDLE_HOSTS: usize = 1024;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Client {
    /// A client with `config`.
    ///
    /// # Errors
    /// When `config.tls` is `None` and the system has no usable root certificates.
    pub fn new(config: ClientConfig) -> Result<Self, BuildError> {
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match config.tls.clone() {
            Some(tls) => builder.with_tls_config(tls),
            None => {
                builder.with_provider_and_native_roots(rustls::crypto::ring::default_provider())?
            }
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.request_timeout));
        http.set_nodelay(true);
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        let http = HyperClient::builder(TokioExecutor::new()).build(connector);
        let fetcher = Fetcher::new(
            http,
            config.credentials.clone(),
            config.insecure_registries.clone(),
        );
        Ok(Self {
            inner: Arc::new(Inner {
                fetcher: Arc::new(fetcher),
                content: Mutex::new(ByteLru::new(config.cache_bytes)),
                tags: Mutex::new(TtlMap::new(config.tag_ttl, config.max_tags)),
                flights: Mutex::new(HashMap::new()),
                hosts: Mutex::new(HashMap::new()),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                config,
            }),
        })
    }

    /// The manifest (or index) `tag` points to now, from the tag cache while its answer is
    /// younger than the TTL. Its `digest` is what `requireDigest` tells the user to pin.
    ///
    /// # Errors
    /// [`RegistryError`], naming the registry; [`RegistryError::Timeout`] when `budget`
    /// runs out first.
    pub async fn resolve_tag(
        &self,
        repository: &Repository,
        tag: &str,
        budget: &Budget,
    ) -> Result<Fetched, RegistryError> {
        let key = Key {
            kind: Kind::Tag,
            repository: repository.clone(),
            reference: tag.to_owned(),
        };
        let span = debug_span!("registry.resolve_tag", registry = %repository.registry, repository = %repository.path, tag);
        async {
            let cached = lock(&self.inner.tags).get(&key, Instant::now());
            if let Some(digest) = cached {
                debug!(%digest, "tag cache hit");
                self.inner.hits.fetch_add(1, Ordering::Relaxed);
                return self.manifest(repository, &digest, budget).await;
            }
            self.lookup(key, budget).await
        }
        .instrument(span)
        .await
    }

    /// The manifest (or index) with `digest`.
    ///
    /// # Errors
    /// As [`Client::resolve_tag`].
    pub async fn manifest(
        &self,
        repository: &Repository,
        digest: &Digest,
        budget: &Budget,
    ) -> Result<Fetched, RegistryError> {
        let key = Key {
            kind: Kind::Manifest,
            repository: repository.clone(),
            reference: digest.to_string(),
        };
        self.lookup(key, budget)
            .instrument(debug_span!("registry.manifest", registry = %repository.registry, repository = %repository.path, %digest))
            .await
    }

    /// The blob with `digest` (an image configuration: blobs are read whole, up to
    /// [`ClientConfig::max_blob_bytes`]).
    ///
    /// # Errors
    /// As [`Client::resolve_tag`].
    pub async fn blob(
        &self,
        repository: &Repository,
        digest: &Digest,
        budget: &Budget,
    ) -> Result<Fetched, RegistryError> {
        let key = Key {
            kind: Kind::Blob,
            repository: repository.clone(),
            reference: digest.to_string(),
        };
        self.lookup(key, budget)
            .instrument(debug_span!("registry.blob", registry = %repository.registry, repository = %repository.path, %digest))
            .await
    }

    /// The manifest an image reference names: by its digest when it has one (as the runtime
    /// pulls it), by its tag otherwise.
    ///
    /// # Errors
    /// As [`Client::resolve_tag`]; a digest this client cannot verify is
    /// [`RegistryError::Malformed`].
    pub async fn image_manifest(
        &self,
        image: &ImageRef,
        budget: &Budget,
    ) -> Result<Fetched, RegistryError> {
        let repository = Repository::of(image);
        match (image.digest(), image.tag()) {
            (Some(digest), _) => {
                let digest: Digest = digest.parse().map_err(|e: crate::DigestParseError| {
                    RegistryError::Malformed {
                        registry: repository.registry.clone(),
                        what: format!("image {image}"),
                        reason: e.to_string(),
                    }
                })?;
                self.manifest(&repository, &digest, budget).await
            }
            (None, tag) => {
                self.resolve_tag(&repository, tag.unwrap_or("latest"), budget)
                    .await
            }
        }
    }

    /// What the caches hold now.
    pub fn stats(&self) -> CacheStats {
        let content = lock(&self.inner.content);
        CacheStats {
            entries: content.len(),
            bytes: content.bytes(),
            tags: lock(&self.inner.tags).len(),
            hits: self.inner.hits.load(Ordering::Relaxed),
            misses: self.inner.misses.load(Ordering::Relaxed),
        }
    }

    /// A cached answer, or the in-flight fetch of `key` (started when there is none), awaited
    /// until `budget` runs out.
    async fn lookup(&self, key: Key, budget: &Budget) -> Result<Fetched, RegistryError> {
        if key.kind != Kind::Tag
            && let Some(hit) = lock(&self.inner.content).get(&key)
        {
            debug!("content cache hit");
            self.inner.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit);
        }
        self.inner.misses.fetch_add(1, Ordering::Relaxed);
        let flight = {
            let mut flights = lock(&self.inner.flights);
            match flights.get(&key) {
                Some(flight) => {
                    debug!("joining the request in flight");
                    flight.clone()
                }
                None => {
                    let flight = self.start(key.clone());
                    flights.insert(key.clone(), flight.clone());
                    flight
                }
            }
        };
        match tokio::time::timeout_at(budget.deadline.into(), flight).await {
            Ok(result) => result,
            Err(_) => Err(RegistryError::Timeout {
                registry: key.repository.registry.clone(),
                what: what(&key),
                budget: budget.total,
            }),
        }
    }

    /// Spawns the fetch of `key`: it waits for a per-host permit, is bounded by
    /// [`ClientConfig::request_timeout`], fills the caches and leaves the flight map.
    fn start(&self, key: Key) -> Flight {
        let inner = Arc::clone(&self.inner);
        let span = debug_span!("registry.fetch", what = %what(&key));
        let registry = key.repository.registry.clone();
        let what_failed = what(&key);
        let task = tokio::spawn(
            async move {
                let what = what(&key);
                let timeout = inner.config.request_timeout;
                let result = match tokio::time::timeout(timeout, inner.fetch(&key, &what)).await {
                    Ok(result) => result,
                    Err(_) => Err(RegistryError::Timeout {
                        registry: key.repository.registry.clone(),
                        what,
                        budget: timeout,
                    }),
                };
                match &result {
                    Ok(fetched) => inner.store(&key, fetched),
                    Err(e) => debug!(kind = e.kind(), error = %e, "fetch failed"),
                }
                lock(&inner.flights).remove(&key);
                result
            }
            .instrument(span),
        );
        async move {
            task.await.unwrap_or_else(|e| {
                Err(RegistryError::Unreachable {
                    registry,
                    what: what_failed,
                    reason: format!("the lookup task failed: {e}"),
                })
            })
        }
        .boxed()
        .shared()
    }
}

impl Inner {
    async fn fetch(&self, key: &Key, what: &str) -> Result<Fetched, RegistryError> {
        let semaphore = self.host_semaphore(&key.repository.registry);
        let _permit = semaphore
            .acquire_owned()
            .await
            .map_err(|_| RegistryError::Unreachable {
                registry: key.repository.registry.clone(),
                what: what.to_owned(),
                reason: "the client is shutting down".to_owned(),
            })?;
        let expected =
            match key.kind {
                Kind::Tag => None,
                Kind::Manifest | Kind::Blob => Some(key.reference.parse::<Digest>().map_err(
                    |e| RegistryError::Malformed {
                        registry: key.repository.registry.clone(),
                        what: what.to_owned(),
                        reason: e.to_string(),
                    },
                )?),
            };
        let (endpoint, manifest, limit) = match key.kind {
            Kind::Tag | Kind::Manifest => (
                format!("manifests/{}", key.reference),
                true,
                self.config.max_manifest_bytes,
            ),
            Kind::Blob => (
                format!("blobs/{}", key.reference),
                false,
                self.config.max_blob_bytes,
            ),
        };
        let started = Instant::now();
        let fetched = self
            .fetcher
            .fetch(&Target {
                registry: &key.repository.registry,
                path: &key.repository.path,
                endpoint: &endpoint,
                expected: expected.as_ref(),
                manifest,
                limit,
                what,
            })
            .await?;
        debug!(bytes = fetched.bytes.len(), elapsed = ?started.elapsed(), digest = %fetched.digest, "fetched");
        Ok(fetched)
    }

    fn store(&self, key: &Key, fetched: &Fetched) {
        let content_key = match key.kind {
            Kind::Tag => {
                lock(&self.tags).insert(key.clone(), fetched.digest.clone(), Instant::now());
                Key {
                    kind: Kind::Manifest,
                    repository: key.repository.clone(),
                    reference: fetched.digest.to_string(),
                }
            }
            Kind::Manifest | Kind::Blob => key.clone(),
        };
        lock(&self.content).insert(content_key, fetched.clone());
    }

    fn host_semaphore(&self, registry: &str) -> Arc<Semaphore> {
        let mut hosts = lock(&self.hosts);
        if hosts.len() > IDLE_HOSTS {
            hosts.retain(|_, s| Arc::strong_count(s) > 1);
        }
        Arc::clone(
            hosts.entry(registry.to_owned()).or_insert_with(|| {
                Arc::new(Semaphore::new(self.config.per_host_concurrency.max(1)))
            }),
        )
    }
}

/// For messages: `manifest PATH:TAG`, `manifest PATH@DIGEST`, `blob DIGEST of PATH`.
fn what(key: &Key) -> String {
    let path = &key.repository.path;
    match key.kind {
        Kind::Tag => format!("manifest {path}:{}", key.reference),
        Kind::Manifest => format!("manifest {path}@{}", key.reference),
        Kind::Blob => format!("blob {} of {path}", key.reference),
    }
}

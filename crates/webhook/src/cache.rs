//! The namespace cache: a watch of every Namespace, so a review never waits for the API server.
//! Namespaces are read as [`LeanNamespace`] (metadata only, without `managedFields` and
//! without `status`, which clients may fill with times Rust cannot read), and only their
//! identity and byoc labels and annotations are kept ([`LeanNamespace::retain_ours`]); the
//! requirements annotation is read once per change, when the watch sees it. The watch reports
//! its health to a [`WatchHealth`]: readiness and metrics
//! tell when it keeps failing.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use byoc_api::LeanNamespace;
use byoc_api::labels::REQUIREMENTS_ANNOTATION;
use byoc_api::requirements::NamespaceRequirements;
use byoc_policy::Allowance;
use byoc_policy::decision::NamespaceAnnotation;
use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

use crate::health::WatchHealth;
use crate::metrics::Metrics;

/// A namespace as cached: metadata only.
pub type CachedNamespace = LeanNamespace;

/// A requirements annotation as read: its text and what it says.
type Read = (String, Arc<NamespaceAnnotation>);

/// Read access to the cached namespaces. Cheap to clone.
#[derive(Clone)]
pub struct NamespaceCache {
    store: Store<CachedNamespace>,
    /// The requirements annotations read, by namespace name.
    read: Arc<RwLock<HashMap<String, Read>>>,
}

/// Reads a requirements annotation; an unreadable one is kept as its error, never as "none".
fn read_annotation(text: &str) -> NamespaceAnnotation {
    NamespaceRequirements::read(text).map_err(|e| e.to_string())
}

impl NamespaceCache {
    /// A cache reading `store` (filled by [`watch`], or by hand in tests).
    pub fn new(store: Store<CachedNamespace>) -> Self {
        Self {
            store,
            read: Arc::default(),
        }
    }

    /// What `namespace` is granted, and the requirements of its grants (`None`: it has no
    /// requirements annotation, so its grants require nothing). One read of the store, so
    /// both come from the same version of the namespace.
    pub fn grants(&self, namespace: &str) -> (Allowance, Option<Arc<NamespaceAnnotation>>) {
        let Some(ns) = self.store.get(&ObjectRef::new(namespace)) else {
            return (Allowance::default(), None);
        };
        let allowance = match &ns.metadata.labels {
            // Labels that break the contract grant nothing; the controller removes them.
            Some(labels) => Allowance::from_labels(labels).0,
            None => Allowance::default(),
        };
        let text = ns
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REQUIREMENTS_ANNOTATION));
        let Some(text) = text else {
            return (allowance, None);
        };
        let read = self.read.read().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, parsed)) = read.get(namespace)
            && seen == text
        {
            return (allowance, Some(Arc::clone(parsed)));
        }
        drop(read);
        // The watch loop has not read this version yet (or the store was filled by hand):
        // read it now, and keep it for the next review.
        let parsed = Arc::new(read_annotation(text));
        let mut read = self.read.write().unwrap_or_else(|e| e.into_inner());
        read.insert(namespace.to_owned(), (text.clone(), Arc::clone(&parsed)));
        (allowance, Some(parsed))
    }

    /// Reads the requirements annotation of `ns` as the watch delivers it.
    fn seen(&self, ns: &CachedNamespace) {
        let Some(name) = ns.metadata.name.as_deref() else {
            return;
        };
        let text = ns
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REQUIREMENTS_ANNOTATION));
        let mut read = self.read.write().unwrap_or_else(|e| e.into_inner());
        match text {
            None => {
                read.remove(name);
            }
            Some(text) if read.get(name).is_some_and(|(seen, _)| seen == text) => {}
            Some(text) => {
                let parsed = read_annotation(text);
                if let Err(error) = &parsed {
                    tracing::warn!(namespace = name, %error, "unreadable requirements annotation; its grants admit nothing until it is repaired");
                }
                read.insert(name.to_owned(), (text.clone(), Arc::new(parsed)));
            }
        }
    }

    /// Forgets the annotations of namespaces no longer cached (after a re-list).
    fn prune(&self) {
        let mut read = self.read.write().unwrap_or_else(|e| e.into_inner());
        read.retain(|name, _| self.store.get(&ObjectRef::new(name)).is_some());
    }

    fn forget(&self, ns: &CachedNamespace) {
        if let Some(name) = ns.metadata.name.as_deref() {
            let mut read = self.read.write().unwrap_or_else(|e| e.into_inner());
            read.remove(name);
        }
    }

    /// What `namespace` is granted, read from its labels. A namespace that is not cached (yet)
    /// is granted nothing beyond the default registries: the cache fails closed.
    pub fn allowance(&self, namespace: &str) -> Allowance {
        self.grants(namespace).0
    }

    /// How many namespaces are cached.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether no namespace is cached.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// Completes once the first full list has been cached.
    pub async fn synced(&self) -> Result<(), reflector::store::WriterDropped> {
        self.store.wait_until_ready().await
    }
}

/// How long one watch request lasts at most (`timeoutSeconds`): the API server ends it and the
/// watch starts another, so a working watch hears from the API server at least this often.
pub const WATCH_TIMEOUT: Duration = Duration::from_secs(45);

/// How long the watch's client waits for the next byte: a connection that went silent (a
/// black-holed API server) fails after it, instead of keeping the watch stuck as "healthy".
/// Above [`WATCH_TIMEOUT`], so a quiet but working watch never trips it.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The client of the namespace watch: `config` with [`READ_TIMEOUT`], and every answer of the
/// API server (to the watch's list and watch requests, the only requests it makes) reported to
/// `health`.
pub fn client(mut config: kube::Config, health: &WatchHealth) -> kube::Result<Client> {
    config.read_timeout = Some(READ_TIMEOUT);
    let health = health.clone();
    let observe = move |response: http::Response<Box<kube::client::DynBody>>| {
        if response.status().is_success() {
            health.contact(Instant::now());
        }
        response
    };
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&tower::util::MapResponseLayer::new(observe))
        .build())
}

/// Starts caching every namespace through `client` (made by [`client`] with the same
/// `health`). Returns the cache and the future that keeps it current (it runs until dropped,
/// retrying with backoff on errors), reports failures to `health` and keeps the cache's
/// metrics in `metrics` current.
pub fn watch(
    client: Client,
    health: WatchHealth,
    metrics: Metrics,
) -> (NamespaceCache, impl Future<Output = ()> + Send) {
    let (store, writer) = reflector::store();
    let cache = NamespaceCache::new(store);
    let reader = cache.clone();
    // Every list, the first and each re-list after the watch expired, is a consistent read
    // (no `resourceVersion=0`): behind several API servers, one whose watch cache lags could
    // otherwise bring back labels of a grant already revoked. Since Kubernetes 1.31 the API
    // server serves such a list from its watch cache once the cache is known to be current.
    let config = watcher::Config::default()
        .timeout(u32::try_from(WATCH_TIMEOUT.as_secs()).unwrap_or(u32::MAX));
    // Full objects (namespaces are small), read leniently: the metadata API's
    // `PartialObjectMeta` would fail on a `managedFields` time a tenant wrote.
    let stream = watcher::watcher(Api::<CachedNamespace>::all(client), config)
        .default_backoff()
        .modify(LeanNamespace::retain_ours)
        .reflect(writer);
    let task = async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match &event {
                Ok(Event::Apply(ns) | Event::InitApply(ns)) => reader.seen(ns),
                Ok(Event::Delete(ns)) => reader.forget(ns),
                Ok(Event::InitDone) => reader.prune(),
                _ => {}
            }
            match event {
                // Counting once per change, not per object of the initial list.
                Ok(Event::Apply(_) | Event::Delete(_) | Event::InitDone) => {
                    health.contact(Instant::now());
                    metrics
                        .cached_namespaces
                        .set(i64::try_from(reader.len()).unwrap_or(i64::MAX));
                }
                Ok(Event::Init | Event::InitApply(_)) => health.contact(Instant::now()),
                Err(error) => {
                    health.failed(Instant::now(), &error.to_string());
                    tracing::warn!(%error, "namespace watch failed; retrying");
                }
            }
        }
    };
    (cache, task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    /// The watch's first list and its re-list after the API server says the watch expired
    /// (410) are both consistent reads: a list at `resourceVersion=0` may come from a lagging
    /// API server's cache and bring back revoked labels.
    #[tokio::test]
    async fn every_list_of_the_watch_is_a_consistent_read() {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let service = tower::service_fn({
            let seen = seen.clone();
            move |req: http::Request<kube::client::Body>| {
                let uri = req.uri().to_string();
                seen.lock().unwrap().push(uri.clone());
                async move {
                    let body = if uri.contains("watch=true") {
                        "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\
                         \"apiVersion\":\"v1\",\"status\":\"Failure\",\"reason\":\"Expired\",\
                         \"message\":\"too old resource version\",\"code\":410}}\n"
                    } else {
                        r#"{"kind":"NamespaceList","apiVersion":"v1",
                           "metadata":{"resourceVersion":"7"},"items":[]}"#
                    };
                    let response = http::Response::builder()
                        .header("content-type", "application/json")
                        .body(body.to_owned())
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(response)
                }
            }
        });
        let client = Client::new(service, "default");
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::register(&mut registry);
        let (_cache, task) = watch(client, WatchHealth::new(Instant::now()), metrics);
        let lists = || -> Vec<String> {
            let seen = seen.lock().unwrap();
            seen.iter()
                .filter(|u| !u.contains("watch=true"))
                .cloned()
                .collect()
        };
        let task = tokio::spawn(task);
        let deadline = Instant::now() + Duration::from_secs(20);
        while lists().len() < 2 {
            assert!(
                Instant::now() < deadline,
                "no re-list: {:?}",
                seen.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        task.abort();
        for uri in lists() {
            assert!(
                !uri.contains("resourceVersion=0"),
                "a list that any API server cache may answer: {uri}"
            );
        }
    }

    fn namespace(name: &str, labels: &[(&str, &str)]) -> CachedNamespace {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let meta = ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..ObjectMeta::default()
        };
        LeanNamespace { metadata: meta }
    }

    #[test]
    fn allowances_come_from_labels() {
        let now: jiff::Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&Event::Apply(namespace(
            "tool-a",
            &[("byoc.toolforge.org/quay.io", "never"), ("team", "a")],
        )));
        writer.apply_watcher_event(&Event::Apply(namespace(
            "tool-any",
            &[("byoc.toolforge.org/any", "never")],
        )));
        writer.apply_watcher_event(&Event::Apply(namespace(
            "tool-junk",
            &[("byoc.toolforge.org/any", "soon")],
        )));
        let cache = NamespaceCache::new(store);
        assert_eq!(cache.len(), 3);

        let a = cache.allowance("tool-a");
        assert_eq!(
            a.registries_at(now)
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["quay.io"]
        );
        assert!(!a.allows_any_at(now));
        assert!(cache.allowance("tool-any").allows_any_at(now));
        assert!(cache.allowance("tool-junk").is_empty());
        assert!(cache.allowance("not-cached").is_empty());
    }

    #[test]
    fn requirements_are_read_once_per_change_and_an_unreadable_value_is_kept_as_its_error() {
        let (store, mut writer) = reflector::store();
        let cache = NamespaceCache::new(store);
        let good = r#"{"version":1,"registries":{"quay.io":[{"expires":"never","requirements":{"requireDigest":true}}]}}"#;
        let with = |name: &str, value: Option<&str>| {
            let mut ns = namespace(name, &[("byoc.toolforge.org/quay.io", "never")]);
            ns.metadata.annotations =
                value.map(|v| [(REQUIREMENTS_ANNOTATION.to_owned(), v.to_owned())].into());
            ns
        };
        for (name, value) in [
            ("tool-a", Some(good)),
            ("tool-b", Some("{not json")),
            ("tool-c", None),
        ] {
            let ns = with(name, value);
            writer.apply_watcher_event(&Event::Apply(ns.clone()));
            cache.seen(&ns);
        }
        let (allowance, a) = cache.grants("tool-a");
        assert!(!allowance.is_empty());
        let a = a.expect("tool-a has requirements");
        assert!(
            a.as_ref()
                .as_ref()
                .is_ok_and(|r| r.registries.contains_key("quay.io"))
        );
        // The same value is not read again: the same Arc comes back.
        assert!(Arc::ptr_eq(&a, &cache.grants("tool-a").1.unwrap()));
        let b = cache
            .grants("tool-b")
            .1
            .expect("an unreadable value is not 'none'");
        let error = b.as_ref().as_ref().expect_err("unreadable");
        assert!(error.contains(REQUIREMENTS_ANNOTATION), "{error}");
        assert!(cache.grants("tool-c").1.is_none());
        // A change the loop has not seen yet is read from the store, never stale.
        writer.apply_watcher_event(&Event::Apply(with("tool-a", Some("{}"))));
        assert!(cache.grants("tool-a").1.unwrap().is_err());
        // Deleted: forgotten.
        let gone = with("tool-b", Some("{not json"));
        writer.apply_watcher_event(&Event::Delete(gone.clone()));
        cache.forget(&gone);
        assert!(cache.grants("tool-b").1.is_none());
        assert_eq!(cache.read.read().unwrap().len(), 1);
        cache.prune();
        assert_eq!(
            cache.read.read().unwrap().len(),
            1,
            "tool-a is still cached"
        );
    }
}

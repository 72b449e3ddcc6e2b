//! The namespace cache: a watch of every Namespace, so a review never waits for the API server.
//! Namespaces are read as [`LeanNamespace`] (metadata only, without `managedFields` and
//! without `status`, which clients may fill with times Rust cannot read), and only names and
//! labels are kept.

use std::future::Future;

use byoc_api::LeanNamespace;
use byoc_policy::Allowance;
use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use prometheus_client::metrics::gauge::Gauge;

/// A namespace as cached: metadata only.
pub type CachedNamespace = LeanNamespace;

/// Read access to the cached namespaces. Cheap to clone.
#[derive(Clone)]
pub struct NamespaceCache {
    store: Store<CachedNamespace>,
}

impl NamespaceCache {
    /// A cache reading `store` (filled by [`watch`], or by hand in tests).
    pub fn new(store: Store<CachedNamespace>) -> Self {
        Self { store }
    }

    /// What `namespace` is granted, read from its labels. A namespace that is not cached (yet)
    /// is granted nothing beyond the default registries: the cache fails closed.
    pub fn allowance(&self, namespace: &str) -> Allowance {
        let Some(ns) = self.store.get(&ObjectRef::new(namespace)) else {
            return Allowance::default();
        };
        match &ns.metadata.labels {
            // Labels that break the contract grant nothing; the controller removes them.
            Some(labels) => Allowance::from_labels(labels).0,
            None => Allowance::default(),
        }
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

/// Starts caching every namespace through `client`. Returns the cache and the future that keeps
/// it current (it runs until dropped, retrying with backoff on errors) and sets `size`.
pub fn watch(client: Client, size: Gauge) -> (NamespaceCache, impl Future<Output = ()> + Send) {
    let (store, writer) = reflector::store();
    let cache = NamespaceCache::new(store);
    let reader = cache.clone();
    // `any_semantic`: the first list comes from the API server's watch cache, which is what
    // makes start-up fast with thousands of namespaces.
    let config = watcher::Config::default().any_semantic();
    // Full objects (namespaces are small), read leniently: the metadata API's
    // `PartialObjectMeta` would fail on a `managedFields` time a tenant wrote.
    let stream = watcher::watcher(Api::<CachedNamespace>::all(client), config)
        .default_backoff()
        .modify(strip)
        .reflect(writer);
    let task = async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                // Counting once per change, not per object of the initial list.
                Ok(Event::Apply(_) | Event::Delete(_) | Event::InitDone) => {
                    size.set(i64::try_from(reader.len()).unwrap_or(i64::MAX));
                }
                Ok(Event::Init | Event::InitApply(_)) => {}
                Err(error) => tracing::warn!(%error, "namespace watch failed; retrying"),
            }
        }
    };
    (cache, task)
}

/// Drops what the webhook never reads, which is most of a namespace's metadata.
fn strip(ns: &mut CachedNamespace) {
    let meta = &mut ns.metadata;
    meta.annotations = None;
    meta.owner_references = None;
    meta.finalizers = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;
    use std::collections::BTreeMap;

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
    fn strip_keeps_name_and_labels() {
        let mut ns = namespace("tool-a", &[("team", "a")]);
        ns.metadata.annotations = Some([("big".to_owned(), "x".repeat(1000))].into());
        strip(&mut ns);
        assert_eq!(ns.metadata.name.as_deref(), Some("tool-a"));
        assert_eq!(ns.metadata.labels.as_ref().map(BTreeMap::len), Some(1));
        assert!(ns.metadata.annotations.is_none());
    }
}

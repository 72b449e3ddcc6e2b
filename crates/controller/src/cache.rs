//! The grant cache: every ByocGrant as the watch last saw it, and an index of the grants by
//! the namespace they target, so that a namespace's grants are found without scanning every
//! grant. (A scan per namespace sync and per namespace event made the work quadratic in the
//! number of grants; docs/benchmarks.md has the numbers.)

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use byoc_api::StoredGrant;
use futures::TryStreamExt;
use futures::stream::{self, Stream};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::Event;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

/// Every ByocGrant, and which of them target each namespace. Cheap to clone.
#[derive(Clone)]
pub struct GrantCache {
    store: Store<StoredGrant>,
    index: Arc<RwLock<Index>>,
}

impl GrantCache {
    /// Watches every ByocGrant through `api`: see [`GrantCache::follow`].
    pub fn watch(
        api: Api<StoredGrant>,
    ) -> (
        Self,
        impl Stream<Item = Result<StoredGrant, watcher::Error>> + Send + 'static,
    ) {
        Self::follow(watcher(api, watcher::Config::default()))
    }

    /// Follows `events` (a watch of every ByocGrant). Returns the cache and the stream of
    /// grants to reconcile that drives the grant controller:
    ///
    /// - the index takes each event before the store, so once the store is ready (and from
    ///   then on) the index knows every grant the store holds; it may briefly name one the store
    ///   does not, which [`GrantCache::targeting`] skips;
    /// - a grant is yielded once both hold it: a changed grant at once, every grant when a
    ///   (re-)list is complete. (Yielded during the list, a grant created while the watch was
    ///   down would be looked up in the previous store, found missing and dropped.)
    pub fn follow(
        events: impl Stream<Item = Result<Event<StoredGrant>, watcher::Error>> + Send + 'static,
    ) -> (
        Self,
        impl Stream<Item = Result<StoredGrant, watcher::Error>> + Send + 'static,
    ) {
        let (store, writer) = reflector::store();
        let index = Arc::<RwLock<Index>>::default();
        let changes = {
            let (index, store) = (index.clone(), store.clone());
            events
                .inspect_ok(move |event| write(&index).apply(event))
                .reflect(writer)
                .map_ok(move |event| {
                    let grants = match event {
                        Event::Apply(grant) => vec![Arc::new(grant)],
                        Event::InitDone => store.state(),
                        Event::Init | Event::InitApply(_) | Event::Delete(_) => Vec::new(),
                    };
                    // Cloned as the controller takes them, not all at once.
                    stream::iter(grants.into_iter().map(|g| Ok(Arc::unwrap_or_clone(g))))
                })
                .try_flatten()
        };
        (Self { store, index }, changes)
    }

    /// The store, as a reflector fills it.
    pub fn store(&self) -> &Store<StoredGrant> {
        &self.store
    }

    /// The grants that target `namespace`, readable or not, as the store holds them now.
    pub fn targeting(&self, namespace: &str) -> Vec<Arc<StoredGrant>> {
        let names: Vec<String> = self
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .live
            .names(namespace)
            .cloned()
            .collect();
        names
            .iter()
            .filter_map(|name| self.store.get(&ObjectRef::new(name)))
            // The index takes each event just before the store: the store has the last word.
            .filter(|grant| grant.target_namespace() == Some(namespace))
            .collect()
    }

    /// A cache holding `grants`, for tests.
    #[cfg(test)]
    pub(crate) fn filled(grants: Vec<StoredGrant>) -> Self {
        let events = std::iter::once(Event::Init)
            .chain(grants.into_iter().map(Event::InitApply))
            .chain(std::iter::once(Event::InitDone));
        let (cache, changes) = Self::follow(stream::iter(events.map(Ok)));
        futures::executor::block_on(changes.try_collect::<Vec<_>>()).expect("no watch error");
        cache
    }
}

fn write(index: &RwLock<Index>) -> std::sync::RwLockWriteGuard<'_, Index> {
    index.write().unwrap_or_else(PoisonError::into_inner)
}

/// Grant names by the namespace they target, following the watch events as the store does.
#[derive(Debug, Default)]
struct Index {
    live: Targets,
    /// Built during a re-list; replaces `live` once complete, when the store swaps too.
    relist: Option<Targets>,
}

impl Index {
    fn apply(&mut self, event: &Event<StoredGrant>) {
        match event {
            Event::Apply(grant) => self.live.insert(grant),
            Event::Delete(grant) => self.live.remove(&grant.name_any()),
            Event::Init => self.relist = Some(Targets::default()),
            Event::InitApply(grant) => self.relist.get_or_insert_default().insert(grant),
            Event::InitDone => self.live = self.relist.take().unwrap_or_default(),
        }
    }
}

/// Which grants target each namespace, and the other way round.
#[derive(Debug, Default, PartialEq)]
struct Targets {
    by_namespace: HashMap<String, BTreeSet<String>>,
    of_grant: HashMap<String, String>,
}

impl Targets {
    fn names(&self, namespace: &str) -> impl Iterator<Item = &String> {
        self.by_namespace.get(namespace).into_iter().flatten()
    }

    fn insert(&mut self, grant: &StoredGrant) {
        let name = grant.name_any();
        let target = grant.target_namespace();
        if self.of_grant.get(&name).map(String::as_str) == target {
            return;
        }
        self.remove(&name);
        if let Some(namespace) = target {
            self.by_namespace
                .entry(namespace.to_owned())
                .or_default()
                .insert(name.clone());
            self.of_grant.insert(name, namespace.to_owned());
        }
    }

    fn remove(&mut self, name: &str) {
        let Some(namespace) = self.of_grant.remove(name) else {
            return;
        };
        if let Some(names) = self.by_namespace.get_mut(&namespace) {
            names.remove(name);
            if names.is_empty() {
                self.by_namespace.remove(&namespace);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{grant, unreadable};

    fn g(name: &str, namespace: &str) -> StoredGrant {
        grant(name, namespace, &[], None).into()
    }

    /// Runs `events` through [`GrantCache::follow`]. Checks that each grant it yields is in
    /// the cache by then, and that afterwards the index is exactly the one the store implies.
    /// Returns the cache and the names yielded, sorted.
    async fn follow(events: Vec<Event<StoredGrant>>) -> (GrantCache, Vec<String>) {
        let (cache, changes) = GrantCache::follow(stream::iter(events.into_iter().map(Ok)));
        let mut changes = std::pin::pin!(changes);
        let mut yielded = Vec::new();
        while let Some(grant) = changes.try_next().await.expect("no watch error") {
            let name = grant.name_any();
            if let Some(ns) = grant.target_namespace() {
                let cached = cache.targeting(ns);
                assert!(
                    cached.iter().any(|g| g.name_any() == name),
                    "{name} yielded before the cache had it"
                );
            }
            yielded.push(name);
        }
        let mut implied = Targets::default();
        for grant in cache.store.state() {
            implied.insert(&grant);
        }
        assert_eq!(cache.index.read().unwrap().live, implied, "index vs store");
        yielded.sort();
        (cache, yielded)
    }

    #[tokio::test]
    async fn the_index_follows_the_watch() {
        use Event::{Apply, Delete, Init, InitApply, InitDone};
        let listed = || {
            vec![
                Init,
                InitApply(g("a", "ns-1")),
                InitApply(g("b", "ns-2")),
                InitDone,
            ]
        };
        // (what, events, grants of ns-1, ns-2 and ns-3 afterwards, grants yielded)
        type Case = (
            &'static str,
            Vec<Event<StoredGrant>>,
            [&'static [&'static str]; 3],
            &'static [&'static str],
        );
        let cases: Vec<Case> = vec![
            ("nothing listed", vec![Init, InitDone], [&[], &[], &[]], &[]),
            ("a list", listed(), [&["a"], &["b"], &[]], &["a", "b"]),
            (
                "an applied grant joins its namespace, in name order",
                [listed(), vec![Apply(g("0", "ns-1")), Apply(g("c", "ns-3"))]].concat(),
                [&["0", "a"], &["b"], &["c"]],
                &["0", "a", "b", "c"],
            ),
            (
                "a change that keeps the namespace is one entry",
                [listed(), vec![Apply(g("a", "ns-1")), Apply(g("a", "ns-1"))]].concat(),
                [&["a"], &["b"], &[]],
                &["a", "a", "a", "b"],
            ),
            (
                "a deleted grant leaves, and is not reconciled",
                [listed(), vec![Delete(g("a", "ns-1"))]].concat(),
                [&[], &["b"], &[]],
                &["a", "b"],
            ),
            (
                "deleting what is not there changes nothing",
                [listed(), vec![Delete(g("z", "ns-1"))]].concat(),
                [&["a"], &["b"], &[]],
                &["a", "b"],
            ),
            (
                "a grant whose namespace changed moves",
                [listed(), vec![Apply(g("a", "ns-3"))]].concat(),
                [&[], &["b"], &["a"]],
                &["a", "a", "b"],
            ),
            (
                "an unreadable grant that names a namespace counts",
                [listed(), vec![Apply(unreadable("u", "ns-2", &[]))]].concat(),
                [&["a"], &["b", "u"], &[]],
                &["a", "b", "u"],
            ),
            (
                "a re-list replaces everything once done, and yields every grant then",
                [listed(), vec![Init, InitApply(g("c", "ns-3")), InitDone]].concat(),
                [&[], &[], &["c"]],
                &["a", "b", "c"],
            ),
            (
                "during a re-list the last complete list still answers",
                [listed(), vec![Init, InitApply(g("c", "ns-3"))]].concat(),
                [&["a"], &["b"], &[]],
                &["a", "b"],
            ),
        ];
        for (what, events, want, want_yielded) in cases {
            let (cache, yielded) = follow(events).await;
            let got: Vec<Vec<String>> = ["ns-1", "ns-2", "ns-3"]
                .iter()
                .map(|ns| cache.targeting(ns).iter().map(|g| g.name_any()).collect())
                .collect();
            assert_eq!(got, want, "{what}");
            assert_eq!(yielded, want_yielded, "{what}");
        }
    }

    #[test]
    fn the_store_has_the_last_word() {
        // The index names `a` for ns-1, but the store holds `a` for ns-2.
        let (store, mut writer) = reflector::store();
        let mut index = Index::default();
        for event in [
            Event::Init,
            Event::InitApply(g("a", "ns-1")),
            Event::InitDone,
        ] {
            writer.apply_watcher_event(&event);
            index.apply(&event);
        }
        writer.apply_watcher_event(&Event::Apply(g("a", "ns-2")));
        let cache = GrantCache {
            store,
            index: Arc::new(RwLock::new(index)),
        };
        assert!(cache.targeting("ns-1").is_empty());
    }

    #[tokio::test]
    async fn an_unreadable_grant_without_a_namespace_targets_nothing() {
        let mut nameless = unreadable("u", "ns-1", &[]);
        if let StoredGrant::Unreadable(u) = &mut nameless {
            u.namespace = None;
        }
        let events = vec![
            Event::Init,
            Event::InitApply(g("a", "ns-1")),
            Event::InitDone,
            Event::Apply(nameless),
        ];
        let (cache, yielded) = follow(events).await;
        assert_eq!(cache.targeting("ns-1").len(), 1);
        assert_eq!(yielded, ["a", "u"]);
    }
}

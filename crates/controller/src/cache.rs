//! The grant cache: every ByocGrant as the watch last saw it, and an index of the grants by
//! the namespace they target, so that a namespace's grants are found without scanning every
//! grant. (A scan per namespace sync and per namespace event made the work quadratic in the
//! number of grants; docs/benchmarks.md has the numbers.)

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use byoc_api::StoredGrant;
use futures::{Stream, TryStreamExt};
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
    /// Watches every ByocGrant through `api`. Returns the cache and the stream of changed
    /// grants that drives the grant controller; the cache and its index take each change
    /// before the stream yields it, so a reconcile it triggers reads both up to date.
    pub fn watch(
        api: Api<StoredGrant>,
    ) -> (
        Self,
        impl Stream<Item = Result<StoredGrant, watcher::Error>> + Send + 'static,
    ) {
        let (store, writer) = reflector::store();
        let index = Arc::<RwLock<Index>>::default();
        let changes = {
            let index = index.clone();
            watcher(api, watcher::Config::default())
                .reflect(writer)
                .inspect_ok(move |event| {
                    index
                        .write()
                        .unwrap_or_else(PoisonError::into_inner)
                        .apply(event);
                })
                .applied_objects()
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
            // The store takes each event just before the index: trust the store.
            .filter(|grant| grant.target_namespace() == Some(namespace))
            .collect()
    }

    /// A cache holding `grants`, for tests.
    #[cfg(test)]
    pub(crate) fn filled(grants: Vec<StoredGrant>) -> Self {
        let (store, mut writer) = reflector::store();
        let mut index = Index::default();
        let events = std::iter::once(Event::Init)
            .chain(grants.into_iter().map(Event::InitApply))
            .chain(std::iter::once(Event::InitDone));
        for event in events {
            writer.apply_watcher_event(&event);
            index.apply(&event);
        }
        Self {
            store,
            index: Arc::new(RwLock::new(index)),
        }
    }
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
#[derive(Debug, Default)]
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

    /// Names of the grants each namespace has after `events`, as `GrantCache::targeting` sees
    /// them with a store that took the same events.
    fn after(events: Vec<Event<StoredGrant>>, namespaces: &[&str]) -> Vec<Vec<String>> {
        let (store, mut writer) = reflector::store();
        let mut index = Index::default();
        for event in &events {
            writer.apply_watcher_event(event);
            index.apply(event);
        }
        let cache = GrantCache {
            store,
            index: Arc::new(RwLock::new(index)),
        };
        namespaces
            .iter()
            .map(|ns| cache.targeting(ns).iter().map(|g| g.name_any()).collect())
            .collect()
    }

    #[test]
    fn the_index_follows_the_watch() {
        use Event::{Apply, Delete, Init, InitApply, InitDone};
        let listed = || {
            vec![
                Init,
                InitApply(g("a", "ns-1")),
                InitApply(g("b", "ns-2")),
                InitDone,
            ]
        };
        // (what, events, grants of ns-1, ns-2 and ns-3 afterwards)
        type Case = (
            &'static str,
            Vec<Event<StoredGrant>>,
            [&'static [&'static str]; 3],
        );
        let cases: Vec<Case> = vec![
            ("nothing listed", vec![Init, InitDone], [&[], &[], &[]]),
            ("a list", listed(), [&["a"], &["b"], &[]]),
            (
                "an applied grant joins its namespace, in name order",
                [listed(), vec![Apply(g("0", "ns-1")), Apply(g("c", "ns-3"))]].concat(),
                [&["0", "a"], &["b"], &["c"]],
            ),
            (
                "a change that keeps the namespace is one entry",
                [listed(), vec![Apply(g("a", "ns-1")), Apply(g("a", "ns-1"))]].concat(),
                [&["a"], &["b"], &[]],
            ),
            (
                "a deleted grant leaves",
                [listed(), vec![Delete(g("a", "ns-1"))]].concat(),
                [&[], &["b"], &[]],
            ),
            (
                "deleting what is not there changes nothing",
                [listed(), vec![Delete(g("z", "ns-1"))]].concat(),
                [&["a"], &["b"], &[]],
            ),
            (
                "a grant whose namespace changed moves",
                [listed(), vec![Apply(g("a", "ns-3"))]].concat(),
                [&[], &["b"], &["a"]],
            ),
            (
                "an unreadable grant that names a namespace counts",
                [listed(), vec![Apply(unreadable("u", "ns-2", &[]))]].concat(),
                [&["a"], &["b", "u"], &[]],
            ),
            (
                "a re-list replaces everything once done",
                [
                    listed(),
                    listed(),
                    vec![Init, InitApply(g("c", "ns-3")), InitDone],
                ]
                .concat(),
                [&[], &[], &["c"]],
            ),
            (
                "during a re-list the last complete list still answers",
                [listed(), vec![Init, InitApply(g("c", "ns-3"))]].concat(),
                [&["a"], &["b"], &[]],
            ),
        ];
        for (what, events, want) in cases {
            let got = after(events, &["ns-1", "ns-2", "ns-3"]);
            let want: Vec<Vec<String>> = want
                .iter()
                .map(|names| names.iter().map(|n| n.to_string()).collect())
                .collect();
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn the_store_has_the_last_word() {
        // The index took `a` for ns-1 but the store moved on: `a` no longer targets ns-1.
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

    #[test]
    fn an_unreadable_grant_without_a_namespace_targets_nothing() {
        let mut events = vec![
            Event::Init,
            Event::InitApply(g("a", "ns-1")),
            Event::InitDone,
        ];
        let mut nameless = unreadable("u", "ns-1", &[]);
        if let StoredGrant::Unreadable(u) = &mut nameless {
            u.namespace = None;
        }
        events.push(Event::Apply(nameless));
        assert_eq!(after(events, &["ns-1"]), [["a"]]);
    }
}

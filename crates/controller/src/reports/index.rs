//! The trimmed pod-bearing objects of every namespace, kept from one watch per kind and
//! indexed by namespace, so a report is built from its namespace's objects alone.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use byoc_policy::inventory::{Source, Trimmed};
use kube::runtime::watcher::Event;
use tokio::sync::watch;

/// The objects of one namespace, by kind and name.
type Objects = HashMap<(Source, String), Trimmed>;

/// Every watched object, by namespace.
pub struct Index {
    inner: Mutex<Inner>,
    synced: watch::Sender<bool>,
}

#[derive(Default)]
struct Inner {
    by_namespace: HashMap<String, Objects>,
    /// The objects of a kind whose watch is (re)listing, until the list is complete.
    relisting: HashMap<Source, Vec<Trimmed>>,
    /// The kinds whose first list is complete.
    listed: HashSet<Source>,
}

impl Default for Index {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            synced: watch::channel(false).0,
        }
    }
}

impl Index {
    /// Becomes true once every kind of [`Source::RUNNING`] has been listed.
    pub fn synced(&self) -> watch::Receiver<bool> {
        self.synced.subscribe()
    }

    /// The objects of `namespace`.
    pub fn objects(&self, namespace: &str) -> Vec<Trimmed> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .by_namespace
            .get(namespace)
            .map(|objects| objects.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Applies one watch event of `source`; returns the namespaces whose objects changed.
    /// A change the inventory does not read (a pod's conditions, a resourceVersion) changes
    /// nothing.
    pub fn apply(&self, source: Source, event: Event<Trimmed>) -> BTreeSet<String> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut changed = BTreeSet::new();
        match event {
            Event::Apply(object) => {
                if inner.insert(source, object.clone()) {
                    changed.insert(object.namespace().to_owned());
                }
            }
            Event::Delete(object) => {
                if inner.remove(source, object.namespace(), object.name()) {
                    changed.insert(object.namespace().to_owned());
                }
            }
            Event::Init => {
                inner.relisting.insert(source, Vec::new());
            }
            Event::InitApply(object) => inner.relisting.entry(source).or_default().push(object),
            Event::InitDone => {
                let listed = inner.relisting.remove(&source).unwrap_or_default();
                let listed_keys: HashSet<(&str, &str)> =
                    listed.iter().map(|o| (o.namespace(), o.name())).collect();
                let gone: Vec<(String, String)> = inner
                    .by_namespace
                    .iter()
                    .flat_map(|(ns, objects)| {
                        objects
                            .keys()
                            .filter(|(s, name)| {
                                *s == source && !listed_keys.contains(&(ns.as_str(), name.as_str()))
                            })
                            .map(|(_, name)| (ns.clone(), name.clone()))
                    })
                    .collect();
                for (ns, name) in gone {
                    inner.remove(source, &ns, &name);
                    changed.insert(ns);
                }
                for object in listed {
                    let ns = object.namespace().to_owned();
                    if inner.insert(source, object) {
                        changed.insert(ns);
                    }
                }
                inner.listed.insert(source);
                if Source::RUNNING.iter().all(|s| inner.listed.contains(s)) {
                    self.synced.send_replace(true);
                }
            }
        }
        changed
    }
}

impl Inner {
    /// Stores `object`; whether anything the inventory reads changed.
    fn insert(&mut self, source: Source, mut object: Trimmed) -> bool {
        // Every update bumps it; the inventory never reads it.
        object.metadata.resource_version = None;
        let key = (source, object.name().to_owned());
        let objects = self
            .by_namespace
            .entry(object.namespace().to_owned())
            .or_default();
        match objects.get(&key) {
            Some(old) if *old == object => false,
            _ => {
                objects.insert(key, object);
                true
            }
        }
    }

    /// Forgets an object; whether it was there.
    fn remove(&mut self, source: Source, namespace: &str, name: &str) -> bool {
        let Some(objects) = self.by_namespace.get_mut(namespace) else {
            return false;
        };
        let removed = objects.remove(&(source, name.to_owned())).is_some();
        if objects.is_empty() {
            self.by_namespace.remove(namespace);
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, name: &str, image: &str, rv: &str) -> Trimmed {
        Trimmed::from_value(
            Source::Pod,
            &json!({
                "metadata": {"name": name, "namespace": ns, "uid": name, "resourceVersion": rv},
                "spec": {"containers": [{"name": "c", "image": image}]},
                "status": {"phase": "Running"}
            }),
        )
        .unwrap()
    }

    fn names(index: &Index, ns: &str) -> Vec<String> {
        let mut names: Vec<String> = index
            .objects(ns)
            .iter()
            .map(|o| o.name().to_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn changes_are_reported_per_namespace_and_only_when_read_fields_change() {
        let index = Index::default();
        let synced = index.synced();
        assert!(
            index
                .apply(Source::Pod, Event::Apply(pod("a", "p", "x.org/a", "1")))
                .contains("a")
        );
        // Only the resourceVersion moved: nothing the inventory reads.
        assert!(
            index
                .apply(Source::Pod, Event::Apply(pod("a", "p", "x.org/a", "2")))
                .is_empty()
        );
        assert_eq!(
            index.apply(Source::Pod, Event::Apply(pod("a", "p", "x.org/b", "3"))),
            BTreeSet::from(["a".to_owned()])
        );
        assert!(
            index
                .apply(Source::Pod, Event::Delete(pod("b", "q", "x.org/a", "1")))
                .is_empty()
        );
        // A relist drops what it no longer holds and adds what is new.
        index.apply(Source::Pod, Event::Init);
        index.apply(Source::Pod, Event::InitApply(pod("b", "q", "x.org/a", "4")));
        assert!(names(&index, "b").is_empty(), "not before the list is done");
        assert_eq!(
            index.apply(Source::Pod, Event::InitDone),
            BTreeSet::from(["a".to_owned(), "b".to_owned()])
        );
        assert!(names(&index, "a").is_empty());
        assert_eq!(names(&index, "b"), ["q"]);
        assert!(!*synced.borrow(), "the other kinds are not listed yet");
        for source in Source::RUNNING {
            if source != Source::Pod {
                index.apply(source, Event::Init);
                index.apply(source, Event::InitDone);
            }
        }
        assert!(*synced.borrow());
        assert_eq!(
            index.apply(Source::Pod, Event::Delete(pod("b", "q", "x.org/a", "5"))),
            BTreeSet::from(["b".to_owned()])
        );
        assert!(names(&index, "b").is_empty());
    }
}

//! The two caches, pure (the caller passes the time): content by digest, least recently used
//! first out, bounded in total bytes; tag → digest with a time to live, bounded in entries.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Something whose size counts against [`ByteLru`]'s bound.
pub(crate) trait Weighed {
    /// Bytes held.
    fn weight(&self) -> usize;
}

/// A least-recently-used map bounded by the total [`Weighed::weight`] of its values.
pub(crate) struct ByteLru<K, V> {
    capacity: usize,
    bytes: usize,
    clock: u64,
    entries: HashMap<K, (V, u64)>,
    order: BTreeMap<u64, K>,
}

impl<K: Clone + Eq + Hash, V: Clone + Weighed> ByteLru<K, V> {
    /// An empty cache holding at most `capacity` bytes.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            bytes: 0,
            clock: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    /// The value, marked as just used.
    pub(crate) fn get(&mut self, key: &K) -> Option<V> {
        self.clock += 1;
        let (value, used) = self.entries.get_mut(key)?;
        self.order.remove(used);
        *used = self.clock;
        self.order.insert(self.clock, key.clone());
        Some(value.clone())
    }

    /// Stores `value`, evicting the least recently used entries until it fits; a value larger
    /// than the whole capacity is not stored.
    pub(crate) fn insert(&mut self, key: K, value: V) {
        let weight = value.weight();
        if weight > self.capacity {
            return;
        }
        self.remove(&key);
        while self.bytes + weight > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((old, _)) = self.entries.remove(&oldest) {
                self.bytes -= old.weight();
            }
        }
        self.clock += 1;
        self.bytes += weight;
        self.order.insert(self.clock, key.clone());
        self.entries.insert(key, (value, self.clock));
    }

    fn remove(&mut self, key: &K) {
        if let Some((old, used)) = self.entries.remove(key) {
            self.bytes -= old.weight();
            self.order.remove(&used);
        }
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

/// A map whose entries expire `ttl` after they were stored, bounded in entries (the oldest
/// stored goes first when full).
pub(crate) struct TtlMap<K, V> {
    ttl: Duration,
    max_entries: usize,
    entries: HashMap<K, (V, Instant)>,
}

impl<K: Clone + Eq + Hash, V: Clone> TtlMap<K, V> {
    /// An empty map.
    pub(crate) fn new(ttl: Duration, max_entries: usize) -> Self {
        Self {
            ttl,
            max_entries,
            entries: HashMap::new(),
        }
    }

    /// The value stored less than `ttl` before `now`.
    pub(crate) fn get(&self, key: &K, now: Instant) -> Option<V> {
        let (value, stored) = self.entries.get(key)?;
        (now.saturating_duration_since(*stored) < self.ttl).then(|| value.clone())
    }

    /// Stores `value` as of `now`. When full, expired entries go first, then the oldest.
    pub(crate) fn insert(&mut self, key: K, value: V, now: Instant) {
        if self.ttl.is_zero() || self.max_entries == 0 {
            return;
        }
        if self.entries.len() >= self.max_entries && !self.entries.contains_key(&key) {
            let ttl = self.ttl;
            self.entries
                .retain(|_, (_, stored)| now.saturating_duration_since(*stored) < ttl);
            if self.entries.len() >= self.max_entries
                && let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, stored))| *stored)
                    .map(|(k, _)| k.clone())
            {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(key, (value, now));
    }

    /// Entries held, expired ones included until they are pushed out.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Weighed for Vec<u8> {
        fn weight(&self) -> usize {
            self.len()
        }
    }

    #[test]
    fn evicts_least_recently_used_by_bytes() {
        let mut lru = ByteLru::new(10);
        lru.insert("a", vec![0; 4]);
        lru.insert("b", vec![0; 4]);
        assert!(lru.get(&"a").is_some(), "a is now the most recent");
        lru.insert("c", vec![0; 4]);
        assert_eq!(lru.get(&"b"), None, "b was least recently used");
        assert!(lru.get(&"a").is_some());
        assert!(lru.get(&"c").is_some());
        assert_eq!((lru.len(), lru.bytes()), (2, 8));
    }

    #[test]
    fn one_big_value_evicts_several_and_too_big_is_not_stored() {
        let mut lru = ByteLru::new(10);
        for key in ["a", "b", "c"] {
            lru.insert(key, vec![0; 3]);
        }
        lru.insert("big", vec![0; 8]);
        assert_eq!((lru.len(), lru.bytes()), (1, 8));
        lru.insert("huge", vec![0; 11]);
        assert_eq!(lru.get(&"huge"), None);
        assert!(lru.get(&"big").is_some(), "a refused value evicts nothing");
    }

    #[test]
    fn replacing_a_key_counts_its_bytes_once() {
        let mut lru = ByteLru::new(10);
        lru.insert("a", vec![0; 6]);
        lru.insert("a", vec![0; 7]);
        assert_eq!((lru.len(), lru.bytes()), (1, 7));
    }

    proptest::proptest! {
        #[test]
        fn never_holds_more_than_capacity(ops in proptest::collection::vec((0u8..20, 0usize..40), 0..200)) {
            let mut lru = ByteLru::new(64);
            for (key, size) in ops {
                lru.insert(key, vec![0; size]);
                proptest::prop_assert!(lru.bytes() <= 64);
                let sum: usize = lru.entries.values().map(|(v, _)| v.len()).sum();
                proptest::prop_assert_eq!(sum, lru.bytes());
                proptest::prop_assert_eq!(lru.order.len(), lru.entries.len());
            }
        }
    }

    #[test]
    fn ttl_entries_expire() {
        let t0 = Instant::now();
        let mut map = TtlMap::new(Duration::from_secs(30), 10);
        map.insert("tag", 1, t0);
        assert_eq!(map.get(&"tag", t0 + Duration::from_secs(29)), Some(1));
        assert_eq!(map.get(&"tag", t0 + Duration::from_secs(30)), None);
        map.insert("tag", 2, t0 + Duration::from_secs(31));
        assert_eq!(map.get(&"tag", t0 + Duration::from_secs(32)), Some(2));
    }

    #[test]
    fn ttl_map_is_bounded_dropping_expired_then_oldest() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut map = TtlMap::new(s(10), 2);
        map.insert("a", 1, t0);
        map.insert("b", 2, t0 + s(5));
        map.insert("c", 3, t0 + s(11));
        assert_eq!(map.len(), 2);
        assert_eq!(map.get(&"a", t0 + s(11)), None, "expired a went first");
        map.insert("d", 4, t0 + s(12));
        assert_eq!(map.len(), 2);
        assert_eq!(map.get(&"c", t0 + s(12)), Some(3));
        assert_eq!(map.get(&"d", t0 + s(12)), Some(4));
    }

    #[test]
    fn zero_ttl_caches_nothing() {
        let t0 = Instant::now();
        let mut map = TtlMap::new(Duration::ZERO, 10);
        map.insert("a", 1, t0);
        assert_eq!(map.get(&"a", t0), None);
    }
}

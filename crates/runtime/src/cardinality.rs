//! Bounded metric labels: a label whose values tenants choose (namespace names, registry hosts)
//! gets at most `limit` series of its own, however many values they invent; every other value is
//! summed under the value [`OTHER`].
//!
//! Places go by first come: a value that has a sample keeps its series until its sample goes,
//! and a freed place goes to the next value that is set (a value summed in `other` moves to a
//! series of its own on its next update when a place is free). Never re-ranked by size: series
//! would appear and vanish as counts cross, and a dashboard could not follow one value. A value
//! spelled `other` is always summed under `other`. The exact per-value figures stay where they
//! come from (the PolicyReports, `kubectl byoc images`); only their export is bounded.

use std::collections::HashMap;

/// The label value every value without a series of its own is summed under.
pub const OTHER: &str = "other";

/// The default of `--metrics-label-limit`.
pub const DEFAULT_LIMIT: usize = 100;

/// The gauge samples of one bounded label: per value, `N` numbers (one per series the value
/// has, e.g. one per result). Pure bookkeeping; [`BoundedGauges::set`] says which series to
/// write.
#[derive(Debug)]
pub struct BoundedGauges<const N: usize> {
    limit: usize,
    /// Values with series of their own, and their numbers.
    own: HashMap<String, [i64; N]>,
    /// The others, and what each adds to `other`.
    pooled: HashMap<String, [i64; N]>,
    /// The sum of `pooled`.
    other: [i64; N],
}

/// A write for the caller's gauge family: the series of one label value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sample<const N: usize> {
    /// Set the series of this value to these numbers.
    Set(String, [i64; N]),
    /// Remove the series of this value.
    Remove(String),
}

impl<const N: usize> BoundedGauges<N> {
    /// At most `limit` values get series of their own (plus one series set for `other`).
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            own: HashMap::new(),
            pooled: HashMap::new(),
            other: [0; N],
        }
    }

    /// Sets the numbers of `value` (`None`: it has none any more) and returns the series to
    /// write, in order: at most one for `value`'s own series and one for `other`.
    pub fn set(&mut self, value: &str, numbers: Option<[i64; N]>) -> Vec<Sample<N>> {
        let mut writes = Vec::new();
        match numbers {
            None => {
                if self.own.remove(value).is_some() {
                    writes.push(Sample::Remove(value.to_owned()));
                } else if let Some(old) = self.pooled.remove(value) {
                    self.add_other(old, -1);
                    writes.push(self.other_sample());
                }
            }
            Some(new) => {
                if let Some(numbers) = self.own.get_mut(value) {
                    *numbers = new;
                    writes.push(Sample::Set(value.to_owned(), new));
                } else if value != OTHER && self.own.len() < self.limit {
                    if let Some(old) = self.pooled.remove(value) {
                        self.add_other(old, -1);
                        writes.push(self.other_sample());
                    }
                    self.own.insert(value.to_owned(), new);
                    writes.push(Sample::Set(value.to_owned(), new));
                } else {
                    if let Some(old) = self.pooled.insert(value.to_owned(), new) {
                        self.add_other(old, -1);
                    }
                    self.add_other(new, 1);
                    writes.push(self.other_sample());
                }
            }
        }
        writes
    }

    fn add_other(&mut self, numbers: [i64; N], sign: i64) {
        for (sum, n) in self.other.iter_mut().zip(numbers) {
            *sum = sum.saturating_add(sign.saturating_mul(n));
        }
    }

    fn other_sample(&self) -> Sample<N> {
        if self.pooled.is_empty() {
            Sample::Remove(OTHER.to_owned())
        } else {
            Sample::Set(OTHER.to_owned(), self.other)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Applies writes to a map of series, as a gauge family would hold them.
    fn apply<const N: usize>(series: &mut BTreeMap<String, [i64; N]>, writes: Vec<Sample<N>>) {
        for w in writes {
            match w {
                Sample::Set(v, n) => series.insert(v, n),
                Sample::Remove(v) => series.remove(&v),
            };
        }
    }

    #[test]
    fn ten_thousand_values_make_at_most_limit_plus_one_series() {
        let mut gauges = BoundedGauges::<2>::new(100);
        let mut series = BTreeMap::new();
        for i in 0..10_000 {
            apply(&mut series, gauges.set(&format!("tool-{i}"), Some([1, 2])));
            assert!(series.len() <= 101, "{} series after {i}", series.len());
        }
        assert_eq!(series.len(), 101);
        assert_eq!(series["tool-0"], [1, 2]);
        assert_eq!(series["tool-99"], [1, 2]);
        assert!(!series.contains_key("tool-100"));
        assert_eq!(series[OTHER], [9_900, 19_800], "the rest, summed");
        // Updates of pooled values move the sum by their difference.
        apply(&mut series, gauges.set("tool-5000", Some([0, 0])));
        assert_eq!(series[OTHER], [9_899, 19_798]);
    }

    #[test]
    fn a_freed_place_goes_to_the_next_value_and_other_goes_when_empty() {
        let mut gauges = BoundedGauges::<1>::new(2);
        let mut series = BTreeMap::new();
        for v in ["a", "b", "c", "d"] {
            apply(&mut series, gauges.set(v, Some([1])));
        }
        assert_eq!(
            series.keys().collect::<Vec<_>>(),
            ["a", "b", OTHER],
            "{series:?}"
        );
        assert_eq!(series[OTHER], [2]);
        // `a` goes; `c` takes its place at its next update, and leaves `other`.
        apply(&mut series, gauges.set("a", None));
        assert_eq!(series.keys().collect::<Vec<_>>(), ["b", OTHER]);
        apply(&mut series, gauges.set("c", Some([5])));
        assert_eq!(series.keys().collect::<Vec<_>>(), ["b", "c", OTHER]);
        assert_eq!(series[OTHER], [1], "only d");
        // The last pooled value goes: so does `other`.
        apply(&mut series, gauges.set("d", None));
        assert_eq!(series.keys().collect::<Vec<_>>(), ["b", "c"]);
        // Removing what was never set writes nothing.
        assert!(gauges.set("never", None).is_empty());
    }

    #[test]
    fn a_value_spelled_other_is_summed_under_other() {
        let mut gauges = BoundedGauges::<1>::new(5);
        let mut series = BTreeMap::new();
        apply(&mut series, gauges.set(OTHER, Some([3])));
        apply(&mut series, gauges.set("x", Some([1])));
        assert_eq!(series.keys().collect::<Vec<_>>(), [OTHER, "x"]);
        assert_eq!(series[OTHER], [3]);
        apply(&mut series, gauges.set(OTHER, None));
        assert_eq!(series.keys().collect::<Vec<_>>(), ["x"]);
    }
}

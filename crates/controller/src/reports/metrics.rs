//! The inventory's Prometheus metrics: `byoc_workloads{namespace,result}` (top-level workloads
//! and bare pods by their report result), `byoc_images_in_use{registry}` (distinct images in
//! use, by the registry they resolve to) and `byoc_controller_report_writes_total{kind}`.
//! Namespaces and registries are the tenants' choice: each label has at most
//! `--metrics-label-limit` values of its own, the rest summed under `other`
//! ([`byoc_runtime::cardinality`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use byoc_api::report::{Outcome, Summary};
use byoc_runtime::cardinality::{BoundedGauges, Sample};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The outcomes a namespace's gauge is kept for.
const OUTCOMES: [Outcome; 4] = [Outcome::Pass, Outcome::Fail, Outcome::Warn, Outcome::Error];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkloadLabels {
    namespace: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegistryLabels {
    registry: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    kind: &'static str,
}

/// A report write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportWrite {
    /// A write of a namespace's report (created, or applied server-side): `apply`.
    Apply,
    /// The deletion of a report no longer wanted: `delete`.
    Delete,
}

/// The inventory's metrics.
#[derive(Debug)]
pub struct ReportMetrics {
    workloads: Family<WorkloadLabels, Gauge>,
    images: Family<RegistryLabels, Gauge>,
    writes: Family<WriteLabels, Counter>,
    state: Mutex<State>,
}

/// What each namespace last contributed, so a namespace's update moves the gauges by its
/// difference only.
#[derive(Debug)]
struct State {
    /// `(registry, image)` pairs in use, per namespace.
    images: HashMap<String, BTreeSet<(String, String)>>,
    /// How many namespaces use each image, per registry.
    users: HashMap<String, HashMap<String, usize>>,
    /// The workload counts per namespace, one per outcome, bounded.
    workload_series: BoundedGauges<4>,
    /// The distinct images per registry, bounded.
    image_series: BoundedGauges<1>,
}

impl ReportMetrics {
    /// Creates the metrics and registers them (`byoc_workloads`, `byoc_images_in_use`,
    /// `byoc_controller_report_writes`).
    /// `label_limit` bounds the namespaces and the registries that get series of their own.
    pub fn register(registry: &mut Registry, label_limit: usize) -> Self {
        let metrics = Self {
            workloads: Family::default(),
            images: Family::default(),
            writes: Family::default(),
            state: Mutex::new(State {
                images: HashMap::new(),
                users: HashMap::new(),
                workload_series: BoundedGauges::new(label_limit),
                image_series: BoundedGauges::new(label_limit),
            }),
        };
        registry.register(
            "byoc_workloads",
            "Top-level workloads and bare pods in non-exempt namespaces, by their PolicyReport result",
            metrics.workloads.clone(),
        );
        registry.register(
            "byoc_images_in_use",
            "Distinct images run by workloads in non-exempt namespaces, by the registry they resolve to",
            metrics.images.clone(),
        );
        registry.register(
            "byoc_controller_report_writes",
            "PolicyReport writes (apply, delete)",
            metrics.writes.clone(),
        );
        metrics
    }

    /// Records the results and images of `namespace`.
    pub fn record(&self, namespace: &str, summary: Summary, images: BTreeSet<(String, String)>) {
        let counts = OUTCOMES.map(|outcome| {
            i64::from(match outcome {
                Outcome::Pass => summary.pass,
                Outcome::Fail => summary.fail,
                Outcome::Warn => summary.warn,
                _ => summary.error,
            })
        });
        self.set_workloads(namespace, Some(counts));
        self.set_images(namespace, images);
    }

    /// Forgets a namespace that is gone, exempt, or has no workload left.
    pub fn forget(&self, namespace: &str) {
        self.set_workloads(namespace, None);
        self.set_images(namespace, BTreeSet::new());
    }

    /// Counts a report write.
    pub fn write(&self, kind: ReportWrite) {
        let kind = match kind {
            ReportWrite::Apply => "apply",
            ReportWrite::Delete => "delete",
        };
        self.writes.get_or_create(&WriteLabels { kind }).inc();
    }

    fn set_workloads(&self, namespace: &str, counts: Option<[i64; 4]>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for sample in state.workload_series.set(namespace, counts) {
            for (i, outcome) in OUTCOMES.into_iter().enumerate() {
                let labels = |namespace: &str| WorkloadLabels {
                    namespace: namespace.to_owned(),
                    result: outcome.as_str(),
                };
                match &sample {
                    Sample::Set(ns, counts) => {
                        self.workloads.get_or_create(&labels(ns)).set(counts[i]);
                    }
                    Sample::Remove(ns) => {
                        self.workloads.remove(&labels(ns));
                    }
                }
            }
        }
    }

    fn set_images(&self, namespace: &str, images: BTreeSet<(String, String)>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let State {
            images: by_namespace,
            users,
            image_series,
            ..
        } = &mut *state;
        let old = by_namespace.remove(namespace).unwrap_or_default();
        let mut touched = BTreeSet::new();
        for (registry, image) in old.difference(&images) {
            if let Some(count) = users.get_mut(registry).and_then(|u| u.get_mut(image)) {
                *count -= 1;
                if *count == 0 {
                    users.get_mut(registry).map(|u| u.remove(image));
                }
            }
            touched.insert(registry.clone());
        }
        for (registry, image) in images.difference(&old) {
            *users
                .entry(registry.clone())
                .or_default()
                .entry(image.clone())
                .or_default() += 1;
            touched.insert(registry.clone());
        }
        for registry in touched {
            let in_use = users.get(&registry).map_or(0, HashMap::len);
            if in_use == 0 {
                users.remove(&registry);
            }
            let in_use = (in_use > 0).then(|| [i64::try_from(in_use).unwrap_or(i64::MAX)]);
            for sample in image_series.set(&registry, in_use) {
                match sample {
                    Sample::Set(registry, [n]) => {
                        self.images
                            .get_or_create(&RegistryLabels { registry })
                            .set(n);
                    }
                    Sample::Remove(registry) => {
                        self.images.remove(&RegistryLabels { registry });
                    }
                }
            }
        }
        if !images.is_empty() {
            by_namespace.insert(namespace.to_owned(), images);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    fn images(list: &[(&str, &str)]) -> BTreeSet<(String, String)> {
        list.iter()
            .map(|(r, i)| ((*r).to_owned(), (*i).to_owned()))
            .collect()
    }

    #[test]
    fn gauges_follow_each_namespace() {
        let mut registry = Registry::default();
        let m = ReportMetrics::register(&mut registry, 100);
        let summary = Summary::of([Outcome::Pass, Outcome::Pass, Outcome::Fail]);
        m.record(
            "a",
            summary,
            images(&[("quay.io", "quay.io/x:1"), ("docker.io", "nginx")]),
        );
        m.record(
            "b",
            Summary::of([Outcome::Pass]),
            images(&[("quay.io", "quay.io/x:1")]),
        );
        m.write(ReportWrite::Apply);
        let text = encode(&registry);
        for want in [
            r#"byoc_workloads{namespace="a",result="pass"} 2"#,
            r#"byoc_workloads{namespace="a",result="fail"} 1"#,
            r#"byoc_workloads{namespace="b",result="pass"} 1"#,
            r#"byoc_images_in_use{registry="quay.io"} 1"#,
            r#"byoc_images_in_use{registry="docker.io"} 1"#,
            r#"byoc_controller_report_writes_total{kind="apply"} 1"#,
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        m.record(
            "a",
            Summary::of([Outcome::Pass]),
            images(&[("quay.io", "quay.io/y:2")]),
        );
        m.forget("b");
        let text = encode(&registry);
        assert!(
            text.contains(r#"byoc_images_in_use{registry="quay.io"} 1"#),
            "{text}"
        );
        assert!(!text.contains(r#"registry="docker.io""#), "{text}");
        assert!(!text.contains(r#"namespace="b""#), "{text}");
        assert!(
            text.contains(r#"byoc_workloads{namespace="a",result="fail"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn ten_thousand_namespaces_and_registries_make_at_most_limit_plus_one_series() {
        let mut registry = Registry::default();
        let m = ReportMetrics::register(&mut registry, 100);
        let count = |text: &str, metric: &str| {
            let prefix = format!("{metric}{{");
            text.lines().filter(|l| l.starts_with(&prefix)).count()
        };
        for i in 0..10_000 {
            let host = format!("r{i}.example");
            m.record(
                &format!("tool-{i}"),
                Summary::of([Outcome::Fail]),
                images(&[(&host, &format!("{host}/x:1"))]),
            );
        }
        let text = encode(&registry);
        // One series per outcome for each of 100 namespaces and `other`.
        assert_eq!(count(&text, "byoc_workloads"), 101 * 4, "{text}");
        assert_eq!(count(&text, "byoc_images_in_use"), 101);
        for want in [
            r#"byoc_workloads{namespace="tool-0",result="fail"} 1"#,
            r#"byoc_workloads{namespace="other",result="fail"} 9900"#,
            r#"byoc_images_in_use{registry="r99.example"} 1"#,
            r#"byoc_images_in_use{registry="other"} 9900"#,
        ] {
            assert!(text.contains(want), "missing {want}");
        }
        assert!(!text.contains(r#"namespace="tool-100""#));
        for i in 0..10_000 {
            m.forget(&format!("tool-{i}"));
        }
        let text = encode(&registry);
        assert_eq!(count(&text, "byoc_workloads"), 0, "{text}");
        assert_eq!(count(&text, "byoc_images_in_use"), 0, "{text}");
    }
}

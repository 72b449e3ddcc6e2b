//! The inventory's Prometheus metrics: `byoc_workloads{namespace,result}` (top-level workloads
//! and bare pods by their report result), `byoc_images_in_use{registry}` (distinct images in
//! use, by the registry they resolve to) and `byoc_controller_report_writes_total{kind}`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use byoc_api::report::{Outcome, Summary};
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
#[derive(Debug, Default)]
pub struct ReportMetrics {
    workloads: Family<WorkloadLabels, Gauge>,
    images: Family<RegistryLabels, Gauge>,
    writes: Family<WriteLabels, Counter>,
    state: Mutex<State>,
}

/// What each namespace last contributed, so a namespace's update moves the gauges by its
/// difference only.
#[derive(Debug, Default)]
struct State {
    /// `(registry, image)` pairs in use, per namespace.
    images: HashMap<String, BTreeSet<(String, String)>>,
    /// How many namespaces use each image, per registry.
    users: HashMap<String, HashMap<String, usize>>,
}

impl ReportMetrics {
    /// Creates the metrics and registers them (`byoc_workloads`, `byoc_images_in_use`,
    /// `byoc_controller_report_writes`).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
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
        for outcome in OUTCOMES {
            let count = match outcome {
                Outcome::Pass => summary.pass,
                Outcome::Fail => summary.fail,
                Outcome::Warn => summary.warn,
                _ => summary.error,
            };
            self.workloads
                .get_or_create(&WorkloadLabels {
                    namespace: namespace.to_owned(),
                    result: outcome.as_str(),
                })
                .set(i64::from(count));
        }
        self.set_images(namespace, images);
    }

    /// Forgets a namespace that is gone, exempt, or has no workload left.
    pub fn forget(&self, namespace: &str) {
        for outcome in OUTCOMES {
            self.workloads.remove(&WorkloadLabels {
                namespace: namespace.to_owned(),
                result: outcome.as_str(),
            });
        }
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

    fn set_images(&self, namespace: &str, images: BTreeSet<(String, String)>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let State {
            images: by_namespace,
            users,
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
            let labels = RegistryLabels {
                registry: registry.clone(),
            };
            if in_use == 0 {
                users.remove(&registry);
                self.images.remove(&labels);
            } else {
                self.images
                    .get_or_create(&labels)
                    .set(i64::try_from(in_use).unwrap_or(i64::MAX));
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
        let m = ReportMetrics::register(&mut registry);
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
}

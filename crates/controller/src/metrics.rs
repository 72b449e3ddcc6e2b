//! Prometheus metrics of the controller, served on the admin port's `/metrics`.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use byoc_api::ReadyReason;
use jiff::Timestamp;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Which reconciler a sample is about.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Reconciler {
    /// The ByocGrant reconciler (labels, status, finalizer, expiry): `byocgrant`.
    Grant,
    /// The Namespace reconciler (our labels on namespaces without grants): `namespace`.
    Namespace,
    /// The ByocRequest reconciler (request status true to its grant): `byocrequest`.
    Request,
}

/// Which kind of namespace label write a sample is about.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum LabelWrite {
    /// The merge patch that sets the desired labels and deletes stale ones: `set`.
    Set,
    /// A second merge patch deleting labels under the prefix written meanwhile:
    /// `remove_foreign`.
    RemoveForeign,
}

impl EncodeLabelValue for Reconciler {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        let name = match self {
            Self::Grant => "byocgrant",
            Self::Namespace => "namespace",
            Self::Request => "byocrequest",
        };
        EncodeLabelValue::encode(&name, encoder)
    }
}

impl EncodeLabelValue for LabelWrite {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        let name = match self {
            Self::Set => "set",
            Self::RemoveForeign => "remove_foreign",
        };
        EncodeLabelValue::encode(&name, encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcilerLabels {
    controller: Reconciler,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: Reconciler,
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExpiryLabels {
    grant: String,
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    kind: LabelWrite,
}

/// Every metric the controller exports.
#[derive(Debug)]
pub struct Metrics {
    reconciles: Family<ReconcilerLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<ReconcilerLabels, Histogram, fn() -> Histogram>,
    grants: Family<StateLabels, Gauge>,
    label_writes: Family<WriteLabels, Counter>,
    status_writes: Counter,
    request_status_writes: Counter,
    leader: Gauge,
    expiries: Family<ExpiryLabels, Gauge>,
    /// The last state seen per grant, so the gauge moves by one per change.
    states: Mutex<HashMap<String, ReadyReason>>,
    /// The namespace of each grant with an expiry sample, so that the sample can be removed.
    expiring: Mutex<HashMap<String, String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            errors: Family::default(),
            // 1 ms to ~8 s.
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 14))
            }),
            grants: Family::default(),
            label_writes: Family::default(),
            status_writes: Counter::default(),
            request_status_writes: Counter::default(),
            leader: Gauge::default(),
            expiries: Family::default(),
            states: Mutex::default(),
            expiring: Mutex::default(),
        }
    }
}

impl Metrics {
    /// Creates the metrics and registers them under `byoc_controller_`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        // Named for what it describes, not for who exports it: alerts read it as a grant's.
        registry.register(
            "byoc_grant_expiry_timestamp_seconds",
            "When each ByocGrant with spec.expiresAt ends, in Unix seconds (exported by the \
             leader)",
            metrics.expiries.clone(),
        );
        let r = registry.sub_registry_with_prefix("byoc_controller");
        r.register(
            "reconciles",
            "Reconciles run by the leader",
            metrics.reconciles.clone(),
        );
        r.register(
            "reconcile_errors",
            "Failed reconciles, by error kind",
            metrics.errors.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "How long reconciles run by the leader took",
            metrics.duration.clone(),
        );
        r.register(
            "grants",
            "ByocGrants by the reason of their Ready condition",
            metrics.grants.clone(),
        );
        r.register(
            "namespace_label_writes",
            "Patches sent to namespace labels (apply, or removal of foreign labels)",
            metrics.label_writes.clone(),
        );
        r.register(
            "status_writes",
            "Patches sent to ByocGrant statuses",
            metrics.status_writes.clone(),
        );
        r.register(
            "request_status_writes",
            "Updates sent to ByocRequest statuses",
            metrics.request_status_writes.clone(),
        );
        r.register(
            "leader",
            "1 while this replica holds the lease",
            metrics.leader.clone(),
        );
        metrics
    }

    /// Counts a reconcile and times it until the returned guard drops.
    pub fn reconcile(&self, controller: Reconciler) -> ReconcileTimer<'_> {
        self.reconciles
            .get_or_create(&ReconcilerLabels { controller })
            .inc();
        ReconcileTimer {
            metrics: self,
            controller,
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile.
    pub fn error(&self, controller: Reconciler, error: &crate::Error) {
        self.errors
            .get_or_create(&ErrorLabels {
                controller,
                error: error.metric_label(),
            })
            .inc();
    }

    /// Counts a patch of namespace labels.
    pub fn label_write(&self, kind: LabelWrite) {
        self.label_writes.get_or_create(&WriteLabels { kind }).inc();
    }

    /// Counts a patch of a grant's status.
    pub fn status_write(&self) {
        self.status_writes.inc();
    }

    /// Counts an update of a request's status.
    pub fn request_status_write(&self) {
        self.request_status_writes.inc();
    }

    /// Records the state of a grant.
    pub fn grant_state(&self, grant: &str, reason: ReadyReason) {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        let old = states.insert(grant.to_owned(), reason);
        if old == Some(reason) {
            return;
        }
        if let Some(old) = old {
            self.state_gauge(old).dec();
        }
        self.state_gauge(reason).inc();
    }

    /// Records when `grant` ends: `Some((namespace, expiresAt))`, or `None` when it does not
    /// (or cannot be read), which removes its sample.
    pub fn grant_expiry(&self, grant: &str, expiry: Option<(&str, Timestamp)>) {
        let mut expiring = self.expiring.lock().unwrap_or_else(PoisonError::into_inner);
        let old = match expiry {
            Some((namespace, _)) => expiring.insert(grant.to_owned(), namespace.to_owned()),
            None => expiring.remove(grant),
        };
        if let Some(old) = old.filter(|old| expiry.is_none_or(|(ns, _)| ns != old)) {
            self.expiries.remove(&ExpiryLabels {
                grant: grant.to_owned(),
                namespace: old,
            });
        }
        if let Some((namespace, at)) = expiry {
            self.expiries
                .get_or_create(&ExpiryLabels {
                    grant: grant.to_owned(),
                    namespace: namespace.to_owned(),
                })
                .set(at.as_second());
        }
    }

    /// Forgets a deleted grant.
    pub fn grant_deleted(&self, grant: &str) {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = states.remove(grant) {
            self.state_gauge(old).dec();
        }
        drop(states);
        self.grant_expiry(grant, None);
    }

    /// Records whether this replica is the leader. A replica that is not drops its grant
    /// expiry samples: only the leader keeps them current, so only it exports them.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
        if !leader {
            let mut expiring = self.expiring.lock().unwrap_or_else(PoisonError::into_inner);
            expiring.clear();
            self.expiries.clear();
        }
    }

    fn state_gauge(&self, reason: ReadyReason) -> Gauge {
        self.grants.get_or_create_owned(&StateLabels {
            state: reason.as_str(),
        })
    }
}

/// Observes a reconcile's duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: Reconciler,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        let labels = ReconcilerLabels {
            controller: self.controller,
        };
        self.metrics
            .duration
            .get_or_create(&labels)
            .observe(self.start.elapsed().as_secs_f64());
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

    #[test]
    fn grant_states_move_by_one() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.grant_state("a", ReadyReason::NamespaceNotFound);
        m.grant_state("b", ReadyReason::Applied);
        m.grant_state("a", ReadyReason::Applied);
        m.grant_state("a", ReadyReason::Applied);
        let text = encode(&registry);
        assert!(
            text.contains(r#"byoc_controller_grants{state="Applied"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"byoc_controller_grants{state="NamespaceNotFound"} 0"#),
            "{text}"
        );
        m.grant_deleted("a");
        m.grant_deleted("a");
        let text = encode(&registry);
        assert!(
            text.contains(r#"byoc_controller_grants{state="Applied"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn grant_expiries_follow_the_grants() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        let at: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        m.grant_expiry("a", Some(("tool-a", at)));
        m.grant_expiry("b", Some(("tool-b", at)));
        m.grant_expiry(
            "b",
            Some(("tool-b", at + jiff::SignedDuration::from_secs(60))),
        );
        let text = encode(&registry);
        for want in [
            r#"byoc_grant_expiry_timestamp_seconds{grant="a",namespace="tool-a"} 1796083200"#,
            r#"byoc_grant_expiry_timestamp_seconds{grant="b",namespace="tool-b"} 1796083260"#,
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        // Leadership lost: a standby exports none.
        m.set_leader(false);
        assert!(!encode(&registry).contains("byoc_grant_expiry_timestamp_seconds{"));
        m.set_leader(true);
        m.grant_expiry("a", Some(("tool-a", at)));
        m.grant_expiry("b", Some(("tool-b", at)));
        // expiresAt removed, grant deleted: the samples go.
        m.grant_expiry("a", None);
        m.grant_deleted("b");
        m.grant_deleted("never-seen");
        let text = encode(&registry);
        assert!(
            !text.contains("byoc_grant_expiry_timestamp_seconds{"),
            "{text}"
        );
    }

    #[test]
    fn reconciles_errors_and_writes_are_counted() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        drop(m.reconcile(Reconciler::Grant));
        drop(m.reconcile(Reconciler::Grant));
        drop(m.reconcile(Reconciler::Namespace));
        drop(m.reconcile(Reconciler::Request));
        m.request_status_write();
        m.error(
            Reconciler::Grant,
            &crate::Error::PatchStatus {
                grant: "g".into(),
                source: kube::Error::Api(kube::core::Status::failure("x", "y").boxed()),
            },
        );
        m.label_write(LabelWrite::Set);
        m.status_write();
        m.set_leader(true);
        let text = encode(&registry);
        for want in [
            r#"byoc_controller_reconciles_total{controller="byocgrant"} 2"#,
            r#"byoc_controller_reconciles_total{controller="namespace"} 1"#,
            r#"byoc_controller_reconcile_errors_total{controller="byocgrant",error="patch_status"} 1"#,
            r#"byoc_controller_reconcile_duration_seconds_count{controller="byocgrant"} 2"#,
            r#"byoc_controller_namespace_label_writes_total{kind="set"} 1"#,
            "byoc_controller_status_writes_total 1",
            r#"byoc_controller_reconciles_total{controller="byocrequest"} 1"#,
            "byoc_controller_request_status_writes_total 1",
            "byoc_controller_leader 1",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }
}

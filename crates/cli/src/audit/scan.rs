//! The policy check of one audited object. Which kinds are read and which objects are left out
//! is [`Source`]'s, shared with the controller's PolicyReports.
//!
//! The check is the webhook's: [`PodBearing::containers`] finds the images (of containers and
//! image volumes), [`Checker`] judges them with the namespace's allowance read from its labels
//! by [`Allowance::from_labels`].

use std::collections::HashMap;

use byoc_policy::decision::{Checker, Listed, Violation};
pub use byoc_policy::inventory::Source;
use byoc_policy::inventory::{Trimmed, controller_of, left_out_notice};
use byoc_policy::{Allowance, Config};
use jiff::Timestamp;

/// Why `object` is left out, if it is ([`Source::skip_reason`]).
pub fn skip_reason(object: &Trimmed) -> Option<&'static str> {
    object
        .source
        .skip_reason(&object.metadata, object.phase.as_deref())
}

/// The controller of an object, for the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Its kind.
    pub kind: String,
    /// Its name.
    pub name: String,
}

/// An object the policy would refuse.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// Its kind.
    pub source: Source,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its controller, if it has one.
    pub owner: Option<Owner>,
    /// A pod being deleted (it runs until its grace period ends).
    pub terminating: bool,
    /// The refused containers, in pod-spec order.
    pub violations: Listed<Violation>,
    /// What the inventory's cap on containers left out of it ([`left_out_notice`]).
    pub notice: Option<String>,
}

/// What the audit made of one object.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Left out (see [`Source::skip_reason`]).
    Skipped,
    /// In an exempt namespace.
    Exempt,
    /// Admitted.
    Admitted,
    /// Refused.
    Refused(Finding),
    /// Its pod spec cannot be read (the webhook would refuse it as malformed), or more
    /// distinct images than the inventory keeps left some unjudged and none of those read is
    /// refused.
    Malformed(String),
}

/// The policy at one instant: configuration and every namespace's allowance.
pub struct Auditor<'a> {
    config: &'a Config,
    allowances: &'a HashMap<String, Allowance>,
    now: Timestamp,
    none: Allowance,
}

impl<'a> Auditor<'a> {
    /// An auditor for `config` and the allowances read from namespace labels.
    pub fn new(
        config: &'a Config,
        allowances: &'a HashMap<String, Allowance>,
        now: Timestamp,
    ) -> Self {
        Self {
            config,
            allowances,
            now,
            none: Allowance::default(),
        }
    }

    /// The allowance of `namespace` (nothing, for a namespace without labels or unknown).
    pub fn allowance(&self, namespace: &str) -> &Allowance {
        self.allowances.get(namespace).unwrap_or(&self.none)
    }

    /// Checks one object as the webhook would check its creation.
    pub fn audit(&self, object: &Trimmed) -> Outcome {
        let source = object.source;
        if skip_reason(object).is_some() {
            return Outcome::Skipped;
        }
        let namespace = object.metadata.namespace.as_deref().unwrap_or_default();
        if self.config.is_exempt(namespace) {
            return Outcome::Exempt;
        }
        let name = object.metadata.name.as_deref().unwrap_or_default();
        let subject = format!("{} {namespace}/{name}", source.kind());
        let containers = match &object.containers {
            Ok(c) => c,
            Err(e) => return Outcome::Malformed(format!("{subject}: {e}")),
        };
        let checker = Checker::new(self.config, self.allowance(namespace), namespace, self.now);
        let violations = checker.check(&subject, containers);
        let notice = left_out_notice(&subject, object.left_out);
        if violations.is_empty() {
            return match notice {
                Some(n) if object.left_out.unread_images > 0 => Outcome::Malformed(n),
                _ => Outcome::Admitted,
            };
        }
        let owner = controller_of(&object.metadata).map(|o| Owner {
            kind: o.kind.clone(),
            name: o.name.clone(),
        });
        Outcome::Refused(Finding {
            source,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            owner,
            terminating: source == Source::Pod && object.metadata.deletion_timestamp.is_some(),
            violations,
            notice,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use byoc_api::ByocGrantSpec;
    use serde_json::json;

    fn object(source: Source, value: serde_json::Value) -> Trimmed {
        Trimmed::from_value(source, &value).unwrap()
    }

    fn owned(kind: &str, api_version: &str) -> serde_json::Value {
        json!([{"apiVersion": api_version, "kind": kind, "name": "o", "uid": "u", "controller": true}])
    }

    #[test]
    fn controlled_and_finished_objects_are_left_out() {
        let cases = [
            (
                Source::ReplicaSet,
                json!({"metadata": {"ownerReferences": owned("Deployment", "apps/v1")}}),
                true,
            ),
            // Not the controller, or another kind of owner: audited.
            (
                Source::ReplicaSet,
                json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "o", "uid": "u"}]}}),
                false,
            ),
            (
                Source::ReplicaSet,
                json!({"metadata": {"ownerReferences": owned("Rollout", "argoproj.io/v1alpha1")}}),
                false,
            ),
            (Source::ReplicaSet, json!({"metadata": {}}), false),
            (
                Source::Job,
                json!({"metadata": {"ownerReferences": owned("CronJob", "batch/v1")}}),
                true,
            ),
            (Source::Job, json!({"metadata": {}}), false),
            (
                Source::Pod,
                json!({"metadata": {}, "status": {"phase": "Succeeded"}}),
                true,
            ),
            (
                Source::Pod,
                json!({"metadata": {}, "status": {"phase": "Failed"}}),
                true,
            ),
            (
                Source::Pod,
                json!({"metadata": {}, "status": {"phase": "Pending"}}),
                false,
            ),
            (
                Source::Pod,
                json!({"metadata": {"ownerReferences": owned("ReplicaSet", "apps/v1")}}),
                false,
            ),
            (
                Source::Deployment,
                json!({"metadata": {"ownerReferences": owned("Deployment", "apps/v1")}}),
                false,
            ),
            (
                Source::Deployment,
                json!({"metadata": {"deletionTimestamp": "2026-11-21T12:00:00Z"}}),
                true,
            ),
            // A pod being deleted runs until its grace period ends: audited.
            (
                Source::Pod,
                json!({"metadata": {"deletionTimestamp": "2026-11-21T12:00:00Z"}}),
                false,
            ),
        ];
        for (source, value, skipped) in cases {
            assert_eq!(
                skip_reason(&object(source, value.clone())).is_some(),
                skipped,
                "{source:?} {value}"
            );
        }
    }

    #[test]
    fn objects_are_judged_with_their_namespace_allowance() {
        let config = Config::default();
        let now: Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
        let mut allowances = HashMap::new();
        allowances.insert(
            "tool-quay".to_owned(),
            Allowance::for_grant(&ByocGrantSpec {
                namespace: "tool-quay".into(),
                reason: "r".into(),
                registries: vec!["quay.io".into()],
                any_registry: false,
                namespace_uid: None,
                expires_at: None,
                requirements: None,
            })
            .unwrap(),
        );
        let auditor = Auditor::new(&config, &allowances, now);
        let deployment = |ns: &str, image: &str| {
            object(
                Source::Deployment,
                json!({
                    "metadata": {"name": "web", "namespace": ns},
                    "spec": {"template": {"spec": {
                        "initContainers": [{"name": "init", "image": "docker-registry.tools.wmflabs.org/x:1"}],
                        "containers": [{"name": "app", "image": image}]
                    }}}
                }),
            )
        };
        assert_eq!(
            auditor.audit(&deployment("tool-quay", "quay.io/a/b:1")),
            Outcome::Admitted
        );
        assert_eq!(
            auditor.audit(&deployment("kube-system", "nginx")),
            Outcome::Exempt
        );
        let Outcome::Refused(finding) = auditor.audit(&deployment("tool-quay", "nginx:1.27"))
        else {
            panic!("nginx is not allowed in tool-quay");
        };
        assert_eq!(
            (finding.namespace.as_str(), finding.name.as_str()),
            ("tool-quay", "web")
        );
        assert_eq!(finding.violations.len(), 1);
        assert_eq!(
            finding.violations[0].to_string(),
            "Deployment tool-quay/web: container \"app\" image \"nginx:1.27\" resolves to registry \
             docker.io (docker.io/library/nginx:1.27), which namespace tool-quay may not use; \
             allowed here: docker-registry.tools.wmflabs.org, quay.io; to use it, ask for a \
             grant: kubectl byoc request -n tool-quay --registry docker.io --reason '...'"
        );
        let pod = object(
            Source::Pod,
            json!({
                "metadata": {"name": "p", "namespace": "tool-other", "ownerReferences": owned("ReplicaSet", "apps/v1")},
                "spec": {"containers": [{"name": "c", "image": "quay.io/a"}]}
            }),
        );
        let Outcome::Refused(finding) = auditor.audit(&pod) else {
            panic!("tool-other has no grant");
        };
        assert_eq!(
            finding.owner,
            Some(Owner {
                kind: "ReplicaSet".into(),
                name: "o".into()
            })
        );
        // Image volumes are audited like containers.
        let with_volume = |reference: &str| {
            object(
                Source::StatefulSet,
                json!({
                    "metadata": {"name": "models", "namespace": "tool-quay"},
                    "spec": {"template": {"spec": {
                        "containers": [{"name": "app", "image": "quay.io/a/b:1"}],
                        "volumes": [{"name": "cache", "emptyDir": {}}, {"name": "weights", "image": {"reference": reference}}]
                    }}}
                }),
            )
        };
        assert_eq!(
            auditor.audit(&with_volume("quay.io/org/weights:3")),
            Outcome::Admitted
        );
        let Outcome::Refused(finding) = auditor.audit(&with_volume("docker.io/org/weights:3"))
        else {
            panic!("a Docker Hub image volume is not allowed in tool-quay");
        };
        assert_eq!(finding.violations.len(), 1);
        assert!(
            finding.violations[0].to_string().starts_with(
                "StatefulSet tool-quay/models: volume \"weights\" image \"docker.io/org/weights:3\" \
                 resolves to registry docker.io"
            ),
            "{}",
            finding.violations[0]
        );
        let malformed = object(
            Source::Pod,
            json!({"metadata": {"name": "p", "namespace": "t"}, "spec": {"containers": 3}}),
        );
        assert!(
            matches!(auditor.audit(&malformed), Outcome::Malformed(m) if m.starts_with("Pod t/p: malformed pod spec"))
        );
    }
}

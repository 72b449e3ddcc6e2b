//! From an AdmissionRequest to a decision and back to an AdmissionResponse (DESIGN §5).

use std::borrow::Cow;
use std::cmp::Ordering;

use byoc_api::labels::{self, Allowance};
use jiff::Timestamp;
use kube::Resource;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};

use crate::config::{Config, Mode};
use crate::decision::{Checker, Listed, NamespaceAnnotation, Problem, Reminder, Violation};
use crate::requirement::pending::{Pending, Settled};
use crate::workload::{self, Container, PodBearing, ShapeError};

/// An object under review, as [`decide`] reads it: its metadata and the containers and image
/// volumes of its pod spec. A whole [`DynamicObject`], or one read pruned
/// ([`crate::read::Object`]).
pub trait Reviewed: Resource {
    /// The containers and image volumes where `bearing` keeps its pod spec
    /// ([`PodBearing::containers`]).
    fn containers(&self, bearing: PodBearing) -> Result<Cow<'_, [Container]>, ShapeError>;

    /// The object's labels, in key order, each key once.
    fn labels(&self) -> impl Iterator<Item = (&str, &str)> {
        let labels = self.meta().labels.iter().flatten();
        labels.map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The object's annotations under [`labels::PREFIX`], in key order, each key once.
    fn owned_annotations(&self) -> impl Iterator<Item = (&str, &str)> {
        let annotations = self.meta().annotations.iter().flatten();
        annotations
            .filter(|(k, _)| labels::is_owned_key(k))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl Reviewed for DynamicObject {
    fn containers(&self, bearing: PodBearing) -> Result<Cow<'_, [Container]>, ShapeError> {
        bearing.containers(&self.data).map(Cow::Owned)
    }
}

/// Why a request got its decision; bounded, so it can label metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Nothing to refuse.
    Allowed,
    /// The namespace is exempt from the policy.
    Exempt,
    /// An image comes from a registry the namespace may not use.
    RegistryNotAllowed,
    /// An image reference does not parse.
    InvalidImage,
    /// An image is allowed by name, but does not meet the requirements that apply to it (or
    /// they could not be checked).
    RequirementNotMet,
    /// A `byoc.toolforge.org/` namespace label or annotation change by someone other than the
    /// controller, or a change of any other namespace label by the controller.
    LabelProtected,
    /// A kind the policy does not evaluate.
    UnsupportedKind,
    /// The request or its object cannot be read.
    Malformed,
}

impl Reason {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Exempt => "exempt",
            Self::RegistryNotAllowed => "registry_not_allowed",
            Self::InvalidImage => "invalid_image",
            Self::RequirementNotMet => "requirement_not_met",
            Self::LabelProtected => "label_protected",
            Self::UnsupportedKind => "unsupported_kind",
            Self::Malformed => "malformed",
        }
    }

    /// Whether the reason is a registry-policy violation, which the mode can soften.
    pub fn is_registry_violation(self) -> bool {
        matches!(
            self,
            Self::RegistryNotAllowed | Self::InvalidImage | Self::RequirementNotMet
        )
    }
}

/// The decision on one request, before the mode is applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Why.
    pub reason: Reason,
    /// One line per refused container or refused change; past [`crate::decision::LISTED`]
    /// refused containers, a last line counts the rest.
    pub lines: Vec<String>,
    /// The refused containers, for warnings.
    pub violations: Listed<Violation>,
    /// Containers admitted only by a grant that ends soon; sent as warnings when admitted.
    pub reminders: Listed<Reminder>,
    /// Containers allowed by name whose requirements need registry answers; the decision is
    /// final only once [`Decision::settle`] has judged them.
    pub pending: Vec<Pending>,
    /// Warnings for requirements `failureMode: allow` let pass unchecked.
    pub softened: Listed<String>,
}

impl Decision {
    fn allowed(reason: Reason) -> Self {
        Self {
            reason,
            lines: Vec::new(),
            violations: Listed::default(),
            reminders: Listed::default(),
            pending: Vec::new(),
            softened: Listed::default(),
        }
    }

    fn refused(reason: Reason, line: String) -> Self {
        Self {
            reason,
            lines: vec![line],
            violations: Listed::default(),
            reminders: Listed::default(),
            pending: Vec::new(),
            softened: Listed::default(),
        }
    }

    fn checked(
        violations: Listed<Violation>,
        reminders: Listed<Reminder>,
        pending: Vec<Pending>,
    ) -> Self {
        let mut decision = Self {
            reason: Reason::Allowed,
            lines: Vec::new(),
            violations,
            reminders,
            pending,
            softened: Listed::default(),
        };
        decision.judge();
        decision
    }

    /// Sets the reason and the lines from the violations.
    fn judge(&mut self) {
        let has = |f: fn(&Problem) -> bool| self.violations.iter().any(|v| f(&v.problem));
        self.reason = if self.violations.is_empty() {
            Reason::Allowed
        } else if has(|p| matches!(p, Problem::InvalidReference(_))) {
            Reason::InvalidImage
        } else if has(|p| matches!(p, Problem::NotAllowed { .. })) {
            Reason::RegistryNotAllowed
        } else {
            Reason::RequirementNotMet
        };
        self.lines = (self.violations.iter().map(ToString::to_string))
            .chain(self.violations.more("refused containers"))
            .collect();
    }

    /// The final decision, given how each of [`Decision::pending`] settled (in order): the
    /// refused ones become violations, the softened ones warnings.
    pub fn settle(&mut self, namespace: &str, settled: &[Settled]) {
        let pending = std::mem::take(&mut self.pending);
        for (p, s) in pending.iter().zip(settled) {
            match s {
                Settled::Met { softened } => self.softened.extend(
                    (softened.iter()).map(|line| format!("{} {:?}: {line}", p.kind, p.container)),
                ),
                Settled::Refused { .. } => {
                    self.violations.extend(Violation::unmet(p, namespace, s))
                }
            }
        }
        self.judge();
    }

    /// Whether the request is admitted under `mode`: registry violations are refused only in
    /// enforce mode; label tampering, unsupported kinds and malformed requests always are.
    pub fn is_admitted(&self, mode: Mode) -> bool {
        match self.reason {
            Reason::Allowed | Reason::Exempt => true,
            Reason::RegistryNotAllowed | Reason::InvalidImage | Reason::RequirementNotMet => {
                mode != Mode::Enforce
            }
            Reason::LabelProtected | Reason::UnsupportedKind | Reason::Malformed => false,
        }
    }
}

/// Decides one admission request by name only. `allowance` is what the request's namespace is
/// granted, read from its labels; `now` decides which grants have expired.
pub fn decide<K: Reviewed>(
    config: &Config,
    req: &AdmissionRequest<K>,
    allowance: &Allowance,
    now: Timestamp,
) -> Decision {
    decide_requiring(config, req, allowance, None, now)
}

/// [`decide`], with the grants' requirements read from the namespace's annotation: images
/// allowed by name that have requirements are left in [`Decision::pending`].
pub fn decide_requiring<K: Reviewed>(
    config: &Config,
    req: &AdmissionRequest<K>,
    allowance: &Allowance,
    requirements: Option<&NamespaceAnnotation>,
    now: Timestamp,
) -> Decision {
    if matches!(req.operation, Operation::Delete | Operation::Connect) {
        return Decision::allowed(Reason::Allowed);
    }
    let Some(object) = &req.object else {
        return Decision::refused(
            Reason::Malformed,
            format!(
                "{} {}: the admission request has no object",
                req.kind.kind, req.name
            ),
        );
    };
    let (group, kind) = (req.kind.group.as_str(), req.kind.kind.as_str());
    if group.is_empty() && kind == "Namespace" {
        return guard_namespace_labels(config, req, object);
    }
    let Some(bearing) = PodBearing::of(group, kind) else {
        let gk = if group.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}.{group}")
        };
        return Decision::refused(
            Reason::UnsupportedKind,
            format!(
                "{gk} {}: the byoc registry policy does not evaluate this kind; check the webhook configuration's rules",
                req.name
            ),
        );
    };
    let namespace = req
        .namespace
        .as_deref()
        .or(object.meta().namespace.as_deref())
        .unwrap_or_default();
    let subject = format!("{kind} {namespace}/{}", object_name(req, object));
    if namespace.is_empty() {
        return Decision::refused(
            Reason::Malformed,
            format!("{subject}: the request has no namespace"),
        );
    }
    if config.is_exempt(namespace) {
        return Decision::allowed(Reason::Exempt);
    }
    let containers = match object.containers(bearing) {
        Ok(c) => c,
        Err(e) => return Decision::refused(Reason::Malformed, format!("{subject}: {e}")),
    };
    // On UPDATE only new or changed images are checked, so a grant revoked after a pod started
    // does not block unrelated updates (labels, finalizers, status) to it.
    let old = match (&req.operation, &req.old_object) {
        (Operation::Update, Some(old)) => old.containers(bearing).unwrap_or_default(),
        _ => Cow::default(),
    };
    let to_check = workload::not_in(&containers, &old);
    let checker = Checker::new(config, allowance, namespace, now).requiring(requirements);
    let reviewed = checker.review(&subject, to_check);
    // Reminders cover every container, changed or not: whoever applies the object learns that
    // what runs will stop being admitted.
    Decision::checked(
        reviewed.violations,
        checker.reminders(&subject, &*containers),
        reviewed.pending,
    )
}

/// The name of the object for messages: pods created by a controller have only a generateName.
fn object_name<K: Resource>(req: &AdmissionRequest<K>, object: &K) -> String {
    if !req.name.is_empty() {
        return req.name.clone();
    }
    match (&object.meta().name, &object.meta().generate_name) {
        (Some(name), _) if !name.is_empty() => name.clone(),
        (_, Some(prefix)) => format!("{prefix}*"),
        _ => "(unnamed)".to_owned(),
    }
}

/// Refuses changes to `byoc.toolforge.org/` labels and annotations (the requirements
/// annotation) from anyone but the configured writers, and changes to any other label from
/// those writers: the controller writes only its own labels, so
/// a leaked controller token cannot lift Pod Security (or any other) labels. Protected labels
/// (Pod Security by default) may be added, changed or removed only by their configured writers,
/// on CREATE too: a tenant who may create namespaces cannot create one with a weaker level than
/// the cluster default. The decision reads only the old and new labels and the user, never the
/// labels' meaning.
fn guard_namespace_labels<K: Reviewed>(
    config: &Config,
    req: &AdmissionRequest<K>,
    object: &K,
) -> Decision {
    let old = match (&req.operation, &req.old_object) {
        (Operation::Update, Some(old)) => Some(old),
        _ => None,
    };
    let user = req.user_info.username.as_deref().unwrap_or_default();
    let groups = req.user_info.groups.as_deref().unwrap_or_default();
    let writer = config.label_writers.contains(user);
    let protected = &config.protected_labels;
    let admin = protected.may_write(user, groups);
    let new = || object.labels();
    let old_labels = || old.into_iter().flat_map(|o| o.labels());
    let name = if req.name.is_empty() {
        object.meta().name.as_deref().unwrap_or_default()
    } else {
        &req.name
    };
    // A byoc writer is checked on the labels outside the prefix, everyone else on those inside
    // it, and on the protected ones unless a protected-label writer. The API server sets
    // `kubernetes.io/metadata.name` to the name itself: never a change.
    let byoc = label_changes(new(), old_labels(), |key| {
        labels::is_owned_key(key) != writer && key != NAME_LABEL
    });
    let mut why = Vec::new();
    if !byoc.is_empty() {
        why.push(if writer {
            format!(
                "may not {}: the byoc controller writes only labels under {}; other labels are \
                 changed by other identities",
                byoc.join(", "),
                labels::PREFIX
            )
        } else {
            format!(
                "may not {}: labels under {} are managed by the byoc controller from ByocGrants; \
                 to run images from other registries, {}",
                byoc.join(", "),
                labels::PREFIX,
                config.ask_for_grant(name, None)
            )
        });
    }
    if !writer {
        let annotations = label_changes(
            object.owned_annotations(),
            old.into_iter().flat_map(|o| o.owned_annotations()),
            |_| true,
        );
        if !annotations.is_empty() {
            let annotations: Vec<String> = annotations
                .iter()
                .map(|change| change.replacen(' ', " annotation ", 1))
                .collect();
            why.push(format!(
                "may not {}: annotations under {} carry what the namespace's ByocGrants require \
                 of its images and are written only by the byoc controller; to change them, ask \
                 a platform admin to change the grant",
                annotations.join(", "),
                labels::PREFIX
            ));
        }
    }
    // A byoc writer's changes to protected labels are already in `byoc`.
    let guarded = label_changes(new(), old_labels(), |key| {
        !writer && !admin && protected.covers(key) && !labels::is_owned_key(key)
    });
    if !guarded.is_empty() {
        why.push(format!(
            "may not {}: these labels set the namespace's Pod Security level and only platform \
             admins change them; ask a platform admin",
            guarded.join(", ")
        ));
    }
    if why.is_empty() {
        return Decision::allowed(Reason::Allowed);
    }
    Decision::refused(
        Reason::LabelProtected,
        format!("Namespace {name}: user {user:?} {}", why.join("; and ")),
    )
}

/// The label every namespace carries with its own name (set by the API server).
const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// `add K`, `change K` and `remove K` for each key that `guarded` selects and that differs
/// between `new` and `old` (both in key order, each key once), in key order (adds and changes
/// first, then removals). Linear in both.
fn label_changes<'a>(
    new: impl Iterator<Item = (&'a str, &'a str)>,
    old: impl Iterator<Item = (&'a str, &'a str)>,
    guarded: impl Fn(&str) -> bool,
) -> Vec<String> {
    let (mut new, mut old) = (new.peekable(), old.peekable());
    let (mut changes, mut removals) = (Vec::new(), Vec::new());
    loop {
        let order = match (new.peek(), old.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((n, _)), Some((o, _))) => n.cmp(o),
        };
        match order {
            Ordering::Less => {
                let (key, _) = new.next().unwrap_or_default();
                if guarded(key) {
                    changes.push(format!("add {key}"));
                }
            }
            Ordering::Greater => {
                let (key, _) = old.next().unwrap_or_default();
                if guarded(key) {
                    removals.push(format!("remove {key}"));
                }
            }
            Ordering::Equal => {
                let ((key, value), (_, was)) = (
                    new.next().unwrap_or_default(),
                    old.next().unwrap_or_default(),
                );
                if value != was && guarded(key) {
                    changes.push(format!("change {key}"));
                }
            }
        }
    }
    changes.append(&mut removals);
    changes
}

/// The AdmissionResponse for `decision` under the configured mode. Refusals are HTTP-200
/// reviews with `allowed: false` and code 403; warn mode admits with warnings; audit mode
/// admits with an audit annotation. An admitted request with reminders gets them as warnings,
/// in every mode.
pub fn respond<K: Resource>(
    config: &Config,
    req: &AdmissionRequest<K>,
    decision: &Decision,
) -> AdmissionResponse {
    let mut response = AdmissionResponse::from(req);
    if !decision.is_admitted(config.mode) {
        response = response.deny(decision.lines.join("\n"));
        response.result.code = 403;
        response.result.reason = "Forbidden".to_owned();
        return response;
    }
    if decision.reason.is_registry_violation() {
        match config.mode {
            Mode::Warn => {
                let violations = &decision.violations;
                response.warnings = Some(
                    violations
                        .iter()
                        .map(Violation::warning)
                        .chain(violations.more("refused containers"))
                        .collect(),
                );
            }
            Mode::Audit => {
                response
                    .audit_annotations
                    .insert("violation".to_owned(), decision.lines.join("\n"));
            }
            Mode::Enforce => {}
        }
    }
    if !decision.reminders.is_empty() {
        response.warnings.get_or_insert_default().extend(
            decision.reminders.iter().map(ToString::to_string).chain(
                decision
                    .reminders
                    .more("containers allowed by a grant that ends soon"),
            ),
        );
    }
    if !decision.softened.is_empty() {
        response.warnings.get_or_insert_default().extend(
            (decision.softened.iter().cloned())
                .chain(decision.softened.more("requirements not checked")),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::admission::AdmissionReview;
    use serde_json::{Value, json};

    fn now() -> Timestamp {
        "2026-11-21T12:00:00Z".parse().unwrap()
    }

    fn review(
        operation: &str,
        gvk: (&str, &str, &str),
        namespace: Option<&str>,
        user: &str,
        object: Value,
        old: Option<Value>,
    ) -> AdmissionRequest<DynamicObject> {
        let (group, version, kind) = gvk;
        let body = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": group, "version": version, "kind": kind},
                "resource": {"group": group, "version": version, "resource": format!("{}s", kind.to_lowercase())},
                "name": object["metadata"]["name"].as_str().unwrap_or(""),
                "namespace": namespace,
                "operation": operation,
                "userInfo": {"username": user},
                "object": object,
                "oldObject": old,
            }
        });
        let review: AdmissionReview<DynamicObject> = serde_json::from_value(body).unwrap();
        review.try_into().unwrap()
    }

    fn pod(name: &str, images: &[(&str, &str)]) -> Value {
        let containers: Vec<Value> = images
            .iter()
            .map(|(n, i)| json!({"name": n, "image": i}))
            .collect();
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": containers}})
    }

    fn pod_req(
        op: &str,
        ns: &str,
        object: Value,
        old: Option<Value>,
    ) -> AdmissionRequest<DynamicObject> {
        review(op, ("", "v1", "Pod"), Some(ns), "alice", object, old)
    }

    fn ns_req(
        op: &str,
        user: &str,
        new: Value,
        old: Option<Value>,
    ) -> AdmissionRequest<DynamicObject> {
        let mk = |labels: Value| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tool-a", "labels": labels}});
        review(
            op,
            ("", "v1", "Namespace"),
            None,
            user,
            mk(new),
            old.map(mk),
        )
    }

    /// The CREATE of Deployment `tool-a/web` with one container running `image`.
    fn deployment_req(image: &str) -> AdmissionRequest<DynamicObject> {
        let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}});
        review(
            "CREATE",
            ("apps", "v1", "Deployment"),
            Some("tool-a"),
            "u",
            deploy,
            None,
        )
    }

    const PLATFORM: &str = "docker-registry.tools.wmflabs.org/toolforge-python311:latest";

    #[test]
    fn pods_and_modes() {
        let allowance = Allowance::default();
        let bad = pod_req("CREATE", "tool-a", pod("p", &[("app", "nginx")]), None);
        let good = pod_req("CREATE", "tool-a", pod("p", &[("app", PLATFORM)]), None);
        let exempt = pod_req("CREATE", "kube-system", pod("p", &[("app", "nginx")]), None);

        let enforce = Config::default();
        let d = decide(&enforce, &bad, &allowance, now());
        assert_eq!(d.reason, Reason::RegistryNotAllowed);
        let r = respond(&enforce, &bad, &d);
        assert!(!r.allowed);
        assert_eq!(r.result.code, 403);
        assert_eq!(r.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert!(
            r.result.message.starts_with(
                "Pod tool-a/p: container \"app\" image \"nginx\" resolves to registry docker.io"
            ),
            "{}",
            r.result.message
        );

        assert_eq!(
            decide(&enforce, &good, &allowance, now()).reason,
            Reason::Allowed
        );
        assert_eq!(
            decide(&enforce, &exempt, &allowance, now()).reason,
            Reason::Exempt
        );

        let warn = Config {
            mode: Mode::Warn,
            ..Config::default()
        };
        let r = respond(&warn, &bad, &decide(&warn, &bad, &allowance, now()));
        assert!(r.allowed);
        assert_eq!(r.warnings.as_ref().map(Vec::len), Some(1));

        let audit = Config {
            mode: Mode::Audit,
            ..Config::default()
        };
        let r = respond(&audit, &bad, &decide(&audit, &bad, &allowance, now()));
        assert!(r.allowed && r.warnings.is_none());
        assert!(r.audit_annotations["violation"].contains("nginx"));
    }

    #[test]
    fn reminders_are_warnings_of_admitted_requests_in_every_mode() {
        let mut allowance = Allowance::default();
        allowance.merge(
            Allowance::for_grant(&byoc_api::ByocGrantSpec {
                namespace: "tool-a".into(),
                reason: "r".into(),
                registries: vec!["quay.io".into()],
                any_registry: false,
                namespace_uid: None,
                expires_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    "2026-11-24T12:00:00Z".parse().unwrap(),
                )),
                requirements: None,
            })
            .unwrap(),
        );
        let expiring = pod("p", &[("app", "quay.io/x"), ("sidecar", PLATFORM)]);
        let mixed = pod("p", &[("app", "quay.io/x"), ("bad", "nginx")]);
        // (mode, namespace, object, admitted, warnings that are reminders, other warnings)
        let cases = [
            (Mode::Enforce, "tool-a", expiring.clone(), true, 1, 0),
            (Mode::Warn, "tool-a", expiring.clone(), true, 1, 0),
            (Mode::Audit, "tool-a", expiring.clone(), true, 1, 0),
            (Mode::Enforce, "tool-a", mixed.clone(), false, 0, 0),
            (Mode::Warn, "tool-a", mixed.clone(), true, 1, 1),
            (Mode::Audit, "tool-a", mixed, true, 1, 0),
            (Mode::Enforce, "kube-system", expiring.clone(), true, 0, 0),
        ];
        for (mode, ns, object, admitted, reminders, others) in cases {
            let config = Config {
                mode,
                ..Config::default()
            };
            let req = pod_req("CREATE", ns, object, None);
            let r = respond(&config, &req, &decide(&config, &req, &allowance, now()));
            assert_eq!(r.allowed, admitted, "{mode} {ns}");
            let warnings = r.warnings.unwrap_or_default();
            let (got_reminders, got_others): (Vec<_>, Vec<_>) = warnings
                .iter()
                .partition(|w| w.contains("expires at 2026-11-24T12:00:00Z (3 days left)"));
            assert_eq!(
                (got_reminders.len(), got_others.len()),
                (reminders, others),
                "{mode} {ns}: {warnings:?}"
            );
            assert!(
                got_reminders.iter().all(|w| w.starts_with(&format!(
                    "Pod {ns}/p: container \"app\" image \"quay.io/x\" is allowed only by a BYOC \
                     grant for quay.io"
                ))),
                "{warnings:?}"
            );
        }
        // An update that changes nothing still reminds whoever applies it.
        let config = Config::default();
        let req = pod_req("UPDATE", "tool-a", expiring.clone(), Some(expiring));
        let d = decide(&config, &req, &allowance, now());
        assert_eq!((d.reason, d.reminders.len()), (Reason::Allowed, 1));
        // A Deployment gets them too.
        let req = deployment_req("quay.io/x");
        let r = respond(&config, &req, &decide(&config, &req, &allowance, now()));
        assert!(r.allowed);
        assert!(
            r.warnings.unwrap_or_default()[0]
                .starts_with("Deployment tool-a/web: container \"app\""),
        );
    }

    #[test]
    fn updates_check_only_new_or_changed_images() {
        let config = Config::default();
        let allowance = Allowance::default();
        let old = pod("p", &[("app", "nginx")]);
        // A label change on a pod admitted under a since-revoked grant stays possible.
        let mut relabelled = old.clone();
        relabelled["metadata"]["labels"] = json!({"x": "y"});
        let d = decide(
            &config,
            &pod_req("UPDATE", "tool-a", relabelled, Some(old.clone())),
            &allowance,
            now(),
        );
        assert_eq!(d.reason, Reason::Allowed);
        // Swapping in a bad image is refused.
        let platform = pod("p", &[("app", PLATFORM)]);
        let swapped = pod("p", &[("app", "quay.io/x")]);
        let d = decide(
            &config,
            &pod_req("UPDATE", "tool-a", swapped, Some(platform.clone())),
            &allowance,
            now(),
        );
        assert_eq!(d.reason, Reason::RegistryNotAllowed);
        // kubectl debug adds an ephemeral container: only it is checked.
        let mut debugged = platform.clone();
        debugged["spec"]["ephemeralContainers"] = json!([{"name": "debugger", "image": "busybox"}]);
        let d = decide(
            &config,
            &pod_req("UPDATE", "tool-a", debugged, Some(platform)),
            &allowance,
            now(),
        );
        assert_eq!(d.reason, Reason::RegistryNotAllowed);
        assert!(
            d.lines[0].contains("ephemeralContainer \"debugger\""),
            "{}",
            d.lines[0]
        );
        // An UPDATE without oldObject is checked in full.
        let d = decide(
            &config,
            &pod_req("UPDATE", "tool-a", old, None),
            &allowance,
            now(),
        );
        assert_eq!(d.reason, Reason::RegistryNotAllowed);
    }

    #[test]
    fn workloads_unknown_kinds_and_malformed() {
        let config = Config::default();
        let allowance = Allowance::default();
        let d = decide(&config, &deployment_req("nginx"), &allowance, now());
        assert_eq!(d.reason, Reason::RegistryNotAllowed);
        assert!(d.lines[0].starts_with("Deployment tool-a/web: container \"app\""));

        let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
            "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "j", "image": "quay.io/j"}]}}}}}});
        let d = decide(
            &config,
            &review(
                "CREATE",
                ("batch", "v1", "CronJob"),
                Some("tool-a"),
                "u",
                cron,
                None,
            ),
            &allowance,
            now(),
        );
        assert_eq!(d.reason, Reason::RegistryNotAllowed);

        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}});
        let d = decide(
            &config,
            &review(
                "CREATE",
                ("", "v1", "Service"),
                Some("tool-a"),
                "u",
                svc,
                None,
            ),
            &allowance,
            now(),
        );
        assert_eq!(d.reason, Reason::UnsupportedKind);
        assert!(
            !respond(
                &config,
                &pod_req("CREATE", "tool-a", pod("p", &[]), None),
                &d
            )
            .allowed
        );

        let broken = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": "nginx"}});
        let d = decide(
            &config,
            &pod_req("CREATE", "tool-a", broken, None),
            &allowance,
            now(),
        );
        assert_eq!(d.reason, Reason::Malformed);
        // Malformed and unsupported are refused even in audit mode.
        assert!(!d.is_admitted(Mode::Audit));

        let generated = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-5d4f-"},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]}});
        let d = decide(
            &config,
            &pod_req("CREATE", "tool-a", generated, None),
            &allowance,
            now(),
        );
        assert!(
            d.lines[0].starts_with("Pod tool-a/web-5d4f-*: "),
            "{}",
            d.lines[0]
        );

        let delete = review(
            "DELETE",
            ("", "v1", "Pod"),
            Some("tool-a"),
            "u",
            Value::Null,
            None,
        );
        assert_eq!(
            decide(&config, &delete, &allowance, now()).reason,
            Reason::Allowed
        );
    }

    #[test]
    fn namespace_label_guard() {
        let config = Config::default();
        let a = Allowance::default();
        let controller = crate::config::CONTROLLER_USER;
        let cases = [
            // (operation, user, new labels, old labels, admitted)
            ("CREATE", "alice", json!({"team": "a"}), None, true),
            (
                "CREATE",
                "alice",
                json!({"byoc.toolforge.org/any": "never"}),
                None,
                false,
            ),
            (
                "CREATE",
                controller,
                json!({"byoc.toolforge.org/any": "never"}),
                None,
                true,
            ),
            (
                "UPDATE",
                "alice",
                json!({"team": "b", "byoc.toolforge.org/quay.io": "never"}),
                Some(json!({"team": "a", "byoc.toolforge.org/quay.io": "never"})),
                true,
            ),
            (
                "UPDATE",
                "alice",
                json!({"byoc.toolforge.org/quay.io": "20990101T000000Z"}),
                Some(json!({"byoc.toolforge.org/quay.io": "never"})),
                false,
            ),
            (
                "UPDATE",
                "alice",
                json!({}),
                Some(json!({"byoc.toolforge.org/quay.io": "never"})),
                false,
            ),
            (
                "UPDATE",
                "alice",
                json!({"byoc.toolforge.org/junk": "x"}),
                Some(json!({})),
                false,
            ),
            (
                "UPDATE",
                "alice",
                json!({"byoc.toolforge.org/any": "never"}),
                None,
                false,
            ),
            (
                "UPDATE",
                controller,
                json!({}),
                Some(json!({"byoc.toolforge.org/quay.io": "never"})),
                true,
            ),
            (
                "UPDATE",
                "system:serviceaccount:tool-a:default",
                json!({"byoc.toolforge.org/any": "never"}),
                Some(json!({})),
                false,
            ),
            // Others may change labels outside the prefix (but for the protected ones, see
            // `protected_labels_guard`); the label writers may not.
            (
                "UPDATE",
                "alice",
                json!({"pod-security.kubernetes.io/enforce": "privileged"}),
                Some(json!({"pod-security.kubernetes.io/enforce": "baseline"})),
                false,
            ),
            (
                "UPDATE",
                controller,
                json!({"pod-security.kubernetes.io/enforce": "privileged"}),
                Some(json!({"pod-security.kubernetes.io/enforce": "baseline"})),
                false,
            ),
            (
                "UPDATE",
                controller,
                json!({"byoc.toolforge.org/any": "never"}),
                Some(json!({"pod-security.kubernetes.io/enforce": "baseline"})),
                false,
            ),
            // The API server sets `kubernetes.io/metadata.name` back to the name on every
            // write, so it is no change whoever sends it.
            (
                "UPDATE",
                controller,
                json!({"team": "a", "byoc.toolforge.org/quay.io": "never"}),
                Some(json!({"team": "a", "kubernetes.io/metadata.name": "tool-a"})),
                true,
            ),
            (
                "UPDATE",
                controller,
                json!({"team": "a", "byoc.toolforge.org/quay.io": "never", "kubernetes.io/metadata.name": "tool-a"}),
                Some(json!({"team": "a", "kubernetes.io/metadata.name": "tool-a"})),
                true,
            ),
            (
                "CREATE",
                controller,
                json!({"kubernetes.io/metadata.name": "tool-a", "byoc.toolforge.org/any": "never"}),
                None,
                true,
            ),
            (
                "CREATE",
                controller,
                json!({"kubernetes.io/metadata.name": "tool-a", "pod-security.kubernetes.io/enforce": "privileged"}),
                None,
                false,
            ),
        ];
        for (op, user, new, old, admitted) in cases {
            // The status and finalize subresources carry the whole Namespace too (their
            // strategies keep metadata changes): the same change gets the same answer.
            for sub in [None, Some("status"), Some("finalize")] {
                let mut req = ns_req(op, user, new.clone(), old.clone());
                req.sub_resource = sub.map(str::to_owned);
                let d = decide(&config, &req, &a, now());
                assert_eq!(
                    d.is_admitted(Mode::Audit),
                    admitted,
                    "{op} {sub:?} {user} {new} {old:?}: {:?}",
                    d.lines
                );
            }
        }
        let req = ns_req(
            "UPDATE",
            controller,
            json!({"byoc.toolforge.org/any": "never", "team": "b"}),
            Some(json!({"pod-security.kubernetes.io/enforce": "baseline", "team": "a"})),
        );
        let d = decide(&config, &req, &a, now());
        assert_eq!(d.reason, Reason::LabelProtected);
        assert_eq!(
            d.lines[0],
            format!(
                "Namespace tool-a: user {controller:?} may not change team, remove \
                 pod-security.kubernetes.io/enforce: the byoc controller writes only labels \
                 under byoc.toolforge.org/; other labels are changed by other identities"
            )
        );
        let req = ns_req(
            "UPDATE",
            "alice",
            json!({"byoc.toolforge.org/any": "never"}),
            Some(json!({"byoc.toolforge.org/quay.io": "never"})),
        );
        let d = decide(&config, &req, &a, now());
        assert_eq!(d.reason, Reason::LabelProtected);
        assert!(d.lines[0].starts_with("Namespace tool-a: user \"alice\" may not add byoc.toolforge.org/any, remove byoc.toolforge.org/quay.io: "), "{}", d.lines[0]);
        assert!(
            d.lines[0].ends_with(
                "to run images from other registries, ask for a grant: kubectl byoc request -n \
                 tool-a --registry <registry> --reason '...'"
            ),
            "{}",
            d.lines[0]
        );
    }

    #[test]
    fn namespace_annotation_guard() {
        let config = Config::default();
        let a = Allowance::default();
        let controller = crate::config::CONTROLLER_USER;
        let requirements = labels::REQUIREMENTS_ANNOTATION;
        let annotated = |annotations: Value| {
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "tool-a", "annotations": annotations}})
        };
        let cases = [
            // (operation, user, new annotations, old annotations, admitted)
            ("CREATE", "alice", json!({"note": "a"}), None, true),
            ("CREATE", "alice", json!({requirements: "{}"}), None, false),
            (
                "CREATE",
                "alice",
                json!({"byoc.toolforge.org/other": "x"}),
                None,
                false,
            ),
            (
                "CREATE",
                controller,
                json!({requirements: "{}"}),
                None,
                true,
            ),
            (
                "UPDATE",
                "alice",
                json!({requirements: "{}", "note": "b"}),
                Some(json!({requirements: "{}", "note": "a"})),
                true,
            ),
            (
                "UPDATE",
                "alice",
                json!({requirements: "{}"}),
                Some(json!({requirements: r#"{"version":1}"#})),
                false,
            ),
            (
                "UPDATE",
                "alice",
                json!({}),
                Some(json!({requirements: "{}"})),
                false,
            ),
            (
                "UPDATE",
                "alice",
                json!({requirements: "{}"}),
                Some(json!({})),
                false,
            ),
            // Without an old object every annotation under the prefix is new.
            ("UPDATE", "alice", json!({requirements: "{}"}), None, false),
            // A key outside the prefix, however alike, is not guarded.
            (
                "UPDATE",
                "alice",
                json!({"byoc.toolforge.org.evil/requirements": "{}"}),
                Some(json!({})),
                true,
            ),
            (
                "UPDATE",
                "system:serviceaccount:tool-a:default",
                json!({}),
                Some(json!({requirements: "{}"})),
                false,
            ),
            (
                "UPDATE",
                controller,
                json!({requirements: "{}"}),
                Some(json!({requirements: r#"{"version":1}"#})),
                true,
            ),
            (
                "UPDATE",
                controller,
                json!({}),
                Some(json!({requirements: "{}"})),
                true,
            ),
        ];
        for (op, user, new, old, admitted) in cases {
            for sub in [None, Some("status"), Some("finalize")] {
                let mut req = review(
                    op,
                    ("", "v1", "Namespace"),
                    None,
                    user,
                    annotated(new.clone()),
                    old.clone().map(annotated),
                );
                req.sub_resource = sub.map(str::to_owned);
                let d = decide(&config, &req, &a, now());
                assert_eq!(
                    d.is_admitted(Mode::Audit),
                    admitted,
                    "{op} {sub:?} {user} {new} {old:?}: {:?}",
                    d.lines
                );
                if !admitted {
                    assert_eq!(d.reason, Reason::LabelProtected);
                }
            }
        }
        // With a label change too, both are named, in one line.
        let mut object = annotated(json!({requirements: "{}"}));
        object["metadata"]["labels"] = json!({"byoc.toolforge.org/any": "never"});
        let old = annotated(json!({requirements: "old"}));
        let req = review(
            "UPDATE",
            ("", "v1", "Namespace"),
            None,
            "alice",
            object,
            Some(old),
        );
        let d = decide(&config, &req, &a, now());
        assert_eq!(d.lines.len(), 1);
        assert!(
            d.lines[0].contains(
                "; and may not change annotation byoc.toolforge.org/requirements: annotations \
                 under byoc.toolforge.org/ carry what the namespace's ByocGrants require of its \
                 images and are written only by the byoc controller; to change them, ask a \
                 platform admin to change the grant"
            ),
            "{}",
            d.lines[0]
        );
        assert!(
            d.lines[0].starts_with(
                "Namespace tool-a: user \"alice\" may not add byoc.toolforge.org/any: "
            ),
            "{}",
            d.lines[0]
        );
    }

    #[test]
    fn protected_labels_guard() {
        let config = Config::default();
        let a = Allowance::default();
        let controller = crate::config::CONTROLLER_USER;
        let masters = ["system:masters"];
        let none: [&str; 0] = [];
        let enforce = "pod-security.kubernetes.io/enforce";
        let name = "kubernetes.io/metadata.name";
        #[allow(clippy::type_complexity)]
        let cases: [(&str, &str, &[&str], Value, Option<Value>, bool); 17] = [
            // Unchanged Pod Security labels pass through, with other changes.
            (
                "UPDATE",
                "alice",
                &none,
                json!({enforce: "restricted", "team": "b"}),
                Some(json!({enforce: "restricted", "team": "a"})),
                true,
            ),
            // The API server's own name label is never a change.
            (
                "CREATE",
                "alice",
                &none,
                json!({name: "tool-a"}),
                None,
                true,
            ),
            (
                "UPDATE",
                "alice",
                &none,
                json!({name: "tool-a", enforce: "baseline"}),
                Some(json!({enforce: "baseline"})),
                true,
            ),
            // Lowering, raising, adding or removing (which lowers to the cluster default).
            (
                "UPDATE",
                "alice",
                &none,
                json!({enforce: "privileged"}),
                Some(json!({enforce: "restricted"})),
                false,
            ),
            (
                "UPDATE",
                "alice",
                &none,
                json!({enforce: "restricted"}),
                Some(json!({enforce: "baseline"})),
                false,
            ),
            (
                "UPDATE",
                "alice",
                &none,
                json!({enforce: "privileged"}),
                Some(json!({})),
                false,
            ),
            (
                "UPDATE",
                "alice",
                &none,
                json!({}),
                Some(json!({enforce: "restricted"})),
                false,
            ),
            (
                "UPDATE",
                "alice",
                &none,
                json!({"pod-security.kubernetes.io/enforce-version": "v1.20"}),
                Some(json!({})),
                false,
            ),
            // CREATE with any protected label is refused to non-writers, whatever its level.
            (
                "CREATE",
                "alice",
                &none,
                json!({name: "tool-a", enforce: "privileged"}),
                None,
                false,
            ),
            (
                "CREATE",
                "alice",
                &none,
                json!({name: "tool-a", enforce: "restricted"}),
                None,
                false,
            ),
            // Prefix tricks: ASCII case is ignored; a key without the slash is not a Pod
            // Security label (admission does not read it) and passes.
            (
                "UPDATE",
                "alice",
                &none,
                json!({"Pod-Security.Kubernetes.IO/enforce": "privileged"}),
                Some(json!({})),
                false,
            ),
            (
                "UPDATE",
                "alice",
                &none,
                json!({"pod-security.kubernetes.io": "privileged"}),
                Some(json!({})),
                true,
            ),
            (
                "UPDATE",
                "alice",
                &none,
                json!({"x.pod-security.kubernetes.io/enforce": "privileged"}),
                Some(json!({})),
                true,
            ),
            // A configured writer (a member of system:masters) may change and create them.
            (
                "UPDATE",
                "admin",
                &masters,
                json!({enforce: "privileged"}),
                Some(json!({enforce: "restricted"})),
                true,
            ),
            (
                "CREATE",
                "admin",
                &masters,
                json!({enforce: "privileged"}),
                None,
                true,
            ),
            // ... but not byoc labels, and the controller still may not touch Pod Security.
            (
                "UPDATE",
                "admin",
                &masters,
                json!({"byoc.toolforge.org/any": "never"}),
                Some(json!({})),
                false,
            ),
            (
                "UPDATE",
                controller,
                &masters,
                json!({enforce: "privileged"}),
                Some(json!({})),
                false,
            ),
        ];
        for (op, user, groups, new, old, admitted) in cases {
            for sub in [None, Some("status"), Some("finalize")] {
                let mut req = ns_req(op, user, new.clone(), old.clone());
                req.sub_resource = sub.map(str::to_owned);
                req.user_info.groups = Some(groups.iter().map(|g| (*g).to_owned()).collect());
                let d = decide(&config, &req, &a, now());
                assert_eq!(
                    d.is_admitted(Mode::Audit),
                    admitted,
                    "{op} {sub:?} {user} {new} {old:?}: {:?}",
                    d.lines
                );
            }
        }
        // A configured user is a writer too; a configured extra prefix is guarded.
        let mut config = Config::default();
        config.protected_labels.users.insert("bob".into());
        config
            .protected_labels
            .prefixes
            .push("security.example.org/".into());
        let bob = ns_req(
            "UPDATE",
            "bob",
            json!({enforce: "privileged"}),
            Some(json!({})),
        );
        assert!(decide(&config, &bob, &a, now()).is_admitted(Mode::Enforce));
        let extra = ns_req(
            "UPDATE",
            "alice",
            json!({"security.example.org/x": "1"}),
            Some(json!({})),
        );
        assert!(!decide(&config, &extra, &a, now()).is_admitted(Mode::Audit));
        // The message names the change and whom to ask.
        let req = ns_req(
            "UPDATE",
            "alice",
            json!({"byoc.toolforge.org/any": "never"}),
            Some(json!({enforce: "restricted"})),
        );
        let d = decide(&Config::default(), &req, &a, now());
        assert_eq!(d.reason, Reason::LabelProtected);
        assert!(
            d.lines[0].starts_with(
                "Namespace tool-a: user \"alice\" may not add byoc.toolforge.org/any: "
            ),
            "{}",
            d.lines[0]
        );
        assert!(d.lines[0].ends_with("; and may not remove pod-security.kubernetes.io/enforce: these labels set the namespace's Pod Security level and only platform admins change them; ask a platform admin"), "{}", d.lines[0]);
    }
}

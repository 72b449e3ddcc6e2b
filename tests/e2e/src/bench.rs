//! Timing pod creation through the API server with and without admission checks, shared by the
//! webhook's benchmark (`crates/webhook/examples/bench.rs`, host processes) and the node's
//! (`tests/e2e/tests/node_bench.rs`, the operator as pods): latency series and their
//! percentiles, the CEL ValidatingAdmissionPolicy that stands beside the webhook as the floor,
//! and the check that an admission phase is in force before it is timed; and a process's
//! memory and CPU from `/proc` for the controller's benchmarks.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use byoc_api::labels::{Allowance, Expiry, REQUIREMENTS_ANNOTATION};
use byoc_api::requirements::{Alternative, NamespaceRequirements};
use byoc_api::{ByocGrantSpec, LeanNamespace, Requirements};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, DynamicObject, ObjectMeta, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// The platform registry: always allowed by the byoc policy and by the CEL floor.
pub const PLATFORM: &str = "docker-registry.tools.wmflabs.org";

/// The namespaces neither the webhook (the chart's defaults) nor the CEL floor check.
pub const EXEMPT: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "byoc-system",
];

/// A series of latencies, sorted.
#[derive(Clone, Debug, Default)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    /// The series of `samples`, in any order.
    pub fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        Self(samples)
    }

    /// How many samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The sample at quantile `q` (0.0–1.0): the one at index ⌊len·q⌋, the largest for 1.0;
    /// zero for an empty series.
    pub fn quantile(&self, q: f64) -> Duration {
        let index = ((self.0.len() as f64 * q) as usize).min(self.0.len().saturating_sub(1));
        self.0.get(index).copied().unwrap_or_default()
    }

    /// The median, in milliseconds.
    pub fn p50_ms(&self) -> f64 {
        self.quantile(0.50).as_secs_f64() * 1000.0
    }

    /// The 99th percentile, in milliseconds.
    pub fn p99_ms(&self) -> f64 {
        self.quantile(0.99).as_secs_f64() * 1000.0
    }
}

/// The median of `values` (the upper one of an even count); 0 for none.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// The load average from `/proc/loadavg` (1, 5 and 15 minutes), as it reads.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// An API of `kind` in `admissionregistration.k8s.io/v1`.
pub fn admission_api(client: &Client, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind);
    Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk))
}

/// Deletes the cluster-scoped `object`'s namesake (if any) and creates `object`.
///
/// # Panics
/// When `object` is no Kubernetes object (a bug of the caller).
pub async fn replace(api: &Api<DynamicObject>, object: Value) -> kube::Result<()> {
    let object: DynamicObject = serde_json::from_value(object).expect("a Kubernetes object");
    let _ = api
        .delete(&object.name_any(), &DeleteParams::default())
        .await;
    api.create(&PostParams::default(), &object).await?;
    Ok(())
}

/// The namespace selector that leaves out [`EXEMPT`].
pub fn not_exempt() -> Value {
    json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": EXEMPT}]})
}

/// Deletes the ValidatingWebhookConfiguration, ValidatingAdmissionPolicyBinding and
/// ValidatingAdmissionPolicy named `name`, those that exist.
pub async fn remove_admission(client: &Client, name: &str) -> kube::Result<()> {
    for kind in [
        "ValidatingWebhookConfiguration",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicy",
    ] {
        match admission_api(client, kind)
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Registers the default-registry rule and the "any registry" grant label in CEL, as a
/// ValidatingAdmissionPolicy and binding named `name` (replacing whatever admission objects
/// have that name). A floor, not an equivalent: CEL has no reference grammar, so `startsWith`
/// stands in for parsing, and registry entries from grants are not read.
pub async fn register_cel_policy(client: &Client, name: &str) -> kube::Result<()> {
    remove_admission(client, name).await?;
    let from_platform = format!("c.image.startsWith('{PLATFORM}/')");
    let all = |list: &str| {
        format!("(!has(object.spec.{list}) || object.spec.{list}.all(c, {from_platform}))")
    };
    let expression = format!(
        "('byoc.toolforge.org/any' in namespaceObject.metadata.?labels.orValue({{}})) || ({} && {} && {})",
        all("containers"),
        all("initContainers"),
        all("ephemeralContainers")
    );
    replace(&admission_api(client, "ValidatingAdmissionPolicy"), json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "namespaceSelector": not_exempt(),
                "resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                                   "resources": ["pods", "pods/ephemeralcontainers"]}],
            },
            "validations": [{"expression": expression, "message": format!("images must come from {PLATFORM}")}],
        },
    }))
    .await?;
    replace(&admission_api(client, "ValidatingAdmissionPolicyBinding"), json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    }))
    .await
}

/// A pod `name` with one container running `image`, labelled `app=bench`.
pub fn pod(name: &str, image: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "app", "image": image}]},
    }))
    .expect("a Pod")
}

/// Waits (up to 30 s) until a server-side dry run of a Docker Hub pod in `namespace` is refused
/// (`enforced`) or admitted: the admission phase about to be timed is in force.
pub async fn wait_for_enforcement(
    client: &Client,
    namespace: &str,
    enforced: bool,
) -> Result<(), String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let probe = pod("probe", "nginx");
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    for _ in 0..300 {
        if api.create(&dry_run, &probe).await.is_ok() != enforced {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "admission in {namespace} did not become {} within 30s",
        if enforced { "enforcing" } else { "open" }
    ))
}

/// Creates `pods` in `namespace` one after another and returns how long each create call took
/// (request to response).
pub async fn create_pods(
    client: &Client,
    namespace: &str,
    pods: impl IntoIterator<Item = Pod>,
) -> kube::Result<Latencies> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut samples = Vec::new();
    for pod in pods {
        let started = Instant::now();
        api.create(&PostParams::default(), &pod).await?;
        samples.push(started.elapsed());
    }
    Ok(Latencies::new(samples))
}

/// (VmRSS, VmHWM) of a process, in MiB.
pub fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time (user + system) a process has used, in seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces): utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // USER_HZ is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// The `p`th percentile of `sorted` (nearest rank).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A realistic pod AdmissionReview (a tool's Deployment pod, platform sidecars) in `ns` whose
/// main container runs `image`.
pub fn pod_review(uid: &str, ns: &str, image: &str) -> Value {
    let container = |name: &str, image: &str| {
        json!({
            "name": name, "image": image, "imagePullPolicy": "Always",
            "resources": {"limits": {"cpu": "500m", "memory": "512Mi"}, "requests": {"cpu": "250m", "memory": "256Mi"}},
            "volumeMounts": [{"name": "home", "mountPath": "/data/project"}, {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}],
            "env": [{"name": "HOME", "value": "/data/project/bot"}, {"name": "TOOL_DATA_DIR", "value": "/data/project/bot"}],
            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
            "securityContext": {"allowPrivilegeEscalation": false, "runAsUser": 52503, "capabilities": {"drop": ["ALL"]}}
        })
    };
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "", "namespace": ns, "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "uid": "a",
                         "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]},
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "bot-7d9f8b6c5-", "namespace": ns,
                    "labels": {"app.kubernetes.io/name": "bot", "pod-template-hash": "7d9f8b6c5", "toolforge": "tool"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "bot-7d9f8b6c5", "uid": "b", "controller": true, "blockOwnerDeletion": true}]},
                "spec": {
                    "initContainers": [container("setup", &format!("{PLATFORM}/toolforge-bookworm-sssd:latest"))],
                    "containers": [container("bot", image), container("redis", &format!("{PLATFORM}/toolforge-redis:latest"))],
                    "volumes": [{"name": "home", "hostPath": {"path": "/data/project/bot", "type": "Directory"}},
                                {"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}],
                    "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
                    "serviceAccountName": "default", "schedulerName": "default-scheduler", "priority": 0, "enableServiceLinks": true,
                    "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]
                },
                "status": {"phase": "Pending", "qosClass": "Burstable"}
            },
            "oldObject": null, "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    })
}

/// A namespace as the webhook's cache holds it, granted `registry` with `requirements` (none:
/// allowed by name only), as the controller labels and annotates it.
pub fn granted_namespace(
    name: &str,
    registry: &str,
    requirements: Option<&Requirements>,
) -> LeanNamespace {
    let grant = ByocGrantSpec {
        namespace: name.into(),
        reason: "bench".into(),
        registries: vec![registry.to_owned()],
        any_registry: false,
        namespace_uid: None,
        expires_at: None,
        requirements: None,
    };
    let labels = Allowance::for_grant(&grant)
        .expect("a registry entry")
        .to_labels()
        .expect("labels");
    let annotations = requirements.map(|r| {
        let value = NamespaceRequirements {
            version: byoc_api::requirements::ANNOTATION_VERSION,
            registries: [(
                registry.to_owned(),
                vec![Alternative {
                    expires: Expiry::Never,
                    requirements: Some(r.clone()),
                }],
            )]
            .into(),
        };
        BTreeMap::from([(REQUIREMENTS_ANNOTATION.to_owned(), value.to_annotation())])
    });
    LeanNamespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            annotations,
            ..ObjectMeta::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_the_sample_at_the_floor_index() {
        let ms = |v: &[u64]| Latencies::new(v.iter().map(|&m| Duration::from_millis(m)).collect());
        let hundred = ms(&(1..=100).rev().collect::<Vec<_>>());
        for (series, q, want) in [
            (&hundred, 0.5, 51),
            (&hundred, 0.99, 100),
            (&hundred, 1.0, 100),
            (&hundred, 0.0, 1),
            (&ms(&[7]), 0.99, 7),
            (&ms(&[3, 1, 2]), 0.5, 2),
            (&ms(&[]), 0.99, 0),
        ] {
            assert_eq!(
                series.quantile(q),
                Duration::from_millis(want),
                "{series:?} q {q}"
            );
        }
    }

    #[test]
    fn median_of_odd_even_and_no_values() {
        for (values, want) in [
            (vec![3.0, 1.0, 2.0], 2.0),
            (vec![4.0, 1.0, 3.0, 2.0], 3.0),
            (vec![5.0], 5.0),
            (vec![], 0.0),
        ] {
            assert_eq!(median(values.clone()), want, "{values:?}");
        }
    }
}

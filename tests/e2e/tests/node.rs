//! The operator as its users run it: pods on a real node (`hack/local-cluster.sh --node`), from
//! the images built by `hack/build-images.sh`, installed by `helm` from charts/byoc-operator, with
//! the API server calling the webhook through its Service.
//!
//! They need the node, so they are `#[ignore]`d in the plain cluster; `make e2e-node` runs them:
//!
//! ```text
//! hack/local-cluster.sh --node exec -- cargo test -p byoc-e2e --test node -- --ignored --test-threads=1
//! ```
//!
//! One at a time: two of them restart the operator's pods on purpose.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use byoc_e2e::chaos::{Outcome, try_pod, wait_outcome};
use byoc_e2e::controller::{NAME as LEASE, SYSTEM_NAMESPACE};
use byoc_e2e::node::{
    OutsideHost, POD_REGISTRY, REGISTRY, RELEASE, RUNNING_TIMEOUT, TEST_IMAGE_PATH, egress_drops,
    helm_upgrade, image, installed, output_guard, wait_running,
};
use byoc_e2e::registry::{ImageSpec, Layer, RegistryApi};
use byoc_e2e::webhook::{NAMESPACES_WEBHOOK, PODS_WEBHOOK, assert_docker_hub_refused, denied_by};
use byoc_e2e::{
    CONVERGE_TIMEOUT, Cleanup, Output, TestNamespace, byoc_labels, client, create_grant,
    eventually, grant_manifest, kubectl, kubectl_run, kubectl_stdin, requirements_annotation,
    unique_name, wait_byoc_labels,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

async fn tool_namespace(client: &Client, prefix: &str) -> TestNamespace {
    let ns = TestNamespace::create(client, prefix).await;
    ns.wait_for_default_service_account(client).await;
    ns
}

fn component_selector(component: &str) -> String {
    format!("app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}")
}

/// The release's pods of `component` (webhook or controller).
async fn component_pods(client: &Client, component: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), SYSTEM_NAMESPACE)
        .list(&ListParams::default().labels(&component_selector(component)))
        .await
        .expect("list the release's pods")
        .items
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The image ID the kubelet reports for the pod's first container (`REPO@sha256:...`).
fn image_id(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map(|c| c.image_id.clone())
        .unwrap_or_default()
}

/// Waits until the controller (a pod of the release) has written a grant's labels on `namespace`.
async fn wait_granted(client: &Client, namespace: &str) {
    eventually("the grant's labels", CONVERGE_TIMEOUT, || async {
        if byoc_labels(client, namespace).await.is_empty() {
            Err("none yet".to_owned())
        } else {
            Ok(())
        }
    })
    .await;
}

/// Waits until the Deployment of `component` has all its replicas updated and Ready.
async fn wait_rolled_out(client: &Client, component: &str) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let name = format!("{RELEASE}-{component}");
    eventually(
        &format!("deployment {name} rolled out"),
        Duration::from_secs(180),
        || async {
            let d = api.get(&name).await.map_err(|e| e.to_string())?;
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let s = d.status.unwrap_or_default();
            let done = s.updated_replicas == Some(want)
                && s.ready_replicas == Some(want)
                && s.replicas == Some(want);
            if done { Ok(()) } else { Err(format!("{s:?}")) }
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "needs the node and the chart: make e2e-node"]
async fn chart_pods_are_ready_and_run_the_images_built_here() {
    installed();
    let client = client().await;
    for (component, name) in [
        ("webhook", "byoc-webhook"),
        ("controller", "byoc-controller"),
    ] {
        let pods = component_pods(&client, component).await;
        assert_eq!(pods.len(), 2, "two {component} replicas: {pods:?}");
        for pod in &pods {
            assert!(is_ready(pod), "{component} pod not Ready: {:?}", pod.status);
            let id = image_id(pod);
            assert!(
                id.ends_with(&image(name).digest),
                "{component} runs {id}, not the image pushed here ({})",
                image(name).digest
            );
        }
    }
}

#[tokio::test]
#[ignore = "needs the node and the chart: make e2e-node"]
async fn platform_image_is_pulled_from_the_local_registry_and_runs() {
    installed();
    let client = client().await;
    let ns = tool_namespace(&client, "node-platform").await;
    let platform = format!("docker-registry.tools.wmflabs.org/{TEST_IMAGE_PATH}");
    kubectl_run(ns.name(), "platform", &platform).success();
    let pod = wait_running(&client, ns.name(), "platform").await;
    let id = image_id(&pod);
    assert!(
        id.starts_with("docker-registry.tools.wmflabs.org/toolforge/byoc-operator/test@")
            && id.ends_with(&image("test").digest),
        "the pod runs {id}, not the test image pushed to the local registry ({})",
        image("test").digest
    );
}

#[tokio::test]
#[ignore = "needs the node and the chart: make e2e-node"]
async fn quay_image_runs_in_a_granted_namespace_and_is_refused_in_another() {
    installed();
    let client = client().await;
    let granted = tool_namespace(&client, "node-granted").await;
    let other = tool_namespace(&client, "node-other").await;
    let _grant = create_grant(
        &unique_name("node-quay"),
        granted.name(),
        &["quay.io/toolforge"],
        None,
    );
    wait_granted(&client, granted.name()).await;

    let quay = format!("quay.io/{TEST_IMAGE_PATH}");
    kubectl_run(granted.name(), "quay", &quay).success();
    let pod = wait_running(&client, granted.name(), "quay").await;
    assert!(
        image_id(&pod).ends_with(&image("test").digest),
        "{}",
        image_id(&pod)
    );

    kubectl_run(other.name(), "quay", &quay).fails_with(&[
        &denied_by(PODS_WEBHOOK),
        &format!("image \"{quay}\" resolves to registry quay.io"),
    ]);
    kubectl(["-n", other.name(), "get", "pod", "quay"]).failure();
}

/// Asserts that pod `name` in `namespace` is still the Running pod `before` (same uid, no
/// restart) and answers `kubectl exec`: what a grant let in is never stopped by its end.
async fn assert_still_running(client: &Client, namespace: &str, name: &str, before: &Pod) {
    let now = Api::<Pod>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .expect("get the pod");
    let status = now.status.clone().unwrap_or_default();
    assert_eq!(
        now.metadata.uid, before.metadata.uid,
        "pod {name} was replaced"
    );
    assert_eq!(status.phase.as_deref(), Some("Running"), "{status:?}");
    let restarts: i32 = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .sum();
    assert_eq!(restarts, 0, "pod {name} restarted: {status:?}");
    kubectl(["-n", namespace, "exec", name, "--", "true"]).success();
}

/// The refusal of a pod from quay.io once no grant lets it in: by the pods webhook, naming the
/// registry, with only the platform registry left.
fn assert_quay_refused(namespace: &str, pod: &str) {
    let quay = format!("quay.io/{TEST_IMAGE_PATH}");
    kubectl_run(namespace, pod, &quay).fails_with(&[
        &denied_by(PODS_WEBHOOK),
        &format!("image \"{quay}\" resolves to registry quay.io"),
        "allowed here: docker-registry.tools.wmflabs.org;",
    ]);
    kubectl(["-n", namespace, "get", "pod", pod]).failure();
}

/// A tool namespace with a `quay.io/toolforge` grant (expiring at `expires`) and pod `granted`
/// from quay.io Running in it under that grant.
struct GrantedPod {
    ns: TestNamespace,
    grant: String,
    _cleanup: Cleanup,
    pod: Pod,
}

impl GrantedPod {
    async fn start(client: &Client, prefix: &str, expires: Option<&str>) -> Self {
        let ns = tool_namespace(client, prefix).await;
        let grant = unique_name(prefix);
        let cleanup = create_grant(&grant, ns.name(), &["quay.io/toolforge"], expires);
        wait_granted(client, ns.name()).await;
        kubectl_run(ns.name(), "granted", &format!("quay.io/{TEST_IMAGE_PATH}")).success();
        let pod = wait_running(client, ns.name(), "granted").await;
        Self {
            ns,
            grant,
            _cleanup: cleanup,
            pod,
        }
    }
}

#[tokio::test]
#[ignore = "needs the node and the chart: make e2e-node"]
async fn revoking_a_grant_refuses_new_pods_and_leaves_running_ones() {
    installed();
    let client = client().await;
    let granted = GrantedPod::start(&client, "node-revoke", None).await;
    let ns = &granted.ns;

    // Deleting waits for the controller's finalizer, which removes the labels first; the
    // refusal must follow within PROPAGATION (10 s) or wait_outcome fails.
    kubectl(["delete", "byocgrant", &granted.grant, "--wait=true"]).success();
    let quay = format!("quay.io/{TEST_IMAGE_PATH}");
    let took = wait_outcome(&client, ns.name(), &quay, Outcome::Denied).await;
    eprintln!("revoked: a new quay.io pod refused {took:?} after the grant was gone");
    assert_quay_refused(ns.name(), "revoked");
    assert!(byoc_labels(&client, ns.name()).await.is_empty());
    assert_still_running(&client, ns.name(), "granted", &granted.pod).await;
}

#[tokio::test]
#[ignore = "needs the node and the chart: make e2e-node"]
async fn an_expired_grant_refuses_new_pods_and_leaves_running_ones() {
    installed();
    let client = client().await;
    // Far enough ahead for the labels and a first pod, on a loaded machine.
    let expires = Timestamp::from_second(Timestamp::now().as_second() + 20).expect("a time");
    let granted = GrantedPod::start(&client, "node-expiry", Some(&expires.to_string())).await;
    let (ns, grant) = (&granted.ns, &granted.grant);
    let created = granted.pod.creation_timestamp().expect("a creation time").0;
    assert!(
        created < expires,
        "the grant expired at {expires} before pod granted was created ({created})"
    );

    let quay = format!("quay.io/{TEST_IMAGE_PATH}");
    let left = expires.duration_since(Timestamp::now());
    if left > SignedDuration::ZERO {
        tokio::time::sleep(left.unsigned_abs()).await;
    }
    // The webhook reads the expiry from the label: it refuses without waiting for the
    // controller, within PROPAGATION (10 s) or wait_outcome fails.
    let took = wait_outcome(&client, ns.name(), &quay, Outcome::Denied).await;
    eprintln!("expired: a new quay.io pod refused {took:?} after {expires}");
    assert_quay_refused(ns.name(), "expired");
    eventually("the grant Expired", CONVERGE_TIMEOUT, || async {
        let reason = kubectl([
            "get",
            "byocgrant",
            grant,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}",
        ])
        .success()
        .stdout;
        if reason == "Expired" {
            Ok(())
        } else {
            Err(reason)
        }
    })
    .await;
    wait_byoc_labels(&client, ns.name(), &[]).await;
    assert_still_running(&client, ns.name(), "granted", &granted.pod).await;
}

#[tokio::test]
#[ignore = "needs the node and the chart: make e2e-node"]
async fn docker_hub_is_refused_with_the_policy_message() {
    installed();
    let client = client().await;
    let ns = tool_namespace(&client, "node-hub").await;
    let name = ns.name();
    assert_docker_hub_refused(name);
}

/// A pod of the test image from the platform registry (which the policy allows everywhere)
/// named `name`, with `security_context` on its container and `volumes`.
fn platform_pod(name: &str, security_context: Value, volumes: Value) -> String {
    let mounts: Vec<Value> = volumes
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| json!({"name": v["name"], "mountPath": "/host"}))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "c",
                "image": format!("docker-registry.tools.wmflabs.org/{TEST_IMAGE_PATH}"),
                "securityContext": security_context,
                "volumeMounts": mounts,
            }],
            "volumes": volumes,
        },
    })
    .to_string()
}

/// The policy judges where an image comes from, not what the pod may do: an allowed image that
/// is privileged or mounts the node's containerd socket runs anything. Pod Security `baseline`
/// on the tool namespace is what refuses those (issue 21 part 6), while the byoc webhook keeps
/// refusing other registries there.
#[tokio::test]
#[ignore = "needs the node and the chart: make e2e-node"]
async fn pod_security_baseline_refuses_privileged_pods_the_registry_policy_admits() {
    installed();
    let client = client().await;
    let ns = tool_namespace(&client, "node-psa").await;
    let name = ns.name();
    let privileged = platform_pod("privileged", json!({"privileged": true}), json!([]));
    let socket = platform_pod(
        "socket",
        json!({}),
        json!([{"name": "sock", "hostPath": {"path": "/run/containerd", "type": "Directory"}}]),
    );

    // Without enforcement the registry policy admits both: they come from an allowed registry.
    for pod in [&privileged, &socket] {
        kubectl_stdin(&["-n", name, "create", "--dry-run=server", "-f", "-"], pod).success();
    }

    kubectl([
        "label",
        "namespace",
        name,
        "pod-security.kubernetes.io/enforce=baseline",
    ])
    .success();
    // The byoc webhook is in force in the namespace.
    assert_docker_hub_refused(name);
    kubectl_stdin(&["-n", name, "create", "-f", "-"], &privileged).fails_with(&[
        "violates PodSecurity \"baseline:latest\"",
        "privileged (container \"c\" must not set securityContext.privileged=true)",
    ]);
    kubectl_stdin(&["-n", name, "create", "-f", "-"], &socket).fails_with(&[
        "violates PodSecurity \"baseline:latest\"",
        "hostPath volumes (volume \"sock\")",
    ]);
    for pod in ["privileged", "socket"] {
        kubectl(["-n", name, "get", "pod", pod]).failure();
    }

    // The same image without privileges is admitted and runs.
    let plain = platform_pod("plain", json!({}), json!([]));
    kubectl_stdin(&["-n", name, "create", "-f", "-"], &plain).success();
    let pod = wait_running(&client, name, "plain").await;
    assert!(
        image_id(&pod).ends_with(&image("test").digest),
        "{}",
        image_id(&pod)
    );
}

#[tokio::test]
#[ignore = "needs the node and the chart: make e2e-node"]
async fn label_tamper_is_refused() {
    installed();
    let client = client().await;
    let ns = tool_namespace(&client, "node-tamper").await;
    kubectl([
        "label",
        "namespace",
        ns.name(),
        "byoc.toolforge.org/any=never",
    ])
    .fails_with(&[&denied_by(NAMESPACES_WEBHOOK)]);
    assert!(byoc_labels(&client, ns.name()).await.is_empty());
}

#[tokio::test]
#[ignore = "needs the node and the chart: make e2e-node"]
async fn nothing_a_pod_sends_leaves_the_machine() {
    installed();
    let client = client().await;
    let ns = tool_namespace(&client, "node-egress").await;
    let platform = format!("docker-registry.tools.wmflabs.org/{TEST_IMAGE_PATH}");
    kubectl_run(ns.name(), "egress", &platform).success();
    wait_running(&client, ns.name(), "egress").await;

    // A host on this machine, outside the node, that answers: the pod's packets for it would
    // reach it if the node's FORWARD rule did not drop them.
    let outside = OutsideHost::start();
    let before = egress_drops();
    let target = OutsideHost::ADDRESS;
    let port = OutsideHost::PORT.to_string();
    let out = kubectl([
        "-n",
        ns.name(),
        "exec",
        "egress",
        "--",
        "nc",
        "-w",
        "3",
        target,
        &port,
    ]);
    assert!(!out.status.success(), "the pod reached {target}: {out}");
    let reached = outside.accepted_from_elsewhere();
    assert!(
        reached.is_empty(),
        "the outside host accepted a connection from the pod: {reached:?}"
    );
    let after = egress_drops();
    assert!(
        after > before,
        "the FORWARD drop rule did not count the pod's packets ({before} -> {after}): {out}"
    );
    // Nothing for the cluster's ranges leaves by another interface than loopback or the
    // project's own (the bridge, the outside host's veth), whoever sends it.
    assert_eq!(
        output_guard(),
        [
            "-N BYOC-NODE-OUT",
            "-A BYOC-NODE-OUT -o lo -j RETURN",
            "-A BYOC-NODE-OUT -o byoc+ -j RETURN",
            "-A BYOC-NODE-OUT -d 198.18.0.0/15 -j DROP",
            "-A BYOC-NODE-OUT -m conntrack --ctorigdst 198.18.0.0/15 -j DROP",
            "-A BYOC-NODE-OUT -m conntrack --ctorigsrc 198.18.0.0/15 -j DROP",
        ]
    );
    // containerd pulls what has no mirror here through a proxy that is not there.
    let pids = pgrep("containerd --config ");
    assert!(!pids.is_empty(), "no containerd of the node");
    for pid in pids {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let environ = String::from_utf8_lossy(&environ);
        assert!(
            environ
                .split('\0')
                .any(|v| v == "HTTPS_PROXY=http://127.0.0.1:1"),
            "containerd {pid} may pull from the internet: {environ}"
        );
    }
}

/// Creates pods (server-side dry run, through every admission step) in a loop until `stop`,
/// returning how many were admitted and every other outcome.
async fn create_pods_until(
    client: Client,
    namespace: String,
    stop: Arc<AtomicBool>,
) -> (usize, Vec<Outcome>) {
    let platform = format!("docker-registry.tools.wmflabs.org/{TEST_IMAGE_PATH}");
    let (mut admitted, mut failed) = (0, Vec::new());
    while !stop.load(Ordering::Relaxed) {
        match try_pod(&client, &namespace, &platform).await {
            Outcome::Admitted => admitted += 1,
            other => failed.push(other),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (admitted, failed)
}

#[tokio::test]
#[ignore = "needs the node and the chart: make e2e-node"]
async fn webhook_rollout_and_pod_deletion_fail_no_admission() {
    installed();
    let client = client().await;
    let ns = tool_namespace(&client, "node-roll").await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(create_pods_until(
        client.clone(),
        ns.name().to_owned(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A rolling `helm upgrade`: a new pod annotation replaces both replicas, one at a time.
    let roll = unique_name("roll");
    tokio::task::spawn_blocking(move || {
        helm_upgrade(&[&format!("webhook.podAnnotations.e2e-roll={roll}")]);
    })
    .await
    .expect("helm upgrade");
    wait_rolled_out(&client, "webhook").await;

    // One replica deleted: the other serves while the Deployment replaces it.
    let victim = component_pods(&client, "webhook").await[0]
        .metadata
        .name
        .clone()
        .expect("pod name");
    kubectl(["-n", SYSTEM_NAMESPACE, "delete", "pod", &victim]).success();
    wait_rolled_out(&client, "webhook").await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    stop.store(true, Ordering::Relaxed);
    let (admitted, failed) = load.await.expect("the load task");
    assert!(admitted > 50, "only {admitted} pod creates were admitted");
    assert!(
        failed.is_empty(),
        "{} of {} pod creates failed during the rollout and the deletion: {:?}",
        failed.len(),
        admitted + failed.len(),
        &failed[..failed.len().min(5)]
    );
}

#[tokio::test]
#[ignore = "needs the node and the chart: make e2e-node"]
async fn controller_leader_pod_deleted_the_other_takes_over() {
    installed();
    let client = client().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let holder = || async {
        leases
            .get(LEASE)
            .await
            .map_err(|e| e.to_string())?
            .spec
            .and_then(|s| s.holder_identity)
            .filter(|h| !h.is_empty())
            .ok_or_else(|| "no holder".to_owned())
    };
    let leader = eventually("a controller leader", CONVERGE_TIMEOUT, holder).await;
    let pods: Vec<String> = component_pods(&client, "controller")
        .await
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert!(
        pods.contains(&leader),
        "leader {leader} is none of {pods:?}"
    );
    assert!(
        pods.iter().any(|p| *p != leader),
        "no standby beside {leader}: {pods:?}"
    );

    kubectl([
        "-n",
        SYSTEM_NAMESPACE,
        "delete",
        "pod",
        &leader,
        "--wait=false",
    ])
    .success();
    // The standby, or the replica the Deployment starts in the deleted one's place, whichever
    // gets there first (the leader gives the lease up when it stops), leads; it is a live pod.
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    eventually(
        "another controller pod takes the lease",
        Duration::from_secs(60),
        || async {
            let now = holder().await?;
            if now == leader {
                return Err(format!("still held by the deleted {now}"));
            }
            let pod = pods_api
                .get(&now)
                .await
                .map_err(|e| format!("{now}: {e}"))?;
            if pod.metadata.deletion_timestamp.is_none() && is_ready(&pod) {
                Ok(())
            } else {
                Err(format!("held by {now}, which is not a live Ready pod"))
            }
        },
    )
    .await;

    let ns = tool_namespace(&client, "node-failover").await;
    let _grant = create_grant(
        &unique_name("node-failover"),
        ns.name(),
        &["quay.io/toolforge"],
        None,
    );
    wait_granted(&client, ns.name()).await;
    wait_rolled_out(&client, "controller").await;
}

/// A Deployment `name` of one replica of `image`, its container named `name` too, running the
/// test image's `/bin/pause` (the images built on it here carry no command of their own).
fn deployment(name: &str, image: &str) -> String {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": image, "command": ["/bin/pause"]}]},
            },
        },
    })
    .to_string()
}

/// `kubectl apply` of `manifest` in `namespace`, retried while the webhook's cache has not yet
/// seen the namespace's grant (a refusal "... may not use ...").
async fn apply(namespace: &str, manifest: &str) -> Output {
    eventually("the webhook sees the grant", CONVERGE_TIMEOUT, || async {
        let out = kubectl_stdin(&["-n", namespace, "apply", "-f", "-"], manifest);
        if out.stderr.contains("may not use") {
            Err(out.stderr)
        } else {
            Ok(out)
        }
    })
    .await
}

/// Waits until the Deployment of app `app` in `namespace` has a pod, and returns its name.
async fn deployment_pod(client: &Client, namespace: &str, app: &str) -> String {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    eventually(&format!("a pod of {app}"), RUNNING_TIMEOUT, || async {
        let pods = api
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .map_err(|e| e.to_string())?;
        pods.items
            .first()
            .and_then(|p| p.metadata.name.clone())
            .ok_or_else(|| "no pod yet".to_owned())
    })
    .await
}

/// Issue 22 on the node: a grant whose registry requires images `builtOn` a platform base. The
/// webhook, a pod of the chart, looks the images up in the node's registry as pods reach it
/// ([`POD_REGISTRY`], the node's bridge address); containerd pulls the same images from it.
/// The tool's Deployment, built on the base, is applied and its pod runs on the node; the same
/// tool layer re-based on another base is refused at `kubectl apply` of its Deployment.
#[tokio::test]
#[ignore = "needs the node and the chart: make e2e-node"]
async fn built_on_runs_the_tool_on_the_base_and_refuses_the_rebased_deployment_at_apply() {
    installed();
    let client = client().await;
    let ns = tool_namespace(&client, "node-built-on").await;
    let name = ns.name();

    // Built here and pushed to the node's registry, under a project of this run. The platform
    // base: the test image's layers (busybox, /bin/pause). The tool: a layer of its own on the
    // base. Re-based: the same tool layer on another base (a first layer of its own below the
    // same busybox layers, so it would run as well).
    let registry = RegistryApi::new(REGISTRY.parse().expect("the registry's address"));
    let (test_path, test_tag) = TEST_IMAGE_PATH.split_once(':').expect("path:tag");
    image("test"); // pushed by hack/build-images.sh
    let busybox = registry.pull_layers(test_path, test_tag).await;
    let app = Layer::new(&[("tool.sh", "echo hello from the tool\n")]);
    let other_os = Layer::new(&[("other-base-release", "ID=other-base\n")]);
    let base_layers: Vec<&Layer> = busybox.iter().collect();
    let project = unique_name("built-on");
    let base = registry
        .push_image(
            &format!("{project}/base"),
            "latest",
            &ImageSpec::new(&base_layers),
        )
        .await;
    let tool = registry
        .push_image(
            &format!("{project}/web"),
            "latest",
            &ImageSpec::new(&[&base_layers[..], &[&app]].concat()),
        )
        .await;
    let rebased = registry
        .push_image(
            &format!("{project}/rebased"),
            "latest",
            &ImageSpec::new(&[&[&other_os], &base_layers[..], &[&app]].concat()),
        )
        .await;
    assert_eq!(tool.layers[..base.layers.len()], base.layers[..]);
    assert_eq!(rebased.layers[1..], tool.layers[..]);

    let allowed = format!("{POD_REGISTRY}/{project}");
    let base_repository = format!("{POD_REGISTRY}/{}", base.path);
    let grant = unique_name("node-built-on");
    let spec = json!({"namespace": name, "reason": "e2e", "registries": [allowed],
                      "requirements": {"builtOn": [base_repository]}});
    kubectl_stdin(&["create", "-f", "-"], &grant_manifest(&grant, spec)).success();
    let _grant = Cleanup::new(["byocgrant", grant.as_str()]);
    eventually(
        "the grant and its requirement on the namespace",
        CONVERGE_TIMEOUT,
        || async {
            let labels = byoc_labels(&client, name).await;
            let annotated = requirements_annotation(&client, name).await;
            if labels.is_empty() || annotated.is_none() {
                return Err(format!("labels {labels:?}, annotation {annotated:?}"));
            }
            Ok(())
        },
    )
    .await;

    // Built on the base: applied, and its pod runs the tool image on the node.
    let web = format!("{POD_REGISTRY}/{}:{}", tool.path, tool.tag);
    let applied = Instant::now();
    let out = apply(name, &deployment("web", &web)).await;
    assert!(out.status.success(), "the tool's Deployment: {out}");
    let pod = deployment_pod(&client, name, "web").await;
    let pod = wait_running(&client, name, &pod).await;
    eprintln!(
        "built on the base: pod {} Running {:?} after kubectl apply",
        pod.name_any(),
        applied.elapsed()
    );
    let id = image_id(&pod);
    assert!(
        id.starts_with(&format!("{POD_REGISTRY}/{}@", tool.path))
            && id.ends_with(tool.digest.as_str()),
        "the pod runs {id}, not the tool image pushed here ({})",
        tool.digest
    );

    // Re-based: refused at apply, naming the Deployment, the container, the image, the
    // requirement and why; no Deployment is stored.
    let other = format!("{POD_REGISTRY}/{}:{}", rebased.path, rebased.tag);
    let out = apply(name, &deployment("rebased", &other))
        .await
        .fails_with(&[
            &denied_by(PODS_WEBHOOK),
            &format!(
                "Deployment {name}/rebased: container \"rebased\" image \"{other}\" does not meet \
             requirement builtOn of the grant for {allowed}"
            ),
            &format!("not built on {base_repository}"),
            "is not the first layer of any listed base image",
        ]);
    eprintln!("re-based: {}", out.stderr.trim_end());
    kubectl(["-n", name, "get", "deployment", "rebased"]).failure();
}

/// The pids of the processes whose command line contains `pattern`.
fn pgrep(pattern: &str) -> Vec<u32> {
    let out = std::process::Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

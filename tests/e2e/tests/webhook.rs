//! The admission webhook through the real API server and `kubectl` (issue 5, DESIGN §4-§5):
//! pods, `kubectl debug`, workloads and namespace labels, registered as `make run` registers it.
//!
//! ```text
//! hack/local-cluster.sh exec -- cargo test -p byoc-e2e --test webhook
//! ```

use byoc_e2e::controller;
use byoc_e2e::webhook::{
    CONTROLLER_USER, NAMESPACES_WEBHOOK, Options, PODS_WEBHOOK, Webhook, assert_docker_hub_refused,
};
use byoc_e2e::{
    CONVERGE_TIMEOUT, Cleanup, TestNamespace, client, eventually, grant_manifest, kubectl,
    kubectl_as, kubectl_run, kubectl_run_dry, kubectl_stdin, unique_name,
};
use serde_json::json;

const PLATFORM: &str = "docker-registry.tools.wmflabs.org/toolforge-python311:latest";

/// A tool namespace where pods can be created (its default ServiceAccount exists).
async fn tool_namespace() -> TestNamespace {
    let client = client().await;
    let ns = TestNamespace::create(&client, "tool").await;
    ns.wait_for_default_service_account(&client).await;
    ns
}

fn denied_by(webhook: &str) -> String {
    format!("admission webhook \"{webhook}\" denied the request")
}

#[tokio::test]
async fn docker_hub_pod_is_refused_and_platform_pod_admitted() {
    let webhook = Webhook::start(Options::default()).await;
    let ns = tool_namespace().await;
    let name = ns.name();

    assert_docker_hub_refused(name);
    assert!(
        kubectl(["-n", name, "get", "pod", "hub"])
            .failure()
            .stderr
            .contains("NotFound")
    );

    kubectl_run(name, "ok", PLATFORM).success();
    kubectl(["-n", name, "get", "pod", "ok"]).success();

    let denied = "byoc_webhook_decisions_total{result=\"denied\",reason=\"registry_not_allowed\"}";
    let admitted = "byoc_webhook_decisions_total{result=\"admitted\",reason=\"allowed\"}";
    assert!(webhook.metric(denied) >= 1.0, "{}", webhook.metrics());
    assert!(webhook.metric(admitted) >= 1.0, "{}", webhook.metrics());
}

#[tokio::test]
async fn workloads_with_docker_hub_images_are_refused_at_apply() {
    let _webhook = Webhook::start(Options::default()).await;
    let ns = tool_namespace().await;
    let name = ns.name();
    let template = |image: &str, restart: &str| {
        json!({"metadata": {"labels": {"app": "web"}},
               "spec": {"restartPolicy": restart, "containers": [{"name": "app", "image": image}]}})
    };
    let deployment = |object: &str, image: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": object, "namespace": name},
               "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template(image, "Always")}})
        .to_string()
    };
    let cronjob = json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "nightly", "namespace": name},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": template("busybox", "OnFailure")}}}})
    .to_string();

    kubectl_stdin(&["apply", "-f", "-"], &deployment("web", "nginx")).fails_with(&[
        &denied_by(PODS_WEBHOOK),
        &format!("Deployment {name}/web: container \"app\" image \"nginx\" resolves to registry docker.io"),
    ]);
    kubectl_stdin(&["apply", "-f", "-"], &cronjob).fails_with(&[
        &denied_by(PODS_WEBHOOK),
        &format!("CronJob {name}/nightly: container \"app\" image \"busybox\" resolves to registry docker.io"),
    ]);
    kubectl(["-n", name, "get", "deployment/web"]).failure();
    kubectl(["-n", name, "get", "cronjob/nightly"]).failure();

    // A platform Deployment is admitted, and so are the ReplicaSet and Pods that
    // kube-controller-manager makes from it.
    kubectl_stdin(&["apply", "-f", "-"], &deployment("good", PLATFORM)).success();
    eventually("the Deployment's pod", CONVERGE_TIMEOUT, || async {
        let out = kubectl(["-n", name, "get", "pods", "-l", "app=web", "-o", "name"]);
        if out.stdout.contains("pod/good-") {
            Ok(())
        } else {
            Err(out.to_string())
        }
    })
    .await;
}

#[tokio::test]
async fn image_volumes_are_checked_like_container_images() {
    // hack/local-cluster.sh turns the ImageVolume feature gate on (beta and off by default in
    // Kubernetes 1.33); without it the API server would drop `volumes[].image`.
    let _webhook = Webhook::start(Options::default()).await;
    let ns = tool_namespace().await;
    let name = ns.name();
    let spec = |volume_image: &str| {
        json!({"restartPolicy": "Always",
               "containers": [{"name": "app", "image": PLATFORM,
                               "volumeMounts": [{"name": "models", "mountPath": "/models"}]}],
               "volumes": [{"name": "scratch", "emptyDir": {}},
                           {"name": "models", "image": {"reference": volume_image, "pullPolicy": "IfNotPresent"}}]})
    };
    let pod = |object: &str, volume_image: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": object, "namespace": name},
               "spec": spec(volume_image)})
        .to_string()
    };
    let deployment = |object: &str, volume_image: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": object, "namespace": name},
               "spec": {"selector": {"matchLabels": {"app": object}},
                        "template": {"metadata": {"labels": {"app": object}}, "spec": spec(volume_image)}}})
        .to_string()
    };
    let hub = "docker.io/org/models:v1";
    kubectl_stdin(&["apply", "-f", "-"], &pod("hub", hub)).fails_with(&[
        &denied_by(PODS_WEBHOOK),
        &format!(
            "Pod {name}/hub: volume \"models\" image \"{hub}\" resolves to registry docker.io \
             ({hub}), which namespace {name} may not use; allowed here: \
             docker-registry.tools.wmflabs.org; to use it, ask"
        ),
    ]);
    kubectl_stdin(&["apply", "-f", "-"], &deployment("hub", hub)).fails_with(&[
        &denied_by(PODS_WEBHOOK),
        &format!("Deployment {name}/hub: volume \"models\" image \"{hub}\" resolves to registry docker.io"),
    ]);
    kubectl(["-n", name, "get", "pod/hub"]).failure();
    kubectl(["-n", name, "get", "deployment/hub"]).failure();

    // From the platform registry both are admitted and stored with their image volume, and the
    // pods kube-controller-manager makes from the Deployment carry it (and are admitted too).
    let platform = "docker-registry.tools.wmflabs.org/toolforge-models:v1";
    kubectl_stdin(&["apply", "-f", "-"], &pod("ok", platform)).success();
    let stored = kubectl([
        "-n",
        name,
        "get",
        "pod",
        "ok",
        "-o",
        "jsonpath={.spec.volumes[?(@.name==\"models\")].image.reference}",
    ])
    .success();
    assert_eq!(stored.stdout.trim(), platform);
    kubectl_stdin(&["apply", "-f", "-"], &deployment("ok", platform)).success();
    eventually("the Deployment's pod", CONVERGE_TIMEOUT, || async {
        let out = kubectl([
            "-n",
            name,
            "get",
            "pods",
            "-l",
            "app=ok",
            "-o",
            "jsonpath={.items[*].spec.volumes[?(@.name==\"models\")].image.reference}",
        ]);
        if out.stdout.trim() == platform {
            Ok(())
        } else {
            Err(out.to_string())
        }
    })
    .await;
}

#[tokio::test]
async fn kubectl_debug_needs_an_allowed_image() {
    let _webhook = Webhook::start(Options::default()).await;
    let ns = tool_namespace().await;
    let name = ns.name();
    kubectl_run(name, "app", PLATFORM).success();

    // Without a kubelet the pod stays Pending; adding an ephemeral container is an UPDATE of
    // pods/ephemeralcontainers all the same. No -i/-t: kubectl does not attach.
    kubectl(["-n", name, "debug", "app", "--image=busybox", "--container=dbg"]).fails_with(&[
        &denied_by(PODS_WEBHOOK),
        &format!("Pod {name}/app: ephemeralContainer \"dbg\" image \"busybox\" resolves to registry docker.io"),
    ]);
    kubectl([
        "-n",
        name,
        "debug",
        "app",
        &format!("--image={PLATFORM}"),
        "--container=dbg2",
    ])
    .success();
    let out = kubectl([
        "-n",
        name,
        "get",
        "pod",
        "app",
        "-o",
        "jsonpath={.spec.ephemeralContainers[*].name}",
    ])
    .success();
    assert_eq!(out.stdout.trim(), "dbg2");
}

#[tokio::test]
async fn pod_update_swapping_in_a_bad_image_is_refused() {
    let _webhook = Webhook::start(Options::default()).await;
    let ns = tool_namespace().await;
    let name = ns.name();
    kubectl_run(name, "app", PLATFORM).success();

    kubectl(["-n", name, "set", "image", "pod/app", "app=quay.io/evil/miner:1"]).fails_with(&[
        &denied_by(PODS_WEBHOOK),
        &format!("Pod {name}/app: container \"app\" image \"quay.io/evil/miner:1\" resolves to registry quay.io"),
    ]);
    // Updates that leave the images alone are admitted.
    kubectl(["-n", name, "label", "pod", "app", "team=a"]).success();
    let out = kubectl([
        "-n",
        name,
        "get",
        "pod",
        "app",
        "-o",
        "jsonpath={.spec.containers[0].image}",
    ])
    .success();
    assert_eq!(out.stdout, PLATFORM);
}

#[tokio::test]
async fn kube_system_is_unaffected() {
    let _webhook = Webhook::start(Options::default()).await;
    let pod = unique_name("e2e-hub");
    let _cleanup = Cleanup::new(["-n", "kube-system", "pod", pod.as_str()]);
    kubectl_run("kube-system", &pod, "nginx").success();
    // The namespace guard leaves kube-system alone too.
    kubectl([
        "label",
        "namespace",
        "kube-system",
        "byoc-e2e.toolforge.org/touched=true",
    ])
    .success();
    kubectl([
        "label",
        "namespace",
        "kube-system",
        "byoc-e2e.toolforge.org/touched-",
    ])
    .success();
}

#[tokio::test]
async fn a_grant_lets_exactly_its_registries_in_and_revoking_shuts_them_out() {
    let _webhook = Webhook::start(Options::default()).await;
    let _controller = controller::shared().await;
    let ns = tool_namespace().await;
    let name = ns.name();
    let try_pod = |pod: &str, image: &str| kubectl_run_dry(name, pod, image);
    let exporter = "quay.io/prometheus/node-exporter:v1.8.2";
    try_pod("before", exporter).fails_with(&["resolves to registry quay.io"]);

    let grant = unique_name("grant");
    let _cleanup = Cleanup::new(["byocgrant", grant.as_str()]);
    let spec = json!({"namespace": name, "reason": "e2e: node exporter", "registries": ["quay.io/prometheus"]});
    kubectl_stdin(&["apply", "-f", "-"], &grant_manifest(&grant, spec)).success();
    eventually(
        "the grant to admit quay.io/prometheus",
        CONVERGE_TIMEOUT,
        || async {
            let out = try_pod("granted", exporter);
            if out.status.success() {
                Ok(())
            } else {
                Err(out.to_string())
            }
        },
    )
    .await;
    kubectl_run(name, "exporter", exporter).success();
    // Exactly its registries: not the rest of quay.io, not Docker Hub.
    try_pod("other", "quay.io/jetstack/cert-manager-controller:v1.15.0").fails_with(&[
        "resolves to registry quay.io",
        "allowed here: docker-registry.tools.wmflabs.org, quay.io/prometheus;",
    ]);
    try_pod("hub", "nginx").fails_with(&["resolves to registry docker.io"]);

    kubectl(["delete", "byocgrant", &grant, "--wait=true"]).success();
    eventually(
        "the revoked grant to stop admitting",
        CONVERGE_TIMEOUT,
        || async {
            let out = try_pod("revoked", exporter);
            if out.status.success() {
                Err("still admitted".to_owned())
            } else {
                Ok(out)
            }
        },
    )
    .await
    .fails_with(&[
        &denied_by(PODS_WEBHOOK),
        "allowed here: docker-registry.tools.wmflabs.org;",
    ]);
    // Pods created under the grant are not touched by its revocation.
    kubectl(["-n", name, "get", "pod", "exporter"]).success();
}

#[tokio::test]
async fn a_tenant_who_may_patch_its_namespace_cannot_touch_byoc_labels() {
    let _webhook = Webhook::start(Options::default()).await;
    // Installs hack/manifests/controller.yaml, whose RBAC lets the controller patch namespaces.
    controller::setup().await;
    let ns = tool_namespace().await;
    let name = ns.name();
    let tenant = unique_name("tenant");

    // Edit rights in the namespace, plus get/patch/update on the namespace object itself.
    let role = unique_name("ns-patch");
    let _cleanup = Cleanup::new([
        format!("clusterrole/{role}"),
        format!("clusterrolebinding/{role}"),
    ]);
    kubectl([
        "-n",
        name,
        "create",
        "rolebinding",
        "edit",
        "--clusterrole=edit",
        &format!("--user={tenant}"),
    ])
    .success();
    kubectl([
        "create",
        "clusterrole",
        &role,
        "--verb=get,patch,update",
        "--resource=namespaces",
        &format!("--resource-name={name}"),
    ])
    .success();
    kubectl([
        "create",
        "clusterrolebinding",
        &role,
        &format!("--clusterrole={role}"),
        &format!("--user={tenant}"),
    ])
    .success();

    // RBAC lets the tenant patch its namespace: other labels change fine.
    eventually("RBAC for the tenant", CONVERGE_TIMEOUT, || async {
        let out = kubectl_as(&tenant, &["label", "namespace", name, "team=a"], None);
        if out.status.success() {
            Ok(())
        } else {
            Err(out.to_string())
        }
    })
    .await;

    let guard = denied_by(NAMESPACES_WEBHOOK);
    kubectl_as(
        &tenant,
        &["label", "namespace", name, "byoc.toolforge.org/any=never"],
        None,
    )
    .fails_with(&[
        &guard,
        &format!("Namespace {name}: user \"{tenant}\" may not add byoc.toolforge.org/any"),
    ]);

    // The controller's identity may write them.
    kubectl_as(
        CONTROLLER_USER,
        &[
            "label",
            "namespace",
            name,
            "byoc.toolforge.org/quay.io=never",
        ],
        None,
    )
    .success();
    kubectl_as(
        &tenant,
        &[
            "label",
            "--overwrite",
            "namespace",
            name,
            "byoc.toolforge.org/quay.io=20990101T000000Z",
        ],
        None,
    )
    .fails_with(&[&guard, "may not change byoc.toolforge.org/quay.io"]);
    kubectl_as(
        &tenant,
        &["label", "namespace", name, "byoc.toolforge.org/quay.io-"],
        None,
    )
    .fails_with(&[&guard, "may not remove byoc.toolforge.org/quay.io"]);
    let patch = json!({"metadata": {"labels": {"byoc.toolforge.org/quay.io": null, "byoc.toolforge.org/any": "never"}}});
    kubectl_as(
        &tenant,
        &[
            "patch",
            "namespace",
            name,
            "--type=merge",
            "-p",
            &patch.to_string(),
        ],
        None,
    )
    .fails_with(&[
        &guard,
        "may not add byoc.toolforge.org/any, remove byoc.toolforge.org/quay.io",
    ]);

    let out = kubectl([
        "get",
        "namespace",
        name,
        "-o",
        "jsonpath={.metadata.labels}",
    ])
    .success();
    let labels: serde_json::Value = serde_json::from_str(&out.stdout).expect("labels as JSON");
    assert_eq!(labels["byoc.toolforge.org/quay.io"], "never", "{labels}");
    assert!(labels.get("byoc.toolforge.org/any").is_none(), "{labels}");
    assert_eq!(labels["team"], "a");
}

#[tokio::test]
async fn warn_mode_admits_with_a_warning_shown_by_kubectl() {
    let webhook = Webhook::start(Options {
        mode: "warn",
        ..Options::default()
    })
    .await;
    let ns = tool_namespace().await;
    let name = ns.name();
    let out = kubectl_run(name, "hub", "nginx").success();
    assert!(
        out.stderr.contains(&format!(
            "Warning: container \"hub\": registry docker.io of image \"nginx\" is not allowed in \
             namespace {name}; the policy is not enforced yet"
        )),
        "{out}"
    );
    kubectl(["-n", name, "get", "pod", "hub"]).success();
    let warned = "byoc_webhook_decisions_total{result=\"warned\",reason=\"registry_not_allowed\"}";
    assert_eq!(webhook.metric(warned), 1.0, "{}", webhook.metrics());
}

/// An RFC 3339 time `days` from now, in whole seconds (as the namespace labels keep it).
fn days_from_now(days: i64) -> String {
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    let t = Timestamp::now() + SignedDuration::from_hours(24 * days);
    Timestamp::from_second(t.as_second())
        .expect("a time")
        .to_string()
}

/// Creates a grant for `registries` in `namespace` ending at `expires`, and waits until a pod
/// from `image` is admitted there.
async fn grant_until(namespace: &str, registries: &[&str], expires: &str, image: &str) -> Cleanup {
    let grant = unique_name("grant");
    let spec = json!({"namespace": namespace, "reason": "e2e: expiry reminders",
                      "registries": registries, "expiresAt": expires});
    kubectl_stdin(&["apply", "-f", "-"], &grant_manifest(&grant, spec)).success();
    eventually("the grant to admit its image", CONVERGE_TIMEOUT, || async {
        let out = kubectl_run_dry(namespace, "probe", image);
        if out.status.success() {
            Ok(())
        } else {
            Err(out.to_string())
        }
    })
    .await;
    Cleanup::new(["byocgrant", grant.as_str()])
}

#[tokio::test]
async fn a_grant_ending_soon_makes_kubectl_print_a_warning_naming_the_expiry() {
    let webhook = Webhook::start(Options::default()).await;
    let _controller = controller::shared().await;
    let soon = tool_namespace().await;
    let later = tool_namespace().await;
    let image = "quay.io/prometheus/node-exporter:v1.8.2";
    let in_3_days = days_from_now(3);
    let _soon = grant_until(soon.name(), &["quay.io/prometheus"], &in_3_days, image).await;
    let _later = grant_until(
        later.name(),
        &["quay.io/prometheus"],
        &days_from_now(60),
        image,
    )
    .await;
    let ns = soon.name();
    let ask = format!(
        "to keep using it, ask for a grant: kubectl byoc request -n {ns} --registry \
         quay.io/prometheus --reason '...'"
    );

    // kubectl run: admitted, and kubectl prints the reminder.
    let out = kubectl_run(ns, "exporter", image).success();
    assert!(
        out.stderr.contains(&format!(
            "Warning: Pod {ns}/exporter: container \"exporter\" image \"{image}\" is allowed only \
             by a BYOC grant for quay.io/prometheus that expires at {in_3_days} (2 days left); {ask}"
        )),
        "{out}"
    );
    kubectl(["-n", ns, "get", "pod", "exporter"]).success();

    // kubectl apply of a Deployment: the same reminder, naming the Deployment.
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "app", "image": image}]}}}});
    let out = kubectl_stdin(&["apply", "-f", "-"], &deployment.to_string()).success();
    assert!(
        out.stderr.contains(&format!(
            "Warning: Deployment {ns}/web: container \"app\" image \"{image}\" is allowed only by \
             a BYOC grant for quay.io/prometheus that expires at {in_3_days}"
        )),
        "{out}"
    );

    // A platform image in the same namespace, and the same image under a grant ending in 60
    // days: no warning.
    let out = kubectl_run(ns, "platform", PLATFORM).success();
    assert!(!out.stderr.contains("Warning:"), "{out}");
    let out = kubectl_run(later.name(), "exporter", image).success();
    assert!(!out.stderr.contains("Warning:"), "{out}");

    assert!(
        webhook.metric("byoc_webhook_expiry_reminders_total") >= 2.0,
        "{}",
        webhook.metrics()
    );
}

/// The platform's templated default registry (issue 22 part 3): with
/// `tools-harbor.wmcloud.org/{namespace}`, each tool may run images of its own Harbor project and
/// of no other tool's, through the API server; `kubectl byoc check --namespace` with the same
/// policy file gives the same verdict for every case.
#[tokio::test]
async fn a_tool_may_run_its_own_harbor_project_and_no_other_tools() {
    const POLICY: &str = "defaultRegistries:\n  - docker-registry.tools.wmflabs.org\n  - \
                          \"tools-harbor.wmcloud.org/{namespace}\"\n";
    let _webhook = Webhook::start(Options {
        policy: POLICY.to_owned(),
        ..Options::default()
    })
    .await;
    let (a, b) = (tool_namespace().await, tool_namespace().await);
    let (a, b) = (a.name(), b.name());
    let dir = byoc_e2e::chart::work_dir(&unique_name("templated-policy"));
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, format!("mode: enforce\n{POLICY}")).expect("write the policy");
    let harbor = |project: &str| format!("tools-harbor.wmcloud.org/{project}/x:1");
    // (namespace, image, admitted)
    let cases = [
        (a, harbor(a), true),
        (a, harbor(b), false),
        (b, harbor(b), true),
        (b, harbor(a), false),
        // Not across a path boundary: the project `<a>x` is not `<a>`'s.
        (a, harbor(&format!("{a}x")), false),
        (a, "tools-harbor.wmcloud.org/x:1".to_owned(), false),
        (a, PLATFORM.to_owned(), true),
    ];
    for (i, (namespace, image, admitted)) in cases.iter().enumerate() {
        let pod = format!("p{i}");
        let out = kubectl_run_dry(namespace, &pod, image);
        assert_eq!(
            out.status.success(),
            *admitted,
            "webhook, {namespace}: {image}: {out}"
        );
        if !admitted {
            assert!(
                out.stderr.contains(&format!(
                    "allowed here: docker-registry.tools.wmflabs.org, \
                     tools-harbor.wmcloud.org/{namespace};"
                )),
                "{out}"
            );
        }
        // The same pod offline, without a namespace of its own: `--namespace` gives it.
        let manifest = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod},
            "spec": {"containers": [{"name": pod, "image": image}]}});
        let check = byoc_e2e::run_command(
            std::process::Command::new(byoc_e2e::cli::binary())
                .arg("check")
                .arg("--config")
                .arg(&policy)
                .args(["--namespace", namespace, "-"]),
            Some(&manifest.to_string()),
        );
        assert_eq!(
            check.status.code(),
            Some(if *admitted { 0 } else { 1 }),
            "check, {namespace}: {image}: {check}"
        );
    }
}

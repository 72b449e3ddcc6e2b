//! Times a tenant can write that Rust cannot read (the outside review of 2026-11): the API
//! server (Go) stores `9999-12-31T00:00:00Z`, later than the last instant jiff, and so
//! k8s-openapi's `Time`, can represent. A tenant who may patch its namespace writes one into
//! `metadata.managedFields[].time`, or through `namespaces/status` into a condition; the
//! operator reads namespaces as `LeanNamespace` and audited objects as `Lenient<_>`, so:
//!
//! (a) an admin's revocation still removes the labels, and the webhook refuses within seconds;
//! (b) a freshly started webhook becomes ready, a freshly started controller labels and
//!     unlabels the namespace;
//! (c) `kubectl byoc audit` still reads the namespace and a pod so poisoned.
//!
//! ```text
//! hack/local-cluster.sh exec -- cargo test -p byoc-e2e --test unreadable
//! ```

use std::time::Duration;

use byoc_e2e::chaos::{Outcome, PLATFORM_IMAGE, WebhookOptions, WebhookProcess, wait_outcome};
use byoc_e2e::cli::{CliOutput, byoc};
use byoc_e2e::controller::{self, ControllerProcess};
use byoc_e2e::webhook::{Options, Webhook};
use byoc_e2e::{
    CONVERGE_TIMEOUT, TestNamespace, client, create_grant, eventually, kubectl, kubectl_as,
    kubectl_run, unique_name, wait_byoc_labels,
};
use serde_json::{Value, json};

/// Valid for the API server, past what jiff can represent (9999-12-30T22:00Z).
const FAR: &str = "9999-12-31T00:00:00Z";
const QUAY_IMAGE: &str = "quay.io/prometheus/node-exporter:v1.8.0";
const GHCR_IMAGE: &str = "ghcr.io/wikimedia/tool:1";

/// How the tenant makes its namespace unreadable to a typed client.
#[derive(Clone, Copy, Debug)]
enum Poison {
    /// A `managedFields` entry with a far time, by a merge patch of the namespace.
    ManagedFields,
    /// A condition with a far `lastTransitionTime`, through `namespaces/status`.
    StatusCondition,
}

/// A tenant with `get` and `patch` on its own namespace (and its status) and on the pods in it,
/// by a Role in that namespace; returns the user name.
fn tenant_of(namespace: &str) -> String {
    let tenant = unique_name("tenant");
    let role = unique_name("poison");
    kubectl([
        "-n",
        namespace,
        "create",
        "role",
        &role,
        "--verb=get,patch",
        "--resource=namespaces,namespaces/status,pods",
    ])
    .success();
    kubectl([
        "-n",
        namespace,
        "create",
        "rolebinding",
        &role,
        &format!("--role={role}"),
        &format!("--user={tenant}"),
    ])
    .success();
    tenant
}

/// `managedFields` of `object` (`kubectl get` arguments) plus one entry timed [`FAR`].
fn far_managed_fields(object: &[&str]) -> Value {
    let mut args = vec!["get"];
    args.extend(object);
    args.extend(["-o", "json", "--show-managed-fields"]);
    let current: Value = serde_json::from_str(&kubectl(args).success().stdout).expect("JSON");
    let mut fields = current["metadata"]["managedFields"].clone();
    fields.as_array_mut().expect("managedFields").push(json!({
        "manager": "x", "operation": "Update", "apiVersion": "v1", "time": FAR,
        "fieldsType": "FieldsV1", "fieldsV1": { "f:metadata": { "f:annotations": { "f:a": {} } } },
    }));
    fields
}

/// As `tenant`, merge-patches `object` (`kubectl patch` arguments) with `patch`, retrying while
/// RBAC settles; then checks that the API server stored the far time.
async fn tenant_patch(tenant: &str, object: &[&str], patch: Value, stored_at: &str) {
    let patch = patch.to_string();
    eventually(
        &format!("{tenant} patches {object:?}"),
        CONVERGE_TIMEOUT,
        || async {
            let mut args = vec!["patch"];
            args.extend(object);
            args.extend(["--type=merge", "-p", &patch]);
            let out = kubectl_as(tenant, &args, None);
            if out.status.success() {
                Ok(())
            } else {
                Err(out.to_string())
            }
        },
    )
    .await;
    let get: Vec<&str> = ["get"]
        .into_iter()
        .chain(
            object
                .iter()
                .copied()
                .filter(|a| !a.starts_with("--subresource")),
        )
        .chain(["--show-managed-fields", "-o", stored_at])
        .collect();
    let stored = kubectl(get).success().stdout;
    assert!(
        stored.contains(FAR),
        "the API server did not store {FAR}: {stored}"
    );
}

/// Makes namespace `name` unreadable to a typed client, as a tenant would.
async fn poison_namespace(tenant: &str, name: &str, how: Poison) {
    match how {
        Poison::ManagedFields => {
            let fields = far_managed_fields(&["namespace", name]);
            tenant_patch(
                tenant,
                &["namespace", name],
                json!({ "metadata": { "managedFields": fields } }),
                "jsonpath={.metadata.managedFields[*].time}",
            )
            .await;
        }
        Poison::StatusCondition => {
            tenant_patch(
                tenant,
                &["namespace", name, "--subresource=status"],
                json!({ "status": { "conditions": [{
                    "type": "X", "status": "True", "lastTransitionTime": FAR,
                }] } }),
                "jsonpath={.status.conditions[*].lastTransitionTime}",
            )
            .await;
        }
    }
}

async fn start_controller(access: &controller::Exclusive) -> ControllerProcess {
    let process = access.spawn(&unique_name("unread-ctl"), &["--lease-duration=4"]);
    process.wait_leader().await;
    process
}

/// The whole scenario for one kind of poison.
async fn a_poisoned_namespace_stops_nothing(how: Poison) {
    let webhook = Webhook::start(Options::default()).await;
    let access = controller::exclusive().await;
    let running = start_controller(&access).await;
    let client = client().await;
    let ns = TestNamespace::create(&client, "unread").await;
    ns.wait_for_default_service_account(&client).await;
    let name = ns.name();
    let tenant = tenant_of(name);

    let quay = unique_name("unread-quay");
    let _quay = create_grant(&quay, name, &["quay.io"], None);
    wait_byoc_labels(&client, name, &["byoc.toolforge.org/quay.io"]).await;
    wait_outcome(&client, name, QUAY_IMAGE, Outcome::Admitted).await;
    // A pod for the audit, its own managedFields timed far too.
    kubectl_run(name, "app", PLATFORM_IMAGE).success();
    let fields = far_managed_fields(&["-n", name, "pod", "app"]);
    tenant_patch(
        &tenant,
        &["-n", name, "pod", "app"],
        json!({ "metadata": { "managedFields": fields } }),
        "jsonpath={.metadata.managedFields[*].time}",
    )
    .await;

    poison_namespace(&tenant, name, how).await;

    // (a) The admin revokes: the label goes and the webhook refuses quay.io within seconds.
    kubectl(["delete", "byocgrant", &quay, "--wait=false"]).success();
    wait_byoc_labels(&client, name, &[]).await;
    let took = wait_outcome(&client, name, QUAY_IMAGE, Outcome::Denied).await;
    eprintln!("{how:?}: the revoked grant refused {took:?} after its label went");
    assert!(
        !webhook.log().contains("namespace watch failed"),
        "{how:?}: the webhook's watch failed:\n{}",
        webhook.log()
    );

    // (b) A fresh webhook becomes ready; a fresh controller labels and unlabels the namespace.
    let mut fresh = WebhookProcess::start(WebhookOptions::default());
    fresh.wait_ready(Duration::from_secs(30));
    assert!(fresh.metric("byoc_webhook_cached_namespaces") >= 1.0);
    drop(fresh);
    drop(running);
    let _running = start_controller(&access).await;
    let ghcr = unique_name("unread-ghcr");
    let _ghcr = create_grant(&ghcr, name, &["ghcr.io/wikimedia"], None);
    wait_byoc_labels(&client, name, &["byoc.toolforge.org/ghcr.io_wikimedia"]).await;
    wait_outcome(&client, name, GHCR_IMAGE, Outcome::Admitted).await;
    kubectl(["delete", "byocgrant", &ghcr, "--wait=true", "--timeout=60s"]).success();
    wait_byoc_labels(&client, name, &[]).await;
    wait_outcome(&client, name, GHCR_IMAGE, Outcome::Denied).await;

    // (c) The audit reads the namespace and the pod, alone and cluster-wide.
    let report = byoc(["audit", "-n", name, "-o", "json"]).exits(0).json();
    assert_eq!(report["summary"]["pods"], 1, "{report}");
    let all = byoc(["audit", "-o", "json"]);
    assert!([0, 1].contains(&all.code()), "{all}");
    all.json();
}

#[tokio::test]
async fn a_managed_fields_time_past_jiffs_range_stops_nothing() {
    a_poisoned_namespace_stops_nothing(Poison::ManagedFields).await;
}

#[tokio::test]
async fn a_status_condition_time_past_jiffs_range_stops_nothing() {
    a_poisoned_namespace_stops_nothing(Poison::StatusCondition).await;
}

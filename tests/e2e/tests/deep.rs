//! Deeply nested JSON in stored objects (issue 21, part 1), as a tenant would use it: the API
//! server stores a client's `metadata.managedFields[].fieldsV1` nested thousands of levels
//! deep from a merge patch, past serde_json's recursion limit of 128 for a `Value` (and so for
//! k8s-openapi's `ObjectMeta`). A tenant with `edit` in its namespace and `patch` on the
//! namespace itself writes such an entry onto its namespace and onto a pod, without touching a
//! byoc label. The operator's readers stream and skip what they do not use, so:
//!
//! - a freshly started webhook becomes Ready, a freshly started controller leads;
//! - the admin revokes the grant: the webhook refuses the registry within 5 s, and the grant's
//!   finalizer goes;
//! - the pod and the Deployment still appear in their namespace's PolicyReport (controller with
//!   `--reports`), now refused;
//! - `kubectl byoc list`, `audit` and `images` still work.
//!
//! ```text
//! cargo build --workspace --bins && hack/local-cluster.sh exec -- cargo test -p byoc-e2e --test deep
//! ```

use std::time::{Duration, Instant};

use byoc_api::lenient::nested_managed_fields;
use byoc_api::report::{Outcome as ReportOutcome, PolicyReport};
use byoc_e2e::chaos::{Outcome, WebhookOptions, WebhookProcess, wait_outcome};
use byoc_e2e::cli::{CliOutput, byoc};
use byoc_e2e::controller::{self, ControllerProcess};
use byoc_e2e::reports::{self, policy_file, result, wait_report};
use byoc_e2e::webhook::{Options, Webhook};
use byoc_e2e::{
    CONVERGE_TIMEOUT, Cleanup, TestNamespace, client, create_grant, eventually, kubectl,
    kubectl_as, kubectl_run, unique_name, wait_byoc_labels, wait_can,
};

const QUAY_IMAGE: &str = "quay.io/prometheus/node-exporter:v1.8.0";
/// How fast the webhook must refuse a revoked registry (issue 21).
const REFUSED_WITHIN: Duration = Duration::from_secs(5);
/// How fast a report must follow a change (issue 15).
const REPORTED_WITHIN: Duration = Duration::from_secs(10);

/// A tenant with the built-in `edit` role in `namespace` and `get`/`patch` on the namespace
/// itself (a Role there); returns its user name and what removes its bindings.
async fn tenant_of(namespace: &str) -> (String, [Cleanup; 2]) {
    let tenant = unique_name("tenant");
    let edit = unique_name("deep-edit");
    kubectl([
        "-n",
        namespace,
        "create",
        "rolebinding",
        &edit,
        "--clusterrole=edit",
        &format!("--user={tenant}"),
    ])
    .success();
    let own = unique_name("deep-ns");
    kubectl([
        "-n",
        namespace,
        "create",
        "role",
        &own,
        "--verb=get,patch",
        "--resource=namespaces",
    ])
    .success();
    kubectl([
        "-n",
        namespace,
        "create",
        "rolebinding",
        &own,
        &format!("--role={own}"),
        &format!("--user={tenant}"),
    ])
    .success();
    wait_can(&tenant, "patch", "namespaces", Some(namespace)).await;
    wait_can(&tenant, "patch", "pods", Some(namespace)).await;
    let cleanup = [
        Cleanup::new(["-n", namespace, "rolebinding", &edit]),
        Cleanup::new(["-n", namespace, "role,rolebinding", &own]),
    ];
    (tenant, cleanup)
}

/// The metadata of an object.
const METADATA: &[&str] = &["metadata"];
/// The metadata of a workload's pod template.
const TEMPLATE_METADATA: &[&str] = &["spec", "template", "metadata"];

/// As `tenant`, replaces the `managedFields` of the metadata `at` in `object` (`kubectl patch`
/// arguments) by one entry whose `fieldsV1` nests `depth` levels, with a merge patch; then
/// checks, in the raw JSON the API server serves at `path`, that it stored them so.
fn poison(tenant: &str, object: &[&str], at: &[&str], path: &str, depth: usize) {
    let fields = format!(r#"{{"managedFields":{}}}"#, nested_managed_fields(depth));
    let patch = at
        .iter()
        .rev()
        .fold(fields, |inner, key| format!(r#"{{"{key}":{inner}}}"#));
    let file = controller::logs_dir().join(format!("{}.json", unique_name("deep-patch")));
    std::fs::write(&file, patch).expect("write the patch");
    let mut args = vec!["patch"];
    args.extend(object);
    let file_arg = file.display().to_string();
    args.extend(["--type=merge", "--patch-file", &file_arg]);
    kubectl_as(tenant, &args, None).success();
    let _ = std::fs::remove_file(&file);
    let stored = kubectl(["get", "--raw", path]).success().stdout;
    assert_eq!(
        stored.matches(r#"{"f:a":"#).count(),
        depth,
        "the API server did not store {depth} levels at {path}"
    );
}

async fn start_controller(access: &controller::Exclusive, policy: &str) -> ControllerProcess {
    let process = access.spawn(
        &unique_name("deep-ctl"),
        &["--lease-duration=4", "--reports", policy],
    );
    process.wait_leader().await;
    process
}

/// The whole attack, with `fieldsV1` nested `depth` levels deep.
async fn deep_managed_fields_stop_nothing(depth: usize) {
    let webhook = Webhook::start(Options::default()).await;
    let client = client().await;
    byoc_e2e::install_crd(&client).await;
    reports::install_crd(&client).await;
    let access = controller::exclusive().await;
    let policy = policy_file(&unique_name("deep"), "enforce", &[]);
    let policy = format!("--config={}", policy.display());
    let running = start_controller(&access, &policy).await;
    let ns = TestNamespace::create(&client, "deep").await;
    ns.wait_for_default_service_account(&client).await;
    let name = ns.name();
    let (tenant, _bindings) = tenant_of(name).await;

    let quay = unique_name("deep-quay");
    let _quay = create_grant(&quay, name, &["quay.io"], None);
    wait_byoc_labels(&client, name, &["byoc.toolforge.org/quay.io"]).await;
    wait_outcome(&client, name, QUAY_IMAGE, Outcome::Admitted).await;
    kubectl_run(name, "app", QUAY_IMAGE).success();
    kubectl([
        "-n",
        name,
        "create",
        "deployment",
        "web",
        &format!("--image={QUAY_IMAGE}"),
    ])
    .success();
    wait_report(
        &client,
        name,
        "the pod and the Deployment pass",
        REPORTED_WITHIN,
        |r| outcomes(r, ReportOutcome::Pass),
    )
    .await;

    // The attack: the tenant nests managedFields deep on its pod, its namespace, and the pod
    // template of its Deployment.
    poison(
        &tenant,
        &["-n", name, "pod", "app"],
        METADATA,
        &format!("/api/v1/namespaces/{name}/pods/app"),
        depth,
    );
    poison(
        &tenant,
        &["namespace", name],
        METADATA,
        &format!("/api/v1/namespaces/{name}"),
        depth,
    );
    poison(
        &tenant,
        &["-n", name, "deployment", "web"],
        TEMPLATE_METADATA,
        &format!("/apis/apps/v1/namespaces/{name}/deployments/web"),
        depth,
    );

    // A fresh webhook lists every namespace and becomes Ready; a fresh controller leads.
    let mut fresh = WebhookProcess::start(WebhookOptions::default());
    fresh.wait_ready(Duration::from_secs(30));
    assert!(fresh.metric("byoc_webhook_cached_namespaces") >= 1.0);
    drop(fresh);
    drop(running);
    let running = start_controller(&access, &policy).await;

    // The admin revokes: the webhook refuses quay.io within 5 s, the finalizer goes.
    let revoked = Instant::now();
    kubectl(["delete", "byocgrant", &quay, "--wait=false"]).success();
    wait_outcome(&client, name, QUAY_IMAGE, Outcome::Denied).await;
    let took = revoked.elapsed();
    eprintln!("depth {depth}: the revoked registry refused {took:?} after the delete");
    assert!(took <= REFUSED_WITHIN, "refused only after {took:?}");
    eventually(
        &format!("grant {quay} to be gone"),
        CONVERGE_TIMEOUT,
        || async {
            let out = kubectl([
                "get",
                "byocgrant",
                &quay,
                "--ignore-not-found",
                "-o",
                "name",
            ]);
            match out.stdout.trim() {
                "" if out.status.success() => Ok(()),
                left => Err(format!("still there: {left} {}", out.stderr)),
            }
        },
    )
    .await;
    for log in [webhook.log(), running.log_tail()] {
        assert!(
            !log.contains("recursion limit") && !log.contains("namespace watch failed"),
            "depth {depth}: a watch failed:\n{log}"
        );
    }

    // The pod and the Deployment are still reported, now refused.
    wait_report(
        &client,
        name,
        "the pod and the Deployment fail",
        REPORTED_WITHIN,
        |r| outcomes(r, ReportOutcome::Fail),
    )
    .await;

    // The CLI reads the namespace, the pod, the Deployment and the grants.
    byoc(["list"]).exits(0);
    let audit = byoc(["audit", "-n", name, "-o", "json"]).exits(1).json();
    let refused: Vec<(&str, &str)> = audit["namespaces"][0]["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| Some((o["kind"].as_str()?, o["name"].as_str()?)))
        .collect();
    for object in [("Deployment", "web"), ("Pod", "app")] {
        assert!(refused.contains(&object), "{object:?} not refused: {audit}");
    }
    let all = byoc(["audit", "-o", "json"]);
    assert!([0, 1].contains(&all.code()), "{all}");
    all.json();
    for extra in [None, Some("--live")] {
        let mut args = vec!["images", "-n", name, "-o", "json"];
        args.extend(extra);
        let images = byoc(args).exits(0).json();
        assert!(
            images["images"]
                .as_array()
                .is_some_and(|i| i.iter().any(|e| e["image"] == QUAY_IMAGE)),
            "{extra:?}: {images}"
        );
    }
}

/// Whether the pod `app` and the Deployment `web` have outcome `want` in `report`.
fn outcomes(report: &PolicyReport, want: ReportOutcome) -> Result<(), String> {
    for (kind, name) in [("Pod", "app"), ("Deployment", "web")] {
        match result(report, kind, name) {
            Some(r) if r.result == want => {}
            other => return Err(format!("{kind} {name}: {other:?}")),
        }
    }
    Ok(())
}

#[tokio::test]
async fn managed_fields_130_deep_stop_nothing() {
    deep_managed_fields_stop_nothing(130).await;
}

#[tokio::test]
async fn managed_fields_5000_deep_stop_nothing() {
    deep_managed_fields_stop_nothing(5_000).await;
}

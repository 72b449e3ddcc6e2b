//! The inventory against the real API server (issue 15, DESIGN §11): the controller, run with
//! `--reports` as its own ServiceAccount, keeps one PolicyReport per non-exempt namespace with
//! workloads, one result per top-level workload or bare pod; results follow grants, expiries
//! and workloads within seconds; nothing is written when nothing changed; a tampered or
//! deleted report is put back.
//!
//! `cargo build -p byoc-controller -p kubectl-byoc && hack/local-cluster.sh exec -- cargo test -p byoc-e2e --test reports`

use std::path::Path;
use std::time::{Duration, Instant};

use byoc_api::report::{ALLOWED_BY_REFUSED, Outcome, PolicyReport, REPORT_NAME};
use byoc_e2e::cli::{CliOutput, kubectl_byoc};
use byoc_e2e::controller::{ControllerProcess, Exclusive, exclusive};
use byoc_e2e::reports::{self, policy_file, result, wait_report};
use byoc_e2e::webhook::{Options, Webhook};
use byoc_e2e::{
    Cleanup, TestNamespace, client, create_grant, kubectl, kubectl_run, kubectl_stdin, parse_table,
    unique_name, wait_byoc_labels,
};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use serde_json::json;

/// The image the tests grant: quay.io, which no default allows.
const QUAY_IMAGE: &str = "quay.io/prometheus/node-exporter:v1.8.2";
/// An image the platform registry serves.
const PLATFORM_IMAGE: &str = "docker-registry.tools.wmflabs.org/toolforge-python311:latest";
/// How fast a report must follow a change (issue 15: "within 10 s").
const REACT: Duration = Duration::from_secs(10);

/// Starts a controller with `--reports --config POLICY` and waits until it leads.
async fn start(cluster: &Exclusive, name: &str, policy: &Path) -> ControllerProcess {
    let config = format!("--config={}", policy.display());
    let controller = cluster.spawn(&unique_name(name), &["--reports", &config]);
    controller.wait_leader().await;
    controller
}

/// Creates Deployment `name` running `image` in `namespace` (through the webhook when one is
/// registered).
fn create_deployment(namespace: &str, name: &str, image: &str) {
    kubectl([
        "-n",
        namespace,
        "create",
        "deployment",
        name,
        &format!("--image={image}"),
    ])
    .success();
}

/// Checks that `kind`/`name` has result `want` in `report`.
fn has_result(report: &PolicyReport, kind: &str, name: &str, want: Outcome) -> Result<(), String> {
    match result(report, kind, name) {
        Some(r) if r.result == want => Ok(()),
        Some(r) => Err(format!("{kind} {name} is {:?}: {}", r.result, r.message)),
        None => Err(format!("no result for {kind} {name}: {:?}", report.results)),
    }
}

async fn setup(client: &Client) {
    byoc_e2e::install_crd(client).await;
    reports::install_crd(client).await;
}

#[tokio::test]
async fn a_revoked_grant_fails_the_workload_it_let_in_and_a_new_grant_passes_it() {
    let client = client().await;
    setup(&client).await;
    let cluster = exclusive().await;
    let namespace = TestNamespace::create(&client, "e2e-rep").await;
    namespace.wait_for_default_service_account(&client).await;
    let ns = namespace.name();
    let empty = TestNamespace::create(&client, "e2e-rep-empty").await;
    let exempt_name = unique_name("e2e-rep-exempt");
    let policy = policy_file(&exempt_name, "enforce", &[&exempt_name]);
    kubectl(["create", "namespace", &exempt_name]).success();
    let _exempt = Cleanup::new(["namespace", exempt_name.as_str()]);
    create_deployment(&exempt_name, "hub", "nginx:1.27");

    let grant = unique_name("e2e-rep-quay");
    let granted = create_grant(&grant, ns, &["quay.io"], None);
    let controller = start(&cluster, "reports", &policy).await;
    wait_byoc_labels(&client, ns, &["byoc.toolforge.org/quay.io"]).await;
    let webhook = Webhook::start(Options::default()).await;
    create_deployment(ns, "exporter", QUAY_IMAGE);

    // Admitted under the grant: pass, naming the image, its registry and the grant.
    let report = wait_report(&client, ns, "exporter passes", REACT, |r| {
        has_result(r, "Deployment", "exporter", Outcome::Pass)
    })
    .await;
    let exporter = result(&report, "Deployment", "exporter").unwrap();
    assert_eq!(exporter.policy, "byoc-registry");
    assert_eq!(exporter.rule, "allowed-registries");
    assert_eq!(exporter.properties["image.1"], QUAY_IMAGE);
    assert_eq!(exporter.properties["registry.1"], "quay.io");
    assert_eq!(exporter.properties["allowedBy.1"], grant);
    assert_eq!((report.summary.pass, report.summary.fail), (1, 0));
    // The Deployment's ReplicaSet and pods are not results of their own.
    assert_eq!(report.results.len(), 1, "{:?}", report.results);
    assert_eq!(
        controller
            .metric(&format!(
                "byoc_workloads{{namespace=\"{ns}\",result=\"pass\"}}"
            ))
            .await,
        1.0
    );

    // A namespace without workloads has no report; neither has an exempt one.
    assert!(reports::report(&client, empty.name()).await.is_none());
    assert!(reports::report(&client, &exempt_name).await.is_none());

    // Revoked: within 10 s the result fails with the §4 message, and the counts move.
    drop(granted);
    let revoked = Instant::now();
    let report = wait_report(&client, ns, "exporter fails", REACT, |r| {
        has_result(r, "Deployment", "exporter", Outcome::Fail)
    })
    .await;
    println!("revoke -> fail in {:.1?}", revoked.elapsed());
    let exporter = result(&report, "Deployment", "exporter").unwrap();
    assert!(
        exporter.message.starts_with(&format!(
            "Deployment {ns}/exporter: container \"node-exporter\" image \"{QUAY_IMAGE}\" resolves \
             to registry quay.io ({QUAY_IMAGE}), which namespace {ns} may not use; allowed here: \
             docker-registry.tools.wmflabs.org; to use it, ask"
        )),
        "{}",
        exporter.message
    );
    assert_eq!(exporter.properties["allowedBy.1"], ALLOWED_BY_REFUSED);
    assert_eq!((report.summary.pass, report.summary.fail), (0, 1));
    assert_eq!(
        controller
            .metric(&format!(
                "byoc_workloads{{namespace=\"{ns}\",result=\"fail\"}}"
            ))
            .await,
        1.0
    );
    assert!(
        controller
            .metric("byoc_images_in_use{registry=\"quay.io\"}")
            .await
            >= 1.0
    );

    // Granted again, by another grant: pass, naming it.
    let regrant = unique_name("e2e-rep-again");
    let _regranted = create_grant(&regrant, ns, &["quay.io/prometheus"], None);
    let report = wait_report(&client, ns, "exporter passes again", REACT, |r| {
        has_result(r, "Deployment", "exporter", Outcome::Pass)
    })
    .await;
    assert_eq!(
        result(&report, "Deployment", "exporter")
            .unwrap()
            .properties["allowedBy.1"],
        regrant
    );

    // A bare pod is a result of its own; deleting a workload removes its result; the last
    // one gone, the report goes too.
    kubectl_run(ns, "shell", PLATFORM_IMAGE).success();
    let report = wait_report(&client, ns, "the bare pod passes", REACT, |r| {
        has_result(r, "Pod", "shell", Outcome::Pass)
    })
    .await;
    assert_eq!(
        result(&report, "Pod", "shell").unwrap().properties["allowedBy.1"],
        "platform"
    );
    kubectl(["-n", ns, "delete", "deployment", "exporter"]).success();
    wait_report(
        &client,
        ns,
        "the Deployment's result is gone",
        REACT,
        |r| match result(r, "Deployment", "exporter") {
            Some(_) => Err("still there".into()),
            None if r.results.len() == 1 => Ok(()),
            None => Err(format!("{:?}", r.results)),
        },
    )
    .await;
    kubectl([
        "-n",
        ns,
        "delete",
        "pod",
        "shell",
        "--grace-period=0",
        "--force",
    ])
    .success();
    byoc_e2e::eventually("the report to go", REACT, || async {
        match reports::report(&client, ns).await {
            None => Ok(()),
            Some(r) => Err(format!("{:?}", r.results)),
        }
    })
    .await;
    drop(webhook);
    assert!(controller.stop().success(), "{}", controller.log_tail());
}

#[tokio::test]
async fn an_expiring_grant_fails_its_workloads_without_any_other_change() {
    let client = client().await;
    setup(&client).await;
    let cluster = exclusive().await;
    let ns = TestNamespace::create(&client, "e2e-rep-exp").await;
    let ns = ns.name();
    let policy = policy_file("expiry", "warn", &[]);
    // Whole seconds: labels carry the expiry truncated to the second.
    let expires = Timestamp::from_second(Timestamp::now().as_second() + 20).unwrap();
    let grant = unique_name("e2e-rep-exp");
    let _grant = create_grant(&grant, ns, &["quay.io"], Some(&expires.to_string()));
    let controller = start(&cluster, "reports-expiry", &policy).await;
    create_deployment(ns, "exporter", QUAY_IMAGE);
    let report = wait_report(&client, ns, "exporter passes", REACT, |r| {
        has_result(r, "Deployment", "exporter", Outcome::Pass)
    })
    .await;
    assert_eq!(
        result(&report, "Deployment", "exporter")
            .unwrap()
            .properties["allowedBy.1"],
        grant
    );
    // Nothing else is touched: at the expiry the result turns (warn mode: `warn`).
    let left = Duration::try_from(expires.duration_since(Timestamp::now())).unwrap_or_default();
    let report = wait_report(&client, ns, "exporter warns", left + REACT, |r| {
        has_result(r, "Deployment", "exporter", Outcome::Warn)
    })
    .await;
    let late = Timestamp::now().duration_since(expires);
    println!("expiry -> warn {late:?} after the expiry");
    assert!(Timestamp::now() >= expires);
    assert_eq!((report.summary.pass, report.summary.warn), (0, 1));
    assert!(controller.stop().success(), "{}", controller.log_tail());
}

#[tokio::test]
async fn a_restart_writes_nothing_and_a_tampered_report_is_put_back() {
    let client = client().await;
    setup(&client).await;
    let cluster = exclusive().await;
    let ns = TestNamespace::create(&client, "e2e-rep-rv").await;
    let ns = ns.name();
    let policy = policy_file("restart", "enforce", &[]);
    let first = start(&cluster, "reports-a", &policy).await;
    create_deployment(ns, "web", PLATFORM_IMAGE);
    create_deployment(ns, "hub", "nginx:1.27");
    let before = wait_report(&client, ns, "two results", REACT, |r| {
        has_result(r, "Deployment", "web", Outcome::Pass)?;
        has_result(r, "Deployment", "hub", Outcome::Fail)
    })
    .await;
    assert!(first.stop().success(), "{}", first.log_tail());

    // A new controller reconciles every namespace and finds the report right: no write.
    let second = start(&cluster, "reports-b", &policy).await;
    let series = format!("byoc_workloads{{namespace=\"{ns}\",result=\"pass\"}}");
    byoc_e2e::eventually(
        "the restarted controller to judge the namespace",
        REACT,
        || async {
            if second.metric(&series).await == 1.0 {
                Ok(())
            } else {
                Err("not yet".to_owned())
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = reports::report(&client, ns).await.expect("the report");
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "the report was rewritten though nothing changed"
    );

    // A hand edit of the results is undone; so is a deletion.
    kubectl_stdin(
        &[
            "-n",
            ns,
            "patch",
            "policyreport",
            REPORT_NAME,
            "--type=merge",
            "--patch-file=/dev/stdin",
        ],
        &json!({"results": [], "summary": {"pass": 9, "fail": 0}}).to_string(),
    )
    .success();
    wait_report(&client, ns, "results restored", REACT, |r| {
        has_result(r, "Deployment", "hub", Outcome::Fail)?;
        if r.summary.pass == 1 {
            Ok(())
        } else {
            Err(format!("{:?}", r.summary))
        }
    })
    .await;
    kubectl(["-n", ns, "delete", "policyreport", REPORT_NAME]).success();
    wait_report(&client, ns, "report recreated", REACT, |r| {
        has_result(r, "Deployment", "hub", Outcome::Fail)
    })
    .await;
    assert!(second.stop().success(), "{}", second.log_tail());
}

#[tokio::test]
async fn images_reads_the_reports_and_a_live_scan_agrees() {
    let client = client().await;
    setup(&client).await;
    let cluster = exclusive().await;
    let namespace = TestNamespace::create(&client, "e2e-rep-img").await;
    namespace.wait_for_default_service_account(&client).await;
    let ns = namespace.name();
    let policy = policy_file("images", "enforce", &[]);
    let grant = unique_name("e2e-rep-img");
    let _grant = create_grant(&grant, ns, &["quay.io"], None);
    let controller = start(&cluster, "reports-images", &policy).await;
    create_deployment(ns, "exporter", QUAY_IMAGE);
    // No webhook here: a refused image runs too, as it would after a revocation.
    kubectl_run(ns, "hub", "nginx:1.27").success();
    wait_report(&client, ns, "two results", REACT, |r| {
        has_result(r, "Deployment", "exporter", Outcome::Pass)?;
        has_result(r, "Pod", "hub", Outcome::Fail)
    })
    .await;

    let from_reports = kubectl_byoc(["images", "-n", ns, "-o", "json"])
        .exits(0)
        .json();
    assert_eq!(from_reports["kind"], "ByocImages");
    assert_eq!(from_reports["source"], "reports");
    assert_eq!(
        from_reports["images"],
        json!([
            {"image": "nginx:1.27", "registry": "docker.io", "allowedBy": "REFUSED",
             "namespaces": [ns], "workloads": [{"namespace": ns, "kind": "Pod", "name": "hub"}]},
            {"image": QUAY_IMAGE, "registry": "quay.io", "allowedBy": grant,
             "namespaces": [ns], "workloads": [{"namespace": ns, "kind": "Deployment", "name": "exporter"}]},
        ])
    );
    let live = kubectl_byoc([
        "images",
        "-n",
        ns,
        "--live",
        "--config",
        &policy.display().to_string(),
        "-o",
        "json",
    ])
    .exits(0)
    .json();
    assert_eq!(live["source"], "live");
    assert_eq!(live["images"], from_reports["images"]);

    // The table, across namespaces, filtered by registry.
    let table = kubectl_byoc(["images", "-A", "--registry", "quay.io"]).exits(0);
    let (headers, rows) = parse_table(&table.stdout);
    assert_eq!(
        headers,
        ["IMAGE", "REGISTRY", "GRANT", "NAMESPACES", "WORKLOADS"]
    );
    assert!(
        rows.iter()
            .any(|r| r[0] == QUAY_IMAGE && r[2] == grant && r[3] == "1" && r[4] == "1"),
        "{}",
        table.stdout
    );
    assert!(rows.iter().all(|r| r[1] == "quay.io"), "{}", table.stdout);
    let wide = kubectl_byoc(["images", "-n", ns, "-o", "wide"]).exits(0);
    assert!(
        wide.stdout.contains(&format!("{ns}/Deployment/exporter")),
        "{}",
        wide.stdout
    );
    assert!(controller.stop().success(), "{}", controller.log_tail());
}

//! The inventory against the real API server (issue 15, DESIGN §11): the controller, run with
//! `--reports` as its own ServiceAccount, keeps one PolicyReport per non-exempt namespace with
//! workloads, one result per top-level workload or bare pod; results follow grants, expiries
//! and workloads within seconds; nothing is written when nothing changed; a tampered or
//! deleted report is put back.
//!
//! `cargo build -p byoc-controller -p kubectl-byoc && hack/local-cluster.sh exec -- cargo test -p byoc-e2e --test reports`

use std::path::Path;
use std::time::{Duration, Instant};

use byoc_api::report::{ALLOWED_BY_REFUSED, Outcome, PolicyReport, REPORT_NAME, RESULTS_LEFT_OUT};
use byoc_e2e::cli::{CliOutput, kubectl_byoc};
use byoc_e2e::controller::{ControllerProcess, Exclusive, exclusive};
use byoc_e2e::reports::{self, policy_file, result, wait_report};
use byoc_e2e::webhook::{Options, Webhook};
use byoc_e2e::{
    Cleanup, TestNamespace, client, create_grant, edit_tenant, kubectl, kubectl_as, kubectl_run,
    kubectl_stdin, parse_table, unique_name, wait_byoc_labels,
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

/// Installs both CRDs.
async fn setup(client: &Client) {
    byoc_e2e::install_crd(client).await;
    reports::install_crd(client).await;
}

/// What every test starts from: both CRDs installed, sole use of the controller role, a fresh
/// namespace `PREFIX-...` where pods can be created, and a policy file of `mode` that also
/// exempts `exempt`.
struct Fixture {
    client: Client,
    cluster: Exclusive,
    namespace: TestNamespace,
    policy: std::path::PathBuf,
}

impl Fixture {
    async fn new(prefix: &str, mode: &str, exempt: &[&str]) -> Self {
        let client = client().await;
        setup(&client).await;
        let cluster = exclusive().await;
        let namespace = TestNamespace::create(&client, prefix).await;
        namespace.wait_for_default_service_account(&client).await;
        let policy = policy_file(namespace.name(), mode, exempt);
        Self {
            client,
            cluster,
            namespace,
            policy,
        }
    }
}

#[tokio::test]
async fn a_revoked_grant_fails_the_workload_it_let_in_and_a_new_grant_passes_it() {
    let exempt_name = unique_name("e2e-rep-exempt");
    let Fixture {
        client,
        cluster,
        namespace,
        policy,
    } = Fixture::new("e2e-rep", "enforce", &[&exempt_name]).await;
    let ns = namespace.name();
    let empty = TestNamespace::create(&client, "e2e-rep-empty").await;
    kubectl(["create", "namespace", &exempt_name]).success();
    let _exempt = Cleanup::new(["namespace", exempt_name.as_str()]);
    create_deployment(&exempt_name, "hub", "nginx:1.27");

    // Reports someone else put where the controller keeps none: they are deleted.
    for namespace in [empty.name(), exempt_name.as_str()] {
        kubectl_stdin(
            &["create", "-f", "-"],
            &json!({"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
                "metadata": {"name": REPORT_NAME, "namespace": namespace},
                "summary": {"pass": 1},
                "results": [{"policy": "byoc-registry", "result": "pass", "source": "byoc-operator"}]})
            .to_string(),
        )
        .success();
    }
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
    for namespace in [empty.name(), exempt_name.as_str()] {
        byoc_e2e::eventually(&format!("no report in {namespace}"), REACT, || async {
            match reports::report(&client, namespace).await {
                None => Ok(()),
                Some(r) => Err(format!("{:?}", r.results)),
            }
        })
        .await;
    }

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

/// Creates a Deployment with `replicas: 0` (no pod, no pod quota) whose template has `images`.
fn create_idle_deployment(namespace: &str, name: &str, images: impl Iterator<Item = String>) {
    kubectl_stdin(
        &["create", "-f", "-"],
        &idle_deployment(namespace, name, images).to_string(),
    )
    .success();
}

/// A Deployment with `replicas: 0` whose template has `images`.
fn idle_deployment(
    namespace: &str,
    name: &str,
    images: impl Iterator<Item = String>,
) -> serde_json::Value {
    let containers: Vec<_> = images
        .enumerate()
        .map(|(i, image)| json!({ "name": format!("c{i}"), "image": image }))
        .collect();
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name, "namespace": namespace },
        "spec": {
            "replicas": 0,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": containers },
            },
        },
    })
}

#[tokio::test]
async fn a_flood_of_containers_and_refused_images_neither_bloats_the_controller_nor_hides_a_revoke()
{
    // Found by the cold review of issue 21: 1,300-container Deployments of the platform
    // registry took the controller past its memory limit, and a revoke over thousands of long
    // images made a report larger than the API server takes, so it stayed `pass`.
    let Fixture {
        client,
        cluster,
        namespace,
        policy,
    } = Fixture::new("e2e-rep-flood", "enforce", &[]).await;
    let ns = namespace.name();
    let grant = unique_name("e2e-rep-flood");
    let granted = create_grant(&grant, ns, &["quay.io"], None);
    let controller = start(&cluster, "reports-flood", &policy).await;
    wait_byoc_labels(&client, ns, &["byoc.toolforge.org/quay.io"]).await;
    let (_, before) = byoc_e2e::bench::rss_mib(controller.pid());

    let path = "p".repeat(200);
    const FLOODS: usize = 20;
    const WIDE: usize = 30;
    for d in 0..FLOODS {
        let images =
            (0..1_300).map(|c| format!("docker-registry.tools.wmflabs.org/{path}/d{d}c{c}:1"));
        create_idle_deployment(ns, &format!("flood-{d}"), images);
    }
    // 100 distinct granted images each: unbounded, their refusals after the revoke would make
    // a report of about 3 MB.
    for d in 0..WIDE {
        let images = (0..100).map(|c| format!("quay.io/{path}/d{d}c{c}:1"));
        create_idle_deployment(ns, &format!("wide-{d}"), images);
    }
    let counted = |r: &PolicyReport, want: Outcome, prefix: &str, n: usize| {
        let have = r
            .results
            .iter()
            .filter(|x| x.result == want)
            .filter(|x| x.resources.iter().any(|o| o.name.starts_with(prefix)))
            .count();
        if have == n {
            Ok(())
        } else {
            let seen: Vec<_> = r
                .results
                .iter()
                .map(|x| (x.result, x.resources.first().map(|o| o.name.as_str())))
                .collect();
            Err(format!("{have} of {n} {prefix}* {want:?}: {seen:?}"))
        }
    };
    let report = wait_report(
        &client,
        ns,
        "the floods are errors, the wide ones pass",
        byoc_e2e::CONVERGE_TIMEOUT,
        |r| {
            counted(r, Outcome::Error, "flood-", FLOODS)?;
            counted(r, Outcome::Pass, "wide-", WIDE)
        },
    )
    .await;
    let flood = result(&report, "Deployment", "flood-0").expect("flood-0");
    assert!(
        flood.message.contains(&format!(
            "Deployment {ns}/flood-0: 1172 more containers and image volumes not listed, \
                 1172 of them with images not judged (at most 128 distinct images are kept"
        )),
        "{}",
        flood.message
    );
    // `kubectl byoc images` drops nothing (third cold review, F4): the containers past the
    // cap are counted as unjudged, and the wide ones' images past the 20 a result names are
    // listed, from a live scan of the namespace.
    let out = kubectl_byoc(["images", "-n", ns, "-o", "json"]).exits(0);
    let inventory: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let unjudged = inventory["unjudged"].as_array().expect("unjudged");
    assert_eq!(unjudged.len(), FLOODS, "{}", out.stderr);
    assert!(
        unjudged
            .iter()
            .all(|u| u["containers"] == 1172 && u["workload"]["kind"] == "Deployment"),
        "{unjudged:?}"
    );
    let quay = inventory["images"]
        .as_array()
        .expect("images")
        .iter()
        .filter(|e| {
            e["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("quay.io/"))
        })
        .count();
    assert_eq!(quay, WIDE * 100, "every wide image listed");
    assert_eq!(inventory["liveNamespaces"], json!([ns]), "{}", out.stderr);
    let table = kubectl_byoc(["images", "-n", ns]).exits(0);
    assert_eq!(
        table
            .stdout
            .lines()
            .filter(
                |l| l.contains("(1172 containers not judged: over the per-object cap)")
                    && l.contains("UNJUDGED")
            )
            .count(),
        FLOODS,
        "{}",
        table.stdout
    );
    let (_, after) = byoc_e2e::bench::rss_mib(controller.pid());
    assert!(
        after - before < 48.0,
        "the controller's peak RSS grew from {before:.1} to {after:.1} MiB"
    );

    // The revoke turns every wide Deployment `fail`, in a report the API server takes.
    drop(granted);
    let started = Instant::now();
    let report = wait_report(&client, ns, "the wide ones fail", REACT, |r| {
        counted(r, Outcome::Fail, "wide-", WIDE)
    })
    .await;
    let bytes = serde_json::to_vec(&report).expect("serializes").len();
    assert!(bytes < 1 << 20, "a report of {bytes} bytes");
    eprintln!(
        "flood: peak RSS {before:.1} -> {after:.1} MiB; revoke reported after {:?}; report {bytes} bytes",
        started.elapsed()
    );
}

/// The uid of `kind`/`name` in `namespace`, read as `tenant`.
fn uid_of(tenant: &str, namespace: &str, kind: &str, name: &str) -> String {
    let out = kubectl_as(
        tenant,
        &[
            "-n",
            namespace,
            "get",
            kind,
            name,
            "-o",
            "jsonpath={.metadata.uid}",
        ],
        None,
    )
    .success();
    out.stdout.trim().to_owned()
}

/// As `tenant`, makes Deployment `owner` the controller of `kind`/`name` in `namespace`.
fn forge_owner(tenant: &str, namespace: &str, kind: &str, name: &str, owner: &str) {
    let uid = uid_of(tenant, namespace, "deployment", owner);
    let patch = json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1",
        "kind": "Deployment", "name": owner, "uid": uid, "controller": true}]}});
    kubectl_as(
        tenant,
        &[
            "-n",
            namespace,
            "patch",
            kind,
            name,
            "--type=merge",
            "-p",
            &patch.to_string(),
        ],
        None,
    )
    .success();
}

/// The `images -n NS -o json` entry of `image`, if listed.
fn images_entry(namespace: &str, image: &str) -> Option<serde_json::Value> {
    let out = kubectl_byoc(["images", "-n", namespace, "-o", "json"]).exits(0);
    let inventory = out.json();
    inventory["images"]
        .as_array()
        .expect("images")
        .iter()
        .find(|e| e["image"] == image)
        .cloned()
}

/// The workloads `images` lists for `entry`, as `KIND/NAME`.
fn listed_workloads(entry: &serde_json::Value) -> Vec<String> {
    entry["workloads"]
        .as_array()
        .expect("workloads")
        .iter()
        .map(|w| {
            format!(
                "{}/{}",
                w["kind"].as_str().unwrap_or_default(),
                w["name"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test]
async fn a_tenant_cannot_hide_a_refused_pod_behind_forged_owner_references() {
    // Found by the second cold review: with `edit` only, a pod whose controller is a → b → c
    // (forged ownerReferences), or a → b → c → a, was filed under no result: the report said
    // all pass and `kubectl byoc images` left it out.
    let Fixture {
        client,
        cluster,
        namespace,
        policy,
    } = Fixture::new("e2e-rep-own", "enforce", &[]).await;
    let ns = namespace.name();
    let (tenant, _binding) = edit_tenant(ns).await;
    let controller = start(&cluster, "reports-owners", &policy).await;
    let owners = ["a", "b", "c", "x", "y", "z"];
    let list = json!({"apiVersion": "v1", "kind": "List", "items": owners
        .iter()
        .map(|name| idle_deployment(ns, name, std::iter::once(PLATFORM_IMAGE.to_owned())))
        .collect::<Vec<_>>()});
    kubectl_as(&tenant, &["create", "-f", "-"], Some(&list.to_string())).success();
    // A chain a → b → c and a cycle x → y → z → x.
    for (name, owner) in [("a", "b"), ("b", "c"), ("x", "y"), ("y", "z"), ("z", "x")] {
        forge_owner(&tenant, ns, "deployment", name, owner);
    }
    // No webhook here: a refused image runs, as it would after a revocation.
    for (pod, owner) in [("hidden-chain", "a"), ("hidden-cycle", "x")] {
        kubectl_as(
            &tenant,
            &[
                "-n",
                ns,
                "run",
                pod,
                "--image=nginx:1.27",
                "--restart=Never",
            ],
            None,
        )
        .success();
        forge_owner(&tenant, ns, "pod", pod, owner);
    }
    let report = wait_report(&client, ns, "both pods fail", REACT, |r| {
        has_result(r, "Pod", "hidden-chain", Outcome::Fail)?;
        has_result(r, "Pod", "hidden-cycle", Outcome::Fail)?;
        for name in owners {
            has_result(r, "Deployment", name, Outcome::Pass)?;
        }
        Ok(())
    })
    .await;
    assert_eq!(
        (report.summary.pass, report.summary.fail),
        (6, 2),
        "{report:?}"
    );
    let entry = images_entry(ns, "nginx:1.27").expect("images lists nginx");
    assert_eq!(entry["allowedBy"], ALLOWED_BY_REFUSED);
    assert_eq!(
        listed_workloads(&entry),
        ["Pod/hidden-chain", "Pod/hidden-cycle"]
    );
    assert!(controller.stop().success(), "{}", controller.log_tail());
}

#[tokio::test]
async fn a_report_too_large_to_hold_every_result_still_names_the_refused_pod() {
    // Found by the second cold review: ~115 idle Deployments of long platform images made the
    // report larger than 1 MiB; it was written summary-only, nothing named the refused
    // workload, and `kubectl byoc images` listed nothing for the namespace.
    let Fixture {
        client,
        cluster,
        namespace,
        policy,
    } = Fixture::new("e2e-rep-big", "enforce", &[]).await;
    let ns = namespace.name();
    let (tenant, _binding) = edit_tenant(ns).await;
    let controller = start(&cluster, "reports-big", &policy).await;
    // 20 images of 405 bytes each: about 9 KB per result.
    let images: Vec<String> = (0..20)
        .map(|i| {
            format!(
                "docker-registry.tools.wmflabs.org/{}/i{i:02}:{}",
                "p".repeat(246),
                "t".repeat(120)
            )
        })
        .collect();
    const IDLE: usize = 130;
    let list = json!({"apiVersion": "v1", "kind": "List", "items": (0..IDLE)
        .map(|d| idle_deployment(ns, &format!("idle-{d:03}"), images.iter().cloned()))
        .collect::<Vec<_>>()});
    kubectl_as(&tenant, &["create", "-f", "-"], Some(&list.to_string())).success();
    kubectl_as(
        &tenant,
        &[
            "-n",
            ns,
            "run",
            "refused",
            "--image=nginx:1.27",
            "--restart=Never",
        ],
        None,
    )
    .success();
    let report = wait_report(
        &client,
        ns,
        "the refused pod is named",
        byoc_e2e::CONVERGE_TIMEOUT,
        |r| {
            if r.summary.pass as usize != IDLE {
                return Err(format!("{:?}", r.summary));
            }
            has_result(r, "Pod", "refused", Outcome::Fail)
        },
    )
    .await;
    let bytes = serde_json::to_vec(&report).expect("serializes").len();
    let left_out: usize = report
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RESULTS_LEFT_OUT))
        .expect("the count of results left out")
        .parse()
        .expect("a number");
    assert_eq!(report.results.len() + left_out, IDLE + 1);
    assert!(bytes < (1 << 20) + 4096, "a report of {bytes} bytes");
    // `images` scans the namespace live: the refused pod, and every idle Deployment.
    let out = kubectl_byoc(["images", "-n", ns, "-o", "json"]).exits(0);
    let inventory = out.json();
    assert_eq!(inventory["liveNamespaces"], json!([ns]), "{out}");
    assert!(
        out.stderr.contains(&format!(
            "namespace {ns}: its PolicyReport left out {left_out} results to fit; scanned live"
        )),
        "{out}"
    );
    let entry = images_entry(ns, "nginx:1.27").expect("images lists nginx");
    assert_eq!(listed_workloads(&entry), ["Pod/refused"]);
    let platform = images_entry(ns, &images[0]).expect("images lists the idle ones");
    assert_eq!(listed_workloads(&platform).len(), IDLE);
    eprintln!(
        "big report: {} results kept, {left_out} left out, {bytes} bytes",
        report.results.len()
    );
    assert!(controller.stop().success(), "{}", controller.log_tail());
}

#[tokio::test]
async fn a_pod_with_more_containers_than_the_inventory_keeps_still_fails_on_its_refused_image() {
    // Found by the second cold review: a pod with more than 128 containers became an `error`
    // result naming no image, which hid its refused one.
    let Fixture {
        client,
        cluster,
        namespace,
        policy,
    } = Fixture::new("e2e-rep-wide", "enforce", &[]).await;
    let ns = namespace.name();
    let (tenant, _binding) = edit_tenant(ns).await;
    let controller = start(&cluster, "reports-wide", &policy).await;
    let containers: Vec<_> = (0..200)
        .map(|i| json!({"name": format!("c{i}"), "image": PLATFORM_IMAGE}))
        .collect();
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "wide", "namespace": ns},
        "spec": {"containers": containers,
                 "initContainers": [{"name": "last", "image": "nginx:1.27"}]}});
    kubectl_as(&tenant, &["create", "-f", "-"], Some(&pod.to_string())).success();
    let report = wait_report(&client, ns, "the wide pod fails", REACT, |r| {
        has_result(r, "Pod", "wide", Outcome::Fail)
    })
    .await;
    let wide = result(&report, "Pod", "wide").unwrap();
    assert!(
        wide.message.starts_with(&format!(
            "Pod {ns}/wide: initContainer \"last\" image \"nginx:1.27\" resolves to registry docker.io"
        )),
        "{}",
        wide.message
    );
    assert!(
        wide.message.ends_with(&format!(
            "Pod {ns}/wide: 73 more containers and image volumes not listed, with images among \
             those judged (at most 128 are kept per pod spec)"
        )),
        "{}",
        wide.message
    );
    let entry = images_entry(ns, "nginx:1.27").expect("images lists nginx");
    assert_eq!(entry["allowedBy"], ALLOWED_BY_REFUSED);
    assert_eq!(listed_workloads(&entry), ["Pod/wide"]);
    assert!(controller.stop().success(), "{}", controller.log_tail());
}

#[tokio::test]
async fn an_expiring_grant_fails_its_workloads_without_any_other_change() {
    let Fixture {
        client,
        cluster,
        namespace,
        policy,
    } = Fixture::new("e2e-rep-exp", "warn", &[]).await;
    let ns = namespace.name();
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
    let Fixture {
        client,
        cluster,
        namespace,
        policy,
    } = Fixture::new("e2e-rep-rv", "enforce", &[]).await;
    let ns = namespace.name();
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
    let Fixture {
        client,
        cluster,
        namespace,
        policy,
    } = Fixture::new("e2e-rep-img", "enforce", &[]).await;
    let ns = namespace.name();
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

// ---------------------------------------------------------------------------------------------
// Scale benchmark (docs/benchmarks.md), by hand:
//
//   cargo build --release -p byoc-controller
//   BYOC_CONTROLLER_BIN=$PWD/target/release/byoc-controller BYOC_BENCH_NAMESPACES=3000 \
//     hack/local-cluster.sh exec -- cargo test --release -p byoc-e2e --test reports -- \
//     --ignored --nocapture reports_scale_benchmark

/// The label value of the benchmark's namespaces and grants.
const BENCH: &str = "bench-reports";

/// Creates namespace `bench-r-i` with its default ServiceAccount, a `quay.io` grant, and three
/// workloads: a Deployment (no replicas) and a bare Pod from quay.io, a suspended CronJob from
/// the platform registry. 32 namespaces in flight.
async fn create_bench_namespaces(client: &Client, n: usize) {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::batch::v1::CronJob;
    use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
    use kube::api::PostParams;
    use std::sync::Arc;
    let permits = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (client, permits) = (client.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire().await.expect("semaphore");
            let name = format!("bench-r-{i:04}");
            let pp = PostParams::default();
            let labels = json!({ byoc_e2e::TEST_LABEL: BENCH });
            // kube-controller-manager may create the ServiceAccount first: that is fine.
            let create = |api: kube::Api<kube::core::DynamicObject>, value: serde_json::Value| {
                let pp = pp.clone();
                async move {
                    let object: kube::core::DynamicObject =
                        serde_json::from_value(value).expect("an object");
                    match api.create(&pp, &object).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(s)) if s.code == 409 && s.details.as_ref().is_some_and(|d| d.kind == "serviceaccounts") => {}
                        Err(e) => panic!("create {:?}: {e}", object.metadata.name),
                    }
                }
            };
            let api = |ar: kube::core::ApiResource, ns: Option<&str>| match ns {
                Some(ns) => kube::Api::namespaced_with(client.clone(), ns, &ar),
                None => kube::Api::all_with(client.clone(), &ar),
            };
            use kube::core::ApiResource as R;
            create(
                api(R::erase::<Namespace>(&()), None),
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}),
            )
            .await;
            create(
                api(R::erase::<ServiceAccount>(&()), Some(&name)),
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}),
            )
            .await;
            create(
                api(R::erase::<byoc_api::ByocGrant>(&()), None),
                json!({"apiVersion": "byoc.toolforge.org/v1alpha1", "kind": "ByocGrant",
                    "metadata": {"name": name, "labels": labels},
                    "spec": {"namespace": name, "reason": "benchmark", "registries": ["quay.io"]}}),
            )
            .await;
            let template = |image: &str| json!({"metadata": {"labels": {"app": "x"}},
                "spec": {"containers": [{"name": "app", "image": image}]}});
            create(
                api(R::erase::<Deployment>(&()), Some(&name)),
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                    "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "x"}},
                        "template": template(QUAY_IMAGE)}}),
            )
            .await;
            create(
                api(R::erase::<CronJob>(&()), Some(&name)),
                json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
                    "spec": {"schedule": "0 3 * * *", "suspend": true, "jobTemplate": {"spec": {
                        "template": {"spec": {"restartPolicy": "Never",
                            "containers": [{"name": "job", "image": PLATFORM_IMAGE}]}}}}}}),
            )
            .await;
            create(
                api(R::erase::<Pod>(&()), Some(&name)),
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "shell"},
                    "spec": {"containers": [{"name": "shell", "image": QUAY_IMAGE}]}}),
            )
            .await;
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("create task");
    }
}

/// Polls the controller's `series` (every 50 ms) until it reaches `n`; the time since `since`.
async fn wait_metric(
    controller: &ControllerProcess,
    series: &str,
    n: usize,
    since: Instant,
) -> Duration {
    let deadline = since + Duration::from_secs(900);
    loop {
        let value = controller.metric(series).await;
        if value >= n as f64 {
            return since.elapsed();
        }
        controller.assert_running();
        assert!(Instant::now() < deadline, "{series} is only {value} of {n}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
#[ignore = "scale benchmark: minutes of work; run on its own cluster (see docs/benchmarks.md)"]
async fn reports_scale_benchmark() {
    use byoc_e2e::bench::{cpu_secs, load_average, percentile, rss_mib};
    use kube::Api;
    use kube::runtime::wait::await_condition;
    let client = client().await;
    setup(&client).await;
    let cluster = exclusive().await;
    let n: usize = std::env::var("BYOC_BENCH_NAMESPACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let policy = policy_file("bench", "enforce", &[]);
    println!(
        "reports scale benchmark: {n} namespaces x 3 workloads, load {}, binary {}",
        load_average(),
        byoc_e2e::controller::binary().display()
    );
    let t = Instant::now();
    create_bench_namespaces(&client, n).await;
    println!(
        "created {n} namespaces, grants and 3n workloads in {:.2?}",
        t.elapsed()
    );

    // Reports off: the grants become labels; then the controller's memory at rest.
    let off = cluster.spawn("bench-off", &[&format!("--config={}", policy.display())]);
    off.wait_leader().await;
    let labelled = wait_metric(&off, r#"byoc_controller_grants{state="Applied"}"#, n, t).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss_off, hwm_off) = rss_mib(off.pid());
    println!(
        "reports off: {n} grants Applied {labelled:.2?} after the first create; RSS {rss_off:.1} MiB (peak {hwm_off:.1}), CPU {:.1}s, load {}",
        cpu_secs(off.pid()),
        load_average()
    );
    assert!(off.stop().success(), "{}", off.log_tail());

    // Reports on, on the same cluster: start -> every report written.
    let started = Instant::now();
    let config = format!("--config={}", policy.display());
    let on = cluster.spawn("bench-on", &["--reports", &config]);
    // Its admin port answers from the start; the time still counts from the spawn.
    on.wait_ready().await;
    let written = wait_metric(
        &on,
        r#"byoc_controller_report_writes_total{kind="apply"}"#,
        n,
        started,
    )
    .await;
    let (rss_on, hwm_on) = rss_mib(on.pid());
    println!(
        "reports on: start -> {n} reports written {written:.2?}; RSS {rss_on:.1} MiB (peak {hwm_on:.1}), CPU {:.1}s, load {}",
        cpu_secs(on.pid()),
        load_average()
    );
    let reports = Api::<PolicyReport>::all(client.clone())
        .list(&Default::default())
        .await
        .expect("list reports");
    let complete = reports
        .items
        .iter()
        .filter(|r| {
            r.metadata
                .namespace
                .as_deref()
                .is_some_and(|ns| ns.starts_with("bench-r-"))
        })
        .filter(|r| r.summary.pass == 3 && r.results.len() == 3)
        .count();
    assert_eq!(complete, n, "reports with three passing results");

    // One grant revoked -> its namespace's report, watched.
    let revokes: usize = std::env::var("BYOC_BENCH_REVOKES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .min(n);
    let grants = Api::<byoc_api::ByocGrant>::all(client.clone());
    let mut latencies = Vec::with_capacity(revokes);
    for i in 0..revokes {
        let name = format!("bench-r-{i:04}");
        let api = Api::<PolicyReport>::namespaced(client.clone(), &name);
        let seen = tokio::spawn(async move {
            await_condition(api, REPORT_NAME, |r: Option<&PolicyReport>| {
                r.is_some_and(|r| r.summary.fail == 2)
            })
            .await
            .expect("watch the report");
            Instant::now()
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        let sent = Instant::now();
        grants
            .delete(&name, &Default::default())
            .await
            .expect("delete grant");
        let at = tokio::time::timeout(Duration::from_secs(60), seen)
            .await
            .expect("the report to fail")
            .expect("watch task");
        latencies.push(at.duration_since(sent));
    }
    latencies.sort();
    let (rss, hwm) = rss_mib(on.pid());
    println!(
        "revoke -> report over {revokes} revokes: p50 {:.1?}, p90 {:.1?}, p99 {:.1?}, max {:.1?} (RSS {rss:.1} MiB, peak {hwm:.1}), load {}",
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        latencies[latencies.len() - 1],
        load_average()
    );
    assert!(on.stop().success(), "{}", on.log_tail());
    kubectl([
        "delete",
        "byocgrants",
        "-l",
        &format!("{}={BENCH}", byoc_e2e::TEST_LABEL),
        "--wait=false",
    ])
    .success();
    kubectl([
        "delete",
        "namespaces",
        "-l",
        &format!("{}={BENCH}", byoc_e2e::TEST_LABEL),
        "--wait=false",
    ])
    .success();
}

//! Faults on the real control plane while the controller and the webhook run (issue 8): the
//! API server and etcd restarted, the controller killed in the middle of 500 reconciles, the
//! webhook killed under load, the serving certificate rotated under load. Each test asserts
//! that nothing is lost, that the system converges, and that no request is admitted that the
//! policy refuses — during the fault and after it.
//!
//! ```text
//! hack/local-cluster.sh exec -- cargo test -p byoc-e2e --test faults
//! ```
//!
//! The tests break the shared cluster on purpose, so they run one at a time
//! ([`chaos::exclusive`]); each is bounded (its waits have deadlines).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use byoc_api::ByocGrant;
use byoc_api::labels::owned_labels;
use byoc_e2e::chaos::{
    self, Outcome, PLATFORM_IMAGE, PROPAGATION, WebhookOptions, WebhookProcess, admission_response,
    pod_review, restart_component, try_pod, wait_outcome,
};
use byoc_e2e::controller::{self, ControllerProcess, SYSTEM_NAMESPACE};
use byoc_e2e::webhook::NAMESPACES_WEBHOOK;
use byoc_e2e::{
    CONVERGE_TIMEOUT, Cleanup, TEST_LABEL, TestNamespace, client, create_grant, eventually,
    grant_manifest, kubectl, kubectl_run, kubectl_stdin, unique_name, wait_byoc_labels,
};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::task::JoinHandle;

const QUAY_IMAGE: &str = "quay.io/prometheus/node-exporter:v1.8.0";

// ---------------------------------------------------------------------------------------------
// Helpers

/// A tool namespace where pods can be created.
async fn tool_namespace(client: &Client, prefix: &str) -> TestNamespace {
    let ns = TestNamespace::create(client, prefix).await;
    ns.wait_for_default_service_account(client).await;
    ns
}

/// The number of namespaces the API server lists.
async fn namespace_count(client: &Client) -> usize {
    Api::<Namespace>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
}

/// Waits until the webhook caches exactly the namespaces the API server lists.
async fn wait_cache_complete(client: &Client, webhook: &WebhookProcess) {
    eventually(
        "the webhook's cache to hold every namespace",
        PROPAGATION,
        || async {
            let listed = namespace_count(client).await;
            // The gauge counts namespaces still terminating too, as the API server lists them.
            let cached = webhook.metric("byoc_webhook_cached_namespaces");
            if cached == listed as f64 {
                Ok(())
            } else {
                Err(format!("cached {cached}, listed {listed}"))
            }
        },
    )
    .await;
}

async fn start_controller(access: &controller::Exclusive, prefix: &str) -> ControllerProcess {
    let process = access.spawn(&unique_name(prefix), &["--lease-duration=4"]);
    process.wait_leader().await;
    process
}

/// The scenario both restart tests share: a grant applied before `fault`, a grant applied after
/// it (the watches resumed), the first one revoked after it (no stale allow).
async fn grants_survive(component: &str) {
    let _exclusive = chaos::exclusive().await;
    let access = controller::exclusive().await;
    let client = client().await;
    let controller = start_controller(&access, "fault-ctl").await;
    let mut webhook = WebhookProcess::start(WebhookOptions::default());
    webhook.register().await;

    let before = tool_namespace(&client, "fault-before").await;
    let before_grant = unique_name("fault-before");
    let _g1 = create_grant(&before_grant, before.name(), &["quay.io"], None);
    wait_byoc_labels(&client, before.name(), &["byoc.toolforge.org/quay.io"]).await;
    wait_outcome(&client, before.name(), QUAY_IMAGE, Outcome::Admitted).await;

    let started = Instant::now();
    restart_component(component, true);
    eprintln!("{component} killed and back after {:?}", started.elapsed());
    // The clients need their new connections and watches; both processes stay up throughout.
    let client = chaos_client().await;
    controller.assert_running();

    // A namespace and grant created after the restart: the controller's watches resumed (it
    // labels the namespace) and so did the webhook's (it admits by that label).
    let after = tool_namespace(&client, "fault-after").await;
    let after_grant = unique_name("fault-after");
    let _g2 = create_grant(&after_grant, after.name(), &["quay.io"], None);
    wait_byoc_labels(&client, after.name(), &["byoc.toolforge.org/quay.io"]).await;
    let took = wait_outcome(&client, after.name(), QUAY_IMAGE, Outcome::Admitted).await;
    eprintln!("a grant made after the restart admitted {took:?} after its label appeared");
    wait_cache_complete(&client, &webhook).await;

    // Revoking the first grant after the restart: the label goes, and the webhook refuses.
    kubectl(["delete", "byocgrant", &before_grant, "--wait=false"]).success();
    wait_byoc_labels(&client, before.name(), &[]).await;
    let took = wait_outcome(&client, before.name(), QUAY_IMAGE, Outcome::Denied).await;
    eprintln!("revocation refused {took:?} after the label went");
    for _ in 0..20 {
        assert_eq!(
            try_pod(&client, before.name(), QUAY_IMAGE).await,
            Outcome::Denied,
            "a revoked grant was honoured again"
        );
    }
    // The other grant is untouched.
    assert_eq!(
        try_pod(&client, after.name(), QUAY_IMAGE).await,
        Outcome::Admitted
    );
    controller.assert_running();
    kubectl([
        "delete",
        "byocgrant",
        &after_grant,
        "--wait=true",
        "--timeout=60s",
    ])
    .success();
    drop(webhook);
}

/// A fresh admin client, after the API server was restarted (the old one would work too, after
/// its connections fail once; a new one keeps the test's own requests out of that).
async fn chaos_client() -> Client {
    let client = client().await;
    eventually("the API server to answer", CONVERGE_TIMEOUT, || async {
        client
            .apiserver_version()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    client
}

// ---------------------------------------------------------------------------------------------
// Restarts of the control plane

#[tokio::test]
async fn kube_apiserver_killed_and_restarted_watches_resume_and_revocation_is_honoured() {
    grants_survive("kube-apiserver").await;
}

#[tokio::test]
async fn etcd_killed_and_restarted_watches_resume_and_revocation_is_honoured() {
    grants_survive("etcd").await;
}

// ---------------------------------------------------------------------------------------------
// The controller killed mid-way

#[tokio::test]
async fn controller_killed_during_500_reconciles_converges_with_no_label_lost() {
    const NAMESPACES: usize = 100;
    const GRANTS: usize = 500;
    let _exclusive = chaos::exclusive().await;
    let access = controller::exclusive().await;
    let client = client().await;
    let run = unique_name("bulk");

    // 100 namespaces, 5 grants each, each grant with its own registry.
    let namespaces: Vec<String> = (0..NAMESPACES).map(|i| format!("{run}-{i}")).collect();
    let items: Vec<_> = namespaces
        .iter()
        .map(|n| {
            json!({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": n, "labels": {TEST_LABEL: "true", "run": run}}})
        })
        .collect();
    kubectl_stdin(
        &["create", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string(),
    )
    .success();
    let _namespaces = Cleanup::new(["namespace", "-l", &format!("run={run}")]);
    let expected: BTreeMap<&str, BTreeSet<String>> = namespaces
        .iter()
        .enumerate()
        .map(|(n, name)| {
            let keys = (0..GRANTS)
                .filter(|g| g % NAMESPACES == n)
                .map(|g| format!("byoc.toolforge.org/r{g}.example.org"))
                .collect();
            (name.as_str(), keys)
        })
        .collect();
    let grants: Vec<_> = (0..GRANTS)
        .map(|g| {
            let mut m: serde_json::Value = serde_json::from_str(&grant_manifest(
                &format!("{run}-{g}"),
                json!({"namespace": namespaces[g % NAMESPACES], "reason": "fault test",
                       "registries": [format!("r{g}.example.org")]}),
            ))
            .expect("JSON");
            m["metadata"]["labels"]["run"] = json!(run);
            m
        })
        .collect();
    kubectl_stdin(
        &["create", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "List", "items": grants}).to_string(),
    )
    .success();
    let grants_api: Api<ByocGrant> = Api::all(client.clone());
    let selector = ListParams::default().labels(&format!("run={run}"));
    let ready = || async {
        grants_api
            .list(&selector)
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter(|g| {
                        g.ready_condition().is_some_and(|c| {
                            c.status == "True"
                                && g.status.as_ref().and_then(|s| s.observed_generation)
                                    == g.metadata.generation
                        })
                    })
                    .count()
            })
            .unwrap_or(0)
    };

    // The first controller works through the backlog and is killed (SIGKILL: no graceful
    // anything) when between 10% and 90% of it is done.
    let first = start_controller(&access, "bulk-first").await;
    let started = Instant::now();
    let killed_at = loop {
        let n = ready().await;
        if n >= GRANTS / 10 {
            std::process::Command::new("kill")
                .args(["-KILL", &first.pid().to_string()])
                .status()
                .expect("kill");
            break n;
        }
        assert!(
            started.elapsed() < CONVERGE_TIMEOUT,
            "the first controller made only {n} grants Ready in {CONVERGE_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let status = first.stop();
    assert!(
        !status.success(),
        "the first controller was not killed: {status}"
    );
    assert!(
        killed_at < GRANTS * 9 / 10,
        "the first controller finished too fast ({killed_at} of {GRANTS} Ready at the kill) for \
         the kill to land mid-way"
    );
    eprintln!(
        "killed the first controller after {:?} with {killed_at}/{GRANTS} grants Ready",
        started.elapsed()
    );

    // A second controller takes the lease over once it expires, and finishes the job.
    let second = access.spawn(&unique_name("bulk-second"), &["--lease-duration=4"]);
    second.wait_leader().await;
    let took = Instant::now();
    eventually("all 500 grants Ready", Duration::from_secs(120), || async {
        second.assert_running();
        match ready().await {
            n if n == GRANTS => Ok(()),
            n => Err(format!("{n} of {GRANTS} Ready")),
        }
    })
    .await;
    eprintln!("the second controller converged in {:?}", took.elapsed());

    // Every namespace carries exactly its grants' labels: none lost, none extra.
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let listed = ns_api
        .list(&ListParams::default().labels(&format!("run={run}")))
        .await
        .expect("list namespaces");
    assert_eq!(listed.items.len(), NAMESPACES);
    for ns in &listed.items {
        let got: BTreeSet<String> = owned_labels(ns.labels())
            .into_keys()
            .map(str::to_owned)
            .collect();
        assert_eq!(
            &got,
            &expected[ns.name_any().as_str()],
            "labels of {}",
            ns.name_any()
        );
    }

    // Clean up while a controller runs (its finalizer), then let the namespaces go.
    grants_api
        .delete_collection(&DeleteParams::default(), &selector)
        .await
        .expect("delete the grants");
    eventually(
        "the grants to be gone",
        Duration::from_secs(120),
        || async {
            match grants_api.list_metadata(&selector).await {
                Ok(l) if l.items.is_empty() => Ok(()),
                Ok(l) => Err(format!("{} left", l.items.len())),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
    drop(second);
}

// ---------------------------------------------------------------------------------------------
// The webhook killed under load

/// Where the load goes and what it expects while the webhook runs.
const TARGETS: [(&str, &str); 4] = [
    ("tool", PLATFORM_IMAGE),
    ("tool", "nginx:1.27"),
    ("kube-system", "nginx:1.27"),
    (SYSTEM_NAMESPACE, "nginx:1.27"),
];

struct Sample {
    target: usize,
    sent: Instant,
    done: Instant,
    outcome: Outcome,
}

/// Sends pod creates to every target in a loop until `stop`, from one task per target.
fn load(client: &Client, tool: &str, stop: &Arc<AtomicBool>) -> Vec<JoinHandle<Vec<Sample>>> {
    (0..TARGETS.len())
        .map(|target| {
            let (client, stop) = (client.clone(), stop.clone());
            let (ns, image) = TARGETS[target];
            let ns = if ns == "tool" {
                tool.to_owned()
            } else {
                ns.to_owned()
            };
            tokio::spawn(async move {
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let outcome = try_pod(&client, &ns, image).await;
                    samples.push(Sample {
                        target,
                        sent,
                        done: Instant::now(),
                        outcome,
                    });
                }
                samples
            })
        })
        .collect()
}

async fn ensure_exempt_namespaces_ready(client: &Client) {
    controller::setup().await;
    for ns in ["kube-system", SYSTEM_NAMESPACE] {
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
        eventually(
            &format!("the default ServiceAccount of {ns}"),
            CONVERGE_TIMEOUT,
            || async {
                match api.get_opt("default").await {
                    Ok(Some(_)) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_killed_under_load_fails_closed_for_tools_and_open_for_the_system() {
    let _exclusive = chaos::exclusive().await;
    let client = client().await;
    ensure_exempt_namespaces_ready(&client).await;
    let tool = tool_namespace(&client, "fault-tool").await;
    let mut webhook = WebhookProcess::start(WebhookOptions::default());
    webhook.register().await;

    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&client, tool.name(), &stop);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let killed = Instant::now();
    webhook.kill();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let restarting = Instant::now();
    webhook.restart();
    // Recovery: the platform pod is admitted again, and Docker Hub refused.
    let recovered = wait_outcome(&client, tool.name(), PLATFORM_IMAGE, Outcome::Admitted).await;
    let recovered_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await.expect("a load task"));
    }

    let mut counts: BTreeMap<(usize, &str), usize> = BTreeMap::new();
    for s in &samples {
        // A request in flight across a change of state may see either state.
        let phase = if s.done < killed {
            "up"
        } else if s.sent > killed && s.done < restarting {
            "down"
        } else if s.sent > recovered_at {
            "back"
        } else {
            "changing"
        };
        *counts.entry((s.target, phase)).or_default() += 1;
        let (ns, image) = TARGETS[s.target];
        match (ns, image, phase, &s.outcome) {
            // The system namespaces never depend on the webhook.
            ("kube-system" | SYSTEM_NAMESPACE, ..) => {
                assert_eq!(s.outcome, Outcome::Admitted, "{ns} in phase {phase}")
            }
            // A tool's Docker Hub pod is never admitted, whatever the webhook's state.
            ("tool", "nginx:1.27", "up" | "back", o) => {
                assert_eq!(*o, Outcome::Denied, "a Docker Hub pod in phase {phase}")
            }
            ("tool", "nginx:1.27", _, o) => assert!(
                matches!(o, Outcome::Denied | Outcome::WebhookUnreachable),
                "a Docker Hub pod in a tool namespace in phase {phase}: {o:?}"
            ),
            // While the webhook is dead, nothing is admitted in a tool namespace (fail closed).
            ("tool", _, "down", o) => assert_eq!(
                *o,
                Outcome::WebhookUnreachable,
                "a platform pod while the webhook was dead"
            ),
            ("tool", _, "up" | "back", o) => {
                assert_eq!(*o, Outcome::Admitted, "a platform pod in phase {phase}")
            }
            ("tool", _, _, o) => assert!(
                matches!(o, Outcome::Admitted | Outcome::WebhookUnreachable),
                "a platform pod in phase {phase}: {o:?}"
            ),
            _ => unreachable!(),
        }
    }
    for (target, what) in TARGETS.iter().enumerate() {
        for phase in ["up", "down", "back"] {
            assert!(
                counts.get(&(target, phase)).copied().unwrap_or(0) > 0,
                "no request to {what:?} in phase {phase}: {counts:?}"
            );
        }
    }
    eprintln!(
        "{} requests; recovered {recovered:?} after the webhook was ready again; per \
         (target, phase): {counts:?}",
        samples.len()
    );
    assert_eq!(
        try_pod(&client, tool.name(), "nginx:1.27").await,
        Outcome::Denied
    );
}

#[tokio::test]
async fn a_labelled_namespace_is_deleted_while_the_webhook_is_down() {
    let _exclusive = chaos::exclusive().await;
    let access = controller::exclusive().await;
    let client = client().await;
    let _controller = start_controller(&access, "fault-ctl").await;
    let mut webhook = WebhookProcess::start(WebhookOptions::default());
    webhook.register().await;
    let tool = tool_namespace(&client, "fault-del").await;
    let grant = unique_name("fault-del");
    let _grant = create_grant(&grant, tool.name(), &["quay.io"], None);
    wait_byoc_labels(&client, tool.name(), &["byoc.toolforge.org/quay.io"]).await;
    // Something for the namespace controller to delete.
    kubectl_run(tool.name(), "app", PLATFORM_IMAGE).success();

    webhook.kill();
    // The guard fails closed: a byoc label cannot be set without the webhook ...
    kubectl([
        "label",
        "namespace",
        tool.name(),
        "byoc.toolforge.org/any=never",
    ])
    .fails_with(&["failed calling webhook", NAMESPACES_WEBHOOK]);
    // ... but the namespace lifecycle does not wait for it (the guard's match condition sends
    // only byoc label changes): a namespace is created, and the labelled one is deleted, the
    // namespace controller's status and finalize writes included.
    let _plain = TestNamespace::create(&client, "fault-plain").await;
    let started = Instant::now();
    kubectl(["delete", "namespace", tool.name(), "--timeout=120s"]).success();
    let gone = Api::<Namespace>::all(client.clone())
        .get_opt(tool.name())
        .await
        .expect("get the namespace");
    assert!(gone.is_none(), "{} still exists: {gone:?}", tool.name());
    eprintln!(
        "namespace {} deleted in {:?} with the webhook down",
        tool.name(),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Certificate rotation under load

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotated_under_load_fails_no_request() {
    const ROTATIONS: usize = 4;
    let _exclusive = chaos::exclusive().await;
    let client = client().await;
    let tool = tool_namespace(&client, "fault-cert").await;
    let mut webhook = WebhookProcess::start(WebhookOptions::default());
    webhook.register().await;
    let direct = webhook.client();

    let stop = Arc::new(AtomicBool::new(false));
    // Through the API server: its connections to the webhook, old and new.
    let api_tasks: Vec<_> = [
        (PLATFORM_IMAGE, Outcome::Admitted),
        ("nginx", Outcome::Denied),
    ]
    .into_iter()
    .map(|(image, want)| {
        let (client, stop, ns) = (client.clone(), stop.clone(), tool.name().to_owned());
        tokio::spawn(async move {
            let (mut n, mut failures) = (0usize, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let got = try_pod(&client, &ns, image).await;
                if got != want {
                    failures.push(format!("{image}: {got:?}"));
                }
                n += 1;
            }
            (n, failures)
        })
    })
    .collect();
    // Straight to the webhook, one new TLS connection per request: every handshake meets
    // whichever certificate is current.
    let direct_task = {
        let (direct, stop) = (direct.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut n, mut failures) = (0usize, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let uid = format!("rot-{n}");
                let body = pod_review(&uid, "tool-rot", &["nginx"]).to_string();
                let outcome = async {
                    let mut conn = direct.connect().await?;
                    conn.post(body.as_bytes()).await
                }
                .await;
                match outcome {
                    Ok(r) if r.status == 200 => {
                        let review = r.json();
                        let resp = admission_response(&review);
                        if resp["uid"] != uid.as_str() || resp["allowed"] != false {
                            failures.push(format!("wrong answer {review}"));
                        }
                    }
                    Ok(r) => failures.push(format!("status {}", r.status)),
                    Err(e) => failures.push(format!("request failed: {e}")),
                }
                n += 1;
            }
            (n, failures)
        })
    };

    tokio::time::sleep(Duration::from_secs(2)).await;
    for rotation in 1..=ROTATIONS {
        let new = webhook.rotate_certificate();
        let took = Instant::now();
        eventually(
            &format!("rotation {rotation} to be served"),
            Duration::from_secs(10),
            || async {
                let conn = direct.connect().await.map_err(|e| e.to_string())?;
                if conn.peer_certificate() == new {
                    Ok(())
                } else {
                    Err("the old certificate".to_owned())
                }
            },
        )
        .await;
        eprintln!("rotation {rotation} served after {:?}", took.elapsed());
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    stop.store(true, Ordering::Relaxed);

    let mut total = 0;
    let mut failures = Vec::new();
    for task in api_tasks {
        let (n, f) = task.await.expect("an API load task");
        total += n;
        failures.extend(f);
    }
    let (n, f) = direct_task.await.expect("the direct load task");
    eprintln!(
        "{total} requests through the API server and {n} direct TLS connections across \
         {ROTATIONS} rotations"
    );
    failures.extend(f);
    assert!(
        failures.is_empty(),
        "{} failed requests during certificate rotation, first ones: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(total > 20 && n > 20, "too little load: {total} and {n}");
    assert_eq!(
        webhook.metric("byoc_webhook_certificate_reloads_total{error=\"none\"}"),
        ROTATIONS as f64,
        "{}",
        webhook.metrics()
    );
}

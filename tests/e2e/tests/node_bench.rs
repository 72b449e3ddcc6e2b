//! The benchmark on the node (DESIGN §10, issue 13): the operator as pods from its images,
//! installed by its chart, the API server calling the webhook through its Service. By hand,
//! never in CI; docs/benchmarks.md has the method and a run's numbers:
//!
//! ```text
//! hack/build-images.sh >/dev/null   # the release binaries and the images
//! hack/local-cluster.sh --dir "$CARGO_TARGET_DIR/node-cluster" --node exec -- \
//!   cargo test -p byoc-e2e --test node_bench -- --ignored --nocapture
//! ```
//!
//! 1. pod create through the API server, `BYOC_BENCH_PODS` (200) one after another per phase,
//!    `BYOC_BENCH_REPEATS` (5) repeats with the phases interleaved: no admission check; the
//!    chart's webhook; the same rule as a CEL ValidatingAdmissionPolicy ([`byoc_e2e::bench`],
//!    shared with the webhook's own benchmark). The pods carry a scheduling gate, so they are
//!    stored but never scheduled: the phase times admission and storage, not the node.
//! 2. pod create → Running on the node, `BYOC_BENCH_RUNNING_PODS` (20) one after another per
//!    phase, `BYOC_BENCH_RUNNING_REPEATS` (3) repeats, without and with the webhook.
//! 3. memory of every webhook and controller pod from its cgroup ([`pod_memory`]), before and
//!    after.
//!
//! It prints a Markdown report (medians over the repeats) and the load average.
#![allow(clippy::print_stderr, clippy::print_stdout)]

use std::time::{Duration, Instant};

use byoc_e2e::bench::{
    Latencies, create_pods, load_average, median, pod, register_cel_policy, remove_admission,
    wait_for_enforcement,
};
use byoc_e2e::controller::SYSTEM_NAMESPACE;
use byoc_e2e::node::{RELEASE, RUNNING_TIMEOUT, TEST_IMAGE_PATH, installed, pod_memory};
use byoc_e2e::{TestNamespace, client, eventually, kubectl, kubectl_stdin};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

/// The CEL policy's and binding's name.
const CEL_NAME: &str = "byoc-bench";

/// A whole number from the environment variable `name`, else `default`.
fn setting(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a whole number: {e}")),
        Err(_) => default,
    }
}

/// What checks pod creation in the bench namespace during a phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Admission {
    None,
    Webhook,
    Cel,
}

impl Admission {
    fn label(self) -> &'static str {
        match self {
            Self::None => "no admission check",
            Self::Webhook => "byoc-webhook, in-cluster (Service)",
            Self::Cel => "CEL ValidatingAdmissionPolicy",
        }
    }
}

/// Switches admission between the phases: the chart's ValidatingWebhookConfiguration is taken
/// out for the phases without it and put back as it was (also when the benchmark panics, at
/// drop); the CEL policy exists only in its phase.
struct Phases {
    client: Client,
    /// The chart's ValidatingWebhookConfiguration as installed, without server-set fields.
    webhook: Value,
}

impl Phases {
    fn new(client: &Client) -> Self {
        let out = kubectl([
            "get",
            "validatingwebhookconfigurations",
            "-l",
            &format!("app.kubernetes.io/instance={RELEASE}"),
            "-o",
            "json",
        ])
        .success();
        let list: Value = serde_json::from_str(&out.stdout).expect("kubectl's JSON");
        let items = list["items"].as_array().cloned().unwrap_or_default();
        assert_eq!(
            items.len(),
            1,
            "the chart's webhook configuration: {items:?}"
        );
        let mut webhook = items[0].clone();
        let metadata = webhook["metadata"].as_object_mut().expect("metadata");
        for field in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
        ] {
            metadata.remove(field);
        }
        Self {
            client: client.clone(),
            webhook,
        }
    }

    fn webhook_name(&self) -> String {
        self.webhook["metadata"]["name"]
            .as_str()
            .expect("a name")
            .to_owned()
    }

    fn restore_webhook(&self) {
        let name = self.webhook_name();
        if !kubectl(["get", "validatingwebhookconfiguration", &name])
            .status
            .success()
        {
            kubectl_stdin(&["create", "-f", "-"], &self.webhook.to_string()).success();
        }
    }

    async fn set(&self, admission: Admission) {
        remove_admission(&self.client, CEL_NAME)
            .await
            .expect("remove the CEL policy");
        match admission {
            Admission::Webhook => self.restore_webhook(),
            Admission::None | Admission::Cel => {
                kubectl([
                    "delete",
                    "validatingwebhookconfiguration",
                    &self.webhook_name(),
                    "--ignore-not-found",
                ])
                .success();
            }
        }
        if admission == Admission::Cel {
            register_cel_policy(&self.client, CEL_NAME)
                .await
                .expect("register the CEL policy");
        }
    }
}

impl Drop for Phases {
    fn drop(&mut self) {
        kubectl([
            "delete",
            "validatingadmissionpolicybinding,validatingadmissionpolicy",
            CEL_NAME,
            "--ignore-not-found",
        ]);
        self.restore_webhook();
    }
}

/// A pod of the test image (platform registry, stays Running) labelled `phase=PHASE`; with
/// `gated`, a scheduling gate keeps it from ever being scheduled.
fn bench_pod(name: &str, phase: &str, gated: bool) -> Pod {
    let mut pod = pod(
        name,
        &format!("docker-registry.tools.wmflabs.org/{TEST_IMAGE_PATH}"),
    );
    pod.labels_mut()
        .insert("phase".to_owned(), phase.to_owned());
    let spec = pod.spec.as_mut().expect("a spec");
    spec.termination_grace_period_seconds = Some(0);
    if gated {
        spec.scheduling_gates = Some(vec![
            serde_json::from_value(serde_json::json!({"name": "byoc.toolforge.org/bench"}))
                .expect("a scheduling gate"),
        ]);
    }
    pod
}

/// Deletes every pod in `namespace` and waits until they are gone.
async fn delete_pods(client: &Client, namespace: &str) {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    api.delete_collection(&now, &ListParams::default())
        .await
        .expect("delete the pods");
    let deadline = Instant::now() + RUNNING_TIMEOUT;
    while !api
        .list(&ListParams::default())
        .await
        .expect("list pods")
        .items
        .is_empty()
    {
        assert!(Instant::now() < deadline, "pods in {namespace} not gone");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates `n` pods one after another, each once the one before is Running, and returns the
/// times from the create request to the API server showing the pod Running (polled every 10 ms).
async fn create_until_running(
    client: &Client,
    namespace: &str,
    phase: &str,
    n: usize,
) -> Latencies {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("{phase}-{i}");
        let started = Instant::now();
        create_pods(client, namespace, [bench_pod(&name, phase, false)])
            .await
            .expect("create a pod");
        loop {
            let pod = api.get(&name).await.expect("get the pod");
            if pod.status.and_then(|s| s.phase).as_deref() == Some("Running") {
                break;
            }
            assert!(
                started.elapsed() < RUNNING_TIMEOUT,
                "pod {namespace}/{name} not Running after {RUNNING_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        samples.push(started.elapsed());
    }
    Latencies::new(samples)
}

/// What a phase times.
#[derive(Clone, Copy, Debug)]
enum Measure {
    /// This many gated pods created one after another: each create call.
    Create(usize),
    /// This many pods created one after another: each create to Running.
    Running(usize),
}

/// Times `what` in `namespace` under each of `admissions`, `repeats` times with the phases
/// interleaved; returns each phase's series.
async fn measure(
    client: &Client,
    namespace: &str,
    phases: &Phases,
    admissions: &[Admission],
    repeats: usize,
    what: Measure,
) -> Vec<(Admission, Vec<Latencies>)> {
    let mut series: Vec<(Admission, Vec<Latencies>)> =
        admissions.iter().map(|&a| (a, Vec::new())).collect();
    for repeat in 0..repeats {
        for (admission, results) in &mut series {
            phases.set(*admission).await;
            wait_for_enforcement(client, namespace, *admission != Admission::None)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let tag = format!("{what:?}-{repeat}-{admission:?}")
                .to_lowercase()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "-");
            let r = match what {
                Measure::Create(n) => {
                    let batch = (0..n).map(|i| bench_pod(&format!("{tag}-{i}"), &tag, true));
                    create_pods(client, namespace, batch)
                        .await
                        .expect("create pods")
                }
                Measure::Running(n) => create_until_running(client, namespace, &tag, n).await,
            };
            eprintln!(
                "{what:?} {repeat} {}: p50 {:.2} ms p99 {:.2} ms",
                admission.label(),
                r.p50_ms(),
                r.p99_ms()
            );
            results.push(r);
            delete_pods(client, namespace).await;
        }
    }
    series
}

/// One line per webhook and controller pod: its memory from its cgroup, once the release's
/// pods are settled (two of each, all Ready, none terminating: an upgrade's old pods are gone).
async fn operator_memory(client: &Client) -> Vec<String> {
    let api = Api::<Pod>::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    let pods = eventually(
        "the release's four pods settled",
        RUNNING_TIMEOUT,
        || async {
            let pods = api
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| e.to_string())?
                .items;
            let settled = pods.iter().all(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            });
            if settled && pods.len() == 4 {
                Ok(pods)
            } else {
                Err(format!("{} pods, settled: {settled}", pods.len()))
            }
        },
    )
    .await;
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let mut lines: Vec<String> = pods
        .iter()
        .map(|p| {
            let component = p
                .labels()
                .get("app.kubernetes.io/component")
                .cloned()
                .unwrap_or_default();
            let memory = pod_memory(&p.uid().expect("a uid")).unwrap_or_else(|e| panic!("{e}"));
            format!(
                "| {component} | {} | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
                p.name_any(),
                mib(memory.processes_rss),
                mib(memory.rss),
                mib(memory.peak)
            )
        })
        .collect();
    lines.sort();
    lines
}

fn print_phases(title: &str, phases: &[(Admission, Vec<Latencies>)]) {
    let p50 = |v: &[Latencies]| median(v.iter().map(Latencies::p50_ms).collect());
    let p99 = |v: &[Latencies]| median(v.iter().map(Latencies::p99_ms).collect());
    let (base50, base99) = (p50(&phases[0].1), p99(&phases[0].1));
    println!("\n| {title} | p50 | p99 | p50 vs none | p99 vs none |\n|---|---|---|---|---|");
    for (admission, series) in phases {
        let (a, b) = (p50(series), p99(series));
        println!(
            "| {} | {a:.2} ms | {b:.2} ms | {:+.2} ms ({:+.1} %) | {:+.2} ms ({:+.1} %) |",
            admission.label(),
            a - base50,
            (a / base50 - 1.0) * 100.0,
            b - base99,
            (b / base99 - 1.0) * 100.0
        );
    }
    let per_repeat: Vec<String> = phases
        .iter()
        .map(|(a, s)| {
            let p99s: Vec<String> = s.iter().map(|l| format!("{:.1}", l.p99_ms())).collect();
            format!("{}: {}", a.label(), p99s.join(" / "))
        })
        .collect();
    println!("\np99 per repeat (ms): {}", per_repeat.join("; "));
}

#[tokio::test]
#[ignore = "a benchmark on the node, by hand: see the file's header and docs/benchmarks.md"]
async fn node_benchmark() {
    let repeats = setting("BYOC_BENCH_REPEATS", 5);
    let pods = setting("BYOC_BENCH_PODS", 200);
    let running_repeats = setting("BYOC_BENCH_RUNNING_REPEATS", 3);
    let running_pods = setting("BYOC_BENCH_RUNNING_PODS", 20);
    installed();
    let client = client().await;
    let load_before = load_average();
    let memory_before = operator_memory(&client).await;
    let ns = TestNamespace::create(&client, "node-bench").await;
    ns.wait_for_default_service_account(&client).await;
    let namespace = ns.name();
    let phases = Phases::new(&client);

    // The test image is pulled once before anything is timed.
    phases.set(Admission::None).await;
    create_until_running(&client, namespace, "warm-up", 1).await;
    delete_pods(&client, namespace).await;

    let creates = measure(
        &client,
        namespace,
        &phases,
        &[Admission::None, Admission::Webhook, Admission::Cel],
        repeats,
        Measure::Create(pods),
    )
    .await;
    let running = measure(
        &client,
        namespace,
        &phases,
        &[Admission::None, Admission::Webhook],
        running_repeats,
        Measure::Running(running_pods),
    )
    .await;
    phases.set(Admission::Webhook).await;
    drop(phases);
    let memory_after = operator_memory(&client).await;

    println!(
        "\n### Node benchmark ({} cores; load average {load_before} before, {} after)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    print_phases(
        &format!("pod create, {pods} per phase × {repeats} (medians)"),
        &creates,
    );
    print_phases(
        &format!("pod create → Running, {running_pods} per phase × {running_repeats} (medians)"),
        &running,
    );
    let header = "| component | pod | VmRSS of its processes | anonymous (memory.stat) | peak charge |\n|---|---|---|---|---|";
    println!(
        "\nbefore the benchmark:\n\n{header}\n{}",
        memory_before.join("\n")
    );
    println!(
        "\nafter the benchmark:\n\n{header}\n{}",
        memory_after.join("\n")
    );
}

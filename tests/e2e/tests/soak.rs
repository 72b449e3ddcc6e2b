//! The soak (issue 8): mixed admission load plus grant churn for `SOAK_SECONDS` (default 600),
//! with the controller and the webhook running against the local control plane. Zero wrong
//! decisions, both processes alive at the end, and flat memory (RSS sampled every
//! `SOAK_SAMPLE_SECONDS`, default 10). Not part of `make test`: run it with `hack/soak.sh`,
//! which prints the numbers that go to `docs/benchmarks.md` (`## Soak`).
//!
//! The load:
//! - through the API server: server-side dry-run pod creates in four namespaces with fixed
//!   grants (none, `quay.io`, `ghcr.io/wikimedia`, any), images allowed and refused there;
//! - straight to the webhook over one keep-alive HTTPS connection: the same cases as
//!   AdmissionReviews, as fast as it answers;
//! - grant churn: in four more namespaces, a grant is created, waited for (the webhook admits
//!   by it), checked with a burst of reviews, deleted, waited for (the webhook refuses again)
//!   and checked again, over and over; the time from each change to the webhook's new answer is
//!   recorded.
//!
//! A decision is wrong when it differs from what the fixed grants say, or, for a churned
//! namespace, from its settled state after the change was seen.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use byoc_e2e::chaos::{
    self, HttpsClient, Outcome, PLATFORM_IMAGE, WebhookOptions, WebhookProcess, admission_response,
    pod_review, proc_status_kib, try_pod,
};
use byoc_e2e::controller;
use byoc_e2e::{
    Cleanup, TestNamespace, client, eventually, grant_manifest, kubectl, kubectl_stdin, unique_name,
};
use kube::Client;
use serde_json::json;

/// Images and whether each namespace kind may run them: (image, none, quay, ghcr, any).
const CASES: [(&str, bool, bool, bool, bool); 7] = [
    (PLATFORM_IMAGE, true, true, true, true),
    ("nginx:1.27", false, false, false, true),
    (
        "quay.io/prometheus/node-exporter:v1.8.0",
        false,
        true,
        false,
        true,
    ),
    ("ghcr.io/wikimedia/blubber:0.23", false, false, true, true),
    ("ghcr.io/wikimediax/blubber:0.23", false, false, false, true),
    (
        "docker-registry.tools.wmflabs.org.evil.com/x",
        false,
        false,
        false,
        true,
    ),
    (
        "docker-registry.tools.wmflabs.org/X",
        false,
        false,
        false,
        false,
    ),
];

fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

#[derive(Default)]
struct Counters {
    api: AtomicU64,
    direct: AtomicU64,
    churn_checks: AtomicU64,
    wrong: AtomicU64,
}

fn expected(kind: usize, case: usize) -> bool {
    let (_, none, quay, ghcr, any) = CASES[case];
    [none, quay, ghcr, any][kind]
}

async fn api_load(
    client: Client,
    namespaces: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    offset: usize,
) {
    let mut i = offset;
    while !stop.load(Ordering::Relaxed) {
        let (kind, case) = (i % 4, (i / 4) % CASES.len());
        i += 1;
        let want = if expected(kind, case) {
            Outcome::Admitted
        } else {
            Outcome::Denied
        };
        let got = try_pod(&client, &namespaces[kind], CASES[case].0).await;
        counters.api.fetch_add(1, Ordering::Relaxed);
        if got != want {
            counters.wrong.fetch_add(1, Ordering::Relaxed);
            eprintln!(
                "WRONG (API server): {} in {}: {got:?}, expected {want:?}",
                CASES[case].0, namespaces[kind]
            );
        }
    }
}

/// One review straight to the webhook: whether it was admitted.
async fn direct_review(
    conn: &mut Option<chaos::Connection>,
    https: &HttpsClient,
    uid: &str,
    namespace: &str,
    image: &str,
) -> Option<bool> {
    if conn.is_none() {
        *conn = https.connect().await.ok();
    }
    let body = pod_review(uid, namespace, &[image]).to_string();
    let response = conn.as_mut()?.post(body.as_bytes()).await;
    match response {
        Ok(r) if r.status == 200 => {
            let review = r.json();
            let r = admission_response(&review);
            assert_eq!(r["uid"], uid, "{review}");
            r["allowed"].as_bool()
        }
        _ => {
            *conn = None;
            None
        }
    }
}

async fn direct_load(
    https: HttpsClient,
    namespaces: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
) {
    let mut conn = None;
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let (kind, case) = (i % 4, (i / 4) % CASES.len());
        i += 1;
        let uid = format!("soak-{i}");
        let Some(allowed) =
            direct_review(&mut conn, &https, &uid, &namespaces[kind], CASES[case].0).await
        else {
            counters.wrong.fetch_add(1, Ordering::Relaxed);
            eprintln!("WRONG (direct): no answer for {uid}");
            continue;
        };
        counters.direct.fetch_add(1, Ordering::Relaxed);
        if allowed != expected(kind, case) {
            counters.wrong.fetch_add(1, Ordering::Relaxed);
            eprintln!(
                "WRONG (direct): {} in {}: allowed={allowed}",
                CASES[case].0, namespaces[kind]
            );
        }
    }
}

const CHURN_IMAGE: &str = "quay.io/prometheus/node-exporter:v1.8.0";

/// Grants a churn namespace quay.io and takes it away again, until `stop`; returns the time
/// from each change (the API server's answer to the create or delete) to the webhook's new
/// answer: the controller's reconcile, its label write and the webhook's watch together.
async fn churn(
    https: HttpsClient,
    namespace: String,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
) -> Vec<Duration> {
    let mut conn = None;
    let mut latencies = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let grant = unique_name("soak-churn");
        for admitted in [true, false] {
            // kubectl blocks: off the runtime's threads, so the load is not held up.
            let (g, ns) = (grant.clone(), namespace.clone());
            tokio::task::spawn_blocking(move || {
                if admitted {
                    kubectl_stdin(
                        &["create", "-f", "-"],
                        &grant_manifest(
                            &g,
                            json!({"namespace": ns, "reason": "soak", "registries": ["quay.io"]}),
                        ),
                    )
                    .success();
                } else {
                    kubectl(["delete", "byocgrant", &g, "--wait=false"]).success();
                }
            })
            .await
            .expect("kubectl");
            // From the API server's acknowledgement of the change.
            let changed = Instant::now();
            // Until the change is seen, either answer is right; after, only the new one.
            let deadline = changed + Duration::from_secs(30);
            loop {
                n += 1;
                let got = direct_review(
                    &mut conn,
                    &https,
                    &format!("churn-{n}"),
                    &namespace,
                    CHURN_IMAGE,
                )
                .await;
                if got == Some(admitted) {
                    latencies.push(changed.elapsed());
                    break;
                }
                if Instant::now() > deadline {
                    counters.wrong.fetch_add(1, Ordering::Relaxed);
                    eprintln!("WRONG (churn): {namespace} never became admitted={admitted}");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            for _ in 0..20 {
                n += 1;
                let got = direct_review(
                    &mut conn,
                    &https,
                    &format!("churn-{n}"),
                    &namespace,
                    CHURN_IMAGE,
                )
                .await;
                counters.churn_checks.fetch_add(1, Ordering::Relaxed);
                if got != Some(admitted) {
                    counters.wrong.fetch_add(1, Ordering::Relaxed);
                    eprintln!(
                        "WRONG (churn): {namespace} flipped back: {got:?}, settled {admitted}"
                    );
                }
            }
        }
        // Wait for the deletion to finish before the next round (finalizer).
        let target = format!("byocgrant/{grant}");
        tokio::task::spawn_blocking(move || {
            kubectl(["wait", "--for=delete", &target, "--timeout=30s"])
        })
        .await
        .expect("kubectl wait");
    }
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn mean(xs: &[u64]) -> f64 {
    if xs.is_empty() {
        0.0
    } else {
        xs.iter().sum::<u64>() as f64 / xs.len() as f64
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 10-minute soak: run it with hack/soak.sh"]
async fn soak() {
    let duration = env_secs("SOAK_SECONDS", 600);
    let every = env_secs("SOAK_SAMPLE_SECONDS", 10);
    let _exclusive = chaos::exclusive().await;
    let access = controller::exclusive().await;
    let client = client().await;
    let ctl = access.spawn(&unique_name("soak-ctl"), &[]);
    ctl.wait_leader().await;
    let mut webhook = WebhookProcess::start(WebhookOptions::default());
    webhook.register().await;
    let https = webhook.client();

    // Fixed namespaces: none, quay.io, ghcr.io/wikimedia, any.
    let mut fixed = Vec::new();
    let mut grants = Vec::new();
    for (i, registries) in [
        None,
        Some(json!(["quay.io"])),
        Some(json!(["ghcr.io/wikimedia"])),
        Some(json!([])),
    ]
    .into_iter()
    .enumerate()
    {
        let ns = TestNamespace::create(&client, &format!("soak-{i}")).await;
        ns.wait_for_default_service_account(&client).await;
        if let Some(registries) = registries {
            let name = unique_name("soak-fixed");
            kubectl_stdin(
                &["create", "-f", "-"],
                &grant_manifest(
                    &name,
                    json!({"namespace": ns.name(), "reason": "soak",
                           "anyRegistry": registries == json!([]), "registries": registries}),
                ),
            )
            .success();
            grants.push(Cleanup::new(["byocgrant", &name]));
        }
        fixed.push(ns);
    }
    let names: Arc<Vec<String>> = Arc::new(fixed.iter().map(|n| n.name().to_owned()).collect());
    for (kind, ns) in names.iter().enumerate() {
        for (case, (image, ..)) in CASES.iter().enumerate() {
            let want = if expected(kind, case) {
                Outcome::Admitted
            } else {
                Outcome::Denied
            };
            eventually(
                &format!("{image} in {ns} to be {want:?}"),
                Duration::from_secs(60),
                || async {
                    match try_pod(&client, ns, image).await {
                        got if got == want => Ok(()),
                        got => Err(format!("{got:?}")),
                    }
                },
            )
            .await;
        }
    }
    let mut churned = Vec::new();
    for _ in 0..4 {
        churned.push(TestNamespace::create(&client, "soak-churn").await);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let mut load = Vec::new();
    for offset in [0, 13] {
        load.push(tokio::spawn(api_load(
            client.clone(),
            names.clone(),
            stop.clone(),
            counters.clone(),
            offset,
        )));
    }
    load.push(tokio::spawn(direct_load(
        https.clone(),
        names.clone(),
        stop.clone(),
        counters.clone(),
    )));
    let churners: Vec<_> = churned
        .iter()
        .map(|ns| {
            tokio::spawn(churn(
                https.clone(),
                ns.name().to_owned(),
                stop.clone(),
                counters.clone(),
            ))
        })
        .collect();

    let (webhook_pid, controller_pid) = (webhook.pid(), ctl.pid());
    let started = Instant::now();
    let mut samples: Vec<(u64, u64, u64, u64, u64)> = Vec::new();
    println!("soak: {duration:?}, RSS every {every:?}");
    println!("  t_s  webhook_rss_kib  controller_rss_kib  api_requests  direct_reviews  wrong");
    while started.elapsed() < duration {
        tokio::time::sleep(every.min(duration.saturating_sub(started.elapsed()))).await;
        let sample = (
            started.elapsed().as_secs(),
            proc_status_kib(webhook_pid, "VmRSS"),
            proc_status_kib(controller_pid, "VmRSS"),
            counters.api.load(Ordering::Relaxed),
            counters.direct.load(Ordering::Relaxed),
        );
        println!(
            "{:5} {:16} {:19} {:13} {:15} {:6}",
            sample.0,
            sample.1,
            sample.2,
            sample.3,
            sample.4,
            counters.wrong.load(Ordering::Relaxed)
        );
        samples.push(sample);
        ctl.assert_running();
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("a load task");
    }
    let mut latencies = Vec::new();
    for task in churners {
        latencies.extend(task.await.expect("a churn task"));
    }
    latencies.sort();

    let elapsed = started.elapsed().as_secs_f64();
    let api = counters.api.load(Ordering::Relaxed);
    let direct = counters.direct.load(Ordering::Relaxed);
    let wrong = counters.wrong.load(Ordering::Relaxed);
    let checks = counters.churn_checks.load(Ordering::Relaxed);
    let third = (samples.len() / 3).max(1);
    let rss = |f: fn(&(u64, u64, u64, u64, u64)) -> u64, part: &[(u64, u64, u64, u64, u64)]| {
        mean(&part.iter().map(f).collect::<Vec<_>>())
    };
    let (w_first, w_last) = (
        rss(|s| s.1, &samples[..third]),
        rss(|s| s.1, &samples[samples.len() - third..]),
    );
    let (c_first, c_last) = (
        rss(|s| s.2, &samples[..third]),
        rss(|s| s.2, &samples[samples.len() - third..]),
    );
    let w_max = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let c_max = samples.iter().map(|s| s.2).max().unwrap_or(0);
    println!("SUMMARY duration_s={elapsed:.0}");
    println!(
        "SUMMARY api_requests={api} ({:.0}/s) direct_reviews={direct} ({:.0}/s) churn_changes={} \
         churn_checks={checks} wrong_decisions={wrong}",
        api as f64 / elapsed,
        direct as f64 / elapsed,
        latencies.len()
    );
    println!(
        "SUMMARY churn_latency p50={:?} p99={:?} max={:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );
    println!(
        "SUMMARY webhook_rss_kib first_third_mean={w_first:.0} last_third_mean={w_last:.0} max={w_max}"
    );
    println!(
        "SUMMARY controller_rss_kib first_third_mean={c_first:.0} last_third_mean={c_last:.0} max={c_max}"
    );

    assert_eq!(wrong, 0, "wrong decisions during the soak");
    assert!(
        api > 0 && direct > 0 && !latencies.is_empty(),
        "no load ran"
    );
    // Flat: the last third of the run uses at most 10% (+2 MiB) more than the first third.
    for (what, first, last) in [
        ("webhook", w_first, w_last),
        ("controller", c_first, c_last),
    ] {
        assert!(
            last <= first * 1.10 + 2048.0,
            "{what} RSS grew from {first:.0} KiB to {last:.0} KiB"
        );
    }
    ctl.assert_running();
    drop(churned);
    drop(grants);
    drop(webhook);
}

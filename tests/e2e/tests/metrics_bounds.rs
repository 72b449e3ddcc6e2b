//! Metric labels whose values tenants choose stay bounded (issue 21, item 5): a tenant that
//! invents namespaces and registries, through the real API server, gets at most
//! `--metrics-label-limit` series of their own in the controller's `/metrics` plus `other`, and
//! none at all in the webhook's, whose labels are fixed sets.
//!
//! `cargo build -p byoc-controller -p byoc-webhook && hack/local-cluster.sh exec -- cargo test -p byoc-e2e --test metrics_bounds`

use std::time::Duration;

use byoc_e2e::controller::exclusive;
use byoc_e2e::webhook::{Options, Webhook};
use byoc_e2e::{TestNamespace, client, kubectl_run, reports, unique_name};

/// Namespaces and registries the tenant invents.
const INVENTED: usize = 30;
/// The controller's `--metrics-label-limit` here.
const LIMIT: usize = 5;

/// The series of `metric` in a `/metrics` text: `(labels, value)`.
fn series<'a>(text: &'a str, metric: &str) -> Vec<(&'a str, f64)> {
    let prefix = format!("{metric}{{");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (labels, value) = rest.split_once("} ")?;
            Some((labels, value.trim().parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn invented_namespaces_and_registries_make_at_most_limit_plus_one_series() {
    let client = client().await;
    byoc_e2e::install_crd(&client).await;
    reports::install_crd(&client).await;
    let cluster = exclusive().await;
    let policy = reports::policy_file(&unique_name("e2e-bounds"), "audit", &[]);
    let controller = cluster.spawn(
        &unique_name("bounds"),
        &[
            "--reports",
            &format!("--config={}", policy.display()),
            &format!("--metrics-label-limit={LIMIT}"),
        ],
    );
    controller.wait_leader().await;
    // Audit: the API server sends every pod to the webhook, which admits it and counts it.
    let webhook = Webhook::start(Options {
        mode: "audit",
        ..Options::default()
    })
    .await;

    let mut namespaces = Vec::new();
    for _ in 0..INVENTED {
        namespaces.push(TestNamespace::create(&client, "e2e-bounds").await);
    }
    let registries: Vec<String> = (0..INVENTED)
        .map(|_| format!("{}.example", unique_name("reg")))
        .collect();
    for (ns, registry) in namespaces.iter().zip(&registries) {
        ns.wait_for_default_service_account(&client).await;
        kubectl_run(ns.name(), "app", &format!("{registry}/app:1")).success();
    }

    // Every invented namespace and registry is counted, under its own name or `other`.
    let text = byoc_e2e::eventually(
        "the controller to count every invented workload and registry",
        Duration::from_secs(30),
        || async {
            let (_, text) = controller.get("/metrics").await?;
            let workloads: f64 = series(&text, "byoc_workloads").iter().map(|(_, v)| v).sum();
            let named = registries
                .iter()
                .filter(|r| text.contains(&format!("registry=\"{r}\"")))
                .count();
            let other = series(&text, "byoc_images_in_use")
                .iter()
                .find(|(l, _)| *l == "registry=\"other\"")
                .map_or(0.0, |(_, v)| *v);
            #[allow(clippy::cast_precision_loss)]
            let invented = INVENTED as f64;
            #[allow(clippy::cast_precision_loss)]
            let counted = named as f64 + other;
            if workloads >= invented && counted >= invented {
                Ok(text)
            } else {
                Err(format!(
                    "{workloads} workloads, {named} named registries + {other} in other"
                ))
            }
        },
    )
    .await;
    let workload_namespaces: std::collections::BTreeSet<&str> = series(&text, "byoc_workloads")
        .into_iter()
        .filter_map(|(labels, _)| labels.split(',').next())
        .collect();
    let registry_series = series(&text, "byoc_images_in_use");
    println!(
        "{INVENTED} invented namespaces and registries: {} namespace label values, {} registry \
         series (limit {LIMIT})",
        workload_namespaces.len(),
        registry_series.len()
    );
    assert!(
        workload_namespaces.len() <= LIMIT + 1,
        "byoc_workloads has {} namespaces: {workload_namespaces:?}",
        workload_namespaces.len()
    );
    assert!(workload_namespaces.contains("namespace=\"other\""));
    assert!(
        registry_series.len() <= LIMIT + 1,
        "byoc_images_in_use: {registry_series:?}"
    );
    assert!(
        registry_series
            .iter()
            .any(|(l, _)| *l == "registry=\"other\"")
    );

    // The webhook answered every one, and no series of it names an invented value.
    let metrics = webhook.metrics();
    assert!(
        webhook.metric(
            "byoc_webhook_decisions_total{result=\"audited\",reason=\"registry_not_allowed\"}"
        ) >= 1.0,
        "{metrics}"
    );
    for value in namespaces
        .iter()
        .map(|ns| ns.name().to_owned())
        .chain(registries.iter().cloned())
    {
        assert!(
            !metrics.contains(&value),
            "the webhook's metrics name {value}:\n{metrics}"
        );
    }
    drop(webhook);
    assert!(controller.stop().success(), "{}", controller.log_tail());
}

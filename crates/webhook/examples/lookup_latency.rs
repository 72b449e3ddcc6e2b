//! What checking grant requirements against a registry costs a review (issue 22):
//!
//! ```text
//! cargo run --release -p byoc-webhook --example lookup_latency -- --reviews 2000
//! ```
//!
//! A real `docker-registry` on loopback with the scenario images of `byoc_e2e::registry`, and
//! a webhook in process (the namespace cache filled by hand, as the watch fills it), timing
//! `Webhook::review` of a realistic pod AdmissionReview, one at a time:
//!
//! - **name-only**: a grant without requirements: no lookup;
//! - **warm**: a grant with `builtOn`, every answer cached (the tag within its TTL);
//! - **cold**: the same with a new registry client per review: every manifest, index and
//!   config fetched (the tag of the image and of the base, two manifests, two configs);
//! - **cold image**: `--distinct` images built on the base, each reviewed once by the
//!   long-lived webhook of the warm series, as a new tool image is in production: its tag (with
//!   the manifest) and its config fetched over the client's open connections, the base cached;
//!   the time to warm them all is printed too;
//! - **registry floor**: the same two requests (the manifest by tag, then the config) of each
//!   of those images sent by a plain keep-alive HTTP client, right after the webhook asked for
//!   them (so with the registry's file reads in the page cache: a floor that flatters the
//!   registry, and "ours" = cold image − floor is an upper bound);
//! - **distinct warm**: those images reviewed again, every answer cached.
//!
//! Prints p50 and p99 per series. No HTTPS and no API server: the figures are the policy
//! and registry work only.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use byoc_api::{BaseImage, Requirements};
use byoc_e2e::bench::{granted_namespace as namespace, pod_review};
use byoc_e2e::registry::{Images, Layer, LocalRegistry, OCI_MANIFEST};
use byoc_policy::Config;
use byoc_registry::{Lookups, lookups};
use byoc_webhook::{Metrics, NamespaceCache, Webhook};
use clap::Parser;
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use prometheus_client::registry::Registry;

#[derive(Debug, Parser)]
struct Args {
    /// Reviews per name-only and warm series.
    #[arg(long, default_value_t = 2000)]
    reviews: usize,
    /// Reviews of the cold series.
    #[arg(long, default_value_t = 200)]
    cold: usize,
    /// Distinct images of the cold-image and distinct-warm series.
    #[arg(long, default_value_t = 1000)]
    distinct: usize,
}

/// p50 and p99 of `samples`.
fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.50), at(0.99))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let registry = LocalRegistry::start();
    let images = Images::push(&registry).await;
    let host = registry.addr().to_string();
    let config = Config::from_yaml(&format!(
        "registryLookups: {{insecureRegistries: [\"{host}\"], tagTtl: 1h}}\n"
    ))?;
    let built_on = Requirements {
        built_on: vec![BaseImage(format!("{host}/{}", images.base.path))],
        ..Requirements::default()
    };
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&Event::Apply(namespace("tool-plain", &host, None)));
    writer.apply_watcher_event(&Event::Apply(namespace("tool-req", &host, Some(&built_on))));
    let cache = NamespaceCache::new(store);

    let webhook = |metrics: Metrics| -> anyhow::Result<Webhook> {
        // Plain HTTP to the loopback registry: no roots needed.
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let client = lookups::client(&config, Some(tls))?;
        let lookups = Lookups::new(&config, Ok(client), metrics.clone());
        Ok(Webhook::new(
            config.clone(),
            cache.clone(),
            lookups,
            metrics,
        ))
    };
    let metrics = Metrics::register(&mut Registry::default());
    let warm = webhook(metrics.clone())?;
    let image = format!("{host}/{}:{}", images.tool.path, images.tool.tag);
    let body = |ns: &str, i: usize| pod_review(&format!("uid-{i}"), ns, &image).to_string();

    let time = async |webhook: &Webhook, body: &str| {
        let started = Instant::now();
        let response = webhook.review(body.as_bytes()).await;
        let elapsed = started.elapsed();
        assert!(response.allowed, "refused: {:?}", response.result.message);
        elapsed
    };

    let mut report = Vec::new();
    let mut plain = Vec::new();
    for i in 0..args.reviews {
        plain.push(time(&warm, &body("tool-plain", i)).await);
    }
    report.push(("name-only", percentiles(plain)));

    time(&warm, &body("tool-req", 0)).await;
    let mut warmed = Vec::new();
    for i in 0..args.reviews {
        warmed.push(time(&warm, &body("tool-req", i)).await);
    }
    report.push(("warm requirement", percentiles(warmed)));

    let mut cold = Vec::new();
    for i in 0..args.cold {
        let fresh = webhook(metrics.clone())?;
        cold.push(time(&fresh, &body("tool-req", i)).await);
    }
    report.push(("cold, new client per review", percentiles(cold)));

    let mut pushed = Vec::with_capacity(args.distinct);
    for i in 0..args.distinct {
        let top = Layer::new(&[("app/id", &i.to_string())]);
        let path = format!("tool-a/app{i}");
        pushed.push(Images::push_on_base(&registry, &path, "latest", &top).await);
    }
    let (mut first, mut floor, mut again) = (Vec::new(), Vec::new(), Vec::new());
    let warming = Instant::now();
    for (i, image) in pushed.iter().enumerate() {
        let reference = format!("{host}/{}:{}", image.path, image.tag);
        let body = pod_review(&format!("uid-d{i}"), "tool-req", &reference).to_string();
        first.push(time(&warm, &body).await);
        let started = Instant::now();
        let tag = format!("{}/manifests/{}", image.path, image.tag);
        registry.get(&tag, OCI_MANIFEST).await;
        let config = format!("{}/blobs/{}", image.path, image.config_digest);
        registry.get(&config, "*/*").await;
        floor.push(started.elapsed());
    }
    let warmed_in = warming.elapsed() - floor.iter().sum::<Duration>();
    for (i, image) in pushed.iter().enumerate() {
        let reference = format!("{host}/{}:{}", image.path, image.tag);
        let body = pod_review(&format!("uid-w{i}"), "tool-req", &reference).to_string();
        again.push(time(&warm, &body).await);
    }
    report.push(("cold image, long-lived client", percentiles(first)));
    report.push((
        "registry floor (manifest by tag, then config)",
        percentiles(floor),
    ));
    report.push(("distinct images again, warm", percentiles(again)));

    println!(
        "{} distinct images warmed (each reviewed once, one at a time) in {warmed_in:.2?}",
        args.distinct
    );
    println!("| review | p50 | p99 |\n|---|---|---|");
    for (what, (p50, p99)) in report {
        println!("| {what} | {p50:.1?} | {p99:.1?} |");
    }
    Ok(())
}

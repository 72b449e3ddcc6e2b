//! The webhook's benchmark (DESIGN §10), in one run against the local control plane:
//!
//! ```text
//! hack/local-cluster.sh exec -- cargo run --release -p byoc-webhook --example bench
//! ```
//!
//! 1. creates `--namespaces` namespaces (10,000) through the API server, every tenth with a
//!    grant label, so the webhook's cache holds them;
//! 2. starts the release `byoc-webhook` binary and measures start to ready and its RSS;
//! 3. load: `--connections` HTTPS keep-alive clients post realistic pod AdmissionReviews (one
//!    in five denied) for `--seconds`, `--repeats` times: throughput, p50, p99;
//! 4. pod creation through the API server, one at a time, `--pods` (200) per phase, phases
//!    interleaved in every repeat: no admission check, this webhook, and the same rule as an
//!    in-process CEL ValidatingAdmissionPolicy (the pod-create timing and the CEL policy are
//!    `byoc_e2e::bench`, shared with the node's benchmark);
//! 5. requirements against a `docker-registry` on loopback: the same pod over one HTTPS
//!    keep-alive connection, its image allowed by name or checked for `builtOn` from a warm
//!    cache, the two series back to back in every repeat (their ratio is taken per repeat);
//!    then `--images` distinct images built on the base reviewed once each, and the webhook's
//!    registry cache bytes and RSS read after.
//!
//! Prints a Markdown report: medians over the repeats. The namespaces stay (the cluster is
//! throw-away); the webhook registration and the policy are removed.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use byoc_api::{BaseImage, Requirements};
use byoc_e2e::bench::{
    self, Latencies, PLATFORM, admission_api, granted_namespace, median, not_exempt, pod_review,
    register_cel_policy, remove_admission, replace, wait_for_enforcement,
};
use byoc_e2e::registry::{Images, Layer, LocalRegistry};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio_rustls::TlsConnector;

const NAME: &str = "byoc-bench";

#[derive(Debug, Parser)]
struct Args {
    /// Namespaces to create (and cache).
    #[arg(long, default_value_t = 10_000)]
    namespaces: usize,
    /// Repeats of each measurement; the report gives medians.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Seconds per load repeat.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent keep-alive connections of the load client; one load series per value.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4])]
    connections: Vec<usize>,
    /// The webhook's log level (RUST_LOG); info, the default, logs every denial.
    #[arg(long, default_value = "info")]
    webhook_log: String,
    /// Pods created per phase and repeat (0 skips the API server phases).
    #[arg(long, default_value_t = 200)]
    pods: usize,
    /// Distinct images (a manifest and a config each) whose requirement checks fill the
    /// webhook's registry cache before its RSS is read (0 skips the requirement series).
    #[arg(long, default_value_t = 5000)]
    images: usize,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::try_default()
        .await
        .context("KUBECONFIG: run through hack/local-cluster.sh exec")?;
    let dir = tempdir()?;

    eprintln!("creating {} namespaces", args.namespaces);
    let started = Instant::now();
    create_namespaces(&client, args.namespaces).await?;
    let creation = started.elapsed();

    // A registry on loopback, and two namespaces granted it: by name, and with builtOn its base.
    let registry = LocalRegistry::start();
    let images = Images::push(&registry).await;
    let host = registry.addr().to_string();
    let built_on = Requirements {
        built_on: vec![BaseImage(format!("{host}/{}", images.base.path))],
        ..Requirements::default()
    };
    for ns in [
        granted_namespace(PLAIN, &host, None),
        granted_namespace(REQUIRING, &host, Some(&built_on)),
    ] {
        let api: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ns.metadata,
            ..Namespace::default()
        };
        if let Err(e) = api.create(&PostParams::default(), &ns).await {
            ensure!(matches!(&e, kube::Error::Api(s) if s.code == 409), e);
        }
    }
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!("registryLookups: {{insecureRegistries: [\"{host}\"], tagTtl: 1h}}\n"),
    )?;

    let pki = Pki::new(&dir)?;
    let mut webhook = WebhookProcess::start(&dir, &pki, &config, &args.webhook_log)?;
    let ready = webhook.wait_ready(Duration::from_secs(60)).await?;
    let cached = webhook.metric("byoc_webhook_cached_namespaces").await?;
    let rss_ready = webhook.rss_kib()?;
    eprintln!("webhook ready after {ready:?} with {cached} namespaces, RSS {rss_ready} KiB");

    // Load.
    let connector = pki.connector()?;
    let bodies = Arc::new(reviews(args.namespaces));
    run_load(
        webhook.listen,
        &connector,
        &bodies,
        2,
        Duration::from_secs(1),
    )
    .await?; // warm-up
    let mut load = Vec::new();
    for &connections in &args.connections {
        let mut series = Vec::new();
        for repeat in 0..args.repeats {
            let seconds = Duration::from_secs(args.seconds);
            let before = (cpu_time(webhook.child.id())?, cpu_time(std::process::id())?);
            let mut r = run_load(webhook.listen, &connector, &bodies, connections, seconds).await?;
            let after = (cpu_time(webhook.child.id())?, cpu_time(std::process::id())?);
            let n = u32::try_from(r.latencies.len().max(1))?;
            r.cpu_per_request = Some(((after.0 - before.0) / n, (after.1 - before.1) / n));
            eprintln!(
                "load {connections}x{repeat}: {:.0}/s p50 {:.3} ms p99 {:.3} ms errors {} cpu/review {:?}",
                r.rate,
                r.latencies.p50_ms(),
                r.latencies.p99_ms(),
                r.errors,
                r.cpu_per_request
            );
            series.push(r);
        }
        load.push((connections, series));
    }
    let rss_after = webhook.rss_kib()?;
    let hwm = webhook.hwm_kib()?;

    // Requirements: the same pod, its image allowed by name (no lookup) or checked for builtOn
    // from a warm cache, interleaved in every repeat.
    let image = format!("{host}/{}:{}", images.tool.path, images.tool.tag);
    let of = |ns: &str| {
        Arc::new(vec![Bytes::from(
            pod_review("uid-r", ns, &image).to_string(),
        )])
    };
    let (plain, requiring) = (of(PLAIN), of(REQUIRING));
    run_load(
        webhook.listen,
        &connector,
        &requiring,
        1,
        Duration::from_secs(1),
    )
    .await?; // warm
    let mut requirement: [(&str, Vec<Latency>); 2] = [
        ("name-only", Vec::new()),
        ("builtOn, warm cache", Vec::new()),
    ];
    for _ in 0..args.repeats * usize::from(args.images > 0) {
        for (bodies, (_, series)) in [&plain, &requiring].into_iter().zip(&mut requirement) {
            let seconds = Duration::from_secs(args.seconds);
            series.push(run_load(webhook.listen, &connector, bodies, 1, seconds).await?);
        }
    }
    // Then the registry cache filled with `--images` distinct images, each reviewed once.
    let mut bodies = Vec::with_capacity(args.images);
    for i in 0..args.images {
        let top = Layer::new(&[("app/id", &i.to_string())]);
        let pushed =
            Images::push_on_base(&registry, &format!("tool-a/app{i}"), "latest", &top).await;
        let reference = format!("{host}/{}:{}", pushed.path, pushed.tag);
        bodies.push(Bytes::from(
            pod_review(&format!("uid-{i}"), REQUIRING, &reference).to_string(),
        ));
    }
    let filling = Instant::now();
    let filled = run_once(webhook.listen, &connector, &bodies, 4).await?;
    let filled_in = filling.elapsed();
    let cache = (
        webhook.metric("byoc_webhook_registry_cache_bytes").await?,
        webhook
            .metric("byoc_webhook_registry_cache_lookups_total{result=\"miss\"}")
            .await?,
    );
    let rss_filled = (webhook.rss_kib()?, webhook.hwm_kib()?);
    eprintln!(
        "{} images reviewed once in {filled_in:?} ({filled} refused), cache {cache:?}, RSS {rss_filled:?} KiB",
        args.images
    );

    // Pod creation through the API server.
    let ns = "bench-pods";
    ensure_namespace(&client, ns).await?;
    let mut phases: [(&str, Vec<Latencies>); 3] = [
        ("no admission check", Vec::new()),
        ("byoc-webhook", Vec::new()),
        ("CEL ValidatingAdmissionPolicy", Vec::new()),
    ];
    for repeat in 0..args.repeats * usize::from(args.pods > 0) {
        for (i, (phase, results)) in phases.iter_mut().enumerate() {
            match i {
                0 => remove_admission(&client, NAME).await?,
                1 => register_webhook(&client, webhook.listen, &pki.ca_pem).await?,
                _ => register_cel_policy(&client, NAME).await?,
            }
            wait_for_enforcement(&client, ns, i != 0)
                .await
                .map_err(anyhow::Error::msg)?;
            let image = format!("{PLATFORM}/toolforge-python311-sssd-base:latest");
            let pods = (0..args.pods).map(|i| bench::pod(&format!("bench-{i}"), &image));
            let r = bench::create_pods(&client, ns, pods).await?;
            eprintln!(
                "pods {repeat} {phase}: p50 {:.3} ms p99 {:.3} ms",
                r.p50_ms(),
                r.p99_ms()
            );
            results.push(r);
            Api::<Pod>::namespaced(client.clone(), ns)
                .delete_collection(&DeleteParams::default(), &ListParams::default())
                .await?;
        }
    }
    remove_admission(&client, NAME).await?;
    webhook.stop();

    print_report(
        &args, creation, ready, cached, rss_ready, rss_after, hwm, &load, &phases,
    );
    if args.images > 0 {
        let rate = |l: &Latency| l.rate;
        let p99 = |l: &Latency| l.latencies.p99_ms();
        println!("\n| HTTPS keep-alive, 1 connection, same pod | reviews/s | p99 |\n|---|---|---|");
        for (what, series) in &requirement {
            println!(
                "| {what} | {:.0} | {:.3} ms |",
                median(series.iter().map(rate).collect()),
                median(series.iter().map(p99).collect()),
            );
        }
        // Ratios within each repeat (the two series of a repeat run back to back).
        let ratio = |f: fn(&Latency) -> f64| {
            let pairs = requirement[0].1.iter().zip(&requirement[1].1);
            median(pairs.map(|(a, b)| f(b) / f(a)).collect())
        };
        println!(
            "| builtOn / name-only (median of the repeats' ratios) | {:.3} | {:.3} |",
            ratio(rate),
            ratio(p99)
        );
        println!(
            "\n{} distinct images reviewed once (4 connections) in {:.2} s, {filled} refused; \
             registry cache {:.1} MiB after {} misses; webhook RSS {:.1} MiB (peak {:.1} MiB)",
            args.images,
            filled_in.as_secs_f64(),
            cache.0 / 1_048_576.0,
            cache.1,
            rss_filled.0 as f64 / 1024.0,
            rss_filled.1 as f64 / 1024.0
        );
    }
    Ok(())
}

/// Namespaces granted the loopback registry by name, and with `builtOn` its base.
const PLAIN: &str = "tool-bench-plain";
const REQUIRING: &str = "tool-bench-req";

/// Posts each of `bodies` once over `connections` keep-alive connections; how many were
/// refused.
async fn run_once(
    addr: SocketAddr,
    connector: &TlsConnector,
    bodies: &[Bytes],
    connections: usize,
) -> Result<usize> {
    let chunk = bodies.len().div_ceil(connections.max(1)).max(1);
    let mut tasks = Vec::new();
    for part in bodies.chunks(chunk) {
        let (connector, part) = (connector.clone(), part.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(addr, &connector).await?;
            let mut refused = 0;
            for body in part {
                let answer = post(&mut sender, body).await?;
                let review: Value = serde_json::from_slice(&answer)?;
                refused += usize::from(review["response"]["allowed"] != json!(true));
            }
            anyhow::Ok(refused)
        }));
    }
    let mut refused = 0;
    for task in tasks {
        refused += task.await??;
    }
    Ok(refused)
}

#[allow(clippy::too_many_arguments)]
fn print_report(
    args: &Args,
    creation: Duration,
    ready: Duration,
    cached: f64,
    rss_ready: u64,
    rss_after: u64,
    hwm: u64,
    load: &[(usize, Vec<Latency>)],
    phases: &[(&str, Vec<Latencies>)],
) {
    let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1000.0);
    let median_of = |v: &[Latency], f: fn(&Latency) -> f64| median(v.iter().map(f).collect());
    let median_ms = |v: &[Latencies], f: fn(&Latencies) -> f64| median(v.iter().map(f).collect());
    println!("\n### Results ({} repeats, medians)\n", args.repeats);
    println!("| what | value |\n|---|---|");
    println!(
        "| namespaces created (API server) | {} in {:.1} s |",
        args.namespaces,
        creation.as_secs_f64()
    );
    println!(
        "| start to ready, {cached} namespaces cached | {} |",
        ms(ready)
    );
    println!("| RSS when ready | {:.1} MiB |", rss_ready as f64 / 1024.0);
    println!(
        "| RSS after the load runs (peak) | {:.1} MiB ({:.1} MiB) |",
        rss_after as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    let failed: usize = load.iter().flat_map(|(_, s)| s).map(|l| l.errors).sum();
    println!("| failed review requests | {failed} |");
    println!(
        "\n| HTTPS keep-alive load | reviews/s | p50 | p99 | webhook CPU per review | client CPU per review |\n|---|---|---|---|---|---|"
    );
    let cpu = |l: &Latency, client: bool| {
        l.cpu_per_request
            .map_or(0.0, |(s, c)| if client { c } else { s }.as_secs_f64() * 1e6)
    };
    for (connections, series) in load {
        println!(
            "| {connections} connection(s) | {:.0} | {:.3} ms | {:.3} ms | {:.0} µs | {:.0} µs |",
            median_of(series, |l| l.rate),
            median_of(series, |l| l.latencies.p50_ms()),
            median_of(series, |l| l.latencies.p99_ms()),
            median(series.iter().map(|l| cpu(l, false)).collect()),
            median(series.iter().map(|l| cpu(l, true)).collect()),
        );
    }
    if phases[0].1.is_empty() {
        return;
    }
    println!("\n| pod create through the API server | p50 | p99 |\n|---|---|---|");
    let base = median_ms(&phases[0].1, Latencies::p99_ms);
    for (phase, results) in phases {
        let p99 = median_ms(results, Latencies::p99_ms);
        println!(
            "| {phase} | {:.2} ms | {:.2} ms ({:+.2} ms) |",
            median_ms(results, Latencies::p50_ms),
            p99,
            p99 - base
        );
    }
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("byoc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

// ---------------------------------------------------------------------------------------------
// Namespaces

async fn create_namespaces(client: &Client, n: usize) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let mut labels = json!({"toolforge": "tool"});
                if i.is_multiple_of(10) {
                    labels["byoc.toolforge.org/quay.io"] = json!("never");
                }
                let ns: Namespace = serde_json::from_value(json!({
                    "metadata": {"name": format!("tool-bench-{i:05}"), "labels": labels}
                }))?;
                match api.create(&PostParams::default(), &ns).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                    Err(e) => Err(anyhow::Error::new(e)),
                }
            }
        })
        .buffer_unordered(32)
        .try_collect::<()>()
        .await
}

async fn ensure_namespace(client: &Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    // Pods need the namespace's default ServiceAccount, made by kube-controller-manager.
    let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), name);
    for _ in 0..600 {
        if sa.get_opt("default").await?.is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("namespace {name} has no default ServiceAccount after 60s")
}

// ---------------------------------------------------------------------------------------------
// The webhook process

struct Pki {
    ca_pem: String,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new(dir: &std::path::Path) -> Result<Self> {
        let mut ca = CertificateParams::new(Vec::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
        let key = KeyPair::generate()?;
        let cert =
            CertificateParams::new(vec!["127.0.0.1".to_owned()])?.signed_by(&key, &issuer)?;
        let pki = Self {
            ca_pem: issuer.pem(),
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        std::fs::write(&pki.cert, cert.pem())?;
        std::fs::write(&pki.key, key.serialize_pem())?;
        Ok(pki)
    }

    fn connector(&self) -> Result<TlsConnector> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert?)?;
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsConnector::from(Arc::new(config)))
    }
}

struct WebhookProcess {
    child: Child,
    listen: SocketAddr,
    admin: SocketAddr,
    started: Instant,
}

impl WebhookProcess {
    fn start(
        dir: &std::path::Path,
        pki: &Pki,
        config: &std::path::Path,
        log_level: &str,
    ) -> Result<Self> {
        let binary = build_webhook()?;
        let (listen, admin) = (free_port()?, free_port()?);
        let log = std::fs::File::create(dir.join("webhook.log"))?;
        let started = Instant::now();
        let child = Command::new(binary)
            .arg(format!("--listen={listen}"))
            .arg(format!("--admin-addr={admin}"))
            .arg("--tls-cert")
            .arg(&pki.cert)
            .arg("--tls-key")
            .arg(&pki.key)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", log_level)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(Self {
            child,
            listen,
            admin,
            started,
        })
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<Duration> {
        while self.started.elapsed() < timeout {
            if let Ok((200, _)) = http_get(self.admin, "/readyz").await {
                return Ok(self.started.elapsed());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("byoc-webhook exited with {status}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        bail!("byoc-webhook not ready after {timeout:?}")
    }

    async fn metric(&self, name: &str) -> Result<f64> {
        let (_, body) = http_get(self.admin, "/metrics").await?;
        Ok(body
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0))
    }

    fn status_kib(&self, field: &str) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix(field)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
            .with_context(|| format!("no {field} in /proc/PID/status"))
    }

    fn rss_kib(&self) -> Result<u64> {
        self.status_kib("VmRSS:")
    }

    fn hwm_kib(&self) -> Result<u64> {
        self.status_kib("VmHWM:")
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn build_webhook() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--message-format=json",
            "-p",
            "byoc-webhook",
            "--bin",
            "byoc-webhook",
        ])
        .stderr(Stdio::inherit())
        .output()?;
    ensure!(
        out.status.success(),
        "cargo build --release -p byoc-webhook failed"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|m| Some(PathBuf::from(m.get("executable")?.as_str()?)))
        .context("cargo reported no byoc-webhook executable")
}

/// User plus system CPU time of process `pid` so far (/proc/PID/stat, 100 ticks a second).
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses: state is field 3, utime 14.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("/proc/PID/stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks =
        |i: usize| -> Result<u64> { Ok(fields.get(i - 3).context("/proc/PID/stat")?.parse()?) };
    Ok(Duration::from_millis((ticks(14)? + ticks(15)?) * 10))
}

fn free_port() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    s.read_to_string(&mut response).await?;
    let code = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

// ---------------------------------------------------------------------------------------------
// Load

/// One load run: its latencies, rate and errors.
struct Latency {
    latencies: Latencies,
    rate: f64,
    errors: usize,
    /// CPU time per request of the webhook process and of this client, when measured.
    cpu_per_request: Option<(Duration, Duration)>,
}

impl Latency {
    fn of(samples: Vec<Duration>, elapsed: Duration, errors: usize) -> Self {
        Self {
            rate: samples.len() as f64 / elapsed.as_secs_f64(),
            latencies: Latencies::new(samples),
            errors,
            cpu_per_request: None,
        }
    }
}

/// Pod reviews as the API server sends them for pods made by a ReplicaSet, across the cached
/// namespaces: four in five admitted (platform or granted images), one in five denied.
fn reviews(namespaces: usize) -> Vec<Bytes> {
    (0..1000)
        .map(|i| {
            // Namespaces divisible by 10 carry a quay.io grant.
            let ns = format!("tool-bench-{:05}", (i * 7919) % namespaces.max(1));
            let granted = ((i * 7919) % namespaces.max(1)).is_multiple_of(10);
            let image = match i % 5 {
                0 => "ghcr.io/someone/bot:latest".to_owned(),
                1 if granted => "quay.io/wikibugs/bot:2.4.1".to_owned(),
                _ => format!("{PLATFORM}/toolforge-python311-sssd-base:latest"),
            };
            Bytes::from(pod_review(&format!("uid-{i}"), &ns, &image).to_string())
        })
        .collect()
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A keep-alive HTTPS connection to the webhook.
async fn connect(addr: SocketAddr, connector: &TlsConnector) -> Result<Sender> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let tls = connector
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Posts one review; the answer's body, or an error for a status other than 200.
async fn post(sender: &mut Sender, body: Bytes) -> Result<Bytes> {
    let request = Request::post("/validate")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(body))?;
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let answer = response.into_body().collect().await?.to_bytes();
    ensure!(status.is_success(), "HTTP {status}");
    Ok(answer)
}

async fn run_load(
    addr: SocketAddr,
    connector: &TlsConnector,
    bodies: &Arc<Vec<Bytes>>,
    connections: usize,
    duration: Duration,
) -> Result<Latency> {
    let started = Instant::now();
    let until = started + duration;
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (connector, bodies) = (connector.clone(), bodies.clone());
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(addr, &connector).await?;
            let mut samples = Vec::with_capacity(200_000);
            let mut errors = 0;
            let mut i = c * 997;
            while Instant::now() < until {
                let body = bodies[i % bodies.len()].clone();
                i += 1;
                let sent = Instant::now();
                let answer = post(&mut sender, body).await;
                samples.push(sent.elapsed());
                if !answer.is_ok_and(|a| a.starts_with(b"{\"apiVersion\":\"admission.k8s.io/v1\""))
                {
                    errors += 1;
                }
            }
            anyhow::Ok((samples, errors))
        }));
    }
    let mut samples = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (s, e) = task.await??;
        samples.extend(s);
        errors += e;
    }
    Ok(Latency::of(samples, started.elapsed(), errors))
}

// ---------------------------------------------------------------------------------------------
// Pod creation through the API server

async fn register_webhook(client: &Client, listen: SocketAddr, ca_pem: &str) -> Result<()> {
    remove_admission(client, NAME).await?;
    let rule = |group: &str, resources: &[&str]| json!({"apiGroups": [group], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": resources, "scope": "Namespaced"});
    replace(&admission_api(client, "ValidatingWebhookConfiguration"), json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": NAME},
        "webhooks": [{
            "name": "pods.byoc.toolforge.org",
            "clientConfig": {"url": format!("https://{listen}/validate"), "caBundle": k8s_openapi::ByteString(ca_pem.as_bytes().to_vec())},
            "rules": [rule("", &["pods", "pods/ephemeralcontainers", "replicationcontrollers", "podtemplates"]),
                      rule("apps", &["deployments", "replicasets", "statefulsets", "daemonsets"]),
                      rule("batch", &["jobs", "cronjobs"])],
            "namespaceSelector": not_exempt(),
            "failurePolicy": "Fail", "sideEffects": "None", "timeoutSeconds": 5, "admissionReviewVersions": ["v1"],
        }],
    }))
    .await?;
    Ok(())
}

//! `byoc-webhook`: the validating admission webhook process. HTTPS admission on `--listen`,
//! `/healthz`, `/readyz` and `/metrics` on `--admin-addr`; ready once the namespace cache has
//! synced, and not while its watch has been failing for `--watch-unhealthy-after`; SIGINT/SIGTERM drain requests in flight, then exit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum_server::Handle;
use byoc_policy::Config;
use byoc_registry::{Lookups, lookups};
use byoc_runtime::logging::{self, LogFormat};
use byoc_runtime::{AdminServer, Readiness, Shutdown, connections};
use byoc_webhook::health::WatchHealth;
use byoc_webhook::tls::Reload;
use byoc_webhook::{CertFiles, CertResolver, Metrics, Webhook, cache, metrics, server};
use clap::Parser;
use prometheus_client::registry::Registry;
use rustls::crypto::CryptoProvider;

/// Validating admission webhook enforcing the byoc registry policy.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Policy configuration (YAML, see byoc-policy's Config); built-in defaults when absent.
    #[arg(long, env = "BYOC_WEBHOOK_CONFIG")]
    config: Option<PathBuf>,
    /// HTTPS address for AdmissionReviews.
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Plain-HTTP address for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    admin_addr: SocketAddr,
    /// PEM certificate chain served on --listen; re-read when it changes.
    #[arg(long, env = "BYOC_WEBHOOK_TLS_CERT")]
    tls_cert: PathBuf,
    /// PEM private key of --tls-cert; re-read when it changes.
    #[arg(long, env = "BYOC_WEBHOOK_TLS_KEY")]
    tls_key: PathBuf,
    /// How often the certificate files are checked for changes (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    tls_reload_interval: Duration,
    /// Most HTTPS connections open at once; more are closed as soon as they are accepted. The
    /// API servers keep a few each; the rest is headroom against floods of clients.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Most HTTPS connections open at once from one source address (IPv4, or IPv6 address);
    /// more are closed on accept. Each API server needs at most as many as it sends reviews at
    /// once; the cap keeps one client from taking the slots of the others.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_source: u32,
    /// How long a connection serves requests: the first answer after it carries
    /// `Connection: close` and the connection closes once that answer is written (the client
    /// reconnects for its next request), so no client holds a connection forever.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    max_connection_age: Duration,
    /// How long the namespace watch may keep failing before the webhook reports not ready:
    /// its grants may be stale, so the Service stops sending it reviews while the other
    /// replicas answer. Ready again as soon as the API server answers the watch.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    watch_unhealthy_after: Duration,
    /// How long a connection may wait for the whole head of its next request; idle keep-alive
    /// connections and slow request heads are closed after it. Keep it longer than the API
    /// server's idle timeout (90 s), so that the API server closes idle connections first and
    /// never sends a review on a connection the webhook is closing.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Bytes of request bodies read and parsed at once (e.g. 16Mi); a quarter is kept for
    /// bodies up to 64 KiB, so ordinary reviews never queue behind large ones. Peak memory is
    /// a small multiple of it (docs/benchmarks.md).
    #[arg(long, default_value = "16Mi", value_parser = parse_bytes)]
    body_budget: usize,
    /// How long a request waits for its share of --body-budget before it is refused as busy;
    /// keep it under the webhook's timeoutSeconds (5 s).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    body_budget_wait: Duration,
    /// How long requests in flight may take to finish after SIGTERM.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    shutdown_grace: Duration,
    /// Log line format.
    #[arg(long, value_enum, default_value_t)]
    log_format: LogFormat,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 5s or 500ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{text:?} is not a duration like 5s or 500ms")),
    }
}

fn parse_bytes(text: &str) -> Result<usize, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let shift = match unit {
        "" => 0,
        "Ki" => 10,
        "Mi" => 20,
        _ => {
            return Err(format!(
                "{text:?} is not a size like 16Mi, 512Ki or 1048576"
            ));
        }
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} is not a size like 16Mi, 512Ki or 1048576"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    logging::init(args.log_format);
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    // One crypto provider for the process: the kube client and the server both use it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let provider = CryptoProvider::get_default()
        .context("no rustls crypto provider")?
        .clone();

    let config = Config::read(args.config.as_deref())?;
    let open_files = connections::raise_open_files_limit()
        .context("cannot raise the open-files limit to its hard limit")?;
    let max_connections = connections::fit_connections(args.max_connections as usize, open_files);
    if max_connections < args.max_connections as usize {
        tracing::warn!(
            max_connections,
            open_files = open_files.now,
            "--max-connections={} does not fit the open-files limit; serving at most {max_connections}",
            args.max_connections
        );
    }
    let files = CertFiles {
        cert: args.tls_cert.clone(),
        key: args.tls_key.clone(),
    };
    let resolver = CertResolver::load(files, provider)?;
    let tls = resolver.server_config()?;

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let readiness = Readiness::default();
    let shutdown = Shutdown::on_signals().context("cannot handle signals")?;

    let health = WatchHealth::new(Instant::now());
    metrics::register_watch(&mut registry, &health);
    let client = kube::Config::infer()
        .await
        .map_err(anyhow::Error::new)
        .and_then(|config| Ok(cache::client(config, &health)?))
        .context("cannot configure the kube client")?;
    let (namespaces, watch) = cache::watch(client, health.clone(), metrics.clone());
    let tolerance = args.watch_unhealthy_after;
    readiness.require(move || health.check(Instant::now(), tolerance));

    let admin = AdminServer::bind(args.admin_addr, readiness.clone(), registry)
        .await
        .with_context(|| format!("cannot listen on {}", args.admin_addr))?;
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        admin = %admin.local_addr()?,
        mode = %config.mode,
        open_files = open_files.now,
        "starting"
    );

    // A client that cannot be set up (no system roots, an unreadable credentials file) does not
    // stop the webhook: images that need no lookup are unaffected, and those that do are
    // refused with the reason (or admitted with a warning under failureMode allow).
    let registry_client = lookups::client(&config, None).map_err(|error| {
        tracing::error!(%error, "registry lookups are not available");
        error.to_string()
    });
    let lookups = Lookups::new(&config, registry_client, metrics.clone());
    let webhook = Webhook::new(config, namespaces.clone(), lookups, metrics.clone())
        .with_budget(args.body_budget, args.body_budget_wait);
    let webhook = Arc::new(webhook);
    let handle = Handle::new();
    let mut server = tokio::spawn(server::serve(
        listener,
        tls,
        server::Limits {
            max_connections,
            max_connections_per_source: args.max_connections_per_source as usize,
            max_connection_age: args.max_connection_age,
            idle_timeout: args.idle_timeout,
        },
        webhook,
        handle.clone(),
    ));
    let admin = tokio::spawn(admin.serve(shutdown.clone()));
    let reload = resolver.watch(args.tls_reload_interval, move |outcome| {
        metrics.reload(outcome);
        match outcome {
            Reload::Reloaded => tracing::info!("serving the new certificate"),
            Reload::Failed(error) => {
                tracing::warn!(%error, "certificate files changed but cannot be served; keeping the previous certificate");
            }
        }
    });
    let background = tokio::spawn(async move { tokio::join!(watch, reload) });

    tokio::select! {
        synced = namespaces.synced() => {
            synced.context("the namespace cache stopped")?;
            readiness.set(true);
            tracing::info!(namespaces = namespaces.len(), after = ?started.elapsed(), "ready");
        }
        () = shutdown.wait() => {}
        ended = &mut server => return Err(stopped(ended)),
    }
    tokio::select! {
        () = shutdown.wait() => {}
        ended = &mut server => {
            shutdown.trigger();
            return Err(stopped(ended));
        }
    }

    readiness.set(false);
    handle.graceful_shutdown(Some(args.shutdown_grace));
    let served = server.await;
    background.abort();
    admin
        .await
        .context("admin server task")?
        .context("admin server")?;
    served
        .context("webhook server task")?
        .context("webhook server")?;
    tracing::info!("stopped");
    Ok(())
}

fn stopped(ended: Result<std::io::Result<()>, tokio::task::JoinError>) -> anyhow::Error {
    match ended {
        Ok(Ok(())) => anyhow::anyhow!("the webhook server stopped unexpectedly"),
        Ok(Err(e)) => anyhow::Error::new(e).context("webhook server"),
        Err(e) => anyhow::Error::new(e).context("webhook server task"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1h").is_err());
        assert_eq!(parse_bytes("16Mi"), Ok(16 << 20));
        assert_eq!(parse_bytes("512Ki"), Ok(512 << 10));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("1G").is_err());
    }

    #[test]
    fn flags() {
        use clap::CommandFactory;
        Args::command().debug_assert();
        let args =
            Args::try_parse_from(["byoc-webhook", "--tls-cert", "c", "--tls-key", "k"]).unwrap();
        assert_eq!(args.listen, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(args.admin_addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(args.max_connections, 4096);
        assert_eq!(args.idle_timeout, Duration::from_secs(120));
        assert_eq!(args.body_budget, 16 << 20);
        assert_eq!(args.max_connections_per_source, 512);
        assert_eq!(args.max_connection_age, Duration::from_secs(600));
        assert_eq!(args.watch_unhealthy_after, Duration::from_secs(30));
        let zero = [
            "byoc-webhook",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--max-connections",
            "0",
        ];
        assert!(Args::try_parse_from(zero).is_err());
    }
}

//! `byoc-controller`: turns ByocGrants into namespace labels. See the crate docs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use byoc_controller::leader::LeaseSettings;
use byoc_controller::{Settings, run};
use byoc_policy::Config;
use byoc_runtime::Shutdown;
use byoc_runtime::logging::{self, LogFormat};
use clap::Parser;
use tracing::{error, info};

/// Turns ByocGrants into `byoc.toolforge.org/` namespace labels. Uses the in-cluster service
/// account, or `KUBECONFIG` outside a cluster.
#[derive(Debug, Parser)]
#[command(name = "byoc-controller", version, about)]
struct Args {
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    #[arg(long, env = "BYOC_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    admin_addr: SocketAddr,

    /// The namespace of the leader-election Lease `byoc-controller`.
    #[arg(long, env = "POD_NAMESPACE", default_value = "byoc-system")]
    lease_namespace: String,

    /// This replica's identity in the Lease (default: `POD_NAME`, else host name and pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    /// Seconds a leader's lease lasts without renewal; a standby takes over after it.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=3600))]
    lease_duration: u64,

    /// How many reconciles of each kind (grants, namespaces) may run at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,

    /// Keep a PolicyReport (`wgpolicyk8s.io/v1alpha2`, `byoc-registry-policy`) per non-exempt
    /// namespace: the inventory of its workloads' images and whether the policy allows them.
    /// Needs the PolicyReport CRD.
    #[arg(long, env = "BYOC_REPORTS")]
    reports: bool,

    /// How many namespaces and registries get metric series of their own (`byoc_workloads`,
    /// `byoc_images_in_use`), first come; the rest are summed under the label value `other`, so
    /// that tenants cannot grow the number of series.
    #[arg(long, default_value_t = byoc_runtime::cardinality::DEFAULT_LIMIT as u32,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    metrics_label_limit: u32,

    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,

    /// Policy configuration (YAML, the webhook's): the controller reads its `expiryWarning`
    /// and `defaultGrantRequirements`, and the reports judge with it. Built-in defaults when absent.
    #[arg(long, env = "BYOC_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    logging::init(args.log_format);
    // kube's TLS uses the process-wide rustls provider: ring, as everywhere in this workspace.
    let _ = rustls::crypto::ring::default_provider().install_default();

    match byoc_runtime::connections::raise_open_files_limit() {
        Ok(files) => info!(before = files.before, now = files.now, "open-files limit"),
        Err(e) => {
            error!(error = %e, "cannot raise the open-files limit to its hard limit");
            return ExitCode::FAILURE;
        }
    }
    let config = match Config::read(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "cannot use the policy configuration");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = match Shutdown::on_signals() {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "cannot configure the Kubernetes client");
            return ExitCode::FAILURE;
        }
    };
    let settings = Settings {
        admin_addr: args.admin_addr,
        lease: LeaseSettings {
            namespace: args.lease_namespace,
            name: "byoc-controller".to_owned(),
            identity: args.identity.unwrap_or_else(default_identity),
            duration_secs: args.lease_duration,
        },
        concurrency: args.concurrency,
        expiry_warning: config.expiry_warning,
        default_requirements: config.default_grant_requirements.clone(),
        reports: args.reports.then_some(config),
        metrics_label_limit: args.metrics_label_limit as usize,
    };
    match run(client, settings, shutdown).await {
        Ok(()) => {
            info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!(error = %e, "controller failed");
            ExitCode::FAILURE
        }
    }
}

/// `HOSTNAME-PID`: unique per process on one machine, and the pod name in a cluster.
fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "byoc-controller".to_owned());
    format!("{host}-{}", std::process::id())
}

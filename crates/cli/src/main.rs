//! `kubectl-byoc`: the byoc-operator kubectl plugin. Installed on PATH it runs as
//! `kubectl byoc ...`.

mod allowlist;
mod approve;
mod audit;
mod check;
mod cluster;
mod completion;
mod doctor;
mod duration;
mod grant;
mod images;
mod import;
mod list;
mod manifest;
mod output;
mod request;
mod revoke;
mod table;

use std::future::Future;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum, ValueHint};
use thiserror::Error;

/// Bring-your-own-container grants for Kubernetes namespaces.
#[derive(Parser)]
#[command(
    name = "kubectl-byoc",
    bin_name = "kubectl byoc",
    version,
    about,
    after_help = "Examples:\n  \
    kubectl byoc check deploy.yaml\n  \
    kubectl byoc grant tool-wikibugs --reason 'T302863' --registry quay.io --expires 90d\n  \
    kubectl byoc list\n  \
    kubectl byoc revoke tool-wikibugs\n  \
    kubectl byoc request --registry quay.io/wikibugs --reason 'T302863' --duration 90d\n  \
    kubectl byoc requests -A\n  \
    kubectl byoc approve -n tool-wikibugs byoc-x7k2p --registry quay.io/wikibugs --expires 90d\n  \
    kubectl byoc audit -o json\n  \
    kubectl byoc images -A --registry quay.io\n  \
    kubectl byoc import-configmap --configmap tools-system/byoc-allowlist --dry-run\n  \
    kubectl byoc doctor\n\n\
    Cluster commands read the kubeconfig like kubectl ($KUBECONFIG, --kubeconfig, --context). \
    Exit status: 0 success, 1 the command's negative answer (something refused, nothing to \
    revoke, ...), 2 bad usage, input or API error. See `kubectl byoc COMMAND --help`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check manifests offline against the registry policy, exactly as the webhook would.
    ///
    /// Exit status: 0 when everything is admitted, 1 when something is refused (with `-o text`
    /// stdout then holds exactly one line per refused container or change), 2 on bad usage or
    /// input.
    #[command(after_help = "Examples:\n  \
        kubectl byoc check deploy.yaml\n  \
        kubectl byoc check --namespace tool-wikibugs --grant grant.yaml deploy.yaml\n  \
        helm template ./chart | kubectl byoc check -o json -\n  \
        kubectl byoc check --allowed-registry quay.io --now 2027-04-01T00:00:00Z review.json\n  \
        kubectl byoc check --config policy.yaml --grant grant.yaml --registry-offline deploy.yaml\n\n\
        Images allowed by name whose grant or platform requirements (builtOn, requireDigest, \
        sourceFrom) need registry answers are checked against the registry as the webhook \
        checks them (registryLookups of --config), unless --registry-offline.")]
    Check {
        /// Policy configuration file (YAML, as the webhook reads it).
        #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
        config: Option<String>,
        /// An allowed registry, `host[:port][/path-prefix]`; replaces the configured defaults.
        #[arg(long = "allowed-registry", value_name = "REGISTRY")]
        allowed_registries: Vec<String>,
        /// Namespace of objects that name none.
        #[arg(long, short = 'n', default_value = "default", value_name = "NS")]
        namespace: String,
        /// ByocGrant manifests, applied as if the controller had reconciled them at --now.
        #[arg(long = "grant", value_name = "FILE", value_hint = ValueHint::FilePath)]
        grants: Vec<String>,
        /// The evaluation time, RFC 3339 (default: now); decides which grants have expired.
        #[arg(long, value_name = "RFC3339")]
        now: Option<String>,
        /// Ask no registry: every container whose image needs a registry lookup to check a
        /// requirement is refused, naming the container, the image and the requirement.
        #[arg(long = "registry-offline")]
        registry_offline: bool,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        /// Manifests, read as `kubectl apply -f` reads them: YAML or JSON, multi-document; Pods,
        /// workloads, PodTemplates, list objects (`List`, `PodList`, ...) and AdmissionReviews.
        /// YAML merge keys and repeated keys are refused. `-` reads standard input.
        #[arg(value_name = "FILE", value_hint = ValueHint::FilePath, required = true)]
        files: Vec<String>,
    },
    /// Grant a namespace the use of more registries (creates or updates a ByocGrant; --renew
    /// lets it apply to a namespace deleted and created again).
    Grant(grant::GrantArgs),
    /// Revoke the grants of a namespace, or one grant by name.
    Revoke(revoke::RevokeArgs),
    /// List grants with the time they have left and whether they are applied.
    List(list::ListArgs),
    /// Ask the platform admins for a grant for a namespace (creates a ByocRequest).
    Request(request::RequestArgs),
    /// List ByocRequests, pending first.
    Requests(request::RequestsArgs),
    /// Approve a ByocRequest: create its ByocGrant (possibly narrower) and mark it Approved.
    Approve(approve::ApproveArgs),
    /// Deny a ByocRequest, saying why.
    Deny(approve::DenyArgs),
    /// List running pods and workloads that the registry policy would refuse now.
    Audit(audit::AuditArgs),
    /// List the images in use: registry, namespaces, workloads and the grant that allows each.
    Images(images::ImagesArgs),
    /// Turn a legacy allow-list ConfigMap (one namespace per line) into ByocGrants.
    ImportConfigmap(import::ImportArgs),
    /// Check the policy's prerequisite: Pod Security baseline or stricter enforced on every
    /// namespace that is not exempt.
    Doctor(doctor::DoctorArgs),
    /// Print a shell completion script.
    #[command(after_help = "Examples:\n  \
        kubectl-byoc completion bash > /etc/bash_completion.d/kubectl-byoc\n  \
        kubectl-byoc completion zsh > \"${fpath[1]}/_kubectl-byoc\"\n  \
        kubectl-byoc completion fish > ~/.config/fish/completions/kubectl-byoc.fish\n\n\
        The scripts complete the `kubectl-byoc` command. For `kubectl byoc <TAB>` (kubectl 1.26 \
        or later, any shell kubectl completes), put an executable script named \
        kubectl_complete-byoc on PATH:\n  \
        #!/bin/sh\n  \
        exec kubectl-byoc __complete \"$@\"")]
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Completion candidates in cobra's format, for kubectl's plugin completion.
    #[command(name = "__complete", hide = true)]
    Complete {
        /// The words after `kubectl byoc`, the last one being completed.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// One line per refused container on stdout; a summary on stderr.
    Text,
    /// A JSON report on stdout.
    Json,
}

/// Why a command could not do its job (exit status 2).
#[derive(Debug, Error)]
pub enum Failure {
    /// Bad arguments or configuration.
    #[error("{0}")]
    Usage(String),
    /// A manifest that cannot be read.
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    /// The cluster cannot be reached, or refused a request.
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check {
            config,
            allowed_registries,
            namespace,
            grants,
            now,
            registry_offline,
            output,
            files,
        } => check::Check::new(
            config.as_deref(),
            &allowed_registries,
            namespace,
            &grants,
            now.as_deref(),
            registry_offline,
        )
        .and_then(|check| check.run(&files, output)),
        Command::Grant(args) => block_on(grant::run(args)),
        Command::Revoke(args) => block_on(revoke::run(args)),
        Command::List(args) => block_on(list::run(args)),
        Command::Request(args) => block_on(request::run_request(args)),
        Command::Requests(args) => block_on(request::run_requests(args)),
        Command::Approve(args) => block_on(approve::run_approve(args)),
        Command::Deny(args) => block_on(approve::run_deny(args)),
        Command::Audit(args) => block_on(audit::run(args)),
        Command::Images(args) => block_on(images::run(args)),
        Command::ImportConfigmap(args) => block_on(import::run(args)),
        Command::Doctor(args) => block_on(doctor::run(args)),
        Command::Completion { shell } => {
            output::emit(&completion::script(shell, Cli::command())).map(|()| true)
        }
        Command::Complete { words } => {
            output::emit(&completion::kubectl_candidates(Cli::command(), &words)).map(|()| true)
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs a cluster command on a Tokio runtime.
fn block_on(command: impl Future<Output = Result<bool, Failure>>) -> Result<bool, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Usage(format!("cannot start the async runtime: {e}")))?
        .block_on(command)
}

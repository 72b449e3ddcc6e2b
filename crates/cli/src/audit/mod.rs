//! `kubectl byoc audit`: which running pods and workloads the registry policy would refuse now.
//!
//! Everything is read with paginated lists (one request per page, no request per object), the
//! kinds concurrently, and checked page by page, so memory holds one page per kind plus the
//! findings.

mod progress;
mod report;
mod scan;

use std::collections::HashMap;

use byoc_api::LeanNamespace;
use byoc_policy::Allowance;
use byoc_policy::inventory::{Inventoried, Of};
use clap::{Args, ValueEnum, ValueHint};
use futures::FutureExt;
use futures::future::{LocalBoxFuture, try_join_all};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, PodTemplate, ReplicationController};
use kube::{Api, Client};

use crate::Failure;
use crate::cluster::{ClusterArgs, Context, Pages};
use crate::duration;
use crate::output::emit;
use progress::Progress;
use report::{Report, Summary};
use scan::{Auditor, Finding, Outcome, Source};

/// `audit` arguments.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    # Before switching the policy to enforce: what would break?\n  \
    kubectl byoc audit --config /etc/byoc/policy.yaml\n\n  \
    # One namespace, as JSON (the stable format of docs/cli.md)\n  \
    kubectl byoc audit -n tool-wikibugs -o json\n\n  \
    # The namespaces that run images from outside the platform registry\n  \
    kubectl byoc audit -o json | jq -r '.namespaces[].name'\n\n\
    Audited: Pods that have not finished (those being deleted too, marked terminating: they run \
    until their grace period ends), and, unless being deleted, Deployments, ReplicaSets not \
    controlled by a Deployment, StatefulSets, DaemonSets, CronJobs, Jobs not controlled by a \
    CronJob, ReplicationControllers and PodTemplates, in every namespace that is not exempt. Each is \
    judged as the webhook would judge its creation now: the configuration plus the grants the \
    namespace labels carry at this moment, whatever the configured mode. Exit status: 0 nothing \
    would be refused, 1 something would, 2 invalid input or API error.")]
pub struct AuditArgs {
    /// Audit only this namespace (default: all namespaces).
    #[arg(long, short = 'n', value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// The policy configuration file, as the webhook reads it (default: the built-in defaults).
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    config: Option<String>,
    /// Output format: the text report, or the documented JSON.
    #[arg(long, short = 'o', value_enum, default_value_t = AuditFormat::Text)]
    output: AuditFormat,
    /// Objects per list request, like kubectl's --chunk-size (0: everything at once).
    #[arg(long, value_name = "N", default_value_t = 500)]
    chunk_size: u32,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// How `audit` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AuditFormat {
    /// Refused objects grouped by namespace, with the grant that would fix each.
    Text,
    /// JSON, as documented in docs/cli.md.
    Json,
}

/// Runs `audit`; `Ok(false)` when something would be refused.
pub async fn run(args: AuditArgs) -> Result<bool, Failure> {
    let config = crate::check::read_config(args.config.as_deref())?;
    let client = args.cluster.client().await?;
    let now = duration::now();
    let namespaces = read_namespaces(&client, args.namespace.as_deref(), args.chunk_size).await?;
    let mut summary = Summary::default();
    let mut allowances = HashMap::new();
    for ns in &namespaces {
        let name = ns.metadata.name.clone().unwrap_or_default();
        if config.is_exempt(&name) {
            summary.exempt_namespaces += 1;
            continue;
        }
        summary.namespaces += 1;
        let labels = ns.metadata.labels.clone().unwrap_or_default();
        let (allowance, errors) = Allowance::from_labels(&labels);
        for e in errors {
            eprintln!("warning: namespace {name}: {e} (the webhook ignores this label)");
        }
        allowances.insert(name, allowance);
    }
    let auditor = Auditor::new(&config, &allowances, now);
    let progress = Progress::new();
    let scans = Source::ALL.map(|source| {
        let scope = Scope {
            client: &client,
            namespace: args.namespace.as_deref(),
            chunk: args.chunk_size,
            auditor: &auditor,
            progress: &progress,
        };
        scope.scan(source)
    });
    let mut findings = Vec::new();
    for (source, tally) in Source::ALL.into_iter().zip(try_join_all(scans).await?) {
        if source.is_workload() {
            summary.workloads += tally.audited;
        } else {
            summary.pods += tally.audited;
        }
        summary.skipped += tally.skipped;
        for w in tally.warnings {
            eprintln!("warning: {w}");
        }
        findings.extend(tally.findings);
    }
    let report = Report::new(
        &config,
        |ns| auditor.allowance(ns).clone(),
        findings,
        summary,
        args.namespace.clone(),
        now,
    );
    match args.output {
        AuditFormat::Text => emit(&report.text())?,
        AuditFormat::Json => emit(&crate::output::ObjectFormat::Json.render(&report)?)?,
    }
    eprintln!("{}", report.summary_line());
    Ok(!report.refused)
}

/// The namespaces in scope, metadata only (read leniently: a tenant's `managedFields` time
/// must not fail the audit).
pub(crate) async fn read_namespaces(
    client: &Client,
    only: Option<&str>,
    chunk: u32,
) -> Result<Vec<LeanNamespace>, Failure> {
    let api: Api<LeanNamespace> = Api::all(client.clone());
    if let Some(name) = only {
        return match api
            .get_opt(name)
            .await
            .context(|| format!("read namespace {name}"))?
        {
            Some(ns) => Ok(vec![ns]),
            None => Err(Failure::Usage(format!("namespace {name} not found"))),
        };
    }
    let mut all = Vec::new();
    let mut pages = Pages::new(chunk);
    while let Some(lp) = pages.next_params() {
        let page = api
            .list(&lp)
            .await
            .context(|| "list namespaces".to_owned())?;
        all.extend(pages.take(page));
    }
    Ok(all)
}

/// What the scan of one kind found.
#[derive(Default)]
struct Tally {
    audited: usize,
    skipped: usize,
    findings: Vec<Finding>,
    /// Objects that cannot be judged, and what the cap on containers left out.
    warnings: Vec<String>,
}

/// What a scan reads and where it reports.
struct Scope<'a> {
    client: &'a Client,
    namespace: Option<&'a str>,
    chunk: u32,
    auditor: &'a Auditor<'a>,
    progress: &'a Progress,
}

impl<'a> Scope<'a> {
    /// Scans every object of `source` in scope.
    fn scan(self, source: Source) -> LocalBoxFuture<'a, Result<Tally, Failure>> {
        match source {
            Source::Deployment => self.scan_kind::<Deployment>().boxed_local(),
            Source::ReplicaSet => self.scan_kind::<ReplicaSet>().boxed_local(),
            Source::StatefulSet => self.scan_kind::<StatefulSet>().boxed_local(),
            Source::DaemonSet => self.scan_kind::<DaemonSet>().boxed_local(),
            Source::CronJob => self.scan_kind::<CronJob>().boxed_local(),
            Source::Job => self.scan_kind::<Job>().boxed_local(),
            Source::ReplicationController => {
                self.scan_kind::<ReplicationController>().boxed_local()
            }
            Source::PodTemplate => self.scan_kind::<PodTemplate>().boxed_local(),
            Source::Pod => self.scan_kind::<Pod>().boxed_local(),
        }
    }

    /// Lists every object of kind `K` in scope, page by page, and audits each page as it
    /// arrives. Objects are read as [`Of`] (trimmed as they stream: one object's
    /// `managedFields`, however deep, must not fail the whole list).
    async fn scan_kind<K: Inventoried + Clone + std::fmt::Debug>(self) -> Result<Tally, Failure> {
        let Self {
            client,
            namespace,
            chunk,
            auditor,
            progress,
        } = self;
        let source = K::SOURCE;
        let resource = source.resource();
        let api: Api<Of<K>> = match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let mut tally = Tally::default();
        let mut listed = 0;
        let mut pages = Pages::new(chunk);
        while let Some(lp) = pages.next_params() {
            let page = api
                .list(&lp)
                .await
                .context(|| format!("list {}", resource.plural))?;
            let items = pages.take(page);
            listed += items.len();
            for Of { object, .. } in &items {
                match auditor.audit(object) {
                    Outcome::Skipped | Outcome::Exempt => tally.skipped += 1,
                    Outcome::Admitted => tally.audited += 1,
                    Outcome::Refused(finding) => {
                        tally.audited += 1;
                        tally.warnings.extend(finding.notice.clone());
                        tally.findings.push(finding);
                    }
                    Outcome::Malformed(message) => {
                        tally.audited += 1;
                        tally.warnings.push(message);
                    }
                }
            }
            progress.page(source, listed);
        }
        progress.done(source, listed, pages.count);
        Ok(tally)
    }
}

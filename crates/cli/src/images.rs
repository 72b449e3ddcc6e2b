//! `kubectl byoc images`: every image in use, the registry it comes from, the namespaces and
//! workloads that run it, and the grant that allows it (or `platform`, or `REFUSED`): what the
//! platform team reads before a security rebuild.
//!
//! Read from the controller's PolicyReports when there are any (one list request), else from a
//! live scan judged by the same code (`byoc_policy::inventory`): the workloads and pods listed
//! page by page, trimmed as they are read. A namespace whose report left results out (to fit
//! the API server's size) is scanned live, so that no namespace that runs images lists none.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use byoc_api::labels::REQUIREMENTS_ANNOTATION;
use byoc_api::report::{
    BaseProperty, ImageProperty, OMITTED_PROPERTY, PolicyReport, REPORT_NAME, RESULTS_LEFT_OUT,
    UNJUDGED_PROPERTY,
};
use byoc_api::{ByocGrant, RegistryPattern, StoredGrant};
use byoc_policy::inventory::{Inventoried, Of, Trimmed, Verdict, judge_namespace};
use byoc_policy::requirement::base::{self, Key};
use byoc_policy::{Allowance, Config, ImageRef};
use byoc_registry::{BaseChecks, lookups};
use clap::{Args, ValueEnum, ValueHint};
use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use kube::api::ListParams;
use kube::{Api, Client};
use serde::Serialize;

use crate::Failure;
use crate::audit::read_namespaces;
use crate::check::read_config;
use crate::cluster::{self, ClusterArgs, Context, Pages};
use crate::duration;
use crate::output::{ObjectFormat, emit};
use crate::table::Table;

/// `images` arguments.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    # Every image in use, with the grant that allows it\n  \
    kubectl byoc images -A\n\n  \
    # Before rebuilding: who runs images from quay.io, and where?\n  \
    kubectl byoc images -A --registry quay.io -o wide\n\n  \
    # One namespace, as JSON (the stable format of docs/cli.md)\n  \
    kubectl byoc images -n tool-wikibugs -o json\n\n  \
    # What needs a rebuild: images on a base that is no longer current\n  \
    kubectl byoc images -A --stale\n\n\
    The inventory comes from the controller's PolicyReports (byoc-registry-policy, one per \
    namespace with workloads) when the cluster has any, else from a live scan of Deployments, \
    ReplicaSets, StatefulSets, DaemonSets, CronJobs, Jobs, ReplicationControllers and Pods, \
    judged as the reports judge them (--live forces the scan); a namespace whose report left \
    results out (or names fewer images than a result has) is scanned live; with --stale, the \
    bases of what is scanned live are looked up in the registries as the controller looks them \
    up. Images past the per-object cap of 128 are counted as unjudged. Pods count under their top-level workload. Exempt namespaces are left out. Exit status: 0, or 2 on invalid input \
    or an API error.")]
pub struct ImagesArgs {
    /// Only this namespace.
    #[arg(
        long,
        short = 'n',
        value_name = "NAMESPACE",
        conflicts_with = "all_namespaces"
    )]
    namespace: Option<String>,
    /// Every namespace (the default).
    #[arg(long, short = 'A')]
    all_namespaces: bool,
    /// Only images from this registry entry, `host[:port][/path-prefix]`, matched as the
    /// policy matches grants.
    #[arg(long, value_name = "REGISTRY")]
    registry: Option<String>,
    /// Scan the cluster even when PolicyReports exist.
    #[arg(long)]
    live: bool,
    /// Only the images that need a rebuild: built on a base that is no longer current (an
    /// older image of the base, or one the platform deprecated), with what to rebuild on.
    #[arg(long)]
    stale: bool,
    /// The policy configuration file of a live scan, as the webhook reads it (default: the
    /// built-in defaults).
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    config: Option<String>,
    /// Output format: a wider table naming every workload, or the documented JSON.
    #[arg(long, short = 'o', value_enum, value_name = "FORMAT")]
    output: Option<ImagesFormat>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// How `images` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ImagesFormat {
    /// The table with the namespaces and workloads by name.
    Wide,
    /// JSON, as documented in docs/cli.md.
    Json,
}

/// The `images -o json` document.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    /// Always `ByocImages`.
    pub kind: &'static str,
    /// The format version; fields are only added within a version.
    pub version: u32,
    /// `reports` or `live`.
    pub source: &'static str,
    /// The namespaces whose report left results out, scanned live instead (`reports` only).
    pub live_namespaces: Vec<String>,
    /// One entry per image and what allows it, by image.
    pub images: Vec<ImageEntry>,
    /// The workloads with containers past the per-object cap whose images were not read:
    /// counted, not judged, not in `images`.
    pub unjudged: Vec<UnjudgedEntry>,
}

/// A workload some of whose images the per-object cap left unread.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UnjudgedEntry {
    /// The workload.
    pub workload: WorkloadRef,
    /// How many of its containers and image volumes have images not read.
    pub containers: usize,
}

/// One image, allowed the same way everywhere it is listed.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageEntry {
    /// The image as written.
    pub image: String,
    /// The registry it resolves to; `None` when the reference does not parse.
    pub registry: Option<String>,
    /// The grant that allows it, `platform`, `REFUSED`, or `namespace labels`.
    pub allowed_by: String,
    /// The namespaces that run it.
    pub namespaces: Vec<String>,
    /// The workloads and bare pods that run it.
    pub workloads: Vec<WorkloadRef>,
    /// The base it is built on, when a base check applies to it: the base
    /// (`repository[:tag]@digest`, `unknown` or `checking`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// `current`, `older`, `deprecated`, `unknown` or `checking`, with `base`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_state: Option<String>,
    /// What to rebuild on, for `older` and `deprecated`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuild_on: Option<String>,
}

/// A workload or bare pod.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct WorkloadRef {
    /// Its namespace.
    pub namespace: String,
    /// Its kind.
    pub kind: String,
    /// Its name.
    pub name: String,
}

/// One image of one workload, whichever source it came from.
#[derive(Debug, PartialEq)]
struct Use {
    workload: WorkloadRef,
    image: ImageProperty,
}

/// What one source found: the uses, and the workloads with unjudged images.
#[derive(Debug, Default, PartialEq)]
struct Found {
    uses: Vec<Use>,
    unjudged: Vec<UnjudgedEntry>,
}

impl Found {
    fn extend(&mut self, other: Self) {
        self.uses.extend(other.uses);
        self.unjudged.extend(other.unjudged);
    }
}

/// Runs `images`.
pub async fn run(args: ImagesArgs) -> Result<bool, Failure> {
    let filter = match &args.registry {
        Some(r) => Some(
            r.parse::<RegistryPattern>()
                .map_err(|e| Failure::Usage(format!("--registry {r}: {e}")))?,
        ),
        None => None,
    };
    let client = args.cluster.client().await?;
    let namespace = args.namespace.as_deref();
    let reports = if args.live {
        Vec::new()
    } else {
        list_reports(&client, namespace).await?
    };
    let config = read_config(args.config.as_deref())?;
    // Bases are looked up live only for --stale: a plain inventory makes no registry request.
    let checks = args.stale.then(|| {
        BaseChecks::new(
            &config,
            lookups::client(&config, None).map_err(|e| e.to_string()),
        )
    });
    let live = Live {
        client: &client,
        config: &config,
        checks: checks.as_ref(),
    };
    let mut live_namespaces = Vec::new();
    let (source, found) = if reports.is_empty() {
        eprintln!("images from a live scan of the cluster (no PolicyReports found)");
        ("live", live.scan(namespace).await?)
    } else {
        eprintln!("images from the byoc-registry-policy PolicyReports");
        let (complete, incomplete): (Vec<_>, Vec<_>) = reports
            .iter()
            .partition(|r| left_out(r) == 0 && unnamed(r) == 0);
        let mut found = from_reports(complete);
        for report in incomplete {
            let ns = report.metadata.namespace.clone().unwrap_or_default();
            match left_out(report) {
                0 => eprintln!(
                    "namespace {ns}: its PolicyReport does not name {} images; scanned live",
                    unnamed(report)
                ),
                n => eprintln!(
                    "namespace {ns}: its PolicyReport left out {n} results to fit; scanned live"
                ),
            }
            found.extend(live.scan(Some(&ns)).await?);
            live_namespaces.push(ns);
        }
        ("reports", found)
    };
    if args.stale {
        // What cannot be told is said, not listed as needing a rebuild nor as current.
        let unknown: BTreeMap<&str, &str> = found
            .uses
            .iter()
            .filter_map(|u| {
                let base = u.image.base.as_ref().filter(|b| b.state == "unknown")?;
                Some((u.image.image.as_str(), base.error.as_deref().unwrap_or("")))
            })
            .collect();
        for (image, why) in unknown {
            eprintln!("{image}: its base cannot be told: {why}");
        }
    }
    let uses = found.uses.into_iter().filter(|u| {
        filter.as_ref().is_none_or(|f| matches(&u.image.image, f))
            && (!args.stale || u.image.base.as_ref().is_some_and(BaseProperty::is_stale))
    });
    let inventory = Inventory {
        kind: "ByocImages",
        version: 1,
        source,
        live_namespaces,
        images: group(uses),
        unjudged: found.unjudged,
    };
    let text = match args.output {
        Some(ImagesFormat::Json) => ObjectFormat::Json.render(&inventory)?,
        _ if args.stale => stale_table(&inventory),
        None => table(&inventory, false),
        Some(ImagesFormat::Wide) => table(&inventory, true),
    };
    emit(&text)?;
    Ok(true)
}

/// Whether `image` comes from the registry entry `filter`.
fn matches(image: &str, filter: &RegistryPattern) -> bool {
    image
        .parse::<ImageRef>()
        .is_ok_and(|r| r.is_allowed_by(filter))
}

/// The controller's reports in scope; none when the PolicyReport API is not installed.
async fn list_reports(
    client: &Client,
    namespace: Option<&str>,
) -> Result<Vec<PolicyReport>, Failure> {
    let api: Api<PolicyReport> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let lp = ListParams::default().fields(&format!("metadata.name={REPORT_NAME}"));
    match api.list(&lp).await {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Vec::new()),
        other => Ok(other.context(|| "list PolicyReports".to_owned())?.items),
    }
}

/// How many results `report` left out: what its annotation says, or what its summary counts
/// beyond its results (a report written summary-only, or edited), whichever is more.
fn left_out(report: &PolicyReport) -> usize {
    let annotated = report
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RESULTS_LEFT_OUT))
        .map_or(0, |n| n.parse().unwrap_or(1));
    let s = report.summary;
    let counted = [s.pass, s.fail, s.warn, s.error, s.skip]
        .into_iter()
        .map(|n| n as usize)
        .sum::<usize>();
    annotated.max(counted.saturating_sub(report.results.len()))
}

/// How many images the results of `report` run but do not name (past the names kept per
/// result); unreadable counts count as one.
fn unnamed(report: &PolicyReport) -> usize {
    report
        .results
        .iter()
        .filter_map(|r| r.properties.get(OMITTED_PROPERTY))
        .map(|n| n.parse().unwrap_or(1))
        .sum()
}

/// What the reports name.
fn from_reports<'r>(reports: impl IntoIterator<Item = &'r PolicyReport>) -> Found {
    let mut found = Found::default();
    for result in reports.into_iter().flat_map(|r| &r.results) {
        let images = ImageProperty::from_properties(&result.properties);
        let unjudged = result
            .properties
            .get(UNJUDGED_PROPERTY)
            .map(|n| n.parse().unwrap_or(1));
        for o in &result.resources {
            let workload = WorkloadRef {
                namespace: o.namespace.clone(),
                kind: o.kind.clone(),
                name: o.name.clone(),
            };
            if let Some(containers) = unjudged {
                found.unjudged.push(UnjudgedEntry {
                    workload: workload.clone(),
                    containers,
                });
            }
            found.uses.extend(images.iter().map(|image| Use {
                workload: workload.clone(),
                image: image.clone(),
            }));
        }
    }
    found
}

/// A live scan: the cluster, the configuration, and the base checks when bases are looked up.
struct Live<'a> {
    client: &'a Client,
    config: &'a Config,
    checks: Option<&'a BaseChecks>,
}

/// Base checks of one scan run at once (the checks pace their lookups).
const CONCURRENT_CHECKS: usize = 8;

impl Live<'_> {
    /// Lists and judges every running object in scope, as the controller's reports do; with
    /// base checks, the bases of the images a `builtOn` applies to, one check per distinct
    /// image and bases.
    async fn scan(&self, namespace: Option<&str>) -> Result<Found, Failure> {
        let (mut found, keys) = live_scan(self.client, self.config, namespace).await?;
        let Some(checks) = self.checks else {
            return Ok(found);
        };
        let distinct: BTreeSet<&Key> = keys.values().collect();
        let now = duration::now();
        let findings: BTreeMap<&Key, BaseProperty> = futures::stream::iter(distinct)
            .map(|key| async move {
                let finding = match key.0.parse::<ImageRef>() {
                    Ok(image) => checks.check(&image, &key.1, now).await,
                    Err(_) => None,
                };
                (key, finding.map(|f| f.property()))
            })
            .buffer_unordered(CONCURRENT_CHECKS)
            .filter_map(|(key, p)| async move { p.map(|p| (key, p)) })
            .collect()
            .await;
        for u in &mut found.uses {
            let at = (u.workload.namespace.clone(), u.image.image.clone());
            u.image.base = keys.get(&at).and_then(|k| findings.get(k)).cloned();
        }
        Ok(found)
    }
}

/// Lists and judges every running object in scope, as the controller's reports do; with the
/// base check each (namespace, image) needs.
async fn live_scan(
    client: &Client,
    config: &Config,
    namespace: Option<&str>,
) -> Result<(Found, BTreeMap<(String, String), Key>), Failure> {
    let now = duration::now();
    let namespaces = read_namespaces(client, namespace, 500).await?;
    let grants: Vec<ByocGrant> = match cluster::list_grants(client).await {
        Ok(all) => all
            .into_iter()
            .filter_map(|g| match g {
                StoredGrant::Readable(g) => Some(g),
                StoredGrant::Unreadable(_) => None,
            })
            .collect(),
        // Without the ByocGrant API nothing is granted: allowed images are the platform's.
        Err(cluster::ClusterError::NoCrd) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let lists = futures::try_join!(
        list::<Deployment>(client, namespace),
        list::<ReplicaSet>(client, namespace),
        list::<StatefulSet>(client, namespace),
        list::<DaemonSet>(client, namespace),
        list::<CronJob>(client, namespace),
        list::<Job>(client, namespace),
        list::<ReplicationController>(client, namespace),
        list::<Pod>(client, namespace),
    )?;
    let (a, b, c, d, e, f, g, h) = lists;
    let mut by_namespace: HashMap<String, Vec<Trimmed>> = HashMap::new();
    for object in [a, b, c, d, e, f, g, h].into_iter().flatten() {
        by_namespace
            .entry(object.namespace().to_owned())
            .or_default()
            .push(object);
    }
    let mut found = Found::default();
    let mut keys = BTreeMap::new();
    for ns in &namespaces {
        let name = ns.metadata.name.clone().unwrap_or_default();
        if config.is_exempt(&name) {
            continue;
        }
        let Some(objects) = by_namespace.get(&name) else {
            continue;
        };
        let empty = BTreeMap::new();
        let (allowance, _) = Allowance::from_labels(ns.metadata.labels.as_ref().unwrap_or(&empty));
        let verdicts = judge_namespace(config, &allowance, now, objects);
        let annotation = ns
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REQUIREMENTS_ANNOTATION));
        for key in base::keys(
            config,
            &name,
            &allowance,
            annotation.map(String::as_str),
            &verdicts,
            now,
        ) {
            keys.insert((name.clone(), key.0.clone()), key);
        }
        found.uses.extend(uses_of(&verdicts, &name, &grants, now));
        found.unjudged.extend(
            verdicts
                .iter()
                .filter(|v| v.unjudged > 0)
                .map(|v| UnjudgedEntry {
                    workload: WorkloadRef {
                        namespace: name.clone(),
                        kind: v.source.kind().to_owned(),
                        name: v.name.clone(),
                    },
                    containers: v.unjudged,
                }),
        );
    }
    Ok((found, keys))
}

/// The uses of `verdicts`, naming grants as the reports do.
fn uses_of(
    verdicts: &[Verdict],
    namespace: &str,
    grants: &[ByocGrant],
    now: Timestamp,
) -> Vec<Use> {
    verdicts
        .iter()
        .flat_map(|v| {
            v.images.iter().map(move |u| Use {
                workload: WorkloadRef {
                    namespace: namespace.to_owned(),
                    kind: v.source.kind().to_owned(),
                    name: v.name.clone(),
                },
                image: ImageProperty {
                    image: u.image.clone(),
                    registry: u.registry.clone(),
                    allowed_by: match &u.allowed_by {
                        Some(a) => a
                            .grant_name(grants, namespace, now)
                            .unwrap_or_else(|| byoc_api::report::ALLOWED_BY_LABELS.to_owned()),
                        None => byoc_api::report::ALLOWED_BY_REFUSED.to_owned(),
                    },
                    base: None,
                },
            })
        })
        .collect()
}

/// Every object of kind `K` in scope, trimmed as it is read, page by page.
async fn list<K>(client: &Client, namespace: Option<&str>) -> Result<Vec<Trimmed>, Failure>
where
    K: Inventoried + Clone + std::fmt::Debug,
{
    let api: Api<Of<K>> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut all = Vec::new();
    let mut pages = Pages::new(500);
    while let Some(lp) = pages.next_params() {
        let page = api
            .list(&lp)
            .await
            .context(|| format!("list {}", K::SOURCE.resource().plural))?;
        all.extend(pages.take(page).into_iter().map(|o| o.object));
    }
    Ok(all)
}

/// Groups uses by image and allowance, images sorted by name; an image's base is the first
/// stale one named, else the first named.
fn group(uses: impl IntoIterator<Item = Use>) -> Vec<ImageEntry> {
    type Group = (Option<String>, Option<BaseProperty>, BTreeSet<WorkloadRef>);
    let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
    for Use { workload, image } in uses {
        let entry = groups
            .entry((image.image, image.allowed_by))
            .or_insert_with(|| (image.registry, None, BTreeSet::new()));
        let stale = |b: &Option<BaseProperty>| b.as_ref().is_some_and(BaseProperty::is_stale);
        if entry.1.is_none() || (!stale(&entry.1) && stale(&image.base)) {
            entry.1 = image.base.or(entry.1.take());
        }
        entry.2.insert(workload);
    }
    groups
        .into_iter()
        .map(
            |((image, allowed_by), (registry, base, workloads))| ImageEntry {
                image,
                registry,
                allowed_by,
                base: base.as_ref().map(|b| b.base.clone()),
                base_state: base.as_ref().map(|b| b.state.clone()),
                rebuild_on: base.and_then(|b| b.rebuild_on),
                namespaces: workloads
                    .iter()
                    .map(|w| w.namespace.clone())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
                workloads: workloads.into_iter().collect(),
            },
        )
        .collect()
}

/// `--stale`: one row per workload and image that needs a rebuild.
fn stale_table(inventory: &Inventory) -> String {
    let mut t = Table::new(vec!["NAMESPACE", "WORKLOAD", "IMAGE", "BASE", "REBUILD ON"]);
    for e in &inventory.images {
        for w in &e.workloads {
            t.push(vec![
                w.namespace.clone(),
                format!("{}/{}", w.kind, w.name),
                e.image.clone(),
                e.base.clone().unwrap_or_default(),
                e.rebuild_on.clone().unwrap_or_default(),
            ]);
        }
    }
    t.to_string()
}

/// The table: counts by default, names with `wide`; the workloads with unjudged images last.
fn table(inventory: &Inventory, wide: bool) -> String {
    let mut t = Table::new(vec![
        "IMAGE",
        "REGISTRY",
        "GRANT",
        "NAMESPACES",
        "WORKLOADS",
    ]);
    for e in &inventory.images {
        let (namespaces, workloads) = if wide {
            (
                e.namespaces.join(","),
                e.workloads
                    .iter()
                    .map(|w| format!("{}/{}/{}", w.namespace, w.kind, w.name))
                    .collect::<Vec<_>>()
                    .join(","),
            )
        } else {
            (
                e.namespaces.len().to_string(),
                e.workloads.len().to_string(),
            )
        };
        t.push(vec![
            e.image.clone(),
            e.registry.clone().unwrap_or_else(|| "<invalid>".to_owned()),
            e.allowed_by.clone(),
            namespaces,
            workloads,
        ]);
    }
    for u in &inventory.unjudged {
        let w = &u.workload;
        t.push(vec![
            format!(
                "({} containers not judged: over the per-object cap)",
                u.containers
            ),
            "-".to_owned(),
            "UNJUDGED".to_owned(),
            if wide {
                w.namespace.clone()
            } else {
                "1".to_owned()
            },
            if wide {
                format!("{}/{}/{}", w.namespace, w.kind, w.name)
            } else {
                "1".to_owned()
            },
        ]);
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use byoc_api::report::{ReportResult, ResourceRef};

    fn use_of(ns: &str, kind: &str, name: &str, image: &str, allowed_by: &str) -> Use {
        Use {
            workload: WorkloadRef {
                namespace: ns.into(),
                kind: kind.into(),
                name: name.into(),
            },
            image: ImageProperty {
                image: image.into(),
                registry: image.parse::<ImageRef>().ok().map(|r| r.registry()),
                allowed_by: allowed_by.into(),
                base: None,
            },
        }
    }

    #[test]
    fn uses_group_by_image_and_allowance() {
        let uses = vec![
            use_of("tool-b", "Deployment", "web", "quay.io/a:1", "grant-b"),
            use_of("tool-a", "Deployment", "web", "quay.io/a:1", "grant-a"),
            use_of("tool-a", "CronJob", "nightly", "quay.io/a:1", "grant-a"),
            use_of("tool-c", "Pod", "p", "nginx", "REFUSED"),
            use_of("tool-c", "Pod", "p", "Bad Ref", "REFUSED"),
        ];
        let inventory = Inventory {
            kind: "ByocImages",
            version: 1,
            source: "live",
            live_namespaces: Vec::new(),
            images: group(uses),
            unjudged: vec![UnjudgedEntry {
                workload: WorkloadRef {
                    namespace: "tool-d".into(),
                    kind: "Deployment".into(),
                    name: "wide".into(),
                },
                containers: 72,
            }],
        };
        assert_eq!(
            table(&inventory, false),
            "IMAGE                                                 REGISTRY    GRANT      NAMESPACES   WORKLOADS\n\
             Bad Ref                                               <invalid>   REFUSED    1            1\n\
             nginx                                                 docker.io   REFUSED    1            1\n\
             quay.io/a:1                                           quay.io     grant-a    1            2\n\
             quay.io/a:1                                           quay.io     grant-b    1            1\n\
             (72 containers not judged: over the per-object cap)   -           UNJUDGED   1            1\n"
        );
        let wide = table(&inventory, true);
        assert!(
            wide.contains("tool-a/CronJob/nightly,tool-a/Deployment/web")
                && wide.contains("UNJUDGED   tool-d       tool-d/Deployment/wide"),
            "{wide}"
        );
    }

    #[test]
    fn reports_read_back_into_uses() {
        let report = PolicyReport {
            results: vec![ReportResult {
                source: "byoc-operator".into(),
                policy: "byoc-registry".into(),
                rule: "allowed-registries".into(),
                result: byoc_api::report::Outcome::Pass,
                scored: true,
                message: String::new(),
                resources: vec![ResourceRef {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    name: "web".into(),
                    namespace: "tool-a".into(),
                    uid: "u".into(),
                }],
                properties: ImageProperty::to_properties(&[
                    use_of("", "", "", "quay.io/a:1", "g").image,
                    use_of(
                        "",
                        "",
                        "",
                        "docker-registry.tools.wmflabs.org/x",
                        "platform",
                    )
                    .image,
                ]),
                timestamp: Default::default(),
            }],
            ..PolicyReport::default()
        };
        assert_eq!(
            from_reports(&[report]).uses,
            vec![
                use_of("tool-a", "Deployment", "web", "quay.io/a:1", "g"),
                use_of(
                    "tool-a",
                    "Deployment",
                    "web",
                    "docker-registry.tools.wmflabs.org/x",
                    "platform"
                ),
            ]
        );
    }

    #[test]
    fn stale_images_are_listed_with_what_to_rebuild_on() {
        let base = |state: &str| BaseProperty {
            base: "r.org/base:1@sha256:01".into(),
            state: state.into(),
            rebuild_on: (state != "current").then(|| "r.org/base:1".into()),
            error: None,
        };
        let mut old = use_of("tool-a", "Deployment", "web", "r.org/a/web:1", "platform");
        old.image.base = Some(base("older"));
        let mut old_b = use_of("tool-b", "Deployment", "web", "r.org/a/web:1", "platform");
        old_b.image.base = Some(base("current"));
        let mut new = use_of("tool-a", "Deployment", "api", "r.org/a/api:1", "platform");
        new.image.base = Some(base("current"));
        let stale: Vec<Use> = [old, old_b, new]
            .into_iter()
            .filter(|u| u.image.base.as_ref().is_some_and(BaseProperty::is_stale))
            .collect();
        let inventory = Inventory {
            kind: "ByocImages",
            version: 1,
            source: "reports",
            live_namespaces: Vec::new(),
            images: group(stale),
            unjudged: Vec::new(),
        };
        assert_eq!(
            stale_table(&inventory),
            "NAMESPACE   WORKLOAD         IMAGE           BASE                     REBUILD ON\n\
             tool-a      Deployment/web   r.org/a/web:1   r.org/base:1@sha256:01   r.org/base:1\n"
        );
        let json = serde_json::to_value(&inventory).unwrap();
        assert_eq!(json["images"][0]["baseState"], "older");
        assert_eq!(json["images"][0]["rebuildOn"], "r.org/base:1");
    }

    #[test]
    fn reports_that_left_results_out_are_known() {
        let report = |annotation: Option<&str>, pass: u32, results: usize| {
            let mut r = PolicyReport::default();
            r.metadata.annotations =
                annotation.map(|a| [(RESULTS_LEFT_OUT.to_owned(), a.to_owned())].into());
            r.summary.pass = pass;
            r.results = vec![
                ReportResult {
                    source: String::new(),
                    policy: String::new(),
                    rule: String::new(),
                    result: byoc_api::report::Outcome::Pass,
                    scored: true,
                    message: String::new(),
                    resources: Vec::new(),
                    properties: Default::default(),
                    timestamp: Default::default(),
                };
                results
            ];
            r
        };
        // (annotation, summary pass, results) → left out
        let cases = [
            ((None, 2, 2), 0),
            ((Some("7"), 9, 2), 7),
            // Written summary-only by an older controller, or emptied by hand.
            ((None, 115, 0), 115),
            ((Some("not a number"), 2, 2), 1),
        ];
        for ((annotation, pass, results), want) in cases {
            assert_eq!(
                left_out(&report(annotation, pass, results)),
                want,
                "{annotation:?} {pass} {results}"
            );
        }
    }

    #[test]
    fn registry_filter_matches_like_a_grant() {
        let quay: RegistryPattern = "quay.io".parse().unwrap();
        let org: RegistryPattern = "ghcr.io/wikimedia".parse().unwrap();
        assert!(matches("quay.io/a/b:1", &quay));
        assert!(!matches("quay.io.evil.com/a", &quay));
        assert!(matches("ghcr.io/wikimedia/x", &org));
        assert!(!matches("ghcr.io/wikimediaevil/x", &org));
        assert!(!matches("Not A Ref", &quay));
    }
}

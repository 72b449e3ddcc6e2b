//! `kubectl byoc import-configmap`: turn the legacy allow-list ConfigMap into ByocGrants.

use std::collections::BTreeSet;

use byoc_api::{ByocGrant, ByocGrantSpec, LeanNamespace, StoredGrant};
use clap::Args;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use kube::{Api, Client, Resource};

use crate::Failure;
use crate::allowlist::AllowList;
use crate::cluster::{self, ClusterArgs, Context};
use crate::duration;
use crate::list::describe;
use crate::output::emit;

/// The annotation that records where an imported grant came from.
pub const IMPORTED_FROM: &str = "byoc.toolforge.org/imported-from";

/// `import-configmap` arguments.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    # See what would be created, then do it\n  \
    kubectl byoc import-configmap --configmap tools-system/byoc-allowlist --dry-run\n  \
    kubectl byoc import-configmap --configmap tools-system/byoc-allowlist --reason 'T302863: legacy allow-list'\n\n\
    The list holds one namespace per line; '#' starts a comment; blank lines are ignored. Each \
    namespace gets a ByocGrant named after it that allows any registry and does not expire \
    (what the legacy list meant). A namespace that already has such a grant is skipped, so \
    running the import again creates nothing. A grant with the namespace's name that grants \
    something else is left alone and reported as a conflict. Exit status: 0 everything created \
    or skipped, 1 some lines could not be parsed or conflict, 2 invalid input or API error.")]
pub struct ImportArgs {
    /// The allow-list ConfigMap, NAMESPACE/NAME.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    configmap: String,
    /// The data key that holds the list (default: the ConfigMap's only key).
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
    /// The reason of the created grants (default: "imported from the legacy BYOC allow-list
    /// ConfigMap NAMESPACE/NAME").
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Have the API server check the grants without creating them.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// What happens to one line of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// Create a grant for the namespace.
    Create { line: usize, namespace: String },
    /// The namespace needs nothing.
    Skip {
        line: usize,
        namespace: String,
        why: String,
    },
    /// A grant with the namespace's name exists and grants something else.
    Conflict {
        line: usize,
        namespace: String,
        why: String,
    },
    /// The line is not a namespace.
    Invalid {
        line: usize,
        text: String,
        problem: &'static str,
    },
}

impl Step {
    fn line(&self) -> usize {
        match self {
            Self::Create { line, .. }
            | Self::Skip { line, .. }
            | Self::Conflict { line, .. }
            | Self::Invalid { line, .. } => *line,
        }
    }
}

/// Runs `import-configmap`; `Ok(false)` when lines could not be parsed or conflict.
pub async fn run(args: ImportArgs) -> Result<bool, Failure> {
    let (cm_namespace, cm_name) = args
        .configmap
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .ok_or_else(|| {
            Failure::Usage(format!(
                "--configmap {:?} must be NAMESPACE/NAME, like tools-system/byoc-allowlist",
                args.configmap
            ))
        })?;
    let client = args.cluster.client().await?;
    let configmap = Api::<ConfigMap>::namespaced(client.clone(), cm_namespace)
        .get_opt(cm_name)
        .await
        .context(|| format!("read ConfigMap {}", args.configmap))?
        .ok_or_else(|| Failure::Usage(format!("ConfigMap {} not found", args.configmap)))?;
    let (key, text) = pick_key(&configmap, args.key.as_deref(), &args.configmap)?;
    let list = AllowList::parse(text);
    let now = duration::now();
    let grants = cluster::list_grants(&client).await?;
    cluster::warn_unreadable(&grants);
    let steps = plan(&list, &grants, now);
    let reason = args.reason.clone().unwrap_or_else(|| {
        format!(
            "imported from the legacy BYOC allow-list ConfigMap {}",
            args.configmap
        )
    });
    if reason.trim().is_empty() {
        return Err(Failure::Usage("--reason must not be empty".into()));
    }
    let existing = namespaces(&client).await;
    let source = format!("configmap {} key {key}", args.configmap);
    let (mut created, mut skipped, mut conflicts, mut invalid) = (0, 0, 0, 0);
    for step in &steps {
        let line = match step {
            Step::Create { line, namespace } => {
                let grant =
                    create(&client, namespace, &reason, &source, *line, args.dry_run).await?;
                created += 1;
                if existing.as_ref().is_some_and(|e| !e.contains(namespace)) {
                    eprintln!("warning: namespace {namespace} does not exist (yet)");
                }
                let dry = if args.dry_run {
                    " (server dry run)"
                } else {
                    ""
                };
                format!(
                    "created{dry}: {namespace} (line {line}) as byocgrant/{}",
                    grant.metadata.name.as_deref().unwrap_or(namespace)
                )
            }
            Step::Skip {
                line,
                namespace,
                why,
            } => {
                skipped += 1;
                format!("skipped: {namespace} (line {line}): {why}")
            }
            Step::Conflict {
                line,
                namespace,
                why,
            } => {
                conflicts += 1;
                format!("conflict: {namespace} (line {line}): {why}")
            }
            Step::Invalid {
                line,
                text,
                problem,
            } => {
                invalid += 1;
                format!("could not parse: line {line}: {text:?}: {problem}")
            }
        };
        emit(&(line + "\n"))?;
    }
    eprintln!(
        "{source}: {created} created, {skipped} skipped, {conflicts} conflicting, {invalid} \
         could not be parsed{}",
        if args.dry_run {
            " (server dry run)"
        } else {
            ""
        }
    );
    Ok(conflicts == 0 && invalid == 0)
}

/// The data key holding the list and its text.
fn pick_key<'a>(
    configmap: &'a ConfigMap,
    key: Option<&str>,
    shown: &str,
) -> Result<(String, &'a str), Failure> {
    let data = configmap.data.clone().unwrap_or_default();
    let keys: Vec<&String> = data.keys().collect();
    let key = match key {
        Some(k) => k.to_owned(),
        None if keys.len() == 1 => keys[0].clone(),
        None => {
            return Err(Failure::Usage(format!(
                "ConfigMap {shown} has {} data keys ({}): choose one with --key",
                keys.len(),
                keys.iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    };
    let text = configmap
        .data
        .as_ref()
        .and_then(|d| d.get(&key))
        .ok_or_else(|| {
            Failure::Usage(format!(
                "ConfigMap {shown} has no data key {key:?} (it has: {})",
                keys.iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    Ok((key, text.as_str()))
}

/// Decides every line against the existing grants, in line order.
fn plan(list: &AllowList, grants: &[StoredGrant], now: Timestamp) -> Vec<Step> {
    let mut steps = Vec::new();
    for entry in &list.entries {
        let ns = &entry.namespace;
        let covering = grants.iter().filter_map(StoredGrant::readable).find(|g| {
            &g.spec.namespace == ns
                && g.spec.allows_any_registry()
                && !g.is_expired_at(now)
                && g.metadata.deletion_timestamp.is_none()
        });
        let same_name = grants
            .iter()
            .find(|g| g.meta().name.as_deref() == Some(ns.as_str()));
        let step = match (covering, same_name) {
            (Some(g), _) => Step::Skip {
                line: entry.line,
                namespace: ns.clone(),
                why: format!(
                    "already granted any registry by byocgrant/{}",
                    g.metadata.name.as_deref().unwrap_or_default()
                ),
            },
            (None, Some(StoredGrant::Readable(g))) => Step::Conflict {
                line: entry.line,
                namespace: ns.clone(),
                why: format!(
                    "byocgrant/{ns} exists but grants {}; review it (kubectl byoc list -n {}), \
                     then update or revoke it and run the import again",
                    describe(&g.spec, now),
                    g.spec.namespace
                ),
            },
            (None, Some(StoredGrant::Unreadable(u))) => Step::Conflict {
                line: entry.line,
                namespace: ns.clone(),
                why: format!(
                    "byocgrant/{ns} exists but cannot be read ({}); fix or revoke it and run \
                     the import again",
                    u.error
                ),
            },
            (None, None) => Step::Create {
                line: entry.line,
                namespace: ns.clone(),
            },
        };
        steps.push(step);
    }
    steps.extend(list.duplicates.iter().map(|(line, ns, first)| Step::Skip {
        line: *line,
        namespace: ns.clone(),
        why: format!("repeats line {first}"),
    }));
    steps.extend(list.invalid.iter().map(|i| Step::Invalid {
        line: i.line,
        text: i.text.clone(),
        problem: i.problem,
    }));
    steps.sort_by_key(Step::line);
    steps
}

/// Creates the grant of one namespace: any registry, no expiry, annotated with its source.
async fn create(
    client: &Client,
    namespace: &str,
    reason: &str,
    source: &str,
    line: usize,
    dry_run: bool,
) -> Result<ByocGrant, Failure> {
    let mut grant = ByocGrant::new(
        namespace,
        ByocGrantSpec {
            namespace: namespace.to_owned(),
            reason: reason.to_owned(),
            registries: Vec::new(),
            any_registry: true,
            namespace_uid: None,
            expires_at: None,
            requirements: None,
        },
    );
    grant.metadata.annotations =
        Some([(IMPORTED_FROM.to_owned(), format!("{source} line {line}"))].into());
    let pp = PostParams {
        dry_run,
        field_manager: Some("kubectl-byoc".into()),
    };
    Ok(cluster::grants(client)
        .create(&pp, &grant)
        .await
        .grant_context(|| format!("create ByocGrant {namespace}"))?)
}

/// The names of all namespaces, or `None` when they cannot be listed (then nothing is warned).
async fn namespaces(client: &Client) -> Option<BTreeSet<String>> {
    let api: Api<LeanNamespace> = Api::all(client.clone());
    let mut names = BTreeSet::new();
    let mut pages = cluster::Pages::new(500);
    while let Some(lp) = pages.next_params() {
        let page = api.list(&lp).await.ok()?;
        names.extend(pages.take(page).into_iter().filter_map(|n| n.metadata.name));
    }
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn grant(
        name: &str,
        namespace: &str,
        registries: &[&str],
        expires: Option<&str>,
    ) -> StoredGrant {
        ByocGrant::new(
            name,
            ByocGrantSpec {
                namespace: namespace.into(),
                reason: "r".into(),
                registries: registries.iter().map(|s| s.to_string()).collect(),
                any_registry: registries.is_empty(),
                namespace_uid: None,
                expires_at: expires.map(|e| Time(e.parse().unwrap())),
                requirements: None,
            },
        )
        .into()
    }

    #[test]
    fn plan_creates_skips_and_reports_conflicts_in_line_order() {
        let now: Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
        let list = AllowList::parse(
            "tool-new\ntool-done\ntool-other-name\ntool-partial\ntool-expired\nBAD\ntool-new\n\
             tool-both\ntool-bad\n",
        );
        let grants = [
            grant("tool-done", "tool-done", &[], None),
            grant(
                "legacy-1",
                "tool-other-name",
                &[],
                Some("2027-01-01T00:00:00Z"),
            ),
            grant("tool-partial", "tool-partial", &["quay.io"], None),
            grant(
                "tool-expired",
                "tool-expired",
                &[],
                Some("2026-01-01T00:00:00Z"),
            ),
            // A narrower grant under another name does not cover the namespace: create.
            grant("tool-both-quay", "tool-both", &["quay.io"], None),
            // An unreadable grant covers nothing, and its name is taken.
            StoredGrant::from_value(&serde_json::json!({
                "metadata": { "name": "tool-bad" },
                "spec": { "namespace": "tool-bad", "reason": "r", "expiresAt": "+99:99" },
            }))
            .unwrap(),
        ];
        let steps = plan(&list, &grants, now);
        let summary: Vec<String> = steps
            .iter()
            .map(|s| match s {
                Step::Create { line, namespace } => format!("{line} create {namespace}"),
                Step::Skip { line, why, .. } => format!("{line} skip {why}"),
                Step::Conflict { line, why, .. } => format!("{line} conflict {why}"),
                Step::Invalid { line, text, .. } => format!("{line} invalid {text}"),
            })
            .collect();
        let (summary, unreadable) = summary.split_at(summary.len() - 1);
        let unreadable = &unreadable[0];
        assert_eq!(
            summary,
            [
                "1 create tool-new",
                "2 skip already granted any registry by byocgrant/tool-done",
                "3 skip already granted any registry by byocgrant/legacy-1",
                "4 conflict byocgrant/tool-partial exists but grants namespace tool-partial, \
                 registries quay.io, never expires; review it (kubectl byoc list -n \
                 tool-partial), then update or revoke it and run the import again",
                "5 conflict byocgrant/tool-expired exists but grants namespace tool-expired, any \
                 registry, expired 2026-01-01T00:00:00Z (324d ago); review it (kubectl byoc \
                 list -n tool-expired), then update or revoke it and run the import again",
                "6 invalid BAD",
                "7 skip repeats line 1",
                "8 create tool-both",
            ]
        );
        let (head, tail) = unreadable
            .split_once("(spec.expiresAt: ")
            .expect("the field");
        assert_eq!(
            head,
            "9 conflict byocgrant/tool-bad exists but cannot be read "
        );
        assert!(
            tail.ends_with("); fix or revoke it and run the import again"),
            "{tail}"
        );
        // After the creates, a second plan creates nothing.
        let mut after = grants.to_vec();
        after.push(grant("tool-new", "tool-new", &[], None));
        after.push(grant("tool-both", "tool-both", &[], None));
        assert!(
            plan(&list, &after, now)
                .iter()
                .all(|s| !matches!(s, Step::Create { .. }))
        );
    }

    #[test]
    fn keys() {
        let cm = |pairs: &[(&str, &str)]| ConfigMap {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ConfigMap::default()
        };
        let one = cm(&[("allowlist", "tool-a\n")]);
        assert_eq!(
            pick_key(&one, None, "x/y").unwrap(),
            ("allowlist".into(), "tool-a\n")
        );
        let two = cm(&[("a", ""), ("b", "tool-b")]);
        let err = pick_key(&two, None, "x/y").unwrap_err().to_string();
        assert_eq!(
            err,
            "ConfigMap x/y has 2 data keys (a, b): choose one with --key"
        );
        assert_eq!(pick_key(&two, Some("b"), "x/y").unwrap().1, "tool-b");
        let err = pick_key(&two, Some("c"), "x/y").unwrap_err().to_string();
        assert_eq!(err, "ConfigMap x/y has no data key \"c\" (it has: a, b)");
        let err = pick_key(&ConfigMap::default(), None, "x/y")
            .unwrap_err()
            .to_string();
        assert!(err.contains("0 data keys"), "{err}");
    }
}

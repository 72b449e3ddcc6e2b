//! `kubectl byoc revoke`: delete the grants of a namespace, or one grant by name.

use std::time::Duration;

use byoc_api::StoredGrant;
use clap::{ArgGroup, Args};
use jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, Preconditions};
use kube::{Client, Resource};

use crate::Failure;
use crate::cluster::{self, ClusterArgs, Context};
use crate::duration::{self, parse_duration};
use crate::list::describe;
use crate::output::emit;

/// `revoke` arguments.
#[derive(Args, Debug)]
#[command(
    group(ArgGroup::new("target").required(true).args(["namespace", "name"])),
    after_help = "Examples:\n  \
    # Delete every grant of tool-wikibugs\n  \
    kubectl byoc revoke tool-wikibugs\n\n  \
    # Delete one grant, keeping the namespace's others\n  \
    kubectl byoc revoke --name tool-x-migration\n\n  \
    # In scripts: succeed when there is nothing to revoke; wait until the labels are gone\n  \
    kubectl byoc revoke tool-x --ignore-not-found --wait\n\n\
    Pods already running keep running; new pods (and changed images) from the revoked \
    registries are refused once the controller has removed the namespace labels. A grant that \
    cannot be read is revoked like any other (by --name when its namespace cannot be read \
    either). Exit status: \
    0 revoked, 1 nothing to revoke (0 with --ignore-not-found) or --wait timed out, 2 invalid \
    input or API error."
)]
pub struct RevokeArgs {
    /// Revoke every grant of this namespace.
    #[arg(value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// Revoke only the ByocGrant with this name.
    #[arg(long, value_name = "GRANT")]
    name: Option<String>,
    /// Succeed when there is nothing to revoke.
    #[arg(long)]
    ignore_not_found: bool,
    /// Have the API server check the deletion without doing it.
    #[arg(long)]
    dry_run: bool,
    /// Wait until the grants are gone (the controller has removed their labels).
    #[arg(long, conflicts_with = "dry_run")]
    wait: bool,
    /// How long --wait waits.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    timeout: SignedDuration,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Runs `revoke`; `Ok(false)` when there was nothing to revoke or `--wait` timed out.
pub async fn run(args: RevokeArgs) -> Result<bool, Failure> {
    let client = args.cluster.client().await?;
    let all = cluster::list_grants(&client).await?;
    cluster::warn_unreadable(&all);
    let target = match (args.namespace.clone(), args.name.clone()) {
        (Some(ns), _) => Target::Namespace(ns),
        (None, Some(name)) => Target::Name(name),
        (None, None) => return Err(Failure::Usage("revoke needs a NAMESPACE or --name".into())),
    };
    let (targets, namespace) = select(&all, &target);
    if targets.is_empty() {
        let what = match &target {
            Target::Namespace(ns) => format!("no ByocGrant grants namespace {ns}"),
            Target::Name(name) => format!("ByocGrant {name} not found"),
        };
        if args.ignore_not_found {
            eprintln!("{what}: nothing to revoke");
            return Ok(true);
        }
        eprintln!("error: {what}");
        return Ok(false);
    }
    let now = duration::now();
    let api = cluster::stored_grants(&client);
    let mut deleted = Vec::new();
    let mut out = String::new();
    for grant in &targets {
        let name = grant.meta().name.clone().unwrap_or_default();
        if grant.meta().deletion_timestamp.is_some() {
            eprintln!("byocgrant/{name} is already being deleted");
            deleted.push(*grant);
            continue;
        }
        let dp = DeleteParams {
            dry_run: args.dry_run,
            preconditions: Some(Preconditions {
                uid: grant.meta().uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &dp).await {
            Err(kube::Error::Api(s)) if s.code == 404 => {
                eprintln!("byocgrant/{name} was already gone");
                continue;
            }
            result => result.grant_context(|| format!("delete ByocGrant {name}"))?,
        };
        let dry = if args.dry_run {
            " (server dry run)"
        } else {
            ""
        };
        out.push_str(&format!(
            "byocgrant/{name} deleted{dry}: {}\n",
            describe_stored(grant, now)
        ));
        deleted.push(*grant);
    }
    emit(&out)?;
    let remaining: Vec<&str> = all
        .iter()
        .filter(|g| !targets.contains(g))
        .filter_map(StoredGrant::readable)
        .filter(|g| g.spec.namespace == namespace && !g.is_expired_at(now))
        .filter_map(|g| g.metadata.name.as_deref())
        .collect();
    if !remaining.is_empty() {
        eprintln!(
            "note: namespace {namespace} is still granted by: {}",
            remaining.join(", ")
        );
    }
    if !args.dry_run && !out.is_empty() {
        eprintln!(
            "note: running pods keep running; `kubectl byoc audit -n {namespace}` lists what the \
             policy refuses once the controller has updated the namespace labels"
        );
    }
    if args.wait {
        return wait_gone(&client, &deleted, args.timeout.unsigned_abs()).await;
    }
    Ok(true)
}

/// What to revoke.
#[derive(Debug)]
enum Target {
    /// Every grant of this namespace.
    Namespace(String),
    /// The grant with this name.
    Name(String),
}

/// What a deleted grant granted: its spec, or why it could not be read.
fn describe_stored(grant: &StoredGrant, now: Timestamp) -> String {
    match grant {
        StoredGrant::Readable(g) => describe(&g.spec, now),
        StoredGrant::Unreadable(u) => format!("unreadable grant ({})", u.error),
    }
}

/// The grants to delete, and the namespace they grant.
fn select<'a>(all: &'a [StoredGrant], target: &Target) -> (Vec<&'a StoredGrant>, String) {
    let targets: Vec<&StoredGrant> = all
        .iter()
        .filter(|g| match target {
            Target::Namespace(ns) => g.target_namespace() == Some(ns.as_str()),
            Target::Name(name) => g.meta().name.as_ref() == Some(name),
        })
        .collect();
    let namespace = match target {
        Target::Namespace(ns) => ns.clone(),
        Target::Name(_) => targets
            .first()
            .and_then(|g| g.target_namespace())
            .unwrap_or_default()
            .to_owned(),
    };
    (targets, namespace)
}

/// Polls until every deleted grant is gone (the controller removes its finalizer after the
/// labels).
async fn wait_gone(
    client: &Client,
    grants: &[&StoredGrant],
    timeout: Duration,
) -> Result<bool, Failure> {
    let api = cluster::stored_grants(client);
    let deadline = tokio::time::Instant::now() + timeout;
    for grant in grants {
        let name = grant.meta().name.clone().unwrap_or_default();
        loop {
            let current = api
                .get_opt(&name)
                .await
                .grant_context(|| format!("read ByocGrant {name}"))?;
            if current.is_none_or(|g| g.meta().uid != grant.meta().uid) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                eprintln!(
                    "byocgrant/{name} is still there after {}s: is the byoc controller running? \
                     (it removes the namespace labels, then the grant)",
                    timeout.as_secs()
                );
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    eprintln!("revoked: the namespace labels no longer carry these grants");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use byoc_api::{ByocGrant, ByocGrantSpec};
    use serde_json::json;

    fn grant(name: &str, namespace: &str) -> StoredGrant {
        ByocGrant::new(
            name,
            ByocGrantSpec {
                namespace: namespace.into(),
                reason: "r".into(),
                registries: Vec::new(),
                any_registry: true,
                namespace_uid: None,
                expires_at: None,
                requirements: None,
            },
        )
        .into()
    }

    /// A stored grant whose expiresAt does not read; `namespace` as stored.
    fn unreadable(name: &str, namespace: serde_json::Value) -> StoredGrant {
        let object = json!({
            "metadata": { "name": name },
            "spec": { "namespace": namespace, "reason": "r", "expiresAt": "2027-01-01T00:00:00x5Z" },
        });
        let stored = StoredGrant::from_value(&object).unwrap();
        assert!(stored.readable().is_none());
        stored
    }

    #[test]
    fn selects_by_namespace_or_name() {
        let all = [
            grant("a", "tool-a"),
            grant("a-2", "tool-a"),
            unreadable("a-bad", json!("tool-a")),
            grant("b", "tool-b"),
            unreadable("lost", json!(7)),
        ];
        let names = |(v, ns): (Vec<&StoredGrant>, String)| {
            let names: Vec<String> = v.iter().map(|g| g.meta().name.clone().unwrap()).collect();
            (names, ns)
        };
        assert_eq!(
            names(select(&all, &Target::Namespace("tool-a".into()))),
            (
                vec!["a".into(), "a-2".into(), "a-bad".into()],
                "tool-a".into()
            )
        );
        assert_eq!(
            names(select(&all, &Target::Name("a-2".into()))),
            (vec!["a-2".into()], "tool-a".into())
        );
        assert_eq!(
            names(select(&all, &Target::Name("a-bad".into()))),
            (vec!["a-bad".into()], "tool-a".into())
        );
        // Without a readable namespace, only its name reaches it.
        assert_eq!(
            names(select(&all, &Target::Name("lost".into()))),
            (vec!["lost".into()], String::new())
        );
        assert_eq!(
            names(select(&all, &Target::Namespace("tool-c".into()))),
            (vec![], "tool-c".into())
        );
        assert_eq!(
            names(select(&all, &Target::Name("zzz".into()))),
            (vec![], String::new())
        );
    }

    #[test]
    fn deleted_grants_are_described() {
        let now: Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
        assert_eq!(
            describe_stored(&grant("a", "tool-a"), now),
            "namespace tool-a, any registry, never expires"
        );
        let text = describe_stored(&unreadable("b", json!("tool-b")), now);
        assert!(
            text.starts_with("unreadable grant (spec.expiresAt: "),
            "{text}"
        );
    }
}

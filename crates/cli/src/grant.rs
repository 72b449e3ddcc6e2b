//! `kubectl byoc grant`: create or update the ByocGrant of a namespace.

use std::time::Duration;

use byoc_api::{BaseImage, ByocGrant, ByocGrantSpec, LeanNamespace, Requirements, StoredGrant};
use clap::{ArgGroup, Args, ValueEnum};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use serde_json::json;

use crate::Failure;
use crate::cluster::{self, ClusterArgs, Context as _};
use crate::duration::{self, parse_duration, parse_expiry};
use crate::list::{GrantView, describe};
use crate::output::{ObjectFormat, emit};

/// `grant` arguments.
#[derive(Args, Debug)]
#[command(
    group(
        ArgGroup::new("allowed")
            .required(true)
            .args(["registries", "any_registry", "renew"])
    ),
    after_help = "Examples:\n  \
    # Let tool-wikibugs run images from quay.io and ghcr.io/wikimedia for 90 days\n  \
    kubectl byoc grant tool-wikibugs --reason 'T302863: mixes java and python' \\\n    \
    --registry quay.io --registry ghcr.io/wikimedia --expires 90d\n\n  \
    # Any registry, until a date; a second grant for the same namespace needs its own name\n  \
    kubectl byoc grant tool-x --reason T123 --any-registry --expires 2027-03-31 \\\n    \
    --name tool-x-migration\n\n  \
    # Check with the API server without changing anything, or write a manifest for GitOps\n  \
    kubectl byoc grant tool-x --reason T123 --registry quay.io --dry-run\n  \
    kubectl byoc grant tool-x --reason T123 --registry quay.io --expires 2w --dry-run=client \\\n    \
    -o yaml > grant.yaml\n\n  \
    # Only images built on the platform's base, by digest, from the tool's own repository\n  \
    kubectl byoc grant tool-x --reason T123 --registry quay.io/tool-x \\\n    \
    --built-on tools-harbor.wmcloud.org/toolforge/heroku-runner --require-digest \\\n    \
    --source-from 'https://gitlab.wikimedia.org/toolforge-repos/{tool}'\n\n  \
    # tool-x was deleted and created again: let its grant apply to the new namespace\n  \
    kubectl byoc grant tool-x --renew --wait\n\n\
    One of --registry, --any-registry and --renew is required. Without --built-on, \
    --require-digest, --source-from or --no-requirements the grant gives no requirements and \
    the platform's defaultGrantRequirements (if any) apply. Running it again with other \
    flags updates the grant to exactly what they say (registries, requirements, expiry and \
    reason are replaced, not merged; a grant whose stored spec cannot be read is overwritten). A grant \
    applies to the namespace it was first applied to, by UID: when that namespace is deleted \
    and another is created under the same name, the grant says NamespaceReplaced and gives it \
    nothing until --renew records the new namespace's UID in spec.namespaceUID. Exit status: \
    0 done (or --wait: Ready), 1 --wait ended without the grant being Ready, 2 invalid input \
    or API error."
)]
pub struct GrantArgs {
    /// The tool namespace whose pods may use the registries; it may be created later.
    #[arg(value_name = "NAMESPACE")]
    namespace: String,
    /// Why the namespace needs its own images, for the admins who review grants (e.g. a task).
    /// Required, except with --renew.
    #[arg(long, value_name = "TEXT", required_unless_present = "renew")]
    reason: Option<String>,
    /// A registry the namespace may use, host[:port][/path-prefix]; repeat for several.
    #[arg(long = "registry", value_name = "REGISTRY")]
    registries: Vec<String>,
    /// Let the namespace use any registry (spec.anyRegistry). Required, on purpose, when no
    /// --registry is given: a grant never allows any registry by omission.
    #[arg(long, conflicts_with = "registries")]
    any_registry: bool,
    /// When the grant ends: a duration from now (90d, 12h, 2w, 1d12h), an RFC 3339 time or a
    /// date (midnight UTC). Without it the grant does not expire.
    #[arg(long, value_name = "WHEN")]
    expires: Option<String>,
    /// Images admitted through the grant must be built on this base image,
    /// registry/repository[:tag|@sha256:DIGEST] (spec.requirements.builtOn); repeat for
    /// several allowed bases.
    #[arg(long = "built-on", value_name = "IMAGE")]
    built_on: Vec<String>,
    /// Images admitted through the grant must be referenced by digest, image@sha256:...
    /// (spec.requirements.requireDigest).
    #[arg(long)]
    require_digest: bool,
    /// Images admitted through the grant must have an org.opencontainers.image.source label
    /// starting with this https:// URL, which may name {namespace} or {tool}
    /// (spec.requirements.sourceFrom); repeat for several.
    #[arg(long = "source-from", value_name = "URL")]
    source_from: Vec<String>,
    /// The grant requires nothing beyond its registries, not even the platform's default
    /// requirements (writes requirements: {}). Without any requirement flag the platform's
    /// defaultGrantRequirements apply.
    #[arg(long, conflicts_with_all = ["built_on", "require_digest", "source_from"])]
    no_requirements: bool,
    /// Change nothing but the namespace the existing grant applies to: the namespace of that
    /// name as it exists now (its UID goes to spec.namespaceUID, by server-side apply). For a
    /// namespace that was deleted and created again, once you are sure the new one should
    /// have the grant.
    #[arg(long, conflicts_with_all = ["reason", "expires", "built_on", "require_digest", "source_from", "no_requirements"])]
    renew: bool,
    /// The grant's name (default: the namespace's name).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Only validate: `server` (the default when given without a value) has the API server
    /// check everything and store nothing; `client` checks locally without contacting it.
    #[arg(
        long,
        value_enum,
        value_name = "MODE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "server"
    )]
    dry_run: Option<DryRun>,
    /// Print the resulting ByocGrant instead of a summary.
    #[arg(long, short = 'o', value_enum, value_name = "FORMAT")]
    output: Option<ObjectFormat>,
    /// Wait until the controller reports on the grant, and fail unless it is Ready.
    #[arg(long, conflicts_with = "dry_run")]
    wait: bool,
    /// How long --wait waits.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    timeout: SignedDuration,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Where a dry run stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DryRun {
    /// Validated by the API server (schema, CEL rules, admission), not stored.
    Server,
    /// Validated locally; no cluster needed.
    Client,
}

/// What `grant` did to the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Created,
    Configured,
    Unchanged,
    Renewed,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Configured => "configured",
            Self::Unchanged => "unchanged",
            Self::Renewed => "renewed",
        }
    }
}

/// The field manager of every write of the CLI.
const FIELD_MANAGER: &str = "kubectl-byoc";

/// Runs `grant`; `Ok(false)` when `--wait` ended without the grant being Ready.
pub async fn run(args: GrantArgs) -> Result<bool, Failure> {
    let now = duration::now();
    let spec = if args.renew {
        None
    } else {
        Some(spec(&args, now)?)
    };
    let name = args.name.clone().unwrap_or_else(|| args.namespace.clone());
    if !is_dns1123_subdomain(&name) {
        return Err(Failure::Usage(format!(
            "--name {name:?} is not a valid object name (lowercase letters, digits, '-' and \
             '.', starting and ending with a letter or digit, at most 253)"
        )));
    }
    let dry_run = args.dry_run.is_some();
    if args.renew && args.dry_run == Some(DryRun::Client) {
        return Err(Failure::Usage(
            "--renew reads the namespace's UID from the cluster: use --dry-run=server".into(),
        ));
    }
    if let (Some(spec), Some(DryRun::Client)) = (&spec, args.dry_run) {
        let grant = ByocGrant::new(&name, spec.clone());
        return print(&args, &grant, Action::Created, now).map(|()| true);
    }
    let client = args.cluster.client().await?;
    let (grant, action) = match spec {
        None => renew(&client, &name, &args.namespace, dry_run).await?,
        Some(spec) => {
            let applied = apply(&client, &name, spec, dry_run).await?;
            warn_if_namespace_missing(&client, &args.namespace).await;
            applied
        }
    };
    print(&args, &grant, action, now)?;
    if args.wait {
        return wait_ready(&client, &grant, args.timeout.unsigned_abs()).await;
    }
    Ok(true)
}

/// The spec the flags describe, validated as the CRD would.
fn spec(args: &GrantArgs, now: Timestamp) -> Result<ByocGrantSpec, Failure> {
    let expires_at = args
        .expires
        .as_deref()
        .map(|e| parse_expiry(e, now).map(Time))
        .transpose()
        .map_err(|e| Failure::Usage(format!("--expires {e}")))?;
    let mut registries: Vec<String> = Vec::new();
    for r in &args.registries {
        if !registries.contains(r) {
            registries.push(r.clone());
        }
    }
    let spec = ByocGrantSpec {
        namespace: args.namespace.clone(),
        reason: args.reason.clone().unwrap_or_default(),
        registries,
        any_registry: args.any_registry,
        namespace_uid: None,
        expires_at,
        requirements: requirements(args),
    };
    spec.validate()
        .map_err(|e| Failure::Usage(format!("invalid grant: {e}")))?;
    Ok(spec)
}

/// The requirements the flags give: none without a requirement flag (the platform default
/// applies), `{}` with --no-requirements.
fn requirements(args: &GrantArgs) -> Option<Requirements> {
    let mut requirements = Requirements {
        built_on: Vec::new(),
        require_digest: args.require_digest,
        source_from: Vec::new(),
    };
    for base in &args.built_on {
        let base = BaseImage(base.clone());
        if !requirements.built_on.contains(&base) {
            requirements.built_on.push(base);
        }
    }
    for source in &args.source_from {
        if !requirements.source_from.contains(source) {
            requirements.source_from.push(source.clone());
        }
    }
    (args.no_requirements || !requirements.is_empty()).then_some(requirements)
}

/// Creates the grant, or updates the one of that name when it is for the same namespace.
async fn apply(
    client: &Client,
    name: &str,
    spec: ByocGrantSpec,
    dry_run: bool,
) -> Result<(ByocGrant, Action), Failure> {
    let api = cluster::grants(client);
    let pp = PostParams {
        dry_run,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    let existing = cluster::stored_grants(client)
        .get_opt(name)
        .await
        .grant_context(|| format!("read ByocGrant {name}"))?;
    let (mut grant, readable) = match existing {
        Some(StoredGrant::Readable(grant)) => (grant, true),
        // What cannot be read is overwritten with the flags, as an update would be.
        Some(StoredGrant::Unreadable(u)) if u.namespace.as_ref() == Some(&spec.namespace) => {
            eprintln!(
                "warning: byocgrant/{name} could not be read ({}); replacing its spec",
                u.error
            );
            let grant = ByocGrant {
                metadata: u.metadata,
                spec: spec.clone(),
                status: None,
            };
            (grant, false)
        }
        Some(StoredGrant::Unreadable(u)) => {
            return Err(Failure::Usage(format!(
                "ByocGrant {name} exists but cannot be read ({}) and is not for namespace {}: \
                 choose another --name, or delete it (kubectl byoc revoke --name {name})",
                u.error, spec.namespace
            )));
        }
        None => {
            let grant = api
                .create(&pp, &ByocGrant::new(name, spec))
                .await
                .grant_context(|| format!("create ByocGrant {name}"))?;
            return Ok((grant, Action::Created));
        }
    };
    if grant.spec.namespace != spec.namespace {
        return Err(Failure::Usage(format!(
            "ByocGrant {name} already exists for namespace {} (a grant's namespace cannot \
             change): choose another --name",
            grant.spec.namespace
        )));
    }
    if grant.metadata.deletion_timestamp.is_some() {
        return Err(Failure::Usage(format!(
            "ByocGrant {name} is being deleted: wait until it is gone, or choose another --name"
        )));
    }
    // The flags say nothing of the namespace's UID: a renewal stays.
    let spec = ByocGrantSpec {
        namespace_uid: grant.spec.namespace_uid.clone(),
        ..spec
    };
    if readable && grant.spec == spec {
        return Ok((grant, Action::Unchanged));
    }
    grant.spec = spec;
    let grant = match api.replace(name, &pp, &grant).await {
        Err(kube::Error::Api(s)) if s.code == 409 => {
            return Err(Failure::Usage(format!(
                "ByocGrant {name} was changed by someone else meanwhile: run the command again"
            )));
        }
        other => other.grant_context(|| format!("update ByocGrant {name}"))?,
    };
    Ok((grant, Action::Configured))
}

/// `--renew`: sets `spec.namespaceUID` of grant `name` (which must be for `namespace`) to the
/// UID of that namespace as it exists now, by a forced server-side apply of that field alone.
async fn renew(
    client: &Client,
    name: &str,
    namespace: &str,
    dry_run: bool,
) -> Result<(ByocGrant, Action), Failure> {
    let stored = cluster::stored_grants(client)
        .get_opt(name)
        .await
        .grant_context(|| format!("read ByocGrant {name}"))?;
    let target = match &stored {
        None => {
            return Err(Failure::Usage(format!(
                "there is no ByocGrant {name} to renew (give the grant's name with --name)"
            )));
        }
        Some(stored) => stored.target_namespace(),
    };
    if target != Some(namespace) {
        return Err(Failure::Usage(format!(
            "ByocGrant {name} is for namespace {}, not {namespace}: nothing renewed",
            target.unwrap_or("?")
        )));
    }
    let ns = Api::<LeanNamespace>::all(client.clone())
        .get_opt(namespace)
        .await
        .context(|| format!("read namespace {namespace}"))?
        .ok_or_else(|| {
            Failure::Usage(format!(
                "namespace {namespace} does not exist: there is nothing to renew the grant for \
                 yet; run this again once it is created"
            ))
        })?;
    let uid = ns.metadata.uid.ok_or_else(|| {
        Failure::Usage(format!(
            "namespace {namespace} has no readable UID: nothing renewed"
        ))
    })?;
    if let Some(StoredGrant::Readable(grant)) = stored
        && grant.spec.namespace_uid.as_deref() == Some(uid.as_str())
    {
        return Ok((grant, Action::Unchanged));
    }
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    params.dry_run = dry_run;
    let body = json!({
        "apiVersion": ByocGrant::api_version(&()),
        "kind": ByocGrant::kind(&()),
        "metadata": { "name": name },
        "spec": { "namespaceUID": uid },
    });
    let patched = cluster::stored_grants(client)
        .patch(name, &params, &Patch::Apply(body))
        .await
        .grant_context(|| format!("renew ByocGrant {name}"))?;
    match patched {
        StoredGrant::Readable(grant) => Ok((grant, Action::Renewed)),
        StoredGrant::Unreadable(u) => Err(Failure::Usage(format!(
            "ByocGrant {name} was renewed but cannot be read ({}): fix or replace it",
            u.error
        ))),
    }
}

/// Warns on stderr when the namespace does not exist (yet); a grant may precede it.
async fn warn_if_namespace_missing(client: &Client, namespace: &str) {
    let api: Api<LeanNamespace> = Api::all(client.clone());
    // Admins who may not read namespaces still get their grant; only a sure "missing" warns.
    if let Ok(None) = api.get_opt(namespace).await {
        eprintln!(
            "warning: namespace {namespace} does not exist (yet); the grant applies once it is \
             created"
        );
    }
}

/// Prints the outcome: the object with `-o`, otherwise one kubectl-style line.
fn print(
    args: &GrantArgs,
    grant: &ByocGrant,
    action: Action,
    now: Timestamp,
) -> Result<(), Failure> {
    if let Some(format) = args.output {
        return emit(&format.render(grant)?);
    }
    let dry = match args.dry_run {
        Some(DryRun::Server) => " (server dry run)",
        Some(DryRun::Client) => " (dry run)",
        None => "",
    };
    emit(&format!(
        "byocgrant/{} {}{dry}: {}\n",
        grant.metadata.name.as_deref().unwrap_or_default(),
        action.as_str(),
        describe(&grant.spec, now)
    ))
}

/// Polls until the controller has reported on the grant's current generation.
async fn wait_ready(
    client: &Client,
    grant: &ByocGrant,
    timeout: Duration,
) -> Result<bool, Failure> {
    let api = cluster::stored_grants(client);
    let name = grant.metadata.name.clone().unwrap_or_default();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let current = match api
            .get_opt(&name)
            .await
            .grant_context(|| format!("read ByocGrant {name}"))?
        {
            Some(StoredGrant::Readable(current)) => current,
            Some(StoredGrant::Unreadable(u)) => {
                eprintln!("byocgrant/{name} cannot be read any more: {}", u.error);
                return Ok(false);
            }
            None => {
                eprintln!("byocgrant/{name} was deleted while waiting for it");
                return Ok(false);
            }
        };
        let view = GrantView::new(&current, duration::now());
        if view.ready != "Unknown" {
            let reason = view.ready_reason.unwrap_or_default();
            let message = view.ready_message.unwrap_or_default();
            eprintln!("byocgrant/{name} Ready={}: {reason}: {message}", view.ready);
            return Ok(view.ready == "True");
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "byocgrant/{name}: the controller has not reported on it after {}s; is the \
                 byoc controller running?",
                timeout.as_secs()
            );
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Whether `s` is a valid object name (RFC 1123 subdomain).
fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(byoc_api::grant::is_dns1123_label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        grant: GrantArgs,
    }

    fn args(argv: &[&str]) -> GrantArgs {
        Cli::try_parse_from(std::iter::once("grant").chain(argv.iter().copied()))
            .unwrap()
            .grant
    }

    #[test]
    fn flags_become_a_validated_spec() {
        let now: Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
        let a = args(&[
            "tool-a",
            "--reason",
            "T1",
            "--registry",
            "quay.io",
            "--registry",
            "ghcr.io/x",
            "--registry",
            "quay.io",
            "--expires",
            "90d",
        ]);
        assert!(!a.any_registry);
        let s = spec(&a, now).unwrap();
        assert_eq!(s.registries, ["quay.io", "ghcr.io/x"]);
        assert_eq!(
            s.expires_at.unwrap().0,
            "2027-02-19T12:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(a.dry_run, None);
        assert_eq!(
            args(&["x", "--reason", "r", "--any-registry", "--dry-run"]).dry_run,
            Some(DryRun::Server)
        );
        assert_eq!(
            args(&[
                "x",
                "--reason",
                "r",
                "--registry",
                "quay.io",
                "--dry-run=client"
            ])
            .dry_run,
            Some(DryRun::Client)
        );

        let cases = [
            (
                &["Tool_A", "--reason", "T1", "--any-registry"][..],
                "invalid grant: spec.namespace \"Tool_A\"",
            ),
            (
                &["tool-a", "--reason", "  ", "--any-registry"],
                "invalid grant: spec.reason must not be empty",
            ),
            (
                &["tool-a", "--reason", "T1", "--registry", "https://quay.io"],
                "must not include a URL scheme",
            ),
            (
                &[
                    "tool-a",
                    "--reason",
                    "T1",
                    "--any-registry",
                    "--expires",
                    "2020-01-01",
                ],
                "--expires \"2020-01-01\" is",
            ),
            (
                &[
                    "tool-a",
                    "--reason",
                    "T1",
                    "--any-registry",
                    "--expires",
                    "soon",
                ],
                "is neither a duration",
            ),
        ];
        for (argv, want) in cases {
            let err = spec(&args(argv), now).unwrap_err().to_string();
            assert!(err.contains(want), "{argv:?}: {err}");
        }
    }

    #[test]
    fn requirement_flags_become_validated_requirements() {
        let now: Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
        let base = ["tool-a", "--reason", "T1", "--registry", "quay.io"];
        let with = |extra: &[&str]| spec(&args(&[&base[..], extra].concat()), now);
        assert_eq!(with(&[]).unwrap().requirements, None, "the default applies");
        assert_eq!(
            with(&["--no-requirements"]).unwrap().requirements,
            Some(Requirements::default()),
            "an explicit opt-out"
        );
        let full = with(&[
            "--built-on",
            "tools-harbor.wmcloud.org/toolforge/heroku-runner:22",
            "--built-on",
            "quay.io/base/run",
            "--built-on",
            "quay.io/base/run",
            "--require-digest",
            "--source-from",
            "https://gitlab.wikimedia.org/toolforge-repos/{tool}",
        ])
        .unwrap()
        .requirements
        .unwrap();
        assert_eq!(
            full.built_on,
            [
                BaseImage("tools-harbor.wmcloud.org/toolforge/heroku-runner:22".into()),
                BaseImage("quay.io/base/run".into())
            ]
        );
        assert!(full.require_digest);
        assert_eq!(full.source_from.len(), 1);
        let digest_only = with(&["--require-digest"]).unwrap().requirements.unwrap();
        assert!(digest_only.require_digest && digest_only.built_on.is_empty());
        for (extra, want) in [
            (
                &["--built-on", "heroku-runner"][..],
                "invalid grant: spec.requirements: builtOn entry \"heroku-runner\" is invalid",
            ),
            (
                &["--built-on", "quay.io/a@sha256:abc"],
                "a digest must be sha256:<64 lowercase hex digits>",
            ),
            (
                &["--source-from", "http://gitlab.wikimedia.org/x"],
                "invalid grant: spec.requirements: sourceFrom entry \"http://gitlab.wikimedia.org/x\" is invalid",
            ),
            (
                &["--source-from", "https://x.org/{user}"],
                "sourceFrom entry",
            ),
        ] {
            let err = with(extra).unwrap_err().to_string();
            assert!(err.contains(want), "{extra:?}: {err}");
        }
        let too_many: Vec<String> = (0..17).map(|i| format!("quay.io/base/b{i}")).collect();
        let mut argv: Vec<&str> = base.to_vec();
        for b in &too_many {
            argv.extend(["--built-on", b]);
        }
        let err = spec(&args(&argv), now).unwrap_err().to_string();
        assert!(
            err.contains("builtOn has 17 entries, more than 16"),
            "{err}"
        );
        // --no-requirements contradicts the requirement flags; --renew takes none of them.
        for argv in [
            &[&base[..], &["--no-requirements", "--require-digest"]].concat(),
            &["tool-a", "--renew", "--built-on", "quay.io/a"][..],
            &["tool-a", "--renew", "--no-requirements"],
        ] {
            let parsed = Cli::try_parse_from(std::iter::once("grant").chain(argv.iter().copied()));
            assert!(parsed.is_err(), "{argv:?}");
        }
    }

    #[test]
    fn any_registry_only_on_purpose() {
        let now: Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
        let any = args(&["tool-a", "--reason", "T1", "--any-registry"]);
        assert!(any.any_registry);
        assert!(
            spec(&any, now).unwrap().any_registry,
            "any registry only as anyRegistry: true"
        );
        assert!(spec(&any, now).unwrap().registries.is_empty());
        let some = args(&["tool-a", "--reason", "T1", "--registry", "quay.io"]);
        assert_eq!(spec(&some, now).unwrap().registries, ["quay.io"]);

        let parse = |argv: &[&str]| {
            Cli::try_parse_from(std::iter::once("grant").chain(argv.iter().copied()))
                .map(|_| ())
                .unwrap_err()
        };
        // Neither: refused with a usage error that names both flags.
        let neither = parse(&["tool-a", "--reason", "T1"]);
        assert_eq!(
            neither.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        let text = neither.to_string();
        assert!(
            text.contains("--registry <REGISTRY>") && text.contains("--any-registry"),
            "{text}"
        );
        // Both: refused as a conflict.
        let both = parse(&[
            "tool-a",
            "--reason",
            "T1",
            "--registry",
            "quay.io",
            "--any-registry",
        ]);
        assert_eq!(both.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert!(both.to_string().contains("--any-registry"), "{both}");
        assert_eq!(neither.exit_code(), 2);
        assert_eq!(both.exit_code(), 2);
    }

    #[test]
    fn renew_takes_nothing_but_the_grant() {
        let renew = args(&["tool-a", "--renew", "--name", "tool-a-migration"]);
        assert!(renew.renew && renew.reason.is_none());
        assert_eq!(renew.name.as_deref(), Some("tool-a-migration"));
        for extra in [
            &["--reason", "T1"][..],
            &["--registry", "quay.io"],
            &["--any-registry"],
            &["--expires", "90d"],
        ] {
            let argv: Vec<&str> = ["grant", "tool-a", "--renew"]
                .into_iter()
                .chain(extra.iter().copied())
                .collect();
            let error = Cli::try_parse_from(argv).map(|_| ()).unwrap_err();
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{extra:?}: {error}"
            );
        }
        // Without --renew, the reason is required.
        let error = Cli::try_parse_from(["grant", "tool-a", "--any-registry"])
            .map(|_| ())
            .unwrap_err();
        assert_eq!(
            error.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        assert!(error.to_string().contains("--reason"), "{error}");
    }

    #[test]
    fn object_names() {
        assert!(is_dns1123_subdomain("tool-a.migration-1"));
        for bad in ["", "Tool", "a..b", "-a", "a_b", &"a".repeat(254)] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
    }
}

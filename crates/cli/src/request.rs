//! `kubectl byoc request` (a tool maintainer asks for a grant) and `kubectl byoc requests`
//! (everyone sees where requests stand).

use byoc_api::grant::registries_summary;
use byoc_api::{ByocRequest, ByocRequestSpec, Lenient, RequestPhase};
use clap::{ArgGroup, Args, ValueEnum};
use jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client, Resource};
use serde::Serialize;

use crate::Failure;
use crate::cluster::{ClusterArgs, Context, list_all};
use crate::duration::{self, human};
use crate::output::{ObjectFormat, emit, shell_quote};
use crate::table::Table;

/// `request` arguments.
#[derive(Args, Debug)]
#[command(
    group(
        ArgGroup::new("asked")
            .required(true)
            .args(["registries", "any_registry"])
    ),
    after_help = "Examples:\n  \
    # Ask for quay.io/wikibugs for 90 days, for the current namespace\n  \
    kubectl byoc request --registry quay.io/wikibugs --reason 'T302863: mixes java and python' \
    --duration 90d\n\n  \
    # For another namespace you maintain, any registry, without end\n  \
    kubectl byoc request -n tool-x --any-registry --reason T123\n\n\
    The request is a ByocRequest in the namespace; it grants nothing until a platform admin \
    approves it (which creates a ByocGrant, possibly narrower or shorter) or denies it. Follow \
    it with `kubectl byoc requests` or `kubectl describe byocreq NAME`. Exit status: 0 filed, \
    2 invalid input or API error."
)]
pub struct RequestArgs {
    /// A registry the namespace's pods need, host[:port][/path-prefix]; repeat for several.
    #[arg(long = "registry", value_name = "REGISTRY")]
    registries: Vec<String>,
    /// Ask for any registry (a request without registries). Required, on purpose, when no
    /// --registry is given.
    #[arg(long, conflicts_with = "registries")]
    any_registry: bool,
    /// Why the namespace needs its own images, for the admins who review it (e.g. a task).
    #[arg(long, value_name = "TEXT")]
    reason: String,
    /// How long the grant should last, like 90d, 12h, 2w or 1d12h (default: no end).
    #[arg(long, value_name = "DURATION")]
    duration: Option<String>,
    /// The namespace (default: the kubeconfig context's).
    #[arg(long, short = 'n', value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// The request's name (default: generated, `byoc-` and five characters).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Print the created ByocRequest instead of a summary.
    #[arg(long, short = 'o', value_enum, value_name = "FORMAT")]
    output: Option<ObjectFormat>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Runs `request`.
pub async fn run_request(args: RequestArgs) -> Result<bool, Failure> {
    let mut registries: Vec<String> = Vec::new();
    for r in &args.registries {
        if !registries.contains(r) {
            registries.push(r.clone());
        }
    }
    let spec = ByocRequestSpec {
        registries,
        reason: args.reason.clone(),
        duration: args.duration.clone(),
    };
    let client = args.cluster.client().await?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    spec.validate(&namespace)
        .map_err(|e| Failure::Usage(format!("invalid request: {e}")))?;
    let mut request = ByocRequest::new(args.name.as_deref().unwrap_or_default(), spec);
    request.metadata = ObjectMeta {
        name: args.name.clone(),
        generate_name: args.name.is_none().then(|| "byoc-".to_owned()),
        namespace: Some(namespace.clone()),
        ..ObjectMeta::default()
    };
    let pp = PostParams {
        dry_run: false,
        field_manager: Some("kubectl-byoc".into()),
    };
    let created = Api::<ByocRequest>::namespaced(client.clone(), &namespace)
        .create(&pp, &request)
        .await
        .request_context(|| format!("create a ByocRequest in namespace {namespace}"))?;
    if let Some(format) = args.output {
        return emit(&format.render(&created)?).map(|()| true);
    }
    emit(&filed(&created))?;
    Ok(true)
}

/// What `request` prints: the request, and what happens next.
fn filed(request: &ByocRequest) -> String {
    let name = request.metadata.name.as_deref().unwrap_or_default();
    let ns = request.metadata.namespace.as_deref().unwrap_or_default();
    let spec = &request.spec;
    let registries = if spec.registries.is_empty() {
        "any registry".to_owned()
    } else {
        format!("registries {}", spec.registries.join(", "))
    };
    let duration = spec
        .duration
        .as_deref()
        .map_or_else(|| "without end".to_owned(), |d| format!("for {d}"));
    format!(
        "byocrequest/{name} created in namespace {ns}: {registries}, {duration}\n\
         It grants nothing yet: a platform admin approves it ({}), possibly for fewer registries \
         or a shorter time, or denies it.\n\
         Follow it: kubectl byoc requests -n {ns}; kubectl describe byocreq -n {ns} {name}\n",
        approve_command(request)
    )
}

/// `requests` arguments.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    kubectl byoc requests\n  \
    kubectl byoc requests -A -o wide\n  \
    kubectl byoc requests -A -o json | jq -r '.items[] | select(.status.phase == \"Pending\") | \
    .metadata.name'\n\n\
    Pending requests come first, oldest first; then the others, newest first. REGISTRIES is \
    what was asked for or, once approved, what the grant allows (`any` for any registry); \
    EXPIRES is the time the grant has left. -o json and -o yaml print the ByocRequests as a \
    kubectl List. Exit status: 0 listed (also when there is none), 2 API error.")]
pub struct RequestsArgs {
    /// Only this namespace (default: the kubeconfig context's).
    #[arg(
        long,
        short = 'n',
        value_name = "NAMESPACE",
        conflicts_with = "all_namespaces"
    )]
    namespace: Option<String>,
    /// Requests of every namespace.
    #[arg(long, short = 'A')]
    all_namespaces: bool,
    /// Output format: a table (default), a wider table, or the objects as JSON/YAML.
    #[arg(long, short = 'o', value_enum, value_name = "FORMAT")]
    output: Option<RequestsFormat>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// How `requests` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RequestsFormat {
    /// The table plus who decided, the duration asked for and the reason.
    Wide,
    /// A kubectl `List` of ByocRequests as JSON.
    Json,
    /// The same as YAML.
    Yaml,
}

/// A kubectl `List`, as `kubectl get -o json` prints several objects.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct List<'a> {
    api_version: &'static str,
    kind: &'static str,
    items: &'a [ByocRequest],
}

/// Runs `requests`.
pub async fn run_requests(args: RequestsArgs) -> Result<bool, Failure> {
    let client = args.cluster.client().await?;
    let namespace = (!args.all_namespaces).then(|| {
        args.namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned())
    });
    let mut items = list(&client, namespace.as_deref()).await?;
    sort(&mut items);
    let now = duration::now();
    let text = match args.output {
        None => table(&items, namespace.is_none(), false, now),
        Some(RequestsFormat::Wide) => table(&items, namespace.is_none(), true, now),
        Some(RequestsFormat::Json) | Some(RequestsFormat::Yaml) => {
            let format = if args.output == Some(RequestsFormat::Json) {
                ObjectFormat::Json
            } else {
                ObjectFormat::Yaml
            };
            format.render(&List {
                api_version: "v1",
                kind: "List",
                items: &items,
            })?
        }
    };
    if text.is_empty() {
        match &namespace {
            Some(ns) => eprintln!("No ByocRequests in namespace {ns}."),
            None => eprintln!("No ByocRequests found."),
        }
    }
    emit(&text)?;
    Ok(true)
}

/// The ByocRequests of `namespace`, or of every namespace.
async fn list(client: &Client, namespace: Option<&str>) -> Result<Vec<ByocRequest>, Failure> {
    let all = list_all(&read_requests(client, namespace))
        .await
        .request_context(|| "list ByocRequests".into())?;
    Ok(all.into_iter().map(|r| r.0).collect())
}

/// Pending first, oldest first (the queue admins work through); then the decided ones, newest
/// first.
fn sort(items: &mut [ByocRequest]) {
    items.sort_by(|a, b| {
        let created = |r: &ByocRequest| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let (pa, pb) = (a.phase().is_decided(), b.phase().is_decided());
        pa.cmp(&pb).then_with(|| {
            if pa {
                created(b).cmp(&created(a))
            } else {
                created(a).cmp(&created(b))
            }
        })
    });
}

/// The table of `requests`; empty when there are none.
fn table(items: &[ByocRequest], all: bool, wide: bool, now: Timestamp) -> String {
    if items.is_empty() {
        return String::new();
    }
    let mut headers = Vec::new();
    if all {
        headers.push("NAMESPACE");
    }
    headers.extend(["NAME", "REGISTRIES", "PHASE", "GRANT", "EXPIRES", "AGE"]);
    if wide {
        headers.extend(["DURATION", "DECIDED-BY", "REASON", "MESSAGE"]);
    }
    let mut t = Table::new(headers);
    for r in items {
        let status = r.status.clone().unwrap_or_default();
        let mut row = Vec::new();
        if all {
            row.push(r.metadata.namespace.clone().unwrap_or_default());
        }
        row.extend([
            r.metadata.name.clone().unwrap_or_default(),
            status
                .registries
                .clone()
                .unwrap_or_else(|| registries_summary(&r.spec.registries)),
            match r.metadata.deletion_timestamp {
                // Held by a finalizer: listed until it goes, but no longer to be decided.
                Some(_) => format!("{} (Terminating)", r.phase().as_str()),
                None => r.phase().as_str().to_owned(),
            },
            status.grant.clone().unwrap_or_default(),
            match (r.phase(), status.expires_at.as_ref()) {
                (RequestPhase::Approved | RequestPhase::Expired, Some(t)) => {
                    duration::time_left(t.0, now)
                }
                (RequestPhase::Approved, None) => "never".to_owned(),
                _ => String::new(),
            },
            r.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| human(now.duration_since(t.0)))
                .unwrap_or_default(),
        ]);
        if wide {
            row.extend([
                r.spec.duration.clone().unwrap_or_default(),
                status.decided_by.clone().unwrap_or_default(),
                r.spec.reason.clone(),
                status.message.clone().unwrap_or_default(),
            ]);
        }
        t.push(row);
    }
    t.to_string()
}

/// The ByocRequest API of `namespace` (every namespace with `None`) for reading: metadata is
/// read leniently, so a request whose `managedFields` a tenant wrote in a form Rust cannot read
/// (a far time) fails neither the list nor the other requests.
pub fn read_requests(client: &Client, namespace: Option<&str>) -> Api<Lenient<ByocRequest>> {
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The command that approves exactly what `request` asks for, quoted for a shell:
/// `kubectl byoc approve -n NS NAME`, its registries (or `--any-registry`) and its duration
/// (or `--no-expiry`).
pub fn approve_command(request: &ByocRequest) -> String {
    let mut words = vec![
        "kubectl byoc approve -n".to_owned(),
        shell_quote(request.meta().namespace.as_deref().unwrap_or_default()),
        shell_quote(request.meta().name.as_deref().unwrap_or_default()),
    ];
    if request.spec.registries.is_empty() {
        words.push("--any-registry".into());
    }
    for registry in &request.spec.registries {
        words.extend(["--registry".to_owned(), shell_quote(registry)]);
    }
    match &request.spec.duration {
        Some(duration) => words.extend(["--expires".to_owned(), shell_quote(duration)]),
        None => words.push("--no-expiry".into()),
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use byoc_api::ByocRequestStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn request(
        ns: &str,
        name: &str,
        created: &str,
        phase: Option<RequestPhase>,
        registries: &[&str],
    ) -> ByocRequest {
        let mut r = ByocRequest::new(
            name,
            ByocRequestSpec {
                registries: registries.iter().map(|s| s.to_string()).collect(),
                reason: format!("T1 {name}"),
                duration: Some("90d".into()),
            },
        );
        r.metadata.namespace = Some(ns.into());
        r.metadata.creation_timestamp = Some(Time(ts(created)));
        r.status = phase.map(|phase| ByocRequestStatus {
            phase: Some(phase),
            ..ByocRequestStatus::default()
        });
        r
    }

    #[test]
    fn pending_first_oldest_first_then_newest_decided() {
        let mut items = vec![
            request(
                "a",
                "denied-old",
                "2026-01-01T00:00:00Z",
                Some(RequestPhase::Denied),
                &[],
            ),
            request("a", "pending-new", "2026-03-01T00:00:00Z", None, &[]),
            request(
                "b",
                "approved-new",
                "2026-04-01T00:00:00Z",
                Some(RequestPhase::Approved),
                &[],
            ),
            request(
                "b",
                "pending-old",
                "2026-02-01T00:00:00Z",
                Some(RequestPhase::Pending),
                &[],
            ),
        ];
        sort(&mut items);
        let names: Vec<_> = items
            .iter()
            .map(|r| r.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            ["pending-old", "pending-new", "approved-new", "denied-old"]
        );
    }

    #[test]
    fn tables_show_asked_or_granted_registries_and_time_left() {
        let now = ts("2026-11-21T12:00:00Z");
        let pending = request(
            "tool-a",
            "byoc-x",
            "2026-11-21T11:00:00Z",
            None,
            &["quay.io/x"],
        );
        let mut approved = request(
            "tool-b",
            "byoc-y",
            "2026-11-20T12:00:00Z",
            Some(RequestPhase::Approved),
            &["quay.io"],
        );
        approved.status = Some(ByocRequestStatus {
            phase: Some(RequestPhase::Approved),
            registries: Some("quay.io/y".into()),
            grant: Some("tool-b-abcde".into()),
            expires_at: Some(Time(ts("2026-12-21T12:00:00Z"))),
            decided_by: Some("admin".into()),
            message: Some("approved".into()),
            ..ByocRequestStatus::default()
        });
        let mut deleting = request(
            "tool-c",
            "byoc-z",
            "2026-11-21T11:30:00Z",
            None,
            &["ghcr.io"],
        );
        deleting.metadata.deletion_timestamp = Some(Time(ts("2026-11-21T11:45:00Z")));
        let text = table(
            &[pending.clone(), deleting, approved.clone()],
            true,
            false,
            now,
        );
        assert_eq!(
            text,
            "NAMESPACE   NAME     REGISTRIES   PHASE                   GRANT          EXPIRES   AGE\n\
             tool-a      byoc-x   quay.io/x    Pending                                          60m\n\
             tool-c      byoc-z   ghcr.io      Pending (Terminating)                            30m\n\
             tool-b      byoc-y   quay.io/y    Approved                tool-b-abcde   30d       24h\n"
        );
        let wide = table(&[approved], false, true, now);
        assert!(wide.starts_with("NAME "), "{wide}");
        assert!(wide.contains("DURATION   DECIDED-BY   REASON"), "{wide}");
        assert!(
            wide.contains("90d        admin        T1 byoc-y   approved"),
            "{wide}"
        );
        assert_eq!(table(&[], true, true, now), "");
    }

    #[test]
    fn filing_says_what_happens_next() {
        let r = request(
            "tool-a",
            "byoc-x",
            "2026-11-21T11:00:00Z",
            None,
            &["quay.io/x"],
        );
        let text = filed(&r);
        assert!(
            text.starts_with(
                "byocrequest/byoc-x created in namespace tool-a: registries quay.io/x, for 90d\n"
            ),
            "{text}"
        );
        let command = "kubectl byoc approve -n tool-a byoc-x --registry quay.io/x --expires 90d";
        assert!(text.contains(command), "{text}");
        assert_eq!(approve_command(&r), command);
        let mut wide = request("tool-a", "byoc-y", "2026-11-21T11:00:00Z", None, &[]);
        wide.spec.duration = None;
        assert_eq!(
            approve_command(&wide),
            "kubectl byoc approve -n tool-a byoc-y --any-registry --no-expiry"
        );
        let two = request(
            "tool-a",
            "b",
            "2026-11-21T11:00:00Z",
            None,
            &["quay.io", "ghcr.io/w"],
        );
        assert_eq!(
            approve_command(&two),
            "kubectl byoc approve -n tool-a b --registry quay.io --registry ghcr.io/w --expires 90d"
        );
    }
}

//! `kubectl byoc approve` and `kubectl byoc deny`: an admin decides on a ByocRequest.
//!
//! Approving creates the ByocGrant the admin states (registries and expiry are required on the
//! command line; they may narrow what the request asks for, never widen it, checked against the
//! request as read when the command runs), recording the request's UID, then moves the request
//! from Pending to Approved with an update that carries the request's resourceVersion and UID:
//! of two admins racing, or an admin racing a deny, exactly one moves it. When that update fails
//! the grant just created is deleted again (by UID), so a failed approval changes nothing.

use byoc_api::request::request_key;
use byoc_api::{
    ByocGrant, ByocGrantSpec, ByocRequest, ByocRequestStatus, InvalidGrant, LeanNamespace, Lenient,
    REQUEST_ANNOTATION, RegistryPattern, RequestPhase, RequestRecord,
};
use clap::{ArgGroup, Args};
use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::{Api, Client};
use thiserror::Error;

use crate::Failure;
use crate::cluster::{self, ClusterArgs, ClusterError, Context};
use crate::duration::{self, TimeError, parse_duration, parse_expiry};
use crate::list::describe;
use crate::output::{ObjectFormat, emit};
use crate::request::read_requests;

/// `approve` arguments.
#[derive(Args, Debug)]
#[command(
    group(ArgGroup::new("granted").required(true).args(["registries", "any_registry"])),
    group(ArgGroup::new("until").required(true).args(["expires", "no_expiry"])),
    after_help = "Examples:\n  \
    # Approve what was asked for (`kubectl byoc request` prints this command)\n  \
    kubectl byoc approve -n tool-wikibugs byoc-x7k2p --registry quay.io/wikibugs --expires 90d\n\n  \
    # Approve less: one of the registries asked for, for 30 days instead of 90\n  \
    kubectl byoc approve -n tool-wikibugs byoc-x7k2p --registry quay.io/wikibugs/bot --expires 30d\n\n  \
    # A request for any registry without end, approved as asked\n  \
    kubectl byoc approve -n tool-x byoc-q2w3e --any-registry --no-expiry\n\n\
    You state what the grant allows: --registry (or --any-registry) and --expires (or \
    --no-expiry) are required, and are checked against the request as it is when you run the \
    command: a registry it does not cover, --any-registry when it names registries, an expiry \
    past the duration it asks for, or --no-expiry when it asks for a duration, is refused. So \
    a request deleted and created again under the same name between your review and this \
    command never gets more than you typed. Creates a ByocGrant for the request's namespace \
    (named after it, with a generated suffix) whose reason records the request, annotated \
    byoc.toolforge.org/request=NAMESPACE/NAME/UID, and marks the request Approved by you (as \
    the API server knows you). A request that is not Pending, is being deleted, or whose \
    namespace is gone is refused, and nothing changes. Needs: create byocgrants, update \
    byocrequests/status, get namespaces. Exit status: 0 approved, 2 refused, invalid input or \
    API error."
)]
pub struct ApproveArgs {
    /// The ByocRequest.
    #[arg(value_name = "NAME")]
    name: String,
    /// Its namespace (required: an admin names the tenant explicitly).
    #[arg(long, short = 'n', value_name = "NAMESPACE")]
    namespace: String,
    /// Grant this registry (repeat for several); each must be covered by the request.
    #[arg(long = "registry", value_name = "REGISTRY")]
    registries: Vec<String>,
    /// Grant any registry; only for a request that asks for any registry.
    #[arg(long, conflicts_with = "registries")]
    any_registry: bool,
    /// When the grant ends: a duration from now (30d), an RFC 3339 time or a date; no later
    /// than the duration the request asks for.
    #[arg(long, value_name = "WHEN")]
    expires: Option<String>,
    /// A grant without end; only for a request that asks for no duration.
    #[arg(long, conflicts_with = "expires")]
    no_expiry: bool,
    /// Print the created ByocGrant instead of a summary.
    #[arg(long, short = 'o', value_enum, value_name = "FORMAT")]
    output: Option<ObjectFormat>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// `deny` arguments.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    kubectl byoc deny -n tool-x byoc-x7k2p --reason 'use the build service: T123'\n\n\
    Marks a Pending request Denied, with your name and the reason, which the maintainer reads \
    in `kubectl byoc requests -o wide` and `kubectl describe byocreq`. Exit status: 0 denied, 2 \
    refused (not Pending), invalid input or API error.")]
pub struct DenyArgs {
    /// The ByocRequest.
    #[arg(value_name = "NAME")]
    name: String,
    /// Its namespace (required: an admin names the tenant explicitly).
    #[arg(long, short = 'n', value_name = "NAMESPACE")]
    namespace: String,
    /// Why, for the maintainer.
    #[arg(long, value_name = "TEXT")]
    reason: String,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Why a decision is refused; nothing was changed.
#[derive(Debug, Error, PartialEq)]
pub enum Refusal {
    /// The request is no longer Pending.
    #[error("ByocRequest {key} is already {phase}{detail}: nothing changed")]
    Decided {
        /// `namespace/name`.
        key: String,
        /// Its phase.
        phase: &'static str,
        /// By whom and what, for the message.
        detail: String,
    },
    /// The request is being deleted.
    #[error("ByocRequest {0} is being deleted: nothing changed")]
    Deleting(String),
    /// The request was deleted and created again while deciding.
    #[error("ByocRequest {0} was deleted and created again meanwhile: look at it again")]
    Replaced(String),
    /// A stated registry (or any registry) the request does not cover.
    #[error(
        "{entry} would widen the request, which asks for {asked}: an approval may only narrow \
         it (to grant more, use kubectl byoc grant)"
    )]
    Wider {
        /// `--registry R` or `--any-registry`.
        entry: String,
        /// What the request asks for.
        asked: String,
    },
    /// An expiry later than the request's duration allows.
    #[error(
        "--expires {at} is later than the {duration} the request asks for (until {max}): an \
         approval may only shorten it"
    )]
    Longer {
        /// The expiry given.
        at: Timestamp,
        /// The duration asked for.
        duration: String,
        /// The latest expiry allowed.
        max: Timestamp,
    },
    /// `--no-expiry` for a request that asks for a duration.
    #[error(
        "--no-expiry would outlast the {0} the request asks for: an approval may only shorten \
         it (state --expires {0} or sooner)"
    )]
    Endless(String),
    /// `--expires` does not read.
    #[error("--expires {0}")]
    Expiry(#[from] TimeError),
    /// The stored request's duration does not read.
    #[error("the request's spec.duration {0}")]
    Duration(TimeError),
    /// The grant would not be valid.
    #[error("the grant would be invalid: {0}")]
    Invalid(#[from] InvalidGrant),
}

/// Refuses a request that is no longer open to a decision.
fn open(request: &ByocRequest) -> Result<(), Refusal> {
    let key = key(request);
    let status = request.status.clone().unwrap_or_default();
    let phase = request.phase();
    if phase.is_decided() {
        let by = status
            .decided_by
            .map(|by| format!(" (decided by {by})"))
            .unwrap_or_default();
        let what = match (phase, status.grant, status.message) {
            (RequestPhase::Denied, _, Some(message)) => format!(": {message}"),
            (_, Some(grant), _) => format!(", ByocGrant {grant}"),
            _ => String::new(),
        };
        return Err(Refusal::Decided {
            key,
            phase: phase.as_str(),
            detail: format!("{by}{what}"),
        });
    }
    if request.metadata.deletion_timestamp.is_some() {
        return Err(Refusal::Deleting(key));
    }
    Ok(())
}

fn key(request: &ByocRequest) -> String {
    request_key(
        request.metadata.namespace.as_deref().unwrap_or_default(),
        request.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// The grant an admin states on the command line.
#[derive(Clone, Copy, Debug)]
struct Stated<'a> {
    /// The registries; empty for any registry (`--any-registry`).
    registries: &'a [String],
    /// `--expires`; `None` for a grant without end (`--no-expiry`).
    expires: Option<&'a str>,
}

/// The grant spec approving `request` at `now` creates: exactly what the admin stated, refused
/// when that is wider or longer than the request asks for.
fn grant_spec(
    request: &ByocRequest,
    stated: Stated<'_>,
    now: Timestamp,
) -> Result<ByocGrantSpec, Refusal> {
    open(request)?;
    let asked = &request.spec.registries;
    let mut granted: Vec<String> = Vec::new();
    for entry in stated.registries {
        if !granted.contains(entry) {
            granted.push(entry.clone());
        }
    }
    if !asked.is_empty() {
        let wider = |entry: String| Refusal::Wider {
            entry,
            asked: asked.join(", "),
        };
        if granted.is_empty() {
            return Err(wider("--any-registry".into()));
        }
        let asked_patterns: Vec<RegistryPattern> =
            asked.iter().filter_map(|a| a.parse().ok()).collect();
        for entry in &granted {
            let pattern: RegistryPattern = entry.parse().map_err(InvalidGrant::Registry)?;
            if !asked_patterns.iter().any(|a| pattern.is_covered_by(a)) {
                return Err(wider(format!("--registry {entry}")));
            }
        }
    }
    let expires_at = match (stated.expires, &request.spec.duration) {
        (None, None) => None,
        (None, Some(duration)) => return Err(Refusal::Endless(duration.clone())),
        (Some(expires), asked) => {
            let at = parse_expiry(expires, now)?;
            if let Some(duration) = asked {
                let span = parse_duration(duration).map_err(Refusal::Duration)?;
                // A duration ending past the last representable time bounds no expiry there is.
                if let Ok(max) = now.checked_add(span)
                    && at > max
                {
                    return Err(Refusal::Longer {
                        at,
                        duration: duration.clone(),
                        max,
                    });
                }
            }
            Some(at)
        }
    };
    let spec = ByocGrantSpec {
        namespace: request.metadata.namespace.clone().unwrap_or_default(),
        reason: grant_reason(&request.spec.reason, &key(request)),
        any_registry: granted.is_empty(),
        registries: granted,
        namespace_uid: None,
        expires_at: expires_at.map(Time),
        requirements: None,
    };
    spec.validate()?;
    Ok(spec)
}

/// The grant's reason: the request's, then the request it came from, within the 1024
/// characters a reason may have.
fn grant_reason(reason: &str, key: &str) -> String {
    let suffix = format!(" (ByocRequest {key})");
    let room = 1024usize.saturating_sub(suffix.chars().count());
    let reason: String = reason.trim().chars().take(room).collect();
    format!("{reason}{suffix}")
}

/// The request's status once approved by `by` with `grant`; its conditions are the
/// controller's to update.
fn approved(request: &ByocRequest, grant: &ByocGrant, by: &str) -> ByocRequestStatus {
    ByocRequestStatus {
        phase: Some(RequestPhase::Approved),
        registries: Some(grant.spec.registries_summary()),
        grant: grant.metadata.name.clone(),
        expires_at: grant.spec.expires_at.clone(),
        decided_by: Some(by.to_owned()),
        message: Some(format!("approved by {by}")),
        ..request.status.clone().unwrap_or_default()
    }
}

/// The request's status once denied by `by` for `reason`.
fn denied(request: &ByocRequest, by: &str, reason: &str) -> ByocRequestStatus {
    ByocRequestStatus {
        phase: Some(RequestPhase::Denied),
        decided_by: Some(by.to_owned()),
        message: Some(format!("denied by {by}: {reason}")),
        ..request.status.clone().unwrap_or_default()
    }
}

/// Runs `approve`.
pub async fn run_approve(args: ApproveArgs) -> Result<bool, Failure> {
    let client = args.cluster.client().await?;
    let namespace = &args.namespace;
    let by = whoami(&client).await?;
    let request = get(&client, namespace, &args.name).await?;
    // First: in a namespace being deleted, the request is being deleted too.
    namespace_present(&client, namespace).await?;
    let now = duration::now();
    let stated = Stated {
        registries: &args.registries,
        expires: args.expires.as_deref(),
    };
    let spec = grant_spec(&request, stated, now).map_err(refused)?;
    let grant = create_grant(&client, &request, spec).await?;
    let decided = decide(&client, request, |r| Ok(approved(r, &grant, &by))).await;
    if let Err(failure) = decided {
        return Err(undo(&client, &grant, failure).await);
    }
    if let Some(format) = args.output {
        return emit(&format.render(&grant)?).map(|()| true);
    }
    emit(&format!(
        "byocrequest/{} approved by {by}: byocgrant/{} created: {}\n",
        args.name,
        grant.metadata.name.as_deref().unwrap_or_default(),
        describe(&grant.spec, now)
    ))?;
    Ok(true)
}

/// Runs `deny`.
pub async fn run_deny(args: DenyArgs) -> Result<bool, Failure> {
    if args.reason.trim().is_empty() {
        return Err(Failure::Usage(
            "--reason must not be empty: tell the maintainer why".into(),
        ));
    }
    let client = args.cluster.client().await?;
    let by = whoami(&client).await?;
    let request = get(&client, &args.namespace, &args.name).await?;
    open(&request).map_err(refused)?;
    let reason = args.reason.trim();
    decide(&client, request, |r| Ok(denied(r, &by, reason))).await?;
    emit(&format!(
        "byocrequest/{} denied by {by}: {reason}\n",
        args.name
    ))?;
    Ok(true)
}

fn refused(refusal: Refusal) -> Failure {
    Failure::Usage(refusal.to_string())
}

/// The user name the API server knows this client as (a SelfSubjectReview).
async fn whoami(client: &Client) -> Result<String, Failure> {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .context(|| "ask the API server who you are (SelfSubjectReview)".into())?;
    review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            Failure::Usage("the API server did not say who you are (SelfSubjectReview)".into())
        })
}

/// Reads a request, its metadata leniently (see [`read_requests`]).
async fn get(client: &Client, namespace: &str, name: &str) -> Result<ByocRequest, Failure> {
    read_requests(client, Some(namespace))
        .get_opt(name)
        .await
        .request_context(|| format!("read ByocRequest {namespace}/{name}"))?
        .map(|r| r.0)
        .ok_or_else(|| Failure::Usage(format!("no ByocRequest {name} in namespace {namespace}")))
}

/// Refuses to approve for a namespace that is gone or going.
async fn namespace_present(client: &Client, namespace: &str) -> Result<(), Failure> {
    let api: Api<LeanNamespace> = Api::all(client.clone());
    match api
        .get_opt(namespace)
        .await
        .context(|| format!("read namespace {namespace}"))?
    {
        None => Err(Failure::Usage(format!(
            "namespace {namespace} is gone: nothing to approve for; nothing changed"
        ))),
        Some(ns) if ns.metadata.deletion_timestamp.is_some() => Err(Failure::Usage(format!(
            "namespace {namespace} is being deleted: nothing changed"
        ))),
        Some(_) => Ok(()),
    }
}

async fn create_grant(
    client: &Client,
    request: &ByocRequest,
    spec: ByocGrantSpec,
) -> Result<ByocGrant, Failure> {
    let record = RequestRecord::of(request).ok_or_else(|| {
        Failure::Usage(format!(
            "ByocRequest {} as read has no namespace, name or UID",
            key(request)
        ))
    })?;
    let mut grant = ByocGrant::new("", spec);
    grant.metadata = ObjectMeta {
        generate_name: Some(format!("{}-", grant.spec.namespace)),
        annotations: Some([(REQUEST_ANNOTATION.to_owned(), record.to_string())].into()),
        ..ObjectMeta::default()
    };
    let pp = PostParams {
        dry_run: false,
        field_manager: Some("kubectl-byoc".into()),
    };
    Ok(cluster::grants(client)
        .create(&pp, &grant)
        .await
        .grant_context(|| format!("create the ByocGrant for ByocRequest {}", key(request)))?)
}

/// Writes the status `make` computes from the request, with the request's resourceVersion and
/// UID as preconditions. On a conflict the request is read again and `make` decides anew, so a
/// write from the controller meanwhile is no obstacle, and another decision is never
/// overwritten. When the outcome of a write is unknown (no answer, an answer that does not
/// read), the request is read again: the write happened if it shows this decision.
async fn decide(
    client: &Client,
    mut request: ByocRequest,
    make: impl Fn(&ByocRequest) -> Result<ByocRequestStatus, Refusal>,
) -> Result<ByocRequest, Failure> {
    let namespace = request.metadata.namespace.clone().unwrap_or_default();
    let name = request.metadata.name.clone().unwrap_or_default();
    let uid = request.metadata.uid.clone();
    let api = read_requests(client, Some(&namespace));
    let failed = |source| -> Failure {
        ClusterError::Api {
            what: format!("update the status of ByocRequest {namespace}/{name}"),
            source,
        }
        .into()
    };
    for _ in 0..5 {
        open(&request).map_err(refused)?;
        let status = make(&request).map_err(refused)?;
        request.status = Some(status.clone());
        let sent = Lenient(request);
        match api
            .replace_status(&name, &PostParams::default(), &sent)
            .await
        {
            Ok(updated) => return Ok(updated.0),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e @ kube::Error::Api(_)) => return Err(failed(e)),
            Err(e) => {
                let current = get(client, &namespace, &name).await?;
                if current.metadata.uid == uid && same_decision(current.status.as_ref(), &status) {
                    return Ok(current);
                }
                return Err(failed(e));
            }
        }
        request = get(client, &namespace, &name).await?;
        if request.metadata.uid != uid {
            return Err(refused(Refusal::Replaced(key(&request))));
        }
    }
    Err(Failure::Usage(format!(
        "ByocRequest {namespace}/{name} keeps changing: try again"
    )))
}

/// Whether a stored status records the decision `written` (the controller may have rewritten
/// the message since).
fn same_decision(stored: Option<&ByocRequestStatus>, written: &ByocRequestStatus) -> bool {
    stored.is_some_and(|s| {
        (s.phase, &s.grant, &s.decided_by) == (written.phase, &written.grant, &written.decided_by)
    })
}

/// Deletes the grant an approval created when the request could not be marked Approved, and
/// returns the failure, saying whether the grant is gone.
async fn undo(client: &Client, grant: &ByocGrant, failure: Failure) -> Failure {
    let name = grant.metadata.name.clone().unwrap_or_default();
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: grant.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match cluster::grants(client).delete(&name, &dp).await {
        Ok(_) => Failure::Usage(format!(
            "{failure}; the ByocGrant {name} it had created was deleted again: nothing changed"
        )),
        Err(e) => Failure::Usage(format!(
            "{failure}; and the ByocGrant {name} it had created could not be deleted ({e}): \
             delete it (kubectl byoc revoke --name {name})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use byoc_api::ByocRequestSpec;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn request(registries: &[&str], duration: Option<&str>) -> ByocRequest {
        let mut r = ByocRequest::new(
            "byoc-x",
            ByocRequestSpec {
                registries: registries.iter().map(|s| s.to_string()).collect(),
                reason: "T1: needs java".into(),
                duration: duration.map(Into::into),
            },
        );
        r.metadata.namespace = Some("tool-a".into());
        r
    }

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn spec(
        r: &ByocRequest,
        registries: &[&str],
        expires: Option<&str>,
        now: Timestamp,
    ) -> Result<ByocGrantSpec, Refusal> {
        let registries = strings(registries);
        let stated = Stated {
            registries: &registries,
            expires,
        };
        grant_spec(r, stated, now)
    }

    #[test]
    fn approvals_grant_what_is_stated_and_may_narrow_never_widen() {
        let now = ts("2026-11-21T12:00:00Z");
        let quay = request(&["quay.io", "ghcr.io/wikimedia"], Some("90d"));
        let any = request(&[], None);
        let ok =
            |r: &ByocRequest, regs: &[&str], exp: Option<&str>| spec(r, regs, exp, now).unwrap();
        let s = ok(&quay, &["quay.io", "ghcr.io/wikimedia"], Some("90d"));
        assert_eq!(s.namespace, "tool-a");
        assert_eq!(s.registries, ["quay.io", "ghcr.io/wikimedia"]);
        assert_eq!(s.expires_at.unwrap().0, ts("2027-02-19T12:00:00Z"));
        assert_eq!(s.reason, "T1: needs java (ByocRequest tool-a/byoc-x)");
        let s = ok(&quay, &["quay.io/x", "ghcr.io/wikimedia/bot"], Some("30d"));
        assert_eq!(s.registries, ["quay.io/x", "ghcr.io/wikimedia/bot"]);
        assert_eq!(s.expires_at.unwrap().0, ts("2026-12-21T12:00:00Z"));
        // A request for any registry without end: what is stated, anything up to that.
        let s = ok(&any, &["quay.io"], Some("2030-01-01"));
        assert_eq!(s.registries, ["quay.io"]);
        let s = ok(&any, &[], None);
        assert!(s.registries.is_empty() && s.expires_at.is_none());
        let s = ok(&any, &["quay.io", "quay.io"], None);
        assert_eq!(s.registries, ["quay.io"]);
        // A duration ending past year 9999 bounds nothing: any expiry there is is shorter.
        let endless = request(&["quay.io"], Some("999999w"));
        let s = ok(&endless, &["quay.io"], Some("1d"));
        assert_eq!(s.expires_at.unwrap().0, ts("2026-11-22T12:00:00Z"));

        let cases: &[(&ByocRequest, &[&str], Option<&str>, &str)] = &[
            (
                &quay,
                &["ghcr.io"],
                Some("1d"),
                "--registry ghcr.io would widen the request, which asks for quay.io, ghcr.io/wikimedia",
            ),
            (&quay, &["ghcr.io/wikimediax"], Some("1d"), "would widen"),
            (&quay, &["quay.io:443"], Some("1d"), "would widen"),
            // Stated any registry, the request (swapped or not) names registries.
            (
                &quay,
                &[],
                Some("1d"),
                "--any-registry would widen the request, which asks for quay.io, ghcr.io/wikimedia",
            ),
            (
                &quay,
                &["quay.io"],
                Some("91d"),
                "is later than the 90d the request asks for (until 2027-02-19T12:00:00Z)",
            ),
            (&quay, &["quay.io"], Some("2028-01-01"), "only shorten"),
            // Stated no end, the request asks for a duration.
            (
                &quay,
                &["quay.io"],
                None,
                "--no-expiry would outlast the 90d the request asks for: an approval may only \
                 shorten it (state --expires 90d or sooner)",
            ),
            (
                &endless,
                &["quay.io"],
                None,
                "--no-expiry would outlast the 999999w",
            ),
            (
                &quay,
                &["quay.io"],
                Some("2020-01-01"),
                "--expires \"2020-01-01\" is",
            ),
            (
                &any,
                &["quay.io"],
                Some("999999w"),
                "--expires \"999999w\" is too long: from now it ends past the last representable time",
            ),
            (
                &any,
                &["https://quay.io"],
                None,
                "the grant would be invalid: spec.registries",
            ),
        ];
        for (r, regs, exp, want) in cases {
            let err = spec(r, regs, *exp, now).unwrap_err().to_string();
            assert!(err.contains(want), "{regs:?} {exp:?}: {err}");
        }
    }

    #[test]
    fn only_pending_requests_are_decided() {
        let now = ts("2026-11-21T12:00:00Z");
        let mut r = request(&["quay.io"], None);
        r.status = Some(ByocRequestStatus {
            phase: Some(RequestPhase::Approved),
            grant: Some("tool-a-abcde".into()),
            decided_by: Some("root".into()),
            ..ByocRequestStatus::default()
        });
        assert_eq!(
            spec(&r, &[], None, now).unwrap_err().to_string(),
            "ByocRequest tool-a/byoc-x is already Approved (decided by root), ByocGrant \
             tool-a-abcde: nothing changed"
        );
        r.status = Some(denied(&r, "root", "no"));
        assert_eq!(
            open(&r).unwrap_err().to_string(),
            "ByocRequest tool-a/byoc-x is already Denied (decided by root): denied by root: no: \
             nothing changed"
        );
        let mut r = request(&["quay.io"], None);
        r.metadata.deletion_timestamp = Some(Time(now));
        assert_eq!(open(&r), Err(Refusal::Deleting("tool-a/byoc-x".into())));
        // An explicit Pending is open, as is no status at all.
        let mut r = request(&["quay.io"], None);
        r.status = Some(ByocRequestStatus {
            phase: Some(RequestPhase::Pending),
            ..ByocRequestStatus::default()
        });
        assert_eq!(open(&r), Ok(()));
    }

    #[test]
    fn statuses_record_the_decision() {
        let now = ts("2026-11-21T12:00:00Z");
        let r = request(&["quay.io"], Some("1d"));
        let mut grant = ByocGrant::new(
            "tool-a-abcde",
            spec(&r, &["quay.io"], Some("1d"), now).unwrap(),
        );
        grant.metadata.name = Some("tool-a-abcde".into());
        let s = approved(&r, &grant, "alice");
        assert_eq!(s.phase, Some(RequestPhase::Approved));
        assert_eq!(s.grant.as_deref(), Some("tool-a-abcde"));
        assert_eq!(s.registries.as_deref(), Some("quay.io"));
        assert_eq!(s.expires_at.unwrap().0, ts("2026-11-22T12:00:00Z"));
        assert_eq!(s.decided_by.as_deref(), Some("alice"));
        let s = denied(&r, "bob", "use the build service");
        assert_eq!(s.phase, Some(RequestPhase::Denied));
        assert_eq!(
            s.message.as_deref(),
            Some("denied by bob: use the build service")
        );
    }

    #[test]
    fn a_decision_is_recognised_after_the_controller_rewrote_the_message() {
        let r = request(&["quay.io"], None);
        let mut grant = ByocGrant::new(
            "g",
            spec(&r, &["quay.io"], None, ts("2026-11-21T12:00:00Z")).unwrap(),
        );
        grant.metadata.name = Some("g".into());
        let written = approved(&r, &grant, "alice");
        let mut stored = written.clone();
        stored.message = Some("approved by alice: ByocGrant g allows quay.io without end".into());
        assert!(same_decision(Some(&stored), &written));
        stored.decided_by = Some("bob".into());
        assert!(!same_decision(Some(&stored), &written));
        assert!(!same_decision(None, &written));
    }

    #[test]
    fn grant_reasons_fit() {
        assert_eq!(grant_reason(" T1 ", "a/b"), "T1 (ByocRequest a/b)");
        let long = "é".repeat(1024);
        let reason = grant_reason(&long, "tool-a/byoc-x");
        assert_eq!(reason.chars().count(), 1024);
        assert!(reason.ends_with(" (ByocRequest tool-a/byoc-x)"));
    }
}

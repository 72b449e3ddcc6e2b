//! `kubectl byoc list`: every grant, with the time it has left and whether it is applied.

use byoc_api::grant::{registries_summary, requirements_summary};
use byoc_api::{ByocGrant, ByocGrantSpec, StoredGrant, UnreadableGrant};
use clap::{Args, ValueEnum};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::Failure;
use crate::cluster::{self, ClusterArgs};
use crate::duration::{self, human, time_left};
use crate::output::{ObjectFormat, emit};
use crate::table::Table;

/// `list` arguments.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    kubectl byoc list\n  \
    kubectl byoc list -n tool-wikibugs -o wide\n  \
    kubectl byoc list -o json | jq -r '.grants[] | select(.expired) | .name'\n\n\
    Columns: REGISTRIES is `any` for a grant without registries; EXPIRES is the time left \
    (never, 89d, expired), followed by `(soon)` when it ends within the policy's expiryWarning \
    (read from --config as the webhook reads it; 14d by default); READY is Unknown until the controller has reported on the grant's \
    latest change. A stored grant that cannot be read (it grants nothing) is listed with \
    REASON Unreadable, and a warning on stderr says why. -o json and -o yaml print the stable \
    format of docs/cli.md. Exit status: 0 listed (also when there is no grant), 2 API error.")]
pub struct ListArgs {
    /// Only the grants of this namespace.
    #[arg(long, short = 'n', value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// Output format: a table (default), a wider table, or the documented JSON/YAML.
    #[arg(long, short = 'o', value_enum, value_name = "FORMAT")]
    output: Option<ListFormat>,
    /// Policy configuration file (YAML, as the webhook reads it), for its expiryWarning.
    #[arg(long, value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    config: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// How `list` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    /// The table plus expiry time, age and the grant's reason.
    Wide,
    /// JSON, as documented in docs/cli.md.
    Json,
    /// The same as YAML.
    Yaml,
}

/// Runs `list`; always succeeds when the grants could be read.
pub async fn run(args: ListArgs) -> Result<bool, Failure> {
    let window = crate::check::read_config(args.config.as_deref())?.expiry_warning;
    let client = args.cluster.client().await?;
    let now = duration::now();
    let stored: Vec<StoredGrant> = cluster::list_grants(&client)
        .await?
        .into_iter()
        // A grant whose namespace cannot be read may be for any namespace: it is shown.
        .filter(|g| {
            args.namespace
                .as_deref()
                .is_none_or(|ns| g.target_namespace().is_none_or(|t| t == ns))
        })
        .collect();
    cluster::warn_unreadable(&stored);
    let (mut grants, mut unreadable) = (Vec::new(), Vec::new());
    for g in &stored {
        match g {
            StoredGrant::Readable(g) => grants.push(GrantView::new(g, now).expiring_within(window)),
            StoredGrant::Unreadable(u) => unreadable.push(UnreadableView::new(u)),
        }
    }
    let list = GrantList::new(grants, unreadable, now);
    let text = match args.output {
        None => table(&list, false, now),
        Some(ListFormat::Wide) => table(&list, true, now),
        Some(ListFormat::Json) => ObjectFormat::Json.render(&list)?,
        Some(ListFormat::Yaml) => ObjectFormat::Yaml.render(&list)?,
    };
    if text.is_empty() {
        match &args.namespace {
            Some(ns) => eprintln!("No ByocGrants for namespace {ns}."),
            None => eprintln!("No ByocGrants found."),
        }
    }
    emit(&text)?;
    Ok(true)
}

/// The `list -o json` document (docs/cli.md).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantList {
    kind: &'static str,
    version: u32,
    /// When the list was read; `secondsLeft` and `expired` are relative to it.
    time: Timestamp,
    grants: Vec<GrantView>,
    /// Stored grants that do not read as ByocGrants; they grant nothing.
    unreadable: Vec<UnreadableView>,
}

impl GrantList {
    fn new(grants: Vec<GrantView>, unreadable: Vec<UnreadableView>, time: Timestamp) -> Self {
        Self {
            kind: "ByocGrantList",
            version: 1,
            time,
            grants,
            unreadable,
        }
    }
}

/// A stored grant that does not read, as `list` shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UnreadableView {
    /// `metadata.name`.
    pub name: String,
    /// `spec.namespace`, when it can be read.
    pub namespace: Option<String>,
    /// Why the grant cannot be read, led by the field's path.
    pub error: String,
    /// `metadata.creationTimestamp`.
    pub created_at: Option<Timestamp>,
    /// Whether the grant is being deleted.
    pub deleting: bool,
}

impl UnreadableView {
    /// The view of `grant`.
    pub fn new(grant: &UnreadableGrant) -> Self {
        Self {
            name: grant.metadata.name.clone().unwrap_or_default(),
            namespace: grant.namespace.clone(),
            error: grant.error.clone(),
            created_at: grant.metadata.creation_timestamp.as_ref().map(|t| t.0),
            deleting: grant.metadata.deletion_timestamp.is_some(),
        }
    }
}

/// One grant as `list` shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GrantView {
    /// `metadata.name`.
    pub name: String,
    /// `spec.namespace`.
    pub namespace: String,
    /// `spec.registries`; empty when any registry is granted.
    pub registries: Vec<String>,
    /// Whether any registry is granted (`anyRegistry: true`, or a legacy empty list).
    pub any_registry: bool,
    /// Whether any registry is granted by a legacy empty list, stored before `anyRegistry`.
    pub legacy_empty_list: bool,
    /// `spec.reason`.
    pub reason: String,
    /// `spec.expiresAt`.
    pub expires_at: Option<Timestamp>,
    /// Whether `expiresAt` has passed.
    pub expired: bool,
    /// Whole seconds until `expiresAt` (0 once expired); absent when the grant never expires.
    pub seconds_left: Option<i64>,
    /// Whether the grant ends within the policy's `expiryWarning` window (and has not ended).
    pub expiring_soon: bool,
    /// `True`, `False`, or `Unknown` while the controller has not reported on the latest
    /// generation.
    pub ready: &'static str,
    /// The Ready condition's reason, when it is current.
    pub ready_reason: Option<String>,
    /// The Ready condition's message, when it is current.
    pub ready_message: Option<String>,
    /// `metadata.creationTimestamp`.
    pub created_at: Option<Timestamp>,
    /// Whether the grant is being deleted (the controller is removing its labels).
    pub deleting: bool,
    /// `status.requires`: what the grant requires of images, as the controller last read it
    /// (`none`, `builtOn heroku-runner; digest`, `... (platform default)`).
    pub requires: Option<String>,
}

impl GrantView {
    /// The view of `grant` at `now`.
    pub fn new(grant: &ByocGrant, now: Timestamp) -> Self {
        let spec = &grant.spec;
        let expires_at = grant.expires_at();
        let current = grant
            .status
            .as_ref()
            .and_then(|s| s.observed_generation)
            .is_some_and(|g| Some(g) >= grant.metadata.generation);
        let condition = grant.ready_condition().filter(|_| current);
        Self {
            name: grant.metadata.name.clone().unwrap_or_default(),
            namespace: spec.namespace.clone(),
            registries: spec.registries.clone(),
            any_registry: spec.allows_any_registry(),
            legacy_empty_list: spec.is_legacy_any(),
            reason: spec.reason.clone(),
            expires_at,
            expired: grant.is_expired_at(now),
            seconds_left: expires_at.map(|t| t.duration_since(now).as_secs().max(0)),
            expiring_soon: false,
            ready: match condition.map(|c| c.status.as_str()) {
                Some("True") => "True",
                Some("False") => "False",
                _ => "Unknown",
            },
            ready_reason: condition.map(|c| c.reason.clone()),
            ready_message: condition.map(|c| c.message.clone()),
            created_at: grant.metadata.creation_timestamp.as_ref().map(|t| t.0),
            deleting: grant.metadata.deletion_timestamp.is_some(),
            requires: grant.status.as_ref().and_then(|s| s.requires.clone()),
        }
    }
}

impl GrantView {
    /// This view, marked [`expiring_soon`](Self::expiring_soon) when it ends within `window`.
    pub fn expiring_within(mut self, window: SignedDuration) -> Self {
        self.expiring_soon = self
            .seconds_left
            .is_some_and(|left| !self.expired && left <= window.as_secs());
        self
    }
}

/// One line about a grant spec for messages: `namespace tool-a, registries quay.io, expires
/// 2027-03-31T00:00:00Z (in 89d)`, followed by `, requires ...` when the spec gives
/// requirements (`requires nothing` for `requirements: {}`).
pub fn describe(spec: &ByocGrantSpec, now: Timestamp) -> String {
    let registries = if spec.is_legacy_any() {
        "any registry (legacy empty list)".to_owned()
    } else if spec.any_registry {
        "any registry".to_owned()
    } else {
        format!("registries {}", spec.registries.join(", "))
    };
    let expiry = match spec.expires_at.as_ref().map(|t| t.0) {
        None => "never expires".to_owned(),
        Some(t) if t <= now => format!("expired {t} ({} ago)", human(now.duration_since(t))),
        Some(t) => format!("expires {t} (in {})", human(t.duration_since(now))),
    };
    let requires = match &spec.requirements {
        None => String::new(),
        Some(r) if r.is_empty() => ", requires nothing (not even the platform default)".to_owned(),
        Some(r) => format!(", requires {}", requirements_summary(r)),
    };
    format!(
        "namespace {}, {registries}, {expiry}{requires}",
        spec.namespace
    )
}

/// The table of `list` and `list -o wide`; empty when there are no grants. Grants that do not
/// read come last, with `?` where their spec would be.
fn table(list: &GrantList, wide: bool, now: Timestamp) -> String {
    if list.grants.is_empty() && list.unreadable.is_empty() {
        return String::new();
    }
    let mut headers = vec![
        "NAME",
        "NAMESPACE",
        "REGISTRIES",
        "EXPIRES",
        "READY",
        "REASON",
    ];
    if wide {
        headers.extend(["REQUIRES", "EXPIRES-AT", "AGE", "JUSTIFICATION"]);
    }
    let mut t = Table::new(headers);
    for g in &list.grants {
        let mut row = vec![
            g.name.clone(),
            g.namespace.clone(),
            if g.legacy_empty_list {
                byoc_api::grant::LEGACY_ANY.to_owned()
            } else {
                registries_summary(&g.registries)
            },
            match g.expires_at {
                None => "never".to_owned(),
                Some(t) if g.expiring_soon => format!("{} (soon)", time_left(t, now)),
                Some(t) => time_left(t, now),
            },
            g.ready.to_owned(),
            if g.deleting {
                "Deleting".to_owned()
            } else {
                g.ready_reason.clone().unwrap_or_default()
            },
        ];
        if wide {
            row.extend([
                g.requires.clone().unwrap_or_default(),
                g.expires_at
                    .map_or_else(|| "never".to_owned(), |t| t.to_string()),
                g.created_at
                    .map(|t| human(now.duration_since(t)))
                    .unwrap_or_default(),
                g.reason.clone(),
            ]);
        }
        t.push(row);
    }
    for u in &list.unreadable {
        let mut row = vec![
            u.name.clone(),
            u.namespace.clone().unwrap_or_else(|| "?".to_owned()),
            "?".to_owned(),
            "?".to_owned(),
            "False".to_owned(),
            if u.deleting { "Deleting" } else { "Unreadable" }.to_owned(),
        ];
        if wide {
            row.extend([
                "?".to_owned(),
                "?".to_owned(),
                u.created_at
                    .map(|t| human(now.duration_since(t)))
                    .unwrap_or_default(),
                u.error.clone(),
            ]);
        }
        t.push(row);
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use byoc_api::ByocGrantStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn grant(name: &str, registries: &[&str], expires: Option<&str>) -> ByocGrant {
        let mut g = ByocGrant::new(
            name,
            ByocGrantSpec {
                namespace: name.into(),
                reason: format!("T1: {name}"),
                registries: registries.iter().map(|s| s.to_string()).collect(),
                any_registry: registries.is_empty(),
                namespace_uid: None,
                expires_at: expires.map(|e| Time(ts(e))),
                requirements: None,
            },
        );
        g.metadata.generation = Some(2);
        g
    }

    fn ready(g: &mut ByocGrant, generation: i64, status: &str, reason: &str) {
        g.status = Some(ByocGrantStatus {
            observed_generation: Some(generation),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: status.into(),
                reason: reason.into(),
                message: format!("{reason} message"),
                last_transition_time: Time(ts("2026-01-01T00:00:00Z")),
                observed_generation: Some(generation),
            }],
            registries: None,
            requires: (generation == 2).then(|| "digest (platform default)".into()),
            namespace_uid: None,
        });
    }

    #[test]
    fn views_report_time_left_and_current_readiness() {
        let now = ts("2026-11-21T12:00:00Z");
        let mut a = grant(
            "tool-a",
            &["quay.io", "ghcr.io/wikimedia"],
            Some("2027-02-19T11:59:59Z"),
        );
        ready(&mut a, 2, "True", "Applied");
        let mut b = grant("tool-b", &[], None);
        ready(&mut b, 1, "True", "Applied"); // stale: generation 2 not observed yet
        let mut c = grant("tool-c", &[], Some("2026-11-20T12:00:00Z"));
        c.spec.any_registry = false; // stored before anyRegistry existed
        ready(&mut c, 2, "False", "Expired");

        let mut d = grant("tool-e", &["quay.io"], Some("2026-12-05T12:00:00Z"));
        ready(&mut d, 2, "True", "Applied");
        let window = SignedDuration::from_hours(14 * 24);
        let views: Vec<GrantView> = [&a, &b, &c, &d]
            .iter()
            .map(|g| GrantView::new(g, now).expiring_within(window))
            .collect();
        assert_eq!(
            views.iter().map(|v| v.expiring_soon).collect::<Vec<_>>(),
            [false, false, false, true],
            "only an unexpired grant ending within the window"
        );
        assert_eq!(views[0].seconds_left, Some(89 * 86_400 + 86_399));
        assert_eq!(
            (views[0].ready, views[0].ready_reason.as_deref()),
            ("True", Some("Applied"))
        );
        assert!(!views[0].any_registry && !views[0].expired);
        assert_eq!(
            (views[1].ready, views[1].ready_reason.as_deref()),
            ("Unknown", None)
        );
        assert!(views[1].any_registry && views[1].seconds_left.is_none());
        assert!(!views[1].legacy_empty_list);
        assert!(views[2].any_registry && views[2].legacy_empty_list);
        assert_eq!((views[2].expired, views[2].seconds_left), (true, Some(0)));

        let list = GrantList::new(views, vec![unreadable("tool-d")], now);
        let text = table(&list, false, now);
        assert_eq!(
            text,
            "NAME     NAMESPACE   REGISTRIES                  EXPIRES      READY     REASON\n\
             tool-a   tool-a      quay.io,ghcr.io/wikimedia   89d          True      Applied\n\
             tool-b   tool-b      any                         never        Unknown\n\
             tool-c   tool-c      any (legacy empty list)     expired      False     Expired\n\
             tool-e   tool-e      quay.io                     14d (soon)   True      Applied\n\
             tool-d   tool-d      ?                           ?            False     Unreadable\n"
        );
        let wide = table(&list, true, now);
        assert!(
            wide.lines().next().unwrap().ends_with(
                "REQUIRES                    EXPIRES-AT             AGE   JUSTIFICATION"
            ),
            "{wide}"
        );
        assert!(
            wide.lines()
                .nth(1)
                .unwrap()
                .contains("digest (platform default)"),
            "{wide}"
        );
        assert!(wide.contains("2027-02-19T11:59:59Z"), "{wide}");
        assert!(wide.contains("T1: tool-c"), "{wide}");
        assert!(wide.contains("spec.expiresAt: "), "{wide}");
        assert_eq!(table(&GrantList::new(vec![], vec![], now), true, now), "");
        // Only an unreadable grant: still a table, with its row.
        let only = table(
            &GrantList::new(vec![], vec![unreadable("x")], now),
            false,
            now,
        );
        assert_eq!(only.lines().count(), 2, "{only}");
    }

    /// A stored grant for namespace `name` whose expiresAt does not read.
    fn unreadable(name: &str) -> UnreadableView {
        let object = serde_json::json!({
            "metadata": { "name": name },
            "spec": { "namespace": name, "reason": "r", "expiresAt": "2027-01-01T00:00:00+99:99" },
        });
        match StoredGrant::from_value(&object).unwrap() {
            StoredGrant::Unreadable(u) => UnreadableView::new(&u),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_is_the_documented_shape() {
        let now = ts("2026-11-21T12:00:00Z");
        let mut g = grant("tool-a", &["quay.io"], Some("2026-11-22T12:00:00Z"));
        g.metadata.creation_timestamp = Some(Time(ts("2026-11-01T00:00:00Z")));
        ready(&mut g, 2, "True", "Applied");
        let list = GrantList::new(vec![GrantView::new(&g, now)], vec![unreadable("bad")], now);
        assert_eq!(
            serde_json::to_value(&list).unwrap(),
            serde_json::json!({
                "kind": "ByocGrantList",
                "version": 1,
                "time": "2026-11-21T12:00:00Z",
                "grants": [{
                    "name": "tool-a",
                    "namespace": "tool-a",
                    "registries": ["quay.io"],
                    "anyRegistry": false,
                    "legacyEmptyList": false,
                    "reason": "T1: tool-a",
                    "expiresAt": "2026-11-22T12:00:00Z",
                    "expired": false,
                    "secondsLeft": 86400,
                    "expiringSoon": false,
                    "ready": "True",
                    "readyReason": "Applied",
                    "readyMessage": "Applied message",
                    "createdAt": "2026-11-01T00:00:00Z",
                    "deleting": false,
                    "requires": "digest (platform default)"
                }],
                "unreadable": [{
                    "name": "bad",
                    "namespace": "bad",
                    "error": list.unreadable[0].error,
                    "createdAt": null,
                    "deleting": false
                }]
            })
        );
    }

    #[test]
    fn descriptions() {
        let now = ts("2026-11-21T12:00:00Z");
        let g = grant(
            "tool-a",
            &["quay.io", "ghcr.io"],
            Some("2027-02-19T12:00:00Z"),
        );
        assert_eq!(
            describe(&g.spec, now),
            "namespace tool-a, registries quay.io, ghcr.io, expires 2027-02-19T12:00:00Z (in 90d)"
        );
        let g = grant("tool-b", &[], None);
        assert_eq!(
            describe(&g.spec, now),
            "namespace tool-b, any registry, never expires"
        );
        let g = grant("tool-c", &[], Some("2026-11-20T12:00:00Z"));
        assert_eq!(
            describe(&g.spec, now),
            "namespace tool-c, any registry, expired 2026-11-20T12:00:00Z (24h ago)"
        );
        let mut g = grant("tool-d", &["quay.io"], None);
        g.spec.requirements = Some(byoc_api::Requirements {
            require_digest: true,
            ..Default::default()
        });
        assert_eq!(
            describe(&g.spec, now),
            "namespace tool-d, registries quay.io, never expires, requires digest"
        );
        g.spec.requirements = Some(byoc_api::Requirements::default());
        assert!(
            describe(&g.spec, now)
                .ends_with("never expires, requires nothing (not even the platform default)")
        );
    }
}

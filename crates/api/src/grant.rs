//! The `ByocGrant` custom resource (DESIGN §2).

// clippy reads the repeated `type_ = "string"` of the printcolumn attributes as duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A "bring your own container" exception: lets the pods of one tool namespace run images from
/// registries beyond the platform's default ones, optionally until a given time.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "byoc.toolforge.org",
    version = "v1alpha1",
    kind = "ByocGrant",
    plural = "byocgrants",
    shortname = "byoc",
    category = "toolforge",
    status = "ByocGrantStatus",
    derive = "PartialEq",
    doc = "ByocGrant lets the pods of one namespace run container images from registries beyond the platform's default ones (\"bring your own container\"), optionally until a given time. Cluster-scoped: only platform admins create them.",
    printcolumn(
        name = "Namespace",
        type_ = "string",
        json_path = ".spec.namespace",
        description = "The namespace this grant applies to"
    ),
    printcolumn(
        name = "Registries",
        type_ = "string",
        json_path = ".status.registries",
        description = "The registries the grant allows (any, or a comma-separated list), as the controller last read them"
    ),
    printcolumn(
        name = "Requires",
        type_ = "string",
        json_path = ".status.requires",
        priority = 1,
        description = "What the grant requires of the images it admits beyond their registry (builtOn, digest, source), none, or the platform default, as the controller last read it"
    ),
    printcolumn(
        name = "Expires",
        type_ = "string",
        json_path = ".spec.expiresAt",
        description = "When the grant stops applying; empty means never"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the namespace labels carry this grant"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why the grant is or is not ready"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(REGISTRIES_EXCLUSIVE_RULE).message(REGISTRIES_EXCLUSIVE_MESSAGE))]
#[x_kube(validation = Rule::new(REGISTRIES_REQUIRED_RULE).message(REGISTRIES_REQUIRED_MESSAGE).optional_old_self(true))]
pub struct ByocGrantSpec {
    /// The tool namespace whose pods may run images from the granted registries. A DNS-1123
    /// label; cannot be changed after creation (create a new grant instead). The namespace may
    /// be created after the grant.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("namespace is immutable: delete this grant and create a new one for the other namespace"))]
    pub namespace: String,

    /// Why this namespace needs its own images, for the admins who review grants (for example
    /// a Phabricator task). Must not be empty.
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self.trim() != ''").message("reason must not be empty or blank: say why this namespace needs its own images"))]
    pub reason: String,

    /// Registries the namespace may pull from, each `host[:port][/path-prefix]` in lowercase,
    /// for example `quay.io` or `ghcr.io/wikimedia`. A path prefix matches on `/` boundaries
    /// only. Required unless `anyRegistry` is true, and then it must be absent or empty (grants
    /// stored with an empty list before `anyRegistry` existed keep meaning any registry). Entries
    /// are at most 63 characters once stored as a namespace label (`_` and `:` count twice).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 63)), extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new(registries_format_rule()).message(REGISTRIES_FORMAT_MESSAGE))]
    #[x_kube(validation = Rule::new(REGISTRIES_LENGTH_RULE).message(REGISTRIES_LENGTH_MESSAGE))]
    pub registries: Vec<String>,

    /// Lets the namespace pull from any registry; then `registries` must be absent or empty.
    /// "Any registry" is only ever granted on purpose: an empty list alone is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub any_registry: bool,

    /// The UID of the namespace this grant applies to, set by `kubectl byoc grant NAMESPACE
    /// --renew` (or by hand) to consent to a namespace that was deleted and created again
    /// under the same name. Absent: the grant binds to the first namespace of that name it is
    /// applied to (`status.namespaceUID`), and a namespace created later under that name gets
    /// nothing until this field names it.
    #[serde(
        default,
        rename = "namespaceUID",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(regex(pattern = UID_PATTERN))]
    pub namespace_uid: Option<String>,

    /// When the grant stops applying, an RFC 3339 time such as `2027-03-31T00:00:00Z` (at
    /// most nine fractional digits, offsets up to ±23:59, years up to 9998). After it, pods of
    /// the namespace are again limited to the default registries. Absent means the grant does
    /// not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = EXPIRES_AT_PATTERN))]
    pub expires_at: Option<Time>,

    /// What images admitted through this grant must be, beyond coming from its registries:
    /// built on an allowed base, referenced by digest, with source from an allowed place.
    /// Absent means nothing beyond the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirements: Option<crate::Requirements>,
}

/// The pattern of `spec.namespaceUID`: a UID as the API server generates them (a UUID).
pub const UID_PATTERN: &str = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";

/// The CEL rule on `spec`: `anyRegistry: true` comes without registries.
pub const REGISTRIES_EXCLUSIVE_RULE: &str = "!(has(self.anyRegistry) && self.anyRegistry) || !has(self.registries) || size(self.registries) == 0";

/// The message of [`REGISTRIES_EXCLUSIVE_RULE`].
pub const REGISTRIES_EXCLUSIVE_MESSAGE: &str = "anyRegistry: true and a registries list exclude each other: give registries, or anyRegistry: true without registries";

/// The CEL rule on `spec` (a transition rule with an optional `oldSelf`): registries are listed
/// or `anyRegistry` is true, except on an update of a legacy grant that keeps its empty list.
pub const REGISTRIES_REQUIRED_RULE: &str = "(has(self.anyRegistry) && self.anyRegistry) || (has(self.registries) && size(self.registries) > 0) || oldSelf.optMap(o, !(has(o.anyRegistry) && o.anyRegistry) && (!has(o.registries) || size(o.registries) == 0)).orValue(false)";

/// The message of [`REGISTRIES_REQUIRED_RULE`].
pub const REGISTRIES_REQUIRED_MESSAGE: &str = "registries must list at least one registry; to allow any registry, set anyRegistry: true (an empty or missing list no longer means any)";

/// The CEL rule on `spec.registries` (of grants and requests): every entry matches
/// [`REGISTRY_PATTERN_REGEX`](crate::REGISTRY_PATTERN_REGEX).
pub fn registries_format_rule() -> String {
    format!(
        "self.all(e, e.matches(r'{}'))",
        crate::REGISTRY_PATTERN_REGEX
    )
}

/// The message of [`registries_format_rule`].
pub const REGISTRIES_FORMAT_MESSAGE: &str = "each registry must be host[:port][/path-prefix] in lowercase, with a '.' or a port in the host or host 'localhost', for example quay.io, ghcr.io/wikimedia or registry.example.org:5000/team";

/// The CEL rule on `spec.registries`: every entry fits in a namespace label once encoded.
pub const REGISTRIES_LENGTH_RULE: &str =
    "self.all(e, size(e.replace('_', '__').replace(':', '..')) <= 63)";

/// The message of [`REGISTRIES_LENGTH_RULE`].
pub const REGISTRIES_LENGTH_MESSAGE: &str = "a registry entry is too long to be stored as a namespace label: at most 63 characters, where '_' and ':' count twice";

/// The pattern the CRD puts on `spec.expiresAt`, on top of the `date-time` format.
///
/// Kubernetes' `date-time` format accepts values the Rust side cannot read (k8s-openapi's `Time`
/// parses with jiff): more than nine fractional digits, any character before the fraction,
/// offsets up to ±99:99, and times past jiff's last instant (9999-12-30T22:00Z). One such grant
/// would fail every typed list of grants, so the API server must refuse them. This is RFC 3339
/// (`T`/`Z` in either case) with at most nine fractional digits, offsets up to ±23:59 and years
/// up to 9998; the format still refuses impossible dates such as February 30.
pub const EXPIRES_AT_PATTERN: &str = r"^(?:[0-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$";

/// What the controller observed when it last applied a grant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ByocGrantStatus {
    /// The `metadata.generation` the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`: `True` when the namespace labels carry this grant. `ExpiringSoon`: `True` once
    /// `expiresAt` is within the policy's `expiryWarning` window (the controller then publishes
    /// an `ExpiringSoon` event, once); absent otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The registries the spec grants, for `kubectl get`: `any` for `anyRegistry: true` (or a
    /// legacy empty list), else the entries joined with `,`. Absent until the controller has read the spec,
    /// and while the spec cannot be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registries: Option<String>,

    /// What the grant requires of the images it admits, for `kubectl get -o wide`: `none`, or
    /// its requirements in short (`builtOn heroku-runner:22; digest; source
    /// gitlab.wikimedia.org/toolforge-repos/{tool}`), followed by ` (platform default)` when
    /// the grant gives none and the policy's `defaultGrantRequirements` apply. Absent until
    /// the controller has read the spec, and while the spec cannot be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires: Option<String>,

    /// The UID of the namespace the grant was applied to: recorded when the controller first
    /// labels a namespace for it, and moved only by `spec.namespaceUID`. A namespace of the
    /// same name with another UID (deleted and created again) is not labelled for this grant.
    #[serde(
        default,
        rename = "namespaceUID",
        skip_serializing_if = "Option::is_none"
    )]
    pub namespace_uid: Option<String>,
}

impl ByocGrantStatus {
    /// The `Ready` condition, if the controller has written one.
    pub fn ready_condition(&self) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == READY)
    }
}

/// How a list of registries reads in tables: `any` when there are none, else the entries
/// joined with `,`. (A request's empty list asks for any registry; for a grant's spec, see
/// [`ByocGrantSpec::registries_summary`].)
pub fn registries_summary(registries: &[String]) -> String {
    if registries.is_empty() {
        "any".to_owned()
    } else {
        registries.join(",")
    }
}

/// Requirements in short, for table columns and messages: the parts joined with `; `
/// (`builtOn` names each base by the last segment of its repository, with its tag or the start
/// of its digest; `digest` for `requireDigest`; `source` lists the prefixes without
/// `https://`), for example `builtOn heroku-runner:22; digest; source
/// gitlab.wikimedia.org/toolforge-repos/{tool}`; empty when nothing is required.
pub fn requirements_summary(r: &crate::Requirements) -> String {
    let mut parts = Vec::new();
    if !r.built_on.is_empty() {
        let bases: Vec<String> = r.built_on.iter().map(short_base).collect();
        parts.push(format!("builtOn {}", bases.join(",")));
    }
    if r.require_digest {
        parts.push("digest".to_owned());
    }
    if !r.source_from.is_empty() {
        let sources: Vec<&str> = r
            .source_from
            .iter()
            .map(|s| s.strip_prefix("https://").unwrap_or(s))
            .collect();
        parts.push(format!("source {}", sources.join(",")));
    }
    parts.join("; ")
}

/// A `builtOn` entry as [`requirements_summary`] shows it: `heroku-runner`,
/// `heroku-runner:22`, `heroku-runner@sha256:0123456789ab`; an entry that does not parse as it
/// is.
fn short_base(base: &crate::BaseImage) -> String {
    use crate::requirements::Pin;
    let Ok(pattern) = base.parse() else {
        return base.0.clone();
    };
    let path = pattern.repository.path().unwrap_or_default();
    let name = path.rsplit('/').next().unwrap_or(path);
    match &pattern.pin {
        Pin::Repository => name.to_owned(),
        Pin::Tag(tag) => format!("{name}:{tag}"),
        Pin::Digest(digest) => format!("{name}@{}", &digest[..digest.len().min(19)]),
    }
}

/// The type of the condition that says whether a grant applies.
pub const READY: &str = "Ready";

/// The type of the condition that says a grant ends within the policy's `expiryWarning`.
pub const EXPIRING_SOON: &str = "ExpiringSoon";

/// Why a grant is, or is not, Ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadyReason {
    /// The namespace labels carry the grant.
    Applied,
    /// The target namespace does not exist (yet); the grant applies once it is created.
    NamespaceNotFound,
    /// `expiresAt` has passed; the grant no longer applies.
    Expired,
    /// The spec cannot be applied (for example a registry entry that does not parse).
    Invalid,
    /// Applying the labels failed; the controller retries.
    Error,
    /// The namespace was deleted and created again (another UID than the one the grant is
    /// bound to): the new namespace gets nothing until an admin renews the grant.
    NamespaceReplaced,
}

impl ReadyReason {
    /// The condition `reason` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "Applied",
            Self::NamespaceNotFound => "NamespaceNotFound",
            Self::Expired => "Expired",
            Self::Invalid => "Invalid",
            Self::Error => "Error",
            Self::NamespaceReplaced => "NamespaceReplaced",
        }
    }

    /// The condition `status`: only `Applied` is ready.
    pub fn status(self) -> &'static str {
        if self == Self::Applied {
            "True"
        } else {
            "False"
        }
    }
}

impl ByocGrant {
    /// The expiry as a timestamp, if any.
    pub fn expires_at(&self) -> Option<jiff::Timestamp> {
        self.spec.expires_at.as_ref().map(|t| t.0)
    }

    /// Whether the grant has expired at `now` (an expiry is exclusive: at `expiresAt` it is over).
    pub fn is_expired_at(&self, now: jiff::Timestamp) -> bool {
        self.expires_at().is_some_and(|t| t <= now)
    }

    /// The `Ready` condition, if the controller has written one.
    pub fn ready_condition(&self) -> Option<&Condition> {
        self.status.as_ref()?.ready_condition()
    }
}

/// The CustomResourceDefinition as YAML, as committed in `crds/byocgrants.yaml`.
pub fn crd_yaml() -> Result<String, serde_saphyr::SerializeError> {
    use kube::CustomResourceExt;
    let yaml = serde_saphyr::to_string(&ByocGrant::crd())?;
    Ok(format!(
        "# Generated by `make crds` from crates/api/src/grant.rs; do not edit by hand.\n{yaml}"
    ))
}

/// Why a grant spec is not valid; the same rules the CRD schema enforces at the API server.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InvalidGrant {
    /// `spec.namespace` is not a DNS-1123 label.
    #[error(
        "spec.namespace {0:?} is not a namespace name (a DNS-1123 label: lowercase letters, digits and '-', at most 63)"
    )]
    Namespace(String),
    /// `spec.reason` is blank.
    #[error("spec.reason must not be empty or blank: say why this namespace needs its own images")]
    Reason,
    /// A registry entry does not parse.
    #[error("spec.registries: {0}")]
    Registry(#[from] crate::RegistryPatternError),
    /// A registry entry does not fit in a namespace label.
    #[error("spec.registries: {0}")]
    Label(#[from] crate::labels::LabelError),
    /// A requirement breaks the rules.
    #[error("spec.requirements: {0}")]
    Requirement(#[from] crate::requirements::InvalidRequirement),
    /// `spec.anyRegistry` is true and registries are listed too.
    #[error("spec: {REGISTRIES_EXCLUSIVE_MESSAGE}")]
    AnyRegistryWithList,
}

/// How a legacy grant's registries read in tables: one stored with an empty list before
/// `anyRegistry` existed, which still means any registry.
pub const LEGACY_ANY: &str = "any (legacy empty list)";

impl ByocGrantSpec {
    /// Whether the grant allows any registry: `anyRegistry: true`, or a legacy empty list.
    pub fn allows_any_registry(&self) -> bool {
        self.any_registry || self.registries.is_empty()
    }

    /// Whether this is a legacy grant, stored before `anyRegistry` existed, whose empty list
    /// means any registry. The CRD keeps accepting updates that keep the list empty, and
    /// refuses new ones.
    pub fn is_legacy_any(&self) -> bool {
        !self.any_registry && self.registries.is_empty()
    }

    /// How the registries read in tables and `status.registries`: `any`, [`LEGACY_ANY`], or
    /// the entries joined with `,`.
    pub fn registries_summary(&self) -> String {
        if self.is_legacy_any() {
            LEGACY_ANY.to_owned()
        } else {
            registries_summary(&self.registries)
        }
    }

    /// Checks the spec as the CRD schema does for a stored grant (a legacy empty list passes),
    /// and returns the allowance it grants (regardless of expiry).
    pub fn validate(&self) -> Result<crate::labels::Allowance, InvalidGrant> {
        if !is_dns1123_label(&self.namespace) {
            return Err(InvalidGrant::Namespace(self.namespace.clone()));
        }
        if self.reason.trim().is_empty() {
            return Err(InvalidGrant::Reason);
        }
        if self.any_registry && !self.registries.is_empty() {
            return Err(InvalidGrant::AnyRegistryWithList);
        }
        if let Some(requirements) = &self.requirements {
            requirements.validate()?;
        }
        let allowance = crate::labels::Allowance::for_grant(self)?;
        allowance.to_labels()?;
        Ok(allowance)
    }
}

/// Whether `s` is a DNS-1123 label, as namespace names are.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(namespace: &str, reason: &str, registries: &[&str]) -> ByocGrantSpec {
        ByocGrantSpec {
            namespace: namespace.into(),
            reason: reason.into(),
            registries: registries.iter().map(|s| s.to_string()).collect(),
            any_registry: false,
            namespace_uid: None,
            expires_at: None,
            requirements: None,
        }
    }

    fn any(mut spec: ByocGrantSpec) -> ByocGrantSpec {
        spec.any_registry = true;
        spec
    }

    #[test]
    fn validation_matches_the_crd_rules() {
        let long = format!("{}.example.org", "a".repeat(52));
        let cases: &[(ByocGrantSpec, Option<&str>)] = &[
            // A legacy empty list still reads as a stored grant (the CRD refuses new ones).
            (spec("tool-a", "T1", &[]), None),
            (any(spec("tool-a", "T1", &[])), None),
            (
                spec("tool-a", "T1", &["quay.io", "ghcr.io/wikimedia"]),
                None,
            ),
            (
                any(spec("tool-a", "T1", &["quay.io"])),
                Some("anyRegistry: true and a registries list exclude each other"),
            ),
            (spec("Tool-A", "T1", &[]), Some("spec.namespace \"Tool-A\"")),
            (spec("-a", "T1", &[]), Some("spec.namespace")),
            (spec(&"a".repeat(64), "T1", &[]), Some("spec.namespace")),
            (spec("tool-a", " \t", &[]), Some("spec.reason")),
            (spec("tool-a", "", &[]), Some("spec.reason")),
            (
                spec("tool-a", "T1", &["quay"]),
                Some("spec.registries: registry entry \"quay\""),
            ),
            (
                spec("tool-a", "T1", &["https://quay.io"]),
                Some("spec.registries"),
            ),
            (spec("tool-a", "T1", &[&long]), Some("too long")),
        ];
        for (spec, want) in cases {
            match (spec.validate(), want) {
                (Ok(_), None) => {}
                (Err(e), Some(want)) => assert!(e.to_string().contains(want), "{spec:?}: {e}"),
                (got, want) => panic!("{spec:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    /// The cases of `testdata/expires-at.txt`: (value, whether the CRD accepts it).
    fn expires_at_cases() -> Vec<(&'static str, bool)> {
        include_str!("../testdata/expires-at.txt")
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| match l.split_once(' ') {
                Some(("accept", value)) => (value, true),
                Some(("reject", value)) => (value, false),
                _ => panic!("testdata/expires-at.txt: bad line {l:?}"),
            })
            .collect()
    }

    /// Whether the Rust side reads `value` as an `expiresAt`, as it does when listing grants.
    fn rust_reads(value: &str) -> bool {
        serde_json::from_value::<Time>(serde_json::Value::from(value)).is_ok()
    }

    fn expires_at_regex() -> regex::Regex {
        regex::Regex::new(EXPIRES_AT_PATTERN).expect("EXPIRES_AT_PATTERN compiles")
    }

    #[test]
    fn the_expires_at_pattern_accepts_only_what_rust_reads() {
        let re = expires_at_regex();
        let cases = expires_at_cases();
        assert!(cases.len() > 30, "the table was not read");
        for (value, accepted) in cases {
            // What the API server accepts: the pattern, and the date-time format's calendar
            // check (the e2e test feeds the API server this same table).
            let schema = re.is_match(value) && real_date(value);
            assert_eq!(
                schema, accepted,
                "{value:?}: the schema would accept: {schema}"
            );
            assert!(!accepted || rust_reads(value), "{value:?} does not read");
        }
    }

    #[test]
    fn the_schema_carries_the_expires_at_pattern() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(ByocGrant::crd()).unwrap();
        let field = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["expiresAt"];
        assert_eq!(field["pattern"], EXPIRES_AT_PATTERN, "{field}");
        assert_eq!(field["format"], "date-time", "{field}");
    }

    /// Whether a value that matches the pattern names a real calendar day, as Go's date parsing
    /// (and so the API server's `date-time` format) checks it.
    fn real_date(value: &str) -> bool {
        let number = |range: std::ops::Range<usize>| -> u32 { value[range].parse().unwrap() };
        let (year, month, day) = (number(0..4), number(5..7), number(8..10));
        let days = match month {
            2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        day <= days
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Every value the schema accepts (the pattern, on a real calendar day) reads on the
        /// Rust side.
        #[test]
        fn everything_the_schema_accepts_reads(value in EXPIRES_AT_PATTERN.trim_start_matches('^').trim_end_matches('$')) {
            proptest::prop_assert!(expires_at_regex().is_match(&value));
            proptest::prop_assume!(real_date(&value));
            proptest::prop_assert!(rust_reads(&value), "{value:?} does not read");
        }
    }

    #[test]
    fn registries_summaries() {
        assert_eq!(registries_summary(&[]), "any");
        assert_eq!(
            registries_summary(&["quay.io".into(), "ghcr.io/wikimedia".into()]),
            "quay.io,ghcr.io/wikimedia"
        );
        let cases = [
            (any(spec("a", "r", &[])), "any", true, false),
            (spec("a", "r", &[]), "any (legacy empty list)", true, true),
            (spec("a", "r", &["quay.io"]), "quay.io", false, false),
        ];
        for (spec, summary, any, legacy) in cases {
            assert_eq!(spec.registries_summary(), summary, "{spec:?}");
            assert_eq!(spec.allows_any_registry(), any, "{spec:?}");
            assert_eq!(spec.is_legacy_any(), legacy, "{spec:?}");
            let allowance = spec.validate().unwrap();
            assert_eq!(
                allowance.allows_any_at(jiff::Timestamp::now()),
                any,
                "{spec:?}"
            );
        }
    }

    #[test]
    fn the_schema_carries_the_registry_rules() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(ByocGrant::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let rules = spec["x-kubernetes-validations"].as_array().unwrap();
        let rule = |text: &str| rules.iter().find(|r| r["rule"] == text).cloned();
        let exclusive = rule(REGISTRIES_EXCLUSIVE_RULE).expect("the exclusive rule");
        assert_eq!(exclusive["message"], REGISTRIES_EXCLUSIVE_MESSAGE);
        let required = rule(REGISTRIES_REQUIRED_RULE).expect("the required rule");
        assert_eq!(required["message"], REGISTRIES_REQUIRED_MESSAGE);
        // Evaluated on create too (no old object), so an empty list is refused there.
        assert_eq!(required["optionalOldSelf"], true, "{required}");
        let uid = &spec["properties"]["namespaceUID"];
        assert_eq!(uid["pattern"], UID_PATTERN, "{uid}");
        let re = regex::Regex::new(UID_PATTERN).unwrap();
        assert!(re.is_match("0b7e8a52-5f0e-4a0e-9a57-2c1c7d4a9c11"));
        assert!(!re.is_match("0B7E8A52-5F0E-4A0E-9A57-2C1C7D4A9C11 "));
        let status = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
            ["properties"];
        assert_eq!(status["namespaceUID"]["type"], "string", "{status}");
    }

    #[test]
    fn committed_crd_is_fresh() {
        let committed = include_str!("../../../crds/byocgrants.yaml");
        assert!(
            crd_yaml().unwrap() == committed,
            "crds/byocgrants.yaml is stale or was edited by hand: run `make crds` and commit it"
        );
    }

    #[test]
    fn ready_reasons() {
        assert_eq!(ReadyReason::Applied.status(), "True");
        for r in [
            ReadyReason::NamespaceNotFound,
            ReadyReason::Expired,
            ReadyReason::Invalid,
            ReadyReason::Error,
            ReadyReason::NamespaceReplaced,
        ] {
            assert_eq!(r.status(), "False", "{}", r.as_str());
        }
    }
}

//! The `ByocRequest` custom resource (DESIGN §3b): a tool maintainer's request for a grant.
//!
//! A request grants nothing: only a [`ByocGrant`](crate::ByocGrant) does, and the webhook never
//! reads requests. An admin approves one by creating the grant it asks for (recording the request
//! in [`REQUEST_ANNOTATION`] on the grant), or denies it; the controller then keeps the status of
//! an approved request true to its grant.

// clippy reads the repeated `type_ = "string"` of the printcolumn attributes as duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The annotation on a [`ByocGrant`](crate::ByocGrant) made by approving a request: its value is
/// `<namespace>/<name>/<uid>` of the [`ByocRequest`] (see [`RequestRecord`]). The UID pins the
/// one request approved: a request deleted and created again under the same name has another.
pub const REQUEST_ANNOTATION: &str = "byoc.toolforge.org/request";

/// The pattern the CRD puts on `spec.duration`: one or more `<number><unit>` terms with units
/// `s`, `m`, `h`, `d` (24 hours) and `w` (7 days), like `90d` or `1d12h`.
pub const DURATION_PATTERN: &str = r"^(?:[0-9]{1,6}[smhdw]){1,5}$";

/// A tool maintainer's request for a ByocGrant for their own namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "byoc.toolforge.org",
    version = "v1alpha1",
    kind = "ByocRequest",
    plural = "byocrequests",
    shortname = "byocreq",
    category = "toolforge",
    namespaced,
    status = "ByocRequestStatus",
    derive = "PartialEq",
    doc = "ByocRequest asks the platform admins for a ByocGrant for this namespace: the registries its pods need beyond the platform's default ones, why, and for how long. It grants nothing by itself; an admin approves it (which creates the grant) or denies it.",
    printcolumn(
        name = "Registries",
        type_ = "string",
        json_path = ".status.registries",
        description = "The registries asked for or, once approved, those the grant allows (any, or a comma-separated list)"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Approved, Denied, Expired or Revoked"
    ),
    printcolumn(
        name = "Grant",
        type_ = "string",
        json_path = ".status.grant",
        description = "The ByocGrant created by approving this request"
    ),
    printcolumn(
        name = "Expires",
        type_ = "string",
        json_path = ".status.expiresAt",
        description = "When the grant stops applying; empty means never or not approved"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable: delete this request and create a new one"))]
#[serde(rename_all = "camelCase")]
pub struct ByocRequestSpec {
    /// Registries the namespace's pods need to pull from, each `host[:port][/path-prefix]` in
    /// lowercase, for example `quay.io` or `ghcr.io/wikimedia`; the same grammar as a grant's.
    /// Absent or empty asks for any registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 63)), extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new(crate::grant::registries_format_rule()).message(crate::grant::REGISTRIES_FORMAT_MESSAGE))]
    #[x_kube(validation = Rule::new(crate::grant::REGISTRIES_LENGTH_RULE).message(crate::grant::REGISTRIES_LENGTH_MESSAGE))]
    pub registries: Vec<String>,

    /// Why the tool needs its own images, for the admins who review the request (for example a
    /// Phabricator task). Must not be empty.
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self.trim() != ''").message("reason must not be empty or blank: say why this namespace needs its own images"))]
    pub reason: String,

    /// How long the grant should last, like `90d`, `12h`, `2w` or `1d12h` (units s, m, h, d, w).
    /// Absent asks for a grant that does not expire. Admins may approve a shorter one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 40), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("!self.matches('^(?:0+[smhdw])+$')").message("duration must be positive"))]
    pub duration: Option<String>,
}

/// Where a request stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum RequestPhase {
    /// Waiting for an admin's decision.
    Pending,
    /// An admin created the grant; it applies.
    Approved,
    /// An admin refused it; `message` says why.
    Denied,
    /// The grant reached its `expiresAt`.
    Expired,
    /// The grant was deleted.
    Revoked,
}

impl RequestPhase {
    /// The phase as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Approved => "Approved",
            Self::Denied => "Denied",
            Self::Expired => "Expired",
            Self::Revoked => "Revoked",
        }
    }

    /// Whether an admin has decided (approve or deny are no longer possible).
    pub fn is_decided(self) -> bool {
        self != Self::Pending
    }
}

/// Where a request stands, written by `kubectl byoc approve|deny` and the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ByocRequestStatus {
    /// The `metadata.generation` the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Pending, Approved, Denied, Expired or Revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RequestPhase>,

    /// The registries asked for or, once approved, those the grant allows, for `kubectl get`:
    /// `any`, or the entries joined with `,`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registries: Option<String>,

    /// The name of the ByocGrant created by approving this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,

    /// When the grant stops applying, as the grant says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,

    /// The user who approved or denied the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,

    /// A human-readable note: the reason of a denial, or what happened to the grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// Conditions with observedGeneration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The type of the condition a request carries: `True` while the grant it led to applies.
/// Its reason is the phase (or `GrantUnreadable`), its message the status message.
pub const GRANTED: &str = "Granted";

/// A request as people name it: `<namespace>/<name>`.
pub fn request_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The request a grant's [`REQUEST_ANNOTATION`] records: `<namespace>/<name>/<uid>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// The request's namespace.
    pub namespace: String,
    /// The request's name.
    pub name: String,
    /// The request's UID.
    pub uid: String,
}

impl RequestRecord {
    /// The record of `request`; `None` without a namespace, name or UID (not a stored request).
    pub fn of(request: &ByocRequest) -> Option<Self> {
        let meta = &request.metadata;
        let record = Self {
            namespace: meta.namespace.clone()?,
            name: meta.name.clone()?,
            uid: meta.uid.clone()?,
        };
        (!record.namespace.is_empty() && !record.name.is_empty() && !record.uid.is_empty())
            .then_some(record)
    }

    /// Reads an annotation value; `None` unless it has three non-empty parts.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.split('/');
        let (namespace, name, uid) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || [namespace, name, uid].iter().any(|p| p.is_empty()) {
            return None;
        }
        Some(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: uid.to_owned(),
        })
    }

    /// Whether this records `request` itself: same namespace, name and UID.
    pub fn is(&self, request: &ByocRequest) -> bool {
        Self::of(request).as_ref() == Some(self)
    }
}

impl std::fmt::Display for RequestRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.name, self.uid)
    }
}

/// Why a request spec is not valid; the same rules the CRD schema enforces at the API server.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InvalidRequest {
    /// `spec.reason` is blank or too long.
    #[error(
        "spec.reason must not be empty or blank, nor longer than 1024 characters: say why this \
         namespace needs its own images"
    )]
    Reason,
    /// Too many registries.
    #[error("spec.registries: at most 64 entries, got {0}")]
    TooManyRegistries(usize),
    /// A registry listed twice.
    #[error("spec.registries: {0:?} is listed twice")]
    Duplicate(String),
    /// A registry entry the grant grammar refuses.
    #[error("{0}")]
    Registry(crate::InvalidGrant),
    /// `spec.duration` does not match [`DURATION_PATTERN`], or is zero.
    #[error(
        "spec.duration {0:?} is not a positive duration: one to five terms of a number (at most \
         6 digits) and a unit s, m, h, d or w, like 90d, 12h, 2w or 1d12h"
    )]
    Duration(String),
}

impl ByocRequestSpec {
    /// Checks the spec of a request in `namespace` as the CRD schema does.
    pub fn validate(&self, namespace: &str) -> Result<(), InvalidRequest> {
        if self.reason.trim().is_empty() || self.reason.chars().count() > 1024 {
            return Err(InvalidRequest::Reason);
        }
        if self.registries.len() > 64 {
            return Err(InvalidRequest::TooManyRegistries(self.registries.len()));
        }
        for (i, r) in self.registries.iter().enumerate() {
            if self.registries[..i].contains(r) {
                return Err(InvalidRequest::Duplicate(r.clone()));
            }
        }
        let grant = crate::ByocGrantSpec {
            namespace: namespace.to_owned(),
            reason: self.reason.clone(),
            registries: self.registries.clone(),
            any_registry: self.registries.is_empty(),
            namespace_uid: None,
            expires_at: None,
            requirements: None,
        };
        grant.validate().map_err(InvalidRequest::Registry)?;
        match &self.duration {
            Some(d) if !is_duration(d) => Err(InvalidRequest::Duration(d.clone())),
            _ => Ok(()),
        }
    }
}

/// Whether `s` matches [`DURATION_PATTERN`] and is not zero, as the CRD requires.
pub fn is_duration(s: &str) -> bool {
    crate::duration::terms(s).is_some_and(|terms| {
        (1..=5).contains(&terms.len())
            && terms.iter().all(|(digits, _)| digits.len() <= 6)
            && terms
                .iter()
                .any(|(digits, _)| digits.bytes().any(|b| b != b'0'))
    })
}

impl ByocRequest {
    /// The phase, `Pending` until someone writes one.
    pub fn phase(&self) -> RequestPhase {
        self.status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or(RequestPhase::Pending)
    }
}

/// The CustomResourceDefinition as YAML, as committed in `crds/byocrequests.yaml`.
pub fn crd_yaml() -> Result<String, serde_saphyr::SerializeError> {
    use kube::CustomResourceExt;
    let yaml = serde_saphyr::to_string(&ByocRequest::crd())?;
    Ok(format!(
        "# Generated by `make crds` from crates/api/src/request.rs; do not edit by hand.\n{yaml}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crd_is_fresh() {
        let committed = include_str!("../../../crds/byocrequests.yaml");
        assert!(
            crd_yaml().unwrap() == committed,
            "crds/byocrequests.yaml is stale or was edited by hand: run `make crds` and commit it"
        );
    }

    #[test]
    fn duration_pattern_matches_the_cli_grammar() {
        let re = regex::Regex::new(DURATION_PATTERN).unwrap();
        for ok in ["90d", "12h", "2w", "1d12h", "30m", "45s", "0d1h"] {
            assert!(re.is_match(ok), "{ok}");
        }
        for bad in ["", "90", "d", "90days", "1.5d", "-1d", "90D", " 90d", "1y"] {
            assert!(!re.is_match(bad), "{bad}");
        }
    }

    #[test]
    fn durations_follow_the_pattern_and_the_positive_rule() {
        let re = regex::Regex::new(DURATION_PATTERN).unwrap();
        let zero = regex::Regex::new("^(?:0+[smhdw])+$").unwrap();
        let cases = [
            "90d",
            "12h",
            "2w",
            "1d12h",
            "30m",
            "45s",
            "0d1h",
            "",
            "90",
            "d",
            "90days",
            "1.5d",
            "-1d",
            "90D",
            " 90d",
            "1y",
            "0d",
            "00h0m",
            "1234567d",
            "123456d",
            "1s1s1s1s1s",
            "1s1s1s1s1s1s",
            "1d ",
            "d1",
        ];
        for s in cases {
            // The pattern, and the CEL rule's own regex for zero.
            let want = re.is_match(s) && !zero.is_match(s);
            assert_eq!(is_duration(s), want, "{s:?}");
        }
    }

    #[test]
    fn validation_matches_the_crd_rules() {
        let spec = |registries: &[&str], reason: &str, duration: Option<&str>| ByocRequestSpec {
            registries: registries.iter().map(|s| s.to_string()).collect(),
            reason: reason.into(),
            duration: duration.map(Into::into),
        };
        let many: Vec<String> = (0..65).map(|i| format!("r{i}.example.org")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let long = "x".repeat(1025);
        let cases: &[(ByocRequestSpec, Option<&str>)] = &[
            (spec(&["quay.io/x"], "T1", Some("90d")), None),
            (spec(&[], "T1", None), None),
            (spec(&["quay.io"], " ", None), Some("spec.reason")),
            (spec(&["quay.io"], &long, None), Some("spec.reason")),
            (
                spec(&["quay"], "T1", None),
                Some("spec.registries: registry entry \"quay\""),
            ),
            (
                spec(&["quay.io", "quay.io"], "T1", None),
                Some("listed twice"),
            ),
            (spec(&many, "T1", None), Some("at most 64")),
            (spec(&[], "T1", Some("0d")), Some("spec.duration \"0d\"")),
            (spec(&[], "T1", Some("1y")), Some("spec.duration")),
        ];
        for (spec, want) in cases {
            match (spec.validate("tool-a"), want) {
                (Ok(()), None) => {}
                (Err(e), Some(want)) => assert!(e.to_string().contains(want), "{spec:?}: {e}"),
                (got, want) => panic!("{spec:?}: got {got:?}, want {want:?}"),
            }
        }
        assert_eq!(request_key("tool-a", "r"), "tool-a/r");
    }

    #[test]
    fn records_pin_namespace_name_and_uid() {
        let mut request = any_registry_request();
        request.metadata.namespace = Some("tool-a".into());
        assert_eq!(RequestRecord::of(&request), None, "no UID: not stored");
        request.metadata.uid = Some("u-1".into());
        let record = RequestRecord::of(&request).unwrap();
        assert_eq!(record.to_string(), "tool-a/r/u-1");
        assert_eq!(RequestRecord::parse("tool-a/r/u-1"), Some(record.clone()));
        assert!(record.is(&request));
        let mut replaced = request.clone();
        replaced.metadata.uid = Some("u-2".into());
        assert!(!record.is(&replaced), "same name, another request");
        for bad in ["", "tool-a/r", "tool-a/r/", "/r/u", "tool-a//u", "a/b/c/d"] {
            assert_eq!(RequestRecord::parse(bad), None, "{bad:?}");
        }
    }

    /// Request `r` for any registry, without end.
    fn any_registry_request() -> ByocRequest {
        ByocRequest::new(
            "r",
            ByocRequestSpec {
                registries: vec![],
                reason: "x".into(),
                duration: None,
            },
        )
    }

    #[test]
    fn phases() {
        let mut request = any_registry_request();
        assert_eq!(request.phase(), RequestPhase::Pending);
        assert!(!request.phase().is_decided());
        request.status = Some(ByocRequestStatus {
            phase: Some(RequestPhase::Denied),
            ..Default::default()
        });
        assert_eq!(request.phase(), RequestPhase::Denied);
        assert!(request.phase().is_decided());
        let json = serde_json::to_value(&request.status).unwrap();
        assert_eq!(json["phase"], "Denied");
        assert_eq!(RequestPhase::Revoked.as_str(), "Revoked");
    }
}

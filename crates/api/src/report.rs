//! The `wgpolicyk8s.io/v1alpha2` `PolicyReport` the controller keeps per namespace (DESIGN §11),
//! as far as the operator writes and reads it: the controller writes one named [`REPORT_NAME`]
//! per non-exempt namespace, `kubectl byoc images` reads them back.
//!
//! The CRD is not ours (Kyverno and Kubewarden install it too); the chart ships a copy of its
//! schema in `charts/byoc-operator/files/policyreports.yaml`. Each result names its images in
//! `properties`, one index per image: `image.N` (as written), `registry.N` (the registry it
//! resolves to; absent when the reference does not parse) and `allowedBy.N` (the grant that
//! allows it, [`ALLOWED_BY_PLATFORM`], [`ALLOWED_BY_REFUSED`] or [`ALLOWED_BY_LABELS`]), `N` counting from 1.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::NamespaceResourceScope;
use serde::{Deserialize, Serialize};

use crate::lenient;

/// The name of the report in each namespace.
pub const REPORT_NAME: &str = "byoc-registry-policy";
/// The `policy` of every result.
pub const POLICY: &str = "byoc-registry";
/// The `rule` of every result.
pub const RULE: &str = "allowed-registries";
/// The `source` of every result: the engine that wrote it.
pub const SOURCE: &str = "byoc-operator";
/// `allowedBy.N` of an image from a default registry.
pub const ALLOWED_BY_PLATFORM: &str = "platform";
/// `allowedBy.N` of an image the policy refuses.
pub const ALLOWED_BY_REFUSED: &str = "REFUSED";
/// `allowedBy.N` of an allowed image whose grant is not known (yet): the namespace labels,
/// which decide, are ahead of the grants the writer has seen.
pub const ALLOWED_BY_LABELS: &str = "namespace labels";
/// The label that marks reports the controller manages.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`] on the controller's reports.
pub const MANAGED_BY: &str = "byoc-operator";
/// The annotation counting the results a report left out to fit the size the API server
/// takes (absent when it holds them all); its summary still counts every one.
pub const RESULTS_LEFT_OUT: &str = "byoc.toolforge.org/results-left-out";

/// The result property counting the images it does not name (past the names kept per result).
pub const OMITTED_PROPERTY: &str = "images.omitted";

/// The result property counting the containers whose images the per-object cap left unread,
/// so unjudged.
pub const UNJUDGED_PROPERTY: &str = "images.unjudged";

/// A `PolicyReport` (`wgpolicyk8s.io/v1alpha2`, namespaced). Metadata is read as
/// [`lenient::object_meta`] reads it; fields the operator does not write (`scope`,
/// `scopeSelector`) are not read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyReport {
    /// The report's metadata.
    #[serde(deserialize_with = "lenient::object_meta")]
    pub metadata: ObjectMeta,
    /// Counts of the results by outcome.
    #[serde(default)]
    pub summary: Summary,
    /// One result per top-level workload or bare pod.
    #[serde(default)]
    pub results: Vec<ReportResult>,
}

/// The counts of a report's results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Results that pass.
    #[serde(default)]
    pub pass: u32,
    /// Results that fail.
    #[serde(default)]
    pub fail: u32,
    /// Results that fail while the policy is in warn mode.
    #[serde(default)]
    pub warn: u32,
    /// Results that could not be evaluated (a malformed pod spec).
    #[serde(default)]
    pub error: u32,
    /// Results not evaluated.
    #[serde(default)]
    pub skip: u32,
}

/// The outcome of one result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every image is allowed.
    Pass,
    /// An image is refused (enforce and audit mode).
    Fail,
    /// An image is refused while the policy is in warn mode.
    Warn,
    /// The pod spec cannot be read.
    Error,
    /// Not evaluated.
    Skip,
}

impl Outcome {
    /// The value in reports and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Warn => "warn",
            Self::Error => "error",
            Self::Skip => "skip",
        }
    }
}

impl Summary {
    /// The counts of `outcomes`.
    pub fn of(outcomes: impl IntoIterator<Item = Outcome>) -> Self {
        let mut s = Self::default();
        for o in outcomes {
            *match o {
                Outcome::Pass => &mut s.pass,
                Outcome::Fail => &mut s.fail,
                Outcome::Warn => &mut s.warn,
                Outcome::Error => &mut s.error,
                Outcome::Skip => &mut s.skip,
            } += 1;
        }
        s
    }
}

/// One result: the policy's verdict on one workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportResult {
    /// Always [`SOURCE`].
    #[serde(default)]
    pub source: String,
    /// Always [`POLICY`].
    pub policy: String,
    /// Always [`RULE`].
    #[serde(default)]
    pub rule: String,
    /// The outcome.
    pub result: Outcome,
    /// Whether the result counts (always true).
    #[serde(default)]
    pub scored: bool,
    /// The denial lines of DESIGN §4 (one per refused container), or why everything passes.
    #[serde(default)]
    pub message: String,
    /// The workload.
    #[serde(default)]
    pub resources: Vec<ResourceRef>,
    /// The images: `image.N`, `registry.N`, `allowedBy.N`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// When this result last changed.
    #[serde(default)]
    pub timestamp: ResultTime,
}

/// `metav1.Timestamp`: seconds and nanoseconds since the epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultTime {
    /// Seconds.
    #[serde(default)]
    pub seconds: i64,
    /// Nanoseconds.
    #[serde(default)]
    pub nanos: i32,
}

/// The object a result is about (a `corev1.ObjectReference`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRef {
    /// `apps/v1`, `v1`, ...
    #[serde(default)]
    pub api_version: String,
    /// `Deployment`, `Pod`, ...
    #[serde(default)]
    pub kind: String,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Its namespace.
    #[serde(default)]
    pub namespace: String,
    /// Its uid.
    #[serde(default)]
    pub uid: String,
}

/// One image of a result, as its properties name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageProperty {
    /// The image as written.
    pub image: String,
    /// The registry it resolves to, when it parses.
    pub registry: Option<String>,
    /// The grant that allows it, `platform` or `REFUSED`.
    pub allowed_by: String,
    /// The base it is built on and whether it is current, when a base check applies to it.
    pub base: Option<BaseProperty>,
}

/// The base of one image of a result (properties `base.N`, `baseState.N`, `rebuildOn.N`,
/// `baseError.N`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseProperty {
    /// The base, `repository[:tag]@digest`, or `unknown` (`checking` before the answer).
    pub base: String,
    /// `current`, `older`, `deprecated`, `unknown` or `checking`.
    pub state: String,
    /// For a base that is not current: the current one to rebuild on.
    pub rebuild_on: Option<String>,
    /// For `unknown`: why.
    pub error: Option<String>,
}

impl BaseProperty {
    /// Whether the image needs a rebuild (its base is `older` or `deprecated`).
    pub fn is_stale(&self) -> bool {
        self.state == "older" || self.state == "deprecated"
    }
}

impl ImageProperty {
    /// Writes the properties of `images`, numbered from 1.
    pub fn to_properties<'a>(
        images: impl IntoIterator<Item = &'a Self>,
    ) -> BTreeMap<String, String> {
        let mut properties = BTreeMap::new();
        for (i, p) in images.into_iter().enumerate() {
            let n = i + 1;
            properties.insert(format!("image.{n}"), p.image.clone());
            if let Some(registry) = &p.registry {
                properties.insert(format!("registry.{n}"), registry.clone());
            }
            properties.insert(format!("allowedBy.{n}"), p.allowed_by.clone());
            if let Some(base) = &p.base {
                properties.insert(format!("base.{n}"), base.base.clone());
                properties.insert(format!("baseState.{n}"), base.state.clone());
                if let Some(on) = &base.rebuild_on {
                    properties.insert(format!("rebuildOn.{n}"), on.clone());
                }
                if let Some(error) = &base.error {
                    properties.insert(format!("baseError.{n}"), error.clone());
                }
            }
        }
        properties
    }

    /// Reads the images back from a result's properties, in order; stops at the first missing
    /// `image.N`.
    pub fn from_properties(properties: &BTreeMap<String, String>) -> Vec<Self> {
        (1..)
            .map_while(|n| {
                let image = properties.get(&format!("image.{n}"))?;
                Some(Self {
                    image: image.clone(),
                    registry: properties.get(&format!("registry.{n}")).cloned(),
                    allowed_by: properties
                        .get(&format!("allowedBy.{n}"))
                        .cloned()
                        .unwrap_or_default(),
                    base: properties
                        .get(&format!("base.{n}"))
                        .map(|base| BaseProperty {
                            base: base.clone(),
                            state: properties
                                .get(&format!("baseState.{n}"))
                                .cloned()
                                .unwrap_or_else(|| "unknown".to_owned()),
                            rebuild_on: properties.get(&format!("rebuildOn.{n}")).cloned(),
                            error: properties.get(&format!("baseError.{n}")).cloned(),
                        }),
                })
            })
            .collect()
    }
}

impl Resource for PolicyReport {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "PolicyReport".into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        "wgpolicyk8s.io".into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        "v1alpha2".into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        "policyreports".into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn image_properties_round_trip() {
        let images = vec![
            ImageProperty {
                image: "quay.io/a/b:1".into(),
                registry: Some("quay.io".into()),
                allowed_by: "tool-a-quay".into(),
                base: Some(BaseProperty {
                    base: "quay.io/a/base:1@sha256:00".into(),
                    state: "older".into(),
                    rebuild_on: Some("quay.io/a/base:1".into()),
                    error: None,
                }),
            },
            ImageProperty {
                image: "Not A Ref".into(),
                registry: None,
                allowed_by: ALLOWED_BY_REFUSED.into(),
                base: None,
            },
            ImageProperty {
                image: "quay.io/a/c:1".into(),
                registry: Some("quay.io".into()),
                allowed_by: "tool-a-quay".into(),
                base: Some(BaseProperty {
                    base: "unknown".into(),
                    state: "unknown".into(),
                    rebuild_on: None,
                    error: Some("not built on quay.io/a/base".into()),
                }),
            },
        ];
        assert!(images[0].base.as_ref().unwrap().is_stale());
        assert!(!images[2].base.as_ref().unwrap().is_stale());
        let properties = ImageProperty::to_properties(&images);
        assert_eq!(properties["image.2"], "Not A Ref");
        assert!(!properties.contains_key("registry.2"));
        assert_eq!(ImageProperty::from_properties(&properties), images);
        assert!(ImageProperty::from_properties(&BTreeMap::new()).is_empty());
    }

    #[test]
    fn reads_a_stored_report_leniently() {
        let stored = json!({
            "apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
            "metadata": {"name": REPORT_NAME, "namespace": "tool-a", "resourceVersion": "7",
                "managedFields": [{"manager": "x", "time": "9999-12-31T00:00:00Z"}]},
            "scope": {"kind": "Namespace", "name": "tool-a"},
            "summary": {"pass": 1, "fail": 0, "warn": 0, "error": 0, "skip": 0},
            "results": [{"policy": POLICY, "rule": RULE, "result": "pass", "source": SOURCE,
                "scored": true, "timestamp": {"seconds": 5, "nanos": 0},
                "resources": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                    "namespace": "tool-a", "uid": "u"}],
                "properties": {"image.1": "quay.io/a"}}],
        });
        let report: PolicyReport = serde_json::from_value(stored).unwrap();
        assert_eq!(report.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(report.summary, Summary::of([Outcome::Pass]));
        assert_eq!(report.results[0].result, Outcome::Pass);
        assert_eq!(report.results[0].timestamp.seconds, 5);
        assert_eq!(report.results[0].resources[0].kind, "Deployment");
    }

    #[test]
    fn summary_counts_each_outcome() {
        let s = Summary::of([Outcome::Pass, Outcome::Fail, Outcome::Pass, Outcome::Error]);
        assert_eq!((s.pass, s.fail, s.warn, s.error, s.skip), (2, 1, 0, 1, 0));
    }
}

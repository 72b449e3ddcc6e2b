//! `kubectl-byoc check`: evaluate manifests offline with exactly the webhook's code.

use std::collections::BTreeMap;
use std::io::Write;

use byoc_api::ByocGrant;
use byoc_api::labels::Allowance;
use byoc_policy::{Config, Decision, decide, respond};
use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use kube::core::{DynamicObject, GroupVersionKind, GroupVersionResource, TypeMeta};
use serde::Serialize;

use crate::manifest::{self, Document, ManifestError};
use crate::{Failure, OutputFormat};

/// The inputs of one `check` run, already parsed.
pub struct Check {
    /// The policy.
    pub config: Config,
    /// The namespace of objects that name none.
    pub namespace: String,
    /// The evaluation instant.
    pub now: Timestamp,
    /// Namespace labels as the controller would write them from the grants.
    pub labels: BTreeMap<String, BTreeMap<String, String>>,
}

impl Check {
    /// Reads the policy inputs: configuration, registry override, grants.
    pub fn new(
        config_file: Option<&str>,
        allowed_registries: &[String],
        namespace: String,
        grant_files: &[String],
        now: Option<&str>,
    ) -> Result<Self, Failure> {
        let mut config = read_config(config_file)?;
        if !allowed_registries.is_empty() {
            config.default_registries = allowed_registries
                .iter()
                .map(|r| {
                    r.parse()
                        .map_err(|e| Failure::Usage(format!("--allowed-registry: {e}")))
                })
                .collect::<Result<_, _>>()?;
        }
        let now = match now {
            Some(s) => s.parse::<Timestamp>().map_err(|e| {
                Failure::Usage(format!(
                    "--now {s:?} is not an RFC 3339 time like 2027-01-31T00:00:00Z: {e}"
                ))
            })?,
            None => Timestamp::now(),
        };
        let labels = grant_labels(grant_files, now)?;
        Ok(Self {
            config,
            namespace,
            now,
            labels,
        })
    }

    /// Evaluates every document of `files`; returns whether everything was admitted.
    pub fn run(&self, files: &[String], format: OutputFormat) -> Result<bool, Failure> {
        // Read everything first: bad input is exit 2 even after a denial.
        let mut documents = Vec::new();
        for file in files {
            documents.extend(manifest::read(file)?);
        }
        let mut results = Vec::new();
        for doc in &documents {
            if let Some(result) = self.evaluate(doc)? {
                results.push(result);
            }
        }
        let admitted = results.iter().all(|r| r.admitted);
        let mut out = std::io::stdout().lock();
        let written = match format {
            OutputFormat::Text => results
                .iter()
                .flat_map(|r| if r.admitted { &[][..] } else { &r.messages[..] })
                .try_for_each(|line| writeln!(out, "{line}")),
            OutputFormat::Json => serde_json::to_writer_pretty(
                &mut out,
                &Report {
                    admitted,
                    results: &results,
                },
            )
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out)),
        };
        written.map_err(|e| Failure::Usage(format!("cannot write the report: {e}")))?;
        for r in &results {
            for w in &r.warnings {
                eprintln!("warning: {}: {w}", r.source);
            }
        }
        let refused = results.iter().filter(|r| !r.admitted).count();
        eprintln!(
            "checked {} objects: {} admitted, {refused} refused",
            results.len(),
            results.len() - refused
        );
        Ok(admitted)
    }

    /// Evaluates one document as the webhook would; kinds without a pod spec are skipped.
    fn evaluate(&self, doc: &Document) -> Result<Option<CheckResult>, Failure> {
        let request = if doc.kind()? == "AdmissionReview" {
            let review: AdmissionReview<DynamicObject> = serde_json::from_value(doc.value.clone())
                .map_err(|e| {
                    ManifestError::invalid(&doc.origin, format!("invalid AdmissionReview: {e}"))
                })?;
            review.try_into().map_err(|e| {
                ManifestError::invalid(&doc.origin, format!("invalid AdmissionReview: {e}"))
            })?
        } else {
            let kind = doc.kind()?;
            let api_version = doc.api_version()?;
            let group = byoc_policy::workload::group_of(api_version);
            if byoc_policy::workload::PodBearing::of(group, kind).is_none()
                && !(group.is_empty() && kind == "Namespace")
            {
                eprintln!(
                    "note: {}: skipped {kind}, which has no pod template",
                    doc.origin
                );
                return Ok(None);
            }
            self.create_request(doc)?
        };
        let namespace = request.namespace.clone().unwrap_or_default();
        let (allowance, _) = self
            .labels
            .get(&namespace)
            .map(Allowance::from_labels)
            .unwrap_or_default();
        let decision = decide(&self.config, &request, &allowance, self.now);
        let response = respond(&self.config, &request, &decision);
        Ok(Some(CheckResult::new(
            doc,
            &request,
            &decision,
            response.allowed,
            response.warnings.unwrap_or_default(),
        )))
    }

    /// The AdmissionRequest the API server would send when the object is created.
    fn create_request(
        &self,
        doc: &Document,
    ) -> Result<AdmissionRequest<DynamicObject>, ManifestError> {
        let object: DynamicObject = serde_json::from_value(doc.value.clone())
            .map_err(|e| ManifestError::invalid(&doc.origin, format!("invalid object: {e}")))?;
        let kind = doc.kind()?;
        let api_version = doc.api_version()?;
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let namespaced = kind != "Namespace";
        Ok(AdmissionRequest {
            types: TypeMeta {
                api_version: "admission.k8s.io/v1".into(),
                kind: "AdmissionReview".into(),
            },
            uid: String::new(),
            kind: GroupVersionKind::gvk(group, version, kind),
            resource: GroupVersionResource::gvr(
                group,
                version,
                &format!("{}s", kind.to_lowercase()),
            ),
            sub_resource: None,
            request_kind: None,
            request_resource: None,
            request_sub_resource: None,
            name: object.metadata.name.clone().unwrap_or_default(),
            namespace: namespaced.then(|| {
                object
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| self.namespace.clone())
            }),
            operation: Operation::Create,
            user_info: UserInfo::default(),
            object: Some(object),
            old_object: None,
            dry_run: true,
            options: None,
        })
    }
}

/// Reads the policy configuration of `--config`, the defaults without one.
pub fn read_config(file: Option<&str>) -> Result<Config, Failure> {
    Config::read(file.map(std::path::Path::new)).map_err(|e| Failure::Usage(e.to_string()))
}

/// Reads `--grant` files into the namespace labels the controller would write at `now`.
fn grant_labels(
    files: &[String],
    now: Timestamp,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, Failure> {
    let mut allowances: BTreeMap<String, Allowance> = BTreeMap::new();
    for file in files {
        for doc in manifest::read(file)? {
            let (kind, api_version) = (doc.kind()?, doc.api_version()?);
            if kind != "ByocGrant" || api_version != "byoc.toolforge.org/v1alpha1" {
                return Err(ManifestError::invalid(
                    &doc.origin,
                    format!("--grant takes ByocGrant (byoc.toolforge.org/v1alpha1) manifests, found {kind} ({api_version})"),
                )
                .into());
            }
            let grant: ByocGrant = serde_json::from_value(doc.value).map_err(|e| {
                ManifestError::invalid(&doc.origin, format!("invalid ByocGrant: {e}"))
            })?;
            let allowance = grant
                .spec
                .validate()
                .map_err(|e| ManifestError::invalid(&doc.origin, e))?;
            if !grant.is_expired_at(now) {
                allowances
                    .entry(grant.spec.namespace.clone())
                    .or_default()
                    .merge(allowance);
            }
        }
    }
    allowances
        .into_iter()
        .map(|(ns, a)| {
            let labels = a.to_labels().map_err(|e| Failure::Usage(e.to_string()))?;
            Ok((ns, labels))
        })
        .collect()
}

/// The result of one object, as `-o json` prints it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CheckResult {
    /// `FILE document N [item M]`.
    source: String,
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    name: String,
    admitted: bool,
    /// A metric-style reason: allowed, exempt, registry_not_allowed, invalid_image,
    /// label_protected, unsupported_kind, malformed.
    reason: &'static str,
    /// One line per refused container or change (also present when admitted in warn/audit mode).
    messages: Vec<String>,
    warnings: Vec<String>,
}

impl CheckResult {
    fn new(
        doc: &Document,
        req: &AdmissionRequest<DynamicObject>,
        decision: &Decision,
        admitted: bool,
        warnings: Vec<String>,
    ) -> Self {
        let name = req
            .object
            .as_ref()
            .and_then(|o| {
                o.metadata
                    .name
                    .clone()
                    .or_else(|| o.metadata.generate_name.clone())
            })
            .unwrap_or_else(|| req.name.clone());
        Self {
            source: doc.origin.to_string(),
            kind: req.kind.kind.clone(),
            namespace: req.namespace.clone(),
            name,
            admitted,
            reason: decision.reason.as_str(),
            messages: decision.lines.clone(),
            warnings,
        }
    }
}

#[derive(Serialize)]
struct Report<'a> {
    admitted: bool,
    results: &'a [CheckResult],
}

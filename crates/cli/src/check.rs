//! `kubectl-byoc check`: evaluate manifests offline with exactly the webhook's code: the
//! namespace labels and requirements annotation the controller would write from the grants
//! ([`byoc_api::granted`]), the webhook's decision ([`decide_requiring`]) and, for images
//! allowed by name that have requirements, the webhook's registry lookups
//! ([`byoc_registry::Lookups`]), or none with `--registry-offline`.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::io::Write;

use byoc_api::labels::Allowance;
use byoc_api::requirements::{NamespaceRequirements, Requirements};
use byoc_api::{ByocGrant, granted::Granted};
use byoc_policy::config::{FailureMode, FailureModes};
use byoc_policy::decision::NamespaceAnnotation;
use byoc_policy::{Config, Decision, decide_requiring, respond};
use byoc_registry::{Lookups, lookups};
use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use kube::core::{DynamicObject, GroupVersionKind, GroupVersionResource, TypeMeta};
use serde::Serialize;

use crate::manifest::{self, Document, ManifestError};
use crate::{Failure, OutputFormat};

/// Why a `--registry-offline` check refuses an image whose requirements need the registry;
/// its refusal reads "registry lookups are not available (this)".
const OFFLINE: &str =
    "--registry-offline: no registry is asked, and this image needs a registry lookup";

/// The inputs of one `check` run, already parsed.
pub struct Check {
    /// The policy.
    pub config: Config,
    /// The namespace of objects that name none.
    pub namespace: String,
    /// The evaluation instant.
    pub now: Timestamp,
    /// What the controller would write on each namespace from the grants.
    pub written: BTreeMap<String, Written>,
    /// `--registry-offline`: no registry lookups.
    pub offline: bool,
    /// The registry lookups, set up when the first image needs one.
    lookups: OnceCell<Lookups>,
}

/// What the controller writes on a namespace: the byoc labels and the requirements annotation.
#[derive(Debug, Default)]
pub struct Written {
    /// The labels under the prefix.
    pub labels: BTreeMap<String, String>,
    /// The requirements annotation, when an allowance has requirements.
    pub requirements: Option<String>,
}

impl Check {
    /// Reads the policy inputs: configuration, registry override, grants, and whether the
    /// registry may be asked.
    pub fn new(
        config_file: Option<&str>,
        allowed_registries: &[String],
        namespace: String,
        grant_files: &[String],
        now: Option<&str>,
        offline: bool,
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
        let written =
            grant_namespaces(grant_files, now, config.default_grant_requirements.as_ref())?;
        Ok(Self {
            config,
            namespace,
            now,
            written,
            offline,
            lookups: OnceCell::new(),
        })
    }

    /// The registry lookups as the webhook sets them up (a client that cannot be set up
    /// refuses what needs it, naming why); offline, none, and every image that needs one is
    /// refused whatever `failureMode` says.
    fn lookups(&self) -> &Lookups {
        self.lookups.get_or_init(|| {
            if self.offline {
                let fail = FailureModes {
                    built_on: FailureMode::Fail,
                    source_from: FailureMode::Fail,
                };
                Lookups::new(&self.config, Err(OFFLINE.to_owned()), ()).with_failure_modes(fail)
            } else {
                let client = lookups::client(&self.config, None).map_err(|e| e.to_string());
                Lookups::new(&self.config, client, ())
            }
        })
    }

    /// Evaluates every document of `files`; returns whether everything was admitted.
    pub fn run(&self, files: &[String], format: OutputFormat) -> Result<bool, Failure> {
        // Read everything first: bad input is exit 2 even after a denial.
        let mut documents = Vec::new();
        for file in files {
            documents.extend(manifest::read(file)?);
        }
        // Registry lookups run on this thread, only for images that need them.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::Usage(format!("cannot start the async runtime: {e}")))?;
        let mut results = Vec::new();
        for doc in &documents {
            if let Some(result) = self.evaluate(doc, &runtime)? {
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
    /// Registry lookups, when an image needs them, run on `runtime`.
    fn evaluate(
        &self,
        doc: &Document,
        runtime: &tokio::runtime::Runtime,
    ) -> Result<Option<CheckResult>, Failure> {
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
        let written = self.written.get(&namespace);
        let (allowance, _) = written
            .map(|w| Allowance::from_labels(&w.labels))
            .unwrap_or_default();
        // Read as the webhook reads it: an unreadable annotation is kept as its error.
        let requirements: Option<NamespaceAnnotation> = written
            .and_then(|w| w.requirements.as_deref())
            .map(|text| NamespaceRequirements::read(text).map_err(|e| e.to_string()));
        let mut decision = decide_requiring(
            &self.config,
            &request,
            &allowance,
            requirements.as_ref(),
            self.now,
        );
        if !decision.pending.is_empty() {
            let settled = runtime.block_on(self.lookups().settle(
                &namespace,
                self.config.tool_prefix(),
                &decision.pending,
                self.now,
            ));
            decision.settle(&namespace, &settled);
        }
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

/// Reads `--grant` files into what the controller would write on each namespace at `now`
/// ([`Granted`]), `default` being the policy's `defaultGrantRequirements`.
fn grant_namespaces(
    files: &[String],
    now: Timestamp,
    default: Option<&Requirements>,
) -> Result<BTreeMap<String, Written>, Failure> {
    let mut grants: BTreeMap<String, Vec<ByocGrant>> = BTreeMap::new();
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
            grant
                .spec
                .validate()
                .map_err(|e| ManifestError::invalid(&doc.origin, e))?;
            grants
                .entry(grant.spec.namespace.clone())
                .or_default()
                .push(grant);
        }
    }
    grants
        .into_iter()
        .map(|(namespace, grants)| {
            let granted = Granted::of(&grants, now, default);
            let labels = granted
                .labels()
                .map_err(|e| Failure::Usage(e.to_string()))?;
            let requirements = granted.requirements_annotation().map_err(|e| {
                Failure::Usage(format!(
                    "--grant: the controller would not write the requirements of namespace {namespace}'s grants: {e}"
                ))
            })?;
            Ok((
                namespace,
                Written {
                    labels,
                    requirements,
                },
            ))
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
    /// requirement_not_met, label_protected, unsupported_kind, malformed.
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

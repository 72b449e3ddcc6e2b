//! The audit report: refused objects grouped by namespace, with the grant that would fix each
//! namespace. Its JSON form is a stable contract, documented in docs/cli.md.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use byoc_api::RegistryPattern;
use byoc_policy::decision::Problem;
use byoc_policy::{Allowance, Config};
use jiff::Timestamp;
use serde::Serialize;

use super::scan::Finding;
use crate::output::shell_quote;

/// The `audit -o json` document.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Always `ByocAudit`.
    pub kind: &'static str,
    /// The format version; fields are only added within a version.
    pub version: u32,
    /// The instant the policy was evaluated at.
    pub time: Timestamp,
    /// The namespace audited, or `None` for all.
    pub namespace: Option<String>,
    /// The configured mode; the audit reports what enforce mode refuses, whatever it is.
    pub mode: String,
    /// Whether anything would be refused.
    pub refused: bool,
    /// Counts.
    pub summary: Summary,
    /// Namespaces with something refused, by name.
    pub namespaces: Vec<NamespaceReport>,
}

/// What was audited and what would be refused.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Namespaces audited (exempt ones excluded).
    pub namespaces: usize,
    /// Exempt namespaces, not audited.
    pub exempt_namespaces: usize,
    /// Pods audited (finished pods excluded).
    pub pods: usize,
    /// Workloads audited (ReplicaSets of Deployments and Jobs of CronJobs excluded).
    pub workloads: usize,
    /// Objects left out: finished pods, ReplicaSets of Deployments, Jobs of CronJobs, workloads
    /// being deleted, and everything in exempt namespaces.
    pub skipped: usize,
    /// Namespaces with something refused.
    pub refused_namespaces: usize,
    /// Pods refused.
    pub refused_pods: usize,
    /// Workloads refused.
    pub refused_workloads: usize,
    /// Containers refused, over all objects.
    pub refused_containers: usize,
}

/// One namespace with refused objects.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceReport {
    /// The namespace.
    pub name: String,
    /// What it may use now: the default registries and its unexpired granted entries.
    pub allowed_registries: Vec<String>,
    /// Whether it is granted any registry now (then only invalid references are refused).
    pub any_registry: bool,
    /// The refused objects: workloads first, then pods, by kind and name.
    pub objects: Vec<ObjectReport>,
    /// The grant that would admit every refused image with a valid reference; `None` when
    /// only invalid references are refused (no grant fixes those).
    pub fix: Option<Fix>,
}

/// One refused object.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReport {
    /// `Deployment`, `Pod`, ...
    pub kind: &'static str,
    /// `apps/v1`, `v1`, ...
    pub api_version: String,
    /// Its name.
    pub name: String,
    /// Its controller (`ReplicaSet web-5d4f8`), if any.
    pub owner: Option<OwnerReport>,
    /// A pod being deleted: it runs until its grace period ends.
    pub terminating: bool,
    /// The refused containers, the first [`byoc_policy::decision::LISTED`].
    pub containers: Vec<ContainerReport>,
    /// How many more containers are refused and not listed.
    #[serde(skip_serializing_if = "is_zero")]
    pub unlisted_containers: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The controller of an object.
#[derive(Debug, Serialize, PartialEq)]
pub struct OwnerReport {
    /// Its kind.
    pub kind: String,
    /// Its name.
    pub name: String,
}

/// One refused container.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerReport {
    /// `container`, `initContainer`, `ephemeralContainer` or `volume` (an image volume).
    #[serde(rename = "type")]
    pub type_: String,
    /// The container's name.
    pub name: String,
    /// The image as written.
    pub image: String,
    /// `registry_not_allowed` or `invalid_image`.
    pub reason: &'static str,
    /// The registry the image resolves to (`registry_not_allowed` only).
    pub registry: Option<String>,
    /// The fully normalized reference (`registry_not_allowed` only).
    pub resolved: Option<String>,
    /// The webhook's denial line for this container.
    pub message: String,
}

/// A grant that would admit a namespace's refused images.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Fix {
    /// The registries to grant.
    pub registries: Vec<String>,
    /// A `kubectl byoc grant` command that does it; the reason is for the admin to fill in.
    pub command: String,
}

impl Report {
    /// Builds the report from the findings of a scan.
    pub fn new(
        config: &Config,
        allowance_of: impl Fn(&str) -> Allowance,
        mut findings: Vec<Finding>,
        mut summary: Summary,
        namespace: Option<String>,
        time: Timestamp,
    ) -> Self {
        findings.sort_by(|a, b| {
            (&a.namespace, a.source, &a.name).cmp(&(&b.namespace, b.source, &b.name))
        });
        let mut by_namespace: BTreeMap<String, Vec<Finding>> = BTreeMap::new();
        for f in findings {
            by_namespace.entry(f.namespace.clone()).or_default().push(f);
        }
        let namespaces: Vec<NamespaceReport> = by_namespace
            .into_iter()
            .map(|(ns, findings)| {
                let allowance = allowance_of(&ns);
                NamespaceReport::new(config, &allowance, ns, findings, time)
            })
            .collect();
        summary.refused_namespaces = namespaces.len();
        let objects = || namespaces.iter().flat_map(|n| &n.objects);
        summary.refused_pods = objects().filter(|o| o.kind == "Pod").count();
        summary.refused_workloads = objects().filter(|o| o.kind != "Pod").count();
        summary.refused_containers = objects()
            .map(|o| o.containers.len() + o.unlisted_containers)
            .sum();
        Self {
            kind: "ByocAudit",
            version: 1,
            time,
            namespace,
            mode: config.mode.to_string(),
            refused: !namespaces.is_empty(),
            summary,
            namespaces,
        }
    }

    /// The text report: one block per namespace. Empty when nothing would be refused.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (i, ns) in self.namespaces.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let pods = ns.objects.iter().filter(|o| o.kind == "Pod").count();
            let workloads = ns.objects.len() - pods;
            let allowed = if ns.any_registry {
                "any registry".to_owned()
            } else {
                ns.allowed_registries.join(", ")
            };
            let _ = writeln!(
                out,
                "namespace {}: {} would be refused (allowed here: {allowed})",
                ns.name,
                counted(workloads, pods)
            );
            for o in &ns.objects {
                let mark = if o.terminating { " (terminating)" } else { "" };
                for c in &o.containers {
                    let what = match (&c.registry, c.reason) {
                        (Some(registry), _) => format!("is from {registry}"),
                        (None, _) => invalid_reason(&c.message),
                    };
                    let _ = writeln!(
                        out,
                        "  {}/{}{mark}: {} {:?} image {:?} {what}",
                        o.kind, o.name, c.type_, c.name, c.image
                    );
                }
                if o.unlisted_containers > 0 {
                    let _ = writeln!(
                        out,
                        "  {}/{}: …and {} more refused containers",
                        o.kind, o.name, o.unlisted_containers
                    );
                }
            }
            match &ns.fix {
                Some(fix) => {
                    let _ = writeln!(out, "  fix: {}", fix.command);
                }
                None => {
                    let _ = writeln!(out, "  fix: correct the image references");
                }
            }
        }
        out
    }

    /// The one-line summary for stderr.
    pub fn summary_line(&self) -> String {
        let s = &self.summary;
        let mut line = format!(
            "audited {} and {} in {} ({} exempt, {} left out)",
            plural(s.pods, "pod"),
            plural(s.workloads, "workload"),
            plural(s.namespaces, "namespace"),
            plural(s.exempt_namespaces, "namespace"),
            plural(s.skipped, "object")
        );
        if self.refused {
            let _ = write!(
                line,
                ": {} in {} would be refused",
                counted(s.refused_workloads, s.refused_pods),
                plural(s.refused_namespaces, "namespace")
            );
        } else {
            line.push_str(": nothing would be refused");
        }
        if self.mode != "enforce" {
            let _ = write!(
                line,
                " (the policy is in {} mode: these are admitted today and would be refused in \
                 enforce mode)",
                self.mode
            );
        }
        line
    }
}

impl NamespaceReport {
    fn new(
        config: &Config,
        allowance: &Allowance,
        name: String,
        findings: Vec<Finding>,
        now: Timestamp,
    ) -> Self {
        let allowed: BTreeSet<String> = config
            .default_registries_in(&name)
            .map(|p| p.to_string())
            .chain(allowance.registries_at(now).map(ToString::to_string))
            .collect();
        let mut registries = BTreeSet::new();
        let objects = findings
            .into_iter()
            .map(|f| {
                let unlisted_containers = f.violations.unlisted;
                let containers = f
                    .violations
                    .iter()
                    .map(|v| {
                        let (reason, registry, resolved) = match &v.problem {
                            Problem::NotAllowed { registry, resolved } => {
                                registries.insert(registry.clone());
                                (
                                    "registry_not_allowed",
                                    Some(registry.clone()),
                                    Some(resolved.clone()),
                                )
                            }
                            Problem::InvalidReference(_) => ("invalid_image", None, None),
                            Problem::RequirementNotMet { .. } => {
                                ("requirement_not_met", None, None)
                            }
                        };
                        ContainerReport {
                            type_: v.kind.to_string(),
                            name: v.container.clone(),
                            image: v.image.clone(),
                            reason,
                            registry,
                            resolved,
                            message: v.to_string(),
                        }
                    })
                    .collect();
                ObjectReport {
                    kind: f.source.kind(),
                    api_version: f.source.resource().api_version,
                    name: f.name,
                    owner: f.owner.map(|o| OwnerReport {
                        kind: o.kind,
                        name: o.name,
                    }),
                    terminating: f.terminating,
                    containers,
                    unlisted_containers,
                }
            })
            .collect();
        let fix = fix(&name, registries);
        Self {
            allowed_registries: allowed.into_iter().collect(),
            any_registry: allowance.allows_any_at(now),
            objects,
            fix,
            name,
        }
    }
}

/// The grant that admits `registries` in `namespace`; registries that cannot be granted (no
/// valid allow-list entry names them) are left out.
fn fix(namespace: &str, registries: BTreeSet<String>) -> Option<Fix> {
    let registries: Vec<String> = registries
        .into_iter()
        .filter(|r| r.parse::<RegistryPattern>().is_ok())
        .collect();
    if registries.is_empty() {
        return None;
    }
    let mut command = format!("kubectl byoc grant {}", shell_quote(namespace));
    for r in &registries {
        let _ = write!(command, " --registry {}", shell_quote(r));
    }
    command.push_str(" --reason '<why this tool needs its own images>'");
    Some(Fix {
        registries,
        command,
    })
}

/// The part of a denial line after "is not a valid image reference".
fn invalid_reason(message: &str) -> String {
    message
        .split_once("is not a valid image reference")
        .map_or_else(
            || "is not a valid image reference".to_owned(),
            |(_, rest)| format!("is not a valid image reference{rest}"),
        )
}

/// `1 workload and 2 pods`, `3 pods`, `1 workload`.
fn counted(workloads: usize, pods: usize) -> String {
    match (workloads, pods) {
        (0, p) => plural(p, "pod"),
        (w, 0) => plural(w, "workload"),
        (w, p) => format!("{} and {}", plural(w, "workload"), plural(p, "pod")),
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::scan::{Auditor, Outcome, Source};
    use byoc_api::ByocGrantSpec;
    use byoc_policy::inventory::Trimmed;
    use serde_json::json;
    use std::collections::HashMap;

    fn now() -> Timestamp {
        "2026-11-21T12:00:00Z".parse().unwrap()
    }

    fn findings(config: &Config, allowances: &HashMap<String, Allowance>) -> Vec<Finding> {
        let objects = [
            (
                Source::Pod,
                json!({"metadata": {"name": "web-1", "namespace": "tool-a", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d", "uid": "u", "controller": true}]},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}),
            ),
            (
                Source::Deployment,
                json!({"metadata": {"name": "web", "namespace": "tool-a"},
                "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}}}),
            ),
            (
                Source::CronJob,
                json!({"metadata": {"name": "backup", "namespace": "tool-a"},
                "spec": {"jobTemplate": {"spec": {"template": {"spec": {
                    "initContainers": [{"name": "fetch", "image": "quay.io/org/fetch:2"}],
                    "containers": [{"name": "run", "image": "docker-registry.tools.wmflabs.org/x"}]}}}}}}),
            ),
            (
                Source::Pod,
                // Being deleted, it runs until its grace period ends: reported, marked.
                json!({"metadata": {"name": "debug", "namespace": "tool-b", "deletionTimestamp": "2026-11-21T11:00:00Z"},
                "spec": {"containers": [{"name": "c", "image": "Not Valid"}]}}),
            ),
            (
                Source::Pod,
                json!({"metadata": {"name": "ok", "namespace": "tool-b"},
                "spec": {"containers": [{"name": "c", "image": "quay.io/x"}]}}),
            ),
        ];
        let auditor = Auditor::new(config, allowances, now());
        objects
            .into_iter()
            .filter_map(|(source, value)| {
                let object = Trimmed::from_value(source, &value).unwrap();
                match auditor.audit(&object) {
                    Outcome::Refused(f) => Some(f),
                    _ => None,
                }
            })
            .collect()
    }

    fn report() -> Report {
        let config = Config::default();
        let mut allowances = HashMap::new();
        allowances.insert(
            "tool-b".to_owned(),
            Allowance::for_grant(&ByocGrantSpec {
                namespace: "tool-b".into(),
                reason: "r".into(),
                registries: Vec::new(),
                any_registry: true,
                namespace_uid: None,
                expires_at: None,
                requirements: None,
            })
            .unwrap(),
        );
        let found = findings(&config, &allowances);
        let summary = Summary {
            namespaces: 2,
            exempt_namespaces: 4,
            pods: 3,
            workloads: 2,
            skipped: 1,
            ..Summary::default()
        };
        Report::new(
            &config,
            |ns| allowances.get(ns).cloned().unwrap_or_default(),
            found,
            summary,
            None,
            now(),
        )
    }

    #[test]
    fn text_groups_by_namespace_with_the_fix() {
        let r = report();
        assert_eq!(
            r.text(),
            "namespace tool-a: 2 workloads and 1 pod would be refused (allowed here: \
             docker-registry.tools.wmflabs.org)\n\
             \x20 Deployment/web: container \"app\" image \"nginx:1.27\" is from docker.io\n\
             \x20 CronJob/backup: initContainer \"fetch\" image \"quay.io/org/fetch:2\" is from quay.io\n\
             \x20 Pod/web-1: container \"app\" image \"nginx:1.27\" is from docker.io\n\
             \x20 fix: kubectl byoc grant tool-a --registry docker.io --registry quay.io --reason \
             '<why this tool needs its own images>'\n\
             \n\
             namespace tool-b: 1 pod would be refused (allowed here: any registry)\n\
             \x20 Pod/debug (terminating): container \"c\" image \"Not Valid\" is not a valid image reference: \
             repository name \"Not Valid\" must be lowercase\n\
             \x20 fix: correct the image references\n"
        );
        assert_eq!(
            r.summary_line(),
            "audited 3 pods and 2 workloads in 2 namespaces (4 namespaces exempt, 1 object left \
             out): 2 workloads and 2 pods in 2 namespaces would be refused"
        );
    }

    #[test]
    fn json_is_the_documented_shape() {
        let value = serde_json::to_value(report()).unwrap();
        assert_eq!(value["kind"], "ByocAudit");
        assert_eq!(value["version"], 1);
        assert_eq!(value["time"], "2026-11-21T12:00:00Z");
        assert_eq!(value["namespace"], serde_json::Value::Null);
        assert_eq!(value["mode"], "enforce");
        assert_eq!(value["refused"], true);
        assert_eq!(
            value["summary"],
            json!({"namespaces": 2, "exemptNamespaces": 4, "pods": 3, "workloads": 2,
                   "skipped": 1, "refusedNamespaces": 2, "refusedPods": 2,
                   "refusedWorkloads": 2, "refusedContainers": 4})
        );
        let a = &value["namespaces"][0];
        assert_eq!(a["name"], "tool-a");
        assert_eq!(
            a["allowedRegistries"],
            json!(["docker-registry.tools.wmflabs.org"])
        );
        assert_eq!(a["anyRegistry"], false);
        assert_eq!(
            a["fix"],
            json!({"registries": ["docker.io", "quay.io"],
                   "command": "kubectl byoc grant tool-a --registry docker.io --registry quay.io \
                               --reason '<why this tool needs its own images>'"})
        );
        let kinds: Vec<&str> = a["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["Deployment", "CronJob", "Pod"]);
        let pod = &a["objects"][2];
        assert_eq!(pod["apiVersion"], "v1");
        assert_eq!(
            pod["owner"],
            json!({"kind": "ReplicaSet", "name": "web-7d"})
        );
        let c = &pod["containers"][0];
        assert_eq!(c["type"], "container");
        assert_eq!(c["reason"], "registry_not_allowed");
        assert_eq!(c["registry"], "docker.io");
        assert_eq!(c["resolved"], "docker.io/library/nginx:1.27");
        assert!(
            c["message"]
                .as_str()
                .unwrap()
                .starts_with("Pod tool-a/web-1: container \"app\"")
        );
        assert_eq!(pod["terminating"], false);
        let b = &value["namespaces"][1];
        assert_eq!(b["objects"][0]["terminating"], true);
        assert_eq!(b["anyRegistry"], true);
        assert_eq!(b["fix"], serde_json::Value::Null);
        assert_eq!(b["objects"][0]["containers"][0]["reason"], "invalid_image");
        assert_eq!(
            b["objects"][0]["containers"][0]["registry"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn nothing_refused() {
        let config = Config {
            mode: byoc_policy::Mode::Warn,
            ..Config::default()
        };
        let r = Report::new(
            &config,
            |_| Allowance::default(),
            Vec::new(),
            Summary::default(),
            Some("tool-a".into()),
            now(),
        );
        assert!(!r.refused);
        assert_eq!(r.text(), "");
        assert!(
            r.summary_line()
                .contains("nothing would be refused (the policy is in warn mode")
        );
    }

    #[test]
    fn fixes_leave_out_registries_no_grant_can_name() {
        let f = fix(
            "tool-a",
            ["quay.io".to_owned(), "[::1]:5000".to_owned()].into(),
        )
        .unwrap();
        assert_eq!(f.registries, ["quay.io"]);
        assert!(fix("tool-a", ["[::1]:5000".to_owned()].into()).is_none());
        let workload_kinds: Vec<&str> = Source::ALL
            .iter()
            .filter(|s| s.is_workload())
            .map(|s| s.kind())
            .collect();
        assert_eq!(
            workload_kinds,
            [
                "Deployment",
                "ReplicaSet",
                "StatefulSet",
                "DaemonSet",
                "CronJob",
                "Job",
                "ReplicationController",
                "PodTemplate"
            ]
        );
    }
}

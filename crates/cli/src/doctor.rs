//! `kubectl byoc doctor`: whether the cluster meets the prerequisite the registry policy rests
//! on. The policy decides only where an image comes from; a pod that may be privileged or mount
//! a hostPath (the containerd socket) runs anything, whatever its image. So every namespace the
//! policy applies to must have Pod Security `baseline` or `restricted` enforced.
//!
//! Namespaces are read with [`LeanNamespace`] (metadata only, lenient) in pages; the judgement
//! is pure ([`assess`], [`Report`]).

use std::collections::BTreeMap;

use byoc_api::LeanNamespace;
use clap::{Args, ValueEnum, ValueHint};
use serde::Serialize;

use crate::Failure;
use crate::audit::read_namespaces;
use crate::cluster::ClusterArgs;
use crate::output::{ObjectFormat, emit};
use crate::table::Table;

/// The label Pod Security admission enforces by.
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";

/// `doctor` arguments.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    kubectl byoc doctor\n  \
    kubectl byoc doctor --config /etc/byoc/policy.yaml -o json\n  \
    # The API server's AdmissionConfiguration sets `defaults.enforce: baseline`:\n  \
    kubectl byoc doctor --default-level baseline\n\n\
    Lists every namespace that is not exempt from the registry policy and whose \
    pod-security.kubernetes.io/enforce label is missing or `privileged`: there a pod from an \
    allowed registry may be privileged or mount the node's containerd socket, and so run any \
    image. The API server's cluster-wide default for unlabelled namespaces (the PodSecurity \
    AdmissionConfiguration given by --admission-control-config-file) cannot be read through \
    the API; it is taken to be Kubernetes' default, privileged, unless --default-level says \
    otherwise. Exit status: 0 every namespace enforces baseline or stricter, 1 some do not, 2 \
    invalid input or API error.")]
pub struct DoctorArgs {
    /// The policy configuration file, as the webhook reads it, for its exempt namespaces
    /// (default: the built-in defaults).
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    config: Option<String>,
    /// The enforce level the API server applies to namespaces without the label, as its
    /// PodSecurity AdmissionConfiguration sets it (default: privileged, Kubernetes' default).
    #[arg(long, value_enum, value_name = "LEVEL")]
    default_level: Option<Level>,
    /// Output format: the findings as a table, or the documented JSON.
    #[arg(long, short = 'o', value_enum, default_value_t = DoctorFormat::Text)]
    output: DoctorFormat,
    /// Namespaces per list request, like kubectl's --chunk-size (0: everything at once).
    #[arg(long, value_name = "N", default_value_t = 500)]
    chunk_size: u32,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// How `doctor` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DoctorFormat {
    /// One table row per namespace that does not enforce baseline; a summary on stderr.
    Text,
    /// JSON, as documented in docs/cli.md.
    Json,
}

/// A Pod Security level, least strict first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// No restriction.
    Privileged,
    /// No privileged containers, host namespaces, hostPath volumes, ...
    Baseline,
    /// Baseline plus hardening.
    Restricted,
}

impl Level {
    /// The level a label value names, exactly as Pod Security admission spells it.
    fn parse(value: &str) -> Option<Self> {
        match value {
            "privileged" => Some(Self::Privileged),
            "baseline" => Some(Self::Baseline),
            "restricted" => Some(Self::Restricted),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Privileged => "privileged",
            Self::Baseline => "baseline",
            Self::Restricted => "restricted",
        }
    }
}

/// Where the level of unlabelled namespaces comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DefaultSource {
    /// Kubernetes' built-in default; the API server's configuration may differ.
    Assumed,
    /// `--default-level`, as the operator states it.
    Flag,
}

/// The cluster-wide default for namespaces without the enforce label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterDefault {
    /// The level taken.
    pub level: Level,
    /// Where it comes from.
    pub source: DefaultSource,
    /// Whether the API exposes it: never (it is a file of the API server).
    pub readable: bool,
}

impl ClusterDefault {
    /// The default `--default-level` states, else Kubernetes' own.
    pub fn new(flag: Option<Level>) -> Self {
        match flag {
            Some(level) => Self {
                level,
                source: DefaultSource::Flag,
                readable: false,
            },
            None => Self {
                level: Level::Privileged,
                source: DefaultSource::Assumed,
                readable: false,
            },
        }
    }
}

/// One namespace's Pod Security enforcement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceCheck {
    /// The namespace.
    pub name: String,
    /// The enforce label's value as written, `None` when there is none.
    pub enforce: Option<String>,
    /// The level Pod Security admission enforces there.
    pub effective: Level,
    /// Whether that is baseline or stricter.
    pub ok: bool,
}

/// How Pod Security admission enforces in a namespace with these labels: the label's level,
/// the cluster default without one, and `restricted` for a value it cannot parse (its rule for
/// invalid labels).
pub fn assess(
    name: &str,
    labels: &BTreeMap<String, String>,
    default: ClusterDefault,
) -> NamespaceCheck {
    let enforce = labels.get(ENFORCE_LABEL).cloned();
    let effective = match &enforce {
        None => default.level,
        Some(value) => Level::parse(value).unwrap_or(Level::Restricted),
    };
    NamespaceCheck {
        name: name.to_owned(),
        enforce,
        effective,
        ok: effective >= Level::Baseline,
    }
}

/// The `doctor -o json` document.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Always `ByocDoctor`.
    pub kind: &'static str,
    /// The format version; fields are only added within a version.
    pub version: u32,
    /// The least level every checked namespace must enforce.
    pub required: Level,
    /// The default for unlabelled namespaces.
    pub cluster_default: ClusterDefault,
    /// Every namespace checked (not exempt), by name.
    pub namespaces: Vec<NamespaceCheck>,
    /// The exempt namespaces present, skipped, by name.
    pub exempt: Vec<String>,
    /// How many checked namespaces are not `ok`.
    pub findings: usize,
}

impl Report {
    /// Judges `namespaces` (name and labels), skipping those `is_exempt` names.
    pub fn new<'a>(
        namespaces: impl IntoIterator<Item = (&'a str, &'a BTreeMap<String, String>)>,
        is_exempt: impl Fn(&str) -> bool,
        default: ClusterDefault,
    ) -> Self {
        let (mut checked, mut exempt) = (Vec::new(), Vec::new());
        for (name, labels) in namespaces {
            if is_exempt(name) {
                exempt.push(name.to_owned());
            } else {
                checked.push(assess(name, labels, default));
            }
        }
        checked.sort_by(|a, b| a.name.cmp(&b.name));
        exempt.sort();
        Self {
            kind: "ByocDoctor",
            version: 1,
            required: Level::Baseline,
            cluster_default: default,
            findings: checked.iter().filter(|c| !c.ok).count(),
            namespaces: checked,
            exempt,
        }
    }

    /// The findings as a table (empty when there are none).
    pub fn text(&self) -> String {
        let findings: Vec<_> = self.namespaces.iter().filter(|c| !c.ok).collect();
        if findings.is_empty() {
            return String::new();
        }
        let mut table = Table::new(vec!["NAMESPACE", "ENFORCE", "EFFECTIVE"]);
        for check in findings {
            let effective = match (&check.enforce, self.cluster_default.source) {
                (Some(_), _) => check.effective.as_str().to_owned(),
                (None, DefaultSource::Assumed) => {
                    format!("{} (cluster default, assumed)", check.effective.as_str())
                }
                (None, DefaultSource::Flag) => {
                    format!("{} (cluster default)", check.effective.as_str())
                }
            };
            table.push(vec![
                check.name.clone(),
                check.enforce.clone().unwrap_or_else(|| "(none)".to_owned()),
                effective,
            ]);
        }
        table.to_string()
    }

    /// The notes for stderr: invalid labels, the default's provenance, the summary line.
    pub fn notes(&self) -> Vec<String> {
        let mut notes: Vec<String> = self
            .namespaces
            .iter()
            .filter_map(|c| {
                let value = c.enforce.as_deref()?;
                Level::parse(value).is_none().then(|| {
                    format!(
                        "warning: namespace {}: {ENFORCE_LABEL}={value:?} is not a level; Pod \
                         Security admission enforces restricted there",
                        crate::table::visible(&c.name)
                    )
                })
            })
            .collect();
        let unlabelled = self.namespaces.iter().any(|c| c.enforce.is_none());
        if unlabelled && self.cluster_default.source == DefaultSource::Assumed {
            notes.push(
                "note: the API server's cluster-wide Pod Security default (its PodSecurity \
                 AdmissionConfiguration, --admission-control-config-file) cannot be read \
                 through the API; unlabelled namespaces are taken to be privileged, Kubernetes' \
                 default (--default-level states another)"
                    .to_owned(),
            );
        }
        let (checked, exempt) = (self.namespaces.len(), self.exempt.len());
        notes.push(if self.findings == 0 {
            format!(
                "all {checked} namespaces enforce Pod Security baseline or stricter ({exempt} \
                 exempt skipped)"
            )
        } else {
            format!(
                "{} of {checked} namespaces do not enforce Pod Security baseline or stricter \
                 ({exempt} exempt skipped): label them `kubectl label namespace NAME \
                 {ENFORCE_LABEL}=baseline`",
                self.findings
            )
        });
        notes
    }
}

/// Runs `doctor`; `Ok(false)` when some namespace does not enforce baseline.
pub async fn run(args: DoctorArgs) -> Result<bool, Failure> {
    let config = crate::check::read_config(args.config.as_deref())?;
    let client = args.cluster.client().await?;
    let namespaces: Vec<LeanNamespace> = read_namespaces(&client, None, args.chunk_size).await?;
    let empty = BTreeMap::new();
    let report = Report::new(
        namespaces.iter().map(|ns| {
            (
                ns.metadata.name.as_deref().unwrap_or_default(),
                ns.metadata.labels.as_ref().unwrap_or(&empty),
            )
        }),
        |name| config.is_exempt(name),
        ClusterDefault::new(args.default_level),
    );
    match args.output {
        DoctorFormat::Text => emit(&report.text())?,
        DoctorFormat::Json => emit(&ObjectFormat::Json.render(&report)?)?,
    }
    for note in report.notes() {
        eprintln!("{note}");
    }
    Ok(report.findings == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(enforce: Option<&str>) -> BTreeMap<String, String> {
        let mut l = BTreeMap::from([("team".to_owned(), "x".to_owned())]);
        if let Some(v) = enforce {
            l.insert(ENFORCE_LABEL.to_owned(), v.to_owned());
        }
        l
    }

    #[test]
    fn levels() {
        let assumed = ClusterDefault::new(None);
        let cases = [
            (None, Level::Privileged, false),
            (Some("privileged"), Level::Privileged, false),
            (Some("baseline"), Level::Baseline, true),
            (Some("restricted"), Level::Restricted, true),
            // Pod Security admission parses exactly and enforces restricted on anything else.
            (Some("Baseline"), Level::Restricted, true),
            (Some(""), Level::Restricted, true),
        ];
        for (enforce, effective, ok) in cases {
            let check = assess("tool-a", &labels(enforce), assumed);
            assert_eq!(check.enforce.as_deref(), enforce);
            assert_eq!((check.effective, check.ok), (effective, ok), "{enforce:?}");
        }
        let stated = ClusterDefault::new(Some(Level::Baseline));
        let check = assess("tool-a", &labels(None), stated);
        assert_eq!((check.effective, check.ok), (Level::Baseline, true));
        let check = assess("tool-a", &labels(Some("privileged")), stated);
        assert!(!check.ok, "a label overrides the default");
    }

    fn report(default: ClusterDefault) -> Report {
        let ns = [
            ("tool-b", labels(Some("privileged"))),
            ("kube-system", labels(Some("privileged"))),
            ("tool-a", labels(None)),
            ("tool-c", labels(Some("baseline"))),
            ("tool-d", labels(Some("bogus"))),
        ];
        Report::new(
            ns.iter().map(|(n, l)| (*n, l)),
            |n| n == "kube-system",
            default,
        )
    }

    #[test]
    fn report_sorts_skips_and_counts() {
        let r = report(ClusterDefault::new(None));
        let names: Vec<_> = r.namespaces.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["tool-a", "tool-b", "tool-c", "tool-d"]);
        assert_eq!(r.exempt, ["kube-system"]);
        assert_eq!(r.findings, 2);
        let text = r.text();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("NAMESPACE"), "{text}");
        assert!(lines[1].starts_with("tool-a") && lines[1].contains("(none)"));
        assert!(lines[1].ends_with("privileged (cluster default, assumed)"));
        assert!(lines[2].starts_with("tool-b") && lines[2].ends_with("privileged"));
        let notes = r.notes();
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(notes[0].contains("tool-d") && notes[0].contains("\"bogus\""));
        assert!(notes[1].contains("cannot be read through the API"));
        assert!(notes[2].starts_with("2 of 4 namespaces"), "{}", notes[2]);
    }

    #[test]
    fn stated_default() {
        let r = report(ClusterDefault::new(Some(Level::Restricted)));
        assert_eq!(r.findings, 1);
        assert!(!r.notes().iter().any(|n| n.contains("cannot be read")));
        let r = Report::new(
            [("tool-c", &labels(Some("restricted")))],
            |_| false,
            ClusterDefault::new(None),
        );
        assert_eq!(r.text(), "");
        assert_eq!(
            r.notes(),
            ["all 1 namespaces enforce Pod Security baseline or stricter (0 exempt skipped)"]
        );
    }

    #[test]
    fn json() {
        let r = report(ClusterDefault::new(None));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["kind"], "ByocDoctor");
        assert_eq!(v["version"], 1);
        assert_eq!(v["required"], "baseline");
        assert_eq!(
            v["clusterDefault"],
            serde_json::json!({"level": "privileged", "source": "assumed", "readable": false})
        );
        assert_eq!(
            v["namespaces"][0],
            serde_json::json!({"name": "tool-a", "enforce": null, "effective": "privileged", "ok": false})
        );
        assert_eq!(v["namespaces"][3]["effective"], "restricted");
        assert_eq!(v["exempt"], serde_json::json!(["kube-system"]));
        assert_eq!(v["findings"], 2);
    }
}

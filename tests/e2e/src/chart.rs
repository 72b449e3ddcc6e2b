//! The Helm chart `charts/byoc-operator` under test: the project's `helm`, the chart's render
//! variants, the rendered objects, what must hold of the webhook configuration and the
//! Deployments as the API server stores them, and [`Report`], the soft checks of the long
//! install scenario (every check runs and is reported, like `helm test` output).

use std::ffi::OsStr;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::controller::target_dir;
use crate::{Output, kubeconfig_path, repo_root, run_command};

/// `charts/byoc-operator`.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/byoc-operator")
}

/// `target/<profile>/chart-test/NAME`, emptied.
pub fn work_dir(name: &str) -> PathBuf {
    let dir = target_dir().join("chart-test").join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("empty the work dir");
    }
    std::fs::create_dir_all(&dir).expect("create the work dir");
    dir
}

/// The `helm` that `hack/build-control-plane.sh` builds (cached; once per test process).
pub fn helm_binary() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let out = run_command(
            &mut Command::new(repo_root().join("hack/build-control-plane.sh")),
            None,
        )
        .success();
        let helm = PathBuf::from(out.stdout.trim()).join("helm");
        assert!(helm.is_file(), "{} is missing", helm.display());
        helm
    })
}

fn helm_command() -> Command {
    let home = target_dir().join("chart-test/helm");
    let mut cmd = Command::new(helm_binary());
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG");
    cmd
}

/// `helm ARGS...` without a cluster (render, lint, package).
pub fn helm<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_command(helm_command().args(args), None)
}

/// `helm ARGS...` against the local cluster (`--kubeconfig`).
pub fn helm_on_cluster<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_command(
        helm_command()
            .arg("--kubeconfig")
            .arg(kubeconfig_path())
            .args(args),
        None,
    )
}

/// One way to render the chart.
#[derive(Debug, Clone, Copy)]
pub struct Variant {
    /// Short name for messages.
    pub name: &'static str,
    /// Release name.
    pub release: &'static str,
    /// Release namespace.
    pub namespace: &'static str,
    /// A values file under `charts/byoc-operator/ci/`, if any.
    pub values: Option<&'static str>,
    /// The webhook timeout these values set.
    pub timeout: u64,
    /// The policy mode these values set.
    pub mode: &'static str,
}

/// The default values; every option on, another release name and namespace; cert-manager.
pub const VARIANTS: [Variant; 3] = [
    Variant {
        name: "default",
        release: "byoc-operator",
        namespace: "byoc-system",
        values: None,
        timeout: 5,
        mode: "enforce",
    },
    Variant {
        name: "full",
        release: "byoc",
        namespace: "platform-byoc",
        values: Some("full-values.yaml"),
        timeout: 3,
        mode: "warn",
    },
    Variant {
        name: "cert-manager",
        release: "byoc-operator",
        namespace: "byoc-system",
        values: Some("cert-manager-values.yaml"),
        timeout: 5,
        mode: "enforce",
    },
];

/// The `--set` value every render of the chart with its defaults needs: the API server's
/// addresses, which the default NetworkPolicy requires (`networkPolicy.apiServerCIDRs`). The
/// local cluster's API server is on loopback.
pub const API_SERVER_CIDRS: &str = "networkPolicy.apiServerCIDRs={127.0.0.1/32}";

impl Variant {
    /// `-f charts/byoc-operator/ci/VALUES` (every values file sets the API server's
    /// addresses), or `--set` [`API_SERVER_CIDRS`].
    pub fn values_args(&self) -> Vec<String> {
        match self.values {
            Some(f) => vec![
                "-f".to_owned(),
                chart_dir().join("ci").join(f).display().to_string(),
            ],
            None => vec!["--set".to_owned(), API_SERVER_CIDRS.to_owned()],
        }
    }

    /// `helm template` of this variant for the pinned Kubernetes version.
    pub fn render(&self) -> Result<Vec<Object>, String> {
        let chart = chart_dir();
        let mut args = vec![
            "template".to_owned(),
            self.release.to_owned(),
            chart.display().to_string(),
            "-n".into(),
            self.namespace.into(),
            "--kube-version".into(),
            crate::pinned_version("KUBERNETES_VERSION"),
        ];
        args.extend(self.values_args());
        let out = helm(&args);
        if !out.status.success() {
            return Err(out.to_string());
        }
        parse_objects(&out.stdout)
    }
}

/// One rendered object.
#[derive(Debug, Clone)]
pub struct Object {
    /// `kind`.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// The object.
    pub value: Value,
}

/// The objects of a multi-document YAML stream (`helm template` output); empty documents and
/// comment-only ones are skipped.
///
/// # Errors
/// A document that is not YAML, or not an object with a kind and a name.
pub fn parse_objects(yaml: &str) -> Result<Vec<Object>, String> {
    let mut objects = Vec::new();
    let mut doc = String::new();
    let mut flush = |doc: &mut String| -> Result<(), String> {
        let text = std::mem::take(doc);
        if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            return Ok(());
        }
        let value: Value =
            serde_saphyr::from_str(&text).map_err(|e| format!("invalid YAML ({e}):\n{text}"))?;
        let field = |path: &str| {
            value
                .pointer(path)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let (Some(kind), Some(name)) = (field("/kind"), field("/metadata/name")) else {
            return Err(format!("a document without kind or metadata.name:\n{text}"));
        };
        objects.push(Object { kind, name, value });
        Ok(())
    };
    for line in yaml.lines() {
        if line.trim_end() == "---" {
            flush(&mut doc)?;
        } else {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    flush(&mut doc)?;
    Ok(objects)
}

/// The objects of `kind`.
pub fn of_kind<'a>(objects: &'a [Object], kind: &'a str) -> impl Iterator<Item = &'a Object> {
    objects.iter().filter(move |o| o.kind == kind)
}

/// The one object of `kind` whose `app.kubernetes.io/component` label is `component`.
pub fn component<'a>(objects: &'a [Object], kind: &str, component: &str) -> Option<&'a Object> {
    objects.iter().find(|o| {
        o.kind == kind && o.value["metadata"]["labels"]["app.kubernetes.io/component"] == component
    })
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// What is wrong with the chart's ValidatingWebhookConfiguration `vwc` (as the API server
/// stores it) for a release in `namespace` with webhook `timeout`; empty when it is right.
pub fn webhook_configuration_problems(vwc: &Value, timeout: u64, namespace: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let webhooks = vwc["webhooks"].as_array().cloned().unwrap_or_default();
    let find = |name: &str| webhooks.iter().find(|w| w["name"] == name);
    const NAMES: [&str; 2] = ["pods.byoc.toolforge.org", "namespaces.byoc.toolforge.org"];
    // Exactly these two: a third entry would escape every check below, its match conditions
    // (which could narrow what is sent) included.
    let names: Vec<&str> = webhooks.iter().filter_map(|w| w["name"].as_str()).collect();
    if names != NAMES {
        problems.push(format!("webhooks are {names:?}, want exactly {NAMES:?}"));
    }
    for name in NAMES {
        let Some(w) = find(name) else {
            problems.push(format!("no webhook {name}"));
            continue;
        };
        let mut expect = |ok: bool, what: &str| {
            if !ok {
                problems.push(format!("{name}: {what}"));
            }
        };
        expect(w["failurePolicy"] == "Fail", "failurePolicy is not Fail");
        expect(
            w["timeoutSeconds"] == timeout,
            &format!("timeoutSeconds is not {timeout}"),
        );
        expect(w["sideEffects"] == "None", "sideEffects is not None");
        expect(
            w["matchPolicy"] == "Equivalent",
            "matchPolicy is not Equivalent",
        );
        expect(
            strings(&w["admissionReviewVersions"]) == ["v1"],
            "admissionReviewVersions is not [v1]",
        );
        let service = &w["clientConfig"]["service"];
        expect(
            service["namespace"] == namespace
                && service["port"] == 443
                && service["path"] == "/validate",
            &format!("does not call POST /validate on the webhook Service in {namespace}"),
        );
        let excluded: Vec<&str> = w["namespaceSelector"]["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["key"] == "kubernetes.io/metadata.name" && e["operator"] == "NotIn")
            .flat_map(|e| strings(&e["values"]))
            .collect();
        for ns in ["kube-system", namespace] {
            expect(
                excluded.contains(&ns),
                &format!("namespaceSelector does not exclude {ns} by kubernetes.io/metadata.name"),
            );
        }
        // Never scoped by the labels the guard protects (DESIGN §3): a selector on them would
        // let a tenant step around it.
        let selector_keys = ["namespaceSelector", "objectSelector"]
            .into_iter()
            .flat_map(|s| {
                let sel = &w[s];
                let exprs = sel["matchExpressions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["key"].as_str().map(str::to_owned));
                let labels = sel["matchLabels"]
                    .as_object()
                    .into_iter()
                    .flat_map(|m| m.keys().cloned());
                exprs.chain(labels).collect::<Vec<_>>()
            });
        let scoped = selector_keys
            .into_iter()
            .any(|k| k.starts_with("byoc.toolforge.org/"));
        expect(!scoped, "is scoped by a byoc.toolforge.org/ label");
        // Match conditions: none on the registry policy; on the guard only the one that sends
        // every change of a byoc label (tests/e2e/tests/attacks.rs proves what it lets through).
        let conditions: Vec<&str> = w["matchConditions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .collect();
        let want: &[&str] = if name == "pods.byoc.toolforge.org" {
            &[]
        } else {
            &["byoc-labels-or-label-writer"]
        };
        expect(
            conditions == want,
            &format!("match conditions are {conditions:?}, want {want:?}"),
        );
    }
    let rules = |name: &str| -> Vec<(Vec<String>, Vec<String>)> {
        find(name)
            .and_then(|w| w["rules"].as_array())
            .into_iter()
            .flatten()
            .map(|r| {
                let owned = |v: &Value| -> Vec<String> {
                    strings(v).into_iter().map(str::to_owned).collect()
                };
                (owned(&r["operations"]), owned(&r["resources"]))
            })
            .collect()
    };
    let pods = rules("pods.byoc.toolforge.org");
    if !pods.iter().any(|(ops, res)| {
        ops.iter().any(|o| o == "UPDATE") && res.iter().any(|r| r == "pods/ephemeralcontainers")
    }) {
        problems.push(
            "pods.byoc.toolforge.org: no rule for UPDATE of pods/ephemeralcontainers (kubectl debug)"
                .into(),
        );
    }
    for r in [
        "pods",
        "podtemplates",
        "replicationcontrollers",
        "deployments",
        "replicasets",
        "statefulsets",
        "daemonsets",
        "jobs",
        "cronjobs",
    ] {
        if !pods
            .iter()
            .any(|(ops, res)| ops == &["CREATE", "UPDATE"] && res.iter().any(|x| x == r))
        {
            problems.push(format!(
                "pods.byoc.toolforge.org: no rule for CREATE and UPDATE of {r}"
            ));
        }
    }
    if !rules("namespaces.byoc.toolforge.org")
        .iter()
        .any(|(ops, res)| {
            ops == &["CREATE", "UPDATE"]
                && res == &["namespaces", "namespaces/status", "namespaces/finalize"]
        })
    {
        problems.push(
            "namespaces.byoc.toolforge.org: no rule for CREATE and UPDATE of namespaces and its status and finalize subresources".into(),
        );
    }
    problems
}

/// What is wrong with a Deployment of the chart (`component` `controller` or `webhook`) as the
/// API server stores it: security contexts, probes, replicas, resources, env.
pub fn deployment_problems(deployment: &Value, component: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let pod = &deployment["spec"]["template"]["spec"];
    if pod["securityContext"]["runAsNonRoot"] != true {
        problems.push("pod runAsNonRoot is not true".to_owned());
    }
    if pod["securityContext"]["seccompProfile"]["type"] != "RuntimeDefault" {
        problems.push("pod seccomp is not RuntimeDefault".to_owned());
    }
    let containers = pod["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        problems.push("no containers".to_owned());
    }
    for c in &containers {
        let name = c["name"].as_str().unwrap_or("?");
        let sc = &c["securityContext"];
        let checks = [
            (sc["runAsNonRoot"] == true, "runAsNonRoot true"),
            (
                sc["readOnlyRootFilesystem"] == true,
                "readOnlyRootFilesystem true",
            ),
            (
                sc["allowPrivilegeEscalation"] == false,
                "allowPrivilegeEscalation false",
            ),
            (strings(&sc["capabilities"]["drop"]) == ["ALL"], "drop ALL"),
            (
                sc["seccompProfile"]["type"] == "RuntimeDefault",
                "seccomp RuntimeDefault",
            ),
            (
                c["readinessProbe"]["httpGet"]["path"] == "/readyz",
                "readiness /readyz",
            ),
            (
                c["livenessProbe"]["httpGet"]["path"] == "/healthz",
                "liveness /healthz",
            ),
            (
                c["resources"]["requests"]["memory"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "a memory request",
            ),
        ];
        for (ok, want) in checks {
            if !ok {
                problems.push(format!("container {name}: not {want}"));
            }
        }
        if component == "webhook" && !c["resources"]["limits"]["cpu"].is_null() {
            problems.push("the webhook has a CPU limit".to_owned());
        }
        if component == "controller" {
            for (var, path) in [
                ("POD_NAMESPACE", "metadata.namespace"),
                ("POD_NAME", "metadata.name"),
            ] {
                let from_api =
                    c["env"].as_array().into_iter().flatten().any(|e| {
                        e["name"] == var && e["valueFrom"]["fieldRef"]["fieldPath"] == path
                    });
                if !from_api {
                    problems.push(format!("{var} is not from the downward API ({path})"));
                }
            }
        }
    }
    if component == "webhook" && deployment["spec"]["replicas"].as_u64().unwrap_or(0) < 2 {
        problems.push("fewer than 2 webhook replicas".to_owned());
    }
    problems
}

/// Soft checks: each one is printed (`ok:` or `FAIL:`) and [`Report::finish`] fails the test
/// with every failure, so one run shows everything that is wrong.
#[derive(Debug, Default)]
pub struct Report {
    passed: usize,
    failures: Vec<String>,
}

impl Report {
    /// Records one check.
    pub fn check(&mut self, ok: bool, what: impl Display, detail: impl Display) -> bool {
        if ok {
            println!("ok: {what}");
            self.passed += 1;
        } else {
            let detail = detail.to_string();
            println!("FAIL: {what}\n    {}", detail.replace('\n', "\n    "));
            self.failures.push(format!("{what}\n{detail}"));
        }
        ok
    }

    /// Records a check on a command: passed when it succeeded.
    pub fn succeeded(&mut self, out: &Output, what: impl Display) -> bool {
        self.check(out.status.success(), what, out)
    }

    /// The number of checks that passed.
    pub fn passed(&self) -> usize {
        self.passed
    }

    /// Fails the test if any check failed.
    ///
    /// # Panics
    /// With every failure.
    pub fn finish(self) {
        println!(
            "{} checks passed, {} failed",
            self.passed,
            self.failures.len()
        );
        assert!(
            self.failures.is_empty(),
            "{} check(s) failed:\n\n{}",
            self.failures.len(),
            self.failures.join("\n\n")
        );
    }
}

/// Polls `check` every 200 ms for up to `timeout`; whether it ever held.
pub fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_rendered_stream() {
        let yaml = "---\n# Source: a.yaml\n---\n# Source: b.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  k: \"---\"\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: other}\n";
        let objects = parse_objects(yaml).expect("parses");
        let kinds: Vec<(&str, &str)> = objects
            .iter()
            .map(|o| (o.kind.as_str(), o.name.as_str()))
            .collect();
        assert_eq!(kinds, [("ConfigMap", "x"), ("Secret", "other")]);
        assert_eq!(objects[0].value["data"]["k"], "---");
        for bad in ["kind: A\n", "metadata: {name: x}\n", "a: [\n"] {
            assert!(parse_objects(bad).is_err(), "{bad:?} was accepted");
        }
    }

    fn good_webhook(name: &str, rules: Value) -> Value {
        serde_json::json!({
            "name": name, "failurePolicy": "Fail", "timeoutSeconds": 5, "sideEffects": "None",
            "matchPolicy": "Equivalent", "admissionReviewVersions": ["v1"],
            "clientConfig": {"service": {"namespace": "ns", "name": "w", "port": 443, "path": "/validate"}},
            "namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "ns"]}]},
            "rules": rules,
        })
    }

    fn good_configuration() -> Value {
        let mut vwc = serde_json::json!({"webhooks": [
            good_webhook("pods.byoc.toolforge.org", serde_json::json!([
                {"operations": ["CREATE", "UPDATE"], "resources": ["pods", "podtemplates", "replicationcontrollers"]},
                {"operations": ["CREATE", "UPDATE"], "resources": ["deployments", "replicasets", "statefulsets", "daemonsets"]},
                {"operations": ["CREATE", "UPDATE"], "resources": ["jobs", "cronjobs"]},
                {"operations": ["UPDATE"], "resources": ["pods/ephemeralcontainers"]},
            ])),
            good_webhook("namespaces.byoc.toolforge.org", serde_json::json!([
                {"operations": ["CREATE", "UPDATE"], "resources": ["namespaces", "namespaces/status", "namespaces/finalize"]},
            ])),
        ]});
        vwc["webhooks"][1]["matchConditions"] =
            serde_json::json!([{"name": "byoc-labels-or-label-writer", "expression": "true"}]);
        vwc
    }

    #[test]
    fn webhook_configuration_checks_catch_each_fault() {
        assert_eq!(
            webhook_configuration_problems(&good_configuration(), 5, "ns"),
            Vec::<String>::new()
        );
        type Fault = (&'static str, fn(&mut Value), &'static str);
        let faults: [Fault; 8] = [
            (
                "fail open",
                |v| v["webhooks"][0]["failurePolicy"] = "Ignore".into(),
                "failurePolicy is not Fail",
            ),
            (
                "timeout",
                |v| v["webhooks"][1]["timeoutSeconds"] = 10.into(),
                "timeoutSeconds is not 5",
            ),
            (
                "kube-system",
                |v| {
                    v["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"] =
                        serde_json::json!(["ns"])
                },
                "does not exclude kube-system",
            ),
            (
                "scoped by label",
                |v| {
                    v["webhooks"][1]["objectSelector"] =
                        serde_json::json!({"matchLabels": {"byoc.toolforge.org/any": "x"}})
                },
                "scoped by a byoc.toolforge.org/ label",
            ),
            (
                "match condition",
                |v| {
                    v["webhooks"][0]["matchConditions"] =
                        serde_json::json!([{"name": "c", "expression": "true"}])
                },
                "match conditions are [\"c\"]",
            ),
            (
                "no debug",
                |v| v["webhooks"][0]["rules"][3]["resources"] = serde_json::json!(["pods/status"]),
                "pods/ephemeralcontainers",
            ),
            (
                "no cronjobs",
                |v| v["webhooks"][0]["rules"][2]["resources"] = serde_json::json!(["jobs"]),
                "of cronjobs",
            ),
            (
                "wrong path",
                |v| v["webhooks"][0]["clientConfig"]["service"]["path"] = "/".into(),
                "POST /validate",
            ),
        ];
        for (what, break_it, want) in faults {
            let mut vwc = good_configuration();
            break_it(&mut vwc);
            let problems = webhook_configuration_problems(&vwc, 5, "ns");
            assert!(
                problems.iter().any(|p| p.contains(want)),
                "{what}: {problems:?} lacks {want:?}"
            );
        }
        let problems = webhook_configuration_problems(&serde_json::json!({}), 5, "ns");
        assert!(
            problems
                .iter()
                .any(|p| p == "no webhook pods.byoc.toolforge.org"),
            "{problems:?}"
        );
    }

    #[test]
    fn deployment_checks_catch_each_fault() {
        let good = serde_json::json!({"spec": {"replicas": 2, "template": {"spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c",
                "securityContext": {"runAsNonRoot": true, "readOnlyRootFilesystem": true,
                    "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"}},
                "readinessProbe": {"httpGet": {"path": "/readyz"}},
                "livenessProbe": {"httpGet": {"path": "/healthz"}},
                "resources": {"requests": {"memory": "32Mi"}},
                "env": [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}}}});
        assert_eq!(deployment_problems(&good, "webhook"), Vec::<String>::new());
        assert_eq!(
            deployment_problems(&good, "controller"),
            Vec::<String>::new()
        );
        let faults = [
            (
                "/spec/replicas",
                serde_json::json!(1),
                "webhook",
                "fewer than 2",
            ),
            (
                "/spec/template/spec/containers/0/resources",
                serde_json::json!({"requests": {"memory": "32Mi"}, "limits": {"cpu": "1"}}),
                "webhook",
                "CPU limit",
            ),
            (
                "/spec/template/spec/containers/0/securityContext/readOnlyRootFilesystem",
                serde_json::json!(false),
                "webhook",
                "readOnlyRootFilesystem",
            ),
            (
                "/spec/template/spec/containers/0/readinessProbe/httpGet/path",
                serde_json::json!("/healthz"),
                "controller",
                "readiness /readyz",
            ),
            (
                "/spec/template/spec/containers/0/env",
                serde_json::json!([]),
                "controller",
                "POD_NAME",
            ),
            (
                "/spec/template/spec/securityContext/runAsNonRoot",
                serde_json::json!(false),
                "controller",
                "pod runAsNonRoot",
            ),
        ];
        for (path, value, component, want) in faults {
            let mut d = good.clone();
            *d.pointer_mut(path).unwrap_or_else(|| panic!("{path}")) = value;
            let problems = deployment_problems(&d, component);
            assert!(
                problems.iter().any(|p| p.contains(want)),
                "{path}: {problems:?} lacks {want:?}"
            );
        }
    }
}

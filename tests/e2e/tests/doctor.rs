//! `kubectl byoc doctor` through the real control plane (issue 21 part 6): it names the
//! namespaces without Pod Security `baseline` (or stricter) enforced, skips the exempt ones,
//! says the cluster default is not readable, and exits like `check`.
//!
//! ```text
//! cargo build -p kubectl-byoc
//! hack/local-cluster.sh exec -- cargo test -p byoc-e2e --test doctor
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use byoc_e2e::cli::{CliOutput, byoc, kubectl_byoc};
use byoc_e2e::{TestNamespace, client, kubectl, parse_table, unique_name};
use serde_json::{Value, json};

const ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// `doctor`'s entries by namespace name.
fn by_name(report: &Value) -> BTreeMap<String, Value> {
    report["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .map(|c| (c["name"].as_str().expect("name").to_owned(), c.clone()))
        .collect()
}

/// A private scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir(&dir).expect("create a scratch dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A policy configuration that exempts `exempt` (the defaults are replaced).
fn config(dir: &Scratch, exempt: &[&str]) -> String {
    let path = dir.0.join("policy.yaml");
    let list = exempt.join(", ");
    std::fs::write(&path, format!("exemptNamespaces: [{list}]\n")).expect("write the config");
    path.to_str().expect("a UTF-8 path").to_owned()
}

#[tokio::test]
async fn doctor_names_the_namespaces_without_baseline_and_skips_the_exempt() {
    let client = client().await;
    let none = TestNamespace::create(&client, "doctor-none").await;
    let privileged = TestNamespace::create(&client, "doctor-priv").await;
    let baseline = TestNamespace::create(&client, "doctor-base").await;
    let restricted = TestNamespace::create(&client, "doctor-restr").await;
    let exempt = TestNamespace::create(&client, "doctor-exempt").await;
    for (ns, level) in [
        (&privileged, "privileged"),
        (&baseline, "baseline"),
        (&restricted, "restricted"),
        (&exempt, "privileged"),
    ] {
        kubectl([
            "label",
            "namespace",
            ns.name(),
            &format!("{ENFORCE}={level}"),
        ])
        .success();
    }
    // A time Rust cannot read (past 9999-12-30T22:00Z) in `managedFields` must not hide the
    // namespace: doctor reads namespaces leniently.
    let listed = kubectl([
        "get",
        "namespace",
        privileged.name(),
        "-o",
        "json",
        "--show-managed-fields",
    ])
    .success()
    .stdout;
    let mut fields =
        serde_json::from_str::<Value>(&listed).expect("JSON")["metadata"]["managedFields"].clone();
    fields.as_array_mut().expect("managedFields").push(json!({
        "manager": "x", "operation": "Update", "apiVersion": "v1", "time": "9999-12-31T00:00:00Z",
        "fieldsType": "FieldsV1", "fieldsV1": { "f:metadata": { "f:annotations": { "f:a": {} } } },
    }));
    let patch = json!({"metadata": {"managedFields": fields}}).to_string();
    kubectl([
        "patch",
        "namespace",
        privileged.name(),
        "--type=merge",
        "-p",
        &patch,
    ])
    .success();
    let stored = kubectl([
        "get",
        "namespace",
        privileged.name(),
        "-o",
        "json",
        "--show-managed-fields",
    ])
    .success()
    .stdout;
    assert!(stored.contains("9999-12-31T00:00:00Z"), "{stored}");

    // Every namespace that is not one of ours is exempt, so the verdict is ours alone.
    let ours = [&none, &privileged, &baseline, &restricted].map(|ns| ns.name().to_owned());
    let listed = kubectl(["get", "namespaces", "-o", "name"])
        .success()
        .stdout;
    let mut exempted: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.strip_prefix("namespace/"))
        .filter(|n| !ours.iter().any(|o| o == n))
        .collect();
    assert!(exempted.contains(&exempt.name()), "{listed}");
    exempted.sort_unstable();
    let dir = Scratch::new("doctor-config");
    let cfg = config(&dir, &exempted);

    // JSON: every checked namespace with its level; the exempt ones listed apart.
    let out = byoc(["doctor", "--config", &cfg, "-o", "json"]).exits(1);
    let report = out.json();
    assert_eq!(
        (&report["kind"], &report["version"], &report["required"]),
        (&json!("ByocDoctor"), &json!(1), &json!("baseline"))
    );
    assert_eq!(
        report["clusterDefault"],
        json!({"level": "privileged", "source": "assumed", "readable": false})
    );
    assert_eq!(report["findings"], 2, "{out}");
    let checks = by_name(&report);
    assert_eq!(checks.keys().cloned().collect::<Vec<_>>(), {
        let mut o = ours.to_vec();
        o.sort();
        o
    });
    let entry = |ns: &TestNamespace| checks[ns.name()].clone();
    assert_eq!(
        entry(&none),
        json!({"name": none.name(), "enforce": null, "effective": "privileged", "ok": false})
    );
    assert_eq!(
        entry(&privileged),
        json!({"name": privileged.name(), "enforce": "privileged", "effective": "privileged", "ok": false})
    );
    assert_eq!(entry(&baseline)["ok"], true);
    assert_eq!(entry(&restricted)["effective"], "restricted");
    assert_eq!(entry(&restricted)["ok"], true);
    let exempt_listed: Vec<&str> = report["exempt"]
        .as_array()
        .expect("exempt")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(exempt_listed.contains(&exempt.name()), "{out}");
    assert!(
        out.stderr.contains("cannot be read through the API"),
        "the output says the cluster default is not known: {out}"
    );

    // Text, as `kubectl byoc`: one row per finding, with the level each has.
    let out = kubectl_byoc(["doctor", "--config", &cfg]).exits(1);
    let (headers, rows) = parse_table(&out.stdout);
    assert_eq!(headers, ["NAMESPACE", "ENFORCE", "EFFECTIVE"], "{out}");
    let mut want = vec![
        vec![
            none.name().to_owned(),
            "(none)".to_owned(),
            "privileged (cluster default, assumed)".to_owned(),
        ],
        vec![
            privileged.name().to_owned(),
            "privileged".to_owned(),
            "privileged".to_owned(),
        ],
    ];
    want.sort();
    assert_eq!(rows, want, "{out}");
    assert!(out.stderr.contains("2 of 4 namespaces"), "{out}");

    // A stated cluster default of baseline covers the unlabelled namespace only.
    let out = byoc([
        "doctor",
        "--config",
        &cfg,
        "--default-level",
        "baseline",
        "-o",
        "json",
    ])
    .exits(1);
    let report = out.json();
    assert_eq!(report["findings"], 1, "{out}");
    assert_eq!(report["clusterDefault"]["source"], "flag");
    assert_eq!(by_name(&report)[none.name()]["ok"], true);
    assert!(!out.stderr.contains("cannot be read"), "{out}");

    // Fixed: exit 0, nothing on stdout.
    for ns in [&none, &privileged] {
        kubectl([
            "label",
            "--overwrite",
            "namespace",
            ns.name(),
            &format!("{ENFORCE}=baseline"),
        ])
        .success();
    }
    let out = byoc(["doctor", "--config", &cfg]).exits(0);
    assert_eq!(out.stdout, "", "{out}");
    assert!(
        out.stderr
            .contains("all 4 namespaces enforce Pod Security baseline or stricter"),
        "{out}"
    );
    assert_eq!(
        byoc(["doctor", "--config", &cfg, "-o", "json"])
            .exits(0)
            .json()["findings"],
        0
    );

    // Bad usage and input: 2.
    byoc(["doctor", "--default-level", "strict"]).exits(2);
    byoc(["doctor", "-o", "yaml"]).exits(2);
    let missing = dir.0.join("missing.yaml");
    byoc(["doctor", "--config", missing.to_str().expect("UTF-8")]).exits(2);
}

#[tokio::test]
async fn doctor_without_a_reachable_api_server_exits_2() {
    let dir = Scratch::new("doctor-kubeconfig");
    let kubeconfig = dir.0.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n\
         users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n\
         current-context: x\n",
    )
    .expect("write the kubeconfig");
    let out = byoc([
        "doctor",
        "--kubeconfig",
        kubeconfig.to_str().expect("UTF-8"),
        "--request-timeout",
        "5s",
    ])
    .exits(2);
    assert!(out.stderr.contains("list namespaces"), "{out}");
}

//! `kubectl byoc` through the real control plane (issue 7, DESIGN §7): grant, list, revoke,
//! audit and import-configmap, run as admins run them, with the controller (and, for
//! admission, the webhook) as fixtures.
//!
//! ```text
//! cargo build -p kubectl-byoc -p byoc-controller
//! hack/local-cluster.sh exec -- cargo test -p byoc-e2e --test cli
//! ```

use std::collections::BTreeSet;

use byoc_api::ByocGrant;
use byoc_e2e::cli::{CliOutput, byoc, command, kubectl_byoc, run};
use byoc_e2e::webhook::{Options, Webhook};
use byoc_e2e::{
    CONVERGE_TIMEOUT, Cleanup, TestNamespace, client, controller, edit_tenant, eventually,
    kubeconfig_path, kubectl, kubectl_as, kubectl_run, kubectl_stdin, parse_table, unique_name,
};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use serde_json::{Value, json};
use tokio::sync::Mutex;

const PLATFORM: &str = "docker-registry.tools.wmflabs.org/toolforge-python311:latest";

/// Held by tests that create workloads the policy refuses, and by those that register the
/// webhook (which refuses them in every namespace): the two must not overlap.
static POLICY: Mutex<()> = Mutex::const_new(());

/// A namespace where pods can be created.
async fn tool_namespace(prefix: &str) -> TestNamespace {
    let client = client().await;
    let ns = TestNamespace::create(&client, prefix).await;
    ns.wait_for_default_service_account(&client).await;
    ns
}

/// The grant called `name` in `list -o json`, if listed.
fn listed(name: &str) -> Option<Value> {
    let list = byoc(["list", "-o", "json"]).exits(0).json();
    assert_eq!(
        (&list["kind"], &list["version"]),
        (&json!("ByocGrantList"), &json!(1))
    );
    list["grants"]
        .as_array()
        .expect("grants")
        .iter()
        .find(|g| g["name"] == name)
        .cloned()
}

#[tokio::test]
async fn grant_shows_in_list_with_time_left_and_revoke_removes_it() {
    let _controller = controller::shared().await;
    let ns = TestNamespace::create(&client().await, "cli-grant").await;
    let name = ns.name();
    let _cleanup = Cleanup::new(["byocgrant", name]);

    let out = byoc([
        "grant",
        name,
        "--reason",
        "T302863: e2e",
        "--registry",
        "quay.io",
        "--registry",
        "ghcr.io/wikimedia",
        "--expires",
        "90d",
    ])
    .exits(0);
    assert!(
        out.stdout.starts_with(&format!(
            "byocgrant/{name} created: namespace {name}, registries quay.io, ghcr.io/wikimedia, \
             expires "
        )) && out.stdout.ends_with(" (in 90d)\n"),
        "{out}"
    );
    assert!(
        !out.stderr.contains("warning"),
        "the namespace exists: {out}"
    );
    let grant = Api::<ByocGrant>::all(client().await)
        .get(name)
        .await
        .expect("the grant");
    assert_eq!(grant.spec.namespace, name);
    assert_eq!(grant.spec.reason, "T302863: e2e");
    assert_eq!(grant.spec.registries, ["quay.io", "ghcr.io/wikimedia"]);
    let expires_at = grant.spec.expires_at.expect("an expiry").0;
    let left = expires_at.duration_since(Timestamp::now()).as_secs();
    assert!(
        (90 * 86_400 - 60..=90 * 86_400).contains(&left),
        "{expires_at}: {left}s left"
    );
    let expires = expires_at.to_string();

    // The controller applies it; list shows it with the time left.
    eventually(
        "the grant to be Ready in list",
        CONVERGE_TIMEOUT,
        || async {
            let out = byoc(["list", "-n", name]).exits(0);
            let (header, rows) = parse_table(&out.stdout);
            assert_eq!(
                header,
                [
                    "NAME",
                    "NAMESPACE",
                    "REGISTRIES",
                    "EXPIRES",
                    "READY",
                    "REASON"
                ]
            );
            // 90 days minus the seconds since the grant was created, rounded down.
            let want = [name, name, "quay.io,ghcr.io/wikimedia"];
            match rows.as_slice() {
                [row]
                    if row[..3] == want
                        && ["89d", "90d"].contains(&row[3].as_str())
                        && row[4..] == ["True", "Applied"] =>
                {
                    Ok(())
                }
                _ => Err(out.stdout),
            }
        },
    )
    .await;
    let view = listed(name).expect("listed");
    assert_eq!(view["namespace"], name);
    assert_eq!(view["registries"], json!(["quay.io", "ghcr.io/wikimedia"]));
    assert_eq!(
        (&view["anyRegistry"], &view["expired"]),
        (&json!(false), &json!(false))
    );
    assert_eq!(view["expiresAt"], expires);
    let seconds = view["secondsLeft"].as_i64().expect("secondsLeft");
    assert!((89 * 86_400..=90 * 86_400).contains(&seconds), "{view}");
    assert_eq!(
        (&view["ready"], &view["readyReason"]),
        (&json!("True"), &json!("Applied"))
    );
    let wide = byoc(["list", "-n", name, "-o", "wide"]).exits(0);
    let (header, rows) = parse_table(&wide.stdout);
    assert_eq!(
        header[6..],
        ["REQUIRES", "EXPIRES-AT", "AGE", "JUSTIFICATION"]
    );
    assert_eq!(rows[0][6], "none");
    assert_eq!(rows[0][7], expires);
    assert_eq!(rows[0][9], "T302863: e2e");

    // Same flags with a fixed time: configured once, then unchanged.
    let at = "2099-01-01T00:00:00Z";
    let again = [
        "grant",
        name,
        "--reason",
        "T302863: e2e",
        "--any-registry",
        "--expires",
        at,
    ];
    let out = byoc(again).exits(0);
    assert!(
        out.stdout.starts_with(&format!(
            "byocgrant/{name} configured: namespace {name}, any registry, expires {at} (in "
        )),
        "{out}"
    );
    assert!(byoc(again).exits(0).stdout.contains(" unchanged: "));
    assert_eq!(listed(name).expect("listed")["registries"], json!([]));

    // Revoke: says what it deleted, waits for the controller to remove the labels.
    let out = byoc(["revoke", name, "--wait"]).exits(0);
    assert!(
        out.stdout.starts_with(&format!(
            "byocgrant/{name} deleted: namespace {name}, any registry, expires {at} (in "
        )) && out.stdout.lines().count() == 1,
        "{out}"
    );
    assert!(listed(name).is_none());
    let empty = byoc(["list", "-n", name]).exits(0);
    assert_eq!(empty.stdout, "");
    assert!(
        empty.stderr.contains("No ByocGrants for namespace"),
        "{empty}"
    );
    let labels = kubectl([
        "get",
        "namespace",
        name,
        "-o",
        "jsonpath={.metadata.labels}",
    ])
    .success();
    assert!(!labels.stdout.contains("byoc.toolforge.org/"), "{labels}");

    // Nothing left: exit 1, unless --ignore-not-found.
    let out = byoc(["revoke", name]).exits(1);
    assert!(
        out.stderr
            .contains(&format!("no ByocGrant grants namespace {name}")),
        "{out}"
    );
    byoc(["revoke", name, "--ignore-not-found"]).exits(0);
}

#[tokio::test]
async fn grant_validates_like_the_crd_and_warns_about_unknown_namespaces() {
    let _controller = controller::shared().await;
    let ghost = unique_name("cli-ghost");
    let _cleanup = Cleanup::new(["byocgrant", ghost.as_str()]);
    // "Any registry" only on purpose: neither flag, or both, is a usage error.
    let out = byoc(["grant", ghost.as_str(), "--reason", "T1"]).exits(2);
    assert!(
        out.stderr.contains("--registry <REGISTRY>") && out.stderr.contains("--any-registry"),
        "{out}"
    );
    let both = ["--reason", "T1", "--any-registry", "--registry", "quay.io"];
    let out = byoc(["grant", ghost.as_str()].iter().chain(&both)).exits(2);
    assert!(out.stderr.contains("cannot be used with"), "{out}");
    assert!(listed(&ghost).is_none(), "nothing was created");

    let cases: [(&[&str], &str); 5] = [
        (
            &[
                "--reason",
                "T1",
                "--any-registry",
                "--expires",
                "2020-01-01T00:00:00Z",
            ],
            "in the past",
        ),
        (
            &["--reason", "T1", "--any-registry", "--expires", "soon"],
            "is neither a duration",
        ),
        (
            &["--reason", "T1", "--registry", "Quay.io"],
            "must be lowercase",
        ),
        (
            &["--reason", "T1", "--registry", "https://quay.io"],
            "must not include a URL scheme",
        ),
        (
            &["--reason", " ", "--any-registry"],
            "reason must not be empty",
        ),
    ];
    for (flags, message) in cases {
        let out = byoc(["grant", ghost.as_str()].iter().chain(flags)).exits(2);
        assert!(out.stderr.contains(message), "{flags:?}: {out}");
    }
    let out = byoc([
        "grant",
        "Not_A_Namespace",
        "--reason",
        "T1",
        "--any-registry",
    ])
    .exits(2);
    assert!(out.stderr.contains("is not a namespace name"), "{out}");

    // A server-side dry run stores nothing.
    let out = byoc([
        "grant",
        ghost.as_str(),
        "--reason",
        "T1",
        "--any-registry",
        "--dry-run",
    ])
    .exits(0);
    assert!(out.stdout.contains(" created (server dry run): "), "{out}");
    assert!(listed(&ghost).is_none());
    // A client-side dry run writes a manifest the API server accepts.
    let manifest = byoc([
        "grant",
        &ghost,
        "--reason",
        "T1",
        "--any-registry",
        "--expires",
        "2w",
        "--dry-run=client",
        "-o",
        "yaml",
    ])
    .exits(0)
    .stdout;
    kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &manifest).success();

    // A namespace that does not exist is a warning, not a failure.
    let out = byoc([
        "grant",
        ghost.as_str(),
        "--reason",
        "T1: created later",
        "--any-registry",
    ])
    .exits(0);
    assert!(
        out.stderr.contains(&format!(
            "warning: namespace {ghost} does not exist (yet); the grant applies once it is created"
        )),
        "{out}"
    );
    // A second grant for the namespace needs its own name; the first cannot be retargeted.
    let other = unique_name("cli-other");
    let out = byoc([
        "grant",
        other.as_str(),
        "--name",
        ghost.as_str(),
        "--reason",
        "T1",
        "--any-registry",
    ])
    .exits(2);
    assert!(
        out.stderr
            .contains(&format!("already exists for namespace {ghost}")),
        "{out}"
    );
    let out = byoc(["revoke", "--name", ghost.as_str(), "--wait"]).exits(0);
    assert!(
        out.stdout
            .starts_with(&format!("byocgrant/{ghost} deleted: ")),
        "{out}"
    );
    let out = byoc(["revoke", "--name", ghost.as_str()]).exits(1);
    assert!(
        out.stderr.contains(&format!("ByocGrant {ghost} not found")),
        "{out}"
    );
}

#[tokio::test]
async fn connection_flags_and_kubeconfig_lists_work_like_kubectl() {
    controller::setup().await; // the CRD
    let admin = kubeconfig_path();
    let context = kube::config::Kubeconfig::read_from(admin)
        .expect("the admin kubeconfig")
        .current_context
        .expect("a current context");
    let dir = std::env::temp_dir().join(unique_name("cli-kubeconfig"));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    // A first file whose current context points at a closed port, merged with the admin's.
    let broken = dir.join("broken.yaml");
    std::fs::write(
        &broken,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: closed\n  cluster:\n    server: \
         https://127.0.0.1:1\ncontexts:\n- name: broken\n  context:\n    cluster: closed\n    \
         user: nobody\nusers:\n- name: nobody\n  user: {}\ncurrent-context: broken\n",
    )
    .expect("write the kubeconfig");
    let list = std::env::join_paths([broken.as_path(), admin]).expect("a KUBECONFIG list");

    let with_env = |value: &std::ffi::OsStr| {
        let mut cmd = command();
        cmd.env("KUBECONFIG", value);
        cmd
    };
    let out = run(with_env(&list), ["list", "--request-timeout", "5s"]).exits(2);
    assert!(out.stderr.contains("127.0.0.1:1"), "{out}");
    run(with_env(&list), ["list", "--context", &context]).exits(0);
    let out = run(with_env(&list), ["list", "--context", "nope"]).exits(2);
    assert!(out.stderr.contains("nope"), "{out}");

    let mut bare = command();
    bare.env_remove("KUBECONFIG").env("HOME", &dir);
    let out = run(bare, ["list"]).exits(2);
    assert!(
        out.stderr
            .contains("no kubeconfig: set KUBECONFIG or pass --kubeconfig"),
        "{out}"
    );
    let mut bare = command();
    bare.env_remove("KUBECONFIG").env("HOME", &dir);
    run(
        bare,
        ["list".as_ref(), "--kubeconfig".as_ref(), admin.as_os_str()],
    )
    .exits(0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_plugin_works_as_kubectl_byoc() {
    let _controller = controller::shared().await;
    let ns = TestNamespace::create(&client().await, "cli-plugin").await;
    let name = ns.name();
    let _cleanup = Cleanup::new(["byocgrant", name]);

    let plugins = kubectl_byoc(["--help"]).success();
    assert!(
        plugins.stdout.contains("Usage: kubectl byoc <COMMAND>"),
        "{plugins}"
    );
    let out = kubectl_byoc([
        "grant",
        name,
        "--reason",
        "T1",
        "--registry",
        "quay.io",
        "--wait",
    ])
    .exits(0);
    assert!(
        out.stdout
            .starts_with(&format!("byocgrant/{name} created: ")),
        "{out}"
    );
    assert!(
        out.stderr
            .contains(&format!("byocgrant/{name} Ready=True: Applied")),
        "{out}"
    );
    let list = kubectl_byoc(["list", "-n", name, "-o", "json"])
        .exits(0)
        .json();
    assert_eq!(list["grants"][0]["registries"], json!(["quay.io"]));
    kubectl_byoc(["revoke", name, "--wait"]).exits(0);
    let completion = kubectl_byoc(["completion", "bash"]).exits(0);
    assert!(
        completion
            .stdout
            .contains("complete -F _kubectlbyoc -o bashdefault -o default kubectl-byoc\n"),
        "{}",
        completion.stdout
    );
}

/// `audit -n NS -o json`: the exit code and the (kind, name) of every refused object.
fn audited(namespace: &str) -> (i32, Value, BTreeSet<(String, String)>) {
    let out = byoc(["audit", "-n", namespace, "-o", "json"]);
    let report = out.json();
    let objects = report["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .filter(|n| n["name"] == namespace)
        .flat_map(|n| n["objects"].as_array().cloned().unwrap_or_default())
        .map(|o| (str_of(&o["kind"]), str_of(&o["name"])))
        .collect();
    (out.code(), report, objects)
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// The names of the pods in `namespace` that run `image`.
fn pods_running(namespace: &str, image: &str) -> Vec<String> {
    let out = kubectl(["-n", namespace, "get", "pods", "-o", "json"]).success();
    let pods: Value = serde_json::from_str(&out.stdout).expect("pods JSON");
    pods["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|p| {
            let containers = p["spec"]["containers"].as_array().into_iter().flatten();
            let inits = p["spec"]["initContainers"].as_array().into_iter().flatten();
            containers.chain(inits).any(|c| c["image"] == image)
        })
        .map(|p| str_of(&p["metadata"]["name"]))
        .collect()
}

fn pod_spec(container: &str, image: &str) -> Value {
    json!({"containers": [{"name": container, "image": image}]})
}

fn template(app: &str, spec: Value) -> Value {
    json!({"metadata": {"labels": {"app": app}}, "spec": spec})
}

/// The workloads of the audit test: every kind the audit reads.
fn workloads(ns: &str) -> Value {
    let meta = |name: &str| json!({"name": name, "namespace": ns});
    let selector = |app: &str| json!({"matchLabels": {"app": app}});
    let job_spec = |spec: Value| {
        let mut spec = spec;
        spec["restartPolicy"] = json!("Never");
        spec
    };
    json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("web"),
         "spec": {"replicas": 2, "strategy": {"type": "Recreate"}, "selector": selector("web"),
                  "template": template("web", pod_spec("nginx", "nginx:1.27"))}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("ok"),
         "spec": {"replicas": 1, "selector": selector("ok"),
                  "template": template("ok", pod_spec("app", PLATFORM))}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta("db"),
         "spec": {"replicas": 1, "serviceName": "db", "selector": selector("db"),
                  "template": template("db", pod_spec("db", "quay.io/org/db:1"))}},
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta("agent"),
         "spec": {"selector": selector("agent"),
                  "template": template("agent", pod_spec("agent", "ghcr.io/org/agent:1"))}},
        {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta("backup"),
         "spec": {"schedule": "0 3 * * *", "suspend": true, "jobTemplate": {"spec": {"template":
            template("backup", job_spec(json!({
                "initContainers": [{"name": "fetch", "image": "quay.io/org/fetch:2"}],
                "containers": [{"name": "run", "image": PLATFORM}]})))}}}},
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta("once"),
         "spec": {"template": template("once", job_spec(pod_spec("once", "ghcr.io/org/once:1")))}},
        {"apiVersion": "v1", "kind": "ReplicationController", "metadata": meta("legacy"),
         "spec": {"replicas": 1, "selector": {"app": "legacy"},
                  "template": template("legacy", pod_spec("legacy", "busybox:1.36"))}},
        {"apiVersion": "v1", "kind": "PodTemplate", "metadata": meta("tmpl"),
         "template": template("tmpl", pod_spec("t", "quay.io/org/tmpl:1"))},
        {"apiVersion": "v1", "kind": "Pod", "metadata": meta("bare"),
         "spec": pod_spec("c", "busybox:1.36")},
        {"apiVersion": "v1", "kind": "Pod", "metadata": meta("bare-ok"),
         "spec": pod_spec("c", PLATFORM)},
    ]})
}

#[tokio::test]
async fn audit_lists_exactly_the_offending_pods_and_workloads() {
    let _policy = POLICY.lock().await;
    let _controller = controller::shared().await;
    let ns = tool_namespace("cli-audit").await;
    let name = ns.name();
    let _cleanup = Cleanup::new(["byocgrant", name]);
    kubectl_stdin(&["create", "-f", "-"], &workloads(name).to_string()).success();
    // kube-controller-manager creates the pods: web ×2, ok, db-0, once, legacy (+ 2 bare).
    let pods = eventually("the workloads' pods", CONVERGE_TIMEOUT, || async {
        let bad: Vec<String> = [
            "nginx:1.27",
            "quay.io/org/db:1",
            "ghcr.io/org/once:1",
            "busybox:1.36",
        ]
        .iter()
        .flat_map(|image| pods_running(name, image))
        .collect();
        let good = pods_running(name, PLATFORM);
        if bad.len() == 6 && good.len() == 2 {
            Ok(bad)
        } else {
            Err(format!("bad {bad:?}, good {good:?}"))
        }
    })
    .await;

    let workloads = [
        ("Deployment", "web"),
        ("StatefulSet", "db"),
        ("DaemonSet", "agent"),
        ("CronJob", "backup"),
        ("Job", "once"),
        ("ReplicationController", "legacy"),
        ("PodTemplate", "tmpl"),
    ];
    let expected: BTreeSet<(String, String)> = workloads
        .iter()
        .map(|(k, n)| ((*k).to_owned(), (*n).to_owned()))
        .chain(pods.iter().map(|p| ("Pod".to_owned(), p.clone())))
        .collect();
    let (code, report, objects) = audited(name);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(objects, expected, "{report:#}");
    assert_eq!(
        (&report["kind"], &report["version"]),
        (&json!("ByocAudit"), &json!(1))
    );
    assert_eq!(report["namespace"], name);
    assert_eq!(
        report["summary"],
        json!({"namespaces": 1, "exemptNamespaces": 0, "pods": 8, "workloads": 8,
               "skipped": 2, "refusedNamespaces": 1, "refusedPods": 6,
               "refusedWorkloads": 7, "refusedContainers": 13})
    );
    let entry = &report["namespaces"][0];
    assert_eq!(
        entry["allowedRegistries"],
        json!(["docker-registry.tools.wmflabs.org"])
    );
    assert_eq!(
        entry["fix"]["registries"],
        json!(["docker.io", "ghcr.io", "quay.io"])
    );
    assert_eq!(
        entry["fix"]["command"],
        format!(
            "kubectl byoc grant {name} --registry docker.io --registry ghcr.io --registry quay.io \
             --reason '<why this tool needs its own images>'"
        )
    );
    let cronjob = entry["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .find(|o| o["kind"] == "CronJob")
        .expect("the CronJob");
    assert_eq!(
        cronjob["containers"],
        json!([{"type": "initContainer", "name": "fetch", "image": "quay.io/org/fetch:2",
                "reason": "registry_not_allowed", "registry": "quay.io",
                "resolved": "quay.io/org/fetch:2",
                "message": format!("CronJob {name}/backup: initContainer \"fetch\" image \
                    \"quay.io/org/fetch:2\" resolves to registry quay.io (quay.io/org/fetch:2), \
                    which namespace {name} may not use; allowed here: \
                    docker-registry.tools.wmflabs.org; to use it, ask for a grant: kubectl byoc \
                    request -n {name} --registry quay.io --reason '...'")}])
    );

    // The same through every namespace, and page by page (continue tokens) with one per page.
    let all = byoc(["audit", "-o", "json"]).exits(1).json();
    let mine = all["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .find(|n| n["name"] == name)
        .expect("our namespace in the cluster-wide audit");
    assert_eq!(mine, entry);
    let paged = byoc(["audit", "-n", name, "-o", "json", "--chunk-size", "1"]).exits(1);
    assert_eq!(paged.json()["namespaces"], report["namespaces"]);
    assert!(paged.stderr.contains("listed 8 Pods in 8 pages"), "{paged}");

    // The text report: one block for the namespace, the fix last.
    let text = byoc(["audit", "-n", name]).exits(1);
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "namespace {name}: 7 workloads and 6 pods would be refused (allowed here: \
             docker-registry.tools.wmflabs.org)"
        )
    );
    assert_eq!(lines.len(), 1 + 13 + 1, "{text}");
    assert!(
        lines.contains(
            &"  Deployment/web: container \"nginx\" image \"nginx:1.27\" is from docker.io"
        ),
        "{text}"
    );
    assert_eq!(
        lines[14],
        format!("  fix: {}", str_of(&entry["fix"]["command"]))
    );
    assert!(
        text.stderr
            .contains("7 workloads and 6 pods in 1 namespace would be refused"),
        "{text}"
    );

    // Switch some workloads to the platform registry, grant ghcr.io, and audit again.
    kubectl([
        "-n",
        name,
        "set",
        "image",
        "deployment/web",
        &format!("nginx={PLATFORM}"),
    ])
    .success();
    kubectl([
        "-n",
        name,
        "set",
        "image",
        "daemonset/agent",
        &format!("agent={PLATFORM}"),
    ])
    .success();
    kubectl([
        "-n",
        name,
        "set",
        "image",
        "cronjob/backup",
        &format!("fetch={PLATFORM}"),
    ])
    .success();
    kubectl([
        "-n",
        name,
        "set",
        "image",
        "pod/bare",
        &format!("c={PLATFORM}"),
    ])
    .success();
    let patch =
        json!([{"op": "replace", "path": "/template/spec/containers/0/image", "value": PLATFORM}]);
    kubectl([
        "-n",
        name,
        "patch",
        "podtemplate",
        "tmpl",
        "--type=json",
        "-p",
        &patch.to_string(),
    ])
    .success();
    byoc([
        "grant",
        name,
        "--registry",
        "ghcr.io",
        "--reason",
        "T1: e2e",
        "--wait",
    ])
    .exits(0);
    let remaining = eventually("the audit to see the switch", CONVERGE_TIMEOUT, || async {
        let legacy = pods_running(name, "busybox:1.36");
        let db = pods_running(name, "quay.io/org/db:1");
        let want: BTreeSet<(String, String)> =
            [("StatefulSet", "db"), ("ReplicationController", "legacy")]
                .iter()
                .map(|(k, n)| ((*k).to_owned(), (*n).to_owned()))
                .chain(
                    legacy
                        .iter()
                        .chain(&db)
                        .map(|p| ("Pod".to_owned(), p.clone())),
                )
                .collect();
        let (code, report, objects) = audited(name);
        if code == 1 && objects == want && pods_running(name, "nginx:1.27").is_empty() {
            Ok(report)
        } else {
            Err(format!("want {want:?}, got {objects:?}"))
        }
    })
    .await;
    let entry = &remaining["namespaces"][0];
    assert_eq!(
        entry["allowedRegistries"],
        json!(["docker-registry.tools.wmflabs.org", "ghcr.io"])
    );
    assert_eq!(entry["fix"]["registries"], json!(["docker.io", "quay.io"]));

    // Everything fixed: exit 0, nothing on stdout.
    kubectl([
        "-n",
        name,
        "delete",
        "statefulset/db",
        "replicationcontroller/legacy",
        "--wait=false",
    ])
    .success();
    kubectl(["-n", name, "delete", "pods", "--all", "--wait=false"]).success();
    eventually("a clean audit", CONVERGE_TIMEOUT, || async {
        let out = byoc(["audit", "-n", name]);
        if out.code() == 0 {
            Ok(out)
        } else {
            Err(out.to_string())
        }
    })
    .await;
    let out = byoc(["audit", "-n", name]).exits(0);
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains("nothing would be refused"), "{out}");
    byoc(["revoke", name, "--wait"]).exits(0);
}

/// Removes the finalizers of pod `.1` in namespace `.0` when dropped, so that it can go.
struct Unhold(String, String);

impl Drop for Unhold {
    fn drop(&mut self) {
        let patch = r#"{"metadata":{"finalizers":null}}"#;
        let out = kubectl([
            "-n",
            &self.0,
            "patch",
            "pod",
            &self.1,
            "--type=merge",
            "-p",
            patch,
        ]);
        if !out.status.success() {
            eprintln!("removing the finalizer failed (ignored): {out}");
        }
    }
}

#[tokio::test]
async fn audit_reports_a_pod_being_deleted_marked_terminating() {
    // Found by the second cold review: `audit` skipped pods being deleted, though one with a
    // huge terminationGracePeriodSeconds keeps running until it ends. Without a kubelet the
    // API server would remove an unscheduled pod at once, so a finalizer (which `edit` may
    // set) holds this one, as a long grace period holds one on a node.
    let _policy = POLICY.lock().await;
    let ns = tool_namespace("cli-audit-term").await;
    let name = ns.name();
    let (tenant, _binding) = edit_tenant(name).await;
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "lingering", "namespace": name, "finalizers": ["example.org/hold"]},
        "spec": {"terminationGracePeriodSeconds": 31_536_000,
                 "containers": [{"name": "app", "image": "nginx:1.27"}]}});
    kubectl_as(&tenant, &["create", "-f", "-"], Some(&pod.to_string())).success();
    let _unhold = Unhold(name.to_owned(), "lingering".to_owned());
    kubectl_as(
        &tenant,
        &["-n", name, "delete", "pod", "lingering", "--wait=false"],
        None,
    )
    .success();
    let deleting = kubectl([
        "-n",
        name,
        "get",
        "pod",
        "lingering",
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ])
    .success();
    assert!(
        !deleting.stdout.trim().is_empty(),
        "the pod is being deleted"
    );

    let (code, report, objects) = audited(name);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(
        objects,
        BTreeSet::from([("Pod".to_owned(), "lingering".to_owned())]),
        "{report:#}"
    );
    assert_eq!(report["namespaces"][0]["objects"][0]["terminating"], true);
    assert_eq!(report["summary"]["pods"], 1);
    let text = byoc(["audit", "-n", name]).exits(1);
    assert!(
        text.stdout.contains(
            "  Pod/lingering (terminating): container \"app\" image \"nginx:1.27\" is from docker.io"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn import_configmap_creates_the_grants_once() {
    let _controller = controller::shared().await;
    let client = client().await;
    let system = TestNamespace::create(&client, "cli-legacy").await;
    let (a, b) = (
        TestNamespace::create(&client, "cli-tool").await,
        TestNamespace::create(&client, "cli-tool").await,
    );
    let ghost = unique_name("cli-gone");
    let names = [a.name(), b.name(), ghost.as_str()];
    let _cleanup = Cleanup::new(std::iter::once("byocgrant").chain(names));
    let list = format!(
        "# BYOC allow-list (T302863 option 4), reviewed by WMCS\n{}\n\n  {}   # T123\n{}\n{}\n",
        names[0], names[1], names[2], names[0]
    );
    let configmap = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "byoc-allowlist", "namespace": system.name()},
        "data": {"allowlist": list, "README": "not the list"}});
    kubectl_stdin(&["create", "-f", "-"], &configmap.to_string()).success();
    let source = format!("{}/byoc-allowlist", system.name());

    let out = byoc(["import-configmap", "--configmap", &source]).exits(2);
    assert!(
        out.stderr
            .contains("has 2 data keys (README, allowlist): choose one with --key"),
        "{out}"
    );
    let import = [
        "import-configmap",
        "--configmap",
        source.as_str(),
        "--key",
        "allowlist",
    ];
    let out = byoc(import.iter().chain(&["--dry-run"])).exits(0);
    assert!(out.stdout.contains("created (server dry run): "), "{out}");
    assert!(
        names.iter().all(|n| listed(n).is_none()),
        "a dry run creates nothing"
    );

    let out = byoc(import).exits(0);
    assert_eq!(
        out.stdout,
        format!(
            "created: {0} (line 2) as byocgrant/{0}\ncreated: {1} (line 4) as byocgrant/{1}\n\
             created: {2} (line 5) as byocgrant/{2}\nskipped: {0} (line 6): repeats line 2\n",
            names[0], names[1], names[2]
        )
    );
    assert!(
        out.stderr
            .contains(&format!("warning: namespace {ghost} does not exist (yet)")),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("3 created, 1 skipped, 0 conflicting, 0 could not be parsed"),
        "{out}"
    );
    let api = Api::<ByocGrant>::all(client.clone());
    let mut generations = Vec::new();
    for (line, ns) in [2, 4, 5].into_iter().zip(names) {
        let grant = api.get(ns).await.expect("an imported grant");
        assert_eq!(grant.spec.namespace, ns);
        assert!(grant.spec.registries.is_empty() && grant.spec.expires_at.is_none());
        assert_eq!(
            grant.spec.reason,
            format!("imported from the legacy BYOC allow-list ConfigMap {source}")
        );
        assert_eq!(
            grant.metadata.annotations.unwrap_or_default()["byoc.toolforge.org/imported-from"],
            format!("configmap {source} key allowlist line {line}")
        );
        generations.push(grant.metadata.generation);
    }

    // Idempotent: the second run skips everything and changes no spec.
    let out = byoc(import).exits(0);
    assert!(out.stderr.contains("0 created, 4 skipped"), "{out}");
    assert!(
        out.stdout.lines().all(|l| l.starts_with("skipped: ")),
        "{out}"
    );
    for (ns, generation) in names.iter().zip(&generations) {
        let grant = api.get(ns).await.expect("still there");
        assert_eq!(&grant.metadata.generation, generation, "{ns}");
    }
    let all = byoc(["list", "-o", "json"]).exits(0).json();
    let imported = all["grants"]
        .as_array()
        .expect("grants")
        .iter()
        .filter(|g| names.contains(&g["namespace"].as_str().unwrap_or_default()))
        .count();
    assert_eq!(imported, 3);

    // A line that is not a namespace: reported with its number, exit 1.
    let bad = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "broken", "namespace": system.name()},
        "data": {"list": format!("{}\nTool_Upper\n", names[0])}});
    kubectl_stdin(&["create", "-f", "-"], &bad.to_string()).success();
    let out = byoc([
        "import-configmap",
        "--configmap",
        &format!("{}/broken", system.name()),
    ])
    .exits(1);
    assert!(
        out.stdout
            .contains("could not parse: line 2: \"Tool_Upper\": not a namespace name"),
        "{out}"
    );
    let out = byoc(["revoke", names[2], "--wait"]).exits(0);
    assert!(
        out.stdout
            .starts_with(&format!("byocgrant/{ghost} deleted")),
        "{out}"
    );
}

#[tokio::test]
async fn a_grant_admits_pods_from_its_registry_and_revoking_refuses_them_again() {
    let _policy = POLICY.lock().await;
    let _controller = controller::shared().await;
    let _webhook = Webhook::start(Options::default()).await;
    let ns = tool_namespace("cli-admit").await;
    let name = ns.name();
    let _cleanup = Cleanup::new(["byocgrant", name]);
    let image = "quay.io/prometheus/busybox:latest";
    let run_pod = |pod: &str| kubectl_run(name, pod, image);

    run_pod("before").fails_with(&["resolves to registry quay.io"]);
    let out = kubectl_byoc([
        "grant",
        name,
        "--registry",
        "quay.io",
        "--reason",
        "T302863: e2e",
        "--expires",
        "1h",
        "--wait",
    ])
    .exits(0);
    assert!(out.stderr.contains("Ready=True: Applied"), "{out}");
    eventually("the grant to admit quay.io", CONVERGE_TIMEOUT, || async {
        let out = run_pod("granted");
        if out.status.success() {
            Ok(())
        } else {
            Err(out.to_string())
        }
    })
    .await;
    let (_, rows) = parse_table(&kubectl_byoc(["list", "-n", name]).exits(0).stdout);
    assert_eq!(rows.len(), 1, "{rows:?}");
    // A grant ending within the default 14-day expiryWarning is marked.
    let minutes_left: u32 = rows[0][3]
        .strip_suffix("m (soon)")
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("EXPIRES of a 1h grant: {rows:?}"));
    assert!((55..=60).contains(&minutes_left), "{rows:?}");
    assert_eq!(
        [&rows[0][..3], &rows[0][4..]].concat(),
        [name, name, "quay.io", "True", "Applied"]
    );
    assert_eq!(listed(name).expect("listed")["expiringSoon"], true);
    // With a 30-minute expiryWarning (--config, as the webhook reads it) it is not.
    let dir = std::env::temp_dir().join(unique_name("cli-expiry"));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let config = dir.join("policy.yaml");
    std::fs::write(&config, "expiryWarning: 30m\n").expect("write the policy");
    let config = config.display().to_string();
    let (_, rows) = parse_table(
        &kubectl_byoc(["list", "-n", name, "--config", &config])
            .exits(0)
            .stdout,
    );
    assert!(rows[0][3].ends_with('m'), "{rows:?}");
    byoc(["audit", "-n", name]).exits(0);

    // `check` with the grant as stored: admitted (exit 0, nothing on stdout), with the same
    // reminder as the webhook's on stderr.
    let stored = kubectl(["get", "byocgrant", name, "-o", "yaml"])
        .success()
        .stdout;
    let expires_at = kubectl(["get", "byocgrant", name, "-o", "jsonpath={.spec.expiresAt}"])
        .success()
        .stdout;
    let grant_file = dir.join("grant.yaml");
    let pod_file = dir.join("pod.yaml");
    std::fs::write(&grant_file, stored).expect("write the grant");
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": name},
                     "spec": {"containers": [{"name": "app", "image": image}]}});
    std::fs::write(&pod_file, pod.to_string()).expect("write the pod");
    let grant_arg = grant_file.display().to_string();
    let pod_arg = pod_file.display().to_string();
    let out = kubectl_byoc(["check", "--grant", &grant_arg, &pod_arg]).exits(0);
    assert!(out.stdout.is_empty(), "{out}");
    assert!(
        out.stderr.contains(&format!(
            "Pod {name}/p: container \"app\" image \"{image}\" is allowed only by a BYOC grant \
             for quay.io that expires at {expires_at} (less than a day left); to keep using it, \
             ask for a grant: kubectl byoc request -n {name} --registry quay.io --reason '...'"
        )),
        "{out}"
    );
    let out = kubectl_byoc([
        "check", "--config", &config, "--grant", &grant_arg, &pod_arg,
    ])
    .exits(0);
    assert!(!out.stderr.contains("is allowed only by"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);

    let out = kubectl_byoc(["revoke", name, "--wait"]).exits(0);
    assert!(
        out.stdout.starts_with(&format!(
            "byocgrant/{name} deleted: namespace {name}, registries quay.io"
        )),
        "{out}"
    );
    let mut attempt = 0;
    eventually(
        "the revoked grant to stop admitting",
        CONVERGE_TIMEOUT,
        || {
            attempt += 1;
            let out = run_pod(&format!("after-{attempt}"));
            async move {
                if !out.status.success() && out.stderr.contains("resolves to registry quay.io") {
                    Ok(())
                } else {
                    Err(out.to_string())
                }
            }
        },
    )
    .await;
    // The pod admitted under the grant keeps running; the audit now names it.
    let (code, report, objects) = audited(name);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(
        objects,
        BTreeSet::from([("Pod".to_owned(), "granted".to_owned())]),
        "{report:#}"
    );
    assert_eq!(
        report["namespaces"][0]["fix"]["registries"],
        json!(["quay.io"])
    );
}

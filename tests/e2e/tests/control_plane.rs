//! The local control plane is a real one (issue 3, DESIGN §9): kubectl works against it, the
//! controllers turn Deployments into Pods and finish namespace deletion, and both admission
//! paths the operator relies on (webhooks and ValidatingAdmissionPolicy) are switched on.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use byoc_e2e::{
    CONVERGE_TIMEOUT, Cleanup, TestNamespace, client, eventually, kubectl, kubectl_stdin,
    pinned_version, unique_name,
};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use serde_json::json;

#[tokio::test]
async fn kubectl_api_resources_lists_the_apis_the_operator_uses() {
    let out = kubectl(["api-resources", "--no-headers"]).success();
    // The KIND column is the last one.
    let kinds: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    for kind in [
        "Namespace",
        "Pod",
        "ServiceAccount",
        "Deployment",
        "ReplicaSet",
        "Lease",
        "Event",
        "CustomResourceDefinition",
        "ValidatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        assert!(
            kinds.contains(&kind),
            "kubectl api-resources does not list {kind}:\n{out}"
        );
    }
}

#[tokio::test]
async fn the_api_server_is_the_pinned_kubernetes_version() {
    let version = client()
        .await
        .apiserver_version()
        .await
        .expect("GET /version");
    assert_eq!(version.git_version, pinned_version("KUBERNETES_VERSION"));
}

#[tokio::test]
async fn a_deployment_gets_a_replicaset_and_pods() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "e2e-deploy").await;
    ns.wait_for_default_service_account(&client).await;

    kubectl([
        "-n",
        ns.name(),
        "create",
        "deployment",
        "web",
        "--image=registry.k8s.io/pause:3.10",
        "--replicas=2",
    ])
    .success();

    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let listed = eventually("2 pods of deployment web", CONVERGE_TIMEOUT, || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .map_err(|e| e.to_string())?;
        if list.items.len() == 2 {
            Ok(list.items)
        } else {
            Err(format!("{} pods", list.items.len()))
        }
    })
    .await;

    // Deployment -> ReplicaSet -> Pod, through the controllers' owner references.
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns.name());
    for pod in &listed {
        let owner = &pod
            .metadata
            .owner_references
            .as_ref()
            .expect("pod has an owner")[0];
        assert_eq!(owner.kind, "ReplicaSet");
        let rs = replicasets
            .get(&owner.name)
            .await
            .expect("the pod's ReplicaSet");
        let rs_owner = &rs
            .metadata
            .owner_references
            .as_ref()
            .expect("rs has an owner")[0];
        assert_eq!(
            (rs_owner.kind.as_str(), rs_owner.name.as_str()),
            ("Deployment", "web")
        );
        // No scheduler or kubelet: the pods exist but are never scheduled.
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        assert_eq!(phase, Some("Pending"));
    }

    // kubectl sees the same pods.
    let out = kubectl([
        "-n",
        ns.name(),
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "name",
    ])
    .success();
    assert_eq!(out.stdout.lines().count(), 2, "{out}");
}

#[tokio::test]
async fn a_namespace_gets_its_service_account_and_root_ca_and_deleting_it_finishes() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "e2e-nslife").await;
    ns.wait_for_default_service_account(&client).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), ns.name());
    let root_ca = eventually(
        "the kube-root-ca.crt ConfigMap",
        CONVERGE_TIMEOUT,
        || async {
            configmaps
                .get_opt("kube-root-ca.crt")
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "not published yet".to_owned())
        },
    )
    .await;
    let ca = root_ca
        .data
        .unwrap_or_default()
        .remove("ca.crt")
        .unwrap_or_default();
    assert!(
        ca.contains("BEGIN CERTIFICATE"),
        "kube-root-ca.crt holds no certificate: {ca:?}"
    );

    // Content for the namespace controller to remove before the namespace can go.
    kubectl([
        "-n",
        ns.name(),
        "create",
        "configmap",
        "content",
        "--from-literal=k=v",
    ])
    .success();
    kubectl([
        "-n",
        ns.name(),
        "create",
        "deployment",
        "web",
        "--image=registry.k8s.io/pause:3.10",
    ])
    .success();

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(ns.name(), &DeleteParams::default())
        .await
        .expect("delete namespace");
    eventually("the namespace to be deleted", CONVERGE_TIMEOUT, || async {
        match namespaces
            .get_opt(ns.name())
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(n) => Err(format!("still there: {:?}", n.status)),
        }
    })
    .await;
}

#[tokio::test]
async fn validating_admission_policies_are_enforced() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "e2e-vap").await;
    let name = unique_name("e2e-vap");
    let _cleanup = Cleanup::new([
        "validatingadmissionpolicybinding".to_owned(),
        name.clone(),
        "validatingadmissionpolicy".to_owned(),
        name.clone(),
    ]);
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": { "name": name },
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": { "resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE"], "resources": ["configmaps"],
            }]},
            "validations": [{
                "expression": "!object.metadata.name.startsWith('forbidden-')",
                "message": "e2e policy: configmaps named forbidden-* are refused",
            }],
        },
    });
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": { "name": name },
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": { "namespaceSelector": {
                "matchLabels": { "kubernetes.io/metadata.name": ns.name() },
            }},
        },
    });
    kubectl_stdin(&["apply", "-f", "-"], &policy.to_string()).success();
    kubectl_stdin(&["apply", "-f", "-"], &binding.to_string()).success();

    // Policies take effect asynchronously (compiled by an informer-driven controller).
    let denied = eventually("the policy to deny", CONVERGE_TIMEOUT, || async {
        let out = kubectl([
            "-n",
            ns.name(),
            "create",
            "configmap",
            "forbidden-x",
            "--dry-run=server",
        ]);
        if out.status.success() {
            Err("still admitted".to_owned())
        } else {
            Ok(out)
        }
    })
    .await;
    assert!(
        denied
            .stderr
            .contains("e2e policy: configmaps named forbidden-* are refused"),
        "{denied}"
    );
    kubectl([
        "-n",
        ns.name(),
        "create",
        "configmap",
        "allowed-x",
        "--dry-run=server",
    ])
    .success();
}

#[tokio::test]
async fn validating_webhooks_are_called() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "e2e-webhook").await;
    let name = unique_name("e2e-webhook");
    let _cleanup = Cleanup::new(["validatingwebhookconfiguration".to_owned(), name.clone()]);
    // A loopback port where nothing listens: the API server's call fails, and with
    // failurePolicy Fail that refuses the request. Proves the webhook admission plugin is on and
    // that the API server calls out to loopback URLs (as it will call the webhook in `make run`).
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let webhook = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": { "name": name },
        "webhooks": [{
            "name": "e2e.byoc.toolforge.org",
            "clientConfig": { "url": format!("https://127.0.0.1:{port}/validate") },
            "rules": [{
                "apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE"], "resources": ["configmaps"],
            }],
            "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": ns.name() } },
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 2,
        }],
    });
    kubectl_stdin(&["apply", "-f", "-"], &webhook.to_string()).success();

    let denied = eventually("the webhook to be called", CONVERGE_TIMEOUT, || async {
        let out = kubectl([
            "-n",
            ns.name(),
            "create",
            "configmap",
            "x",
            "--dry-run=server",
        ]);
        if out.status.success() {
            Err("still admitted".to_owned())
        } else {
            Ok(out)
        }
    })
    .await;
    assert!(
        denied
            .stderr
            .contains("failed calling webhook \"e2e.byoc.toolforge.org\""),
        "{denied}"
    );
}

/// Pids of the processes whose command line names `dir` (a local cluster's components).
fn processes_naming(dir: &Path) -> Vec<(u32, String)> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(&needle).then_some((pid, cmdline))
        })
        .collect()
}

/// `hack/local-cluster.sh up 2>&1 | tee log`, then Ctrl-C: the terminal's SIGINT ends `tee` as
/// well, so every line the script writes while it stops goes to a pipe nobody reads (issue 12,
/// item 7). It must still stop etcd, kube-apiserver and kube-controller-manager.
#[test]
fn local_cluster_stops_everything_when_its_output_pipe_is_gone() {
    let dir = std::env::temp_dir().join(unique_name("byoc-pipe"));
    let script = byoc_e2e::repo_root().join("hack/local-cluster.sh");
    // stdout and stderr into one pipe, as `2>&1 |` does. SIGINT and SIGPIPE at their defaults,
    // as in a terminal: under `local-cluster.sh exec` the tests run as a background job, which
    // ignores SIGINT, and a shell cannot trap a signal ignored when it started.
    let mut child = Command::new("env")
        .args([
            "--default-signal=INT,PIPE",
            "bash",
            "-c",
            r#"exec "$0" "$@" 2>&1"#,
        ])
        .arg(&script)
        .arg("--dir")
        .arg(&dir)
        .arg("up")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start hack/local-cluster.sh");
    let mut output = BufReader::new(child.stdout.take().expect("the pipe"));
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = output.read_line(&mut line).expect("read the pipe");
        seen.push_str(&line);
        assert!(
            n > 0,
            "hack/local-cluster.sh up ended before it was ready:\n{seen}"
        );
        if line.contains("press Ctrl-C to stop") {
            break;
        }
    }
    let components = processes_naming(&dir);
    assert!(
        components.len() >= 3,
        "no control plane running: {components:?}"
    );

    // The reader goes away first, then the signal comes.
    drop(output);
    let signalled = Instant::now();
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the script") {
            break Some(status);
        }
        if signalled.elapsed() > Duration::from_secs(90) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Whatever it left behind is ended here, so a failure does not leak a control plane.
    let left = processes_naming(&dir);
    for (pid, _) in &left {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        left.is_empty(),
        "left running after SIGINT (script exit: {status:?}):\n{left:#?}"
    );
    assert!(
        status.is_some(),
        "the script did not exit within 90 s of SIGINT"
    );
    assert!(
        !dir.join("kubeconfig").exists(),
        "the stopped cluster's kubeconfig is still there"
    );
    eprintln!(
        "stopped in {:?} with its output pipe closed ({status:?})",
        signalled.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A process named like a component (`exec -a NAME` of a bash itself called NAME, so both its
/// command name and its argv[0] are NAME), whose command line names `dir/` as a component's
/// does.
fn namesake(dir: &Path, name: &str) -> std::process::Child {
    let bin = dir.join("namesakes");
    std::fs::create_dir_all(&bin).expect("create the namesakes dir");
    let program = bin.join(name);
    if !program.exists() {
        std::os::unix::fs::symlink("/bin/bash", &program).expect("link bash");
    }
    Command::new("bash")
        .args(["-c", r#"exec -a "$0" "$1" -c 'sleep 300; :' "$2""#, name])
        .arg(&program)
        .arg(dir.join("data"))
        .stdin(Stdio::null())
        .spawn()
        .expect("start a namesake")
}

/// `hack/` hygiene (issue 21, item 5). Under the most permissive umask (000), the kubeconfigs
/// and private keys the cluster writes are mode 600 and `pki/` 700: written private from the
/// start (mktemp, `mkdir -m 700`, openssl's own 600), never written and then chmod-ed. And the
/// clean-up ends only what it started: processes named etcd and kube-apiserver whose command
/// lines name the state dir survive a start (their pids planted in stale pid files, as if
/// reused after a crash) and a stop.
#[test]
fn local_cluster_writes_secrets_private_and_ends_only_what_it_started() {
    let dir = std::env::temp_dir().join(unique_name("byoc-hygiene"));
    std::fs::create_dir_all(dir.join("run")).expect("create the state dir");
    let mut etcd = namesake(&dir, "etcd");
    let mut apiserver = namesake(&dir, "kube-apiserver");
    std::thread::sleep(Duration::from_millis(200));
    let comm = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm(etcd.id()).trim(), "etcd");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", etcd.id())).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy()),
        "the namesake's command line names the state dir"
    );
    // Stale pid files: the old format (a pid only), and a pid with another start time.
    std::fs::write(dir.join("run/etcd.pid"), format!("{}\n", etcd.id())).expect("plant");
    std::fs::write(
        dir.join("run/kube-apiserver.pid"),
        format!("{} 1\n", apiserver.id()),
    )
    .expect("plant");

    let modes = r#"stat -c '%a %n' "$KUBECONFIG" "$BYOC_CLUSTER_DIR/kube-controller-manager.kubeconfig" "$BYOC_CLUSTER_DIR/pki" "$BYOC_CLUSTER_DIR"/pki/*.key"#;
    let out = Command::new("bash")
        .args(["-c", r#"umask 000; exec "$@""#, "umask"])
        .arg(byoc_e2e::repo_root().join("hack/local-cluster.sh"))
        .arg("--dir")
        .arg(&dir)
        .args(["exec", "--", "bash", "-c", modes])
        .stdin(Stdio::null())
        .output()
        .expect("run hack/local-cluster.sh");
    let alive = |child: &mut std::process::Child| child.try_wait().expect("try_wait").is_none();
    let (etcd_alive, apiserver_alive) = (alive(&mut etcd), alive(&mut apiserver));
    let _ = etcd.kill();
    let _ = apiserver.kill();
    let _ = etcd.wait();
    let _ = apiserver.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(etcd_alive, "the etcd namesake was ended:\n{stderr}");
    assert!(
        apiserver_alive,
        "the kube-apiserver namesake was ended:\n{stderr}"
    );
    let files: Vec<(&str, &str)> = stdout.lines().filter_map(|l| l.split_once(' ')).collect();
    assert!(files.len() >= 6, "{stdout}");
    for (mode, path) in files {
        let want = if path.ends_with("/pki") { "700" } else { "600" };
        assert_eq!(mode, want, "{path}");
    }
    for part in ["etcd", "pki"] {
        let left = processes_naming(&dir.join(part));
        assert!(left.is_empty(), "the cluster left {left:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

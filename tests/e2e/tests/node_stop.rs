//! After the node cluster stops, on Ctrl-C and after a crash, nothing of it is left on the
//! machine: no process, mount, bridge, iptables rule, network namespace or cgroup.
//!
//! It starts its own node cluster (one node runs per machine), so it runs outside any cluster,
//! after the other node tests: `make e2e-node` runs it as
//! `cargo test -p byoc-e2e --test node_stop -- --ignored`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use byoc_e2e::controller::target_dir;
use byoc_e2e::node::leftovers;
use byoc_e2e::repo_root;

/// The pause image the node pushes to its registry at start: a pod that runs.
const PAUSE: &str = "docker-registry.tools.wmflabs.org/toolforge/byoc-operator/pause:1";

/// `hack/local-cluster.sh --dir DIR --node up`, returned once it printed its kubeconfig.
fn start_node_cluster(dir: &Path) -> Child {
    let mut child = Command::new(repo_root().join("hack/local-cluster.sh"))
        .arg("--dir")
        .arg(dir)
        .args(["--node", "up"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start hack/local-cluster.sh --node up");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines.any(|l| l.is_ok_and(|l| l.starts_with("export KUBECONFIG=")));
    assert!(ready, "the node cluster in {} did not start", dir.display());
    child
}

fn kubectl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .args(args)
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A pod that runs: a container, its network namespace, its mounts and cgroups exist.
fn run_a_pod(dir: &Path) {
    kubectl(
        dir,
        &["run", "p", &format!("--image={PAUSE}"), "--restart=Never"],
    );
    kubectl(
        dir,
        &[
            "wait",
            "--for=jsonpath={.status.phase}=Running",
            "pod/p",
            "--timeout=90s",
        ],
    );
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

fn wait_exit(child: &mut Child, limit: Duration) {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "the cluster did not stop within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Nothing of the node is left: `hack/node.sh leftovers`, and the same facts read directly.
fn assert_nothing_left(dir: &Path) {
    let found = leftovers(dir);
    assert!(found.is_empty(), "left on the machine:\n{found}");
    let bridge = Command::new("ip")
        .args(["link", "show", "byoc0"])
        .output()
        .expect("ip");
    assert!(!bridge.status.success(), "bridge byoc0 still exists");
    for save in ["iptables-save", "ip6tables-save"] {
        let rules = Command::new(save).output().expect(save);
        let rules = String::from_utf8_lossy(&rules.stdout);
        assert!(
            !rules.contains("KUBE-") && !rules.contains("BYOC-NODE") && !rules.contains("byoc0"),
            "{save}: rules left:\n{rules}"
        );
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dir_str = dir.to_string_lossy();
    assert!(
        !mounts
            .lines()
            .any(|l| l.contains(dir_str.as_ref()) || (l.contains(" nsfs ") && l.contains("netns"))),
        "mounts left:\n{mounts}"
    );
}

/// kube-apiserver stopped while it could still reach itself: it listens on the node's bridge
/// address, and once the bridge is gone that address leads off the machine (its shutdown then
/// waited 20 s for its own answer and logged this).
fn assert_the_api_server_stopped_before_the_bridge(dir: &Path) {
    let log = std::fs::read_to_string(dir.join("kube-apiserver.log")).expect("kube-apiserver.log");
    let stop = log.rfind("Shutting down kubernetes service endpoint reconciler");
    assert!(stop.is_some(), "kube-apiserver did not stop gracefully");
    assert!(
        !log[stop.unwrap_or(0)..].contains("RemoveEndpoints() timed out"),
        "kube-apiserver could not reach its own address while it stopped"
    );
}

fn cluster_dir() -> PathBuf {
    target_dir().join("node-stop-cluster")
}

#[test]
#[ignore = "starts its own node cluster (root): make e2e-node"]
fn ctrl_c_removes_everything_the_node_started() {
    let dir = cluster_dir();
    let mut cluster = start_node_cluster(&dir);
    run_a_pod(&dir);
    assert!(
        !leftovers(&dir).is_empty(),
        "leftovers sees nothing of a running node"
    );
    signal(cluster.id(), "INT");
    wait_exit(&mut cluster, Duration::from_secs(90));
    assert_nothing_left(&dir);
    assert_the_api_server_stopped_before_the_bridge(&dir);
}

#[test]
#[ignore = "starts its own node cluster (root): make e2e-node"]
fn the_next_start_after_a_crash_removes_what_it_left() {
    let dir = cluster_dir();
    let mut cluster = start_node_cluster(&dir);
    run_a_pod(&dir);
    // The script dies without stopping anything; the daemons and the pod keep running.
    signal(cluster.id(), "KILL");
    wait_exit(&mut cluster, Duration::from_secs(10));
    assert!(
        !leftovers(&dir).is_empty(),
        "a crash left nothing to clean up"
    );
    let mut cluster = start_node_cluster(&dir);
    run_a_pod(&dir);
    signal(cluster.id(), "TERM");
    wait_exit(&mut cluster, Duration::from_secs(90));
    assert_nothing_left(&dir);
    assert_the_api_server_stopped_before_the_bridge(&dir);
}

//! Helpers for the tests on the local node (`hack/local-cluster.sh --node`, see `hack/node.sh`):
//! the operator's images built by `hack/build-images.sh` and pushed to the node's registry, the
//! chart installed with `helm`, and pods that really run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};

use crate::{eventually, kubeconfig_path, repo_root};

/// The node's registry; an image pushed there as `P` is pulled as `quay.io/P`, `ghcr.io/P` and
/// `docker-registry.tools.wmflabs.org/P`.
pub const REGISTRY: &str = "127.0.0.1:5000";

/// The node's registry as pods reach it: the same storage as [`REGISTRY`], read-only, on the
/// node's address on the pod bridge. An image pushed to [`REGISTRY`] as `P` is pulled as
/// `POD_REGISTRY/P` too (containerd mirrors it to [`REGISTRY`]), and the webhook's registry
/// lookups reach it from its pod over plain HTTP ([`helm_upgrade`] lists it in
/// `policy.registryLookups.insecureRegistries`).
pub const POD_REGISTRY: &str = "198.19.0.1:5000";

/// The Helm release of the chart, in [`crate::controller::SYSTEM_NAMESPACE`].
pub const RELEASE: &str = "byoc-operator";

/// Path (without registry) of the small test image `hack/build-images.sh` pushes: busybox, whose
/// default command stays Running.
pub const TEST_IMAGE_PATH: &str = "toolforge/byoc-operator/test:1";

/// How long a pod may take from create to Running (pull from the local registry, start).
pub const RUNNING_TIMEOUT: Duration = Duration::from_secs(90);

/// One image `hack/build-images.sh --push` pushed.
#[derive(Clone, Debug)]
pub struct PushedImage {
    /// `REGISTRY/PATH` of the image.
    pub repository: String,
    /// Its manifest digest, `sha256:...`.
    pub digest: String,
}

/// Runs a command, returning its stdout; panics with its stderr when it fails.
fn run(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} exited with {}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The images of the project, pushed to [`REGISTRY`] once per test process by name
/// (`byoc-webhook`, `test`, ...). The operator's binaries are the release build already in the
/// target dir (`make e2e-node` builds the images first); a nested cargo would see the test's
/// environment and rebuild them.
pub fn images() -> &'static BTreeMap<String, PushedImage> {
    static IMAGES: OnceLock<BTreeMap<String, PushedImage>> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let release = crate::controller::target_dir()
            .parent()
            .expect("the target dir")
            .join("release");
        let out = run(Command::new(repo_root().join("hack/build-images.sh"))
            .args(["--push", REGISTRY, "--binaries"])
            .arg(release));
        out.lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                (f.len() == 4).then(|| {
                    (
                        f[0].to_owned(),
                        PushedImage {
                            repository: f[1].to_owned(),
                            digest: f[3].to_owned(),
                        },
                    )
                })
            })
            .collect()
    })
}

/// The image `name` pushed by [`images`].
///
/// # Panics
/// When `hack/build-images.sh` did not report it.
pub fn image(name: &str) -> &'static PushedImage {
    images()
        .get(name)
        .unwrap_or_else(|| panic!("hack/build-images.sh pushed no image {name}"))
}

/// The helm binary built by `hack/build-control-plane.sh`.
pub fn helm_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = run(&mut Command::new(
            repo_root().join("hack/build-control-plane.sh"),
        ));
        PathBuf::from(dir.trim()).join("helm")
    })
    .clone()
}

/// The `networkPolicy.apiServerCIDRs` value for the node's cluster: the API server runs on the
/// host and reaches the pods from the node's address on the pod bridge, the host of its URL.
/// (The node's bridge CNI does not enforce NetworkPolicies; the chart needs the value anyway.)
fn api_server_cidrs() -> String {
    let server = crate::server_of(kubeconfig_path());
    let host = server
        .trim_start_matches("https://")
        .rsplit_once(':')
        .map_or(server.as_str(), |(host, _)| host);
    format!("networkPolicy.apiServerCIDRs={{{host}/32}}")
}

/// `helm upgrade --install` of the chart with the images just pushed (by digest), the API
/// server's addresses, [`POD_REGISTRY`] as a plain-HTTP registry for the webhook's lookups and
/// `extra` `--set` values, waiting until every pod of the release is Ready.
pub fn helm_upgrade(extra: &[&str]) {
    let mut cmd = Command::new(helm_binary());
    cmd.arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args(["upgrade", "--install", RELEASE])
        .arg(repo_root().join("charts/byoc-operator"))
        .args([
            "--namespace",
            crate::controller::SYSTEM_NAMESPACE,
            "--create-namespace",
            "--wait",
            "--timeout=5m",
        ])
        .arg(format!(
            "--set=controller.image.digest={}",
            image("byoc-controller").digest
        ))
        .arg(format!(
            "--set=webhook.image.digest={}",
            image("byoc-webhook").digest
        ))
        .arg(format!("--set={}", api_server_cidrs()))
        .arg(format!(
            "--set=policy.registryLookups.insecureRegistries={{{POD_REGISTRY}}}"
        ));
    for value in extra {
        cmd.arg(format!("--set={value}"));
    }
    run(&mut cmd);
}

/// The chart installed once per test process (the first test to ask installs it).
pub fn installed() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| helm_upgrade(&[]));
}

/// Waits until pod `name` in `namespace` is Running and returns it.
///
/// # Panics
/// After [`RUNNING_TIMEOUT`], with the pod's last container state.
pub async fn wait_running(client: &Client, namespace: &str, name: &str) -> Pod {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    eventually(
        &format!("pod {namespace}/{name} Running"),
        RUNNING_TIMEOUT,
        || async {
            let pod = api.get(name).await.map_err(|e| e.to_string())?;
            let status = pod.status.clone().unwrap_or_default();
            if status.phase.as_deref() == Some("Running") {
                Ok(pod)
            } else {
                Err(format!(
                    "phase {:?}, containers {:?}",
                    status.phase, status.container_statuses
                ))
            }
        },
    )
    .await
}

/// The packet counter of the node's FORWARD rule that drops what pods send to any other
/// interface (`hack/node.sh`, chain BYOC-NODE of the mangle table, first rule).
pub fn egress_drops() -> u64 {
    let out = run(Command::new("iptables").args([
        "-w",
        "5",
        "-t",
        "mangle",
        "-L",
        "BYOC-NODE",
        "-v",
        "-x",
        "-n",
    ]));
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        // pkts bytes target prot opt in out source destination
        .find(|f| f.len() > 6 && f[2] == "DROP" && f[5] == "byoc0" && f[6] == "!byoc0")
        .and_then(|f| f[0].parse().ok())
        .unwrap_or_else(|| panic!("no drop rule for the pod bridge in chain BYOC-NODE:\n{out}"))
}

/// The node's guard for packets leaving the machine (`hack/node.sh`, chain BYOC-NODE-OUT of
/// the mangle table) as `iptables -S` prints it; empty when POSTROUTING does not jump to it.
pub fn output_guard() -> Vec<String> {
    let rules = |chain: &str| -> Vec<String> {
        run(Command::new("iptables").args(["-w", "5", "-t", "mangle", "-S", chain]))
            .lines()
            .map(str::to_owned)
            .collect()
    };
    if !rules("POSTROUTING").contains(&"-A POSTROUTING -j BYOC-NODE-OUT".to_owned()) {
        return Vec::new();
    }
    rules("BYOC-NODE-OUT")
}

/// What `hack/node.sh leftovers` finds of a node on this machine (empty: nothing).
pub fn leftovers(cluster_dir: &std::path::Path) -> String {
    let out = Command::new(repo_root().join("hack/node.sh"))
        .arg("--dir")
        .arg(cluster_dir)
        .arg("leftovers")
        .output()
        .expect("run hack/node.sh leftovers");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A host outside the node, made by the test on this machine: a network namespace joined to it
/// by a veth pair (`198.18.200.1/30` here, [`OutsideHost::ADDRESS`] there, inside the
/// benchmarking range that is never routed) with a TCP listener on [`OutsideHost::PORT`]. A
/// packet from a pod that the node failed to drop would reach the listener, so the egress test
/// can fail, and no packet is ever aimed at an address off the machine. Removed on drop.
pub struct OutsideHost {
    listener: std::process::Child,
    accepted: PathBuf,
}

impl OutsideHost {
    /// The outside host's address.
    pub const ADDRESS: &str = "198.18.200.2";
    /// This machine's end of the veth pair.
    const LOCAL_END: &str = "198.18.200.1";
    /// Its listening port.
    pub const PORT: u16 = 8080;
    const NETNS: &str = "byoc-e2e-outside";

    /// Creates the namespace, the veth pair and the listener (removing a crashed run's first).
    pub fn start() -> Self {
        let _ = Command::new("ip")
            .args(["netns", "del", Self::NETNS])
            .status();
        let ip = |args: &[&str]| run(Command::new("ip").args(args));
        ip(&["netns", "add", Self::NETNS]);
        ip(&[
            "link",
            "add",
            "byoc-out0",
            "type",
            "veth",
            "peer",
            "name",
            "byoc-out1",
            "netns",
            Self::NETNS,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", Self::LOCAL_END),
            "dev",
            "byoc-out0",
        ]);
        ip(&["link", "set", "byoc-out0", "up"]);
        let address = format!("{}/30", Self::ADDRESS);
        for args in [
            &["addr", "add", &address, "dev", "byoc-out1"][..],
            &["link", "set", "byoc-out1", "up"],
        ] {
            ip(&[&["netns", "exec", Self::NETNS, "ip"][..], args].concat());
        }
        let accepted =
            std::env::temp_dir().join(format!("byoc-e2e-outside-{}", std::process::id()));
        let _ = std::fs::remove_file(&accepted);
        // One line per accepted connection.
        let script = format!(
            "import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('{}', {}))\ns.listen()\nwhile True:\n    c, a = s.accept()\n    \
             open({:?}, 'a').write(a[0] + '\\n')\n    c.close()\n",
            Self::ADDRESS,
            Self::PORT,
            accepted.display().to_string()
        );
        let listener = Command::new("ip")
            .args([
                "netns",
                "exec",
                Self::NETNS,
                "/usr/bin/python3",
                "-c",
                &script,
            ])
            .spawn()
            .expect("start the outside host's listener");
        let host = Self { listener, accepted };
        // The listener answers this machine (OUTPUT, not FORWARD): the test can fail.
        let target: std::net::SocketAddr = format!("{}:{}", Self::ADDRESS, Self::PORT)
            .parse()
            .expect("socket address");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect_timeout(&target, Duration::from_secs(1)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the outside host's listener did not answer this machine"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        host
    }

    /// The source addresses of the connections the listener accepted from anything but this
    /// machine's own end of the veth pair (whose check at start is accepted too).
    pub fn accepted_from_elsewhere(&self) -> Vec<String> {
        std::fs::read_to_string(&self.accepted)
            .unwrap_or_default()
            .lines()
            .filter(|source| *source != Self::LOCAL_END)
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for OutsideHost {
    fn drop(&mut self) {
        let _ = self.listener.kill();
        let _ = self.listener.wait();
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip")
            .args(["netns", "del", Self::NETNS])
            .status();
        let _ = std::fs::remove_file(&self.accepted);
    }
}

/// A pod's memory as its cgroup on the node counts it (the kubelet's cgroup driver is
/// `cgroupfs`, so the pod's cgroup is a directory `pod<UID>` below the node's cgroup root).
#[derive(Clone, Copy, Debug)]
pub struct PodMemory {
    /// Anonymous memory of the pod's processes, in bytes (`memory.stat`: `total_rss` on cgroup
    /// v1, `anon` on v2): what the processes hold, without the page cache.
    pub rss: u64,
    /// The most the cgroup has been charged since the pod started, page cache included, in bytes
    /// (`memory.max_usage_in_bytes` on v1, `memory.peak` on v2).
    pub peak: u64,
    /// The resident set (`VmRSS`, file-backed pages such as the binary's text included) summed
    /// over the pod's processes, its sandbox's `pause` among them, in bytes: comparable with a
    /// host process's RSS.
    pub processes_rss: u64,
}

/// Reads [`PodMemory`] of the pod with `uid` from this machine's cgroup file system.
pub fn pod_memory(uid: &str) -> Result<PodMemory, String> {
    let name = format!("pod{uid}");
    let (dir, v1) = ["/sys/fs/cgroup/memory", "/sys/fs/cgroup"]
        .iter()
        .find_map(|root| {
            let dir = find_dir(std::path::Path::new(root), &name, 5)?;
            Some((dir, root.ends_with("memory")))
        })
        .ok_or_else(|| format!("no cgroup {name} under /sys/fs/cgroup"))?;
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file))
            .map_err(|e| format!("{}/{file}: {e}", dir.display()))
    };
    let stat = read("memory.stat")?;
    let key = if v1 { "total_rss" } else { "anon" };
    let rss = stat
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .ok_or_else(|| format!("no {key} in {}/memory.stat", dir.display()))?;
    let peak_file = if v1 {
        "memory.max_usage_in_bytes"
    } else {
        "memory.peak"
    };
    let peak = read(peak_file)?
        .trim()
        .parse()
        .map_err(|e| format!("{}/{peak_file}: {e}", dir.display()))?;
    let mut processes_rss = 0;
    for pid in cgroup_pids(&dir) {
        processes_rss += crate::chaos::proc_status_kib(pid, "VmRSS") * 1024;
    }
    Ok(PodMemory {
        rss,
        peak,
        processes_rss,
    })
}

/// The processes in cgroup `dir` and every cgroup below it.
fn cgroup_pids(dir: &std::path::Path) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            pids.extend(cgroup_pids(&entry.path()));
        }
    }
    pids
}

/// The first directory named `name` below `root`, at most `depth` levels down.
fn find_dir(root: &std::path::Path, name: &str, depth: usize) -> Option<PathBuf> {
    let entries = std::fs::read_dir(root).ok()?;
    let dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    if let Some(found) = dirs
        .iter()
        .find(|d| d.file_name().is_some_and(|n| n == name))
    {
        return Some(found.clone());
    }
    if depth == 0 {
        return None;
    }
    dirs.iter().find_map(|d| find_dir(d, name, depth - 1))
}

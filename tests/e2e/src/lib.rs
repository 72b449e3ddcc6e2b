//! Helpers for the end-to-end tests of byoc-operator, which run against a real control plane
//! (etcd, kube-apiserver, kube-controller-manager) started by `hack/local-cluster.sh`:
//!
//! ```text
//! hack/local-cluster.sh exec -- cargo test -p byoc-e2e
//! ```
//!
//! `KUBECONFIG` must name that cluster's kubeconfig. When it is unset, or names a cluster that is
//! not on loopback, every test fails (it does not skip): a green run always means the tests ran
//! against a real API server, and they never touch a cluster someone cares about.
//!
//! The helpers: [`client`] and [`client_as`] (kube clients, the latter impersonating a user),
//! [`kubectl`] and friends (the real `kubectl` binary), [`TestNamespace`] and [`Cleanup`] (objects
//! deleted when the test ends, even when it panics), [`install_crd`] and [`eventually`].

pub mod bench;
pub mod chaos;
pub mod chart;
pub mod cli;
pub mod controller;
pub mod images;
pub mod node;
pub mod registry;
pub mod reports;
pub mod webhook;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, ValidationRule,
};
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, Config, CustomResourceExt, ResourceExt};

/// Label put on every namespace the tests create, so leftovers are easy to find.
pub const TEST_LABEL: &str = "byoc-e2e.toolforge.org/test";

/// How long the helpers wait for the cluster to converge (controllers, caches, discovery).
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

const HOW_TO_RUN: &str = "run the end-to-end tests through the local control plane: \
    `hack/local-cluster.sh exec -- cargo test -p byoc-e2e` \
    (or start it with `hack/local-cluster.sh up` and export the KUBECONFIG it prints)";

/// The kubeconfig of the local cluster, from `KUBECONFIG`.
///
/// # Panics
/// When `KUBECONFIG` is unset or empty, unreadable, or its current context's server is not on
/// loopback (127.0.0.1, ::1 or localhost).
pub fn kubeconfig_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = match std::env::var_os("KUBECONFIG") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => panic!("KUBECONFIG is not set: {HOW_TO_RUN}"),
        };
        let server = server_of(&path);
        let host = server
            .split_once("://")
            .map_or(server.as_str(), |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default();
        // 198.19.0.1: the node's address on its bridge (`hack/local-cluster.sh --node`), where
        // the API server then listens; like loopback, it is only reachable from this machine.
        let loopback = ["127.0.0.1", "[::1]", "localhost", "198.19.0.1"]
            .iter()
            .any(|l| {
                host == *l
                    || host
                        .strip_prefix(l)
                        .is_some_and(|port| port.starts_with(':'))
            });
        assert!(
            loopback,
            "KUBECONFIG={} points at {server}, not at a local cluster; the end-to-end tests \
             create and delete cluster-wide objects, so they only run on loopback: {HOW_TO_RUN}",
            path.display()
        );
        path
    })
}

/// The server URL of the current context of the kubeconfig at `path`.
pub fn server_of(path: &Path) -> String {
    let kc = Kubeconfig::read_from(path)
        .unwrap_or_else(|e| panic!("cannot read KUBECONFIG={}: {e}", path.display()));
    let context = kc.current_context.as_deref().unwrap_or_default();
    let cluster = kc
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .unwrap_or_default();
    kc.clusters
        .iter()
        .find(|c| c.name == cluster)
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .unwrap_or_else(|| {
            panic!(
                "KUBECONFIG={} has no server for its current context",
                path.display()
            )
        })
}

/// The repository root (for `crds/`, `hack/`, ...).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `crds/byocgrants.yaml`.
pub fn crd_file() -> PathBuf {
    repo_root().join("crds/byocgrants.yaml")
}

async fn config() -> Config {
    let path = kubeconfig_path();
    let kc = Kubeconfig::read_from(path)
        .unwrap_or_else(|e| panic!("cannot read KUBECONFIG={}: {e}", path.display()));
    Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("invalid KUBECONFIG={}: {e}", path.display()))
}

/// A kube client with the kubeconfig's (admin) identity.
pub async fn client() -> Client {
    Client::try_from(config().await).expect("kube client")
}

/// A kube client that impersonates `user` (who gets `system:authenticated`, nothing else).
pub async fn client_as(user: &str) -> Client {
    let mut config = config().await;
    config.auth_info.impersonate = Some(user.to_owned());
    Client::try_from(config).expect("kube client")
}

/// A name that no other test (or earlier run) uses: `prefix` and 8 random base-36 characters.
/// Keep `prefix` short and DNS-1123 (it is used for namespaces and cluster-scoped objects).
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut n = RandomState::new().hash_one((
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::process::id(),
        SystemTime::now(),
    ));
    let mut suffix = String::new();
    for _ in 0..8 {
        let digit = u32::try_from(n % 36).unwrap_or_default();
        suffix.push(char::from_digit(digit, 36).unwrap_or('0'));
        n /= 36;
    }
    format!("{prefix}-{suffix}")
}

// ---------------------------------------------------------------------------------------------
// kubectl

/// What a command (`kubectl`, `kubectl-byoc`, `helm`, ...) produced.
#[derive(Debug)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// Asserts that the command succeeded; returns `self` for chaining.
    #[track_caller]
    pub fn success(self) -> Self {
        assert!(self.status.success(), "expected success: {self}");
        self
    }

    /// Asserts that the command failed; returns `self` for chaining.
    #[track_caller]
    pub fn failure(self) -> Self {
        assert!(!self.status.success(), "expected failure: {self}");
        self
    }

    /// Asserts that the command failed and that stderr contains every one of `needles`.
    #[track_caller]
    pub fn fails_with(self, needles: &[&str]) -> Self {
        let out = self.failure();
        for needle in needles {
            assert!(
                out.stderr.contains(needle),
                "expected stderr to contain {needle:?}: {out}"
            );
        }
        out
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited with {}\n--- stdout\n{}--- stderr\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to completion with `stdin` (or nothing) as standard input and collects what it
/// printed.
///
/// # Panics
/// When the program cannot be started.
pub fn run_command(cmd: &mut Command, stdin: Option<&str>) -> Output {
    let command = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{command}` (is it on PATH?): {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait for the command");
    Output {
        command,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the real `kubectl` against the local cluster (explicit `--kubeconfig`, its own discovery
/// cache next to the kubeconfig), with `stdin` as standard input when given.
pub fn kubectl_with_stdin<I, S>(args: I, stdin: Option<&str>) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let kubeconfig = kubeconfig_path();
    let cache_dir = kubeconfig
        .parent()
        .unwrap_or(Path::new("."))
        .join("kubectl-cache");
    run_command(
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(cache_dir)
            .arg("--request-timeout=30s")
            .args(args),
        stdin,
    )
}

/// Runs `kubectl ARGS...` as the admin.
pub fn kubectl<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    kubectl_with_stdin(args, None)
}

/// `kubectl -n NAMESPACE run POD --image=IMAGE --restart=Never`: one bare pod, which stays
/// Pending (there is no kubelet) once admitted.
pub fn kubectl_run(namespace: &str, pod: &str, image: &str) -> Output {
    kubectl(run_args(namespace, pod, image))
}

/// [`kubectl_run`] with `--dry-run=server`: admission decides, no pod is stored.
pub fn kubectl_run_dry(namespace: &str, pod: &str, image: &str) -> Output {
    let mut args = run_args(namespace, pod, image);
    args.push("--dry-run=server".to_owned());
    kubectl(args)
}

fn run_args(namespace: &str, pod: &str, image: &str) -> Vec<String> {
    [
        "-n",
        namespace,
        "run",
        pod,
        &format!("--image={image}"),
        "--restart=Never",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Runs `kubectl ARGS...` as the admin with `manifest` (YAML or JSON) on stdin, e.g.
/// `kubectl_stdin(&["apply", "-f", "-"], ...)`.
pub fn kubectl_stdin(args: &[&str], manifest: &str) -> Output {
    kubectl_with_stdin(args, Some(manifest))
}

/// Runs `kubectl --as=USER ARGS...` (impersonation; the user gets `system:authenticated`).
pub fn kubectl_as(user: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut all = vec![format!("--as={user}")];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    kubectl_with_stdin(all, stdin)
}

/// Parses `kubectl get` table output into (header, rows), each row one cell per header column.
/// Cells are cut at the columns' start offsets, so empty cells stay empty (kubectl prints
/// nothing for a missing printer-column value).
pub fn parse_table(stdout: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut lines = stdout.lines();
    let header = lines.next().unwrap_or_default();
    let mut starts = Vec::new();
    let mut names = Vec::new();
    let mut prev_space = true;
    for (i, c) in header.char_indices() {
        if !c.is_whitespace() && prev_space {
            starts.push(i);
        }
        prev_space = c.is_whitespace();
    }
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(header.len());
        names.push(header[start..end].trim().to_owned());
    }
    let rows = lines
        .map(|line| {
            starts
                .iter()
                .enumerate()
                .map(|(n, &start)| {
                    let end = starts
                        .get(n + 1)
                        .copied()
                        .unwrap_or(line.len())
                        .min(line.len());
                    line.get(start.min(end)..end)
                        .unwrap_or_default()
                        .trim()
                        .to_owned()
                })
                .collect()
        })
        .collect();
    (names, rows)
}

// ---------------------------------------------------------------------------------------------
// Objects that clean up after themselves

/// Deletes objects with `kubectl delete --ignore-not-found --wait=false ARGS...` when dropped,
/// also when the test panics. Example: `Cleanup::new(["byocgrant", name.as_str()])`.
#[must_use = "the objects are deleted when this is dropped"]
pub struct Cleanup(Vec<String>);

impl Cleanup {
    /// Deletes what `kubectl delete ARGS` names, at drop.
    pub fn new<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self(args.into_iter().map(Into::into).collect())
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let mut args = vec![
            "delete".to_owned(),
            "--ignore-not-found".into(),
            "--wait=false".into(),
        ];
        args.extend(self.0.iter().cloned());
        let out = kubectl(&args);
        if !out.status.success() {
            eprintln!("cleanup failed (ignored): {out}");
        }
    }
}

/// A namespace with a unique name, labelled [`TEST_LABEL`], deleted when dropped.
pub struct TestNamespace {
    name: String,
    _cleanup: Cleanup,
}

impl TestNamespace {
    /// Creates `PREFIX-xxxxxxxx`.
    pub async fn create(client: &Client, prefix: &str) -> Self {
        let name = unique_name(prefix);
        let api: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_LABEL.to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        api.create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        Self {
            _cleanup: Cleanup::new(["namespace".to_owned(), name.clone()]),
            name,
        }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits until kube-controller-manager has created the `default` ServiceAccount (pods can
    /// only be created after that).
    pub async fn wait_for_default_service_account(&self, client: &Client) {
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &self.name);
        eventually("the default ServiceAccount", CONVERGE_TIMEOUT, || async {
            match api.get_opt("default").await {
                Ok(Some(sa)) => Ok(sa),
                Ok(None) => Err("not created yet".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// Waiting, the CRD and grants

/// Polls `check` (every 250 ms) until it returns `Ok`, and returns that value.
///
/// # Panics
/// After `timeout`, with `what` and the last error.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// The ByocGrant CRD with the schema node at `path` (a JSON pointer into the CRD) removed, as an
/// older CRD had it, while the guard lives; dropping it applies the committed CRD again.
pub struct LoosenedGrantCrd(());

impl LoosenedGrantCrd {
    /// Removes `path` from the stored ByocGrant CRD.
    pub fn without(path: &str) -> Self {
        let remove = serde_json::json!([{ "op": "remove", "path": path }]);
        kubectl([
            "patch",
            "crd",
            <byoc_api::ByocGrant as kube::CustomResourceExt>::crd_name(),
            "--type=json",
            "-p",
            &remove.to_string(),
        ])
        .success();
        Self(())
    }
}

impl Drop for LoosenedGrantCrd {
    fn drop(&mut self) {
        let out = apply_crd_file();
        if !out.status.success() {
            eprintln!("cannot restore the ByocGrant CRD: {out}");
        }
    }
}

/// `kubectl apply --server-side` of `crds/` (every CRD of the project), as an admin installs or
/// upgrades them (field manager `byoc-e2e`, taking over conflicting fields).
pub fn apply_crd_file() -> Output {
    apply_server_side(&repo_root().join("crds"))
}

/// `kubectl apply --server-side -f FILE` as an admin (field manager `byoc-e2e`, taking over
/// conflicting fields).
pub fn apply_server_side(file: &Path) -> Output {
    kubectl([
        "apply".as_ref(),
        "--server-side".as_ref(),
        "--force-conflicts".as_ref(),
        "--field-manager=byoc-e2e".as_ref(),
        "-f".as_ref(),
        file.as_os_str(),
    ])
}

/// The CEL rules (`x-kubernetes-validations`) on `spec` of the first version of `crd`.
pub fn spec_rules(crd: &CustomResourceDefinition) -> Vec<ValidationRule> {
    crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| {
            s.open_api_v3_schema
                .as_ref()?
                .properties
                .as_ref()?
                .get("spec")
        })
        .and_then(|spec| spec.x_kubernetes_validations.clone())
        .unwrap_or_default()
}

/// Installs `crds/` the way an admin would ([`apply_crd_file`], idempotent; once per test
/// process, the first test to ask does it) and waits until the ByocGrant CRD is Established.
pub async fn install_crd(client: &Client) -> CustomResourceDefinition {
    static APPLIED: OnceLock<()> = OnceLock::new();
    APPLIED.get_or_init(|| {
        apply_crd_file().success();
    });
    wait_crd_established(client, byoc_api::ByocGrant::crd_name()).await
}

/// Waits (up to [`CONVERGE_TIMEOUT`]) until the CRD `name` is Established; returns it.
pub async fn wait_crd_established(client: &Client, name: &str) -> CustomResourceDefinition {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    tokio::time::timeout(
        CONVERGE_TIMEOUT,
        await_condition(api, name, conditions::is_crd_established()),
    )
    .await
    .unwrap_or_else(|_| panic!("CRD {name} not Established after {CONVERGE_TIMEOUT:?}"))
    .unwrap_or_else(|e| panic!("watch CRD {name}: {e}"))
    .unwrap_or_else(|| panic!("CRD {name} was deleted"))
}

/// A ByocGrant manifest (JSON, which `kubectl` reads like YAML) named `name` with `spec`, labelled
/// [`TEST_LABEL`]. `spec` is raw JSON so tests can also write invalid grants.
pub fn grant_manifest(name: &str, spec: serde_json::Value) -> String {
    serde_json::json!({
        "apiVersion": "byoc.toolforge.org/v1alpha1",
        "kind": "ByocGrant",
        "metadata": { "name": name, "labels": { TEST_LABEL: "true" } },
        "spec": spec,
    })
    .to_string()
}

/// Creates grant `name` for `namespace` with `kubectl create` (no `registries`: `anyRegistry:
/// true`); deleted (without waiting) when the guard drops.
pub fn create_grant(
    name: &str,
    namespace: &str,
    registries: &[&str],
    expires: Option<&str>,
) -> Cleanup {
    let mut spec = serde_json::json!({ "namespace": namespace, "reason": "e2e test", "registries": registries });
    if registries.is_empty() {
        spec["anyRegistry"] = serde_json::json!(true);
    }
    if let Some(at) = expires {
        spec["expiresAt"] = serde_json::json!(at);
    }
    kubectl_stdin(&["create", "-f", "-"], &grant_manifest(name, spec)).success();
    Cleanup::new(["byocgrant", name])
}

/// The `byoc.toolforge.org/` labels of a namespace (read leniently, as the operator reads it:
/// some tests give namespaces times k8s-openapi cannot read).
pub async fn byoc_labels(client: &Client, namespace: &str) -> BTreeMap<String, String> {
    let ns = Api::<byoc_api::LeanNamespace>::all(client.clone())
        .get(namespace)
        .await
        .expect("get namespace");
    byoc_api::labels::owned_labels(ns.labels())
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The value of the requirements annotation the controller writes on `namespace`
/// ([`byoc_api::labels::REQUIREMENTS_ANNOTATION`]), if any.
pub async fn requirements_annotation(client: &Client, namespace: &str) -> Option<String> {
    Api::<byoc_api::LeanNamespace>::all(client.clone())
        .get(namespace)
        .await
        .expect("get namespace")
        .metadata
        .annotations?
        .remove(byoc_api::labels::REQUIREMENTS_ANNOTATION)
}

/// Waits until the `byoc.toolforge.org/` label keys of `namespace` are exactly `want`.
pub async fn wait_byoc_labels(client: &Client, namespace: &str, want: &[&str]) {
    let want: std::collections::BTreeSet<String> = want.iter().map(|k| (*k).to_owned()).collect();
    eventually(
        &format!("labels {want:?} on {namespace}"),
        CONVERGE_TIMEOUT,
        || async {
            let got: std::collections::BTreeSet<String> =
                byoc_labels(client, namespace).await.into_keys().collect();
            if got == want {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        },
    )
    .await;
}

/// The value of `KEY=value` in `hack/versions.env` (e.g. `KUBERNETES_VERSION`).
pub fn pinned_version(key: &str) -> String {
    let path = repo_root().join("hack/versions.env");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix(key)?
                .strip_prefix('=')
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("{key} is not set in {}", path.display()))
}

/// Writes to `path` a kubeconfig for the local cluster's server and CA that authenticates as
/// `user` with `token` (e.g. from `kubectl create token`).
pub fn write_token_kubeconfig(user: &str, token: &str, path: &Path) {
    let admin = Kubeconfig::read_from(kubeconfig_path()).expect("read KUBECONFIG");
    let cluster = admin
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .expect("a cluster in KUBECONFIG");
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "local", "cluster": {
            "server": cluster.server,
            "certificate-authority-data": cluster.certificate_authority_data,
        }}],
        "users": [{ "name": user, "user": { "token": token } }],
        "contexts": [{ "name": user, "context": { "cluster": "local", "user": user } }],
        "current-context": user,
    });
    std::fs::write(path, kubeconfig.to_string())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Waits until `user` may `verb` `resource` (cluster-wide, or in `namespace`): RBAC caches,
/// and the aggregation of ClusterRoles, take a moment.
pub async fn wait_can(user: &str, verb: &str, resource: &str, namespace: Option<&str>) {
    eventually(
        &format!("{user} may {verb} {resource}"),
        CONVERGE_TIMEOUT,
        || async {
            let mut args = vec!["auth", "can-i", verb, resource];
            if let Some(ns) = namespace {
                args.extend(["-n", ns]);
            }
            let out = kubectl_as(user, &args, None);
            if out.stdout.trim() == "yes" {
                Ok(())
            } else {
                Err(out.to_string())
            }
        },
    )
    .await;
}

/// Writes to `path` a copy of the local cluster's kubeconfig whose user impersonates `user`
/// (kubeconfig `as:`, which kubectl and kube-rs honour; the user gets `system:authenticated`)
/// and whose context's namespace is `namespace`.
pub fn write_impersonating_kubeconfig(user: &str, namespace: &str, path: &Path) {
    let text = std::fs::read_to_string(kubeconfig_path()).expect("read KUBECONFIG");
    let mut kubeconfig: serde_json::Value =
        serde_saphyr::from_str(&text).expect("KUBECONFIG is YAML");
    for entry in kubeconfig["users"].as_array_mut().into_iter().flatten() {
        entry["user"]["as"] = serde_json::json!(user);
    }
    for entry in kubeconfig["contexts"].as_array_mut().into_iter().flatten() {
        entry["context"]["namespace"] = serde_json::json!(namespace);
    }
    std::fs::write(path, kubeconfig.to_string())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Stops a child process with SIGTERM (SIGKILL after 20 s) and returns how it exited; `what`
/// names it in the message when it had to be killed.
pub fn terminate(child: &mut std::process::Child, what: &str) -> ExitStatus {
    if let Ok(Some(status)) = child.try_wait() {
        return status;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                eprintln!("{what} ignored SIGTERM for 20s; killing it");
                let _ = child.kill();
                return child.wait().expect("wait for the child process");
            }
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released for the process under test).
pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// A plain HTTP/1.1 GET (2 s to connect, 5 s to answer): the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A tenant with only the built-in `edit` role in `namespace` (a RoleBinding): what a tool's
/// maintainer has. Returns its user name (for [`kubectl_as`]) and what removes the binding.
pub async fn edit_tenant(namespace: &str) -> (String, Cleanup) {
    let tenant = unique_name("tenant");
    let binding = unique_name("edit");
    kubectl([
        "-n",
        namespace,
        "create",
        "rolebinding",
        &binding,
        "--clusterrole=edit",
        &format!("--user={tenant}"),
    ])
    .success();
    wait_can(&tenant, "create", "pods", Some(namespace)).await;
    let cleanup = Cleanup::new(["-n", namespace, "rolebinding", &binding]);
    (tenant, cleanup)
}

//! Fixtures for the fault, abuse and soak tests (`tests/faults.rs`, `tests/abuse.rs`,
//! `tests/soak.rs`): a `byoc-webhook` process the test can kill, restart and rotate the
//! certificate of; a small HTTPS client that speaks raw HTTP/1.1 (so tests control every byte
//! and every connection); restarts of the control plane's components; pod-create load through
//! the API server; and process memory from `/proc`.
//!
//! [`WebhookProcess`] serves its certificate the way a Kubernetes Secret volume does: `tls.crt`
//! and `tls.key` are symlinks into `..data`, itself a symlink to a timestamped directory, and a
//! rotation writes a new directory and swaps `..data` atomically.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::{Api, Client};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, MutexGuard};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::webhook::{NAMESPACES_WEBHOOK, PODS_WEBHOOK};
use crate::{free_port, http_get, kubectl, kubectl_stdin, repo_root, unique_name};

/// An image every namespace may use.
pub const PLATFORM_IMAGE: &str = "docker-registry.tools.wmflabs.org/toolforge-python311:latest";

/// Tests that break the cluster on purpose (kill the webhook, restart the API server) take this
/// first, so no other test of the same binary runs meanwhile.
pub async fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::const_new(());
    LOCK.lock().await
}

// ---------------------------------------------------------------------------------------------
// The control plane

/// Restarts one component of the local cluster with `hack/local-cluster.sh restart`: SIGTERM
/// (or SIGKILL when `kill`), then the same command line, ports and data; returns once it is
/// ready again.
///
/// # Panics
/// When `BYOC_CLUSTER_DIR` is not set (run through `hack/local-cluster.sh exec`) or the restart
/// fails.
pub fn restart_component(name: &str, kill: bool) {
    let dir = std::env::var("BYOC_CLUSTER_DIR").unwrap_or_else(|_| {
        panic!(
            "BYOC_CLUSTER_DIR is not set: run the fault tests through hack/local-cluster.sh exec"
        )
    });
    let mut cmd = Command::new(repo_root().join("hack/local-cluster.sh"));
    cmd.args(["--dir", &dir, "restart"]);
    if kill {
        cmd.arg("--kill");
    }
    let out = cmd.arg(name).output().expect("run hack/local-cluster.sh");
    assert!(
        out.status.success(),
        "restarting {name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The pid of a control-plane component, from the local cluster's state dir (`run/NAME.pid`
/// holds `PID START`).
pub fn component_pid(name: &str) -> u32 {
    let dir = std::env::var("BYOC_CLUSTER_DIR").expect("BYOC_CLUSTER_DIR");
    let path = Path::new(&dir).join("run").join(format!("{name}.pid"));
    std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// A fault-injecting proxy to the API server

/// A TCP proxy on loopback to the local cluster's API server, which a test can break: while
/// broken, every connection through it is cut and new ones are closed as soon as they are
/// accepted (the client sees a reset or an early EOF, as when the API server is unreachable).
/// TLS passes through untouched (the API server's certificate is for `127.0.0.1`). Stopped
/// when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    broken: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a working proxy to the API server of [`kubeconfig_path`](crate::kubeconfig_path).
    pub async fn start() -> Self {
        let upstream = crate::server_of(crate::kubeconfig_path());
        let upstream = upstream
            .strip_prefix("https://")
            .unwrap_or(&upstream)
            .trim_end_matches('/')
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let (broken, watch) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *watch.borrow() {
                    drop(client);
                    continue;
                }
                let mut watch = watch.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watch.wait_for(|broken| *broken) => {}
                    }
                });
            }
        });
        Self { addr, broken, task }
    }

    /// Cuts every connection and refuses new ones until [`Self::heal`].
    pub fn break_connections(&self) {
        self.broken.send_replace(true);
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.broken.send_replace(false);
    }

    /// Writes a copy of the cluster's kubeconfig that reaches the API server through this
    /// proxy to `path`.
    pub fn write_kubeconfig(&self, path: &Path) {
        let mut kubeconfig =
            kube::config::Kubeconfig::read_from(crate::kubeconfig_path()).expect("read KUBECONFIG");
        for cluster in kubeconfig
            .clusters
            .iter_mut()
            .filter_map(|c| c.cluster.as_mut())
        {
            cluster.server = Some(format!("https://{}", self.addr));
        }
        let text = serde_json::to_string(&kubeconfig).expect("a kubeconfig as JSON");
        std::fs::write(path, text).expect("write the proxy's kubeconfig");
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.break_connections();
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Memory

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`), 0 when the process is gone.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(field)?
                    .strip_prefix(':')?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// The webhook process

/// How a [`WebhookProcess`] runs.
#[derive(Clone, Debug)]
pub struct WebhookOptions {
    /// `enforce`, `warn` or `audit`.
    pub mode: &'static str,
    /// `--tls-reload-interval`.
    pub reload_interval: &'static str,
    /// `--max-connections`.
    pub max_connections: u32,
    /// `--idle-timeout`.
    pub idle_timeout: &'static str,
    /// `--max-connections-per-source`.
    pub max_connections_per_source: u32,
    /// `--max-connection-age`.
    pub max_connection_age: &'static str,
    /// `--watch-unhealthy-after`.
    pub watch_unhealthy_after: &'static str,
    /// The kubeconfig the webhook reads (e.g. one through a [`FaultProxy`]); the cluster's
    /// when `None`.
    pub kubeconfig: Option<PathBuf>,
    /// The soft open-files limit the process starts with (through `prlimit`), as a container
    /// runtime may set it; inherited when `None`.
    pub open_files: Option<u64>,
    /// More policy configuration (YAML), after `mode`.
    pub policy: String,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        Self {
            mode: "enforce",
            reload_interval: "200ms",
            max_connections: 4096,
            idle_timeout: "120s",
            max_connections_per_source: 512,
            max_connection_age: "10m",
            watch_unhealthy_after: "30s",
            kubeconfig: None,
            open_files: None,
            policy: String::new(),
        }
    }
}

/// A `byoc-webhook` process on fixed loopback ports, which the test may kill and start again;
/// optionally registered with the API server. Dropping it removes the registration and stops
/// the process.
pub struct WebhookProcess {
    dir: PathBuf,
    listen: SocketAddr,
    admin: SocketAddr,
    options: WebhookOptions,
    child: Option<Child>,
    registration: Option<String>,
    generation: u32,
}

impl WebhookProcess {
    /// Creates the certificates and configuration and starts the webhook; returns once
    /// `/readyz` answers 200 (the namespace cache has synced).
    pub fn start(options: WebhookOptions) -> Self {
        let dir = std::env::temp_dir().join(unique_name("byoc-chaos"));
        std::fs::create_dir_all(dir.join("certs")).expect("create the webhook directory");
        make_ca(&dir);
        let mut webhook = Self {
            dir,
            listen: free_port(),
            admin: free_port(),
            options,
            child: None,
            registration: None,
            generation: 0,
        };
        webhook.rotate_certificate();
        std::fs::write(
            webhook.dir.join("policy.yaml"),
            format!("mode: {}\n{}", webhook.options.mode, webhook.options.policy),
        )
        .expect("write the policy");
        webhook.spawn();
        webhook.wait_ready(Duration::from_secs(60));
        webhook
    }

    /// The HTTPS address.
    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    /// The admin (plain HTTP) address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The process id (panics when it is not running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the webhook runs").id()
    }

    /// Current resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS")
    }

    /// Peak resident memory in KiB since the process started.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM")
    }

    /// The log of the process so far (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("webhook.log")).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("webhook.log"))
            .expect("open the webhook log");
        let live = self.dir.join("certs");
        let mut command = match self.options.open_files {
            None => Command::new(binary()),
            Some(soft) => {
                // prlimit execs the webhook: same process, the soft limit lowered, the hard kept.
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={soft}:")).arg("--").arg(binary());
                c
            }
        };
        let child = command
            .arg("--config")
            .arg(self.dir.join("policy.yaml"))
            .arg(format!("--listen={}", self.listen))
            .arg(format!("--admin-addr={}", self.admin))
            .arg("--tls-cert")
            .arg(live.join("tls.crt"))
            .arg("--tls-key")
            .arg(live.join("tls.key"))
            .arg(format!(
                "--tls-reload-interval={}",
                self.options.reload_interval
            ))
            .arg(format!(
                "--max-connections={}",
                self.options.max_connections
            ))
            .arg(format!("--idle-timeout={}", self.options.idle_timeout))
            .arg(format!(
                "--max-connections-per-source={}",
                self.options.max_connections_per_source
            ))
            .arg(format!(
                "--max-connection-age={}",
                self.options.max_connection_age
            ))
            .arg(format!(
                "--watch-unhealthy-after={}",
                self.options.watch_unhealthy_after
            ))
            .env(
                "KUBECONFIG",
                self.options
                    .kubeconfig
                    .as_deref()
                    .unwrap_or_else(|| crate::kubeconfig_path()),
            )
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary().display()));
        self.child = Some(child);
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok((200, _)) = http_get(self.admin, "/readyz") {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("byoc-webhook exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "byoc-webhook not ready after {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process with SIGKILL (no draining) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same ports with the same certificate files, and waits
    /// until it is ready.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready(Duration::from_secs(60));
    }

    /// `GET /readyz` on the admin port: the status (0 when it does not answer) and the body.
    pub fn readyz(&self) -> (u16, String) {
        http_get(self.admin, "/readyz").unwrap_or((0, String::new()))
    }

    /// `GET /metrics` on the admin port.
    pub fn metrics(&self) -> String {
        http_get(self.admin, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// The value of `SAMPLE` (name and labels, as printed) in `/metrics`; 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Writes a new key and leaf certificate (same CA) the way the kubelet updates a Secret
    /// volume: a new timestamped directory, then an atomic swap of the `..data` symlink. Returns
    /// the new certificate (DER).
    pub fn rotate_certificate(&mut self) -> Vec<u8> {
        self.generation += 1;
        let certs = self.dir.join("certs");
        let version = format!("..v{}", self.generation);
        let target = certs.join(&version);
        std::fs::create_dir_all(&target).expect("create the certificate version directory");
        make_leaf(&self.dir, &target);
        let tmp = certs.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&version, &tmp).expect("symlink ..data_tmp");
        std::fs::rename(&tmp, certs.join("..data")).expect("swap ..data");
        for file in ["tls.crt", "tls.key"] {
            let link = certs.join(file);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(file), &link)
                    .expect("symlink the certificate file");
            }
        }
        let pem = std::fs::read(target.join("tls.crt")).expect("read the new certificate");
        CertificateDer::from_pem_slice(&pem)
            .expect("PEM certificate")
            .to_vec()
    }

    /// A client trusting this webhook's CA.
    pub fn client(&self) -> HttpsClient {
        HttpsClient::new(self.listen, &self.dir.join("ca.crt"))
    }

    /// Registers the webhook with the API server exactly as `make run` and the chart do: the
    /// chart's ValidatingWebhookConfiguration rendered for this process's URL and CA by
    /// `hack/webhook-registration.sh` (labelled [`TEST_LABEL`](crate::TEST_LABEL)), then waits
    /// until the API server calls it.
    pub async fn register(&mut self) {
        let name = unique_name("byoc-chaos");
        let script = repo_root().join("hack/webhook-registration.sh");
        let out = Command::new(&script)
            .args(["--name", &name])
            .args(["--url", &format!("https://{}", self.listen)])
            .arg("--ca-file")
            .arg(self.dir.join("ca.crt"))
            .args(["--label", &format!("{}=true", crate::TEST_LABEL)])
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let configuration = String::from_utf8(out.stdout).expect("the rendered YAML is UTF-8");
        kubectl_stdin(&["create", "-f", "-"], &configuration).success();
        self.registration = Some(name);
        let probe = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": unique_name("probe"), "labels": {"byoc.toolforge.org/any": "never"}}})
        .to_string();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &probe);
            if !out.status.success() && out.stderr.contains(NAMESPACES_WEBHOOK) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the API server does not call the webhook: {out}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for WebhookProcess {
    fn drop(&mut self) {
        if let Some(name) = self.registration.take() {
            let out = kubectl([
                "delete",
                "validatingwebhookconfiguration",
                &name,
                "--ignore-not-found",
            ]);
            if !out.status.success() {
                eprintln!("could not remove the webhook registration {name}: {out}");
            }
        }
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- byoc-webhook log ({}), last 60 lines:",
                self.dir.display()
            );
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("{}", lines[lines.len().saturating_sub(60)..].join("\n"));
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The `byoc-webhook` binary, built once per test process (a no-op when it is fresh).
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(repo_root()).args([
            "build",
            "--quiet",
            "--message-format=json",
            "-p",
            "byoc-webhook",
            "--bin",
            "byoc-webhook",
        ]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let out = cmd
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build");
        assert!(out.status.success(), "cargo build -p byoc-webhook failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find_map(|m| Some(PathBuf::from(m.get("executable")?.as_str()?)))
            .expect("cargo build reported no byoc-webhook executable")
    })
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
];

fn make_ca(dir: &Path) {
    let args = [
        &["req", "-x509", "-new"][..],
        &EC,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=byoc-chaos-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    ]
    .concat();
    openssl(dir, &args);
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
    )
    .expect("write leaf.ext");
}

/// A new key and certificate for 127.0.0.1 signed by the CA in `dir`, written to `target`.
fn make_leaf(dir: &Path, target: &Path) {
    let key = target.join("tls.key");
    let crt = target.join("tls.crt");
    let csr = target.join("tls.csr");
    let args = [
        &["req", "-new"][..],
        &EC,
        &[
            "-keyout",
            path_str(&key),
            "-out",
            path_str(&csr),
            "-subj",
            "/CN=byoc-webhook",
        ],
    ]
    .concat();
    openssl(dir, &args);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            path_str(&csr),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            &format!("{}", next_serial()),
            "-days",
            "1",
            "-sha256",
            "-extfile",
            "leaf.ext",
            "-out",
            path_str(&crt),
        ],
    );
    let _ = std::fs::remove_file(csr);
}

fn next_serial() -> u64 {
    static SERIAL: AtomicU64 = AtomicU64::new(1000);
    SERIAL.fetch_add(1, Ordering::Relaxed)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

// ---------------------------------------------------------------------------------------------
// A raw HTTPS/1.1 client

/// Opens TLS connections to a webhook, trusting its CA.
#[derive(Clone)]
pub struct HttpsClient {
    addr: SocketAddr,
    connector: TlsConnector,
}

impl HttpsClient {
    /// A client for `addr` trusting the PEM CA in `ca`.
    pub fn new(addr: SocketAddr, ca: &Path) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = RootCertStore::empty();
        let der = CertificateDer::from_pem_file(ca).expect("read the CA certificate");
        roots.add(der).expect("add the CA certificate");
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Every connection makes a full handshake and sees the certificate served now (a
        // resumed TLS session reports the certificate of the session it resumes), as the API
        // server's Go client does.
        config.resumption = rustls::client::Resumption::disabled();
        Self {
            addr,
            connector: TlsConnector::from(Arc::new(config)),
        }
    }

    /// A plain TCP connection to the webhook port (no TLS).
    pub async fn tcp(&self) -> io::Result<TcpStream> {
        TcpStream::connect(self.addr).await
    }

    /// A new TLS connection.
    pub async fn connect(&self) -> io::Result<Connection> {
        self.handshake(self.tcp().await?).await
    }

    /// A new TLS connection from the local address `from` (e.g. `127.0.0.2`, so that the
    /// webhook sees another source than the API server on `127.0.0.1`).
    pub async fn connect_from(&self, from: std::net::IpAddr) -> io::Result<Connection> {
        let socket = match from {
            std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(from, 0))?;
        self.handshake(socket.connect(self.addr).await?).await
    }

    async fn handshake(&self, tcp: TcpStream) -> io::Result<Connection> {
        let name = ServerName::IpAddress(self.addr.ip().into());
        let tls = self.connector.connect(name, tcp).await?;
        Ok(Connection {
            stream: BufReader::new(tls),
        })
    }
}

/// One keep-alive HTTPS connection.
pub struct Connection {
    stream: BufReader<TlsStream<TcpStream>>,
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
    /// Whether the server said `Connection: close` (it closes the connection after this).
    pub close: bool,
}

impl Response {
    /// The body as JSON (panics if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

impl Connection {
    /// The certificate the server presented (DER).
    pub fn peer_certificate(&self) -> Vec<u8> {
        self.stream
            .get_ref()
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default()
    }

    /// Writes raw bytes.
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let s = self.stream.get_mut();
        s.write_all(bytes).await?;
        s.flush().await
    }

    /// `POST /validate` with `body`; reads the response.
    pub async fn post(&mut self, body: &[u8]) -> io::Result<Response> {
        self.post_to("/validate", body).await
    }

    /// `POST path` with `body`; reads the response.
    pub async fn post_to(&mut self, path: &str, body: &[u8]) -> io::Result<Response> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        let s = self.stream.get_mut();
        s.write_all(head.as_bytes()).await?;
        s.write_all(body).await?;
        s.flush().await?;
        self.read_response().await
    }

    /// Reads one response (`Content-Length` or chunked body).
    pub async fn read_response(&mut self) -> io::Result<Response> {
        let mut line = String::new();
        if self.stream.read_line(&mut line).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("not an HTTP status line: {line:?}")))?;
        let mut length = None;
        let mut chunked = false;
        let mut close = false;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in the headers",
                ));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse::<usize>().ok();
                } else if name.eq_ignore_ascii_case("connection") {
                    close = value.eq_ignore_ascii_case("close");
                } else if name.eq_ignore_ascii_case("transfer-encoding")
                    && value.eq_ignore_ascii_case("chunked")
                {
                    chunked = true;
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.stream.read_line(&mut line).await?;
                let size = usize::from_str_radix(line.trim(), 16)
                    .map_err(|e| io::Error::other(format!("chunk size {line:?}: {e}")))?;
                let mut chunk = vec![0; size + 2];
                self.stream.read_exact(&mut chunk).await?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            self.stream.read_exact(&mut body).await?;
        }
        Ok(Response {
            status,
            body,
            close,
        })
    }

    /// Waits until the server closes the connection (EOF or reset), up to `limit`; returns how
    /// long that took, or `None` when the connection was still open at `limit`.
    pub async fn closed_within(&mut self, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        let mut buf = [0u8; 1024];
        loop {
            let left = limit.checked_sub(started.elapsed())?;
            match tokio::time::timeout(left, self.stream.read(&mut buf)).await {
                Err(_) => return None,
                Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// Waits until the server closes `stream` (EOF or reset), up to `limit`.
pub async fn tcp_closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        let left = limit.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// AdmissionReviews

/// An `admission.k8s.io/v1` AdmissionReview for a Pod CREATE in `namespace` with `images`.
pub fn pod_review(uid: &str, namespace: &str, images: &[&str]) -> Value {
    let containers: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
        .collect();
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "p",
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": namespace},
                       "spec": {"containers": containers}},
        }
    })
}

/// The `response` of an AdmissionReview answer, after checking it is one.
pub fn admission_response(review: &Value) -> &Value {
    assert_eq!(
        review["apiVersion"], "admission.k8s.io/v1",
        "not an AdmissionReview: {review}"
    );
    assert_eq!(review["kind"], "AdmissionReview", "{review}");
    let response = &review["response"];
    assert!(response["allowed"].is_boolean(), "{review}");
    response
}

// ---------------------------------------------------------------------------------------------
// Pod-create load through the API server

/// How one pod create through the API server ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted (server-side dry run: nothing is stored).
    Admitted,
    /// Refused by the byoc webhook's policy.
    Denied,
    /// The API server could not call the webhook (`failurePolicy: Fail`).
    WebhookUnreachable,
    /// Anything else (the message).
    Other(String),
}

/// How long a change may take to reach the webhook's cache once the API server shows it.
pub const PROPAGATION: Duration = Duration::from_secs(10);

/// Waits (up to [`PROPAGATION`]) until a pod with `image` in `namespace` gets `want` from the
/// webhook; returns how long that took.
pub async fn wait_outcome(
    client: &Client,
    namespace: &str,
    image: &str,
    want: Outcome,
) -> Duration {
    let started = Instant::now();
    crate::eventually(
        &format!("{image} in {namespace} to be {want:?}"),
        PROPAGATION,
        || async {
            match try_pod(client, namespace, image).await {
                got if got == want => Ok(()),
                got => Err(format!("{got:?}")),
            }
        },
    )
    .await;
    started.elapsed()
}

/// A server-side dry-run create of a pod with `image` in `namespace`: goes through every
/// admission step, stores nothing.
pub async fn try_pod(client: &Client, namespace: &str, image: &str) -> Outcome {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "load-"},
        "spec": {"containers": [{"name": "app", "image": image}]},
    }))
    .expect("a Pod");
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match api.create(&params, &pod).await {
        Ok(_) => Outcome::Admitted,
        Err(kube::Error::Api(status)) => {
            let message = status.message.clone();
            if message.contains(&format!("admission webhook \"{PODS_WEBHOOK}\" denied")) {
                Outcome::Denied
            } else if message.contains(&format!("failed calling webhook \"{PODS_WEBHOOK}\"")) {
                Outcome::WebhookUnreachable
            } else {
                Outcome::Other(format!("{}: {message}", status.code))
            }
        }
        Err(e) => Outcome::Other(e.to_string()),
    }
}

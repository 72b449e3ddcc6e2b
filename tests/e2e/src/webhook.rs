//! A running `byoc-webhook`, registered with the local cluster the way `make run` and the Helm
//! chart register it, for end-to-end tests.
//!
//! [`Webhook::start`] builds the binary (a no-op when it is fresh), generates a CA and a serving
//! certificate for 127.0.0.1 with `openssl`, starts the webhook on free loopback ports, waits
//! for `/readyz`, registers a ValidatingWebhookConfiguration (URL client config with the CA
//! bundle, `failurePolicy: Fail`) and waits until the API server calls it. Dropping it removes
//! the registration, stops the process and, when the test failed, prints the webhook's log.
//!
//! The registration covers every namespace except the exempt ones, exactly as deployed, so only
//! one fixture may be registered at a time: [`Webhook::start`] waits for the previous one of the
//! same test binary to be dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::{kubectl, kubectl_stdin, unique_name};

/// Namespaces the policy and the registration leave alone (the policy's defaults).
pub const EXEMPT_NAMESPACES: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "byoc-system",
];

/// The name of the webhook entry for pods and workloads, shown by `kubectl` in denials.
pub const PODS_WEBHOOK: &str = "pods.byoc.toolforge.org";

/// The name of the webhook entry guarding namespace labels.
pub const NAMESPACES_WEBHOOK: &str = "namespaces.byoc.toolforge.org";

/// The service account whose identity may write `byoc.toolforge.org/` labels.
pub const CONTROLLER_USER: &str = "system:serviceaccount:byoc-system:byoc-controller";

/// How the webhook is run.
#[derive(Clone, Debug)]
pub struct Options {
    /// `enforce`, `warn` or `audit`.
    pub mode: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Self { mode: "enforce" }
    }
}

/// A running, registered webhook; unregistered and stopped when dropped.
pub struct Webhook {
    child: Child,
    configuration: String,
    dir: PathBuf,
    admin: SocketAddr,
    _exclusive: OwnedMutexGuard<()>,
}

impl Webhook {
    /// Starts the webhook with `options` and registers it.
    ///
    /// # Panics
    /// When the binary cannot be built, the webhook does not become ready within 60 s, or the
    /// API server does not call it within 60 s.
    pub async fn start(options: Options) -> Self {
        static ONE_AT_A_TIME: OnceLock<Arc<Mutex<()>>> = OnceLock::new();
        let exclusive = ONE_AT_A_TIME
            .get_or_init(|| Arc::new(Mutex::new(())))
            .clone()
            .lock_owned()
            .await;

        let name = unique_name("byoc-e2e-webhook");
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        generate_certificates(&dir);
        let config = dir.join("policy.yaml");
        std::fs::write(&config, format!("mode: {}\n", options.mode))
            .unwrap_or_else(|e| panic!("write {}: {e}", config.display()));

        let (listen, admin) = (free_port(), free_port());
        let log = std::fs::File::create(dir.join("webhook.log")).expect("create the webhook log");
        let child = Command::new(binary())
            .arg("--config")
            .arg(&config)
            .arg(format!("--listen={listen}"))
            .arg(format!("--admin-addr={admin}"))
            .arg("--tls-cert")
            .arg(dir.join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.join("tls.key"))
            .env("KUBECONFIG", crate::kubeconfig_path())
            .env("RUST_LOG", "info,byoc_webhook=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary().display()));
        let mut webhook = Self {
            child,
            configuration: name,
            dir,
            admin,
            _exclusive: exclusive,
        };

        webhook.wait_ready(Duration::from_secs(60));
        webhook.register(listen);
        webhook.wait_until_called(Duration::from_secs(60)).await;
        webhook
    }

    /// The webhook's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("webhook.log")).unwrap_or_default()
    }

    /// The webhook's Prometheus metrics.
    pub fn metrics(&self) -> String {
        http_get(self.admin, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// The value of the sample `NAME{LABELS}` in [`Self::metrics`] (0 when absent).
    pub fn metric(&self, sample: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok((200, _)) = http_get(self.admin, "/readyz") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "byoc-webhook exited with {status} during start-up:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "byoc-webhook not ready after {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn register(&self, listen: SocketAddr) {
        let ca = std::fs::read(self.dir.join("ca.crt")).expect("read ca.crt");
        let client_config = json!({
            "url": format!("https://{listen}/validate"),
            // ByteString serializes as base64, as the API expects.
            "caBundle": k8s_openapi::ByteString(ca),
        });
        let not_exempt = json!({"matchExpressions": [{
            "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": EXEMPT_NAMESPACES,
        }]});
        let rule = |group: &str, resources: &[&str], scope: &str| {
            json!({"apiGroups": [group], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                   "resources": resources, "scope": scope})
        };
        let common = json!({
            "clientConfig": client_config,
            "namespaceSelector": not_exempt,
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "timeoutSeconds": 5,
            "admissionReviewVersions": ["v1"],
        });
        let entry = |name: &str, rules: Value| {
            let mut e = common.clone();
            e["name"] = json!(name);
            e["rules"] = rules;
            e
        };
        let configuration = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": self.configuration, "labels": {crate::TEST_LABEL: "true"}},
            "webhooks": [
                entry(PODS_WEBHOOK, json!([
                    rule("", &["pods", "pods/ephemeralcontainers", "replicationcontrollers", "podtemplates"], "Namespaced"),
                    rule("apps", &["deployments", "replicasets", "statefulsets", "daemonsets"], "Namespaced"),
                    rule("batch", &["jobs", "cronjobs"], "Namespaced"),
                ])),
                entry(NAMESPACES_WEBHOOK, json!([rule("", &["namespaces"], "Cluster")])),
            ],
        });
        kubectl_stdin(&["create", "-f", "-"], &configuration.to_string()).success();
    }

    /// The API server loads webhook configurations asynchronously: waits until a server-side
    /// dry run of a namespace carrying a `byoc.toolforge.org/` label (refused in every mode) is
    /// refused by this webhook.
    async fn wait_until_called(&self, timeout: Duration) {
        let probe = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": unique_name("probe"), "labels": {"byoc.toolforge.org/any": "never"}}})
        .to_string();
        let deadline = Instant::now() + timeout;
        loop {
            let out = kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &probe);
            if !out.status.success() && out.stderr.contains(NAMESPACES_WEBHOOK) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the API server did not call the webhook within {timeout:?}; last: {out}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        // Unregister first: without its process, the registration would refuse every pod.
        let out = kubectl([
            "delete",
            "validatingwebhookconfiguration",
            &self.configuration,
            "--ignore-not-found",
        ]);
        if !out.status.success() {
            eprintln!("could not remove the webhook registration: {out}");
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- byoc-webhook log ({})\n{}",
                self.dir.display(),
                self.log()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The `byoc-webhook` binary, built once per test run (cargo makes this a no-op when fresh).
fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(crate::repo_root())
            .args([
                "build",
                "--quiet",
                "--message-format=json",
                "-p",
                "byoc-webhook",
                "--bin",
                "byoc-webhook",
            ])
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

/// A CA and a serving certificate for 127.0.0.1, in `dir`.
fn generate_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
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
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509", "-new"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "1",
                "-subj",
                "/CN=byoc-e2e-ca",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req", "-new"][..],
            &ec,
            &[
                "-keyout",
                "tls.key",
                "-out",
                "tls.csr",
                "-subj",
                "/CN=byoc-webhook",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("tls.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
    )
    .expect("write tls.ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-sha256",
        "-extfile",
        "tls.ext",
        "-out",
        "tls.crt",
    ]);
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address")
}

/// A plain HTTP/1.1 GET: the status code and the body.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
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

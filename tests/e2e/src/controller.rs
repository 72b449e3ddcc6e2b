//! The controller as a child process, for end-to-end tests: the built `byoc-controller` binary,
//! running with a token of its own ServiceAccount (so every test also proves that the RBAC of
//! `hack/manifests/controller.yaml` is enough), on a free admin port, stopped with SIGTERM when
//! dropped.
//!
//! The controller acts on the whole cluster, so two controllers must never run unless a test
//! wants exactly that. Tests that just need "a controller" share one ([`shared`]); a test that
//! starts and stops its own processes (restart, two replicas) takes [`exclusive`] access, which
//! waits until no shared controller runs.
//!
//! Build the binary first: `cargo build -p byoc-controller` (`make e2e` builds every binary).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{OnceCell, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::{
    CONVERGE_TIMEOUT, apply_server_side, client, eventually, free_port, http_get, install_crd,
    kubectl, repo_root, terminate, write_token_kubeconfig,
};

/// The controller's namespace, ServiceAccount and Lease.
pub const SYSTEM_NAMESPACE: &str = "byoc-system";
/// The controller's ServiceAccount and Lease name.
pub const NAME: &str = "byoc-controller";

static EXCLUSIVE: RwLock<()> = RwLock::const_new(());
static SHARED: Mutex<Weak<ControllerProcess>> = Mutex::new(Weak::new());
static SETUP: OnceCell<PathBuf> = OnceCell::const_new();

/// `target/<profile>/`, where cargo put the test binary and (after `cargo build`) the
/// controller.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/..")
        .to_path_buf()
}

/// The built `byoc-controller` binary: `$BYOC_CONTROLLER_BIN` if set (e.g. a release build for
/// the benchmark), else next to the test binary.
///
/// # Panics
/// When it has not been built.
pub fn binary() -> PathBuf {
    let path = std::env::var_os("BYOC_CONTROLLER_BIN")
        .map_or_else(|| target_dir().join("byoc-controller"), PathBuf::from);
    assert!(
        path.is_file(),
        "{} does not exist: build it first with `cargo build -p byoc-controller` \
         (add --release for a release test run)",
        path.display()
    );
    path
}

/// Installs the CRD and `hack/manifests/controller.yaml`, and writes a kubeconfig that
/// authenticates as the controller's ServiceAccount. Once per test process; returns the
/// kubeconfig's path.
pub async fn setup() -> &'static Path {
    SETUP
        .get_or_init(|| async {
            install_crd(&client().await).await;
            apply_server_side(&repo_root().join("hack/manifests/controller.yaml")).success();
            let token = kubectl([
                "create",
                "token",
                NAME,
                "-n",
                SYSTEM_NAMESPACE,
                "--duration=2h",
            ])
            .success()
            .stdout;
            let path = logs_dir().join(format!("controller-{}.kubeconfig", std::process::id()));
            write_token_kubeconfig(NAME, token.trim(), &path);
            path
        })
        .await
}

/// Where the controllers' logs go: `target/<profile>/e2e-logs/`.
pub fn logs_dir() -> PathBuf {
    let dir = target_dir().join("e2e-logs");
    std::fs::create_dir_all(&dir).expect("create the e2e log directory");
    dir
}

/// A running controller process.
pub struct ControllerProcess {
    child: Mutex<Child>,
    identity: String,
    admin: SocketAddr,
    log: PathBuf,
}

impl ControllerProcess {
    /// Starts the controller as `identity` with the ServiceAccount's kubeconfig and `args`
    /// (e.g. `--lease-duration=5`).
    pub fn spawn(kubeconfig: &Path, identity: &str, args: &[&str]) -> Self {
        let admin = free_port();
        let log = logs_dir().join(format!("{identity}.log"));
        let out = std::fs::File::create(&log).expect("create the controller log");
        let err = out.try_clone().expect("clone the log file");
        let child = Command::new(binary())
            .arg(format!("--admin-addr={admin}"))
            .arg(format!("--lease-namespace={SYSTEM_NAMESPACE}"))
            .arg(format!("--identity={identity}"))
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,byoc_controller=debug")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary().display()));
        eprintln!(
            "started controller {identity} (pid {}), log {}",
            child.id(),
            log.display()
        );
        Self {
            child: Mutex::new(child),
            identity: identity.to_owned(),
            admin,
            log,
        }
    }

    /// Its identity in the Lease.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .id()
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Panics (with the log) if the process has exited.
    #[track_caller]
    pub fn assert_running(&self) {
        let status = self
            .child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_wait();
        if let Ok(Some(status)) = status {
            panic!(
                "controller {} exited with {status}:\n{}",
                self.identity,
                self.log_tail()
            );
        }
    }

    /// `GET path` on the admin port: the status code and body.
    pub async fn get(&self, path: &str) -> Result<(u16, String), String> {
        let admin = self.admin;
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || http_get(admin, &path))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// The value of a series in `/metrics`, e.g. `byoc_controller_leader` or
    /// `byoc_controller_reconciles_total{controller="byocgrant"}`; 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, body) = self.get("/metrics").await.unwrap_or_else(|e| {
            panic!(
                "GET /metrics of {}: {e}\n{}",
                self.identity,
                self.log_tail()
            )
        });
        body.lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    }

    /// Waits until `/readyz` answers 200 (the caches have synced).
    pub async fn wait_ready(&self) {
        eventually(
            &format!("controller {} to be ready", self.identity),
            CONVERGE_TIMEOUT,
            || async {
                self.assert_running();
                match self.get("/readyz").await {
                    Ok((200, _)) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }

    /// Whether it reports holding the lease.
    pub async fn is_leader(&self) -> bool {
        self.metric("byoc_controller_leader").await == 1.0
    }

    /// Waits until it is ready and leads.
    pub async fn wait_leader(&self) {
        self.wait_ready().await;
        eventually(
            &format!("controller {} to lead", self.identity),
            CONVERGE_TIMEOUT,
            || async {
                self.assert_running();
                if self.is_leader().await {
                    Ok(())
                } else {
                    Err("a standby".to_owned())
                }
            },
        )
        .await;
    }

    /// Stops it with SIGTERM (SIGKILL after 20 s) and returns how it exited.
    pub fn stop(&self) -> ExitStatus {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        terminate(&mut child, &format!("controller {}", self.identity))
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let status = self.stop();
        eprintln!("controller {} stopped: {status}", self.identity);
    }
}

/// The controller that tests share; it stops when the last of them is dropped.
pub struct SharedController {
    // Dropped first: the process stops before other tests may take exclusive access.
    process: Arc<ControllerProcess>,
    _access: RwLockReadGuard<'static, ()>,
}

impl std::ops::Deref for SharedController {
    type Target = ControllerProcess;
    fn deref(&self) -> &ControllerProcess {
        &self.process
    }
}

impl Drop for SharedController {
    fn drop(&mut self) {
        // The last user lets the controller finish deleting grants (their finalizer) first.
        if Arc::strong_count(&self.process) == 1 {
            wait_for_deleted_grants();
        }
    }
}

/// A controller shared with other tests, ready and leading.
pub async fn shared() -> SharedController {
    let access = EXCLUSIVE.read().await;
    let kubeconfig = setup().await;
    let process = {
        let mut slot = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        match slot.upgrade() {
            Some(process) => process,
            None => {
                let identity = format!("e2e-shared-{}-{}", std::process::id(), now_millis());
                let process = Arc::new(ControllerProcess::spawn(kubeconfig, &identity, &[]));
                *slot = Arc::downgrade(&process);
                process
            }
        }
    };
    process.wait_leader().await;
    SharedController {
        process,
        _access: access,
    }
}

/// Sole use of the cluster's controller role: no other controller runs while this is held.
pub struct Exclusive {
    kubeconfig: &'static Path,
    _access: RwLockWriteGuard<'static, ()>,
}

impl Exclusive {
    /// Starts a controller as `identity` with `args`; it stops when dropped.
    pub fn spawn(&self, identity: &str, args: &[&str]) -> ControllerProcess {
        ControllerProcess::spawn(self.kubeconfig, identity, args)
    }
}

/// Waits until no other test runs a controller.
pub async fn exclusive() -> Exclusive {
    let access = EXCLUSIVE.write().await;
    let kubeconfig = setup().await;
    Exclusive {
        kubeconfig,
        _access: access,
    }
}

/// Waits (up to 20 s) until no ByocGrant is being deleted.
fn wait_for_deleted_grants() {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let out = kubectl([
            "get",
            "byocgrants",
            "-o",
            "jsonpath={range .items[?(@.metadata.deletionTimestamp)]}{.metadata.name} {end}",
        ]);
        if out.status.success() && out.stdout.trim().is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn now_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

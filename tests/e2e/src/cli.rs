//! Running the `kubectl-byoc` plugin against the local cluster: directly, and as `kubectl byoc`
//! with the binary's directory on PATH (how admins install it).
//!
//! The binary is the one cargo built next to the test executable (`make e2e` builds every
//! binary first); `BYOC_KUBECTL_BYOC` names another one.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

use crate::{Output, kubeconfig_path, run_command};

/// The `kubectl-byoc` binary under test.
///
/// # Panics
/// When it has not been built.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("BYOC_KUBECTL_BYOC") {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/<test> → target/<profile>/kubectl-byoc
    let exe = std::env::current_exe().expect("the test executable's path");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join(format!("kubectl-byoc{}", std::env::consts::EXE_SUFFIX)))
        .expect("the target directory");
    assert!(
        path.is_file(),
        "{} does not exist: build it first with `cargo build -p kubectl-byoc` (`make e2e` does)",
        path.display()
    );
    path
}

/// A `kubectl-byoc` command with `KUBECONFIG` set to the local cluster's kubeconfig; change its
/// environment and [`run`] it.
pub fn command() -> Command {
    let mut cmd = Command::new(binary());
    cmd.env("KUBECONFIG", kubeconfig_path());
    cmd
}

/// Runs `kubectl-byoc ARGS...` against the local cluster.
pub fn byoc<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(command(), args)
}

/// Runs `kubectl byoc ARGS...`: the real kubectl, finding the plugin on PATH.
pub fn kubectl_byoc<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    kubectl_byoc_with(kubeconfig_path(), args)
}

/// Runs `kubectl byoc ARGS...` like [`kubectl_byoc`], with `KUBECONFIG=kubeconfig` (for
/// example one that impersonates a user).
pub fn kubectl_byoc_with<I, S>(kubeconfig: &std::path::Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let dir = binary()
        .parent()
        .expect("the binary's directory")
        .to_owned();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(std::iter::once(dir).chain(std::env::split_paths(&path)))
        .expect("a PATH");
    let mut cmd = Command::new("kubectl");
    cmd.env("PATH", path)
        .env("KUBECONFIG", kubeconfig)
        .arg("byoc");
    run(cmd, args)
}

/// Runs `cmd ARGS...` with no standard input and collects what it printed.
pub fn run<I, S>(mut cmd: Command, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_command(cmd.args(args), None)
}

/// Assertions on the exit codes and JSON output of `kubectl-byoc`.
pub trait CliOutput: Sized {
    /// The exit code (`-1` when killed by a signal).
    fn code(&self) -> i32;
    /// Asserts the exit code; returns `self` for chaining.
    #[track_caller]
    fn exits(self, code: i32) -> Self;
    /// Standard output parsed as JSON.
    #[track_caller]
    fn json(&self) -> serde_json::Value;
}

impl CliOutput for Output {
    fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    fn exits(self, code: i32) -> Self {
        assert_eq!(self.code(), code, "expected exit code {code}: {self}");
        self
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self}"))
    }
}

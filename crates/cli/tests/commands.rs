//! The cluster commands of `kubectl-byoc` where no cluster is needed: help, client-side dry runs,
//! completion scripts, and the errors before the first request. Their behaviour against a real
//! API server is tested in `tests/e2e/tests/cli.rs`.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the binary with `args`, no kubeconfig and no home directory.
fn run(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-byoc"))
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", "/nonexistent")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

#[test]
fn every_command_has_help_with_examples() {
    let root = run(&["--help"]);
    assert_eq!(root.code, 0);
    for command in [
        "check",
        "grant",
        "revoke",
        "list",
        "audit",
        "images",
        "import-configmap",
        "completion",
    ] {
        assert!(
            root.stdout.contains(&format!("\n  {command} ")),
            "{command}: {}",
            root.stdout
        );
        let help = run(&[command, "--help"]);
        assert_eq!(help.code, 0, "{command}: {}", help.stderr);
        assert!(
            help.stdout.contains("\nExamples:\n  "),
            "{command}: {}",
            help.stdout
        );
        if command != "check" && command != "completion" {
            assert!(help.stdout.contains("--kubeconfig <FILE>"), "{command}");
            assert!(help.stdout.contains("--context <NAME>"), "{command}");
            assert!(help.stdout.contains("Exit status: "), "{command}");
        }
    }
}

#[test]
fn client_dry_run_prints_a_grant_without_a_cluster() {
    let run = run(&[
        "grant",
        "tool-wikibugs",
        "--reason",
        "T302863: mixes java and python",
        "--registry",
        "quay.io",
        "--registry",
        "ghcr.io/wikimedia",
        "--expires",
        "2099-03-31",
        "--dry-run=client",
        "-o",
        "json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let grant: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        grant,
        serde_json::json!({
            "apiVersion": "byoc.toolforge.org/v1alpha1",
            "kind": "ByocGrant",
            "metadata": {"name": "tool-wikibugs"},
            "spec": {
                "namespace": "tool-wikibugs",
                "reason": "T302863: mixes java and python",
                "registries": ["quay.io", "ghcr.io/wikimedia"],
                "expiresAt": "2099-03-31T00:00:00Z"
            }
        })
    );
    let summary = self::run(&[
        "grant",
        "tool-x",
        "--reason",
        "T1",
        "--any-registry",
        "--dry-run=client",
    ]);
    assert_eq!(summary.code, 0);
    assert_eq!(
        summary.stdout,
        "byocgrant/tool-x created (dry run): namespace tool-x, any registry, never expires\n"
    );
}

#[test]
fn invalid_input_exits_2_before_any_request() {
    let cases: [(&[&str], &str); 10] = [
        // "Any registry" only on purpose: neither flag, or both, is a usage error.
        (
            &["grant", "tool-a", "--reason", "T1", "--dry-run=client"],
            "--registry <REGISTRY>|--any-registry",
        ),
        (
            &[
                "grant",
                "tool-a",
                "--reason",
                "T1",
                "--registry",
                "quay.io",
                "--any-registry",
                "--dry-run=client",
            ],
            "cannot be used with",
        ),
        (
            &[
                "grant",
                "tool-a",
                "--reason",
                "T1",
                "--any-registry",
                "--expires",
                "2001-01-01",
                "--dry-run=client",
            ],
            "error: --expires \"2001-01-01\" is ",
        ),
        (
            &[
                "grant",
                "tool-a",
                "--reason",
                "T1",
                "--registry",
                "quay",
                "--dry-run=client",
            ],
            "error: invalid grant: spec.registries: registry entry \"quay\"",
        ),
        (
            &[
                "grant",
                "tool-a",
                "--reason",
                "T1",
                "--any-registry",
                "--name",
                "Bad_Name",
                "--dry-run=client",
            ],
            "error: --name \"Bad_Name\" is not a valid object name",
        ),
        (&["revoke"], "<NAMESPACE|--name <GRANT>>"),
        (&["list", "-o", "table"], "invalid value 'table'"),
        (
            &["audit", "--config", "/nonexistent.yaml"],
            "/nonexistent.yaml: cannot read",
        ),
        (
            &["images", "--registry", "quay.io:x"],
            "error: --registry quay.io:x: ",
        ),
        (&["images", "-A", "-n", "tool-a"], "cannot be used with"),
    ];
    for (args, message) in cases {
        let run = run(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{args:?}");
    }
}

#[test]
fn without_a_kubeconfig_cluster_commands_say_how_to_point_at_one() {
    for args in [
        &["list"][..],
        &["revoke", "tool-a"],
        &["audit"],
        &["images", "-A"],
        &["grant", "tool-a", "--reason", "T1", "--any-registry"],
        &["import-configmap", "--configmap", "a/b"],
    ] {
        let run = run(args);
        assert_eq!(run.code, 2, "{args:?}");
        assert!(
            run.stderr
                .starts_with("error: no kubeconfig: set KUBECONFIG or pass --kubeconfig"),
            "{args:?}: {}",
            run.stderr
        );
    }
    let missing = run(&["list", "--kubeconfig", "/nonexistent/kubeconfig"]);
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("/nonexistent/kubeconfig"),
        "{}",
        missing.stderr
    );
}

#[test]
fn completion_scripts_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        (
            "bash",
            "complete -F _kubectlbyoc -o bashdefault -o default kubectl-byoc",
        ),
        ("zsh", "#compdef kubectl-byoc"),
        ("fish", "complete -c kubectl-byoc "),
    ] {
        let run = run(&["completion", shell]);
        assert_eq!(run.code, 0, "{shell}: {}", run.stderr);
        assert!(run.stdout.contains(marker), "{shell}");
        assert!(run.stdout.contains("import-configmap"), "{shell}");
    }
    assert_eq!(run(&["completion", "tcsh"]).code, 2);
}

/// `kubectl byoc <TAB>` through the real kubectl: kubectl runs `kubectl_complete-byoc` from
/// PATH (the script `completion --help` shows), which asks the plugin with `__complete`.
#[test]
fn kubectl_completes_the_plugin_through_kubectl_complete_byoc() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("kubectl_complete-byoc");
    std::fs::write(&script, "#!/bin/sh\nexec kubectl-byoc __complete \"$@\"\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_kubectl-byoc"));
    let path = std::env::join_paths(
        [dir.path(), bin.parent().unwrap()]
            .into_iter()
            .map(std::path::Path::to_path_buf)
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let complete = |words: &[&str]| {
        let out = Command::new("kubectl")
            .args(["__complete", "byoc"])
            .args(words)
            .env("PATH", &path)
            .env("HOME", dir.path())
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("kubectl on PATH");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };

    let commands = complete(&[""]);
    for name in [
        "check\t",
        "grant\t",
        "revoke\t",
        "list\t",
        "audit\t",
        "images\t",
        "import-configmap\t",
    ] {
        assert!(commands.contains(name), "{name:?} missing from\n{commands}");
    }
    assert!(!commands.contains("__complete"), "{commands}");
    assert!(commands.ends_with(":4\n"), "{commands}");
    assert_eq!(
        complete(&["rev"]),
        "revoke\tRevoke the grants of a namespace, or one grant by name\n:4\n"
    );
    let formats = complete(&["list", "-o", ""]);
    assert!(
        formats.contains("json\t") && formats.contains("wide\t"),
        "{formats}"
    );
    assert!(complete(&["grant", "tool-a", "--exp"]).starts_with("--expires\t"));
    // Manifests are files: the shell completes them.
    assert!(complete(&["check", ""]).ends_with(":0\n"));
}

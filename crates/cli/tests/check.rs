//! `kubectl-byoc check` run as a new user would: the real binary, manifests written by hand.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const PLATFORM: &str = "docker-registry.tools.wmflabs.org/toolforge-python311-sssd-base:latest";

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: tool-wikibugs
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      initContainers:
      - name: setup
        image: docker-registry.tools.wmflabs.org/toolforge-bookworm-sssd:latest
      containers:
      - name: app
        image: nginx:1.27
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: tool-wikibugs}
spec: {ports: [{port: 80}]}
"#;

const GRANT: &str = r#"
apiVersion: byoc.toolforge.org/v1alpha1
kind: ByocGrant
metadata: {name: tool-wikibugs}
spec:
  namespace: tool-wikibugs
  reason: "T302863: mixes java and python runtimes"
  registries: [docker.io/library]
  expiresAt: "2027-03-31T00:00:00Z"
"#;

const ANY_GRANT: &str = r#"
apiVersion: byoc.toolforge.org/v1alpha1
kind: ByocGrant
metadata: {name: tool-any}
spec: {namespace: tool-any, reason: "needs everything"}
"#;

/// A scratch directory with named files.
struct Dir(tempfile::TempDir);

impl Dir {
    fn new(files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        Self(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn check(dir: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubectl-byoc"))
        .arg("check")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // `check` may exit without reading stdin (no `-` among the files): a closed pipe is fine.
    if let Err(e) = input.write_all(stdin.unwrap_or("").as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn pod(namespace: &str, images: &[(&str, &str)]) -> String {
    let containers: String = images
        .iter()
        .map(|(name, image)| format!("  - name: {name}\n    image: {image:?}\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: {namespace}\nspec:\n  containers:\n{containers}"
    )
}

#[test]
fn deployment_from_docker_hub_is_refused_naming_container_image_and_registry() {
    let dir = Dir::new(&[("deploy.yaml", DEPLOYMENT)]);
    let run = check(dir.path(), &["deploy.yaml"], None);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "Deployment tool-wikibugs/web: container \"app\" image \"nginx:1.27\" resolves to registry \
          docker.io (docker.io/library/nginx:1.27), which namespace tool-wikibugs may not use; \
          allowed here: docker-registry.tools.wmflabs.org; to use it, ask for a grant: kubectl \
          byoc request -n tool-wikibugs --registry docker.io --reason '...'"
        ]
    );
    assert!(run.stderr.contains("skipped Service"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("checked 1 objects: 0 admitted, 1 refused"),
        "{}",
        run.stderr
    );
}

#[test]
fn grants_count_until_they_expire() {
    let dir = Dir::new(&[("deploy.yaml", DEPLOYMENT), ("grant.yaml", GRANT)]);
    let cases = [
        (
            vec![
                "--grant",
                "grant.yaml",
                "--now",
                "2027-03-30T23:59:59Z",
                "deploy.yaml",
            ],
            0,
        ),
        (
            vec![
                "--grant",
                "grant.yaml",
                "--now",
                "2027-03-31T00:00:00Z",
                "deploy.yaml",
            ],
            1,
        ),
        (
            vec![
                "--grant",
                "grant.yaml",
                "--now",
                "2028-01-01T00:00:00Z",
                "deploy.yaml",
            ],
            1,
        ),
        // A grant for another namespace does not help.
        (
            vec![
                "--grant",
                "grant.yaml",
                "--now",
                "2027-01-01T00:00:00Z",
                "-n",
                "x",
                "-",
            ],
            1,
        ),
    ];
    for (args, want) in cases {
        let stdin = pod("other", &[("app", "nginx")]);
        let run = check(dir.path(), &args, Some(&stdin));
        assert_eq!(run.code, want, "{args:?}: {}{}", run.stdout, run.stderr);
        if want == 0 {
            assert!(run.stdout.is_empty());
        }
    }
}

#[test]
fn a_grant_ending_soon_is_noted_on_stderr_with_the_same_exit_code() {
    let dir = Dir::new(&[
        ("deploy.yaml", DEPLOYMENT),
        ("grant.yaml", GRANT),
        ("off.yaml", "expiryWarning: 0s\n"),
        ("wide.yaml", "expiryWarning: 120d\n"),
    ]);
    let note = "warning: deploy.yaml document 1: Deployment tool-wikibugs/web: container \"app\" \
                image \"nginx:1.27\" is allowed only by a BYOC grant for docker.io/library that \
                expires at 2027-03-31T00:00:00Z";
    // (extra arguments, --now, note expected, its days left)
    let cases: [(&[&str], &str, bool, &str); 6] = [
        (&[], "2027-03-29T12:00:00Z", true, "(1 day left)"),
        (&[], "2027-03-17T00:00:00Z", true, "(14 days left)"),
        (&[], "2027-03-16T23:59:59Z", false, ""),
        (&["--config", "off.yaml"], "2027-03-29T12:00:00Z", false, ""),
        (
            &["--config", "wide.yaml"],
            "2027-01-01T00:00:00Z",
            true,
            "(89 days left)",
        ),
        (&[], "2027-03-31T00:00:00Z", false, ""),
    ];
    for (extra, now, noted, days) in cases {
        let mut args = extra.to_vec();
        args.extend(["--grant", "grant.yaml", "--now", now, "deploy.yaml"]);
        let run = check(dir.path(), &args, None);
        let expired = now == "2027-03-31T00:00:00Z";
        assert_eq!(run.code, i32::from(expired), "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr.contains(note), noted, "{args:?}: {}", run.stderr);
        if noted {
            assert!(
                run.stderr.contains(&format!(
                    "{note} {days}; to keep using it, ask for a grant: kubectl byoc request -n \
                     tool-wikibugs --registry docker.io/library --reason '...'\n"
                )),
                "{args:?}: {}",
                run.stderr
            );
            // The stdout contract is untouched: nothing for an admitted object.
            assert!(run.stdout.is_empty(), "{}", run.stdout);
        }
    }
    // -o json carries the note in the object's warnings.
    let run = check(
        dir.path(),
        &[
            "-o",
            "json",
            "--grant",
            "grant.yaml",
            "--now",
            "2027-03-29T12:00:00Z",
            "deploy.yaml",
        ],
        None,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let warnings = &report["results"][0]["warnings"];
    assert_eq!(warnings.as_array().map(Vec::len), Some(1), "{report}");
    assert!(
        warnings[0].as_str().unwrap().contains("(1 day left)"),
        "{report}"
    );
}

/// Every rule of DESIGN §4, one pod per case, in namespace tool-a with a grant for
/// `quay.io`, `ghcr.io/org` and `registry.example.org:5000`; tool-any has an any-registry grant.
#[test]
fn registry_rules() {
    let grant = r#"
apiVersion: byoc.toolforge.org/v1alpha1
kind: ByocGrant
metadata: {name: tool-a}
spec:
  namespace: tool-a
  reason: test
  registries: [quay.io, ghcr.io/org, "registry.example.org:5000", "localhost:5000"]
"#;
    let dir = Dir::new(&[("grant.yaml", grant), ("any.yaml", ANY_GRANT)]);
    let cases: &[(&str, &str, bool)] = &[
        ("tool-a", PLATFORM, true),
        (
            "tool-a",
            "docker-registry.tools.wmflabs.org/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            true,
        ),
        ("tool-a", "Docker-Registry.Tools.Wmflabs.org/x", true),
        (
            "tool-a",
            "docker-registry.tools.wmflabs.org.evil.com/x",
            false,
        ),
        (
            "tool-a",
            "evil.com/docker-registry.tools.wmflabs.org/x",
            false,
        ),
        ("tool-a", "docker-registry.tools.wmflabs.org:5000/x", false),
        ("tool-a", "nginx", false),
        ("tool-a", "library/nginx", false),
        ("tool-a", "docker.io/nginx", false),
        ("tool-a", "index.docker.io/library/nginx", false),
        ("tool-a", "quay.io/prometheus/node-exporter:v1", true),
        ("tool-a", "QUAY.IO/x", true),
        ("tool-a", "quay.io:443/x", false),
        ("tool-a", "quay.io.evil.com/x", false),
        ("tool-a", "ghcr.io/org/app", true),
        ("tool-a", "ghcr.io/org/team/app:2", true),
        ("tool-a", "ghcr.io/organisation/app", false),
        ("tool-a", "ghcr.io/org", true),
        ("tool-a", "ghcr.io/or", false),
        ("tool-a", "ghcr.io/other/org/app", false),
        ("tool-a", "registry.example.org:5000/x", true),
        ("tool-a", "registry.example.org/x", false),
        ("tool-a", "registry.example.org:5001/x", false),
        ("tool-a", "localhost:5000/x", true),
        ("tool-a", "localhost/x", false),
        ("tool-a", "localhost:5000", false),
        ("tool-a", "127.0.0.1:5000/x", false),
        ("tool-a", "[::1]:5000/x", false),
        ("tool-a", "quay/x", false),
        ("tool-a", "Quay/x", false),
        ("tool-a", "quay.io/UPPER", false),
        ("tool-a", "quay.io/x:bad/tag", false),
        ("tool-a", "quay.io/x@sha256:abc", false),
        ("tool-a", "", false),
        ("tool-a", " quay.io/x", false),
        ("tool-any", "nginx", true),
        ("tool-any", "anything.example.org:1234/a/b/c:d", true),
        ("tool-any", "not a reference", false),
        ("kube-system", "anything/at-all", true),
        ("kube-system", "not even a reference", true),
    ];
    for (namespace, image, admitted) in cases {
        let run = check(
            dir.path(),
            &["--grant", "grant.yaml", "--grant", "any.yaml", "-"],
            Some(&pod(namespace, &[("c", image)])),
        );
        assert_eq!(
            run.code == 0,
            *admitted,
            "{namespace} {image:?}: {}{}",
            run.stdout,
            run.stderr
        );
        if !admitted {
            assert_eq!(run.stdout.lines().count(), 1, "{image:?}: {}", run.stdout);
            assert!(
                run.stdout.contains(&format!("image {image:?}")),
                "{}",
                run.stdout
            );
        }
    }
}

#[test]
fn every_pod_bearing_kind_and_every_container_list() {
    let bad = "quay.io/x";
    let spec = format!(
        "initContainers: [{{name: i, image: {bad}}}]\ncontainers: [{{name: c, image: {bad}}}]\nephemeralContainers: [{{name: e, image: {bad}}}]"
    );
    let indent = |n: usize| {
        spec.lines()
            .map(|l| format!("{}{l}\n", " ".repeat(n)))
            .collect::<String>()
    };
    let manifests = [
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: o}}\nspec:\n{}",
            indent(2)
        ),
        format!(
            "apiVersion: v1\nkind: PodTemplate\nmetadata: {{name: o}}\ntemplate:\n  spec:\n{}",
            indent(4)
        ),
        format!(
            "apiVersion: v1\nkind: ReplicationController\nmetadata: {{name: o}}\nspec:\n  template:\n    spec:\n{}",
            indent(6)
        ),
        format!(
            "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{name: o}}\nspec:\n  template:\n    spec:\n{}",
            indent(6)
        ),
        format!(
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: o}}\nspec:\n  template:\n    spec:\n{}",
            indent(6)
        ),
        format!(
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: o}}\nspec:\n  template:\n    spec:\n{}",
            indent(6)
        ),
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: o}}\nspec:\n  template:\n    spec:\n{}",
            indent(6)
        ),
        format!(
            "apiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: o}}\nspec:\n  schedule: '* * * * *'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n{}",
            indent(10)
        ),
    ];
    let dir = Dir::new(&[]);
    for manifest in &manifests {
        let run = check(dir.path(), &["-n", "tool-a", "-"], Some(manifest));
        assert_eq!(run.code, 1, "{manifest}\n{}", run.stderr);
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(lines.len(), 3, "{manifest}\n{}", run.stdout);
        for (line, what) in lines.iter().zip([
            "container \"c\"",
            "initContainer \"i\"",
            "ephemeralContainer \"e\"",
        ]) {
            assert!(line.contains(what) && line.contains("tool-a/o"), "{line}");
        }
    }
}

#[test]
fn lists_json_and_standard_input() {
    let list = format!(
        r#"{{"apiVersion": "v1", "kind": "List", "items": [
            {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "good", "namespace": "tool-a"}}, "spec": {{"containers": [{{"name": "a", "image": "{PLATFORM}"}}]}}}},
            {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "bad", "namespace": "tool-a"}}, "spec": {{"containers": [{{"name": "a", "image": "busybox"}}]}}}}
        ]}}"#
    );
    let dir = Dir::new(&[]);
    let run = check(dir.path(), &["-o", "json", "-"], Some(&list));
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["admitted"], false);
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["source"], "- document 1 item 1");
    assert_eq!(results[0]["admitted"], true);
    assert_eq!(results[0]["reason"], "allowed");
    assert_eq!(results[1]["name"], "bad");
    assert_eq!(results[1]["reason"], "registry_not_allowed");
    assert_eq!(results[1]["messages"].as_array().unwrap().len(), 1);
}

#[test]
fn allowed_registry_replaces_the_defaults_and_config_sets_the_mode() {
    let dir = Dir::new(&[
        (
            "warn.yaml",
            "mode: warn\ngrantRequestUrl: https://example.org/byoc\n",
        ),
        ("bad-config.yaml", "mode: loud\n"),
    ]);
    let platform = pod("tool-a", &[("a", PLATFORM)]);
    let quay = pod("tool-a", &[("a", "quay.io/x")]);
    assert_eq!(check(dir.path(), &["-"], Some(&platform)).code, 0);
    assert_eq!(
        check(
            dir.path(),
            &["--allowed-registry", "quay.io", "-"],
            Some(&platform)
        )
        .code,
        1
    );
    assert_eq!(
        check(
            dir.path(),
            &["--allowed-registry", "quay.io", "-"],
            Some(&quay)
        )
        .code,
        0
    );

    let run = check(dir.path(), &["--config", "warn.yaml", "-"], Some(&quay));
    assert_eq!(run.code, 0);
    assert!(run.stdout.is_empty());
    assert!(
        run.stderr
            .contains("warning: - document 1: container \"a\": registry quay.io"),
        "{}",
        run.stderr
    );

    let run = check(
        dir.path(),
        &["--config", "bad-config.yaml", "-"],
        Some(&quay),
    );
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("bad-config.yaml") && run.stderr.contains("loud"),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_input_exits_2_naming_file_and_document() {
    let dir = Dir::new(&[
        (
            "broken.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Pod\nspec: [\n",
        ),
        ("nokind.yaml", "apiVersion: v1\nmetadata: {name: a}\n"),
        (
            "badspec.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: nginx}\n",
        ),
        (
            "grant-bad.yaml",
            "apiVersion: byoc.toolforge.org/v1alpha1\nkind: ByocGrant\nmetadata: {name: g}\nspec: {namespace: tool-a, reason: x, registries: [\"https://quay.io\"]}\n",
        ),
        (
            "grant-blank.yaml",
            "apiVersion: byoc.toolforge.org/v1alpha1\nkind: ByocGrant\nmetadata: {name: g}\nspec: {namespace: tool-a, reason: \"  \"}\n",
        ),
        ("ok.yaml", &pod("tool-a", &[("a", "nginx")])),
    ]);
    let cases: &[(&[&str], &str)] = &[
        (&["ok.yaml", "broken.yaml"], "broken.yaml: invalid YAML"),
        (&["nokind.yaml"], "nokind.yaml document 1: missing kind"),
        (&["missing.yaml"], "missing.yaml: cannot read"),
        (
            &["--grant", "grant-bad.yaml", "ok.yaml"],
            "grant-bad.yaml document 1: spec.registries",
        ),
        (
            &["--grant", "grant-blank.yaml", "ok.yaml"],
            "grant-blank.yaml document 1: spec.reason",
        ),
        (
            &["--grant", "ok.yaml", "ok.yaml"],
            "ok.yaml document 1: --grant takes ByocGrant",
        ),
        (&["-o", "yaml", "ok.yaml"], "invalid value 'yaml'"),
        (&[], "required"),
    ];
    for (args, want) in cases {
        let run = check(dir.path(), args, None);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
        assert!(run.stderr.contains(want), "{args:?}: {}", run.stderr);
    }
    // A pod spec of the wrong shape is evaluated as the webhook would: refused as malformed.
    let run = check(dir.path(), &["badspec.yaml"], None);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.starts_with("Pod default/a: malformed pod spec"),
        "{}",
        run.stdout
    );
}

#[test]
fn image_volumes_are_checked_like_containers() {
    let pod = |reference: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: tool-a}}\nspec:\n  \
             containers: [{{name: app, image: {PLATFORM}}}]\n  volumes:\n  - name: scratch\n    \
             emptyDir: {{}}\n  - name: models\n    image: {{reference: {reference:?}, pullPolicy: IfNotPresent}}\n"
        )
    };
    let deployment = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: tool-a}}\nspec:\n  \
         template:\n    spec:\n      containers: [{{name: app, image: {PLATFORM}}}]\n      \
         volumes: [{{name: models, image: {{reference: docker.io/org/models:v1}}}}]\n"
    );
    let dir = Dir::new(&[]);
    let run = check(dir.path(), &["-"], Some(&pod("docker.io/org/models:v1")));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stdout.starts_with(
            "Pod tool-a/p: volume \"models\" image \"docker.io/org/models:v1\" resolves to \
             registry docker.io (docker.io/org/models:v1), which namespace tool-a may not use"
        ),
        "{}",
        run.stdout
    );
    assert_eq!(run.stdout.lines().count(), 1);
    let run = check(dir.path(), &["-"], Some(&deployment));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stdout
            .starts_with("Deployment tool-a/web: volume \"models\" image"),
        "{}",
        run.stdout
    );
    let platform = format!("{PLATFORM}-models");
    let run = check(dir.path(), &["-"], Some(&pod(&platform)));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
}

#[test]
fn image_ids_are_refused_saying_why() {
    let hex = "7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa";
    let dir = Dir::new(&[]);
    for image in [
        format!("sha256:{hex}"),
        "sha256:7cc4b5ae".to_owned(),
        format!("sha512:{hex}{hex}"),
        hex.to_owned(),
    ] {
        // Refused even under a Docker Hub grant, and even where any registry is allowed.
        for registry in ["docker.io", "docker.io/library"] {
            let run = check(
                dir.path(),
                &["--allowed-registry", registry, "-"],
                Some(&pod("tool-a", &[("app", &image)])),
            );
            assert_eq!(run.code, 1, "{image}: {}", run.stderr);
            assert!(
                run.stdout.contains(&format!(
                    "container \"app\" image {image:?} is not a valid image reference: it is \
                     an image ID, not an image name: the runtime runs whatever image it has \
                     cached with that ID, whichever registry it came from"
                )),
                "{}",
                run.stdout
            );
        }
    }
    // A Docker Hub image named sha256 with a tag that is not hex is a name.
    let run = check(
        dir.path(),
        &["--allowed-registry", "docker.io", "-"],
        Some(&pod("tool-a", &[("app", "sha256:latest")])),
    );
    assert_eq!(run.code, 0, "{}", run.stdout);
}

#[test]
fn manifests_are_read_as_kubectl_reads_them() {
    let hub = "docker.io/library/nginx:1.27";
    let bad_pod = pod("tool-a", &[("app", hub)]);
    let refused: Vec<(&str, String)> = vec![
        // Typed lists are expanded; their items take the list's kind.
        (
            "PodList",
            format!(
                "apiVersion: v1\nkind: PodList\nitems:\n- metadata: {{name: p, namespace: tool-a}}\n  \
                 spec: {{containers: [{{name: app, image: {hub}}}]}}\n"
            ),
        ),
        (
            "DeploymentList",
            format!(
                "{{\"apiVersion\": \"apps/v1\", \"kind\": \"DeploymentList\", \"items\": [{{\"metadata\": \
                 {{\"name\": \"web\"}}, \"spec\": {{\"template\": {{\"spec\": {{\"containers\": \
                 [{{\"name\": \"app\", \"image\": \"{hub}\"}}]}}}}}}}}]}}"
            ),
        ),
        // `---#` ends a document for kubectl, though YAML reads it as a key of the one before.
        (
            "comment glued to the marker",
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\n---#:\n  apiVersion: v1\n  \
                 kind: Pod\n  metadata: {{name: p}}\n  spec: {{containers: [{{name: app, image: {hub}}}]}}\n"
            ),
        ),
        // The second object of a JSON stream.
        (
            "JSON stream",
            format!(
                "{{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {{\"name\": \"c\"}}}}\n\
                 {{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {{\"name\": \"p\"}}, \
                 \"spec\": {{\"containers\": [{{\"name\": \"app\", \"image\": \"{hub}\"}}]}}}}"
            ),
        ),
        ("plain pod", bad_pod.clone()),
    ];
    let dir = Dir::new(&[]);
    for (name, manifest) in &refused {
        let run = check(dir.path(), &["-n", "tool-a", "-"], Some(manifest));
        assert_eq!(run.code, 1, "{name}: {}{}", run.stdout, run.stderr);
        assert_eq!(run.stdout.lines().count(), 1, "{name}: {}", run.stdout);
        assert!(run.stdout.contains(hub), "{name}: {}", run.stdout);
    }
    // Merge keys and repeated keys are refused (exit 2), never evaluated as something other
    // than what kubectl sends.
    let unreadable = [
        (
            format!(
                "x: &hub {{image: {hub}}}\napiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  \
                 containers:\n  - name: app\n    image: {PLATFORM}\n    <<: *hub\n"
            ),
            "-: YAML merge key (<<) at line 9 column 5 is not read",
        ),
        (
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n  - name: app\n    \
                 image: {hub}\n    image: {PLATFORM}\n"
            ),
            "-: invalid YAML: key \"image\" at line 8 column 5 appears twice in one mapping",
        ),
        (
            "apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: List, items: []}]\n"
                .to_owned(),
            "- document 1 item 1: a list inside a list is not read",
        ),
        // A document starting on the `---` line: kubectl refuses the whole input.
        (
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\n--- {{apiVersion: v1, kind: Pod, \
                 metadata: {{name: p}}, spec: {{containers: [{{name: app, image: {hub}}}]}}}}\n"
            ),
            "-: line 4: invalid document separator",
        ),
    ];
    for (manifest, want) in &unreadable {
        let run = check(dir.path(), &["-"], Some(manifest));
        assert_eq!(run.code, 2, "{manifest}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{}", run.stdout);
        assert!(run.stderr.contains(want), "{manifest}: {}", run.stderr);
    }
}

fn review(
    operation: &str,
    user: &str,
    object: serde_json::Value,
    old: serde_json::Value,
) -> String {
    let kind = object["kind"].as_str().unwrap().to_owned();
    let namespace = object["metadata"]["namespace"].clone();
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "e911857d-c318-11e8-bbad-025000000001",
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": format!("{}s", kind.to_lowercase())},
            "subResource": if object["spec"]["ephemeralContainers"].is_array() { "ephemeralcontainers".into() } else { serde_json::Value::Null },
            "name": object["metadata"]["name"],
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": user, "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": old,
        }
    })
    .to_string()
}

#[test]
fn admission_reviews_are_evaluated_as_the_webhook_would() {
    let ns = |labels: serde_json::Value| serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tool-a", "labels": labels}});
    let pod_json = |containers: serde_json::Value, ephemeral: serde_json::Value| {
        serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "tool-a"},
        "spec": {"containers": containers, "ephemeralContainers": ephemeral}})
    };
    let platform = serde_json::json!([{"name": "app", "image": PLATFORM}]);
    let controller = "system:serviceaccount:byoc-system:byoc-controller";
    let cases = [
        (
            "tenant adds a byoc label",
            review(
                "UPDATE",
                "alice",
                ns(serde_json::json!({"byoc.toolforge.org/any": "never"})),
                ns(serde_json::json!({})),
            ),
            1,
            "Namespace tool-a: user \"alice\" may not add byoc.toolforge.org/any",
        ),
        (
            "tenant removes a byoc label",
            review(
                "UPDATE",
                "alice",
                ns(serde_json::json!({})),
                ns(serde_json::json!({"byoc.toolforge.org/quay.io": "never"})),
            ),
            1,
            "may not remove byoc.toolforge.org/quay.io",
        ),
        (
            "tenant changes other labels",
            review(
                "UPDATE",
                "alice",
                ns(serde_json::json!({"team": "x", "byoc.toolforge.org/quay.io": "never"})),
                ns(serde_json::json!({"byoc.toolforge.org/quay.io": "never"})),
            ),
            0,
            "",
        ),
        (
            "controller writes byoc labels",
            review(
                "UPDATE",
                controller,
                ns(serde_json::json!({"byoc.toolforge.org/any": "never"})),
                ns(serde_json::json!({})),
            ),
            0,
            "",
        ),
        (
            "kubectl debug with busybox",
            review(
                "UPDATE",
                "alice",
                pod_json(
                    platform.clone(),
                    serde_json::json!([{"name": "debugger", "image": "busybox"}]),
                ),
                pod_json(platform.clone(), serde_json::json!([])),
            ),
            1,
            "Pod tool-a/p: ephemeralContainer \"debugger\" image \"busybox\"",
        ),
        (
            "kubectl debug with a platform image",
            review(
                "UPDATE",
                "alice",
                pod_json(
                    platform.clone(),
                    serde_json::json!([{"name": "debugger", "image": PLATFORM}]),
                ),
                pod_json(platform.clone(), serde_json::json!([])),
            ),
            0,
            "",
        ),
        (
            "pod update swapping in a bad image",
            review(
                "UPDATE",
                "alice",
                pod_json(
                    serde_json::json!([{"name": "app", "image": "quay.io/x"}]),
                    serde_json::json!([]),
                ),
                pod_json(platform.clone(), serde_json::json!([])),
            ),
            1,
            "container \"app\" image \"quay.io/x\"",
        ),
    ];
    // The status and finalize subresources carry the whole Namespace (their strategies keep
    // metadata changes): every namespace case gets the same answer through them.
    let on = |subresource: &str, review: &str| {
        let mut review: serde_json::Value = serde_json::from_str(review).unwrap();
        review["request"]["subResource"] = subresource.into();
        review.to_string()
    };
    let through_subresources: Vec<_> = cases
        .iter()
        .filter(|(_, body, ..)| body.contains(r#""kind":"Namespace""#))
        .flat_map(|(what, body, code, line)| {
            ["status", "finalize"].map(|sub| (*what, on(sub, body), *code, *line))
        })
        .collect();
    assert_eq!(
        through_subresources.len(),
        8,
        "four namespace cases, two subresources"
    );
    let dir = Dir::new(&[]);
    for (what, body, code, line) in cases.into_iter().chain(through_subresources) {
        let run = check(dir.path(), &["-"], Some(&body));
        assert_eq!(run.code, code, "{what}: {}{}", run.stdout, run.stderr);
        if code == 1 {
            assert_eq!(run.stdout.lines().count(), 1, "{what}: {}", run.stdout);
            assert!(
                run.stdout.starts_with(line) || run.stdout.contains(line),
                "{what}: {}",
                run.stdout
            );
        } else {
            assert!(run.stdout.is_empty(), "{what}: {}", run.stdout);
        }
    }
}

/// Templated default registries: a tool's own Harbor project, in the object's namespace or the
/// one `--namespace` gives; `--allowed-registry` takes templates too, and refuses bad ones
/// (exit 2, naming the problem). Every verdict is the webhook's (`Checker` of byoc-policy).
#[test]
fn templated_default_registries_follow_the_namespace() {
    let dir = Dir::new(&[(
        "toolforge.yaml",
        "defaultRegistries: [docker-registry.tools.wmflabs.org, \"tools-harbor.wmcloud.org/{namespace}\"]\n",
    )]);
    let own = "tools-harbor.wmcloud.org/tool-a/x:1";
    let other = "tools-harbor.wmcloud.org/tool-b/x:1";
    let longer = "tools-harbor.wmcloud.org/tool-ab/x:1";
    let no_namespace =
        |image: &str| pod("tool-a", &[("a", image)]).replace("  namespace: tool-a\n", "");
    // (args, manifest, exit code)
    let cases: Vec<(Vec<&str>, String, i32)> = vec![
        (
            vec!["--config", "toolforge.yaml", "-"],
            pod("tool-a", &[("a", own)]),
            0,
        ),
        (
            vec!["--config", "toolforge.yaml", "-"],
            pod("tool-a", &[("a", other)]),
            1,
        ),
        (
            vec!["--config", "toolforge.yaml", "-"],
            pod("tool-a", &[("a", longer)]),
            1,
        ),
        (
            vec!["--config", "toolforge.yaml", "-"],
            pod("tool-b", &[("a", other)]),
            0,
        ),
        (
            vec!["--config", "toolforge.yaml", "--namespace", "tool-a", "-"],
            no_namespace(own),
            0,
        ),
        (
            vec!["--config", "toolforge.yaml", "--namespace", "tool-b", "-"],
            no_namespace(own),
            1,
        ),
        (
            vec!["--config", "toolforge.yaml", "-"],
            no_namespace(own),
            1,
        ),
        (
            vec![
                "--allowed-registry",
                "tools-harbor.wmcloud.org/{namespace}",
                "-n",
                "tool-a",
                "-",
            ],
            no_namespace(own),
            0,
        ),
        (
            vec![
                "--allowed-registry",
                "tools-harbor.wmcloud.org/{tool}",
                "-n",
                "tool-a",
                "-",
            ],
            no_namespace("tools-harbor.wmcloud.org/a/x"),
            0,
        ),
    ];
    for (args, manifest, code) in cases {
        let run = check(dir.path(), &args, Some(&manifest));
        assert_eq!(
            run.code, code,
            "{args:?} {manifest}: {} {}",
            run.stdout, run.stderr
        );
    }
    let run = check(
        dir.path(),
        &["--config", "toolforge.yaml", "-"],
        Some(&pod("tool-a", &[("a", other)])),
    );
    assert!(
        run.stdout.contains(
            "allowed here: docker-registry.tools.wmflabs.org, tools-harbor.wmcloud.org/tool-a;"
        ),
        "{}",
        run.stdout
    );
    let run = check(
        dir.path(),
        &["--allowed-registry", "{namespace}.example.org", "-"],
        Some(&pod("tool-a", &[("a", own)])),
    );
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("--allowed-registry: registry template \"{namespace}.example.org\" has a placeholder in its host or port"),
        "{}",
        run.stderr
    );
}

/// A grant for namespace `tool-a` and `registry` with `requirements` (YAML flow, or none).
fn requiring_grant(registry: &str, requirements: Option<&str>) -> String {
    let requirements = requirements.map_or_else(String::new, |r| format!("  requirements: {r}\n"));
    format!(
        "apiVersion: byoc.toolforge.org/v1alpha1\nkind: ByocGrant\nmetadata: {{name: g}}\nspec:\n  \
         namespace: tool-a\n  reason: e2e\n  registries: [\"{registry}\"]\n{requirements}"
    )
}

#[test]
fn registry_offline_refuses_what_needs_a_lookup_and_admits_name_only_grants() {
    const REG: &str = "registry.example.org";
    let tagged = format!("{REG}/tool/web:1");
    let pinned = format!("{REG}/tool/web@sha256:{}", "a".repeat(64));
    let built_on = format!("{{builtOn: [\"{REG}/base/run\"]}}");
    let files = [
        ("name-only.yaml", requiring_grant(REG, None)),
        ("built-on.yaml", requiring_grant(REG, Some(&built_on))),
        (
            "digest.yaml",
            requiring_grant(REG, Some("{requireDigest: true}")),
        ),
        (
            "source.yaml",
            requiring_grant(REG, Some("{sourceFrom: [\"https://example.org/{tool}\"]}")),
        ),
        ("opt-out.yaml", requiring_grant(REG, Some("{}"))),
        (
            "allow.yaml",
            "registryLookups: {failureMode: {builtOn: allow, sourceFrom: allow}}\n".to_owned(),
        ),
        (
            "default.yaml",
            format!("defaultGrantRequirements: {built_on}\n"),
        ),
        (
            "platform.yaml",
            "platformRequirements: {builtOn: [docker-registry.tools.wmflabs.org/base]}\n"
                .to_owned(),
        ),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(n, c)| (*n, c.as_str())).collect();
    let dir = Dir::new(&files);
    let offline = |args: &[&str], image: &str| {
        let mut all = args.to_vec();
        all.extend(["--registry-offline", "-"]);
        check(dir.path(), &all, Some(&pod("tool-a", &[("web", image)])))
    };
    let needs = |requirement: &str, origin: &str, image: &str| {
        // requireDigest refuses a tag with or without the lookup (it only names the digest);
        // the others could not be checked.
        let verdict = if requirement == "requireDigest" {
            "does not meet requirement"
        } else {
            "could not be checked against requirement"
        };
        format!(
            "Pod tool-a/p: container \"web\" image \"{image}\" {verdict} {requirement} of \
             {origin}: cannot check {image}: registry lookups are not available \
             (--registry-offline: no registry is asked, and this image needs a registry lookup) \
             before "
        )
    };
    let grant = format!("the grant for {REG}");
    // (what, args, image, the refusal's start; None: admitted)
    let cases: Vec<(&str, Vec<&str>, &str, Option<String>)> = vec![
        (
            "a name-only grant needs no lookup",
            vec!["--grant", "name-only.yaml"],
            tagged.as_str(),
            None,
        ),
        (
            "builtOn needs the image's layers",
            vec!["--grant", "built-on.yaml"],
            tagged.as_str(),
            Some(needs("builtOn", &grant, &tagged)),
        ),
        (
            "builtOn needs them by digest too",
            vec!["--grant", "built-on.yaml"],
            pinned.as_str(),
            Some(needs("builtOn", &grant, &pinned)),
        ),
        (
            "sourceFrom needs the image's config",
            vec!["--grant", "source.yaml"],
            tagged.as_str(),
            Some(needs("sourceFrom", &grant, &tagged)),
        ),
        (
            "failureMode allow does not let an unchecked image through offline",
            vec!["--config", "allow.yaml", "--grant", "built-on.yaml"],
            tagged.as_str(),
            Some(needs("builtOn", &grant, &tagged)),
        ),
        (
            "requireDigest on a reference by digest needs no lookup",
            vec!["--grant", "digest.yaml"],
            pinned.as_str(),
            None,
        ),
        (
            "requireDigest refuses a tag, lookup or not",
            vec!["--grant", "digest.yaml"],
            tagged.as_str(),
            Some(needs("requireDigest", &grant, &tagged)),
        ),
        (
            "the platform's defaultGrantRequirements apply to a grant without requirements",
            vec!["--config", "default.yaml", "--grant", "name-only.yaml"],
            tagged.as_str(),
            Some(needs("builtOn", &grant, &tagged)),
        ),
        (
            "and not to one with requirements: {}",
            vec!["--config", "default.yaml", "--grant", "opt-out.yaml"],
            tagged.as_str(),
            None,
        ),
        (
            "platformRequirements apply to the default registries",
            vec!["--config", "platform.yaml"],
            PLATFORM,
            Some(needs(
                "builtOn",
                "the platform (platformRequirements)",
                PLATFORM,
            )),
        ),
    ];
    for (what, args, image, refusal) in cases {
        let run = offline(&args, image);
        match refusal {
            None => {
                assert_eq!(run.code, 0, "{what}: {}{}", run.stdout, run.stderr);
                assert!(run.stdout.is_empty(), "{what}: {}", run.stdout);
            }
            Some(start) => {
                assert_eq!(run.code, 1, "{what}: {}{}", run.stdout, run.stderr);
                let lines: Vec<&str> = run.stdout.lines().collect();
                assert_eq!(
                    lines.len(),
                    1,
                    "{what}: one line per refused container: {lines:?}"
                );
                assert!(
                    lines[0].starts_with(&start),
                    "{what}:\n want {start}\n got  {}",
                    lines[0]
                );
            }
        }
    }
    // JSON says why.
    let run = offline(&["--grant", "built-on.yaml", "-o", "json"], &tagged);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["admitted"], false);
    assert_eq!(report["results"][0]["reason"], "requirement_not_met");
}

#[test]
fn without_registry_offline_the_registry_is_asked() {
    // A closed port on loopback: the lookup is made, fails, and the image is refused saying
    // which registry could not be reached (failureMode fail, the default), never admitted.
    const REG: &str = "127.0.0.1:1";
    let image = format!("{REG}/tool/web:1");
    let grant = requiring_grant(REG, Some(&format!("{{builtOn: [\"{REG}/base/run\"]}}")));
    let policy = format!("registryLookups: {{insecureRegistries: [\"{REG}\"]}}\n");
    let dir = Dir::new(&[
        ("grant.yaml", grant.as_str()),
        ("policy.yaml", policy.as_str()),
    ]);
    let manifest = pod("tool-a", &[("web", image.as_str())]);
    let run = check(
        dir.path(),
        &["--config", "policy.yaml", "--grant", "grant.yaml", "-"],
        Some(&manifest),
    );
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.starts_with(&format!(
            "Pod tool-a/p: container \"web\" image \"{image}\" could not be checked against \
             requirement builtOn of the grant for {REG}"
        )) && run
            .stdout
            .contains(&format!("registry {REG} is unreachable")),
        "{}",
        run.stdout
    );
    // A name-only grant for that registry: admitted, so nothing was asked.
    let name_only = requiring_grant(REG, None);
    let dir = Dir::new(&[("grant.yaml", name_only.as_str())]);
    let run = check(dir.path(), &["--grant", "grant.yaml", "-"], Some(&manifest));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
}

//! Grant requirements checked against a registry at admission (issue 22, DESIGN §12), through
//! the real API server, the real controller (which writes the requirements annotation from the
//! grants) and the webhook, against a real `docker-registry` on loopback with images built by
//! the test, behind a fault proxy (`byoc_e2e::registry`); and `kubectl-byoc check` with the
//! webhook's policy and the same grant, which must give the webhook's verdict.
//!
//! ```text
//! hack/local-cluster.sh exec -- cargo test -p byoc-e2e --test lookups
//! ```

use std::time::Duration;

use byoc_e2e::cli::{self, CliOutput as _};
use byoc_e2e::registry::{Fault, FaultProxy, ImageSpec, Images, Layer, LocalRegistry, TOOL_SOURCE};
use byoc_e2e::webhook::{Options, PODS_WEBHOOK, Webhook, denied_by};
use byoc_e2e::{
    CONVERGE_TIMEOUT, Cleanup, Output, TestNamespace, client, controller, eventually,
    grant_manifest, kubectl_run_dry, kubectl_stdin, requirements_annotation, run_command,
    unique_name,
};
use serde_json::{Value, json};

/// A registry with the scenario images, a proxy in front of it, and a webhook (with the
/// policy `extra`) that reaches the registry only through the proxy, over plain HTTP.
struct Setup {
    registry: LocalRegistry,
    images: Images,
    proxy: FaultProxy,
    webhook: Webhook,
    /// The webhook's policy file, as it reads it.
    policy: String,
}

impl Setup {
    async fn start(extra: &str) -> Self {
        let registry = LocalRegistry::start();
        let images = Images::push(&registry).await;
        let proxy = FaultProxy::start(registry.addr()).await;
        // Tags are asked every time (tagTtl 0s), so a moved tag and a broken registry show at
        // once; content stays cached by digest.
        let policy = format!(
            "registryLookups:\n  insecureRegistries: [\"{}\"]\n  tagTtl: 0s\n  budget: 2s\n{extra}",
            proxy.addr()
        );
        let options = Options {
            policy,
            ..Options::default()
        };
        let policy = format!("mode: {}\n{}", options.mode, options.policy);
        let webhook = Webhook::start(options).await;
        Self {
            registry,
            images,
            proxy,
            webhook,
            policy,
        }
    }

    /// `path:tag` through the proxy.
    fn image(&self, path: &str, tag: &str) -> String {
        format!("{}/{path}:{tag}", self.proxy.addr())
    }

    /// The base repository through the proxy.
    fn base(&self) -> String {
        format!("{}/{}", self.proxy.addr(), self.images.base.path)
    }

    /// A tool namespace with a grant for the proxy's registry with `requirements` (none:
    /// `None`), once the webhook can see it (the grant's label, and its annotation when it has
    /// requirements).
    async fn namespace(&self, requirements: Option<Value>) -> (TestNamespace, Cleanup) {
        let (ns, grant, _) = self.granted_namespace(requirements).await;
        (ns, grant)
    }

    /// [`Setup::namespace`], with the grant's manifest.
    async fn granted_namespace(
        &self,
        requirements: Option<Value>,
    ) -> (TestNamespace, Cleanup, String) {
        let client = client().await;
        let ns = TestNamespace::create(&client, "tool").await;
        let name = unique_name("lookups");
        let mut spec = json!({"namespace": ns.name(), "reason": "e2e",
                              "registries": [self.proxy.addr().to_string()]});
        if let Some(r) = &requirements {
            spec["requirements"] = r.clone();
        }
        let manifest = grant_manifest(&name, spec);
        kubectl_stdin(&["create", "-f", "-"], &manifest).success();
        let grant = Cleanup::new(["byocgrant", name.as_str()]);
        let want_annotation = requirements.is_some();
        eventually(
            "the grant reaches the namespace",
            CONVERGE_TIMEOUT,
            || async {
                let labels = byoc_e2e::byoc_labels(&client, ns.name()).await;
                let annotated = requirements_annotation(&client, ns.name()).await.is_some();
                if labels.is_empty() || annotated != want_annotation {
                    return Err(format!("labels {labels:?}, annotated {annotated}"));
                }
                Ok(())
            },
        )
        .await;
        (ns, grant, manifest)
    }
}

/// `kubectl run --dry-run=server` of `image` in `namespace`, retried until the webhook's cache
/// has the namespace's grant (a refusal "which namespace ... may not use" means it has not yet).
async fn run(namespace: &str, pod: &str, image: &str) -> Output {
    eventually("the webhook sees the grant", CONVERGE_TIMEOUT, || async {
        let out = kubectl_run_dry(namespace, pod, image);
        if out.stderr.contains("may not use") {
            Err(out.stderr)
        } else {
            Ok(out)
        }
    })
    .await
}

#[track_caller]
fn admitted(out: &Output, what: &str) {
    assert!(out.status.success(), "{what}: refused: {}", out.stderr);
}

#[track_caller]
fn refused(out: &Output, what: &str, needles: &[&str]) {
    assert!(!out.status.success(), "{what}: admitted: {}", out.stdout);
    assert!(
        out.stderr.contains(&denied_by(PODS_WEBHOOK)),
        "{what}: {}",
        out.stderr
    );
    for needle in needles {
        assert!(
            out.stderr.contains(needle),
            "{what}: want {needle:?} in: {}",
            out.stderr
        );
    }
}

// Multi-threaded: kubectl blocks the test thread while the fault proxy (a task) must answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_on_digest_and_source_are_checked_against_the_registry() {
    let _controller = controller::shared().await;
    // Nodes of both platforms: every image of an index is checked.
    let s = Setup::start("platforms: [linux/amd64, linux/arm64]\n").await;
    let base = s.base();

    // builtOn: the tool image is built on the base; the re-based one (same top layer), the one
    // on Debian and the index whose arm64 image is on Debian are not.
    let (ns, _grant) = s.namespace(Some(json!({"builtOn": [base.clone()]}))).await;
    let name = ns.name();
    admitted(
        &run(name, "web", &s.image("tool-a/web", "latest")).await,
        "built on the base",
    );
    for (pod, path, why) in [
        (
            "rebased",
            "tool-a/rebased",
            "is not the first layer of any listed base image",
        ),
        (
            "debian",
            "tool-a/on-debian",
            "is not the first layer of any listed base image",
        ),
        ("multi", "tool-a/multi", "linux/arm64"),
    ] {
        let image = s.image(path, "latest");
        refused(
            &run(name, pod, &image).await,
            path,
            &[
                &format!(
                    "Pod {name}/{pod}: container \"{pod}\" image \"{image}\" does not meet requirement builtOn of the grant for {}",
                    s.proxy.addr()
                ),
                &format!("not built on {base}"),
                why,
            ],
        );
    }

    // requireDigest: a tag is refused with the digest it points to now, which is admitted; the
    // tag moves, and the next refusal gives the new digest.
    let (pinned, _grant) = s.namespace(Some(json!({"requireDigest": true}))).await;
    let tagged = s.image("tool-a/web", "latest");
    let by_digest = format!("{}/tool-a/web@{}", s.proxy.addr(), s.images.tool.digest);
    refused(
        &run(pinned.name(), "tag", &tagged).await,
        "by tag",
        &[
            "requirement requireDigest",
            &format!("write it with its digest, {by_digest}"),
        ],
    );
    admitted(&run(pinned.name(), "digest", &by_digest).await, "by digest");
    let moved = s
        .registry
        .push_image(
            "tool-a/web",
            "latest",
            &ImageSpec::new(&[&Layer::new(&[("app/v2", "2\n")])]),
        )
        .await;
    assert_ne!(moved.digest, s.images.tool.digest);
    refused(
        &run(pinned.name(), "moved", &tagged).await,
        "the moved tag",
        &[&format!("{}/tool-a/web@{}", s.proxy.addr(), moved.digest)],
    );

    // sourceFrom: the label must be under the allowed prefix.
    let (sourced, _grant) = s
        .namespace(Some(json!({"sourceFrom": [TOOL_SOURCE]})))
        .await;
    admitted(
        &run(sourced.name(), "ours", &s.image("tool-a/rebased", "latest")).await,
        "source in the tool's project",
    );
    refused(
        &run(
            sourced.name(),
            "theirs",
            &s.image("tool-a/elsewhere", "latest"),
        )
        .await,
        "source elsewhere",
        &[
            "requirement sourceFrom",
            "\"https://github.com/someone/else\"",
            "is not under an allowed source",
        ],
    );

    let metric = |m: &str| s.webhook.metric(m);
    assert!(metric("byoc_webhook_registry_lookups_total{result=\"found\"}") > 0.0);
    assert!(metric("byoc_webhook_registry_cache_lookups_total{result=\"hit\"}") > 0.0);
    assert!(metric("byoc_webhook_registry_cache_bytes") > 0.0);
    assert!(
        metric("byoc_webhook_decisions_total{result=\"denied\",reason=\"requirement_not_met\"}")
            >= 5.0,
        "{}",
        s.webhook.metrics()
    );
}

// Multi-threaded: kubectl blocks the test thread while the fault proxy (a task) must answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_is_slow_errs_lies_or_is_down_refuses_naming_it() {
    let _controller = controller::shared().await;
    let s = Setup::start("").await;
    let (ns, _grant) = s.namespace(Some(json!({"builtOn": [s.base()]}))).await;
    let name = ns.name();
    let image = s.image("tool-a/web", "latest");
    let registry = s.proxy.addr().to_string();
    admitted(&run(name, "warm", &image).await, "a working registry");
    admitted(
        &run(name, "multi", &s.image("tool-a/multi", "latest")).await,
        "an index whose arm64 image is not on the base, with linux/amd64 nodes only",
    );

    let could_not =
        format!("could not be checked against requirement builtOn of the grant for {registry}");
    for (fault, why) in [
        (Fault::Status(503), "answered HTTP 503"),
        (Fault::Lie, "digest"),
        (
            Fault::Slow(Duration::from_secs(4)),
            "did not answer within 2s",
        ),
    ] {
        s.proxy.set_fault(fault.clone());
        refused(
            &run(name, "faulty", &image).await,
            &format!("{fault:?}"),
            &[&could_not, &format!("registry {registry}"), why],
        );
    }
    s.proxy.set_fault(Fault::None);
    s.proxy.down();
    refused(
        &run(name, "down", &image).await,
        "down",
        &[&could_not, &format!("registry {registry} is unreachable")],
    );
    s.proxy.up().await;
    admitted(&run(name, "back", &image).await, "the registry is back");
    assert!(
        s.webhook
            .metric("byoc_webhook_registry_lookups_total{result=\"server_error\"}")
            > 0.0
    );
    assert!(
        s.webhook
            .metric("byoc_webhook_registry_lookups_total{result=\"digest_mismatch\"}")
            > 0.0
    );
}

// Multi-threaded: kubectl blocks the test thread while the fault proxy (a task) must answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_mode_allow_admits_only_what_could_not_be_checked() {
    let _controller = controller::shared().await;
    let s = Setup::start("  failureMode: {builtOn: allow}\n").await;
    let (ns, _grant) = s
        .namespace(Some(json!({"builtOn": [s.base()], "requireDigest": false})))
        .await;
    let name = ns.name();
    let tool = s.image("tool-a/web", "latest");
    let rebased = s.image("tool-a/rebased", "latest");
    // Checked and not met: refused, allow or not.
    refused(
        &run(name, "rebased", &rebased).await,
        "re-based, registry up",
        &["does not meet requirement builtOn", "not built on"],
    );
    // Not checkable: admitted, with a warning that names the registry.
    s.proxy.down();
    for image in [&tool, &rebased] {
        let out = run(name, "unchecked", image).await;
        admitted(&out, "registry down");
        assert!(
            out.stderr
                .contains("builtOn not checked (failureMode allow)")
                && out
                    .stderr
                    .contains(&format!("registry {} is unreachable", s.proxy.addr())),
            "{}",
            out.stderr
        );
    }
    s.proxy.up().await;
}

// Multi-threaded: kubectl blocks the test thread while the fault proxy (a task) must answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_only_grant_makes_no_registry_request() {
    let _controller = controller::shared().await;
    let s = Setup::start("").await;
    let (ns, _grant) = s.namespace(None).await;
    s.proxy.clear_log();
    for (pod, path) in [("web", "tool-a/web"), ("rebased", "tool-a/rebased")] {
        admitted(&run(ns.name(), pod, &s.image(path, "latest")).await, path);
    }
    admitted(
        &run(
            ns.name(),
            "platform",
            "docker-registry.tools.wmflabs.org/toolforge-python311:latest",
        )
        .await,
        "a platform image without platformRequirements",
    );
    assert_eq!(s.proxy.requests(), Vec::<String>::new());
    assert_eq!(
        s.webhook
            .metric("byoc_webhook_registry_cache_lookups_total{result=\"miss\"}"),
        0.0
    );
}

/// `kubectl-byoc check` of the pod `kubectl run NAME --image=IMAGE -n NAMESPACE` creates, with
/// the webhook's policy file and the grant manifest `grant`, and `more` arguments.
fn check(s: &Setup, grant: &str, namespace: &str, pod: &str, image: &str, more: &[&str]) -> Output {
    let dir = std::env::temp_dir().join(unique_name("byoc-parity"));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let (policy, grant_file) = (dir.join("policy.yaml"), dir.join("grant.json"));
    std::fs::write(&policy, &s.policy).expect("write the policy");
    std::fs::write(&grant_file, grant).expect("write the grant");
    let manifest = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod, "namespace": namespace},
        "spec": {"containers": [{"name": pod, "image": image}]},
    });
    let mut cmd = cli::command();
    cmd.arg("check")
        .arg("--config")
        .arg(&policy)
        .arg("--grant")
        .arg(&grant_file)
        .args(more)
        .arg("-");
    let out = run_command(&mut cmd, Some(&manifest.to_string()));
    let _ = std::fs::remove_dir_all(&dir);
    out
}

// Multi-threaded: kubectl blocks the test thread while the fault proxy (a task) must answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_byoc_check_gives_the_webhooks_verdict_for_the_same_registry() {
    let _controller = controller::shared().await;
    let s = Setup::start("").await;
    let (ns, _grant, grant) = s
        .granted_namespace(Some(json!({"builtOn": [s.base()]})))
        .await;
    let name = ns.name();
    for (pod, path, built_on) in [
        ("web", "tool-a/web", true),
        ("rebased", "tool-a/rebased", false),
    ] {
        let image = s.image(path, "latest");
        let webhook = run(name, pod, &image).await;
        let checked = check(&s, &grant, name, pod, &image, &[]);
        if built_on {
            admitted(&webhook, path);
            let checked = checked.exits(0);
            assert!(checked.stdout.is_empty(), "{checked}");
        } else {
            // The same refusal, word for word: check prints the line the webhook answers.
            let line = checked.exits(1).stdout.trim_end().to_owned();
            assert!(
                !line.contains('\n'),
                "one line per refused container: {line}"
            );
            assert!(
                line.starts_with(&format!(
                    "Pod {name}/{pod}: container \"{pod}\" image \"{image}\" does not meet \
                     requirement builtOn of the grant for {}",
                    s.proxy.addr()
                )),
                "{line}"
            );
            refused(
                &webhook,
                path,
                &[&line, "is not the first layer of any listed base image"],
            );
        }
        // Offline, both need the registry, so both are refused naming what is missing, and
        // the registry is not asked.
        s.proxy.clear_log();
        let offline = check(&s, &grant, name, pod, &image, &["--registry-offline"]).exits(1);
        assert!(
            offline.stdout.starts_with(&format!(
                "Pod {name}/{pod}: container \"{pod}\" image \"{image}\" could not be checked \
                 against requirement builtOn of the grant for {}: cannot check",
                s.proxy.addr()
            )) && offline
                .stdout
                .contains("this image needs a registry lookup"),
            "{offline}"
        );
        assert_eq!(s.proxy.requests(), Vec::<String>::new());
    }
}

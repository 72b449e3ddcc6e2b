//! Requirements reach the namespaces (issue 22, DESIGN §12), against the real API server and
//! the real controller: the controller writes each namespace's `byoc.toolforge.org/requirements`
//! annotation from its grants (and the policy's `defaultGrantRequirements`) within seconds,
//! keeps it true to them, removes it with the last requirement, and shows each grant's
//! requirements as `status.requires` (the wide REQUIRES column).
//!
//! ```text
//! hack/local-cluster.sh exec -- cargo test -p byoc-e2e --test requirements
//! ```

use std::time::Duration;

use byoc_api::labels::REQUIREMENTS_ANNOTATION;
use byoc_api::requirements::{Effective, NamespaceRequirements};
use byoc_e2e::cli::{CliOutput, byoc};
use byoc_e2e::{
    CONVERGE_TIMEOUT, Cleanup, TestNamespace, client, controller, eventually, grant_manifest,
    kubectl, kubectl_stdin, parse_table, requirements_annotation, unique_name,
};
use kube::Client;
use serde_json::{Value, json};

/// How soon the annotation must follow a change of the grants.
const WITHIN: Duration = Duration::from_secs(5);

const HEROKU: &str = "tools-harbor.wmcloud.org/toolforge/heroku-runner";
const SOURCE: &str = "https://gitlab.wikimedia.org/toolforge-repos/{tool}";

/// Creates grant `name` with `spec` (`kubectl create`); deleted when the guard drops.
fn create(name: &str, spec: Value) -> Cleanup {
    kubectl_stdin(&["create", "-f", "-"], &grant_manifest(name, spec)).success();
    Cleanup::new(["byocgrant", name])
}

/// Deletes grant `name` and waits until it is gone (the controller removed its finalizer).
fn revoke(name: &str) {
    kubectl(["delete", "byocgrant", name, "--wait=true", "--timeout=60s"]).success();
}

/// The annotation of `namespace`, read as the webhook reads it: its `registries` as JSON, or
/// `None` when there is none; `Err` when the webhook cannot read it.
async fn annotation(client: &Client, namespace: &str) -> Result<Option<Value>, String> {
    let Some(text) = requirements_annotation(client, namespace).await else {
        return Ok(None);
    };
    let read = NamespaceRequirements::read(&text)
        .map_err(|e| format!("the webhook cannot read {text}: {e}"))?;
    Ok(Some(json!(read.registries)))
}

/// Waits (up to [`WITHIN`]) until the annotation of `namespace` says `want` (an unreadable
/// one, such as a forged value not yet repaired, is waited past and fails only at the end).
async fn wait_annotation(client: &Client, namespace: &str, what: &str, want: Option<Value>) {
    eventually(what, WITHIN, || async {
        match annotation(client, namespace).await? {
            got if got == want => Ok(()),
            got => Err(format!("{got:?}")),
        }
    })
    .await;
}

/// Waits until the controller has written `status.requires` of grant `name`, and returns it.
async fn requires(name: &str) -> String {
    eventually("status.requires", CONVERGE_TIMEOUT, || async {
        let out = kubectl([
            "get",
            "byocgrant",
            name,
            "-o",
            "jsonpath={.status.requires}",
        ])
        .success();
        if out.stdout.is_empty() {
            Err("not written yet".to_owned())
        } else {
            Ok(out.stdout)
        }
    })
    .await
}

/// The cells of `column` in `table` (kubectl's output), by row.
fn column(table: &str, column: &str) -> Vec<String> {
    let (header, rows) = parse_table(table);
    let at = header
        .iter()
        .position(|h| h == column)
        .unwrap_or_else(|| panic!("no {column} in {header:?}"));
    rows.into_iter().map(|mut row| row.remove(at)).collect()
}

#[tokio::test]
async fn requirements_reach_the_namespace_and_leave_with_their_grants() {
    let controller = controller::shared().await;
    let client = client().await;
    let ns = TestNamespace::create(&client, "tool-req").await;
    let name = ns.name();
    let built = json!({"builtOn": [HEROKU], "requireDigest": true});

    // A grant with requirements: the namespace gets them, under the registry entry.
    let first = unique_name("req-a");
    let _first = create(
        &first,
        json!({"namespace": name, "reason": "e2e", "registries": ["quay.io/e2e"],
               "requirements": built}),
    );
    let required = json!({"expires": "never", "requirements": built});
    wait_annotation(
        &client,
        name,
        "the first grant's requirements",
        Some(json!({"quay.io/e2e": [required]})),
    )
    .await;

    // A second grant for the same registry without requirements: both alternatives are listed,
    // so the allowance is unconditional until the second one ends. ghcr.io/e2e has no
    // requirement, so no key.
    let second = unique_name("req-b");
    let _second = create(
        &second,
        json!({"namespace": name, "reason": "e2e", "registries": ["quay.io/e2e", "ghcr.io/e2e"],
               "expiresAt": "2099-01-01T00:00:00Z"}),
    );
    let plain = json!({"expires": "20990101T000000Z"});
    wait_annotation(
        &client,
        name,
        "both alternatives",
        Some(json!({"quay.io/e2e": [plain, required]})),
    )
    .await;
    let text = requirements_annotation(&client, name).await.unwrap();
    let read = NamespaceRequirements::read(&text).unwrap();
    let quay = "quay.io/e2e".parse().unwrap();
    assert_eq!(
        read.effective_at(Some(&quay), jiff::Timestamp::now()),
        Effective::Unconditional
    );
    assert_eq!(
        read.effective_at(Some(&quay), "2099-06-01T00:00:00Z".parse().unwrap()),
        Effective::AnyOf(vec![&serde_json::from_value(built.clone()).unwrap()]),
        "once the second grant has expired, the first one's requirements hold"
    );

    // A third grant gives ghcr.io/e2e a requirement of its own.
    let third = unique_name("req-c");
    let _third = create(
        &third,
        json!({"namespace": name, "reason": "e2e", "registries": ["ghcr.io/e2e"],
               "requirements": {"sourceFrom": [SOURCE]}}),
    );
    let sourced = json!({"expires": "never", "requirements": {"sourceFrom": [SOURCE]}});
    let all = json!({"ghcr.io/e2e": [plain, sourced], "quay.io/e2e": [plain, required]});
    wait_annotation(&client, name, "the third grant's key", Some(all.clone())).await;

    // An annotation written by someone else (here an admin; tenants are refused by the guard,
    // tests/attacks.rs) is overwritten, unreadable or not.
    for forged in ["not json", r#"{"version":1,"registries":{}}"#] {
        kubectl([
            "annotate",
            "namespace",
            name,
            &format!("{REQUIREMENTS_ANNOTATION}={forged}"),
            "--overwrite",
        ])
        .success();
        wait_annotation(&client, name, "the annotation repaired", Some(all.clone())).await;
    }

    // status.requires, and the wide column; the default columns stay as they were.
    assert_eq!(requires(&first).await, "builtOn heroku-runner; digest");
    assert_eq!(requires(&second).await, "none");
    assert_eq!(
        requires(&third).await,
        "source gitlab.wikimedia.org/toolforge-repos/{tool}"
    );
    let wide = kubectl(["get", "byoc", &first, &second, &third, "-o", "wide"]).success();
    let (header, _) = parse_table(&wide.stdout);
    assert_eq!(
        header,
        [
            "NAME",
            "NAMESPACE",
            "REGISTRIES",
            "REQUIRES",
            "EXPIRES",
            "READY",
            "REASON",
            "AGE"
        ]
    );
    assert_eq!(
        column(&wide.stdout, "REQUIRES"),
        [
            "builtOn heroku-runner; digest",
            "none",
            "source gitlab.wikimedia.org/toolforge-repos/{tool}"
        ]
    );
    let narrow = kubectl(["get", "byoc", &first]).success();
    assert_eq!(
        parse_table(&narrow.stdout).0,
        [
            "NAME",
            "NAMESPACE",
            "REGISTRIES",
            "EXPIRES",
            "READY",
            "REASON",
            "AGE"
        ]
    );
    let list = byoc(["list", "-n", name, "-o", "wide"]).exits(0);
    let mut listed = column(&list.stdout, "REQUIRES");
    listed.sort();
    assert_eq!(
        listed,
        [
            "builtOn heroku-runner; digest",
            "none",
            "source gitlab.wikimedia.org/toolforge-repos/{tool}"
        ]
    );

    // Revoking the first grant drops quay.io/e2e's key (no requirement is left for it)...
    revoke(&first);
    wait_annotation(
        &client,
        name,
        "the first grant's entry gone",
        Some(json!({"ghcr.io/e2e": [plain, sourced]})),
    )
    .await;
    // ...and revoking the third one the annotation, while the second grant's labels stay.
    revoke(&third);
    wait_annotation(&client, name, "the annotation gone", None).await;
    let labels = byoc_e2e::byoc_labels(&client, name).await;
    assert_eq!(
        labels.keys().collect::<Vec<_>>(),
        [
            "byoc.toolforge.org/ghcr.io_e2e",
            "byoc.toolforge.org/quay.io_e2e"
        ]
    );
    drop(controller);
}

#[tokio::test]
async fn the_platform_default_applies_unless_a_grant_opts_out() {
    let exclusive = controller::exclusive().await;
    let config = controller::logs_dir().join(format!("requirements-{}.yaml", std::process::id()));
    std::fs::write(
        &config,
        "defaultGrantRequirements:\n  requireDigest: true\n",
    )
    .expect("write the policy configuration");
    let process = exclusive.spawn(
        &unique_name("e2e-req"),
        &["--config", config.to_str().expect("a UTF-8 path")],
    );
    process.wait_leader().await;
    let client = client().await;
    let ns = TestNamespace::create(&client, "tool-def").await;
    let name = ns.name();

    // Through `kubectl byoc grant`: no requirement flag (the default applies) and
    // --no-requirements (requirements: {}, which opts out).
    let (defaulted, opted_out) = (unique_name("req-d"), unique_name("req-o"));
    byoc([
        "grant",
        name,
        "--reason",
        "e2e",
        "--registry",
        "quay.io/d",
        "--name",
        &defaulted,
    ])
    .exits(0);
    let _defaulted = Cleanup::new(["byocgrant", &defaulted]);
    byoc([
        "grant",
        name,
        "--reason",
        "e2e",
        "--registry",
        "quay.io/o",
        "--no-requirements",
        "--name",
        &opted_out,
    ])
    .exits(0);
    let _opted_out = Cleanup::new(["byocgrant", &opted_out]);
    let stored = kubectl(["get", "byocgrant", &opted_out, "-o", "json"]).success();
    let stored: Value = serde_json::from_str(&stored.stdout).expect("grant JSON");
    assert_eq!(stored["spec"]["requirements"], json!({}), "{stored}");

    wait_annotation(
        &client,
        name,
        "the default on the grant without requirements only",
        Some(json!({"quay.io/d": [{"expires": "never", "requirements": {"requireDigest": true}}]})),
    )
    .await;
    assert_eq!(requires(&defaulted).await, "digest (platform default)");
    assert_eq!(requires(&opted_out).await, "none");

    // Requirements the CRD would refuse are refused before anything is sent.
    let refused = unique_name("req-x");
    byoc([
        "grant",
        name,
        "--reason",
        "e2e",
        "--registry",
        "quay.io/x",
        "--built-on",
        "heroku-runner",
        "--name",
        &refused,
    ])
    .exits(2)
    .fails_with(&["builtOn entry \"heroku-runner\" is invalid"]);
    kubectl(["get", "byocgrant", &refused]).failure();
    drop(process);
    let _ = std::fs::remove_file(&config);
}

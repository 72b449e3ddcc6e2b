//! A grant's lifecycle against the real API server, controller, webhook and `kubectl byoc`
//! (issue 21, part 5):
//!
//! - "any registry" is asked for explicitly: a grant stored with an empty list before
//!   `anyRegistry` existed (under the CRD as it was) keeps admitting any registry, can still be
//!   updated and relabelled, and is listed as "any (legacy empty list)"; once it says
//!   `anyRegistry: true` it cannot go back to an empty list;
//! - a grant is bound to the UID of the namespace it was first applied to: a namespace deleted
//!   and created again under the same name gets nothing (condition `NamespaceReplaced`, an
//!   event) until `kubectl byoc grant --renew`.
//!
//! Both tests hold the [`Webhook`] fixture, which runs one at a time, so the CRD swap of the
//! first never overlaps the second.
//!
//! ```text
//! cargo build --workspace --bins && hack/local-cluster.sh exec -- cargo test -p byoc-e2e --test grant_lifecycle
//! ```

use byoc_api::{ByocGrant, grant};
use byoc_e2e::cli::{CliOutput, kubectl_byoc};
use byoc_e2e::controller;
use byoc_e2e::webhook::{Options, PODS_WEBHOOK, Webhook, denied_by};
use byoc_e2e::{
    CONVERGE_TIMEOUT, Cleanup, LoosenedGrantCrd, TEST_LABEL, TestNamespace, byoc_labels, client,
    create_grant, eventually, grant_manifest, install_crd, kubectl, kubectl_run_dry, kubectl_stdin,
    parse_table, unique_name,
};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::{Api, Client};
use serde_json::json;

const QUAY: &str = "quay.io/prometheus/node-exporter:v1.8.2";
const GHCR: &str = "ghcr.io/wikimedia/blubber:v1";

/// Waits until grant `name`'s Ready condition has `reason` for its current generation.
async fn wait_reason(client: &Client, name: &str, reason: &str) -> ByocGrant {
    let api: Api<ByocGrant> = Api::all(client.clone());
    eventually(
        &format!("grant {name} to be {reason}"),
        CONVERGE_TIMEOUT,
        || async {
            let g = api.get(name).await.map_err(|e| e.to_string())?;
            let current =
                g.status.as_ref().and_then(|s| s.observed_generation) == g.metadata.generation;
            match g.ready_condition() {
                Some(c) if c.reason == reason && current => Ok(g),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

/// Waits until `kubectl run --dry-run=server` of `image` in `namespace` is admitted (or,
/// with `admitted` false, refused); returns the last output.
async fn wait_admission(namespace: &str, image: &str, admitted: bool) -> byoc_e2e::Output {
    eventually(
        &format!("{image} admitted in {namespace}: {admitted}"),
        CONVERGE_TIMEOUT,
        || async {
            let out = kubectl_run_dry(namespace, "probe", image);
            if out.status.success() == admitted {
                Ok(out)
            } else {
                Err(out.to_string())
            }
        },
    )
    .await
}

/// Whether a server dry run of a grant with an empty `registries` list is accepted.
fn empty_list_accepted(namespace: &str) -> bool {
    let spec = json!({"namespace": namespace, "reason": "probe", "registries": []});
    let manifest = grant_manifest(&unique_name("probe"), spec);
    kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &manifest)
        .status
        .success()
}

/// Waits until the API server's schema accepts (or refuses) an empty `registries` list.
async fn wait_empty_list_accepted(namespace: &str, accepted: bool) {
    eventually(
        &format!("the API server to accept an empty list: {accepted}"),
        CONVERGE_TIMEOUT,
        || async {
            if empty_list_accepted(namespace) == accepted {
                Ok(())
            } else {
                Err("not yet".to_owned())
            }
        },
    )
    .await;
}

/// The ByocGrant CRD as it was before `anyRegistry` (no rules on `spec`, so an empty list is
/// stored), while the guard lives. Dropping it applies the committed CRD again.
struct CrdBeforeAnyRegistry {
    _crd: LoosenedGrantCrd,
}

impl CrdBeforeAnyRegistry {
    async fn apply(namespace: &str) -> Self {
        let guard = Self {
            _crd: LoosenedGrantCrd::without(
                "/spec/versions/0/schema/openAPIV3Schema/properties/spec/x-kubernetes-validations",
            ),
        };
        wait_empty_list_accepted(namespace, true).await;
        guard
    }
}

/// `kubectl patch byocgrant NAME --type=merge -p PATCH`.
fn patch(name: &str, patch: serde_json::Value) -> byoc_e2e::Output {
    kubectl([
        "patch",
        "byocgrant",
        name,
        "--type=merge",
        "-p",
        &patch.to_string(),
    ])
}

/// The REGISTRIES cell of grant `name` in `kubectl get byoc` and in `kubectl byoc list`.
fn registries_cells(name: &str) -> (String, String) {
    let cell = |stdout: &str| {
        let (header, rows) = parse_table(stdout);
        let column = header
            .iter()
            .position(|h| h == "REGISTRIES")
            .expect("REGISTRIES");
        rows.iter()
            .find(|r| r[0] == name)
            .map(|r| r[column].clone())
            .unwrap_or_else(|| panic!("no row for {name} in\n{stdout}"))
    };
    let get = kubectl(["get", "byoc", name]).success();
    let list = kubectl_byoc(["list"]).success();
    (cell(&get.stdout), cell(&list.stdout))
}

#[tokio::test]
async fn a_legacy_empty_list_keeps_meaning_any_registry_and_any_registry_is_explicit() {
    let _webhook = Webhook::start(Options::default()).await;
    let _controller = controller::shared().await;
    let client = client().await;
    let crd = install_crd(&client).await;
    let ns = TestNamespace::create(&client, "tool-legacy").await;
    ns.wait_for_default_service_account(&client).await;
    let name = unique_name("legacy");
    let _cleanup = Cleanup::new(["byocgrant", name.as_str()]);

    // The committed CRD refuses an empty list, with the rule's message.
    let rules = byoc_e2e::spec_rules(&crd);
    assert!(
        rules
            .iter()
            .any(|r| r.message.as_deref() == Some(grant::REGISTRIES_REQUIRED_MESSAGE)),
        "{rules:?}"
    );
    assert!(!empty_list_accepted(ns.name()));

    // Stored as the old CRD allowed it, then the current CRD comes back.
    {
        let _old = CrdBeforeAnyRegistry::apply(ns.name()).await;
        let spec = json!({"namespace": ns.name(), "reason": "T1: legacy", "registries": []});
        kubectl_stdin(&["create", "-f", "-"], &grant_manifest(&name, spec)).success();
    }
    wait_empty_list_accepted(ns.name(), false).await;

    // It still means any registry: labels, status, admission, and both listings say so.
    let applied = wait_reason(&client, &name, "Applied").await;
    assert!(applied.spec.is_legacy_any(), "{:?}", applied.spec);
    let status = applied.status.clone().unwrap_or_default();
    assert_eq!(status.registries.as_deref(), Some(grant::LEGACY_ANY));
    let message = applied.ready_condition().map(|c| c.message.clone());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("legacy empty list: set anyRegistry: true")),
        "{message:?}"
    );
    assert_eq!(
        byoc_labels(&client, ns.name()).await,
        [(byoc_api::labels::ANY_KEY.to_owned(), "never".to_owned())].into()
    );
    wait_admission(ns.name(), QUAY, true).await;
    let (get, list) = registries_cells(&name);
    assert_eq!(
        (get.as_str(), list.as_str()),
        (grant::LEGACY_ANY, grant::LEGACY_ANY)
    );

    // Updates that keep the empty list pass the transition rule: a label, another reason, an
    // expiry, the list written out empty.
    kubectl(["label", "byocgrant", &name, "team=tools"]).success();
    patch(&name, json!({"spec": {"reason": "T2: still legacy"}})).success();
    patch(
        &name,
        json!({"spec": {"expiresAt": "2099-01-01T00:00:00Z", "registries": []}}),
    )
    .success();
    let still = wait_reason(&client, &name, "Applied").await;
    assert!(still.spec.is_legacy_any() && still.spec.reason == "T2: still legacy");
    assert_eq!(
        byoc_labels(&client, ns.name()).await,
        [(
            byoc_api::labels::ANY_KEY.to_owned(),
            "20990101T000000Z".to_owned()
        )]
        .into()
    );

    // Made explicit, it admits any registry as before; with a list too it is refused; and it
    // cannot go back to an empty list.
    patch(
        &name,
        json!({"spec": {"anyRegistry": true, "registries": ["quay.io"]}}),
    )
    .fails_with(&["is invalid", grant::REGISTRIES_EXCLUSIVE_MESSAGE]);
    patch(
        &name,
        json!({"spec": {"anyRegistry": true, "registries": null}}),
    )
    .success();
    let explicit = wait_reason(&client, &name, "Applied").await;
    assert!(explicit.spec.any_registry && !explicit.spec.is_legacy_any());
    eventually("REGISTRIES to say any", CONVERGE_TIMEOUT, || async {
        match registries_cells(&name) {
            (get, list) if get == "any" && list == "any" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    wait_admission(ns.name(), GHCR, true).await;
    patch(&name, json!({"spec": {"anyRegistry": null}}))
        .fails_with(&["is invalid", grant::REGISTRIES_REQUIRED_MESSAGE]);
    patch(
        &name,
        json!({"spec": {"anyRegistry": false, "registries": []}}),
    )
    .fails_with(&[grant::REGISTRIES_REQUIRED_MESSAGE]);

    // A named list instead: any registry is gone, and an empty list stays refused.
    patch(
        &name,
        json!({"spec": {"anyRegistry": null, "registries": ["quay.io/prometheus"]}}),
    )
    .success();
    wait_admission(ns.name(), GHCR, false)
        .await
        .fails_with(&[&denied_by(PODS_WEBHOOK), "resolves to registry ghcr.io"]);
    kubectl_run_dry(ns.name(), "exporter", QUAY).success();
    patch(&name, json!({"spec": {"registries": []}}))
        .fails_with(&[grant::REGISTRIES_REQUIRED_MESSAGE]);
}

/// Creates namespace `name` (labelled [`TEST_LABEL`]), waits for its default ServiceAccount,
/// and returns its UID.
async fn create_namespace(client: &Client, name: &str) -> String {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": name, "labels": {TEST_LABEL: "true"}}});
    kubectl_stdin(&["create", "-f", "-"], &ns.to_string()).success();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    eventually("the default ServiceAccount", CONVERGE_TIMEOUT, || async {
        match accounts.get_opt("default").await {
            Ok(Some(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    Api::<Namespace>::all(client.clone())
        .get(name)
        .await
        .expect("get namespace")
        .metadata
        .uid
        .expect("a UID")
}

/// Waits until an event with `reason` about grant `name` exists; returns its note.
async fn wait_event(name: &str, reason: &str) -> String {
    eventually(
        &format!("a {reason} event about {name}"),
        CONVERGE_TIMEOUT,
        || async {
            let out = kubectl([
                "get",
                "events.events.k8s.io",
                "-n",
                "default",
                "--field-selector",
                &format!("regarding.name={name},reason={reason}"),
                "-o",
                "jsonpath={range .items[*]}{.type} {.note}{\"\\n\"}{end}",
            ])
            .success();
            out.stdout
                .lines()
                .next()
                .map(str::to_owned)
                .ok_or(out.to_string())
        },
    )
    .await
}

#[tokio::test]
async fn a_namespace_created_again_gets_nothing_until_the_grant_is_renewed() {
    let _webhook = Webhook::start(Options::default()).await;
    let _controller = controller::shared().await;
    let client = client().await;
    install_crd(&client).await;
    let ns = unique_name("tool-again");
    let _namespace = Cleanup::new(["namespace", ns.as_str()]);
    // Named unlike the namespace, so the renew command needs --name.
    let name = unique_name("bound");
    let grants: Api<ByocGrant> = Api::all(client.clone());

    // Created before its namespace: it binds to the first one that appears.
    let _grant = create_grant(&name, &ns, &["quay.io/prometheus"], None);
    wait_reason(&client, &name, "NamespaceNotFound").await;
    let first = create_namespace(&client, &ns).await;
    let applied = wait_reason(&client, &name, "Applied").await;
    let status = applied.status.unwrap_or_default();
    assert_eq!(status.namespace_uid.as_deref(), Some(first.as_str()));
    assert_eq!(applied.spec.namespace_uid, None);
    wait_admission(&ns, QUAY, true).await;

    // Deleted (the grant waits) and created again under the same name.
    kubectl(["delete", "namespace", &ns, "--wait=true", "--timeout=60s"]).success();
    wait_reason(&client, &name, "NamespaceNotFound").await;
    let second = create_namespace(&client, &ns).await;
    assert_ne!(first, second);

    // The new namespace gets nothing, and the grant and an event say what to do.
    let replaced = wait_reason(&client, &name, "NamespaceReplaced").await;
    let renew = format!("kubectl byoc grant {ns} --renew --name {name}");
    let condition = replaced.ready_condition().cloned().expect("Ready");
    assert_eq!(condition.status, "False");
    for part in [
        renew.as_str(),
        &format!("UID {second}"),
        &format!("applied to UID {first}"),
        "spec.namespaceUID",
    ] {
        assert!(condition.message.contains(part), "{part:?}: {condition:?}");
    }
    assert_eq!(
        replaced.status.and_then(|s| s.namespace_uid).as_deref(),
        Some(first.as_str()),
        "the record stays with the namespace it was applied to"
    );
    let event = wait_event(&name, "NamespaceReplaced").await;
    assert!(
        event.starts_with("Warning ") && event.contains(&renew),
        "{event}"
    );
    assert!(byoc_labels(&client, &ns).await.is_empty());
    kubectl_run_dry(&ns, "exporter", QUAY).fails_with(&[
        &denied_by(PODS_WEBHOOK),
        "resolves to registry quay.io",
        "allowed here: docker-registry.tools.wmflabs.org;",
    ]);
    let out = kubectl(["get", "byoc", &name]).success();
    let (header, rows) = parse_table(&out.stdout);
    let reason = header.iter().position(|h| h == "REASON").expect("REASON");
    assert_eq!(rows[0][reason], "NamespaceReplaced", "{out}");

    // The admin consents with the command the message gives.
    let mut args: Vec<&str> = renew.split(' ').skip(2).collect();
    args.push("--wait");
    let out = kubectl_byoc(&args).success();
    assert!(
        out.stdout.contains(&format!("byocgrant/{name} renewed")),
        "{out}"
    );
    let renewed = wait_reason(&client, &name, "Applied").await;
    assert_eq!(renewed.spec.namespace_uid.as_deref(), Some(second.as_str()));
    assert_eq!(
        renewed.status.and_then(|s| s.namespace_uid).as_deref(),
        Some(second.as_str())
    );
    // By server-side apply, the CLI's field manager owning spec.namespaceUID alone.
    let stored = kubectl([
        "get",
        "byocgrant",
        &name,
        "-o",
        "json",
        "--show-managed-fields",
    ])
    .success();
    let stored: serde_json::Value = serde_json::from_str(&stored.stdout).expect("JSON");
    let entry = stored["metadata"]["managedFields"]
        .as_array()
        .and_then(|m| {
            m.iter()
                .find(|e| e["manager"] == "kubectl-byoc" && e["operation"] == "Apply")
        })
        .cloned()
        .unwrap_or_else(|| panic!("no kubectl-byoc Apply entry: {stored}"));
    assert_eq!(
        entry["fieldsV1"],
        json!({"f:spec": {"f:namespaceUID": {}}}),
        "{entry}"
    );
    assert_eq!(
        byoc_labels(&client, &ns).await,
        [(
            "byoc.toolforge.org/quay.io_prometheus".to_owned(),
            "never".to_owned()
        )]
        .into()
    );
    wait_admission(&ns, QUAY, true).await;

    // Renewing again changes nothing; a grant for another namespace, or none, is refused.
    let out = kubectl_byoc(&args[..args.len() - 1]).success();
    assert!(
        out.stdout.contains(&format!("byocgrant/{name} unchanged")),
        "{out}"
    );
    let again = grants.get(&name).await.expect("get grant");
    assert_eq!(again.metadata.generation, renewed.metadata.generation);
    let out = kubectl_byoc(["grant", "tool-other", "--renew", "--name", &name]).exits(2);
    assert!(
        out.stderr
            .contains(&format!("is for namespace {ns}, not tool-other")),
        "{out}"
    );
    let out = kubectl_byoc(["grant", &unique_name("tool-none"), "--renew"]).exits(2);
    assert!(out.stderr.contains("there is no ByocGrant"), "{out}");
}

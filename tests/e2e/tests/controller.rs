//! The controller against the real API server (issue 4, DESIGN §3, §6): grants become namespace
//! labels and Ready conditions; changes, unions, deletion, expiry, late namespaces and
//! hand-edited labels all converge; a restarted controller converges without writing what is
//! already right, and an unreadable grant stops nothing (issue 12); two replicas elect one
//! leader. The controller runs as its own ServiceAccount.
//!
//! `cargo build -p byoc-controller && hack/local-cluster.sh exec -- cargo test -p byoc-e2e --test controller`

use std::collections::BTreeMap;
use std::time::Duration;

use byoc_api::{ByocGrant, ByocRequest, ByocRequestSpec, RequestRecord, StoredGrant};
use byoc_e2e::bench::{cpu_secs, load_average, percentile, rss_mib};
use byoc_e2e::cli::{CliOutput, byoc};
use byoc_e2e::controller::{ControllerProcess, NAME, SYSTEM_NAMESPACE, exclusive, shared};
use byoc_e2e::{
    CONVERGE_TIMEOUT, Cleanup, LoosenedGrantCrd, TEST_LABEL, TestNamespace, byoc_labels, client,
    create_grant, eventually, grant_manifest, kubectl, kubectl_stdin, parse_table, unique_name,
};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::wait::await_condition;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// Helpers

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Waits until the namespace's `byoc.toolforge.org/` labels are exactly `want`.
async fn wait_labels(client: &Client, namespace: &str, want: &[(&str, &str)]) {
    let want = labels(want);
    eventually(
        &format!("labels {want:?} on {namespace}"),
        CONVERGE_TIMEOUT,
        || async {
            let got = byoc_labels(client, namespace).await;
            if got == want {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        },
    )
    .await;
}

async fn grant(client: &Client, name: &str) -> ByocGrant {
    Api::<ByocGrant>::all(client.clone())
        .get(name)
        .await
        .expect("get grant")
}

/// Waits until grant `name`'s Ready condition has `reason` for its current generation; returns
/// the grant.
async fn wait_reason(client: &Client, name: &str, reason: &str) -> ByocGrant {
    eventually(
        &format!("grant {name} to be {reason}"),
        CONVERGE_TIMEOUT,
        || async {
            let g = grant(client, name).await;
            let current =
                g.status.as_ref().and_then(|s| s.observed_generation) == g.metadata.generation;
            match g.ready_condition() {
                Some(c) if c.reason == reason && current => Ok(g),
                other => Err(format!("{other:?}, generation {:?}", g.metadata.generation)),
            }
        },
    )
    .await
}

/// `kubectl wait --for=condition=Ready byocgrant/NAME`, as an admin would.
fn kubectl_wait_ready(name: &str) {
    kubectl([
        "wait",
        "--for=condition=Ready",
        &format!("byocgrant/{name}"),
        "--timeout=60s",
    ])
    .success();
}

/// Waits until an event with `reason` about grant `name` exists.
async fn wait_event(name: &str, reason: &str) {
    eventually(
        &format!("a {reason} event about {name}"),
        CONVERGE_TIMEOUT,
        || async {
            let out = kubectl([
                "get",
                "events",
                "-n",
                "default",
                "--field-selector",
                &format!("involvedObject.name={name}"),
                "-o",
                "jsonpath={.items[*].reason}",
            ])
            .success();
            if out.stdout.split_whitespace().any(|r| r == reason) {
                Ok(())
            } else {
                Err(out.stdout)
            }
        },
    )
    .await;
}

/// Creates namespace `name` (labelled [`TEST_LABEL`]); deleted when the guard drops.
fn create_namespace(name: &str, extra_labels: &[(&str, &str)]) -> Cleanup {
    let mut labels = serde_json::Map::new();
    labels.insert(TEST_LABEL.into(), json!("true"));
    for (k, v) in extra_labels {
        labels.insert((*k).into(), json!(v));
    }
    let ns = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name, "labels": labels } });
    kubectl_stdin(&["create", "-f", "-"], &ns.to_string()).success();
    Cleanup::new(["namespace", name])
}

/// Deletes a grant and waits until it is gone (the controller removed its finalizer).
async fn delete_grant(client: &Client, name: &str) {
    kubectl(["delete", "byocgrant", name, "--wait=false"]).success();
    wait_gone(client, name).await;
}

/// Waits until grant `name` no longer exists.
async fn wait_gone(client: &Client, name: &str) {
    let api = Api::<ByocGrant>::all(client.clone());
    let gone = await_condition(api, name, |g: Option<&ByocGrant>| g.is_none());
    tokio::time::timeout(CONVERGE_TIMEOUT, gone)
        .await
        .unwrap_or_else(|_| panic!("grant {name} still exists after {CONVERGE_TIMEOUT:?}"))
        .expect("watch grant");
}

/// The Lease's holder.
fn lease_holder() -> String {
    kubectl([
        "get",
        "lease",
        NAME,
        "-n",
        SYSTEM_NAMESPACE,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
    .success()
    .stdout
    .trim()
    .to_owned()
}

/// Reconciles a controller ran (grants and namespaces).
async fn reconciles(controller: &ControllerProcess) -> f64 {
    controller
        .metric(r#"byoc_controller_reconciles_total{controller="byocgrant"}"#)
        .await
        + controller
            .metric(r#"byoc_controller_reconciles_total{controller="namespace"}"#)
            .await
}

async fn namespace_rv(client: &Client, name: &str) -> Option<String> {
    Api::<Namespace>::all(client.clone())
        .get(name)
        .await
        .expect("get namespace")
        .resource_version()
}

/// Waits until `controller` has reconciled every grant that is not being deleted.
async fn wait_all_grants_seen(client: &Client, controller: &ControllerProcess) {
    eventually(
        "the leader to reconcile every grant",
        CONVERGE_TIMEOUT,
        || async {
            let live = Api::<StoredGrant>::all(client.clone())
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .iter()
                .filter(|g| g.meta().deletion_timestamp.is_none())
                .count();
            let seen = grants_seen(controller).await;
            if seen == live as f64 {
                Ok(())
            } else {
                Err(format!("{seen} of {live} grants seen"))
            }
        },
    )
    .await;
}

/// How many grants a controller has a state for (the `byoc_controller_grants` gauge, summed).
async fn grants_seen(controller: &ControllerProcess) -> f64 {
    let (_, body) = controller.get("/metrics").await.expect("GET /metrics");
    body.lines()
        .filter(|l| l.starts_with("byoc_controller_grants{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Patches of namespace labels a controller sent.
async fn label_writes(controller: &ControllerProcess) -> f64 {
    controller
        .metric(r#"byoc_controller_namespace_label_writes_total{kind="set"}"#)
        .await
        + controller
            .metric(r#"byoc_controller_namespace_label_writes_total{kind="remove_foreign"}"#)
            .await
}

// ---------------------------------------------------------------------------------------------
// One shared controller

#[tokio::test]
async fn a_grant_becomes_labels_and_the_grant_is_ready() {
    let _controller = shared().await;
    let client = client().await;
    let ns = TestNamespace::create(&client, "tool").await;
    let name = unique_name("grant");
    let _grant = create_grant(
        &name,
        ns.name(),
        &[
            "quay.io",
            "ghcr.io/wikimedia",
            "registry.example.org:5000/my_team",
        ],
        None,
    );

    kubectl_wait_ready(&name);
    wait_labels(
        &client,
        ns.name(),
        &[
            ("byoc.toolforge.org/ghcr.io_wikimedia", "never"),
            ("byoc.toolforge.org/quay.io", "never"),
            (
                "byoc.toolforge.org/registry.example.org..5000_my__team",
                "never",
            ),
        ],
    )
    .await;

    // Nothing else changed on the namespace; the labels belong to the controller's manager.
    let namespace = Api::<Namespace>::all(client.clone())
        .get(ns.name())
        .await
        .unwrap();
    assert_eq!(
        namespace.labels().get(TEST_LABEL).map(String::as_str),
        Some("true")
    );
    assert_eq!(
        namespace
            .labels()
            .get("kubernetes.io/metadata.name")
            .map(String::as_str),
        Some(ns.name())
    );
    // Written by merge patches, never applied: what an apply entry owns, apply removes.
    let by_controller: Vec<_> = namespace
        .managed_fields()
        .iter()
        .filter(|m| m.manager.as_deref() == Some("byoc-controller"))
        .collect();
    assert!(
        !by_controller.is_empty()
            && by_controller
                .iter()
                .all(|m| m.operation.as_deref() == Some("Update")),
        "byoc-controller's entries: {by_controller:?}"
    );
    let fields = serde_json::to_string(&by_controller[0].fields_v1).unwrap();
    assert!(fields.contains("byoc.toolforge.org/quay.io"), "{fields}");
    assert!(
        !fields.contains(TEST_LABEL),
        "the controller must not own other labels: {fields}"
    );

    let g = wait_reason(&client, &name, "Applied").await;
    let ready = g.ready_condition().unwrap();
    assert_eq!(ready.status, "True");
    assert_eq!(ready.observed_generation, g.metadata.generation);
    assert!(
        ready.message.contains("quay.io, ghcr.io/wikimedia"),
        "{}",
        ready.message
    );
    assert!(
        g.finalizers()
            .iter()
            .any(|f| f == "byoc.toolforge.org/namespace-labels")
    );
    wait_event(&name, "Applied").await;
}

#[tokio::test]
async fn changed_registries_move_the_labels() {
    let _controller = shared().await;
    let client = client().await;
    let ns = TestNamespace::create(&client, "tool").await;
    let name = unique_name("grant");
    let _grant = create_grant(&name, ns.name(), &["quay.io"], None);
    wait_labels(
        &client,
        ns.name(),
        &[("byoc.toolforge.org/quay.io", "never")],
    )
    .await;
    let before = wait_reason(&client, &name, "Applied").await;

    let patch = json!({ "spec": { "registries": ["ghcr.io/wikimedia"], "expiresAt": "2099-01-01T00:00:00Z" } });
    kubectl([
        "patch",
        "byocgrant",
        &name,
        "--type=merge",
        "-p",
        &patch.to_string(),
    ])
    .success();
    wait_labels(
        &client,
        ns.name(),
        &[("byoc.toolforge.org/ghcr.io_wikimedia", "20990101T000000Z")],
    )
    .await;
    let after = eventually(
        "the new generation to be applied",
        CONVERGE_TIMEOUT,
        || async {
            let g = wait_reason(&client, &name, "Applied").await;
            let message = g
                .ready_condition()
                .map(|c| c.message.clone())
                .unwrap_or_default();
            if message.contains("ghcr.io/wikimedia until 2099-01-01T00:00:00Z") {
                Ok(g)
            } else {
                Err(message)
            }
        },
    )
    .await;
    assert!(after.metadata.generation > before.metadata.generation);
    // Ready stayed True, so its transition time did not move.
    assert_eq!(
        after.ready_condition().unwrap().last_transition_time,
        before.ready_condition().unwrap().last_transition_time
    );
}

#[tokio::test]
async fn two_grants_on_one_namespace_are_united() {
    let _controller = shared().await;
    let client = client().await;
    let ns = TestNamespace::create(&client, "tool").await;
    let (first, second) = (unique_name("grant"), unique_name("grant"));
    let _first = create_grant(
        &first,
        ns.name(),
        &["quay.io"],
        Some("2099-01-01T00:00:00Z"),
    );
    let _second = create_grant(&second, ns.name(), &["quay.io", "ghcr.io"], None);

    // Each registry with its latest expiry.
    wait_labels(
        &client,
        ns.name(),
        &[
            ("byoc.toolforge.org/ghcr.io", "never"),
            ("byoc.toolforge.org/quay.io", "never"),
        ],
    )
    .await;
    wait_reason(&client, &first, "Applied").await;
    wait_reason(&client, &second, "Applied").await;

    delete_grant(&client, &second).await;
    wait_labels(
        &client,
        ns.name(),
        &[("byoc.toolforge.org/quay.io", "20990101T000000Z")],
    )
    .await;
    wait_reason(&client, &first, "Applied").await;
}

#[tokio::test]
async fn deleting_a_grant_removes_its_labels() {
    let _controller = shared().await;
    let client = client().await;
    let ns = TestNamespace::create(&client, "tool").await;
    let name = unique_name("grant");
    let _grant = create_grant(&name, ns.name(), &[], None);
    wait_labels(&client, ns.name(), &[("byoc.toolforge.org/any", "never")]).await;
    kubectl_wait_ready(&name);

    delete_grant(&client, &name).await;
    assert_eq!(
        byoc_labels(&client, ns.name()).await,
        BTreeMap::new(),
        "removed before the grant went"
    );
    wait_event(&name, "Revoked").await;
}

#[tokio::test]
async fn an_expired_grant_loses_its_labels() {
    let _controller = shared().await;
    let client = client().await;
    let ns = TestNamespace::create(&client, "tool").await;
    let name = unique_name("grant");
    let now = Timestamp::now().as_second();
    let expires = Timestamp::from_second(now + 8).unwrap();
    let label_value = expires.strftime("%Y%m%dT%H%M%SZ").to_string();
    let _grant = create_grant(&name, ns.name(), &["quay.io"], Some(&expires.to_string()));

    wait_labels(
        &client,
        ns.name(),
        &[("byoc.toolforge.org/quay.io", &label_value)],
    )
    .await;
    wait_reason(&client, &name, "Applied").await;

    let g = wait_reason(&client, &name, "Expired").await;
    assert!(Timestamp::now() >= expires, "expired early");
    assert!(
        Timestamp::now() < expires + SignedDuration::from_secs(CONVERGE_TIMEOUT.as_secs() as i64),
        "expired late"
    );
    assert_eq!(g.ready_condition().unwrap().status, "False");
    assert_eq!(byoc_labels(&client, ns.name()).await, BTreeMap::new());
    wait_event(&name, "Expired").await;
}

#[tokio::test]
async fn a_grant_applies_once_its_namespace_exists() {
    let _controller = shared().await;
    let client = client().await;
    let namespace = unique_name("tool");
    let name = unique_name("grant");
    let _grant = create_grant(&name, &namespace, &["quay.io"], None);
    let waiting = wait_reason(&client, &name, "NamespaceNotFound").await;
    assert_eq!(waiting.ready_condition().unwrap().status, "False");

    let _ns = create_namespace(&namespace, &[]);
    wait_labels(
        &client,
        &namespace,
        &[("byoc.toolforge.org/quay.io", "never")],
    )
    .await;
    kubectl_wait_ready(&name);
}

#[tokio::test]
async fn hand_edited_labels_are_repaired() {
    let _controller = shared().await;
    let client = client().await;
    let ns = TestNamespace::create(&client, "tool").await;
    let name = unique_name("grant");
    let _grant = create_grant(&name, ns.name(), &["quay.io"], None);
    let want = [("byoc.toolforge.org/quay.io", "never")];
    wait_labels(&client, ns.name(), &want).await;

    // A changed value and an added registry: both undone.
    kubectl([
        "label",
        "namespace",
        ns.name(),
        "--overwrite",
        "byoc.toolforge.org/quay.io=20000101T000000Z",
        "byoc.toolforge.org/evil.example.org=never",
    ])
    .success();
    wait_labels(&client, ns.name(), &want).await;

    // A removed label: put back.
    kubectl([
        "label",
        "namespace",
        ns.name(),
        "byoc.toolforge.org/quay.io-",
    ])
    .success();
    wait_labels(&client, ns.name(), &want).await;

    // A namespace without any grant gets no label under the prefix; others stay.
    let bare = unique_name("tool");
    let _bare = create_namespace(&bare, &[("byoc.toolforge.org/any", "never"), ("team", "x")]);
    wait_labels(&client, &bare, &[]).await;
    let namespace = Api::<Namespace>::all(client.clone())
        .get(&bare)
        .await
        .unwrap();
    assert_eq!(
        namespace.labels().get("team").map(String::as_str),
        Some("x")
    );
}

// ---------------------------------------------------------------------------------------------
// Controllers of their own

#[tokio::test]
async fn a_restarted_controller_converges_without_writing_again() {
    let cluster = exclusive().await;
    let client = client().await;
    let first = cluster.spawn(&unique_name("restart"), &[]);
    first.wait_leader().await;

    let settled = TestNamespace::create(&client, "tool").await;
    let busy = TestNamespace::create(&client, "tool").await;
    let (kept, revoked, added) = (
        unique_name("grant"),
        unique_name("grant"),
        unique_name("grant"),
    );
    let _kept = create_grant(&kept, settled.name(), &["quay.io"], None);
    let _revoked = create_grant(&revoked, busy.name(), &["quay.io"], None);
    wait_labels(
        &client,
        settled.name(),
        &[("byoc.toolforge.org/quay.io", "never")],
    )
    .await;
    wait_labels(
        &client,
        busy.name(),
        &[("byoc.toolforge.org/quay.io", "never")],
    )
    .await;
    let kept_grant = wait_reason(&client, &kept, "Applied").await;
    wait_reason(&client, &revoked, "Applied").await;
    let settled_rv = namespace_rv(&client, settled.name()).await;

    // Stopped mid-way: a grant is deleted and another created while no controller runs.
    let status = first.stop();
    assert!(
        status.success(),
        "SIGTERM must stop the controller cleanly: {status}\n{}",
        first.log_tail()
    );
    kubectl(["delete", "byocgrant", &revoked, "--wait=false"]).success();
    let _added = create_grant(&added, busy.name(), &["ghcr.io"], None);

    // The next controller catches up...
    let second = cluster.spawn(&unique_name("restart"), &[]);
    second.wait_leader().await;
    wait_labels(
        &client,
        busy.name(),
        &[("byoc.toolforge.org/ghcr.io", "never")],
    )
    .await;
    wait_reason(&client, &added, "Applied").await;
    wait_gone(&client, &revoked).await;
    wait_all_grants_seen(&client, &second).await;
    // ...without touching what was already right.
    assert_eq!(
        namespace_rv(&client, settled.name()).await,
        settled_rv,
        "settled namespace written"
    );
    assert_eq!(
        grant(&client, &kept).await.resource_version(),
        kept_grant.resource_version(),
        "settled grant written"
    );

    // Restarted with nothing to do: it reconciles everything and writes nothing at all.
    let busy_rv = namespace_rv(&client, busy.name()).await;
    let added_rv = grant(&client, &added).await.resource_version();
    assert!(second.stop().success(), "{}", second.log_tail());
    let third = cluster.spawn(&unique_name("restart"), &[]);
    third.wait_leader().await;
    wait_all_grants_seen(&client, &third).await;
    assert!(
        third
            .metric(r#"byoc_controller_reconciles_total{controller="byocgrant"}"#)
            .await
            >= 2.0
    );
    assert_eq!(label_writes(&third).await, 0.0, "labels written again");
    assert_eq!(
        third.metric("byoc_controller_status_writes_total").await,
        0.0,
        "status written again"
    );
    assert_eq!(namespace_rv(&client, settled.name()).await, settled_rv);
    assert_eq!(namespace_rv(&client, busy.name()).await, busy_rv);
    assert_eq!(grant(&client, &added).await.resource_version(), added_rv);
    assert_eq!(
        grant(&client, &kept).await.resource_version(),
        kept_grant.resource_version()
    );
}

/// How many events with `reason` are about the object `name` in `namespace`.
fn events_about(namespace: &str, name: &str, reason: &str) -> usize {
    kubectl([
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        &format!("involvedObject.name={name},reason={reason}"),
        "-o",
        "name",
    ])
    .success()
    .stdout
    .lines()
    .count()
}

/// The `ExpiringSoon` condition's status on grant `name`, if it has one.
async fn expiring_soon(client: &Client, name: &str) -> Option<String> {
    grant(client, name)
        .await
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "ExpiringSoon")
        .map(|c| c.status)
}

/// A grant for quay.io in `namespace` ending at `expires`, approved from `request` (the
/// annotation `kubectl byoc approve` writes).
fn create_requested_grant(
    name: &str,
    namespace: &str,
    request: &RequestRecord,
    expires: Timestamp,
) -> Cleanup {
    let mut manifest: serde_json::Value = serde_json::from_str(&grant_manifest(
        name,
        json!({ "namespace": namespace, "reason": "e2e: expiry reminder", "registries": ["quay.io"],
                "expiresAt": expires.to_string() }),
    ))
    .expect("a manifest");
    manifest["metadata"]["annotations"] =
        json!({ byoc_api::REQUEST_ANNOTATION: request.to_string() });
    kubectl_stdin(&["create", "-f", "-"], &manifest.to_string()).success();
    Cleanup::new(["byocgrant", name])
}

#[tokio::test]
async fn a_grant_entering_the_expiry_window_is_announced_once_across_restarts() {
    let cluster = exclusive().await;
    let client = client().await;
    let first = cluster.spawn(&unique_name("expiry"), &[]);
    first.wait_leader().await;
    let ns = TestNamespace::create(&client, "tool").await;

    // The request the grant was approved from, made as a maintainer would (its status is the
    // request flow's business; the reminder only needs the object).
    let requests: Api<ByocRequest> = Api::namespaced(client.clone(), ns.name());
    let request = ByocRequest::new(
        "exporter",
        ByocRequestSpec {
            registries: vec!["quay.io".into()],
            reason: "e2e: expiry reminder".into(),
            duration: Some("3d".into()),
        },
    );
    let request = requests
        .create(&Default::default(), &request)
        .await
        .expect("create the ByocRequest");
    let record = RequestRecord::of(&request).expect("a stored request has a uid");
    // `managedFields` nested deeper than a `serde_json::Value` reads (a maintainer may patch
    // its request): the reminder still reaches the request.
    let deep = format!(
        r#"{{"metadata":{{"managedFields":{}}}}}"#,
        byoc_api::lenient::nested_managed_fields("byoc.toolforge.org/v1alpha1", 130)
    );
    kubectl([
        "-n",
        ns.name(),
        "patch",
        "byocreq",
        "exporter",
        "--type=merge",
        "-p",
        &deep,
    ])
    .success();

    let now = Timestamp::from_second(Timestamp::now().as_second()).expect("now");
    let soon_at = now + SignedDuration::from_hours(72);
    let later_at = now + SignedDuration::from_hours(60 * 24);
    let (soon, later) = (unique_name("grant"), unique_name("grant"));
    let _soon = create_requested_grant(&soon, ns.name(), &record, soon_at);
    let _later = create_grant(&later, ns.name(), &["ghcr.io"], Some(&later_at.to_string()));

    // Announced on the grant (events about cluster-scoped objects go to default) and on the
    // request, where `kubectl describe byocreq` shows it.
    wait_event(&soon, "ExpiringSoon").await;
    eventually("the reminder on the request", CONVERGE_TIMEOUT, || async {
        match events_about(ns.name(), "exporter", "ExpiringSoon") {
            1 => Ok(()),
            n => Err(format!("{n} events")),
        }
    })
    .await;
    let describe = kubectl(["-n", ns.name(), "describe", "byocreq", "exporter"]).success();
    assert!(
        describe.stdout.contains("ExpiringSoon")
            && describe.stdout.contains(&format!("expires at {soon_at}")),
        "{describe}"
    );
    wait_reason(&client, &soon, "Applied").await;
    assert_eq!(expiring_soon(&client, &soon).await.as_deref(), Some("True"));
    let series = |g: &str| {
        format!(
            r#"byoc_grant_expiry_timestamp_seconds{{grant="{g}",namespace="{}"}}"#,
            ns.name()
        )
    };
    assert_eq!(
        first.metric(&series(&soon)).await,
        soon_at.as_second() as f64
    );
    assert_eq!(
        first.metric(&series(&later)).await,
        later_at.as_second() as f64
    );
    // 60 days away: outside the window, no condition, no event.
    wait_reason(&client, &later, "Applied").await;
    assert_eq!(expiring_soon(&client, &later).await, None);
    assert_eq!(events_about("default", &later, "ExpiringSoon"), 0);

    // A restarted controller reconciles everything again and announces nothing twice.
    assert!(first.stop().success(), "{}", first.log_tail());
    let second = cluster.spawn(&unique_name("expiry"), &[]);
    second.wait_leader().await;
    wait_all_grants_seen(&client, &second).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(events_about("default", &soon, "ExpiringSoon"), 1);
    assert_eq!(events_about(ns.name(), "exporter", "ExpiringSoon"), 1);
    assert_eq!(
        second.metric(&series(&soon)).await,
        soon_at.as_second() as f64
    );

    // Extended beyond the window: the condition goes; deleted: the sample goes.
    let extended = json!({ "spec": { "expiresAt": later_at.to_string() } }).to_string();
    kubectl(["patch", "byocgrant", &soon, "--type=merge", "-p", &extended]).success();
    eventually("ExpiringSoon to go", CONVERGE_TIMEOUT, || async {
        match expiring_soon(&client, &soon).await {
            None => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    delete_grant(&client, &soon).await;
    eventually("the expiry sample to go", CONVERGE_TIMEOUT, || async {
        match second.get("/metrics").await {
            Ok((_, body)) if !body.contains(&format!("grant=\"{soon}\"")) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// An `expiresAt` the CRD's `date-time` format accepts but the Rust side cannot read: ten
/// fractional digits.
const UNREADABLE_EXPIRY: &str = "2099-01-01T00:00:00.1234567891Z";

/// Whether the API server currently stores `expiresAt: UNREADABLE_EXPIRY` (server dry run).
fn accepts_unreadable_expiry() -> bool {
    let spec = json!({ "namespace": "tool-x", "reason": "probe", "anyRegistry": true,
                       "expiresAt": UNREADABLE_EXPIRY });
    let manifest = grant_manifest(&unique_name("probe"), spec);
    kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &manifest)
        .status
        .success()
}

/// The ByocGrant CRD as it was before `spec.expiresAt` had a pattern (only Kubernetes'
/// `date-time` format), while the guard lives: the way grants with unreadable expiries were
/// stored before the pattern existed. Dropping it applies the committed CRD again.
struct CrdWithoutExpiryPattern {
    _crd: LoosenedGrantCrd,
}

impl CrdWithoutExpiryPattern {
    async fn apply() -> Self {
        let guard = Self {
            _crd: LoosenedGrantCrd::without(
                "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/expiresAt/pattern",
            ),
        };
        wait_expiry_schema(true).await;
        guard
    }
}

/// Waits until the API server's schema accepts (or refuses) [`UNREADABLE_EXPIRY`].
async fn wait_expiry_schema(accepts: bool) {
    eventually(
        &format!("the API server to accept {UNREADABLE_EXPIRY}: {accepts}"),
        CONVERGE_TIMEOUT,
        || async {
            if accepts_unreadable_expiry() == accepts {
                Ok(())
            } else {
                Err("not yet".to_owned())
            }
        },
    )
    .await;
}

/// Issue 12: a grant whose stored `expiresAt` the Rust side cannot read does not stop the
/// others. It is stored honestly, the way such grants came to exist: under the CRD as it was
/// before `expiresAt` had a pattern (Kubernetes' `date-time` format accepts ten fractional
/// digits), after which the current CRD is applied again; nothing is written behind the API
/// server's back. After a controller restart, every other grant is reconciled (one created while
/// no controller ran), the unreadable one grants nothing (its namespace loses its label) and is
/// reported (Ready False/Invalid naming the field, a Warning event, the Invalid gauge);
/// `kubectl byoc list` lists the rest and names it; `kubectl byoc grant` repairs such a grant,
/// and `kubectl byoc revoke` deletes one (the controller removes its finalizer).
#[tokio::test]
async fn an_unreadable_grant_stops_no_other_after_a_restart() {
    let cluster = exclusive().await;
    let client = client().await;
    byoc_e2e::install_crd(&client).await;
    let first = cluster.spawn(&unique_name("unreadable"), &[]);
    first.wait_leader().await;

    let good_ns = TestNamespace::create(&client, "tool-good").await;
    let bad_ns = TestNamespace::create(&client, "tool-bad").await;
    let (good, later, repaired, removed) = (
        unique_name("good"),
        unique_name("later"),
        unique_name("repaired"),
        unique_name("removed"),
    );
    let _good = create_grant(&good, good_ns.name(), &["quay.io"], None);
    let _repaired = create_grant(&repaired, bad_ns.name(), &["ghcr.io"], None);
    let _removed = create_grant(&removed, bad_ns.name(), &["docker.io"], None);
    wait_labels(
        &client,
        bad_ns.name(),
        &[
            ("byoc.toolforge.org/docker.io", "never"),
            ("byoc.toolforge.org/ghcr.io", "never"),
        ],
    )
    .await;
    wait_reason(&client, &good, "Applied").await;
    assert!(first.stop().success(), "{}", first.log_tail());

    // While no controller runs: the two grants of bad_ns get an unreadable expiry under the
    // old schema, the current one comes back (and refuses such values again), and a new grant
    // is created.
    assert!(
        !accepts_unreadable_expiry(),
        "the committed CRD must refuse {UNREADABLE_EXPIRY}"
    );
    {
        let _old_schema = CrdWithoutExpiryPattern::apply().await;
        let patch = json!({ "spec": { "expiresAt": UNREADABLE_EXPIRY } }).to_string();
        for name in [&repaired, &removed] {
            kubectl(["patch", "byocgrant", name, "--type=merge", "-p", &patch]).success();
        }
    }
    wait_expiry_schema(false).await;
    let stored = kubectl([
        "get",
        "byocgrant",
        &repaired,
        "-o",
        "jsonpath={.spec.expiresAt}",
    ])
    .success();
    assert_eq!(stored.stdout, UNREADABLE_EXPIRY, "{stored}");
    let typed = Api::<ByocGrant>::all(client.clone())
        .list(&Default::default())
        .await;
    assert!(
        typed.is_err(),
        "a typed list must fail on the unreadable grant, or this test proves nothing"
    );
    let _later = create_grant(&later, good_ns.name(), &[], None);

    // The restarted controller reconciles every other grant...
    let second = cluster.spawn(&unique_name("unreadable"), &[]);
    second.wait_leader().await;
    wait_labels(
        &client,
        good_ns.name(),
        &[
            ("byoc.toolforge.org/any", "never"),
            ("byoc.toolforge.org/quay.io", "never"),
        ],
    )
    .await;
    wait_reason(&client, &later, "Applied").await;
    wait_reason(&client, &good, "Applied").await;
    // ...and the unreadable ones grant nothing and say why.
    wait_labels(&client, bad_ns.name(), &[]).await;
    for name in [&repaired, &removed] {
        let message = eventually(
            &format!("{name} to be reported Invalid"),
            CONVERGE_TIMEOUT,
            || async {
                let out = kubectl([
                    "get",
                    "byocgrant",
                    name,
                    "-o",
                    r#"jsonpath={.status.conditions[?(@.type=="Ready")].reason}/{.status.conditions[?(@.type=="Ready")].message}"#,
                ])
                .success();
                match out.stdout.split_once('/') {
                    Some(("Invalid", message)) => Ok(message.to_owned()),
                    _ => Err(out.stdout),
                }
            },
        )
        .await;
        assert!(
            message
                .starts_with("this grant cannot be read, so it grants nothing: spec.expiresAt: "),
            "{message}"
        );
        wait_event(name, "Invalid").await;
    }
    assert_eq!(
        second
            .metric(r#"byoc_controller_grants{state="Invalid"}"#)
            .await,
        2.0
    );

    // kubectl get byoc: "any" plainly, the registries of the others, nothing for the unreadable.
    let out = kubectl(["get", "byoc", &good, &later, &repaired]).success();
    let (header, rows) = parse_table(&out.stdout);
    assert_eq!(header[2], "REGISTRIES", "{out}");
    let cells: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r[0].as_str(), r[2].as_str(), r[5].as_str()))
        .collect();
    for want in [
        (good.as_str(), "quay.io", "Applied"),
        (later.as_str(), "any", "Applied"),
        (repaired.as_str(), "", "Invalid"),
    ] {
        assert!(cells.contains(&want), "{want:?} in {out}");
    }

    // kubectl byoc list: lists the rest, names the unreadable ones and why.
    let out = byoc(["list"]).exits(0);
    let (_, rows) = parse_table(&out.stdout);
    let row = |name: &str| {
        rows.iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {out}"))
            .clone()
    };
    assert_eq!(
        row(&good)[2..6],
        ["quay.io", "never", "True", "Applied"],
        "{out}"
    );
    assert_eq!(row(&later)[2], "any", "{out}");
    assert_eq!(
        row(&repaired)[1..6],
        [bad_ns.name(), "?", "?", "False", "Unreadable"],
        "{out}"
    );
    assert!(
        out.stderr.contains(&format!(
            "warning: byocgrant/{repaired} cannot be read, so it grants nothing: spec.expiresAt: "
        )),
        "{out}"
    );
    let json = byoc(["list", "-o", "json"]).exits(0).json();
    let unreadable: Vec<&str> = json["unreadable"]
        .as_array()
        .expect("unreadable")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert!(
        unreadable.contains(&repaired.as_str()) && unreadable.contains(&removed.as_str()),
        "{json}"
    );

    // The admin's ways out: `grant` overwrites an unreadable spec, `revoke` deletes one.
    let out = byoc([
        "grant",
        bad_ns.name(),
        "--name",
        &repaired,
        "--reason",
        "T1: repaired",
        "--registry",
        "ghcr.io",
        "--wait",
    ])
    .exits(0);
    assert!(
        out.stderr.contains("could not be read") && out.stdout.contains(" configured: "),
        "{out}"
    );
    wait_labels(
        &client,
        bad_ns.name(),
        &[("byoc.toolforge.org/ghcr.io", "never")],
    )
    .await;
    let out = byoc(["revoke", "--name", &removed, "--wait"]).exits(0);
    assert!(
        out.stdout.starts_with(&format!(
            "byocgrant/{removed} deleted: unreadable grant (spec.expiresAt: "
        )),
        "{out}"
    );
    wait_gone(&client, &removed).await;
    Api::<ByocGrant>::all(client.clone())
        .list(&Default::default())
        .await
        .expect("with the unreadable grants gone, a typed list reads again");
    second.assert_running();
}

#[tokio::test]
async fn two_replicas_elect_one_leader() {
    let cluster = exclusive().await;
    let client = client().await;
    let args = ["--lease-duration=4"];
    let a = cluster.spawn(&unique_name("replica"), &args);
    let b = cluster.spawn(&unique_name("replica"), &args);
    a.wait_ready().await;
    b.wait_ready().await;

    let (leader, standby) = eventually("one leader", CONVERGE_TIMEOUT, || async {
        match (a.is_leader().await, b.is_leader().await) {
            (true, false) => Ok((&a, &b)),
            (false, true) => Ok((&b, &a)),
            both => Err(format!("leaders: {both:?}")),
        }
    })
    .await;
    assert_eq!(lease_holder(), leader.identity());

    let ns = TestNamespace::create(&client, "tool").await;
    let name = unique_name("grant");
    let _grant = create_grant(&name, ns.name(), &["quay.io"], None);
    wait_labels(
        &client,
        ns.name(),
        &[("byoc.toolforge.org/quay.io", "never")],
    )
    .await;
    kubectl_wait_ready(&name);
    assert!(reconciles(leader).await > 0.0);
    assert!(label_writes(leader).await > 0.0);
    assert_eq!(reconciles(standby).await, 0.0, "the standby reconciled");
    assert_eq!(label_writes(standby).await, 0.0, "the standby wrote labels");
    assert!(!standby.is_leader().await);

    // The leader goes (and releases the lease): the standby takes over.
    assert!(leader.stop().success(), "{}", leader.log_tail());
    standby.wait_leader().await;
    assert_eq!(lease_holder(), standby.identity());
    let other = TestNamespace::create(&client, "tool").await;
    let second = unique_name("grant");
    let _second = create_grant(&second, other.name(), &["ghcr.io"], None);
    wait_labels(
        &client,
        other.name(),
        &[("byoc.toolforge.org/ghcr.io", "never")],
    )
    .await;
    kubectl_wait_ready(&second);
}

#[tokio::test]
async fn the_lease_stays_with_one_replica_while_both_run() {
    let cluster = exclusive().await;
    let args = ["--lease-duration=3"];
    let a = cluster.spawn(&unique_name("replica"), &args);
    let b = cluster.spawn(&unique_name("replica"), &args);
    a.wait_ready().await;
    b.wait_ready().await;
    eventually("a lease holder", CONVERGE_TIMEOUT, || async {
        let holder = lease_holder();
        if holder == a.identity() || holder == b.identity() {
            Ok(())
        } else {
            Err(holder)
        }
    })
    .await;
    let holder = lease_holder();
    // Over several lease durations, the holder renews and nobody else ever leads.
    for _ in 0..16 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            lease_holder(),
            holder,
            "the lease moved while its holder ran"
        );
        let leaders = [a.is_leader().await, b.is_leader().await];
        assert_eq!(
            leaders.iter().filter(|l| **l).count(),
            1,
            "leaders: {leaders:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Scale benchmark (DESIGN §10), ignored by default: see docs/benchmarks.md, "Controller".
//
//   cargo build --release -p byoc-controller
//   BYOC_CONTROLLER_BIN=$PWD/target/release/byoc-controller BYOC_BENCH_GRANTS=1000 \
//     hack/local-cluster.sh exec -- cargo test -p byoc-e2e --test controller -- \
//     --ignored --nocapture scale_benchmark

/// Grants (and namespaces) per phase: `BYOC_BENCH_GRANTS`, default 1,000.
fn bench_size() -> usize {
    std::env::var("BYOC_BENCH_GRANTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000)
}

/// Creates `n` namespaces and one grant for each (`PREFIX-i`), 32 requests in flight.
async fn create_many(client: &Client, prefix: &str, n: usize) {
    use std::sync::Arc;
    let permits = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (client, permits) = (client.clone(), permits.clone());
        let name = format!("{prefix}-{i:04}");
        tasks.spawn(async move {
            let _permit = permits.acquire().await.expect("semaphore");
            let ns = Namespace {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some([(TEST_LABEL.to_owned(), "bench".to_owned())].into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            let pp = kube::api::PostParams::default();
            Api::<Namespace>::all(client.clone())
                .create(&pp, &ns)
                .await
                .expect("create namespace");
            let mut g = ByocGrant::new(
                &name,
                byoc_api::ByocGrantSpec {
                    namespace: name.clone(),
                    reason: "benchmark".into(),
                    registries: vec!["quay.io".into(), format!("{name}.example.org")],
                    any_registry: false,
                    namespace_uid: None,
                    expires_at: None,
                    requirements: None,
                },
            );
            g.metadata.labels = Some([(TEST_LABEL.to_owned(), "bench".to_owned())].into());
            Api::<ByocGrant>::all(client)
                .create(&pp, &g)
                .await
                .expect("create grant");
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("create task");
    }
}

/// Waits until the controller counts `n` grants Applied; returns the time it took.
async fn wait_applied(
    controller: &ControllerProcess,
    n: usize,
    since: std::time::Instant,
) -> Duration {
    wait_metric(
        controller,
        r#"byoc_controller_grants{state="Applied"}"#,
        n,
        since,
    )
    .await
}

/// Time from `since` until the controller's `metric` reaches `n` (polled every 20 ms).
async fn wait_metric(
    controller: &ControllerProcess,
    metric: &str,
    n: usize,
    since: std::time::Instant,
) -> Duration {
    let deadline = since + Duration::from_secs(600);
    loop {
        let value = controller.metric(metric).await;
        if value >= n as f64 {
            return since.elapsed();
        }
        controller.assert_running();
        assert!(
            std::time::Instant::now() < deadline,
            "{metric}: only {value} of {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every grant with `prefix` has Ready=True for its generation (one list, as a cross-check).
async fn assert_all_ready(client: &Client, prefix: &str, n: usize) {
    let grants = Api::<ByocGrant>::all(client.clone())
        .list(&Default::default())
        .await
        .expect("list grants");
    let ready = grants
        .items
        .iter()
        .filter(|g| g.name_any().starts_with(prefix))
        .filter(|g| {
            g.ready_condition().is_some_and(|c| c.status == "True")
                && g.status.as_ref().and_then(|s| s.observed_generation) == g.metadata.generation
        })
        .count();
    assert_eq!(ready, n, "grants {prefix}-* Ready");
}

#[tokio::test]
#[ignore = "scale benchmark: minutes of work; run on its own cluster (see docs/benchmarks.md)"]
async fn scale_benchmark() {
    use std::time::Instant;
    let cluster = exclusive().await;
    let client = client().await;
    let n = bench_size();
    let existing = Api::<ByocGrant>::all(client.clone())
        .list(&Default::default())
        .await
        .unwrap();
    assert!(
        existing.items.is_empty(),
        "run the benchmark on a cluster without grants"
    );
    let cpus = std::thread::available_parallelism().map_or(0, |p| p.get());
    println!(
        "controller scale benchmark: {n} grants per phase, {cpus} CPUs, load {}, binary {} {}",
        load_average(),
        byoc_e2e::controller::binary().display(),
        std::env::var("BYOC_BENCH_ARGS").unwrap_or_default(),
    );

    // Phase 1: the controller starts on n grants that nobody has reconciled yet.
    let t = Instant::now();
    create_many(&client, "bench-a", n).await;
    println!(
        "created {n} namespaces + {n} grants (no controller running) in {:.2?}",
        t.elapsed()
    );
    let started = Instant::now();
    // `BYOC_BENCH_ARGS`: extra controller flags, e.g. `--concurrency=64`.
    let extra = std::env::var("BYOC_BENCH_ARGS").unwrap_or_default();
    let args: Vec<&str> = extra.split_whitespace().collect();
    let controller = cluster.spawn("bench", &args);
    controller.wait_ready().await;
    // Labels first: each grant's namespace is labelled before its status is written.
    let labelled = wait_metric(
        &controller,
        r#"byoc_controller_namespace_label_writes_total{kind="set"}"#,
        n,
        started,
    )
    .await;
    let catch_up = wait_applied(&controller, n, started).await;
    assert_all_ready(&client, "bench-a", n).await;
    let (rss, hwm) = rss_mib(controller.pid());
    println!(
        "phase 1: controller start -> {n} namespaces labelled: {labelled:.2?}, {n} grants Ready: {catch_up:.2?} (RSS {rss:.1} MiB, peak {hwm:.1} MiB, controller CPU {:.1}s, load {})",
        cpu_secs(controller.pid()),
        load_average()
    );
    // `BYOC_BENCH_PHASES=1`: only the start-up catch-up (the cluster is thrown away after).
    if std::env::var("BYOC_BENCH_PHASES").is_ok_and(|p| p == "1") {
        assert!(controller.stop().success(), "{}", controller.log_tail());
        return;
    }

    // Phase 2: n more namespaces and grants created while the controller runs.
    let t = Instant::now();
    create_many(&client, "bench-b", n).await;
    let created = t.elapsed();
    let all_ready = wait_applied(&controller, 2 * n, t).await;
    assert_all_ready(&client, "bench-b", n).await;
    let (rss, hwm) = rss_mib(controller.pid());
    println!(
        "phase 2: first create -> {n} more grants Ready: {all_ready:.2?} (creating took {created:.2?}; RSS {rss:.1} MiB, peak {hwm:.1} MiB, controller CPU {:.1}s, load {})",
        cpu_secs(controller.pid()),
        load_average()
    );

    // Phase 3: one grant change -> label, measured with a watch on the namespace.
    let changes = 100;
    let grants = Api::<ByocGrant>::all(client.clone());
    let mut latencies = Vec::with_capacity(changes);
    let mut patch_calls = Vec::with_capacity(changes);
    for i in 0..changes {
        let name = format!("bench-a-{:04}", i % n);
        let registry = format!("change-{i}.example.org");
        let key = format!("byoc.toolforge.org/{registry}");
        let namespaces = Api::<Namespace>::all(client.clone());
        let (ns, k) = (name.clone(), key.clone());
        let seen = tokio::spawn(async move {
            await_condition(namespaces, &ns, move |o: Option<&Namespace>| {
                o.is_some_and(|o| o.labels().contains_key(&k))
            })
            .await
            .expect("watch namespace");
            Instant::now()
        });
        // Let the watch start before the change.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let patch = json!({ "spec": { "registries": ["quay.io", registry] } });
        let sent = Instant::now();
        grants
            .patch(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .expect("patch grant");
        patch_calls.push(sent.elapsed());
        let at = tokio::time::timeout(Duration::from_secs(30), seen)
            .await
            .expect("label")
            .unwrap();
        latencies.push(at.duration_since(sent));
    }
    latencies.sort();
    patch_calls.sort();
    let (rss, hwm) = rss_mib(controller.pid());
    println!(
        "phase 3: grant change -> label over {changes} changes: p50 {:.1?}, p90 {:.1?}, p99 {:.1?}, max {:.1?} (RSS {rss:.1} MiB, peak {hwm:.1} MiB)",
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        latencies[latencies.len() - 1],
    );
    println!(
        "phase 3: of which the bench's own PATCH call (request to response): p50 {:.1?}, p99 {:.1?}",
        percentile(&patch_calls, 50.0),
        percentile(&patch_calls, 99.0),
    );

    // Phase 4: revoke everything (finalizers, label removal), then tidy up.
    let t = Instant::now();
    kubectl([
        "delete",
        "byocgrants",
        "-l",
        &format!("{TEST_LABEL}=bench"),
        "--wait=false",
    ])
    .success();
    eventually("every grant deleted", Duration::from_secs(600), || async {
        let left = grants
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .len();
        if left == 0 {
            Ok(())
        } else {
            Err(format!("{left} left"))
        }
    })
    .await;
    println!(
        "phase 4: {} grants deleted (labels removed, finalizers released) in {:.2?}",
        2 * n,
        t.elapsed()
    );
    kubectl([
        "delete",
        "namespaces",
        "-l",
        &format!("{TEST_LABEL}=bench"),
        "--wait=false",
    ])
    .success();
    assert!(controller.stop().success(), "{}", controller.log_tail());
}

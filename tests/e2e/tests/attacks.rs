//! Tenant attacks through the real API server, with the real webhook registered as deployed
//! (issue 8; `docs/threat-model.md` maps each attack to its test). A tenant is a user (by
//! impersonation) with the rights a tool maintainer could plausibly have — sometimes more — and
//! every attack below must be refused. Each test also performs a control: the same request made
//! harmless (or made by the trusted identity) succeeds, so a refusal is the protection's doing,
//! not an accident of RBAC or validation.
//!
//! ```text
//! hack/local-cluster.sh exec -- cargo test -p byoc-e2e --test attacks
//! ```
//!
//! Covered elsewhere, not repeated here: a tenant changing or removing byoc labels with
//! `kubectl label`/merge patch (`tests/webhook.rs::a_tenant_who_may_patch_its_namespace_cannot_touch_byoc_labels`),
//! `kubectl debug` (`tests/webhook.rs::kubectl_debug_needs_an_allowed_image`), a pod update
//! swapping images (`tests/webhook.rs::pod_update_swapping_in_a_bad_image_is_refused`),
//! Deployment/CronJob creation (`tests/webhook.rs::workloads_with_docker_hub_images_are_refused_at_apply`),
//! and image volumes (`tests/webhook.rs::image_volumes_are_checked_like_container_images`).

use byoc_e2e::chaos::{Outcome, try_pod};
use byoc_e2e::controller;
use byoc_e2e::webhook::{CONTROLLER_USER, NAMESPACES_WEBHOOK, Options, PODS_WEBHOOK, Webhook};
use byoc_e2e::{
    CONVERGE_TIMEOUT, Cleanup, Output, TEST_LABEL, TestNamespace, byoc_labels, client,
    create_grant, eventually, grant_manifest, kubectl, kubectl_as, kubectl_run, kubectl_stdin,
    requirements_annotation, unique_name, wait_can,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client};
use serde_json::{Value, json};

const PLATFORM: &str = "docker-registry.tools.wmflabs.org/toolforge-python311:latest";
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn denied_by(webhook: &str) -> String {
    format!("admission webhook \"{webhook}\" denied the request")
}

async fn tool_namespace() -> TestNamespace {
    let client = client().await;
    let ns = TestNamespace::create(&client, "atk").await;
    ns.wait_for_default_service_account(&client).await;
    ns
}

/// Binds `clusterrole` to `user`: cluster-wide, or (with `namespace`) inside one namespace
/// only. Removed at drop.
fn bind(user: &str, clusterrole: &str, namespace: Option<&str>) -> Cleanup {
    let name = unique_name("atk-bind");
    match namespace {
        Some(ns) => {
            kubectl([
                "-n",
                ns,
                "create",
                "rolebinding",
                &name,
                &format!("--clusterrole={clusterrole}"),
                &format!("--user={user}"),
            ])
            .success();
            Cleanup::new(["-n", ns, "rolebinding", &name])
        }
        None => {
            kubectl([
                "create",
                "clusterrolebinding",
                &name,
                &format!("--clusterrole={clusterrole}"),
                &format!("--user={user}"),
            ])
            .success();
            Cleanup::new(["clusterrolebinding", &name])
        }
    }
}

/// One change of a namespace's `key` in `meta` (`None`: its removal).
struct Write<'a> {
    meta: Meta,
    key: &'a str,
    value: Option<&'a str>,
}

impl Write<'_> {
    /// Asserts that the guard refuses the change by every resource write of `patcher` and every
    /// subresource write of `statuser` on namespace `name`, with `refusal(user)` and `why`.
    fn refused_to(
        &self,
        patcher: &str,
        statuser: &str,
        name: &str,
        guard: &str,
        refusal: impl Fn(&str) -> String,
        why: &str,
    ) {
        let Self { meta, key, value } = *self;
        for out in resource_writes(patcher, name, meta, key, value) {
            out.fails_with(&[guard, &refusal(patcher), why]);
        }
        for how in SubresourceWrite::ALL {
            // A removal has no status server-side apply form.
            if value.is_none() && matches!(how, SubresourceWrite::StatusApply) {
                continue;
            }
            how.run(statuser, name, meta, key, value)
                .fails_with(&[guard, &refusal(statuser)]);
        }
    }
}

/// Two tenants of namespace `name`: `patcher` may get/patch/update it and, cluster-wide,
/// create namespaces; `statuser` may get/patch/update only its status and finalize
/// subresources. Returned once both can change an unguarded key of `meta` (`team`), so every
/// refusal that follows is the guard's.
struct Tenants {
    patcher: String,
    statuser: String,
    _grants: Vec<Cleanup>,
}

impl Tenants {
    async fn of(name: &str, meta: Meta) -> Self {
        let patcher = unique_name("tenant");
        let (own, own_role) = cluster_role("get,patch,update", "namespaces");
        let (create, create_role) = cluster_role("create", "namespaces");
        let statuser = unique_name("tenant");
        let (status, status_role) =
            cluster_role("get,patch,update", "namespaces/status,namespaces/finalize");
        let grants = vec![
            own_role,
            create_role,
            status_role,
            bind(&patcher, &own, Some(name)),
            bind(&patcher, &create, None),
            bind(&statuser, &status, Some(name)),
        ];
        let verb = match meta {
            Meta::Labels => "label",
            Meta::Annotations => "annotate",
        };
        eventually("RBAC for the tenants", CONVERGE_TIMEOUT, || async {
            let a = kubectl_as(
                &patcher,
                &[verb, "namespace", name, "team=a", "--overwrite"],
                None,
            );
            let b =
                SubresourceWrite::StatusMergePatch.run(&statuser, name, meta, "team", Some("b"));
            if a.status.success() && b.status.success() {
                Ok(())
            } else {
                Err(format!("{a}\n{b}"))
            }
        })
        .await;
        Self {
            patcher,
            statuser,
            _grants: grants,
        }
    }
}

/// A ClusterRole with `verbs` on `resources`; removed at drop.
fn cluster_role(verbs: &str, resources: &str) -> (String, Cleanup) {
    let name = unique_name("atk-role");
    kubectl([
        "create",
        "clusterrole",
        &name,
        &format!("--verb={verbs}"),
        &format!("--resource={resources}"),
    ])
    .success();
    let cleanup = Cleanup::new(["clusterrole", &name]);
    (name, cleanup)
}

/// Every label of namespace `name`, as stored.
async fn namespace_labels(name: &str) -> std::collections::BTreeMap<String, String> {
    Api::<Namespace>::all(client().await)
        .get(name)
        .await
        .expect("get namespace")
        .metadata
        .labels
        .unwrap_or_default()
}

fn namespace_manifest(name: &str, labels: Value) -> String {
    namespace_manifest_with(name, Meta::Labels, labels)
}

/// Namespace `name` labelled [`TEST_LABEL`], with `entries` as its `meta`.
fn namespace_manifest_with(name: &str, meta: Meta, entries: Value) -> String {
    let mut object = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {TEST_LABEL: "true"}}});
    let map = &mut object["metadata"][meta.field()];
    match map.as_object_mut() {
        Some(map) => map.extend(entries.as_object().cloned().unwrap_or_default()),
        None => *map = entries,
    }
    object.to_string()
}

/// Which map of a namespace's metadata a write changes.
#[derive(Clone, Copy, Debug)]
enum Meta {
    Labels,
    Annotations,
}

impl Meta {
    /// The field in `metadata`.
    fn field(self) -> &'static str {
        match self {
            Self::Labels => "labels",
            Self::Annotations => "annotations",
        }
    }

    /// The kubectl command that sets one entry.
    fn verb(self) -> &'static str {
        match self {
            Self::Labels => "label",
            Self::Annotations => "annotate",
        }
    }

    /// `object` (a namespace as JSON) with entry `key` set to `value`, or removed.
    fn edit(self, object: &mut Value, key: &str, value: Option<&str>) {
        let map = &mut object["metadata"][self.field()];
        if !map.is_object() {
            *map = json!({});
        }
        let map = map.as_object_mut().expect("an object");
        match value {
            Some(v) => map.insert(key.to_owned(), json!(v)),
            None => map.remove(key),
        };
    }
}

// ---------------------------------------------------------------------------------------------
// Namespace labels

#[tokio::test]
async fn a_tenant_who_may_create_and_replace_namespaces_cannot_set_byoc_labels() {
    let _webhook = Webhook::start(Options::default()).await;
    // Installs hack/manifests/controller.yaml, whose RBAC lets the controller patch namespaces.
    controller::setup().await;
    let tenant = unique_name("tenant");
    let (role, _role) = cluster_role("create,get,update,patch", "namespaces");
    let _binding = bind(&tenant, &role, None);
    wait_can(&tenant, "create", "namespaces", None).await;
    let guard = denied_by(NAMESPACES_WEBHOOK);

    // CREATE with a byoc label: refused, and the namespace does not exist.
    let forged = unique_name("atk-forged");
    let _forged = Cleanup::new(["namespace", &forged]);
    kubectl_as(
        &tenant,
        &["create", "-f", "-"],
        Some(&namespace_manifest(
            &forged,
            json!({"byoc.toolforge.org/any": "never"}),
        )),
    )
    .fails_with(&[
        &guard,
        &format!("Namespace {forged}: user \"{tenant}\" may not add byoc.toolforge.org/any"),
    ]);
    kubectl(["get", "namespace", &forged]).failure();
    // Server-side apply is a create too.
    kubectl_as(
        &tenant,
        &["apply", "--server-side", "-f", "-"],
        Some(&namespace_manifest(
            &forged,
            json!({"byoc.toolforge.org/quay.io": "never"}),
        )),
    )
    .fails_with(&[&guard]);

    // Control: the same tenant creates a namespace without byoc labels.
    let own = unique_name("atk-own");
    let _own = Cleanup::new(["namespace", &own]);
    kubectl_as(
        &tenant,
        &["create", "-f", "-"],
        Some(&namespace_manifest(&own, json!({"team": "a"}))),
    )
    .success();

    // The controller's identity labels it (what a grant would do).
    kubectl_as(
        CONTROLLER_USER,
        &[
            "label",
            "namespace",
            &own,
            "byoc.toolforge.org/quay.io=never",
        ],
        None,
    )
    .success();

    // PUT (kubectl replace) of the whole object with the labels changed: refused.
    let current = kubectl(["get", "namespace", &own, "-o", "json"]).success();
    let mut object: Value = serde_json::from_str(&current.stdout).expect("namespace JSON");
    object["metadata"]["labels"]["byoc.toolforge.org/any"] = json!("never");
    kubectl_as(&tenant, &["replace", "-f", "-"], Some(&object.to_string()))
        .fails_with(&[&guard, "may not add byoc.toolforge.org/any"]);
    let mut object: Value = serde_json::from_str(&current.stdout).expect("namespace JSON");
    object["metadata"]["labels"]
        .as_object_mut()
        .expect("labels")
        .remove("byoc.toolforge.org/quay.io");
    kubectl_as(&tenant, &["replace", "-f", "-"], Some(&object.to_string()))
        .fails_with(&[&guard, "may not remove byoc.toolforge.org/quay.io"]);

    // Server-side apply forcing ownership of the controller's label: refused.
    kubectl_as(
        &tenant,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=tenant",
            "-f",
            "-",
        ],
        Some(&namespace_manifest(
            &own,
            json!({"team": "a", "byoc.toolforge.org/quay.io": "20990101T000000Z"}),
        )),
    )
    .fails_with(&[&guard, "may not change byoc.toolforge.org/quay.io"]);

    // JSON patch removing the label: refused.
    kubectl_as(
        &tenant,
        &[
            "patch",
            "namespace",
            &own,
            "--type=json",
            "-p",
            r#"[{"op": "remove", "path": "/metadata/labels/byoc.toolforge.org~1quay.io"}]"#,
        ],
        None,
    )
    .fails_with(&[&guard, "may not remove byoc.toolforge.org/quay.io"]);

    // Control: the tenant still edits other labels through every one of those paths.
    kubectl_as(
        &tenant,
        &["label", "namespace", &own, "team=b", "--overwrite"],
        None,
    )
    .success();
    let labels = namespace_labels(&own).await;
    assert_eq!(
        labels.get("byoc.toolforge.org/quay.io").map(String::as_str),
        Some("never")
    );
    assert!(!labels.contains_key("byoc.toolforge.org/any"), "{labels:?}");
    assert_eq!(labels.get("team").map(String::as_str), Some("b"));
}

/// A way to write a namespace's labels through one of its subresources (issue 12: the API
/// server stores metadata changes made through `namespaces/status` and `namespaces/finalize`).
#[derive(Clone, Copy, Debug)]
enum SubresourceWrite {
    StatusMergePatch,
    StatusStrategicPatch,
    StatusJsonPatch,
    StatusApply,
    StatusPut,
    FinalizePut,
}

impl SubresourceWrite {
    const ALL: [Self; 6] = [
        Self::StatusMergePatch,
        Self::StatusStrategicPatch,
        Self::StatusJsonPatch,
        Self::StatusApply,
        Self::StatusPut,
        Self::FinalizePut,
    ];

    /// `kubectl --as=USER ...` setting entry `key` of namespace `name`'s `meta` to `value`
    /// (`None`: removing it) this way. Server-side apply cannot remove an entry another manager
    /// owns, so it only sets.
    fn run(self, user: &str, name: &str, meta: Meta, key: &str, value: Option<&str>) -> Output {
        let patch = |kind: &str, patch: String| {
            let args = [
                "patch",
                "namespace",
                name,
                "--subresource=status",
                kind,
                "-p",
                &patch,
            ];
            kubectl_as(user, &args, None)
        };
        let merge = json!({"metadata": {meta.field(): {key: value}}}).to_string();
        match self {
            Self::StatusMergePatch => patch("--type=merge", merge),
            Self::StatusStrategicPatch => patch("--type=strategic", merge),
            Self::StatusJsonPatch => patch("--type=json", json_patch(meta, key, value)),
            Self::StatusApply => {
                let args = [
                    "apply",
                    "--server-side",
                    "--subresource=status",
                    "--force-conflicts",
                    "--field-manager=tenant",
                    "-f",
                    "-",
                ];
                let entries = json!({key: value.expect("server-side apply sets an entry")});
                let manifest = namespace_manifest_with(name, meta, entries);
                kubectl_as(user, &args, Some(&manifest))
            }
            Self::StatusPut | Self::FinalizePut => {
                let current = kubectl(["get", "namespace", name, "-o", "json"]).success();
                let mut object: Value =
                    serde_json::from_str(&current.stdout).expect("namespace JSON");
                meta.edit(&mut object, key, value);
                let finalize = format!("/api/v1/namespaces/{name}/finalize");
                let args: &[&str] = match self {
                    Self::StatusPut => &["replace", "--subresource=status", "-f", "-"],
                    _ => &["replace", "--raw", &finalize, "-f", "-"],
                };
                kubectl_as(user, args, Some(&object.to_string()))
            }
        }
    }
}

/// The JSON patch that sets entry `key` of `meta` to `value`, or removes it (`add` needs the
/// map to exist: a namespace always has labels, and annotations once anything annotated it).
fn json_patch(meta: Meta, key: &str, value: Option<&str>) -> String {
    let path = format!(
        "/metadata/{}/{}",
        meta.field(),
        key.replace('~', "~0").replace('/', "~1")
    );
    let op = match value {
        Some(v) => json!({"op": "add", "path": path, "value": v}),
        None => json!({"op": "remove", "path": path}),
    };
    json!([op]).to_string()
}

/// Every subresource write of `tenant` that adds `byoc.toolforge.org/any`, changes `granted`'s
/// value or removes it is refused by the guard, and the labels stay `labels`.
async fn subresource_writes_are_refused(
    tenant: &str,
    name: &str,
    granted: &str,
    labels: &std::collections::BTreeMap<String, String>,
) {
    let guard = denied_by(NAMESPACES_WEBHOOK);
    for how in SubresourceWrite::ALL {
        let attempts = [
            ("add", "byoc.toolforge.org/any", Some("never")),
            ("change", granted, Some("20991231T000000Z")),
            ("remove", granted, None),
        ];
        for (verb, key, value) in attempts {
            if value.is_none() && matches!(how, SubresourceWrite::StatusApply) {
                continue;
            }
            let refusal = format!("user \"{tenant}\" may not {verb} {key}");
            how.run(tenant, name, Meta::Labels, key, value)
                .fails_with(&[&guard, &refusal]);
        }
    }
    assert_eq!(&byoc_labels(&client().await, name).await, labels);
}

/// A leaked controller token (here: the controller's identity with every write right on
/// namespaces and their subresources) cannot lift Pod Security or change any other label
/// outside `byoc.toolforge.org/`, on any path; it still writes byoc labels.
#[tokio::test]
async fn the_controllers_identity_cannot_change_labels_outside_the_byoc_prefix() {
    let _webhook = Webhook::start(Options::default()).await;
    let ns = tool_namespace().await;
    let name = ns.name();
    const PSA: &str = "pod-security.kubernetes.io/enforce";
    kubectl([
        "label",
        "namespace",
        name,
        &format!("{PSA}=baseline"),
        "team=a",
    ])
    .success();
    let (role, _role) = cluster_role(
        "get,patch,update",
        "namespaces,namespaces/status,namespaces/finalize",
    );
    let _binding = bind(CONTROLLER_USER, &role, None);
    let guard = denied_by(NAMESPACES_WEBHOOK);
    let refusal = |verb: &str, key: &str| {
        format!(
            "user \"{CONTROLLER_USER}\" may not {verb} {key}: the byoc controller writes only \
             labels under byoc.toolforge.org/"
        )
    };

    // The controller's own kind of write passes (and RBAC lets the identity write).
    eventually(
        "RBAC for the controller's identity",
        CONVERGE_TIMEOUT,
        || async {
            let out = kubectl_as(
                CONTROLLER_USER,
                &[
                    "label",
                    "namespace",
                    name,
                    "byoc.toolforge.org/quay.io=never",
                ],
                None,
            );
            if out.status.success() {
                Ok(())
            } else {
                Err(out.to_string())
            }
        },
    )
    .await;

    // `kubectl label`, a merge patch, a JSON patch and a PUT of the namespace itself ...
    kubectl_as(
        CONTROLLER_USER,
        &[
            "label",
            "namespace",
            name,
            &format!("{PSA}=privileged"),
            "--overwrite",
        ],
        None,
    )
    .fails_with(&[&guard, &refusal("change", PSA)]);
    kubectl_as(
        CONTROLLER_USER,
        &["label", "namespace", name, &format!("{PSA}-")],
        None,
    )
    .fails_with(&[&guard, &refusal("remove", PSA)]);
    kubectl_as(
        CONTROLLER_USER,
        &[
            "patch",
            "namespace",
            name,
            "--type=merge",
            "-p",
            r#"{"metadata":{"labels":{"team":"b"}}}"#,
        ],
        None,
    )
    .fails_with(&[&guard, &refusal("change", "team")]);
    let current = kubectl(["get", "namespace", name, "-o", "json"]).success();
    let mut object: Value = serde_json::from_str(&current.stdout).expect("namespace JSON");
    object["metadata"]["labels"][PSA] = json!("privileged");
    kubectl_as(
        CONTROLLER_USER,
        &["replace", "-f", "-"],
        Some(&object.to_string()),
    )
    .fails_with(&[&guard, &refusal("change", PSA)]);
    // ... and every way through `namespaces/status` and `namespaces/finalize`.
    for how in SubresourceWrite::ALL {
        how.run(CONTROLLER_USER, name, Meta::Labels, PSA, Some("privileged"))
            .fails_with(&[&guard, &refusal("change", PSA)]);
        if !matches!(how, SubresourceWrite::StatusApply) {
            how.run(CONTROLLER_USER, name, Meta::Labels, PSA, None)
                .fails_with(&[&guard, &refusal("remove", PSA)]);
        }
    }

    let labels = namespace_labels(name).await;
    assert_eq!(
        labels.get(PSA).map(String::as_str),
        Some("baseline"),
        "{labels:?}"
    );
    assert_eq!(
        labels.get("team").map(String::as_str),
        Some("a"),
        "{labels:?}"
    );
    assert_eq!(
        labels.get("byoc.toolforge.org/quay.io").map(String::as_str),
        Some("never")
    );
    // Control: an admin (not a label writer) still changes the Pod Security level.
    kubectl([
        "label",
        "namespace",
        name,
        &format!("{PSA}=restricted"),
        "--overwrite",
    ])
    .success();
}

#[tokio::test]
async fn a_tenant_with_status_and_finalize_rights_cannot_touch_byoc_labels_through_them() {
    let _webhook = Webhook::start(Options::default()).await;
    let access = controller::exclusive().await;
    let running = access.spawn(&unique_name("atk-ctl"), &[]);
    running.wait_leader().await;
    let client = client().await;
    let ns = tool_namespace().await;
    let name = ns.name();

    // The controller's own write passes the guard: a grant becomes labels.
    let grant = unique_name("atk-grant");
    let _grant = create_grant(&grant, name, &["quay.io"], None);
    let labels = eventually("the grant's labels", CONVERGE_TIMEOUT, || async {
        let labels = byoc_labels(&client, name).await;
        if labels.is_empty() {
            Err("none yet".to_owned())
        } else {
            Ok(labels)
        }
    })
    .await;
    let granted = labels.keys().next().expect("a byoc label").clone();

    // The rights of the reported attack: get, patch and update on the namespace and its status
    // and finalize subresources, by a RoleBinding in the tenant's own namespace.
    let tenant = unique_name("tenant");
    let (role, _role) = cluster_role(
        "get,patch,update",
        "namespaces,namespaces/status,namespaces/finalize",
    );
    let _binding = bind(&tenant, &role, Some(name));
    // Control: through each subresource the tenant changes labels that are not byoc's, so each
    // refusal below is the guard's doing, not RBAC's.
    eventually("RBAC for the tenant", CONVERGE_TIMEOUT, || async {
        let out =
            SubresourceWrite::StatusMergePatch.run(&tenant, name, Meta::Labels, "team", Some("a"));
        if out.status.success() {
            Ok(())
        } else {
            Err(out.to_string())
        }
    })
    .await;
    for (i, how) in SubresourceWrite::ALL.into_iter().enumerate() {
        how.run(&tenant, name, Meta::Labels, "team", Some(&format!("t{i}")))
            .success();
    }

    // With the controller running (it would repair a change within moments) ...
    subresource_writes_are_refused(&tenant, name, &granted, &labels).await;
    // ... and with it stopped, when nothing would.
    drop(running);
    subresource_writes_are_refused(&tenant, name, &granted, &labels).await;
    // The exploit's goal stays out of reach: Docker Hub is still refused here.
    kubectl_run(name, "hub", "nginx").fails_with(&[&denied_by(PODS_WEBHOOK)]);

    // The controller's removal passes the guard too: revoking the grant removes the labels.
    let running = access.spawn(&unique_name("atk-ctl"), &[]);
    running.wait_leader().await;
    kubectl(["delete", "byocgrant", &grant]).success();
    eventually("the labels removed", CONVERGE_TIMEOUT, || async {
        let labels = byoc_labels(&client, name).await;
        if labels.is_empty() {
            Ok(())
        } else {
            Err(format!("{labels:?}"))
        }
    })
    .await;
}

const ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// `kubectl --as=USER` writes setting entry `key` of namespace `name`'s `meta` to `value`
/// (`None`: removing it) through the namespaces resource itself: `kubectl label`/`annotate`,
/// merge, JSON and strategic patch, PUT and server-side apply (which cannot remove an entry
/// another manager owns, so only sets).
fn resource_writes(
    user: &str,
    name: &str,
    meta: Meta,
    key: &str,
    value: Option<&str>,
) -> Vec<Output> {
    let entry = match value {
        Some(v) => format!("{key}={v}"),
        None => format!("{key}-"),
    };
    let merge = json!({"metadata": {meta.field(): {key: value}}}).to_string();
    let patch = |kind: &str, body: &str| {
        kubectl_as(user, &["patch", "namespace", name, kind, "-p", body], None)
    };
    let current = kubectl(["get", "namespace", name, "-o", "json"]).success();
    let mut object: Value = serde_json::from_str(&current.stdout).expect("namespace JSON");
    meta.edit(&mut object, key, value);
    let mut outs = vec![
        kubectl_as(
            user,
            &[meta.verb(), "namespace", name, &entry, "--overwrite"],
            None,
        ),
        patch("--type=merge", &merge),
        patch("--type=strategic", &merge),
        patch("--type=json", &json_patch(meta, key, value)),
        kubectl_as(user, &["replace", "-f", "-"], Some(&object.to_string())),
    ];
    if let Some(v) = value {
        let args = [
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=tenant",
            "-f",
            "-",
        ];
        let manifest = namespace_manifest_with(name, meta, json!({key: v}));
        outs.push(kubectl_as(user, &args, Some(&manifest)));
    }
    outs
}

/// The reported exploit: a tenant who may patch its own namespace, or only its status, sets
/// `pod-security.kubernetes.io/enforce=privileged` and runs a privileged pod with a hostPath
/// to the container runtime's socket. Every write path that lowers, raises or removes the level
/// is refused, and so is creating a namespace with it; an admin (system:masters) still sets it.
#[tokio::test]
async fn tenants_cannot_change_pod_security_labels_on_any_path() {
    let _webhook = Webhook::start(Options::default()).await;
    let ns = tool_namespace().await;
    let name = ns.name();
    let guard = denied_by(NAMESPACES_WEBHOOK);
    // The admin (the e2e kubeconfig's client certificate, in system:masters) sets the level.
    kubectl(["label", "namespace", name, &format!("{ENFORCE}=restricted")]).success();

    let Tenants {
        patcher,
        statuser,
        _grants,
    } = Tenants::of(name, Meta::Labels).await;
    let before = namespace_labels(name).await;

    for (verb, value) in [("change", Some("privileged")), ("remove", None)] {
        let refusal = |user: &str| format!("user \"{user}\" may not {verb} {ENFORCE}");
        let write = Write {
            meta: Meta::Labels,
            key: ENFORCE,
            value,
        };
        write.refused_to(
            &patcher,
            &statuser,
            name,
            &guard,
            refusal,
            "only platform admins change them",
        );
    }
    assert_eq!(namespace_labels(name).await, before);

    // CREATE of a privileged namespace: refused (a server-side apply create is a cluster-wide
    // patch, a right this tenant lacks; the byoc-label test covers it).
    let forged = unique_name("atk-psa");
    let _forged = Cleanup::new(["namespace", &forged]);
    let manifest = namespace_manifest(&forged, json!({ENFORCE: "privileged"}));
    kubectl_as(&patcher, &["create", "-f", "-"], Some(&manifest)).fails_with(&[
        &guard,
        &format!("Namespace {forged}: user \"{patcher}\" may not add {ENFORCE}"),
    ]);
    kubectl(["get", "namespace", &forged]).failure();

    // The exploit's pod (platform image, privileged, hostPath to containerd) stays refused by
    // Pod Security in the restricted namespace.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "escape", "namespace": name},
        "spec": {"containers": [{"name": "c", "image": PLATFORM,
            "securityContext": {"privileged": true},
            "volumeMounts": [{"name": "run", "mountPath": "/run/containerd"}]}],
            "volumes": [{"name": "run", "hostPath": {"path": "/run/containerd"}}]}});
    kubectl_stdin(&["create", "-f", "-"], &pod.to_string())
        .fails_with(&["violates PodSecurity \"restricted:latest\"", "privileged"]);

    // An admin (a configured writer) still changes and removes it.
    kubectl([
        "label",
        "namespace",
        name,
        &format!("{ENFORCE}=baseline"),
        "--overwrite",
    ])
    .success();
    assert_eq!(
        namespace_labels(name)
            .await
            .get(ENFORCE)
            .map(String::as_str),
        Some("baseline")
    );
    kubectl(["label", "namespace", name, &format!("{ENFORCE}-")]).success();
    assert!(!namespace_labels(name).await.contains_key(ENFORCE));
}

/// The requirements annotation carries what the grants require of images (DESIGN §12): a
/// tenant who may write its namespace, or only its status and finalize subresources, cannot
/// add, change or remove it (or any other `byoc.toolforge.org/` annotation) on any path, nor
/// create a namespace with it; the controller still writes and removes it.
#[tokio::test]
async fn tenants_cannot_change_the_requirements_annotation_on_any_path() {
    let _webhook = Webhook::start(Options::default()).await;
    let controller = controller::shared().await;
    let client = client().await;
    let ns = tool_namespace().await;
    let name = ns.name();
    let guard = denied_by(NAMESPACES_WEBHOOK);
    const REQUIREMENTS: &str = byoc_api::labels::REQUIREMENTS_ANNOTATION;
    // The JSON patch `add` needs the map to exist.
    kubectl(["annotate", "namespace", name, "note=admin"]).success();

    // The controller writes it for a grant with requirements.
    let grant = unique_name("atk-grant");
    kubectl_stdin(
        &["create", "-f", "-"],
        &grant_manifest(
            &grant,
            json!({"namespace": name, "reason": "e2e", "registries": ["quay.io/atk"],
                   "requirements": {"requireDigest": true}}),
        ),
    )
    .success();
    let _grant = Cleanup::new(["byocgrant", &grant]);
    let written = eventually("the controller's annotation", CONVERGE_TIMEOUT, || async {
        requirements_annotation(&client, name)
            .await
            .ok_or_else(|| "not yet".to_owned())
    })
    .await;

    // The same tenants as for the Pod Security labels.
    let Tenants {
        patcher,
        statuser,
        _grants,
    } = Tenants::of(name, Meta::Annotations).await;

    let forged = r#"{"version":1,"registries":{}}"#;
    let attempts = [
        ("add", "byoc.toolforge.org/other", Some("x")),
        ("change", REQUIREMENTS, Some(forged)),
        ("remove", REQUIREMENTS, None),
    ];
    for (verb, key, value) in attempts {
        let refusal = |user: &str| format!("user \"{user}\" may not {verb} annotation {key}");
        let write = Write {
            meta: Meta::Annotations,
            key,
            value,
        };
        write.refused_to(
            &patcher,
            &statuser,
            name,
            &guard,
            refusal,
            "written only by the byoc controller",
        );
    }
    assert_eq!(
        requirements_annotation(&client, name).await.as_deref(),
        Some(written.as_str())
    );
    let stored = Api::<Namespace>::all(client.clone())
        .get(name)
        .await
        .expect("get namespace")
        .metadata
        .annotations
        .unwrap_or_default();
    assert!(
        !stored.contains_key("byoc.toolforge.org/other"),
        "{stored:?}"
    );

    // CREATE of a namespace that carries it: refused.
    let created = unique_name("atk-req");
    let _created = Cleanup::new(["namespace", &created]);
    let manifest =
        namespace_manifest_with(&created, Meta::Annotations, json!({REQUIREMENTS: forged}));
    kubectl_as(&patcher, &["create", "-f", "-"], Some(&manifest)).fails_with(&[
        &guard,
        &format!("Namespace {created}: user \"{patcher}\" may not add annotation {REQUIREMENTS}"),
    ]);
    kubectl(["get", "namespace", &created]).failure();

    // The controller still removes it when the grant goes.
    delete_grant(&grant);
    eventually("the controller to remove it", REVOKE_TIMEOUT, || async {
        match requirements_annotation(&client, name).await {
            None => Ok(()),
            Some(v) => Err(v),
        }
    })
    .await;
    drop(controller);
}

#[tokio::test]
async fn a_namespace_labelled_with_an_exempt_name_is_still_checked() {
    // The registration skips exempt namespaces by the kubernetes.io/metadata.name label; the
    // API server sets that label to the real name, whatever the creator wrote.
    let _webhook = Webhook::start(Options::default()).await;
    let client = client().await;
    let name = unique_name("atk-spoof");
    let _ns = Cleanup::new(["namespace", &name]);
    kubectl_stdin(
        &["create", "-f", "-"],
        &namespace_manifest(&name, json!({"kubernetes.io/metadata.name": "kube-system"})),
    )
    .success();
    let ns = Api::<Namespace>::all(client.clone())
        .get(&name)
        .await
        .expect("get namespace");
    assert_eq!(
        ns.metadata
            .labels
            .unwrap_or_default()
            .get("kubernetes.io/metadata.name"),
        Some(&name)
    );
    let api = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), &name);
    eventually("the default ServiceAccount", CONVERGE_TIMEOUT, || async {
        match api.get_opt("default").await {
            Ok(Some(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(try_pod(&client, &name, "nginx").await, Outcome::Denied);
    assert_eq!(try_pod(&client, &name, PLATFORM).await, Outcome::Admitted);
}

// ---------------------------------------------------------------------------------------------
// Grants and the webhook configuration

#[tokio::test]
async fn a_namespace_admin_cannot_create_edit_or_delete_byoc_grants() {
    let _webhook = Webhook::start(Options::default()).await;
    let client = client().await;
    byoc_e2e::install_crd(&client).await;
    let ns = tool_namespace().await;
    let tenant = unique_name("tenant");
    // The tenant administers its namespace, and someone even bound a role with every verb on
    // byocgrants there: a RoleBinding cannot grant a cluster-scoped resource.
    let _admin = bind(&tenant, "admin", Some(ns.name()));
    let (grants_role, _r) = cluster_role(
        "*",
        "byocgrants.byoc.toolforge.org,byocgrants.byoc.toolforge.org/status",
    );
    let _grants = bind(&tenant, &grants_role, Some(ns.name()));
    wait_can(&tenant, "create", "pods", Some(ns.name())).await;

    let grant = grant_manifest(
        &unique_name("atk-self"),
        json!({"namespace": ns.name(), "reason": "I want it", "registries": []}),
    );
    for args in [
        &["create", "-f", "-"][..],
        &["-n", ns.name(), "create", "-f", "-"][..],
        &["apply", "--server-side", "-f", "-"][..],
    ] {
        kubectl_as(&tenant, args, Some(&grant)).fails_with(&["forbidden"]);
    }
    let out = kubectl_as(&tenant, &["auth", "can-i", "create", "byocgrants"], None);
    assert_eq!(out.stdout.trim(), "no", "{out}");

    // A grant an admin made: the tenant can neither widen, nor mark Ready, nor delete it.
    let name = unique_name("atk-real");
    kubectl_stdin(
        &["create", "-f", "-"],
        &grant_manifest(
            &name,
            json!({"namespace": ns.name(), "reason": "reviewed", "registries": ["quay.io/wikimedia"]}),
        ),
    )
    .success();
    let _grant = Cleanup::new(["byocgrant", &name]);
    kubectl_as(
        &tenant,
        &[
            "patch",
            "byocgrant",
            &name,
            "--type=merge",
            "-p",
            r#"{"spec": {"registries": []}}"#,
        ],
        None,
    )
    .fails_with(&["forbidden"]);
    kubectl_as(
        &tenant,
        &[
            "patch",
            "byocgrant",
            &name,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Applied", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}"#,
        ],
        None,
    )
    .fails_with(&["forbidden"]);
    kubectl_as(&tenant, &["delete", "byocgrant", &name], None).fails_with(&["forbidden"]);
    let out = kubectl([
        "get",
        "byocgrant",
        &name,
        "-o",
        "jsonpath={.spec.registries}",
    ])
    .success();
    assert_eq!(out.stdout, r#"["quay.io/wikimedia"]"#);

    // Control: what the tenant's namespace roles do allow still works.
    kubectl_as(
        &tenant,
        &[
            "-n",
            ns.name(),
            "run",
            "ok",
            &format!("--image={PLATFORM}"),
            "--restart=Never",
        ],
        None,
    )
    .success();
}

#[tokio::test]
async fn a_namespace_admin_cannot_touch_webhook_configurations() {
    let webhook = Webhook::start(Options::default()).await;
    let ns = tool_namespace().await;
    let tenant = unique_name("tenant");
    let _admin = bind(&tenant, "admin", Some(ns.name()));
    // Even a namespace-scoped binding of cluster-admin grants nothing cluster-scoped.
    let _root = bind(&tenant, "cluster-admin", Some(ns.name()));
    wait_can(&tenant, "create", "pods", Some(ns.name())).await;

    let configuration = kubectl([
        "get",
        "validatingwebhookconfigurations",
        "-l",
        &format!("{TEST_LABEL}=true"),
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ])
    .success()
    .stdout;
    let configuration = configuration
        .split_whitespace()
        .next()
        .expect("the registered configuration")
        .to_owned();
    for args in [
        &["delete", "validatingwebhookconfiguration", &configuration][..],
        &[
            "patch",
            "validatingwebhookconfiguration",
            &configuration,
            "--type=json",
            "-p",
            r#"[{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"}]"#,
        ][..],
        &["get", "validatingwebhookconfiguration", &configuration][..],
    ] {
        kubectl_as(&tenant, args, None).fails_with(&["forbidden"]);
    }
    // Nor can it register a webhook of its own that would see or change other tenants' pods.
    let own = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": unique_name("atk-mutate")},
        "webhooks": [{"name": "evil.example.org", "sideEffects": "None", "admissionReviewVersions": ["v1"],
                      "clientConfig": {"url": "https://evil.example.org/"},
                      "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}]}]})
    .to_string();
    kubectl_as(&tenant, &["create", "-f", "-"], Some(&own)).fails_with(&["forbidden"]);
    let out = kubectl([
        "get",
        "validatingwebhookconfiguration",
        &configuration,
        "-o",
        "json",
    ])
    .success();
    let object: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(object["webhooks"][0]["failurePolicy"], "Fail");

    // Control: the webhook still refuses, and the tenant can run allowed pods.
    kubectl_as(
        &tenant,
        &[
            "-n",
            ns.name(),
            "run",
            "bad",
            "--image=nginx",
            "--restart=Never",
        ],
        None,
    )
    .fails_with(&[&denied_by(PODS_WEBHOOK)]);
    kubectl_as(
        &tenant,
        &[
            "-n",
            ns.name(),
            "run",
            "ok",
            &format!("--image={PLATFORM}"),
            "--restart=Never",
        ],
        None,
    )
    .success();
    drop(webhook);
}

// ---------------------------------------------------------------------------------------------
// Pods that pretend to be something else, or live somewhere that looks exempt

#[tokio::test]
async fn a_forged_mirror_pod_annotation_does_not_exempt_a_pod() {
    let _webhook = Webhook::start(Options::default()).await;
    let ns = tool_namespace().await;
    let tenant = unique_name("tenant");
    let _edit = bind(&tenant, "edit", Some(ns.name()));
    wait_can(&tenant, "create", "pods", Some(ns.name())).await;
    let pod = |name: &str, image: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": ns.name(), "annotations": {
                   "kubernetes.io/config.mirror": "0123456789abcdef",
                   "kubernetes.io/config.source": "file",
                   "kubernetes.io/config.hash": "0123456789abcdef"}},
               "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": image}]}})
        .to_string()
    };
    // The API server lets anyone who may create pods set the annotation (only the kubelet's
    // NodeRestriction plugin, where enabled, limits nodes); the webhook must not trust it.
    kubectl_as(
        &tenant,
        &["create", "-f", "-"],
        Some(&pod("mirror", "nginx")),
    )
    .fails_with(&[
        &denied_by(PODS_WEBHOOK),
        &format!(
            "Pod {}/mirror: container \"app\" image \"nginx\"",
            ns.name()
        ),
    ]);
    kubectl(["-n", ns.name(), "get", "pod", "mirror"]).failure();
    // Control: with a platform image the annotated pod is admitted.
    kubectl_as(
        &tenant,
        &["create", "-f", "-"],
        Some(&pod("mirror-ok", PLATFORM)),
    )
    .success();
}

#[tokio::test]
async fn workloads_in_lookalike_namespaces_are_checked() {
    let _webhook = Webhook::start(Options::default()).await;
    let client = client().await;
    let api = Api::<Namespace>::all(client.clone());
    let mut created = Vec::new();
    for name in ["kube-system-x", "kube-systen", "xkube-system"] {
        // A previous run's namespace may still be terminating.
        eventually(
            &format!("namespace {name} to be usable"),
            CONVERGE_TIMEOUT,
            || async {
                match api.get_opt(name).await {
                    Ok(Some(ns)) if ns.metadata.deletion_timestamp.is_none() => Ok(false),
                    Ok(Some(_)) => Err("terminating".to_owned()),
                    Ok(None) => Ok(true),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await
        .then(|| {
            kubectl_stdin(&["create", "-f", "-"], &namespace_manifest(name, json!({}))).success();
            created.push(Cleanup::new(["namespace", name]));
        });
        let sa =
            Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), name);
        eventually("the default ServiceAccount", CONVERGE_TIMEOUT, || async {
            match sa.get_opt("default").await {
                Ok(Some(_)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;

        assert_eq!(
            try_pod(&client, name, "nginx").await,
            Outcome::Denied,
            "a Docker Hub pod in {name}"
        );
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": name},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "app", "image": "nginx"}]}}}})
        .to_string();
        kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &deployment)
            .fails_with(&[&denied_by(PODS_WEBHOOK)]);
        assert_eq!(try_pod(&client, name, PLATFORM).await, Outcome::Admitted);
    }
    // Control: the real kube-system is exempt.
    assert_eq!(
        try_pod(&client, "kube-system", "nginx").await,
        Outcome::Admitted
    );
}

// ---------------------------------------------------------------------------------------------
// Image strings

#[tokio::test]
async fn image_string_tricks_are_refused_through_the_api_server() {
    let _webhook = Webhook::start(Options::default()).await;
    let client = client().await;
    let ns = tool_namespace().await;
    let refused = [
        // Suffix and path lookalikes of the platform registry.
        "docker-registry.tools.wmflabs.org.evil.com/x",
        "Docker-Registry.tools.wmflabs.org.evil.com/x",
        "evil.com/docker-registry.tools.wmflabs.org/x",
        "localhost/docker-registry.tools.wmflabs.org/x",
        "docker-registry.tools.wmflabs.org.:443/x",
        // No '/': the whole string is a Docker Hub repository (and maybe a tag).
        "docker-registry.tools.wmflabs.org",
        "docker-registry.tools.wmflabs.org:5000",
        // Another port of the same host is another registry.
        "docker-registry.tools.wmflabs.org:443/x",
        "docker-registry.tools.wmflabs.org:80/x",
        // '@' where a URL would have credentials, or a digest that names the registry.
        "docker-registry.tools.wmflabs.org@evil.com/x",
        "evil.com/x@docker-registry.tools.wmflabs.org",
        "evil.com/x:docker-registry.tools.wmflabs.org",
        "evil.com/x@sha256:docker-registry.tools.wmflabs.org",
        // Uppercase: an uppercase first component is a registry host; uppercase paths and
        // digests are invalid.
        "DOCKER-REGISTRY/x",
        "docker-registry.tools.wmflabs.org/X",
        "docker-registry.tools.wmflabs.org/x@sha256:0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF",
        // Scheme, traversal, encoding.
        "https://docker-registry.tools.wmflabs.org/x",
        "docker-registry.tools.wmflabs.org/../evil.com/x",
        "docker-registry.tools.wmflabs.org%2Fevil.com/x",
        "docker-registry.tools.wmflabs.org/x/../../evil",
    ];
    let mut failures = Vec::new();
    for image in refused {
        match try_pod(&client, ns.name(), image).await {
            Outcome::Denied => {}
            other => failures.push(format!("{image:?}: {other:?}")),
        }
    }
    // Controls: the platform registry, by tag, by digest, and with its host in uppercase (host
    // names are case-insensitive: the runtime pulls from the same registry).
    for image in [
        PLATFORM.to_owned(),
        format!("docker-registry.tools.wmflabs.org/toolforge-python311@{DIGEST}"),
        format!("docker-registry.tools.wmflabs.org/toolforge-python311:v1@{DIGEST}"),
        "DOCKER-REGISTRY.TOOLS.WMFLABS.ORG/toolforge-python311".to_owned(),
    ] {
        match try_pod(&client, ns.name(), &image).await {
            Outcome::Admitted => {}
            other => failures.push(format!("control {image:?}: {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------------------------
// Every path to a pod

/// `kind` with a pod template running `image`, in `namespace`.
fn workload(kind: &str, name: &str, namespace: &str, image: &str) -> Value {
    let spec = json!({"restartPolicy": if matches!(kind, "Job" | "CronJob") { "Never" } else { "Always" },
                      "containers": [{"name": "app", "image": image}]});
    let template = json!({"metadata": {"labels": {"app": name}}, "spec": spec});
    let selector = json!({"matchLabels": {"app": name}});
    let (api_version, body) = match kind {
        "PodTemplate" => ("v1", json!({"template": template})),
        "ReplicationController" => (
            "v1",
            json!({"spec": {"selector": {"app": name}, "template": template}}),
        ),
        "Deployment" | "ReplicaSet" | "DaemonSet" => (
            "apps/v1",
            json!({"spec": {"selector": selector, "template": template}}),
        ),
        "StatefulSet" => (
            "apps/v1",
            json!({"spec": {"selector": selector, "serviceName": name, "template": template}}),
        ),
        "Job" => ("batch/v1", json!({"spec": {"template": template}})),
        "CronJob" => (
            "batch/v1",
            json!({"spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": template}}}}),
        ),
        other => panic!("no template for {other}"),
    };
    let mut object = body;
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    object["metadata"] = json!({"name": name, "namespace": namespace});
    object
}

#[tokio::test]
async fn every_workload_kind_is_refused_on_create_and_on_image_update() {
    let _webhook = Webhook::start(Options::default()).await;
    let ns = tool_namespace().await;
    let kinds = [
        "Deployment",
        "ReplicaSet",
        "StatefulSet",
        "DaemonSet",
        "Job",
        "CronJob",
        "ReplicationController",
        "PodTemplate",
    ];
    for kind in kinds {
        let name = kind.to_lowercase();
        let bad = workload(kind, &name, ns.name(), "quay.io/evil/miner:1").to_string();
        kubectl_stdin(&["create", "-f", "-"], &bad).fails_with(&[
            &denied_by(PODS_WEBHOOK),
            &format!(
                "{kind} {}/{name}: container \"app\" image \"quay.io/evil/miner:1\"",
                ns.name()
            ),
        ]);
        // Control: the platform image is admitted; then swapping the image in is refused.
        let good = workload(kind, &name, ns.name(), PLATFORM);
        kubectl_stdin(&["create", "-f", "-"], &good.to_string()).success();
        let pointer = match kind {
            "PodTemplate" => "/template/spec/containers/0/image",
            "CronJob" => "/spec/jobTemplate/spec/template/spec/containers/0/image",
            _ => "/spec/template/spec/containers/0/image",
        };
        let patch = json!([{"op": "replace", "path": pointer, "value": "quay.io/evil/miner:1"}]);
        let resource = format!("{}/{name}", kind.to_lowercase());
        let out = kubectl([
            "-n",
            ns.name(),
            "patch",
            &resource,
            "--type=json",
            "-p",
            &patch.to_string(),
        ]);
        if kind == "Job" {
            // A Job's template is immutable: the API server refuses the swap before admission.
            out.fails_with(&["field is immutable"]);
        } else {
            out.fails_with(&[&denied_by(PODS_WEBHOOK)]);
        }
        let out = kubectl([
            "-n",
            ns.name(),
            "get",
            &resource,
            "-o",
            &format!(
                "jsonpath={{{}}}",
                pointer.replace('/', ".").replace(".0.", "[0].")
            ),
        ])
        .success();
        assert_eq!(out.stdout, PLATFORM, "{kind} image after the refused patch");
    }
}

#[tokio::test]
async fn ephemeral_containers_and_debug_copies_with_bad_images_are_refused() {
    let _webhook = Webhook::start(Options::default()).await;
    let ns = tool_namespace().await;
    let name = ns.name();
    let tenant = unique_name("tenant");
    let _edit = bind(&tenant, "edit", Some(name));
    // `edit` does not include the subresource; a tool maintainer who debugs gets it.
    let (debug, _debug) = cluster_role("get,patch,update", "pods/ephemeralcontainers");
    let _debugger = bind(&tenant, &debug, Some(name));
    wait_can(&tenant, "patch", "pods/ephemeralcontainers", Some(name)).await;
    kubectl_run(name, "app", PLATFORM).success();

    // The raw subresource, as a tenant, with a lookalike image.
    let patch = json!({"spec": {"ephemeralContainers": [{"name": "dbg", "image": "docker-registry.tools.wmflabs.org.evil.com/shell",
                                                          "targetContainerName": "app"}]}});
    kubectl_as(
        &tenant,
        &[
            "-n",
            name,
            "patch",
            "pod",
            "app",
            "--subresource=ephemeralcontainers",
            "--type=strategic",
            "-p",
            &patch.to_string(),
        ],
        None,
    )
    .fails_with(&[
        &denied_by(PODS_WEBHOOK),
        "ephemeralContainer \"dbg\" image \"docker-registry.tools.wmflabs.org.evil.com/shell\"",
    ]);
    // `kubectl debug --copy-to` makes a new pod with the image swapped: a pod CREATE.
    kubectl_as(
        &tenant,
        &[
            "-n",
            name,
            "debug",
            "app",
            "--copy-to=app-copy",
            "--set-image=*=busybox",
        ],
        None,
    )
    .fails_with(&[&denied_by(PODS_WEBHOOK), "image \"busybox\""]);
    kubectl(["-n", name, "get", "pod", "app-copy"]).failure();
    // Control: an allowed debug image is added.
    let ok = json!({"spec": {"ephemeralContainers": [{"name": "dbg-ok", "image": PLATFORM}]}});
    kubectl_as(
        &tenant,
        &[
            "-n",
            name,
            "patch",
            "pod",
            "app",
            "--subresource=ephemeralcontainers",
            "--type=strategic",
            "-p",
            &ok.to_string(),
        ],
        None,
    )
    .success();
}

/// Grants `registry` to `namespace` and waits until the webhook admits `control` there. The
/// guard deletes the grant if the test fails before [`delete_grant`].
async fn grant_and_wait(
    client: &Client,
    namespace: &str,
    registry: &str,
    control: &str,
) -> (String, Cleanup) {
    let grant = unique_name("atk-grant");
    kubectl_stdin(
        &["create", "-f", "-"],
        &grant_manifest(
            &grant,
            json!({"namespace": namespace, "reason": "e2e", "registries": [registry]}),
        ),
    )
    .success();
    let cleanup = Cleanup::new(["byocgrant", &grant]);
    eventually(
        "the grant to reach the webhook",
        CONVERGE_TIMEOUT,
        || async {
            match try_pod(client, namespace, control).await {
                Outcome::Admitted => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    (grant, cleanup)
}

/// Deletes `grant` and waits until the controller has removed its finalizer.
fn delete_grant(grant: &str) {
    kubectl(["delete", "byocgrant", grant, "--wait=true", "--timeout=60s"]).success();
}

/// How a tenant who may write its namespace makes the controller's field manager own one of
/// its own labels: by applying as that manager, or by rewriting `managedFields` outright.
const OWNERSHIP_TRICKS: [&str; 2] = ["apply as byoc-controller", "rewrite managedFields"];
/// How soon after its grant is gone a registry must be refused.
const REVOKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[tokio::test]
async fn a_tenant_cannot_make_a_revoke_fail_through_field_ownership() {
    // Server-side apply removes what its manager owned before and no longer sends, and
    // `managedFields` are data any writer of the namespace may rewrite. Were the controller to
    // apply its labels, a tenant who made its entry own a label of the tenant's would turn
    // every write of the controller into a removal of that label, which the label guard
    // refuses: a revoke would never land. The controller writes merge patches naming only
    // byoc keys instead.
    let _webhook = Webhook::start(Options::default()).await;
    let controller = byoc_e2e::controller::shared().await;
    let client = client().await;
    let tenant = unique_name("tenant");
    let (role, _role) = cluster_role("get,patch,update", "namespaces");
    let _binding = bind(&tenant, &role, None);
    for trick in OWNERSHIP_TRICKS {
        let ns = tool_namespace().await;
        let name = ns.name();
        let (grant, _grant) = grant_and_wait(&client, name, "quay.io", "quay.io/x/y:1").await;
        let label = byoc_labels(&client, name).await;
        assert_eq!(label.len(), 1, "{trick}: {label:?}");
        let (key, value) = label.iter().next().expect("the grant's label");
        match trick {
            "apply as byoc-controller" => {
                let manifest = namespace_manifest(name, json!({ key: value, "tenant-note": "x" }));
                kubectl_as(
                    &tenant,
                    &[
                        "apply",
                        "--server-side",
                        "--force-conflicts",
                        "--field-manager=byoc-controller",
                        "-f",
                        "-",
                    ],
                    Some(&manifest),
                )
                .success();
            }
            _ => {
                kubectl_as(
                    &tenant,
                    &["label", "namespace", name, "tenant-note=x"],
                    None,
                )
                .success();
                let owned = json!({ "f:metadata": { "f:labels": {
                    format!("f:{key}"): {}, "f:tenant-note": {}, format!("f:{TEST_LABEL}"): {},
                } } });
                let patch = json!({ "metadata": { "managedFields": [{
                    "manager": "byoc-controller", "operation": "Apply", "apiVersion": "v1",
                    "fieldsType": "FieldsV1", "fieldsV1": owned,
                }] } });
                kubectl_as(
                    &tenant,
                    &[
                        "patch",
                        "namespace",
                        name,
                        "--type=merge",
                        "-p",
                        &patch.to_string(),
                    ],
                    None,
                )
                .success();
            }
        }
        let stored = kubectl([
            "get",
            "namespace",
            name,
            "-o",
            "json",
            "--show-managed-fields",
        ])
        .success()
        .stdout;
        assert!(
            stored.contains(r#""f:tenant-note""#) && stored.contains("byoc-controller"),
            "{trick}: the ownership was not stored: {stored}"
        );

        // The revoke lands: the finalizer goes, the registry is refused within seconds, the
        // tenant's labels stay.
        delete_grant(&grant);
        eventually(
            "the revoke to reach the webhook",
            REVOKE_TIMEOUT,
            || async {
                match try_pod(&client, name, "quay.io/x/y:1").await {
                    Outcome::Denied => Ok(()),
                    other => Err(format!("{trick}: {other:?}")),
                }
            },
        )
        .await;
        let labels = namespace_labels(name).await;
        assert!(
            byoc_api::labels::owned_labels(&labels).is_empty(),
            "{trick}: {labels:?}"
        );
        assert_eq!(
            labels.get("tenant-note").map(String::as_str),
            Some("x"),
            "{trick}"
        );
    }
    drop(controller);
}

#[tokio::test]
async fn a_grant_is_no_wider_than_its_registry_and_path() {
    // A namespace granted ghcr.io/wikimedia may not use lookalikes of that grant either.
    let _webhook = Webhook::start(Options::default()).await;
    let controller = byoc_e2e::controller::shared().await;
    let client = client().await;
    let ns = tool_namespace().await;
    let (grant, _grant) = grant_and_wait(
        &client,
        ns.name(),
        "ghcr.io/wikimedia",
        "ghcr.io/wikimedia/blubber:1",
    )
    .await;
    let mut failures = Vec::new();
    for image in [
        "ghcr.io/wikimediax/blubber:1",
        "ghcr.io/wikimedia-evil/x",
        "ghcr.io/evil/wikimedia",
        "ghcr.io.evil.com/wikimedia/x",
        "ghcr.io:443/wikimedia/x",
        "evil.com/ghcr.io/wikimedia/x",
        "quay.io/wikimedia/x",
    ] {
        if try_pod(&client, ns.name(), image).await != Outcome::Denied {
            failures.push(image);
        }
    }
    assert!(
        failures.is_empty(),
        "admitted beyond the grant: {failures:?}"
    );
    delete_grant(&grant);
    drop(controller);
}

#[tokio::test]
async fn image_ids_are_refused_even_under_a_docker_hub_grant() {
    // containerd resolves a registry-less `sha256:<hex>` (or a prefix of it) to whatever image
    // it has cached with that ID, from any registry; the grammar reads it as Docker Hub's
    // `library/sha256`. A Docker Hub grant must not let it through.
    let _webhook = Webhook::start(Options::default()).await;
    let controller = byoc_e2e::controller::shared().await;
    let client = client().await;
    let ns = tool_namespace().await;
    // Control: a Docker Hub image, once granted.
    let (grant, _grant) = grant_and_wait(&client, ns.name(), "docker.io", "busybox:1.36").await;
    let hex = DIGEST.trim_start_matches("sha256:");
    let mut failures = Vec::new();
    for image in [
        DIGEST.to_owned(),
        "sha256:0123456789ab".to_owned(),
        format!("sha512:{hex}{hex}"),
        format!("sha256:0123@{DIGEST}"),
        hex.to_owned(),
    ] {
        if try_pod(&client, ns.name(), &image).await != Outcome::Denied {
            failures.push(image);
        }
    }
    assert!(failures.is_empty(), "image IDs admitted: {failures:?}");
    let name = ns.name();
    kubectl_run(name, "id", "sha256:0123456789ab").fails_with(&[
        &denied_by(PODS_WEBHOOK),
        &format!(
            "Pod {name}/id: container \"id\" image \"sha256:0123456789ab\" is not a valid image \
             reference: it is an image ID, not an image name: the runtime runs whatever image it \
             has cached with that ID, whichever registry it came from"
        ),
    ]);
    delete_grant(&grant);
    drop(controller);
}

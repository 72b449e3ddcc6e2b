//! The request-and-approve flow (issue 14, DESIGN §3b) through the real API server, the real
//! webhook and controller, the real `kubectl` and the `kubectl byoc` plugin, with users bound by
//! RBAC: a tool maintainer with the built-in `edit` role in their namespace (the chart's
//! `request-edit` role, aggregated, as `hack/manifests/requests.yaml` installs it) and a platform
//! admin with the `grant-admin` role. Users are impersonated through their kubeconfig (`as:`),
//! so kubectl and the plugin both act as them.
//!
//! ```text
//! hack/local-cluster.sh exec -- cargo test -p byoc-e2e --test requests
//! ```
//!
//! The attacks a tenant could try to get a grant without an admin are tested here too (and
//! listed in docs/threat-model.md): a request created with an Approved status, status writes
//! through the subresource and through the object, a request aimed at another namespace, a
//! grant created by hand, approving one's own request, deleting and re-creating an approved
//! request, and two admins racing to approve.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use byoc_e2e::chaos::{Outcome, wait_outcome};
use byoc_e2e::cli::kubectl_byoc_with;
use byoc_e2e::controller::{self, logs_dir};
use byoc_e2e::webhook::{Options, Webhook};
use byoc_e2e::{
    CONVERGE_TIMEOUT, Cleanup, Output, TestNamespace, apply_server_side, client, eventually,
    kubectl, kubectl_as, kubectl_stdin, parse_table, repo_root, unique_name, wait_can,
    write_impersonating_kubeconfig,
};
use serde_json::{Value, json};

/// A user of the cluster: impersonated by a kubeconfig of their own, with role bindings that
/// go at drop.
struct User {
    name: String,
    kubeconfig: PathBuf,
    _bindings: Vec<Cleanup>,
}

impl User {
    /// Runs `kubectl byoc ARGS...` as this user.
    fn byoc(&self, args: &[&str]) -> Output {
        kubectl_byoc_with(&self.kubeconfig, args)
    }

    /// `kubectl --as=USER -n NAMESPACE patch byocrequest NAME --type=merge -p BODY`, on the
    /// status subresource with `status`.
    fn patch_request(&self, namespace: &str, name: &str, status: bool, body: &str) -> Output {
        let mut args = vec![
            "-n",
            namespace,
            "patch",
            "byocrequest",
            name,
            "--type=merge",
        ];
        if status {
            args.push("--subresource=status");
        }
        args.extend(["-p", body]);
        self.kubectl(&args, None)
    }

    /// Runs `kubectl --as=USER ARGS...`.
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        kubectl_as(&self.name, args, stdin)
    }
}

/// Installs the CRDs, the controller's RBAC and `hack/manifests/requests.yaml` (once per test
/// process), and waits until the ByocRequest API serves.
async fn install() {
    static APPLIED: OnceLock<()> = OnceLock::new();
    controller::setup().await;
    APPLIED.get_or_init(|| {
        apply_server_side(&repo_root().join("hack/manifests/requests.yaml")).success();
    });
    eventually("the ByocRequest API", CONVERGE_TIMEOUT, || async {
        let out = kubectl(["get", "byocrequests", "-A"]);
        if out.status.success() {
            Ok(())
        } else {
            Err(out.to_string())
        }
    })
    .await;
}

/// A tool maintainer: `edit` in `namespace` (a RoleBinding), nothing else; their kubeconfig's
/// current namespace is `namespace`.
async fn maintainer(namespace: &str) -> User {
    let (name, cleanup) = byoc_e2e::edit_tenant(namespace).await;
    // The aggregation controller copies request-edit into edit; RBAC caches take a moment.
    wait_can(&name, "create", "byocrequests", Some(namespace)).await;
    user(name, namespace, vec![cleanup])
}

/// A platform admin: the grant-admin ClusterRole (cluster-wide), nothing else.
async fn admin() -> User {
    let name = unique_name("platform-admin");
    let binding = unique_name("req-admin");
    kubectl([
        "create",
        "clusterrolebinding",
        &binding,
        "--clusterrole=byoc-grant-admin",
        &format!("--user={name}"),
    ])
    .success();
    let cleanup = Cleanup::new(["clusterrolebinding", &binding]);
    wait_can(&name, "create", "byocgrants", None).await;
    user(name, "default", vec![cleanup])
}

fn user(name: String, namespace: &str, bindings: Vec<Cleanup>) -> User {
    let kubeconfig = logs_dir().join(format!("{name}.kubeconfig"));
    write_impersonating_kubeconfig(&name, namespace, &kubeconfig);
    User {
        name,
        kubeconfig,
        _bindings: bindings,
    }
}

/// What most tests need: the CRDs and roles, the shared controller, a tool namespace with its
/// maintainer, and a platform admin.
struct Stage {
    maintainer: User,
    admin: User,
    ns: TestNamespace,
    _controller: controller::SharedController,
}

async fn stage(prefix: &str) -> Stage {
    install().await;
    let controller = controller::shared().await;
    let ns = tool_namespace(prefix).await;
    Stage {
        maintainer: maintainer(ns.name()).await,
        admin: admin().await,
        ns,
        _controller: controller,
    }
}

/// A tool namespace whose pods can be created.
async fn tool_namespace(prefix: &str) -> TestNamespace {
    let client = client().await;
    let ns = TestNamespace::create(&client, prefix).await;
    ns.wait_for_default_service_account(&client).await;
    ns
}

/// Request `name` in `namespace`, as the admin reads it.
fn request(namespace: &str, name: &str) -> Value {
    let out = kubectl(["-n", namespace, "get", "byocrequest", name, "-o", "json"]).success();
    serde_json::from_str(&out.stdout).expect("JSON")
}

/// Waits until request `name` has `phase`, and returns it.
async fn wait_phase(namespace: &str, name: &str, phase: &str) -> Value {
    eventually(
        &format!("ByocRequest {namespace}/{name} to be {phase}"),
        CONVERGE_TIMEOUT,
        || async {
            let r = request(namespace, name);
            if r["status"]["phase"] == phase {
                Ok(r)
            } else {
                Err(r["status"].to_string())
            }
        },
    )
    .await
}

/// The live (not being deleted) ByocGrants whose annotation records a request `namespace/name`
/// (of any UID: `namespace/name/uid`).
fn grants_of(namespace: &str, name: &str) -> Vec<Value> {
    let out = kubectl(["get", "byocgrants", "-o", "json"]).success();
    let list: Value = serde_json::from_str(&out.stdout).expect("JSON");
    let key = format!("{namespace}/{name}/");
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| {
            g["metadata"]["annotations"]["byoc.toolforge.org/request"]
                .as_str()
                .is_some_and(|v| v.starts_with(&key) && v.len() > key.len())
        })
        .filter(|g| g["metadata"]["deletionTimestamp"].is_null())
        .cloned()
        .collect()
}

/// Waits until exactly `count` live grants record `namespace/name`, and returns them.
async fn wait_grants(namespace: &str, name: &str, count: usize) -> Vec<Value> {
    eventually(
        &format!("{count} ByocGrant(s) for ByocRequest {namespace}/{name}"),
        CONVERGE_TIMEOUT,
        || async {
            let grants = grants_of(namespace, name);
            if grants.len() == count {
                Ok(grants)
            } else {
                Err(format!("{grants:?}"))
            }
        },
    )
    .await
}

/// The reasons of the events about request `name`, oldest first.
fn event_reasons(namespace: &str, name: &str) -> Vec<String> {
    let out = kubectl(["-n", namespace, "get", "events.events.k8s.io", "-o", "json"]).success();
    let list: Value = serde_json::from_str(&out.stdout).expect("JSON");
    let mut events: Vec<(String, String)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["kind"] == "ByocRequest" && e["regarding"]["name"] == name)
        .map(|e| {
            (
                e["eventTime"].as_str().unwrap_or_default().to_owned(),
                e["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    events.sort();
    events.into_iter().map(|(_, reason)| reason).collect()
}

async fn wait_event(namespace: &str, name: &str, reason: &str) {
    eventually(
        &format!("a {reason} event on ByocRequest {namespace}/{name}"),
        CONVERGE_TIMEOUT,
        || async {
            let reasons = event_reasons(namespace, name);
            if reasons.iter().any(|r| r == reason) {
                Ok(())
            } else {
                Err(format!("{reasons:?}"))
            }
        },
    )
    .await;
}

/// The name `kubectl byoc request` printed: `byocrequest/NAME created in namespace ...`.
fn filed_name(out: &Output) -> String {
    out.stdout
        .strip_prefix("byocrequest/")
        .and_then(|rest| rest.split_once(' '))
        .map(|(name, _)| name.to_owned())
        .unwrap_or_else(|| panic!("no request name in {out}"))
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_maintainer_asks_an_admin_approves_and_a_revocation_shows() {
    let _webhook = Webhook::start(Options::default()).await;
    let stage = stage("req-tool").await;
    let tool = stage.ns.name();
    let (maintainer, admin) = (&stage.maintainer, &stage.admin);
    let client = client().await;
    let image = "quay.io/x/bot:1.0";

    // The maintainer files a request in their current namespace (from the kubeconfig).
    let out = maintainer
        .byoc(&["request", "--registry", "quay.io/x", "--reason", "r"])
        .success();
    let name = filed_name(&out);
    assert!(
        out.stdout.contains(&format!(
            "created in namespace {tool}: registries quay.io/x"
        )),
        "{out}"
    );
    // What happens next: the command that approves exactly what was asked for.
    let approve = [
        "approve",
        "-n",
        tool,
        name.as_str(),
        "--registry",
        "quay.io/x",
        "--no-expiry",
    ];
    assert!(
        out.stdout
            .contains(&format!("(kubectl byoc {})", approve.join(" "))),
        "what happens next: {out}"
    );
    let pending = wait_phase(tool, &name, "Pending").await;
    assert_eq!(pending["status"]["registries"], "quay.io/x");
    assert_eq!(pending["status"]["conditions"][0]["type"], "Granted");
    assert_eq!(pending["status"]["conditions"][0]["status"], "False");
    // A request grants nothing.
    wait_outcome(&client, tool, image, Outcome::Denied).await;

    // The maintainer cannot decide: no status writes, no grants, no approval of their own.
    let approved_status = json!({"status": {"phase": "Approved", "grant": "x", "decidedBy": "me"}});
    maintainer
        .patch_request(tool, &name, true, &approved_status.to_string())
        .fails_with(&["forbidden", "byocrequests/status"]);
    maintainer
        .patch_request(tool, &name, false, &approved_status.to_string())
        .fails_with(&["forbidden"]);
    let grant = json!({
        "apiVersion": "byoc.toolforge.org/v1alpha1", "kind": "ByocGrant",
        "metadata": {"name": unique_name("self-grant"),
                     "annotations": {"byoc.toolforge.org/request": format!("{tool}/{name}")}},
        "spec": {"namespace": tool, "reason": "mine", "registries": ["quay.io/x"]},
    });
    maintainer
        .kubectl(&["create", "-f", "-"], Some(&grant.to_string()))
        .fails_with(&["forbidden", "byocgrants"]);
    maintainer.byoc(&approve).fails_with(&["forbidden"]);
    assert!(
        grants_of(tool, &name).is_empty(),
        "a refused approval creates no grant"
    );
    assert_eq!(request(tool, &name)["status"]["phase"], "Pending");

    // The admin approves: a grant that records the request, the request Approved by them.
    let out = admin.byoc(&approve).success();
    assert!(
        out.stdout.starts_with(&format!(
            "byocrequest/{name} approved by {}: byocgrant/",
            admin.name
        )),
        "{out}"
    );
    let grants = wait_grants(tool, &name, 1).await;
    let grant = &grants[0];
    let grant_name = grant["metadata"]["name"].as_str().unwrap().to_owned();
    let _grant = Cleanup::new(["byocgrant", &grant_name]);
    let uid = pending["metadata"]["uid"].as_str().expect("a UID");
    assert_eq!(
        grant["metadata"]["annotations"]["byoc.toolforge.org/request"],
        format!("{tool}/{name}/{uid}"),
        "the grant pins the request it approved"
    );
    assert_eq!(grant["spec"]["namespace"], tool);
    assert_eq!(grant["spec"]["registries"], json!(["quay.io/x"]));
    assert_eq!(
        grant["spec"]["reason"],
        format!("r (ByocRequest {tool}/{name})")
    );
    assert!(
        grant["spec"]["expiresAt"].is_null(),
        "no duration asked: no expiry"
    );
    let approved = wait_phase(tool, &name, "Approved").await;
    assert_eq!(approved["status"]["decidedBy"], admin.name.as_str());
    assert_eq!(approved["status"]["grant"], grant_name.as_str());
    eventually("the Granted condition", CONVERGE_TIMEOUT, || async {
        let r = request(tool, &name);
        let c = &r["status"]["conditions"][0];
        if c["status"] == "True" && c["reason"] == "Approved" {
            Ok(())
        } else {
            Err(r["status"].to_string())
        }
    })
    .await;
    wait_outcome(&client, tool, image, Outcome::Admitted).await;

    // Approving twice: a clear error, nothing changed.
    admin.byoc(&approve).fails_with(&[&format!(
        "ByocRequest {tool}/{name} is already Approved (decided by {})",
        admin.name
    )]);
    assert_eq!(grants_of(tool, &name).len(), 1, "still one grant");

    // What everyone sees: kubectl get -A, the plugin's list, describe.
    let out = kubectl(["get", "byocreq", "-A"]).success();
    let (header, rows) = parse_table(&out.stdout);
    assert_eq!(
        header,
        [
            "NAMESPACE",
            "NAME",
            "REGISTRIES",
            "PHASE",
            "GRANT",
            "EXPIRES",
            "AGE"
        ],
        "{out}"
    );
    let row = rows
        .iter()
        .find(|r| r[0] == tool && r[1] == name)
        .unwrap_or_else(|| panic!("no row for {name}: {out}"));
    assert_eq!(
        &row[2..6],
        ["quay.io/x", "Approved", grant_name.as_str(), ""],
        "{out}"
    );
    let out = maintainer.byoc(&["requests"]).success();
    let (header, rows) = parse_table(&out.stdout);
    assert_eq!(
        header[..4],
        ["NAME", "REGISTRIES", "PHASE", "GRANT"],
        "{out}"
    );
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(rows[0][2], "Approved", "{out}");
    wait_event(tool, &name, "Pending").await;
    wait_event(tool, &name, "Approved").await;

    // The admin revokes: the request says so, and tells it.
    kubectl(["delete", "byoc", &grant_name]).success();
    let revoked = wait_phase(tool, &name, "Revoked").await;
    let message = revoked["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("ByocGrant {grant_name} was deleted")),
        "{revoked}"
    );
    wait_event(tool, &name, "Revoked").await;
    let out = kubectl(["-n", tool, "describe", "byocreq", &name]).success();
    for reason in ["Pending", "Approved", "Revoked"] {
        assert!(
            out.stdout.contains(reason),
            "describe tells {reason}: {out}"
        );
    }
    wait_outcome(&client, tool, image, Outcome::Denied).await;
}

#[tokio::test]
async fn deny_expiry_and_refused_approvals() {
    let stage = stage("req-deny").await;
    let tool = stage.ns.name();
    let (maintainer, admin) = (&stage.maintainer, &stage.admin);

    // Widening is refused, and nothing changes.
    maintainer
        .byoc(&[
            "request",
            "--name",
            "wide",
            "--registry",
            "quay.io/a",
            "--registry",
            "ghcr.io/b",
            "--reason",
            "T1",
            "--duration",
            "30d",
        ])
        .success();
    wait_phase(tool, "wide", "Pending").await;
    let approve = |more: &[&str]| {
        let mut args = vec!["approve", "-n", tool, "wide"];
        args.extend(more);
        admin.byoc(&args)
    };
    approve(&["--registry", "docker.io", "--expires", "30d"]).fails_with(&[
        "--registry docker.io would widen the request, which asks for quay.io/a, ghcr.io/b",
    ]);
    approve(&["--registry", "quay.io", "--expires", "1d"]).fails_with(&["would widen"]);
    approve(&["--any-registry", "--expires", "1d"]).fails_with(&[
        "--any-registry would widen the request, which asks for quay.io/a, ghcr.io/b",
    ]);
    approve(&["--registry", "quay.io/a", "--expires", "60d"])
        .fails_with(&["is later than the 30d the request asks for", "only shorten"]);
    approve(&["--registry", "quay.io/a", "--no-expiry"])
        .fails_with(&["--no-expiry would outlast the 30d the request asks for"]);
    // The admin states the grant: what it allows, and until when; and names the namespace.
    approve(&["--expires", "30d"]).fails_with(&["--registry", "--any-registry"]);
    approve(&["--registry", "quay.io/a"]).fails_with(&["--expires", "--no-expiry"]);
    admin
        .byoc(&[
            "approve",
            "wide",
            "--registry",
            "quay.io/a",
            "--expires",
            "1d",
        ])
        .fails_with(&["--namespace"]);
    admin
        .byoc(&["deny", "wide", "--reason", "no"])
        .fails_with(&["--namespace"]);
    assert!(grants_of(tool, "wide").is_empty());
    assert_eq!(request(tool, "wide")["status"]["phase"], "Pending");

    // Deny: Denied with the message and who; then approve and deny again are refused.
    let out = admin
        .byoc(&[
            "deny",
            "-n",
            tool,
            "wide",
            "--reason",
            "use the build service",
        ])
        .success();
    assert_eq!(
        out.stdout,
        format!(
            "byocrequest/wide denied by {}: use the build service\n",
            admin.name
        )
    );
    let denied = wait_phase(tool, "wide", "Denied").await;
    assert_eq!(denied["status"]["decidedBy"], admin.name.as_str());
    assert_eq!(
        denied["status"]["message"],
        format!("denied by {}: use the build service", admin.name)
    );
    wait_event(tool, "wide", "Denied").await;
    approve(&["--registry", "quay.io/a", "--expires", "1d"]).fails_with(&[
        &format!("ByocRequest {tool}/wide is already Denied"),
        "use the build service",
    ]);
    admin
        .byoc(&["deny", "-n", tool, "wide", "--reason", "again"])
        .fails_with(&["is already Denied"]);
    assert!(grants_of(tool, "wide").is_empty());
    maintainer
        .byoc(&[
            "approve",
            "-n",
            tool,
            "nope",
            "--any-registry",
            "--no-expiry",
        ])
        .fails_with(&[&format!("no ByocRequest nope in namespace {tool}")]);

    // A narrowed, short approval; the grant expires and the request says so.
    maintainer
        .byoc(&[
            "request",
            "--name",
            "short",
            "--registry",
            "quay.io",
            "--reason",
            "T2",
            "--duration",
            "90d",
        ])
        .success();
    let out = admin
        .byoc(&[
            "approve",
            "-n",
            tool,
            "short",
            "--registry",
            "quay.io/short",
            "--expires",
            "10s",
        ])
        .success();
    assert!(
        out.stdout.contains("registries quay.io/short, expires "),
        "{out}"
    );
    let grants = wait_grants(tool, "short", 1).await;
    let _grant = Cleanup::new(["byocgrant", grants[0]["metadata"]["name"].as_str().unwrap()]);
    assert_eq!(grants[0]["spec"]["registries"], json!(["quay.io/short"]));
    let approved = wait_phase(tool, "short", "Approved").await;
    assert_eq!(approved["status"]["registries"], "quay.io/short");
    assert!(approved["status"]["expiresAt"].is_string(), "{approved}");
    let expired = wait_phase(tool, "short", "Expired").await;
    assert!(
        expired["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("expired at")),
        "{expired}"
    );
    wait_event(tool, "short", "Expired").await;
    admin
        .byoc(&[
            "approve",
            "-n",
            tool,
            "short",
            "--registry",
            "quay.io",
            "--expires",
            "1d",
        ])
        .fails_with(&["is already Expired"]);
}

#[tokio::test]
async fn an_approval_grants_what_the_admin_stated_whatever_the_request_became() {
    let stage = stage("req-swap").await;
    let tool = stage.ns.name();
    let (maintainer, admin) = (&stage.maintainer, &stage.admin);
    let file = |args: &[&str]| {
        let mut all = vec!["request"];
        all.extend(args);
        maintainer.byoc(&all).success()
    };
    let delete = |name: &str| {
        maintainer
            .kubectl(&["-n", tool, "delete", "byocrequest", name], None)
            .success();
    };
    let uid = |r: &Value| r["metadata"]["uid"].as_str().expect("a UID").to_owned();

    // The admin reviews a narrow request and the command it prints; the tenant swaps it for a
    // wider one of the same name before the admin runs that command: the grant is only what
    // the admin typed, and records the request it was made for.
    let out = file(&[
        "--name",
        "swap",
        "--registry",
        "quay.io/narrow",
        "--reason",
        "T1",
        "--duration",
        "7d",
    ]);
    let approve = [
        "approve",
        "-n",
        tool,
        "swap",
        "--registry",
        "quay.io/narrow",
        "--expires",
        "7d",
    ];
    assert!(
        out.stdout
            .contains(&format!("(kubectl byoc {})", approve.join(" "))),
        "{out}"
    );
    let reviewed = wait_phase(tool, "swap", "Pending").await;
    delete("swap");
    file(&["--name", "swap", "--any-registry", "--reason", "T1"]);
    let swapped = wait_phase(tool, "swap", "Pending").await;
    assert_ne!(uid(&reviewed), uid(&swapped));
    admin.byoc(&approve).success();
    let grants = wait_grants(tool, "swap", 1).await;
    let _grant = Cleanup::new(["byocgrant", grants[0]["metadata"]["name"].as_str().unwrap()]);
    assert_eq!(grants[0]["spec"]["registries"], json!(["quay.io/narrow"]));
    assert!(grants[0]["spec"]["expiresAt"].is_string(), "{}", grants[0]);
    assert_eq!(
        grants[0]["metadata"]["annotations"]["byoc.toolforge.org/request"],
        format!("{tool}/swap/{}", uid(&swapped))
    );
    let approved = wait_phase(tool, "swap", "Approved").await;
    assert_eq!(approved["status"]["registries"], "quay.io/narrow");

    // Swapped for a narrower one: what the admin typed is now wider, so it is refused.
    file(&[
        "--name",
        "narrow",
        "--registry",
        "quay.io",
        "--reason",
        "T2",
    ]);
    wait_phase(tool, "narrow", "Pending").await;
    delete("narrow");
    file(&[
        "--name",
        "narrow",
        "--registry",
        "quay.io/x",
        "--reason",
        "T2",
        "--duration",
        "1d",
    ]);
    let approve_narrow = |more: &[&str]| {
        let mut args = vec!["approve", "-n", tool, "narrow"];
        args.extend(more);
        admin.byoc(&args)
    };
    approve_narrow(&["--registry", "quay.io", "--no-expiry"])
        .fails_with(&["--registry quay.io would widen the request, which asks for quay.io/x"]);
    approve_narrow(&["--registry", "quay.io/x", "--no-expiry"])
        .fails_with(&["--no-expiry would outlast the 1d the request asks for"]);
    assert!(grants_of(tool, "narrow").is_empty());
    assert_eq!(request(tool, "narrow")["status"]["phase"], "Pending");

    // A duration the API accepts that ends past year 9999: any expiry the admin states is
    // shorter, and one past year 9999 is too long, not "not a duration".
    file(&[
        "--name",
        "long",
        "--registry",
        "quay.io",
        "--reason",
        "T3",
        "--duration",
        "999999w",
    ]);
    wait_phase(tool, "long", "Pending").await;
    let approve_long = |more: &[&str]| {
        let mut args = vec!["approve", "-n", tool, "long", "--registry", "quay.io"];
        args.extend(more);
        admin.byoc(&args)
    };
    approve_long(&["--expires", "999999w"]).fails_with(&[
        "--expires \"999999w\" is too long: from now it ends past the last representable time",
    ]);
    approve_long(&["--no-expiry"]).fails_with(&["--no-expiry would outlast the 999999w"]);
    approve_long(&["--expires", "1d"]).success();
    let grants = wait_grants(tool, "long", 1).await;
    let _long = Cleanup::new(["byocgrant", grants[0]["metadata"]["name"].as_str().unwrap()]);
    assert!(grants[0]["spec"]["expiresAt"].is_string(), "{}", grants[0]);

    // A reason that moves the cursor and starts lines cannot forge rows in the admin's list.
    let forged_row = "\n\u{1b}[1A\u{1b}[2K\rforged   quay.io/narrow   Pending";
    file(&[
        "--name",
        "forge",
        "--any-registry",
        "--reason",
        &format!("T4{forged_row}"),
    ]);
    wait_phase(tool, "forge", "Pending").await;
    let out = admin
        .byoc(&["requests", "-n", tool, "-o", "wide"])
        .success();
    assert!(
        !out.stdout.contains('\u{1b}') && !out.stdout.contains('\r'),
        "{:?}",
        out.stdout
    );
    assert_eq!(
        out.stdout.lines().count(),
        1 + 4,
        "a header and 4 requests: {out}"
    );
    assert!(
        out.stdout
            .contains("T4\\n\\u{1b}[1A\\u{1b}[2K\\rforged   quay.io/narrow   Pending"),
        "{out}"
    );
}

#[tokio::test]
async fn approving_for_a_namespace_being_deleted_changes_nothing() {
    install().await;
    let _controller = controller::shared().await;
    let admin = admin().await;
    let ns = tool_namespace("req-gone").await;
    let tool = ns.name().to_owned();
    // A finalizer holds the request, so the namespace stays Terminating while we look.
    let hold = "byoc-e2e.toolforge.org/hold";
    let manifest = json!({
        "apiVersion": "byoc.toolforge.org/v1alpha1", "kind": "ByocRequest",
        "metadata": {"name": "held", "namespace": tool, "finalizers": [hold]},
        "spec": {"reason": "T3", "registries": ["quay.io"]},
    });
    kubectl_stdin(&["create", "-f", "-"], &manifest.to_string()).success();
    wait_phase(&tool, "held", "Pending").await;
    kubectl(["delete", "namespace", &tool, "--wait=false"]).success();
    eventually("the request to be deleting", CONVERGE_TIMEOUT, || async {
        let r = request(&tool, "held");
        if r["metadata"]["deletionTimestamp"].is_string() {
            Ok(())
        } else {
            Err(r["metadata"].to_string())
        }
    })
    .await;
    let out = admin.byoc(&["requests", "-n", &tool]).success();
    let (_, rows) = parse_table(&out.stdout);
    assert_eq!(rows[0][2], "Pending (Terminating)", "{out}");
    let approve = || {
        admin.byoc(&[
            "approve",
            "-n",
            &tool,
            "held",
            "--registry",
            "quay.io",
            "--no-expiry",
        ])
    };
    approve().fails_with(&[&format!(
        "namespace {tool} is being deleted: nothing changed"
    )]);
    assert!(grants_of(&tool, "held").is_empty());
    // Let it go; then there is nothing to approve.
    kubectl([
        "-n",
        &tool,
        "patch",
        "byocrequest",
        "held",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ])
    .success();
    eventually("the namespace to be gone", CONVERGE_TIMEOUT, || async {
        let out = kubectl(["get", "namespace", &tool]);
        if out.status.success() {
            Err(out.stdout)
        } else {
            Ok(())
        }
    })
    .await;
    approve().fails_with(&[&format!("no ByocRequest held in namespace {tool}")]);
    assert!(grants_of(&tool, "held").is_empty());
}

#[tokio::test]
async fn a_tenant_cannot_get_a_grant_without_an_admin() {
    let stage = stage("req-atk").await;
    let tool = stage.ns.name();
    let (maintainer, admin) = (&stage.maintainer, &stage.admin);
    let other = tool_namespace("req-other").await;

    // A request created with a status that says Approved: the status is dropped on create.
    let forged = json!({
        "apiVersion": "byoc.toolforge.org/v1alpha1", "kind": "ByocRequest",
        "metadata": {"name": "forged", "namespace": tool},
        "spec": {"reason": "T4", "registries": ["quay.io"]},
        "status": {"phase": "Approved", "grant": "someone-elses", "decidedBy": "admin"},
    });
    maintainer
        .kubectl(&["create", "-f", "-"], Some(&forged.to_string()))
        .success();
    let r = wait_phase(tool, "forged", "Pending").await;
    assert!(
        r["status"]["grant"].is_null() && r["status"]["decidedBy"].is_null(),
        "{r}"
    );

    // With more rights than edit gives (update and patch on requests, not their status), a
    // status change through the object is ignored, and the spec cannot change.
    let role = unique_name("req-update");
    kubectl([
        "-n",
        tool,
        "create",
        "role",
        &role,
        "--verb=update,patch",
        "--resource=byocrequests",
    ])
    .success();
    let _role = Cleanup::new(["-n", tool, "role", &role]);
    kubectl([
        "-n",
        tool,
        "create",
        "rolebinding",
        &role,
        &format!("--role={role}"),
        &format!("--user={}", maintainer.name),
    ])
    .success();
    let _binding = Cleanup::new(["-n", tool, "rolebinding", &role]);
    wait_can(&maintainer.name, "patch", "byocrequests", Some(tool)).await;
    maintainer
        .patch_request(
            tool,
            "forged",
            false,
            r#"{"status":{"phase":"Approved","grant":"x"}}"#,
        )
        .success();
    assert_eq!(request(tool, "forged")["status"]["phase"], "Pending");
    maintainer
        .patch_request(
            tool,
            "forged",
            false,
            r#"{"spec":{"registries":["quay.io","ghcr.io"]}}"#,
        )
        .fails_with(&["spec is immutable"]);
    maintainer
        .patch_request(tool, "forged", true, r#"{"status":{"phase":"Approved"}}"#)
        .fails_with(&["forbidden"]);

    // Another namespace: no right to file there, and a request cannot name one.
    maintainer
        .byoc(&[
            "request",
            "-n",
            other.name(),
            "--registry",
            "quay.io",
            "--reason",
            "T5",
        ])
        .fails_with(&["forbidden"]);
    let aimed = json!({
        "apiVersion": "byoc.toolforge.org/v1alpha1", "kind": "ByocRequest",
        "metadata": {"name": "aimed", "namespace": tool},
        "spec": {"reason": "T6", "registries": ["quay.io"], "namespace": other.name()},
    });
    maintainer
        .kubectl(
            &["create", "--validate=false", "-f", "-"],
            Some(&aimed.to_string()),
        )
        .success();
    assert!(
        request(tool, "aimed")["spec"]["namespace"].is_null(),
        "unknown fields are pruned"
    );
    admin
        .byoc(&[
            "approve",
            "-n",
            tool,
            "aimed",
            "--registry",
            "quay.io",
            "--no-expiry",
        ])
        .success();
    let grants = wait_grants(tool, "aimed", 1).await;
    let grant_name = grants[0]["metadata"]["name"].as_str().unwrap().to_owned();
    let _grant = Cleanup::new(["byocgrant", &grant_name]);
    assert_eq!(
        grants[0]["spec"]["namespace"], tool,
        "the request's own namespace, always"
    );
    wait_phase(tool, "aimed", "Approved").await;

    // Deleting and re-creating an approved request (same name, wider): Pending, not Approved,
    // and the grant is untouched.
    maintainer
        .kubectl(&["-n", tool, "delete", "byocrequest", "aimed"], None)
        .success();
    maintainer
        .byoc(&[
            "request",
            "--name",
            "aimed",
            "--any-registry",
            "--reason",
            "T7",
        ])
        .success();
    let again = wait_phase(tool, "aimed", "Pending").await;
    assert_eq!(again["status"]["registries"], "any");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(request(tool, "aimed")["status"]["phase"], "Pending");
    let grants = grants_of(tool, "aimed");
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0]["spec"]["registries"], json!(["quay.io"]));
    admin
        .byoc(&["deny", "-n", tool, "aimed", "--reason", "no"])
        .success();
}

#[tokio::test]
async fn racing_approvals_make_one_grant_and_a_failed_status_write_is_undone() {
    let stage = stage("req-race").await;
    let tool = stage.ns.name();
    let (maintainer, admin) = (&stage.maintainer, &stage.admin);
    let second = self::admin().await;

    // Two admins approve the same request at once, three times over: each time exactly one
    // wins, and exactly one grant remains.
    for i in 0..3 {
        let name = format!("race-{i}");
        maintainer
            .byoc(&[
                "request",
                "--name",
                &name,
                "--registry",
                "quay.io",
                "--reason",
                "T8",
            ])
            .success();
        wait_phase(tool, &name, "Pending").await;
        let approve = [
            "approve",
            "-n",
            tool,
            name.as_str(),
            "--registry",
            "quay.io",
            "--no-expiry",
        ];
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| admin.byoc(&approve));
            let b = s.spawn(|| second.byoc(&approve));
            (a.join().unwrap(), b.join().unwrap())
        });
        let wins = [&a, &b].iter().filter(|o| o.status.success()).count();
        assert_eq!(wins, 1, "exactly one approval wins:\n{a}\n{b}");
        let loser = if a.status.success() { &b } else { &a };
        assert!(
            loser.stderr.contains("is already Approved"),
            "the loser says why: {loser}"
        );
        let grants = wait_grants(tool, &name, 1).await;
        let r = wait_phase(tool, &name, "Approved").await;
        assert_eq!(r["status"]["grant"], grants[0]["metadata"]["name"], "{r}");
        kubectl([
            "delete",
            "byocgrant",
            grants[0]["metadata"]["name"].as_str().unwrap(),
        ])
        .success();
    }

    // The status write fails after the grant was created (an admission policy refuses it):
    // the grant is deleted again and the request stays Pending.
    let policy = unique_name("req-block");
    let vap = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": policy},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["byoc.toolforge.org"], "apiVersions": ["*"],
                "operations": ["UPDATE"], "resources": ["byocrequests/status"],
            }]},
            "validations": [{
                "expression": format!(
                    "!(object.metadata.name == 'blocked' && object.metadata.namespace == '{tool}' \
                     && has(object.status) && has(object.status.phase) \
                     && object.status.phase == 'Approved')"
                ),
                "message": "e2e: approvals of this request are blocked",
            }],
        },
    });
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": policy},
        "spec": {"policyName": policy, "validationActions": ["Deny"]},
    });
    kubectl_stdin(&["create", "-f", "-"], &vap.to_string()).success();
    let _vap = Cleanup::new(["validatingadmissionpolicy", &policy]);
    kubectl_stdin(&["create", "-f", "-"], &binding.to_string()).success();
    let _binding = Cleanup::new(["validatingadmissionpolicybinding", &policy]);
    maintainer
        .byoc(&[
            "request",
            "--name",
            "blocked",
            "--registry",
            "quay.io",
            "--reason",
            "T9",
        ])
        .success();
    wait_phase(tool, "blocked", "Pending").await;
    // Wait until the policy is in force (a server-side dry run of the same status change).
    eventually(
        "the policy to block approvals",
        CONVERGE_TIMEOUT,
        || async {
            let out = kubectl([
                "-n",
                tool,
                "patch",
                "byocrequest",
                "blocked",
                "--subresource=status",
                "--type=merge",
                "--dry-run=server",
                "-p",
                r#"{"status":{"phase":"Approved"}}"#,
            ]);
            if out.stderr.contains("approvals of this request are blocked") {
                Ok(())
            } else {
                Err(out.to_string())
            }
        },
    )
    .await;
    let out = admin
        .byoc(&[
            "approve",
            "-n",
            tool,
            "blocked",
            "--registry",
            "quay.io",
            "--no-expiry",
        ])
        .failure();
    assert!(
        out.stderr.contains("approvals of this request are blocked"),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("it had created was deleted again: nothing changed"),
        "{out}"
    );
    wait_grants(tool, "blocked", 0).await;
    assert_eq!(request(tool, "blocked")["status"]["phase"], "Pending");
}

#[tokio::test]
async fn a_request_timed_past_jiffs_range_stops_no_listing_and_no_reconcile() {
    let stage = stage("req-far").await;
    let tool = stage.ns.name();
    let (maintainer, admin) = (&stage.maintainer, &stage.admin);
    // Valid for the API server, past what jiff (and so a typed read) can represent.
    const FAR: &str = "9999-12-31T00:00:00Z";
    let far_entry = json!({
        "manager": "x", "operation": "Update",
        "apiVersion": "byoc.toolforge.org/v1alpha1", "time": FAR,
        "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:annotations": {"f:a": {}}}},
    });
    let managed_fields = || -> Value {
        let out = kubectl([
            "-n",
            tool,
            "get",
            "byocrequest",
            "far",
            "--show-managed-fields",
            "-o",
            "json",
        ])
        .success();
        let current: Value = serde_json::from_str(&out.stdout).expect("JSON");
        current["metadata"]["managedFields"].clone()
    };
    let stored_times = || managed_fields().to_string();
    // With `edit` (create, no update): the API server stamps its own time on create.
    let poisoned = json!({
        "apiVersion": "byoc.toolforge.org/v1alpha1", "kind": "ByocRequest",
        "metadata": {
            "name": "far", "namespace": tool, "annotations": {"a": "b"},
            "managedFields": [far_entry],
        },
        "spec": {"reason": "T10", "registries": ["quay.io"]},
    });
    maintainer
        .kubectl(&["create", "-f", "-"], Some(&poisoned.to_string()))
        .success();
    assert!(
        !stored_times().contains(FAR),
        "a create keeps no client time"
    );
    // Whoever may patch requests can store one: then nothing may stop reading.
    let mut fields = managed_fields();
    fields
        .as_array_mut()
        .expect("managedFields")
        .push(far_entry);
    let patch = json!({"metadata": {"managedFields": fields}}).to_string();
    kubectl([
        "-n",
        tool,
        "patch",
        "byocrequest",
        "far",
        "--type=merge",
        "-p",
        &patch,
    ])
    .success();
    assert!(stored_times().contains(FAR), "the API server kept {FAR}");
    // The controller's watch reads it, and the request after it.
    wait_phase(tool, "far", "Pending").await;
    maintainer
        .byoc(&[
            "request",
            "--name",
            "after",
            "--registry",
            "quay.io",
            "--reason",
            "T11",
        ])
        .success();
    wait_phase(tool, "after", "Pending").await;
    // The plugin lists and decides it.
    let out = admin.byoc(&["requests", "-A"]).success();
    assert!(
        out.stdout.contains("far") && out.stdout.contains("after"),
        "{out}"
    );
    admin
        .byoc(&[
            "approve",
            "-n",
            tool,
            "far",
            "--registry",
            "quay.io",
            "--no-expiry",
        ])
        .success();
    let grants = wait_grants(tool, "far", 1).await;
    let _grant = Cleanup::new(["byocgrant", grants[0]["metadata"]["name"].as_str().unwrap()]);
    wait_phase(tool, "far", "Approved").await;
}

#[tokio::test]
async fn the_api_explains_itself() {
    install().await;
    let out = kubectl(["explain", "byocrequest.spec"]).success();
    for needle in [
        "Registries the namespace's pods need to pull from",
        "Why the tool needs its own images",
        "How long the grant should last",
        "duration",
        "reason",
        "registries",
    ] {
        assert!(out.stdout.contains(needle), "{needle}: {out}");
    }
    let out = kubectl(["explain", "byocrequest"]).success();
    assert!(
        out.stdout
            .contains("ByocRequest asks the platform admins for a ByocGrant"),
        "{out}"
    );
    // Validation at the API server, with messages a human understands.
    let ns = tool_namespace("req-bad").await;
    for (spec, message) in [
        (json!({"reason": " "}), "reason must not be empty or blank"),
        (
            json!({"reason": "r", "duration": "0d"}),
            "duration must be positive",
        ),
        (
            json!({"reason": "r", "registries": ["Quay.io"]}),
            "each registry must be host[:port]",
        ),
    ] {
        let manifest = json!({
            "apiVersion": "byoc.toolforge.org/v1alpha1", "kind": "ByocRequest",
            "metadata": {"generateName": "bad-", "namespace": ns.name()}, "spec": spec,
        });
        kubectl_stdin(&["create", "-f", "-"], &manifest.to_string()).fails_with(&[message]);
    }
}

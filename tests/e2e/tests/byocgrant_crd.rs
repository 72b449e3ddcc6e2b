//! The ByocGrant CustomResourceDefinition against the real API server (issue 3, DESIGN §2):
//! it installs and is Established, `kubectl get` and `kubectl explain` show what admins need,
//! the schema and CEL rules refuse bad grants with readable messages, and tenants with edit
//! rights in their namespace cannot create, change or delete grants.

use byoc_api::{ByocGrant, ByocGrantSpec};
use byoc_e2e::{
    CONVERGE_TIMEOUT, Cleanup, Output, TestNamespace, client, client_as, crd_file, eventually,
    grant_manifest, install_crd, kubectl, kubectl_as, kubectl_stdin, parse_table, unique_name,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, CustomResourceExt, ResourceExt};
use serde_json::json;

/// The schema of `spec.FIELD` in the CRD as the API server stores it.
fn spec_field(crd: &CustomResourceDefinition, field: &str) -> JSONSchemaProps {
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref());
    let spec = schema
        .and_then(|s| s.properties.as_ref()?.get("spec"))
        .expect("spec schema");
    spec.properties
        .as_ref()
        .and_then(|p| p.get(field))
        .cloned()
        .unwrap_or_else(|| panic!("the CRD has no spec.{field}"))
}

/// The message of the CEL rule on `spec.FIELD` whose expression contains `rule_part`.
fn cel_message(crd: &CustomResourceDefinition, field: &str, rule_part: &str) -> String {
    spec_field(crd, field)
        .x_kubernetes_validations
        .unwrap_or_default()
        .into_iter()
        .find(|v| v.rule.contains(rule_part))
        .and_then(|v| v.message)
        .unwrap_or_else(|| panic!("spec.{field} has no CEL rule with {rule_part:?} and a message"))
}

/// Collapses all whitespace runs into one space (kubectl wraps long text).
fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `kubectl create --dry-run=server` of a grant: the API server validates it completely
/// (schema, CEL, admission) but stores nothing.
fn dry_run_create(spec: serde_json::Value) -> Output {
    let manifest = grant_manifest(&unique_name("e2e-dry"), spec);
    kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &manifest)
}

/// Creates a grant for real; it is deleted when the returned guard drops.
fn create_grant(name: &str, spec: serde_json::Value) -> Cleanup {
    kubectl_stdin(&["create", "-f", "-"], &grant_manifest(name, spec)).success();
    Cleanup::new(["byocgrant", name])
}

#[tokio::test]
async fn the_crd_installs_idempotently_and_is_established() {
    let client = client().await;
    let first = install_crd(&client).await;
    // Applying the same file again is a no-op: same generation, still Established.
    let file = crd_file();
    let file = file.to_str().expect("utf-8 path");
    kubectl([
        "apply",
        "--server-side",
        "--field-manager=byoc-e2e",
        "-f",
        file,
    ])
    .success();
    let second = Api::<CustomResourceDefinition>::all(client.clone())
        .get(ByocGrant::crd_name())
        .await
        .expect("get CRD");
    assert_eq!(
        first.metadata.generation, second.metadata.generation,
        "re-applying changed the CRD"
    );

    let conditions = second
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    for wanted in ["Established", "NamesAccepted"] {
        let cond = conditions.iter().find(|c| c.type_ == wanted);
        assert_eq!(
            cond.map(|c| c.status.as_str()),
            Some("True"),
            "{wanted}: {conditions:?}"
        );
    }
    let accepted = second
        .status
        .and_then(|s| s.accepted_names)
        .expect("accepted names");
    assert_eq!(accepted.kind, "ByocGrant");
    assert_eq!(accepted.plural, "byocgrants");
    assert_eq!(accepted.short_names, Some(vec!["byoc".to_owned()]));
    assert_eq!(accepted.categories, Some(vec!["toolforge".to_owned()]));
    assert_eq!(second.spec.scope, "Cluster");

    let out = kubectl([
        "api-resources",
        "--api-group=byoc.toolforge.org",
        "--no-headers",
    ])
    .success();
    assert_eq!(
        squash(&out.stdout),
        "byocgrants byoc byoc.toolforge.org/v1alpha1 false ByocGrant \
         byocrequests byocreq byoc.toolforge.org/v1alpha1 true ByocRequest",
        "{out}"
    );
}

#[tokio::test]
async fn kubectl_get_byoc_prints_the_columns() {
    let client = client().await;
    install_crd(&client).await;
    let name = unique_name("e2e-columns");
    let namespace = unique_name("tool-columns");
    let _grant = create_grant(
        &name,
        json!({
            "namespace": namespace,
            "reason": "T302863: mixes java and python runtimes",
            "registries": ["quay.io", "ghcr.io/wikimedia"],
            "expiresAt": "2027-03-31T00:00:00Z",
        }),
    );

    let out = kubectl(["get", "byoc", &name]).success();
    let (header, rows) = parse_table(&out.stdout);
    assert_eq!(
        header,
        [
            "NAME",
            "NAMESPACE",
            "REGISTRIES",
            "EXPIRES",
            "READY",
            "REASON",
            "AGE"
        ],
        "{out}"
    );
    assert_eq!(rows.len(), 1, "{out}");
    let row = &rows[0];
    assert_eq!(row[0], name, "{out}");
    assert_eq!(row[1], namespace, "{out}");
    // REGISTRIES, READY and REASON come from the controller's status (empty until it runs:
    // tests/controller.rs checks them with it); AGE is set.
    assert_eq!(row[2], "", "{out}");
    assert_eq!(row[3], "2027-03-31T00:00:00Z", "{out}");
    assert!(!row[6].is_empty(), "{out}");

    // The category and the full resource name reach it too.
    let out = kubectl(["get", "toolforge", "-o", "name"]).success();
    assert!(
        out.stdout
            .lines()
            .any(|l| l == format!("byocgrant.byoc.toolforge.org/{name}")),
        "{out}"
    );
    kubectl(["get", "byocgrants.byoc.toolforge.org", &name]).success();
}

#[tokio::test]
async fn kubectl_explain_shows_the_field_descriptions() {
    let client = client().await;
    let crd = install_crd(&client).await;
    // The OpenAPI document that `kubectl explain` reads is rebuilt shortly after the CRD changes.
    let out = eventually(
        "kubectl explain byocgrant.spec",
        CONVERGE_TIMEOUT,
        || async {
            let out = kubectl(["explain", "byocgrant.spec"]);
            if out.status.success() {
                Ok(out)
            } else {
                Err(out.to_string())
            }
        },
    )
    .await;
    let text = squash(&out.stdout);

    for (field, header) in [
        ("namespace", "namespace <string> -required-"),
        ("reason", "reason <string> -required-"),
        ("registries", "registries <[]string>"),
        ("anyRegistry", "anyRegistry <boolean>"),
        ("namespaceUID", "namespaceUID <string>"),
        ("expiresAt", "expiresAt <string>"),
    ] {
        assert!(
            text.contains(header),
            "explain lacks {header:?}:\n{}",
            out.stdout
        );
        let description = spec_field(&crd, field).description.expect("a description");
        assert!(
            text.contains(&squash(&description)),
            "explain lacks the description of {field} ({description:?}):\n{}",
            out.stdout
        );
    }

    let out = kubectl(["explain", "byocgrant"]).success();
    assert!(
        squash(&out.stdout).contains("ByocGrant lets the pods of one namespace run"),
        "{out}"
    );
}

#[tokio::test]
async fn schema_and_cel_rules_reject_bad_grants_with_readable_messages() {
    let client = client().await;
    let crd = install_crd(&client).await;
    let registry_message = cel_message(&crd, "registries", "matches(");
    let reason_message = cel_message(&crd, "reason", "trim()");
    let ns = unique_name("tool-cel");

    // Control: good grants pass, so the refusals below are about what they change.
    for registries in [
        json!([
            "quay.io",
            "ghcr.io/wikimedia",
            "registry.example.org:5000/team"
        ]),
        json!(["localhost", "localhost:5000/x", "10.1.2.3:5000"]),
    ] {
        dry_run_create(json!({"namespace": ns, "reason": "T1", "registries": registries}))
            .success();
    }
    dry_run_create(json!({"namespace": ns, "reason": "T1", "anyRegistry": true,
                          "expiresAt": "2027-03-31T00:00:00Z"}))
    .success();

    // Bad registry entries.
    for bad in [
        "Quay.IO",
        "https://quay.io",
        "quay",
        "quay.io/",
        "quay.io/Org",
        "quay.io:99999",
    ] {
        dry_run_create(json!({"namespace": ns, "reason": "T1", "registries": ["quay.io", bad]}))
            .fails_with(&["is invalid", "spec.registries", &registry_message]);
    }
    dry_run_create(json!({"namespace": ns, "reason": "T1", "registries": [""]}))
        .fails_with(&["spec.registries[0]", "at least 1 chars long"]);

    // Empty, blank and missing reasons.
    dry_run_create(json!({"namespace": ns, "reason": ""}))
        .fails_with(&["spec.reason", "at least 1 chars long"]);
    dry_run_create(json!({"namespace": ns, "reason": "  \t "}))
        .fails_with(&["spec.reason", &reason_message]);
    dry_run_create(json!({"namespace": ns})).fails_with(&["spec.reason: Required value"]);

    // Bad namespaces and expiry.
    dry_run_create(json!({"namespace": "Tool_X", "reason": "T1"}))
        .fails_with(&["spec.namespace", "should match"]);
    dry_run_create(json!({"reason": "T1"})).fails_with(&["spec.namespace: Required value"]);
    dry_run_create(json!({"namespace": ns, "reason": "T1", "expiresAt": "next tuesday"}))
        .fails_with(&["spec.expiresAt", "date-time"]);

    // Through the typed client: 422 Invalid with the same message.
    let grants: Api<ByocGrant> = Api::all(client.clone());
    let mut grant = ByocGrant::new(
        &unique_name("e2e-typed"),
        ByocGrantSpec {
            namespace: ns.clone(),
            reason: "T1".to_owned(),
            registries: vec!["not a registry".to_owned()],
            any_registry: false,
            namespace_uid: None,
            expires_at: None,
            requirements: None,
        },
    );
    grant.metadata.labels = Some([(byoc_e2e::TEST_LABEL.to_owned(), "true".to_owned())].into());
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match grants.create(&dry_run, &grant).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(
                (status.code, status.reason.as_str()),
                (422, "Invalid"),
                "{status:?}"
            );
            assert!(status.message.contains(&registry_message), "{status:?}");
        }
        other => panic!("expected 422 Invalid, got {other:?}"),
    }
}

/// Issue 21: "any registry" is only ever asked for. An empty or missing `registries` list is
/// refused on create, with a message that says what to write instead; `anyRegistry: true`
/// alone is accepted, and with a list it is refused; `namespaceUID` must be a UID. (A grant
/// stored with an empty list before these rules: tests/grant_lifecycle.rs.)
#[tokio::test]
async fn any_registry_is_asked_for_explicitly() {
    let client = client().await;
    let crd = install_crd(&client).await;
    let rules = byoc_e2e::spec_rules(&crd);
    let message = |rule: &str| {
        rules
            .iter()
            .find(|r| r.rule == rule)
            .and_then(|r| r.message.clone())
            .unwrap_or_else(|| panic!("no spec rule {rule:?} with a message: {rules:?}"))
    };
    let required = message(byoc_api::grant::REGISTRIES_REQUIRED_RULE);
    let exclusive = message(byoc_api::grant::REGISTRIES_EXCLUSIVE_RULE);
    assert!(required.contains("set anyRegistry: true"), "{required}");
    let ns = unique_name("tool-any");

    for spec in [
        json!({"namespace": ns, "reason": "T1"}),
        json!({"namespace": ns, "reason": "T1", "registries": []}),
        json!({"namespace": ns, "reason": "T1", "anyRegistry": false}),
        json!({"namespace": ns, "reason": "T1", "anyRegistry": false, "registries": []}),
    ] {
        dry_run_create(spec).fails_with(&["is invalid", "spec: Invalid value", &required]);
    }
    dry_run_create(json!({"namespace": ns, "reason": "T1", "anyRegistry": true,
                          "registries": ["quay.io"]}))
    .fails_with(&["is invalid", &exclusive]);
    for spec in [
        json!({"namespace": ns, "reason": "T1", "anyRegistry": true}),
        json!({"namespace": ns, "reason": "T1", "anyRegistry": true, "registries": []}),
        json!({"namespace": ns, "reason": "T1", "anyRegistry": false, "registries": ["quay.io"]}),
    ] {
        dry_run_create(spec).success();
    }

    // A stored grant that names registries cannot drop them, nor add anyRegistry to them.
    let name = unique_name("e2e-any");
    let _grant = create_grant(
        &name,
        json!({"namespace": ns, "reason": "T1", "registries": ["quay.io"]}),
    );
    let patch = |p: serde_json::Value| {
        kubectl([
            "patch",
            "byocgrant",
            &name,
            "--type=merge",
            "-p",
            &p.to_string(),
        ])
    };
    patch(json!({"spec": {"registries": null}})).fails_with(&[&required]);
    patch(json!({"spec": {"registries": []}})).fails_with(&[&required]);
    patch(json!({"spec": {"anyRegistry": true}})).fails_with(&[&exclusive]);
    patch(json!({"spec": {"anyRegistry": true, "registries": null}})).success();

    // spec.namespaceUID takes UIDs only.
    dry_run_create(json!({"namespace": ns, "reason": "T1", "anyRegistry": true,
                          "namespaceUID": "tool-any"}))
    .fails_with(&["spec.namespaceUID", "should match"]);
    dry_run_create(json!({"namespace": ns, "reason": "T1", "anyRegistry": true,
                          "namespaceUID": "0b7e8a52-5f0e-4a0e-9a57-2c1c7d4a9c11"}))
    .success();
}

/// The `expiresAt` table of crates/api/testdata/expires-at.txt, which the unit test in
/// crates/api/src/grant.rs checks against the pattern and the Rust parser: the real API server
/// stores exactly the values marked `accept`, and nothing the Rust side cannot read.
#[tokio::test]
async fn the_api_server_accepts_exactly_the_expiry_values_rust_reads() {
    let client = client().await;
    install_crd(&client).await;
    let table = include_str!("../../../crates/api/testdata/expires-at.txt");
    let ns = unique_name("tool-expiry");
    let mut wrong = Vec::new();
    let mut count = 0;
    for line in table
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (verdict, value) = line.split_once(' ').expect("`accept|reject VALUE`");
        let accepted = match verdict {
            "accept" => true,
            "reject" => false,
            other => panic!("bad verdict {other:?} in {line:?}"),
        };
        count += 1;
        let out = dry_run_create(
            json!({"namespace": ns, "reason": "T1", "anyRegistry": true, "expiresAt": value}),
        );
        if out.status.success() != accepted {
            wrong.push(format!("{line}: {out}"));
        } else if !accepted {
            assert!(out.stderr.contains("spec.expiresAt"), "{line}: {out}");
        }
    }
    assert!(count > 30, "the table was not read");
    assert!(
        wrong.is_empty(),
        "the API server disagrees:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn spec_namespace_is_immutable_but_other_fields_are_not() {
    let client = client().await;
    let crd = install_crd(&client).await;
    let immutable_message = cel_message(&crd, "namespace", "oldSelf");
    let name = unique_name("e2e-immutable");
    let ns = unique_name("tool-immutable");
    let _grant = create_grant(
        &name,
        json!({"namespace": ns, "reason": "T1", "anyRegistry": true}),
    );

    let moved = json!({"spec": {"namespace": unique_name("tool-other")}}).to_string();
    kubectl(["patch", "byocgrant", &name, "--type=merge", "-p", &moved]).fails_with(&[
        "is invalid",
        "spec.namespace",
        &immutable_message,
    ]);
    let replaced = grant_manifest(
        &name,
        json!({"namespace": "tool-other", "reason": "T1", "anyRegistry": true}),
    );
    kubectl_stdin(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        &replaced,
    )
    .fails_with(&["spec.namespace", &immutable_message]);

    // The rule only guards the namespace: other fields change freely.
    let edited = json!({"spec": {"reason": "T2: still needed", "registries": ["quay.io"],
                                 "anyRegistry": null}});
    kubectl([
        "patch",
        "byocgrant",
        &name,
        "--type=merge",
        "-p",
        &edited.to_string(),
    ])
    .success();

    let stored = Api::<ByocGrant>::all(client)
        .get(&name)
        .await
        .expect("get grant");
    assert_eq!(stored.spec.namespace, ns);
    assert_eq!(stored.spec.reason, "T2: still needed");
    assert_eq!(stored.spec.registries, ["quay.io"]);
}

#[tokio::test]
async fn a_user_with_edit_rights_in_a_tool_namespace_cannot_touch_grants() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::create(&client, "tool-rbac").await;
    let user = unique_name("alice");
    kubectl([
        "-n",
        ns.name(),
        "create",
        "rolebinding",
        "alice-edit",
        "--clusterrole=edit",
        &format!("--user={user}"),
    ])
    .success();

    // Control: the binding works, the user can deploy in the namespace.
    eventually(
        "the edit binding to take effect",
        CONVERGE_TIMEOUT,
        || async {
            let out = kubectl_as(
                &user,
                &["auth", "can-i", "create", "deployments", "-n", ns.name()],
                None,
            );
            if out.stdout.trim() == "yes" {
                Ok(())
            } else {
                Err(out.to_string())
            }
        },
    )
    .await;
    kubectl_as(
        &user,
        &["-n", ns.name(), "create", "configmap", "mine"],
        None,
    )
    .success();

    for verb in ["create", "update", "patch", "delete", "deletecollection"] {
        let out = kubectl_as(
            &user,
            &["auth", "can-i", verb, "byocgrants.byoc.toolforge.org"],
            None,
        );
        assert_eq!(out.stdout.trim(), "no", "{user} may {verb} grants: {out}");
    }

    let create_forbidden = format!(
        "User \"{user}\" cannot create resource \"byocgrants\" in API group \
         \"byoc.toolforge.org\" at the cluster scope"
    );

    // kubectl as the user: create, change, delete. (kubectl may read the object before patching
    // or deleting it, so only create names its verb; the kube client below checks every verb.)
    let on_grants =
        "resource \"byocgrants\" in API group \"byoc.toolforge.org\" at the cluster scope";
    let own = grant_manifest(
        &unique_name("e2e-self"),
        json!({"namespace": ns.name(), "reason": "me", "anyRegistry": true}),
    );
    kubectl_as(&user, &["create", "-f", "-"], Some(&own))
        .fails_with(&["Forbidden", &create_forbidden]);

    let name = unique_name("e2e-rbac");
    let _grant = create_grant(
        &name,
        json!({"namespace": ns.name(), "reason": "T1", "anyRegistry": true}),
    );
    let widen = json!({"spec": {"registries": ["evil.example.com"]}}).to_string();
    kubectl_as(
        &user,
        &["patch", "byocgrant", &name, "--type=merge", "-p", &widen],
        None,
    )
    .fails_with(&["Forbidden", on_grants]);
    let replaced = grant_manifest(
        &name,
        json!({"namespace": ns.name(), "reason": "mine now", "anyRegistry": true}),
    );
    kubectl_as(&user, &["replace", "-f", "-"], Some(&replaced))
        .fails_with(&["Forbidden", on_grants]);
    kubectl_as(&user, &["delete", "byocgrant", &name], None).fails_with(&["Forbidden", on_grants]);

    // The kube client impersonating the user: same answers (403 Forbidden).
    let as_user: Api<ByocGrant> = Api::all(client_as(&user).await);
    let mut grant = ByocGrant::new(
        &unique_name("e2e-self"),
        ByocGrantSpec {
            namespace: ns.name().to_owned(),
            reason: "me".to_owned(),
            registries: vec![],
            any_registry: true,
            namespace_uid: None,
            expires_at: None,
            requirements: None,
        },
    );
    grant.metadata.labels = Some([(byoc_e2e::TEST_LABEL.to_owned(), "true".to_owned())].into());
    let results = [
        (
            "cannot create resource \"byocgrants\"",
            as_user
                .create(&PostParams::default(), &grant)
                .await
                .map(|_| ()),
        ),
        (
            "cannot patch resource \"byocgrants\"",
            as_user
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"reason": "x"}})),
                )
                .await
                .map(|_| ()),
        ),
        (
            "cannot patch resource \"byocgrants/status\"",
            as_user
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {}})),
                )
                .await
                .map(|_| ()),
        ),
        (
            "cannot delete resource \"byocgrants\"",
            as_user
                .delete(&name, &DeleteParams::default())
                .await
                .map(|_| ()),
        ),
    ];
    for (expected, result) in results {
        match result {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 403, "{expected}: {status:?}");
                assert!(status.message.contains(expected), "{expected}: {status:?}");
            }
            other => panic!("{expected}: expected 403, got {other:?}"),
        }
    }

    // The grant is untouched.
    let stored = Api::<ByocGrant>::all(client)
        .get(&name)
        .await
        .expect("get grant");
    assert_eq!(stored.spec.reason, "T1");
    assert!(stored.spec.registries.is_empty());
    assert!(stored.metadata.deletion_timestamp.is_none());
    assert_eq!(stored.name_any(), name);
}

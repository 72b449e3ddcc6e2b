//! `spec.requirements` of ByocGrant against the real API server (issue 22, DESIGN §12): the
//! CRD's schema and CEL rules accept exactly the requirements `Requirements::validate` accepts,
//! so the controller and webhook never read a stored grant differently from how the API
//! server checked it.

use byoc_api::Requirements;
use byoc_e2e::{client, grant_manifest, install_crd, kubectl_stdin, unique_name};
use serde_json::{Value, json};

const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn cases() -> Vec<Value> {
    let mut cases = vec![
        json!({}),
        json!({"requireDigest": true}),
        json!({"builtOn": ["tools-harbor.wmcloud.org/toolforge/heroku-runner"]}),
        json!({"builtOn": ["tools-harbor.wmcloud.org/toolforge/heroku-runner:22"]}),
        json!({"builtOn": [format!("quay.io/a/b@sha256:{HEX}")]}),
        json!({"builtOn": ["localhost:5000/base", "index.docker.io/library/debian"]}),
        json!({"sourceFrom": ["https://gitlab.wikimedia.org/toolforge-repos/{tool}"]}),
        json!({"sourceFrom": ["https://git.example.org:8443/{namespace}/x.y~z"]}),
    ];
    for bad in [
        "quay.io",
        "heroku-runner",
        "Quay.io/a",
        "quay.io/a:",
        "quay.io/a@sha256:abc",
        "quay.io/a:1@sha256:0123",
        "quay.io/a/",
        "https://quay.io/a",
    ] {
        cases.push(json!({"builtOn": [bad]}));
    }
    for bad in [
        "http://gitlab.wikimedia.org/x",
        "https://gitlab.wikimedia.org/x/",
        "https://gitlab.wikimedia.org/x/../y",
        "https://gitlab.wikimedia.org/./y",
        "https://gitlab.wikimedia.org/{user}",
        "https://gitlab.wikimedia.org/x?y",
        "https://user@gitlab.wikimedia.org/x",
        "https://{tool}.example.org/x",
    ] {
        cases.push(json!({"sourceFrom": [bad]}));
    }
    let many: Vec<String> = (0..17).map(|i| format!("quay.io/a{i}")).collect();
    cases.push(json!({"builtOn": many}));
    cases
}

#[tokio::test]
async fn the_api_server_accepts_exactly_the_requirements_rust_accepts() {
    install_crd(&client().await).await;
    let ns = unique_name("tool-req");
    for requirements in cases() {
        let rust = serde_json::from_value::<Requirements>(requirements.clone())
            .map_err(|e| e.to_string())
            .and_then(|r| r.validate().map_err(|e| e.to_string()));
        let manifest = grant_manifest(
            &unique_name("e2e-req"),
            json!({"namespace": ns, "reason": "T22", "registries": ["quay.io"], "requirements": requirements}),
        );
        let out = kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &manifest);
        assert_eq!(
            out.status.success(),
            rust.is_ok(),
            "{requirements}: Rust says {rust:?}, the API server says {out}"
        );
        if rust.is_err() {
            assert!(
                out.stderr.contains("spec.requirements"),
                "{requirements}: {out}"
            );
        }
    }
}

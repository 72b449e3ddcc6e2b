//! The Helm chart `charts/byoc-operator`. `make chart-test` runs this file on a control plane of
//! its own, ignored test included; `make e2e` runs the rest of it with the other tests:
//!
//!  1. `helm lint --strict` with the default values and every `ci/*.yaml`;
//!  2. `helm template` of three variants: default, `ci/full-values.yaml` (every option on,
//!     another release name and namespace), `ci/cert-manager-values.yaml`; the packaged chart;
//!     offline rendering without `--kube-version`, and Kubernetes older than 1.30 refused
//!     whenever the version is known (`--kube-version`, and a cluster that reports it);
//!  3. `values.schema.json` and the chart's own checks refuse bad values with a message naming
//!     the value;
//!  4. on the local control plane, with the ByocGrant CRD applied first: every rendered object
//!     of every variant passes `kubectl apply --server-side --dry-run=server` (cert-manager,
//!     ServiceMonitor and PrometheusRule objects, whose CRDs the cluster lacks, are checked by
//!     lint and rendering only), and the objects the API server returns are checked: the webhook configuration,
//!     the Deployments, the rendered policy (evaluated by kubectl-byoc with exactly the
//!     webhook's code) and the binaries' acceptance of the Deployments' arguments;
//!  5. a real `helm install`/`upgrade`/`uninstall`: the CRD is upgraded with the chart,
//!     certificates survive upgrades and rotate smoothly, the webhook fails closed outside the
//!     exempt namespaces and deleting its configuration always recovers; the real byoc-webhook
//!     and byoc-controller binaries run with the chart's arguments, policy, certificate and
//!     service-account tokens (so the chart's RBAC is proven sufficient); grants and labels
//!     after uninstall and re-install.
//!
//! Steps 4 and 5 are one test, `on_the_cluster`: they install cluster-wide objects in order
//! (the ByocGrant CRD, which they delete at the end, and a fail-closed webhook), so they need a
//! control plane no other test uses; it is `#[ignore]`d for `make e2e` and run by `make
//! chart-test` with `--include-ignored`. It reports every check (`ok:`/`FAIL:` lines, shown with
//! `--nocapture`) and then fails with all failures.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use byoc_e2e::chaos::pod_review;
use byoc_e2e::chart::{
    API_SERVER_CIDRS, Object, Report, VARIANTS, Variant, chart_dir, component, deployment_problems,
    helm, helm_on_cluster, of_kind, wait_for, webhook_configuration_problems, work_dir,
};
use byoc_e2e::controller::target_dir;
use byoc_e2e::{
    Output, free_port, http_get, kubeconfig_path, kubectl as k, kubectl_stdin, pinned_version,
    repo_root, run_command, terminate, write_token_kubeconfig,
};
use serde_json::{Value, json};

fn chart() -> String {
    chart_dir().display().to_string()
}

fn kube_version() -> String {
    pinned_version("KUBERNETES_VERSION")
}

// ---------------------------------------------------------------------------------------------
// 1-3: lint, render, schema (no cluster)

#[test]
fn lint_strict_with_every_values_file() {
    let mut files = vec![None];
    let mut ci: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("ci"))
        .expect("charts/byoc-operator/ci")
        .map(|e| e.expect("a ci file").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    ci.sort();
    assert!(ci.len() >= 2, "the ci/ values files: {ci:?}");
    files.extend(ci.into_iter().map(Some));
    // The presets, which need the API server's addresses from another values file.
    files.push(Some(chart_dir().join("presets/toolforge.yaml")));
    let mut report = Report::default();
    for file in files {
        let mut args = vec!["lint".to_owned(), "--strict".into(), chart()];
        if let Some(f) = &file {
            args.extend(["-f".to_owned(), f.display().to_string()]);
            if f.parent().is_some_and(|d| d.ends_with("presets")) {
                args.extend(["--set".to_owned(), API_SERVER_CIDRS.to_owned()]);
            }
        }
        let name = file.map_or("(defaults)".to_owned(), |f| f.display().to_string());
        report.succeeded(&helm(&args), format!("helm lint --strict {name}"));
    }
    report.finish();
}

#[test]
fn every_variant_renders() {
    for v in VARIANTS {
        let objects = v
            .render()
            .unwrap_or_else(|e| panic!("helm template {}: {e}", v.name));
        for kind in ["ValidatingWebhookConfiguration", "ConfigMap"] {
            assert_eq!(of_kind(&objects, kind).count(), 1, "{}: one {kind}", v.name);
        }
        assert_eq!(
            of_kind(&objects, "Deployment").count(),
            2,
            "{}: controller and webhook",
            v.name
        );
        println!("ok: helm template {}: {} objects", v.name, objects.len());
    }
    // The CRDs come through the links to crds/byocgrants.yaml and crds/byocrequests.yaml.
    let default = VARIANTS[0].render().expect("default render");
    let crds: Vec<&Object> = of_kind(&default, "CustomResourceDefinition").collect();
    let names: Vec<&str> = crds.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "byocgrants.byoc.toolforge.org",
            "byocrequests.byoc.toolforge.org"
        ],
        "the default render carries the project's CRDs"
    );
    for crd in crds {
        assert!(
            crd.value["spec"]["versions"][0]["schema"]["openAPIV3Schema"].is_object(),
            "{} has its schema",
            crd.name
        );
    }
}

/// The container args of a rendered variant's `comp` (`controller` or `webhook`).
fn container_args(objects: &[Object], comp: &str) -> Vec<String> {
    let deployment = component(objects, "Deployment", comp).expect("the Deployment");
    deployment.value["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect()
}

/// PolicyReports (issue 15): off by default; `reports.enabled` adds `--reports` and the RBAC
/// to watch workloads and write reports; `reports.installCRD` adds the PolicyReport CRD. The
/// controller always reads the webhook's policy, mounted at the webhook's path.
#[test]
fn reports_are_off_by_default_and_bring_their_rbac_and_crd_when_on() {
    let rules = |objects: &[Object]| -> Vec<Value> {
        component(objects, "ClusterRole", "controller")
            .expect("the controller's ClusterRole")
            .value["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let grants_resource = |rules: &[Value], resource: &str| {
        rules.iter().any(|r| {
            r["resources"]
                .as_array()
                .is_some_and(|l| l.iter().any(|x| x == resource))
        })
    };
    let default = VARIANTS[0].render().expect("default render");
    let args = container_args(&default, "controller");
    assert!(!args.iter().any(|a| a == "--reports"), "{args:?}");
    assert!(
        args.iter()
            .any(|a| a == "--config=/etc/byoc-operator/policy/config.yaml"),
        "{args:?}"
    );
    assert!(!grants_resource(&rules(&default), "pods"));
    assert!(!grants_resource(&rules(&default), "policyreports"));
    assert!(
        !of_kind(&default, "CustomResourceDefinition")
            .any(|c| c.name == "policyreports.wgpolicyk8s.io")
    );
    let full = VARIANTS[1].render().expect("full render");
    let args = container_args(&full, "controller");
    assert!(args.iter().any(|a| a == "--reports"), "{args:?}");
    let rules = rules(&full);
    for resource in [
        "pods",
        "deployments",
        "replicasets",
        "statefulsets",
        "daemonsets",
        "jobs",
        "cronjobs",
        "replicationcontrollers",
        "policyreports",
    ] {
        assert!(grants_resource(&rules, resource), "{resource}: {rules:?}");
    }
    // Workloads are read, never written.
    for rule in &rules {
        if rule["resources"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x == "pods"))
        {
            assert_eq!(rule["verbs"], json!(["list", "watch"]), "{rule}");
        }
    }
    let crd = of_kind(&full, "CustomResourceDefinition")
        .find(|c| c.name == "policyreports.wgpolicyk8s.io")
        .expect("the PolicyReport CRD with reports.installCRD");
    assert_eq!(crd.value["spec"]["versions"][0]["name"], "v1alpha2");
    let deployment = component(&full, "Deployment", "controller").expect("the controller");
    let pod = &deployment.value["spec"]["template"];
    assert_eq!(
        pod["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        "/etc/byoc-operator/policy"
    );
    let webhook = component(&full, "Deployment", "webhook").expect("the webhook");
    assert_eq!(
        pod["metadata"]["annotations"]["checksum/policy"],
        webhook.value["spec"]["template"]["metadata"]["annotations"]["checksum/policy"],
        "a policy change rolls the controller too"
    );
}

#[test]
fn issuer_ref_uses_that_issuer_and_creates_none() {
    let out = helm([
        "template",
        "byoc-operator",
        &chart(),
        "-n",
        "byoc-system",
        "--kube-version",
        &kube_version(),
        "--set",
        API_SERVER_CIDRS,
        "--set",
        "certManager.enabled=true",
        "--set",
        "certManager.issuerRef.name=corp-ca",
        "--set",
        "certManager.issuerRef.kind=ClusterIssuer",
    ])
    .success();
    let objects = byoc_e2e::chart::parse_objects(&out.stdout).expect("parses");
    assert_eq!(
        of_kind(&objects, "Issuer").count(),
        0,
        "no chart-made Issuer"
    );
    let certificates: Vec<&Object> = of_kind(&objects, "Certificate").collect();
    assert!(!certificates.is_empty(), "a Certificate");
    for c in certificates {
        let issuer = &c.value["spec"]["issuerRef"];
        assert!(
            issuer["name"] == "corp-ca" && issuer["kind"] == "ClusterIssuer",
            "{}: issuerRef {issuer}",
            c.name
        );
    }
}

/// The controller reads the webhook's policy (for `expiryWarning`) from the same ConfigMap at
/// the same path; the optional PrometheusRule alerts on `byoc_grant_expiry_timestamp_seconds`.
#[test]
fn the_controller_reads_the_policy_and_the_rule_alerts_on_expiring_grants() {
    // (variant, expiryWarning in the policy, the rule's threshold in seconds when enabled)
    let cases = [
        (VARIANTS[0], "14d", None),
        (VARIANTS[1], "1w", Some(("604800", "5m", "page"))),
    ];
    for (v, window, rule) in cases {
        let objects = v
            .render()
            .unwrap_or_else(|e| panic!("helm template {}: {e}", v.name));
        let policy = of_kind(&objects, "ConfigMap")
            .find(|c| c.name.ends_with("-webhook-policy"))
            .expect("the policy ConfigMap");
        let config = policy.value["data"]["config.yaml"]
            .as_str()
            .unwrap_or_default();
        assert!(
            config.contains(&format!("\nexpiryWarning: {window}\n")),
            "{}: {config}",
            v.name
        );
        let controller = byoc_e2e::chart::component(&objects, "Deployment", "controller")
            .expect("the controller Deployment");
        let spec = &controller.value["spec"]["template"]["spec"];
        let args = spec["containers"][0]["args"].to_string();
        assert!(
            args.contains("\"--config=/etc/byoc-operator/policy/config.yaml\""),
            "{}: {args}",
            v.name
        );
        assert_eq!(
            spec["containers"][0]["volumeMounts"][0]["mountPath"], "/etc/byoc-operator/policy",
            "{}",
            v.name
        );
        assert_eq!(
            spec["volumes"][0]["configMap"]["name"], policy.name,
            "{}",
            v.name
        );
        assert!(
            controller.value["spec"]["template"]["metadata"]["annotations"]["checksum/policy"]
                .is_string(),
            "{}: a policy change rolls the controller",
            v.name
        );
        let rules: Vec<&Object> = of_kind(&objects, "PrometheusRule").collect();
        match rule {
            None => assert!(rules.is_empty(), "{}: no PrometheusRule by default", v.name),
            Some((seconds, for_, severity)) => {
                assert_eq!(rules.len(), 1, "{}", v.name);
                assert_eq!(
                    rules[0].value["metadata"]["labels"]["release"],
                    "prometheus"
                );
                let alert = &rules[0].value["spec"]["groups"][0]["rules"][0];
                assert_eq!(alert["alert"], "ByocGrantExpiringSoon");
                let expr = alert["expr"].as_str().unwrap_or_default();
                assert!(
                    expr.contains(&format!(
                        "max by (grant, namespace) (byoc_grant_expiry_timestamp_seconds) - time() < {seconds}"
                    )) && expr.contains("- time() > 0"),
                    "{expr}"
                );
                assert_eq!(
                    (alert["for"].as_str(), alert["labels"]["severity"].as_str()),
                    (Some(for_), Some(severity))
                );
                let description = alert["annotations"]["description"]
                    .as_str()
                    .unwrap_or_default();
                assert!(description.contains("{{ $labels.grant }}"), "{description}");
            }
        }
    }
}

/// The rendered NetworkPolicy of `comp`.
fn network_policy<'a>(objects: &'a [Object], comp: &str) -> &'a Value {
    &component(objects, "NetworkPolicy", comp)
        .unwrap_or_else(|| panic!("a NetworkPolicy for the {comp}"))
        .value
}

/// The ports (by name) of the first container of `comp`'s Deployment.
fn container_ports(objects: &[Object], comp: &str) -> Vec<String> {
    let deployment = component(objects, "Deployment", comp).expect("the Deployment");
    deployment.value["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect()
}

/// Issue 21: by default only the API server's addresses may reach the webhook port, nobody
/// the admin (metrics) ports; `webhookFrom` and `metricsFrom` add peers. The policies name
/// ports the containers have.
#[test]
fn the_network_policy_is_on_by_default_and_lets_only_the_api_server_reach_the_webhook() {
    let default = VARIANTS[0].render().expect("default render");
    let webhook = network_policy(&default, "webhook");
    assert_eq!(webhook["spec"]["policyTypes"], json!(["Ingress"]));
    assert_eq!(
        webhook["spec"]["ingress"],
        json!([{
            "ports": [{"port": "https", "protocol": "TCP"}],
            "from": [{"ipBlock": {"cidr": "127.0.0.1/32"}}],
        }]),
        "the webhook port from the API server only, no admin port"
    );
    let controller = network_policy(&default, "controller");
    assert_eq!(
        controller["spec"]["ingress"],
        json!([]),
        "nothing reaches the controller"
    );
    for (comp, ports) in [
        ("webhook", &["https", "admin"][..]),
        ("controller", &["admin"]),
    ] {
        let have = container_ports(&default, comp);
        assert!(
            ports.iter().all(|p| have.iter().any(|h| h == p)),
            "{comp} ports {have:?}"
        );
    }

    let full = VARIANTS[1].render().expect("full render");
    let monitoring = json!([{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}]);
    let webhook = &network_policy(&full, "webhook")["spec"]["ingress"];
    assert_eq!(
        webhook[0]["from"],
        json!([
            {"ipBlock": {"cidr": "10.0.0.10/32"}},
            {"ipBlock": {"cidr": "10.0.0.11/32"}},
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
             "podSelector": {"matchLabels": {"k8s-app": "konnectivity-agent"}}},
        ]),
        "the API servers and webhookFrom"
    );
    assert_eq!(
        webhook[1],
        json!({"ports": [{"port": "admin", "protocol": "TCP"}], "from": monitoring})
    );
    assert_eq!(
        network_policy(&full, "controller")["spec"]["ingress"],
        json!([{"ports": [{"port": "admin", "protocol": "TCP"}], "from": monitoring}])
    );
}

/// Issue 21: a NetworkPolicy that cannot be scoped is not rendered silently open: without the
/// API server's addresses rendering fails naming the value, as it does when a ServiceMonitor
/// would scrape ports the policy closes.
#[test]
fn the_network_policy_needs_the_api_server_addresses_and_says_so() {
    let render = |set: &[&str]| {
        let mut args = vec![
            "template".to_owned(),
            "byoc-operator".into(),
            chart(),
            "--kube-version".into(),
            kube_version(),
        ];
        for value in set {
            args.extend(["--set".to_owned(), (*value).to_owned()]);
        }
        helm(&args)
    };
    let mut report = Report::default();
    for (set, message) in [
        (
            &[][..],
            "networkPolicy.apiServerCIDRs is empty: set it to the addresses the API server \
             reaches pods from",
        ),
        (
            &[API_SERVER_CIDRS, "serviceMonitor.enabled=true"],
            "unless networkPolicy.metricsFrom names your Prometheus",
        ),
    ] {
        let out = render(set);
        report.check(
            !out.status.success() && out.stderr.contains(message),
            format!("helm template --set {set:?} fails with {message:?}"),
            &out,
        );
    }
    let out = render(&["networkPolicy.enabled=false"]);
    if report.succeeded(
        &out,
        "helm template --set networkPolicy.enabled=false renders",
    ) {
        let objects = byoc_e2e::chart::parse_objects(&out.stdout).expect("parses");
        report.check(
            of_kind(&objects, "NetworkPolicy").count() == 0,
            "networkPolicy.enabled=false renders no NetworkPolicy",
            "",
        );
    }
    report.finish();
}

/// Issue 21: the webhook's connection caps and watch tolerance come from the values.
#[test]
fn the_webhook_gets_its_connection_and_watch_flags_from_the_values() {
    for (v, flags) in [
        (
            VARIANTS[0],
            [
                "--max-connections-per-source=512",
                "--max-connection-age=10m",
                "--watch-unhealthy-after=30s",
            ],
        ),
        (
            VARIANTS[1],
            [
                "--max-connections-per-source=64",
                "--max-connection-age=5m",
                "--watch-unhealthy-after=1m",
            ],
        ),
    ] {
        let objects = v
            .render()
            .unwrap_or_else(|e| panic!("helm template {}: {e}", v.name));
        let args = container_args(&objects, "webhook");
        for flag in flags {
            assert!(
                args.iter().any(|a| a == flag),
                "{}: {flag} in {args:?}",
                v.name
            );
        }
    }
}

/// Issue 21: with `prometheusRule.enabled`, alerts on a replica whose namespace watch fails
/// or hears nothing, with their own `for`, threshold and severity.
#[test]
fn the_rule_alerts_on_a_failing_or_silent_namespace_watch() {
    let defaults = helm([
        "template",
        "byoc-operator",
        &chart(),
        "--kube-version",
        &kube_version(),
        "--set",
        API_SERVER_CIDRS,
        "--set",
        "prometheusRule.enabled=true",
    ])
    .success();
    let defaults = byoc_e2e::chart::parse_objects(&defaults.stdout).expect("parses");
    let full = VARIANTS[1].render().expect("full render");
    for (objects, for_, age, severity) in [
        (&defaults, "2m", "300", "critical"),
        (&full, "3m", "600", "page"),
    ] {
        let rule = of_kind(objects, "PrometheusRule")
            .next()
            .expect("a PrometheusRule");
        let alerts = rule.value["spec"]["groups"][0]["rules"]
            .as_array()
            .expect("rules");
        let alert = |name: &str| {
            alerts
                .iter()
                .find(|a| a["alert"] == name)
                .unwrap_or_else(|| panic!("no alert {name}: {alerts:?}"))
        };
        let unhealthy = alert("ByocWebhookNamespaceWatchUnhealthy");
        assert_eq!(
            unhealthy["expr"],
            "byoc_webhook_namespace_watch_healthy == 0"
        );
        assert_eq!(unhealthy["for"], for_);
        assert_eq!(unhealthy["labels"]["severity"], severity);
        let stale = alert("ByocWebhookNamespaceWatchStale");
        assert_eq!(
            stale["expr"],
            format!("byoc_webhook_namespace_watch_last_event_age_seconds > {age}")
        );
        assert_eq!(stale["labels"]["severity"], severity);
        for a in [unhealthy, stale] {
            let description = a["annotations"]["description"].as_str().unwrap_or_default();
            assert!(description.contains("{{ $labels.pod }}"), "{description}");
        }
    }
}

/// A webhook outside the cluster (make run, the e2e tests): its URL and CA, no generated
/// certificate, the same rules and conditions as the Service mode.
#[test]
fn an_external_webhook_gets_its_url_and_ca_and_the_same_rules() {
    let out = helm([
        "template",
        "byoc-operator",
        &chart(),
        "-n",
        "byoc-system",
        "--kube-version",
        &kube_version(),
        "--set",
        API_SERVER_CIDRS,
        "--set",
        "webhook.external.url=https://127.0.0.1:8443",
        "--set",
        "webhook.external.caBundle=Q0EK",
        "--show-only",
        "templates/webhook/admission.yaml",
    ])
    .success();
    let objects = byoc_e2e::chart::parse_objects(&out.stdout).expect("parses");
    assert_eq!(
        of_kind(&objects, "Secret").count(),
        0,
        "no generated Secret"
    );
    let external = of_kind(&objects, "ValidatingWebhookConfiguration")
        .next()
        .expect("a webhook configuration");
    let default = VARIANTS[0].render().expect("default render");
    let service = of_kind(&default, "ValidatingWebhookConfiguration")
        .next()
        .expect("a webhook configuration");
    let webhooks = |o: &Object| o.value["webhooks"].as_array().cloned().unwrap_or_default();
    let (external, service) = (webhooks(external), webhooks(service));
    assert_eq!(external.len(), 2, "two webhooks");
    for (e, s) in external.iter().zip(&service) {
        assert_eq!(
            e["clientConfig"],
            json!({"url": "https://127.0.0.1:8443/validate", "caBundle": "Q0EK"}),
            "{}",
            e["name"]
        );
        assert_eq!(e["rules"], s["rules"], "{}: rules", e["name"]);
        assert_eq!(
            e["matchConditions"], s["matchConditions"],
            "{}: match conditions",
            e["name"]
        );
    }
}

/// The exempt namespaces of a default render with `--set SETS`, as the webhook configuration's
/// namespaceSelectors and the policy ConfigMap hold them (checked to agree).
fn exempt_namespaces(sets: &[&str]) -> Vec<String> {
    let mut args = vec![
        "template".to_owned(),
        "byoc-operator".into(),
        chart(),
        "-n".into(),
        "byoc-system".into(),
        "--kube-version".into(),
        kube_version(),
        "--set".into(),
        API_SERVER_CIDRS.into(),
    ];
    for set in sets {
        args.extend(["--set".to_owned(), (*set).to_owned()]);
    }
    let objects = byoc_e2e::chart::parse_objects(&helm(&args).success().stdout).expect("parses");
    let vwc = of_kind(&objects, "ValidatingWebhookConfiguration")
        .next()
        .expect("a webhook configuration");
    let selectors: Vec<&Value> = vwc.value["webhooks"]
        .as_array()
        .expect("webhooks")
        .iter()
        .map(|w| &w["namespaceSelector"]["matchExpressions"][0]["values"])
        .collect();
    let config = of_kind(&objects, "ConfigMap")
        .find(|c| c.name.ends_with("-webhook-policy"))
        .expect("the policy ConfigMap");
    let policy: Value = serde_saphyr::from_str(
        config.value["data"]["config.yaml"]
            .as_str()
            .expect("config.yaml"),
    )
    .expect("the policy parses");
    for selector in &selectors {
        assert_eq!(
            **selector, policy["exemptNamespaces"],
            "{sets:?}: the selector and the policy agree"
        );
    }
    serde_json::from_value(policy["exemptNamespaces"].clone()).expect("a list of names")
}

/// With cert-manager issuing the webhook's certificate, cert-manager's namespace is exempt by
/// default: otherwise a webhook that is down (or whose certificate has expired) refuses the
/// cert-manager pods that would renew it, and nothing recovers.
#[test]
fn cert_managers_namespace_is_exempt_when_cert_manager_issues_the_certificate() {
    let has = |sets: &[&str], ns: &str| exempt_namespaces(sets).iter().any(|n| n == ns);
    assert!(!has(&[], "cert-manager"), "not without cert-manager");
    assert!(has(&["certManager.enabled=true"], "cert-manager"));
    assert!(
        !has(
            &[
                "certManager.enabled=true",
                "certManager.exemptNamespace=false"
            ],
            "cert-manager"
        ),
        "opted out"
    );
    let custom = [
        "certManager.enabled=true",
        "certManager.namespace=platform-certs",
    ];
    assert!(has(&custom, "platform-certs") && !has(&custom, "cert-manager"));
    // An external webhook's certificate is not cert-manager's: the chart ignores cert-manager.
    assert!(!has(
        &[
            "certManager.enabled=true",
            "webhook.external.url=https://127.0.0.1:8443",
            "webhook.external.caBundle=Q0EK"
        ],
        "cert-manager"
    ));
    // The ci variant renders it too, and kube-system and the release namespace stay.
    let ci = VARIANTS
        .iter()
        .find(|v| v.name == "cert-manager")
        .expect("the cert-manager variant");
    let vwc = ci.render().expect("renders");
    let values = &of_kind(&vwc, "ValidatingWebhookConfiguration")
        .next()
        .expect("a webhook configuration")
        .value["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"];
    for ns in ["cert-manager", "kube-system", ci.namespace] {
        assert!(
            values.as_array().is_some_and(|v| v.iter().any(|x| x == ns)),
            "{ns} not exempt in {values}"
        );
    }
}

/// Certificates are generated per render: drop them before comparing two renders.
/// Every (apiGroup, resource, verb) a ClusterRole's rules allow.
fn permissions(role: &Value) -> std::collections::BTreeSet<(String, String, String)> {
    let mut all = std::collections::BTreeSet::new();
    for rule in role["rules"].as_array().into_iter().flatten() {
        let list = |key: &str| -> Vec<String> {
            rule[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        };
        for group in list("apiGroups") {
            for resource in list("resources") {
                for verb in list("verbs") {
                    all.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    all
}

/// The verbs `role` allows on `resource` of `group`.
fn verbs_on(role: &Value, group: &str, resource: &str) -> Vec<String> {
    permissions(role)
        .into_iter()
        .filter(|(g, r, _)| g == group && r == resource)
        .map(|(_, _, v)| v)
        .collect()
}

#[test]
fn request_rbac_lets_tenants_file_requests_and_only_admins_decide() {
    const GROUP: &str = "byoc.toolforge.org";
    let default = VARIANTS[0].render().expect("default render");
    let role = |name: &str| -> &Value {
        &of_kind(&default, "ClusterRole")
            .find(|o| o.name == name)
            .unwrap_or_else(|| panic!("no ClusterRole {name}"))
            .value
    };
    // Tenants: aggregated into edit and admin, never view; requests only, never their status.
    let edit = role("byoc-operator-request-edit");
    let labels = &edit["metadata"]["labels"];
    assert_eq!(
        labels["rbac.authorization.k8s.io/aggregate-to-edit"],
        "true"
    );
    assert_eq!(
        labels["rbac.authorization.k8s.io/aggregate-to-admin"],
        "true"
    );
    assert!(
        labels
            .get("rbac.authorization.k8s.io/aggregate-to-view")
            .is_none()
    );
    let want: std::collections::BTreeSet<(String, String, String)> =
        ["create", "delete", "get", "list", "watch"]
            .into_iter()
            .map(|v| (GROUP.to_owned(), "byocrequests".to_owned(), v.to_owned()))
            .collect();
    assert_eq!(
        permissions(edit),
        want,
        "request-edit: exactly these, nothing on status or grants"
    );
    // No role aggregated into edit/admin/view touches grants or request status.
    for o in of_kind(&default, "ClusterRole") {
        let aggregated = o.value["metadata"]["labels"].as_object().is_some_and(|l| {
            l.keys()
                .any(|k| k.starts_with("rbac.authorization.k8s.io/aggregate-to-"))
        });
        if aggregated {
            for (g, r, v) in permissions(&o.value) {
                assert!(
                    !(g == GROUP && (r.starts_with("byocgrants") || r == "byocrequests/status")),
                    "{} is aggregated and allows {v} {r}",
                    o.name
                );
            }
        }
    }
    // Admins: what approve/deny need.
    let admin = role("byoc-operator-grant-admin");
    assert!(verbs_on(admin, GROUP, "byocgrants").contains(&"create".to_owned()));
    assert_eq!(
        verbs_on(admin, GROUP, "byocrequests"),
        ["get", "list", "watch"]
    );
    assert_eq!(
        verbs_on(admin, GROUP, "byocrequests/status"),
        ["get", "patch", "update"]
    );
    assert_eq!(verbs_on(admin, "", "namespaces"), ["get"]);
    // The controller: reads requests, updates their status, publishes events; never creates
    // grants.
    let controller = role("byoc-operator-controller");
    assert_eq!(
        verbs_on(controller, GROUP, "byocrequests"),
        ["get", "list", "watch"]
    );
    assert_eq!(
        verbs_on(controller, GROUP, "byocrequests/status"),
        ["update"]
    );
    assert_eq!(
        verbs_on(controller, "events.k8s.io", "events"),
        ["create", "patch"]
    );
    assert!(!verbs_on(controller, GROUP, "byocgrants").contains(&"create".to_owned()));
    // `make run` (hack/manifests/) grants the same.
    let hack = |file: &str| {
        let text = std::fs::read_to_string(repo_root().join("hack/manifests").join(file))
            .expect("read hack/manifests");
        byoc_e2e::chart::parse_objects(&text).expect("hack/manifests parse")
    };
    let requests = hack("requests.yaml");
    let controllers = hack("controller.yaml");
    let host = |objects: &[Object], name: &str| -> Value {
        of_kind(objects, "ClusterRole")
            .find(|o| o.name == name)
            .unwrap_or_else(|| panic!("hack/manifests: no ClusterRole {name}"))
            .value
            .clone()
    };
    let host_edit = host(&requests, "byoc-request-edit");
    assert_eq!(permissions(&host_edit), permissions(edit));
    assert_eq!(
        host_edit["metadata"]["labels"],
        json!({
            "rbac.authorization.k8s.io/aggregate-to-edit": "true",
            "rbac.authorization.k8s.io/aggregate-to-admin": "true",
        })
    );
    assert_eq!(
        permissions(&host(&requests, "byoc-grant-admin")),
        permissions(admin)
    );
    // `make run` turns the PolicyReports on: compare with the chart's controller role then.
    let out = helm([
        "template",
        "byoc-operator",
        &chart(),
        "--kube-version",
        &kube_version(),
        "--set",
        API_SERVER_CIDRS,
        "--set",
        "reports.enabled=true",
    ]);
    assert!(out.status.success(), "{out}");
    let with_reports = byoc_e2e::chart::parse_objects(&out.stdout).expect("parse");
    let chart_controller = &of_kind(&with_reports, "ClusterRole")
        .find(|o| o.name == "byoc-operator-controller")
        .expect("the controller's ClusterRole")
        .value;
    assert_eq!(
        permissions(&host(&controllers, "byoc-controller")),
        permissions(chart_controller)
    );
    // The roles for people can be left out.
    let out = helm([
        "template",
        "r",
        &chart(),
        "--kube-version",
        &kube_version(),
        "--set",
        API_SERVER_CIDRS,
        "--set",
        "requestRoles.create=false",
        "--set",
        "grantRoles.create=false",
    ]);
    assert!(out.status.success(), "{out}");
    let objects = byoc_e2e::chart::parse_objects(&out.stdout).expect("parse");
    let names: Vec<&str> = of_kind(&objects, "ClusterRole")
        .map(|o| o.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["r-byoc-operator-controller", "r-byoc-operator-webhook"],
        "only the components' ClusterRoles"
    );
}

fn without_generated(objects: &[Object]) -> Vec<Value> {
    objects
        .iter()
        .map(|o| {
            let mut v = o.value.clone();
            if o.kind == "Secret" {
                v["data"] = Value::Null;
                v["metadata"]["annotations"]["byoc.toolforge.org/tls-not-after"] = Value::Null;
            }
            if o.kind == "ValidatingWebhookConfiguration" {
                for w in v["webhooks"].as_array_mut().into_iter().flatten() {
                    w["clientConfig"]["caBundle"] = Value::Null;
                }
            }
            v
        })
        .collect()
}

#[test]
fn the_packaged_chart_embeds_the_crd_and_renders_the_same() {
    let dir = work_dir("package");
    helm(["package", &chart(), "-d", &dir.display().to_string()]).success();
    let tgz = std::fs::read_dir(&dir)
        .expect("the package dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "tgz"))
        .expect("a .tgz");
    let listing = run_command(Command::new("tar").arg("-tzf").arg(&tgz), None).success();
    assert!(
        listing
            .stdout
            .lines()
            .any(|l| l == "byoc-operator/files/byocgrants.yaml")
            && listing
                .stdout
                .lines()
                .any(|l| l == "byoc-operator/files/byocrequests.yaml"),
        "the package holds a copy of each CRD: {}",
        listing.stdout
    );
    let packaged = helm([
        "template",
        "byoc-operator",
        &tgz.display().to_string(),
        "-n",
        "byoc-system",
        "--kube-version",
        &kube_version(),
        "--set",
        API_SERVER_CIDRS,
    ])
    .success();
    let packaged = byoc_e2e::chart::parse_objects(&packaged.stdout).expect("parses");
    let source = VARIANTS[0].render().expect("default render");
    assert_eq!(
        without_generated(&packaged),
        without_generated(&source),
        "the packaged chart renders other objects"
    );
}

/// The Toolforge preset (`presets/toolforge.yaml`) with a registry credentials Secret: the
/// policy it renders is the preset's (templated registries, tool prefix, default grant
/// requirements) and says where the credentials are; both Deployments mount the Secret
/// read-only there; the API server accepts the objects (server-side dry run, with the Secret as
/// an admin would create it); and the policy, evaluated with exactly the webhook's code, lets a
/// tool run its own Harbor project's images and no other tool's.
#[test]
fn the_toolforge_preset_and_the_registry_credentials_render_and_are_accepted() {
    const SECRET: &str = "toolforge-registry";
    let namespace = byoc_e2e::unique_name("chart-preset");
    let preset = chart_dir().join("presets/toolforge.yaml");
    let out = helm([
        "template",
        "byoc-operator",
        &chart(),
        "-n",
        &namespace,
        "--kube-version",
        &kube_version(),
        "-f",
        &preset.display().to_string(),
        "--set",
        API_SERVER_CIDRS,
        "--set",
        &format!("policy.registryLookups.credentialsSecret={SECRET}"),
    ])
    .success();
    let objects = byoc_e2e::chart::parse_objects(&out.stdout).expect("the rendered objects");
    let policy = of_kind(&objects, "ConfigMap")
        .find(|c| c.name.ends_with("-webhook-policy"))
        .expect("the policy ConfigMap");
    let text = policy.value["data"]["config.yaml"]
        .as_str()
        .unwrap_or_default();
    let config: Value = serde_saphyr::from_str(text).expect("the policy is YAML");
    let values: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&preset).expect("read the preset"))
            .expect("the preset is YAML");
    assert_eq!(
        config["defaultRegistries"],
        json!([
            "docker-registry.svc.toolforge.org",
            "docker-registry.tools.wmflabs.org",
            "tools-harbor.wmcloud.org/{namespace}"
        ]),
        "{text}"
    );
    assert_eq!(config["toolPrefix"], "tool-", "{text}");
    assert_eq!(
        config["defaultGrantRequirements"], values["policy"]["defaultGrantRequirements"],
        "{text}"
    );
    assert_eq!(
        config["registryLookups"],
        json!({"credentialsFile": "/etc/byoc-operator/registry-credentials/.dockerconfigjson"}),
        "{text}"
    );
    for comp in ["webhook", "controller"] {
        let deployment = component(&objects, "Deployment", comp).expect("the Deployment");
        let spec = &deployment.value["spec"]["template"]["spec"];
        let mounts = spec["containers"][0]["volumeMounts"]
            .as_array()
            .expect("mounts");
        assert!(
            mounts.contains(&json!({"name": "registry-credentials",
                "mountPath": "/etc/byoc-operator/registry-credentials", "readOnly": true})),
            "{comp}: {mounts:?}"
        );
        let volumes = spec["volumes"].as_array().expect("volumes");
        assert!(
            volumes.iter().any(|v| v["name"] == "registry-credentials"
                && v["secret"]["secretName"] == SECRET),
            "{comp}: {volumes:?}"
        );
    }
    // A placeholder in the host is refused by the schema, naming the value.
    let bad = helm([
        "template",
        "byoc-operator",
        &chart(),
        "--set",
        API_SERVER_CIDRS,
        "--set-json",
        r#"policy.defaultRegistries=["{namespace}.example.org"]"#,
    ]);
    assert!(
        !bad.status.success() && bad.stderr.contains("/policy/defaultRegistries/0"),
        "{bad}"
    );
    // Without a Secret, nothing is mounted and the policy names no credentials file.
    let plain = VARIANTS[0].render().expect("the default render");
    assert!(
        !serde_json::to_string(&plain.iter().map(|o| &o.value).collect::<Vec<_>>())
            .expect("JSON")
            .contains("registry-credentials")
    );

    // On the API server: the namespace, the Secret an admin creates, and the chart's objects.
    k(["create", "namespace", &namespace]).success();
    let _gone = byoc_e2e::Cleanup::new(["namespace", namespace.as_str()]);
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": SECRET, "namespace": namespace},
        "stringData": {".dockerconfigjson": "{\"auths\":{}}"}});
    kubectl_stdin(&["create", "-f", "-"], &secret.to_string()).success();
    // The YAML as helm wrote it, read by kubectl.
    let stored = dry_run_text(&out.stdout)
        .unwrap_or_else(|out| panic!("the API server refused the render: {out:?}"));
    assert_eq!(stored.len(), objects.len(), "every object is accepted");
    let deployments: Vec<&Value> = stored
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .collect();
    assert_eq!(deployments.len(), 2, "both Deployments");
    for object in deployments {
        let volumes = object["spec"]["template"]["spec"]["volumes"].as_array();
        assert!(
            volumes.into_iter().flatten().any(|v| v["secret"]["secretName"] == SECRET
                && v["secret"]["defaultMode"] == 0o440),
            "the stored Deployment mounts the Secret, readable by owner and group only: {object}"
        );
    }

    // The policy as the webhook reads it.
    let dir = work_dir("preset-policy");
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, config.to_string()).expect("write the policy");
    let harbor = |project: &str| format!("tools-harbor.wmcloud.org/{project}/web:latest");
    // (namespace, image, kubectl-byoc check exit code)
    let cases = [
        ("tool-a", harbor("tool-a"), 0),
        ("tool-a", harbor("tool-b"), 1),
        ("tool-a", harbor("tool-ab"), 1),
        ("tool-a", harbor("toolforge"), 1),
        (
            "tool-a",
            "docker-registry.svc.toolforge.org/toolforge-python311:latest".into(),
            0,
        ),
        (
            "tool-a",
            "docker-registry.tools.wmflabs.org/toolforge-python311:latest".into(),
            0,
        ),
        ("tool-a", "quay.io/someone/app:1".into(), 1),
    ];
    for (i, (ns, image, want)) in cases.iter().enumerate() {
        let file = dir.join(format!("{i}.json"));
        std::fs::write(&file, pod(ns, image).to_string()).expect("write the pod");
        let out = byoc_e2e::cli::byoc([
            "check".as_ref(),
            "--config".as_ref(),
            cfg.as_os_str(),
            file.as_os_str(),
        ]);
        assert_eq!(out.status.code(), Some(*want), "{ns}: {image}: {out}");
    }
}

#[test]
fn bad_values_are_refused_naming_the_value() {
    // --set VALUE, then fragments the error message must contain.
    let cases: &[(&str, &[&str])] = &[
        (
            "webhook.replicas=two",
            &["/webhook/replicas", "want integer"],
        ),
        ("webhook.replicas=1", &["/webhook/replicas", "minimum"]),
        (
            "controller.replicas=-1",
            &["/controller/replicas", "minimum"],
        ),
        (
            "policy.mode=strict",
            &["/policy/mode", "'enforce', 'warn', 'audit'"],
        ),
        ("webhok.replicas=3", &["additional properties 'webhok'"]),
        (
            "webhook.timeoutSeconds=60",
            &["/webhook/timeoutSeconds", "maximum"],
        ),
        (
            "policy.defaultRegistries[0]=https://quay.io",
            &["/policy/defaultRegistries/0"],
        ),
        (
            "policy.exemptNamespaces[0]=Kube_System",
            &["/policy/exemptNamespaces/0"],
        ),
        (
            "policy.grantRequestUrl=ftp://x",
            &["/policy/grantRequestUrl"],
        ),
        ("policy.expiryWarning=soon", &["/policy/expiryWarning"]),
        ("policy.toolPrefix=Tool-", &["/policy/toolPrefix"]),
        (
            "policy.registryLookups.credentialsFile=/etc/passwd",
            &["/policy/registryLookups/credentialsFile"],
        ),
        (
            "policy.defaultGrantRequirements.builtBy=x",
            &["additional properties 'builtBy'"],
        ),
        ("policy.expiryWarning=14", &["/policy/expiryWarning"]),
        (
            "prometheusRule.expiringWithinDays=0",
            &["/prometheusRule/expiringWithinDays", "minimum"],
        ),
        ("prometheusRule.for=1d", &["/prometheusRule/for"]),
        ("crds.enabled=yes", &["/crds/enabled", "want boolean"]),
        (
            "certManager.issuerRef.kind=Cluster",
            &["/certManager/issuerRef/kind"],
        ),
        (
            "webhook.tlsReloadInterval=5",
            &["/webhook/tlsReloadInterval"],
        ),
        (
            "webhook.maxConnections=0",
            &["/webhook/maxConnections", "minimum"],
        ),
        ("webhook.idleTimeout=2h", &["/webhook/idleTimeout"]),
        (
            "webhook.maxConnectionsPerSource=0",
            &["/webhook/maxConnectionsPerSource", "minimum"],
        ),
        (
            "webhook.maxConnectionAge=0s",
            &["/webhook/maxConnectionAge"],
        ),
        (
            "webhook.watchUnhealthyAfter=1h",
            &["/webhook/watchUnhealthyAfter"],
        ),
        (
            "networkPolicy.apiServerCIDRs={10.0.0.1}",
            &["/networkPolicy/apiServerCIDRs/0"],
        ),
        (
            "prometheusRule.namespaceWatch.maxAgeSeconds=10",
            &["/prometheusRule/namespaceWatch/maxAgeSeconds", "minimum"],
        ),
        (
            "webhook.podDisruptionBudget.maxUnavailable=2",
            &[
                "webhook.podDisruptionBudget.maxUnavailable (2) must be smaller than webhook.replicas (2)",
            ],
        ),
        (
            "webhook.tls.renewDaysBefore=4000",
            &["webhook.tls.renewDaysBefore (4000) must be smaller"],
        ),
        (
            "webhook.external.url=http://127.0.0.1:8443",
            &["/webhook/external/url"],
        ),
        (
            "webhook.external.url=https://127.0.0.1:8443",
            &["webhook.external.caBundle is required with webhook.external.url"],
        ),
    ];
    let mut report = Report::default();
    for (set, fragments) in cases {
        let out = helm([
            "template",
            "x",
            &chart(),
            "--kube-version",
            &kube_version(),
            "--set",
            API_SERVER_CIDRS,
            "--set",
            set,
        ]);
        let missing: Vec<&&str> = fragments
            .iter()
            .filter(|f| !out.stderr.contains(**f))
            .collect();
        report.check(
            !out.status.success() && missing.is_empty(),
            format!("--set {set} is refused, naming {fragments:?}"),
            format!("missing {missing:?}: {out}"),
        );
    }
    report.finish();
}

const TOO_OLD: &str = "byoc-operator needs Kubernetes 1.30 or newer";

#[test]
fn offline_render_needs_no_kube_version_and_old_versions_are_refused() {
    let plain = helm(["template", "byoc", &chart(), "--set", API_SERVER_CIDRS]).success();
    assert!(
        plain
            .stdout
            .contains("kind: ValidatingWebhookConfiguration"),
        "plain helm template renders the chart"
    );
    let mut report = Report::default();
    // Helm drops the pre-release part of --kube-version.
    for (given, shown) in [
        ("1.29.0", "v1.29.0"),
        ("v1.29.9-gke.1000", "v1.29.9"),
        ("1.20.1", "v1.20.1"),
    ] {
        let out = helm([
            "template",
            "byoc",
            &chart(),
            "--kube-version",
            given,
            "--set",
            API_SERVER_CIDRS,
        ]);
        report.check(
            !out.status.success()
                && out.stderr.contains(TOO_OLD)
                && out.stderr.contains(&format!("the target is {shown}")),
            format!("helm template --kube-version {given} is refused"),
            &out,
        );
    }
    for given in ["1.30.0", "v1.30.2-eks-1234", kube_version().as_str()] {
        let out = helm([
            "template",
            "byoc",
            &chart(),
            "--kube-version",
            given,
            "--set",
            API_SERVER_CIDRS,
        ]);
        report.succeeded(
            &out,
            format!("helm template --kube-version {given} renders"),
        );
    }
    report.finish();
}

/// A stand-in API server on loopback that reports Kubernetes `version`, has the kube-system
/// namespace and nothing else the chart looks up (no Helm release, Secret or webhook
/// configuration): enough for Helm to connect, discover and render (the chart fails while
/// rendering, before anything is written). kube-apiserver reports its build's version, so an old cluster
/// can only be stood in for.
struct StandInApiServer {
    addr: std::net::SocketAddr,
}

impl StandInApiServer {
    fn start(git_version: &'static str, minor: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("address");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || serve_old(stream, git_version, minor));
            }
        });
        Self { addr }
    }

    fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("stand-in.kubeconfig");
        let config = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "old", "cluster": {"server": format!("http://{}", self.addr)}}],
            "users": [{"name": "old", "user": {"token": "x"}}],
            "contexts": [{"name": "old", "context": {"cluster": "old", "user": "old"}}],
            "current-context": "old",
        });
        std::fs::write(&path, config.to_string()).expect("write the kubeconfig");
        path
    }
}

fn serve_old(stream: std::net::TcpStream, git_version: &str, minor: &str) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
    let mut stream = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let path = request_line.split(' ').nth(1).unwrap_or("/");
        let path = path.split('?').next().unwrap_or(path);
        let (status, answer) = match path {
            "/version" => (
                200,
                json!({"major": "1", "minor": minor, "gitVersion": git_version,
                "platform": "linux/amd64"}),
            ),
            "/api" => (
                200,
                json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": []}),
            ),
            "/apis" => (
                200,
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": "admissionregistration.k8s.io",
                 "versions": [{"groupVersion": "admissionregistration.k8s.io/v1", "version": "v1"}],
                 "preferredVersion": {"groupVersion": "admissionregistration.k8s.io/v1", "version": "v1"}}]}),
            ),
            "/apis/admissionregistration.k8s.io/v1" => (
                200,
                json!({"kind": "APIResourceList",
                "groupVersion": "admissionregistration.k8s.io/v1", "resources": [
                {"name": "validatingwebhookconfigurations", "singularName": "validatingwebhookconfiguration",
                 "namespaced": false, "kind": "ValidatingWebhookConfiguration", "verbs": ["get", "list"]}]}),
            ),
            "/api/v1" => (
                200,
                json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                {"name": "namespaces", "singularName": "namespace", "namespaced": false, "kind": "Namespace", "verbs": ["get", "list"]},
                {"name": "secrets", "singularName": "secret", "namespaced": true, "kind": "Secret", "verbs": ["get", "list", "create"]}]}),
            ),
            "/api/v1/namespaces/kube-system" => (
                200,
                json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "kube-system"}}),
            ),
            p if p.ends_with("/secrets") => (
                200,
                json!({"apiVersion": "v1", "kind": "SecretList",
                "metadata": {}, "items": []}),
            ),
            _ => (
                404,
                json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
                "reason": "NotFound", "code": 404, "message": "not here"}),
            ),
        };
        let body = answer.to_string();
        let reply = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn a_cluster_older_than_1_30_is_refused_on_install() {
    let dir = work_dir("old-cluster");
    let server = StandInApiServer::start("v1.29.4", "29");
    let kubeconfig = server.kubeconfig(&dir);
    let mut report = Report::default();
    for dry_run in [None, Some("--dry-run=client"), Some("--dry-run=server")] {
        let mut args = vec![
            "install".to_owned(),
            "byoc-operator".into(),
            chart(),
            "-n".into(),
            "byoc-system".into(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--set".into(),
            API_SERVER_CIDRS.into(),
        ];
        args.extend(dry_run.map(str::to_owned));
        let out = helm(&args);
        report.check(
            !out.status.success()
                && out.stderr.contains(TOO_OLD)
                && out.stderr.contains("the target is v1.29.4"),
            format!(
                "helm install {} against a cluster reporting v1.29.4 is refused",
                dry_run.unwrap_or("")
            ),
            &out,
        );
    }
    // The control: the same stand-in reporting 1.30 gets past the check (Helm then stops at
    // kinds the stand-in does not serve).
    let new = StandInApiServer::start("v1.30.0", "30");
    let out = helm([
        "install",
        "byoc-operator",
        &chart(),
        "-n",
        "byoc-system",
        "--dry-run=server",
        "--set",
        API_SERVER_CIDRS,
        "--kubeconfig",
        &new.kubeconfig(&work_dir("new-cluster"))
            .display()
            .to_string(),
    ]);
    report.check(
        !out.stderr.contains(TOO_OLD),
        "helm install --dry-run=server against a stand-in reporting v1.30.0 passes the version check",
        &out,
    );
    report.finish();
}

// ---------------------------------------------------------------------------------------------
// 4-5: on the local control plane

const RELEASE: &str = "byoc-operator";
const RNS: &str = "byoc-system";
const FULLNAME: &str = "byoc-operator";
const VWC: &str = "byoc-operator";
const SECRET: &str = "byoc-operator-webhook-tls";
const CRD_NAME: &str = "byocgrants.byoc.toolforge.org";
const TOOL: &str = "tool-demo";

/// `kubectl get ... -o json`, parsed; `Value::Null` when it fails.
fn get_json(args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend(["-o", "json"]);
    let out = k(&all);
    if out.status.success() {
        serde_json::from_str(&out.stdout).unwrap_or(Value::Null)
    } else {
        Value::Null
    }
}

fn gone(args: &[&str]) -> bool {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    let out = k(&all);
    !out.status.success() && out.stderr.contains("NotFound")
}

fn secret_field(key: &str) -> String {
    get_json(&["-n", RNS, "secret", SECRET])["data"][key]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn ca_bundle() -> String {
    get_json(&["validatingwebhookconfiguration", VWC])["webhooks"][0]["clientConfig"]["caBundle"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn decode(b64: &str) -> Vec<u8> {
    run_command(Command::new("base64").arg("-d"), Some(b64))
        .success()
        .stdout
        .into_bytes()
}

fn label(namespace: &str, key: &str) -> Option<String> {
    get_json(&["namespace", namespace])["metadata"]["labels"][key]
        .as_str()
        .map(str::to_owned)
}

/// `kubectl apply --server-side --dry-run=server` of `objects`: the objects as stored.
fn dry_run(objects: &[&Object]) -> Result<Vec<Value>, Output> {
    let list = json!({"apiVersion": "v1", "kind": "List",
        "items": objects.iter().map(|o| o.value.clone()).collect::<Vec<_>>()});
    dry_run_text(&list.to_string())
}

/// [`dry_run`] of manifests as text (YAML or JSON), read by kubectl itself.
fn dry_run_text(manifests: &str) -> Result<Vec<Value>, Output> {
    let out = kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager=chart-test",
            "-f",
            "-",
            "-o",
            "json",
        ],
        manifests,
    );
    if !out.status.success() {
        return Err(out);
    }
    let stored: Value = serde_json::from_str(&out.stdout).map_err(|_| out)?;
    Ok(match stored["items"].as_array() {
        Some(items) => items.clone(),
        None => vec![stored],
    })
}

fn openssl_verify(ca: &Path, host: &str, cert: &Path) -> Output {
    run_command(
        Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(ca)
            .args(["-verify_hostname", host, "-purpose", "sslserver"])
            .arg(cert),
        None,
    )
}

/// The namespaces this scenario creates, deleted at the end (also on panic).
struct Namespaces(Vec<String>);

impl Namespaces {
    fn create(&mut self, name: &str) {
        if gone(&["namespace", name]) {
            k(["create", "namespace", name]).success();
            self.0.push(name.to_owned());
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = k([
                "delete",
                "namespace",
                ns,
                "--ignore-not-found",
                "--wait=true",
                "--timeout=60s",
            ]);
        }
    }
}

#[test]
#[ignore = "installs the chart's CRD and fail-closed webhook: run on its own control plane by `make chart-test`"]
fn on_the_cluster() {
    kubeconfig_path();
    let mut report = Report::default();
    let mut namespaces = Namespaces(Vec::new());
    dry_run_checks(&mut report, &mut namespaces);
    install_checks(&mut report, &mut namespaces);
    println!("{} checks passed on the cluster", report.passed());
    report.finish();
}

fn dry_run_checks(report: &mut Report, namespaces: &mut Namespaces) {
    let default = VARIANTS[0].render().expect("the default render");
    let crd = of_kind(&default, "CustomResourceDefinition")
        .next()
        .expect("the CRD");
    kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=chart-test",
            "-f",
            "-",
        ],
        &crd.value.to_string(),
    )
    .success();
    let established = k([
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        &format!("crd/{CRD_NAME}"),
    ]);
    report.succeeded(&established, "the rendered ByocGrant CRD is established");
    for ns in ["byoc-system", "platform-byoc"] {
        namespaces.create(ns);
    }
    for v in VARIANTS {
        let objects = match v.render() {
            Ok(o) => o,
            Err(e) => {
                report.check(false, format!("{}: rendered", v.name), e);
                continue;
            }
        };
        // cert-manager and prometheus-operator kinds need CRDs this cluster does not have.
        let applicable: Vec<&Object> = objects
            .iter()
            .filter(|o| {
                !["Certificate", "Issuer", "ServiceMonitor", "PrometheusRule"]
                    .contains(&o.kind.as_str())
            })
            .collect();
        let stored = match dry_run(&applicable) {
            Ok(stored) => stored,
            Err(out) => {
                report.check(false, format!("{}: server dry run", v.name), out);
                continue;
            }
        };
        report.check(
            stored.len() == applicable.len(),
            format!(
                "{}: all {} objects without third-party CRDs pass kubectl apply --server-side --dry-run=server",
                v.name,
                applicable.len()
            ),
            format!("{} of {} came back", stored.len(), applicable.len()),
        );
        let stored: Vec<Object> = stored
            .into_iter()
            .map(|value| Object {
                kind: value["kind"].as_str().unwrap_or_default().to_owned(),
                name: value["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                value,
            })
            .collect();
        check_webhook_configuration(report, v, &objects, &stored);
        for comp in ["controller", "webhook"] {
            let Some(d) = component(&stored, "Deployment", comp) else {
                report.check(false, format!("{}: a {comp} Deployment", v.name), "none");
                continue;
            };
            let problems = deployment_problems(&d.value, comp);
            report.check(
                problems.is_empty(),
                format!(
                    "{}: {comp} Deployment: non-root, read-only root, no privilege escalation, caps dropped, seccomp RuntimeDefault, /readyz and /healthz probes{}",
                    v.name,
                    if comp == "webhook" { ", no CPU limit, 2+ replicas" } else { ", POD_NAME/POD_NAMESPACE" }
                ),
                problems.join("; "),
            );
            check_args(report, v, comp, &d.value);
        }
        check_policy(report, v, &stored);
    }

    // The assertions can fail: a configuration that drops the kube-system exclusion, fails open
    // and forgets pods/ephemeralcontainers must be caught on what the server stores.
    let vwc = of_kind(&default, "ValidatingWebhookConfiguration")
        .next()
        .expect("a webhook configuration");
    let mut broken = vwc.clone();
    for w in broken.value["webhooks"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        w["failurePolicy"] = "Ignore".into();
        for e in w["namespaceSelector"]["matchExpressions"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            if let Some(values) = e["values"].as_array_mut() {
                values.retain(|x| x != "kube-system");
            }
        }
        for r in w["rules"].as_array_mut().into_iter().flatten() {
            if r["resources"] == json!(["pods/ephemeralcontainers"]) {
                r["resources"] = json!(["pods/status"]);
            }
        }
    }
    let problems = dry_run(&[&broken])
        .map(|s| webhook_configuration_problems(&s[0], 5, RNS))
        .unwrap_or_else(|out| vec![out.to_string()]);
    let caught = |want: &str| problems.iter().any(|p| p.contains(want));
    report.check(
        caught("does not exclude kube-system")
            && caught("failurePolicy is not Fail")
            && caught("pods/ephemeralcontainers"),
        "the webhook configuration checks catch a broken configuration",
        problems.join("\n"),
    );
    k(["delete", "crd", CRD_NAME, "--wait=true"]).success();
}

fn check_webhook_configuration(
    report: &mut Report,
    v: Variant,
    rendered: &[Object],
    stored: &[Object],
) {
    let Some(vwc) = of_kind(stored, "ValidatingWebhookConfiguration").next() else {
        report.check(
            false,
            format!("{}: a ValidatingWebhookConfiguration", v.name),
            "none",
        );
        return;
    };
    let problems = webhook_configuration_problems(&vwc.value, v.timeout, v.namespace);
    report.check(
        problems.is_empty(),
        format!(
            "{}: webhook configuration: failurePolicy Fail, timeoutSeconds {}, kube-system and {} excluded by name, pods/ephemeralcontainers and every workload kind covered, namespace guard on namespaces and their status and finalize subresources, not scoped by byoc labels",
            v.name, v.timeout, v.namespace
        ),
        problems.join("\n"),
    );
    let bundles: Vec<&Value> = vwc.value["webhooks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| &w["clientConfig"]["caBundle"])
        .collect();
    if v.name == "cert-manager" {
        // cert-manager injects the CA from the serving Certificate (not the CA's own).
        let serving = of_kind(rendered, "Certificate")
            .find(|c| c.value["spec"]["isCA"] != true)
            .map(|c| format!("{}/{}", v.namespace, c.name))
            .unwrap_or_default();
        let inject = vwc.value["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
            .as_str()
            .unwrap_or_default();
        report.check(
            !serving.is_empty() && inject == serving && bundles.iter().all(|b| b.is_null()),
            format!(
                "{}: caBundle comes from cert-manager (inject-ca-from {inject})",
                v.name
            ),
            format!(
                "want inject-ca-from {serving} and no caBundle: {}",
                vwc.value
            ),
        );
        return;
    }
    // The caBundle must verify the Secret's certificate for the Service's DNS name.
    let dir = work_dir(&format!("certs-{}", v.name));
    let service = of_kind(rendered, "Service")
        .find(|s| {
            s.value["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["port"] == 443)
        })
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let secret = of_kind(rendered, "Secret")
        .next()
        .map(|s| s.value.clone())
        .unwrap_or_default();
    std::fs::write(
        dir.join("tls.crt"),
        decode(secret["data"]["tls.crt"].as_str().unwrap_or_default()),
    )
    .expect("write tls.crt");
    std::fs::write(
        dir.join("ca-bundle.crt"),
        decode(bundles.first().and_then(|b| b.as_str()).unwrap_or_default()),
    )
    .expect("write the bundle");
    let host = format!("{service}.{}.svc", v.namespace);
    let out = openssl_verify(&dir.join("ca-bundle.crt"), &host, &dir.join("tls.crt"));
    report.succeeded(
        &out,
        format!(
            "{}: the generated certificate verifies against the caBundle for {host}",
            v.name
        ),
    );
}

/// The binaries accept the exact arguments of the chart's Deployments (clap parses them all
/// before it acts on the trailing --version).
fn check_args(report: &mut Report, v: Variant, comp: &str, deployment: &Value) {
    let args: Vec<String> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    let binary = target_dir().join(format!("byoc-{comp}"));
    let out = run_command(Command::new(&binary).args(&args).arg("--version"), None);
    report.succeeded(
        &out,
        format!(
            "{}: byoc-{comp} accepts the Deployment's arguments ({})",
            v.name,
            args.join(" ")
        ),
    );
}

fn pod(namespace: &str, image: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "chart-test", "namespace": namespace},
        "spec": {"containers": [{"name": "app", "image": image}]}})
}

/// USER adds a byoc.toolforge.org/ label to NAMESPACE.
fn namespace_label_review(namespace: &str, user: &str) -> Value {
    let ns = |labels: Value| {
        json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": namespace, "labels": labels}})
    };
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "chart-test-ns",
        "kind": {"group": "", "version": "v1", "kind": "Namespace"},
        "resource": {"group": "", "version": "v1", "resource": "namespaces"},
        "name": namespace, "operation": "UPDATE", "userInfo": {"username": user},
        "object": ns(json!({"kubernetes.io/metadata.name": namespace, "byoc.toolforge.org/any": "never"})),
        "oldObject": ns(json!({"kubernetes.io/metadata.name": namespace})),
        "dryRun": false}})
}

/// The rendered policy, read by kubectl-byoc (the webhook's parser and decision code), does what
/// the values say.
fn check_policy(report: &mut Report, v: Variant, stored: &[Object]) {
    let dir = work_dir(&format!("policy-{}", v.name));
    let Some(config) = of_kind(stored, "ConfigMap").find(|c| c.name.ends_with("-webhook-policy"))
    else {
        report.check(false, format!("{}: the policy ConfigMap", v.name), "none");
        return;
    };
    let fullname = config.name.trim_end_matches("-webhook-policy");
    let cfg = dir.join("config.yaml");
    std::fs::write(
        &cfg,
        config.value["data"]["config.yaml"]
            .as_str()
            .unwrap_or_default(),
    )
    .expect("write the policy");
    let ns = v.namespace;
    let controller = format!("system:serviceaccount:{ns}:{fullname}-controller");
    let foreign_wanted = if v.mode == "enforce" { 1 } else { 0 };
    let cases: Vec<(String, i32, Value)> = vec![
        (
            "a default-registry image is admitted".into(),
            0,
            pod("tool-a", "docker-registry.tools.wmflabs.org/tool-a/app:1"),
        ),
        (
            format!(
                "a quay.io image is {} (mode {})",
                if foreign_wanted == 1 {
                    "refused"
                } else {
                    "admitted"
                },
                v.mode
            ),
            foreign_wanted,
            pod("tool-a", "quay.io/someone/app:1"),
        ),
        (
            "kube-system is exempt".into(),
            0,
            pod("kube-system", "quay.io/someone/app:1"),
        ),
        (
            format!("the release namespace {ns} is exempt"),
            0,
            pod(ns, "quay.io/someone/app:1"),
        ),
        (
            "the controller's service account may write byoc labels".into(),
            0,
            namespace_label_review("tool-a", &controller),
        ),
        (
            "a tenant may not write byoc labels".into(),
            1,
            namespace_label_review("tool-a", "system:serviceaccount:tool-a:default"),
        ),
    ];
    for (i, (what, want, input)) in cases.into_iter().enumerate() {
        let file = dir.join(format!("{i}.json"));
        std::fs::write(&file, input.to_string()).expect("write the input");
        let out = run_command(
            Command::new(byoc_e2e::cli::binary())
                .arg("check")
                .arg("--config")
                .arg(&cfg)
                .arg(&file),
            None,
        );
        let code = out.status.code().unwrap_or(-1);
        report.check(
            code == want,
            format!(
                "{}: policy: {what} (kubectl-byoc check exit {code})",
                v.name
            ),
            format!("want exit {want}: {out}"),
        );
    }
}

/// A binary started with the chart's arguments, stopped (SIGTERM) when dropped.
struct Started {
    child: Child,
    name: String,
    log: PathBuf,
}

impl Started {
    fn spawn(name: &str, cmd: &mut Command, log: PathBuf) -> Self {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("the log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone the log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            child,
            name: name.to_owned(),
            log,
        }
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        terminate(&mut self.child, &self.name);
    }
}

/// The live Deployment's args, with the container paths and ports mapped to this machine:
/// /etc/byoc-operator -> SMOKE/etc, ports 8443/8080 -> loopback ports.
fn run_args(comp: &str, smoke: &Path, https: u16, admin: u16) -> Vec<String> {
    let deployment = get_json(&["-n", RNS, "deployment", &format!("{FULLNAME}-{comp}")]);
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|a| {
            a.replace("/etc/byoc-operator/", &format!("{}/etc/", smoke.display()))
                .replace("=0.0.0.0:8443", &format!("=127.0.0.1:{https}"))
                .replace("=0.0.0.0:8080", &format!("=127.0.0.1:{admin}"))
                .replace("$(POD_NAMESPACE)", RNS)
        })
        .collect()
}

fn sa_kubeconfig(sa: &str, path: &Path) {
    let token = k(["-n", RNS, "create", "token", sa, "--duration=1h"])
        .success()
        .stdout;
    write_token_kubeconfig(sa, token.trim(), path);
}

fn ready(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    matches!(http_get(addr, "/readyz"), Ok((200, _)))
}

/// byoc-controller with the chart's arguments and service account; whether /readyz answered.
fn start_controller(smoke: &Path, log: &str) -> (Started, bool) {
    let admin = free_port().port();
    let args = run_args("controller", smoke, 0, admin);
    let kubeconfig = smoke.join("controller.kubeconfig");
    sa_kubeconfig(&format!("{FULLNAME}-controller"), &kubeconfig);
    let mut started = Started::spawn(
        "byoc-controller",
        Command::new(target_dir().join("byoc-controller"))
            .args(&args)
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAMESPACE", RNS)
            .env("POD_NAME", "chart-test-controller"),
        smoke.join(log),
    );
    let ok = wait_for(Duration::from_secs(30), || {
        started.running() && ready(admin)
    });
    (started, ok)
}

fn grant(name: &str) {
    kubectl_stdin(
        &["apply", "-f", "-"],
        &json!({"apiVersion": "byoc.toolforge.org/v1alpha1", "kind": "ByocGrant",
            "metadata": {"name": name},
            "spec": {"namespace": TOOL, "reason": "chart-test", "registries": ["quay.io"]}})
        .to_string(),
    )
    .success();
}

const QUAY_LABEL: &str = "byoc.toolforge.org/quay.io";

/// Waits until the grant is gone (its finalizer ran) and TOOL's label with it.
fn deletion_finished(grant: &str) -> bool {
    wait_for(Duration::from_secs(60), || gone(&["byocgrant", grant]))
        && wait_for(Duration::from_secs(30), || {
            label(TOOL, QUAY_LABEL).is_none()
        })
}

fn install_checks(report: &mut Report, namespaces: &mut Namespaces) {
    let work = work_dir("install");
    let smoke = work.join("smoke");
    std::fs::create_dir_all(smoke.join("etc/policy")).expect("smoke dirs");
    std::fs::create_dir_all(smoke.join("etc/tls")).expect("smoke dirs");
    namespaces.create(TOOL);
    let chart = chart();

    // A chart whose CRD differs (an extra printer column) stands for the previous release.
    let old = work.join("old-chart");
    run_command(Command::new("cp").arg("-rL").arg(&chart).arg(&old), None).success();
    let old_crd = old.join("files/byocgrants.yaml");
    let text = std::fs::read_to_string(&old_crd).expect("the old chart's CRD");
    let marker = "  - additionalPrinterColumns:\n";
    assert!(text.contains(marker), "the CRD has printer columns");
    std::fs::write(
        &old_crd,
        text.replacen(
            marker,
            &format!("{marker}    - jsonPath: .metadata.name\n      name: StaleColumn\n      type: string\n"),
            1,
        ),
    )
    .expect("write the old CRD");
    let out = helm_on_cluster([
        "install",
        RELEASE,
        &old.display().to_string(),
        "-n",
        RNS,
        "--set",
        API_SERVER_CIDRS,
    ]);
    if !report.succeeded(&out, format!("helm install {RELEASE} -n {RNS}")) {
        return;
    }
    let crd_file = repo_root().join("crds/byocgrants.yaml");
    let crd_file = crd_file.display().to_string();
    let stale = || {
        k(["get", "crd", CRD_NAME, "-o", "yaml"])
            .stdout
            .contains("StaleColumn")
    };
    let differs = || {
        !k([
            "diff",
            "--server-side",
            "--force-conflicts",
            "-f",
            &crd_file,
        ])
        .status
        .success()
    };
    report.check(
        stale() && differs(),
        "the installed CRD is the old chart's, and differs from crds/byocgrants.yaml",
        "",
    );
    let before = secret_field("tls.crt");
    let bundle = ca_bundle();
    report.succeeded(
        &helm_on_cluster([
            "upgrade",
            RELEASE,
            &chart,
            "-n",
            RNS,
            "--set",
            API_SERVER_CIDRS,
        ]),
        format!("helm upgrade {RELEASE}"),
    );
    report.check(
        !stale() && !differs(),
        "helm upgrade upgraded the CRD: it now equals crds/byocgrants.yaml",
        k([
            "diff",
            "--server-side",
            "--force-conflicts",
            "-f",
            &crd_file,
        ]),
    );
    report.check(
        !before.is_empty() && before == secret_field("tls.crt") && bundle == ca_bundle(),
        "helm upgrade kept the webhook certificate and caBundle (looked up, not regenerated)",
        "",
    );

    webhook_down_checks(report);
    binaries_checks(report, &smoke);
    rotation_checks(report, &smoke, &chart);
    uninstall_checks(report, &smoke, &chart);
}

/// No webhook pods run here, exactly as when the webhook is down.
fn webhook_down_checks(report: &mut Report) {
    let img = "docker-registry.tools.wmflabs.org/tool-demo/app:1";
    let platform_pod = || {
        k([
            "-n",
            TOOL,
            "run",
            "p",
            &format!("--image={img}"),
            "--dry-run=server",
        ])
    };
    let out = platform_pod();
    report.check(
        !out.status.success()
            && out
                .stderr
                .contains("failed calling webhook \"pods.byoc.toolforge.org\""),
        format!("fail closed: a pod in {TOOL} is refused while the webhook is down"),
        &out,
    );
    let out = k([
        "-n",
        TOOL,
        "create",
        "deployment",
        "d",
        &format!("--image={img}"),
        "--dry-run=server",
    ]);
    report.check(
        !out.status.success(),
        format!("fail closed: a Deployment in {TOOL} is refused too"),
        &out,
    );
    for ns in ["kube-system", RNS] {
        let out = k([
            "-n",
            ns,
            "run",
            "p",
            "--image=quay.io/x/y:1",
            "--dry-run=server",
        ]);
        report.succeeded(
            &out,
            format!("a pod in {ns} is admitted while the webhook is down (never sent to it)"),
        );
    }
    let out = k([
        "label",
        "namespace",
        "kube-system",
        "chart-test=1",
        "--dry-run=server",
    ]);
    report.succeeded(
        &out,
        "kube-system's labels can change while the webhook is down",
    );
    let out = k([
        "label",
        "namespace",
        TOOL,
        "byoc.toolforge.org/any=never",
        "--dry-run=server",
    ]);
    report.check(
        !out.status.success(),
        "fail closed: setting a byoc label is refused while the webhook is down (label guard)",
        &out,
    );
    let out = k(["create", "namespace", "new-tool", "--dry-run=server"]);
    report.succeeded(
        &out,
        "a namespace without byoc labels is created while the webhook is down (match condition)",
    );
    let out = k(["delete", "validatingwebhookconfiguration", VWC]);
    report.succeeded(&out, format!("recovery: kubectl delete validatingwebhookconfiguration {VWC} works while the webhook is down"));
    let out = platform_pod();
    report.succeeded(&out, format!("recovery: pods in {TOOL} are admitted again"));
}

/// The real binaries with the chart's arguments, policy, certificate and service accounts.
fn binaries_checks(report: &mut Report, smoke: &Path) {
    let policy = get_json(&[
        "-n",
        RNS,
        "configmap",
        &format!("{FULLNAME}-webhook-policy"),
    ]);
    std::fs::write(
        smoke.join("etc/policy/config.yaml"),
        policy["data"]["config.yaml"].as_str().unwrap_or_default(),
    )
    .expect("write the policy");
    for key in ["tls.crt", "tls.key", "ca.crt", "ca-bundle.crt"] {
        std::fs::write(smoke.join("etc/tls").join(key), decode(&secret_field(key)))
            .expect("write TLS files");
    }
    let https = free_port().port();
    let admin = free_port().port();
    let args = run_args("webhook", smoke, https, admin);
    let kubeconfig = smoke.join("webhook.kubeconfig");
    sa_kubeconfig(&format!("{FULLNAME}-webhook"), &kubeconfig);
    let mut webhook = Started::spawn(
        "byoc-webhook",
        Command::new(target_dir().join("byoc-webhook"))
            .args(&args)
            .env("KUBECONFIG", &kubeconfig),
        smoke.join("webhook.log"),
    );
    let up = wait_for(Duration::from_secs(60), || {
        webhook.running() && ready(admin)
    });
    report.check(
        up,
        "byoc-webhook is ready with the chart's arguments, policy, certificate and service account (namespaces list/watch suffice)",
        webhook.log_tail(),
    );
    // TLS as the API server does it: the caBundle must verify the certificate for the Service.
    let host = format!("{FULLNAME}-webhook.{RNS}.svc");
    let review = pod_review("chart-test-pod", TOOL, &["quay.io/someone/app:1"]).to_string();
    let request = format!(
        "POST /validate HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{review}",
        review.len()
    );
    let reply = run_command(
        Command::new("timeout")
            .args([
                "10",
                "openssl",
                "s_client",
                "-connect",
                &format!("127.0.0.1:{https}"),
            ])
            .args(["-servername", &host, "-verify_hostname", &host, "-CAfile"])
            .arg(smoke.join("etc/tls/ca-bundle.crt"))
            .args(["-verify_return_error", "-quiet"]),
        Some(&request),
    );
    report.check(
        reply.stdout.contains("\"allowed\":false") && reply.stdout.contains("quay.io"),
        format!("POST /validate over TLS, verified against the caBundle for {host}: a quay.io pod in {TOOL} is denied"),
        &reply,
    );

    let (mut controller, ok) = start_controller(smoke, "controller.log");
    let running = controller.running();
    report.check(
        ok,
        "byoc-controller is ready with the chart's arguments and service account",
        if running {
            format!("it runs but /readyz never answered 200 (the chart's readinessProbe would keep it unready):\n{}", controller.log_tail())
        } else {
            format!("it exited:\n{}", controller.log_tail())
        },
    );
    if !running {
        return;
    }
    grant("chart-test-a");
    report.check(
        wait_for(Duration::from_secs(60), || {
            label(TOOL, QUAY_LABEL).is_some()
        }),
        format!(
            "the controller labelled {TOOL} for a grant (namespaces patch, byocgrants watch/patch)"
        ),
        controller.log_tail(),
    );
    let ready_condition = || {
        get_json(&["byocgrant", "chart-test-a"])["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    };
    report.check(
        wait_for(Duration::from_secs(30), ready_condition),
        "the grant's status is Ready=True (byocgrants/status patch)",
        get_json(&["byocgrant", "chart-test-a"]),
    );
    report.check(
        get_json(&["-n", RNS, "lease", "byoc-controller"])["spec"]["holderIdentity"]
            .as_str()
            .is_some_and(|h| !h.is_empty()),
        format!("the controller holds the Lease byoc-controller in {RNS} (leases RBAC)"),
        get_json(&["-n", RNS, "lease", "byoc-controller"]),
    );
    let event = || {
        get_json(&["-n", "default", "events.events.k8s.io"])["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["regarding"]["name"] == "chart-test-a")
    };
    report.check(
        wait_for(Duration::from_secs(20), event),
        "the controller published an event about the grant in default (events RBAC)",
        "",
    );
    k(["delete", "byocgrant", "chart-test-a", "--wait=false"]).success();
    report.check(
        deletion_finished("chart-test-a"),
        "deleting the grant removed its label, then the grant (finalizer)",
        controller.log_tail(),
    );
    grant("chart-test-kept");
    report.check(
        wait_for(Duration::from_secs(60), || {
            label(TOOL, QUAY_LABEL).is_some()
        }),
        format!("the controller labelled {TOOL} for chart-test-kept"),
        controller.log_tail(),
    );
    drop(controller);
    drop(webhook);
    let logs = ["controller.log", "webhook.log"].map(|f| {
        std::fs::read_to_string(smoke.join(f))
            .unwrap_or_default()
            .to_lowercase()
    });
    let forbidden: Vec<&str> = logs
        .iter()
        .flat_map(|l| l.lines())
        .filter(|l| l.contains("forbidden"))
        .take(5)
        .collect();
    report.check(
        forbidden.is_empty(),
        "no RBAC refusal in the logs of either binary",
        forbidden.join("\n"),
    );
}

fn rotation_checks(report: &mut Report, smoke: &Path, chart: &str) {
    let before = secret_field("tls.crt");
    std::fs::write(smoke.join("old-tls.crt"), decode(&before)).expect("write");
    // The documented way to rotate now (chart README).
    k([
        "-n",
        RNS,
        "annotate",
        "--overwrite",
        "secret",
        SECRET,
        "byoc.toolforge.org/tls-not-after=2000-01-01T00:00:00Z",
    ])
    .success();
    report.succeeded(
        &helm_on_cluster([
            "upgrade",
            RELEASE,
            chart,
            "-n",
            RNS,
            "--reset-then-reuse-values",
        ]),
        "helm upgrade --reset-then-reuse-values after marking the certificate as expiring",
    );
    report.check(
        !gone(&["validatingwebhookconfiguration", VWC]),
        "helm upgrade restored the deleted webhook configuration",
        "",
    );
    let after = secret_field("tls.crt");
    std::fs::write(smoke.join("new-tls.crt"), decode(&after)).expect("write");
    let bundle = decode(&ca_bundle());
    std::fs::write(smoke.join("bundle.crt"), &bundle).expect("write");
    let host = format!("{FULLNAME}-webhook.{RNS}.svc");
    let verify_new = openssl_verify(&smoke.join("bundle.crt"), &host, &smoke.join("new-tls.crt"));
    let verify_old = openssl_verify(&smoke.join("bundle.crt"), &host, &smoke.join("old-tls.crt"));
    let cas = String::from_utf8_lossy(&bundle)
        .matches("BEGIN CERTIFICATE")
        .count();
    report.check(
        before != after && verify_new.status.success() && verify_old.status.success() && cas == 2,
        "rotation: a new certificate; the caBundle trusts the new and the previous CA while pods reload",
        format!("new certificate: {}; {cas} CAs in the bundle\n{verify_new}\n{verify_old}", before != after),
    );
    helm_on_cluster([
        "upgrade",
        RELEASE,
        chart,
        "-n",
        RNS,
        "--set",
        API_SERVER_CIDRS,
    ])
    .success();
    report.check(
        after == secret_field("tls.crt"),
        "the next helm upgrade keeps the rotated certificate",
        "",
    );
}

fn uninstall_checks(report: &mut Report, smoke: &Path, chart: &str) {
    report.succeeded(
        &helm_on_cluster(["uninstall", RELEASE, "-n", RNS, "--wait"]),
        format!("helm uninstall {RELEASE}"),
    );
    report.check(
        gone(&["validatingwebhookconfiguration", VWC])
            && gone(&["-n", RNS, "deployment", &format!("{FULLNAME}-webhook")])
            && gone(&["clusterrole", &format!("{FULLNAME}-controller")]),
        "uninstall removed the webhook configuration, Deployments and RBAC",
        "",
    );
    report.check(
        !gone(&["crd", CRD_NAME]) && !gone(&["byocgrant", "chart-test-kept"]),
        "uninstall kept the CRD and the grants (helm.sh/resource-policy: keep)",
        "",
    );
    report.check(
        label(TOOL, QUAY_LABEL).is_some(),
        "uninstall left the namespace labels (no controller to remove them; nothing enforces them either)",
        "",
    );
    k(["delete", "byocgrant", "chart-test-kept", "--wait=false"]).success();
    std::thread::sleep(Duration::from_secs(2));
    report.check(
        get_json(&["byocgrant", "chart-test-kept"])["metadata"]["deletionTimestamp"].is_string(),
        "without the controller a deleted grant waits on its finalizer (Terminating)",
        "",
    );
    report.succeeded(
        &helm_on_cluster([
            "install",
            RELEASE,
            chart,
            "-n",
            RNS,
            "--set",
            API_SERVER_CIDRS,
        ]),
        "re-install with the same release name and namespace adopts the kept CRD",
    );
    k(["delete", "validatingwebhookconfiguration", VWC]).success(); // no webhook pods here
    let (controller, _) = start_controller(smoke, "controller-2.log");
    report.check(
        deletion_finished("chart-test-kept"),
        "after re-install the controller finishes the deletion: label removed, grant gone",
        controller.log_tail(),
    );
    drop(controller);
    let uninstall = helm_on_cluster(["uninstall", RELEASE, "-n", RNS, "--wait"]);
    let delete = k(["delete", "crd", CRD_NAME, "--wait=true", "--timeout=60s"]);
    report.check(
        uninstall.status.success() && delete.status.success(),
        format!("full removal: helm uninstall, then kubectl delete crd {CRD_NAME}"),
        format!("{uninstall}\n{delete}"),
    );
}

//! PolicyReports for end-to-end tests: the CRD installed as `make run` installs it, a policy
//! file for the controller's `--config`, and waiting on a namespace's report.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use byoc_api::report::{PolicyReport, REPORT_NAME, ReportResult};
use kube::{Api, Client};

use crate::{apply_server_side, eventually, repo_root};

/// The CRD's name.
pub const CRD_NAME: &str = "policyreports.wgpolicyk8s.io";

/// Applies `charts/byoc-operator/files/policyreports.yaml` (once per test process) and waits
/// until the CRD is Established.
pub async fn install_crd(client: &Client) {
    static APPLIED: OnceLock<()> = OnceLock::new();
    APPLIED.get_or_init(|| {
        apply_server_side(&repo_root().join("charts/byoc-operator/files/policyreports.yaml"))
            .success();
    });
    crate::wait_crd_established(client, CRD_NAME).await;
}

/// Writes a policy file (the webhook's format) with the default registries and mode `mode`,
/// exempting the usual namespaces and `extra_exempt`; returns its path.
pub fn policy_file(name: &str, mode: &str, extra_exempt: &[&str]) -> PathBuf {
    let mut exempt = vec![
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "byoc-system",
    ];
    exempt.extend_from_slice(extra_exempt);
    let path = crate::controller::logs_dir().join(format!("{name}-policy.yaml"));
    std::fs::write(
        &path,
        format!(
            "mode: {mode}\ndefaultRegistries: [docker-registry.tools.wmflabs.org]\nexemptNamespaces: [{}]\n",
            exempt.join(", ")
        ),
    )
    .expect("write the policy file");
    path
}

/// The report of `namespace`, if it has one.
pub async fn report(client: &Client, namespace: &str) -> Option<PolicyReport> {
    Api::<PolicyReport>::namespaced(client.clone(), namespace)
        .get_opt(REPORT_NAME)
        .await
        .unwrap_or_else(|e| panic!("get the PolicyReport of {namespace}: {e}"))
}

/// The result about the object `kind`/`name` in `report`.
pub fn result<'r>(report: &'r PolicyReport, kind: &str, name: &str) -> Option<&'r ReportResult> {
    report
        .results
        .iter()
        .find(|r| r.resources.iter().any(|o| o.kind == kind && o.name == name))
}

/// Waits (up to `timeout`) until the report of `namespace` satisfies `check`, which says what
/// is wrong otherwise; returns the report.
pub async fn wait_report<F>(
    client: &Client,
    namespace: &str,
    what: &str,
    timeout: Duration,
    check: F,
) -> PolicyReport
where
    F: Fn(&PolicyReport) -> Result<(), String>,
{
    eventually(
        &format!("the PolicyReport of {namespace}: {what}"),
        timeout,
        || async {
            match report(client, namespace).await {
                Some(r) => check(&r).map(|()| r),
                None => Err("no report".to_owned()),
            }
        },
    )
    .await
}

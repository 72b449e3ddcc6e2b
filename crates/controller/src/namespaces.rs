//! The Namespace reconciler: a namespace that no grant targets must carry no label under the
//! prefix. Namespaces that grants target are the grant reconciler's (it watches them too).

use std::sync::Arc;

use byoc_api::labels;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use tracing::{instrument, warn};

use crate::metrics::Reconciler;
use crate::sync::sync_namespace;
use crate::{Context, Error};

/// Removes labels under the prefix from a namespace that no grant targets; a standby does
/// nothing.
#[instrument(skip_all, fields(namespace = %namespace.name_any()))]
pub async fn reconcile(namespace: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.leadership.is_leader() || !ctx.caches_synced().await {
        return Ok(Action::await_change());
    }
    let _timer = ctx.metrics.reconcile(Reconciler::Namespace);
    let name = namespace.name_any();
    let carries_ours = namespace.labels().keys().any(|k| labels::is_owned_key(k));
    let targeted = ctx.grants.find(|g| g.spec.namespace == name).is_some();
    if carries_ours && !targeted {
        sync_namespace(&ctx, &name, Timestamp::now()).await?;
    }
    Ok(Action::await_change())
}

/// Counts and logs a failed reconcile, and retries it after [`crate::grants::RETRY`].
pub fn error_policy(namespace: Arc<Namespace>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(namespace = %namespace.name_any(), error = %error, "reconcile failed");
    ctx.metrics.error(Reconciler::Namespace, error);
    Action::requeue(crate::grants::RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{Scenario, Step, grant, namespace};
    use serde_json::json;

    #[tokio::test]
    async fn labels_without_a_grant_are_removed() {
        let ours = [("byoc.toolforge.org/any", "never"), ("team", "a")];
        let ns = namespace("tool-a", &ours);
        let scenario = Scenario::new(vec![grant("g", "tool-b", &[], None)], vec![ns.clone()]);
        let steps = vec![
            Step::apply_labels("tool-a", json!(null), &ours),
            Step::remove_labels("tool-a", &["byoc.toolforge.org/any"]),
        ];
        scenario
            .check(steps, reconcile(Arc::new(ns), scenario.ctx()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn namespaces_without_our_labels_or_with_grants_are_left_alone() {
        let plain = namespace("tool-a", &[("team", "a")]);
        let granted = namespace("tool-b", &[("byoc.toolforge.org/any", "never")]);
        let scenario = Scenario::new(
            vec![grant("g", "tool-b", &[], None)],
            vec![plain.clone(), granted.clone()],
        );
        let ctx = scenario.ctx();
        let work = async {
            reconcile(Arc::new(plain), ctx.clone()).await.unwrap();
            reconcile(Arc::new(granted), ctx.clone()).await.unwrap();
        };
        scenario.check(vec![], work).await;
        assert!(
            scenario
                .metrics()
                .contains(r#"reconciles_total{controller="namespace"} 2"#)
        );
    }
}

//! The Namespace reconciler: every namespace's labels under the prefix are what the grants say.
//! A namespace no grant targets carries none; a hand edit on a targeted one is undone.
//!
//! The grant reconciler also runs when a namespace changes (for its status), but it is woken by
//! a second watch of namespaces and may read the namespace before this controller's cache has
//! the change, see the old labels in sync and write nothing. This reconciler reads the cache its
//! own watch fills, so it always sees the change that woke it.

use std::sync::Arc;

use byoc_api::LeanNamespace;
use byoc_api::labels;
use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use tracing::{instrument, warn};

use crate::metrics::Reconciler;
use crate::sync::sync_namespace;
use crate::{Context, Error};

/// Brings the labels under the prefix and the requirements annotation of a namespace that
/// carries any, or that a grant targets, in line with the grants (no write when they are); a
/// standby does nothing.
#[instrument(skip_all, fields(namespace = %namespace.name_any()))]
pub async fn reconcile(namespace: Arc<LeanNamespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.leadership.is_leader() || !ctx.caches_synced().await {
        return Ok(Action::await_change());
    }
    let _timer = ctx.metrics.reconcile(Reconciler::Namespace);
    let name = namespace.name_any();
    let carries_ours = namespace.labels().keys().any(|k| labels::is_owned_key(k))
        || namespace
            .annotations()
            .contains_key(labels::REQUIREMENTS_ANNOTATION);
    let targeted = !ctx.grants.targeting(&name).is_empty();
    if carries_ours || targeted {
        sync_namespace(&ctx, &name, Timestamp::now()).await?;
    }
    Ok(Action::await_change())
}

/// Counts and logs a failed reconcile, and retries it after [`crate::grants::RETRY`].
pub fn error_policy(namespace: Arc<LeanNamespace>, error: &Error, ctx: Arc<Context>) -> Action {
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
        let steps = vec![Step::set_labels(
            "tool-a",
            json!({ "byoc.toolforge.org/any": null }),
            &ours,
        )];
        scenario
            .check(steps, reconcile(Arc::new(ns), scenario.ctx()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn hand_edited_labels_on_a_granted_namespace_are_repaired() {
        let edited = [
            ("byoc.toolforge.org/any", "20000101T000000Z"),
            ("byoc.toolforge.org/evil.example.org", "never"),
        ];
        let ns = namespace("tool-b", &edited);
        let scenario = Scenario::new(vec![grant("g", "tool-b", &[], None)], vec![ns.clone()]);
        let steps = vec![Step::set_labels(
            "tool-b",
            json!({
                "byoc.toolforge.org/any": "never",
                "byoc.toolforge.org/evil.example.org": null,
            }),
            &edited,
        )];
        scenario
            .check(steps, reconcile(Arc::new(ns), scenario.ctx()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_requirements_annotation_without_a_grant_is_removed() {
        let mut ns = namespace("tool-a", &[("team", "a")]);
        ns.metadata.annotations = Some(
            [(
                labels::REQUIREMENTS_ANNOTATION.to_owned(),
                "forged".to_owned(),
            )]
            .into(),
        );
        let scenario = Scenario::new(vec![], vec![ns.clone()]);
        let steps = vec![Step::set_labels_and_annotations(
            "tool-a",
            json!({}),
            json!({ labels::REQUIREMENTS_ANNOTATION: null }),
            &[("team", "a")],
        )];
        scenario
            .check(steps, reconcile(Arc::new(ns), scenario.ctx()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn plain_and_in_sync_namespaces_are_left_alone() {
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

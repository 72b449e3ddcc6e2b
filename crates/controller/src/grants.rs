//! The ByocGrant reconciler: finalizer, namespace labels, `Ready` condition, events, and a
//! requeue at the grant's expiry. A stored grant that does not read grants nothing and is
//! reported; the others are reconciled as usual.

use std::sync::Arc;
use std::time::Duration;

use byoc_api::LeanNamespace;
use byoc_api::granted::Standing;
use byoc_api::{ByocGrant, ByocGrantStatus, StoredGrant, UnreadableGrant};
use jiff::Timestamp;
use json_patch::jsonptr::PointerBuf;
use json_patch::{PatchOperation, RemoveOperation, TestOperation};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::Event;
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::desired::NamespaceState;
use crate::expiry;
use crate::metrics::Reconciler;
use crate::status::{Verdict, next_status, revoked_event};
use crate::sync::sync_namespace;
use crate::{Context, Error, FIELD_MANAGER, GrantCache};

/// The finalizer that keeps a deleted grant until its labels are gone.
pub const FINALIZER: &str = "byoc.toolforge.org/namespace-labels";

/// How often a grant is reconciled when nothing happens (a safety net under the watches).
pub const RESYNC: Duration = Duration::from_secs(600);

/// How long to wait before retrying a failed reconcile.
pub const RETRY: Duration = Duration::from_secs(5);

/// Reconciles one grant; a standby does nothing.
#[instrument(skip_all, fields(grant = %stored.name_any(), namespace = stored.target_namespace()))]
pub async fn reconcile(stored: Arc<StoredGrant>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.leadership.is_leader() || !ctx.caches_synced().await {
        return Ok(Action::await_change());
    }
    let _timer = ctx.metrics.reconcile(Reconciler::Grant);
    match &*stored {
        StoredGrant::Readable(grant) => reconcile_readable(Arc::new(grant.clone()), &ctx).await,
        StoredGrant::Unreadable(grant) => reconcile_unreadable(&stored, grant, &ctx).await,
    }
}

/// Reconciles a grant that reads: the finalizer, then [`apply`] or [`cleanup`].
async fn reconcile_readable(grant: Arc<ByocGrant>, ctx: &Context) -> Result<Action, Error> {
    let api: Api<ByocGrant> = Api::all(ctx.client.clone());
    finalizer(&api, FINALIZER, grant, |event| async {
        match event {
            finalizer::Event::Apply(grant) => apply(&grant, ctx).await,
            finalizer::Event::Cleanup(grant) => cleanup(&grant, ctx).await,
        }
    })
    .await
    .or_else(|e| match e {
        // A second cleanup, triggered before the cache saw the grant go: it is gone already.
        finalizer::Error::RemoveFinalizer(kube::Error::Api(status)) if status.code == 404 => {
            Ok(Action::await_change())
        }
        e => Err(Error::Finalizer(Box::new(e))),
    })
}

/// A stored grant that does not read grants nothing: its namespace, when the spec names one,
/// is brought in line without it (dropping the labels it carried while it read), and it is
/// reported: `Ready` condition `Invalid` with the error (when the status can be written), a
/// Warning event, and the `Invalid` gauge. Once deleted, its finalizer goes after that sync.
async fn reconcile_unreadable(
    stored: &StoredGrant,
    grant: &UnreadableGrant,
    ctx: &Context,
) -> Result<Action, Error> {
    let now = Timestamp::now();
    let name = stored.name_any();
    let synced = match &grant.namespace {
        Some(namespace) => sync_namespace(ctx, namespace, now).await.map(|_| ()),
        None => Ok(()),
    };
    if grant.metadata.deletion_timestamp.is_some() {
        synced?;
        remove_finalizer(stored, ctx).await?;
        ctx.metrics.grant_deleted(&name);
        info!("unreadable grant deleted");
        return Ok(Action::await_change());
    }
    warn!(error = %grant.error, "grant cannot be read; it grants nothing");
    let verdict = Verdict::unreadable(&grant.error);
    // Before the status, unlike a readable grant: the gauge must count it even when its
    // status cannot be written.
    ctx.metrics.grant_state(&name, verdict.reason);
    let generation = grant.metadata.generation;
    ctx.metrics.grant_expiry(&name, None);
    publish(
        stored,
        grant.status.as_ref(),
        generation,
        &verdict,
        None,
        ctx,
        now,
    )
    .await?;
    synced?;
    Ok(Action::requeue(RESYNC))
}

/// Removes [`FINALIZER`] from a grant that has it, as kube's finalizer helper does: a JSON
/// patch that first tests the entry is still where it was.
async fn remove_finalizer(stored: &StoredGrant, ctx: &Context) -> Result<(), Error> {
    let finalizers = stored.finalizers();
    let Some(index) = finalizers.iter().position(|f| f == FINALIZER) else {
        return Ok(());
    };
    let path = || PointerBuf::from_tokens(["metadata", "finalizers", &index.to_string()]);
    let patch = json_patch::Patch(vec![
        PatchOperation::Test(TestOperation {
            path: path(),
            value: FINALIZER.into(),
        }),
        PatchOperation::Remove(RemoveOperation { path: path() }),
    ]);
    let api: Api<StoredGrant> = Api::all(ctx.client.clone());
    match api
        .patch::<()>(
            &stored.name_any(),
            &PatchParams::default(),
            &Patch::Json(patch),
        )
        .await
    {
        // Gone already, or the finalizer moved: the next event tells.
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 422 => Ok(()),
        result => result.map(|_| ()).map_err(|source| Error::RemoveFinalizer {
            grant: stored.name_any(),
            source,
        }),
    }
}

/// Counts and logs a failed reconcile, and retries it after [`RETRY`].
pub fn error_policy(grant: Arc<StoredGrant>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(grant = %grant.name_any(), error = %error, "reconcile failed");
    ctx.metrics.error(Reconciler::Grant, error);
    Action::requeue(RETRY)
}

/// The grants that target `namespace` and are not being deleted: what a namespace change
/// should reconcile. (A deleted grant's cleanup has its own trigger; re-running it because of
/// its own label removal would only race its disappearance.)
pub fn targeting(grants: &GrantCache, namespace: &LeanNamespace) -> Vec<ObjectRef<StoredGrant>> {
    grants
        .targeting(&namespace.name_any())
        .iter()
        .filter(|g| g.meta().deletion_timestamp.is_none())
        .map(|g| ObjectRef::from_obj(&**g))
        .collect()
}

/// Brings the namespace in line, then records the outcome in the grant's status.
async fn apply(grant: &ByocGrant, ctx: &Context) -> Result<Action, Error> {
    let now = Timestamp::now();
    let standing = Standing::of(grant, now);
    let synced = sync_namespace(ctx, &grant.spec.namespace, now).await;
    let default = ctx.default_requirements.as_ref();
    let verdict = Verdict::new(grant, &standing, synced.as_ref(), default);
    let generation = grant.metadata.generation;
    let window = ctx.expiry_warning;
    let ending = expiry::ends_within(grant, &standing, window, now);
    let entered = publish(
        grant,
        grant.status.as_ref(),
        generation,
        &verdict,
        ending,
        ctx,
        now,
    )
    .await?;
    // After the status: the gauge never runs ahead of what the API shows.
    ctx.metrics.grant_state(&grant.name_any(), verdict.reason);
    let expiry = grant
        .expires_at()
        .map(|at| (grant.spec.namespace.as_str(), at));
    ctx.metrics.grant_expiry(&grant.name_any(), expiry);
    if let (true, Some(at)) = (entered, ending) {
        expiry::announce(grant, &expiry::reminder(grant, at, now), ctx).await;
    }
    synced?;
    let until_window = expiry::until_window(grant, window, now);
    Ok(requeue(&standing, until_window, now))
}

/// Removes the grant's labels (the caches already count it as gone) before the finalizer goes.
async fn cleanup(grant: &ByocGrant, ctx: &Context) -> Result<Action, Error> {
    let state = sync_namespace(ctx, &grant.spec.namespace, Timestamp::now()).await?;
    ctx.metrics.grant_deleted(&grant.name_any());
    if matches!(state, NamespaceState::Labelled { .. }) {
        info!("grant deleted; its labels are gone");
        emit(grant, &revoked_event(&grant.spec.namespace), ctx).await;
    }
    Ok(Action::await_change())
}

/// Writes the status of `grant` (at `generation`, now `current`) when it changed, and tells
/// the story in an event when the condition did. `ending` is when the grant ends if that is
/// within the expiry warning window ([`expiry::mark`]); returns whether it has just entered
/// the window, once the status saying so is written. The response is read as a
/// [`StoredGrant`], so an object that does not read can still be reported.
async fn publish<K: Resource<DynamicType = ()>>(
    grant: &K,
    current: Option<&ByocGrantStatus>,
    generation: Option<i64>,
    verdict: &Verdict,
    ending: Option<Timestamp>,
    ctx: &Context,
    now: Timestamp,
) -> Result<bool, Error> {
    let event = verdict.event(current.and_then(ByocGrantStatus::ready_condition));
    let mut status = next_status(current, generation, verdict, now)
        .unwrap_or_else(|| current.cloned().unwrap_or_default());
    let entered = expiry::mark(&mut status, ending, ctx.expiry_warning, generation, now);
    if Some(&status) != current {
        let api: Api<StoredGrant> = Api::all(ctx.client.clone());
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        let mut body = json!({ "status": status });
        // A merge patch removes a field only when told so with null.
        if status.registries.is_none() {
            body["status"]["registries"] = serde_json::Value::Null;
        }
        if status.requires.is_none() {
            body["status"]["requires"] = serde_json::Value::Null;
        }
        api.patch_status(&grant.name_any(), &params, &Patch::Merge(body))
            .await
            .map_err(|source| Error::PatchStatus {
                grant: grant.name_any(),
                source,
            })?;
        ctx.metrics.status_write();
        info!(reason = verdict.reason.as_str(), message = %verdict.message, "status updated");
    }
    if let Some(event) = event {
        emit(grant, &event, ctx).await;
    }
    Ok(entered)
}

/// Publishes an event about `grant`; events are best effort, a failure is only logged.
async fn emit<K: Resource<DynamicType = ()>>(grant: &K, event: &Event, ctx: &Context) {
    if let Err(error) = ctx.publish(event, &grant.object_ref(&())).await {
        warn!(%error, reason = %event.reason, "cannot publish event");
    }
}

/// When to look at the grant again: just after its expiry or its entry into the expiry
/// warning window (`until_window`), and at least every [`RESYNC`].
fn requeue(standing: &Standing, until_window: Option<Duration>, now: Timestamp) -> Action {
    const MARGIN: Duration = Duration::from_millis(100);
    let until_expiry = match standing {
        Standing::Active(allowance) => allowance
            .next_expiry()
            .map(|at| Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)),
        Standing::Expired(_) | Standing::Invalid(_) => None,
    };
    let next = [until_expiry, until_window].into_iter().flatten().min();
    Action::requeue(next.map_or(RESYNC, |d| (d + MARGIN).min(RESYNC)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{
        Finalized, Scenario, Step, grant, grant_with_status, namespace, stored, ts, unreadable,
    };
    use http::Method;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::Value;

    const APPLIED_QUAY: &str = "namespace tool-a carries this grant: registries quay.io";

    #[test]
    fn requeue_at_expiry_or_window_entry() {
        let now = ts("2026-06-01T12:00:00Z");
        let window = jiff::SignedDuration::from_hours(14 * 24);
        let cases = [
            // Expires in 30 s (inside the window already).
            (Some("2026-06-01T12:00:30Z"), Duration::from_millis(30_100)),
            // Enters the window in 60 s.
            (Some("2026-06-15T12:01:00Z"), Duration::from_millis(60_100)),
            (Some("2027-01-01T00:00:00Z"), RESYNC),
            (None, RESYNC),
            (Some("2026-01-01T00:00:00Z"), RESYNC),
        ];
        for (expires, want) in cases {
            let g = grant("g", "tool-a", &["quay.io"], expires);
            let until_window = expiry::until_window(&g, window, now);
            assert_eq!(
                requeue(&Standing::of(&g, now), until_window, now),
                Action::requeue(want),
                "{expires:?}"
            );
        }
    }

    /// An RFC 3339 time `hours` from now, in whole seconds.
    fn hours_from_now(hours: i64) -> String {
        let t = Timestamp::now() + jiff::SignedDuration::from_hours(hours);
        Timestamp::from_second(t.as_second()).unwrap().to_string()
    }

    /// A grant for quay.io in tool-a ending in 3 days, approved from request `tool-a/req` (uid
    /// `req-uid`).
    fn expiring(name: &str) -> ByocGrant {
        let mut g = grant(name, "tool-a", &["quay.io"], Some(&hours_from_now(72))).finalized();
        g.metadata.annotations = Some(
            [(
                byoc_api::REQUEST_ANNOTATION.to_owned(),
                "tool-a/req/req-uid".to_owned(),
            )]
            .into(),
        );
        g
    }

    fn quay_label(g: &ByocGrant) -> serde_json::Value {
        let expiry = byoc_api::labels::Expiry::from_option(g.expires_at());
        json!({ "byoc.toolforge.org/quay.io": expiry.to_label_value() })
    }

    /// Gives `g` the status of a grant applied and announced as expiring soon.
    fn announced(g: &mut ByocGrant) {
        let now = Timestamp::now();
        let ready = Verdict::new(
            g,
            &Standing::of(g, now),
            Ok(&NamespaceState::Labelled {
                uid: Some(crate::fixtures::uid("tool-a")),
            }),
            None,
        );
        let mut status = next_status(None, Some(1), &ready, now).unwrap();
        let window = jiff::SignedDuration::from_hours(14 * 24);
        assert!(expiry::mark(
            &mut status,
            g.expires_at(),
            window,
            Some(1),
            now
        ));
        g.status = Some(status);
    }

    const REQUEST: &str = "/apis/byoc.toolforge.org/v1alpha1/namespaces/tool-a/byocrequests/req";

    /// ByocRequest `tool-a/req` as the API server serves it, with `uid`.
    fn request(uid: &str) -> Value {
        json!({
            "apiVersion": "byoc.toolforge.org/v1alpha1", "kind": "ByocRequest",
            "metadata": { "name": "req", "namespace": "tool-a", "uid": uid },
            "spec": { "registries": ["quay.io"], "reason": "a tool" },
        })
    }

    #[tokio::test]
    async fn a_grant_entering_the_window_is_announced_on_it_and_its_request() {
        let g = expiring("g");
        let scenario = Scenario::new(vec![g.clone()], vec![namespace("tool-a", &[])]);
        let steps = vec![
            Step::set_labels("tool-a", quay_label(&g), &[]),
            Step::status("g", "True", "Applied").also(|body| {
                let soon = &body["status"]["conditions"][1];
                assert_eq!(soon["type"], "ExpiringSoon", "{body}");
                assert_eq!(soon["status"], "True", "{body}");
            }),
            Step::event("Applied"),
            Step::event("ExpiringSoon").also(|body| {
                let note = body["note"].as_str().unwrap_or_default();
                assert!(note.contains("(2 days left)"), "{body}");
                assert_eq!(body["type"], "Warning", "{body}");
            }),
            Step::get(REQUEST, request("req-uid")),
            Step::event_about("tool-a", "ByocRequest", "ExpiringSoon").also(|body| {
                assert_eq!(body["regarding"]["uid"], "req-uid", "{body}");
                assert_eq!(body["regarding"]["name"], "req", "{body}");
            }),
        ];
        let action = scenario
            .check(steps, reconcile(stored(g.clone()), scenario.ctx()))
            .await;
        // Expiry is 3 days away, inside the window: the usual resync.
        assert_eq!(action.unwrap(), Action::requeue(RESYNC));
        let text = scenario.metrics();
        let want = format!(
            r#"byoc_grant_expiry_timestamp_seconds{{grant="g",namespace="tool-a"}} {}"#,
            g.expires_at().unwrap().as_second()
        );
        assert!(text.contains(&want), "{want} missing from\n{text}");
    }

    #[tokio::test]
    async fn an_announced_grant_is_not_announced_again() {
        // What a restarted controller, or a new leader, finds: the condition says it all.
        let mut g = expiring("g");
        announced(&mut g);
        let ns = namespace(
            "tool-a",
            &[(
                "byoc.toolforge.org/quay.io",
                quay_label(&g)["byoc.toolforge.org/quay.io"]
                    .as_str()
                    .unwrap(),
            )],
        );
        let scenario = Scenario::new(vec![g.clone()], vec![ns]);
        scenario
            .check(vec![], reconcile(stored(g), scenario.ctx()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_request_that_is_gone_or_elsewhere_gets_no_event() {
        let g = expiring("g");
        let scenario = Scenario::new(vec![g.clone()], vec![namespace("tool-a", &[])]);
        let steps = vec![
            Step::set_labels("tool-a", quay_label(&g), &[]),
            Step::status("g", "True", "Applied"),
            Step::event("Applied"),
            Step::event("ExpiringSoon"),
            Step::fail(Method::GET, REQUEST, 404),
        ];
        let action = scenario
            .check(steps, reconcile(stored(g), scenario.ctx()))
            .await;
        assert_eq!(action.unwrap(), Action::requeue(RESYNC));

        // A request re-created under the same name (another uid) is not the grant's.
        let g = expiring("g");
        let scenario = Scenario::new(vec![g.clone()], vec![namespace("tool-a", &[])]);
        let steps = vec![
            Step::set_labels("tool-a", quay_label(&g), &[]),
            Step::status("g", "True", "Applied"),
            Step::event("Applied"),
            Step::event("ExpiringSoon"),
            Step::get(REQUEST, request("other-uid")),
        ];
        scenario
            .check(steps, reconcile(stored(g), scenario.ctx()))
            .await
            .unwrap();

        // An annotation naming a request of another namespace is not followed.
        let mut g = expiring("h");
        g.metadata.annotations = Some(
            [(
                byoc_api::REQUEST_ANNOTATION.to_owned(),
                "tool-b/req/req-uid".to_owned(),
            )]
            .into(),
        );
        let scenario = Scenario::new(vec![g.clone()], vec![namespace("tool-a", &[])]);
        let steps = vec![
            Step::set_labels("tool-a", quay_label(&g), &[]),
            Step::status("h", "True", "Applied"),
            Step::event("Applied"),
            Step::event("ExpiringSoon"),
        ];
        scenario
            .check(steps, reconcile(stored(g), scenario.ctx()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_grant_extended_beyond_the_window_loses_the_condition() {
        let mut g = expiring("g");
        announced(&mut g);
        // Extended to 60 days: the status loses ExpiringSoon, and nothing is announced.
        g.spec.expires_at = Some(Time(hours_from_now(60 * 24).parse().unwrap()));
        let scenario = Scenario::new(vec![g.clone()], vec![namespace("tool-a", &[])]);
        let steps = vec![
            Step::set_labels("tool-a", quay_label(&g), &[]),
            Step::status("g", "True", "Applied").also(|body| {
                let conditions = body["status"]["conditions"].as_array().unwrap();
                assert_eq!(conditions.len(), 1, "{body}");
            }),
            Step::event("Applied"),
        ];
        scenario
            .check(steps, reconcile(stored(g), scenario.ctx()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_new_grant_gets_the_finalizer_first() {
        let g = grant("g", "tool-a", &["quay.io"], None);
        let scenario = Scenario::new(vec![g.clone()], vec![namespace("tool-a", &[])]);
        let steps = vec![Step::add_finalizer("g")];
        let action = scenario
            .check(steps, reconcile(stored(g), scenario.ctx()))
            .await;
        assert_eq!(action.unwrap(), Action::await_change());
    }

    #[tokio::test]
    async fn a_grant_is_applied_to_its_namespace() {
        let g = grant("g", "tool-a", &["quay.io", "ghcr.io/wikimedia"], None).finalized();
        let scenario = Scenario::new(vec![g.clone()], vec![namespace("tool-a", &[("team", "a")])]);
        let steps = vec![
            Step::set_labels(
                "tool-a",
                json!({
                    "byoc.toolforge.org/ghcr.io_wikimedia": "never",
                    "byoc.toolforge.org/quay.io": "never",
                }),
                &[("team", "a")],
            ),
            Step::status("g", "True", "Applied"),
            Step::event("Applied"),
        ];
        let action = scenario
            .check(steps, reconcile(stored(g), scenario.ctx()))
            .await;
        assert_eq!(action.unwrap(), Action::requeue(RESYNC));
        let text = scenario.metrics();
        assert!(
            text.contains(r#"byoc_controller_grants{state="Applied"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"namespace_label_writes_total{kind="set"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("byoc_controller_status_writes_total 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn requirements_reach_the_namespace_in_the_same_patch_and_the_status() {
        let g = grant("g", "tool-a", &["quay.io"], None).finalized();
        let default = byoc_api::Requirements {
            require_digest: true,
            ..Default::default()
        };
        let scenario = Scenario::new(vec![g.clone()], vec![namespace("tool-a", &[])])
            .with_default_requirements(default);
        let annotation = r#"{"version":1,"registries":{"quay.io":[{"expires":"never","requirements":{"requireDigest":true}}]}}"#;
        let steps = vec![
            Step::set_labels_and_annotations(
                "tool-a",
                json!({ "byoc.toolforge.org/quay.io": "never" }),
                json!({ byoc_api::labels::REQUIREMENTS_ANNOTATION: annotation }),
                &[],
            ),
            Step::status("g", "True", "Applied").also(|body| {
                assert_eq!(body["status"]["requires"], "digest (platform default)");
            }),
            Step::event("Applied"),
        ];
        scenario
            .check(steps, reconcile(stored(g), scenario.ctx()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_settled_grant_writes_nothing() {
        let g = grant_with_status("g", "tool-a", &["quay.io"], "Applied", APPLIED_QUAY);
        let ns = namespace(
            "tool-a",
            &[("byoc.toolforge.org/quay.io", "never"), ("team", "a")],
        );
        let scenario = Scenario::new(vec![g.clone()], vec![ns]);
        let action = scenario
            .check(vec![], reconcile(stored(g), scenario.ctx()))
            .await;
        assert_eq!(action.unwrap(), Action::requeue(RESYNC));
        let text = scenario.metrics();
        assert!(!text.contains("namespace_label_writes_total{"), "{text}");
        assert!(
            text.contains("byoc_controller_status_writes_total 0"),
            "{text}"
        );
        assert!(
            text.contains(r#"byoc_controller_grants{state="Applied"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_standby_writes_nothing() {
        let g = grant("g", "tool-a", &["quay.io"], None);
        let scenario = Scenario::standby(vec![g.clone()], vec![namespace("tool-a", &[])]);
        let action = scenario
            .check(vec![], reconcile(stored(g), scenario.ctx()))
            .await;
        assert_eq!(action.unwrap(), Action::await_change());
        assert!(!scenario.metrics().contains("reconciles_total{"));
    }

    #[tokio::test]
    async fn nothing_happens_before_both_caches_are_filled() {
        // The namespace cache is still empty: the namespace must not look missing.
        let g = grant("g", "tool-a", &["quay.io"], None).finalized();
        let (scenario, synced) =
            Scenario::unsynced(vec![g.clone()], vec![namespace("tool-a", &[])]);
        let ctx = scenario.ctx();
        let work = async {
            let pending = tokio::spawn(reconcile(stored(g), ctx.clone()));
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(
                !pending.is_finished(),
                "the reconcile must wait for the caches"
            );
            drop(synced);
            pending.await.unwrap()
        };
        let action = scenario.check(vec![], work).await;
        assert_eq!(action.unwrap(), Action::await_change());
    }

    #[tokio::test]
    async fn foreign_labels_go_in_the_same_patch_and_late_ones_in_a_second() {
        let g = grant_with_status("g", "tool-a", &["quay.io"], "Applied", APPLIED_QUAY);
        let tampered = [
            ("byoc.toolforge.org/quay.io", "never"),
            ("byoc.toolforge.org/any", "never"),
        ];
        let late = ("byoc.toolforge.org/ghcr.io", "never");
        let scenario = Scenario::new(vec![g.clone()], vec![namespace("tool-a", &tampered)]);
        let steps = vec![
            // The hand-made label the cache shows is deleted by the patch itself...
            Step::set_labels(
                "tool-a",
                json!({ "byoc.toolforge.org/quay.io": "never", "byoc.toolforge.org/any": null }),
                &[tampered[0], late],
            ),
            // ...and one the cache did not show yet, seen in the answer, by a second patch.
            // The status has not changed: no write, no event.
            Step::set_labels(
                "tool-a",
                json!({ "byoc.toolforge.org/quay.io": "never", late.0: null }),
                &[tampered[0], late],
            ),
        ];
        scenario
            .check(steps, reconcile(stored(g), scenario.ctx()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_replaced_namespace_gets_nothing_until_renewed() {
        // Applied to tool-a's first incarnation; tool-a was deleted and created again.
        let mut g = grant_with_status("g", "tool-a", &["quay.io"], "Applied", APPLIED_QUAY);
        g.status.as_mut().unwrap().namespace_uid = Some("uid-old".into());
        let scenario = Scenario::new(vec![g.clone()], vec![namespace("tool-a", &[])]);
        let steps = vec![
            Step::status("g", "False", "NamespaceReplaced").also(|body| {
                assert_eq!(body["status"]["namespaceUID"], "uid-old", "{body}");
            }),
            Step::event("NamespaceReplaced").also(|body| {
                assert_eq!(body["type"], "Warning", "{body}");
                let note = body["note"].as_str().unwrap_or_default();
                assert!(
                    note.contains("kubectl byoc grant tool-a --renew --name g"),
                    "{body}"
                );
            }),
        ];
        scenario
            .check(steps, reconcile(stored(g.clone()), scenario.ctx()))
            .await
            .unwrap();

        // Renewed: spec.namespaceUID names the new namespace, which gets the labels.
        g.spec.namespace_uid = Some(crate::fixtures::uid("tool-a"));
        let scenario = Scenario::new(vec![g.clone()], vec![namespace("tool-a", &[])]);
        let steps = vec![
            Step::set_labels(
                "tool-a",
                json!({ "byoc.toolforge.org/quay.io": "never" }),
                &[],
            ),
            // (The condition is the Applied one it had: no event.)
            Step::status("g", "True", "Applied").also(|body| {
                assert_eq!(body["status"]["namespaceUID"], "uid-tool-a", "{body}");
            }),
        ];
        scenario
            .check(steps, reconcile(stored(g), scenario.ctx()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_grant_without_namespace_waits_for_it() {
        let g = grant("g", "tool-a", &["quay.io"], None).finalized();
        let scenario = Scenario::new(vec![g.clone()], vec![]);
        let steps = vec![
            Step::status("g", "False", "NamespaceNotFound"),
            Step::event("NamespaceNotFound"),
        ];
        scenario
            .check(steps, reconcile(stored(g), scenario.ctx()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_expired_grant_loses_its_labels() {
        let mut g = grant_with_status("g", "tool-a", &["quay.io"], "Applied", APPLIED_QUAY);
        g.spec.expires_at = Some(Time(ts("2020-01-01T00:00:00Z")));
        let ns = namespace(
            "tool-a",
            &[("byoc.toolforge.org/quay.io", "20200101T000000Z")],
        );
        let scenario = Scenario::new(vec![g.clone()], vec![ns]);
        let steps = vec![
            Step::set_labels("tool-a", json!({ "byoc.toolforge.org/quay.io": null }), &[]),
            Step::status("g", "False", "Expired"),
            Step::event("Expired"),
        ];
        scenario
            .check(steps, reconcile(stored(g), scenario.ctx()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_deleted_grant_is_revoked_before_the_finalizer_goes() {
        let mut g = grant("g", "tool-a", &["quay.io"], None).finalized();
        g.metadata.deletion_timestamp = Some(Time(ts("2026-01-01T00:00:00Z")));
        let other = grant("h", "tool-a", &["ghcr.io"], None).finalized();
        let ns = namespace(
            "tool-a",
            &[
                ("byoc.toolforge.org/quay.io", "never"),
                ("byoc.toolforge.org/ghcr.io", "never"),
            ],
        );
        let scenario = Scenario::new(vec![g.clone(), other], vec![ns]);
        let steps = vec![
            Step::set_labels(
                "tool-a",
                json!({ "byoc.toolforge.org/ghcr.io": "never", "byoc.toolforge.org/quay.io": null }),
                &[],
            ),
            Step::event("Revoked"),
            Step::remove_finalizer("g"),
        ];
        let action = scenario
            .check(steps, reconcile(stored(g), scenario.ctx()))
            .await;
        assert_eq!(action.unwrap(), Action::await_change());
    }

    #[tokio::test]
    async fn a_deleted_grant_without_namespace_just_goes() {
        let mut g = grant("g", "tool-a", &["quay.io"], None).finalized();
        g.metadata.deletion_timestamp = Some(Time(ts("2026-01-01T00:00:00Z")));
        let scenario = Scenario::new(vec![g.clone()], vec![]);
        let steps = vec![Step::remove_finalizer("g")];
        scenario
            .check(steps, reconcile(stored(g), scenario.ctx()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_second_cleanup_of_a_vanished_grant_is_no_error() {
        let mut g = grant("g", "tool-a", &["quay.io"], None).finalized();
        g.metadata.deletion_timestamp = Some(Time(ts("2026-01-01T00:00:00Z")));
        let scenario = Scenario::new(vec![g.clone()], vec![namespace("tool-a", &[])]);
        let steps = vec![
            Step::event("Revoked"),
            Step::fail(
                Method::PATCH,
                "/apis/byoc.toolforge.org/v1alpha1/byocgrants/g",
                404,
            ),
        ];
        let action = scenario
            .check(steps, reconcile(stored(g), scenario.ctx()))
            .await;
        assert_eq!(action.unwrap(), Action::await_change());
    }

    #[tokio::test]
    async fn a_failed_apply_is_reported_and_retried() {
        let g = grant("g", "tool-a", &["quay.io"], None).finalized();
        let scenario = Scenario::new(vec![g.clone()], vec![namespace("tool-a", &[])]);
        let steps = vec![
            Step::fail(Method::PATCH, "/api/v1/namespaces/tool-a", 403),
            Step::status("g", "False", "Error"),
            Step::event("Failed"),
        ];
        let ctx = scenario.ctx();
        let result = scenario
            .check(steps, reconcile(stored(g.clone()), ctx.clone()))
            .await;
        let error = result.unwrap_err();
        assert_eq!(error.metric_label(), "write_labels");
        assert_eq!(error_policy(stored(g), &error, ctx), Action::requeue(RETRY));
        let text = scenario.metrics();
        assert!(
            text.contains(
                r#"reconcile_errors_total{controller="byocgrant",error="write_labels"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"byoc_controller_grants{state="Error"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn an_unreadable_grant_is_reported_and_grants_nothing() {
        // It carried quay.io while it read; a good grant of the same namespace carries ghcr.io.
        let bad = unreadable("bad", "tool-a", &[FINALIZER]);
        let good = grant("good", "tool-a", &["ghcr.io"], None).finalized();
        let ns = namespace(
            "tool-a",
            &[
                ("byoc.toolforge.org/quay.io", "never"),
                ("byoc.toolforge.org/ghcr.io", "never"),
            ],
        );
        let scenario = Scenario::stored(vec![bad.clone(), good.into()], vec![ns]);
        let steps = vec![
            Step::set_labels(
                "tool-a",
                json!({ "byoc.toolforge.org/ghcr.io": "never", "byoc.toolforge.org/quay.io": null }),
                &[],
            ),
            Step::status("bad", "False", "Invalid").also(|body| {
                let status = &body["status"];
                // Cleared explicitly: a merge patch keeps what it does not mention.
                assert_eq!(status["registries"], json!(null), "{body}");
                let message = status["conditions"][0]["message"]
                    .as_str()
                    .unwrap_or_default();
                assert!(
                    message.starts_with(
                        "this grant cannot be read, so it grants nothing: spec.expiresAt: "
                    ),
                    "{body}"
                );
            }),
            Step::event("Invalid").also(|body| assert_eq!(body["type"], "Warning", "{body}")),
        ];
        let action = scenario
            .check(steps, reconcile(Arc::new(bad), scenario.ctx()))
            .await;
        assert_eq!(action.unwrap(), Action::requeue(RESYNC));
        let text = scenario.metrics();
        assert!(
            text.contains(r#"byoc_controller_grants{state="Invalid"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn an_unreadable_grant_without_a_namespace_is_only_reported() {
        let mut object = json!({
            "metadata": { "name": "bad", "generation": 1 },
            "spec": { "namespace": 7, "reason": "test" },
        });
        let bad = StoredGrant::from_value(&object).unwrap();
        let scenario = Scenario::stored(vec![bad.clone()], vec![namespace("tool-a", &[])]);
        let steps = vec![
            Step::status("bad", "False", "Invalid"),
            Step::event("Invalid"),
        ];
        scenario
            .check(steps, reconcile(Arc::new(bad), scenario.ctx()))
            .await
            .unwrap();
        // Its status says so already: nothing more is written.
        object["status"] = json!({
            "observedGeneration": 1,
            "conditions": [{
                "type": "Ready", "status": "False", "reason": "Invalid",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 1,
                "message": "this grant cannot be read, so it grants nothing: spec.namespace: \
                            invalid type: integer `7`, expected a string; fix it or delete it",
            }],
        });
        let settled = StoredGrant::from_value(&object).unwrap();
        let scenario = Scenario::stored(vec![settled.clone()], vec![]);
        scenario
            .check(vec![], reconcile(Arc::new(settled), scenario.ctx()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_deleted_unreadable_grant_loses_its_labels_then_its_finalizer() {
        let mut bad = unreadable("bad", "tool-a", &["other.example/keep", FINALIZER]);
        bad.meta_mut().deletion_timestamp = Some(Time(ts("2026-01-01T00:00:00Z")));
        let ns = namespace("tool-a", &[("byoc.toolforge.org/quay.io", "never")]);
        let scenario = Scenario::stored(vec![bad.clone()], vec![ns]);
        let steps = vec![
            Step::set_labels("tool-a", json!({ "byoc.toolforge.org/quay.io": null }), &[]),
            Step::remove_finalizer("bad").also(|body| {
                assert_eq!(body[0]["path"], "/metadata/finalizers/1", "{body}");
            }),
        ];
        let action = scenario
            .check(steps, reconcile(Arc::new(bad), scenario.ctx()))
            .await;
        assert_eq!(action.unwrap(), Action::await_change());

        // Without our finalizer there is nothing to remove.
        let mut bare = unreadable("bare", "tool-b", &[]);
        bare.meta_mut().deletion_timestamp = Some(Time(ts("2026-01-01T00:00:00Z")));
        let scenario = Scenario::stored(vec![bare.clone()], vec![]);
        scenario
            .check(vec![], reconcile(Arc::new(bare), scenario.ctx()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn namespace_changes_reach_the_grants_that_target_it() {
        let mut deleting = grant("d", "tool-a", &[], None).finalized();
        deleting.metadata.deletion_timestamp = Some(Time(ts("2026-01-01T00:00:00Z")));
        let scenario = Scenario::new(
            vec![
                grant("a", "tool-a", &[], None),
                grant("b", "tool-b", &[], None),
                grant("c", "tool-a", &["quay.io"], None),
                deleting,
            ],
            vec![],
        );
        let mut names: Vec<_> = targeting(&scenario.ctx().grants, &namespace("tool-a", &[]))
            .into_iter()
            .map(|r| r.name)
            .collect();
        names.sort();
        assert_eq!(names, ["a", "c"]);
    }
}

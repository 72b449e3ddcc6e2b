//! The ByocRequest reconciler (DESIGN §3b): a new request gets status `Pending`; an approved
//! one stays true to the ByocGrant it led to (deleted → `Revoked`, expired → `Expired`,
//! changed → new `expiresAt`/registries); each change is told by an Event on the request.
//!
//! The controller never creates grants and never decides: only `kubectl byoc approve|deny`
//! (an admin who may write `byocrequests/status`) moves a request out of `Pending`. What the
//! status should say is decided by [`desired`], a pure function; [`reconcile`] reads the grant
//! and writes the status with the request's resourceVersion, so it never overwrites a decision
//! it has not seen.

use std::sync::Arc;
use std::time::Duration;

use byoc_api::grant::registries_summary;
use byoc_api::request::{GRANTED, request_key};
use byoc_api::{
    ByocGrant, ByocRequest, ByocRequestStatus, Lenient, REQUEST_ANNOTATION, RequestPhase,
    RequestRecord, StoredGrant,
};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use tracing::{info, instrument, warn};

use crate::grants::{RESYNC, RETRY};
use crate::metrics::Reconciler;
use crate::status::event;
use crate::{Context, Error};

/// A request as the controller watches it: metadata read leniently, so that a request whose
/// `managedFields` a tenant wrote in a form Rust cannot read fails neither the watch nor the
/// other requests.
pub type WatchedRequest = Lenient<ByocRequest>;

/// What became of the grant an approved request led to.
#[derive(Clone, Debug, PartialEq)]
pub enum GrantState {
    /// The grant exists, reads, and records this request.
    Present(Box<ByocGrant>),
    /// There is no such grant any more: deleted, being deleted, or no longer recording the
    /// request. `why` completes "ByocGrant NAME ...".
    Gone {
        /// Its name, when one is known.
        name: Option<String>,
        /// What happened, like `was deleted`.
        why: String,
    },
    /// The grant is stored but does not read, so it grants nothing.
    Unreadable {
        /// Its name.
        name: String,
        /// Why it does not read.
        error: String,
    },
}

/// What the status of a request should be, and what to tell.
pub struct Outcome {
    /// The status to write when it differs from the current one.
    pub status: ByocRequestStatus,
    /// The event to publish: the `Granted` condition changed.
    pub event: Option<Event>,
    /// When the request should be looked at again: its grant's expiry.
    pub recheck_at: Option<Timestamp>,
}

/// The status of `request` (whose approved grant, if it has one, is in `grant`) at `now`.
///
/// Only an admin's status write moves a request out of `Pending` or into `Denied`; from
/// `Approved` the grant decides: gone → `Revoked`, expired → `Expired`, alive (again) →
/// `Approved` with its registries and expiry. `Revoked` is final. A grant that does not read
/// keeps the phase, with condition reason `GrantUnreadable`.
pub fn desired(request: &ByocRequest, grant: Option<&GrantState>, now: Timestamp) -> Outcome {
    let old = request.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let phase = request.phase();
    let mut unreadable = None;
    let mut recheck_at = None;
    match (phase, grant) {
        (RequestPhase::Pending, _) => {
            status.phase = Some(RequestPhase::Pending);
            status.registries = Some(registries_summary(&request.spec.registries));
            status.message = Some("waiting for a platform admin to approve or deny it".into());
        }
        (RequestPhase::Denied, _) => {
            if status.message.is_none() {
                status.message = Some("denied".into());
            }
        }
        (RequestPhase::Approved | RequestPhase::Expired, Some(GrantState::Present(g))) => {
            let name = g.name_any();
            status.grant = Some(name.clone());
            status.registries = Some(g.spec.registries_summary());
            status.expires_at = g.spec.expires_at.clone();
            let registries = if g.spec.allows_any_registry() {
                "any registry".to_owned()
            } else {
                g.spec.registries.join(", ")
            };
            match g.expires_at() {
                Some(at) if at <= now => {
                    status.phase = Some(RequestPhase::Expired);
                    status.message = Some(format!(
                        "ByocGrant {name} expired at {at}; file a new request to continue"
                    ));
                }
                expiry => {
                    status.phase = Some(RequestPhase::Approved);
                    let by = old
                        .decided_by
                        .as_deref()
                        .map(|by| format!("approved by {by}: "))
                        .unwrap_or_default();
                    let until =
                        expiry.map_or_else(|| "without end".to_owned(), |at| format!("until {at}"));
                    status.message =
                        Some(format!("{by}ByocGrant {name} allows {registries} {until}"));
                    recheck_at = expiry;
                }
            }
        }
        // An expired grant that goes away later does not make the request Revoked.
        (RequestPhase::Expired, Some(GrantState::Gone { .. })) => {}
        (RequestPhase::Approved, Some(GrantState::Gone { .. }) | None) => {
            status.phase = Some(RequestPhase::Revoked);
            status.message = Some(match grant {
                Some(GrantState::Gone {
                    name: Some(name),
                    why,
                }) => format!("ByocGrant {name} {why}: the request grants nothing now"),
                Some(GrantState::Gone { name: None, why }) => {
                    format!("{why}: the request grants nothing now")
                }
                _ => "its grant is not known: the request grants nothing now".to_owned(),
            });
        }
        (
            RequestPhase::Approved | RequestPhase::Expired,
            Some(GrantState::Unreadable { name, error }),
        ) => {
            unreadable = Some(format!(
                "ByocGrant {name} cannot be read, so it grants nothing: {error}"
            ));
        }
        (RequestPhase::Expired, None) | (RequestPhase::Revoked, _) => {}
    }
    let phase = status.phase.unwrap_or(RequestPhase::Pending);
    let (reason, message) = match &unreadable {
        Some(message) => ("GrantUnreadable", message.clone()),
        None => (phase.as_str(), status.message.clone().unwrap_or_default()),
    };
    let granted = phase == RequestPhase::Approved && unreadable.is_none();
    let condition = condition(
        &old,
        request.metadata.generation,
        granted,
        reason,
        &message,
        now,
    );
    let previous = old.conditions.iter().find(|c| c.type_ == GRANTED);
    let event = story(previous, &condition, phase);
    status.observed_generation = request.metadata.generation;
    match status.conditions.iter_mut().find(|c| c.type_ == GRANTED) {
        Some(slot) => *slot = condition,
        None => status.conditions.push(condition),
    }
    Outcome {
        status,
        event,
        recheck_at,
    }
}

/// The `Granted` condition; its `lastTransitionTime` moves only when its status does.
fn condition(
    old: &ByocRequestStatus,
    generation: Option<i64>,
    granted: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> Condition {
    let status = if granted { "True" } else { "False" };
    let last_transition_time = match old.conditions.iter().find(|c| c.type_ == GRANTED) {
        Some(previous) if previous.status == status => previous.last_transition_time.clone(),
        _ => Time(Timestamp::from_second(now.as_second()).unwrap_or(now)),
    };
    Condition {
        type_: GRANTED.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// The event telling a change of the `Granted` condition: its reason is the new phase (or
/// `GrantChanged` when an approved request's grant changed), none when nothing changed.
fn story(previous: Option<&Condition>, now: &Condition, phase: RequestPhase) -> Option<Event> {
    if previous.is_some_and(|p| p.reason == now.reason && p.message == now.message) {
        return None;
    }
    let same_reason = previous.is_some_and(|p| p.reason == now.reason);
    let reason = if same_reason && phase == RequestPhase::Approved {
        "GrantChanged"
    } else {
        now.reason.as_str()
    };
    let type_ = match phase {
        RequestPhase::Pending | RequestPhase::Approved if now.reason != "GrantUnreadable" => {
            EventType::Normal
        }
        _ => EventType::Warning,
    };
    Some(event(type_, reason, "Reconcile", &now.message))
}

/// The request a grant made by approving records in [`REQUEST_ANNOTATION`], if any. The
/// reference is by name; the reconciler then counts the grant only for the request with the
/// recorded UID, so a request created again under that name does not take it over.
pub fn for_grant(grant: StoredGrant) -> Option<ObjectRef<WatchedRequest>> {
    let record = recorded(grant.meta())?;
    Some(ObjectRef::new(&record.name).within(&record.namespace))
}

/// Reconciles one request; a standby does nothing.
#[instrument(skip_all, fields(request = %watched.name_any(), namespace = watched.namespace()))]
pub async fn reconcile(watched: Arc<WatchedRequest>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.leadership.is_leader() || !ctx.caches_synced().await {
        return Ok(Action::await_change());
    }
    let _timer = ctx.metrics.reconcile(Reconciler::Request);
    let request = &watched.0;
    if request.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let grant = match request.phase() {
        RequestPhase::Approved | RequestPhase::Expired => Some(grant_of(request, &ctx).await?),
        _ => None,
    };
    let now = Timestamp::now();
    let outcome = desired(request, grant.as_ref(), now);
    if request.status.as_ref() != Some(&outcome.status) {
        let namespace = request.namespace().unwrap_or_default();
        // Read back leniently too: the answer carries the same metadata.
        let api: Api<WatchedRequest> = Api::namespaced(ctx.client.clone(), &namespace);
        let mut updated = Lenient(request.clone());
        updated.0.status = Some(outcome.status.clone());
        // The resourceVersion makes this a compare-and-swap: an admin's decision made since
        // the cache was filled is never overwritten; the watch brings it back here.
        match api
            .replace_status(&request.name_any(), &PostParams::default(), &updated)
            .await
        {
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                return Ok(Action::requeue(RETRY));
            }
            result => {
                result.map_err(|source| Error::UpdateRequestStatus {
                    request: request_key(&namespace, &request.name_any()),
                    source,
                })?;
            }
        }
        ctx.metrics.request_status_write();
        info!(phase = ?outcome.status.phase, "request status updated");
    }
    if let Some(event) = &outcome.event
        && let Err(error) = ctx.publish(event, &request.object_ref(&())).await
    {
        warn!(%error, reason = %event.reason, "cannot publish event");
    }
    let wait = outcome.recheck_at.map(|at| {
        Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
            + Duration::from_millis(100)
    });
    Ok(Action::requeue(wait.map_or(RESYNC, |w| w.min(RESYNC))))
}

/// Counts and logs a failed reconcile, and retries it after [`RETRY`].
pub fn error_policy(request: Arc<WatchedRequest>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(request = %request.name_any(), error = %error, "reconcile failed");
    ctx.metrics.error(Reconciler::Request, error);
    Action::requeue(RETRY)
}

/// Finds the grant an approved request led to: the one `status.grant` names (read from the API
/// server, not the cache, so a deletion just seen is not missed), else one whose annotation
/// records the request.
async fn grant_of(request: &ByocRequest, ctx: &Context) -> Result<GrantState, Error> {
    let named = request.status.as_ref().and_then(|s| s.grant.clone());
    let name = named.or_else(|| {
        ctx.grants
            .store()
            .state()
            .iter()
            .find(|g| records(g.meta(), request))
            .map(|g| g.name_any())
    });
    let Some(name) = name else {
        return Ok(GrantState::Gone {
            name: None,
            why: "no ByocGrant records this request".into(),
        });
    };
    let api: Api<StoredGrant> = Api::all(ctx.client.clone());
    let stored = api
        .get_opt(&name)
        .await
        .map_err(|source| Error::ReadGrant {
            grant: name.clone(),
            source,
        })?;
    let gone = |why: &str| GrantState::Gone {
        name: Some(name.clone()),
        why: why.to_owned(),
    };
    Ok(match stored {
        None => gone("was deleted"),
        Some(g) if g.meta().deletion_timestamp.is_some() => gone("was deleted"),
        Some(g) if !records(g.meta(), request) => gone("no longer records this request"),
        Some(StoredGrant::Readable(g)) => GrantState::Present(Box::new(g)),
        Some(StoredGrant::Unreadable(u)) => GrantState::Unreadable {
            name: name.clone(),
            error: u.error,
        },
    })
}

/// The request a grant's annotation records, if it reads.
fn recorded(meta: &ObjectMeta) -> Option<RequestRecord> {
    RequestRecord::parse(meta.annotations.as_ref()?.get(REQUEST_ANNOTATION)?)
}

/// Whether a grant's annotation records `request` itself (namespace, name and UID).
fn records(meta: &ObjectMeta, request: &ByocRequest) -> bool {
    recorded(meta).is_some_and(|r| r.is(request))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{Scenario, Step};
    use byoc_api::{ByocGrantSpec, ByocRequestSpec};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const NOW: &str = "2026-06-01T12:00:00Z";

    fn request(phase: Option<RequestPhase>) -> ByocRequest {
        let mut r = ByocRequest::new(
            "req",
            ByocRequestSpec {
                registries: vec!["quay.io".into()],
                reason: "T1".into(),
                duration: Some("90d".into()),
            },
        );
        r.metadata.namespace = Some("tool-a".into());
        r.metadata.uid = Some("uid-1".into());
        r.metadata.generation = Some(1);
        r.status = phase.map(|phase| ByocRequestStatus {
            phase: Some(phase),
            grant: (phase != RequestPhase::Pending && phase != RequestPhase::Denied)
                .then(|| "tool-a-abcde".into()),
            decided_by: Some("alice".into()),
            message: Some("approved by alice".into()),
            ..ByocRequestStatus::default()
        });
        r
    }

    fn grant(registries: &[&str], expires: Option<&str>) -> GrantState {
        let mut g = ByocGrant::new(
            "tool-a-abcde",
            ByocGrantSpec {
                namespace: "tool-a".into(),
                reason: "T1 (ByocRequest tool-a/req)".into(),
                registries: registries.iter().map(|s| s.to_string()).collect(),
                any_registry: registries.is_empty(),
                namespace_uid: None,
                expires_at: expires.map(|e| Time(ts(e))),
                requirements: None,
            },
        );
        g.metadata.annotations =
            Some([(REQUEST_ANNOTATION.into(), "tool-a/req/uid-1".into())].into());
        GrantState::Present(Box::new(g))
    }

    fn gone(why: &str) -> GrantState {
        GrantState::Gone {
            name: Some("tool-a-abcde".into()),
            why: why.into(),
        }
    }

    #[test]
    fn phases_follow_the_decision_then_the_grant() {
        let now = ts(NOW);
        let unreadable = GrantState::Unreadable {
            name: "tool-a-abcde".into(),
            error: "spec.expiresAt: bad".into(),
        };
        type Case<'a> = (
            &'a str,
            Option<RequestPhase>,
            Option<GrantState>,
            RequestPhase,
            &'a str,
            &'a str,
        );
        let cases: Vec<Case> = vec![
            (
                "new",
                None,
                None,
                RequestPhase::Pending,
                "Pending",
                "waiting for a platform admin",
            ),
            (
                "pending",
                Some(RequestPhase::Pending),
                None,
                RequestPhase::Pending,
                "Pending",
                "waiting",
            ),
            (
                "denied",
                Some(RequestPhase::Denied),
                None,
                RequestPhase::Denied,
                "Denied",
                "approved by alice",
            ),
            (
                "approved, grant alive",
                Some(RequestPhase::Approved),
                Some(grant(&["quay.io/x"], Some("2026-09-01T00:00:00Z"))),
                RequestPhase::Approved,
                "Approved",
                "approved by alice: ByocGrant tool-a-abcde allows quay.io/x until 2026-09-01T00:00:00Z",
            ),
            (
                "approved, any registry without end",
                Some(RequestPhase::Approved),
                Some(grant(&[], None)),
                RequestPhase::Approved,
                "Approved",
                "ByocGrant tool-a-abcde allows any registry without end",
            ),
            (
                "approved, grant expired",
                Some(RequestPhase::Approved),
                Some(grant(&["quay.io"], Some("2026-06-01T12:00:00Z"))),
                RequestPhase::Expired,
                "Expired",
                "ByocGrant tool-a-abcde expired at 2026-06-01T12:00:00Z",
            ),
            (
                "expired, grant extended",
                Some(RequestPhase::Expired),
                Some(grant(&["quay.io"], Some("2026-07-01T00:00:00Z"))),
                RequestPhase::Approved,
                "Approved",
                "until 2026-07-01T00:00:00Z",
            ),
            (
                "approved, grant deleted",
                Some(RequestPhase::Approved),
                Some(gone("was deleted")),
                RequestPhase::Revoked,
                "Revoked",
                "ByocGrant tool-a-abcde was deleted: the request grants nothing now",
            ),
            (
                "approved, no grant records it",
                Some(RequestPhase::Approved),
                Some(GrantState::Gone {
                    name: None,
                    why: "no ByocGrant records this request".into(),
                }),
                RequestPhase::Revoked,
                "Revoked",
                "no ByocGrant records this request: the request grants nothing now",
            ),
            (
                "expired, grant deleted later",
                Some(RequestPhase::Expired),
                Some(gone("was deleted")),
                RequestPhase::Expired,
                "Expired",
                "approved by alice",
            ),
            (
                "revoked is final",
                Some(RequestPhase::Revoked),
                Some(grant(&["quay.io"], None)),
                RequestPhase::Revoked,
                "Revoked",
                "approved by alice",
            ),
            (
                "approved, grant unreadable",
                Some(RequestPhase::Approved),
                Some(unreadable),
                RequestPhase::Approved,
                "GrantUnreadable",
                "ByocGrant tool-a-abcde cannot be read, so it grants nothing: spec.expiresAt: bad",
            ),
        ];
        for (what, phase, grant, want_phase, want_reason, want_message) in cases {
            let r = request(phase);
            let outcome = desired(&r, grant.as_ref(), now);
            assert_eq!(outcome.status.phase, Some(want_phase), "{what}");
            let c = &outcome.status.conditions[0];
            assert_eq!(
                (c.type_.as_str(), c.reason.as_str()),
                (GRANTED, want_reason),
                "{what}"
            );
            assert!(c.message.contains(want_message), "{what}: {}", c.message);
            let granted = want_phase == RequestPhase::Approved && want_reason == "Approved";
            assert_eq!(c.status, if granted { "True" } else { "False" }, "{what}");
            assert_eq!(c.observed_generation, Some(1), "{what}");
            assert_eq!(outcome.status.observed_generation, Some(1), "{what}");
            // Only an admin writes who decided.
            assert_eq!(
                outcome.status.decided_by,
                r.status.as_ref().and_then(|s| s.decided_by.clone()),
                "{what}"
            );
        }
    }

    #[test]
    fn an_approved_request_shows_what_its_grant_allows_and_rechecks_at_expiry() {
        let now = ts(NOW);
        let r = request(Some(RequestPhase::Approved));
        let g = grant(&["quay.io/x"], Some("2026-09-01T00:00:00Z"));
        let outcome = desired(&r, Some(&g), now);
        assert_eq!(outcome.status.registries.as_deref(), Some("quay.io/x"));
        assert_eq!(
            outcome.status.expires_at.as_ref().unwrap().0,
            ts("2026-09-01T00:00:00Z")
        );
        assert_eq!(outcome.recheck_at, Some(ts("2026-09-01T00:00:00Z")));
        let pending = desired(&request(None), None, now);
        assert_eq!(pending.status.registries.as_deref(), Some("quay.io"));
        assert_eq!(pending.recheck_at, None);
    }

    #[test]
    fn settled_statuses_stay_put_and_tell_nothing() {
        let now = ts(NOW);
        let later = ts("2026-06-02T12:00:00Z");
        for (phase, grant) in [
            (None, None),
            (
                Some(RequestPhase::Approved),
                Some(grant(&["quay.io"], None)),
            ),
            (Some(RequestPhase::Approved), Some(gone("was deleted"))),
            (Some(RequestPhase::Denied), None),
        ] {
            let mut r = request(phase);
            let first = desired(&r, grant.as_ref(), now);
            assert!(first.event.is_some(), "{phase:?}: the first change is told");
            r.status = Some(first.status.clone());
            let second = desired(&r, grant.as_ref(), later);
            assert_eq!(
                second.status, first.status,
                "{phase:?}: no rewrite, same transition time"
            );
            assert!(second.event.is_none(), "{phase:?}");
        }
    }

    #[test]
    fn events_tell_each_change() {
        let now = ts(NOW);
        let mut r = request(None);
        let pending = desired(&r, None, now);
        let e = pending.event.as_ref().unwrap();
        assert_eq!((e.reason.as_str(), e.type_), ("Pending", EventType::Normal));
        r.status = Some(pending.status);
        // An admin approves: the CLI sets the phase; the controller tells it.
        let status = r.status.as_mut().unwrap();
        status.phase = Some(RequestPhase::Approved);
        status.grant = Some("tool-a-abcde".into());
        status.decided_by = Some("alice".into());
        let approved = desired(
            &r,
            Some(&grant(&["quay.io"], Some("2026-09-01T00:00:00Z"))),
            now,
        );
        let e = approved.event.as_ref().unwrap();
        assert_eq!(e.reason, "Approved");
        assert!(
            e.note
                .as_deref()
                .unwrap()
                .starts_with("approved by alice: ByocGrant")
        );
        r.status = Some(approved.status);
        let changed = desired(
            &r,
            Some(&grant(&["quay.io"], Some("2026-10-01T00:00:00Z"))),
            now,
        );
        assert_eq!(changed.event.unwrap().reason, "GrantChanged");
        let revoked = desired(&r, Some(&gone("was deleted")), now);
        let e = revoked.event.unwrap();
        assert_eq!(
            (e.reason.as_str(), e.type_),
            ("Revoked", EventType::Warning)
        );
    }

    /// `request(phase)` as the watch delivers it, at resourceVersion 7.
    fn watched(phase: Option<RequestPhase>) -> Arc<WatchedRequest> {
        let mut r = request(phase);
        r.metadata.resource_version = Some("7".into());
        Arc::new(Lenient(r))
    }

    #[tokio::test]
    async fn a_new_request_becomes_pending_with_an_event() {
        let scenario = Scenario::new(vec![], vec![]);
        let steps = vec![
            Step::request_status("tool-a", "req", "Pending"),
            Step::request_event("tool-a", "Pending"),
        ];
        let action = scenario
            .check(steps, reconcile(watched(None), scenario.ctx()))
            .await;
        assert_eq!(action.unwrap(), Action::requeue(RESYNC));
        let text = scenario.metrics();
        assert!(
            text.contains("byoc_controller_request_status_writes_total 1"),
            "{text}"
        );
        assert!(
            text.contains(r#"byoc_controller_reconciles_total{controller="byocrequest"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn an_approved_request_whose_grant_is_gone_is_revoked() {
        let scenario = Scenario::new(vec![], vec![]);
        let steps = vec![
            Step::get_grant("tool-a-abcde", None),
            Step::request_status("tool-a", "req", "Revoked"),
            Step::request_event("tool-a", "Revoked"),
        ];
        scenario
            .check(
                steps,
                reconcile(watched(Some(RequestPhase::Approved)), scenario.ctx()),
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_approved_request_follows_its_grant_until_it_expires() {
        let GrantState::Present(g) = grant(&["quay.io"], Some("2099-01-01T00:00:00Z")) else {
            unreachable!()
        };
        let scenario = Scenario::new(vec![], vec![]);
        let steps = vec![
            Step::get_grant("tool-a-abcde", Some(serde_json::json!(g))),
            Step::request_status("tool-a", "req", "Approved").also(|body| {
                assert_eq!(
                    body["status"]["expiresAt"], "2099-01-01T00:00:00Z",
                    "{body}"
                );
                assert_eq!(body["status"]["decidedBy"], "alice", "{body}");
            }),
            Step::request_event("tool-a", "Approved"),
        ];
        let action = scenario
            .check(
                steps,
                reconcile(watched(Some(RequestPhase::Approved)), scenario.ctx()),
            )
            .await;
        assert_eq!(action.unwrap(), Action::requeue(RESYNC));
    }

    #[tokio::test]
    async fn a_grant_of_an_earlier_request_of_the_same_name_is_not_this_ones() {
        // The grant was made for the request `tool-a/req` that was deleted; this one, created
        // again under the name, has another UID. Named in its status or found in the cache,
        // the grant is not its grant.
        let GrantState::Present(mut g) = grant(&["quay.io"], None) else {
            unreachable!()
        };
        g.metadata.annotations =
            Some([(REQUEST_ANNOTATION.into(), "tool-a/req/uid-0".into())].into());
        let scenario = Scenario::new(vec![], vec![]);
        let steps = vec![
            Step::get_grant("tool-a-abcde", Some(serde_json::json!(g))),
            Step::request_status("tool-a", "req", "Revoked").also(|body| {
                let message = body["status"]["message"].as_str().unwrap_or_default();
                assert!(message.contains("no longer records this request"), "{body}");
            }),
            Step::request_event("tool-a", "Revoked"),
        ];
        scenario
            .check(
                steps,
                reconcile(watched(Some(RequestPhase::Approved)), scenario.ctx()),
            )
            .await
            .unwrap();

        let mut unnamed = request(Some(RequestPhase::Approved));
        unnamed.status.as_mut().unwrap().grant = None;
        unnamed.metadata.resource_version = Some("7".into());
        let scenario = Scenario::new(vec![*g], vec![]);
        let steps = vec![
            Step::request_status("tool-a", "req", "Revoked").also(|body| {
                let message = body["status"]["message"].as_str().unwrap_or_default();
                assert!(
                    message.contains("no ByocGrant records this request"),
                    "{body}"
                );
            }),
            Step::request_event("tool-a", "Revoked"),
        ];
        scenario
            .check(steps, reconcile(Arc::new(Lenient(unnamed)), scenario.ctx()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_lost_race_writes_nothing_more_and_retries() {
        // An admin decided since the cache was filled: the update carries the old
        // resourceVersion and is refused; no event, no error, a quick retry.
        let scenario = Scenario::new(vec![], vec![]);
        let path = "/apis/byoc.toolforge.org/v1alpha1/namespaces/tool-a/byocrequests/req/status";
        let steps = vec![Step::fail(http::Method::PUT, path, 409)];
        let action = scenario
            .check(steps, reconcile(watched(None), scenario.ctx()))
            .await;
        assert_eq!(action.unwrap(), Action::requeue(RETRY));
        assert!(
            scenario
                .metrics()
                .contains("byoc_controller_request_status_writes_total 0")
        );
    }

    #[tokio::test]
    async fn a_failed_update_is_an_error_and_a_standby_does_nothing() {
        let scenario = Scenario::new(vec![], vec![]);
        let path = "/apis/byoc.toolforge.org/v1alpha1/namespaces/tool-a/byocrequests/req/status";
        let steps = vec![Step::fail(http::Method::PUT, path, 403)];
        let ctx = scenario.ctx();
        let error = scenario
            .check(steps, reconcile(watched(None), ctx.clone()))
            .await
            .unwrap_err();
        assert_eq!(error.metric_label(), "update_request_status");
        assert_eq!(
            error_policy(watched(None), &error, ctx),
            Action::requeue(RETRY)
        );
        let standby = Scenario::standby(vec![], vec![]);
        let action = standby
            .check(vec![], reconcile(watched(None), standby.ctx()))
            .await;
        assert_eq!(action.unwrap(), Action::await_change());
    }

    #[test]
    fn grants_map_to_the_request_they_record() {
        let GrantState::Present(g) = grant(&[], None) else {
            unreachable!()
        };
        let r = for_grant(StoredGrant::Readable(*g.clone())).unwrap();
        assert_eq!(
            (r.name.as_str(), r.namespace.as_deref()),
            ("req", Some("tool-a"))
        );
        for bad in ["", "tool-a", "/req", "tool-a/", "tool-a/req", "tool-a/req/"] {
            let mut g = g.clone();
            g.metadata.annotations = Some([(REQUEST_ANNOTATION.into(), bad.into())].into());
            assert_eq!(for_grant(StoredGrant::Readable(*g)), None, "{bad:?}");
        }
        let mut plain = g.clone();
        plain.metadata.annotations = None;
        assert_eq!(for_grant(StoredGrant::Readable(*plain)), None);
    }
}

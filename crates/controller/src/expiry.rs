//! Expiry reminders (DESIGN §4): when a grant enters the policy's `expiryWarning` window, an
//! `ExpiringSoon` event on the grant and on the ByocRequest it was approved from, once.
//!
//! "Once" is kept in the grant's status, not in memory: the `ExpiringSoon` condition turns
//! `True` in the same status write that precedes the events, so a restarted controller (or a
//! new leader) finds it and stays silent. The condition goes away when the grant leaves the
//! window (its `expiresAt` moved later or was removed, or it expired), so a grant that is
//! extended and later nears its new end is announced again.

use std::time::Duration;

use byoc_api::grant::EXPIRING_SOON;
use byoc_api::granted::Standing;
use byoc_api::{ByocGrant, ByocGrantStatus, REQUEST_ANNOTATION, RequestRecord, duration};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use tracing::{debug, info, warn};

use crate::Context;
use crate::requests::WatchedRequest;
use crate::status::event;

/// The condition reason while the grant is in the window.
const REASON: &str = "WithinExpiryWarning";

/// When an active grant of `standing` ends, if that is within `window` of `now`.
pub fn ends_within(
    grant: &ByocGrant,
    standing: &Standing,
    window: SignedDuration,
    now: Timestamp,
) -> Option<Timestamp> {
    let at = grant.expires_at()?;
    let left = at.duration_since(now);
    (matches!(standing, Standing::Active(_)) && left.is_positive() && left <= window).then_some(at)
}

/// Puts the `ExpiringSoon` condition in `status` (`True` while the grant ends at `ending`
/// within the window, absent otherwise); returns whether the grant has just entered the window,
/// which is when the reminder is published. `lastTransitionTime` is `now` in whole seconds.
pub fn mark(
    status: &mut ByocGrantStatus,
    ending: Option<Timestamp>,
    window: SignedDuration,
    generation: Option<i64>,
    now: Timestamp,
) -> bool {
    let slot = status
        .conditions
        .iter()
        .position(|c| c.type_ == EXPIRING_SOON);
    let Some(at) = ending else {
        if let Some(i) = slot {
            status.conditions.remove(i);
        }
        return false;
    };
    let entered = slot.is_none_or(|i| status.conditions[i].status != "True");
    let last_transition_time = match slot {
        Some(i) if !entered => status.conditions[i].last_transition_time.clone(),
        _ => Time(Timestamp::from_second(now.as_second()).unwrap_or(now)),
    };
    let condition = Condition {
        type_: EXPIRING_SOON.to_owned(),
        status: "True".to_owned(),
        reason: REASON.to_owned(),
        message: format!(
            "expires at {at}, within the {} expiry warning window",
            duration::format(window)
        ),
        observed_generation: generation,
        last_transition_time,
    };
    match slot {
        Some(i) => status.conditions[i] = condition,
        None => status.conditions.push(condition),
    }
    entered
}

/// How long until `grant` enters the window, when that is still ahead: the reconcile is
/// requeued then, so the reminder comes on time.
pub fn until_window(grant: &ByocGrant, window: SignedDuration, now: Timestamp) -> Option<Duration> {
    let enters = grant.expires_at()?.checked_sub(window).ok()?;
    Duration::try_from(enters.duration_since(now))
        .ok()
        .filter(|d| !d.is_zero())
}

/// The reminder event: the grant, its namespace, when it ends and how to keep the images.
pub fn reminder(grant: &ByocGrant, at: Timestamp, now: Timestamp) -> Event {
    let ns = &grant.spec.namespace;
    let what = if grant.spec.allows_any_registry() {
        "any registry".to_owned()
    } else {
        grant.spec.registries.join(", ")
    };
    event(
        EventType::Warning,
        "ExpiringSoon",
        "Remind",
        &format!(
            "ByocGrant {} expires at {at} ({}): after that, namespace {ns} may no longer run \
             images from {what}. To keep them, an admin extends spec.expiresAt, or a maintainer \
             asks again: kubectl byoc request -n {ns} --reason '...'",
            grant.name_any(),
            duration::days_left_note(duration::days_left(at, now)),
        ),
    )
}

/// Publishes `event` on `grant` and on the ByocRequest named by its [`REQUEST_ANNOTATION`]
/// when that request exists in the grant's namespace (it is read for its uid, so that
/// `kubectl describe byocreq` lists the event; leniently, so deep `managedFields` a tenant
/// wrote on the request cannot fail the read). Best effort: failures are logged.
pub async fn announce(grant: &ByocGrant, event: &Event, ctx: &Context) {
    info!(
        note = event.note.as_deref().unwrap_or_default(),
        "grant expiring soon"
    );
    if let Err(error) = ctx.publish(event, &grant.object_ref(&())).await {
        warn!(%error, "cannot publish the ExpiringSoon event on the grant");
    }
    let Some(value) = grant.annotations().get(REQUEST_ANNOTATION) else {
        return;
    };
    // A request asks for its own namespace: one elsewhere is not this grant's.
    let Some(record) = RequestRecord::parse(value).filter(|r| r.namespace == grant.spec.namespace)
    else {
        warn!(annotation = %value, "the request annotation does not name a request in the grant's namespace");
        return;
    };
    let api: Api<WatchedRequest> = Api::namespaced(ctx.client.clone(), &record.namespace);
    match api.get_opt(&record.name).await {
        // A request re-created under the same name is not the one this grant came from.
        Ok(Some(request)) if request.meta().uid.as_deref() == Some(record.uid.as_str()) => {
            if let Err(error) = ctx.publish(event, &request.object_ref(&())).await {
                warn!(%error, request = %value, "cannot publish the ExpiringSoon event on the request");
            }
        }
        Ok(_) => debug!(request = %value, "the grant's request is gone"),
        Err(error) => warn!(%error, request = %value, "cannot read the grant's request"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, ts};

    const NOW: &str = "2026-06-01T12:00:00Z";
    const WINDOW: SignedDuration = SignedDuration::from_hours(14 * 24);

    fn grant(registries: &[&str], expires: Option<&str>) -> ByocGrant {
        fixtures::grant("g", "tool-a", registries, expires)
    }

    #[test]
    fn which_grants_are_in_the_window() {
        let now = ts(NOW);
        // (what, expiresAt, window, in the window)
        let cases = [
            ("never expires", None, WINDOW, false),
            ("in 3 days", Some("2026-06-04T12:00:00Z"), WINDOW, true),
            (
                "at the window's edge",
                Some("2026-06-15T12:00:00Z"),
                WINDOW,
                true,
            ),
            (
                "a second beyond",
                Some("2026-06-15T12:00:01Z"),
                WINDOW,
                false,
            ),
            ("in 60 days", Some("2026-07-31T12:00:00Z"), WINDOW, false),
            ("expired", Some("2026-06-01T12:00:00Z"), WINDOW, false),
            (
                "reminders off",
                Some("2026-06-04T12:00:00Z"),
                SignedDuration::ZERO,
                false,
            ),
        ];
        for (what, expires, window, inside) in cases {
            let g = grant(&["quay.io"], expires);
            let standing = Standing::of(&g, now);
            assert_eq!(
                ends_within(&g, &standing, window, now).is_some(),
                inside,
                "{what}"
            );
        }
        // An invalid grant grants nothing, so it reminds of nothing.
        let bad = grant(&["Quay.io"], Some("2026-06-04T12:00:00Z"));
        assert_eq!(
            ends_within(&bad, &Standing::of(&bad, now), WINDOW, now),
            None
        );
    }

    #[test]
    fn the_condition_announces_once_and_goes_when_the_grant_leaves_the_window() {
        let t0 = ts(NOW);
        let t1 = ts("2026-06-01T13:00:00.5Z");
        let at = ts("2026-06-04T12:00:00Z");
        let ready = Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "Applied".into(),
            message: "m".into(),
            observed_generation: Some(1),
            last_transition_time: Time(t0),
        };
        let mut status = ByocGrantStatus {
            conditions: vec![ready.clone()],
            ..ByocGrantStatus::default()
        };

        // Outside the window: nothing to add.
        assert!(!mark(&mut status, None, WINDOW, Some(1), t0));
        assert_eq!(status.conditions, std::slice::from_ref(&ready));

        // Entering: announced, the condition added next to Ready.
        assert!(mark(&mut status, Some(at), WINDOW, Some(1), t0));
        let c = &status.conditions[1];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("ExpiringSoon", "True", "WithinExpiryWarning")
        );
        assert_eq!(
            c.message,
            "expires at 2026-06-04T12:00:00Z, within the 14d expiry warning window"
        );
        assert_eq!(c.last_transition_time.0, t0);
        let settled = status.clone();

        // Later reconciles (a restart included: the status is all they see) stay silent and
        // change nothing.
        assert!(!mark(&mut status, Some(at), WINDOW, Some(1), t1));
        assert_eq!(status, settled);

        // A new generation moves observedGeneration only.
        assert!(!mark(&mut status, Some(at), WINDOW, Some(2), t1));
        assert_eq!(status.conditions[1].observed_generation, Some(2));
        assert_eq!(status.conditions[1].last_transition_time.0, t0);

        // Extended beyond the window: the condition goes; Ready stays.
        assert!(!mark(&mut status, None, WINDOW, Some(3), t1));
        assert_eq!(status.conditions, [ready]);

        // Nearing the new end: announced again, at whole seconds.
        assert!(mark(&mut status, Some(at), WINDOW, Some(3), t1));
        assert_eq!(
            status.conditions[1].last_transition_time.0,
            ts("2026-06-01T13:00:00Z")
        );

        // A condition someone set to False counts as outside.
        status.conditions[1].status = "False".into();
        assert!(mark(&mut status, Some(at), WINDOW, Some(3), t1));
    }

    #[test]
    fn requeue_at_window_entry() {
        let now = ts(NOW);
        let cases = [
            (Some("2026-06-15T12:00:30Z"), Some(Duration::from_secs(30))),
            (
                Some("2026-07-01T12:00:00Z"),
                Some(Duration::from_secs(16 * 86_400)),
            ),
            (Some("2026-06-15T12:00:00Z"), None),
            (Some("2026-06-04T12:00:00Z"), None),
            (None, None),
        ];
        for (expires, want) in cases {
            assert_eq!(
                until_window(&grant(&[], expires), WINDOW, now),
                want,
                "{expires:?}"
            );
        }
    }

    #[test]
    fn the_reminder_says_what_ends_when_and_what_to_do() {
        let now = ts(NOW);
        let g = grant(
            &["quay.io", "ghcr.io/wikimedia"],
            Some("2026-06-04T12:00:00Z"),
        );
        let e = reminder(&g, ts("2026-06-04T12:00:00Z"), now);
        assert_eq!(
            (e.reason.as_str(), e.type_),
            ("ExpiringSoon", EventType::Warning)
        );
        assert_eq!(
            e.note.as_deref(),
            Some(
                "ByocGrant g expires at 2026-06-04T12:00:00Z (3 days left): after that, namespace \
                 tool-a may no longer run images from quay.io, ghcr.io/wikimedia. To keep them, an \
                 admin extends spec.expiresAt, or a maintainer asks again: kubectl byoc request -n \
                 tool-a --reason '...'"
            )
        );
        let any = grant(&[], Some("2026-06-01T13:00:00Z"));
        let note = reminder(&any, ts("2026-06-01T13:00:00Z"), now)
            .note
            .unwrap();
        assert!(
            note.contains("(less than a day left)") && note.contains("from any registry"),
            "{note}"
        );
    }
}

//! The `Ready` condition of a grant and the events that tell its story: pure functions.
//!
//! A status is written only when it changes, and `lastTransitionTime` moves only when the
//! condition's `status` does, so a reconcile that finds nothing new writes nothing (and does
//! not trigger itself).

use byoc_api::grant::READY;
use byoc_api::grant::requirements_summary;
use byoc_api::granted::{Applied, Standing};
use byoc_api::{ByocGrant, ByocGrantStatus, ReadyReason, Requirements};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::events::{Event, EventType};

use crate::Error;
use crate::binding::{self, Binding};
use crate::desired::NamespaceState;

/// What the `Ready` condition of a grant should say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The condition reason (and so its status).
    pub reason: ReadyReason,
    /// The human-readable message.
    pub message: String,
    /// What `status.registries` should say; `None` when the spec cannot be read.
    pub registries: Option<String>,
    /// What `status.requires` should say ([`requires`]); `None` when the spec cannot be read.
    pub requires: Option<String>,
    /// The UID of the namespace the grant was applied to, for `status.namespaceUID`; `None`
    /// keeps what the status says.
    pub namespace_uid: Option<String>,
}

impl Verdict {
    /// The verdict on `grant`, standing as `standing`, after its namespace was synced with
    /// outcome `synced`, when the policy's `defaultGrantRequirements` are `default`. An
    /// invalid or expired grant says so whatever the namespace looks like; an active one
    /// applies only to the namespace it is bound to ([`binding`]).
    pub fn new(
        grant: &ByocGrant,
        standing: &Standing,
        synced: Result<&NamespaceState, &Error>,
        default: Option<&Requirements>,
    ) -> Self {
        let ns = &grant.spec.namespace;
        let mut namespace_uid = None;
        let (reason, message) = match (standing, synced) {
            (Standing::Invalid(invalid), _) => (ReadyReason::Invalid, invalid.to_string()),
            (Standing::Expired(at), _) => (
                ReadyReason::Expired,
                format!("expired at {at}; namespace {ns} no longer carries it"),
            ),
            (Standing::Active(_), Err(error)) => (ReadyReason::Error, format!("{error}; retrying")),
            (Standing::Active(_), Ok(NamespaceState::Missing)) => (
                ReadyReason::NamespaceNotFound,
                format!("namespace {ns} does not exist; it is labelled once it is created"),
            ),
            (Standing::Active(_), Ok(NamespaceState::Terminating)) => (
                ReadyReason::NamespaceNotFound,
                format!("namespace {ns} is being deleted"),
            ),
            (Standing::Active(_), Ok(NamespaceState::Labelled { uid })) => {
                match binding::of(grant, uid.as_deref()) {
                    Binding::Apply(uid) => {
                        namespace_uid = Some(uid.to_owned());
                        (
                            ReadyReason::Applied,
                            format!("namespace {ns} carries this grant: {}", describe(grant)),
                        )
                    }
                    Binding::Wait => (
                        ReadyReason::NamespaceNotFound,
                        format!("namespace {ns} has no readable UID; it is labelled once it has"),
                    ),
                    Binding::Replaced { bound, current } => (
                        ReadyReason::NamespaceReplaced,
                        replaced_message(grant, bound, current),
                    ),
                }
            }
        };
        Self {
            reason,
            message,
            registries: Some(grant.spec.registries_summary()),
            requires: Some(requires(Applied::of(&grant.spec, default))),
            namespace_uid,
        }
    }

    /// The verdict on a stored grant that does not read as a ByocGrant (`error` says why): it
    /// grants nothing until it is fixed.
    pub fn unreadable(error: &str) -> Self {
        Self {
            reason: ReadyReason::Invalid,
            message: format!(
                "this grant cannot be read, so it grants nothing: {error}; fix it or delete it"
            ),
            registries: None,
            requires: None,
            namespace_uid: None,
        }
    }

    /// The event to publish when the `Ready` condition moves from `previous` to this verdict:
    /// one per change of reason or message, none when nothing changed.
    pub fn event(&self, previous: Option<&Condition>) -> Option<Event> {
        let unchanged =
            previous.is_some_and(|c| c.reason == self.reason.as_str() && c.message == self.message);
        if unchanged {
            return None;
        }
        let (type_, reason, action) = match self.reason {
            ReadyReason::Applied => (EventType::Normal, "Applied", "ApplyLabels"),
            ReadyReason::NamespaceNotFound => {
                (EventType::Normal, "NamespaceNotFound", "ApplyLabels")
            }
            ReadyReason::Expired => (EventType::Normal, "Expired", "RemoveLabels"),
            ReadyReason::Invalid => (EventType::Warning, "Invalid", "ApplyLabels"),
            ReadyReason::Error => (EventType::Warning, "Failed", "ApplyLabels"),
            ReadyReason::NamespaceReplaced => {
                (EventType::Warning, "NamespaceReplaced", "ApplyLabels")
            }
        };
        Some(event(type_, reason, action, &self.message))
    }
}

/// What the `Ready` condition says of a grant bound to namespace UID `bound` whose namespace
/// now has UID `current`, with the command that renews it.
fn replaced_message(grant: &ByocGrant, bound: &str, current: &str) -> String {
    let ns = &grant.spec.namespace;
    let name = grant.metadata.name.as_deref().unwrap_or_default();
    let renew = if name == ns {
        format!("kubectl byoc grant {ns} --renew")
    } else {
        format!("kubectl byoc grant {ns} --renew --name {name}")
    };
    format!(
        "namespace {ns} was deleted and created again (UID {current}; this grant was applied \
         to UID {bound}), so the new namespace does not get it: if the new namespace should, \
         run `{renew}` (or set spec.namespaceUID to {current})"
    )
}

/// The event published when a deleted grant's labels have been removed from its namespace.
pub fn revoked_event(namespace: &str) -> Event {
    event(
        EventType::Normal,
        "Revoked",
        "RemoveLabels",
        &format!("grant deleted; namespace {namespace} no longer carries it"),
    )
}

/// The status a grant at `generation` whose status is `current` should have for `verdict` at
/// `now`, or `None` when it already has it. Other conditions are kept as they are.
pub fn next_status(
    current: Option<&ByocGrantStatus>,
    generation: Option<i64>,
    verdict: &Verdict,
    now: Timestamp,
) -> Option<ByocGrantStatus> {
    let old = current.cloned().unwrap_or_default();
    let status = verdict.reason.status();
    let last_transition_time = match old.ready_condition() {
        Some(previous) if previous.status == status => previous.last_transition_time.clone(),
        // The API server keeps whole seconds; so do we, so that a re-read compares equal.
        _ => Time(Timestamp::from_second(now.as_second()).unwrap_or(now)),
    };
    let ready = Condition {
        type_: READY.to_owned(),
        status: status.to_owned(),
        reason: verdict.reason.as_str().to_owned(),
        message: verdict.message.clone(),
        observed_generation: generation,
        last_transition_time,
    };
    let mut conditions = old.conditions.clone();
    match conditions.iter_mut().find(|c| c.type_ == READY) {
        Some(slot) => *slot = ready,
        None => conditions.push(ready),
    }
    let new = ByocGrantStatus {
        observed_generation: generation,
        conditions,
        registries: verdict.registries.clone(),
        requires: verdict.requires.clone(),
        namespace_uid: verdict.namespace_uid.clone().or(old.namespace_uid.clone()),
    };
    (new != old).then_some(new)
}

/// "registries quay.io, ghcr.io/wikimedia until 2027-03-31T00:00:00Z", "any registry".
fn describe(grant: &ByocGrant) -> String {
    let mut text = if grant.spec.is_legacy_any() {
        "any registry (a legacy empty list: set anyRegistry: true to keep it so)".to_owned()
    } else if grant.spec.any_registry {
        "any registry".to_owned()
    } else {
        format!("registries {}", grant.spec.registries.join(", "))
    };
    if let Some(at) = grant.expires_at() {
        text.push_str(&format!(" until {at}"));
    }
    text
}

/// What `status.requires` says of a grant that requires `applied`:
/// `none`, or [`requirements_summary`], followed by ` (platform default)` when they are the
/// policy's `defaultGrantRequirements`.
pub fn requires(applied: Applied<'_>) -> String {
    match applied {
        Applied::Nothing => "none".to_owned(),
        Applied::Own(r) => requirements_summary(r),
        Applied::Default(r) => format!("{} (platform default)", requirements_summary(r)),
    }
}

/// An event; the note is cut to the 1 kB the API allows.
pub(crate) fn event(type_: EventType, reason: &str, action: &str, note: &str) -> Event {
    const MAX_NOTE: usize = 1024;
    let mut end = note.len().min(MAX_NOTE);
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note[..end].to_owned()),
        action: action.to_owned(),
        secondary: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use byoc_api::{BaseImage, ByocGrantSpec};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn grant(registries: &[&str], expires: Option<&str>) -> ByocGrant {
        let mut g = ByocGrant::new(
            "g",
            ByocGrantSpec {
                namespace: "tool-a".into(),
                reason: "test".into(),
                registries: registries.iter().map(|s| s.to_string()).collect(),
                any_registry: registries.is_empty(),
                namespace_uid: None,
                expires_at: expires.map(|e| Time(ts(e))),
                requirements: None,
            },
        );
        g.metadata.generation = Some(2);
        g
    }

    fn api_error() -> Error {
        Error::WriteLabels {
            namespace: "tool-a".into(),
            source: kube::Error::Api(
                kube::core::Status::failure("denied", "Forbidden")
                    .with_code(403)
                    .boxed(),
            ),
        }
    }

    const NOW: &str = "2026-06-01T12:00:00Z";

    #[test]
    fn verdicts() {
        let now = ts(NOW);
        let error = api_error();
        let labelled = |uid: &str| {
            Ok(NamespaceState::Labelled {
                uid: Some(uid.into()),
            })
        };
        let mut legacy = grant(&[], None);
        legacy.spec.any_registry = false;
        let mut bound = grant(&["quay.io"], None);
        bound.metadata.name = Some("tool-a".into());
        bound.status = Some(ByocGrantStatus {
            namespace_uid: Some("uid-old".into()),
            ..ByocGrantStatus::default()
        });
        let mut other_name = bound.clone();
        other_name.metadata.name = Some("tool-a-migration".into());
        type Case<'a> = (
            &'a str,
            ByocGrant,
            Result<NamespaceState, &'a Error>,
            ReadyReason,
            &'a str,
        );
        let cases: Vec<Case> = vec![
            (
                "applied, specific registries",
                grant(
                    &["quay.io", "ghcr.io/wikimedia"],
                    Some("2027-03-31T00:00:00Z"),
                ),
                labelled("uid-a"),
                ReadyReason::Applied,
                "namespace tool-a carries this grant: registries quay.io, ghcr.io/wikimedia until 2027-03-31T00:00:00Z",
            ),
            (
                "applied, any registry",
                grant(&[], None),
                labelled("uid-a"),
                ReadyReason::Applied,
                "namespace tool-a carries this grant: any registry",
            ),
            (
                "applied, a legacy empty list",
                legacy,
                labelled("uid-a"),
                ReadyReason::Applied,
                "namespace tool-a carries this grant: any registry (a legacy empty list: set \
                 anyRegistry: true to keep it so)",
            ),
            (
                "applied to the namespace it is bound to",
                bound.clone(),
                labelled("uid-old"),
                ReadyReason::Applied,
                "namespace tool-a carries this grant: registries quay.io",
            ),
            (
                "the namespace was replaced",
                bound,
                labelled("uid-new"),
                ReadyReason::NamespaceReplaced,
                "namespace tool-a was deleted and created again (UID uid-new; this grant was \
                 applied to UID uid-old), so the new namespace does not get it: if the new \
                 namespace should, run `kubectl byoc grant tool-a --renew` (or set \
                 spec.namespaceUID to uid-new)",
            ),
            (
                "the renew command names a grant named otherwise",
                other_name,
                labelled("uid-new"),
                ReadyReason::NamespaceReplaced,
                "namespace tool-a was deleted and created again (UID uid-new; this grant was \
                 applied to UID uid-old), so the new namespace does not get it: if the new \
                 namespace should, run `kubectl byoc grant tool-a --renew --name \
                 tool-a-migration` (or",
            ),
            (
                "a namespace whose UID did not read",
                grant(&[], None),
                Ok(NamespaceState::Labelled { uid: None }),
                ReadyReason::NamespaceNotFound,
                "namespace tool-a has no readable UID",
            ),
            (
                "namespace missing",
                grant(&[], None),
                Ok(NamespaceState::Missing),
                ReadyReason::NamespaceNotFound,
                "namespace tool-a does not exist; it is labelled once it is created",
            ),
            (
                "namespace terminating",
                grant(&[], None),
                Ok(NamespaceState::Terminating),
                ReadyReason::NamespaceNotFound,
                "namespace tool-a is being deleted",
            ),
            (
                "expired wins over the namespace",
                grant(&[], Some("2026-01-01T00:00:00Z")),
                Ok(NamespaceState::Missing),
                ReadyReason::Expired,
                "expired at 2026-01-01T00:00:00Z; namespace tool-a no longer carries it",
            ),
            (
                "invalid wins over everything",
                grant(&["Quay.io"], None),
                Err(&error),
                ReadyReason::Invalid,
                "spec.registries:",
            ),
            (
                "apply failed",
                grant(&[], None),
                Err(&error),
                ReadyReason::Error,
                "cannot write the labels of namespace tool-a: ",
            ),
        ];
        for (what, grant, synced, reason, message) in cases {
            let standing = Standing::of(&grant, now);
            let verdict = Verdict::new(&grant, &standing, synced.as_ref().map_err(|e| *e), None);
            assert_eq!(verdict.reason, reason, "{what}");
            assert!(
                verdict.message.starts_with(message),
                "{what}: {}",
                verdict.message
            );
            // Only an applied grant records the namespace it was applied to.
            let recorded = match &synced {
                Ok(NamespaceState::Labelled { uid }) if reason == ReadyReason::Applied => {
                    uid.clone()
                }
                _ => None,
            };
            assert_eq!(verdict.namespace_uid, recorded, "{what}");
        }
    }

    #[test]
    fn the_namespace_uid_is_recorded_and_kept() {
        let now = ts(NOW);
        let mut g = grant(&["quay.io"], None);
        let applied = |uid: &str| NamespaceState::Labelled {
            uid: Some(uid.into()),
        };
        let first = Verdict::new(&g, &Standing::of(&g, now), Ok(&applied("uid-a")), None);
        g.status = next_of(&g, &first, now);
        let status = g.status.clone().unwrap();
        assert_eq!(status.namespace_uid.as_deref(), Some("uid-a"));
        // Replaced, then gone: the record stays.
        for state in [applied("uid-b"), NamespaceState::Missing] {
            let v = Verdict::new(&g, &Standing::of(&g, now), Ok(&state), None);
            let next = next_of(&g, &v, now).unwrap_or_else(|| status.clone());
            assert_eq!(next.namespace_uid.as_deref(), Some("uid-a"), "{state:?}");
        }
        // Renewed: applied to the new namespace, and the record moves.
        g.spec.namespace_uid = Some("uid-b".into());
        let v = Verdict::new(&g, &Standing::of(&g, now), Ok(&applied("uid-b")), None);
        assert_eq!(v.reason, ReadyReason::Applied);
        let next = next_of(&g, &v, now).unwrap();
        assert_eq!(next.namespace_uid.as_deref(), Some("uid-b"));
    }

    fn verdict(reason: ReadyReason, message: &str) -> Verdict {
        Verdict {
            reason,
            message: message.into(),
            registries: Some("any".into()),
            requires: Some("none".into()),
            namespace_uid: None,
        }
    }

    fn next_of(g: &ByocGrant, verdict: &Verdict, now: Timestamp) -> Option<ByocGrantStatus> {
        next_status(g.status.as_ref(), g.metadata.generation, verdict, now)
    }

    #[test]
    fn status_registries_say_what_the_spec_grants() {
        let now = ts(NOW);
        let cases = [
            (grant(&[], None), Some("any")),
            (
                grant(&["quay.io", "ghcr.io/wikimedia"], None),
                Some("quay.io,ghcr.io/wikimedia"),
            ),
            // Expired or not, the column shows the spec; READY and EXPIRES say the rest.
            (
                grant(&["quay.io"], Some("2026-01-01T00:00:00Z")),
                Some("quay.io"),
            ),
        ];
        for (g, want) in cases {
            let v = Verdict::new(
                &g,
                &Standing::of(&g, now),
                Ok(&NamespaceState::Labelled { uid: None }),
                None,
            );
            assert_eq!(v.registries.as_deref(), want, "{:?}", g.spec);
            let status = next_of(&g, &v, now).unwrap();
            assert_eq!(status.registries.as_deref(), want);
        }
    }

    #[test]
    fn status_requires_says_what_the_grant_requires_in_short() {
        let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
        let full = Requirements {
            built_on: vec![
                BaseImage("tools-harbor.wmcloud.org/toolforge/heroku-runner:22".into()),
                BaseImage(format!("quay.io/base/python@{digest}")),
                BaseImage("docker.io/library/debian".into()),
            ],
            require_digest: true,
            source_from: vec!["https://gitlab.wikimedia.org/toolforge-repos/{tool}".into()],
        };
        let digest_only = Requirements {
            require_digest: true,
            ..Requirements::default()
        };
        let cases = [
            (Applied::Nothing, "none"),
            (
                Applied::Own(&full),
                "builtOn heroku-runner:22,python@sha256:0123456789ab,debian; digest; \
                 source gitlab.wikimedia.org/toolforge-repos/{tool}",
            ),
            (Applied::Default(&digest_only), "digest (platform default)"),
        ];
        for (applied, want) in cases {
            assert_eq!(requires(applied), want);
        }
        // From the grant and the default, into the status.
        let now = ts(NOW);
        let labelled = NamespaceState::Labelled { uid: None };
        let mut g = grant(&["quay.io"], None);
        let v = Verdict::new(
            &g,
            &Standing::of(&g, now),
            Ok(&labelled),
            Some(&digest_only),
        );
        assert_eq!(v.requires.as_deref(), Some("digest (platform default)"));
        g.spec.requirements = Some(Requirements::default());
        let v = Verdict::new(
            &g,
            &Standing::of(&g, now),
            Ok(&labelled),
            Some(&digest_only),
        );
        assert_eq!(
            next_of(&g, &v, now).unwrap().requires.as_deref(),
            Some("none")
        );
        assert_eq!(Verdict::unreadable("x").requires, None);
    }

    #[test]
    fn an_unreadable_grant_is_invalid_and_loses_its_registries() {
        let now = ts(NOW);
        let mut g = grant(&[], None);
        g.status = next_of(&g, &verdict(ReadyReason::Applied, "m"), now);
        let v = Verdict::unreadable("spec.expiresAt: bad");
        assert_eq!(v.reason, ReadyReason::Invalid);
        assert_eq!(
            v.message,
            "this grant cannot be read, so it grants nothing: spec.expiresAt: bad; fix it or \
             delete it"
        );
        let status = next_of(&g, &v, now).unwrap();
        assert_eq!(status.registries, None);
        assert_eq!(status.conditions[0].reason, "Invalid");
        let event = v.event(g.ready_condition()).unwrap();
        assert_eq!(
            (event.reason.as_str(), event.type_),
            ("Invalid", EventType::Warning)
        );
        g.status = Some(status);
        assert_eq!(next_of(&g, &v, now), None, "reported once");
    }

    #[test]
    fn status_is_written_only_when_it_changes() {
        let t0 = ts("2026-06-01T12:00:00Z");
        let t1 = ts("2026-06-01T13:00:00.75Z");
        let mut g = grant(&[], None);

        // First verdict: a new condition at t0, observedGeneration set on both levels.
        let first = next_of(&g, &verdict(ReadyReason::NamespaceNotFound, "m1"), t0).unwrap();
        assert_eq!(first.observed_generation, Some(2));
        let c = &first.conditions[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("Ready", "False", "NamespaceNotFound")
        );
        assert_eq!(
            (c.observed_generation, c.last_transition_time.0),
            (Some(2), t0)
        );
        g.status = Some(first);

        // The same verdict later: nothing to write.
        assert_eq!(
            next_of(&g, &verdict(ReadyReason::NamespaceNotFound, "m1"), t1),
            None
        );

        // Another reason with the same status: written, but the transition time stays.
        let expired = next_of(&g, &verdict(ReadyReason::Expired, "m2"), t1).unwrap();
        assert_eq!(expired.conditions[0].reason, "Expired");
        assert_eq!(expired.conditions[0].last_transition_time.0, t0);

        // A new status: the transition time moves, to whole seconds.
        let applied = next_of(&g, &verdict(ReadyReason::Applied, "m3"), t1).unwrap();
        assert_eq!(applied.conditions[0].status, "True");
        assert_eq!(
            applied.conditions[0].last_transition_time.0,
            ts("2026-06-01T13:00:00Z")
        );
        g.status = Some(applied);

        // A new generation with the same verdict: observedGeneration moves, nothing else.
        g.metadata.generation = Some(3);
        let bumped = next_of(&g, &verdict(ReadyReason::Applied, "m3"), t1).unwrap();
        assert_eq!(bumped.observed_generation, Some(3));
        assert_eq!(bumped.conditions[0].observed_generation, Some(3));
        assert_eq!(
            bumped.conditions[0].last_transition_time.0,
            ts("2026-06-01T13:00:00Z")
        );
    }

    #[test]
    fn other_conditions_are_kept() {
        let mut g = grant(&[], None);
        let other = Condition {
            type_: "Reviewed".into(),
            status: "True".into(),
            reason: "ByHuman".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(ts("2025-01-01T00:00:00Z")),
        };
        g.status = Some(ByocGrantStatus {
            observed_generation: None,
            conditions: vec![other.clone()],
            registries: None,
            requires: None,
            namespace_uid: None,
        });
        let status = next_of(&g, &verdict(ReadyReason::Applied, "m"), ts(NOW)).unwrap();
        assert_eq!(status.conditions.len(), 2);
        assert_eq!(status.conditions[0], other);
        assert_eq!(status.conditions[1].type_, "Ready");
    }

    #[test]
    fn events_follow_changes_of_the_condition() {
        let t0 = ts(NOW);
        let mut g = grant(&[], None);
        let applied = verdict(ReadyReason::Applied, "m");
        let event = applied
            .event(g.ready_condition())
            .expect("first verdict is news");
        assert_eq!(
            (event.reason.as_str(), event.type_),
            ("Applied", EventType::Normal)
        );
        g.status = next_of(&g, &applied, t0);
        assert!(
            applied.event(g.ready_condition()).is_none(),
            "same verdict is no news"
        );
        let changed = verdict(ReadyReason::Applied, "other registries");
        assert!(
            changed.event(g.ready_condition()).is_some(),
            "a new message is news"
        );

        let table = [
            (ReadyReason::Expired, "Expired", EventType::Normal),
            (
                ReadyReason::NamespaceNotFound,
                "NamespaceNotFound",
                EventType::Normal,
            ),
            (ReadyReason::Invalid, "Invalid", EventType::Warning),
            (ReadyReason::Error, "Failed", EventType::Warning),
        ];
        for (reason, name, type_) in table {
            let event = verdict(reason, "x").event(g.ready_condition()).unwrap();
            assert_eq!((event.reason.as_str(), event.type_), (name, type_));
        }
        let revoked = revoked_event("tool-a");
        assert_eq!(revoked.reason, "Revoked");
        assert_eq!(
            revoked.note.as_deref(),
            Some("grant deleted; namespace tool-a no longer carries it")
        );
    }

    #[test]
    fn event_notes_fit_the_api() {
        let long = "é".repeat(1000);
        let event = verdict(ReadyReason::Error, &long).event(None).unwrap();
        let note = event.note.unwrap();
        assert!(note.len() <= 1024 && note.len() >= 1022, "{}", note.len());
    }
}

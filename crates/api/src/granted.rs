//! What the grants of one namespace give it, as the controller writes it on the namespace
//! (DESIGN §3, §12): the union of their allowances (the byoc labels) and, for each allowance
//! with requirements, the alternatives of the grants that allow it (the requirements
//! annotation). Pure, so the controller and `kubectl byoc check` compute the same thing.

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::labels::{Allowance, LabelError};
use crate::requirements::{
    ANNOTATION_VERSION, Alternative, AnnotationError, NamespaceRequirements, Requirements,
};
use crate::{ByocGrant, ByocGrantSpec, InvalidGrant};

/// Where one grant stands at an instant, whatever its namespace looks like.
#[derive(Debug, PartialEq)]
pub enum Standing {
    /// Valid and unexpired: its allowance belongs in the namespace labels.
    Active(Allowance),
    /// `expiresAt` has passed (at whole-second precision, as the labels store it).
    Expired(Timestamp),
    /// The spec breaks the CRD's rules; the API server normally refuses such grants.
    Invalid(InvalidGrant),
}

impl Standing {
    /// How `grant` stands at `now`.
    pub fn of(grant: &ByocGrant, now: Timestamp) -> Self {
        let mut allowance = match grant.spec.validate() {
            Ok(allowance) => allowance,
            Err(invalid) => return Self::Invalid(invalid),
        };
        // The labels keep whole seconds: judging expiry the same way keeps status and labels
        // in agreement during the last fraction of a second.
        allowance.retain_active_at(now);
        match grant.expires_at() {
            Some(at) if allowance.is_empty() => Self::Expired(at),
            _ => Self::Active(allowance),
        }
    }
}

/// What a grant requires of the images it admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied<'a> {
    /// Nothing: `requirements: {}` (an explicit opt-out), or none given and no platform
    /// default.
    Nothing,
    /// Its own `spec.requirements`.
    Own(&'a Requirements),
    /// None given: the policy's `defaultGrantRequirements`.
    Default(&'a Requirements),
}

impl<'a> Applied<'a> {
    /// What `spec` requires when the platform default is `default`.
    pub fn of(spec: &'a ByocGrantSpec, default: Option<&'a Requirements>) -> Self {
        match (&spec.requirements, default) {
            (Some(own), _) if !own.is_empty() => Self::Own(own),
            (Some(_), _) => Self::Nothing,
            (None, Some(default)) if !default.is_empty() => Self::Default(default),
            (None, _) => Self::Nothing,
        }
    }

    /// The requirements, unless there are none.
    pub fn requirements(self) -> Option<&'a Requirements> {
        match self {
            Self::Nothing => None,
            Self::Own(r) | Self::Default(r) => Some(r),
        }
    }
}

/// What the grants of one namespace give it at an instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Granted {
    /// The union of the active grants' allowances, each entry with its latest expiry.
    pub allowance: Allowance,
    /// Per allowance key (`any`, or a registry entry in canonical form) that at least one
    /// grant allows with requirements: one alternative per distinct (expiry, requirements) of
    /// the grants that allow it, sorted by their JSON text.
    registries: BTreeMap<String, Vec<Alternative>>,
}

impl Granted {
    /// What `grants`, all counting towards one namespace, give it at `now` when the
    /// platform's default requirements are `default`. Invalid and expired grants give nothing.
    pub fn of<'a>(
        grants: impl IntoIterator<Item = &'a ByocGrant>,
        now: Timestamp,
        default: Option<&Requirements>,
    ) -> Self {
        let mut allowance = Allowance::default();
        let mut registries: BTreeMap<String, Vec<Alternative>> = BTreeMap::new();
        for grant in grants {
            let Standing::Active(active) = Standing::of(grant, now) else {
                continue;
            };
            let requirements = Applied::of(&grant.spec, default).requirements();
            for (registry, expires) in active.parts_at(now) {
                let key = registry.map_or_else(
                    || NamespaceRequirements::ANY.to_owned(),
                    ToString::to_string,
                );
                registries.entry(key).or_default().push(Alternative {
                    expires,
                    requirements: requirements.cloned(),
                });
            }
            allowance.merge(active);
        }
        registries.retain(|_, alternatives| alternatives.iter().any(|a| a.requirements.is_some()));
        for alternatives in registries.values_mut() {
            // One entry per distinct alternative, in the order of their JSON text: the same
            // grants always write the same annotation.
            alternatives.sort_by_cached_key(|a| {
                serde_json::to_string(a).expect("an alternative serializes")
            });
            alternatives.dedup();
        }
        Self {
            allowance,
            registries,
        }
    }

    /// The byoc labels of [`Granted::allowance`] (empty when nothing applies).
    pub fn labels(&self) -> Result<BTreeMap<String, String>, LabelError> {
        self.allowance.to_labels()
    }

    /// The value of the requirements annotation; `None` when no allowance has requirements.
    /// Checked with [`NamespaceRequirements::read`], so what is written is what the webhook
    /// reads.
    pub fn requirements_annotation(&self) -> Result<Option<String>, AnnotationError> {
        if self.registries.is_empty() {
            return Ok(None);
        }
        let text = NamespaceRequirements {
            version: ANNOTATION_VERSION,
            registries: self.registries.clone(),
        }
        .to_annotation();
        NamespaceRequirements::read(&text)?;
        Ok(Some(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BaseImage;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn grant(namespace: &str, registries: &[&str], expires: Option<&str>) -> ByocGrant {
        ByocGrant::new(
            &format!("g-{namespace}-{}", registries.join("-")),
            ByocGrantSpec {
                namespace: namespace.into(),
                reason: "test".into(),
                registries: registries.iter().map(|s| s.to_string()).collect(),
                any_registry: registries.is_empty(),
                namespace_uid: None,
                expires_at: expires.map(|e| Time(ts(e))),
                requirements: None,
            },
        )
    }

    fn requiring(mut g: ByocGrant, requirements: Option<Requirements>) -> ByocGrant {
        g.spec.requirements = requirements;
        g
    }

    fn digest() -> Requirements {
        Requirements {
            require_digest: true,
            ..Requirements::default()
        }
    }

    fn built_on(base: &str) -> Requirements {
        Requirements {
            built_on: vec![BaseImage(base.into())],
            ..Requirements::default()
        }
    }

    const NOW: &str = "2026-06-01T12:00:00Z";

    #[test]
    fn standing_of_a_grant() {
        let now = ts(NOW);
        let active = Standing::of(&grant("a", &["quay.io"], Some("2026-06-01T12:00:01Z")), now);
        assert!(
            matches!(active, Standing::Active(ref a) if !a.is_empty()),
            "{active:?}"
        );
        assert!(matches!(
            Standing::of(&grant("a", &[], None), now),
            Standing::Active(_)
        ));
        assert_eq!(
            Standing::of(&grant("a", &["quay.io"], Some(NOW)), now),
            Standing::Expired(now),
            "an expiry is exclusive"
        );
        // Labels keep whole seconds: 12:00:00.5 is over at 12:00:00.2 already.
        let fraction = ts("2026-06-01T12:00:00.5Z");
        assert_eq!(
            Standing::of(
                &grant("a", &["quay.io"], Some("2026-06-01T12:00:00.5Z")),
                ts("2026-06-01T12:00:00.2Z")
            ),
            Standing::Expired(fraction)
        );
        let invalid = Standing::of(&grant("a", &["not a registry"], None), now);
        assert!(
            matches!(invalid, Standing::Invalid(InvalidGrant::Registry(_))),
            "{invalid:?}"
        );
        let bad_ns = Standing::of(&grant("Tool_A", &[], None), now);
        assert!(
            matches!(bad_ns, Standing::Invalid(InvalidGrant::Namespace(_))),
            "{bad_ns:?}"
        );
    }

    #[test]
    fn what_a_grant_requires() {
        let g = |r| requiring(grant("a", &["quay.io"], None), r);
        let (own, default) = (digest(), built_on("quay.io/base/run"));
        let cases = [
            (g(None), None, Applied::Nothing),
            (g(None), Some(&default), Applied::Default(&default)),
            (g(Some(own.clone())), Some(&default), Applied::Own(&own)),
            (g(Some(own.clone())), None, Applied::Own(&own)),
            // `requirements: {}` opts out of the default.
            (
                g(Some(Requirements::default())),
                Some(&default),
                Applied::Nothing,
            ),
            // An empty default is no default.
            (g(None), Some(&Requirements::default()), Applied::Nothing),
        ];
        for (grant, default, want) in cases {
            assert_eq!(Applied::of(&grant.spec, default), want, "{:?}", grant.spec);
        }
    }

    #[test]
    fn the_annotation_lists_every_alternative_of_allowances_with_requirements() {
        let quay = |name: &str, r, expires| {
            let mut g = requiring(grant("a", &["quay.io"], expires), r);
            g.metadata.name = Some(name.into());
            g
        };
        let base = built_on("quay.io/base/run");
        // (what, grants, default, the annotation's registries)
        type Case = (
            &'static str,
            Vec<ByocGrant>,
            Option<Requirements>,
            Option<serde_json::Value>,
        );
        let cases: Vec<Case> = vec![
            (
                "no requirements anywhere: no annotation",
                vec![quay("g1", None, None), grant("a", &[], None)],
                None,
                None,
            ),
            (
                "one grant with requirements",
                vec![quay("g1", Some(digest()), None)],
                None,
                Some(
                    json!({ "quay.io": [{ "expires": "never", "requirements": { "requireDigest": true } }] }),
                ),
            ),
            (
                "a second grant without requirements is listed: the allowance is unconditional",
                vec![
                    quay("g1", Some(digest()), None),
                    quay("g2", None, Some("2027-01-01T00:00:00Z")),
                ],
                None,
                Some(json!({ "quay.io": [
                    { "expires": "20270101T000000Z" },
                    { "expires": "never", "requirements": { "requireDigest": true } },
                ] })),
            ),
            (
                "only allowances with requirements get a key; equal alternatives are one",
                vec![
                    quay("g1", Some(digest()), None),
                    quay("g2", Some(digest()), None),
                    grant("a", &["ghcr.io"], None),
                ],
                None,
                Some(
                    json!({ "quay.io": [{ "expires": "never", "requirements": { "requireDigest": true } }] }),
                ),
            ),
            (
                "the default applies to a grant without requirements, also for any registry",
                vec![grant("a", &[], None)],
                Some(base.clone()),
                Some(
                    json!({ "any": [{ "expires": "never", "requirements": { "builtOn": ["quay.io/base/run"] } }] }),
                ),
            ),
            (
                "and not to one with requirements: {}",
                vec![quay("g1", Some(Requirements::default()), None)],
                Some(base.clone()),
                None,
            ),
            (
                "an opted-out grant beside a defaulted one",
                vec![
                    quay("g1", Some(Requirements::default()), None),
                    quay("g2", None, None),
                ],
                Some(base.clone()),
                Some(json!({ "quay.io": [
                    { "expires": "never", "requirements": { "builtOn": ["quay.io/base/run"] } },
                    { "expires": "never" },
                ] })),
            ),
            (
                "expired and invalid grants do not count",
                vec![
                    quay("g1", Some(digest()), Some("2026-01-01T00:00:00Z")),
                    requiring(grant("a", &["not a registry"], None), Some(digest())),
                ],
                None,
                None,
            ),
        ];
        for (what, grants, default, want) in cases {
            let got = Granted::of(&grants, ts(NOW), default.as_ref());
            let annotation = got.requirements_annotation().unwrap().map(|text| {
                let read = NamespaceRequirements::read(&text).expect("the webhook reads it");
                assert_eq!(read.version, ANNOTATION_VERSION);
                json!(read.registries)
            });
            assert_eq!(annotation, want, "{what}");
        }
    }
}

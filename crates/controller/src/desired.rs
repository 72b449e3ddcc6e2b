//! What the cluster should look like: pure functions of the grants, the namespace and the
//! clock. Nothing here talks to the API server.

use std::collections::BTreeMap;

use byoc_api::labels::{self, Allowance, LabelError, REQUIREMENTS_ANNOTATION};
use byoc_api::requirements::{
    ANNOTATION_VERSION, Alternative, AnnotationError, NamespaceRequirements, Requirements,
};
use byoc_api::{ByocGrant, ByocGrantSpec, InvalidGrant};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use crate::binding::{self, Binding};

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
        // The labels keep whole seconds; judging expiry the same way keeps status and labels
        // in agreement during the last fraction of a second.
        allowance.retain_active_at(now);
        match grant.expires_at() {
            Some(at) if allowance.is_empty() => Self::Expired(at),
            _ => Self::Active(allowance),
        }
    }
}

/// What was found when the namespace's labels were brought in line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceState {
    /// The namespace does not exist.
    Missing,
    /// The namespace is being deleted; its labels are left alone.
    Terminating,
    /// The namespace, with this UID (`None`: its metadata did not read), carries exactly the
    /// desired labels.
    Labelled {
        /// `metadata.uid`.
        uid: Option<String>,
    },
}

/// Whether `grant` counts towards the labels of namespace `name` with UID `uid`: it targets
/// it, is not being deleted, and is bound to that namespace or not bound yet ([`binding`]).
pub fn counts_towards(grant: &ByocGrant, name: &str, uid: Option<&str>) -> bool {
    grant.spec.namespace == name
        && grant.metadata.deletion_timestamp.is_none()
        && matches!(binding::of(grant, uid), Binding::Apply(_))
}

/// What the controller writes on a namespace: its labels under [`labels::PREFIX`] and the
/// [`REQUIREMENTS_ANNOTATION`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// The labels under the prefix.
    pub labels: BTreeMap<String, String>,
    /// The annotation's value; `None` when no allowance has requirements (it is removed).
    pub requirements: Option<String>,
}

/// Why the desired state of a namespace cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    /// An entry does not fit in a label name.
    #[error(transparent)]
    Label(#[from] LabelError),
    /// The requirements do not fit in the annotation the webhook reads.
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
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

/// What namespace `name` with UID `uid` should carry at `now`, given the platform's default
/// requirements `default`:
///
/// - labels: the union of its active grants bound to it, each entry with its latest expiry
///   (empty when nothing applies);
/// - the requirements annotation: for every allowance (`any` or a registry entry in canonical
///   form) that at least one of those grants allows with requirements, one alternative per
///   distinct (expiry, requirements) of the grants that allow it, `requirements` absent for a
///   grant without any; `None` when no allowance has requirements. The result is checked with
///   [`NamespaceRequirements::read`], so what is written is what the webhook reads.
pub fn desired<'a>(
    grants: impl IntoIterator<Item = &'a ByocGrant>,
    name: &str,
    uid: Option<&str>,
    now: Timestamp,
    default: Option<&Requirements>,
) -> Result<Desired, DesiredError> {
    let mut union = Allowance::default();
    let mut registries: BTreeMap<String, Vec<Alternative>> = BTreeMap::new();
    for grant in grants.into_iter().filter(|g| counts_towards(g, name, uid)) {
        let Standing::Active(allowance) = Standing::of(grant, now) else {
            continue;
        };
        let requirements = Applied::of(&grant.spec, default).requirements();
        for (registry, expires) in allowance.parts_at(now) {
            let key = registry.map_or_else(
                || NamespaceRequirements::ANY.to_owned(),
                ToString::to_string,
            );
            registries.entry(key).or_default().push(Alternative {
                expires,
                requirements: requirements.cloned(),
            });
        }
        union.merge(allowance);
    }
    registries.retain(|_, alternatives| alternatives.iter().any(|a| a.requirements.is_some()));
    for alternatives in registries.values_mut() {
        // One entry per distinct alternative, in the order of their JSON text: the same grants
        // always write the same annotation.
        alternatives
            .sort_by_cached_key(|a| serde_json::to_string(a).expect("an alternative serializes"));
        alternatives.dedup();
    }
    let requirements = if registries.is_empty() {
        None
    } else {
        let text = NamespaceRequirements {
            version: ANNOTATION_VERSION,
            registries,
        }
        .to_annotation();
        NamespaceRequirements::read(&text)?;
        Some(text)
    };
    Ok(Desired {
        labels: union.to_labels()?,
        requirements,
    })
}

/// The value of the requirements annotation of a namespace with `metadata`, if any.
fn current_requirements(metadata: &ObjectMeta) -> Option<&str> {
    metadata
        .annotations
        .as_ref()?
        .get(REQUIREMENTS_ANNOTATION)
        .map(String::as_str)
}

/// Whether the namespace with `metadata` carries exactly `desired`: the labels under the
/// prefix, and the requirements annotation (absent when none is desired). An annotation that
/// does not read, or was written by someone else, is simply out of sync.
pub fn in_sync(metadata: &ObjectMeta, desired: &Desired) -> bool {
    let current = metadata.labels.as_ref();
    let owned = current.map(labels::owned_labels).unwrap_or_default();
    owned.len() == desired.labels.len()
        && desired
            .labels
            .iter()
            .all(|(k, v)| owned.get(k.as_str()) == Some(&v.as_str()))
        && current_requirements(metadata) == desired.requirements.as_deref()
}

/// The keys under the prefix in `current` that `desired` does not have: labels granted before,
/// or put there by someone else, that must go.
pub fn foreign_keys(
    current: Option<&BTreeMap<String, String>>,
    desired: &BTreeMap<String, String>,
) -> Vec<String> {
    current
        .into_iter()
        .flat_map(BTreeMap::keys)
        .filter(|k| labels::is_owned_key(k) && !desired.contains_key(*k))
        .cloned()
        .collect()
}

/// The JSON merge patch that turns a namespace with `metadata` into one carrying `desired`: it
/// sets every desired label and deletes (`null`) each of [`foreign_keys`], and sets the
/// requirements annotation, or deletes it when none is desired (naming it only when it
/// differs). It names only keys under the prefix, so it can neither touch nor depend on
/// anything else: unlike server-side apply, whose removals follow `managedFields` that any
/// writer of the namespace can rewrite (a tenant who made the controller's entry own one of
/// its own labels would make every apply remove that label, which the label guard refuses,
/// so a revoke would never land). With the `uid` the labels were computed for, the API server
/// refuses the patch if the namespace of that name is another one by now (deleted and created
/// again).
pub fn label_patch(uid: Option<&str>, metadata: &ObjectMeta, desired: &Desired) -> Value {
    let mut labels: serde_json::Map<String, Value> =
        foreign_keys(metadata.labels.as_ref(), &desired.labels)
            .into_iter()
            .map(|k| (k, Value::Null))
            .collect();
    labels.extend(desired.labels.iter().map(|(k, v)| (k.clone(), json!(v))));
    let mut patch = json!({ "labels": labels });
    if current_requirements(metadata) != desired.requirements.as_deref() {
        patch["annotations"] = json!({ REQUIREMENTS_ANNOTATION: desired.requirements });
    }
    if let Some(uid) = uid {
        patch["uid"] = json!(uid);
    }
    json!({ "metadata": patch })
}

#[cfg(test)]
mod tests {
    use super::*;
    use byoc_api::ByocGrantSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

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

    fn deleting(mut g: ByocGrant) -> ByocGrant {
        g.metadata.deletion_timestamp = Some(Time(ts("2026-01-01T00:00:00Z")));
        g
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const NOW: &str = "2026-06-01T12:00:00Z";

    type Pairs = &'static [(&'static str, &'static str)];

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
    fn desired_labels_are_the_union_of_active_grants() {
        let cases: Vec<(&str, Vec<ByocGrant>, Pairs)> = vec![
            ("no grants", vec![], &[]),
            (
                "one grant, any registry",
                vec![grant("a", &[], None)],
                &[(labels::ANY_KEY, "never")],
            ),
            (
                "two grants unite, the later expiry wins",
                vec![
                    grant("a", &["quay.io"], Some("2027-01-01T00:00:00Z")),
                    grant(
                        "a",
                        &["quay.io", "ghcr.io/wikimedia"],
                        Some("2028-01-01T00:00:00Z"),
                    ),
                ],
                &[
                    ("byoc.toolforge.org/ghcr.io_wikimedia", "20280101T000000Z"),
                    ("byoc.toolforge.org/quay.io", "20280101T000000Z"),
                ],
            ),
            (
                "other namespaces do not count",
                vec![
                    grant("b", &["quay.io"], None),
                    grant("a", &["ghcr.io"], None),
                ],
                &[("byoc.toolforge.org/ghcr.io", "never")],
            ),
            (
                "expired grants do not count",
                vec![
                    grant("a", &["quay.io"], Some("2026-01-01T00:00:00Z")),
                    grant("a", &["ghcr.io"], Some("2027-01-01T00:00:00Z")),
                ],
                &[("byoc.toolforge.org/ghcr.io", "20270101T000000Z")],
            ),
            (
                "grants being deleted do not count",
                vec![
                    deleting(grant("a", &["quay.io"], None)),
                    grant("a", &["ghcr.io"], None),
                ],
                &[("byoc.toolforge.org/ghcr.io", "never")],
            ),
            (
                "invalid grants do not count",
                vec![
                    grant("a", &["not a registry"], None),
                    grant("a", &["ghcr.io"], None),
                ],
                &[("byoc.toolforge.org/ghcr.io", "never")],
            ),
            (
                "only expired grants: nothing",
                vec![grant("a", &[], Some(NOW))],
                &[],
            ),
            (
                "grants bound to another namespace of that name do not count",
                vec![
                    bound(grant("a", &["quay.io"], None), "uid-old"),
                    bound(grant("a", &["ghcr.io"], None), "uid-a"),
                ],
                &[("byoc.toolforge.org/ghcr.io", "never")],
            ),
            (
                "a renewed grant counts",
                vec![{
                    let mut g = bound(grant("a", &["quay.io"], None), "uid-old");
                    g.spec.namespace_uid = Some("uid-a".into());
                    g
                }],
                &[("byoc.toolforge.org/quay.io", "never")],
            ),
        ];
        for (what, grants, want) in cases {
            let got = desired(&grants, "a", Some("uid-a"), ts(NOW), None).unwrap();
            assert_eq!(got.labels, map(want), "{what}");
            assert_eq!(got.requirements, None, "{what}");
        }
        // A namespace whose UID did not read gets nothing.
        let any = [grant("a", &[], None)];
        assert_eq!(
            desired(&any, "a", None, ts(NOW), None).unwrap(),
            Desired::default()
        );
    }

    /// `g` with `status.namespaceUID` `uid`, as once applied to that namespace.
    fn bound(mut g: ByocGrant, uid: &str) -> ByocGrant {
        g.status = Some(byoc_api::ByocGrantStatus {
            namespace_uid: Some(uid.into()),
            ..Default::default()
        });
        g
    }

    #[test]
    fn sync_checks_only_the_prefix() {
        let desired = map(&[("byoc.toolforge.org/quay.io", "never")]);
        type Case = (&'static str, Pairs, bool, &'static [&'static str]);
        let cases: &[Case] = &[
            (
                "exact",
                &[("byoc.toolforge.org/quay.io", "never")],
                true,
                &[],
            ),
            (
                "other labels are not ours",
                &[
                    ("byoc.toolforge.org/quay.io", "never"),
                    ("team", "x"),
                    ("byoc.toolforge.org.x/y", "z"),
                ],
                true,
                &[],
            ),
            ("missing", &[("team", "x")], false, &[]),
            (
                "wrong value",
                &[("byoc.toolforge.org/quay.io", "20260101T000000Z")],
                false,
                &[],
            ),
            (
                "added by hand",
                &[
                    ("byoc.toolforge.org/quay.io", "never"),
                    ("byoc.toolforge.org/any", "never"),
                ],
                false,
                &["byoc.toolforge.org/any"],
            ),
        ];
        let desired = Desired {
            labels: desired,
            requirements: None,
        };
        for (what, current, synced, foreign) in cases {
            let current = meta(current, None);
            assert_eq!(in_sync(&current, &desired), *synced, "{what}");
            assert_eq!(
                foreign_keys(current.labels.as_ref(), &desired.labels),
                *foreign,
                "{what}"
            );
        }
        assert!(in_sync(&meta(&[("team", "x")], None), &Desired::default()));
        assert!(!in_sync(
            &meta(&[("byoc.toolforge.org/any", "never")], None),
            &Desired::default()
        ));
        assert!(in_sync(&ObjectMeta::default(), &Desired::default()));
        // The annotation counts too: missing, different, unreadable or left over.
        let with = |text: &str| Desired {
            requirements: Some(text.to_owned()),
            ..Desired::default()
        };
        assert!(in_sync(&meta(&[], Some("{}")), &with("{}")));
        assert!(!in_sync(&meta(&[], None), &with("{}")));
        assert!(!in_sync(&meta(&[], Some("not json")), &with("{}")));
        assert!(!in_sync(&meta(&[], Some("{}")), &Desired::default()));
        // Other annotations are not ours.
        let mut other = meta(&[], None);
        other.annotations = Some(map(&[("team", "x")]));
        assert!(in_sync(&other, &Desired::default()));
    }

    /// Metadata with `labels` and, if given, the requirements annotation.
    fn meta(labels: &[(&str, &str)], requirements: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            labels: Some(map(labels)),
            annotations: requirements.map(|r| map(&[(REQUIREMENTS_ANNOTATION, r)])),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn patch_bodies() {
        let quay = ("byoc.toolforge.org/quay.io", "never");
        // (what, current labels, desired, the patch's labels)
        let cases = [
            (
                "first grant",
                map(&[("team", "a")]),
                map(&[quay]),
                json!({ quay.0: quay.1 }),
            ),
            (
                "a revoke deletes, and names nothing outside the prefix",
                map(&[quay, ("team", "a")]),
                map(&[]),
                json!({ quay.0: null }),
            ),
            (
                "a changed expiry and a hand-made label",
                map(&[
                    ("byoc.toolforge.org/quay.io", "20300101T000000Z"),
                    ("byoc.toolforge.org/evil.example.org", "never"),
                ]),
                map(&[quay]),
                json!({ quay.0: quay.1, "byoc.toolforge.org/evil.example.org": null }),
            ),
            (
                "nothing either way",
                map(&[("team", "a")]),
                map(&[]),
                json!({}),
            ),
        ];
        let only = |labels: BTreeMap<String, String>| Desired {
            labels,
            requirements: None,
        };
        for (what, current, desired, labels) in cases {
            let current = ObjectMeta {
                labels: Some(current),
                ..ObjectMeta::default()
            };
            assert_eq!(
                label_patch(None, &current, &only(desired)),
                json!({ "metadata": { "labels": labels } }),
                "{what}"
            );
        }
        assert_eq!(
            label_patch(Some("uid-a"), &ObjectMeta::default(), &only(map(&[quay]))),
            json!({ "metadata": { "uid": "uid-a", "labels": { quay.0: quay.1 } } })
        );
        // The annotation is named only when it changes: set, or removed with null.
        let required = Desired {
            labels: map(&[quay]),
            requirements: Some("R".into()),
        };
        let key = REQUIREMENTS_ANNOTATION;
        let cases = [
            (meta(&[quay], None), &required, json!({ key: "R" })),
            (meta(&[quay], Some("old")), &required, json!({ key: "R" })),
            (meta(&[quay], Some("R")), &required, Value::Null),
            (
                meta(&[quay], Some("R")),
                &only(map(&[quay])),
                json!({ key: null }),
            ),
        ];
        for (current, desired, annotations) in cases {
            let patch = label_patch(None, &current, desired);
            assert_eq!(patch["metadata"]["annotations"], annotations, "{current:?}");
            assert_eq!(patch["metadata"]["labels"], json!({ quay.0: quay.1 }));
        }
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
            built_on: vec![byoc_api::BaseImage(base.into())],
            ..Requirements::default()
        }
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
            Option<Value>,
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
                "expired, invalid and other namespaces' grants do not count",
                vec![
                    quay("g1", Some(digest()), Some("2026-01-01T00:00:00Z")),
                    requiring(grant("b", &["quay.io"], None), Some(digest())),
                    requiring(grant("a", &["not a registry"], None), Some(digest())),
                ],
                None,
                None,
            ),
        ];
        for (what, grants, default, want) in cases {
            let got = desired(&grants, "a", Some("uid-a"), ts(NOW), default.as_ref()).unwrap();
            let annotation = got.requirements.as_deref().map(|text| {
                let read = NamespaceRequirements::read(text).expect("the webhook reads it");
                assert_eq!(read.version, ANNOTATION_VERSION);
                json!(read.registries)
            });
            assert_eq!(annotation, want, "{what}");
        }
    }

    #[test]
    fn requirements_that_do_not_fit_are_an_error() {
        // More alternatives for one registry than the webhook reads: nothing is written.
        let grants: Vec<ByocGrant> = (0..=byoc_api::requirements::MAX_ANNOTATION_ENTRIES)
            .map(|i| {
                let expires = format!("2030-01-01T00:{:02}:{:02}Z", i / 60, i % 60);
                requiring(grant("a", &["quay.io"], Some(&expires)), Some(digest()))
            })
            .collect();
        let error = desired(&grants, "a", Some("uid-a"), ts(NOW), None).unwrap_err();
        assert!(matches!(error, DesiredError::Annotation(_)), "{error}");
    }
}

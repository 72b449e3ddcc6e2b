//! What the cluster should look like: pure functions of the grants, the namespace and the
//! clock. Nothing here talks to the API server.

use std::collections::BTreeMap;

use byoc_api::ByocGrant;
use byoc_api::granted::Granted;
use byoc_api::labels::{self, LabelError, REQUIREMENTS_ANNOTATION};
use byoc_api::requirements::{AnnotationError, Requirements};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use crate::binding::{self, Binding};

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

/// What namespace `name` with UID `uid` should carry at `now`, given the platform's default
/// requirements `default`: what the grants that count towards it ([`counts_towards`]) give
/// it ([`Granted::of`]):
///
/// - labels: the union of those that are active, each entry with its latest expiry (empty
///   when nothing applies);
/// - the requirements annotation ([`Granted::requirements_annotation`]): for every allowance
///   that at least one of them allows with requirements, one alternative per distinct
///   (expiry, requirements) of the grants that allow it; `None` when no allowance has
///   requirements. Checked as the webhook reads it.
pub fn desired<'a>(
    grants: impl IntoIterator<Item = &'a ByocGrant>,
    name: &str,
    uid: Option<&str>,
    now: Timestamp,
    default: Option<&Requirements>,
) -> Result<Desired, DesiredError> {
    let counted = grants.into_iter().filter(|g| counts_towards(g, name, uid));
    let granted = Granted::of(counted, now, default);
    Ok(Desired {
        labels: granted.labels()?,
        requirements: granted.requirements_annotation()?,
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
    use crate::fixtures::{self, ts};
    use byoc_api::requirements::NamespaceRequirements;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    /// A grant named after what it grants ([`fixtures::grant`]).
    fn grant(namespace: &str, registries: &[&str], expires: Option<&str>) -> ByocGrant {
        let name = format!("g-{namespace}-{}", registries.join("-"));
        fixtures::grant(&name, namespace, registries, expires)
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
    fn the_annotation_is_that_of_the_grants_that_count() {
        // The table of what the annotation says is byoc_api::granted's; here only which
        // grants count: other namespaces', deleted and unbound ones do not.
        let quay = |ns: &str| requiring(grant(ns, &["quay.io"], None), Some(digest()));
        let want = json!({ "quay.io": [{ "expires": "never", "requirements": { "requireDigest": true } }] });
        let base = built_on("quay.io/base/run");
        let cases = [
            ("its own grant", quay("a"), true),
            ("another namespace's", quay("b"), false),
            ("being deleted", deleting(quay("a")), false),
            ("bound elsewhere", bound(quay("a"), "uid-old"), false),
        ];
        for (what, grant, counts) in cases {
            let grants = [grant];
            let got = desired(&grants, "a", Some("uid-a"), ts(NOW), None).unwrap();
            let annotation = got.requirements.as_deref().map(|text| {
                json!(
                    NamespaceRequirements::read(text)
                        .expect("the webhook reads it")
                        .registries
                )
            });
            assert_eq!(annotation, counts.then(|| want.clone()), "{what}");
        }
        // The platform default applies through desired() too.
        let got = desired(
            &[grant("a", &[], None)],
            "a",
            Some("uid-a"),
            ts(NOW),
            Some(&base),
        )
        .unwrap();
        assert!(
            got.requirements
                .is_some_and(|t| t.contains("quay.io/base/run"))
        );
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

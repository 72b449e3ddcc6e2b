//! What the cluster should look like: pure functions of the grants, the namespace and the
//! clock. Nothing here talks to the API server.

use std::collections::BTreeMap;

use byoc_api::labels::{self, Allowance, LabelError};
use byoc_api::{ByocGrant, InvalidGrant};
use jiff::Timestamp;
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

/// The labels under [`labels::PREFIX`] that namespace `name` with UID `uid` should carry at
/// `now`: the union of its active grants bound to it, each entry with its latest expiry. Empty
/// when nothing applies.
pub fn desired_labels<'a>(
    grants: impl IntoIterator<Item = &'a ByocGrant>,
    name: &str,
    uid: Option<&str>,
    now: Timestamp,
) -> Result<BTreeMap<String, String>, LabelError> {
    let mut union = Allowance::default();
    for grant in grants.into_iter().filter(|g| counts_towards(g, name, uid)) {
        if let Standing::Active(allowance) = Standing::of(grant, now) {
            union.merge(allowance);
        }
    }
    union.to_labels()
}

/// Whether the labels under the prefix in `current` are exactly `desired`.
pub fn in_sync(current: &BTreeMap<String, String>, desired: &BTreeMap<String, String>) -> bool {
    let owned = labels::owned_labels(current);
    owned.len() == desired.len()
        && desired
            .iter()
            .all(|(k, v)| owned.get(k.as_str()) == Some(&v.as_str()))
}

/// The keys under the prefix in `current` that `desired` does not have: labels granted before,
/// or put there by someone else, that must go.
pub fn foreign_keys(
    current: &BTreeMap<String, String>,
    desired: &BTreeMap<String, String>,
) -> Vec<String> {
    current
        .keys()
        .filter(|k| labels::is_owned_key(k) && !desired.contains_key(*k))
        .cloned()
        .collect()
}

/// The JSON merge patch that turns the labels under the prefix of a namespace now carrying
/// `current` into `desired`: it sets every desired label and deletes (`null`) each of
/// [`foreign_keys`]. It names only keys under the prefix, so it can neither touch nor depend
/// on anything else: unlike server-side apply, whose removals follow `managedFields` that any
/// writer of the namespace can rewrite (a tenant who made the controller's entry own one of
/// its own labels would make every apply remove that label, which the label guard refuses,
/// so a revoke would never land). With the `uid` the labels were computed for, the API server
/// refuses the patch if the namespace of that name is another one by now (deleted and created
/// again).
pub fn label_patch(
    uid: Option<&str>,
    current: &BTreeMap<String, String>,
    desired: &BTreeMap<String, String>,
) -> Value {
    let mut labels: serde_json::Map<String, Value> = foreign_keys(current, desired)
        .into_iter()
        .map(|k| (k, Value::Null))
        .collect();
    labels.extend(desired.iter().map(|(k, v)| (k.clone(), json!(v))));
    let mut metadata = json!({ "labels": labels });
    if let Some(uid) = uid {
        metadata["uid"] = json!(uid);
    }
    json!({ "metadata": metadata })
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
            let got = desired_labels(&grants, "a", Some("uid-a"), ts(NOW)).unwrap();
            assert_eq!(got, map(want), "{what}");
        }
        // A namespace whose UID did not read gets nothing.
        let any = [grant("a", &[], None)];
        assert_eq!(desired_labels(&any, "a", None, ts(NOW)).unwrap(), map(&[]));
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
        for (what, current, synced, foreign) in cases {
            let current = map(current);
            assert_eq!(in_sync(&current, &desired), *synced, "{what}");
            assert_eq!(foreign_keys(&current, &desired), *foreign, "{what}");
        }
        assert!(in_sync(&map(&[("team", "x")]), &BTreeMap::new()));
        assert!(!in_sync(
            &map(&[("byoc.toolforge.org/any", "never")]),
            &BTreeMap::new()
        ));
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
        for (what, current, desired, labels) in cases {
            assert_eq!(
                label_patch(None, &current, &desired),
                json!({ "metadata": { "labels": labels } }),
                "{what}"
            );
        }
        assert_eq!(
            label_patch(Some("uid-a"), &map(&[]), &map(&[quay])),
            json!({ "metadata": { "uid": "uid-a", "labels": { quay.0: quay.1 } } })
        );
    }
}

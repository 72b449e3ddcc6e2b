//! Where each pod-bearing kind keeps its pod spec, and the images in it: those of its
//! containers and those of its image volumes (`volumes[].image.reference`, the ImageVolume
//! feature), which the kubelet pulls exactly like a container image.

use std::collections::HashSet;
use std::fmt;
use std::hash::Hash;

use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

/// Which list of a pod spec an image is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ContainerKind {
    /// `spec.containers`
    Container,
    /// `spec.initContainers`
    InitContainer,
    /// `spec.ephemeralContainers` (`kubectl debug`)
    EphemeralContainer,
    /// `spec.volumes` with an `image` source (the ImageVolume feature)
    ImageVolume,
}

impl fmt::Display for ContainerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Container => "container",
            Self::InitContainer => "initContainer",
            Self::EphemeralContainer => "ephemeralContainer",
            Self::ImageVolume => "volume",
        })
    }
}

/// One container or image volume of a pod spec and its image.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Container {
    /// Which list it is in.
    pub kind: ContainerKind,
    /// Its name (the volume's, for an image volume).
    pub name: String,
    /// Its image (an image volume's `image.reference`); absent in workload templates that leave
    /// it to be filled in later.
    pub image: Option<String>,
}

/// The kinds the policy evaluates, with where their pod spec lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodBearing {
    /// `spec`
    Pod,
    /// `template.spec`
    PodTemplate,
    /// `spec.template.spec`: Deployment, ReplicaSet, StatefulSet, DaemonSet, Job,
    /// ReplicationController
    Workload,
    /// `spec.jobTemplate.spec.template.spec`
    CronJob,
}

impl PodBearing {
    /// The kind for an API group and kind name, if it carries a pod spec.
    pub fn of(group: &str, kind: &str) -> Option<Self> {
        match (group, kind) {
            ("", "Pod") => Some(Self::Pod),
            ("", "PodTemplate") => Some(Self::PodTemplate),
            ("", "ReplicationController")
            | ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
            | ("batch", "Job") => Some(Self::Workload),
            ("batch", "CronJob") => Some(Self::CronJob),
            _ => None,
        }
    }

    /// The path from the object root to its pod spec.
    fn pod_spec_path(self) -> &'static [&'static str] {
        match self {
            Self::Pod => &["spec"],
            Self::PodTemplate => &["template", "spec"],
            Self::Workload => &["spec", "template", "spec"],
            Self::CronJob => &["spec", "jobTemplate", "spec", "template", "spec"],
        }
    }

    /// The containers and image volumes of `object` (a whole Kubernetes object as JSON), in
    /// that order. A missing pod spec has none; a pod spec of the wrong shape is an error.
    pub fn containers(self, object: &Value) -> Result<Vec<Container>, ShapeError> {
        let mut at = object;
        for (i, key) in self.pod_spec_path().iter().enumerate() {
            match at.get(key) {
                Some(Value::Null) | None => return Ok(Vec::new()),
                Some(v @ Value::Object(_)) => at = v,
                Some(_) => {
                    return Err(ShapeError(format!(
                        ".{} is not an object",
                        self.pod_spec_path()[..=i].join(".")
                    )));
                }
            }
        }
        let spec = PodSpecImages::deserialize(at)
            .map_err(|e| ShapeError(format!(".{}: {e}", self.pod_spec_path().join("."))))?;
        let lists = [
            (ContainerKind::Container, spec.containers),
            (ContainerKind::InitContainer, spec.init_containers),
            (ContainerKind::EphemeralContainer, spec.ephemeral_containers),
        ];
        let volumes = spec.volumes.into_iter().filter_map(|v| {
            v.image.map(|image| Container {
                kind: ContainerKind::ImageVolume,
                name: v.name,
                image: image.reference,
            })
        });
        Ok(lists
            .into_iter()
            .flat_map(|(kind, list)| {
                list.into_iter().map(move |c| Container {
                    kind,
                    name: c.name,
                    image: c.image,
                })
            })
            .chain(volumes)
            .collect())
    }
}

/// A pod spec whose container lists do not have the shape Kubernetes defines.
#[derive(Clone, Debug, Error, PartialEq)]
#[error("malformed pod spec: {0}")]
pub struct ShapeError(pub(crate) String);

/// The part of a pod spec the policy reads; everything else is skipped unparsed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpecImages {
    #[serde(default, deserialize_with = "null_as_empty")]
    containers: Vec<ContainerImage>,
    #[serde(default, deserialize_with = "null_as_empty")]
    init_containers: Vec<ContainerImage>,
    #[serde(default, deserialize_with = "null_as_empty")]
    ephemeral_containers: Vec<ContainerImage>,
    #[serde(default, deserialize_with = "null_as_empty")]
    volumes: Vec<Volume>,
}

#[derive(Deserialize)]
struct ContainerImage {
    #[serde(default)]
    name: String,
    #[serde(default)]
    image: Option<String>,
}

/// A volume; only one with an `image` source has anything to check.
#[derive(Deserialize)]
struct Volume {
    #[serde(default)]
    name: String,
    #[serde(default)]
    image: Option<ImageVolumeSource>,
}

#[derive(Deserialize)]
struct ImageVolumeSource {
    #[serde(default)]
    reference: Option<String>,
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// The items of `new` that `old` does not hold, in order. Linear in both: `old` goes into a hash
/// set, so an UPDATE of an object with thousands of containers costs thousands of lookups, not
/// millions of comparisons.
pub fn not_in<'a, T: Eq + Hash>(new: &'a [T], old: &[T]) -> Vec<&'a T> {
    let old: HashSet<&T> = old.iter().collect();
    new.iter().filter(|item| !old.contains(item)).collect()
}

/// The API group of an `apiVersion` (`apps/v1` → `apps`, `v1` → ``).
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn images(kind: PodBearing, object: Value) -> Vec<(ContainerKind, String, Option<String>)> {
        kind.containers(&object)
            .unwrap()
            .into_iter()
            .map(|c| (c.kind, c.name, c.image))
            .collect()
    }

    /// An item that counts how often it is compared, to bound the work of [`not_in`] without
    /// timing it.
    #[derive(Debug)]
    struct Counted(u32);

    thread_local! {
        static COMPARISONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    impl PartialEq for Counted {
        fn eq(&self, other: &Self) -> bool {
            COMPARISONS.set(COMPARISONS.get() + 1);
            self.0 == other.0
        }
    }

    impl Eq for Counted {}

    impl Hash for Counted {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            self.0.hash(state);
        }
    }

    #[test]
    fn not_in_is_linear() {
        const N: u32 = 10_000;
        // Every other item is kept from the old list; the rest are new, so both found and not
        // found lookups are exercised. A pairwise scan would compare about N * N / 2 times.
        let old: Vec<Counted> = (0..N).map(Counted).collect();
        let new: Vec<Counted> = (0..N)
            .map(|i| Counted(if i % 2 == 0 { i } else { N + i }))
            .collect();
        COMPARISONS.set(0);
        let added = not_in(&new, &old);
        let comparisons = COMPARISONS.get();
        assert_eq!(added.len(), (N / 2) as usize);
        assert!(added.iter().all(|c| c.0 >= N), "{added:?}");
        assert!(
            comparisons <= 2 * u64::from(N),
            "{comparisons} comparisons for {N} items: not linear"
        );
        // Order is kept, and an empty old list keeps everything.
        let kept: Vec<u32> = not_in(&new, &[]).iter().map(|c| c.0).collect();
        assert_eq!(kept, new.iter().map(|c| c.0).collect::<Vec<_>>());
    }

    #[test]
    fn kinds_and_groups() {
        let cases = [
            ("v1", "Pod", Some(PodBearing::Pod)),
            ("v1", "PodTemplate", Some(PodBearing::PodTemplate)),
            ("v1", "ReplicationController", Some(PodBearing::Workload)),
            ("apps/v1", "Deployment", Some(PodBearing::Workload)),
            ("apps/v1", "ReplicaSet", Some(PodBearing::Workload)),
            ("apps/v1", "StatefulSet", Some(PodBearing::Workload)),
            ("apps/v1", "DaemonSet", Some(PodBearing::Workload)),
            ("batch/v1", "Job", Some(PodBearing::Workload)),
            ("batch/v1", "CronJob", Some(PodBearing::CronJob)),
            ("example.com/v1", "Deployment", None),
            ("v1", "Deployment", None),
            ("v1", "Service", None),
            ("apps/v1", "Pod", None),
        ];
        for (api_version, kind, want) in cases {
            assert_eq!(
                PodBearing::of(group_of(api_version), kind),
                want,
                "{api_version} {kind}"
            );
        }
    }

    #[test]
    fn every_list_of_every_kind() {
        let spec = json!({
            "containers": [{"name": "a", "image": "x.org/a"}],
            "initContainers": [{"name": "i", "image": "x.org/i"}],
            "ephemeralContainers": [{"name": "e", "image": "x.org/e"}],
            "volumes": [
                {"name": "v", "emptyDir": {}},
                {"name": "iv", "image": {"reference": "x.org/v", "pullPolicy": "Always"}},
                {"name": "later", "image": {}},
                {"name": "none", "image": null}
            ]
        });
        let want = vec![
            (ContainerKind::Container, "a".into(), Some("x.org/a".into())),
            (
                ContainerKind::InitContainer,
                "i".into(),
                Some("x.org/i".into()),
            ),
            (
                ContainerKind::EphemeralContainer,
                "e".into(),
                Some("x.org/e".into()),
            ),
            (
                ContainerKind::ImageVolume,
                "iv".into(),
                Some("x.org/v".into()),
            ),
            (ContainerKind::ImageVolume, "later".into(), None),
        ];
        let cases = [
            (PodBearing::Pod, json!({"spec": spec})),
            (PodBearing::PodTemplate, json!({"template": {"spec": spec}})),
            (
                PodBearing::Workload,
                json!({"spec": {"template": {"spec": spec}}}),
            ),
            (
                PodBearing::CronJob,
                json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": spec}}}}}),
            ),
        ];
        for (kind, object) in cases {
            assert_eq!(images(kind, object), want, "{kind:?}");
        }
    }

    #[test]
    fn missing_parts_are_empty_and_wrong_shapes_are_errors() {
        assert!(images(PodBearing::Workload, json!({})).is_empty());
        assert!(images(PodBearing::Workload, json!({"spec": {"template": null}})).is_empty());
        assert!(images(PodBearing::Pod, json!({"spec": {"containers": null}})).is_empty());
        assert!(images(PodBearing::Pod, json!({"spec": {"volumes": null}})).is_empty());
        assert_eq!(
            images(
                PodBearing::Workload,
                json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}]}}}})
            ),
            vec![(ContainerKind::Container, "a".into(), None)]
        );
        let bad = [
            json!({"spec": []}),
            json!({"spec": {"containers": {"name": "a"}}}),
            json!({"spec": {"containers": [{"name": "a", "image": 7}]}}),
            json!({"spec": {"initContainers": "x"}}),
            json!({"spec": {"volumes": {"name": "v"}}}),
            json!({"spec": {"volumes": [{"name": "v", "image": "quay.io/x"}]}}),
            json!({"spec": {"volumes": [{"name": "v", "image": {"reference": 7}}]}}),
        ];
        for object in bad {
            assert!(PodBearing::Pod.containers(&object).is_err(), "{object}");
        }
    }
}

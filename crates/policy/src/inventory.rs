//! What runs where: the pod-bearing objects of a namespace, which of them are top-level (the
//! workloads and bare pods an inventory reports), and the policy's verdict on each, with the
//! registry and the allowance behind every image.
//!
//! Shared by `kubectl byoc audit` and `kubectl byoc images` (which list these objects) and the
//! controller's PolicyReports (which watch them). The verdict is [`Checker`]'s, the webhook's
//! own, on the images of each object as if they were all added now.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

use byoc_api::labels::Allowance;
use byoc_api::lenient::Lossy;
use byoc_api::{ByocGrant, RegistryPattern};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, PodTemplate, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::Resource;
use kube::core::{ApiResource, NamespaceResourceScope};
use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::config::Config;
use crate::decision::{Checker, Listed, Violation};
use crate::reference::ImageRef;
use crate::workload::{Container, LeftOut, PodBearing, PodSpecReader, ShapeError, group_of};

/// A pod-bearing kind. The order is the reports': workloads first, pods last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` ReplicaSet.
    ReplicaSet,
    /// `apps/v1` StatefulSet.
    StatefulSet,
    /// `apps/v1` DaemonSet.
    DaemonSet,
    /// `batch/v1` CronJob.
    CronJob,
    /// `batch/v1` Job.
    Job,
    /// `v1` ReplicationController.
    ReplicationController,
    /// `v1` PodTemplate.
    PodTemplate,
    /// `v1` Pod.
    Pod,
}

impl Source {
    /// Every kind, in report order.
    pub const ALL: [Self; 9] = [
        Self::Deployment,
        Self::ReplicaSet,
        Self::StatefulSet,
        Self::DaemonSet,
        Self::CronJob,
        Self::Job,
        Self::ReplicationController,
        Self::PodTemplate,
        Self::Pod,
    ];

    /// The kinds that run pods: every kind but PodTemplate, which runs nothing.
    pub const RUNNING: [Self; 8] = [
        Self::Deployment,
        Self::ReplicaSet,
        Self::StatefulSet,
        Self::DaemonSet,
        Self::CronJob,
        Self::Job,
        Self::ReplicationController,
        Self::Pod,
    ];

    /// The API resource to list.
    pub fn resource(self) -> ApiResource {
        match self {
            Self::Deployment => ApiResource::erase::<Deployment>(&()),
            Self::ReplicaSet => ApiResource::erase::<ReplicaSet>(&()),
            Self::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
            Self::DaemonSet => ApiResource::erase::<DaemonSet>(&()),
            Self::CronJob => ApiResource::erase::<CronJob>(&()),
            Self::Job => ApiResource::erase::<Job>(&()),
            Self::ReplicationController => ApiResource::erase::<ReplicationController>(&()),
            Self::PodTemplate => ApiResource::erase::<PodTemplate>(&()),
            Self::Pod => ApiResource::erase::<Pod>(&()),
        }
    }

    /// The kind's name.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::ReplicaSet => "ReplicaSet",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
            Self::CronJob => "CronJob",
            Self::Job => "Job",
            Self::ReplicationController => "ReplicationController",
            Self::PodTemplate => "PodTemplate",
            Self::Pod => "Pod",
        }
    }

    /// The kind's `apiVersion`.
    pub fn api_version(self) -> &'static str {
        match self {
            Self::Deployment | Self::ReplicaSet | Self::StatefulSet | Self::DaemonSet => "apps/v1",
            Self::CronJob | Self::Job => "batch/v1",
            Self::ReplicationController | Self::PodTemplate | Self::Pod => "v1",
        }
    }

    /// Where the pod spec is, as the webhook sees this kind.
    pub fn bearing(self) -> PodBearing {
        match self {
            Self::Pod => PodBearing::Pod,
            Self::PodTemplate => PodBearing::PodTemplate,
            Self::CronJob => PodBearing::CronJob,
            _ => PodBearing::Workload,
        }
    }

    /// Whether this is a workload (anything but a Pod).
    pub fn is_workload(self) -> bool {
        self != Self::Pod
    }

    /// Why an object of this kind is left out of an audit, if it is: it is a workload being
    /// deleted (it makes no more pods), its controller is audited instead, or (a pod) it has
    /// finished and runs nothing. A pod being deleted is not left out: it runs until its grace
    /// period ends, which its owner chooses. `phase` is a pod's `status.phase`.
    pub fn skip_reason(self, metadata: &ObjectMeta, phase: Option<&str>) -> Option<&'static str> {
        if self.is_workload() && metadata.deletion_timestamp.is_some() {
            return Some("being deleted");
        }
        match self {
            Self::Pod => finished(phase).then_some("finished pod"),
            Self::ReplicaSet => controlled_by(metadata, "apps/", "Deployment")
                .then_some("ReplicaSet of a Deployment"),
            Self::Job => controlled_by(metadata, "batch/", "CronJob").then_some("Job of a CronJob"),
            _ => None,
        }
    }
}

/// Whether a pod in `phase` has finished and runs nothing.
fn finished(phase: Option<&str>) -> bool {
    matches!(phase, Some("Succeeded" | "Failed"))
}

/// The controller of an object, if it has one.
pub fn controller_of(metadata: &ObjectMeta) -> Option<&OwnerReference> {
    metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// Whether the controller of an object is a `kind` of an API group version starting with
/// `group`.
fn controlled_by(metadata: &ObjectMeta, group: &str, kind: &str) -> bool {
    controller_of(metadata).is_some_and(|o| o.kind == kind && o.api_version.starts_with(group))
}

/// A pod-bearing object trimmed to what the inventory reads: its name, namespace, uid,
/// owners and deletion mark, a pod's phase, and the images of its pod spec. Labels,
/// annotations, `managedFields` and the rest of the spec are dropped as it is read, so a
/// watch cache of these holds a few hundred bytes per object.
#[derive(Clone, Debug, PartialEq)]
pub struct Trimmed {
    /// Its kind.
    pub source: Source,
    /// `name`, `namespace`, `uid`, `resourceVersion`, `ownerReferences`, `deletionTimestamp`.
    pub metadata: ObjectMeta,
    /// A pod's `status.phase`.
    pub phase: Option<String>,
    /// The containers and image volumes of its pod spec kept ([`MAX_CONTAINERS`]), or why
    /// they cannot be read.
    pub containers: Result<Vec<Container>, ShapeError>,
    /// What was not kept of its pod spec.
    pub left_out: LeftOut,
}

impl Trimmed {
    /// Reads an object of kind `source` (from a `Value`: tests and callers holding one).
    pub fn from_value(source: Source, value: &Value) -> Result<Self, serde_json::Error> {
        TrimmedSeed(source).deserialize(value)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    /// Its namespace.
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or_default()
    }

    /// Its uid.
    pub fn uid(&self) -> &str {
        self.metadata.uid.as_deref().unwrap_or_default()
    }

    /// Whether it is a pod that has finished (`Succeeded` or `Failed`) and runs nothing.
    pub fn is_finished_pod(&self) -> bool {
        self.source == Source::Pod && finished(self.phase.as_deref())
    }
}

/// The k8s-openapi types of the pod-bearing kinds.
pub trait Inventoried: Resource<DynamicType = (), Scope = NamespaceResourceScope> {
    /// The kind.
    const SOURCE: Source;
}

macro_rules! inventoried {
    ($($t:ty => $s:ident),* $(,)?) => {
        $(impl Inventoried for $t { const SOURCE: Source = Source::$s; })*
    };
}

inventoried! {
    Deployment => Deployment,
    ReplicaSet => ReplicaSet,
    StatefulSet => StatefulSet,
    DaemonSet => DaemonSet,
    CronJob => CronJob,
    Job => Job,
    ReplicationController => ReplicationController,
    PodTemplate => PodTemplate,
    Pod => Pod,
}

/// A [`Trimmed`] object of the typed kind `K`, for `Api<Of<K>>` lists and watches: the API
/// path is `K`'s, what is kept is [`Trimmed`].
#[derive(Debug)]
pub struct Of<K> {
    /// The object.
    pub object: Trimmed,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Of<K> {
    fn clone(&self) -> Self {
        Self {
            object: self.object.clone(),
            kind: PhantomData,
        }
    }
}

impl<'de, K: Inventoried> Deserialize<'de> for Of<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self {
            object: TrimmedSeed(K::SOURCE).deserialize(deserializer)?,
            kind: PhantomData,
        })
    }
}

/// The containers and image volumes the inventory keeps of one object: far more than real pods
/// have (Kubernetes sets no limit; more than a dozen is rare), few enough that a flood of objects
/// with thousands each stays small in the controller's caches. Of an object with more, one
/// container per distinct image is kept first ([`PodSpecReader::capped`]), and what is left out
/// is counted ([`Trimmed::left_out`]); only more than this many distinct images leaves images
/// unjudged, and then its result is never a pass.
pub const MAX_CONTAINERS: usize = 128;

/// Reads a [`Trimmed`] object of a kind as it streams by: `metadata` for the fields kept, a
/// pod's `status.phase`, and the containers of its pod spec ([`PodSpecReader`]); everything
/// else, `managedFields` and a pod template's metadata included, is skipped unparsed, so no
/// depth fails it.
struct TrimmedSeed(Source);

impl<'de> DeserializeSeed<'de> for TrimmedSeed {
    type Value = Trimmed;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Trimmed, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TrimmedSeed {
    type Value = Trimmed;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a {}", self.0.kind())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Trimmed, A::Error> {
        let source = self.0;
        let mut metadata = None;
        let mut phase = None;
        let mut specs = PodSpecReader::capped(MAX_CONTAINERS);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "metadata" => metadata = Some(map.next_value::<KeptMeta>()?),
                "status" if source == Source::Pod => phase = map.next_value::<PodStatus>()?.phase.0,
                key => match specs.seed(key) {
                    Some(seed) => map.next_value_seed(seed)?,
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                },
            }
        }
        let meta = metadata.ok_or_else(|| A::Error::missing_field("metadata"))?;
        let specs = specs.finish();
        Ok(Trimmed {
            source,
            metadata: ObjectMeta {
                name: meta.name,
                namespace: meta.namespace,
                uid: meta.uid,
                resource_version: meta.resource_version,
                owner_references: meta.owner_references,
                deletion_timestamp: meta.deletion_timestamp,
                ..ObjectMeta::default()
            },
            phase,
            left_out: specs.left_out(source.bearing()),
            containers: specs.take(source.bearing()),
        })
    }
}

/// The metadata a [`Trimmed`] keeps; the rest (labels, annotations, `managedFields`) is
/// skipped unparsed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeptMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    deletion_timestamp: Option<Time>,
}

/// A pod's `status`, for its phase (a phase that is no string is none).
#[derive(Deserialize)]
struct PodStatus {
    #[serde(default)]
    phase: Lossy,
}

impl<K: Inventoried> Resource for Of<K> {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.object.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.object.metadata
    }
}

/// What allows an image.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AllowedBy {
    /// A default registry of the configuration, as it applies in the namespace (a template
    /// expanded).
    Platform(RegistryPattern),
    /// A granted registry entry.
    Granted(RegistryPattern),
    /// A grant of any registry.
    AnyRegistry,
}

impl AllowedBy {
    /// What allows `image` in a namespace with `allowance` at `now`, if anything: a default
    /// registry before a granted entry before "any registry", so that an image the platform
    /// serves is never attributed to a grant.
    fn of(
        config: &Config,
        allowance: &Allowance,
        namespace: &str,
        now: Timestamp,
        image: &ImageRef,
    ) -> Option<Self> {
        if let Some(p) = config
            .default_registry_for(image, namespace)
            .and_then(|p| p.for_namespace(namespace, &config.tool_prefix))
        {
            return Some(Self::Platform(p));
        }
        if let Some(p) = allowance
            .registries_at(now)
            .find(|p| image.is_allowed_by(p))
        {
            return Some(Self::Granted(p.clone()));
        }
        allowance.allows_any_at(now).then_some(Self::AnyRegistry)
    }

    /// The name of the grant behind this allowance among `grants` (the platform's for a default
    /// registry): of the grants of `namespace` in force at `now` that grant it, the one that
    /// lasts longest, then the first by name. `None` when no grant does (the namespace labels
    /// are ahead of the grants the caller knows).
    pub fn grant_name<'g>(
        &self,
        grants: impl IntoIterator<Item = &'g ByocGrant>,
        namespace: &str,
        now: Timestamp,
    ) -> Option<String> {
        let pattern = match self {
            Self::Platform(_) => return Some(byoc_api::report::ALLOWED_BY_PLATFORM.to_owned()),
            Self::Granted(p) => Some(p),
            Self::AnyRegistry => None,
        };
        grants
            .into_iter()
            .filter(|g| g.spec.namespace == namespace && !g.is_expired_at(now))
            .filter(|g| match pattern {
                None => g.spec.allows_any_registry(),
                Some(p) => g
                    .spec
                    .registries
                    .iter()
                    .any(|r| r.parse::<RegistryPattern>().is_ok_and(|r| &r == p)),
            })
            .max_by(|a, b| {
                let end = |g: &ByocGrant| g.expires_at().map_or(i128::MAX, |t| t.as_nanosecond());
                end(a)
                    .cmp(&end(b))
                    .then_with(|| b.metadata.name.cmp(&a.metadata.name))
            })
            .and_then(|g| g.metadata.name.clone())
    }
}

/// One image of a workload and the policy's verdict on it.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageUse {
    /// The image as written.
    pub image: String,
    /// The registry it resolves to, when it parses.
    pub registry: Option<String>,
    /// What allows it, or `None` when it is refused.
    pub allowed_by: Option<AllowedBy>,
}

/// The verdict on one top-level workload or bare pod.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// Its kind.
    pub source: Source,
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
    /// Each distinct image of its pod spec and of its running pods, in pod-spec order.
    pub images: Vec<ImageUse>,
    /// The refused containers (the webhook's denial lines), or why its pod spec cannot be read
    /// or judged whole (images left unread by the cap and none refused among those read).
    pub refused: Result<Listed<Violation>, String>,
    /// What the cap on containers left out of it and its pods ([`left_out_notice`]).
    pub notice: Option<String>,
    /// Containers and image volumes left out by the cap whose images were not read, so not
    /// in [`Verdict::images`]: counted, never judged.
    pub unjudged: usize,
}

/// What [`MAX_CONTAINERS`] left out of `subject`, if anything, for people to read.
pub fn left_out_notice(subject: &str, left_out: LeftOut) -> Option<String> {
    let LeftOut {
        containers,
        unread_images,
    } = left_out;
    match (containers, unread_images) {
        (0, _) => None,
        (n, 0) => Some(format!(
            "{subject}: {n} more containers and image volumes not listed, with images among \
             those judged (at most {MAX_CONTAINERS} are kept per pod spec)"
        )),
        (n, u) => Some(format!(
            "{subject}: {n} more containers and image volumes not listed, {u} of them with \
             images not judged (at most {MAX_CONTAINERS} distinct images are kept per pod spec)"
        )),
    }
}

/// The kinds whose objects Kubernetes' own controllers make for one of `source`: a Pod is
/// owned by a ReplicaSet, StatefulSet, DaemonSet, Job or ReplicationController, a ReplicaSet by
/// a Deployment, a Job by a CronJob; nothing owns the others. Each step climbs this order, so
/// a walk along it takes at most [`MAX_OWNER_STEPS`] steps and never meets a cycle.
fn owner_kinds(source: Source) -> &'static [Source] {
    match source {
        Source::Pod => &[
            Source::ReplicaSet,
            Source::StatefulSet,
            Source::DaemonSet,
            Source::Job,
            Source::ReplicationController,
        ],
        Source::ReplicaSet => &[Source::Deployment],
        Source::Job => &[Source::CronJob],
        _ => &[],
    }
}

/// The longest walk along [`owner_kinds`]: pod → ReplicaSet → Deployment, pod → Job → CronJob.
const MAX_OWNER_STEPS: usize = 2;

/// Judges the objects of one namespace: one [`Verdict`] per top-level workload and bare pod,
/// ordered by kind and name.
///
/// Top-level are the workloads (not PodTemplates, which run nothing) and unfinished pods that
/// no object among `objects` controls as Kubernetes' controllers do ([`owner_kinds`]): the
/// controller named in `ownerReferences` must be among `objects` (by uid) and of the kind
/// and API group the reference names, and that kind one that owns this kind. A ReplicaSet
/// whose Deployment is there is not top-level, an orphaned one is; a pod of a custom resource,
/// a node or a Deployment is a bare pod. A walk stops at the last real workload it reaches, so
/// forged references (a chain of any length, a cycle, an owner that does not exist) never
/// hide an object: every unfinished pod is judged, as itself or under a top-level workload.
/// The images of a pod with a controller among `objects` are judged with its top-level
/// workload's (through a ReplicaSet or Job to its Deployment or CronJob), so a pod still
/// running an older template, or a pod that names a workload as its controller, shows under
/// that workload. Finished pods are left out; objects being deleted are not (a pod being
/// deleted runs until its grace period ends, which its owner chooses).
///
/// Each object is judged as the webhook would judge an UPDATE adding all its images now:
/// `config` and the namespace's `allowance` (read from its labels) at `now`.
pub fn judge_namespace<'a>(
    config: &Config,
    allowance: &Allowance,
    now: Timestamp,
    objects: impl IntoIterator<Item = &'a Trimmed>,
) -> Vec<Verdict> {
    let objects: Vec<&Trimmed> = objects
        .into_iter()
        .filter(|o| o.source != Source::PodTemplate)
        .collect();
    let by_uid: HashMap<&str, &Trimmed> = objects
        .iter()
        .filter(|o| o.source.is_workload() && !o.uid().is_empty())
        .map(|o| (o.uid(), *o))
        .collect();
    // The controller of an object, when it is a real one of a kind that owns this kind.
    let owner_of = |o: &Trimmed| -> Option<&'a Trimmed> {
        let reference = controller_of(&o.metadata)?;
        let owner = *by_uid.get(reference.uid.as_str())?;
        let real = owner_kinds(o.source).contains(&owner.source)
            && reference.kind == owner.source.kind()
            && group_of(&reference.api_version) == group_of(owner.source.api_version());
        real.then_some(owner)
    };
    // The top-level object of each running object, and the pods under each.
    let top_of = |o: &'a Trimmed| -> &'a Trimmed {
        let mut at = o;
        for _ in 0..MAX_OWNER_STEPS {
            match owner_of(at) {
                Some(owner) => at = owner,
                None => break,
            }
        }
        at
    };
    let mut pods_under: HashMap<&str, Vec<&Trimmed>> = HashMap::new();
    let mut tops: Vec<&Trimmed> = Vec::new();
    for o in &objects {
        if o.is_finished_pod() {
            continue;
        }
        let top = top_of(o);
        if std::ptr::eq(top, *o) {
            tops.push(o);
        } else if o.source == Source::Pod {
            pods_under.entry(top.uid()).or_default().push(o);
        }
    }
    tops.sort_by(|a, b| (a.source, a.name()).cmp(&(b.source, b.name())));
    tops.into_iter()
        .map(|top| {
            let pods = pods_under.get(top.uid()).map_or(&[][..], Vec::as_slice);
            judge(config, allowance, now, top, pods)
        })
        .collect()
}

/// The verdict on `top` and the pods running under it.
fn judge(
    config: &Config,
    allowance: &Allowance,
    now: Timestamp,
    top: &Trimmed,
    pods: &[&Trimmed],
) -> Verdict {
    let namespace = top.namespace();
    let subject = format!("{} {namespace}/{}", top.source.kind(), top.name());
    let mut containers: Vec<&Container> = Vec::new();
    let mut unreadable = None;
    let mut left_out = LeftOut::default();
    for object in std::iter::once(top).chain(pods.iter().copied()) {
        left_out = left_out + object.left_out;
        match &object.containers {
            Ok(list) => {
                for c in list {
                    if !containers.contains(&c) {
                        containers.push(c);
                    }
                }
            }
            Err(e) => {
                unreadable.get_or_insert_with(|| {
                    format!(
                        "{} {namespace}/{}: {e}",
                        object.source.kind(),
                        object.name()
                    )
                });
            }
        }
    }
    let checker = Checker::new(config, allowance, namespace, now);
    let mut images: Vec<ImageUse> = Vec::new();
    for image in containers.iter().filter_map(|c| c.image.as_deref()) {
        if images.iter().any(|u| u.image == image) {
            continue;
        }
        let (registry, allowed_by) = match image.parse::<ImageRef>() {
            Ok(r) => {
                let allowed_by = match checker.problem(image) {
                    None => AllowedBy::of(config, allowance, namespace, now, &r),
                    Some(_) => None,
                };
                (Some(r.registry()), allowed_by)
            }
            Err(_) => (None, None),
        };
        images.push(ImageUse {
            image: image.to_owned(),
            registry,
            allowed_by,
        });
    }
    let notice = left_out_notice(&subject, left_out);
    let refused = match unreadable {
        Some(e) => Err(e),
        None => match checker.check(&subject, containers) {
            // Nothing read is refused, but not everything was read: not a pass.
            v if v.is_empty() && left_out.unread_images > 0 => {
                Err(notice.clone().unwrap_or_default())
            }
            v => Ok(v),
        },
    };
    Verdict {
        source: top.source,
        name: top.name().to_owned(),
        uid: top.uid().to_owned(),
        images,
        refused,
        notice,
        unjudged: left_out.unread_images,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::group_of;
    use byoc_api::ByocGrantSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    fn now() -> Timestamp {
        "2026-11-30T12:00:00Z".parse().unwrap()
    }

    /// An object of `source` named `name` (uid `name`), controlled by `owner` (kind, uid).
    fn object(source: Source, name: &str, owner: Option<(&str, &str)>, images: &[&str]) -> Trimmed {
        let containers: Vec<_> = images
            .iter()
            .map(|i| json!({"name": "app", "image": i}))
            .collect();
        let spec = json!({"containers": containers});
        let mut value = match source.bearing() {
            PodBearing::Pod => json!({"spec": spec, "status": {"phase": "Running"}}),
            PodBearing::CronJob => {
                json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": spec}}}}})
            }
            PodBearing::PodTemplate => json!({"template": {"spec": spec}}),
            PodBearing::Workload => json!({"spec": {"template": {"spec": spec}}}),
        };
        value["metadata"] = json!({"name": name, "namespace": "tool-a", "uid": name,
            "labels": {"app": "x"}, "annotations": {"big": "y"},
            "managedFields": [{"manager": "m", "time": "9999-12-31T00:00:00Z"}]});
        if let Some((kind, uid)) = owner {
            let api_version = Source::ALL
                .iter()
                .find(|s| s.kind() == kind)
                .map_or("v1", |s| s.api_version());
            value["metadata"]["ownerReferences"] = json!([{"apiVersion": api_version,
                "kind": kind, "name": uid, "uid": uid, "controller": true}]);
        }
        Trimmed::from_value(source, &value).unwrap()
    }

    fn allowance(registries: &[&str], expires: Option<&str>) -> Allowance {
        Allowance::for_grant(&spec(registries, expires)).unwrap()
    }

    fn spec(registries: &[&str], expires: Option<&str>) -> ByocGrantSpec {
        ByocGrantSpec {
            namespace: "tool-a".into(),
            reason: "r".into(),
            registries: registries.iter().map(|s| s.to_string()).collect(),
            any_registry: registries.is_empty(),
            namespace_uid: None,
            expires_at: expires.map(|e| Time(e.parse().unwrap())),
            requirements: None,
        }
    }

    #[test]
    fn kinds_match_the_webhook() {
        for source in Source::ALL {
            let r = source.resource();
            assert_eq!(r.kind, source.kind());
            assert_eq!(r.api_version, source.api_version());
            assert_eq!(
                PodBearing::of(group_of(&r.api_version), &r.kind),
                Some(source.bearing()),
                "{source:?}"
            );
        }
        let mut sorted = Source::ALL;
        sorted.sort();
        assert_eq!(sorted, Source::ALL);
        assert!(Source::RUNNING.iter().all(|s| Source::ALL.contains(s)));
        assert!(!Source::RUNNING.contains(&Source::PodTemplate));
    }

    #[test]
    fn trimmed_keeps_only_what_is_read() {
        let pod = object(Source::Pod, "p", Some(("ReplicaSet", "rs")), &["quay.io/a"]);
        assert_eq!(pod.metadata.labels, None);
        assert_eq!(pod.metadata.annotations, None);
        assert_eq!(pod.metadata.managed_fields, None);
        assert_eq!(pod.phase.as_deref(), Some("Running"));
        assert_eq!(controller_of(&pod.metadata).unwrap().uid, "rs");
        let bad = Trimmed::from_value(
            Source::Pod,
            &json!({"metadata": {"name": "p"}, "spec": {"containers": 3}}),
        )
        .unwrap();
        assert!(bad.containers.is_err());
    }

    /// The top-level objects judged, with their images, for a namespace of `objects`.
    fn tops(objects: &[Trimmed]) -> Vec<(Source, String, Vec<String>)> {
        let config = Config::default();
        judge_namespace(&config, &Allowance::default(), now(), objects)
            .into_iter()
            .map(|v| {
                (
                    v.source,
                    v.name,
                    v.images.into_iter().map(|u| u.image).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn pods_are_judged_with_their_top_level_workload() {
        let finished = {
            let mut p = object(Source::Pod, "done", None, &["x.org/done"]);
            p.phase = Some("Succeeded".into());
            p
        };
        // Being deleted, it still runs until its grace period ends.
        let deleting = {
            let mut p = object(Source::Pod, "going", None, &["x.org/going"]);
            p.metadata.deletion_timestamp = Some(Time(now()));
            p
        };
        let objects = [
            object(Source::Deployment, "web", None, &["x.org/web:2"]),
            object(
                Source::ReplicaSet,
                "web-2",
                Some(("Deployment", "web")),
                &["x.org/web:2"],
            ),
            object(
                Source::ReplicaSet,
                "web-1",
                Some(("Deployment", "web")),
                &["x.org/web:1"],
            ),
            // A rollout in progress: the old pod still runs the old image.
            object(
                Source::Pod,
                "web-2-a",
                Some(("ReplicaSet", "web-2")),
                &["x.org/web:2"],
            ),
            object(
                Source::Pod,
                "web-1-a",
                Some(("ReplicaSet", "web-1")),
                &["x.org/web:1"],
            ),
            // A pod claiming the Deployment's ReplicaSet, with an image of its own.
            object(
                Source::Pod,
                "claims",
                Some(("ReplicaSet", "web-2")),
                &["evil.org/x"],
            ),
            // An orphaned ReplicaSet (its Deployment is gone) is top-level.
            object(
                Source::ReplicaSet,
                "orphan",
                Some(("Deployment", "gone")),
                &["x.org/o"],
            ),
            object(Source::CronJob, "nightly", None, &["x.org/cron"]),
            object(
                Source::Job,
                "nightly-1",
                Some(("CronJob", "nightly")),
                &["x.org/cron"],
            ),
            object(
                Source::Pod,
                "nightly-1-a",
                Some(("Job", "nightly-1")),
                &["x.org/cron"],
            ),
            object(Source::Pod, "bare", None, &["x.org/bare"]),
            object(
                Source::Pod,
                "mirror",
                Some(("Node", "node-1")),
                &["x.org/static"],
            ),
            object(Source::PodTemplate, "tpl", None, &["x.org/tpl"]),
            finished,
            deleting,
        ];
        assert_eq!(
            tops(&objects),
            vec![
                (
                    Source::Deployment,
                    "web".into(),
                    vec![
                        "x.org/web:2".into(),
                        "x.org/web:1".into(),
                        "evil.org/x".into()
                    ]
                ),
                (Source::ReplicaSet, "orphan".into(), vec!["x.org/o".into()]),
                (Source::CronJob, "nightly".into(), vec!["x.org/cron".into()]),
                (Source::Pod, "bare".into(), vec!["x.org/bare".into()]),
                (Source::Pod, "going".into(), vec!["x.org/going".into()]),
                (Source::Pod, "mirror".into(), vec!["x.org/static".into()]),
            ]
        );
    }

    /// Forged `ownerReferences` (an `edit` tenant may write any on its objects) never hide a
    /// pod: each is judged under the last real workload its walk reaches, or as itself.
    #[test]
    fn forged_owner_references_never_hide_a_pod() {
        use Source::{DaemonSet, Deployment, Job, Pod, ReplicaSet, StatefulSet};
        let o = |source, name, owner: Option<(&str, &str)>| {
            object(source, name, owner, &[&format!("x.org/{name}")])
        };
        // (what, objects, the top-level (kind, name) that must judge the pod `p`'s image)
        let cases: Vec<(&str, Vec<Trimmed>, (Source, &str))> = vec![
            (
                "a chain of three Deployments",
                vec![
                    o(Pod, "p", Some(("Deployment", "a"))),
                    o(Deployment, "a", Some(("Deployment", "b"))),
                    o(Deployment, "b", Some(("Deployment", "c"))),
                    o(Deployment, "c", None),
                ],
                (Pod, "p"),
            ),
            (
                "a chain of ReplicaSets",
                vec![
                    o(Pod, "p", Some(("ReplicaSet", "a"))),
                    o(ReplicaSet, "a", Some(("ReplicaSet", "b"))),
                    o(ReplicaSet, "b", Some(("ReplicaSet", "c"))),
                    o(ReplicaSet, "c", None),
                ],
                (ReplicaSet, "a"),
            ),
            (
                "a cycle of three",
                vec![
                    o(Pod, "p", Some(("ReplicaSet", "a"))),
                    o(ReplicaSet, "a", Some(("ReplicaSet", "b"))),
                    o(ReplicaSet, "b", Some(("ReplicaSet", "c"))),
                    o(ReplicaSet, "c", Some(("ReplicaSet", "a"))),
                ],
                (ReplicaSet, "a"),
            ),
            (
                "a cycle of two",
                vec![
                    o(Pod, "p", Some(("ReplicaSet", "a"))),
                    o(ReplicaSet, "a", Some(("ReplicaSet", "b"))),
                    o(ReplicaSet, "b", Some(("ReplicaSet", "a"))),
                ],
                (ReplicaSet, "a"),
            ),
            (
                "an owner of another kind than the reference says",
                vec![
                    o(Pod, "p", Some(("ReplicaSet", "d"))),
                    o(DaemonSet, "d", None),
                ],
                (Pod, "p"),
            ),
            (
                "an owner that does not exist",
                vec![o(Pod, "p", Some(("StatefulSet", "gone")))],
                (Pod, "p"),
            ),
            (
                "a Deployment owned by a StatefulSet",
                vec![
                    o(Pod, "p", Some(("ReplicaSet", "rs"))),
                    o(ReplicaSet, "rs", Some(("Deployment", "d"))),
                    o(Deployment, "d", Some(("StatefulSet", "s"))),
                    o(StatefulSet, "s", None),
                ],
                (Deployment, "d"),
            ),
            (
                "a Job of a Job",
                vec![
                    o(Pod, "p", Some(("Job", "j"))),
                    o(Job, "j", Some(("Job", "k"))),
                    o(Job, "k", None),
                ],
                (Job, "j"),
            ),
        ];
        for (what, objects, (kind, name)) in cases {
            let judged = tops(&objects);
            let holding: Vec<_> = judged
                .iter()
                .filter(|(_, _, images)| images.contains(&"x.org/p".to_owned()))
                .map(|(s, n, _)| (*s, n.as_str()))
                .collect();
            assert_eq!(holding, [(kind, name)], "{what}: {judged:?}");
            // Every workload is a result of its own, but the ReplicaSet of a real Deployment.
            for w in objects
                .iter()
                .filter(|w| w.source.is_workload() && w.name() != "rs")
            {
                let image = format!("x.org/{}", w.name());
                assert!(
                    judged.iter().any(|(_, _, images)| images.contains(&image)),
                    "{what}: {} lost: {judged:?}",
                    w.name()
                );
            }
        }
    }

    #[test]
    fn verdicts_name_what_allows_each_image() {
        let config = Config::default();
        let objects = [object(
            Source::Deployment,
            "web",
            None,
            &[
                "docker-registry.tools.wmflabs.org/web:1",
                "quay.io/a/b:1",
                "nginx",
                "Not A Ref",
            ],
        )];
        let quay = allowance(&["quay.io"], None);
        let [v] = &judge_namespace(&config, &quay, now(), &objects)[..] else {
            panic!("one verdict")
        };
        let platform = "docker-registry.tools.wmflabs.org".parse().unwrap();
        assert_eq!(
            v.images
                .iter()
                .map(|u| (u.registry.as_deref(), u.allowed_by.clone()))
                .collect::<Vec<_>>(),
            vec![
                (
                    Some("docker-registry.tools.wmflabs.org"),
                    Some(AllowedBy::Platform(platform))
                ),
                (
                    Some("quay.io"),
                    Some(AllowedBy::Granted("quay.io".parse().unwrap()))
                ),
                (Some("docker.io"), None),
                (None, None),
            ]
        );
        let refused = v.refused.as_ref().unwrap();
        assert_eq!(refused.len(), 2);
        assert!(
            refused[0]
                .to_string()
                .starts_with("Deployment tool-a/web: container \"app\" image \"nginx\"")
        );
        // A grant of any registry allows everything that parses; the platform still comes first.
        let any = allowance(&[], None);
        let [v] = &judge_namespace(&config, &any, now(), &objects)[..] else {
            panic!("one verdict")
        };
        assert!(matches!(
            v.images[0].allowed_by,
            Some(AllowedBy::Platform(_))
        ));
        assert_eq!(v.images[2].allowed_by, Some(AllowedBy::AnyRegistry));
        assert_eq!(v.refused.as_ref().unwrap().len(), 1);
        // An expired grant allows nothing: the verdict changes without any other change.
        let expired = allowance(&["quay.io"], Some("2026-11-30T11:59:59Z"));
        let [v] = &judge_namespace(&config, &expired, now(), &objects)[..] else {
            panic!("one verdict")
        };
        assert_eq!(v.images[1].allowed_by, None);
        assert_eq!(v.refused.as_ref().unwrap().len(), 3);
        // A pod spec that does not read is an error, not a pass.
        let bad = Trimmed::from_value(
            Source::Pod,
            &json!({"metadata": {"name": "p", "namespace": "tool-a", "uid": "p"}, "spec": {"containers": 3}}),
        )
        .unwrap();
        let [v] = &judge_namespace(&config, &quay, now(), [&bad])[..] else {
            panic!("one verdict")
        };
        assert!(
            v.refused
                .as_ref()
                .unwrap_err()
                .starts_with("Pod tool-a/p: malformed pod spec")
        );
    }

    #[test]
    fn attribution_agrees_with_the_checker() {
        let mut config = Config::default();
        config
            .default_registries
            .push("tools-harbor.wmcloud.org/{namespace}".parse().unwrap());
        let images = [
            "tools-harbor.wmcloud.org/tool-a/x",
            "tools-harbor.wmcloud.org/tool-ab/x",
            "tools-harbor.wmcloud.org/tool-b/x",
            "docker-registry.tools.wmflabs.org/x",
            "quay.io/a",
            "ghcr.io/wikimedia/x",
            "ghcr.io/other/x",
            "nginx",
            "localhost:5000/x",
            "sha256:7cc4b5ae",
        ];
        for allowance in [
            Allowance::default(),
            allowance(&["quay.io", "ghcr.io/wikimedia"], None),
            allowance(&[], None),
            allowance(&[], Some("2026-11-30T11:00:00Z")),
        ] {
            let checker = Checker::new(&config, &allowance, "tool-a", now());
            for image in images {
                let attributed = image
                    .parse::<ImageRef>()
                    .ok()
                    .and_then(|r| AllowedBy::of(&config, &allowance, "tool-a", now(), &r));
                assert_eq!(
                    attributed.is_some(),
                    checker.problem(image).is_none() && !image.starts_with("sha256:"),
                    "{image} {allowance:?}"
                );
            }
        }
        // A template is attributed as it applies in the namespace.
        let own: ImageRef = "tools-harbor.wmcloud.org/tool-a/x".parse().unwrap();
        assert_eq!(
            AllowedBy::of(&config, &Allowance::default(), "tool-a", now(), &own),
            Some(AllowedBy::Platform(
                "tools-harbor.wmcloud.org/tool-a".parse().unwrap()
            ))
        );
        assert_eq!(
            AllowedBy::of(&config, &Allowance::default(), "tool-b", now(), &own),
            None
        );
    }

    #[test]
    fn the_grant_behind_an_allowance() {
        let grant = |name: &str, ns: &str, registries: &[&str], expires: Option<&str>| {
            let mut g = ByocGrant::new(name, spec(registries, expires));
            g.spec.namespace = ns.into();
            g
        };
        let grants = [
            grant(
                "short",
                "tool-a",
                &["quay.io"],
                Some("2026-12-01T00:00:00Z"),
            ),
            grant(
                "long",
                "tool-a",
                &["quay.io", "ghcr.io"],
                Some("2027-01-01T00:00:00Z"),
            ),
            grant("gone", "tool-a", &["quay.io"], Some("2026-11-01T00:00:00Z")),
            grant("elsewhere", "tool-b", &["quay.io"], None),
            grant("any", "tool-a", &[], Some("2026-12-01T00:00:00Z")),
            grant("b-forever", "tool-a", &["ghcr.io"], None),
            grant("a-forever", "tool-a", &["ghcr.io"], None),
        ];
        let name = |a: AllowedBy| a.grant_name(&grants, "tool-a", now());
        assert_eq!(
            name(AllowedBy::Granted("quay.io".parse().unwrap())).as_deref(),
            Some("long")
        );
        assert_eq!(
            name(AllowedBy::Granted("ghcr.io".parse().unwrap())).as_deref(),
            Some("a-forever")
        );
        assert_eq!(name(AllowedBy::AnyRegistry).as_deref(), Some("any"));
        assert_eq!(
            name(AllowedBy::Platform("x.org".parse().unwrap())).as_deref(),
            Some("platform")
        );
        assert_eq!(name(AllowedBy::Granted("docker.io".parse().unwrap())), None);
    }

    /// A tenant's flood of containers (Kubernetes sets no limit per pod) is counted, not kept:
    /// past [`MAX_CONTAINERS`] per object, one container per distinct image is kept first and
    /// the rest counted; a name or image longer than any valid one makes the object malformed.
    #[test]
    fn the_inventory_keeps_a_bounded_number_of_containers() {
        let container = |i: usize| json!({ "name": format!("c{i}"), "image": "quay.io/a" });
        let many = |n: usize| (0..n).map(container).collect::<Vec<_>>();
        let distinct = |n: usize| {
            (0..n)
                .map(|i| json!({ "name": format!("d{i}"), "image": format!("quay.io/d{i}") }))
                .collect::<Vec<_>>()
        };
        let nginx = json!({ "name": "last", "image": "nginx" });
        let image_volume = json!({ "name": "v", "image": { "reference": "quay.io/v" } });
        let plain_volume = json!({ "name": "data", "emptyDir": {} });
        let long = json!({ "name": "c", "image": format!("quay.io/{}", "a".repeat(1100)) });
        let left = |containers, unread_images| LeftOut {
            containers,
            unread_images,
        };
        /// Containers kept, what was left out, whether nginx is kept; or the error's text.
        type Kept = Result<(usize, LeftOut, bool), &'static str>;
        let cases: [(&str, Value, Kept); 9] = [
            ("none", json!({}), Ok((0, left(0, 0), false))),
            (
                "exactly the cap",
                json!({ "containers": many(MAX_CONTAINERS) }),
                Ok((MAX_CONTAINERS, left(0, 0), false)),
            ),
            (
                "one more, of an image kept",
                json!({ "containers": many(MAX_CONTAINERS + 1) }),
                Ok((MAX_CONTAINERS, left(1, 0), false)),
            ),
            (
                "counted across lists, image volumes included, plain volumes not",
                json!({
                    "containers": many(100), "initContainers": many(27),
                    "volumes": [image_volume, plain_volume.clone(), plain_volume],
                }),
                Ok((MAX_CONTAINERS, left(0, 0), false)),
            ),
            (
                "a flood of one image",
                json!({ "containers": many(1300) }),
                Ok((MAX_CONTAINERS, left(1172, 0), false)),
            ),
            (
                "a new image past the cap takes a duplicate's place",
                json!({ "containers": many(200), "ephemeralContainers": [nginx.clone()] }),
                Ok((MAX_CONTAINERS, left(73, 0), true)),
            ),
            (
                "a flood of distinct images leaves images unread",
                json!({ "containers": distinct(1300) }),
                Ok((MAX_CONTAINERS, left(1172, 1172), false)),
            ),
            (
                "a new image after as many distinct ones as kept is unread",
                json!({ "containers": distinct(MAX_CONTAINERS), "ephemeralContainers": [nginx] }),
                Ok((MAX_CONTAINERS, left(1, 1), false)),
            ),
            (
                "an image longer than any reference",
                json!({ "containers": [long] }),
                Err("a container name or image of 1108 bytes, longer than the 1024 read"),
            ),
        ];
        for (what, pod_spec, want) in cases {
            for (source, object) in [
                (
                    Source::Pod,
                    json!({ "metadata": { "name": "p" }, "spec": pod_spec }),
                ),
                (
                    Source::Deployment,
                    json!({ "metadata": { "name": "d" }, "spec": { "template": { "spec": pod_spec } } }),
                ),
            ] {
                let read = Trimmed::from_value(source, &object).expect("reads");
                match (&read.containers, want) {
                    (Ok(kept), Ok((n, left_out, has_nginx))) => {
                        assert_eq!(kept.len(), n, "{what} ({source:?})");
                        assert_eq!(read.left_out, left_out, "{what} ({source:?})");
                        assert_eq!(
                            kept.iter().any(|c| c.image.as_deref() == Some("nginx")),
                            has_nginx,
                            "{what} ({source:?})"
                        );
                        let mut images: Vec<_> = kept.iter().map(|c| &c.image).collect();
                        images.sort();
                        images.dedup();
                        let distinct_kept = images.len();
                        assert!(distinct_kept <= MAX_CONTAINERS, "{what}");
                    }
                    (Err(e), Err(text)) => assert!(e.to_string().ends_with(text), "{what}: {e}"),
                    _ => panic!("{what} ({source:?}): {read:?}"),
                }
            }
        }
    }

    /// Past the cap, the images kept are still judged: a refused one fails the object, and
    /// images left unread make it an error, never a pass; either way the result says so.
    #[test]
    fn an_object_past_the_cap_is_judged_on_what_was_kept() {
        let config = Config::default();
        let platform = |i: usize| json!({ "name": format!("c{i}"), "image": "docker-registry.tools.wmflabs.org/a:1" });
        let distinct = |i: usize| json!({ "name": format!("d{i}"), "image": format!("docker-registry.tools.wmflabs.org/d{i}:1") });
        let pod = |containers: Vec<Value>, ephemeral: Vec<Value>| {
            Trimmed::from_value(
                Source::Pod,
                &json!({ "metadata": { "name": "p", "namespace": "tool-a", "uid": "p" },
                    "spec": { "containers": containers, "ephemeralContainers": ephemeral },
                    "status": { "phase": "Running" } }),
            )
            .unwrap()
        };
        let nginx = json!({ "name": "debugger", "image": "nginx" });
        // 300 containers of one allowed image, then a refused ephemeral one: it fails.
        let hidden = pod((0..300).map(platform).collect(), vec![nginx.clone()]);
        let [v] = &judge_namespace(&config, &Allowance::default(), now(), [&hidden])[..] else {
            panic!("one verdict")
        };
        let refused = v.refused.as_ref().expect("judged");
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].image, "nginx");
        assert!(
            v.images
                .iter()
                .any(|u| u.image == "nginx" && u.allowed_by.is_none())
        );
        assert_eq!(
            v.notice.as_deref(),
            Some(
                "Pod tool-a/p: 173 more containers and image volumes not listed, with images \
                 among those judged (at most 128 are kept per pod spec)"
            )
        );
        assert_eq!(v.unjudged, 0, "their images are among those judged");
        // 200 distinct allowed images: what was read passes, the rest is unknown: an error.
        let wide = pod((0..200).map(distinct).collect(), Vec::new());
        let [v] = &judge_namespace(&config, &Allowance::default(), now(), [&wide])[..] else {
            panic!("one verdict")
        };
        assert_eq!(v.images.len(), MAX_CONTAINERS);
        assert_eq!(v.unjudged, 72);
        assert_eq!(
            v.refused.as_ref().unwrap_err(),
            "Pod tool-a/p: 72 more containers and image volumes not listed, 72 of them with \
             images not judged (at most 128 distinct images are kept per pod spec)"
        );
        // ... unless one read is refused: then it fails, with the notice.
        let mut containers: Vec<Value> = (0..200).map(distinct).collect();
        containers.insert(3, nginx);
        let [v] = &judge_namespace(
            &config,
            &Allowance::default(),
            now(),
            [&pod(containers, Vec::new())],
        )[..] else {
            panic!("one verdict")
        };
        assert_eq!(v.refused.as_ref().unwrap().len(), 1);
        assert!(
            v.notice
                .as_deref()
                .unwrap()
                .contains("73 of them with images not judged")
        );
        // Under the cap: no notice.
        let small = pod((0..3).map(platform).collect(), Vec::new());
        let [v] = &judge_namespace(&config, &Allowance::default(), now(), [&small])[..] else {
            panic!("one verdict")
        };
        assert_eq!(
            (v.notice.as_deref(), v.refused.as_ref().map(|r| r.len())),
            (None, Ok(0))
        );
    }

    /// Pods and workloads whose `managedFields`, and whose pod template's, nest 130 and 5,000
    /// levels deep (both stored by the API server from a merge patch) read from their text.
    #[test]
    fn deep_managed_fields_are_skipped() {
        for depth in [130, 5_000] {
            let deep = byoc_api::lenient::nested_managed_fields("v1", depth);
            let meta = format!(
                r#""metadata":{{"name":"w","namespace":"tool-a","uid":"u","managedFields":{deep}}}"#
            );
            let pod_spec = r#"{"containers":[{"name":"app","image":"quay.io/a"}]}"#;
            let spec = format!(r#"{{{meta},"spec":{pod_spec}}}"#);
            let cases = [
                (
                    Source::Pod,
                    format!(r#"{{{meta},"spec":{pod_spec},"status":{{"phase":"Running"}}}}"#),
                ),
                (
                    Source::PodTemplate,
                    format!(r#"{{{meta},"template":{spec}}}"#),
                ),
                (
                    Source::Deployment,
                    format!(r#"{{{meta},"spec":{{"template":{spec}}}}}"#),
                ),
                (
                    Source::CronJob,
                    format!(
                        r#"{{{meta},"spec":{{"jobTemplate":{{{meta},"spec":{{"template":{spec}}}}}}}}}"#
                    ),
                ),
            ];
            for (source, text) in cases {
                assert!(
                    serde_json::from_str::<Value>(&text).is_err(),
                    "{source:?} {depth}: a Value reads it"
                );
                let read = match source {
                    Source::Pod => serde_json::from_str::<Of<Pod>>(&text).map(|o| o.object),
                    Source::Deployment => {
                        serde_json::from_str::<Of<Deployment>>(&text).map(|o| o.object)
                    }
                    Source::CronJob => serde_json::from_str::<Of<CronJob>>(&text).map(|o| o.object),
                    _ => TrimmedSeed(source)
                        .deserialize(&mut serde_json::Deserializer::from_str(&text)),
                }
                .unwrap_or_else(|e| panic!("{source:?} at {depth}: {e}"));
                assert_eq!(read.name(), "w", "{source:?}");
                assert_eq!(read.uid(), "u", "{source:?}");
                let images: Vec<_> = read
                    .containers
                    .unwrap()
                    .into_iter()
                    .map(|c| c.image)
                    .collect();
                assert_eq!(images, [Some("quay.io/a".to_owned())], "{source:?}");
            }
        }
    }
}

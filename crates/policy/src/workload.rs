//! Where each pod-bearing kind keeps its pod spec, and the images in it: those of its
//! containers and those of its image volumes (`volumes[].image.reference`, the ImageVolume
//! feature), which the kubelet pulls exactly like a container image.

use std::collections::HashSet;
use std::fmt;
use std::hash::Hash;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
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

    /// The containers and image volumes of `object` (a whole Kubernetes object as JSON), in
    /// that order. A missing pod spec has none; a pod spec of the wrong shape is an error.
    pub fn containers(self, object: &Value) -> Result<Vec<Container>, ShapeError> {
        let mut reading = Reading::default();
        match Any(At::new(&ROOT, &mut reading)).deserialize(object) {
            Ok(()) => reading.finish().take(self),
            // A value holds no key twice, the only thing reading it refuses.
            Err(e) => Err(ShapeError(e.to_string())),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A pod spec whose container lists do not have the shape Kubernetes defines.
#[derive(Clone, Debug, Error, PartialEq)]
#[error("malformed pod spec: {0}")]
pub struct ShapeError(String);

/// The containers and image volumes of one object on each path a pod-bearing kind keeps its pod
/// spec on, so that they can be read before the object's kind is known; with a capped reader,
/// also what each pod spec left out.
#[derive(Clone, Debug, PartialEq)]
pub struct PodSpecs([Result<Vec<Container>, ShapeError>; 4], [LeftOut; 4]);

impl Default for PodSpecs {
    fn default() -> Self {
        Self(
            std::array::from_fn(|_| Ok(Vec::new())),
            [LeftOut::default(); 4],
        )
    }
}

/// What a capped reader ([`PodSpecReader::capped`]) did not keep of one pod spec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeftOut {
    /// Containers and image volumes not kept.
    pub containers: usize,
    /// Of those, how many have an image that no kept one has: their images were not read.
    pub unread_images: usize,
}

impl std::ops::Add for LeftOut {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            containers: self.containers + other.containers,
            unread_images: self.unread_images + other.unread_images,
        }
    }
}

impl PodSpecs {
    /// The containers and image volumes where `bearing` keeps its pod spec, as
    /// [`PodBearing::containers`] reads them.
    pub fn get(&self, bearing: PodBearing) -> Result<&[Container], &ShapeError> {
        self.0[bearing.index()].as_deref()
    }

    /// Only the pod spec of `bearing` (none: no pod spec).
    pub fn only(mut self, bearing: Option<PodBearing>) -> Self {
        for (i, (spec, left_out)) in self.0.iter_mut().zip(&mut self.1).enumerate() {
            if bearing.is_none_or(|b| b.index() != i) {
                *spec = Ok(Vec::new());
                *left_out = LeftOut::default();
            }
        }
        self
    }

    /// The containers and image volumes where `bearing` keeps its pod spec, taken out.
    pub fn take(mut self, bearing: PodBearing) -> Result<Vec<Container>, ShapeError> {
        std::mem::replace(&mut self.0[bearing.index()], Ok(Vec::new()))
    }

    /// What a capped reader left out of the pod spec of `bearing`.
    pub fn left_out(&self, bearing: PodBearing) -> LeftOut {
        self.1[bearing.index()]
    }
}

/// Reads [`PodSpecs`] as an object streams by: of each container and image volume only its
/// name and image are kept, and everything else is skipped unparsed. A value of the wrong type
/// makes the pod spec it is in malformed; only a key repeated on a kept path fails the read
/// (which of the two is meant must not be a guess).
#[derive(Debug, Default)]
pub struct PodSpecReader(Reading);

impl PodSpecReader {
    /// A reader that keeps at most `max` containers and image volumes per pod spec, one per
    /// distinct image first: past `max`, a container whose image is already kept is left out,
    /// and one with a new image takes the place of a kept one whose image another kept one
    /// has, or is left out with its image unread when all `max` images differ ([`LeftOut`]).
    /// For readers that keep what they read (the inventory), never for decisions.
    pub fn capped(max: usize) -> Self {
        Self(Reading {
            max: Some(max),
            ..Reading::default()
        })
    }

    /// A seed reading the value of the object's root key `key`, if it may hold a pod spec.
    pub fn seed<'de>(&mut self, key: &str) -> Option<impl DeserializeSeed<'de, Value = ()> + '_> {
        let (_, step) = ROOT.next.iter().find(|(k, _)| *k == key)?;
        Some(Any(At::new(step, &mut self.0)))
    }

    /// What was read.
    pub fn finish(self) -> PodSpecs {
        self.0.finish()
    }
}

/// A place on the way to a pod spec.
struct Step {
    /// Its path from the object's root, for messages.
    path: &'static str,
    /// The kinds whose pod spec path goes through it.
    through: &'static [PodBearing],
    /// The kind whose pod spec it is, if any.
    spec_of: Option<PodBearing>,
    /// The keys that lead on.
    next: &'static [(&'static str, &'static Step)],
}

static ROOT: Step = Step {
    path: "",
    through: &[],
    spec_of: None,
    next: &[("spec", &SPEC), ("template", &TEMPLATE)],
};
static SPEC: Step = Step {
    path: ".spec",
    through: &[PodBearing::Pod, PodBearing::Workload, PodBearing::CronJob],
    spec_of: Some(PodBearing::Pod),
    next: &[("template", &SPEC_TEMPLATE), ("jobTemplate", &JOB_TEMPLATE)],
};
static SPEC_TEMPLATE: Step = Step {
    path: ".spec.template",
    through: &[PodBearing::Workload],
    spec_of: None,
    next: &[("spec", &WORKLOAD_SPEC)],
};
static WORKLOAD_SPEC: Step = Step {
    path: ".spec.template.spec",
    through: &[PodBearing::Workload],
    spec_of: Some(PodBearing::Workload),
    next: &[],
};
static JOB_TEMPLATE: Step = Step {
    path: ".spec.jobTemplate",
    through: &[PodBearing::CronJob],
    spec_of: None,
    next: &[("spec", &JOB_SPEC)],
};
static JOB_SPEC: Step = Step {
    path: ".spec.jobTemplate.spec",
    through: &[PodBearing::CronJob],
    spec_of: None,
    next: &[("template", &JOB_POD_TEMPLATE)],
};
static JOB_POD_TEMPLATE: Step = Step {
    path: ".spec.jobTemplate.spec.template",
    through: &[PodBearing::CronJob],
    spec_of: None,
    next: &[("spec", &CRON_JOB_SPEC)],
};
static CRON_JOB_SPEC: Step = Step {
    path: ".spec.jobTemplate.spec.template.spec",
    through: &[PodBearing::CronJob],
    spec_of: Some(PodBearing::CronJob),
    next: &[],
};
static TEMPLATE: Step = Step {
    path: ".template",
    through: &[PodBearing::PodTemplate],
    spec_of: None,
    next: &[("spec", &POD_TEMPLATE_SPEC)],
};
static POD_TEMPLATE_SPEC: Step = Step {
    path: ".template.spec",
    through: &[PodBearing::PodTemplate],
    spec_of: Some(PodBearing::PodTemplate),
    next: &[],
};

/// The lists of a pod spec the policy reads, in the order their items are returned.
const LISTS: [(&str, ContainerKind); 4] = [
    ("containers", ContainerKind::Container),
    ("initContainers", ContainerKind::InitContainer),
    ("ephemeralContainers", ContainerKind::EphemeralContainer),
    ("volumes", ContainerKind::ImageVolume),
];

/// The longest container name or image a capped reader keeps: a valid reference is at most 255
/// bytes of name, a 128-byte tag and a digest.
const MAX_KEPT_BYTES: usize = 1024;

/// What was read so far, for each kind: its lists, or why its pod spec is malformed. Of
/// several reasons, the one kept is the first in a fixed order (lists in [`LISTS`] order, items
/// in array order, fields name first), whatever the order of the keys.
#[derive(Debug, Default)]
struct Reading {
    lists: [[Vec<Container>; 4]; 4],
    errors: [Option<(ContainerKind, ShapeError)>; 4],
    /// How many containers and image volumes each pod spec may keep ([`PodSpecReader::capped`]).
    max: Option<usize>,
    /// What each pod spec left out.
    left_out: [LeftOut; 4],
    /// How many kept containers of each pod spec have an image an earlier kept one has.
    duplicates: [usize; 4],
}

impl Reading {
    /// Records why the pod specs of `bearings` are malformed, found in the list of `kind` (or
    /// on the way to it: any).
    fn fail(&mut self, bearings: &[PodBearing], kind: ContainerKind, why: impl Fn() -> String) {
        for bearing in bearings {
            let i = bearing.index();
            if self.errors[i].as_ref().is_none_or(|(k, _)| kind < *k) {
                self.errors[i] = Some((kind, ShapeError(why())));
                self.lists[i] = Default::default();
            }
        }
    }

    /// Whether the list of `kind` of `bearing` can hold no reason kept any more.
    fn decided(&self, bearing: PodBearing, kind: ContainerKind) -> bool {
        self.errors[bearing.index()]
            .as_ref()
            .is_some_and(|(k, _)| *k <= kind)
    }

    fn push(&mut self, bearing: PodBearing, container: Container) {
        let i = bearing.index();
        let long = container
            .name
            .len()
            .max(container.image.as_ref().map_or(0, String::len));
        if self.max.is_some() && long > MAX_KEPT_BYTES {
            self.fail(&[bearing], container.kind, || {
                format!(
                    "a {} name or image of {long} bytes, longer than the {MAX_KEPT_BYTES} read",
                    container.kind
                )
            });
            return;
        }
        if self.errors[i].is_some() {
            return;
        }
        let lists = &mut self.lists[i];
        let Some(max) = self.max else {
            lists[container.kind as usize].push(container);
            return;
        };
        let known = lists.iter().flatten().any(|c| c.image == container.image);
        if lists.iter().map(Vec::len).sum::<usize>() < max {
            self.duplicates[i] += usize::from(known);
            lists[container.kind as usize].push(container);
            return;
        }
        self.left_out[i].containers += 1;
        if known {
            return;
        }
        let evict = (self.duplicates[i] > 0)
            .then(|| last_duplicate(lists))
            .flatten();
        match evict {
            Some((list, at)) => {
                lists[list].remove(at);
                lists[container.kind as usize].push(container);
                self.duplicates[i] -= 1;
            }
            None => self.left_out[i].unread_images += 1,
        }
    }

    fn finish(self) -> PodSpecs {
        let mut errors = self.errors.into_iter();
        PodSpecs(
            self.lists.map(|lists| match errors.next().flatten() {
                Some((_, error)) => Err(error),
                None => Ok(lists.into_iter().flatten().collect()),
            }),
            self.left_out,
        )
    }
}

/// The last kept container (list, index) whose image an earlier kept one has too.
fn last_duplicate(lists: &[Vec<Container>; 4]) -> Option<(usize, usize)> {
    let kept: Vec<(usize, usize, &Container)> = lists
        .iter()
        .enumerate()
        .flat_map(|(l, list)| list.iter().enumerate().map(move |(i, c)| (l, i, c)))
        .collect();
    kept.iter()
        .enumerate()
        .rev()
        .find(|(n, (_, _, c))| kept[..*n].iter().any(|(_, _, e)| e.image == c.image))
        .map(|(_, (l, i, _))| (*l, *i))
}

/// The JSON type of a value, for messages.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Type {
    Null,
    Boolean,
    Number,
    String,
    Array,
    Object,
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Null => "null",
            Self::Boolean => "a boolean",
            Self::Number => "a number",
            Self::String => "a string",
            Self::Array => "an array",
            Self::Object => "an object",
        })
    }
}

/// Reads one value of any type: what is kept of it, given its type. Values not kept are
/// skipped unparsed.
trait Lenient<'de>: Sized {
    type Value;

    /// A value of type `found` that is not read further.
    fn other(self, found: Type) -> Self::Value;

    fn text(self, _: &str) -> Self::Value {
        self.other(Type::String)
    }

    fn array<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(self.other(Type::Array))
    }

    fn object<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(self.other(Type::Object))
    }
}

/// A [`Lenient`] read as a serde seed.
struct Any<T>(T);

impl<'de, T: Lenient<'de>> DeserializeSeed<'de> for Any<T> {
    type Value = T::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, T: Lenient<'de>> Visitor<'de> for Any<T> {
    type Value = T::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<T::Value, E> {
        Ok(self.0.other(Type::Boolean))
    }

    fn visit_i64<E>(self, _: i64) -> Result<T::Value, E> {
        Ok(self.0.other(Type::Number))
    }

    fn visit_u64<E>(self, _: u64) -> Result<T::Value, E> {
        Ok(self.0.other(Type::Number))
    }

    fn visit_f64<E>(self, _: f64) -> Result<T::Value, E> {
        Ok(self.0.other(Type::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<T::Value, E> {
        Ok(self.0.text(v))
    }

    fn visit_unit<E>(self) -> Result<T::Value, E> {
        Ok(self.0.other(Type::Null))
    }

    fn visit_none<E>(self) -> Result<T::Value, E> {
        Ok(self.0.other(Type::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<T::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T::Value, A::Error> {
        self.0.array(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T::Value, A::Error> {
        self.0.object(map)
    }
}

/// A map key looked up among `keys`, without allocating it: its index, if it is one.
struct Key<'k>(&'k [&'k str]);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for Key<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|k| *k == v))
    }
}

/// Reads the entries of `map` whose key is one of `keys` with `read` (given the key's index),
/// skipping the others; fails on a key read twice.
pub(crate) fn entries<'de, A: MapAccess<'de>>(
    mut map: A,
    keys: &[&str],
    mut read: impl FnMut(usize, &mut A) -> Result<(), A::Error>,
) -> Result<(), A::Error> {
    let mut seen = 0u16;
    while let Some(key) = map.next_key_seed(Key(keys))? {
        let Some(i) = key else {
            map.next_value::<IgnoredAny>()?;
            continue;
        };
        if seen & 1 << i != 0 {
            return Err(de::Error::custom(format_args!(
                "duplicate key {:?}",
                keys[i]
            )));
        }
        seen |= 1 << i;
        read(i, &mut map)?;
    }
    Ok(())
}

/// A value at a [`Step`].
struct At<'a> {
    step: &'static Step,
    reading: &'a mut Reading,
}

impl<'a> At<'a> {
    fn new(step: &'static Step, reading: &'a mut Reading) -> Self {
        Self { step, reading }
    }
}

impl<'de> Lenient<'de> for At<'_> {
    type Value = ();

    fn other(self, found: Type) {
        if found != Type::Null {
            let path = self.step.path;
            self.reading
                .fail(self.step.through, ContainerKind::Container, || {
                    format!("{path} is {found}, not an object")
                });
        }
    }

    fn object<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let (step, reading) = (self.step, self.reading);
        let lists: &[_] = if step.spec_of.is_some() { &LISTS } else { &[] };
        let keys = lists.iter().map(|(k, _)| *k);
        let keys: Vec<&str> = keys.chain(step.next.iter().map(|(k, _)| *k)).collect();
        entries(map, &keys, |i, map| match (step.spec_of, lists.get(i)) {
            (Some(bearing), Some(&(key, kind))) => map.next_value_seed(Any(List {
                bearing,
                kind,
                path: step.path,
                key,
                reading: &mut *reading,
            })),
            _ => {
                let next = step.next[i - lists.len()].1;
                map.next_value_seed(Any(At::new(next, &mut *reading)))
            }
        })
    }
}

/// A container list or `volumes` of the pod spec of `bearing`.
struct List<'a> {
    bearing: PodBearing,
    kind: ContainerKind,
    path: &'static str,
    key: &'static str,
    reading: &'a mut Reading,
}

impl<'de> Lenient<'de> for List<'_> {
    type Value = ();

    fn other(self, found: Type) {
        if found != Type::Null {
            let (path, key) = (self.path, self.key);
            self.reading.fail(&[self.bearing], self.kind, || {
                format!("{path}.{key} is {found}, not an array")
            });
        }
    }

    fn array<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (bearing, kind) = (self.bearing, self.kind);
        for i in 0.. {
            if self.reading.decided(bearing, kind) {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                break;
            }
            let Some(item) = seq.next_element_seed(Any(Item(kind)))? else {
                break;
            };
            match item {
                Ok(Some(container)) => self.reading.push(bearing, container),
                Ok(None) => {}
                Err(why) => {
                    let (path, key) = (self.path, self.key);
                    self.reading
                        .fail(&[bearing], kind, || format!("{path}.{key}[{i}]{why}"));
                }
            }
        }
        Ok(())
    }
}

/// One container or volume: the container, if it is one (a volume without an image source is
/// not), or what is wrong with it, from its own path on.
struct Item(ContainerKind);

impl<'de> Lenient<'de> for Item {
    type Value = Result<Option<Container>, String>;

    fn other(self, found: Type) -> Self::Value {
        Err(format!(" is {found}, not an object"))
    }

    fn object<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let kind = self.0;
        let (mut name, mut image, mut source) = (None, None, None);
        entries(map, &["name", "image"], |i, map| {
            match i {
                0 => name = Some(map.next_value_seed(Any(Leaf))?),
                _ if kind == ContainerKind::ImageVolume => {
                    source = Some(map.next_value_seed(Any(VolumeImage))?);
                }
                _ => image = Some(map.next_value_seed(Any(Leaf))?),
            }
            Ok(())
        })?;
        Ok(item(kind, name, image, source))
    }
}

/// The container of an item whose fields read as given (`None`: absent), checked in a fixed
/// order, whatever the order of the keys.
fn item(
    kind: ContainerKind,
    name: Option<Result<Option<String>, Type>>,
    image: Option<Result<Option<String>, Type>>,
    source: Option<Result<Option<Option<String>>, String>>,
) -> Result<Option<Container>, String> {
    let name = match name {
        None => String::new(),
        Some(Ok(Some(name))) => name,
        Some(Ok(None)) => return Err(format!(".name is {}, not a string", Type::Null)),
        Some(Err(found)) => return Err(format!(".name is {found}, not a string")),
    };
    let image = if kind == ContainerKind::ImageVolume {
        match source.unwrap_or(Ok(None))? {
            Some(reference) => reference,
            None => return Ok(None),
        }
    } else {
        let image = image.unwrap_or(Ok(None));
        image.map_err(|found| format!(".image is {found}, not a string"))?
    };
    Ok(Some(Container { kind, name, image }))
}

/// A volume's `image` source: absent (`None`), or its reference, or what is wrong with it.
struct VolumeImage;

impl<'de> Lenient<'de> for VolumeImage {
    type Value = Result<Option<Option<String>>, String>;

    fn other(self, found: Type) -> Self::Value {
        match found {
            Type::Null => Ok(None),
            _ => Err(format!(".image is {found}, not an object")),
        }
    }

    fn object<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let mut reference = Ok(None);
        entries(map, &["reference"], |_, map| {
            reference = map.next_value_seed(Any(Leaf))?;
            Ok(())
        })?;
        Ok(reference
            .map(Some)
            .map_err(|found| format!(".image.reference is {found}, not a string")))
    }
}

/// A string (`None` for null), or the type of a value that is none.
struct Leaf;

impl Lenient<'_> for Leaf {
    type Value = Result<Option<String>, Type>;

    fn other(self, found: Type) -> Self::Value {
        match found {
            Type::Null => Ok(None),
            _ => Err(found),
        }
    }

    fn text(self, v: &str) -> Self::Value {
        Ok(Some(v.to_owned()))
    }
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

    /// What a stream of `text` reads for each kind, with [`PodSpecReader`] as `crate::read`
    /// uses it.
    fn streamed(text: &str) -> Result<PodSpecs, serde_json::Error> {
        struct Root;
        impl<'de> Visitor<'de> for Root {
            type Value = PodSpecs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PodSpecs, A::Error> {
                let mut reader = PodSpecReader::default();
                while let Some(key) = map.next_key::<String>()? {
                    match reader.seed(&key) {
                        Some(seed) => map.next_value_seed(seed)?,
                        None => map.next_value::<IgnoredAny>().map(drop)?,
                    }
                }
                Ok(reader.finish())
            }
        }
        serde_json::Deserializer::from_str(text).deserialize_map(Root)
    }

    #[test]
    fn a_stream_reads_as_a_value_does_whatever_the_key_order() {
        let texts = [
            // Every path at once, lists out of order, fields out of order.
            r#"{"template": {"spec": {"volumes": [{"image": {"reference": "x.org/t"}, "name": "t"}]}},
                "spec": {"volumes": [{"name": "v", "image": null}], "containers": [{"image": "x.org/p", "name": "p"}],
                         "template": {"spec": {"initContainers": [{"name": "w", "image": "x.org/w"}]}},
                         "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}}}}"#,
            // Several reasons: the one named is the first in a fixed order, not in the text's.
            r#"{"spec": {"volumes": 7, "initContainers": [{"name": "i", "image": 1}], "containers": "x"}}"#,
            r#"{"spec": {"containers": "x", "initContainers": [{"image": 1, "name": "i"}], "volumes": 7}}"#,
            r#"{"spec": {"containers": [{"image": [1], "name": {}}, 3]}}"#,
            r#"{"spec": {"containers": [{"name": {}, "image": [1]}, 3]}}"#,
            r#"{"spec": {"template": 3, "jobTemplate": {"spec": []}}, "template": {"spec": null}}"#,
            r#"{"spec": {"volumes": [{"name": "v", "image": {"reference": false}}, {"name": null}]}}"#,
        ];
        let bearings = [
            PodBearing::Pod,
            PodBearing::PodTemplate,
            PodBearing::Workload,
            PodBearing::CronJob,
        ];
        for text in texts {
            let value: Value = serde_json::from_str(text).unwrap();
            let specs = streamed(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            for bearing in bearings {
                assert_eq!(
                    specs.get(bearing),
                    bearing.containers(&value).as_deref(),
                    "{bearing:?} {text}"
                );
            }
        }
        let malformed = |text: &str, bearing: PodBearing| match streamed(text).unwrap().get(bearing)
        {
            Ok(c) => panic!("{text}: {c:?}"),
            Err(e) => e.to_string(),
        };
        assert_eq!(
            malformed(texts[1], PodBearing::Pod),
            "malformed pod spec: .spec.containers is a string, not an array"
        );
        assert_eq!(
            malformed(texts[3], PodBearing::Pod),
            "malformed pod spec: .spec.containers[0].name is an object, not a string"
        );
        assert_eq!(
            malformed(texts[5], PodBearing::Workload),
            "malformed pod spec: .spec.template is a number, not an object"
        );
        assert_eq!(
            malformed(texts[5], PodBearing::CronJob),
            "malformed pod spec: .spec.jobTemplate.spec is an array, not an object"
        );
        assert_eq!(
            malformed(texts[6], PodBearing::Pod),
            "malformed pod spec: .spec.volumes[0].image.reference is a boolean, not a string"
        );
        // A key twice on a kept path fails the read; elsewhere it is skipped.
        for (text, fails) in [
            (r#"{"spec": {"containers": [], "containers": []}}"#, true),
            (
                r#"{"spec": {"containers": [{"image": "a", "image": "b"}]}}"#,
                true,
            ),
            (
                r#"{"spec": {"containers": [{"env": 1, "env": 2}], "status": 1, "status": 2}}"#,
                false,
            ),
        ] {
            assert_eq!(streamed(text).is_err(), fails, "{text}");
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

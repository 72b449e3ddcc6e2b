//! Reading the Kubernetes objects the operator watches and lists without failing on fields it
//! does not use, and without reading them whole.
//!
//! Two things in `metadata` make a typed read of an object (and so every list or watch holding
//! it) fail, and whoever may patch the object can write both:
//!
//! - `managedFields[].fieldsV1` is free-form JSON, stored nested thousands of levels deep;
//!   reading it (into `serde_json::Value`, as k8s-openapi's `FieldsV1` does, or into serde's
//!   buffer for `flatten` and untagged enums) stops at serde_json's recursion limit of 128.
//! - k8s-openapi reads every timestamp as a `jiff::Timestamp`, whose range ends on
//!   9999-12-30T22:00Z; the API server (Go) stores anything up to 9999-12-31T23:59:59Z, in
//!   `managedFields[].time` or a status condition.
//!
//! The readers here stream: what is not used is skipped unparsed by serde_json's iterative
//! `ignore_value`, which has no depth limit, and nothing is first read into a `Value`:
//!
//! - [`object_meta`] reads `metadata` without `managedFields`, and without a
//!   `creationTimestamp` that does not read;
//! - [`Lenient`] reads any object (a typed resource, a `DynamicObject`) with its metadata read
//!   so;
//! - [`LeanNamespace`] is a Namespace as the operator uses it: metadata only, read so, its
//!   `spec` and `status` skipped.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Resource;
use kube::core::ClusterResourceScope;
use serde::de::value::StringDeserializer;
use serde::de::{self, DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// Reads an object's `metadata` without the fields the operator never uses and clients may
/// write in forms Rust cannot read: `managedFields` is skipped unparsed, and so is a
/// `creationTimestamp` that does not read. Fails only when what remains does not read (a name
/// that is not a string, a label value that is not a string: nothing the API server stores).
///
/// Usable as `#[serde(deserialize_with = "object_meta")]`, and on a `serde_json::Value`.
pub fn object_meta<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ObjectMeta, D::Error> {
    ObjectMeta::deserialize(Filtered {
        inner: deserializer,
        level: Level::Metadata,
    })
}

/// An object's `metadata` read by [`object_meta`], for fields and lists of it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Meta(pub ObjectMeta);

impl<'de> Deserialize<'de> for Meta {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        object_meta(deserializer).map(Self)
    }
}

/// Where in an object a [`Filtered`] deserializer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    /// The object: its `metadata` is read by [`object_meta`], the rest as the target reads it.
    Object,
    /// Its `metadata`: `managedFields` and an unreadable `creationTimestamp` are skipped.
    Metadata,
}

/// A deserializer that hands its target the entries of a map minus what [`Level`] skips.
struct Filtered<D> {
    inner: D,
    level: Level,
}

/// The value of the entry a [`Entries`] has read ahead, if any.
enum Pending {
    /// The next value is read from the inner map, filtered at this level.
    Filter(Level),
    /// The next value is this readable `creationTimestamp`.
    Time(String),
}

/// The entries of a map, minus what `level` skips.
struct Entries<A> {
    map: A,
    level: Level,
    pending: Option<Pending>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Entries<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        while let Some(key) = self.map.next_key::<String>()? {
            match (self.level, key.as_str()) {
                (Level::Object, "metadata") => {
                    self.pending = Some(Pending::Filter(Level::Metadata))
                }
                (Level::Metadata, "managedFields") => {
                    self.map.next_value::<IgnoredAny>()?;
                    continue;
                }
                (Level::Metadata, "creationTimestamp") => match self.map.next_value::<Lossy>()?.0 {
                    Some(t) if readable_time(&t) => self.pending = Some(Pending::Time(t)),
                    _ => continue,
                },
                _ => {}
            }
            return seed.deserialize(StringDeserializer::new(key)).map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        match self.pending.take() {
            None => self.map.next_value_seed(seed),
            Some(Pending::Filter(level)) => self.map.next_value_seed(FilteredSeed { seed, level }),
            Some(Pending::Time(t)) => seed
                .deserialize(serde_json::Value::String(t))
                .map_err(A::Error::custom),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

fn readable_time(t: &str) -> bool {
    Time::deserialize(serde_json::Value::String(t.to_owned())).is_ok()
}

/// Deserializes `seed` from a [`Filtered`] deserializer.
struct FilteredSeed<S> {
    seed: S,
    level: Level,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for FilteredSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(Filtered {
            inner: deserializer,
            level: self.level,
        })
    }
}

/// The target's visitor, handed [`Entries`] instead of the map.
struct FilteredVisitor<V> {
    visitor: V,
    level: Level,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for FilteredVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.visitor.visit_map(Entries {
            map,
            level: self.level,
            pending: None,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.visitor.visit_seq(seq)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        self.visitor.visit_some(Filtered {
            inner: deserializer,
            level: self.level,
        })
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.visitor.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.visitor.visit_unit()
    }
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Filtered<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let level = self.level;
        self.inner
            .deserialize_any(FilteredVisitor { visitor, level })
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let level = self.level;
        self.inner
            .deserialize_map(FilteredVisitor { visitor, level })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let level = self.level;
        self.inner
            .deserialize_struct(name, fields, FilteredVisitor { visitor, level })
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let level = self.level;
        self.inner
            .deserialize_option(FilteredVisitor { visitor, level })
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_ignored_any(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct newtype_struct seq tuple tuple_struct enum identifier
    }
}

/// A string, or `None` for any other value, which is skipped unparsed: never fails on a value
/// that is well-formed JSON, however deep.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lossy(pub Option<String>);

impl<'de> Deserialize<'de> for Lossy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LossyVisitor)
    }
}

struct LossyVisitor;

impl<'de> Visitor<'de> for LossyVisitor {
    type Value = Lossy;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Lossy, E> {
        Ok(Lossy(Some(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Lossy, E> {
        Ok(Lossy(Some(v)))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Lossy, E> {
        Ok(Lossy(None))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Lossy, E> {
        Ok(Lossy(None))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Lossy, E> {
        Ok(Lossy(None))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Lossy, E> {
        Ok(Lossy(None))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Lossy, E> {
        Ok(Lossy(None))
    }

    fn visit_none<E: de::Error>(self) -> Result<Lossy, E> {
        Ok(Lossy(None))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Lossy, D::Error> {
        Lossy::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Lossy, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Lossy(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Lossy, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Lossy(None))
    }
}

/// Any resource whose metadata is read by [`object_meta`]: it never fails on `managedFields`,
/// and never reads them. The rest is read as `K` reads it: a typed resource skips what it does
/// not name, but a `DynamicObject` buffers everything else into a `Value`, which fails on
/// deep JSON there (a pod template's `managedFields`); pod-bearing objects are read as
/// `byoc_policy::inventory::Of<K>` instead.
#[derive(Clone, Debug, PartialEq)]
pub struct Lenient<K>(pub K);

impl<'de, K: Deserialize<'de>> Deserialize<'de> for Lenient<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        FilteredSeed {
            seed: PhantomData::<K>,
            level: Level::Object,
        }
        .deserialize(deserializer)
        .map(Self)
    }
}

/// Written as the object itself, so an `Api<Lenient<K>>` can also send objects (`replace`,
/// `replace_status`) and read the answer leniently.
impl<K: Serialize> Serialize for Lenient<K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<K: Resource> Resource for Lenient<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        self.0.meta()
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.meta_mut()
    }
}

/// A Namespace as the operator reads it: its metadata (name, labels, resourceVersion,
/// deletionTimestamp, ...), read by [`object_meta`]; `spec` and `status` (whose condition times
/// a client may write through `namespaces/status`) are not read at all.
///
/// It is the `v1` `namespaces` resource, so `Api`, `watcher`, `Controller` and `patch` work
/// with it. Only a namespace without a string name fails to read; one whose other metadata
/// does not read is read as its name alone, which carries no labels and so grants nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeanNamespace {
    /// The namespace's metadata.
    pub metadata: ObjectMeta,
}

impl<'de> Deserialize<'de> for LeanNamespace {
    /// Reads a Namespace object (full or metadata-only). Its `metadata` is first taken as
    /// raw text (skipped unparsed), then read by [`object_meta`], or for its name alone.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Object {
            metadata: Option<Box<RawValue>>,
        }
        #[derive(Deserialize)]
        struct Named {
            name: String,
        }
        let no_name = || D::Error::custom("a Namespace without metadata.name");
        let raw = Object::deserialize(deserializer)?
            .metadata
            .ok_or_else(no_name)?;
        let metadata = match serde_json::from_str::<Meta>(raw.get()) {
            Ok(Meta(metadata)) if metadata.name.is_some() => metadata,
            _ => ObjectMeta {
                name: Some(
                    serde_json::from_str::<Named>(raw.get())
                        .map_err(|_| no_name())?
                        .name,
                ),
                ..ObjectMeta::default()
            },
        };
        Ok(Self { metadata })
    }
}

impl LeanNamespace {
    /// Keeps only what the operator reads of a namespace: its identity (name, uid, version,
    /// times) and the labels and annotations under [`crate::labels::PREFIX`]. A tenant who may
    /// patch its namespace can give it megabytes of labels of its own; in a cache of every
    /// namespace they then cost nothing.
    pub fn retain_ours(&mut self) {
        let meta = &mut self.metadata;
        for map in [&mut meta.labels, &mut meta.annotations]
            .into_iter()
            .flatten()
        {
            map.retain(|key, _| crate::labels::is_owned_key(key));
        }
        meta.owner_references = None;
        meta.finalizers = None;
    }
}

impl Resource for LeanNamespace {
    type DynamicType = ();
    type Scope = ClusterResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Namespace::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        Namespace::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        Namespace::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        Namespace::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A `managedFields` entry whose `fieldsV1` nests `depth` objects (`{"f:a":{"f:a":...}}`), as
/// the API server stores it from a client's merge patch: the shape the readers here must skip.
/// The API server keeps the entry only when `api_version` is the object's own. For tests, here
/// and in the crates that read objects.
pub fn nested_managed_fields(api_version: &str, depth: usize) -> String {
    format!(
        r#"[{{"manager":"tenant","operation":"Update","apiVersion":"{api_version}","fieldsType":"FieldsV1","fieldsV1":{}{}}}]"#,
        r#"{"f:a":"#.repeat(depth) + "{}",
        "}".repeat(depth)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoredGrant;

    #[test]
    fn a_namespace_keeps_only_the_byoc_labels_and_annotations() {
        let mut ns: LeanNamespace = serde_json::from_value(json!({
            "metadata": {
                "name": "tool-a", "uid": "u1", "resourceVersion": "9",
                "labels": {"byoc.toolforge.org/quay.io": "never", "team": "a",
                           "kubernetes.io/metadata.name": "tool-a",
                           "byoc.toolforge.org.evil/x": "never"},
                "annotations": {"byoc.toolforge.org/requirements": "{}", "note": "x".repeat(4096)},
                "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "x", "uid": "u"}],
                "finalizers": ["example.org/f"],
            },
        }))
        .unwrap();
        ns.retain_ours();
        let keys = |m: &Option<std::collections::BTreeMap<String, String>>| -> Vec<String> {
            m.iter().flat_map(|m| m.keys().cloned()).collect()
        };
        let meta = &ns.metadata;
        assert_eq!(keys(&meta.labels), ["byoc.toolforge.org/quay.io"]);
        assert_eq!(keys(&meta.annotations), ["byoc.toolforge.org/requirements"]);
        assert_eq!(
            (meta.owner_references.as_ref(), meta.finalizers.as_ref()),
            (None, None)
        );
        assert_eq!(
            (
                meta.name.as_deref(),
                meta.uid.as_deref(),
                meta.resource_version.as_deref()
            ),
            (Some("tool-a"), Some("u1"), Some("9"))
        );
    }
    use k8s_openapi::api::core::v1::Pod;
    use kube::ResourceExt;
    use kube::core::DynamicObject;
    use serde_json::{Value, json};

    /// Later than jiff (and so k8s-openapi `Time`) can represent, valid for the API server.
    const FAR: &str = "9999-12-31T00:00:00Z";

    fn managed(time: &str) -> Value {
        json!([
            { "manager": "kubectl", "operation": "Update", "apiVersion": "v1",
              "time": "2026-11-30T10:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {} },
            { "manager": "x", "operation": "Update", "apiVersion": "v1", "time": time,
              "fieldsType": "FieldsV1", "fieldsV1": { "f:metadata": { "f:annotations": { "f:a": {} } } } },
        ])
    }

    fn metadata(name: &str, managed_time: Option<&str>) -> Value {
        let mut m = json!({
            "name": name,
            "resourceVersion": "42",
            "creationTimestamp": "2026-11-30T09:00:00Z",
            "labels": { "byoc.toolforge.org/quay.io": "never", "team": "a" },
        });
        if let Some(t) = managed_time {
            m["managedFields"] = managed(t);
        }
        m
    }

    fn conditions(time: &str) -> Value {
        json!({ "conditions": [{ "type": "X", "status": "True", "reason": "R", "message": "",
                                 "lastTransitionTime": time }] })
    }

    fn namespace(managed_time: Option<&str>, condition_time: Option<&str>) -> Value {
        let mut ns = json!({ "apiVersion": "v1", "kind": "Namespace",
                             "metadata": metadata("tool-a", managed_time),
                             "spec": { "finalizers": ["kubernetes"] },
                             "status": { "phase": "Active" } });
        if let Some(t) = condition_time {
            ns["status"] = conditions(t);
        }
        ns
    }

    fn pod(managed_time: Option<&str>, condition_time: Option<&str>) -> Value {
        let mut pod = json!({ "apiVersion": "v1", "kind": "Pod",
                              "metadata": metadata("p", managed_time),
                              "spec": { "containers": [{ "name": "c", "image": "quay.io/x:1" }] } });
        if let Some(t) = condition_time {
            pod["status"] = conditions(t);
        }
        pod
    }

    fn grant(managed_time: Option<&str>, condition_time: Option<&str>) -> Value {
        let mut grant = json!({ "apiVersion": "byoc.toolforge.org/v1alpha1", "kind": "ByocGrant",
                                "metadata": metadata("g", managed_time),
                                "spec": { "namespace": "tool-a", "reason": "T1" },
                                "status": { "observedGeneration": 1 } });
        if let Some(t) = condition_time {
            grant["status"] = conditions(t);
        }
        grant
    }

    /// The cases every reader is run through: (what, managedFields time, condition time).
    const CASES: [(&str, Option<&str>, Option<&str>); 5] = [
        ("a normal object", None, None),
        ("normal managedFields", Some("2026-11-30T10:00:00Z"), None),
        ("a managedFields time past jiff's range", Some(FAR), None),
        ("an unparseable managedFields time", Some("yesterday"), None),
        ("a condition time past jiff's range", None, Some(FAR)),
    ];

    fn assert_meta(what: &str, meta: &ObjectMeta) {
        assert_eq!(meta.resource_version.as_deref(), Some("42"), "{what}");
        assert_eq!(
            meta.labels
                .as_ref()
                .and_then(|l| l.get("team"))
                .map(String::as_str),
            Some("a"),
            "{what}"
        );
        assert!(meta.managed_fields.is_none(), "{what}");
        assert!(meta.creation_timestamp.is_some(), "{what}");
    }

    #[test]
    fn the_typed_readers_fail_where_these_do_not() {
        // What the review found: a typed read fails on these objects.
        assert!(serde_json::from_value::<Namespace>(namespace(Some(FAR), None)).is_err());
        assert!(serde_json::from_value::<Namespace>(namespace(None, Some(FAR))).is_err());
        assert!(serde_json::from_value::<DynamicObject>(pod(Some(FAR), None)).is_err());
        assert!(serde_json::from_value::<crate::ByocGrant>(grant(Some(FAR), None)).is_err());
    }

    #[test]
    fn namespaces_read() {
        for (what, managed_time, condition_time) in CASES {
            let ns: LeanNamespace =
                serde_json::from_value(namespace(managed_time, condition_time)).unwrap();
            assert_eq!(ns.name_any(), "tool-a", "{what}");
            assert_meta(what, &ns.metadata);
        }
    }

    #[test]
    fn pods_read_as_dynamic_and_typed_objects() {
        for (what, managed_time, condition_time) in CASES {
            let Lenient(dynamic) =
                serde_json::from_value::<Lenient<DynamicObject>>(pod(managed_time, condition_time))
                    .unwrap();
            assert_eq!(dynamic.name_any(), "p", "{what}");
            assert_eq!(
                dynamic.data["spec"]["containers"][0]["image"],
                "quay.io/x:1"
            );
            assert_meta(what, &dynamic.metadata);
            if condition_time.is_none() {
                let Lenient(typed) =
                    serde_json::from_value::<Lenient<Pod>>(pod(managed_time, None)).unwrap();
                assert_meta(what, &typed.metadata);
            }
        }
    }

    #[test]
    fn grants_read() {
        for (what, managed_time, condition_time) in CASES {
            let stored: StoredGrant =
                serde_json::from_value(grant(managed_time, condition_time)).unwrap();
            let Some(g) = stored.readable() else {
                panic!("{what}: {stored:?}");
            };
            assert_eq!(g.spec.namespace, "tool-a", "{what}");
            assert_meta(what, &g.metadata);
            // An unreadable status is the controller's to rewrite; a readable one is kept.
            assert_eq!(g.status.is_some(), condition_time.is_none(), "{what}");
        }
    }

    #[test]
    fn what_the_operator_does_not_use_is_dropped_and_the_rest_is_checked() {
        let mut meta = metadata("tool-a", Some(FAR));
        meta["creationTimestamp"] = json!(FAR);
        let read = object_meta(meta).unwrap();
        assert_eq!(read.creation_timestamp, None);
        assert_eq!(read.name.as_deref(), Some("tool-a"));

        // A label that is no string: nothing the API server stores, and not read.
        let mut bad = metadata("tool-a", None);
        bad["labels"]["team"] = json!(7);
        assert!(object_meta(bad.clone()).is_err());
        // A namespace so read keeps its name and no labels: it grants nothing.
        let ns = serde_json::from_value::<LeanNamespace>(json!({ "metadata": bad })).unwrap();
        assert_eq!(ns.name_any(), "tool-a");
        assert!(ns.metadata.labels.is_none());
        // Without a name there is nothing to key it by.
        for value in [json!({ "metadata": { "name": 5 } }), json!({}), json!("ns")] {
            assert!(
                serde_json::from_value::<LeanNamespace>(value.clone()).is_err(),
                "{value}"
            );
        }
    }

    #[test]
    fn they_are_the_resources_they_read() {
        assert_eq!(
            LeanNamespace::url_path(&(), None),
            Namespace::url_path(&(), None)
        );
        assert_eq!(LeanNamespace::api_version(&()), "v1");
        assert_eq!(
            Lenient::<Pod>::url_path(&(), Some("ns")),
            Pod::url_path(&(), Some("ns"))
        );
    }

    #[test]
    fn it_is_written_as_the_object_itself() {
        let request = crate::ByocRequest::new(
            "r",
            crate::ByocRequestSpec {
                registries: vec!["quay.io".into()],
                reason: "T1".into(),
                duration: None,
            },
        );
        assert_eq!(
            serde_json::to_value(Lenient(request.clone())).unwrap(),
            serde_json::to_value(&request).unwrap()
        );
        // And a request whose managedFields time is far still reads back.
        let mut value = serde_json::to_value(&request).unwrap();
        value["metadata"]["managedFields"] = managed(FAR);
        let Lenient(back) = serde_json::from_value::<Lenient<crate::ByocRequest>>(value).unwrap();
        assert_eq!(back, request);
    }

    /// Objects whose `managedFields` nest 130 and 5,000 levels deep: each reader reads them
    /// from the text kube reads (a list body, a watch line), and a typed read fails on them.
    #[test]
    fn deep_managed_fields_are_skipped_by_every_reader() {
        fn with_depth(object: Value, depth: usize) -> String {
            let text = object.to_string();
            let at = text.find(r#""metadata":{"#).unwrap() + r#""metadata":{"#.len();
            format!(
                r#"{}"managedFields":{},{}"#,
                &text[..at],
                nested_managed_fields("v1", depth),
                &text[at..]
            )
        }
        type Check = fn(&str) -> Result<ObjectMeta, serde_json::Error>;
        let readers: [(&str, Value, Check); 6] = [
            ("LeanNamespace", namespace(None, None), |t| {
                serde_json::from_str::<LeanNamespace>(t).map(|n| n.metadata)
            }),
            ("StoredGrant", grant(None, None), |t| {
                let stored = serde_json::from_str::<StoredGrant>(t)?;
                assert!(stored.readable().is_some(), "{stored:?}");
                Ok(stored.meta().clone())
            }),
            ("Lenient<ByocRequest>", request(), |t| {
                serde_json::from_str::<Lenient<crate::ByocRequest>>(t).map(|r| r.0.metadata)
            }),
            ("Lenient<Pod>", pod(None, None), |t| {
                serde_json::from_str::<Lenient<Pod>>(t).map(|p| p.0.metadata)
            }),
            ("Lenient<DynamicObject>", pod(None, None), |t| {
                serde_json::from_str::<Lenient<DynamicObject>>(t).map(|p| p.0.metadata)
            }),
            ("PolicyReport", report(), |t| {
                serde_json::from_str::<crate::report::PolicyReport>(t).map(|r| r.metadata)
            }),
        ];
        for depth in [130, 5_000] {
            // What the review found: a typed read stops at serde_json's depth limit.
            let deep = with_depth(namespace(None, None), depth);
            let typed = serde_json::from_str::<Namespace>(&deep).unwrap_err();
            assert!(typed.to_string().contains("recursion limit"), "{typed}");
            for (what, object, read) in &readers {
                let text = with_depth(object.clone(), depth);
                let meta = read(&text).unwrap_or_else(|e| panic!("{what} at {depth}: {e}"));
                assert_meta(what, &meta);
                // As a watch event and as an item of a list.
                let event = format!(r#"{{"type":"MODIFIED","object":{text}}}"#);
                let list = format!(
                    r#"{{"apiVersion":"v1","kind":"List","metadata":{{}},"items":[{text}]}}"#
                );
                if *what == "LeanNamespace" {
                    let event: kube::core::WatchEvent<LeanNamespace> =
                        serde_json::from_str(&event).unwrap();
                    assert!(matches!(event, kube::core::WatchEvent::Modified(_)));
                    let list: kube::core::ObjectList<LeanNamespace> =
                        serde_json::from_str(&list).unwrap();
                    assert_meta(what, &list.items[0].metadata);
                }
                if *what == "StoredGrant" {
                    let event: kube::core::WatchEvent<StoredGrant> =
                        serde_json::from_str(&event).unwrap();
                    assert!(matches!(event, kube::core::WatchEvent::Modified(_)));
                }
            }
        }
    }

    fn request() -> Value {
        json!({ "apiVersion": "byoc.toolforge.org/v1alpha1", "kind": "ByocRequest",
                "metadata": metadata("r", None),
                "spec": { "registries": ["quay.io"], "reason": "T1" } })
    }

    fn report() -> Value {
        json!({ "apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
                "metadata": metadata("byoc-registry-policy", None),
                "summary": { "pass": 1 }, "results": [] })
    }
}

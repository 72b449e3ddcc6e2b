//! Reading the Kubernetes objects the operator watches and lists without failing on fields it
//! does not use.
//!
//! k8s-openapi reads every timestamp as a `jiff::Timestamp`, whose range ends on
//! 9999-12-30T22:00Z; the API server (Go) stores anything up to 9999-12-31T23:59:59Z. Whoever
//! may patch an object can write such a time into `metadata.managedFields[].time` or a status
//! condition, and a typed read of that object (and of every list or watch holding it) then
//! fails. The readers here never look at those fields:
//!
//! - [`object_meta`] reads `metadata` without `managedFields`, and without a
//!   `creationTimestamp` that does not read;
//! - [`Lenient`] reads any object (a `DynamicObject`, a typed resource) with its metadata read
//!   so;
//! - [`LeanNamespace`] is a Namespace as the operator uses it: metadata only, read so, its
//!   `spec` and `status` skipped.

use std::borrow::Cow;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Resource;
use kube::core::ClusterResourceScope;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Reads an object's `metadata` without the fields the operator never uses and clients may
/// write in forms Rust cannot read: `managedFields` is dropped, and so is a `creationTimestamp`
/// that does not read. Fails only when what remains does not read (a name that is not a
/// string, a label value that is not a string: nothing the API server stores).
pub fn object_meta(metadata: Value) -> Result<ObjectMeta, serde_json::Error> {
    ObjectMeta::deserialize(trim_meta(metadata))
}

/// `metadata` without `managedFields` and without an unreadable `creationTimestamp`.
fn trim_meta(mut metadata: Value) -> Value {
    if let Value::Object(map) = &mut metadata {
        map.remove("managedFields");
        if map
            .get("creationTimestamp")
            .is_some_and(|t| Time::deserialize(t).is_err())
        {
            map.remove("creationTimestamp");
        }
    }
    metadata
}

/// Reads `value` as a `K` whose metadata is read as [`object_meta`] reads it.
pub fn read<K: DeserializeOwned>(mut value: Value) -> Result<K, serde_json::Error> {
    if let Some(metadata) = value.get_mut("metadata") {
        *metadata = trim_meta(metadata.take());
    }
    K::deserialize(value)
}

/// Any resource read with [`read`]: its metadata never fails on `managedFields`. For
/// `Api<Lenient<DynamicObject>>` lists, whose items keep everything else as JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct Lenient<K>(pub K);

impl<'de, K: DeserializeOwned> Deserialize<'de> for Lenient<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        read(Value::deserialize(deserializer)?)
            .map(Self)
            .map_err(D::Error::custom)
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

impl LeanNamespace {
    /// Reads a Namespace object (full or metadata-only).
    pub fn from_value(mut value: Value) -> Result<Self, serde_json::Error> {
        let metadata = value.get_mut("metadata").map(Value::take);
        let Some(name) = metadata
            .as_ref()
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return Err(serde_json::Error::custom(
                "a Namespace without metadata.name",
            ));
        };
        let metadata = object_meta(metadata.unwrap_or_default()).unwrap_or_else(|_| ObjectMeta {
            name: Some(name),
            ..ObjectMeta::default()
        });
        Ok(Self { metadata })
    }
}

impl<'de> Deserialize<'de> for LeanNamespace {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::from_value(Value::deserialize(deserializer)?).map_err(D::Error::custom)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoredGrant;
    use k8s_openapi::api::core::v1::Pod;
    use kube::ResourceExt;
    use kube::core::DynamicObject;
    use serde_json::json;

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
        let ns = LeanNamespace::from_value(json!({ "metadata": bad })).unwrap();
        assert_eq!(ns.name_any(), "tool-a");
        assert!(ns.metadata.labels.is_none());
        // Without a name there is nothing to key it by.
        for value in [json!({ "metadata": { "name": 5 } }), json!({}), json!("ns")] {
            assert!(LeanNamespace::from_value(value.clone()).is_err(), "{value}");
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
}

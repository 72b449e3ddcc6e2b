//! Reading AdmissionReview bytes for [`decide`](crate::decide), keeping only what it reads.
//!
//! The body is read once, straight into kube's [`AdmissionReview`] types, with no [`Value`] of
//! the whole review in between (kube's own types read objects through serde `flatten`, which
//! buffers every field a second time). Of the review only `apiVersion`, `kind` and the
//! request's typed fields are kept: `options`, `userInfo` but its `username`, and unknown keys
//! are skipped. Of `object` and `oldObject` only `metadata.name`, `generateName`, `namespace`,
//! the `byoc.toolforge.org/` labels of a Namespace (the label guard compares nothing else; the
//! labels of other kinds are not read), and the names and images of the containers and image
//! volumes on every pod-spec path of [`PodBearing`](crate::workload::PodBearing). A value of the
//! wrong type where the policy reads is kept only as its type (`[]`, `{}`), which is all its
//! error message names. Everything else is lexed without being allocated, so a review keeps a
//! small multiple of the bytes the policy reads, whatever else the body holds
//! (docs/benchmarks.md).
//!
//! The decision on the result is the one on the whole review: the tests below and the fuzz
//! harness compare the two. One message differs: serde reads a container from an array of its
//! fields, and refuses one of more than two elements with the array's length, given here as 3.

use std::collections::BTreeMap;
use std::fmt;

use byoc_api::labels::is_owned_key;
use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use kube::core::{DynamicObject, GroupVersionKind, GroupVersionResource, TypeMeta};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Parses an AdmissionReview body, keeping only what the policy reads. Fails on anything not
/// JSON and, as a data error, on kept fields of the wrong type and on a key repeated on a kept
/// path (so pruning never picks one of two values).
pub fn admission_review(body: &[u8]) -> serde_json::Result<AdmissionReview<DynamicObject>> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let review = Review::deserialize(&mut de)?;
    de.end()?;
    let types = TypeMeta {
        api_version: review.api_version,
        kind: review.kind,
    };
    Ok(AdmissionReview {
        request: review.request.map(|r| r.into_request(types.clone())),
        types,
        response: None,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    request: Option<Request>,
}

/// kube's `AdmissionRequest`, typed as it types it, without `options` and with only the
/// `username` of `userInfo`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    uid: String,
    kind: GroupVersionKind,
    resource: GroupVersionResource,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    request_kind: Option<GroupVersionKind>,
    #[serde(default)]
    request_resource: Option<GroupVersionResource>,
    #[serde(default)]
    request_sub_resource: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    user_info: User,
    object: Option<Object>,
    old_object: Option<Object>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize)]
struct User {
    username: Option<String>,
}

impl Request {
    fn into_request(self, types: TypeMeta) -> AdmissionRequest<DynamicObject> {
        // Labels are read only by the namespace label guard.
        let labels = self.kind.group.is_empty() && self.kind.kind == "Namespace";
        AdmissionRequest {
            types,
            uid: self.uid,
            kind: self.kind,
            resource: self.resource,
            sub_resource: self.sub_resource,
            request_kind: self.request_kind,
            request_resource: self.request_resource,
            request_sub_resource: self.request_sub_resource,
            name: self.name,
            namespace: self.namespace,
            operation: self.operation,
            user_info: UserInfo {
                username: self.user_info.username,
                ..UserInfo::default()
            },
            object: self.object.map(|o| o.into_object(labels)),
            old_object: self.old_object.map(|o| o.into_object(labels)),
            dry_run: self.dry_run,
            options: None,
        }
    }
}

/// An `object` or `oldObject`: its metadata as the policy reads it, and the pruned rest.
struct Object {
    metadata: Meta,
    data: Map<String, Value>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    name: Option<String>,
    generate_name: Option<String>,
    namespace: Option<String>,
    labels: Option<OwnedLabels>,
}

impl Object {
    fn into_object(self, labels: bool) -> DynamicObject {
        let Meta {
            name,
            generate_name,
            namespace,
            labels: owned,
        } = self.metadata;
        DynamicObject {
            types: None,
            metadata: ObjectMeta {
                name,
                generate_name,
                namespace,
                labels: owned.filter(|_| labels).map(|l| l.0),
                ..ObjectMeta::default()
            },
            data: Value::Object(self.data),
        }
    }
}

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectVisitor)
    }
}

struct ObjectVisitor;

/// The keys of an object kept: `metadata` (read as [`Meta`]) and the start of every pod-spec
/// path.
const OBJECT_KEYS: &[(&str, Option<At>)] = &[
    ("metadata", None),
    ("spec", Some(At::Path)),
    ("template", Some(At::Path)),
];

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Object;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Kubernetes object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object, A::Error> {
        let mut metadata = None;
        let mut data = Map::new();
        while let Some(key) = map.next_key_seed(Key(OBJECT_KEYS))? {
            match key {
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
                Some((key, None)) => {
                    if metadata.is_some() {
                        return Err(duplicate(key));
                    }
                    metadata = Some(map.next_value::<Option<Meta>>()?.unwrap_or_default());
                }
                Some((key, Some(at))) => {
                    if data.contains_key(key) {
                        return Err(duplicate(key));
                    }
                    data.insert(key.to_owned(), map.next_value_seed(at)?);
                }
            }
        }
        Ok(Object {
            metadata: metadata.unwrap_or_default(),
            data,
        })
    }
}

fn duplicate<E: de::Error>(key: &str) -> E {
    E::custom(format_args!("duplicate key {key:?}"))
}

/// A map key looked up in a table of the keys kept, without allocating it.
struct Key<T: 'static>(&'static [(&'static str, T)]);

impl<'de, T: Copy> DeserializeSeed<'de> for Key<T> {
    type Value = Option<(&'static str, T)>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<T: Copy> Visitor<'_> for Key<T> {
    type Value = Option<(&'static str, T)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().find(|(k, _)| *k == v).copied())
    }
}

/// The `byoc.toolforge.org/` labels of an object; other labels are skipped unread.
struct OwnedLabels(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for OwnedLabels {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(LabelsVisitor)
    }
}

struct LabelsVisitor;

impl<'de> Visitor<'de> for LabelsVisitor {
    type Value = OwnedLabels;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of labels")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OwnedLabels, A::Error> {
        let mut labels = BTreeMap::new();
        while let Some(key) = map.next_key_seed(OwnedKey)? {
            match key {
                Some(key) => {
                    labels.insert(key, map.next_value()?);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(OwnedLabels(labels))
    }
}

/// A label key, allocated only when it is under the byoc prefix.
struct OwnedKey;

impl<'de> DeserializeSeed<'de> for OwnedKey {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for OwnedKey {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a label key")
    }

    fn visit_str<E>(self, v: &str) -> Result<Option<String>, E> {
        Ok(is_owned_key(v).then(|| v.to_owned()))
    }
}

/// Where in an object's pod-spec paths a value is, which decides what of it is kept.
#[derive(Clone, Copy)]
enum At {
    /// `spec`, `template` or `jobTemplate` on the way to a pod spec, or a pod spec.
    Path,
    /// A container list, or `volumes`.
    List { volume: bool },
    /// One container or volume.
    Item { volume: bool },
    /// A volume's `image` source.
    VolumeImage,
    /// A value read as a string.
    Leaf,
    /// An element past the fields of a struct read from an array: kept (as its type), so that
    /// the read still fails on the array's length.
    Extra,
}

impl At {
    /// The keys an object here keeps, and where their values are.
    fn keys(self) -> &'static [(&'static str, At)] {
        match self {
            Self::Path => &[
                ("spec", At::Path),
                ("template", At::Path),
                ("jobTemplate", At::Path),
                ("containers", At::List { volume: false }),
                ("initContainers", At::List { volume: false }),
                ("ephemeralContainers", At::List { volume: false }),
                ("volumes", At::List { volume: true }),
            ],
            Self::Item { volume: false } => &[("name", At::Leaf), ("image", At::Leaf)],
            Self::Item { volume: true } => &[("name", At::Leaf), ("image", At::VolumeImage)],
            Self::VolumeImage => &[("reference", At::Leaf)],
            Self::List { .. } | Self::Leaf | Self::Extra => &[],
        }
    }

    /// What an array here keeps: every element of a list; of a struct read from an array, its
    /// fields in order and then one [`At::Extra`]; nothing elsewhere.
    fn elements(self) -> &'static [At] {
        match self {
            Self::List { volume: false } => &[At::Item { volume: false }],
            Self::List { volume: true } => &[At::Item { volume: true }],
            Self::Item { volume: false } => &[At::Leaf, At::Leaf, At::Extra],
            Self::Item { volume: true } => &[At::Leaf, At::VolumeImage, At::Extra],
            Self::VolumeImage => &[At::Leaf, At::Extra],
            Self::Path | Self::Leaf | Self::Extra => &[],
        }
    }
}

impl<'de> DeserializeSeed<'de> for At {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for At {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        match self.elements() {
            [each] => {
                while let Some(item) = seq.next_element_seed(*each)? {
                    items.push(item);
                }
            }
            fields => {
                for at in fields {
                    match seq.next_element_seed(*at)? {
                        Some(item) => items.push(item),
                        None => break,
                    }
                }
            }
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut kept = Map::new();
        while let Some(key) = map.next_key_seed(Key(self.keys()))? {
            let Some((key, at)) = key else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if kept.contains_key(key) {
                return Err(duplicate(key));
            }
            kept.insert(key.to_owned(), map.next_value_seed(at)?);
        }
        Ok(Value::Object(kept))
    }
}

#[cfg(test)]
mod tests {
    use byoc_api::labels::Allowance;
    use jiff::Timestamp;
    use kube::core::DynamicObject;
    use kube::core::admission::{AdmissionRequest, AdmissionReview};
    use serde::Deserialize;
    use serde_json::json;

    use super::*;
    use crate::{Config, decide};

    /// A pod as the API server sends it: most of it is not read by the policy.
    fn full_pod(images: &[&str]) -> Value {
        let containers: Vec<Value> = images
            .iter()
            .enumerate()
            .map(|(i, image)| {
                json!({
                    "name": format!("c{i}"), "image": image,
                    "env": [{"name": "HOME", "value": "/data/project/tool"}],
                    "resources": {"limits": {"cpu": "500m", "memory": "512Mi"}},
                    "volumeMounts": [{"name": "home", "mountPath": "/data/project"}],
                    "securityContext": {"runAsNonRoot": true, "image": "not-an-image-field"},
                })
            })
            .collect();
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "generateName": "web-7d9c-", "namespace": "tool-a",
                "labels": {"app": "web", "byoc.toolforge.org/quay.io": "never"},
                "annotations": {"kubernetes.io/config.mirror": "forged", "name": "x"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9c", "uid": "u"}],
                "managedFields": [{"manager": "kube-controller-manager", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:containers": {"k:{\"name\":\"c0\"}": {".": {}, "f:image": {}}}}}}],
            },
            "spec": {
                "containers": containers,
                "initContainers": [{"name": "init", "image": "docker.io/library/busybox", "args": ["true"]}],
                "volumes": [
                    {"name": "home", "hostPath": {"path": "/data/project", "type": "Directory"}},
                    {"name": "models", "image": {"reference": "docker.io/org/models:v1", "pullPolicy": "IfNotPresent"}},
                ],
                "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
                "priority": 0, "enableServiceLinks": true,
            },
            "status": {"phase": "Pending", "qosClass": "Burstable", "containerStatuses": [{"image": "docker.io/evil"}]},
        })
    }

    fn body(kind: (&str, &str), operation: &str, object: &Value, old: Option<&Value>) -> Vec<u8> {
        let (group, kind) = kind;
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "b6a2", "kind": {"group": group, "version": "v1", "kind": kind},
                "resource": {"group": group, "version": "v1", "resource": "things"},
                "name": "web", "namespace": "tool-a", "operation": operation,
                "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
                "object": object, "oldObject": old,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
            }
        })
        .to_string()
        .into_bytes()
    }

    fn request(value: &Value) -> AdmissionRequest<DynamicObject> {
        let review = AdmissionReview::<DynamicObject>::deserialize(value).unwrap();
        review.try_into().unwrap()
    }

    fn pruned(body: &[u8]) -> AdmissionRequest<DynamicObject> {
        admission_review(body).unwrap().try_into().unwrap()
    }

    /// A pod CREATE review of `object`, as bytes.
    fn pod_body(object: &Value) -> Vec<u8> {
        body(("", "Pod"), "CREATE", object, None)
    }

    fn wrap(path: &[&str], spec: Value) -> Value {
        let mut object = spec;
        for key in path.iter().rev() {
            object = json!({ *key: object });
        }
        object["metadata"] = json!({"name": "web", "labels": {"team": "a"}});
        object
    }

    #[test]
    fn decides_as_the_whole_review_does() {
        let pod = full_pod(&[
            "docker-registry.tools.wmflabs.org/web:1",
            "quay.io/x/y",
            "bad ref",
        ]);
        let spec = full_pod(&["docker.io/nginx"])["spec"].clone();
        let namespace = |labels: Value| json!({"metadata": {"name": "tool-a", "labels": labels}});
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("pod", body(("", "Pod"), "CREATE", &pod, None)),
            (
                "pod update",
                body(
                    ("", "Pod"),
                    "UPDATE",
                    &full_pod(&["quay.io/x/z"]),
                    Some(&pod),
                ),
            ),
            (
                "deployment",
                body(
                    ("apps", "Deployment"),
                    "CREATE",
                    &wrap(&["spec", "template", "spec"], spec.clone()),
                    None,
                ),
            ),
            (
                "cronjob",
                body(
                    ("batch", "CronJob"),
                    "CREATE",
                    &wrap(
                        &["spec", "jobTemplate", "spec", "template", "spec"],
                        spec.clone(),
                    ),
                    None,
                ),
            ),
            (
                "podtemplate",
                body(
                    ("", "PodTemplate"),
                    "CREATE",
                    &wrap(&["template", "spec"], spec),
                    None,
                ),
            ),
            (
                "ephemeral",
                body(
                    ("", "Pod"),
                    "UPDATE",
                    &json!({"metadata": {"name": "web"}, "spec": {"ephemeralContainers": [{"name": "debugger", "image": "busybox", "tty": true}]}}),
                    Some(&json!({"metadata": {"name": "web"}, "spec": {}})),
                ),
            ),
            (
                "label tamper",
                body(
                    ("", "Namespace"),
                    "UPDATE",
                    &namespace(json!({"byoc.toolforge.org/any": "never"})),
                    Some(&namespace(json!({}))),
                ),
            ),
            (
                "spec not an object",
                body(
                    ("", "Pod"),
                    "CREATE",
                    &json!({"metadata": {"name": "web"}, "spec": "containers"}),
                    None,
                ),
            ),
            (
                "containers null",
                body(
                    ("", "Pod"),
                    "CREATE",
                    &json!({"metadata": {"name": "web"}, "spec": {"containers": null}}),
                    None,
                ),
            ),
            ("no object", body(("", "Pod"), "CREATE", &Value::Null, None)),
            (
                "containers as arrays",
                pod_body(&json!({"spec": {"containers": [["c", "nginx"], ["d"]],
                    "volumes": [["v", ["quay.io/x"]]]}})),
            ),
            (
                "wrong types",
                pod_body(&json!({"spec": {"containers": [{"name": "c", "image": ["nginx"]}]}})),
            ),
            (
                "labels only a tenant changed",
                body(
                    ("", "Namespace"),
                    "UPDATE",
                    &namespace(json!({"team": "b", "byoc.toolforge.org/any": "never"})),
                    Some(&namespace(
                        json!({"team": "a", "byoc.toolforge.org/any": "never"}),
                    )),
                ),
            ),
            (
                "image volume in a cronjob",
                body(
                    ("batch", "CronJob"),
                    "CREATE",
                    &wrap(
                        &["spec", "jobTemplate", "spec", "template", "spec"],
                        json!({"containers": [{"name": "a", "image": "docker-registry.tools.wmflabs.org/a"}],
                               "volumes": [{"name": "m", "image": {"reference": "sha256:7cc4b5ae"}}]}),
                    ),
                    None,
                ),
            ),
            (
                "image volume not an object",
                body(
                    ("", "Pod"),
                    "CREATE",
                    &json!({"metadata": {"name": "web"}, "spec": {"volumes": [{"name": "m", "image": "quay.io/x"}]}}),
                    None,
                ),
            ),
        ];
        let config = Config::default();
        let allowance = Allowance::default();
        let now: Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
        for (name, body) in cases {
            let whole: Value = serde_json::from_slice(&body).unwrap();
            let (whole, pruned) = (request(&whole), pruned(&body));
            assert_eq!(
                decide(&config, &pruned, &allowance, now),
                decide(&config, &whole, &allowance, now),
                "{name}"
            );
        }
    }

    #[test]
    fn keeps_exactly_the_fields_read() {
        let req = pruned(&pod_body(&full_pod(&["quay.io/x/y"])));
        assert_eq!(req.user_info.username.as_deref(), Some("alice"));
        assert_eq!(req.user_info.groups, None);
        assert!(req.options.is_none());
        let object = req.object.unwrap();
        assert_eq!(
            object.metadata,
            ObjectMeta {
                generate_name: Some("web-7d9c-".into()),
                namespace: Some("tool-a".into()),
                ..ObjectMeta::default()
            }
        );
        assert_eq!(
            object.data,
            json!({
                "spec": {
                    "containers": [{"name": "c0", "image": "quay.io/x/y"}],
                    "initContainers": [{"name": "init", "image": "docker.io/library/busybox"}],
                    "volumes": [
                        {"name": "home"},
                        {"name": "models", "image": {"reference": "docker.io/org/models:v1"}},
                    ],
                },
            })
        );
        // A Namespace keeps its byoc labels, and only those.
        let namespace = json!({"metadata": {"name": "tool-a", "labels": {
            "team": "a", "byoc.toolforge.org/quay.io": "never"}}});
        let req = pruned(&body(("", "Namespace"), "CREATE", &namespace, None));
        let labels = req.object.unwrap().metadata.labels.unwrap();
        assert_eq!(
            labels.into_iter().collect::<Vec<_>>(),
            [("byoc.toolforge.org/quay.io".to_owned(), "never".to_owned())]
        );
    }

    #[test]
    fn values_of_the_wrong_type_are_kept_as_their_type() {
        let numbers = json!([1, 2, 3, 4, 5, 6]);
        let object = json!({"metadata": {"name": "web", "labels": {"a": numbers}},
            "spec": {"containers": [{"name": numbers, "image": {"a": numbers}}, ["a", "b", "c", "d"], 7],
                     "initContainers": {"a": numbers},
                     "volumes": [{"name": "v", "image": ["r", numbers, 3]}],
                     "template": numbers}});
        let mut review: Value = serde_json::from_slice(&pod_body(&object)).unwrap();
        review["request"]["junk"] = numbers.clone();
        review["request"]["options"] = numbers.clone();
        review["request"]["userInfo"]["extra"] = json!({"a": numbers});
        review["junk"] = numbers;
        let req = pruned(review.to_string().as_bytes());
        assert_eq!(
            req.object.unwrap().data,
            json!({"spec": {"containers": [{"name": [], "image": {}}, ["a", "b", "c"], 7],
                            "initContainers": {},
                            "volumes": [{"name": "v", "image": ["r", []]}],
                            "template": []}})
        );
    }

    #[test]
    fn refuses_what_is_not_one_json_value_or_repeats_a_kept_key() {
        let spec = |spec: &str| {
            let body = String::from_utf8(pod_body(&json!({"spec": "S"}))).unwrap();
            body.replace("\"S\"", spec).into_bytes()
        };
        for (body, error) in [
            (b"{".to_vec(), "EOF while parsing"),
            (b"{} {}".to_vec(), "trailing characters"),
            (br#"{"a": [1, ]}"#.to_vec(), "expected value"),
            (
                spec(r#"{"containers": [], "containers": []}"#),
                "duplicate key \"containers\"",
            ),
            (
                br#"{"request": {"object": {"spec": {}, "spec": {}}}}"#.to_vec(),
                "duplicate key \"spec\"",
            ),
            (
                br#"{"request": {"uid": "a", "uid": "b"}}"#.to_vec(),
                "duplicate field `uid`",
            ),
        ] {
            let e = admission_review(&body).unwrap_err().to_string();
            assert!(e.contains(error), "{}: {e}", String::from_utf8_lossy(&body));
        }
        // Skipped keys may repeat: the whole parse ignores them too.
        let req = pruned(&spec(r#"{"status": 1, "status": 2}"#));
        assert_eq!(req.object.unwrap().data, json!({"spec": {}}));
    }

    #[test]
    fn escaped_keys_are_read_like_plain_ones() {
        let body = String::from_utf8(pod_body(&json!({"spec": "S"})))
            .unwrap()
            .replace("\"S\"", r#"{"cont\u0061iners": [{"image": "a\/b"}]}"#);
        assert_eq!(
            pruned(body.as_bytes()).object.unwrap().data,
            json!({"spec": {"containers": [{"image": "a/b"}]}})
        );
    }
}

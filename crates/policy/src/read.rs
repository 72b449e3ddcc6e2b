//! Reading AdmissionReview bytes for [`decide`](crate::decide), keeping only what it reads.
//!
//! The body is read once, straight into kube's [`AdmissionRequest`] types, with no [`Value`]
//! of the review in between (kube's own types read objects through serde `flatten`, which
//! buffers every field a second time). Of the review only `apiVersion`, `kind` and the
//! request's typed fields are kept: `options`, `userInfo` but its `username` and `groups`, and
//! unknown keys are skipped. Of `object` and `oldObject` only `metadata.name`, `generateName`, `namespace`,
//! the labels of a Namespace (which the label guard compares, kept in one buffer; the labels of
//! other kinds are not read) and its annotations under `byoc.toolforge.org/` (the guarded
//! requirements annotation; the others, and those of other kinds, are lexed and dropped, so
//! what is kept is bounded by what the API server stores under that prefix, at most the
//! 256 KiB it allows for all annotations together), and the names and images of the containers and image volumes on every pod-spec
//! path of [`PodBearing`] ([`PodSpecReader`]) are kept. Everything else is lexed without being
//! allocated, so a review keeps a small multiple of the bytes the policy reads, whatever else
//! the body holds (docs/benchmarks.md).
//!
//! The decision on the result is the one on the whole review: the tests below and the fuzz
//! harness compare the two.
//!
//! [`Value`]: serde_json::Value

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use kube::core::{
    DynamicResourceScope, GroupVersionKind, GroupVersionResource, Resource, TypeMeta,
};
use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::admission::Reviewed;
use crate::workload::{self, Container, PodBearing, PodSpecReader, PodSpecs, ShapeError};

/// Parses an AdmissionReview body, keeping only what the policy reads. Fails on anything not
/// JSON and, as a data error, on kept fields of the wrong type and on a key repeated on a kept
/// path (so pruning never picks one of two values).
pub fn admission_review(body: &[u8]) -> serde_json::Result<AdmissionReview<Object>> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let review = Review::deserialize(&mut de)?;
    de.end()?;
    let types = TypeMeta {
        api_version: review.api_version,
        kind: review.kind,
    };
    let request = review.request.map(|r| r.into_request(types.clone()));
    Ok(AdmissionReview {
        request: request.transpose()?,
        types,
        response: None,
    })
}

/// An `object` or `oldObject` as the policy reads it: its name, generateName and namespace, the
/// labels of a Namespace ([`Reviewed::labels`]; `metadata.labels` is always empty) and its
/// `byoc.toolforge.org/` annotations ([`Reviewed::owned_annotations`]), and the containers and
/// image volumes of the request kind's pod spec.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Object {
    /// Without labels and annotations: they are in `labels` and `annotations`.
    metadata: ObjectMeta,
    labels: Labels,
    annotations: Labels,
    specs: PodSpecs,
}

/// Not a kind of its own: the request's `kind` says what the object is.
impl Resource for Object {
    type DynamicType = ();
    type Scope = DynamicResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }

    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }

    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }

    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl Reviewed for Object {
    fn containers(&self, bearing: PodBearing) -> Result<Cow<'_, [Container]>, ShapeError> {
        self.specs
            .get(bearing)
            .map(Cow::Borrowed)
            .map_err(Clone::clone)
    }

    fn labels(&self) -> impl Iterator<Item = (&str, &str)> {
        self.labels.iter()
    }

    fn owned_annotations(&self) -> impl Iterator<Item = (&str, &str)> {
        self.annotations.iter()
    }
}

/// Labels in one buffer, in key order, each key once (the last of a repeated one, as a map
/// keeps it): about the bytes of their JSON, where a map of strings takes ten times as many
/// (docs/benchmarks.md).
#[derive(Clone, Debug, Default, PartialEq)]
struct Labels {
    text: String,
    /// Where each label's key starts, where it ends and its value starts, and where that ends.
    entries: Vec<(usize, usize, usize)>,
}

impl Labels {
    fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let text = self.text.as_str();
        self.entries
            .iter()
            .map(move |&(start, key, end)| (&text[start..key], &text[key..end]))
    }
}

impl Labels {
    /// Reads a map of strings, keeping the entries whose key `keep` selects (every value is
    /// still read as a string, as a map of strings reads it).
    fn read(raw: &RawValue, keep: fn(&str) -> bool) -> serde_json::Result<Self> {
        serde_json::Deserializer::from_str(raw.get()).deserialize_any(LabelsVisitor(keep))
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LabelsVisitor(|_| true))
    }
}

/// Reads [`Labels`], keeping the keys it selects.
struct LabelsVisitor(fn(&str) -> bool);

impl<'de> Visitor<'de> for LabelsVisitor {
    type Value = Labels;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of labels")
    }

    fn visit_unit<E>(self) -> Result<Labels, E> {
        Ok(Labels::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Labels, A::Error> {
        let (mut text, mut entries) = (String::new(), Vec::new());
        loop {
            let start = text.len();
            if map.next_key_seed(Append(&mut text))?.is_none() {
                break;
            }
            let key = text.len();
            map.next_value_seed(Append(&mut text))?;
            if (self.0)(&text[start..key]) {
                entries.push((start, key, text.len()));
            } else {
                text.truncate(start);
            }
        }
        // In key order, and of a key repeated the last: a stable sort, then the first of each
        // run of equal keys from the end.
        entries.sort_by(|a, b| text[a.0..a.1].cmp(&text[b.0..b.1]));
        entries.reverse();
        entries.dedup_by(|a, b| text[a.0..a.1] == text[b.0..b.1]);
        entries.reverse();
        Ok(Labels { text, entries })
    }
}

/// A string, appended to a buffer.
struct Append<'a>(&'a mut String);

impl<'de> DeserializeSeed<'de> for Append<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for Append<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.push_str(v);
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review<'a> {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default, borrow)]
    request: Option<Request<'a>>,
}

/// kube's `AdmissionRequest`, typed as it types it, without `options` and with only the
/// `username` and `groups` of `userInfo` (the label guard's writers are users and groups).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a> {
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
    #[serde(borrow)]
    object: Option<Read<'a>>,
    #[serde(borrow)]
    old_object: Option<Read<'a>>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize)]
struct User {
    username: Option<String>,
    groups: Option<Vec<String>>,
}

impl Request<'_> {
    /// The request, its objects keeping what the policy reads of its kind.
    fn into_request(self, types: TypeMeta) -> serde_json::Result<AdmissionRequest<Object>> {
        let (group, kind) = (self.kind.group.as_str(), self.kind.kind.as_str());
        // Labels and annotations are read only by the namespace label guard.
        let labels = group.is_empty() && kind == "Namespace";
        let bearing = PodBearing::of(group, kind);
        let keep = |o: Option<Read<'_>>| o.map(|o| o.keep(labels, bearing)).transpose();
        Ok(AdmissionRequest {
            object: keep(self.object)?,
            old_object: keep(self.old_object)?,
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
                groups: self.user_info.groups,
                ..UserInfo::default()
            },
            dry_run: self.dry_run,
            options: None,
        })
    }
}

/// An object as read, before the request's kind says which of its parts are kept: its labels
/// are still the bytes of the body, unparsed.
struct Read<'a> {
    metadata: Meta<'a>,
    specs: PodSpecs,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta<'a> {
    name: Option<String>,
    generate_name: Option<String>,
    namespace: Option<String>,
    #[serde(borrow)]
    labels: Option<&'a RawValue>,
    #[serde(borrow)]
    annotations: Option<&'a RawValue>,
}

impl Read<'_> {
    /// The object with its labels and `byoc.toolforge.org/` annotations when `labels`, and
    /// the pod spec of `bearing` (if any).
    fn keep(self, labels: bool, bearing: Option<PodBearing>) -> serde_json::Result<Object> {
        let Meta {
            name,
            generate_name,
            namespace,
            labels: raw_labels,
            annotations: raw_annotations,
        } = self.metadata;
        let read = |raw: Option<&RawValue>, keep| match raw.filter(|_| labels) {
            Some(raw) => Labels::read(raw, keep),
            None => Ok(Labels::default()),
        };
        let annotations = read(raw_annotations, byoc_api::labels::is_owned_key)?;
        let labels = read(raw_labels, |_| true)?;
        Ok(Object {
            metadata: ObjectMeta {
                name,
                generate_name,
                namespace,
                ..ObjectMeta::default()
            },
            labels,
            annotations,
            specs: self.specs.only(bearing),
        })
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Read<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ReadVisitor(PhantomData))
    }
}

struct ReadVisitor<'a>(PhantomData<Read<'a>>);

/// The keys of an object kept: `metadata`, and those that lead to a pod spec.
const OBJECT_KEYS: [&str; 3] = ["metadata", "spec", "template"];

impl<'de: 'a, 'a> Visitor<'de> for ReadVisitor<'a> {
    type Value = Read<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Kubernetes object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Read<'a>, A::Error> {
        let mut metadata = None;
        let mut specs = PodSpecReader::default();
        workload::entries(map, &OBJECT_KEYS, |i, map| {
            match (i, specs.seed(OBJECT_KEYS[i])) {
                (0, _) => metadata = map.next_value::<Option<Meta<'a>>>()?,
                (_, Some(seed)) => map.next_value_seed(seed)?,
                (_, None) => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        })?;
        Ok(Read {
            metadata: metadata.unwrap_or_default(),
            specs: specs.finish(),
        })
    }
}

#[cfg(test)]
mod tests {
    use byoc_api::labels::Allowance;
    use jiff::Timestamp;
    use kube::core::DynamicObject;
    use kube::core::admission::{AdmissionRequest, AdmissionReview};
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde_json::{Value, json};

    use super::*;
    use crate::workload::ContainerKind;
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

    fn pruned(body: &[u8]) -> AdmissionRequest<Object> {
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
        let annotated = |annotations: Value| json!({"metadata": {"name": "tool-a", "annotations": annotations}});
        let requirements = "byoc.toolforge.org/requirements";
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
                "annotation tamper",
                body(
                    ("", "Namespace"),
                    "UPDATE",
                    &annotated(json!({requirements: "{}", "note": "x"})),
                    Some(&annotated(json!({requirements: "{\"version\":1}"}))),
                ),
            ),
            (
                "annotation removed",
                body(
                    ("", "Namespace"),
                    "UPDATE",
                    &annotated(json!({"note": "x"})),
                    Some(&annotated(json!({requirements: "{}"}))),
                ),
            ),
            (
                "annotation created",
                body(
                    ("", "Namespace"),
                    "CREATE",
                    &annotated(json!({"byoc.toolforge.org/other": "x"})),
                    None,
                ),
            ),
            (
                "only other annotations changed",
                body(
                    ("", "Namespace"),
                    "UPDATE",
                    &annotated(json!({requirements: "{}", "note": "y"})),
                    Some(&annotated(json!({requirements: "{}", "note": "x"}))),
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
        assert_eq!(
            req.user_info.groups.as_deref(),
            Some(&["system:authenticated".to_owned()][..])
        );
        assert!(req.options.is_none());
        let object = req.object.unwrap();
        assert_eq!(object.annotations, Labels::default());
        assert_eq!(
            object.metadata,
            ObjectMeta {
                generate_name: Some("web-7d9c-".into()),
                namespace: Some("tool-a".into()),
                ..ObjectMeta::default()
            }
        );
        let container = |kind, name: &str, image: &str| Container {
            kind,
            name: name.to_owned(),
            image: Some(image.to_owned()),
        };
        assert_eq!(
            object.specs.get(PodBearing::Pod).unwrap(),
            [
                container(ContainerKind::Container, "c0", "quay.io/x/y"),
                container(
                    ContainerKind::InitContainer,
                    "init",
                    "docker.io/library/busybox"
                ),
                container(
                    ContainerKind::ImageVolume,
                    "models",
                    "docker.io/org/models:v1"
                ),
            ]
        );
        // A Namespace keeps all its labels (the guard compares them all), and no pod spec;
        // whichever comes first, the object or the request's kind.
        let labels = json!({"team": "a", "byoc.toolforge.org/quay.io": "never"});
        let annotations = json!({"note": "big", "byoc.toolforge.org/requirements": "{}",
            "kubectl.kubernetes.io/last-applied-configuration": "{...}"});
        let namespace = json!({"metadata": {"name": "tool-a", "labels": labels,
                "annotations": annotations},
            "spec": {"containers": [{"name": "c", "image": "quay.io/x"}]}});
        let review = format!(
            r#"{{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {{
                "object": {namespace}, "oldObject": {namespace}, "uid": "u", "operation": "UPDATE",
                "kind": {{"group": "", "version": "v1", "kind": "Namespace"}},
                "resource": {{"group": "", "version": "v1", "resource": "namespaces"}},
                "userInfo": {{"username": "alice"}}}}}}"#
        );
        let req = pruned(review.as_bytes());
        for object in [req.object.unwrap(), req.old_object.unwrap()] {
            let kept: Vec<(&str, &str)> = object.labels().collect();
            assert_eq!(
                kept,
                [("byoc.toolforge.org/quay.io", "never"), ("team", "a")]
            );
            // Of its annotations, only those under the prefix.
            let kept: Vec<(&str, &str)> = object.owned_annotations().collect();
            assert_eq!(kept, [("byoc.toolforge.org/requirements", "{}")]);
            assert_eq!(object.annotations.text, "byoc.toolforge.org/requirements{}");
            assert_eq!(object.specs.get(PodBearing::Pod).unwrap(), []);
        }
    }

    #[test]
    fn labels_are_kept_in_key_order_each_key_once_as_a_map_keeps_them() {
        let text = r#"{"team": "a", "app": "x\u00e9", "team": "b", "": "", "app": "y"}"#;
        let labels: Labels = serde_json::from_str(text).unwrap();
        let map: BTreeMap<String, String> = serde_json::from_str(text).unwrap();
        let kept: Vec<(&str, &str)> = labels.iter().collect();
        let want: Vec<(&str, &str)> = map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(kept, want);
        assert_eq!(kept, [("", ""), ("app", "y"), ("team", "b")]);
        assert_eq!(
            serde_json::from_str::<Labels>("null").unwrap(),
            Labels::default()
        );
        for bad in [r#"{"a": 1}"#, "[]", r#"{"a": null}"#] {
            assert!(serde_json::from_str::<Labels>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_of_the_wrong_type_are_skipped_or_make_the_pod_spec_malformed() {
        let numbers = json!([1, 2, 3, 4, 5, 6]);
        let object = json!({"metadata": {"name": "web", "labels": {"a": numbers}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}, {"name": "d", "image": numbers}],
                     "template": numbers}});
        let mut review: Value = serde_json::from_slice(&pod_body(&object)).unwrap();
        review["request"]["junk"] = numbers.clone();
        review["request"]["options"] = numbers.clone();
        review["request"]["userInfo"]["extra"] = json!({"a": numbers});
        review["junk"] = numbers;
        let object = pruned(review.to_string().as_bytes()).object.unwrap();
        assert_eq!(object.labels().count(), 0);
        assert_eq!(
            object.containers(PodBearing::Pod).unwrap_err().to_string(),
            "malformed pod spec: .spec.containers[1].image is an array, not a string"
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
        assert_eq!(req.object.unwrap().specs.get(PodBearing::Pod).unwrap(), []);
    }

    #[test]
    fn escaped_keys_are_read_like_plain_ones() {
        let body = String::from_utf8(pod_body(&json!({"spec": "S"})))
            .unwrap()
            .replace("\"S\"", r#"{"cont\u0061iners": [{"image": "a\/b"}]}"#);
        assert_eq!(
            pruned(body.as_bytes())
                .object
                .unwrap()
                .specs
                .get(PodBearing::Pod)
                .unwrap(),
            [Container {
                kind: ContainerKind::Container,
                name: String::new(),
                image: Some("a/b".to_owned()),
            }]
        );
    }
}

//! Reading AdmissionReview bytes for [`decide`](crate::decide) without building what it never
//! reads.
//!
//! The review and its request are kept whole, but of `request.object` and `request.oldObject`
//! only the fields the policy reads survive: `metadata.name`, `generateName`, `namespace` and
//! `labels`, and the names and images of the containers and volumes (a volume's `image` source
//! whole) on every pod-spec path of [`PodBearing`](crate::workload::PodBearing). Everything
//! else (other volume sources, env, status,
//! managedFields, annotations) is skipped by the JSON lexer without being allocated, which halves
//! the CPU a review costs (docs/benchmarks.md). The decision on the result is the one on the
//! whole review: the tests below and the fuzz harness compare the two.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Keys of `object`/`oldObject` followed at any depth: the ones on the way to what is kept.
const PATH_KEYS: &[&str] = &[
    "metadata",
    "spec",
    "template",
    "jobTemplate",
    "containers",
    "initContainers",
    "ephemeralContainers",
    "volumes",
];

/// Keys of `object`/`oldObject` kept whole wherever they are met on those paths.
const LEAF_KEYS: &[&str] = &["name", "generateName", "namespace", "labels", "image"];

/// Parses an AdmissionReview body into JSON, pruning its objects to the fields the policy reads.
/// A duplicate key on a kept path is an error, so pruning can never pick one of two values the
/// whole parse would refuse. Fails as [`serde_json::from_slice`] would on anything not JSON.
pub fn admission_review(body: &[u8]) -> serde_json::Result<Value> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = Prune::Review.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Where in the review a value is, which decides what of it is kept.
#[derive(Clone, Copy)]
enum Prune {
    /// The AdmissionReview: everything kept, `request` pruned.
    Review,
    /// The request: everything kept, `object` and `oldObject` pruned.
    Request,
    /// Inside an object: only [`PATH_KEYS`] and [`LEAF_KEYS`] kept.
    Object,
}

/// What happens to the value under one key.
enum Field {
    Keep,
    Prune(Prune),
    Skip,
}

impl Prune {
    fn field(self, key: &str) -> Field {
        match self {
            Self::Review if key == "request" => Field::Prune(Self::Request),
            Self::Request if key == "object" || key == "oldObject" => Field::Prune(Self::Object),
            Self::Review | Self::Request => Field::Keep,
            Self::Object if PATH_KEYS.contains(&key) => Field::Prune(Self::Object),
            Self::Object if LEAF_KEYS.contains(&key) => Field::Keep,
            Self::Object => Field::Skip,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Prune {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Prune {
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

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut kept = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = match self.field(&key) {
                Field::Keep => map.next_value::<Value>()?,
                Field::Prune(inner) => map.next_value_seed(inner)?,
                Field::Skip => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if kept.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            kept.insert(key, value);
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
            let pruned = admission_review(&body).unwrap();
            let (whole, pruned) = (request(&whole), request(&pruned));
            assert_eq!(
                decide(&config, &pruned, &allowance, now),
                decide(&config, &whole, &allowance, now),
                "{name}"
            );
        }
    }

    #[test]
    fn keeps_exactly_the_fields_read() {
        let body = body(("", "Pod"), "CREATE", &full_pod(&["quay.io/x/y"]), None);
        let object = &admission_review(&body).unwrap()["request"]["object"];
        assert_eq!(
            *object,
            json!({
                "metadata": {"generateName": "web-7d9c-", "namespace": "tool-a", "labels": {"app": "web", "byoc.toolforge.org/quay.io": "never"}},
                "spec": {
                    "containers": [{"name": "c0", "image": "quay.io/x/y"}],
                    "initContainers": [{"name": "init", "image": "docker.io/library/busybox"}],
                    "volumes": [
                        {"name": "home"},
                        {"name": "models", "image": {"reference": "docker.io/org/models:v1", "pullPolicy": "IfNotPresent"}},
                    ],
                },
            })
        );
    }

    #[test]
    fn refuses_what_is_not_one_json_value_or_repeats_a_kept_key() {
        for (body, error) in [
            (&b"{"[..], "EOF while parsing"),
            (b"{} {}", "trailing characters"),
            (b"[1, ]", "trailing comma"),
            (
                br#"{"request": {"object": {"spec": {}, "spec": {}}}}"#,
                "duplicate key \"spec\"",
            ),
            (
                br#"{"request": {"uid": "a", "uid": "b"}}"#,
                "duplicate key \"uid\"",
            ),
        ] {
            let e = admission_review(body).unwrap_err().to_string();
            assert!(e.contains(error), "{}: {e}", String::from_utf8_lossy(body));
        }
        // Skipped keys may repeat: the whole parse ignores them too.
        let body = br#"{"request": {"object": {"status": 1, "status": 2}}}"#;
        assert_eq!(
            admission_review(body).unwrap(),
            json!({"request": {"object": {}}})
        );
    }

    #[test]
    fn escaped_keys_are_read_like_plain_ones() {
        let body =
            br#"{"request": {"object": {"spec": {"cont\u0061iners": [{"image": "a\/b"}]}}}}"#;
        assert_eq!(
            admission_review(body).unwrap(),
            json!({"request": {"object": {"spec": {"containers": [{"image": "a/b"}]}}}})
        );
    }
}

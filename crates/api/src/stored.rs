//! Grants as the API server stores them, read so that one unreadable object never fails a whole
//! list or watch.
//!
//! A typed `Api<ByocGrant>` list fails as a whole when a single item does not deserialize (a
//! value an older schema let through, an object written straight to etcd): every grant would
//! then go unreconciled and unlisted. [`StoredGrant`] reads each object on its own and keeps the
//! error of those that do not read, so callers report them and carry on with the others.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::ClusterResourceScope;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::{ByocGrant, ByocGrantSpec, ByocGrantStatus, lenient};

/// A ByocGrant as listed or watched: the typed grant, or what could be read of an object that
/// is not a valid one. Metadata is read by [`crate::lenient::object_meta`] (streamed, no
/// `managedFields`), `spec` and `status` each on their own, and a `status` that does not read
/// is left out (the controller rewrites it); only an object whose metadata does not read fails
/// to deserialize. Nothing is read into a `serde_json::Value`, so no depth fails it.
#[derive(Clone, Debug, PartialEq)]
pub enum StoredGrant {
    /// The object reads as a ByocGrant.
    Readable(ByocGrant),
    /// It does not.
    Unreadable(UnreadableGrant),
}

/// What can be read of a stored grant that is not a valid ByocGrant.
#[derive(Clone, Debug, PartialEq)]
pub struct UnreadableGrant {
    /// Its metadata.
    pub metadata: ObjectMeta,
    /// `spec.namespace`, when it is a string.
    pub namespace: Option<String>,
    /// `status`, when it reads.
    pub status: Option<ByocGrantStatus>,
    /// Why it does not read, led by the path of the offending field (`spec.expiresAt: ...`).
    pub error: String,
}

impl StoredGrant {
    /// Reads one stored object; fails only when its metadata does not read.
    pub fn from_value(value: &Value) -> Result<Self, serde_json::Error> {
        Self::deserialize(value)
    }

    /// Reads the parts of a stored object: `metadata` streamed by [`lenient::object_meta`],
    /// `spec` and `status` taken as raw text (skipped unparsed), then each read on its own.
    fn read(parts: Parts) -> Self {
        let Parts {
            metadata: lenient::Meta(metadata),
            spec,
            status,
        } = parts;
        let status = status.and_then(|s| serde_json::from_str::<ByocGrantStatus>(s.get()).ok());
        let Some(spec) = spec else {
            return Self::Unreadable(UnreadableGrant {
                metadata,
                namespace: None,
                status,
                error: "missing field `spec`".to_owned(),
            });
        };
        let read = serde_path_to_error::deserialize::<_, ByocGrantSpec>(
            &mut serde_json::Deserializer::from_str(spec.get()),
        );
        match read {
            Ok(spec) => Self::Readable(ByocGrant {
                metadata,
                spec,
                status,
            }),
            Err(e) => {
                let error = match e.path().to_string().as_str() {
                    "." => format!("spec: {}", message(e.inner())),
                    path => format!("spec.{path}: {}", message(e.inner())),
                };
                let namespace = serde_json::from_str::<Namespace>(spec.get())
                    .ok()
                    .and_then(|n| n.namespace.0);
                Self::Unreadable(UnreadableGrant {
                    metadata,
                    namespace,
                    status,
                    error,
                })
            }
        }
    }

    /// The typed grant, when the object reads.
    pub fn readable(&self) -> Option<&ByocGrant> {
        match self {
            Self::Readable(grant) => Some(grant),
            Self::Unreadable(_) => None,
        }
    }

    /// `spec.namespace`, when it can be read.
    pub fn target_namespace(&self) -> Option<&str> {
        match self {
            Self::Readable(grant) => Some(&grant.spec.namespace),
            Self::Unreadable(u) => u.namespace.as_deref(),
        }
    }

    /// The status, when it can be read.
    pub fn status(&self) -> Option<&ByocGrantStatus> {
        match self {
            Self::Readable(grant) => grant.status.as_ref(),
            Self::Unreadable(u) => u.status.as_ref(),
        }
    }
}

impl From<ByocGrant> for StoredGrant {
    fn from(grant: ByocGrant) -> Self {
        Self::Readable(grant)
    }
}

/// What `error` says, without the position in the raw text of `spec` that serde_json appends
/// (meaningless to whoever reads the grant as YAML).
fn message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let at = format!(" at line {} column {}", error.line(), error.column());
    match text.strip_suffix(&at) {
        Some(message) => message.to_owned(),
        None => text,
    }
}

/// A stored object as [`StoredGrant`] reads it: what is not named here is skipped unparsed.
#[derive(Deserialize)]
struct Parts {
    metadata: lenient::Meta,
    spec: Option<Box<RawValue>>,
    status: Option<Box<RawValue>>,
}

/// `spec.namespace` of a spec that does not read, when it is a string.
#[derive(Deserialize)]
struct Namespace {
    #[serde(default)]
    namespace: lenient::Lossy,
}

impl<'de> Deserialize<'de> for StoredGrant {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Parts::deserialize(deserializer).map(Self::read)
    }
}

impl Resource for StoredGrant {
    type DynamicType = ();
    type Scope = ClusterResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        ByocGrant::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        ByocGrant::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        ByocGrant::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        ByocGrant::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        match self {
            Self::Readable(grant) => grant.meta(),
            Self::Unreadable(u) => &u.metadata,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Self::Readable(grant) => grant.meta_mut(),
            Self::Unreadable(u) => &mut u.metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;
    use serde_json::json;

    fn object(spec: Value) -> Value {
        json!({
            "apiVersion": "byoc.toolforge.org/v1alpha1",
            "kind": "ByocGrant",
            "metadata": { "name": "g", "uid": "u-1", "generation": 3 },
            "spec": spec,
            "status": { "observedGeneration": 2 },
        })
    }

    #[test]
    fn each_object_reads_on_its_own() {
        let good = object(json!({ "namespace": "tool-a", "reason": "T1" }));
        let cases = [
            (
                "too many fractional digits",
                json!({ "namespace": "tool-a", "reason": "T1", "expiresAt": "2027-03-31T00:00:00.1234567891Z" }),
                Some("tool-a"),
                "spec.expiresAt: ",
            ),
            (
                "an offset jiff refuses",
                json!({ "namespace": "tool-b", "reason": "T1", "expiresAt": "2027-03-31T00:00:00+99:99" }),
                Some("tool-b"),
                "spec.expiresAt: ",
            ),
            (
                "a registry that is no string",
                json!({ "namespace": "tool-a", "reason": "T1", "registries": [7] }),
                Some("tool-a"),
                "spec.registries[0]: invalid type: integer",
            ),
            (
                "no namespace",
                json!({ "reason": "T1" }),
                None,
                "spec: missing field `namespace`",
            ),
            (
                "a namespace that is no string",
                json!({ "namespace": ["tool-a"], "reason": "T1" }),
                None,
                "spec.namespace: invalid type: sequence",
            ),
        ];
        let list: Vec<Value> = std::iter::once(good.clone())
            .chain(cases.iter().map(|(_, spec, ..)| object(spec.clone())))
            .collect();
        let read: Vec<StoredGrant> = serde_json::from_value(Value::Array(list)).unwrap();
        let StoredGrant::Readable(first) = &read[0] else {
            panic!("{:?}", read[0]);
        };
        assert_eq!(first.spec.namespace, "tool-a");
        assert_eq!(read[0].readable(), Some(first));
        for ((what, _, namespace, error), stored) in cases.iter().zip(&read[1..]) {
            let StoredGrant::Unreadable(u) = stored else {
                panic!("{what}: read as {stored:?}");
            };
            assert!(u.error.starts_with(error), "{what}: {}", u.error);
            assert!(!u.error.contains(" at line "), "{what}: {}", u.error);
            assert_eq!(stored.target_namespace(), *namespace, "{what}");
            assert_eq!(stored.name_any(), "g", "{what}");
            assert_eq!(stored.meta().generation, Some(3), "{what}");
            assert_eq!(
                stored.status().and_then(|s| s.observed_generation),
                Some(2),
                "{what}"
            );
            assert!(stored.readable().is_none(), "{what}");
        }
    }

    #[test]
    fn an_unreadable_status_is_left_out_and_bad_metadata_fails() {
        let mut bad_status =
            object(json!({ "namespace": "tool-a", "reason": "T1", "expiresAt": 5 }));
        bad_status["status"] =
            json!({ "conditions": [{ "type": "Ready", "lastTransitionTime": "x" }] });
        let StoredGrant::Unreadable(u) = StoredGrant::from_value(&bad_status).unwrap() else {
            panic!("should not read");
        };
        assert_eq!(u.status, None);
        assert!(
            u.error.starts_with("spec.expiresAt: invalid type"),
            "{}",
            u.error
        );

        let mut bad_meta = object(json!({ "namespace": 1 }));
        bad_meta["metadata"] = json!({ "name": 5 });
        assert!(StoredGrant::from_value(&bad_meta).is_err());
        assert!(StoredGrant::from_value(&json!("not an object")).is_err());
    }

    #[test]
    fn it_is_the_byocgrant_resource() {
        assert_eq!(
            StoredGrant::url_path(&(), None),
            ByocGrant::url_path(&(), None)
        );
        assert_eq!(StoredGrant::kind(&()), "ByocGrant");
        assert_eq!(StoredGrant::api_version(&()), "byoc.toolforge.org/v1alpha1");
    }
}

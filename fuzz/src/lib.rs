//! What the fuzz targets share: the webhook's request path built the way the binary builds it
//! (policy config, namespace cache, metrics), and oracles written independently of the policy
//! code, so that a bug in the policy cannot hide itself by being in the oracle too.
//!
//! The oracles state the security properties of DESIGN §3–§5 on the raw JSON of a request:
//!
//! - in enforce mode, a pod (or pod template) in a namespace that is not exempt is admitted only
//!   if every image that is new in this request (of a container of any list, or of an image
//!   volume) parses, is not an image ID, and its raw string starts with a registry (and path
//!   prefix) that the namespace may use — string comparisons that do not go through the
//!   image-reference parser at all;
//! - a Namespace CREATE/UPDATE that adds, changes or removes a `byoc.toolforge.org/` label is
//!   admitted only for the controller's identity;
//! - every input gets a well-formed AdmissionReview answer; an admitted one echoes the uid;
//! - warn mode admits at least what enforce mode admits, and says why when it admits more.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use futures::executor::block_on;

use byoc_policy::config::CONTROLLER_USER;
use byoc_policy::{Config, ImageRef, Mode, decide};
use byoc_registry::Lookups;
use byoc_webhook::cache::CachedNamespace;
use byoc_webhook::{Metrics, NamespaceCache, Webhook};
use jiff::Timestamp;
use kube::api::ObjectMeta;
use kube::core::DynamicObject;
use kube::core::admission::{
    AdmissionRequest, AdmissionResponse, AdmissionReview, META_API_VERSION_V1, META_KIND,
};
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use prometheus_client::registry::Registry;
use serde_json::Value;

/// The registry every namespace may use (the default configuration).
pub const PLATFORM: &str = "docker-registry.tools.wmflabs.org";

/// Namespaces the default configuration exempts, by exact name.
pub const EXEMPT: &[&str] = &[
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "byoc-system",
];

/// An allow-list entry restated for the oracle: host, port, path prefix.
type Entry = (&'static str, Option<u16>, Option<&'static str>);

/// What a cached namespace may use, for the oracle.
enum Grants {
    /// Only the default registry.
    Entries(&'static [Entry]),
    /// Any registry (but the image must still parse).
    Any,
}

/// A cached namespace: its name, its labels, and what the oracle expects of it.
type Namespace = (
    &'static str,
    &'static [(&'static str, &'static str)],
    Grants,
);

/// The namespaces in the webhook's cache. The names that matter for attacks are here too:
/// lookalikes of exempt namespaces and namespaces whose grant expired long ago.
const NAMESPACES: &[Namespace] = &[
    ("tool-a", &[], Grants::Entries(&[])),
    (
        "tool-quay",
        &[("byoc.toolforge.org/quay.io", "never")],
        Grants::Entries(&[("quay.io", None, None)]),
    ),
    (
        "tool-ghcr",
        &[("byoc.toolforge.org/ghcr.io_wikimedia", "never")],
        Grants::Entries(&[("ghcr.io", None, Some("wikimedia"))]),
    ),
    (
        "tool-port",
        &[("byoc.toolforge.org/registry.example.org..5000", "never")],
        Grants::Entries(&[("registry.example.org", Some(5000), None)]),
    ),
    (
        "tool-any",
        &[("byoc.toolforge.org/any", "never")],
        Grants::Any,
    ),
    (
        "tool-expired",
        &[
            ("byoc.toolforge.org/any", "20200101T000000Z"),
            ("byoc.toolforge.org/quay.io", "20200101T000000Z"),
        ],
        Grants::Entries(&[]),
    ),
    // A label that breaks the contract grants nothing.
    (
        "tool-junk",
        &[("byoc.toolforge.org/any", "forever")],
        Grants::Entries(&[]),
    ),
    ("kube-system-x", &[], Grants::Entries(&[])),
    ("kube-systen", &[], Grants::Entries(&[])),
    ("xkube-system", &[], Grants::Entries(&[])),
    ("kube-system", &[], Grants::Entries(&[])),
];

/// The two webhooks every input goes through, and their namespace cache.
pub struct Harness {
    enforce: Webhook,
    warn: Webhook,
    namespaces: NamespaceCache,
}

/// The harness, built once per fuzzing process.
pub fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let namespaces = namespace_cache();
        Harness {
            enforce: webhook(Mode::Enforce, namespaces.clone()),
            warn: webhook(Mode::Warn, namespaces.clone()),
            namespaces,
        }
    })
}

fn namespace_cache() -> NamespaceCache {
    let (store, mut writer) = reflector::store::<CachedNamespace>();
    for (name, labels, _) in NAMESPACES {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let meta = ObjectMeta {
            name: Some((*name).to_owned()),
            labels: Some(labels),
            ..ObjectMeta::default()
        };
        writer.apply_watcher_event(&Event::Apply(CachedNamespace { metadata: meta }));
    }
    // The store stays readable only while its writer lives; this one lives for the process.
    std::mem::forget(writer);
    NamespaceCache::new(store)
}

fn config(mode: Mode) -> Config {
    Config {
        mode,
        ..Config::default()
    }
}

fn webhook(mode: Mode, namespaces: NamespaceCache) -> Webhook {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let config = config(mode);
    // No namespace here carries requirements, so no review ever reaches the registry.
    let lookups = Lookups::new(
        &config,
        Err("no registry: no requirement applies".into()),
        metrics.clone(),
    );
    Webhook::new(config, namespaces, lookups, metrics)
}

impl Harness {
    /// Runs `body` through both webhooks and checks every property; panics (a fuzz finding)
    /// when one does not hold.
    pub fn check(&self, body: &[u8]) {
        let enforce = block_on(self.enforce.review(body));
        let warn = block_on(self.warn.review(body));
        well_formed(&enforce);
        well_formed(&warn);
        self.pruning_changes_nothing(body, &enforce);

        // serde skips ignored fields without checking their UTF-8, so the webhook may read a
        // body with invalid UTF-8 in a field it never looks at; the oracle reads such a body
        // with those bytes replaced, which changes no field the decision depends on.
        let request: Option<Value> = serde_json::from_str(&String::from_utf8_lossy(body)).ok();
        let request = request.as_ref();
        if enforce.allowed {
            admitted_request_is_sound(request, &enforce);
        }
        if warn.allowed {
            echoes_uid(request, &warn);
        }
        // Warn mode only relaxes registry violations, and says so.
        assert!(
            !enforce.allowed || warn.allowed,
            "enforce admitted what warn refused: {}",
            shown(body)
        );
        if warn.allowed && !enforce.allowed {
            assert!(
                warn.warnings.as_ref().is_some_and(|w| !w.is_empty()),
                "warn mode admitted a refused request without a warning: {}",
                shown(body)
            );
        }
    }
}

impl Harness {
    /// The webhook reads objects pruned to the fields the policy reads (`byoc_policy::read`).
    /// Whenever the whole body is a readable review, the pruned read never admits what a
    /// decision on all of it refuses, and gives the same verdict unless the pruned read is the
    /// stricter one for a reason the API server never produces: a key repeated on a path the
    /// policy reads (the whole read takes the last value, or refuses it too), or invalid UTF-8
    /// in a field only one of the reads types as a string. The API server's JSON is always
    /// UTF-8 without repeated keys.
    fn pruning_changes_nothing(&self, body: &[u8], enforce: &AdmissionResponse) {
        let Ok(review) = serde_json::from_slice::<AdmissionReview<DynamicObject>>(body) else {
            return;
        };
        if review.types.api_version != META_API_VERSION_V1 || review.types.kind != META_KIND {
            return;
        }
        let Ok(req): Result<AdmissionRequest<DynamicObject>, _> = review.try_into() else {
            return;
        };
        if req.uid.is_empty() {
            return;
        }
        let allowance = self
            .namespaces
            .allowance(req.namespace.as_deref().unwrap_or_default());
        let whole = decide(&config(Mode::Enforce), &req, &allowance, Timestamp::now());
        let admitted = whole.is_admitted(Mode::Enforce);
        assert!(
            admitted || !enforce.allowed,
            "the pruned read admitted what the whole one refuses ({:?}): {}",
            whole.lines,
            shown(body)
        );
        let as_the_api_server_sends =
            std::str::from_utf8(body).is_ok() && !enforce.result.message.contains("duplicate ");
        if as_the_api_server_sends {
            assert_eq!(
                enforce.allowed,
                admitted,
                "the pruned read decided otherwise than the whole one ({:?}): {}",
                whole.lines,
                shown(body)
            );
        }
    }
}

fn shown(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// The response serializes into an AdmissionReview that reads back with the same verdict.
fn well_formed(response: &AdmissionResponse) {
    let review = response.clone().into_review();
    let json = serde_json::to_value(&review).expect("an AdmissionReview serializes");
    assert_eq!(json["apiVersion"], "admission.k8s.io/v1", "{json}");
    assert_eq!(json["kind"], "AdmissionReview", "{json}");
    assert_eq!(json["response"]["allowed"], response.allowed, "{json}");
    assert!(json["response"]["uid"].is_string(), "{json}");
    if !response.allowed {
        assert!(
            !response.result.message.is_empty(),
            "a refusal must say why: {json}"
        );
    }
}

fn echoes_uid(request: Option<&Value>, response: &AdmissionResponse) {
    let uid = request
        .and_then(|r| r["request"]["uid"].as_str())
        .unwrap_or_default();
    assert!(
        !uid.is_empty() && response.uid == uid,
        "admitted a request without echoing its uid {uid:?}: {:?}",
        response.uid
    );
}

/// Everything an enforce-mode admission promises, restated on the raw JSON.
fn admitted_request_is_sound(request: Option<&Value>, response: &AdmissionResponse) {
    let review = request.expect("admitted a body that is not JSON");
    assert_eq!(
        review["apiVersion"], "admission.k8s.io/v1",
        "admitted a review of another version: {review}"
    );
    assert_eq!(review["kind"], "AdmissionReview", "{review}");
    echoes_uid(request, response);
    let req = &review["request"];
    let operation = req["operation"].as_str().unwrap_or_default();
    if !matches!(operation, "CREATE" | "UPDATE") {
        return;
    }
    let group = req["kind"]["group"].as_str().unwrap_or_default();
    let kind = req["kind"]["kind"].as_str().unwrap_or_default();
    let object = &req["object"];
    let old = if operation == "UPDATE" {
        &req["oldObject"]
    } else {
        &Value::Null
    };
    if group.is_empty() && kind == "Namespace" {
        let user = req["userInfo"]["username"].as_str().unwrap_or_default();
        if user != CONTROLLER_USER {
            assert_eq!(
                owned_labels(object),
                owned_labels(old),
                "admitted a change of byoc labels by {user:?}: {review}"
            );
        }
        return;
    }
    let Some(spec_path) = pod_spec_path(group, kind) else {
        panic!("admitted an unknown kind {kind}.{group}: {review}");
    };
    let namespace = req["namespace"]
        .as_str()
        .or_else(|| object["metadata"]["namespace"].as_str())
        .unwrap_or_default();
    assert!(
        !namespace.is_empty(),
        "admitted a {kind} without a namespace: {review}"
    );
    if EXEMPT.contains(&namespace) {
        return;
    }
    let old_images = images(old, spec_path);
    for image in images(object, spec_path) {
        if old_images.contains(&image) {
            continue;
        }
        assert!(
            image.parse::<ImageRef>().is_ok(),
            "admitted an image that does not parse, {image:?}, in {namespace}: {review}"
        );
        assert!(
            !is_image_id(&image),
            "admitted an image ID, {image:?}, in {namespace}: {review}"
        );
        assert!(
            may_use(namespace, &image),
            "admitted {image:?} in {namespace}, which may not use its registry: {review}"
        );
    }
}

/// The `byoc.toolforge.org/` labels of an object (empty for null).
fn owned_labels(object: &Value) -> BTreeMap<String, Value> {
    object["metadata"]["labels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .filter(|(k, _)| k.starts_with("byoc.toolforge.org/"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Where each pod-bearing kind keeps its pod spec (restated from the Kubernetes API).
fn pod_spec_path(group: &str, kind: &str) -> Option<&'static [&'static str]> {
    Some(match (group, kind) {
        ("", "Pod") => &["spec"],
        ("", "PodTemplate") => &["template", "spec"],
        ("", "ReplicationController")
        | ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
        | ("batch", "Job") => &["spec", "template", "spec"],
        ("batch", "CronJob") => &["spec", "jobTemplate", "spec", "template", "spec"],
        _ => return None,
    })
}

/// The image strings of every container list and every image volume of the pod spec at `path`
/// of `object`.
fn images(object: &Value, path: &[&str]) -> Vec<String> {
    let mut spec = object;
    for key in path {
        spec = &spec[key];
    }
    let containers = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .filter_map(|list| spec[list].as_array())
        .flatten()
        .filter_map(|c| c["image"].as_str());
    let volumes = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["image"]["reference"].as_str());
    containers.chain(volumes).map(str::to_owned).collect()
}

/// Whether `image` is a form the runtime resolves as a local image ID, whatever registry the
/// image came from: 64 lowercase hex digits, or `sha256:`, `sha384:` or `sha512:` followed by
/// hex digits (a prefix of an ID), with nothing before it.
pub fn is_image_id(image: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_hexdigit());
    if image.len() == 64 && hex(image) && image == image.to_ascii_lowercase() {
        return true;
    }
    ["sha256:", "sha384:", "sha512:"].iter().any(|algorithm| {
        image.strip_prefix(algorithm).is_some_and(|rest| {
            let id = rest.split(['@', ':']).next().unwrap_or_default();
            hex(id)
        })
    })
}

/// Whether `namespace` may run `image`, decided on the raw string: its lowercase form must start
/// with `host[:port]/` of an allowed entry, followed by the entry's path prefix and then the end
/// of the name, a `/`, a `:` or an `@`.
fn may_use(namespace: &str, image: &str) -> bool {
    let grants = NAMESPACES
        .iter()
        .find(|(name, _, _)| *name == namespace)
        .map_or(&Grants::Entries(&[]), |(_, _, g)| g);
    let entries: &[Entry] = match grants {
        Grants::Any => return true,
        Grants::Entries(entries) => entries,
    };
    let lower = image.to_ascii_lowercase();
    std::iter::once(&(PLATFORM, None, None))
        .chain(entries)
        .any(|(host, port, prefix)| {
            let mut start = (*host).to_owned();
            if let Some(port) = port {
                start.push_str(&format!(":{port}"));
            }
            start.push('/');
            let Some(rest) = lower.strip_prefix(&start) else {
                return false;
            };
            match prefix {
                None => true,
                Some(prefix) => rest
                    .strip_prefix(prefix)
                    .is_some_and(|after| after.is_empty() || after.starts_with(['/', ':', '@'])),
            }
        })
}

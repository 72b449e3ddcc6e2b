//! Well-formed AdmissionReviews built from structured fuzz input, so that the fuzzer spends its
//! time on what matters (image strings made of registry-lookalike pieces, lookalike namespace
//! names, byoc label and annotation changes by various users, updates that keep or swap images, ephemeral
//! containers, image volumes, image IDs, every pod-bearing kind) rather than on JSON syntax. Same properties as
//! `admission_review` (see `byoc_fuzz`).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

const HEX64: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[derive(Arbitrary, Debug)]
struct Input {
    operation: Operation,
    kind: Kind,
    namespace: Name,
    /// Leave `request.namespace` out (the object's namespace is then the only one).
    omit_request_namespace: bool,
    object_namespace: Option<Name>,
    user: User,
    mirror_annotation: bool,
    containers: Vec<Container>,
    old_containers: Option<Vec<Container>>,
    labels: Vec<(LabelKey, LabelValue)>,
    old_labels: Option<Vec<(LabelKey, LabelValue)>>,
    /// Also give each object its label pairs as annotations, so that `byoc.toolforge.org/`
    /// annotation changes (the guarded requirements annotation) are made too.
    labels_as_annotations: bool,
}

#[derive(Arbitrary, Debug)]
enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Kind {
    Pod,
    EphemeralContainers,
    PodTemplate,
    ReplicationController,
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    Namespace,
    Service,
}

impl Kind {
    /// group, version, kind, resource, subresource
    fn gvk(
        self,
    ) -> (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    ) {
        match self {
            Self::Pod => ("", "v1", "Pod", "pods", ""),
            Self::EphemeralContainers => ("", "v1", "Pod", "pods", "ephemeralcontainers"),
            Self::PodTemplate => ("", "v1", "PodTemplate", "podtemplates", ""),
            Self::ReplicationController => (
                "",
                "v1",
                "ReplicationController",
                "replicationcontrollers",
                "",
            ),
            Self::Deployment => ("apps", "v1", "Deployment", "deployments", ""),
            Self::ReplicaSet => ("apps", "v1", "ReplicaSet", "replicasets", ""),
            Self::StatefulSet => ("apps", "v1", "StatefulSet", "statefulsets", ""),
            Self::DaemonSet => ("apps", "v1", "DaemonSet", "daemonsets", ""),
            Self::Job => ("batch", "v1", "Job", "jobs", ""),
            Self::CronJob => ("batch", "v1", "CronJob", "cronjobs", ""),
            Self::Namespace => ("", "v1", "Namespace", "namespaces", ""),
            Self::Service => ("", "v1", "Service", "services", ""),
        }
    }

    /// Wraps a pod spec where this kind keeps it.
    fn wrap(self, spec: Value) -> Value {
        match self {
            Self::Pod | Self::EphemeralContainers => json!({ "spec": spec }),
            Self::PodTemplate => json!({ "template": { "spec": spec } }),
            Self::CronJob => {
                json!({ "spec": { "jobTemplate": { "spec": { "template": { "spec": spec } } } } })
            }
            Self::Namespace | Self::Service => json!({ "spec": {} }),
            _ => json!({ "spec": { "template": { "spec": spec } } }),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Name {
    Known(u8),
    Raw(String),
}

const NAMES: &[&str] = &[
    "tool-a",
    "tool-quay",
    "tool-ghcr",
    "tool-port",
    "tool-any",
    "tool-expired",
    "tool-junk",
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "byoc-system",
    "kube-system-x",
    "kube-systen",
    "xkube-system",
    "Kube-System",
    "kube-system ",
    "default",
    "",
];

impl Name {
    fn text(&self) -> String {
        match self {
            Self::Known(i) => NAMES[usize::from(*i) % NAMES.len()].to_owned(),
            Self::Raw(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum User {
    Controller,
    Tenant,
    TenantServiceAccount,
    ControllerLookalike,
    Node,
    Anonymous,
    Raw(String),
}

impl User {
    fn json(&self) -> Value {
        let name = match self {
            Self::Controller => "system:serviceaccount:byoc-system:byoc-controller",
            Self::Tenant => "alice",
            Self::TenantServiceAccount => "system:serviceaccount:tool-a:default",
            Self::ControllerLookalike => "system:serviceaccount:byoc-system:byoc-controller ",
            Self::Node => "system:node:node-1",
            Self::Anonymous => return json!({}),
            Self::Raw(s) => s,
        };
        json!({ "username": name, "groups": ["system:authenticated"] })
    }
}

#[derive(Arbitrary, Debug)]
struct Container {
    list: u8,
    name: u8,
    image: Option<Image>,
}

#[derive(Arbitrary, Debug)]
enum Image {
    Pieces(Vec<Piece>),
    Number(i64),
}

#[derive(Arbitrary, Debug)]
enum Piece {
    Token(u8),
    Raw(String),
}

const TOKENS: &[&str] = &[
    "docker-registry.tools.wmflabs.org",
    "DOCKER-REGISTRY.TOOLS.WMFLABS.ORG",
    "docker-registry",
    ".tools.wmflabs.org",
    "evil.com",
    "quay.io",
    "ghcr.io",
    "wikimedia",
    "wikimediax",
    "registry.example.org",
    "localhost",
    "index.docker.io",
    "docker.io",
    "library",
    "toolforge-python311",
    "nginx",
    "/",
    "/",
    ":",
    ":5000",
    ":443",
    "@",
    "@sha256:",
    "sha256:",
    "sha512:",
    "7cc4b5ae",
    HEX64,
    ".",
    "-",
    "_",
    "__",
    "latest",
    "v1.2.3",
    " ",
    "\t",
    "https://",
    "[::1]",
    "%2F",
    "\u{212a}",
    "\u{130}",
    "\u{0}",
    "A",
];

impl Image {
    fn json(&self) -> Value {
        match self {
            Self::Number(n) => json!(n),
            Self::Pieces(pieces) => {
                let mut s = String::new();
                for p in pieces {
                    match p {
                        Piece::Token(i) => s.push_str(TOKENS[usize::from(*i) % TOKENS.len()]),
                        Piece::Raw(r) => s.push_str(r),
                    }
                }
                Value::String(s)
            }
        }
    }
}

/// A pod spec: `list` picks containers, initContainers, ephemeralContainers, or volumes (an
/// image volume, whose `image.reference` is the image, or another kind of volume when there is
/// no image).
fn pod_spec(containers: &[Container]) -> Value {
    let mut lists: [Vec<Value>; 4] = Default::default();
    for c in containers {
        let mut entry = Map::new();
        let list = usize::from(c.list % 4);
        entry.insert("name".into(), json!(format!("c{}", c.name % 4)));
        match (&c.image, list) {
            (Some(image), 3) => {
                entry.insert("image".into(), json!({ "reference": image.json() }));
            }
            (None, 3) => {
                entry.insert("emptyDir".into(), json!({}));
            }
            (Some(image), _) => {
                entry.insert("image".into(), image.json());
            }
            (None, _) => {}
        }
        lists[list].push(Value::Object(entry));
    }
    let [containers, init, ephemeral, volumes] = lists;
    json!({
        "containers": containers, "initContainers": init, "ephemeralContainers": ephemeral,
        "volumes": volumes,
    })
}

#[derive(Arbitrary, Debug)]
enum LabelKey {
    Any,
    Quay,
    Junk,
    Team,
    OtherPrefix,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum LabelValue {
    Never,
    Future,
    Past,
    Raw(String),
}

fn labels(pairs: &[(LabelKey, LabelValue)]) -> Value {
    let mut map = Map::new();
    for (k, v) in pairs {
        let key = match k {
            LabelKey::Any => "byoc.toolforge.org/any".to_owned(),
            LabelKey::Quay => "byoc.toolforge.org/quay.io".to_owned(),
            LabelKey::Junk => "byoc.toolforge.org/x".to_owned(),
            LabelKey::Team => "team".to_owned(),
            LabelKey::OtherPrefix => "byoc.toolforge.org.evil/any".to_owned(),
            LabelKey::Raw(s) => s.clone(),
        };
        let value = match v {
            LabelValue::Never => "never".to_owned(),
            LabelValue::Future => "20990101T000000Z".to_owned(),
            LabelValue::Past => "20200101T000000Z".to_owned(),
            LabelValue::Raw(s) => s.clone(),
        };
        map.insert(key, Value::String(value));
    }
    Value::Object(map)
}

fn object(
    input: &Input,
    containers: &[Container],
    label_pairs: &[(LabelKey, LabelValue)],
) -> Value {
    let (group, version, kind, _, _) = input.kind.gvk();
    let api_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    let mut object = input.kind.wrap(pod_spec(containers));
    let mut metadata = Map::new();
    metadata.insert("name".into(), json!("obj"));
    if let Some(ns) = &input.object_namespace {
        metadata.insert("namespace".into(), json!(ns.text()));
    }
    metadata.insert("labels".into(), labels(label_pairs));
    let mut annotations = Map::new();
    if input.mirror_annotation {
        annotations.insert("kubernetes.io/config.mirror".into(), json!("mirror"));
        annotations.insert("kubernetes.io/config.source".into(), json!("file"));
    }
    if input.labels_as_annotations
        && let Value::Object(pairs) = labels(label_pairs)
    {
        annotations.extend(pairs);
    }
    if !annotations.is_empty() {
        metadata.insert("annotations".into(), Value::Object(annotations));
    }
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    object["metadata"] = Value::Object(metadata);
    object
}

fn review(input: &Input) -> Value {
    let (group, version, kind, resource, subresource) = input.kind.gvk();
    let operation = match input.operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    };
    let mut request = Map::new();
    request.insert("uid".into(), json!("f0e1d2c3-0000-4000-8000-000000000001"));
    request.insert(
        "kind".into(),
        json!({ "group": group, "version": version, "kind": kind }),
    );
    request.insert(
        "resource".into(),
        json!({ "group": group, "version": version, "resource": resource }),
    );
    if !subresource.is_empty() {
        request.insert("subResource".into(), json!(subresource));
    }
    request.insert("name".into(), json!("obj"));
    if !input.omit_request_namespace && !matches!(input.kind, Kind::Namespace) {
        request.insert("namespace".into(), json!(input.namespace.text()));
    }
    request.insert("operation".into(), json!(operation));
    request.insert("userInfo".into(), input.user.json());
    let new = object(input, &input.containers, &input.labels);
    match input.operation {
        Operation::Delete => {
            request.insert("oldObject".into(), new);
        }
        _ => {
            request.insert("object".into(), new);
            if let Operation::Update = input.operation {
                let old_containers = input.old_containers.as_deref().unwrap_or(&[]);
                let old_labels = input.old_labels.as_deref().unwrap_or(&[]);
                if input.old_containers.is_some() || input.old_labels.is_some() {
                    request.insert(
                        "oldObject".into(),
                        object(input, old_containers, old_labels),
                    );
                }
            }
        }
    }
    json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request })
}

fuzz_target!(|input: Input| {
    let body = serde_json::to_vec(&review(&input)).expect("JSON serializes");
    byoc_fuzz::harness().check(&body);
});

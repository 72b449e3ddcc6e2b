//! Test helpers: objects, caches, and a mock API server that checks each request a reconcile
//! sends (method, path, query, content type, body) against an expected script, in order, and
//! that nothing else is sent (after kube-rs controller-rs `src/fixtures.rs`).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use byoc_api::LeanNamespace;
use byoc_api::grant::READY;
use byoc_api::{ByocGrant, ByocGrantSpec, ByocGrantStatus, StoredGrant};
use http::{Method, Request, Response, StatusCode};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::Client;
use kube::client::Body;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tower_test::mock::{self, Handle};

use crate::grants::FINALIZER;
use crate::{Context, GrantCache, Leadership, Metrics};

/// A timestamp from RFC 3339.
pub fn ts(s: &str) -> Timestamp {
    s.parse().expect("RFC 3339 timestamp")
}

/// A grant at generation 1, without finalizer or status.
pub fn grant(name: &str, namespace: &str, registries: &[&str], expires: Option<&str>) -> ByocGrant {
    let mut g = ByocGrant::new(
        name,
        ByocGrantSpec {
            namespace: namespace.into(),
            reason: "test".into(),
            registries: registries.iter().map(|s| s.to_string()).collect(),
            any_registry: registries.is_empty(),
            namespace_uid: None,
            expires_at: expires.map(|e| Time(ts(e))),
            requirements: None,
        },
    );
    g.metadata.generation = Some(1);
    g
}

/// `grant` as the controller's watch delivers it.
pub fn stored(grant: ByocGrant) -> Arc<StoredGrant> {
    Arc::new(grant.into())
}

/// A stored grant at generation 1 for `namespace` whose `expiresAt` does not read (ten
/// fractional digits), with `finalizers`, as the watch delivers it.
pub fn unreadable(name: &str, namespace: &str, finalizers: &[&str]) -> StoredGrant {
    let object = json!({
        "apiVersion": "byoc.toolforge.org/v1alpha1",
        "kind": "ByocGrant",
        "metadata": { "name": name, "generation": 1, "finalizers": finalizers },
        "spec": {
            "namespace": namespace,
            "reason": "test",
            "expiresAt": "2027-03-31T00:00:00.1234567891Z",
        },
    });
    let stored = StoredGrant::from_value(&object).expect("metadata reads");
    assert!(stored.readable().is_none(), "{stored:?}");
    stored
}

/// A finalized grant whose status already says `reason` with `message`.
pub fn grant_with_status(
    name: &str,
    namespace: &str,
    registries: &[&str],
    reason: &str,
    message: &str,
) -> ByocGrant {
    let mut g = grant(name, namespace, registries, None).finalized();
    g.status = Some(ByocGrantStatus {
        observed_generation: Some(1),
        conditions: vec![Condition {
            type_: READY.into(),
            status: if reason == "Applied" { "True" } else { "False" }.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: Some(1),
            last_transition_time: Time(ts("2026-01-01T00:00:00Z")),
        }],
        registries: Some(g.spec.registries_summary()),
        requires: Some("none".into()),
        namespace_uid: Some(uid(namespace)),
    });
    g
}

/// The UID [`namespace`] gives namespace `name`.
pub fn uid(name: &str) -> String {
    format!("uid-{name}")
}

/// Adds the controller's finalizer.
pub trait Finalized {
    /// The object with [`FINALIZER`].
    fn finalized(self) -> Self;
}

impl Finalized for ByocGrant {
    fn finalized(mut self) -> Self {
        self.metadata
            .finalizers
            .get_or_insert_default()
            .push(FINALIZER.into());
        self
    }
}

/// A namespace with `labels` and UID [`uid`]`(name)`.
pub fn namespace(name: &str, labels: &[(&str, &str)]) -> LeanNamespace {
    LeanNamespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            uid: Some(uid(name)),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
    }
}

/// Namespace `name` with `labels` as the API server answers a patch: with a `managedFields` time
/// a tenant wrote that k8s-openapi cannot read (9999-12-31), and a status condition so timed.
fn served_namespace(name: &str, labels: &[(&str, &str)]) -> Value {
    const FAR: &str = "9999-12-31T00:00:00Z";
    let mut metadata = json!(namespace(name, labels).metadata);
    metadata["managedFields"] = json!([{ "manager": "x", "operation": "Update",
        "apiVersion": "v1", "time": FAR, "fieldsType": "FieldsV1", "fieldsV1": {} }]);
    json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": metadata,
            "status": { "phase": "Active", "conditions": [{ "type": "X", "status": "True",
                        "lastTransitionTime": FAR }] } })
}

/// Caches filled with objects, a context on a mock client, and the mock's handle.
pub struct Scenario {
    ctx: Arc<Context>,
    handle: std::sync::Mutex<Option<Handle<Request<Body>, Response<Body>>>>,
    registry: Registry,
}

impl Scenario {
    /// A scenario in which this replica leads.
    pub fn new(grants: Vec<ByocGrant>, namespaces: Vec<LeanNamespace>) -> Self {
        Self::stored(grants.into_iter().map(Into::into).collect(), namespaces)
    }

    /// A scenario in which this replica leads, with grants as the watch delivers them.
    pub fn stored(grants: Vec<StoredGrant>, namespaces: Vec<LeanNamespace>) -> Self {
        Self::build(
            grants,
            namespaces,
            true,
            tokio::sync::watch::channel(true).1,
        )
    }

    /// A scenario in which this replica is a standby.
    pub fn standby(grants: Vec<ByocGrant>, namespaces: Vec<LeanNamespace>) -> Self {
        let grants = grants.into_iter().map(Into::into).collect();
        Self::build(
            grants,
            namespaces,
            false,
            tokio::sync::watch::channel(true).1,
        )
    }

    /// A scenario in which this replica leads but its caches have not been filled; returns the
    /// sender that marks them filled.
    pub fn unsynced(
        grants: Vec<ByocGrant>,
        namespaces: Vec<LeanNamespace>,
    ) -> (Self, tokio::sync::watch::Sender<bool>) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let grants = grants.into_iter().map(Into::into).collect();
        (Self::build(grants, namespaces, true, rx), tx)
    }

    fn build(
        grants: Vec<StoredGrant>,
        namespaces: Vec<LeanNamespace>,
        leader: bool,
        synced: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let mut registry = Registry::default();
        let metrics = Arc::new(Metrics::register(&mut registry));
        let ctx = Context::new(
            client,
            GrantCache::filled(grants),
            filled(namespaces),
            Leadership::fixed(leader),
            metrics,
            "test-replica",
            synced,
        );
        Self {
            ctx: Arc::new(ctx),
            handle: std::sync::Mutex::new(Some(handle)),
            registry,
        }
    }

    /// This scenario with the policy's `defaultGrantRequirements` `default`.
    pub fn with_default_requirements(mut self, default: byoc_api::Requirements) -> Self {
        Arc::get_mut(&mut self.ctx)
            .expect("not shared yet")
            .default_requirements = Some(default);
        self
    }

    /// The shared context.
    pub fn ctx(&self) -> Arc<Context> {
        self.ctx.clone()
    }

    /// The metrics in Prometheus text format.
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encode");
        out
    }

    /// Runs `work` while the mock API server expects exactly `steps`, in order; returns what
    /// `work` returned. Panics (with the mismatch) on any other request, or a missing one.
    pub async fn check<F: Future>(&self, steps: Vec<Step>, work: F) -> F::Output {
        let handle = self
            .handle
            .lock()
            .expect("handle")
            .take()
            .expect("one check per scenario");
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let server: JoinHandle<Vec<String>> = tokio::spawn(serve(handle, steps, stopped));
        let output = work.await;
        let _ = stop.send(());
        let unexpected = server
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        assert!(unexpected.is_empty(), "unexpected requests: {unexpected:?}");
        output
    }
}

/// A reader over a cache holding `objects`.
fn filled<K>(objects: Vec<K>) -> kube::runtime::reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let mut writer = Writer::<K>::default();
    writer.apply_watcher_event(&watcher::Event::Init);
    for object in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    writer.as_reader()
}

/// One expected request and the answer to it.
pub struct Step {
    method: Method,
    path: String,
    query: Vec<(&'static str, &'static str)>,
    content_type: Option<&'static str>,
    check: Box<dyn FnOnce(&Value) + Send>,
    answer: Answer,
}

enum Answer {
    /// This object, as JSON.
    Object(Value),
    /// The request body back (what the API server does with an event).
    Echo,
    /// A failure status with this code.
    Fail(u16),
}

const GRANTS: &str = "/apis/byoc.toolforge.org/v1alpha1/byocgrants";
const REQUESTS: &str = "/apis/byoc.toolforge.org/v1alpha1";

impl Step {
    /// The JSON patch that adds [`FINALIZER`] to grant `name`.
    pub fn add_finalizer(name: &str) -> Self {
        Self {
            method: Method::PATCH,
            path: format!("{GRANTS}/{name}"),
            query: vec![],
            content_type: Some("application/json-patch+json"),
            check: Box::new(|body| {
                let ops = body.as_array().expect("a JSON patch");
                assert!(
                    ops.iter()
                        .any(|op| op["op"] == "add" && op["value"] == json!([FINALIZER])),
                    "no finalizer added by {body}"
                );
            }),
            answer: Answer::Object(json!(grant(name, "tool-a", &[], None).finalized())),
        }
    }

    /// The JSON patch that removes [`FINALIZER`] from grant `name` (after testing it is there).
    pub fn remove_finalizer(name: &str) -> Self {
        Self {
            method: Method::PATCH,
            path: format!("{GRANTS}/{name}"),
            query: vec![],
            content_type: Some("application/json-patch+json"),
            check: Box::new(|body| {
                assert_eq!(body[0]["op"], "test", "{body}");
                assert_eq!(body[0]["value"], FINALIZER, "{body}");
                assert_eq!(body[1]["op"], "remove", "{body}");
            }),
            answer: Answer::Object(json!(grant(name, "tool-a", &[], None))),
        }
    }

    /// The merge patch of namespace `name`'s labels by field manager `byoc-controller`,
    /// naming its UID [`uid`]`(name)`, whose `labels` (a JSON object; `null` values delete) are exactly `patch`. The answer is
    /// the namespace with `before`'s labels and the patch merged in.
    pub fn set_labels(name: &str, patch: Value, before: &[(&str, &str)]) -> Self {
        let mut after: BTreeMap<String, String> = before
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (k, v) in patch.as_object().expect("a labels object") {
            match v.as_str() {
                Some(v) => after.insert(k.clone(), v.to_owned()),
                None => after.remove(k),
            };
        }
        let after: Vec<(&str, &str)> = after
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let expected = json!({ "metadata": { "labels": patch, "uid": uid(name) } });
        Self {
            method: Method::PATCH,
            path: format!("/api/v1/namespaces/{name}"),
            query: vec![("fieldManager", "byoc-controller")],
            content_type: Some("application/merge-patch+json"),
            check: Box::new(move |body| assert_eq!(*body, expected)),
            answer: Answer::Object(served_namespace(name, &after)),
        }
    }

    /// [`Step::set_labels`] whose patch also names `annotations` (a JSON object; `null`
    /// deletes).
    pub fn set_labels_and_annotations(
        name: &str,
        patch: Value,
        annotations: Value,
        before: &[(&str, &str)],
    ) -> Self {
        let expected = json!({ "metadata": {
            "labels": patch, "annotations": annotations, "uid": uid(name) } });
        Self {
            check: Box::new(move |body| assert_eq!(*body, expected)),
            ..Self::set_labels(name, patch, before)
        }
    }

    /// A merge patch of grant `name`'s status whose Ready condition has `status` and `reason`,
    /// with observedGeneration on both levels.
    pub fn status(name: &str, status: &'static str, reason: &'static str) -> Self {
        Self {
            method: Method::PATCH,
            path: format!("{GRANTS}/{name}/status"),
            query: vec![("fieldManager", "byoc-controller")],
            content_type: Some("application/merge-patch+json"),
            check: Box::new(move |body| {
                let s = &body["status"];
                assert_eq!(s["observedGeneration"], 1, "{body}");
                let ready = s["conditions"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                    .unwrap_or_else(|| panic!("no Ready condition in {body}"));
                assert_eq!(
                    (ready["status"].as_str(), ready["reason"].as_str()),
                    (Some(status), Some(reason)),
                    "{body}"
                );
                assert_eq!(ready["observedGeneration"], 1, "{body}");
                assert!(ready["lastTransitionTime"].is_string(), "{body}");
            }),
            answer: Answer::Object(json!(grant(name, "tool-a", &[], None))),
        }
    }

    /// This step, with `check` run on the request body too.
    pub fn also(self, check: impl FnOnce(&Value) + Send + 'static) -> Self {
        let first = self.check;
        Self {
            check: Box::new(move |body| {
                first(body);
                check(body);
            }),
            ..self
        }
    }

    /// A new event about a grant with `reason`, in the `default` namespace (where events
    /// about cluster-scoped objects go), reported by this controller.
    pub fn event(reason: &'static str) -> Self {
        Self::event_about("default", "ByocGrant", reason)
    }

    /// A new event about an object of `kind` in `namespace`, with `reason`, reported by this
    /// controller.
    pub fn event_about(namespace: &str, kind: &'static str, reason: &'static str) -> Self {
        Self {
            method: Method::POST,
            path: format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events"),
            query: vec![],
            content_type: None,
            check: Box::new(move |body| {
                assert_eq!(body["reason"], reason, "{body}");
                assert_eq!(body["regarding"]["kind"], kind, "{body}");
                assert_eq!(body["reportingController"], "byoc-controller", "{body}");
                assert_eq!(body["reportingInstance"], "test-replica", "{body}");
            }),
            answer: Answer::Echo,
        }
    }

    /// The update (PUT, with the resourceVersion the cache had) of the status of ByocRequest
    /// `namespace/name` to `phase`, with a `Granted` condition and observedGeneration.
    pub fn request_status(namespace: &str, name: &str, phase: &'static str) -> Self {
        Self {
            method: Method::PUT,
            path: format!("{REQUESTS}/namespaces/{namespace}/byocrequests/{name}/status"),
            query: vec![],
            content_type: Some("application/json"),
            check: Box::new(move |body| {
                assert_eq!(body["metadata"]["resourceVersion"], "7", "{body}");
                let s = &body["status"];
                assert_eq!(s["phase"], phase, "{body}");
                assert_eq!(s["observedGeneration"], 1, "{body}");
                assert_eq!(s["conditions"][0]["type"], "Granted", "{body}");
                assert_eq!(s["conditions"][0]["observedGeneration"], 1, "{body}");
            }),
            answer: Answer::Echo,
        }
    }

    /// A new event about a ByocRequest in `namespace` with `reason`.
    pub fn request_event(namespace: &str, reason: &'static str) -> Self {
        Self {
            method: Method::POST,
            path: format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events"),
            query: vec![],
            content_type: None,
            check: Box::new(move |body| {
                assert_eq!(body["reason"], reason, "{body}");
                assert_eq!(body["regarding"]["kind"], "ByocRequest", "{body}");
            }),
            answer: Answer::Echo,
        }
    }

    /// A read of grant `name`, answered with `grant`, or 404 without one.
    pub fn get_grant(name: &str, grant: Option<Value>) -> Self {
        let path = format!("{GRANTS}/{name}");
        match grant {
            Some(grant) => Self::get(&path, grant),
            None => Self::fail(Method::GET, &path, 404),
        }
    }

    /// A GET of `path`, answered with `object`.
    pub fn get(path: &str, object: Value) -> Self {
        Self {
            method: Method::GET,
            path: path.into(),
            query: vec![],
            content_type: None,
            check: Box::new(|_| {}),
            answer: Answer::Object(object),
        }
    }

    /// A request to `path` that fails with `code`.
    pub fn fail(method: Method, path: &str, code: u16) -> Self {
        Self {
            method,
            path: path.into(),
            query: vec![],
            content_type: None,
            check: Box::new(|_| {}),
            answer: Answer::Fail(code),
        }
    }
}

/// Answers the requests of `handle` with `steps`, checking each; then, until `stop`, answers
/// any further request with an error and returns them all.
async fn serve(
    mut handle: Handle<Request<Body>, Response<Body>>,
    steps: Vec<Step>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Vec<String> {
    for (i, step) in steps.into_iter().enumerate() {
        let next = tokio::time::timeout(Duration::from_secs(5), handle.next_request()).await;
        let Ok(Some((request, send))) = next else {
            panic!(
                "step {i}: expected {} {}, but no request came",
                step.method, step.path
            );
        };
        let uri = request.uri().clone();
        assert_eq!(
            (request.method(), uri.path()),
            (&step.method, step.path.as_str()),
            "step {i}"
        );
        let query: Vec<(String, String)> = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|p| p.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        for (k, v) in &step.query {
            assert!(
                query.iter().any(|(qk, qv)| qk == k && qv == v),
                "step {i}: {k}={v} not in {uri}"
            );
        }
        if let Some(want) = step.content_type {
            let got = request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            assert_eq!(got, Some(want), "step {i}: content type of {uri}");
        }
        let bytes = request
            .into_body()
            .collect_bytes()
            .await
            .expect("request body");
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON request body")
        };
        (step.check)(&body);
        let response = match step.answer {
            Answer::Object(object) => json_response(StatusCode::OK, &object),
            Answer::Echo => json_response(StatusCode::CREATED, &body),
            Answer::Fail(code) => failure(code),
        };
        send.send_response(response);
    }
    let mut unexpected = Vec::new();
    loop {
        tokio::select! {
            _ = &mut stop => return unexpected,
            next = handle.next_request() => match next {
                Some((request, send)) => {
                    unexpected.push(format!("{} {}", request.method(), request.uri()));
                    send.send_response(failure(500));
                }
                None => return unexpected,
            },
        }
    }
}

fn failure(code: u16) -> Response<Body> {
    // The reason kube's `get_opt` reads as "absent" (404), and the others as the server says.
    let reason = match code {
        404 => "NotFound",
        409 => "Conflict",
        _ => "Forbidden",
    };
    json_response(
        StatusCode::from_u16(code).expect("status code"),
        &json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "refused by the test", "reason": reason, "code": code,
        }),
    )
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("JSON")))
        .expect("response")
}

//! Reviews whose images have requirements, settled against a real `docker-registry` on
//! loopback behind the counting [`FaultProxy`] (issue 22, third cold review's F2): each
//! distinct image of a review is looked up and judged once, its outcome given to every
//! container of it; heavy judging runs off the async workers and within the review's budget.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use byoc_api::{BaseImage, LeanNamespace, Requirements};
use byoc_e2e::bench::{PLATFORM, granted_namespace, pod_review};
use byoc_e2e::registry::{
    Fault, FaultProxy, ImageSpec, Images, Layer, LocalRegistry, OCI_INDEX, OCI_MANIFEST,
};
use byoc_policy::Config;
use byoc_registry::{LookupMetrics, Lookups, lookups};
use byoc_webhook::{Metrics, NamespaceCache, Webhook};
use hyper::body::Bytes;
use kube::core::admission::AdmissionResponse;
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

/// How long a name-only review may take while hostile reviews are being judged: with the
/// judging on the async workers it took over a second.
const NAME_ONLY_BOUND: Duration = Duration::from_millis(150);

/// The judging passes of a webhook's reviews: (place, images judged).
#[derive(Clone, Default)]
struct Passes(Arc<Mutex<Vec<(&'static str, usize)>>>);

impl Passes {
    fn taken(&self) -> Vec<(&'static str, usize)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl LookupMetrics for Passes {
    fn lookup(&self, _: &'static str, _: Duration) {}

    fn registry_cache(&self, _: u64, _: u64, _: usize) {}

    fn judged(&self, place: &'static str, images: usize) {
        self.0.lock().unwrap().push((place, images));
    }
}

/// A registry with the scenario images, the proxy in front of it, and the grants of
/// `tool-req` (builtOn the base, through the proxy) and `tool-plain` (the proxy by name).
struct Setup {
    registry: LocalRegistry,
    images: Images,
    proxy: FaultProxy,
    host: String,
}

impl Setup {
    async fn start() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let registry = LocalRegistry::start();
        let images = Images::push(&registry).await;
        let proxy = FaultProxy::start(registry.addr()).await;
        let host = proxy.addr().to_string();
        Self {
            registry,
            images,
            proxy,
            host,
        }
    }

    /// `path` through the proxy.
    fn image(&self, path: &str, tag: &str) -> String {
        format!("{}/{path}:{tag}", self.host)
    }

    /// A webhook with a new registry client under `registryLookups` `lookups` (YAML flow
    /// mapping entries), its judging passes counted.
    fn webhook(&self, lookups: &str) -> (Webhook, Passes) {
        let config = Config::from_yaml(&format!(
            "registryLookups: {{insecureRegistries: [\"{}\"], tagTtl: 1h{lookups}}}\n",
            self.host
        ))
        .unwrap();
        let built_on = Requirements {
            built_on: vec![BaseImage(format!(
                "{}/{}",
                self.host, self.images.base.path
            ))],
            ..Requirements::default()
        };
        let namespaces: [LeanNamespace; 2] = [
            granted_namespace("tool-plain", &self.host, None),
            granted_namespace("tool-req", &self.host, Some(&built_on)),
        ];
        let (store, mut writer) = reflector::store();
        for ns in namespaces {
            writer.apply_watcher_event(&Event::Apply(ns));
        }
        // The writer must outlive the webhook: dropping it would close the store.
        std::mem::forget(writer);
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let client = lookups::client(&config, Some(tls)).unwrap();
        let passes = Passes::default();
        let lookups = Lookups::new(&config, Ok(client), passes.clone());
        let metrics = Metrics::register(&mut Registry::default());
        let webhook = Webhook::new(config, NamespaceCache::new(store), lookups, metrics);
        (webhook, passes)
    }
}

/// A pod review in `ns` whose containers `c0`, `c1`, … run `images` (beside the platform's
/// init container).
fn pod(uid: &str, ns: &str, images: &[String]) -> Vec<u8> {
    let mut review: Value = pod_review(uid, ns, &format!("{PLATFORM}/toolforge-redis:latest"));
    review["request"]["object"]["spec"]["containers"] = images
        .iter()
        .enumerate()
        .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
        .collect();
    review.to_string().into_bytes()
}

fn tool_of(setup: &Setup) -> String {
    setup.image(&setup.images.tool.path, &setup.images.tool.tag)
}

fn message(response: &AdmissionResponse) -> &str {
    &response.result.message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_of_one_image_are_looked_up_and_judged_once() {
    let setup = Setup::start().await;
    let tool = tool_of(&setup);
    let rebased = setup.image(&setup.images.rebased.path, &setup.images.rebased.tag);

    let (one, passes) = setup.webhook("");
    let response = one
        .review(&pod("u-1", "tool-req", std::slice::from_ref(&tool)))
        .await;
    assert!(response.allowed, "{}", message(&response));
    let alone = setup.proxy.requests();
    let alone_passes = passes.taken();
    assert!(!alone.is_empty(), "a cold review asks the registry");
    assert!(alone_passes.iter().all(|&(_, images)| images == 1));

    setup.proxy.clear_log();
    let (many, passes) = setup.webhook("");
    let response = many
        .review(&pod("u-2", "tool-req", &vec![tool.clone(); 40]))
        .await;
    assert!(response.allowed, "{}", message(&response));
    let mut requests = setup.proxy.requests();
    let mut expected = alone.clone();
    requests.sort();
    expected.sort();
    assert_eq!(
        requests, expected,
        "40 containers of one image make the requests of one"
    );
    assert_eq!(
        passes.taken(),
        alone_passes,
        "40 containers of one image are judged as one"
    );

    // Two images, 20 containers each: each judged once, each refusal given to its containers.
    let mixed: Vec<String> = (0..40)
        .map(|i| if i % 2 == 0 { &tool } else { &rebased }.clone())
        .collect();
    let response = many.review(&pod("u-3", "tool-req", &mixed)).await;
    assert!(!response.allowed);
    for i in (1..40).step_by(2) {
        assert!(
            message(&response).contains(&format!("container \"c{i}\" image \"{rebased}\"")),
            "c{i} is refused: {}",
            message(&response)
        );
    }
    assert!(
        !message(&response).contains("\"c0\""),
        "{}",
        message(&response)
    );
    let passes = passes.taken();
    assert!(!passes.is_empty());
    assert!(passes.iter().all(|&(_, images)| images == 2), "{passes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_softened_requirement_warns_for_every_container_of_the_image() {
    let setup = Setup::start().await;
    let tool = tool_of(&setup);
    let (webhook, passes) = setup.webhook(", failureMode: {builtOn: allow}");
    setup.proxy.down();
    let response = webhook
        .review(&pod("u-1", "tool-req", &vec![tool; 3]))
        .await;
    assert!(response.allowed, "{}", message(&response));
    let warnings = response.warnings.unwrap_or_default();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    for (i, warning) in warnings.iter().enumerate() {
        assert!(
            warning.starts_with(&format!("container \"c{i}\": builtOn not checked")),
            "{warning}"
        );
    }
    assert!(passes.taken().iter().all(|&(_, images)| images == 1));
}

/// Pushes `tool-a/hostile`: an index of 256 platform-less entries, all one 512-layer image,
/// the most `byoc_policy::oci` reads. Returns the index's digest.
async fn push_hostile(registry: &Setup) -> String {
    let layer = Layer::new(&[("x", "x")]);
    let spec = ImageSpec::new(&vec![&layer; 512]);
    let upstream = &registry.registry;
    let image = upstream.push_image("tool-a/hostile", "image", &spec).await;
    let entry = json!({
        "mediaType": OCI_MANIFEST,
        "digest": image.digest.as_str(),
        "size": image.manifest.len(),
    });
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": vec![entry; 256]});
    let digest = upstream
        .push_manifest(
            "tool-a/hostile",
            "latest",
            OCI_INDEX,
            &Bytes::from(index.to_string()),
        )
        .await;
    digest.as_str().to_owned()
}

/// `count` distinct references to the hostile index (tags beside its digest).
fn hostile_images(setup: &Setup, digest: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("{}/tool-a/hostile:t{i}@{digest}", setup.host))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_indexes_do_not_hold_up_name_only_reviews() {
    let setup = Setup::start().await;
    let digest = push_hostile(&setup).await;
    let (webhook, passes) = setup.webhook("");
    let webhook = Arc::new(webhook);
    let hostile = pod("u-h", "tool-req", &hostile_images(&setup, &digest, 64));
    let started = Instant::now();
    let judged: Vec<_> = (0..2)
        .map(|_| {
            let (webhook, hostile) = (Arc::clone(&webhook), hostile.clone());
            tokio::spawn(async move { webhook.review(&hostile).await })
        })
        .collect();
    let plain = pod("u-p", "tool-plain", &[tool_of(&setup)]);
    let mut slowest = Duration::ZERO;
    let mut reviewed = 0;
    while !judged.iter().all(tokio::task::JoinHandle::is_finished) {
        // On the runtime's workers, as the server runs each request: from its arrival.
        let one = Instant::now();
        let (webhook, plain) = (Arc::clone(&webhook), plain.clone());
        let response = tokio::spawn(async move { webhook.review(&plain).await })
            .await
            .unwrap();
        slowest = slowest.max(one.elapsed());
        reviewed += 1;
        assert!(response.allowed, "{}", message(&response));
        // The test's own thread is no worker: its wait needs none (a timer would, and would
        // fire late while they are busy).
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = started.elapsed();
    eprintln!("{reviewed} name-only reviews, the slowest {slowest:?}; hostile reviews {took:?}");
    for task in judged {
        let response = task.await.unwrap();
        assert!(!response.allowed, "a hostile index is never admitted");
        assert!(
            message(&response).contains("builtOn"),
            "{}",
            message(&response)
        );
    }
    assert!(
        slowest < NAME_ONLY_BOUND,
        "the slowest of {reviewed} name-only reviews took {slowest:?} (hostile reviews: {took:?})"
    );
    let passes = passes.taken();
    assert!(
        passes.iter().any(|&(place, _)| place != "inline"),
        "the hostile index is judged off the async workers: {passes:?}"
    );
    // The default budget is 2 s: answered by then, whatever the judging still costs.
    assert!(took < Duration::from_millis(2500), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_whose_judging_outlasts_its_budget_is_answered_at_the_deadline() {
    let setup = Setup::start().await;
    let digest = push_hostile(&setup).await;
    let (webhook, passes) = setup.webhook(", budget: 300ms");
    let started = Instant::now();
    let response = webhook
        .review(&pod(
            "u-h",
            "tool-req",
            &hostile_images(&setup, &digest, 128),
        ))
        .await;
    let took = started.elapsed();
    assert!(!response.allowed);
    assert!(
        message(&response).contains("the review's registry budget of 300ms ran out"),
        "{}",
        message(&response)
    );
    assert!(took < Duration::from_millis(800), "answered after {took:?}");
    let passes = passes.taken();
    assert_eq!(
        passes.last().map(|&(place, _)| place),
        Some("late"),
        "{passes:?}"
    );
}

/// Posts `body` to the webhook's router as the API server would; the HTTP status and the
/// review's response.
async fn post(webhook: &Arc<Webhook>, body: Vec<u8>) -> (u16, Value) {
    use tower::ServiceExt;
    let request = axum::http::Request::post(byoc_webhook::VALIDATE_PATH)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
        .unwrap();
    let response = byoc_webhook::server::router(Arc::clone(webhook))
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Third cold review of issue 22, F3: a review waiting on a slow registry gives its body
/// budget back once its body is read, so reviews of other namespaces are not refused busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_waiting_on_the_registry_holds_no_body_budget() {
    let setup = Setup::start().await;
    let tool = tool_of(&setup);
    // The smallest budget: one small body at a time, waited for 300 ms.
    let (webhook, _) = setup.webhook("");
    let webhook = Arc::new(webhook.with_budget(0, Duration::from_millis(300)));
    // A body of exactly the small share's size.
    let mut waiting: Value =
        serde_json::from_slice(&pod("slow", "tool-req", std::slice::from_ref(&tool))).unwrap();
    let padding = 64 * 1024 - waiting.to_string().len() - r#","annotations":{"pad":""}"#.len();
    waiting["request"]["object"]["metadata"]["annotations"] = json!({"pad": "x".repeat(padding)});
    let waiting = waiting.to_string().into_bytes();
    assert_eq!(waiting.len(), 64 * 1024);
    setup
        .proxy
        .set_fault(Fault::Slow(Duration::from_millis(1500)));
    let slow = tokio::spawn({
        let webhook = Arc::clone(&webhook);
        async move { post(&webhook, waiting).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let (status, review) = post(&webhook, pod("plain", "tool-plain", &[tool])).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{review}");
    assert_eq!(review["response"]["allowed"], json!(true), "{review}");
    assert!(took < NAME_ONLY_BOUND, "the name-only review took {took:?}");
    assert!(
        !slow.is_finished(),
        "the slow review did not wait on the registry"
    );
    // Answered, whatever the slow registry let it decide.
    let (status, review) = slow.await.unwrap();
    assert_eq!(status, 200, "{review}");
    assert_eq!(review["response"]["uid"], json!("slow"), "{review}");
}

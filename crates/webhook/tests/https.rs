//! The webhook over real HTTPS on loopback: rcgen certificates, a hyper client, the namespace
//! cache filled by hand (the cluster-backed path is covered by `tests/e2e`).
// Helpers here are test code too: a failed step should panic with the value.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum_server::Handle;
use byoc_api::labels::Expiry;
use byoc_e2e::chaos::pod_review;
use byoc_policy::{Config, Mode};
use byoc_registry::Lookups;
use byoc_webhook::cache::CachedNamespace;
use byoc_webhook::review::MAX_BODY_BYTES;
use byoc_webhook::{CertFiles, CertResolver, Metrics, NamespaceCache, Webhook, server};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use kube::api::ObjectMeta;
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use prometheus_client::registry::Registry;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use tokio_rustls::TlsConnector;

/// The server's limits in these tests: the defaults of `byoc-webhook`.
const LIMITS: server::Limits = server::Limits {
    max_connections: 64,
    max_connections_per_source: 64,
    max_connection_age: Duration::from_secs(600),
    idle_timeout: Duration::from_secs(120),
};

const HOST: &str = "webhook.test";
const PLATFORM: &str = "docker-registry.tools.wmflabs.org/toolforge-python311:latest";

fn provider() -> Arc<CryptoProvider> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    CryptoProvider::get_default()
        .expect("provider installed")
        .clone()
}

/// A CA that signs serving certificates for [`HOST`].
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// Writes a new leaf certificate and key to `files`, in place and one after the other (so
    /// for a moment they do not match, as with a careless writer); returns the certificate.
    fn issue(&self, files: &CertFiles) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![HOST.to_owned()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        cert.der().to_vec()
    }

    fn connector(&self) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}

fn namespace(name: &str, labels: &[(&str, &str)]) -> CachedNamespace {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    CachedNamespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
    }
}

/// A webhook serving on a free loopback port.
struct Server {
    addr: SocketAddr,
    ca: Ca,
    files: CertFiles,
    handle: Handle<SocketAddr>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    registry: Registry,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(mode: Mode) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let files = CertFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        };
        let ca = Ca::new();
        ca.issue(&files);
        let resolver = CertResolver::load(files.clone(), provider()).unwrap();
        let tls = resolver.server_config().unwrap();
        tokio::spawn(resolver.watch(Duration::from_millis(10), |_| {}));

        let (store, mut writer) = reflector::store();
        for ns in [
            namespace("tool-a", &[]),
            namespace("tool-quay", &[("byoc.toolforge.org/quay.io", "never")]),
            namespace(
                "tool-soon",
                &[("byoc.toolforge.org/quay.io", &soon().to_label_value())],
            ),
        ] {
            writer.apply_watcher_event(&Event::Apply(ns));
        }
        // The writer must outlive the test: dropping it would close the store.
        std::mem::forget(writer);
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let config = Config {
            mode,
            ..Config::default()
        };
        let lookups = Lookups::new(
            &config,
            Err("not used: no requirement applies".into()),
            metrics.clone(),
        );
        let webhook = Arc::new(Webhook::new(
            config,
            NamespaceCache::new(store),
            lookups,
            metrics,
        ));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = Handle::new();
        let task = tokio::spawn(server::serve(
            listener,
            tls,
            LIMITS,
            webhook,
            handle.clone(),
        ));
        Self {
            addr,
            ca,
            files,
            handle,
            task,
            registry,
            _dir: dir,
        }
    }

    /// A new keep-alive connection, and the leaf certificate it was served.
    async fn connect(&self) -> std::io::Result<(SendRequest<Full<Bytes>>, Vec<u8>)> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        let tls = self
            .ca
            .connector()
            .connect(ServerName::try_from(HOST).unwrap(), tcp)
            .await?;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec());
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok((sender, leaf.unwrap_or_default()))
    }

    fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text
    }
}

async fn post(
    sender: &mut SendRequest<Full<Bytes>>,
    body: impl Into<Bytes>,
) -> hyper::Result<(StatusCode, Value)> {
    sender.ready().await?;
    let request = Request::post("/validate")
        .header("host", HOST)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap();
    let response = sender.send_request(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    Ok((status, json))
}

/// An expiry three days from now, inside the default 14-day warning window.
fn soon() -> Expiry {
    Expiry::from_option(Some(
        jiff::Timestamp::now() + jiff::SignedDuration::from_hours(72),
    ))
}

fn response(review: &Value) -> &Value {
    &review["response"]
}

#[tokio::test]
async fn allowed_and_denied_reviews() {
    let server = Server::start(Mode::Enforce).await;
    let (mut c, _) = server.connect().await.unwrap();
    // Several requests on one keep-alive connection.
    let cases = [
        ("tool-a", PLATFORM, true),
        ("tool-a", "nginx", false),
        ("tool-quay", "quay.io/prometheus/node-exporter:v1", true),
        ("tool-quay", "ghcr.io/x/y", false),
        ("tool-unknown", "quay.io/x", false),
        ("kube-system", "nginx", true),
    ];
    for (i, (ns, image, allowed)) in cases.into_iter().enumerate() {
        let uid = format!("uid-{i}");
        let (status, review) = post(&mut c, pod_review(&uid, ns, &[image]).to_string())
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(review["kind"], "AdmissionReview");
        let r = response(&review);
        assert_eq!(r["uid"], uid.as_str());
        assert_eq!(r["allowed"], allowed, "{ns} {image}: {r}");
        if !allowed {
            assert_eq!(r["status"]["code"], 403);
            let message = r["status"]["message"].as_str().unwrap();
            assert!(
                message.starts_with(&format!(
                    "Pod {ns}/p: container \"c0\" image \"{image}\" resolves to registry "
                )),
                "{message}"
            );
        }
    }
    let metrics = server.metrics();
    for line in [
        "byoc_webhook_decisions_total{result=\"admitted\",reason=\"allowed\"} 2",
        "byoc_webhook_decisions_total{result=\"admitted\",reason=\"exempt\"} 1",
        "byoc_webhook_decisions_total{result=\"denied\",reason=\"registry_not_allowed\"} 3",
        "byoc_webhook_request_duration_seconds_count 6",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
}

#[tokio::test]
async fn a_grant_ending_soon_admits_with_a_reminder() {
    let server = Server::start(Mode::Enforce).await;
    let (mut c, _) = server.connect().await.unwrap();
    let Expiry::At(at) = soon() else {
        unreachable!()
    };
    // (namespace, images, reminders)
    let cases: [(&str, &[&str], usize); 3] = [
        ("tool-soon", &["quay.io/x:1", PLATFORM], 1),
        ("tool-quay", &["quay.io/x:1"], 0),
        ("tool-soon", &[PLATFORM], 0),
    ];
    for (ns, images, reminders) in cases {
        let (status, review) = post(&mut c, pod_review("r", ns, images).to_string())
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        let r = response(&review);
        assert_eq!(r["allowed"], true, "{r}");
        let warnings = r["warnings"].as_array().map_or(0, Vec::len);
        assert_eq!(warnings, reminders, "{ns} {images:?}: {r}");
        if reminders > 0 {
            let warning = r["warnings"][0].as_str().unwrap();
            assert_eq!(
                warning,
                format!(
                    "Pod {ns}/p: container \"c0\" image \"quay.io/x:1\" is allowed only by a BYOC \
                     grant for quay.io that expires at {at} (2 days left); to keep using it, ask \
                     for a grant: kubectl byoc request -n {ns} --registry quay.io --reason '...'"
                )
            );
        }
    }
    let metrics = server.metrics();
    for line in [
        "byoc_webhook_decisions_total{result=\"admitted\",reason=\"allowed\"} 3",
        "byoc_webhook_expiry_reminders_total 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
}

#[tokio::test]
async fn warn_mode_admits_with_warnings() {
    let server = Server::start(Mode::Warn).await;
    let (mut c, _) = server.connect().await.unwrap();
    let (status, review) = post(
        &mut c,
        pod_review("w", "tool-a", &["nginx", PLATFORM]).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    let r = response(&review);
    assert_eq!(r["allowed"], true);
    let warnings = r["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{r}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("registry docker.io of image \"nginx\""),
        "{r}"
    );
    assert!(server.metrics().contains(
        "byoc_webhook_decisions_total{result=\"warned\",reason=\"registry_not_allowed\"} 1"
    ));
}

#[tokio::test]
async fn unreadable_bodies_get_an_admission_review() {
    let server = Server::start(Mode::Enforce).await;
    let (mut c, _) = server.connect().await.unwrap();
    let mut v1beta1 = pod_review("old-version", "tool-a", &[PLATFORM]);
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let mut no_uid = pod_review("", "tool-a", &[PLATFORM]);
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let mut bad_object = pod_review("bad-object", "tool-a", &[PLATFORM]);
    bad_object["request"]["object"]["spec"]["containers"] = json!("nginx");
    let mut bad_operation = pod_review("bad-op", "tool-a", &[PLATFORM]);
    bad_operation["request"]["operation"] = json!(42);
    let mut service = pod_review("svc", "tool-a", &[PLATFORM]);
    service["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Service"});
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (Vec::new(), "", "not JSON"),
        (b"{\"kind\": \"AdmissionReview\"".to_vec(), "", "not JSON"),
        (b"\x00\x01binary".to_vec(), "", "not JSON"),
        (
            json!({"hello": "world"}).to_string().into_bytes(),
            "",
            "expected apiVersion \"admission.k8s.io/v1\"",
        ),
        (
            v1beta1.to_string().into_bytes(),
            "old-version",
            "got apiVersion \"admission.k8s.io/v1beta1\"",
        ),
        (
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"})
                .to_string()
                .into_bytes(),
            "",
            "has no request",
        ),
        (no_uid.to_string().into_bytes(), "", "has no uid"),
        (
            bad_operation.to_string().into_bytes(),
            "bad-op",
            "cannot be read",
        ),
        (
            bad_object.to_string().into_bytes(),
            "bad-object",
            "malformed pod spec",
        ),
        (
            service.to_string().into_bytes(),
            "svc",
            "does not evaluate this kind",
        ),
    ];
    for (body, uid, needle) in cases {
        let shown = String::from_utf8_lossy(&body)
            .chars()
            .take(80)
            .collect::<String>();
        let (status, review) = post(&mut c, body).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{shown}");
        let r = response(&review);
        assert_eq!(r["allowed"], false, "{shown}: {r}");
        assert_eq!(r["uid"], uid, "{shown}: {r}");
        let message = r["status"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{shown}: {message}");
    }
    let metrics = server.metrics();
    assert!(
        metrics.contains("byoc_webhook_unreadable_requests_total{error=\"not_json\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("byoc_webhook_decisions_total{result=\"denied\",reason=\"malformed\"} 9"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "byoc_webhook_decisions_total{result=\"denied\",reason=\"unsupported_kind\"} 1"
        ),
        "{metrics}"
    );
}

/// A pod review padded (with an annotation) to exactly `size` bytes.
fn review_of_size(uid: &str, size: usize) -> Vec<u8> {
    let mut review = pod_review(uid, "tool-a", &[PLATFORM]);
    review["request"]["object"]["metadata"]["annotations"] = json!({"padding": ""});
    let base = review.to_string().len();
    review["request"]["object"]["metadata"]["annotations"]["padding"] =
        json!("x".repeat(size - base));
    let body = review.to_string().into_bytes();
    assert_eq!(body.len(), size);
    body
}

#[tokio::test]
async fn seven_mib_is_accepted_and_more_refused() {
    let server = Server::start(Mode::Enforce).await;
    let (mut c, _) = server.connect().await.unwrap();
    let (status, review) = post(&mut c, review_of_size("big", MAX_BODY_BYTES))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(response(&review)["allowed"], true, "{}", response(&review));
    assert_eq!(response(&review)["uid"], "big");

    let (mut c, _) = server.connect().await.unwrap();
    let (status, review) = post(&mut c, review_of_size("too-big", MAX_BODY_BYTES + 1))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let r = response(&review);
    assert_eq!(r["allowed"], false);
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .contains("larger than 7340032 bytes"),
        "{r}"
    );

    // The server is unharmed.
    let (mut c, _) = server.connect().await.unwrap();
    let (status, _) = post(
        &mut c,
        pod_review("after", "tool-a", &[PLATFORM]).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn certificate_rotation_under_continuous_requests_fails_nothing() {
    let server = Arc::new(Server::start(Mode::Enforce).await);
    let (_, first) = server.connect().await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let ok = Arc::new(AtomicUsize::new(0));

    let mut clients = Vec::new();
    for client in 0..4 {
        let (server, stop, served, ok) = (server.clone(), stop.clone(), served.clone(), ok.clone());
        clients.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                // Clients 0 and 1 reconnect for every request (a handshake each, which sees the
                // current certificate); 2 and 3 keep their connection alive.
                let result = async {
                    let (mut c, leaf) = server.connect().await?;
                    served.lock().unwrap().insert(leaf);
                    let requests = if client < 2 { 1 } else { 50 };
                    for _ in 0..requests {
                        n += 1;
                        let uid = format!("c{client}-{n}");
                        let (status, review) =
                            post(&mut c, pod_review(&uid, "tool-a", &[PLATFORM]).to_string())
                                .await
                                .map_err(std::io::Error::other)?;
                        if status != StatusCode::OK || response(&review)["allowed"] != true {
                            return Err(std::io::Error::other(format!("{status} {review}")));
                        }
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok::<_, std::io::Error>(())
                }
                .await;
                if let Err(e) = result {
                    failures.push(e.to_string());
                }
            }
            failures
        }));
    }

    let mut issued = vec![first.clone()];
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        issued.push(server.ca.issue(&server.files));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for c in clients {
        failures.extend(c.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "too few requests: {}",
        ok.load(Ordering::Relaxed)
    );

    let served = served.lock().unwrap().clone();
    assert!(
        served.iter().all(|leaf| issued.contains(leaf)),
        "served a certificate that was never issued"
    );
    assert!(
        served.len() >= 3,
        "expected several of the {} certificates to be served, saw {}",
        issued.len(),
        served.len()
    );
    let (_, now) = server.connect().await.unwrap();
    assert_eq!(
        &now,
        issued.last().unwrap(),
        "the last certificate is served"
    );
    assert_ne!(now, first);
}

#[tokio::test]
async fn graceful_shutdown_finishes_requests_in_flight() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(Mode::Enforce).await;
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut tls = server
        .ca
        .connector()
        .connect(ServerName::try_from(HOST).unwrap(), tcp)
        .await
        .unwrap();
    let body = pod_review("in-flight", "tool-a", &[PLATFORM]).to_string();
    let (head, tail) = body.split_at(body.len() / 2);
    let headers = format!(
        "POST /validate HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(headers.as_bytes()).await.unwrap();
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Shut down while the request is half sent: no new connections, the request still answered.
    server
        .handle
        .graceful_shutdown(Some(Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        server.connect().await.is_err(),
        "new connections are refused during shutdown"
    );
    tls.write_all(tail.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(
        answer.contains("\"uid\":\"in-flight\"") && answer.contains("\"allowed\":true"),
        "{answer}"
    );
    let Server { task, .. } = server;
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

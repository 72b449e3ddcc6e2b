//! A real registry for the image-requirement tests (issue 22), with images built here and a
//! fault proxy in front of it; no Docker, loopback only.
//!
//! - [`LocalRegistry`]: the Debian `docker-registry` (distribution) on `127.0.0.1:<free port>`,
//!   filesystem storage in a temporary directory, stopped and removed on drop.
//! - [`Layer`], [`ImageSpec`]: OCI layers (tar, gzip) and image configurations written in
//!   Rust, pushed through the registry's HTTP API, so a test controls every layer chain.
//!   [`Images::push`] pushes the scenario set: a platform base, a tool built on it, one
//!   re-based, one on Debian, a multi-arch index with one platform off the base, and one whose
//!   source label points elsewhere.
//! - [`FaultProxy`]: an HTTP proxy in front of the registry that logs every request and can be
//!   slow, answer an error status, lie (serve content that does not match the digest it
//!   claims), be down, or demand the distribution token flow (optionally with credentials).
//!   Tags move for real: push another manifest under the tag ([`LocalRegistry::push_image`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use byoc_registry::{Digest, Repository};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::{free_port, http_get, unique_name};

/// The OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// The OCI image configuration media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// The OCI gzip layer media type.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The image configuration label `sourceFrom` checks.
pub const SOURCE_LABEL: &str = "org.opencontainers.image.source";

type Http = HyperClient<HttpConnector, Full<Bytes>>;

fn http_client() -> Http {
    HyperClient::builder(TokioExecutor::new()).build_http()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The registry

/// A `docker-registry` process on loopback; stopped, and its storage removed, on drop. Its
/// HTTP API is its [`RegistryApi`] (`Deref`).
pub struct LocalRegistry {
    child: Child,
    dir: PathBuf,
    api: RegistryApi,
}

impl LocalRegistry {
    /// Starts `/usr/bin/docker-registry` (`hack/node.sh install` installs it) and waits until
    /// `/v2/` answers 200.
    ///
    /// # Panics
    /// When the binary is missing or the registry does not answer within 30 s.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(unique_name("byoc-registry"));
        std::fs::create_dir_all(dir.join("storage")).expect("create the registry directory");
        let addr = free_port();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\nhttp:\n  addr: {addr}\n",
                dir.join("storage").display()
            ),
        )
        .expect("write the registry configuration");
        let log = std::fs::File::create(dir.join("registry.log")).expect("create the registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start docker-registry ({e}): install it with `hack/node.sh install`")
            });
        let mut registry = Self {
            child,
            dir,
            api: RegistryApi::new(addr),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(http_get(addr, "/v2/"), Ok((200, _))) {
            if let Ok(Some(status)) = registry.child.try_wait() {
                panic!("docker-registry exited with {status}:\n{}", registry.log());
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry does not answer on {addr}:\n{}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// The registry's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }
}

impl std::ops::Deref for LocalRegistry {
    type Target = RegistryApi;

    fn deref(&self) -> &RegistryApi {
        &self.api
    }
}

/// The HTTP API (plain HTTP, keep-alive) of a registry at an address: a [`LocalRegistry`]'s,
/// or the node's (`hack/node.sh`).
pub struct RegistryApi {
    addr: SocketAddr,
    http: Http,
}

impl RegistryApi {
    /// The registry at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            http: http_client(),
        }
    }

    /// Its address, `IP:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Response<Bytes> {
        let mut request = Request::builder().method(method.clone()).uri(url);
        if let Some(content_type) = content_type {
            request = request.header(http::header::CONTENT_TYPE, content_type);
        }
        let request = request.body(Full::new(body)).expect("a valid request");
        let response = self
            .http
            .request(request)
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("read the answer").to_bytes();
        Response::from_parts(parts, body)
    }

    /// GET `http://ADDR/v2/{endpoint}` with `accept`, over the registry's keep-alive client.
    ///
    /// # Panics
    /// When the registry cannot be reached or does not answer 200.
    pub async fn get(&self, endpoint: &str, accept: &str) -> Bytes {
        let url = format!("http://{}/v2/{endpoint}", self.addr);
        let request = Request::get(&url)
            .header(http::header::ACCEPT, accept)
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        let response =
            (self.http.request(request).await).unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(response.status(), StatusCode::OK, "GET {url}");
        response
            .into_body()
            .collect()
            .await
            .expect("read the answer")
            .to_bytes()
    }

    /// Uploads a blob to `path` (monolithic upload: POST, then PUT with the digest).
    ///
    /// # Panics
    /// When the registry refuses it.
    pub async fn push_blob(&self, path: &str, blob: &Bytes) -> Digest {
        let digest = Digest::sha256(blob);
        let start = self
            .send(
                Method::POST,
                &format!("http://{}/v2/{path}/blobs/uploads/", self.addr),
                None,
                Bytes::new(),
            )
            .await;
        assert_eq!(
            start.status(),
            StatusCode::ACCEPTED,
            "start an upload to {path}"
        );
        let location = start.headers()[http::header::LOCATION]
            .to_str()
            .expect("an ASCII Location");
        let location = if location.starts_with('/') {
            format!("http://{}{location}", self.addr)
        } else {
            location.to_owned()
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = self
            .send(
                Method::PUT,
                &format!("{location}{sep}digest={digest}"),
                Some("application/octet-stream"),
                blob.clone(),
            )
            .await;
        assert_eq!(
            put.status(),
            StatusCode::CREATED,
            "upload {digest} to {path}: {:?}",
            put.body()
        );
        digest
    }

    /// Puts a manifest (or index) as `path:reference`; returns its digest.
    ///
    /// # Panics
    /// When the registry refuses it.
    pub async fn push_manifest(
        &self,
        path: &str,
        reference: &str,
        media_type: &str,
        manifest: &Bytes,
    ) -> Digest {
        let put = self
            .send(
                Method::PUT,
                &format!("http://{}/v2/{path}/manifests/{reference}", self.addr),
                Some(media_type),
                manifest.clone(),
            )
            .await;
        assert_eq!(
            put.status(),
            StatusCode::CREATED,
            "put manifest {path}:{reference}: {:?}",
            put.body()
        );
        let digest = Digest::sha256(manifest);
        let claimed = put
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok());
        assert_eq!(
            claimed,
            Some(digest.as_str()),
            "the registry's digest of {path}:{reference}"
        );
        digest
    }

    /// Builds `image` and pushes it as `path:tag` (blobs first), which moves the tag when it
    /// pointed elsewhere.
    pub async fn push_image(&self, path: &str, tag: &str, image: &ImageSpec) -> PushedImage {
        for layer in &image.layers {
            self.push_blob(path, &layer.blob).await;
        }
        let config = image.config();
        let config_digest = self.push_blob(path, &config).await;
        let manifest = image.manifest(&config_digest, config.len());
        let digest = self.push_manifest(path, tag, OCI_MANIFEST, &manifest).await;
        PushedImage {
            path: path.to_owned(),
            tag: tag.to_owned(),
            digest,
            manifest,
            config_digest,
            config,
            layers: image.layers.iter().map(|l| l.digest.clone()).collect(),
            diff_ids: image.layers.iter().map(|l| l.diff_id.clone()).collect(),
        }
    }

    /// Pushes an index of `platforms` (each pushed to `path` by digest) as `path:tag`.
    pub async fn push_index(&self, path: &str, tag: &str, platforms: &[&ImageSpec]) -> PushedIndex {
        let mut pushed = Vec::new();
        let mut entries = Vec::new();
        for spec in platforms {
            let digest_tag = format!("{}-{}", spec.os, spec.architecture);
            let image = self.push_image(path, &digest_tag, spec).await;
            entries.push(json!({
                "mediaType": OCI_MANIFEST,
                "digest": image.digest.as_str(),
                "size": image.manifest.len(),
                "platform": {"os": spec.os, "architecture": spec.architecture},
            }));
            pushed.push(image);
        }
        let index = Bytes::from(
            json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).to_string(),
        );
        let digest = self.push_manifest(path, tag, OCI_INDEX, &index).await;
        PushedIndex {
            path: path.to_owned(),
            tag: tag.to_owned(),
            digest,
            index,
            platforms: pushed,
        }
    }

    /// The layers of the image `path:reference` (a manifest, not an index), bottom first, with
    /// their blobs: to build another image on them (they must be pushed to its repository).
    ///
    /// # Panics
    /// When the registry does not serve it, or a layer is not a gzip tar.
    pub async fn pull_layers(&self, path: &str, reference: &str) -> Vec<Layer> {
        let manifest = self
            .get(&format!("{path}/manifests/{reference}"), OCI_MANIFEST)
            .await;
        let manifest: Value = serde_json::from_slice(&manifest)
            .unwrap_or_else(|e| panic!("manifest of {path}:{reference}: {e}"));
        let config = manifest["config"]["digest"].as_str().unwrap_or_default();
        let config = self.get(&format!("{path}/blobs/{config}"), "*/*").await;
        let config: Value = serde_json::from_slice(&config)
            .unwrap_or_else(|e| panic!("config of {path}:{reference}: {e}"));
        let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
        let diff_ids = config["rootfs"]["diff_ids"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            layers.len(),
            diff_ids.len(),
            "{path}:{reference}: layers and diff_ids differ in number"
        );
        let mut pulled = Vec::new();
        for (layer, diff_id) in layers.iter().zip(&diff_ids) {
            assert_eq!(
                layer["mediaType"], OCI_LAYER_GZIP,
                "{path}:{reference}: a layer that is not a gzip tar"
            );
            let digest = layer["digest"].as_str().unwrap_or_default();
            let blob = self.get(&format!("{path}/blobs/{digest}"), "*/*").await;
            let diff_id = diff_id.as_str().unwrap_or_default();
            let layer = Layer {
                digest: Digest::sha256(&blob),
                diff_id: diff_id
                    .parse()
                    .unwrap_or_else(|e| panic!("{path}:{reference}: diff_id {diff_id}: {e}")),
                blob,
            };
            assert_eq!(
                layer.digest.as_str(),
                digest,
                "{path}:{reference}: the blob served is not {digest}"
            );
            pulled.push(layer);
        }
        pulled
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        crate::terminate(&mut self.child, "docker-registry");
        if std::thread::panicking() {
            eprintln!(
                "--- docker-registry log ({}):\n{}",
                self.dir.display(),
                self.log()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Images

/// A layer: a gzip-compressed tar of some files.
#[derive(Clone, Debug)]
pub struct Layer {
    /// The compressed blob, as pushed.
    pub blob: Bytes,
    /// The blob's digest (the manifest's `layers[].digest`).
    pub digest: Digest,
    /// The uncompressed tar's digest (the configuration's `rootfs.diff_ids[]`).
    pub diff_id: Digest,
}

impl Layer {
    /// A layer holding `files` (path, content), regular files of mode 0644.
    pub fn new(files: &[(&str, &str)]) -> Self {
        let tar = tar(files);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).expect("gzip in memory");
        let blob = Bytes::from(gz.finish().expect("gzip in memory"));
        Self {
            digest: Digest::sha256(&blob),
            diff_id: Digest::sha256(&tar),
            blob,
        }
    }
}

/// A ustar archive of regular files (POSIX.1-1988 headers, two zero blocks at the end).
fn tar(files: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, content) in files {
        assert!(
            path.len() < 100,
            "tar path too long for a plain ustar header: {path}"
        );
        let mut header = [0u8; 512];
        let mut field = |offset: usize, value: &[u8]| {
            header[offset..offset + value.len()].copy_from_slice(value)
        };
        field(0, path.as_bytes());
        field(100, b"0000644\0");
        field(108, b"0000000\0");
        field(116, b"0000000\0");
        field(124, format!("{:011o}\0", content.len()).as_bytes());
        field(136, b"00000000000\0");
        field(148, b"        ");
        field(156, b"0");
        field(257, b"ustar\0");
        field(263, b"00");
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(content.as_bytes());
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// An image to build: its layers (bottom first), labels and platform.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    /// Layers, bottom first.
    pub layers: Vec<Layer>,
    /// Configuration labels.
    pub labels: BTreeMap<String, String>,
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, ...
    pub architecture: String,
}

impl ImageSpec {
    /// A linux/amd64 image of `layers` with no labels.
    pub fn new(layers: &[&Layer]) -> Self {
        Self {
            layers: layers.iter().map(|&l| l.clone()).collect(),
            labels: BTreeMap::new(),
            os: "linux".to_owned(),
            architecture: "amd64".to_owned(),
        }
    }

    /// With the label `key=value`.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// For another architecture.
    pub fn architecture(mut self, architecture: &str) -> Self {
        architecture.clone_into(&mut self.architecture);
        self
    }

    /// The OCI image configuration.
    pub fn config(&self) -> Bytes {
        let diff_ids: Vec<&str> = self.layers.iter().map(|l| l.diff_id.as_str()).collect();
        let history: Vec<Value> = self
            .layers
            .iter()
            .map(|_| json!({"created": "2026-01-01T00:00:00Z", "created_by": "byoc-e2e fixture"}))
            .collect();
        Bytes::from(
            json!({
                "created": "2026-01-01T00:00:00Z",
                "architecture": self.architecture,
                "os": self.os,
                "config": {"Labels": self.labels, "User": "65532:65532"},
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
                "history": history,
            })
            .to_string(),
        )
    }

    /// The OCI image manifest for a pushed configuration.
    pub fn manifest(&self, config: &Digest, config_size: usize) -> Bytes {
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|l| json!({"mediaType": OCI_LAYER_GZIP, "digest": l.digest.as_str(), "size": l.blob.len()}))
            .collect();
        Bytes::from(
            json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config.as_str(), "size": config_size},
                "layers": layers,
            })
            .to_string(),
        )
    }
}

/// An image as pushed.
#[derive(Clone, Debug)]
pub struct PushedImage {
    /// The repository path.
    pub path: String,
    /// The tag it was pushed as.
    pub tag: String,
    /// The manifest's digest.
    pub digest: Digest,
    /// The manifest.
    pub manifest: Bytes,
    /// The configuration's digest.
    pub config_digest: Digest,
    /// The configuration.
    pub config: Bytes,
    /// Layer blob digests, bottom first.
    pub layers: Vec<Digest>,
    /// Layer diff IDs, bottom first.
    pub diff_ids: Vec<Digest>,
}

/// A multi-platform index as pushed.
#[derive(Clone, Debug)]
pub struct PushedIndex {
    /// The repository path.
    pub path: String,
    /// The tag it was pushed as.
    pub tag: String,
    /// The index's digest.
    pub digest: Digest,
    /// The index.
    pub index: Bytes,
    /// Its platforms' images, in index order.
    pub platforms: Vec<PushedImage>,
}

/// The scenario set of issue 22, pushed to one registry.
pub struct Images {
    /// The platform base, `toolforge/base:latest` (two layers).
    pub base: PushedImage,
    /// `library/debian:bookworm` (one layer).
    pub debian: PushedImage,
    /// `tool-a/web:latest`: the base's layers plus one, source label in the tool's project.
    pub tool: PushedImage,
    /// `tool-a/rebased:latest`: the tool's top layer on Debian instead of the base.
    pub rebased: PushedImage,
    /// `tool-a/on-debian:latest`: its own layer on Debian.
    pub on_debian: PushedImage,
    /// `tool-a/multi:latest`: linux/amd64 built on the base, linux/arm64 on Debian.
    pub multiarch: PushedIndex,
    /// `tool-a/elsewhere:latest`: built on the base, source label outside the tool's project.
    pub elsewhere: PushedImage,
}

/// The source label of the scenario's own tool images.
pub const TOOL_SOURCE: &str = "https://gitlab.wikimedia.org/toolforge-repos/a";

impl Images {
    /// The layers of [`Images::base`], bottom first.
    pub fn base_layers() -> [Layer; 2] {
        [
            Layer::new(&[("etc/os-release", "ID=toolforge-base\n")]),
            Layer::new(&[("etc/ldap.conf", "uri ldap://ldap.toolforge\n")]),
        ]
    }

    /// Pushes `path:tag`, an image of `top` on [`Images::base`].
    pub async fn push_on_base(
        registry: &LocalRegistry,
        path: &str,
        tag: &str,
        top: &Layer,
    ) -> PushedImage {
        let [base_os, base_ldap] = Self::base_layers();
        let spec = ImageSpec::new(&[&base_os, &base_ldap, top]).label(SOURCE_LABEL, TOOL_SOURCE);
        registry.push_image(path, tag, &spec).await
    }

    /// Builds and pushes the set.
    pub async fn push(registry: &LocalRegistry) -> Self {
        let [base_os, base_ldap] = Self::base_layers();
        let debian_os = Layer::new(&[("etc/os-release", "ID=debian\nVERSION_ID=12\n")]);
        let app = Layer::new(&[("app/main.py", "print('hello')\n")]);
        let other_app = Layer::new(&[("app/main.sh", "echo hello\n")]);
        let foreign_app = Layer::new(&[("app/foreign.py", "print('not ours')\n")]);
        let on_base = |top: &Layer| ImageSpec::new(&[&base_os, &base_ldap, top]);
        let on_debian = |top: &Layer| ImageSpec::new(&[&debian_os, top]);
        Self {
            base: registry
                .push_image(
                    "toolforge/base",
                    "latest",
                    &ImageSpec::new(&[&base_os, &base_ldap]),
                )
                .await,
            debian: registry
                .push_image("library/debian", "bookworm", &ImageSpec::new(&[&debian_os]))
                .await,
            tool: registry
                .push_image(
                    "tool-a/web",
                    "latest",
                    &on_base(&app).label(SOURCE_LABEL, TOOL_SOURCE),
                )
                .await,
            rebased: registry
                .push_image(
                    "tool-a/rebased",
                    "latest",
                    &on_debian(&app).label(SOURCE_LABEL, TOOL_SOURCE),
                )
                .await,
            on_debian: registry
                .push_image(
                    "tool-a/on-debian",
                    "latest",
                    &on_debian(&other_app).label(SOURCE_LABEL, TOOL_SOURCE),
                )
                .await,
            multiarch: registry
                .push_index(
                    "tool-a/multi",
                    "latest",
                    &[
                        &on_base(&app).label(SOURCE_LABEL, TOOL_SOURCE),
                        &on_debian(&app)
                            .label(SOURCE_LABEL, TOOL_SOURCE)
                            .architecture("arm64"),
                    ],
                )
                .await,
            elsewhere: registry
                .push_image(
                    "tool-a/elsewhere",
                    "latest",
                    &on_base(&foreign_app).label(SOURCE_LABEL, "https://github.com/someone/else"),
                )
                .await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The fault proxy

/// How the [`FaultProxy`] answers registry requests (`/v2/…`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Pass requests through.
    None,
    /// Wait this long, then pass through.
    Slow(Duration),
    /// Answer this status without asking the registry.
    Status(u16),
    /// Pass through, but add a space to manifest and blob bodies while keeping the registry's
    /// `Docker-Content-Digest`: still valid JSON, only a digest check catches it.
    Lie,
    /// Answer blob requests with a redirect to the same path at this address, as registries
    /// that keep blobs in an object store do.
    RedirectBlobs(SocketAddr),
}

/// Token authentication the proxy demands, the way Docker Hub and Harbor do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenAuth {
    /// Basic credentials the token endpoint requires; `None`: anonymous tokens.
    pub credentials: Option<(String, String)>,
}

#[derive(Default)]
struct ProxyState {
    fault: Mutex<Option<Fault>>,
    auth: Mutex<Option<TokenAuth>>,
    tokens: Mutex<Vec<String>>,
    log: Mutex<Vec<String>>,
}

/// An HTTP proxy on loopback in front of a [`LocalRegistry`]; see [`Fault`]. Every request is
/// logged as `METHOD /path?query`.
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    state: Arc<ProxyState>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl FaultProxy {
    /// A proxy to `upstream` on a free loopback port, passing requests through.
    pub async fn start(upstream: SocketAddr) -> Self {
        let proxy = Self {
            addr: free_port(),
            upstream,
            state: Arc::default(),
            server: Mutex::new(None),
        };
        proxy.up().await;
        proxy
    }

    /// `127.0.0.1:PORT`, the registry name images use through the proxy.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The repository `path` as reached through the proxy.
    pub fn repository(&self, path: &str) -> Repository {
        Repository {
            registry: self.addr.to_string(),
            path: path.to_owned(),
        }
    }

    /// Changes how requests are answered from now on.
    pub fn set_fault(&self, fault: Fault) {
        *lock(&self.state.fault) = Some(fault);
    }

    /// Demands (or, with `None`, stops demanding) the token flow.
    pub fn set_auth(&self, auth: Option<TokenAuth>) {
        *lock(&self.state.auth) = auth;
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.state.log).clone()
    }

    /// How many requests so far contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        lock(&self.state.log)
            .iter()
            .filter(|r| r.contains(needle))
            .count()
    }

    /// Forgets the requests received so far.
    pub fn clear_log(&self) {
        lock(&self.state.log).clear();
    }

    /// Stops listening and drops every open connection: connections are refused.
    pub fn down(&self) {
        if let Some(server) = lock(&self.server).take() {
            server.abort();
        }
    }

    /// Listens again on the same port (waits until the previous listener is gone).
    pub async fn up(&self) {
        self.down();
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("the fault proxy cannot listen on {} again: {e}", self.addr),
            }
        };
        let state = Arc::clone(&self.state);
        let upstream = self.upstream;
        let own = self.addr;
        let http = http_client();
        *lock(&self.server) = Some(tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&state);
                let http = http.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        answer(Arc::clone(&state), http.clone(), upstream, own, request)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        }));
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.down();
    }
}

fn plain(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response
}

async fn answer(
    state: Arc<ProxyState>,
    http: Http,
    upstream: SocketAddr,
    own: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let target = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    lock(&state.log).push(format!("{} {target}", request.method()));
    let auth = lock(&state.auth).clone();
    if let Some(auth) = auth {
        if target.starts_with("/token") {
            return Ok(issue_token(&state, &auth, &request, &target));
        }
        let presented = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        if !presented.is_some_and(|t| lock(&state.tokens).contains(&t)) {
            let repository = target
                .strip_prefix("/v2/")
                .and_then(|rest| {
                    rest.split_once("/manifests/")
                        .or_else(|| rest.split_once("/blobs/"))
                })
                .map_or("", |(repo, _)| repo);
            let mut response = plain(
                StatusCode::UNAUTHORIZED,
                r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
            );
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                format!(r#"Bearer realm="http://{own}/token",service="byoc-fixture",scope="repository:{repository}:pull""#)
                    .parse()
                    .expect("an ASCII header"),
            );
            return Ok(response);
        }
    }
    let fault = lock(&state.fault).clone().unwrap_or(Fault::None);
    match fault {
        Fault::Slow(delay) => tokio::time::sleep(delay).await,
        Fault::Status(code) => {
            let status = StatusCode::from_u16(code).expect("a valid status code");
            return Ok(plain(status, "fault injected by the test proxy"));
        }
        Fault::RedirectBlobs(to) if target.contains("/blobs/") => {
            let mut response = plain(StatusCode::TEMPORARY_REDIRECT, "");
            response.headers_mut().insert(
                http::header::LOCATION,
                format!("http://{to}{target}")
                    .parse()
                    .expect("an ASCII header"),
            );
            return Ok(response);
        }
        Fault::None | Fault::Lie | Fault::RedirectBlobs(_) => {}
    }
    let mut forward = Request::builder()
        .method(request.method())
        .uri(format!("http://{upstream}{target}"));
    for (name, value) in request.headers() {
        if name != http::header::HOST && name != http::header::AUTHORIZATION {
            forward = forward.header(name, value);
        }
    }
    let forward = forward
        .body(Full::new(Bytes::new()))
        .expect("a valid request");
    let response = match http.request(forward).await {
        Ok(response) => response,
        Err(e) => return Ok(plain(StatusCode::BAD_GATEWAY, &format!("upstream: {e}"))),
    };
    let (mut parts, body) = response.into_parts();
    let mut body = match body.collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return Ok(plain(
                StatusCode::BAD_GATEWAY,
                &format!("upstream body: {e}"),
            ));
        }
    };
    let content = target.contains("/manifests/") || target.contains("/blobs/");
    if fault == Fault::Lie && content && parts.status.is_success() {
        let mut tampered = body.to_vec();
        tampered.push(b' ');
        body = Bytes::from(tampered);
    }
    parts.headers.remove(http::header::CONTENT_LENGTH);
    parts.headers.remove(http::header::TRANSFER_ENCODING);
    Ok(Response::from_parts(parts, Full::new(body)))
}

/// The token endpoint: checks Basic credentials when [`TokenAuth::credentials`] asks for
/// them, and that a pull scope was asked for.
fn issue_token(
    state: &ProxyState,
    auth: &TokenAuth,
    request: &Request<Incoming>,
    target: &str,
) -> Response<Full<Bytes>> {
    if !target.contains("scope=repository%3A") || !target.contains("service=byoc-fixture") {
        return plain(
            StatusCode::BAD_REQUEST,
            "token request without service or pull scope",
        );
    }
    if let Some((user, password)) = &auth.credentials {
        let want = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        let presented = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if presented != Some(want.as_str()) {
            return plain(StatusCode::UNAUTHORIZED, "bad credentials");
        }
    }
    let token = unique_name("token");
    lock(&state.tokens).push(token.clone());
    plain(
        StatusCode::OK,
        &json!({"token": token, "expires_in": 300}).to_string(),
    )
}

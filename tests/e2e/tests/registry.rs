//! The registry client (`byoc-registry`) against a real `docker-registry` on loopback, with
//! images built by the test and a fault proxy in front (`byoc_e2e::registry`). Needs no
//! cluster: `cargo test -p byoc-e2e --test registry`.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use byoc_e2e::registry::{
    Fault, FaultProxy, ImageSpec, Images, Layer, LocalRegistry, OCI_INDEX, OCI_MANIFEST,
    PushedImage, TokenAuth,
};
use byoc_registry::{Budget, Client, ClientConfig, Credentials, RegistryError, Repository};

/// A registry with the scenario images, and a proxy in front of it.
struct Setup {
    registry: LocalRegistry,
    images: Images,
    proxy: FaultProxy,
}

async fn setup() -> Setup {
    let registry = LocalRegistry::start();
    let images = Images::push(&registry).await;
    let proxy = FaultProxy::start(registry.addr()).await;
    Setup {
        registry,
        images,
        proxy,
    }
}

/// A client for registries at `insecure` (plain HTTP), with `config`'s other settings.
fn client(insecure: &[String], config: ClientConfig) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new(ClientConfig {
        insecure_registries: insecure.to_vec(),
        ..config
    })
    .expect("a registry client")
}

impl Setup {
    fn client(&self) -> Client {
        self.client_with(ClientConfig::default())
    }

    fn client_with(&self, config: ClientConfig) -> Client {
        client(&[self.proxy.addr().to_string()], config)
    }

    fn repo(&self, image: &PushedImage) -> Repository {
        self.proxy.repository(&image.path)
    }
}

fn budget() -> Budget {
    Budget::new(Duration::from_secs(5))
}

#[tokio::test]
async fn resolves_and_fetches_every_image_verified() {
    let s = setup().await;
    let client = s.client();
    let i = &s.images;
    for image in [
        &i.base,
        &i.debian,
        &i.tool,
        &i.rebased,
        &i.on_debian,
        &i.elsewhere,
    ] {
        let repo = s.repo(image);
        let manifest = client
            .resolve_tag(&repo, &image.tag, &budget())
            .await
            .unwrap_or_else(|e| panic!("{}:{}: {e}", image.path, image.tag));
        assert_eq!(manifest.digest, image.digest, "{}", image.path);
        assert_eq!(manifest.bytes, image.manifest, "{}", image.path);
        assert_eq!(manifest.media_type.as_deref(), Some(OCI_MANIFEST));
        let config = client
            .blob(&repo, &image.config_digest, &budget())
            .await
            .expect("the configuration");
        assert_eq!(config.bytes, image.config);
        assert_eq!(config.digest, image.config_digest);
    }
    let index_repo = s.proxy.repository(&i.multiarch.path);
    let index = client
        .resolve_tag(&index_repo, "latest", &budget())
        .await
        .expect("the index");
    assert_eq!(
        (index.digest.clone(), index.media_type.as_deref()),
        (i.multiarch.digest.clone(), Some(OCI_INDEX))
    );
    assert_eq!(index.bytes, i.multiarch.index);
    for platform in &i.multiarch.platforms {
        let manifest = client
            .manifest(&index_repo, &platform.digest, &budget())
            .await
            .expect("a platform manifest");
        assert_eq!(manifest.bytes, platform.manifest);
    }
    // From image references, as the webhook has them: by tag and by digest.
    for reference in [
        format!("{}/{}:latest", s.proxy.addr(), i.tool.path),
        format!("{}/{}@{}", s.proxy.addr(), i.tool.path, i.tool.digest),
    ] {
        let image: byoc_policy::ImageRef = reference.parse().expect("a reference");
        let manifest = client
            .image_manifest(&image, &budget())
            .await
            .unwrap_or_else(|e| panic!("{reference}: {e}"));
        assert_eq!(manifest.digest, i.tool.digest, "{reference}");
    }
    // The layer chains are what the scenario says.
    assert_eq!(i.tool.layers[..2], i.base.layers[..]);
    assert_eq!(i.tool.diff_ids[..2], i.base.diff_ids[..]);
    assert_eq!(i.rebased.layers.last(), i.tool.layers.last());
    assert_eq!(i.rebased.layers[0], i.debian.layers[0]);
    assert_ne!(
        i.tool.layers[0], i.tool.diff_ids[0],
        "layers are compressed"
    );
}

#[tokio::test]
async fn a_missing_tag_is_a_client_error_naming_the_registry() {
    let s = setup().await;
    let err = s
        .client()
        .resolve_tag(&s.repo(&s.images.tool), "no-such-tag", &budget())
        .await
        .expect_err("no such tag");
    assert!(
        matches!(err, RegistryError::Status { status: 404, .. }),
        "{err:?}"
    );
    assert_eq!(err.kind(), "client_error");
    let message = err.to_string();
    assert!(
        message.contains(&s.proxy.addr().to_string()) && message.contains("tool-a/web:no-such-tag"),
        "{message}"
    );
}

#[tokio::test]
async fn cache_hits_make_no_request() {
    let s = setup().await;
    let client = s.client();
    let repo = s.repo(&s.images.tool);
    let first = client
        .resolve_tag(&repo, "latest", &budget())
        .await
        .expect("resolve");
    client
        .blob(&repo, &s.images.tool.config_digest, &budget())
        .await
        .expect("config");
    assert_eq!(s.proxy.count("/v2/"), 2, "{:?}", s.proxy.requests());
    s.proxy.clear_log();
    for _ in 0..3 {
        let again = client
            .resolve_tag(&repo, "latest", &budget())
            .await
            .expect("resolve");
        assert_eq!(again, first);
        client
            .manifest(&repo, &first.digest, &budget())
            .await
            .expect("by digest, cached by the tag lookup");
        client
            .blob(&repo, &s.images.tool.config_digest, &budget())
            .await
            .expect("config");
    }
    assert_eq!(s.proxy.requests(), Vec::<String>::new());
    let stats = client.stats();
    assert_eq!((stats.entries, stats.tags), (2, 1), "{stats:?}");
}

#[tokio::test]
async fn concurrent_lookups_of_one_tag_share_one_request() {
    let s = setup().await;
    let client = s.client();
    let repo = s.repo(&s.images.tool);
    // Slow enough that all 50 lookups start while the first request is in flight.
    s.proxy.set_fault(Fault::Slow(Duration::from_millis(300)));
    let lookups: Vec<_> = (0..50)
        .map(|_| {
            let client = client.clone();
            let repo = repo.clone();
            tokio::spawn(async move { client.resolve_tag(&repo, "latest", &budget()).await })
        })
        .collect();
    for lookup in lookups {
        let fetched = lookup.await.expect("the task").expect("the lookup");
        assert_eq!(fetched.digest, s.images.tool.digest);
    }
    assert_eq!(
        s.proxy.count("/manifests/latest"),
        1,
        "{:?}",
        s.proxy.requests()
    );
}

#[tokio::test]
async fn a_slow_registry_hits_the_budget_with_a_typed_error() {
    let s = setup().await;
    let client = s.client();
    s.proxy.set_fault(Fault::Slow(Duration::from_secs(5)));
    let started = Instant::now();
    let err = client
        .resolve_tag(
            &s.repo(&s.images.tool),
            "latest",
            &Budget::new(Duration::from_millis(300)),
        )
        .await
        .expect_err("the budget runs out");
    let elapsed = started.elapsed();
    assert!(matches!(err, RegistryError::Timeout { .. }), "{err:?}");
    assert_eq!(err.kind(), "timeout");
    assert_eq!(
        err.to_string(),
        format!(
            "registry {} did not answer within 300ms (manifest tool-a/web:latest)",
            s.proxy.addr()
        )
    );
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(400),
        "took {elapsed:?}"
    );
}

#[tokio::test]
async fn server_errors_are_reported_with_their_status() {
    let s = setup().await;
    let client = s.client();
    let repo = s.repo(&s.images.tool);
    s.proxy.set_fault(Fault::Status(503));
    let err = client
        .resolve_tag(&repo, "latest", &budget())
        .await
        .expect_err("503");
    assert!(
        matches!(err, RegistryError::Status { status: 503, .. }),
        "{err:?}"
    );
    assert_eq!(err.kind(), "server_error");
    let err = client
        .blob(&repo, &s.images.tool.config_digest, &budget())
        .await
        .expect_err("503");
    assert!(
        err.to_string().contains("HTTP 503 for blob sha256:"),
        "{err}"
    );
    // Errors are not cached: once the registry recovers, the next lookup succeeds.
    s.proxy.set_fault(Fault::None);
    client
        .resolve_tag(&repo, "latest", &budget())
        .await
        .expect("recovered");
}

#[tokio::test]
async fn a_lying_registry_is_refused_and_nothing_is_cached() {
    let s = setup().await;
    let client = s.client();
    let tool = &s.images.tool;
    let repo = s.repo(tool);
    s.proxy.set_fault(Fault::Lie);
    let err = client
        .resolve_tag(&repo, "latest", &budget())
        .await
        .expect_err("content does not match Docker-Content-Digest");
    match &err {
        RegistryError::DigestMismatch {
            expected, actual, ..
        } => {
            assert_eq!(*expected, tool.digest, "the registry's claim");
            assert_ne!(*actual, tool.digest);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.kind(), "digest_mismatch");
    let err = client
        .manifest(&repo, &tool.digest, &budget())
        .await
        .expect_err("content does not match the digest asked for");
    assert_eq!(err.kind(), "digest_mismatch", "{err}");
    let err = client
        .blob(&repo, &tool.config_digest, &budget())
        .await
        .expect_err("the configuration does not match its digest");
    assert_eq!(err.kind(), "digest_mismatch", "{err}");
    assert_eq!(client.stats().entries, 0);
    s.proxy.set_fault(Fault::None);
    let honest = client
        .resolve_tag(&repo, "latest", &budget())
        .await
        .expect("honest again");
    assert_eq!(honest.bytes, tool.manifest);
}

#[tokio::test]
async fn a_registry_that_is_down_is_unreachable_quickly() {
    let s = setup().await;
    let client = s.client();
    let repo = s.repo(&s.images.tool);
    s.proxy.down();
    let started = Instant::now();
    let err = client
        .resolve_tag(&repo, "latest", &budget())
        .await
        .expect_err("down");
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err:?}");
    assert_eq!(err.kind(), "unreachable");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.to_string()
            .starts_with(&format!("registry {} is unreachable", s.proxy.addr())),
        "{err}"
    );
    s.proxy.up().await;
    client
        .resolve_tag(&repo, "latest", &budget())
        .await
        .expect("up again");
}

#[tokio::test]
async fn a_moved_tag_is_seen_after_the_ttl_and_not_before() {
    let s = setup().await;
    let ttl = Duration::from_millis(800);
    let client = s.client_with(ClientConfig {
        tag_ttl: ttl,
        ..ClientConfig::default()
    });
    let repo = s.repo(&s.images.tool);
    let before = client
        .resolve_tag(&repo, "latest", &budget())
        .await
        .expect("resolve");
    let resolved_at = Instant::now();
    assert_eq!(before.digest, s.images.tool.digest);
    let moved = s
        .registry
        .push_image(
            "tool-a/web",
            "latest",
            &ImageSpec::new(&[&Layer::new(&[("app/v2", "2\n")])]),
        )
        .await;
    assert_ne!(moved.digest, before.digest);
    s.proxy.clear_log();
    let still = client
        .resolve_tag(&repo, "latest", &budget())
        .await
        .expect("resolve");
    assert!(
        resolved_at.elapsed() < ttl,
        "the test is too slow to check the TTL"
    );
    assert_eq!(
        still.digest, before.digest,
        "within the TTL the tag cache answers"
    );
    assert_eq!(s.proxy.count("/v2/"), 0);
    tokio::time::sleep(ttl.saturating_sub(resolved_at.elapsed()) + Duration::from_millis(50)).await;
    let after = client
        .resolve_tag(&repo, "latest", &budget())
        .await
        .expect("resolve");
    assert_eq!(after.digest, moved.digest, "after the TTL the move is seen");
    assert_eq!(s.proxy.count("/manifests/latest"), 1);
}

#[tokio::test]
async fn the_token_flow_anonymous_then_with_credentials() {
    let s = setup().await;
    let repo = s.repo(&s.images.tool);
    s.proxy.set_auth(Some(TokenAuth { credentials: None }));
    let anonymous = s.client();
    anonymous
        .resolve_tag(&repo, "latest", &budget())
        .await
        .expect("anonymous token");
    anonymous
        .blob(&repo, &s.images.tool.config_digest, &budget())
        .await
        .expect("the token is reused for the repository");
    assert_eq!(s.proxy.count("GET /token"), 1, "{:?}", s.proxy.requests());
    assert_eq!(
        s.proxy.count("/manifests/latest"),
        2,
        "401, then with the token"
    );
    assert_eq!(
        s.proxy.count("/blobs/"),
        1,
        "the cached token is sent at once"
    );

    let (user, password) = ("robot$tool-a".to_owned(), "s3cret:x".to_owned());
    s.proxy.set_auth(Some(TokenAuth {
        credentials: Some((user.clone(), password.clone())),
    }));
    let err = s
        .client()
        .resolve_tag(&repo, "latest", &budget())
        .await
        .expect_err("no credentials");
    assert!(
        matches!(&err, RegistryError::Status { status: 401, what, .. } if what.starts_with("a token for")),
        "{err:?}"
    );
    let secret = format!(
        r#"{{"auths": {{"http://{}": {{"auth": "{}"}}}}}}"#,
        s.proxy.addr(),
        STANDARD.encode(format!("{user}:{password}"))
    );
    let credentials = Credentials::from_docker_config_json(secret.as_bytes()).expect("credentials");
    let with_credentials = s.client_with(ClientConfig {
        credentials,
        ..ClientConfig::default()
    });
    let fetched = with_credentials
        .resolve_tag(&repo, "latest", &budget())
        .await
        .expect("token with credentials");
    assert_eq!(fetched.digest, s.images.tool.digest);
}

/// Blobs redirected to another host are fetched there without the registry's credentials, and
/// a challenge from that host is not answered: its token realm would get them (cold review of
/// issue 22, F9).
#[tokio::test]
async fn a_redirect_is_followed_but_another_hosts_challenge_gets_no_credentials() {
    let s = setup().await;
    let repo = s.repo(&s.images.tool);
    let store = FaultProxy::start(s.registry.addr()).await;
    s.proxy.set_fault(Fault::RedirectBlobs(store.addr()));
    let (user, password) = ("robot$tool-a".to_owned(), "s3cret:x".to_owned());
    let secret = format!(
        r#"{{"auths": {{"http://{}": {{"auth": "{}"}}}}}}"#,
        s.proxy.addr(),
        STANDARD.encode(format!("{user}:{password}"))
    );
    let client = client(
        &[s.proxy.addr().to_string(), store.addr().to_string()],
        ClientConfig {
            credentials: Credentials::from_docker_config_json(secret.as_bytes())
                .expect("credentials"),
            ..ClientConfig::default()
        },
    );
    let digest = &s.images.tool.config_digest;
    let fetched = client
        .blob(&repo, digest, &budget())
        .await
        .expect("the redirected blob");
    assert_eq!(&fetched.digest, digest);
    assert_eq!(store.count("/blobs/"), 1, "{:?}", store.requests());

    // The other host now challenges, and would hand a token for the registry's credentials.
    store.set_auth(Some(TokenAuth {
        credentials: Some((user, password)),
    }));
    let err = client
        .blob(&repo, &s.images.base.config_digest, &budget())
        .await
        .expect_err("a challenge from the other host");
    assert!(
        matches!(&err, RegistryError::Status { status: 401, .. }),
        "{err:?}"
    );
    assert_eq!(store.count("GET /token"), 0, "{:?}", store.requests());
}

#[tokio::test]
async fn answers_larger_than_the_caps_are_refused() {
    let s = setup().await;
    let repo = s.repo(&s.images.tool);
    let client = s.client_with(ClientConfig {
        max_manifest_bytes: s.images.tool.manifest.len() - 1,
        max_blob_bytes: s.images.tool.config.len() - 1,
        ..ClientConfig::default()
    });
    let err = client
        .resolve_tag(&repo, "latest", &budget())
        .await
        .expect_err("too large");
    assert!(matches!(err, RegistryError::TooLarge { .. }), "{err:?}");
    let err = client
        .blob(&repo, &s.images.tool.config_digest, &budget())
        .await
        .expect_err("too large");
    assert_eq!(err.kind(), "too_large", "{err}");
}

#[tokio::test]
async fn plain_http_only_for_registries_configured_insecure() {
    let s = setup().await;
    // Not configured insecure: the client speaks TLS to the plain-HTTP proxy and fails.
    let client = client(&[], ClientConfig::default());
    let err = client
        .resolve_tag(&s.repo(&s.images.tool), "latest", &budget())
        .await
        .expect_err("no TLS on the proxy");
    assert_eq!(err.kind(), "unreachable", "{err}");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Cold lookups (a tag never seen: one GET to the registry, directly, no proxy) and warm ones
/// (tag and manifest cached). Prints the figures; the bounds are loose, for debug builds on a
/// shared machine.
#[tokio::test]
async fn lookup_latency_cold_and_warm() {
    let s = setup().await;
    let tags = 200;
    let tool = &s.images.tool;
    for n in 0..tags {
        s.registry
            .push_manifest(&tool.path, &format!("t{n}"), OCI_MANIFEST, &tool.manifest)
            .await;
    }
    let client = client(&[s.registry.addr().to_string()], ClientConfig::default());
    let repo = Repository {
        registry: s.registry.addr().to_string(),
        path: tool.path.clone(),
    };
    // One lookup first, so the connection pool has a connection (as a running webhook has).
    client
        .resolve_tag(&repo, "latest", &budget())
        .await
        .expect("warm-up");
    let mut cold = Vec::with_capacity(tags);
    for n in 0..tags {
        let started = Instant::now();
        let fetched = client
            .resolve_tag(&repo, &format!("t{n}"), &budget())
            .await
            .expect("cold lookup");
        cold.push(started.elapsed());
        assert_eq!(fetched.digest, tool.digest);
    }
    cold.sort();
    let rounds: u32 = 20_000;
    let started = Instant::now();
    for n in 0..rounds {
        let tag = format!("t{}", n as usize % tags);
        let fetched = client
            .resolve_tag(&repo, &tag, &budget())
            .await
            .expect("warm");
        debug_assert_eq!(fetched.digest, tool.digest);
    }
    let warm = started.elapsed() / rounds;
    let (p50, p99) = (percentile(&cold, 0.50), percentile(&cold, 0.99));
    eprintln!(
        "registry lookups against docker-registry on loopback: cold p50 {p50:?}, p99 {p99:?} \
         over {tags}; warm {warm:?} per lookup over {rounds}"
    );
    assert!(p99 < Duration::from_millis(100), "cold p99 {p99:?}");
    assert!(warm < Duration::from_millis(1), "warm {warm:?}");
}

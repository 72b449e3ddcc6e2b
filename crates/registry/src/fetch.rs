//! One fetch from a registry: the request, the distribution spec's authentication round trip,
//! redirects, the bounded body and the digest check. No caching here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE,
};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::Fetched;
use crate::auth::{Challenge, Credentials, Token, parse_challenge, parse_token};
use crate::digest::Digest;
use crate::error::RegistryError;

/// The manifest media types asked for: OCI and Docker v2 image manifests and indexes.
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// The largest token endpoint answer read.
const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// Redirects followed per fetch (blob stores redirect once; more is a loop or an attack).
const MAX_REDIRECTS: usize = 3;

/// The header carrying the registry's claim of a manifest's digest.
const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";

pub(crate) type Https = HyperClient<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// What to fetch and how to check it.
#[derive(Clone, Copy)]
pub(crate) struct Target<'a> {
    /// `host[:port]` as images name it.
    pub registry: &'a str,
    /// The repository path.
    pub path: &'a str,
    /// `manifests/<ref>` or `blobs/<digest>`.
    pub endpoint: &'a str,
    /// The digest the content must have, for by-digest fetches.
    pub expected: Option<&'a Digest>,
    /// For manifests: the `Accept` header, and the registry's digest claim is checked.
    pub manifest: bool,
    /// The byte limit.
    pub limit: usize,
    /// For messages: what is being fetched.
    pub what: &'a str,
}

/// The transport and the authentication state shared by all fetches.
pub(crate) struct Fetcher {
    pub http: Https,
    pub credentials: Credentials,
    pub insecure: Vec<String>,
    /// Bearer tokens by (registry, repository path), with their expiry.
    tokens: Mutex<HashMap<(String, String), (String, Instant)>>,
}

impl Fetcher {
    pub(crate) fn new(http: Https, credentials: Credentials, insecure: Vec<String>) -> Self {
        Self {
            http,
            credentials,
            insecure,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn is_insecure(&self, registry: &str) -> bool {
        self.insecure
            .iter()
            .any(|r| r.eq_ignore_ascii_case(registry))
    }

    /// Fetches and verifies `target`.
    pub(crate) async fn fetch(
        self: &Arc<Self>,
        target: &Target<'_>,
    ) -> Result<Fetched, RegistryError> {
        let scheme = if self.is_insecure(target.registry) {
            "http"
        } else {
            "https"
        };
        let url = format!(
            "{scheme}://{}/v2/{}/{}",
            api_host(target.registry),
            target.path,
            target.endpoint
        );
        let token_key = (target.registry.to_owned(), target.path.to_owned());
        let mut auth = self.cached_token(&token_key);
        let mut authenticated = false;
        let response = loop {
            let (response, elsewhere) = self
                .get_following_redirects(target, &url, auth.as_deref())
                .await?;
            // A challenge is honoured only from the registry's own host: one that a redirect
            // reached could otherwise name a token realm and be sent the registry's
            // credentials.
            if response.status() != StatusCode::UNAUTHORIZED || authenticated || elsewhere {
                break response;
            }
            authenticated = true;
            let challenge = response
                .headers()
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(parse_challenge);
            auth = match challenge {
                Some(Challenge::Bearer {
                    realm,
                    service,
                    scope,
                }) => {
                    let scope = scope.unwrap_or_else(|| format!("repository:{}:pull", target.path));
                    let token = self
                        .token(target, &realm, service.as_deref(), &scope)
                        .await?;
                    let header = format!("Bearer {}", token.value);
                    self.tokens
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(
                            token_key.clone(),
                            (
                                header.clone(),
                                Instant::now()
                                    + token.lifetime.saturating_sub(Duration::from_secs(5)),
                            ),
                        );
                    Some(header)
                }
                Some(Challenge::Basic) => match self.credentials.basic_header(target.registry) {
                    Some(header) => Some(header),
                    None => break response,
                },
                None => break response,
            };
        };
        let status = response.status();
        if !status.is_success() {
            return Err(RegistryError::Status {
                registry: target.registry.to_owned(),
                what: target.what.to_owned(),
                status: status.as_u16(),
            });
        }
        let headers = response.headers().clone();
        let bytes = read_limited(response.into_body(), target, &headers).await?;
        let media_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned())
            .filter(|v| !v.is_empty());
        let digest = verify(target, &headers, &bytes)?;
        Ok(Fetched {
            digest,
            media_type,
            bytes,
        })
    }

    fn cached_token(&self, key: &(String, String)) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens
            .get(key)
            .filter(|(_, expires)| Instant::now() < *expires)
            .map(|(header, _)| header.clone())
    }

    /// The token flow: `GET realm?service=…&scope=…`, with the registry's credentials when it
    /// has some (anonymous otherwise).
    async fn token(
        &self,
        target: &Target<'_>,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<Token, RegistryError> {
        let malformed = |reason: String| RegistryError::Malformed {
            registry: target.registry.to_owned(),
            what: target.what.to_owned(),
            reason,
        };
        let realm_uri: Uri = realm
            .parse()
            .map_err(|_| malformed(format!("token realm {realm:?} is not a URL")))?;
        match realm_uri.scheme_str() {
            Some("https") => {}
            Some("http") if self.is_insecure(target.registry) => {}
            _ => {
                return Err(malformed(format!(
                    "token realm {realm:?} is not an https URL"
                )));
            }
        }
        let mut url = realm.to_owned();
        let mut sep = if realm.contains('?') { '&' } else { '?' };
        for (key, value) in service
            .map(|s| ("service", s))
            .into_iter()
            .chain([("scope", scope)])
        {
            url.push(sep);
            url.push_str(key);
            url.push('=');
            url.push_str(&percent_encode(value));
            sep = '&';
        }
        let basic = self.credentials.basic_header(target.registry);
        let request = request(&url, None, basic.as_deref()).map_err(malformed)?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| unreachable(target, &e))?;
        if !response.status().is_success() {
            return Err(RegistryError::Status {
                registry: target.registry.to_owned(),
                what: format!("a token for {}", target.what),
                status: response.status().as_u16(),
            });
        }
        let token_target = Target {
            limit: MAX_TOKEN_BYTES,
            ..*target
        };
        let headers = response.headers().clone();
        let body = read_limited(response.into_body(), &token_target, &headers).await?;
        parse_token(&body).map_err(malformed)
    }

    /// GET `url`; follows up to [`MAX_REDIRECTS`] redirects, dropping `Authorization` when one
    /// leaves the registry's host (blob stores sign their URLs). The answer, and whether
    /// another host than `url`'s gave it.
    async fn get_following_redirects(
        &self,
        target: &Target<'_>,
        url: &str,
        auth: Option<&str>,
    ) -> Result<(http::Response<hyper::body::Incoming>, bool), RegistryError> {
        let malformed = |reason: String| RegistryError::Malformed {
            registry: target.registry.to_owned(),
            what: target.what.to_owned(),
            reason,
        };
        let origin: Uri = url
            .parse()
            .map_err(|_| malformed(format!("bad URL {url:?}")))?;
        let mut url = url.to_owned();
        let mut auth = auth;
        let accept = target.manifest.then_some(MANIFEST_ACCEPT);
        for _ in 0..=MAX_REDIRECTS {
            let response = self
                .http
                .request(request(&url, accept, auth).map_err(malformed)?)
                .await
                .map_err(|e| unreachable(target, &e))?;
            if !response.status().is_redirection() || response.status() == StatusCode::NOT_MODIFIED
            {
                let elsewhere = url.parse::<Uri>().ok().map(|u| u.authority().cloned())
                    != Some(origin.authority().cloned());
                return Ok((response, elsewhere));
            }
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    malformed(format!("HTTP {} without a Location", response.status()))
                })?;
            let next = resolve_location(&url, location)
                .ok_or_else(|| malformed(format!("redirect to {location:?}")))?;
            let next_uri: Uri = next
                .parse()
                .map_err(|_| malformed(format!("redirect to {location:?}")))?;
            let current: Uri = url
                .parse()
                .map_err(|_| malformed(format!("bad URL {url:?}")))?;
            if next_uri.scheme_str() != Some("https") && !self.is_insecure(target.registry) {
                return Err(malformed(format!("redirect to {location:?}, not https")));
            }
            if next_uri.authority() != current.authority() {
                auth = None;
            }
            url = next;
        }
        Err(malformed(format!("more than {MAX_REDIRECTS} redirects")))
    }
}

/// The host the API is served on: Docker Hub's images name `docker.io`, its API is
/// `registry-1.docker.io`.
fn api_host(registry: &str) -> &str {
    if registry == "docker.io" {
        "registry-1.docker.io"
    } else {
        registry
    }
}

fn request(
    url: &str,
    accept: Option<&str>,
    auth: Option<&str>,
) -> Result<Request<Empty<Bytes>>, String> {
    let mut builder = Request::get(url).header(http::header::USER_AGENT, "byoc-registry");
    if let Some(accept) = accept {
        builder = builder.header(ACCEPT, accept);
    }
    if let Some(auth) = auth {
        builder = builder.header(AUTHORIZATION, auth);
    }
    builder
        .body(Empty::new())
        .map_err(|e| format!("cannot request {url:?}: {e}"))
}

fn unreachable(target: &Target<'_>, error: &dyn std::error::Error) -> RegistryError {
    let mut reason = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        reason.push_str(": ");
        reason.push_str(&e.to_string());
        source = e.source();
    }
    RegistryError::Unreachable {
        registry: target.registry.to_owned(),
        what: target.what.to_owned(),
        reason,
    }
}

/// Reads the body, refusing it as soon as it (or its announced length) passes the limit.
async fn read_limited(
    body: hyper::body::Incoming,
    target: &Target<'_>,
    headers: &http::HeaderMap,
) -> Result<Bytes, RegistryError> {
    let too_large = || RegistryError::TooLarge {
        registry: target.registry.to_owned(),
        what: target.what.to_owned(),
        limit: target.limit,
    };
    let announced = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > target.limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, target.limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(unreachable(target, e.as_ref())),
    }
}

/// The content's digest, after checking it against the digest asked for and the registry's
/// `Docker-Content-Digest` claim (for manifests). Tags resolve to the content's sha256.
fn verify(
    target: &Target<'_>,
    headers: &http::HeaderMap,
    bytes: &[u8],
) -> Result<Digest, RegistryError> {
    let mismatch = |expected: &Digest, actual: Digest| RegistryError::DigestMismatch {
        registry: target.registry.to_owned(),
        what: target.what.to_owned(),
        expected: expected.clone(),
        actual,
    };
    if let Some(expected) = target.expected {
        let actual = expected.of_same_algorithm(bytes);
        if actual != *expected {
            return Err(mismatch(expected, actual));
        }
    }
    if target.manifest
        && let Some(claim) = headers.get(DOCKER_CONTENT_DIGEST)
    {
        let claim: Digest = claim
            .to_str()
            .ok()
            .and_then(|c| c.trim().parse().ok())
            .ok_or_else(|| RegistryError::Malformed {
                registry: target.registry.to_owned(),
                what: target.what.to_owned(),
                reason: format!("{DOCKER_CONTENT_DIGEST} {claim:?} is not a digest"),
            })?;
        let actual = claim.of_same_algorithm(bytes);
        if actual != claim {
            return Err(mismatch(&claim, actual));
        }
    }
    Ok(match target.expected {
        Some(expected) => expected.clone(),
        None => Digest::sha256(bytes),
    })
}

/// `location` (absolute, or an absolute path) against `base`.
fn resolve_location(base: &str, location: &str) -> Option<String> {
    if location.starts_with("https://") || location.starts_with("http://") {
        return Some(location.to_owned());
    }
    if location.starts_with('/') && !location.starts_with("//") {
        let uri: Uri = base.parse().ok()?;
        return Some(format!(
            "{}://{}{location}",
            uri.scheme_str()?,
            uri.authority()?
        ));
    }
    None
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let base = "http://127.0.0.1:5000/v2/a/blobs/sha256:x";
        assert_eq!(
            resolve_location(base, "/store/x?sig=1").as_deref(),
            Some("http://127.0.0.1:5000/store/x?sig=1")
        );
        assert_eq!(
            resolve_location(base, "https://s3.example/x").as_deref(),
            Some("https://s3.example/x")
        );
        assert_eq!(resolve_location(base, "//evil.example/x"), None);
        assert_eq!(resolve_location(base, "relative/x"), None);
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            percent_encode("repository:tool-a/web:pull"),
            "repository%3Atool-a%2Fweb%3Apull"
        );
        assert_eq!(percent_encode("a b&c"), "a%20b%26c");
    }

    #[test]
    fn docker_hub_api_host() {
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("127.0.0.1:5000"), "127.0.0.1:5000");
    }
}

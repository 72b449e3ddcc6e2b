//! Container image references, parsed as container runtimes parse them (DESIGN §4).
//!
//! [`ImageRef`] follows `ParseNormalizedNamed` of `github.com/distribution/reference` v0.6.0
//! with the digest rules of `github.com/opencontainers/go-digest` v1.0.0, which is what
//! containerd, CRI-O and the kubelet apply:
//!
//! - a reference is `name[:tag][@digest]`, and a name is `[registry/]path`;
//! - the first `/`-separated component is the registry when it contains `.` or `:`, is
//!   `localhost`, or has an uppercase letter; otherwise the registry is Docker Hub,
//!   `docker.io` (a reference without `/` never names a registry: `localhost:5000` is
//!   `docker.io/library/localhost:5000`);
//! - `index.docker.io` is `docker.io`, and a one-component Docker Hub path gets `library/`;
//! - the repository path is lowercase components (`[a-z0-9]+` separated by `.`, `_`, `__` or
//!   dashes) joined by `/`, at most 255 characters including `library/`;
//! - a tag is `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`; a digest is `sha256:` + 64, `sha384:` + 96
//!   or `sha512:` + 128 lowercase hex digits;
//! - an image ID is refused: a bare 64-hex-digit string, and a registry-less
//!   `sha256:<hex>` (or `sha384:`, `sha512:`), where the hex digits may be a short prefix and
//!   a tag or digest may follow. The distribution grammar reads `sha256:<hex>` as Docker Hub's
//!   `library/sha256` with a tag, but containerd first looks the string up as a (prefix of an)
//!   image ID among the images it has cached and runs whatever image matches, whichever
//!   registry it was pulled from: a Docker Hub grant must not admit that.
//!
//! Where this parser is stricter than the runtimes, it is on references no allow-list entry
//! could ever allow: a registry port must be from 1 to 65535, and a first component that must
//! be a registry (it has a `.` or `:`) but is not a valid host name is refused instead of being
//! read as a registry-less path.

use std::fmt;
use std::str::FromStr;

use byoc_api::RegistryPattern;
use byoc_api::registry::grammar;
use thiserror::Error;

/// The longest repository path the grammar accepts, `library/` included.
const MAX_PATH_LEN: usize = 255;

/// The tag a reference without tag or digest resolves to.
const DEFAULT_TAG: &str = "latest";

/// The path prefix of one-component Docker Hub names.
const OFFICIAL_PREFIX: &str = "library/";

/// A parsed, normalized container image reference.
///
/// Parse with [`str::parse`]; [`Display`](fmt::Display) gives the fully normalized reference,
/// such as `docker.io/library/nginx:latest` for `nginx`, which parses back to an equal value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// The registry host, lowercase.
    host: String,
    /// The host as written, when it differs from `host` (it has uppercase letters).
    written_host: Option<String>,
    port: Option<u16>,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    /// The registry host, lowercase: `docker.io` for Docker Hub (implicit or written
    /// `index.docker.io`), an IPv6 address with its brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The registry port, when the reference names one.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The repository path inside the registry, such as `library/nginx`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The tag: as written, or `latest` when the reference has neither tag nor digest (as the
    /// runtime pulls it); `None` for a reference pinned by digest alone.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, `algorithm:hex`, when the reference has one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The registry the reference resolves to, `host[:port]`, lowercase.
    pub fn registry(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.clone(),
        }
    }

    /// Whether the allow-list entry `pattern` allows this image: same host
    /// (case-insensitively), exactly the same port (no port and `:443` differ), and a
    /// repository path equal to the entry's path prefix or continuing it after a `/`.
    pub fn is_allowed_by(&self, pattern: &RegistryPattern) -> bool {
        self.host.eq_ignore_ascii_case(pattern.host())
            && self.port == pattern.port()
            && pattern.path().is_none_or(|prefix| {
                self.path
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.written_host.as_deref().unwrap_or(&self.host))?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write!(f, "/{}", self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// An image reference that does not parse: the reference and the rule it breaks.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("invalid image reference {reference:?}: {kind}")]
pub struct ReferenceError {
    reference: String,
    kind: ReferenceErrorKind,
}

impl ReferenceError {
    /// The reference as given.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// The rule the reference breaks.
    pub fn kind(&self) -> &ReferenceErrorKind {
        &self.kind
    }
}

/// The rule an invalid image reference breaks.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReferenceErrorKind {
    /// The reference is the empty string.
    #[error("it is empty")]
    Empty,
    /// The reference starts or ends with whitespace.
    #[error("it has leading or trailing whitespace")]
    Whitespace,
    /// The reference is a URL with a scheme.
    #[error(
        "an image reference has no URL scheme such as https://; write [registry/]path[:tag][@digest]"
    )]
    Scheme,
    /// The reference is an image ID: 64 hex digits, or a registry-less `algorithm:hex`.
    #[error(
        "it is an image ID, not an image name: the runtime runs whatever image it has cached \
         with that ID, whichever registry it came from; name the image as \
         registry/repository[:tag][@sha256:<digest>]"
    )]
    Identifier,
    /// The repository name has an uppercase letter.
    #[error("repository name {name:?} must be lowercase")]
    Uppercase {
        /// The repository name as written.
        name: String,
    },
    /// The first component is a registry but not a valid host.
    #[error("registry {host:?} is not a valid host name, IPv4 address or bracketed IPv6 address")]
    InvalidHost {
        /// The registry host as written.
        host: String,
    },
    /// The registry port is not a number from 1 to 65535.
    #[error("registry port {port:?} is not a number from 1 to 65535")]
    InvalidPort {
        /// The text after the host's `:`.
        port: String,
    },
    /// Nothing names a repository after the registry.
    #[error("it names no repository")]
    MissingRepository,
    /// A repository path component breaks the grammar (an empty component included).
    #[error(
        "repository path component {component:?} is invalid: a component is lowercase letters \
         and digits, separated by one '.', one or two '_', or dashes"
    )]
    InvalidPathComponent {
        /// The offending component (empty for `//` or a trailing `/`).
        component: String,
    },
    /// The repository path is longer than 255 characters.
    #[error("repository path is {len} characters long, more than {MAX_PATH_LEN}")]
    NameTooLong {
        /// The length of the path, `library/` included.
        len: usize,
    },
    /// The tag breaks the tag grammar.
    #[error(
        "tag {tag:?} is invalid: a tag is 1 to 128 letters, digits, '_', '.' and '-', and does \
         not start with '.' or '-'"
    )]
    InvalidTag {
        /// The tag as written.
        tag: String,
    },
    /// The digest is not `algorithm:hex`.
    #[error("digest {digest:?} is not algorithm:hex, for example sha256:<64 hex digits>")]
    InvalidDigest {
        /// The digest as written.
        digest: String,
    },
    /// The digest algorithm is not one runtimes verify.
    #[error("digest algorithm {algorithm:?} is not supported: use sha256, sha384 or sha512")]
    UnsupportedDigestAlgorithm {
        /// The algorithm as written.
        algorithm: String,
    },
    /// The digest has the wrong number of hex digits for its algorithm.
    #[error("a {algorithm} digest has {expected} hex digits, not {found}")]
    DigestLength {
        /// The algorithm.
        algorithm: String,
        /// The number of hex digits the algorithm produces.
        expected: usize,
        /// The number of characters found.
        found: usize,
    },
    /// The digest has characters other than lowercase hex digits.
    #[error("digest {digest:?} must be lowercase hexadecimal (0-9, a-f)")]
    DigestNotLowercaseHex {
        /// The digest as written.
        digest: String,
    },
}

impl FromStr for ImageRef {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s).map_err(|kind| ReferenceError {
            reference: s.to_owned(),
            kind,
        })
    }
}

/// Whether Go's `strings.ToLower(s) != s`: `s` has a character that lowercases differently.
fn has_uppercase(s: &str) -> bool {
    s.chars().any(|c| {
        if c.is_ascii() {
            c.is_ascii_uppercase()
        } else {
            let mut lower = c.to_lowercase();
            !(lower.next() == Some(c) && lower.next().is_none())
        }
    })
}

/// Whether `s` is a tag: `[\w][\w.-]{0,127}` with ASCII `\w`.
fn is_tag(s: &str) -> bool {
    let word = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_';
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && word(&b[0])
        && b.iter().all(|c| word(c) || *c == b'.' || *c == b'-')
}

/// The digest algorithms go-digest v1.0.0 registers, with the hex digits each produces.
const DIGEST_ALGORITHMS: &[(&str, usize)] = &[("sha256", 64), ("sha384", 96), ("sha512", 128)];

/// Whether `s` is a registry-less `algorithm:hex` (with any tag or digest after it), which
/// containerd resolves as an image ID or ID prefix before it reads it as a name.
fn is_image_id(s: &str) -> bool {
    let Some((algorithm, rest)) = s.split_once(':') else {
        return false;
    };
    let hex = rest.split_once('@').map_or(rest, |(hex, _)| hex);
    DIGEST_ALGORITHMS.iter().any(|(a, _)| *a == algorithm)
        && !hex.is_empty()
        && hex.bytes().all(|c| c.is_ascii_hexdigit())
}

/// Checks a digest as go-digest v1.0.0 `Digest.Validate` does with its default algorithms.
pub(crate) fn check_digest(digest: &str) -> Result<(), ReferenceErrorKind> {
    use ReferenceErrorKind as K;
    let Some((algorithm, hex)) = digest
        .split_once(':')
        .filter(|(a, h)| !a.is_empty() && !h.is_empty())
    else {
        return Err(K::InvalidDigest {
            digest: digest.to_owned(),
        });
    };
    let Some(&(_, expected)) = DIGEST_ALGORITHMS.iter().find(|(a, _)| *a == algorithm) else {
        return Err(K::UnsupportedDigestAlgorithm {
            algorithm: algorithm.to_owned(),
        });
    };
    if hex.len() != expected {
        return Err(K::DigestLength {
            algorithm: algorithm.to_owned(),
            expected,
            found: hex.chars().count(),
        });
    }
    if !hex
        .bytes()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        return Err(K::DigestNotLowercaseHex {
            digest: digest.to_owned(),
        });
    }
    Ok(())
}

/// Splits a registry component into host and port and validates both.
fn split_host_port(domain: &str) -> Result<(&str, Option<u16>), ReferenceErrorKind> {
    use ReferenceErrorKind as K;
    let invalid_host = |host: &str| K::InvalidHost {
        host: host.to_owned(),
    };
    let (host, port) = if domain.starts_with('[') {
        // A bracketed IPv6 literal, maybe followed by a port.
        let end = domain.find(']').map_or(domain.len(), |i| i + 1);
        let (host, rest) = domain.split_at(end);
        if !grammar::is_ipv6_literal(host) {
            return Err(invalid_host(host));
        }
        match rest.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if rest.is_empty() => (host, None),
            None => return Err(invalid_host(domain)),
        }
    } else {
        let (host, port) = match domain.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        };
        if !grammar::is_domain_name(host) {
            return Err(invalid_host(host));
        }
        (host, port)
    };
    let port = match port {
        None => None,
        Some(p) => {
            Some(grammar::parse_port(p).ok_or_else(|| K::InvalidPort { port: p.to_owned() })?)
        }
    };
    Ok((host, port))
}

/// `ParseNormalizedNamed` followed by tagging name-only references `latest`.
fn parse(s: &str) -> Result<ImageRef, ReferenceErrorKind> {
    use ReferenceErrorKind as K;
    if s.is_empty() {
        return Err(K::Empty);
    }
    if s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return Err(K::Whitespace);
    }
    if s.contains("://") {
        return Err(K::Scheme);
    }
    if (s.len() == 64
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)))
        || is_image_id(s)
    {
        return Err(K::Identifier);
    }

    // splitDockerDomain: is the first component a registry?
    let (domain, remainder) = match s.split_once('/') {
        Some((first, rest))
            if first == grammar::LOCALHOST
                || first.contains(['.', ':'])
                || has_uppercase(first) =>
        {
            if first == grammar::LEGACY_DOCKER_HUB {
                (grammar::DOCKER_HUB, rest)
            } else {
                (first, rest)
            }
        }
        _ => (grammar::DOCKER_HUB, s),
    };
    let library = domain == grammar::DOCKER_HUB && !remainder.contains('/');

    // The name ends at the tag or digest separator, which path components never contain.
    let name_end = remainder.find([':', '@']).unwrap_or(remainder.len());
    let (name, suffix) = remainder.split_at(name_end);
    if has_uppercase(name) {
        return Err(K::Uppercase {
            name: name.to_owned(),
        });
    }

    let (written_host, port) = split_host_port(domain)?;

    if name.is_empty() {
        return Err(K::MissingRepository);
    }
    if let Some(component) = grammar::invalid_path_component(name) {
        return Err(K::InvalidPathComponent {
            component: component.to_owned(),
        });
    }
    let path = if library {
        let mut path = String::with_capacity(OFFICIAL_PREFIX.len() + name.len());
        path.push_str(OFFICIAL_PREFIX);
        path.push_str(name);
        path
    } else {
        name.to_owned()
    };
    if path.len() > MAX_PATH_LEN {
        return Err(K::NameTooLong { len: path.len() });
    }

    let (tag, digest) = match suffix.strip_prefix(':') {
        Some(rest) => match rest.split_once('@') {
            Some((tag, digest)) => (Some(tag), Some(digest)),
            None => (Some(rest), None),
        },
        None => (None, suffix.strip_prefix('@')),
    };
    if let Some(tag) = tag.filter(|t| !is_tag(t)) {
        return Err(K::InvalidTag {
            tag: tag.to_owned(),
        });
    }
    if let Some(digest) = digest {
        check_digest(digest)?;
    }
    let tag = match (tag, digest) {
        (None, None) => Some(DEFAULT_TAG.to_owned()),
        (tag, _) => tag.map(str::to_owned),
    };

    let host = written_host.to_ascii_lowercase();
    let written_host = (host != written_host).then(|| written_host.to_owned());
    Ok(ImageRef {
        host,
        written_host,
        port,
        path,
        tag,
        digest: digest.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SHA256: &str = "sha256:7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa";

    fn parse(s: &str) -> Result<ImageRef, ReferenceError> {
        s.parse()
    }

    fn kind(s: &str) -> ReferenceErrorKind {
        parse(s).expect_err(s).kind().clone()
    }

    fn pattern(s: &str) -> RegistryPattern {
        s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    /// (input, normalized Display, registry(), path()).
    const VALID: &[(&str, &str, &str, &str)] = &[
        // Docker Hub: implicit registry, library/ for one-component names, aliases.
        (
            "nginx",
            "docker.io/library/nginx:latest",
            "docker.io",
            "library/nginx",
        ),
        (
            "nginx:1.27",
            "docker.io/library/nginx:1.27",
            "docker.io",
            "library/nginx",
        ),
        (
            "library/nginx",
            "docker.io/library/nginx:latest",
            "docker.io",
            "library/nginx",
        ),
        (
            "docker.io/nginx",
            "docker.io/library/nginx:latest",
            "docker.io",
            "library/nginx",
        ),
        (
            "docker.io/library/nginx",
            "docker.io/library/nginx:latest",
            "docker.io",
            "library/nginx",
        ),
        (
            "index.docker.io/nginx",
            "docker.io/library/nginx:latest",
            "docker.io",
            "library/nginx",
        ),
        (
            "index.docker.io/library/nginx:1",
            "docker.io/library/nginx:1",
            "docker.io",
            "library/nginx",
        ),
        (
            "index.docker.io/org/app",
            "docker.io/org/app:latest",
            "docker.io",
            "org/app",
        ),
        (
            "org/app",
            "docker.io/org/app:latest",
            "docker.io",
            "org/app",
        ),
        (
            "org/team/app:v1",
            "docker.io/org/team/app:v1",
            "docker.io",
            "org/team/app",
        ),
        (
            "library/a/b",
            "docker.io/library/a/b:latest",
            "docker.io",
            "library/a/b",
        ),
        // The platform registry and other hosts.
        (
            "docker-registry.tools.wmflabs.org/toolforge-python311-sssd-base:latest",
            "docker-registry.tools.wmflabs.org/toolforge-python311-sssd-base:latest",
            "docker-registry.tools.wmflabs.org",
            "toolforge-python311-sssd-base",
        ),
        (
            "quay.io/prometheus/node-exporter",
            "quay.io/prometheus/node-exporter:latest",
            "quay.io",
            "prometheus/node-exporter",
        ),
        (
            "ghcr.io/wikimedia/app:v1.2.3",
            "ghcr.io/wikimedia/app:v1.2.3",
            "ghcr.io",
            "wikimedia/app",
        ),
        // A one-component path on another registry gets no library/.
        ("quay.io/nginx", "quay.io/nginx:latest", "quay.io", "nginx"),
        // index.docker.io with a port, or uppercase, is not the alias.
        (
            "index.docker.io:443/nginx",
            "index.docker.io:443/nginx:latest",
            "index.docker.io:443",
            "nginx",
        ),
        (
            "DOCKER.IO/nginx",
            "DOCKER.IO/nginx:latest",
            "docker.io",
            "nginx",
        ),
        // Host-suffix and userinfo tricks resolve to the attacker's registry.
        (
            "docker-registry.tools.wmflabs.org.evil.com/x",
            "docker-registry.tools.wmflabs.org.evil.com/x:latest",
            "docker-registry.tools.wmflabs.org.evil.com",
            "x",
        ),
        (
            "evil.com/docker-registry.tools.wmflabs.org/x",
            "evil.com/docker-registry.tools.wmflabs.org/x:latest",
            "evil.com",
            "docker-registry.tools.wmflabs.org/x",
        ),
        (
            "evil.com/docker-registry.tools.wmflabs.org",
            "evil.com/docker-registry.tools.wmflabs.org:latest",
            "evil.com",
            "docker-registry.tools.wmflabs.org",
        ),
        // Ports.
        (
            "localhost:5000/app",
            "localhost:5000/app:latest",
            "localhost:5000",
            "app",
        ),
        (
            "registry:5000/app",
            "registry:5000/app:latest",
            "registry:5000",
            "app",
        ),
        (
            "registry.example.org:443/app",
            "registry.example.org:443/app:latest",
            "registry.example.org:443",
            "app",
        ),
        (
            "registry.example.org:05000/app",
            "registry.example.org:5000/app:latest",
            "registry.example.org:5000",
            "app",
        ),
        (
            "registry.example.org:65535/app",
            "registry.example.org:65535/app:latest",
            "registry.example.org:65535",
            "app",
        ),
        // localhost, IPv4 and IPv6.
        ("localhost/app", "localhost/app:latest", "localhost", "app"),
        ("LocalHost/app", "LocalHost/app:latest", "localhost", "app"),
        ("127.0.0.1/app", "127.0.0.1/app:latest", "127.0.0.1", "app"),
        (
            "10.0.0.1:5000/a/b:c",
            "10.0.0.1:5000/a/b:c",
            "10.0.0.1:5000",
            "a/b",
        ),
        ("[::1]/app", "[::1]/app:latest", "[::1]", "app"),
        (
            "[::1]:5000/app",
            "[::1]:5000/app:latest",
            "[::1]:5000",
            "app",
        ),
        (
            "[2001:DB8::1]:5000/app",
            "[2001:DB8::1]:5000/app:latest",
            "[2001:db8::1]:5000",
            "app",
        ),
        // An uppercase first component is a registry (and the runtime would dial it).
        ("Foo/bar", "Foo/bar:latest", "foo", "bar"),
        (
            "Quay.IO/org/app",
            "Quay.IO/org/app:latest",
            "quay.io",
            "org/app",
        ),
        // A name without '/' never names a registry.
        (
            "localhost",
            "docker.io/library/localhost:latest",
            "docker.io",
            "library/localhost",
        ),
        (
            "localhost:5000",
            "docker.io/library/localhost:5000",
            "docker.io",
            "library/localhost",
        ),
        (
            "example.com",
            "docker.io/library/example.com:latest",
            "docker.io",
            "library/example.com",
        ),
        (
            "example.com:5000",
            "docker.io/library/example.com:5000",
            "docker.io",
            "library/example.com",
        ),
        // Path separators.
        (
            "a/b.c_d__e---f",
            "docker.io/a/b.c_d__e---f:latest",
            "docker.io",
            "a/b.c_d__e---f",
        ),
        ("0/1", "docker.io/0/1:latest", "docker.io", "0/1"),
        // Tags.
        (
            "nginx:Latest_1.2-rc.3",
            "docker.io/library/nginx:Latest_1.2-rc.3",
            "docker.io",
            "library/nginx",
        ),
        (
            "nginx:_",
            "docker.io/library/nginx:_",
            "docker.io",
            "library/nginx",
        ),
        // Names that look like an algorithm are names when the tag is not all hex digits, or
        // when a registry or path comes first.
        (
            "sha256:latest",
            "docker.io/library/sha256:latest",
            "docker.io",
            "library/sha256",
        ),
        (
            "docker.io/library/sha256:7cc4b5ae",
            "docker.io/library/sha256:7cc4b5ae",
            "docker.io",
            "library/sha256",
        ),
        (
            "md5:abc",
            "docker.io/library/md5:abc",
            "docker.io",
            "library/md5",
        ),
    ];

    /// (input, expected error).
    fn invalid() -> Vec<(String, ReferenceErrorKind)> {
        use ReferenceErrorKind as K;
        let hex64 = "a".repeat(64);
        let comp = |c: &str| K::InvalidPathComponent {
            component: c.into(),
        };
        let host = |h: &str| K::InvalidHost { host: h.into() };
        let port = |p: &str| K::InvalidPort { port: p.into() };
        let tag = |t: &str| K::InvalidTag { tag: t.into() };
        let upper = |n: &str| K::Uppercase { name: n.into() };
        let unsupported = |a: &str| K::UnsupportedDigestAlgorithm {
            algorithm: a.into(),
        };
        let length = |a: &str, e, f| K::DigestLength {
            algorithm: a.into(),
            expected: e,
            found: f,
        };
        let cases: Vec<(String, ReferenceErrorKind)> = vec![
            ("".into(), K::Empty),
            (" nginx".into(), K::Whitespace),
            ("nginx ".into(), K::Whitespace),
            ("nginx\n".into(), K::Whitespace),
            ("\u{a0}nginx".into(), K::Whitespace),
            ("https://quay.io/x".into(), K::Scheme),
            ("docker://nginx".into(), K::Scheme),
            (hex64.clone(), K::Identifier),
            // Uppercase repository paths.
            ("Nginx".into(), upper("Nginx")),
            ("NGINX:latest".into(), upper("NGINX")),
            ("org/App".into(), upper("org/App")),
            ("quay.io/Org/app".into(), upper("Org/app")),
            ("docker.io/Nginx".into(), upper("Nginx")),
            // Invalid registries.
            (
                "docker-registry.tools.wmflabs.org@evil/x".into(),
                host("docker-registry.tools.wmflabs.org@evil"),
            ),
            ("user@quay.io/x".into(), host("user@quay.io")),
            ("quay..io/x".into(), host("quay..io")),
            (".quay.io/x".into(), host(".quay.io")),
            ("quay.io./x".into(), host("quay.io.")),
            ("-quay.io/x".into(), host("-quay.io")),
            ("quay-.io/x".into(), host("quay-.io")),
            ("a_b.com:5000/x".into(), host("a_b.com")),
            ("under_score.com/x".into(), host("under_score.com")),
            (":5000/x".into(), host("")),
            ("::1/x".into(), host("")),
            ("[::1/x".into(), host("[::1")),
            ("[::1]x/y".into(), host("[::1]x")),
            ("[fe80::1%eth0]/x".into(), host("[fe80::1%eth0]")),
            ("[::ffff:1.2.3.4]/x".into(), host("[::ffff:1.2.3.4]")),
            ("Foo_Bar/x".into(), host("Foo_Bar")),
            // Ports.
            ("localhost:/x".into(), port("")),
            ("localhost:0/x".into(), port("0")),
            ("localhost:65536/x".into(), port("65536")),
            (
                "localhost:99999999999999999999/x".into(),
                port("99999999999999999999"),
            ),
            ("localhost:abc/x".into(), port("abc")),
            ("localhost:5000:5000/x".into(), port("5000:5000")),
            ("[::1]:/x".into(), port("")),
            ("[::1]:0/x".into(), port("0")),
            ("foo:tag/bar".into(), port("tag")),
            // Repository paths.
            ("quay.io/".into(), K::MissingRepository),
            ("quay.io/:tag".into(), K::MissingRepository),
            ("localhost/@sha256:abc".into(), K::MissingRepository),
            (":tag".into(), K::MissingRepository),
            ("@".into(), K::MissingRepository),
            ("[]/x".into(), comp("[]")),
            ("/x".into(), comp("")),
            ("x/".into(), comp("")),
            ("a//b".into(), comp("")),
            ("quay.io//x".into(), comp("")),
            ("quay.io/x/".into(), comp("")),
            ("-x".into(), comp("-x")),
            ("x-".into(), comp("x-")),
            ("x..y".into(), comp("x..y")),
            ("x___y".into(), comp("x___y")),
            ("x._y".into(), comp("x._y")),
            ("_x".into(), comp("_x")),
            ("x y".into(), comp("x y")),
            ("ngïnx".into(), comp("ngïnx")),
            ("quay.io/x#y".into(), comp("x#y")),
            ("quay.io/x\\y".into(), comp("x\\y")),
            ("quay.io/x?y=1".into(), comp("x?y=1")),
            // Tags.
            ("nginx:".into(), tag("")),
            ("nginx:.x".into(), tag(".x")),
            ("nginx:-x".into(), tag("-x")),
            ("nginx:x+y".into(), tag("x+y")),
            ("nginx:x/y".into(), port("x")),
            ("nginx:a:b".into(), tag("a:b")),
            ("nginx:ü".into(), tag("ü")),
            (format!("nginx:{}", "t".repeat(129)), tag(&"t".repeat(129))),
            (format!("nginx:@{SHA256}"), tag("")),
            // Digests.
            ("nginx@".into(), K::InvalidDigest { digest: "".into() }),
            (
                "nginx@sha256".into(),
                K::InvalidDigest {
                    digest: "sha256".into(),
                },
            ),
            (
                "nginx@sha256:".into(),
                K::InvalidDigest {
                    digest: "sha256:".into(),
                },
            ),
            (
                format!("nginx@:{hex64}"),
                K::InvalidDigest {
                    digest: format!(":{hex64}"),
                },
            ),
            (
                format!("nginx@sha256:{}", "a".repeat(63)),
                length("sha256", 64, 63),
            ),
            (
                format!("nginx@sha256:{}", "a".repeat(65)),
                length("sha256", 64, 65),
            ),
            (
                format!("nginx@sha256:{}", "a".repeat(96)),
                length("sha256", 64, 96),
            ),
            (format!("nginx@sha384:{hex64}"), length("sha384", 96, 64)),
            (format!("nginx@sha512:{hex64}"), length("sha512", 128, 64)),
            (
                format!("nginx@sha256:{}", "A".repeat(64)),
                K::DigestNotLowercaseHex {
                    digest: format!("sha256:{}", "A".repeat(64)),
                },
            ),
            (
                format!("nginx@sha256:{}g", "a".repeat(63)),
                K::DigestNotLowercaseHex {
                    digest: format!("sha256:{}g", "a".repeat(63)),
                },
            ),
            (format!("nginx@md5:{}", "a".repeat(32)), unsupported("md5")),
            (
                format!("nginx@sha1:{}", "a".repeat(40)),
                unsupported("sha1"),
            ),
            (format!("nginx@SHA256:{hex64}"), unsupported("SHA256")),
            (format!("nginx@blake3:{hex64}"), unsupported("blake3")),
            (
                format!("nginx@sha256+b64:{hex64}"),
                unsupported("sha256+b64"),
            ),
            (
                format!("nginx@{SHA256}@{SHA256}"),
                length("sha256", 64, 136),
            ),
            // Length: the repository path, library/ included, is at most 255 characters.
            ("a".repeat(248), K::NameTooLong { len: 256 }),
            (
                format!("quay.io/{}", "a".repeat(256)),
                K::NameTooLong { len: 256 },
            ),
        ];
        cases
    }

    #[test]
    fn valid_references_normalize() {
        for &(input, display, registry, path) in VALID {
            let r = parse(input).unwrap_or_else(|e| panic!("{input:?} should parse: {e}"));
            assert_eq!(r.to_string(), display, "{input}");
            assert_eq!(r.registry(), registry, "{input}");
            assert_eq!(r.path(), path, "{input}");
            assert_eq!(
                parse(display).as_ref(),
                Ok(&r),
                "{display} re-parses to the same value"
            );
        }
    }

    #[test]
    fn invalid_references_are_refused_with_the_rule_broken() {
        for (input, expected) in invalid() {
            let err = parse(&input).expect_err(&input);
            assert_eq!(err.kind(), &expected, "{input:?}");
            assert_eq!(err.reference(), input);
        }
    }

    #[test]
    fn accessors() {
        let r = parse("Registry.Example.org:5000/team/app:v1").expect("valid");
        assert_eq!(r.host(), "registry.example.org");
        assert_eq!(r.port(), Some(5000));
        assert_eq!(r.path(), "team/app");
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.digest(), None);
        assert_eq!(r.registry(), "registry.example.org:5000");
        assert_eq!(r.to_string(), "Registry.Example.org:5000/team/app:v1");

        let r = parse("nginx").expect("valid");
        assert_eq!(
            (r.host(), r.port(), r.tag(), r.digest()),
            ("docker.io", None, Some("latest"), None)
        );
        assert_eq!(parse("nginx"), parse("docker.io/library/nginx:latest"));

        let r = parse(&format!("nginx@{SHA256}")).expect("valid");
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(SHA256));
        assert_eq!(r.to_string(), format!("docker.io/library/nginx@{SHA256}"));

        let r = parse(&format!("nginx:1.27@{SHA256}")).expect("valid");
        assert_eq!(r.tag(), Some("1.27"));
        assert_eq!(r.digest(), Some(SHA256));
        assert_eq!(
            r.to_string(),
            format!("docker.io/library/nginx:1.27@{SHA256}")
        );

        let r = parse("[::ABCD]:5000/x").expect("valid");
        assert_eq!(r.host(), "[::abcd]");
        assert_eq!(r.registry(), "[::abcd]:5000");
        assert_eq!(r.to_string(), "[::ABCD]:5000/x:latest");
    }

    #[test]
    fn digests() {
        for (algorithm, len) in [("sha256", 64), ("sha384", 96), ("sha512", 128)] {
            let digest = format!(
                "{algorithm}:{}",
                "0123456789abcdef"
                    .repeat(8)
                    .get(..len)
                    .expect("long enough")
            );
            let r = parse(&format!("quay.io/x@{digest}")).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.digest(), Some(digest.as_str()));
            assert_eq!(r.tag(), None);
        }
    }

    #[test]
    fn tags_up_to_128_characters() {
        let longest = format!("nginx:{}", "t".repeat(128));
        assert_eq!(
            parse(&longest).expect("valid").tag().map(str::len),
            Some(128)
        );
    }

    #[test]
    fn the_path_limit_counts_library_but_not_the_registry() {
        // 247 + "library/" = 255.
        assert!(parse(&"a".repeat(247)).is_ok());
        let long_host = format!("{}.example.org/{}", "h".repeat(200), "p".repeat(255));
        assert_eq!(parse(&long_host).expect("valid").path().len(), 255);
    }

    #[test]
    fn registry_less_digests_are_image_ids() {
        let hex64 = "7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa";
        let refused = [
            format!("sha256:{hex64}"),
            "sha256:7cc4b5ae".to_owned(),
            "sha256:7".to_owned(),
            "sha256:7CC4B5AE".to_owned(),
            format!("sha384:{}", "a".repeat(96)),
            "sha512:abc".to_owned(),
            format!("sha256:7cc4@sha256:{hex64}"),
        ];
        for s in &refused {
            assert_eq!(kind(s), ReferenceErrorKind::Identifier, "{s}");
        }
        let allowed = [
            "sha256:latest",
            "sha256:7cc4b5aeg",
            "sha256",
            "library/sha256:7cc4",
            "quay.io/sha256:7cc4",
            "sha1:7cc4",
            "SHA256:7cc4",
        ];
        for s in allowed {
            assert_ne!(
                parse(s).map_err(|e| e.kind().clone()).err(),
                Some(ReferenceErrorKind::Identifier),
                "{s}"
            );
        }
        let message = parse("sha256:7cc4b5ae").unwrap_err().to_string();
        assert!(
            message.contains("whatever image it has cached with that ID, whichever registry"),
            "{message}"
        );
    }

    #[test]
    fn a_64_hex_name_is_refused_only_alone() {
        let hex64 = "0123456789abcdef".repeat(4);
        assert_eq!(kind(&hex64), ReferenceErrorKind::Identifier);
        // With a registry, a tag, another length or uppercase it is an ordinary name.
        assert!(parse(&format!("quay.io/{hex64}")).is_ok());
        assert!(parse(&format!("{hex64}:tag")).is_ok());
        assert!(parse(&format!("org/{hex64}")).is_ok());
        assert!(parse(&hex64[..63]).is_ok());
        assert!(matches!(
            kind(&hex64.to_uppercase()),
            ReferenceErrorKind::Uppercase { .. }
        ));
    }

    #[test]
    fn error_messages_name_the_reference_and_the_rule() {
        let cases = [
            (
                "Nginx",
                "invalid image reference \"Nginx\": repository name \"Nginx\" must be lowercase",
            ),
            (
                "localhost:0/x",
                "registry port \"0\" is not a number from 1 to 65535",
            ),
            ("nginx:-x", "tag \"-x\" is invalid"),
            (
                "nginx@sha256:abc",
                "a sha256 digest has 64 hex digits, not 3",
            ),
            ("nginx@md5:abc", "digest algorithm \"md5\" is not supported"),
            ("https://quay.io/x", "no URL scheme"),
            ("a@b/c", "invalid image reference \"a@b/c\""),
            ("evil\u{1b}[31m/x", "\\u{1b}"),
        ];
        for (input, needle) in cases {
            let message = parse(input).expect_err(input).to_string();
            assert!(
                message.contains(needle),
                "{input:?}: {message:?} lacks {needle:?}"
            );
        }
    }

    /// (pattern, image, allowed).
    const MATCHES: &[(&str, &str, bool)] = &[
        // The platform registry and host-suffix tricks.
        (
            "docker-registry.tools.wmflabs.org",
            "docker-registry.tools.wmflabs.org/toolforge-jdk17:latest",
            true,
        ),
        (
            "docker-registry.tools.wmflabs.org",
            "Docker-Registry.Tools.Wmflabs.Org/x",
            true,
        ),
        (
            "docker-registry.tools.wmflabs.org",
            "docker-registry.tools.wmflabs.org.evil.com/x",
            false,
        ),
        (
            "docker-registry.tools.wmflabs.org",
            "evil.com/docker-registry.tools.wmflabs.org/x",
            false,
        ),
        (
            "docker-registry.tools.wmflabs.org",
            "evil-docker-registry.tools.wmflabs.org/x",
            false,
        ),
        (
            "docker-registry.tools.wmflabs.org",
            "tools.wmflabs.org/x",
            false,
        ),
        (
            "docker-registry.tools.wmflabs.org",
            "docker-registry.tools.wmflabs.org:443/x",
            false,
        ),
        (
            "docker-registry.tools.wmflabs.org",
            "docker-registry.tools.wmflabs.org:5000/x",
            false,
        ),
        (
            "docker-registry.tools.wmflabs.org",
            "docker-registry/x",
            false,
        ),
        ("docker-registry.tools.wmflabs.org", "x", false),
        // Docker Hub and its aliases.
        ("docker.io", "nginx", true),
        ("docker.io", "org/app", true),
        ("docker.io", "index.docker.io/org/app", true),
        ("docker.io", "docker.io/library/nginx", true),
        ("docker.io", "registry-1.docker.io/library/nginx", false),
        ("docker.io", "docker.io.evil.com/library/nginx", false),
        ("index.docker.io", "nginx", true),
        ("docker.io/library", "nginx", true),
        ("docker.io/library", "library/nginx:1", true),
        ("docker.io/library", "org/nginx", false),
        ("docker.io/nginx", "nginx", false),
        ("docker.io/library/nginx", "nginx:1.27", true),
        ("docker.io/library/nginx", "nginx-unprivileged", false),
        // Path prefixes match on '/' boundaries only.
        ("docker.io/org", "org/x", true),
        ("docker.io/org", "org/x/y", true),
        ("docker.io/org", "organisation/x", false),
        ("docker.io/org", "org-x/y", false),
        ("docker.io/org", "org", false),
        ("ghcr.io/wikimedia", "ghcr.io/wikimedia", true),
        ("ghcr.io/wikimedia", "ghcr.io/wikimedia/app", true),
        ("ghcr.io/wikimedia", "ghcr.io/wikimedia-evil/app", false),
        ("ghcr.io/wikimedia", "ghcr.io/wikimedia.evil/app", false),
        ("ghcr.io/wikimedia", "ghcr.io/wikimedia_x/app", false),
        ("ghcr.io/wikimedia", "ghcr.io/evil/wikimedia/app", false),
        ("ghcr.io/wikimedia", "ghcr.io/app", false),
        ("ghcr.io/wikimedia", "evil.io/wikimedia/app", false),
        ("ghcr.io/wikimedia/team", "ghcr.io/wikimedia/team/app", true),
        ("ghcr.io/wikimedia/team", "ghcr.io/wikimedia/app", false),
        ("ghcr.io/wikimedia", "GHCR.io/wikimedia/app", true),
        // Ports must be exactly equal.
        ("localhost:5000", "localhost:5000/app", true),
        ("localhost:5000", "localhost/app", false),
        ("localhost:5000", "localhost:5001/app", false),
        ("localhost:5000", "localhost:05000/app", true),
        ("localhost", "localhost/app", true),
        ("localhost", "localhost:5000/app", false),
        ("localhost", "LOCALHOST/app", true),
        ("localhost", "localhost:5000", false),
        (
            "registry.example.org:443",
            "registry.example.org:443/app",
            true,
        ),
        (
            "registry.example.org:443",
            "registry.example.org/app",
            false,
        ),
        (
            "registry.example.org",
            "registry.example.org:443/app",
            false,
        ),
        ("registry:5000/team", "registry:5000/team/app", true),
        // IPv4.
        ("10.0.0.1:5000", "10.0.0.1:5000/app", true),
        ("10.0.0.1", "10.0.0.1:5000/app", false),
        ("10.0.0.1", "10.0.0.10/app", false),
        ("10.0.0.1", "[::1]/app", false),
        // Tags and digests never matter.
        (
            "quay.io/org",
            "quay.io/org/app:v1@sha256:7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa",
            true,
        ),
    ];

    #[test]
    fn matching() {
        for &(p, image, expected) in MATCHES {
            let r = parse(image).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                r.is_allowed_by(&pattern(p)),
                expected,
                "{p} vs {image} ({r})"
            );
        }
    }

    /// Strings built from the pieces references are made of, plus usual mistakes.
    fn reference_like() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("docker.io"),
            Just("index.docker.io"),
            Just("localhost"),
            Just("quay.io"),
            Just("library"),
            Just("nginx"),
            Just("Foo"),
            Just("[::1]"),
            Just("127.0.0.1"),
            Just("sha256"),
            Just("sha512"),
            Just("7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa"),
            Just("/"),
            Just(":"),
            Just("@"),
            Just("."),
            Just("_"),
            Just("__"),
            Just("-"),
            Just("5000"),
            Just("0"),
            Just("65536"),
            Just(" "),
            Just("://"),
            Just("é"),
        ]
        .prop_map(str::to_owned);
        let free = "[a-zA-Z0-9._:/@\\[\\]-]{1,6}";
        let piece = prop_oneof![3 => piece, 1 => free];
        proptest::collection::vec(piece, 0..10).prop_map(|v| v.concat())
    }

    fn check_round_trip(s: &str) -> Result<(), TestCaseError> {
        if let Ok(r) = parse(s) {
            let display = r.to_string();
            let again = parse(&display);
            prop_assert_eq!(again.as_ref(), Ok(&r), "{:?} -> {:?}", s, display);
            prop_assert!(r.path().len() <= MAX_PATH_LEN);
            prop_assert!(r.tag().is_some() || r.digest().is_some());
            prop_assert_eq!(r.host(), r.host().to_ascii_lowercase());
            let own = RegistryPattern::from_str(&r.registry());
            if let Ok(own) = own {
                prop_assert!(r.is_allowed_by(&own), "{} allowed by its own registry", r);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::with_cases(4096)
        })]

        #[test]
        fn never_panics_on_arbitrary_strings(s in any::<String>()) {
            check_round_trip(&s)?;
        }

        #[test]
        fn never_panics_on_printable_strings(s in "\\PC{0,64}") {
            check_round_trip(&s)?;
        }

        #[test]
        fn round_trips_on_reference_like_strings(s in reference_like()) {
            check_round_trip(&s)?;
        }

        #[test]
        fn round_trips_on_the_reference_alphabet(s in "[a-zA-Z0-9._:/@\\[\\]-]{0,40}") {
            check_round_trip(&s)?;
        }

        #[test]
        fn generated_references_parse(
            host in prop_oneof![
                Just(String::new()),
                Just("localhost/".to_owned()),
                "[a-z]([a-z0-9-]{0,4}[a-z0-9])?\\.[a-z]{2,3}(:[1-9][0-9]{0,3})?/",
                "[A-Z][a-zA-Z]{0,5}/",
                "\\[[0-9a-f]{0,4}:[0-9a-f:]{0,6}\\](:[1-9][0-9]{0,3})?/",
            ],
            // No '.' in the first component, which would make it a registry.
            path in proptest::collection::vec("[a-z0-9]{1,3}((_|__|-{1,3})[a-z0-9]{1,3}){0,2}", 1..4),
            tag in proptest::option::of("[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,10}"),
            digest in proptest::option::of("[0-9a-f]{64}"),
        ) {
            let path = path.join("/");
            let mut s = format!("{host}{path}");
            if let Some(tag) = &tag {
                s = format!("{s}:{tag}");
            }
            if let Some(digest) = &digest {
                s = format!("{s}@sha256:{digest}");
            }
            let r = parse(&s).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(r.path().ends_with(&path));
            prop_assert_eq!(r.digest().map(|d| d.trim_start_matches("sha256:")), digest.as_deref());
            if digest.is_none() {
                prop_assert_eq!(r.tag(), Some(tag.as_deref().unwrap_or("latest")));
            }
            check_round_trip(&s)?;
        }
    }
}

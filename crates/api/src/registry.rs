//! Allow-list entries: [`RegistryPattern`], `host[:port][/path-prefix]` (DESIGN §4).
//!
//! An entry names the registry an image reference must resolve to, and optionally a repository
//! path prefix inside it. Entries are lowercase and canonical, so the same entry always has the
//! same spelling (the controller stores it in a namespace label):
//!
//! - the host is a DNS name whose last label contains a letter, or an IPv4 address
//!   (four numbers from 0 to 255, no leading zeros); IPv6 literals are refused;
//! - the host has a `.`, is `localhost`, or carries a port: a first component without any of
//!   these is a Docker Hub namespace in an image reference, never a registry;
//! - the port is a number from 1 to 65535 without leading zeros;
//! - the path prefix is one or more repository path components joined by `/`, with no tag,
//!   digest, empty component or trailing slash;
//! - `index.docker.io` is written `docker.io`, as image references resolve it.
//!
//! [`REGISTRY_PATTERN_REGEX`] accepts exactly the strings [`RegistryPattern::from_str`]
//! accepts; the CRD uses it in a CEL rule. The small checks shared with the image-reference
//! parser live in [`grammar`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// An anchored, RE2-compatible regular expression that matches exactly the strings
/// [`RegistryPattern::from_str`] accepts (contains no `'`, so it fits in a CEL raw string).
pub const REGISTRY_PATTERN_REGEX: &str = concat!(
    "^(?:",
    // host:port, where host is an IPv4 address or a DNS name whose last label has a letter.
    "(?:",
    "(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])",
    "|",
    "(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\\.)*(?:[a-z](?:[a-z0-9-]*[a-z0-9])?|[0-9][a-z0-9-]*[a-z](?:[a-z0-9-]*[a-z0-9])?)",
    ")",
    ":(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])",
    // localhost without a port.
    "|localhost",
    // an IPv4 address without a port.
    "|(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])",
    // a DNS name with at least one '.', without a port.
    "|(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\\.)+(?:[a-z](?:[a-z0-9-]*[a-z0-9])?|[0-9][a-z0-9-]*[a-z](?:[a-z0-9-]*[a-z0-9])?)",
    ")",
    // the optional path prefix.
    "(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$",
);

/// The grammar pieces shared by [`RegistryPattern`] and the image-reference parser, taken from
/// the distribution reference grammar (`github.com/distribution/reference`).
pub mod grammar {
    /// The Docker Hub registry that image references without a registry resolve to.
    pub const DOCKER_HUB: &str = "docker.io";

    /// The legacy name of Docker Hub ("the Docker Index"); references normalize it to
    /// [`DOCKER_HUB`].
    pub const LEGACY_DOCKER_HUB: &str = "index.docker.io";

    /// The reserved host name that is always a registry in an image reference.
    pub const LOCALHOST: &str = "localhost";

    /// Whether `s` is a domain-name component: `[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?`.
    ///
    /// Case-insensitive, as in the reference grammar; allow-list entries add a lowercase check.
    pub fn is_domain_component(s: &str) -> bool {
        let b = s.as_bytes();
        match (b.first(), b.last()) {
            (Some(first), Some(last)) => {
                first.is_ascii_alphanumeric()
                    && last.is_ascii_alphanumeric()
                    && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            }
            _ => false,
        }
    }

    /// Whether `s` is a domain name: one or more [domain components](is_domain_component)
    /// joined by `.` (this includes dotted IPv4 addresses).
    pub fn is_domain_name(s: &str) -> bool {
        s.split('.').all(is_domain_component)
    }

    /// Whether `s` is a bracketed IPv6 literal as the reference grammar accepts it:
    /// `\[[a-fA-F0-9:]+\]` (no zone identifier, no embedded IPv4).
    pub fn is_ipv6_literal(s: &str) -> bool {
        s.strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .is_some_and(|inner| {
                !inner.is_empty() && inner.bytes().all(|c| c.is_ascii_hexdigit() || c == b':')
            })
    }

    /// Whether `s` is a dotted-quad IPv4 address: four numbers from 0 to 255, without leading
    /// zeros.
    pub fn is_ipv4(s: &str) -> bool {
        let mut count = 0;
        for octet in s.split('.') {
            count += 1;
            let canonical = !octet.is_empty()
                && octet.len() <= 3
                && octet.bytes().all(|c| c.is_ascii_digit())
                && !(octet.len() > 1 && octet.starts_with('0'));
            if count > 4 || !canonical || octet.parse::<u8>().is_err() {
                return false;
            }
        }
        count == 4
    }

    /// The port number in `s`, when `s` is one or more ASCII digits whose value is from 1 to
    /// 65535. Leading zeros are accepted (`05000` is 5000), as a runtime dialing the registry
    /// reads them; canonical spellings are checked by the caller.
    pub fn parse_port(s: &str) -> Option<u16> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let digits = s.trim_start_matches('0');
        if digits.len() > 5 {
            return None;
        }
        match digits.parse::<u16>() {
            Ok(0) | Err(_) => None,
            Ok(port) => Some(port),
        }
    }

    /// Whether `s` is a repository path component:
    /// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*` (lowercase letters and digits, separated by
    /// one `.`, one `_`, two `_` or any number of `-`).
    pub fn is_path_component(s: &str) -> bool {
        let b = s.as_bytes();
        let mut i = 0;
        loop {
            // An alphanumeric run.
            let start = i;
            while i < b.len() && (b[i].is_ascii_lowercase() || b[i].is_ascii_digit()) {
                i += 1;
            }
            if i == start {
                return false;
            }
            if i == b.len() {
                return true;
            }
            // A separator, which must be followed by another alphanumeric run.
            match b[i] {
                b'.' => i += 1,
                b'_' => {
                    i += 1;
                    if b.get(i) == Some(&b'_') {
                        i += 1;
                    }
                }
                b'-' => {
                    while b.get(i) == Some(&b'-') {
                        i += 1;
                    }
                }
                _ => return false,
            }
        }
    }

    /// The first component of a `/`-separated repository path that is not a valid
    /// [path component](is_path_component) (an empty string for an empty component), or `None`
    /// when the whole path is valid.
    pub fn invalid_path_component(path: &str) -> Option<&str> {
        path.split('/').find(|c| !is_path_component(c))
    }
}

/// One allow-list entry, `host[:port][/path-prefix]`, in canonical form.
///
/// An image reference is allowed by the entry when it resolves to the same host
/// (case-insensitively) and exactly the same port, and, when the entry has a path prefix, its
/// repository path equals the prefix or continues it after a `/`. Parse with [`str::parse`];
/// [`Display`](fmt::Display) and serde give the canonical string.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegistryPattern {
    host: String,
    port: Option<u16>,
    path: Option<String>,
}

impl RegistryPattern {
    /// The registry host, lowercase (`docker.io` for Docker Hub).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The registry port, when the entry names one. `registry.example.org` and
    /// `registry.example.org:443` are different registries.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The repository path prefix, without leading or trailing `/`, when the entry has one.
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// Whether every image this entry allows is also allowed by `wider`: same host and port,
    /// and `wider` has no path prefix, the same one, or one this entry continues after a `/`.
    /// (`quay.io` covers `quay.io/x`; `quay.io/x` covers neither `quay.io` nor `quay.io/xy`.)
    pub fn is_covered_by(&self, wider: &RegistryPattern) -> bool {
        self.host == wider.host
            && self.port == wider.port
            && match (&wider.path, &self.path) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(outer), Some(inner)) => inner
                    .strip_prefix(outer.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
            }
    }
}

/// Why a string is not a valid [`RegistryPattern`]; each message quotes the entry.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RegistryPatternError {
    /// The entry is the empty string.
    #[error("registry entry is empty; expected host[:port][/path-prefix], for example quay.io")]
    Empty,
    /// The entry starts or ends with whitespace.
    #[error("registry entry {entry:?} has leading or trailing whitespace")]
    Whitespace {
        /// The entry as given.
        entry: String,
    },
    /// The entry is a URL with a scheme such as `https://`.
    #[error(
        "registry entry {entry:?} must not include a URL scheme; write host[:port][/path-prefix], \
         for example {suggestion:?}"
    )]
    Scheme {
        /// The entry as given.
        entry: String,
        /// The entry without its scheme.
        suggestion: String,
    },
    /// The entry has an uppercase letter.
    #[error(
        "registry entry {entry:?} must be lowercase (host names are case-insensitive and \
         repository paths are lowercase)"
    )]
    Uppercase {
        /// The entry as given.
        entry: String,
    },
    /// The host is an IPv6 literal.
    #[error(
        "registry entry {entry:?} has an IPv6 address as host; IPv6 registries are not \
         supported because they cannot be stored in namespace labels"
    )]
    Ipv6 {
        /// The entry as given.
        entry: String,
    },
    /// The host is not a DNS name or an IPv4 address.
    #[error("registry entry {entry:?} has an invalid host {host:?}: {reason}")]
    InvalidHost {
        /// The entry as given.
        entry: String,
        /// The host part of the entry.
        host: String,
        /// The rule the host breaks.
        reason: &'static str,
    },
    /// The port is not a number from 1 to 65535 without leading zeros.
    #[error(
        "registry entry {entry:?} has an invalid port {port:?}: a port is a number from 1 to \
         65535 without leading zeros"
    )]
    InvalidPort {
        /// The entry as given.
        entry: String,
        /// The text after the `:`.
        port: String,
    },
    /// The host has no `.` or port and is not `localhost`, so image references never resolve
    /// to it: a first component like that is a Docker Hub namespace.
    #[error(
        "registry entry {entry:?} has no '.' or port and is not localhost, so no image \
         reference can resolve to it; did you mean {suggestion:?}?"
    )]
    NotARegistry {
        /// The entry as given.
        entry: String,
        /// The same entry as a Docker Hub path prefix.
        suggestion: String,
    },
    /// The path prefix ends with `/`.
    #[error("registry entry {entry:?} ends with '/'; write it as {suggestion:?}")]
    TrailingSlash {
        /// The entry as given.
        entry: String,
        /// The entry without trailing slashes.
        suggestion: String,
    },
    /// The path prefix names a tag or digest.
    #[error(
        "registry entry {entry:?} names a tag or digest; an entry is host[:port][/path-prefix] \
         and allows every tag and digest under it"
    )]
    TagOrDigest {
        /// The entry as given.
        entry: String,
    },
    /// A path component breaks the repository path grammar (an empty component included).
    #[error(
        "registry entry {entry:?} has an invalid path component {component:?}: a component is \
         lowercase letters and digits, separated by one '.', one or two '_', or dashes"
    )]
    InvalidPathComponent {
        /// The entry as given.
        entry: String,
        /// The offending component (empty for `//`).
        component: String,
    },
}

/// Why a host is not a DNS name or IPv4 address, for [`RegistryPatternError::InvalidHost`].
fn host_problem(host: &str) -> Option<&'static str> {
    if host.is_empty() {
        return Some("the host is empty");
    }
    if host.split('.').any(str::is_empty) {
        return Some("a host name has no empty label (no leading, trailing or doubled '.')");
    }
    if !host
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
    {
        return Some("a host name has only lowercase letters, digits, '-' and '.'");
    }
    if !grammar::is_domain_name(host) {
        return Some("a host name label starts and ends with a letter or digit");
    }
    let last = host.rsplit('.').next().unwrap_or(host);
    if last.bytes().all(|c| c.is_ascii_digit() || c == b'-') {
        if host
            .split('.')
            .all(|l| l.bytes().all(|c| c.is_ascii_digit()))
        {
            if !grammar::is_ipv4(host) {
                return Some(
                    "an all-numeric host must be an IPv4 address: four numbers from 0 to 255 \
                     without leading zeros",
                );
            }
        } else {
            return Some("the last label of a host name must contain a letter");
        }
    }
    None
}

impl FromStr for RegistryPattern {
    type Err = RegistryPatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use RegistryPatternError as E;
        let entry = || s.to_owned();

        if s.is_empty() {
            return Err(E::Empty);
        }
        if s.trim() != s {
            return Err(E::Whitespace { entry: entry() });
        }
        if let Some((_, rest)) = s.split_once("://") {
            return Err(E::Scheme {
                entry: entry(),
                suggestion: rest.trim_end_matches('/').to_ascii_lowercase(),
            });
        }
        if s.chars().any(char::is_uppercase) {
            return Err(E::Uppercase { entry: entry() });
        }

        let (host_port, path) = match s.split_once('/') {
            Some((host_port, path)) => (host_port, Some(path)),
            None => (s, None),
        };
        let looks_ipv6 = host_port.starts_with('[')
            || (host_port.matches(':').count() >= 2
                && host_port
                    .bytes()
                    .all(|c| c.is_ascii_hexdigit() || c == b':'));
        if looks_ipv6 {
            return Err(E::Ipv6 { entry: entry() });
        }
        let (host, port) = match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        };
        if let Some(reason) = host_problem(host) {
            return Err(E::InvalidHost {
                entry: entry(),
                host: host.to_owned(),
                reason,
            });
        }
        let port = match port {
            None => None,
            Some(p) => match grammar::parse_port(p) {
                Some(n) if !p.starts_with('0') => Some(n),
                _ => {
                    return Err(E::InvalidPort {
                        entry: entry(),
                        port: p.to_owned(),
                    });
                }
            },
        };
        if let Some(path) = path {
            if path.is_empty() || path.ends_with('/') {
                let trimmed = s.trim_end_matches('/');
                return Err(E::TrailingSlash {
                    entry: entry(),
                    suggestion: trimmed.to_owned(),
                });
            }
            if path.contains([':', '@']) {
                return Err(E::TagOrDigest { entry: entry() });
            }
            if let Some(component) = grammar::invalid_path_component(path) {
                return Err(E::InvalidPathComponent {
                    entry: entry(),
                    component: component.to_owned(),
                });
            }
        }

        if port.is_none() && !host.contains('.') && host != grammar::LOCALHOST {
            return Err(E::NotARegistry {
                entry: entry(),
                suggestion: format!("{}/{}", grammar::DOCKER_HUB, s),
            });
        }

        let host = if host == grammar::LEGACY_DOCKER_HUB && port.is_none() {
            grammar::DOCKER_HUB
        } else {
            host
        };
        Ok(RegistryPattern {
            host: host.to_owned(),
            port,
            path: path.map(str::to_owned),
        })
    }
}

impl fmt::Display for RegistryPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        if let Some(path) = &self.path {
            write!(f, "/{path}")?;
        }
        Ok(())
    }
}

impl Serialize for RegistryPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RegistryPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use regex::Regex;
    use std::sync::LazyLock;

    static RE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(REGISTRY_PATTERN_REGEX).expect("the regex compiles"));

    fn parse(s: &str) -> Result<RegistryPattern, RegistryPatternError> {
        s.parse()
    }

    /// A valid entry: (input, canonical form, host, port, path).
    type Valid = (
        &'static str,
        &'static str,
        &'static str,
        Option<u16>,
        Option<&'static str>,
    );

    /// Valid entries, with their canonical form and parts.
    const VALID: &[Valid] = &[
        ("quay.io", "quay.io", "quay.io", None, None),
        (
            "ghcr.io/wikimedia",
            "ghcr.io/wikimedia",
            "ghcr.io",
            None,
            Some("wikimedia"),
        ),
        (
            "docker-registry.tools.wmflabs.org",
            "docker-registry.tools.wmflabs.org",
            "docker-registry.tools.wmflabs.org",
            None,
            None,
        ),
        ("docker.io", "docker.io", "docker.io", None, None),
        (
            "docker.io/library",
            "docker.io/library",
            "docker.io",
            None,
            Some("library"),
        ),
        ("index.docker.io", "docker.io", "docker.io", None, None),
        (
            "index.docker.io/org",
            "docker.io/org",
            "docker.io",
            None,
            Some("org"),
        ),
        (
            "index.docker.io:443",
            "index.docker.io:443",
            "index.docker.io",
            Some(443),
            None,
        ),
        ("localhost", "localhost", "localhost", None, None),
        (
            "localhost:5000",
            "localhost:5000",
            "localhost",
            Some(5000),
            None,
        ),
        (
            "localhost/team",
            "localhost/team",
            "localhost",
            None,
            Some("team"),
        ),
        (
            "registry:5000",
            "registry:5000",
            "registry",
            Some(5000),
            None,
        ),
        (
            "registry.example.org:1",
            "registry.example.org:1",
            "registry.example.org",
            Some(1),
            None,
        ),
        (
            "example.org:65535",
            "example.org:65535",
            "example.org",
            Some(65535),
            None,
        ),
        (
            "example.org:443/a/b",
            "example.org:443/a/b",
            "example.org",
            Some(443),
            Some("a/b"),
        ),
        ("10.0.0.1", "10.0.0.1", "10.0.0.1", None, None),
        (
            "10.0.0.1:5000/x",
            "10.0.0.1:5000/x",
            "10.0.0.1",
            Some(5000),
            Some("x"),
        ),
        (
            "255.255.255.255",
            "255.255.255.255",
            "255.255.255.255",
            None,
            None,
        ),
        ("0.0.0.0:80", "0.0.0.0:80", "0.0.0.0", Some(80), None),
        (
            "1.2.3.4.nip.io",
            "1.2.3.4.nip.io",
            "1.2.3.4.nip.io",
            None,
            None,
        ),
        ("a.b", "a.b", "a.b", None, None),
        (
            "xn--bcher-kva.example",
            "xn--bcher-kva.example",
            "xn--bcher-kva.example",
            None,
            None,
        ),
        (
            "a-b--c.example.org",
            "a-b--c.example.org",
            "a-b--c.example.org",
            None,
            None,
        ),
        ("example.9a", "example.9a", "example.9a", None, None),
        ("example.9-a", "example.9-a", "example.9-a", None, None),
        ("1a:80", "1a:80", "1a", Some(80), None),
        (
            "registry.example.org:5000/my_team/a__b/c---d/e.f",
            "registry.example.org:5000/my_team/a__b/c---d/e.f",
            "registry.example.org",
            Some(5000),
            Some("my_team/a__b/c---d/e.f"),
        ),
    ];

    /// Invalid entries; every one must also be refused by the regex.
    const INVALID: &[&str] = &[
        "",
        " ",
        " quay.io",
        "quay.io ",
        "quay.io\n",
        "\tquay.io",
        "qu ay.io",
        "https://quay.io",
        "http://quay.io/",
        "oci://quay.io/x",
        "Quay.io",
        "quay.IO",
        "quay.io/Wikimedia",
        "QUAY.IO",
        "[::1]",
        "[::1]:5000",
        "[::1]/x",
        "::1",
        "fe80::1",
        "2001:db8::1:5000",
        "quay",
        "quay/x",
        "library",
        "docker",
        "registry:",
        "registry:0",
        "registry:00",
        "registry:05000",
        "registry:65536",
        "registry:99999",
        "registry:123456",
        "registry:-1",
        "registry:+80",
        "registry:80a",
        "registry:5000:5000",
        "quay.io:",
        "quay.io:0",
        "quay.io:65536",
        ".quay.io",
        "quay.io.",
        "quay..io",
        "-quay.io",
        "quay-.io",
        "quay.-io",
        "quay_io.org",
        "quay.io_",
        "quay.io/",
        "quay.io//",
        "quay.io/x/",
        "quay.io//x",
        "quay.io/x//y",
        "quay.io/x:tag",
        "quay.io/x@sha256:abcd",
        "quay.io/x:",
        "quay.io/-x",
        "quay.io/x-",
        "quay.io/.x",
        "quay.io/x.",
        "quay.io/x..y",
        "quay.io/x._y",
        "quay.io/x___y",
        "quay.io/_x",
        "quay.io/x_",
        "quay.io/x y",
        "quay.io/ü",
        "qüay.io",
        "quay.io?x=1",
        "quay.io#x",
        "user@quay.io",
        "docker-registry.tools.wmflabs.org@evil",
        "1.2.3",
        "1.2.3.4.5",
        "256.0.0.1",
        "1.2.3.256",
        "01.2.3.4",
        "1.2.3.04",
        "10.0.0.1.",
        "1234:5000",
        "1234",
        "a.1",
        "a.1-2",
        "example.123",
        "/",
        "/x",
        ":5000",
        ":5000/x",
        "localhost:",
        "localhost:0",
        "localhost.",
        "*.quay.io",
        "quay.io/*",
        "quay.io\\x",
    ];

    #[test]
    fn valid_entries_parse_to_their_parts() {
        for &(input, canonical, host, port, path) in VALID {
            let p = parse(input).unwrap_or_else(|e| panic!("{input:?} should parse: {e}"));
            assert_eq!(p.to_string(), canonical, "{input}");
            assert_eq!(p.host(), host, "{input}");
            assert_eq!(p.port(), port, "{input}");
            assert_eq!(p.path(), path, "{input}");
            assert_eq!(parse(canonical).as_ref(), Ok(&p), "{canonical} re-parses");
        }
    }

    #[test]
    fn invalid_entries_are_refused() {
        for input in INVALID {
            assert!(
                parse(input).is_err(),
                "{input:?} should be refused, got {:?}",
                parse(input)
            );
        }
    }

    #[test]
    fn regex_agrees_with_from_str_on_the_tables() {
        for &(input, canonical, ..) in VALID {
            assert!(RE.is_match(input), "regex should accept {input:?}");
            assert!(RE.is_match(canonical), "regex should accept {canonical:?}");
        }
        for input in INVALID {
            assert!(!RE.is_match(input), "regex should refuse {input:?}");
        }
    }

    #[test]
    fn regex_is_cel_friendly() {
        // The CRD embeds it in a CEL raw string r'...'.
        assert!(!REGISTRY_PATTERN_REGEX.contains('\''));
        assert!(REGISTRY_PATTERN_REGEX.starts_with('^') && REGISTRY_PATTERN_REGEX.ends_with('$'));
        // RE2 (Go, CEL) has no look-around or backreferences.
        for construct in ["(?=", "(?!", "(?<=", "(?<!", "\\1"] {
            assert!(!REGISTRY_PATTERN_REGEX.contains(construct), "{construct}");
        }
    }

    #[test]
    fn every_port_boundary_agrees() {
        for port in [
            0u32, 1, 9, 10, 99, 100, 999, 1000, 9999, 10000, 59999, 60000, 64999, 65000,
        ]
        .into_iter()
        .chain(65490..=65545)
        .chain([65599, 65600, 69999, 70000, 99999, 100000])
        {
            let entry = format!("registry.example.org:{port}");
            let expected = (1..=65535).contains(&port);
            assert_eq!(parse(&entry).is_ok(), expected, "{entry}");
            assert_eq!(RE.is_match(&entry), expected, "regex {entry}");
        }
    }

    #[test]
    fn every_ipv4_octet_agrees() {
        for octet in 0..=999u32 {
            for entry in [format!("{octet}.0.0.1"), format!("10.0.0.{octet}")] {
                let expected = octet <= 255;
                assert_eq!(parse(&entry).is_ok(), expected, "{entry}");
                assert_eq!(RE.is_match(&entry), expected, "regex {entry}");
            }
        }
        for padded in ["00.0.0.1", "001.0.0.1", "10.0.0.010"] {
            assert!(parse(padded).is_err() && !RE.is_match(padded), "{padded}");
        }
    }

    #[test]
    fn error_messages_name_the_entry_and_the_problem() {
        let cases: &[(&str, &str)] = &[
            (
                "quay",
                "registry entry \"quay\" has no '.' or port and is not localhost, so no image \
                 reference can resolve to it; did you mean \"docker.io/quay\"?",
            ),
            ("Quay.io", "\"Quay.io\" must be lowercase"),
            ("https://quay.io/", "must not include a URL scheme"),
            ("https://quay.io/", "for example \"quay.io\""),
            ("[::1]:5000", "IPv6"),
            ("quay.io:0", "invalid port \"0\""),
            ("quay.io:05000", "without leading zeros"),
            ("quay.io/x/", "ends with '/'; write it as \"quay.io/x\""),
            ("quay.io/x:1.0", "names a tag or digest"),
            ("quay.io/x__-y", "invalid path component \"x__-y\""),
            ("quay.io//x", "invalid path component \"\""),
            ("quay_io.org", "invalid host \"quay_io.org\""),
            ("300.1.1.1", "must be an IPv4 address"),
            (
                "example.123",
                "last label of a host name must contain a letter",
            ),
            ("", "registry entry is empty"),
            (" quay.io", "whitespace"),
        ];
        for &(input, needle) in cases {
            let message = parse(input).expect_err(input).to_string();
            assert!(
                message.contains(needle),
                "{input:?}: {message:?} lacks {needle:?}"
            );
        }
    }

    #[test]
    fn error_variants() {
        assert_eq!(parse(""), Err(RegistryPatternError::Empty));
        assert_eq!(
            parse("quay/x"),
            Err(RegistryPatternError::NotARegistry {
                entry: "quay/x".into(),
                suggestion: "docker.io/quay/x".into()
            })
        );
        assert_eq!(
            parse("quay.io:99999"),
            Err(RegistryPatternError::InvalidPort {
                entry: "quay.io:99999".into(),
                port: "99999".into()
            })
        );
        assert!(matches!(
            parse("fe80::1"),
            Err(RegistryPatternError::Ipv6 { .. })
        ));
        assert!(matches!(
            parse("quay.io/x@sha256:0"),
            Err(RegistryPatternError::TagOrDigest { .. })
        ));
    }

    #[test]
    fn serde_uses_the_canonical_string_and_the_same_errors() {
        let p: RegistryPattern = serde_json::from_str("\"index.docker.io/org\"").expect("parses");
        assert_eq!(p.to_string(), "docker.io/org");
        assert_eq!(
            serde_json::to_string(&p).expect("serializes"),
            "\"docker.io/org\""
        );
        let list: Vec<RegistryPattern> =
            serde_json::from_str(r#"["quay.io","localhost:5000/a"]"#).expect("parses");
        assert_eq!(list[1].port(), Some(5000));
        let err = serde_json::from_str::<RegistryPattern>("\"quay\"").expect_err("refused");
        assert!(
            err.to_string().contains("did you mean \"docker.io/quay\"?"),
            "{err}"
        );
        assert!(serde_json::from_str::<RegistryPattern>("42").is_err());
    }

    #[test]
    fn ordering_is_by_host_then_port_then_path() {
        let mut entries: Vec<RegistryPattern> = [
            "quay.io/b",
            "quay.io:443",
            "ghcr.io",
            "quay.io",
            "quay.io/a",
        ]
        .iter()
        .map(|s| parse(s).expect("valid"))
        .collect();
        entries.sort();
        let sorted: Vec<String> = entries.iter().map(ToString::to_string).collect();
        assert_eq!(
            sorted,
            [
                "ghcr.io",
                "quay.io",
                "quay.io/a",
                "quay.io/b",
                "quay.io:443"
            ]
        );
    }

    #[test]
    fn grammar_helpers() {
        for ok in [
            "a", "a1", "abc", "a.b", "a_b", "a__b", "a-b", "a---b", "0", "a.b_c-d",
        ] {
            assert!(grammar::is_path_component(ok), "{ok}");
        }
        for bad in [
            "", "A", "a.", ".a", "a..b", "a___b", "a_.b", "a-", "-a", "a/b", "a:b", "é",
        ] {
            assert!(!grammar::is_path_component(bad), "{bad}");
        }
        for ok in ["a", "A", "a-b", "A--9", "0"] {
            assert!(grammar::is_domain_component(ok), "{ok}");
        }
        for bad in ["", "-", "a-", "-a", "a_b", "a.b", "é"] {
            assert!(!grammar::is_domain_component(bad), "{bad}");
        }
        assert!(grammar::is_domain_name("Example.COM"));
        assert!(!grammar::is_domain_name("example..com"));
        assert_eq!(grammar::parse_port("5000"), Some(5000));
        assert_eq!(grammar::parse_port("05000"), Some(5000));
        assert_eq!(grammar::parse_port("000000000000000065535"), Some(65535));
        for bad in [
            "",
            "0",
            "000",
            "65536",
            "99999999999999999999",
            "-1",
            "+1",
            "1a",
            " 1",
        ] {
            assert_eq!(grammar::parse_port(bad), None, "{bad}");
        }
        assert!(grammar::is_ipv6_literal("[::1]"));
        assert!(grammar::is_ipv6_literal("[2001:DB8::1]"));
        for bad in ["[]", "::1", "[::1", "[::1%eth0]", "[::ffff:1.2.3.4]"] {
            assert!(!grammar::is_ipv6_literal(bad), "{bad}");
        }
        assert!(grammar::is_ipv4("192.168.0.1"));
        for bad in [
            "1.2.3",
            "1.2.3.4.5",
            "1.2.3.256",
            "1..3.4",
            "01.2.3.4",
            "a.b.c.d",
            "1.2.3.4.",
        ] {
            assert!(!grammar::is_ipv4(bad), "{bad}");
        }
        assert_eq!(grammar::invalid_path_component("a/b/c"), None);
        assert_eq!(grammar::invalid_path_component("a//c"), Some(""));
        assert_eq!(grammar::invalid_path_component("a/B/c"), Some("B"));
    }

    /// Strings close to valid entries: fragments of real entries and common mistakes.
    fn entry_like() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("quay".to_owned()),
            Just("io".to_owned()),
            Just("localhost".to_owned()),
            Just("docker".to_owned()),
            Just("index".to_owned()),
            Just("org".to_owned()),
            Just("a".to_owned()),
            Just("Z".to_owned()),
            Just("9".to_owned()),
            Just("255".to_owned()),
            Just("256".to_owned()),
            Just("0".to_owned()),
            Just("65535".to_owned()),
            Just("65536".to_owned()),
            Just(".".to_owned()),
            Just(":".to_owned()),
            Just("/".to_owned()),
            Just("-".to_owned()),
            Just("_".to_owned()),
            Just("__".to_owned()),
            Just("@".to_owned()),
            Just("[".to_owned()),
            Just("]".to_owned()),
            Just(" ".to_owned()),
            Just("://".to_owned()),
            "[a-z0-9]{1,4}",
            "[0-9]{1,6}",
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat())
    }

    /// Structurally valid entries built from the grammar.
    fn valid_entry() -> impl Strategy<Value = String> {
        let label = "[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?";
        let tld =
            "[a-z]([a-z0-9-]{0,4}[a-z0-9])?|[0-9][a-z0-9-]{0,3}[a-z]([a-z0-9-]{0,3}[a-z0-9])?";
        let ipv4 = (0u8..=255, 0u8..=255, 0u8..=255, 0u8..=255)
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}"));
        let dotted = (proptest::collection::vec(label, 1..4), tld)
            .prop_map(|(labels, tld)| format!("{}.{tld}", labels.join(".")));
        let single = tld.prop_map(|s| s.to_string());
        let port = 1u16..=65535;
        let component = "[a-z0-9]{1,3}(([._]|__|-{1,3})[a-z0-9]{1,3}){0,2}";
        let path = proptest::collection::vec(component, 0..4);
        prop_oneof![
            (prop_oneof![ipv4.clone(), dotted.clone(), single], port)
                .prop_map(|(h, p)| format!("{h}:{p}")),
            ipv4,
            dotted,
            Just("localhost".to_owned()),
        ]
        .prop_flat_map(move |host| {
            path.clone().prop_map(move |components| {
                let mut s = host.clone();
                for c in components {
                    s.push('/');
                    s.push_str(&c);
                }
                s
            })
        })
    }

    fn check_agreement(s: &str) -> Result<(), TestCaseError> {
        let parsed = parse(s);
        prop_assert_eq!(
            RE.is_match(s),
            parsed.is_ok(),
            "regex and FromStr disagree on {:?}: {:?}",
            s,
            parsed
        );
        if let Ok(p) = parsed {
            let canonical = p.to_string();
            prop_assert!(RE.is_match(&canonical));
            prop_assert_eq!(parse(&canonical), Ok(p));
        }
        Ok(())
    }

    #[test]
    fn coverage_follows_path_boundaries() {
        let cases = [
            ("quay.io/x", "quay.io", true),
            ("quay.io", "quay.io", true),
            ("quay.io/x/y", "quay.io/x", true),
            ("quay.io/x", "quay.io/x", true),
            ("quay.io", "quay.io/x", false),
            ("quay.io/xy", "quay.io/x", false),
            ("quay.io:443", "quay.io", false),
            ("quay.io", "quay.io:443", false),
            ("ghcr.io", "quay.io", false),
            (
                "registry.example.org:5000/a",
                "registry.example.org:5000",
                true,
            ),
        ];
        for (inner, outer, want) in cases {
            let inner: RegistryPattern = inner.parse().unwrap();
            let outer: RegistryPattern = outer.parse().unwrap();
            assert_eq!(inner.is_covered_by(&outer), want, "{inner} in {outer}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::with_cases(4096)
        })]

        #[test]
        fn regex_agrees_on_entry_like_strings(s in entry_like()) {
            check_agreement(&s)?;
        }

        #[test]
        fn regex_agrees_on_the_entry_alphabet(s in "[a-zA-Z0-9.:/_@\\[\\] -]{0,24}") {
            check_agreement(&s)?;
        }

        #[test]
        fn regex_agrees_on_arbitrary_strings(s in "\\PC{0,24}") {
            check_agreement(&s)?;
        }

        #[test]
        fn generated_valid_entries_are_accepted(s in valid_entry()) {
            prop_assert!(parse(&s).is_ok(), "{:?}: {:?}", s, parse(&s));
            check_agreement(&s)?;
        }
    }
}

//! What a grant may require of an image beyond its registry (DESIGN §12): what it is built on,
//! that it is referenced by digest, and where its source lives; and the namespace annotation
//! that carries the effective requirements from the controller to the webhook.
//!
//! The checks themselves are in `byoc_policy::requirement`; this module holds the types, their
//! validation (the same rules as the CRD's CEL), the `{namespace}` / `{tool}` templates and the
//! annotation format.

use std::collections::BTreeMap;
use std::fmt;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::RegistryPattern;
use crate::labels::{Expiry, REQUIREMENTS_ANNOTATION as ANNOTATION};

/// The most entries of `builtOn` and of `sourceFrom`.
pub const MAX_ENTRIES: usize = 16;

/// The longest `builtOn` or `sourceFrom` entry.
pub const MAX_ENTRY_LEN: usize = 255;

/// The tool prefix `{tool}` strips from the namespace name by default.
pub const DEFAULT_TOOL_PREFIX: &str = "tool-";

/// Requirements an image must meet to be admitted through a grant (all that are set must hold).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Requirements {
    /// Allowed base images, each `registry/repository` with an optional `:tag` or
    /// `@sha256:<digest>`. An image meets it when its layer list (the manifest's layer digests
    /// and the config's `rootfs.diff_ids`) begins with the complete layer list of an image of
    /// one of them: the one the tag (default `latest`) points to now, or an older one the
    /// platform still lists. Labels and annotations are never taken as proof. For a multi-arch
    /// index, every image the nodes could run must meet it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 255)), extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new(built_on_rule()).message(BUILT_ON_MESSAGE))]
    pub built_on: Vec<BaseImage>,

    /// Images must be referenced by digest (`image@sha256:...`); a tag is refused with the
    /// digest it points to now, ready to copy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_digest: bool,

    /// Allowed prefixes of the image config label `org.opencontainers.image.source`, matched on
    /// `/` boundaries, each an `https://` URL that may name `{namespace}` or `{tool}` (the
    /// namespace without the tool prefix, `tool-` by default), for example
    /// `https://gitlab.wikimedia.org/toolforge-repos/{tool}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 255)), extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new(SOURCE_FROM_RULE).message(SOURCE_FROM_MESSAGE))]
    #[x_kube(validation = Rule::new(SOURCE_FROM_DOTS_RULE).message(SOURCE_FROM_MESSAGE))]
    pub source_from: Vec<String>,
}

/// A base image as written in `builtOn`: `registry/repository[:tag|@sha256:<hex>]`.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct BaseImage(pub String);

/// Which images of a base repository a `builtOn` entry names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pin {
    /// No tag or digest: the repository's `latest`, and every image of it the platform lists.
    Repository,
    /// The image the tag points to now, and the older images of that tag the platform lists.
    Tag(String),
    /// Exactly this image (`sha256:<hex>`).
    Digest(String),
}

/// A parsed [`BaseImage`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BasePattern {
    /// The repository, `host[:port]/path` in canonical form (it always has a path).
    pub repository: RegistryPattern,
    /// The tag or digest, if any.
    pub pin: Pin,
}

impl fmt::Display for BasePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repository)?;
        match &self.pin {
            Pin::Repository => Ok(()),
            Pin::Tag(tag) => write!(f, ":{tag}"),
            Pin::Digest(digest) => write!(f, "@{digest}"),
        }
    }
}

impl BaseImage {
    /// Reads the entry; the same rule as the CRD's [`built_on_rule`].
    pub fn parse(&self) -> Result<BasePattern, InvalidRequirement> {
        let text = &self.0;
        let invalid = |why: &str| InvalidRequirement::BuiltOn {
            entry: text.clone(),
            why: why.to_owned(),
        };
        if text.len() > MAX_ENTRY_LEN {
            return Err(invalid("it is longer than 255 characters"));
        }
        let (name, pin) = if let Some((name, digest)) = text.split_once('@') {
            let hex = digest
                .strip_prefix("sha256:")
                .ok_or_else(|| invalid("a digest must be sha256:<64 lowercase hex digits>"))?;
            if hex.len() != 64 || !hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(invalid("a digest must be sha256:<64 lowercase hex digits>"));
            }
            (name, Pin::Digest(digest.to_owned()))
        } else {
            match text.rsplit_once(':') {
                // A ':' after the last '/' starts a tag; before it, it is the registry port.
                Some((name, tag)) if !tag.contains('/') => {
                    if !is_tag(tag) {
                        return Err(invalid(
                            "a tag is 1 to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'",
                        ));
                    }
                    (name, Pin::Tag(tag.to_owned()))
                }
                _ => (text.as_str(), Pin::Repository),
            }
        };
        let repository: RegistryPattern = name.parse().map_err(|e| invalid(&format!("{e}")))?;
        if repository.path().is_none() {
            return Err(invalid("it names a registry but no repository"));
        }
        Ok(BasePattern { repository, pin })
    }
}

/// Whether `s` is a tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn is_tag(s: &str) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// The CEL rule on `builtOn`: every entry is a registry entry with a repository path and an
/// optional tag or sha256 digest.
pub fn built_on_rule() -> String {
    let repository = crate::REGISTRY_PATTERN_REGEX
        .strip_suffix(")*$")
        .expect("the registry pattern ends with its optional path");
    format!(
        "self.all(e, e.matches(r'{repository})+(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}|@sha256:[0-9a-f]{{64}})?$'))"
    )
}

/// The message of [`built_on_rule`].
pub const BUILT_ON_MESSAGE: &str = "each builtOn entry must be registry/repository with an optional :tag or @sha256:<64 hex digits>, in lowercase, for example tools-harbor.wmcloud.org/toolforge/heroku-runner";

/// The CEL rule on `sourceFrom`: `https://host[:port]` followed by path segments of URL-safe
/// characters or the templates `{namespace}` and `{tool}`, without a trailing `/`.
pub const SOURCE_FROM_RULE: &str = r"self.all(e, e.matches(r'^https://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?(/([A-Za-z0-9._~-]|\{namespace\}|\{tool\})+)*$'))";

/// The CEL rule on `sourceFrom` that refuses `.` and `..` path segments.
pub const SOURCE_FROM_DOTS_RULE: &str = r"self.all(e, !e.matches(r'/\.\.?(/|$)'))";

/// The message of [`SOURCE_FROM_RULE`] and [`SOURCE_FROM_DOTS_RULE`].
pub const SOURCE_FROM_MESSAGE: &str = "each sourceFrom entry must be an https:// URL with a lowercase host, no trailing '/', no '.' or '..' segments, no query or fragment, and no templates other than {namespace} and {tool}, for example https://gitlab.wikimedia.org/toolforge-repos/{tool}";

/// A requirement that does not follow the rules of the CRD.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum InvalidRequirement {
    /// A `builtOn` entry does not parse.
    #[error("builtOn entry {entry:?} is invalid: {why}")]
    BuiltOn {
        /// The entry.
        entry: String,
        /// What is wrong with it.
        why: String,
    },
    /// A `sourceFrom` entry does not parse.
    #[error("sourceFrom entry {entry:?} is invalid: {SOURCE_FROM_MESSAGE}")]
    SourceFrom {
        /// The entry.
        entry: String,
    },
    /// A list has too many entries.
    #[error("{field} has {count} entries, more than {MAX_ENTRIES}")]
    TooMany {
        /// `builtOn` or `sourceFrom`.
        field: &'static str,
        /// How many it has.
        count: usize,
    },
}

impl Requirements {
    /// Whether nothing is required.
    pub fn is_empty(&self) -> bool {
        self.built_on.is_empty() && !self.require_digest && self.source_from.is_empty()
    }

    /// Checks every entry as the CRD does; returns the parsed `builtOn` entries.
    pub fn validate(&self) -> Result<Vec<BasePattern>, InvalidRequirement> {
        for (field, count) in [
            ("builtOn", self.built_on.len()),
            ("sourceFrom", self.source_from.len()),
        ] {
            if count > MAX_ENTRIES {
                return Err(InvalidRequirement::TooMany { field, count });
            }
        }
        if let Some(entry) = self.source_from.iter().find(|e| !is_source_prefix(e)) {
            return Err(InvalidRequirement::SourceFrom {
                entry: entry.clone(),
            });
        }
        self.built_on.iter().map(BaseImage::parse).collect()
    }
}

/// Whether `entry` is a valid `sourceFrom` entry: the rule of [`SOURCE_FROM_RULE`] and
/// [`SOURCE_FROM_DOTS_RULE`].
pub fn is_source_prefix(entry: &str) -> bool {
    let Some(rest) = entry.strip_prefix("https://") else {
        return false;
    };
    if entry.len() > MAX_ENTRY_LEN {
        return false;
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
        && host.as_bytes()[0].is_ascii_alphanumeric()
        && host.as_bytes()[host.len() - 1].is_ascii_alphanumeric();
    let port_ok =
        port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|c| c.is_ascii_digit()));
    let segments_ok = path.is_empty()
        || path.strip_prefix('/').is_some_and(|path| {
            path.split('/').all(|segment| {
                let plain = segment.replace("{namespace}", "").replace("{tool}", "");
                !segment.is_empty()
                    && segment != "."
                    && segment != ".."
                    && plain
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"._~-".contains(&c))
            })
        });
    host_ok && port_ok && segments_ok
}

/// A template that cannot be expanded for a namespace.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum TemplateError {
    /// The namespace is not a DNS-1123 label, so it cannot be put in a URL or a path.
    #[error("namespace {0:?} is not a namespace name")]
    Namespace(String),
    /// `{tool}` is used but the namespace is not a tool's (no prefix, or nothing after it).
    #[error(
        "{{tool}} names the namespace without its prefix {prefix:?}, and namespace {namespace:?} has no tool name after it"
    )]
    NoTool {
        /// The namespace.
        namespace: String,
        /// The configured tool prefix.
        prefix: String,
    },
}

/// A placeholder of a template: `{namespace}` or `{tool}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placeholder {
    /// `{namespace}`: the namespace.
    Namespace,
    /// `{tool}`: the namespace without the tool prefix.
    Tool,
}

impl Placeholder {
    /// Every placeholder, as written in templates.
    pub const ALL: [(&'static str, Self); 2] =
        [("{namespace}", Self::Namespace), ("{tool}", Self::Tool)];

    /// What this placeholder stands for in `namespace`, without allocating: `None` when the
    /// namespace is not a DNS-1123 label or, for `{tool}`, does not start with `tool_prefix`
    /// followed by a tool name that is itself a DNS-1123 label (never an empty one, which would
    /// widen a prefix to every tool). Neither value can hold `/`, `.` or anything else that
    /// changes what a prefix covers.
    pub fn value<'n>(self, namespace: &'n str, tool_prefix: &str) -> Option<&'n str> {
        if !crate::grant::is_dns1123_label(namespace) {
            return None;
        }
        match self {
            Self::Namespace => Some(namespace),
            Self::Tool => namespace
                .strip_prefix(tool_prefix)
                .filter(|t| crate::grant::is_dns1123_label(t)),
        }
    }
}

/// Expands `{namespace}` and `{tool}` in `template` for `namespace`, by the rules of
/// [`Placeholder::value`]; `{tool}` is the namespace without `tool_prefix`.
pub fn expand(template: &str, namespace: &str, tool_prefix: &str) -> Result<String, TemplateError> {
    if !crate::grant::is_dns1123_label(namespace) {
        return Err(TemplateError::Namespace(namespace.to_owned()));
    }
    let mut text = template.to_owned();
    for (written, placeholder) in Placeholder::ALL {
        if !text.contains(written) {
            continue;
        }
        let value =
            placeholder
                .value(namespace, tool_prefix)
                .ok_or_else(|| TemplateError::NoTool {
                    namespace: namespace.to_owned(),
                    prefix: tool_prefix.to_owned(),
                })?;
        text = text.replace(written, value);
    }
    Ok(text)
}

/// The version of the annotation format this code writes and reads.
pub const ANNOTATION_VERSION: u32 = 1;

/// The longest annotation value read (Kubernetes allows 256 KiB for all annotations together).
pub const MAX_ANNOTATION_BYTES: usize = 64 * 1024;

/// The most registries, and alternatives per registry, in the annotation.
pub const MAX_ANNOTATION_ENTRIES: usize = 256;

/// The value of the [`REQUIREMENTS_ANNOTATION`](crate::labels::REQUIREMENTS_ANNOTATION): per registry allowance, the grants that allow it.
///
/// ```json
/// {"version":1,"registries":{
///   "quay.io/wikimedia":[{"expires":"never","requirements":{"builtOn":["tools-harbor.wmcloud.org/toolforge/heroku-runner"]}}],
///   "any":[{"expires":"20270331T000000Z","requirements":{"requireDigest":true}}]}}
/// ```
///
/// A key is a registry entry in canonical form, or `any` for the "any registry" allowance (the
/// keys of the byoc labels without their prefix, unencoded). Its value lists the active grants
/// that allow it, each with its expiry (the label format) and its requirements: an image is
/// admitted through the entry when one alternative is active and its requirements hold (one
/// without requirements holds always). An allowance without a key has no requirements; the
/// controller writes a key for every allowance that has a grant with requirements, in the same
/// patch as the labels. Unknown fields are skipped; a new kind of requirement is a new version,
/// which older readers refuse.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NamespaceRequirements {
    /// The format version, [`ANNOTATION_VERSION`].
    pub version: u32,
    /// Per allowance key, its alternatives.
    pub registries: BTreeMap<String, Vec<Alternative>>,
}

/// One grant's part of an allowance in [`NamespaceRequirements`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Alternative {
    /// When it stops applying, as the byoc labels write it (`never` or `20270331T000000Z`).
    #[serde(with = "expiry")]
    pub expires: Expiry,
    /// What it requires; absent for a grant without requirements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirements: Option<Requirements>,
}

mod expiry {
    use super::Expiry;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(e: &Expiry, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&e.to_label_value())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Expiry, D::Error> {
        let text = String::deserialize(d)?;
        Expiry::from_label_value(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "expires {text:?} is neither 'never' nor a time like 20270331T000000Z"
            ))
        })
    }
}

/// A requirements annotation that cannot be used. The webhook then admits nothing through the
/// namespace's grants.
#[derive(Debug, Error)]
pub enum AnnotationError {
    /// The value is longer than [`MAX_ANNOTATION_BYTES`].
    #[error("annotation {ANNOTATION} is {0} bytes long, more than {MAX_ANNOTATION_BYTES}")]
    TooLong(usize),
    /// It is not JSON of the expected shape.
    #[error("annotation {ANNOTATION} does not read: {0}")]
    Json(#[from] serde_json::Error),
    /// It has a version this code does not read.
    #[error(
        "annotation {ANNOTATION} has format version {0}; this version of byoc-operator reads version {ANNOTATION_VERSION}"
    )]
    Version(u32),
    /// A key is neither `any` nor a canonical registry entry.
    #[error("annotation {ANNOTATION}: key {0:?} is neither 'any' nor a registry entry")]
    Key(String),
    /// Too many registries, or too many alternatives for one.
    #[error("annotation {ANNOTATION} has more than {MAX_ANNOTATION_ENTRIES} {0}")]
    TooMany(&'static str),
    /// A requirement breaks the CRD's rules.
    #[error("annotation {ANNOTATION}: {key}: {error}")]
    Requirement {
        /// The registry key.
        key: String,
        /// What is wrong.
        error: InvalidRequirement,
    },
}

/// The requirements of one allowance at some instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effective<'a> {
    /// An active grant without requirements allows it, or no grant with requirements does.
    Unconditional,
    /// It is allowed when one of these holds (none: nothing is admitted through it).
    AnyOf(Vec<&'a Requirements>),
}

impl NamespaceRequirements {
    /// The annotation key of the "any registry" allowance.
    pub const ANY: &str = "any";

    /// Reads an annotation value: bounded in bytes and counts, version checked, every
    /// requirement validated as the CRD validates it.
    pub fn read(text: &str) -> Result<Self, AnnotationError> {
        if text.len() > MAX_ANNOTATION_BYTES {
            return Err(AnnotationError::TooLong(text.len()));
        }
        // serde_json skips unknown fields iteratively; the known shape is four levels deep.
        let value: Self = serde_json::from_str(text)?;
        if value.version != ANNOTATION_VERSION {
            return Err(AnnotationError::Version(value.version));
        }
        if value.registries.len() > MAX_ANNOTATION_ENTRIES {
            return Err(AnnotationError::TooMany("registries"));
        }
        for (key, alternatives) in &value.registries {
            if key != Self::ANY
                && key
                    .parse::<RegistryPattern>()
                    .map_or(true, |p| p.to_string() != *key)
            {
                return Err(AnnotationError::Key(key.clone()));
            }
            if alternatives.len() > MAX_ANNOTATION_ENTRIES {
                return Err(AnnotationError::TooMany("alternatives for one registry"));
            }
            for requirements in alternatives.iter().filter_map(|a| a.requirements.as_ref()) {
                requirements
                    .validate()
                    .map_err(|error| AnnotationError::Requirement {
                        key: key.clone(),
                        error,
                    })?;
            }
        }
        Ok(value)
    }

    /// The annotation value.
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).expect("the annotation serializes")
    }

    /// The requirements of an allowance at `now`: `None` for "any registry", else the entry.
    pub fn effective_at(
        &self,
        registry: Option<&RegistryPattern>,
        now: jiff::Timestamp,
    ) -> Effective<'_> {
        let key = registry.map_or_else(|| Self::ANY.to_owned(), ToString::to_string);
        let Some(alternatives) = self.registries.get(&key) else {
            return Effective::Unconditional;
        };
        let mut any_of = Vec::new();
        for alternative in alternatives.iter().filter(|a| a.expires.is_active_at(now)) {
            match &alternative.requirements {
                Some(r) if !r.is_empty() => any_of.push(r),
                _ => return Effective::Unconditional,
            }
        }
        Effective::AnyOf(any_of)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(s: &str) -> Result<String, InvalidRequirement> {
        BaseImage(s.to_owned()).parse().map(|p| p.to_string())
    }

    fn cel_regex(rule: &str) -> regex::Regex {
        let start = rule.find("r'").expect("a raw string") + 2;
        let end = rule.rfind("'").expect("its end");
        regex::Regex::new(&rule[start..end]).expect("the rule's regex compiles")
    }

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn base_images_parse_as_the_crd_accepts_them() {
        let re = cel_regex(&built_on_rule());
        let digest = format!("quay.io/a/b@sha256:{HEX}");
        let good = [
            "tools-harbor.wmcloud.org/toolforge/heroku-runner",
            "tools-harbor.wmcloud.org/toolforge/heroku-runner:22",
            "registry.example.org:5000/team/base:v1.2_x",
            "localhost:5000/base",
            digest.as_str(),
        ];
        let bad = [
            "quay.io",                 // no repository
            "heroku-runner",           // no registry
            "Quay.io/a",               // uppercase
            "quay.io/a:",              // empty tag
            "quay.io/a:-x",            // tag starts with '-'
            "quay.io/a@sha256:abc",    // short digest
            "quay.io/a:1@sha256:0123", // tag and digest
            "quay.io/a/",              // trailing slash
            "https://quay.io/a",       // a URL
            "quay.io/a b",             // space
        ];
        for entry in good {
            assert_eq!(base(entry).as_deref(), Ok(entry), "{entry}");
            assert!(re.is_match(entry), "the CRD refuses {entry}");
        }
        for entry in bad {
            assert!(base(entry).is_err(), "{entry} parsed");
            assert!(!re.is_match(entry), "the CRD accepts {entry}");
        }
        let pattern = BaseImage("quay.io/a:1".into()).parse().unwrap();
        assert_eq!(pattern.pin, Pin::Tag("1".into()));
        assert_eq!(pattern.repository.path(), Some("a"));
        // As in registry entries, `index.docker.io` is `docker.io`.
        assert_eq!(
            base("index.docker.io/library/debian").as_deref(),
            Ok("docker.io/library/debian")
        );
        let port = BaseImage("localhost:5000/base".into()).parse().unwrap();
        assert_eq!(port.pin, Pin::Repository);
    }

    #[test]
    fn source_prefixes_are_checked_as_the_crd_checks_them() {
        let re = cel_regex(SOURCE_FROM_RULE);
        let dots = cel_regex(SOURCE_FROM_DOTS_RULE);
        let crd = |e: &str| re.is_match(e) && !dots.is_match(e);
        let good = [
            "https://gitlab.wikimedia.org/toolforge-repos/{tool}",
            "https://gitlab.wikimedia.org/toolforge-repos/{namespace}-bot",
            "https://github.com",
            "https://git.example.org:8443/a/b.c~d",
        ];
        let bad = [
            "http://gitlab.wikimedia.org/x",
            "https://gitlab.wikimedia.org/x/",
            "https://gitlab.wikimedia.org/x/../y",
            "https://gitlab.wikimedia.org/./y",
            "https://gitlab.wikimedia.org/{user}",
            "https://gitlab.wikimedia.org/x?y",
            "https://gitlab.wikimedia.org/x#y",
            "https://user@gitlab.wikimedia.org/x",
            "https://GitLab.wikimedia.org/x",
            "https://{tool}.example.org/x",
            "https://",
            "gitlab.wikimedia.org/x",
        ];
        for entry in good {
            assert!(is_source_prefix(entry), "{entry}");
            assert!(crd(entry), "the CRD refuses {entry}");
        }
        for entry in bad {
            assert!(!is_source_prefix(entry), "{entry} accepted");
            assert!(!crd(entry), "the CRD accepts {entry}");
        }
    }

    #[test]
    fn templates_expand_only_safe_names() {
        let t = "https://gitlab.wikimedia.org/toolforge-repos/{tool}";
        assert_eq!(
            expand(t, "tool-foo", DEFAULT_TOOL_PREFIX).unwrap(),
            "https://gitlab.wikimedia.org/toolforge-repos/foo"
        );
        assert_eq!(
            expand("x/{namespace}/{tool}", "tool-a-b", "tool-").unwrap(),
            "x/tool-a-b/a-b"
        );
        assert_eq!(expand("plain", "other", "tool-").unwrap(), "plain");
        for namespace in ["tool-../x", "tool-a/b", "tool-a.b", "", "Tool-a"] {
            assert_eq!(
                expand(t, namespace, "tool-"),
                Err(TemplateError::Namespace(namespace.into())),
                "{namespace:?}"
            );
        }
        // No tool name: an empty one would widen the prefix to every tool's repositories.
        for namespace in ["tool-", "other", "tool"] {
            assert!(
                matches!(
                    expand(t, namespace, "tool-"),
                    Err(TemplateError::NoTool { .. }) | Err(TemplateError::Namespace(_))
                ),
                "{namespace:?}"
            );
        }
        assert!(expand("{namespace}", "tool-x", "tool-").is_ok());
    }

    #[test]
    fn placeholder_values() {
        use Placeholder::{Namespace, Tool};
        // (namespace, {namespace}, {tool})
        let cases = [
            ("tool-a", Some("tool-a"), Some("a")),
            ("tool-a-b", Some("tool-a-b"), Some("a-b")),
            ("default", Some("default"), None),
            ("tool", Some("tool"), None),
            ("tool--a", Some("tool--a"), None),
            ("tool-", None, None),
            ("Tool-a", None, None),
            ("tool-a/b", None, None),
            ("", None, None),
        ];
        for (namespace, ns, tool) in cases {
            assert_eq!(Namespace.value(namespace, "tool-"), ns, "{namespace:?}");
            assert_eq!(Tool.value(namespace, "tool-"), tool, "{namespace:?}");
        }
    }

    #[test]
    fn requirements_validate() {
        let mut r = Requirements {
            built_on: vec![BaseImage("quay.io/a/b:1".into())],
            require_digest: true,
            source_from: vec!["https://example.org/{tool}".into()],
        };
        assert_eq!(r.validate().unwrap().len(), 1);
        r.source_from.push("ftp://x".into());
        assert!(matches!(
            r.validate(),
            Err(InvalidRequirement::SourceFrom { .. })
        ));
        r.source_from.clear();
        r.built_on = vec![BaseImage("quay.io/a".into()); 17];
        assert!(matches!(
            r.validate(),
            Err(InvalidRequirement::TooMany { count: 17, .. })
        ));
        assert!(Requirements::default().is_empty());
    }

    fn annotation() -> NamespaceRequirements {
        let required = Requirements {
            require_digest: true,
            ..Requirements::default()
        };
        NamespaceRequirements {
            version: 1,
            registries: BTreeMap::from([
                (
                    "quay.io/wikimedia".to_owned(),
                    vec![
                        Alternative {
                            expires: Expiry::Never,
                            requirements: Some(required.clone()),
                        },
                        Alternative {
                            expires: Expiry::At("2027-01-01T00:00:00Z".parse().unwrap()),
                            requirements: None,
                        },
                    ],
                ),
                (
                    "any".to_owned(),
                    vec![Alternative {
                        expires: Expiry::Never,
                        requirements: Some(required),
                    }],
                ),
            ]),
        }
    }

    #[test]
    fn the_annotation_round_trips_and_expires_alternatives() {
        let a = annotation();
        let text = a.to_annotation();
        assert!(text.contains(r#""expires":"20270101T000000Z""#), "{text}");
        assert_eq!(NamespaceRequirements::read(&text).unwrap(), a);
        let quay: RegistryPattern = "quay.io/wikimedia".parse().unwrap();
        let before = "2026-06-01T00:00:00Z".parse().unwrap();
        let after = "2027-06-01T00:00:00Z".parse().unwrap();
        // An active grant without requirements makes the allowance unconditional.
        assert_eq!(
            a.effective_at(Some(&quay), before),
            Effective::Unconditional
        );
        assert!(matches!(a.effective_at(Some(&quay), after), Effective::AnyOf(r) if r.len() == 1));
        assert!(matches!(a.effective_at(None, after), Effective::AnyOf(r) if r.len() == 1));
        let other: RegistryPattern = "ghcr.io".parse().unwrap();
        assert_eq!(
            a.effective_at(Some(&other), after),
            Effective::Unconditional
        );
    }

    #[test]
    fn bad_annotations_give_clear_errors() {
        let good = annotation().to_annotation();
        let cases: Vec<(String, &str)> = vec![
            (
                good.replace(r#""version":1"#, r#""version":2"#),
                "format version 2",
            ),
            (good.replace("quay.io/wikimedia", "Quay"), "key \"Quay\""),
            (good.replace(r#""never""#, r#""forever""#), "\"forever\""),
            (
                good.replace(r#""requireDigest":true"#, r#""builtOn":["x"]"#),
                "builtOn entry \"x\"",
            ),
            ("{".into(), "does not read"),
            ("[]".into(), "does not read"),
            (
                format!("{}{}", " ".repeat(MAX_ANNOTATION_BYTES), good),
                "bytes long",
            ),
        ];
        for (text, want) in cases {
            let e = NamespaceRequirements::read(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        // Unknown fields are skipped, however deep.
        let deep = good.replacen(
            '{',
            &format!(
                r#"{{"future":{}1{},"#,
                "[".repeat(10_000),
                "]".repeat(10_000)
            ),
            1,
        );
        assert!(deep.len() < MAX_ANNOTATION_BYTES);
        assert_eq!(NamespaceRequirements::read(&deep).unwrap(), annotation());
    }
}

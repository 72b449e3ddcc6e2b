//! The platform's default registries (DESIGN §4, §12): plain entries, and templates whose path
//! names the namespace, such as `tools-harbor.wmcloud.org/{namespace}`, which allow each tool
//! its own Harbor project and no other tool's.
//!
//! A template is matched against an image for a namespace without allocating, since every
//! name-only decision goes through it. What `{namespace}` and `{tool}` stand for is
//! [`Placeholder::value`], the rule requirement templates use too: only a DNS-1123 namespace
//! name, and never an empty tool name, is ever substituted. A template has its placeholders in
//! the path only, at most one per path component, so two namespaces never expand it to the same
//! repository prefix, and a match ends on a `/` boundary like any entry's.

use std::fmt;
use std::str::FromStr;

use byoc_api::requirements::Placeholder;
use byoc_api::{RegistryPattern, RegistryPatternError};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::reference::ImageRef;

/// The namespace a template is expanded for when it is checked, and its tool name.
const SAMPLE_NAMESPACE: &str = "tool-x";
const SAMPLE_TOOL: &str = "x";

/// One default registry: a plain entry, or a template whose path names the namespace.
/// Parse with [`str::parse`]; [`Display`](fmt::Display) and serde give it as written
/// (canonical for a plain entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DefaultRegistry {
    /// A `host[:port][/path-prefix]` entry, the same in every namespace.
    Plain(RegistryPattern),
    /// An entry with `{namespace}` or `{tool}` in its path.
    Template(Template),
}

/// A registry entry whose path has placeholders, parsed once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// As written.
    written: String,
    /// The host, lowercase and normalized as a plain entry's (`docker.io` for Docker Hub).
    host: String,
    port: Option<u16>,
    /// The path prefix: literal text and placeholders, in order.
    path: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Placeholder(Placeholder),
}

/// Why a string is not a default registry entry; each message quotes the entry.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DefaultRegistryError {
    /// A plain entry that is not a valid registry entry.
    #[error(transparent)]
    Pattern(#[from] RegistryPatternError),
    /// A placeholder, or a brace, in the host or port.
    #[error(
        "registry template {entry:?} has a placeholder in its host or port; only the path may \
         name the namespace, as in tools-harbor.wmcloud.org/{{namespace}}"
    )]
    InHost {
        /// The entry as given.
        entry: String,
    },
    /// A `{...}` that is not a known placeholder.
    #[error(
        "registry template {entry:?} has an unknown placeholder {placeholder:?}; the known ones \
         are {{namespace}} and {{tool}}"
    )]
    Unknown {
        /// The entry as given.
        entry: String,
        /// The unknown placeholder, braces included.
        placeholder: String,
    },
    /// A `{` without its `}`, or a `}` without its `{`.
    #[error("registry template {entry:?} has an unmatched '{{' or '}}'")]
    Unmatched {
        /// The entry as given.
        entry: String,
    },
    /// Two placeholders in one path component.
    #[error(
        "registry template {entry:?} has more than one placeholder in the path component \
         {component:?}; write at most one per component"
    )]
    TwoInComponent {
        /// The entry as given.
        entry: String,
        /// The component, as written.
        component: String,
    },
    /// The template, expanded, is not a valid registry entry.
    #[error(
        "registry template {entry:?} is invalid (expanded for namespace {namespace}: {source})"
    )]
    Expanded {
        /// The entry as given.
        entry: String,
        /// The namespace it was expanded for.
        namespace: &'static str,
        /// Why the expansion is not an entry.
        source: RegistryPatternError,
    },
}

impl DefaultRegistry {
    /// Whether this entry allows `image` in `namespace`, `{tool}` being the namespace without
    /// `tool_prefix`. Allocates nothing. A template allows nothing in a namespace it does not
    /// expand for (`{tool}` in a namespace without the prefix).
    pub fn allows(&self, image: &ImageRef, namespace: &str, tool_prefix: &str) -> bool {
        match self {
            Self::Plain(pattern) => image.is_allowed_by(pattern),
            Self::Template(t) => t.allows(image, namespace, tool_prefix),
        }
    }

    /// The entry as it applies in `namespace`, for messages and reports; `None` for a template
    /// the namespace does not expand (then it allows nothing there).
    pub fn for_namespace(&self, namespace: &str, tool_prefix: &str) -> Option<RegistryPattern> {
        match self {
            Self::Plain(pattern) => Some(pattern.clone()),
            Self::Template(t) => byoc_api::requirements::expand(&t.written, namespace, tool_prefix)
                .ok()?
                .parse()
                .ok(),
        }
    }
}

impl Template {
    fn allows(&self, image: &ImageRef, namespace: &str, tool_prefix: &str) -> bool {
        if image.port() != self.port || !image.host().eq_ignore_ascii_case(&self.host) {
            return false;
        }
        let mut rest = image.path();
        for part in &self.path {
            let piece = match part {
                Part::Literal(text) => text.as_str(),
                Part::Placeholder(p) => match p.value(namespace, tool_prefix) {
                    Some(value) => value,
                    None => return false,
                },
            };
            match rest.strip_prefix(piece) {
                Some(after) => rest = after,
                None => return false,
            }
        }
        rest.is_empty() || rest.starts_with('/')
    }

    /// Reads the template `entry`, which has a brace somewhere.
    fn parse(entry: &str) -> Result<Self, DefaultRegistryError> {
        use DefaultRegistryError as E;
        let owned = || entry.to_owned();
        let (host_port, path) = entry.split_once('/').unwrap_or((entry, ""));
        if host_port.contains(['{', '}']) {
            return Err(E::InHost { entry: owned() });
        }
        for component in path.split('/') {
            if component.matches('{').count() > 1 {
                return Err(E::TwoInComponent {
                    entry: owned(),
                    component: component.to_owned(),
                });
            }
        }
        let mut parts = Vec::new();
        let mut rest = path;
        while !rest.is_empty() {
            let literal_end = rest.find('{').unwrap_or(rest.len());
            let (literal, after) = rest.split_at(literal_end);
            if literal.contains('}') {
                return Err(E::Unmatched { entry: owned() });
            }
            if !literal.is_empty() {
                parts.push(Part::Literal(literal.to_owned()));
            }
            if after.is_empty() {
                break;
            }
            let close = after
                .find('}')
                .ok_or_else(|| E::Unmatched { entry: owned() })?;
            let written = &after[..=close];
            let placeholder = Placeholder::ALL
                .iter()
                .find(|(name, _)| *name == written)
                .map(|(_, p)| *p)
                .ok_or_else(|| E::Unknown {
                    entry: owned(),
                    placeholder: written.to_owned(),
                })?;
            parts.push(Part::Placeholder(placeholder));
            rest = &after[close + 1..];
        }
        // Checked as the entry it is in one namespace: the rest of it follows the entry
        // grammar, and a placeholder's value is a DNS-1123 label in any namespace.
        let mut expanded = format!("{host_port}/");
        for part in &parts {
            expanded.push_str(match part {
                Part::Literal(text) => text,
                Part::Placeholder(Placeholder::Namespace) => SAMPLE_NAMESPACE,
                Part::Placeholder(Placeholder::Tool) => SAMPLE_TOOL,
            });
        }
        let pattern: RegistryPattern = expanded.parse().map_err(|source| E::Expanded {
            entry: owned(),
            namespace: SAMPLE_NAMESPACE,
            source,
        })?;
        Ok(Self {
            written: owned(),
            host: pattern.host().to_owned(),
            port: pattern.port(),
            path: parts,
        })
    }
}

impl FromStr for DefaultRegistry {
    type Err = DefaultRegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(['{', '}']) {
            Template::parse(s).map(Self::Template)
        } else {
            Ok(Self::Plain(s.parse()?))
        }
    }
}

impl fmt::Display for DefaultRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plain(pattern) => pattern.fmt(f),
            Self::Template(t) => f.write_str(&t.written),
        }
    }
}

impl Serialize for DefaultRegistry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DefaultRegistry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(s: &str) -> DefaultRegistry {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn templates_allow_the_namespace_s_own_project_only() {
        const HARBOR: &str = "tools-harbor.wmcloud.org/{namespace}";
        // (entry, namespace, image, allowed)
        let cases = [
            (
                HARBOR,
                "tool-a",
                "tools-harbor.wmcloud.org/tool-a/x:1",
                true,
            ),
            (
                HARBOR,
                "tool-a",
                "tools-harbor.wmcloud.org/tool-a/x/y@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                true,
            ),
            (HARBOR, "tool-a", "tools-harbor.wmcloud.org/tool-a", true),
            (HARBOR, "tool-a", "TOOLS-HARBOR.wmcloud.org/tool-a/x", true),
            // Another tool's project, on and across the path boundary.
            (
                HARBOR,
                "tool-a",
                "tools-harbor.wmcloud.org/tool-b/x:1",
                false,
            ),
            (
                HARBOR,
                "tool-a",
                "tools-harbor.wmcloud.org/tool-ab/x",
                false,
            ),
            (
                HARBOR,
                "tool-ab",
                "tools-harbor.wmcloud.org/tool-a/x",
                false,
            ),
            (HARBOR, "tool-a", "tools-harbor.wmcloud.org/tool/x", false),
            (HARBOR, "tool-a", "tools-harbor.wmcloud.org/x/tool-a", false),
            (
                HARBOR,
                "tool-a",
                "tools-harbor.wmcloud.org/toolforge/heroku-builder",
                false,
            ),
            // Other hosts and ports.
            (
                HARBOR,
                "tool-a",
                "tools-harbor.wmcloud.org:443/tool-a/x",
                false,
            ),
            (
                HARBOR,
                "tool-a",
                "tools-harbor.wmcloud.org.evil.org/tool-a/x",
                false,
            ),
            (
                HARBOR,
                "tool-a",
                "evil.org/tools-harbor.wmcloud.org/tool-a/x",
                false,
            ),
            (HARBOR, "tool-a", "tool-a/x", false),
            // Any namespace name, not only tools'.
            (
                HARBOR,
                "default",
                "tools-harbor.wmcloud.org/default/x",
                true,
            ),
            // {tool}: the namespace without the prefix, never empty.
            (
                "harbor.example.org/tool-{tool}",
                "tool-a",
                "harbor.example.org/tool-a/x",
                true,
            ),
            (
                "harbor.example.org/{tool}",
                "tool-a",
                "harbor.example.org/a/x",
                true,
            ),
            (
                "harbor.example.org/{tool}",
                "tool-a",
                "harbor.example.org/ab/x",
                false,
            ),
            (
                "harbor.example.org/{tool}",
                "tool-a",
                "harbor.example.org/tool-a/x",
                false,
            ),
            (
                "harbor.example.org/{tool}",
                "default",
                "harbor.example.org/default/x",
                false,
            ),
            (
                "harbor.example.org/{tool}",
                "tool",
                "harbor.example.org/tool/x",
                false,
            ),
            (
                "harbor.example.org/{tool}/x",
                "tool-a",
                "harbor.example.org/a/x",
                true,
            ),
            (
                "harbor.example.org/{tool}/x",
                "tool-a",
                "harbor.example.org/a/xy",
                false,
            ),
            (
                "harbor.example.org/{tool}/x",
                "tool-a",
                "harbor.example.org/a",
                false,
            ),
            (
                "harbor.example.org/p-{namespace}-q/{tool}",
                "tool-a",
                "harbor.example.org/p-tool-a-q/a/z",
                true,
            ),
            (
                "harbor.example.org/p-{namespace}-q/{tool}",
                "tool-a",
                "harbor.example.org/p-tool-a-q/b/z",
                false,
            ),
            // Docker Hub: the host normalized as in a plain entry.
            ("index.docker.io/{namespace}", "tool-a", "tool-a/x", true),
            ("docker.io/{namespace}", "tool-a", "tool-b/x", false),
            // A namespace name that is not a DNS-1123 label expands nothing.
            (HARBOR, "Tool-a", "tools-harbor.wmcloud.org/tool-a/x", false),
            (HARBOR, "", "tools-harbor.wmcloud.org/x", false),
            (
                "localhost:5000/{namespace}",
                "tool-a",
                "localhost:5000/tool-a/x",
                true,
            ),
            (
                "localhost:5000/{namespace}",
                "tool-a",
                "localhost/tool-a/x",
                false,
            ),
            // Plain entries are unchanged.
            (
                "tools-harbor.wmcloud.org",
                "tool-a",
                "tools-harbor.wmcloud.org/tool-b/x",
                true,
            ),
            ("quay.io/a", "tool-a", "quay.io/ab/x", false),
        ];
        for (e, namespace, image, allowed) in cases {
            let image_ref: ImageRef = image.parse().unwrap();
            assert_eq!(
                entry(e).allows(&image_ref, namespace, "tool-"),
                allowed,
                "{e} in {namespace}: {image}"
            );
            // The expanded entry, where there is one, says the same.
            if let Some(p) = entry(e).for_namespace(namespace, "tool-") {
                assert_eq!(image_ref.is_allowed_by(&p), allowed, "{e} as {p}: {image}");
            } else {
                assert!(!allowed, "{e} in {namespace}");
            }
        }
    }

    proptest::proptest! {
        /// A template allows exactly what its expansion for the namespace allows, and nothing
        /// in a namespace it does not expand for.
        #[test]
        fn a_template_matches_as_its_expansion(
            template in "(tool|a|-|\\{namespace\\}|\\{tool\\}){1,3}(/(x|a|tool-a|\\{tool\\})){0,2}",
            namespace in "(tool-|tool|a|-|x){0,4}",
            path in "(tool|a|-|x|/){1,12}",
        ) {
            let Ok(e) = format!("harbor.example.org/{template}").parse::<DefaultRegistry>() else {
                return Ok(());
            };
            let Ok(image) = format!("harbor.example.org/{path}").parse::<ImageRef>() else {
                return Ok(());
            };
            let expanded = e.for_namespace(&namespace, "tool-");
            proptest::prop_assert_eq!(
                e.allows(&image, &namespace, "tool-"),
                expanded.is_some_and(|p| image.is_allowed_by(&p))
            );
        }
    }

    #[test]
    fn the_tool_prefix_is_configurable() {
        let e = entry("harbor.example.org/{tool}");
        let image: ImageRef = "harbor.example.org/a/x".parse().unwrap();
        assert!(e.allows(&image, "t-a", "t-"));
        assert!(!e.allows(&image, "tool-a", "t-"));
        assert!(!e.allows(&image, "t-", "t-"));
    }

    #[test]
    fn for_namespace_and_display() {
        let e = entry("tools-harbor.wmcloud.org/{namespace}");
        assert_eq!(e.to_string(), "tools-harbor.wmcloud.org/{namespace}");
        assert_eq!(
            e.for_namespace("tool-a", "tool-").unwrap().to_string(),
            "tools-harbor.wmcloud.org/tool-a"
        );
        assert_eq!(
            entry("harbor.example.org/{tool}").for_namespace("default", "tool-"),
            None
        );
        assert_eq!(entry("index.docker.io/x").to_string(), "docker.io/x");
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<DefaultRegistry>(&json).unwrap(), e);
    }

    #[test]
    fn bad_templates_name_the_problem() {
        let cases = [
            (
                "{namespace}.example.org/x",
                "placeholder in its host or port",
            ),
            ("harbor.{tool}.org/x", "placeholder in its host or port"),
            (
                "harbor.example.org:{port}/x",
                "placeholder in its host or port",
            ),
            ("{namespace}", "placeholder in its host or port"),
            (
                "harbor.example.org/{project}",
                "unknown placeholder \"{project}\"",
            ),
            (
                "harbor.example.org/{Namespace}",
                "unknown placeholder \"{Namespace}\"",
            ),
            ("harbor.example.org/{}", "unknown placeholder \"{}\""),
            ("harbor.example.org/{namespace", "unmatched"),
            ("harbor.example.org/namespace}", "unmatched"),
            ("harbor.example.org/{namespace}}", "unmatched"),
            (
                "harbor.example.org/{{namespace}}",
                "more than one placeholder in the path component \"{{namespace}}\"",
            ),
            (
                "harbor.example.org/{namespace}{tool}",
                "more than one placeholder",
            ),
            (
                "harbor.example.org/{tool}-{tool}/x",
                "more than one placeholder",
            ),
            (
                "harbor.example.org/{namespace}/",
                "expanded for namespace tool-x",
            ),
            ("harbor.example.org//{namespace}", "invalid path component"),
            ("harbor.example.org/{namespace}:1", "tag or digest"),
            ("harbor.example.org/_{namespace}", "invalid path component"),
            ("Harbor.example.org/{namespace}", "lowercase"),
            ("https://harbor.example.org/{namespace}", "URL scheme"),
            ("harbor/{namespace}", "no '.' or port"),
        ];
        for (text, needle) in cases {
            let err = text.parse::<DefaultRegistry>().unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}

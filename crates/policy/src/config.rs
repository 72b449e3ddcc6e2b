//! Policy configuration, read from a YAML file shared by webhook and CLI.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use byoc_api::grant::is_dns1123_label;
use byoc_api::requirements::DEFAULT_TOOL_PREFIX;
use byoc_api::{RegistryPattern, Requirements};
use jiff::{SignedDuration, Timestamp};

use crate::oci::Platform;
use crate::reference::ImageRef;
use crate::requirement::{DEFAULT_PLATFORM, ListedBase};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::default_registry::DefaultRegistry;

/// What happens to a pod that breaks the registry policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Refuse it.
    #[default]
    Enforce,
    /// Admit it, with a warning shown to the client.
    Warn,
    /// Admit it silently; the webhook logs and counts it.
    Audit,
}

impl Mode {
    /// The name used in configuration, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Warn => "warn",
            Self::Audit => "audit",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The registry policy configuration. Every field has a default, so an empty file is valid.
///
/// ```yaml
/// mode: enforce                    # enforce | warn | audit
/// defaultRegistries: [docker-registry.tools.wmflabs.org, tools-harbor.wmcloud.org/{namespace}]
/// toolPrefix: tool-                # {tool} is the namespace without it
/// exemptNamespaces: [kube-system, kube-public, kube-node-lease, byoc-system]
/// grantRequestUrl: https://example.org/how-to-request-byoc
/// labelWriters: [system:serviceaccount:byoc-system:byoc-controller]
/// protectedLabels:                 # Pod Security labels: only these writers change them
///   prefixes: [pod-security.kubernetes.io/]
///   users: []
///   groups: [system:masters]
/// expiryWarning: 14d               # 0s turns expiry reminders off
/// defaultGrantRequirements:        # for grants without spec.requirements; absent: none
///   builtOn: [tools-harbor.wmcloud.org/toolforge/heroku-runner]
/// platformRequirements:            # for images of the default registries; absent: none
///   builtOn: [tools-harbor.wmcloud.org/toolforge/heroku-runner]
/// baseImages:                      # older base images still accepted, and deprecations
///   - image: tools-harbor.wmcloud.org/toolforge/heroku-runner:22@sha256:...
///     deprecated: 2027-01-01T00:00:00Z
/// platforms: [linux/amd64]         # every image of an index the nodes could run is checked
/// registryLookups:
///   budget: 2s                     # per review, at most 10s
///   failureMode: {builtOn: fail, sourceFrom: fail}   # fail | allow (a failed lookup only)
///   credentialsFile: /etc/byoc/registry/.dockerconfigjson
///   insecureRegistries: []         # host[:port] reached over plain HTTP
///   cacheBytes: 67108864
///   tagTtl: 30s
///   perHostConcurrency: 8
///   reportLookupsPerSecond: 20     # the controller's lookups for stale-base reports
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Enforce, warn or audit.
    #[serde(default)]
    pub mode: Mode,
    /// Registries every namespace may use; a path may name the namespace with `{namespace}`
    /// or `{tool}` ([`DefaultRegistry`]). Match with [`Config::default_registry_for`].
    #[serde(default = "default_registries")]
    pub default_registries: Vec<DefaultRegistry>,
    /// What `{tool}` strips from the namespace name in templates.
    #[serde(default = "default_tool_prefix")]
    pub tool_prefix: String,
    /// Namespaces the policy does not apply to, matched by exact name.
    #[serde(default = "default_exempt_namespaces")]
    pub exempt_namespaces: BTreeSet<String>,
    /// Where tool maintainers ask for a grant; named in every denial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_request_url: Option<String>,
    /// Users allowed to change `byoc.toolforge.org/` namespace labels (the controller's
    /// service account). They may change no other namespace label: the guard refuses them any
    /// change outside the prefix, so a leaked controller token cannot lift Pod Security labels.
    #[serde(default = "default_label_writers")]
    pub label_writers: BTreeSet<String>,
    /// Namespace labels only platform admins may add, change or remove (Pod Security labels).
    #[serde(default)]
    pub protected_labels: ProtectedLabels,
    /// How long before an allowance ends the images it alone admits get a reminder (webhook
    /// warning, `check` note, `ExpiringSoon` event); zero turns reminders off. Written like
    /// `14d`, `36h` or `2w`.
    #[serde(default = "default_expiry_warning", with = "window")]
    pub expiry_warning: SignedDuration,
    /// What a grant without `spec.requirements` requires of the images it admits (a grant
    /// with `requirements: {}` opts out). Absent: nothing beyond the registry.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "strict::deserialize"
    )]
    pub default_grant_requirements: Option<Requirements>,
    /// What images of the default registries must meet (DESIGN §12). Absent: nothing beyond
    /// the registry, and such images never cause a registry lookup.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "strict::platform"
    )]
    pub platform_requirements: Option<Requirements>,
    /// Base images the platform lists: older images of a `builtOn` base still accepted, and
    /// when the platform deprecated them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub base_images: Vec<BaseImageEntry>,
    /// The platforms (`os/arch[/variant]`) the nodes run; every image of an index a node could
    /// run must meet the requirements.
    #[serde(default = "default_platforms")]
    pub platforms: Vec<String>,
    /// How the webhook asks registries.
    #[serde(default)]
    pub registry_lookups: RegistryLookups,
}

/// One entry of `baseImages`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BaseImageEntry {
    /// `repository:tag` (the image the tag points to now) or `repository[:tag]@sha256:...`
    /// (an older image still accepted).
    pub image: String,
    /// When the platform deprecated it (or will), like `2027-01-01T00:00:00Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated: Option<Timestamp>,
}

/// What a requirement does when a registry lookup it needs fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    /// Refuse, naming the registry and why.
    #[default]
    Fail,
    /// Admit with a warning. Only a failed lookup is softened, never a requirement that was
    /// checked and does not hold.
    Allow,
}

/// `registryLookups.failureMode`: per requirement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailureModes {
    /// For `builtOn`.
    #[serde(default)]
    pub built_on: FailureMode,
    /// For `sourceFrom`.
    #[serde(default)]
    pub source_from: FailureMode,
}

/// The default of [`RegistryLookups::budget`].
pub const DEFAULT_LOOKUP_BUDGET: SignedDuration = SignedDuration::from_secs(2);

/// The longest [`RegistryLookups::budget`]: well inside the API server's webhook timeout.
pub const MAX_LOOKUP_BUDGET: SignedDuration = SignedDuration::from_secs(10);

/// `registryLookups`: how the webhook asks registries.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryLookups {
    /// The time one review may spend on registry lookups, all together (`2s`, `500ms`).
    #[serde(default = "default_budget", with = "short")]
    pub budget: SignedDuration,
    /// What each requirement does when a lookup fails.
    #[serde(default)]
    pub failure_mode: FailureModes,
    /// A `.dockerconfigjson` with pull credentials; anonymous without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    /// Registries (`host[:port]`) asked over plain HTTP instead of HTTPS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub insecure_registries: Vec<String>,
    /// Bytes of manifests and configs cached by digest.
    #[serde(default = "default_cache_bytes")]
    pub cache_bytes: u64,
    /// How long a tag's digest is reused (`0s`: asked every time).
    #[serde(default = "default_tag_ttl", with = "short")]
    pub tag_ttl: SignedDuration,
    /// Requests in flight per registry at most.
    #[serde(default = "default_per_host_concurrency")]
    pub per_host_concurrency: usize,
    /// Registry lookups per second the controller makes for the reports' base checks, over all
    /// namespaces (cache hits included), from 1 to [`MAX_REPORT_LOOKUPS_PER_SECOND`].
    #[serde(default = "default_report_lookups_per_second")]
    pub report_lookups_per_second: u32,
}

/// The most [`RegistryLookups::report_lookups_per_second`] may be.
pub const MAX_REPORT_LOOKUPS_PER_SECOND: u32 = 1000;

fn default_report_lookups_per_second() -> u32 {
    20
}

fn default_budget() -> SignedDuration {
    DEFAULT_LOOKUP_BUDGET
}

fn default_cache_bytes() -> u64 {
    64 << 20
}

fn default_tag_ttl() -> SignedDuration {
    SignedDuration::from_secs(30)
}

fn default_per_host_concurrency() -> usize {
    8
}

fn default_platforms() -> Vec<String> {
    vec![DEFAULT_PLATFORM.to_owned()]
}

impl Default for RegistryLookups {
    fn default() -> Self {
        Self {
            budget: default_budget(),
            failure_mode: FailureModes::default(),
            credentials_file: None,
            insecure_registries: Vec::new(),
            cache_bytes: default_cache_bytes(),
            tag_ttl: default_tag_ttl(),
            per_host_concurrency: default_per_host_concurrency(),
            report_lookups_per_second: default_report_lookups_per_second(),
        }
    }
}

/// Durations of `registryLookups`: the duration grammar of requests, plus milliseconds
/// (`500ms`); zero allowed (validation refuses it where it makes no sense).
mod short {
    use byoc_api::duration::{self, DurationError};
    use jiff::SignedDuration;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &SignedDuration, s: S) -> Result<S::Ok, S::Error> {
        if d.subsec_millis() != 0 {
            return s.serialize_str(&format!("{}ms", d.as_millis()));
        }
        s.serialize_str(&duration::format(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SignedDuration, D::Error> {
        let text = String::deserialize(d)?;
        if let Some(ms) = text.strip_suffix("ms")
            && !ms.is_empty()
            && ms.bytes().all(|c| c.is_ascii_digit())
        {
            return ms
                .parse::<i64>()
                .map(SignedDuration::from_millis)
                .map_err(|_| serde::de::Error::custom(format!("{text:?} is too long")));
        }
        match duration::parse(&text) {
            Ok(d) => Ok(d),
            Err(DurationError::Zero) => Ok(SignedDuration::ZERO),
            Err(e) => Err(serde::de::Error::custom(format!(
                "{text:?} is {e} (like 2s, 500ms or 1m)"
            ))),
        }
    }
}

/// Namespace labels, by key prefix, that only the listed users and groups may add, change or
/// remove, on CREATE as well as UPDATE: Pod Security admission does not guard its own labels,
/// so without this a tenant who may patch its namespace (or only its status) could set
/// `pod-security.kubernetes.io/enforce=privileged`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProtectedLabels {
    /// Key prefixes, compared ignoring ASCII case.
    #[serde(default = "default_protected_prefixes")]
    pub prefixes: Vec<String>,
    /// Users that may write them.
    #[serde(default)]
    pub users: BTreeSet<String>,
    /// Groups whose members may write them.
    #[serde(default = "default_protected_groups")]
    pub groups: BTreeSet<String>,
}

/// The Pod Security admission label prefix.
pub const POD_SECURITY_PREFIX: &str = "pod-security.kubernetes.io/";

/// The group of the cluster's superusers (the admin client certificate).
pub const MASTERS_GROUP: &str = "system:masters";

fn default_protected_prefixes() -> Vec<String> {
    vec![POD_SECURITY_PREFIX.to_owned()]
}

fn default_protected_groups() -> BTreeSet<String> {
    [MASTERS_GROUP.to_owned()].into()
}

impl Default for ProtectedLabels {
    fn default() -> Self {
        Self {
            prefixes: default_protected_prefixes(),
            users: BTreeSet::new(),
            groups: default_protected_groups(),
        }
    }
}

impl ProtectedLabels {
    /// Whether `key` falls under a protected prefix.
    pub fn covers(&self, key: &str) -> bool {
        let key = key.to_ascii_lowercase();
        self.prefixes
            .iter()
            .any(|p| key.starts_with(&p.to_ascii_lowercase()))
    }

    /// Whether `user`, a member of `groups`, may write protected labels.
    pub fn may_write(&self, user: &str, groups: &[String]) -> bool {
        self.users.contains(user) || groups.iter().any(|g| self.groups.contains(g))
    }
}

/// The default of [`Config::expiry_warning`]: 14 days.
pub const DEFAULT_EXPIRY_WARNING: SignedDuration = SignedDuration::from_secs(14 * 86_400);

/// The longest warning window accepted: a year and a day.
const MAX_EXPIRY_WARNING: SignedDuration = SignedDuration::from_secs(366 * 86_400);

fn default_expiry_warning() -> SignedDuration {
    DEFAULT_EXPIRY_WARNING
}

/// `expiryWarning` as written: the duration grammar of requests, where zero is allowed.
mod window {
    use byoc_api::duration::{self, DurationError};
    use jiff::SignedDuration;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &SignedDuration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&duration::format(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SignedDuration, D::Error> {
        let text = String::deserialize(d)?;
        match duration::parse(&text) {
            Ok(window) => Ok(window),
            Err(DurationError::Zero) => Ok(SignedDuration::ZERO),
            Err(e) => Err(serde::de::Error::custom(format!(
                "expiryWarning: {text:?} is {e}"
            ))),
        }
    }
}

/// `defaultGrantRequirements` as written: [`Requirements`], with unknown keys refused (the
/// type skips them, as the CRD prunes them; here a typo would silently require nothing).
mod strict {
    use byoc_api::{BaseImage, Requirements};
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Requirements>, D::Error> {
        read(d, "defaultGrantRequirements")
    }

    pub fn platform<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Requirements>, D::Error> {
        read(d, "platformRequirements")
    }

    fn read<'de, D: Deserializer<'de>>(
        d: D,
        field: &str,
    ) -> Result<Option<Requirements>, D::Error> {
        let Some(value) = Option::<Value>::deserialize(d)? else {
            return Ok(None);
        };
        // Every field set, serialized: the keys the type knows.
        let full = Requirements {
            built_on: vec![BaseImage(String::new())],
            require_digest: true,
            source_from: vec![String::new()],
        };
        let known = serde_json::to_value(full).map_err(D::Error::custom)?;
        if let (Some(given), Some(known)) = (value.as_object(), known.as_object())
            && let Some(key) = given.keys().find(|k| !known.contains_key(*k))
        {
            let expected: Vec<&str> = known.keys().map(String::as_str).collect();
            return Err(D::Error::custom(format!(
                "{field}: unknown field `{key}`, expected one of {}",
                expected.join(", ")
            )));
        }
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| D::Error::custom(format!("{field}: {e}")))
    }
}

/// The platform registry of Wikimedia Toolforge.
pub const DEFAULT_REGISTRY: &str = "docker-registry.tools.wmflabs.org";

/// The namespace the operator runs in by default.
pub const OPERATOR_NAMESPACE: &str = "byoc-system";

/// The controller's service account in [`OPERATOR_NAMESPACE`].
pub const CONTROLLER_USER: &str = "system:serviceaccount:byoc-system:byoc-controller";

fn default_registries() -> Vec<DefaultRegistry> {
    vec![
        DEFAULT_REGISTRY
            .parse()
            .expect("the default registry is a valid entry"),
    ]
}

fn default_tool_prefix() -> String {
    DEFAULT_TOOL_PREFIX.to_owned()
}

fn default_exempt_namespaces() -> BTreeSet<String> {
    [
        "kube-system",
        "kube-public",
        "kube-node-lease",
        OPERATOR_NAMESPACE,
    ]
    .map(String::from)
    .into()
}

fn default_label_writers() -> BTreeSet<String> {
    [CONTROLLER_USER.to_owned()].into()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::default(),
            default_registries: default_registries(),
            tool_prefix: default_tool_prefix(),
            exempt_namespaces: default_exempt_namespaces(),
            grant_request_url: None,
            label_writers: default_label_writers(),
            protected_labels: ProtectedLabels::default(),
            expiry_warning: DEFAULT_EXPIRY_WARNING,
            default_grant_requirements: None,
            platform_requirements: None,
            base_images: Vec::new(),
            platforms: default_platforms(),
            registry_lookups: RegistryLookups::default(),
        }
    }
}

/// A configuration file that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not YAML, or fields of the wrong shape (the message names the field and position).
    #[error("invalid policy configuration: {0}")]
    Parse(String),
    /// Well-formed but not meaningful.
    #[error("invalid policy configuration: {field}: {problem}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A configuration file's content cannot be used.
    #[error("{}: {error}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with its content.
        #[source]
        error: Box<ConfigError>,
    },
}

impl Config {
    /// Reads the configuration file at `path` (the defaults without one), as the webhook, the
    /// controller and `kubectl byoc` all do; errors other than reading name the file.
    pub fn read(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|error| ConfigError::InFile {
            path: path.to_owned(),
            error: Box::new(error),
        })
    }

    /// Parses and validates a YAML configuration.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let config: Self = if text.trim().is_empty() {
            Self::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(ns) = self
            .exempt_namespaces
            .iter()
            .find(|ns| !is_dns1123_label(ns))
        {
            return Err(ConfigError::Invalid {
                field: "exemptNamespaces",
                problem: format!("{ns:?} is not a namespace name (a DNS-1123 label)"),
            });
        }
        // A prefix a namespace name can start with, so that a tool name can follow it.
        let prefix = self.tool_prefix.as_bytes();
        if prefix.is_empty()
            || prefix.len() > 62
            || !prefix[0].is_ascii_alphanumeric()
            || !prefix
                .iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        {
            return Err(ConfigError::Invalid {
                field: "toolPrefix",
                problem: format!(
                    "{:?} cannot start a namespace name (1 to 62 lowercase letters, digits or \
                     '-', starting with a letter or digit)",
                    self.tool_prefix
                ),
            });
        }
        if self.label_writers.iter().any(|u| u.trim().is_empty()) {
            return Err(ConfigError::Invalid {
                field: "labelWriters",
                problem: "user names must not be empty".into(),
            });
        }
        let protected = &self.protected_labels;
        if protected.prefixes.iter().any(|p| p.trim().is_empty()) {
            return Err(ConfigError::Invalid {
                field: "protectedLabels.prefixes",
                problem: "prefixes must not be empty (an empty prefix would protect every label)"
                    .into(),
            });
        }
        if protected
            .users
            .iter()
            .chain(&protected.groups)
            .any(|u| u.trim().is_empty())
        {
            return Err(ConfigError::Invalid {
                field: "protectedLabels",
                problem: "user and group names must not be empty".into(),
            });
        }
        if self.expiry_warning > MAX_EXPIRY_WARNING {
            return Err(ConfigError::Invalid {
                field: "expiryWarning",
                problem: format!(
                    "{} is longer than the {} allowed",
                    byoc_api::duration::format(self.expiry_warning),
                    byoc_api::duration::format(MAX_EXPIRY_WARNING)
                ),
            });
        }
        if let Some(Err(e)) = self
            .default_grant_requirements
            .as_ref()
            .map(Requirements::validate)
        {
            return Err(ConfigError::Invalid {
                field: "defaultGrantRequirements",
                problem: e.to_string(),
            });
        }
        if let Some(Err(e)) = self
            .platform_requirements
            .as_ref()
            .map(Requirements::validate)
        {
            return Err(ConfigError::Invalid {
                field: "platformRequirements",
                problem: e.to_string(),
            });
        }
        self.validate_lookups()?;
        if let Some(url) = &self.grant_request_url
            && (!(url.starts_with("https://") || url.starts_with("http://")) || url.contains(' '))
        {
            return Err(ConfigError::Invalid {
                field: "grantRequestUrl",
                problem: format!("{url:?} is not an http(s) URL"),
            });
        }
        Ok(())
    }

    /// The default registry that allows `image` in `namespace`, if one does; templates are
    /// expanded for the namespace ([`DefaultRegistry::allows`]: no allocation).
    pub fn default_registry_for(
        &self,
        image: &ImageRef,
        namespace: &str,
    ) -> Option<&DefaultRegistry> {
        self.default_registries
            .iter()
            .find(|r| r.allows(image, namespace, &self.tool_prefix))
    }

    /// The default registries as they apply in `namespace` (templates expanded; those the
    /// namespace does not expand left out), for messages and reports.
    pub fn default_registries_in<'a>(
        &'a self,
        namespace: &'a str,
    ) -> impl Iterator<Item = RegistryPattern> + 'a {
        self.default_registries
            .iter()
            .filter_map(|r| r.for_namespace(namespace, &self.tool_prefix))
    }

    fn validate_lookups(&self) -> Result<(), ConfigError> {
        let invalid = |field, problem: String| Err(ConfigError::Invalid { field, problem });
        for entry in &self.base_images {
            if let Err(e) = entry.image.parse::<ImageRef>() {
                return invalid(
                    "baseImages",
                    format!("{:?} is not an image reference: {}", entry.image, e.kind()),
                );
            }
        }
        if self.platforms.is_empty() {
            return invalid(
                "platforms",
                "must list at least one platform, like linux/amd64".into(),
            );
        }
        for platform in &self.platforms {
            if let Err(e) = platform.parse::<Platform>() {
                return invalid("platforms", format!("{platform:?}: {e}"));
            }
        }
        let lookups = &self.registry_lookups;
        if lookups.budget <= SignedDuration::ZERO || lookups.budget > MAX_LOOKUP_BUDGET {
            return invalid(
                "registryLookups.budget",
                format!(
                    "{}ms is not between 1ms and {}s",
                    lookups.budget.as_millis(),
                    MAX_LOOKUP_BUDGET.as_secs()
                ),
            );
        }
        if lookups.tag_ttl.is_negative() {
            return invalid("registryLookups.tagTtl", "must not be negative".into());
        }
        if lookups.per_host_concurrency == 0 {
            return invalid(
                "registryLookups.perHostConcurrency",
                "must be at least 1".into(),
            );
        }
        if !(1..=MAX_REPORT_LOOKUPS_PER_SECOND).contains(&lookups.report_lookups_per_second) {
            return invalid(
                "registryLookups.reportLookupsPerSecond",
                format!(
                    "must be from 1 to {MAX_REPORT_LOOKUPS_PER_SECOND}, not {}",
                    lookups.report_lookups_per_second
                ),
            );
        }
        if let Some(bad) = lookups.insecure_registries.iter().find(|r| {
            r.parse::<RegistryPattern>()
                .map_or(true, |p| p.path().is_some() || p.to_string() != **r)
        }) {
            return invalid(
                "registryLookups.insecureRegistries",
                format!("{bad:?} is not a registry host[:port] in lowercase"),
            );
        }
        Ok(())
    }

    /// The prefix `{tool}` strips from namespace names (`toolPrefix`).
    pub fn tool_prefix(&self) -> &str {
        &self.tool_prefix
    }

    /// The nodes' platforms, parsed (validated when the configuration was read).
    pub fn node_platforms(&self) -> Vec<Platform> {
        self.platforms
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// The listed base images, parsed (validated when the configuration was read).
    pub fn listed_bases(&self) -> Vec<ListedBase> {
        self.base_images
            .iter()
            .filter_map(|b| {
                Some(ListedBase {
                    image: b.image.parse().ok()?,
                    deprecated: b.deprecated,
                })
            })
            .collect()
    }

    /// Whether the policy leaves `namespace` alone.
    pub fn is_exempt(&self, namespace: &str) -> bool {
        self.exempt_namespaces.contains(namespace)
    }

    /// The "how to ask" part of a denial: `to use it, ` and [`Config::ask_for_grant`].
    pub fn how_to_ask(&self, namespace: &str, registry: Option<&str>) -> String {
        format!("to use it, {}", self.ask_for_grant(namespace, registry))
    }

    /// How a tool maintainer gets a grant for `registry` (a placeholder when `None`) in
    /// `namespace`: the configured `grantRequestUrl`, else the command that files a
    /// ByocRequest.
    pub fn ask_for_grant(&self, namespace: &str, registry: Option<&str>) -> String {
        match &self.grant_request_url {
            Some(url) => format!("ask for a BYOC grant at {url}"),
            None => format!(
                "ask for a grant: kubectl byoc request -n {namespace} --registry {} --reason '...'",
                registry.unwrap_or("<registry>")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::from_yaml("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.mode, Mode::Enforce);
        assert_eq!(c.default_registries[0].to_string(), DEFAULT_REGISTRY);
        assert!(c.is_exempt("kube-system") && c.is_exempt("byoc-system"));
        assert!(!c.is_exempt("kube-systemx") && !c.is_exempt("tool-a"));
    }

    #[test]
    fn full_file() {
        let c = Config::from_yaml(
            "mode: warn\ndefaultRegistries: [registry.example.org, quay.io/wikimedia]\n\
             exemptNamespaces: [kube-system]\ngrantRequestUrl: https://example.org/byoc\n\
             labelWriters: [system:serviceaccount:ops:byoc]\n\
             protectedLabels: {groups: [platform-admins], users: [root]}\n",
        )
        .unwrap();
        assert_eq!(c.mode, Mode::Warn);
        let p = &c.protected_labels;
        assert_eq!(p.prefixes, [POD_SECURITY_PREFIX]);
        assert!(p.may_write("root", &[]));
        assert!(p.may_write("x", &["platform-admins".into()]));
        assert!(!p.may_write("x", &[MASTERS_GROUP.into()]));
        assert_eq!(c.default_registries.len(), 2);
        assert_eq!(c.exempt_namespaces.len(), 1);
        assert_eq!(
            c.how_to_ask("tool-a", Some("quay.io")),
            "to use it, ask for a BYOC grant at https://example.org/byoc"
        );
        assert_eq!(c.expiry_warning, DEFAULT_EXPIRY_WARNING);
    }

    #[test]
    fn how_to_ask_names_the_request_command() {
        let c = Config::default();
        assert_eq!(
            c.how_to_ask("tool-a", Some("quay.io")),
            "to use it, ask for a grant: kubectl byoc request -n tool-a --registry quay.io \
             --reason '...'"
        );
        assert_eq!(
            c.ask_for_grant("tool-b", None),
            "ask for a grant: kubectl byoc request -n tool-b --registry <registry> --reason '...'"
        );
    }

    #[test]
    fn files_are_read_and_named_in_errors() {
        let dir = std::env::temp_dir().join(format!("byoc-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.yaml");
        let bad = dir.join("bad.yaml");
        std::fs::write(&good, "expiryWarning: 3d\n").unwrap();
        std::fs::write(&bad, "expiryWarning: soon\n").unwrap();
        assert_eq!(Config::read(None).unwrap(), Config::default());
        assert_eq!(
            Config::read(Some(&good)).unwrap().expiry_warning,
            SignedDuration::from_hours(72)
        );
        let err = Config::read(Some(&bad)).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{}: invalid policy configuration: ",
                bad.display()
            )) && err.contains("expiryWarning: \"soon\""),
            "{err}"
        );
        let missing = dir.join("missing.yaml");
        let err = Config::read(Some(&missing)).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: cannot read: ", missing.display())),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn expiry_warning_windows() {
        let day = 86_400;
        let cases = [
            ("", 14 * day),
            ("expiryWarning: 14d\n", 14 * day),
            ("expiryWarning: 2w\n", 14 * day),
            ("expiryWarning: 36h\n", 36 * 3_600),
            ("expiryWarning: 1d12h\n", 36 * 3_600),
            ("expiryWarning: 0s\n", 0),
            ("expiryWarning: 0d\n", 0),
            ("expiryWarning: 366d\n", 366 * day),
        ];
        for (text, secs) in cases {
            let c = Config::from_yaml(text).unwrap();
            assert_eq!(
                c.expiry_warning,
                SignedDuration::from_secs(secs),
                "{text:?}"
            );
            // What is written back reads the same.
            let again = Config::from_yaml(&serde_saphyr::to_string(&c).unwrap()).unwrap();
            assert_eq!(again, c, "{text:?}");
        }
        for (text, needle) in [
            (
                "expiryWarning: 14\n",
                "expiryWarning: \"14\" is not a duration",
            ),
            ("expiryWarning: fortnight\n", "expiryWarning: \"fortnight\""),
            ("expiryWarning: -1d\n", "expiryWarning: \"-1d\""),
            ("expiryWarning: 1y\n", "expiryWarning: \"1y\""),
            (
                "expiryWarning: 367d\n",
                "expiryWarning: 367d is longer than the 366d allowed",
            ),
            ("expiryWarning: [14d]\n", "expiryWarning"),
        ] {
            let err = Config::from_yaml(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn default_grant_requirements_are_validated() {
        let c = Config::from_yaml(
            "defaultGrantRequirements:\n  builtOn: [tools-harbor.wmcloud.org/toolforge/heroku-runner]\n  requireDigest: true\n",
        )
        .unwrap();
        let r = c.default_grant_requirements.as_ref().unwrap();
        assert!(r.require_digest && r.built_on.len() == 1);
        let again = Config::from_yaml(&serde_saphyr::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
        assert_eq!(Config::default().default_grant_requirements, None);
        for (text, needle) in [
            (
                "defaultGrantRequirements: {builtOn: [heroku-runner]}\n",
                "invalid policy configuration: defaultGrantRequirements: builtOn entry \"heroku-runner\" is invalid",
            ),
            (
                "defaultGrantRequirements: {sourceFrom: [\"http://x.org\"]}\n",
                "defaultGrantRequirements: sourceFrom entry \"http://x.org\"",
            ),
            ("defaultGrantRequirements: {builtBy: []}\n", "builtBy"),
        ] {
            let err = Config::from_yaml(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn templated_registries_and_the_tool_prefix() {
        let c = Config::from_yaml(
            "defaultRegistries: [docker-registry.svc.toolforge.org, \"tools-harbor.wmcloud.org/{namespace}\", \"harbor.example.org/{tool}\"]\ntoolPrefix: t-\n",
        )
        .unwrap();
        assert_eq!(c.tool_prefix, "t-");
        assert_eq!(Config::default().tool_prefix, "tool-");
        let image = |s: &str| s.parse::<ImageRef>().unwrap();
        let own = image("tools-harbor.wmcloud.org/t-a/x:1");
        assert_eq!(
            c.default_registry_for(&own, "t-a").map(ToString::to_string),
            Some("tools-harbor.wmcloud.org/{namespace}".to_owned())
        );
        assert!(c.default_registry_for(&own, "t-b").is_none());
        assert!(
            c.default_registry_for(&image("harbor.example.org/a/x"), "t-a")
                .is_some()
        );
        assert!(
            c.default_registry_for(&image("harbor.example.org/a/x"), "tool-a")
                .is_none()
        );
        let in_ns = |ns: &str| {
            c.default_registries_in(ns)
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            in_ns("t-a"),
            [
                "docker-registry.svc.toolforge.org",
                "tools-harbor.wmcloud.org/t-a",
                "harbor.example.org/a"
            ]
        );
        // Not a tool: {tool} does not apply there.
        assert_eq!(
            in_ns("default"),
            [
                "docker-registry.svc.toolforge.org",
                "tools-harbor.wmcloud.org/default"
            ]
        );
        // Written back as written.
        let again = Config::from_yaml(&serde_saphyr::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
        for (text, needle) in [
            (
                "toolPrefix: \"\"\n",
                "toolPrefix: \"\" cannot start a namespace name",
            ),
            ("toolPrefix: Tool-\n", "toolPrefix: \"Tool-\""),
            ("toolPrefix: -x\n", "toolPrefix: \"-x\""),
            ("toolPrefix: tool_\n", "toolPrefix: \"tool_\""),
            (
                "defaultRegistries: [\"{namespace}.example.org\"]\n",
                "placeholder in its host or port",
            ),
            (
                "defaultRegistries: [\"harbor.example.org/{project}\"]\n",
                "unknown placeholder \"{project}\"",
            ),
        ] {
            let err = Config::from_yaml(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn bad_files_name_the_problem() {
        let cases = [
            ("mode: strict\n", "strict"),
            (
                "defaultRegistries: [\"not a registry\"]\n",
                "not a registry",
            ),
            ("exemptNamespaces: [Kube_System]\n", "exemptNamespaces"),
            ("grantRequestUrl: ftp://x\n", "grantRequestUrl"),
            ("labelWriters: [\"\"]\n", "labelWriters"),
            (
                "protectedLabels: {prefixes: [\"\"]}\n",
                "protectedLabels.prefixes",
            ),
            ("protectedLabels: {groups: [\" \"]}\n", "protectedLabels"),
            ("protectedLabels: {writers: []}\n", "writers"),
            ("defaultRegistry: quay.io\n", "defaultRegistry"),
            ("mode: [\n", "invalid policy configuration"),
        ];
        for (text, needle) in cases {
            let err = Config::from_yaml(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn registry_lookup_keys() {
        let config = Config::from_yaml(
            "platformRequirements: {builtOn: [tools-harbor.wmcloud.org/toolforge/base]}\n\
             baseImages:\n  - image: tools-harbor.wmcloud.org/toolforge/base:22\n    deprecated: 2027-01-01T00:00:00Z\n\
             platforms: [linux/amd64, linux/arm64/v8]\n\
             registryLookups:\n  budget: 500ms\n  failureMode: {builtOn: allow}\n  insecureRegistries: [127.0.0.1:5000]\n  cacheBytes: 1048576\n  tagTtl: 0s\n  perHostConcurrency: 2\n  reportLookupsPerSecond: 5\n",
        )
        .unwrap();
        let lookups = &config.registry_lookups;
        assert_eq!(lookups.budget, SignedDuration::from_millis(500));
        assert_eq!(lookups.failure_mode.built_on, FailureMode::Allow);
        assert_eq!(lookups.failure_mode.source_from, FailureMode::Fail);
        assert_eq!(lookups.tag_ttl, SignedDuration::ZERO);
        assert_eq!(lookups.report_lookups_per_second, 5);
        assert_eq!(
            Config::default().registry_lookups.report_lookups_per_second,
            20
        );
        assert_eq!(config.node_platforms().len(), 2);
        assert_eq!(config.listed_bases().len(), 1);
        assert!(config.listed_bases()[0].deprecated.is_some());
        let defaults = Config::default();
        assert_eq!(
            defaults.registry_lookups.budget,
            SignedDuration::from_secs(2)
        );
        assert_eq!(defaults.platforms, ["linux/amd64"]);
        assert_eq!(defaults.tool_prefix(), "tool-");

        for (yaml, want) in [
            ("registryLookups: {budget: 11s}", "registryLookups.budget"),
            ("registryLookups: {budget: 0s}", "registryLookups.budget"),
            (
                "registryLookups: {reportLookupsPerSecond: 0}",
                "registryLookups.reportLookupsPerSecond: must be from 1 to 1000, not 0",
            ),
            (
                "registryLookups: {reportLookupsPerSecond: 5000}",
                "registryLookups.reportLookupsPerSecond",
            ),
            ("registryLookups: {budget: soon}", "like 2s, 500ms"),
            ("registryLookups: {failureMode: {builtOn: maybe}}", "maybe"),
            ("registryLookups: {failureMode: {digest: allow}}", "digest"),
            (
                "registryLookups: {perHostConcurrency: 0}",
                "perHostConcurrency",
            ),
            (
                "registryLookups: {insecureRegistries: [quay.io/x]}",
                "insecureRegistries",
            ),
            ("registryLookups: {cacheBytes: lots}", "cacheBytes"),
            ("registryLookups: {timeout: 1s}", "timeout"),
            ("platforms: []", "platforms"),
            ("platforms: [amd64]", "platforms"),
            ("baseImages: [{image: 'Not An Image'}]", "baseImages"),
            (
                "baseImages: [{image: quay.io/a, deprecated: tomorrow}]",
                "deprecated",
            ),
            (
                "platformRequirements: {builtOn: [nope]}",
                "platformRequirements",
            ),
            (
                "platformRequirements: {builtOnn: [quay.io/a]}",
                "platformRequirements: unknown field `builtOnn`",
            ),
        ] {
            let e = Config::from_yaml(yaml).expect_err(yaml).to_string();
            assert!(e.contains(want), "{yaml}: want {want:?} in {e}");
        }
    }
}

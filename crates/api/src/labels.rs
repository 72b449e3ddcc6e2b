//! The namespace label contract between controller and webhook (DESIGN §3).
//!
//! Every label whose key starts with [`PREFIX`] belongs to the controller. A namespace carries
//! one label per allowance, and nothing else under the prefix:
//!
//! | key | value | meaning |
//! |---|---|---|
//! | `byoc.toolforge.org/any` | expiry | any registry |
//! | `byoc.toolforge.org/<encoded entry>` | expiry | one registry entry `host[:port][/path]` |
//!
//! The **expiry** value is `never` or a UTC time in ISO 8601 basic format, `20270331T000000Z`
//! (label values cannot hold `:`). The webhook ignores an allowance whose expiry has passed, so
//! an expired grant stops counting even while the controller is down.
//!
//! An **entry** is stored in its canonical form (see [`RegistryPattern`]) with three
//! substitutions that make it a valid label name and can be undone unambiguously, because the
//! entry grammar never puts two separators side by side:
//!
//! | in the entry | in the label name |
//! |---|---|
//! | `/` | `_` |
//! | `_` | `__` |
//! | `:` | `..` |
//!
//! So `ghcr.io/wikimedia` is `byoc.toolforge.org/ghcr.io_wikimedia`, and
//! `registry.example.org:5000/my_team` is `byoc.toolforge.org/registry.example.org..5000_my__team`.
//! A label name is at most 63 characters, which bounds the length of an entry; the CRD refuses
//! longer ones. A label under the prefix that does not decode to a canonical entry is ignored by
//! the webhook (it grants nothing) and removed by the controller.
//!
//! When several grants name the same registry, the label carries the latest expiry. When the
//! last grant of a namespace goes away, every label under the prefix goes with it.

use std::collections::BTreeMap;
use std::str::FromStr;

use jiff::Timestamp;
use thiserror::Error;

use crate::{ByocGrantSpec, RegistryPattern, RegistryPatternError};

/// The prefix of every label the controller owns.
pub const PREFIX: &str = "byoc.toolforge.org/";

/// The key of the "any registry" allowance.
pub const ANY_KEY: &str = "byoc.toolforge.org/any";

/// The key of the namespace annotation that carries the effective requirements of the
/// allowances, as [`NamespaceRequirements`](crate::requirements::NamespaceRequirements) JSON.
/// The controller writes it in the same patch as the labels; it is guarded like them.
pub const REQUIREMENTS_ANNOTATION: &str = "byoc.toolforge.org/requirements";

/// The value of an allowance that does not expire.
const NEVER: &str = "never";

/// The expiry format: ISO 8601 basic, whole seconds, followed by `Z` (UTC).
const EXPIRY_FORMAT: &str = "%Y%m%dT%H%M%S";

/// The longest label name Kubernetes accepts (the part after the prefix).
const MAX_NAME_LEN: usize = 63;

/// Whether a label key belongs to the controller.
pub fn is_owned_key(key: &str) -> bool {
    key.starts_with(PREFIX)
}

/// The labels under [`PREFIX`] of a label map.
pub fn owned_labels(labels: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    labels
        .iter()
        .filter(|(k, _)| is_owned_key(k))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// When an allowance ends. `At(t)` sorts before `Never`, and earlier times before later ones,
/// so the union of two allowances keeps the maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Expiry {
    /// Ends at this instant (exclusive: at `t` it no longer applies).
    At(Timestamp),
    /// Does not end.
    Never,
}

impl Expiry {
    /// The expiry of an optional `expiresAt`, truncated to whole seconds as labels store it.
    pub fn from_option(expires_at: Option<Timestamp>) -> Self {
        match expires_at {
            // Truncating moves the end earlier, never later: the safe direction.
            Some(t) => Self::At(Timestamp::from_second(t.as_second()).unwrap_or(t)),
            None => Self::Never,
        }
    }

    /// Whether the allowance still applies at `now`.
    pub fn is_active_at(self, now: Timestamp) -> bool {
        match self {
            Self::At(t) => now < t,
            Self::Never => true,
        }
    }

    /// The label value.
    pub fn to_label_value(self) -> String {
        match self {
            Self::At(t) => format!(
                "{}Z",
                t.to_zoned(jiff::tz::TimeZone::UTC).strftime(EXPIRY_FORMAT)
            ),
            Self::Never => NEVER.to_owned(),
        }
    }

    /// Parses a label value.
    pub fn from_label_value(value: &str) -> Option<Self> {
        if value == NEVER {
            return Some(Self::Never);
        }
        let civil =
            jiff::civil::DateTime::strptime(EXPIRY_FORMAT, value.strip_suffix('Z')?).ok()?;
        civil
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| Self::At(z.timestamp()))
    }
}

/// A label that does not follow the contract.
#[derive(Debug, Error, PartialEq)]
pub enum LabelError {
    /// The key is under the prefix but does not name an allowance.
    #[error("label {key:?} does not encode a registry entry: {reason}")]
    InvalidKey {
        /// The whole label key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The value is not an expiry.
    #[error(
        "label {key:?} has value {value:?}, which is neither 'never' nor a time like 20270331T000000Z"
    )]
    InvalidExpiry {
        /// The whole label key.
        key: String,
        /// The value found.
        value: String,
    },
    /// The entry does not fit in a label name.
    #[error(
        "registry entry {entry:?} is too long to be stored as a namespace label ({len} > {MAX_NAME_LEN} characters once encoded)"
    )]
    TooLong {
        /// The entry.
        entry: String,
        /// Its encoded length.
        len: usize,
    },
}

/// What a namespace is granted beyond the default registries: the union of its grants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowance {
    any: Option<Expiry>,
    registries: BTreeMap<RegistryPattern, Expiry>,
}

impl Allowance {
    /// The allowance of one grant, regardless of whether it has expired.
    pub fn for_grant(spec: &ByocGrantSpec) -> Result<Self, RegistryPatternError> {
        let expiry = Expiry::from_option(spec.expires_at.as_ref().map(|t| t.0));
        let mut allowance = Self::default();
        if spec.allows_any_registry() {
            allowance.any = Some(expiry);
        }
        for entry in &spec.registries {
            allowance.registries.insert(entry.parse()?, expiry);
        }
        Ok(allowance)
    }

    /// Adds `other` to this allowance; an entry in both keeps the later expiry.
    pub fn merge(&mut self, other: Self) {
        self.any = self.any.max(other.any);
        for (pattern, expiry) in other.registries {
            let slot = self.registries.entry(pattern).or_insert(expiry);
            *slot = (*slot).max(expiry);
        }
    }

    /// Drops what no longer applies at `now`.
    pub fn retain_active_at(&mut self, now: Timestamp) {
        self.any = self.any.filter(|e| e.is_active_at(now));
        self.registries.retain(|_, e| e.is_active_at(now));
    }

    /// Whether nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.any.is_none() && self.registries.is_empty()
    }

    /// Whether any registry is allowed at `now`.
    pub fn allows_any_at(&self, now: Timestamp) -> bool {
        self.any.is_some_and(|e| e.is_active_at(now))
    }

    /// The registry entries that apply at `now`.
    pub fn registries_at(&self, now: Timestamp) -> impl Iterator<Item = &RegistryPattern> {
        self.registries
            .iter()
            .filter(move |(_, e)| e.is_active_at(now))
            .map(|(p, _)| p)
    }

    /// Every part that applies at `now`, with when it ends: `None` for the "any registry"
    /// allowance (listed first), else the registry entry.
    pub fn parts_at(
        &self,
        now: Timestamp,
    ) -> impl Iterator<Item = (Option<&RegistryPattern>, Expiry)> {
        self.any
            .map(|e| (None, e))
            .into_iter()
            .chain(self.registries.iter().map(|(p, e)| (Some(p), *e)))
            .filter(move |(_, e)| e.is_active_at(now))
    }

    /// The earliest time at which part of this allowance expires, if any does.
    pub fn next_expiry(&self) -> Option<Timestamp> {
        self.any
            .iter()
            .chain(self.registries.values())
            .filter_map(|e| match e {
                Expiry::At(t) => Some(*t),
                Expiry::Never => None,
            })
            .min()
    }

    /// The namespace labels that carry this allowance.
    pub fn to_labels(&self) -> Result<BTreeMap<String, String>, LabelError> {
        let mut labels = BTreeMap::new();
        if let Some(expiry) = self.any {
            labels.insert(ANY_KEY.to_owned(), expiry.to_label_value());
        }
        for (pattern, expiry) in &self.registries {
            labels.insert(
                format!("{PREFIX}{}", encode_entry(pattern)?),
                expiry.to_label_value(),
            );
        }
        Ok(labels)
    }

    /// Reads the allowance from a namespace's labels. Labels outside the prefix are ignored;
    /// labels under it that break the contract are returned as errors and grant nothing.
    pub fn from_labels<'a>(
        labels: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> (Self, Vec<LabelError>) {
        let mut allowance = Self::default();
        let mut errors = Vec::new();
        for (key, value) in labels {
            let Some(name) = key.strip_prefix(PREFIX) else {
                continue;
            };
            let Some(expiry) = Expiry::from_label_value(value) else {
                errors.push(LabelError::InvalidExpiry {
                    key: key.clone(),
                    value: value.clone(),
                });
                continue;
            };
            if key == ANY_KEY {
                allowance.any = Some(expiry);
                continue;
            }
            match decode_entry(name) {
                Ok(pattern) => {
                    allowance.registries.insert(pattern, expiry);
                }
                Err(reason) => errors.push(LabelError::InvalidKey {
                    key: key.clone(),
                    reason,
                }),
            }
        }
        (allowance, errors)
    }
}

/// The label name of a registry entry.
fn encode_entry(pattern: &RegistryPattern) -> Result<String, LabelError> {
    let entry = pattern.to_string();
    let mut name = String::with_capacity(entry.len() + 4);
    for c in entry.chars() {
        match c {
            '/' => name.push('_'),
            '_' => name.push_str("__"),
            ':' => name.push_str(".."),
            c => name.push(c),
        }
    }
    if name.len() > MAX_NAME_LEN {
        return Err(LabelError::TooLong {
            len: name.len(),
            entry,
        });
    }
    Ok(name)
}

/// The registry entry of a label name; only the canonical encoding is accepted.
fn decode_entry(name: &str) -> Result<RegistryPattern, String> {
    let mut entry = String::with_capacity(name.len());
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '_' && c != '.' {
            entry.push(c);
            continue;
        }
        let mut run = 1;
        while chars.next_if_eq(&c).is_some() {
            run += 1;
        }
        match (c, run) {
            ('_', 1) => entry.push('/'),
            ('_', 2) => entry.push('_'),
            ('_', 4) => entry.push_str("__"),
            ('.', 1) => entry.push('.'),
            ('.', 2) => entry.push(':'),
            _ => return Err(format!("a run of {run} {c:?} has no meaning")),
        }
    }
    let pattern = RegistryPattern::from_str(&entry).map_err(|e| e.to_string())?;
    if pattern.to_string() != entry {
        return Err(format!(
            "{entry:?} is not in canonical form (expected {pattern})"
        ));
    }
    Ok(pattern)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn spec(registries: &[&str], expires: Option<&str>) -> ByocGrantSpec {
        ByocGrantSpec {
            namespace: "tool-a".into(),
            reason: "test".into(),
            registries: registries.iter().map(|s| s.to_string()).collect(),
            any_registry: registries.is_empty(),
            namespace_uid: None,
            expires_at: expires.map(|e| Time(ts(e))),
            requirements: None,
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn entries_encode_to_label_names_and_back() {
        let cases = [
            ("quay.io", "quay.io"),
            ("ghcr.io/wikimedia", "ghcr.io_wikimedia"),
            ("registry.example.org:5000", "registry.example.org..5000"),
            (
                "registry.example.org:5000/my_team/a__b",
                "registry.example.org..5000_my__team_a____b",
            ),
            ("localhost:5000", "localhost..5000"),
            ("127.0.0.1:5000/x", "127.0.0.1..5000_x"),
            ("docker.io/library", "docker.io_library"),
            ("my-reg.example.org/a-b/c.d", "my-reg.example.org_a-b_c.d"),
        ];
        for (entry, name) in cases {
            let pattern: RegistryPattern = entry.parse().unwrap();
            assert_eq!(encode_entry(&pattern).unwrap(), name, "encode {entry}");
            assert_eq!(decode_entry(name).unwrap(), pattern, "decode {name}");
        }
    }

    #[test]
    fn label_names_that_break_the_encoding_are_refused() {
        for name in [
            "quay.io___x",                  // a run of three underscores
            "quay.io...5000",               // a run of three dots
            "index.docker.io",              // an alias, not the canonical docker.io
            "quay",                         // no dot, no port
            "Quay.io",                      // uppercase
            "quay.io_",                     // trailing slash
            "any-thing.example.org..99999", // port out of range
        ] {
            assert!(decode_entry(name).is_err(), "{name} should not decode");
        }
    }

    #[test]
    fn too_long_entries_are_refused() {
        // 51 + 12 = 63 characters: the longest entry that fits.
        let longest: RegistryPattern = format!("{}.example.org", "a".repeat(51)).parse().unwrap();
        assert_eq!(encode_entry(&longest).unwrap().len(), 63);
        let over: RegistryPattern = format!("{}.example.org", "a".repeat(52)).parse().unwrap();
        assert_eq!(
            encode_entry(&over),
            Err(LabelError::TooLong {
                entry: over.to_string(),
                len: 64
            })
        );
        // ':' and '_' take two characters each once encoded.
        let port: RegistryPattern = format!("{}.example.org:5", "a".repeat(49)).parse().unwrap();
        assert!(matches!(
            encode_entry(&port),
            Err(LabelError::TooLong { len: 64, .. })
        ));
    }

    #[test]
    fn expiry_values() {
        let t = ts("2027-03-31T00:00:00Z");
        assert_eq!(Expiry::At(t).to_label_value(), "20270331T000000Z");
        assert_eq!(
            Expiry::from_label_value("20270331T000000Z"),
            Some(Expiry::At(t))
        );
        assert_eq!(Expiry::Never.to_label_value(), "never");
        assert_eq!(Expiry::from_label_value("never"), Some(Expiry::Never));
        for bad in [
            "",
            "2027-03-31",
            "20270331",
            "20270331T000000",
            "forever",
            "NEVER",
        ] {
            assert_eq!(Expiry::from_label_value(bad), None, "{bad}");
        }
        // Sub-second expiries are truncated: the allowance ends no later than the grant.
        let frac = Expiry::from_option(Some(ts("2027-03-31T00:00:00.9Z")));
        assert_eq!(frac, Expiry::At(t));
        assert!(Expiry::At(t).is_active_at(ts("2027-03-30T23:59:59Z")));
        assert!(!Expiry::At(t).is_active_at(t));
        assert!(Expiry::At(t) < Expiry::Never);
    }

    #[test]
    fn grants_become_labels() {
        type Case<'a> = (&'a [ByocGrantSpec], &'a [(&'a str, &'a str)]);
        let cases: &[Case] = &[
            (&[], &[]),
            (&[spec(&[], None)], &[(ANY_KEY, "never")]),
            (
                &[spec(
                    &["quay.io", "ghcr.io/wikimedia"],
                    Some("2027-03-31T00:00:00Z"),
                )],
                &[
                    ("byoc.toolforge.org/ghcr.io_wikimedia", "20270331T000000Z"),
                    ("byoc.toolforge.org/quay.io", "20270331T000000Z"),
                ],
            ),
            // The union keeps each entry's latest expiry.
            (
                &[
                    spec(&["quay.io"], Some("2027-03-31T00:00:00Z")),
                    spec(&["quay.io"], Some("2028-01-01T00:00:00Z")),
                    spec(&["ghcr.io"], None),
                    spec(&[], Some("2026-12-01T12:30:00Z")),
                ],
                &[
                    (ANY_KEY, "20261201T123000Z"),
                    ("byoc.toolforge.org/ghcr.io", "never"),
                    ("byoc.toolforge.org/quay.io", "20280101T000000Z"),
                ],
            ),
            (
                &[
                    spec(&["quay.io"], Some("2027-03-31T00:00:00Z")),
                    spec(&["quay.io"], None),
                ],
                &[("byoc.toolforge.org/quay.io", "never")],
            ),
        ];
        for (grants, want) in cases {
            let mut allowance = Allowance::default();
            for g in *grants {
                allowance.merge(Allowance::for_grant(g).unwrap());
            }
            let got = allowance.to_labels().unwrap();
            assert_eq!(got, labels(want), "{grants:?}");
            let (back, errors) = Allowance::from_labels(&got);
            assert!(errors.is_empty(), "{errors:?}");
            assert_eq!(back, allowance);
        }
    }

    #[test]
    fn expired_parts_are_dropped_and_next_expiry_found() {
        let mut a = Allowance::default();
        a.merge(Allowance::for_grant(&spec(&["quay.io"], Some("2027-01-01T00:00:00Z"))).unwrap());
        a.merge(Allowance::for_grant(&spec(&["ghcr.io"], Some("2026-01-01T00:00:00Z"))).unwrap());
        a.merge(Allowance::for_grant(&spec(&[], Some("2026-06-01T00:00:00Z"))).unwrap());
        assert_eq!(a.next_expiry(), Some(ts("2026-01-01T00:00:00Z")));
        let now = ts("2026-03-01T00:00:00Z");
        assert!(a.allows_any_at(now));
        assert_eq!(
            a.registries_at(now)
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
            ["quay.io"]
        );
        assert!(!a.allows_any_at(ts("2026-06-01T00:00:00Z")));
        let parts: Vec<(Option<String>, Expiry)> = a
            .parts_at(now)
            .map(|(p, e)| (p.map(ToString::to_string), e))
            .collect();
        assert_eq!(
            parts,
            [
                (None, Expiry::At(ts("2026-06-01T00:00:00Z"))),
                (
                    Some("quay.io".into()),
                    Expiry::At(ts("2027-01-01T00:00:00Z"))
                ),
            ]
        );
        a.retain_active_at(now);
        assert_eq!(a.next_expiry(), Some(ts("2026-06-01T00:00:00Z")));
        a.retain_active_at(ts("2030-01-01T00:00:00Z"));
        assert!(a.is_empty());
        assert!(a.to_labels().unwrap().is_empty());
    }

    #[test]
    fn foreign_and_broken_labels() {
        let input = labels(&[
            ("kubernetes.io/metadata.name", "tool-a"),
            ("toolforge.org/tool", "a"),
            ("byoc.toolforge.org/quay.io", "never"),
            ("byoc.toolforge.org/evil", "never"),
            ("byoc.toolforge.org/ghcr.io", "tomorrow"),
        ]);
        let (allowance, errors) = Allowance::from_labels(&input);
        assert_eq!(
            allowance
                .registries_at(Timestamp::UNIX_EPOCH)
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
            ["quay.io"]
        );
        assert!(!allowance.allows_any_at(Timestamp::UNIX_EPOCH));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(owned_labels(&input).len(), 3);
        assert!(is_owned_key(ANY_KEY));
        assert!(!is_owned_key("byoc.toolforge.org.evil/any"));
    }

    #[test]
    fn invalid_grant_entries_are_errors() {
        assert!(Allowance::for_grant(&spec(&["quay.io", "not a registry"], None)).is_err());
    }
}

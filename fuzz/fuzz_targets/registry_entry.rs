//! The registry allow-list entry parser (`RegistryPattern: FromStr`) and its namespace-label
//! encoding: never panics; an accepted entry prints canonically and re-parses equal; its label
//! (when it fits) is a valid Kubernetes label key that decodes to the same entry; and any label
//! key under the prefix that decodes at all is the canonical encoding of what it decodes to, so
//! two different label keys can never carry the same grant. The CRD's CEL rule
//! (`REGISTRY_PATTERN_REGEX`) accepts exactly what the parser accepts, so the API server never
//! stores a grant the controller and webhook read differently.
#![no_main]

use std::collections::BTreeMap;

use byoc_api::RegistryPattern;
use byoc_api::labels::{self, Allowance};
use libfuzzer_sys::fuzz_target;
use regex::Regex;
use std::sync::LazyLock;

static CRD_RULE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(byoc_api::REGISTRY_PATTERN_REGEX).expect("the regex compiles"));

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    entry(text);
    label_key(text);
});

fn entry(text: &str) {
    let parsed = text.parse::<RegistryPattern>();
    assert_eq!(
        parsed.is_ok(),
        CRD_RULE.is_match(text),
        "the parser and the CRD's rule disagree on {text:?}: {parsed:?}"
    );
    let Ok(pattern) = parsed else {
        return;
    };
    let shown = pattern.to_string();
    let again: RegistryPattern = shown
        .parse()
        .unwrap_or_else(|e| panic!("{text:?} parsed, but its Display {shown:?} does not: {e}"));
    assert_eq!(again, pattern, "{text:?} → {shown:?} re-parses differently");
    assert_eq!(again.to_string(), shown);
    // An accepted entry is already canonical, except that `index.docker.io` is `docker.io`.
    let expected = match text.strip_prefix("index.docker.io") {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("docker.io{rest}"),
        _ => text.to_owned(),
    };
    assert_eq!(shown, expected, "{text:?} is not printed canonically");
    assert_eq!(pattern.host(), pattern.host().to_ascii_lowercase());
    if let Some(path) = pattern.path() {
        assert!(!path.starts_with('/') && !path.ends_with('/') && !path.is_empty());
    }

    let spec = byoc_api::ByocGrantSpec {
        namespace: "tool-fuzz".to_owned(),
        reason: "fuzz".to_owned(),
        registries: vec![text.to_owned()],
        any_registry: false,
        namespace_uid: None,
        expires_at: None,
        requirements: None,
    };
    let allowance = Allowance::for_grant(&spec).expect("an accepted entry makes an allowance");
    let Ok(labels) = allowance.to_labels() else {
        // Too long for a label name; the CRD refuses such entries.
        return;
    };
    assert_eq!(labels.len(), 1, "{text:?} → {labels:?}");
    for key in labels.keys() {
        let name = key.strip_prefix(labels::PREFIX).expect("under the prefix");
        assert!(
            is_label_name(name),
            "{text:?} encodes to an invalid label key {key:?}"
        );
    }
    let (decoded, errors) = Allowance::from_labels(&labels);
    assert!(errors.is_empty(), "{text:?} → {labels:?} → {errors:?}");
    assert_eq!(
        decoded, allowance,
        "{text:?} → {labels:?} decodes differently"
    );
}

fn label_key(text: &str) {
    // The API server stores only valid label names; the decoder need not judge others.
    if !is_label_name(text) {
        return;
    }
    let key = format!("{}{text}", labels::PREFIX);
    let labels = BTreeMap::from([(key.clone(), "never".to_owned())]);
    let (allowance, errors) = Allowance::from_labels(&labels);
    if !errors.is_empty() {
        assert!(
            allowance.is_empty(),
            "{key:?} failed to decode but granted something"
        );
        return;
    }
    let encoded = allowance.to_labels().expect("a decoded allowance encodes");
    assert_eq!(
        encoded, labels,
        "{key:?} decodes to a grant whose canonical label differs"
    );
}

/// A Kubernetes label name: at most 63 characters, alphanumeric at both ends, `-_.` inside.
fn is_label_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

//! The image-reference parser (`ImageRef: FromStr`): never panics; an accepted reference prints
//! (Display) as a normalized reference that parses back to an equal value and prints the same;
//! its parts obey the grammar; it is never an image ID (restated on the string by
//! `byoc_fuzz::is_image_id`); and the platform registry allows it exactly when the raw string
//! names that registry, checked on the string rather than through the parser.
#![no_main]

use byoc_api::RegistryPattern;
use byoc_policy::ImageRef;
use libfuzzer_sys::fuzz_target;

const PLATFORM: &str = "docker-registry.tools.wmflabs.org";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        // The webhook only ever sees images inside JSON strings, which are UTF-8.
        return;
    };
    let parsed = match text.parse::<ImageRef>() {
        Ok(parsed) => parsed,
        Err(error) => {
            assert_eq!(error.reference(), text);
            return;
        }
    };

    assert!(
        !byoc_fuzz::is_image_id(text),
        "{text:?} is an image ID, but it parsed as {parsed}"
    );

    let shown = parsed.to_string();
    let again: ImageRef = shown
        .parse()
        .unwrap_or_else(|e| panic!("{text:?} parsed, but its Display {shown:?} does not: {e}"));
    assert_eq!(
        again, parsed,
        "{text:?} → {shown:?} re-parses to a different value"
    );
    assert_eq!(
        again.to_string(),
        shown,
        "Display is not stable for {text:?}"
    );

    let host = parsed.host();
    assert!(!host.is_empty(), "{text:?}: empty host");
    assert_eq!(
        host,
        host.to_ascii_lowercase(),
        "{text:?}: host not lowercase"
    );
    assert!(!parsed.path().is_empty(), "{text:?}: empty path");
    assert!(
        !parsed.path().bytes().any(|c| c.is_ascii_uppercase()),
        "{text:?}: uppercase path"
    );
    assert!(
        parsed.tag().is_some() || parsed.digest().is_some(),
        "{text:?}: neither tag nor digest after normalization"
    );
    assert!(
        !text.contains(char::is_whitespace) && !text.contains("://"),
        "{text:?} accepted with whitespace or a scheme"
    );

    // The platform registry: decided by the matcher, and restated on the raw string. A
    // reference written without a registry can never be on it (it resolves to docker.io).
    let platform: RegistryPattern = PLATFORM.parse().expect("the platform entry parses");
    let by_matcher = parsed.is_allowed_by(&platform);
    let lower = text.to_ascii_lowercase();
    let by_string = lower
        .strip_prefix(PLATFORM)
        .is_some_and(|rest| rest.starts_with('/'));
    assert_eq!(
        by_matcher, by_string,
        "{text:?}: the platform matcher says {by_matcher}, the raw string says {by_string}"
    );

    // A pattern made of the reference's own registry and path allows it; one that cuts the
    // last path component in the middle does not. (Known, fail-closed divergence: a reference
    // whose registry is written `index.docker.io` with an uppercase letter keeps that host, as
    // the runtimes do, while an entry `index.docker.io` is canonicalized to `docker.io`; no
    // entry matches such a reference, so it is refused.)
    if let Ok(own) = format!("{}/{}", parsed.registry(), parsed.path()).parse::<RegistryPattern>() {
        assert!(
            parsed.is_allowed_by(&own)
                || (own.host() == "docker.io" && parsed.host() != "docker.io"),
            "{text:?} not allowed by {own}"
        );
    }
    if let Some(shorter) = parsed
        .path()
        .strip_suffix(|c: char| c.is_ascii_alphanumeric())
        && !shorter.is_empty()
        && !shorter.ends_with(['/', '.', '_', '-'])
        && let Ok(cut) = format!("{}/{shorter}", parsed.registry()).parse::<RegistryPattern>()
    {
        assert!(
            !parsed.is_allowed_by(&cut),
            "{text:?} allowed by {cut}, which ends inside a path component"
        );
    }
});

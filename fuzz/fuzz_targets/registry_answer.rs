//! The registry-answer reader (`byoc_policy::oci`) and the requirement decision
//! (`byoc_policy::requirement`) on hostile answers: a tool's registry answers every lookup the
//! decision asks for with the next document of the input (documents are separated by a 0xFF
//! byte; the first byte of each picks its Content-Type), while the platform's base image is
//! answered honestly. Reading never panics, and the decision is never `Satisfied` unless an
//! oracle that reads the raw JSON on its own (not through the reader) agrees: every image a
//! linux/amd64 node could run has as many layers as diff_ids, begins with the base's layers
//! and diff_ids, and has a source label under the tool's repository prefix.
#![no_main]

use std::collections::{BTreeSet, HashMap};

use byoc_api::requirements::{BaseImage, Requirements};
use byoc_policy::ImageRef;
use byoc_policy::oci::{self, Digest, Platform};
use byoc_policy::requirement::{Answer, Context, Facts, Lookup, Verdict, check};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const BASE: &str = "tools-harbor.wmcloud.org/toolforge/base";
const TOOL: &str = "tools-harbor.wmcloud.org/tool-foo/web";
const SOURCE: &str = "https://gitlab.wikimedia.org/toolforge-repos/foo";

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

/// The honest base: layers 1, 2 with diff_ids 3, 4; manifest b, config c.
fn base_answers() -> Vec<(String, Option<&'static str>, String)> {
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": oci::OCI_MANIFEST,
        "config": { "mediaType": oci::OCI_CONFIG, "digest": digest('c'), "size": 1 },
        "layers": [
            { "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest('1'), "size": 1 },
            { "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest('2'), "size": 1 },
        ],
    });
    let config = serde_json::json!({
        "os": "linux", "architecture": "amd64",
        "rootfs": { "type": "layers", "diff_ids": [digest('3'), digest('4')] },
    });
    vec![
        (digest('b'), Some(oci::OCI_MANIFEST), manifest.to_string()),
        (digest('c'), None, config.to_string()),
    ]
}

const CONTENT_TYPES: [Option<&str>; 5] = [
    None,
    Some(oci::OCI_MANIFEST),
    Some(oci::OCI_INDEX),
    Some(oci::DOCKER_MANIFEST),
    Some(oci::DOCKER_LIST),
];

fuzz_target!(|data: &[u8]| {
    let mut documents = data
        .split(|b| *b == 0xff)
        .map(|doc| match doc.split_first() {
            Some((first, body)) => (
                CONTENT_TYPES[usize::from(*first) % CONTENT_TYPES.len()],
                body,
            ),
            None => (None, doc),
        });
    // The raw answers, for the oracle: digest → body.
    let mut raw: HashMap<Digest, Vec<u8>> = HashMap::new();
    let mut facts = Facts::default();
    for (d, content_type, body) in base_answers() {
        let d: Digest = d.parse().expect("a digest");
        let manifest = oci::read_manifest(content_type, body.as_bytes());
        match content_type {
            Some(_) => {
                let m = manifest.expect("the base manifest reads");
                facts.manifests.insert(d.clone(), Answer::Found(m));
            }
            None => {
                let c = oci::read_config(body.as_bytes()).expect("the base config reads");
                facts.configs.insert(d.clone(), Answer::Found(c));
            }
        }
        raw.insert(d, body.into_bytes());
    }
    facts.tags.insert(
        (BASE.to_owned(), "latest".to_owned()),
        Answer::Found(digest('b').parse().expect("a digest")),
    );

    let image: ImageRef = format!("{TOOL}@{}", digest('a'))
        .parse()
        .expect("the image parses");
    let requirements = Requirements {
        built_on: vec![BaseImage(BASE.to_owned())],
        require_digest: true,
        source_from: vec!["https://gitlab.wikimedia.org/toolforge-repos/{tool}".to_owned()],
    };
    let platforms = ["linux/amd64".parse::<Platform>().expect("a platform")];
    let ctx = Context {
        namespace: "tool-foo",
        tool_prefix: "tool-",
        platforms: &platforms,
        bases: &[],
        now: jiff::Timestamp::UNIX_EPOCH,
    };
    for _ in 0..8 {
        let lookups: BTreeSet<Lookup> = match check(&image, &requirements, &ctx, &facts) {
            Verdict::NeedsLookup(lookups) => lookups,
            Verdict::Refused(refusal) => {
                assert!(!refusal.reason.is_empty());
                return;
            }
            Verdict::Satisfied(_) => {
                let shown: Vec<(String, String)> = raw
                    .iter()
                    .map(|(d, body)| (d.to_string(), String::from_utf8_lossy(body).into_owned()))
                    .collect();
                assert!(
                    truly_satisfied(&raw),
                    "satisfied, but the answers do not meet the requirements: {shown:#?}"
                );
                return;
            }
        };
        for lookup in lookups {
            let next = documents.next();
            match lookup {
                Lookup::Tag { repository, tag } => {
                    facts
                        .tags
                        .insert((repository, tag), Answer::Failed("no tags here".into()));
                }
                Lookup::Manifest { repository, digest } => {
                    assert_eq!(repository, TOOL, "asked the tool's registry for a base");
                    let answer = match next {
                        Some((content_type, body)) => {
                            raw.insert(digest.clone(), body.to_vec());
                            oci::read_manifest(content_type, body)
                                .map_or_else(|e| Answer::Failed(e.to_string()), Answer::Found)
                        }
                        None => Answer::Failed("no more answers".into()),
                    };
                    facts.manifests.insert(digest, answer);
                }
                Lookup::Config { repository, digest } => {
                    assert_eq!(repository, TOOL, "asked the tool's registry for a base");
                    let answer = match next {
                        Some((_, body)) => {
                            raw.insert(digest.clone(), body.to_vec());
                            oci::read_config(body)
                                .map_or_else(|e| Answer::Failed(e.to_string()), Answer::Found)
                        }
                        None => Answer::Failed("no more answers".into()),
                    };
                    facts.configs.insert(digest, answer);
                }
            }
        }
    }
});

/// Reads JSON however deep (the reader skips deep unknown fields; the oracle must read them).
fn json(body: &[u8]) -> Option<Value> {
    let mut de = serde_json::Deserializer::from_slice(body);
    de.disable_recursion_limit();
    serde::Deserialize::deserialize(&mut de).ok()
}

fn strings(value: &Value) -> Option<Vec<&str>> {
    value.as_array()?.iter().map(Value::as_str).collect()
}

/// The oracle: the tool image `sha256:aaa…` meets the requirements, read from the raw answers.
fn truly_satisfied(raw: &HashMap<Digest, Vec<u8>>) -> bool {
    let doc = |d: &str| -> Option<Value> { json(raw.get(&d.parse::<Digest>().ok()?)?) };
    let Some(top) = doc(&digest('a')) else {
        return false;
    };
    let image_ok = |manifest: &Value| -> bool {
        let Some(layers) = manifest["layers"].as_array().and_then(|l| {
            l.iter()
                .map(|l| l["digest"].as_str())
                .collect::<Option<Vec<_>>>()
        }) else {
            return false;
        };
        let Some(config) = manifest["config"]["digest"].as_str().and_then(doc) else {
            return false;
        };
        let Some(diff_ids) = strings(&config["rootfs"]["diff_ids"]) else {
            return false;
        };
        let source = config["config"]["Labels"]["org.opencontainers.image.source"].as_str();
        layers.len() == diff_ids.len()
            && layers.starts_with(&[digest('1').as_str(), digest('2').as_str()])
            && diff_ids.starts_with(&[digest('3').as_str(), digest('4').as_str()])
            && source.is_some_and(|s| s == SOURCE || s.starts_with(&format!("{SOURCE}/")))
    };
    match top["manifests"].as_array() {
        Some(entries) => {
            let runnable: Vec<&Value> = entries
                .iter()
                .filter(|e| {
                    let p = &e["platform"];
                    p.is_null()
                        || (p["os"]
                            .as_str()
                            .is_some_and(|os| os.eq_ignore_ascii_case("linux"))
                            && p["architecture"].as_str().is_some_and(|a| {
                                ["amd64", "x86_64", "x86-64"]
                                    .iter()
                                    .any(|x| a.eq_ignore_ascii_case(x))
                            }))
                })
                .collect();
            !runnable.is_empty()
                && runnable.iter().all(|e| {
                    e["digest"]
                        .as_str()
                        .and_then(doc)
                        .is_some_and(|m| image_ok(&m))
                })
        }
        None => image_ok(&top),
    }
}

use super::*;
use crate::oci::{DOCKER_MANIFEST, Descriptor, ImageManifest, IndexEntry, OCI_CONFIG, OCI_INDEX};
use byoc_api::requirements::BaseImage;

const BASE: &str = "tools-harbor.wmcloud.org/toolforge/heroku-runner";
const TOOL: &str = "tools-harbor.wmcloud.org/tool-foo/web";

/// A digest from a number.
fn d(n: u32) -> Digest {
    format!("sha256:{n:064x}").parse().unwrap()
}

/// The diff_id of layer `n` (layers and diff_ids differ, as compressed and uncompressed do).
fn diff(n: u32) -> u32 {
    n + 0x1_0000
}

/// A fake registry: every answer goes into the facts.
#[derive(Default)]
struct Registry {
    facts: Facts,
    next: u32,
}

impl Registry {
    fn fresh(&mut self) -> Digest {
        self.next += 1;
        d(0x10_0000 + self.next)
    }

    /// An image manifest with these layers and diff_ids (and source label); its digest.
    fn image_with(&mut self, layers: &[u32], diff_ids: &[u32], source: Option<&str>) -> Digest {
        let (manifest, config) = (self.fresh(), self.fresh());
        let descriptor = |media_type: &str, digest: Digest| Descriptor {
            media_type: media_type.to_owned(),
            digest,
            size: 1,
        };
        self.facts.manifests.insert(
            manifest.clone(),
            Answer::Found(Manifest::Image(ImageManifest {
                config: descriptor(OCI_CONFIG, config.clone()),
                layers: layers.iter().map(|n| descriptor("layer", d(*n))).collect(),
            })),
        );
        let labels = source
            .map(|s| (SOURCE_LABEL.to_owned(), s.to_owned()))
            .into_iter()
            .collect();
        self.facts.configs.insert(
            config,
            Answer::Found(ImageConfig {
                platform: None,
                diff_ids: diff_ids.iter().map(|n| d(*n)).collect(),
                labels,
            }),
        );
        manifest
    }

    fn image(&mut self, layers: &[u32]) -> Digest {
        let diff_ids: Vec<u32> = layers.iter().map(|n| diff(*n)).collect();
        self.image_with(layers, &diff_ids, Some(SOURCE))
    }

    /// An index of (platform, manifest) entries; its digest.
    fn index(&mut self, entries: &[(Option<&str>, Digest)]) -> Digest {
        let digest = self.fresh();
        let entries = entries
            .iter()
            .map(|(platform, digest)| IndexEntry {
                manifest: Descriptor {
                    media_type: DOCKER_MANIFEST.to_owned(),
                    digest: digest.clone(),
                    size: 1,
                },
                platform: platform.map(|p| {
                    let parts: Vec<&str> = p.split('/').collect();
                    Platform::new(parts[0], parts[1], parts.get(2).copied())
                }),
            })
            .collect();
        self.facts
            .manifests
            .insert(digest.clone(), Answer::Found(Manifest::Index(entries)));
        digest
    }

    fn tag(&mut self, repository: &str, tag: &str, digest: &Digest) {
        self.facts.tags.insert(
            (repository.to_owned(), tag.to_owned()),
            Answer::Found(digest.clone()),
        );
    }
}

const SOURCE: &str = "https://gitlab.wikimedia.org/toolforge-repos/foo";

fn built_on(entries: &[&str]) -> Requirements {
    Requirements {
        built_on: entries.iter().map(|e| BaseImage((*e).to_owned())).collect(),
        ..Requirements::default()
    }
}

fn amd64() -> Vec<Platform> {
    vec![DEFAULT_PLATFORM.parse().unwrap()]
}

/// The context of tool-foo's checks now.
fn context<'a>(platforms: &'a [Platform], bases: &'a [ListedBase]) -> Context<'a> {
    Context {
        namespace: "tool-foo",
        tool_prefix: "tool-",
        platforms,
        bases,
        now: now(),
    }
}

fn now() -> Timestamp {
    "2026-12-07T00:00:00Z".parse().unwrap()
}

/// A registry holding the current base `BASE:latest` with layers 1, 2.
fn with_base() -> Registry {
    let mut r = Registry::default();
    let base = r.image(&[1, 2]);
    r.tag(BASE, "latest", &base);
    r
}

fn decide(
    r: &Registry,
    image: &str,
    req: &Requirements,
    bases: &[ListedBase],
    platforms: &[Platform],
) -> Verdict {
    let ctx = context(platforms, bases);
    check(&image.parse().unwrap(), req, &ctx, &r.facts)
}

fn pinned(r: &mut Registry, digest: &Digest) -> String {
    r.tag(TOOL, "1", digest);
    format!("{TOOL}@{digest}")
}

#[track_caller]
fn refused(verdict: &Verdict, requirement: Requirement, want: &str) {
    match verdict {
        Verdict::Refused(r) => {
            assert_eq!(r.requirement, requirement, "{r}");
            assert!(r.reason.contains(want), "want {want:?} in: {r}");
        }
        other => panic!("want a refusal with {want:?}, got {other:?}"),
    }
}

#[track_caller]
fn satisfied(verdict: &Verdict) -> &[BuiltOn] {
    match verdict {
        Verdict::Satisfied(bases) => bases,
        other => panic!("want satisfied, got {other:?}"),
    }
}

#[test]
fn built_on_by_layer_prefix() {
    let req = built_on(&[BASE]);
    // (what, image layers, diff_ids or None for the matching ones, expected refusal text)
    type Case<'a> = (&'a str, &'a [u32], Option<&'a [u32]>, Option<&'a str>);
    let cases: &[Case] = &[
        ("built on the base", &[1, 2, 3], None, None),
        ("equal to the base", &[1, 2], None, None),
        (
            "re-based: same top layers, other base",
            &[9, 2, 3],
            None,
            Some("is not the first layer of any listed base image"),
        ),
        (
            "a different second layer",
            &[1, 9, 3],
            None,
            Some("shares the first 1 of the 2 layers"),
        ),
        (
            "shorter than the base",
            &[1],
            None,
            Some("then has no more layers"),
        ),
        ("no layers", &[], None, Some("has no layers")),
        (
            "layers and diff_ids disagree in count",
            &[1, 2, 3],
            Some(&[diff(1), diff(2)]),
            Some("3 layers in its manifest but 2 diff_ids"),
        ),
        (
            "layers match, diff_ids do not",
            &[1, 2, 3],
            Some(&[diff(1), 77, diff(3)]),
            Some("diff_ids do not begin"),
        ),
        (
            "the base's layers repeated",
            &[1, 1, 2],
            None,
            Some("shares the first 1"),
        ),
    ];
    for (what, layers, diff_ids, want) in cases {
        let mut r = with_base();
        let diff_ids: Vec<u32> = diff_ids.map_or_else(
            || layers.iter().map(|n| diff(*n)).collect(),
            <[u32]>::to_vec,
        );
        let image = r.image_with(layers, &diff_ids, None);
        let reference = pinned(&mut r, &image);
        let verdict = decide(&r, &reference, &req, &[], &amd64());
        match want {
            None => {
                let bases = satisfied(&verdict);
                assert_eq!(bases.len(), 1, "{what}");
                assert_eq!(bases[0].state, BaseState::Current, "{what}");
                assert!(
                    bases[0].base.starts_with(&format!("{BASE}:latest@sha256:")),
                    "{what}: {bases:?}"
                );
            }
            Some(want) => {
                let Verdict::Refused(refusal) = &verdict else {
                    panic!("{what}: {verdict:?}")
                };
                assert!(refusal.reason.contains(want), "{what}: {refusal}");
                assert!(
                    refusal
                        .reason
                        .starts_with(&format!("not built on {BASE}: ")),
                    "{what}: {refusal}"
                );
            }
        }
    }
}

#[test]
fn repeated_layers_compare_in_order() {
    let mut r = Registry::default();
    let base = r.image(&[1, 1]);
    r.tag(BASE, "latest", &base);
    let req = built_on(&[BASE]);
    let good = r.image(&[1, 1, 3]);
    let bad = r.image(&[1, 3, 1]);
    assert!(matches!(
        decide(&r, &format!("{TOOL}@{good}"), &req, &[], &amd64()),
        Verdict::Satisfied(_)
    ));
    refused(
        &decide(&r, &format!("{TOOL}@{bad}"), &req, &[], &amd64()),
        Requirement::BuiltOn,
        "shares the first 1 of the 2",
    );
}

#[test]
fn an_empty_base_proves_nothing() {
    let mut r = Registry::default();
    let base = r.image(&[]);
    r.tag(BASE, "latest", &base);
    let image = r.image(&[5]);
    refused(
        &decide(
            &r,
            &format!("{TOOL}@{image}"),
            &built_on(&[BASE]),
            &[],
            &amd64(),
        ),
        Requirement::BuiltOn,
        "has no layers and proves nothing",
    );
}

#[test]
fn older_and_deprecated_bases() {
    let mut r = with_base();
    let old = r.image(&[7, 8]);
    let older = r.image(&[6]);
    let bases = [
        ListedBase {
            image: format!("{BASE}:latest@{old}").parse().unwrap(),
            deprecated: None,
        },
        ListedBase {
            image: format!("{BASE}:latest@{older}").parse().unwrap(),
            deprecated: Some("2026-01-01T00:00:00Z".parse().unwrap()),
        },
    ];
    let req = built_on(&[BASE]);
    let on_old = r.image(&[7, 8, 9]);
    let found = decide(&r, &format!("{TOOL}@{on_old}"), &req, &bases, &amd64());
    let found = satisfied(&found);
    assert_eq!(
        found[0].state,
        BaseState::Older {
            rebuild_on: Some(format!("{BASE}:latest"))
        }
    );
    assert!(
        found[0]
            .summary()
            .contains(&format!("rebuild on {BASE}:latest")),
        "{}",
        found[0].summary()
    );
    let on_older = r.image(&[6, 9]);
    let found = decide(&r, &format!("{TOOL}@{on_older}"), &req, &bases, &amd64());
    assert!(matches!(
        satisfied(&found)[0].state,
        BaseState::Deprecated { .. }
    ));
    assert!(
        satisfied(&found)[0]
            .summary()
            .contains("deprecated since 2026-01-01")
    );
    // Not listed: an image on an older base the platform forgot is refused.
    refused(
        &decide(&r, &format!("{TOOL}@{on_old}"), &req, &[], &amd64()),
        Requirement::BuiltOn,
        "first layer",
    );
    // A tag pin covers only the older images of that tag.
    let pinned_24 = built_on(&[&format!("{BASE}:24")]);
    assert!(matches!(
        decide(
            &r,
            &format!("{TOOL}@{on_old}"),
            &pinned_24,
            &bases,
            &amd64()
        ),
        Verdict::NeedsLookup(_)
    ));
}

#[test]
fn every_platform_of_an_index_is_checked() {
    let req = built_on(&[BASE]);
    let both: Vec<Platform> = vec![
        "linux/amd64".parse().unwrap(),
        "linux/arm64".parse().unwrap(),
    ];
    type Entries<'a> = &'a [(Option<&'a str>, bool)];
    // (what, entries (platform, built on the base), node platforms, expected refusal text)
    let cases: &[(&str, Entries, &[Platform], Option<&str>)] = &[
        (
            "all good",
            &[(Some("linux/amd64"), true), (Some("linux/arm64"), true)],
            &both,
            None,
        ),
        (
            "one bad platform",
            &[(Some("linux/amd64"), true), (Some("linux/arm64"), false)],
            &both,
            Some("linux/arm64"),
        ),
        (
            "a bad platform the nodes do not run",
            &[(Some("linux/amd64"), true), (Some("linux/arm64"), false)],
            &amd64(),
            None,
        ),
        (
            "a missing platform",
            &[(Some("linux/arm64"), true)],
            &amd64(),
            Some("has no image for linux/amd64"),
        ),
        (
            "a bad unknown variant",
            &[(Some("linux/amd64"), true), (Some("linux/amd64/v3"), false)],
            &amd64(),
            Some("linux/amd64/v3"),
        ),
        (
            "a bad alias of amd64",
            &[(Some("linux/amd64"), true), (Some("LINUX/x86_64"), false)],
            &amd64(),
            Some("first layer"),
        ),
        (
            "a bad entry without platform",
            &[(Some("linux/amd64"), true), (None, false)],
            &amd64(),
            Some("first layer"),
        ),
        (
            // containerd reads an empty OS as its own and keeps the index's order among
            // equals, so it would run the first entry.
            "a bad entry without an OS before a good one",
            &[(Some("/amd64"), false), (Some("linux/amd64"), true)],
            &amd64(),
            Some("first layer"),
        ),
        (
            // containerd runs 386 on amd64 before trying entries without platform.
            "a good entry without platform and a bad 386 one",
            &[(None, true), (Some("linux/386"), false)],
            &amd64(),
            Some("linux/386"),
        ),
        (
            "a bad arm/v7 entry on arm64 nodes",
            &[(Some("linux/arm64"), true), (Some("linux/arm/v7"), false)],
            &["linux/arm64".parse().unwrap()],
            Some("linux/arm/v7"),
        ),
        (
            "an attestation manifest",
            &[
                (Some("linux/amd64"), true),
                (Some("unknown/unknown"), false),
            ],
            &amd64(),
            None,
        ),
    ];
    for (what, entries, platforms, want) in cases {
        let mut r = with_base();
        let images: Vec<(Option<&str>, Digest)> = entries
            .iter()
            .map(|(p, good)| {
                (
                    *p,
                    if *good {
                        r.image(&[1, 2, 3])
                    } else {
                        r.image(&[9, 3])
                    },
                )
            })
            .collect();
        let index = r.index(&images);
        let verdict = decide(&r, &format!("{TOOL}@{index}"), &req, &[], platforms);
        match want {
            None => assert!(
                matches!(verdict, Verdict::Satisfied(_)),
                "{what}: {verdict:?}"
            ),
            Some(want) => match &verdict {
                Verdict::Refused(refusal) => {
                    assert!(refusal.reason.contains(want), "{what}: {refusal}")
                }
                other => panic!("{what}: {other:?}"),
            },
        }
    }
}

#[test]
fn nested_indexes_are_refused() {
    let mut r = with_base();
    let image = r.image(&[1, 2, 3]);
    let inner = r.index(&[(Some("linux/amd64"), image)]);
    let outer = r.index(&[(Some("linux/amd64"), inner)]);
    if let Some(Answer::Found(Manifest::Index(entries))) = r.facts.manifests.get_mut(&outer) {
        entries[0].manifest.media_type = OCI_INDEX.to_owned();
    }
    refused(
        &decide(
            &r,
            &format!("{TOOL}@{outer}"),
            &built_on(&[BASE]),
            &[],
            &amd64(),
        ),
        Requirement::BuiltOn,
        "nested indexes are not read",
    );
}

#[test]
fn require_digest_gives_the_digest_to_copy() {
    let mut r = Registry::default();
    let image = r.image(&[1]);
    let req = Requirements {
        require_digest: true,
        ..Requirements::default()
    };
    let tagged = format!("{TOOL}:1");
    // The message needs the digest the tag points to now.
    let Verdict::NeedsLookup(need) = decide(&r, &tagged, &req, &[], &amd64()) else {
        panic!()
    };
    assert_eq!(
        need,
        BTreeSet::from([Lookup::Tag {
            repository: TOOL.into(),
            tag: "1".into()
        }])
    );
    r.tag(TOOL, "1", &image);
    refused(
        &decide(&r, &tagged, &req, &[], &amd64()),
        Requirement::RequireDigest,
        &format!("{TOOL}@{image} (the image the tag points to now)"),
    );
    // An untagged reference is `latest`.
    r.tag(TOOL, "latest", &image);
    refused(
        &decide(&r, TOOL, &req, &[], &amd64()),
        Requirement::RequireDigest,
        &format!("{TOOL}@{image}"),
    );
    // A failed lookup still refuses, and says why.
    r.facts.tags.insert(
        (TOOL.into(), "2".into()),
        Answer::Failed("registry tools-harbor.wmcloud.org: 503".into()),
    );
    refused(
        &decide(&r, &format!("{TOOL}:2"), &req, &[], &amd64()),
        Requirement::RequireDigest,
        "503",
    );
    // A digest, with or without a tag, needs no lookup at all.
    let empty = Facts::default();
    for reference in [format!("{TOOL}@{image}"), format!("{TOOL}:1@{image}")] {
        let platforms = amd64();
        let ctx = context(&platforms, &[]);
        assert_eq!(
            check(&reference.parse().unwrap(), &req, &ctx, &empty),
            Verdict::Satisfied(vec![])
        );
    }
}

#[test]
fn source_from_matches_on_segment_boundaries() {
    let req = Requirements {
        source_from: vec!["https://gitlab.wikimedia.org/toolforge-repos/{tool}".into()],
        ..Requirements::default()
    };
    let cases: &[(Option<&str>, Option<&str>)] = &[
        (
            Some("https://gitlab.wikimedia.org/toolforge-repos/foo"),
            None,
        ),
        (
            Some("https://gitlab.wikimedia.org/toolforge-repos/foo/sub-dir"),
            None,
        ),
        (
            Some("https://gitlab.wikimedia.org/toolforge-repos/foobar"),
            Some("is not under an allowed source"),
        ),
        (
            Some("https://gitlab.wikimedia.org/toolforge-repos/foo/../bar"),
            Some("is not under"),
        ),
        (
            Some("https://gitlab.wikimedia.org/toolforge-repos/foo/%2e%2e/bar"),
            Some("is not under"),
        ),
        (
            Some("https://gitlab.wikimedia.org/toolforge-repos/foo?x=/"),
            Some("is not under"),
        ),
        (
            Some("https://gitlab.wikimedia.org/toolforge-repos/foo@evil.org/x"),
            Some("is not under"),
        ),
        (
            Some("https://gitlab.wikimedia.org/toolforge-repos/foo/"),
            Some("is not under"),
        ),
        (
            Some("https://gitlab.wikimedia.org/toolforge-repos/bar"),
            Some("allowed: https://gitlab.wikimedia.org/toolforge-repos/foo"),
        ),
        (None, Some("has no org.opencontainers.image.source label")),
    ];
    for (source, want) in cases {
        let mut r = Registry::default();
        let image = r.image_with(&[1], &[diff(1)], *source);
        let verdict = decide(&r, &format!("{TOOL}@{image}"), &req, &[], &amd64());
        match want {
            None => assert_eq!(verdict, Verdict::Satisfied(vec![]), "{source:?}"),
            Some(want) => refused(&verdict, Requirement::SourceFrom, want),
        }
    }
}

#[test]
fn templates_never_widen_a_source() {
    let req = Requirements {
        source_from: vec!["https://gitlab.wikimedia.org/toolforge-repos/{tool}".into()],
        ..Requirements::default()
    };
    let mut r = Registry::default();
    let image = r.image_with(
        &[1],
        &[diff(1)],
        Some("https://gitlab.wikimedia.org/toolforge-repos/x"),
    );
    let reference: ImageRef = format!("{TOOL}@{image}").parse().unwrap();
    for namespace in ["tool-", "other", "tool-../x", "tool-a/b", ""] {
        let ctx = Context {
            namespace,
            tool_prefix: "tool-",
            platforms: &amd64(),
            bases: &[],
            now: now(),
        };
        let verdict = check(&reference, &req, &ctx, &r.facts);
        refused(
            &verdict,
            Requirement::SourceFrom,
            "no allowed source applies",
        );
    }
}

#[test]
fn missing_and_failed_answers_never_satisfy() {
    let req = Requirements {
        built_on: vec![BaseImage(BASE.into())],
        source_from: vec![SOURCE.into()],
        ..Requirements::default()
    };
    let mut r = with_base();
    let image = r.image(&[1, 2, 3]);
    let reference = format!("{TOOL}@{image}");
    assert!(matches!(
        decide(&r, &reference, &req, &[], &amd64()),
        Verdict::Satisfied(_)
    ));

    // Drop each answer in turn: the verdict asks for it; fail it: the verdict refuses.
    let keys: Vec<Digest> = r
        .facts
        .manifests
        .keys()
        .chain(r.facts.configs.keys())
        .cloned()
        .collect();
    for key in keys {
        let mut missing = Registry {
            facts: r.facts.clone(),
            next: 0,
        };
        missing.facts.manifests.remove(&key);
        missing.facts.configs.remove(&key);
        let Verdict::NeedsLookup(need) = decide(&missing, &reference, &req, &[], &amd64()) else {
            panic!("{key}")
        };
        assert!(need.iter().any(|l| matches!(l, Lookup::Manifest { digest, .. } | Lookup::Config { digest, .. } if *digest == key)), "{need:?}");
        let mut failed = missing;
        if r.facts.manifests.contains_key(&key) {
            failed
                .facts
                .manifests
                .insert(key.clone(), Answer::Failed("hostile".into()));
        } else {
            failed
                .facts
                .configs
                .insert(key.clone(), Answer::Failed("hostile".into()));
        }
        let verdict = decide(&failed, &reference, &req, &[], &amd64());
        assert!(
            matches!(&verdict, Verdict::Refused(r) if r.reason.contains("hostile")),
            "{verdict:?}"
        );
    }
    let mut untagged = Registry {
        facts: r.facts.clone(),
        next: 0,
    };
    untagged.facts.tags.clear();
    assert_eq!(
        decide(&untagged, &reference, &req, &[], &amd64()),
        Verdict::NeedsLookup(BTreeSet::from([Lookup::Tag {
            repository: BASE.into(),
            tag: "latest".into()
        }]))
    );
}

#[test]
fn one_readable_base_is_enough() {
    let mut r = with_base();
    let old = d(0xdead);
    r.facts
        .manifests
        .insert(old.clone(), Answer::Failed("unreachable".into()));
    let bases = [ListedBase {
        image: format!("{BASE}@{old}").parse().unwrap(),
        deprecated: None,
    }];
    let image = r.image(&[1, 2, 3]);
    let verdict = decide(
        &r,
        &format!("{TOOL}@{image}"),
        &built_on(&[BASE]),
        &bases,
        &amd64(),
    );
    assert!(matches!(verdict, Verdict::Satisfied(_)), "{verdict:?}");
    // And when it is not, the failure is named.
    let other = r.image(&[4]);
    refused(
        &decide(
            &r,
            &format!("{TOOL}@{other}"),
            &built_on(&[BASE]),
            &bases,
            &amd64(),
        ),
        Requirement::BuiltOn,
        "unreachable",
    );
}

#[test]
fn prefixes() {
    let p = "https://gitlab.wikimedia.org/toolforge-repos/foo";
    for (source, under) in [
        (p, true),
        (
            "https://gitlab.wikimedia.org/toolforge-repos/foo/a/b.c",
            true,
        ),
        ("https://gitlab.wikimedia.org/toolforge-repos/foobar", false),
        ("https://gitlab.wikimedia.org/toolforge-repos/fo", false),
        ("https://gitlab.wikimedia.org/toolforge-repos/foo//x", false),
        (
            "https://gitlab.wikimedia.org/toolforge-repos/foo/./x",
            false,
        ),
        (
            "https://gitlab.wikimedia.org/toolforge-repos/foo/a b",
            false,
        ),
        ("https://gitlab.wikimedia.org/toolforge-repos/foo#x", false),
        ("HTTPS://gitlab.wikimedia.org/toolforge-repos/foo", false),
    ] {
        assert_eq!(is_under(source, p), under, "{source}");
    }
    assert!(is_under("https://x.org/a/b", "https://x.org/a/"));
}

#[test]
fn reports_name_the_base() {
    let mut r = with_base();
    let old = r.image(&[7, 8]);
    let bases = [
        ListedBase {
            image: format!("{BASE}:latest").parse().unwrap(),
            deprecated: None,
        },
        ListedBase {
            image: format!("{BASE}:latest@{old}").parse().unwrap(),
            deprecated: None,
        },
    ];
    let platforms = amd64();
    let ctx = context(&platforms, &bases);
    let on_old = r.image(&[7, 8, 9]);
    let verdict = base_of(&format!("{TOOL}@{on_old}").parse().unwrap(), &ctx, &r.facts);
    assert_eq!(
        satisfied(&verdict)[0].summary(),
        format!("built on {BASE}:latest@{old}, an older base image: rebuild on {BASE}:latest")
    );
    let debian = r.image(&[42]);
    refused(
        &base_of(&format!("{TOOL}@{debian}").parse().unwrap(), &ctx, &r.facts),
        Requirement::BuiltOn,
        "not built on",
    );
    // Without listed bases there is nothing to report.
    assert_eq!(
        base_of(
            &format!("{TOOL}@{debian}").parse().unwrap(),
            &Context { bases: &[], ..ctx },
            &r.facts
        ),
        Verdict::Satisfied(vec![])
    );
}

#[test]
fn a_cold_check_asks_for_the_image_and_its_bases_at_once() {
    let r = Registry::default();
    let image = d(0xabc);
    let Verdict::NeedsLookup(need) = decide(
        &r,
        &format!("{TOOL}@{image}"),
        &built_on(&[BASE]),
        &[],
        &amd64(),
    ) else {
        panic!()
    };
    assert_eq!(
        need,
        BTreeSet::from([
            Lookup::Tag {
                repository: BASE.into(),
                tag: "latest".into()
            },
            Lookup::Manifest {
                repository: TOOL.into(),
                digest: image
            },
        ])
    );
}

mod settle {
    use super::*;
    use crate::config::{FailureMode, FailureModes};
    use crate::requirement::pending::{Alternative, Origin, Pending, Settled, Unfinished};

    /// The review's budget ran out: an outage.
    fn budget_out() -> Unfinished {
        Unfinished {
            why: "the budget ran out".into(),
            outage: true,
        }
    }
    use crate::workload::ContainerKind;

    fn pending(image: &str, alternatives: &[Requirements]) -> Pending {
        Pending {
            subject: "Pod tool-foo/p".into(),
            kind: ContainerKind::Container,
            container: "c".into(),
            image: image.into(),
            reference: image.parse().unwrap(),
            alternatives: alternatives
                .iter()
                .map(|r| Alternative {
                    origin: Origin::Grant("tools-harbor.wmcloud.org".into()),
                    requirements: r.clone(),
                })
                .collect(),
        }
    }

    fn run(r: &Registry, p: &Pending, modes: FailureModes) -> Settled {
        let platforms = amd64();
        let ctx = context(&platforms, &[]);
        assert!(p.needs(&ctx, &r.facts).is_empty(), "the facts are complete");
        p.settle(&ctx, &r.facts, modes, &budget_out())
    }

    const ALLOW: FailureModes = FailureModes {
        built_on: FailureMode::Allow,
        source_from: FailureMode::Allow,
    };

    /// (what, failure modes, expected: None = met without warnings, Some((requirement,
    /// lookup failed, text)) = refused, or "softened" = met with a warning)
    #[test]
    fn failure_mode_allow_softens_only_failed_lookups() {
        let both = Requirements {
            source_from: vec!["https://gitlab.wikimedia.org/toolforge-repos/{tool}".into()],
            ..built_on(&[BASE])
        };
        let digest_too = Requirements {
            require_digest: true,
            ..both.clone()
        };
        let mut r = with_base();
        let good = r.image(&[1, 2, 3]);
        let rebased = r.image(&[9, 2, 3]);
        let unread = r.image(&[1, 2, 4]);
        // The config of `unread` could not be fetched.
        let Some(Answer::Found(Manifest::Image(m))) = r.facts.manifests.get(&unread) else {
            panic!("an image")
        };
        let config = m.config.digest.clone();
        r.facts.configs.insert(
            config,
            Answer::Unavailable("registry tools-harbor.wmcloud.org answered HTTP 503".into()),
        );
        r.tag(TOOL, "latest", &good);
        let pin = format!("{TOOL}@{good}");
        type Case<'a> = (
            &'a str,
            String,
            &'a Requirements,
            FailureModes,
            Result<bool, (Requirement, bool, &'a str)>,
        );
        let cases: Vec<Case> = vec![
            (
                "met",
                format!("{TOOL}@{good}"),
                &both,
                FailureModes::default(),
                Ok(false),
            ),
            (
                "re-based, fail",
                format!("{TOOL}@{rebased}"),
                &both,
                FailureModes::default(),
                Err((Requirement::BuiltOn, false, "is not the first layer")),
            ),
            (
                "re-based, allow: checked and not met stays refused",
                format!("{TOOL}@{rebased}"),
                &both,
                ALLOW,
                Err((Requirement::BuiltOn, false, "is not the first layer")),
            ),
            (
                "config lookup failed, fail",
                format!("{TOOL}@{unread}"),
                &both,
                FailureModes::default(),
                Err((Requirement::BuiltOn, true, "HTTP 503")),
            ),
            (
                "config lookup failed, allow",
                format!("{TOOL}@{unread}"),
                &both,
                ALLOW,
                Ok(true),
            ),
            (
                "config lookup failed, builtOn allow, sourceFrom fail",
                format!("{TOOL}@{unread}"),
                &both,
                FailureModes {
                    built_on: FailureMode::Allow,
                    source_from: FailureMode::Fail,
                },
                Err((Requirement::SourceFrom, true, "HTTP 503")),
            ),
            (
                "a tag under requireDigest, allow",
                format!("{TOOL}:latest"),
                &digest_too,
                ALLOW,
                Err((Requirement::RequireDigest, false, &pin)),
            ),
        ];
        for (what, image, req, modes, want) in cases {
            let settled = run(&r, &pending(&image, std::slice::from_ref(req)), modes);
            match (want, &settled) {
                (Ok(warned), Settled::Met { softened }) => {
                    assert_eq!(!softened.is_empty(), warned, "{what}: {softened:?}");
                    if warned {
                        assert!(
                            softened[0].contains("failureMode allow")
                                && softened[0].contains("HTTP 503"),
                            "{what}: {softened:?}"
                        );
                    }
                }
                (Err((requirement, failed, text)), Settled::Refused { unmet, .. }) => {
                    assert_eq!(
                        (unmet.requirement, unmet.lookup_failed),
                        (requirement, failed),
                        "{what}: {unmet:?}"
                    );
                    assert!(
                        unmet.reason.contains(text),
                        "{what}: want {text:?} in {}",
                        unmet.reason
                    );
                }
                (want, got) => panic!("{what}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn one_alternative_that_holds_is_enough_and_missing_answers_refuse() {
        let mut r = with_base();
        let rebased = r.image(&[9, 2, 3]);
        let image = format!("{TOOL}@{rebased}");
        let anything = Requirements {
            source_from: vec![SOURCE.into()],
            ..Requirements::default()
        };
        let met = run(
            &r,
            &pending(&image, &[built_on(&[BASE]), anything]),
            FailureModes::default(),
        );
        assert_eq!(
            met,
            Settled::Met {
                softened: Vec::new()
            }
        );
        let refused = run(
            &r,
            &pending(&image, &[built_on(&[BASE]), built_on(&[BASE])]),
            FailureModes::default(),
        );
        assert!(
            matches!(refused, Settled::Refused { others: 1, .. }),
            "{refused:?}"
        );

        // Answers never gathered (budget out): a failed lookup, with the reason given.
        let platforms = amd64();
        let ctx = context(&platforms, &[]);
        let p = pending(&format!("{TOOL}:9"), &[built_on(&[BASE])]);
        assert!(!p.needs(&ctx, &r.facts).is_empty());
        let Settled::Refused { unmet, .. } =
            p.settle(&ctx, &r.facts, FailureModes::default(), &budget_out())
        else {
            panic!("refused")
        };
        assert!(
            unmet.lookup_failed && unmet.reason.contains("the budget ran out"),
            "{unmet:?}"
        );
        assert!(matches!(
            p.settle(&ctx, &r.facts, ALLOW, &budget_out()),
            Settled::Met { .. }
        ));
        // The lookup cap reached (the image's own index can do that): never softened.
        let cap = Unfinished {
            why: "the review's cap of 64 registry lookups was reached".into(),
            outage: false,
        };
        assert!(
            matches!(
                p.settle(&ctx, &r.facts, ALLOW, &cap),
                Settled::Refused { .. }
            ),
            "the cap softened"
        );
    }

    /// An answer the registry gave and the reader refuses (an oversized label, too many
    /// layers, a document both manifest and index, a digest mismatch, 404) is the pusher's
    /// doing, not an outage: refused under `failureMode: allow` too. The same answer missing
    /// because the registry could not be asked is softened.
    #[test]
    fn failure_mode_allow_never_softens_an_answer_that_was_given() {
        let mut r = with_base();
        let image = r.image(&[9, 2, 3]);
        let Some(Answer::Found(Manifest::Image(m))) = r.facts.manifests.get(&image) else {
            panic!("an image")
        };
        let config = m.config.digest.clone();
        let p = pending(&format!("{TOOL}@{image}"), &[built_on(&[BASE])]);
        // (answer of the config, softened under allow)
        let cases = [
            (
                Answer::Failed(
                    "registry tools-harbor.wmcloud.org served a config that cannot be read: a \
                     label longer than 4096 bytes"
                        .into(),
                ),
                false,
            ),
            (
                Answer::Unavailable("registry tools-harbor.wmcloud.org answered HTTP 503".into()),
                true,
            ),
        ];
        for (answer, softened) in cases {
            let what = format!("{answer:?}");
            r.facts.configs.insert(config.clone(), answer);
            let got = run(&r, &p, ALLOW);
            assert_eq!(
                matches!(got, Settled::Met { .. }),
                softened,
                "{what}: {got:?}"
            );
            if let Settled::Refused { unmet, .. } = run(&r, &p, FailureModes::default()) {
                assert!(unmet.lookup_failed, "{what}: said to be checked");
            } else {
                panic!("{what}: admitted under fail");
            }
        }
    }
}

mod bases {
    use super::*;
    use crate::requirement::base::{Finding, Found, find, remembered, tags_seen};

    /// What `find` says of an image built on `layers`, the base `BASE:latest` now at
    /// `current` (layers), with `listed` bases (suffix after `BASE`, deprecation) and the tag
    /// remembered at `seen` (layers) when given.
    struct Case<'a> {
        what: &'a str,
        current: &'a [u32],
        image: &'a [u32],
        listed: &'a [(&'a str, Option<&'a str>)],
        seen: Option<&'a [u32]>,
        want: &'a str,
    }

    fn run(case: &Case) {
        let mut r = Registry::default();
        let now_digest = r.image(case.current);
        r.tag(BASE, "latest", &now_digest);
        let old = r.image(&[1, 2]);
        let listed: Vec<ListedBase> = case
            .listed
            .iter()
            .map(|(suffix, deprecated)| ListedBase {
                image: format!("{BASE}{}", suffix.replace("OLD", &old.to_string()))
                    .parse()
                    .unwrap(),
                deprecated: deprecated.map(|d| d.parse().unwrap()),
            })
            .collect();
        let seen: Vec<(String, String, Digest)> = case
            .seen
            .map(|layers| {
                let digest = if layers == [1, 2] {
                    old.clone()
                } else {
                    r.image(layers)
                };
                vec![(BASE.to_owned(), "latest".to_owned(), digest)]
            })
            .unwrap_or_default();
        let bases = remembered(&listed, &seen);
        let tool = r.image(case.image);
        let platforms = amd64();
        let ctx = context(&platforms, &bases);
        let patterns = built_on(&[BASE]).validate().unwrap();
        let got = find(
            &format!("{TOOL}@{tool}").parse().unwrap(),
            &patterns,
            &ctx,
            &r.facts,
        );
        let shown = match &got {
            Found::Done(Finding::Current { .. }) => "current".to_owned(),
            Found::Done(Finding::Stale {
                state, rebuild_on, ..
            }) => format!("{state}: rebuild on {rebuild_on}"),
            Found::Done(Finding::Unknown(why)) => format!("unknown: {why}"),
            other => format!("{other:?}"),
        };
        assert!(
            shown.starts_with(case.want),
            "{}: want {:?}, got {shown}",
            case.what,
            case.want
        );
    }

    #[test]
    fn stale_or_current() {
        let latest = format!("rebuild on {BASE}:latest");
        let older = format!("older: {latest}");
        let deprecated = format!("deprecated: {latest}");
        let cases = [
            Case {
                what: "on the image the tag points to now",
                current: &[1, 2],
                image: &[1, 2, 3],
                listed: &[(":latest", None)],
                seen: None,
                want: "current",
            },
            Case {
                what: "the tag moved since it was seen",
                current: &[5, 6],
                image: &[1, 2, 3],
                listed: &[(":latest", None)],
                seen: Some(&[1, 2]),
                want: &older,
            },
            Case {
                what: "the tag moved and its old image was never seen: not current",
                current: &[5, 6],
                image: &[1, 2, 3],
                listed: &[(":latest", None)],
                seen: None,
                want: "unknown: not built on",
            },
            Case {
                what: "on an older listed image",
                current: &[5, 6],
                image: &[1, 2, 3],
                listed: &[(":latest", None), (":latest@OLD", None)],
                seen: None,
                want: &older,
            },
            Case {
                what: "the older listed image is deprecated, in the past",
                current: &[5, 6],
                image: &[1, 2, 3],
                listed: &[(":latest@OLD", Some("2026-01-01T00:00:00Z"))],
                seen: None,
                want: &deprecated,
            },
            Case {
                what: "the current tag is deprecated, in the past",
                current: &[1, 2],
                image: &[1, 2, 3],
                listed: &[(":latest", Some("2026-01-01T00:00:00Z"))],
                seen: None,
                want: "deprecated: rebuild on a current base image",
            },
            Case {
                what: "deprecated in the future: still current",
                current: &[1, 2],
                image: &[1, 2, 3],
                listed: &[(":latest", Some("2027-06-01T00:00:00Z"))],
                seen: None,
                want: "current",
            },
            Case {
                what: "no listed base matches",
                current: &[1, 2],
                image: &[42, 3],
                listed: &[(":latest", None)],
                seen: None,
                want: "unknown: not built on",
            },
        ];
        for case in &cases {
            run(case);
        }
    }

    #[test]
    fn every_platform_of_an_index_counts() {
        let mut r = with_base();
        let old = r.image(&[7, 8]);
        let bases = [ListedBase {
            image: format!("{BASE}:latest@{old}").parse().unwrap(),
            deprecated: None,
        }];
        let platforms = vec![
            DEFAULT_PLATFORM.parse().unwrap(),
            "linux/arm64".parse().unwrap(),
        ];
        let ctx = context(&platforms, &bases);
        let patterns = built_on(&[BASE]).validate().unwrap();
        let (amd, arm_current, arm_old) = (
            r.image(&[1, 2, 9]),
            r.image(&[1, 2, 9]),
            r.image(&[7, 8, 9]),
        );
        for (arm, want_stale) in [(arm_current, false), (arm_old, true)] {
            let index = r.index(&[
                (Some("linux/amd64"), amd.clone()),
                (Some("linux/arm64"), arm),
            ]);
            let got = find(
                &format!("{TOOL}@{index}").parse().unwrap(),
                &patterns,
                &ctx,
                &r.facts,
            );
            match got {
                Found::Done(Finding::Stale { base, .. }) if want_stale => {
                    assert!(base.ends_with(&old.to_string()), "{base}")
                }
                Found::Done(Finding::Current { .. }) if !want_stale => {}
                other => panic!("stale {want_stale}: {other:?}"),
            }
        }
        // One platform on no base: unknown, never current.
        let debian = r.image(&[42]);
        let index = r.index(&[(Some("linux/amd64"), amd), (Some("linux/arm64"), debian)]);
        assert!(matches!(
            find(
                &format!("{TOOL}@{index}").parse().unwrap(),
                &patterns,
                &ctx,
                &r.facts
            ),
            Found::Done(Finding::Unknown(_))
        ));
    }

    #[test]
    fn nothing_is_asked_without_a_base_and_a_cold_image_asks() {
        let r = Registry::default();
        let platforms = amd64();
        let listed = [ListedBase {
            image: format!("{BASE}:latest").parse().unwrap(),
            deprecated: None,
        }];
        let ctx = context(&platforms, &listed);
        let image: ImageRef = format!("{TOOL}:1").parse().unwrap();
        assert_eq!(find(&image, &[], &ctx, &r.facts), Found::NotChecked);
        let patterns = built_on(&[BASE]).validate().unwrap();
        let Found::Needs(need) = find(&image, &patterns, &ctx, &r.facts) else {
            panic!("a cold image needs lookups")
        };
        assert!(need.contains(&Lookup::Tag {
            repository: TOOL.to_owned(),
            tag: "1".to_owned()
        }));
    }

    #[test]
    fn base_tags_are_remembered_not_the_images_own() {
        let mut r = with_base();
        let tool = r.image(&[1, 2, 3]);
        r.tag(TOOL, "1", &tool);
        let patterns = built_on(&[BASE]).validate().unwrap();
        let seen = tags_seen(&patterns, &[], &r.facts);
        assert_eq!(seen.len(), 1);
        assert_eq!((seen[0].0.as_str(), seen[0].1.as_str()), (BASE, "latest"));
        let bases = remembered(&[], &seen);
        assert_eq!(bases[0].image.digest(), Some(seen[0].2.as_str()));
        // Remembering twice adds nothing.
        assert_eq!(remembered(&bases, &seen), bases);
    }
}

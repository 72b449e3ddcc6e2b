//! Time per image-reference parse and per allow-list check (`cargo bench -p byoc-policy --bench
//! reference`). The webhook parses every image of every container once per review and checks it
//! against a handful of entries, so both must stay far below a microsecond.

use std::hint::black_box;

use byoc_api::RegistryPattern;
use byoc_policy::ImageRef;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

/// Typical references, from the shortest familiar name to a tag-and-digest pin.
const REFERENCES: &[(&str, &str)] = &[
    ("familiar", "nginx"),
    ("hub-org-tag", "bitnami/redis:7.2.4"),
    (
        "platform",
        "docker-registry.tools.wmflabs.org/toolforge-python311-sssd-base:latest",
    ),
    ("port", "localhost:5000/team/app:v1"),
    (
        "digest",
        "quay.io/prometheus/node-exporter@sha256:7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa",
    ),
    (
        "tag-and-digest",
        "ghcr.io/wikimedia/app:1.2.3@sha256:7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa",
    ),
    ("invalid", "https://quay.io/Org/App"),
];

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for &(name, reference) in REFERENCES {
        group.bench_with_input(BenchmarkId::from_parameter(name), reference, |b, r| {
            b.iter(|| black_box(r).parse::<ImageRef>())
        });
    }
    group.finish();
}

fn is_allowed_by(c: &mut Criterion) {
    let parse_entry = |s: &str| s.parse::<RegistryPattern>().expect("valid entry");
    let platform = parse_entry("docker-registry.tools.wmflabs.org");
    let prefix = parse_entry("ghcr.io/wikimedia");
    let cases = [
        (
            "host-match",
            "docker-registry.tools.wmflabs.org/toolforge-jdk17:latest",
            &platform,
        ),
        (
            "host-mismatch",
            "docker-registry.tools.wmflabs.org.evil.com/x",
            &platform,
        ),
        ("prefix-match", "ghcr.io/wikimedia/team/app:v1", &prefix),
        (
            "prefix-boundary-mismatch",
            "ghcr.io/wikimedia-evil/app:v1",
            &prefix,
        ),
    ];
    let mut group = c.benchmark_group("is_allowed_by");
    for (name, image, pattern) in cases {
        let image: ImageRef = image.parse().expect("valid reference");
        group.bench_function(name, |b| {
            b.iter(|| black_box(&image).is_allowed_by(black_box(pattern)))
        });
    }
    // A review's usual work for one container: parse, then try the default entry and a grant.
    let entries = [platform.clone(), parse_entry("quay.io"), prefix.clone()];
    group.bench_function("parse-then-three-entries", |b| {
        b.iter(|| {
            let image: ImageRef = black_box("ghcr.io/wikimedia/app:v1")
                .parse()
                .expect("valid");
            entries.iter().any(|e| image.is_allowed_by(e))
        })
    });
    group.finish();
}

criterion_group!(benches, parse, is_allowed_by);
criterion_main!(benches);

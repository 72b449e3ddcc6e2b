//! Time per typical pod AdmissionReview: bytes in, decision, response bytes out — the webhook's
//! whole per-request CPU work apart from HTTP and TLS; with the whole body parsed, and pruned to
//! what the policy reads as the webhook does (`byoc_policy::read`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;

use byoc_api::labels::Allowance;
use byoc_policy::admission::Reviewed;
use byoc_policy::{Config, decide, respond};
use criterion::{Criterion, criterion_group, criterion_main};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview};

#[path = "fixture/mod.rs"]
mod fixture;
use fixture::pod_review;

/// How the body becomes an AdmissionReview: the whole of it, or pruned as the webhook reads it.
#[derive(Clone, Copy)]
enum Parse {
    Whole,
    Pruned,
}

fn review_once(parse: Parse, config: &Config, allowance: &Allowance, body: &[u8]) -> Vec<u8> {
    match parse {
        Parse::Whole => {
            let review: AdmissionReview<DynamicObject> =
                serde_json::from_slice(body).expect("valid review");
            answer(config, allowance, review)
        }
        Parse::Pruned => {
            let review = byoc_policy::read::admission_review(body).expect("valid review");
            answer(config, allowance, review)
        }
    }
}

fn answer<K: Reviewed>(
    config: &Config,
    allowance: &Allowance,
    review: AdmissionReview<K>,
) -> Vec<u8> {
    let req: AdmissionRequest<K> = review.try_into().expect("has a request");
    let decision = decide(config, &req, allowance, jiff::Timestamp::UNIX_EPOCH);
    serde_json::to_vec(&respond(config, &req, &decision).into_review()).expect("serializable")
}

fn bench(c: &mut Criterion) {
    let config = Config::default();
    let labels = BTreeMap::from([
        ("byoc.toolforge.org/quay.io".to_owned(), "never".to_owned()),
        (
            "kubernetes.io/metadata.name".to_owned(),
            "tool-wikibugs".to_owned(),
        ),
    ]);
    let (allowance, _) = Allowance::from_labels(&labels);
    let admitted = pod_review("quay.io/wikibugs/bot:2.4.1");
    let denied = pod_review("ghcr.io/someone/bot:latest");
    for parse in [Parse::Whole, Parse::Pruned] {
        let answer = |body| {
            String::from_utf8_lossy(&review_once(parse, &config, &allowance, body)).into_owned()
        };
        assert!(answer(&admitted).contains("\"allowed\":true"));
        assert!(answer(&denied).contains("\"allowed\":false"));
    }

    let mut group = c.benchmark_group("pod_review");
    for (parse, name) in [(Parse::Whole, "whole"), (Parse::Pruned, "pruned")] {
        group.bench_function(format!("admitted_{name}"), |b| {
            b.iter(|| review_once(parse, &config, &allowance, black_box(&admitted)))
        });
        group.bench_function(format!("denied_{name}"), |b| {
            b.iter(|| review_once(parse, &config, &allowance, black_box(&denied)))
        });
    }
    group.bench_function("labels_to_allowance", |b| {
        b.iter(|| Allowance::from_labels(black_box(&labels)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The cost of a name-only decision (no requirement, no lookup) against the platform's default
//! registries, without criterion, so it also runs under `valgrind --tool=callgrind`:
//!
//! ```text
//! cargo run --release -p byoc-policy --example name_only -- [ITERATIONS] [REPEATS] [CONFIG]...
//! ```
//!
//! For each policy configuration file given (the built-in Toolforge lists without one), it
//! decides, `ITERATIONS` times per repeat, a pod AdmissionReview (the criterion benchmark's pod,
//! read pruned as the webhook does, decided and answered) in namespace `tool-wikibugs` whose
//! image only the default registries admit, and one single `Checker::problem` of that image.
//! Prints the median and the fastest repeat in ns per decision.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Instant;

use byoc_api::labels::Allowance;
use byoc_policy::decision::Checker;
use byoc_policy::{Config, decide, respond};
use kube::core::admission::AdmissionRequest;

#[path = "../benches/fixture/mod.rs"]
mod fixture;

/// The image: in the tool's own Harbor project.
const IMAGE: &str = "tools-harbor.wmcloud.org/tool-wikibugs/bot:2.4.1";
const NAMESPACE: &str = "tool-wikibugs";

fn review_once(config: &Config, allowance: &Allowance, body: &[u8]) -> Vec<u8> {
    let review = byoc_policy::read::admission_review(body).expect("valid review");
    let req: AdmissionRequest<_> = review.try_into().expect("has a request");
    let decision = decide(config, &req, allowance, jiff::Timestamp::UNIX_EPOCH);
    serde_json::to_vec(&respond(config, &req, &decision).into_review()).expect("serializable")
}

/// Nanoseconds per call of `f` over `iterations`, for each of `repeats`, sorted.
fn measure(iterations: u32, repeats: u32, mut f: impl FnMut()) -> Vec<f64> {
    let mut runs: Vec<f64> = (0..repeats)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                f();
            }
            start.elapsed().as_nanos() as f64 / f64::from(iterations)
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs
}

fn main() {
    let mut args = std::env::args().skip(1);
    let iterations: u32 = args
        .next()
        .map_or(100_000, |a| a.parse().expect("ITERATIONS"));
    let repeats: u32 = args.next().map_or(7, |a| a.parse().expect("REPEATS"));
    let mut configs: Vec<(String, String)> = args
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable config");
            (path, text)
        })
        .collect();
    if configs.is_empty() {
        configs.push((
            "toolforge, plain".into(),
            "defaultRegistries: [docker-registry.svc.toolforge.org, \
             docker-registry.tools.wmflabs.org, tools-harbor.wmcloud.org]\n"
                .into(),
        ));
    }
    let allowance = Allowance::default();
    let body = fixture::pod_review(IMAGE);
    println!(
        "| configuration | review median | review fastest | problem() median | problem() fastest |"
    );
    println!("|---|---|---|---|---|");
    for (name, text) in configs {
        let config = Config::from_yaml(&text).expect("valid config");
        let answer = String::from_utf8(review_once(&config, &allowance, &body)).unwrap();
        assert!(answer.contains("\"allowed\":true"), "{name}: {answer}");
        let checker = Checker::new(&config, &allowance, NAMESPACE, jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(checker.problem(IMAGE), None, "{name}");
        let reviews = measure(iterations, repeats, || {
            black_box(review_once(&config, &allowance, black_box(&body)));
        });
        let problems = measure(iterations, repeats, || {
            black_box(checker.problem(black_box(IMAGE)));
        });
        let median = |v: &[f64]| v[v.len() / 2];
        println!(
            "| {name} | {:.0} ns | {:.0} ns | {:.1} ns | {:.1} ns |",
            median(&reviews),
            reviews[0],
            median(&problems),
            problems[0]
        );
    }
}

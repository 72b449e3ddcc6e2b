//! The PolicyReport of one namespace, from the policy's verdicts on its workloads. Pure: the
//! reconciler compares what this returns with the stored report and writes only a difference.

use std::collections::BTreeMap;

use byoc_api::report::{
    ALLOWED_BY_LABELS, ALLOWED_BY_REFUSED, BaseProperty, ImageProperty, MANAGED_BY,
    MANAGED_BY_LABEL, OMITTED_PROPERTY, Outcome, POLICY, PolicyReport, REPORT_NAME,
    RESULTS_LEFT_OUT, RULE, ReportResult, ResourceRef, ResultTime, SOURCE, Summary,
    UNJUDGED_PROPERTY,
};
use byoc_policy::inventory::{AllowedBy, Verdict};
use byoc_policy::requirement::base::{Finding, rebuild_message};
use byoc_policy::{Config, Mode};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The message of a result that passes.
pub const PASS_MESSAGE: &str = "every image comes from a registry allowed in this namespace";

/// The refused containers a result's message names; the rest are counted ("…and N more").
pub const MAX_LINES: usize = 20;

/// The images a result's properties name, refused ones first; the rest are counted in
/// [`OMITTED_PROPERTY`].
pub const MAX_IMAGES: usize = 20;

/// The largest report written with its results, serialized (the API server takes 3 MiB per
/// request and etcd 1.5 MiB per object). A larger one keeps the results that fit, the ones
/// that do not pass first ([`fitting`]), counts every outcome in its summary, and says how many
/// results it left out in the annotation [`RESULTS_LEFT_OUT`].
pub const MAX_REPORT_BYTES: usize = 1 << 20;

/// What is known of an image's base when its report is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BaseLine {
    /// A base check applies and its answer has not come yet: the report is written without
    /// waiting, and written again when it comes.
    Checking,
    /// The answer.
    Found(Finding),
}

impl BaseLine {
    /// As the result's properties say it.
    pub fn property(&self) -> BaseProperty {
        match self {
            Self::Checking => BaseProperty {
                base: "checking".to_owned(),
                state: "checking".to_owned(),
                rebuild_on: None,
                error: None,
            },
            Self::Found(finding) => finding.property(),
        }
    }
}

/// The report `namespace` should carry, or `None` when it has no workload (then it carries no
/// report). `grant_name` names the grant behind an allowance, `base_of` what is known of an
/// image's base (`None`: no base check applies to it). A result equal to one of `previous`
/// keeps its timestamp, so an unchanged namespace gets an identical report.
pub fn report(
    config: &Config,
    namespace: &str,
    verdicts: &[Verdict],
    grant_name: impl Fn(&AllowedBy) -> Option<String>,
    base_of: impl Fn(&str) -> Option<BaseLine>,
    previous: Option<&PolicyReport>,
    now: Timestamp,
) -> Option<PolicyReport> {
    if verdicts.is_empty() {
        return None;
    }
    let results: Vec<ReportResult> = verdicts
        .iter()
        .map(|v| {
            let mut result = result(config, namespace, v, &grant_name, &base_of);
            result.timestamp = previous
                .into_iter()
                .flat_map(|p| &p.results)
                .find(|old| {
                    ReportResult {
                        timestamp: old.timestamp,
                        ..result.clone()
                    } == **old
                })
                .map_or(
                    ResultTime {
                        seconds: now.as_second(),
                        nanos: 0,
                    },
                    |old| old.timestamp,
                );
            result
        })
        .collect();
    let summary = Summary::of(results.iter().map(|r| r.result));
    let total = results.len();
    let results = fitting(results, MAX_REPORT_BYTES);
    let left_out = total - results.len();
    Some(PolicyReport {
        metadata: ObjectMeta {
            name: Some(REPORT_NAME.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_owned(),
                MANAGED_BY.to_owned(),
            )])),
            annotations: (left_out > 0)
                .then(|| BTreeMap::from([(RESULTS_LEFT_OUT.to_owned(), left_out.to_string())])),
            ..ObjectMeta::default()
        },
        summary,
        results,
    })
}

/// The results that fit in `max` bytes of JSON, in their order: all of them when they fit,
/// else fail, then warn, then error, skip and pass results, each group in order, as many as
/// fit. Refusals go first: a tenant can make error results at will (an idle Deployment of 129
/// distinct allowed images), so they must not crowd a refused workload out.
fn fitting(results: Vec<ReportResult>, max: usize) -> Vec<ReportResult> {
    if serialized_len(&results) <= max {
        return results;
    }
    let mut order: Vec<usize> = (0..results.len()).collect();
    order.sort_by_key(|&i| match results[i].result {
        Outcome::Fail => 0,
        Outcome::Warn => 1,
        Outcome::Error => 2,
        Outcome::Skip => 3,
        Outcome::Pass => 4,
    });
    // `[` and `]`, and a comma before each but the first.
    let mut used = 2;
    let mut keep = vec![false; results.len()];
    for i in order {
        let len = serialized_len(std::slice::from_ref(&results[i])) - 2;
        let with = used + len + usize::from(used > 2);
        if with <= max {
            used = with;
            keep[i] = true;
        }
    }
    results
        .into_iter()
        .zip(keep)
        .filter_map(|(r, k)| k.then_some(r))
        .collect()
}

/// The length of `results` as JSON.
fn serialized_len(results: &[ReportResult]) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail; a result that cannot be serialized counts as too long.
    match serde_json::to_writer(&mut count, results) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

/// The first `max` of `lines`, then "…and N more" when there are more than `max` of
/// `total`.
fn bounded_lines(lines: impl Iterator<Item = String>, total: usize, max: usize) -> String {
    let mut kept: Vec<String> = lines.take(max).collect();
    if total > max {
        kept.push(format!("…and {} more", total - max));
    }
    kept.join("\n")
}

/// Whether `stored` already says what `desired` says (its labels and the count of results
/// left out included).
pub fn is_current(desired: &PolicyReport, stored: &PolicyReport) -> bool {
    let ours = |r: &PolicyReport| {
        r.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY_LABEL))
            .cloned()
    };
    let left_out = |r: &PolicyReport| {
        r.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(RESULTS_LEFT_OUT))
            .cloned()
    };
    desired.results == stored.results
        && desired.summary == stored.summary
        && ours(desired) == ours(stored)
        && left_out(desired) == left_out(stored)
}

/// The result of one workload.
fn result(
    config: &Config,
    namespace: &str,
    verdict: &Verdict,
    grant_name: &impl Fn(&AllowedBy) -> Option<String>,
    base_of: &impl Fn(&str) -> Option<BaseLine>,
) -> ReportResult {
    let (mut outcome, mut message) = match &verdict.refused {
        Err(unreadable) => (Outcome::Error, unreadable.clone()),
        Ok(violations) if violations.is_empty() => (Outcome::Pass, PASS_MESSAGE.to_owned()),
        Ok(violations) => (
            if config.mode == Mode::Warn {
                Outcome::Warn
            } else {
                Outcome::Fail
            },
            bounded_lines(
                violations.iter().map(ToString::to_string),
                violations.total(),
                MAX_LINES,
            ),
        ),
    };
    // What the cap on containers left out, unless the message already is that.
    if let Some(notice) = verdict.notice.as_ref().filter(|n| **n != message) {
        message.push('\n');
        message.push_str(notice);
    }
    // Allowed images on a base that is no longer current: a pass becomes a warning to rebuild.
    let lines: Vec<(&str, Option<BaseLine>)> = verdict
        .images
        .iter()
        .map(|u| {
            let line = u.allowed_by.as_ref().and_then(|_| base_of(&u.image));
            (u.image.as_str(), line)
        })
        .collect();
    let stale: Vec<String> = lines
        .iter()
        .filter_map(|(image, line)| match line {
            Some(BaseLine::Found(Finding::Stale {
                base, rebuild_on, ..
            })) => Some(rebuild_message(image, base, rebuild_on)),
            _ => None,
        })
        .collect();
    if outcome == Outcome::Pass && !stale.is_empty() {
        outcome = Outcome::Warn;
        message = bounded_lines(stale.iter().cloned(), stale.len(), MAX_LINES);
    }
    let base_property = |image: &str| {
        lines
            .iter()
            .find(|(i, _)| *i == image)
            .and_then(|(_, line)| line.as_ref().map(BaseLine::property))
    };
    // Refused images first, so that the ones named are the ones to act on.
    let mut uses: Vec<_> = verdict.images.iter().collect();
    uses.sort_by_key(|u| u.allowed_by.is_some());
    let omitted = uses.len().saturating_sub(MAX_IMAGES);
    let images: Vec<ImageProperty> = uses
        .into_iter()
        .take(MAX_IMAGES)
        .map(|u| ImageProperty {
            image: u.image.clone(),
            registry: u.registry.clone(),
            allowed_by: match &u.allowed_by {
                Some(a) => grant_name(a).unwrap_or_else(|| ALLOWED_BY_LABELS.to_owned()),
                None => ALLOWED_BY_REFUSED.to_owned(),
            },
            base: base_property(&u.image),
        })
        .collect();
    ReportResult {
        source: SOURCE.to_owned(),
        policy: POLICY.to_owned(),
        rule: RULE.to_owned(),
        result: outcome,
        scored: true,
        message,
        resources: vec![ResourceRef {
            api_version: verdict.source.api_version().to_owned(),
            kind: verdict.source.kind().to_owned(),
            name: verdict.name.clone(),
            namespace: namespace.to_owned(),
            uid: verdict.uid.clone(),
        }],
        properties: {
            let mut properties = ImageProperty::to_properties(&images);
            if omitted > 0 {
                properties.insert(OMITTED_PROPERTY.to_owned(), omitted.to_string());
            }
            if verdict.unjudged > 0 {
                properties.insert(UNJUDGED_PROPERTY.to_owned(), verdict.unjudged.to_string());
            }
            properties
        },
        timestamp: ResultTime::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use byoc_api::ByocGrantSpec;
    use byoc_policy::Allowance;
    use byoc_policy::inventory::{Source, Trimmed, judge_namespace};
    use serde_json::json;

    fn now() -> Timestamp {
        "2026-11-30T12:00:00Z".parse().unwrap()
    }

    fn deployment(name: &str, images: &[&str]) -> Trimmed {
        let containers: Vec<_> = images
            .iter()
            .enumerate()
            .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
            .collect();
        Trimmed::from_value(
            Source::Deployment,
            &json!({
                "metadata": {"name": name, "namespace": "tool-a", "uid": format!("uid-{name}")},
                "spec": {"template": {"spec": {"containers": containers}}}
            }),
        )
        .unwrap()
    }

    fn quay() -> Allowance {
        Allowance::for_grant(&ByocGrantSpec {
            namespace: "tool-a".into(),
            reason: "r".into(),
            registries: vec!["quay.io".into()],
            any_registry: false,
            namespace_uid: None,
            expires_at: None,
            requirements: None,
        })
        .unwrap()
    }

    /// The report of tool-a by names only: no grant named, no base known.
    fn by_names(config: &Config, verdicts: &[Verdict]) -> Option<PolicyReport> {
        report(config, "tool-a", verdicts, |_| None, |_| None, None, now())
    }

    fn build(
        config: &Config,
        allowance: &Allowance,
        previous: Option<&PolicyReport>,
        at: Timestamp,
    ) -> PolicyReport {
        let objects = [
            deployment(
                "web",
                &["quay.io/a/web:1", "docker-registry.tools.wmflabs.org/x:1"],
            ),
            deployment("bad", &["nginx:1.27", "quay.io/a/web:1"]),
        ];
        let verdicts = judge_namespace(config, allowance, at, &objects);
        let grant = |a: &AllowedBy| match a {
            AllowedBy::Platform(_) => Some("platform".to_owned()),
            AllowedBy::Granted(p) if p.to_string() == "quay.io" => Some("tool-a-quay".to_owned()),
            _ => None,
        };
        report(config, "tool-a", &verdicts, grant, |_| None, previous, at).unwrap()
    }

    #[test]
    fn results_name_images_registries_and_grants() {
        let config = Config::default();
        let r = build(&config, &quay(), None, now());
        assert_eq!(r.metadata.name.as_deref(), Some(REPORT_NAME));
        assert_eq!((r.summary.pass, r.summary.fail), (1, 1));
        let [bad, web] = &r.results[..] else {
            panic!("two results: {r:?}")
        };
        assert_eq!(web.resources[0].name, "web");
        assert_eq!(web.result, Outcome::Pass);
        assert_eq!(web.message, PASS_MESSAGE);
        assert_eq!(
            web.properties,
            BTreeMap::from([
                ("image.1".into(), "quay.io/a/web:1".into()),
                ("registry.1".into(), "quay.io".into()),
                ("allowedBy.1".into(), "tool-a-quay".into()),
                (
                    "image.2".into(),
                    "docker-registry.tools.wmflabs.org/x:1".into()
                ),
                (
                    "registry.2".into(),
                    "docker-registry.tools.wmflabs.org".into()
                ),
                ("allowedBy.2".into(), "platform".into()),
            ])
        );
        assert_eq!(bad.result, Outcome::Fail);
        assert!(
            bad.message.starts_with(
                "Deployment tool-a/bad: container \"c0\" image \"nginx:1.27\" resolves to registry docker.io"
            ),
            "{}",
            bad.message
        );
        assert_eq!(bad.properties["allowedBy.1"], ALLOWED_BY_REFUSED);
        assert_eq!(bad.properties["registry.1"], "docker.io");
        assert_eq!(web.timestamp.seconds, now().as_second());
    }

    #[test]
    fn warn_mode_warns_and_unchanged_results_keep_their_time() {
        let warn = Config {
            mode: Mode::Warn,
            ..Config::default()
        };
        let first = build(&warn, &quay(), None, now());
        assert_eq!((first.summary.pass, first.summary.warn), (1, 1));
        let later = now() + jiff::SignedDuration::from_secs(60);
        let again = build(&warn, &quay(), Some(&first), later);
        assert!(is_current(&again, &first), "nothing changed: {again:?}");
        // Revoking the grant changes one result; only its time moves.
        let revoked = build(&warn, &Allowance::default(), Some(&first), later);
        assert!(!is_current(&revoked, &first));
        assert_eq!(revoked.summary.warn, 2);
        let web = revoked
            .results
            .iter()
            .find(|r| r.resources[0].name == "web")
            .unwrap();
        assert_eq!(web.timestamp.seconds, later.as_second());
        assert_eq!(web.properties["allowedBy.1"], ALLOWED_BY_REFUSED);
        let bad = revoked
            .results
            .iter()
            .find(|r| r.resources[0].name == "bad")
            .unwrap();
        assert_ne!(
            bad,
            first
                .results
                .iter()
                .find(|r| r.resources[0].name == "bad")
                .unwrap(),
            "its message names what is allowed"
        );
    }

    #[test]
    fn messages_and_properties_are_bounded() {
        let config = Config::default();
        // (refused images, allowed images) → (message lines, images named, omitted)
        let cases = [
            ((1, 0), (1, 1, None)),
            ((MAX_LINES, 0), (MAX_LINES, MAX_IMAGES, None)),
            ((MAX_LINES + 1, 0), (MAX_LINES + 1, MAX_IMAGES, Some(1))),
            ((50, 5), (MAX_LINES + 1, MAX_IMAGES, Some(35))),
            ((2, 30), (2, MAX_IMAGES, Some(12))),
        ];
        for ((refused, allowed), (lines, named, omitted)) in cases {
            let images: Vec<String> = (0..refused)
                .map(|i| format!("nginx-{i}:1"))
                .chain((0..allowed).map(|i| format!("quay.io/a/ok-{i}:1")))
                .collect();
            let images: Vec<&str> = images.iter().map(String::as_str).collect();
            let verdicts = judge_namespace(&config, &quay(), now(), &[deployment("d", &images)]);
            let r = by_names(&config, &verdicts).unwrap();
            let result = &r.results[0];
            let case = format!("{refused} refused, {allowed} allowed");
            assert_eq!(result.message.lines().count(), lines, "{case}");
            if lines > MAX_LINES {
                let more = format!("…and {} more", refused - MAX_LINES);
                assert_eq!(result.message.lines().last(), Some(more.as_str()), "{case}");
            }
            let properties = ImageProperty::from_properties(&result.properties);
            assert_eq!(properties.len(), named, "{case}");
            let refused_named = properties
                .iter()
                .filter(|p| p.allowed_by == ALLOWED_BY_REFUSED)
                .count();
            assert_eq!(
                refused_named,
                refused.min(MAX_IMAGES),
                "{case}: refused first"
            );
            assert_eq!(
                result
                    .properties
                    .get(OMITTED_PROPERTY)
                    .map(|n| n.parse::<usize>().unwrap()),
                omitted,
                "{case}"
            );
        }
    }

    #[test]
    fn ten_thousand_refused_images_fit_and_are_all_counted() {
        let config = Config::default();
        let images: Vec<String> = (0..10_000)
            .map(|i| format!("docker.io/{}/image-{i}:1", "x".repeat(200)))
            .collect();
        let objects: Vec<Trimmed> = images
            .chunks(50)
            .enumerate()
            .map(|(i, chunk)| {
                let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
                deployment(&format!("d{i}"), &chunk)
            })
            .collect();
        let verdicts = judge_namespace(&config, &quay(), now(), &objects);
        let r = by_names(&config, &verdicts).unwrap();
        assert!(serialized_len(&r.results) <= MAX_REPORT_BYTES);
        assert!(serde_json::to_vec(&r).unwrap().len() <= MAX_REPORT_BYTES + 1024);
        assert_eq!((r.summary.pass, r.summary.fail), (0, 200));
        // As many results as fit, each counted: kept or left out.
        let left_out: usize = r.metadata.annotations.as_ref().unwrap()[RESULTS_LEFT_OUT]
            .parse()
            .unwrap();
        assert!(!r.results.is_empty() && left_out > 0, "{left_out}");
        assert_eq!(r.results.len() + left_out, 200);
        // One workload of them all is written with its results, and counts every image.
        let one = by_names(&config, &verdicts[..1]).unwrap();
        let result = &one.results[0];
        assert_eq!(
            ImageProperty::from_properties(&result.properties).len()
                + result.properties[OMITTED_PROPERTY]
                    .parse::<usize>()
                    .unwrap(),
            50
        );
        assert!(result.message.ends_with("…and 30 more"));
    }

    /// A report too large to hold every result keeps those that do not pass, drops passes
    /// first and says how many it left out; its summary counts them all. (The attack of the
    /// second cold review: ~115 idle Deployments of long platform images made the report
    /// summary-only, and nothing named the refused workload.)
    /// Error results are the tenant's to make (an idle Deployment of more distinct allowed
    /// images than the inventory keeps): however many, they never push a refusal out.
    #[test]
    fn error_results_never_crowd_a_refusal_out_of_a_cut_report() {
        let config = Config::default();
        let many = |d: usize| -> Vec<String> {
            (0..130)
                .map(|c| {
                    format!(
                        "docker-registry.tools.wmflabs.org/{}/d{d}c{c}:1",
                        "e".repeat(200)
                    )
                })
                .collect()
        };
        let mut objects: Vec<Trimmed> = (0..300)
            .map(|d| {
                let images = many(d);
                let images: Vec<&str> = images.iter().map(String::as_str).collect();
                deployment(&format!("a-{d:03}"), &images)
            })
            .collect();
        // Larger than any error result, so it cannot fill the room the errors leave.
        let refused: Vec<String> = (0..20)
            .map(|c| format!("docker.io/{}/c{c}:1", "r".repeat(400)))
            .collect();
        let refused: Vec<&str> = refused.iter().map(String::as_str).collect();
        objects.push(deployment("zz-refused", &refused));
        let verdicts = judge_namespace(&config, &quay(), now(), &objects);
        let r = by_names(&config, &verdicts).unwrap();
        assert_eq!((r.summary.error, r.summary.fail), (300, 1));
        assert!(
            r.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(RESULTS_LEFT_OUT)),
            "the errors alone must not fit, or the test proves nothing"
        );
        assert!(
            r.results
                .iter()
                .any(|x| x.resources[0].name == "zz-refused" && x.result == Outcome::Fail),
            "the refused Deployment was crowded out"
        );
    }

    #[test]
    fn a_report_cut_to_fit_keeps_what_does_not_pass_and_counts_what_it_left_out() {
        let config = Config::default();
        let platform = |d: usize| -> Vec<String> {
            (0..40)
                .map(|c| {
                    format!(
                        "docker-registry.tools.wmflabs.org/{}/d{d}c{c}:1",
                        "p".repeat(200)
                    )
                })
                .collect()
        };
        let mut objects: Vec<Trimmed> = (0..150)
            .map(|d| {
                let images = platform(d);
                let images: Vec<&str> = images.iter().map(String::as_str).collect();
                deployment(&format!("idle-{d:03}"), &images)
            })
            .collect();
        objects.push(deployment("zz-refused", &["nginx:1.27"]));
        objects.push(deployment("aa-refused", &["docker.io/x/y:1"]));
        let verdicts = judge_namespace(&config, &quay(), now(), &objects);
        // (results in the namespace) → whether the report is cut
        for (n, cut) in [(verdicts.len(), true), (10, false)] {
            // The first and last n/2: both refused ones among them.
            let verdicts: Vec<_> = verdicts[..n / 2]
                .iter()
                .chain(&verdicts[verdicts.len() - n / 2..])
                .cloned()
                .collect();
            let r = by_names(&config, &verdicts).unwrap();
            assert!(serialized_len(&r.results) <= MAX_REPORT_BYTES);
            assert_eq!(r.summary.fail, 2, "{n}");
            assert_eq!(r.summary.pass as usize, n - 2, "{n}");
            let names: Vec<&str> = r
                .results
                .iter()
                .map(|x| x.resources[0].name.as_str())
                .collect();
            assert!(
                names.contains(&"zz-refused") && names.contains(&"aa-refused"),
                "{n}"
            );
            let left_out = r
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(RESULTS_LEFT_OUT))
                .map(|v| v.parse::<usize>().unwrap());
            assert_eq!(left_out.is_some(), cut, "{n}");
            assert_eq!(r.results.len() + left_out.unwrap_or(0), n, "{n}");
            // In their order: by kind, then name.
            let mut sorted = names.clone();
            sorted.sort();
            assert_eq!(names, sorted);
            // The count is part of what is compared: a report without it is rewritten.
            let mut stored = r.clone();
            stored.metadata.annotations = None;
            assert_eq!(is_current(&r, &stored), !cut, "{n}");
        }
    }

    #[test]
    fn a_namespace_without_workloads_has_no_report() {
        let config = Config::default();
        assert!(by_names(&config, &[]).is_none());
    }

    #[test]
    fn a_foreign_label_change_is_not_current() {
        let config = Config::default();
        let r = build(&config, &quay(), None, now());
        let mut stored = r.clone();
        stored.metadata.labels = None;
        assert!(!is_current(&r, &stored));
        stored.metadata.labels.clone_from(&r.metadata.labels);
        stored.metadata.resource_version = Some("9".into());
        assert!(is_current(&r, &stored));
    }

    #[test]
    fn a_stale_base_warns_to_rebuild_and_an_unknown_one_keeps_the_pass() {
        let config = Config::default();
        let objects = [
            deployment("old", &["docker-registry.tools.wmflabs.org/old:1"]),
            deployment("odd", &["docker-registry.tools.wmflabs.org/odd:1"]),
            deployment("new", &["docker-registry.tools.wmflabs.org/new:1"]),
            deployment(
                "bad",
                &["nginx:1", "docker-registry.tools.wmflabs.org/old:1"],
            ),
        ];
        let verdicts = judge_namespace(&config, &Allowance::default(), now(), &objects);
        let base = "docker-registry.tools.wmflabs.org/base:1";
        let base_of = |image: &str| match image {
            "docker-registry.tools.wmflabs.org/old:1" => Some(BaseLine::Found(Finding::Stale {
                base: format!("{base}@sha256:01"),
                state: "older",
                rebuild_on: base.to_owned(),
            })),
            "docker-registry.tools.wmflabs.org/odd:1" => Some(BaseLine::Found(Finding::Unknown(
                "x".repeat(byoc_policy::requirement::base::MAX_BASE_ERROR * 2),
            ))),
            "docker-registry.tools.wmflabs.org/new:1" => Some(BaseLine::Checking),
            _ => None,
        };
        let r = report(&config, "tool-a", &verdicts, |_| None, base_of, None, now()).unwrap();
        let by = |name: &str| {
            r.results
                .iter()
                .find(|x| x.resources[0].name == name)
                .unwrap()
        };
        let old = by("old");
        assert_eq!(old.result, Outcome::Warn);
        assert_eq!(
            old.message,
            format!(
                "docker-registry.tools.wmflabs.org/old:1: built on {base}@sha256:01, which is no longer current: rebuild on {base}"
            )
        );
        assert_eq!(old.properties["baseState.1"], "older");
        assert_eq!(old.properties["rebuildOn.1"], base);
        let odd = by("odd");
        assert_eq!(
            (odd.result, odd.message.as_str()),
            (Outcome::Pass, PASS_MESSAGE)
        );
        assert_eq!(odd.properties["base.1"], "unknown");
        assert!(
            odd.properties["baseError.1"].chars().count()
                <= byoc_policy::requirement::base::MAX_BASE_ERROR + 1
        );
        let new = by("new");
        assert_eq!(new.result, Outcome::Pass);
        assert_eq!(new.properties["baseState.1"], "checking");
        // A refusal stays a refusal; the refused image has no base line.
        let bad = by("bad");
        assert_eq!(bad.result, Outcome::Fail);
        assert!(
            !bad.properties.contains_key("base.1"),
            "{:?}",
            bad.properties
        );
        assert_eq!(bad.properties["baseState.2"], "older");
        assert_eq!((r.summary.pass, r.summary.warn, r.summary.fail), (2, 1, 1));
    }
}

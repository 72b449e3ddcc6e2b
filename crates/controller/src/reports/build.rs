//! The PolicyReport of one namespace, from the policy's verdicts on its workloads. Pure: the
//! reconciler compares what this returns with the stored report and writes only a difference.

use std::collections::BTreeMap;

use byoc_api::report::{
    ALLOWED_BY_LABELS, ALLOWED_BY_REFUSED, ImageProperty, MANAGED_BY, MANAGED_BY_LABEL, Outcome,
    POLICY, PolicyReport, REPORT_NAME, RULE, ReportResult, ResourceRef, ResultTime, SOURCE,
    Summary,
};
use byoc_policy::inventory::{AllowedBy, Verdict};
use byoc_policy::{Config, Mode};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The message of a result that passes.
pub const PASS_MESSAGE: &str = "every image comes from a registry allowed in this namespace";

/// The report `namespace` should carry, or `None` when it has no workload (then it carries no
/// report). `grant_name` names the grant behind an allowance. A result equal to one of
/// `previous` keeps its timestamp, so an unchanged namespace gets an identical report.
pub fn report(
    config: &Config,
    namespace: &str,
    verdicts: &[Verdict],
    grant_name: impl Fn(&AllowedBy) -> Option<String>,
    previous: Option<&PolicyReport>,
    now: Timestamp,
) -> Option<PolicyReport> {
    if verdicts.is_empty() {
        return None;
    }
    let results: Vec<ReportResult> = verdicts
        .iter()
        .map(|v| {
            let mut result = result(config, namespace, v, &grant_name);
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
    Some(PolicyReport {
        metadata: ObjectMeta {
            name: Some(REPORT_NAME.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_owned(),
                MANAGED_BY.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        summary: Summary::of(results.iter().map(|r| r.result)),
        results,
    })
}

/// Whether `stored` already says what `desired` says (its labels included).
pub fn is_current(desired: &PolicyReport, stored: &PolicyReport) -> bool {
    let ours = |r: &PolicyReport| {
        r.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY_LABEL))
            .cloned()
    };
    desired.results == stored.results
        && desired.summary == stored.summary
        && ours(desired) == ours(stored)
}

/// The result of one workload.
fn result(
    config: &Config,
    namespace: &str,
    verdict: &Verdict,
    grant_name: &impl Fn(&AllowedBy) -> Option<String>,
) -> ReportResult {
    let (outcome, message) = match &verdict.refused {
        Err(unreadable) => (Outcome::Error, unreadable.clone()),
        Ok(violations) if violations.is_empty() => (Outcome::Pass, PASS_MESSAGE.to_owned()),
        Ok(violations) => (
            if config.mode == Mode::Warn {
                Outcome::Warn
            } else {
                Outcome::Fail
            },
            violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    };
    let images: Vec<ImageProperty> = verdict
        .images
        .iter()
        .map(|u| ImageProperty {
            image: u.image.clone(),
            registry: u.registry.clone(),
            allowed_by: match &u.allowed_by {
                Some(a) => grant_name(a).unwrap_or_else(|| ALLOWED_BY_LABELS.to_owned()),
                None => ALLOWED_BY_REFUSED.to_owned(),
            },
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
        properties: ImageProperty::to_properties(&images),
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
        })
        .unwrap()
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
        report(config, "tool-a", &verdicts, grant, previous, at).unwrap()
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
    fn a_namespace_without_workloads_has_no_report() {
        let config = Config::default();
        assert!(report(&config, "tool-a", &[], |_| None, None, now()).is_none());
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
}

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

/// A pod as the API server sends it after defaulting: three containers, volumes, tolerations.
fn pod_review(image: &str) -> Vec<u8> {
    let container = |name: &str, image: &str| {
        serde_json::json!({
            "name": name, "image": image, "imagePullPolicy": "Always",
            "resources": {"limits": {"cpu": "500m", "memory": "512Mi"}, "requests": {"cpu": "250m", "memory": "256Mi"}},
            "volumeMounts": [{"name": "home", "mountPath": "/data/project"}, {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}],
            "env": [{"name": "HOME", "value": "/data/project/wikibugs"}, {"name": "TOOL_DATA_DIR", "value": "/data/project/wikibugs"}],
            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
            "securityContext": {"allowPrivilegeEscalation": false, "runAsUser": 52503, "capabilities": {"drop": ["ALL"]}}
        })
    };
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "0c9a8d74-9cb7-44dd-b98e-09fd62def2f4",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "wikibugs-7d9f8b6c5-x2x9z", "namespace": "tool-wikibugs", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "uid": "a", "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]},
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "wikibugs-7d9f8b6c5-", "namespace": "tool-wikibugs",
                    "labels": {"app.kubernetes.io/name": "wikibugs", "pod-template-hash": "7d9f8b6c5", "toolforge": "tool"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "wikibugs-7d9f8b6c5", "uid": "b", "controller": true, "blockOwnerDeletion": true}]},
                "spec": {
                    "initContainers": [container("setup", "docker-registry.tools.wmflabs.org/toolforge-bookworm-sssd:latest")],
                    "containers": [container("bot", image), container("redis", "docker-registry.tools.wmflabs.org/toolforge-redis:latest")],
                    "volumes": [{"name": "home", "hostPath": {"path": "/data/project/wikibugs", "type": "Directory"}},
                                {"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}],
                    "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
                    "serviceAccountName": "default", "schedulerName": "default-scheduler", "priority": 0, "enableServiceLinks": true,
                    "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]
                },
                "status": {"phase": "Pending", "qosClass": "Burstable"}
            },
            "oldObject": null, "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    }))
    .expect("serializable")
}

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

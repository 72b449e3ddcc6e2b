//! Memory of reading one AdmissionReview, for issue 21's costliest shapes: the webhook's
//! pruned read (`byoc_policy::read`) beside a read of the whole review into kube's types (what
//! a reader without pruning keeps). Each read runs in a process of its own, which reads the
//! body from a file and reports how far its peak RSS (`VmHWM`) rose above its RSS before the
//! read. Prints one markdown table row per shape (docs/benchmarks.md):
//!
//! ```text
//! cargo run -p byoc-policy --example read_memory
//! ```
//!
//! Allocation sizes do not depend on the optimization level, so a debug build measures about
//! the same bytes as a release one.

use std::process::Command;

use kube::core::DynamicObject;
use kube::core::admission::AdmissionReview;
use serde_json::{Value, json};

/// A field of `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .strip_suffix("kB")
        })
        .and_then(|n| n.trim().parse().ok())
        .expect("a VmRSS and a VmHWM line")
}

/// In a child process: reads the body in `file` with `how` and prints how many KiB the peak
/// RSS rose above the RSS before the read.
fn child(how: &str, file: &str) {
    let body = std::fs::read(file).expect("read the body");
    let before = status_kib("VmRSS");
    let ok = match how {
        "pruned" => byoc_policy::read::admission_review(&body).is_ok(),
        _ => serde_json::from_slice::<AdmissionReview<DynamicObject>>(&body).is_ok(),
    };
    assert!(ok, "{how}: not a readable review");
    println!("{}", status_kib("VmHWM").saturating_sub(before));
}

/// The peak of reading `body` with `how`, in MiB, from a child process.
fn peak_mib(how: &str, body: &[u8]) -> f64 {
    let file = std::env::temp_dir().join(format!("read-memory-{}.json", std::process::id()));
    std::fs::write(&file, body).expect("write the body");
    let out = Command::new(std::env::current_exe().expect("this executable"))
        .arg(how)
        .arg(&file)
        .output()
        .expect("run the child");
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kib: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("KiB");
    kib / 1024.0
}

fn review(kind: (&str, &str), operation: &str, object: Value, old: Option<Value>) -> Value {
    let (group, kind) = kind;
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "u", "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": "things"},
            "name": "p", "namespace": "tool-a", "operation": operation,
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": object, "oldObject": old,
        }
    })
}

/// A pod as the API server sends it with `count` labels made by `label`, with the
/// managedFields entry it records for them.
fn labelled_pod(count: usize, label: impl Fn(usize) -> (String, String)) -> Vec<u8> {
    let labels: serde_json::Map<String, Value> = (0..count)
        .map(|i| {
            let (k, v) = label(i);
            (k, json!(v))
        })
        .collect();
    let fields: serde_json::Map<String, Value> = labels
        .keys()
        .map(|k| (format!("f:{k}"), json!({})))
        .collect();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "labels-", "namespace": "tool-a", "labels": labels,
            "managedFields": [{"manager": "attacker", "operation": "Update", "apiVersion": "v1",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": fields}}}]},
        "spec": {"containers": [{"name": "app", "image": "docker-registry.tools.wmflabs.org/a"}]},
    });
    review(("", "Pod"), "CREATE", pod, None)
        .to_string()
        .into_bytes()
}

/// A pod review of `size` bytes whose request holds an unknown key with an array of ones.
fn numbers(size: usize) -> Vec<u8> {
    let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "app", "image": "docker-registry.tools.wmflabs.org/a"}]}});
    let mut review = review(("", "Pod"), "CREATE", pod, None);
    review["request"]["junk"] = json!([]);
    let text = review.to_string();
    let mut array = "1,".repeat((size - text.len()) / 2);
    array.pop();
    let mut body = text
        .replacen("\"junk\":[]", &format!("\"junk\":[{array}]"), 1)
        .into_bytes();
    body.resize(size, b' ');
    body
}

/// A pod review whose pod has `count` containers with a short name and image.
fn containers(count: usize) -> Vec<u8> {
    let list: Vec<Value> = (0..count)
        .map(|i| json!({"name": format!("c{i}"), "image": "quay.io/x"}))
        .collect();
    let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": list}});
    review(("", "Pod"), "CREATE", pod, None)
        .to_string()
        .into_bytes()
}

/// A Namespace UPDATE whose object and old object each hold `count` labels of 15 bytes.
fn namespace(count: usize) -> Vec<u8> {
    let labels: serde_json::Map<String, Value> = (0..count)
        .map(|i| (format!("l{i:07}"), json!("v")))
        .collect();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "tool-a", "labels": labels}});
    review(("", "Namespace"), "UPDATE", ns.clone(), Some(ns))
        .to_string()
        .into_bytes()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [how, file] = args.as_slice() {
        return child(how, file);
    }
    const SEVEN: usize = 7 * 1024 * 1024;
    let ordinary = {
        let pod = json!({"metadata": {"name": "p", "labels": {"app": "web"}}, "spec": {
            "containers": [{"name": "app", "image": "docker-registry.tools.wmflabs.org/a",
                "env": [{"name": "HOME", "value": "/data/project/a"}],
                "resources": {"limits": {"cpu": "500m", "memory": "512Mi"}}}]}});
        review(("", "Pod"), "CREATE", pod, None)
            .to_string()
            .into_bytes()
    };
    let shapes: Vec<(&str, Vec<u8>)> = vec![
        ("ordinary pod", ordinary),
        ("7 MiB: unknown key, array of small numbers", numbers(SEVEN)),
        (
            "pod, 195,000 labels of 15 B (2.9 MB) + managedFields",
            labelled_pod(195_000, |i| (format!("l{i:07}"), "v".to_owned())),
        ),
        (
            "pod, 26,000 labels of 112 B (2.9 MB) + managedFields",
            labelled_pod(26_000, |i| {
                (format!("label-{i:06}-{}", "k".repeat(30)), "v".repeat(63))
            }),
        ),
        ("pod, 7 MiB of containers (240,000)", containers(240_000)),
        (
            "Namespace UPDATE, 2 x 230,000 labels of 15 B",
            namespace(230_000),
        ),
    ];
    println!("| shape | body | pruned read: peak RSS rise | whole read: peak RSS rise |");
    println!("|---|---|---|---|");
    for (name, body) in shapes {
        println!(
            "| {name} | {:.2} MiB | {:.1} MiB | {:.1} MiB |",
            body.len() as f64 / (1024.0 * 1024.0),
            peak_mib("pruned", &body),
            peak_mib("whole", &body),
        );
    }
}

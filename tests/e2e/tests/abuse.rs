//! Load and abuse straight at the `byoc-webhook` process, over real HTTPS on loopback: many
//! concurrent connections, clients that never speak or speak very slowly (slowloris), large and
//! endless bodies, and bytes that are not HTTP. Each gets a well-formed answer or a clean close;
//! the server keeps serving and its memory stays bounded.
//!
//! ```text
//! hack/local-cluster.sh exec -- cargo test -p byoc-e2e --test abuse
//! ```
//!
//! The webhook runs against the local cluster only to fill its namespace cache; the API server is
//! not in the request path. What one request body can do (malformed JSON, other API versions, a
//! missing uid, exactly 7 MiB) is covered in-process by `crates/webhook/tests/https.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use byoc_e2e::TestNamespace;
use byoc_e2e::chaos::{
    Connection, HttpsClient, Outcome, PLATFORM_IMAGE, WebhookOptions, WebhookProcess,
    admission_response, pod_review, tcp_closed_within, try_pod,
};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// One MiB, in the KiB that /proc reports.
const MIB: u64 = 1024;

/// The webhook's `--idle-timeout` in these tests: how long a connection may wait for the whole
/// head of its next request. The default (120 s) outlasts the API server's 90 s idle
/// connections; a short one keeps the tests short and proves the mechanism.
const IDLE_TIMEOUT: &str = "10s";

/// How long a connection that sends nothing useful may stay open: the idle timeout above, or
/// the fixed 10 s a body has to arrive, plus slack for a loaded machine.
const IDLE_LIMIT: Duration = Duration::from_secs(35);

fn start() -> WebhookProcess {
    WebhookProcess::start(WebhookOptions {
        idle_timeout: IDLE_TIMEOUT,
        ..WebhookOptions::default()
    })
}

/// Sends one pod review on `conn` and checks the verdict and the echoed uid.
async fn review_ok(conn: &mut Connection, uid: &str, image: &str, allowed: bool) {
    let body = pod_review(uid, "tool-abuse", &[image]).to_string();
    let response = conn.post(body.as_bytes()).await.expect("an answer");
    assert_eq!(response.status, 200, "{response:?}");
    let review = response.json();
    let r = admission_response(&review);
    assert_eq!(r["uid"], uid, "{review}");
    assert_eq!(r["allowed"], allowed, "{image}: {review}");
}

/// The server still answers a fresh connection, promptly.
async fn still_serves(client: &HttpsClient) {
    let started = Instant::now();
    let mut conn = tokio::time::timeout(Duration::from_secs(5), client.connect())
        .await
        .expect("a new TLS connection within 5 s")
        .expect("a new TLS connection");
    review_ok(&mut conn, "still-serves", PLATFORM_IMAGE, true).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a fresh request took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_connections_each_get_their_own_answer() {
    const CONNECTIONS: usize = 500;
    let webhook = start();
    let client = webhook.client();
    let base = webhook.rss_kib();

    // Open every connection first, so they are all open at once.
    let mut conns = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        conns.push(client.connect().await.expect("TLS connection"));
    }
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            tokio::spawn(async move {
                // Two requests per connection (keep-alive), one allowed and one refused, with
                // uids that tell every request apart.
                let (first, second) = if i % 2 == 0 {
                    ((PLATFORM_IMAGE, true), ("nginx", false))
                } else {
                    (("quay.io/evil/x", false), (PLATFORM_IMAGE, true))
                };
                review_ok(&mut conn, &format!("c{i}-1"), first.0, first.1).await;
                review_ok(&mut conn, &format!("c{i}-2"), second.0, second.1).await;
                conn
            })
        })
        .collect();
    let mut open = Vec::with_capacity(CONNECTIONS);
    for task in tasks {
        open.push(task.await.expect("a client task"));
    }
    let peak = webhook.peak_rss_kib();
    eprintln!(
        "{CONNECTIONS} connections: RSS {base} KiB before, peak {peak} KiB, now {} KiB",
        webhook.rss_kib()
    );
    assert!(
        peak < 96 * MIB,
        "peak RSS {peak} KiB with {CONNECTIONS} connections"
    );
    drop(open);
    still_serves(&client).await;
}

#[tokio::test]
async fn a_client_that_never_starts_tls_is_disconnected() {
    let webhook = start();
    let client = webhook.client();
    let mut tcp = client.tcp().await.expect("TCP connection");
    let closed = tcp_closed_within(&mut tcp, IDLE_LIMIT).await;
    assert!(
        closed.is_some(),
        "a TCP connection that never started TLS was still open after {IDLE_LIMIT:?}"
    );
    eprintln!("no TLS handshake: closed after {closed:?}");
    still_serves(&client).await;
}

#[tokio::test]
async fn an_idle_tls_connection_is_closed() {
    let webhook = start();
    let client = webhook.client();
    let mut conn = client.connect().await.expect("TLS connection");
    let closed = conn.closed_within(IDLE_LIMIT).await;
    assert!(
        closed.is_some(),
        "a TLS connection that sent no request was still open after {IDLE_LIMIT:?}: \
         idle connections are never closed (slowloris)"
    );
    eprintln!("idle TLS connection: closed after {closed:?}");
}

#[tokio::test]
async fn headers_sent_one_byte_a_second_are_cut_off() {
    let webhook = start();
    let client = webhook.client();
    let mut conn = client.connect().await.expect("TLS connection");
    let started = Instant::now();
    conn.write(b"POST /validate HTTP/1.1\r\n")
        .await
        .expect("write");
    let mut cut_off = false;
    while started.elapsed() < IDLE_LIMIT {
        // An endless header, one byte a second: never a complete request head.
        if conn.write(b"X").await.is_err() {
            cut_off = true;
            break;
        }
        if conn.closed_within(Duration::from_secs(1)).await.is_some() {
            cut_off = true;
            break;
        }
    }
    assert!(
        cut_off,
        "a request head trickling in at one byte a second was still being read after \
         {IDLE_LIMIT:?} (slowloris)"
    );
    eprintln!("slow headers: cut off after {:?}", started.elapsed());
}

#[tokio::test]
async fn a_body_sent_ten_bytes_a_second_gets_an_answer_or_a_close() {
    let webhook = start();
    let client = webhook.client();
    let mut conn = client.connect().await.expect("TLS connection");
    let started = Instant::now();
    conn.write(
        b"POST /validate HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n\
          Content-Length: 100000\r\n\r\n",
    )
    .await
    .expect("write the head");
    let mut ended = None;
    while started.elapsed() < IDLE_LIMIT {
        if conn.write(b"          ").await.is_err() {
            ended = Some("closed".to_owned());
            break;
        }
        match tokio::time::timeout(Duration::from_secs(1), conn.read_response()).await {
            Err(_) => {}
            Ok(Ok(response)) => {
                // An answer must be an AdmissionReview refusal.
                let review = response.json();
                assert!(
                    !admission_response(&review)["allowed"]
                        .as_bool()
                        .unwrap_or(true),
                    "{review}"
                );
                ended = Some(format!("answered {}", response.status));
                break;
            }
            Ok(Err(_)) => {
                ended = Some("closed".to_owned());
                break;
            }
        }
    }
    assert!(
        ended.is_some(),
        "a body trickling in at ten bytes a second was still being read after {IDLE_LIMIT:?}"
    );
    eprintln!("slow body: {ended:?} after {:?}", started.elapsed());
    still_serves(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_connections_do_not_starve_a_real_request() {
    const RAW: usize = 2000;
    const TLS: usize = 300;
    // Thousands of clients, here all on one loopback address: the per-source cap (512 by
    // default, `connections.rs` tests it) would refuse most of them.
    let webhook = WebhookProcess::start(WebhookOptions {
        idle_timeout: IDLE_TIMEOUT,
        max_connections_per_source: 4096,
        ..WebhookOptions::default()
    });
    let client = webhook.client();
    let mut raw = Vec::with_capacity(RAW);
    for _ in 0..RAW {
        raw.push(client.tcp().await.expect("TCP connection"));
    }
    let mut tls = Vec::with_capacity(TLS);
    for _ in 0..TLS {
        tls.push(client.connect().await.expect("TLS connection"));
    }
    still_serves(&client).await;
    let peak = webhook.peak_rss_kib();
    eprintln!("{RAW} idle TCP + {TLS} idle TLS connections: peak RSS {peak} KiB");
    assert!(peak < 96 * MIB, "peak RSS {peak} KiB with idle connections");
    drop(raw);
    drop(tls);
}

#[tokio::test]
async fn connections_past_the_limit_are_closed_until_others_close() {
    const LIMIT: u32 = 20;
    let webhook = WebhookProcess::start(WebhookOptions {
        max_connections: LIMIT,
        idle_timeout: IDLE_TIMEOUT,
        ..WebhookOptions::default()
    });
    let client = webhook.client();
    let mut held = Vec::new();
    for _ in 0..LIMIT {
        held.push(
            client
                .connect()
                .await
                .expect("a TLS connection within the limit"),
        );
    }
    assert!(
        client.connect().await.is_err(),
        "connection {} past a limit of {LIMIT} was served",
        LIMIT + 1
    );
    assert_eq!(
        webhook.metric("byoc_webhook_refused_connections_total"),
        1.0
    );
    assert_eq!(
        webhook.metric("byoc_webhook_open_connections"),
        f64::from(LIMIT)
    );
    // The held connections still work.
    review_ok(&mut held[0], "held", PLATFORM_IMAGE, true).await;

    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    while webhook.metric("byoc_webhook_open_connections") > 0.0 {
        assert!(
            Instant::now() < deadline,
            "closed connections still counted as open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    still_serves(&client).await;
}

/// A pod review padded with an annotation to exactly `size` bytes.
fn review_of_size(uid: &str, size: usize) -> Vec<u8> {
    let mut review = pod_review(uid, "tool-abuse", &[PLATFORM_IMAGE]);
    review["request"]["object"]["metadata"]["annotations"] = json!({"padding": ""});
    let base = review.to_string().len();
    review["request"]["object"]["metadata"]["annotations"]["padding"] =
        json!("x".repeat(size - base));
    let body = review.to_string().into_bytes();
    assert_eq!(body.len(), size);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_seven_mib_bodies_are_answered_and_larger_ones_refused_with_bounded_memory() {
    const PARALLEL: usize = 6;
    const LIMIT: usize = 7 * 1024 * 1024;
    let webhook = start();
    let client = webhook.client();
    let base = webhook.rss_kib();

    for (size, status, allowed) in [(LIMIT, 200, true), (LIMIT + 1, 413, false)] {
        let tasks: Vec<_> = (0..PARALLEL)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move {
                    let uid = format!("big-{size}-{i}");
                    let mut conn = client.connect().await.expect("TLS connection");
                    let response = match conn.post(&review_of_size(&uid, size)).await {
                        Ok(response) => response,
                        // A server may answer a too-large body from its headers and close
                        // while the client still writes; the answer is then already here.
                        Err(e) if !allowed => match conn.read_response().await {
                            Ok(response) => response,
                            Err(_) => {
                                eprintln!("{size} bytes: closed ({e}) before an answer was read");
                                return;
                            }
                        },
                        Err(e) => panic!("{size} bytes: {e}"),
                    };
                    assert_eq!(response.status, status);
                    let review = response.json();
                    let r = admission_response(&review);
                    assert_eq!(r["allowed"], allowed, "{size} bytes: {review}");
                    if allowed {
                        assert_eq!(r["uid"], uid);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("a client task");
        }
    }

    // An endless chunked body is cut at the limit: an answer or a close before 16 MiB is sent.
    let mut conn = client.connect().await.expect("TLS connection");
    conn.write(
        b"POST /validate HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n\
          Transfer-Encoding: chunked\r\n\r\n",
    )
    .await
    .expect("write");
    let chunk = format!("10000\r\n{}\r\n", " ".repeat(0x10000));
    let mut sent = 0usize;
    let mut stopped = false;
    while sent < 16 * 1024 * 1024 {
        if conn.write(chunk.as_bytes()).await.is_err() {
            stopped = true;
            break;
        }
        sent += 0x10000;
    }
    if !stopped {
        let answer = tokio::time::timeout(Duration::from_secs(5), conn.read_response()).await;
        match answer {
            Ok(Ok(response)) => assert_eq!(response.status, 413),
            Ok(Err(_)) => {}
            Err(_) => panic!("no answer and no close after a 16 MiB chunked body"),
        }
    }

    let peak = webhook.peak_rss_kib();
    eprintln!(
        "{PARALLEL} parallel 7 MiB bodies: RSS {base} KiB before, peak {peak} KiB, now {} KiB",
        webhook.rss_kib()
    );
    assert!(
        peak < 320 * MIB,
        "peak RSS {peak} KiB for {PARALLEL} parallel 7 MiB bodies"
    );
    still_serves(&client).await;
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_from_the_headers() {
    let webhook = start();
    let client = webhook.client();
    // A body that claims 1 GiB is refused from its headers, without waiting for the bytes.
    let mut conn = client.connect().await.expect("TLS connection");
    conn.write(
        b"POST /validate HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n\
          Content-Length: 1073741824\r\n\r\n{",
    )
    .await
    .expect("write");
    let response = tokio::time::timeout(Duration::from_secs(5), conn.read_response())
        .await
        .expect("an answer within 5 s to a 1 GiB Content-Length")
        .expect("an answer");
    assert_eq!(response.status, 413);
    assert!(
        !admission_response(&response.json())["allowed"]
            .as_bool()
            .unwrap_or(true)
    );

    still_serves(&client).await;
}

#[tokio::test]
async fn bytes_that_are_not_http_get_a_clean_close_and_the_server_keeps_serving() {
    let webhook = start();
    let client = webhook.client();

    // Plain HTTP on the TLS port.
    let mut tcp = client.tcp().await.expect("TCP connection");
    tcp.write_all(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .expect("write");
    assert!(
        tcp_closed_within(&mut tcp, Duration::from_secs(15))
            .await
            .is_some(),
        "plain HTTP on the TLS port was not closed"
    );

    // Inside TLS: binary garbage, a huge header, a request line that is not HTTP, wrong
    // methods and paths.
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "garbage",
            b"\x00\xff\xfe\x16\x03\x01garbage\r\n\r\n".to_vec(),
        ),
        (
            "huge header",
            [
                &b"POST /validate HTTP/1.1\r\nX-Big: "[..],
                &vec![b'a'; 1024 * 1024],
                b"\r\n\r\n",
            ]
            .concat(),
        ),
        ("bad request line", b"NOT HTTP AT ALL\r\n\r\n".to_vec()),
    ];
    for (what, bytes) in cases {
        let mut conn = client.connect().await.expect("TLS connection");
        let _ = conn.write(&bytes).await;
        let outcome = tokio::time::timeout(Duration::from_secs(10), conn.read_response()).await;
        match outcome {
            Err(_) => panic!("{what}: neither an answer nor a close within 10 s"),
            Ok(Ok(response)) => assert!(
                (400..500).contains(&response.status),
                "{what}: answered {response:?}"
            ),
            Ok(Err(_)) => {}
        }
        still_serves(&client).await;
    }

    // Other paths and methods: a 404 or 405, or a clean close.
    let mut conn = client.connect().await.expect("TLS connection");
    if let Ok(response) = conn.post_to("/other", b"{}").await {
        assert_eq!(response.status, 404);
    }
    let mut conn = client.connect().await.expect("TLS connection");
    conn.write(b"GET /validate HTTP/1.1\r\nHost: webhook\r\n\r\n")
        .await
        .expect("write");
    if let Ok(response) = conn.read_response().await {
        assert_eq!(response.status, 405);
    }
    still_serves(&client).await;
}

/// An AdmissionReview of exactly `size` bytes whose request carries an unknown key holding a
/// long array of small numbers: the body that cost most memory per byte before the reader kept
/// only what the policy reads.
fn numbers_review(uid: &str, size: usize) -> Vec<u8> {
    let mut review = pod_review(uid, "tool-abuse", &[PLATFORM_IMAGE]);
    review["request"]["junk"] = json!([]);
    let text = review.to_string();
    let numbers = (size - text.len()) / 2;
    let mut array = "1,".repeat(numbers);
    array.pop();
    let body = text.replacen("\"junk\":[]", &format!("\"junk\":[{array}]"), 1);
    let mut body = body.into_bytes();
    body.resize(size, b' ');
    body
}

/// A pod with `count` labels of 112 bytes of JSON each (a 43-character key, a 63-character
/// value): few enough that the API server computes their managedFields in seconds.
fn pod_with_labels(count: usize) -> Pod {
    let (key, value) = ("k".repeat(30), "v".repeat(63));
    let labels: serde_json::Map<String, Value> = (0..count)
        .map(|i| (format!("label-{i:06}-{key}"), json!(value)))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "labels-", "labels": labels},
        "spec": {"containers": [{"name": "app", "image": PLATFORM_IMAGE}]},
    }))
    .expect("a Pod")
}

/// A dry-run create of `pod` through the API server.
async fn dry_run(client: &kube::Client, namespace: &str, pod: &Pod) -> Outcome {
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match Api::<Pod>::namespaced(client.clone(), namespace)
        .create(&params, pod)
        .await
    {
        Ok(_) => Outcome::Admitted,
        Err(e) => Outcome::Other(e.to_string()),
    }
}

/// A pod review of at most `size` bytes with as many containers as fit, each refused (an image
/// of `quay.io`), and how many there are.
fn refused_containers_review(uid: &str, size: usize) -> (Vec<u8>, usize) {
    let text = pod_review(uid, "tool-abuse", &[]).to_string();
    let container = |i: usize| format!(r#"{{"name":"c{i}","image":"quay.io/evil/x"}}"#);
    let mut containers = String::new();
    let mut count = 0;
    while text.len() + containers.len() + container(count).len() + 1 < size {
        if count > 0 {
            containers.push(',');
        }
        containers.push_str(&container(count));
        count += 1;
    }
    let body = text.replacen(
        "\"containers\":[]",
        &format!("\"containers\":[{containers}]"),
        1,
    );
    assert!(body.len() <= size && body.len() > size - 64);
    (body.into_bytes(), count)
}

/// The attack of [`the_costliest_bodies_in_parallel_leave_memory_bounded_and_ordinary_reviews_answered`]:
/// every body of `bodies` straight to the webhook and `pods` dry-run creates of `pod` through
/// the API server, all at once. Each body is admitted, or refused when its flag says so, or
/// refused as busy. Returns the HTTP status of each direct body (none when the connection
/// closed before it was read) and the outcome of each create.
async fn costliest(
    https: HttpsClient,
    namespace: String,
    bodies: Vec<(String, Vec<u8>, bool)>,
    pod: Arc<Pod>,
    pods: usize,
) -> (Vec<Option<u16>>, Vec<Outcome>) {
    let client = byoc_e2e::client().await;
    let direct: Vec<_> = bodies
        .into_iter()
        .map(|(uid, body, allowed)| {
            let https = https.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let mut conn = https.connect().await.unwrap_or_else(|e| {
                    panic!(
                        "{uid}: no TLS connection after {:?}: {e}",
                        started.elapsed()
                    )
                });
                let response = match conn.post(&body).await {
                    Ok(response) => response,
                    // Refused as busy from its headers, the answer sent while the body is still
                    // being written, and the connection closed: the answer is here, or lost.
                    Err(e) => match conn.read_response().await {
                        Ok(response) => response,
                        Err(_) => {
                            eprintln!("{uid}: closed ({e}) before an answer was read");
                            return None;
                        }
                    },
                };
                let review = response.json();
                let r = admission_response(&review);
                // Decided (the junk is skipped), or refused as busy past the budget's wait.
                match response.status {
                    200 => assert_eq!((&r["uid"], &r["allowed"]), (&json!(uid), &json!(allowed))),
                    503 => assert_eq!(r["allowed"], false),
                    other => panic!("{other}: {review}"),
                }
                Some(response.status)
            })
        })
        .collect();
    let labelled: Vec<_> = (0..pods)
        .map(|_| {
            let (client, namespace, pod) = (client.clone(), namespace.clone(), pod.clone());
            tokio::spawn(async move { dry_run(&client, &namespace, &pod).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in direct {
        statuses.push(task.await.expect("a direct body"));
    }
    let mut outcomes = Vec::new();
    for task in labelled {
        outcomes.push(task.await.expect("a labelled pod"));
    }
    (statuses, outcomes)
}

/// Issue 21's worst shapes for the webhook's memory, 16 of each at once: a 7 MiB body whose
/// unknown key holds an array of 3.6 million small numbers, straight to the webhook, and a
/// dry-run pod with about 3 MiB of labels (as much as the API server takes in one request) and
/// the API server's managedFields for them, through the API server. Meanwhile ordinary
/// reviews, straight and through the API server, keep being answered correctly, and the
/// webhook's peak RSS stays within 96 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_costliest_bodies_in_parallel_leave_memory_bounded_and_ordinary_reviews_answered() {
    const PARALLEL: usize = 16;
    const LIMIT: usize = 7 * 1024 * 1024;
    /// 2.9 MB of labels: the pod's JSON stays under the API server's 3 MiB request limit.
    const LABELS: usize = 26_000;
    /// How long the attack may take: the API server computes the managedFields of 16 pods.
    const ATTACK: Duration = Duration::from_secs(240);
    let _exclusive = byoc_e2e::chaos::exclusive().await;
    let client = byoc_e2e::client().await;
    let namespace = TestNamespace::create(&client, "tool-memory").await;
    namespace.wait_for_default_service_account(&client).await;
    let mut webhook = start();
    webhook.register().await;
    let pid = webhook.pid();
    let https = webhook.client();
    // The attack's inputs are made first, and it runs on a runtime of its own, as another
    // process would: the test's own work must not starve the client it measures.
    let bodies: Vec<_> = (0..PARALLEL)
        .map(|i| {
            let uid = format!("numbers-{i}");
            let body = numbers_review(&uid, LIMIT);
            (uid, body, true)
        })
        .collect();
    let pod = Arc::new(pod_with_labels(LABELS));
    let base = webhook.rss_kib();
    let started = Instant::now();

    // Ordinary reviews keep flowing meanwhile, straight and through the API server.
    let stop = Arc::new(AtomicBool::new(false));
    let ordinary = tokio::spawn({
        let (stop, https, client) = (stop.clone(), https.clone(), client.clone());
        let ns = namespace.name().to_owned();
        async move {
            let mut answered = 0;
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && i < 10_000 {
                i += 1;
                let started = Instant::now();
                let mut conn = https.connect().await.unwrap_or_else(|e| {
                    panic!(
                        "ordinary {i}: no TLS connection after {:?}: {e}",
                        started.elapsed()
                    )
                });
                review_ok(&mut conn, &format!("o{i}-a"), PLATFORM_IMAGE, true).await;
                review_ok(&mut conn, &format!("o{i}-d"), "nginx", false).await;
                assert_eq!(
                    try_pod(&client, &ns, PLATFORM_IMAGE).await,
                    Outcome::Admitted
                );
                assert_eq!(
                    try_pod(&client, &ns, "quay.io/evil/x").await,
                    Outcome::Denied
                );
                answered += 4;
            }
            answered
        }
    });

    let attack = std::thread::spawn({
        let (https, ns) = (https.clone(), namespace.name().to_owned());
        move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime for the attack")
                .block_on(async {
                    let attack = costliest(https, ns, bodies, pod, PARALLEL);
                    tokio::time::timeout(ATTACK, attack).await
                })
        }
    });
    let attack = tokio::task::spawn_blocking(move || attack.join())
        .await
        .expect("join the attack thread");
    stop.store(true, Ordering::Relaxed);
    let answered = ordinary
        .await
        .expect("ordinary reviews were all answered correctly");
    let (statuses, outcomes) = attack
        .expect("the attack ran as expected")
        .unwrap_or_else(|_| panic!("the attack did not end within {ATTACK:?}"));
    let peak = webhook.peak_rss_kib();
    let parsed = statuses.iter().filter(|s| **s == Some(200)).count();
    let admitted = outcomes.iter().filter(|o| **o == Outcome::Admitted).count();
    eprintln!(
        "{PARALLEL} x 7 MiB numbers straight ({parsed} parsed, the rest busy: {statuses:?}) + {PARALLEL} x \
         {LABELS}-label pods through the API server ({admitted} admitted; else {:?}), \
         {answered} ordinary reviews, in {:?}: RSS {base} KiB before, peak {peak} KiB, now {} KiB",
        outcomes.iter().find(|o| **o != Outcome::Admitted),
        started.elapsed(),
        webhook.rss_kib()
    );
    // A process that ended (killed for its memory, or crashed) has no VmRSS any more.
    assert!(
        byoc_e2e::chaos::proc_status_kib(pid, "VmRSS") > 0,
        "the webhook is gone:\n{}",
        webhook.log()
    );
    assert!(answered >= 4, "no ordinary review ran alongside");
    assert!(
        parsed > 0,
        "no 7 MiB body was parsed: the bound was not exercised"
    );
    assert!(
        admitted > 0,
        "no labelled pod was reviewed: the bound was not exercised"
    );
    assert!(peak <= 96 * MIB, "peak RSS {peak} KiB");
    still_serves(&https).await;
}

/// A 7 MiB review of a pod whose 160,000 containers are all refused, 16 at once straight to
/// the webhook (the API server would not take the body): the answer names the first 128 and
/// counts the rest, and deciding costs a bounded amount of memory, not kilobytes per container
/// (found by the second cold review of issue 21: 246 MiB for one, 935 MiB for four before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_with_a_hundred_thousand_refused_containers_is_answered_in_bounded_memory() {
    const PARALLEL: usize = 16;
    const LIMIT: usize = 7 * 1024 * 1024;
    let _exclusive = byoc_e2e::chaos::exclusive().await;
    let webhook = start();
    let https = webhook.client();
    let (one, count) = refused_containers_review("refused-once", LIMIT);
    assert!(count > 100_000, "{count} containers");

    // Once alone: the answer lists 128 refusals and counts the rest.
    let mut conn = https.connect().await.expect("TLS connection");
    let response = conn.post(&one).await.expect("an answer");
    assert_eq!(response.status, 200);
    let review = response.json();
    let r = admission_response(&review);
    assert_eq!(r["allowed"], false);
    let message = r["status"]["message"].as_str().expect("a message");
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(lines.len(), 129, "{}", &message[..message.len().min(2000)]);
    assert!(
        lines[0].contains("container \"c0\" image \"quay.io/evil/x\""),
        "{}",
        lines[0]
    );
    assert_eq!(
        lines[128],
        format!("…and {} more refused containers", count - 128)
    );
    assert!(
        message.len() < 128 * 1024,
        "{} bytes of message",
        message.len()
    );
    drop(one);

    let bodies: Vec<_> = (0..PARALLEL)
        .map(|i| {
            let uid = format!("refused-{i}");
            (uid.clone(), refused_containers_review(&uid, LIMIT).0, false)
        })
        .collect();
    let base = webhook.rss_kib();
    let started = Instant::now();
    let ordinary = tokio::spawn({
        let https = https.clone();
        async move {
            let mut conn = https.connect().await.expect("TLS connection");
            for i in 0..20 {
                review_ok(&mut conn, &format!("o{i}-a"), PLATFORM_IMAGE, true).await;
                review_ok(&mut conn, &format!("o{i}-d"), "nginx", false).await;
            }
        }
    });
    let namespace = "tool-abuse".to_owned();
    let pod = Arc::new(pod_with_labels(1));
    let (statuses, _) = costliest(https.clone(), namespace, bodies, pod, 0).await;
    ordinary.await.expect("ordinary reviews answered correctly");
    let peak = webhook.peak_rss_kib();
    let decided = statuses.iter().filter(|s| **s == Some(200)).count();
    eprintln!(
        "{PARALLEL} x 7 MiB reviews of {count} refused containers ({decided} decided, the rest \
         busy: {statuses:?}) in {:?}: RSS {base} KiB before, peak {peak} KiB, now {} KiB",
        started.elapsed(),
        webhook.rss_kib()
    );
    assert!(
        decided > 0,
        "no review was decided: the bound was not exercised"
    );
    assert!(peak <= 96 * MIB, "peak RSS {peak} KiB");
    still_serves(&https).await;
}

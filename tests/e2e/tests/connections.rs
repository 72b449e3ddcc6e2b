//! A tenant hogging the webhook's connections, and readiness that tells the truth (issue 21,
//! parts 3 and 4), against the real API server and a real HTTPS `byoc-webhook`:
//!
//! - one source (a pod, here the loopback address `127.0.0.2`) opens 5,000 connections and
//!   trickles requests on them; it gets `--max-connections-per-source` of them, the rest are
//!   closed on accept, and the reviews the API server (on `127.0.0.1`) sends keep being
//!   answered correctly throughout;
//! - a connection older than `--max-connection-age` gets `Connection: close` and is closed, and
//!   the API server's own connections simply reconnect;
//! - the admin port (probes, metrics) holds only a few idle connections per source and closes
//!   them after its header timeout, so a thousand idle sockets neither exhaust a soft
//!   open-files limit of 1024 (what containerd 2.x gives containers, raised at start) nor
//!   stop the probes;
//! - of two replicas, the one whose namespace watch is cut (through a [`FaultProxy`]) reports
//!   not ready within `--watch-unhealthy-after`, its metrics say why, and it is ready again once
//!   healed, while the other stays ready and keeps answering.
//!
//! ```text
//! hack/local-cluster.sh exec -- cargo test -p byoc-e2e --test connections
//! ```

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use byoc_e2e::chaos::{
    self, Connection, FaultProxy, Outcome, PLATFORM_IMAGE, WebhookOptions, WebhookProcess,
    admission_response, pod_review, try_pod, wait_outcome,
};
use byoc_e2e::{TestNamespace, client, eventually, unique_name};
use kube::Client;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// The attacker's source address: not the API server's (`127.0.0.1`).
const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// An image no grant admits: the webhook refuses it in a tool namespace.
const REFUSED_IMAGE: &str = "nginx:1.27";

/// A tool namespace where pods can be created.
async fn tool_namespace(client: &Client, prefix: &str) -> TestNamespace {
    let ns = TestNamespace::create(client, prefix).await;
    ns.wait_for_default_service_account(client).await;
    ns
}

/// Sends one pod review on `conn`; `Ok` with whether the server said `Connection: close` when
/// it was answered correctly (the echoed uid, the verdict for `image`).
async fn review(conn: &mut Connection, uid: &str, image: &str) -> Result<bool, String> {
    let body = pod_review(uid, "tool-conn", &[image]).to_string();
    let response = conn
        .post(body.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    if response.status != 200 {
        return Err(format!("{response:?}"));
    }
    let answer = response.json();
    let r = admission_response(&answer);
    let allowed = image == PLATFORM_IMAGE;
    if r["uid"] != uid || r["allowed"] != allowed {
        return Err(format!("{image}: {answer}"));
    }
    Ok(response.close)
}

/// What the reviews through the API server got while a fault or an attack went on.
#[derive(Debug, Default)]
struct ApiServerReviews {
    answered: usize,
    wrong: Vec<String>,
    slowest: Duration,
}

/// Creates pods (server-side dry run) through the API server in `namespace` until `stop`,
/// alternating an admitted and a refused image, and records every outcome that is not the
/// policy's verdict.
fn api_server_reviews(
    client: &Client,
    namespace: &str,
    stop: &Arc<AtomicBool>,
) -> JoinHandle<ApiServerReviews> {
    let (client, namespace, stop) = (client.clone(), namespace.to_owned(), Arc::clone(stop));
    tokio::spawn(async move {
        let mut seen = ApiServerReviews::default();
        // Bounded in count as well as by `stop`.
        for i in 0..10_000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let (image, want) = if i % 2 == 0 {
                (PLATFORM_IMAGE, Outcome::Admitted)
            } else {
                (REFUSED_IMAGE, Outcome::Denied)
            };
            let started = Instant::now();
            let got = try_pod(&client, &namespace, image).await;
            seen.slowest = seen.slowest.max(started.elapsed());
            if got == want {
                seen.answered += 1;
            } else {
                seen.wrong.push(format!("{image}: {got:?}"));
            }
        }
        seen
    })
}

/// Stops `task` (started by [`api_server_reviews`]) and checks that every review was answered
/// by the policy, at least `min` of them.
async fn assert_all_answered(
    stop: &AtomicBool,
    task: JoinHandle<ApiServerReviews>,
    min: usize,
) -> ApiServerReviews {
    stop.store(true, Ordering::Relaxed);
    let seen = task.await.expect("the API server's reviews");
    assert!(
        seen.wrong.is_empty(),
        "{} of {} reviews through the API server were not answered by the policy: {:?}",
        seen.wrong.len(),
        seen.answered + seen.wrong.len(),
        &seen.wrong[..seen.wrong.len().min(10)]
    );
    assert!(
        seen.answered >= min,
        "only {} reviews through the API server",
        seen.answered
    );
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_with_5000_connections_is_capped_and_the_api_server_is_still_answered() {
    const ATTEMPTS: usize = 5_000;
    const PER_SOURCE: usize = 512;
    let _exclusive = chaos::exclusive().await;
    let client = client().await;
    let tool = tool_namespace(&client, "conn-hog").await;
    let mut webhook = WebhookProcess::start(WebhookOptions {
        max_connections_per_source: PER_SOURCE as u32,
        ..WebhookOptions::default()
    });
    webhook.register().await;
    wait_outcome(&client, tool.name(), PLATFORM_IMAGE, Outcome::Admitted).await;

    let stop = Arc::new(AtomicBool::new(false));
    let reviews = api_server_reviews(&client, tool.name(), &stop);

    // The flood: 5,000 connections from one source, from 64 tasks at a time; each one that is
    // accepted gets a first review and is kept open.
    let https = webhook.client();
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let flood: Vec<JoinHandle<Vec<Connection>>> = (0..64)
        .map(|_| {
            let (https, next) = (https.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                let mut held = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= ATTEMPTS {
                        return held;
                    }
                    let Ok(mut conn) = https.connect_from(ATTACKER).await else {
                        continue;
                    };
                    if review(&mut conn, &format!("hog-{i}"), PLATFORM_IMAGE)
                        .await
                        .is_ok()
                    {
                        held.push(conn);
                    }
                }
            })
        })
        .collect();
    let mut held = Vec::new();
    for task in flood {
        held.extend(task.await.expect("a flooding task"));
    }
    let refused = ATTEMPTS - held.len();
    eprintln!(
        "{ATTEMPTS} connections from {ATTACKER} in {:?}: {} held, {refused} refused",
        started.elapsed(),
        held.len()
    );
    assert_eq!(
        held.len(),
        PER_SOURCE,
        "one source holds exactly --max-connections-per-source connections"
    );
    assert_eq!(
        webhook.metric("byoc_webhook_refused_source_connections_total"),
        refused as f64
    );

    // The trickle: every held connection sends a small review every 2 s (so no idle timeout
    // frees it), for 20 s; the answers stay correct.
    let trickled = Arc::new(AtomicUsize::new(0));
    let trickle: Vec<JoinHandle<Result<(), String>>> = held
        .into_iter()
        .enumerate()
        .map(|(c, mut conn)| {
            let trickled = Arc::clone(&trickled);
            tokio::spawn(async move {
                for n in 0..10 {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    let image = if n % 2 == 0 {
                        REFUSED_IMAGE
                    } else {
                        PLATFORM_IMAGE
                    };
                    review(&mut conn, &format!("hog-{c}-{n}"), image).await?;
                    trickled.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    // Meanwhile the source stays capped: one more connection is closed on accept.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let extra = match https.connect_from(ATTACKER).await {
        Err(e) => Err(e.to_string()),
        Ok(mut conn) => review(&mut conn, "hog-extra", PLATFORM_IMAGE)
            .await
            .map(|_| ()),
    };
    assert!(
        extra.is_err(),
        "a connection past the per-source cap was served"
    );
    for task in trickle {
        task.await
            .expect("a trickling connection")
            .expect("a held connection is answered correctly");
    }
    let seen = assert_all_answered(&stop, reviews, 20).await;
    eprintln!(
        "during the attack: {} reviews through the API server, all answered, slowest {:?}; \
         {} trickled reviews answered",
        seen.answered,
        seen.slowest,
        trickled.load(Ordering::Relaxed)
    );
    assert!(
        seen.slowest < Duration::from_secs(5),
        "a review through the API server took {:?}",
        seen.slowest
    );
    assert_eq!(
        webhook.metric("byoc_webhook_refused_connections_total"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_older_than_the_max_age_is_told_to_close_and_closed() {
    const MAX_AGE: Duration = Duration::from_secs(3);
    let _exclusive = chaos::exclusive().await;
    let client = client().await;
    let tool = tool_namespace(&client, "conn-age").await;
    let mut webhook = WebhookProcess::start(WebhookOptions {
        max_connection_age: "3s",
        ..WebhookOptions::default()
    });
    webhook.register().await;
    let stop = Arc::new(AtomicBool::new(false));
    let reviews = api_server_reviews(&client, tool.name(), &stop);

    // A client that keeps its connection busy, one review every 500 ms.
    let https = webhook.client();
    let opened = Instant::now();
    let mut conn = https.connect_from(ATTACKER).await.expect("TLS connection");
    let mut answered = 0;
    let told = loop {
        let close = review(&mut conn, &format!("age-{answered}"), PLATFORM_IMAGE)
            .await
            .expect("answered until told to close");
        answered += 1;
        if close {
            break opened.elapsed();
        }
        assert!(
            opened.elapsed() < MAX_AGE + Duration::from_secs(10),
            "no Connection: close after {:?}",
            opened.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(told >= MAX_AGE, "told to close after {told:?}");
    let closed = conn.closed_within(Duration::from_secs(5)).await;
    assert!(
        closed.is_some(),
        "the connection was still open 5 s after Connection: close"
    );
    eprintln!("{answered} reviews, Connection: close after {told:?}, closed {closed:?} later");

    // A new connection is served at once.
    let mut fresh = https.connect_from(ATTACKER).await.expect("TLS connection");
    assert!(
        !review(&mut fresh, "age-fresh", PLATFORM_IMAGE)
            .await
            .unwrap()
    );

    // The API server's connections aged too, and it reconnected without failing a review.
    tokio::time::sleep(MAX_AGE * 2).await;
    let seen = assert_all_answered(&stop, reviews, 5).await;
    let aged = webhook.metric("byoc_webhook_aged_connections_total");
    eprintln!(
        "{} reviews through the API server, all answered; {aged} aged connections",
        seen.answered
    );
    assert!(
        aged >= 2.0,
        "only the test client's connection aged ({aged}): the API server's did not"
    );
}

/// `byoc_webhook_namespace_watch_last_event_age_seconds` of `webhook`.
/// The soft and hard open-files limits of a process, from `/proc/PID/limits`.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read the limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("an open-files line");
    let mut fields = line["Max open files".len()..].split_whitespace();
    let soft = fields.next().expect("a soft limit").to_owned();
    (soft, fields.next().expect("a hard limit").to_owned())
}

/// Opens a plain TCP connection to `addr` from `from` and says whether the server still holds
/// it 200 ms later (it closes connections past its caps at once).
async fn held_after_connect(from: IpAddr, addr: std::net::SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind((from, 0).into()).ok()?;
    let mut stream = socket.connect(addr).await.ok()?;
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut byte)).await {
        Err(_) => Some(stream),
        Ok(_) => None,
    }
}

#[tokio::test]
async fn idle_connections_to_the_admin_port_are_capped_per_source_and_the_probes_still_answer() {
    const ATTEMPTS: usize = 1100;
    let _exclusive = chaos::exclusive().await;
    let client = client().await;
    let tool = tool_namespace(&client, "conn-admin").await;
    let mut webhook = WebhookProcess::start(WebhookOptions {
        open_files: Some(1024),
        ..WebhookOptions::default()
    });
    webhook.register().await;
    let (soft, hard) = open_files_limits(webhook.pid());
    eprintln!("started with a soft open-files limit of 1024: now {soft} (hard {hard})");
    assert_eq!(
        soft, hard,
        "the soft open-files limit is raised to the hard one"
    );
    let admin = webhook.admin_addr();

    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..ATTEMPTS {
        held.extend(held_after_connect(ATTACKER, admin).await);
    }
    eprintln!(
        "{ATTEMPTS} idle connections from {ATTACKER} to the admin port in {:?}: {} held",
        started.elapsed(),
        held.len()
    );
    assert_eq!(held.len(), byoc_runtime::admin::ADMIN_PER_SOURCE);
    assert_eq!(
        webhook.metric("byoc_admin_refused_source_connections_total"),
        (ATTEMPTS - held.len()) as f64
    );
    // The probes (from another address) and the API server's reviews still get through.
    let (status, _) = byoc_e2e::http_get(admin, "/healthz").expect("/healthz answers");
    assert_eq!(status, 200);
    let (status, _) = byoc_e2e::http_get(admin, "/readyz").expect("/readyz answers");
    assert_eq!(status, 200);
    assert_eq!(
        try_pod(&client, tool.name(), PLATFORM_IMAGE).await,
        Outcome::Admitted
    );

    // The idle ones are closed once the header timeout passes.
    let timeout = byoc_runtime::admin::ADMIN_HEADER_TIMEOUT;
    tokio::time::sleep(timeout).await;
    for mut stream in held {
        let mut byte = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await;
        assert!(
            matches!(closed, Ok(Ok(0) | Err(_))),
            "an idle admin connection is open {:?} after it was made",
            started.elapsed()
        );
    }
}

fn last_event_age(webhook: &WebhookProcess) -> f64 {
    webhook.metric("byoc_webhook_namespace_watch_last_event_age_seconds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_watch_fails_is_not_ready_while_the_other_keeps_serving() {
    const UNHEALTHY_AFTER: Duration = Duration::from_secs(3);
    let _exclusive = chaos::exclusive().await;
    let client = client().await;
    let tool = tool_namespace(&client, "conn-ready").await;
    let proxy = FaultProxy::start().await;
    let kubeconfig = std::env::temp_dir().join(unique_name("byoc-proxy-kubeconfig"));
    proxy.write_kubeconfig(&kubeconfig);
    let cut = WebhookProcess::start(WebhookOptions {
        watch_unhealthy_after: "3s",
        kubeconfig: Some(kubeconfig.clone()),
        ..WebhookOptions::default()
    });
    let mut serving = WebhookProcess::start(WebhookOptions {
        watch_unhealthy_after: "3s",
        ..WebhookOptions::default()
    });
    serving.register().await;
    assert_eq!(cut.metric("byoc_webhook_namespace_watch_healthy"), 1.0);
    let stop = Arc::new(AtomicBool::new(false));
    let reviews = api_server_reviews(&client, tool.name(), &stop);

    let broken = Instant::now();
    proxy.break_connections();
    let unready = eventually(
        "the replica whose watch is cut to report not ready",
        UNHEALTHY_AFTER + Duration::from_secs(15),
        || async {
            match cut.readyz() {
                (503, why) => Ok((broken.elapsed(), why)),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    eprintln!(
        "not ready {:?} after the watch was cut: {}",
        unready.0, unready.1
    );
    assert!(
        unready.0 >= UNHEALTHY_AFTER,
        "not ready before --watch-unhealthy-after"
    );
    assert!(
        unready.1.contains("the namespace watch has been failing"),
        "{}",
        unready.1
    );
    assert_eq!(cut.metric("byoc_webhook_namespace_watch_healthy"), 0.0);
    let age = last_event_age(&cut);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = last_event_age(&cut);
    assert!(
        later >= age + 1.0,
        "the last event's age does not grow while the watch is cut: {age} then {later}"
    );
    assert_eq!(serving.readyz().0, 200, "{:?}", serving.readyz());
    assert_eq!(serving.metric("byoc_webhook_namespace_watch_healthy"), 1.0);

    proxy.heal();
    let healed = Instant::now();
    eventually(
        "the healed replica to be ready again",
        // The watch retries with a backoff of up to 30 s.
        Duration::from_secs(60),
        || async {
            match cut.readyz() {
                (200, _) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    eprintln!(
        "ready {:?} after the watch was healed; last event age {later} s while cut",
        healed.elapsed()
    );
    assert_eq!(cut.metric("byoc_webhook_namespace_watch_healthy"), 1.0);
    assert!(last_event_age(&cut) < later);
    let seen = assert_all_answered(&stop, reviews, 10).await;
    eprintln!(
        "the other replica answered all {} reviews through the API server",
        seen.answered
    );
    assert_eq!(serving.readyz().0, 200);
    let _ = std::fs::remove_file(kubeconfig);
}

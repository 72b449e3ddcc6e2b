//! The HTTPS admission endpoint: one `POST /validate` for every kind; the policy routes by the
//! request's kind.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use byoc_policy::read;
use byoc_policy::{Config, Decision, decide_requiring, respond};
use byoc_registry::Lookups;
use byoc_runtime::connections::{self, ConnectionLimit, Opened};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::TokioTimer;
use jiff::Timestamp;
use kube::core::admission::{AdmissionRequest, AdmissionResponse};
use rustls::ServerConfig;
use tracing::Instrument as _;

use crate::budget::{BodyBudget, SMALL_BODY_BYTES};
use crate::cache::NamespaceCache;
use crate::metrics::Metrics;
use crate::review::{self, MAX_BODY_BYTES, ReviewError, Unreadable, Verdict};

/// How long a client may take to send a request body once its head arrived. The API server
/// waits at most 30 s for a webhook; a body still arriving after this is not a real review.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The path the API server posts AdmissionReviews to.
pub const VALIDATE_PATH: &str = "/validate";

/// Everything a review needs: the policy, the namespace cache, the registry lookups, the
/// metrics and the body budget.
pub struct Webhook {
    config: Config,
    namespaces: NamespaceCache,
    lookups: Lookups,
    metrics: Metrics,
    budget: BodyBudget,
}

/// A review decided by name whose requirements still need the registry.
struct Unsettled {
    req: AdmissionRequest<read::Object>,
    decision: Decision,
    span: tracing::Span,
}

/// A review after its synchronous part.
#[expect(
    clippy::large_enum_variant,
    reason = "Done is every name-only review: boxing it would add an allocation to each"
)]
enum Stage {
    Done(AdmissionResponse),
    Unsettled(Box<Unsettled>),
}

impl Webhook {
    /// A webhook applying `config` with grants read from `namespaces`, checking requirements
    /// with `lookups`. Its body budget is [`crate::budget::DEFAULT_BYTES`], waited for up to
    /// [`crate::budget::DEFAULT_WAIT`].
    pub fn new(
        config: Config,
        namespaces: NamespaceCache,
        lookups: Lookups,
        metrics: Metrics,
    ) -> Self {
        let budget = BodyBudget::new(
            crate::budget::DEFAULT_BYTES,
            crate::budget::DEFAULT_WAIT,
            metrics.body_bytes_in_flight.clone(),
        );
        Self {
            config,
            namespaces,
            lookups,
            metrics,
            budget,
        }
    }

    /// The same webhook with a body budget of `bytes`, waited for up to `wait`.
    #[must_use]
    pub fn with_budget(mut self, bytes: usize, wait: Duration) -> Self {
        let gauge = self.metrics.body_bytes_in_flight.clone();
        self.budget = BodyBudget::new(bytes, wait, gauge);
        self
    }

    /// Answers one request body: the policy's response, or a refusal saying why the body
    /// cannot be read. Never panics on any input. Registry lookups happen only for images
    /// allowed by name that have requirements.
    pub async fn review(&self, body: &[u8]) -> AdmissionResponse {
        let stage = self.judge(body);
        self.settle(stage).await
    }

    /// The synchronous part of a review: reading the body and deciding by name.
    fn judge(&self, body: &[u8]) -> Stage {
        let req = match review::parse(body) {
            Ok(req) => req,
            Err(unreadable) => return Stage::Done(self.unreadable(&unreadable)),
        };
        let span = tracing::info_span!(
            "review",
            uid = %req.uid,
            operation = ?req.operation,
            kind = %req.kind.kind,
            namespace = req.namespace.as_deref().unwrap_or_default(),
            name = %req.name,
            user = req.user_info.username.as_deref().unwrap_or_default(),
        );
        let entered = span.enter();
        let namespace = req.namespace.as_deref().unwrap_or_default();
        let (allowance, requirements) = self.namespaces.grants(namespace);
        let decision = decide_requiring(
            &self.config,
            &req,
            &allowance,
            requirements.as_deref(),
            Timestamp::now(),
        );
        if decision.pending.is_empty() {
            return Stage::Done(self.conclude(&req, &decision));
        }
        drop(entered);
        Stage::Unsettled(Box::new(Unsettled {
            req,
            decision,
            span,
        }))
    }

    /// The asynchronous part: the registry lookups of what is pending, then the answer.
    async fn settle(&self, stage: Stage) -> AdmissionResponse {
        let Unsettled {
            req,
            mut decision,
            span,
        } = match stage {
            Stage::Done(response) => return response,
            Stage::Unsettled(unsettled) => *unsettled,
        };
        let namespace = req.namespace.as_deref().unwrap_or_default();
        let settled = self
            .lookups
            .settle(
                namespace,
                self.config.tool_prefix(),
                &decision.pending,
                Timestamp::now(),
            )
            .instrument(span.clone())
            .await;
        decision.settle(namespace, &settled);
        span.in_scope(|| self.conclude(&req, &decision))
    }

    /// Counts, logs and answers a final decision.
    fn conclude(
        &self,
        req: &AdmissionRequest<read::Object>,
        decision: &Decision,
    ) -> AdmissionResponse {
        let verdict = Verdict::of(decision, self.config.mode);
        self.metrics.decision(verdict, decision.reason.as_str());
        log(verdict, decision);
        if verdict != Verdict::Denied && !decision.reminders.is_empty() {
            self.metrics.reminded();
            tracing::info!(
                reminders = decision.reminders.len(),
                "admitted with expiry reminders"
            );
        }
        if verdict != Verdict::Denied && !decision.softened.is_empty() {
            tracing::warn!(
                softened = %decision.softened.join("\n"),
                "admitted with requirements unchecked (failureMode allow)"
            );
        }
        respond(&self.config, req, decision)
    }

    fn unreadable(&self, unreadable: &Unreadable) -> AdmissionResponse {
        let _entered = tracing::info_span!("review", uid = %unreadable.uid).entered();
        tracing::warn!(error = %unreadable.error, "refused an unreadable request");
        self.metrics.unreadable(unreadable.error.metric_label());
        self.metrics
            .decision(Verdict::Denied, byoc_policy::Reason::Malformed.as_str());
        unreadable.response()
    }
}

fn log(verdict: Verdict, decision: &Decision) {
    let reason = decision.reason.as_str();
    match verdict {
        Verdict::Admitted => tracing::debug!(reason, "admitted"),
        Verdict::Denied => tracing::info!(reason, message = %decision.lines.join("\n"), "denied"),
        Verdict::Warned | Verdict::Audited => tracing::warn!(
            reason,
            result = verdict.as_str(),
            findings = %decision.lines.join("\n"),
            "admitted despite registry policy violations"
        ),
    }
}

/// The admission router: `POST /validate`.
pub fn router(webhook: Arc<Webhook>) -> Router {
    Router::new()
        .route(VALIDATE_PATH, post(validate))
        .with_state(webhook)
}

async fn validate(State(webhook): State<Arc<Webhook>>, body: Body) -> Response {
    let started = Instant::now();
    let declared = axum::body::HttpBody::size_hint(&body).exact();
    let taken = match webhook.budget.take(declared).await {
        Ok(taken) => taken,
        Err(error) => {
            return answer(
                &webhook,
                started,
                StatusCode::SERVICE_UNAVAILABLE,
                webhook.unreadable(&error.into()),
            );
        }
    };
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, read_body(body));
    let read = read.await.unwrap_or_else(|_| {
        Err(ReviewError::Body(format!(
            "not received within {BODY_READ_TIMEOUT:?}"
        )))
    });
    let stage = match read {
        // A large body takes long to parse (seconds on a loaded machine): on the blocking pool,
        // so that it never holds one of the few async workers, which accept connections, finish
        // TLS handshakes (axum-server drops one unfinished after 10 s) and answer ordinary
        // reviews. The body budget bounds how many run at once.
        Ok(bytes) if bytes.len() > SMALL_BODY_BYTES => {
            let judging = Arc::clone(&webhook);
            let stage = tokio::task::spawn_blocking(move || judging.judge(&bytes)).await;
            stage.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
        }
        Ok(bytes) => webhook.judge(&bytes),
        Err(error) => {
            let status = match error {
                ReviewError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::OK,
            };
            return answer(&webhook, started, status, webhook.unreadable(&error.into()));
        }
    };
    // The body is read and gone; what the registry lookups wait with is small. Keeping the
    // budget through them would let reviews that wait on a slow registry refuse every other
    // review "busy".
    drop(taken);
    let response = webhook.settle(stage).await;
    answer(&webhook, started, StatusCode::OK, response)
}

fn answer(
    webhook: &Webhook,
    started: Instant,
    status: StatusCode,
    response: AdmissionResponse,
) -> Response {
    let answer = match serde_json::to_vec(&response.into_review()) {
        Ok(json) => (status, [(header::CONTENT_TYPE, "application/json")], json).into_response(),
        // Serializing plain structs of strings cannot fail; answer anyway rather than panic.
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    webhook.metrics.observe(started.elapsed());
    answer
}

/// Reads at most [`MAX_BODY_BYTES`].
async fn read_body(body: Body) -> Result<Bytes, ReviewError> {
    // A declared length over the limit is refused before any of it is read.
    if axum::body::HttpBody::size_hint(&body).lower() > MAX_BODY_BYTES as u64 {
        return Err(ReviewError::TooLarge);
    }
    // One buffer of the declared length, filled frame by frame: never a second copy.
    let declared = axum::body::HttpBody::size_hint(&body).lower();
    let mut bytes = Vec::with_capacity(usize::try_from(declared).unwrap_or(0).min(MAX_BODY_BYTES));
    let mut body = Limited::new(body, MAX_BODY_BYTES);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    bytes.extend_from_slice(data);
                }
            }
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                return Err(ReviewError::TooLarge);
            }
            Err(e) => return Err(ReviewError::Body(e.to_string())),
        }
    }
    Ok(Bytes::from(bytes))
}

/// How connections are bounded.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most connections open at once; more are closed on accept.
    pub max_connections: usize,
    /// Most connections open at once from one source address; more are closed on accept.
    pub max_connections_per_source: usize,
    /// How long a connection serves requests: the first response after it says
    /// `Connection: close`, and the connection closes once that response is written.
    pub max_connection_age: Duration,
    /// How long a connection may wait for the whole head of its next request: idle keep-alive
    /// connections and slow request heads are closed after it.
    pub idle_timeout: Duration,
}

/// Serves `webhook` over HTTPS on `listener` within `limits` until `handle` shuts it down; a
/// graceful shutdown stops accepting connections and lets requests in flight finish.
pub async fn serve(
    listener: std::net::TcpListener,
    tls: ServerConfig,
    limits: Limits,
    webhook: Arc<Webhook>,
    handle: Handle<SocketAddr>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let metrics = webhook.metrics.clone();
    let limit = ConnectionLimit::new(
        limits.max_connections,
        limits.max_connections_per_source,
        metrics.connections.clone(),
    );
    // HTTP/1.1 only (ALPN offers nothing else): no HTTP/2 sniffing, which waits for a first
    // byte without any timeout. hyper's header read timeout needs a timer; it runs from the
    // start of every request head, so it also closes connections that never send one.
    let mut server =
        axum_server::from_tcp_rustls(listener, RustlsConfig::from_config(Arc::new(tls)))?
            .map(|tls| tls.acceptor(limit))
            .http1_only();
    server
        .http_builder()
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout);
    server
        .handle(handle)
        .serve(
            router(webhook)
                .layer(axum::middleware::from_fn_with_state(
                    (limits.max_connection_age, metrics.connections.aged.clone()),
                    connections::close_when_old,
                ))
                .into_make_service_with_connect_info::<Opened>(),
        )
        .await
}

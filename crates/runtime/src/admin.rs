//! The admin server on its own plain-HTTP port: `/healthz` (the process is up), `/readyz`
//! (ready for traffic: starts false, is flipped explicitly, and fails while any registered
//! check fails) and `/metrics` (Prometheus text).
//!
//! Whoever can reach the port (the kubelet, Prometheus, and any pod where NetworkPolicy is not
//! enforced) is bounded: [`ADMIN_MAX_CONNECTIONS`] connections in all, [`ADMIN_PER_SOURCE`]
//! from one address, and a request head must arrive within [`ADMIN_HEADER_TIMEOUT`], so idle
//! sockets cannot take the process's file descriptors or the probes' slots.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum_server::Handle;
use hyper_util::rt::TokioTimer;
use prometheus_client::registry::Registry;

use crate::Shutdown;
use crate::connections::{ConnectionLimit, ConnectionMetrics};

/// The most connections the admin port holds at once.
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

/// The most admin connections from one source address (the kubelet probes from the node's).
pub const ADMIN_PER_SOURCE: usize = 8;

/// How long an admin connection may take to send a request head, idle keep-alive included.
pub const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A condition readiness also depends on: `Err` says why the process is not ready.
type Check = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Whether the process is ready for traffic: a flag (starts not ready) and checks evaluated on
/// every `/readyz`. Cheap to clone; clones share the state.
#[derive(Clone, Default)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
    checks: Arc<RwLock<Vec<Check>>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("ready", &self.get())
            .finish_non_exhaustive()
    }
}

impl Readiness {
    /// Marks the process ready or not.
    pub fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether the flag is set (the checks aside).
    pub fn get(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Adds a check: while it returns `Err`, the process is not ready, whatever the flag says.
    pub fn require(&self, check: impl Fn() -> Result<(), String> + Send + Sync + 'static) {
        self.checks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Box::new(check));
    }

    /// Ready, or why not: the flag first, then every check in the order they were added.
    pub fn status(&self) -> Result<(), String> {
        if !self.get() {
            return Err("not ready".to_owned());
        }
        let checks = self
            .checks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        checks.iter().try_for_each(|check| check())
    }
}

struct AdminState {
    readiness: Readiness,
    registry: Registry,
}

/// The admin HTTP server.
pub struct AdminServer {
    listener: std::net::TcpListener,
    limit: ConnectionLimit,
    state: Arc<AdminState>,
}

impl AdminServer {
    /// Binds the admin port. `registry` holds every metric the process exports; the admin
    /// port's own connection metrics are added to it as `byoc_admin_*`.
    pub async fn bind(
        addr: SocketAddr,
        readiness: Readiness,
        mut registry: Registry,
    ) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let metrics = ConnectionMetrics::register(
            registry.sub_registry_with_prefix("byoc_admin"),
            "",
            &format!("{ADMIN_MAX_CONNECTIONS} admin connections"),
            &format!("{ADMIN_PER_SOURCE} admin connections"),
        );
        Ok(Self {
            listener,
            limit: ConnectionLimit::new(ADMIN_MAX_CONNECTIONS, ADMIN_PER_SOURCE, metrics),
            state: Arc::new(AdminState {
                readiness,
                registry,
            }),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` fires; requests in flight then finish.
    pub async fn serve(self, shutdown: Shutdown) -> std::io::Result<()> {
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(self.state);
        let handle = Handle::new();
        let stop = handle.clone();
        tokio::spawn(async move {
            shutdown.wait().await;
            stop.graceful_shutdown(Some(ADMIN_HEADER_TIMEOUT));
        });
        // hyper's header read timeout needs a timer; it runs from the start of every request
        // head, so it also closes connections that never send one.
        let mut server = axum_server::from_tcp(self.listener)?
            .acceptor(self.limit)
            .http1_only();
        server
            .http_builder()
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(ADMIN_HEADER_TIMEOUT);
        server.handle(handle).serve(app.into_make_service()).await
    }
}

async fn readyz(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    match state.readiness.status() {
        Ok(()) => (StatusCode::OK, "ok".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("cannot encode metrics: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn endpoints() {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        registry.register("test_events", "Events seen", counter.clone());
        counter.inc();
        let readiness = Readiness::default();
        let server = AdminServer::bind("127.0.0.1:0".parse().unwrap(), readiness.clone(), registry)
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let shutdown = Shutdown::default();
        let task = tokio::spawn(server.serve(shutdown.clone()));

        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        readiness.set(true);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        let failing = Arc::new(AtomicBool::new(false));
        let check = Arc::clone(&failing);
        readiness.require(move || {
            if check.load(Ordering::Relaxed) {
                Err("the watch is failing".to_owned())
            } else {
                Ok(())
            }
        });
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        failing.store(true, Ordering::Relaxed);
        let answer = get(addr, "/readyz").await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.ends_with("the watch is failing"), "{answer}");
        failing.store(false, Ordering::Relaxed);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        readiness.set(false);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        let metrics = get(addr, "/metrics").await;
        assert!(metrics.contains("test_events_total 1"), "{metrics}");
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));

        shutdown.trigger();
        task.await.unwrap().unwrap();
    }
}

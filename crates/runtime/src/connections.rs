//! Caps on connections, for the webhook's HTTPS port and both processes' admin ports. Past
//! `max` open connections in all, or `per_source` from one source address, a new connection is
//! closed as soon as it is accepted, so neither a flood of clients nor one client holding many
//! connections can run the process out of file descriptors or memory, or take the slots the
//! API servers and the kubelet's probes need. The servers' header-read timeouts free the slots
//! that slow clients hold, and [`close_when_old`] ends connections past a maximum age, so even a
//! client that keeps its connections busy with tiny requests gives them up.

use std::collections::HashMap;
use std::future::{Ready, ready};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use axum_server::accept::Accept;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The open-files limit of the process, before and after [`raise_open_files_limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit the process started with (`None`: unlimited).
    pub before: Option<u64>,
    /// The soft limit now.
    pub now: Option<u64>,
}

/// Raises the soft open-files limit to the hard one. Go does this by itself, Rust does not, and
/// container runtimes may start processes with a soft limit of 1024 (containerd 2.x does),
/// which a few hundred idle connections would exhaust.
pub fn raise_open_files_limit() -> io::Result<OpenFiles> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current;
    if limit.current != limit.maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        )?;
    }
    Ok(OpenFiles {
        before,
        now: getrlimit(Resource::Nofile).current,
    })
}

/// Open files kept free of connections on the serving port: the admin port's connections, the
/// API server's, logs and certificate files.
pub const RESERVED_FILES: u64 = 256;

/// `max` connections, or fewer when `files` could not hold them with [`RESERVED_FILES`] to
/// spare: a cap past the descriptor limit would never be reached, and `accept` would fail for
/// every client instead.
pub fn fit_connections(max: usize, files: OpenFiles) -> usize {
    files.now.map_or(max, |limit| {
        let room = usize::try_from(limit.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX);
        max.min(room.max(1))
    })
}

/// What a [`ConnectionLimit`] counts.
#[derive(Clone, Debug, Default)]
pub struct ConnectionMetrics {
    /// Open connections.
    pub open: Gauge,
    /// Connections closed on accept because `max` were open.
    pub refused: Counter,
    /// Connections closed on accept because `per_source` were open from their address.
    pub refused_source: Counter,
    /// Connections told to close because they were older than the maximum age.
    pub aged: Counter,
}

impl ConnectionMetrics {
    /// Registers the metrics as `{what}_open_connections`, `{what}_refused_connections_total`,
    /// `{what}_refused_source_connections_total` and `{what}_aged_connections_total` (no
    /// prefix when `what` is empty), described for the flags `max` and `per_source` come from.
    pub fn register(registry: &mut Registry, what: &str, max: &str, per_source: &str) -> Self {
        let metrics = Self::default();
        let name = |n: &str| {
            if what.is_empty() {
                n.to_owned()
            } else {
                format!("{what}_{n}")
            }
        };
        registry.register(
            name("open_connections"),
            "Open connections",
            metrics.open.clone(),
        );
        registry.register(
            name("refused_connections"),
            format!("Connections closed on accept because {max} were open"),
            metrics.refused.clone(),
        );
        registry.register(
            name("refused_source_connections"),
            format!(
                "Connections closed on accept because {per_source} were open from their source address"
            ),
            metrics.refused_source.clone(),
        );
        registry.register(
            name("aged_connections"),
            "Connections told to close because they were older than the maximum age",
            metrics.aged.clone(),
        );
        metrics
    }
}

/// Accepts at most `max` connections at once, and at most `per_source` from one source
/// address; also turns off Nagle's algorithm, since every answer is one small write that should
/// leave at once.
#[derive(Clone, Debug)]
pub struct ConnectionLimit {
    slots: Arc<Semaphore>,
    sources: Arc<Sources>,
    metrics: ConnectionMetrics,
}

impl ConnectionLimit {
    /// A limit of `max` open connections, `per_source` of them from one address, counted in
    /// `metrics`.
    pub fn new(max: usize, per_source: usize, metrics: ConnectionMetrics) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
            sources: Arc::new(Sources {
                max: per_source,
                open: Mutex::default(),
            }),
            metrics,
        }
    }
}

impl<S> Accept<TcpStream, S> for ConnectionLimit {
    type Stream = Counted;
    type Service = S;
    type Future = Ready<io::Result<(Counted, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let source = match stream.peer_addr() {
            Ok(peer) => peer.ip().to_canonical(),
            Err(e) => return ready(Err(e)),
        };
        let Some(source) = Sources::take(&self.sources, source) else {
            self.metrics.refused_source.inc();
            return ready(Err(io::Error::other(format!(
                "the per-source connection limit is reached for {source}"
            ))));
        };
        let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            self.metrics.refused.inc();
            return ready(Err(io::Error::other("the connection limit is reached")));
        };
        ready(stream.set_nodelay(true).map(|()| {
            self.metrics.open.inc();
            let stream = Counted {
                stream,
                _slot: slot,
                _source: source,
                metrics: self.metrics.clone(),
            };
            (stream, service)
        }))
    }
}

/// Open connections by source address. Only addresses with an open connection have an entry,
/// so it holds at most as many entries as connections are open.
#[derive(Debug)]
struct Sources {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl Sources {
    /// A slot for one more connection from `ip`, unless `max` are open from it.
    fn take(sources: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let mut open = sources.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(ip).or_default();
        if *count >= sources.max {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            sources: Arc::clone(sources),
            ip,
        })
    }
}

/// One connection counted against its source; given back when dropped.
#[derive(Debug)]
struct SourceSlot {
    sources: Arc<Sources>,
    ip: IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self
            .sources
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// When a connection was opened: the router's connection info (see
/// `into_make_service_with_connect_info`), read by [`close_when_old`].
#[derive(Clone, Copy, Debug)]
pub struct Opened(Instant);

impl Connected<SocketAddr> for Opened {
    fn connect_info(_peer: SocketAddr) -> Self {
        Self(Instant::now())
    }
}

/// Middleware: the response to a request on a connection older than `max_age` says
/// `Connection: close`, so the server closes the connection once that response is written —
/// the request in flight is answered, the client opens a new connection for the next one.
pub async fn close_when_old(
    State((max_age, aged)): State<(Duration, Counter)>,
    request: Request,
    next: Next,
) -> Response {
    let opened = request
        .extensions()
        .get::<ConnectInfo<Opened>>()
        .map(|info| info.0.0);
    let mut response = next.run(request).await;
    if opened.is_some_and(|opened| opened.elapsed() >= max_age) {
        aged.inc();
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// An accepted connection holding its slot until it is dropped.
#[derive(Debug)]
pub struct Counted {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    _source: SourceSlot,
    metrics: ConnectionMetrics,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.metrics.open.dec();
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpSocket};

    /// Connects to `listener` from `from` (any loopback address) and runs the accepted stream
    /// through `limit`.
    async fn accept(
        listener: &TcpListener,
        limit: &ConnectionLimit,
        from: &str,
    ) -> (TcpStream, io::Result<(Counted, ())>) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(socket.connect(addr), listener.accept());
        let (server, _) = server.unwrap();
        (client.unwrap(), limit.accept(server, ()).await)
    }

    #[tokio::test]
    async fn a_connection_past_the_limit_is_refused_until_a_slot_frees() {
        let metrics = ConnectionMetrics::default();
        let limit = ConnectionLimit::new(2, 2, metrics.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();

        let (_c1, first) = accept(&listener, &limit, "127.0.0.1").await;
        let first = first.unwrap().0;
        assert!(first.stream.nodelay().unwrap());
        let (_c2, second) = accept(&listener, &limit, "127.0.0.2").await;
        let _second = second.unwrap();
        let (_c3, third) = accept(&listener, &limit, "127.0.0.3").await;
        assert!(third.is_err());
        assert_eq!(metrics.open.get(), 2);
        assert_eq!(metrics.refused.get(), 1);

        drop(first);
        assert_eq!(metrics.open.get(), 1);
        let (_c4, fourth) = accept(&listener, &limit, "127.0.0.3").await;
        let _fourth = fourth.unwrap();
        assert_eq!(metrics.open.get(), 2);
        assert_eq!(metrics.refused_source.get(), 0);
    }

    #[tokio::test]
    async fn one_source_gets_at_most_its_share_and_others_still_connect() {
        let metrics = ConnectionMetrics::default();
        let limit = ConnectionLimit::new(10, 2, metrics.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();

        let (_a1, a1) = accept(&listener, &limit, "127.0.0.2").await;
        let a1 = a1.unwrap();
        let (_a2, a2) = accept(&listener, &limit, "127.0.0.2").await;
        let _a2 = a2.unwrap();
        let (_a3, a3) = accept(&listener, &limit, "127.0.0.2").await;
        let error = a3.unwrap_err().to_string();
        assert!(error.contains("per-source"), "{error}");
        assert!(error.contains("127.0.0.2"), "{error}");
        assert_eq!(metrics.refused_source.get(), 1);
        assert_eq!(metrics.refused.get(), 0);

        // Another source is not affected.
        let (_b1, b1) = accept(&listener, &limit, "127.0.0.1").await;
        let _b1 = b1.unwrap();
        assert_eq!(metrics.open.get(), 3);

        // A closed connection gives its source a slot back.
        drop(a1);
        let (_a4, a4) = accept(&listener, &limit, "127.0.0.2").await;
        let _a4 = a4.unwrap();
    }

    #[test]
    fn the_connection_cap_fits_the_open_files_limit() {
        let files = |now| OpenFiles { before: now, now };
        assert_eq!(fit_connections(4096, files(None)), 4096);
        assert_eq!(fit_connections(4096, files(Some(1_048_576))), 4096);
        assert_eq!(fit_connections(4096, files(Some(1024))), 768);
        assert_eq!(fit_connections(4096, files(Some(100))), 1);
    }

    #[test]
    fn the_soft_open_files_limit_is_raised_to_the_hard_one() {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let start = getrlimit(Resource::Nofile);
        if start.maximum.is_none_or(|max| max > 1024) {
            // Lower the soft limit as containerd 2.x does, then raise it again.
            setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(1024),
                    maximum: start.maximum,
                },
            )
            .unwrap();
        }
        let files = raise_open_files_limit().unwrap();
        assert_eq!(files.now, start.maximum);
        assert_eq!(getrlimit(Resource::Nofile).current, start.maximum);
    }

    #[test]
    fn sources_forget_addresses_without_connections() {
        let sources = Arc::new(Sources {
            max: 1,
            open: Mutex::default(),
        });
        let ip: IpAddr = "::ffff:10.0.0.1".parse::<IpAddr>().unwrap().to_canonical();
        assert_eq!(ip, "10.0.0.1".parse::<IpAddr>().unwrap());
        let slot = Sources::take(&sources, ip).unwrap();
        assert!(Sources::take(&sources, ip).is_none());
        drop(slot);
        assert!(sources.open.lock().unwrap().is_empty());
        assert!(Sources::take(&sources, ip).is_some());
    }
}

//! A cap on open connections. Past it, a new connection is closed as soon as it is accepted, so
//! a flood of clients cannot run the process out of file descriptors or memory; the header and
//! body timeouts of [`server`](crate::server) free the slots that slow clients hold.

use std::future::{Ready, ready};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// Accepts at most `max` connections at once; also turns off Nagle's algorithm, since every
/// answer is one small write that should leave at once.
#[derive(Clone, Debug)]
pub struct ConnectionLimit {
    slots: Arc<Semaphore>,
    metrics: Metrics,
}

impl ConnectionLimit {
    /// A limit of `max` open connections, counted in `metrics`.
    pub fn new(max: usize, metrics: Metrics) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
            metrics,
        }
    }
}

impl<S> Accept<TcpStream, S> for ConnectionLimit {
    type Stream = Counted;
    type Service = S;
    type Future = Ready<io::Result<(Counted, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            self.metrics.refused_connections.inc();
            return ready(Err(io::Error::other("the connection limit is reached")));
        };
        ready(stream.set_nodelay(true).map(|()| {
            self.metrics.open_connections.inc();
            let stream = Counted {
                stream,
                _slot: slot,
                metrics: self.metrics.clone(),
            };
            (stream, service)
        }))
    }
}

/// An accepted connection holding its slot until it is dropped.
#[derive(Debug)]
pub struct Counted {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    metrics: Metrics,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.metrics.open_connections.dec();
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
    use prometheus_client::registry::Registry;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn a_connection_past_the_limit_is_refused_until_a_slot_frees() {
        let metrics = Metrics::register(&mut Registry::default());
        let limit = ConnectionLimit::new(2, metrics.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = async || {
            let (client, server) =
                tokio::join!(TcpStream::connect(addr), async { listener.accept().await });
            let (server, _) = server.unwrap();
            (client.unwrap(), limit.accept(server, ()).await)
        };

        let (_c1, first) = accept().await;
        let first = first.unwrap().0;
        assert!(first.stream.nodelay().unwrap());
        let (_c2, second) = accept().await;
        let _second = second.unwrap();
        let (_c3, third) = accept().await;
        assert!(third.is_err());
        assert_eq!(metrics.open_connections.get(), 2);
        assert_eq!(metrics.refused_connections.get(), 1);

        drop(first);
        assert_eq!(metrics.open_connections.get(), 1);
        let (_c4, fourth) = accept().await;
        let _fourth = fourth.unwrap();
        assert_eq!(metrics.open_connections.get(), 2);
    }
}

//! The HTTP/1.1 plumbing shared by the proxy, its admin listener and the demo app: an accept
//! loop serving each connection on its own task until shutdown, and a pooled client.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioTimer;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// How long in-flight requests may take to finish once shutdown began.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The content type of the OpenMetrics text exposition, as Prometheus negotiates it.
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A pooled HTTP/1.1 client for plain-HTTP loopback upstreams.
pub(crate) type HttpClient<B> = Client<HttpConnector, B>;

/// Builds the client: Nagle off (small request/response pairs), short connect timeout so a
/// dead replica is skipped quickly, idle connections kept for reuse.
pub(crate) fn client<B>() -> HttpClient<B>
where
    B: hyper::body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(1)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// A small text response.
pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// How long a client has to send a complete request head: counted from the moment the
/// connection is accepted or the previous response was sent, so it is also the keep-alive idle
/// timeout. 15 s is far above what a loopback client (or Prometheus scraping every few seconds)
/// needs, and short enough that a client sending half a header cannot hold a connection slot.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Connections one listener serves at once; the next ones wait in the kernel's accept queue
/// until a slot frees (an idle one is closed after [`HEADER_READ_TIMEOUT`]). 256 keeps a proxy's
/// two listeners and the admin endpoint well under the usual soft file limit of 1024, with room
/// for the supervised processes' pipes and the upstream connections.
pub const MAX_CONNECTIONS: usize = 256;

/// How long a write to a client may make no progress (the client reads nothing, so the kernel's
/// buffers stay full) before the connection is closed. Without it a client that pipelines
/// requests and never reads the answers holds its slot forever, the header timer being stopped
/// while hyper waits to write. 15 s, like [`HEADER_READ_TIMEOUT`]: a live client drains a
/// loopback or in-cluster socket in milliseconds.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the handler may take to produce the response head, from the request head on: this
/// bounds reading the request body (a client announcing `Content-Length: 1000000` and sending
/// two bytes), the proxy's wait for a ready replica ([`super::proxy::HOLD_UNTIL_READY`], 3 s)
/// and the upstream's answer. 30 s is far above what the demo app, `/apply` or a scrape needs;
/// the client gets `408` and the connection is closed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest a connection is served, however busy: then it is asked to close after its
/// current answer, and cut [`DRAIN_TIMEOUT`] later. A backstop for clients that make just enough
/// progress to dodge the other timers (reading a byte every few seconds); 120 s costs a
/// keep-alive client (Prometheus, the load generator) one reconnect every two minutes.
pub const MAX_CONNECTION_LIFETIME: Duration = Duration::from_secs(120);

/// What a listener allows each client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// See [`MAX_CONNECTIONS`] (at least 1 is used).
    pub max_connections: usize,
    /// How long a write to the client may make no progress before the connection is closed
    /// (default: `WRITE_STALL_TIMEOUT`, 15 s).
    pub write_stall_timeout: Duration,
    /// How long the handler may take, body read included, to produce the response head; then
    /// `408` and the connection closes (default: `REQUEST_TIMEOUT`, 30 s).
    pub request_timeout: Duration,
    /// How long a connection is served before it is drained and closed (default:
    /// `MAX_CONNECTION_LIFETIME`, 120 s).
    pub max_connection_lifetime: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            write_stall_timeout: WRITE_STALL_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
            max_connection_lifetime: MAX_CONNECTION_LIFETIME,
        }
    }
}

/// A client socket whose writes fail with `TimedOut` once one stays blocked (no byte accepted)
/// for longer than the stall timeout; the timer restarts whenever a write makes progress.
struct StallGuarded {
    stream: TcpStream,
    stall_timeout: Duration,
    stalled_since: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl StallGuarded {
    fn new(stream: TcpStream, stall_timeout: Duration) -> Self {
        Self {
            stream,
            stall_timeout,
            stalled_since: None,
        }
    }

    /// Maps a write's poll result through the stall timer.
    fn guard<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled_since = None;
            return poll;
        }
        let stall_timeout = self.stall_timeout;
        let timer = self
            .stalled_since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall_timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing for the write stall timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for StallGuarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallGuarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.guard(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.guard(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.stream).poll_flush(cx);
        self.guard(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.stream).poll_shutdown(cx);
        self.guard(cx, poll)
    }
}

/// Delay after a failed `accept` (out of file descriptors, typically): 10 ms doubling up to
/// 1 s, back to 10 ms after a success. A failure streak is logged at its 1st, 2nd, 4th, 8th...
/// failure, so a long outage writes a few lines, not one per attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AcceptBackoff {
    next: Duration,
    streak: u64,
}

impl AcceptBackoff {
    /// The first delay.
    pub(crate) const FIRST: Duration = Duration::from_millis(10);
    /// The longest delay: an outage ends within a second of the last failure.
    pub(crate) const MAX: Duration = Duration::from_secs(1);

    pub(crate) fn new() -> Self {
        Self {
            next: Self::FIRST,
            streak: 0,
        }
    }

    /// Records a failure: how long to wait, and whether to log it.
    pub(crate) fn failed(&mut self) -> (Duration, bool) {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(Self::MAX);
        self.streak = self.streak.saturating_add(1);
        (delay, self.streak.is_power_of_two())
    }

    /// Records a success: the next failure starts a new streak.
    pub(crate) fn succeeded(&mut self) {
        self.next = Self::FIRST;
        self.streak = 0;
    }

    /// Failures in the current streak.
    pub(crate) fn streak(&self) -> u64 {
        self.streak
    }
}

/// True once shutdown was asked for, or the sender is gone (its owner was dropped).
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    // `wait_for` returns an error when the sender is dropped: that means shut down too.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Serves HTTP/1.1 on `listener` with the default [`ConnectionLimits`]; see
/// [`serve_with_limits`].
pub(crate) async fn serve<F, Fut, B>(
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
    handler: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_with_limits(listener, shutdown, ConnectionLimits::default(), handler).await;
}

/// Serves HTTP/1.1 on `listener` until `shutdown` turns true (or its sender is dropped), then
/// lets in-flight requests finish for up to [`DRAIN_TIMEOUT`]. At most `limits.max_connections`
/// connections are served at once; a client gets `limits.header_read_timeout` for each request
/// head (and as keep-alive idle time).
pub(crate) async fn serve_with_limits<F, Fut, B>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    limits: ConnectionLimits,
    handler: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let local = listener.local_addr().ok();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut backoff = AcceptBackoff::new();
    loop {
        // A slot first: over the limit, new connections wait in the accept queue.
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
            () = shutdown_requested(&mut shutdown) => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown_requested(&mut shutdown) => break,
        };
        match accepted {
            Ok((stream, _peer)) => {
                if backoff.streak() > 0 {
                    tracing::info!(addr = ?local, failures = backoff.streak(), "accept works again");
                }
                backoff.succeeded();
                // Best effort: a failure only costs latency.
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(
                    stream,
                    shutdown.clone(),
                    limits,
                    handler.clone(),
                    permit,
                ));
            }
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                let (delay, log) = backoff.failed();
                if log {
                    tracing::warn!(%error, addr = ?local, failures = backoff.streak(), ?delay, "accept failed; backing off");
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown_requested(&mut shutdown) => break,
                }
            }
        }
    }
    tracing::debug!(addr = ?local, "listener closed");
}

/// Serves one connection until it ends or shutdown drains it; `_permit` holds its slot.
async fn serve_connection<F, Fut, B>(
    stream: TcpStream,
    mut shutdown: watch::Receiver<bool>,
    limits: ConnectionLimits,
    handler: F,
    _permit: OwnedSemaphorePermit,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let service = service_fn(move |req| {
        let response = tokio::time::timeout(limits.request_timeout, handler(req));
        async move {
            let response = match response.await {
                Ok(response) => response.map(Either::Left),
                // Dropping the handler drops the unread body, so hyper closes the connection.
                Err(_elapsed) => text(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request was not read and answered within the request timeout\n",
                )
                .map(Either::Right),
            };
            Ok::<_, Infallible>(response)
        }
    });
    let io = StallGuarded::new(stream, limits.write_stall_timeout);
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let ended = tokio::select! {
        result = conn.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
            true
        }
        () = shutdown_requested(&mut shutdown) => false,
        () = tokio::time::sleep(limits.max_connection_lifetime) => {
            tracing::debug!("connection reached its maximum lifetime");
            false
        }
    };
    if !ended {
        // Finish the current answer, then close; a client that does not read it is cut.
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_back_off_from_10ms_doubling_to_1s() {
        let mut backoff = AcceptBackoff::new();
        let delays: Vec<u64> = (0..10)
            .map(|_| backoff.failed().0.as_millis() as u64)
            .collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        backoff.succeeded();
        assert_eq!(backoff.failed().0, AcceptBackoff::FIRST);
    }

    #[test]
    fn accept_failure_storm_logs_a_few_lines_not_one_per_failure() {
        let mut backoff = AcceptBackoff::new();
        let logged = (0..1000).filter(|_| backoff.failed().1).count();
        // 1st, 2nd, 4th, ..., 512th.
        assert_eq!(logged, 10);
        backoff.succeeded();
        assert!(backoff.failed().1, "a new streak logs its first failure");
    }
}

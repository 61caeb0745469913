//! The HTTP/1.1 plumbing shared by the proxy, its admin listener and the demo app: an accept
//! loop serving each connection on its own task until shutdown, and a pooled client.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

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

/// True once shutdown was asked for, or the sender is gone (its owner was dropped).
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    // `wait_for` returns an error when the sender is dropped: that means shut down too.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Serves HTTP/1.1 on `listener` until `shutdown` turns true (or its sender is dropped), then
/// lets in-flight requests finish for up to [`DRAIN_TIMEOUT`].
pub(crate) async fn serve<F, Fut, B>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    handler: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let local = listener.local_addr().ok();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Best effort: a failure only costs latency.
                    let _ = stream.set_nodelay(true);
                    let handler = handler.clone();
                    let mut conn_shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| {
                            let response = handler(req);
                            async move { Ok::<_, Infallible>(response.await) }
                        });
                        let conn = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service);
                        tokio::pin!(conn);
                        tokio::select! {
                            result = conn.as_mut() => {
                                if let Err(error) = result {
                                    tracing::debug!(%error, "connection ended with an error");
                                }
                            }
                            () = shutdown_requested(&mut conn_shutdown) => {
                                conn.as_mut().graceful_shutdown();
                                let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn).await;
                            }
                        }
                    });
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, addr = ?local, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = shutdown_requested(&mut shutdown) => break,
        }
    }
    tracing::debug!(addr = ?local, "listener closed");
}

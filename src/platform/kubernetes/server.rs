//! The controller's HTTP endpoints: `/metrics` (OpenMetrics), `/livez` (the process serves)
//! and `/readyz` (503 until the CRDs were found and the controllers run, and while a watch
//! has not synced or keeps failing: the body names it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper::{Method, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::watch_health::WatchHealth;
use crate::metrics::Metrics;
use crate::platform::local::http::{OPENMETRICS_CONTENT_TYPE, serve, text};

/// Readiness shared between the runner and the server.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    running: Arc<AtomicBool>,
    watches: WatchHealth,
}

impl Readiness {
    /// Marks the controllers running (or not).
    pub fn set(&self, ready: bool) {
        self.running.store(ready, Ordering::SeqCst);
    }

    /// Whether the controllers run (their watches aside).
    pub fn get(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// The health of the controllers' watches, which readiness includes.
    pub fn watches(&self) -> &WatchHealth {
        &self.watches
    }

    /// Why the controller is not ready, one line each; empty when it is.
    pub fn problems(&self) -> Vec<String> {
        if !self.get() {
            return vec!["not ready".to_owned()];
        }
        self.watches.problems()
    }
}

/// Binds `addr`; the returned listener is served by [`serve_admin`].
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the endpoints on `listener` until `shutdown` turns true.
pub async fn serve_admin(
    listener: TcpListener,
    metrics: Metrics,
    ready: Readiness,
    shutdown: watch::Receiver<bool>,
) {
    serve(listener, shutdown, move |request| {
        let metrics = metrics.clone();
        let ready = ready.clone();
        async move {
            if request.method() != Method::GET {
                return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
            }
            match request.uri().path() {
                "/metrics" => {
                    let mut response = text(StatusCode::OK, metrics.encode());
                    response.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE),
                    );
                    response
                }
                "/livez" => text(StatusCode::OK, "ok\n"),
                "/readyz" => {
                    let problems = ready.problems();
                    if problems.is_empty() {
                        text(StatusCode::OK, "ok\n")
                    } else {
                        text(StatusCode::SERVICE_UNAVAILABLE, problems.join("\n") + "\n")
                    }
                }
                _ => text(StatusCode::NOT_FOUND, "not found\n"),
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut out = String::new();
        stream.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn readyz_flips_and_metrics_are_openmetrics() {
        let listener = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let ready = Readiness::default();
        let metrics = Metrics::default();
        metrics.reconciles.inc();
        let (stop, shutdown) = watch::channel(false);
        let server = tokio::spawn(serve_admin(listener, metrics, ready.clone(), shutdown));
        let check = async {
            assert!(get(addr, "/livez").await.starts_with("HTTP/1.1 200"));
            assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
            ready.set(true);
            assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
            ready.watches().register("ReplicaSet");
            let waiting = get(addr, "/readyz").await;
            assert!(waiting.starts_with("HTTP/1.1 503"), "{waiting}");
            assert!(
                waiting.ends_with("watch ReplicaSet: not synced yet\n"),
                "{waiting}"
            );
            let metrics = get(addr, "/metrics").await;
            assert!(metrics.contains(OPENMETRICS_CONTENT_TYPE), "{metrics}");
            assert!(metrics.contains("vigil_reconciles_total 1"), "{metrics}");
            assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        };
        tokio::time::timeout(Duration::from_secs(10), check)
            .await
            .expect("in time");
        stop.send(true).expect("stop");
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("stops")
            .expect("joins");
    }
}

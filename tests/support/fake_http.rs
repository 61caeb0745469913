//! A tiny misbehaving HTTP server on 127.0.0.1 that simulates network faults (slowness, 5xx,
//! 429, garbage). It is not a fake Prometheus: query semantics are tested against the real one.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use url::Url;

/// What the server answers to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
    /// Delay before answering.
    pub delay: Duration,
}

impl Reply {
    /// A reply with a status and a body.
    pub fn new(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    /// A valid one-series Prometheus vector answer.
    pub fn ok_vector(value: &str) -> Reply {
        Reply::new(
            200,
            format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{"role":"canary"}},"value":[1700000000,"{value}"]}}]}}}}"#
            ),
        )
    }

    /// Closes the connection after reading the request, without answering.
    pub fn hang_up() -> Reply {
        Reply::new(0, "")
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Delays the answer.
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// What the server observed.
#[derive(Debug, Default)]
pub struct Stats {
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    heads: Mutex<Vec<String>>,
    bodies: Mutex<Vec<String>>,
}

impl Stats {
    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Highest number of requests being answered at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// Raw requests (request line, headers and any body), in arrival order.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// Request bodies (by `Content-Length`; empty without one), in arrival order: what a
    /// receiver of webhooks recorded.
    pub fn bodies(&self) -> Vec<String> {
        self.bodies.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

/// A running fake server; stops accepting when dropped.
pub struct FakeServer {
    /// `http://127.0.0.1:PORT/` (or `https://`)
    pub url: Url,
    /// Observations.
    pub stats: Arc<Stats>,
    task: tokio::task::JoinHandle<()>,
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

impl FakeServer {
    /// Starts a server answering request number `n` (0-based) with `reply(n)`.
    pub async fn start(reply: impl Fn(usize) -> Reply + Send + Sync + 'static) -> FakeServer {
        FakeServer::start_with(reply, None).await
    }

    /// Same over https, presenting the certificate in `tls`.
    pub async fn start_tls(
        reply: impl Fn(usize) -> Reply + Send + Sync + 'static,
        tls: tokio_rustls::TlsAcceptor,
    ) -> FakeServer {
        FakeServer::start_with(reply, Some(tls)).await
    }

    async fn start_with(
        reply: impl Fn(usize) -> Reply + Send + Sync + 'static,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let stats = Arc::new(Stats::default());
        let reply: Arc<ReplyFn> = Arc::new(reply);
        let task_stats = Arc::clone(&stats);
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let stats = Arc::clone(&task_stats);
                let reply = Arc::clone(&reply);
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => serve(socket, &stats, &*reply).await,
                        Some(acceptor) => {
                            // A failed handshake is the client's business (e.g. unknown CA).
                            if let Ok(stream) = acceptor.accept(socket).await {
                                serve(stream, &stats, &*reply).await;
                            }
                        }
                    }
                });
            }
        });
        FakeServer {
            url: Url::parse(&format!("{scheme}://127.0.0.1:{port}/")).expect("url"),
            stats,
            task,
        }
    }
}

type ReplyFn = dyn Fn(usize) -> Reply + Send + Sync;

/// Answers one request on one connection.
async fn serve<S>(mut socket: S, stats: &Stats, reply: &ReplyFn)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Read the request head, then the body its Content-Length announces (if any).
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    };
    let mut body = head.split_off(end);
    let length = content_length(&String::from_utf8_lossy(&head));
    while body.len() < length {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    let n = stats.requests.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut heads) = stats.heads.lock() {
        // The head with its body, as sent: tests of POST/PUT requests read both here.
        let mut request = head.clone();
        request.extend_from_slice(&body);
        heads.push(String::from_utf8_lossy(&request).into_owned());
    }
    if let Ok(mut bodies) = stats.bodies.lock() {
        bodies.push(String::from_utf8_lossy(&body).into_owned());
    }
    let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let r = reply(n);
    tokio::time::sleep(r.delay).await;
    if r.status == 0 {
        stats.in_flight.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    let mut response = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        r.status,
        reason(r.status),
        r.body.len()
    );
    for (k, v) in &r.headers {
        response.push_str(&format!("{k}: {v}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(&r.body);
    stats.in_flight.fetch_sub(1, Ordering::SeqCst);
    let _ = socket.write_all(response.as_bytes()).await;
    let _ = socket.shutdown().await;
}

/// The `Content-Length` of a request head (0 without one).
fn content_length(head: &str) -> usize {
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TLS acceptor presenting `tests/fixtures/tls/server.pem` (signed by `ca.pem`).
pub fn test_tls_acceptor() -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let certs = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .expect("server.pem")
        .collect::<Result<Vec<_>, _>>()
        .expect("server certificate");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("server.key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server TLS config");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// The PEM of the CA that signed the test server certificate.
pub fn test_ca_pem() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tls/ca.pem"
    ))
    .expect("ca.pem")
}

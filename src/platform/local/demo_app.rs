//! A small HTTP service for demos and tests (`vigil demo-app`): a version string, an injected
//! error rate and an injected latency, so a canary can be made visibly worse than its stable.
//!
//! - `GET /healthz`: 200 `ok` (readiness; never fails, never waits).
//! - `GET /metrics`: OpenMetrics text with `demo_app_requests_total{version,code}`.
//! - any other path: after the injected latency, 200 `hello from <version>`, or 500 for the
//!   configured fraction of requests.
//!
//! Both injections are deterministic. Errors follow a Bresenham line over the request counter:
//! request `n` fails when `⌊(n+1)·rate⌋ > ⌊n·rate⌋`, so after `n` requests exactly `⌊n·rate⌋`
//! failed, evenly spread. The latency of request `n` is uniform on
//! `[latency − jitter, latency + jitter]` (clamped at 0; mean `latency`), drawn from a
//! SplitMix64 hash of `(seed, n)`: the same seed gives the same sequence, with no lock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::http::{self, OPENMETRICS_CONTENT_TYPE};

/// Why the demo app could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoAppError {
    /// The listen address could not be bound.
    #[error("failed to bind the demo app to {addr}: {source}")]
    BindDemoApp {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The error rate is not a probability.
    #[error("failed to configure the demo app: error rate {rate} is not in [0, 1]")]
    ConfigureErrorRate {
        /// The rate asked for.
        rate: f64,
    },
}

/// How the demo app behaves.
#[derive(Clone, Debug, PartialEq)]
pub struct DemoAppConfig {
    /// Fraction of requests answered with 500, in [0, 1].
    pub error_rate: f64,
    /// Mean injected latency.
    pub latency: Duration,
    /// Half-width of the uniform spread around `latency`.
    pub latency_jitter: Duration,
    /// Reported in responses and metrics.
    pub version: String,
    /// Seed of the latency sequence.
    pub seed: u64,
}

impl Default for DemoAppConfig {
    fn default() -> Self {
        Self {
            error_rate: 0.0,
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            version: "v1".to_owned(),
            seed: 0,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    version: Arc<str>,
    code: u16,
}

struct App {
    config: DemoAppConfig,
    version: Arc<str>,
    version_header: Option<HeaderValue>,
    requests: AtomicU64,
    by_code: Family<CodeLabels, Counter>,
    registry: Registry,
}

/// SplitMix64: a fast, well-mixed hash of a counter (Steele, Lea, Flood 2014).
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl App {
    fn fails(&self, n: u64) -> bool {
        let rate = self.config.error_rate;
        ((n + 1) as f64 * rate).floor() > (n as f64 * rate).floor()
    }

    fn latency(&self, n: u64) -> Duration {
        let jitter = self.config.latency_jitter.as_secs_f64();
        let base = self.config.latency.as_secs_f64();
        if jitter == 0.0 {
            return self.config.latency;
        }
        // 53 random bits → a uniform fraction in [0, 1).
        let unit =
            (splitmix64(self.config.seed ^ splitmix64(n)) >> 11) as f64 / (1u64 << 53) as f64;
        Duration::from_secs_f64((base + jitter * (2.0 * unit - 1.0)).max(0.0))
    }

    fn count(&self, status: StatusCode) {
        self.by_code
            .get_or_create(&CodeLabels {
                version: self.version.clone(),
                code: status.as_u16(),
            })
            .inc();
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match req.uri().path() {
            "/healthz" => return http::text(StatusCode::OK, "ok\n"),
            "/metrics" => {
                let mut body = String::new();
                if let Err(error) =
                    prometheus_client::encoding::text::encode(&mut body, &self.registry)
                {
                    tracing::error!(%error, "encode metrics");
                }
                let mut response = http::text(StatusCode::OK, body);
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE),
                );
                return response;
            }
            _ => {}
        }
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        let delay = self.latency(n);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut response = if self.fails(n) {
            http::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("injected error from {}\n", self.version),
            )
        } else {
            http::text(StatusCode::OK, format!("hello from {}\n", self.version))
        };
        if let Some(value) = &self.version_header {
            response.headers_mut().insert("x-version", value.clone());
        }
        self.count(response.status());
        response
    }
}

/// A running demo app. Dropping it (or [`DemoApp::shutdown`]) stops it.
#[derive(Debug)]
pub struct DemoApp {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl DemoApp {
    /// Binds `addr` (port 0 picks a free port: see [`DemoApp::local_addr`]) and serves.
    pub async fn bind(addr: SocketAddr, config: DemoAppConfig) -> Result<Self, DemoAppError> {
        if !(0.0..=1.0).contains(&config.error_rate) {
            return Err(DemoAppError::ConfigureErrorRate {
                rate: config.error_rate,
            });
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| DemoAppError::BindDemoApp { addr, source })?;
        let addr = listener.local_addr().unwrap_or(addr);
        let by_code = Family::<CodeLabels, Counter>::default();
        let mut registry = Registry::default();
        registry.register(
            "demo_app_requests",
            "Requests served by the demo app, by version and response code",
            by_code.clone(),
        );
        let app = Arc::new(App {
            version: Arc::from(config.version.as_str()),
            version_header: HeaderValue::from_str(&config.version).ok(),
            config,
            requests: AtomicU64::new(0),
            by_code,
            registry,
        });
        tracing::info!(
            %addr,
            version = %app.config.version,
            error_rate = app.config.error_rate,
            latency_ms = app.config.latency.as_millis() as u64,
            jitter_ms = app.config.latency_jitter.as_millis() as u64,
            "demo app listening"
        );
        let (shutdown, stop) = watch::channel(false);
        let task = tokio::spawn(http::serve(listener, stop, move |req| {
            app.clone().handle(req)
        }));
        Ok(Self {
            addr,
            shutdown,
            task: Some(task),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and lets in-flight requests finish (a few seconds at most).
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for DemoApp {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(config: DemoAppConfig) -> App {
        App {
            version: Arc::from(config.version.as_str()),
            version_header: None,
            config,
            requests: AtomicU64::new(0),
            by_code: Family::default(),
            registry: Registry::default(),
        }
    }

    #[test]
    fn error_count_is_exact() {
        for (rate, n, expected) in [
            (0.05, 1000, 50),
            (0.0, 1000, 0),
            (1.0, 10, 10),
            (0.3, 10, 3),
        ] {
            let a = app(DemoAppConfig {
                error_rate: rate,
                ..DemoAppConfig::default()
            });
            let failed = (0..n).filter(|&i| a.fails(i)).count();
            assert_eq!(failed, expected, "rate {rate} over {n}");
        }
    }

    #[test]
    fn latency_is_within_bounds_and_mean_is_close() {
        let a = app(DemoAppConfig {
            latency: Duration::from_millis(20),
            latency_jitter: Duration::from_millis(10),
            ..DemoAppConfig::default()
        });
        let samples: Vec<f64> = (0..10_000).map(|n| a.latency(n).as_secs_f64()).collect();
        assert!(samples.iter().all(|s| (0.010..=0.030).contains(s)));
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        assert!((mean - 0.020).abs() < 0.0005, "mean {mean}");
        // Deterministic: same seed, same sequence; another seed, another one.
        assert_eq!(a.latency(7), a.latency(7));
        let b = app(DemoAppConfig {
            seed: 1,
            ..a.config.clone()
        });
        assert_ne!(
            (0..10).map(|n| a.latency(n)).collect::<Vec<_>>(),
            (0..10).map(|n| b.latency(n)).collect::<Vec<_>>()
        );
    }
}

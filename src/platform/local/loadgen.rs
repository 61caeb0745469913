//! A load generator for the demo and tests: GET requests at a constant rate against a loopback
//! URL, for a bounded time and a bounded number of requests.
//!
//! The load is open-loop: request `i` is due at `start + i/rate` whatever the previous ones do,
//! so a slow target does not slow the offered load down (no coordinated omission). When
//! [`LoadConfig::max_in_flight`] requests are already outstanding, a due request is skipped
//! and counted in [`LoadStats::skipped`] instead of being queued.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use url::{Host, Url};

use super::http::{self, HttpClient};

/// The highest rate accepted, per second.
pub const MAX_RATE_PER_SEC: f64 = 100_000.0;

/// Why the load could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The target is not a plain-HTTP loopback URL.
    #[error(
        "failed to start the load: target {target} is not an http:// URL on a loopback address"
    )]
    StartLoadTarget {
        /// The target.
        target: Url,
    },
    /// The rate is out of range.
    #[error("failed to start the load: rate {rate}/s is not in (0, {MAX_RATE_PER_SEC}]")]
    StartLoadRate {
        /// The rate asked for.
        rate: f64,
    },
}

/// What load to generate.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The URL to GET; must be `http://` on a loopback address (`127.0.0.0/8`, `::1`,
    /// `localhost`).
    pub target: Url,
    /// Requests per second.
    pub rate_per_sec: f64,
    /// How long to send for (the run also ends when cancelled or at `max_requests`).
    pub duration: Duration,
    /// The most requests sent in all.
    pub max_requests: u64,
    /// The most requests outstanding at once.
    pub max_in_flight: usize,
    /// Timeout of one request.
    pub request_timeout: Duration,
}

impl LoadConfig {
    /// `rate_per_sec` for `duration`, at most `rate × duration` requests (rounded up), 256 in
    /// flight, 10 s per request.
    pub fn new(target: Url, rate_per_sec: f64, duration: Duration) -> Self {
        let planned = (rate_per_sec * duration.as_secs_f64()).ceil();
        Self {
            target,
            rate_per_sec,
            duration,
            max_requests: if planned.is_finite() && planned > 0.0 {
                planned as u64
            } else {
                0
            },
            max_in_flight: 256,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// What happened.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadStats {
    /// Requests sent.
    pub sent: u64,
    /// Responses by status code.
    pub by_code: BTreeMap<u16, u64>,
    /// Requests that failed without a response (connection refused, reset...).
    pub transport_errors: u64,
    /// Requests that got no response within the timeout.
    pub timeouts: u64,
    /// Due requests not sent because `max_in_flight` were outstanding.
    pub skipped: u64,
    /// The run ended because it was cancelled.
    pub cancelled: bool,
    /// From the first request to the last response.
    pub elapsed: Duration,
    /// Median latency of the requests that got a response.
    pub latency_p50: Option<Duration>,
    /// 99th percentile latency of the requests that got a response.
    pub latency_p99: Option<Duration>,
}

impl LoadStats {
    /// Responses with a 5xx code.
    pub fn server_errors(&self) -> u64 {
        self.by_code
            .iter()
            .filter(|(code, _)| (500..600).contains(*code))
            .map(|(_, n)| n)
            .sum()
    }
}

fn is_loopback(url: &Url) -> bool {
    url.scheme() == "http"
        && match url.host() {
            Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
            None => false,
        }
}

enum Outcome {
    Code(u16, Duration),
    TransportError,
    Timeout,
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied()
}

/// Sends the load described by `config` until its duration or request count is reached, or
/// `cancel` completes; then waits for the outstanding requests (each bounded by its timeout).
pub async fn run_load(
    config: LoadConfig,
    cancel: impl Future<Output = ()>,
) -> Result<LoadStats, LoadError> {
    if !is_loopback(&config.target) {
        return Err(LoadError::StartLoadTarget {
            target: config.target,
        });
    }
    let rate = config.rate_per_sec;
    if !(rate > 0.0 && rate <= MAX_RATE_PER_SEC) {
        return Err(LoadError::StartLoadRate { rate });
    }
    let uri: hyper::Uri = match config.target.as_str().parse() {
        Ok(uri) => uri,
        Err(_) => {
            return Err(LoadError::StartLoadTarget {
                target: config.target,
            });
        }
    };
    let client: HttpClient<Empty<Bytes>> = http::client();
    let in_flight = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut stats = LoadStats::default();
    let mut latencies = Vec::new();
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    let end = started + config.duration;
    tokio::pin!(cancel);

    let mut record = |outcome: Outcome, stats: &mut LoadStats| match outcome {
        Outcome::Code(code, latency) => {
            *stats.by_code.entry(code).or_default() += 1;
            latencies.push(latency);
        }
        Outcome::TransportError => stats.transport_errors += 1,
        Outcome::Timeout => stats.timeouts += 1,
    };

    for i in 0..config.max_requests {
        let due = started + period.mul_f64(i as f64);
        if due >= end {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep_until(due) => {}
            () = &mut cancel => {
                stats.cancelled = true;
                break;
            }
        }
        while let Some(done) = tasks.try_join_next() {
            if let Ok(outcome) = done {
                record(outcome, &mut stats);
            }
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            stats.skipped += 1;
            continue;
        };
        stats.sent += 1;
        let client = client.clone();
        let uri = uri.clone();
        let timeout = config.request_timeout;
        tasks.spawn(async move {
            let _permit = permit;
            let sent = Instant::now();
            let exchange = async {
                let response = client.get(uri).await?;
                let code = response.status().as_u16();
                // Read the body so the connection goes back to the pool.
                response.into_body().collect().await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(code)
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(Ok(code)) => Outcome::Code(code, sent.elapsed()),
                Ok(Err(_)) => Outcome::TransportError,
                Err(_) => Outcome::Timeout,
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Ok(outcome) = done {
            record(outcome, &mut stats);
        }
    }
    stats.elapsed = started.elapsed();
    latencies.sort_unstable();
    stats.latency_p50 = percentile(&latencies, 0.50);
    stats.latency_p99 = percentile(&latencies, 0.99);
    tracing::info!(
        target = %config.target,
        sent = stats.sent,
        server_errors = stats.server_errors(),
        transport_errors = stats.transport_errors,
        timeouts = stats.timeouts,
        skipped = stats.skipped,
        elapsed = ?stats.elapsed,
        "load finished"
    );
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).expect("test URL")
    }

    #[test]
    fn only_plain_http_on_loopback_is_accepted() {
        for ok in [
            "http://127.0.0.1:8080/",
            "http://127.1.2.3/x",
            "http://[::1]:80/",
            "http://localhost:9/",
        ] {
            assert!(is_loopback(&url(ok)), "{ok}");
        }
        for bad in [
            "https://127.0.0.1/",
            "http://10.0.0.1/",
            "http://example.com/",
            "http://[::2]/",
        ] {
            assert!(!is_loopback(&url(bad)), "{bad}");
        }
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&samples, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[tokio::test]
    async fn refuses_remote_targets_and_bad_rates() {
        let err = run_load(
            LoadConfig::new(url("http://192.0.2.1/"), 10.0, Duration::from_secs(1)),
            std::future::pending(),
        )
        .await
        .expect_err("remote");
        assert!(err.to_string().contains("192.0.2.1"), "{err}");
        for rate in [0.0, -1.0, f64::NAN, 1e9] {
            let err = run_load(
                LoadConfig::new(url("http://127.0.0.1:1/"), rate, Duration::from_secs(1)),
                std::future::pending(),
            )
            .await
            .expect_err("bad rate");
            assert!(matches!(err, LoadError::StartLoadRate { .. }), "{err}");
        }
    }
}

//! Prometheus HTTP API client (`/api/v1/query`, `/api/v1/query_range`).
//!
//! Every call is bounded by one deadline (queueing, attempts and backoff included). Connection
//! errors, 5xx and 429 are retried with exponential backoff and full jitter, honouring
//! `Retry-After`; everything else is returned as the typed [`ProviderError`] it is. A
//! [`ConcurrencyLimiter`] shared by all clients caps the in-flight queries per Prometheus, so
//! many rollouts cannot flood one server. Identical calls in flight at once share one request
//! ([`super::coalesce`]), and every origin's query rate, concurrency, errors and coalesced
//! calls are counted ([`super::query_metrics`]).
//!
//! An answer is not trusted to be small, sane or fast: redirects are never followed (custom
//! headers carry secrets), `Retry-After` is capped, the body is capped at [`MAX_BODY_BYTES`]
//! and at most [`MAX_SERIES_PER_ANSWER`] series are decoded; the rest is skipped unallocated.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, LOCATION, RETRY_AFTER};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use url::Url;

use super::budget::BudgetedBody;
use super::coalesce::{Coalescer, CredentialIdentity, Joined, QueryKey};
use super::measurement::{
    AnswerCap, Labels, Measurement, ProviderError, RangeSeries, ResultType, VectorSample, bounded,
    bounded_owned,
};
use super::query_metrics::{OriginMetrics, QueryMetrics};
use super::shared_clients::{ClientKey, SharedClients, with_default_headers};
use super::{MetricsProvider, QueryRange};
use crate::api::duration::{MAX_QUERY_TIMEOUT, format_duration};

/// How much of an error body is kept in [`ProviderError::HttpStatus`].
const BODY_EXCERPT_CHARS: usize = 512;

/// The largest answer body read. The controller runs in 256 MiB with a handful of queries in
/// flight per Prometheus; with the series and label caps below, a decoded answer costs about
/// its body plus 10 MB, so even several at once stay far under the limit. A gate's answer
/// (one series, or one per pod) is kilobytes; 500k series (25 MB) once took 1.48 GB to decode.
pub const MAX_BODY_BYTES: usize = 8 << 20;

/// The most series (result elements) decoded from one answer; the rest are skipped without
/// allocating and only counted, for the error. Ten thousand is far more than any gate judges
/// (one value, or one per pod or per `le` bucket) and keeps a decoded answer to megabytes.
pub const MAX_SERIES_PER_ANSWER: usize = 10_000;

/// The longest wait a `Retry-After` header can impose between attempts. A server may ask for
/// anything (`Retry-After: 99999999999999`); past the query's own deadline the query gives up
/// anyway, and a minute is more than any Prometheus asks for in earnest.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The most labels decoded from one answer, all series together. A label costs about 100
/// bytes decoded beyond its text (map node, two strings), so 100,000 keep an answer of many
/// tiny labels to about 10 MB; 10,000 series of ten labels each still fit.
pub const MAX_LABELS_PER_ANSWER: usize = 100_000;

/// The most labels on one series. Real series carry a handful to a few dozen (Kubernetes
/// metadata labels included); 640,000 tiny labels on one series once cost 70 MiB to decode.
pub const MAX_LABELS_PER_SERIES: usize = 64;

/// The longest label name, in bytes. Label names are identifiers (`pod`, `le`, `namespace`).
pub const MAX_LABEL_NAME_BYTES: usize = 256;

/// The longest label value, in bytes: room for a URL or a long pod name, while a label value
/// meant to be megabytes (copied into every error that names the series) is refused.
pub const MAX_LABEL_VALUE_BYTES: usize = 4096;

/// The most points decoded in one series of a range answer: Prometheus itself refuses a
/// `query_range` over 11,000 points per series, and a gate judges at most a run's worth of
/// steps. One series of a million points once cost 56 MiB to decode.
pub const MAX_POINTS_PER_SERIES: usize = 11_000;

/// The most points decoded from one range answer, all series together: ten series at full
/// resolution. A point costs about 56 bytes while it is converted (raw and typed), so this
/// keeps a decoded matrix to about 6 MB.
pub const MAX_POINTS_PER_ANSWER: usize = 110_000;

/// What the answer being parsed on a thread may still decode, and the first cap it hit.
#[derive(Clone, Copy)]
struct AnswerAllowance {
    labels_left: usize,
    points_left: usize,
    hit: Option<(AnswerCap, usize)>,
}

impl AnswerAllowance {
    const FULL: AnswerAllowance = AnswerAllowance {
        labels_left: MAX_LABELS_PER_ANSWER,
        points_left: MAX_POINTS_PER_ANSWER,
        hit: None,
    };
}

thread_local! {
    /// The allowance of the answer being parsed on this thread (`parse_response` resets it;
    /// parsing is synchronous, so one answer owns the thread while it is read).
    static ALLOWANCE: std::cell::Cell<AnswerAllowance> =
        const { std::cell::Cell::new(AnswerAllowance::FULL) };
}

/// Records that the answer is over `cap` (of value `limit`) and returns the error that stops
/// serde at once; `parse_response` turns it into [`ProviderError::AnswerOverCap`].
fn over_cap<E: de::Error>(cap: AnswerCap, limit: usize) -> E {
    ALLOWANCE.with(|cell| {
        let mut allowance = cell.get();
        allowance.hit.get_or_insert((cap, limit));
        cell.set(allowance);
    });
    E::custom(format!("over the cap of {limit} {cap}"))
}

/// Takes one label, or one point, from the answer's allowance.
fn take_from_allowance<E: de::Error>(cap: AnswerCap) -> Result<(), E> {
    let limit = match cap {
        AnswerCap::PointsPerAnswer => MAX_POINTS_PER_ANSWER,
        _ => MAX_LABELS_PER_ANSWER,
    };
    let taken = ALLOWANCE.with(|cell| {
        let mut allowance = cell.get();
        let left = match cap {
            AnswerCap::PointsPerAnswer => &mut allowance.points_left,
            _ => &mut allowance.labels_left,
        };
        let Some(rest) = left.checked_sub(1) else {
            return false;
        };
        *left = rest;
        cell.set(allowance);
        true
    });
    if taken {
        Ok(())
    } else {
        Err(over_cap(cap, limit))
    }
}

/// Warnings kept from one answer (they are only logged).
const MAX_WARNINGS: usize = 10;

/// Username and password for HTTP basic authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// The username.
    pub username: String,
    /// The password (never logged).
    pub password: String,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Authentication and TLS material, already read from secrets or files by the caller.
///
/// `Debug` redacts every secret, so the struct can be logged safely.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ResolvedAuth {
    /// Sent as `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// Sent as `Authorization: Basic ...`. Mutually exclusive with `bearer_token`.
    pub basic: Option<BasicAuth>,
    /// Extra headers sent with every query (e.g. `X-Scope-OrgID`). Values are treated as
    /// secrets.
    pub headers: Vec<(String, String)>,
    /// PEM CA bundle trusted for https, replacing the built-in roots (like Prometheus'
    /// `ca_file`).
    pub ca_bundle_pem: Option<Vec<u8>>,
}

impl ResolvedAuth {
    /// Every value of these credentials as it may come back in an answer or an error: the
    /// bearer token, the basic password and its `Authorization` encoding, every header
    /// value. A run's Redactor removes them from what it stores and logs.
    pub fn credential_values(&self) -> Vec<String> {
        use base64::Engine as _;
        let mut values: Vec<String> = self.bearer_token.iter().cloned().collect();
        if let Some(basic) = &self.basic {
            values.push(basic.password.clone());
            values.push(
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", basic.username, basic.password)),
            );
        }
        values.extend(self.headers.iter().map(|(_, value)| value.clone()));
        values
    }
}

impl fmt::Debug for ResolvedAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ResolvedAuth")
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("basic", &self.basic)
            .field("headers", &header_names)
            .field(
                "ca_bundle_pem",
                &self
                    .ca_bundle_pem
                    .as_ref()
                    .map(|p| format!("{} bytes", p.len())),
            )
            .finish()
    }
}

/// Everything needed to build a [`PrometheusClient`].
#[derive(Debug, Clone)]
pub struct PrometheusClientConfig {
    /// Base address, e.g. `http://prometheus:9090` or `https://host/prometheus/`.
    pub address: Url,
    /// Upper bound of one query call: queueing for a slot, every attempt and every backoff.
    pub timeout: Duration,
    /// Credentials and TLS roots.
    pub auth: ResolvedAuth,
    /// Attempts per query (1 = no retry).
    pub max_attempts: u32,
    /// First backoff ceiling; doubles per retry (full jitter picks in `[0, ceiling]`).
    pub backoff_base: Duration,
    /// Largest backoff ceiling.
    pub backoff_max: Duration,
    /// Largest accepted response body (at most [`MAX_BODY_BYTES`]); a bigger one is
    /// [`ProviderError::BodyTooLarge`].
    pub max_body_bytes: usize,
    /// The address is the one given on the command line (`--prometheus`: the operator's
    /// default, or the override of `vigil analyze` / `vigil run`), not one a template or run
    /// wrote: the limiter's egress guard does not apply to it (SECURITY.md, "What vigil sends
    /// where").
    pub command_line_address: bool,
}

impl PrometheusClientConfig {
    /// A configuration with defaults: 30 s timeout, 3 attempts, backoff 200 ms doubling up to
    /// 5 s, bodies up to [`MAX_BODY_BYTES`], no auth.
    pub fn new(address: Url) -> PrometheusClientConfig {
        PrometheusClientConfig {
            address,
            timeout: Duration::from_secs(30),
            auth: ResolvedAuth::default(),
            max_attempts: 3,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            max_body_bytes: MAX_BODY_BYTES,
            command_line_address: false,
        }
    }
}

/// What every Prometheus client of a process shares: the cap on concurrent queries per
/// server (scheme, host and port), the single-flight map that coalesces identical queries, and
/// the per-origin query metrics.
///
/// Clone it freely: clones share the same semaphores, map and metrics. Give every client of a
/// process the same limiter. It holds one semaphore per distinct address, so its size is
/// bounded by the number of configured Prometheus servers.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimiter {
    per_address: usize,
    semaphores: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
    coalescer: Coalescer,
    metrics: QueryMetrics,
    /// The destinations outbound requests may reach: every client built with this limiter
    /// is built with this guard, so the operator's choice reaches each of them.
    egress: crate::http_client::EgressGuard,
    /// The HTTP clients of this limiter's metric clients, built once per kind.
    clients: SharedClients,
}

impl ConcurrencyLimiter {
    /// A limiter allowing `per_address` in-flight queries per server (at least 1), coalescing
    /// identical queries within [`super::coalesce::DEFAULT_COALESCE_BUCKET`].
    pub fn new(per_address: usize) -> ConcurrencyLimiter {
        ConcurrencyLimiter {
            per_address: per_address.max(1),
            semaphores: Arc::default(),
            coalescer: Coalescer::default(),
            metrics: QueryMetrics::default(),
            egress: crate::http_client::EgressGuard::default(),
            clients: SharedClients::default(),
        }
    }

    /// Counts queries in `metrics` (e.g. the controller's, exposed on `/metrics`).
    pub fn with_metrics(mut self, metrics: QueryMetrics) -> ConcurrencyLimiter {
        self.metrics = metrics;
        self
    }

    /// Coalesces queries whose evaluation times fall in the same `bucket` (at most
    /// [`super::coalesce::MAX_COALESCE_BUCKET`]); a shared request is evaluated at the time
    /// of the call that sent it.
    pub fn with_coalesce_bucket(mut self, bucket: std::time::Duration) -> ConcurrencyLimiter {
        self.coalescer = Coalescer::new(bucket);
        self
    }

    /// The single-flight map shared by every client of this limiter.
    pub fn coalescer(&self) -> &Coalescer {
        &self.coalescer
    }

    /// This limiter, its clients guarded by `egress` instead of the default guard.
    pub fn with_egress(mut self, egress: crate::http_client::EgressGuard) -> ConcurrencyLimiter {
        self.egress = egress;
        // The shared clients resolve names through the guard they were built with.
        self.clients = SharedClients::default();
        self
    }

    /// The HTTP clients shared by this limiter's metric clients.
    pub fn clients(&self) -> &SharedClients {
        &self.clients
    }

    /// The destination guard of the clients built with this limiter.
    pub fn egress(&self) -> &crate::http_client::EgressGuard {
        &self.egress
    }

    /// The limit per server.
    pub fn per_address(&self) -> usize {
        self.per_address
    }

    /// The semaphore shared by every client of this address' server.
    pub fn semaphore(&self, address: &Url) -> Arc<Semaphore> {
        let key = address.origin().ascii_serialization();
        // A poisoned map is still a valid map: a panic elsewhere must not stop measuring.
        let mut map = self
            .semaphores
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.entry(key)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_address)))
            .clone()
    }
}

impl Default for ConcurrencyLimiter {
    /// Eight in-flight queries per server.
    fn default() -> ConcurrencyLimiter {
        ConcurrencyLimiter::new(8)
    }
}

/// An async Prometheus API client. Cheap to clone (shares the connection pool).
#[derive(Debug, Clone)]
pub struct PrometheusClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// Shared with every client of the limiter that has the same guard and roots.
    http: reqwest::Client,
    /// This client's own headers (`auth.headers`), added to each request.
    headers: HeaderMap,
    /// What the Redactor must remove ([`ResolvedAuth::credential_values`]).
    credential_values: Vec<String>,
    base: Url,
    /// The address without credentials, for logs and errors.
    display_address: String,
    bearer_token: Option<String>,
    basic: Option<BasicAuth>,
    timeout: Duration,
    max_attempts: u32,
    backoff_base: Duration,
    backoff_max: Duration,
    max_body_bytes: usize,
    slots: Arc<Semaphore>,
    /// Who this client is, for sharing answers only with clients that send the same
    /// credentials.
    identity: CredentialIdentity,
    coalescer: Coalescer,
    metrics: OriginMetrics,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusClient")
            .field("address", &self.display_address)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

/// The address as it may be shown: no userinfo, no query string.
pub(crate) fn redact_address(address: &Url) -> String {
    let mut shown = address.clone();
    // Both setters only fail for cannot-be-a-base URLs, which `new` rejects anyway.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

impl PrometheusClient {
    /// The credential values this client sends, for the run's Redactor.
    pub fn credential_values(&self) -> &[String] {
        &self.inner.credential_values
    }

    /// Builds a client. Requires a rustls crypto provider to be installed in the process
    /// (`rustls::crypto::ring::default_provider().install_default()`).
    pub fn new(
        config: PrometheusClientConfig,
        limiter: &ConcurrencyLimiter,
    ) -> Result<PrometheusClient, ProviderError> {
        let invalid = |detail: String| ProviderError::InvalidConfig { detail };
        let mut base = config.address.clone();
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "address {} is not an http(s) URL",
                redact_address(&base)
            )));
        }
        // Join API paths below the configured prefix (`/prometheus/` + `api/v1/query`).
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let display_address = redact_address(&base);
        if config.timeout > MAX_QUERY_TIMEOUT {
            return Err(invalid(format!(
                "provider.prometheus.timeout {} is over the ceiling of {}: a query that needs longer holds an analysis slot too long (use a recording rule or a shorter range)",
                format_duration(config.timeout),
                format_duration(MAX_QUERY_TIMEOUT)
            )));
        }
        let identity = credential_identity(&config);
        let auth = config.auth;
        let credential_values = auth.credential_values();
        if auth.bearer_token.is_some() && auth.basic.is_some() {
            return Err(invalid(
                "bearer token and basic auth are mutually exclusive".into(),
            ));
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &auth.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| invalid(format!("header name {name:?}: {e}")))?;
            // The value is a secret: do not echo it in the error.
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| invalid(format!("header {name}: value is not a valid header")))?;
            value.set_sensitive(true);
            // One value per name, the last given (as reqwest's default headers kept it).
            headers.insert(name, value);
        }
        // A template's address passes the egress guard (a metadata server's answer would land
        // in the run's status); the operator's own `--prometheus` is theirs to choose.
        let egress = if config.command_line_address {
            crate::http_client::EgressGuard::allowing_link_local()
        } else {
            limiter.egress().clone()
        };
        egress
            .check_url(&base)
            .map_err(|refused| ProviderError::RefuseAddress {
                field: "provider.prometheus.address",
                refused,
            })?;
        let key = ClientKey {
            guard: egress.clone(),
            ca_bundle_pem: auth.ca_bundle_pem.clone(),
            insecure: false,
        };
        let http = limiter
            .clients
            .get_or_build(key, ClientKey::build)
            .map_err(invalid)?;
        let slots = limiter.semaphore(&base);
        let metrics = limiter.metrics.for_address(&base);
        Ok(PrometheusClient {
            inner: Arc::new(Inner {
                http,
                headers,
                base,
                display_address,
                credential_values,
                bearer_token: auth.bearer_token,
                basic: auth.basic,
                timeout: config.timeout,
                max_attempts: config.max_attempts.max(1),
                backoff_base: config.backoff_base,
                backoff_max: config.backoff_max,
                max_body_bytes: config.max_body_bytes.min(MAX_BODY_BYTES),
                metrics,
                slots,
                identity,
                coalescer: limiter.coalescer.clone(),
            }),
        })
    }

    /// The server address (credentials removed).
    pub fn address(&self) -> &str {
        &self.inner.display_address
    }

    /// Evaluates `query` at `at` (`/api/v1/query`). Identical calls whose times fall in the
    /// same coalescing bucket (a second by default) share one request, evaluated at the time
    /// of the call that sent it: never before the time that call asked for (a time floored
    /// to its bucket could fall before a series' first sample and find no data).
    pub async fn query(&self, query: &str, at: Timestamp) -> Result<Measurement, ProviderError> {
        let bucket = self.inner.coalescer.bucketed(at);
        let shared_as = [("query", query.to_owned()), ("time", bucket.to_string())];
        let params = vec![("query", query.to_owned()), ("time", at.to_string())];
        self.coalesced_call("api/v1/query", &shared_as, params)
            .await
    }

    /// Evaluates `query` over `range` (`/api/v1/query_range`).
    pub async fn query_range(
        &self,
        query: &str,
        range: QueryRange,
    ) -> Result<Measurement, ProviderError> {
        if range.step.is_zero() {
            return Err(ProviderError::InvalidConfig {
                detail: "range query step must be positive".into(),
            });
        }
        let coalescer = &self.inner.coalescer;
        let step = range.step.as_secs_f64().to_string();
        let shared_as = [
            ("query", query.to_owned()),
            ("start", coalescer.bucketed(range.start).to_string()),
            ("end", coalescer.bucketed(range.end).to_string()),
            ("step", step.clone()),
        ];
        let params = vec![
            ("query", query.to_owned()),
            ("start", range.start.to_string()),
            ("end", range.end.to_string()),
            ("step", step),
        ];
        self.coalesced_call("api/v1/query_range", &shared_as, params)
            .await
    }

    /// Sends the call with `params`, or waits for the identical one already in flight (same
    /// address, credentials, API path and `shared_as`: the parameters with their times
    /// bucketed), and counts it for its origin.
    async fn coalesced_call(
        &self,
        path: &'static str,
        shared_as: &[(&'static str, String)],
        params: Vec<(&'static str, String)>,
    ) -> Result<Measurement, ProviderError> {
        let inner = &self.inner;
        inner.metrics.queries.inc();
        let key = QueryKey::new(&inner.display_address, inner.identity, path, shared_as);
        let request = self.inner.clone();
        let (answer, joined) = inner
            .coalescer
            .run(key, move || {
                Box::pin(async move { request.call(path, &params).await })
            })
            .await;
        if joined == Joined::Follower {
            inner.metrics.coalesced.inc();
        }
        if answer.is_err() {
            inner.metrics.errors.inc();
        }
        answer
    }
}

/// The identity of everything that authenticates or shapes this client's calls: the address
/// as configured (userinfo included), bearer token, basic auth, headers, CA bundle and the
/// limits that decide what answer comes back. Only a keyed hash of it is kept.
fn credential_identity(config: &PrometheusClientConfig) -> CredentialIdentity {
    use std::hash::Hash;
    CredentialIdentity::of(|mut hasher| {
        config.address.as_str().hash(&mut hasher);
        config.auth.bearer_token.hash(&mut hasher);
        config
            .auth
            .basic
            .as_ref()
            .map(|b| (&b.username, &b.password))
            .hash(&mut hasher);
        config.auth.headers.hash(&mut hasher);
        config.auth.ca_bundle_pem.hash(&mut hasher);
        (
            config.timeout,
            config.max_attempts,
            config.backoff_base,
            config.backoff_max,
            config.max_body_bytes,
        )
            .hash(&mut hasher);
    })
}

impl MetricsProvider for PrometheusClient {
    fn query(
        &self,
        query: &str,
        at: Timestamp,
    ) -> impl Future<Output = Result<Measurement, ProviderError>> + Send {
        PrometheusClient::query(self, query, at)
    }

    fn query_range(
        &self,
        query: &str,
        range: QueryRange,
    ) -> impl Future<Output = Result<Measurement, ProviderError>> + Send {
        PrometheusClient::query_range(self, query, range)
    }
}

/// Why one attempt did not produce a final answer.
enum Failure {
    /// Connecting, sending or reading the body failed.
    Connection(reqwest::Error),
    /// The address resolved to a destination the egress guard refuses: nothing was sent.
    Refused(crate::http_client::EgressError),
    /// The body grew past the configured limit.
    BodyTooLarge { limit: usize },
    /// A 3xx answer: not followed.
    Redirect { status: u16, location: String },
    /// A non-success HTTP status.
    Status {
        status: u16,
        body: BudgetedBody,
        retry_after: Option<Duration>,
    },
}

impl Failure {
    fn retryable(&self) -> bool {
        match self {
            Failure::Connection(_) => true,
            Failure::Status { status, .. } => *status == 429 || (500..600).contains(status),
            Failure::BodyTooLarge { .. } | Failure::Redirect { .. } | Failure::Refused(_) => false,
        }
    }

    fn into_error(self, address: &str, attempts: u32) -> ProviderError {
        match self {
            Failure::Connection(source) => ProviderError::Unreachable {
                address: address.to_owned(),
                attempts,
                source: Box::new(source.without_url()),
            },
            Failure::BodyTooLarge { limit } => ProviderError::BodyTooLarge { limit },
            Failure::Refused(refused) => ProviderError::RefuseDestination(refused),
            Failure::Redirect { status, location } => {
                ProviderError::Redirected { status, location }
            }
            Failure::Status { status, body, .. } => {
                // Prometheus explains 4xx/5xx in its JSON envelope; keep its words when present.
                if let Ok(envelope) = serde_json::from_slice::<ErrorEnvelope>(body.bytes())
                    && envelope.status == "error"
                {
                    return prometheus_error(envelope.error_type, envelope.error);
                }
                ProviderError::HttpStatus {
                    status,
                    body_excerpt: bounded_owned(excerpt(body.bytes())),
                    attempts,
                }
            }
        }
    }
}

/// Prometheus' own error, its texts bounded (a server may send megabytes).
fn prometheus_error(error_type: Option<String>, error: Option<String>) -> ProviderError {
    ProviderError::PrometheusError {
        error_type: bounded_owned(error_type.unwrap_or_default()),
        error: bounded_owned(error.unwrap_or_default()),
    }
}

pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(BODY_EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date (relative to `now`).
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    static PARSER: jiff::fmt::rfc2822::DateTimeParser = jiff::fmt::rfc2822::DateTimeParser::new();
    let at = PARSER.parse_timestamp(value).ok()?;
    let wait = at.duration_since(now);
    // A date in the past means "now".
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// Full jitter: a uniform delay in `[0, min(max, base * 2^(retry-1))]`.
fn full_jitter(base: Duration, max: Duration, retry: u32) -> Duration {
    use rand::Rng;
    let ceiling = base
        .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)))
        .min(max);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(0..=nanos))
}

impl Inner {
    async fn call(
        &self,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<Measurement, ProviderError> {
        let query = params
            .iter()
            .find(|(name, _)| *name == "query")
            .map_or("", |(_, value)| value.as_str());
        let url = self
            .base
            .join(path)
            .map_err(|e| ProviderError::InvalidConfig {
                detail: format!("API path: {e}"),
            })?;
        // The timeout is at most MAX_QUERY_TIMEOUT (checked in `new`): this cannot overflow.
        let deadline = Instant::now().checked_add(self.timeout).ok_or_else(|| {
            ProviderError::InvalidConfig {
                detail: format!("timeout {:?} out of range", self.timeout),
            }
        })?;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let attempt = tokio::time::timeout_at(deadline, self.attempt(&url, params)).await;
            let failure = match attempt {
                Err(_elapsed) => {
                    // Not the query: it may carry a Secret argument's value.
                    tracing::warn!(
                        address = %self.display_address,
                        query_bytes = query.len(),
                        attempts,
                        timeout = ?self.timeout,
                        "Prometheus query timed out"
                    );
                    return Err(ProviderError::Timeout {
                        after: self.timeout,
                        attempts,
                    });
                }
                // The body keeps its share of the budget until it is parsed and dropped.
                Ok(Ok(body)) => return self.parse_logged(body.bytes(), query),
                Ok(Err(failure)) => failure,
            };
            if !failure.retryable() || attempts >= self.max_attempts {
                return Err(failure.into_error(&self.display_address, attempts));
            }
            let delay = match &failure {
                Failure::Status {
                    retry_after: Some(wait),
                    ..
                } => (*wait).min(MAX_RETRY_AFTER),
                _ => full_jitter(self.backoff_base, self.backoff_max, attempts),
            };
            // Waiting past the deadline would only turn the real cause into a timeout.
            let wake = Instant::now().checked_add(delay);
            if wake.is_none_or(|wake| wake >= deadline) {
                return Err(failure.into_error(&self.display_address, attempts));
            }
            tracing::debug!(
                address = %self.display_address,
                query_bytes = query.len(),
                attempts,
                delay_ms = delay.as_millis() as u64,
                reason = %failure_reason(&failure),
                "retrying Prometheus query"
            );
            // A failed answer's body goes back to the budget before the wait, not after it.
            drop(failure);
            tokio::time::sleep(delay).await;
        }
    }

    /// One HTTP exchange, holding a concurrency slot only while it is in flight.
    async fn attempt(&self, url: &Url, params: &[(&str, String)]) -> Result<BudgetedBody, Failure> {
        // The semaphore is never closed; if it were, querying without a slot beats failing.
        let _slot = self.slots.acquire().await.ok();
        let _counted = self.metrics.request_started();
        let mut request = self.http.get(url.clone()).query(params);
        if let Some(token) = &self.bearer_token {
            request = request.bearer_auth(token);
        }
        if let Some(basic) = &self.basic {
            request = request.basic_auth(&basic.username, Some(&basic.password));
        }
        let request =
            with_default_headers(request.build().map_err(Failure::Connection)?, &self.headers);
        let mut response = self.http.execute(request).await.map_err(|error| {
            match crate::http_client::refused_by_guard(&error) {
                Some(refused) => Failure::Refused(refused),
                None => Failure::Connection(error),
            }
        })?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| url.join(v).ok())
                .map_or_else(|| "(no Location)".to_owned(), |to| redact_address(&to));
            return Err(Failure::Redirect {
                status: status.as_u16(),
                location: bounded_owned(location),
            });
        }
        if response
            .content_length()
            .is_some_and(|length| length > self.max_body_bytes as u64)
        {
            return Err(Failure::BodyTooLarge {
                limit: self.max_body_bytes,
            });
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Timestamp::now()));
        // Reserve the body's bytes from the process-wide budget before reading any of them
        // (the whole cap when the length is unknown); the wait counts against the deadline.
        let declared = response
            .content_length()
            .and_then(|length| usize::try_from(length).ok());
        let mut body = BudgetedBody::reserve(declared.unwrap_or(self.max_body_bytes)).await;
        while let Some(chunk) = response.chunk().await.map_err(Failure::Connection)? {
            if body.extend(&chunk).is_err() {
                return Err(Failure::BodyTooLarge {
                    limit: self.max_body_bytes,
                });
            }
        }
        body.release_unused();
        if status.is_success() {
            Ok(body)
        } else {
            Err(Failure::Status {
                status: status.as_u16(),
                body,
                retry_after,
            })
        }
    }

    fn parse_logged(&self, body: &[u8], query: &str) -> Result<Measurement, ProviderError> {
        let result = parse_response(body);
        if let Err(error) = &result {
            tracing::debug!(address = %self.display_address, query_bytes = query.len(), %error, "Prometheus query failed");
        }
        result
    }
}

fn failure_reason(failure: &Failure) -> String {
    match failure {
        Failure::Connection(e) => e.to_string(),
        Failure::Status { status, .. } => format!("HTTP {status}"),
        Failure::BodyTooLarge { limit } => format!("body over {limit} bytes"),
        Failure::Redirect { status, .. } => format!("HTTP {status} redirect"),
        Failure::Refused(refused) => refused.to_string(),
    }
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    status: String,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(borrow)]
    data: Option<RawData<'a>>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
    #[serde(default)]
    warnings: Capped<String, MAX_WARNINGS>,
}

/// `data`, read in any key order: `result` before `resultType` must not make serde buffer the
/// whole result (an adjacently tagged enum would), so the elements are read untyped and checked
/// against the result type afterwards.
#[derive(Deserialize)]
struct RawData<'a> {
    #[serde(rename = "resultType", borrow)]
    result_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    result: Option<Capped<RawElement<'a>, MAX_SERIES_PER_ANSWER>>,
}

/// A JSON array of which at most `N` elements are decoded; the rest are skipped without
/// allocating and only counted.
struct Capped<T, const N: usize> {
    items: Vec<T>,
    /// Elements in the array, decoded or not.
    total: usize,
}

impl<T, const N: usize> Default for Capped<T, N> {
    fn default() -> Self {
        Capped {
            items: Vec::new(),
            total: 0,
        }
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for Capped<T, N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CappedVisitor<T, const N: usize>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for CappedVisitor<T, N> {
            type Value = Capped<T, N>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut capped = Capped::default();
                while capped.total < N {
                    match seq.next_element::<T>()? {
                        Some(item) => capped.items.push(item),
                        None => return Ok(capped),
                    }
                    capped.total += 1;
                }
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    capped.total = capped.total.saturating_add(1);
                }
                Ok(capped)
            }
        }
        deserializer.deserialize_seq(CappedVisitor::<T, N>(PhantomData))
    }
}

/// One element of `data.result`: a number or a string (the two halves of a scalar), or a
/// series object (vector and matrix).
enum RawElement<'a> {
    Number(f64),
    Text(Cow<'a, str>),
    Series(RawSeries<'a>),
}

impl<'de: 'a, 'a> Deserialize<'de> for RawElement<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ElementVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for ElementVisitor<'a> {
            type Value = RawElement<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, a string or a series object")
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(RawElement::Number(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(RawElement::Number(v as f64))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(RawElement::Number(v as f64))
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(RawElement::Text(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawElement::Text(Cow::Owned(v.to_owned())))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawSeries::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawElement::Series)
            }
        }
        deserializer.deserialize_any(ElementVisitor(PhantomData))
    }
}

/// `[<unix seconds>, "<value>"]`
#[derive(Deserialize)]
struct RawSample<'a>(f64, #[serde(borrow)] Cow<'a, str>);

/// A series of a vector (`value`) or a matrix (`values`).
#[derive(Deserialize)]
struct RawSeries<'a> {
    #[serde(default, deserialize_with = "capped_labels")]
    metric: Labels,
    #[serde(borrow, default)]
    value: Option<RawSample<'a>>,
    #[serde(borrow, default, deserialize_with = "capped_points")]
    values: Option<Vec<RawSample<'a>>>,
}

/// A label name or value, refused over `limit` bytes before it is copied.
struct LabelText {
    cap: AnswerCap,
    limit: usize,
}

impl<'de> de::DeserializeSeed<'de> for LabelText {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for LabelText {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<String, E> {
        if text.len() > self.limit {
            return Err(over_cap(self.cap, self.limit));
        }
        Ok(text.to_owned())
    }
}

/// A series' labels: at most [`MAX_LABELS_PER_SERIES`], names and values within their byte
/// caps, drawn from the answer's allowance of [`MAX_LABELS_PER_ANSWER`].
fn capped_labels<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Labels, D::Error> {
    struct LabelsVisitor;
    impl<'de> Visitor<'de> for LabelsVisitor {
        type Value = Labels;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of label names to values")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Labels, A::Error> {
            let mut labels = Labels::new();
            // Entries, not distinct names: a repeated name costs parsing all the same.
            let mut entries = 0usize;
            let name_seed = || LabelText {
                cap: AnswerCap::LabelNameBytes,
                limit: MAX_LABEL_NAME_BYTES,
            };
            while let Some(name) = map.next_key_seed(name_seed())? {
                entries += 1;
                if entries > MAX_LABELS_PER_SERIES {
                    return Err(over_cap(AnswerCap::LabelsPerSeries, MAX_LABELS_PER_SERIES));
                }
                take_from_allowance(AnswerCap::LabelsPerAnswer)?;
                let value = map.next_value_seed(LabelText {
                    cap: AnswerCap::LabelValueBytes,
                    limit: MAX_LABEL_VALUE_BYTES,
                })?;
                labels.insert(name, value);
            }
            Ok(labels)
        }
    }
    deserializer.deserialize_map(LabelsVisitor)
}

/// A matrix series' points: at most [`MAX_POINTS_PER_SERIES`], drawn from the answer's
/// allowance of [`MAX_POINTS_PER_ANSWER`]. Decoding stops at the first point over a cap.
fn capped_points<'de: 'a, 'a, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<RawSample<'a>>>, D::Error> {
    struct PointsVisitor<'a>(PhantomData<&'a ()>);
    impl<'de: 'a, 'a> Visitor<'de> for PointsVisitor<'a> {
        type Value = Option<Vec<RawSample<'a>>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of [<time>, \"<value>\"] points")
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut points = Vec::new();
            while let Some(point) = seq.next_element::<RawSample<'a>>()? {
                if points.len() >= MAX_POINTS_PER_SERIES {
                    return Err(over_cap(AnswerCap::PointsPerSeries, MAX_POINTS_PER_SERIES));
                }
                take_from_allowance(AnswerCap::PointsPerAnswer)?;
                points.push(point);
            }
            Ok(Some(points))
        }
    }
    deserializer.deserialize_any(PointsVisitor(PhantomData))
}

fn malformed(detail: impl Into<String>) -> ProviderError {
    ProviderError::MalformedBody {
        detail: bounded_owned(detail.into()),
    }
}

/// One sample's time and value.
fn decode_sample(time: f64, text: &str) -> Result<(Timestamp, f64), ProviderError> {
    // Prometheus times are milliseconds; rounding removes float noise like .99999.
    let millis = (time * 1000.0).round();
    // The range check keeps the cast exact (`as` saturates, but a saturated time is a lie).
    let at = if millis.is_finite() && millis.abs() < 9.0e15 {
        Timestamp::from_millisecond(millis as i64).ok()
    } else {
        None
    }
    .ok_or_else(|| malformed(format!("sample time {time} out of range")))?;
    // Go's FormatFloat writes NaN, +Inf and -Inf.
    let value = match text {
        "NaN" => f64::NAN,
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        text => text
            .parse::<f64>()
            .map_err(|_| malformed(format!("sample value {:?} is not a number", bounded(text))))?,
    };
    Ok((at, value))
}

impl RawSample<'_> {
    fn decode(&self) -> Result<(Timestamp, f64), ProviderError> {
        decode_sample(self.0, &self.1)
    }
}

fn series_of<'a>(element: RawElement<'a>, kind: &str) -> Result<RawSeries<'a>, ProviderError> {
    match element {
        RawElement::Series(series) => Ok(series),
        _ => Err(malformed(format!(
            "a {kind} result holds a non-object element"
        ))),
    }
}

/// Parses a Prometheus `/api/v1/query` or `/api/v1/query_range` response body.
///
/// `"status": "error"` becomes [`ProviderError::PrometheusError`]; an empty vector or matrix
/// becomes [`Measurement::NoData`]; samples without a float value (native histograms) and
/// string results are errors, not guesses. More than [`MAX_SERIES_PER_ANSWER`] series is
/// [`ProviderError::TooManySeriesInAnswer`]; the series past the limit are never allocated.
/// More than [`MAX_LABELS_PER_ANSWER`] labels is a malformed body saying so.
/// The work is linear in the body's length whatever it holds (serde_json also bounds nesting).
pub fn parse_response(body: &[u8]) -> Result<Measurement, ProviderError> {
    ALLOWANCE.with(|cell| cell.set(AnswerAllowance::FULL));
    let envelope: Envelope<'_> = serde_json::from_slice(body).map_err(|e| {
        if let Some((cap, limit)) = ALLOWANCE.with(|cell| cell.get().hit) {
            return ProviderError::AnswerOverCap { cap, limit };
        }
        malformed(format!(
            "not a Prometheus API response ({e}): {}",
            excerpt(&body[..body.len().min(BODY_EXCERPT_CHARS)])
        ))
    })?;
    match envelope.status.as_ref() {
        "success" => {}
        "error" => return Err(prometheus_error(envelope.error_type, envelope.error)),
        other => return Err(malformed(format!("unknown status {:?}", bounded(other)))),
    }
    if envelope.warnings.total > 0 {
        let first = envelope
            .warnings
            .items
            .first()
            .map(|w| bounded(w).into_owned());
        tracing::debug!(
            warnings = envelope.warnings.total,
            first = first.as_deref().unwrap_or_default(),
            "Prometheus returned warnings"
        );
    }
    let data = envelope
        .data
        .ok_or_else(|| malformed("success without data"))?;
    let result_type = data
        .result_type
        .ok_or_else(|| malformed("data without resultType"))?;
    let result = data
        .result
        .ok_or_else(|| malformed("data without result"))?;
    if result.total > MAX_SERIES_PER_ANSWER {
        return Err(ProviderError::TooManySeriesInAnswer {
            limit: MAX_SERIES_PER_ANSWER,
            got: result.total,
        });
    }
    match result_type.as_ref() {
        "scalar" => match result.items.as_slice() {
            [RawElement::Number(time), RawElement::Text(text)] => {
                let (at, value) = decode_sample(*time, text)?;
                Ok(Measurement::Scalar { at, value })
            }
            _ => Err(malformed("a scalar result is not [<time>, \"<value>\"]")),
        },
        "string" => Err(ProviderError::UnexpectedResultType {
            expected: "scalar, vector or matrix",
            got: ResultType::String,
        }),
        "vector" => {
            let mut samples = Vec::with_capacity(result.items.len());
            for element in result.items {
                let series = series_of(element, "vector")?;
                let raw = series.value.as_ref().ok_or_else(|| {
                    malformed(format!(
                        "series {} has no float value (native histogram?)",
                        bounded(&super::measurement::format_series(&series.metric))
                    ))
                })?;
                let (at, value) = raw.decode()?;
                samples.push(VectorSample {
                    labels: series.metric,
                    at,
                    value,
                    sample_count: None,
                });
            }
            Ok(Measurement::from_vector(samples))
        }
        "matrix" => {
            let mut all = Vec::with_capacity(result.items.len());
            for element in result.items {
                let series = series_of(element, "matrix")?;
                let points = series
                    .values
                    .iter()
                    .flatten()
                    .map(RawSample::decode)
                    .collect::<Result<Vec<_>, _>>()?;
                all.push(RangeSeries {
                    labels: series.metric,
                    points,
                });
            }
            Ok(Measurement::from_matrix(all))
        }
        other => Err(malformed(format!(
            "unknown resultType {:?}",
            bounded(other)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::provider::SingleValue;

    #[test]
    fn parses_vector() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"role":"canary"},"value":[1700000000.5,"0.05"]}]}}"#;
        let m = parse_response(body).expect("valid vector");
        match m {
            Measurement::Vector(samples) => {
                assert_eq!(samples.len(), 1);
                assert_eq!(samples[0].value, 0.05);
                assert_eq!(samples[0].labels["role"], "canary");
                assert_eq!(samples[0].at.as_millisecond(), 1_700_000_000_500);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn parses_special_values() {
        for (text, class) in [
            ("NaN", "NaN"),
            ("+Inf", "PosInf"),
            ("-Inf", "NegInf"),
            ("1e3", "Finite"),
        ] {
            let body = format!(
                r#"{{"status":"success","data":{{"resultType":"scalar","result":[1,"{text}"]}}}}"#
            );
            let v = parse_response(body.as_bytes())
                .and_then(|m| m.single_value())
                .expect("valid scalar");
            let got = match v {
                SingleValue::Finite { .. } => "Finite",
                SingleValue::NaN { .. } => "NaN",
                SingleValue::PosInf { .. } => "PosInf",
                SingleValue::NegInf { .. } => "NegInf",
                SingleValue::NoData => "NoData",
            };
            assert_eq!(got, class, "{text}");
        }
    }

    #[test]
    fn empty_results_are_no_data() {
        let v = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(
            parse_response(v).ok(),
            Some(Measurement::NoData {
                result_type: ResultType::Vector
            })
        );
        let m = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert_eq!(
            parse_response(m).ok(),
            Some(Measurement::NoData {
                result_type: ResultType::Matrix
            })
        );
    }

    #[test]
    fn error_envelope_and_garbage() {
        let e = br#"{"status":"error","errorType":"execution","error":"boom"}"#;
        match parse_response(e) {
            Err(ProviderError::PrometheusError { error_type, error }) => {
                assert_eq!((error_type.as_str(), error.as_str()), ("execution", "boom"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse_response(b"<html>proxy error</html>"),
            Err(ProviderError::MalformedBody { .. })
        ));
        let bad_value =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1,"abc"]}}"#;
        assert!(matches!(
            parse_response(bad_value),
            Err(ProviderError::MalformedBody { .. })
        ));
        let histogram = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"histogram":[1,{}]}]}}"#;
        assert!(matches!(
            parse_response(histogram),
            Err(ProviderError::MalformedBody { .. })
        ));
    }

    #[test]
    fn result_before_result_type_is_read_the_same() {
        let body = br#"{"data":{"result":[{"value":[1,"2"],"metric":{"a":"b"}}],"resultType":"vector"},"status":"success"}"#;
        match parse_response(body) {
            Ok(Measurement::Vector(samples)) => assert_eq!(samples[0].value, 2.0),
            other => panic!("unexpected {other:?}"),
        }
        let scalar = br#"{"status":"success","data":{"result":[1,"3"],"resultType":"scalar"}}"#;
        assert!(matches!(
            parse_response(scalar),
            Ok(Measurement::Scalar { value: 3.0, .. })
        ));
    }

    #[test]
    fn too_many_series_are_counted_not_decoded() {
        let n = MAX_SERIES_PER_ANSWER + 5;
        let items = vec![r#"{"metric":{},"value":[1,"1"]}"#; n].join(",");
        let body = format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{items}]}}}}"#
        );
        match parse_response(body.as_bytes()) {
            Err(ProviderError::TooManySeriesInAnswer { limit, got }) => {
                assert_eq!((limit, got), (MAX_SERIES_PER_ANSWER, n));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn vector_of(series: &str) -> String {
        format!(r#"{{"status":"success","data":{{"resultType":"vector","result":[{series}]}}}}"#)
    }

    fn matrix_of(series: &str) -> String {
        format!(r#"{{"status":"success","data":{{"resultType":"matrix","result":[{series}]}}}}"#)
    }

    fn assert_over_cap(body: &str, cap: AnswerCap, limit: usize) {
        match parse_response(body.as_bytes()) {
            Err(error @ ProviderError::AnswerOverCap { .. }) => {
                assert!(
                    matches!(error, ProviderError::AnswerOverCap { cap: c, limit: l } if c == cap && l == limit),
                    "{error:?}"
                );
                let text = error.to_string();
                assert!(
                    text.starts_with(&format!("the answer holds more than {limit} ")),
                    "{text}"
                );
            }
            other => panic!("expected {cap:?} at {limit}, got {other:?}"),
        }
    }

    #[test]
    fn matrix_series_of_a_million_points_is_refused_at_the_points_per_series_cap() {
        // Review finding 2: 8 MB, once 56 MiB of peak memory to decode.
        let points = vec![r#"[1,"1"]"#; 1_000_000].join(",");
        let body = matrix_of(&format!(r#"{{"metric":{{}},"values":[{points}]}}"#));
        assert!(body.len() <= MAX_BODY_BYTES);
        assert_over_cap(&body, AnswerCap::PointsPerSeries, MAX_POINTS_PER_SERIES);
        // The cap itself is decoded.
        let points = vec![r#"[1,"1"]"#; MAX_POINTS_PER_SERIES].join(",");
        let at_cap = matrix_of(&format!(r#"{{"metric":{{}},"values":[{points}]}}"#));
        match parse_response(at_cap.as_bytes()) {
            Ok(Measurement::Matrix(series)) => {
                assert_eq!(series[0].points.len(), MAX_POINTS_PER_SERIES)
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn points_spread_over_many_series_are_refused_at_the_points_per_answer_cap() {
        let per_series = MAX_POINTS_PER_SERIES;
        let series_count = MAX_POINTS_PER_ANSWER / per_series + 1;
        let points = vec![r#"[1,"1"]"#; per_series].join(",");
        let series: Vec<String> = (0..series_count)
            .map(|i| format!(r#"{{"metric":{{"pod":"p{i}"}},"values":[{points}]}}"#))
            .collect();
        let body = matrix_of(&series.join(","));
        assert_over_cap(&body, AnswerCap::PointsPerAnswer, MAX_POINTS_PER_ANSWER);
    }

    #[test]
    fn series_of_640k_labels_is_refused_at_the_labels_per_series_cap() {
        // Review finding 2: one series of 640,000 tiny labels, once about 70 MiB to decode.
        let labels: Vec<String> = (0..640_000).map(|i| format!(r#""l{i}":"""#)).collect();
        let body = vector_of(&format!(
            r#"{{"metric":{{{}}},"value":[1,"1"]}}"#,
            labels.join(",")
        ));
        assert_over_cap(&body, AnswerCap::LabelsPerSeries, MAX_LABELS_PER_SERIES);
        // Repeating one name is counted the same (a map keeps one, the parser reads all).
        let repeated = vec![r#""a":"""#; MAX_LABELS_PER_SERIES + 1].join(",");
        let body = vector_of(&format!(r#"{{"metric":{{{repeated}}},"value":[1,"1"]}}"#));
        assert_over_cap(&body, AnswerCap::LabelsPerSeries, MAX_LABELS_PER_SERIES);
    }

    #[test]
    fn ten_thousand_series_of_60_labels_are_refused_at_the_labels_per_answer_cap() {
        // Review finding 2: 10k series x 60 labels, once +69 MiB to decode.
        let metric: Vec<String> = (0..60).map(|i| format!(r#""l{i}":"v""#)).collect();
        let metric = metric.join(",");
        let series: Vec<String> = (0..10_000)
            .map(|i| format!(r#"{{"metric":{{"pod":"p{i}",{metric}}},"value":[1,"1"]}}"#))
            .collect();
        let body = vector_of(&series.join(","));
        assert!(body.len() <= MAX_BODY_BYTES);
        assert_over_cap(&body, AnswerCap::LabelsPerAnswer, MAX_LABELS_PER_ANSWER);
        // The allowance is per answer: the next one starts afresh.
        let one = vector_of(&format!(r#"{{"metric":{{{metric}}},"value":[1,"1"]}}"#));
        assert!(parse_response(one.as_bytes()).is_ok());
    }

    #[test]
    fn megabyte_label_name_or_value_is_refused_at_its_byte_cap() {
        let huge = "x".repeat(1 << 20);
        let value = vector_of(&format!(
            r#"{{"metric":{{"pod":"{huge}"}},"value":[1,"1"]}}"#
        ));
        assert_over_cap(&value, AnswerCap::LabelValueBytes, MAX_LABEL_VALUE_BYTES);
        let name = vector_of(&format!(r#"{{"metric":{{"{huge}":"p"}},"value":[1,"1"]}}"#));
        assert_over_cap(&name, AnswerCap::LabelNameBytes, MAX_LABEL_NAME_BYTES);
        // Escaped text is measured after unescaping, like any other.
        let escaped = "\\u0078".repeat(MAX_LABEL_VALUE_BYTES + 1);
        let escaped = vector_of(&format!(
            r#"{{"metric":{{"pod":"{escaped}"}},"value":[1,"1"]}}"#
        ));
        assert_over_cap(&escaped, AnswerCap::LabelValueBytes, MAX_LABEL_VALUE_BYTES);
        // At the caps, both are decoded.
        let fits = vector_of(&format!(
            r#"{{"metric":{{"{}":"{}"}},"value":[1,"1"]}}"#,
            "n".repeat(MAX_LABEL_NAME_BYTES),
            "v".repeat(MAX_LABEL_VALUE_BYTES)
        ));
        assert!(parse_response(fits.as_bytes()).is_ok());
    }

    #[test]
    fn hostile_shapes_are_malformed_not_guessed() {
        for body in [
            &br#"{"status":"success","data":{"resultType":"scalar","result":[1]}}"#[..],
            br#"{"status":"success","data":{"resultType":"vector","result":[1,"2"]}}"#,
            br#"{"status":"success","data":{"resultType":"matrix","result":[[1,"2"]]}}"#,
            br#"{"status":"success","data":{"resultType":"tensor","result":[]}}"#,
            br#"{"status":"success","data":{"resultType":"vector"}}"#,
            br#"{"status":"success","data":{"resultType":"scalar","result":[1e300,"1"]}}"#,
        ] {
            assert!(
                matches!(
                    parse_response(body),
                    Err(ProviderError::MalformedBody { .. })
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn megabyte_prometheus_error_is_bounded() {
        let body = format!(
            r#"{{"status":"error","errorType":"execution","error":"{}"}}"#,
            "x".repeat(5 << 20)
        );
        let error = parse_response(body.as_bytes()).expect_err("error envelope");
        assert!(error.to_string().len() < 2 * crate::analysis::provider::MAX_TEXT_BYTES);
    }

    #[test]
    fn retry_after_forms() {
        let now = Timestamp::from_second(1_700_000_000).expect("valid");
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        // 1_700_000_002 is Tue, 14 Nov 2023 22:13:22 GMT.
        assert_eq!(
            parse_retry_after("Tue, 14 Nov 2023 22:13:22 GMT", now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            parse_retry_after("Tue, 14 Nov 2023 22:13:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn jitter_stays_under_the_ceiling() {
        let base = Duration::from_millis(100);
        let max = Duration::from_millis(250);
        for retry in 1..10 {
            let d = full_jitter(base, max, retry);
            let ceiling = (base * 2u32.pow(retry - 1)).min(max);
            assert!(d <= ceiling, "retry {retry}: {d:?} > {ceiling:?}");
        }
    }

    #[test]
    fn credential_values_hold_every_secret_and_the_basic_authorization_encoding() {
        let auth = ResolvedAuth {
            basic: Some(BasicAuth {
                username: "user".into(),
                password: "pass".into(),
            }),
            headers: vec![("X-Api-Key".into(), "k3y-value".into())],
            ..ResolvedAuth::default()
        };
        // base64("user:pass"), as `Authorization: Basic` carries it.
        assert_eq!(
            auth.credential_values(),
            ["pass", "dXNlcjpwYXNz", "k3y-value"]
        );
        let bearer = ResolvedAuth {
            bearer_token: Some("t0ken".into()),
            ..ResolvedAuth::default()
        };
        assert_eq!(bearer.credential_values(), ["t0ken"]);
    }

    #[test]
    fn auth_debug_redacts_secrets() {
        let auth = ResolvedAuth {
            bearer_token: Some("s3cr3t-token".into()),
            basic: Some(BasicAuth {
                username: "me".into(),
                password: "hunter2".into(),
            }),
            headers: vec![("X-Api-Key".into(), "k3y-value".into())],
            ca_bundle_pem: None,
        };
        let shown = format!("{auth:?}");
        for secret in ["s3cr3t-token", "hunter2", "k3y-value"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("X-Api-Key"));
    }

    #[test]
    fn address_is_shown_without_credentials() {
        let url = Url::parse("https://user:pw@prom.example:9090/prefix?token=abc").expect("url");
        assert_eq!(redact_address(&url), "https://prom.example:9090/prefix");
    }
}

//! The local platform's traffic router: a weighted HTTP/1.1 reverse proxy.
//!
//! Requests are split between the stable and the canary revision by smooth weighted
//! round-robin, which for two backends is a Bresenham line: request `n` (counted from the last
//! [`RouterHandle::set_backends`]) goes to the canary when `⌊(n+1)·w/100⌋ > ⌊n·w/100⌋`. Any
//! 100 consecutive requests hold exactly `w` canary requests, evenly spread, and the choice costs
//! one atomic increment. With a baseline (`canary.baseline`, [`RouterHandle::set_baseline`])
//! the requests the canary does not take are split the same way between the baseline and the
//! stable, so any 100 requests hold `w` canary and `b` baseline requests. Within a revision, replicas take turns; a replica that refuses the
//! connection is skipped and the request is retried once on the next replica of the same
//! revision (never on the other revision: that would skew the split); when none answers, the
//! proxy returns 502. A request routed to a side with no ready replica at all (every process
//! starting, as after an engine restart) waits up to [`HOLD_UNTIL_READY`] for one instead.
//!
//! Metrics are served on a separate admin listener (`metrics_listen`), so the application's
//! own paths are never shadowed: `GET /metrics` (OpenMetrics text), `GET /routing` (the current
//! [`RoutingState`] as JSON) and `GET /livez`. The series are the ones a service mesh exports:
//!
//! - `http_requests_total{rollout,revision,role="stable|canary|baseline",code}`
//! - `http_request_duration_seconds_bucket{rollout,revision,role,le}` (+ `_sum`, `_count`),
//!   measured from the request's arrival to the upstream response's headers;
//! - `vigil_proxy_upstream_errors_total{rollout,revision,addr,kind="connect|request"}`: failed
//!   attempts on a replica (logged at debug only: a dead replica would flood the log).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::http::{self, ConnectionLimits, HttpClient, OPENMETRICS_CONTENT_TYPE};
use super::proxy_routes::CompiledRoutes;
use crate::traffic::ManagedRoutes;

/// Latency buckets in seconds, suited to web requests (the Prometheus client defaults).
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Request bodies are buffered (so a refused connection can be retried on another replica);
/// larger bodies get 413.
pub const MAX_REQUEST_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How long a request waits for a ready replica when there is none (no backends yet, or every
/// replica of the side it was routed to still starting) before it is answered 503 or 502.
pub const HOLD_UNTIL_READY: Duration = Duration::from_secs(3);

/// Largest request body copied to the canary by a mirror route; a request with a larger body
/// is served but not mirrored (counted in `vigil_proxy_mirror_skipped_total{reason="body"}`).
pub const MAX_MIRROR_BODY_BYTES: usize = 1024 * 1024;

/// Most mirrored copies in flight at once; a copy beyond it is skipped (counted with
/// `reason="busy"`), so mirroring never queues behind a slow canary.
pub const MAX_MIRRORS_IN_FLIGHT: usize = 64;

/// How long a mirrored copy may take before it is abandoned (its response is discarded
/// anyway; the client's response never waits for it).
pub const MIRROR_TIMEOUT: Duration = Duration::from_secs(10);

/// Response header naming the revision that served the request.
pub const REVISION_HEADER: &str = "x-vigil-revision";

/// Why the proxy could not start or a routing change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The proxy's listen address could not be bound.
    #[error("failed to bind the proxy to {addr}: {source}")]
    BindProxy {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The preview listen address (blue-green) could not be bound.
    #[error("failed to bind the proxy's preview listener to {addr}: {source}")]
    BindPreview {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The admin (metrics) listen address could not be bound.
    #[error("failed to bind the proxy's metrics listener to {addr}: {source}")]
    BindMetrics {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The weight is not a percentage.
    #[error("failed to set backends: canary weight {weight} is not in 0..=100")]
    SetBackendsWeight {
        /// The weight asked for.
        weight: u8,
    },
    /// A canary weight without a canary backend.
    #[error("failed to set backends: canary weight {weight} but no canary backend")]
    SetBackendsNoCanary {
        /// The weight asked for.
        weight: u8,
    },
    /// A managed route's regex did not compile (validation compiles them first).
    #[error("failed to set the managed routes: {0}")]
    SetRoutes(#[source] regex::Error),
}

/// Which side of the split a revision is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The stable revision.
    Stable,
    /// The canary revision.
    Canary,
    /// The fair baseline: a fresh copy of the stable revision (`canary.baseline`).
    Baseline,
}

impl Role {
    /// The label value: `stable` or `canary`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Stable => "stable",
            Role::Canary => "canary",
            Role::Baseline => "baseline",
        }
    }
}

impl EncodeLabelValue for Role {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// One revision's replicas, as the router sees them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    /// The revision (pod template hash); it labels the metrics.
    pub revision: String,
    /// The ready replicas' addresses. Empty means requests routed to this side wait up to
    /// [`HOLD_UNTIL_READY`] for a ready one, then get 502.
    pub addrs: Vec<SocketAddr>,
}

/// A backend for the log: `REVISION (N processes)`, or `-`.
fn describe_backend(backend: Option<&Backend>) -> String {
    backend.map_or_else(
        || "-".to_owned(),
        |b| format!("{} ({} processes)", b.revision, b.addrs.len()),
    )
}

/// What the router currently does; the engine reads it back before a step counts as done.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutingState {
    /// The stable backend; `None` until the first [`RouterHandle::set_backends`] (until then
    /// requests wait up to [`HOLD_UNTIL_READY`], then get 503).
    pub stable: Option<Backend>,
    /// The canary backend, if any.
    pub canary: Option<Backend>,
    /// Percent of requests sent to the canary (0..=100).
    pub canary_weight: u8,
    /// The baseline backend, if any (`canary.baseline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Backend>,
    /// Percent of requests sent to the baseline; the stable gets what the canary and the
    /// baseline leave (the baseline never more than the canary leaves).
    #[serde(default)]
    pub baseline_weight: u8,
    /// The managed header and mirror routes in force.
    #[serde(default, skip_serializing_if = "ManagedRoutes::is_empty")]
    pub routes: ManagedRoutes,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct RequestLabels {
    rollout: Arc<str>,
    revision: Arc<str>,
    role: Role,
    code: u16,
    /// A mirrored copy: labelled `mirrored="true"`; served requests carry no such label, so
    /// their series are what they always were.
    mirrored: bool,
}

impl prometheus_client::encoding::EncodeLabelSet for RequestLabels {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeLabel;
        ("rollout", &*self.rollout).encode(encoder.encode_label())?;
        ("revision", &*self.revision).encode(encoder.encode_label())?;
        ("role", self.role).encode(encoder.encode_label())?;
        ("code", self.code).encode(encoder.encode_label())?;
        if self.mirrored {
            ("mirrored", "true").encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MirrorSkipLabels {
    rollout: Arc<str>,
    reason: &'static str,
}

/// Why a replica did not answer.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum UpstreamError {
    /// The connection was refused or timed out: nothing was sent.
    Connect,
    /// The request failed after the connection was made.
    Request,
}

impl EncodeLabelValue for UpstreamError {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        let text = match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Request => "request",
        };
        EncodeLabelValue::encode(&text, encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    rollout: Arc<str>,
    revision: Arc<str>,
    addr: String,
    kind: UpstreamError,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    rollout: Arc<str>,
    revision: Arc<str>,
    role: Role,
}

fn new_latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

type LatencyFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// The proxy's metric families and the registry that exposes them.
struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    mirror_skipped: Family<MirrorSkipLabels, Counter>,
}

impl Metrics {
    fn new() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: LatencyFamily = Family::new_with_constructor(new_latency_histogram);
        let mut registry = Registry::default();
        // prometheus-client appends `_total` to counters: this exposes `http_requests_total`.
        registry.register(
            "http_requests",
            "Requests proxied, by revision, role and response code",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to the upstream response's headers",
            latency.clone(),
        );
        // Per-request logs would flood at load; a dead replica shows here instead.
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        registry.register(
            "vigil_proxy_upstream_errors",
            "Attempts on a replica that failed, by replica address and kind (connect: skipped \
             and retried on another replica; request: answered 502)",
            upstream_errors.clone(),
        );
        let mirror_skipped = Family::<MirrorSkipLabels, Counter>::default();
        registry.register(
            "vigil_proxy_mirror_skipped",
            "Requests a mirror route picked but did not copy to the canary, by reason (body: \
             over MAX_MIRROR_BODY_BYTES; busy: MAX_MIRRORS_IN_FLIGHT copies in flight; \
             no_canary: no ready canary replica)",
            mirror_skipped.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            upstream_errors,
            mirror_skipped,
        }
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an encoding error would be a bug in a metric.
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(%error, "encode metrics");
        }
        out
    }
}

/// One side of the split, ready to serve: labels and histogram looked up once per routing
/// change instead of once per request.
struct Side {
    revision: Arc<str>,
    header: Option<HeaderValue>,
    role: Role,
    addrs: Vec<SocketAddr>,
    next_replica: AtomicUsize,
    latency: Histogram,
}

impl Side {
    fn new(backend: &Backend, role: Role, rollout: &Arc<str>, metrics: &Metrics) -> Self {
        let revision: Arc<str> = Arc::from(backend.revision.as_str());
        let latency = metrics.latency.get_or_create_owned(&RouteLabels {
            rollout: rollout.clone(),
            revision: revision.clone(),
            role,
        });
        Self {
            header: HeaderValue::from_str(&backend.revision).ok(),
            revision,
            role,
            addrs: backend.addrs.clone(),
            next_replica: AtomicUsize::new(0),
            latency,
        }
    }
}

/// The routing table; replaced whole on every change, so a request sees one consistent table.
struct Table {
    state: RoutingState,
    stable: Option<Side>,
    canary: Option<Side>,
    baseline: Option<Side>,
    /// Requests routed since this table was installed: the smooth WRR position.
    sequence: AtomicU64,
    /// Requests the canary did not take since then: the baseline's WRR position.
    not_canary: AtomicU64,
    /// The managed routes, compiled (shared by the tables until the routes change).
    routes: Arc<CompiledRoutes>,
}

impl Table {
    fn pick(&self) -> Option<&Side> {
        let weight = u64::from(self.state.canary_weight.min(100));
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        if (n + 1) * weight / 100 > n * weight / 100 {
            return self.side(Role::Canary);
        }
        // Of the requests the canary leaves, the baseline takes b / (100 - w).
        let left = 100 - weight;
        let baseline = u64::from(self.state.baseline_weight).min(left);
        if self.baseline.is_some() && baseline > 0 {
            let m = self.not_canary.fetch_add(1, Ordering::Relaxed);
            if (m + 1) * baseline / left > m * baseline / left {
                return self.side(Role::Baseline);
            }
        }
        self.side(Role::Stable)
    }

    fn side(&self, role: Role) -> Option<&Side> {
        match role {
            Role::Canary => self.canary.as_ref(),
            Role::Stable => self.stable.as_ref(),
            Role::Baseline => self.baseline.as_ref(),
        }
    }
}

struct Shared {
    rollout: Arc<str>,
    table: RwLock<Arc<Table>>,
    /// Woken at every routing change, for requests holding until a replica is ready.
    changed: Notify,
    metrics: Metrics,
    client: HttpClient<Full<Bytes>>,
    /// Mirrored copies in flight, at most [`MAX_MIRRORS_IN_FLIGHT`].
    mirror_slots: Arc<tokio::sync::Semaphore>,
}

impl Shared {
    fn table(&self) -> Arc<Table> {
        // A poisoned lock only means a writer panicked between whole-table swaps; the table in
        // it is still consistent.
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A cheap, cloneable handle to change and read the proxy's routing.
#[derive(Clone)]
pub struct RouterHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RouterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterHandle")
            .field("rollout", &self.shared.rollout)
            .finish_non_exhaustive()
    }
}

impl RouterHandle {
    /// Routes `canary_weight` percent of requests to `canary` and the rest to `stable`, at once
    /// for every request that starts after this call. Resets the split's position, so the next
    /// 100 requests hold exactly `canary_weight` canary requests.
    pub fn set_backends(
        &self,
        stable: Backend,
        canary: Option<Backend>,
        canary_weight: u8,
    ) -> Result<(), ProxyError> {
        if canary_weight > 100 {
            return Err(ProxyError::SetBackendsWeight {
                weight: canary_weight,
            });
        }
        if canary_weight > 0 && canary.is_none() {
            return Err(ProxyError::SetBackendsNoCanary {
                weight: canary_weight,
            });
        }
        let current = self.shared.table();
        let state = RoutingState {
            stable: Some(stable),
            canary,
            canary_weight,
            ..current.state.clone()
        };
        self.install(state, current.routes.clone());
        Ok(())
    }

    /// Routes `baseline_weight` percent of requests to `baseline` (at most what the canary
    /// leaves), taken from the stable's share; `None` (or 0) sends the baseline nothing.
    /// Resets the split's position like [`RouterHandle::set_backends`].
    pub fn set_baseline(
        &self,
        baseline: Option<Backend>,
        baseline_weight: u8,
    ) -> Result<(), ProxyError> {
        if baseline_weight > 100 {
            return Err(ProxyError::SetBackendsWeight {
                weight: baseline_weight,
            });
        }
        let current = self.shared.table();
        let state = RoutingState {
            baseline_weight: if baseline.is_some() {
                baseline_weight
            } else {
                0
            },
            baseline,
            ..current.state.clone()
        };
        self.install(state, current.routes.clone());
        Ok(())
    }

    /// Puts `routes` in force for every request that starts after this call: requests a
    /// header route matches go to the canary only; a mirror route copies its share of the
    /// requests it matches to the canary. The weighted split and its position are kept.
    pub fn set_routes(&self, routes: ManagedRoutes) -> Result<(), ProxyError> {
        let compiled = CompiledRoutes::new(&routes).map_err(ProxyError::SetRoutes)?;
        let current = self.shared.table();
        let state = RoutingState {
            routes,
            ..current.state.clone()
        };
        let sequence = current.sequence.load(Ordering::Relaxed);
        self.install(state, Arc::new(compiled));
        self.shared
            .table()
            .sequence
            .store(sequence, Ordering::Relaxed);
        Ok(())
    }

    fn install(&self, state: RoutingState, routes: Arc<CompiledRoutes>) {
        let metrics = &self.shared.metrics;
        let rollout = &self.shared.rollout;
        let table = Table {
            stable: state
                .stable
                .as_ref()
                .map(|backend| Side::new(backend, Role::Stable, rollout, metrics)),
            canary: state
                .canary
                .as_ref()
                .map(|backend| Side::new(backend, Role::Canary, rollout, metrics)),
            baseline: state
                .baseline
                .as_ref()
                .map(|backend| Side::new(backend, Role::Baseline, rollout, metrics)),
            state,
            sequence: AtomicU64::new(0),
            not_canary: AtomicU64::new(0),
            routes,
        };
        tracing::info!(
            rollout = %self.shared.rollout,
            stable = %describe_backend(table.state.stable.as_ref()),
            canary = %describe_backend(table.state.canary.as_ref()),
            canary_weight = table.state.canary_weight,
            baseline = ?table.state.baseline.as_ref().map(|b| (&b.revision, b.addrs.len())),
            baseline_weight = table.state.baseline_weight,
            header_routes = table.state.routes.header.len(),
            mirror_routes = table.state.routes.mirror.len(),
            "routing changed"
        );
        *self
            .shared
            .table
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
        self.shared.changed.notify_waiters();
    }

    /// The routing in force now.
    pub fn current(&self) -> RoutingState {
        self.shared.table().state.clone()
    }

    /// The metrics in OpenMetrics text, as `GET /metrics` on the admin listener serves them.
    pub fn encode_metrics(&self) -> String {
        self.shared.metrics.encode()
    }
}

/// A running weighted proxy. Dropping it (or [`WeightedProxy::shutdown`]) stops both listeners.
pub struct WeightedProxy {
    handle: RouterHandle,
    listen: SocketAddr,
    metrics_listen: SocketAddr,
    preview_listen: Option<SocketAddr>,
    limits: ConnectionLimits,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for WeightedProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightedProxy")
            .field("rollout", &self.handle.shared.rollout)
            .field("listen", &self.listen)
            .field("metrics_listen", &self.metrics_listen)
            .finish_non_exhaustive()
    }
}

impl WeightedProxy {
    /// Binds the proxy on `listen` and its admin listener (`/metrics`, `/routing`, `/livez`) on
    /// `metrics_listen` (port 0 picks a free port: see [`WeightedProxy::local_addr`]). Until
    /// the first [`RouterHandle::set_backends`], requests wait up to [`HOLD_UNTIL_READY`], then get 503.
    pub async fn bind(
        listen: SocketAddr,
        metrics_listen: SocketAddr,
        rollout: String,
    ) -> Result<Self, ProxyError> {
        Self::bind_with_limits(listen, metrics_listen, rollout, ConnectionLimits::default()).await
    }

    /// [`WeightedProxy::bind`] with other per-connection limits on both listeners (tests use
    /// small ones).
    pub async fn bind_with_limits(
        listen: SocketAddr,
        metrics_listen: SocketAddr,
        rollout: String,
        limits: ConnectionLimits,
    ) -> Result<Self, ProxyError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ProxyError::BindProxy {
                addr: listen,
                source,
            })?;
        let admin =
            TcpListener::bind(metrics_listen)
                .await
                .map_err(|source| ProxyError::BindMetrics {
                    addr: metrics_listen,
                    source,
                })?;
        let listen = listener.local_addr().unwrap_or(listen);
        let metrics_listen = admin.local_addr().unwrap_or(metrics_listen);

        let shared = Arc::new(Shared {
            rollout: Arc::from(rollout.as_str()),
            table: RwLock::new(Arc::new(Table {
                state: RoutingState::default(),
                stable: None,
                canary: None,
                baseline: None,
                sequence: AtomicU64::new(0),
                not_canary: AtomicU64::new(0),
                routes: Arc::new(CompiledRoutes::default()),
            })),
            changed: Notify::new(),
            metrics: Metrics::new(),
            client: http::client(),
            mirror_slots: Arc::new(tokio::sync::Semaphore::new(MAX_MIRRORS_IN_FLIGHT)),
        });
        let (shutdown, stop) = watch::channel(false);
        let proxy_shared = shared.clone();
        let proxy_task = tokio::spawn(http::serve_with_limits(
            listener,
            stop.clone(),
            limits,
            move |req| forward(proxy_shared.clone(), req, Listener::Split),
        ));
        let admin_shared = shared.clone();
        let admin_task = tokio::spawn(http::serve_with_limits(admin, stop, limits, move |req| {
            let shared = admin_shared.clone();
            async move { admin_response(&shared, &req) }
        }));
        tracing::info!(%rollout, %listen, %metrics_listen, "weighted proxy listening");
        Ok(Self {
            handle: RouterHandle { shared },
            listen,
            metrics_listen,
            preview_listen: None,
            limits,
            shutdown,
            tasks: vec![proxy_task, admin_task],
        })
    }

    /// Serves the preview on `addr` too (a blue-green release's preview service): every
    /// request goes to the canary backend (the stable one while there is none), whatever the
    /// weight; nothing is mirrored. Returns the address bound (port 0 picks a free port).
    pub async fn serve_preview(&mut self, addr: SocketAddr) -> Result<SocketAddr, ProxyError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ProxyError::BindPreview { addr, source })?;
        let bound = listener.local_addr().unwrap_or(addr);
        let shared = self.handle.shared.clone();
        let stop = self.shutdown.subscribe();
        self.tasks.push(tokio::spawn(http::serve_with_limits(
            listener,
            stop,
            self.limits,
            move |req| forward(shared.clone(), req, Listener::Preview),
        )));
        tracing::info!(rollout = %self.handle.shared.rollout, preview = %bound, "preview listener serving");
        self.preview_listen = Some(bound);
        Ok(bound)
    }

    /// The address of the preview listener, when one serves.
    pub fn preview_addr(&self) -> Option<SocketAddr> {
        self.preview_listen
    }

    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The address of the admin listener serving `/metrics`.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_listen
    }

    /// A handle to change and read the routing.
    pub fn handle(&self) -> RouterHandle {
        self.handle.clone()
    }

    /// See [`RouterHandle::set_backends`].
    pub fn set_backends(
        &self,
        stable: Backend,
        canary: Option<Backend>,
        canary_weight: u8,
    ) -> Result<(), ProxyError> {
        self.handle.set_backends(stable, canary, canary_weight)
    }

    /// See [`RouterHandle::current`].
    pub fn current(&self) -> RoutingState {
        self.handle.current()
    }

    /// Stops accepting, lets in-flight requests finish (a few seconds at most) and returns.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for WeightedProxy {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

type ProxyBody = Either<Incoming, Full<Bytes>>;

fn local_response(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    http::text(status, body).map(Either::Right)
}

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers listed in `Connection` are hop-by-hop too.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    // Framing is redone by hyper for the buffered body.
    headers.remove(header::TRANSFER_ENCODING);
}

/// Picks the side for a request. While there are no backends yet, or the side picked has no
/// ready replica (every process starting, as after an engine restart), the request waits for
/// a routing change, up to [`HOLD_UNTIL_READY`], like a Service's clients retrying during a
/// restart, instead of failing at once.
async fn route(
    shared: &Shared,
    started: Instant,
    headers: &HeaderMap,
    listener: Listener,
) -> (Arc<Table>, Role) {
    let deadline = started + HOLD_UNTIL_READY;
    loop {
        // Registered before the table is read, so a change in between still wakes it.
        let changed = shared.changed.notified();
        let table = shared.table();
        // A header route sends the request to the canary only, whatever the weight; so
        // does the preview listener.
        let by_header = table.canary.is_some()
            && (listener == Listener::Preview || table.routes.to_canary(headers));
        let side = if by_header {
            table.side(Role::Canary)
        } else {
            table.pick()
        };
        let picked = side.map(|side| (side.role, side.addrs.is_empty()));
        let ready = matches!(picked, Some((_, false)));
        let role = picked.map_or(Role::Stable, |(role, _)| role);
        if ready || Instant::now() >= deadline {
            return (table, role);
        }
        let _ = tokio::time::timeout_at(deadline.into(), changed).await;
    }
}

/// Which listener a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listener {
    /// The main listener: the weighted split, header and mirror routes.
    Split,
    /// The preview listener (blue-green): the canary backend only.
    Preview,
}

async fn forward(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    listener: Listener,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let (table, role) = route(&shared, started, req.headers(), listener).await;
    if table.stable.is_none() {
        return local_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "vigil proxy: no backends configured yet\n",
        );
    }
    let Some(side) = table.side(role) else {
        // Unreachable by construction (a weight > 0 needs its backend), but never panic on it.
        return local_response(StatusCode::BAD_GATEWAY, "vigil proxy: no canary backend\n");
    };

    let (mut parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_REQUEST_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            tracing::debug!(%error, "read request body");
            return local_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "vigil proxy: request body too large or unreadable\n",
            );
        }
    };
    strip_hop_by_hop(&mut parts.headers);
    if listener == Listener::Split
        && table
            .routes
            .mirror(&parts.method, parts.uri.path(), &parts.headers)
    {
        mirror(&shared, &table, &parts, &body);
    }
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();

    let attempts = side.addrs.len().min(2);
    let first = side.next_replica.fetch_add(1, Ordering::Relaxed);
    let mut response = None;
    for attempt in 0..attempts {
        let addr = side.addrs[(first + attempt) % side.addrs.len()];
        let Ok(uri) = Uri::try_from(format!("http://{addr}{path}")) else {
            response = Some(local_response(
                StatusCode::BAD_REQUEST,
                "vigil proxy: bad request target\n",
            ));
            break;
        };
        let mut upstream = Request::new(Full::new(body.clone()));
        *upstream.method_mut() = parts.method.clone();
        *upstream.uri_mut() = uri;
        *upstream.headers_mut() = parts.headers.clone();
        match shared.client.request(upstream).await {
            Ok(resp) => {
                let (mut head, body) = resp.into_parts();
                strip_hop_by_hop(&mut head.headers);
                response = Some(Response::from_parts(head, Either::Left(body)));
                break;
            }
            Err(error) if error.is_connect() => {
                // Nothing reached the replica: safe to try the next one of the same revision.
                tracing::debug!(revision = %side.revision, %addr, %error, "replica refused the connection");
                count_upstream_error(&shared, side, addr, UpstreamError::Connect);
            }
            Err(error) => {
                // The request may have reached the replica: retrying could run it twice.
                tracing::debug!(revision = %side.revision, %addr, %error, "upstream request failed");
                count_upstream_error(&shared, side, addr, UpstreamError::Request);
                break;
            }
        }
    }
    let mut response = response.unwrap_or_else(|| {
        local_response(
            StatusCode::BAD_GATEWAY,
            "vigil proxy: no replica of the revision answered\n",
        )
    });
    if let Some(value) = &side.header {
        response
            .headers_mut()
            .insert(HeaderName::from_static(REVISION_HEADER), value.clone());
    }
    record(&shared, side, response.status(), started.elapsed());
    response
}

/// Sends a copy of the request to a canary replica in the background: the client's response
/// never waits for it, and the copy's response is discarded once counted (`mirrored="true"`).
/// Skipped (and counted) when the body is over [`MAX_MIRROR_BODY_BYTES`], when
/// [`MAX_MIRRORS_IN_FLIGHT`] copies are in flight, or without a ready canary replica.
fn mirror(
    shared: &Arc<Shared>,
    table: &Arc<Table>,
    parts: &hyper::http::request::Parts,
    body: &Bytes,
) {
    let skip = |reason: &'static str| {
        shared
            .metrics
            .mirror_skipped
            .get_or_create(&MirrorSkipLabels {
                rollout: shared.rollout.clone(),
                reason,
            })
            .inc();
    };
    if body.len() > MAX_MIRROR_BODY_BYTES {
        return skip("body");
    }
    let Some(canary) = table.canary.as_ref().filter(|side| !side.addrs.is_empty()) else {
        return skip("no_canary");
    };
    let Ok(permit) = shared.mirror_slots.clone().try_acquire_owned() else {
        return skip("busy");
    };
    let replica = canary.next_replica.fetch_add(1, Ordering::Relaxed);
    let addr = canary.addrs[replica % canary.addrs.len()];
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let Ok(uri) = Uri::try_from(format!("http://{addr}{path}")) else {
        return skip("target");
    };
    let mut copy = Request::new(Full::new(body.clone()));
    *copy.method_mut() = parts.method.clone();
    *copy.uri_mut() = uri;
    *copy.headers_mut() = parts.headers.clone();
    let (shared, table) = (shared.clone(), table.clone());
    tokio::spawn(async move {
        let _permit = permit;
        let code = match tokio::time::timeout(MIRROR_TIMEOUT, shared.client.request(copy)).await {
            // Only the status is kept; dropping the response discards its body.
            Ok(Ok(response)) => response.status(),
            Ok(Err(_)) => StatusCode::BAD_GATEWAY,
            Err(_) => StatusCode::GATEWAY_TIMEOUT,
        };
        if let Some(canary) = table.canary.as_ref() {
            shared
                .metrics
                .requests
                .get_or_create(&RequestLabels {
                    rollout: shared.rollout.clone(),
                    revision: canary.revision.clone(),
                    role: Role::Canary,
                    code: code.as_u16(),
                    mirrored: true,
                })
                .inc();
        }
    });
}

fn count_upstream_error(shared: &Shared, side: &Side, addr: SocketAddr, kind: UpstreamError) {
    shared
        .metrics
        .upstream_errors
        .get_or_create(&UpstreamErrorLabels {
            rollout: shared.rollout.clone(),
            revision: side.revision.clone(),
            addr: addr.to_string(),
            kind,
        })
        .inc();
}

fn record(shared: &Shared, side: &Side, status: StatusCode, elapsed: Duration) {
    side.latency.observe(elapsed.as_secs_f64());
    shared
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            rollout: shared.rollout.clone(),
            revision: side.revision.clone(),
            role: side.role,
            code: status.as_u16(),
            mirrored: false,
        })
        .inc();
}

fn admin_response(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return http::text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let mut response = http::text(StatusCode::OK, shared.metrics.encode());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE),
            );
            response
        }
        "/routing" => match serde_json::to_string_pretty(&shared.table().state) {
            Ok(json) => {
                let mut response = http::text(StatusCode::OK, json);
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }
            Err(error) => http::text(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
        },
        "/livez" => http::text(StatusCode::OK, "ok\n"),
        _ => http::text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(weight: u8) -> Table {
        let metrics = Metrics::new();
        let rollout: Arc<str> = Arc::from("r");
        let stable = Backend {
            revision: "s".into(),
            addrs: vec![],
        };
        let canary = Backend {
            revision: "c".into(),
            addrs: vec![],
        };
        Table {
            stable: Some(Side::new(&stable, Role::Stable, &rollout, &metrics)),
            canary: Some(Side::new(&canary, Role::Canary, &rollout, &metrics)),
            baseline: None,
            state: RoutingState {
                stable: Some(stable),
                canary: Some(canary),
                canary_weight: weight,
                ..Default::default()
            },
            sequence: AtomicU64::new(0),
            not_canary: AtomicU64::new(0),
            routes: Arc::new(CompiledRoutes::default()),
        }
    }

    fn canary_count(table: &Table, requests: usize) -> usize {
        (0..requests)
            .filter(|_| table.pick().map(|s| s.role) == Some(Role::Canary))
            .count()
    }

    #[test]
    fn every_window_of_100_holds_exactly_the_weight() {
        for weight in [0u8, 1, 5, 20, 33, 50, 99, 100] {
            let t = table(weight);
            for window in 0..7 {
                assert_eq!(
                    canary_count(&t, 100),
                    usize::from(weight),
                    "weight {weight}, window {window}"
                );
            }
        }
    }

    fn with_baseline(weight: u8, baseline_weight: u8) -> Table {
        let metrics = Metrics::new();
        let rollout: Arc<str> = Arc::from("r");
        let baseline = Backend {
            revision: "s-baseline".into(),
            addrs: vec![],
        };
        let mut table = table(weight);
        table.baseline = Some(Side::new(&baseline, Role::Baseline, &rollout, &metrics));
        table.state.baseline = Some(baseline);
        table.state.baseline_weight = baseline_weight;
        table
    }

    #[test]
    fn every_window_of_100_holds_exactly_the_canary_and_baseline_weights() {
        // (canary, baseline asked, baseline served): never more than the canary leaves.
        for (weight, asked, served) in [
            (10u8, 10u8, 10usize),
            (25, 25, 25),
            (50, 50, 50),
            (60, 40, 40),
            (1, 1, 1),
            (0, 0, 0),
            (70, 70, 30),
        ] {
            let t = with_baseline(weight, asked);
            for window in 0..5 {
                let roles: Vec<Option<Role>> = (0..100).map(|_| t.pick().map(|s| s.role)).collect();
                let count = |role| roles.iter().filter(|r| **r == Some(role)).count();
                assert_eq!(
                    count(Role::Canary),
                    usize::from(weight),
                    "canary {weight}, window {window}"
                );
                assert_eq!(
                    count(Role::Baseline),
                    served,
                    "baseline {asked} at canary {weight}, window {window}"
                );
                assert_eq!(count(Role::Stable), 100 - usize::from(weight) - served);
            }
        }
    }

    #[test]
    fn canary_requests_are_spread_evenly() {
        // At weight 20 every fifth request is a canary one: no bursts.
        let t = table(20);
        let picks: Vec<bool> = (0..20)
            .map(|_| t.pick().map(|s| s.role) == Some(Role::Canary))
            .collect();
        let positions: Vec<usize> = picks
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.then_some(i))
            .collect();
        assert_eq!(positions, vec![4, 9, 14, 19]);
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("close, x-foo"));
        headers.insert("x-foo", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert!(headers.get("x-foo").is_none());
        assert!(headers.get(header::CONNECTION).is_none());
        assert!(headers.get("keep-alive").is_none());
        assert_eq!(headers.get("x-keep"), Some(&HeaderValue::from_static("1")));
    }

    #[test]
    fn exposed_names_are_the_mesh_ones() {
        let metrics = Metrics::new();
        let rollout: Arc<str> = Arc::from("shop");
        let side = Side::new(
            &Backend {
                revision: "abc".into(),
                addrs: vec![],
            },
            Role::Canary,
            &rollout,
            &metrics,
        );
        metrics
            .requests
            .get_or_create(&RequestLabels {
                rollout: rollout.clone(),
                revision: side.revision.clone(),
                role: Role::Canary,
                code: 200,
                mirrored: false,
            })
            .inc();
        metrics
            .requests
            .get_or_create(&RequestLabels {
                rollout: rollout.clone(),
                revision: side.revision.clone(),
                role: Role::Canary,
                code: 200,
                mirrored: true,
            })
            .inc();
        side.latency.observe(0.003);
        let text = metrics.encode();
        // A mirrored copy has its own label; served requests keep the series they had.
        assert!(
            text.contains(
                r#"http_requests_total{rollout="shop",revision="abc",role="canary",code="200",mirrored="true"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"http_requests_total{rollout="shop",revision="abc",role="canary",code="200"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"http_request_duration_seconds_bucket{le="0.005",rollout="shop",revision="abc",role="canary"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("http_request_duration_seconds_count{"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}

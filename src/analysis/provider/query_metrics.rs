//! Per-address visibility of the queries vigil sends: rate, concurrency, errors and coalesced
//! calls per Prometheus origin (`scheme://host:port`, never the full address: it may carry
//! credentials or a tenant in its path).
//!
//! Label cardinality is bounded: the first [`MAX_ORIGIN_LABELS`] origins seen get their own
//! series, any later one is counted as [`OTHER_ORIGIN`], so a template writer cannot grow
//! `/metrics` by naming ever new addresses.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use url::Url;

/// The most origins with series of their own.
pub const MAX_ORIGIN_LABELS: usize = 64;

/// The origin label of every origin past [`MAX_ORIGIN_LABELS`].
pub const OTHER_ORIGIN: &str = "other";

/// Labels of a per-origin query metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OriginLabels {
    /// `scheme://host:port` of the Prometheus, or `other`.
    pub origin: String,
}

/// The per-origin query metrics. Clone it freely: clones share the series.
#[derive(Clone, Debug, Default)]
pub struct QueryMetrics {
    /// Queries asked by measurements (answered by a request of their own or a shared one).
    pub queries: Family<OriginLabels, Counter>,
    /// HTTP requests sent (retries included).
    pub requests: Family<OriginLabels, Counter>,
    /// Queries answered by an identical query's request already in flight.
    pub coalesced: Family<OriginLabels, Counter>,
    /// Queries that ended in an error (after retries).
    pub errors: Family<OriginLabels, Counter>,
    /// HTTP requests in flight now.
    pub in_flight: Family<OriginLabels, Gauge>,
    origins: Arc<Mutex<HashSet<String>>>,
}

impl QueryMetrics {
    /// Registers every family in `registry` (prefix included by the registry).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "prometheus_queries",
            "Queries asked of a Prometheus, by origin (coalesced ones included)",
            self.queries.clone(),
        );
        registry.register(
            "prometheus_requests",
            "HTTP requests sent to a Prometheus, by origin (retries included)",
            self.requests.clone(),
        );
        registry.register(
            "prometheus_coalesced_queries",
            "Queries answered by an identical query already in flight, by origin",
            self.coalesced.clone(),
        );
        registry.register(
            "prometheus_query_errors",
            "Queries that ended in an error after retries, by origin",
            self.errors.clone(),
        );
        registry.register(
            "prometheus_requests_in_flight",
            "HTTP requests to a Prometheus in flight now, by origin",
            self.in_flight.clone(),
        );
    }

    /// The series of `address`' origin (or of `other` once the cap is reached).
    pub fn for_address(&self, address: &Url) -> OriginMetrics {
        let origin = address.origin().ascii_serialization();
        let label = {
            let mut origins = self.origins.lock().unwrap_or_else(PoisonError::into_inner);
            if origins.contains(&origin) || origins.len() < MAX_ORIGIN_LABELS {
                origins.insert(origin.clone());
                origin
            } else {
                OTHER_ORIGIN.to_owned()
            }
        };
        let labels = OriginLabels { origin: label };
        OriginMetrics {
            queries: self.queries.get_or_create(&labels).clone(),
            requests: self.requests.get_or_create(&labels).clone(),
            coalesced: self.coalesced.get_or_create(&labels).clone(),
            errors: self.errors.get_or_create(&labels).clone(),
            in_flight: self.in_flight.get_or_create(&labels).clone(),
        }
    }
}

/// One origin's series, resolved once per client.
#[derive(Clone, Debug)]
pub struct OriginMetrics {
    /// See [`QueryMetrics::queries`].
    pub queries: Counter,
    /// See [`QueryMetrics::requests`].
    pub requests: Counter,
    /// See [`QueryMetrics::coalesced`].
    pub coalesced: Counter,
    /// See [`QueryMetrics::errors`].
    pub errors: Counter,
    /// See [`QueryMetrics::in_flight`].
    pub in_flight: Gauge,
}

impl OriginMetrics {
    /// Counts a request in flight until the guard is dropped.
    pub fn request_started(&self) -> InFlightRequest {
        self.requests.inc();
        self.in_flight.inc();
        InFlightRequest {
            gauge: self.in_flight.clone(),
        }
    }
}

/// A request counted in flight; dropping it ends the count.
#[derive(Debug)]
pub struct InFlightRequest {
    gauge: Gauge,
}

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_past_the_cap_are_counted_as_other_and_credentials_never_label() {
        let metrics = QueryMetrics::default();
        let mut registry = Registry::with_prefix("vigil");
        metrics.register(&mut registry);
        for i in 0..MAX_ORIGIN_LABELS + 10 {
            let url =
                Url::parse(&format!("http://user:s3cr3t@prom-{i}:9090/tenant/a")).expect("url");
            metrics.for_address(&url).queries.inc();
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        let series = text
            .lines()
            .filter(|l| l.starts_with("vigil_prometheus_queries_total{"))
            .count();
        assert_eq!(series, MAX_ORIGIN_LABELS + 1, "{text}");
        assert!(
            text.contains("vigil_prometheus_queries_total{origin=\"other\"} 10"),
            "{text}"
        );
        assert!(
            text.contains("vigil_prometheus_queries_total{origin=\"http://prom-0:9090\"} 1"),
            "{text}"
        );
        assert!(
            !text.contains("s3cr3t") && !text.contains("tenant"),
            "{text}"
        );
        // An origin seen before the cap keeps its own series.
        metrics
            .for_address(&Url::parse("http://prom-0:9090/").expect("url"))
            .queries
            .inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains("vigil_prometheus_queries_total{origin=\"http://prom-0:9090\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn a_request_is_in_flight_until_its_guard_goes() {
        let metrics = QueryMetrics::default();
        let origin = metrics.for_address(&Url::parse("http://p:9090").expect("url"));
        let guard = origin.request_started();
        assert_eq!((origin.in_flight.get(), origin.requests.get()), (1, 1));
        drop(guard);
        assert_eq!((origin.in_flight.get(), origin.requests.get()), (0, 1));
    }
}

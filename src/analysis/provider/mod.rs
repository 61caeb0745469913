//! Metric providers: the I/O that turns a query into a typed measurement.
//!
//! The analysis engine talks to providers through [`MetricsProvider`], so it can be tested with
//! an in-memory provider and another backend can be swapped in.

use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;

pub mod budget;
pub mod coalesce;
pub mod measurement;
pub mod prometheus;
pub mod query_metrics;
pub mod resolve;
pub mod web;

pub use measurement::{
    AnswerCap, Labels, MAX_TEXT_BYTES, Measurement, ProviderError, RangeSeries, ResultType,
    SingleValue, ValueClass, VectorSample, bounded, bounded_owned, bounded_to,
};

/// The time range of a range query. `start` and `end` are inclusive, as in Prometheus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryRange {
    /// First evaluation time.
    pub start: Timestamp,
    /// Last evaluation time.
    pub end: Timestamp,
    /// Resolution step (must be positive).
    pub step: Duration,
}

/// A source of measurements.
pub trait MetricsProvider: Send + Sync {
    /// Evaluates an instant query at an explicit time (never "now": the caller owns the clock).
    fn query(
        &self,
        query: &str,
        at: Timestamp,
    ) -> impl Future<Output = Result<Measurement, ProviderError>> + Send;

    /// Evaluates a range query.
    fn query_range(
        &self,
        query: &str,
        range: QueryRange,
    ) -> impl Future<Output = Result<Measurement, ProviderError>> + Send;
}

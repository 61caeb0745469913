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
pub mod shared_clients;
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

/// The one provider a metric names: every place that dispatches on the provider (validation,
/// `vigil lint`, the driver's clients) goes through [`chosen`], so they agree.
#[derive(Debug, Clone, Copy)]
pub enum Chosen<'a> {
    /// `provider.prometheus`.
    Prometheus(&'a crate::api::PrometheusProvider),
    /// `provider.web`.
    Web(&'a crate::api::WebProvider),
    /// `provider.job`.
    Job(&'a crate::api::JobProvider),
}

/// Why a metric's provider is not exactly one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderChoiceError {
    /// No provider field is set.
    #[error("no provider: set one of `prometheus`, `web` or `job`")]
    NoProvider,
    /// More than one provider field is set.
    #[error("{} are set; a metric has exactly one provider", .0.join(" and "))]
    SeveralProviders(Vec<String>),
}

/// The one provider `provider` names, or which fields make it not one.
pub fn chosen(provider: &crate::api::MetricProvider) -> Result<Chosen<'_>, ProviderChoiceError> {
    let mut set: Vec<Chosen<'_>> = Vec::with_capacity(1);
    let mut names = Vec::new();
    if let Some(p) = &provider.prometheus {
        set.push(Chosen::Prometheus(p));
        names.push("`prometheus`".to_owned());
    }
    if let Some(w) = &provider.web {
        set.push(Chosen::Web(w));
        names.push("`web`".to_owned());
    }
    if let Some(j) = &provider.job {
        set.push(Chosen::Job(j));
        names.push("`job`".to_owned());
    }
    match set.as_slice() {
        [] => Err(ProviderChoiceError::NoProvider),
        [one] => Ok(*one),
        _ => Err(ProviderChoiceError::SeveralProviders(names)),
    }
}

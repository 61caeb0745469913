//! Taking one measurement: query the provider, then judge. The I/O half of a run; the
//! lifecycle itself is pure (`analysis::run`).
//!
//! Queries here are already resolved: arguments were substituted (with escaping) when the run
//! was created from its templates, so a measurement never re-reads templates or secrets.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::analysis::judge::threshold::{ThresholdInput, ThresholdJudge, describe};
use crate::analysis::provider::{Measurement, MetricsProvider, ProviderError};
use crate::api::{AnalysisPhase, MeasurementRecord, Metric, NoDataPolicy};

/// One judged measurement, ready for `analysis::run::record`.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// The stored record: verdict, time, value and reason.
    pub record: MeasurementRecord,
    /// True when the verdict ends the metric at once (an early pass of a sequential judge).
    pub decisive: bool,
    /// The judge's state to carry to the next measurement (sequential judges).
    pub judge_state: Option<serde_json::Value>,
}

impl Measured {
    fn new(phase: AnalysisPhase, at: Timestamp, value: Option<String>, reason: String) -> Self {
        Measured {
            record: MeasurementRecord {
                phase,
                started_at: Time(at),
                value,
                reason: Some(reason),
            },
            decisive: false,
            judge_state: None,
        }
    }
}

/// What a metric's `noData` policy makes of an empty result.
pub fn no_data_verdict(metric: &Metric, what: &str, at: Timestamp) -> Measured {
    let policy = metric.no_data.unwrap_or_default();
    let (phase, name) = match policy {
        NoDataPolicy::Inconclusive => (AnalysisPhase::Inconclusive, "inconclusive"),
        NoDataPolicy::Fail => (AnalysisPhase::Failed, "fail"),
        NoDataPolicy::Pass => (AnalysisPhase::Successful, "pass"),
    };
    Measured::new(
        phase,
        at,
        None,
        format!("no data: {what} returned no series (noData: {name})"),
    )
}

fn provider_error(error: &ProviderError, at: Timestamp) -> Measured {
    Measured::new(AnalysisPhase::Error, at, None, error.to_string())
}

/// Takes one measurement of a threshold metric at `at`.
pub async fn measure_threshold<P: MetricsProvider>(
    provider: &P,
    metric: &Metric,
    at: Timestamp,
) -> Measured {
    let Some(query) = metric
        .provider
        .prometheus
        .as_ref()
        .and_then(|p| p.query.as_deref())
    else {
        return Measured::new(
            AnalysisPhase::Error,
            at,
            None,
            "provider.prometheus.query is not set".to_owned(),
        );
    };
    let judge = match ThresholdJudge::new(
        metric.success_condition.as_deref(),
        metric.failure_condition.as_deref(),
    ) {
        Ok(judge) => judge,
        Err(error) => return Measured::new(AnalysisPhase::Error, at, None, error.to_string()),
    };
    let measurement = match provider.query(query, at).await {
        Ok(measurement) => measurement,
        Err(error) => return provider_error(&error, at),
    };
    let input = match &measurement {
        Measurement::NoData { .. } => return no_data_verdict(metric, "the query", at),
        Measurement::Scalar { value, .. } => ThresholdInput::Number(*value),
        Measurement::Vector(samples) if samples.len() == 1 => {
            ThresholdInput::Number(samples[0].value)
        }
        Measurement::Vector(samples) => ThresholdInput::Vector(
            samples
                .iter()
                .map(|s| (s.labels.clone(), s.value))
                .collect(),
        ),
        Measurement::Matrix(_) => {
            return Measured::new(
                AnalysisPhase::Error,
                at,
                None,
                "the query returned a range (matrix); a threshold needs an instant value: drop the [range] selector or wrap it in a function such as rate()".to_owned(),
            );
        }
    };
    let verdict = judge.judge(&input);
    let value = Some(describe(&input));
    if verdict.phase == AnalysisPhase::Error
        && matches!(input, ThresholdInput::Vector(_))
        && let Err(several) = measurement.single_value()
    {
        // A condition written for one number met several series: say which, rather than a
        // CEL type error.
        return Measured::new(
            AnalysisPhase::Error,
            at,
            value,
            format!(
                "{several}; aggregate the query (e.g. sum(...)) or write the condition over the list"
            ),
        );
    }
    Measured::new(verdict.phase, at, value, verdict.reason)
}

/// Takes one measurement of any metric at `at`, with the judge the metric names.
///
/// `run_started` is when the run began (comparison judges look at the canary since then);
/// `prior_state` is what the metric's judge carried from its previous measurement.
pub async fn measure_metric<P: MetricsProvider>(
    provider: &P,
    metric: &Metric,
    scoring: Option<&crate::api::Scoring>,
    at: Timestamp,
    run_started: Timestamp,
    prior_state: Option<&serde_json::Value>,
) -> Measured {
    let _ = (scoring, run_started, prior_state);
    if metric.mann_whitney.is_some() || metric.sequential.is_some() {
        return Measured::new(
            AnalysisPhase::Error,
            at,
            None,
            "this judge is not available in this build".to_owned(),
        );
    }
    measure_threshold(provider, metric, at).await
}

//! Taking one measurement: query the provider, then judge. The I/O half of a run; the
//! lifecycle itself is pure (`analysis::run`).
//!
//! Queries here are already resolved: arguments were substituted (with escaping) when the run
//! was created from its templates, so a measurement never re-reads templates or secrets.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

use crate::analysis::judge::threshold::{ThresholdInput, ThresholdJudge, describe};
use crate::analysis::provider::web::WebClient;
use crate::analysis::provider::{Measurement, MetricsProvider, ProviderError, bounded_owned};
use crate::api::{AnalysisPhase, MeasurementRecord, Metric, NoDataPolicy};

/// The most `le` buckets a latency histogram query may return per arm. Classic histograms
/// have a dozen or two; the latency test keeps the baseline's buckets in the run's status
/// while it warms up, so the count is bounded to keep that state (and the status) small.
pub const MAX_HISTOGRAM_BUCKETS: usize = 64;

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
    /// A measurement with its texts bounded (they carry label values and provider errors).
    pub(crate) fn new(
        phase: AnalysisPhase,
        at: Timestamp,
        value: Option<String>,
        reason: String,
    ) -> Self {
        Measured {
            record: MeasurementRecord {
                phase,
                started_at: MicroTime(at),
                value: value.map(bounded_owned),
                reason: Some(bounded_owned(reason)),
                critical: false,
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

/// Takes one measurement of a web metric at `at`: one request, the value its `jsonPath`
/// selects judged by the threshold judge (a JSON number is a number, as a Prometheus value;
/// anything else is `result` as a CEL bool, string, list or map). A JSON `null` is no data.
pub async fn measure_web(client: &WebClient, metric: &Metric, at: Timestamp) -> Measured {
    if metric.mann_whitney.is_some() || metric.sequential.is_some() {
        return Measured::new(
            AnalysisPhase::Error,
            at,
            None,
            "a web metric is judged by successCondition/failureCondition; mannWhitney and sequential compare Prometheus queries".to_owned(),
        );
    }
    let judge = match ThresholdJudge::new(
        metric.success_condition.as_deref(),
        metric.failure_condition.as_deref(),
    ) {
        Ok(judge) => judge,
        Err(error) => return Measured::new(AnalysisPhase::Error, at, None, error.to_string()),
    };
    let input = match client.fetch(at).await {
        Err(error) => return provider_error(&error, at),
        Ok(serde_json::Value::Null) => return no_data_verdict(metric, "the jsonPath", at),
        Ok(serde_json::Value::Number(n)) => ThresholdInput::Number(n.as_f64().unwrap_or(f64::NAN)),
        Ok(value) => ThresholdInput::Json(value),
    };
    let verdict = judge.judge(&input);
    Measured::new(verdict.phase, at, Some(describe(&input)), verdict.reason)
}

/// What a comparison judge needs to know about the run around one measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunContext<'a> {
    /// When the run started: Mann–Whitney samples the canary since then.
    pub run_started: Timestamp,
    /// The metric's judge state from its previous measurement (sequential judges).
    pub prior_state: Option<&'a serde_json::Value>,
    /// True for the metric's last scheduled measurement: an undecided sequential test becomes
    /// Inconclusive there.
    pub is_last: bool,
    /// Sequential metrics in the run: the run's α is split among them.
    pub sequential_metrics: usize,
    /// The run is background analysis: a sequential test that passes starts again.
    pub keep_watching: bool,
}

/// Takes one measurement of any metric at `at`, with the judge the metric names.
pub async fn measure_metric<P: MetricsProvider>(
    provider: &P,
    metric: &Metric,
    at: Timestamp,
    context: RunContext<'_>,
) -> Measured {
    if let Some(judge) = &metric.mann_whitney {
        return comparison::measure_mann_whitney(provider, metric, judge, at, context).await;
    }
    if let Some(judge) = &metric.sequential {
        return comparison::measure_sequential(provider, metric, judge, at, context).await;
    }
    measure_threshold(provider, metric, at).await
}

mod comparison {
    //! The comparison judges' measurements: canary vs baseline queries.

    use std::time::Duration;

    use jiff::Timestamp;

    use super::{
        MAX_HISTOGRAM_BUCKETS, Measured, RunContext, no_data_verdict, provider_error, strata,
    };
    use crate::analysis::judge::mann_whitney::{
        self, EffectMeasure, EffectSizeConfig, KayentaConfig, Label, OutlierConfig, OutlierStrategy,
    };
    use crate::analysis::judge::sequential::{
        CountIncrement, CountState, CountTest, CountTestConfig, HistogramIncrement, HistogramState,
        HistogramTest, HistogramTestConfig, SequentialDecision, StratumCounts, split_alpha,
    };
    use crate::analysis::provider::{Measurement, MetricsProvider, QueryRange};
    use crate::api::duration::{MAX_DURATION, format_duration, parse_duration};
    use crate::api::{
        AnalysisPhase, Direction, EffectSizeMeasure, MannWhitneyJudge, Metric, NanStrategy,
        SequentialJudge, SequentialTest,
    };

    const DEFAULT_STEP: Duration = Duration::from_secs(60);

    fn error(at: Timestamp, reason: String) -> Measured {
        Measured::new(AnalysisPhase::Error, at, None, reason)
    }

    fn queries(metric: &Metric) -> Option<(&str, &str)> {
        let prometheus = metric.provider.prometheus.as_ref()?;
        Some((
            prometheus.canary_query.as_deref()?,
            prometheus.baseline_query.as_deref()?,
        ))
    }

    pub(super) fn kayenta_config(judge: &MannWhitneyJudge) -> KayentaConfig {
        let defaults = KayentaConfig::default();
        KayentaConfig {
            direction: match judge.direction.unwrap_or_default() {
                Direction::Increase => mann_whitney::Direction::Increase,
                Direction::Decrease => mann_whitney::Direction::Decrease,
                Direction::Either => mann_whitney::Direction::Either,
            },
            tolerance: judge.tolerance.unwrap_or(defaults.tolerance),
            confidence: judge.confidence.unwrap_or(defaults.confidence),
            nan_strategy: match judge.nan_strategy.unwrap_or_default() {
                NanStrategy::Remove => mann_whitney::NanStrategy::Remove,
                NanStrategy::Replace => mann_whitney::NanStrategy::Replace,
            },
            critical: judge.critical,
            must_have_data: judge.must_have_data,
            effect_size: EffectSizeConfig {
                measure: match judge.effect_size_measure.unwrap_or_default() {
                    EffectSizeMeasure::MeanRatio => EffectMeasure::MeanRatio,
                    EffectSizeMeasure::Cles => EffectMeasure::Cles,
                },
                allowed_increase: judge.allowed_increase,
                allowed_decrease: judge.allowed_decrease,
                critical_increase: judge.critical_increase,
                critical_decrease: judge.critical_decrease,
            },
            outliers: OutlierConfig {
                strategy: if judge.remove_outliers {
                    OutlierStrategy::Remove
                } else {
                    OutlierStrategy::Keep
                },
                outlier_factor: judge
                    .outlier_factor
                    .unwrap_or(defaults.outliers.outlier_factor),
            },
            exact: defaults.exact,
        }
    }

    /// The values of a range query's one series; None for no data.
    fn samples(measurement: &Measurement) -> Result<Option<Vec<f64>>, String> {
        match measurement.single_series() {
            Ok(Some(series)) => Ok(Some(series.points.iter().map(|(_, v)| *v).collect())),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The median of the finite values, when there is one.
    fn median(values: &[f64]) -> Option<f64> {
        let mut finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if finite.is_empty() {
            return None;
        }
        finite.sort_by(f64::total_cmp);
        let middle = finite.len() / 2;
        Some(if finite.len().is_multiple_of(2) {
            (finite[middle - 1] + finite[middle]) / 2.0
        } else {
            finite[middle]
        })
    }

    pub(super) async fn measure_mann_whitney<P: MetricsProvider>(
        provider: &P,
        metric: &Metric,
        judge: &MannWhitneyJudge,
        at: Timestamp,
        context: RunContext<'_>,
    ) -> Measured {
        let Some((canary_query, baseline_query)) = queries(metric) else {
            return error(
                at,
                "mannWhitney needs provider.prometheus.canaryQuery and baselineQuery".to_owned(),
            );
        };
        let step = match judge.step.as_deref().map(parse_duration).transpose() {
            Ok(Some(step)) if step > MAX_DURATION => {
                return error(
                    at,
                    format!(
                        "mannWhitney.step: {} is over the ceiling of {}",
                        format_duration(step),
                        format_duration(MAX_DURATION)
                    ),
                );
            }
            Ok(step) => step.unwrap_or(DEFAULT_STEP).max(Duration::from_secs(1)),
            Err(e) => return error(at, format!("mannWhitney.step: {e}")),
        };
        // Samples since the run started; at least one step so the first look has data.
        let one_step_back = jiff::SignedDuration::try_from(step)
            .ok()
            .and_then(|step| at.checked_sub(step).ok())
            .unwrap_or(Timestamp::MIN);
        let start = context.run_started.min(one_step_back);
        let range = QueryRange {
            start,
            end: at,
            step,
        };
        let (canary, baseline) = futures::join!(
            provider.query_range(canary_query, range),
            provider.query_range(baseline_query, range)
        );
        let (canary, baseline) = match (canary, baseline) {
            (Ok(c), Ok(b)) => (c, b),
            (Err(e), _) | (_, Err(e)) => return provider_error(&e, at),
        };
        let (canary, baseline) = match (samples(&canary), samples(&baseline)) {
            (Ok(c), Ok(b)) => (c, b),
            (Err(e), _) | (_, Err(e)) => return error(at, e),
        };
        let config = kayenta_config(judge);
        let canary = canary.unwrap_or_default();
        let baseline = baseline.unwrap_or_default();
        let classification = mann_whitney::classify(&canary, &baseline, &config);
        let phase = match classification.label {
            Label::Pass => AnalysisPhase::Successful,
            Label::High | Label::Low | Label::NodataFailMetric => AnalysisPhase::Failed,
            Label::Nodata => {
                let mut verdict = no_data_verdict(metric, "the canary or baseline query", at);
                if let Some(reason) = verdict.record.reason.as_mut() {
                    reason.push_str(&format!(": {}", classification.reason));
                }
                verdict.record.critical = classification.critical;
                return verdict;
            }
            Label::Error => AnalysisPhase::Error,
        };
        let value = classification.test.as_ref().map(|t| {
            format!(
                "shift {} [{}, {}]",
                crate::analysis::judge::threshold::format_number(t.hodges_lehmann),
                crate::analysis::judge::threshold::format_number(t.ci_lower),
                crate::analysis::judge::threshold::format_number(t.ci_upper)
            )
        });
        // Both arms' medians, so that a report draws the canary and the baseline over time.
        let medians = match (median(&canary), median(&baseline)) {
            (Some(c), Some(b)) => format!(
                "; canary median {}, baseline median {}",
                crate::analysis::judge::threshold::format_number(c),
                crate::analysis::judge::threshold::format_number(b)
            ),
            _ => String::new(),
        };
        let mut measured = Measured::new(
            phase,
            at,
            value,
            format!(
                "{:?}: {}{medians}",
                classification.label, classification.reason
            ),
        );
        measured.record.critical = classification.critical;
        measured
    }

    fn count_config(judge: &SequentialJudge, context: &RunContext<'_>) -> CountTestConfig {
        CountTestConfig {
            alpha: split_alpha(
                judge.alpha.unwrap_or(SequentialJudge::DEFAULT_ALPHA),
                context.sequential_metrics,
            ),
            fail_margin: judge
                .fail_margin
                .unwrap_or(SequentialJudge::DEFAULT_FAIL_MARGIN),
            pass_margin: judge
                .pass_margin
                .unwrap_or(SequentialJudge::DEFAULT_PASS_MARGIN),
            keep_watching: context.keep_watching,
            ..CountTestConfig::default()
        }
    }

    fn verdict_of(
        decision: SequentialDecision,
        pass_early: bool,
        at: Timestamp,
        value: Option<String>,
        reason: String,
        state: serde_json::Value,
    ) -> Measured {
        let (phase, decisive) = match decision {
            SequentialDecision::Fail => (AnalysisPhase::Failed, false),
            SequentialDecision::Pass if pass_early => (AnalysisPhase::Successful, true),
            // Without early passes a Pass waits for the deadline like an undecided test.
            SequentialDecision::Pass => (AnalysisPhase::Successful, false),
            // Not decided yet: a measurement without a verdict of its own.
            SequentialDecision::Continue => (AnalysisPhase::Running, false),
            SequentialDecision::Inconclusive => (AnalysisPhase::Inconclusive, false),
        };
        let mut measured = Measured::new(phase, at, value, reason);
        measured.decisive = decisive;
        measured.judge_state = Some(state);
        measured
    }

    pub(super) async fn measure_sequential<P: MetricsProvider>(
        provider: &P,
        metric: &Metric,
        judge: &SequentialJudge,
        at: Timestamp,
        context: RunContext<'_>,
    ) -> Measured {
        let Some((canary_query, baseline_query)) = queries(metric) else {
            return error(
                at,
                "sequential needs provider.prometheus.canaryQuery and baselineQuery".to_owned(),
            );
        };
        let pass_early = judge.pass_early.unwrap_or(true);
        match judge.test.unwrap_or_default() {
            SequentialTest::ErrorCounts => {
                let prometheus = metric.provider.prometheus.as_ref();
                let (Some(canary_requests), Some(baseline_requests)) = (
                    prometheus.and_then(|p| p.canary_requests_query.as_deref()),
                    prometheus.and_then(|p| p.baseline_requests_query.as_deref()),
                ) else {
                    return error(at, "sequential errorCounts needs canaryRequestsQuery and baselineRequestsQuery".to_owned());
                };
                let (ce, be, cr, br) = futures::join!(
                    provider.query(canary_query, at),
                    provider.query(baseline_query, at),
                    provider.query(canary_requests, at),
                    provider.query(baseline_requests, at)
                );
                let mut answers = Vec::with_capacity(4);
                for result in [ce, be, cr, br] {
                    match result {
                        Ok(measurement) => answers.push(measurement),
                        Err(e) => return provider_error(&e, at),
                    }
                }
                let counts = match judge.stratify_by.as_deref() {
                    Some(label) => strata::read(&answers, label),
                    None => strata::read_totals(&answers),
                };
                let (canary_strata, baseline_strata) = match counts {
                    Ok(Some(counts)) => counts,
                    Ok(None) => return no_data_verdict(metric, "every count query", at),
                    Err(reason) => return error(at, format!("sequential: {reason}")),
                };
                let test = match CountTest::new(count_config(judge, &context)) {
                    Ok(test) => test,
                    Err(e) => return error(at, format!("sequential: {e}")),
                };
                let mut state: CountState = context
                    .prior_state
                    .and_then(|v| serde_json::from_value(v.clone()).ok())
                    .unwrap_or_default();
                let update = if judge.stratify_by.is_some() {
                    test.update_stratified(&mut state, &canary_strata, &baseline_strata)
                } else {
                    let total = |strata: &[StratumCounts]| {
                        strata
                            .iter()
                            .fold(StratumCounts::default(), |sum, s| StratumCounts {
                                errors: sum.errors.saturating_add(s.errors),
                                requests: sum.requests.saturating_add(s.requests),
                            })
                    };
                    let (canary, baseline) = (total(&canary_strata), total(&baseline_strata));
                    test.update(
                        &mut state,
                        &CountIncrement {
                            canary_errors: canary.errors,
                            canary_requests: canary.requests,
                            baseline_errors: baseline.errors,
                            baseline_requests: baseline.requests,
                        },
                    )
                };
                if let Err(e) = update {
                    return error(at, format!("sequential: {e}"));
                }
                let report = test.evaluate(&mut state, context.is_last);
                let value = Some(format!(
                    "canary {}/{} baseline {}/{}",
                    state.canary_errors,
                    state.canary_requests,
                    state.baseline_errors,
                    state.baseline_requests
                ));
                let state_json = serde_json::to_value(&state).unwrap_or_default();
                verdict_of(
                    report.decision,
                    pass_early,
                    at,
                    value,
                    report.reason,
                    state_json,
                )
            }
            SequentialTest::Latency => {
                let (canary, baseline) = futures::join!(
                    provider.query(canary_query, at),
                    provider.query(baseline_query, at)
                );
                let (canary, baseline) = match (canary, baseline) {
                    (Ok(c), Ok(b)) => (c, b),
                    (Err(e), _) | (_, Err(e)) => return provider_error(&e, at),
                };
                let increment = match histogram_increment(&canary, &baseline) {
                    Ok(Some(increment)) => increment,
                    Ok(None) => return no_data_verdict(metric, "the bucket queries", at),
                    Err(reason) => return error(at, reason),
                };
                let config = HistogramTestConfig {
                    counts: count_config(judge, &context),
                    bounds: judge.slow_threshold_seconds.into_iter().collect(),
                    ..HistogramTestConfig::default()
                };
                let test = match HistogramTest::new(config) {
                    Ok(test) => test,
                    Err(e) => return error(at, format!("sequential: {e}")),
                };
                let mut state: HistogramState = context
                    .prior_state
                    .and_then(|v| serde_json::from_value(v.clone()).ok())
                    .unwrap_or_default();
                if let Err(e) = test.update(&mut state, &increment) {
                    return error(at, format!("sequential: {e}"));
                }
                let report = match test.evaluate(&mut state, context.is_last) {
                    Ok(report) => report,
                    Err(e) => return error(at, format!("sequential: {e}")),
                };
                // Slow and total requests of each arm at the first bound, as errorCounts
                // writes its counts: a report draws both arms' slow shares from it.
                let value = state.per_bound.first().map(|slow| {
                    format!(
                        "canary {}/{} baseline {}/{}",
                        slow.canary_errors,
                        slow.canary_requests,
                        slow.baseline_errors,
                        slow.baseline_requests
                    )
                });
                let state_json = serde_json::to_value(&state).unwrap_or_default();
                verdict_of(
                    report.decision,
                    pass_early,
                    at,
                    value,
                    report.reason,
                    state_json,
                )
            }
        }
    }

    /// Aligns the `le` buckets of both arms: per-interval cumulative counts, +Inf last.
    fn histogram_increment(
        canary: &Measurement,
        baseline: &Measurement,
    ) -> Result<Option<HistogramIncrement>, String> {
        fn buckets(m: &Measurement, arm: &str) -> Result<Vec<(f64, u64)>, String> {
            let samples = match m {
                Measurement::NoData { .. } => return Ok(Vec::new()),
                Measurement::Vector(samples) => samples,
                other => {
                    return Err(format!(
                        "the {arm} bucket query must return a vector by `le`, got {:?}",
                        other.result_type()
                    ));
                }
            };
            if samples.len() > MAX_HISTOGRAM_BUCKETS {
                return Err(format!(
                    "the {arm} bucket query returned {} series, more than {MAX_HISTOGRAM_BUCKETS} buckets; aggregate with `sum by (le)`",
                    samples.len()
                ));
            }
            let mut out = Vec::with_capacity(samples.len());
            for sample in samples {
                let Some(le) = sample.labels.get("le") else {
                    return Err(format!(
                        "the {arm} bucket query returned a series without an `le` label; aggregate with `sum by (le)`"
                    ));
                };
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse::<f64>().map_err(|_| {
                        format!(
                            "the {arm} bucket query has le={:?}",
                            crate::analysis::provider::bounded(le)
                        )
                    })?
                };
                let count = if sample.value.is_finite() && sample.value > 0.0 {
                    sample.value.round() as u64
                } else {
                    0
                };
                out.push((bound, count));
            }
            out.sort_by(|a, b| a.0.total_cmp(&b.0));
            Ok(out)
        }
        let canary = buckets(canary, "canary")?;
        let baseline = buckets(baseline, "baseline")?;
        if canary.is_empty() && baseline.is_empty() {
            return Ok(None);
        }
        let bounds: Vec<f64> = if baseline.is_empty() {
            canary.iter().map(|(b, _)| *b).collect()
        } else {
            baseline.iter().map(|(b, _)| *b).collect()
        };
        let align = |arm: &[(f64, u64)]| -> Vec<u64> {
            bounds
                .iter()
                .map(|b| arm.iter().find(|(le, _)| le == b).map_or(0, |(_, c)| *c))
                .collect()
        };
        Ok(Some(HistogramIncrement {
            canary: align(&canary),
            baseline: align(&baseline),
            bounds,
        }))
    }
}

mod strata {
    //! Reading the error-count test's four answers as per-stratum counts.

    use std::collections::BTreeMap;

    use crate::analysis::judge::sequential::{MAX_STRATA, StratumCounts};
    use crate::analysis::provider::{Measurement, SingleValue, bounded};

    /// Canary and baseline strata, or None when every query had no data.
    pub(super) type ArmCounts = Option<(Vec<StratumCounts>, Vec<StratumCounts>)>;

    const QUERIES: [&str; 4] = [
        "canaryQuery",
        "baselineQuery",
        "canaryRequestsQuery",
        "baselineRequestsQuery",
    ];

    /// A counter increase as a whole count: Prometheus' `increase()` extrapolates, so round.
    fn count(value: f64) -> u64 {
        if value.is_finite() && value > 0.0 {
            value.round() as u64
        } else {
            0
        }
    }

    /// The four answers as one stratum per arm (each a single value or no data).
    pub(super) fn read_totals(answers: &[Measurement]) -> Result<ArmCounts, String> {
        let mut values = Vec::with_capacity(4);
        for (answer, query) in answers.iter().zip(QUERIES) {
            match answer.single_value() {
                Ok(SingleValue::NoData) => values.push(None),
                Ok(SingleValue::Finite { value, .. }) => values.push(Some(count(value))),
                Ok(_) => values.push(Some(0)),
                Err(e) => return Err(format!("{query}: {e}")),
            }
        }
        if values.iter().all(Option::is_none) {
            return Ok(None);
        }
        let value = |i: usize| values.get(i).copied().flatten().unwrap_or(0);
        // Prometheus' increase() may extrapolate errors past requests by a rounding step.
        let stratum = |errors: u64, requests: u64| StratumCounts {
            errors: errors.min(requests),
            requests,
        };
        Ok(Some((
            vec![stratum(value(0), value(2))],
            vec![stratum(value(1), value(3))],
        )))
    }

    /// The four answers as series by `label`: one stratum per value of the label in each arm
    /// (at most [`MAX_STRATA`]). A stratum with errors but no requests series counts its
    /// errors as its requests; a series without the label and value 0 (`or vector(0)`) is no
    /// errors.
    pub(super) fn read(answers: &[Measurement], label: &str) -> Result<ArmCounts, String> {
        let mut arms: Vec<BTreeMap<String, u64>> = Vec::with_capacity(4);
        for (answer, query) in answers.iter().zip(QUERIES) {
            let mut by_value = BTreeMap::new();
            let samples = match answer {
                Measurement::NoData { .. } => &Vec::new(),
                Measurement::Vector(samples) => samples,
                Measurement::Scalar { value, .. } if count(*value) == 0 => &Vec::new(),
                other => {
                    return Err(format!(
                        "{query} must return a vector by `{}` for stratifyBy, got {:?}",
                        bounded(label),
                        other.result_type()
                    ));
                }
            };
            if samples.len() > MAX_STRATA {
                return Err(format!(
                    "{query} returned {} series, more than {MAX_STRATA} strata; stratify by a label with fewer values",
                    samples.len()
                ));
            }
            for sample in samples {
                match sample.labels.get(label) {
                    Some(value) => {
                        *by_value.entry(value.clone()).or_insert(0) += count(sample.value);
                    }
                    None if count(sample.value) == 0 => {}
                    None => {
                        return Err(format!(
                            "{query} returned a series without the `{}` label; aggregate with `sum by ({}) (...)`",
                            bounded(label),
                            bounded(label)
                        ));
                    }
                }
            }
            arms.push(by_value);
        }
        if answers
            .iter()
            .all(|a| matches!(a, Measurement::NoData { .. }))
        {
            return Ok(None);
        }
        let arm = |errors: &BTreeMap<String, u64>, requests: &BTreeMap<String, u64>| {
            let mut keys: Vec<&String> = requests.keys().chain(errors.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .map(|key| {
                    let errors = errors.get(key).copied().unwrap_or(0);
                    let requests = requests.get(key).copied().unwrap_or(0).max(errors);
                    StratumCounts { errors, requests }
                })
                .collect::<Vec<_>>()
        };
        let canary = arm(&arms[0], &arms[2]);
        let baseline = arm(&arms[1], &arms[3]);
        if canary.len() > MAX_STRATA || baseline.len() > MAX_STRATA {
            return Err(format!(
                "more than {MAX_STRATA} strata in one arm; stratify by a label with fewer values"
            ));
        }
        Ok(Some((canary, baseline)))
    }
}

#[cfg(test)]
mod strata_tests {
    use jiff::Timestamp;

    use super::strata::{read, read_totals};
    use crate::analysis::judge::sequential::StratumCounts;
    use crate::analysis::provider::{Measurement, ResultType, VectorSample};

    fn by_pod(series: &[(&str, f64)]) -> Measurement {
        Measurement::Vector(
            series
                .iter()
                .map(|(pod, value)| VectorSample {
                    labels: [("pod".to_owned(), (*pod).to_owned())].into(),
                    at: Timestamp::UNIX_EPOCH,
                    value: *value,
                    sample_count: None,
                })
                .collect(),
        )
    }

    fn counts(pairs: &[(u64, u64)]) -> Vec<StratumCounts> {
        pairs
            .iter()
            .map(|&(errors, requests)| StratumCounts { errors, requests })
            .collect()
    }

    #[test]
    fn series_by_label_become_strata_and_missing_error_series_are_zero() {
        let answers = [
            by_pod(&[("c-1", 3.0), ("c-2", 0.4)]),
            by_pod(&[("b-1", 1.0)]),
            by_pod(&[("c-1", 100.0), ("c-2", 99.6), ("c-3", 50.0)]),
            by_pod(&[("b-1", 200.0), ("b-2", 200.0)]),
        ];
        let (canary, baseline) = read(&answers, "pod").expect("valid").expect("data");
        assert_eq!(canary, counts(&[(3, 100), (0, 100), (0, 50)]));
        assert_eq!(baseline, counts(&[(1, 200), (0, 200)]));
        // Totals of the same answers without stratifyBy is an error: several series.
        assert!(read_totals(&answers).is_err());
    }

    #[test]
    fn a_series_without_the_label_or_too_many_strata_is_an_error_naming_the_query() {
        let mut unlabelled = by_pod(&[("c-1", 3.0)]);
        if let Measurement::Vector(samples) = &mut unlabelled {
            samples[0].labels.clear();
        }
        let answers = [
            unlabelled,
            by_pod(&[]),
            by_pod(&[("c-1", 10.0)]),
            by_pod(&[("b-1", 10.0)]),
        ];
        let error = read(&answers, "pod").expect_err("no label");
        assert!(
            error.contains("canaryQuery") && error.contains("`pod`"),
            "{error}"
        );

        let many: Vec<(String, f64)> = (0..65).map(|i| (format!("p{i}"), 1.0)).collect();
        let many: Vec<(&str, f64)> = many.iter().map(|(p, v)| (p.as_str(), *v)).collect();
        let answers = [
            by_pod(&[]),
            by_pod(&[]),
            by_pod(&many),
            by_pod(&[("b-1", 10.0)]),
        ];
        let error = read(&answers, "pod").expect_err("too many");
        assert!(
            error.contains("canaryRequestsQuery") && error.contains("64"),
            "{error}"
        );
    }

    #[test]
    fn no_data_everywhere_is_no_data() {
        let none = || Measurement::NoData {
            result_type: ResultType::Vector,
        };
        let answers = [none(), none(), none(), none()];
        assert_eq!(read(&answers, "pod"), Ok(None));
        assert_eq!(read_totals(&answers), Ok(None));
    }
}

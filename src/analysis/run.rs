//! The AnalysisRun lifecycle, as pure functions of (spec, status, now).
//!
//! `plan` says which measurements are due and when the next one will be; the I/O shell takes
//! them, judges them, and hands each verdict to `record`. The limits mean exactly this:
//!
//! | field | the metric ends … | default |
//! | --- | --- | --- |
//! | `failureLimit` | Failed when Failed measurements **exceed** it (0: the first failure) | 0 |
//! | `inconclusiveLimit` | Inconclusive when Inconclusive measurements **exceed** it | 0 |
//! | `consecutiveErrorLimit` | Error when errors in a row **exceed** it (4: the fifth) | 4 |
//! | `count` | after that many measurements: Successful if any succeeded, otherwise Inconclusive (or Error when every one was an error) | 1 without `interval`, unbounded with it |
//!
//! A measurement whose phase is Running (a sequential test that has not decided yet) counts
//! toward `count` but is neither a success, a failure nor an error.
//!
//! A metric's first measurement is due `initialDelay` after the run starts; each next one
//! `interval` after the previous one was taken. A judge may also end a metric early with a
//! decisive verdict (the sequential judge's early pass). The run fails as soon as one deciding
//! (non-dry-run) metric fails; otherwise it completes when every deciding metric has, with the
//! worst of their phases (Error, then Inconclusive, then Successful). A run told to terminate
//! before it completed is Terminated, never Successful.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::duration::{DurationError, parse_duration};
use crate::api::{
    AnalysisPhase, AnalysisRunSpec, AnalysisRunStatus, MeasurementRecord, Metric, MetricResult,
};

/// Errors over a consecutive run that end a metric in Error, unless the metric says otherwise.
pub const DEFAULT_CONSECUTIVE_ERROR_LIMIT: i32 = 4;
/// Measurements kept per metric in a stored status; the counters keep the totals.
pub const STORED_MEASUREMENTS_PER_METRIC: usize = 10;

/// Why a run could not be planned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    /// A duration field of a metric does not parse.
    #[error("metrics[{index}] ({metric}).{field}: {source}")]
    ParseMetricDuration {
        /// Index of the metric.
        index: usize,
        /// Name of the metric.
        metric: String,
        /// The field.
        field: &'static str,
        /// The cause.
        source: DurationError,
    },
    /// A verdict was recorded for a metric the run does not have.
    #[error("record a measurement for unknown metric {metric:?}")]
    RecordUnknownMetric {
        /// The metric name given.
        metric: String,
    },
}

/// When a metric is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricSchedule {
    /// Time between measurements; None: measured once.
    pub interval: Option<Duration>,
    /// Wait before the first measurement.
    pub initial_delay: Duration,
    /// How many measurements; None: until the run is stopped.
    pub count: Option<u32>,
}

impl MetricSchedule {
    /// Reads a metric's timing fields.
    pub fn of(index: usize, metric: &Metric) -> Result<Self, RunError> {
        let parse = |field: &'static str, text: &Option<String>| {
            text.as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|source| RunError::ParseMetricDuration {
                    index,
                    metric: metric.name.clone(),
                    field,
                    source,
                })
        };
        let interval = parse("interval", &metric.interval)?.filter(|d| !d.is_zero());
        let initial_delay = parse("initialDelay", &metric.initial_delay)?.unwrap_or_default();
        let count = match (metric.count, interval) {
            (Some(n), _) => Some(n.max(1) as u32),
            (None, None) => Some(1),
            (None, Some(_)) => None,
        };
        Ok(Self {
            interval,
            initial_delay,
            count,
        })
    }
}

/// A measurement the shell should take now.
#[derive(Debug, Clone, PartialEq)]
pub struct DueMeasurement {
    /// The metric's name.
    pub metric: String,
    /// Index of the metric in the spec.
    pub index: usize,
    /// The time the measurement was due: a replay queries Prometheus at exactly this time.
    pub due_at: Timestamp,
}

/// What the shell should do next.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPlan {
    /// The status with phases brought up to date.
    pub status: AnalysisRunStatus,
    /// Measurements due now.
    pub due: Vec<DueMeasurement>,
    /// When the next measurement after those falls due; None when the run is complete.
    pub next_measurement_at: Option<Timestamp>,
}

fn result_for<'a>(status: &'a AnalysisRunStatus, name: &str) -> Option<&'a MetricResult> {
    status.metric_results.iter().find(|r| r.name == name)
}

fn next_due(
    schedule: &MetricSchedule,
    result: &MetricResult,
    started_at: Timestamp,
) -> Option<Timestamp> {
    if result.phase.is_completed() {
        return None;
    }
    if let Some(count) = schedule.count
        && result.count >= count as i32
    {
        return None;
    }
    match (result.measurements.last(), schedule.interval) {
        (None, _) => Some(started_at + schedule.initial_delay),
        (Some(last), Some(interval)) => Some(last.started_at.0 + interval),
        (Some(_), None) => None,
    }
}

/// Brings the status up to date at `now`: starts the run, applies `terminate`, completes it
/// when its metrics have, and lists the measurements due.
pub fn plan(
    spec: &AnalysisRunSpec,
    status: &AnalysisRunStatus,
    now: Timestamp,
) -> Result<RunPlan, RunError> {
    let schedules: Vec<MetricSchedule> = spec
        .metrics
        .iter()
        .enumerate()
        .map(|(i, m)| MetricSchedule::of(i, m))
        .collect::<Result<_, _>>()?;
    let mut status = status.clone();
    let started_at = status.started_at.get_or_insert(Time(now)).0;
    for metric in &spec.metrics {
        if result_for(&status, &metric.name).is_none() {
            status.metric_results.push(MetricResult {
                name: metric.name.clone(),
                phase: AnalysisPhase::Running,
                dry_run: metric.dry_run,
                ..MetricResult::default()
            });
        }
    }
    update_run_phase(spec, &mut status, now);
    let mut due = Vec::new();
    let mut next_measurement_at: Option<Timestamp> = None;
    if !status.phase.unwrap_or_default().is_completed() {
        for (index, (metric, schedule)) in spec.metrics.iter().zip(&schedules).enumerate() {
            let Some(result) = result_for(&status, &metric.name) else {
                continue;
            };
            let Some(at) = next_due(schedule, result, started_at) else {
                continue;
            };
            if at <= now {
                due.push(DueMeasurement {
                    metric: metric.name.clone(),
                    index,
                    due_at: at,
                });
                // After this one, the next is an interval later (when there is one).
                if let Some(interval) = schedule.interval {
                    let remaining = schedule.count.is_none_or(|c| result.count + 1 < c as i32);
                    if remaining {
                        next_measurement_at = earliest(next_measurement_at, at.max(now) + interval);
                    }
                }
            } else {
                next_measurement_at = earliest(next_measurement_at, at);
            }
        }
    }
    Ok(RunPlan {
        status,
        due,
        next_measurement_at,
    })
}

fn earliest(a: Option<Timestamp>, b: Timestamp) -> Option<Timestamp> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// Records one judged measurement and updates the metric's and the run's phase.
///
/// `decisive` marks a Successful verdict that ends the metric at once (a sequential judge's
/// early pass). `keep` bounds the stored history of the metric.
pub fn record(
    spec: &AnalysisRunSpec,
    status: &mut AnalysisRunStatus,
    metric: &str,
    measurement: MeasurementRecord,
    decisive: bool,
    keep: usize,
    now: Timestamp,
) -> Result<(), RunError> {
    let (index, definition) = spec
        .metrics
        .iter()
        .enumerate()
        .find(|(_, m)| m.name == metric)
        .ok_or_else(|| RunError::RecordUnknownMetric {
            metric: metric.to_owned(),
        })?;
    let schedule = MetricSchedule::of(index, definition)?;
    let Some(result) = status.metric_results.iter_mut().find(|r| r.name == metric) else {
        return Err(RunError::RecordUnknownMetric {
            metric: metric.to_owned(),
        });
    };
    result.count += 1;
    match measurement.phase {
        AnalysisPhase::Successful => result.successful += 1,
        AnalysisPhase::Failed => result.failed += 1,
        AnalysisPhase::Inconclusive => result.inconclusive += 1,
        // A sequential test that has not decided yet: evidence taken, no verdict of its own.
        AnalysisPhase::Running => {}
        _ => result.error += 1,
    }
    if measurement.phase == AnalysisPhase::Error {
        result.consecutive_error += 1;
    } else {
        result.consecutive_error = 0;
    }
    let verdict = measurement.phase;
    let reason = measurement.reason.clone();
    result.measurements.push(measurement);
    if result.measurements.len() > keep {
        let excess = result.measurements.len() - keep;
        result.measurements.drain(..excess);
    }
    let failure_limit = definition.failure_limit.unwrap_or(0);
    let inconclusive_limit = definition.inconclusive_limit.unwrap_or(0);
    let error_limit = definition
        .consecutive_error_limit
        .unwrap_or(DEFAULT_CONSECUTIVE_ERROR_LIMIT);
    let finished = schedule.count.is_some_and(|c| result.count >= c as i32);
    let reason = reason.unwrap_or_default();
    let (phase, message) = if result.failed > failure_limit {
        (
            AnalysisPhase::Failed,
            format!(
                "{} failed measurement(s), more than failureLimit {failure_limit}; last: {reason}",
                result.failed
            ),
        )
    } else if result.consecutive_error > error_limit {
        (
            AnalysisPhase::Error,
            format!(
                "{} errors in a row, more than consecutiveErrorLimit {error_limit}; last: {reason}",
                result.consecutive_error
            ),
        )
    } else if result.inconclusive > inconclusive_limit {
        (
            AnalysisPhase::Inconclusive,
            format!(
                "{} inconclusive measurement(s), more than inconclusiveLimit {inconclusive_limit}; last: {reason}",
                result.inconclusive
            ),
        )
    } else if decisive && verdict == AnalysisPhase::Successful {
        (
            AnalysisPhase::Successful,
            format!("decided early: {reason}"),
        )
    } else if finished {
        if result.successful > 0 {
            (
                AnalysisPhase::Successful,
                format!(
                    "{} of {} measurements successful; last: {reason}",
                    result.successful, result.count
                ),
            )
        } else if result.error == result.count {
            (
                AnalysisPhase::Error,
                format!("no measurement could be taken; last: {reason}"),
            )
        } else {
            (
                AnalysisPhase::Inconclusive,
                format!("no measurement was successful; last: {reason}"),
            )
        }
    } else {
        (AnalysisPhase::Running, reason)
    };
    result.phase = phase;
    result.message = Some(message);
    update_run_phase(spec, status, now);
    Ok(())
}

fn severity(phase: AnalysisPhase) -> u8 {
    match phase {
        AnalysisPhase::Failed => 4,
        AnalysisPhase::Error => 3,
        AnalysisPhase::Inconclusive => 2,
        AnalysisPhase::Terminated => 1,
        _ => 0,
    }
}

fn update_run_phase(spec: &AnalysisRunSpec, status: &mut AnalysisRunStatus, now: Timestamp) {
    if status.phase.is_some_and(AnalysisPhase::is_completed) {
        return;
    }
    let deciding: Vec<&MetricResult> = status
        .metric_results
        .iter()
        .filter(|r| spec.metrics.iter().any(|m| m.name == r.name && !m.dry_run))
        .collect();
    let failed = deciding.iter().find(|r| r.phase == AnalysisPhase::Failed);
    let all_completed = deciding.iter().all(|r| r.phase.is_completed());
    let describe =
        |r: &MetricResult| format!("{}: {}", r.name, r.message.clone().unwrap_or_default());
    let (phase, message) = if let Some(failed) = failed {
        (AnalysisPhase::Failed, Some(describe(failed)))
    } else if all_completed {
        match deciding.iter().max_by_key(|r| severity(r.phase)) {
            Some(worst) if worst.phase != AnalysisPhase::Successful => {
                (worst.phase, Some(describe(worst)))
            }
            Some(_) => (
                AnalysisPhase::Successful,
                Some("all metrics successful".to_owned()),
            ),
            None => (
                AnalysisPhase::Successful,
                Some("every metric is dry-run; nothing decides".to_owned()),
            ),
        }
    } else if spec.terminate {
        (
            AnalysisPhase::Terminated,
            Some("terminated before the metrics completed".to_owned()),
        )
    } else {
        (AnalysisPhase::Running, None)
    };
    if phase.is_completed() {
        status.completed_at = Some(Time(now));
        for result in &mut status.metric_results {
            if !result.phase.is_completed() {
                result.phase = AnalysisPhase::Terminated;
            }
        }
    }
    status.phase = Some(phase);
    status.message = message;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{MetricProvider, NoDataPolicy};

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).expect("valid")
    }

    fn metric(name: &str) -> Metric {
        Metric {
            name: name.to_owned(),
            provider: MetricProvider::default(),
            success_condition: Some("result < 1".to_owned()),
            no_data: Some(NoDataPolicy::Inconclusive),
            ..Metric::default()
        }
    }

    fn spec(metrics: Vec<Metric>) -> AnalysisRunSpec {
        AnalysisRunSpec {
            metrics,
            ..AnalysisRunSpec::default()
        }
    }

    fn measurement(phase: AnalysisPhase, t: i64) -> MeasurementRecord {
        MeasurementRecord {
            phase,
            started_at: Time(at(t)),
            value: Some("0.5".to_owned()),
            reason: Some(format!("{phase:?} at {t}")),
        }
    }

    /// Drives a run with the verdicts given per measurement; returns the final status and the
    /// times measurements were taken.
    fn drive(spec: &AnalysisRunSpec, verdicts: &[AnalysisPhase]) -> (AnalysisRunStatus, Vec<i64>) {
        let mut status = AnalysisRunStatus::default();
        let mut now = at(0);
        let mut taken = Vec::new();
        let mut next = verdicts.iter();
        for _ in 0..1000 {
            let plan = plan(spec, &status, now).expect("plan");
            status = plan.status;
            for due in plan.due {
                let Some(verdict) = next.next() else {
                    return (status, taken);
                };
                taken.push(due.due_at.as_second() - 1_700_000_000);
                record(
                    spec,
                    &mut status,
                    &due.metric,
                    measurement(*verdict, due.due_at.as_second() - 1_700_000_000),
                    false,
                    10,
                    now,
                )
                .expect("record");
            }
            if status.phase.unwrap_or_default().is_completed() {
                return (status, taken);
            }
            match plan.next_measurement_at {
                Some(t) => now = t,
                None => {
                    // Nothing scheduled: only `terminate` could change things.
                    let plan = super::plan(spec, &status, now).expect("plan");
                    return (plan.status, taken);
                }
            }
        }
        panic!("run did not end");
    }

    #[test]
    fn single_measurement_without_interval() {
        let spec = spec(vec![metric("errors")]);
        let (status, taken) = drive(&spec, &[AnalysisPhase::Successful]);
        assert_eq!(status.phase, Some(AnalysisPhase::Successful));
        assert_eq!(taken, [0]);
    }

    #[test]
    fn interval_initial_delay_and_count_set_the_measurement_times() {
        let mut m = metric("errors");
        m.interval = Some("1m".to_owned());
        m.initial_delay = Some("30s".to_owned());
        m.count = Some(3);
        let (status, taken) = drive(&spec(vec![m]), &[AnalysisPhase::Successful; 5]);
        assert_eq!(taken, [30, 90, 150]);
        assert_eq!(status.phase, Some(AnalysisPhase::Successful));
        assert_eq!(status.metric_results[0].count, 3);
    }

    #[test]
    fn failure_limit_is_exceeded_not_reached() {
        let mut m = metric("errors");
        m.interval = Some("1m".to_owned());
        m.count = Some(5);
        m.failure_limit = Some(1);
        use AnalysisPhase::*;
        let (status, _) = drive(
            &spec(vec![m.clone()]),
            &[Failed, Successful, Successful, Successful, Successful],
        );
        assert_eq!(
            status.phase,
            Some(Successful),
            "one failure is within failureLimit 1"
        );
        let (status, taken) = drive(
            &spec(vec![m]),
            &[Failed, Successful, Failed, Successful, Successful],
        );
        assert_eq!(
            status.phase,
            Some(Failed),
            "two failures exceed failureLimit 1"
        );
        assert_eq!(
            taken.len(),
            3,
            "the run fails at once, without the remaining measurements"
        );
        assert!(
            status
                .message
                .as_deref()
                .unwrap_or("")
                .starts_with("errors: 2 failed measurement(s), more than failureLimit 1")
        );
    }

    #[test]
    fn default_failure_limit_fails_on_first_failure() {
        let mut m = metric("errors");
        m.interval = Some("1m".to_owned());
        m.count = Some(5);
        let (status, taken) = drive(
            &spec(vec![m]),
            &[AnalysisPhase::Successful, AnalysisPhase::Failed],
        );
        assert_eq!(status.phase, Some(AnalysisPhase::Failed));
        assert_eq!(taken, [0, 60]);
    }

    #[test]
    fn consecutive_errors_beyond_the_limit_end_in_error_and_a_success_resets_the_streak() {
        let mut m = metric("errors");
        m.interval = Some("10s".to_owned());
        m.count = Some(20);
        m.consecutive_error_limit = Some(2);
        use AnalysisPhase::*;
        let (status, _) = drive(
            &spec(vec![m.clone()]),
            &[Error, Error, Successful, Error, Error, Error],
        );
        assert_eq!(status.phase, Some(Error));
        assert_eq!(status.metric_results[0].error, 5);
        assert_eq!(status.metric_results[0].count, 6);
    }

    #[test]
    fn inconclusive_limit_and_all_inconclusive_runs() {
        let mut m = metric("errors");
        m.interval = Some("10s".to_owned());
        m.count = Some(3);
        m.inconclusive_limit = Some(1);
        use AnalysisPhase::*;
        let (status, _) = drive(
            &spec(vec![m.clone()]),
            &[Inconclusive, Successful, Successful],
        );
        assert_eq!(status.phase, Some(Successful));
        let (status, _) = drive(&spec(vec![m]), &[Inconclusive, Inconclusive]);
        assert_eq!(status.phase, Some(Inconclusive));
    }

    #[test]
    fn dry_run_metrics_are_measured_but_never_decide() {
        let mut dry = metric("latency");
        dry.dry_run = true;
        let spec = spec(vec![dry, metric("errors")]);
        let (status, taken) = drive(&spec, &[AnalysisPhase::Failed, AnalysisPhase::Successful]);
        assert_eq!(taken.len(), 2);
        assert_eq!(status.metric_results[0].phase, AnalysisPhase::Failed);
        assert_eq!(status.phase, Some(AnalysisPhase::Successful));
    }

    #[test]
    fn worst_phase_wins_once_all_metrics_complete() {
        let spec = spec(vec![metric("a"), metric("b")]);
        let (status, _) = drive(
            &spec,
            &[AnalysisPhase::Successful, AnalysisPhase::Inconclusive],
        );
        assert_eq!(status.phase, Some(AnalysisPhase::Inconclusive));
        assert!(status.message.as_deref().unwrap_or("").starts_with("b: "));
    }

    #[test]
    fn terminated_run_is_never_successful_and_takes_no_more_measurements() {
        let mut m = metric("errors");
        m.interval = Some("1m".to_owned());
        let mut spec = spec(vec![m]);
        let (status, taken) = drive(&spec, &[AnalysisPhase::Successful; 3]);
        assert_eq!(taken.len(), 3);
        assert_eq!(status.phase, Some(AnalysisPhase::Running));
        spec.terminate = true;
        let plan = plan(&spec, &status, at(1000)).expect("plan");
        assert_eq!(plan.status.phase, Some(AnalysisPhase::Terminated));
        assert!(plan.due.is_empty());
        assert_eq!(plan.next_measurement_at, None);
    }

    #[test]
    fn decisive_success_ends_an_unbounded_metric() {
        let mut m = metric("errors");
        m.interval = Some("1m".to_owned());
        let spec = spec(vec![m]);
        let mut status = plan(&spec, &AnalysisRunStatus::default(), at(0))
            .expect("plan")
            .status;
        record(
            &spec,
            &mut status,
            "errors",
            measurement(AnalysisPhase::Successful, 0),
            true,
            10,
            at(0),
        )
        .expect("record");
        assert_eq!(status.phase, Some(AnalysisPhase::Successful));
        assert!(
            status.metric_results[0]
                .message
                .as_deref()
                .unwrap_or("")
                .starts_with("decided early")
        );
    }

    #[test]
    fn history_is_bounded_but_counters_keep_totals() {
        let mut m = metric("errors");
        m.interval = Some("1s".to_owned());
        m.count = Some(25);
        let spec = spec(vec![m]);
        let mut status = plan(&spec, &AnalysisRunStatus::default(), at(0))
            .expect("plan")
            .status;
        for t in 0..25 {
            record(
                &spec,
                &mut status,
                "errors",
                measurement(AnalysisPhase::Successful, t),
                false,
                10,
                at(t),
            )
            .expect("record");
        }
        assert_eq!(status.metric_results[0].measurements.len(), 10);
        assert_eq!(status.metric_results[0].count, 25);
        assert_eq!(
            status.metric_results[0].measurements[0].started_at,
            Time(at(15))
        );
    }

    #[test]
    fn plan_is_idempotent_and_restart_safe() {
        let mut m = metric("errors");
        m.interval = Some("1m".to_owned());
        m.count = Some(3);
        let spec = spec(vec![m]);
        let first = plan(&spec, &AnalysisRunStatus::default(), at(0)).expect("plan");
        let json = serde_json::to_string(&first.status).expect("json");
        let restored: AnalysisRunStatus = serde_json::from_str(&json).expect("json");
        let again = plan(&spec, &restored, at(0)).expect("plan");
        assert_eq!(first, again);
    }

    #[test]
    fn bad_durations_name_the_metric_and_field() {
        let mut m = metric("errors");
        m.interval = Some("5d".to_owned());
        let error =
            plan(&spec(vec![m]), &AnalysisRunStatus::default(), at(0)).expect_err("invalid");
        assert!(
            error
                .to_string()
                .starts_with("metrics[0] (errors).interval:"),
            "{error}"
        );
        assert!(matches!(
            record(
                &spec(vec![metric("a")]),
                &mut AnalysisRunStatus::default(),
                "b",
                measurement(AnalysisPhase::Successful, 0),
                false,
                10,
                at(0)
            ),
            Err(RunError::RecordUnknownMetric { .. })
        ));
    }
}

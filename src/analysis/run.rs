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
//!
//! Nothing a template says can crash the lifecycle or grow the status without bound: every
//! duration is checked against [`MAX_DURATION`] when the run starts (a run over it ends in
//! Error naming the field), all time arithmetic is checked, every text stored is cut to
//! [`crate::analysis::provider::MAX_TEXT_BYTES`], and [`fit_status_budget`] keeps the serialized status under
//! [`STATUS_BUDGET_BYTES`].

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};

use crate::analysis::judge::mann_whitney::{
    Label, ScoreClass, ScoreThresholds, ScoredMetric, score,
};
use crate::analysis::provider::{bounded_owned, bounded_to};
use crate::api::duration::{DurationError, MAX_DURATION, format_duration, parse_duration};
use crate::api::{
    AnalysisPhase, AnalysisRunSpec, AnalysisRunStatus, InFlightMeasurement, MeasurementRecord,
    Metric, MetricResult, RunScore, ScoreClassification, Scoring,
};

/// Errors over a consecutive run that end a metric in Error, unless the metric says otherwise.
pub const DEFAULT_CONSECUTIVE_ERROR_LIMIT: i32 = 4;
/// Measurements kept per metric in a stored status; the counters keep the totals.
pub const STORED_MEASUREMENTS_PER_METRIC: usize = 10;

/// The status of a run that cannot measure at all (its templates do not make a run, its
/// providers cannot be set up): Error with the reason, so the Rollout shows why instead of
/// waiting forever. Counters and measurements so far are kept. The one builder both platforms
/// use.
pub fn errored_status(
    previous: &AnalysisRunStatus,
    reason: String,
    now: jiff::Timestamp,
) -> AnalysisRunStatus {
    // Whole seconds, as Kubernetes serializes `Time`.
    let at = Time(jiff::Timestamp::from_second(now.as_second()).unwrap_or(now));
    AnalysisRunStatus {
        phase: Some(AnalysisPhase::Error),
        message: Some(reason),
        started_at: previous.started_at.clone().or(Some(MicroTime(at.0))),
        completed_at: Some(at),
        metric_results: previous.metric_results.clone(),
        score: previous.score.clone(),
    }
}

/// The most bytes an AnalysisRun's status may take, serialized as JSON. etcd refuses objects
/// over 1.5 MiB and the spec shares that room; a status that outgrew it could never be written
/// again, so the run would be stuck. 256 KiB leaves the spec more than a megabyte.
pub const STATUS_BUDGET_BYTES: usize = 256 * 1024;

/// The most metrics one run may have: with [`MAX_NAME_BYTES`] names, bounded texts and
/// bounded judge state, fifty metrics fit [`STATUS_BUDGET_BYTES`] (see the worst-case test).
/// Kayenta-style configurations use a few dozen at most.
pub const MAX_METRICS_PER_RUN: usize = 50;

/// The longest metric or group name: 253 bytes, the longest Kubernetes object name. Names are
/// stored in status and in every message about the metric.
pub const MAX_NAME_BYTES: usize = 253;

/// Measurements a metric keeps at least when the status must shrink to fit its budget: the
/// latest and the one before, which a scored round may still need.
const MIN_KEPT_MEASUREMENTS: usize = 2;

/// Texts in status are cut to this when retention alone cannot fit the budget.
const TIGHT_TEXT_BYTES: usize = 256;

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
    /// A duration field of a metric is longer than [`MAX_DURATION`].
    #[error("metrics[{index}] ({metric}).{field}: {value} is over the ceiling of {max} (30 days)")]
    DurationOverCeiling {
        /// Index of the metric.
        index: usize,
        /// Name of the metric.
        metric: String,
        /// The field.
        field: &'static str,
        /// The duration given.
        value: String,
        /// The ceiling.
        max: String,
    },
    /// The run has more metrics than its status can hold.
    #[error("metrics: {count} metrics, at most {max} in one run (its status must stay small)")]
    CountMetrics {
        /// How many metrics the run has.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A metric or group name is too long to store.
    #[error("metrics[{index}].{field}: {length} bytes, at most {max}")]
    MeasureName {
        /// Index of the metric.
        index: usize,
        /// The field (`name` or `mannWhitney.group`).
        field: &'static str,
        /// Its length.
        length: usize,
        /// The limit.
        max: usize,
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
            let parsed = text
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|source| RunError::ParseMetricDuration {
                    index,
                    metric: bounded_owned(metric.name.clone()),
                    field,
                    source,
                })?;
            match parsed {
                Some(duration) if duration > MAX_DURATION => Err(RunError::DurationOverCeiling {
                    index,
                    metric: bounded_owned(metric.name.clone()),
                    field,
                    value: format_duration(duration),
                    max: format_duration(MAX_DURATION),
                }),
                parsed => Ok(parsed),
            }
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

/// `at + duration`, saturating at the end of time instead of overflowing (durations are
/// bounded by [`MAX_DURATION`], so this only matters for times near year 9999).
pub(crate) fn later(at: Timestamp, duration: Duration) -> Timestamp {
    SignedDuration::try_from(duration)
        .ok()
        .and_then(|d| at.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// Checks a run against the bounds its status needs: at most [`MAX_METRICS_PER_RUN`]
/// metrics, names of at most [`MAX_NAME_BYTES`]. The controller runs it before it reads any
/// credential; the lifecycle runs it again before planning.
pub fn check_bounds(spec: &AnalysisRunSpec) -> Result<(), RunError> {
    if spec.metrics.len() > MAX_METRICS_PER_RUN {
        return Err(RunError::CountMetrics {
            count: spec.metrics.len(),
            max: MAX_METRICS_PER_RUN,
        });
    }
    for (index, metric) in spec.metrics.iter().enumerate() {
        let group = metric
            .mann_whitney
            .as_ref()
            .and_then(|j| j.group.as_deref());
        for (field, name) in [
            ("name", Some(metric.name.as_str())),
            ("mannWhitney.group", group),
        ] {
            let length = name.map_or(0, str::len);
            if length > MAX_NAME_BYTES {
                return Err(RunError::MeasureName {
                    index,
                    field,
                    length,
                    max: MAX_NAME_BYTES,
                });
            }
        }
    }
    Ok(())
}

/// Every metric's schedule, after checking the run against the bounds its status needs.
fn schedules_of(spec: &AnalysisRunSpec) -> Result<Vec<MetricSchedule>, RunError> {
    check_bounds(spec)?;
    spec.metrics
        .iter()
        .enumerate()
        .map(|(i, m)| MetricSchedule::of(i, m))
        .collect()
}

/// The plan of a run its spec does not allow to start (or continue): it ends in Error, with
/// the reason naming the field.
fn refuse(status: &AnalysisRunStatus, error: &RunError, now: Timestamp) -> RunPlan {
    let mut status = status.clone();
    if !status.phase.is_some_and(AnalysisPhase::is_completed) {
        status.started_at.get_or_insert(MicroTime(now));
        status.completed_at = Some(Time(now));
        status.phase = Some(AnalysisPhase::Error);
        status.message = Some(bounded_owned(format!("the run cannot start: {error}")));
    }
    RunPlan {
        status,
        due: Vec::new(),
        next_measurement_at: None,
    }
}

fn next_due(
    schedule: &MetricSchedule,
    result: &MetricResult,
    started_at: Timestamp,
) -> Option<Timestamp> {
    if result.phase.is_completed() {
        return None;
    }
    if let Some(in_flight) = &result.in_flight {
        // Started and not judged yet: due again at once, to see whether it has finished.
        return Some(in_flight.started_at.0);
    }
    if let Some(count) = schedule.count
        && result.count >= count as i32
    {
        return None;
    }
    match (result.measurements.last(), schedule.interval) {
        (None, _) => Some(later(started_at, schedule.initial_delay)),
        (Some(last), Some(interval)) => Some(later(last.started_at.0, interval)),
        (Some(_), None) => None,
    }
}

/// Brings the status up to date at `now`: starts the run, applies `terminate`, completes it
/// when its metrics have, and lists the measurements due.
///
/// A spec over the bounds (a duration over [`MAX_DURATION`], too many metrics, a name too
/// long) or with an unreadable duration ends the run in Error, its message naming the field.
pub fn plan(
    spec: &AnalysisRunSpec,
    status: &AnalysisRunStatus,
    now: Timestamp,
) -> Result<RunPlan, RunError> {
    let schedules = match schedules_of(spec) {
        Ok(schedules) => schedules,
        Err(error) => return Ok(refuse(status, &error, now)),
    };
    let mut status = status.clone();
    let started_at = status.started_at.get_or_insert(MicroTime(now)).0;
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
                // After this one, the next is an interval later (when there is one); a
                // measurement in flight is only being checked on.
                if let Some(interval) = schedule.interval.filter(|_| result.in_flight.is_none()) {
                    let remaining = schedule.count.is_none_or(|c| result.count + 1 < c as i32);
                    if remaining {
                        next_measurement_at =
                            earliest(next_measurement_at, later(at.max(now), interval));
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
/// early pass). `keep` bounds the stored history of the metric; the measurement's texts are
/// cut to [`crate::analysis::provider::MAX_TEXT_BYTES`] and the status is kept under
/// [`STATUS_BUDGET_BYTES`].
pub fn record(
    spec: &AnalysisRunSpec,
    status: &mut AnalysisRunStatus,
    metric: &str,
    mut measurement: MeasurementRecord,
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
    measurement.value = measurement.value.map(bounded_owned);
    measurement.reason = measurement.reason.map(bounded_owned);
    let Some(result) = status.metric_results.iter_mut().find(|r| r.name == metric) else {
        return Err(RunError::RecordUnknownMetric {
            metric: metric.to_owned(),
        });
    };
    result.count += 1;
    result.in_flight = None;
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
    let scored = is_scored(spec, definition);
    let (phase, message) = if scored {
        // Judged with the other scored metrics, round by round (see `score_rounds`); only a
        // run of errors ends it on its own.
        if result.consecutive_error > error_limit {
            (
                AnalysisPhase::Error,
                format!(
                    "{} errors in a row, more than consecutiveErrorLimit {error_limit}; last: {reason}",
                    result.consecutive_error
                ),
            )
        } else {
            (AnalysisPhase::Running, reason)
        }
    } else if result.failed > failure_limit {
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
    result.message = Some(bounded_owned(message));
    if scored {
        score_rounds(spec, status);
    }
    update_run_phase(spec, status, now);
    fit_status_budget(status);
    Ok(())
}

/// Marks a metric's next measurement as started and not yet judged (a job metric's Job): until
/// [`record`] judges it, `plan` lists the metric as due so the shell checks on it, and no
/// other measurement of the metric starts.
pub fn start_in_flight(
    status: &mut AnalysisRunStatus,
    metric: &str,
    in_flight: InFlightMeasurement,
) -> Result<(), RunError> {
    let result = status
        .metric_results
        .iter_mut()
        .find(|r| r.name == metric)
        .ok_or_else(|| RunError::RecordUnknownMetric {
            metric: metric.to_owned(),
        })?;
    result.in_flight = Some(InFlightMeasurement {
        job: bounded_owned(in_flight.job),
        ..in_flight
    });
    Ok(())
}

fn serialized_size<T: serde::Serialize>(value: &T) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |bytes| bytes.len())
}

/// Keeps the serialized status under [`STATUS_BUDGET_BYTES`]: first by dropping the oldest
/// stored measurements (down to [`MIN_KEPT_MEASUREMENTS`] per metric; the counters keep the
/// totals), then by cutting its texts to [`TIGHT_TEXT_BYTES`], then by keeping one measurement
/// per metric. With the run's own bounds ([`MAX_METRICS_PER_RUN`], [`MAX_NAME_BYTES`]) that
/// always fits.
pub fn fit_status_budget(status: &mut AnalysisRunStatus) {
    let mut size = serialized_size(status);
    while size > STATUS_BUDGET_BYTES {
        let Some(fullest) = status
            .metric_results
            .iter_mut()
            .filter(|r| r.measurements.len() > MIN_KEPT_MEASUREMENTS)
            .max_by_key(|r| r.measurements.len())
        else {
            break;
        };
        let dropped = fullest.measurements.remove(0);
        // The record and the comma that separated it.
        size = size.saturating_sub(serialized_size(&dropped) + 1);
    }
    if size <= STATUS_BUDGET_BYTES {
        return;
    }
    let tighten = |text: &mut Option<String>| {
        if let Some(t) = text.as_mut()
            && t.len() > TIGHT_TEXT_BYTES
        {
            *t = bounded_to(t, TIGHT_TEXT_BYTES).into_owned();
        }
    };
    tighten(&mut status.message);
    if let Some(score) = status.score.as_mut() {
        score.reason = bounded_to(&score.reason, TIGHT_TEXT_BYTES).into_owned();
    }
    for result in &mut status.metric_results {
        tighten(&mut result.message);
        for m in &mut result.measurements {
            tighten(&mut m.value);
            tighten(&mut m.reason);
        }
    }
    if serialized_size(status) <= STATUS_BUDGET_BYTES {
        return;
    }
    for result in &mut status.metric_results {
        let excess = result.measurements.len().saturating_sub(1);
        result.measurements.drain(..excess);
    }
}

/// Whether `metric` is judged by the run's score rather than on its own.
fn is_scored(spec: &AnalysisRunSpec, metric: &Metric) -> bool {
    spec.scoring.is_some() && metric.mann_whitney.is_some() && !metric.dry_run
}

/// The scored metrics' results, in spec order.
fn scored_results<'a>(
    spec: &AnalysisRunSpec,
    status: &'a AnalysisRunStatus,
) -> Vec<(&'a MetricResult, Option<u32>, String)> {
    spec.metrics
        .iter()
        .enumerate()
        .filter(|(_, m)| is_scored(spec, m))
        .filter_map(|(index, m)| {
            let result = result_for(status, &m.name)?;
            let count = MetricSchedule::of(index, m).ok().and_then(|s| s.count);
            let group = m
                .mann_whitney
                .as_ref()
                .and_then(|j| j.group.clone())
                .unwrap_or_else(|| m.name.clone());
            Some((result, count, group))
        })
        .collect()
}

/// The `round`-th measurement (1-based) of a metric, or its oldest stored one when that has
/// been dropped from status.
fn measurement_of_round(result: &MetricResult, round: i32) -> Option<&MeasurementRecord> {
    let back = usize::try_from(result.count - round).ok()?;
    let len = result.measurements.len();
    result.measurements.get(len.saturating_sub(back + 1))
}

/// The score of one round of the scored metrics.
fn score_round(
    scoring: &Scoring,
    metrics: &[(&MetricResult, Option<u32>, String)],
    round: i32,
) -> RunScore {
    let thresholds = ScoreThresholds {
        pass: scoring
            .pass_threshold
            .unwrap_or(Scoring::DEFAULT_PASS_THRESHOLD),
        marginal: scoring
            .marginal_threshold
            .unwrap_or(Scoring::DEFAULT_MARGINAL_THRESHOLD),
    };
    let scored: Vec<ScoredMetric> = metrics
        .iter()
        .map(|(result, _, group)| {
            let record = measurement_of_round(result, round);
            let label = match record.map(|r| r.phase) {
                Some(AnalysisPhase::Successful) => Label::Pass,
                Some(AnalysisPhase::Failed) => Label::High,
                // No data, an error, or nothing recorded: no evidence either way.
                _ => Label::Nodata,
            };
            ScoredMetric {
                name: result.name.clone(),
                groups: vec![group.clone()],
                label,
                critical: record.is_some_and(|r| r.critical),
                muted: false,
            }
        })
        .collect();
    let summary = score(&scored, &scoring.group_weights, &thresholds);
    let critical_failed = scored.iter().any(|m| m.critical && m.label != Label::Pass);
    let without_data = scored.iter().filter(|m| m.label == Label::Nodata).count();
    // Kayenta scores a round with half its metrics empty as 0; vigil does not fail a canary
    // for missing data (that is what noData and mustHaveData say), so such a round is unscored.
    let classification = if !critical_failed && without_data * 2 >= scored.len() {
        ScoreClassification::NoData
    } else {
        match summary.classification {
            ScoreClass::Pass => ScoreClassification::Pass,
            ScoreClass::Marginal => ScoreClassification::Marginal,
            ScoreClass::Fail => ScoreClassification::Fail,
        }
    };
    let verdicts: Vec<String> = scored
        .iter()
        .map(|m| format!("{} {:?}", m.name, m.label))
        .collect();
    RunScore {
        round,
        score: summary.score,
        classification,
        group_scores: summary.group_scores,
        reason: bounded_owned(format!(
            "round {round}: {} ({})",
            if classification == ScoreClassification::NoData {
                format!(
                    "{without_data} of {} metrics without data, not scored",
                    scored.len()
                )
            } else {
                summary.reason
            },
            verdicts.join(", ")
        )),
    }
}

/// Scores every round the scored metrics have all reached and not yet scored; a failing
/// round fails them at once, the last round decides them.
fn score_rounds(spec: &AnalysisRunSpec, status: &mut AnalysisRunStatus) {
    let Some(scoring) = &spec.scoring else {
        return;
    };
    let (latest, complete, ended_in_error) = {
        let metrics = scored_results(spec, status);
        if metrics.is_empty() {
            return;
        }
        let reached = metrics.iter().map(|(r, _, _)| r.count).min().unwrap_or(0);
        let mut next = status.score.as_ref().map_or(1, |s| s.round + 1);
        let mut latest = None;
        while next <= reached {
            let round = score_round(scoring, &metrics, next);
            let failed = round.classification == ScoreClassification::Fail;
            latest = Some(round);
            if failed {
                break;
            }
            next += 1;
        }
        let complete = metrics
            .iter()
            .all(|(r, count, _)| count.is_some_and(|c| r.count >= c as i32));
        let ended_in_error = metrics
            .iter()
            .find(|(r, _, _)| r.phase == AnalysisPhase::Error)
            .map(|(r, _, _)| r.name.clone());
        (latest, complete, ended_in_error)
    };
    if let Some(latest) = latest {
        status.score = Some(latest);
    }
    let Some(current) = status.score.clone() else {
        return;
    };
    let verdict = if current.classification == ScoreClassification::Fail {
        Some((
            AnalysisPhase::Failed,
            format!("run score below the marginal threshold; {}", current.reason),
        ))
    } else if let Some(errored) = ended_in_error {
        Some((
            AnalysisPhase::Inconclusive,
            format!("not scored to the end: {errored} ended in Error"),
        ))
    } else if complete {
        match current.classification {
            ScoreClassification::Pass => Some((
                AnalysisPhase::Successful,
                format!("run score passed; {}", current.reason),
            )),
            ScoreClassification::Marginal => Some((
                AnalysisPhase::Inconclusive,
                format!("run score between the thresholds; {}", current.reason),
            )),
            _ => Some((
                AnalysisPhase::Inconclusive,
                format!("the last round could not be scored; {}", current.reason),
            )),
        }
    } else {
        None
    };
    let Some((phase, message)) = verdict else {
        return;
    };
    let message = bounded_owned(message);
    for result in &mut status.metric_results {
        let scored = spec
            .metrics
            .iter()
            .any(|m| m.name == result.name && is_scored(spec, m));
        if scored && !result.phase.is_completed() {
            result.phase = phase;
            result.message = Some(message.clone());
        }
    }
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
    status.message = message.map(bounded_owned);
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
            started_at: MicroTime(at(t)),
            value: Some("0.5".to_owned()),
            reason: Some(format!("{phase:?} at {t}")),
            critical: false,
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
    fn a_measurement_in_flight_is_checked_on_until_recorded_and_starts_no_other() {
        let mut m = metric("smoke");
        m.interval = Some("1m".to_owned());
        m.count = Some(2);
        let spec = spec(vec![m]);
        let first = plan(&spec, &AnalysisRunStatus::default(), at(0)).expect("plan");
        assert_eq!(first.due.len(), 1);
        let mut status = first.status;
        let job = InFlightMeasurement {
            started_at: Time(at(0)),
            job: "run-smoke-1".to_owned(),
        };
        start_in_flight(&mut status, "smoke", job.clone()).expect("start");
        // Later than the interval: still only the one in flight, due for a check.
        let checking = plan(&spec, &status, at(90)).expect("plan");
        assert_eq!(checking.due.len(), 1);
        assert_eq!(checking.due[0].due_at, at(0));
        assert_eq!(checking.status.metric_results[0].count, 0);
        assert_eq!(checking.next_measurement_at, None);
        let mut status = checking.status;
        let verdict = measurement(AnalysisPhase::Successful, 0);
        record(&spec, &mut status, "smoke", verdict, false, 10, at(90)).expect("record");
        assert_eq!(status.metric_results[0].in_flight, None);
        assert_eq!(status.metric_results[0].count, 1);
        // The next one is an interval after the first started: already due at 90s.
        let next = plan(&spec, &status, at(90)).expect("plan");
        assert_eq!(next.due.len(), 1);
        assert_eq!(next.due[0].due_at, at(60));
        assert!(start_in_flight(&mut status, "other", job).is_err());
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
            MicroTime(at(15))
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

    /// The run's status after planning it at `at(0)`, with its phase and message.
    fn refused(spec: &AnalysisRunSpec) -> (Option<AnalysisPhase>, String, RunPlan) {
        let plan = plan(spec, &AnalysisRunStatus::default(), at(0)).expect("plan");
        let message = plan.status.message.clone().unwrap_or_default();
        (plan.status.phase, message, plan)
    }

    #[test]
    fn bad_durations_end_the_run_in_error_naming_the_metric_and_field() {
        let mut m = metric("errors");
        m.interval = Some("5d".to_owned());
        let (phase, message, plan) = refused(&spec(vec![m]));
        assert_eq!(phase, Some(AnalysisPhase::Error));
        assert!(
            message.starts_with("the run cannot start: metrics[0] (errors).interval:"),
            "{message}"
        );
        assert!(plan.due.is_empty());
        assert_eq!(plan.next_measurement_at, None);
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

    #[test]
    fn interval_of_100000000h_ends_the_run_in_error_instead_of_overflowing() {
        for field in ["interval", "initialDelay"] {
            let mut m = metric("errors");
            match field {
                "interval" => m.interval = Some("100000000h".to_owned()),
                _ => m.initial_delay = Some("100000000h".to_owned()),
            }
            let (phase, message, _) = refused(&spec(vec![m.clone()]));
            assert_eq!(phase, Some(AnalysisPhase::Error), "{field}");
            assert!(
                message.contains(&format!("metrics[0] (errors).{field}: 100000000h")),
                "{message}"
            );
            assert!(message.contains("over the ceiling of 720h"), "{message}");
            // Driving it to the end takes no measurement and does not panic.
            let (status, taken) = drive(&spec(vec![m]), &[AnalysisPhase::Successful; 3]);
            assert_eq!(status.phase, Some(AnalysisPhase::Error));
            assert!(taken.is_empty());
        }
        // The ceiling itself is allowed.
        let mut m = metric("errors");
        m.interval = Some("720h".to_owned());
        m.initial_delay = Some("720h".to_owned());
        let (phase, _, plan) = refused(&spec(vec![m]));
        assert_eq!(phase, Some(AnalysisPhase::Running));
        assert_eq!(
            plan.next_measurement_at,
            Some(at(0) + SignedDuration::from_hours(720))
        );
    }

    #[test]
    fn time_arithmetic_saturates_at_the_end_of_time() {
        assert_eq!(
            later(Timestamp::MAX, Duration::from_secs(1)),
            Timestamp::MAX
        );
        assert_eq!(later(at(0), Duration::MAX), Timestamp::MAX);
    }

    #[test]
    fn too_many_metrics_or_a_megabyte_name_end_the_run_in_error() {
        let many: Vec<Metric> = (0..=MAX_METRICS_PER_RUN)
            .map(|i| metric(&format!("m{i}")))
            .collect();
        let (phase, message, _) = refused(&spec(many));
        assert_eq!(phase, Some(AnalysisPhase::Error));
        assert!(
            message.contains("metrics: 51 metrics, at most 50"),
            "{message}"
        );
        let (phase, message, _) = refused(&spec(vec![metric(&"n".repeat(1 << 20))]));
        assert_eq!(phase, Some(AnalysisPhase::Error));
        assert!(
            message.contains("metrics[0].name: 1048576 bytes, at most 253"),
            "{message}"
        );
        assert!(message.len() < 200, "{message}");
    }

    #[test]
    fn five_megabyte_reason_and_megabyte_value_are_stored_bounded() {
        let spec = spec(vec![metric("errors")]);
        let mut status = plan(&spec, &AnalysisRunStatus::default(), at(0))
            .expect("plan")
            .status;
        let mut m = measurement(AnalysisPhase::Error, 0);
        m.reason = Some("e".repeat(5 << 20));
        m.value = Some(format!("{{pod=\"{}\"}}", "v".repeat(1 << 20)));
        record(&spec, &mut status, "errors", m, false, 10, at(0)).expect("record");
        let stored = &status.metric_results[0].measurements[0];
        let limit = crate::analysis::provider::MAX_TEXT_BYTES + 32;
        for text in [
            &stored.reason,
            &stored.value,
            &status.metric_results[0].message,
            &status.message,
        ] {
            let text = text.as_deref().unwrap_or_default();
            assert!(text.len() <= limit, "{} bytes", text.len());
        }
        assert!(
            stored
                .reason
                .as_deref()
                .unwrap_or_default()
                .ends_with("bytes cut)"),
            "the cut is said"
        );
    }

    /// The largest judge state a metric can carry: a latency test's warm-up buckets (capped by
    /// `measure::MAX_HISTOGRAM_BUCKETS`) and per-bound count states.
    fn worst_sequential_state() -> serde_json::Value {
        use crate::analysis::judge::sequential::{CountState, HistogramState};
        let count = CountState {
            canary_errors: u64::MAX,
            baseline_errors: u64::MAX,
            canary_requests: u64::MAX,
            baseline_requests: u64::MAX,
            share_sum: f64::MAX,
            share_square_sum: f64::MAX,
            share_range: Some((f64::MIN_POSITIVE, f64::MAX)),
            canary_heterogeneity: f64::MAX,
            canary_heterogeneity_degrees: u64::MAX,
            baseline_heterogeneity: f64::MAX,
            baseline_heterogeneity_degrees: u64::MAX,
            restarts: u32::MAX,
            ..CountState::default()
        };
        let state = HistogramState {
            // At most three bounds: the latency test's quantiles (0.5, 0.9, 0.99).
            bounds: vec![f64::MAX; 3],
            per_bound: vec![count; 3],
            warmup_baseline: vec![u64::MAX; crate::analysis::measure::MAX_HISTOGRAM_BUCKETS],
            restarts: u32::MAX,
            ..HistogramState::default()
        };
        serde_json::to_value(&state).expect("state serializes")
    }

    #[test]
    fn worst_case_status_stays_under_the_budget() {
        // Fifty metrics with the longest names, half of them scored in groups with the longest
        // names, each carrying the largest judge state and recording megabyte texts.
        let long = |i: usize| format!("{i:03}{}", "é".repeat((MAX_NAME_BYTES - 3) / 2));
        let metrics: Vec<Metric> = (0..MAX_METRICS_PER_RUN)
            .map(|i| {
                let mut m = if i % 2 == 0 {
                    let mut m = mw_metric(&long(i), Some(&long(i + 100)));
                    m.count = Some(1000);
                    m
                } else {
                    metric(&long(i))
                };
                m.interval = Some("1s".to_owned());
                m.count = Some(1000);
                m.failure_limit = Some(1000);
                m.inconclusive_limit = Some(1000);
                m.consecutive_error_limit = Some(1000);
                m
            })
            .collect();
        let mut spec = scored_spec(metrics, &[]);
        spec.scoring = Some(Scoring::default());
        let mut status = plan(&spec, &AnalysisRunStatus::default(), at(0))
            .expect("plan")
            .status;
        assert_eq!(status.phase, Some(AnalysisPhase::Running));
        // Anything over MAX_TEXT_BYTES is as large as a stored text gets.
        let huge = "ü".repeat(4 << 10);
        for t in 0..4 {
            for i in 0..MAX_METRICS_PER_RUN {
                status.metric_results[i].sequential_state = Some(worst_sequential_state());
                let mut m = measurement(AnalysisPhase::Inconclusive, t);
                m.reason = Some(huge.clone());
                m.value = Some(huge.clone());
                record(&spec, &mut status, &long(i), m, false, 10, at(t)).expect("record");
                let size = serialized_size(&status);
                assert!(
                    size <= STATUS_BUDGET_BYTES,
                    "{size} bytes after measurement {t} of metric {i}"
                );
            }
        }
        assert!(status.metric_results.iter().all(|r| r.count == 4));
        assert!(
            status
                .metric_results
                .iter()
                .all(|r| !r.measurements.is_empty())
        );
    }

    // ---- Kayenta-style scoring of Mann–Whitney metrics ----

    fn mw_metric(name: &str, group: Option<&str>) -> Metric {
        Metric {
            name: name.to_owned(),
            interval: Some("1m".to_owned()),
            count: Some(3),
            mann_whitney: Some(crate::api::MannWhitneyJudge {
                group: group.map(str::to_owned),
                ..crate::api::MannWhitneyJudge::default()
            }),
            ..Metric::default()
        }
    }

    fn scored_spec(metrics: Vec<Metric>, weights: &[(&str, f64)]) -> AnalysisRunSpec {
        AnalysisRunSpec {
            metrics,
            scoring: Some(Scoring {
                group_weights: weights.iter().map(|(g, w)| ((*g).to_owned(), *w)).collect(),
                ..Scoring::default()
            }),
            ..AnalysisRunSpec::default()
        }
    }

    /// Drives a run whose metrics all measure at the same times, giving metric `i` the
    /// verdicts `verdicts[i]` (phase, critical) in turn.
    fn drive_scored(
        spec: &AnalysisRunSpec,
        verdicts: &[&[(AnalysisPhase, bool)]],
    ) -> AnalysisRunStatus {
        let mut status = AnalysisRunStatus::default();
        let mut now = at(0);
        let mut taken = vec![0usize; verdicts.len()];
        for _ in 0..100 {
            let plan = plan(spec, &status, now).expect("plan");
            status = plan.status;
            for due in plan.due {
                let Some(&(phase, critical)) = verdicts[due.index].get(taken[due.index]) else {
                    continue;
                };
                taken[due.index] += 1;
                let mut m = measurement(phase, due.due_at.as_second() - 1_700_000_000);
                m.critical = critical;
                record(spec, &mut status, &due.metric, m, false, 10, now).expect("record");
            }
            if status.phase.unwrap_or_default().is_completed() {
                return status;
            }
            match plan.next_measurement_at {
                Some(t) => now = t,
                None => return status,
            }
        }
        panic!("run did not end");
    }

    const OK: (AnalysisPhase, bool) = (AnalysisPhase::Successful, false);
    const HIGH: (AnalysisPhase, bool) = (AnalysisPhase::Failed, false);
    const EMPTY: (AnalysisPhase, bool) = (AnalysisPhase::Inconclusive, false);

    #[test]
    fn scored_metrics_pass_together_despite_one_failure_the_score_absorbs() {
        // Five groups of one metric: one High in a round scores 80 — Marginal, not Fail —
        // and the last round of all passes scores 100.
        let names = ["a", "b", "c", "d", "e"];
        let spec = scored_spec(names.iter().map(|n| mw_metric(n, None)).collect(), &[]);
        let status = drive_scored(
            &spec,
            &[
                &[HIGH, OK, OK],
                &[OK, OK, OK],
                &[OK, OK, OK],
                &[OK, OK, OK],
                &[OK, OK, OK],
            ],
        );
        assert_eq!(status.phase, Some(AnalysisPhase::Successful), "{status:#?}");
        let score = status.score.expect("scored");
        assert_eq!((score.round, score.score), (3, 100.0));
        assert_eq!(score.classification, ScoreClassification::Pass);
        // A metric judged alone with failureLimit 0 would have failed the run at once.
        assert_eq!(status.metric_results[0].failed, 1);
    }

    #[test]
    fn a_round_below_the_marginal_threshold_fails_the_run_at_once() {
        let spec = scored_spec(vec![mw_metric("p50", None), mw_metric("p99", None)], &[]);
        let status = drive_scored(&spec, &[&[OK, HIGH, OK], &[OK, OK, OK]]);
        assert_eq!(status.phase, Some(AnalysisPhase::Failed), "{status:#?}");
        let score = status.score.clone().expect("scored");
        assert_eq!((score.round, score.score), (2, 50.0));
        assert_eq!(score.classification, ScoreClassification::Fail);
        let message = status.message.unwrap_or_default();
        assert!(
            message.contains("below the marginal threshold"),
            "{message}"
        );
        assert!(message.contains("p50 High"), "{message}");
        // Stopped at round 2: the third measurement was never taken.
        assert_eq!(status.metric_results[0].count, 2);
    }

    #[test]
    fn group_weights_decide_the_score() {
        // latency weighs 80: its only metric failing scores 20 (Fail); errors failing alone
        // scores 80 (Marginal), which ends Inconclusive at the last round.
        let spec = |metrics| scored_spec(metrics, &[("latency", 80.0), ("errors", 20.0)]);
        let metrics = || {
            vec![
                mw_metric("p99", Some("latency")),
                mw_metric("5xx", Some("errors")),
            ]
        };
        let status = drive_scored(&spec(metrics()), &[&[HIGH], &[OK]]);
        assert_eq!(status.phase, Some(AnalysisPhase::Failed));
        assert_eq!(status.score.expect("scored").score, 20.0);
        let status = drive_scored(&spec(metrics()), &[&[OK, OK, OK], &[HIGH, HIGH, HIGH]]);
        assert_eq!(
            status.phase,
            Some(AnalysisPhase::Inconclusive),
            "{status:#?}"
        );
        let score = status.score.expect("scored");
        assert_eq!(
            (score.score, score.classification),
            (80.0, ScoreClassification::Marginal)
        );
        assert_eq!(score.group_scores.get("latency"), Some(&100.0));
    }

    #[test]
    fn a_critical_metric_failing_zeroes_the_score() {
        let names = ["a", "b", "c", "d", "e"];
        let spec = scored_spec(names.iter().map(|n| mw_metric(n, None)).collect(), &[]);
        let critical_high = (AnalysisPhase::Failed, true);
        let status = drive_scored(&spec, &[&[critical_high], &[OK], &[OK], &[OK], &[OK]]);
        assert_eq!(status.phase, Some(AnalysisPhase::Failed));
        let score = status.score.expect("scored");
        assert_eq!(score.score, 0.0);
        assert!(score.reason.contains("critical"), "{}", score.reason);
    }

    #[test]
    fn rounds_without_data_fail_nothing_and_end_inconclusive() {
        let spec = scored_spec(vec![mw_metric("p50", None), mw_metric("p99", None)], &[]);
        let status = drive_scored(&spec, &[&[EMPTY, EMPTY, EMPTY], &[OK, OK, EMPTY]]);
        assert_eq!(
            status.phase,
            Some(AnalysisPhase::Inconclusive),
            "{status:#?}"
        );
        let score = status.score.expect("scored");
        assert_eq!(score.classification, ScoreClassification::NoData);
        assert!(score.reason.contains("not scored"), "{}", score.reason);
    }

    #[test]
    fn without_scoring_mann_whitney_metrics_are_judged_alone() {
        let mut spec = scored_spec(vec![mw_metric("p50", None), mw_metric("p99", None)], &[]);
        spec.scoring = None;
        let status = drive_scored(&spec, &[&[HIGH, OK, OK], &[OK, OK, OK]]);
        assert_eq!(status.phase, Some(AnalysisPhase::Failed));
        assert_eq!(status.score, None);
    }
}

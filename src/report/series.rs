//! From stored measurements to plottable series (pure). Everything here reads what a run's
//! status already holds: the value and reason texts the judges write (see
//! `analysis::measure`), so a report needs no Prometheus.
//!
//! What each judge leaves in status, and what is drawn from it:
//! - threshold: `value` is the query's number → one series, with the condition's threshold;
//! - Mann–Whitney: `value` is `shift E [L, U]` → the estimate and its interval, reference 0;
//! - sequential errorCounts: `value` is `canary e/n baseline e/n` (cumulative) → the canary and
//!   baseline error rates, and the reason's `ratio … E (… CS [L, U])` → the estimate with its
//!   confidence sequence narrowing, references `1 + failMargin` and `1 + passMargin`;
//! - sequential latency: the reason's ratio and confidence sequence.

use jiff::Timestamp;

use crate::api::{AnalysisPhase, MeasurementRecord, Metric, MetricResult, SequentialJudge};

/// How a metric is judged, for drawing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JudgeKind {
    /// A CEL condition on a query's value.
    Threshold,
    /// Mann–Whitney: the canary's shift against the baseline.
    MannWhitney,
    /// Sequential error counts: the canary/baseline error-rate ratio.
    SequentialCounts,
    /// Sequential latency: the canary/baseline slow-share ratio.
    SequentialLatency,
}

impl JudgeKind {
    /// The judge a metric uses.
    pub fn of(metric: Option<&Metric>) -> JudgeKind {
        match metric {
            Some(m) if m.mann_whitney.is_some() => JudgeKind::MannWhitney,
            Some(m) => match m.sequential.as_ref().map(|s| s.test.unwrap_or_default()) {
                Some(crate::api::SequentialTest::ErrorCounts) => JudgeKind::SequentialCounts,
                Some(crate::api::SequentialTest::Latency) => JudgeKind::SequentialLatency,
                None => JudgeKind::Threshold,
            },
            None => JudgeKind::Threshold,
        }
    }

    /// Whether the judge reports an estimate with an interval.
    pub fn is_statistical(self) -> bool {
        self != JudgeKind::Threshold
    }
}

/// An estimate with its interval (confidence interval or sequence).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// The point estimate (absent when the judge had none yet, e.g. no baseline errors).
    pub value: Option<f64>,
    /// The interval's lower bound.
    pub lower: f64,
    /// The interval's upper bound (may be `+Inf` early on).
    pub upper: f64,
}

/// Canary and baseline error counts, cumulative over the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Canary errors.
    pub canary_errors: u64,
    /// Canary requests.
    pub canary_requests: u64,
    /// Baseline errors.
    pub baseline_errors: u64,
    /// Baseline requests.
    pub baseline_requests: u64,
}

impl Counts {
    /// The canary's error rate, when it served requests.
    pub fn canary_rate(&self) -> Option<f64> {
        rate(self.canary_errors, self.canary_requests)
    }

    /// The baseline's error rate, when it served requests.
    pub fn baseline_rate(&self) -> Option<f64> {
        rate(self.baseline_errors, self.baseline_requests)
    }
}

#[allow(clippy::cast_precision_loss)] // request counts far below 2^52
fn rate(errors: u64, requests: u64) -> Option<f64> {
    (requests > 0).then(|| errors as f64 / requests as f64)
}

/// One measurement, ready to plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// When it was taken.
    pub at: Timestamp,
    /// Its verdict (`Running` for a sequential measurement that did not decide yet).
    pub verdict: AnalysisPhase,
    /// The canary's value (a threshold query's number, the canary's error rate).
    pub canary: Option<f64>,
    /// The baseline's value (the baseline's error rate).
    pub baseline: Option<f64>,
    /// The statistical judge's estimate and interval.
    pub estimate: Option<Estimate>,
    /// The counts of an errorCounts test.
    pub counts: Option<Counts>,
    /// Why (the reason text, bounded when stored).
    pub reason: String,
}

/// A horizontal reference line: a threshold, or a margin of a statistical judge.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    /// What it is, e.g. `result < 0.05` or `1 + failMargin`.
    pub label: String,
    /// Where.
    pub value: f64,
}

/// One metric's measurements as series.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSeries {
    /// The metric's name.
    pub name: String,
    /// Its judge.
    pub kind: JudgeKind,
    /// Its phase.
    pub phase: AnalysisPhase,
    /// Why it is in its phase.
    pub message: Option<String>,
    /// Measurements oldest first (status keeps the latest ones; `count` says how many in all).
    pub points: Vec<Point>,
    /// Measurements taken in all (more than `points` when status dropped the oldest).
    pub count: i32,
    /// Lines drawn on the value plot (threshold conditions).
    pub value_references: Vec<Reference>,
    /// Lines drawn on the estimate plot (0 for a shift, margins for a ratio).
    pub estimate_references: Vec<Reference>,
}

/// The series of one metric's result, with the metric's spec when the run's spec is known.
pub fn metric_series(result: &MetricResult, metric: Option<&Metric>) -> MetricSeries {
    let kind = JudgeKind::of(metric);
    let points = result
        .measurements
        .iter()
        .map(|record| point(kind, record))
        .collect();
    MetricSeries {
        name: result.name.clone(),
        kind,
        phase: result.phase,
        message: result.message.clone(),
        points,
        count: result.count,
        value_references: metric.map(threshold_references).unwrap_or_default(),
        estimate_references: estimate_references(kind, metric),
    }
}

fn point(kind: JudgeKind, record: &MeasurementRecord) -> Point {
    let value = record.value.as_deref().unwrap_or("");
    let reason = record.reason.clone().unwrap_or_default();
    let mut point = Point {
        at: record.started_at.0,
        verdict: record.phase,
        canary: None,
        baseline: None,
        estimate: None,
        counts: None,
        reason,
    };
    match kind {
        JudgeKind::Threshold => point.canary = parse_number(value),
        JudgeKind::MannWhitney => {
            point.estimate = parse_shift(value);
            if let Some((canary, baseline)) = parse_medians(&point.reason) {
                point.canary = Some(canary);
                point.baseline = Some(baseline);
            }
        }
        JudgeKind::SequentialCounts => {
            point.counts = parse_counts(value);
            point.canary = point.counts.and_then(|c| c.canary_rate());
            point.baseline = point.counts.and_then(|c| c.baseline_rate());
            point.estimate = parse_sequence(&point.reason);
        }
        JudgeKind::SequentialLatency => {
            // `canary slow/n baseline slow/n`: the arms' shares of slow requests.
            point.counts = parse_counts(value);
            point.canary = point.counts.and_then(|c| c.canary_rate());
            point.baseline = point.counts.and_then(|c| c.baseline_rate());
            point.estimate = parse_sequence(&point.reason);
        }
    }
    point
}

/// The arms' medians a Mann–Whitney reason ends with: `...; canary median C, baseline median B`.
pub fn parse_medians(reason: &str) -> Option<(f64, f64)> {
    let (_, tail) = reason.rsplit_once("; canary median ")?;
    let (canary, baseline) = tail.split_once(", baseline median ")?;
    Some((parse_number(canary)?, parse_number(baseline)?))
}

/// What the values chart's vertical axis shows for a judge.
pub fn value_label(kind: JudgeKind) -> &'static str {
    match kind {
        JudgeKind::Threshold => "value",
        JudgeKind::MannWhitney => "median of the window",
        JudgeKind::SequentialCounts => "error rate",
        JudgeKind::SequentialLatency => "share of slow requests",
    }
}

/// A number as the judges print it (`0.04`, `1e-3`, `NaN`, `+Inf`); anything else is none.
pub fn parse_number(text: &str) -> Option<f64> {
    let text = text.trim();
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse::<f64>().ok().filter(|v| !v.is_nan()),
    }
}

/// `shift E [L, U]` (Mann–Whitney's value).
pub fn parse_shift(value: &str) -> Option<Estimate> {
    let rest = value.trim().strip_prefix("shift ")?;
    let (estimate, interval) = rest.split_once('[')?;
    let (lower, upper) = parse_interval(interval)?;
    Some(Estimate {
        value: parse_number(estimate),
        lower,
        upper,
    })
}

fn parse_interval(text: &str) -> Option<(f64, f64)> {
    let inside = text.split(']').next()?;
    let (lower, upper) = inside.split_once(',')?;
    Some((parse_number(lower)?, parse_number(upper)?))
}

/// `canary e/n baseline e/n` (the errorCounts test's value).
pub fn parse_counts(value: &str) -> Option<Counts> {
    let mut words = value.split_whitespace();
    let mut pair = |label: &str| -> Option<(u64, u64)> {
        (words.next()? == label).then_some(())?;
        let (errors, requests) = words.next()?.split_once('/')?;
        Some((errors.parse().ok()?, requests.parse().ok()?))
    };
    let (canary_errors, canary_requests) = pair("canary")?;
    let (baseline_errors, baseline_requests) = pair("baseline")?;
    Some(Counts {
        canary_errors,
        canary_requests,
        baseline_errors,
        baseline_requests,
    })
}

/// `… ratio canary/baseline E (99% CS [L, U]) …` (a sequential judge's reason).
pub fn parse_sequence(reason: &str) -> Option<Estimate> {
    let ratio_at = reason.find("ratio")?;
    let after = &reason[ratio_at..];
    let open = after.find(" (")?;
    let estimate = after[..open].rsplit(' ').next().and_then(parse_number);
    let cs = after[open..].find("CS [")?;
    let (lower, upper) = parse_interval(&after[open + cs + 4..])?;
    Some(Estimate {
        value: estimate,
        lower,
        upper,
    })
}

/// The numbers a threshold condition compares `result` with, e.g. `result < 0.05`.
fn threshold_references(metric: &Metric) -> Vec<Reference> {
    [&metric.success_condition, &metric.failure_condition]
        .into_iter()
        .flatten()
        .filter_map(|condition| {
            comparison_value(condition).map(|value| Reference {
                label: condition.clone(),
                value,
            })
        })
        .collect()
}

/// The number of the first `result… OP number` comparison in a condition, when there is one.
fn comparison_value(condition: &str) -> Option<f64> {
    let at = condition.find("result")?;
    let rest = &condition[at..];
    let op = rest.find(['<', '>', '='])?;
    let number: String = rest[op..]
        .trim_start_matches(['<', '>', '=', '!'])
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
        .collect();
    parse_number(&number)
}

fn estimate_references(kind: JudgeKind, metric: Option<&Metric>) -> Vec<Reference> {
    match kind {
        JudgeKind::Threshold => Vec::new(),
        JudgeKind::MannWhitney => vec![Reference {
            label: "no shift".to_owned(),
            value: 0.0,
        }],
        JudgeKind::SequentialCounts | JudgeKind::SequentialLatency => {
            let judge = metric.and_then(|m| m.sequential.as_ref());
            let fail = judge
                .and_then(|j| j.fail_margin)
                .unwrap_or(SequentialJudge::DEFAULT_FAIL_MARGIN);
            let pass = judge
                .and_then(|j| j.pass_margin)
                .unwrap_or(SequentialJudge::DEFAULT_PASS_MARGIN);
            vec![
                Reference {
                    label: format!("fail above {}", 1.0 + fail),
                    value: 1.0 + fail,
                },
                Reference {
                    label: format!("pass below {}", 1.0 + pass),
                    value: 1.0 + pass,
                },
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn record(phase: AnalysisPhase, value: &str, reason: &str) -> MeasurementRecord {
        MeasurementRecord {
            phase,
            started_at: MicroTime("2026-01-01T00:00:00Z".parse().expect("time")),
            value: Some(value.to_owned()),
            reason: Some(reason.to_owned()),
            critical: false,
        }
    }

    #[test]
    fn the_judges_texts_parse_into_numbers() {
        assert_eq!(parse_number("0.041"), Some(0.041));
        assert_eq!(parse_number("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_number("NaN"), None);
        assert_eq!(parse_number("[{} 1]"), None);
        assert_eq!(
            parse_shift("shift 0.12 [-0.5, 0.9]"),
            Some(Estimate {
                value: Some(0.12),
                lower: -0.5,
                upper: 0.9
            })
        );
        assert_eq!(
            parse_counts("canary 12/400 baseline 3/410"),
            Some(Counts {
                canary_errors: 12,
                canary_requests: 400,
                baseline_errors: 3,
                baseline_requests: 410
            })
        );
        assert_eq!(parse_counts("canary 12 baseline"), None);
        assert_eq!(
            parse_sequence(
                "error-rate ratio canary/baseline 4.1 (99% CS [1.7, +Inf]) above 1 + fail margin 0.2; errors canary 12/400 baseline 3/410"
            ),
            Some(Estimate {
                value: Some(4.1),
                lower: 1.7,
                upper: f64::INFINITY
            })
        );
        assert_eq!(
            parse_sequence("error-rate ratio canary/baseline n/a (99% CS [0, 12])")
                .map(|e| e.value),
            Some(None)
        );
    }

    #[test]
    fn a_threshold_metric_draws_its_value_and_the_condition_line() {
        let metric = Metric {
            name: "error-rate".to_owned(),
            success_condition: Some("result < 0.05".to_owned()),
            ..Metric::default()
        };
        let result = MetricResult {
            name: "error-rate".to_owned(),
            phase: AnalysisPhase::Failed,
            count: 2,
            measurements: vec![
                record(AnalysisPhase::Successful, "0.01", "ok"),
                record(AnalysisPhase::Failed, "0.3", "result < 0.05 is false"),
            ],
            ..MetricResult::default()
        };
        let series = metric_series(&result, Some(&metric));
        assert_eq!(series.kind, JudgeKind::Threshold);
        let values: Vec<_> = series.points.iter().map(|p| p.canary).collect();
        assert_eq!(values, vec![Some(0.01), Some(0.3)]);
        assert_eq!(series.value_references[0].value, 0.05);
        assert!(series.estimate_references.is_empty());
    }

    #[test]
    fn an_error_count_test_draws_both_rates_and_its_margins() {
        let metric = Metric {
            name: "errors".to_owned(),
            sequential: Some(SequentialJudge {
                fail_margin: Some(0.5),
                pass_margin: Some(0.1),
                ..SequentialJudge::default()
            }),
            ..Metric::default()
        };
        let result = MetricResult {
            name: "errors".to_owned(),
            phase: AnalysisPhase::Failed,
            measurements: vec![record(
                AnalysisPhase::Failed,
                "canary 20/100 baseline 5/100",
                "error-rate ratio canary/baseline 4 (99% CS [1.9, 9]) above 1 + fail margin 0.5",
            )],
            ..MetricResult::default()
        };
        let series = metric_series(&result, Some(&metric));
        assert_eq!(series.kind, JudgeKind::SequentialCounts);
        let point = &series.points[0];
        assert_eq!((point.canary, point.baseline), (Some(0.2), Some(0.05)));
        assert_eq!(point.estimate.map(|e| e.lower), Some(1.9));
        assert_eq!(series.estimate_references[0].value, 1.5);
        assert_eq!(series.estimate_references[1].value, 1.1);
    }

    /// Issue 16: the report draws the stable/baseline arm beside the canary for every
    /// comparing judge, from what the measurements record of both arms.
    #[test]
    fn comparing_judges_draw_both_arms() {
        let mann_whitney = Metric {
            name: "p95".to_owned(),
            mann_whitney: Some(crate::api::MannWhitneyJudge::default()),
            ..Metric::default()
        };
        let result = MetricResult {
            name: "p95".to_owned(),
            measurements: vec![record(
                AnalysisPhase::Failed,
                "shift 0.2 [0.1, 0.3]",
                "High: canary higher; canary median 0.45, baseline median 0.25",
            )],
            ..MetricResult::default()
        };
        let series = metric_series(&result, Some(&mann_whitney));
        let point = &series.points[0];
        assert_eq!((point.canary, point.baseline), (Some(0.45), Some(0.25)));
        assert_eq!(value_label(series.kind), "median of the window");

        let latency = Metric {
            name: "slow".to_owned(),
            sequential: Some(SequentialJudge {
                test: Some(crate::api::SequentialTest::Latency),
                ..SequentialJudge::default()
            }),
            ..Metric::default()
        };
        let result = MetricResult {
            name: "slow".to_owned(),
            measurements: vec![record(
                AnalysisPhase::Running,
                "canary 30/100 baseline 10/200",
                "slow-share ratio canary/baseline 6 (99% CS [2, 20])",
            )],
            ..MetricResult::default()
        };
        let series = metric_series(&result, Some(&latency));
        let point = &series.points[0];
        assert_eq!((point.canary, point.baseline), (Some(0.3), Some(0.05)));
        assert_eq!(parse_medians("no medians here"), None);
    }
}

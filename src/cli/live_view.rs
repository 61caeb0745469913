//! The live view of `vigil local get NAME --watch` (pure): a compact dashboard on a terminal
//! (timestamp, colour, weight, per-metric sparkline of canary against baseline, the verdict so
//! far), or one plain line per change when the output is not a terminal. Every line is at most
//! [`MAX_LINE`] characters; measurement errors get a line of their own as they happen.

use std::fmt::Write as _;

use jiff::Timestamp;

use crate::api::{AnalysisPhase, MeasurementRecord, RolloutPhase, RolloutStatus};
use crate::platform::local::engine::{RolloutView, RunView};
use crate::report::series::{parse_counts, parse_medians, parse_number};

/// The longest line the live view prints.
pub const MAX_LINE: usize = 120;
/// Points a sparkline shows (the latest ones).
const SPARK_WIDTH: usize = 24;
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// One metric of the current analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricTrace {
    /// The metric's name.
    pub name: String,
    /// Its verdict so far.
    pub phase: AnalysisPhase,
    /// The canary's values (a query's number; the canary's error rate, slow share or
    /// median when compared with a baseline), oldest first.
    pub canary: Vec<f64>,
    /// The baseline's values, when the metric compares both arms (error rate, slow share,
    /// median).
    pub baseline: Vec<f64>,
    /// The latest value as the judge wrote it.
    pub latest: Option<String>,
}

/// What one redraw shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// When it was read.
    pub at: Timestamp,
    /// The Rollout.
    pub name: String,
    /// Its phase.
    pub phase: Option<RolloutPhase>,
    /// The step for display.
    pub step: Option<String>,
    /// The canary weight.
    pub weight: i32,
    /// The current (or latest) analysis run and its verdict so far.
    pub run: Option<(String, AnalysisPhase)>,
    /// Its metrics.
    pub metrics: Vec<MetricTrace>,
    /// The status message.
    pub message: Option<String>,
}

fn values(records: &[MeasurementRecord]) -> (Vec<f64>, Vec<f64>) {
    let mut canary = Vec::new();
    let mut baseline = Vec::new();
    for record in records {
        let value = record.value.as_deref().unwrap_or("");
        if let Some(counts) = parse_counts(value) {
            canary.extend(counts.canary_rate());
            baseline.extend(counts.baseline_rate());
        } else if let Some((c, b)) = record.reason.as_deref().and_then(parse_medians) {
            // Mann–Whitney: both arms' medians end its reason.
            canary.push(c);
            baseline.push(b);
        } else if let Some(number) = parse_number(value).filter(|v| v.is_finite()) {
            canary.push(number);
        }
    }
    (canary, baseline)
}

/// The frame of `view` read at `at`: the running analysis run, else the latest one.
pub fn frame_of(view: &RolloutView, at: Timestamp) -> Frame {
    frame(&view.name, &view.status, &view.analysis_runs, at)
}

/// The frame of the Rollout `name` with `status` and its runs (oldest first), read at `at`.
pub fn frame(name: &str, status: &RolloutStatus, runs: &[RunView], at: Timestamp) -> Frame {
    let run = runs
        .iter()
        .rev()
        .find(|r| !r.status.phase.is_some_and(AnalysisPhase::is_completed))
        .or_else(|| runs.last());
    let metrics = run
        .map(|run| {
            run.status
                .metric_results
                .iter()
                .map(|result| {
                    let (canary, baseline) = values(&result.measurements);
                    MetricTrace {
                        name: result.name.clone(),
                        phase: result.phase,
                        canary,
                        baseline,
                        latest: result.measurements.last().and_then(|m| m.value.clone()),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    Frame {
        at,
        name: name.to_owned(),
        phase: status.phase,
        step: status.step.clone(),
        weight: status.canary_weight,
        run: run.map(|r| (r.name.clone(), r.status.phase.unwrap_or_default())),
        metrics,
        message: status.message.clone(),
    }
}

/// Bars for `values` (the latest [`SPARK_WIDTH`]), scaled between `low` and `high`.
pub fn sparkline(values: &[f64], low: f64, high: f64) -> String {
    let start = values.len().saturating_sub(SPARK_WIDTH);
    values[start..]
        .iter()
        .map(|v| {
            if high <= low {
                return BARS[0];
            }
            let level = ((v - low) / (high - low) * 7.0).round().clamp(0.0, 7.0);
            // In 0..=7 after the clamp.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            BARS[level as usize]
        })
        .collect()
}

/// Cuts `text` to [`MAX_LINE`] characters, marking the cut with `…`.
pub fn fit(text: &str) -> String {
    if text.chars().count() <= MAX_LINE {
        return text.to_owned();
    }
    let kept: String = text.chars().take(MAX_LINE - 1).collect();
    format!("{kept}…")
}

fn phase_word(phase: Option<RolloutPhase>) -> String {
    phase.map_or_else(|| "Pending".to_owned(), |p| format!("{p:?}"))
}

fn verdict_word(phase: AnalysisPhase) -> &'static str {
    match phase {
        AnalysisPhase::Pending => "Pending",
        AnalysisPhase::Running => "Running",
        AnalysisPhase::Successful => "Successful",
        AnalysisPhase::Failed => "Failed",
        AnalysisPhase::Inconclusive => "Inconclusive",
        AnalysisPhase::Error => "Error",
        AnalysisPhase::Terminated => "Terminated",
    }
}

/// ANSI colour of a rollout phase or a verdict (green good, red bad, yellow waiting).
fn paint(text: &str, good: bool, bad: bool, colour: bool) -> String {
    if !colour {
        return text.to_owned();
    }
    let code = if bad {
        "31"
    } else if good {
        "32"
    } else {
        "33"
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

fn paint_phase(phase: Option<RolloutPhase>, colour: bool) -> String {
    let bad = matches!(phase, Some(RolloutPhase::Degraded | RolloutPhase::Aborted));
    let good = phase == Some(RolloutPhase::Healthy);
    paint(&phase_word(phase), good, bad, colour)
}

fn paint_verdict(phase: AnalysisPhase, colour: bool) -> String {
    let bad = matches!(phase, AnalysisPhase::Failed | AnalysisPhase::Error);
    paint(
        verdict_word(phase),
        phase == AnalysisPhase::Successful,
        bad,
        colour,
    )
}

fn clock(at: Timestamp) -> String {
    at.strftime("%H:%M:%S").to_string()
}

/// One plain line (no colour): time, name, step, weight, phase, each metric's verdict and
/// latest value, the message; at most [`MAX_LINE`] characters.
pub fn plain_line(frame: &Frame) -> String {
    let mut line = format!(
        "{} {} step {} weight {}% {}",
        clock(frame.at),
        frame.name,
        frame.step.as_deref().unwrap_or("-"),
        frame.weight,
        phase_word(frame.phase)
    );
    for metric in &frame.metrics {
        let _ = write!(line, " | {} {}", metric.name, verdict_word(metric.phase));
        if let Some(latest) = &metric.latest {
            let _ = write!(line, " {latest}");
        }
    }
    if let Some(message) = &frame.message {
        let _ = write!(line, " | {message}");
    }
    fit(&line)
}

/// The dashboard: a header line, one line per metric with its sparklines, the message.
pub fn dashboard(frame: &Frame, colour: bool) -> String {
    let mut out = String::new();
    // Colour codes do not count towards the width: the line is fitted before painting.
    let header = fit(&format!(
        "{} {}  step {}  weight {:>3}%  PHASE",
        clock(frame.at),
        frame.name,
        frame.step.as_deref().unwrap_or("-"),
        frame.weight
    ));
    let header = header.replacen("PHASE", &paint_phase(frame.phase, colour), 1);
    let _ = writeln!(out, "{header}");
    if let Some((run, phase)) = &frame.run {
        let text = fit(&format!("  analysis {run}: VERDICT"));
        let _ = writeln!(
            out,
            "{}",
            text.replacen("VERDICT", &paint_verdict(*phase, colour), 1)
        );
    }
    for metric in &frame.metrics {
        let all = metric.canary.iter().chain(metric.baseline.iter());
        let (low, high) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
        let mut line = format!(
            "  {:<20} {:<12} canary {:<24}",
            metric.name,
            "VERDICT",
            sparkline(&metric.canary, low, high)
        );
        if !metric.baseline.is_empty() {
            let _ = write!(
                line,
                " baseline {:<24}",
                sparkline(&metric.baseline, low, high)
            );
        }
        if let Some(latest) = &metric.latest {
            let _ = write!(line, " {latest}");
        }
        let line = fit(&line);
        let _ = writeln!(
            out,
            "{}",
            line.replacen(
                &format!("{:<12}", "VERDICT"),
                &format!(
                    "{}{}",
                    paint_verdict(metric.phase, colour),
                    " ".repeat(12 - verdict_word(metric.phase).len())
                ),
                1
            )
        );
    }
    if let Some(message) = &frame.message {
        let _ = writeln!(out, "{}", fit(&format!("  {message}")));
    }
    out
}

/// Lines for the measurement errors in `current` that `previous` did not show yet, as they
/// happen (before they pause the rollout).
pub fn new_errors(
    previous: Option<&RolloutView>,
    current: &RolloutView,
    at: Timestamp,
) -> Vec<String> {
    errors_between(
        &current.name,
        previous.map(|p| p.analysis_runs.as_slice()),
        &current.analysis_runs,
        at,
    )
}

/// [`new_errors`] of the Rollout `name` from its runs as read before (`previous`) and now.
pub fn errors_between(
    name: &str,
    previous: Option<&[RunView]>,
    current: &[RunView],
    at: Timestamp,
) -> Vec<String> {
    let seen = |run: &str, metric: &str, record: &MeasurementRecord| {
        previous.is_some_and(|p| {
            p.iter()
                .filter(|r| r.name == run)
                .flat_map(|r| r.status.metric_results.iter())
                .filter(|m| m.name == metric)
                .any(|m| m.measurements.contains(record))
        })
    };
    let mut lines = Vec::new();
    for run in current {
        for metric in &run.status.metric_results {
            for record in &metric.measurements {
                if record.phase == AnalysisPhase::Error && !seen(&run.name, &metric.name, record) {
                    lines.push(fit(&format!(
                        "{} {} measurement error in {}: {}",
                        clock(at),
                        name,
                        metric.name,
                        record.reason.as_deref().unwrap_or("no reason given")
                    )));
                }
            }
        }
    }
    lines
}

/// `vigil local list`: one line per Rollout.
pub fn list_table(rollouts: &[(String, RolloutStatus)]) -> String {
    if rollouts.is_empty() {
        return "no rollouts in this state directory\n".to_owned();
    }
    let mut out = format!(
        "{:<24} {:<12} {:<6} {:>6}  {}\n",
        "NAME", "PHASE", "STEP", "WEIGHT", "MESSAGE"
    );
    for (name, status) in rollouts {
        let line = format!(
            "{:<24} {:<12} {:<6} {:>5}%  {}",
            name,
            phase_word(status.phase),
            status.step.as_deref().unwrap_or("-"),
            status.canary_weight,
            status.message.as_deref().unwrap_or("")
        );
        let _ = writeln!(out, "{}", fit(&line));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AnalysisRunStatus, MetricResult};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("time")
    }

    fn record(
        phase: AnalysisPhase,
        value: Option<&str>,
        reason: &str,
        t: i64,
    ) -> MeasurementRecord {
        MeasurementRecord {
            phase,
            started_at: MicroTime(at(t)),
            value: value.map(str::to_owned),
            reason: Some(reason.to_owned()),
            critical: false,
        }
    }

    fn view(measurements: Vec<MeasurementRecord>, message: &str) -> RolloutView {
        let json = serde_json::json!({
            "name": "web",
            "generation": 1,
            "desiredRevision": "abc",
            "status": {
                "phase": "Progressing",
                "step": "2/5",
                "canaryWeight": 20,
                "message": message,
            },
            "routing": {"canaryWeight": 20},
            "listen": "127.0.0.1:8080",
            "metricsListen": "127.0.0.1:9464",
            "analysisRuns": [],
            "events": [],
        });
        let mut view: RolloutView = match serde_json::from_value(json) {
            Ok(view) => view,
            Err(error) => panic!("the test view parses: {error}"),
        };
        view.analysis_runs = vec![RunView {
            name: "web-abc-1-step1".to_owned(),
            status: AnalysisRunStatus {
                phase: Some(AnalysisPhase::Running),
                metric_results: vec![MetricResult {
                    name: "errors".to_owned(),
                    phase: AnalysisPhase::Running,
                    measurements,
                    ..MetricResult::default()
                }],
                ..AnalysisRunStatus::default()
            },
        }];
        view
    }

    #[test]
    fn the_plain_line_has_a_timestamp_the_weight_and_each_verdict_within_120_chars() {
        let long = "x".repeat(300);
        let current = view(
            vec![record(
                AnalysisPhase::Running,
                Some("canary 2/100 baseline 1/100"),
                "undecided",
                0,
            )],
            &long,
        );
        let line = plain_line(&frame_of(&current, at(3661)));
        assert!(
            line.starts_with("09:01:01 web step 2/5 weight 20% Progressing | errors Running canary 2/100 baseline 1/100 | xxx"),
            "{line}"
        );
        assert_eq!(line.chars().count(), MAX_LINE, "{line}");
        assert!(line.ends_with('…'), "{line}");
        assert!(!line.contains('\x1b'), "plain lines have no colour: {line}");
    }

    #[test]
    fn the_dashboard_draws_canary_and_baseline_sparklines_in_colour() {
        let current = view(
            vec![
                record(
                    AnalysisPhase::Running,
                    Some("canary 1/100 baseline 1/100"),
                    "",
                    0,
                ),
                record(
                    AnalysisPhase::Running,
                    Some("canary 8/200 baseline 2/200"),
                    "",
                    10,
                ),
                record(
                    AnalysisPhase::Failed,
                    Some("canary 30/300 baseline 3/300"),
                    "",
                    20,
                ),
            ],
            "error-rate failed",
        );
        let text = dashboard(&frame_of(&current, at(0)), true);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].contains("weight  20%") && lines[0].contains("\x1b[33mProgressing"),
            "{text}"
        );
        let metric = lines
            .iter()
            .find(|l| l.contains("errors"))
            .expect("a metric line");
        assert!(metric.contains("canary ▁▃█"), "{text}");
        assert!(metric.contains("baseline ▁▁▁"), "{text}");
        assert!(metric.contains("\x1b[33mRunning"), "{text}");
        let plain = dashboard(&frame_of(&current, at(0)), false);
        assert!(!plain.contains('\x1b'), "{plain}");
        assert!(
            plain.lines().all(|l| l.chars().count() <= MAX_LINE),
            "{plain}"
        );
    }

    #[test]
    fn a_measurement_error_is_shown_once_as_it_happens() {
        let ok = record(AnalysisPhase::Running, Some("0.01"), "fine", 0);
        let failed = record(
            AnalysisPhase::Error,
            None,
            "failed to query http://127.0.0.1:9090: connection refused",
            10,
        );
        let before = view(vec![ok.clone()], "");
        let after = view(vec![ok, failed], "");
        let lines = new_errors(Some(&before), &after, at(10));
        assert_eq!(
            lines,
            vec![
                "08:00:10 web measurement error in errors: failed to query http://127.0.0.1:9090: connection refused"
                    .to_owned()
            ]
        );
        assert!(new_errors(Some(&after), &after, at(11)).is_empty());
    }

    #[test]
    fn the_list_has_one_line_per_rollout() {
        let status = RolloutStatus {
            phase: Some(RolloutPhase::Degraded),
            step: Some("1/3".to_owned()),
            canary_weight: 0,
            message: Some("error-rate failed".to_owned()),
            ..RolloutStatus::default()
        };
        let text = list_table(&[
            ("web".to_owned(), status),
            ("api".to_owned(), RolloutStatus::default()),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{text}");
        assert!(
            lines[1].starts_with("web")
                && lines[1].contains("Degraded")
                && lines[1].contains("error-rate failed"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("api") && lines[2].contains("Pending"),
            "{text}"
        );
        assert_eq!(list_table(&[]), "no rollouts in this state directory\n");
    }

    /// Issue 16: a Mann–Whitney metric shows both arms (the medians its reason ends with).
    #[test]
    fn mann_whitney_medians_trace_both_arms() {
        let records = [
            record(
                AnalysisPhase::Successful,
                Some("shift 0.01 [-0.02, 0.03]"),
                "Pass: no difference; canary median 0.21, baseline median 0.2",
                0,
            ),
            record(AnalysisPhase::Successful, Some("0.5"), "result < 1", 1),
        ];
        let (canary, baseline) = values(&records);
        assert_eq!(canary, [0.21, 0.5]);
        assert_eq!(baseline, [0.2]);
    }
}

//! The report's headline (pure): what was decided, why, what the canary served and failed,
//! and how long it took from the failing verdict to all traffic on stable.

use jiff::{SignedDuration, Timestamp};

use super::series::{Counts, JudgeKind, MetricSeries};
use super::{ReportInput, RunSeries};
use crate::api::{AnalysisPhase, RolloutPhase};

/// The summary at the top of a report.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// What was decided, e.g. `Rolled back (Degraded)` or `Promoted (Healthy)`.
    pub decision: String,
    /// Why, in the engine's words (the status message).
    pub why: Option<String>,
    /// Requests the canary served and how many failed, as the errorCounts metrics counted them
    /// (summed over the runs; none when no metric counts requests).
    pub canary_requests: Option<Counts>,
    /// The first failing verdict: metric and time.
    pub first_failure: Option<(String, Timestamp)>,
    /// From the first failing verdict to the rollback (all traffic on stable).
    pub time_to_rollback: Option<SignedDuration>,
}

/// The summary of `input` with its runs' series.
pub fn summarize(input: &ReportInput, runs: &[RunSeries]) -> Summary {
    let first_failure = runs
        .iter()
        .flat_map(|run| run.metrics.iter())
        .filter_map(|metric| {
            metric
                .points
                .iter()
                .find(|p| p.verdict == AnalysisPhase::Failed)
                .map(|p| (metric.name.clone(), p.at))
        })
        .min_by_key(|(_, at)| *at);
    let rolled_back_at = rollback_time(input, first_failure.as_ref().map(|(_, at)| *at));
    let time_to_rollback = match (&first_failure, rolled_back_at) {
        (Some((_, failed)), Some(back)) if back >= *failed => Some(back.duration_since(*failed)),
        _ => None,
    };
    let (decision, why) = decision(input, runs);
    Summary {
        decision,
        why,
        canary_requests: canary_requests(runs),
        first_failure,
        time_to_rollback,
    }
}

fn decision(input: &ReportInput, runs: &[RunSeries]) -> (String, Option<String>) {
    if let Some(rollout) = &input.rollout {
        let phase = rollout.status.phase;
        let words = match phase {
            Some(RolloutPhase::Healthy) => "Promoted: all traffic on the new version",
            Some(RolloutPhase::Degraded) => "Rolled back: all traffic on the stable version",
            Some(RolloutPhase::Aborted) => "Aborted: all traffic on the stable version",
            Some(RolloutPhase::Paused) => "Paused: waiting",
            Some(RolloutPhase::Progressing) => "In progress",
            None => "Not started",
        };
        let phase = phase.map_or_else(|| "no phase".to_owned(), |p| format!("{p:?}"));
        return (format!("{words} ({phase})"), rollout.status.message.clone());
    }
    match runs.first() {
        Some(run) => (
            format!("Analysis {:?}", run.phase),
            run.message.clone().or_else(|| Some(String::new())),
        ),
        None => ("Nothing recorded".to_owned(), None),
    }
}

/// When all traffic went back to stable: the rollback event after the first failure, or
/// `status.abortedAt`.
fn rollback_time(input: &ReportInput, failed_at: Option<Timestamp>) -> Option<Timestamp> {
    let failed_at = failed_at?;
    let from_events = input
        .events
        .iter()
        .filter(|e| matches!(e.reason.as_str(), "AnalysisFailed" | "RolloutAborted"))
        .map(|e| e.time)
        .find(|time| *time >= failed_at);
    from_events.or_else(|| {
        input
            .rollout
            .as_ref()
            .and_then(|r| r.status.aborted_at.as_ref())
            .map(|t| t.0)
    })
}

fn canary_requests(runs: &[RunSeries]) -> Option<Counts> {
    let per_run: Vec<Counts> = runs
        .iter()
        .filter_map(|run| {
            run.metrics
                .iter()
                .filter(|m| m.kind == JudgeKind::SequentialCounts)
                .find_map(last_counts)
        })
        .collect();
    (!per_run.is_empty()).then(|| {
        per_run.iter().fold(Counts::default(), |sum, c| Counts {
            canary_errors: sum.canary_errors + c.canary_errors,
            canary_requests: sum.canary_requests + c.canary_requests,
            baseline_errors: sum.baseline_errors + c.baseline_errors,
            baseline_requests: sum.baseline_requests + c.baseline_requests,
        })
    })
}

fn last_counts(metric: &MetricSeries) -> Option<Counts> {
    metric.points.iter().rev().find_map(|p| p.counts)
}

//! `vigil report`: one self-contained HTML file about a release or an analysis run.
//!
//! Pure: the input is what status already records (a Rollout's spec and status, its events,
//! its AnalysisRuns with their measurements), read by the CLI from the cluster or from a
//! `vigil run` state directory. Plots are inline SVG drawn with plotters' SVG backend; the page
//! has no JavaScript and no external resource, and prints as it shows.
//!
//! - `series.rs`: measurements → plottable series (the judges' texts parsed back);
//! - `summary.rs`: the headline (decision, why, requests, time to rollback);
//! - `plot.rs`: the SVG charts; `html.rs`: the page.

mod html;
mod plot;
pub mod series;
pub mod summary;

#[cfg(test)]
mod hostile_tests;

use jiff::Timestamp;

use crate::api::{AnalysisPhase, AnalysisRunSpec, AnalysisRunStatus, RolloutSpec, RolloutStatus};
use series::MetricSeries;

/// Why a report could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// plotters failed to draw a chart.
    #[error("failed to draw the plot of {what}: {message}")]
    DrawPlot {
        /// Which chart.
        what: String,
        /// plotters' error.
        message: String,
    },
}

/// An event of the release (the engine's events, oldest first).
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEvent {
    /// When.
    pub time: Timestamp,
    /// `Normal` or `Warning`.
    pub type_: String,
    /// CamelCase reason, e.g. `StepCompleted`.
    pub reason: String,
    /// What happened.
    pub message: String,
}

/// The Rollout a report is about.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutInput {
    /// Its name (with the namespace on a cluster: `shop/web`).
    pub name: String,
    /// Its spec (the steps).
    pub spec: RolloutSpec,
    /// Its status.
    pub status: RolloutStatus,
}

/// An AnalysisRun a report draws.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInput {
    /// Its name.
    pub name: String,
    /// Its spec (which judge each metric uses; without it every metric reads as a threshold).
    pub spec: Option<AnalysisRunSpec>,
    /// Its status with the measurements.
    pub status: AnalysisRunStatus,
}

/// What a report is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportInput {
    /// The Rollout (absent for a report on one AnalysisRun).
    pub rollout: Option<RolloutInput>,
    /// Its events, oldest first.
    pub events: Vec<TimelineEvent>,
    /// Its runs, oldest first.
    pub runs: Vec<RunInput>,
    /// When the report was made (printed; the report reads no clock).
    pub generated_at: Timestamp,
}

/// One run's metrics as series.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSeries {
    /// The run's name.
    pub name: String,
    /// Its phase.
    pub phase: AnalysisPhase,
    /// Why.
    pub message: Option<String>,
    /// Its metrics.
    pub metrics: Vec<MetricSeries>,
}

/// The series of every metric of `run`.
pub fn run_series(run: &RunInput) -> RunSeries {
    let metrics = run
        .status
        .metric_results
        .iter()
        .map(|result| {
            let metric = run
                .spec
                .as_ref()
                .and_then(|spec| spec.metrics.iter().find(|m| m.name == result.name));
            series::metric_series(result, metric)
        })
        .collect();
    RunSeries {
        name: run.name.clone(),
        phase: run.status.phase.unwrap_or_default(),
        message: run.status.message.clone(),
        metrics,
    }
}

/// The whole HTML page.
pub fn render(input: &ReportInput) -> Result<String, ReportError> {
    let runs: Vec<RunSeries> = input.runs.iter().map(run_series).collect();
    let summary = summary::summarize(input, &runs);
    html::page(input, &runs, &summary)
}

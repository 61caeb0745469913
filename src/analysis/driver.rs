//! Advancing an AnalysisRun: the thin async shell around the pure lifecycle
//! (`analysis::run`). Shared by `vigil analyze`, the local platform and the controller.

use jiff::Timestamp;
use url::Url;

use crate::analysis::measure::{RunContext, measure_metric};
use crate::analysis::provider::prometheus::{ConcurrencyLimiter, PrometheusClient};
use crate::analysis::provider::resolve::{SecretReader, client_config};
use crate::analysis::run::{self, MetricSchedule, RunError};
use crate::api::{AnalysisPhase, AnalysisRunSpec, AnalysisRunStatus};

/// Why a run's providers could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A metric's provider cannot be configured.
    #[error("metrics[{index}] ({metric}): {reason}")]
    ConfigureProvider {
        /// Index of the metric.
        index: usize,
        /// The metric.
        metric: String,
        /// What is wrong.
        reason: String,
    },
    /// The run could not be planned or recorded.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// One client per metric, in the order of `spec.metrics`.
pub fn clients_for(
    spec: &AnalysisRunSpec,
    address_override: Option<&Url>,
    secrets: &dyn SecretReader,
    limiter: &ConcurrencyLimiter,
) -> Result<Vec<PrometheusClient>, DriverError> {
    spec.metrics
        .iter()
        .enumerate()
        .map(|(index, metric)| {
            let configure = |reason: String| DriverError::ConfigureProvider {
                index,
                metric: metric.name.clone(),
                reason,
            };
            let provider = metric
                .provider
                .prometheus
                .as_ref()
                .ok_or_else(|| configure("no provider.prometheus".to_owned()))?;
            let config = client_config(provider, address_override, secrets)
                .map_err(|e| configure(e.to_string()))?;
            PrometheusClient::new(config, limiter).map_err(|e| configure(e.to_string()))
        })
        .collect()
}

/// Where measurement times come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasureAt {
    /// At the instant each measurement fell due (replays: deterministic).
    DueTime,
    /// At the given instant (live: now).
    Now(Timestamp),
}

/// The outcome of one advance.
#[derive(Debug, Clone, PartialEq)]
pub struct Advanced {
    /// The updated status.
    pub status: AnalysisRunStatus,
    /// When the run next needs attention; None once it completed.
    pub next_at: Option<Timestamp>,
    /// How many measurements were taken.
    pub measured: usize,
}

/// Brings a run up to date at `now`: takes every measurement due (concurrently), judges and
/// records them, keeping at most `keep` measurements per metric.
pub async fn advance(
    spec: &AnalysisRunSpec,
    status: &AnalysisRunStatus,
    clients: &[PrometheusClient],
    now: Timestamp,
    at: MeasureAt,
    keep: usize,
) -> Result<Advanced, DriverError> {
    let plan = run::plan(spec, status, now)?;
    let mut status = plan.status;
    let started_at = status.started_at.as_ref().map_or(now, |t| t.0);
    let sequential_metrics = spec
        .metrics
        .iter()
        .filter(|m| m.sequential.is_some() && !m.dry_run)
        .count();
    let mut pending = Vec::with_capacity(plan.due.len());
    for due in &plan.due {
        let (Some(metric), Some(client)) = (spec.metrics.get(due.index), clients.get(due.index))
        else {
            continue;
        };
        let schedule = MetricSchedule::of(due.index, metric)?;
        let result = status.metric_results.iter().find(|r| r.name == metric.name);
        let taken_so_far = result.map_or(0, |r| r.count);
        let prior = result.and_then(|r| r.sequential_state.clone());
        let is_last = schedule.count.is_some_and(|c| taken_so_far + 1 >= c as i32);
        let when = match at {
            MeasureAt::DueTime => due.due_at,
            MeasureAt::Now(now) => now,
        };
        pending.push((metric, client, when, prior, is_last));
    }
    let measurements = pending
        .iter()
        .map(|(metric, client, when, prior, is_last)| async move {
            let context = RunContext {
                run_started: started_at,
                prior_state: prior.as_ref(),
                is_last: *is_last,
                sequential_metrics,
            };
            let measured = measure_metric(*client, metric, *when, context).await;
            (metric.name.clone(), *when, measured)
        });
    let taken = futures::future::join_all(measurements).await;
    let measured = taken.len();
    for (metric, when, measured) in taken {
        if status.phase.is_some_and(AnalysisPhase::is_completed) {
            break;
        }
        if let Some(result) = status.metric_results.iter_mut().find(|r| r.name == metric) {
            result.sequential_state = measured.judge_state.clone();
        }
        tracing::debug!(%metric, phase = ?measured.record.phase, "measured");
        run::record(
            spec,
            &mut status,
            &metric,
            measured.record,
            measured.decisive,
            keep,
            when,
        )?;
    }
    let next_at = if status.phase.is_some_and(AnalysisPhase::is_completed) {
        None
    } else if measured > 0 {
        // Recording may have changed what is due next: plan again.
        run::plan(spec, &status, now)?
            .next_measurement_at
            .or(Some(now))
    } else {
        plan.next_measurement_at
    };
    Ok(Advanced {
        status,
        next_at,
        measured,
    })
}

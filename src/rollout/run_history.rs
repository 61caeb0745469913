//! The AnalysisRun history limits (`spec.analysis.successfulRunHistoryLimit` and
//! `unsuccessfulRunHistoryLimit`, as Argo Rollouts'): which finished runs of a Rollout go.
//!
//! Every release creates runs and nothing else ever deletes them before the Rollout, so without
//! a limit the cluster and the controller's cache grow with every release. Like Argo Rollouts,
//! runs are counted newest first in two kinds, Successful, and unsuccessful (Failed, Error,
//! Inconclusive; and vigil's Terminated, a run stopped before a verdict); those beyond each
//! kind's limit are deleted. Unlike Argo, a run the status shows or the machine still wants is
//! never deleted, whatever the limit: the run of the current step, the background run, the
//! run whose failure explains an abort, and every run of the canary attempt in flight, in the
//! status observed as in the status decided (the decision's effects run before its status is
//! stored, so a run is deleted only once a stored status has left it). The limits therefore
//! apply to the runs of releases that ended.

use jiff::Timestamp;

use crate::api::{AnalysisPhase, AnalysisRunSummary, RolloutSpec, RolloutStatus};

use super::{
    Effect, Observation, background_run_name, post_promotion_run_name, pre_promotion_run_name,
    step_run_name,
};

/// Successful and unsuccessful runs kept when the spec does not say (Argo's default).
pub const DEFAULT_RUN_HISTORY_LIMIT: usize = 5;

/// How many finished runs of each kind a Rollout keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RunHistoryLimits {
    pub successful: usize,
    pub unsuccessful: usize,
}

impl RunHistoryLimits {
    /// The limits `spec` sets, [`DEFAULT_RUN_HISTORY_LIMIT`] for those it leaves out. A
    /// negative limit (an invalid spec, which holds every effect anyway) keeps everything.
    pub(crate) fn of(spec: &RolloutSpec) -> Self {
        let analysis = spec.analysis.as_ref();
        let limit = |value: Option<i32>| {
            value.map_or(DEFAULT_RUN_HISTORY_LIMIT, |v| {
                usize::try_from(v).unwrap_or(usize::MAX)
            })
        };
        RunHistoryLimits {
            successful: limit(analysis.and_then(|a| a.successful_run_history_limit)),
            unsuccessful: limit(analysis.and_then(|a| a.unsuccessful_run_history_limit)),
        }
    }
}

/// Which history a finished run counts in; `None` for a run not finished.
fn kind(phase: AnalysisPhase) -> Option<bool> {
    match phase {
        AnalysisPhase::Successful => Some(true),
        AnalysisPhase::Failed
        | AnalysisPhase::Error
        | AnalysisPhase::Inconclusive
        | AnalysisPhase::Terminated => Some(false),
        AnalysisPhase::Pending | AnalysisPhase::Running => None,
    }
}

/// The runs no history limit may delete while `status` is current: those it shows (the
/// step's and the background one) and, while a canary is in flight, every run its attempt can
/// have made (each analysis step's, a background run from any step, a blue-green release's
/// pre- and post-promotion run), so the runs of the release under way stay for its report
/// and for `vigil get` until it ends.
pub(crate) fn runs_in_status(
    spec: &RolloutSpec,
    rollout: &str,
    status: &RolloutStatus,
) -> Vec<String> {
    let mut names: Vec<String> = [&status.step_analysis, &status.background_analysis]
        .into_iter()
        .flatten()
        .map(|run| run.name.clone())
        .collect();
    let Some(canary) = status.canary_revision.as_deref() else {
        return names;
    };
    let attempt = status.canary_attempt;
    let steps = &spec.strategy.canary.steps;
    for (index, step) in steps.iter().enumerate() {
        let index = i32::try_from(index).unwrap_or(i32::MAX);
        if step.analysis.is_some() {
            names.push(step_run_name(rollout, canary, attempt, index));
        }
    }
    if spec.strategy.canary.analysis.is_some() {
        for index in 0..=steps.len() {
            let index = i32::try_from(index).unwrap_or(i32::MAX);
            names.push(background_run_name(rollout, canary, attempt, index));
        }
    }
    if spec.strategy.blue_green.is_some() {
        names.push(pre_promotion_run_name(rollout, canary, attempt));
        names.push(post_promotion_run_name(rollout, canary, attempt));
    }
    names
}

/// Deletions of the finished runs beyond `limits`, oldest first to go: runs are counted newest
/// first (by [`Observation::analysis_run_created_at`]; one without a known creation time counts
/// as oldest, ties by name), each kind against its own limit. The runs named in `kept` (wanted
/// or shown in status) are never deleted but count like the others, so which runs go does not
/// depend on what the status shows, and a status that leaves a run only ever frees that run.
pub(crate) fn run_history_effects(
    limits: RunHistoryLimits,
    kept: &[&str],
    obs: &Observation,
) -> Vec<Effect> {
    let created = |run: &AnalysisRunSummary| obs.analysis_run_created_at.get(&run.name).copied();
    let mut finished: Vec<(&AnalysisRunSummary, Option<Timestamp>, bool)> = obs
        .analysis_runs
        .iter()
        .filter_map(|run| Some((run, created(run), kind(run.phase)?)))
        .collect();
    finished.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.name.cmp(&b.0.name)));
    let (mut successful, mut unsuccessful) = (0usize, 0usize);
    let mut deletions = Vec::new();
    for (run, _, is_successful) in finished {
        let (seen, limit) = if is_successful {
            (&mut successful, limits.successful)
        } else {
            (&mut unsuccessful, limits.unsuccessful)
        };
        *seen += 1;
        if *seen > limit && !kept.contains(&run.name.as_str()) {
            deletions.push(Effect::DeleteAnalysisRun {
                name: run.name.clone(),
            });
        }
    }
    // Oldest first: a reconcile that stops half-way has deleted the least recent.
    deletions.reverse();
    deletions
}

#[cfg(test)]
#[path = "run_history_tests.rs"]
mod tests;

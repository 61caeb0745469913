//! `vigil history NAME` on a cluster: the releases read back from what the API keeps, the
//! Rollout's status and its AnalysisRuns (labelled `vigil.dev/rollout`, named
//! `<rollout>-<revision>-<attempt>-...`), turned into the same [`History`] `vigil run` writes,
//! so both print alike.
//!
//! What the cluster keeps decides what can be shown: a release is known by its AnalysisRuns
//! (the controller keeps the newest within the Rollout's `spec.analysis` history limits), and
//! the current one by the status. A past release without analysis, or whose runs the limits
//! deleted, left no trace and is not listed; time to restore is not known.

use std::collections::BTreeMap;

use jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::api::{AnalysisPhase, AnalysisRun, Rollout, RolloutPhase, RolloutStatus};
use crate::dora::{HISTORY_KEPT, History, Outcome, ReleaseRecord};
use crate::platform::kubernetes::context::{REVISION_LABEL, ROLLOUT_LABEL, rollout_label_value};

/// What one AnalysisRun tells about its release.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFacts {
    /// The canary revision it judged.
    pub revision: String,
    /// The canary attempt (from its name), when readable.
    pub attempt: Option<i32>,
    /// When it started (its `startedAt`, else its creation).
    pub started_at: Option<Timestamp>,
    /// When it ended (its `completedAt`, else its last measurement), once completed.
    pub ended_at: Option<Timestamp>,
    /// Its phase.
    pub phase: AnalysisPhase,
    /// Why.
    pub message: Option<String>,
}

/// Why the history could not be read from the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterHistoryError {
    /// No kubeconfig or cluster.
    #[error(
        "failed to configure the Kubernetes client: {0} ({1:?} has no history in the state directory either: pass --state-dir)"
    )]
    ConfigureClient(#[source] kube::Error, String),
    /// An object could not be read.
    #[error("failed to read {what} from the cluster: {source}")]
    ReadCluster {
        /// What.
        what: String,
        /// The cause.
        source: kube::Error,
    },
    /// No Rollout of that name.
    #[error("no Rollout named {name:?} in namespace {namespace}")]
    FindRollout {
        /// The name.
        name: String,
        /// The namespace.
        namespace: String,
    },
}

/// The attempt in a run name `<rollout>-<revision>-<attempt>-<kind>`.
pub fn attempt_of(run_name: &str, rollout: &str, revision: &str) -> Option<i32> {
    let rest = run_name.strip_prefix(&format!("{rollout}-{revision}-"))?;
    rest.split('-').next()?.parse().ok()
}

/// The facts of one AnalysisRun of `rollout`; `None` without a revision label.
pub fn run_facts(rollout: &str, run: &AnalysisRun) -> Option<RunFacts> {
    let revision = run.labels().get(REVISION_LABEL)?.clone();
    let status = run.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_default();
    let last_measurement = status
        .metric_results
        .iter()
        .flat_map(|m| m.measurements.iter().map(|r| r.started_at.0))
        .max();
    let ended_at = phase
        .is_completed()
        .then(|| {
            status
                .completed_at
                .as_ref()
                .map(|t| t.0)
                .or(last_measurement)
        })
        .flatten();
    Some(RunFacts {
        attempt: attempt_of(&run.name_any(), rollout, &revision),
        revision,
        started_at: status
            .started_at
            .as_ref()
            .map(|t| t.0)
            .or_else(|| run.metadata.creation_timestamp.as_ref().map(|t| t.0)),
        ended_at,
        phase,
        message: status.message,
    })
}

/// The releases `runs` and the Rollout's `status` show, oldest first (at most
/// [`HISTORY_KEPT`]). A release is one canary attempt of a revision:
/// - rolled back when one of its runs Failed or ended in Error (the run's message says why),
///   or when it is the current canary of a Degraded/Aborted Rollout;
/// - in progress when it is the current canary of a Progressing/Paused Rollout;
/// - promoted when it is the stable revision's last attempt, or when every run of it
///   succeeded (it then became stable and was later replaced);
/// - superseded otherwise (a newer release replaced it before a verdict).
pub fn releases(status: &RolloutStatus, runs: &[RunFacts]) -> History {
    let mut attempts: BTreeMap<(String, i32), Vec<&RunFacts>> = BTreeMap::new();
    for run in runs {
        let attempt = run.attempt.unwrap_or(0);
        attempts
            .entry((run.revision.clone(), attempt))
            .or_default()
            .push(run);
    }
    let current = status
        .canary_revision
        .clone()
        .map(|revision| (revision, status.canary_attempt));
    let mut found: Vec<ReleaseRecord> = attempts
        .iter()
        .filter_map(|((revision, attempt), runs)| {
            let started_at = runs.iter().filter_map(|r| r.started_at).min()?;
            let failed = runs
                .iter()
                .find(|r| matches!(r.phase, AnalysisPhase::Failed | AnalysisPhase::Error));
            let is_current = current.as_ref() == Some(&(revision.clone(), *attempt));
            let last_of_stable = status.stable_revision.as_deref() == Some(revision)
                && !attempts.keys().any(|(r, a)| r == revision && a > attempt);
            let all_ended = runs.iter().all(|r| r.ended_at.is_some());
            let ended_at = runs.iter().filter_map(|r| r.ended_at).max();
            let (outcome, reason, ended_at) = match failed {
                Some(run) => (Outcome::RolledBack, run.message.clone(), run.ended_at),
                None if is_current => current_outcome(status, ended_at),
                None if last_of_stable => (Outcome::Promoted, None, ended_at),
                None if all_ended && runs.iter().all(|r| r.phase == AnalysisPhase::Successful) => {
                    (Outcome::Promoted, None, ended_at)
                }
                None => (Outcome::Superseded, None, ended_at),
            };
            Some(ReleaseRecord {
                revision: revision.clone(),
                attempt: *attempt,
                started_at,
                ended_at: if outcome == Outcome::InProgress {
                    None
                } else {
                    ended_at
                },
                outcome,
                reason,
                time_to_restore_seconds: None,
                report: None,
            })
        })
        .collect();
    found.sort_by_key(|r| r.started_at);
    let excess = found.len().saturating_sub(HISTORY_KEPT);
    found.drain(..excess);
    History { releases: found }
}

/// The outcome of the current canary by the Rollout's phase.
fn current_outcome(
    status: &RolloutStatus,
    ended_at: Option<Timestamp>,
) -> (Outcome, Option<String>, Option<Timestamp>) {
    match status.phase {
        Some(RolloutPhase::Degraded | RolloutPhase::Aborted) => (
            Outcome::RolledBack,
            status.message.clone(),
            status.aborted_at.as_ref().map(|t| t.0).or(ended_at),
        ),
        Some(RolloutPhase::Healthy) => (Outcome::Promoted, None, ended_at),
        _ => (Outcome::InProgress, None, None),
    }
}

/// Reads the Rollout `name` and its AnalysisRuns from the cluster; returns its history.
pub async fn read(name: &str, namespace: Option<&str>) -> Result<History, ClusterHistoryError> {
    let client = Client::try_default()
        .await
        .map_err(|e| ClusterHistoryError::ConfigureClient(e, name.to_owned()))?;
    let namespace = namespace.map_or_else(|| client.default_namespace().to_owned(), str::to_owned);
    let read_error = |what: &str| {
        let what = what.to_owned();
        move |source| ClusterHistoryError::ReadCluster { what, source }
    };
    let rollout = Api::<Rollout>::namespaced(client.clone(), &namespace)
        .get_opt(name)
        .await
        .map_err(read_error("the Rollout"))?
        .ok_or_else(|| ClusterHistoryError::FindRollout {
            name: name.to_owned(),
            namespace: namespace.clone(),
        })?;
    let selector = format!("{ROLLOUT_LABEL}={}", rollout_label_value(name));
    let listed = Api::<AnalysisRun>::namespaced(client, &namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(read_error("the Rollout's AnalysisRuns"))?;
    let runs: Vec<RunFacts> = listed
        .items
        .iter()
        .filter_map(|run| run_facts(name, run))
        .collect();
    Ok(releases(&rollout.status.unwrap_or_default(), &runs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Option<Timestamp> {
        Timestamp::from_second(1_800_000_000 + second).ok()
    }

    fn run(
        revision: &str,
        attempt: i32,
        start: i64,
        end: Option<i64>,
        phase: AnalysisPhase,
    ) -> RunFacts {
        RunFacts {
            revision: revision.to_owned(),
            attempt: Some(attempt),
            started_at: at(start),
            ended_at: end.and_then(at),
            phase,
            message: None,
        }
    }

    #[test]
    fn run_names_give_the_attempt() {
        assert_eq!(attempt_of("web-bbb-3-step1", "web", "bbb"), Some(3));
        assert_eq!(attempt_of("web-bbb-12-pre", "web", "bbb"), Some(12));
        assert_eq!(attempt_of("other-bbb-3-step1", "web", "bbb"), None);
        assert_eq!(attempt_of("web-bbb-x-step1", "web", "bbb"), None);
    }

    #[test]
    fn runs_and_status_make_the_releases() {
        let mut failed = run("ccc", 2, 200, Some(260), AnalysisPhase::Failed);
        failed.message = Some("metric \"error-rate\" failed".to_owned());
        let runs = vec![
            run("bbb", 1, 0, Some(60), AnalysisPhase::Successful),
            run("bbb", 1, 60, Some(120), AnalysisPhase::Successful),
            failed,
            run("ddd", 3, 300, None, AnalysisPhase::Running),
        ];
        let status = RolloutStatus {
            phase: Some(RolloutPhase::Progressing),
            stable_revision: Some("bbb".to_owned()),
            canary_revision: Some("ddd".to_owned()),
            canary_attempt: 3,
            ..RolloutStatus::default()
        };
        let history = releases(&status, &runs);
        let outcomes: Vec<(&str, i32, Outcome)> = history
            .releases
            .iter()
            .map(|r| (r.revision.as_str(), r.attempt, r.outcome))
            .collect();
        assert_eq!(
            outcomes,
            [
                ("bbb", 1, Outcome::Promoted),
                ("ccc", 2, Outcome::RolledBack),
                ("ddd", 3, Outcome::InProgress),
            ]
        );
        assert_eq!(history.releases[0].duration_seconds(), Some(120.0));
        assert_eq!(
            history.releases[1].reason.as_deref(),
            Some("metric \"error-rate\" failed")
        );
        assert_eq!(history.releases[2].ended_at, None);

        // The same canary after its automatic rollback: rolled back, with the status' reason.
        let degraded = RolloutStatus {
            phase: Some(RolloutPhase::Degraded),
            message: Some("step analysis failed".to_owned()),
            ..status
        };
        let runs = vec![run("ddd", 3, 300, Some(330), AnalysisPhase::Inconclusive)];
        let history = releases(&degraded, &runs);
        assert_eq!(history.releases[0].outcome, Outcome::RolledBack);
        assert_eq!(
            history.releases[0].reason.as_deref(),
            Some("step analysis failed")
        );
    }
}

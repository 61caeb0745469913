//! Which user requests would do nothing, and why: both platforms refuse them with the same
//! words (exit code 3 on the command line) instead of answering "recorded" for a request the
//! rollout then ignores. A request is checked against the status as read; a request that
//! passes here can still be overtaken by the rollout moving on by itself (a stale promote is
//! ignored, as the module docs say).

use crate::api::{AnalysisPhase, AnalysisRunSummary, PauseReason, RolloutPhase, RolloutStatus};

use super::{RequestError, UserRequest};

/// Refuses `request` on the Rollout `name` when it would do nothing: promote on a Rollout with
/// no canary in progress or an aborted one, abort with nothing to abort, retry on a canary
/// that was not aborted, pause on a paused Rollout, resume on one that is not paused, re-run
/// when no analysis is undecided. `spec_paused` is `spec.paused` as read.
pub fn refuse_no_op(
    name: &str,
    spec_paused: bool,
    status: Option<&RolloutStatus>,
    request: UserRequest,
) -> Result<(), RequestError> {
    let default = RolloutStatus::default();
    let status = status.unwrap_or(&default);
    let refuse = |why: String| {
        Err(RequestError::NothingToDo {
            name: name.to_owned(),
            why,
        })
    };
    let in_flight = status.canary_revision.is_some();
    let aborted = status.abort || status.aborted_at.is_some();
    let phase = phase_name(status);
    match request {
        UserRequest::Promote { .. } | UserRequest::PromoteFull if !in_flight => refuse(format!(
            "it is {phase} with no canary in progress; nothing to promote"
        )),
        UserRequest::Promote { .. } | UserRequest::PromoteFull if aborted => refuse(format!(
            "its canary was rolled back ({phase}); `vigil retry {name}` starts it again"
        )),
        UserRequest::Abort if !in_flight => refuse(format!(
            "it is {phase} with no canary in progress; nothing to abort"
        )),
        UserRequest::Abort if aborted => refuse(format!(
            "its canary was already rolled back ({phase}); the stable revision serves all traffic"
        )),
        UserRequest::Retry if !in_flight => refuse(format!(
            "it is {phase} with no canary in progress; retry starts a rolled-back canary again"
        )),
        UserRequest::Retry if !status.abort && status.aborted_at.is_none() => refuse(format!(
            "its canary was not rolled back (it is {phase}); retry starts a rolled-back canary \
             again{}",
            paused_hint(name, status)
        )),
        UserRequest::Pause if spec_paused => refuse("it is already paused".into()),
        UserRequest::Resume if !spec_paused => refuse(format!(
            "it is not paused by `vigil pause` (spec.paused is false){}",
            paused_hint(name, status)
        )),
        UserRequest::RerunAnalysis if undecided_run(status).is_none() => refuse(format!(
            "no analysis is waiting for a person (it is {phase}); --analysis runs an \
             Inconclusive, Error or Terminated analysis again"
        )),
        _ => Ok(()),
    }
}

/// The AnalysisRun a re-run replaces: the step or background analysis whose verdict is
/// undecided (Inconclusive, Error, Terminated) while the rollout waits for a person.
pub fn undecided_run(status: &RolloutStatus) -> Option<&AnalysisRunSummary> {
    let waiting = status.phase == Some(RolloutPhase::Paused)
        && status
            .pause_conditions
            .iter()
            .any(|p| p.reason == PauseReason::InconclusiveAnalysis);
    if !waiting || status.abort {
        return None;
    }
    [&status.step_analysis, &status.background_analysis]
        .into_iter()
        .flatten()
        .find(|run| {
            matches!(
                run.phase,
                AnalysisPhase::Inconclusive | AnalysisPhase::Error | AnalysisPhase::Terminated
            )
        })
}

fn phase_name(status: &RolloutStatus) -> String {
    status
        .phase
        .map_or_else(|| "not reconciled yet".to_owned(), |p| p.to_string())
}

/// What a person can do with a paused rollout instead.
fn paused_hint(name: &str, status: &RolloutStatus) -> String {
    let reasons = |reason| status.pause_conditions.iter().any(|p| p.reason == reason);
    if reasons(PauseReason::InconclusiveAnalysis) {
        format!(
            "; it waits for a person after an undecided analysis: `vigil promote {name}` \
             continues, `vigil abort {name}` rolls back, `vigil retry {name} --analysis` runs \
             the analysis again"
        )
    } else if reasons(PauseReason::CanaryPauseStep) {
        format!("; it waits at a pause step: `vigil promote {name}` finishes it")
    } else {
        String::new()
    }
}

#[cfg(test)]
#[path = "request_checks_tests.rs"]
mod tests;

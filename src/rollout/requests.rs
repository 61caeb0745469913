//! User requests (`vigil promote|abort|retry|pause|resume`), turned into the status fields
//! they write, once for both platforms: the Kubernetes CLI sends them as a status patch, the
//! local engine applies them to the status it keeps. See the table in the module docs.

use serde::{Deserialize, Serialize};

use crate::api::RolloutStatus;

/// A request from a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UserRequest {
    /// Finish the current step (the index seen, or the current one).
    Promote {
        /// The step index the user saw; `None` means the current one.
        step: Option<i32>,
    },
    /// Skip the remaining steps.
    PromoteFull,
    /// Roll back to stable.
    Abort,
    /// Start an aborted canary again from step 0.
    Retry,
    /// Stop moving (`spec.paused`).
    Pause,
    /// Move again.
    Resume,
    /// Run the undecided analysis (Inconclusive, Error, Terminated) again, after an outage
    /// of what it measures: its AnalysisRun is deleted and the rollout creates it anew.
    RerunAnalysis,
}

impl UserRequest {
    /// Parses an action name (`promote`, `promote-full`, `abort`, `retry`, `pause`, `resume`).
    pub fn from_action(action: &str) -> Option<Self> {
        Some(match action {
            "promote" => UserRequest::Promote { step: None },
            "promote-full" => UserRequest::PromoteFull,
            "abort" => UserRequest::Abort,
            "retry" => UserRequest::Retry,
            "pause" => UserRequest::Pause,
            "resume" => UserRequest::Resume,
            "rerun-analysis" => UserRequest::RerunAnalysis,
            _ => return None,
        })
    }

    /// What a request that was accepted does, for the person who sent it.
    pub fn describe(self, name: &str) -> String {
        match self {
            UserRequest::Promote { .. } => format!(
                "rollout {name}: promote accepted; the current step finishes and the rollout \
                 moves on"
            ),
            UserRequest::PromoteFull => format!(
                "rollout {name}: promote --full accepted; the remaining steps and analysis are \
                 skipped"
            ),
            UserRequest::Abort => format!(
                "rollout {name}: abort accepted; all traffic goes back to the stable revision"
            ),
            UserRequest::Retry => format!(
                "rollout {name}: retry accepted; the canary starts again from the first step"
            ),
            UserRequest::Pause => {
                format!("rollout {name}: paused; nothing moves until `vigil resume {name}`")
            }
            UserRequest::Resume => format!("rollout {name}: resumed"),
            UserRequest::RerunAnalysis => {
                format!("rollout {name}: the undecided analysis runs again from the start")
            }
        }
    }

    /// `spec.paused` as this request sets it; `None` for requests that write status.
    pub fn paused(self) -> Option<bool> {
        match self {
            UserRequest::Pause => Some(true),
            UserRequest::Resume => Some(false),
            _ => None,
        }
    }
}

/// A request that cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// `promote` without a step index, on a Rollout whose status has none (never reconciled).
    /// Both platforms refuse it (the local engine once promoted "step 0" of nothing): a
    /// promote must name the step the user saw, or it could finish a step nobody looked at.
    #[error("rollout {0} is not at a step (no canary in progress); nothing to promote")]
    PromoteWithoutStep(String),
    /// The request would change nothing (see [`super::refuse_no_op`]).
    #[error("nothing done: rollout {name}: {why}")]
    NothingToDo {
        /// The Rollout.
        name: String,
        /// Why the request would do nothing, and what would.
        why: String,
    },
}

/// The status fields a request writes (camelCase, as the status subresource takes them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusRequest {
    /// `status.promoteStep`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promote_step: Option<i32>,
    /// `status.promoteFull` (only ever set to true).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub promote_full: bool,
    /// `status.abort`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort: Option<bool>,
}

impl StatusRequest {
    /// Writes the request into `status`.
    pub fn apply_to(&self, status: &mut RolloutStatus) {
        if let Some(step) = self.promote_step {
            status.promote_step = Some(step);
        }
        if self.promote_full {
            status.promote_full = true;
        }
        if let Some(abort) = self.abort {
            status.abort = abort;
        }
    }
}

/// The status fields `request` writes on the Rollout `name` whose status reads `status`;
/// `None` for pause and resume, which write `spec.paused` ([`UserRequest::paused`]), and for
/// a re-run, which deletes the undecided AnalysisRun ([`super::undecided_run`]).
pub fn status_request(
    name: &str,
    status: Option<&RolloutStatus>,
    request: UserRequest,
) -> Result<Option<StatusRequest>, RequestError> {
    let request = match request {
        UserRequest::Promote { step } => StatusRequest {
            promote_step: Some(
                step.or_else(|| status.and_then(|s| s.current_step_index))
                    .ok_or_else(|| RequestError::PromoteWithoutStep(name.to_owned()))?,
            ),
            ..StatusRequest::default()
        },
        UserRequest::PromoteFull => StatusRequest {
            promote_full: true,
            ..StatusRequest::default()
        },
        UserRequest::Abort | UserRequest::Retry => StatusRequest {
            abort: Some(request == UserRequest::Abort),
            ..StatusRequest::default()
        },
        UserRequest::Pause | UserRequest::Resume | UserRequest::RerunAnalysis => return Ok(None),
    };
    Ok(Some(request))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_step(index: i32) -> RolloutStatus {
        RolloutStatus {
            current_step_index: Some(index),
            ..RolloutStatus::default()
        }
    }

    #[test]
    fn promote_names_the_step_seen_or_the_current_one() {
        let status = at_step(2);
        let seen = status_request("web", Some(&status), UserRequest::Promote { step: Some(1) });
        assert_eq!(seen.expect("ok").expect("status").promote_step, Some(1));
        let current = status_request("web", Some(&status), UserRequest::Promote { step: None });
        assert_eq!(current.expect("ok").expect("status").promote_step, Some(2));
    }

    #[test]
    fn promote_without_a_step_is_refused() {
        for status in [None, Some(RolloutStatus::default())] {
            assert_eq!(
                status_request("web", status.as_ref(), UserRequest::Promote { step: None }),
                Err(RequestError::PromoteWithoutStep("web".into()))
            );
        }
    }

    #[test]
    fn each_request_writes_its_fields() {
        let write = |request| {
            let mut status = at_step(1);
            if let Some(request) = status_request("web", Some(&at_step(1)), request).expect("ok") {
                request.apply_to(&mut status);
            }
            status
        };
        assert!(write(UserRequest::PromoteFull).promote_full);
        assert!(write(UserRequest::Abort).abort);
        let mut aborted = at_step(1);
        aborted.abort = true;
        status_request("web", None, UserRequest::Retry)
            .expect("ok")
            .expect("status")
            .apply_to(&mut aborted);
        assert!(!aborted.abort);
        assert_eq!(write(UserRequest::Pause), at_step(1));
        assert_eq!(UserRequest::Pause.paused(), Some(true));
        assert_eq!(UserRequest::Resume.paused(), Some(false));
    }

    #[test]
    fn the_patch_uses_the_status_field_names() {
        let request = StatusRequest {
            promote_step: Some(3),
            ..StatusRequest::default()
        };
        assert_eq!(
            serde_json::to_value(&request).expect("json"),
            serde_json::json!({"promoteStep": 3})
        );
        let abort = StatusRequest {
            abort: Some(false),
            ..StatusRequest::default()
        };
        assert_eq!(
            serde_json::to_value(&abort).expect("json"),
            serde_json::json!({"abort": false})
        );
    }
}

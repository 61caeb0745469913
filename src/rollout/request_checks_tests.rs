use super::*;
use crate::api::PauseCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

fn status(phase: RolloutPhase) -> RolloutStatus {
    RolloutStatus {
        phase: Some(phase),
        stable_revision: Some("aaa".into()),
        current_step_index: Some(1),
        ..RolloutStatus::default()
    }
}

fn canary(phase: RolloutPhase) -> RolloutStatus {
    RolloutStatus {
        canary_revision: Some("bbb".into()),
        ..status(phase)
    }
}

fn rolled_back() -> RolloutStatus {
    RolloutStatus {
        abort: true,
        aborted_at: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
        ..canary(RolloutPhase::Degraded)
    }
}

fn paused_for(reason: PauseReason, run: Option<AnalysisPhase>) -> RolloutStatus {
    RolloutStatus {
        pause_conditions: vec![PauseCondition {
            reason,
            start_time: Time(jiff::Timestamp::UNIX_EPOCH),
        }],
        step_analysis: run.map(|phase| AnalysisRunSummary {
            name: "web-bbb-1-step1".into(),
            phase,
            ..AnalysisRunSummary::default()
        }),
        ..canary(RolloutPhase::Paused)
    }
}

fn why(paused: bool, status: &RolloutStatus, request: UserRequest) -> String {
    match refuse_no_op("web", paused, Some(status), request) {
        Err(RequestError::NothingToDo { why, .. }) => why,
        other => panic!("{request:?} should be refused, got {other:?}"),
    }
}

#[test]
fn verbs_that_would_do_nothing_are_refused_with_the_reason() {
    let healthy = status(RolloutPhase::Healthy);
    let promote = UserRequest::Promote { step: None };
    assert!(why(false, &healthy, promote).contains("Healthy with no canary"));
    assert!(why(false, &healthy, UserRequest::PromoteFull).contains("nothing to promote"));
    assert!(why(false, &healthy, UserRequest::Abort).contains("nothing to abort"));
    assert!(why(false, &rolled_back(), UserRequest::Abort).contains("already rolled back"));
    assert!(why(false, &rolled_back(), promote).contains("vigil retry web"));
    let inconclusive = paused_for(
        PauseReason::InconclusiveAnalysis,
        Some(AnalysisPhase::Inconclusive),
    );
    let retry = why(false, &inconclusive, UserRequest::Retry);
    assert!(retry.contains("not rolled back"), "{retry}");
    assert!(retry.contains("vigil retry web --analysis"), "{retry}");
    assert!(why(true, &inconclusive, UserRequest::Pause).contains("already paused"));
    let at_pause_step = paused_for(PauseReason::CanaryPauseStep, None);
    let resume = why(false, &at_pause_step, UserRequest::Resume);
    assert!(resume.contains("vigil promote web"), "{resume}");
    let rerun = why(false, &at_pause_step, UserRequest::RerunAnalysis);
    assert!(rerun.contains("no analysis is waiting"), "{rerun}");
}

#[test]
fn verbs_that_act_pass() {
    let progressing = canary(RolloutPhase::Progressing);
    for (paused, status, request) in [
        (false, &progressing, UserRequest::Promote { step: Some(1) }),
        (false, &progressing, UserRequest::PromoteFull),
        (false, &progressing, UserRequest::Abort),
        (false, &progressing, UserRequest::Pause),
        (true, &progressing, UserRequest::Resume),
        (false, &rolled_back(), UserRequest::Retry),
    ] {
        assert_eq!(
            refuse_no_op("web", paused, Some(status), request),
            Ok(()),
            "{request:?}"
        );
    }
    let error = paused_for(
        PauseReason::InconclusiveAnalysis,
        Some(AnalysisPhase::Error),
    );
    assert_eq!(
        refuse_no_op("web", false, Some(&error), UserRequest::RerunAnalysis),
        Ok(())
    );
    assert_eq!(
        undecided_run(&error).map(|run| run.name.as_str()),
        Some("web-bbb-1-step1")
    );
}

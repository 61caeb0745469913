use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::api::{AnalysisRunSummary, PauseCondition};
use crate::rollout::EventType;

const SHOP_WEB: RolloutRef<'static> = RolloutRef {
    namespace: Some("shop"),
    name: "web",
};

fn status(step: i32, phase: RolloutPhase) -> RolloutStatus {
    RolloutStatus {
        phase: Some(phase),
        current_step_index: Some(step),
        step: Some(format!("{step}/4")),
        stable_revision: Some("aaa111".into()),
        canary_revision: Some("bbb222".into()),
        canary_weight: 20,
        canary_attempt: 2,
        ..RolloutStatus::default()
    }
}

fn event(reason: &str, message: &str) -> Effect {
    Effect::Event {
        type_: EventType::Normal,
        reason: reason.into(),
        message: message.into(),
    }
}

fn decided(after: RolloutStatus, events: Vec<Effect>) -> Decision {
    Decision {
        status: after,
        effects: events,
        requeue_at: None,
        webhook_calls: Vec::new(),
    }
}

fn paused(reason: PauseReason) -> PauseCondition {
    PauseCondition {
        reason,
        start_time: Time(Timestamp::UNIX_EPOCH),
    }
}

fn failed_analysis() -> AnalysisRunSummary {
    AnalysisRunSummary {
        name: "web-bbb222-2-step1".into(),
        phase: AnalysisPhase::Failed,
        message: Some("error-rate failed".into()),
        metrics: vec![
            MetricSummary {
                name: "error-rate".into(),
                phase: AnalysisPhase::Failed,
                value: Some("0.12".into()),
                reason: Some("result[0] < 0.05 is false".into()),
            },
            MetricSummary {
                name: "latency".into(),
                phase: AnalysisPhase::Successful,
                value: Some("0.2".into()),
                reason: None,
            },
        ],
        score: None,
    }
}

/// One row per trigger: the decision, then what its one message must say.
#[test]
fn each_trigger_is_worded_with_what_a_person_needs() {
    let before = status(1, RolloutPhase::Progressing);
    let mut rolled_back = status(1, RolloutPhase::Degraded);
    rolled_back.canary_weight = 0;
    rolled_back.step_analysis = Some(failed_analysis());
    let mut inconclusive = status(1, RolloutPhase::Paused);
    inconclusive.message = Some("step 1/4: analysis inconclusive: error-rate no data".into());
    inconclusive.pause_conditions = vec![paused(PauseReason::InconclusiveAnalysis)];
    let mut pause_step = status(2, RolloutPhase::Paused);
    pause_step.message = Some("step 2/4: paused until promoted (vigil promote)".into());
    pause_step.pause_conditions = vec![paused(PauseReason::CanaryPauseStep)];
    let mut promoted = status(4, RolloutPhase::Healthy);
    promoted.stable_revision = Some("bbb222".into());
    promoted.canary_revision = None;
    promoted.canary_weight = 0;
    let rows: Vec<(Decision, Trigger, Vec<&str>)> = vec![
        (
            decided(
                status(0, RolloutPhase::Progressing),
                vec![event(
                    "RolloutStarted",
                    "canary bbb222 started against stable aaa111",
                )],
            ),
            Trigger::OnStarted,
            vec![
                "vigil: rollout shop/web release started",
                "canary bbb222 started against stable aaa111",
                "`vigil get rollout web -n shop`",
            ],
        ),
        (
            decided(
                status(2, RolloutPhase::Progressing),
                vec![event("StepCompleted", "step 2/4 (setWeight 20) completed")],
            ),
            Trigger::OnStepCompleted,
            vec![
                "shop/web step completed",
                "step 2/4 (setWeight 20) completed",
                "canary weight 20%",
            ],
        ),
        (
            decided(inconclusive, vec![]),
            Trigger::OnPaused,
            vec![
                "shop/web paused",
                "analysis inconclusive: error-rate no data",
                "`vigil promote web -n shop` to accept it or `vigil abort web -n shop`",
            ],
        ),
        (
            decided(pause_step, vec![]),
            Trigger::OnPaused,
            vec![
                "paused until promoted",
                "`vigil promote web -n shop` to continue",
            ],
        ),
        (
            decided(
                promoted,
                vec![event(
                    "RolloutCompleted",
                    "revision bbb222 promoted to stable (was aaa111)",
                )],
            ),
            Trigger::OnPromoted,
            vec![
                "shop/web promoted",
                "revision bbb222 promoted to stable (was aaa111)",
                "stable bbb222",
            ],
        ),
        (
            decided(
                rolled_back.clone(),
                vec![event(
                    "AnalysisFailed",
                    "step analysis failed at step 1/4: error-rate: result[0] < 0.05 is false; stable revision aaa111 serves all traffic",
                )],
            ),
            Trigger::OnRolledBack,
            vec![
                "shop/web rolled back",
                "metric error-rate: Failed, value 0.12: result[0] < 0.05 is false",
                "canary bbb222, stable aaa111; canary weight 0%",
                "`vigil retry web -n shop`",
            ],
        ),
        (
            decided(
                status(1, RolloutPhase::Degraded),
                vec![event(
                    "ProgressDeadlineExceeded",
                    "step 1/4 did not converge within progressDeadlineSeconds 600",
                )],
            ),
            Trigger::OnProgressDeadline,
            vec![
                "rolled back: progress deadline exceeded",
                "did not converge within progressDeadlineSeconds 600",
                "`vigil retry web -n shop`",
            ],
        ),
    ];
    for (decision, trigger, says) in rows {
        let found = transitions(&before, &decision);
        assert_eq!(found.len(), 1, "{trigger:?}: {found:?}");
        assert_eq!(found[0].trigger, trigger);
        let text = Message::of(SHOP_WEB, &found[0]).text();
        for part in says {
            assert!(text.contains(part), "{trigger:?}: {part:?} not in\n{text}");
        }
        assert!(
            !text.contains("latency"),
            "a Successful metric is no news: {text}"
        );
    }
}

#[test]
fn events_no_trigger_names_and_pauses_already_recorded_fire_nothing() {
    let mut before = status(1, RolloutPhase::Paused);
    before.pause_conditions = vec![paused(PauseReason::CanaryPauseStep)];
    let decision = decided(
        before.clone(),
        vec![event("TrafficWeightRestored", "weight put back")],
    );
    assert_eq!(transitions(&before, &decision), vec![]);
}

#[test]
fn the_dedupe_key_names_rollout_revision_attempt_trigger_and_step() {
    let before = status(1, RolloutPhase::Progressing);
    let decision = decided(
        status(2, RolloutPhase::Progressing),
        vec![event("StepCompleted", "step 2/4 completed")],
    );
    let found = transitions(&before, &decision);
    let message = Message::of(SHOP_WEB, &found[0]);
    assert_eq!(message.dedupe_key, "shop/web/bbb222/2/on-step-completed/1");
}

#[test]
fn locally_the_commands_are_vigil_local_ones() {
    let before = status(1, RolloutPhase::Progressing);
    let decision = decided(
        status(1, RolloutPhase::Degraded),
        vec![event("RolloutAborted", "aborted by a user at step 1/4")],
    );
    let found = transitions(&before, &decision);
    let local = RolloutRef {
        namespace: None,
        name: "web",
    };
    let text = Message::of(local, &found[0]).text();
    assert!(text.starts_with("vigil: rollout web rolled back"), "{text}");
    assert!(text.contains("`vigil retry web`"), "{text}");
}

#[test]
fn slack_text_cannot_mention_or_link_and_is_bounded() {
    let before = status(1, RolloutPhase::Progressing);
    let mut after = status(1, RolloutPhase::Degraded);
    let mut analysis = failed_analysis();
    analysis.metrics[0].reason = Some(format!(
        "<!channel> <https://evil|click> & {}",
        "x".repeat(5000)
    ));
    after.step_analysis = Some(analysis);
    let decision = decided(after, vec![event("AnalysisFailed", "failed")]);
    let found = transitions(&before, &decision);
    let body = body(SinkKind::Slack, SHOP_WEB, &found[0]);
    let text = body["text"].as_str().expect("text");
    assert!(
        !text.contains("<!channel>") && !text.contains("<https"),
        "{text}"
    );
    assert!(text.contains("&lt;!channel&gt;"), "{text}");
    assert_eq!(body["blocks"][0]["text"]["text"], body["text"]);
    // Escaping may lengthen it a little; the text itself is bounded.
    assert!(
        text.chars().count() < MAX_TEXT_CHARS + 100,
        "{}",
        text.len()
    );
}

#[test]
fn the_webhook_body_carries_every_field() {
    let before = status(1, RolloutPhase::Progressing);
    let mut after = status(1, RolloutPhase::Degraded);
    after.step_analysis = Some(failed_analysis());
    let decision = decided(after, vec![event("AnalysisFailed", "failed at 1/4")]);
    let found = transitions(&before, &decision);
    let body = body(SinkKind::Webhook, SHOP_WEB, &found[0]);
    assert_eq!(body["trigger"], "on-rolled-back");
    assert_eq!(body["rollout"], "web");
    assert_eq!(body["namespace"], "shop");
    assert_eq!(body["phase"], "Degraded");
    assert_eq!(body["canaryRevision"], "bbb222");
    assert_eq!(body["stableRevision"], "aaa111");
    assert_eq!(body["metrics"][0]["name"], "error-rate");
    assert_eq!(body["metrics"][0]["value"], "0.12");
    assert_eq!(
        body["next"],
        "fix the cause and `vigil retry web -n shop` to try this revision again (or release a new one)"
    );
}

//! Whole rollouts driven through `rollout::step` by a simulated cluster (see `rollout_sim`).

mod rollout_sim;

use jiff::SignedDuration;
use rollout_sim::*;
use vigil::api::{AnalysisPhase, PauseReason, RolloutPhase};
use vigil::rollout::{Decision, Effect, EventType, SpecProblem, step};

fn canary_steps() -> Vec<vigil::api::CanaryStep> {
    vec![
        set_weight(20),
        pause(Some("1m")),
        analysis("success-rate"),
        set_weight(50),
        analysis("latency"),
    ]
}

fn condition<'a>(
    world: &'a World,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    world
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {:?}", world.status.conditions))
}

fn first_abort_decision(world: &World) -> &Decision {
    world
        .decisions
        .iter()
        .find(|d| d.status.abort)
        .expect("an abort decision")
}

#[test]
fn first_version_becomes_stable_at_once_without_a_canary() {
    let mut world = World::new(spec(canary_steps(), true, 4), all_pass());
    let first = world.reconcile();
    let stable = world.desired();
    assert_eq!(
        first.status.stable_revision.as_deref(),
        Some(stable.as_str())
    );
    assert_eq!(first.status.canary_revision, None);
    assert!(first.effects.contains(&Effect::ScaleRevision {
        revision: stable.clone(),
        replicas: 4
    }));
    assert!(
        !first
            .effects
            .iter()
            .any(|e| matches!(e, Effect::SetWeight { canary_weight } if *canary_weight > 0)),
        "no traffic moves for the first version: {:?}",
        first.effects
    );
    assert_eq!(
        first.status.phase,
        Some(RolloutPhase::Progressing),
        "pods not ready yet"
    );
    world.advance(5);
    world.reconcile();
    assert!(world.healthy_on(&stable));
    assert_eq!(world.status.step.as_deref(), Some("5/5"));
    assert_eq!(world.event_reasons(), vec!["InitialDeployment"]);
    assert_eq!(condition(&world, "Available").status, "True");
    assert_eq!(world.status.observed_generation, Some(1));
}

#[test]
fn happy_path_reaches_healthy_with_and_without_a_router() {
    for router in [true, false] {
        let mut world = World::deployed(spec(canary_steps(), router, 10), all_pass());
        let old = world.desired();
        let before = world.decisions.len();
        world.set_image("app:2");
        let new = world.desired();
        world.run_until(200, |w| w.healthy_on(&new));
        // The old stable goes once both services select the new one; with a Gateway API
        // router only `scaleDownDelaySeconds` (30) later, for gateways that apply the route
        // late.
        world.reconcile();
        if router {
            assert_eq!(world.replicas_of(&old), 10, "kept during the delay");
            let at = world.status.scale_down_at.clone().expect("scaleDownAt").0;
            assert_eq!(world.decisions.last().and_then(|d| d.requeue_at), Some(at));
            world.now = at;
            world.reconcile();
        }

        assert_eq!(world.replicas_of(&new), 10);
        assert_eq!(
            world.replicas_of(&old),
            0,
            "old stable scaled down (router {router})"
        );
        // Cleared once nothing is left to scale down.
        world.reconcile();
        assert_eq!(world.status.scale_down_at, None);
        assert_eq!(world.status.canary_weight, 0);
        assert_eq!(world.services.stable.as_deref(), Some(new.as_str()));
        assert_eq!(world.services.canary.as_deref(), Some(new.as_str()));
        if router {
            assert_eq!(world.router, Some(0));
            assert_eq!(world.max_router_weight_in_steps, 50);
        }
        assert_eq!(world.status.step.as_deref(), Some("5/5"));
        let completed = world
            .event_reasons()
            .iter()
            .filter(|r| *r == "StepCompleted")
            .count();
        assert_eq!(completed, 5);
        assert!(
            world
                .event_reasons()
                .contains(&"RolloutCompleted".to_owned())
        );
        // Steps never go backwards and never jump over one another.
        let indices: Vec<i32> = world.decisions[before..]
            .iter()
            .filter_map(|d| d.status.current_step_index)
            .collect();
        for pair in indices.windows(2) {
            assert!(pair[1] >= pair[0], "step index went back: {indices:?}");
        }
        assert_eq!(world.runs.len(), 2, "one run per analysis step");
        assert!(
            world
                .runs
                .keys()
                .all(|n| n.starts_with(&format!("{NAME}-{new}-1-step")))
        );
        assert_eq!(condition(&world, "Progressing").reason, "RolloutCompleted");
    }
}

#[test]
fn without_a_router_the_replica_ratio_is_the_weight() {
    let mut world = World::deployed(
        spec(vec![set_weight(20), pause(None)], false, 10),
        all_pass(),
    );
    let old = world.desired();
    world.set_image("app:2");
    let new = world.desired();
    world.run_until(20, |w| w.at_step(1));
    world.reconcile();
    assert_eq!(world.replicas_of(&new), 2);
    assert_eq!(world.replicas_of(&old), 8);
    assert_eq!(world.status.canary_weight, 20);
    assert_eq!(world.phase(), Some(RolloutPhase::Paused));

    // One replica: a small weight keeps one stable pod rather than sending all to the canary.
    let mut tiny = World::deployed(
        spec(vec![set_weight(10), pause(None)], false, 1),
        all_pass(),
    );
    let old = tiny.desired();
    tiny.set_image("app:2");
    let new = tiny.desired();
    tiny.run_until(20, |w| w.at_step(1));
    tiny.reconcile();
    assert_eq!((tiny.replicas_of(&new), tiny.replicas_of(&old)), (1, 1));
}

#[test]
fn with_a_router_weight_rises_only_once_canary_pods_are_ready() {
    let mut world = World::deployed(
        spec(vec![set_weight(30), pause(None)], true, 10),
        all_pass(),
    );
    world.set_image("app:2");
    let new = world.desired();
    let decision = world.reconcile();
    assert!(decision.effects.contains(&Effect::ScaleRevision {
        revision: new.clone(),
        replicas: 3
    }));
    assert!(
        !decision
            .effects
            .iter()
            .any(|e| matches!(e, Effect::SetWeight { canary_weight } if *canary_weight > 0)),
        "weight must wait for ready pods: {:?}",
        decision.effects
    );
    assert_eq!(decision.status.canary_weight, 0);
    world.advance(5);
    let decision = world.reconcile();
    assert!(
        decision
            .effects
            .contains(&Effect::SetWeight { canary_weight: 30 })
    );
    assert_eq!(
        decision.status.current_step_index,
        Some(0),
        "waits for the read-back"
    );
    world.advance(5);
    world.reconcile();
    assert!(world.at_step(1));
}

#[test]
fn a_failed_analysis_at_any_analysis_step_rolls_back_with_the_metric_reason() {
    let steps = vec![
        set_weight(20),
        analysis("a"),
        set_weight(50),
        analysis("b"),
        analysis("c"),
    ];
    for failing in [1, 3, 4] {
        let mut world = World::deployed(
            spec(steps.clone(), true, 4),
            step_verdict(vec![failing], AnalysisPhase::Failed),
        );
        let old = world.desired();
        world.set_image("app:2");
        let new = world.desired();
        world.run_until(200, |w| w.phase() == Some(RolloutPhase::Degraded));

        let abort = first_abort_decision(&world).clone();
        assert_eq!(
            abort.effects.first(),
            Some(&Effect::SetWeight { canary_weight: 0 }),
            "weight back to 0 is the first effect (failing step {failing})"
        );
        let message = world.status.message.clone().unwrap_or_default();
        assert!(message.contains("\"error-rate\""), "{message}");
        assert!(
            message.contains("error rate 7.2% > 5% threshold"),
            "{message}"
        );
        assert!(
            message.contains(&format!("step {}/5", failing + 1)),
            "{message}"
        );
        assert_eq!(world.status.canary_weight, 0);
        assert_eq!(world.router, Some(0));
        assert!(world.status.abort);
        assert_eq!(world.status.stable_revision.as_deref(), Some(old.as_str()));
        assert_eq!(world.replicas_of(&old), 4);
        assert_eq!(condition(&world, "Progressing").status, "False");
        assert!(abort.effects.iter().any(|e| matches!(
            e,
            Effect::Event { type_: EventType::Warning, reason, .. } if reason == "AnalysisFailed"
        )));

        // The canary keeps its pods for abortScaleDownDelaySeconds (30), then goes.
        let aborted_at = world.status.aborted_at.clone().expect("abortedAt").0;
        assert_eq!(
            abort.requeue_at,
            Some(aborted_at + SignedDuration::from_secs(30))
        );
        world.run_until(20, |w| w.replicas_of(&new) == 0);
        assert!(world.now >= aborted_at + SignedDuration::from_secs(30));
        assert_eq!(world.phase(), Some(RolloutPhase::Degraded));
        // Nothing more to wait for: only a watch event changes things now.
        assert_eq!(world.reconcile().requeue_at, None);
    }
}

#[test]
fn a_failed_background_analysis_aborts_at_any_step_even_while_paused() {
    let mut world = World::deployed(
        with_background(
            spec(vec![set_weight(20), pause(None), set_weight(50)], true, 4),
            0,
        ),
        Box::new(|run| match run.kind {
            vigil::rollout::AnalysisKind::Background if run.age >= 60 => {
                Some(AnalysisPhase::Failed)
            }
            _ => None,
        }),
    );
    world.set_image("app:2");
    world.run_until(40, |w| w.at_step(1));
    assert_eq!(world.phase(), Some(RolloutPhase::Paused));
    world.spec.paused = true;
    world.run_until(40, |w| w.phase() == Some(RolloutPhase::Degraded));
    let message = world.status.message.clone().unwrap_or_default();
    assert!(
        message.starts_with("background analysis failed at step 2/3"),
        "{message}"
    );
    assert!(
        message.contains("error rate 7.2% > 5% threshold"),
        "{message}"
    );
    assert_eq!(world.router, Some(0));
}

#[test]
fn inconclusive_and_error_pause_with_the_reason_then_promote_continues() {
    for (verdict, words) in [
        (
            AnalysisPhase::Inconclusive,
            "no data: the canary received no requests",
        ),
        (
            AnalysisPhase::Error,
            "prometheus unreachable: connection refused",
        ),
    ] {
        let mut world = World::deployed(
            spec(vec![set_weight(20), analysis("a"), set_weight(60)], true, 4),
            step_verdict(vec![1], verdict),
        );
        world.set_image("app:2");
        let new = world.desired();
        world.run_until(40, |w| {
            w.status
                .pause_conditions
                .iter()
                .any(|p| p.reason == PauseReason::InconclusiveAnalysis)
        });
        assert_eq!(world.phase(), Some(RolloutPhase::Paused));
        let message = world.status.message.clone().unwrap_or_default();
        assert!(message.contains(words), "{verdict:?}: {message}");
        assert!(
            message.contains("`vigil promote shop` continues"),
            "{message}"
        );
        assert_eq!(condition(&world, "Paused").reason, "InconclusiveAnalysis");
        // It stays paused.
        for _ in 0..10 {
            world.reconcile();
            world.advance(60);
        }
        assert!(world.at_step(1));
        assert_eq!(world.router, Some(20));

        world.promote();
        world.run_until(40, |w| w.healthy_on(&new));
    }
}

#[test]
fn inconclusive_then_abort_rolls_back_as_aborted() {
    let mut world = World::deployed(
        spec(vec![set_weight(20), analysis("a"), set_weight(60)], true, 4),
        step_verdict(vec![1], AnalysisPhase::Inconclusive),
    );
    let old = world.desired();
    world.set_image("app:2");
    world.run_until(40, |w| w.phase() == Some(RolloutPhase::Paused));
    world.abort();
    let decision = world.reconcile();
    assert_eq!(decision.status.phase, Some(RolloutPhase::Aborted));
    assert_eq!(
        decision.effects.first(),
        Some(&Effect::SetWeight { canary_weight: 0 })
    );
    assert!(decision.status.pause_conditions.is_empty());
    assert_eq!(world.status.stable_revision.as_deref(), Some(old.as_str()));
}

#[test]
fn promote_finishes_only_the_step_it_was_given_for() {
    let mut world = World::deployed(
        spec(
            vec![set_weight(20), pause(None), pause(None), set_weight(40)],
            true,
            4,
        ),
        all_pass(),
    );
    world.set_image("app:2");
    world.run_until(20, |w| {
        w.at_step(1) && w.phase() == Some(RolloutPhase::Paused)
    });
    assert_eq!(
        world.status.pause_conditions.first().map(|p| p.reason),
        Some(PauseReason::CanaryPauseStep)
    );
    assert_eq!(
        world.reconcile().requeue_at,
        None,
        "an indefinite pause waits for promote"
    );
    world.promote();
    world.reconcile();
    assert!(world.at_step(2), "promote finished step 1 only");
    assert_eq!(world.status.promote_step, None, "the request is consumed");

    // A stale request (for a step the rollout already left) is ignored.
    world.status.promote_step = Some(1);
    world.reconcile();
    assert!(world.at_step(2));
    assert_eq!(world.status.promote_step, None);
}

#[test]
fn promote_full_skips_every_remaining_step_and_analysis() {
    let mut world = World::deployed(
        with_background(
            spec(
                vec![set_weight(10), pause(None), analysis("a"), pause(None)],
                true,
                4,
            ),
            0,
        ),
        all_pass(),
    );
    world.set_image("app:2");
    let new = world.desired();
    world.run_until(20, |w| w.at_step(1));
    world.promote_full();
    world.run_until(20, |w| w.healthy_on(&new));
    assert!(!world.status.promote_full, "cleared once promoted");
    assert!(
        !world.runs.keys().any(|n| n.contains("-step")),
        "no step analysis ran: {:?}",
        world.runs.keys()
    );
    let background = world.runs.values().find(|r| r.summary.name.contains("-bg"));
    assert_eq!(
        background.map(|r| r.summary.phase),
        Some(AnalysisPhase::Terminated),
        "the background run was stopped"
    );
}

#[test]
fn user_abort_rolls_back_at_once_and_scales_the_canary_down_after_the_delay() {
    let mut world = World::deployed(spec(canary_steps(), true, 4), all_pass());
    world.spec.strategy.canary.abort_scale_down_delay_seconds = Some(45);
    let old = world.desired();
    world.set_image("app:2");
    let new = world.desired();
    world.run_until(20, |w| w.at_step(2));
    assert!(world.runs.values().any(|r| !r.summary.phase.is_completed()));
    world.abort();
    let decision = world.reconcile();
    assert_eq!(
        decision.effects.first(),
        Some(&Effect::SetWeight { canary_weight: 0 })
    );
    assert!(
        decision
            .effects
            .iter()
            .any(|e| matches!(e, Effect::TerminateAnalysisRun { .. }))
    );
    assert!(
        !decision.effects.contains(&Effect::ScaleRevision {
            revision: new.clone(),
            replicas: 0
        }),
        "the canary keeps its pods during the delay"
    );
    assert_eq!(decision.status.phase, Some(RolloutPhase::Aborted));
    let aborted_at = decision.status.aborted_at.clone().expect("abortedAt").0;
    assert_eq!(aborted_at, world.now, "now is a whole second here");
    assert_eq!(
        decision.requeue_at,
        Some(aborted_at + SignedDuration::from_secs(45))
    );
    let message = decision.status.message.clone().unwrap_or_default();
    assert!(
        message.starts_with("aborted by a user at step 3/5"),
        "{message}"
    );

    world.now = aborted_at + SignedDuration::from_secs(44);
    world.reconcile();
    assert_eq!(world.replicas_of(&new), 1, "ceil(4 x 20%) canary pods kept");
    world.now = aborted_at + SignedDuration::from_secs(45);
    world.reconcile();
    assert_eq!(world.replicas_of(&new), 0);
    assert_eq!(world.replicas_of(&old), 4);
    assert_eq!(world.phase(), Some(RolloutPhase::Aborted));
    assert!(world.runs.values().all(|r| r.summary.phase.is_completed()));
}

#[test]
fn retry_after_an_abort_starts_again_from_step_zero_with_fresh_runs() {
    let mut world = World::deployed(
        spec(vec![set_weight(20), analysis("a"), set_weight(50)], true, 4),
        Box::new(|run| {
            (run.age >= 30).then(|| {
                if run.name.contains("-1-step") {
                    AnalysisPhase::Failed
                } else {
                    AnalysisPhase::Successful
                }
            })
        }),
    );
    world.set_image("app:2");
    let new = world.desired();
    world.run_until(40, |w| w.phase() == Some(RolloutPhase::Degraded));
    assert_eq!(world.status.canary_attempt, 1);
    world.retry();
    let decision = world.reconcile();
    assert_eq!(decision.status.current_step_index, Some(0));
    assert_eq!(decision.status.canary_attempt, 2);
    assert_eq!(decision.status.phase, Some(RolloutPhase::Progressing));
    assert!(decision.status.aborted_at.is_none());
    world.run_until(60, |w| w.healthy_on(&new));
    assert!(world.runs.contains_key(&format!("{NAME}-{new}-2-step1")));
}

#[test]
fn a_new_template_mid_rollout_restarts_from_step_zero_against_the_same_stable() {
    let mut world = World::deployed(spec(canary_steps(), true, 4), all_pass());
    let stable = world.desired();
    world.set_image("app:2");
    let second = world.desired();
    world.run_until(40, |w| w.at_step(2) && !w.runs.is_empty());
    let running: Vec<String> = world.runs.keys().cloned().collect();
    world.set_image("app:3");
    let third = world.desired();
    let decision = world.reconcile();
    assert_eq!(decision.status.current_step_index, Some(0));
    assert_eq!(
        decision.status.stable_revision.as_deref(),
        Some(stable.as_str())
    );
    assert_eq!(
        decision.status.canary_revision.as_deref(),
        Some(third.as_str())
    );
    assert_eq!(
        decision.effects.first(),
        Some(&Effect::SetWeight { canary_weight: 0 }),
        "traffic leaves the old canary before the canary service moves"
    );
    for name in &running {
        assert!(
            decision
                .effects
                .contains(&Effect::TerminateAnalysisRun { name: name.clone() })
        );
    }
    world.advance(5);
    world.reconcile();
    assert_eq!(
        world.replicas_of(&second),
        1,
        "kept for scaleDownDelaySeconds"
    );
    world.advance(30);
    world.reconcile();
    assert_eq!(world.replicas_of(&second), 0, "old canary scaled to 0");
    world.run_until(200, |w| w.healthy_on(&third));
    assert!(
        world
            .event_reasons()
            .contains(&"RolloutRestarted".to_owned())
    );
}

#[test]
fn a_template_set_back_to_stable_drops_the_canary() {
    let mut world = World::deployed(spec(canary_steps(), true, 4), all_pass());
    let stable = world.desired();
    world.set_image("app:2");
    let canary = world.desired();
    world.run_until(20, |w| w.at_step(1));
    world.set_image("app:1");
    world.run_until(10, |w| w.healthy_on(&stable) && w.replicas_of(&canary) == 0);
    assert_eq!(world.router, Some(0));
    assert!(
        world
            .event_reasons()
            .contains(&"RolloutCanceled".to_owned())
    );
}

#[test]
fn an_invalid_spec_keeps_the_stable_serving_and_says_why() {
    let mut world = World::deployed(spec(canary_steps(), true, 4), all_pass());
    let stable = world.desired();
    world.set_image("app:2");
    world.spec.strategy.canary.steps[0].set_weight = Some(150);
    world.spec_problems = vec![SpecProblem {
        path: "spec.strategy.canary.steps[2].analysis.templates[0].templateName".into(),
        message: "no AnalysisTemplate \"success-rate\" in namespace shop".into(),
    }];
    for _ in 0..5 {
        let decision = world.reconcile();
        let moving: Vec<&Effect> = decision
            .effects
            .iter()
            .filter(|e| !matches!(e, Effect::Event { .. }))
            .collect();
        assert!(moving.is_empty(), "nothing moves: {moving:?}");
        world.advance(60);
    }
    assert_eq!(world.phase(), Some(RolloutPhase::Degraded));
    assert_eq!(world.status.canary_revision, None);
    assert_eq!(world.replicas_of(&stable), 4);
    let message = world.status.message.clone().unwrap_or_default();
    assert!(
        message.contains("spec.strategy.canary.steps[0].setWeight: 150 is not in 0..=100"),
        "{message}"
    );
    assert!(
        message.contains("templateName: no AnalysisTemplate"),
        "{message}"
    );
    let invalid = condition(&world, "InvalidSpec");
    assert_eq!(invalid.status, "True");
    assert_eq!(
        world
            .event_reasons()
            .iter()
            .filter(|r| *r == "InvalidSpec")
            .count(),
        1,
        "one event on the transition"
    );

    // Fixed: the canary starts.
    world.spec.strategy.canary.steps[0].set_weight = Some(20);
    world.spec_problems.clear();
    let new = world.desired();
    world.run_until(200, |w| w.healthy_on(&new));
    assert_eq!(condition(&world, "InvalidSpec").status, "False");
}

#[test]
fn a_step_that_does_not_converge_aborts_at_the_progress_deadline() {
    let mut world = World::deployed(spec(vec![set_weight(20), pause(None)], true, 4), all_pass());
    world.spec.progress_deadline_seconds = Some(120);
    world.pods_get_ready = false;
    world.set_image("app:2");
    let first = world.reconcile();
    let started = first
        .status
        .current_step_started_at
        .clone()
        .expect("started")
        .0;
    assert_eq!(
        first.requeue_at,
        Some(started + SignedDuration::from_secs(120))
    );
    world.run_until(40, |w| w.phase() == Some(RolloutPhase::Degraded));
    let abort = first_abort_decision(&world);
    let aborted_at = abort.status.aborted_at.clone().expect("abortedAt").0;
    assert!(aborted_at >= started + SignedDuration::from_secs(120));
    assert!(aborted_at < started + SignedDuration::from_secs(125));
    let message = world.status.message.clone().unwrap_or_default();
    assert!(message.starts_with("ProgressDeadlineExceeded"), "{message}");
    assert!(message.contains("canary pods: 0/1 ready"), "{message}");
    assert_eq!(
        condition(&world, "Progressing").reason,
        "ProgressDeadlineExceeded"
    );

    // A router that never reports the weight is caught the same way.
    let mut world = World::deployed(spec(vec![set_weight(20), pause(None)], true, 4), all_pass());
    world.spec.progress_deadline_seconds = Some(60);
    world.router_works = false;
    world.set_image("app:2");
    world.run_until(40, |w| w.phase() == Some(RolloutPhase::Degraded));
    let message = world.status.message.clone().unwrap_or_default();
    assert!(
        message.contains("router to report weight 20 (reports 0)"),
        "{message}"
    );
}

#[test]
fn pauses_do_not_count_against_the_progress_deadline() {
    let mut world = World::deployed(
        spec(
            vec![set_weight(20), pause(Some("15m")), set_weight(50)],
            true,
            4,
        ),
        all_pass(),
    );
    world.spec.progress_deadline_seconds = Some(60);
    world.set_image("app:2");
    let new = world.desired();
    world.tick = 30;
    world.run_until(100, |w| w.healthy_on(&new));
}

#[test]
fn spec_paused_holds_everything_until_resumed() {
    let mut world = World::deployed(spec(canary_steps(), true, 4), all_pass());
    world.spec.progress_deadline_seconds = Some(60);
    world.set_image("app:2");
    let new = world.desired();
    world.run_until(20, |w| w.at_step(1));
    world.spec.paused = true;
    for _ in 0..30 {
        let decision = world.reconcile();
        assert!(
            decision
                .effects
                .iter()
                .all(|e| matches!(e, Effect::Event { .. })),
            "nothing moves while paused: {:?}",
            decision.effects
        );
        assert_eq!(decision.requeue_at, None);
        world.advance(60);
    }
    assert!(world.at_step(1));
    assert_eq!(world.phase(), Some(RolloutPhase::Paused));
    assert_eq!(
        world.status.pause_conditions.first().map(|p| p.reason),
        Some(PauseReason::UserPaused)
    );
    world.spec.paused = false;
    world.run_until(200, |w| w.healthy_on(&new));
    assert!(world.event_reasons().contains(&"RolloutResumed".to_owned()));
    assert_eq!(
        world
            .event_reasons()
            .iter()
            .filter(|r| *r == "RolloutPaused")
            .count(),
        1
    );
}

#[test]
fn a_timed_pause_requeues_at_its_exact_end() {
    let mut world = World::deployed(
        spec(
            vec![set_weight(20), pause(Some("1m30s")), set_weight(40)],
            true,
            4,
        ),
        all_pass(),
    );
    world.set_image("app:2");
    world.run_until(20, |w| w.at_step(1));
    let started = world
        .status
        .current_step_started_at
        .clone()
        .expect("started")
        .0;
    let end = started + SignedDuration::from_secs(90);
    let decision = world.reconcile();
    assert_eq!(decision.requeue_at, Some(end));
    assert_eq!(decision.status.phase, Some(RolloutPhase::Paused));
    world.now = end - SignedDuration::from_secs(1);
    world.reconcile();
    assert!(world.at_step(1), "still paused one second before the end");
    world.now = end;
    world.reconcile();
    assert!(world.at_step(2), "the pause ends exactly at its end");
}

#[test]
fn sub_second_clocks_still_round_trip_through_status() {
    let mut world = World::deployed(
        spec(vec![set_weight(20), pause(Some("10s"))], true, 4),
        all_pass(),
    );
    world.now += SignedDuration::from_millis(750);
    world.set_image("app:2");
    let new = world.desired();
    // reconcile() checks that the JSON round trip never changes a decision.
    world.run_until(40, |w| w.healthy_on(&new));
}

#[test]
fn conditions_keep_their_transition_time_while_their_status_holds() {
    let mut world = World::deployed(spec(canary_steps(), true, 4), all_pass());
    let available_since = condition(&world, "Available").last_transition_time.clone();
    world.set_image("app:2");
    world.run_until(20, |w| w.at_step(1));
    let progressing_since = condition(&world, "Progressing")
        .last_transition_time
        .clone();
    world.run_until(40, |w| w.at_step(3));
    assert_eq!(
        condition(&world, "Available").last_transition_time,
        available_since
    );
    // Paused (Unknown) in between moved it; now Progressing again since the last move.
    assert!(condition(&world, "Progressing").last_transition_time >= progressing_since);
    let before = condition(&world, "Progressing").clone();
    world.advance(1);
    world.reconcile();
    assert_eq!(
        condition(&world, "Progressing").last_transition_time,
        before.last_transition_time
    );
    assert_eq!(
        condition(&world, "Progressing").observed_generation,
        Some(2)
    );
}

#[test]
fn a_controller_killed_at_any_instant_makes_the_same_rollout() {
    let reference = {
        let mut world = World::deployed(spec(canary_steps(), true, 4), all_pass());
        world.set_image("app:2");
        let new = world.desired();
        world.run_until(200, |w| w.healthy_on(&new));
        world
    };
    let completed_steps = |world: &World| -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for (reason, message) in &world.events {
            if reason == "StepCompleted" && !seen.contains(message) {
                seen.push(message.clone());
            }
        }
        seen
    };
    for crash_every in [2usize, 3, 5] {
        for effects_done in [0usize, 1, 2, 100] {
            let mut world = World::deployed(spec(canary_steps(), true, 4), all_pass());
            world.set_image("app:2");
            let new = world.desired();
            for round in 0..400 {
                if world.healthy_on(&new) {
                    break;
                }
                let crash = (round % crash_every == 0).then_some(if effects_done == 0 {
                    Crash::BeforeEffects
                } else {
                    Crash::AfterEffects(effects_done)
                });
                world.reconcile_with(crash);
                world.advance(5);
            }
            assert!(
                world.healthy_on(&new),
                "crash every {crash_every}, {effects_done} effects"
            );
            assert_eq!(completed_steps(&world), completed_steps(&reference));
            assert_eq!(world.runs.len(), reference.runs.len(), "no duplicate runs");
        }
    }
}

/// A world adopting a Deployment of `replicas` pods running `app:1` (`scaleDown`
/// progressively), whose own pods become ready only when the test says so.
fn adopting(replicas: i32) -> World {
    let mut spec = spec(canary_steps(), true, replicas);
    spec.template = None;
    spec.workload_ref = Some(vigil::api::WorkloadRef {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: NAME.into(),
        scale_down: Some(vigil::api::ScaleDown::Progressively),
    });
    let mut world = World::new(spec, all_pass());
    world.workload = Some(vigil::rollout::WorkloadObservation {
        template: template("app:1"),
        replicas,
    });
    world.pods_get_ready = false;
    world
}

fn serving(world: &World) -> i32 {
    let ready: i32 = world.revisions.values().map(|r| r.ready).sum();
    ready + world.workload.as_ref().map_or(0, |w| w.replicas)
}

#[test]
fn an_adopted_deployment_gives_way_pod_by_pod_even_with_the_controller_killed() {
    for crash_every in [1usize, 2, 3] {
        for effects_done in [0usize, 1, 100] {
            let mut world = adopting(4);
            for round in 0..200usize {
                if world.phase() == Some(RolloutPhase::Healthy)
                    && world.workload.as_ref().is_some_and(|w| w.replicas == 0)
                {
                    break;
                }
                let crash = (round % crash_every == 1).then_some(if effects_done == 0 {
                    Crash::BeforeEffects
                } else {
                    Crash::AfterEffects(effects_done)
                });
                world.reconcile_with(crash);
                assert!(
                    serving(&world) >= 4,
                    "crash every {crash_every}, {effects_done} effects, round {round}: \
                     {} pods serving; Deployment {:?}, revisions {:?}",
                    serving(&world),
                    world.workload.as_ref().map(|w| w.replicas),
                    world.revisions
                );
                // One more Rollout pod gets ready every other round.
                if round % 2 == 1
                    && let Some(revision) = world.revisions.values_mut().next()
                {
                    revision.ready = (revision.ready + 1).min(revision.replicas);
                }
                world.advance(5);
            }
            assert_eq!(world.phase(), Some(RolloutPhase::Healthy));
            assert_eq!(world.workload.as_ref().map(|w| w.replicas), Some(0));
        }
    }
}

#[test]
fn a_release_through_the_adopted_deployment_runs_every_step() {
    let mut world = adopting(4);
    world.pods_get_ready = true;
    world.run_until(50, |w| w.phase() == Some(RolloutPhase::Healthy));
    let first = world.desired();
    let generation = world.generation;
    world.set_image("app:2");
    assert_eq!(
        world.generation, generation,
        "the Rollout itself did not change"
    );
    let second = world.desired();
    assert_ne!(first, second);
    world.run_until(200, |w| w.healthy_on(&second));
    assert!(
        world
            .events
            .iter()
            .any(|(reason, _)| reason == "RolloutStarted")
    );
    assert_eq!(world.workload.as_ref().map(|w| w.replicas), Some(0));
    // The adopted revision goes once the scale-down delay passed, like any previous stable.
    world.run_until(50, |w| {
        w.revisions.get(&first).is_none_or(|r| r.replicas == 0)
    });
    assert_eq!(world.workload.as_ref().map(|w| w.replicas), Some(0));
}

#[test]
fn history_beyond_the_limit_is_deleted_oldest_first() {
    let mut world = World::deployed(spec(vec![set_weight(50)], true, 2), all_pass());
    world.spec.revision_history_limit = Some(1);
    let mut revisions = vec![world.desired()];
    for image in ["app:2", "app:3", "app:4"] {
        world.set_image(image);
        let new = world.desired();
        world.run_until(40, |w| w.healthy_on(&new));
        world.reconcile();
        // Past the scale-down delay of the previous stable.
        world.advance(30);
        world.reconcile();
        revisions.push(new);
    }
    for _ in 0..3 {
        world.reconcile();
    }
    let kept: Vec<&String> = world.revisions.keys().collect();
    assert_eq!(kept.len(), 2, "the stable and one old revision: {kept:?}");
    assert!(world.revisions.contains_key(&revisions[3]));
    assert!(
        world.revisions.contains_key(&revisions[2]),
        "the newest old one stays"
    );
}

#[test]
fn step_is_pure() {
    let world = World::deployed(spec(canary_steps(), true, 4), all_pass());
    let observation = world.observe();
    let a = step(&world.spec, &world.status, &observation, world.now);
    let b = step(&world.spec, &world.status, &observation, world.now);
    assert_eq!(a, b);
}

#[test]
fn an_inconclusive_background_analysis_pauses_and_promote_restarts_it() {
    let mut world = World::deployed(
        with_background(
            spec(
                vec![set_weight(20), set_weight(40), pause(Some("5m"))],
                true,
                4,
            ),
            0,
        ),
        Box::new(|run| {
            // The first background run has no data; later ones keep running.
            (run.kind == vigil::rollout::AnalysisKind::Background
                && run.name.ends_with("-bg0")
                && run.age >= 10)
                .then_some(AnalysisPhase::Inconclusive)
        }),
    );
    world.set_image("app:2");
    let new = world.desired();
    world.run_until(20, |w| w.phase() == Some(RolloutPhase::Paused));
    let paused_at = world.step_index().expect("index");
    let message = world.status.message.clone().unwrap_or_default();
    assert!(
        message.contains("background analysis metric \"error-rate\" inconclusive"),
        "{message}"
    );
    assert!(
        message.contains("no data: the canary received no requests"),
        "{message}"
    );
    world.promote();
    world.reconcile();
    assert_eq!(
        world.step_index(),
        Some(paused_at + 1),
        "promote finished the current step"
    );
    let fresh = format!("{NAME}-{new}-1-bg{}", paused_at + 1);
    assert!(
        world.runs.contains_key(&fresh),
        "a fresh background run: {:?}",
        world.runs.keys()
    );
    world.run_until(100, |w| w.healthy_on(&new));
    assert_eq!(world.runs[&fresh].summary.phase, AnalysisPhase::Terminated);
}

#[test]
fn abort_works_while_paused() {
    let mut world = World::deployed(spec(canary_steps(), true, 4), all_pass());
    world.set_image("app:2");
    world.run_until(20, |w| w.at_step(1));
    world.spec.paused = true;
    world.reconcile();
    world.abort();
    let decision = world.reconcile();
    assert_eq!(decision.status.phase, Some(RolloutPhase::Aborted));
    assert_eq!(
        decision.effects.first(),
        Some(&Effect::SetWeight { canary_weight: 0 })
    );
}

#[test]
fn the_scale_down_delay_is_configurable() {
    for (delay, kept_for) in [(Some(0), 0), (Some(60), 60)] {
        let mut world = World::deployed(spec(canary_steps(), true, 4), all_pass());
        world.spec.strategy.canary.scale_down_delay_seconds = delay;
        let old = world.desired();
        world.set_image("app:2");
        let new = world.desired();
        world.run_until(200, |w| w.healthy_on(&new));
        world.reconcile();
        if kept_for > 0 {
            let at = world.status.scale_down_at.clone().expect("scaleDownAt").0;
            world.now = at - SignedDuration::from_secs(1);
            world.reconcile();
            assert_eq!(world.replicas_of(&old), 4, "kept for {kept_for} s");
            world.now = at;
            world.reconcile();
        }
        assert_eq!(world.replicas_of(&old), 0, "delay {delay:?}");
    }
    let mut invalid = World::deployed(spec(canary_steps(), true, 4), all_pass());
    invalid.spec.strategy.canary.scale_down_delay_seconds = Some(-1);
    let decision = invalid.reconcile();
    let message = decision.status.message.unwrap_or_default();
    assert!(
        message.contains("spec.strategy.canary.scaleDownDelaySeconds: -1 is negative"),
        "{message}"
    );
}

#[test]
fn a_new_template_waits_for_resume_while_the_spec_is_paused() {
    let mut world = World::deployed(spec(canary_steps(), true, 4), all_pass());
    world.set_image("app:2");
    let second = world.desired();
    world.run_until(40, |w| w.at_step(2));
    let weight = world.router;
    world.spec.paused = true;
    world.reconcile();
    world.set_image("app:3");
    let third = world.desired();
    let decision = world.reconcile();
    assert_eq!(decision.status.phase, Some(RolloutPhase::Paused));
    assert_eq!(
        decision.status.canary_revision.as_deref(),
        Some(second.as_str()),
        "status keeps naming the canary that has the traffic"
    );
    assert!(
        decision
            .effects
            .iter()
            .all(|e| matches!(e, Effect::Event { .. })),
        "{:?}",
        decision.effects
    );
    assert_eq!(world.router, weight);
    world.spec.paused = false;
    let decision = world.reconcile();
    assert_eq!(
        decision.status.canary_revision.as_deref(),
        Some(third.as_str())
    );
    assert_eq!(decision.status.current_step_index, Some(0));
}

/// Specs the one validator rejects, several of which the simulator (the core's own checks)
/// used to accept while the controller (the template module's checks) rejected them.
fn invalid_specs() -> Vec<(&'static str, vigil::api::RolloutSpec)> {
    let base = || spec(canary_steps(), true, 4);
    let mut table = Vec::new();
    let mut s = with_background(base(), 5);
    table.push(("startingStep == steps.len()", s.clone()));
    s = with_background(base(), -1);
    table.push(("negative startingStep", s));
    s = base();
    s.strategy.canary.steps = vec![set_weight(50), set_weight(20)];
    table.push(("decreasing weights", s));
    s = base();
    s.strategy.canary.steps[0].set_weight = Some(150);
    table.push(("weight above 100", s));
    s = base();
    s.strategy.canary.traffic_routing = Some(vigil::api::TrafficRouting::default());
    table.push(("trafficRouting without a router", s));
    s = base();
    s.selector = Default::default();
    table.push(("empty selector", s));
    s = base();
    s.revision_history_limit = Some(-1);
    table.push(("negative revisionHistoryLimit", s));
    s = base();
    s.strategy.canary.canary_service = s.strategy.canary.stable_service.clone();
    table.push(("one Service for stable and canary", s));
    s = base();
    s.strategy
        .canary
        .steps
        .push(vigil::api::CanaryStep::default());
    table.push(("a step of no kind", s));
    s = base();
    s.strategy.canary.steps[1] = pause(Some("soon"));
    table.push(("a pause duration that does not parse", s));
    s = base();
    s.progress_deadline_seconds = Some(0);
    table.push(("zero progress deadline", s));
    s = base();
    s.template.get_or_insert_with(Default::default).spec = None;
    table.push(("no containers", s));
    s = base();
    s.template = None;
    table.push(("neither a template nor a workloadRef", s));
    s = base();
    s.workload_ref = Some(vigil::api::WorkloadRef {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: "web".into(),
        scale_down: None,
    });
    table.push(("both a template and a workloadRef", s));
    s = base();
    s.template = None;
    s.workload_ref = Some(vigil::api::WorkloadRef {
        api_version: "apps/v1beta1".into(),
        kind: "StatefulSet".into(),
        name: "Web_1".into(),
        scale_down: Some(vigil::api::ScaleDown::Progressively),
    });
    table.push(("a workloadRef to something else than a Deployment", s));
    table
}

#[test]
fn the_simulator_and_the_controller_reject_the_same_specs_with_the_same_words() {
    use vigil::platform::kubernetes::observe::{Seen, observation};
    for (what, spec) in invalid_specs() {
        let problems = vigil::rollout::validate_spec(&spec);
        assert!(!problems.is_empty(), "{what}: the validator accepts it");

        let mut world = World::new(spec.clone(), all_pass());
        let simulated = world.reconcile();

        let rollout = vigil::api::Rollout::new(NAME, spec.clone());
        let observed = observation(&rollout, &Seen::default());
        let controlled = step(&spec, &Default::default(), &observed, world.now);

        for (path, decision) in [("simulator", &simulated), ("controller", &controlled)] {
            assert_eq!(
                decision.status.phase,
                Some(RolloutPhase::Degraded),
                "{what}: the {path} does not reject it"
            );
            let message = decision.status.message.clone().unwrap_or_default();
            for problem in &problems {
                assert!(
                    message.contains(&problem.to_string()),
                    "{what}: the {path} does not say {problem}: {message}"
                );
            }
        }
        assert_eq!(
            simulated.status.message, controlled.status.message,
            "{what}: the two paths word it differently"
        );
        // And lint, the third reader of a Rollout, says the same.
        let yaml = serde_norway::to_string(&rollout).expect("yaml");
        let linted = vigil::lint::lint_file(std::path::Path::new("r.yaml"), &yaml);
        for problem in &problems {
            assert!(
                linted
                    .iter()
                    .any(|p| p.path == problem.path && p.message == problem.message),
                "{what}: lint does not say {problem}: {linted:?}"
            );
        }
    }
}

#[test]
fn a_controller_killed_at_any_instant_makes_the_same_blue_green_release() {
    let configure = |bg: &mut vigil::api::BlueGreenStrategy| {
        bg.preview_replica_count = Some(1);
        bg.pre_promotion_analysis = Some(promotion_analysis("smoke"));
        bg.post_promotion_analysis = Some(promotion_analysis("after-switch"));
        bg.auto_promotion_seconds = Some(20);
    };
    let verdicts = || {
        promotion_verdicts(
            Some(AnalysisPhase::Successful),
            Some(AnalysisPhase::Successful),
        )
    };
    let transitions = |world: &World| -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for (reason, _) in &world.events {
            if !seen.contains(reason) {
                seen.push(reason.clone());
            }
        }
        seen
    };
    let reference = {
        let mut world = World::deployed(blue_green_spec(3, configure), verdicts());
        world.set_image("app:2");
        let new = world.desired();
        world.run_until(200, |w| w.healthy_on(&new));
        world
    };
    for crash_every in [2usize, 3, 5] {
        for effects_done in [0usize, 1, 2, 100] {
            let mut world = World::deployed(blue_green_spec(3, configure), verdicts());
            let old = world.desired();
            world.set_image("app:2");
            let new = world.desired();
            for round in 0..400 {
                if world.healthy_on(&new) && world.replicas_of(&old) == 0 {
                    break;
                }
                let crash = (round % crash_every == 0).then_some(if effects_done == 0 {
                    Crash::BeforeEffects
                } else {
                    Crash::AfterEffects(effects_done)
                });
                world.reconcile_with(crash);
                // The active service never selects a revision short of ready pods.
                if let Some(active) = &world.services.stable {
                    let ready = world.revisions.get(active).map_or(0, |r| r.ready);
                    assert!(ready >= 3, "active {active} with {ready} ready pods");
                }
                world.advance(5);
            }
            assert!(
                world.healthy_on(&new) && world.replicas_of(&old) == 0,
                "crash every {crash_every}, {effects_done} effects: {:?}",
                world.status
            );
            assert_eq!(transitions(&world), transitions(&reference));
            assert_eq!(world.runs.len(), reference.runs.len(), "no duplicate runs");
        }
    }
}

/// Issue 16, friction 3: the step a message names is the step the events count. While the
/// analysis at `steps[2]` runs, status and message say step 3/5, and the event that ends it
/// says "step 3/5 (...) completed" (main said "step 2/5" in status and "3/5" in the event).
#[test]
fn status_messages_and_events_count_steps_alike() {
    let mut world = World::deployed(spec(canary_steps(), true, 4), all_pass());
    world.set_image("app:2");
    world.run_until(60, |w| w.at_step(2));
    assert_eq!(world.status.step.as_deref(), Some("3/5"));
    let message = world.status.message.clone().unwrap_or_default();
    assert!(message.starts_with("step 3/5: "), "{message}");
    world.run_until(60, |w| w.at_step(3));
    let completed: Vec<&String> = world
        .events
        .iter()
        .filter(|(reason, _)| reason == "StepCompleted")
        .map(|(_, message)| message)
        .collect();
    assert!(
        completed
            .iter()
            .any(|m| m.starts_with("step 3/5 (analysis success-rate) completed")),
        "{completed:?}"
    );
    assert_eq!(world.status.step.as_deref(), Some("4/5"));
}

/// Issue 16, frictions 2, 4 and 5: an analysis without data pauses with a message that says
/// the value once (the reason already quotes it), hints at traffic, and offers a re-run.
#[test]
fn an_inconclusive_pause_hints_at_traffic_and_offers_a_rerun() {
    let verdicts = step_verdict(vec![2], AnalysisPhase::Inconclusive);
    let mut world = World::deployed(spec(canary_steps(), true, 4), verdicts);
    world.set_image("app:2");
    world.run_until(60, |w| {
        w.phase() == Some(RolloutPhase::Paused) && w.at_step(2)
    });
    let message = world.status.message.clone().unwrap_or_default();
    assert!(message.starts_with("paused at step 3/5: "), "{message}");
    assert_eq!(
        message.matches("no data: the canary").count(),
        1,
        "{message}"
    );
    assert!(!message.contains("(value no data)"), "{message}");
    assert!(message.contains("vigil run --load RPS"), "{message}");
    assert!(message.contains("min-requests"), "{message}");
    assert!(message.contains("--analysis"), "{message}");
}

/// Issue 16, GitOps clarity: after an automatic rollback the message says the spec still names
/// the rejected revision and what settles it.
#[test]
fn an_automatic_rollback_says_the_spec_still_names_the_rejected_revision() {
    let verdicts = step_verdict(vec![2], AnalysisPhase::Failed);
    let mut world = World::deployed(spec(canary_steps(), true, 4), verdicts);
    world.set_image("app:2");
    let rejected = world.desired();
    world.run_until(60, |w| w.phase() == Some(RolloutPhase::Degraded));
    let message = world.status.message.clone().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "The spec still names the rejected revision {rejected}: revert it in Git"
        )),
        "{message}"
    );
    assert!(message.contains("`vigil retry shop`"), "{message}");
}

#[test]
fn a_baseline_survives_a_controller_killed_at_any_instant_and_is_gone_at_the_end() {
    // The replica ratio, and the Gateway API's three-way split with a baseline Service.
    for router in [false, true] {
        a_baseline_survives_crashes(router);
    }
}

fn a_baseline_survives_crashes(router: bool) {
    let with_baseline = || {
        let mut spec = spec(canary_steps(), router, 4);
        spec.strategy.canary.baseline = Some(vigil::api::Baseline {
            enabled: true,
            service: router.then(|| "shop-baseline".to_owned()),
        });
        spec
    };
    let completed_steps = |world: &World| -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for (reason, message) in &world.events {
            if reason == "StepCompleted" && !seen.contains(message) {
                seen.push(message.clone());
            }
        }
        seen
    };
    let reference = {
        let mut world = World::deployed(with_baseline(), all_pass());
        world.set_image("app:2");
        let new = world.desired();
        world.run_until(200, |w| w.healthy_on(&new));
        world
    };
    for crash_every in [2usize, 3] {
        for effects_done in [0usize, 1, 2] {
            let mut world = World::deployed(with_baseline(), all_pass());
            let old = world.status.stable_revision.clone().expect("stable");
            let baseline = vigil::rollout::baseline::baseline_revision(&old);
            world.set_image("app:2");
            let new = world.desired();
            let mut most_baseline_pods = 0;
            let mut most_baseline_weight = 0;
            for round in 0..400 {
                if world.healthy_on(&new) {
                    break;
                }
                let crash = (round % crash_every == 0).then_some(if effects_done == 0 {
                    Crash::BeforeEffects
                } else {
                    Crash::AfterEffects(effects_done)
                });
                world.reconcile_with(crash);
                most_baseline_pods = most_baseline_pods
                    .max(world.revisions.get(&baseline).map_or(0, |r| r.replicas));
                let baseline_weight = world.baseline_router.unwrap_or(0);
                most_baseline_weight = most_baseline_weight.max(baseline_weight);
                if baseline_weight > 0 {
                    // Traffic reaches the baseline only through its Service on its pods.
                    assert_eq!(world.services.baseline.as_deref(), Some(baseline.as_str()));
                    assert!(world.revisions.get(&baseline).is_some_and(|r| r.ready > 0));
                }
                world.advance(5);
            }
            let case =
                format!("router {router}, crash every {crash_every}, {effects_done} effects");
            assert!(world.healthy_on(&new), "{case}");
            assert_eq!(
                completed_steps(&world),
                completed_steps(&reference),
                "{case}"
            );
            assert_eq!(
                world.runs.len(),
                reference.runs.len(),
                "no duplicate runs: {case}"
            );
            // 4 replicas at 20 % and at 50 %: the canary's 1 then 2 pods.
            assert_eq!(most_baseline_pods, 2, "{case}");
            // With the router, the canary's 50 % at most.
            assert_eq!(most_baseline_weight, if router { 50 } else { 0 }, "{case}");
            world.reconcile_with(None);
            assert_eq!(
                world.revisions.get(&baseline).map(|r| r.replicas),
                Some(0),
                "the baseline is gone after the promotion: {case}"
            );
            assert_eq!(world.baseline_router.unwrap_or(0), 0, "{case}");
        }
    }
}

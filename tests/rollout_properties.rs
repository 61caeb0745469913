//! Property tests of `rollout::step` over random step lists, random analysis verdicts, random
//! user requests in random order, and controller crashes at random instants.

mod rollout_sim;

use std::collections::BTreeMap;

use proptest::prelude::*;
use rollout_sim::*;
use vigil::api::{AnalysisPhase, CanaryStep, RolloutPhase, RolloutStatus};
use vigil::rollout::{AnalysisKind, Effect, Observation, step_run_name};

#[derive(Clone, Copy, Debug)]
enum Action {
    Promote,
    PromoteFull,
    Abort,
    Retry,
    Pause,
    Resume,
    NewTemplate,
    Crash(usize),
}

fn a_step() -> impl Strategy<Value = CanaryStep> {
    prop_oneof![
        (0..=100i32).prop_map(set_weight),
        prop_oneof![Just(None), (0..=90u32).prop_map(|s| Some(format!("{s}s")))]
            .prop_map(|d| pause(d.as_deref())),
        Just(analysis("a")),
    ]
}

fn a_verdict() -> impl Strategy<Value = AnalysisPhase> {
    prop_oneof![
        4 => Just(AnalysisPhase::Successful),
        2 => Just(AnalysisPhase::Failed),
        1 => Just(AnalysisPhase::Inconclusive),
        1 => Just(AnalysisPhase::Error),
    ]
}

fn an_action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => Just(Action::Promote),
        1 => Just(Action::PromoteFull),
        1 => Just(Action::Abort),
        2 => Just(Action::Retry),
        1 => Just(Action::Pause),
        2 => Just(Action::Resume),
        1 => Just(Action::NewTemplate),
        2 => (0usize..6).prop_map(Action::Crash),
    ]
}

/// Verdicts per step index (and for the background run), after `delay` seconds.
fn scripted(
    step_verdicts: Vec<AnalysisPhase>,
    background: Option<(AnalysisPhase, i64)>,
    delay: i64,
) -> Verdicts {
    Box::new(move |run| match run.kind {
        AnalysisKind::Step { index } => (run.age >= delay).then(|| {
            usize::try_from(index)
                .ok()
                .and_then(|i| step_verdicts.get(i).copied())
                .unwrap_or(AnalysisPhase::Successful)
        }),
        AnalysisKind::Background => {
            background.and_then(|(phase, after)| (run.age >= after).then_some(phase))
        }
        // Canary specs only here.
        AnalysisKind::PrePromotion | AnalysisKind::PostPromotion => None,
    })
}

/// The highest setWeight at or before `index`, and the last one (the current step's weight).
fn weights_up_to(steps: &[CanaryStep], index: usize) -> (i32, i32) {
    let upto = &steps[..=index.min(steps.len() - 1)];
    let highest = upto.iter().filter_map(|s| s.set_weight).max().unwrap_or(0);
    let current = upto.iter().rev().find_map(|s| s.set_weight).unwrap_or(0);
    (highest, current)
}

/// Whether `observation` shows the analysis the status waits on as Failed.
fn observes_current_failure(
    status: &RolloutStatus,
    observation: &Observation,
    background_active: bool,
) -> bool {
    let failed = |name: &str| {
        observation
            .analysis_runs
            .iter()
            .any(|r| r.name == name && r.phase == AnalysisPhase::Failed)
    };
    let (Some(canary), Some(index)) = (&status.canary_revision, status.current_step_index) else {
        return false;
    };
    let step_run = step_run_name(NAME, canary, status.canary_attempt, index);
    let step_failed = status
        .step_analysis
        .as_ref()
        .is_some_and(|run| run.name == step_run && failed(&run.name));
    let background_failed = background_active
        && status
            .background_analysis
            .as_ref()
            .is_some_and(|run| failed(&run.name));
    step_failed || background_failed
}

fn check_invariants(world: &World, steps: &[CanaryStep], crashed: bool) {
    let status = &world.status;
    assert!((0..=100).contains(&status.canary_weight));
    if steps.is_empty() {
        return;
    }
    let in_steps = status.canary_revision.is_some()
        && !status.abort
        && status.aborted_at.is_none()
        && status
            .current_step_index
            .is_some_and(|i| usize::try_from(i).is_ok_and(|i| i < steps.len()));
    if in_steps {
        let index = usize::try_from(status.current_step_index.unwrap_or(0)).unwrap_or(0);
        let (highest, current) = weights_up_to(steps, index);
        assert!(
            status.canary_weight <= current,
            "weight {} above the current step's setWeight {current} at step {index} of {steps:?}",
            status.canary_weight
        );
        assert!(status.canary_weight <= highest);
        if !crashed && let Some(router) = world.router {
            assert!(
                router <= highest,
                "router weight {router} above the highest setWeight so far {highest} at step {index} of {steps:?}"
            );
        }
    }
}

/// The steps with each setWeight raised to the highest one before it.
fn never_decreasing(mut steps: Vec<CanaryStep>) -> Vec<CanaryStep> {
    let mut highest = 0;
    for step in &mut steps {
        if let Some(weight) = &mut step.set_weight {
            highest = highest.max(*weight);
            *weight = highest;
        }
    }
    steps
}

fn drive(
    steps: Vec<CanaryStep>,
    router: bool,
    replicas: i32,
    background: Option<i32>,
    verdicts: Verdicts,
    actions: BTreeMap<usize, Action>,
    rounds: usize,
) -> World {
    // Only specs the one validator accepts: weights never decrease, and the background
    // analysis starts at a step index.
    let steps = never_decreasing(steps);
    let mut spec = spec(steps.clone(), router, replicas);
    if let Some(start) = background {
        let last = i32::try_from(steps.len().saturating_sub(1)).unwrap_or(0);
        spec = with_background(spec, start.min(last));
    }
    let mut world = World::deployed(spec, verdicts);
    world.tick = 10;
    world.set_image("app:2");
    let mut images = 2;
    for round in 0..rounds {
        let mut crash = None;
        match actions.get(&round) {
            Some(Action::Promote) => world.promote(),
            Some(Action::PromoteFull) => world.promote_full(),
            Some(Action::Abort) => world.abort(),
            Some(Action::Retry) => world.retry(),
            Some(Action::Pause) => world.spec.paused = true,
            Some(Action::Resume) => world.spec.paused = false,
            Some(Action::NewTemplate) => {
                images += 1;
                world.set_image(&format!("app:{images}"));
            }
            Some(Action::Crash(done)) => {
                crash = Some(if *done == 0 {
                    Crash::BeforeEffects
                } else {
                    Crash::AfterEffects(*done)
                })
            }
            None => {}
        }
        let before = world.status.clone();
        let observation = world.observe();
        let background_active = world.spec.strategy.canary.analysis.is_some()
            && !before.promote_full
            && before.current_step_index.unwrap_or(0)
                >= background.unwrap_or(0).min(steps.len() as i32);
        let decision = world.reconcile_with(crash);
        // A Failed analysis always rolls back: Degraded, weight 0, traffic back first.
        let contested = before.abort
            || before.aborted_at.is_some()
            || before.canary_revision.as_deref() != Some(observation.desired_revision.as_str());
        if !contested && observes_current_failure(&before, &observation, background_active) {
            assert_eq!(decision.status.phase, Some(RolloutPhase::Degraded));
            assert_eq!(decision.status.canary_weight, 0);
            assert!(decision.status.abort);
            if observation.router_canary_weight.is_some_and(|w| w > 0) {
                assert_eq!(
                    decision.effects.first(),
                    Some(&Effect::SetWeight { canary_weight: 0 })
                );
            }
        }
        check_invariants(&world, &steps, crash.is_some());
        let tick = world.tick;
        world.advance(tick);
    }
    world
}

proptest! {
    // Each case drives a whole rollout (about 140 reconciles, each checked four ways).
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn weights_stay_bounded_and_failures_roll_back_under_random_requests(
        steps in prop::collection::vec(a_step(), 1..7),
        router in any::<bool>(),
        replicas in 1..6i32,
        background in prop::option::of(0..4i32),
        step_verdicts in prop::collection::vec(a_verdict(), 7),
        background_verdict in prop::option::of((a_verdict(), 20..200i64)),
        delay in 10..60i64,
        actions in prop::collection::btree_map(0..120usize, an_action(), 0..12),
    ) {
        drive(
            steps,
            router,
            replicas,
            background,
            scripted(step_verdicts, background_verdict, delay),
            actions,
            140,
        );
    }

    #[test]
    fn a_failed_step_analysis_ends_with_weight_zero_and_degraded(
        before in prop::collection::vec(a_step(), 0..4),
        after in prop::collection::vec(a_step(), 0..3),
        router in any::<bool>(),
        replicas in 1..6i32,
    ) {
        // Only timed pauses before the failing step, so the rollout reaches it by itself.
        let before: Vec<CanaryStep> = before
            .into_iter()
            .map(|s| if s.pause.as_ref().is_some_and(|p| p.duration.is_none()) { pause(Some("10s")) } else { s })
            .collect();
        let failing = before.len();
        let mut steps = before;
        steps.push(analysis("gate"));
        steps.extend(after);
        let mut verdicts = vec![AnalysisPhase::Successful; steps.len()];
        verdicts[failing] = AnalysisPhase::Failed;
        let world = drive(
            steps,
            router,
            replicas,
            None,
            scripted(verdicts, None, 20),
            BTreeMap::new(),
            90,
        );
        prop_assert_eq!(world.status.phase, Some(RolloutPhase::Degraded));
        prop_assert_eq!(world.status.canary_weight, 0);
        if router {
            prop_assert_eq!(world.router, Some(0));
        }
        let canary = world.status.canary_revision.clone().unwrap_or_default();
        prop_assert_eq!(world.replicas_of(&canary), 0, "canary scaled down after the delay");
        let stable = world.status.stable_revision.clone().unwrap_or_default();
        prop_assert_eq!(world.replicas_of(&stable), replicas);
        let message = world.status.message.clone().unwrap_or_default();
        prop_assert!(message.contains("error rate 7.2% > 5% threshold"), "{}", message);
    }
}

//! Rollout webhooks through the pure state machine and the simulated cluster: every type
//! gating (pending, failing, passing), a rollback hook aborting, post-rollout and event
//! notifications with their payloads, and restarts mid-gate. The simulator plays the shell's
//! caller (a polled hook's scripted answer is seen at the next reconcile) and checks restart
//! safety at every reconcile.

mod rollout_sim;

use std::collections::BTreeMap;

use rollout_sim::*;
use vigil::api::{AnalysisPhase, RolloutPhase, RolloutSpec, Webhook, WebhookType};
use vigil::rollout::webhooks::{CallKind, WebhookOutcome};

const OK: WebhookOutcome = WebhookOutcome::Answered { status: 200 };
const UNAVAILABLE: WebhookOutcome = WebhookOutcome::Answered { status: 503 };

fn hook(name: &str, type_: WebhookType) -> Webhook {
    Webhook {
        name: name.into(),
        type_,
        url: format!("http://receiver.test/{name}"),
        timeout: None,
        metadata: BTreeMap::from([("team".to_owned(), "shop".to_owned())]),
    }
}

/// Three steps with a router: setWeight 20, pause 30s, setWeight 50.
fn hooked(hooks: Vec<Webhook>) -> RolloutSpec {
    let mut spec = spec(
        vec![set_weight(20), pause(Some("30s")), set_weight(50)],
        true,
        4,
    );
    spec.strategy.canary.webhooks = hooks;
    spec
}

/// A deployed world whose canary `app:2` has started.
fn releasing(hooks: Vec<Webhook>) -> (World, String) {
    let mut world = World::deployed(hooked(hooks), all_pass());
    world.set_image("app:2");
    let canary = world.desired();
    (world, canary)
}

fn message(world: &World) -> String {
    world.status.message.clone().unwrap_or_default()
}

/// Where each gate holds the rollout, and what must be true there.
struct GateCase {
    type_: WebhookType,
    /// The step index the rollout waits at.
    waits_at: i32,
    /// The router weight while waiting.
    weight: i32,
    /// Canary pods while waiting (of 4).
    canary_pods: i32,
}

fn gate_cases() -> Vec<GateCase> {
    vec![
        GateCase {
            type_: WebhookType::PreRollout,
            waits_at: 0,
            weight: 0,
            canary_pods: 0,
        },
        GateCase {
            type_: WebhookType::ConfirmRollout,
            waits_at: 0,
            weight: 0,
            canary_pods: 0,
        },
        GateCase {
            type_: WebhookType::ConfirmTrafficIncrease,
            waits_at: 0,
            weight: 0,
            canary_pods: 0,
        },
        GateCase {
            type_: WebhookType::ConfirmPromotion,
            waits_at: 3,
            weight: 50,
            canary_pods: 2,
        },
    ]
}

#[test]
fn every_gate_holds_the_rollout_while_its_hook_has_not_answered() {
    for case in gate_cases() {
        let (mut world, canary) = releasing(vec![hook("gate", case.type_)]);
        for _ in 0..40 {
            world.reconcile();
            world.advance(5);
        }
        let what = format!("{} gate", case.type_);
        assert_eq!(world.step_index(), Some(case.waits_at), "{what}");
        assert_eq!(world.router, Some(case.weight), "{what}");
        assert_eq!(world.replicas_of(&canary), case.canary_pods, "{what}");
        assert_eq!(world.phase(), Some(RolloutPhase::Progressing), "{what}");
        let expected = format!("waiting for {} hook gate: no answer yet", case.type_);
        assert!(
            message(&world).contains(&expected),
            "{what}: {}",
            message(&world)
        );
        let progressing = world
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Progressing")
            .expect("a Progressing condition");
        assert!(progressing.message.contains(&expected), "{what}");
        assert!(
            world
                .calls_to("gate")
                .iter()
                .all(|c| c.kind == CallKind::Poll),
            "{what}"
        );
        let requeue = world.decisions.last().and_then(|d| d.requeue_at);
        assert!(
            requeue.is_some(),
            "{what}: a waiting gate is looked at again"
        );
    }
}

#[test]
fn every_gate_that_answers_non_2xx_holds_with_the_answer_and_is_asked_again() {
    for case in gate_cases() {
        let (mut world, canary) = releasing(vec![hook("gate", case.type_)]);
        world.hook_script.insert("gate".into(), UNAVAILABLE);
        for _ in 0..40 {
            world.reconcile();
            world.advance(5);
        }
        let what = format!("{} gate", case.type_);
        assert_eq!(world.step_index(), Some(case.waits_at), "{what}");
        assert_eq!(world.replicas_of(&canary), case.canary_pods, "{what}");
        let expected = format!("waiting for {} hook gate: answered HTTP 503", case.type_);
        assert!(
            message(&world).contains(&expected),
            "{what}: {}",
            message(&world)
        );
        assert!(world.calls_to("gate").len() > 10, "{what}: polled again");
    }
}

#[test]
fn every_gate_that_answers_2xx_lets_the_release_complete_and_is_asked_once() {
    for case in gate_cases() {
        let (mut world, canary) = releasing(vec![hook("gate", case.type_)]);
        world.hook_script.insert("gate".into(), OK);
        world.run_until(80, |w| w.healthy_on(&canary));
        let what = format!("{} gate", case.type_);
        let polls = world.calls_to("gate");
        let expected_keys = match case.type_ {
            // One question per weight increase: steps 0 and 2.
            WebhookType::ConfirmTrafficIncrease => 2,
            _ => 1,
        };
        let mut keys: Vec<&str> = polls.iter().map(|c| c.key.as_str()).collect();
        keys.dedup();
        assert_eq!(keys.len(), expected_keys, "{what}: {keys:?}");
        assert!(
            world
                .event_reasons()
                .contains(&"WebhookGatePassed".to_owned()),
            "{what}"
        );
        let payload = &polls[0].payload;
        assert_eq!(payload.name, NAME);
        assert_eq!(payload.type_, case.type_.as_str());
        assert_eq!(payload.webhook, "gate");
        assert_eq!(
            payload.metadata.get("team").map(String::as_str),
            Some("shop")
        );
        assert_eq!(payload.revisions.canary.as_deref(), Some(canary.as_str()));
        assert_eq!(payload.weights.canary + payload.weights.stable, 100);
    }
}

#[test]
fn a_gate_that_waits_longer_than_the_progress_deadline_does_not_abort_once_it_opens() {
    for case in gate_cases() {
        let (mut world, canary) = releasing(vec![hook("gate", case.type_)]);
        // 20 minutes at the gate, twice the default progress deadline.
        for _ in 0..240 {
            world.reconcile();
            world.advance(5);
        }
        let what = format!("{} gate", case.type_);
        assert_eq!(world.step_index(), Some(case.waits_at), "{what}");
        world.hook_script.insert("gate".into(), OK);
        world.run_until(80, |w| w.healthy_on(&canary));
        assert!(
            !world
                .event_reasons()
                .contains(&"ProgressDeadlineExceeded".to_owned()),
            "{what}"
        );
    }
}

#[test]
fn a_traffic_gate_holds_each_increase_at_the_weight_before_it() {
    let (mut world, _) = releasing(vec![hook("more", WebhookType::ConfirmTrafficIncrease)]);
    world.hook_script.insert("more".into(), OK);
    world.run_until(40, |w| w.at_step(1));
    // The answer for step 0 does not open step 2: the hook is asked again, and until it
    // answers the weight stays at 20.
    world.hook_script.clear();
    for _ in 0..20 {
        world.reconcile();
        world.advance(5);
    }
    assert!(world.at_step(2));
    assert_eq!(world.router, Some(20));
    assert!(message(&world).contains("before raising the weight to 50"));
    let keys: Vec<&str> = world
        .calls_to("more")
        .iter()
        .map(|c| c.key.as_str())
        .collect();
    assert!(keys.iter().any(|k| k.ends_with("@0")), "{keys:?}");
    assert!(keys.iter().any(|k| k.ends_with("@2")), "{keys:?}");
}

#[test]
fn pre_rollout_is_asked_before_confirm_rollout_and_nothing_moves_until_both_pass() {
    let (mut world, canary) = releasing(vec![
        hook("checks", WebhookType::PreRollout),
        hook("approve", WebhookType::ConfirmRollout),
    ]);
    world.hook_script.insert("checks".into(), UNAVAILABLE);
    for _ in 0..10 {
        world.reconcile();
        world.advance(5);
    }
    assert!(
        world.calls_to("approve").is_empty(),
        "asked only after pre-rollout"
    );
    assert!(message(&world).contains("waiting for pre-rollout hook checks: answered HTTP 503"));
    world.hook_script.insert("checks".into(), OK);
    for _ in 0..10 {
        world.reconcile();
        world.advance(5);
    }
    assert_eq!(world.replicas_of(&canary), 0);
    assert!(message(&world).contains("waiting for confirm-rollout hook approve"));
    world.hook_script.insert("approve".into(), OK);
    world.run_until(80, |w| w.healthy_on(&canary));
}

#[test]
fn a_restart_mid_gate_neither_skips_the_gate_nor_asks_a_passed_one_again() {
    let (mut world, canary) = releasing(vec![
        hook("checks", WebhookType::PreRollout),
        hook("ship-it", WebhookType::ConfirmPromotion),
    ]);
    world.hook_script.insert("checks".into(), OK);
    world.run_until(80, |w| w.at_step(3));
    for _ in 0..5 {
        world.reconcile();
        world.advance(5);
    }
    let pre_rollout_calls = world.calls_to("checks").len();
    // The controller restarts: the answers its caller kept are gone; status is all it has.
    world.hook_answers.clear();
    for crash in [Crash::BeforeEffects, Crash::AfterEffects(1)] {
        world.reconcile_with(Some(crash));
    }
    for _ in 0..10 {
        world.reconcile();
        world.advance(5);
    }
    assert!(world.at_step(3), "the promotion gate was not skipped");
    assert_eq!(world.router, Some(50));
    assert_eq!(
        world.calls_to("checks").len(),
        pre_rollout_calls,
        "a passed gate is recorded in status, not asked again"
    );
    let passed = world.status.webhooks.clone().expect("status.webhooks");
    assert_eq!(passed.passed, vec!["checks".to_owned()]);
    // Answered after the restart, then restarted again before the status was written: the
    // answer is asked again and still counts.
    world.hook_script.insert("ship-it".into(), OK);
    world.reconcile_with(Some(Crash::BeforeEffects));
    world.hook_answers.clear();
    world.run_until(80, |w| w.healthy_on(&canary));
    assert!(world.status.webhooks.is_none(), "cleared with the canary");
}

#[test]
fn a_rollback_hook_that_answers_2xx_aborts_the_canary_naming_the_hook() {
    let (mut world, canary) = releasing(vec![hook("kill-switch", WebhookType::Rollback)]);
    world.hook_script.insert("kill-switch".into(), UNAVAILABLE);
    world.run_until(40, |w| w.at_step(1));
    assert_eq!(
        world.phase(),
        Some(RolloutPhase::Paused),
        "non-2xx: carry on"
    );
    world.hook_script.insert("kill-switch".into(), OK);
    world.run_until(5, |w| w.phase() == Some(RolloutPhase::Degraded));
    let message = message(&world);
    assert!(
        message.contains("rolled back by rollback hook kill-switch (answered HTTP 200)"),
        "{message}"
    );
    assert_eq!(world.router, Some(0), "traffic back on the stable at once");
    assert!(
        world
            .event_reasons()
            .contains(&"RolledBackByWebhook".to_owned())
    );
    assert_ne!(
        world.status.stable_revision.as_deref(),
        Some(canary.as_str())
    );
    // No longer asked once the canary is rolled back.
    let calls = world.calls_to("kill-switch").len();
    for _ in 0..5 {
        world.reconcile();
        world.advance(5);
    }
    assert_eq!(world.calls_to("kill-switch").len(), calls);
}

#[test]
fn a_rollback_hook_that_never_answers_does_not_hold_a_failed_analysis_back() {
    let mut spec = hooked(vec![hook("kill-switch", WebhookType::Rollback)]);
    spec.strategy.canary.steps = vec![set_weight(20), analysis("errors"), set_weight(50)];
    let mut world = World::deployed(spec, step_verdict(vec![1], AnalysisPhase::Failed));
    world.set_image("app:2");
    world.run_until(40, |w| w.phase() == Some(RolloutPhase::Degraded));
    assert!(message(&world).contains("step analysis failed"));
    assert!(!world.calls_to("kill-switch").is_empty(), "it was polled");
}

#[test]
fn post_rollout_is_notified_once_after_promotion_and_once_after_a_rollback() {
    let (mut world, canary) = releasing(vec![hook("done", WebhookType::PostRollout)]);
    world.run_until(80, |w| w.healthy_on(&canary));
    let calls = world.calls_to("done");
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].kind, CallKind::Notify);
    assert_eq!(calls[0].payload.phase, "Healthy");
    assert_eq!(
        calls[0].payload.revisions.stable.as_deref(),
        Some(canary.as_str())
    );

    world.set_image("app:3");
    world.run_until(10, |w| w.at_step(1));
    world.abort();
    world.run_until(5, |w| w.phase() == Some(RolloutPhase::Aborted));
    for _ in 0..5 {
        world.reconcile();
        world.advance(5);
    }
    let calls = world.calls_to("done");
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[1].payload.phase, "Aborted");
    assert_eq!(calls[1].payload.weights.canary, 0);
}

#[test]
fn every_event_is_sent_to_event_hooks_with_flaggers_metadata() {
    let (mut world, canary) = releasing(vec![hook("feed", WebhookType::Event)]);
    world.run_until(80, |w| w.healthy_on(&canary));
    let sent: Vec<String> = world
        .calls_to("feed")
        .iter()
        .map(|c| c.payload.event.clone().expect("an event").reason)
        .collect();
    assert_eq!(sent, world.event_reasons(), "every event, in order");
    let completed = world.calls_to("feed").last().map(|c| c.payload.clone());
    let completed = completed.expect("a call");
    assert_eq!(
        completed.metadata.get("eventType").map(String::as_str),
        Some("Normal")
    );
    assert!(completed.metadata["eventMessage"].contains("promoted to stable"));
    assert!(
        world
            .calls_to("feed")
            .iter()
            .all(|c| c.kind == CallKind::Notify)
    );
    // The shell delivers each key once: distinct events must have distinct keys.
    let keys: std::collections::BTreeSet<&str> = world
        .calls_to("feed")
        .iter()
        .map(|c| c.key.as_str())
        .collect();
    assert_eq!(keys.len(), sent.len(), "{keys:?}");
}

#[test]
fn the_analysis_summary_in_the_payload_names_the_failing_metric() {
    let mut spec = hooked(vec![hook("done", WebhookType::PostRollout)]);
    spec.strategy.canary.steps = vec![set_weight(20), analysis("errors")];
    let mut world = World::deployed(spec, step_verdict(vec![1], AnalysisPhase::Failed));
    world.set_image("app:2");
    world.run_until(40, |w| w.phase() == Some(RolloutPhase::Degraded));
    let calls = world.calls_to("done");
    let analysis = calls[0].payload.analysis.clone().expect("a summary");
    assert_eq!(analysis.phase, "Failed");
    assert!(analysis.failing_metric.is_some(), "{analysis:?}");
    assert!(analysis.reason.is_some(), "{analysis:?}");
}

#[test]
fn an_invalid_webhook_is_named_and_never_called() {
    let mut bad = hook("gate", WebhookType::ConfirmPromotion);
    bad.url = "ftp://receiver.test/gate".into();
    bad.timeout = Some("5m".into());
    let mut spec = hooked(vec![bad, hook("gate", WebhookType::Event)]);
    spec.strategy.canary.webhooks[1].url = "http://user:secret@receiver.test/".into();
    let problems = vigil::rollout::validate_spec(&spec);
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for expected in [
        "spec.strategy.canary.webhooks[0].url",
        "spec.strategy.canary.webhooks[0].timeout",
        "spec.strategy.canary.webhooks[1].name",
        "spec.strategy.canary.webhooks[1].url",
    ] {
        assert!(paths.contains(&expected), "{expected} in {problems:?}");
    }
    assert!(
        problems.iter().all(|p| !p.message.contains("secret")),
        "{problems:?}"
    );
    let mut world = World::new(spec, all_pass());
    for _ in 0..5 {
        world.reconcile();
        world.advance(5);
    }
    assert!(world.hook_calls.is_empty(), "{:?}", world.hook_calls);
    assert_eq!(world.phase(), Some(RolloutPhase::Degraded));
}

#[test]
fn more_webhooks_than_the_bound_are_refused() {
    let hooks = (0..21)
        .map(|i| hook(&format!("h{i}"), WebhookType::Event))
        .collect();
    let problems = vigil::rollout::validate_spec(&hooked(hooks));
    assert!(
        problems
            .iter()
            .any(|p| p.path == "spec.strategy.canary.webhooks" && p.message.contains("at most 20")),
        "{problems:?}"
    );
}

//! Header and mirror routes through the pure state machine and the simulated cluster: what is
//! wanted at each step, when a step counts, removal on promotion and abort, and restart
//! safety (the simulator checks it at every reconcile).

mod rollout_sim;

use rollout_sim::*;
use vigil::api::{CanaryStep, ManagedRoute, RolloutPhase};
use vigil::rollout::Effect;
use vigil::traffic::{
    HeaderMatch, HeaderRoute, ManagedRoutes, MirrorMatch, MirrorRoute, StringMatch,
};

fn yaml_step(text: &str) -> CanaryStep {
    serde_norway::from_str(text).expect("step")
}

fn routed(steps: Vec<CanaryStep>) -> vigil::api::RolloutSpec {
    let mut spec = spec(steps, true, 4);
    if let Some(routing) = spec.strategy.canary.traffic_routing.as_mut() {
        routing.managed_routes = vec![
            ManagedRoute {
                name: "testers".into(),
            },
            ManagedRoute {
                name: "shadow".into(),
            },
        ];
    }
    spec
}

fn testers(value: &str) -> HeaderRoute {
    HeaderRoute {
        name: "testers".into(),
        matches: vec![HeaderMatch {
            header_name: "x-canary".into(),
            value: StringMatch::Exact(value.into()),
        }],
    }
}

fn shadow() -> MirrorRoute {
    MirrorRoute {
        name: "shadow".into(),
        percentage: 35,
        matches: vec![MirrorMatch {
            method: Some(StringMatch::Exact("GET".into())),
            ..MirrorMatch::default()
        }],
    }
}

fn steps() -> Vec<CanaryStep> {
    vec![
        yaml_step(
            r#"{setHeaderRoute: {name: testers, match: [{headerName: x-canary, headerValue: {exact: "yes"}}]}}"#,
        ),
        pause(None), // 1
        yaml_step(
            "{setMirrorRoute: {name: shadow, percentage: 35, match: [{method: {exact: GET}}]}}",
        ), // 2
        set_weight(25), // 3
        pause(None), // 4
        yaml_step(
            r#"{setHeaderRoute: {name: testers, match: [{headerName: x-canary, headerValue: {exact: "again"}}]}}"#,
        ),
        yaml_step("{setMirrorRoute: {name: shadow}}"), // 6
        pause(None),                                   // 7
    ]
}

#[test]
fn routes_follow_the_steps_and_go_at_promotion() {
    let mut world = World::deployed(routed(steps()), all_pass());
    let new = {
        world.set_image("app:2");
        world.desired()
    };
    // (pause step reached, routes the router holds there, canary pods)
    let table = [
        (1, ManagedRoutes::new(vec![testers("yes")], vec![]), 1),
        (
            4,
            ManagedRoutes::new(vec![testers("yes")], vec![shadow()]),
            1,
        ),
        (7, ManagedRoutes::new(vec![testers("again")], vec![]), 1),
    ];
    for (pause_at, routes, pods) in table {
        world.run_until(60, |w| w.at_step(pause_at));
        assert!(world.at_step(pause_at), "{:?}", world.status);
        assert_eq!(world.routes, routes, "at step {pause_at}");
        // At weight 0 the header route still needs a canary pod to reach.
        assert!(world.replicas_of(&new) >= pods, "at step {pause_at}");
        world.promote();
    }
    world.run_until(60, |w| w.healthy_on(&new));
    assert!(world.healthy_on(&new), "{:?}", world.status);
    assert_eq!(world.routes, ManagedRoutes::default());
}

#[test]
fn a_header_route_step_at_weight_zero_runs_one_canary_pod_and_waits_for_it() {
    let mut world = World::deployed(routed(steps()), all_pass());
    world.set_image("app:2");
    let new = world.desired();
    let decision = world.reconcile();
    assert!(decision.effects.contains(&Effect::ScaleRevision {
        revision: new.clone(),
        replicas: 1
    }));
    // No pod ready yet: the route is not sent, the step waits.
    assert!(
        !decision
            .effects
            .iter()
            .any(|e| matches!(e, Effect::SetHeaderRoute { .. })),
        "{:?}",
        decision.effects
    );
    assert_eq!(decision.status.current_step_index, Some(0));
    world.advance(5);
    let decision = world.reconcile();
    assert!(
        decision.effects.contains(&Effect::SetHeaderRoute {
            route: testers("yes")
        }),
        "{:?}",
        decision.effects
    );
    assert_eq!(
        decision.status.current_step_index,
        Some(0),
        "counts only once read back"
    );
    world.advance(5);
    world.reconcile();
    assert!(world.at_step(1));
}

#[test]
fn a_router_that_does_not_take_the_route_holds_the_step_then_misses_the_deadline() {
    let mut spec = routed(steps());
    spec.progress_deadline_seconds = Some(60);
    let mut world = World::deployed(spec, all_pass());
    world.router_works = false;
    world.set_image("app:2");
    world.run_until(40, |w| w.phase() == Some(RolloutPhase::Degraded));
    assert_eq!(world.phase(), Some(RolloutPhase::Degraded));
    let message = world.status.message.clone().unwrap_or_default();
    assert!(
        message.contains(
            "waiting for the router to report the managed routes header testers (reports none)"
        ),
        "{message}"
    );
}

#[test]
fn an_abort_removes_every_route_with_the_weight_first() {
    let mut world = World::deployed(routed(steps()), all_pass());
    world.set_image("app:2");
    world.run_until(40, |w| w.at_step(1));
    world.promote();
    world.run_until(40, |w| w.at_step(4));
    assert_eq!(world.routes.header.len() + world.routes.mirror.len(), 2);
    world.abort();
    let decision = world.reconcile();
    assert_eq!(
        decision.effects[..3],
        [
            Effect::SetWeight { canary_weight: 0 },
            Effect::RemoveHeaderRoute {
                name: "testers".into()
            },
            Effect::RemoveMirrorRoute {
                name: "shadow".into()
            },
        ]
    );
    assert_eq!(world.routes, ManagedRoutes::default());
    assert_eq!(world.phase(), Some(RolloutPhase::Aborted));
}

//! The scaling controls driven through `rollout::step` by the simulated cluster
//! (`rollout_sim`): `setCanaryScale`, `dynamicStableScale` (with an abort in flight),
//! `maxSurge` / `maxUnavailable`, a replica count changed mid-release (an HPA), and the role
//! metadata and `minReadySeconds` every revision carries.

mod rollout_sim;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rollout_sim::*;
use vigil::api::{CanaryStep, PodMetadata, RolloutPhase, RolloutSpec, SetCanaryScale};
use vigil::rollout::scaling::RevisionSettings;
use vigil::rollout::{AnalysisKind, Effect, validate_spec};

fn canary_scale(replicas: Option<i32>, weight: Option<i32>, matching: bool) -> CanaryStep {
    CanaryStep {
        set_canary_scale: Some(SetCanaryScale {
            replicas,
            weight,
            match_traffic_weight: matching,
        }),
        ..Default::default()
    }
}

/// (canary pods, stable pods, router weight) at a pause.
type Shape = (i32, i32, Option<i32>);

/// Starts a release of `spec` and records the shape at every pause without a duration
/// (promoting past it), then the shape once Healthy and the old stable scaled down.
fn shapes_at_pauses(spec: RolloutSpec) -> (World, Vec<Shape>) {
    let mut world = World::deployed(spec, all_pass());
    let stable = world.desired();
    world.set_image("app:2");
    let canary = world.desired();
    let mut shapes = Vec::new();
    for _ in 0..20 {
        world.run_until(60, |w| {
            w.phase() == Some(RolloutPhase::Paused) || w.healthy_on(&canary)
        });
        if world.healthy_on(&canary) {
            // The old stable goes after scaleDownDelaySeconds.
            world.run_until(20, |w| w.replicas_of(&stable) == 0);
        }
        shapes.push((
            world.replicas_of(&canary),
            world.replicas_of(&stable),
            world.router,
        ));
        if world.healthy_on(&canary) {
            return (world, shapes);
        }
        world.promote();
        world.reconcile();
    }
    panic!("no end of the release: {shapes:?}");
}

#[test]
fn set_canary_scale_sets_the_canarys_pods_apart_from_the_weight() {
    let wait = || pause(None);
    // (steps, replicas, shape at each pause and once Healthy: (canary, old stable, weight))
    let cases: Vec<(Vec<CanaryStep>, i32, Vec<Shape>)> = vec![
        // More pods than the weight's share: 3 pods take 10% of the traffic.
        (
            vec![canary_scale(Some(3), None, false), set_weight(10), wait()],
            10,
            vec![(3, 10, Some(10)), (10, 0, Some(0))],
        ),
        // A percent of spec.replicas, beyond the weight, then back to the weight.
        (
            vec![
                canary_scale(None, Some(50), false),
                set_weight(20),
                wait(),
                canary_scale(None, None, true),
                set_weight(30),
                wait(),
            ],
            10,
            vec![(5, 10, Some(20)), (3, 10, Some(30)), (10, 0, Some(0))],
        ),
        // Pods before any traffic (warm-up at weight 0), kept by later weights.
        (
            vec![
                canary_scale(Some(2), None, false),
                wait(),
                set_weight(50),
                wait(),
            ],
            4,
            vec![(2, 4, Some(0)), (2, 4, Some(50)), (4, 0, Some(0))],
        ),
        // Zero pods asked for, yet traffic on the canary: it keeps one pod.
        (
            vec![canary_scale(Some(0), None, false), set_weight(20), wait()],
            10,
            vec![(1, 10, Some(20)), (10, 0, Some(0))],
        ),
        // More replicas than spec.replicas: capped.
        (
            vec![canary_scale(Some(40), None, false), set_weight(5), wait()],
            4,
            vec![(4, 4, Some(5)), (4, 0, Some(0))],
        ),
    ];
    for (steps, replicas, expected) in cases {
        let (_, shapes) = shapes_at_pauses(spec(steps.clone(), true, replicas));
        assert_eq!(shapes, expected, "steps {steps:?}, {replicas} replicas");
    }
}

#[test]
fn a_set_canary_scale_step_completes_once_the_canarys_pods_are_ready() {
    let steps = vec![canary_scale(Some(2), None, false), pause(None)];
    let mut world = World::deployed(spec(steps, true, 4), all_pass());
    world.pods_get_ready = false;
    world.set_image("app:2");
    for _ in 0..5 {
        world.reconcile();
        world.advance(5);
    }
    assert!(world.at_step(0), "waits for the pods: {:?}", world.status);
    assert!(
        world
            .status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("setCanaryScale 2 replicas") && m.contains("0/2 ready")),
        "{:?}",
        world.status.message
    );
    world.pods_get_ready = true;
    world.run_until(10, |w| w.at_step(1));
}

fn dynamic(steps: Vec<CanaryStep>, replicas: i32) -> RolloutSpec {
    let mut spec = spec(steps, true, replicas);
    spec.strategy.canary.dynamic_stable_scale = true;
    spec
}

#[test]
fn dynamic_stable_scale_shrinks_the_stable_as_traffic_leaves_it() {
    let wait = || pause(None);
    // (steps, replicas, shape at each pause and once Healthy)
    let cases: Vec<(Vec<CanaryStep>, i32, Vec<Shape>)> = vec![
        (
            vec![set_weight(25), wait(), set_weight(50), wait()],
            4,
            vec![(1, 3, Some(25)), (2, 2, Some(50)), (4, 0, Some(0))],
        ),
        (
            vec![set_weight(10), wait(), set_weight(90), wait()],
            10,
            vec![(1, 9, Some(10)), (9, 1, Some(90)), (10, 0, Some(0))],
        ),
        // With setCanaryScale the stable still follows the traffic, not the canary's pods.
        (
            vec![canary_scale(Some(1), None, false), set_weight(50), wait()],
            4,
            vec![(1, 2, Some(50)), (4, 0, Some(0))],
        ),
    ];
    for (steps, replicas, expected) in cases {
        let (_, shapes) = shapes_at_pauses(dynamic(steps.clone(), replicas));
        assert_eq!(shapes, expected, "steps {steps:?}, {replicas} replicas");
    }
}

#[test]
fn dynamic_stable_scale_shrinks_the_stable_only_once_the_router_reports_the_weight() {
    let mut world = World::deployed(dynamic(vec![set_weight(50), pause(None)], 4), all_pass());
    let stable = world.desired();
    world.router_works = false;
    world.set_image("app:2");
    for _ in 0..6 {
        world.reconcile();
        world.advance(5);
        assert_eq!(world.replicas_of(&stable), 4, "the router still reports 0");
    }
    world.router_works = true;
    world.run_until(10, |w| w.replicas_of(&stable) == 2);
}

#[test]
fn an_abort_under_dynamic_stable_scale_scales_the_stable_up_before_traffic_goes_back() {
    let mut world = World::deployed(dynamic(vec![set_weight(50), pause(None)], 4), all_pass());
    let stable = world.desired();
    world.set_image("app:2");
    let canary = world.desired();
    world.run_until(40, |w| w.phase() == Some(RolloutPhase::Paused));
    assert_eq!((world.replicas_of(&stable), world.router), (2, Some(50)));

    // The stable's new pods are slow: traffic goes back only as they become ready.
    world.pods_get_ready = false;
    world.abort();
    let first = world.reconcile();
    let stable_up = Effect::ScaleRevision {
        revision: stable.clone(),
        replicas: 4,
    };
    assert!(first.effects.contains(&stable_up), "{:?}", first.effects);
    assert!(
        !first
            .effects
            .iter()
            .any(|e| matches!(e, Effect::SetWeight { .. })),
        "no weight change while the stable cannot carry more: {:?}",
        first.effects
    );
    assert_eq!(first.status.canary_weight, 50);
    assert_eq!(world.router, Some(50));
    assert_eq!(world.replicas_of(&canary), 2, "the canary still serves");

    // (stable pods ready, weight the router is left at, canary pods)
    for (ready, weight, canary_pods) in [(2, 50, 2), (3, 25, 2), (4, 0, 0)] {
        world
            .revisions
            .get_mut(&stable)
            .expect("the stable revision")
            .ready = ready;
        world.reconcile();
        world.advance(1);
        world.reconcile();
        assert_eq!(world.router, Some(weight), "{ready}/4 stable pods ready");
        assert_eq!(world.replicas_of(&canary), canary_pods, "{ready}/4 ready");
    }
    assert_eq!(world.phase(), Some(RolloutPhase::Aborted));
}

fn surge(
    steps: Vec<CanaryStep>,
    replicas: i32,
    max_surge: Option<IntOrString>,
    max_unavailable: Option<IntOrString>,
) -> RolloutSpec {
    let mut spec = spec(steps, false, replicas);
    spec.strategy.canary.max_surge = max_surge;
    spec.strategy.canary.max_unavailable = max_unavailable;
    spec
}

#[test]
fn max_surge_and_max_unavailable_bound_every_step_of_a_release_without_a_router() {
    let int = |n| Some(IntOrString::Int(n));
    let percent = |p: &str| Some(IntOrString::String(p.into()));
    // (maxSurge, maxUnavailable, replicas, most pods in all, fewest ready pods)
    let cases = [
        (int(1), int(0), 4, 5, 4),
        (int(0), int(1), 4, 4, 3),
        (percent("50%"), percent("25%"), 4, 6, 3),
        (percent("25%"), None, 10, 13, 8),
        (None, int(0), 4, 5, 4),
        // 25% of 2 is 0 for both: one pod may be unavailable (as Kubernetes does).
        (int(0), percent("25%"), 2, 2, 1),
    ];
    for (max_surge, max_unavailable, replicas, most, fewest) in cases {
        let steps = vec![set_weight(50), pause(None)];
        let spec = surge(steps, replicas, max_surge.clone(), max_unavailable.clone());
        assert_eq!(
            validate_spec(&spec),
            vec![],
            "{max_surge:?}/{max_unavailable:?}"
        );
        let mut world = World::deployed(spec, all_pass());
        let stable = world.desired();
        world.set_image("app:2");
        let canary = world.desired();
        let (mut peak, mut low) = (0, i32::MAX);
        let healthy = |w: &World| w.healthy_on(&canary);
        for _ in 0..200 {
            if healthy(&world) {
                break;
            }
            if world.phase() == Some(RolloutPhase::Paused) {
                assert_eq!(
                    (world.replicas_of(&canary), world.replicas_of(&stable)),
                    (replicas / 2, replicas / 2),
                    "the half-way shape"
                );
                world.promote();
            }
            world.reconcile();
            let total: i32 = world.revisions.values().map(|r| r.replicas).sum();
            let ready: i32 = world.revisions.values().map(|r| r.ready).sum();
            peak = peak.max(total);
            low = low.min(ready);
            world.advance(5);
        }
        assert!(
            healthy(&world),
            "{max_surge:?}/{max_unavailable:?}: {:?}",
            world.status
        );
        assert!(
            peak <= most,
            "{max_surge:?}/{max_unavailable:?}: {peak} pods at once, over {most}"
        );
        assert!(
            low >= fewest,
            "{max_surge:?}/{max_unavailable:?}: only {low} pods ready, under {fewest}"
        );
    }
}

#[test]
fn max_surge_and_max_unavailable_both_zero_are_refused_and_nothing_moves() {
    let int = |n| Some(IntOrString::Int(n));
    let zero_percent = Some(IntOrString::String("0%".into()));
    for (max_surge, max_unavailable) in [(int(0), int(0)), (zero_percent.clone(), int(0))] {
        let steps = vec![set_weight(50), pause(None)];
        let mut world = World::deployed(surge(steps, 4, None, None), all_pass());
        world.spec.strategy.canary.max_surge = max_surge;
        world.spec.strategy.canary.max_unavailable = max_unavailable;
        let stable = world.desired();
        world.set_image("app:2");
        let decision = world.reconcile();
        assert_eq!(world.phase(), Some(RolloutPhase::Degraded));
        let message = decision.status.message.unwrap_or_default();
        assert!(
            message.contains("spec.strategy.canary.maxUnavailable")
                && message.contains("0 together with maxSurge 0"),
            "{message}"
        );
        assert!(
            decision
                .effects
                .iter()
                .all(|e| matches!(e, Effect::Event { .. })),
            "{:?}",
            decision.effects
        );
        assert_eq!(world.replicas_of(&stable), 4);
    }
}

/// (router, dynamicStableScale, steps, replicas before, after, (canary, stable) before,
/// (canary, stable) after)
type RescaleCase = (
    bool,
    bool,
    Vec<CanaryStep>,
    i32,
    i32,
    (i32, i32),
    (i32, i32),
);

#[test]
fn a_replica_count_changed_mid_release_rescales_both_roles() {
    let cases: Vec<RescaleCase> = vec![
        (
            true,
            false,
            vec![set_weight(20), pause(None)],
            10,
            20,
            (2, 10),
            (4, 20),
        ),
        (
            true,
            false,
            vec![set_weight(20), pause(None)],
            10,
            5,
            (2, 10),
            (1, 5),
        ),
        (
            true,
            false,
            vec![
                canary_scale(None, Some(50), false),
                set_weight(10),
                pause(None),
            ],
            4,
            8,
            (2, 4),
            (4, 8),
        ),
        (
            true,
            true,
            vec![set_weight(50), pause(None)],
            4,
            8,
            (2, 2),
            (4, 4),
        ),
        (
            false,
            false,
            vec![set_weight(20), pause(None)],
            10,
            20,
            (2, 8),
            (4, 16),
        ),
    ];
    for (router, dynamic_scale, steps, before, after, shape_before, shape_after) in cases {
        let mut spec = spec(steps.clone(), router, before);
        spec.strategy.canary.dynamic_stable_scale = dynamic_scale;
        let mut world = World::deployed(spec, all_pass());
        let stable = world.desired();
        world.set_image("app:2");
        let canary = world.desired();
        world.run_until(40, |w| w.phase() == Some(RolloutPhase::Paused));
        let label = format!("router {router}, dynamic {dynamic_scale}, {before} -> {after}");
        assert_eq!(
            (world.replicas_of(&canary), world.replicas_of(&stable)),
            shape_before,
            "{label}"
        );
        // What an HPA does through the scale subresource: spec.replicas changes.
        world.spec.replicas = Some(after);
        for _ in 0..6 {
            world.reconcile();
            world.advance(5);
        }
        assert_eq!(
            (world.replicas_of(&canary), world.replicas_of(&stable)),
            shape_after,
            "{label}"
        );
        assert_eq!(world.phase(), Some(RolloutPhase::Paused), "{label}");
        assert_eq!(
            world.status.replicas,
            Some(shape_after.0 + shape_after.1),
            "status.replicas, the scale subresource's, counts both roles: {label}"
        );
        world.promote();
        world.run_until(40, |w| w.healthy_on(&canary));
        assert_eq!(world.replicas_of(&canary), after, "{label}");
    }
}

fn metadata(pairs: &[(&str, &str)]) -> PodMetadata {
    PodMetadata {
        labels: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        annotations: [("vigil.example/role".to_owned(), pairs[0].1.to_owned())].into(),
    }
}

#[test]
fn each_role_carries_its_metadata_and_a_promoted_canary_gets_the_stables() {
    let mut spec = spec(vec![set_weight(50), pause(None)], true, 2);
    spec.min_ready_seconds = Some(10);
    spec.strategy.canary.canary_metadata = Some(metadata(&[("role", "canary")]));
    spec.strategy.canary.stable_metadata = Some(metadata(&[("role", "stable")]));
    let settings = |pairs: &[(&str, &str)]| RevisionSettings {
        pod_metadata: metadata(pairs),
        min_ready_seconds: 10,
    };
    let stable_settings = settings(&[("role", "stable")]);
    let canary_settings = settings(&[("role", "canary")]);

    let mut world = World::new(spec, all_pass());
    let first = world.reconcile();
    let old = world.desired();
    assert!(first.effects.contains(&Effect::SetRevisionSettings {
        revision: old.clone(),
        settings: stable_settings.clone(),
    }));
    world.run_until(20, |w| w.phase() == Some(RolloutPhase::Healthy));

    world.set_image("app:2");
    let new = world.desired();
    let start = world.reconcile();
    let created = start
        .effects
        .iter()
        .position(|e| matches!(e, Effect::ScaleRevision { revision, .. } if *revision == new))
        .expect("the canary's ReplicaSet is created");
    let labelled = start
        .effects
        .iter()
        .position(|e| {
            *e == Effect::SetRevisionSettings {
                revision: new.clone(),
                settings: canary_settings.clone(),
            }
        })
        .expect("the canary carries canaryMetadata");
    assert!(
        labelled < created,
        "the settings come first, so the ReplicaSet is created carrying them: {:?}",
        start.effects
    );
    world.advance(5);
    let converged = world.reconcile();
    assert!(
        !converged
            .effects
            .iter()
            .any(|e| matches!(e, Effect::SetRevisionSettings { .. })),
        "settings already in place are not set again: {:?}",
        converged.effects
    );

    world.run_until(40, |w| w.phase() == Some(RolloutPhase::Paused));
    world.promote();
    world.run_until(40, |w| w.healthy_on(&new));
    assert_eq!(world.revision_settings.get(&new), Some(&stable_settings));
    let promoted = world
        .decisions
        .iter()
        .find(|d| {
            d.effects.contains(&Effect::SetRevisionSettings {
                revision: new.clone(),
                settings: stable_settings.clone(),
            })
        })
        .expect("the promoted canary gets stableMetadata");
    assert_eq!(
        promoted.status.stable_revision.as_deref(),
        Some(new.as_str())
    );
}

#[test]
fn without_scaling_fields_no_settings_are_ever_set() {
    let (world, _) = shapes_at_pauses(spec(vec![set_weight(50), pause(None)], true, 2));
    assert!(
        world.decisions.iter().all(|d| !d
            .effects
            .iter()
            .any(|e| matches!(e, Effect::SetRevisionSettings { .. }))),
        "no SetRevisionSettings without canaryMetadata, stableMetadata or minReadySeconds"
    );
}

#[test]
fn every_scaling_field_is_validated_at_its_path() {
    let with = |edit: &dyn Fn(&mut RolloutSpec)| {
        let mut spec = spec(vec![set_weight(50)], true, 4);
        edit(&mut spec);
        spec
    };
    let no_router = |edit: &dyn Fn(&mut RolloutSpec)| {
        let mut spec = spec(vec![set_weight(50)], false, 4);
        edit(&mut spec);
        spec
    };
    let scale_step = |scale: SetCanaryScale| {
        move |s: &mut RolloutSpec| {
            s.strategy.canary.steps.push(CanaryStep {
                set_canary_scale: Some(scale.clone()),
                ..Default::default()
            });
        }
    };
    let scale = |replicas, weight, matching| SetCanaryScale {
        replicas,
        weight,
        match_traffic_weight: matching,
    };
    let labels = |pairs: &[(&str, &str)]| PodMetadata {
        labels: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        annotations: Default::default(),
    };
    // (spec, path, words of the message)
    let cases: Vec<(RolloutSpec, &str, &str)> = vec![
        (
            with(&scale_step(scale(Some(1), Some(10), false))),
            "spec.strategy.canary.steps[1].setCanaryScale",
            "exactly one of replicas, weight",
        ),
        (
            with(&scale_step(scale(None, None, false))),
            "spec.strategy.canary.steps[1].setCanaryScale",
            "exactly one of replicas, weight",
        ),
        (
            with(&scale_step(scale(Some(-1), None, false))),
            "spec.strategy.canary.steps[1].setCanaryScale.replicas",
            "negative",
        ),
        (
            with(&scale_step(scale(None, Some(101), false))),
            "spec.strategy.canary.steps[1].setCanaryScale.weight",
            "not in 0..=100",
        ),
        (
            no_router(&scale_step(scale(Some(1), None, false))),
            "spec.strategy.canary.steps[1].setCanaryScale",
            "needs trafficRouting",
        ),
        (
            no_router(&|s| s.strategy.canary.dynamic_stable_scale = true),
            "spec.strategy.canary.dynamicStableScale",
            "needs trafficRouting",
        ),
        (
            with(&|s| {
                s.strategy.canary.dynamic_stable_scale = true;
                s.strategy.canary.abort_scale_down_delay_seconds = Some(30);
            }),
            "spec.strategy.canary.abortScaleDownDelaySeconds",
            "set with dynamicStableScale",
        ),
        (
            with(&|s| s.strategy.canary.max_surge = Some(IntOrString::Int(1))),
            "spec.strategy.canary.maxSurge",
            "without trafficRouting only",
        ),
        (
            no_router(&|s| s.strategy.canary.max_surge = Some(IntOrString::Int(-1))),
            "spec.strategy.canary.maxSurge",
            "negative",
        ),
        (
            no_router(&|s| {
                s.strategy.canary.max_unavailable = Some(IntOrString::String("150%".into()))
            }),
            "spec.strategy.canary.maxUnavailable",
            "over 100%",
        ),
        (
            no_router(&|s| s.strategy.canary.max_surge = Some(IntOrString::String("lots".into()))),
            "spec.strategy.canary.maxSurge",
            "neither a count nor a percent",
        ),
        (
            no_router(&|s| {
                s.strategy.canary.max_surge = Some(IntOrString::Int(0));
                s.strategy.canary.max_unavailable = Some(IntOrString::String("0%".into()));
            }),
            "spec.strategy.canary.maxUnavailable",
            "0 together with maxSurge 0",
        ),
        (
            with(&|s| s.min_ready_seconds = Some(3601)),
            "spec.minReadySeconds",
            "not in 0..=3600",
        ),
        (
            with(&|s| s.min_ready_seconds = Some(-1)),
            "spec.minReadySeconds",
            "not in 0..=3600",
        ),
        (
            with(&|s| s.strategy.canary.canary_metadata = Some(labels(&[("app", "x")]))),
            "spec.strategy.canary.canaryMetadata.labels.app",
            "a label of spec.selector or of the pod template",
        ),
        (
            with(&|s| {
                s.strategy.canary.stable_metadata = Some(labels(&[("vigil.dev/revision", "x")]))
            }),
            "spec.strategy.canary.stableMetadata.labels.vigil.dev/revision",
            "vigil's own",
        ),
        (
            with(&|s| s.strategy.canary.stable_metadata = Some(labels(&[("role", "a b")]))),
            "spec.strategy.canary.stableMetadata.labels.role",
            "not a label value",
        ),
        (
            with(&|s| s.strategy.canary.stable_metadata = Some(labels(&[("Bad_/x", "a")]))),
            "spec.strategy.canary.stableMetadata.labels.Bad_/x",
            "prefix is not a DNS subdomain",
        ),
        (
            with(&|s| {
                let many: Vec<(String, String)> =
                    (0..33).map(|i| (format!("k{i}"), "v".to_owned())).collect();
                s.strategy.canary.canary_metadata = Some(PodMetadata {
                    labels: Default::default(),
                    annotations: many.into_iter().collect(),
                });
            }),
            "spec.strategy.canary.canaryMetadata.annotations",
            "over the limit of 32",
        ),
        (
            with(&|s| {
                s.strategy.canary.canary_metadata = Some(PodMetadata {
                    labels: Default::default(),
                    annotations: [("note".to_owned(), "x".repeat(4097))].into(),
                });
            }),
            "spec.strategy.canary.canaryMetadata.annotations.note",
            "longer than 4096",
        ),
    ];
    for (spec, path, words) in cases {
        let problems = validate_spec(&spec);
        assert!(
            problems
                .iter()
                .any(|p| p.path == path && p.message.contains(words)),
            "expected {path}: {words}; got {problems:?}"
        );
    }
    // And the valid ones pass.
    let mut valid = spec(
        vec![
            canary_scale(Some(2), None, false),
            set_weight(50),
            canary_scale(None, None, true),
        ],
        true,
        4,
    );
    valid.min_ready_seconds = Some(30);
    valid.strategy.canary.dynamic_stable_scale = true;
    valid.strategy.canary.canary_metadata = Some(labels(&[("role", "canary")]));
    valid.strategy.canary.stable_metadata = Some(labels(&[("example.com/role", "stable")]));
    assert_eq!(validate_spec(&valid), vec![]);
}

#[test]
fn the_rollout_crd_has_the_scale_subresource_an_hpa_needs() {
    let crds = vigil::api::all_crds();
    let rollout = crds
        .iter()
        .find(|c| c.spec.names.kind == "Rollout")
        .expect("the Rollout CRD");
    for version in &rollout.spec.versions {
        let scale = version
            .subresources
            .as_ref()
            .and_then(|s| s.scale.as_ref())
            .unwrap_or_else(|| panic!("{}: no scale subresource", version.name));
        assert_eq!(scale.spec_replicas_path, ".spec.replicas");
        assert_eq!(scale.status_replicas_path, ".status.replicas");
        assert_eq!(
            scale.label_selector_path.as_deref(),
            Some(".status.selector")
        );
    }
}

/// A Gateway API release with `dynamicStableScale` and a baseline (Service `shop-baseline`).
fn dynamic_with_baseline(steps: Vec<CanaryStep>, replicas: i32) -> RolloutSpec {
    let mut spec = dynamic(steps, replicas);
    spec.strategy.canary.baseline = Some(vigil::api::Baseline {
        enabled: true,
        service: Some("shop-baseline".into()),
    });
    spec
}

/// The stable's ready pods carry the traffic the router leaves it, and the baseline gets
/// traffic only through its own Service pointed at its pods.
fn assert_stable_carries_its_share(world: &World, stable: &str, replicas: i32, when: &str) {
    let on_canary = world.router.unwrap_or(0);
    let on_baseline = world.baseline_router.unwrap_or(0);
    let ready = world.revisions.get(stable).map_or(0, |r| r.ready);
    assert!(
        ready * 100 >= (100 - on_canary - on_baseline) * replicas,
        "{when}: {ready}/{replicas} stable pods ready for {}% of the traffic (canary {on_canary}%, \
         baseline {on_baseline}%)",
        100 - on_canary - on_baseline
    );
    if on_baseline > 0 {
        let baseline = vigil::rollout::baseline::baseline_revision(stable);
        assert_eq!(
            world.services.baseline.as_deref(),
            Some(baseline.as_str()),
            "{when}"
        );
    }
    assert!(on_canary + on_baseline <= 100, "{when}");
}

#[test]
fn dynamic_stable_scale_makes_room_for_the_baseline_and_takes_it_back_first() {
    // (steps, replicas, at the analysis step: (canary pods, baseline pods, stable pods,
    // canary weight, baseline weight), at the next pause: (canary, baseline, stable pods))
    type Row = (
        Vec<CanaryStep>,
        i32,
        (i32, i32, i32, i32, i32),
        (i32, i32, i32),
    );
    let rows: Vec<Row> = vec![
        (
            vec![set_weight(25), analysis("a"), pause(None)],
            4,
            (1, 1, 2, 25, 25),
            (1, 0, 3),
        ),
        (
            vec![set_weight(10), analysis("a"), pause(None)],
            10,
            (1, 1, 8, 10, 10),
            (1, 0, 9),
        ),
        // Past 50 % the baseline gets what the canary leaves and the stable none.
        (
            vec![set_weight(60), analysis("a"), pause(None)],
            5,
            (3, 2, 0, 60, 40),
            (3, 0, 2),
        ),
    ];
    for (steps, replicas, during, after) in rows {
        let case = format!("{steps:?} with {replicas} replicas");
        let mut world = World::deployed(dynamic_with_baseline(steps, replicas), all_pass());
        let stable = world.desired();
        let baseline = vigil::rollout::baseline::baseline_revision(&stable);
        world.set_image("app:2");
        let canary = world.desired();
        let mut seen_during = None;
        for round in 0..120 {
            if world.phase() == Some(RolloutPhase::Paused) {
                break;
            }
            world.reconcile();
            assert_stable_carries_its_share(&world, &stable, replicas, &format!("{case}, {round}"));
            let analysing = world
                .runs
                .values()
                .any(|r| r.kind == AnalysisKind::Step { index: 1 });
            if world.at_step(1) && analysing {
                seen_during.get_or_insert((
                    world.replicas_of(&canary),
                    world.replicas_of(&baseline),
                    world.replicas_of(&stable),
                    world.router.unwrap_or(-1),
                    world.baseline_router.unwrap_or(-1),
                ));
            }
            world.advance(5);
        }
        assert_eq!(seen_during, Some(during), "{case}: once the analysis runs");
        world.run_until(20, |w| w.replicas_of(&baseline) == 0);
        assert_eq!(
            (
                world.replicas_of(&canary),
                world.replicas_of(&baseline),
                world.replicas_of(&stable),
                world.baseline_router
            ),
            (after.0, after.1, after.2, Some(0)),
            "{case}: at the pause after the analysis"
        );
    }
}

#[test]
fn the_baseline_goes_back_to_the_stable_only_as_fast_as_its_pods_become_ready() {
    let steps = vec![set_weight(25), analysis("a"), set_weight(50), pause(None)];
    let mut world = World::deployed(dynamic_with_baseline(steps, 4), all_pass());
    let stable = world.desired();
    let baseline = vigil::rollout::baseline::baseline_revision(&stable);
    world.set_image("app:2");
    let canary = world.desired();
    // The stable shrinks once the router reports both shares gone from it.
    world.run_until(60, |w| {
        w.baseline_router == Some(25) && w.router == Some(25) && w.replicas_of(&stable) == 2
    });

    // Abort with the stable's new pods slow: (stable pods ready, canary weight, baseline
    // weight, canary pods, baseline pods) after each reconcile. The failed canary's share
    // leaves first, the baseline's once the stable can carry it too.
    world.pods_get_ready = false;
    world.abort();
    let first = world.reconcile();
    assert!(
        first.effects.contains(&Effect::ScaleRevision {
            revision: stable.clone(),
            replicas: 4
        }),
        "{:?}",
        first.effects
    );
    for (ready, canary_weight, baseline_weight, canary_pods, baseline_pods) in
        [(2, 25, 25, 1, 1), (3, 0, 25, 0, 1), (4, 0, 0, 0, 0)]
    {
        world.revisions.get_mut(&stable).expect("stable").ready = ready;
        for _ in 0..3 {
            world.reconcile();
            assert_stable_carries_its_share(&world, &stable, 4, &format!("{ready} ready"));
            world.advance(1);
        }
        assert_eq!(
            (
                world.router,
                world.baseline_router,
                world.replicas_of(&canary),
                world.replicas_of(&baseline)
            ),
            (
                Some(canary_weight),
                Some(baseline_weight),
                canary_pods,
                baseline_pods
            ),
            "{ready}/4 stable pods ready"
        );
    }
    assert_eq!(world.phase(), Some(RolloutPhase::Aborted));
}

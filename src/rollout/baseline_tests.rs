//! The fair baseline's rules, as tables: when it runs (analysis steps and the background
//! analysis only), how big it is (like the canary), what share of traffic it gets, when the
//! analysis may start, and that promotion, abort and non-analysis steps remove it.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};

use super::*;
use crate::api::{
    AnalysisPhase, AnalysisRunSummary, AnalysisStep, BackgroundAnalysis, Baseline, CanaryStep,
    CanaryStrategy, LocalRouting, PauseStep, RolloutSpec, RolloutStatus, RolloutStrategy,
    TemplateRef, TrafficRouting,
};
use crate::rollout::{
    Decision, Effect, Observation, RevisionObservation, step, step_run_name, template_hash,
    validate_spec,
};

const REPLICAS: i32 = 4;

fn now() -> Timestamp {
    "2025-01-01T00:00:00Z".parse().expect("timestamp")
}

fn pod_template(image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some([("app".to_owned(), "web".to_owned())].into()),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "web".into(),
                image: Some(image.into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

fn stable() -> String {
    template_hash(&pod_template("web:1"))
}

fn canary() -> String {
    template_hash(&pod_template("web:2"))
}

fn weight(w: i32) -> CanaryStep {
    CanaryStep {
        set_weight: Some(w),
        ..Default::default()
    }
}

fn analysis() -> CanaryStep {
    CanaryStep {
        analysis: Some(AnalysisStep {
            templates: vec![TemplateRef {
                template_name: "errors".into(),
                cluster_scope: false,
            }],
            args: vec![],
        }),
        ..Default::default()
    }
}

fn pause() -> CanaryStep {
    CanaryStep {
        pause: Some(PauseStep { duration: None }),
        ..Default::default()
    }
}

/// Steps: 0 setWeight 25, 1 analysis, 2 setWeight 50, 3 pause.
fn spec(enabled: bool, routing: Option<TrafficRouting>) -> RolloutSpec {
    RolloutSpec {
        replicas: Some(REPLICAS),
        selector: LabelSelector {
            match_labels: Some([("app".to_owned(), "web".to_owned())].into()),
            ..Default::default()
        },
        template: Some(Box::new(pod_template("web:2"))),
        strategy: RolloutStrategy {
            canary: CanaryStrategy {
                steps: vec![weight(25), analysis(), weight(50), pause()],
                traffic_routing: routing,
                baseline: Some(Baseline {
                    enabled,
                    ..Baseline::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

fn local() -> Option<TrafficRouting> {
    Some(TrafficRouting {
        local: Some(LocalRouting {
            listen: "127.0.0.1:8080".into(),
        }),
        ..Default::default()
    })
}

fn status_at(index: i32) -> RolloutStatus {
    RolloutStatus {
        stable_revision: Some(stable()),
        canary_revision: Some(canary()),
        current_step_index: Some(index),
        current_step_started_at: Some(Time(now())),
        canary_attempt: 1,
        ..Default::default()
    }
}

fn step_run(index: i32) -> String {
    step_run_name("web", &canary(), 1, index)
}

/// The cluster: stable, canary and baseline as (replicas, ready), the step run's phase if it
/// exists, and the router's (canary, baseline) weights when there is one.
struct Seen {
    stable: (i32, i32),
    canary: (i32, i32),
    baseline: Option<(i32, i32)>,
    run: Option<(i32, AnalysisPhase)>,
    router: Option<(i32, i32)>,
}

/// Stable, canary and baseline as (replicas, ready); no run, no router.
fn cluster(stable: (i32, i32), canary: (i32, i32), baseline: Option<(i32, i32)>) -> Seen {
    Seen {
        stable,
        canary,
        baseline,
        run: None,
        router: None,
    }
}

impl Seen {
    /// The run of step `index`, in `phase`.
    fn with_run(self, index: i32, phase: AnalysisPhase) -> Seen {
        Seen {
            run: Some((index, phase)),
            ..self
        }
    }

    /// A router reporting these canary and baseline weights.
    fn with_router(self, canary: i32, baseline: i32) -> Seen {
        Seen {
            router: Some((canary, baseline)),
            ..self
        }
    }
}

fn observe(seen: &Seen) -> Observation {
    let mut revisions = vec![
        RevisionObservation {
            revision: stable(),
            replicas: seen.stable.0,
            ready_replicas: seen.stable.1,
            created_at: None,
        },
        RevisionObservation {
            revision: canary(),
            replicas: seen.canary.0,
            ready_replicas: seen.canary.1,
            created_at: None,
        },
    ];
    if let Some((replicas, ready)) = seen.baseline {
        revisions.push(RevisionObservation {
            revision: baseline_revision(&stable()),
            replicas,
            ready_replicas: ready,
            created_at: None,
        });
    }
    Observation {
        rollout_name: "web".into(),
        generation: Some(1),
        desired_revision: canary(),
        revisions,
        router_canary_weight: seen.router.map(|r| r.0),
        router_baseline_weight: seen.router.map(|r| r.1),
        router_managed_routes: Some(Default::default()),
        analysis_runs: seen
            .run
            .iter()
            .map(|(index, phase)| AnalysisRunSummary {
                name: step_run(*index),
                phase: *phase,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn scale_of(decision: &Decision, revision: &str) -> Option<i32> {
    decision.effects.iter().find_map(|effect| match effect {
        Effect::ScaleRevision {
            revision: r,
            replicas,
        } if r == revision => Some(*replicas),
        _ => None,
    })
}

fn creates_run(decision: &Decision) -> bool {
    decision
        .effects
        .iter()
        .any(|e| matches!(e, Effect::CreateAnalysisRun { .. }))
}

fn baseline_weight_set(decision: &Decision) -> Option<i32> {
    decision.effects.iter().find_map(|effect| match effect {
        Effect::SetBaselineWeight { baseline_weight } => Some(*baseline_weight),
        _ => None,
    })
}

#[test]
fn the_baseline_runs_for_analysis_steps_only_sized_like_the_canary() {
    // (case, enabled, step index, seen, baseline scaled to, a run is created)
    type Row = (&'static str, bool, i32, Seen, Option<i32>, bool);
    let converged = (REPLICAS, REPLICAS);
    let table: Vec<Row> = vec![
        (
            "at the analysis step the baseline is created with the canary's 1 pod, and the run waits for it",
            true,
            1,
            cluster(converged, (1, 1), None),
            Some(1),
            false,
        ),
        (
            "a baseline not ready yet holds the run back",
            true,
            1,
            cluster(converged, (1, 1), Some((1, 0))),
            None,
            false,
        ),
        (
            "a ready baseline lets the run start",
            true,
            1,
            cluster(converged, (1, 1), Some((1, 1))),
            None,
            true,
        ),
        (
            "a setWeight step does not analyse: no baseline",
            true,
            0,
            cluster(converged, (0, 0), None),
            None,
            false,
        ),
        (
            "a baseline left over at a setWeight step is scaled down",
            true,
            2,
            cluster((2, 2), (2, 2), Some((1, 1))),
            Some(0),
            false,
        ),
        (
            "a successful analysis moves on and the baseline goes with it",
            true,
            1,
            cluster((2, 2), (1, 1), Some((1, 1))).with_run(1, AnalysisPhase::Successful),
            Some(0),
            false,
        ),
        (
            "a failed analysis aborts and removes the baseline",
            true,
            1,
            cluster((2, 2), (1, 1), Some((1, 1))).with_run(1, AnalysisPhase::Failed),
            Some(0),
            false,
        ),
        (
            "an inconclusive analysis pauses and keeps the baseline for the person who decides",
            true,
            1,
            cluster((2, 2), (1, 1), Some((1, 1))).with_run(1, AnalysisPhase::Inconclusive),
            None,
            false,
        ),
        (
            "without canary.baseline.enabled there is never a baseline",
            false,
            1,
            cluster(converged, (1, 1), None),
            None,
            true,
        ),
    ];
    for (case, enabled, index, seen, wanted_scale, run_created) in table {
        let decision = step(
            &spec(enabled, None),
            &status_at(index),
            &observe(&seen),
            now(),
        );
        let baseline = baseline_revision(&stable());
        assert_eq!(
            scale_of(&decision, &baseline),
            wanted_scale,
            "{case}: {decision:#?}"
        );
        assert_eq!(creates_run(&decision), run_created, "{case}: {decision:#?}");
    }
}

#[test]
fn without_a_router_the_baseline_pods_take_their_share_from_the_stable() {
    // 4 replicas at 25 %: canary 1, baseline 1, the stable 2 once both are ready.
    let seen =
        cluster((REPLICAS, REPLICAS), (1, 1), Some((1, 1))).with_run(1, AnalysisPhase::Running);
    let decision = step(&spec(true, None), &status_at(1), &observe(&seen), now());
    assert_eq!(scale_of(&decision, &stable()), Some(2), "{decision:#?}");
    // Not ready yet: the stable keeps the baseline's share.
    let seen = Seen {
        baseline: Some((1, 0)),
        ..seen
    };
    let decision = step(&spec(true, None), &status_at(1), &observe(&seen), now());
    assert_eq!(scale_of(&decision, &stable()), Some(3), "{decision:#?}");
}

#[test]
fn with_the_local_proxy_the_baseline_gets_the_canary_weight_once_ready() {
    // (case, step index, seen, baseline weight set, baseline scaled to, run created)
    type Row = (&'static str, i32, Seen, Option<i32>, Option<i32>, bool);
    let table: Vec<Row> = vec![
        (
            "baseline pods not ready: no weight yet, the run waits",
            1,
            cluster((4, 4), (1, 1), Some((1, 0))).with_router(25, 0),
            None,
            None,
            false,
        ),
        (
            "ready: the baseline weight follows the canary's",
            1,
            cluster((4, 4), (1, 1), Some((1, 1))).with_router(25, 0),
            Some(25),
            None,
            false,
        ),
        (
            "the router reports it: the run starts",
            1,
            cluster((4, 4), (1, 1), Some((1, 1))).with_router(25, 25),
            None,
            None,
            true,
        ),
        (
            "a step that does not analyse takes the weight away before the pods",
            2,
            cluster((4, 4), (2, 2), Some((1, 1))).with_router(50, 25),
            Some(0),
            None,
            false,
        ),
        (
            "with its weight gone the baseline is scaled down",
            2,
            cluster((4, 4), (2, 2), Some((1, 1))).with_router(50, 0),
            None,
            Some(0),
            false,
        ),
    ];
    for (case, index, seen, weight_set, wanted_scale, run_created) in table {
        let decision = step(
            &spec(true, local()),
            &status_at(index),
            &observe(&seen),
            now(),
        );
        let baseline = baseline_revision(&stable());
        assert_eq!(
            baseline_weight_set(&decision),
            weight_set,
            "{case}: {decision:#?}"
        );
        assert_eq!(
            scale_of(&decision, &baseline),
            wanted_scale,
            "{case}: {decision:#?}"
        );
        assert_eq!(creates_run(&decision), run_created, "{case}: {decision:#?}");
    }
}

#[test]
fn background_analysis_keeps_the_baseline_beside_the_canary_until_promotion() {
    let mut with_background = spec(true, None);
    with_background.strategy.canary.steps = vec![weight(25), pause(), weight(50), pause()];
    with_background.strategy.canary.analysis = Some(BackgroundAnalysis {
        templates: vec![TemplateRef {
            template_name: "errors".into(),
            cluster_scope: false,
        }],
        args: vec![],
        starting_step: Some(1),
    });
    let baseline = baseline_revision(&stable());
    // Before startingStep (the canary's pod not ready yet, so step 0 stays): nothing.
    let seen = cluster((4, 4), (1, 0), None);
    let decision = step(&with_background, &status_at(0), &observe(&seen), now());
    assert_eq!(scale_of(&decision, &baseline), None, "{decision:#?}");
    // From startingStep, at every step, sized like the canary: 50 % of 4 is 2.
    let seen = cluster((4, 4), (2, 2), Some((1, 1)));
    let decision = step(&with_background, &status_at(3), &observe(&seen), now());
    assert_eq!(scale_of(&decision, &baseline), Some(2), "{decision:#?}");
    // Promotion (after the last step, canary at full scale and ready): the stable changes,
    // the old stable's baseline goes.
    let seen = cluster((0, 0), (4, 4), Some((2, 2)));
    let decision = step(&with_background, &status_at(4), &observe(&seen), now());
    assert_eq!(
        decision.status.stable_revision,
        Some(canary()),
        "{decision:#?}"
    );
    assert_eq!(scale_of(&decision, &baseline), Some(0), "{decision:#?}");
}

#[test]
fn a_user_abort_removes_the_baseline() {
    let mut status = status_at(1);
    status.abort = true;
    let seen = cluster((2, 2), (1, 1), Some((1, 1))).with_run(1, AnalysisPhase::Running);
    let decision = step(&spec(true, None), &status, &observe(&seen), now());
    assert_eq!(
        scale_of(&decision, &baseline_revision(&stable())),
        Some(0),
        "{decision:#?}"
    );
}

#[test]
fn baseline_weights_never_leave_the_stable_a_negative_share() {
    // (canary weight, baseline weight)
    for (canary, baseline) in [
        (0, 0),
        (10, 10),
        (50, 50),
        (60, 40),
        (100, 0),
        (-5, 0),
        (120, 0),
    ] {
        assert_eq!(weight_for(canary), baseline, "canary {canary}");
    }
}

#[test]
fn baseline_revisions_are_named_after_the_stable_and_read_back() {
    let name = baseline_revision("0123456789abcdef");
    assert_eq!(name, "0123456789abcdef-baseline");
    assert!(name.len() <= crate::rollout::MAX_LABEL_VALUE_LEN);
    assert_eq!(baseline_of(&name), Some("0123456789abcdef"));
    assert_eq!(baseline_of("0123456789abcdef"), None);
    assert_eq!(baseline_of("-baseline"), None);
}

/// A spec of `routing` (JSON of `trafficRouting`, `null` for none) with the stable and canary
/// Services and `baseline`.
fn routed(routing: serde_json::Value, baseline: Option<Baseline>) -> RolloutSpec {
    let routing: Option<TrafficRouting> = serde_json::from_value(routing).expect("routing");
    let mut spec = spec(true, routing);
    spec.strategy.canary.stable_service = Some("web-stable".into());
    spec.strategy.canary.canary_service = Some("web-canary".into());
    spec.strategy.canary.baseline = baseline;
    spec
}

#[test]
fn routers_that_cannot_split_three_ways_are_refused_naming_the_field() {
    use serde_json::json;
    let on = |service: Option<&str>| {
        Some(Baseline {
            enabled: true,
            service: service.map(str::to_owned),
        })
    };
    let off = |service: Option<&str>| {
        Some(Baseline {
            enabled: false,
            service: service.map(str::to_owned),
        })
    };
    let gateway = json!({"gatewayAPI": {"httpRoute": "web"}});
    // (routing, baseline, the problem wanted: (path suffix, words of the message))
    /// (routing, baseline, the problem wanted: (path suffix, words of the message))
    type Row<'a> = (
        serde_json::Value,
        Option<Baseline>,
        Option<(&'a str, Vec<&'a str>)>,
    );
    let rows: Vec<Row> = vec![
        (gateway.clone(), on(Some("web-baseline")), None),
        (
            gateway.clone(),
            on(None),
            Some(("service", vec!["trafficRouting.gatewayAPI", "backendRef"])),
        ),
        (gateway.clone(), off(None), None),
        (gateway.clone(), off(Some("web-baseline")), None),
        (
            gateway.clone(),
            on(Some("web-canary")),
            Some(("service", vec!["\"web-canary\"", "of its own"])),
        ),
        (
            gateway.clone(),
            on(Some("Web_Baseline")),
            Some(("service", vec!["not a Service name"])),
        ),
        (gateway, on(Some("")), Some(("service", vec!["empty"]))),
        (json!(null), on(None), None),
        (
            json!({"local": {"listen": "127.0.0.1:8080"}}),
            on(None),
            None,
        ),
        (
            json!(null),
            on(Some("web-baseline")),
            Some((
                "service",
                vec!["only trafficRouting.gatewayAPI", "replica ratio"],
            )),
        ),
        (
            json!({"local": {"listen": "127.0.0.1:8080"}}),
            on(Some("web-baseline")),
            Some(("service", vec!["only trafficRouting.gatewayAPI"])),
        ),
        (
            json!({"nginx": {"stableIngress": "web"}}),
            on(None),
            Some((
                "enabled",
                vec!["trafficRouting.nginx", "use trafficRouting.gatewayAPI"],
            )),
        ),
        (
            json!({"smi": {}}),
            on(None),
            Some(("enabled", vec!["trafficRouting.smi", "the local proxy"])),
        ),
        (
            json!({"traefik": {"weightedTraefikServiceName": "web"}}),
            on(None),
            Some(("enabled", vec!["trafficRouting.traefik"])),
        ),
    ];
    for (routing, baseline, wanted) in rows {
        let row = format!("{routing} {baseline:?}");
        let problems: Vec<_> = validate_spec(&routed(routing, baseline))
            .into_iter()
            .filter(|p| p.path.starts_with("spec.strategy.canary.baseline"))
            .collect();
        match wanted {
            None => assert!(problems.is_empty(), "{row}: {problems:?}"),
            Some((field, words)) => {
                assert_eq!(problems.len(), 1, "{row}: {problems:?}");
                assert_eq!(
                    problems[0].path,
                    format!("spec.strategy.canary.baseline.{field}"),
                    "{row}"
                );
                for word in words {
                    assert!(problems[0].message.contains(word), "{row}: {problems:?}");
                }
            }
        }
    }
}

#[test]
fn a_template_selecting_the_baseline_without_one_running_is_a_problem_at_its_reference() {
    let template = |args: serde_json::Value| -> crate::api::AnalysisTemplateSpec {
        serde_json::from_value(serde_json::json!({"args": args, "metrics": []})).expect("template")
    };
    let templates = vec![
        (
            "plain".to_owned(),
            template(serde_json::json!([{"name": "rollout"}])),
        ),
        (
            "fair".to_owned(),
            template(serde_json::json!([{"name": "rollout"}, {"name": "baseline-revision"}])),
        ),
    ];
    let problems_for = |spec: &RolloutSpec| {
        let declared = crate::rollout::declared_analyses(spec)
            .next()
            .expect("the analysis step");
        unused_baseline_problems(spec, &declared, &templates)
    };
    let problems = problems_for(&spec(false, None));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(
        problems[0].path,
        "spec.strategy.canary.steps[1].analysis.templates[1].templateName"
    );
    assert!(problems[0].message.contains("\"fair\""), "{problems:?}");
    assert!(
        problems[0].message.contains("baseline.enabled"),
        "{problems:?}"
    );
    assert!(problems_for(&spec(true, None)).is_empty());
    // A Rollout that passes the argument itself chose its value.
    let mut passing = spec(false, None);
    if let Some(analysis) = passing.strategy.canary.steps[1].analysis.as_mut() {
        analysis.args.push(crate::api::Argument {
            name: "baseline-revision".into(),
            value: Some("abc".into()),
            value_from: None,
        });
    }
    assert!(problems_for(&passing).is_empty());
}

#[test]
fn the_baseline_takes_the_canarys_pods_or_past_half_the_pods_of_its_smaller_share() {
    let pods_for = |weight: i32| (10 * weight + 99) / 100;
    // (step weight, canary's pods wanted, analysing, enabled, baseline pods and weight wanted)
    let table = [
        (25, 3, true, true, Some((3, 25))),
        // setCanaryScale-like: the canary's own count, whatever the weight.
        (25, 5, true, true, Some((5, 25))),
        (50, 5, true, true, Some((5, 50))),
        (60, 6, true, true, Some((4, 40))),
        (100, 10, true, true, Some((0, 0))),
        (25, 3, false, true, None),
        (25, 3, true, false, None),
    ];
    for (step_weight, canary_replicas, analysing, enabled, expected) in table {
        let mut with = spec(enabled, None);
        with.replicas = Some(10);
        let ready = cluster(
            (10, 10),
            (canary_replicas, canary_replicas),
            expected.map(|(pods, _)| (pods, pods)),
        );
        let stable = stable();
        let moment = Moment {
            stable: Some(&stable),
            analysing,
            step_weight,
            canary_replicas,
            canary_weight: step_weight,
            pods_for: &pods_for,
            router: false,
        };
        let wanted = wanted(&with, &observe(&ready), &moment);
        assert_eq!(
            wanted.as_ref().map(|w| (w.replicas, w.weight)),
            expected,
            "weight {step_weight}, canary {canary_replicas}, analysing {analysing}, enabled {enabled}"
        );
        if let Some(wanted) = wanted {
            assert!(wanted.converged, "ready pods, no router: converged");
            assert_eq!(wanted.revision, baseline_revision(&stable));
        }
    }
}

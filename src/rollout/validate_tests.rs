use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::*;
use crate::api::{
    AnalysisStep, CanaryStrategy, GatewayApiRouting, LocalRouting, PauseStep, RolloutStrategy,
    TrafficRouting,
};

fn at(problems: &[SpecProblem], path: &str) -> Vec<String> {
    problems
        .iter()
        .filter(|p| p.path == path)
        .map(|p| p.message.clone())
        .collect()
}

// --- validate_rollout -----------------------------------------------------------------------

fn rollout(steps: Vec<CanaryStep>) -> RolloutSpec {
    let labels: BTreeMap<String, String> = [("app".to_owned(), "web".to_owned())].into();
    RolloutSpec {
        replicas: Some(3),
        selector: LabelSelector {
            match_labels: Some(labels.clone()),
            ..Default::default()
        },
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "web".to_owned(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        },
        strategy: RolloutStrategy {
            canary: CanaryStrategy {
                steps,
                ..Default::default()
            },
        },
        ..Default::default()
    }
}

fn weight(w: i32) -> CanaryStep {
    CanaryStep {
        set_weight: Some(w),
        ..Default::default()
    }
}

#[test]
fn a_good_rollout_has_no_problems() {
    let spec = rollout(vec![
        weight(10),
        CanaryStep {
            pause: Some(PauseStep {
                duration: Some("1m".to_owned()),
            }),
            ..Default::default()
        },
        CanaryStep {
            analysis: Some(AnalysisStep {
                templates: vec![TemplateRef {
                    template_name: "errors".to_owned(),
                    cluster_scope: false,
                }],
                args: vec![],
            }),
            ..Default::default()
        },
        weight(50),
        weight(100),
    ]);
    assert_eq!(validate_spec(&spec), vec![]);
}

#[test]
fn weights_in_range_and_never_decreasing() {
    let spec = rollout(vec![weight(10), weight(50), weight(150), weight(20)]);
    let problems = validate_spec(&spec);
    assert_eq!(
        problems,
        vec![
            problem(
                "spec.strategy.canary.steps[2].setWeight",
                "150 is not in 0..=100"
            ),
            problem(
                "spec.strategy.canary.steps[3].setWeight",
                "20 is lower than 50 set at steps[1]; weights never decrease during a rollout (abort to go back)"
            ),
        ]
    );
}

#[test]
fn one_field_per_step_and_pause_durations() {
    let mut two = weight(10);
    two.pause = Some(PauseStep {
        duration: Some("5d".to_owned()),
    });
    let spec = rollout(vec![two, CanaryStep::default()]);
    let problems = validate_spec(&spec);
    assert!(at(&problems, "spec.strategy.canary.steps[0]")[0].contains("setWeight, pause"));
    assert_eq!(
        at(&problems, "spec.strategy.canary.steps[0].pause.duration").len(),
        1
    );
    assert!(at(&problems, "spec.strategy.canary.steps[1]")[0].starts_with("empty step"));
}

#[test]
fn analysis_steps_name_templates_and_background_starts_within_steps() {
    let mut spec = rollout(vec![
        CanaryStep {
            analysis: Some(AnalysisStep::default()),
            ..Default::default()
        },
        weight(20),
    ]);
    spec.strategy.canary.analysis = Some(crate::api::BackgroundAnalysis {
        templates: vec![TemplateRef {
            template_name: "t".to_owned(),
            cluster_scope: false,
        }],
        args: vec![],
        starting_step: Some(2),
    });
    let problems = validate_spec(&spec);
    assert_eq!(
        at(
            &problems,
            "spec.strategy.canary.steps[0].analysis.templates"
        )
        .len(),
        1
    );
    assert_eq!(
        at(&problems, "spec.strategy.canary.analysis.startingStep"),
        ["2 is not a step index: there are 2 steps (0..=1)"]
    );
}

#[test]
fn selector_must_match_template_labels() {
    let mut spec = rollout(vec![weight(10)]);
    spec.selector.match_labels = Some([("app".to_owned(), "api".to_owned())].into());
    let problems = validate_spec(&spec);
    assert_eq!(at(&problems, "spec.selector.matchLabels.app").len(), 1);
    spec.selector.match_labels = None;
    let problems = validate_spec(&spec);
    assert!(at(&problems, "spec.selector")[0].starts_with("empty selector"));
}

#[test]
fn negative_replicas() {
    let mut spec = rollout(vec![]);
    spec.replicas = Some(-1);
    assert_eq!(at(&validate_spec(&spec), "spec.replicas").len(), 1);
}

// Other routers add fields to TrafficRouting; the struct updates leave them unset.
#[allow(clippy::needless_update)]
#[test]
fn traffic_routing_needs_exactly_one_router_and_services() {
    let mut spec = rollout(vec![weight(10)]);
    spec.strategy.canary.traffic_routing = Some(TrafficRouting::default());
    let problems = validate_spec(&spec);
    assert_eq!(
        at(&problems, "spec.strategy.canary.trafficRouting"),
        vec![
            "no router: set one of gatewayAPI, nginx, smi, traefik, local, or remove trafficRouting to split traffic by replica ratio"
        ]
    );

    spec.strategy.canary.traffic_routing = Some(TrafficRouting {
        gateway_api: Some(GatewayApiRouting {
            http_route: "web".to_owned(),
        }),
        local: Some(LocalRouting {
            listen: "localhost".to_owned(),
        }),
        ..TrafficRouting::default()
    });
    let problems = validate_spec(&spec);
    assert_eq!(
        at(&problems, "spec.strategy.canary.trafficRouting"),
        vec!["several routers (gatewayAPI, local); set exactly one"]
    );
    assert_eq!(
        at(&problems, "spec.strategy.canary.stableService"),
        vec![
            "missing: the Gateway API (trafficRouting.gatewayAPI) router sends traffic to the stable and canary Services, so both are needed"
        ]
    );
    assert_eq!(at(&problems, "spec.strategy.canary.canaryService").len(), 1);
    assert_eq!(
        at(
            &problems,
            "spec.strategy.canary.trafficRouting.local.listen"
        )
        .len(),
        1
    );

    spec.strategy.canary.traffic_routing = Some(TrafficRouting {
        local: Some(LocalRouting {
            listen: "127.0.0.1:8080".to_owned(),
        }),
        ..Default::default()
    });
    assert_eq!(validate_spec(&spec), vec![]);
}

#[test]
fn the_nginx_smi_and_traefik_routers_name_their_objects_and_bound_annotations() {
    let mut spec = rollout(vec![weight(10)]);
    spec.strategy.canary.stable_service = Some("web-stable".to_owned());
    spec.strategy.canary.canary_service = Some("web-canary".to_owned());
    let routing = |value: serde_json::Value| {
        Some(serde_json::from_value::<TrafficRouting>(value).expect("routing"))
    };
    spec.strategy.canary.traffic_routing = routing(serde_json::json!({"nginx": {
        "stableIngress": " ",
        "annotationPrefix": "Not_A_Prefix",
        "additionalIngressAnnotations": {"canary-weight": "5", "canary-by-header": "X-Canary"}
    }}));
    let problems = validate_spec(&spec);
    let path = "spec.strategy.canary.trafficRouting.nginx";
    assert_eq!(
        at(&problems, &format!("{path}.stableIngress")),
        vec!["empty Ingress name"]
    );
    assert_eq!(at(&problems, &format!("{path}.annotationPrefix")).len(), 1);
    assert_eq!(
        at(
            &problems,
            &format!("{path}.additionalIngressAnnotations[\"canary-weight\"]")
        ),
        vec!["vigil sets this annotation itself (it is the weight split)"]
    );
    assert_eq!(problems.len(), 3, "{problems:?}");

    spec.strategy.canary.traffic_routing = routing(serde_json::json!({"smi": {
        "trafficSplitName": "x".repeat(254)
    }}));
    assert_eq!(
        at(
            &validate_spec(&spec),
            "spec.strategy.canary.trafficRouting.smi.trafficSplitName"
        ),
        vec!["TrafficSplit name longer than 253 characters"]
    );
    spec.strategy.canary.traffic_routing = routing(serde_json::json!({"smi": {}}));
    assert_eq!(validate_spec(&spec), vec![]);

    spec.strategy.canary.traffic_routing = routing(serde_json::json!({
        "traefik": {"weightedTraefikServiceName": "web"},
        "nginx": {"stableIngress": "web"}
    }));
    assert_eq!(
        at(&validate_spec(&spec), "spec.strategy.canary.trafficRouting"),
        vec!["several routers (nginx, traefik); set exactly one"]
    );
    spec.strategy.canary.stable_service = None;
    spec.strategy.canary.traffic_routing =
        routing(serde_json::json!({"traefik": {"weightedTraefikServiceName": "web"}}));
    assert_eq!(
        at(&validate_spec(&spec), "spec.strategy.canary.stableService"),
        vec![
            "missing: the Traefik (trafficRouting.traefik) router sends traffic to the stable and canary Services, so both are needed"
        ]
    );
}

#[test]
fn pause_of_a_hundred_million_hours_is_refused() {
    let pause = CanaryStep {
        pause: Some(PauseStep {
            duration: Some("100000000h".to_owned()),
        }),
        ..Default::default()
    };
    let problems = validate_spec(&rollout(vec![pause]));
    let found = at(&problems, "spec.strategy.canary.steps[0].pause.duration");
    assert!(found[0].contains("MAX_DURATION"), "{problems:#?}");
}

#[test]
fn delays_and_deadlines_of_sixty_eight_years_are_refused() {
    let mut spec = rollout(vec![weight(50)]);
    spec.progress_deadline_seconds = Some(i32::MAX);
    spec.strategy.canary.scale_down_delay_seconds = Some(i32::MAX);
    spec.strategy.canary.abort_scale_down_delay_seconds = Some(30 * 24 * 3600 + 1);
    let problems = validate_spec(&spec);
    for path in [
        "spec.progressDeadlineSeconds",
        "spec.strategy.canary.scaleDownDelaySeconds",
        "spec.strategy.canary.abortScaleDownDelaySeconds",
    ] {
        let found = at(&problems, path);
        assert_eq!(found.len(), 1, "{path}: {problems:#?}");
        assert!(found[0].contains("MAX_DURATION"), "{path}: {found:?}");
    }

    spec.progress_deadline_seconds = Some(30 * 24 * 3600);
    spec.strategy.canary.scale_down_delay_seconds = Some(30 * 24 * 3600);
    spec.strategy.canary.abort_scale_down_delay_seconds = Some(0);
    assert_eq!(validate_spec(&spec), vec![]);
}

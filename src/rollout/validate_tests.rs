use crate::rollout::{MAX_MANAGED_ROUTES, MAX_MATCH_REGEX_LEN, MAX_ROUTE_MATCHES};
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
        template: Some(Box::new(PodTemplateSpec {
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
        })),
        strategy: RolloutStrategy {
            canary: CanaryStrategy {
                steps,
                ..Default::default()
            },
            ..Default::default()
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
fn a_hundred_and_one_steps_are_refused_naming_the_limit_and_only_the_first_hundred_checked() {
    let at_limit = rollout(vec![weight(10); MAX_STEPS]);
    assert!(validate_spec(&at_limit).is_empty());
    // Every step past the limit is empty: were they checked, each would be a problem of its own.
    let mut steps = vec![weight(10); MAX_STEPS];
    steps.extend(vec![CanaryStep::default(); 5000]);
    let problems = validate_spec(&rollout(steps));
    assert_eq!(
        at(&problems, "spec.strategy.canary.steps"),
        vec!["5100 steps is over the limit of 100 (MAX_STEPS)".to_owned()]
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
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
fn run_history_limits_are_between_0_and_100_naming_the_field() {
    let mut spec = rollout(vec![]);
    spec.analysis = Some(crate::api::AnalysisRunStrategy {
        successful_run_history_limit: Some(-1),
        unsuccessful_run_history_limit: Some(101),
    });
    let problems = validate_spec(&spec);
    assert_eq!(
        at(&problems, "spec.analysis.successfulRunHistoryLimit"),
        ["-1 is negative"]
    );
    assert_eq!(
        at(&problems, "spec.analysis.unsuccessfulRunHistoryLimit"),
        ["101 is over the limit of 100 (MAX_RUN_HISTORY_LIMIT)"]
    );
    spec.analysis = Some(crate::api::AnalysisRunStrategy {
        successful_run_history_limit: Some(0),
        unsuccessful_run_history_limit: Some(100),
    });
    assert!(
        validate_spec(&spec).is_empty(),
        "{:?}",
        validate_spec(&spec)
    );
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
            "no router: set one of gatewayAPI, istio, nginx, smi, traefik, local, or remove trafficRouting to split traffic by replica ratio"
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
fn nginx_additional_annotations_outside_the_canary_selectors_are_refused_by_field() {
    let mut spec = rollout(vec![weight(10)]);
    spec.strategy.canary.stable_service = Some("web-stable".to_owned());
    spec.strategy.canary.canary_service = Some("web-canary".to_owned());
    spec.strategy.canary.traffic_routing = Some(
        serde_json::from_value(serde_json::json!({"nginx": {
            "stableIngress": "web",
            "annotationPrefix": "nginx.ingress.kubernetes.io/auth-url",
            "additionalIngressAnnotations": {
                "canary-by-header": "X-Canary",
                "configuration-snippet": "more_set_headers x;",
                "auth-tls-secret": "other-ns/secret"
            }
        }}))
        .expect("routing"),
    );
    let problems = validate_spec(&spec);
    let path = "spec.strategy.canary.trafficRouting.nginx";
    assert_eq!(at(&problems, &format!("{path}.annotationPrefix")).len(), 1);
    for key in ["configuration-snippet", "auth-tls-secret"] {
        let messages = at(
            &problems,
            &format!("{path}.additionalIngressAnnotations[\"{key}\"]"),
        );
        assert_eq!(messages.len(), 1, "{key}: {problems:?}");
        assert!(messages[0].starts_with("not allowed:"), "{messages:?}");
    }
    assert_eq!(problems.len(), 3, "{problems:?}");
}

#[test]
fn nginx_header_routes_refuse_regex_by_field() {
    let step = |value: serde_json::Value| {
        serde_json::from_value::<CanaryStep>(serde_json::json!({"setHeaderRoute": {
            "name": "testers",
            "match": [{"headerName": "x-canary", "headerValue": value}]
        }}))
        .expect("step")
    };
    let mut spec = rollout(vec![
        step(serde_json::json!({"prefix": "beta-"})),
        step(serde_json::json!({"regex": "(a+)+$"})),
    ]);
    spec.strategy.canary.stable_service = Some("web-stable".to_owned());
    spec.strategy.canary.canary_service = Some("web-canary".to_owned());
    spec.strategy.canary.traffic_routing = Some(
        serde_json::from_value(serde_json::json!({
            "nginx": {"stableIngress": "web"},
            "managedRoutes": [{"name": "testers"}]
        }))
        .expect("routing"),
    );
    let problems = validate_spec(&spec);
    assert_eq!(
        at(
            &problems,
            "spec.strategy.canary.steps[1].setHeaderRoute.match[0].headerValue.regex"
        ),
        vec![
            "ingress-nginx runs header patterns with a backtracking regex engine, so the NGINX router takes exact or prefix only"
        ]
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[test]
fn nginx_header_routes_have_one_condition_and_one_name() {
    let step = |name: &str, headers: &[&str]| {
        serde_json::from_value::<CanaryStep>(serde_json::json!({"setHeaderRoute": {
            "name": name,
            "match": headers.iter().map(|h| serde_json::json!(
                {"headerName": h, "headerValue": {"exact": "yes"}}
            )).collect::<Vec<_>>()
        }}))
        .expect("step")
    };
    let mut spec = rollout(vec![
        step("testers", &["x-canary"]),
        weight(10),
        step("testers", &["x-canary", "x-team"]),
        step("beta", &["x-beta"]),
        step("testers", &[]),
    ]);
    spec.strategy.canary.stable_service = Some("web-stable".to_owned());
    spec.strategy.canary.canary_service = Some("web-canary".to_owned());
    spec.strategy.canary.traffic_routing = Some(
        serde_json::from_value(serde_json::json!({
            "nginx": {"stableIngress": "web"},
            "managedRoutes": [{"name": "testers"}, {"name": "beta"}]
        }))
        .expect("routing"),
    );
    let problems = validate_spec(&spec);
    assert_eq!(
        at(
            &problems,
            "spec.strategy.canary.steps[2].setHeaderRoute.match"
        ),
        vec!["2 conditions; ingress-nginx routes by one header (canary-by-header), so give one"]
    );
    assert_eq!(
        at(
            &problems,
            "spec.strategy.canary.steps[3].setHeaderRoute.name"
        ),
        vec![
            "`beta`: the canary Ingress holds one header route; name it `testers` like the earlier setHeaderRoute step"
        ]
    );
    assert_eq!(problems.len(), 2, "{problems:?}");
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

// --- managed routes ---------------------------------------------------------------------------

fn yaml_spec(steps: &str, routing: &str) -> RolloutSpec {
    let mut spec = rollout(Vec::new());
    spec.strategy.canary.steps = serde_norway::from_str(steps).expect("steps");
    spec.strategy.canary.traffic_routing = serde_norway::from_str(routing).expect("routing");
    spec.strategy.canary.stable_service = Some("web-stable".into());
    spec.strategy.canary.canary_service = Some("web-canary".into());
    spec
}

const GATEWAY: &str =
    "{gatewayAPI: {httpRoute: web}, managedRoutes: [{name: testers}, {name: shadow}]}";

#[test]
fn header_and_mirror_steps_with_a_capable_router_are_valid() {
    let spec = yaml_spec(
        r#"
- setHeaderRoute: {name: testers, match: [{headerName: x-canary, headerValue: {exact: "yes"}},
                                         {headerName: x-team, headerValue: {regex: "qa-[0-9]+"}}]}
- setMirrorRoute: {name: shadow, percentage: 35, match: [{method: {exact: GET}, path: {prefix: /api},
                                                          headers: {x-debug: {prefix: "1"}}}]}
- setWeight: 10
- setHeaderRoute: {name: testers}
- setMirrorRoute: {name: shadow}
"#,
        GATEWAY,
    );
    assert_eq!(validate_spec(&spec), vec![]);
}

#[test]
fn a_header_route_with_the_replica_ratio_names_the_step_and_the_router() {
    let mut spec = yaml_spec(
        r#"[{setHeaderRoute: {name: testers, match: [{headerName: x-canary, headerValue: {exact: "yes"}}]}}]"#,
        "null",
    );
    spec.strategy.canary.traffic_routing = None;
    let problems = validate_spec(&spec);
    assert_eq!(
        at(&problems, "spec.strategy.canary.steps[0].setHeaderRoute"),
        vec![
            "the replica-ratio (no trafficRouting) router cannot route requests by header (setHeaderRoute); use trafficRouting.gatewayAPI or trafficRouting.istio or trafficRouting.nginx or trafficRouting.local"
        ]
    );
    assert_eq!(
        at(
            &problems,
            "spec.strategy.canary.steps[0].setHeaderRoute.name"
        ),
        vec![
            "`testers` is not listed in trafficRouting.managedRoutes; vigil changes only the routes listed there"
        ]
    );
}

#[test]
fn bad_managed_routes_are_refused_at_their_field() {
    let long_regex = "a".repeat(MAX_MATCH_REGEX_LEN + 1);
    let table: Vec<(String, &str, &str, String)> = vec![
        (
            r#"[{setHeaderRoute: {name: testers, match: [{headerName: x-canary, headerValue: {exact: a, prefix: b}}]}}]"#.into(),
            GATEWAY,
            "spec.strategy.canary.steps[0].setHeaderRoute.match[0].headerValue",
            "set exactly one of exact, prefix, regex (this sets exact, prefix)".into(),
        ),
        (
            r#"[{setHeaderRoute: {name: testers, match: [{headerName: x-canary, headerValue: {}}]}}]"#.into(),
            GATEWAY,
            "spec.strategy.canary.steps[0].setHeaderRoute.match[0].headerValue",
            "set exactly one of exact, prefix, regex (this sets none)".into(),
        ),
        (
            r#"[{setHeaderRoute: {name: testers, match: [{headerName: x-canary, headerValue: {regex: "(unclosed"}}]}}]"#.into(),
            GATEWAY,
            "spec.strategy.canary.steps[0].setHeaderRoute.match[0].headerValue.regex",
            "does not compile: unclosed group".into(),
        ),
        (
            format!(r#"[{{setHeaderRoute: {{name: testers, match: [{{headerName: x-canary, headerValue: {{regex: "{long_regex}"}}}}]}}}}]"#),
            GATEWAY,
            "spec.strategy.canary.steps[0].setHeaderRoute.match[0].headerValue.regex",
            format!("{} bytes is over the limit of 1024 (MAX_MATCH_REGEX_LEN)", MAX_MATCH_REGEX_LEN + 1),
        ),
        (
            r#"[{setHeaderRoute: {name: testers, match: [{headerName: "x canary", headerValue: {exact: a}}]}}]"#.into(),
            GATEWAY,
            "spec.strategy.canary.steps[0].setHeaderRoute.match[0].headerName",
            "`x canary` is not a header name (letters, digits and !#$%&'*+-.^_`|~ only)".into(),
        ),
        (
            r#"[{setMirrorRoute: {name: shadow, percentage: 150, match: [{method: {exact: GET}}]}}]"#.into(),
            GATEWAY,
            "spec.strategy.canary.steps[0].setMirrorRoute.percentage",
            "150 is not in 0..=100".into(),
        ),
        (
            r#"[{setMirrorRoute: {name: shadow, match: [{}]}}]"#.into(),
            GATEWAY,
            "spec.strategy.canary.steps[0].setMirrorRoute.match[0]",
            "empty match: set method, path or headers (an empty entry would mirror everything)".into(),
        ),
        (
            r#"[{setWeight: 10, setHeaderRoute: {name: testers}}]"#.into(),
            GATEWAY,
            "spec.strategy.canary.steps[0]",
            "a step does one thing, but this one sets setWeight, setHeaderRoute; split it into several steps".into(),
        ),
        (
            "[]".into(),
            "{gatewayAPI: {httpRoute: web}, managedRoutes: [{name: Testers}, {name: shadow}, {name: shadow}]}",
            "spec.strategy.canary.trafficRouting.managedRoutes[0].name",
            "`Testers` is not a DNS label (lowercase letters, digits and `-`, not at either end)".into(),
        ),
        (
            "[]".into(),
            "{gatewayAPI: {httpRoute: web}, managedRoutes: [{name: shadow}, {name: shadow}]}",
            "spec.strategy.canary.trafficRouting.managedRoutes[1].name",
            "`shadow` is listed twice".into(),
        ),
        (
            r#"[{setHeaderRoute: {name: testers}}, {setMirrorRoute: {name: testers}}]"#.into(),
            GATEWAY,
            "spec.strategy.canary.trafficRouting.managedRoutes",
            "`testers` is set by both setHeaderRoute and setMirrorRoute steps; a managed route is one or the other".into(),
        ),
    ];
    for (steps, routing, path, message) in table {
        let problems = validate_spec(&yaml_spec(&steps, routing));
        assert_eq!(at(&problems, path), vec![message], "{steps} {problems:?}");
    }
}

#[test]
fn too_many_managed_routes_or_matches_are_refused_with_the_limit() {
    let names: Vec<String> = (0..=MAX_MANAGED_ROUTES)
        .map(|i| format!("{{name: r{i}}}"))
        .collect();
    let routing = format!(
        "{{gatewayAPI: {{httpRoute: web}}, managedRoutes: [{}]}}",
        names.join(", ")
    );
    let problems = validate_spec(&yaml_spec("[]", &routing));
    assert_eq!(
        at(
            &problems,
            "spec.strategy.canary.trafficRouting.managedRoutes"
        ),
        vec!["17 routes is over the limit of 16 (MAX_MANAGED_ROUTES)"]
    );
    let matches: Vec<String> = (0..=MAX_ROUTE_MATCHES)
        .map(|i| format!("{{headerName: h{i}, headerValue: {{exact: a}}}}"))
        .collect();
    let steps = format!(
        "[{{setHeaderRoute: {{name: testers, match: [{}]}}}}]",
        matches.join(", ")
    );
    let problems = validate_spec(&yaml_spec(&steps, GATEWAY));
    assert_eq!(
        at(
            &problems,
            "spec.strategy.canary.steps[0].setHeaderRoute.match"
        ),
        vec!["17 entries is over the limit of 16 (MAX_ROUTE_MATCHES)"]
    );
}

/// A Service name is a path segment of the request that points the Service: a name that is
/// no Service name (`../`, `ns/name`, `?`, upper case, too long) is refused at its field, for
/// the canary's and the blue-green's Services alike, so every Service vigil points is one of
/// the Rollout's own namespace.
#[test]
fn service_fields_hold_service_names_of_the_rollouts_own_namespace() {
    let hostile = [
        "../../kube-system/services/kube-dns".to_owned(),
        "other-team/web".to_owned(),
        "web?dryRun=All".to_owned(),
        "web%2F..".to_owned(),
        "Web".to_owned(),
        "1web".to_owned(),
        "web-".to_owned(),
        "w".repeat(64),
    ];
    for name in &hostile {
        let mut canary = rollout(vec![weight(10)]);
        canary.strategy.canary.stable_service = Some(name.clone());
        canary.strategy.canary.canary_service = Some(name.clone());
        let problems = validate_spec(&canary);
        for field in ["stableService", "canaryService"] {
            let found = at(&problems, &format!("spec.strategy.canary.{field}"));
            assert!(
                found.iter().any(|m| m.contains("is not a Service name")),
                "{name} {field}: {problems:?}"
            );
        }
        let mut blue_green = rollout(vec![]);
        blue_green.strategy.blue_green = Some(crate::api::BlueGreenStrategy {
            active_service: Some(name.clone()),
            preview_service: Some(name.clone()),
            ..Default::default()
        });
        let problems = validate_spec(&blue_green);
        for field in ["activeService", "previewService"] {
            let found = at(&problems, &format!("spec.strategy.blueGreen.{field}"));
            assert!(
                found.iter().any(|m| m.contains("is not a Service name")),
                "{name} {field}: {problems:?}"
            );
        }
    }
    let mut fine = rollout(vec![weight(10)]);
    fine.strategy.canary.stable_service = Some(format!("a{}", "b".repeat(61)) + "9");
    fine.strategy.canary.canary_service = Some("web-canary-2".to_owned());
    assert_eq!(validate_spec(&fine), vec![]);
}

//! The `workloadRef` rules of the state machine, as tables: when the adopted Deployment is
//! scaled down under each `scaleDown` mode, and what a missing, invalid or changed Deployment
//! does to the rollout.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::*;
use crate::api::{
    CanaryStep, CanaryStrategy, PauseStep, RolloutPhase, RolloutStrategy, ScaleDown, WorkloadRef,
};

const REPLICAS: i32 = 4;

fn now() -> Timestamp {
    "2025-01-01T00:00:00Z".parse().expect("timestamp")
}

fn pod_template(image: &str, app: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some([("app".to_owned(), app.to_owned())].into()),
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

fn spec(scale_down: Option<ScaleDown>) -> RolloutSpec {
    RolloutSpec {
        replicas: Some(REPLICAS),
        selector: LabelSelector {
            match_labels: Some([("app".to_owned(), "web".to_owned())].into()),
            ..Default::default()
        },
        workload_ref: Some(WorkloadRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "web".into(),
            scale_down,
        }),
        strategy: RolloutStrategy {
            canary: CanaryStrategy {
                stable_service: Some("web-stable".into()),
                steps: vec![
                    CanaryStep {
                        set_weight: Some(50),
                        ..Default::default()
                    },
                    CanaryStep {
                        pause: Some(PauseStep { duration: None }),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

fn hash(image: &str) -> String {
    template_hash(&pod_template(image, "web"))
}

/// The cluster around the rollout: the Deployment (image, replicas) and the Rollout's
/// revisions (image, replicas, ready).
struct Seen {
    deployment: Option<(&'static str, i32)>,
    revisions: Vec<(&'static str, i32, i32)>,
}

fn observe(spec: &RolloutSpec, seen: &Seen) -> Observation {
    let workload = seen
        .deployment
        .map(|(image, replicas)| WorkloadObservation {
            template: pod_template(image, "web"),
            replicas,
        });
    Observation {
        rollout_name: "web".into(),
        generation: Some(1),
        desired_revision: desired_revision(spec, workload.as_ref()),
        revisions: seen
            .revisions
            .iter()
            .map(|&(image, replicas, ready)| RevisionObservation {
                revision: hash(image),
                replicas,
                ready_replicas: ready,
                created_at: None,
            })
            .collect(),
        workload,
        ..Default::default()
    }
}

/// Status with `web:1` stable (and a canary `web:2` at step 1 when `canary`).
fn stable_status(canary: Option<&str>) -> RolloutStatus {
    RolloutStatus {
        stable_revision: Some(hash("web:1")),
        canary_revision: canary.map(hash),
        current_step_index: Some(if canary.is_some() { 1 } else { 2 }),
        current_step_started_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now())),
        canary_attempt: i32::from(canary.is_some()),
        ..Default::default()
    }
}

fn workload_effects(decision: &Decision) -> Vec<(i32, i32)> {
    decision
        .effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::ScaleDownWorkload { observed, replicas } => Some((*observed, *replicas)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_deployment_gives_way_only_as_the_rollout_pods_are_ready() {
    use ScaleDown::{Never, OnSuccess, Progressively};
    type Row = (
        &'static str,
        Option<ScaleDown>,
        Option<(&'static str, i32)>,
        Vec<(&'static str, i32, i32)>,
        Vec<(i32, i32)>,
    );
    let table: Vec<Row> = vec![
        (
            "default (never): left alone",
            None,
            Some(("web:1", 4)),
            vec![("web:1", 4, 4)],
            vec![],
        ),
        (
            "never: left alone",
            Some(Never),
            Some(("web:1", 4)),
            vec![("web:1", 4, 4)],
            vec![],
        ),
        (
            "progressively, no Rollout pod yet",
            Some(Progressively),
            Some(("web:1", 4)),
            vec![],
            vec![],
        ),
        (
            "progressively, pods not ready",
            Some(Progressively),
            Some(("web:1", 4)),
            vec![("web:1", 4, 0)],
            vec![],
        ),
        (
            "progressively, one pod ready",
            Some(Progressively),
            Some(("web:1", 4)),
            vec![("web:1", 4, 1)],
            vec![(4, 3)],
        ),
        (
            "progressively, three ready, already at 2",
            Some(Progressively),
            Some(("web:1", 2)),
            vec![("web:1", 4, 3)],
            vec![(2, 1)],
        ),
        (
            "progressively, all ready",
            Some(Progressively),
            Some(("web:1", 4)),
            vec![("web:1", 4, 4)],
            vec![(4, 0)],
        ),
        (
            "progressively, scaled to 1 by hand, none ready: never scaled up",
            Some(Progressively),
            Some(("web:1", 1)),
            vec![("web:1", 4, 0)],
            vec![],
        ),
        (
            "progressively, already 0: nothing to do",
            Some(Progressively),
            Some(("web:1", 0)),
            vec![("web:1", 4, 4)],
            vec![],
        ),
        (
            "onsuccess, not Healthy yet (3 of 4 ready)",
            Some(OnSuccess),
            Some(("web:1", 4)),
            vec![("web:1", 4, 3)],
            vec![],
        ),
        (
            "onsuccess, Healthy",
            Some(OnSuccess),
            Some(("web:1", 4)),
            vec![("web:1", 4, 4)],
            vec![(4, 0)],
        ),
        (
            "the Deployment does not exist",
            Some(Progressively),
            None,
            vec![("web:1", 4, 4)],
            vec![],
        ),
    ];
    for (what, scale_down, deployment, revisions, expected) in table {
        let spec = spec(scale_down);
        let obs = observe(
            &spec,
            &Seen {
                deployment,
                revisions,
            },
        );
        let decision = step(&spec, &stable_status(None), &obs, now());
        assert_eq!(workload_effects(&decision), expected, "{what}");
        // The first reconcile, with no status yet, decides the same about the Deployment.
        let first = step(&spec, &RolloutStatus::default(), &obs, now());
        assert_eq!(
            workload_effects(&first),
            expected,
            "{what} (first reconcile)"
        );
    }
}

#[test]
fn the_deployment_scale_down_comes_after_every_other_scale() {
    let spec = spec(Some(ScaleDown::Progressively));
    let obs = observe(
        &spec,
        &Seen {
            deployment: Some(("web:1", 4)),
            revisions: vec![("web:1", 4, 2)],
        },
    );
    let decision = step(&spec, &stable_status(None), &obs, now());
    let last_scale = decision
        .effects
        .iter()
        .rposition(|e| {
            matches!(
                e,
                Effect::ScaleRevision { .. } | Effect::ScaleDownWorkload { .. }
            )
        })
        .expect("a scale");
    assert!(matches!(
        decision.effects[last_scale],
        Effect::ScaleDownWorkload {
            observed: 4,
            replicas: 2
        }
    ));
}

#[test]
fn the_stable_service_moves_to_the_rollout_only_once_all_its_pods_are_ready() {
    let spec = spec(Some(ScaleDown::Progressively));
    let points = |ready: i32, deployment: i32| {
        let obs = observe(
            &spec,
            &Seen {
                deployment: Some(("web:1", deployment)),
                revisions: vec![("web:1", REPLICAS, ready)],
            },
        );
        step(&spec, &stable_status(None), &obs, now())
            .effects
            .iter()
            .any(|e| {
                matches!(
                    e,
                    Effect::PointServices {
                        stable: Some(_),
                        ..
                    }
                )
            })
    };
    // While the Deployment runs pods, the service keeps selecting them and the Rollout's.
    assert!(!points(0, 4));
    assert!(!points(3, 1));
    assert!(points(4, 4), "all Rollout pods ready");
    assert!(points(0, 0), "no Deployment pods left to protect");
}

#[test]
fn an_abort_never_scales_the_deployment_up() {
    for (scale_down, deployment, expected) in [
        // onsuccess: the rollout is not Healthy while aborted; the Deployment keeps its pods.
        (ScaleDown::OnSuccess, 4, vec![]),
        // progressively: the stable's ready pods still cover the Deployment's.
        (ScaleDown::Progressively, 4, vec![(4, 0)]),
        (ScaleDown::Progressively, 0, vec![]),
    ] {
        let spec = spec(Some(scale_down));
        let mut status = stable_status(Some("web:2"));
        status.abort = true;
        let obs = observe(
            &spec,
            &Seen {
                deployment: Some(("web:2", deployment)),
                revisions: vec![("web:1", 4, 4), ("web:2", 2, 2)],
            },
        );
        let decision = step(&spec, &status, &obs, now());
        assert_eq!(decision.status.phase, Some(RolloutPhase::Aborted));
        assert_eq!(workload_effects(&decision), expected, "{scale_down:?}");
    }
}

#[test]
fn a_change_of_the_deployment_template_mid_release_restarts_the_canary() {
    let spec = spec(Some(ScaleDown::Progressively));
    let obs = observe(
        &spec,
        &Seen {
            deployment: Some(("web:3", 0)),
            revisions: vec![("web:1", 4, 4), ("web:2", 2, 2)],
        },
    );
    let decision = step(&spec, &stable_status(Some("web:2")), &obs, now());
    assert_eq!(
        decision.status.canary_revision.as_deref(),
        Some(hash("web:3").as_str())
    );
    assert_eq!(decision.status.current_step_index, Some(0));
    assert!(
        decision
            .effects
            .iter()
            .any(|e| matches!(e, Effect::Event { reason, .. } if reason == "RolloutRestarted"))
    );
    assert_eq!(
        workload_effects(&decision),
        vec![],
        "a Deployment at 0 stays at 0"
    );
}

#[test]
fn a_missing_or_invalid_deployment_holds_with_the_reason_and_scales_nothing() {
    let spec = spec(Some(ScaleDown::Progressively));
    // The dereference step could not find the Deployment.
    let mut obs = observe(
        &spec,
        &Seen {
            deployment: None,
            revisions: vec![],
        },
    );
    obs.spec_problems.push(SpecProblem {
        path: "spec.workloadRef.name".into(),
        message: "Deployment \"web\" does not exist in namespace \"shop\"".into(),
    });
    let decision = step(&spec, &RolloutStatus::default(), &obs, now());
    assert_eq!(decision.status.phase, Some(RolloutPhase::Degraded));
    let message = decision.status.message.clone().unwrap_or_default();
    assert!(message.contains("spec.workloadRef.name"), "{message}");
    assert!(
        decision
            .effects
            .iter()
            .all(|e| matches!(e, Effect::Event { .. })),
        "{:?}",
        decision.effects
    );

    // A shell that says nothing about an unread Deployment still holds.
    obs.spec_problems.clear();
    let decision = step(&spec, &RolloutStatus::default(), &obs, now());
    assert_eq!(decision.status.phase, Some(RolloutPhase::Degraded));

    // The Deployment's pods are not the Rollout's: its labels do not match the selector.
    let mut obs = observe(
        &spec,
        &Seen {
            deployment: Some(("web:1", 4)),
            revisions: vec![("web:1", 4, 4)],
        },
    );
    if let Some(workload) = &mut obs.workload {
        workload.template = pod_template("web:1", "shop");
    }
    let decision = step(&spec, &stable_status(None), &obs, now());
    assert_eq!(decision.status.phase, Some(RolloutPhase::Degraded));
    let message = decision.status.message.clone().unwrap_or_default();
    assert!(
        message.contains("spec.selector.matchLabels.app")
            && message.contains("of Deployment `web` (spec.workloadRef)"),
        "{message}"
    );
    assert_eq!(workload_effects(&decision), vec![]);
}

#[test]
fn a_deployment_template_names_the_revision_an_inline_template_would() {
    let mut inline = spec(None);
    inline.workload_ref = None;
    inline.template = Some(Box::new(pod_template("web:7", "web")));
    let by_ref = spec(None);
    let workload = WorkloadObservation {
        template: pod_template("web:7", "web"),
        replicas: 1,
    };
    assert_eq!(
        desired_revision(&inline, None),
        desired_revision(&by_ref, Some(&workload))
    );
    assert!(validate_spec(&inline).is_empty());
    assert!(validate_spec(&by_ref).is_empty());
}

#[test]
fn a_scaled_down_deployment_behind_a_rollout_without_replicas_is_refused() {
    // Without spec.replicas the Rollout would run 1 pod and the Deployment would give way to it.
    for (scale_down, refused) in [
        (None, false),
        (Some(ScaleDown::Never), false),
        (Some(ScaleDown::OnSuccess), true),
        (Some(ScaleDown::Progressively), true),
    ] {
        let mut rollout = spec(scale_down);
        rollout.replicas = None;
        let paths: Vec<String> = validate_spec(&rollout)
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(
            paths.contains(&"spec.replicas".to_owned()),
            refused,
            "{scale_down:?}: {paths:?}"
        );
        rollout.replicas = Some(REPLICAS);
        assert!(validate_spec(&rollout).is_empty(), "{scale_down:?}");
    }
}

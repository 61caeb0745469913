//! From Kubernetes objects to the pure core's [`Observation`] (pure: lists in, data out).

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;

use super::context::{REVISION_LABEL, ROLLOUT_LABEL, rollout_label_value};
use super::revision_settings::settings_of;
use crate::api::{AnalysisRun, AnalysisRunSummary, Rollout};
use crate::rollout::{
    Observation, RevisionObservation, ServiceSelection, SpecProblem, WorkloadObservation,
    desired_revision,
};
use crate::traffic::ManagedRoutes;

/// True when `meta`'s owner references name `uid` as the controller.
pub fn controlled_by(
    owners: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference],
    uid: &str,
) -> bool {
    owners
        .iter()
        .any(|o| o.uid == uid && o.controller.unwrap_or(false))
}

/// The revision of a ReplicaSet of `rollout`, or `None` when it is not one of its revisions
/// (another rollout's label, no revision label, another controller).
pub fn revision_of(
    replica_set: &ReplicaSet,
    rollout: &str,
    uid: Option<&str>,
) -> Option<RevisionObservation> {
    let labels = replica_set.labels();
    if labels.get(ROLLOUT_LABEL) != Some(&rollout_label_value(rollout)) {
        return None;
    }
    if let Some(uid) = uid
        && !controlled_by(replica_set.owner_references(), uid)
    {
        return None;
    }
    let revision = labels.get(REVISION_LABEL)?.clone();
    let replicas = replica_set
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    // With minReadySeconds a pod counts once it is available (ready for that long), which the
    // ReplicaSet controller reports as availableReplicas.
    let min_ready = replica_set
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let ready_replicas = replica_set
        .status
        .as_ref()
        .and_then(|s| {
            if min_ready > 0 {
                s.available_replicas
            } else {
                s.ready_replicas
            }
        })
        .unwrap_or(0);
    Some(RevisionObservation {
        revision,
        replicas,
        ready_replicas,
        created_at: replica_set.creation_timestamp().map(|t| t.0),
    })
}

/// The revision a Service selects (its selector's `vigil.dev/revision`).
pub fn service_revision(service: &Service) -> Option<String> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .and_then(|s| s.get(REVISION_LABEL))
        .cloned()
}

/// The summary of a run shown on the Rollout: its phase and message, and each metric's phase
/// with its latest value and reason.
pub fn summarize_run(run: &AnalysisRun) -> AnalysisRunSummary {
    AnalysisRunSummary::of(&run.name_any(), &run.status.clone().unwrap_or_default())
}

/// Everything read from the cluster for one Rollout, as Kubernetes objects.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// ReplicaSets labelled with the Rollout's name.
    pub replica_sets: Vec<ReplicaSet>,
    /// The stable Service, when configured and found.
    pub stable_service: Option<Service>,
    /// The canary Service, when configured and found.
    pub canary_service: Option<Service>,
    /// The baseline Service (`canary.baseline.service`), when configured and found.
    pub baseline_service: Option<Service>,
    /// The canary weight the router reports.
    pub router_canary_weight: Option<i32>,
    /// The baseline weight the router reports (the Gateway API's three-way split); `None`
    /// for a router without one.
    pub router_baseline_weight: Option<i32>,
    /// The managed routes the router reports; `None` when they could not be read.
    pub router_managed_routes: Option<ManagedRoutes>,
    /// Why the router object cannot be used (missing, malformed), at its field: the rollout
    /// holds until it is fixed.
    pub router_problem: Option<SpecProblem>,
    /// The revisions the router's own selectors select (Istio's DestinationRule subsets);
    /// `None` when it has none (the Services select).
    pub router_selection: Option<ServiceSelection>,
    /// AnalysisRuns labelled with the Rollout's name.
    pub analysis_runs: Vec<AnalysisRun>,
    /// What became of the Deployment `spec.workloadRef` names.
    pub workload: WorkloadSeen,
    /// The Service fields whose Services another Rollout manages (see
    /// [`super::service_claims`]): the rollout holds until the field names its own.
    pub service_claims: Vec<SpecProblem>,
}

/// The Deployment behind `spec.workloadRef`, as read.
#[derive(Debug, Clone, Default)]
pub enum WorkloadSeen {
    /// The Rollout has no `workloadRef` (or one vigil does not read: the validator says why).
    #[default]
    NotReferenced,
    /// No Deployment of that name in the Rollout's namespace.
    Missing,
    /// The Deployment.
    Found(Box<Deployment>),
}

/// The Deployment's pod template and replicas, for the pure core.
pub fn workload_observation(deployment: &Deployment) -> WorkloadObservation {
    let spec = deployment.spec.as_ref();
    WorkloadObservation {
        template: spec.map(|s| s.template.clone()).unwrap_or_default(),
        // The API server defaults an unset `spec.replicas` to 1.
        replicas: spec.and_then(|s| s.replicas).unwrap_or(1),
    }
}

/// The problem of a `workloadRef` whose Deployment does not exist: the rollout holds (nothing
/// is created, nothing scaled down) and says so in status.
fn missing_workload(rollout: &Rollout) -> SpecProblem {
    let name = rollout
        .spec
        .workload_ref
        .as_ref()
        .map(|w| w.name.as_str())
        .unwrap_or_default();
    SpecProblem {
        path: "spec.workloadRef.name".to_owned(),
        message: format!(
            "Deployment \"{name}\" does not exist in namespace \"{}\"",
            rollout.namespace().unwrap_or_default()
        ),
    }
}

/// Which revision the stable and the canary side select: the Services' selectors, and the
/// router's own selectors when it has some (Istio's subsets). With both, a side selects a
/// revision only when they agree, so a disagreement is pointed again.
fn selection(rollout: &Rollout, seen: &Seen) -> ServiceSelection {
    let services = ServiceSelection {
        stable: seen.stable_service.as_ref().and_then(service_revision),
        canary: seen.canary_service.as_ref().and_then(service_revision),
        baseline: seen.baseline_service.as_ref().and_then(service_revision),
    };
    let Some(router) = &seen.router_selection else {
        return services;
    };
    let (stable_service, canary_service) = crate::rollout::service_names(&rollout.spec);
    let agree = |configured: bool, service: Option<String>, router: &Option<String>| {
        if configured {
            service.filter(|s| Some(s) == router.as_ref())
        } else {
            router.clone()
        }
    };
    ServiceSelection {
        stable: agree(stable_service.is_some(), services.stable, &router.stable),
        canary: agree(canary_service.is_some(), services.canary, &router.canary),
        baseline: services.baseline,
    }
}

/// Builds the pure core's observation from what was read.
pub fn observation(rollout: &Rollout, seen: &Seen) -> Observation {
    let name = rollout.name_any();
    let uid = rollout.uid();
    let mut revisions: Vec<RevisionObservation> = Vec::new();
    let mut revision_settings = std::collections::BTreeMap::new();
    for replica_set in &seen.replica_sets {
        if let Some(revision) = revision_of(replica_set, &name, uid.as_deref()) {
            revision_settings.insert(revision.revision.clone(), settings_of(replica_set));
            revisions.push(revision);
        }
    }
    revisions.sort_by(|a, b| a.revision.cmp(&b.revision));
    let own_runs: Vec<&AnalysisRun> = seen
        .analysis_runs
        .iter()
        .filter(|run| {
            uid.as_deref()
                .is_none_or(|uid| controlled_by(run.owner_references(), uid))
        })
        .collect();
    let analysis_runs = own_runs.iter().map(|run| summarize_run(run)).collect();
    let analysis_run_created_at = own_runs
        .iter()
        .filter_map(|run| Some((run.name_any(), run.creation_timestamp()?.0)))
        .collect();
    let workload = match &seen.workload {
        WorkloadSeen::Found(deployment) => Some(workload_observation(deployment)),
        WorkloadSeen::NotReferenced | WorkloadSeen::Missing => None,
    };
    // The router's and the workload's problems; the dereference step adds the analysis ones.
    let mut spec_problems: Vec<SpecProblem> = seen.router_problem.iter().cloned().collect();
    spec_problems.extend(seen.service_claims.iter().cloned());
    if let WorkloadSeen::Missing = seen.workload {
        spec_problems.push(missing_workload(rollout));
    }
    Observation {
        rollout_name: name,
        generation: rollout.metadata.generation,
        desired_revision: desired_revision(&rollout.spec, workload.as_ref()),
        revisions,
        router_canary_weight: seen.router_canary_weight,
        // Only the Gateway API splits three ways (see `rollout::baseline`).
        router_baseline_weight: seen.router_baseline_weight,
        router_managed_routes: seen.router_managed_routes.clone(),
        services: selection(rollout, seen),
        analysis_runs,
        analysis_run_created_at,
        spec_problems,
        workload,
        webhook_answers: Vec::new(),
        revision_settings,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::apps::v1::{ReplicaSetSpec, ReplicaSetStatus};
    use k8s_openapi::api::core::v1::ServiceSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::api::{
        AnalysisPhase, AnalysisRunSpec, AnalysisRunStatus, MeasurementRecord, MetricResult,
    };

    fn owner(uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "vigil.dev/v1alpha1".into(),
            kind: "Rollout".into(),
            name: "web".into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn replica_set(rollout: &str, revision: &str, replicas: i32, ready: Option<i32>) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{rollout}-{revision}")),
                labels: Some(BTreeMap::from([
                    (ROLLOUT_LABEL.to_owned(), rollout.to_owned()),
                    (REVISION_LABEL.to_owned(), revision.to_owned()),
                ])),
                owner_references: Some(vec![owner("uid-1")]),
                creation_timestamp: Some(Time(Timestamp::from_second(1_700_000_000).expect("ts"))),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                ..ReplicaSetSpec::default()
            }),
            status: ready.map(|ready| ReplicaSetStatus {
                ready_replicas: Some(ready),
                ..ReplicaSetStatus::default()
            }),
        }
    }

    fn service(revision: Option<&str>) -> Service {
        Service {
            spec: Some(ServiceSpec {
                selector: Some(
                    [("app".to_owned(), "web".to_owned())]
                        .into_iter()
                        .chain(revision.map(|r| (REVISION_LABEL.to_owned(), r.to_owned())))
                        .collect(),
                ),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    fn rollout() -> Rollout {
        let mut rollout = Rollout::new("web", Default::default());
        rollout.metadata.uid = Some("uid-1".into());
        rollout.metadata.generation = Some(3);
        rollout
    }

    #[test]
    fn observation_keeps_only_this_rollouts_revisions_and_runs() {
        let mut foreign_owner = replica_set("web", "ccc", 1, Some(1));
        foreign_owner.metadata.owner_references = Some(vec![owner("uid-2")]);
        let mut run = AnalysisRun::new("web-bbb-1-step2", AnalysisRunSpec::default());
        run.metadata.owner_references = Some(vec![owner("uid-1")]);
        run.status = Some(AnalysisRunStatus {
            phase: Some(AnalysisPhase::Failed),
            message: Some("error-rate failed".into()),
            metric_results: vec![MetricResult {
                name: "error-rate".into(),
                phase: AnalysisPhase::Failed,
                measurements: vec![MeasurementRecord {
                    phase: AnalysisPhase::Failed,
                    started_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                        Timestamp::from_second(1_700_000_100).expect("ts"),
                    ),
                    value: Some("0.1".into()),
                    reason: Some("0.1 > 0.01".into()),
                    critical: false,
                }],
                ..MetricResult::default()
            }],
            ..AnalysisRunStatus::default()
        });
        let mut other_run = run.clone();
        other_run.metadata.owner_references = Some(vec![owner("uid-9")]);
        let seen = Seen {
            replica_sets: vec![
                replica_set("web", "bbb", 2, None),
                replica_set("web", "aaa", 4, Some(4)),
                replica_set("webby", "ddd", 1, Some(1)),
                foreign_owner,
            ],
            stable_service: Some(service(Some("aaa"))),
            canary_service: Some(service(None)),
            baseline_service: Some(service(Some("aaa-baseline"))),
            router_canary_weight: Some(20),
            router_baseline_weight: Some(10),
            router_managed_routes: None,
            router_problem: None,
            router_selection: None,
            analysis_runs: vec![run, other_run],
            workload: WorkloadSeen::NotReferenced,
            service_claims: Vec::new(),
        };
        let obs = observation(&rollout(), &seen);
        assert_eq!(obs.rollout_name, "web");
        assert_eq!(obs.generation, Some(3));
        assert_eq!(
            obs.desired_revision,
            desired_revision(&rollout().spec, None)
        );
        let revisions: Vec<_> = obs
            .revisions
            .iter()
            .map(|r| (r.revision.as_str(), r.replicas, r.ready_replicas))
            .collect();
        assert_eq!(revisions, vec![("aaa", 4, 4), ("bbb", 2, 0)]);
        assert_eq!(obs.services.stable.as_deref(), Some("aaa"));
        assert_eq!(obs.services.canary, None);
        assert_eq!(obs.router_canary_weight, Some(20));
        assert_eq!(obs.services.baseline.as_deref(), Some("aaa-baseline"));
        assert_eq!(obs.router_baseline_weight, Some(10));
        assert_eq!(obs.analysis_runs.len(), 1);
        let summary = &obs.analysis_runs[0];
        assert_eq!(summary.phase, AnalysisPhase::Failed);
        assert_eq!(summary.metrics[0].value.as_deref(), Some("0.1"));
        assert_eq!(summary.metrics[0].reason.as_deref(), Some("0.1 > 0.01"));
        // Spec rules are the core's (rollout::validate_spec), not the observation's.
        assert!(obs.spec_problems.is_empty());
        // Another Rollout's claim on a Service holds the rollout at the field naming it.
        let claim = crate::platform::kubernetes::service_claims::claim_problem(
            "spec.strategy.canary.stableService",
            "web-stable",
            "checkout",
        );
        let claimed = Seen {
            service_claims: vec![claim.clone()],
            ..seen
        };
        assert_eq!(observation(&rollout(), &claimed).spec_problems, vec![claim]);
    }

    #[test]
    fn a_run_without_status_is_pending() {
        let run = AnalysisRun::new("r", AnalysisRunSpec::default());
        let summary = summarize_run(&run);
        assert_eq!(summary.phase, AnalysisPhase::Pending);
        assert!(summary.metrics.is_empty());
    }
}

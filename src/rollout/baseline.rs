//! The fair baseline (`canary.baseline`): while the canary is analysed, a fresh copy of the
//! stable revision runs beside it, sized like the canary and given the same traffic share, so
//! templates compare pods of the same age and count (Kayenta's guidance: never compare a fresh
//! canary with long-running stable pods).
//!
//! The baseline is one more revision for the rest of the machine: its name is derived from the
//! stable revision ([`baseline_revision`]), so a restarted controller re-derives it from
//! status alone, and the shells create its ReplicaSet (or processes) from the stable
//! revision's pod template, relabelled with that name and `vigil.dev/role: baseline`. Pure: no
//! I/O, no clock.

use crate::api::{Baseline, RolloutSpec};
use crate::traffic::RouterKind;

use super::SpecProblem;

/// What ends the name of a baseline revision: `<stable revision>-baseline`. Template hashes
/// are hex digits only, so no template's revision ends like this.
pub const BASELINE_SUFFIX: &str = "-baseline";

/// The label value of the pods' role that marks the baseline's pods
/// (`vigil.dev/role: baseline`).
pub const BASELINE_ROLE: &str = "baseline";

/// The revision of the baseline of `stable`: `<stable>-baseline`, a valid label value (a
/// template hash is 16 characters).
pub fn baseline_revision(stable: &str) -> String {
    format!("{stable}{BASELINE_SUFFIX}")
}

/// The stable revision whose baseline `revision` is; `None` when it is not a baseline's.
pub fn baseline_of(revision: &str) -> Option<&str> {
    revision
        .strip_suffix(BASELINE_SUFFIX)
        .filter(|stable| !stable.is_empty())
}

/// `canary.baseline` when it is enabled.
pub fn enabled(spec: &RolloutSpec) -> Option<&Baseline> {
    spec.strategy.canary.baseline.as_ref().filter(|b| b.enabled)
}

/// The baseline's share of traffic next to a canary at `canary_weight`: the same, but never
/// more than the stable has left (at 60 % to the canary the baseline gets 40 % and the stable
/// none).
pub fn weight_for(canary_weight: i32) -> i32 {
    let canary_weight = canary_weight.clamp(0, 100);
    canary_weight.min(100 - canary_weight)
}

/// The baseline wanted in the cluster at one decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WantedBaseline {
    /// [`baseline_revision`] of the stable.
    pub revision: String,
    /// Pods wanted: the canary's count for the baseline's weight.
    pub replicas: i32,
    /// Its traffic share as it may be set now (with a router): raised only once its pods are
    /// ready, like the canary's.
    pub weight: i32,
    /// Its pods are ready and (with a router) the router reports its weight: measuring it is
    /// fair from now on.
    pub converged: bool,
}

/// The rules of `canary.baseline`, each naming its field.
pub(crate) fn check(spec: &RolloutSpec, problems: &mut Vec<SpecProblem>) {
    let Some(baseline) = &spec.strategy.canary.baseline else {
        return;
    };
    let path = "spec.strategy.canary.baseline";
    if let Some(service) = &baseline.service {
        check_service(spec, service, problems);
    }
    let router = RouterKind::of(spec.strategy.canary.traffic_routing.as_ref());
    if baseline.service.is_some() && router != RouterKind::GatewayApi {
        problems.push(SpecProblem {
            path: format!("{path}.service"),
            message: format!(
                "only trafficRouting.gatewayAPI sends traffic to a baseline Service; with {} \
                 leave it out",
                router_name(router)
            ),
        });
    }
    if !baseline.enabled {
        return;
    }
    match router {
        RouterKind::ReplicaRatio | RouterKind::Local => {}
        RouterKind::GatewayApi if baseline.service.is_some() => {}
        RouterKind::GatewayApi => problems.push(SpecProblem {
            path: format!("{path}.service"),
            message: "a baseline with trafficRouting.gatewayAPI needs a Service for its pods: \
                      name it here and list it as a backendRef of the HTTPRoute next to the \
                      stable and canary Services"
                .to_owned(),
        }),
        other => problems.push(SpecProblem {
            path: format!("{path}.enabled"),
            message: format!(
                "a baseline needs a three-way traffic split, which {} cannot do in vigil yet: \
                 use trafficRouting.gatewayAPI (with baseline.service), the local proxy, or no \
                 trafficRouting (the replica ratio gives the baseline its share by its pod \
                 count)",
                router_name(other)
            ),
        }),
    }
}

/// `baseline.service` is a Service name of its own.
fn check_service(spec: &RolloutSpec, service: &str, problems: &mut Vec<SpecProblem>) {
    let path = "spec.strategy.canary.baseline.service";
    let canary = &spec.strategy.canary;
    let message = if service.is_empty() {
        "must not be empty".to_owned()
    } else if service.len() > 63
        || !service
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || service.starts_with('-')
        || service.ends_with('-')
    {
        format!("{service:?} is not a Service name (lowercase letters, digits and '-', at most 63)")
    } else if [&canary.stable_service, &canary.canary_service]
        .into_iter()
        .any(|other| other.as_deref() == Some(service))
    {
        format!(
            "{service:?} is also the stableService or canaryService: the baseline needs a \
             Service of its own"
        )
    } else {
        return;
    };
    problems.push(SpecProblem {
        path: path.to_owned(),
        message,
    });
}

/// The baseline Service vigil points (`canary.baseline.service` of an enabled baseline).
pub fn service(spec: &RolloutSpec) -> Option<&str> {
    enabled(spec)?.service.as_deref()
}

fn router_name(router: RouterKind) -> &'static str {
    match router {
        RouterKind::GatewayApi => "trafficRouting.gatewayAPI",
        RouterKind::Istio => "trafficRouting.istio",
        RouterKind::Nginx => "trafficRouting.nginx",
        RouterKind::Smi => "trafficRouting.smi",
        RouterKind::Traefik => "trafficRouting.traefik",
        RouterKind::Local => "trafficRouting.local",
        RouterKind::ReplicaRatio => "the replica ratio",
    }
}

/// The name of the built-in argument that passes [`baseline_revision`] to templates.
pub const BASELINE_REVISION_ARG: &str = "baseline-revision";

/// The templates of `declared` (found by the dereference step, in its order) that select the
/// baseline (declare `baseline-revision` without a value) while `spec` runs none: their
/// baseline queries could only find no series. Each is a problem at its reference. The
/// Rollout passing the argument itself is its own choice, and no problem.
pub fn unused_baseline_problems(
    spec: &RolloutSpec,
    declared: &super::DeclaredAnalysis<'_>,
    templates: &[(String, crate::api::AnalysisTemplateSpec)],
) -> Vec<SpecProblem> {
    let passed = declared
        .args
        .iter()
        .any(|a| a.name == BASELINE_REVISION_ARG);
    if enabled(spec).is_some() || passed {
        return Vec::new();
    }
    let path = declared.kind.path();
    templates
        .iter()
        .enumerate()
        .filter(|(_, (_, template))| {
            template
                .args
                .iter()
                .any(|a| a.name == BASELINE_REVISION_ARG && a.value.is_none())
        })
        .map(|(j, (name, _))| SpecProblem {
            path: format!("{path}.templates[{j}].templateName"),
            message: format!(
                "template {name:?} compares the canary with a fair baseline (argument \
                 `{BASELINE_REVISION_ARG}`), but spec.strategy.canary.baseline.enabled is not \
                 true, so no baseline runs: enable it, or use a template that compares with \
                 the stable"
            ),
        })
        .collect()
}

/// What [`wanted`] needs from one decision of the machine.
pub(crate) struct Moment<'a> {
    /// The stable revision, once there is one.
    pub stable: Option<&'a str>,
    /// An analysis (the step's or the background one) is wanted at this decision.
    pub analysing: bool,
    /// The weight of the current step (what the canary is sized for).
    pub step_weight: i32,
    /// The canary's pods wanted at this decision.
    pub canary_replicas: i32,
    /// The canary's weight as it may be set now (raised only once its pods are ready).
    pub canary_weight: i32,
    /// Pods for a share of traffic: the canary's rule, `ceil(replicas × weight / 100)`.
    pub pods_for: &'a dyn Fn(i32) -> i32,
    /// A router sets the weights (else the baseline's pods are its share).
    pub router: bool,
}

/// The baseline wanted at `moment` of a running canary: `None` unless it is enabled and an
/// analysis is wanted.
pub(crate) fn wanted(
    spec: &RolloutSpec,
    obs: &super::Observation,
    moment: &Moment<'_>,
) -> Option<WantedBaseline> {
    enabled(spec)?;
    let stable = moment.stable?;
    if !moment.analysing {
        return None;
    }
    let revision = baseline_revision(stable);
    // Sized like the canary; past 50 % like its share, which is then smaller.
    let replicas = if weight_for(moment.step_weight) < moment.step_weight.clamp(0, 100) {
        (moment.pods_for)(weight_for(moment.step_weight)).min(moment.canary_replicas)
    } else {
        moment.canary_replicas
    }
    .max(0);
    let ready = obs
        .revisions
        .iter()
        .find(|r| r.revision == revision)
        .map_or(0, |r| r.ready_replicas);
    let pods_ready = ready >= replicas;
    let share = weight_for(moment.canary_weight);
    let seen = obs.router_baseline_weight;
    // The baseline Service (when there is one) must select the baseline's pods before any
    // traffic goes to it; one selecting something else gets none until it is pointed.
    let service_pointed =
        service(spec).is_none() || obs.services.baseline.as_deref() == Some(revision.as_str());
    // Lowering is always safe; raising waits until its pods can take it.
    let weight = if !service_pointed {
        0
    } else if pods_ready {
        share
    } else {
        share.min(seen.unwrap_or(0))
    };
    let converged = pods_ready && service_pointed && (!moment.router || seen == Some(share));
    Some(WantedBaseline {
        revision,
        replicas,
        weight,
        converged,
    })
}

/// How many of the stable's pods the baseline's ready pods stand in for, without a router
/// (the replica ratio): the stable shrinks as they become ready, so capacity never dips.
pub(crate) fn ready_in_place_of_stable(wanted: &WantedBaseline, obs: &super::Observation) -> i32 {
    obs.revisions
        .iter()
        .find(|r| r.revision == wanted.revision)
        .map_or(0, |r| r.ready_replicas.min(wanted.replicas).max(0))
}

/// Why the analysis waits for the baseline, for the status message.
pub(crate) fn waiting_note(wanted: &WantedBaseline, obs: &super::Observation) -> String {
    let ready = obs
        .revisions
        .iter()
        .find(|r| r.revision == wanted.revision)
        .map_or(0, |r| r.ready_replicas);
    if ready < wanted.replicas {
        format!(
            "the analysis starts once the baseline {} is ready: {ready}/{} pods ready",
            wanted.revision, wanted.replicas
        )
    } else {
        format!(
            "the analysis starts once the router reports the baseline {}'s weight {}",
            wanted.revision, wanted.weight
        )
    }
}

#[cfg(test)]
#[path = "baseline_tests.rs"]
mod tests;

//! From the wanted state of the cluster to the effects that reach it from what was observed.
//!
//! Effects are level-based: each one is emitted only while the observation differs from what
//! is wanted, so a lost or repeated effect heals itself at the next reconcile, and a converged
//! rollout emits nothing but transition events.

use crate::api::{Argument, ScaleDown, TemplateRef};
use crate::traffic::ManagedRoutes;

use super::baseline::{WantedBaseline, baseline_of};
use super::run_history::{RunHistoryLimits, run_history_effects};
use super::scaling::RevisionSettings;
use super::{AnalysisKind, Effect, Observation};

/// The wanted shape of the cluster for one rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Intent {
    /// Nothing moves: no effect at all (user pause, invalid spec).
    Hold,
    /// No canary: the stable at full scale takes all traffic.
    Stable,
    /// A canary runs next to the stable.
    Canary {
        canary_replicas: i32,
        stable_replicas: i32,
        canary_weight: i32,
    },
    /// The canary was aborted: traffic on the stable (`canary_weight` 0, or with
    /// `dynamicStableScale` what the stable cannot carry yet), the canary scaled down when it
    /// is time.
    Aborted {
        scale_down_canary: bool,
        canary_weight: i32,
    },
    /// A blue-green release after the switch: both services select the canary (the new
    /// revision), both revisions keep full scale so a failed post-promotion analysis can
    /// switch back at once.
    Switched,
}

/// An AnalysisRun that must exist and keep running.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct WantedRun {
    pub name: String,
    pub kind: AnalysisKind,
    pub templates: Vec<TemplateRef>,
    pub args: Vec<Argument>,
}

/// Everything [`build_effects`] needs besides the observation.
pub(crate) struct Plan<'a> {
    pub intent: Intent,
    pub stable: Option<&'a str>,
    pub canary: Option<&'a str>,
    pub replicas: i32,
    pub router: bool,
    /// The managed routes wanted (none unless a canary runs).
    pub routes: ManagedRoutes,
    /// The names the steps set as (header, mirror) routes: what vigil may have to remove.
    pub route_names: (Vec<String>, Vec<String>),
    pub stable_service: bool,
    pub canary_service: bool,
    pub runs: Vec<WantedRun>,
    pub history_limit: usize,
    /// The AnalysisRun history limits (`spec.analysis`).
    pub run_history: RunHistoryLimits,
    /// The runs the status observed or decided shows, or its canary attempt in flight may
    /// have made: never deleted (with `runs`).
    pub runs_in_status: Vec<String>,
    /// Revisions that traffic verifiably left may lose their pods now
    /// (`scaleDownDelaySeconds` passed since).
    pub scale_down_others: bool,
    /// The replicas the Deployment behind `workloadRef` may keep
    /// ([`workload_replicas_wanted`]); `None` leaves it alone.
    pub workload_replicas: Option<i32>,
    /// What the stable's and the canary's ReplicaSets carry besides the template.
    pub settings: Vec<(&'a str, RevisionSettings)>,
    /// The fair baseline wanted now (`canary.baseline`); `None` scales any baseline down.
    pub baseline: Option<WantedBaseline>,
    /// vigil points `canary.baseline.service` at the baseline.
    pub baseline_service: bool,
    /// The baseline weight the router must keep for now, however low the baseline's wanted
    /// weight: what the stable's ready pods cannot carry yet (`dynamicStableScale`; else 0).
    pub baseline_drain: i32,
}

/// The replicas the Deployment behind `workloadRef` may keep under `policy`: `never` leaves
/// it alone (`None`), `onsuccess` keeps none once the rollout is `healthy`, `progressively`
/// keeps the part of `replicas` that the Rollout's ready pods (all revisions) do not cover yet.
pub(crate) fn workload_replicas_wanted(
    policy: ScaleDown,
    healthy: bool,
    replicas: i32,
    obs: &Observation,
) -> Option<i32> {
    match policy {
        ScaleDown::Never => None,
        ScaleDown::OnSuccess => healthy.then_some(0),
        ScaleDown::Progressively => {
            let ready = obs
                .revisions
                .iter()
                .map(|r| r.ready_replicas.max(0))
                .fold(0, i32::saturating_add);
            Some(replicas.saturating_sub(ready).max(0))
        }
    }
}

/// Scaling the Deployment behind `workloadRef` down to what `plan` lets it keep; never up (a
/// Deployment someone scaled down by hand stays down).
fn workload_effect(plan: &Plan, obs: &Observation) -> Option<Effect> {
    let wanted = plan.workload_replicas?;
    let observed = obs.workload.as_ref()?.replicas;
    (wanted < observed).then_some(Effect::ScaleDownWorkload {
        observed,
        replicas: wanted,
    })
}

/// While the Deployment behind `workloadRef` still runs pods, the stable service may select
/// them too (the Rollout's selector matches its template): it is pointed at the stable
/// revision only once all that revision's pods are ready, so adopting never shrinks capacity.
fn stable_service_may_move(plan: &Plan, obs: &Observation, stable: &str) -> bool {
    let adopting = obs.workload.as_ref().is_some_and(|w| w.replicas > 0);
    !adopting
        || obs
            .revisions
            .iter()
            .any(|r| r.revision == stable && r.ready_replicas >= plan.replicas)
}

/// The weight and the services' revisions (stable, canary) that `plan` wants; `None` when
/// nothing is wanted (no stable yet, or holding).
fn wanted_routing<'a>(plan: &Plan<'a>) -> Option<(i32, (&'a str, &'a str))> {
    let stable = plan.stable?;
    let canary = plan.canary;
    match plan.intent {
        Intent::Canary { canary_weight, .. } => {
            Some((canary_weight, (stable, canary.unwrap_or(stable))))
        }
        Intent::Aborted { canary_weight, .. } => {
            Some((canary_weight, (stable, canary.unwrap_or(stable))))
        }
        Intent::Switched => {
            let canary = canary.unwrap_or(stable);
            Some((0, (canary, canary)))
        }
        Intent::Stable => Some((0, (stable, stable))),
        Intent::Hold => None,
    }
}

/// Whether traffic verifiably left every revision but the stable and the canary: both
/// services select the revisions wanted, or (when vigil does not manage both) the router also
/// reports the weight wanted.
pub(crate) fn traffic_left(plan: &Plan, obs: &Observation) -> bool {
    let Some((weight, wanted_services)) = wanted_routing(plan) else {
        return false;
    };
    let services_settled = (!plan.stable_service
        || obs.services.stable.as_deref() == Some(wanted_services.0))
        && (!plan.canary_service || obs.services.canary.as_deref() == Some(wanted_services.1));
    let router_settled = !plan.router || obs.router_canary_weight == Some(weight);
    services_settled && ((plan.stable_service && plan.canary_service) || router_settled)
}

/// The revisions other than the stable and the canary that still have pods.
pub(crate) fn leftover_revisions<'o>(plan: &Plan, obs: &'o Observation) -> Vec<&'o str> {
    obs.revisions
        .iter()
        .filter(|r| {
            r.replicas != 0
                && plan.stable != Some(r.revision.as_str())
                && plan.canary != Some(r.revision.as_str())
                && baseline_of(&r.revision).is_none()
        })
        .map(|r| r.revision.as_str())
        .collect()
}

/// The ordered effects: stable-service moves, weight decreases, revision settings and
/// scale-ups, canary-service
/// moves, weight increases, scale-downs (the `workloadRef` Deployment's last), run
/// terminations, run creations, revision deletions, run deletions, events.
pub(crate) fn build_effects(plan: &Plan, obs: &Observation, events: Vec<Effect>) -> Vec<Effect> {
    let (Some(stable), Some((weight, wanted_services))) = (plan.stable, wanted_routing(plan))
    else {
        return events;
    };
    let (scale_ups, scale_downs) = scale_effects(plan, obs, stable);
    // Settings go first among the scale-ups: a ReplicaSet created for them already carries
    // them, so its first pods do.
    let mut scale_ups_with_settings = settings_effects(plan, obs, &scale_ups);
    scale_ups_with_settings.extend(scale_ups);
    let mut effects =
        routing_and_scale_effects(plan, obs, weight, wanted_services, scale_ups_with_settings);
    effects.extend(scale_downs);
    effects.extend(workload_effect(plan, obs));
    effects.extend(run_effects(plan, obs, stable));
    effects.extend(deletion_effects(plan, obs, stable));
    let kept: Vec<&str> = (plan.runs.iter().map(|r| r.name.as_str()))
        .chain(plan.runs_in_status.iter().map(String::as_str))
        .collect();
    effects.extend(run_history_effects(plan.run_history, &kept, obs));
    effects.extend(events);
    effects
}

/// The replicas `plan` wants of the stable, and of the canary when it has a say.
fn wanted_scale<'a>(plan: &'a Plan<'a>, stable: &'a str) -> Vec<(&'a str, i32)> {
    let mut wanted = vec![(stable, plan.replicas)];
    match plan.intent {
        Intent::Canary {
            canary_replicas,
            stable_replicas,
            ..
        } => {
            wanted[0].1 = stable_replicas;
            if let Some(canary) = plan.canary {
                wanted.push((canary, canary_replicas));
            }
        }
        Intent::Aborted {
            scale_down_canary: true,
            ..
        } => {
            if let Some(canary) = plan.canary {
                wanted.push((canary, 0));
            }
        }
        Intent::Switched => {
            if let Some(canary) = plan.canary {
                wanted.push((canary, plan.replicas));
            }
        }
        _ => {}
    }
    if let Some(baseline) = &plan.baseline {
        wanted.push((baseline.revision.as_str(), baseline.replicas));
    }
    wanted
}

/// The scale-ups and the scale-downs (leftover revisions included once traffic left them).
fn scale_effects(plan: &Plan, obs: &Observation, stable: &str) -> (Vec<Effect>, Vec<Effect>) {
    let observed_replicas = |revision: &str| {
        obs.revisions
            .iter()
            .find(|r| r.revision == revision)
            .map_or(0, |r| r.replicas)
    };
    let mut scale_ups = Vec::new();
    let mut scale_downs = Vec::new();
    for (revision, replicas) in wanted_scale(plan, stable) {
        let observed = observed_replicas(revision);
        let effect = Effect::ScaleRevision {
            revision: revision.to_owned(),
            replicas,
        };
        if replicas > observed {
            scale_ups.push(effect);
        } else if replicas < observed {
            scale_downs.push(effect);
        }
    }
    scale_downs.extend(baseline_scale_downs(plan, obs));
    if plan.scale_down_others {
        for revision in leftover_revisions(plan, obs) {
            scale_downs.push(Effect::ScaleRevision {
                revision: revision.to_owned(),
                replicas: 0,
            });
        }
    }
    (scale_ups, scale_downs)
}

/// The baselines not wanted that still have pods, scaled to 0 once the router sends them
/// nothing (at once without a router: their pods are their share).
fn baseline_scale_downs(plan: &Plan, obs: &Observation) -> Vec<Effect> {
    let no_traffic = !plan.router || obs.router_baseline_weight.unwrap_or(0) == 0;
    let wanted = plan.baseline.as_ref().map(|b| b.revision.as_str());
    obs.revisions
        .iter()
        .filter(|r| {
            r.replicas != 0
                && baseline_of(&r.revision).is_some()
                && wanted != Some(r.revision.as_str())
                && no_traffic
        })
        .map(|r| Effect::ScaleRevision {
            revision: r.revision.clone(),
            replicas: 0,
        })
        .collect()
}

/// The baseline's weight to set, when the router reports one that differs (0 without a
/// baseline wanted).
fn baseline_weight_effect(plan: &Plan, obs: &Observation) -> Option<(Effect, bool)> {
    let seen = obs.router_baseline_weight?;
    let weight = plan
        .baseline
        .as_ref()
        .map_or(0, |b| b.weight)
        .max(plan.baseline_drain.min(seen));
    (plan.router && seen != weight).then_some((
        Effect::SetBaselineWeight {
            baseline_weight: weight,
        },
        weight < seen,
    ))
}

/// Pointing the baseline Service at the wanted baseline, while the router sends it nothing
/// (its weight is raised only once it selects the baseline's pods, see
/// [`super::baseline::wanted`]).
fn baseline_service_effect(plan: &Plan, obs: &Observation) -> Option<Effect> {
    let wanted = plan.baseline.as_ref()?;
    (plan.baseline_service
        && obs.services.baseline.as_deref() != Some(wanted.revision.as_str())
        && obs.router_baseline_weight.unwrap_or(0) == 0)
        .then(|| Effect::PointBaselineService {
            revision: wanted.revision.clone(),
        })
}

/// Service moves, weight changes and scale-ups in their safe order: a stable-service move
/// first, weight decreases, scale-ups, a canary-service move, weight increases.
fn routing_and_scale_effects(
    plan: &Plan,
    obs: &Observation,
    weight: i32,
    wanted_services: (&str, &str),
    scale_ups: Vec<Effect>,
) -> Vec<Effect> {
    let mut effects = Vec::new();
    let stable_service_move = (plan.stable_service
        && obs.services.stable.as_deref() != Some(wanted_services.0)
        && stable_service_may_move(plan, obs, wanted_services.0))
    .then(|| wanted_services.0.to_owned());
    let canary_service_move = (plan.canary_service
        && obs.services.canary.as_deref() != Some(wanted_services.1))
    .then(|| wanted_services.1.to_owned());
    let point_services =
        (stable_service_move.is_some() || canary_service_move.is_some()).then(|| {
            Effect::PointServices {
                stable: stable_service_move.clone(),
                canary: canary_service_move,
            }
        });
    // Moving the stable service only ever points it at ready pods (promotion), and must happen
    // before the weight drops back to the stable service.
    let point_first = stable_service_move.is_some();
    if point_first && let Some(effect) = point_services.clone() {
        effects.push(effect);
    }
    let set_weight =
        (plan.router && obs.router_canary_weight != Some(weight)).then_some(Effect::SetWeight {
            canary_weight: weight,
        });
    let weight_drops = obs.router_canary_weight.is_none_or(|seen| weight <= seen);
    let baseline_weight = baseline_weight_effect(plan, obs);
    if let Some((effect, true)) = baseline_weight.clone() {
        effects.push(effect);
    }
    if weight_drops && let Some(effect) = set_weight.clone() {
        effects.push(effect);
    }
    let (route_removals, route_sets) = route_effects(plan, obs);
    // Traffic leaves the canary (routes removed) with the weight decreases; it reaches the
    // canary (routes set) with the increases, after the scale-ups.
    effects.extend(route_removals);
    effects.extend(scale_ups);
    if !point_first && let Some(effect) = point_services {
        effects.push(effect);
    }
    if !weight_drops && let Some(effect) = set_weight {
        effects.push(effect);
    }
    effects.extend(baseline_service_effect(plan, obs));
    if let Some((effect, false)) = baseline_weight {
        effects.push(effect);
    }
    effects.extend(route_sets);
    effects
}

/// The removals of managed routes not wanted (or, when the router could not be read, of every
/// route the steps name that is not wanted: removing is idempotent), and the sets of wanted
/// routes the router does not report as they are wanted, once a canary pod is ready to take
/// their traffic.
fn route_effects(plan: &Plan, obs: &Observation) -> (Vec<Effect>, Vec<Effect>) {
    let wanted = &plan.routes;
    let (header_names, mirror_names) = &plan.route_names;
    let unknown = ManagedRoutes::default();
    let seen = obs.router_managed_routes.as_ref().unwrap_or(&unknown);
    let readable = obs.router_managed_routes.is_some();
    let mut removals = Vec::new();
    let header_in_place: Vec<&str> = if readable {
        seen.present_header().collect()
    } else {
        header_names.iter().map(String::as_str).collect()
    };
    for name in header_in_place {
        if !wanted.header.iter().any(|r| r.name == name) {
            removals.push(Effect::RemoveHeaderRoute {
                name: name.to_owned(),
            });
        }
    }
    let mirror_in_place: Vec<&str> = if readable {
        seen.present_mirror().collect()
    } else {
        mirror_names.iter().map(String::as_str).collect()
    };
    for name in mirror_in_place {
        if !wanted.mirror.iter().any(|r| r.name == name) {
            removals.push(Effect::RemoveMirrorRoute {
                name: name.to_owned(),
            });
        }
    }
    let canary_ready = plan.canary.is_some_and(|canary| {
        obs.revisions
            .iter()
            .any(|r| r.revision == canary && r.ready_replicas > 0)
    });
    let mut sets = Vec::new();
    if canary_ready {
        for route in &wanted.header {
            if !seen.header.contains(route) {
                sets.push(Effect::SetHeaderRoute {
                    route: route.clone(),
                });
            }
        }
        for route in &wanted.mirror {
            if !seen.mirror.contains(route) {
                sets.push(Effect::SetMirrorRoute {
                    route: route.clone(),
                });
            }
        }
    }
    (removals, sets)
}

/// The settings of the stable and the canary where their ReplicaSets (existing, or created
/// by `scale_ups`) do not carry them as wanted.
fn settings_effects(plan: &Plan, obs: &Observation, scale_ups: &[Effect]) -> Vec<Effect> {
    let exists = |revision: &str| {
        obs.revisions.iter().any(|r| r.revision == revision)
            || scale_ups
                .iter()
                .any(|e| matches!(e, Effect::ScaleRevision { revision: r, .. } if r == revision))
    };
    let unset = RevisionSettings::default();
    plan.settings
        .iter()
        .filter(|(revision, wanted)| {
            exists(revision) && obs.revision_settings.get(*revision).unwrap_or(&unset) != wanted
        })
        .map(|(revision, wanted)| Effect::SetRevisionSettings {
            revision: (*revision).to_owned(),
            settings: wanted.clone(),
        })
        .collect()
}

/// Terminations of runs no longer wanted, then creations of wanted runs not yet seen.
fn run_effects(plan: &Plan, obs: &Observation, stable: &str) -> Vec<Effect> {
    let wanted_names: Vec<&str> = plan.runs.iter().map(|r| r.name.as_str()).collect();
    let mut effects: Vec<Effect> = obs
        .analysis_runs
        .iter()
        .filter(|run| !run.phase.is_completed() && !wanted_names.contains(&run.name.as_str()))
        .map(|run| Effect::TerminateAnalysisRun {
            name: run.name.clone(),
        })
        .collect();
    if let Some(canary) = plan.canary {
        for run in &plan.runs {
            if !obs.analysis_runs.iter().any(|seen| seen.name == run.name) {
                effects.push(Effect::CreateAnalysisRun {
                    name: run.name.clone(),
                    kind: run.kind,
                    templates: run.templates.clone(),
                    args: run.args.clone(),
                    stable_revision: stable.to_owned(),
                    canary_revision: canary.to_owned(),
                });
            }
        }
    }
    effects
}

/// Deletions of unused revisions beyond `revisionHistoryLimit`, oldest first to go.
fn deletion_effects(plan: &Plan, obs: &Observation, stable: &str) -> Vec<Effect> {
    let mut unused: Vec<_> = obs
        .revisions
        .iter()
        .filter(|r| {
            r.revision != stable
                && Some(r.revision.as_str()) != plan.canary
                && r.revision != obs.desired_revision
                && r.replicas == 0
                && r.ready_replicas == 0
        })
        .collect();
    // Newest first; the oldest beyond the limit go.
    unused.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| a.revision.cmp(&b.revision))
    });
    unused
        .into_iter()
        .skip(plan.history_limit)
        .map(|r| Effect::DeleteRevision {
            revision: r.revision.clone(),
        })
        .collect()
}

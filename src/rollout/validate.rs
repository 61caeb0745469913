//! The one validator of a Rollout spec: every rule about a Rollout's own fields lives here
//! (rules about AnalysisTemplates stay with the templates, in [`crate::analysis::template`]).
//! [`super::step`] runs it on every call, so the scenario simulator, the Kubernetes controller,
//! the local engine and `vigil lint` reject exactly the same specs with the same words. The
//! shells add only what the spec alone cannot tell (a template that does not exist, an
//! analysis that cannot start) through [`super::Observation::spec_problems`].

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

use crate::analysis::template::validate::{check_args, check_duration};
use crate::api::duration::MAX_DURATION;
use crate::api::{CanaryStep, RolloutSpec, TemplateRef, TrafficRouting};
use crate::traffic::RouterKind;

use super::MAX_NAME_LEN;
use super::SpecProblem;

const CANARY: &str = "spec.strategy.canary";

fn problem(path: impl Into<String>, message: impl Into<String>) -> SpecProblem {
    SpecProblem {
        path: path.into(),
        message: message.into(),
    }
}

/// Every problem of `spec`, each naming its field and what is wrong; empty when the spec is
/// valid.
pub fn validate_spec(spec: &RolloutSpec) -> Vec<SpecProblem> {
    let mut problems = Vec::new();
    check_counts(spec, &mut problems);
    check_selector(spec, &mut problems);
    let has_containers = spec
        .template
        .spec
        .as_ref()
        .is_some_and(|pod| !pod.containers.is_empty());
    if !has_containers {
        problems.push(problem(
            "spec.template.spec.containers",
            "no containers: the pod template needs at least one",
        ));
    }
    let canary = &spec.strategy.canary;
    let mut highest: Option<(i32, usize)> = None;
    for (i, step) in canary.steps.iter().enumerate() {
        let path = format!("{CANARY}.steps[{i}]");
        check_step(step, &path, i, &mut highest, &mut problems);
    }
    check_background(spec, &mut problems);
    check_services(spec, &mut problems);
    check_routing(spec, &mut problems);
    problems
}

/// Replica counts, delays and the deadline: none negative, the deadline at least a second.
fn check_counts(spec: &RolloutSpec, problems: &mut Vec<SpecProblem>) {
    if let Some(replicas) = spec.replicas
        && replicas < 0
    {
        problems.push(problem("spec.replicas", format!("{replicas} is negative")));
    }
    for (field, value) in [
        ("revisionHistoryLimit", spec.revision_history_limit),
        (
            "strategy.canary.abortScaleDownDelaySeconds",
            spec.strategy.canary.abort_scale_down_delay_seconds,
        ),
        (
            "strategy.canary.scaleDownDelaySeconds",
            spec.strategy.canary.scale_down_delay_seconds,
        ),
    ] {
        if let Some(v) = value
            && v < 0
        {
            problems.push(problem(format!("spec.{field}"), format!("{v} is negative")));
        }
    }
    for (field, value) in [
        (
            "strategy.canary.abortScaleDownDelaySeconds",
            spec.strategy.canary.abort_scale_down_delay_seconds,
        ),
        (
            "strategy.canary.scaleDownDelaySeconds",
            spec.strategy.canary.scale_down_delay_seconds,
        ),
        ("progressDeadlineSeconds", spec.progress_deadline_seconds),
    ] {
        if let Some(v) = value
            && over_ceiling(v)
        {
            problems.push(problem(
                format!("spec.{field}"),
                format!(
                    "{v} seconds is over the ceiling of {} seconds (MAX_DURATION, 30 days)",
                    MAX_DURATION.as_secs()
                ),
            ));
        }
    }
    if let Some(deadline) = spec.progress_deadline_seconds
        && deadline < 1
    {
        problems.push(problem(
            "spec.progressDeadlineSeconds",
            format!("{deadline}: the deadline must be at least 1 second"),
        ));
    }
}

/// A number of seconds longer than [`MAX_DURATION`], the ceiling of every duration field.
fn over_ceiling(seconds: i32) -> bool {
    u64::try_from(seconds).is_ok_and(|s| s > MAX_DURATION.as_secs())
}

/// The background analysis: templates, arguments, and a `startingStep` that is a step index.
fn check_background(spec: &RolloutSpec, problems: &mut Vec<SpecProblem>) {
    let canary = &spec.strategy.canary;
    let Some(background) = &canary.analysis else {
        return;
    };
    let path = format!("{CANARY}.analysis");
    check_template_refs(&background.templates, &path, problems);
    check_args(&background.args, &format!("{path}.args"), problems);
    if let Some(start) = background.starting_step {
        let steps = canary.steps.len();
        let in_range =
            usize::try_from(start).is_ok_and(|s| s < steps.max(1) && (steps > 0 || s == 0));
        if !in_range {
            problems.push(problem(
                format!("{path}.startingStep"),
                format!(
                    "{start} is not a step index: there are {steps} steps (0..={})",
                    steps.saturating_sub(1)
                ),
            ));
        }
    }
}

/// `stableService` and `canaryService`: not empty, and two different Services.
fn check_services(spec: &RolloutSpec, problems: &mut Vec<SpecProblem>) {
    let canary = &spec.strategy.canary;
    for (field, value) in [
        ("stableService", &canary.stable_service),
        ("canaryService", &canary.canary_service),
    ] {
        if value.as_deref().is_some_and(|s| s.trim().is_empty()) {
            problems.push(problem(format!("{CANARY}.{field}"), "empty service name"));
        }
    }
    if let (Some(stable), Some(canary_svc)) = (&canary.stable_service, &canary.canary_service)
        && !stable.is_empty()
        && stable == canary_svc
    {
        problems.push(problem(
            format!("{CANARY}.canaryService"),
            format!("`{canary_svc}` is also the stableService; they must be two Services"),
        ));
    }
}

/// `trafficRouting`: exactly one router, with what that router needs.
fn check_routing(spec: &RolloutSpec, problems: &mut Vec<SpecProblem>) {
    let canary = &spec.strategy.canary;
    let Some(routing) = &canary.traffic_routing else {
        return;
    };
    let path = format!("{CANARY}.trafficRouting");
    let routers = RouterKind::configured(routing);
    let fields: Vec<&str> = routers.iter().filter_map(|r| r.field()).collect();
    match fields.as_slice() {
        [] => {
            let all: Vec<&str> = RouterKind::ROUTERS
                .iter()
                .filter_map(|r| r.field())
                .collect();
            problems.push(problem(
                path.clone(),
                format!(
                    "no router: set one of {}, or remove trafficRouting to split traffic by replica ratio",
                    all.join(", ")
                ),
            ));
        }
        [_] => {}
        several => problems.push(problem(
            path.clone(),
            format!("several routers ({}); set exactly one", several.join(", ")),
        )),
    }
    if let Some(gateway) = &routing.gateway_api
        && gateway.http_route.trim().is_empty()
    {
        problems.push(problem(
            format!("{path}.gatewayAPI.httpRoute"),
            "empty HTTPRoute name",
        ));
    }
    for router in routers.into_iter().filter(|r| r.needs_services()) {
        for (field, value) in [
            ("stableService", &canary.stable_service),
            ("canaryService", &canary.canary_service),
        ] {
            if value.is_none() {
                problems.push(problem(
                    format!("{CANARY}.{field}"),
                    format!(
                        "missing: the {} router sends traffic to the stable and canary Services, so both are needed",
                        router.name()
                    ),
                ));
            }
        }
    }
    check_ingress_routers(routing, &path, problems);
    if let Some(local) = &routing.local
        && local.listen.parse::<std::net::SocketAddr>().is_err()
    {
        problems.push(problem(
            format!("{path}.local.listen"),
            format!(
                "`{}` is not a socket address like 127.0.0.1:8080",
                local.listen
            ),
        ));
    }
}

/// The NGINX, SMI and Traefik routers' settings: the names of the objects they read or
/// create, and the canary Ingress's annotations.
fn check_ingress_routers(routing: &TrafficRouting, path: &str, problems: &mut Vec<SpecProblem>) {
    let mut name = |field: String, value: &str, what: &str| {
        if value.trim().is_empty() {
            problems.push(problem(field, format!("empty {what} name")));
        } else if value.len() > MAX_NAME_LEN {
            problems.push(problem(
                field,
                format!("{what} name longer than {MAX_NAME_LEN} characters"),
            ));
        }
    };
    if let Some(nginx) = &routing.nginx {
        name(
            format!("{path}.nginx.stableIngress"),
            &nginx.stable_ingress,
            "Ingress",
        );
    }
    if let Some(smi) = &routing.smi {
        if let Some(root) = &smi.root_service {
            name(format!("{path}.smi.rootService"), root, "Service");
        }
        if let Some(split) = &smi.traffic_split_name {
            name(
                format!("{path}.smi.trafficSplitName"),
                split,
                "TrafficSplit",
            );
        }
    }
    if let Some(traefik) = &routing.traefik {
        name(
            format!("{path}.traefik.weightedTraefikServiceName"),
            &traefik.weighted_traefik_service_name,
            "TraefikService",
        );
    }
    if let Some(nginx) = &routing.nginx {
        let annotations = crate::traffic::nginx::config_problems(
            nginx.annotation_prefix.as_deref(),
            &nginx.additional_ingress_annotations,
        );
        for (field, message) in annotations {
            problems.push(problem(format!("{path}.nginx.{field}"), message));
        }
    }
}

fn check_step(
    step: &CanaryStep,
    path: &str,
    index: usize,
    highest: &mut Option<(i32, usize)>,
    problems: &mut Vec<SpecProblem>,
) {
    let set: Vec<&str> = [
        ("setWeight", step.set_weight.is_some()),
        ("pause", step.pause.is_some()),
        ("analysis", step.analysis.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, present)| present.then_some(name))
    .collect();
    match set.len() {
        0 => problems.push(problem(
            path.to_owned(),
            "empty step: set one of setWeight, pause, analysis",
        )),
        1 => {}
        _ => problems.push(problem(
            path.to_owned(),
            format!(
                "a step does one thing, but this one sets {}; split it into several steps",
                set.join(", ")
            ),
        )),
    }
    if let Some(weight) = step.set_weight {
        if !(0..=100).contains(&weight) {
            problems.push(problem(
                format!("{path}.setWeight"),
                format!("{weight} is not in 0..=100"),
            ));
        } else {
            match *highest {
                Some((previous, at)) if weight < previous => problems.push(problem(
                    format!("{path}.setWeight"),
                    format!(
                        "{weight} is lower than {previous} set at steps[{at}]; weights never decrease during a rollout (abort to go back)"
                    ),
                )),
                _ => *highest = Some((weight, index)),
            }
        }
    }
    if let Some(pause) = &step.pause {
        check_duration(
            pause.duration.as_deref(),
            format!("{path}.pause.duration"),
            problems,
        );
    }
    if let Some(analysis) = &step.analysis {
        check_template_refs(&analysis.templates, &format!("{path}.analysis"), problems);
        check_args(&analysis.args, &format!("{path}.analysis.args"), problems);
    }
}

fn check_template_refs(templates: &[TemplateRef], path: &str, problems: &mut Vec<SpecProblem>) {
    if templates.is_empty() {
        problems.push(problem(
            format!("{path}.templates"),
            "no templates: name at least one AnalysisTemplate",
        ));
    }
    for (i, t) in templates.iter().enumerate() {
        if t.template_name.trim().is_empty() {
            problems.push(problem(
                format!("{path}.templates[{i}].templateName"),
                "empty template name",
            ));
        }
    }
}

fn check_selector(spec: &RolloutSpec, problems: &mut Vec<SpecProblem>) {
    let empty = BTreeMap::new();
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .unwrap_or(&empty);
    let selector = &spec.selector;
    let match_labels = selector.match_labels.as_ref();
    let expressions = selector.match_expressions.as_deref().unwrap_or_default();
    if match_labels.is_none_or(BTreeMap::is_empty) && expressions.is_empty() {
        problems.push(problem(
            "spec.selector",
            "empty selector: it would select every pod in the namespace; use matchLabels",
        ));
        return;
    }
    for (key, value) in match_labels.into_iter().flatten() {
        match labels.get(key) {
            Some(v) if v == value => {}
            Some(v) => problems.push(problem(
                format!("spec.selector.matchLabels.{key}"),
                format!(
                    "`{value}` does not match the template's label {key}: `{v}`; the Rollout would not select its own pods"
                ),
            )),
            None => problems.push(problem(
                format!("spec.selector.matchLabels.{key}"),
                format!(
                    "spec.template.metadata.labels has no `{key}`; the Rollout would not select its own pods"
                ),
            )),
        }
    }
    for (i, requirement) in expressions.iter().enumerate() {
        let path = format!("spec.selector.matchExpressions[{i}]");
        match requirement_matches(requirement, labels) {
            Ok(true) => {}
            Ok(false) => problems.push(problem(
                path,
                "does not match spec.template.metadata.labels; the Rollout would not select its own pods",
            )),
            Err(reason) => problems.push(problem(path, reason)),
        }
    }
}

/// Whether one `matchExpressions` requirement holds for `labels` (Kubernetes' semantics).
fn requirement_matches(
    requirement: &LabelSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    let values = requirement.values.as_deref().unwrap_or_default();
    let value = labels.get(&requirement.key);
    match requirement.operator.as_str() {
        "In" | "NotIn" if values.is_empty() => Err(format!(
            "operator {} needs a non-empty `values`",
            requirement.operator
        )),
        "In" => Ok(value.is_some_and(|v| values.contains(v))),
        "NotIn" => Ok(!value.is_some_and(|v| values.contains(v))),
        "Exists" | "DoesNotExist" if !values.is_empty() => Err(format!(
            "operator {} takes no `values`",
            requirement.operator
        )),
        "Exists" => Ok(value.is_some()),
        "DoesNotExist" => Ok(value.is_none()),
        other => Err(format!(
            "unknown operator `{other}`; use In, NotIn, Exists or DoesNotExist"
        )),
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;

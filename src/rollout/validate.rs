//! The one validator of a Rollout spec: every rule about a Rollout's own fields lives here
//! (rules about AnalysisTemplates stay with the templates, in [`crate::analysis::template`]).
//! [`super::step`] runs it on every call, so the scenario simulator, the Kubernetes controller,
//! the local engine and `vigil lint` reject exactly the same specs with the same words. The
//! shells add only what the spec alone cannot tell (a template that does not exist, an
//! analysis that cannot start) through [`super::Observation::spec_problems`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use crate::analysis::template::validate::{check_args, check_duration};
use crate::api::duration::MAX_DURATION;
use crate::api::{
    CanaryStep, MAX_RUN_HISTORY_LIMIT, RolloutSpec, ScaleDown, TemplateRef, TrafficRouting,
    WorkloadRef,
};
use crate::traffic::RouterKind;

use super::{MAX_NAME_LEN, SpecProblem};

const CANARY: &str = "spec.strategy.canary";

pub(super) fn problem(path: impl Into<String>, message: impl Into<String>) -> SpecProblem {
    SpecProblem {
        path: path.into(),
        message: message.into(),
    }
}

/// Most steps a canary may have: every reconcile walks them, and no release needs more.
pub const MAX_STEPS: usize = 100;

/// Every problem of `spec`, each naming its field and what is wrong; empty when the spec is
/// valid.
pub fn validate_spec(spec: &RolloutSpec) -> Vec<SpecProblem> {
    let mut problems = Vec::new();
    check_counts(spec, &mut problems);
    check_run_history(spec, &mut problems);
    check_selector_not_empty(spec, &mut problems);
    match (&spec.template, &spec.workload_ref) {
        (Some(template), None) => {
            check_template(spec, template, &TemplateOrigin::Inline, &mut problems);
        }
        (None, Some(workload)) => check_workload_ref(spec, workload, &mut problems),
        (Some(_), Some(_)) => problems.push(problem(
            "spec.workloadRef",
            "set together with spec.template: set exactly one of them",
        )),
        (None, None) => problems.push(problem(
            "spec.template",
            "missing: set spec.template, or spec.workloadRef to release an existing Deployment's pod template",
        )),
    }
    let canary = &spec.strategy.canary;
    if canary.steps.len() > MAX_STEPS {
        problems.push(problem(
            format!("{CANARY}.steps"),
            format!(
                "{} steps is over the limit of {MAX_STEPS} (MAX_STEPS)",
                canary.steps.len()
            ),
        ));
    }
    let mut highest: Option<(i32, usize)> = None;
    for (i, step) in canary.steps.iter().take(MAX_STEPS).enumerate() {
        let path = format!("{CANARY}.steps[{i}]");
        check_step(step, &path, i, &mut highest, &mut problems);
    }
    check_background(spec, &mut problems);
    check_services(spec, &mut problems);
    check_routing(spec, &mut problems);
    super::validate_routes::check_routes(spec, &mut problems);
    super::validate_webhooks::check_webhooks(spec, &mut problems);
    super::validate_scaling::check_scaling(spec, &mut problems);
    super::baseline::check(spec, &mut problems);
    super::validate_blue_green::check_blue_green(spec, &mut problems);
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

/// The AnalysisRun history limits: 0 (keep no finished run) to [`MAX_RUN_HISTORY_LIMIT`].
fn check_run_history(spec: &RolloutSpec, problems: &mut Vec<SpecProblem>) {
    let Some(analysis) = &spec.analysis else {
        return;
    };
    for (field, value) in [
        (
            "successfulRunHistoryLimit",
            analysis.successful_run_history_limit,
        ),
        (
            "unsuccessfulRunHistoryLimit",
            analysis.unsuccessful_run_history_limit,
        ),
    ] {
        let path = format!("spec.analysis.{field}");
        match value {
            Some(v) if v < 0 => problems.push(problem(path, format!("{v} is negative"))),
            Some(v) if v > MAX_RUN_HISTORY_LIMIT => problems.push(problem(
                path,
                format!("{v} is over the limit of {MAX_RUN_HISTORY_LIMIT} (MAX_RUN_HISTORY_LIMIT)"),
            )),
            _ => {}
        }
    }
}

/// A number of seconds longer than [`MAX_DURATION`], the ceiling of every duration field.
pub(super) fn over_ceiling(seconds: i32) -> bool {
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

/// The longest Service name Kubernetes accepts (an RFC 1035 label).
pub const MAX_SERVICE_NAME_LEN: usize = 63;

/// Why `name` cannot be a Service's name, if it cannot: Kubernetes' rule (an RFC 1035 label:
/// lowercase letters, digits and `-`, starting with a letter, ending with a letter or digit,
/// at most 63 characters). The name becomes a path segment of the API request that points
/// the Service, so `/`, `..`, `?` or `%` could otherwise reach another object, in another
/// namespace, than the Rollout's own namespace's Service of that name.
pub(crate) fn service_name_problem(name: &str) -> Option<String> {
    let shown: String = name.chars().take(MAX_SERVICE_NAME_LEN).collect();
    if name.trim().is_empty() {
        return Some("empty service name".to_owned());
    }
    let valid = name.len() <= MAX_SERVICE_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    (!valid).then(|| {
        format!(
            "`{shown}` is not a Service name (lowercase letters, digits and `-`, starting with a letter, at most {MAX_SERVICE_NAME_LEN} characters): name a Service of the Rollout's own namespace"
        )
    })
}

/// `stableService` and `canaryService`: Service names, and two different Services.
fn check_services(spec: &RolloutSpec, problems: &mut Vec<SpecProblem>) {
    let canary = &spec.strategy.canary;
    for (field, value) in [
        ("stableService", &canary.stable_service),
        ("canaryService", &canary.canary_service),
    ] {
        if let Some(why) = value.as_deref().and_then(service_name_problem) {
            problems.push(problem(format!("{CANARY}.{field}"), why));
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
    if let Some(istio) = &routing.istio {
        super::validate_istio::check_istio(
            canary,
            istio,
            CANARY,
            &format!("{path}.istio"),
            problems,
        );
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
    if routing.nginx.is_some() {
        check_nginx_header_routes(&canary.steps, problems);
    }
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

/// ingress-nginx routes by one header per canary Ingress (`canary-by-header`), so the
/// `setHeaderRoute` steps of an NGINX-routed Rollout use one condition and one route name.
fn check_nginx_header_routes(steps: &[CanaryStep], problems: &mut Vec<SpecProblem>) {
    let mut first_name: Option<&str> = None;
    for (index, step) in steps.iter().enumerate() {
        let Some(set) = &step.set_header_route else {
            continue;
        };
        let path = format!("{CANARY}.steps[{index}].setHeaderRoute");
        for (j, m) in set.match_.iter().enumerate() {
            if m.header_value.regex.is_some() {
                problems.push(problem(
                    format!("{path}.match[{j}].headerValue.regex"),
                    "ingress-nginx runs header patterns with a backtracking regex engine, so the NGINX router takes exact or prefix only".to_owned(),
                ));
            }
        }
        if set.match_.len() > 1 {
            problems.push(problem(
                format!("{path}.match"),
                format!(
                    "{} conditions; ingress-nginx routes by one header (canary-by-header), so give one",
                    set.match_.len()
                ),
            ));
        }
        match first_name {
            None => first_name = Some(&set.name),
            Some(first) if first != set.name => problems.push(problem(
                format!("{path}.name"),
                format!(
                    "`{}`: the canary Ingress holds one header route; name it `{first}` like the earlier setHeaderRoute step",
                    set.name
                ),
            )),
            Some(_) => {}
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
        ("setHeaderRoute", step.set_header_route.is_some()),
        ("setMirrorRoute", step.set_mirror_route.is_some()),
        ("setCanaryScale", step.set_canary_scale.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, present)| present.then_some(name))
    .collect();
    match set.len() {
        0 => problems.push(problem(
            path.to_owned(),
            "empty step: set one of setWeight, pause, analysis, setHeaderRoute, setMirrorRoute, setCanaryScale",
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

pub(super) fn check_template_refs(
    templates: &[TemplateRef],
    path: &str,
    problems: &mut Vec<SpecProblem>,
) {
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

/// Where the pod template a Rollout releases comes from, for the words of its problems.
enum TemplateOrigin<'a> {
    /// `spec.template`.
    Inline,
    /// The Deployment `spec.workloadRef` names.
    Workload(&'a str),
}

impl TemplateOrigin<'_> {
    /// The path of `field` of the template, as a person finds it.
    fn field(&self, field: &str) -> String {
        match self {
            TemplateOrigin::Inline => format!("spec.template.{field}"),
            TemplateOrigin::Workload(name) => {
                format!("spec.template.{field} of Deployment `{name}` (spec.workloadRef)")
            }
        }
    }
}

/// The problems of the pod template of the Deployment `spec.workloadRef` names (read by the
/// platform's dereference step): the same rules as an inline `spec.template`'s.
pub fn validate_workload_template(
    spec: &RolloutSpec,
    template: &PodTemplateSpec,
) -> Vec<SpecProblem> {
    let mut problems = Vec::new();
    if let Some(workload) = &spec.workload_ref
        && !selector_is_empty(&spec.selector)
    {
        let origin = TemplateOrigin::Workload(&workload.name);
        check_template(spec, template, &origin, &mut problems);
    }
    problems
}

/// `spec.workloadRef`: an `apps/v1` Deployment with a name that can exist, and a replica count
/// of the Rollout's own whenever the Deployment is scaled down.
fn check_workload_ref(spec: &RolloutSpec, workload: &WorkloadRef, problems: &mut Vec<SpecProblem>) {
    let scales_down = !matches!(workload.scale_down, None | Some(ScaleDown::Never));
    if scales_down && spec.replicas.is_none() {
        // Without it the Rollout would run its default of 1 pod while the Deployment gives way
        // to it: a 10-pod Deployment would be scaled to 0 behind a single pod.
        problems.push(problem(
            "spec.replicas",
            "required with spec.workloadRef.scaleDown `progressively` or `onsuccess`: set it to the Deployment's replicas, which are scaled down as the Rollout's pods get ready",
        ));
    }
    if workload.api_version != "apps/v1" {
        problems.push(problem(
            "spec.workloadRef.apiVersion",
            format!("`{}` is not supported; use apps/v1", workload.api_version),
        ));
    }
    if workload.kind != "Deployment" {
        problems.push(problem(
            "spec.workloadRef.kind",
            format!("`{}` is not supported; use Deployment", workload.kind),
        ));
    }
    let name = &workload.name;
    let valid_name = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid_name {
        problems.push(problem(
            "spec.workloadRef.name",
            format!(
                "`{}` is not a Deployment name (lowercase letters, digits, `-` and `.`, at most {MAX_NAME_LEN} characters)",
                name.chars().take(MAX_NAME_LEN).collect::<String>()
            ),
        ));
    }
}

/// The template's own rules: at least one container, and labels the selector matches.
fn check_template(
    spec: &RolloutSpec,
    template: &PodTemplateSpec,
    origin: &TemplateOrigin,
    problems: &mut Vec<SpecProblem>,
) {
    let has_containers = template
        .spec
        .as_ref()
        .is_some_and(|pod| !pod.containers.is_empty());
    if !has_containers {
        let (path, message) = match origin {
            TemplateOrigin::Inline => (
                "spec.template.spec.containers".to_owned(),
                "no containers: the pod template needs at least one".to_owned(),
            ),
            TemplateOrigin::Workload(_) => (
                "spec.workloadRef.name".to_owned(),
                format!(
                    "{}: no containers: the pod template needs at least one",
                    origin.field("spec.containers")
                ),
            ),
        };
        problems.push(problem(path, message));
    }
    if !selector_is_empty(&spec.selector) {
        check_selector_matches(spec, template, origin, problems);
    }
}

fn selector_is_empty(selector: &LabelSelector) -> bool {
    selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_deref()
            .unwrap_or_default()
            .is_empty()
}

fn check_selector_not_empty(spec: &RolloutSpec, problems: &mut Vec<SpecProblem>) {
    if selector_is_empty(&spec.selector) {
        problems.push(problem(
            "spec.selector",
            "empty selector: it would select every pod in the namespace; use matchLabels",
        ));
    }
}

/// The selector must select the template's pods (Argo's rule for `workloadRef` too).
fn check_selector_matches(
    spec: &RolloutSpec,
    template: &PodTemplateSpec,
    origin: &TemplateOrigin,
    problems: &mut Vec<SpecProblem>,
) {
    let empty = BTreeMap::new();
    let labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .unwrap_or(&empty);
    let selector = &spec.selector;
    let match_labels = selector.match_labels.as_ref();
    let expressions = selector.match_expressions.as_deref().unwrap_or_default();
    let labels_field = origin.field("metadata.labels");
    for (key, value) in match_labels.into_iter().flatten() {
        match labels.get(key) {
            Some(v) if v == value => {}
            Some(v) => problems.push(problem(
                format!("spec.selector.matchLabels.{key}"),
                format!(
                    "`{value}` does not match the template's label {key}: `{v}`{from}; the Rollout would not select its own pods",
                    from = match origin {
                        TemplateOrigin::Inline => String::new(),
                        TemplateOrigin::Workload(_) => format!(" ({labels_field})"),
                    }
                ),
            )),
            None => problems.push(problem(
                format!("spec.selector.matchLabels.{key}"),
                format!(
                    "{labels_field} has no `{key}`; the Rollout would not select its own pods"
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
                format!("does not match {labels_field}; the Rollout would not select its own pods"),
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

//! What the state machine needs of a spec to interpret it. The CRD schema catches most of
//! this at admission; this catches the rest, and anything that slipped past an old schema.

use crate::api::RolloutSpec;
use crate::api::duration::parse_duration;

use super::SpecProblem;

/// Problems that keep the state machine from interpreting `spec`, each naming its field; empty
/// when the spec is usable. A subset of [`crate::analysis::template::validate_rollout`] (the
/// full validation, which the shell runs): [`super::step`] runs this one itself on every
/// call, so a shell that forgot to validate cannot make it misread a spec.
pub fn validate_spec(spec: &RolloutSpec) -> Vec<SpecProblem> {
    let mut problems = Vec::new();
    let mut problem = |field: String, text: String| {
        problems.push(SpecProblem {
            path: field,
            message: text,
        })
    };
    if let Some(replicas) = spec.replicas
        && replicas < 0
    {
        problem("spec.replicas".into(), format!("{replicas} is negative"));
    }
    if let Some(seconds) = spec.progress_deadline_seconds
        && seconds < 1
    {
        problem(
            "spec.progressDeadlineSeconds".into(),
            format!("{seconds} must be at least 1"),
        );
    }
    let canary = &spec.strategy.canary;
    for (field, value) in [
        (
            "abortScaleDownDelaySeconds",
            canary.abort_scale_down_delay_seconds,
        ),
        ("scaleDownDelaySeconds", canary.scale_down_delay_seconds),
    ] {
        if let Some(seconds) = value
            && seconds < 0
        {
            problem(
                format!("spec.strategy.canary.{field}"),
                format!("{seconds} is negative"),
            );
        }
    }
    if let Some(routing) = &canary.traffic_routing {
        let routers =
            usize::from(routing.gateway_api.is_some()) + usize::from(routing.local.is_some());
        if routers > 1 {
            problem(
                "spec.strategy.canary.trafficRouting".into(),
                "set at most one router (gatewayAPI or local)".into(),
            );
        }
        if routing.gateway_api.is_some() {
            for (name, value) in [
                ("stableService", &canary.stable_service),
                ("canaryService", &canary.canary_service),
            ] {
                if value.as_deref().is_none_or(str::is_empty) {
                    problem(
                        format!("spec.strategy.canary.{name}"),
                        "required with trafficRouting.gatewayAPI: the HTTPRoute splits traffic between the two services".into(),
                    );
                }
            }
        }
    }
    for (index, step) in canary.steps.iter().enumerate() {
        let field = format!("spec.strategy.canary.steps[{index}]");
        let kinds = usize::from(step.set_weight.is_some())
            + usize::from(step.pause.is_some())
            + usize::from(step.analysis.is_some());
        if kinds != 1 {
            problem(
                field.clone(),
                format!("exactly one of setWeight, pause, analysis must be set, found {kinds}"),
            );
        }
        if let Some(weight) = step.set_weight
            && !(0..=100).contains(&weight)
        {
            problem(
                format!("{field}.setWeight"),
                format!("{weight} is not a percentage (0 to 100)"),
            );
        }
        if let Some(duration) = step.pause.as_ref().and_then(|p| p.duration.as_deref())
            && let Err(error) = parse_duration(duration)
        {
            problem(format!("{field}.pause.duration"), error.to_string());
        }
        if let Some(analysis) = &step.analysis
            && analysis.templates.is_empty()
        {
            problem(
                format!("{field}.analysis.templates"),
                "at least one template is needed".into(),
            );
        }
    }
    if let Some(background) = &canary.analysis {
        if background.templates.is_empty() {
            problem(
                "spec.strategy.canary.analysis.templates".into(),
                "at least one template is needed".into(),
            );
        }
        if let Some(start) = background.starting_step
            && (start < 0 || start as usize > canary.steps.len())
        {
            problem(
                "spec.strategy.canary.analysis.startingStep".into(),
                format!("{start} is not a step index (0 to {})", canary.steps.len()),
            );
        }
    }
    problems
}

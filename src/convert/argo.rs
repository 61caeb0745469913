//! Argo Rollouts' `Rollout`, `AnalysisTemplate` and `ClusterAnalysisTemplate` into vigil's.
//!
//! Field names are Argo's in vigil wherever Argo has the feature, so most fields carry over as
//! they are; this module is about the ones that do not (see `traps`).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::api::duration::{format_duration, parse_duration};
use crate::api::{
    AnalysisRunStrategy, AnalysisStep, AnalysisTemplate, AnalysisTemplateSpec, Argument,
    ArgumentValueFrom, BackgroundAnalysis, BasicAuth, CanaryStep, CanaryStrategy,
    ClusterAnalysisTemplate, ClusterAnalysisTemplateSpec, FieldSelector, GatewayApiRouting,
    HeaderSource, JobProvider, ManagedRoute, Metric, MetricProvider, PauseStep, PrometheusAuth,
    PrometheusProvider, Rollout, RolloutSpec, RolloutStrategy, ScaleDown, SecretKeySelector,
    SecretSource, TemplateRef, TrafficRouting, WebHeader, WebMethod, WebProvider, WorkloadRef,
};

use super::expr::translate;
use super::fields::{Fields, describe, typed};
use super::traps::{integer_seconds, moved_field};
use super::{Converted, Inputs, Notes, carry_metadata};

/// Argo's Gateway API traffic-router plugin, the one Argo router vigil maps today.
const GATEWAY_API_PLUGIN: &str = "argoproj-labs/gatewayAPI";

/// The built-in argument a `podTemplateHashValue` becomes.
fn revision_builtin(value: &str) -> Option<&'static str> {
    match value {
        "Latest" => Some("canary-revision"),
        "Stable" => Some("stable-revision"),
        _ => None,
    }
}

/// Records, for each template a Rollout names, the arguments it passes as
/// `podTemplateHashValue` (they become vigil's built-in revision arguments in the template).
pub(super) fn collect_revision_args(document: &Value, inputs: &mut Inputs<'_>) {
    let canary = document.pointer("/spec/strategy/canary");
    let steps = canary
        .and_then(|c| c.get("steps"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|step| step.get("analysis"));
    let background = canary.and_then(|c| c.get("analysis"));
    for analysis in steps.chain(background) {
        let renames: BTreeMap<String, &'static str> = analysis
            .get("args")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|arg| {
                let name = arg.get("name")?.as_str()?;
                let value = arg.pointer("/valueFrom/podTemplateHashValue")?.as_str()?;
                Some((name.to_owned(), revision_builtin(value)?))
            })
            .collect();
        if renames.is_empty() {
            continue;
        }
        for template in analysis
            .get("templates")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(name) = template.get("templateName").and_then(Value::as_str) else {
                continue;
            };
            let cluster = template.get("clusterScope").and_then(Value::as_bool) == Some(true);
            inputs
                .revision_args
                .entry((name.to_owned(), cluster))
                .or_default()
                .extend(renames.clone());
        }
    }
}

/// An Argo Rollout as a vigil Rollout (canary or blue-green).
pub(super) fn rollout(document: &Value, inputs: &Inputs<'_>, notes: &mut Notes) -> Option<Rollout> {
    let mut root = Fields::of(document, "", notes);
    root.ignore("apiVersion");
    root.ignore("kind");
    root.ignore("metadata");
    root.ignore("status");
    let spec_value = root.take("spec").unwrap_or(&Value::Null);
    root.finish(notes, |_| None);
    let mut spec = Fields::of(spec_value, "spec", notes);
    let strategy_value = spec.take("strategy").unwrap_or(&Value::Null);
    let mut strategy = Fields::of(strategy_value, "spec.strategy", notes);
    let blue_green = strategy
        .take("blueGreen")
        .map(|bg| super::argo_blue_green::blue_green_strategy(bg, inputs, notes));
    let canary = match strategy.take("canary") {
        Some(canary) => canary_strategy(canary, inputs, notes),
        None if blue_green.is_some() => CanaryStrategy::default(),
        None => {
            notes.unmapped(
                "spec.strategy",
                "neither `canary` nor `blueGreen`: nothing to convert",
            );
            CanaryStrategy::default()
        }
    };
    strategy.finish(notes, |_| None);
    let mut out = RolloutSpec {
        replicas: spec.int("replicas", notes),
        revision_history_limit: spec.int("revisionHistoryLimit", notes),
        paused: spec.bool("paused", notes).unwrap_or_default(),
        progress_deadline_seconds: spec.int("progressDeadlineSeconds", notes),
        min_ready_seconds: spec.int("minReadySeconds", notes),
        strategy: RolloutStrategy { canary, blue_green },
        ..Default::default()
    };
    if let Some(selector) = spec.take("selector") {
        match serde_json::from_value(selector.clone()) {
            Ok(selector) => out.selector = selector,
            Err(error) => notes.unmapped("spec.selector", format!("not a label selector: {error}")),
        }
    }
    if let Some(template) = spec.take("template") {
        match serde_json::from_value(template.clone()) {
            Ok(template) => out.template = template,
            Err(error) => notes.unmapped("spec.template", format!("not a pod template: {error}")),
        }
    }
    if let Some(workload) = spec.take("workloadRef") {
        out.workload_ref = workload_ref(workload, notes);
    }
    if let Some(analysis) = spec.take("analysis") {
        out.analysis = Some(run_history(analysis, notes));
    }
    if spec.bool("progressDeadlineAbort", notes) == Some(false) {
        notes.unmapped(
            "spec.progressDeadlineAbort",
            "false: vigil always rolls back a release that misses its progress deadline",
        );
    }
    spec.finish(notes, |_| None);
    Some(Rollout {
        metadata: carry_metadata(document),
        spec: out,
        status: None,
    })
}

/// Argo's `spec.analysis` (the AnalysisRun history limits) is vigil's, field for field.
fn run_history(value: &Value, notes: &mut Notes) -> AnalysisRunStrategy {
    let mut fields = Fields::of(value, "spec.analysis", notes);
    let strategy = AnalysisRunStrategy {
        successful_run_history_limit: fields.int("successfulRunHistoryLimit", notes),
        unsuccessful_run_history_limit: fields.int("unsuccessfulRunHistoryLimit", notes),
    };
    fields.finish(notes, |_| None);
    strategy
}

/// Argo's `workloadRef` is vigil's, field for field (`scaleDown` with Argo's values).
fn workload_ref(value: &Value, notes: &mut Notes) -> Option<WorkloadRef> {
    let path = "spec.workloadRef";
    let mut fields = Fields::of(value, path, notes);
    let api_version = fields.string("apiVersion", notes).unwrap_or_default();
    let kind = fields.string("kind", notes).unwrap_or_default();
    let name = fields.string("name", notes).unwrap_or_default();
    let scale_down = match fields.string("scaleDown", notes).as_deref() {
        None => None,
        Some("never") => Some(ScaleDown::Never),
        Some("onsuccess") => Some(ScaleDown::OnSuccess),
        Some("progressively") => Some(ScaleDown::Progressively),
        Some(other) => {
            notes.unmapped(
                format!("{path}.scaleDown"),
                format!("`{other}` is none of never, onsuccess, progressively"),
            );
            None
        }
    };
    fields.finish(notes, |_| None);
    Some(WorkloadRef {
        api_version,
        kind,
        name,
        scale_down,
    })
}

fn canary_strategy(value: &Value, inputs: &Inputs<'_>, notes: &mut Notes) -> CanaryStrategy {
    let path = "spec.strategy.canary";
    let mut canary = Fields::of(value, path, notes);
    let mut out = CanaryStrategy {
        stable_service: canary.string("stableService", notes),
        canary_service: canary.string("canaryService", notes),
        scale_down_delay_seconds: canary.int("scaleDownDelaySeconds", notes),
        dynamic_stable_scale: canary.bool("dynamicStableScale", notes).unwrap_or_default(),
        ..Default::default()
    };
    // maxSurge / maxUnavailable: vigil's, int or percent, as Argo's.
    for (field, slot) in [
        ("maxSurge", &mut out.max_surge),
        ("maxUnavailable", &mut out.max_unavailable),
    ] {
        if let Some(value) = canary.take(field) {
            *slot = typed(value, &format!("{path}.{field}"), notes);
        }
    }
    for (field, slot) in [
        ("canaryMetadata", &mut out.canary_metadata),
        ("stableMetadata", &mut out.stable_metadata),
    ] {
        if let Some(value) = canary.take(field) {
            *slot = typed(value, &format!("{path}.{field}"), notes);
        }
    }
    match canary.int("abortScaleDownDelaySeconds", notes) {
        Some(0) => notes.unmapped(
            format!("{path}.abortScaleDownDelaySeconds"),
            "0 means \"never scale the aborted canary down\" in Argo but \"at once\" in vigil, which has no \"never\": set the seconds to keep its pods",
        ),
        other => out.abort_scale_down_delay_seconds = other,
    }
    if let Some(routing) = canary.take("trafficRouting") {
        out.traffic_routing = traffic_routing(routing, &format!("{path}.trafficRouting"), notes);
    }
    for (i, step) in canary.list("steps", notes).iter().enumerate() {
        if let Some(step) = canary_step(step, &format!("{path}.steps[{i}]"), inputs, notes) {
            out.steps.push(step);
        }
    }
    if let Some(background) = canary.take("analysis") {
        let here = format!("{path}.analysis");
        let mut fields = Fields::of(background, &here, notes);
        let starting_step = fields.int("startingStep", notes);
        let (templates, args) = analysis_refs(&mut fields, inputs, notes);
        fields.finish(notes, analysis_field_reason);
        out.analysis = Some(BackgroundAnalysis {
            templates,
            args,
            starting_step,
        });
    }
    canary.finish(notes, |key| {
        Some(match key {
            "pingPong" => "vigil points `stableService` and `canaryService` at the revisions; ping-pong services have no equivalent".to_owned(),
            _ => return None,
        })
    });
    out
}

fn traffic_routing(value: &Value, path: &str, notes: &mut Notes) -> Option<TrafficRouting> {
    let mut routing = Fields::of(value, path, notes);
    let mut out = None;
    if let Some(max) = routing.take("maxTrafficWeight")
        && max.as_i64() != Some(100)
    {
        notes.unmapped(
            format!("{path}.maxTrafficWeight"),
            format!(
                "{}: vigil's weights are percentages (out of 100); rescale each setWeight",
                describe(max)
            ),
        );
    }
    if let Some(plugins) = routing.take("plugins") {
        let mut plugins = Fields::of(plugins, &format!("{path}.plugins"), notes);
        if let Some(gateway) = plugins.take(GATEWAY_API_PLUGIN) {
            let here = format!("{path}.plugins.{GATEWAY_API_PLUGIN}");
            let mut fields = Fields::of(gateway, &here, notes);
            let route = match fields.take("httpRoute") {
                Some(Value::String(name)) => Some(name.clone()),
                Some(route @ Value::Object(_)) => {
                    route.get("name").and_then(Value::as_str).map(str::to_owned)
                }
                _ => None,
            };
            fields.ignore("namespace");
            if fields.take("httpRoutes").is_some()
                || fields.take("grpcRoutes").is_some()
                || fields.take("tcpRoutes").is_some()
            {
                notes.unmapped(here.clone(), "vigil sets the weights of one HTTPRoute (`httpRoute`); several routes or gRPC/TCP routes have no equivalent");
            }
            fields.finish(notes, |_| None);
            match route {
                Some(http_route) => {
                    out = Some(TrafficRouting {
                        gateway_api: Some(GatewayApiRouting { http_route }),
                        ..Default::default()
                    })
                }
                None => notes.unmapped(
                    format!("{here}.httpRoute"),
                    "missing: vigil's gatewayAPI router needs the HTTPRoute's name",
                ),
            }
        }
        plugins.finish(notes, |key| {
            Some(format!("the `{key}` router plugin has no vigil equivalent; vigil routes with Gateway API HTTPRoutes (`trafficRouting.gatewayAPI`), or by replica counts without a router"))
        });
    }
    if let Some(routes) = routing.take("managedRoutes") {
        let managed: Vec<ManagedRoute> =
            typed(routes, &format!("{path}.managedRoutes"), notes).unwrap_or_default();
        if !managed.is_empty() {
            out.get_or_insert_with(TrafficRouting::default)
                .managed_routes = managed;
        }
    }
    // vigil's Istio, NGINX, SMI and Traefik routers take Argo's field names; a field vigil does
    // not read (Argo's `stableIngresses`, `tcpRoutes`, ...) is reported by `typed`.
    let mut routers = 0;
    if let Some(istio) = routing.take("istio") {
        routers += 1;
        let istio = typed(istio, &format!("{path}.istio"), notes);
        out.get_or_insert_with(TrafficRouting::default).istio = istio;
    }
    if let Some(nginx) = routing.take("nginx") {
        routers += 1;
        let nginx = typed(nginx, &format!("{path}.nginx"), notes);
        out.get_or_insert_with(TrafficRouting::default).nginx = nginx;
    }
    if let Some(smi) = routing.take("smi") {
        routers += 1;
        let smi = typed(smi, &format!("{path}.smi"), notes);
        out.get_or_insert_with(TrafficRouting::default).smi = smi;
    }
    if let Some(traefik) = routing.take("traefik") {
        routers += 1;
        let traefik = typed(traefik, &format!("{path}.traefik"), notes);
        out.get_or_insert_with(TrafficRouting::default).traefik = traefik;
    }
    if routers > 1 {
        notes.unmapped(
            path,
            "several routers at once: a vigil Rollout has at most one; keep one of them",
        );
    }
    routing.finish(notes, |router| {
        Some(format!("vigil has no `{router}` router yet: it routes with Gateway API HTTPRoutes (`trafficRouting.gatewayAPI`), or by replica counts without a router"))
    });
    out
}

fn canary_step(
    value: &Value,
    path: &str,
    inputs: &Inputs<'_>,
    notes: &mut Notes,
) -> Option<CanaryStep> {
    let mut step = Fields::of(value, path, notes);
    let mut out = CanaryStep {
        set_weight: step.int("setWeight", notes),
        ..Default::default()
    };
    if let Some(pause) = step.take("pause") {
        let here = format!("{path}.pause");
        let mut fields = Fields::of(pause, &here, notes);
        let duration = fields
            .take("duration")
            .and_then(|d| duration(d, &format!("{here}.duration"), notes));
        fields.finish(notes, |_| None);
        out.pause = Some(PauseStep { duration });
    }
    if let Some(analysis) = step.take("analysis") {
        let here = format!("{path}.analysis");
        let mut fields = Fields::of(analysis, &here, notes);
        let (templates, args) = analysis_refs(&mut fields, inputs, notes);
        fields.finish(notes, analysis_field_reason);
        out.analysis = Some(AnalysisStep { templates, args });
    }
    if let Some(route) = step.take("setHeaderRoute") {
        out.set_header_route = typed(route, &format!("{path}.setHeaderRoute"), notes);
    }
    if let Some(route) = step.take("setMirrorRoute") {
        out.set_mirror_route = typed(route, &format!("{path}.setMirrorRoute"), notes);
    }
    if let Some(scale) = step.take("setCanaryScale") {
        out.set_canary_scale = typed(scale, &format!("{path}.setCanaryScale"), notes);
    }
    step.finish(notes, |key| {
        Some(match key {
            "experiment" => "vigil compares the canary with the stable revision itself (mannWhitney, sequential judges); experiments with extra ReplicaSets have no equivalent".to_owned(),
            "plugin" => "step plugins have no vigil equivalent".to_owned(),
            _ => return None,
        })
    });
    let set = [
        out.set_weight.is_some(),
        out.pause.is_some(),
        out.analysis.is_some(),
        out.set_header_route.is_some(),
        out.set_mirror_route.is_some(),
        out.set_canary_scale.is_some(),
    ];
    (set.iter().filter(|s| **s).count() == 1).then_some(out)
}

pub(super) fn analysis_field_reason(key: &str) -> Option<String> {
    Some(match key {
        "dryRun" => "a Rollout cannot put a template's metrics in dry-run in vigil: set `dryRun: true` on those metrics in the template".to_owned(),
        "analysisRunMetadata" => "vigil labels its AnalysisRuns itself; extra run metadata has no equivalent".to_owned(),
        other => return moved_field("spec.analysis", other).map(str::to_owned),
    })
}

/// The `templates` and `args` of a step or background analysis.
pub(super) fn analysis_refs(
    fields: &mut Fields<'_>,
    inputs: &Inputs<'_>,
    notes: &mut Notes,
) -> (Vec<TemplateRef>, Vec<Argument>) {
    let mut templates = Vec::new();
    for (i, template) in fields.list("templates", notes).iter().enumerate() {
        let here = fields.path(&format!("templates[{i}]"));
        let mut t = Fields::of(template, &here, notes);
        let template_name = t.string("templateName", notes).unwrap_or_default();
        let cluster_scope = t.bool("clusterScope", notes).unwrap_or_default();
        t.finish(notes, |_| None);
        templates.push(TemplateRef {
            template_name,
            cluster_scope,
        });
    }
    let mut args = Vec::new();
    for (i, arg) in fields.list("args", notes).iter().enumerate() {
        let here = fields.path(&format!("args[{i}]"));
        if let Some(arg) = rollout_argument(arg, &here, &templates, inputs, notes) {
            args.push(arg);
        }
    }
    (templates, args)
}

/// One argument a Rollout passes; `None` for a `podTemplateHashValue`, which vigil passes
/// itself as a built-in argument.
fn rollout_argument(
    value: &Value,
    path: &str,
    templates: &[TemplateRef],
    inputs: &Inputs<'_>,
    notes: &mut Notes,
) -> Option<Argument> {
    let mut fields = Fields::of(value, path, notes);
    let name = fields.string("name", notes).unwrap_or_default();
    let value = fields.take("value").map(scalar_text);
    let mut value_from = None;
    if let Some(from) = fields.take("valueFrom") {
        let here = format!("{path}.valueFrom");
        let mut from = Fields::of(from, &here, notes);
        if let Some(hash) = from.string("podTemplateHashValue", notes) {
            match revision_builtin(&hash) {
                Some(builtin) => {
                    for template in templates {
                        let known = inputs.argo_templates.iter().any(|(n, c)| {
                            *n == template.template_name && *c == template.cluster_scope
                        });
                        if !known {
                            notes.unmapped(
                                format!("{here}.podTemplateHashValue"),
                                format!("vigil passes the revision itself as the built-in argument `{builtin}`, but template `{}` is not among the inputs: in it, drop the argument `{name}` and write `{{{{args.{builtin}}}}}` for `{{{{args.{name}}}}}`", template.template_name),
                            );
                        }
                    }
                }
                None => notes.unmapped(
                    format!("{here}.podTemplateHashValue"),
                    format!("`{hash}` is neither Latest nor Stable"),
                ),
            }
            from.finish(notes, |_| None);
            fields.finish(notes, |_| None);
            return None;
        }
        value_from = argument_value_from(&mut from, notes);
        from.finish(notes, |_| None);
    }
    fields.finish(notes, |_| None);
    Some(Argument {
        name,
        value,
        value_from,
    })
}

fn argument_value_from(from: &mut Fields<'_>, notes: &mut Notes) -> Option<ArgumentValueFrom> {
    let secret_key_ref = from
        .take("secretKeyRef")
        .and_then(|s| secret_key(s, &from.path("secretKeyRef"), notes));
    let field_ref = from.take("fieldRef").and_then(|f| {
        f.get("fieldPath")
            .and_then(Value::as_str)
            .map(|p| FieldSelector {
                field_path: p.to_owned(),
            })
    });
    (secret_key_ref.is_some() || field_ref.is_some()).then_some(ArgumentValueFrom {
        secret_key_ref,
        field_ref,
    })
}

fn secret_key(value: &Value, path: &str, notes: &mut Notes) -> Option<SecretKeySelector> {
    let mut fields = Fields::of(value, path, notes);
    let name = fields.string("name", notes);
    let key = fields.string("key", notes);
    fields.finish(notes, |_| None);
    match (name, key) {
        (Some(name), Some(key)) => Some(SecretKeySelector { name, key }),
        _ => {
            notes.unmapped(path, "a Secret reference needs `name` and `key`");
            None
        }
    }
}

/// A scalar (string, number, boolean) as the text vigil's argument values are.
fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Argo's durations: an integer is seconds (`timeout: 40`, `pause: {duration: 30}`), a string
/// is Go's `time.ParseDuration` (`1.5h`, `300ms`); vigil wants whole milliseconds with a unit.
pub(super) fn duration(value: &Value, path: &str, notes: &mut Notes) -> Option<String> {
    let text = match value {
        Value::Number(n) => match integer_seconds(n) {
            Some(text) => return Some(text),
            None => {
                notes.unmapped(
                    path,
                    format!("{}: expected a whole number of seconds", describe(value)),
                );
                return None;
            }
        },
        Value::String(s) => s,
        other => {
            notes.unmapped(
                path,
                format!("expected a duration, found {}", describe(other)),
            );
            return None;
        }
    };
    if parse_duration(text).is_ok() {
        return Some(text.clone());
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(format!("{seconds}s"));
    }
    match go_duration_ms(text) {
        Some(ms) => Some(format_duration(std::time::Duration::from_millis(ms))),
        None => {
            notes.unmapped(path, format!("`{text}` is not a duration vigil can write in whole milliseconds (e.g. 30s, 5m, 1h30m)"));
            None
        }
    }
}

/// Go's duration syntax (decimal numbers, units ns us µs ms s m h) in whole milliseconds;
/// `None` when it is not one or is not a whole number of milliseconds.
fn go_duration_ms(text: &str) -> Option<u64> {
    let mut rest = text;
    let mut total_ns: u128 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || fraction.len() > 9 {
            return None;
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        let scale = 10u128.pow(u32::try_from(fraction.len()).ok()?);
        let fraction_value: u128 = if fraction.is_empty() {
            0
        } else {
            fraction.parse().ok()?
        };
        let part = whole
            .checked_mul(unit_ns)?
            .checked_add(fraction_value.checked_mul(unit_ns)? / scale)?;
        total_ns = total_ns.checked_add(part)?;
        rest = next;
    }
    total_ns
        .is_multiple_of(1_000_000)
        .then(|| u64::try_from(total_ns / 1_000_000).ok())
        .flatten()
}

/// An Argo AnalysisTemplate or ClusterAnalysisTemplate as vigil's.
pub(super) fn template(
    document: &Value,
    cluster: bool,
    inputs: &Inputs<'_>,
    notes: &mut Notes,
) -> Option<Converted> {
    let mut root = Fields::of(document, "", notes);
    root.ignore("apiVersion");
    root.ignore("kind");
    root.ignore("metadata");
    root.ignore("status");
    let spec_value = root.take("spec").unwrap_or(&Value::Null);
    root.finish(notes, |_| None);
    let metadata = carry_metadata(document);
    let name = metadata.name.clone().unwrap_or_default();
    let renames = inputs
        .revision_args
        .get(&(name, cluster))
        .cloned()
        .unwrap_or_default();
    let spec = template_spec(spec_value, &renames, notes);
    if spec.metrics.is_empty() {
        notes.unmapped(
            "spec.metrics",
            "no metric could be converted: the template is not written",
        );
        return None;
    }
    Some(if cluster {
        Converted::ClusterAnalysisTemplate(Box::new(ClusterAnalysisTemplate {
            metadata,
            spec: ClusterAnalysisTemplateSpec { template: spec },
            status: None,
        }))
    } else {
        Converted::AnalysisTemplate(Box::new(AnalysisTemplate {
            metadata,
            spec,
            status: None,
        }))
    })
}

fn template_spec(
    value: &Value,
    renames: &BTreeMap<String, &'static str>,
    notes: &mut Notes,
) -> AnalysisTemplateSpec {
    let mut spec = Fields::of(value, "spec", notes);
    let mut args = Vec::new();
    for (i, arg) in spec.list("args", notes).iter().enumerate() {
        let path = format!("spec.args[{i}]");
        let mut fields = Fields::of(arg, &path, notes);
        let name = fields.string("name", notes).unwrap_or_default();
        let value = fields.take("value").map(scalar_text);
        let value_from = match fields.take("valueFrom") {
            Some(from) => {
                let mut from = Fields::of(from, &format!("{path}.valueFrom"), notes);
                let out = argument_value_from(&mut from, notes);
                from.finish(notes, |_| None);
                out
            }
            None => None,
        };
        fields.finish(notes, |_| None);
        match renames.get(&name) {
            Some(builtin) => args.push(Argument {
                name: (*builtin).to_owned(),
                value: None,
                value_from: None,
            }),
            None => args.push(Argument {
                name,
                value,
                value_from,
            }),
        }
    }
    let mut metrics = Vec::new();
    for (i, metric) in spec.list("metrics", notes).iter().enumerate() {
        if let Some(metric) =
            self::metric(metric, &format!("spec.metrics[{i}]"), &args, renames, notes)
        {
            metrics.push(metric);
        }
    }
    for (i, dry_run) in spec.list("dryRun", notes).iter().enumerate() {
        let path = format!("spec.dryRun[{i}].metricName");
        let pattern = dry_run
            .get("metricName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let all = matches!(pattern, "*" | ".*");
        let mut matched = false;
        for metric in metrics.iter_mut().filter(|m| all || m.name == pattern) {
            metric.dry_run = true;
            matched = true;
        }
        if !matched {
            notes.unmapped(path, format!("`{pattern}` names no metric of the template (vigil's `dryRun: true` goes on each metric; Argo's regular expressions are not read)"));
        }
    }
    // Secret arguments consumed by `auth` are no longer referenced by a query.
    args.retain(|arg| {
        arg.value_from
            .as_ref()
            .and_then(|f| f.secret_key_ref.as_ref())
            .is_none()
            || metrics.iter().any(|m| uses_argument(m, &arg.name))
    });
    spec.finish(notes, |key| moved_field("spec", key).map(str::to_owned).or_else(|| {
        (key == "templates").then(|| "templates that include other templates: list each template in the Rollout's analysis instead".to_owned())
    }));
    AnalysisTemplateSpec {
        args,
        metrics,
        scoring: None,
    }
}

fn uses_argument(metric: &Metric, name: &str) -> bool {
    let Some(prometheus) = &metric.provider.prometheus else {
        return false;
    };
    let mentions = |text: &str| {
        crate::analysis::template::placeholders(text)
            .is_ok_and(|refs| refs.iter().any(|r| r.name == name))
    };
    prometheus.address.as_deref().is_some_and(mentions)
        || prometheus.query.as_deref().is_some_and(mentions)
}

fn metric(
    value: &Value,
    path: &str,
    args: &[Argument],
    renames: &BTreeMap<String, &'static str>,
    notes: &mut Notes,
) -> Option<Metric> {
    let mut fields = Fields::of(value, path, notes);
    let mut out = Metric {
        name: fields.string("name", notes).unwrap_or_default(),
        failure_limit: None,
        inconclusive_limit: fields.int("inconclusiveLimit", notes),
        consecutive_error_limit: fields.int("consecutiveErrorLimit", notes),
        ..Default::default()
    };
    for (key, slot) in [
        ("interval", &mut out.interval),
        ("initialDelay", &mut out.initial_delay),
    ] {
        if let Some(value) = fields.take(key) {
            *slot = duration(value, &format!("{path}.{key}"), notes);
        }
    }
    match fields.take("count") {
        Some(Value::Number(n)) if n.as_i64() == Some(0) => {}
        Some(Value::Number(n)) => out.count = n.as_i64().and_then(|n| i32::try_from(n).ok()),
        Some(Value::String(s)) => match s.parse::<i32>() {
            Ok(n) if n != 0 => out.count = Some(n),
            Ok(_) => {}
            Err(_) => notes.unmapped(
                format!("{path}.count"),
                format!("`{s}`: vigil's count is a number, not an argument"),
            ),
        },
        Some(other) => notes.unmapped(
            format!("{path}.count"),
            format!("expected a number, found {}", describe(other)),
        ),
        None => {}
    }
    match fields.take("failureLimit") {
        Some(Value::Number(n)) if n.as_i64() == Some(-1) => notes.unmapped(
            format!("{path}.failureLimit"),
            "-1 (never fail): vigil has no unlimited failures; use `dryRun: true` to measure without deciding",
        ),
        Some(Value::Number(n)) => out.failure_limit = n.as_i64().and_then(|n| i32::try_from(n).ok()),
        Some(Value::String(s)) => match s.parse::<i32>() {
            Ok(n) => out.failure_limit = Some(n),
            Err(_) => notes.unmapped(format!("{path}.failureLimit"), format!("`{s}`: vigil's failureLimit is a number, not an argument")),
        },
        Some(other) => notes.unmapped(format!("{path}.failureLimit"), format!("expected a number, found {}", describe(other))),
        None => {}
    }
    let mut untranslated = false;
    for (key, field) in [
        ("successCondition", "successCondition"),
        ("failureCondition", "failureCondition"),
    ] {
        let Some(source) = fields.string(key, notes) else {
            continue;
        };
        match translate(field, &source) {
            Ok(translated) => {
                if let Some(policy) = translated.no_data {
                    if out.no_data.is_some_and(|earlier| earlier != policy) {
                        notes.unmapped(
                            format!("{path}.{key}"),
                            "its empty-result guard contradicts the other condition's: vigil has one `noData` policy per metric; the first is kept",
                        );
                    } else {
                        out.no_data = Some(policy);
                    }
                }
                if key == "successCondition" {
                    out.success_condition = Some(translated.condition);
                } else {
                    out.failure_condition = Some(translated.condition);
                }
            }
            Err(error) => {
                untranslated = true;
                notes.unmapped(
                    format!("{path}.{key}"),
                    format!("{error}; the metric is left out"),
                );
            }
        }
    }
    let job = value.pointer("/provider/job");
    if out.success_condition.is_none()
        && out.failure_condition.is_none()
        && !untranslated
        && job.is_none()
    {
        notes.unmapped(path, "no successCondition or failureCondition: Argo counts every such measurement Successful, vigil needs a judge (a condition over `result`); the metric is left out");
        untranslated = true;
    }
    let provider = fields.take("provider");
    fields.finish(notes, |key| {
        moved_field("spec.metrics", key).map(str::to_owned)
    });
    if untranslated {
        return None;
    }
    if let Some(job) = job {
        // Argo's `job` provider has vigil's shape: metadata and a batch/v1 JobSpec.
        let here = format!("{path}.provider.job");
        out.provider = MetricProvider {
            job: Some(typed::<JobProvider>(job, &here, notes)?),
            prometheus: None,
            web: None,
        };
        if out.success_condition.take().is_some() | out.failure_condition.take().is_some() {
            notes.unmapped(path, "a job metric's successCondition/failureCondition: vigil judges a job metric by how its Job ends; the conditions are left out");
        }
        let other: Vec<&String> = value
            .get("provider")
            .and_then(Value::as_object)
            .map(|p| p.keys().filter(|k| *k != "job").collect())
            .unwrap_or_default();
        if !other.is_empty() {
            notes.unmapped(format!("{path}.provider"), format!("providers besides `job` ({other:?}): a metric has one provider; they are left out"));
        }
        return Some(out);
    }
    let provider = provider.unwrap_or(&Value::Null);
    let provider_path = format!("{path}.provider");
    out.provider = if provider.get("web").is_some() {
        MetricProvider {
            prometheus: None,
            job: None,
            web: Some(web_provider(provider, &provider_path, renames, notes)?),
        }
    } else {
        MetricProvider {
            prometheus: prometheus_provider(provider, &provider_path, args, renames, notes)?,
            job: None,
            web: None,
        }
    };
    Some(out)
}

fn prometheus_provider(
    value: &Value,
    path: &str,
    args: &[Argument],
    renames: &BTreeMap<String, &'static str>,
    notes: &mut Notes,
) -> Option<Option<PrometheusProvider>> {
    let mut provider = Fields::of(value, path, notes);
    let Some(prometheus) = provider.take("prometheus") else {
        provider.finish(notes, |key| Some(format!("the `{key}` provider has no vigil equivalent (vigil queries Prometheus and compatible servers, and JSON APIs with `web`): the metric is left out")));
        return None;
    };
    provider.finish(notes, |_| None);
    let here = format!("{path}.prometheus");
    let mut fields = Fields::of(prometheus, &here, notes);
    // Without one, the controller's default Prometheus (`vigil controller --prometheus`)
    // applies, as Argo's ARGO_ROLLOUTS_PROMETHEUS_ADDRESS did.
    let address = fields.string("address", notes);
    let query = fields
        .string("query", notes)
        .map(|q| rename_placeholders(&q, renames));
    if let Some(query) = &query
        && ["rollouts_pod_template_hash", "rollouts-pod-template-hash"]
            .iter()
            .any(|label| query.contains(label))
    {
        notes.unmapped(format!("{here}.query"), "selects by Argo's pod label `rollouts-pod-template-hash`: vigil's pods carry their revision as `vigil.dev/revision` instead; change the label your scrape config copies into the series");
    }
    let timeout = fields
        .take("timeout")
        .and_then(|t| duration(t, &format!("{here}.timeout"), notes));
    let mut auth = PrometheusAuth::default();
    for (i, header) in fields.list("headers", notes).iter().enumerate() {
        let at = format!("{here}.headers[{i}]");
        let mut h = Fields::of(header, &at, notes);
        let name = h.string("key", notes).unwrap_or_default();
        let value = h.string("value", notes).unwrap_or_default();
        h.finish(notes, |_| None);
        let (value, value_from) = match secret_argument(&value, args) {
            Some(secret) => (None, Some(secret)),
            None if value.contains("{{") => {
                // vigil sends a header value as written: a placeholder inside it would reach
                // the server as `{{args.…}}`.
                notes.unmapped(
                    format!("{at}.value"),
                    "a placeholder inside the value: vigil sends header values as written; keep the whole value in a Secret (`auth.headers[].valueFrom.secretKeyRef`), or for `Bearer {{args.TOKEN}}` use `auth.bearerToken.secretKeyRef`; the header is left out",
                );
                continue;
            }
            None => (Some(value), None),
        };
        auth.headers.push(HeaderSource {
            name,
            value,
            value_from,
        });
    }
    if let Some(authentication) = fields.take("authentication") {
        let at = format!("{here}.authentication");
        let mut a = Fields::of(authentication, &at, notes);
        if let Some(basic) = a.take("basicAuth") {
            auth.basic = basic_auth(basic, &format!("{at}.basicAuth"), args, notes);
        }
        a.finish(notes, |key| Some(format!("`{key}` authentication has no vigil equivalent: vigil authenticates with `auth.bearerToken`, `auth.basic` or `auth.headers`")));
    }
    if let Some(ca) = fields.string("caCert", notes) {
        match secret_argument(&ca, args) {
            Some(secret) => auth.ca_bundle = Some(secret),
            None => notes.unmapped(format!("{here}.caCert"), "an inline certificate: vigil reads the CA bundle from a Secret or a file (`auth.caBundle`)"),
        }
    }
    if fields.bool("insecure", notes) == Some(true) {
        notes.unmapped(
            format!("{here}.insecure"),
            moved_field("provider.prometheus", "insecure").unwrap_or_default(),
        );
    }
    fields.finish(notes, |key| {
        moved_field("provider.prometheus", key).map(str::to_owned)
    });
    let auth = (auth != PrometheusAuth::default()).then_some(auth);
    Some(Some(PrometheusProvider {
        address,
        query,
        timeout,
        auth,
        ..Default::default()
    }))
}

/// Argo's `web` provider: the same fields in vigil, arguments renamed. Argo's `authentication`
/// (OAuth2, SigV4) has no equivalent: the metric is left out, since it would fail unauthorized.
fn web_provider(
    provider: &Value,
    path: &str,
    renames: &BTreeMap<String, &'static str>,
    notes: &mut Notes,
) -> Option<WebProvider> {
    let mut outer = Fields::of(provider, path, notes);
    let web = outer.take("web").unwrap_or(&Value::Null);
    outer.finish(notes, |key| {
        Some(format!(
            "a second provider `{key}` beside `web`: a vigil metric has exactly one"
        ))
    });
    let here = format!("{path}.web");
    let mut fields = Fields::of(web, &here, notes);
    let rename = |text: String| rename_placeholders(&text, renames);
    let mut out = WebProvider {
        url: fields.string("url", notes).map(rename).unwrap_or_default(),
        body: fields.string("body", notes).map(rename),
        json_path: fields.string("jsonPath", notes),
        insecure: fields.bool("insecure", notes).unwrap_or(false),
        ..WebProvider::default()
    };
    out.method = match fields.string("method", notes).as_deref() {
        None => None,
        Some("GET") => Some(WebMethod::Get),
        Some("POST") => Some(WebMethod::Post),
        Some("PUT") => Some(WebMethod::Put),
        Some(other) => {
            notes.unmapped(
                format!("{here}.method"),
                format!("`{other}`: vigil sends GET, POST or PUT; the metric is left out"),
            );
            return None;
        }
    };
    if let Some(json) = fields.take("jsonBody") {
        let mut json = json.clone();
        rename_json_placeholders(&mut json, renames);
        out.json_body = Some(json);
    }
    out.timeout_seconds = fields.take("timeoutSeconds").and_then(|t| match t {
        Value::Number(n) => n.as_i64(),
        other => {
            notes.unmapped(
                format!("{here}.timeoutSeconds"),
                format!("expected a number, found {}", describe(other)),
            );
            None
        }
    });
    for (i, header) in fields.list("headers", notes).iter().enumerate() {
        let at = format!("{here}.headers[{i}]");
        let mut h = Fields::of(header, &at, notes);
        let key = h.string("key", notes).unwrap_or_default();
        let value = h.string("value", notes).map(rename).unwrap_or_default();
        h.finish(notes, |_| None);
        out.headers.push(WebHeader { key, value });
    }
    if fields.take("authentication").is_some() {
        notes.unmapped(
            format!("{here}.authentication"),
            "OAuth2 and SigV4 have no vigil equivalent: vigil authenticates with `auth.bearerToken`, `auth.basic` or `auth.headers` from a Secret; the metric is left out",
        );
        return None;
    }
    fields.finish(notes, |_| None);
    Some(out)
}

/// [`rename_placeholders`] in every string of a JSON body.
fn rename_json_placeholders(value: &mut Value, renames: &BTreeMap<String, &'static str>) {
    match value {
        Value::String(text) => *text = rename_placeholders(text, renames),
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| rename_json_placeholders(item, renames)),
        Value::Object(fields) => fields
            .values_mut()
            .for_each(|field| rename_json_placeholders(field, renames)),
        _ => {}
    }
}

fn basic_auth(
    value: &Value,
    path: &str,
    args: &[Argument],
    notes: &mut Notes,
) -> Option<BasicAuth> {
    let mut fields = Fields::of(value, path, notes);
    let username = fields.string("username", notes).unwrap_or_default();
    let password = fields.string("password", notes).unwrap_or_default();
    fields.finish(notes, |_| None);
    if secret_argument(&username, args).is_some() {
        notes.unmapped(format!("{path}.username"), "read from a Secret: vigil's basic-auth user name is not secret; write it as text (`auth.basic.username`)");
        return None;
    }
    match secret_argument(&password, args) {
        Some(password) => Some(BasicAuth { username, password }),
        None => {
            notes.unmapped(format!("{path}.password"), "not a `{{args.NAME}}` read from a Secret: vigil reads passwords from a Secret (`auth.basic.password.secretKeyRef`)");
            None
        }
    }
}

/// The Secret behind `text` when it is exactly one `{{args.NAME}}` whose argument is read
/// from a Secret.
fn secret_argument(text: &str, args: &[Argument]) -> Option<SecretSource> {
    let refs = crate::analysis::template::placeholders(text).ok()?;
    let [only] = refs.as_slice() else { return None };
    if only.start != 0 || only.end != text.len() {
        return None;
    }
    let arg = args.iter().find(|a| a.name == only.name)?;
    let secret = arg.value_from.as_ref()?.secret_key_ref.clone()?;
    Some(SecretSource {
        secret_key_ref: Some(secret),
        file: None,
    })
}

/// `{{args.OLD}}` as `{{args.NEW}}` for each renamed argument.
fn rename_placeholders(query: &str, renames: &BTreeMap<String, &'static str>) -> String {
    let Ok(refs) = crate::analysis::template::placeholders(query) else {
        return query.to_owned();
    };
    let mut out = String::with_capacity(query.len());
    let mut last = 0;
    for r in refs {
        out.push_str(&query[last..r.start]);
        match renames.get(&r.name) {
            Some(new) => out.push_str(&format!("{{{{args.{new}}}}}")),
            None => out.push_str(&query[r.start..r.end]),
        }
        last = r.end;
    }
    out.push_str(&query[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_become_whole_milliseconds() {
        assert_eq!(go_duration_ms("1.5h"), Some(5_400_000));
        assert_eq!(go_duration_ms("300ms"), Some(300));
        assert_eq!(go_duration_ms("1m30s"), Some(90_000));
        assert_eq!(go_duration_ms("1500us"), None);
        assert_eq!(go_duration_ms("5d"), None);
        assert_eq!(go_duration_ms(""), None);
    }
}

//! Flagger's `Canary` (with its `MetricTemplate`s and the Deployment it targets) into a vigil
//! Rollout and the AnalysisTemplate that judges it.
//!
//! Flagger's schedule is implicit: every `interval` it checks the metrics and moves the weight
//! by `stepWeight` up to `maxWeight`, and rolls back after `threshold` failed checks. vigil
//! writes it out: `setWeight` and `pause: {duration: interval}` steps, and a background
//! analysis measuring every `interval` that fails after `threshold` Failed measurements.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

use crate::api::{
    AnalysisTemplate, AnalysisTemplateSpec, Argument, BackgroundAnalysis, CanaryStep,
    CanaryStrategy, GatewayApiRouting, Metric, MetricProvider, PauseStep, PrometheusProvider,
    Rollout, RolloutSpec, RolloutStrategy, ScaleDown, TemplateRef, TrafficRouting, Webhook,
    WorkloadRef,
};

use super::argo::duration;
use super::fields::Fields;
use super::traps::{flagger_variable, workload_name_message, workload_name_selectors};
use super::{Inputs, Notes, Source, carry_metadata, namespace_and_name};

/// Most steps a Canary's schedule may become (`stepWeights` is a list the user writes); a
/// weight is a percentage, so `stepWeight` alone never yields more.
pub const MAX_GENERATED_STEPS: usize = 100;

/// Flagger's analysis interval when the Canary leaves it out.
const DEFAULT_INTERVAL: &str = "1m";

/// Flagger's metric window (`{{ interval }}`) when a metric leaves it out.
const DEFAULT_METRIC_WINDOW: &str = "1m";

/// vigil's shipped templates that replace Flagger's built-in metrics, by mesh.
const ISTIO_ERROR_RATE: &str = include_str!("../../analysis-templates/istio-error-rate.yaml");
const ISTIO_LATENCY: &str = include_str!("../../analysis-templates/istio-latency.yaml");
const NGINX_ERROR_RATE: &str = include_str!("../../analysis-templates/nginx-error-rate.yaml");
const NGINX_LATENCY: &str = include_str!("../../analysis-templates/nginx-latency.yaml");

/// What the Canary names, for the queries: the workload, the Services, the ingress.
struct Names {
    target: String,
    service: String,
    ingress: Option<String>,
}

/// A Canary as a Rollout and its AnalysisTemplate (none without a metric); `None` when it
/// cannot be a Rollout.
pub(super) fn canary(
    document: &Value,
    inputs: &mut Inputs<'_>,
    notes: &mut Notes,
) -> Option<(Rollout, Option<AnalysisTemplate>)> {
    let mut root = Fields::of(document, "", notes);
    for key in ["apiVersion", "kind", "metadata", "status"] {
        root.ignore(key);
    }
    let spec_value = root.take("spec").unwrap_or(&Value::Null);
    root.finish(notes, |_| None);
    let (namespace, canary_name) = namespace_and_name(document);
    let mut spec = Fields::of(spec_value, "spec", notes);
    let target = target(&mut spec, notes)?;
    let provider = spec.string("provider", notes);
    let metrics_server = spec.string("metricsServer", notes);
    let service_name = spec
        .take("service")
        .and_then(|s| s.get("name"))
        .and_then(Value::as_str)
        .unwrap_or(&target)
        .to_owned();
    notes.unmapped(
        "spec.service",
        format!(
            "vigil generates no Services or routes: it points the selectors of `stableService` ({service_name}-primary) and `canaryService` ({service_name}-canary), which must exist (and sets the weights of the route that sends to both); Flagger's are deleted with the Canary (owner references), so apply copies without ownerReferences first"
        ),
    );
    let traffic_routing = routing(provider.as_deref(), &service_name, notes);
    let ingress = spec
        .take("ingressRef")
        .and_then(|r| r.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let names = Names {
        target: target.clone(),
        service: service_name.clone(),
        ingress,
    };
    let progress_deadline_seconds = spec.int("progressDeadlineSeconds", notes);
    if spec.bool("skipAnalysis", notes) == Some(true) {
        notes.unmapped(
            "spec.skipAnalysis",
            "true: promote with `vigil promote --full` instead of skipping analysis in the spec",
        );
    }
    let analysis = spec
        .take("analysis")
        .or_else(|| spec.take("canaryAnalysis"))
        .unwrap_or(&Value::Null);
    spec.finish(notes, |key| {
        Some(match key {
            "autoscalerRef" => "vigil exposes the scale subresource: point the HorizontalPodAutoscaler at the Rollout (`scaleTargetRef: {apiVersion: vigil.dev/v1alpha1, kind: Rollout}`)".to_owned(),
            "revertOnDeletion" | "suspend" => format!("`{key}` has no vigil equivalent (`vigil pause` holds a release)"),
            _ => return None,
        })
    });
    let template_name = format!("{canary_name}-analysis");
    let (schedule, webhooks, analysis_spec) = schedule_and_metrics(
        analysis,
        &names,
        &namespace,
        provider.as_deref(),
        metrics_server.as_deref(),
        inputs,
        notes,
    );
    let mut rollout_spec = RolloutSpec {
        progress_deadline_seconds,
        strategy: RolloutStrategy {
            canary: CanaryStrategy {
                traffic_routing,
                stable_service: Some(format!("{service_name}-primary")),
                canary_service: Some(format!("{service_name}-canary")),
                steps: schedule,
                webhooks,
                analysis: (!analysis_spec.metrics.is_empty()).then(|| BackgroundAnalysis {
                    templates: vec![TemplateRef {
                        template_name: template_name.clone(),
                        cluster_scope: false,
                    }],
                    args: Vec::new(),
                    starting_step: None,
                }),
                ..Default::default()
            },
            ..Default::default()
        },
        ..Default::default()
    };
    adopt_deployment(&mut rollout_spec, &namespace, &target, inputs, notes);
    let mut template_metadata = carry_metadata(document);
    template_metadata.name = Some(template_name);
    template_metadata.annotations = None;
    Some((
        Rollout {
            metadata: carry_metadata(document),
            spec: rollout_spec,
            status: None,
        },
        // Without a metric there is nothing to judge: no template, no background analysis.
        (!analysis_spec.metrics.is_empty()).then_some(AnalysisTemplate {
            metadata: template_metadata,
            spec: analysis_spec,
            status: None,
        }),
    ))
}

/// The router: Flagger's Gateway API provider keeps its weights in the HTTPRoute named after
/// the apex Service, with backendRefs to `<name>-primary` and `<name>-canary`, exactly what
/// vigil's `gatewayAPI` router sets; other providers are reported.
fn routing(
    provider: Option<&str>,
    service_name: &str,
    notes: &mut Notes,
) -> Option<TrafficRouting> {
    if provider.is_some_and(|p| p == "gatewayapi" || p.starts_with("gatewayapi:")) {
        return Some(TrafficRouting {
            gateway_api: Some(GatewayApiRouting {
                http_route: service_name.to_owned(),
            }),
            ..Default::default()
        });
    }
    notes.unmapped(
        "spec.provider",
        format!(
            "Flagger routed with {}: vigil routes with a Gateway API HTTPRoute (`spec.strategy.canary.trafficRouting.gatewayAPI.httpRoute`, the route with backendRefs to both Services), or by replica counts without a router; add the router",
            provider.map_or("its controller's -mesh-provider".to_owned(), |p| format!("`{p}`"))
        ),
    );
    None
}

/// The name of the Deployment the Canary targets; `None` (reported) for other kinds.
fn target(spec: &mut Fields<'_>, notes: &mut Notes) -> Option<String> {
    let Some(reference) = spec.take("targetRef") else {
        notes.unmapped("spec.targetRef", "missing: the Canary names no workload");
        return None;
    };
    let kind = reference
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("Deployment");
    let name = reference
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind != "Deployment" {
        notes.unmapped(
            "spec.targetRef.kind",
            format!(
                "`{kind}`: vigil releases pod templates (a Deployment's); a {kind} is not converted"
            ),
        );
        return None;
    }
    Some(name.to_owned())
}

/// Takes the pod template, selector and replicas from the targeted Deployment when it is among
/// the inputs (it is then not written out: the Rollout replaces it).
fn adopt_deployment(
    spec: &mut RolloutSpec,
    namespace: &str,
    target: &str,
    inputs: &mut Inputs<'_>,
    notes: &mut Notes,
) {
    let key = (namespace.to_owned(), target.to_owned());
    let found = inputs
        .deployments
        .get(&key)
        .or_else(|| {
            inputs
                .deployments
                .iter()
                .find(|((_, n), _)| n == target)
                .map(|(_, d)| d)
        })
        .copied();
    let Some(deployment) = found else {
        // Not among the inputs: adopt it where it runs. Flagger scaled it to 0 already (its
        // primary served), so vigil scaling it down as its own pods get ready costs nothing.
        spec.workload_ref = Some(WorkloadRef {
            api_version: "apps/v1".to_owned(),
            kind: "Deployment".to_owned(),
            name: target.to_owned(),
            scale_down: Some(ScaleDown::Progressively),
        });
        spec.selector = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".to_owned(), target.to_owned())])),
            ..Default::default()
        };
        notes.unmapped(
            "spec.targetRef",
            format!("Deployment `{target}` is not among the inputs: the Rollout adopts it through workloadRef, with the selector `app: {target}` (Flagger's default selector label), which must match its pods' labels; pass the Deployment's YAML too to have its own selector and pod template"),
        );
        return;
    };
    inputs.adopted.push(namespace_and_name(deployment));
    let from = |pointer: &str| deployment.pointer(pointer).cloned();
    spec.replicas = from("/spec/replicas")
        .and_then(|r| r.as_i64())
        .and_then(|r| i32::try_from(r).ok());
    if let Some(selector) = from("/spec/selector").and_then(|s| serde_json::from_value(s).ok()) {
        spec.selector = selector;
    }
    match from("/spec/template").map(serde_json::from_value) {
        Some(Ok(template)) => spec.template = template,
        _ => notes.unmapped(
            "spec.targetRef",
            format!("Deployment `{target}` has no pod template vigil can read"),
        ),
    }
}

/// The steps and the metrics of `spec.analysis`.
fn schedule_and_metrics(
    analysis: &Value,
    names: &Names,
    namespace: &str,
    provider: Option<&str>,
    metrics_server: Option<&str>,
    inputs: &Inputs<'_>,
    notes: &mut Notes,
) -> (Vec<CanaryStep>, Vec<Webhook>, AnalysisTemplateSpec) {
    let mut fields = Fields::of(analysis, "spec.analysis", notes);
    let interval = fields
        .take("interval")
        .and_then(|i| duration(i, "spec.analysis.interval", notes))
        .unwrap_or_else(|| DEFAULT_INTERVAL.to_owned());
    let threshold = fields
        .int("threshold", notes)
        .filter(|t| *t > 0)
        .unwrap_or(1);
    let max_weight = fields.int("maxWeight", notes).unwrap_or(100);
    let step_weight = fields.int("stepWeight", notes);
    let step_weights: Vec<i32> = fields
        .list("stepWeights", notes)
        .iter()
        .filter_map(|w| w.as_i64().and_then(|w| i32::try_from(w).ok()))
        .collect();
    let weights = weights(step_weight, &step_weights, max_weight, notes);
    let mut steps = Vec::new();
    for weight in weights {
        steps.push(CanaryStep {
            set_weight: Some(weight),
            ..Default::default()
        });
        steps.push(CanaryStep {
            pause: Some(PauseStep {
                duration: Some(interval.clone()),
            }),
            ..Default::default()
        });
    }
    let webhooks = fields
        .list("webhooks", notes)
        .iter()
        .enumerate()
        .filter_map(|(i, hook)| super::flagger_webhooks::convert_webhook(i, hook, notes))
        .collect();
    let mut metrics = Vec::new();
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    for (i, metric) in fields.list("metrics", notes).iter().enumerate() {
        let path = format!("spec.analysis.metrics[{i}]");
        let context = MetricContext {
            names,
            namespace,
            provider,
            metrics_server,
            inputs,
            interval: &interval,
            threshold,
        };
        if let Some(metric) = canary_metric(metric, &path, &context, &mut args, notes) {
            metrics.push(metric);
        }
    }
    fields.finish(notes, |key| {
        Some(match key {
            "iterations" | "match" | "mirror" | "mirrorWeight" => "A/B testing, blue/green and mirroring have no vigil equivalent; vigil releases canaries by weight".to_owned(),
            "stepWeightPromotion" => "vigil moves all traffic to the canary at once when it is promoted".to_owned(),
            "alerts" => "vigil sends no alerts; watch its Kubernetes events and /metrics".to_owned(),
            "sessionAffinity" => "session affinity has no vigil equivalent".to_owned(),
            "primaryReadyThreshold" | "canaryReadyThreshold" => "vigil waits for all of a revision's pods to be ready".to_owned(),
            _ => return None,
        })
    });
    let mut declared: Vec<Argument> = vec![Argument {
        name: "namespace".to_owned(),
        value: None,
        value_from: None,
    }];
    declared.extend(args.into_iter().map(|(name, value)| Argument {
        name,
        value: Some(value),
        value_from: None,
    }));
    let used: Vec<Argument> = declared
        .into_iter()
        .filter(|arg| {
            metrics.iter().any(|m: &Metric| {
                m.provider
                    .prometheus
                    .as_ref()
                    .and_then(|p| p.query.as_deref())
                    .is_some_and(|q| {
                        crate::analysis::template::placeholders(q)
                            .is_ok_and(|refs| refs.iter().any(|r| r.name == arg.name))
                    })
            })
        })
        .collect();
    (
        steps,
        webhooks,
        AnalysisTemplateSpec {
            args: used,
            metrics,
            scoring: None,
        },
    )
}

/// The canary weights of the schedule: `stepWeights`, else `stepWeight` up to `maxWeight`.
fn weights(
    step_weight: Option<i32>,
    step_weights: &[i32],
    max_weight: i32,
    notes: &mut Notes,
) -> Vec<i32> {
    if !step_weights.is_empty() {
        if step_weights.len() > MAX_GENERATED_STEPS {
            notes.unmapped(
                "spec.analysis.stepWeights",
                format!(
                    "{} weights: at most {MAX_GENERATED_STEPS} (MAX_GENERATED_STEPS) are converted",
                    step_weights.len()
                ),
            );
        }
        return step_weights
            .iter()
            .copied()
            .filter(|w| (0..=100).contains(w))
            .take(MAX_GENERATED_STEPS)
            .collect();
    }
    let max_weight = max_weight.clamp(0, 100);
    match step_weight {
        Some(step) if step > 0 => {
            let mut out = Vec::new();
            let mut weight = step;
            while weight < max_weight && out.len() < MAX_GENERATED_STEPS {
                out.push(weight);
                weight = weight.saturating_add(step);
            }
            out.push(max_weight);
            out
        }
        Some(step) => {
            notes.unmapped(
                "spec.analysis.stepWeight",
                format!("{step}: a step weight must be above 0"),
            );
            Vec::new()
        }
        None => {
            notes.unmapped("spec.analysis", "neither stepWeight nor stepWeights: vigil needs the weights of the schedule (A/B and blue/green analyses are not converted)");
            Vec::new()
        }
    }
}

/// What every metric of one Canary shares.
struct MetricContext<'a> {
    names: &'a Names,
    namespace: &'a str,
    provider: Option<&'a str>,
    metrics_server: Option<&'a str>,
    inputs: &'a Inputs<'a>,
    interval: &'a str,
    threshold: i32,
}

fn canary_metric(
    value: &Value,
    path: &str,
    context: &MetricContext<'_>,
    args: &mut BTreeMap<String, String>,
    notes: &mut Notes,
) -> Option<Metric> {
    let mut fields = Fields::of(value, path, notes);
    let name = fields.string("name", notes).unwrap_or_default();
    let window = fields
        .take("interval")
        .and_then(|i| duration(i, &format!("{path}.interval"), notes))
        .unwrap_or_else(|| DEFAULT_METRIC_WINDOW.to_owned());
    let range = fields.take("thresholdRange");
    let legacy_threshold = fields.take("threshold").and_then(Value::as_f64);
    let template_ref = fields.take("templateRef");
    let inline_query = fields.string("query", notes);
    let variables: BTreeMap<String, String> = fields
        .take("templateVariables")
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    fields.finish(notes, |_| None);
    let builtin = template_ref.is_none() && inline_query.is_none();
    let (query, address, unit) = if let Some(reference) = template_ref {
        let (query, address) =
            from_metric_template(reference, &format!("{path}.templateRef"), context, notes)?;
        (query, address, Unit::AsIs)
    } else if let Some(query) = inline_query {
        (query, None, Unit::AsIs)
    } else {
        builtin_metric(&name, path, context, args, notes)?
    };
    let query = rewrite_variables(
        &query,
        &window,
        &variables,
        context.names,
        args,
        &format!("{path}.query"),
        notes,
    )?;
    let selectors = workload_name_selectors(&query, "target");
    if !selectors.is_empty() {
        notes.unmapped(format!("{path}.query"), workload_name_message(&selectors));
    }
    // Without one, the controller's default Prometheus (`vigil controller --prometheus`)
    // applies, as Flagger's -metrics-server did.
    let address = address.or_else(|| context.metrics_server.map(str::to_owned));
    let condition = threshold_condition(
        range,
        legacy_threshold,
        builtin && name == "request-success-rate",
        unit,
        path,
        notes,
    );
    Some(Metric {
        name,
        interval: Some(context.interval.to_owned()),
        failure_limit: (context.threshold > 1).then(|| context.threshold - 1),
        success_condition: condition,
        provider: MetricProvider {
            prometheus: Some(PrometheusProvider {
                address,
                query: Some(query),
                ..Default::default()
            }),
            job: None,
            web: None,
        },
        ..Default::default()
    })
}

/// How a built-in metric's vigil query relates to Flagger's number.
#[derive(Clone, Copy, PartialEq)]
enum Unit {
    /// Same unit.
    AsIs,
    /// Flagger: success rate in percent; vigil: error ratio in 0..1.
    SuccessPercentToErrorRatio,
    /// Flagger: milliseconds; vigil: seconds.
    MillisecondsToSeconds,
}

/// `thresholdRange {min, max}` (or the deprecated `threshold`) as a condition on vigil's value.
fn threshold_condition(
    range: Option<&Value>,
    legacy: Option<f64>,
    success_rate: bool,
    unit: Unit,
    path: &str,
    notes: &mut Notes,
) -> Option<String> {
    let bound = |key: &str| range.and_then(|r| r.get(key)).and_then(Value::as_f64);
    let (mut min, mut max) = (bound("min"), bound("max"));
    if min.is_none() && max.is_none() {
        match legacy {
            Some(t) if success_rate => min = Some(t),
            Some(t) => max = Some(t),
            None => {
                notes.unmapped(format!("{path}.thresholdRange"), "missing: Flagger fails such a metric whenever its value is above 0; write the range the value must stay in");
                return None;
            }
        }
    }
    // Flagger fails when the value is below min or above max: equality passes.
    let (low, high) = match unit {
        Unit::AsIs => (min, max),
        Unit::MillisecondsToSeconds => (min.map(|m| m / 1000.0), max.map(|m| m / 1000.0)),
        // Success >= min % is errors <= (100 - min) / 100.
        Unit::SuccessPercentToErrorRatio => (
            max.map(|m| (100.0 - m) / 100.0),
            min.map(|m| (100.0 - m) / 100.0),
        ),
    };
    let terms: Vec<String> = [
        low.map(|l| format!("result >= {}", number(l))),
        high.map(|h| format!("result <= {}", number(h))),
    ]
    .into_iter()
    .flatten()
    .collect();
    Some(terms.join(" && "))
}

/// A number as short as it reads (`0.01`, not `0.010000000000000009`).
fn number(value: f64) -> String {
    let rounded = (value * 1e9).round() / 1e9;
    let text = format!("{rounded}");
    if text.contains('.') || text.contains('e') {
        text
    } else {
        format!("{text}.0")
    }
}

/// The query and address of the MetricTemplate `reference` names.
fn from_metric_template(
    reference: &Value,
    path: &str,
    context: &MetricContext<'_>,
    notes: &mut Notes,
) -> Option<(String, Option<String>)> {
    let name = reference
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let namespace = reference
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or(context.namespace);
    let templates = &context.inputs.metric_templates;
    let found = templates
        .get(&(namespace.to_owned(), name.to_owned()))
        .or_else(|| {
            templates
                .iter()
                .find(|((_, n), _)| n == name)
                .map(|(_, t)| t)
        });
    let Some(template) = found else {
        notes.unmapped(path, format!("MetricTemplate `{name}` is not among the inputs: pass its YAML too; the metric is left out"));
        return None;
    };
    let provider = template.pointer("/spec/provider");
    let kind = provider
        .and_then(|p| p.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("prometheus");
    if kind != "prometheus" {
        notes.unmapped(path, format!("MetricTemplate `{name}` queries `{kind}`: vigil queries Prometheus (and compatible servers) only; the metric is left out"));
        return None;
    }
    for (key, why) in [
        (
            "secretRef",
            "Flagger reads `token` or `username`/`password` from the Secret: write `auth.bearerToken.secretKeyRef` or `auth.basic` in the template, naming the key",
        ),
        (
            "insecureSkipVerify",
            "vigil never skips TLS verification: give the server's CA as `auth.caBundle`",
        ),
        (
            "headers",
            "write them as `auth.headers: [{name, value}]` in the template",
        ),
    ] {
        if provider
            .and_then(|p| p.get(key))
            .is_some_and(|v| !v.is_null() && v != &Value::Bool(false))
        {
            notes.unmapped(
                format!("{path} (MetricTemplate `{name}` spec.provider.{key})"),
                why,
            );
        }
    }
    let query = template
        .pointer("/spec/query")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let address = provider
        .and_then(|p| p.get("address"))
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
        .map(str::to_owned);
    Some((query, address))
}

/// Flagger's built-in `request-success-rate` / `request-duration` as vigil's shipped
/// templates for the mesh, with the arguments they need.
fn builtin_metric(
    name: &str,
    path: &str,
    context: &MetricContext<'_>,
    args: &mut BTreeMap<String, String>,
    notes: &mut Notes,
) -> Option<(String, Option<String>, Unit)> {
    let mesh = context.provider.unwrap_or("istio");
    let (source, metric, unit) = match (name, mesh) {
        ("request-success-rate", "istio") => (
            ISTIO_ERROR_RATE,
            "error-rate",
            Unit::SuccessPercentToErrorRatio,
        ),
        ("request-duration", "istio") => {
            (ISTIO_LATENCY, "latency-p99", Unit::MillisecondsToSeconds)
        }
        ("request-success-rate", "nginx") => (
            NGINX_ERROR_RATE,
            "error-rate",
            Unit::SuccessPercentToErrorRatio,
        ),
        ("request-duration", "nginx") => {
            (NGINX_LATENCY, "latency-p99", Unit::MillisecondsToSeconds)
        }
        ("request-success-rate" | "request-duration", other) => {
            notes.unmapped(path, format!("Flagger's built-in `{name}` for `{other}` has no vigil template: write the query (see analysis-templates/); the metric is left out"));
            return None;
        }
        (other, _) => {
            notes.unmapped(path, format!("`{other}` is neither a built-in metric nor has a templateRef or query; the metric is left out"));
            return None;
        }
    };
    let template: AnalysisTemplate = serde_norway::from_str(source).ok()?;
    let found = template.spec.metrics.iter().find(|m| m.name == metric)?;
    let query = found.provider.prometheus.as_ref()?.query.clone()?;
    // The shipped templates name the canary Service `service`: here it is `canary-service`,
    // and their window is Flagger's `{{ interval }}`.
    let query = query
        .replace("{{args.service}}", "{{args.canary-service}}")
        .replace("{{args.window}}", "{{ interval }}");
    args.insert(
        "canary-service".to_owned(),
        format!("{}-canary", context.names.service),
    );
    for arg in &template.spec.args {
        if let (Some(value), true) = (&arg.value, arg.name == "min-requests") {
            args.insert(arg.name.clone(), value.clone());
        }
    }
    if query.contains("{{args.ingress}}") {
        match &context.names.ingress {
            Some(ingress) => {
                args.insert("ingress".to_owned(), ingress.clone());
            }
            None => notes.unmapped(
                path,
                "the nginx template needs the Ingress: the Canary has no `ingressRef`",
            ),
        }
    }
    Some((query, None, unit))
}

/// Flagger's `{{ target }}`-style variables as vigil arguments (`{{ interval }}` and
/// `{{ variables.X }}` are per metric, so they are written in as text).
fn rewrite_variables(
    query: &str,
    window: &str,
    variables: &BTreeMap<String, String>,
    names: &Names,
    args: &mut BTreeMap<String, String>,
    path: &str,
    notes: &mut Notes,
) -> Option<String> {
    let mut out = String::with_capacity(query.len());
    let mut rest = query;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            notes.unmapped(path, "a `{{` is never closed; the metric is left out");
            return None;
        };
        let inner = after[..close].trim();
        if inner.starts_with("args.") {
            out.push_str(&rest[open..open + 2 + close + 2]);
        } else if let Some(variable) = inner.strip_prefix("variables.") {
            match variables.get(variable) {
                Some(value) => out.push_str(value),
                None => {
                    notes.unmapped(path, format!("`{{{{ {inner} }}}}` has no value in the metric's templateVariables; the metric is left out"));
                    return None;
                }
            }
        } else {
            match flagger_variable(inner).as_deref() {
                Some("interval") => out.push_str(window),
                Some("namespace") => out.push_str("{{args.namespace}}"),
                Some("rollout") => out.push_str("{{args.rollout}}"),
                Some(argument) => {
                    let value = match argument {
                        "target" => Some(names.target.clone()),
                        "service" => Some(names.service.clone()),
                        "ingress" => names.ingress.clone(),
                        _ => None,
                    };
                    match value {
                        Some(value) => {
                            args.insert(argument.to_owned(), value);
                            out.push_str(&format!("{{{{args.{argument}}}}}"));
                        }
                        None => {
                            notes.unmapped(path, format!("`{{{{ {inner} }}}}` has no value vigil can give (the Canary names none); the metric is left out"));
                            return None;
                        }
                    }
                }
                None => {
                    notes.unmapped(path, format!("`{{{{ {inner} }}}}` is not one of Flagger's variables; the metric is left out"));
                    return None;
                }
            }
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Some(out)
}

/// A MetricTemplate no Canary of the input references: it carries no thresholds (they are in
/// the Canary), so it cannot become a vigil template by itself.
pub(super) fn metric_template_alone(document: &Value, sources: &[Source], notes: &mut Notes) {
    let (_, name) = namespace_and_name(document);
    let referenced = sources.iter().any(|s| {
        s.document.get("kind").and_then(Value::as_str) == Some("Canary")
            && s.document
                .pointer("/spec/analysis/metrics")
                .and_then(Value::as_array)
                .is_some_and(|metrics| {
                    metrics.iter().any(|m| {
                        m.pointer("/templateRef/name").and_then(Value::as_str)
                            == Some(name.as_str())
                    })
                })
    });
    if !referenced {
        notes.unmapped(
            "",
            format!("MetricTemplate `{name}` is referenced by no Canary of the input: its thresholds live in the Canary, so convert them together (vigil convert canary.yaml metric-templates.yaml)"),
        );
    }
}

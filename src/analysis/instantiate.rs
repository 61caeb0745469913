//! Turning templates plus arguments into an AnalysisRun spec (pure).
//!
//! Arguments are substituted once, here, with label-value escaping; the run then carries
//! resolved queries, so editing a template never changes a run in flight. The exception is a
//! Secret argument ([`instantiate_with_secret_refs`]): it stays a reference, and the run keeps
//! its queries as written, substituted in memory at each measurement, so no Secret's value is
//! ever stored in a run.

use std::collections::BTreeMap;

use crate::analysis::template::{TemplateError, resolve_args, substitute};
use crate::api::{
    AnalysisRunSpec, AnalysisTemplateSpec, Argument, ArgumentValueFrom, Metric, PrometheusProvider,
    SecretKeySelector,
};

/// Why templates could not become a run.
#[derive(Debug, thiserror::Error)]
pub enum InstantiateError {
    /// An argument could not be resolved or substituted.
    #[error("template {template}: {source}")]
    ResolveTemplate {
        /// The template's name.
        template: String,
        /// The cause.
        source: TemplateError,
    },
    /// Two templates resolve an argument to different values, in a run whose queries are
    /// substituted when measuring (it has a Secret argument) with one set of arguments.
    #[error(
        "argument {arg:?} has different values in templates {first} and {second}; pass it \
         explicitly so every template uses the same value"
    )]
    MergeConflictingArgument {
        /// The argument.
        arg: String,
        /// A template with one value.
        first: String,
        /// A template with another.
        second: String,
    },
    /// Two templates define a metric with the same name.
    #[error("metric {metric:?} is defined by both {first} and {second}")]
    MergeDuplicateMetric {
        /// The metric's name.
        metric: String,
        /// The first template.
        first: String,
        /// The second template.
        second: String,
    },
}

/// Names of the arguments the platform provides to every run. A template uses one by
/// declaring it without a value; an argument the Rollout passes under the same name wins.
/// `baseline-revision` is the revision of the fair baseline
/// ([`crate::rollout::baseline::baseline_revision`] of the stable), which runs only with
/// `canary.baseline.enabled`.
pub const BUILTIN_ARGS: [&str; 5] = [
    "rollout",
    "namespace",
    "stable-revision",
    "canary-revision",
    "baseline-revision",
];

/// The built-in arguments for a run of `rollout` comparing `canary_revision` with
/// `stable_revision` (and its baseline), in the order of [`BUILTIN_ARGS`]. Put them before the
/// Rollout's own arguments: later arguments win.
pub fn builtin_args(
    rollout: &str,
    namespace: &str,
    stable_revision: &str,
    canary_revision: &str,
) -> Vec<Argument> {
    let baseline_revision = crate::rollout::baseline::baseline_revision(stable_revision);
    BUILTIN_ARGS
        .iter()
        .zip([
            rollout,
            namespace,
            stable_revision,
            canary_revision,
            baseline_revision.as_str(),
        ])
        .map(|(name, value)| Argument {
            name: (*name).to_owned(),
            value: Some(value.to_owned()),
            value_from: None,
        })
        .collect()
}

/// Builds the run spec for `templates` (name, spec) with the `given` arguments.
pub fn instantiate(
    templates: &[(String, AnalysisTemplateSpec)],
    given: &[Argument],
) -> Result<AnalysisRunSpec, InstantiateError> {
    let mut metrics: Vec<Metric> = Vec::new();
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    let mut resolved_args: BTreeMap<String, String> = BTreeMap::new();
    let mut scoring = None;
    for (name, template) in templates {
        let wrap = |source| InstantiateError::ResolveTemplate {
            template: name.clone(),
            source,
        };
        let args = resolve_args(&template.args, given).map_err(wrap)?;
        for metric in &template.metrics {
            if let Some(first) = owners.insert(metric.name.clone(), name.clone()) {
                return Err(InstantiateError::MergeDuplicateMetric {
                    metric: metric.name.clone(),
                    first,
                    second: name.clone(),
                });
            }
            let mut metric = metric.clone();
            if let Some(prometheus) = metric.provider.prometheus.as_mut() {
                substitute_queries(prometheus, &args).map_err(wrap)?;
            }
            if let Some(job) = metric.provider.job.as_mut() {
                crate::analysis::job::substitute_job_args(job, &args, &[]).map_err(|e| {
                    wrap(TemplateError::SubstituteArg {
                        name: metric.name.clone(),
                        reason: e.to_string(),
                    })
                })?;
            }
            if let Some(web) = metric.provider.web.as_mut() {
                crate::analysis::template::web::substitute_web(web, &args).map_err(wrap)?;
            }
            metrics.push(metric);
        }
        scoring = scoring.or_else(|| template.scoring.clone());
        resolved_args.extend(args);
    }
    Ok(AnalysisRunSpec {
        metrics,
        args: resolved_args
            .into_iter()
            .map(|(name, value)| Argument {
                name,
                value: Some(value),
                value_from: None,
            })
            .collect(),
        scoring,
        terminate: false,
        background: false,
    })
}

/// What a Secret argument stands for while a run is checked at creation: a plain token, so
/// the query's shape and every other argument are checked before the run exists.
const SECRET_STAND_IN: &str = "x";

/// The `secretKeyRef` of an argument given as one.
pub fn secret_ref(arg: &Argument) -> Option<&SecretKeySelector> {
    arg.value_from.as_ref()?.secret_key_ref.as_ref()
}

/// Builds the run spec like [`instantiate`], except that an argument given as a
/// `valueFrom.secretKeyRef` stays a reference: its value never enters the run. A run with such
/// an argument keeps its templates' queries as written (`{{args.NAME}}`), to be substituted in
/// memory, with the same escaping, each time it is measured
/// ([`crate::analysis::driver::prepare`]). Everything else is checked now, with a stand-in
/// for the Secret's value.
pub fn instantiate_with_secret_refs(
    templates: &[(String, AnalysisTemplateSpec)],
    given: &[Argument],
) -> Result<AnalysisRunSpec, InstantiateError> {
    let last = |name: &str| given.iter().rev().find(|g| g.name == name);
    let secrets: BTreeMap<String, SecretKeySelector> = given
        .iter()
        .filter(|g| last(&g.name).is_some_and(|l| std::ptr::eq(l, *g)))
        .filter_map(|g| secret_ref(g).map(|s| (g.name.clone(), s.clone())))
        .collect();
    if secrets.is_empty() {
        return instantiate(templates, given);
    }
    let stand_ins: Vec<Argument> = given
        .iter()
        .map(|g| match secrets.get(&g.name) {
            Some(_) if secret_ref(g).is_some() => Argument {
                name: g.name.clone(),
                value: Some(SECRET_STAND_IN.to_owned()),
                value_from: None,
            },
            _ => g.clone(),
        })
        .collect();
    let checked = instantiate(templates, &stand_ins)?;
    // One set of arguments serves every metric when measuring: templates must agree.
    let mut seen: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (name, template) in templates {
        let args = resolve_args(&template.args, &stand_ins).map_err(|source| {
            InstantiateError::ResolveTemplate {
                template: name.clone(),
                source,
            }
        })?;
        for (arg, value) in args {
            match seen.get(&arg) {
                Some((first, before)) if *before != value => {
                    return Err(InstantiateError::MergeConflictingArgument {
                        arg,
                        first: first.clone(),
                        second: name.clone(),
                    });
                }
                Some(_) => {}
                None => {
                    seen.insert(arg, (name.clone(), value));
                }
            }
        }
    }
    let metrics = templates
        .iter()
        .flat_map(|(_, template)| template.metrics.iter().cloned())
        .collect();
    let args = checked
        .args
        .into_iter()
        .map(|arg| match secrets.get(&arg.name) {
            Some(selector) => Argument {
                name: arg.name,
                value: None,
                value_from: Some(ArgumentValueFrom {
                    secret_key_ref: Some(selector.clone()),
                    field_ref: None,
                }),
            },
            None => arg,
        })
        .collect();
    Ok(AnalysisRunSpec {
        metrics,
        args,
        scoring: checked.scoring,
        terminate: false,
        background: false,
    })
}

/// Substitutes `args` into the provider's address and queries (label-value escaping; the
/// query's shape is checked).
pub fn substitute_queries(
    prometheus: &mut PrometheusProvider,
    args: &BTreeMap<String, String>,
) -> Result<(), TemplateError> {
    if let Some(address) = prometheus.address.as_mut() {
        *address = substitute_plain(address, args)?;
    }
    for query in [
        &mut prometheus.query,
        &mut prometheus.canary_query,
        &mut prometheus.baseline_query,
        &mut prometheus.canary_requests_query,
        &mut prometheus.baseline_requests_query,
    ]
    .into_iter()
    .flatten()
    {
        *query = substitute(query, args)?;
    }
    Ok(())
}

/// The address is not PromQL; an argument there may only be a plain token.
fn substitute_plain(text: &str, args: &BTreeMap<String, String>) -> Result<String, TemplateError> {
    if text.contains("{{") {
        substitute(text, args)
    } else {
        Ok(text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MetricProvider;

    fn template(query: &str) -> AnalysisTemplateSpec {
        AnalysisTemplateSpec {
            args: vec![
                Argument {
                    name: "service".to_owned(),
                    value: None,
                    value_from: None,
                },
                Argument {
                    name: "window".to_owned(),
                    value: Some("5m".to_owned()),
                    value_from: None,
                },
            ],
            metrics: vec![Metric {
                name: "errors".to_owned(),
                provider: MetricProvider {
                    job: None,
                    prometheus: Some(PrometheusProvider {
                        address: Some("http://prometheus:9090".to_owned()),
                        query: Some(query.to_owned()),
                        ..PrometheusProvider::default()
                    }),
                    web: None,
                },
                success_condition: Some("result < 0.01".to_owned()),
                ..Metric::default()
            }],
            scoring: None,
        }
    }

    fn arg(name: &str, value: &str) -> Argument {
        Argument {
            name: name.to_owned(),
            value: Some(value.to_owned()),
            value_from: None,
        }
    }

    #[test]
    fn substitutes_given_values_and_defaults() {
        let query =
            r#"sum(rate(http_requests_total{service="{{args.service}}"}[{{args.window}}]))"#;
        let run = instantiate(
            &[("t".to_owned(), template(query))],
            &[arg("service", "checkout")],
        )
        .expect("instantiate");
        let resolved = run.metrics[0]
            .provider
            .prometheus
            .as_ref()
            .and_then(|p| p.query.clone());
        assert_eq!(
            resolved.as_deref(),
            Some(r#"sum(rate(http_requests_total{service="checkout"}[5m]))"#)
        );
        assert_eq!(run.args.len(), 2);
    }

    #[test]
    fn an_injection_attempt_stays_a_label_value() {
        let query = r#"sum(rate(http_requests_total{service="{{args.service}}"}[5m]))"#;
        let hostile = r#"x"} or vector(1) or {x=""#;
        match instantiate(
            &[("t".to_owned(), template(query))],
            &[arg("service", hostile)],
        ) {
            Ok(run) => {
                let resolved = run.metrics[0]
                    .provider
                    .prometheus
                    .as_ref()
                    .and_then(|p| p.query.clone())
                    .unwrap_or_default();
                assert!(
                    resolved.contains(r#"\"} or vector(1) or {x=\""#),
                    "{resolved}"
                );
                let neutral = query.replace("{{args.service}}", "x");
                let shape = |q: &str| {
                    promql_parser::parser::parse(q)
                        .map(|e| crate::analysis::template::shape(&e))
                        .expect("parses")
                };
                assert_eq!(
                    shape(&resolved),
                    shape(&neutral),
                    "the query's shape changed"
                );
            }
            Err(error) => assert!(error.to_string().contains("service"), "{error}"),
        }
    }

    #[test]
    fn a_missing_argument_is_named() {
        let query = r#"sum(rate(http_requests_total{service="{{args.service}}"}[5m]))"#;
        let error = instantiate(&[("errors-tpl".to_owned(), template(query))], &[])
            .expect_err("service has no value");
        let text = error.to_string();
        assert!(
            text.starts_with("template errors-tpl:") && text.contains("service"),
            "{text}"
        );
    }

    #[test]
    fn builtin_args_fill_declared_args_and_given_args_win() {
        let query = r#"sum(rate(http_requests_total{service="{{args.service}}"}[5m]))"#;
        let mut given = builtin_args("shop", "prod", "aaa", "bbb");
        given.push(Argument {
            name: "service".to_owned(),
            value: Some("from-rollout".to_owned()),
            value_from: None,
        });
        let mut spec = template(query);
        spec.args.push(Argument {
            name: "canary-revision".to_owned(),
            value: None,
            value_from: None,
        });
        let run = instantiate(&[("t".to_owned(), spec)], &given).expect("instantiate");
        let values: BTreeMap<String, String> = run
            .args
            .iter()
            .map(|a| (a.name.clone(), a.value.clone().unwrap_or_default()))
            .collect();
        assert_eq!(
            values.get("canary-revision").map(String::as_str),
            Some("bbb")
        );
        assert_eq!(
            values.get("service").map(String::as_str),
            Some("from-rollout")
        );
        assert!(
            !values.contains_key("namespace"),
            "undeclared built-ins are not passed"
        );
    }

    #[test]
    fn duplicate_metric_names_across_templates_are_rejected() {
        let query = "sum(up)";
        let error = instantiate(
            &[
                ("a".to_owned(), template(query)),
                ("b".to_owned(), template(query)),
            ],
            &[arg("service", "x")],
        )
        .expect_err("duplicate");
        assert!(matches!(
            error,
            InstantiateError::MergeDuplicateMetric { .. }
        ));
    }

    fn secret_arg(name: &str, secret: &str) -> Argument {
        Argument {
            name: name.to_owned(),
            value: None,
            value_from: Some(ArgumentValueFrom {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.to_owned(),
                    key: "value".to_owned(),
                }),
                field_ref: None,
            }),
        }
    }

    #[test]
    fn a_secret_argument_stays_a_reference_in_the_run_spec() {
        let query =
            r#"sum(rate(http_requests_total{service="{{args.service}}"}[{{args.window}}]))"#;
        let run = instantiate_with_secret_refs(
            &[("t".to_owned(), template(query))],
            &[arg("service", "plain"), secret_arg("service", "svc-secret")],
        )
        .expect("instantiate");
        let service = run.args.iter().find(|a| a.name == "service").expect("arg");
        assert_eq!(service.value, None, "no value is copied into the run");
        assert_eq!(
            secret_ref(service).map(|s| s.name.as_str()),
            Some("svc-secret")
        );
        let stored = run.metrics[0]
            .provider
            .prometheus
            .as_ref()
            .and_then(|p| p.query.clone());
        assert_eq!(stored.as_deref(), Some(query), "substituted when measuring");
        assert!(
            run.args
                .iter()
                .any(|a| a.name == "window" && a.value.as_deref() == Some("5m"))
        );
    }

    #[test]
    fn a_run_with_a_secret_argument_is_still_checked_when_created() {
        let query = r#"sum(rate(http_requests_total{service="{{args.service}}", x="{{args.missing}}"}[5m]))"#;
        let error = instantiate_with_secret_refs(
            &[("t".to_owned(), template(query))],
            &[secret_arg("service", "svc-secret")],
        )
        .expect_err("missing is not declared");
        assert!(error.to_string().contains("missing"), "{error}");
    }
}

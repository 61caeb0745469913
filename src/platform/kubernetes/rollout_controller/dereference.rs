//! The dereference step (in observe): each declared analysis's templates from the reflector
//! cache, its arguments resolved, its run built, or the spec problem that keeps it from
//! starting; and which Rollouts use a template (to wake them when it changes).

#[allow(clippy::wildcard_imports)]
use super::*;

/// The Rollouts whose analyses use the template `name`: an AnalysisTemplate in `namespace`,
/// or, when `namespace` is `None`, a ClusterAnalysisTemplate.
pub(crate) fn rollouts_using(
    rollouts: &Store<Rollout>,
    namespace: Option<&str>,
    name: &str,
) -> Vec<ObjectRef<Rollout>> {
    rollouts
        .state()
        .iter()
        .filter(|rollout| namespace.is_none_or(|ns| rollout.namespace().as_deref() == Some(ns)))
        .filter(|rollout| uses_template(rollout, name, namespace.is_none()))
        .map(|rollout| ObjectRef::from_obj(rollout.as_ref()))
        .collect()
}

/// The template references of `rollout` (steps and background analysis) that name no
/// existing template, as spec problems at their fields.
#[cfg(test)]
pub(super) fn missing_templates(
    rollout: &Rollout,
    namespace: &str,
    index: &TemplateIndex,
) -> Vec<SpecProblem> {
    rollout::declared_analyses(&rollout.spec)
        .flat_map(|analysis| {
            analysis.missing_templates(
                |t| index.contains(namespace, &t.template_name, t.cluster_scope),
                |t| missing_message(t, namespace),
            )
        })
        .collect()
}

/// Whether a step or the background analysis of `rollout` refers to the template `name`.
pub(super) fn uses_template(rollout: &Rollout, name: &str, cluster_scope: bool) -> bool {
    rollout::declared_analyses(&rollout.spec)
        .flat_map(|analysis| analysis.templates)
        .any(|t| t.template_name == name && t.cluster_scope == cluster_scope)
}

/// One declared analysis, dereferenced in observe and built for the observed revisions:
/// what `create_run` creates when the decision asks for it.
#[derive(Clone, Debug)]
pub(super) struct PreparedRun {
    /// Which analysis of the Rollout.
    pub(super) kind: AnalysisKind,
    /// Its templates and resolved arguments.
    pub(super) analysis: Dereferenced,
    /// The revisions `spec` was built for.
    pub(super) stable: String,
    /// The canary revision `spec` was built for.
    pub(super) canary: String,
    /// The run's spec.
    pub(super) spec: AnalysisRunSpec,
}

/// What the dereference step found: the runs ready to create, and why the others cannot
/// start (spec problems, for the core to hold the Rollout with).
#[derive(Debug, Default)]
pub(super) struct Dereference {
    pub(super) prepared: Vec<PreparedRun>,
    pub(super) problems: Vec<SpecProblem>,
}

/// The dereference step: for every analysis the Rollout declares (a decision can only create
/// those), its templates from the reflector cache and, while a release is in flight, its
/// arguments resolved (a Secret is checked, never read into the run) and the run spec built. A failure that only a change
/// of the spec, a template or a Secret can fix is a problem; any other is an error (retried).
pub(super) async fn dereference(
    scope: &Scope<'_>,
    observation: &Observation,
) -> Result<Dereference, Error> {
    let rollout = scope.rollout;
    let canary = observation.desired_revision.as_str();
    let stable = rollout
        .status
        .as_ref()
        .and_then(|s| s.stable_revision.as_deref())
        .unwrap_or(canary);
    let mut found = Dereference::default();
    for declared in rollout::declared_analyses(&rollout.spec) {
        let templates = match scope.ctx.templates.as_ref() {
            Some(index) => from_cache(index, &scope.namespace, &declared),
            None => by_get(scope, &declared).await?,
        };
        let templates = match templates {
            Ok(templates) => templates,
            Err(problems) => {
                found.problems.extend(problems);
                continue;
            }
        };
        let unused =
            rollout::baseline::unused_baseline_problems(&rollout.spec, &declared, &templates);
        if !unused.is_empty() {
            found.problems.extend(unused);
            continue;
        }
        if canary == stable {
            // No release in flight, so no run can be created: a settled Rollout reads no
            // Secret (its templates were still checked, from the cache).
            continue;
        }
        let mut args = Vec::with_capacity(declared.args.len());
        for arg in declared.args {
            match resolve_arg(scope, arg).await {
                Ok(arg) => args.push(arg),
                Err(error) => {
                    found.problems.push(SpecProblem {
                        path: declared.kind.path(),
                        message: error.to_string(),
                    });
                    break;
                }
            }
        }
        if args.len() < declared.args.len() {
            continue;
        }
        let analysis = Dereferenced { templates, args };
        match build(scope, &analysis, stable, canary) {
            Ok(spec) => found.prepared.push(PreparedRun {
                kind: declared.kind,
                analysis,
                stable: stable.to_owned(),
                canary: canary.to_owned(),
                spec,
            }),
            Err(source) => found.problems.push(SpecProblem {
                path: declared.kind.path(),
                message: format!("failed to build its AnalysisRun: {source}"),
            }),
        }
    }
    Ok(found)
}

/// The run spec of `analysis` for these revisions (the part both platforms share).
pub(super) fn build(
    scope: &Scope<'_>,
    analysis: &Dereferenced,
    stable: &str,
    canary: &str,
) -> Result<AnalysisRunSpec, InstantiateError> {
    let run_for = RunFor {
        rollout: &scope.name,
        namespace: Some(&scope.namespace),
        stable,
        canary,
    };
    run_spec(analysis, run_for, SecretArgs::Referenced)
}

/// The templates of `declared` from the reflector caches, or the references they lack.
fn from_cache(
    index: &TemplateIndex,
    namespace: &str,
    declared: &rollout::DeclaredAnalysis<'_>,
) -> Result<Vec<(String, AnalysisTemplateSpec)>, Vec<SpecProblem>> {
    let missing = declared.missing_templates(
        |t| index.contains(namespace, &t.template_name, t.cluster_scope),
        |t| missing_message(t, namespace),
    );
    if !missing.is_empty() {
        return Err(missing);
    }
    let mut templates = Vec::with_capacity(declared.templates.len());
    for t in declared.templates {
        let spec = if t.cluster_scope {
            index
                .cluster
                .get(&ObjectRef::new(&t.template_name))
                .map(|c| c.spec.template.clone())
        } else {
            index
                .namespaced
                .get(&ObjectRef::new(&t.template_name).within(namespace))
                .map(|n| n.spec.clone())
        };
        // Gone between the two looks (a watch event): missing after all.
        let Some(spec) = spec else {
            return Err(vec![SpecProblem {
                path: declared.kind.path(),
                message: missing_message(t, namespace),
            }]);
        };
        templates.push((t.template_name.clone(), spec));
    }
    Ok(templates)
}

/// The templates of `declared` read from the API: only when the caches were not ready at
/// startup. A template that does not exist is a problem; any other failure is retried.
async fn by_get(
    scope: &Scope<'_>,
    declared: &rollout::DeclaredAnalysis<'_>,
) -> Result<Result<Vec<(String, AnalysisTemplateSpec)>, Vec<SpecProblem>>, Error> {
    let mut templates = Vec::with_capacity(declared.templates.len());
    for t in declared.templates {
        let got = if t.cluster_scope {
            Api::<ClusterAnalysisTemplate>::all(scope.ctx.client.clone())
                .get(&t.template_name)
                .await
                .map(|c| c.spec.template)
        } else {
            scope
                .api::<AnalysisTemplate>()
                .get(&t.template_name)
                .await
                .map(|n| n.spec)
        };
        match got {
            Ok(spec) => templates.push((t.template_name.clone(), spec)),
            Err(error) if not_found(&error) => {
                return Ok(Err(vec![SpecProblem {
                    path: declared.kind.path(),
                    message: missing_message(t, &scope.namespace),
                }]));
            }
            Err(source) => {
                return Err(Error::GetTemplate {
                    template: if t.cluster_scope {
                        format!("cluster/{}", t.template_name)
                    } else {
                        t.template_name.clone()
                    },
                    source,
                });
            }
        }
    }
    Ok(Ok(templates))
}

fn missing_message(t: &TemplateRef, namespace: &str) -> String {
    if t.cluster_scope {
        format!(
            "ClusterAnalysisTemplate {:?} does not exist",
            t.template_name
        )
    } else {
        format!(
            "AnalysisTemplate {:?} does not exist in namespace {namespace:?}",
            t.template_name
        )
    }
}

/// The value of an argument: as written, or read from a field of the Rollout. A
/// `secretKeyRef` stays a reference (the AnalysisRun controller reads it when measuring, so
/// its value is never stored); the Secret is checked now (it exists, opted in, has the key,
/// holds text) so a wrong reference holds the rollout with a reason before a run exists.
pub(super) async fn resolve_arg(scope: &Scope<'_>, arg: &Argument) -> Result<Argument, Error> {
    let fail = |reason: String| Error::ResolveArg {
        arg: arg.name.clone(),
        reason,
    };
    let value = match (&arg.value, &arg.value_from) {
        (Some(value), _) => value.clone(),
        (None, Some(from)) => match (&from.secret_key_ref, &from.field_ref) {
            (Some(selector), None) => {
                let secret = scope
                    .api::<Secret>()
                    .get(&selector.name)
                    .await
                    .map_err(|e| {
                        // A missing Secret reads like one that did not opt in: no probing.
                        if not_found(&e) {
                            fail(crate::platform::kubernetes::resources::refused_secret(
                                &selector.name,
                            ))
                        } else {
                            fail(format!("get secret {}: {e}", selector.name))
                        }
                    })?;
                let bytes = secret_value(&secret, &selector.name, &selector.key).map_err(fail)?;
                if std::str::from_utf8(&bytes).is_err() {
                    return Err(fail(format!(
                        "secret {} key {} is not UTF-8",
                        selector.name, selector.key
                    )));
                }
                return Ok(Argument {
                    name: arg.name.clone(),
                    value: None,
                    value_from: Some(crate::api::ArgumentValueFrom {
                        secret_key_ref: Some(selector.clone()),
                        field_ref: None,
                    }),
                });
            }
            (None, Some(field)) => field_ref_value(scope.rollout, &field.field_path)
                .ok_or_else(|| fail(format!("field {} is not set", field.field_path)))?,
            _ => {
                return Err(fail(
                    "set exactly one of secretKeyRef and fieldRef".to_owned(),
                ));
            }
        },
        (None, None) => return Err(fail("no value or valueFrom".to_owned())),
    };
    Ok(Argument {
        name: arg.name.clone(),
        value: Some(value),
        value_from: None,
    })
}

//! Template lookups from the reflector cache: which Rollouts use a template, which
//! references name none (the dereference step's problems).

#[allow(clippy::wildcard_imports)]
use super::*;

/// The Rollouts whose analyses use the template `name`: an AnalysisTemplate in `namespace`,
/// or, when `namespace` is `None`, a ClusterAnalysisTemplate.
pub(super) fn rollouts_using(
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
pub(super) fn missing_templates(
    rollout: &Rollout,
    namespace: &str,
    index: &TemplateIndex,
) -> Vec<SpecProblem> {
    rollout::declared_analyses(&rollout.spec)
        .flat_map(|analysis| {
            analysis.missing_templates(
                |t| index.contains(namespace, &t.template_name, t.cluster_scope),
                |t| {
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
                },
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

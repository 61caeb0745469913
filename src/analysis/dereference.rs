//! The pure part of the dereference step, shared by both platforms: an analysis whose
//! templates were found and whose arguments were resolved (each platform does that I/O its
//! own way) becomes the spec of its run, or the reason it cannot start. No I/O, no clock.

use crate::analysis::instantiate::{
    InstantiateError, builtin_args, instantiate, instantiate_with_secret_refs,
};
use crate::api::{AnalysisRunSpec, AnalysisTemplateSpec, Argument};

/// What a platform can do with an argument given as `valueFrom.secretKeyRef`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretArgs {
    /// It stays a reference, read each time the run measures (Kubernetes: the Secret was
    /// checked while dereferencing, its value never enters the run).
    Referenced,
    /// There are no Secrets (the local platform): refused like any unread `valueFrom`.
    Unsupported,
}

/// A declared analysis, dereferenced: its templates (name, spec) in the order the Rollout
/// lists them and its arguments as resolved. Everything a run needs but the revisions.
#[derive(Clone, Debug, PartialEq)]
pub struct Dereferenced {
    /// The templates, by name, in declaration order.
    pub templates: Vec<(String, AnalysisTemplateSpec)>,
    /// The Rollout's arguments, resolved (values, or Secret references).
    pub args: Vec<Argument>,
}

/// Who the run is for: the builtin arguments (`rollout`, `namespace`, `stable-revision`,
/// `canary-revision`). `namespace: None` leaves a template's own default in place (the local
/// platform has no namespace).
#[derive(Clone, Copy, Debug)]
pub struct RunFor<'a> {
    /// The Rollout's name.
    pub rollout: &'a str,
    /// Its namespace, when it has one.
    pub namespace: Option<&'a str>,
    /// The stable revision.
    pub stable: &'a str,
    /// The canary revision.
    pub canary: &'a str,
}

/// The spec of the run of `analysis` for `run_for`: builtin arguments first, the Rollout's
/// arguments after them (so they win), then the templates instantiated.
pub fn run_spec(
    analysis: &Dereferenced,
    run_for: RunFor<'_>,
    secrets: SecretArgs,
) -> Result<AnalysisRunSpec, InstantiateError> {
    let mut given: Vec<Argument> = builtin_args(
        run_for.rollout,
        run_for.namespace.unwrap_or_default(),
        run_for.stable,
        run_for.canary,
    )
    .into_iter()
    .filter(|a| run_for.namespace.is_some() || a.name != "namespace")
    .collect();
    given.extend(analysis.args.iter().cloned());
    match secrets {
        SecretArgs::Referenced => instantiate_with_secret_refs(&analysis.templates, &given),
        SecretArgs::Unsupported => instantiate(&analysis.templates, &given),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn template(query: &str, args: serde_json::Value) -> AnalysisTemplateSpec {
        serde_json::from_value(json!({
            "args": args,
            "metrics": [{"name": "errors", "interval": "30s", "count": 1,
                "successCondition": "result < 1",
                "provider": {"prometheus": {"address": "http://prometheus:9090", "query": query}}}]
        }))
        .expect("template")
    }

    fn secret_arg() -> Argument {
        serde_json::from_value(json!({
            "name": "tenant", "valueFrom": {"secretKeyRef": {"name": "t", "key": "id"}}
        }))
        .expect("arg")
    }

    const FOR: RunFor<'static> = RunFor {
        rollout: "web",
        namespace: Some("shop"),
        stable: "aaa",
        canary: "bbb",
    };

    #[test]
    fn builtin_revisions_and_namespace_fill_the_query() {
        let analysis = Dereferenced {
            templates: vec![(
                "t".into(),
                template(
                    r#"x{ns="{{args.namespace}}",r="{{args.canary-revision}}"}"#,
                    json!([{"name": "namespace"}, {"name": "canary-revision"}]),
                ),
            )],
            args: vec![],
        };
        let spec = run_spec(&analysis, FOR, SecretArgs::Referenced).expect("spec");
        let query = format!("{:?}", spec.metrics[0].provider);
        assert!(query.contains(r#"ns=\"shop\""#), "{query}");
        assert!(query.contains(r#"r=\"bbb\""#), "{query}");
    }

    #[test]
    fn an_argument_without_a_value_is_the_reason_the_run_cannot_start() {
        let analysis = Dereferenced {
            templates: vec![("t".into(), template("x", json!([{"name": "service"}])))],
            args: vec![],
        };
        let error = run_spec(&analysis, FOR, SecretArgs::Referenced).expect_err("no value");
        assert!(error.to_string().contains("`service`"), "{error}");
    }

    #[test]
    fn a_secret_argument_is_a_reference_on_kubernetes_and_refused_without_secrets() {
        let analysis = Dereferenced {
            templates: vec![(
                "t".into(),
                template(r#"x{t="{{args.tenant}}"}"#, json!([{"name": "tenant"}])),
            )],
            args: vec![secret_arg()],
        };
        let spec = run_spec(&analysis, FOR, SecretArgs::Referenced).expect("referenced");
        assert!(format!("{spec:?}").contains("{{args.tenant}}"));
        let error = run_spec(&analysis, FOR, SecretArgs::Unsupported).expect_err("refused");
        assert!(error.to_string().contains("valueFrom"), "{error}");
    }
}

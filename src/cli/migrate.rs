//! `vigil migrate deployment NAME [-n NS]`: prints the Rollout that adopts an existing
//! Deployment through `spec.workloadRef` (with `scaleDown: progressively`, so applying it is
//! zero-downtime), read from the cluster. Nothing is written to the cluster: review the output,
//! then `kubectl apply -f` it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use clap::Subcommand;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::kubectl::Target;
use crate::api::{
    CanaryStep, CanaryStrategy, PauseStep, Rollout, RolloutSpec, RolloutStrategy, ScaleDown,
    WorkloadRef,
};

/// The default canary of a migrated Deployment: weights with a pause after each, so a first
/// release can be watched and aborted; add analysis steps once templates exist.
const DEFAULT_STEPS: [(i32, &str); 3] = [(20, "1m"), (50, "1m"), (80, "1m")];

/// `vigil migrate …`
#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Print (YAML, stdout) the Rollout that adopts the Deployment NAME through
    /// `spec.workloadRef` with `scaleDown: progressively`: its selector and replicas, a
    /// default canary, and the stable Service when one selects the Deployment's pods.
    Deployment(Target),
}

/// Why `vigil migrate` failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// No kubeconfig or cluster.
    #[error("failed to configure the Kubernetes client: {0}")]
    ConfigureClient(#[source] kube::Error),
    /// The Deployment could not be read.
    #[error("failed to get Deployment {name} in namespace {namespace}: {source}")]
    GetDeployment {
        /// The Deployment.
        name: String,
        /// Its namespace.
        namespace: String,
        /// The cause.
        source: kube::Error,
    },
    /// The Deployment does not exist.
    #[error("Deployment {name} does not exist in namespace {namespace}")]
    DeploymentNotFound {
        /// The Deployment.
        name: String,
        /// Its namespace.
        namespace: String,
    },
    /// The Services of the namespace could not be listed.
    #[error("failed to list the Services of namespace {namespace}: {source}")]
    ListServices {
        /// The namespace.
        namespace: String,
        /// The cause.
        source: kube::Error,
    },
    /// The Rollout could not be written as YAML.
    #[error("failed to write the Rollout as YAML: {0}")]
    WriteYaml(#[source] serde_norway::Error),
    /// The async runtime could not start.
    #[error("failed to start the async runtime: {0}")]
    StartRuntime(#[source] std::io::Error),
}

/// Runs `vigil migrate`; the exit code (0, or 1 with the error on stderr).
pub fn run(command: &MigrateCommand) -> i32 {
    let MigrateCommand::Deployment(target) = command;
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(MigrateError::StartRuntime)
        .and_then(|runtime| runtime.block_on(read_and_render(target)));
    match result {
        Ok(yaml) => {
            print!("{yaml}");
            0
        }
        Err(error) => {
            eprintln!("vigil: {error}");
            1
        }
    }
}

async fn read_and_render(target: &Target) -> Result<String, MigrateError> {
    let client = Client::try_default()
        .await
        .map_err(MigrateError::ConfigureClient)?;
    let namespace = target
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let deployment = Api::<Deployment>::namespaced(client.clone(), &namespace)
        .get_opt(&target.name)
        .await
        .map_err(|source| MigrateError::GetDeployment {
            name: target.name.clone(),
            namespace: namespace.clone(),
            source,
        })?
        .ok_or_else(|| MigrateError::DeploymentNotFound {
            name: target.name.clone(),
            namespace: namespace.clone(),
        })?;
    let services = Api::<Service>::namespaced(client, &namespace)
        .list(&ListParams::default())
        .await
        .map_err(|source| MigrateError::ListServices {
            namespace: namespace.clone(),
            source,
        })?
        .items;
    render(&deployment, &namespace, &services)
}

/// The Services whose selector selects the pods of `deployment`'s template, by name.
pub fn services_selecting(deployment: &Deployment, services: &[Service]) -> Vec<String> {
    let empty = BTreeMap::new();
    let labels = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.as_ref())
        .unwrap_or(&empty);
    let mut names: Vec<String> = services
        .iter()
        .filter(|service| {
            let selector = service.spec.as_ref().and_then(|s| s.selector.as_ref());
            // A Service without a selector selects no pods (its endpoints are managed by hand).
            selector.is_some_and(|selector| {
                !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
        })
        .map(ResourceExt::name_any)
        .collect();
    names.sort();
    names
}

/// The Rollout that adopts `deployment`, as commented YAML.
pub fn render(
    deployment: &Deployment,
    namespace: &str,
    services: &[Service],
) -> Result<String, MigrateError> {
    let name = deployment.name_any();
    let spec = deployment.spec.clone().unwrap_or_default();
    let selecting = services_selecting(deployment, services);
    let steps = DEFAULT_STEPS
        .iter()
        .flat_map(|&(weight, pause)| {
            [
                CanaryStep {
                    set_weight: Some(weight),
                    ..CanaryStep::default()
                },
                CanaryStep {
                    pause: Some(PauseStep {
                        duration: Some(pause.to_owned()),
                    }),
                    ..CanaryStep::default()
                },
            ]
        })
        .collect();
    let mut rollout = Rollout::new(
        &name,
        RolloutSpec {
            replicas: Some(spec.replicas.unwrap_or(1)),
            selector: spec.selector,
            workload_ref: Some(WorkloadRef {
                api_version: "apps/v1".to_owned(),
                kind: "Deployment".to_owned(),
                name: name.clone(),
                scale_down: Some(ScaleDown::Progressively),
            }),
            strategy: RolloutStrategy {
                canary: CanaryStrategy {
                    stable_service: selecting.first().cloned(),
                    steps,
                    ..CanaryStrategy::default()
                },
                ..Default::default()
            },
            ..RolloutSpec::default()
        },
    );
    rollout.metadata.namespace = Some(namespace.to_owned());
    let yaml = serde_norway::to_string(&rollout).map_err(MigrateError::WriteYaml)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# The Rollout that adopts Deployment {name} (namespace {namespace}). vigil runs the\n\
         # Deployment's pod template in its own revisions; scaleDown: progressively scales the\n\
         # Deployment down only as the Rollout's pods become ready, so applying this moves no\n\
         # traffic off ready pods. A change of the Deployment's template then starts a canary.\n\
         # Review the steps (add analysis), then: kubectl apply -f <this file>"
    );
    for line in yaml.lines() {
        out.push_str(line);
        out.push('\n');
        if line == "    canary:" {
            out.push_str(&service_comments(&name, &selecting));
        }
    }
    Ok(out)
}

/// What to do about the stable and canary Services, as comment lines under `canary:`.
fn service_comments(name: &str, selecting: &[String]) -> String {
    let stable = match selecting {
        [] => format!(
            "TODO stableService: no Service selects the pods of Deployment {name}; name the \
             Service that serves it (vigil points its selector at the stable revision)."
        ),
        [only] => format!(
            "stableService: {only} selects the Deployment's pods; it keeps selecting them until \
             all the Rollout's pods are ready, then vigil points it at the stable revision."
        ),
        [first, others @ ..] => format!(
            "stableService: {first}, the first of the Services selecting the Deployment's pods; \
             the others ({}) keep selecting both versions' pods.",
            others.join(", ")
        ),
    };
    let canary = format!(
        "TODO canaryService: a copy of the stable Service under another name (e.g. \
         {name}-canary) lets analysis and tests reach the canary alone; without it and without \
         trafficRouting, the canary's share of the replicas approximates its weight."
    );
    [stable, canary]
        .iter()
        .flat_map(|text| wrap(text, 88))
        .map(|line| format!("      # {line}\n"))
        .collect()
}

/// `text` in lines of at most about `width` characters, cut at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let last = lines.last_mut().map_or(0, |l| l.len());
        if last > 0 && last + 1 + word.len() > width {
            lines.push(String::new());
        }
        if let Some(line) = lines.last_mut() {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rollout::validate_spec;

    fn deployment() -> Deployment {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "replicas": 5,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web", "tier": "front"}},
                    "spec": {"containers": [{"name": "web", "image": "web:1"}]}
                }
            }
        }))
        .expect("deployment")
    }

    fn service(name: &str, selector: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"selector": selector}
        }))
        .expect("service")
    }

    #[test]
    fn only_services_whose_selector_matches_the_pods_are_candidates() {
        let services = [
            service("web", json!({"app": "web"})),
            service("front", json!({"tier": "front", "app": "web"})),
            service("api", json!({"app": "api"})),
            service("wider", json!({"app": "web", "env": "prod"})),
            service("manual", json!({})),
        ];
        assert_eq!(
            services_selecting(&deployment(), &services),
            ["front", "web"]
        );
    }

    #[test]
    fn the_rollout_adopts_the_deployment_and_is_valid() {
        let yaml = render(
            &deployment(),
            "shop",
            &[service("web", json!({"app": "web"}))],
        )
        .expect("render");
        let rollout: Rollout = serde_norway::from_str(&yaml).expect("parses back");
        assert_eq!(rollout.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(rollout.spec.replicas, Some(5));
        assert!(rollout.spec.template.is_none());
        let workload = rollout.spec.workload_ref.clone().expect("workloadRef");
        assert_eq!(
            (
                workload.api_version.as_str(),
                workload.kind.as_str(),
                workload.name.as_str()
            ),
            ("apps/v1", "Deployment", "web")
        );
        assert_eq!(workload.scale_down, Some(ScaleDown::Progressively));
        assert_eq!(
            rollout.spec.strategy.canary.stable_service.as_deref(),
            Some("web")
        );
        assert!(yaml.contains("# TODO canaryService"), "{yaml}");
        assert_eq!(validate_spec(&rollout.spec), vec![]);
    }

    #[test]
    fn without_a_service_the_stable_service_is_left_as_a_todo() {
        let yaml = render(&deployment(), "shop", &[]).expect("render");
        let rollout: Rollout = serde_norway::from_str(&yaml).expect("parses back");
        assert_eq!(rollout.spec.strategy.canary.stable_service, None);
        assert!(yaml.contains("# TODO stableService"), "{yaml}");
    }
}

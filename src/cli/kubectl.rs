//! The verbs that act on a Rollout through the Kubernetes API, like kubectl (kubeconfig from
//! the environment): `get rollout`, `promote`, `abort`, `retry`, `pause`, `resume`.
//!
//! Requests that are not desired state go into status fields, exactly as the rollout module
//! documents (`crate::rollout`); the controller consumes them. Installed as `kubectl-vigil`
//! (`ln -s $(which vigil) /usr/local/bin/kubectl-vigil`) the binary is a kubectl plugin:
//! `kubectl vigil get rollout web`.

use std::fmt::Write as _;

use clap::{Args, Subcommand};
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::api::{AnalysisRunSummary, Rollout};
use crate::platform::kubernetes::context::{REVISION_LABEL, ROLLOUT_LABEL};
use crate::rollout::{RequestError, UserRequest, status_request};

/// The field manager of the CLI's writes (distinct from the controller's).
pub const CLI_FIELD_MANAGER: &str = "vigil.dev/cli";
/// How often a request is retried after a resourceVersion conflict.
const CONFLICT_RETRIES: usize = 5;

/// Which Rollout.
#[derive(Debug, Args)]
pub struct Target {
    /// The Rollout's name.
    pub name: String,
    /// Its namespace (default: the kubeconfig context's).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
}

/// `vigil get …`
#[derive(Debug, Subcommand)]
pub enum GetCommand {
    /// Show a Rollout as a tree: revisions, weights, step, phase and message, analysis.
    Rollout(GetRolloutArgs),
}

/// Arguments of `vigil get rollout`.
#[derive(Debug, Args)]
pub struct GetRolloutArgs {
    /// Which Rollout.
    #[command(flatten)]
    pub target: Target,
    /// Redraw on every change until interrupted.
    #[arg(long, short = 'w')]
    pub watch: bool,
}

/// Arguments of `vigil promote`.
#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// Which Rollout.
    #[command(flatten)]
    pub target: Target,
    /// Skip all remaining steps and analysis.
    #[arg(long)]
    pub full: bool,
}

/// Why a verb failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No kubeconfig or cluster.
    #[error("failed to configure the Kubernetes client: {0}")]
    ConfigureClient(#[source] kube::Error),
    /// The Rollout could not be read.
    #[error("failed to get rollout {name}: {source}")]
    GetRollout {
        /// The Rollout.
        name: String,
        /// The cause.
        source: kube::Error,
    },
    /// Its ReplicaSets could not be listed.
    #[error("failed to list the ReplicaSets of rollout {name}: {source}")]
    ListReplicaSets {
        /// The Rollout.
        name: String,
        /// The cause.
        source: kube::Error,
    },
    /// The request could not be written.
    #[error("failed to update rollout {name}: {source}")]
    PatchRollout {
        /// The Rollout.
        name: String,
        /// The cause.
        source: kube::Error,
    },
    /// `promote` on a Rollout that is not in a step.
    #[error("rollout {0} is not at a step (no canary in progress); nothing to promote")]
    PromoteWithoutStep(String),
    /// The async runtime could not start.
    #[error("failed to start the async runtime: {0}")]
    StartRuntime(#[source] std::io::Error),
}

async fn client_and_namespace(target: &Target) -> Result<(Client, String), CliError> {
    let client = Client::try_default()
        .await
        .map_err(CliError::ConfigureClient)?;
    let namespace = target
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    Ok((client, namespace))
}

fn block_on<F: std::future::Future<Output = Result<(), CliError>>>(future: F) -> i32 {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::StartRuntime)
        .and_then(|runtime| runtime.block_on(future));
    match result {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("vigil: {error}");
            1
        }
    }
}

fn revision_line(
    out: &mut String,
    prefix: &str,
    role: &str,
    rs: Option<&ReplicaSet>,
    revision: &str,
) {
    let (replicas, ready) = rs.map_or((0, 0), |rs| {
        (
            rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
            rs.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0),
        )
    });
    let _ = writeln!(
        out,
        "{prefix} {role:<8} revision {revision}  replicas {replicas}  ready {ready}"
    );
}

fn analysis_lines(out: &mut String, title: &str, run: &AnalysisRunSummary) {
    let _ = writeln!(out, "{title}: {} {:?}", run.name, run.phase);
    if let Some(message) = &run.message {
        let _ = writeln!(out, "│   {message}");
    }
    if let Some(score) = &run.score {
        let _ = writeln!(out, "│   score {score}");
    }
    let count = run.metrics.len();
    for (i, metric) in run.metrics.iter().enumerate() {
        let branch = if i + 1 == count {
            "└──"
        } else {
            "├──"
        };
        let _ = write!(out, "{branch} {} {:?}", metric.name, metric.phase);
        if let Some(value) = &metric.value {
            let _ = write!(out, "  value {value}");
        }
        if let Some(reason) = &metric.reason {
            let _ = write!(out, "  — {reason}");
        }
        out.push('\n');
    }
}

/// The tree shown by `vigil get rollout`.
pub fn render(rollout: &Rollout, replica_sets: &[ReplicaSet]) -> String {
    let status = rollout.status.clone().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "Name:       {}", rollout.name_any());
    let _ = writeln!(
        out,
        "Namespace:  {}",
        rollout.namespace().unwrap_or_default()
    );
    let phase = status
        .phase
        .map_or_else(|| "Unknown".to_owned(), |p| format!("{p:?}"));
    let _ = writeln!(out, "Phase:      {phase}");
    if let Some(message) = &status.message {
        let _ = writeln!(out, "Message:    {message}");
    }
    let steps = rollout.spec.strategy.canary.steps.len();
    let _ = writeln!(
        out,
        "Step:       {}",
        status.step.clone().unwrap_or_else(|| format!("-/{steps}"))
    );
    let _ = writeln!(
        out,
        "Weight:     canary {}%  stable {}%",
        status.canary_weight,
        100 - status.canary_weight
    );
    if rollout.spec.paused {
        let _ = writeln!(out, "Paused:     yes (vigil resume {})", rollout.name_any());
    }
    let _ = writeln!(out, "Revisions:");
    let find = |revision: &str| {
        replica_sets
            .iter()
            .find(|rs| rs.labels().get(REVISION_LABEL).map(String::as_str) == Some(revision))
    };
    let mut shown = Vec::new();
    let mut roles: Vec<(&str, String)> = Vec::new();
    if let Some(stable) = &status.stable_revision {
        roles.push(("stable", stable.clone()));
    }
    if let Some(canary) = &status.canary_revision
        && Some(canary) != status.stable_revision.as_ref()
    {
        roles.push(("canary", canary.clone()));
    }
    for rs in replica_sets {
        if let Some(revision) = rs.labels().get(REVISION_LABEL)
            && !roles.iter().any(|(_, r)| r == revision)
        {
            roles.push(("old", revision.clone()));
        }
    }
    let count = roles.len();
    for (i, (role, revision)) in roles.iter().enumerate() {
        let prefix = if i + 1 == count {
            "└──"
        } else {
            "├──"
        };
        revision_line(&mut out, prefix, role, find(revision), revision);
        shown.push(revision.clone());
    }
    if count == 0 {
        let _ = writeln!(out, "└── (none yet)");
    }
    if let Some(at) = &status.scale_down_at {
        let _ = writeln!(
            out,
            "Old revisions keep their pods until {} (scaleDownDelaySeconds)",
            at.0
        );
    }
    if let Some(run) = &status.step_analysis {
        analysis_lines(&mut out, "Analysis", run);
    }
    if let Some(run) = &status.background_analysis {
        analysis_lines(&mut out, "Background analysis", run);
    }
    out
}

async fn show(
    rollouts: &Api<Rollout>,
    rs: &Api<ReplicaSet>,
    name: &str,
) -> Result<String, CliError> {
    let rollout = rollouts
        .get(name)
        .await
        .map_err(|source| CliError::GetRollout {
            name: name.to_owned(),
            source,
        })?;
    let replica_sets = rs
        .list(&ListParams::default().labels(&format!("{ROLLOUT_LABEL}={name}")))
        .await
        .map_err(|source| CliError::ListReplicaSets {
            name: name.to_owned(),
            source,
        })?
        .items;
    Ok(render(&rollout, &replica_sets))
}

/// `vigil get rollout`.
pub fn get(command: &GetCommand) -> i32 {
    let GetCommand::Rollout(args) = command;
    block_on(async {
        let (client, namespace) = client_and_namespace(&args.target).await?;
        if args.watch {
            return super::kubectl_watch::watch(client, &namespace, &args.target.name).await;
        }
        let rollouts: Api<Rollout> = Api::namespaced(client.clone(), &namespace);
        let rs: Api<ReplicaSet> = Api::namespaced(client, &namespace);
        let tree = show(&rollouts, &rs, &args.target.name).await?;
        super::write_stdout(&tree);
        Ok(())
    })
}

/// Writes a status request guarded by the resourceVersion read with it; on a conflict reads
/// again and retries (the request itself is built from the first read, so a stale promote
/// stays stale and the controller ignores it).
async fn request_status(
    api: &Api<Rollout>,
    name: &str,
    build: impl Fn(&Rollout) -> Result<serde_json::Value, CliError>,
) -> Result<(), CliError> {
    let get = || async {
        api.get(name).await.map_err(|source| CliError::GetRollout {
            name: name.to_owned(),
            source,
        })
    };
    let first = get().await?;
    let request = build(&first)?;
    let mut current = first;
    for attempt in 0..=CONFLICT_RETRIES {
        let patch = Patch::Merge(json!({
            "metadata": {"resourceVersion": current.resource_version()},
            "status": request,
        }));
        let params = PatchParams {
            field_manager: Some(CLI_FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        match api.patch_status(name, &params, &patch).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.is_conflict() && attempt < CONFLICT_RETRIES => {
                current = get().await?;
            }
            Err(source) => {
                return Err(CliError::PatchRollout {
                    name: name.to_owned(),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// The status request of `vigil promote` for a Rollout as read.
pub fn promote_request(rollout: &Rollout, full: bool) -> Result<serde_json::Value, CliError> {
    let request = if full {
        UserRequest::PromoteFull
    } else {
        UserRequest::Promote { step: None }
    };
    request_patch(rollout, request)
}

/// The status patch of a user request for a Rollout as read (the rule is
/// [`status_request`], shared with the local engine).
fn request_patch(rollout: &Rollout, request: UserRequest) -> Result<serde_json::Value, CliError> {
    let change = status_request(&rollout.name_any(), rollout.status.as_ref(), request)
        .map_err(|RequestError::PromoteWithoutStep(name)| CliError::PromoteWithoutStep(name))?;
    Ok(json!(change))
}

async fn rollouts(target: &Target) -> Result<Api<Rollout>, CliError> {
    let (client, namespace) = client_and_namespace(target).await?;
    Ok(Api::namespaced(client, &namespace))
}

/// `vigil promote [--full]`.
pub fn promote(args: &PromoteArgs) -> i32 {
    block_on(async {
        let api = rollouts(&args.target).await?;
        request_status(&api, &args.target.name, |r| promote_request(r, args.full)).await?;
        crate::outln!(
            "rollout {} {}",
            args.target.name,
            if args.full {
                "fully promoted"
            } else {
                "promoted"
            }
        );
        Ok(())
    })
}

/// `vigil abort` (`abort = true`) or `vigil retry` (`abort = false`).
pub fn set_abort(target: &Target, abort: bool) -> i32 {
    block_on(async {
        let api = rollouts(target).await?;
        let request = if abort {
            UserRequest::Abort
        } else {
            UserRequest::Retry
        };
        request_status(&api, &target.name, |r| request_patch(r, request)).await?;
        crate::outln!(
            "rollout {} {}",
            target.name,
            if abort { "aborted" } else { "retried" }
        );
        Ok(())
    })
}

/// `vigil pause` / `vigil resume`: `spec.paused`.
pub fn set_paused(target: &Target, paused: bool) -> i32 {
    block_on(async {
        let api = rollouts(target).await?;
        let params = PatchParams {
            field_manager: Some(CLI_FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        api.patch(
            &target.name,
            &params,
            &Patch::Merge(json!({"spec": {"paused": paused}})),
        )
        .await
        .map_err(|source| CliError::PatchRollout {
            name: target.name.clone(),
            source,
        })?;
        crate::outln!(
            "rollout {} {}",
            target.name,
            if paused { "paused" } else { "resumed" }
        );
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{ReplicaSetSpec, ReplicaSetStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::api::{
        AnalysisPhase, CanaryStep, MetricSummary, RolloutPhase, RolloutSpec, RolloutStatus,
    };

    fn rs(revision: &str, replicas: i32, ready: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("web-{revision}")),
                labels: Some(
                    [(REVISION_LABEL.to_owned(), revision.to_owned())]
                        .into_iter()
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                ..ReplicaSetSpec::default()
            }),
            status: Some(ReplicaSetStatus {
                ready_replicas: Some(ready),
                ..ReplicaSetStatus::default()
            }),
        }
    }

    fn rollout() -> Rollout {
        let mut spec = RolloutSpec::default();
        spec.strategy.canary.steps = vec![CanaryStep::default(); 3];
        let mut rollout = Rollout::new("web", spec);
        rollout.metadata.namespace = Some("shop".into());
        rollout.status = Some(RolloutStatus {
            phase: Some(RolloutPhase::Degraded),
            message: Some("analysis failed: errors 0.12 > 0.01".into()),
            step: Some("1/3".into()),
            current_step_index: Some(1),
            stable_revision: Some("aaa".into()),
            canary_revision: Some("bbb".into()),
            canary_weight: 0,
            scale_down_at: Some(Time(
                Timestamp::from_second(1_800_000_000).expect("timestamp"),
            )),
            step_analysis: Some(AnalysisRunSummary {
                name: "web-bbb-1-step1".into(),
                phase: AnalysisPhase::Failed,
                message: Some("errors failed".into()),
                metrics: vec![MetricSummary {
                    name: "errors".into(),
                    phase: AnalysisPhase::Failed,
                    value: Some("0.12".into()),
                    reason: Some("0.12 > 0.01".into()),
                }],
                score: Some("50 Fail (round 2)".into()),
            }),
            ..RolloutStatus::default()
        });
        rollout
    }

    #[test]
    fn the_tree_shows_revisions_weights_step_phase_and_each_metric() {
        let tree = render(
            &rollout(),
            &[rs("aaa", 4, 4), rs("bbb", 0, 0), rs("old", 0, 0)],
        );
        for expected in [
            "Name:       web",
            "Phase:      Degraded",
            "Message:    analysis failed: errors 0.12 > 0.01",
            "Step:       1/3",
            "Weight:     canary 0%  stable 100%",
            "├── stable   revision aaa  replicas 4  ready 4",
            "├── canary   revision bbb  replicas 0  ready 0",
            "└── old      revision old  replicas 0  ready 0",
            "Old revisions keep their pods until 2027-01-15T08:00:00Z (scaleDownDelaySeconds)",
            "Analysis: web-bbb-1-step1 Failed",
            "│   score 50 Fail (round 2)",
            "└── errors Failed  value 0.12  — 0.12 > 0.01",
        ] {
            assert!(tree.contains(expected), "missing {expected:?} in\n{tree}");
        }
    }

    #[test]
    fn promote_writes_the_step_index_as_read_or_full() {
        assert_eq!(
            promote_request(&rollout(), false).expect("request"),
            json!({"promoteStep": 1})
        );
        assert_eq!(
            promote_request(&rollout(), true).expect("request"),
            json!({"promoteFull": true})
        );
        let mut idle = rollout();
        idle.status = None;
        assert!(matches!(
            promote_request(&idle, false),
            Err(CliError::PromoteWithoutStep(_))
        ));
    }
}

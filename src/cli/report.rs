//! `vigil report NAME`: the HTML report of a Rollout's latest release or of one AnalysisRun,
//! read from a `vigil run` state directory when it holds `NAME`, else from the cluster.

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::api::{AnalysisRun, Rollout};
use crate::platform::kubernetes::context::{ROLLOUT_LABEL, rollout_label_value};
use crate::platform::local::engine::{ReadStateError, report_input};
use crate::report::{ReportInput, RolloutInput, RunInput, TimelineEvent};

/// Arguments of `vigil report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The Rollout (its latest release) or the AnalysisRun.
    pub name: String,
    /// The state directory of `vigil run`; looked at first.
    #[arg(long, default_value = ".vigil")]
    pub state_dir: PathBuf,
    /// The namespace, when read from the cluster (default: the kubeconfig context's).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Where to write the HTML (default `NAME-report.html` in the current directory).
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportCliError {
    /// Reading the state directory failed.
    #[error(transparent)]
    ReadState(#[from] ReadStateError),
    /// No kubeconfig or cluster.
    #[error(
        "failed to configure the Kubernetes client: {0} ({1:?} is not in the state directory either: pass --state-dir)"
    )]
    ConfigureClient(#[source] kube::Error, String),
    /// An object could not be read from the cluster.
    #[error("failed to read {what} from the cluster: {source}")]
    ReadCluster {
        /// What.
        what: String,
        /// The cause.
        source: kube::Error,
    },
    /// Neither a Rollout nor an AnalysisRun has this name in the namespace.
    #[error("no Rollout or AnalysisRun named {name:?} in namespace {namespace}")]
    FindObject {
        /// The name.
        name: String,
        /// The namespace.
        namespace: String,
    },
    /// The report could not be drawn.
    #[error(transparent)]
    Render(#[from] crate::report::ReportError),
    /// The file could not be written.
    #[error("failed to write {path}: {source}")]
    WriteReport {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The async runtime could not start.
    #[error("failed to start the async runtime: {0}")]
    StartRuntime(#[source] std::io::Error),
}

/// Whether the state directory holds a Rollout or an AnalysisRun named `name`.
fn in_state_dir(dir: &Path, name: &str) -> bool {
    ["rollout", "run"]
        .iter()
        .any(|kind| dir.join(format!("{name}.{kind}.json")).is_file())
}

/// Runs `vigil report`; prints the path written.
pub fn run(args: &ReportArgs) -> i32 {
    match make(args) {
        Ok(path) => {
            crate::outln!("report written to {}", path.display());
            0
        }
        Err(error) => {
            eprintln!("vigil report: {error}");
            1
        }
    }
}

fn make(args: &ReportArgs) -> Result<PathBuf, ReportCliError> {
    let now = Timestamp::now();
    let input = if in_state_dir(&args.state_dir, &args.name) {
        report_input(&args.state_dir, &args.name, None, now)?
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ReportCliError::StartRuntime)?
            .block_on(from_cluster(args, now))?
    };
    let html = crate::report::render(&input)?;
    let path = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}-report.html", args.name)));
    std::fs::write(&path, html).map_err(|source| ReportCliError::WriteReport {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

fn read_error(what: &str) -> impl Fn(kube::Error) -> ReportCliError + '_ {
    move |source| ReportCliError::ReadCluster {
        what: what.to_owned(),
        source,
    }
}

async fn from_cluster(args: &ReportArgs, now: Timestamp) -> Result<ReportInput, ReportCliError> {
    let client = Client::try_default()
        .await
        .map_err(|e| ReportCliError::ConfigureClient(e, args.name.clone()))?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), &namespace);
    let runs: Api<AnalysisRun> = Api::namespaced(client.clone(), &namespace);
    if let Some(rollout) = rollouts
        .get_opt(&args.name)
        .await
        .map_err(read_error("the Rollout"))?
    {
        let selector = format!("{ROLLOUT_LABEL}={}", rollout_label_value(&args.name));
        let listed = runs
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(read_error("the AnalysisRuns"))?;
        let status = rollout.status.clone().unwrap_or_default();
        // The latest release: the runs of the current canary attempt.
        let attempt = format!("-{}-", status.canary_attempt);
        let mut runs: Vec<RunInput> = listed
            .items
            .into_iter()
            .filter(|run| run.name_any().contains(&attempt))
            .map(run_input)
            .collect();
        runs.sort_by_key(|r| r.status.started_at.as_ref().map(|t| t.0));
        let events = events_of(&client, &namespace, &args.name).await?;
        return Ok(ReportInput {
            rollout: Some(RolloutInput {
                name: format!("{namespace}/{}", args.name),
                spec: rollout.spec,
                status,
            }),
            events,
            runs,
            generated_at: now,
        });
    }
    let Some(run) = runs
        .get_opt(&args.name)
        .await
        .map_err(read_error("the AnalysisRun"))?
    else {
        return Err(ReportCliError::FindObject {
            name: args.name.clone(),
            namespace,
        });
    };
    Ok(ReportInput {
        rollout: None,
        events: Vec::new(),
        runs: vec![run_input(run)],
        generated_at: now,
    })
}

fn run_input(run: AnalysisRun) -> RunInput {
    RunInput {
        name: run.name_any(),
        spec: Some(run.spec),
        status: run.status.unwrap_or_default(),
    }
}

async fn events_of(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Vec<TimelineEvent>, ReportCliError> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let selector = format!("involvedObject.kind=Rollout,involvedObject.name={name}");
    let listed = api
        .list(&ListParams::default().fields(&selector))
        .await
        .map_err(read_error("the Rollout's events"))?;
    let mut events: Vec<TimelineEvent> = listed
        .items
        .into_iter()
        .filter_map(|event| {
            let time = event
                .last_timestamp
                .as_ref()
                .map(|t| t.0)
                .or_else(|| event.event_time.as_ref().map(|t| t.0))?;
            Some(TimelineEvent {
                time,
                type_: event.type_.unwrap_or_default(),
                reason: event.reason.unwrap_or_default(),
                message: event.message.unwrap_or_default(),
            })
        })
        .collect();
    events.sort_by_key(|e| e.time);
    Ok(events)
}

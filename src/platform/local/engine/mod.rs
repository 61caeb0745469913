//! The local rollout engine behind `vigil run` and `vigil demo`: it drives each Rollout with the
//! same pure [`crate::rollout::step`] through the same
//! [`reconcile_once`] loop and the same AnalysisRun driver as the Kubernetes controller.
//!
//! One loop owns everything (no locks around the state machine's inputs): every tick
//! (500 ms, or at once after a request) it advances the AnalysisRuns that are due, then for each
//! Rollout it
//!
//! 1. **observes**: the supervisor's processes per revision, the proxy's routing read back (the
//!    canary weight, and which revisions it routes as stable / canary: the local "services"),
//!    the Rollout's AnalysisRuns, and what dereferencing the spec found (analysis
//!    templates that were not given);
//! 2. **decides** with [`crate::rollout::step`];
//! 3. **acts**: effects in order, stopping at the first failure (nothing is recorded then, and
//!    the next tick tries again: the rule of [`crate::platform::reconcile`], as on Kubernetes);
//! 4. **records** the status atomically in the state directory.
//!
//! AnalysisRuns live in memory and in the state directory (`<run>.run.json`), so a restarted
//! engine resumes a run where it was instead of starting it again. Processes do not survive an
//! engine killed with SIGKILL (their process groups are recorded in `processes.json` with their
//! start times and killed on the next start if still theirs: see [`super::leftovers`]), but
//! status does: the state machine re-derives the same step from it and brings processes and
//! routing back.
//!
//! User requests (promote, abort, retry, pause, resume) and new Rollout versions arrive through
//! [`EngineHandle`] (the admin HTTP endpoint is a thin layer over it) and are applied between
//! ticks, so they never race with a status write.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use url::Url;

use super::proxy::{Backend, ProxyError, RoutingState, WeightedProxy};
use super::state::{StateDir, StateError};
use super::supervisor::{ProcessSpec, Supervisor, SupervisorConfig, SupervisorError};
use crate::analysis::dereference::{self, Dereferenced, RunFor, SecretArgs};
use crate::analysis::driver::{MeasureAt, MetricClient, advance, clients_for};
use crate::analysis::provider::prometheus::ConcurrencyLimiter;
use crate::analysis::provider::resolve::CommandLinePrometheus;
use crate::analysis::provider::resolve::NoSecrets;
use crate::analysis::run::{STORED_MEASUREMENTS_PER_METRIC, errored_status};
use crate::analysis::template::Problem;
use crate::api::{
    AnalysisPhase, AnalysisRunSpec, AnalysisRunStatus, AnalysisRunSummary, AnalysisTemplateSpec,
    Argument, Rollout, RolloutSpec, RolloutStatus,
};
use crate::manifest::Manifest;
use crate::platform::local::jobs::LocalJobs;
use crate::platform::reconcile::{Observed, Platform, reconcile_once};
use crate::platform::webhooks::{WebhookCaller, WebhookCallerConfig};
use crate::rollout::baseline::{baseline_of, baseline_revision};
use crate::rollout::webhooks::WebhookCall;
use crate::rollout::{
    Decision, Effect, EventType, Observation, RequestError, RevisionObservation, ServiceSelection,
    desired_revision, refuse_no_op, status_request, undecided_run,
};

mod handle;
mod persistence;
mod platform;
mod print;
mod releases;
mod sources;

use handle::*;
pub use handle::{EngineHandle, EventRecord, RolloutView, RunView};
use persistence::*;
use platform::*;
pub use print::progress_line;
use print::*;
pub use releases::{
    REPORTS_DIR, ReadStateError, list_rollouts, read_history, report_input, write_release_report,
};
pub use sources::Sources;
use sources::*;

/// Annotation on a Rollout naming the address of its proxy's metrics listener (`/metrics`,
/// `/routing`), e.g. `127.0.0.1:9464`; without it a free port is picked (see `vigil local get`).
pub const METRICS_LISTEN_ANNOTATION: &str = "vigil.dev/metrics-listen";

/// How often the loop looks again when nothing asks for sooner.
const TICK: Duration = Duration::from_millis(500);

/// Events kept per Rollout.
const EVENTS_KEPT: usize = 200;

/// The state key holding the process groups of the running engine.
const PROCESSES_KEY: &str = "processes";

/// Why the engine could not load its input, start, or serve a request.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The notification outbox (webhook `event`/`post-rollout` deliveries) could not start.
    #[error("failed to start the notification outbox: {0}")]
    StartOutbox(#[source] crate::notify::OutboxError),
    /// A file could not be read.
    #[error("failed to read {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file has problems (`vigil lint` finds the same ones).
    #[error("invalid input:\n{problems}")]
    LintFile {
        /// One problem per line, each naming the file and the field.
        problems: String,
    },
    /// A document could not be parsed into its kind.
    #[error("{file}: document {index}: {reason}")]
    ParseDocument {
        /// The file.
        file: String,
        /// Index of the document.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// A Rollout has no `spec.strategy.canary.trafficRouting.local.listen`, or it is not an
    /// address.
    #[error("rollout {rollout}: {field}: {problem}")]
    ReadListenAddress {
        /// The Rollout.
        rollout: String,
        /// The field.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// The proxy of a Rollout could not start.
    #[error("rollout {rollout}: {source}")]
    StartProxy {
        /// The Rollout.
        rollout: String,
        /// The cause (names the address).
        source: ProxyError,
    },
    /// The state directory failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// A request named a Rollout the engine does not run.
    #[error("no rollout named {name:?}")]
    FindRollout {
        /// The name.
        name: String,
    },
    /// A user request cannot be honoured (a promote with no step to finish).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The engine loop is gone.
    #[error("the engine has stopped")]
    ReachEngine,
}

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The state directory.
    pub state_dir: PathBuf,
    /// Prometheus to query instead of each metric's `address` (which may then be unset).
    pub prometheus: Option<Url>,
    /// Process supervision timings.
    pub supervisor: SupervisorConfig,
    /// Where transitions are notified (`vigil run --notifications FILE`); none by default.
    pub notifier: crate::notify::SharedNotifier,
    /// The process' notification outbox, which the `event` and `post-rollout` webhooks share
    /// with the notifier; `None`: the engine starts one.
    pub outbox: Option<crate::notify::Outbox>,
    /// Let analysis requests reach link-local and cloud metadata addresses
    /// (`--allow-link-local-egress`; refused by default).
    pub allow_link_local_egress: bool,
}

impl EngineConfig {
    /// `--prometheus` as the rule every run's clients follow: it replaces each address.
    fn command_line_prometheus(&self) -> CommandLinePrometheus {
        self.prometheus
            .clone()
            .map_or(CommandLinePrometheus::None, CommandLinePrometheus::Override)
    }
}

pub use crate::rollout::UserRequest;

struct Managed {
    name: String,
    spec: RolloutSpec,
    generation: i64,
    status: RolloutStatus,
    proxy: WeightedProxy,
    listen: SocketAddr,
    stable_service: Option<String>,
    canary_service: Option<String>,
    weight: u8,
    /// The baseline's weight as the state machine set it (`canary.baseline`).
    baseline_weight: u8,
    revisions: BTreeMap<String, PodTemplateSpec>,
    created_at: BTreeMap<String, Timestamp>,
    /// The settings (role metadata, minReadySeconds) decided for each revision: recorded
    /// only, local processes have no labels (kept in memory: after a restart they are
    /// decided again, which changes nothing).
    revision_settings: BTreeMap<String, crate::rollout::scaling::RevisionSettings>,
    events: Vec<EventRecord>,
    /// The Rollout's annotations (its notification subscriptions among them).
    annotations: BTreeMap<String, String>,
}

struct RunEntry {
    rollout: String,
    /// When the engine created it (`None` for a run stored before this was recorded): the
    /// oldest finished runs beyond the history limits go first.
    created_at: Option<Timestamp>,
    spec: AnalysisRunSpec,
    status: AnalysisRunStatus,
    clients: Result<Vec<MetricClient>, String>,
    next_at: Option<Timestamp>,
    /// The processes of its job metrics; killed when the run ends or is dropped.
    jobs: LocalJobs,
}

/// The engine loop's state.
pub struct Engine {
    config: EngineConfig,
    state: StateDir,
    supervisor: Supervisor,
    limiter: ConcurrencyLimiter,
    templates: BTreeMap<String, AnalysisTemplateSpec>,
    rollouts: BTreeMap<String, Managed>,
    runs: BTreeMap<String, RunEntry>,
    views: Arc<Mutex<BTreeMap<String, RolloutView>>>,
    recorded_pids: Vec<super::leftovers::RecordedProcess>,
    /// Calls the Rollouts' webhooks in the background (a hanging receiver never stalls a tick).
    webhooks: WebhookCaller,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("state_dir", &self.config.state_dir)
            .field("rollouts", &self.rollouts.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn supervisor_key(rollout: &str, revision: &str) -> String {
    format!("{rollout}-{revision}")
}

fn run_key(name: &str) -> String {
    format!("{name}.run")
}

impl Engine {
    /// Opens the state directory, kills processes a previous engine left behind, starts a
    /// proxy per Rollout (an address in use is an error naming it), loads recorded status and
    /// AnalysisRuns, and spawns the loop. Must be called inside a tokio runtime, with a rustls
    /// crypto provider installed (the notification outbox's client is built here).
    pub async fn start(
        config: EngineConfig,
        sources: Sources,
    ) -> Result<(EngineHandle, tokio::task::JoinHandle<()>), EngineError> {
        let state = StateDir::open(&config.state_dir)?;
        kill_leftovers(&state);
        let supervisor = Supervisor::new(config.supervisor.clone());
        let limiter = ConcurrencyLimiter::default().with_egress(
            crate::http_client::EgressGuard::new(config.allow_link_local_egress),
        );
        let views = Arc::new(Mutex::new(BTreeMap::new()));
        let outbox = match &config.outbox {
            Some(outbox) => outbox.clone(),
            None => {
                crate::notify::Outbox::start(
                    crate::notify::OutboxSettings {
                        egress: limiter.egress().clone(),
                        ..crate::notify::OutboxSettings::default()
                    },
                    crate::notify::NotificationMetrics::default(),
                )
                .map_err(EngineError::StartOutbox)?
                .0
            }
        };
        let webhooks = WebhookCaller::new(WebhookCallerConfig {
            outbox: Some(outbox),
            egress: limiter.egress().clone(),
            ..WebhookCallerConfig::default()
        });
        let mut engine = Engine {
            config,
            state,
            supervisor,
            limiter,
            templates: BTreeMap::new(),
            rollouts: BTreeMap::new(),
            runs: BTreeMap::new(),
            views: views.clone(),
            recorded_pids: Vec::new(),
            webhooks,
        };
        engine.load_runs()?;
        engine.apply(sources).await?;
        let (commands, receiver) = mpsc::channel(16);
        let task = tokio::spawn(engine.run(receiver));
        Ok((EngineHandle { commands, views }, task))
    }

    fn load_runs(&mut self) -> Result<(), EngineError> {
        for key in self.state.list()? {
            let Some(name) = key.strip_suffix(".run") else {
                continue;
            };
            let Some(stored) = self.state.load::<StoredRun>(&key)? else {
                continue;
            };
            let clients = clients_for(
                &stored.spec,
                &self.config.command_line_prometheus(),
                &NoSecrets,
                &self.limiter,
            )
            .map_err(|e| e.to_string());
            let completed = stored.status.phase.is_some_and(AnalysisPhase::is_completed);
            self.runs.insert(
                name.to_owned(),
                RunEntry {
                    rollout: stored.rollout,
                    created_at: stored.created_at,
                    spec: stored.spec,
                    status: stored.status,
                    clients,
                    // Resume at once: what fell due while the engine was down is measured now.
                    next_at: (!completed).then(Timestamp::now),
                    jobs: LocalJobs::new(name),
                },
            );
        }
        Ok(())
    }

    async fn apply(&mut self, sources: Sources) -> Result<Vec<String>, EngineError> {
        for (name, template) in sources.templates {
            self.templates.insert(name, template);
        }
        let mut applied = Vec::new();
        for rollout in sources.rollouts {
            let name = rollout.metadata.name.clone().unwrap_or_default();
            let annotations = rollout.metadata.annotations.clone().unwrap_or_default();
            let spec = rollout.spec;
            let revision = desired_revision(&spec, None);
            if let Some(managed) = self.rollouts.get_mut(&name) {
                managed.annotations = annotations;
                if managed.spec != spec {
                    managed.spec = spec.clone();
                    managed.generation += 1;
                    if let Some(template) = &spec.template {
                        managed.revisions.insert(revision, (**template).clone());
                    }
                    tracing::info!(rollout = %name, generation = managed.generation, "new spec applied");
                }
                store_rollout(&self.state, managed)?;
                applied.push(name);
                continue;
            }
            let stored: Option<StoredRollout> = self.state.load(&format!("{name}.rollout"))?;
            let status: RolloutStatus = self
                .state
                .load(&format!("{name}.status"))?
                .unwrap_or_default();
            let events: Vec<EventRecord> = self
                .state
                .load(&format!("{name}.events"))?
                .unwrap_or_default();
            let (generation, mut revisions) = match stored {
                Some(stored) if stored.spec == spec => (stored.generation, stored.revisions),
                Some(stored) => (stored.generation + 1, stored.revisions),
                None => (1, BTreeMap::new()),
            };
            if let Some(template) = &spec.template {
                revisions.insert(revision, (**template).clone());
            }
            let (listen, metrics_listen) = listen_addresses(&name, &rollout.metadata, &spec)?;
            let start_error = |source| EngineError::StartProxy {
                rollout: name.clone(),
                source,
            };
            let mut proxy = WeightedProxy::bind(listen, metrics_listen, name.clone())
                .await
                .map_err(start_error)?;
            if let Some(preview) = preview_listen_address(&name, &spec)? {
                proxy.serve_preview(preview).await.map_err(start_error)?;
            }
            let managed = Managed {
                name: name.clone(),
                spec,
                generation,
                status,
                listen: proxy.local_addr(),
                proxy,
                stable_service: None,
                canary_service: None,
                weight: 0,
                baseline_weight: 0,
                revisions,
                created_at: BTreeMap::new(),
                revision_settings: BTreeMap::new(),
                events,
                annotations,
            };
            store_rollout(&self.state, &managed)?;
            tracing::info!(
                rollout = %name,
                listen = %managed.listen,
                preview = ?managed.proxy.preview_addr(),
                metrics = %managed.proxy.metrics_addr(),
                generation,
                "rollout loaded"
            );
            self.rollouts.insert(name.clone(), managed);
            applied.push(name);
        }
        self.publish();
        Ok(applied)
    }

    fn request(&mut self, name: &str, request: UserRequest) -> Result<(), EngineError> {
        let managed = self
            .rollouts
            .get_mut(name)
            .ok_or_else(|| EngineError::FindRollout {
                name: name.to_owned(),
            })?;
        refuse_no_op(name, managed.spec.paused, Some(&managed.status), request)?;
        if request == UserRequest::RerunAnalysis {
            // Checked above: a run waits for a person. Without it, the rollout creates it anew.
            if let Some(run) = undecided_run(&managed.status) {
                let run = run.name.clone();
                if let Some(entry) = self.runs.remove(&run) {
                    entry.jobs.stop_all();
                }
                self.state.remove(&run_key(&run))?;
                tracing::info!(rollout = %name, %run, "analysis run deleted to run it again");
            }
            return Ok(());
        }
        match status_request(name, Some(&managed.status), request)? {
            Some(change) => change.apply_to(&mut managed.status),
            None => {
                managed.spec.paused = request.paused().unwrap_or(managed.spec.paused);
                store_rollout(&self.state, managed)?;
            }
        }
        tracing::info!(rollout = %name, request = %request.describe(name), "user request recorded");
        self.state
            .save(&format!("{name}.status"), &managed.status)?;
        Ok(())
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            let now = Timestamp::now();
            self.advance_runs(now).await;
            let names: Vec<String> = self.rollouts.keys().cloned().collect();
            for name in names {
                self.reconcile(&name, now).await;
            }
            self.record_processes();
            self.publish();
            let command = tokio::select! {
                command = commands.recv() => command,
                () = tokio::time::sleep(TICK) => continue,
            };
            match command {
                Some(Command::Apply { sources, reply }) => {
                    let _ = reply.send(self.apply(sources).await);
                }
                Some(Command::Request {
                    name,
                    request,
                    reply,
                }) => {
                    let _ = reply.send(self.request(&name, request));
                }
                Some(Command::Shutdown { reply }) => {
                    self.stop().await;
                    let _ = reply.send(());
                    return;
                }
                None => {
                    self.stop().await;
                    return;
                }
            }
        }
    }

    async fn stop(&mut self) {
        self.supervisor.shutdown().await;
        for (_, managed) in std::mem::take(&mut self.rollouts) {
            managed.proxy.shutdown().await;
        }
        if let Err(error) = self.state.save(PROCESSES_KEY, &Vec::<u32>::new()) {
            tracing::warn!(%error, "could not clear the recorded processes");
        }
        tracing::info!("engine stopped");
    }

    async fn advance_runs(&mut self, now: Timestamp) {
        let due: Vec<(String, &RunEntry)> = self
            .runs
            .iter()
            .filter(|(_, run)| run.next_at.is_some_and(|at| at <= now))
            .map(|(name, run)| (name.clone(), run))
            .collect();
        let advanced = futures::future::join_all(due.into_iter().map(|(name, run)| async move {
            let result = match &run.clients {
                Ok(clients) => advance(
                    &run.spec,
                    &run.status,
                    clients,
                    &run.jobs,
                    now,
                    MeasureAt::Now(now),
                    STORED_MEASUREMENTS_PER_METRIC,
                )
                .await
                .map(|a| (a.status, a.next_at))
                .map_err(|e| e.to_string()),
                Err(reason) => Err(reason.clone()),
            };
            (name, result)
        }))
        .await;
        for (name, result) in advanced {
            let Some(run) = self.runs.get_mut(&name) else {
                continue;
            };
            let (status, next_at) = match result {
                Ok(advanced) => advanced,
                Err(reason) => (errored_status(&run.status, reason, now), None),
            };
            run.next_at = next_at;
            if status.phase.is_some_and(AnalysisPhase::is_completed) {
                run.jobs.stop_all();
            }
            if status != run.status {
                if status.phase != run.status.phase {
                    tracing::info!(
                        run = %name,
                        phase = %status.phase.map(|p| p.to_string()).unwrap_or_default(),
                        message = %status.message.as_deref().unwrap_or_default(),
                        "analysis run"
                    );
                }
                run.status = status;
                save_run(&self.state, &name, run);
            }
        }
    }

    async fn reconcile(&mut self, name: &str, now: Timestamp) {
        let Some(mut managed) = self.rollouts.remove(name) else {
            return;
        };
        if let Err(error) = self.apply_routing(&mut managed) {
            tracing::warn!(rollout = %name, %error, "routing");
        }
        let mut platform = LocalRollout {
            engine: self,
            managed: &mut managed,
            now,
        };
        if let Err(error) = reconcile_once(&mut platform, now).await {
            // See platform::reconcile: nothing is recorded, the next tick tries again.
            tracing::warn!(rollout = %name, %error, "effect failed; retrying next tick");
        }
        if let Err(error) = self.apply_routing(&mut managed) {
            tracing::warn!(rollout = %name, %error, "routing");
        }
        self.rollouts.insert(name.to_owned(), managed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(revision: &str, ports: &[u16]) -> Backend {
        Backend {
            revision: revision.to_owned(),
            addrs: ports
                .iter()
                .map(|port| SocketAddr::from(([127, 0, 0, 1], *port)))
                .collect(),
        }
    }

    #[test]
    fn a_canary_without_ready_replicas_gets_no_traffic() {
        let routing = routing_for(backend("s", &[1000]), Some(backend("c", &[])), 50);
        assert_eq!(routing.canary_weight, 0);
        assert_eq!(routing.canary, Some(backend("c", &[])));
    }

    #[test]
    fn a_ready_canary_gets_its_weight() {
        let routing = routing_for(backend("s", &[]), Some(backend("c", &[1001])), 50);
        assert_eq!(routing.canary_weight, 50);
        assert_eq!(routing.stable, Some(backend("s", &[])));
    }

    #[test]
    fn no_canary_means_no_canary_weight() {
        assert_eq!(
            routing_for(backend("s", &[1000]), None, 30).canary_weight,
            0
        );
    }
}

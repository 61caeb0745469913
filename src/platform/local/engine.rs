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
use crate::analysis::driver::{MeasureAt, advance, clients_for};
use crate::analysis::instantiate::{builtin_args, instantiate};
use crate::analysis::provider::prometheus::{ConcurrencyLimiter, PrometheusClient};
use crate::analysis::provider::resolve::NoSecrets;
use crate::analysis::run::{STORED_MEASUREMENTS_PER_METRIC, errored_status};
use crate::analysis::template::Problem;
use crate::api::{
    AnalysisPhase, AnalysisRunSpec, AnalysisRunStatus, AnalysisRunSummary, AnalysisTemplateSpec,
    Argument, Rollout, RolloutSpec, RolloutStatus,
};
use crate::manifest::Manifest;
use crate::platform::reconcile::{Observed, Platform, reconcile_once};
use crate::rollout::{
    Decision, Effect, EventType, Observation, RequestError, RevisionObservation, ServiceSelection,
    status_request, template_hash,
};

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

/// Rollouts and AnalysisTemplates read from files or an `/apply` body.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The Rollouts.
    pub rollouts: Vec<Rollout>,
    /// The AnalysisTemplates (and ClusterAnalysisTemplates), by name.
    pub templates: Vec<(String, AnalysisTemplateSpec)>,
}

impl Sources {
    /// Reads and lints `paths`; any problem `vigil lint` reports is an error naming the file and
    /// the field.
    pub fn load(paths: &[PathBuf]) -> Result<Self, EngineError> {
        let mut sources = Sources::default();
        for path in paths {
            let text = std::fs::read_to_string(path).map_err(|source| EngineError::ReadFile {
                path: path.clone(),
                source,
            })?;
            sources.merge(Sources::parse(path, &text)?);
        }
        Ok(sources)
    }

    /// Lints and parses the documents of one file (`path` names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, EngineError> {
        // Before any parser: deep nesting costs the parser quadratic time.
        super::yaml_guard::check_nesting(text).map_err(|error| EngineError::LintFile {
            problems: format!("{}: {error}", path.display()),
        })?;
        let problems = crate::lint::lint_file(path, text);
        if !problems.is_empty() {
            let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            return Err(EngineError::LintFile {
                problems: lines.join("\n"),
            });
        }
        let file = path.display().to_string();
        let parse_error = |index: usize, reason: String| EngineError::ParseDocument {
            file: file.clone(),
            index,
            reason,
        };
        let mut sources = Sources::default();
        let manifests =
            crate::manifest::manifests(text).map_err(|e| parse_error(e.index, e.reason))?;
        for (index, manifest) in manifests {
            match manifest {
                Manifest::Rollout(rollout) => sources.rollouts.push(*rollout),
                Manifest::AnalysisTemplate { name, spec } => {
                    sources.templates.push((name.unwrap_or_default(), spec));
                }
                Manifest::Other { kind } => {
                    return Err(parse_error(
                        index,
                        format!(
                            "kind {kind:?}: vigil run takes Rollout and AnalysisTemplate documents"
                        ),
                    ));
                }
            }
        }
        Ok(sources)
    }

    /// Adds `other`'s documents.
    pub fn merge(&mut self, other: Sources) {
        self.rollouts.extend(other.rollouts);
        self.templates.extend(other.templates);
    }
}

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The state directory.
    pub state_dir: PathBuf,
    /// Prometheus to query instead of each metric's `address`.
    pub prometheus: Option<Url>,
    /// Process supervision timings.
    pub supervisor: SupervisorConfig,
}

pub use crate::rollout::UserRequest;

/// An event recorded on a Rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    /// When.
    pub time: Timestamp,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    /// CamelCase reason.
    pub reason: String,
    /// What happened.
    pub message: String,
}

/// An AnalysisRun as shown by `GET /rollouts/NAME`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    /// The run's name.
    pub name: String,
    /// Its status.
    pub status: AnalysisRunStatus,
}

/// What `GET /rollouts/NAME` returns: the status and what the engine sees around it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    /// The Rollout's name.
    pub name: String,
    /// Bumped at every new spec.
    pub generation: i64,
    /// The revision the spec asks for.
    pub desired_revision: String,
    /// The status, as recorded.
    pub status: RolloutStatus,
    /// The proxy's routing, read back.
    pub routing: RoutingState,
    /// Where the proxy listens.
    pub listen: SocketAddr,
    /// Where the proxy's `/metrics` is served.
    pub metrics_listen: SocketAddr,
    /// The Rollout's AnalysisRuns, oldest first.
    pub analysis_runs: Vec<RunView>,
    /// The latest events, oldest first.
    pub events: Vec<EventRecord>,
}

#[derive(Debug)]
enum Command {
    Apply {
        sources: Sources,
        reply: oneshot::Sender<Result<Vec<String>, EngineError>>,
    },
    Request {
        name: String,
        request: UserRequest,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// A cloneable handle to a running engine.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    commands: mpsc::Sender<Command>,
    views: Arc<Mutex<BTreeMap<String, RolloutView>>>,
}

impl EngineHandle {
    /// The Rollout as last recorded.
    pub fn get(&self, name: &str) -> Option<RolloutView> {
        self.views
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Names of the Rollouts the engine runs.
    pub fn names(&self) -> Vec<String> {
        self.views
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Applies new Rollouts and templates (a new template starts a new rollout); returns the
    /// names of the Rollouts applied.
    pub async fn apply(&self, sources: Sources) -> Result<Vec<String>, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Apply { sources, reply })
            .await
            .map_err(|_| EngineError::ReachEngine)?;
        answer.await.map_err(|_| EngineError::ReachEngine)?
    }

    /// Records a user request on a Rollout.
    pub async fn request(&self, name: &str, request: UserRequest) -> Result<(), EngineError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Request {
                name: name.to_owned(),
                request,
                reply,
            })
            .await
            .map_err(|_| EngineError::ReachEngine)?;
        answer.await.map_err(|_| EngineError::ReachEngine)?
    }

    /// Stops every process and proxy and returns once they are gone.
    pub async fn shutdown(&self) {
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .send(Command::Shutdown { reply })
            .await
            .is_ok()
        {
            let _ = answer.await;
        }
    }
}

/// What the state directory keeps per Rollout besides its status.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredRollout {
    spec: RolloutSpec,
    generation: i64,
    /// The pod template of every revision still around, so the stable one can be started
    /// again after a restart when the spec asks for another.
    revisions: BTreeMap<String, PodTemplateSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredRun {
    rollout: String,
    spec: AnalysisRunSpec,
    status: AnalysisRunStatus,
}

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
    revisions: BTreeMap<String, PodTemplateSpec>,
    created_at: BTreeMap<String, Timestamp>,
    events: Vec<EventRecord>,
}

struct RunEntry {
    rollout: String,
    spec: AnalysisRunSpec,
    status: AnalysisRunStatus,
    clients: Result<Vec<PrometheusClient>, String>,
    next_at: Option<Timestamp>,
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
    /// AnalysisRuns, and spawns the loop. Must be called inside a tokio runtime.
    pub async fn start(
        config: EngineConfig,
        sources: Sources,
    ) -> Result<(EngineHandle, tokio::task::JoinHandle<()>), EngineError> {
        let state = StateDir::open(&config.state_dir)?;
        kill_leftovers(&state);
        let supervisor = Supervisor::new(config.supervisor.clone());
        let views = Arc::new(Mutex::new(BTreeMap::new()));
        let mut engine = Engine {
            config,
            state,
            supervisor,
            limiter: ConcurrencyLimiter::default(),
            templates: BTreeMap::new(),
            rollouts: BTreeMap::new(),
            runs: BTreeMap::new(),
            views: views.clone(),
            recorded_pids: Vec::new(),
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
                self.config.prometheus.as_ref(),
                &NoSecrets,
                &self.limiter,
            )
            .map_err(|e| e.to_string());
            let completed = stored.status.phase.is_some_and(AnalysisPhase::is_completed);
            self.runs.insert(
                name.to_owned(),
                RunEntry {
                    rollout: stored.rollout,
                    spec: stored.spec,
                    status: stored.status,
                    clients,
                    // Resume at once: what fell due while the engine was down is measured now.
                    next_at: (!completed).then(Timestamp::now),
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
            let spec = rollout.spec;
            let revision = template_hash(&spec.template);
            if let Some(managed) = self.rollouts.get_mut(&name) {
                if managed.spec != spec {
                    managed.spec = spec.clone();
                    managed.generation += 1;
                    managed.revisions.insert(revision, spec.template.clone());
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
            revisions.insert(revision, spec.template.clone());
            let (listen, metrics_listen) = listen_addresses(&name, &rollout.metadata, &spec)?;
            let proxy = WeightedProxy::bind(listen, metrics_listen, name.clone())
                .await
                .map_err(|source| EngineError::StartProxy {
                    rollout: name.clone(),
                    source,
                })?;
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
                revisions,
                created_at: BTreeMap::new(),
                events,
            };
            store_rollout(&self.state, &managed)?;
            tracing::info!(
                rollout = %name,
                listen = %managed.listen,
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
        match status_request(name, Some(&managed.status), request)? {
            Some(change) => change.apply_to(&mut managed.status),
            None => {
                managed.spec.paused = request.paused().unwrap_or(managed.spec.paused);
                store_rollout(&self.state, managed)?;
            }
        }
        tracing::info!(rollout = %name, ?request, "user request recorded");
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
            if status != run.status {
                if status.phase != run.status.phase {
                    tracing::info!(run = %name, phase = ?status.phase, message = ?status.message, "analysis run");
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

    /// Appends to the message why a revision's processes are not ready (a command that does
    /// not exist, a crash), which the state machine cannot know.
    fn explain_revisions(&self, managed: &Managed, status: &mut RolloutStatus) {
        let processes = self.supervisor.status();
        let mut notes = Vec::new();
        for revision in [&status.canary_revision, &status.stable_revision]
            .into_iter()
            .flatten()
        {
            let Some(seen) = processes.get(&supervisor_key(&managed.name, revision)) else {
                continue;
            };
            if seen.ready < seen.desired
                && let Some(error) = &seen.last_error
            {
                notes.push(format!(
                    "revision {revision}: {}/{} ready: {error}",
                    seen.ready, seen.desired
                ));
            }
        }
        if notes.is_empty() {
            return;
        }
        let note = notes.join("; ");
        status.message = Some(match status.message.take() {
            Some(message) if !message.is_empty() => format!("{message}; {note}"),
            _ => note,
        });
    }

    fn observe(&self, managed: &Managed) -> Observation {
        let prefix = format!("{}-", managed.name);
        let revisions = self
            .supervisor
            .status()
            .into_values()
            .filter_map(|seen| {
                let revision = seen.revision.strip_prefix(&prefix)?.to_owned();
                Some(RevisionObservation {
                    created_at: managed.created_at.get(&revision).copied(),
                    revision,
                    replicas: seen.desired as i32,
                    ready_replicas: seen.ready as i32,
                })
            })
            .collect();
        let routing = managed.proxy.current();
        let analysis_runs = self
            .runs
            .iter()
            .filter(|(_, run)| run.rollout == managed.name)
            .map(|(name, run)| AnalysisRunSummary::of(name, &run.status))
            .collect();
        let spec_problems = self.analysis_problems(&managed.name, &managed.spec);
        Observation {
            rollout_name: managed.name.clone(),
            generation: Some(managed.generation),
            desired_revision: template_hash(&managed.spec.template),
            revisions,
            router_canary_weight: Some(i32::from(routing.canary_weight)),
            services: ServiceSelection {
                stable: routing.stable.map(|b| b.revision),
                canary: routing.canary.map(|b| b.revision),
            },
            analysis_runs,
            spec_problems,
        }
    }

    /// What would keep an analysis of `spec` from starting, found before any traffic moves:
    /// a template not given to `vigil run`, or templates and arguments that do not make a run
    /// (an undeclared or unresolvable argument, metrics that clash).
    fn analysis_problems(&self, rollout: &str, spec: &RolloutSpec) -> Vec<Problem> {
        let mut problems = Vec::new();
        for analysis in crate::rollout::declared_analyses(spec) {
            let missing = analysis.missing_templates(
                |t| self.templates.contains_key(&t.template_name),
                |t| {
                    format!(
                        "AnalysisTemplate {:?} was not given to vigil run (pass its file too)",
                        t.template_name
                    )
                },
            );
            if !missing.is_empty() {
                problems.extend(missing);
                continue;
            }
            let names: Vec<String> = analysis
                .templates
                .iter()
                .map(|t| t.template_name.clone())
                .collect();
            // The revisions are not known yet; any value stands in for them here.
            if let Err(message) = self.run_spec(rollout, &names, analysis.args, "stable", "canary")
            {
                problems.push(Problem {
                    path: analysis.kind.path(),
                    message,
                });
            }
        }
        problems
    }

    /// The spec of a run of `templates` with `args` for the given revisions.
    fn run_spec(
        &self,
        rollout: &str,
        templates: &[String],
        args: &[Argument],
        stable: &str,
        canary: &str,
    ) -> Result<AnalysisRunSpec, String> {
        let mut chosen = Vec::new();
        for name in templates {
            match self.templates.get(name) {
                Some(template) => chosen.push((name.clone(), template.clone())),
                None => {
                    return Err(format!(
                        "AnalysisTemplate {name:?} was not given to vigil run"
                    ));
                }
            }
        }
        // There is no namespace locally: a template's own default (usually `.*`) applies.
        let mut given: Vec<Argument> = builtin_args(rollout, "", stable, canary)
            .into_iter()
            .filter(|a| a.name != "namespace")
            .collect();
        given.extend(args.iter().cloned());
        instantiate(&chosen, &given).map_err(|error| error.to_string())
    }

    async fn execute(
        &mut self,
        managed: &mut Managed,
        effect: &Effect,
        now: Timestamp,
    ) -> Result<(), ActError> {
        match effect {
            Effect::ScaleRevision { revision, replicas } => {
                self.scale(managed, revision, *replicas, now).await
            }
            Effect::SetWeight { canary_weight } => {
                managed.weight = (*canary_weight).clamp(0, 100) as u8;
                self.apply_routing(managed).map_err(ActError::Route)
            }
            Effect::PointServices { stable, canary } => {
                if let Some(stable) = stable {
                    managed.stable_service = Some(stable.clone());
                }
                if let Some(canary) = canary {
                    managed.canary_service = Some(canary.clone());
                }
                self.apply_routing(managed).map_err(ActError::Route)
            }
            Effect::CreateAnalysisRun {
                name,
                templates,
                args,
                stable_revision,
                canary_revision,
                ..
            } => {
                if !self.runs.contains_key(name) {
                    let refs: Vec<String> =
                        templates.iter().map(|t| t.template_name.clone()).collect();
                    let run = self.create_run(
                        &managed.name,
                        &refs,
                        args,
                        stable_revision,
                        canary_revision,
                        now,
                    );
                    tracing::info!(rollout = %managed.name, run = %name, templates = ?refs, "analysis run created");
                    save_run(&self.state, name, &run);
                    self.runs.insert(name.clone(), run);
                }
                Ok(())
            }
            Effect::TerminateAnalysisRun { name } => {
                if let Some(run) = self.runs.get_mut(name)
                    && !run.spec.terminate
                {
                    run.spec.terminate = true;
                    if run.next_at.is_some() {
                        run.next_at = Some(now);
                    }
                    save_run(&self.state, name, run);
                }
                Ok(())
            }
            Effect::DeleteRevision { revision } => {
                match self
                    .supervisor
                    .stop_revision(&supervisor_key(&managed.name, revision))
                    .await
                {
                    Ok(()) | Err(SupervisorError::UnknownRevision { .. }) => {}
                    Err(source) => return Err(ActError::Process(source)),
                }
                managed.created_at.remove(revision);
                if *revision != template_hash(&managed.spec.template) {
                    managed.revisions.remove(revision);
                }
                store_rollout(&self.state, managed).map_err(ActError::Record)
            }
            Effect::Event {
                type_,
                reason,
                message,
            } => {
                let type_ = match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                };
                tracing::info!(rollout = %managed.name, type_, %reason, %message, "event");
                managed.events.push(EventRecord {
                    time: now,
                    type_: type_.to_owned(),
                    reason: reason.clone(),
                    message: message.clone(),
                });
                if managed.events.len() > EVENTS_KEPT {
                    let excess = managed.events.len() - EVENTS_KEPT;
                    managed.events.drain(..excess);
                }
                self.state
                    .save(&format!("{}.events", managed.name), &managed.events)
                    .map_err(ActError::Record)
            }
        }
    }

    async fn scale(
        &mut self,
        managed: &mut Managed,
        revision: &str,
        replicas: i32,
        now: Timestamp,
    ) -> Result<(), ActError> {
        let key = supervisor_key(&managed.name, revision);
        let replicas = replicas.max(0) as u32;
        if let Some(seen) = self.supervisor.status().get(&key) {
            if seen.desired != replicas {
                self.supervisor
                    .scale_revision(&key, replicas)
                    .await
                    .map_err(ActError::Process)?;
            }
            return Ok(());
        }
        if replicas == 0 {
            return Ok(());
        }
        let template = managed
            .revisions
            .get(revision)
            .ok_or_else(|| ActError::FindTemplate {
                revision: revision.to_owned(),
            })?;
        let spec = ProcessSpec::from_pod_template(template).map_err(ActError::Process)?;
        managed.created_at.entry(revision.to_owned()).or_insert(now);
        match self.supervisor.start_revision(&key, spec, replicas).await {
            Ok(()) => Ok(()),
            // The revision stays registered and keeps retrying with backoff (the binary may
            // appear later); the status message names the command while it is not ready.
            Err(error @ SupervisorError::SpawnProcess { .. }) => {
                tracing::warn!(rollout = %managed.name, %revision, %error, "revision not started");
                Ok(())
            }
            Err(error) => Err(ActError::Process(error)),
        }
    }

    fn create_run(
        &self,
        rollout: &str,
        templates: &[String],
        args: &[Argument],
        stable: &str,
        canary: &str,
        now: Timestamp,
    ) -> RunEntry {
        let failed = |spec: AnalysisRunSpec, reason: String| RunEntry {
            rollout: rollout.to_owned(),
            spec,
            status: errored_status(&AnalysisRunStatus::default(), reason.clone(), now),
            clients: Err(reason),
            next_at: None,
        };
        let spec = match self.run_spec(rollout, templates, args, stable, canary) {
            Ok(spec) => spec,
            Err(reason) => return failed(AnalysisRunSpec::default(), reason),
        };
        match clients_for(
            &spec,
            self.config.prometheus.as_ref(),
            &NoSecrets,
            &self.limiter,
        ) {
            Ok(clients) => RunEntry {
                rollout: rollout.to_owned(),
                spec,
                status: AnalysisRunStatus::default(),
                clients: Ok(clients),
                next_at: Some(now),
            },
            Err(error) => failed(spec, error.to_string()),
        }
    }

    /// Points the proxy at the ready processes of the revisions the local "services" select,
    /// with the weight as set; does nothing when that is already what it does.
    fn apply_routing(&self, managed: &mut Managed) -> Result<(), ProxyError> {
        let Some(stable) = &managed.stable_service else {
            return Ok(());
        };
        let processes = self.supervisor.status();
        let backend = |revision: &String| Backend {
            revision: revision.clone(),
            addrs: processes
                .get(&supervisor_key(&managed.name, revision))
                .map(|seen| seen.addrs.clone())
                .unwrap_or_default(),
        };
        let wanted = routing_for(
            backend(stable),
            managed.canary_service.as_ref().map(backend),
            managed.weight,
        );
        if managed.proxy.current() != wanted {
            let RoutingState {
                stable,
                canary,
                canary_weight,
            } = wanted;
            if let Some(stable) = stable {
                managed.proxy.set_backends(stable, canary, canary_weight)?;
            }
        }
        Ok(())
    }

    fn record_processes(&mut self) {
        let pids = self.supervisor.recorded_processes();
        if pids != self.recorded_pids {
            match self.state.save(PROCESSES_KEY, &pids) {
                Ok(()) => self.recorded_pids = pids,
                Err(error) => tracing::warn!(%error, "could not record processes"),
            }
        }
    }

    fn publish(&self) {
        let views: BTreeMap<String, RolloutView> = self
            .rollouts
            .values()
            .map(|managed| {
                let analysis_runs = self
                    .runs
                    .iter()
                    .filter(|(_, run)| run.rollout == managed.name)
                    .map(|(name, run)| RunView {
                        name: name.clone(),
                        status: run.status.clone(),
                    })
                    .collect();
                let view = RolloutView {
                    name: managed.name.clone(),
                    generation: managed.generation,
                    desired_revision: template_hash(&managed.spec.template),
                    status: managed.status.clone(),
                    routing: managed.proxy.current(),
                    listen: managed.listen,
                    metrics_listen: managed.proxy.metrics_addr(),
                    analysis_runs,
                    events: managed.events.clone(),
                };
                (managed.name.clone(), view)
            })
            .collect();
        *self.views.lock().unwrap_or_else(PoisonError::into_inner) = views;
    }
}

/// Why an effect could not be carried out.
#[derive(Debug, thiserror::Error)]
enum ActError {
    /// Starting, scaling or stopping processes failed.
    #[error("{0}")]
    Process(SupervisorError),
    /// The proxy refused the routing.
    #[error("{0}")]
    Route(ProxyError),
    /// The state directory failed.
    #[error("{0}")]
    Record(StateError),
    /// A revision must be started but its pod template is not known.
    #[error("failed to start revision {revision}: its pod template is not known any more")]
    FindTemplate { revision: String },
}

/// One Rollout of the engine as a [`Platform`] for the shared [`reconcile_once`].
struct LocalRollout<'e> {
    engine: &'e mut Engine,
    managed: &'e mut Managed,
    now: Timestamp,
}

impl Platform for LocalRollout<'_> {
    type Error = ActError;
    type Recorded = ();

    async fn observe(&mut self) -> Result<Observed, ActError> {
        Ok(Observed {
            spec: local_spec(&self.managed.spec),
            status: self.managed.status.clone(),
            observation: self.engine.observe(self.managed),
        })
    }

    async fn execute(&mut self, effect: &Effect) -> Result<bool, ActError> {
        self.engine.execute(self.managed, effect, self.now).await?;
        Ok(!matches!(effect, Effect::Event { .. }))
    }

    async fn record(&mut self, _: &RolloutStatus, decision: &Decision) -> Result<(), ActError> {
        let mut status = decision.status.clone();
        self.engine.explain_revisions(self.managed, &mut status);
        if status == self.managed.status {
            return Ok(());
        }
        log_transition(&self.managed.name, &self.managed.status, &status);
        self.managed.status = status;
        self.engine
            .state
            .save(
                &format!("{}.status", self.managed.name),
                &self.managed.status,
            )
            .map_err(ActError::Record)
    }
}

/// The spec as the local platform reads it: the proxy is both the stable and the canary
/// service (it routes by revision), so both are always "configured", whatever the spec names.
fn local_spec(spec: &RolloutSpec) -> RolloutSpec {
    let mut spec = spec.clone();
    let canary = &mut spec.strategy.canary;
    canary
        .stable_service
        .get_or_insert_with(|| "stable".to_owned());
    canary
        .canary_service
        .get_or_insert_with(|| "canary".to_owned());
    spec
}

fn store_rollout(state: &StateDir, managed: &Managed) -> Result<(), StateError> {
    state.save(
        &format!("{}.rollout", managed.name),
        &StoredRollout {
            spec: managed.spec.clone(),
            generation: managed.generation,
            revisions: managed.revisions.clone(),
        },
    )
}

fn save_run(state: &StateDir, name: &str, run: &RunEntry) {
    let stored = StoredRun {
        rollout: run.rollout.clone(),
        spec: run.spec.clone(),
        status: run.status.clone(),
    };
    if let Err(error) = state.save(&run_key(name), &stored) {
        tracing::error!(run = %name, %error, "could not record the analysis run");
    }
}

fn listen_addresses(
    name: &str,
    metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    spec: &RolloutSpec,
) -> Result<(SocketAddr, SocketAddr), EngineError> {
    let field = "spec.strategy.canary.trafficRouting.local.listen";
    let problem = |field: &str, problem: String| EngineError::ReadListenAddress {
        rollout: name.to_owned(),
        field: field.to_owned(),
        problem,
    };
    let listen = spec
        .strategy
        .canary
        .traffic_routing
        .as_ref()
        .and_then(|t| t.local.as_ref())
        .map(|l| l.listen.clone())
        .ok_or_else(|| {
            problem(
                field,
                "missing: vigil run needs the address of the local proxy, e.g. 127.0.0.1:8080"
                    .to_owned(),
            )
        })?;
    let listen: SocketAddr = listen
        .parse()
        .map_err(|e| problem(field, format!("{listen:?} is not an IP:port address: {e}")))?;
    let annotation = format!("metadata.annotations[{METRICS_LISTEN_ANNOTATION}]");
    let metrics = match metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(METRICS_LISTEN_ANNOTATION))
    {
        Some(text) => text.parse().map_err(|e| {
            problem(
                &annotation,
                format!("{text:?} is not an IP:port address: {e}"),
            )
        })?,
        None => SocketAddr::new(listen.ip(), 0),
    };
    Ok((listen, metrics))
}

/// Kills the process groups a previous engine recorded (it was killed before it could stop
/// them): their revisions are started again from status.
fn kill_leftovers(state: &StateDir) {
    let records = match state.load::<serde_json::Value>(PROCESSES_KEY) {
        Ok(json) => json.map(|json| super::leftovers::parse_records(&json)),
        Err(error) => {
            tracing::warn!(%error, "could not read the processes of a previous engine");
            return;
        }
    };
    // Only a PID that still has its recorded start time is signalled (issue 9, item 13).
    for record in records.unwrap_or_default() {
        super::leftovers::end_leftover(record);
    }
    if let Err(error) = state.save(PROCESSES_KEY, &Vec::<u32>::new()) {
        tracing::warn!(%error, "could not clear the recorded processes");
    }
}

fn log_transition(name: &str, before: &RolloutStatus, after: &RolloutStatus) {
    if before.phase != after.phase
        || before.current_step_index != after.current_step_index
        || before.canary_weight != after.canary_weight
    {
        tracing::info!(
            rollout = %name,
            phase = ?after.phase,
            step = ?after.step,
            weight = after.canary_weight,
            message = ?after.message,
            "rollout"
        );
    }
}

/// One line for people: step, weight, phase, the analysis verdicts and the message, as
/// `vigil local get --watch` and `vigil demo` print it.
pub fn progress_line(view: &RolloutView) -> String {
    let status = &view.status;
    let mut line = format!(
        "{:<10} step {:<5} weight {:>3}%  {:<11}",
        view.name,
        status.step.as_deref().unwrap_or("-"),
        status.canary_weight,
        format!("{:?}", status.phase.unwrap_or_default()),
    );
    for analysis in [&status.step_analysis, &status.background_analysis]
        .into_iter()
        .flatten()
    {
        let metrics: Vec<String> = analysis
            .metrics
            .iter()
            .map(|m| {
                format!(
                    "{}={:?}{}",
                    m.name,
                    m.phase,
                    m.value
                        .as_ref()
                        .map(|v| format!("({v})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        line.push_str(&format!(
            "  analysis {:?} [{}]",
            analysis.phase,
            metrics.join(" ")
        ));
        if let Some(score) = &analysis.score {
            line.push_str(&format!(" score {score}"));
        }
    }
    if let Some(message) = &status.message {
        line.push_str(&format!("  — {message}"));
    }
    line
}

/// The routing the proxy should have: the canary gets its weight only once it has a ready
/// replica. Until then (a fresh canary, or every process restarting after the engine was
/// killed) its share goes to stable, so the canary is never charged with the 502s of a
/// revision that is not up yet; the rollout sees weight 0 and its step waits.
fn routing_for(stable: Backend, canary: Option<Backend>, weight: u8) -> RoutingState {
    let canary_ready = canary.as_ref().is_some_and(|c| !c.addrs.is_empty());
    RoutingState {
        stable: Some(stable),
        canary,
        canary_weight: if canary_ready { weight } else { 0 },
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

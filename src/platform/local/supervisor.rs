//! The local platform's process supervisor: each revision of a Rollout runs as `replicas` local
//! processes, the way a ReplicaSet runs pods.
//!
//! - Each replica gets its own free loopback port in `$PORT` (bound on `127.0.0.1:0`, then
//!   released). Another process may grab the port in between; the replica then exits early and
//!   is restarted on a fresh port, like any crash.
//! - Readiness: an HTTP GET on `http://127.0.0.1:$PORT{readiness_path}` answering 2xx, or, with
//!   no probe, a port that accepts connections. Probed every 50 ms until ready, then every
//!   second; a ready replica turns unready after [`SupervisorConfig::failure_threshold`] failed
//!   probes in a row (Kubernetes' `failureThreshold`).
//! - A replica that exits (crash or not) is restarted after an exponential backoff
//!   ([`SupervisorConfig::backoff_initial`] doubling up to [`SupervisorConfig::backoff_max`],
//!   reset once a process stayed up [`SupervisorConfig::backoff_reset_after`]); restarts are
//!   counted. A command that cannot be started is retried with the same backoff (the binary may
//!   appear later, as with `ImagePullBackOff`), and its error is in the status.
//! - Each process leads its own process group; stopping sends SIGTERM to the group, then
//!   SIGKILL after [`SupervisorConfig::grace_period`]. Dropping the supervisor kills every group
//!   at once (SIGKILL), so children never outlive it, unless the supervisor itself is killed
//!   with SIGKILL (no `PR_SET_PDEATHSIG` without `unsafe`; `vigil run` handles SIGTERM/SIGINT
//!   and shuts down cleanly).
//! - Output: each child's stdout and stderr are forwarded to `tracing` at debug level (target
//!   `vigil::child`); the last stderr lines are kept and shown when a process exits.

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::http::{self, HttpClient};

/// Why a supervisor operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The pod template does not describe a runnable process.
    #[error("failed to read the pod template: {field}: {problem}")]
    ReadPodTemplate {
        /// The offending field, e.g. `spec.containers[0].command`.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The revision is already running.
    #[error("failed to start revision {revision}: it is already running")]
    StartRevisionExists {
        /// The revision.
        revision: String,
    },
    /// The process spec has no command.
    #[error("failed to start revision {revision}: the command is empty")]
    StartRevisionNoCommand {
        /// The revision.
        revision: String,
    },
    /// A process could not be started.
    #[error("failed to start `{command}` for revision {revision}: {source}")]
    SpawnProcess {
        /// The revision.
        revision: String,
        /// The command that could not be started.
        command: String,
        /// The cause.
        source: std::io::Error,
    },
    /// No free loopback port could be found.
    #[error("failed to pick a free loopback port: {source}")]
    PickPort {
        /// The cause.
        source: std::io::Error,
    },
    /// The revision is not known to the supervisor.
    #[error("failed to {action} revision {revision}: no such revision")]
    UnknownRevision {
        /// What was asked: `scale`, `stop`, `wait for`.
        action: &'static str,
        /// The revision.
        revision: String,
    },
    /// The revision did not become ready in time.
    #[error(
        "revision {revision} not ready after {waited:?}: {ready}/{desired} ready{}",
        last_error.as_ref().map(|e| format!(", last error: {e}")).unwrap_or_default()
    )]
    WaitReady {
        /// The revision.
        revision: String,
        /// How long was waited.
        waited: Duration,
        /// Ready replicas.
        ready: u32,
        /// Desired replicas.
        desired: u32,
        /// The last error of any replica.
        last_error: Option<String>,
    },
}

/// What to run for a revision: the first container of the pod template, as a local process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessSpec {
    /// The executable and its first arguments (the container's `command`); `command[0]` is
    /// looked up in `$PATH` unless it contains a `/`.
    pub command: Vec<String>,
    /// More arguments (the container's `args`).
    pub args: Vec<String>,
    /// Extra environment, on top of the supervisor's. `PORT` is always set by the supervisor.
    pub env: Vec<(String, String)>,
    /// Readiness probe path (`readinessProbe.httpGet.path`); `None` means ready once the port
    /// accepts connections.
    pub readiness_path: Option<String>,
}

impl ProcessSpec {
    /// Reads the first container of a pod template: `command` (required: there is no image
    /// entrypoint locally) and `args`, `env` entries with a literal `value` (entries with
    /// `valueFrom` are skipped with a warning: there is no Secret or ConfigMap locally), and
    /// `readinessProbe.httpGet.path` (`/` when the probe has no path; its port is ignored: the
    /// process listens on `$PORT`).
    pub fn from_pod_template(template: &PodTemplateSpec) -> Result<Self, SupervisorError> {
        let invalid = |field: &str, problem: &str| SupervisorError::ReadPodTemplate {
            field: field.to_owned(),
            problem: problem.to_owned(),
        };
        let pod = template
            .spec
            .as_ref()
            .ok_or_else(|| invalid("spec", "missing: the template has no pod spec"))?;
        let container = pod
            .containers
            .first()
            .ok_or_else(|| invalid("spec.containers", "empty: at least one container is needed"))?;
        let command = container.command.clone().unwrap_or_default();
        if command.first().is_none_or(|c| c.trim().is_empty()) {
            return Err(invalid(
                "spec.containers[0].command",
                "missing or empty: the local platform runs this command (it has no image entrypoint)",
            ));
        }
        let mut env = Vec::new();
        for (i, var) in container.env.iter().flatten().enumerate() {
            if var.value_from.is_some() {
                tracing::warn!(
                    field = %format!("spec.containers[0].env[{i}].valueFrom"),
                    name = %var.name,
                    "skipped: valueFrom is not supported by the local platform"
                );
                continue;
            }
            env.push((var.name.clone(), var.value.clone().unwrap_or_default()));
        }
        let readiness_path = container
            .readiness_probe
            .as_ref()
            .and_then(|probe| probe.http_get.as_ref())
            .map(|get| get.path.clone().unwrap_or_else(|| "/".to_owned()));
        Ok(Self {
            command,
            args: container.args.clone().unwrap_or_default(),
            env,
            readiness_path,
        })
    }

    /// The command line for messages: program and arguments separated by spaces.
    pub fn display(&self) -> String {
        self.command
            .iter()
            .chain(&self.args)
            .cloned()
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Timings of the supervisor.
#[derive(Clone, Debug)]
pub struct SupervisorConfig {
    /// Between SIGTERM and SIGKILL when stopping a process. Default 5 s.
    pub grace_period: Duration,
    /// First restart delay. Default 200 ms.
    pub backoff_initial: Duration,
    /// Longest restart delay. Default 10 s.
    pub backoff_max: Duration,
    /// A process up this long resets the backoff. Default 10 s.
    pub backoff_reset_after: Duration,
    /// Probe period until the first success. Default 50 ms.
    pub probe_interval_starting: Duration,
    /// Probe period once ready. Default 1 s.
    pub probe_interval_ready: Duration,
    /// Timeout of one probe. Default 1 s.
    pub probe_timeout: Duration,
    /// Failed probes in a row that make a ready replica unready. Default 3.
    pub failure_threshold: u32,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            grace_period: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            backoff_reset_after: Duration::from_secs(10),
            probe_interval_starting: Duration::from_millis(50),
            probe_interval_ready: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(1),
            failure_threshold: 3,
        }
    }
}

/// One replica as observed now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// Its index within the revision (0-based; scaling down removes the highest).
    pub index: u32,
    /// The running process' id.
    pub pid: Option<u32>,
    /// Its start time (`/proc/PID/stat` field 22), recorded so that a later engine signals
    /// this process and never one that reused its PID.
    pub start_time: Option<u64>,
    /// `127.0.0.1:$PORT` of the running process.
    pub addr: Option<SocketAddr>,
    /// A process is running.
    pub running: bool,
    /// The readiness probe passes.
    pub ready: bool,
    /// Since when the readiness probe has passed without a break (`None` while not ready):
    /// what `minReadySeconds` counts from.
    pub ready_since: Option<Instant>,
    /// Times the process exited and was started again.
    pub restarts: u32,
    /// The last failure: a start error, or an exit with its status and last stderr lines.
    pub last_error: Option<String>,
}

impl RevisionStatus {
    /// The replicas available at `now`: ready for at least `min_ready` without a break (a
    /// Deployment's `minReadySeconds`; with none, every ready replica).
    pub fn available(&self, min_ready: Duration, now: Instant) -> u32 {
        self.replicas
            .iter()
            .filter(|r| {
                r.ready
                    && r.ready_since
                        .is_some_and(|since| now.saturating_duration_since(since) >= min_ready)
            })
            .count() as u32
    }
}

/// A revision as observed now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevisionStatus {
    /// The revision.
    pub revision: String,
    /// Replicas wanted.
    pub desired: u32,
    /// Replicas with a running process.
    pub running: u32,
    /// Ready replicas.
    pub ready: u32,
    /// Restarts of all replicas.
    pub restarts: u32,
    /// Addresses of the ready replicas, by replica index: what the proxy should route to.
    pub addrs: Vec<SocketAddr>,
    /// The most recent failure among the replicas, if any.
    pub last_error: Option<String>,
    /// Each replica.
    pub replicas: Vec<ReplicaStatus>,
}

/// Kills a process group when dropped, so that no child or grandchild outlives its replica
/// task (task aborted, supervisor dropped, runtime shut down).
struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    fn signal(&self, signal: Signal) {
        if let Some(pgid) = self.pgid {
            // ESRCH (already gone) is the normal case after an exit.
            let _ = kill_process_group(pgid, signal);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::KILL);
    }
}

struct Replica {
    index: u32,
    status: Arc<Mutex<ReplicaStatus>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct Revision {
    spec: Arc<ProcessSpec>,
    replicas: Vec<Replica>,
}

/// Runs the processes of each revision. Dropping it kills every process at once; call
/// [`Supervisor::shutdown`] for a graceful stop.
pub struct Supervisor {
    config: Arc<SupervisorConfig>,
    client: HttpClient<Empty<Bytes>>,
    revisions: Mutex<BTreeMap<String, Revision>>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("config", &self.config)
            .field("revisions", &self.status().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep going.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new(SupervisorConfig::default())
    }
}

impl Supervisor {
    /// A supervisor with no revisions. Must be created inside a tokio runtime.
    pub fn new(config: SupervisorConfig) -> Self {
        Self {
            config: Arc::new(config),
            client: http::client(),
            revisions: Mutex::new(BTreeMap::new()),
        }
    }

    /// Starts `replicas` processes of `revision`. Returns once each has been started (not once
    /// ready: see [`Supervisor::wait_ready`]). When the command cannot be started, the error
    /// names it; the revision stays registered, not ready, and keeps retrying with backoff
    /// (stop it with [`Supervisor::stop_revision`]).
    pub async fn start_revision(
        &self,
        revision: &str,
        spec: ProcessSpec,
        replicas: u32,
    ) -> Result<(), SupervisorError> {
        if spec.command.first().is_none_or(|c| c.is_empty()) {
            return Err(SupervisorError::StartRevisionNoCommand {
                revision: revision.to_owned(),
            });
        }
        let spec = Arc::new(spec);
        let started = {
            let mut revisions = lock(&self.revisions);
            if revisions.contains_key(revision) {
                return Err(SupervisorError::StartRevisionExists {
                    revision: revision.to_owned(),
                });
            }
            let mut entry = Revision {
                spec: spec.clone(),
                replicas: Vec::new(),
            };
            let started = self.add_replicas(revision, &mut entry, replicas);
            revisions.insert(revision.to_owned(), entry);
            started
        };
        tracing::info!(revision, replicas, command = %spec.display(), "revision started");
        first_error(started).await
    }

    /// Scales `revision` to `replicas`: new replicas are started (this returns once each was
    /// started), the highest-index ones are stopped gracefully (this returns once they exited).
    pub async fn scale_revision(
        &self,
        revision: &str,
        replicas: u32,
    ) -> Result<(), SupervisorError> {
        let (started, removed) = {
            let mut revisions = lock(&self.revisions);
            let entry =
                revisions
                    .get_mut(revision)
                    .ok_or_else(|| SupervisorError::UnknownRevision {
                        action: "scale",
                        revision: revision.to_owned(),
                    })?;
            let current = entry.replicas.len() as u32;
            if replicas >= current {
                (
                    self.add_replicas(revision, entry, replicas - current),
                    Vec::new(),
                )
            } else {
                (Vec::new(), entry.replicas.split_off(replicas as usize))
            }
        };
        tracing::info!(revision, replicas, "revision scaled");
        stop_replicas(removed).await;
        first_error(started).await
    }

    /// Stops every process of `revision` gracefully and forgets it.
    pub async fn stop_revision(&self, revision: &str) -> Result<(), SupervisorError> {
        let entry = lock(&self.revisions).remove(revision).ok_or_else(|| {
            SupervisorError::UnknownRevision {
                action: "stop",
                revision: revision.to_owned(),
            }
        })?;
        stop_replicas(entry.replicas).await;
        tracing::info!(revision, "revision stopped");
        Ok(())
    }

    /// Stops every revision gracefully (all at once) and forgets them.
    pub async fn shutdown(&self) {
        let all: Vec<Replica> = std::mem::take(&mut *lock(&self.revisions))
            .into_values()
            .flat_map(|revision| revision.replicas)
            .collect();
        stop_replicas(all).await;
        tracing::info!("supervisor stopped");
    }

    /// Every revision as observed now, by name.
    pub fn status(&self) -> BTreeMap<String, RevisionStatus> {
        let revisions = lock(&self.revisions);
        revisions
            .iter()
            .map(|(name, entry)| {
                let replicas: Vec<ReplicaStatus> = entry
                    .replicas
                    .iter()
                    .map(|replica| lock(&replica.status).clone())
                    .collect();
                let count =
                    |f: fn(&ReplicaStatus) -> bool| replicas.iter().filter(|r| f(r)).count() as u32;
                let status = RevisionStatus {
                    revision: name.clone(),
                    desired: replicas.len() as u32,
                    running: count(|r| r.running),
                    ready: count(|r| r.ready),
                    restarts: replicas.iter().map(|r| r.restarts).sum(),
                    addrs: replicas
                        .iter()
                        .filter(|r| r.ready)
                        .filter_map(|r| r.addr)
                        .collect(),
                    last_error: replicas.iter().rev().find_map(|r| r.last_error.clone()),
                    replicas,
                };
                (name.clone(), status)
            })
            .collect()
    }

    /// Every running process with its start time, sorted: what `processes.json` records.
    pub fn recorded_processes(&self) -> Vec<super::leftovers::RecordedProcess> {
        let mut recorded: Vec<_> = self
            .status()
            .values()
            .flat_map(|revision| revision.replicas.iter())
            .filter_map(|replica| {
                Some(super::leftovers::RecordedProcess {
                    pid: replica.pid?,
                    start_time: replica.start_time?,
                })
            })
            .collect();
        recorded.sort_unstable();
        recorded
    }

    /// The spec a revision runs.
    pub fn spec(&self, revision: &str) -> Option<ProcessSpec> {
        lock(&self.revisions)
            .get(revision)
            .map(|entry| (*entry.spec).clone())
    }

    /// Waits until every desired replica of `revision` is ready, for at most `limit`.
    pub async fn wait_ready(
        &self,
        revision: &str,
        limit: Duration,
    ) -> Result<RevisionStatus, SupervisorError> {
        let started = Instant::now();
        loop {
            let status =
                self.status()
                    .remove(revision)
                    .ok_or_else(|| SupervisorError::UnknownRevision {
                        action: "wait for",
                        revision: revision.to_owned(),
                    })?;
            if status.ready == status.desired {
                return Ok(status);
            }
            if started.elapsed() >= limit {
                return Err(SupervisorError::WaitReady {
                    revision: revision.to_owned(),
                    waited: started.elapsed(),
                    ready: status.ready,
                    desired: status.desired,
                    last_error: status.last_error,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn add_replicas(
        &self,
        revision: &str,
        entry: &mut Revision,
        count: u32,
    ) -> Vec<oneshot::Receiver<Result<(), SupervisorError>>> {
        let first_index = entry.replicas.last().map_or(0, |r| r.index + 1);
        (first_index..first_index + count)
            .map(|index| {
                let status = Arc::new(Mutex::new(ReplicaStatus {
                    index,
                    ..ReplicaStatus::default()
                }));
                let (stop, stop_rx) = watch::channel(false);
                let (started_tx, started_rx) = oneshot::channel();
                let ctx = ReplicaCtx {
                    revision: revision.to_owned(),
                    index,
                    spec: entry.spec.clone(),
                    config: self.config.clone(),
                    client: self.client.clone(),
                    status: status.clone(),
                };
                let task = tokio::spawn(run_replica(ctx, stop_rx, started_tx));
                entry.replicas.push(Replica {
                    index,
                    status,
                    stop,
                    task,
                });
                started_rx
            })
            .collect()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // Aborting a replica task drops its child and group guard: SIGKILL to the group.
        for revision in lock(&self.revisions).values() {
            for replica in &revision.replicas {
                replica.task.abort();
            }
        }
    }
}

async fn first_error(
    started: Vec<oneshot::Receiver<Result<(), SupervisorError>>>,
) -> Result<(), SupervisorError> {
    let mut first = Ok(());
    for receiver in started {
        // A dropped sender means the replica was stopped before its first start: not an error.
        if let Ok(Err(error)) = receiver.await
            && first.is_ok()
        {
            first = Err(error);
        }
    }
    first
}

async fn stop_replicas(replicas: Vec<Replica>) {
    for replica in &replicas {
        let _ = replica.stop.send(true);
    }
    for replica in replicas {
        if let Err(error) = replica.task.await
            && !error.is_cancelled()
        {
            tracing::error!(index = replica.index, %error, "replica task failed");
        }
    }
}

struct ReplicaCtx {
    revision: String,
    index: u32,
    spec: Arc<ProcessSpec>,
    config: Arc<SupervisorConfig>,
    client: HttpClient<Empty<Bytes>>,
    status: Arc<Mutex<ReplicaStatus>>,
}

impl ReplicaCtx {
    fn update(&self, f: impl FnOnce(&mut ReplicaStatus)) {
        f(&mut lock(&self.status));
    }
}

fn free_port() -> Result<u16, SupervisorError> {
    StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|source| SupervisorError::PickPort { source })
}

/// Lines of stderr kept to explain an exit.
const STDERR_TAIL: usize = 5;

fn spawn(ctx: &ReplicaCtx, port: u16) -> Result<(Child, GroupGuard), SupervisorError> {
    let spec = &ctx.spec;
    let program = spec.command.first().map_or("", String::as_str);
    let mut command = Command::new(program);
    command
        .args(&spec.command[1..])
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env("PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group: signals reach its children too, and a terminal's Ctrl-C does not
        // reach it behind the supervisor's back.
        .process_group(0)
        .kill_on_drop(true);
    let child = command
        .spawn()
        .map_err(|source| SupervisorError::SpawnProcess {
            revision: ctx.revision.clone(),
            command: program.to_owned(),
            source,
        })?;
    let pgid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(Pid::from_raw);
    Ok((child, GroupGuard { pgid }))
}

fn forward_output<R>(
    reader: R,
    ctx: &ReplicaCtx,
    stream: &'static str,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
) where
    R: AsyncRead + Unpin + Send + 'static,
{
    let revision = ctx.revision.clone();
    let index = ctx.index;
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(target: "vigil::child", %revision, replica = index, stream, "{line}");
            if let Some(tail) = tail.as_ref().filter(|_| !line.trim().is_empty()) {
                let mut tail = lock(tail);
                if tail.len() == STDERR_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        }
    });
}

enum Outcome {
    Stopped,
    Exited(std::io::Result<ExitStatus>),
}

async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    // A dropped sender (the supervisor is gone) means stop too.
    let _ = stop.wait_for(|stop| *stop).await;
}

async fn probe(ctx: &ReplicaCtx, addr: SocketAddr) -> bool {
    let config = &ctx.config;
    let attempt = async {
        match &ctx.spec.readiness_path {
            None => tokio::net::TcpStream::connect(addr).await.is_ok(),
            Some(path) => {
                let Ok(uri) = hyper::Uri::try_from(format!("http://{addr}{path}")) else {
                    return false;
                };
                ctx.client
                    .get(uri)
                    .await
                    .is_ok_and(|response| response.status().is_success())
            }
        }
    };
    tokio::time::timeout(config.probe_timeout, attempt)
        .await
        .unwrap_or(false)
}

/// Watches one running process: probes it, and returns when it exits or a stop is asked for.
async fn supervise(
    ctx: &ReplicaCtx,
    child: &mut Child,
    addr: SocketAddr,
    stop: &mut watch::Receiver<bool>,
) -> Outcome {
    let config = &ctx.config;
    let mut ready = false;
    let mut failures = 0u32;
    loop {
        let interval = if ready {
            config.probe_interval_ready
        } else {
            config.probe_interval_starting
        };
        tokio::select! {
            status = child.wait() => return Outcome::Exited(status),
            () = stop_requested(stop) => return Outcome::Stopped,
            () = tokio::time::sleep(interval) => {}
        }
        if probe(ctx, addr).await {
            failures = 0;
            if !ready {
                ready = true;
                ctx.update(|s| {
                    s.ready = true;
                    s.ready_since = Some(Instant::now());
                });
                tracing::info!(revision = %ctx.revision, replica = ctx.index, %addr, "replica ready");
            }
        } else if ready {
            failures += 1;
            if failures >= config.failure_threshold {
                ready = false;
                ctx.update(|s| {
                    s.ready = false;
                    s.ready_since = None;
                });
                tracing::warn!(revision = %ctx.revision, replica = ctx.index, %addr, failures, "replica not ready: readiness probe failing");
            }
        }
    }
}

/// SIGTERM to the group, SIGKILL after the grace period; returns once the process is reaped.
async fn terminate(ctx: &ReplicaCtx, child: &mut Child, guard: &GroupGuard) {
    guard.signal(Signal::TERM);
    match tokio::time::timeout(ctx.config.grace_period, child.wait()).await {
        Ok(_) => {}
        Err(_) => {
            tracing::warn!(revision = %ctx.revision, replica = ctx.index, grace = ?ctx.config.grace_period, "process ignored SIGTERM; killing it");
            guard.signal(Signal::KILL);
            let _ = child.kill().await;
        }
    }
}

/// Sleeps for `delay` unless a stop is asked for first; true when stopped.
async fn backoff_or_stop(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => false,
        () = stop_requested(stop) => true,
    }
}

/// One replica's life: start, supervise, restart with backoff, until stopped.
async fn run_replica(
    ctx: ReplicaCtx,
    mut stop: watch::Receiver<bool>,
    started: oneshot::Sender<Result<(), SupervisorError>>,
) {
    let mut started = Some(started);
    let mut backoff = ctx.config.backoff_initial;
    loop {
        if *stop.borrow() {
            return;
        }
        let spawned = free_port().and_then(|port| Ok((port, spawn(&ctx, port)?)));
        let (port, (mut child, guard)) = match spawned {
            Ok(spawned) => spawned,
            Err(error) => {
                let message = error.to_string();
                let repeated = lock(&ctx.status).last_error.as_deref() == Some(message.as_str());
                if !repeated {
                    tracing::warn!(revision = %ctx.revision, replica = ctx.index, %error, "replica cannot start; retrying with backoff");
                }
                ctx.update(|s| s.last_error = Some(message));
                if let Some(started) = started.take() {
                    let _ = started.send(Err(error));
                }
                if backoff_or_stop(backoff, &mut stop).await {
                    return;
                }
                backoff = (backoff * 2).min(ctx.config.backoff_max);
                continue;
            }
        };
        if let Some(started) = started.take() {
            let _ = started.send(Ok(()));
        }
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let pid = child.id();
        tracing::debug!(revision = %ctx.revision, replica = ctx.index, ?pid, %addr, "process started");
        // Read while the child is not reaped, so the PID cannot have been reused yet.
        let start_time = pid.and_then(super::leftovers::process_start_time);
        ctx.update(|s| {
            s.pid = pid;
            s.start_time = start_time;
            s.addr = Some(addr);
            s.running = true;
            s.ready = false;
            s.ready_since = None;
        });
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL)));
        if let Some(stdout) = child.stdout.take() {
            forward_output(stdout, &ctx, "stdout", None);
        }
        if let Some(stderr) = child.stderr.take() {
            forward_output(stderr, &ctx, "stderr", Some(tail.clone()));
        }
        let up_since = Instant::now();
        let outcome = supervise(&ctx, &mut child, addr, &mut stop).await;
        if let Outcome::Stopped = outcome {
            terminate(&ctx, &mut child, &guard).await;
            ctx.update(|s| {
                s.running = false;
                s.ready = false;
                s.ready_since = None;
                s.pid = None;
                s.start_time = None;
                s.addr = None;
            });
            return;
        }
        // Exited on its own: take down anything it left in its group, then restart.
        guard.signal(Signal::KILL);
        drop(guard);
        let status = match outcome {
            Outcome::Exited(Ok(status)) => status.to_string(),
            Outcome::Exited(Err(error)) => format!("wait failed: {error}"),
            Outcome::Stopped => String::new(),
        };
        // Give the output forwarder a moment to read the last lines written before the exit.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let last_lines: Vec<String> = lock(&tail).iter().cloned().collect();
        let message = if last_lines.is_empty() {
            format!("`{}` {status}", ctx.spec.display())
        } else {
            format!(
                "`{}` {status}; last stderr: {}",
                ctx.spec.display(),
                last_lines.join(" | ")
            )
        };
        if up_since.elapsed() >= ctx.config.backoff_reset_after {
            backoff = ctx.config.backoff_initial;
        }
        tracing::warn!(revision = %ctx.revision, replica = ctx.index, %message, restart_in = ?backoff, "process exited; restarting");
        ctx.update(|s| {
            s.running = false;
            s.ready = false;
            s.ready_since = None;
            s.pid = None;
            s.start_time = None;
            s.addr = None;
            s.restarts += 1;
            s.last_error = Some(message);
        });
        if backoff_or_stop(backoff, &mut stop).await {
            return;
        }
        backoff = (backoff * 2).min(ctx.config.backoff_max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, EnvVar, HTTPGetAction, PodSpec, Probe};

    #[test]
    fn a_replica_is_available_once_ready_for_min_ready_seconds_without_a_break() {
        let now = Instant::now();
        let ago = |secs: u64| now.checked_sub(Duration::from_secs(secs));
        let replica = |ready: bool, since: Option<Instant>| ReplicaStatus {
            ready,
            ready_since: since,
            ..ReplicaStatus::default()
        };
        let status = RevisionStatus {
            replicas: vec![
                replica(true, ago(30)),
                replica(true, ago(10)),
                replica(true, Some(now)),
                // Unready (a failing probe, an exit): never available, whatever it was.
                replica(false, None),
                replica(false, ago(60)),
            ],
            ..RevisionStatus::default()
        };
        // (minReadySeconds, available)
        for (min_ready, available) in [(0, 3), (1, 2), (10, 2), (11, 1), (30, 1), (31, 0)] {
            assert_eq!(
                status.available(Duration::from_secs(min_ready), now),
                available,
                "minReadySeconds {min_ready}"
            );
        }
    }

    fn template(container: Option<Container>) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: container.into_iter().collect(),
                ..PodSpec::default()
            }),
        }
    }

    #[test]
    fn reads_the_first_container() {
        let spec = ProcessSpec::from_pod_template(&template(Some(Container {
            name: "app".into(),
            command: Some(vec!["vigil".into(), "demo-app".into()]),
            args: Some(vec!["--version".into(), "v2".into()]),
            env: Some(vec![
                EnvVar {
                    name: "A".into(),
                    value: Some("1".into()),
                    value_from: None,
                },
                EnvVar {
                    name: "EMPTY".into(),
                    value: None,
                    value_from: None,
                },
                EnvVar {
                    name: "SECRET".into(),
                    value: None,
                    value_from: Some(Default::default()),
                },
            ]),
            readiness_probe: Some(Probe {
                http_get: Some(HTTPGetAction {
                    path: Some("/healthz".into()),
                    ..HTTPGetAction::default()
                }),
                ..Probe::default()
            }),
            ..Container::default()
        })))
        .expect("valid template");
        assert_eq!(spec.command, vec!["vigil", "demo-app"]);
        assert_eq!(spec.args, vec!["--version", "v2"]);
        assert_eq!(
            spec.env,
            vec![("A".into(), "1".into()), ("EMPTY".into(), String::new())]
        );
        assert_eq!(spec.readiness_path.as_deref(), Some("/healthz"));
        assert_eq!(spec.display(), "vigil demo-app --version v2");
    }

    #[test]
    fn names_the_missing_field() {
        let err = ProcessSpec::from_pod_template(&template(None)).expect_err("no container");
        assert!(err.to_string().contains("spec.containers:"), "{err}");
        let err = ProcessSpec::from_pod_template(&template(Some(Container {
            name: "app".into(),
            ..Container::default()
        })))
        .expect_err("no command");
        assert!(
            err.to_string().contains("spec.containers[0].command"),
            "{err}"
        );
        let err = ProcessSpec::from_pod_template(&PodTemplateSpec::default()).expect_err("no spec");
        assert!(err.to_string().contains("spec: missing"), "{err}");
    }
}

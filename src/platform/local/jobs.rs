//! Job metrics on the local platform: the Job's first container's `command` + `args` run as a
//! local process (with its plain `env` values), in its own process group, judged by its exit
//! status; past the metric's timeout the whole group is killed. The tail of its stdout and
//! stderr is the measurement's reason.

use std::collections::{BTreeMap, VecDeque};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::task::JoinHandle;

use crate::analysis::job::{
    JobRunner, JobState, LOG_TAIL_BYTES, LOG_TAIL_LINES, job_name, job_spec, job_timeout,
};
use crate::api::Metric;

/// What a job metric runs locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCommand {
    /// Program and arguments: the container's `command` then its `args`.
    pub argv: Vec<String>,
    /// The container's plain `env` values.
    pub env: Vec<(String, String)>,
    /// Killed after this long.
    pub timeout: Duration,
}

/// The process a job metric runs locally, or why it has none (the reason names the field).
pub fn local_command(metric: &Metric) -> Result<LocalCommand, String> {
    let provider = metric
        .provider
        .job
        .as_ref()
        .ok_or_else(|| "no provider.job".to_owned())?;
    let spec = job_spec(provider).map_err(|e| e.to_string())?;
    let timeout = job_timeout(provider).map_err(|e| e.to_string())?;
    let container = spec
        .template
        .spec
        .as_ref()
        .and_then(|pod| pod.containers.first())
        .ok_or_else(|| "provider.job.spec.template.spec.containers: none".to_owned())?;
    let at = "provider.job.spec.template.spec.containers[0]";
    let mut argv: Vec<String> = container.command.clone().unwrap_or_default();
    argv.extend(container.args.clone().unwrap_or_default());
    if argv.first().is_none_or(|p| p.is_empty()) {
        return Err(format!(
            "{at}.command: not set; locally the job runs its command (the image's entrypoint is unknown here)"
        ));
    }
    let mut env = Vec::new();
    for var in container.env.iter().flatten() {
        if var.value_from.is_some() {
            return Err(format!(
                "{at}.env[{}]: valueFrom is not supported locally; give a plain value",
                var.name
            ));
        }
        env.push((var.name.clone(), var.value.clone().unwrap_or_default()));
    }
    Ok(LocalCommand { argv, env, timeout })
}

/// Kills a process group when dropped, so no child of a job outlives it.
struct GroupGuard(Option<Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // ESRCH (already gone) is the normal case after an exit.
            let _ = kill_process_group(pgid, Signal::KILL);
        }
    }
}

struct LocalJob {
    state: Arc<Mutex<JobState>>,
    task: JoinHandle<()>,
}

/// The local jobs of one AnalysisRun. Dropping it (or [`LocalJobs::stop_all`]) kills the
/// processes still running.
#[derive(Default)]
pub struct LocalJobs {
    run: String,
    jobs: Mutex<BTreeMap<String, LocalJob>>,
}

impl std::fmt::Debug for LocalJobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalJobs")
            .field("run", &self.run)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl LocalJobs {
    /// The jobs of the run named `run` (it names their processes in logs).
    pub fn new(run: &str) -> Self {
        LocalJobs {
            run: run.to_owned(),
            jobs: Mutex::new(BTreeMap::new()),
        }
    }

    /// Kills every process still running (the run ended).
    pub fn stop_all(&self) {
        for (_, job) in std::mem::take(&mut *lock(&self.jobs)) {
            job.task.abort();
        }
    }
}

impl Drop for LocalJobs {
    fn drop(&mut self) {
        self.stop_all();
    }
}

impl JobRunner for LocalJobs {
    async fn start(&self, metric: &Metric, ordinal: i32) -> Result<String, String> {
        let name = job_name(&self.run, &metric.name, ordinal);
        let command = local_command(metric)?;
        let mut jobs = lock(&self.jobs);
        if jobs.contains_key(&name) {
            return Ok(name);
        }
        let state = Arc::new(Mutex::new(JobState::Running));
        let (child, guard) = spawn(&command)?;
        tracing::info!(job = %name, command = %command.argv[0], "local job started");
        let task = tokio::spawn(follow(child, guard, command.timeout, state.clone()));
        jobs.insert(name.clone(), LocalJob { state, task });
        Ok(name)
    }

    async fn stop(&self, job: &str) {
        // Aborting the follower drops the child (killed on drop) and its group guard.
        if let Some(stopped) = lock(&self.jobs).remove(job) {
            stopped.task.abort();
        }
    }

    async fn check(&self, job: &str) -> JobState {
        match lock(&self.jobs).get(job) {
            Some(local) => lock(&local.state).clone(),
            None => JobState::Lost {
                reason: "its process is not known to this vigil (it was restarted): the job cannot be followed".to_owned(),
            },
        }
    }
}

fn spawn(command: &LocalCommand) -> Result<(tokio::process::Child, GroupGuard), String> {
    let program = &command.argv[0];
    let child = Command::new(program)
        .args(&command.argv[1..])
        .envs(command.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group: the timeout kills its children too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("start {program:?}: {e}"))?;
    let pgid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(Pid::from_raw);
    Ok((child, GroupGuard(pgid)))
}

type Tail = Arc<Mutex<VecDeque<String>>>;

/// Reads `reader` to its end (so the process never writes into a closed pipe and dies of
/// SIGPIPE), keeping in `tail` its last [`LOG_TAIL_LINES`] lines, each cut to its last
/// [`LOG_TAIL_BYTES`] bytes: an endless line (a `\r` progress bar) costs no more memory than
/// that. Bytes that are not UTF-8 become U+FFFD.
fn collect<R: AsyncRead + Unpin + Send + 'static>(mut reader: R, tail: Tail) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 8192];
        let mut line: Vec<u8> = Vec::new();
        loop {
            let read = match reader.read(&mut buffer).await {
                Ok(0) => break,
                Ok(read) => read,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let mut chunk = &buffer[..read];
            while let Some(end) = chunk.iter().position(|b| *b == b'\n') {
                append_bounded(&mut line, &chunk[..end]);
                push_line(&tail, &mut line);
                chunk = &chunk[end + 1..];
            }
            append_bounded(&mut line, chunk);
        }
        if !line.is_empty() {
            push_line(&tail, &mut line);
        }
    })
}

/// Appends `bytes` to `line`, keeping only its last [`LOG_TAIL_BYTES`] bytes (trimmed in
/// batches so a long line costs amortized constant work per byte).
fn append_bounded(line: &mut Vec<u8>, bytes: &[u8]) {
    let bytes = &bytes[bytes.len().saturating_sub(LOG_TAIL_BYTES)..];
    line.extend_from_slice(bytes);
    if line.len() > 2 * LOG_TAIL_BYTES {
        line.drain(..line.len() - LOG_TAIL_BYTES);
    }
}

fn push_line(tail: &Tail, line: &mut Vec<u8>) {
    let kept = &line[line.len().saturating_sub(LOG_TAIL_BYTES)..];
    let text = String::from_utf8_lossy(kept).into_owned();
    line.clear();
    let mut tail = lock(tail);
    if tail.len() == LOG_TAIL_LINES {
        tail.pop_front();
    }
    tail.push_back(text);
}

/// Waits for the process (at most `timeout`), then records how it ended.
async fn follow(
    mut child: tokio::process::Child,
    guard: GroupGuard,
    timeout: Duration,
    state: Arc<Mutex<JobState>>,
) {
    let tail: Tail = Arc::default();
    let readers: Vec<JoinHandle<()>> = [
        child.stdout.take().map(|out| collect(out, tail.clone())),
        child.stderr.take().map(|err| collect(err, tail.clone())),
    ]
    .into_iter()
    .flatten()
    .collect();
    let ended = tokio::time::timeout(timeout, child.wait()).await;
    // The group goes with its leader: a child left behind would hold the pipes open.
    drop(guard);
    for reader in readers {
        // Bounded: output still buffered is read; a stuck pipe does not hold the verdict.
        let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
    }
    let log = lock(&tail).iter().cloned().collect::<Vec<_>>().join("\n");
    let ended = match ended {
        Ok(Ok(exit)) if exit.success() => JobState::Succeeded { log },
        Ok(Ok(exit)) => JobState::Failed {
            reason: describe_exit(exit),
            log,
        },
        Ok(Err(e)) => JobState::Lost {
            reason: format!("waiting for the process failed: {e}"),
        },
        Err(_) => JobState::Failed {
            reason: format!(
                "timed out after {} and was killed",
                crate::api::duration::format_duration(timeout)
            ),
            log,
        },
    };
    *lock(&state) = ended;
}

fn describe_exit(exit: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (exit.code(), exit.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => exit.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::job::verdict;
    use crate::api::{JobProvider, MetricProvider};

    fn metric(command: serde_json::Value, timeout: Option<&str>) -> Metric {
        Metric {
            name: "smoke".into(),
            provider: MetricProvider {
                job: Some(JobProvider {
                    spec: serde_json::json!({"template": {"spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "t", "image": "busybox", "command": command,
                            "env": [{"name": "GREETING", "value": "hello"}]}]}}}),
                    timeout: timeout.map(str::to_owned),
                    ..JobProvider::default()
                }),
                ..MetricProvider::default()
            },
            ..Metric::default()
        }
    }

    async fn run_to_end(jobs: &LocalJobs, metric: &Metric) -> JobState {
        let name = jobs.start(metric, 1).await.expect("start");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let state = jobs.check(&name).await;
            if state != JobState::Running {
                return state;
            }
            assert!(tokio::time::Instant::now() < deadline, "job never ended");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn exit_status_decides_and_output_is_kept() {
        let jobs = LocalJobs::new("run");
        let ok = metric(
            serde_json::json!(["sh", "-c", "echo $GREETING; echo done >&2"]),
            None,
        );
        match run_to_end(&jobs, &ok).await {
            JobState::Succeeded { log } => {
                assert!(log.contains("hello") && log.contains("done"), "{log}")
            }
            other => panic!("{other:?}"),
        }
        let jobs = LocalJobs::new("run2");
        let bad = metric(serde_json::json!(["sh", "-c", "echo broken; exit 3"]), None);
        let state = run_to_end(&jobs, &bad).await;
        let measured = verdict(&state, "j", jiff::Timestamp::now()).expect("ended");
        assert_eq!(measured.record.phase, crate::api::AnalysisPhase::Failed);
        let reason = measured.record.reason.unwrap_or_default();
        assert!(
            reason.contains("exit status 3") && reason.contains("broken"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn an_endless_line_and_a_non_utf8_byte_are_kept_bounded_and_the_process_is_read_to_its_end()
     {
        // 10 MB without a newline, a Latin-1 byte, then 1 MB more (more than a pipe holds):
        // a reader that stopped early would make the last writes die of SIGPIPE.
        let script = "head -c 10000000 /dev/zero | tr '\\000' x; printf 'caf\\351\\n'; \
                      head -c 1000000 /dev/zero | tr '\\000' y; echo; echo last line";
        let jobs = LocalJobs::new("run");
        let noisy = metric(serde_json::json!(["sh", "-c", script]), Some("2m"));
        match run_to_end(&jobs, &noisy).await {
            JobState::Succeeded { log } => {
                assert!(
                    log.ends_with("last line"),
                    "{}",
                    &log[log.len().saturating_sub(200)..]
                );
                assert!(log.contains("caf\u{FFFD}"), "the byte is replaced");
                assert!(
                    log.len() <= LOG_TAIL_LINES * (LOG_TAIL_BYTES + 4),
                    "kept {} bytes",
                    log.len()
                );
            }
            other => panic!("judged by its exit status, it succeeds: {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_timeout_kills_the_process_group() {
        let jobs = LocalJobs::new("run");
        let slow = metric(
            serde_json::json!(["sh", "-c", "sleep 30 & echo started; wait"]),
            Some("300ms"),
        );
        match run_to_end(&jobs, &slow).await {
            JobState::Failed { reason, log } => {
                assert!(reason.contains("timed out after"), "{reason}");
                assert!(log.contains("started"), "{log}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_started_job_is_not_started_twice_and_an_unknown_one_is_lost() {
        let jobs = LocalJobs::new("run");
        let m = metric(serde_json::json!(["sh", "-c", "sleep 1"]), None);
        let first = jobs.start(&m, 1).await.expect("start");
        let again = jobs.start(&m, 1).await.expect("adopt");
        assert_eq!(first, again);
        assert_eq!(lock(&jobs.jobs).len(), 1);
        assert!(matches!(
            jobs.check("run-other-1").await,
            JobState::Lost { .. }
        ));
        jobs.stop_all();
    }

    #[test]
    fn a_container_without_command_or_with_secret_env_is_refused_with_the_field() {
        let mut m = metric(serde_json::Value::Null, None);
        let error = local_command(&m).expect_err("no command");
        assert!(error.contains("containers[0].command"), "{error}");
        if let Some(job) = m.provider.job.as_mut() {
            job.spec = serde_json::json!({"template": {"spec": {"containers": [{"name": "t",
                "command": ["true"], "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}]}}});
        }
        let error = local_command(&m).expect_err("valueFrom");
        assert!(error.contains("env[TOKEN]: valueFrom"), "{error}");
    }
}

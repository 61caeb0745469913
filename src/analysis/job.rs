//! Job metrics: a measurement that is one run of a Job (on Kubernetes) or of its first
//! container's command as a process (on the local platform), judged by how it ended.
//!
//! A run takes time, so a job measurement is started, kept "in flight" in the run's status
//! ([`crate::analysis::run::start_in_flight`]), checked on at each advance, and recorded once
//! it ended. The platforms implement [`JobRunner`]; naming, bounds and verdicts are here, once.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::JobSpec;

use crate::analysis::measure::Measured;
use crate::analysis::template::placeholders;
use crate::api::duration::{format_duration, parse_duration};
use crate::api::{AnalysisPhase, JobProvider, Metric};

/// Longest Job name: Kubernetes copies it into the `job-name` label of its pods, and label
/// values are at most 63 characters.
pub const MAX_JOB_NAME: usize = 63;
/// How long a job run may take when its metric does not say.
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(600);
/// The ceiling of `provider.job.timeout` (and so of `activeDeadlineSeconds`).
pub const MAX_JOB_TIMEOUT: Duration = Duration::from_secs(3600);
/// The most pods a job metric's Job runs at once (`parallelism`) or in all (`completions`).
pub const MAX_JOB_PODS: i32 = 10;
/// How long past a job's timeout vigil waits for the platform to report its end before the
/// measurement is an Error (the Job controller may be down, the Job never started).
pub const JOB_END_GRACE: Duration = Duration::from_secs(60);
/// The number of lines of a job's output kept as its measurement's reason.
pub const LOG_TAIL_LINES: usize = 20;
/// Log bytes kept in a measurement's reason.
pub const LOG_TAIL_BYTES: usize = 2048;
/// How often a platform checks on a job in flight.
pub const JOB_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Namespace label that allows job metrics to run Jobs there (set by the namespace's
/// administrator; see SECURITY.md).
pub const JOB_NAMESPACE_OPT_IN_LABEL: &str = "vigil.dev/job-provider";
/// The value of [`JOB_NAMESPACE_OPT_IN_LABEL`] that opts in.
pub const JOB_NAMESPACE_OPT_IN_VALUE: &str = "enabled";

/// Why a job metric could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// `provider.job.spec` is not a batch/v1 JobSpec.
    #[error("provider.job.spec: not a batch/v1 JobSpec: {reason}")]
    ParseJobSpec {
        /// The decoder's words.
        reason: String,
    },
    /// `provider.job.timeout` is unreadable or over the ceiling.
    #[error("provider.job.timeout: {reason}")]
    ParseTimeout {
        /// What is wrong.
        reason: String,
    },
    /// A placeholder in the Job spec cannot be filled.
    #[error("provider.job.spec: {reason}")]
    SubstituteArgs {
        /// What is wrong.
        reason: String,
    },
}

/// Where a started job is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Still running (or not scheduled yet).
    Running,
    /// Ended well; `log` is the tail of its output.
    Succeeded {
        /// The last lines of its output.
        log: String,
    },
    /// Ended badly.
    Failed {
        /// Why, in the platform's words (exit status, the Job's condition).
        reason: String,
        /// The last lines of its output.
        log: String,
    },
    /// It cannot be followed: deleted by someone else, or lost with a restart.
    Lost {
        /// Why.
        reason: String,
    },
}

/// Runs and follows the jobs of one AnalysisRun on a platform.
pub trait JobRunner: Sync {
    /// Starts the `ordinal`-th measurement of `metric` and returns the job's name; a job of
    /// that name started before (by a controller since restarted) is adopted, not doubled.
    /// An error is the reason the measurement is Error.
    fn start(
        &self,
        metric: &Metric,
        ordinal: i32,
    ) -> impl Future<Output = Result<String, String>> + Send;

    /// Where the job named `job` is.
    fn check(&self, job: &str) -> impl Future<Output = JobState> + Send;

    /// Stops the job named `job`, given up on (see [`overdue`]); best effort: a failure is
    /// logged, and the run's end stops it again.
    fn stop(&self, job: &str) -> impl Future<Output = ()> + Send {
        let _ = job;
        async {}
    }
}

/// A platform that runs no jobs (`vigil analyze` without a job metric, tests): every start is
/// an Error saying so.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoJobs;

impl JobRunner for NoJobs {
    async fn start(&self, _metric: &Metric, _ordinal: i32) -> Result<String, String> {
        Err("job metrics are not run here".to_owned())
    }

    async fn check(&self, job: &str) -> JobState {
        JobState::Lost {
            reason: format!("job {job:?} is not followed here"),
        }
    }
}

/// The Job of the `ordinal`-th measurement of `metric` in `run`: `<run>-<metric>-<n>`,
/// lowercased to a DNS label; when that is not already a valid name of at most
/// [`MAX_JOB_NAME`] characters, it is cut and ends in a hash of the whole, so distinct
/// measurements keep distinct names.
pub fn job_name(run: &str, metric: &str, ordinal: i32) -> String {
    let whole = format!("{run}-{metric}-{ordinal}");
    let cleaned: String = whole
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-') => c,
            _ => '-',
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('-');
    let base = if cleaned == whole {
        cleaned.to_owned()
    } else {
        // Changed by the cleaning: a hash of the original keeps `A_b` and `a-b` apart.
        let hash = crate::rollout::fnv1a64(whole.as_bytes());
        format!("{cleaned}-{:08x}", hash as u32)
    };
    crate::rollout::fit_name(&base, MAX_JOB_NAME)
}

/// How long one run of the job may take: `provider.job.timeout` (default
/// [`DEFAULT_JOB_TIMEOUT`]), at most [`MAX_JOB_TIMEOUT`].
pub fn job_timeout(provider: &JobProvider) -> Result<Duration, JobError> {
    let Some(text) = provider.timeout.as_deref() else {
        return Ok(DEFAULT_JOB_TIMEOUT);
    };
    let timeout = parse_duration(text).map_err(|e| JobError::ParseTimeout {
        reason: e.to_string(),
    })?;
    if timeout > MAX_JOB_TIMEOUT {
        return Err(JobError::ParseTimeout {
            reason: format!(
                "{} is over the ceiling of {}",
                format_duration(timeout),
                format_duration(MAX_JOB_TIMEOUT)
            ),
        });
    }
    if timeout.is_zero() {
        return Err(JobError::ParseTimeout {
            reason: "must be longer than 0s".to_owned(),
        });
    }
    Ok(timeout)
}

/// The metric's Job spec, typed.
pub fn job_spec(provider: &JobProvider) -> Result<JobSpec, JobError> {
    serde_json::from_value(provider.spec.clone()).map_err(|e| JobError::ParseJobSpec {
        reason: crate::analysis::provider::bounded_owned(e.to_string()),
    })
}

/// The last [`LOG_TAIL_LINES`] lines of `output`, at most [`LOG_TAIL_BYTES`] of them (cut at
/// a character boundary, from the front: the end of a log says how it ended).
pub fn log_tail(output: &str) -> String {
    let trimmed = output.trim_end();
    let start = trimmed
        .rmatch_indices('\n')
        .nth(LOG_TAIL_LINES - 1)
        .map_or(0, |(i, _)| i + 1);
    let mut tail = &trimmed[start..];
    if tail.len() > LOG_TAIL_BYTES {
        let mut cut = tail.len() - LOG_TAIL_BYTES;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = &tail[cut..];
    }
    tail.to_owned()
}

/// The judged measurement of a job that ended, or None while it runs.
pub fn verdict(state: &JobState, job: &str, started_at: Timestamp) -> Option<Measured> {
    let with_log = |what: String, log: &str| {
        if log.trim().is_empty() {
            what
        } else {
            format!("{what}; last output:\n{}", log_tail(log))
        }
    };
    let (phase, reason) = match state {
        JobState::Running => return None,
        JobState::Succeeded { log } => (
            AnalysisPhase::Successful,
            with_log(format!("job {job} succeeded"), log),
        ),
        JobState::Failed { reason, log } => (
            AnalysisPhase::Failed,
            with_log(format!("job {job} failed: {reason}"), log),
        ),
        JobState::Lost { reason } => (AnalysisPhase::Error, format!("job {job}: {reason}")),
    };
    Some(Measured::new(phase, started_at, None, reason))
}

/// Error once a job in flight has outlived its timeout plus [`JOB_END_GRACE`] at `now`: the
/// platform never reported its end (a Job that never started, a Job controller that is
/// down), and vigil does not follow it for ever. `None` while it may still end.
pub fn overdue(
    provider: &JobProvider,
    job: &str,
    started_at: Timestamp,
    now: Timestamp,
) -> Option<Measured> {
    let timeout = job_timeout(provider).unwrap_or(MAX_JOB_TIMEOUT);
    let allowed = timeout.saturating_add(JOB_END_GRACE);
    let elapsed = now.duration_since(started_at);
    let over = jiff::SignedDuration::try_from(allowed).is_ok_and(|allowed| elapsed > allowed);
    over.then(|| {
        Measured::new(
            AnalysisPhase::Error,
            started_at,
            None,
            format!(
                "job {job}: no end reported within its timeout ({}s) and {}s of grace; no longer followed",
                timeout.as_secs(),
                JOB_END_GRACE.as_secs()
            ),
        )
    })
}

/// A measurement that could not start: Error with the reason.
pub fn not_started(reason: String, at: Timestamp) -> Measured {
    Measured::new(AnalysisPhase::Error, at, None, reason)
}

/// Substitutes `{{args.NAME}}` in every string of the Job spec with its plain value (a Job
/// spec is not a query: nothing to escape). An argument in `refused` (a Secret argument) must
/// not be used: its value would be stored in the Job for anyone who reads Jobs.
pub fn substitute_job_args(
    provider: &mut JobProvider,
    args: &BTreeMap<String, String>,
    refused: &[String],
) -> Result<(), JobError> {
    fn walk(
        value: &mut serde_json::Value,
        args: &BTreeMap<String, String>,
        refused: &[String],
    ) -> Result<(), JobError> {
        match value {
            serde_json::Value::String(text) => {
                let refs = placeholders(text).map_err(|e| JobError::SubstituteArgs {
                    reason: e.to_string(),
                })?;
                let mut out = String::with_capacity(text.len());
                let mut from = 0;
                for r in refs {
                    if refused.contains(&r.name) {
                        return Err(JobError::SubstituteArgs {
                            reason: format!(
                                "argument `{}` comes from a Secret and would be stored in the Job; read the Secret in the container instead (env valueFrom.secretKeyRef)",
                                r.name
                            ),
                        });
                    }
                    let value = args.get(&r.name).ok_or_else(|| JobError::SubstituteArgs {
                        reason: format!("argument `{}` has no value", r.name),
                    })?;
                    out.push_str(&text[from..r.start]);
                    out.push_str(value);
                    from = r.end;
                }
                out.push_str(&text[from..]);
                *text = out;
                Ok(())
            }
            serde_json::Value::Array(items) => {
                items.iter_mut().try_for_each(|v| walk(v, args, refused))
            }
            serde_json::Value::Object(fields) => {
                fields.values_mut().try_for_each(|v| walk(v, args, refused))
            }
            _ => Ok(()),
        }
    }
    walk(&mut provider.spec, args, refused)?;
    if let Some(metadata) = provider.metadata.as_mut() {
        for value in metadata
            .labels
            .values_mut()
            .chain(metadata.annotations.values_mut())
        {
            let mut v = serde_json::Value::String(std::mem::take(value));
            walk(&mut v, args, refused)?;
            *value = v.as_str().unwrap_or_default().to_owned();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_in_flight_past_its_timeout_and_grace_is_an_error_and_not_before() {
        let provider = JobProvider {
            timeout: Some("5m".into()),
            ..JobProvider::default()
        };
        let started: Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
        let at = |secs: i64| started + jiff::SignedDuration::from_secs(secs);
        let grace = JOB_END_GRACE.as_secs() as i64;
        assert!(overdue(&provider, "j", started, at(300 + grace)).is_none());
        let measured = overdue(&provider, "j", started, at(300 + grace + 1)).expect("overdue");
        assert_eq!(measured.record.phase, AnalysisPhase::Error);
    }

    #[test]
    fn a_short_valid_name_is_kept_as_is() {
        assert_eq!(job_name("web-abc12", "smoke", 3), "web-abc12-smoke-3");
    }

    #[test]
    fn a_long_or_invalid_name_is_cut_to_63_with_a_hash_that_keeps_names_apart() {
        let run = "a".repeat(80);
        let one = job_name(&run, "Smoke_Test", 1);
        let two = job_name(&run, "Smoke_Test", 2);
        let other = job_name(&run, "Smoke_Tesu", 1);
        for name in [&one, &two, &other] {
            assert!(name.len() <= MAX_JOB_NAME, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.starts_with('-') && !name.ends_with('-'), "{name}");
        }
        assert_ne!(one, two);
        assert_ne!(one, other);
        assert_eq!(job_name("Web", "smoke", 1), job_name("Web", "smoke", 1));
        assert_ne!(job_name("Web", "smoke", 1), "web-smoke-1");
    }

    #[test]
    fn the_log_tail_keeps_the_last_lines_and_bytes() {
        let log: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let tail = log_tail(&log);
        assert!(tail.starts_with("line 11\n"), "{tail}");
        assert!(tail.ends_with("line 30"), "{tail}");
        let wide = "é".repeat(3000);
        let tail = log_tail(&wide);
        assert!(tail.len() <= LOG_TAIL_BYTES && tail.len() >= LOG_TAIL_BYTES - 1);
    }

    #[test]
    fn the_timeout_defaults_and_is_bounded() {
        let mut provider = JobProvider::default();
        assert_eq!(job_timeout(&provider), Ok(DEFAULT_JOB_TIMEOUT));
        provider.timeout = Some("90s".into());
        assert_eq!(job_timeout(&provider), Ok(Duration::from_secs(90)));
        provider.timeout = Some("2h".into());
        let error = job_timeout(&provider).expect_err("over the ceiling");
        assert!(
            error.to_string().starts_with("provider.job.timeout:"),
            "{error}"
        );
    }

    #[test]
    fn arguments_are_substituted_plainly_and_secret_ones_refused() {
        let mut provider = JobProvider {
            spec: serde_json::json!({"template": {"spec": {"containers": [
                {"name": "t", "command": ["curl", "http://{{args.host}}/health?q=\"x\""]}]}}}),
            ..JobProvider::default()
        };
        let args = BTreeMap::from([("host".to_owned(), "web-canary:8080".to_owned())]);
        substitute_job_args(&mut provider, &args, &[]).expect("substitute");
        assert_eq!(
            provider
                .spec
                .pointer("/template/spec/containers/0/command/1"),
            Some(&serde_json::json!("http://web-canary:8080/health?q=\"x\""))
        );
        let mut secret = JobProvider {
            spec: serde_json::json!({"x": "{{args.token}}"}),
            ..JobProvider::default()
        };
        let error = substitute_job_args(&mut secret, &args, &["token".to_owned()])
            .expect_err("a Secret argument");
        assert!(
            error.to_string().contains("`token` comes from a Secret"),
            "{error}"
        );
    }

    #[test]
    fn verdicts_follow_how_the_job_ended() {
        let at = Timestamp::from_second(1_700_000_000).expect("ts");
        assert!(verdict(&JobState::Running, "j", at).is_none());
        let ok = verdict(
            &JobState::Succeeded {
                log: "all good\n".into(),
            },
            "j",
            at,
        )
        .expect("ended");
        assert_eq!(ok.record.phase, AnalysisPhase::Successful);
        assert!(
            ok.record
                .reason
                .as_deref()
                .is_some_and(|r| r.ends_with("all good"))
        );
        let failed = verdict(
            &JobState::Failed {
                reason: "exit status 3".into(),
                log: "boom".into(),
            },
            "j",
            at,
        )
        .expect("ended");
        assert_eq!(failed.record.phase, AnalysisPhase::Failed);
        assert_eq!(
            failed.record.reason.as_deref(),
            Some("job j failed: exit status 3; last output:\nboom")
        );
        let lost = verdict(
            &JobState::Lost {
                reason: "deleted".into(),
            },
            "j",
            at,
        )
        .expect("ended");
        assert_eq!(lost.record.phase, AnalysisPhase::Error);
    }
}

//! The checks of a job metric (`provider.job`): a Job spec vigil can run, a bounded timeout,
//! declared arguments, and no judge of its own (how the Job ends is the verdict).

use std::collections::BTreeSet;

use crate::analysis::job::{JobError, MAX_JOB_PODS, job_spec, job_timeout};
use crate::api::{JobProvider, Metric};

use super::Problem;
use super::args::placeholders;
use super::validate::check_declared;

/// Checks `metric`'s `provider.job`; `path` is the metric's path.
pub(super) fn check_job_metric(
    metric: &Metric,
    job: &JobProvider,
    path: &str,
    declared: &BTreeSet<String>,
    problems: &mut Vec<Problem>,
) {
    for (field, set) in [
        ("successCondition", metric.success_condition.is_some()),
        ("failureCondition", metric.failure_condition.is_some()),
        ("mannWhitney", metric.mann_whitney.is_some()),
        ("sequential", metric.sequential.is_some()),
    ] {
        if set {
            problems.push(Problem::new(
                format!("{path}.{field}"),
                "a job metric is judged by how its Job ends (succeeded: Successful, failed: Failed); remove this judge",
            ));
        }
    }
    let here = format!("{path}.provider.job");
    if let Err(JobError::ParseTimeout { reason }) = job_timeout(job) {
        problems.push(Problem::new(format!("{here}.timeout"), reason));
    }
    match job_spec(job) {
        Err(error) => problems.push(Problem::new(format!("{here}.spec"), error.to_string())),
        Ok(spec) => {
            for (field, value) in [
                ("parallelism", spec.parallelism),
                ("completions", spec.completions),
            ] {
                if let Some(n) = value.filter(|n| !(0..=MAX_JOB_PODS).contains(n)) {
                    problems.push(Problem::new(
                        format!("{here}.spec.{field}"),
                        format!("{n}: a job metric runs at most {MAX_JOB_PODS} pods"),
                    ));
                }
            }
            let containers = spec.template.spec.map(|p| p.containers).unwrap_or_default();
            if containers.is_empty() {
                problems.push(Problem::new(
                    format!("{here}.spec.template.spec.containers"),
                    "no container: the Job needs one to run",
                ));
            }
        }
    }
    check_placeholders(&job.spec, &format!("{here}.spec"), declared, problems);
}

/// Every string of the Job spec: placeholders well formed and declared.
fn check_placeholders(
    value: &serde_json::Value,
    path: &str,
    declared: &BTreeSet<String>,
    problems: &mut Vec<Problem>,
) {
    match value {
        serde_json::Value::String(text) => match placeholders(text) {
            Ok(refs) => check_declared(&refs, path, declared, problems),
            Err(error) => problems.push(Problem::new(path.to_owned(), error.to_string())),
        },
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_placeholders(item, &format!("{path}[{i}]"), declared, problems);
            }
        }
        serde_json::Value::Object(fields) => {
            for (key, item) in fields {
                check_placeholders(item, &format!("{path}.{key}"), declared, problems);
            }
        }
        _ => {}
    }
}

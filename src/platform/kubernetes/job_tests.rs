//! Job metrics against the in-process API server: the Job vigil creates (owner, labels,
//! bounds), its status followed to Successful and to Failed (the test plays the Job
//! controller), the pod's log tail in the reason, deletion at run end, the namespace opt-in,
//! and a restarted controller adopting the Job it created instead of creating a second.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::analysis_controller;
use super::context::Context;
use super::jobs::JOB_CONTROLLER_UID_LABEL;
use super::trust_tests::{NS, RUNS, context, phase_and_message};
use crate::analysis::job::job_name;
use crate::api::AnalysisRun;
use crate::testing::apiserver::{ApiServer, POD_LOG_ANNOTATION};

const JOBS: &str = "batch/v1/jobs";
const PODS: &str = "v1/pods";
const NAMESPACES: &str = "v1/namespaces";

fn namespace(opted_in: bool) -> Value {
    let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
    if opted_in {
        ns["metadata"]["labels"] = json!({"vigil.dev/job-provider": "enabled"});
    }
    ns
}

fn job_run(name: &str) -> Value {
    json!({
        "apiVersion": "vigil.dev/v1alpha1", "kind": "AnalysisRun",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"metrics": [{
            "name": "smoke",
            "provider": {"job": {
                "metadata": {"labels": {"team": "shop"}, "annotations": {"note": "smoke"}},
                "timeout": "5m",
                "spec": {
                    "activeDeadlineSeconds": 900,
                    "template": {"spec": {"restartPolicy": "Never", "containers": [
                        {"name": "smoke", "image": "curlimages/curl",
                         "command": ["curl", "-f", "http://web-canary/health"]}]}}
                }
            }}
        }]}
    })
}

/// Reconciles the run as stored now, the way the controller would on its next wake-up.
async fn reconcile(server: &ApiServer, ctx: &Arc<Context>, name: &str) -> Value {
    let stored = server.get_json(RUNS, Some(NS), name).expect("run stored");
    let run: AnalysisRun = serde_json::from_value(stored).expect("run");
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        analysis_controller::reconcile(Arc::new(run), ctx.clone()),
    )
    .await
    .expect("reconcile in time");
    assert!(result.is_ok(), "reconcile failed: {result:?}");
    server.get_json(RUNS, Some(NS), name).expect("run stored")
}

/// Plays the Job controller: the Job ends with `condition`, its pod has `log`.
fn finish_job(server: &ApiServer, job: &str, condition: Value, log: &str) {
    let mut stored = server.get_json(JOBS, Some(NS), job).expect("job exists");
    stored["status"] = json!({"conditions": [condition]});
    let uid = stored["metadata"]["uid"]
        .as_str()
        .expect("job uid")
        .to_owned();
    server.put_json(JOBS, stored).expect("job status");
    server
        .put_json(
            PODS,
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("{job}-x7k2p"), "namespace": NS,
                    "labels": {"job-name": job, "batch.kubernetes.io/job-name": job,
                        JOB_CONTROLLER_UID_LABEL: uid},
                    "annotations": {POD_LOG_ANNOTATION: log}},
                "spec": {"containers": [{"name": "smoke", "image": "curlimages/curl"}]}}),
        )
        .expect("pod");
}

fn jobs_of(server: &ApiServer) -> Vec<Value> {
    server.list_json(JOBS, Some(NS))
}

#[tokio::test]
async fn a_job_metric_creates_an_owned_bounded_job_follows_it_to_success_and_deletes_it() {
    let server = ApiServer::start();
    server.put_json(NAMESPACES, namespace(true)).expect("ns");
    let ctx = context(&server, Vec::new());
    server.put_json(RUNS, job_run("web-1")).expect("run");
    let run = reconcile(&server, &ctx, "web-1").await;
    let uid = run["metadata"]["uid"].as_str().expect("uid").to_owned();
    let name = job_name("web-1", "smoke", 1);
    assert_eq!(
        run["status"]["metricResults"][0]["inFlight"]["job"],
        json!(name),
        "{run}"
    );
    assert_eq!(run["status"]["phase"], json!("Running"));
    let job = server.get_json(JOBS, Some(NS), &name).expect("job created");
    assert_eq!(
        job["metadata"]["ownerReferences"],
        json!([{"apiVersion": "vigil.dev/v1alpha1", "kind": "AnalysisRun", "name": "web-1",
                "uid": uid, "controller": true, "blockOwnerDeletion": true}])
    );
    assert_eq!(
        job["metadata"]["labels"],
        json!({"team": "shop", "vigil.dev/analysis-run": "web-1", "vigil.dev/metric": "smoke"})
    );
    assert_eq!(job["metadata"]["annotations"]["note"], json!("smoke"));
    // The user's 900 s deadline is cut to the metric's 5m timeout.
    assert_eq!(job["spec"]["activeDeadlineSeconds"], json!(300));
    assert_eq!(job["spec"]["backoffLimit"], json!(0));
    assert_eq!(job["spec"]["ttlSecondsAfterFinished"], json!(3600));
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["command"],
        json!(["curl", "-f", "http://web-canary/health"])
    );

    // Still running: checked on, nothing new created, a check-up requeued soon.
    let run = reconcile(&server, &ctx, "web-1").await;
    assert_eq!(run["status"]["phase"], json!("Running"));
    assert_eq!(jobs_of(&server).len(), 1);

    let log: String = (1..=30).map(|i| format!("check {i} ok\n")).collect();
    finish_job(
        &server,
        &name,
        json!({"type": "Complete", "status": "True"}),
        &log,
    );
    let run = reconcile(&server, &ctx, "web-1").await;
    let (phase, message) = phase_and_message(&run);
    assert_eq!(phase, "Successful", "{run}");
    let reason = run["status"]["metricResults"][0]["measurements"][0]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.starts_with(&format!("job {name} succeeded")),
        "{reason}"
    );
    assert!(
        reason.contains("check 30 ok") && reason.contains("check 11 ok"),
        "{reason}"
    );
    assert!(
        !reason.contains("check 10 ok"),
        "only the last 20 lines: {reason}"
    );
    assert_eq!(message, "all metrics successful");
    assert!(
        run["status"]["metricResults"][0].get("inFlight").is_none(),
        "{run}"
    );
    assert!(jobs_of(&server).is_empty(), "deleted at run end");
}

#[tokio::test]
async fn a_failed_job_fails_the_run_with_its_condition_and_log() {
    let server = ApiServer::start();
    server.put_json(NAMESPACES, namespace(true)).expect("ns");
    let ctx = context(&server, Vec::new());
    server.put_json(RUNS, job_run("web-2")).expect("run");
    reconcile(&server, &ctx, "web-2").await;
    let name = job_name("web-2", "smoke", 1);
    finish_job(
        &server,
        &name,
        json!({"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
               "message": "Job has reached the specified backoff limit"}),
        "curl: (22) The requested URL returned error: 503\n",
    );
    server.clear_request_log();
    let run = reconcile(&server, &ctx, "web-2").await;
    let (phase, message) = phase_and_message(&run);
    assert_eq!(phase, "Failed", "{run}");
    assert!(
        message.contains("BackoffLimitExceeded") && message.contains("error: 503"),
        "{message}"
    );
    let log_reads: Vec<_> = server
        .request_log()
        .into_iter()
        .filter(|(_, path)| path.contains("/log"))
        .collect();
    assert_eq!(log_reads.len(), 1, "{log_reads:?}");
    assert!(
        log_reads[0].1.contains("tailLines=20") && log_reads[0].1.contains("limitBytes=2048"),
        "{log_reads:?}"
    );
    assert!(jobs_of(&server).is_empty(), "deleted at run end");
}

#[tokio::test]
async fn without_the_namespace_opt_in_no_job_is_created_and_the_run_says_which_label() {
    let server = ApiServer::start();
    server.put_json(NAMESPACES, namespace(false)).expect("ns");
    let ctx = context(&server, Vec::new());
    server.put_json(RUNS, job_run("web-3")).expect("run");
    let run = reconcile(&server, &ctx, "web-3").await;
    let (phase, message) = phase_and_message(&run);
    assert_eq!(phase, "Error", "{run}");
    assert!(
        message.contains("vigil.dev/job-provider=enabled"),
        "{message}"
    );
    assert!(jobs_of(&server).is_empty());
    assert!(
        !server
            .request_log()
            .iter()
            .any(|(method, path)| method == "POST" && path.contains("/jobs")),
        "no create was even tried"
    );
}

#[tokio::test]
async fn a_restarted_controller_adopts_the_job_it_created_instead_of_creating_a_second() {
    let server = ApiServer::start();
    server.put_json(NAMESPACES, namespace(true)).expect("ns");
    let stored = server.put_json(RUNS, job_run("web-4")).expect("run");
    let uid = stored["metadata"]["uid"].as_str().expect("uid").to_owned();
    // The previous controller created the Job and stopped before writing the run's status.
    let name = job_name("web-4", "smoke", 1);
    server
        .put_json(
            JOBS,
            json!({"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": name, "namespace": NS,
                    "ownerReferences": [{"apiVersion": "vigil.dev/v1alpha1", "kind": "AnalysisRun",
                        "name": "web-4", "uid": uid, "controller": true}]},
                "spec": {"template": {"spec": {"containers": [{"name": "smoke", "image": "x"}]}}}}),
        )
        .expect("job");
    let restarted = context(&server, Vec::new());
    let run = reconcile(&server, &restarted, "web-4").await;
    assert_eq!(
        run["status"]["metricResults"][0]["inFlight"]["job"],
        json!(name)
    );
    // And another restart with the status written: still the one Job.
    let again = context(&server, Vec::new());
    reconcile(&server, &again, "web-4").await;
    assert_eq!(jobs_of(&server).len(), 1);
    finish_job(
        &server,
        &name,
        json!({"type": "Complete", "status": "True"}),
        "ok\n",
    );
    let run = reconcile(&server, &again, "web-4").await;
    assert_eq!(phase_and_message(&run).0, "Successful", "{run}");
}

#[tokio::test]
async fn a_terminated_run_deletes_its_running_job() {
    let server = ApiServer::start();
    server.put_json(NAMESPACES, namespace(true)).expect("ns");
    let ctx = context(&server, Vec::new());
    server.put_json(RUNS, job_run("web-5")).expect("run");
    reconcile(&server, &ctx, "web-5").await;
    assert_eq!(jobs_of(&server).len(), 1);
    let mut run = server.get_json(RUNS, Some(NS), "web-5").expect("run");
    run["spec"]["terminate"] = json!(true);
    server.put_json(RUNS, run).expect("terminate");
    let run = reconcile(&server, &ctx, "web-5").await;
    assert_eq!(phase_and_message(&run).0, "Terminated", "{run}");
    assert!(jobs_of(&server).is_empty(), "the running Job is deleted");
}

#[tokio::test]
async fn a_job_named_in_status_that_is_not_this_runs_is_not_followed_and_its_log_not_read() {
    let server = ApiServer::start();
    server.put_json(NAMESPACES, namespace(true)).expect("ns");
    let ctx = context(&server, Vec::new());
    server.put_json(RUNS, job_run("web-6")).expect("run");
    reconcile(&server, &ctx, "web-6").await;
    // Another team's finished Job, whose pod logged a secret.
    let foreign = "other-teams-job";
    server
        .put_json(
            JOBS,
            json!({"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": foreign, "namespace": NS},
                "spec": {"template": {"spec": {"containers": [{"name": "x", "image": "x"}]}}}}),
        )
        .expect("foreign job");
    finish_job(
        &server,
        foreign,
        json!({"type": "Complete", "status": "True"}),
        "TOKEN=hunter2\n",
    );
    // Whoever can write the run's status points it at that Job.
    let mut stored = server.get_json(RUNS, Some(NS), "web-6").expect("run");
    stored["status"]["metricResults"][0]["inFlight"]["job"] = json!(foreign);
    server.put_json(RUNS, stored).expect("status written");

    let run = reconcile(&server, &ctx, "web-6").await;
    let measurement = &run["status"]["metricResults"][0]["measurements"][0];
    assert_eq!(measurement["phase"], json!("Error"), "{run}");
    assert!(
        measurement["reason"]
            .as_str()
            .is_some_and(|m| m.contains("does not belong to this run")),
        "{run}"
    );
    assert!(!run.to_string().contains("hunter2"), "{run}");
}

#[tokio::test]
async fn a_suspended_selecting_oversized_job_spec_is_created_unsuspended_with_its_own_selector_and_at_most_10_pods()
 {
    let server = ApiServer::start();
    server.put_json(NAMESPACES, namespace(true)).expect("ns");
    let ctx = context(&server, Vec::new());
    let mut run = job_run("web-7");
    let spec = &mut run["spec"]["metrics"][0]["provider"]["job"]["spec"];
    spec["suspend"] = json!(true);
    spec["manualSelector"] = json!(true);
    spec["selector"] = json!({"matchLabels": {"app": "web"}});
    spec["parallelism"] = json!(50);
    spec["completions"] = json!(1000);
    server.put_json(RUNS, run).expect("run");
    reconcile(&server, &ctx, "web-7").await;
    let job = server
        .get_json(JOBS, Some(NS), &job_name("web-7", "smoke", 1))
        .expect("job created");
    let spec = &job["spec"];
    assert_eq!(spec.get("suspend"), None, "{job}");
    assert_eq!(spec.get("manualSelector"), None, "{job}");
    assert_eq!(spec.get("selector"), None, "{job}");
    assert_eq!(spec["parallelism"], json!(10));
    assert_eq!(spec["completions"], json!(10));
}

#[tokio::test]
async fn a_job_whose_end_is_not_reported_past_its_timeout_and_grace_is_an_error_and_deleted() {
    let server = ApiServer::start();
    server.put_json(NAMESPACES, namespace(true)).expect("ns");
    let ctx = context(&server, Vec::new());
    let mut run = job_run("web-8");
    // The run goes on after one Error, so only the give-up deletes the Job.
    run["spec"]["metrics"][0]["consecutiveErrorLimit"] = json!(5);
    run["spec"]["metrics"][0]["count"] = json!(3);
    run["spec"]["metrics"][0]["interval"] = json!("10m");
    server.put_json(RUNS, run).expect("run");
    reconcile(&server, &ctx, "web-8").await;
    let name = job_name("web-8", "smoke", 1);
    assert!(server.get_json(JOBS, Some(NS), &name).is_some());
    // The Job never reports an end (its controller is down); its 5m timeout and the grace
    // have passed since it was started.
    let mut stored = server.get_json(RUNS, Some(NS), "web-8").expect("run");
    let long_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(3600);
    stored["status"]["metricResults"][0]["inFlight"]["startedAt"] = json!(long_ago.to_string());
    server.put_json(RUNS, stored).expect("status written");

    let run = reconcile(&server, &ctx, "web-8").await;
    assert_eq!(run["status"]["phase"], json!("Running"), "{run}");
    let measurement = &run["status"]["metricResults"][0]["measurements"][0];
    assert_eq!(measurement["phase"], json!("Error"), "{run}");
    assert!(
        measurement["reason"]
            .as_str()
            .is_some_and(|m| m.contains("no end reported")),
        "{run}"
    );
    assert!(
        jobs_of(&server).is_empty(),
        "the overdue Job is deleted: {:?}",
        jobs_of(&server)
    );
}

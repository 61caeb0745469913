//! The AnalysisRun history limits' API calls in one reconcile, against the mocked API server
//! of [`super`]: each finished run beyond the limits goes with one DELETE guarded by the uid
//! seen, oldest first; a run this Rollout does not control is never deleted; a run already
//! gone (404) counts as deleted.

use super::*;
use crate::api::AnalysisRunStrategy;

/// A finished run of `web` (controlled by it unless `foreign`), created at `created`.
fn finished_run(name: &str, phase: &str, created: &str, foreign: bool) -> Value {
    let owners = if foreign {
        json!([{"apiVersion": "vigil.dev/v1alpha1", "kind": "Rollout", "name": "web",
                "uid": "uid-other", "controller": true}])
    } else {
        owner()
    };
    json!({
        "apiVersion": "vigil.dev/v1alpha1", "kind": "AnalysisRun",
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"),
                     "creationTimestamp": created, "ownerReferences": owners,
                     "labels": {ROLLOUT_LABEL: "web"}},
        "spec": {"metrics": []},
        "status": {"phase": phase}
    })
}

/// `web` Healthy on `web:1` (its status as the controller records it), keeping one successful
/// and one unsuccessful run, with the cluster around it.
async fn settled_with_limits() -> (Rollout, Cluster) {
    let stable = stable_revision();
    let mut r = rollout(false, None);
    r.spec.template = Some(Box::new(image_template("web:1")));
    r.spec.analysis = Some(AnalysisRunStrategy {
        successful_run_history_limit: Some(1),
        unsuccessful_run_history_limit: Some(1),
    });
    let cluster = Cluster {
        replica_sets: vec![replica_set(&stable, 4, 4)],
        services: BTreeMap::from([
            ("web-stable".into(), service("web-stable", &stable)),
            ("web-canary".into(), service("web-canary", &stable)),
        ]),
        ..Cluster::default()
    };
    let (result, calls, _) = Box::pin(reconcile_rollout(r.clone(), cluster.clone())).await;
    result.expect("first reconcile");
    let status = status_of(last_own(&calls).expect("status write"));
    assert_eq!(status.phase, Some(RolloutPhase::Healthy), "{status:?}");
    r.status = Some(status);
    (r, cluster)
}

/// One reconcile against `cluster`, where a DELETE of an AnalysisRun is answered `delete`.
async fn reconcile_answering_deletes(
    rollout: Rollout,
    cluster: Cluster,
    delete: (u16, Value),
) -> (Result<Action, String>, Vec<Call>) {
    let templates = template_index(&cluster.templates);
    let caches = caches_of(&cluster);
    let inner = cluster.responder();
    let responder: Responder = Arc::new(move |call: &Call| {
        if call.method == "DELETE" && call.path.starts_with(RUNS) {
            delete.clone()
        } else {
            inner(call)
        }
    });
    let (client, verifier) = ApiServerVerifier::start(responder);
    let mut ctx = plain_context(client);
    ctx.templates = Some(templates);
    ctx.caches = caches;
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        // On the heap: the reconcile's future is large for a test thread's stack.
        Box::pin(rollout_controller::reconcile(
            Arc::new(rollout),
            Arc::new(ctx),
        )),
    )
    .await
    .expect("reconcile finishes")
    .map_err(|e| format!("{}: {e}", e.category()));
    (result, verifier.finish().await)
}

fn deleted_status() -> (u16, Value) {
    (
        200,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
    )
}

#[tokio::test]
async fn finished_runs_beyond_the_limits_are_deleted_oldest_first_guarded_by_their_uid() {
    let (r, mut cluster) = settled_with_limits().await;
    cluster.runs = vec![
        finished_run("web-a-1-step1", "Successful", "2027-01-01T00:00:00Z", false),
        finished_run("web-b-2-step1", "Successful", "2027-01-02T00:00:00Z", false),
        finished_run("web-c-3-step1", "Successful", "2027-01-03T00:00:00Z", false),
        finished_run("web-b-2-bg0", "Failed", "2027-01-02T00:00:01Z", false),
        finished_run("web-c-3-bg0", "Inconclusive", "2027-01-03T00:00:01Z", false),
        // Older than all, but another Rollout's (a look-alike by label): never deleted.
        finished_run("web-z-1-step1", "Successful", "2026-01-01T00:00:00Z", true),
    ];
    let (result, calls) = reconcile_answering_deletes(r, cluster, deleted_status()).await;
    assert_eq!(result, Ok(Action::await_change()));
    // Nothing else changes: no status write, only the deletions, oldest first.
    assert_eq!(
        lines(&calls),
        [
            format!("DELETE {RUNS}/web-a-1-step1"),
            format!("DELETE {RUNS}/web-b-2-step1"),
            format!("DELETE {RUNS}/web-b-2-bg0"),
        ],
        "{calls:#?}"
    );
    for call in &calls {
        let name = call.path.rsplit('/').next().unwrap_or_default();
        assert_eq!(
            call.body,
            json!({"propagationPolicy": "Background",
                   "preconditions": {"uid": format!("uid-{name}")}}),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_run_already_gone_counts_as_deleted() {
    let (r, mut cluster) = settled_with_limits().await;
    cluster.runs = vec![
        finished_run("web-a-1-step1", "Successful", "2027-01-01T00:00:00Z", false),
        finished_run("web-b-2-step1", "Successful", "2027-01-02T00:00:00Z", false),
    ];
    let (result, calls) = reconcile_answering_deletes(r, cluster, not_found("web-a-1-step1")).await;
    assert_eq!(result, Ok(Action::await_change()));
    assert_eq!(lines(&calls), [format!("DELETE {RUNS}/web-a-1-step1")]);
}

#[tokio::test]
async fn a_failed_delete_is_a_categorised_error() {
    let (r, mut cluster) = settled_with_limits().await;
    cluster.runs = vec![
        finished_run("web-a-1-step1", "Successful", "2027-01-01T00:00:00Z", false),
        finished_run("web-b-2-step1", "Successful", "2027-01-02T00:00:00Z", false),
    ];
    let conflict = (
        409,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict",
               "code": 409, "message": "Precondition failed: UID in precondition: uid-web-a-1-step1, UID in object meta: uid-new"}),
    );
    let (result, _) = reconcile_answering_deletes(r, cluster, conflict).await;
    let error = result.expect_err("the reconcile fails");
    assert!(error.starts_with("delete_analysis_run: "), "{error}");
    assert!(error.contains("web-a-1-step1"), "{error}");
}

#[test]
fn a_cached_run_keeps_what_the_history_limits_read() {
    // The cache trims every run it holds: the rule still needs its creation time, phase and
    // owner (to pick the oldest of this Rollout's finished runs) and its uid (the DELETE's
    // precondition).
    let mut run: AnalysisRun = parse([finished_run(
        "web-a-1-step1",
        "Successful",
        "2027-01-01T00:00:00Z",
        false,
    )])
    .remove(0);
    super::super::cache::trim_run(&mut run);
    assert_eq!(run.metadata.uid.as_deref(), Some("uid-web-a-1-step1"));
    let seen = super::super::observe::Seen {
        analysis_runs: vec![run],
        ..Default::default()
    };
    let obs = super::super::observe::observation(&rollout(false, None), &seen);
    assert_eq!(obs.analysis_runs.len(), 1, "controlled by the Rollout");
    assert_eq!(obs.analysis_runs[0].phase, AnalysisPhase::Successful);
    assert_eq!(
        obs.analysis_run_created_at.get("web-a-1-step1"),
        Some(&"2027-01-01T00:00:00Z".parse::<Timestamp>().expect("time"))
    );
}

//! The fair baseline's API calls in one reconcile, against the mocked API server of
//! [`super`]: on the Gateway API the baseline Service is pointed first, then the HTTPRoute
//! gets three guarded weights during the analysis step and two after it; and a ReplicaSet
//! this Rollout does not control is never adopted, scaled or copied, whatever its name.

use super::*;
use crate::api::Baseline;
use crate::rollout::baseline::baseline_revision;

const BASELINE_SVC: &str = "/api/v1/namespaces/shop/services/web-baseline";

/// `web` with a baseline; on the Gateway API (`router`) with Service `web-baseline`.
fn baseline_rollout(router: bool, status: RolloutStatus) -> Rollout {
    let mut r = rollout(router, Some(status));
    r.spec.strategy.canary.baseline = Some(Baseline {
        enabled: true,
        service: router.then(|| "web-baseline".to_owned()),
    });
    r
}

/// The HTTPRoute with the stable, canary and baseline backendRefs at these weights.
fn three_way_route(stable: i64, canary: i64, baseline: i64) -> Value {
    let mut r = route(stable, canary);
    r["spec"]["rules"][0]["backendRefs"]
        .as_array_mut()
        .expect("refs")
        .push(json!({"name": "web-baseline", "port": 80, "weight": baseline}));
    r
}

/// A ReplicaSet named like `revision`'s, labelled as the Rollout's, but controlled by
/// someone else.
fn foreign_replica_set(revision: &str) -> Value {
    let mut rs = replica_set(revision, 0, 0);
    rs["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "Deployment",
        "name": "intruder", "uid": "uid-intruder", "controller": true}]);
    rs["spec"]["template"] = json!({"metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "evil:1"}]}});
    rs
}

/// The analysis step (index 1) at weight 20 with the baseline's ReplicaSet at 1/1 and the
/// route at (stable, canary, baseline) weights; the baseline Service selects `selected`.
fn at_the_analysis_step(selected: &str, weights: (i64, i64, i64)) -> (RolloutStatus, Cluster) {
    let (status, mut cluster) = in_flight(1, 20);
    let baseline = baseline_revision(&stable_revision());
    cluster.replica_sets.push(replica_set(&baseline, 1, 1));
    cluster
        .services
        .insert("web-baseline".into(), service("web-baseline", selected));
    cluster.route = Some(three_way_route(weights.0, weights.1, weights.2));
    (status, cluster)
}

#[tokio::test]
async fn the_baseline_service_is_pointed_before_any_traffic_goes_to_it() {
    let (status, cluster) = at_the_analysis_step("somewhere-else", (80, 20, 0));
    let (result, calls, _) = reconcile_rollout(baseline_rollout(true, status), cluster).await;
    result.expect("reconciled");
    let patch = calls
        .iter()
        .find(|c| c.line() == format!("PATCH {BASELINE_SVC}"))
        .unwrap_or_else(|| panic!("the baseline Service is pointed: {:#?}", lines(&calls)));
    let baseline = baseline_revision(&stable_revision());
    assert_eq!(
        patch.body,
        json!({"metadata": {"annotations": {MANAGED_BY_ANNOTATION: "web"}},
               "spec": {"selector": {REVISION_LABEL: baseline}}})
    );
    assert!(
        !calls.iter().any(|c| c.line() == format!("PATCH {ROUTE}")),
        "no weight for a Service that selects other pods: {:#?}",
        lines(&calls)
    );
    assert!(
        !calls.iter().any(|c| c.line() == format!("POST {RUNS}")),
        "the analysis waits for its baseline: {:#?}",
        lines(&calls)
    );
}

#[tokio::test]
async fn during_the_analysis_step_the_route_splits_three_ways_with_guarded_weights() {
    let baseline = baseline_revision(&stable_revision());
    let (status, cluster) = at_the_analysis_step(&baseline, (80, 20, 0));
    let (result, calls, _) = reconcile_rollout(baseline_rollout(true, status), cluster).await;
    result.expect("reconciled");
    let patches: Vec<&Call> = calls
        .iter()
        .filter(|c| c.line() == format!("PATCH {ROUTE}"))
        .collect();
    assert_eq!(patches.len(), 1, "{:#?}", lines(&calls));
    assert_eq!(patches[0].content_type, "application/json-patch+json");
    assert_eq!(
        patches[0].body,
        json!([
            {"op": "test", "path": "/spec/rules/0/backendRefs/0/name", "value": "web-stable"},
            {"op": "test", "path": "/spec/rules/0/backendRefs/0/weight", "value": 80},
            {"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 60},
            {"op": "test", "path": "/spec/rules/0/backendRefs/1/name", "value": "web-canary"},
            {"op": "test", "path": "/spec/rules/0/backendRefs/1/weight", "value": 20},
            {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 20},
            {"op": "test", "path": "/spec/rules/0/backendRefs/2/name", "value": "web-baseline"},
            {"op": "test", "path": "/spec/rules/0/backendRefs/2/weight", "value": 0},
            {"op": "replace", "path": "/spec/rules/0/backendRefs/2/weight", "value": 20},
        ])
    );
    // The run starts once the router reports the baseline's share (the next reconcile).
    assert!(
        !calls.iter().any(|c| c.line() == format!("POST {RUNS}")),
        "{:#?}",
        lines(&calls)
    );
    let write = last_own(&calls).expect("status write");
    assert_status_write(write);
    let message = status_of(write).message.unwrap_or_default();
    assert!(message.contains("baseline"), "{message}");
}

#[tokio::test]
async fn with_the_split_in_place_the_run_starts_and_after_the_step_the_baseline_weight_goes() {
    let baseline = baseline_revision(&stable_revision());
    let (status, cluster) = at_the_analysis_step(&baseline, (60, 20, 20));
    let (result, calls, _) = reconcile_rollout(baseline_rollout(true, status), cluster).await;
    result.expect("reconciled");
    assert!(
        calls.iter().any(|c| c.line() == format!("POST {RUNS}")),
        "converged: the run is created: {:#?}",
        lines(&calls)
    );
    assert!(
        !calls.iter().any(|c| c.method == "PATCH" && c.path == ROUTE),
        "{:#?}",
        lines(&calls)
    );

    // The step after the analysis (setWeight 100): the baseline's share goes back to the
    // stable first, before the canary's weight rises; its pods go once the route shows 0.
    let (mut status, cluster) = at_the_analysis_step(&baseline, (60, 20, 20));
    status.current_step_index = Some(2);
    let (result, calls, _) = reconcile_rollout(baseline_rollout(true, status), cluster).await;
    result.expect("reconciled");
    let first_patch = calls
        .iter()
        .find(|c| c.line() == format!("PATCH {ROUTE}"))
        .unwrap_or_else(|| panic!("the route is patched: {:#?}", lines(&calls)));
    assert_eq!(
        first_patch.body,
        json!([
            {"op": "test", "path": "/spec/rules/0/backendRefs/0/name", "value": "web-stable"},
            {"op": "test", "path": "/spec/rules/0/backendRefs/0/weight", "value": 60},
            {"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 80},
            {"op": "test", "path": "/spec/rules/0/backendRefs/1/name", "value": "web-canary"},
            {"op": "test", "path": "/spec/rules/0/backendRefs/1/weight", "value": 20},
            {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 20},
            {"op": "test", "path": "/spec/rules/0/backendRefs/2/name", "value": "web-baseline"},
            {"op": "test", "path": "/spec/rules/0/backendRefs/2/weight", "value": 20},
            {"op": "replace", "path": "/spec/rules/0/backendRefs/2/weight", "value": 0},
        ])
    );
    let baseline_rs = format!("{RS}/web-{baseline}");
    assert!(
        !calls.iter().any(|c| c.path == baseline_rs),
        "its pods stay until the route shows no traffic to them: {:#?}",
        lines(&calls)
    );
}

#[tokio::test]
async fn a_route_without_the_baseline_service_holds_the_rollout_naming_it() {
    let baseline = baseline_revision(&stable_revision());
    let (status, mut cluster) = at_the_analysis_step(&baseline, (80, 20, 0));
    cluster.route = Some(route(80, 20));
    let (result, calls, _) = reconcile_rollout(baseline_rollout(true, status), cluster).await;
    result.expect("reconciled");
    assert!(
        !calls.iter().any(|c| c.method == "PATCH" && c.path == ROUTE),
        "{:#?}",
        lines(&calls)
    );
    let write = last_own(&calls).expect("status write");
    let status = status_of(write);
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains("web-baseline") && message.contains("canary.baseline.service"),
        "{message}"
    );
}

/// Calls that wrote to the ReplicaSet `name` (anything but reading it).
fn writes_to(calls: &[Call], name: &str) -> Vec<String> {
    let path = format!("{RS}/{name}");
    calls
        .iter()
        .filter(|c| {
            c.method != "GET" && (c.path == path || c.body["metadata"]["name"] == json!(name))
        })
        .map(Call::line)
        .collect()
}

#[tokio::test]
async fn a_look_alike_replica_set_in_the_cache_is_never_scaled_as_the_baseline() {
    let baseline = baseline_revision(&stable_revision());
    let (status, mut cluster) = in_flight(1, 20);
    cluster.replica_sets.push(foreign_replica_set(&baseline));
    let (result, calls, _) = reconcile_rollout(baseline_rollout(false, status), cluster).await;
    let error = result.expect_err("the look-alike stops the reconcile");
    assert!(error.starts_with("foreign_replica_set"), "{error}");
    assert!(error.contains(&format!("web-{baseline}")), "{error}");
    assert_eq!(
        writes_to(&calls, &format!("web-{baseline}")),
        Vec::<String>::new()
    );
}

/// [`Cluster`] whose API server (not its cache) holds `extra` ReplicaSets by name, and
/// refuses to create one that exists there.
#[derive(Clone)]
struct ApiReplicaSets {
    base: Cluster,
    extra: BTreeMap<String, Value>,
}

impl ApiReplicaSets {
    fn responder(self) -> Responder {
        let base = self.base.clone().responder();
        Arc::new(move |call: &Call| {
            let name = call.path.rsplit('/').next().unwrap_or("");
            match call.method.as_str() {
                "GET" if call.path.starts_with(&format!("{RS}/")) => self
                    .extra
                    .get(name)
                    .cloned()
                    .map_or_else(|| not_found(&call.path), |rs| (200, rs)),
                "POST" if call.path == RS => {
                    let wanted = call.body["metadata"]["name"].as_str().unwrap_or("");
                    if self.extra.contains_key(wanted) {
                        (
                            409,
                            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                   "reason": "AlreadyExists", "code": 409,
                                   "message": format!("replicasets \"{wanted}\" already exists")}),
                        )
                    } else {
                        (201, call.body.clone())
                    }
                }
                _ => base(call),
            }
        })
    }
}

async fn reconcile_against(
    rollout: Rollout,
    cluster: ApiReplicaSets,
) -> (Result<Action, String>, Vec<Call>) {
    let caches = caches_of(&cluster.base);
    let templates = template_index(&cluster.base.templates);
    let (client, verifier) = ApiServerVerifier::start(cluster.responder());
    let mut ctx = plain_context(client);
    ctx.templates = Some(templates);
    ctx.caches = caches;
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        rollout_controller::reconcile(Arc::new(rollout), Arc::new(ctx)),
    )
    .await
    .expect("reconcile finishes")
    .map_err(|e| format!("{}: {e}", e.category()));
    (result, verifier.finish().await)
}

/// The stable's ReplicaSet as the API server holds it, with its pod template.
fn stable_with_template() -> Value {
    let mut rs = replica_set(&stable_revision(), 4, 4);
    rs["spec"]["template"] = json!({"metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "web:1"}]}});
    rs
}

#[tokio::test]
async fn a_look_alike_that_exists_only_in_the_api_is_not_adopted_after_already_exists() {
    let baseline = baseline_revision(&stable_revision());
    let (status, base) = in_flight(1, 20);
    let cluster = ApiReplicaSets {
        base,
        extra: BTreeMap::from([
            (format!("web-{}", stable_revision()), stable_with_template()),
            (format!("web-{baseline}"), foreign_replica_set(&baseline)),
        ]),
    };
    let (result, calls) = reconcile_against(baseline_rollout(false, status), cluster).await;
    let error = result.expect_err("the look-alike stops the reconcile");
    assert!(error.starts_with("foreign_replica_set"), "{error}");
    let baseline_rs = format!("{RS}/web-{baseline}");
    assert!(
        calls
            .iter()
            .any(|c| c.line() == format!("GET {baseline_rs}")),
        "its owner is checked after the create was refused: {:#?}",
        lines(&calls)
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.line() == format!("PATCH {baseline_rs}")),
        "never scaled: {:#?}",
        lines(&calls)
    );
}

#[tokio::test]
async fn the_baseline_never_copies_the_template_of_a_stable_look_alike() {
    let (status, base) = in_flight(1, 20);
    let stable_name = format!("web-{}", stable_revision());
    let cluster = ApiReplicaSets {
        base,
        // The cache still shows vigil's stable; the API server holds a look-alike now.
        extra: BTreeMap::from([(stable_name.clone(), foreign_replica_set(&stable_revision()))]),
    };
    let (result, calls) = reconcile_against(baseline_rollout(false, status), cluster).await;
    let error = result.expect_err("the look-alike stops the reconcile");
    assert!(error.contains(&stable_name), "{error}");
    assert!(
        !calls.iter().any(|c| c.line() == format!("POST {RS}")),
        "no baseline from another owner's template: {:#?}",
        lines(&calls)
    );

    // With vigil's own stable the baseline is created from its template.
    let (status, base) = in_flight(1, 20);
    let cluster = ApiReplicaSets {
        base,
        extra: BTreeMap::from([(stable_name, stable_with_template())]),
    };
    let (result, calls) = reconcile_against(baseline_rollout(false, status), cluster).await;
    result.expect("reconciled");
    let created = calls
        .iter()
        .find(|c| c.line() == format!("POST {RS}"))
        .unwrap_or_else(|| panic!("the baseline is created: {:#?}", lines(&calls)));
    assert_eq!(
        created.body["spec"]["template"]["spec"]["containers"][0]["image"],
        json!("web:1")
    );
    assert_eq!(
        created.body["metadata"]["ownerReferences"][0]["uid"],
        json!(UID)
    );
}

#[tokio::test]
async fn an_old_revision_is_deleted_only_as_the_very_object_seen() {
    let (old, current) = (stable_revision(), canary_revision());
    let status = RolloutStatus {
        phase: Some(RolloutPhase::Healthy),
        observed_generation: Some(2),
        current_step_index: Some(3),
        stable_revision: Some(current.clone()),
        ..RolloutStatus::default()
    };
    let mut old_set = replica_set(&old, 0, 0);
    old_set["metadata"]["uid"] = json!("uid-old-rs");
    let cluster = Cluster {
        replica_sets: vec![replica_set(&current, 4, 4), old_set],
        services: BTreeMap::from([
            ("web-stable".into(), service("web-stable", &current)),
            ("web-canary".into(), service("web-canary", &current)),
        ]),
        ..Cluster::default()
    };
    let mut r = rollout(false, Some(status));
    r.spec.revision_history_limit = Some(0);
    let (result, calls, _) = reconcile_rollout(r, cluster).await;
    result.expect("reconciled");
    let delete = calls
        .iter()
        .find(|c| c.method == "DELETE")
        .unwrap_or_else(|| panic!("the old revision is deleted: {:#?}", lines(&calls)));
    assert_eq!(delete.path, format!("{RS}/web-{old}"));
    assert_eq!(delete.body["preconditions"]["uid"], json!("uid-old-rs"));
    assert_eq!(delete.body["propagationPolicy"], json!("Background"));
}

#[tokio::test]
async fn deleting_a_rollout_takes_the_baseline_share_back_to_the_stable_first() {
    let baseline = baseline_revision(&stable_revision());
    let deleting = |status| {
        let mut r = baseline_rollout(true, status);
        r.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
        r
    };
    let (status, cluster) = at_the_analysis_step(&baseline, (60, 20, 20));
    let (result, calls, _) = reconcile_rollout(deleting(status), cluster).await;
    assert_eq!(result, Ok(Action::await_change()));
    let patches: Vec<&Call> = calls
        .iter()
        .filter(|c| c.line() == format!("PATCH {ROUTE}"))
        .collect();
    // The mock keeps answering the route as it was: each patch is built from 60/20/20.
    assert_eq!(patches.len(), 2, "{:#?}", lines(&calls));
    let written = |call: &Call| -> Vec<Value> {
        call.body
            .as_array()
            .expect("ops")
            .iter()
            .filter(|op| op["op"] == "replace")
            .map(|op| op["value"].clone())
            .collect()
    };
    assert_eq!(written(patches[0]), vec![json!(80), json!(20), json!(0)]);
    assert_eq!(written(patches[1]), vec![json!(80), json!(0), json!(20)]);

    // A route that never listed the baseline: nothing of it to take back, and the canary's
    // share still goes back (two ways), so the deletion is not stuck.
    let (status, mut cluster) = at_the_analysis_step(&baseline, (80, 20, 0));
    cluster.route = Some(route(80, 20));
    let (result, calls, _) = reconcile_rollout(deleting(status), cluster).await;
    assert_eq!(result, Ok(Action::await_change()));
    let patch = calls
        .iter()
        .find(|c| c.line() == format!("PATCH {ROUTE}"))
        .unwrap_or_else(|| panic!("the canary's weight goes back: {:#?}", lines(&calls)));
    assert_eq!(patch.body[2]["value"], json!(100));
    assert_eq!(patch.body[5]["value"], json!(0));
}

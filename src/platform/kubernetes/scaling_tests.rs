//! The scaling controls' API calls in one reconcile, against the mocked API server of
//! [`super`]: a new canary's ReplicaSet is created carrying `canaryMetadata` and
//! `minReadySeconds`; the stable's ReplicaSet and running pods get `stableMetadata`, and a
//! promoted canary's lose the canary's keys; `minReadySeconds` counts available pods only.

use super::*;
use crate::api::PodMetadata;
use crate::platform::kubernetes::revision_settings::POD_METADATA_ANNOTATION;

const PODS: &str = "/api/v1/namespaces/shop/pods";

/// The uid of revision `revision`'s ReplicaSet ([`labelled_replica_set`]).
fn replica_set_uid(revision: &str) -> String {
    format!("uid-of-web-{revision}")
}

/// The pods of revision `revision` (two of them, controlled by its ReplicaSet), answered to
/// the controller's list.
fn pods_of(revision: &str) -> Vec<Value> {
    (0..2)
        .map(|i| {
            pod(
                &format!("web-{revision}-{i}"),
                revision,
                &replica_set_uid(revision),
            )
        })
        .collect()
}

/// A pod with the rollout's and `revision`'s labels, controlled by the object `owner_uid`.
fn pod(name: &str, revision: &str, owner_uid: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": NS,
                        "labels": {"app": "web", ROLLOUT_LABEL: "web", REVISION_LABEL: revision},
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                             "name": format!("web-{revision}"), "uid": owner_uid,
                                             "controller": true}]},
           "spec": {"containers": [{"name": "web", "image": "web"}]}})
}

/// [`Cluster`] with pods to list and patch.
#[derive(Clone)]
struct PodCluster {
    base: Cluster,
    pods: Vec<Value>,
}

impl PodCluster {
    fn responder(self) -> Responder {
        let base = self.base.clone().responder();
        Arc::new(move |call: &Call| {
            let path = call.path.as_str();
            match call.method.as_str() {
                "GET" if path == PODS => (200, list(self.pods.clone())),
                "PATCH" if path.starts_with(PODS) => {
                    let name = path.rsplit('/').next().unwrap_or("");
                    self.pods
                        .iter()
                        .find(|p| p["metadata"]["name"] == json!(name))
                        .cloned()
                        .map_or_else(|| not_found(path), |p| (200, p))
                }
                _ => base(call),
            }
        })
    }
}

async fn reconcile_pods(
    rollout: Rollout,
    cluster: PodCluster,
) -> (Result<Action, String>, Vec<Call>) {
    let templates = template_index(&cluster.base.templates);
    let cluster_base = cluster.base.clone();
    let (client, verifier) = ApiServerVerifier::start(cluster.responder());
    let mut ctx = plain_context(client);
    ctx.templates = Some(templates);
    // As the watches fill them: trimmed (the role metadata's record must survive it).
    ctx.caches = Caches::holding(
        parse(cluster_base.replica_sets.clone()),
        parse(cluster_base.runs.clone()),
        parse(cluster_base.services.values().cloned()),
        parse(cluster_base.deployment.clone()),
    );
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        rollout_controller::reconcile(Arc::new(rollout), Arc::new(ctx)),
    )
    .await
    .expect("reconcile finishes")
    .map_err(|e| format!("{}: {e}", e.category()));
    (result, verifier.finish().await)
}

fn role(value: &str) -> PodMetadata {
    PodMetadata {
        labels: [("role".to_owned(), value.to_owned())].into(),
        annotations: [("example.com/role".to_owned(), value.to_owned())].into(),
    }
}

/// `web` with both roles' metadata and `minReadySeconds: 15`.
fn scaling_rollout(status: Option<RolloutStatus>) -> Rollout {
    let mut r = rollout(false, status);
    r.spec.min_ready_seconds = Some(15);
    r.spec.strategy.canary.canary_metadata = Some(PodMetadata {
        labels: [
            ("role".to_owned(), "canary".to_owned()),
            ("track".to_owned(), "new".to_owned()),
        ]
        .into(),
        annotations: [("example.com/role".to_owned(), "canary".to_owned())].into(),
    });
    r.spec.strategy.canary.stable_metadata = Some(role("stable"));
    r
}

/// A ReplicaSet as vigil left it with `metadata` and `minReadySeconds: 15`.
fn labelled_replica_set(revision: &str, replicas: i32, metadata: &PodMetadata) -> Value {
    let mut rs = replica_set(revision, replicas, replicas);
    rs["metadata"]["uid"] = json!(replica_set_uid(revision));
    rs["metadata"]["annotations"] = json!({
        POD_METADATA_ANNOTATION: serde_json::to_string(metadata).expect("json")
    });
    rs["spec"]["minReadySeconds"] = json!(15);
    rs["status"]["availableReplicas"] = json!(replicas);
    rs
}

#[tokio::test]
async fn a_new_canary_is_created_with_its_metadata_and_min_ready_seconds() {
    let (mut status, mut base) = in_flight(0, 0);
    let stable = stable_revision();
    let canary = canary_revision();
    status.current_step_index = Some(0);
    // The stable already carries stableMetadata; the canary has no ReplicaSet yet.
    base.replica_sets = vec![labelled_replica_set(&stable, 4, &role("stable"))];
    let cluster = PodCluster {
        base,
        pods: pods_of(&stable),
    };
    let (result, calls) = reconcile_pods(scaling_rollout(Some(status)), cluster).await;
    result.expect("reconciled");
    let created = calls
        .iter()
        .find(|c| c.line() == format!("POST {RS}"))
        .unwrap_or_else(|| panic!("the canary's ReplicaSet is created: {:#?}", lines(&calls)));
    let body = &created.body;
    assert_eq!(
        body["spec"]["minReadySeconds"],
        json!(15),
        "{:#?}",
        lines(&calls)
    );
    assert_eq!(body["metadata"]["name"], json!(format!("web-{canary}")));
    assert_eq!(
        body["spec"]["replicas"],
        json!(0),
        "created for its settings, then scaled"
    );
    assert_eq!(body["spec"]["minReadySeconds"], json!(15));
    let pod_meta = &body["spec"]["template"]["metadata"];
    assert_eq!(pod_meta["labels"]["role"], json!("canary"));
    assert_eq!(pod_meta["labels"]["track"], json!("new"));
    assert_eq!(
        pod_meta["labels"]["app"],
        json!("web"),
        "the template's labels stay"
    );
    assert_eq!(pod_meta["labels"][REVISION_LABEL], json!(canary));
    assert_eq!(pod_meta["annotations"]["example.com/role"], json!("canary"));
    let recorded: PodMetadata = serde_json::from_str(
        body["metadata"]["annotations"][POD_METADATA_ANNOTATION]
            .as_str()
            .expect("the record annotation"),
    )
    .expect("a PodMetadata record");
    assert_eq!(
        recorded.labels.get("track").map(String::as_str),
        Some("new")
    );
    // Then the ScaleRevision: the create finds it (already there on a real server) or
    // scales it; either way to the canary's one pod.
    let scaled = calls
        .iter()
        .filter(|c| c.path.starts_with(RS) && c.method != "GET")
        .nth(1)
        .unwrap_or_else(|| panic!("the canary is scaled: {:#?}", lines(&calls)));
    assert_eq!(scaled.body["spec"]["replicas"], json!(1));
    // The stable, already labelled, is left alone: no ReplicaSet patch, no pod touched.
    assert!(
        !calls
            .iter()
            .any(|c| c.method == "PATCH" && (c.path.starts_with(PODS) || c.path.starts_with(RS))),
        "{:#?}",
        lines(&calls)
    );
}

#[tokio::test]
async fn a_promoted_canary_gets_the_stables_metadata_on_its_replica_set_and_running_pods() {
    // Promoted: the former canary is the stable now, but still carries canaryMetadata.
    let promoted = canary_revision();
    let status = RolloutStatus {
        phase: Some(RolloutPhase::Healthy),
        observed_generation: Some(2),
        current_step_index: Some(3),
        step: Some("3/3".into()),
        stable_revision: Some(promoted.clone()),
        canary_attempt: 1,
        ..RolloutStatus::default()
    };
    let canary_meta = scaling_rollout(None)
        .spec
        .strategy
        .canary
        .canary_metadata
        .expect("canaryMetadata");
    let base = Cluster {
        replica_sets: vec![labelled_replica_set(&promoted, 4, &canary_meta)],
        services: BTreeMap::from([
            ("web-stable".into(), service("web-stable", &promoted)),
            ("web-canary".into(), service("web-canary", &promoted)),
        ]),
        ..Cluster::default()
    };
    let cluster = PodCluster {
        base,
        pods: pods_of(&promoted),
    };
    let (result, calls) = reconcile_pods(scaling_rollout(Some(status)), cluster).await;
    result.expect("reconciled");
    let rs_path = format!("{RS}/web-{promoted}");
    assert_eq!(
        lines(&calls),
        vec![
            format!("PATCH {rs_path}"),
            format!("GET {PODS}"),
            format!("PATCH {PODS}/web-{promoted}-0"),
            format!("PATCH {PODS}/web-{promoted}-1"),
            format!("PATCH {STATUS}"),
        ],
        "{calls:#?}"
    );
    let rs_patch = &calls[0].body;
    assert_eq!(calls[0].content_type, "application/merge-patch+json");
    assert_eq!(
        rs_patch["spec"]["template"]["metadata"],
        json!({
            "labels": {"role": "stable", "track": null},
            "annotations": {"example.com/role": "stable"},
        }),
        "stableMetadata on, the canary's own keys off"
    );
    assert_eq!(rs_patch["spec"]["minReadySeconds"], json!(15));
    let recorded: PodMetadata = serde_json::from_str(
        rs_patch["metadata"]["annotations"][POD_METADATA_ANNOTATION]
            .as_str()
            .expect("the record annotation"),
    )
    .expect("a PodMetadata record");
    assert_eq!(recorded, role("stable"));
    // Only the revision's pods, by the rollout and revision labels.
    assert!(
        calls[1]
            .query
            .contains("labelSelector=vigil.dev%2Frollout%3Dweb%2Cvigil.dev%2Frevision%3D"),
        "{}",
        calls[1].query
    );
    for call in &calls[2..4] {
        assert_eq!(
            call.body,
            json!({"metadata": {
                "labels": {"role": "stable", "track": null},
                "annotations": {"example.com/role": "stable"},
            }})
        );
    }
}

#[tokio::test]
async fn with_min_ready_seconds_only_available_pods_count_as_ready() {
    // The canary's one pod is ready but not yet available for 15 s: the weight stays.
    let (status, mut base) = in_flight(0, 0);
    let (stable, canary) = (stable_revision(), canary_revision());
    let canary_meta = scaling_rollout(None)
        .spec
        .strategy
        .canary
        .canary_metadata
        .expect("canaryMetadata");
    let mut canary_rs = labelled_replica_set(&canary, 1, &canary_meta);
    canary_rs["status"]["availableReplicas"] = json!(0);
    base.replica_sets = vec![labelled_replica_set(&stable, 4, &role("stable")), canary_rs];
    base.route = Some(route(100, 0));
    let mut rollout = scaling_rollout(Some(status));
    rollout.spec.strategy.canary.traffic_routing = Some(TrafficRouting {
        gateway_api: Some(GatewayApiRouting {
            http_route: "web".into(),
        }),
        ..TrafficRouting::default()
    });
    let cluster = PodCluster {
        base: base.clone(),
        pods: vec![],
    };
    let (result, calls) = reconcile_pods(rollout.clone(), cluster).await;
    result.expect("reconciled");
    assert!(
        !calls.iter().any(|c| c.line() == format!("PATCH {ROUTE}")),
        "no weight before the pod is available: {:#?}",
        lines(&calls)
    );
    let written = calls
        .iter()
        .find(|c| c.line() == format!("PATCH {STATUS}"))
        .map(status_of)
        .expect("a status write");
    assert!(
        written
            .message
            .as_deref()
            .is_some_and(|m| m.contains("0/1 ready")),
        "{:?}",
        written.message
    );

    // Available now: the weight moves.
    base.replica_sets[1]["status"]["availableReplicas"] = json!(1);
    let cluster = PodCluster { base, pods: vec![] };
    let (result, calls) = reconcile_pods(rollout, cluster).await;
    result.expect("reconciled");
    assert!(
        calls.iter().any(|c| c.line() == format!("PATCH {ROUTE}")),
        "{:#?}",
        lines(&calls)
    );
}

/// Pods that carry the revision's labels but that its ReplicaSet does not control (a bare pod
/// someone labelled, another controller's pod) are never patched: the labels only find pods.
#[tokio::test]
async fn role_metadata_reaches_only_the_pods_of_the_revisions_own_replica_set() {
    let promoted = canary_revision();
    let status = RolloutStatus {
        phase: Some(RolloutPhase::Healthy),
        observed_generation: Some(2),
        current_step_index: Some(3),
        step: Some("3/3".into()),
        stable_revision: Some(promoted.clone()),
        canary_attempt: 1,
        ..RolloutStatus::default()
    };
    let canary_meta = role("canary");
    let base = Cluster {
        replica_sets: vec![labelled_replica_set(&promoted, 4, &canary_meta)],
        services: BTreeMap::from([
            ("web-stable".into(), service("web-stable", &promoted)),
            ("web-canary".into(), service("web-canary", &promoted)),
        ]),
        ..Cluster::default()
    };
    let mut bare = pod("someone-elses", &promoted, "");
    bare["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("ownerReferences");
    let mut not_controller = pod("adopted-elsewhere", &promoted, &replica_set_uid(&promoted));
    not_controller["metadata"]["ownerReferences"][0]["controller"] = json!(false);
    let mut pods = pods_of(&promoted);
    pods.extend([
        bare,
        not_controller,
        pod("another-owners", &promoted, "uid-of-another-replica-set"),
    ]);
    let cluster = PodCluster { base, pods };
    let (result, calls) = reconcile_pods(scaling_rollout(Some(status)), cluster).await;
    result.expect("reconciled");
    let patched: Vec<String> = calls
        .iter()
        .filter(|c| c.method == "PATCH" && c.path.starts_with(PODS))
        .map(|c| c.path.rsplit('/').next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        patched,
        [format!("web-{promoted}-0"), format!("web-{promoted}-1")],
        "{:#?}",
        lines(&calls)
    );
}

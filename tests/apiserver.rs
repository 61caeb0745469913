//! The in-process API test server (`vigil::testing::apiserver`) driven by the real kube-rs
//! client: CRUD, patches, server-side apply, subresources, watch, a Controller, finalizers and
//! the ReplicaSet stand-in. Every test is bounded by a timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::time::timeout;
use vigil::api::{Rollout, RolloutPhase};
use vigil::testing::apiserver::ApiServer;

const ROLLOUTS: &str = "vigil.dev/v1alpha1/rollouts";
const LIMIT: Duration = Duration::from_secs(30);

fn rollout(name: &str) -> Rollout {
    serde_json::from_value(json!({
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
            },
            "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}},
        },
    }))
    .expect("a valid Rollout")
}

fn replica_set(name: &str, replicas: i32, owner: Option<&Rollout>) -> ReplicaSet {
    let mut rs = json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
            },
        },
    });
    if let Some(owner) = owner {
        rs["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "vigil.dev/v1alpha1",
            "kind": "Rollout",
            "name": owner.name_any(),
            "uid": owner.uid().expect("a stored Rollout has a uid"),
            "controller": true,
            "blockOwnerDeletion": true,
        }]);
    }
    serde_json::from_value(rs).expect("a valid ReplicaSet")
}

fn setup(server: &ApiServer) -> (Client, Api<Rollout>) {
    let client = server.client();
    let api = Api::namespaced(client.clone(), "default");
    (client, api)
}

fn rv(obj: &impl ResourceExt) -> u64 {
    obj.resource_version()
        .and_then(|rv| rv.parse().ok())
        .expect("a numeric resourceVersion")
}

fn api_code(err: &kube::Error) -> (u16, String) {
    match err {
        kube::Error::Api(status) => (status.code, status.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Polls `check` until it returns `Some`, or fails after `LIMIT`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn crud_tracks_resource_versions_and_rejects_stale_writes() {
    let server = ApiServer::start();
    let (_, api) = setup(&server);
    timeout(LIMIT, async {
        let created = api
            .create(&PostParams::default(), &rollout("web"))
            .await
            .unwrap();
        assert!(created.uid().is_some());
        assert!(created.creation_timestamp().is_some());
        assert_eq!(created.metadata.generation, Some(1));
        let rv1 = rv(&created);

        let again = api
            .create(&PostParams::default(), &rollout("web"))
            .await
            .unwrap_err();
        assert_eq!(api_code(&again), (409, "AlreadyExists".to_string()));

        let mut changed = api.get("web").await.unwrap();
        changed.spec.replicas = Some(5);
        let replaced = api
            .replace("web", &PostParams::default(), &changed)
            .await
            .unwrap();
        assert!(rv(&replaced) > rv1);
        assert_eq!(replaced.metadata.generation, Some(2));
        assert_eq!(replaced.spec.replicas, Some(5));

        // `changed` still carries the old resourceVersion.
        changed.spec.replicas = Some(7);
        let stale = api
            .replace("web", &PostParams::default(), &changed)
            .await
            .unwrap_err();
        assert_eq!(api_code(&stale), (409, "Conflict".to_string()));
        assert_eq!(api.get("web").await.unwrap().spec.replicas, Some(5));

        api.create(&PostParams::default(), &rollout("db"))
            .await
            .unwrap();
        let list = api.list(&ListParams::default()).await.unwrap();
        assert_eq!(list.items.len(), 2);
        let list_rv: u64 = list.metadata.resource_version.unwrap().parse().unwrap();
        assert_eq!(list_rv, server.resource_version());
        let selected = api
            .list(&ListParams::default().labels("app=db"))
            .await
            .unwrap();
        assert_eq!(selected.items.len(), 1);
        assert_eq!(selected.items[0].name_any(), "db");
        let by_name = api
            .list(&ListParams::default().fields("metadata.name=web"))
            .await
            .unwrap();
        assert_eq!(by_name.items.len(), 1);
        let all_namespaces: Api<Rollout> = Api::all(Client::from(api.clone()));
        assert_eq!(
            all_namespaces
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .len(),
            2
        );

        api.delete("web", &DeleteParams::default()).await.unwrap();
        let gone = api.get("web").await.unwrap_err();
        assert_eq!(api_code(&gone), (404, "NotFound".to_string()));
        assert!(server.get_json(ROLLOUTS, Some("default"), "web").is_none());

        let log = server.request_log();
        assert!(log.iter().any(|(m, p)| m == "PUT"
            && p.starts_with("/apis/vigil.dev/v1alpha1/namespaces/default/rollouts/web")));
    })
    .await
    .expect("test timed out");
}

/// The controller writes a Rollout's status as a JSON patch that sets the resourceVersion it
/// observed: like a real API server, the test server takes it as a precondition (409 when the
/// object moved on) and otherwise replaces the status whole, the spec untouched.
#[tokio::test]
async fn a_status_json_patch_carrying_a_stale_resource_version_conflicts() {
    let server = ApiServer::start();
    let (_, api) = setup(&server);
    timeout(LIMIT, async {
        let created = api
            .create(&PostParams::default(), &rollout("web"))
            .await
            .unwrap();
        let observed = rv(&created).to_string();
        let status_patch = |version: &str, message: &str| {
            let ops = json!([
                {"op": "replace", "path": "/metadata/resourceVersion", "value": version},
                {"op": "add", "path": "/status", "value": {"phase": "Progressing", "message": message}},
            ]);
            Patch::Json::<()>(serde_json::from_value(ops).unwrap())
        };
        let written = api
            .patch_status("web", &PatchParams::default(), &status_patch(&observed, "first"))
            .await
            .unwrap();
        let status = written.status.clone().unwrap();
        assert_eq!(status.message.as_deref(), Some("first"));
        assert_ne!(rv(&written), rv(&created));
        assert_eq!(written.spec, created.spec);

        let conflict = api
            .patch_status("web", &PatchParams::default(), &status_patch(&observed, "stale"))
            .await
            .unwrap_err();
        assert_eq!(api_code(&conflict), (409, "Conflict".to_string()));
        let kept = api.get_status("web").await.unwrap();
        assert_eq!(kept.status.unwrap().message.as_deref(), Some("first"));
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn merge_json_and_apply_patches_with_field_ownership() {
    let server = ApiServer::start();
    let (_, api) = setup(&server);
    timeout(LIMIT, async {
        api.create(&PostParams::default(), &rollout("web"))
            .await
            .unwrap();

        let merged = api
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"paused": true}})),
            )
            .await
            .unwrap();
        assert!(merged.spec.paused);

        let ops: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": "/spec/replicas", "value": 2},
            {"op": "replace", "path": "/spec/replicas", "value": 3},
        ]))
        .unwrap();
        let patched = api
            .patch("web", &PatchParams::default(), &Patch::<()>::Json(ops))
            .await
            .unwrap();
        assert_eq!(patched.spec.replicas, Some(3));

        let failing: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": "/spec/replicas", "value": 99},
            {"op": "replace", "path": "/spec/replicas", "value": 4},
        ]))
        .unwrap();
        let err = api
            .patch("web", &PatchParams::default(), &Patch::<()>::Json(failing))
            .await
            .unwrap_err();
        assert_eq!(api_code(&err), (422, "Invalid".to_string()));
        assert_eq!(api.get("web").await.unwrap().spec.replicas, Some(3));

        // Server-side apply: manager "alice" takes spec.replicas ...
        let apply = |replicas: i32| {
            json!({
                "apiVersion": "vigil.dev/v1alpha1",
                "kind": "Rollout",
                "metadata": {"name": "web"},
                "spec": {"replicas": replicas},
            })
        };
        // The JSON patch above made its (default-named) manager own spec.replicas, so even
        // alice's first apply conflicts, as in Kubernetes, until forced.
        let err = api
            .patch("web", &PatchParams::apply("alice"), &Patch::Apply(apply(4)))
            .await
            .unwrap_err();
        assert_eq!(api_code(&err).0, 409);
        let applied = api
            .patch(
                "web",
                &PatchParams::apply("alice").force(),
                &Patch::Apply(apply(4)),
            )
            .await
            .unwrap();
        assert_eq!(applied.spec.replicas, Some(4));
        // ... so "bob" conflicts unless forced.
        let err = api
            .patch("web", &PatchParams::apply("bob"), &Patch::Apply(apply(6)))
            .await
            .unwrap_err();
        let kube::Error::Api(status) = &err else {
            panic!("expected an API error, got {err:?}");
        };
        assert_eq!(status.code, 409);
        assert!(status.message.contains("\"alice\""), "{}", status.message);
        assert!(
            status.message.contains(".spec.replicas"),
            "{}",
            status.message
        );
        let forced = api
            .patch(
                "web",
                &PatchParams::apply("bob").force(),
                &Patch::Apply(apply(6)),
            )
            .await
            .unwrap();
        assert_eq!(forced.spec.replicas, Some(6));
        let managers: Vec<(String, String)> = forced
            .managed_fields()
            .iter()
            .map(|m| {
                (
                    m.manager.clone().unwrap_or_default(),
                    m.operation.clone().unwrap_or_default(),
                )
            })
            .collect();
        assert!(
            managers.contains(&("bob".to_string(), "Apply".to_string())),
            "{managers:?}"
        );
        // The same value from alice is not a conflict: ownership is shared.
        api.patch("web", &PatchParams::apply("alice"), &Patch::Apply(apply(6)))
            .await
            .unwrap();

        // Apply creates a missing object.
        let mut fresh = serde_json::to_value(rollout("new")).unwrap();
        fresh["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("namespace");
        let created = api
            .patch("new", &PatchParams::apply("alice"), &Patch::Apply(fresh))
            .await
            .unwrap();
        assert_eq!(created.metadata.generation, Some(1));

        // An apply without a field manager is rejected.
        let raw = http::Request::patch("/apis/vigil.dev/v1alpha1/namespaces/default/rollouts/web")
            .header("content-type", "application/apply-patch+yaml")
            .body(serde_json::to_vec(&apply(1)).unwrap())
            .unwrap();
        let err = Client::from(api.clone())
            .request_text(raw)
            .await
            .unwrap_err();
        assert_eq!(api_code(&err).0, 422);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn status_subresource_is_isolated_and_generation_tracks_spec() {
    let server = ApiServer::start();
    let (_, api) = setup(&server);
    timeout(LIMIT, async {
        api.create(&PostParams::default(), &rollout("web"))
            .await
            .unwrap();

        let status =
            json!({"status": {"phase": "Paused", "message": "waiting", "canaryWeight": 20}});
        let with_status = api
            .patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
        let got = with_status.status.as_ref().unwrap();
        assert_eq!(got.phase, Some(RolloutPhase::Paused));
        assert_eq!(with_status.metadata.generation, Some(1));

        // A status write cannot change the spec ...
        let sneaky = json!({"spec": {"replicas": 9}, "status": {"message": "x"}});
        let after = api
            .patch_status("web", &PatchParams::default(), &Patch::Merge(&sneaky))
            .await
            .unwrap();
        assert_eq!(after.spec.replicas, Some(2));
        assert_eq!(after.status.as_ref().unwrap().message.as_deref(), Some("x"));

        // ... and a main-resource write cannot change the status.
        let main = json!({"spec": {"replicas": 4}, "status": {"message": "ignored"}});
        let after = api
            .patch("web", &PatchParams::default(), &Patch::Merge(&main))
            .await
            .unwrap();
        assert_eq!(after.spec.replicas, Some(4));
        assert_eq!(after.status.as_ref().unwrap().message.as_deref(), Some("x"));
        assert_eq!(after.metadata.generation, Some(2));

        // Metadata-only writes leave the generation alone.
        let labels = json!({"metadata": {"labels": {"team": "payments"}}});
        let after = api
            .patch("web", &PatchParams::default(), &Patch::Merge(&labels))
            .await
            .unwrap();
        assert_eq!(after.metadata.generation, Some(2));

        // Status apply with force, as the controller writes it.
        let apply = json!({
            "apiVersion": "vigil.dev/v1alpha1",
            "kind": "Rollout",
            "status": {"phase": "Healthy", "canaryWeight": 0},
        });
        let after = api
            .patch_status(
                "web",
                &PatchParams::apply("vigil").force(),
                &Patch::Apply(&apply),
            )
            .await
            .unwrap();
        assert_eq!(
            after.status.as_ref().unwrap().phase,
            Some(RolloutPhase::Healthy)
        );
        assert_eq!(after.metadata.generation, Some(2));

        // A write that changes nothing keeps the resourceVersion.
        let before = rv(&after);
        let same = api
            .patch("web", &PatchParams::default(), &Patch::Merge(&labels))
            .await
            .unwrap();
        assert_eq!(rv(&same), before);

        // Seeding from a test keeps the status it is given.
        let mut seeded = serde_json::to_value(rollout("seeded")).unwrap();
        seeded["status"] = json!({"phase": "Degraded", "canaryWeight": 0});
        server.put_json(ROLLOUTS, seeded).unwrap();
        let got = api.get("seeded").await.unwrap();
        assert_eq!(got.status.unwrap().phase, Some(RolloutPhase::Degraded));
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn watcher_sees_changes_and_relists_after_410() {
    let server = ApiServer::start();
    let (_, api) = setup(&server);
    timeout(LIMIT, async {
        api.create(&PostParams::default(), &rollout("a")).await.unwrap();
        let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
        let mut next = async || {
            events
                .next()
                .await
                .expect("the watcher stream does not end")
        };
        assert!(matches!(next().await, Ok(watcher::Event::Init)));
        assert!(matches!(next().await, Ok(watcher::Event::InitApply(r)) if r.name_any() == "a"));
        assert!(matches!(next().await, Ok(watcher::Event::InitDone)));

        api.create(&PostParams::default(), &rollout("b")).await.unwrap();
        assert!(matches!(next().await, Ok(watcher::Event::Apply(r)) if r.name_any() == "b"));
        let paused = json!({"spec": {"paused": true}});
        api.patch("a", &PatchParams::default(), &Patch::Merge(&paused))
            .await
            .unwrap();
        assert!(matches!(next().await, Ok(watcher::Event::Apply(r)) if r.name_any() == "a" && r.spec.paused));
        api.delete("b", &DeleteParams::default()).await.unwrap();
        assert!(matches!(next().await, Ok(watcher::Event::Delete(r)) if r.name_any() == "b"));

        // Compaction: the resumed watch gets an ERROR 410 and the watcher lists again.
        let lists_before = count_lists(&server);
        server.expire_watches();
        match next().await {
            Err(watcher::Error::WatchError(status)) => assert_eq!(status.code, 410),
            other => panic!("expected a 410 watch error, got {other:?}"),
        }
        assert!(matches!(next().await, Ok(watcher::Event::Init)));
        assert!(matches!(next().await, Ok(watcher::Event::InitApply(r)) if r.name_any() == "a"));
        assert!(matches!(next().await, Ok(watcher::Event::InitDone)));
        assert_eq!(count_lists(&server), lists_before + 1);

        // And it keeps watching after the relist.
        api.create(&PostParams::default(), &rollout("c")).await.unwrap();
        assert!(matches!(next().await, Ok(watcher::Event::Apply(r)) if r.name_any() == "c"));
    })
    .await
    .expect("test timed out");
}

fn count_lists(server: &ApiServer) -> usize {
    server
        .request_log()
        .iter()
        .filter(|(m, p)| m == "GET" && p.contains("/rollouts?") && !p.contains("watch="))
        .count()
}

#[tokio::test]
async fn raw_watches_replay_history_send_bookmarks_and_expire() {
    let server = ApiServer::builder()
        .history_capacity(3)
        .bookmark_interval(Duration::from_millis(100))
        .start();
    let (_, api) = setup(&server);
    timeout(LIMIT, async {
        let first = api
            .create(&PostParams::default(), &rollout("r0"))
            .await
            .unwrap();
        for i in 1..6 {
            api.create(&PostParams::default(), &rollout(&format!("r{i}")))
                .await
                .unwrap();
        }
        // Only the last 3 events are kept: resuming from the first create is too old.
        let mut stream = api
            .watch(&WatchParams::default(), &rv(&first).to_string())
            .await
            .unwrap()
            .boxed();
        match stream.try_next().await.unwrap() {
            Some(WatchEvent::Error(status)) => assert_eq!(status.code, 410),
            other => panic!("expected ERROR 410, got {other:?}"),
        }
        assert!(
            stream.try_next().await.unwrap().is_none(),
            "the stream ends"
        );

        // From a recent version: exactly the later events, then bookmarks; then the timeout.
        let list = api.list(&ListParams::default()).await.unwrap();
        let from = list.items.iter().map(rv).max().unwrap() - 1;
        let params = WatchParams::default().timeout(2);
        let mut stream = api.watch(&params, &from.to_string()).await.unwrap().boxed();
        match stream.try_next().await.unwrap() {
            Some(WatchEvent::Added(r)) => assert_eq!(r.name_any(), "r5"),
            other => panic!("expected the replayed ADDED, got {other:?}"),
        }
        match stream.try_next().await.unwrap() {
            Some(WatchEvent::Bookmark(b)) => {
                assert_eq!(
                    b.metadata.resource_version,
                    server.resource_version().to_string()
                );
            }
            other => panic!("expected a BOOKMARK, got {other:?}"),
        }
        let started = Instant::now();
        while stream.try_next().await.unwrap().is_some() {}
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "ends at timeoutSeconds"
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn controller_reconciles_when_an_owned_replicaset_changes() {
    let server = ApiServer::start();
    let (client, api) = setup(&server);
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    timeout(LIMIT, async {
        let owner = api.create(&PostParams::default(), &rollout("web")).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let controller = Controller::new(api.clone(), watcher::Config::default())
            .owns(rs_api.clone(), watcher::Config::default())
            .run(
                |obj: Arc<Rollout>, tx: Arc<tokio::sync::mpsc::UnboundedSender<String>>| async move {
                    let _ = tx.send(obj.name_any());
                    Ok::<_, kube::Error>(Action::await_change())
                },
                |_, _, _| Action::await_change(),
                Arc::new(tx),
            )
            .for_each(|_| async {});
        let running = tokio::spawn(controller);

        assert_eq!(rx.recv().await.as_deref(), Some("web"), "initial reconcile");
        let rs = rs_api
            .create(&PostParams::default(), &replica_set("web-abc", 1, Some(&owner)))
            .await
            .unwrap();
        assert_eq!(rx.recv().await.as_deref(), Some("web"), "owned object created");
        let scale = json!({"spec": {"replicas": 3}});
        rs_api
            .patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(&scale))
            .await
            .unwrap();
        assert_eq!(rx.recv().await.as_deref(), Some("web"), "owned object changed");
        running.abort();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn finalizers_hold_a_deleted_object_until_removed() {
    let server = ApiServer::start();
    let (_, api) = setup(&server);
    timeout(LIMIT, async {
        let mut r = rollout("web");
        r.metadata.finalizers = Some(vec!["vigil.dev/cleanup".to_string()]);
        api.create(&PostParams::default(), &r).await.unwrap();

        api.delete("web", &DeleteParams::default()).await.unwrap();
        let marked = api.get("web").await.unwrap();
        assert!(marked.metadata.deletion_timestamp.is_some());
        // Deleting again is accepted and changes nothing.
        api.delete("web", &DeleteParams::default()).await.unwrap();

        let clear = json!({"metadata": {"finalizers": null}});
        api.patch("web", &PatchParams::default(), &Patch::Merge(&clear))
            .await
            .unwrap();
        let gone = api.get("web").await.unwrap_err();
        assert_eq!(api_code(&gone).0, 404);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn replicaset_stand_in_marks_replicas_ready() {
    let server = ApiServer::start().with_replicaset_controller();
    let client = server.client();
    let rs_api: Api<ReplicaSet> = Api::namespaced(client, "default");
    timeout(LIMIT, async {
        rs_api
            .create(&PostParams::default(), &replica_set("web-1", 3, None))
            .await
            .unwrap();
        let ready = |want: i32, generation: i64| {
            let rs_api = rs_api.clone();
            async move {
                let rs = rs_api.get("web-1").await.ok()?;
                let status = rs.status?;
                (status.ready_replicas == Some(want)
                    && status.available_replicas == Some(want)
                    && status.replicas == want
                    && status.observed_generation == Some(generation))
                .then_some(())
            }
        };
        eventually("3 ready replicas", || ready(3, 1)).await;

        let scale = json!({"spec": {"replicas": 5}});
        rs_api
            .patch("web-1", &PatchParams::default(), &Patch::Merge(&scale))
            .await
            .unwrap();
        eventually("5 ready replicas", || ready(5, 2)).await;

        // The scale subresource drives the same path.
        let scaled = rs_api
            .patch_scale(
                "web-1",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 1}})),
            )
            .await
            .unwrap();
        assert_eq!(scaled.spec.unwrap().replicas, Some(1));
        eventually("1 ready replica", || ready(1, 3)).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn discovery_and_crd_installation() {
    let server = ApiServer::start_without_crds();
    let (client, api) = setup(&server);
    timeout(LIMIT, async {
        let missing = api.list(&ListParams::default()).await.unwrap_err();
        assert_eq!(api_code(&missing).0, 404);
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        assert_eq!(
            api_code(&crds.get("rollouts.vigil.dev").await.unwrap_err()).0,
            404
        );

        for crd in vigil::api::all_crds() {
            crds.patch(
                &crd.name_any(),
                &PatchParams::apply("test").force(),
                &Patch::Apply(&crd),
            )
            .await
            .unwrap();
        }
        let installed = crds.get("rollouts.vigil.dev").await.unwrap();
        let established = installed
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        assert!(established);
        api.create(&PostParams::default(), &rollout("web"))
            .await
            .unwrap();

        let discovery = kube::discovery::Discovery::new(client.clone())
            .run()
            .await
            .unwrap();
        let group = discovery.get("vigil.dev").expect("the vigil group");
        let kinds: Vec<String> = group
            .recommended_resources()
            .into_iter()
            .map(|(r, _)| r.kind)
            .collect();
        for kind in [
            "Rollout",
            "AnalysisRun",
            "AnalysisTemplate",
            "ClusterAnalysisTemplate",
        ] {
            assert!(kinds.contains(&kind.to_string()), "{kinds:?}");
        }
        let aggregated = kube::discovery::Discovery::new(client.clone())
            .run_aggregated()
            .await
            .unwrap();
        assert!(aggregated.has_group("vigil.dev"));
        assert!(aggregated.has_group("gateway.networking.k8s.io"));
        assert!(aggregated.has_group("apps"));

        let version = client.apiserver_version().await.unwrap();
        assert_eq!(
            (version.major.as_str(), version.minor.as_str()),
            ("1", "33")
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn faults_errors_and_kubeconfig() {
    let server = ApiServer::start();
    let (client, api) = setup(&server);
    timeout(LIMIT, async {
        api.create(&PostParams::default(), &rollout("web"))
            .await
            .unwrap();
        let path = "/apis/vigil.dev/v1alpha1/namespaces/default/rollouts/web/status";
        server.fail_next("PATCH", path, 409);
        server.fail_next("PATCH", path, 500);
        let status = json!({"status": {"message": "x"}});
        let first = api
            .patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap_err();
        assert_eq!(api_code(&first), (409, "Conflict".to_string()));
        let second = api
            .patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap_err();
        assert_eq!(api_code(&second).0, 500);
        api.patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();

        // Malformed requests are answered with a Status, not a dropped connection.
        for (method, uri, content_type, body) in [
            (
                "POST",
                "/apis/vigil.dev/v1alpha1/namespaces/default/rollouts",
                "application/json",
                "{not json",
            ),
            (
                "POST",
                "/apis/vigil.dev/v1alpha1/namespaces/default/rollouts",
                "application/json",
                "[1]",
            ),
            (
                "PATCH",
                "/apis/vigil.dev/v1alpha1/namespaces/default/rollouts/web",
                "application/merge-patch+json",
                "nope",
            ),
            (
                "PATCH",
                "/apis/vigil.dev/v1alpha1/namespaces/default/rollouts/web",
                "text/plain",
                "{}",
            ),
            (
                "GET",
                "/apis/vigil.dev/v1alpha1/namespaces/default/rollouts?labelSelector=a%20in%20(b",
                "",
                "",
            ),
            (
                "GET",
                "/apis/vigil.dev/v1alpha1/namespaces/default/rollouts?watch=1&resourceVersion=x",
                "",
                "",
            ),
            ("GET", "/apis/nope.dev/v1/things", "", ""),
            (
                "DELETE",
                "/apis/vigil.dev/v1alpha1/namespaces/default/rollouts/web?dryRun=All",
                "",
                "",
            ),
            (
                "PUT",
                "/apis/vigil.dev/v1alpha1/namespaces/default/rollouts/other",
                "application/json",
                r#"{"metadata":{"name":"other"}}"#,
            ),
            (
                "PATCH",
                "/apis/vigil.dev/v1alpha1/namespaces/default/rollouts/web",
                "application/json-patch+json",
                r#"[{"op":"replace","path":"","value":5}]"#,
            ),
        ] {
            let request = http::Request::builder()
                .method(method)
                .uri(uri)
                .header("content-type", content_type)
                .body(body.as_bytes().to_vec())
                .unwrap();
            let err = client.request_text(request).await.unwrap_err();
            let (code, _) = api_code(&err);
            assert!((400..500).contains(&code), "{method} {uri}: {code}");
        }
        assert!(api.get("web").await.is_ok(), "the server is still up");

        // The kubeconfig is what the real binary gets through KUBECONFIG.
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(config.default_namespace, "default");
        let from_file = Client::try_from(config).unwrap();
        let namespaces: Api<Namespace> = Api::all(from_file);
        let names: Vec<String> = namespaces
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        assert!(names.contains(&"default".to_string()), "{names:?}");
    })
    .await
    .expect("test timed out");
}

/// Not a timed assertion: prints how long 10,000 Rollouts take to create and list, and the
/// process's memory. `cargo test --test apiserver -- --ignored --nocapture throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --ignored --nocapture"]
async fn throughput_10k_rollouts() {
    const N: usize = 10_000;
    let rss_before = rss_kib();
    let server = ApiServer::start();
    let (_, api) = setup(&server);
    let template = rollout("x");
    let started = Instant::now();
    futures::stream::iter(0..N)
        .map(|i| {
            let api = api.clone();
            let mut r = template.clone();
            r.metadata.name = Some(format!("rollout-{i:05}"));
            r.metadata.labels = Some([("app".to_string(), format!("app-{i}"))].into());
            async move { api.create(&PostParams::default(), &r).await.map(|_| ()) }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
    let create = started.elapsed();
    let rss_created = rss_kib();
    let started = Instant::now();
    let list = api.list(&ListParams::default()).await.unwrap();
    let list_time = started.elapsed();
    assert_eq!(list.items.len(), N);
    let started = Instant::now();
    let raw: Value = serde_json::from_str(
        &Client::from(api.clone())
            .request_text(
                http::Request::get("/apis/vigil.dev/v1alpha1/rollouts")
                    .body(Vec::new())
                    .unwrap(),
            )
            .await
            .unwrap(),
    )
    .unwrap();
    let raw_time = started.elapsed();
    let bytes = raw.to_string().len();
    drop(list);
    let rss_after = rss_kib();
    println!(
        "created {N} Rollouts in {create:?} ({:.0}/s); typed list {list_time:?}; raw list {raw_time:?} ({} KiB JSON); \
         RSS {} MiB at start, {} MiB after creating (+{} MiB: server store + client), {} MiB after listing",
        N as f64 / create.as_secs_f64(),
        bytes / 1024,
        rss_before / 1024,
        rss_created / 1024,
        (rss_created - rss_before) / 1024,
        rss_after / 1024,
    );
    println!(
        "server: {} objects, resourceVersion {}",
        server.object_count(),
        server.resource_version()
    );
}

fn rss_kib() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Every request is counted by verb, resource (and subresource) and response code, in process
/// and over `GET /debug/requests`; `take_requests` / `DELETE /debug/requests` start anew.
#[tokio::test]
async fn requests_are_counted_by_verb_resource_and_code() {
    let server = ApiServer::start();
    let (_, api) = setup(&server);
    timeout(LIMIT, async {
        api.create(&PostParams::default(), &rollout("web"))
            .await
            .unwrap();
        server.take_requests();

        let listed = api.list(&ListParams::default()).await.unwrap();
        let stale = listed.items[0].clone();
        let mut fresh = api.get("web").await.unwrap();
        fresh.spec.replicas = Some(3);
        api.replace("web", &PostParams::default(), &fresh)
            .await
            .unwrap();
        let conflict = api
            .replace_status("web", &PostParams::default(), &stale)
            .await
            .unwrap_err();
        assert_eq!(api_code(&conflict).0, 409);

        let counts = server.requests();
        assert_eq!(counts.count("list", "rollouts"), 1);
        assert_eq!(counts.count("get", "rollouts"), 1);
        assert_eq!(counts.count("update", "rollouts"), 1);
        assert_eq!(counts.count("update", "rollouts/status"), 1);
        assert_eq!(counts.with_code(409), 1);
        let conflicts = counts
            .count_where(|k| k.verb == "update" && k.subresource == "status" && k.code == 409);
        assert_eq!(conflicts, 1);
        assert_eq!(counts.verb("watch"), 0);
        assert_eq!(counts.total(), 4);

        let http = reqwest::Client::new();
        let url = format!("{}/debug/requests", server.url());
        let served: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
        assert_eq!(served["total"], 4);
        let entry = served["requests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["verb"] == "update" && e["subresource"] == "status")
            .cloned()
            .unwrap();
        assert_eq!(
            entry,
            json!({"verb": "update", "group": "vigil.dev", "resource": "rollouts",
                   "subresource": "status", "code": 409, "count": 1})
        );
        // Reading the counts is not counted; DELETE hands them over and starts anew.
        let taken: Value = http
            .delete(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(taken["total"], 4);
        assert_eq!(server.requests().total(), 0);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_list_with_a_limit_comes_in_pages_at_the_first_pages_resource_version() {
    let server = ApiServer::start();
    let (_, api) = setup(&server);
    timeout(LIMIT, async {
        for name in ["a", "b", "c", "d", "e"] {
            api.create(&PostParams::default(), &rollout(name))
                .await
                .unwrap();
        }
        let first = api.list(&ListParams::default().limit(2)).await.unwrap();
        let names = |list: &kube::core::ObjectList<Rollout>| -> Vec<String> {
            list.items.iter().map(ResourceExt::name_any).collect()
        };
        assert_eq!(names(&first), ["a", "b"]);
        let token = first.metadata.continue_.clone().expect("more pages");
        let snapshot = first.metadata.resource_version.clone();

        // A write between pages does not move the list's resourceVersion.
        api.create(&PostParams::default(), &rollout("f"))
            .await
            .unwrap();
        let second = api
            .list(&ListParams::default().limit(2).continue_token(&token))
            .await
            .unwrap();
        assert_eq!(names(&second), ["c", "d"]);
        assert_eq!(second.metadata.resource_version, snapshot);
        let token = second.metadata.continue_.clone().expect("more pages");
        let last = api
            .list(&ListParams::default().limit(2).continue_token(&token))
            .await
            .unwrap();
        assert_eq!(names(&last), ["e", "f"]);
        assert!(last.metadata.continue_.is_none(), "{:?}", last.metadata);

        // Without a limit, one body; an exact fit has no continue.
        assert_eq!(
            api.list(&ListParams::default()).await.unwrap().items.len(),
            6
        );
        let exact = api.list(&ListParams::default().limit(6)).await.unwrap();
        assert_eq!(exact.items.len(), 6);
        assert!(exact.metadata.continue_.is_none());

        // Labels filter before the page is cut: a page holds `limit` matches.
        let selected = api
            .list(&ListParams::default().labels("app in (b,e,f)").limit(2))
            .await
            .unwrap();
        assert_eq!(names(&selected), ["b", "e"]);

        let bad = api
            .list(&ListParams::default().limit(2).continue_token("garbage"))
            .await
            .unwrap_err();
        assert_eq!(api_code(&bad).0, 400);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn the_watcher_lists_in_pages_of_its_page_size_and_sees_every_object() {
    let server = ApiServer::start();
    let (_, api) = setup(&server);
    timeout(LIMIT, async {
        for i in 0..7 {
            api.create(&PostParams::default(), &rollout(&format!("r{i}")))
                .await
                .unwrap();
        }
        server.clear_request_log();
        let config = watcher::Config::default().page_size(3);
        let mut events = watcher(api.clone(), config).boxed();
        let mut listed = Vec::new();
        loop {
            match events.next().await.expect("the stream goes on") {
                Ok(watcher::Event::InitApply(r)) => listed.push(r.name_any()),
                Ok(watcher::Event::InitDone) => break,
                Ok(_) => {}
                Err(error) => panic!("{error}"),
            }
        }
        listed.sort();
        assert_eq!(listed, ["r0", "r1", "r2", "r3", "r4", "r5", "r6"]);
        let pages: Vec<String> = server
            .request_log()
            .into_iter()
            .filter(|(m, p)| m == "GET" && p.contains("/rollouts?") && !p.contains("watch="))
            .map(|(_, p)| p)
            .collect();
        assert_eq!(pages.len(), 3, "{pages:#?}");
        assert!(pages.iter().all(|p| p.contains("limit=3")), "{pages:#?}");
        assert!(pages[1].contains("continue="), "{pages:#?}");
    })
    .await
    .expect("test timed out");
}

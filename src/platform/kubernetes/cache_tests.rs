//! The caches against the in-process API test server (real watches, real HTTP): a change
//! wakes the Rollout it concerns and no other; a watch the server refuses shows in
//! `/readyz` and in `vigil_watch_errors_total`.

use std::time::Duration;

use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use super::WatchScope;
use super::cache::{CacheReporting, Index, references};
use super::context::{REVISION_LABEL, ROLLOUT_LABEL};
use super::server::Readiness;
use super::watches;
use crate::api::Rollout;
use crate::metrics::Metrics;
use crate::testing::apiserver::ApiServer;

const DEADLINE: Duration = Duration::from_secs(60);

fn rollout(name: &str) -> Rollout {
    serde_json::from_value(json!({
        "apiVersion": "vigil.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}")},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}},
            "strategy": {"canary": {
                "stableService": format!("{name}-stable"),
                "canaryService": format!("{name}-canary"),
                "trafficRouting": {"gatewayAPI": {"httpRoute": name}}
            }}
        }
    }))
    .expect("rollout")
}

fn replica_set(rollout: &str, ready: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": format!("{rollout}-aaa"), "namespace": "shop",
                     "labels": {ROLLOUT_LABEL: rollout, REVISION_LABEL: "aaa"},
                     "ownerReferences": [{"apiVersion": "vigil.dev/v1alpha1", "kind": "Rollout",
                         "name": rollout, "uid": format!("uid-{rollout}"), "controller": true}]},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": rollout}},
                 "template": {"metadata": {"labels": {"app": rollout}},
                              "spec": {"containers": [{"name": "app", "image": "app:1"}]}}},
        "status": {"replicas": 2, "readyReplicas": ready}
    })
}

fn service(name: &str, revision: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "shop"},
           "spec": {"selector": {"app": "x", REVISION_LABEL: revision}, "ports": [{"port": 80}]}})
}

fn route(name: &str, canary_weight: i64) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [
            {"name": format!("{name}-stable"), "port": 80, "weight": 100 - canary_weight},
            {"name": format!("{name}-canary"), "port": 80, "weight": canary_weight}
        ]}]}
    })
}

/// The next Rollout woken, within the deadline.
async fn next_woken(woken: &mut UnboundedReceiver<ObjectRef<Rollout>>) -> ObjectRef<Rollout> {
    tokio::time::timeout(DEADLINE, woken.recv())
        .await
        .expect("a Rollout is woken in time")
        .expect("the wake channel stays open")
}

/// Wakes are deduplicated by the controller's queue; here, every wake since the edit must be
/// of `expected` (the edit's own watch event, possibly repeated), and at least one.
async fn assert_wakes_only(
    woken: &mut UnboundedReceiver<ObjectRef<Rollout>>,
    expected: &str,
    what: &str,
) {
    let first = next_woken(woken).await;
    assert_eq!(first.name, expected, "{what} woke the wrong Rollout");
    while let Ok(more) = woken.try_recv() {
        assert_eq!(more.name, expected, "{what} also woke another Rollout");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_event_wakes_the_rollout_it_concerns_and_no_other() {
    let server = ApiServer::start();
    for name in ["checkout", "cart"] {
        server
            .put_json("apps/v1/replicasets", replica_set(name, 1))
            .expect("replica set");
        for service_name in [format!("{name}-stable"), format!("{name}-canary")] {
            server
                .put_json("v1/services", service(&service_name, "aaa"))
                .expect("service");
        }
        server
            .put_json("gateway.networking.k8s.io/v1/httproutes", route(name, 0))
            .expect("route");
    }
    let (wake, mut woken) = tokio::sync::mpsc::unbounded_channel();
    let ready = Readiness::default();
    let reporting = CacheReporting {
        health: ready.watches().clone(),
        metrics: Metrics::default(),
        wake,
    };
    // Listed, as the Rollout watch lists before the caches count as synced.
    let index = Index::new(references);
    index.apply(&watcher::Event::Init);
    for name in ["checkout", "cart"] {
        index.apply(&watcher::Event::InitApply(rollout(name)));
    }
    index.apply(&watcher::Event::InitDone);
    let scope = WatchScope {
        namespace: Some("shop".into()),
        ..WatchScope::default()
    };
    let started = watches::start(&server.client(), &scope, &index, &reporting).await;
    let caches = started.caches;
    tokio::time::timeout(DEADLINE, async {
        while caches.unsynced().is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the caches list in time");
    ready.set(true);
    assert!(ready.problems().is_empty(), "{:?}", ready.problems());
    assert_eq!(caches.replica_sets.of("shop", "checkout").len(), 1);
    // The initial list wakes nobody: a starting controller reconciles every Rollout anyway.
    assert!(woken.try_recv().is_err());

    server
        .put_json("apps/v1/replicasets", replica_set("cart", 2))
        .expect("ready replicas change");
    assert_wakes_only(&mut woken, "cart", "a ReplicaSet's readiness").await;

    server
        .put_json("v1/services", service("checkout-canary", "bbb"))
        .expect("selector edit");
    assert_wakes_only(&mut woken, "checkout", "a Service selector edit").await;

    server
        .put_json("gateway.networking.k8s.io/v1/httproutes", route("cart", 30))
        .expect("weight edit");
    assert_wakes_only(&mut woken, "cart", "an HTTPRoute weight edit").await;

    // An object no Rollout names wakes nobody: the next wake is the one after it.
    server
        .put_json("v1/services", service("unrelated", "zzz"))
        .expect("unrelated service");
    server
        .put_json(
            "gateway.networking.k8s.io/v1/httproutes",
            route("checkout", 10),
        )
        .expect("weight edit");
    assert_wakes_only(&mut woken, "checkout", "an unrelated Service or the route").await;
    // The cached copies follow the edits, trimmed.
    let cached = caches
        .services
        .get("shop", "checkout-canary")
        .expect("cached service");
    let selector = cached.spec.as_ref().and_then(|s| s.selector.as_ref());
    assert_eq!(
        selector
            .and_then(|s| s.get(REVISION_LABEL))
            .map(String::as_str),
        Some("bbb")
    );
    assert!(cached.spec.as_ref().is_some_and(|s| s.ports.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_kind_without_its_crd_is_not_watched_and_does_not_hold_readiness() {
    let server = ApiServer::builder().without_gateway_api().start();
    let (wake, _woken) = tokio::sync::mpsc::unbounded_channel();
    let ready = Readiness::default();
    let reporting = CacheReporting {
        health: ready.watches().clone(),
        metrics: Metrics::default(),
        wake,
    };
    let started = watches::start(
        &server.client(),
        &WatchScope::default(),
        &Index::new(references),
        &reporting,
    )
    .await;
    assert!(!started.caches.routers.contains_key("HTTPRoute"));
    assert!(started.caches.routers.contains_key("VirtualService"));
    ready.set(true);
    tokio::time::timeout(DEADLINE, async {
        while !ready.problems().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every started watch syncs");
}

/// Caches of the namespace `shop` started against `server`, with `checkout` and `cart` in the
/// reference index; returns once every cache has listed, and the wakes channel.
async fn started_caches(
    server: &ApiServer,
) -> (
    watches::Started,
    Readiness,
    UnboundedReceiver<ObjectRef<Rollout>>,
) {
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
    let ready = Readiness::default();
    let reporting = CacheReporting {
        health: ready.watches().clone(),
        metrics: Metrics::default(),
        wake,
    };
    // Listed, as the Rollout watch lists before the caches count as synced.
    let index = Index::new(references);
    index.apply(&watcher::Event::Init);
    for name in ["checkout", "cart"] {
        index.apply(&watcher::Event::InitApply(rollout(name)));
    }
    index.apply(&watcher::Event::InitDone);
    let scope = WatchScope {
        namespace: Some("shop".into()),
        ..WatchScope::default()
    };
    let started = watches::start(&server.client(), &scope, &index, &reporting).await;
    tokio::time::timeout(DEADLINE, async {
        while started.caches.unsynced().is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the caches list in time");
    ready.set(true);
    (started, ready, woken)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relist_wakes_only_the_rollouts_whose_objects_changed_while_the_watch_was_down() {
    let server = ApiServer::start();
    for name in ["checkout", "cart"] {
        server
            .put_json("apps/v1/replicasets", replica_set(name, 1))
            .expect("replica set");
    }
    let (started, _ready, mut woken) = started_caches(&server).await;
    assert!(woken.try_recv().is_err(), "the first list wakes nobody");
    server.take_requests();
    // The re-watch fails once, so the edit below lands while no watch is open: it can only
    // be seen in the re-list.
    server.fail_next("GET", "/apis/apps/v1/namespaces/shop/replicasets", 500);
    server.expire_watches();
    server
        .put_json("apps/v1/replicasets", replica_set("cart", 2))
        .expect("ready replicas change");
    // Every watch re-lists; only the changed ReplicaSet's Rollout is woken.
    assert_wakes_only(&mut woken, "cart", "a ReplicaSet changed while unwatched").await;
    let cart = started.caches.replica_sets.of("shop", "cart");
    assert_eq!(
        cart[0].status.as_ref().and_then(|s| s.ready_replicas),
        Some(2)
    );
    let requests = server.requests();
    assert!(
        requests.count("list", "replicasets") >= 1,
        "{:?}",
        requests.to_json()
    );
    // A vanished object wakes its Rollout too.
    server.fail_next("GET", "/apis/apps/v1/namespaces/shop/replicasets", 500);
    server.expire_watches();
    server
        .delete_json("apps/v1/replicasets", Some("shop"), "checkout-aaa")
        .expect("delete");
    assert_wakes_only(
        &mut woken,
        "checkout",
        "a ReplicaSet deleted while unwatched",
    )
    .await;
    assert!(
        started
            .caches
            .replica_sets
            .of("shop", "checkout")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_crd_installed_after_start_is_watched_and_its_removal_stops_the_watch() {
    let server = ApiServer::builder().without_gateway_api().start();
    let (started, ready, mut woken) = started_caches(&server).await;
    let routers = started.caches.routers.clone();
    assert!(!routers.contains_key("HTTPRoute"));
    server
        .put_json(
            "apiextensions.k8s.io/v1/customresourcedefinitions",
            crate::testing::apiserver::httproute_crd(),
        )
        .expect("install the CRD");
    server
        .put_json("gateway.networking.k8s.io/v1/httproutes", route("cart", 0))
        .expect("route");
    tokio::time::timeout(DEADLINE, async {
        while started
            .caches
            .router_cache("HTTPRoute")
            .is_none_or(|cache| cache.store.state().is_empty())
            || started.caches.unsynced().is_some()
            || !ready.problems().is_empty()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the new kind is watched and syncs");
    let cached = started
        .caches
        .router_cache("HTTPRoute")
        .expect("watched")
        .store
        .state();
    assert_eq!(cached.len(), 1, "the route is read from memory");
    while woken.try_recv().is_ok() {}
    server
        .put_json("gateway.networking.k8s.io/v1/httproutes", route("cart", 30))
        .expect("weight edit");
    assert_wakes_only(&mut woken, "cart", "an edit of a route of the new kind").await;

    server
        .delete_json(
            "apiextensions.k8s.io/v1/customresourcedefinitions",
            None,
            "httproutes.gateway.networking.k8s.io",
        )
        .expect("remove the CRD");
    tokio::time::timeout(DEADLINE, async {
        while routers.contains_key("HTTPRoute") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the kind is no longer watched");
    assert!(
        ready.problems().is_empty(),
        "a removed kind holds no readiness: {:?}",
        ready.problems()
    );
}

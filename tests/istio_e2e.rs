//! End to end through Istio: the real `vigil controller --no-leader-election` binary against
//! the in-process Kubernetes API test server holding Istio's VirtualService and
//! DestinationRule CRDs (with its ReplicaSet stand-in marking pods ready). The objects are
//! shaped like the ones in Istio's and Argo Rollouts' documentation.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use vigil::api::{Rollout, RolloutPhase};
use vigil::testing::apiserver::ApiServer;
use vigil::traffic::istio::{destination_rule_resource, virtual_service_resource};

const NS: &str = "default";
const WAIT: Duration = Duration::from_secs(90);

/// The controller binary, killed on drop.
struct Controller(Child);

impl Controller {
    fn start(kubeconfig: &Path) -> Controller {
        let child = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args([
                "controller",
                "--no-leader-election",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn,kube=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start vigil controller");
        Controller(child)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A started API server, a kubeconfig for the controller, and a client.
struct Cluster {
    _server: ApiServer,
    _dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
    client: kube::Client,
}

fn cluster() -> Cluster {
    support::install_crypto_provider();
    let server = ApiServer::start().with_replicaset_controller();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let client = server.client();
    Cluster {
        _server: server,
        _dir: dir,
        kubeconfig,
        client,
    }
}

fn virtual_services(client: &kube::Client) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), NS, &virtual_service_resource())
}

fn destination_rules(client: &kube::Client) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), NS, &destination_rule_resource())
}

async fn create(api: &Api<DynamicObject>, object: Value) {
    let object: DynamicObject = serde_json::from_value(object).expect("object");
    api.create(&PostParams::default(), &object)
        .await
        .expect("create");
}

async fn create_services(client: &kube::Client, name: &str) {
    let api: Api<Service> = Api::namespaced(client.clone(), NS);
    for role in ["stable", "canary"] {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-{role}"), "namespace": NS},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}
        }))
        .expect("service");
        api.create(&PostParams::default(), &service)
            .await
            .expect("create service");
    }
}

fn template(name: &str, image: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": image}]}
    })
}

/// A Rollout routed by `istio`, with `services` (stable/canary) or none.
fn rollout(name: &str, services: bool, istio: Value, steps: Value) -> Value {
    let mut canary = json!({
        "trafficRouting": {"istio": istio},
        "scaleDownDelaySeconds": 0,
        "steps": steps
    });
    if services {
        canary["stableService"] = json!(format!("{name}-stable"));
        canary["canaryService"] = json!(format!("{name}-canary"));
    }
    json!({
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": template(name, "app:1"),
            "strategy": {"canary": canary}
        }
    })
}

async fn create_rollout(client: &kube::Client, object: Value) {
    // Through the dynamic API so that every field reaches the server as written.
    let resource = kube::api::ApiResource::erase::<Rollout>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &resource);
    create(&api, object).await;
}

/// Waits until `check` holds for the Rollout, or fails with its last status.
async fn wait_for(
    api: &Api<Rollout>,
    name: &str,
    what: &str,
    check: impl Fn(&Rollout) -> bool,
) -> Rollout {
    let deadline = Instant::now() + WAIT;
    loop {
        let rollout = api.get(name).await.expect("get rollout");
        if check(&rollout) {
            return rollout;
        }
        assert!(
            Instant::now() < deadline,
            "rollout {name}: timed out waiting for {what}; status: {:#?}",
            rollout.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `check` holds for what `read` returns, or fails with the last value.
async fn wait_until<T: std::fmt::Debug, F: std::future::Future<Output = T>>(
    what: &str,
    read: impl Fn() -> F,
    check: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = read().await;
        if check(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last: {value:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn phase(rollout: &Rollout) -> Option<RolloutPhase> {
    rollout.status.as_ref().and_then(|s| s.phase)
}

fn stable_of(rollout: &Rollout) -> Option<String> {
    rollout
        .status
        .as_ref()
        .and_then(|s| s.stable_revision.clone())
}

async fn set_image(api: &Api<Rollout>, name: &str, image: &str) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"template": template(name, image)}})),
    )
    .await
    .expect("new image");
}

/// Writes `status` fields the way the CLI does (guarded by the resourceVersion read).
async fn request(api: &Api<Rollout>, name: &str, status: Value) {
    let rollout = api.get(name).await.expect("get rollout");
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({
            "metadata": {"resourceVersion": rollout.metadata.resource_version},
            "status": status
        })),
    )
    .await
    .expect("status request");
}

async fn object(api: &Api<DynamicObject>, name: &str) -> Value {
    serde_json::to_value(api.get(name).await.expect("get object")).expect("json")
}

/// The weights of route `route`'s two destinations (first, second) in a VirtualService.
async fn weights(client: &kube::Client, name: &str, route: usize) -> (i64, i64) {
    let vs = object(&virtual_services(client), name).await;
    let destinations = &vs["spec"]["http"][route]["route"];
    (
        destinations[0]["weight"].as_i64().unwrap_or(-1),
        destinations[1]["weight"].as_i64().unwrap_or(-1),
    )
}

/// The `vigil.dev/revision` label of the DestinationRule's subsets (stable, canary).
async fn subset_labels(client: &kube::Client, name: &str) -> (Option<String>, Option<String>) {
    let rule = object(&destination_rules(client), name).await;
    let label = |subset: &str| {
        rule["spec"]["subsets"]
            .as_array()
            .and_then(|list| list.iter().find(|s| s["name"] == subset))
            .and_then(|s| s["labels"]["vigil.dev/revision"].as_str())
            .map(str::to_owned)
    };
    (label("stable"), label("canary"))
}

/// Reasons of the Events recorded about Rollout `name`.
async fn event_reasons(client: &kube::Client, name: &str) -> Vec<String> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), NS);
    api.list(&Default::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reason)
        .collect()
}

/// Changes `object` in the API server with `edit` (read, edit, replace).
async fn edit(api: &Api<DynamicObject>, name: &str, edit: impl Fn(&mut Value)) {
    let mut value = object(api, name).await;
    edit(&mut value);
    let changed: DynamicObject = serde_json::from_value(value).expect("object");
    api.replace(name, &PostParams::default(), &changed)
        .await
        .expect("replace");
}

/// Makes the controller look at the Rollout now (router objects are not watched).
async fn nudge(api: &Api<Rollout>, name: &str, n: u32) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"test/nudge": n.to_string()}}})),
    )
    .await
    .expect("annotate");
}

fn payments_virtual_service() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "payments", "namespace": NS},
        "spec": {
            "hosts": ["payments.example.com", "payments"],
            "gateways": ["shop-gateway", "mesh"],
            "http": [
                {
                    "name": "admin",
                    "match": [{"uri": {"prefix": "/admin"}}],
                    "route": [{"destination": {"host": "payments-stable", "port": {"number": 80}}}]
                },
                {
                    "name": "primary",
                    "route": [
                        {"destination": {"host": "payments-stable", "port": {"number": 80}}, "weight": 100},
                        {"destination": {"host": "payments-canary.default.svc.cluster.local", "port": {"number": 80}}, "weight": 0}
                    ],
                    "retries": {"attempts": 3, "perTryTimeout": "2s"}
                }
            ]
        }
    })
}

/// Host-level splitting: the weights move at a step, a foreign edit is put back with an
/// Event, all traffic returns to the stable after a promotion and after an abort, and the
/// user's other route is never touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_level_weights_move_are_put_back_and_return_to_stable() {
    let cluster = cluster();
    let client = &cluster.client;
    let name = "payments";
    create_services(client, name).await;
    let vs_api = virtual_services(client);
    create(&vs_api, payments_virtual_service()).await;
    create_rollout(
        client,
        rollout(
            name,
            true,
            json!({"virtualService": {"name": name, "routes": ["primary"]}}),
            json!([{"setWeight": 30}, {"pause": {}}]),
        ),
    )
    .await;
    let _controller = Controller::start(&cluster.kubeconfig);
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), NS);
    let v1 = wait_for(&rollouts, name, "app:1 Healthy", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
    })
    .await;
    let v1 = stable_of(&v1).expect("stable");

    set_image(&rollouts, name, "app:2").await;
    let paused = wait_for(&rollouts, name, "the pause at 30%", |r| {
        phase(r) == Some(RolloutPhase::Paused)
    })
    .await;
    assert_eq!(paused.status.expect("status").canary_weight, 30);
    assert_eq!(weights(client, name, 1).await, (70, 30));
    let admin = object(&vs_api, name).await["spec"]["http"][0].clone();
    assert_eq!(admin, payments_virtual_service()["spec"]["http"][0]);

    // Someone sets the weights back by hand: vigil owns them and puts them back.
    edit(&vs_api, name, |vs| {
        vs["spec"]["http"][1]["route"][0]["weight"] = json!(100);
        vs["spec"]["http"][1]["route"][1]["weight"] = json!(0);
    })
    .await;
    nudge(&rollouts, name, 1).await;
    wait_until(
        "the foreign edit put back",
        || weights(client, name, 1),
        |w| *w == (70, 30),
    )
    .await;
    wait_until(
        "the put-back Event",
        || event_reasons(client, name),
        |reasons| reasons.iter().any(|r| r == "TrafficWeightRestored"),
    )
    .await;

    request(&rollouts, name, json!({"promoteStep": 1})).await;
    wait_for(&rollouts, name, "app:2 promoted", |r| {
        phase(r) == Some(RolloutPhase::Healthy) && stable_of(r).is_some_and(|s| s != v1)
    })
    .await;
    wait_until(
        "all traffic on the stable after the promotion",
        || weights(client, name, 1),
        |w| *w == (100, 0),
    )
    .await;

    set_image(&rollouts, name, "app:3").await;
    wait_for(&rollouts, name, "the pause at 30% of app:3", |r| {
        phase(r) == Some(RolloutPhase::Paused)
    })
    .await;
    assert_eq!(weights(client, name, 1).await, (70, 30));
    request(&rollouts, name, json!({"abort": true})).await;
    wait_for(&rollouts, name, "the abort", |r| {
        phase(r) == Some(RolloutPhase::Aborted)
    })
    .await;
    wait_until(
        "all traffic on the stable after the abort",
        || weights(client, name, 1),
        |w| *w == (100, 0),
    )
    .await;
    let after = object(&vs_api, name).await;
    assert_eq!(
        after["spec"]["http"][0],
        payments_virtual_service()["spec"]["http"][0]
    );
    assert_eq!(
        after["spec"]["hosts"],
        payments_virtual_service()["spec"]["hosts"]
    );
}

fn reviews_virtual_service(name: &str, route_name: Option<&str>) -> Value {
    let mut route = json!({
        "route": [
            {"destination": {"host": "reviews", "subset": "stable"}, "weight": 100},
            {"destination": {"host": "reviews", "subset": "canary"}, "weight": 0}
        ]
    });
    if let Some(route_name) = route_name {
        route["name"] = json!(route_name);
    }
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"hosts": ["reviews"], "http": [route]}
    })
}

/// Subset-level splitting over two VirtualServices: the DestinationRule's subsets follow the
/// revisions, both VirtualServices carry the weights, and deleting the Rollout mid-way
/// returns all traffic to the stable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subset_level_points_the_subsets_and_splits_two_virtual_services() {
    let cluster = cluster();
    let client = &cluster.client;
    let name = "reviews";
    let vs_api = virtual_services(client);
    create(
        &vs_api,
        reviews_virtual_service("reviews-public", Some("primary")),
    )
    .await;
    create(&vs_api, reviews_virtual_service("reviews-mesh", None)).await;
    create(
        &destination_rules(client),
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "reviews", "namespace": NS},
            "spec": {
                "host": "reviews",
                "trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST"}},
                "subsets": [
                    {"name": "stable", "labels": {"app": "reviews"}},
                    {"name": "canary", "labels": {"app": "reviews"}}
                ]
            }
        }),
    )
    .await;
    create_rollout(
        client,
        rollout(
            name,
            false,
            json!({
                "virtualServices": [
                    {"name": "reviews-public", "routes": ["primary"]},
                    {"name": "reviews-mesh"}
                ],
                "destinationRule": {"name": "reviews", "stableSubsetName": "stable", "canarySubsetName": "canary"}
            }),
            json!([{"setWeight": 20}, {"pause": {}}]),
        ),
    )
    .await;
    let _controller = Controller::start(&cluster.kubeconfig);
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), NS);
    let v1 = wait_for(&rollouts, name, "app:1 Healthy", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
    })
    .await;
    let v1 = stable_of(&v1).expect("stable");
    wait_until(
        "both subsets on the first revision",
        || subset_labels(client, name),
        |l| *l == (Some(v1.clone()), Some(v1.clone())),
    )
    .await;

    set_image(&rollouts, name, "app:2").await;
    let paused = wait_for(&rollouts, name, "the pause at 20%", |r| {
        phase(r) == Some(RolloutPhase::Paused)
    })
    .await;
    let v2 = paused
        .status
        .and_then(|s| s.canary_revision)
        .expect("canary");
    assert_eq!(
        subset_labels(client, name).await,
        (Some(v1.clone()), Some(v2.clone()))
    );
    assert_eq!(weights(client, "reviews-public", 0).await, (80, 20));
    assert_eq!(weights(client, "reviews-mesh", 0).await, (80, 20));
    // The subsets' own labels and the traffic policy stay.
    let rule = object(&destination_rules(client), name).await;
    assert_eq!(rule["spec"]["subsets"][1]["labels"]["app"], "reviews");
    assert_eq!(
        rule["spec"]["trafficPolicy"]["loadBalancer"]["simple"],
        "LEAST_REQUEST"
    );

    request(&rollouts, name, json!({"promoteStep": 1})).await;
    wait_for(&rollouts, name, "app:2 promoted", |r| {
        phase(r) == Some(RolloutPhase::Healthy) && stable_of(r).as_deref() == Some(v2.as_str())
    })
    .await;
    wait_until(
        "both subsets on the new stable",
        || subset_labels(client, name),
        |l| *l == (Some(v2.clone()), Some(v2.clone())),
    )
    .await;
    assert_eq!(weights(client, "reviews-public", 0).await, (100, 0));
    assert_eq!(weights(client, "reviews-mesh", 0).await, (100, 0));

    // Deleted mid-release: the finalizer returns all traffic to the stable first.
    set_image(&rollouts, name, "app:3").await;
    wait_for(&rollouts, name, "the pause at 20% of app:3", |r| {
        phase(r) == Some(RolloutPhase::Paused)
    })
    .await;
    assert_eq!(weights(client, "reviews-mesh", 0).await, (80, 20));
    rollouts
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete");
    wait_until(
        "the Rollout gone",
        || async { rollouts.get_opt(name).await.expect("get").is_none() },
        |gone| *gone,
    )
    .await;
    assert_eq!(weights(client, "reviews-public", 0).await, (100, 0));
    assert_eq!(weights(client, "reviews-mesh", 0).await, (100, 0));
    assert_eq!(
        subset_labels(client, name).await,
        (Some(v2.clone()), Some(v2))
    );
}

/// A VirtualService that does not exist, then one without the canary destination: the
/// Rollout holds with the field named and no traffic moves; once fixed, it goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_malformed_virtual_service_holds_the_rollout_with_the_field_named() {
    let cluster = cluster();
    let client = &cluster.client;
    let name = "payments";
    create_services(client, name).await;
    create_rollout(
        client,
        rollout(
            name,
            true,
            json!({"virtualService": {"name": name, "routes": ["primary"]}}),
            json!([{"setWeight": 30}, {"pause": {}}]),
        ),
    )
    .await;
    let _controller = Controller::start(&cluster.kubeconfig);
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), NS);
    let held = wait_for(
        &rollouts,
        name,
        "the hold on the missing VirtualService",
        |r| {
            r.status
                .as_ref()
                .and_then(|s| s.message.as_deref())
                .is_some_and(|m| {
                    m.contains("spec.strategy.canary.trafficRouting.istio.virtualService.name")
                        && m.contains("VirtualService payments does not exist")
                })
        },
    )
    .await;
    assert_ne!(phase(&held), Some(RolloutPhase::Healthy));

    let vs_api = virtual_services(client);
    create(&vs_api, payments_virtual_service()).await;
    let v1 = wait_for(
        &rollouts,
        name,
        "app:1 Healthy once the VirtualService exists",
        |r| phase(r) == Some(RolloutPhase::Healthy),
    )
    .await;
    let v1 = stable_of(&v1).expect("stable");

    // The canary destination is removed: the release holds, nothing moves to the canary.
    edit(&vs_api, name, |vs| {
        let route = vs["spec"]["http"][1]["route"]
            .as_array_mut()
            .expect("route");
        route.truncate(1);
    })
    .await;
    set_image(&rollouts, name, "app:2").await;
    let held = wait_for(&rollouts, name, "the hold on the malformed VirtualService", |r| {
        r.status
            .as_ref()
            .and_then(|s| s.message.as_deref())
            .is_some_and(|m| {
                m.contains("spec.http[1] (\"primary\") has no destination with host \"payments-canary\"")
            })
    })
    .await;
    assert_eq!(stable_of(&held).as_deref(), Some(v1.as_str()));
    assert_eq!(held.status.expect("status").canary_weight, 0);
    assert_eq!(weights(client, name, 1).await, (100, -1));

    edit(&vs_api, name, |vs| {
        *vs = json!({
            "apiVersion": vs["apiVersion"],
            "kind": vs["kind"],
            "metadata": vs["metadata"],
            "spec": payments_virtual_service()["spec"]
        });
    })
    .await;
    wait_for(&rollouts, name, "the pause at 30% once fixed", |r| {
        phase(r) == Some(RolloutPhase::Paused)
    })
    .await;
    assert_eq!(weights(client, name, 1).await, (70, 30));
}

/// The names of the HTTP routes of a VirtualService, in order.
async fn route_names(client: &kube::Client, name: &str) -> Vec<String> {
    let vs = object(&virtual_services(client), name).await;
    vs["spec"]["http"]
        .as_array()
        .map(|routes| {
            routes
                .iter()
                .filter_map(|r| r["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A `setHeaderRoute` step puts vigil's route first (testers reach the canary at weight 0),
/// and the route is gone after the promotion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_route_is_first_at_its_step_and_gone_after_promotion() {
    let cluster = cluster();
    let client = &cluster.client;
    let name = "payments";
    create_services(client, name).await;
    create(&virtual_services(client), payments_virtual_service()).await;
    let mut spec = rollout(
        name,
        true,
        json!({"virtualService": {"name": name, "routes": ["primary"]}}),
        json!([
            {"setHeaderRoute": {"name": "testers", "match": [
                {"headerName": "X-Canary", "headerValue": {"exact": "yes"}}
            ]}},
            {"pause": {}}
        ]),
    );
    spec["spec"]["strategy"]["canary"]["trafficRouting"]["managedRoutes"] =
        json!([{"name": "testers"}]);
    create_rollout(client, spec).await;
    let _controller = Controller::start(&cluster.kubeconfig);
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), NS);
    wait_for(&rollouts, name, "app:1 Healthy", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
    })
    .await;
    set_image(&rollouts, name, "app:2").await;
    wait_for(&rollouts, name, "the pause after the header route", |r| {
        phase(r) == Some(RolloutPhase::Paused)
    })
    .await;
    assert_eq!(
        route_names(client, name).await,
        ["testers", "admin", "primary"]
    );
    let vs = object(&virtual_services(client), name).await;
    assert_eq!(
        vs["spec"]["http"][0],
        json!({
            "name": "testers",
            "match": [{"headers": {"x-canary": {"exact": "yes"}}}],
            "route": [{
                "destination": {"host": "payments-canary.default.svc.cluster.local", "port": {"number": 80}},
                "weight": 100
            }]
        })
    );
    assert_eq!(weights(client, name, 2).await, (100, 0));

    request(&rollouts, name, json!({"promoteStep": 1})).await;
    wait_for(&rollouts, name, "app:2 promoted", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
            && r.status
                .as_ref()
                .and_then(|s| s.canary_revision.as_deref())
                .is_none()
    })
    .await;
    wait_until(
        "the header route removed",
        || route_names(client, name),
        |names| *names == ["admin", "primary"],
    )
    .await;
}

/// A `setMirrorRoute` step puts vigil's mirror route first (the split as it is, plus a copy
/// of the matching requests to the canary), and the route is gone after an abort.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_route_is_first_at_its_step_and_gone_after_an_abort() {
    let cluster = cluster();
    let client = &cluster.client;
    let name = "payments";
    create_services(client, name).await;
    create(&virtual_services(client), payments_virtual_service()).await;
    let mut spec = rollout(
        name,
        true,
        json!({"virtualService": {"name": name, "routes": ["primary"]}}),
        json!([
            {"setMirrorRoute": {"name": "shadow", "percentage": 50, "match": [
                {"method": {"exact": "GET"}}
            ]}},
            {"pause": {}}
        ]),
    );
    spec["spec"]["strategy"]["canary"]["trafficRouting"]["managedRoutes"] =
        json!([{"name": "shadow"}]);
    create_rollout(client, spec).await;
    let _controller = Controller::start(&cluster.kubeconfig);
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), NS);
    wait_for(&rollouts, name, "app:1 Healthy", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
    })
    .await;
    set_image(&rollouts, name, "app:2").await;
    wait_for(&rollouts, name, "the pause after the mirror route", |r| {
        phase(r) == Some(RolloutPhase::Paused)
    })
    .await;
    assert_eq!(
        route_names(client, name).await,
        ["shadow", "admin", "primary"]
    );
    let vs = object(&virtual_services(client), name).await;
    assert_eq!(
        vs["spec"]["http"][0],
        json!({
            "name": "shadow",
            "match": [{"method": {"exact": "GET"}}],
            "route": vs["spec"]["http"][2]["route"],
            "mirror": {"host": "payments-canary.default.svc.cluster.local", "port": {"number": 80}},
            "mirrorPercentage": {"value": 50.0}
        })
    );
    assert_eq!(weights(client, name, 0).await, (100, 0));

    request(&rollouts, name, json!({"abort": true})).await;
    wait_for(&rollouts, name, "the abort", |r| {
        phase(r) == Some(RolloutPhase::Aborted)
    })
    .await;
    wait_until(
        "the mirror route removed",
        || route_names(client, name),
        |names| *names == ["admin", "primary"],
    )
    .await;
}

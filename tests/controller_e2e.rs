//! End to end: the real `vigil controller --no-leader-election` binary against the
//! in-process Kubernetes API test server (with its ReplicaSet stand-in marking pods ready) and
//! a real Prometheus.
//!
//! The controller measures at wall-clock now, so fixture blocks at fixed past times do not
//! fit. Instead a tiny static exporter in this process serves one gauge per rollout
//! (`e2e_error_ratio{rollout="..."}`), and Prometheus scrapes it every second: live samples
//! with timestamps around now, deterministic values. The template's query selects the series
//! through the built-in `rollout` argument.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::prometheus::PrometheusServer;
use vigil::api::{AnalysisTemplate, Rollout, RolloutPhase};
use vigil::testing::apiserver::ApiServer;

const NS: &str = "default";
const WAIT: Duration = Duration::from_secs(90);

/// Serves the fixed metrics text on 127.0.0.1 until the process exits.
fn start_exporter(body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind exporter");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            // One thread per connection, with a read deadline: a client that connects and
            // sends nothing (a poll aimed at a port this listener reused) must not stop the
            // scrapes behind it.
            std::thread::spawn(move || {
                let mut stream = stream;
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes());
            });
        }
    });
    addr
}

const METRICS: &str = "# TYPE e2e_error_ratio gauge\n\
e2e_error_ratio{rollout=\"good\"} 0.001\n\
e2e_error_ratio{rollout=\"bad\"} 0.2\n\
e2e_error_ratio{rollout=\"restart\"} 0.001\n";

/// The controller binary, killed on drop.
struct Controller(Child);

impl Controller {
    fn start(kubeconfig: &Path) -> Controller {
        Self::start_with(kubeconfig, &[])
    }

    fn start_with(kubeconfig: &Path, extra: &[&str]) -> Controller {
        let child = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args([
                "controller",
                "--no-leader-election",
                "--metrics-addr",
                "127.0.0.1:0",
                "--concurrency",
                "4",
            ])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("VIGIL_E2E_RUST_LOG").unwrap_or_else(|_| "warn,kube=warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start vigil controller");
        Controller(child)
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
    }
}

fn template(name: &str, image: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": image}]}
    })
}

fn rollout(name: &str, image: &str, steps: Value) -> Rollout {
    serde_json::from_value(json!({
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": name}},
            "template": template(name, image),
            "strategy": {"canary": {
                "stableService": format!("{name}-stable"),
                "canaryService": format!("{name}-canary"),
                "steps": steps
            }}
        }
    }))
    .expect("rollout")
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

/// Waits until the `RolloutCompleted` Event of Rollout `name`'s promotion to `revision` is
/// in the API server: an Event saying so, or the second occurrence in the series of the
/// first completion's.
async fn wait_for_promotion_event(server: &ApiServer, name: &str, revision: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let events = server.list_json("events.k8s.io/v1/events", Some(NS));
        let promoted = events.iter().any(|e| {
            e["regarding"]["name"] == name
                && e["reason"] == "RolloutCompleted"
                && (e["note"].as_str().is_some_and(|n| n.contains(revision))
                    || e["series"]["count"].as_i64().is_some_and(|c| c >= 2))
        });
        if promoted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no promotion event for {name} ({revision}): {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn phase(rollout: &Rollout) -> Option<RolloutPhase> {
    rollout.status.as_ref().and_then(|s| s.phase)
}

async fn prometheus_has_data(prometheus: &PrometheusServer) {
    let url = format!(
        "{}api/v1/query?query=count(e2e_error_ratio)",
        prometheus.url()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let http = reqwest::Client::new();
    loop {
        if let Ok(response) = http.get(&url).send().await
            && let Ok(body) = response.json::<Value>().await
            && body["data"]["result"][0]["value"][1] == "3"
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the exporter: {:?}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The template `name`, judging the exporter's series of the rollout `series` (a name, or
/// `{{args.rollout}}` for the rollout being analysed).
async fn create_template(
    client: &kube::Client,
    prometheus: &PrometheusServer,
    name: &str,
    series: &str,
) {
    let template: AnalysisTemplate = serde_json::from_value(json!({
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "args": [{"name": "rollout"}],
            "metrics": [{
                "name": "error-ratio",
                "interval": "1s",
                "count": 3,
                "failureLimit": 0,
                "successCondition": "result < 0.05",
                "provider": {"prometheus": {
                    "address": prometheus.url().as_str(),
                    "query": format!("max(last_over_time(e2e_error_ratio{{rollout=\"{series}\"}}[30s]))")
                }}
            }]
        }
    }))
    .expect("template");
    Api::<AnalysisTemplate>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &template)
        .await
        .expect("create template");
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

async fn replicas_of(client: &kube::Client, name: &str, revision: &str) -> Option<i32> {
    Api::<ReplicaSet>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels(&format!("vigil.dev/rollout={name}")))
        .await
        .expect("list replicasets")
        .items
        .into_iter()
        .find(|rs| {
            rs.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("vigil.dev/revision"))
                .map(String::as_str)
                == Some(revision)
        })
        .and_then(|rs| rs.spec.and_then(|s| s.replicas))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_are_promoted_rolled_back_and_resumed_after_a_restart() {
    support::install_crypto_provider();
    let exporter = start_exporter(METRICS);
    let prometheus = PrometheusServer::start_with_config(&format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: e2e\n    static_configs:\n      - targets: ['{exporter}']\n"
    ));
    let server = ApiServer::start().with_replicaset_controller();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let client = server.client();
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), NS);

    prometheus_has_data(&prometheus).await;
    create_template(&client, &prometheus, "error-ratio", "{{args.rollout}}").await;
    let analysed = json!([
        {"setWeight": 50},
        {"analysis": {"templates": [{"templateName": "error-ratio"}]}},
        {"setWeight": 100}
    ]);
    let paused = json!([{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]);
    // The second version of "held" uses a template created only later.
    let late = json!([
        {"analysis": {"templates": [{"templateName": "late"}]}},
        {"setWeight": 100}
    ]);
    for name in ["good", "bad", "restart", "held"] {
        create_services(&client, name).await;
    }
    for (name, steps) in [
        ("good", &analysed),
        ("bad", &analysed),
        ("restart", &paused),
        ("held", &analysed),
    ] {
        rollouts
            .create(
                &PostParams::default(),
                &rollout(name, "app:1", steps.clone()),
            )
            .await
            .expect("create rollout");
    }

    let mut controller = Controller::start(&kubeconfig);
    for name in ["good", "bad", "restart", "held"] {
        wait_for(&rollouts, name, "the first version Healthy", |r| {
            phase(r) == Some(RolloutPhase::Healthy)
        })
        .await;
    }
    for name in ["good", "bad", "restart"] {
        set_image(&rollouts, name, "app:2").await;
    }
    rollouts
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "template": template("held", "app:2"),
                "strategy": {"canary": {"steps": late}}
            }})),
        )
        .await
        .expect("new image and steps");

    // A healthy canary passes its analysis and becomes the stable version.
    let good = rollouts.get("good").await.expect("get");
    let v2 = vigil::rollout::desired_revision(&good.spec, None);
    let good = wait_for(&rollouts, "good", "promotion of app:2", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
            && r.status.as_ref().and_then(|s| s.stable_revision.as_deref()) == Some(v2.as_str())
    })
    .await;
    let status = good.status.expect("status");
    assert_eq!(status.canary_weight, 0);
    let run = status.step_analysis.expect("the step analysis is shown");
    assert_eq!(run.phase, vigil::api::AnalysisPhase::Successful, "{run:?}");
    let stable_service = Api::<Service>::namespaced(client.clone(), NS)
        .get("good-stable")
        .await
        .expect("service");
    assert_eq!(
        stable_service
            .spec
            .and_then(|s| s.selector)
            .and_then(|s| s.get("vigil.dev/revision").cloned()),
        Some(v2.clone())
    );

    // An erroring canary fails its analysis: rolled back, the reason in the message.
    let bad = wait_for(&rollouts, "bad", "rollback", |r| {
        phase(r) == Some(RolloutPhase::Degraded)
    })
    .await;
    let status = bad.status.expect("status");
    assert_eq!(status.canary_weight, 0);
    let message = status.message.unwrap_or_default();
    assert!(message.contains("error-ratio"), "{message}");
    assert!(message.contains("0.2"), "{message}");
    let v1 = status.stable_revision.expect("stable stays");
    assert_ne!(v1, v2);

    // A release whose analysis template does not exist is held before any traffic moves,
    // saying why; once the template exists the rollout goes on.
    let held = wait_for(&rollouts, "held", "the missing template in status", |r| {
        r.status
            .as_ref()
            .and_then(|s| s.message.as_deref())
            .is_some_and(|m| m.contains("\"late\" does not exist"))
    })
    .await;
    let status = held.status.expect("status");
    assert_eq!(status.phase, Some(RolloutPhase::Degraded), "{status:#?}");
    assert_eq!(status.canary_weight, 0);
    assert!(
        status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("spec.strategy.canary.steps[0].analysis.templates[0]")),
        "{status:#?}"
    );
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "InvalidSpec" && c.status == "True"),
        "{status:#?}"
    );
    let held_stable = status.stable_revision.expect("stable");
    assert_eq!(replicas_of(&client, "held", &held_stable).await, Some(4));
    create_template(&client, &prometheus, "late", "good").await;
    let held = rollouts.get("held").await.expect("get");
    let held_v2 = vigil::rollout::desired_revision(&held.spec, None);
    wait_for(
        &rollouts,
        "held",
        "promotion once the template exists",
        |r| {
            phase(r) == Some(RolloutPhase::Healthy)
                && r.status.as_ref().and_then(|s| s.stable_revision.as_deref())
                    == Some(held_v2.as_str())
        },
    )
    .await;

    // A controller killed mid-rollout resumes at the step it recorded.
    let at_pause = wait_for(&rollouts, "restart", "the first pause", |r| {
        r.status.as_ref().and_then(|s| s.current_step_index) == Some(1)
            && phase(r) == Some(RolloutPhase::Paused)
    })
    .await;
    controller.kill();
    // While no controller runs, a person promotes the pause (a request in status).
    let rv = at_pause.metadata.resource_version.clone();
    rollouts
        .patch_status(
            "restart",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"resourceVersion": rv}, "status": {"promoteStep": 1}}),
            ),
        )
        .await
        .expect("promote");
    let _controller = Controller::start(&kubeconfig);
    let resumed = wait_for(&rollouts, "restart", "the second pause", |r| {
        r.status.as_ref().and_then(|s| s.current_step_index) == Some(3)
            && phase(r) == Some(RolloutPhase::Paused)
    })
    .await;
    let status = resumed.status.expect("status");
    assert_eq!(status.canary_weight, 50);
    assert_eq!(status.promote_step, None, "the request was consumed");
    let canary = status.canary_revision.expect("canary");
    assert_eq!(replicas_of(&client, "restart", &canary).await, Some(2));
}

/// Two controllers with disjoint label selectors share one cluster: each carries only the
/// Rollouts of its shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_controllers_each_carry_only_their_own_rollouts() {
    support::install_crypto_provider();
    let server = ApiServer::start().with_replicaset_controller();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let client = server.client();
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), NS);
    for (name, shard) in [("alpha", "a"), ("beta", "b")] {
        create_services(&client, name).await;
        let mut object = rollout(name, "app:1", json!([{"setWeight": 50}]));
        object.metadata.labels = Some(std::collections::BTreeMap::from([(
            "vigil.dev/shard".to_owned(),
            shard.to_owned(),
        )]));
        rollouts
            .create(&PostParams::default(), &object)
            .await
            .expect("create rollout");
    }
    let _a = Controller::start_with(&kubeconfig, &["--selector", "vigil.dev/shard=a"]);
    wait_for(&rollouts, "alpha", "shard a's rollout Healthy", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
    })
    .await;
    let beta = rollouts.get("beta").await.expect("get");
    assert_eq!(beta.status, None, "shard a's controller left shard b alone");
    // Its children carry the shard label, so shard a watches only its own.
    let shard_of_children = Api::<ReplicaSet>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels("vigil.dev/rollout=alpha"))
        .await
        .expect("list replicasets")
        .items
        .into_iter()
        .map(|rs| {
            rs.metadata
                .labels
                .unwrap_or_default()
                .get("vigil.dev/shard")
                .cloned()
        })
        .collect::<Vec<_>>();
    assert_eq!(shard_of_children, vec![Some("a".to_owned())]);
    let _b = Controller::start_with(&kubeconfig, &["--selector", "vigil.dev/shard=b"]);
    wait_for(&rollouts, "beta", "shard b's rollout Healthy", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
    })
    .await;
    // Each keeps carrying its own: a new version of alpha is released by shard a.
    set_image(&rollouts, "alpha", "app:2").await;
    let alpha = rollouts.get("alpha").await.expect("get");
    let v2 = vigil::rollout::desired_revision(&alpha.spec, None);
    wait_for(&rollouts, "alpha", "app:2 promoted", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
            && r.status.as_ref().and_then(|s| s.stable_revision.as_deref()) == Some(v2.as_str())
    })
    .await;
}

/// The weights of the route's two backendRefs (stable, canary).
async fn route_weights(client: &kube::Client, name: &str) -> (i64, i64) {
    let resource = vigil::traffic::gateway_api::http_route_resource();
    let routes: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), NS, &resource);
    let route = routes.get(name).await.expect("get route");
    let refs = &route.data["spec"]["rules"][0]["backendRefs"];
    (
        refs[0]["weight"].as_i64().unwrap_or(-1),
        refs[1]["weight"].as_i64().unwrap_or(-1),
    )
}

/// Through a Gateway API HTTPRoute: the weights move step by step on the route itself, go
/// back to the stable service at promotion, and the previous stable keeps its pods for
/// `scaleDownDelaySeconds` before it is scaled down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_through_an_httproute_moves_its_weights_and_scales_down_after_the_delay() {
    support::install_crypto_provider();
    let server = ApiServer::start().with_replicaset_controller();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let client = server.client();
    let name = "routed";
    create_services(&client, name).await;
    let resource = vigil::traffic::gateway_api::http_route_resource();
    let route: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "parentRefs": [{"name": "gateway"}],
            "rules": [{"backendRefs": [
                {"name": format!("{name}-stable"), "port": 80, "weight": 100},
                {"name": format!("{name}-canary"), "port": 80, "weight": 0}
            ]}]
        }
    }))
    .expect("route");
    Api::<kube::api::DynamicObject>::namespaced_with(client.clone(), NS, &resource)
        .create(&PostParams::default(), &route)
        .await
        .expect("create route");
    let mut object = rollout(name, "app:1", json!([{"setWeight": 30}, {"pause": {}}]));
    object.spec.strategy.canary.traffic_routing =
        serde_json::from_value(json!({"gatewayAPI": {"httpRoute": name}})).expect("routing");
    // Long enough that a slow test machine still sees the pods kept.
    object.spec.strategy.canary.scale_down_delay_seconds = Some(8);
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), NS);
    rollouts
        .create(&PostParams::default(), &object)
        .await
        .expect("create rollout");
    let _controller = Controller::start(&kubeconfig);
    let v1 = wait_for(&rollouts, name, "app:1 Healthy", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
    })
    .await
    .status
    .and_then(|s| s.stable_revision)
    .expect("stable");

    set_image(&rollouts, name, "app:2").await;
    let paused = wait_for(&rollouts, name, "the pause at 30%", |r| {
        phase(r) == Some(RolloutPhase::Paused)
    })
    .await;
    assert_eq!(paused.status.expect("status").canary_weight, 30);
    assert_eq!(route_weights(&client, name).await, (70, 30));
    // With a router the stable keeps all its pods: an abort is instant.
    assert_eq!(replicas_of(&client, name, &v1).await, Some(4));

    let rv = paused.metadata.resource_version.clone();
    rollouts
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"resourceVersion": rv}, "status": {"promoteStep": 1}}),
            ),
        )
        .await
        .expect("promote");
    let promoted = wait_for(&rollouts, name, "app:2 promoted", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
            && r.status.as_ref().and_then(|s| s.stable_revision.as_deref()) != Some(v1.as_str())
    })
    .await;
    let v2 = promoted
        .status
        .and_then(|s| s.stable_revision)
        .expect("stable");
    let waiting = wait_for(&rollouts, name, "the scale-down deadline", |r| {
        r.status.as_ref().is_some_and(|s| s.scale_down_at.is_some())
    })
    .await;
    assert_eq!(
        replicas_of(&client, name, &v1).await,
        Some(4),
        "the previous stable keeps its pods until {:?}",
        waiting.status.and_then(|s| s.scale_down_at)
    );
    let deadline = Instant::now() + WAIT;
    while replicas_of(&client, name, &v1).await != Some(0) {
        assert!(
            Instant::now() < deadline,
            "the old stable was never scaled down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(route_weights(&client, name).await, (100, 0));
    assert_eq!(replicas_of(&client, name, &v2).await, Some(4));
}

/// The rules of the HTTPRoute `name`, and its `vigil.dev/managed-routes` annotation.
async fn route_rules(client: &kube::Client, name: &str) -> (Vec<Value>, Option<String>) {
    let resource = vigil::traffic::gateway_api::http_route_resource();
    let routes: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), NS, &resource);
    let route = routes.get(name).await.expect("get route");
    let rules = route.data["spec"]["rules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let annotation = route
        .metadata
        .annotations
        .and_then(|a| a.get("vigil.dev/managed-routes").cloned());
    (rules, annotation)
}

/// Writes `status` fields the way the CLI does (guarded by the resourceVersion read). The
/// controller may write the status in between (a 409): as a user running the CLI again, it
/// reads the Rollout again and retries while it is still at the same step and phase.
async fn request(rollouts: &Api<Rollout>, rollout: &Rollout, status: Value) {
    let name = rollout.metadata.name.clone().unwrap_or_default();
    let at = |r: &Rollout| r.status.as_ref().map(|s| (s.current_step_index, s.phase));
    let mut current = rollout.clone();
    for _ in 0..20 {
        let rv = current.metadata.resource_version.clone();
        let patch = json!({"metadata": {"resourceVersion": rv}, "status": status});
        match rollouts
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => return,
            Err(kube::Error::Api(response)) if response.code == 409 => {
                current = rollouts.get(&name).await.expect("get rollout");
                assert_eq!(
                    at(&current),
                    at(rollout),
                    "{name} moved on before the request"
                );
            }
            Err(error) => panic!("status request: {error}"),
        }
    }
    panic!("status request: conflicts on {name} kept coming");
}

/// `setHeaderRoute` through an HTTPRoute: the header rule is placed first, to the canary only,
/// at weight 0; it is gone after the promotion and after an abort.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_route_appears_at_its_step_and_is_gone_after_promotion_and_abort() {
    support::install_crypto_provider();
    let server = ApiServer::start().with_replicaset_controller();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let client = server.client();
    let name = "testers";
    create_services(&client, name).await;
    let resource = vigil::traffic::gateway_api::http_route_resource();
    let route: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "parentRefs": [{"name": "gateway"}],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [
                    {"name": format!("{name}-stable"), "port": 80, "weight": 100},
                    {"name": format!("{name}-canary"), "port": 80, "weight": 0}
                ]
            }]
        }
    }))
    .expect("route");
    Api::<kube::api::DynamicObject>::namespaced_with(client.clone(), NS, &resource)
        .create(&PostParams::default(), &route)
        .await
        .expect("create route");
    let steps = json!([
        {"setHeaderRoute": {"name": "canary-testers",
            "match": [{"headerName": "x-canary", "headerValue": {"exact": "yes"}}]}},
        {"pause": {}}
    ]);
    let mut object = rollout(name, "app:1", steps);
    object.spec.strategy.canary.traffic_routing = serde_json::from_value(json!({
        "gatewayAPI": {"httpRoute": name},
        "managedRoutes": [{"name": "canary-testers"}]
    }))
    .expect("routing");
    object.spec.strategy.canary.scale_down_delay_seconds = Some(0);
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), NS);
    rollouts
        .create(&PostParams::default(), &object)
        .await
        .expect("create rollout");
    let _controller = Controller::start(&kubeconfig);
    wait_for(&rollouts, name, "app:1 Healthy", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
    })
    .await;
    let header_rule = json!({
        "name": "vigil-header-canary-testers",
        "matches": [{
            "path": {"type": "PathPrefix", "value": "/"},
            "headers": [{"type": "Exact", "name": "x-canary", "value": "yes"}]
        }],
        // The weight written as the Gateway API's default, so a defaulting server reads back
        // what vigil wrote.
        "backendRefs": [{"name": format!("{name}-canary"), "port": 80, "weight": 1}]
    });

    for (image, ending) in [("app:2", "promote"), ("app:3", "abort")] {
        set_image(&rollouts, name, image).await;
        let paused = wait_for(&rollouts, name, "the pause after the header route", |r| {
            phase(r) == Some(RolloutPhase::Paused)
        })
        .await;
        assert_eq!(paused.status.as_ref().map(|s| s.canary_weight), Some(0));
        let (rules, annotation) = route_rules(&client, name).await;
        assert_eq!(rules.len(), 2, "{rules:#?}");
        assert_eq!(rules[0], header_rule, "the header rule comes first");
        assert_eq!(rules[1]["backendRefs"][0]["weight"], json!(100));
        assert_eq!(rules[1]["backendRefs"][1]["weight"], json!(0));
        assert!(annotation.is_some_and(|a| a.contains("canary-testers")));
        let done = match ending {
            "promote" => {
                request(&rollouts, &paused, json!({"promoteStep": 1})).await;
                wait_for(&rollouts, name, "promoted", |r| {
                    phase(r) == Some(RolloutPhase::Healthy)
                        && r.status
                            .as_ref()
                            .and_then(|s| s.canary_revision.as_ref())
                            .is_none()
                })
                .await
            }
            _ => {
                request(&rollouts, &paused, json!({"abort": true})).await;
                wait_for(&rollouts, name, "aborted", |r| {
                    phase(r) == Some(RolloutPhase::Aborted)
                })
                .await
            }
        };
        // The rule leaves with the release: wait for the route to show it.
        let deadline = Instant::now() + WAIT;
        loop {
            let (rules, annotation) = route_rules(&client, name).await;
            if rules.len() == 1 && annotation.is_none() {
                assert_eq!(rules[0]["backendRefs"][1]["weight"], json!(0));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "after {ending} the header rule is still there: {rules:#?}; status {:#?}",
                done.status
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test]
#[ignore = "needs a cluster (KUBECONFIG)"]
async fn the_crds_are_installed_in_the_cluster() {
    support::install_crypto_provider();
    let client = kube::Client::try_default().await.expect("KUBECONFIG");
    vigil::platform::kubernetes::check_crds(&client)
        .await
        .expect("the vigil CRDs are installed (vigil crds | kubectl apply --server-side -f -)");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn ready(port: u16) -> bool {
    reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .is_ok_and(|r| r.status() == reqwest::StatusCode::OK)
}

/// Two controllers with leader election: exactly one is ready (leads); when it stops, the
/// standby takes the Lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_reconciles_and_a_standby_takes_over() {
    support::install_crypto_provider();
    let server = ApiServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let start = |port: u16| {
        Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["controller", "--lease-namespace", NS, "--metrics-addr"])
            .arg(format!("127.0.0.1:{port}"))
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .map(Controller)
            .expect("start vigil controller")
    };
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = start(port_a);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready(port_a).await {
        assert!(Instant::now() < deadline, "the first controller never led");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _b = start(port_b);
    // The standby serves /livez but stays unready while the leader holds the Lease.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        reqwest::get(format!("http://127.0.0.1:{port_b}/livez"))
            .await
            .is_ok_and(|r| r.status().is_success())
    );
    assert!(!ready(port_b).await, "two leaders");
    let lease = server
        .get_json(
            "coordination.k8s.io/v1/leases",
            Some(NS),
            "vigil-controller",
        )
        .expect("the Lease exists");
    assert!(lease["spec"]["holderIdentity"].is_string(), "{lease}");
    // SIGKILL: no release, so the standby waits for the Lease to expire (15 s).
    a.kill();
    let deadline = Instant::now() + Duration::from_secs(40);
    while !ready(port_b).await {
        assert!(Instant::now() < deadline, "the standby never took over");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The value of the Secret behind an analysis argument: it must reach Prometheus inside the
/// query and nowhere else.
const SECRET_MARKER: &str = "tenant-s3cr3t-9c1e";

/// Three series (as `prometheus_has_data` expects), one labelled with the Secret's value.
const TENANT_METRICS: &str = "# TYPE e2e_error_ratio gauge\n\
e2e_error_ratio{rollout=\"good\",tenant=\"tenant-s3cr3t-9c1e\"} 0.001\n\
e2e_error_ratio{rollout=\"bad\"} 0.2\n\
e2e_error_ratio{rollout=\"restart\"} 0.001\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_argument_reaches_prometheus_but_never_the_stored_run_or_events() {
    support::install_crypto_provider();
    let exporter = start_exporter(TENANT_METRICS);
    let prometheus = PrometheusServer::start_with_config(&format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: e2e\n    static_configs:\n      - targets: ['{exporter}']\n"
    ));
    let server = ApiServer::start().with_replicaset_controller();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let client = server.client();
    prometheus_has_data(&prometheus).await;
    server
        .put_json(
            "v1/secrets",
            json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "tenant", "namespace": NS,
                             "labels": {"vigil.dev/analysis-credential": "true"},
                             // The only place its value may be sent: this Prometheus.
                             "annotations": {"vigil.dev/analysis-credential-origins":
                                 prometheus.url().origin().ascii_serialization()}},
                "data": {"id": serde_json::to_value(k8s_openapi::ByteString(
                    SECRET_MARKER.as_bytes().to_vec())).expect("bytes")}
            }),
        )
        .expect("secret");
    let template: AnalysisTemplate = serde_json::from_value(json!({
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "tenant-errors", "namespace": NS},
        "spec": {
            "args": [{"name": "tenant"}],
            "metrics": [{
                "name": "error-ratio",
                "count": 1,
                "successCondition": "result < 0.05",
                "provider": {"prometheus": {
                    "address": prometheus.url().as_str(),
                    // Selects the series only when the Secret's value was substituted.
                    "query": "max(last_over_time(e2e_error_ratio{tenant=\"{{args.tenant}}\"}[30s]))"
                }}
            }]
        }
    }))
    .expect("template");
    Api::<AnalysisTemplate>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &template)
        .await
        .expect("create template");
    let name = "secretive";
    create_services(&client, name).await;
    let steps = json!([
        {"setWeight": 50},
        {"analysis": {
            "templates": [{"templateName": "tenant-errors"}],
            "args": [{"name": "tenant",
                      "valueFrom": {"secretKeyRef": {"name": "tenant", "key": "id"}}}]
        }},
        {"setWeight": 100}
    ]);
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), NS);
    rollouts
        .create(&PostParams::default(), &rollout(name, "app:1", steps))
        .await
        .expect("create rollout");
    let _controller = Controller::start(&kubeconfig);
    let v1 = wait_for(&rollouts, name, "app:1 Healthy", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
    })
    .await
    .status
    .and_then(|s| s.stable_revision)
    .expect("stable");
    set_image(&rollouts, name, "app:2").await;
    let promoted = wait_for(&rollouts, name, "app:2 promoted after its analysis", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
            && r.status.as_ref().and_then(|s| s.stable_revision.as_deref()) != Some(v1.as_str())
    })
    .await;
    let promoted_to = promoted
        .status
        .as_ref()
        .and_then(|s| s.stable_revision.clone())
        .expect("stable");
    let run = promoted
        .status
        .and_then(|s| s.step_analysis)
        .expect("the step analysis is shown");
    assert_eq!(run.phase, vigil::api::AnalysisPhase::Successful, "{run:?}");
    let runs = server.list_json("vigil.dev/v1alpha1/analysisruns", Some(NS));
    assert!(!runs.is_empty(), "the analysis ran");
    // Events are published in the background, one Rollout's in order: once the promotion's
    // is in, so is every event of the analysis before it.
    wait_for_promotion_event(&server, name, &promoted_to).await;
    for (what, objects) in [
        ("AnalysisRuns", runs),
        ("Events", server.list_json("events.k8s.io/v1/events", None)),
        ("core Events", server.list_json("v1/events", None)),
        (
            "Rollouts",
            server.list_json("vigil.dev/v1alpha1/rollouts", Some(NS)),
        ),
    ] {
        let text = serde_json::to_string(&objects).expect("json");
        assert!(
            !text.contains(SECRET_MARKER),
            "{what} carry the secret: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_gate_and_roll_back_a_release_on_kubernetes() {
    use support::webhook_receiver::{Answer, Receiver};
    support::install_crypto_provider();
    let receiver = Receiver::start().await;
    receiver.answer("/promote", Answer::Status(403));
    receiver.answer("/events", Answer::Status(200));
    let server = ApiServer::start().with_replicaset_controller();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let client = server.client();
    let name = "hooked";
    create_services(&client, name).await;
    let mut object = rollout(name, "app:1", json!([{"setWeight": 50}]));
    object.spec.strategy.canary.webhooks = serde_json::from_value(json!([
        {"name": "ship-it", "type": "confirm-promotion", "url": receiver.url("/promote"),
         "timeout": "5s", "metadata": {"team": "shop"}},
        {"name": "kill-switch", "type": "rollback", "url": receiver.url("/kill")},
        {"name": "feed", "type": "event", "url": receiver.url("/events")}
    ]))
    .expect("webhooks");
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), NS);
    rollouts
        .create(&PostParams::default(), &object)
        .await
        .expect("create rollout");
    let _controller = Controller::start(&kubeconfig);
    wait_for(&rollouts, name, "app:1 Healthy", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
    })
    .await;

    let message = |r: &Rollout| {
        r.status
            .as_ref()
            .and_then(|s| s.message.clone())
            .unwrap_or_default()
    };
    set_image(&rollouts, name, "app:2").await;
    let waiting = wait_for(&rollouts, name, "the promotion gate", |r| {
        message(r).contains("waiting for confirm-promotion hook ship-it: answered HTTP 403")
    })
    .await;
    let status = waiting.status.expect("status");
    assert_eq!(status.canary_weight, 50, "the last step's weight");
    let canary = status.canary_revision.clone().expect("a canary");
    let asked = receiver.received("/promote");
    assert_eq!(asked[0]["namespace"], NS);
    assert_eq!(asked[0]["name"], name);
    assert_eq!(asked[0]["type"], "confirm-promotion");
    assert_eq!(asked[0]["revisions"]["canary"], canary.as_str());
    assert_eq!(asked[0]["metadata"]["team"], "shop");
    assert!(
        !receiver.received("/kill").is_empty(),
        "the kill switch is polled"
    );

    receiver.answer("/promote", Answer::Status(200));
    wait_for(&rollouts, name, "app:2 promoted", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
            && r.status.as_ref().and_then(|s| s.stable_revision.as_deref()) == Some(&canary)
    })
    .await;

    // The next release is rolled back by the kill switch.
    receiver.answer("/promote", Answer::Status(403));
    set_image(&rollouts, name, "app:3").await;
    wait_for(&rollouts, name, "app:3 at the promotion gate", |r| {
        message(r).contains("waiting for confirm-promotion hook ship-it")
    })
    .await;
    receiver.answer("/kill", Answer::Status(200));
    let rolled_back = wait_for(&rollouts, name, "rolled back by the kill switch", |r| {
        phase(r) == Some(RolloutPhase::Degraded)
    })
    .await;
    assert!(
        message(&rolled_back).contains("rolled back by rollback hook kill-switch"),
        "{}",
        message(&rolled_back)
    );
    assert_eq!(
        rolled_back.status.as_ref().map(|s| s.canary_weight),
        Some(0)
    );
    // Events are delivered in the background: wait for the last one to arrive.
    let deadline = Instant::now() + WAIT;
    loop {
        let reasons: Vec<String> = receiver
            .received("/events")
            .iter()
            .map(|e| e["event"]["reason"].as_str().unwrap_or_default().to_owned())
            .collect();
        let wanted = [
            "RolloutCompleted",
            "WebhookGatePassed",
            "RolledBackByWebhook",
        ];
        if wanted.iter().all(|w| reasons.iter().any(|r| r == w)) {
            break;
        }
        assert!(Instant::now() < deadline, "events sent: {reasons:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A blue-green Rollout named `name` (services `<name>-active` / `<name>-preview`) whose
/// pre- and post-promotion analyses run the given templates.
fn blue_green_rollout(name: &str, image: &str, pre: &str, post: &str) -> Rollout {
    serde_json::from_value(json!({
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": template(name, image),
            "strategy": {"blueGreen": {
                "activeService": format!("{name}-active"),
                "previewService": format!("{name}-preview"),
                "previewReplicaCount": 1,
                "prePromotionAnalysis": {"templates": [{"templateName": pre}]},
                "postPromotionAnalysis": {"templates": [{"templateName": post}]},
                "scaleDownDelaySeconds": 1,
                "abortScaleDownDelaySeconds": 1
            }}
        }
    }))
    .expect("rollout")
}

async fn selected_revision(client: &kube::Client, service: &str) -> Option<String> {
    Api::<Service>::namespaced(client.clone(), NS)
        .get(service)
        .await
        .expect("service")
        .spec
        .and_then(|s| s.selector)
        .and_then(|s| s.get("vigil.dev/revision").cloned())
}

async fn run_phase(client: &kube::Client, name: &str) -> Option<vigil::api::AnalysisPhase> {
    Api::<vigil::api::AnalysisRun>::namespaced(client.clone(), NS)
        .get_opt(name)
        .await
        .expect("get run")
        .and_then(|run| run.status.and_then(|s| s.phase))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_releases_are_promoted_after_pre_promotion_analysis_and_switched_back_by_post_promotion_analysis()
 {
    support::install_crypto_provider();
    let exporter = start_exporter(METRICS);
    let prometheus = PrometheusServer::start_with_config(&format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: e2e\n    static_configs:\n      - targets: ['{exporter}']\n"
    ));
    let server = ApiServer::start().with_replicaset_controller();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let client = server.client();
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), NS);
    prometheus_has_data(&prometheus).await;
    // Judged on the exporter's fixed series: "good" passes, "bad" fails.
    create_template(&client, &prometheus, "passes", "good").await;
    create_template(&client, &prometheus, "fails", "bad").await;
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    for (name, post) in [("bg-good", "passes"), ("bg-bad", "fails")] {
        for role in ["active", "preview"] {
            let service: Service = serde_json::from_value(json!({
                "metadata": {"name": format!("{name}-{role}"), "namespace": NS},
                "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}
            }))
            .expect("service");
            services
                .create(&PostParams::default(), &service)
                .await
                .expect("create service");
        }
        rollouts
            .create(
                &PostParams::default(),
                &blue_green_rollout(name, "app:1", "passes", post),
            )
            .await
            .expect("create rollout");
    }
    let _controller = Controller::start(&kubeconfig);
    let mut revisions = Vec::new();
    for name in ["bg-good", "bg-bad"] {
        let first = wait_for(&rollouts, name, "the first version Healthy", |r| {
            phase(r) == Some(RolloutPhase::Healthy)
        })
        .await;
        let v1 = first
            .status
            .and_then(|s| s.stable_revision)
            .expect("stable");
        assert_eq!(
            selected_revision(&client, &format!("{name}-active")).await,
            Some(v1.clone())
        );
        set_image(&rollouts, name, "app:2").await;
        let v2 =
            vigil::rollout::desired_revision(&rollouts.get(name).await.expect("get").spec, None);
        // The preview: one pod of the new revision behind the preview service, analysed
        // before the switch while the active service keeps the old revision.
        wait_for(&rollouts, name, "the preview analysed", |r| {
            r.status
                .as_ref()
                .and_then(|s| s.step_analysis.as_ref())
                .is_some_and(|run| run.name.ends_with("-pre"))
        })
        .await;
        assert_eq!(
            selected_revision(&client, &format!("{name}-preview"))
                .await
                .as_ref(),
            Some(&v2)
        );
        assert_eq!(
            selected_revision(&client, &format!("{name}-active"))
                .await
                .as_ref(),
            Some(&v1)
        );
        assert_eq!(replicas_of(&client, name, &v2).await, Some(1));
        revisions.push((name, v1, v2));
    }

    // Promoted after the pre-promotion analysis passed; the post-promotion one passed too.
    let (_, good_v1, good_v2) = &revisions[0];
    let good = wait_for(&rollouts, "bg-good", "promotion of app:2", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
            && r.status.as_ref().and_then(|s| s.stable_revision.as_ref()) == Some(good_v2)
    })
    .await;
    let status = good.status.expect("status");
    assert_eq!(status.step.as_deref(), Some("stable"));
    let pre = vigil::rollout::pre_promotion_run_name("bg-good", good_v2, status.canary_attempt);
    let post = vigil::rollout::post_promotion_run_name("bg-good", good_v2, status.canary_attempt);
    assert_eq!(
        run_phase(&client, &pre).await,
        Some(vigil::api::AnalysisPhase::Successful)
    );
    assert_eq!(
        run_phase(&client, &post).await,
        Some(vigil::api::AnalysisPhase::Successful)
    );
    assert_eq!(
        selected_revision(&client, "bg-good-active").await.as_ref(),
        Some(good_v2)
    );
    assert_eq!(
        selected_revision(&client, "bg-good-preview").await.as_ref(),
        Some(good_v2)
    );
    let deadline = Instant::now() + WAIT;
    while replicas_of(&client, "bg-good", good_v1).await != Some(0) {
        assert!(
            Instant::now() < deadline,
            "the old active revision was never scaled down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(replicas_of(&client, "bg-good", good_v2).await, Some(2));

    // Switched, then the post-promotion analysis failed: switched back to the old revision.
    let (_, bad_v1, bad_v2) = &revisions[1];
    let bad = wait_for(&rollouts, "bg-bad", "the switch back", |r| {
        phase(r) == Some(RolloutPhase::Degraded)
    })
    .await;
    let status = bad.status.expect("status");
    let message = status.message.clone().unwrap_or_default();
    assert!(
        message.contains("post-promotion analysis failed"),
        "{message}"
    );
    assert!(message.contains("error-ratio"), "{message}");
    assert_eq!(status.stable_revision.as_ref(), Some(bad_v1));
    let post = vigil::rollout::post_promotion_run_name("bg-bad", bad_v2, status.canary_attempt);
    assert_eq!(
        run_phase(&client, &post).await,
        Some(vigil::api::AnalysisPhase::Failed)
    );
    assert_eq!(
        selected_revision(&client, "bg-bad-active").await.as_ref(),
        Some(bad_v1)
    );
    assert_eq!(replicas_of(&client, "bg-bad", bad_v1).await, Some(2));
    let deadline = Instant::now() + WAIT;
    while replicas_of(&client, "bg-bad", bad_v2).await != Some(0) {
        assert!(
            Instant::now() < deadline,
            "the aborted revision was never scaled down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The ReplicaSet of `revision` of the Rollout `name`, if it exists.
async fn replica_set_of(client: &kube::Client, name: &str, revision: &str) -> Option<ReplicaSet> {
    Api::<ReplicaSet>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels(&format!("vigil.dev/rollout={name}")))
        .await
        .expect("list replicasets")
        .items
        .into_iter()
        .find(|rs| {
            rs.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("vigil.dev/revision"))
                .map(String::as_str)
                == Some(revision)
        })
}

/// Waits until the ReplicaSet of `revision` asks for `replicas` pods (`None`: does not exist).
async fn wait_for_replicas(
    client: &kube::Client,
    name: &str,
    revision: &str,
    replicas: Option<i32>,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let seen = replicas_of(client, name, revision).await;
        if seen == replicas {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ReplicaSet of {revision}: timed out waiting for {replicas:?} replicas, has {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `canary.baseline`: a fresh ReplicaSet of the stable template, sized like the canary and
/// labelled as the baseline, runs for the analysis step only; the run gets its revision as the
/// built-in `baseline-revision`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_baseline_replica_set_runs_for_the_analysis_step_only() {
    support::install_crypto_provider();
    let exporter = start_exporter(METRICS);
    let prometheus = PrometheusServer::start_with_config(&format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: e2e\n    static_configs:\n      - targets: ['{exporter}']\n"
    ));
    let server = ApiServer::start().with_replicaset_controller();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let client = server.client();
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), NS);
    prometheus_has_data(&prometheus).await;
    // The series has no `baseline` label, so `baseline!="..."` keeps it: the query uses the
    // built-in argument without changing what it reads.
    let template: AnalysisTemplate = serde_json::from_value(json!({
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "fair", "namespace": NS},
        "spec": {
            "args": [{"name": "baseline-revision"}],
            "metrics": [{
                "name": "error-ratio",
                "interval": "1s",
                "count": 3,
                "failureLimit": 0,
                "successCondition": "result < 0.05",
                "provider": {"prometheus": {
                    "address": prometheus.url().as_str(),
                    "query": "max(last_over_time(e2e_error_ratio{rollout=\"good\", baseline!=\"{{args.baseline-revision}}\"}[30s]))"
                }}
            }]
        }
    }))
    .expect("template");
    Api::<AnalysisTemplate>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &template)
        .await
        .expect("create template");
    let name = "fair";
    create_services(&client, name).await;
    let mut object = rollout(
        name,
        "app:1",
        json!([
            {"setWeight": 25},
            {"pause": {}},
            {"analysis": {"templates": [{"templateName": "fair"}]}},
            {"setWeight": 50},
            {"pause": {}}
        ]),
    );
    object.spec.strategy.canary.baseline = Some(vigil::api::Baseline {
        enabled: true,
        ..Default::default()
    });
    rollouts
        .create(&PostParams::default(), &object)
        .await
        .expect("create rollout");
    let _controller = Controller::start(&kubeconfig);
    let first = wait_for(&rollouts, name, "the first version Healthy", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
    })
    .await;
    let v1 = first
        .status
        .and_then(|s| s.stable_revision)
        .expect("stable revision");
    let baseline = format!("{v1}-baseline");
    set_image(&rollouts, name, "app:2").await;

    // setWeight 25 then a pause: no analysis, no baseline.
    let paused = wait_for(&rollouts, name, "the first pause", |r| {
        r.status.as_ref().and_then(|s| s.current_step_index) == Some(1)
            && phase(r) == Some(RolloutPhase::Paused)
    })
    .await;
    assert!(replica_set_of(&client, name, &baseline).await.is_none());
    request(&rollouts, &paused, json!({"promoteStep": 1})).await;

    // The analysis step: the baseline appears with the canary's one pod (25 % of 4), from the
    // stable template, labelled as the baseline; the stable gives up its share.
    wait_for_replicas(&client, name, &baseline, Some(1)).await;
    let set = replica_set_of(&client, name, &baseline)
        .await
        .expect("baseline ReplicaSet");
    let pod_labels = set
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    assert_eq!(
        pod_labels.get("vigil.dev/role").map(String::as_str),
        Some("baseline")
    );
    assert_eq!(pod_labels.get("vigil.dev/revision"), Some(&baseline));
    let image = set
        .spec
        .and_then(|s| s.template)
        .and_then(|t| t.spec)
        .and_then(|s| s.containers.first().and_then(|c| c.image.clone()));
    assert_eq!(image.as_deref(), Some("app:1"), "the stable template");
    wait_for_replicas(&client, name, &v1, Some(2)).await;

    // Passed: on to setWeight 50 and a pause, without the baseline.
    let at_pause = wait_for(&rollouts, name, "the second pause", |r| {
        r.status.as_ref().and_then(|s| s.current_step_index) == Some(4)
            && phase(r) == Some(RolloutPhase::Paused)
    })
    .await;
    wait_for_replicas(&client, name, &baseline, Some(0)).await;
    let run_name = at_pause
        .status
        .as_ref()
        .and_then(|s| s.step_analysis.as_ref())
        .map(|r| r.name.clone())
        .expect("the step analysis is shown");
    let run = Api::<vigil::api::AnalysisRun>::namespaced(client.clone(), NS)
        .get(&run_name)
        .await
        .expect("run");
    assert!(
        run.spec
            .args
            .iter()
            .any(|a| a.name == "baseline-revision" && a.value.as_deref() == Some(baseline.as_str())),
        "{:?}",
        run.spec.args
    );
    assert_eq!(
        run.status.and_then(|s| s.phase),
        Some(vigil::api::AnalysisPhase::Successful)
    );
    request(&rollouts, &at_pause, json!({"promoteStep": 4})).await;
    let v2 = vigil::rollout::desired_revision(&at_pause.spec, None);
    wait_for(&rollouts, name, "promotion of app:2", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
            && r.status.as_ref().and_then(|s| s.stable_revision.as_deref()) == Some(v2.as_str())
    })
    .await;
    assert_eq!(replicas_of(&client, name, &baseline).await, Some(0));
}

/// The revision a Service's selector names and the Rollout its claim names.
async fn service_state(client: &kube::Client, name: &str) -> (Option<String>, Option<String>) {
    let service = Api::<Service>::namespaced(client.clone(), NS)
        .get(name)
        .await
        .expect("get service");
    let revision = service
        .spec
        .and_then(|s| s.selector)
        .and_then(|s| s.get("vigil.dev/revision").cloned());
    let claimant = service
        .metadata
        .annotations
        .and_then(|a| a.get("vigil.dev/managed-by-rollout").cloned());
    (revision, claimant)
}

/// One Rollout per Service: a second Rollout naming the first one's Services holds, says why
/// in its status and leaves them alone; once the first names other Services, the second is
/// woken and takes them over; deleting it returns them and gives its claim up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_rollout_naming_a_managed_service_holds_until_the_first_lets_go() {
    support::install_crypto_provider();
    let server = ApiServer::start().with_replicaset_controller();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let client = server.client();
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), NS);
    create_services(&client, "first").await;
    create_services(&client, "elsewhere").await;
    let first = rollout("first", "app:1", json!([{"setWeight": 50}]));
    let first_revision = vigil::rollout::desired_revision(&first.spec, None);
    rollouts
        .create(&PostParams::default(), &first)
        .await
        .expect("create first");
    let _controller = Controller::start(&kubeconfig);
    wait_for(&rollouts, "first", "Healthy", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
    })
    .await;
    assert_eq!(
        service_state(&client, "first-stable").await,
        (Some(first_revision.clone()), Some("first".to_owned()))
    );

    let mut second = rollout("second", "app:1", json!([{"setWeight": 50}]));
    second.spec.strategy.canary.stable_service = Some("first-stable".to_owned());
    second.spec.strategy.canary.canary_service = Some("first-canary".to_owned());
    let second_revision = vigil::rollout::desired_revision(&second.spec, None);
    rollouts
        .create(&PostParams::default(), &second)
        .await
        .expect("create second");
    let held = wait_for(&rollouts, "second", "held by first's claim", |r| {
        r.status
            .as_ref()
            .and_then(|s| s.message.as_deref())
            .is_some_and(|m| m.contains("is managed by Rollout \"first\""))
    })
    .await;
    assert_eq!(phase(&held), Some(RolloutPhase::Degraded));
    for service in ["first-stable", "first-canary"] {
        assert_eq!(
            service_state(&client, service).await,
            (Some(first_revision.clone()), Some("first".to_owned())),
            "{service} is left to first"
        );
    }

    // first moves to other Services: its claims on these are stale, and second is woken.
    let repoint = json!({"spec": {"strategy": {"canary": {
        "stableService": "elsewhere-stable", "canaryService": "elsewhere-canary"}}}});
    rollouts
        .patch("first", &PatchParams::default(), &Patch::Merge(&repoint))
        .await
        .expect("repoint first");
    wait_for(
        &rollouts,
        "second",
        "Healthy once first names other Services",
        |r| phase(r) == Some(RolloutPhase::Healthy),
    )
    .await;
    let owned_by_second = (Some(second_revision.clone()), Some("second".to_owned()));
    wait_for_service(&client, "first-stable", &owned_by_second).await;

    rollouts
        .delete("second", &Default::default())
        .await
        .expect("delete second");
    wait_for_service(&client, "first-stable", &(Some(second_revision), None)).await;
}

/// Waits until the Service `name` is in `state` (see [`service_state`]).
async fn wait_for_service(
    client: &kube::Client,
    name: &str,
    state: &(Option<String>, Option<String>),
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let seen = service_state(client, name).await;
        if &seen == state {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: timed out waiting for {state:?}; it is {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The AnalysisRuns of the Rollout `name` the API server holds, by name.
fn run_names(server: &ApiServer, name: &str) -> Vec<String> {
    let mut names: Vec<String> = server
        .list_json("vigil.dev/v1alpha1/analysisruns", Some(NS))
        .iter()
        .filter(|run| run["metadata"]["labels"]["vigil.dev/rollout"] == name)
        .filter_map(|run| run["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_after_release_only_the_run_history_limit_of_analysis_runs_remains() {
    support::install_crypto_provider();
    let exporter = start_exporter(METRICS);
    let prometheus = PrometheusServer::start_with_config(&format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: e2e\n    static_configs:\n      - targets: ['{exporter}']\n"
    ));
    let server = ApiServer::start().with_replicaset_controller();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let client = server.client();
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), NS);
    prometheus_has_data(&prometheus).await;
    create_template(&client, &prometheus, "error-ratio", "{{args.rollout}}").await;
    // "good": its series passes the analysis.
    let name = "good";
    create_services(&client, name).await;
    let steps = json!([
        {"setWeight": 50},
        {"analysis": {"templates": [{"templateName": "error-ratio"}]}},
        {"setWeight": 100}
    ]);
    let mut spec = rollout(name, "app:1", steps);
    spec.spec.analysis = Some(vigil::api::AnalysisRunStrategy {
        successful_run_history_limit: Some(2),
        unsuccessful_run_history_limit: None,
    });
    rollouts
        .create(&PostParams::default(), &spec)
        .await
        .expect("create rollout");
    let _controller = Controller::start(&kubeconfig);
    wait_for(&rollouts, name, "the first version Healthy", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
    })
    .await;
    let mut runs_of_release = Vec::new();
    for image in ["app:2", "app:3", "app:4", "app:5"] {
        set_image(&rollouts, name, image).await;
        let current = rollouts.get(name).await.expect("get");
        let revision = vigil::rollout::desired_revision(&current.spec, None);
        let promoted = wait_for(&rollouts, name, &format!("promotion of {image}"), |r| {
            phase(r) == Some(RolloutPhase::Healthy)
                && r.status.as_ref().and_then(|s| s.stable_revision.as_deref())
                    == Some(revision.as_str())
        })
        .await;
        let run = promoted
            .status
            .and_then(|s| s.step_analysis)
            .expect("the release's run is shown");
        assert_eq!(run.phase, vigil::api::AnalysisPhase::Successful, "{run:?}");
        runs_of_release.push(run.name);
    }
    // The two newest successful runs stay (the newest is the one the status shows); the
    // others are deleted by the controller.
    let mut wanted = runs_of_release[2..].to_vec();
    wanted.sort();
    let deadline = Instant::now() + WAIT;
    loop {
        let names = run_names(&server, name);
        if names == wanted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "runs left: {names:?}, wanted only {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let shown = rollouts
        .get(name)
        .await
        .expect("get")
        .status
        .and_then(|s| s.step_analysis)
        .map(|run| run.name);
    assert_eq!(shown.as_ref(), runs_of_release.last());
}

//! End to end: the real `vigil controller` binary adopts a Deployment through
//! `spec.workloadRef` against the in-process Kubernetes API test server. The test plays the
//! kubelet: it marks the Rollout's pods ready one by one, and checks after each that the
//! Deployment gave way by exactly the pods that became ready (never more), and that the stable
//! Service keeps selecting the Deployment's pods until all the Rollout's are ready. Then a new
//! image in the Deployment's template is released through the Rollout (with the API server's
//! ReplicaSet stand-in marking pods ready).

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use vigil::api::{Rollout, RolloutPhase};
use vigil::testing::apiserver::ApiServer;

const NS: &str = "default";
const WAIT: Duration = Duration::from_secs(90);
const REPLICAS: i32 = 3;

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

fn pod_template(image: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": image}]}
    })
}

async fn create_fixtures(client: &kube::Client) {
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": {"app": "web"}},
            "template": pod_template("web:1")
        }
    }))
    .expect("deployment");
    Api::<Deployment>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");
    for name in ["web-stable", "web-canary"] {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NS},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}
        }))
        .expect("service");
        Api::<Service>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &service)
            .await
            .expect("create service");
    }
    let rollout: Rollout = serde_json::from_value(json!({
        "apiVersion": "vigil.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": {"app": "web"}},
            "workloadRef": {
                "apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                "scaleDown": "progressively"
            },
            "strategy": {"canary": {
                "stableService": "web-stable",
                "canaryService": "web-canary",
                "steps": [{"setWeight": 50}, {"pause": {"duration": "1s"}}]
            }}
        }
    }))
    .expect("rollout");
    Api::<Rollout>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &rollout)
        .await
        .expect("create rollout");
}

/// Waits until `check` holds for what `read` returns, or fails with `what` and the last value.
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
            "timed out waiting for {what}; last seen: {value:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn deployment_replicas(client: &kube::Client) -> Option<i32> {
    Api::<Deployment>::namespaced(client.clone(), NS)
        .get("web")
        .await
        .expect("get deployment")
        .spec
        .and_then(|s| s.replicas)
}

async fn stable_selector(client: &kube::Client) -> Option<String> {
    Api::<Service>::namespaced(client.clone(), NS)
        .get("web-stable")
        .await
        .expect("get service")
        .spec
        .and_then(|s| s.selector)
        .and_then(|s| s.get("vigil.dev/revision").cloned())
}

/// Plays the kubelet: `ready` of the ReplicaSet's pods are ready.
async fn set_ready(client: &kube::Client, replica_set: &str, ready: i32) {
    Api::<ReplicaSet>::namespaced(client.clone(), NS)
        .patch_status(
            replica_set,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "replicas": REPLICAS, "readyReplicas": ready, "availableReplicas": ready
            }})),
        )
        .await
        .expect("mark pods ready");
}

fn status(rollout: &Rollout) -> vigil::api::RolloutStatus {
    rollout.status.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_is_adopted_without_downtime_then_released_through_the_rollout() {
    support::install_crypto_provider();
    let server = ApiServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let client = server.client();
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), NS);
    create_fixtures(&client).await;
    let v1: k8s_openapi::api::core::v1::PodTemplateSpec =
        serde_json::from_value(pod_template("web:1")).expect("template");
    let v1 = vigil::rollout::template_hash(&v1);
    let replica_set = format!("web-{v1}");

    let controller = Controller::start(&kubeconfig);
    // The Rollout's first revision is created from the Deployment's template, none ready.
    let get = || async { rollouts.get("web").await.expect("get rollout") };
    wait_until("the adopted revision with no pod ready", get, |r| {
        let s = status(r);
        s.stable_revision.as_deref() == Some(v1.as_str()) && s.ready_replicas == Some(0)
    })
    .await;
    let rs = Api::<ReplicaSet>::namespaced(client.clone(), NS)
        .get(&replica_set)
        .await
        .expect("the revision's ReplicaSet");
    let image = rs
        .spec
        .and_then(|s| s.template)
        .and_then(|t| t.spec)
        .and_then(|p| p.containers.first().and_then(|c| c.image.clone()));
    assert_eq!(image.as_deref(), Some("web:1"));
    assert_eq!(deployment_replicas(&client).await, Some(REPLICAS));
    assert_eq!(stable_selector(&client).await, None);

    // Each ready Rollout pod lets exactly one Deployment pod go; the stable Service keeps
    // selecting both until every Rollout pod is ready.
    for ready in 1..=REPLICAS {
        set_ready(&client, &replica_set, ready).await;
        let rollout = wait_until("the ready pods recorded", get, |r| {
            status(r).ready_replicas == Some(ready)
        })
        .await;
        // The status write follows the effects of the same reconcile.
        assert_eq!(
            deployment_replicas(&client).await,
            Some(REPLICAS - ready),
            "{ready} Rollout pods ready; status: {:#?}",
            rollout.status
        );
        if ready < REPLICAS {
            assert_eq!(stable_selector(&client).await, None, "{ready} ready");
        }
    }
    wait_until("Healthy", get, |r| {
        status(r).phase == Some(RolloutPhase::Healthy)
    })
    .await;
    wait_until(
        "the stable Service on the adopted revision",
        || stable_selector(&client),
        |selector| selector.as_deref() == Some(v1.as_str()),
    )
    .await;

    // A release through the Deployment: its new template is the Rollout's canary. The watch
    // on Deployments wakes the Healthy Rollout (its resync is minutes away).
    let server = server.with_replicaset_controller();
    Api::<Deployment>::namespaced(client.clone(), NS)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": pod_template("web:2")}})),
        )
        .await
        .expect("new image in the Deployment");
    let v2: k8s_openapi::api::core::v1::PodTemplateSpec =
        serde_json::from_value(pod_template("web:2")).expect("template");
    let v2 = vigil::rollout::template_hash(&v2);
    wait_until(
        "the canary started from the Deployment's template",
        get,
        |r| {
            status(r).canary_revision.as_deref() == Some(v2.as_str())
                || status(r).stable_revision.as_deref() == Some(v2.as_str())
        },
    )
    .await;
    let rollout = wait_until("web:2 promoted", get, |r| {
        let s = status(r);
        s.phase == Some(RolloutPhase::Healthy) && s.stable_revision.as_deref() == Some(v2.as_str())
    })
    .await;
    assert_eq!(status(&rollout).canary_weight, 0);
    assert_eq!(
        deployment_replicas(&client).await,
        Some(0),
        "the Deployment is never scaled back up"
    );
    wait_until(
        "the stable Service on the released revision",
        || stable_selector(&client),
        |selector| selector.as_deref() == Some(v2.as_str()),
    )
    .await;
    drop(controller);
    drop(server);
}

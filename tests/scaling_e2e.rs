//! The scaling controls end to end: the real `vigil controller --no-leader-election` binary
//! against the in-process Kubernetes API test server (with its ReplicaSet controller
//! stand-in). A Gateway API release with `setCanaryScale`, `canaryMetadata` and
//! `stableMetadata`: the ReplicaSets' replicas and pod-template labels as the steps go, the
//! Rollout's `scale` subresource changed mid-release as an HPA does (the canary's share
//! follows the new total, up and down), and the promoted canary's ReplicaSet and running pod
//! carrying the stable's metadata at the end.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use vigil::api::Rollout;
use vigil::testing::apiserver::ApiServer;

const NS: &str = "default";
const WAIT: Duration = Duration::from_secs(120);
const ROLLOUTS: &str = "vigil.dev/v1alpha1/rollouts";
const REPLICA_SETS: &str = "apps/v1/replicasets";
const SERVICES: &str = "v1/services";
const PODS: &str = "v1/pods";
const ROUTES: &str = "gateway.networking.k8s.io/v1/httproutes";

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

fn template(image: &str) -> Value {
    json!({"metadata": {"labels": {"app": "web"}},
           "spec": {"containers": [{"name": "web", "image": image}]}})
}

fn rollout() -> Value {
    json!({
        "apiVersion": "vigil.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "web"}},
            "template": template("app:1"),
            "strategy": {"canary": {
                "stableService": "web-stable",
                "canaryService": "web-canary",
                "scaleDownDelaySeconds": 0,
                "trafficRouting": {"gatewayAPI": {"httpRoute": "web"}},
                "canaryMetadata": {"labels": {"track": "canary"},
                                   "annotations": {"example.com/role": "canary"}},
                "stableMetadata": {"labels": {"track": "stable"}},
                "steps": [
                    {"setCanaryScale": {"weight": 50}},
                    {"setWeight": 25},
                    {"pause": {}},
                    {"setWeight": 50},
                    {"pause": {}}
                ]
            }}
        }
    })
}

fn service(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": NS},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
}

fn route() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [
            {"name": "web-stable", "port": 80, "weight": 100},
            {"name": "web-canary", "port": 80, "weight": 0}
        ]}]}
    })
}

struct Cluster {
    server: ApiServer,
    rollouts: Api<Rollout>,
    _dir: tempfile::TempDir,
    _controller: Controller,
}

impl Cluster {
    fn start() -> Cluster {
        support::install_crypto_provider();
        let server = ApiServer::start().with_replicaset_controller();
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        for name in ["web-stable", "web-canary"] {
            server.put_json(SERVICES, service(name)).expect("service");
        }
        server.put_json(ROUTES, route()).expect("route");
        server.put_json(ROLLOUTS, rollout()).expect("rollout");
        let rollouts = Api::namespaced(server.client(), NS);
        let controller = Controller::start(&kubeconfig);
        Cluster {
            server,
            rollouts,
            _dir: dir,
            _controller: controller,
        }
    }

    fn rollout(&self) -> Value {
        self.server
            .get_json(ROLLOUTS, Some(NS), "web")
            .expect("the rollout exists")
    }

    /// The ReplicaSet of `revision`, as stored.
    fn replica_set(&self, revision: &str) -> Option<Value> {
        self.server
            .get_json(REPLICA_SETS, Some(NS), &format!("web-{revision}"))
    }

    /// (spec.replicas, the pod template's `track` label) of `revision`'s ReplicaSet.
    fn shape(&self, revision: &str) -> Option<(i64, Option<String>)> {
        let rs = self.replica_set(revision)?;
        Some((
            rs["spec"]["replicas"].as_i64().unwrap_or(-1),
            rs["spec"]["template"]["metadata"]["labels"]["track"]
                .as_str()
                .map(str::to_owned),
        ))
    }

    fn canary_weight(&self) -> Option<i64> {
        let route = self.server.get_json(ROUTES, Some(NS), "web")?;
        route["spec"]["rules"][0]["backendRefs"]
            .as_array()?
            .iter()
            .find(|r| r["name"] == "web-canary")
            .and_then(|r| r["weight"].as_i64())
    }

    async fn wait_until(&self, what: &str, check: impl Fn(&Cluster) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !check(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; rollout status: {:#}",
                self.rollout()["status"]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_for_pause_at(&self, index: i64) {
        self.wait_until(&format!("the pause at step {index}"), |c| {
            let status = &c.rollout()["status"];
            status["phase"] == "Paused" && status["currentStepIndex"] == json!(index)
        })
        .await;
    }

    /// Writes `promoteStep` into status, as `vigil promote` does.
    async fn promote(&self, index: i64) {
        let rollout = self.rollouts.get("web").await.expect("get rollout");
        self.rollouts
            .patch_status(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({
                    "metadata": {"resourceVersion": rollout.metadata.resource_version},
                    "status": {"promoteStep": index}
                })),
            )
            .await
            .expect("promote");
    }

    /// Changes the replica count through the Rollout's `scale` subresource, as an HPA does.
    async fn scale_to(&self, replicas: i64) {
        self.rollouts
            .patch_scale(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await
            .expect("patch the scale subresource");
        assert_eq!(self.rollout()["spec"]["replicas"], json!(replicas));
    }

    fn stable_revision(&self) -> String {
        self.rollout()["status"]["stableRevision"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

fn track(value: &str) -> Option<String> {
    Some(value.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_canary_scale_and_role_metadata_follow_the_steps_and_an_hpa_mid_release() {
    let cluster = Cluster::start();
    cluster
        .wait_until("the first version Healthy", |c| {
            c.rollout()["status"]["phase"] == "Healthy"
        })
        .await;
    let v1 = cluster.stable_revision();
    assert_eq!(cluster.shape(&v1), Some((4, track("stable"))));

    cluster
        .rollouts
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": template("app:2")}})),
        )
        .await
        .expect("new image");
    cluster.wait_for_pause_at(2).await;
    let v2 = cluster.rollout()["status"]["canaryRevision"]
        .as_str()
        .expect("canary revision")
        .to_owned();
    // setCanaryScale weight 50 of 4 pods, apart from the 25 % of traffic; the canary's pods
    // carry canaryMetadata, the stable keeps all its pods and stableMetadata.
    assert_eq!(cluster.shape(&v2), Some((2, track("canary"))));
    assert_eq!(cluster.shape(&v1), Some((4, track("stable"))));
    assert_eq!(cluster.canary_weight(), Some(25));
    let canary_set = cluster.replica_set(&v2).expect("canary ReplicaSet");
    assert_eq!(
        canary_set["spec"]["template"]["metadata"]["annotations"]["example.com/role"],
        "canary"
    );
    // A running pod of the canary (the stand-in controller makes none), controlled by its
    // ReplicaSet as a real one is: vigil relabels it at promotion.
    let canary_set_uid = canary_set["metadata"]["uid"]
        .as_str()
        .expect("ReplicaSet uid")
        .to_owned();
    cluster
        .server
        .put_json(
            PODS,
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "web-canary-pod", "namespace": NS,
                                "labels": {"app": "web", "track": "canary",
                                           "vigil.dev/rollout": "web", "vigil.dev/revision": v2},
                                "annotations": {"example.com/role": "canary"},
                                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                                     "name": format!("web-{v2}"),
                                                     "uid": canary_set_uid, "controller": true}]},
                   "spec": {"containers": [{"name": "web", "image": "app:2"}]}}),
        )
        .expect("pod");

    // An HPA doubles the Rollout: the canary's share follows the new total.
    cluster.scale_to(8).await;
    cluster
        .wait_until("both roles rescaled to 8 replicas", |c| {
            c.shape(&v2) == Some((4, track("canary"))) && c.shape(&v1) == Some((8, track("stable")))
        })
        .await;
    assert_eq!(cluster.canary_weight(), Some(25), "traffic did not move");

    cluster.promote(2).await;
    cluster.wait_for_pause_at(4).await;
    assert_eq!(cluster.canary_weight(), Some(50));
    assert_eq!(cluster.shape(&v2), Some((4, track("canary"))));

    // And shrinks it to 6: 50 % of 6.
    cluster.scale_to(6).await;
    cluster
        .wait_until("both roles rescaled to 6 replicas", |c| {
            c.shape(&v2) == Some((3, track("canary"))) && c.shape(&v1) == Some((6, track("stable")))
        })
        .await;

    // Promoted: the new stable has all 6 pods and the stable's metadata, on its template and
    // on its running pod (the canary's label and annotation taken off); the old one goes.
    cluster.promote(4).await;
    cluster
        .wait_until("v2 Healthy with 6 pods and v1 at 0", |c| {
            c.rollout()["status"]["phase"] == "Healthy"
                && c.stable_revision() == v2
                && c.shape(&v2) == Some((6, track("stable")))
                && c.shape(&v1).is_some_and(|(replicas, _)| replicas == 0)
        })
        .await;
    let promoted = cluster.replica_set(&v2).expect("v2 ReplicaSet");
    assert!(
        promoted["spec"]["template"]["metadata"]["annotations"]
            .get("example.com/role")
            .is_none(),
        "{:#}",
        promoted["spec"]["template"]["metadata"]
    );
    cluster
        .wait_until("the running pod relabelled", |c| {
            let pod = c
                .server
                .get_json(PODS, Some(NS), "web-canary-pod")
                .unwrap_or_default();
            pod["metadata"]["labels"]["track"] == "stable"
                && pod["metadata"]["annotations"]
                    .get("example.com/role")
                    .is_none()
        })
        .await;
    assert_eq!(cluster.canary_weight(), Some(0));
}

//! A fair baseline on the Gateway API end to end: the real `vigil controller
//! --no-leader-election` binary against the in-process Kubernetes API test server, an
//! analysis step measured by a web metric served from 127.0.0.1. The HTTPRoute lists the
//! stable, canary and baseline Services; during the analysis step it splits three ways (the
//! baseline's share taken from the stable's, in place before the run starts), and after it
//! two ways again with the baseline's ReplicaSet at 0.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use support::fake_http::{FakeServer, Reply};
use vigil::api::Rollout;
use vigil::testing::apiserver::ApiServer;

const NS: &str = "default";
const WAIT: Duration = Duration::from_secs(120);
const ROLLOUTS: &str = "vigil.dev/v1alpha1/rollouts";
const TEMPLATES: &str = "vigil.dev/v1alpha1/analysistemplates";
const RUNS: &str = "vigil.dev/v1alpha1/analysisruns";
const REPLICA_SETS: &str = "apps/v1/replicasets";
const SERVICES: &str = "v1/services";
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
                "baseline": {"enabled": true, "service": "web-baseline"},
                "steps": [
                    {"setWeight": 25},
                    {"analysis": {"templates": [{"templateName": "error-rate"}]}},
                    {"pause": {}}
                ]
            }}
        }
    })
}

fn analysis_template(url: &str) -> Value {
    json!({
        "apiVersion": "vigil.dev/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": "error-rate", "namespace": NS},
        "spec": {"metrics": [{
            "name": "error-rate",
            "interval": "1s",
            "count": 4,
            "successCondition": "result < 0.05",
            "provider": {"web": {"url": url, "jsonPath": "{$.errorRate}"}}
        }]}
    })
}

fn service(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": NS},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
}

/// The user's route: the baseline Service is listed, at weight 0.
fn route() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [
            {"name": "web-stable", "port": 80, "weight": 100},
            {"name": "web-canary", "port": 80, "weight": 0},
            {"name": "web-baseline", "port": 80, "weight": 0}
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
    fn rollout(&self) -> Value {
        self.server
            .get_json(ROLLOUTS, Some(NS), "web")
            .expect("the rollout exists")
    }

    /// The (stable, canary, baseline) weights of the route.
    fn weights(&self) -> (i64, i64, i64) {
        let route = self
            .server
            .get_json(ROUTES, Some(NS), "web")
            .expect("the route exists");
        let weight = |name: &str| {
            route["spec"]["rules"][0]["backendRefs"]
                .as_array()
                .and_then(|refs| refs.iter().find(|r| r["name"] == name))
                .and_then(|r| r["weight"].as_i64())
                .unwrap_or(-1)
        };
        (
            weight("web-stable"),
            weight("web-canary"),
            weight("web-baseline"),
        )
    }

    fn replicas(&self, revision: &str) -> Option<i64> {
        self.server
            .get_json(REPLICA_SETS, Some(NS), &format!("web-{revision}"))
            .and_then(|rs| rs["spec"]["replicas"].as_i64())
    }

    fn selector(&self, service: &str) -> Value {
        self.server
            .get_json(SERVICES, Some(NS), service)
            .map(|s| s["spec"]["selector"]["vigil.dev/revision"].clone())
            .unwrap_or_default()
    }

    fn runs(&self) -> usize {
        self.server.list_json(RUNS, Some(NS)).len()
    }

    async fn wait_until(&self, what: &str, check: impl Fn(&Cluster) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !check(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; route {:?}; rollout status: {:#}",
                self.weights(),
                self.rollout()["status"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_splits_three_ways_for_the_analysis_step_and_two_ways_after() {
    support::install_crypto_provider();
    let metric = FakeServer::start(|_| Reply::new(200, r#"{"errorRate": 0.01}"#)).await;
    let server = ApiServer::start().with_replicaset_controller();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    for name in ["web-stable", "web-canary", "web-baseline"] {
        server.put_json(SERVICES, service(name)).expect("service");
    }
    server.put_json(ROUTES, route()).expect("route");
    server
        .put_json(TEMPLATES, analysis_template(metric.url.as_str()))
        .expect("template");
    server.put_json(ROLLOUTS, rollout()).expect("rollout");
    let cluster = Cluster {
        rollouts: Api::namespaced(server.client(), NS),
        _controller: Controller::start(&kubeconfig),
        server,
        _dir: dir,
    };
    cluster
        .wait_until("the first version Healthy", |c| {
            c.rollout()["status"]["phase"] == "Healthy"
        })
        .await;
    let v1 = cluster.rollout()["status"]["stableRevision"]
        .as_str()
        .expect("stable revision")
        .to_owned();
    let baseline = format!("{v1}-baseline");
    assert_eq!(cluster.weights(), (100, 0, 0));

    cluster
        .rollouts
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": template("app:2")}})),
        )
        .await
        .expect("new image");

    // The run starts only with the split in place: whenever a run exists during the
    // analysis step, the route already gives the baseline the canary's 25 %, from the
    // stable's share, and the baseline Service selects the baseline's pods.
    cluster
        .wait_until("the analysis run", |c| c.runs() > 0)
        .await;
    let status = cluster.rollout()["status"].clone();
    assert_eq!(status["currentStepIndex"], json!(1), "{status:#}");
    assert_eq!(cluster.weights(), (50, 25, 25));
    assert_eq!(cluster.selector("web-baseline"), json!(baseline));
    assert_eq!(
        cluster.replicas(&baseline),
        Some(1),
        "sized like the canary"
    );
    assert_eq!(
        cluster.replicas(&v1),
        Some(4),
        "the router splits, not the pods"
    );

    // After the step: two ways again, and then the baseline's pods go.
    cluster
        .wait_until("the pause after the analysis", |c| {
            let status = c.rollout()["status"].clone();
            status["phase"] == "Paused" && status["currentStepIndex"] == json!(2)
        })
        .await;
    cluster
        .wait_until("the baseline at 0 pods", |c| {
            c.replicas(&baseline) == Some(0)
        })
        .await;
    assert_eq!(cluster.weights(), (75, 25, 0));
    assert!(metric.stats.requests() >= 1, "the metric was measured");
}

//! What the real `vigil controller` asks of the API server once its Rollouts are settled,
//! counted by the in-process API test server (`ApiServer::requests`): reconciles read from the
//! caches, so a change seen by a watch reconciles the Rollout it concerns (and no other) with
//! its writes only, never a LIST or a GET.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vigil::testing::apiserver::ApiServer;

const NS: &str = "default";
const WAIT: Duration = Duration::from_secs(120);
const ROLLOUTS: &str = "vigil.dev/v1alpha1/rollouts";
const SERVICES: &str = "v1/services";

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

fn rollout(name: &str) -> Value {
    json!({
        "apiVersion": "vigil.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "app", "image": "app:1"}]}},
            "strategy": {"canary": {
                "stableService": format!("{name}-stable"),
                "canaryService": format!("{name}-canary"),
                "steps": [{"setWeight": 50}]
            }}
        }
    })
}

fn service(name: &str, selector: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": NS},
           "spec": {"selector": selector, "ports": [{"port": 80}]}})
}

/// Reads through the server itself (not over HTTP), so the test's own reads are not counted.
fn stored(server: &ApiServer, gvr: &str, name: &str) -> Value {
    server
        .get_json(gvr, Some(NS), name)
        .unwrap_or_else(|| panic!("{gvr} {name} exists"))
}

async fn wait_until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn stable_selector(server: &ApiServer, name: &str) -> Value {
    stored(server, SERVICES, &format!("{name}-stable"))["spec"]["selector"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_controller_reconciles_a_watched_change_with_writes_only() {
    let server = ApiServer::start().with_replicaset_controller();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    for name in ["checkout", "cart"] {
        for role in ["stable", "canary"] {
            server
                .put_json(
                    SERVICES,
                    service(&format!("{name}-{role}"), json!({"app": name})),
                )
                .expect("service");
        }
        server.put_json(ROLLOUTS, rollout(name)).expect("rollout");
    }
    let _controller = Controller::start(&kubeconfig);
    for name in ["checkout", "cart"] {
        wait_until(&format!("{name} Healthy"), || {
            stored(&server, ROLLOUTS, name)["status"]["phase"] == "Healthy"
        })
        .await;
    }
    let settled = stable_selector(&server, "checkout");
    let revision = settled["vigil.dev/revision"].clone();
    assert!(
        revision.is_string(),
        "the stable Service is pointed: {settled}"
    );

    // Someone points checkout's stable Service elsewhere; the Service watch wakes checkout,
    // whose reconcile points it back.
    server.take_requests();
    server.clear_request_log();
    server
        .put_json(
            SERVICES,
            service(
                "checkout-stable",
                json!({"app": "checkout", "vigil.dev/revision": "elsewhere"}),
            ),
        )
        .expect("drift");
    wait_until("checkout's stable Service pointed back", || {
        stable_selector(&server, "checkout")["vigil.dev/revision"] == revision
    })
    .await;

    let requests = server.requests();
    let reads = requests.count_where(|key| key.verb == "list" || key.verb == "get");
    assert_eq!(reads, 0, "no LIST or GET: {}", requests.to_json());
    assert!(
        requests.count("patch", "services") >= 1,
        "{}",
        requests.to_json()
    );
    let log = server.request_log();
    assert!(
        log.iter().all(|(_, path)| !path.contains("/cart")),
        "only the Rollout the change concerns is reconciled: {log:#?}"
    );
}

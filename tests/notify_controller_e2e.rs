//! Notifications from the real `vigil controller` against the in-process Kubernetes API test
//! server: the ConfigMap `vigil-notifications` (in the controller's namespace) names a webhook
//! sink whose URL is in a Secret; a Rollout subscribes to `on-rolled-back` by annotation. A
//! receiver on 127.0.0.1 records what arrives; /metrics counts it; the URL never shows in the
//! Rollout's status or its events.

mod support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::fake_http::{FakeServer, Reply};
use vigil::api::{Rollout, RolloutPhase};
use vigil::testing::apiserver::ApiServer;

const NS: &str = "default";
const WAIT: Duration = Duration::from_secs(90);
const SECRET_PATH: &str = "hooks/S3CRET-9f2c";

struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn rollout(image: &str) -> Rollout {
    serde_json::from_value(json!({
        "apiVersion": "vigil.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web", "namespace": NS, "annotations": {
            "notifications.vigil.dev/on-rolled-back": "hook"
        }},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": image}]}
            },
            "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}
        }
    }))
    .expect("rollout")
}

async fn wait_for(api: &Api<Rollout>, what: &str, check: impl Fn(&Rollout) -> bool) -> Rollout {
    let deadline = Instant::now() + WAIT;
    loop {
        let rollout = api.get("web").await.expect("get rollout");
        if check(&rollout) {
            return rollout;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; status: {:#?}",
            rollout.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn phase(rollout: &Rollout) -> Option<RolloutPhase> {
    rollout.status.as_ref().and_then(|s| s.phase)
}

fn triggers(receiver: &FakeServer) -> Vec<String> {
    receiver
        .stats
        .bodies()
        .iter()
        .filter_map(|b| serde_json::from_str::<Value>(b).ok())
        .filter_map(|b| b["trigger"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_notifies_from_its_configmap_with_the_url_from_a_secret() {
    support::install_crypto_provider();
    let receiver = FakeServer::start(|_| Reply::new(200, "ok")).await;
    let server = ApiServer::start().with_replicaset_controller();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let client = server.client();
    let url = format!("{}{SECRET_PATH}", receiver.url);
    server
        .put_json(
            "v1/secrets",
            json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "vigil-notifications", "namespace": NS},
                "data": {"hook-url": serde_json::to_value(k8s_openapi::ByteString(
                    url.into_bytes())).expect("bytes")}
            }),
        )
        .expect("secret");
    server
        .put_json(
            "v1/configmaps",
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "vigil-notifications", "namespace": NS},
                "data": {"notifications.yaml": "\
sinks:
  - name: hook
    type: webhook
    urlFrom:
      secretKeyRef: {name: vigil-notifications, key: hook-url}
subscriptions:
  on-started: [hook]
  on-paused: [hook]
"}
            }),
        )
        .expect("configmap");
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), NS);
    rollouts
        .create(&PostParams::default(), &rollout("app:1"))
        .await
        .expect("create rollout");
    let metrics_port = free_port();
    let _controller = Controller(
        Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args([
                "controller",
                "--no-leader-election",
                "--lease-namespace",
                NS,
            ])
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start vigil controller"),
    );
    wait_for(&rollouts, "app:1 Healthy", |r| {
        phase(r) == Some(RolloutPhase::Healthy)
    })
    .await;
    rollouts
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "app:2"}]}
            }}})),
        )
        .await
        .expect("new image");
    let paused = wait_for(&rollouts, "app:2 paused", |r| {
        phase(r) == Some(RolloutPhase::Paused)
    })
    .await;
    // `vigil abort`: a status request.
    rollouts
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"resourceVersion": paused.metadata.resource_version},
                "status": {"abort": true}
            })),
        )
        .await
        .expect("abort");
    wait_for(&rollouts, "aborted", |r| {
        phase(r) == Some(RolloutPhase::Aborted)
    })
    .await;
    eventually("four notifications", || receiver.stats.bodies().len() >= 4).await;
    // The first version, the canary, its pause, the abort: each once (the step completed is
    // not subscribed; deliveries run concurrently, so arrival order is not asserted).
    let mut arrived = triggers(&receiver);
    arrived.sort();
    assert_eq!(
        arrived,
        vec!["on-paused", "on-rolled-back", "on-started", "on-started"]
    );
    let bodies: Vec<Value> = receiver
        .stats
        .bodies()
        .iter()
        .filter_map(|b| serde_json::from_str(b).ok())
        .collect();
    let rolled_back = bodies
        .iter()
        .find(|b| b["trigger"] == "on-rolled-back")
        .expect("rolled back");
    assert_eq!(rolled_back["namespace"], NS);
    assert_eq!(rolled_back["rollout"], "web");
    assert_eq!(rolled_back["phase"], "Aborted");
    let text = rolled_back["text"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("vigil: rollout default/web rolled back"),
        "{text}"
    );
    assert!(text.contains("aborted by a user"), "{text}");
    assert!(text.contains("`vigil retry web -n default`"), "{text}");
    assert!(
        receiver.stats.heads()[0].starts_with(&format!("POST /{SECRET_PATH} ")),
        "{:?}",
        receiver.stats.heads()
    );

    // Counted on /metrics (once the receiver's answer is in).
    let sent = "vigil_notifications_sent_total{sink=\"hook\"} 4";
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        if metrics.contains(sent) {
            break;
        }
        assert!(Instant::now() < deadline, "no `{sent}` in\n{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The URL is nowhere in status or events.
    let rollout = rollouts.get("web").await.expect("get");
    let status = serde_json::to_string(&rollout.status).expect("status");
    assert!(!status.contains("S3CRET"), "{status}");
    // Events are published in the background: wait for the first.
    let events = loop {
        let events = server.list_json("events.k8s.io/v1/events", Some(NS));
        if !events.is_empty() {
            break events;
        }
        assert!(
            Instant::now() < deadline,
            "the controller records no events"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let events = serde_json::to_string(&events).expect("events");
    assert!(!events.contains("S3CRET"), "{events}");
}

//! Rollout webhooks end to end on the local platform: the real `vigil run` binary releases
//! real `vigil demo-app` processes while a receiver on 127.0.0.1 records every payload and
//! answers what the test tells it. Every gate type holds a release until its hook answers
//! 2xx, a rollback hook rolls a release back, post-rollout and event hooks hear about it, and
//! a receiver that hangs or is down never delays a rollback.
//!
//! Every wait polls the admin endpoint with a generous deadline; nothing sleeps a fixed time.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::webhook_receiver::{Answer, Receiver};
use vigil::api::RolloutPhase;
use vigil::platform::local::admin::ADMIN_TOKEN_FILE;
use vigil::platform::local::engine::RolloutView;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

/// The longest any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(90);

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// A Rollout of two `vigil demo-app` processes with `steps` and `webhooks` (YAML lists,
/// indented for `strategy.canary`).
fn rollout_yaml(name: &str, listen: u16, version: &str, steps: &str, webhooks: &str) -> String {
    format!(
        r#"apiVersion: vigil.dev/v1alpha1
kind: Rollout
metadata:
  name: {name}
  annotations:
    vigil.dev/metrics-listen: 127.0.0.1:{metrics}
spec:
  replicas: 2
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
        - name: app
          command: [{VIGIL:?}, "demo-app"]
          args: ["--version", "{version}"]
          readinessProbe:
            httpGet:
              path: /healthz
              port: 8080
  strategy:
    canary:
      trafficRouting:
        local:
          listen: 127.0.0.1:{listen}
      abortScaleDownDelaySeconds: 2
      steps:
{steps}
      webhooks:
{webhooks}
"#,
        metrics = free_port(),
    )
}

/// A running `vigil run`; stopped with SIGTERM (then SIGKILL) when dropped.
struct Engine {
    child: Option<Child>,
    admin: SocketAddr,
    state_dir: PathBuf,
    log: PathBuf,
}

impl Engine {
    fn start(dir: &Path, file: &Path) -> Engine {
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = dir.join("engine.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(VIGIL)
            .arg("run")
            .arg(file)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--admin")
            .arg(admin.to_string())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start vigil run");
        Engine {
            child: Some(child),
            admin,
            state_dir: dir.join("state"),
            log,
        }
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.state_dir.join(ADMIN_TOKEN_FILE))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    async fn view(&self, client: &reqwest::Client, name: &str) -> Option<RolloutView> {
        let response = client
            .get(format!("http://{}/rollouts/{name}", self.admin))
            .bearer_auth(self.token())
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    /// Polls the Rollout until `done` holds; fails with the last view and the engine's log.
    async fn wait_for(
        &self,
        client: &reqwest::Client,
        name: &str,
        what: &str,
        done: impl Fn(&RolloutView) -> bool,
    ) -> RolloutView {
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(view) = self.view(client, name).await {
                if done(&view) {
                    return view;
                }
                last = Some(view);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "timed out waiting for {what}; last status: {:#?}\nengine log:\n{}",
            last.map(|v| v.status),
            self.log()
        );
    }

    async fn post(&self, client: &reqwest::Client, path: &str, yaml: Option<String>) {
        let mut request = client
            .post(format!("http://{}{path}", self.admin))
            .bearer_auth(self.token())
            .timeout(Duration::from_secs(10));
        if let Some(yaml) = yaml {
            request = request
                .header("content-type", "application/yaml")
                .body(yaml);
        }
        let response = request.send().await.expect("admin request");
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{path}: {body}");
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Polls `check` until it holds, failing with `what` after [`WAIT`].
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn message(view: &RolloutView) -> &str {
    view.status.message.as_deref().unwrap_or_default()
}

fn healthy(view: &RolloutView) -> bool {
    view.status.phase == Some(RolloutPhase::Healthy) && view.status.canary_revision.is_none()
}

/// A hook entry of the `webhooks` list.
fn hook(name: &str, type_: &str, url: &str, timeout: &str) -> String {
    format!(
        "        - name: {name}\n          type: {type_}\n          url: {url}\n          timeout: {timeout}\n          metadata:\n            team: shop\n"
    )
}

/// Starts `vigil run` on v1 of the Rollout and waits until it is Healthy.
async fn deployed(dir: &Path, client: &reqwest::Client, name: &str, v1: &str) -> Engine {
    let file = dir.join("rollout.yaml");
    std::fs::write(&file, v1).expect("write rollout");
    let engine = Engine::start(dir, &file);
    engine.wait_for(client, name, "v1 Healthy", healthy).await;
    engine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gate_holds_a_local_release_until_its_hook_answers_2xx() {
    support::install_crypto_provider();
    let receiver = Receiver::start().await;
    for path in ["/events", "/post"] {
        receiver.answer(path, Answer::Status(200));
    }
    let hooks = [
        hook("checks", "pre-rollout", &receiver.url("/pre"), "5s"),
        hook("start", "confirm-rollout", &receiver.url("/start"), "5s"),
        hook(
            "more",
            "confirm-traffic-increase",
            &receiver.url("/more"),
            "5s",
        ),
        hook(
            "ship-it",
            "confirm-promotion",
            &receiver.url("/promote"),
            "5s",
        ),
        hook("done", "post-rollout", &receiver.url("/post"), "5s"),
        hook("feed", "event", &receiver.url("/events"), "5s"),
    ]
    .concat();
    let steps = "        - setWeight: 50\n";
    let dir = tempfile::tempdir().expect("temp dir");
    let (name, listen) = ("gated", free_port());
    let client = reqwest::Client::new();
    let v1 = rollout_yaml(name, listen, "v1", steps, &hooks);
    let engine = deployed(dir.path(), &client, name, &v1).await;
    assert!(
        receiver.received("/pre").is_empty(),
        "no gate for the first version"
    );

    let v2 = rollout_yaml(name, listen, "v2", steps, &hooks);
    engine.post(&client, "/apply", Some(v2)).await;
    let held = engine
        .wait_for(&client, name, "the pre-rollout gate", |v| {
            message(v).contains("waiting for pre-rollout hook checks: answered HTTP 404")
        })
        .await;
    let canary = held.desired_revision.clone();
    assert_eq!(
        held.status.canary_revision.as_deref(),
        Some(canary.as_str())
    );
    assert_eq!(held.routing.canary_weight, 0);
    let progressing = held
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .expect("Progressing condition");
    assert!(
        progressing
            .message
            .contains("waiting for pre-rollout hook checks")
    );
    let payload = receiver.received("/pre")[0].clone();
    assert_eq!(payload["name"], name);
    assert_eq!(payload["type"], "pre-rollout");
    assert_eq!(payload["webhook"], "checks");
    assert_eq!(payload["phase"], "Progressing");
    assert_eq!(payload["metadata"]["team"], "shop");
    assert_eq!(payload["revisions"]["canary"], canary.as_str());
    assert_eq!(
        payload["revisions"]["stable"],
        held.status.stable_revision.as_deref().unwrap_or_default()
    );
    assert_eq!(payload["weights"]["canary"], 0);
    assert_eq!(payload["weights"]["stable"], 100);
    assert_eq!(payload["step"], "1/1");

    // Each gate in turn: nothing moves until its hook answers 2xx.
    for (path, next, weight) in [
        ("/pre", "waiting for confirm-rollout hook start", 0),
        (
            "/start",
            "waiting for confirm-traffic-increase hook more",
            0,
        ),
        ("/more", "waiting for confirm-promotion hook ship-it", 50),
    ] {
        receiver.answer(path, Answer::Status(200));
        let view = engine
            .wait_for(&client, name, next, |v| message(v).contains(next))
            .await;
        assert_eq!(view.status.canary_weight, weight, "{next}");
        assert_eq!(view.status.phase, Some(RolloutPhase::Progressing), "{next}");
    }
    receiver.answer("/promote", Answer::Status(200));
    let promoted = engine.wait_for(&client, name, "v2 promoted", healthy).await;
    assert_eq!(
        promoted.status.stable_revision.as_deref(),
        Some(canary.as_str())
    );

    // post-rollout once, with the outcome; every event to the event hook.
    eventually("the post-rollout notification", || {
        !receiver.received("/post").is_empty()
    })
    .await;
    eventually("the RolloutCompleted event", || {
        receiver
            .received("/events")
            .iter()
            .any(|e| e["event"]["reason"] == "RolloutCompleted")
    })
    .await;
    let post = receiver.received("/post");
    assert_eq!(post.len(), 1, "{post:?}");
    assert_eq!(post[0]["phase"], "Healthy");
    assert_eq!(post[0]["type"], "post-rollout");
    assert_eq!(post[0]["revisions"]["stable"], canary.as_str());
    let reasons: Vec<String> = receiver
        .received("/events")
        .iter()
        .map(|e| e["event"]["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    for reason in [
        "RolloutStarted",
        "WebhookGatePassed",
        "StepCompleted",
        "RolloutCompleted",
    ] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} in {reasons:?}"
        );
    }
    let started = receiver
        .received("/events")
        .into_iter()
        .find(|e| e["event"]["reason"] == "RolloutStarted")
        .expect("started");
    assert_eq!(started["metadata"]["eventType"], "Normal");
    assert!(
        started["metadata"]["eventMessage"]
            .as_str()
            .is_some_and(|m| m.contains("started against stable"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_hook_rolls_a_local_release_back() {
    support::install_crypto_provider();
    let receiver = Receiver::start().await;
    receiver.answer("/kill", Answer::Status(404));
    let hooks = hook("kill-switch", "rollback", &receiver.url("/kill"), "5s");
    let steps = "        - setWeight: 50\n        - pause: {}\n";
    let dir = tempfile::tempdir().expect("temp dir");
    let (name, listen) = ("switched", free_port());
    let client = reqwest::Client::new();
    let engine = deployed(
        dir.path(),
        &client,
        name,
        &rollout_yaml(name, listen, "v1", steps, &hooks),
    )
    .await;
    engine
        .post(
            &client,
            "/apply",
            Some(rollout_yaml(name, listen, "v2", steps, &hooks)),
        )
        .await;
    let paused = engine
        .wait_for(&client, name, "the pause step, weight 50", |v| {
            v.status.current_step_index == Some(1) && v.routing.canary_weight == 50
        })
        .await;
    assert!(
        !receiver.received("/kill").is_empty(),
        "polled while in flight"
    );
    assert_eq!(
        paused.status.phase,
        Some(RolloutPhase::Paused),
        "404: carry on"
    );

    receiver.answer("/kill", Answer::Status(200));
    let rolled_back = engine
        .wait_for(&client, name, "rolled back", |v| {
            v.status.phase == Some(RolloutPhase::Degraded)
        })
        .await;
    assert!(
        message(&rolled_back)
            .contains("rolled back by rollback hook kill-switch (answered HTTP 200)"),
        "{}",
        message(&rolled_back)
    );
    assert_eq!(rolled_back.routing.canary_weight, 0);
    assert_eq!(
        rolled_back.status.stable_revision, paused.status.stable_revision,
        "the stable serves"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_or_down_receiver_never_delays_a_rollback() {
    support::install_crypto_provider();
    let receiver = Receiver::start().await;
    for path in ["/kill", "/promote", "/post"] {
        receiver.answer(path, Answer::Hang);
    }
    // Nothing listens there.
    let down = format!("http://127.0.0.1:{}/events", free_port());
    let hooks = [
        hook("kill-switch", "rollback", &receiver.url("/kill"), "1m"),
        hook(
            "ship-it",
            "confirm-promotion",
            &receiver.url("/promote"),
            "1m",
        ),
        hook("done", "post-rollout", &receiver.url("/post"), "1m"),
        hook("feed", "event", &down, "1m"),
    ]
    .concat();
    let steps = "        - setWeight: 50\n        - pause: {}\n";
    let dir = tempfile::tempdir().expect("temp dir");
    let (name, listen) = ("hung", free_port());
    let client = reqwest::Client::new();
    let engine = deployed(
        dir.path(),
        &client,
        name,
        &rollout_yaml(name, listen, "v1", steps, &hooks),
    )
    .await;
    engine
        .post(
            &client,
            "/apply",
            Some(rollout_yaml(name, listen, "v2", steps, &hooks)),
        )
        .await;
    engine
        .wait_for(&client, name, "the pause step, weight 50", |v| {
            v.status.current_step_index == Some(1) && v.routing.canary_weight == 50
        })
        .await;
    eventually("the rollback poll to hang", || receiver.held() >= 1).await;

    engine
        .post(&client, &format!("/rollouts/{name}/abort"), None)
        .await;
    let aborted = engine
        .wait_for(&client, name, "aborted", |v| {
            v.status.phase == Some(RolloutPhase::Aborted) && v.routing.canary_weight == 0
        })
        .await;
    // The rollback came while the receiver still held the first poll, before its one-minute
    // timeout could have ended it: no tick waited for it, and it was not asked again while
    // in flight. (An ordering against the hook's timeout, not a speed measurement.)
    assert!(receiver.held() >= 1, "the poll still hangs");
    let held_since = receiver.first_held_at().expect("a held request");
    assert!(
        held_since.elapsed() < Duration::from_secs(60),
        "the abort waited for the hook's timeout"
    );
    assert_eq!(receiver.received("/kill").len(), 1);
    assert!(receiver.received("/promote").is_empty(), "never reached");
    assert!(
        message(&aborted).contains("aborted by a user"),
        "{}",
        message(&aborted)
    );
    eventually("the post-rollout notification to arrive (and hang)", || {
        !receiver.received("/post").is_empty()
    })
    .await;
}

//! Rollout webhooks end to end on the local platform: the real `vigil run` binary releases
//! real `vigil demo-app` processes while a receiver on 127.0.0.1 records every payload and
//! answers what the test tells it. Every gate type holds a release until its hook answers
//! 2xx, a rollback hook rolls a release back, post-rollout and event hooks hear about it, and
//! a receiver that hangs or is down never delays a rollback.
//!
//! Every wait polls the admin endpoint with a generous deadline; nothing sleeps a fixed time.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::vigil_run::{VIGIL, VigilRun, admin_addr, free_port};
use support::webhook_receiver::{Answer, Receiver};
use vigil::api::RolloutPhase;
use vigil::platform::local::engine::RolloutView;

/// The longest any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(90);

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
async fn deployed(dir: &Path, client: &reqwest::Client, name: &str, v1: &str) -> VigilRun {
    let file = dir.join("rollout.yaml");
    std::fs::write(&file, v1).expect("write rollout");
    let engine = VigilRun::start(dir, &[file], admin_addr(), &[]);
    engine
        .wait_for(client, name, "v1 Healthy", WAIT, healthy)
        .await;
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
        .wait_for(&client, name, "the pre-rollout gate", WAIT, |v| {
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
            .wait_for(&client, name, next, WAIT, |v| message(v).contains(next))
            .await;
        assert_eq!(view.status.canary_weight, weight, "{next}");
        assert_eq!(view.status.phase, Some(RolloutPhase::Progressing), "{next}");
    }
    receiver.answer("/promote", Answer::Status(200));
    let promoted = engine
        .wait_for(&client, name, "v2 promoted", WAIT, healthy)
        .await;
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
        .wait_for(&client, name, "the pause step, weight 50", WAIT, |v| {
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
        .wait_for(&client, name, "rolled back", WAIT, |v| {
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
        .wait_for(&client, name, "the pause step, weight 50", WAIT, |v| {
            v.status.current_step_index == Some(1) && v.routing.canary_weight == 50
        })
        .await;
    eventually("the rollback poll to hang", || receiver.held() >= 1).await;

    engine
        .post(&client, &format!("/rollouts/{name}/abort"), None)
        .await;
    let aborted = engine
        .wait_for(&client, name, "aborted", WAIT, |v| {
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

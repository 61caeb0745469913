//! Notifications end to end on the local platform: the real `vigil run --notifications FILE`
//! runs real `vigil demo-app` processes behind its proxy, a real Prometheus scrapes it, and
//! receivers on 127.0.0.1 record what arrives. A healthy release and a bad one must reach a
//! Slack-compatible sink and a webhook sink with the text a person needs; a receiver that is
//! slow or down must not hold the rollback; the secret URLs never show in the log or status.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::fake_http::{FakeServer, Reply};
use support::prometheus::PrometheusServer;
use support::vigil_run::{VIGIL, VigilRun, admin_addr, free_port, start_load};
use url::Url;
use vigil::api::RolloutPhase;
/// The longest any single wait may take.
const WAIT: Duration = Duration::from_secs(120);
/// The secret part of every sink URL: it must never show in logs or status.
const SECRET: &str = "T0SECRET/B0SECRET/xyzzy";

fn template_yaml(prometheus: &Url) -> String {
    format!(
        r#"apiVersion: vigil.dev/v1alpha1
kind: AnalysisTemplate
metadata:
  name: error-rate
spec:
  args:
    - name: rollout
    # Built in: selects this release's canary only, never a previous canary's requests.
    - name: canary-revision
  metrics:
    - name: error-rate
      initialDelay: 8s
      interval: 3s
      count: 2
      failureLimit: 0
      inconclusiveLimit: 1
      consecutiveErrorLimit: 4
      successCondition: result < 0.05
      provider:
        prometheus:
          address: {prometheus}
          query: |
            (sum(rate(http_requests_total{{rollout="{{{{args.rollout}}}}", revision="{{{{args.canary-revision}}}}", code=~"5.."}}[10s])) or vector(0))
            /
            (sum(rate(http_requests_total{{rollout="{{{{args.rollout}}}}", revision="{{{{args.canary-revision}}}}"}}[10s]))
              and sum(increase(http_requests_total{{rollout="{{{{args.rollout}}}}", revision="{{{{args.canary-revision}}}}"}}[10s])) >= 10)
"#
    )
}

/// Steps: 50 %, the analysis, a pause until promoted. The annotation adds `team-slack` to
/// `on-promoted` (sink names only).
fn rollout_yaml(listen: u16, metrics: u16, app_args: &[&str]) -> String {
    let args: Vec<String> = app_args.iter().map(|a| format!("{a:?}")).collect();
    format!(
        r#"apiVersion: vigil.dev/v1alpha1
kind: Rollout
metadata:
  name: shop
  annotations:
    vigil.dev/metrics-listen: 127.0.0.1:{metrics}
    notifications.vigil.dev/on-promoted: team-slack
spec:
  replicas: 2
  selector:
    matchLabels:
      app: shop
  template:
    metadata:
      labels:
        app: shop
    spec:
      containers:
        - name: app
          command: [{VIGIL:?}, "demo-app"]
          args: [{args}]
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
        - setWeight: 50
        - analysis:
            templates:
              - templateName: error-rate
        - pause: {{}}
"#,
        args = args.join(", ")
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

fn secret_url(server: &FakeServer) -> String {
    format!("{}services/{SECRET}", server.url)
}

/// The JSON bodies `server` received.
fn received(server: &FakeServer) -> Vec<Value> {
    server
        .stats
        .bodies()
        .iter()
        .map(|b| serde_json::from_str(b).unwrap_or(Value::Null))
        .collect()
}

/// The webhook bodies of `trigger`.
fn of_trigger(server: &FakeServer, trigger: &str) -> Vec<Value> {
    received(server)
        .into_iter()
        .filter(|b| b["trigger"] == trigger)
        .collect()
}

/// The Slack texts received that contain `needle`.
fn slack_texts(server: &FakeServer, needle: &str) -> Vec<String> {
    received(server)
        .iter()
        .filter_map(|b| b["text"].as_str().map(str::to_owned))
        .filter(|t| t.contains(needle))
        .collect()
}

async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_trigger_reaches_its_sinks_and_a_slow_or_dead_receiver_never_holds_a_rollback() {
    support::install_crypto_provider();
    let metrics = free_port();
    let prometheus = PrometheusServer::start_with_config(&format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
         scrape_configs:\n  - job_name: vigil\n    static_configs: [{{targets: ['127.0.0.1:{metrics}']}}]\n"
    ));
    let slack = FakeServer::start(|_| Reply::new(200, "ok")).await;
    let audit = FakeServer::start(|_| Reply::new(200, "ok")).await;
    // Answers after an hour: every attempt times out.
    let slow =
        FakeServer::start(|_| Reply::new(200, "late").delay(Duration::from_secs(3600))).await;
    let dead_port = free_port();

    let dir = tempfile::tempdir().expect("temp dir");
    let slack_url_file = write(dir.path(), "slack-url", &secret_url(&slack));
    let slow_url_file = write(dir.path(), "pager-url", &secret_url(&slow));
    let config = format!(
        r"sinks:
  - name: team-slack
    type: slack
    urlFrom: {{file: {slack}}}
  - name: audit
    type: webhook
    urlFrom: {{env: AUDIT_URL}}
  - name: pager
    type: webhook
    urlFrom: {{file: {slow}}}
  - name: gone
    type: webhook
    urlFrom: {{env: GONE_URL}}
subscriptions:
  on-started: [audit]
  on-step-completed: [audit]
  on-paused: [audit, team-slack]
  on-promoted: [audit]
  on-rolled-back: [pager, gone, team-slack, audit]
  on-progress-deadline: [audit]
",
        slack = slack_url_file.display(),
        slow = slow_url_file.display()
    );
    let listen = free_port();
    let files = [
        write(
            dir.path(),
            "rollout.yaml",
            &rollout_yaml(listen, metrics, &["--version", "v1"]),
        ),
        write(
            dir.path(),
            "template.yaml",
            &template_yaml(prometheus.url()),
        ),
        write(dir.path(), "notifications.yaml", &config),
    ];
    let (rollout_file, template_file, config_file) = (
        files[0].to_str().expect("utf-8"),
        files[1].to_str().expect("utf-8"),
        files[2].to_str().expect("utf-8"),
    );
    let engine = VigilRun::start_with_env(
        dir.path(),
        &[rollout_file, template_file, "--notifications", config_file],
        admin_addr(),
        &[
            // Debug: every log line the notifications path writes is checked for the URL.
            ("RUST_LOG", "info,vigil::notify=debug".to_owned()),
            ("AUDIT_URL", secret_url(&audit)),
            ("GONE_URL", format!("http://127.0.0.1:{dead_port}/{SECRET}")),
        ],
    );
    let client = reqwest::Client::new();
    let test = async {
        engine
            .wait_for(&client, "shop", "v1 Healthy", WAIT, |v| {
                v.status.phase == Some(RolloutPhase::Healthy)
            })
            .await;
        let _load = start_load(listen, 40.0);

        // v2: started, 50 %, analysis passes, paused at the pause step.
        let v2 = rollout_yaml(listen, metrics, &["--version", "v2"]);
        engine.post(&client, "/apply", Some(v2)).await;
        let paused = engine
            .wait_for(&client, "shop", "v2 paused at the pause step", WAIT, |v| {
                v.status.phase == Some(RolloutPhase::Paused)
            })
            .await;
        let v2_hash = paused.desired_revision.clone();
        eventually("on-paused at slack", || {
            !slack_texts(&slack, "rollout shop paused").is_empty()
        })
        .await;
        let text = &slack_texts(&slack, "rollout shop paused")[0];
        assert!(text.contains("paused until promoted"), "{text}");
        assert!(text.contains("`vigil promote shop` to continue"), "{text}");
        assert!(text.contains(&format!("canary {v2_hash}")), "{text}");

        // Promote: the last step completes and v2 becomes stable.
        let step = paused.status.current_step_index.expect("a step");
        engine
            .post(
                &client,
                &format!("/rollouts/shop/promote?step={step}"),
                None,
            )
            .await;
        engine
            .wait_for(&client, "shop", "v2 promoted", WAIT, |v| {
                v.status.phase == Some(RolloutPhase::Healthy)
                    && v.status.stable_revision.as_deref() == Some(v2_hash.as_str())
            })
            .await;
        eventually("on-promoted at audit and at slack (by annotation)", || {
            !of_trigger(&audit, "on-promoted").is_empty()
                && !slack_texts(&slack, "rollout shop promoted").is_empty()
        })
        .await;

        // v3 fails its analysis: rolled back, with the metric and its value, while `pager`
        // hangs and `gone` refuses connections.
        let v3 = rollout_yaml(listen, metrics, &["--version", "v3", "--error-rate", "0.3"]);
        engine.post(&client, "/apply", Some(v3)).await;
        let degraded = engine
            .wait_for(&client, "shop", "v3 rolled back", WAIT, |v| {
                v.status.phase == Some(RolloutPhase::Degraded) && v.routing.canary_weight == 0
            })
            .await;
        let v3_hash = degraded.desired_revision.clone();
        eventually("on-rolled-back at slack", || {
            !slack_texts(&slack, "rollout shop rolled back").is_empty()
        })
        .await;
        let text = &slack_texts(&slack, "rollout shop rolled back")[0];
        assert!(
            text.contains("metric error-rate: Failed, value 0."),
            "{text}"
        );
        assert!(
            text.contains("result &lt; 0.05"),
            "Slack text is escaped: {text}"
        );
        assert!(
            text.contains(&format!("canary {v3_hash}, stable {v2_hash}")),
            "{text}"
        );
        assert!(text.contains("`vigil retry shop`"), "{text}");
        eventually("all ten transitions at audit", || {
            received(&audit).len() >= 10
        })
        .await;
        // The rollback was recorded and routed while the slow receiver still held the
        // request it got for it: it waited on nobody.
        eventually("the pager got its request", || slow.stats.requests() >= 1).await;
        let rolled_back = of_trigger(&audit, "on-rolled-back");
        assert_eq!(rolled_back.len(), 1, "{rolled_back:?}");
        assert_eq!(rolled_back[0]["canaryRevision"], v3_hash.as_str());
        assert_eq!(rolled_back[0]["metrics"][0]["name"], "error-rate");
        assert_eq!(rolled_back[0]["phase"], "Degraded");

        // Every transition once (deliveries run concurrently, so arrival order is not
        // asserted).
        let mut triggers: Vec<String> = received(&audit)
            .iter()
            .filter_map(|b| b["trigger"].as_str().map(str::to_owned))
            .collect();
        triggers.sort();
        let mut expected = vec![
            "on-started",        // v1, the first version
            "on-started",        // v2
            "on-step-completed", // v2: setWeight 50
            "on-step-completed", // v2: the analysis
            "on-paused",         // v2: the pause step
            "on-step-completed", // v2: the pause, promoted
            "on-promoted",       // v2
            "on-started",        // v3
            "on-step-completed", // v3: setWeight 50
            "on-rolled-back",    // v3: the analysis failed
        ];
        expected.sort_unstable();
        assert_eq!(triggers, expected, "{:#?}", received(&audit));

        // The URLs are secrets: not in the log, not in status.
        let view = engine.view(&client, "shop").await.expect("view");
        let status = serde_json::to_string(&view.status).expect("status JSON");
        assert!(!status.contains("SECRET"), "{status}");
        let log = engine.full_log();
        assert!(
            log.contains("notification"),
            "the log speaks of notifications"
        );
        assert!(!log.contains("SECRET"), "a URL leaked into the log:\n{log}");
    };
    tokio::time::timeout(Duration::from_secs(420), test)
        .await
        .expect("test took too long");
}
